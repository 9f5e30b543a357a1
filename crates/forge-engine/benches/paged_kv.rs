//! The paged KV cache against contiguous per-sequence caches, side by side in one run: `sequences`
//! sequences, every `samples` of them one prompt of `prompt-len` tokens (the samples of a GRPO
//! group), each continued by exactly `new-tokens` tokens sampled at temperature 1 (seeded per
//! sequence), all at once.
//! - paged: the engine ([`EngineHandle`], blocks of `block-size` from one pool, prefix shared by
//!   reference);
//! - contiguous: the engine's former scheme, driven here step by step: one [`forge_model::KvCache`]
//!   per sequence allocated for prompt plus new tokens, the group's prompt computed once and
//!   copied into the other samples' caches, then all decoded together.
//!
//! Runs alternate (contiguous, paged, ...) so background load hits both alike. Peak KV bytes:
//! paged, the most blocks in use at once × bytes per block; contiguous, the caches' capacity.
//!
//! `cargo bench -p forge-engine --bench paged_kv -- --config CONFIG.json [--sequences 8]
//! [--samples 8] [--prompt-len 512] [--new-tokens 64] [--block-size 16] [--warmup 1] [--runs 3]`
//! prints one JSON line per side; the weights are random (seed 0, std 0.02).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use forge_engine::sampling::Sampler;
use forge_engine::{EngineConfig, EngineHandle, SamplingParams};
use forge_model::{Config, KvCache, ParamStore, Qwen3ForCausalLM, SequenceStep};

mod common;
use common::{arg, number, start, tokens};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Workload {
    sequences: usize,
    samples: usize,
    prompt_len: usize,
    new_tokens: usize,
}

impl Workload {
    /// Sequence `s`'s prompt and sampling in run `run` (prompts no earlier run used).
    fn request(&self, run: usize, s: usize, vocab: usize) -> (Vec<u32>, SamplingParams) {
        let group = run * self.sequences + s / self.samples;
        let params = SamplingParams { max_new_tokens: self.new_tokens, temperature: 1.0, seed: (run * self.sequences + s) as u64, ..Default::default() };
        (tokens(self.prompt_len, group, vocab), params)
    }
}

/// Every sequence's tokens, the seconds, and the peak KV bytes of the contiguous scheme.
fn contiguous(model: &Qwen3ForCausalLM, w: &Workload, run: usize) -> BenchResult<(Vec<Vec<u32>>, f64, u64)> {
    let vocab = model.config().vocab_size;
    let started = Instant::now();
    let requests: Vec<_> = (0..w.sequences).map(|s| w.request(run, s, vocab)).collect();
    let capacity = w.prompt_len + w.new_tokens;
    let mut caches: Vec<KvCache> = Vec::new();
    let mut samplers: Vec<Sampler> = requests.iter().map(|(_, params)| Sampler::new(params.clone())).collect();
    let mut feed: Vec<Vec<u32>> = Vec::new();
    for (s, (prompt, _)) in requests.iter().enumerate() {
        if s % w.samples == 0 {
            // the group's first sample computes all but the prompt's last token
            let mut cache = model.new_kv_cache(capacity)?;
            model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &prompt[..w.prompt_len - 1] }])?;
            caches.push(cache);
        } else {
            let first = &caches[s - s % w.samples];
            caches.push(first.prefix_copy(w.prompt_len - 1, capacity)?);
        }
        feed.push(prompt[w.prompt_len - 1..].to_vec());
    }
    let mut generated = vec![Vec::new(); w.sequences];
    for _ in 0..w.new_tokens {
        let mut steps: Vec<SequenceStep> = caches.iter_mut().zip(&feed).map(|(cache, tokens)| SequenceStep { cache, tokens }).collect();
        let logits = model.forward_step(&mut steps)?.flatten_all()?.to_vec1::<f32>()?;
        for (s, row) in logits.chunks_exact(vocab).enumerate() {
            let (token, _) = samplers[s].sample(row);
            generated[s].push(token);
            feed[s] = vec![token];
        }
    }
    let per_token = forge_model::memory::kv_cache_size(model.config(), 1, 1, model.dtype(), model.device()).bytes;
    Ok((generated, started.elapsed().as_secs_f64(), (w.sequences * capacity) as u64 * per_token))
}

/// Every sequence's tokens and the seconds, through the paged engine.
fn paged(engine: &EngineHandle, w: &Workload, run: usize, vocab: usize, runtime: &tokio::runtime::Runtime) -> BenchResult<(Vec<Vec<u32>>, f64)> {
    let started = Instant::now();
    let requests: Vec<_> = (0..w.sequences).map(|s| w.request(run, s, vocab)).collect();
    let generations = runtime.block_on(futures_util::future::try_join_all(requests.into_iter().map(|(prompt, params)| engine.generate(prompt, params))))?;
    Ok((generations.into_iter().map(|g| g.tokens).collect(), started.elapsed().as_secs_f64()))
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> BenchResult<()> {
    let Some(args) = start() else { return Ok(()) };
    let config_path = arg(&args, "--config").ok_or("--config CONFIG.json (a Qwen3 config.json) is required")?;
    let config = Config::from_json(&std::fs::read_to_string(config_path)?)?;
    let w = Workload {
        sequences: number(&args, "--sequences", 8),
        samples: number(&args, "--samples", 8).max(1),
        prompt_len: number(&args, "--prompt-len", 512),
        new_tokens: number(&args, "--new-tokens", 64),
    };
    let block_size = number(&args, "--block-size", 16);
    let (warmup, runs) = (number(&args, "--warmup", 1), number(&args, "--runs", 3));
    let params = ParamStore::random(&config, 0.02, 0, DType::F32, &Device::Cpu)?;
    let model = Arc::new(Qwen3ForCausalLM::new(config.clone(), params)?);
    let vocab = config.vocab_size;
    let block_bytes = forge_model::memory::kv_block_bytes(&config, block_size, DType::F32, &Device::Cpu);
    // a pool with room for every sequence unshared, so the two sides differ in layout alone
    let pool_blocks = w.sequences * (w.prompt_len + w.new_tokens).div_ceil(block_size);
    let engine_config = EngineConfig { max_batch_size: w.sequences, kv_cache_memory: Some(pool_blocks as u64 * block_bytes), block_size, ..Default::default() };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (mut contiguous_times, mut paged_times) = (Vec::new(), Vec::new());
    let (mut contiguous_peak, mut paged_peak_blocks) = (0, 0);
    let (mut compared, mut identical) = (0, 0);
    for run in 0..warmup + runs {
        let (want, seconds, peak) = contiguous(&model, &w, run)?;
        contiguous_peak = peak;
        // a fresh engine per run: its peak is this run's, and no run reuses another's blocks
        let engine = EngineHandle::start(model.clone(), engine_config.clone())?;
        let (got, paged_seconds) = paged(&engine, &w, run, vocab, &runtime)?;
        paged_peak_blocks = engine.kv_cache_stats().peak_blocks_in_use;
        if run >= warmup {
            contiguous_times.push(seconds);
            paged_times.push(paged_seconds);
        }
        compared += got.len();
        identical += got.iter().zip(&want).filter(|(a, b)| a == b).count();
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let tokens = (w.sequences * w.new_tokens) as f64;
    for (side, times, peak) in [("contiguous", contiguous_times, contiguous_peak), ("paged", paged_times, paged_peak_blocks as u64 * block_bytes)] {
        let seconds = median(times.clone());
        let report = serde_json::json!({
            "side": side,
            "threads": threads,
            "parameters": model.params().num_elements(),
            "sequences": w.sequences,
            "samples": w.samples,
            "prompt_len": w.prompt_len,
            "new_tokens": w.new_tokens,
            "block_size": block_size,
            "seconds_median": seconds,
            "seconds": times,
            "tokens_per_s": tokens / seconds,
            "peak_kv_bytes": peak,
            "paged_peak_blocks": paged_peak_blocks,
            // every run's sequences, the paged engine's against the contiguous scheme's
            "sequences_compared": compared,
            "sequences_identical": identical,
        });
        println!("{report}");
    }
    Ok(())
}
