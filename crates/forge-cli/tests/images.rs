//! `forge images` against the real Docker Engine: archives written by `docker save` load back
//! (machines without registry access), and the arguments are checked before Docker is asked.

mod common;

use std::process::Command;

use common::{docker_with_base_image, forge, stderr};

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("docker runs")
}

/// Removes the tag when the test ends, failed or not.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

#[test]
fn images_load_brings_back_a_saved_image() {
    if !docker_with_base_image("images_load_brings_back_a_saved_image") {
        return;
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let tag = format!("forge-test/load-{}-{nanos}:v1", std::process::id());
    let _untag = Untag(tag.clone());
    assert!(docker(&["tag", "forge/base:py3", &tag]).status.success());
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    let saved = docker(&["save", &tag, "-o", archive.to_str().unwrap()]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    assert!(docker(&["rmi", &tag]).status.success());
    assert!(!docker(&["image", "inspect", &tag]).status.success(), "the tag is gone before the load");

    let t = std::time::Instant::now();
    let out = forge(&["images", "load", archive.to_str().unwrap()]);
    eprintln!("forge images load: {:.1} s", t.elapsed().as_secs_f64());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), [tag.as_str()], "{stdout}");
    let id = |name: &str| String::from_utf8(docker(&["image", "inspect", "--format", "{{.Id}}", name]).stdout).unwrap();
    assert_eq!(id(&tag), id("forge/base:py3"), "the loaded tag names the saved image");
}

#[test]
fn images_commands_check_their_arguments() {
    let out = forge(&["images", "load", "/nonexistent/archive.tar"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/archive.tar"), "{}", stderr(&out));
    let out = forge(&["images", "prune", "--budget", "lots"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("200G"), "{}", stderr(&out));
    let out = forge(&["images", "pull", "x", "--pull", "sometimes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("never, missing, always"), "{}", stderr(&out));
    let out = forge(&["tasks", "validate", "--tasks", "x.jsonl", "--pull", "sometimes"]);
    assert!(stderr(&out).contains("never, missing, always"), "{}", stderr(&out));
}
