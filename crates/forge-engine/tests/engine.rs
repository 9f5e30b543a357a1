//! The engine against transformers' greedy `generate`, against `forge score`, and against itself
//! (continuous batching, seeded sampling).

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineError, EngineHandle, FinishReason, Generation, PrefillStats, SamplingParams};
use forge_model::Qwen3ForCausalLM;
use futures_util::future::try_join_all;

/// Models saved by transformers 4.57 and 5.x (`tf5-*`), the YaRN one with prompts past its
/// original_max_position_embeddings.
const GENERATE_FIXTURES: [&str; 5] = ["gqa2-untied-f32", "gqa4-tied-f32", "gqa2-sharded-f32", "tf5-gqa2-f32", "tf5-yarn-f32"];

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(path)
}

fn load(name: &str) -> Arc<Qwen3ForCausalLM> {
    Arc::new(forge_model::load_model(&fixture(&format!("{name}/model")), DType::F32, &Device::Cpu).unwrap())
}

fn engine(model: &Arc<Qwen3ForCausalLM>, max_batch_size: usize) -> EngineHandle {
    EngineHandle::start(model.clone(), EngineConfig { max_batch_size, ..Default::default() }).unwrap()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams { max_new_tokens, ..SamplingParams::default() }
}

fn sampled(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
    SamplingParams { max_new_tokens: 30, temperature, top_p, top_k, seed, ..SamplingParams::default() }
}

fn prompt(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 37 + salt * 101 + 3) % 480) as u32).collect()
}

/// Generates all requests concurrently on one engine.
fn generate_together(engine: &EngineHandle, requests: &[(Vec<u32>, SamplingParams)]) -> Vec<Generation> {
    block_on(try_join_all(requests.iter().map(|(p, params)| engine.generate(p.clone(), params.clone())))).unwrap()
}

struct Expected {
    mode: String,
    prompt: Vec<u32>,
    params: SamplingParams,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
}

/// fixtures/<name>/generate/expected.jsonl from scripts/fixtures/make_generate_fixtures.py.
fn expected(name: &str) -> Vec<Expected> {
    let path = fixture(&format!("{name}/generate/expected.jsonl"));
    let ids = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Expected {
                mode: v["mode"].as_str().unwrap().to_string(),
                prompt: ids(&v["prompt"]),
                params: SamplingParams {
                    max_new_tokens: v["max_new_tokens"].as_u64().unwrap() as usize,
                    stop_tokens: ids(&v["stop_tokens"]),
                    ..SamplingParams::default()
                },
                tokens: ids(&v["tokens"]),
                logprobs: v["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            }
        })
        .collect()
}

fn assert_matches(name: &str, what: &str, got: &Generation, want: &Expected) {
    assert_eq!(got.tokens, want.tokens, "{name} {what} prompt of {} tokens: greedy tokens differ from transformers", want.prompt.len());
    let reason = if want.params.stop_tokens.contains(want.tokens.last().unwrap()) { FinishReason::Stop } else { FinishReason::Length };
    assert_eq!(got.finish_reason, reason, "{name} {what}");
    for (a, b) in got.logprobs.iter().zip(&want.logprobs) {
        assert!((a - b).abs() <= 1e-4, "{name} {what}: log-prob {a} vs transformers {b}");
    }
}

#[test]
fn greedy_decoding_equals_transformers_generate_token_for_token() {
    for name in GENERATE_FIXTURES {
        let model = load(name);
        let cases = expected(name);
        assert!(cases.iter().any(|c| c.mode == "batch") && cases.iter().any(|c| c.tokens.len() < c.params.max_new_tokens));
        // each prompt alone, one at a time
        let alone = engine(&model, 1);
        for case in cases.iter().filter(|c| c.mode == "alone" || c.mode == "text") {
            let got = alone.generate_blocking(case.prompt.clone(), case.params.clone()).unwrap();
            assert_matches(name, "alone", &got, case);
        }
        // transformers' left-padded batch against one engine batch
        let batch: Vec<&Expected> = cases.iter().filter(|c| c.mode == "batch").collect();
        let requests: Vec<_> = batch.iter().map(|c| (c.prompt.clone(), c.params.clone())).collect();
        for (got, case) in generate_together(&engine(&model, 8), &requests).iter().zip(batch) {
            assert_matches(name, "batch", got, case);
        }
    }
}

#[test]
fn sampling_log_probs_equal_forge_score_of_the_same_sequence() {
    let model = load("gqa2-untied-f32");
    let engine = engine(&model, 4);
    let requests: Vec<_> = [(1.0, 1.0, 0), (0.7, 1.0, 0), (0.7, 0.9, 0), (1.0, 1.0, 40)]
        .iter()
        .enumerate()
        .map(|(i, &(t, p, k))| (prompt(5 + 7 * i, i), sampled(t, p, k, 11 + i as u64)))
        .collect();
    let generations = generate_together(&engine, &requests);
    let sequences: Vec<Vec<u32>> = requests.iter().zip(&generations).map(|((p, _), g)| [p.clone(), g.tokens.clone()].concat()).collect();
    let scores = forge_model::score::score(&model, &sequences, 4096).unwrap();
    for ((prompt, params), (generation, score)) in requests.iter().zip(generations.iter().zip(&scores)) {
        assert_eq!(generation.tokens.len(), 30);
        let scored = &score.logprobs[prompt.len() - 1..];
        assert_eq!(scored.len(), generation.logprobs.len());
        for (a, b) in generation.logprobs.iter().zip(scored) {
            assert!((a - b).abs() <= 1e-5, "temperature {} top_p {}: sampled log-prob {a} vs score {b}", params.temperature, params.top_p);
        }
    }
}

#[test]
fn continuous_batching_gives_the_tokens_of_each_sequence_alone() {
    let model = load("gqa4-tied-f32");
    // 7 requests of different lengths through a batch of 3: later ones join as earlier ones leave
    let requests: Vec<_> = (0..7).map(|i| (prompt(1 + 6 * i, i), greedy(5 + 4 * ((i * 3) % 7)))).collect();
    let together = generate_together(&engine(&model, 3), &requests);
    let one_by_one = engine(&model, 1);
    for ((prompt, params), got) in requests.iter().zip(&together) {
        let alone = one_by_one.generate_blocking(prompt.clone(), params.clone()).unwrap();
        assert_eq!(got.tokens, alone.tokens, "prompt of {} tokens", prompt.len());
        assert_eq!(got.tokens.len(), params.max_new_tokens);
        for (a, b) in got.logprobs.iter().zip(&alone.logprobs) {
            assert!((a - b).abs() <= 1e-5, "log-prob {a} batched vs {b} alone");
        }
    }
    // and with a batch wide enough for all, mixed with sampled sequences
    let mut mixed = requests.clone();
    mixed.extend((0..3).map(|i| (prompt(9, 50 + i), sampled(1.0, 1.0, 0, i as u64))));
    let wide = generate_together(&engine(&model, 16), &mixed);
    for (got, want) in wide.iter().zip(&together) {
        assert_eq!(got.tokens, want.tokens);
    }
}

#[test]
fn prompts_prefilled_in_chunks_give_the_generations_of_a_whole_prefill() {
    let model = load("gqa4-tied-f32");
    // prompts far longer than the step budget of 4 tokens, greedy and sampled, through a batch of 3
    let requests: Vec<_> = (0..5)
        .map(|i| (prompt([90, 5, 41, 1, 64][i], i), if i % 2 == 0 { greedy(6 + i) } else { sampled(1.0, 0.9, 20, i as u64) }))
        .collect();
    let whole = generate_together(&engine(&model, 3), &requests);
    let chunked_engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 3, max_step_tokens: 4, ..Default::default() }).unwrap();
    let chunked = generate_together(&chunked_engine, &requests);
    for ((p, _), (a, b)) in requests.iter().zip(whole.iter().zip(&chunked)) {
        assert_eq!(a.tokens, b.tokens, "prompt of {} tokens: chunked prefill changed the tokens", p.len());
        assert_eq!(a.finish_reason, b.finish_reason);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() <= 1e-5, "log-prob {x} whole vs {y} chunked");
        }
    }
    // the budget must hold every decoding sequence of a full batch
    let e = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 8, max_step_tokens: 4, ..Default::default() }).err().expect("refused");
    assert!(e.to_string().contains("max_step_tokens (4) must be at least max_batch_size (8)"), "{e}");
}

#[test]
fn seeded_sampling_is_reproducible_whatever_else_is_batched() {
    let model = load("gqa2-untied-f32");
    let params = sampled(1.0, 0.95, 50, 1234);
    let p = prompt(8, 0);
    let alone = engine(&model, 1).generate_blocking(p.clone(), params.clone()).unwrap();
    let mut requests = vec![(prompt(20, 1), sampled(0.7, 1.0, 0, 5)), (p.clone(), params.clone()), (prompt(3, 2), greedy(12))];
    requests.push((p.clone(), SamplingParams { seed: 99, ..params.clone() }));
    let together = generate_together(&engine(&model, 4), &requests);
    assert_eq!(together[1].tokens, alone.tokens, "same seed, different batch: different tokens");
    // batching changes the float summation order of the matmuls, not the distribution
    for (a, b) in together[1].logprobs.iter().zip(&alone.logprobs) {
        assert!((a - b).abs() <= 1e-5, "log-prob {a} batched vs {b} alone");
    }
    assert_ne!(together[3].tokens, alone.tokens, "another seed gave the same 30 tokens");
}

#[test]
fn top_k_one_equals_greedy() {
    let model = load("gqa2-sharded-f32");
    let engine = engine(&model, 2);
    for (i, len) in [3, 17].into_iter().enumerate() {
        let p = prompt(len, i);
        let greedy = engine.generate_blocking(p.clone(), greedy(30)).unwrap();
        let top1 = engine.generate_blocking(p, sampled(1.3, 1.0, 1, 77)).unwrap();
        assert_eq!((&top1.tokens, top1.finish_reason), (&greedy.tokens, greedy.finish_reason));
        // the second request reuses the first one's cached prompt and prefills only its last
        // token: another matmul shape, so another float summation order on some CPUs (AVX-512)
        for (a, b) in top1.logprobs.iter().zip(&greedy.logprobs) {
            assert!((a - b).abs() <= 1e-5, "log-prob {a} top-k 1 vs {b} greedy");
        }
    }
}

#[test]
fn generation_ends_at_max_position_embeddings() {
    let model = load("gqa2-untied-f32");
    let got = engine(&model, 2).generate_blocking(prompt(120, 0), greedy(50)).unwrap();
    assert_eq!(got.tokens.len(), 8, "128 positions - 120 prompt tokens");
    assert_eq!(got.finish_reason, FinishReason::Length);
}

#[test]
fn bad_requests_and_a_stopped_engine_are_clear_errors() {
    let model = load("gqa2-untied-f32");
    let engine = engine(&model, 2);
    let err = |p: Vec<u32>, params: SamplingParams| engine.generate_blocking(p, params).unwrap_err();
    assert!(matches!(err(vec![], greedy(4)), EngineError::EmptyPrompt));
    let e = err(prompt(128, 0), greedy(4));
    assert!(matches!(e, EngineError::PromptTooLong { len: 128, max: 128 }), "{e}");
    assert!(e.to_string().contains("context (max_position_embeddings, or YaRN's factor × original_max_position_embeddings) is 128"), "{e}");
    let e = err(vec![1, 512], greedy(4));
    assert_eq!(e.to_string(), "prompt token id 512 is outside the vocabulary (vocab_size 512)");
    assert!(matches!(err(vec![1], greedy(0)), EngineError::InvalidParams(_)));
    assert!(matches!(err(vec![1], sampled(1.0, 0.0, 0, 0)), EngineError::InvalidParams(_)));
    assert!(matches!(EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 0, ..Default::default() }), Err(EngineError::InvalidParams(_))));
    // the engine still serves good requests after bad ones
    assert_eq!(engine.generate_blocking(vec![1, 2], greedy(3)).unwrap().tokens.len(), 3);

    let clone = engine.clone();
    engine.shutdown();
    let e = clone.generate_blocking(vec![1, 2], greedy(3)).unwrap_err();
    assert!(matches!(e, EngineError::Stopped), "{e}");
    assert!(e.to_string().contains("start a new one"));
}

#[test]
fn a_paused_engine_decodes_nothing_until_resumed_and_reports_its_busy_time() {
    let model = load("gqa2-untied-f32");
    let engine = engine(&model, 4);
    assert_eq!(engine.busy_seconds(), 0.0);
    let alone = engine.generate_blocking(prompt(12, 1), greedy(6)).unwrap();
    let busy_after_one = engine.busy_seconds();
    assert!(busy_after_one > 0.0, "decoding took no time: {busy_after_one}");

    let paused = engine.pause();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let engine = engine.clone();
        std::thread::spawn(move || done_tx.send(engine.generate_blocking(prompt(12, 1), greedy(6))).unwrap())
    };
    // a paused engine must not finish (or even start) the request
    assert!(done_rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the engine decoded while paused");
    assert_eq!(engine.busy_seconds(), busy_after_one, "no decoding step ran while paused");
    drop(paused);
    let resumed = done_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the engine resumes").unwrap();
    worker.join().unwrap();
    assert_eq!(resumed.tokens, alone.tokens);
    assert!(engine.busy_seconds() > busy_after_one);
}

/// Multi-turn conversations the way the agent drives the engine: each turn's prompt is the
/// previous prompt, the generated turn and an "observation" of new tokens.
fn converse(engine: &EngineHandle, conversations: usize, turns: usize, observation: usize) -> Vec<Vec<Generation>> {
    block_on(try_join_all((0..conversations).map(|c| async move {
        let mut tokens = prompt(20 + 5 * c, c);
        let mut generations = Vec::new();
        for turn in 0..turns {
            let params = if c % 2 == 0 { greedy(5 + turn) } else { SamplingParams { max_new_tokens: 6, ..sampled(1.0, 0.9, 20, (c * 10 + turn) as u64) } };
            let generation = engine.generate(tokens.clone(), params).await?;
            tokens.extend(&generation.tokens);
            tokens.extend(prompt(observation, 10 * c + turn));
            generations.push(generation);
        }
        Ok::<_, EngineError>(generations)
    })))
    .unwrap()
}

#[test]
fn prompts_extending_a_finished_sequence_reuse_its_blocks_and_generate_as_a_whole_prefill() {
    let model = load("gqa4-tied-f32");
    let config = |prefix_caching, max_step_tokens| EngineConfig { max_batch_size: 3, max_step_tokens, prefix_caching, block_size: 4, ..Default::default() };
    let uncached = EngineHandle::start(model.clone(), config(false, 8192)).unwrap();
    let want = converse(&uncached, 3, 4, 9);
    assert_eq!(uncached.prefill_stats().reused_tokens, 0);
    // with the whole prefill in one step and chunked to 4 tokens per step
    for max_step_tokens in [8192, 4] {
        let cached = EngineHandle::start(model.clone(), config(true, max_step_tokens)).unwrap();
        let got = converse(&cached, 3, 4, 9);
        for (c, (got, want)) in got.iter().zip(&want).enumerate() {
            for (turn, (a, b)) in got.iter().zip(want).enumerate() {
                assert_eq!(a.tokens, b.tokens, "conversation {c} turn {turn}: the reused cache changed the tokens");
                assert_eq!(a.finish_reason, b.finish_reason);
                for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                    assert!((x - y).abs() <= 1e-5, "conversation {c} turn {turn}: log-prob {x} cached vs {y} prefilled");
                }
            }
        }
        // each later turn reuses the whole blocks of what the previous turn computed: all of it but
        // its last new token (never fed), in blocks of 4
        let mut expected = PrefillStats::default();
        for (c, generations) in want.iter().enumerate() {
            let mut len = 20 + 5 * c;
            for (turn, generation) in generations.iter().enumerate() {
                expected.prompt_tokens += len as u64;
                if turn > 0 {
                    expected.reused_tokens += ((len - 9 - 1) / 4 * 4) as u64;
                }
                len += generation.tokens.len() + 9;
            }
        }
        assert_eq!(cached.prefill_stats(), expected, "max_step_tokens {max_step_tokens}");
        assert_eq!(uncached.prefill_stats().prompt_tokens, expected.prompt_tokens);
    }
}

#[test]
fn a_pause_drops_the_prefix_cache_since_the_weights_may_change() {
    let model = load("gqa2-untied-f32");
    let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 2, block_size: 4, ..Default::default() }).unwrap();
    let first = engine.generate_blocking(prompt(20, 1), greedy(4)).unwrap();
    let next: Vec<u32> = prompt(20, 1).into_iter().chain(first.tokens.clone()).chain([7, 8, 9]).collect();
    drop(engine.pause());
    engine.generate_blocking(next.clone(), greedy(4)).unwrap();
    assert_eq!(engine.prefill_stats(), PrefillStats { prompt_tokens: 20 + next.len() as u64, reused_tokens: 0 });
    // without a pause in between, the same continuation reuses the finished sequence's blocks:
    // the whole blocks of `next` (its generation then diverges from [1, 2])
    let again: Vec<u32> = next.clone().into_iter().chain([1, 2]).collect();
    engine.generate_blocking(again, greedy(4)).unwrap();
    assert_eq!(engine.prefill_stats().reused_tokens, (next.len() / 4 * 4) as u64, "{:?}", engine.prefill_stats());
}

#[test]
fn a_later_sample_of_a_prompt_shares_its_blocks_and_each_sample_keeps_its_continuation() {
    let model = load("gqa2-untied-f32");
    let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 4, block_size: 4, ..Default::default() }).unwrap();
    let task = prompt(30, 2);
    let first = engine.generate_blocking(task.clone(), sampled(1.0, 1.0, 0, 1)).unwrap();
    // another sample of the same task (a GRPO group): the whole blocks of its prompt but the last
    // token are the first sample's, 28 of 29
    let second = engine.generate_blocking(task.clone(), sampled(1.0, 1.0, 0, 2)).unwrap();
    assert_eq!(engine.prefill_stats(), PrefillStats { prompt_tokens: 60, reused_tokens: 28 });
    // the first sample's next turn still finds all its whole blocks, the second's too
    for (generation, observation) in [(&first, [3, 4]), (&second, [5, 6])] {
        let before = engine.prefill_stats().reused_tokens;
        let next: Vec<u32> = task.iter().chain(&generation.tokens).chain(&observation).copied().collect();
        engine.generate_blocking(next, greedy(3)).unwrap();
        assert_eq!(engine.prefill_stats().reused_tokens - before, ((30 + generation.tokens.len() - 1) / 4 * 4) as u64);
    }
}

#[test]
fn samples_arriving_together_with_one_prompt_compute_it_once() {
    let model = load("gqa4-tied-f32");
    let task = prompt(30, 3);
    let requests: Vec<_> = (0..4).map(|i| (task.clone(), sampled(1.0, 0.9, 0, 40 + i))).collect();
    let want = generate_together(&EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 4, prefix_caching: false, ..Default::default() }).unwrap(), &requests);
    for max_step_tokens in [8192, 4] {
        let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 4, max_step_tokens, ..Default::default() }).unwrap();
        let got = generate_together(&engine, &requests);
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.tokens, b.tokens, "max_step_tokens {max_step_tokens}");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() <= 1e-5, "log-prob {x} shared vs {y} prefilled");
            }
        }
        // the first sample computes the prompt; the others share its whole blocks below the last
        // token (one of 16 positions) and compute the rest
        assert_eq!(engine.prefill_stats(), PrefillStats { prompt_tokens: 120, reused_tokens: 3 * 16 }, "max_step_tokens {max_step_tokens}");
    }
}
