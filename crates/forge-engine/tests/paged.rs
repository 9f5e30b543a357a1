//! The paged KV cache: block-table decoding against contiguous caches, a pool too small for all
//! sequences (preemption by recompute), a group's shared prompt stored once, an impossible request.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_engine::sampling::Sampler;
use forge_engine::{EngineConfig, EngineError, EngineHandle, Generation, SamplingParams};
use forge_model::{KvBlockPool, PagedStep, Qwen3ForCausalLM, SequenceStep};
use futures_util::future::try_join_all;

fn load(name: &str) -> Arc<Qwen3ForCausalLM> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name).join("model");
    Arc::new(forge_model::load_model(&dir, DType::F32, &Device::Cpu).unwrap())
}

fn prompt(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 37 + salt * 101 + 3) % 480) as u32).collect()
}

fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams { max_new_tokens, ..SamplingParams::default() }
}

fn generate_together(engine: &EngineHandle, requests: &[(Vec<u32>, SamplingParams)]) -> Vec<Generation> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(try_join_all(requests.iter().map(|(p, params)| engine.generate(p.clone(), params.clone())))).unwrap()
}

/// Bytes of `blocks` KV blocks of `block_size` positions of `model` (f32 on the CPU).
fn pool_bytes(model: &Qwen3ForCausalLM, blocks: u64, block_size: usize) -> u64 {
    blocks * forge_model::memory::kv_block_bytes(model.config(), block_size, DType::F32, &Device::Cpu)
}

#[test]
fn paged_steps_give_the_logits_of_contiguous_caches_bit_for_bit() {
    let model = load("gqa4-tied-f32");
    // three sequences of different lengths, prefilled in uneven chunks then decoded together, their
    // blocks of 4 positions interleaved in the pool as a busy engine hands them out
    let sequences: Vec<Vec<u32>> = [23, 9, 14].iter().enumerate().map(|(i, &len)| prompt(len, i)).collect();
    let chunks: [&[usize]; 3] = [&[10, 7, 1, 1, 1, 1, 1, 1], &[5, 1, 1, 1, 1], &[3, 8, 1, 1, 1]];
    let block_size = 4;
    let mut pool = KvBlockPool::new(model.config(), 24, block_size);
    let mut next_block = 0u32;
    let mut tables: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let mut caches: Vec<_> = sequences.iter().map(|s| model.new_kv_cache(s.len()).unwrap()).collect();
    let mut at = [0usize; 3];
    for step in 0..8 {
        let taking: Vec<(usize, usize)> = (0..3).filter_map(|i| chunks[i].get(step).map(|&n| (i, n))).collect();
        for &(i, n) in &taking {
            while tables[i].len() * block_size < at[i] + n {
                // blocks 0, 7, 14, 21, 4, ...: out of order, the sequences' interleaved
                tables[i].push((next_block * 7) % 24);
                next_block += 1;
            }
        }
        let paged: Vec<PagedStep> = taking.iter().map(|&(i, n)| PagedStep { block_table: &tables[i], cached: at[i], tokens: &sequences[i][at[i]..at[i] + n] }).collect();
        let got = model.forward_paged(&mut pool, &paged).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut contiguous: Vec<SequenceStep> = caches
            .iter_mut()
            .enumerate()
            .filter_map(|(i, cache)| taking.iter().find(|&&(j, _)| j == i).map(|&(_, n)| SequenceStep { cache, tokens: &sequences[i][at[i]..at[i] + n] }))
            .collect();
        let want = model.forward_step(&mut contiguous).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, want, "step {step}: paged logits differ from the contiguous caches'");
        for &(i, n) in &taking {
            at[i] += n;
        }
    }
    assert_eq!(at, [23, 9, 14], "every token fed");
}

#[test]
fn the_paged_engine_generates_what_contiguous_decoding_does() {
    let model = load("gqa2-untied-f32");
    let requests: Vec<(Vec<u32>, SamplingParams)> = [5, 17, 33, 2, 48].iter().enumerate().map(|(i, &len)| (prompt(len, i), greedy(12 + 3 * i))).collect();
    // one sequence at a time, each prefilled whole then decoded token by token: the steps of a
    // contiguous-cache loop exactly, so the same float operations in the same order
    let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 1, prefix_caching: false, block_size: 4, ..Default::default() }).unwrap();
    for (prompt, params) in &requests {
        let got = engine.generate_blocking(prompt.clone(), params.clone()).unwrap();
        let mut cache = model.new_kv_cache(prompt.len() + params.max_new_tokens).unwrap();
        let mut sampler = Sampler::new(params.clone());
        let (mut tokens, mut logprobs) = (Vec::new(), Vec::new());
        let mut feed = prompt.clone();
        while tokens.len() < params.max_new_tokens {
            let logits = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &feed }]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (token, logprob) = sampler.sample(&logits);
            tokens.push(token);
            logprobs.push(logprob);
            feed = vec![token];
        }
        assert_eq!(got.tokens, tokens, "prompt of {} tokens", prompt.len());
        assert_eq!(got.logprobs, logprobs, "prompt of {} tokens: log-probs not bit-identical", prompt.len());
    }
    // all together (different lengths, one batch): the batch changes the matmuls' shapes, hence
    // their float summation order, not the tokens
    let together = generate_together(&EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 5, block_size: 4, ..Default::default() }).unwrap(), &requests);
    for ((prompt, params), got) in requests.iter().zip(&together) {
        let alone = engine.generate_blocking(prompt.clone(), params.clone()).unwrap();
        assert_eq!(got.tokens, alone.tokens, "prompt of {} tokens", prompt.len());
        for (a, b) in got.logprobs.iter().zip(&alone.logprobs) {
            assert!((a - b).abs() <= 1e-5, "log-prob {a} batched vs {b} alone");
        }
    }
}

#[test]
fn a_pool_too_small_for_every_sequence_preempts_and_still_completes_them_all_alike() {
    let model = load("gqa4-tied-f32");
    // 6 sequences of 9 to 14 blocks of 4 (69 at once), greedy and seeded sampling
    let requests: Vec<(Vec<u32>, SamplingParams)> = (0..6)
        .map(|i| {
            let params = if i % 2 == 0 { greedy(24) } else { SamplingParams { max_new_tokens: 24, temperature: 1.0, top_p: 0.9, seed: 7 + i as u64, ..Default::default() } };
            (prompt(10 + 4 * i, i), params)
        })
        .collect();
    let config = |kv_cache_memory| EngineConfig { max_batch_size: 6, block_size: 4, kv_cache_memory, ..Default::default() };
    let ample = EngineHandle::start(model.clone(), config(None)).unwrap();
    let want = generate_together(&ample, &requests);
    assert_eq!(ample.kv_cache_stats().preemptions, 0);
    // 16 blocks: the largest sequence alone fits, all six together do not
    let tight = EngineHandle::start(model.clone(), config(Some(pool_bytes(&model, 16, 4)))).unwrap();
    let got = generate_together(&tight, &requests);
    let stats = tight.kv_cache_stats();
    assert_eq!(stats.blocks_total, 16);
    assert!(stats.preemptions > 0, "the pool held every sequence: {stats:?}");
    assert!(stats.peak_blocks_in_use <= 16);
    assert_eq!(stats.blocks_in_use, 0, "finished sequences hold no blocks");
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.tokens, b.tokens, "sequence {i}: preemption changed the tokens");
        assert_eq!(a.finish_reason, b.finish_reason);
        // a recomputed sequence prefills its generated tokens in one chunk rather than one per
        // step: other matmul shapes, so another float summation order
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() <= 1e-5, "sequence {i}: log-prob {x} preempted vs {y} ample pool");
        }
    }
}

#[test]
fn a_prompt_shared_by_a_groups_samples_is_stored_once() {
    let model = load("gqa2-untied-f32");
    // 4 samples of a 65-token prompt, 10 new tokens each: positions 0..74 are computed per sample,
    // blocks of 16: the prompt's 4 whole blocks below its last token are shared, and each sample
    // computes the rest in its own fifth block
    let task = prompt(65, 9);
    let requests: Vec<_> = (0..4).map(|i| (task.clone(), SamplingParams { max_new_tokens: 10, temperature: 1.0, seed: i, ..Default::default() })).collect();
    let config = |prefix_caching| EngineConfig { max_batch_size: 4, prefix_caching, ..Default::default() };
    let shared = EngineHandle::start(model.clone(), config(true)).unwrap();
    let got = generate_together(&shared, &requests);
    assert!(got.iter().all(|g| g.tokens.len() == 10));
    assert_eq!(shared.kv_cache_stats().peak_blocks_in_use, 4 + 4, "4 prompt blocks + one block per sample");
    // the prompt's blocks stay cached for the group's next turns
    let stats = shared.kv_cache_stats();
    assert_eq!((stats.blocks_in_use, stats.blocks_cached), (0, 4), "{stats:?}");
    let unshared = EngineHandle::start(model.clone(), config(false)).unwrap();
    let want = generate_together(&unshared, &requests);
    assert_eq!(unshared.kv_cache_stats().peak_blocks_in_use, 4 * 5, "each sample its own copy");
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a.tokens, b.tokens);
    }
}

#[test]
fn a_request_that_can_never_fit_the_pool_is_a_clear_error() {
    let model = load("gqa2-untied-f32");
    let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 2, kv_cache_memory: Some(pool_bytes(&model, 4, 16)), ..Default::default() }).unwrap();
    // 60 + 10 new tokens: 69 cached positions, 5 blocks of 16
    let e = engine.generate_blocking(prompt(60, 0), greedy(10)).unwrap_err();
    assert!(matches!(e, EngineError::ExceedsKvCache { positions: 69, block_size: 16, blocks: 4 }), "{e}");
    assert!(e.to_string().contains("5 blocks of block_size 16, but the KV cache pool holds 4 blocks in all: raise engine.kv_cache_memory"), "{e}");
    // what fits the whole pool still runs: 60 + 4 new tokens, 63 positions
    assert_eq!(engine.generate_blocking(prompt(60, 0), greedy(4)).unwrap().tokens.len(), 4);
    // a budget below one block
    let e = EngineHandle::start(model.clone(), EngineConfig { kv_cache_memory: Some(pool_bytes(&model, 1, 16) - 1), ..Default::default() }).err().expect("refused");
    assert!(e.to_string().contains("engine.kv_cache_memory") && e.to_string().contains("holds no KV block"), "{e}");
}
