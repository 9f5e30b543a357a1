//! Shared by the tests and GPU benchmarks of this crate and its dependents.
//!
//! The gate for what needs a CUDA GPU: under `CI=true` a missing GPU fails the test; elsewhere the
//! test is skipped with a message on stderr that libtest does not capture. A skip never counts
//! silently as a pass. scripts/gpu-check.sh runs the GPU tests with `CI=true`.
//!
//! The benchmarks' timing: medians of device-synchronised calls, and the bf16 matmul rate that
//! TFLOP/s and MFU figures are compared with.

use std::str::FromStr;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

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

/// The value after `name` among a benchmark's arguments (`--steps 10`), or `default`.
pub fn arg<T: FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Median seconds of `steps` calls of `f` after `warmup` untimed ones, each call between two
/// device synchronisations (so it times the GPU work, not its launch).
pub fn median_seconds(device: &Device, warmup: usize, steps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps.max(1) {
        device.synchronize()?;
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The bf16 matmul rate on `device` (an n×n by n×n product through candle: cuBLAS on a GPU), as
/// (median seconds, TFLOP/s): the ceiling kernel TFLOP/s and MFU are measured against.
pub fn bf16_matmul_rate(device: &Device, n: usize) -> Result<(f64, f64)> {
    let a = Tensor::randn(0f32, 1f32, (n, n), device)?.to_dtype(DType::BF16)?;
    let b = Tensor::randn(0f32, 1f32, (n, n), device)?.to_dtype(DType::BF16)?;
    let seconds = median_seconds(device, 3, 10, || a.matmul(&b).map(drop))?;
    Ok((seconds, 2.0 * (n as f64).powi(3) / seconds / 1e12))
}

/// Device memory in use (total − free, as the driver reports it: live allocations plus what
/// candle's stream-ordered pool holds), MiB; NaN when the driver cannot say.
#[cfg(feature = "cuda")]
pub fn device_mem_used_mib() -> f64 {
    candle_core::cuda_backend::cudarc::driver::result::mem_get_info().map_or(f64::NAN, |(free, total)| (total - free) as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_reads_the_value_after_its_name_or_falls_back() {
        let args: Vec<String> = ["bench", "--steps", "7", "--seqs", "1,2", "--warmup", "x"].map(String::from).to_vec();
        assert_eq!(arg(&args, "--steps", 3usize), 7);
        assert_eq!(arg(&args, "--seqs", String::new()), "1,2");
        assert_eq!(arg(&args, "--warmup", 2usize), 2, "an unparsable value falls back to the default");
        assert_eq!(arg(&args, "--missing", 5usize), 5);
    }

    #[test]
    fn median_seconds_times_only_the_calls_after_warmup() {
        let mut calls = 0;
        let seconds = median_seconds(&Device::Cpu, 2, 3, || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(if calls <= 2 { 300 } else { 1 }));
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 5);
        assert!(seconds < 0.15, "the slow warmup calls leaked into the median: {seconds}");
    }
}
