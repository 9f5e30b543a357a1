//! Shared by the tests and GPU benchmarks of this crate and its dependents.
//!
//! The gate for what needs a CUDA GPU: under `CI=true` a missing GPU fails the test; elsewhere the
//! test is skipped with a message on stderr that libtest does not capture. A skip never counts
//! silently as a pass. scripts/gpu/gpu-check.sh runs the GPU tests with `CI=true`.
//!
//! The benchmarks' timing: medians of device-synchronised calls, and the bf16 matmul rate that
//! TFLOP/s and MFU figures are compared with.

use std::str::FromStr;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

use crate::flash_attn::{self, Sequences};

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

/// The comma-separated integers after `name` (`--seqs 4096,8192`), or those of `default`; panics,
/// naming the argument, on anything else.
pub fn arg_list(args: &[String], name: &str, default: &str) -> Vec<usize> {
    arg(args, name, default.to_string()).split(',').map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: comma-separated integers"))).collect()
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

/// Runs `f` once between `cuProfilerStart` and `cuProfilerStop` on a CUDA `device`, so that a
/// profiler started with profiling off (`ncu --profile-from-start off`, scripts/gpu/gpu-check.sh
/// profile) sees exactly its kernels; elsewhere just runs it.
pub fn profiled(device: &Device, f: impl FnOnce() -> Result<()>) -> Result<()> {
    device.synchronize()?;
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use candle_core::cuda_backend::cudarc::driver::{profiler_start, profiler_stop};
        use candle_core::cuda_backend::WrapErr as _;
        profiler_start().w()?;
        let result = f().and_then(|()| device.synchronize());
        profiler_stop().w()?;
        return result;
    }
    f()
}

/// The bf16 matmul rate on `device` (an n×n by n×n product through candle: cuBLAS on a GPU), as
/// (median seconds, TFLOP/s): the ceiling kernel TFLOP/s and MFU are measured against.
pub fn bf16_matmul_rate(device: &Device, n: usize) -> Result<(f64, f64)> {
    let a = Tensor::randn(0f32, 1f32, (n, n), device)?.to_dtype(DType::BF16)?;
    let b = Tensor::randn(0f32, 1f32, (n, n), device)?.to_dtype(DType::BF16)?;
    let seconds = median_seconds(device, 3, 10, || a.matmul(&b).map(drop))?;
    Ok((seconds, 2.0 * (n as f64).powi(3) / seconds / 1e12))
}

/// A benchmark's JSON line from `(key, JSON value)` pairs (the GPU benches print one per figure).
pub fn json_line(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}

/// `s` as a JSON string value (double quotes inside become single ones; error texts need no more).
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

/// Device memory in use (total − free, as the driver reports it: live allocations plus what
/// candle's stream-ordered pool holds), MiB; NaN when the driver cannot say.
#[cfg(feature = "cuda")]
pub fn device_mem_used_mib() -> f64 {
    candle_core::cuda_backend::cudarc::driver::result::mem_get_info().map_or(f64::NAN, |(free, total)| (total - free) as f64 / (1u64 << 20) as f64)
}

/// ‖got − want‖ / ‖want‖ (in f64).
pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "relative_error: lengths differ");
    let diff: f64 = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff.sqrt() / norm.sqrt().max(1e-30)) as f32
}

/// Relative tolerance of a device kernel's result against the fused CPU op's: both compute in f32;
/// in bf16/f16 they may round an element differently where the f32 values differ in the last bits.
pub fn parity_tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 8e-3,
    }
}

/// Relative tolerance of the fused bf16 attention against the f32 reference: bf16 output rounding
/// (2⁻⁹) plus the bf16 rounding of the probabilities and dS that feed the tensor-core products.
pub const FLASH_TOLERANCE: f32 = 2e-2;

/// Layout of a flash-attention parity case.
pub enum FlashBatch {
    /// `[b, s, heads, d]` with right-padding lengths.
    Padded { b: usize, s: usize, lengths: Vec<usize> },
    /// `[total, heads, d]` packed with cumulative offsets.
    Packed { cu_seqlens: Vec<usize> },
}

impl FlashBatch {
    pub fn sequences(&self) -> Result<Sequences> {
        match self {
            Self::Padded { b, s, lengths } => Sequences::padded(*b, *s, lengths),
            Self::Packed { cu_seqlens } => Sequences::packed(cu_seqlens),
        }
    }

    /// The shape of q (`heads` = h) or k and v (`heads` = h_kv).
    pub fn shape(&self, heads: usize, d: usize) -> Vec<usize> {
        match self {
            Self::Padded { b, s, .. } => vec![*b, *s, heads, d],
            Self::Packed { cu_seqlens } => vec![*cu_seqlens.last().unwrap_or(&0), heads, d],
        }
    }

    /// The op under test (fused where supported).
    pub fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            Self::Padded { lengths, .. } => crate::causal_attention_padded(q, k, v, lengths, scale),
            Self::Packed { cu_seqlens } => crate::causal_attention_varlen(q, k, v, cu_seqlens, scale),
        }
    }

    /// Its reference (the additive-mask attention path).
    pub fn reference(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            Self::Padded { lengths, .. } => flash_attn::reference_padded(q, k, v, lengths, scale),
            Self::Packed { cu_seqlens } => flash_attn::reference_varlen(q, k, v, cu_seqlens, scale),
        }
    }
}

/// What a group of flash-attention parity cases covers (each group is one test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashGroup {
    PaddedGqa,
    PackedVarlen,
    LongSequence,
}

/// One flash-attention parity case: `h` query heads over `h_kv` K/V heads of dim `d`.
pub struct FlashCase {
    pub name: &'static str,
    pub group: FlashGroup,
    pub batch: FlashBatch,
    pub h: usize,
    pub h_kv: usize,
    pub d: usize,
    pub seed: u64,
}

/// The flash-attention parity cases, run on a GPU (tests/cuda_parity.rs) and under host
/// emulation (crates/forge-kernels-emu): GQA 4:1 and 8:1, head dim 128 and 64, lengths that are
/// not multiples of the 64-row tiles, right padding, packed sequences with an empty one, and a
/// sequence of many key tiles.
pub fn flash_parity_cases() -> Vec<FlashCase> {
    use FlashBatch::{Packed, Padded};
    use FlashGroup::{LongSequence, PackedVarlen, PaddedGqa};
    let case = |name, group, batch, h, h_kv, d, seed| FlashCase { name, group, batch, h, h_kv, d, seed };
    vec![
        // 4:1 at head dim 128, lengths not multiples of the tiles (one row fully real, one padded)
        case("flash padded 8:2 d128 s200", PaddedGqa, Padded { b: 2, s: 200, lengths: vec![200, 77] }, 8, 2, 128, 21),
        // 8:1 at head dim 64, a length-1 row and a length exactly one tile plus one
        case("flash padded 16:2 d64 s130", PaddedGqa, Padded { b: 3, s: 130, lengths: vec![130, 1, 65] }, 16, 2, 64, 22),
        // 8:1 at head dim 128: sequences of 1, 63, 129 and 250 rows (tile boundaries ±1)
        case("flash packed 8:1 d128", PackedVarlen, Packed { cu_seqlens: vec![0, 1, 64, 193, 443] }, 8, 1, 128, 23),
        // 4:1 at head dim 64, an empty sequence in between
        case("flash packed 4:1 d64", PackedVarlen, Packed { cu_seqlens: vec![0, 300, 300, 317] }, 4, 1, 64, 24),
        // many key tiles per query tile: the online-softmax rescaling, and the dK/dV loop over query tiles
        case("flash 4:1 d128 s1000", LongSequence, Padded { b: 1, s: 1000, lengths: vec![1000] }, 4, 1, 128, 25),
    ]
}

/// One step of the decode-attention op (`decode_attn::append_and_attend`): `heads` query heads over
/// `kv_heads` K/V heads of dim `head_dim`, in `dtype`, runs of at least `flash_min_rows` rows through
/// the flash tiles. Per sequence: (positions cached before the step, its new rows, cache capacity).
pub struct DecodeCase {
    pub name: String,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
    pub sequences: Vec<(usize, usize, usize)>,
    pub flash_min_rows: usize,
}

/// A decode case's inputs in f32, each value representable in the case's dtype.
pub struct DecodeInputs {
    /// Per sequence: keys and values `[kv_heads, capacity, head_dim]`, NaN past the cached
    /// positions (a read of one spreads into the output).
    pub caches: Vec<(Vec<f32>, Vec<f32>)>,
    /// `[rows, heads·d]`, `[rows, kv_heads·d]`, `[rows, kv_heads·d]`.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Per row of the step: (sequence, position).
    pub rows: Vec<(usize, usize)>,
}

/// `x` rounded to `dtype` (f32, bf16, f16).
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        DType::F16 => half::f16::from_f32(x).to_f32(),
        _ => x,
    }
}

impl DecodeCase {
    /// Random inputs from `normal` (a standard normal sampler).
    pub fn inputs(&self, mut normal: impl FnMut() -> f32) -> DecodeInputs {
        let (h, h_kv, d) = (self.heads, self.kv_heads, self.head_dim);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| round_to(self.dtype, normal())).collect() };
        let mut caches = Vec::new();
        let mut rows = Vec::new();
        for (z, &(cached, new, capacity)) in self.sequences.iter().enumerate() {
            let mut cache = || {
                let mut data = vec![f32::NAN; h_kv * capacity * d];
                for head in 0..h_kv {
                    data[head * capacity * d..][..cached * d].copy_from_slice(&draw(cached * d));
                }
                data
            };
            caches.push((cache(), cache()));
            rows.extend((cached..cached + new).map(|p| (z, p)));
        }
        let n = rows.len();
        DecodeInputs { caches, q: draw(n * h * d), k: draw(n * h_kv * d), v: draw(n * h_kv * d), rows }
    }

    /// Checks a run of the op on `inputs`: every new row's key and value in its cache at its
    /// position (`caches`: as the step left them), every output element finite, and `o` within the
    /// dtype's tolerance of the host decode path's attention (`cached_attention::attend`) over those
    /// caches. Panics naming the case; returns the relative error.
    pub fn assert_matches_reference(&self, inputs: &DecodeInputs, o: &[f32], caches: &[(Vec<f32>, Vec<f32>)]) -> f32 {
        let (name, h, h_kv, d) = (&self.name, self.heads, self.kv_heads, self.head_dim);
        let group = h / h_kv;
        let mut want = vec![0f32; inputs.q.len()];
        for (r, &(z, p)) in inputs.rows.iter().enumerate() {
            let capacity = self.sequences[z].2;
            let (keys, values) = &caches[z];
            for head in 0..h_kv {
                let at = (head * capacity + p) * d;
                assert_eq!(keys[at..at + d], inputs.k[(r * h_kv + head) * d..][..d], "{name}: row {r}'s key of head {head} is not at position {p}");
                assert_eq!(values[at..at + d], inputs.v[(r * h_kv + head) * d..][..d], "{name}: row {r}'s value of head {head} is not at position {p}");
                let prefix = |cache: &[f32]| cache[head * capacity * d..][..(p + 1) * d].to_vec();
                let queries = &inputs.q[(r * h + head * group) * d..][..group * d];
                let out = &mut want[(r * h + head * group) * d..][..group * d];
                crate::cached_attention::attend(queries, &prefix(keys), &prefix(values), d, 1.0 / (d as f32).sqrt(), &mut Vec::new(), out);
            }
        }
        if let Some(i) = o.iter().position(|x| !x.is_finite()) {
            panic!("{name}: output element {i} is {} (unwritten, or a NaN cache position was read)", o[i]);
        }
        let (err, tolerance) = (relative_error(o, &want), parity_tolerance(self.dtype));
        eprintln!("{name}: relative error {err:.2e} (tolerance {tolerance:.0e})");
        assert!(err <= tolerance, "{name}: relative error {err:.2e} above {tolerance:.0e}");
        err
    }
}

/// The decode-attention cases, run on a GPU (tests/cuda_parity.rs) and under host emulation
/// (crates/forge-kernels-emu). Every split-K kernel (group bounds 2, 4, 8 × head dims 64, 128 × f32,
/// bf16, f16) on a step of one-token decodes over one and two splits (one filled to its last
/// position), a sequence's first token and a short prefill run; then the named cases: prefill runs
/// through `flash_fwd_cached` with full and partial tiles, a run of exactly `FLASH_MIN_ROWS` and
/// one short of it, a first prefill from position 0, every run in tiles at threshold 1, a group of
/// 3 in the bound-4 kernel, caches of three and six splits.
pub fn decode_parity_cases() -> Vec<DecodeCase> {
    use crate::decode_attn::FLASH_MIN_ROWS;
    let case = |name: &str, heads, kv_heads, head_dim, dtype, sequences, flash_min_rows| DecodeCase { name: name.to_string(), heads, kv_heads, head_dim, dtype, sequences, flash_min_rows };
    // one token after 300 cached (two splits), 5 rows after 40, a first token, one token after 511
    // (the second split's last position)
    let mixed = || vec![(300, 1, 320), (40, 5, 64), (0, 1, 8), (511, 1, 512)];
    let mut cases = Vec::new();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for d in crate::flash_attn::KERNEL_HEAD_DIMS {
            for (heads, kv_heads) in [(4, 2), (8, 2), (16, 2)] {
                let name = format!("decode {heads}:{kv_heads} d{d} {dtype:?}");
                cases.push(case(&name, heads, kv_heads, d, dtype, mixed(), FLASH_MIN_ROWS));
            }
        }
    }
    cases.extend([
        // a decode over two splits; 130 rows from 40 (tiles 64, 64, 2); a first prefill of 70 rows
        // filling its cache (64, 6); 15 rows, one short of a flash run
        case("decode prefill tiles 8:2 d128", 8, 2, 128, DType::BF16, vec![(300, 1, 320), (40, 130, 170), (0, 70, 70), (5, 15, 24)], FLASH_MIN_ROWS),
        // exactly FLASH_MIN_ROWS rows from 0; one whole tile after 100; 65 rows after 63 over a long
        // cache; a one-token decode
        case("decode prefill tiles 8:1 d64", 8, 1, 64, DType::BF16, vec![(0, FLASH_MIN_ROWS, FLASH_MIN_ROWS), (100, 64, 200), (63, 65, 600), (511, 1, 512)], FLASH_MIN_ROWS),
        // every run in tiles, single decode rows at long positions included (what
        // benches/gpu_cached_attention.rs times)
        case("decode all in tiles 8:2 d128", 8, 2, 128, DType::BF16, vec![(300, 1, 320), (40, 5, 64), (0, 1, 8), (511, 1, 512), (100, 70, 200)], 1),
        case("decode group of 3 6:2 d64", 6, 2, 64, DType::BF16, mixed(), FLASH_MIN_ROWS),
        case("decode 4:4 d64 f32 one head per group", 4, 4, 64, DType::F32, vec![(600, 1, 700), (3, 2, 5)], FLASH_MIN_ROWS),
        case("decode 8:2 d128 f32 three splits", 8, 2, 128, DType::F32, vec![(700, 1, 701)], FLASH_MIN_ROWS),
        case("decode 16:2 d128 f16 six splits", 16, 2, 128, DType::F16, vec![(1500, 1, 1536), (255, 2, 300)], FLASH_MIN_ROWS),
    ]);
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiled_runs_the_step_once_and_passes_its_error_on() {
        let mut calls = 0;
        profiled(&Device::Cpu, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 1);
        let err = profiled(&Device::Cpu, || candle_core::bail!("step failed")).unwrap_err();
        assert!(err.to_string().contains("step failed"), "{err}");
    }

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
