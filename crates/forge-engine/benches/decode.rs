//! Greedy generation throughput of the engine on CPU: `batch` prompts of `prompt-len` tokens, each
//! continued by exactly `new-tokens` tokens (no stop token), submitted together. The shape and the
//! prompts are those of `scripts/bench/bench_decode_torch.py`, which measures transformers' `generate` on
//! the same weights (`scripts/bench/bench-decode.sh` runs both and writes benches/results/decode-cpu.md).
//!
//! `cargo bench -p forge-engine --bench decode -- --model DIR [--batch 8] [--prompt-len 64]
//! [--new-tokens 128] [--warmup 1] [--runs 3]` prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineHandle, SamplingParams};

mod common;
use common::{arg, number, start, tokens};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(args) = start() else { return Ok(()) };
    let dir = arg(&args, "--model").ok_or("--model DIR is required (scripts/bench/bench-decode.sh makes one)")?;
    let batch = number(&args, "--batch", 8);
    let (prompt_len, new_tokens) = (number(&args, "--prompt-len", 64), number(&args, "--new-tokens", 128));
    let (warmup, runs) = (number(&args, "--warmup", 1), number(&args, "--runs", 3));

    let model = Arc::new(forge_model::load_model(dir.as_ref(), DType::F32, &Device::Cpu)?);
    let vocab = model.config().vocab_size;
    let engine = EngineHandle::start(model, EngineConfig { max_batch_size: batch, ..Default::default() })?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let params = SamplingParams { max_new_tokens: new_tokens, ..SamplingParams::default() };

    let mut times = Vec::new();
    let mut first_tokens = Vec::new();
    for run in 0..warmup + runs {
        let start = Instant::now();
        let generations = runtime.block_on(futures_util::future::try_join_all(
            (0..batch).map(|b| engine.generate(tokens(prompt_len, b, vocab), params.clone())),
        ))?;
        let elapsed = start.elapsed().as_secs_f64();
        assert!(generations.iter().all(|g| g.tokens.len() == new_tokens));
        first_tokens = generations[0].tokens.clone();
        if run >= warmup {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let report = serde_json::json!({
        "impl": "forge",
        "threads": std::thread::available_parallelism().map_or(1, usize::from),
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "generate_s_median": median,
        "tokens_per_s": (batch * new_tokens) as f64 / median,
        "first_sequence_tokens": first_tokens,
    });
    println!("{report}");
    Ok(())
}
