//! One GRPO micro-batch (forward, backward of the policy-gradient objective) of trajectories of
//! mixed lengths, right-padded rows against one packed row, alternating in one process, on CPU.
//! RL mini-batches hold trajectories in shuffled order, so a padded micro-batch pays for its
//! longest trajectory in every row; packing computes only real tokens. Prints one JSON line per
//! layout and one with the ratio. `scripts/bench/bench-packing.sh` records the table.
//!
//! `cargo bench -p forge-rl --bench packing -- [--config configs/demo/qwen3-demo.json]
//!  [--samples 6] [--min-len 256] [--max-len 1536] [--reps 5] [--seed 0]`

use std::time::Instant;

use candle_core::{DType, Device};
use forge_model::{Config, ParamStore, Qwen3ForCausalLM};
use forge_rl::grpo::{policy_gradient, trained_tokens, Aggregation, ObjectiveConfig, Sample};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    forge_model::forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let num = |name: &str, default: usize| arg(&args, name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (samples, min_len, max_len, reps, seed) = (num("--samples", 6), num("--min-len", 256), num("--max-len", 1536), num("--reps", 5), num("--seed", 0));
    let config_path = arg(&args, "--config").unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/demo/qwen3-demo.json"));
    let config = Config::from_json(&std::fs::read_to_string(config_path)?)?;
    let model = Qwen3ForCausalLM::new(config.clone(), ParamStore::random(&config, 0.02, 0, DType::F32, &Device::Cpu)?)?;

    // trajectories of uniformly random lengths; a prompt, then alternating generated and tool spans
    let mut rng = StdRng::seed_from_u64(seed as u64);
    let batch: Vec<Sample> = (0..samples)
        .map(|i| {
            let n = rng.random_range(min_len..=max_len);
            let input_ids = (0..n).map(|t| ((t * 2654435761 + i * 40503) % config.vocab_size) as u32).collect();
            let loss_mask = (0..n).map(|t| u8::from(t >= n / 4 && (t / 64) % 2 == 0)).collect();
            Sample { input_ids, loss_mask, sampling_logprobs: vec![-2.0; n], reference_logprobs: None, advantage: if i % 2 == 0 { 1.0 } else { -1.0 } }
        })
        .collect();
    let tokens: usize = batch.iter().map(|s| s.input_ids.len()).sum();
    let padded_tokens = samples * batch.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
    let objective = ObjectiveConfig { kl_coef: 0.0, aggregation: Aggregation::TokenMean, ..Default::default() };
    let normaliser = objective.aggregation.normaliser(trained_tokens(&batch));

    let (mut times, mut losses) = ([Vec::new(), Vec::new()], [0f32; 2]);
    for rep in 0..reps + 1 {
        for (layout, packing) in [false, true].into_iter().enumerate() {
            let started = Instant::now();
            let (stats, grads) = policy_gradient(&model, &batch, &objective, normaliser, false, packing)?;
            let seconds = started.elapsed().as_secs_f64();
            drop(grads);
            losses[layout] = stats.loss;
            if rep > 0 {
                times[layout].push(seconds); // the first round warms up
            }
        }
    }
    let [padded, packed] = times.map(median);
    for (layout, seconds, computed) in [("padded", padded, padded_tokens), ("packed", packed, tokens)] {
        println!(
            "{}",
            serde_json::json!({"bench": "grpo_micro_batch", "layout": layout, "samples": samples, "tokens": tokens,
                               "computed_tokens": computed, "median_s": seconds, "tokens_per_s": tokens as f64 / seconds})
        );
    }
    println!(
        "{}",
        serde_json::json!({"bench": "grpo_micro_batch", "summary": "padded / packed time", "speedup": padded / packed,
                           "padding": 1.0 - tokens as f64 / padded_tokens as f64, "loss_difference": (losses[0] - losses[1]).abs()})
    );
    Ok(())
}
