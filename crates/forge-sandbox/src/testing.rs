//! Gate for tests that need the Docker Engine (this crate's and its dependents'): under `CI=true`
//! a missing engine or image fails the test; elsewhere the test is skipped with a message on
//! stderr that libtest does not capture. A skip never counts silently as a pass.

use crate::Runtime;

/// Whether the run is strict about Docker (`CI=true` or `CI=1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The engine, with `image` present; `None` (skip, loudly) outside CI; panics under CI.
pub async fn require_docker(test: &str, image: &str) -> Option<Runtime> {
    let fail = |msg: String| {
        if ci() {
            panic!("{test}: Docker is required under CI=true: {msg}");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {test}: {msg} (set CI=true to make this a failure) !!!!!\n");
    };
    let rt = match Runtime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            fail(e.to_string());
            return None;
        }
    };
    if let Err(e) = rt.image_info(image).await {
        fail(e.to_string());
        return None;
    }
    Some(rt)
}

/// The same gate for synchronous tests (those that drive the `forge` binary): whether the engine
/// answers `docker image inspect image`; `false` (skip, loudly) outside CI; panics under CI.
pub fn docker_image_available(test: &str, image: &str) -> bool {
    let ok = std::process::Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!ci(), "{test}: Docker with the image {image} is required under CI=true (scripts/setup/build-base-image.sh builds forge/base:py3)");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {test}: no Docker or no {image} (set CI=true to make this a failure) !!!!!\n");
    }
    ok
}

/// Asserts that no container labelled `forge.test=<label>` is left.
pub async fn assert_no_containers_left(rt: &Runtime, label: &str) {
    let left = rt.list_sandboxes(Some(("forge.test", label))).await.expect("listing containers");
    assert!(left.is_empty(), "containers left behind by {label}: {left:?}");
}

/// A second Docker Engine on this machine for fleet tests: its own dockerd, data root and network
/// namespace, reached over TCP with TLS client certificates
/// (`scripts/fixtures/second-docker-engine.sh`). Stopped (containers, daemons, namespace) when
/// dropped.
pub struct SecondEngine {
    dir: std::path::PathBuf,
    /// `tcp://<address>:2376`.
    pub host: String,
    /// `ca.pem`, `cert.pem`, `key.pem` of the client.
    pub certs: std::path::PathBuf,
}

impl SecondEngine {
    fn script(op: &str, dir: &std::path::Path) -> std::process::Output {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fixtures/second-docker-engine.sh");
        std::process::Command::new(script).arg(op).arg(dir).stderr(std::process::Stdio::piped()).output().expect("the fixture script runs")
    }

    /// Starts one with its files under `dir` (new), or `None` (skipped loudly) outside CI when
    /// this machine cannot (not root, no `ip` or `dockerd`); panics under CI.
    pub fn start(test: &str, dir: &std::path::Path) -> Option<SecondEngine> {
        let out = Self::script("start", dir);
        if !out.status.success() {
            let why = format!("{test}: the second Docker engine did not start: {}", String::from_utf8_lossy(&out.stderr));
            assert!(!ci(), "{why}");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {why} (set CI=true to make this a failure) !!!!!\n");
            return None;
        }
        let env = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("the script printed no {name}: {env}")).to_string()
        };
        Some(SecondEngine { dir: dir.to_path_buf(), host: var("DOCKER_HOST"), certs: std::path::PathBuf::from(var("DOCKER_CERT_PATH")) })
    }

    /// Its engine spec: TLS with the client certificate, room for `max` containers.
    pub fn spec(&self, max: usize) -> crate::EngineSpec {
        self.flag(max).parse().expect("a valid engine")
    }

    /// `--docker-host` for it (TLS, room for `max` containers).
    pub fn flag(&self, max: usize) -> String {
        format!("{},tls={},max_containers={max}", self.host, self.certs.display())
    }

    /// `docker ARGS` against it; its stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let certs = |f: &str| self.certs.join(f).display().to_string();
        let out = std::process::Command::new("docker")
            .args(["--tlsverify", "--tlscacert", &certs("ca.pem"), "--tlscert", &certs("cert.pem"), "--tlskey", &certs("key.pem"), "-H", &self.host])
            .args(args)
            .output()
            .expect("docker runs");
        assert!(out.status.success(), "docker {args:?} on the second engine: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of the forge sandboxes on it (running or not).
    pub fn sandboxes(&self) -> Vec<String> {
        self.docker(&["ps", "-aq", "--filter", "label=forge.sandbox"]).split_whitespace().map(str::to_string).collect()
    }

    /// SIGKILLs the engine, its containerd, shims and containers, as if its host died.
    pub fn kill(&self) {
        let out = Self::script("kill", &self.dir);
        assert!(out.status.success(), "kill: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The engine again after [`SecondEngine::kill`], on the same data root and address.
    pub fn restart(&self) {
        let out = Self::script("restart", &self.dir);
        assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let out = Self::script("stop", &self.dir);
        if !out.status.success() {
            eprintln!("stopping the second engine failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
