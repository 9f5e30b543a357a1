//! One training step (forward + backward, no optimizer) of a ~20M-parameter Qwen3 on CPU: the
//! shape of `scripts/bench/bench_torch.py`, which measures PyTorch + transformers side by side
//! (`scripts/bench/bench-cpu.sh` runs both and writes benches/results/cpu-train-step.md).
//!
//! `cargo bench -p forge-model --bench train_step -- [--recompute] [--warmup 2] [--steps 10] [--default-malloc]`
//! prints one JSON line. Peak memory is the process high-water mark, so run one mode per process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use forge_model::memory::{activation_bytes, StepShape};
use forge_model::{Batch, Config, ParamStore, Qwen3ForCausalLM};

/// The system allocator, counting live heap bytes and their high-water mark: peak RSS also holds
/// what malloc keeps resident after a free (see `forge_kernels::cpu_memory`), the live peak is
/// what the step itself needs at its worst moment.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

impl CountingAllocator {
    fn grew(by: usize) {
        let live = LIVE_BYTES.fetch_add(by, Ordering::Relaxed) + by;
        PEAK_LIVE_BYTES.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    // `--default-malloc` shows what the tuning costs in resident memory (and gains in time)
    let tuned_malloc = !args.iter().any(|a| a == "--default-malloc");
    if tuned_malloc {
        forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    }
    let recompute = args.iter().any(|a| a == "--recompute");
    let (warmup, steps) = (arg(&args, "--warmup", 2), arg(&args, "--steps", 10));
    let (batch, seq) = (arg(&args, "--batch", 2), arg(&args, "--seq", 256));

    let config = Config::from_json(
        r#"{"model_type": "qwen3", "vocab_size": 8192, "hidden_size": 512, "intermediate_size": 1536,
            "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
            "max_position_embeddings": 4096}"#,
    )?;
    let rss_before = rss_mib("VmRSS:");
    let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
    let params = ParamStore::random(&config, 0.02, 0, DType::F32, &Device::Cpu)?;
    let model = Qwen3ForCausalLM::new(config.clone(), params)?;
    let ids: Vec<u32> = (0..batch * seq).map(|i| ((i * 2654435761usize) % config.vocab_size) as u32).collect();
    let input_ids = Tensor::from_vec(ids, (batch, seq), &Device::Cpu)?;
    let step = Batch { labels: Some(input_ids.to_dtype(DType::I64)?), input_ids, attention_mask: None, position_ids: None };

    let mut times = Vec::new();
    let mut loss = 0.0;
    for i in 0..warmup + steps {
        let start = Instant::now();
        let (l, grads) = model.loss_and_gradients(&step, recompute)?;
        drop(grads);
        let elapsed = start.elapsed().as_secs_f64();
        loss = l;
        if i >= warmup {
            times.push(elapsed);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    // what `forge train` would print before loading: weights and gradients (f32, all trainable)
    // plus forge_model::memory's activations, against the measured live-heap peak of the step
    let shape = StepShape { tokens: batch * seq, seq_len: seq, recompute, fused_attention: false, dtype: DType::F32 };
    let estimated = 2 * 4 * config.num_parameters() as u64 + activation_bytes(&config, &shape);
    let report = serde_json::json!({
        "impl": "forge",
        "threads": rayon::current_num_threads(),
        "recompute": recompute,
        "params": config.num_parameters(),
        "tokens_per_step": batch * seq,
        "step_s_median": median,
        "step_s_mean": mean,
        "tokens_per_s": (batch * seq) as f64 / median,
        "peak_rss_mib": rss_mib("VmHWM:"),
        "rss_before_model_mib": rss_before,
        "peak_live_heap_mib": mib(PEAK_LIVE_BYTES.load(Ordering::Relaxed)),
        "live_heap_before_model_mib": mib(heap_before),
        "estimated_peak_mib": mib(estimated as usize),
        "tuned_malloc": tuned_malloc,
        "loss": loss,
    });
    println!("{report}");
    Ok(())
}
