//! Gate for tests and benchmarks that need a CUDA GPU (this crate's and its dependents'): under
//! `CI=true` a missing GPU fails the test; elsewhere the test is skipped with a message on stderr
//! that libtest does not capture. A skip never counts silently as a pass. scripts/gpu-check.sh
//! runs the GPU tests with `CI=true`.

use candle_core::Device;

/// Whether the run is strict (`CI=true` or `CI=1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// CUDA device 0; `None` (skip, loudly) outside CI; panics under CI.
pub fn require_cuda(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) if ci() => panic!("{test}: a CUDA GPU is required under CI=true: {e}"),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {test}: no CUDA GPU: {e} (set CI=true to make this a failure) !!!!!\n");
            None
        }
    }
}
