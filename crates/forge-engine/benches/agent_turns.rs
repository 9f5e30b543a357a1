//! Multi-turn agent conversations through the engine, with automatic prefix caching and without,
//! side by side in one run: `conversations` conversations at once, each `turns` turns of
//! `new-tokens` greedy tokens, every later prompt being the previous prompt, the generated turn
//! and an observation of `observation-len` tokens (the shape of an agent episode: system prompt
//! and task, then assistant turns and tool outputs). Runs alternate (without, with, ...) so
//! background load hits both alike; both must generate the same tokens.
//!
//! With `--samples S`, every S consecutive conversations start from one prompt (the samples of a
//! GRPO group; then sample with `--temperature`, seeded per conversation and turn).
//!
//! `cargo bench -p forge-engine --bench agent_turns -- --config CONFIG.json [--conversations 4]
//! [--samples 1] [--turns 8] [--prompt-len 1024] [--new-tokens 64] [--observation-len 256]
//! [--temperature 0] [--warmup 1] [--runs 3]` prints one JSON line per setting; the weights are
//! random (seed 0, std 0.02).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineHandle, Generation, SamplingParams};
use forge_model::{Config, ParamStore, Qwen3ForCausalLM};

mod common;
use common::{arg, number, start, tokens};


/// How far two engines' conversations agree: a conversation is identical when every turn gives
/// the same tokens; up to its first differing token, the log-probs of the tokens both chose.
#[derive(Default)]
struct Agreement {
    conversations: usize,
    identical: usize,
    max_logprob_difference: f32,
}

impl Agreement {
    fn compare(&mut self, a: &[Vec<Generation>], b: &[Vec<Generation>]) {
        for (a, b) in a.iter().zip(b) {
            self.conversations += 1;
            let (mut tokens_a, mut tokens_b) = (a.iter().flat_map(|g| g.tokens.iter().zip(&g.logprobs)), b.iter().flat_map(|g| g.tokens.iter().zip(&g.logprobs)));
            let mut identical = true;
            for ((ta, la), (tb, lb)) in tokens_a.by_ref().zip(tokens_b.by_ref()) {
                if ta != tb {
                    identical = false;
                    break;
                }
                self.max_logprob_difference = self.max_logprob_difference.max((la - lb).abs());
            }
            if identical && tokens_a.next().is_none() && tokens_b.next().is_none() {
                self.identical += 1;
            }
        }
    }
}

struct Workload {
    conversations: usize,
    samples: usize,
    temperature: f32,
    turns: usize,
    prompt_len: usize,
    new_tokens: usize,
    observation_len: usize,
    vocab: usize,
}

/// Every conversation's generations, and the seconds the whole set took.
/// Run `run` starts from prompts no earlier run used, so nothing carries over between runs.
fn converse(engine: &EngineHandle, w: &Workload, run: usize, runtime: &tokio::runtime::Runtime) -> Result<(Vec<Vec<Generation>>, f64), forge_engine::EngineError> {
    let start = Instant::now();
    let all = runtime.block_on(futures_util::future::try_join_all((0..w.conversations).map(|c| {
        async move {
            let conversation = run * w.conversations + c;
            let mut context = tokens(w.prompt_len, conversation / w.samples, w.vocab);
            let mut generations = Vec::new();
            for turn in 0..w.turns {
                let seed = (conversation * w.turns + turn) as u64;
                let params = SamplingParams { max_new_tokens: w.new_tokens, temperature: w.temperature, seed, ..SamplingParams::default() };
                let generation = engine.generate(context.clone(), params).await?;
                context.extend(&generation.tokens);
                context.extend(tokens(w.observation_len, 1000 * (conversation + 1) + turn, w.vocab));
                generations.push(generation);
            }
            Ok::<_, forge_engine::EngineError>(generations)
        }
    })))?;
    Ok((all, start.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(args) = start() else { return Ok(()) };
    let config_path = arg(&args, "--config").ok_or("--config CONFIG.json (a Qwen3 config.json) is required")?;
    let config = Config::from_json(&std::fs::read_to_string(config_path)?)?;
    let w = Workload {
        conversations: number(&args, "--conversations", 4),
        samples: number(&args, "--samples", 1).max(1),
        temperature: arg(&args, "--temperature").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        turns: number(&args, "--turns", 8),
        prompt_len: number(&args, "--prompt-len", 1024),
        new_tokens: number(&args, "--new-tokens", 64),
        observation_len: number(&args, "--observation-len", 256),
        vocab: config.vocab_size,
    };
    let (warmup, runs) = (number(&args, "--warmup", 1), number(&args, "--runs", 3));
    let final_len = w.prompt_len + w.turns * (w.new_tokens + w.observation_len);
    if final_len > config.max_position_embeddings {
        return Err(format!("the conversations reach {final_len} tokens, beyond max_position_embeddings {}", config.max_position_embeddings).into());
    }

    let params = ParamStore::random(&config, 0.02, 0, DType::F32, &Device::Cpu)?;
    let model = Arc::new(Qwen3ForCausalLM::new(config.clone(), params)?);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let engines = [false, true].map(|prefix_caching| {
        EngineHandle::start(model.clone(), EngineConfig { max_batch_size: w.conversations, prefix_caching, ..Default::default() })
    });
    let mut times = [Vec::new(), Vec::new()];
    let mut agreement = Agreement::default();
    for run in 0..warmup + runs {
        let mut outputs = [Vec::new(), Vec::new()];
        for (side, engine) in engines.iter().enumerate() {
            let engine = engine.as_ref().map_err(|e| e.to_string())?;
            let (generations, seconds) = converse(engine, &w, run, &runtime)?;
            outputs[side] = generations;
            if run >= warmup {
                times[side].push(seconds);
            }
        }
        agreement.compare(&outputs[0], &outputs[1]);
    }
    for (side, prefix_caching) in [false, true].into_iter().enumerate() {
        let engine = engines[side].as_ref().map_err(|e| e.to_string())?;
        let stats = engine.prefill_stats();
        let mut t = times[side].clone();
        t.sort_by(f64::total_cmp);
        let report = serde_json::json!({
            "impl": "forge",
            "prefix_caching": prefix_caching,
            "threads": std::thread::available_parallelism().map_or(1, usize::from),
            "parameters": model.params().num_elements(),
            "conversations": w.conversations,
            "samples": w.samples,
            "temperature": w.temperature,
            "turns": w.turns,
            "prompt_len": w.prompt_len,
            "new_tokens": w.new_tokens,
            "observation_len": w.observation_len,
            "final_len": final_len,
            "seconds_median": t[t.len() / 2],
            "seconds": t,
            // over every run, warm-up included
            "prompt_tokens": stats.prompt_tokens,
            "reused_tokens": stats.reused_tokens,
            // every run's conversations against those of the engine without prefix caching
            "conversations_compared": agreement.conversations,
            "conversations_identical": agreement.identical,
            "max_logprob_difference_before_divergence": agreement.max_logprob_difference,
        });
        println!("{report}");
    }
    Ok(())
}
