//! What the end-to-end tests of the `forge` binary share: paths, the Docker guard, a chat-ready
//! fixture model and a `forge serve` process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(path: &str) -> String {
    repo().join("fixtures").join(path).display().to_string()
}

pub fn forge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forge")).args(args).output().expect("forge runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether the Docker Engine with `forge/base:py3` is there (see
/// [`forge_sandbox::testing::docker_image_available`]).
pub fn docker_with_base_image(test: &str) -> bool {
    forge_sandbox::testing::docker_image_available(test, "forge/base:py3")
}

/// gqa2-untied-f32's model in `tmp` with the tiny tokenizer's chat template and `positions`
/// positions (prompts with the template's tool instructions exceed the fixture's 128).
pub fn chat_model_dir(tmp: &Path, positions: usize) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("fixtures/gqa2-untied-f32/model")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(repo().join("assets/tiny-tokenizer/chat_template.jinja"), dir.join("chat_template.jinja")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = positions.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

/// A `forge serve` process, killed if the test ends before stopping it.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// `forge serve --model MODEL --served-model-name NAME --port 0 ...` and the base URL it prints
    /// on its first stdout line (port 0: a free one), e.g. `http://127.0.0.1:PORT/v1`.
    pub fn start(model: &Path, name: &str, max_concurrency: usize) -> (Server, String) {
        let concurrency = max_concurrency.to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_forge"))
            .args(["serve", "--model", model.to_str().unwrap(), "--served-model-name", name, "--port", "0", "--max-concurrency", &concurrency])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("forge runs");
        let mut server = Server(child);
        let mut line = String::new();
        BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in {line:?}")).to_string();
        (server, url)
    }
}
