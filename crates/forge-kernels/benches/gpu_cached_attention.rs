//! Where the engine's attention over GPU KV caches should switch from split-K to the flash tiles
//! (`forge_kernels::decode_attn::FLASH_MIN_ROWS`, a guess until this runs on a GPU): `batch`
//! sequences with `context` cached positions each take a run of `rows` new rows in one step, at
//! Qwen3-8B's attention shape (32 query heads, 8 K/V heads, head_dim 128, bf16), attended once with
//! every run in flash tiles (threshold 1) and once with every row by split-K (threshold
//! `usize::MAX`). Prints a JSON line per (context, rows) with both times and the two routes'
//! relative difference, and per context the shortest measured run from which on the flash tiles
//! are faster at every longer one. Run by `scripts/gpu/gpu-check.sh decode`.
//!
//! `cargo bench -p forge-kernels --features cuda --bench gpu_cached_attention -- [--contexts
//! 1024,4096,16384] [--rows 1,2,4,8,12,16,24,32,48,64] [--batch 8] [--warmup 3] [--steps 20]`

use candle_core::{DType, Device, Result, Tensor};
use forge_kernels::decode_attn::{append_and_attend, LayerCache, FLASH_MIN_ROWS};
use forge_kernels::testing::{arg, arg_list, json_line, median_seconds, quoted, relative_error, require_cuda};

const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
/// Thresholds that send every run through one kernel.
const ALL_FLASH: usize = 1;
const ALL_SPLIT_K: usize = usize::MAX;

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Per `rows`: (rows, flash seconds, split-K seconds) of one step over `context` cached positions.
fn measure(device: &Device, context: usize, row_counts: &[usize], batch: usize, warmup: usize, steps: usize) -> Result<Vec<(usize, f64, f64)>> {
    let randn = |shape: &[usize]| -> Result<Tensor> { Tensor::randn(0f32, 1f32, shape, device)?.to_dtype(DType::BF16) };
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let mut times = Vec::new();
    for &rows in row_counts {
        let capacity = context + rows;
        // the step appends its own rows at context..capacity (the same ones on every call)
        let cache = [KV_HEADS, capacity, HEAD_DIM];
        let caches = (0..batch).map(|_| Ok((randn(&cache)?, randn(&cache)?))).collect::<Result<Vec<_>>>()?;
        let layer: Vec<LayerCache> = caches.iter().map(|(keys, values)| LayerCache { keys, values }).collect();
        let step: Vec<(usize, usize)> = (0..batch).flat_map(|b| (context..capacity).map(move |p| (b, p))).collect();
        let n = step.len();
        let (q, k, v) = (randn(&[n, HEADS * HEAD_DIM])?, randn(&[n, KV_HEADS * HEAD_DIM])?, randn(&[n, KV_HEADS * HEAD_DIM])?);
        let attend = |flash_min_rows| append_and_attend(&q, &k, &v, &layer, &step, HEADS, scale, flash_min_rows);

        let difference = relative_error(&host(&attend(ALL_FLASH)?)?, &host(&attend(ALL_SPLIT_K)?)?);
        let flash_s = median_seconds(device, warmup, steps, || attend(ALL_FLASH).map(drop))?;
        let split_s = median_seconds(device, warmup, steps, || attend(ALL_SPLIT_K).map(drop))?;
        println!(
            "{}",
            json_line(&[
                ("bench", quoted("cached_attention")),
                ("context", context.to_string()),
                ("batch", batch.to_string()),
                ("rows", rows.to_string()),
                ("flash_us", format!("{:.1}", flash_s * 1e6)),
                ("split_k_us", format!("{:.1}", split_s * 1e6)),
                ("routes_relative_difference", format!("{difference:.2e}")),
            ])
        );
        times.push((rows, flash_s, split_s));
    }
    Ok(times)
}

/// The shortest measured run length from which on flash is faster at every longer measured one;
/// `None` when it is not faster at the longest.
fn flash_faster_from(times: &[(usize, f64, f64)]) -> Option<usize> {
    match times.iter().rposition(|&(_, flash, split)| flash >= split) {
        None => times.first().map(|t| t.0),
        Some(i) => times.get(i + 1).map(|t| t.0),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let Some(device) = require_cuda("gpu_cached_attention bench") else { return Ok(()) };
    let contexts = arg_list(&args, "--contexts", "1024,4096,16384");
    // ascending: flash_faster_from reads the lengths in order
    let mut row_counts = arg_list(&args, "--rows", "1,2,4,8,12,16,24,32,48,64");
    row_counts.sort_unstable();
    let (batch, warmup, steps) = (arg(&args, "--batch", 8usize), arg(&args, "--warmup", 3usize), arg(&args, "--steps", 20usize));
    for &context in &contexts {
        let times = measure(&device, context, &row_counts, batch, warmup, steps)?;
        println!(
            "{}",
            json_line(&[
                ("bench", quoted("cached_attention_threshold")),
                ("context", context.to_string()),
                ("batch", batch.to_string()),
                ("flash_faster_from_rows", flash_faster_from(&times).map_or("null".to_string(), |r| r.to_string())),
                ("flash_min_rows", FLASH_MIN_ROWS.to_string()),
            ])
        );
    }
    Ok(())
}
