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
