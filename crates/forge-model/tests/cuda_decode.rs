//! Decoding on the GPU, whose KV caches live there and are attended by the decode kernels
//! (kernels/decode_attn.cu's split-K; in bf16, prefill runs of 16 rows or more by
//! kernels/flash_attn.cu's `flash_fwd_cached`), against the same model decoding on the CPU over
//! host caches: one ragged step mixing a long prefill (300 rows: flash tiles of 64, 64, 64, 64,
//! 44), a 40-row prefill and a new sequence, then token-by-token steps; and decoding on from a
//! prefix copy of a device cache (a 105-row run at position 200). Needs a GPU: run by
//! scripts/gpu/gpu-check.sh (CI=true there; CI on GPU-less machines only compiles this file).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use forge_kernels::testing::{parity_tolerance, relative_error, require_cuda};
use forge_model::{Config, ParamStore, Qwen3ForCausalLM, SequenceStep};

/// Qwen3-shaped and small: GQA 4:1 at head dim 128, the decode kernels' shapes.
fn config() -> Config {
    Config::from_json(
        r#"{"vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 1024, "tie_word_embeddings": false}"#,
    )
    .unwrap()
}

fn sequence(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 131 + salt * 977 + 7) % 512) as u32).collect()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Logits of every step: a prefill of 300, 40 and 1 tokens, a ragged step (one token, a 5-token
/// chunk, one token), then 4 single-token steps of all three.
fn decode(model: &Qwen3ForCausalLM) -> Vec<Vec<f32>> {
    let seqs: Vec<Vec<u32>> = [310, 50, 10].iter().enumerate().map(|(i, &n)| sequence(n, i)).collect();
    let mut caches: Vec<_> = seqs.iter().map(|s| model.new_kv_cache(s.len()).unwrap()).collect();
    assert_eq!(caches[0].on_device(), model.device().is_cuda(), "GPU models keep their caches on the GPU");
    let mut done = [0usize; 3];
    let mut logits = Vec::new();
    for chunk in [[300, 40, 1], [1, 5, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]] {
        let mut steps: Vec<SequenceStep> = caches
            .iter_mut()
            .zip(&seqs)
            .zip(chunk)
            .zip(&done)
            .map(|(((cache, seq), n), &at)| SequenceStep { cache, tokens: &seq[at..at + n] })
            .collect();
        logits.push(host(&model.forward_step(&mut steps).unwrap()));
        done.iter_mut().zip(chunk).for_each(|(d, n)| *d += n);
    }
    logits
}

#[test]
fn gpu_decoding_over_device_caches_matches_cpu_decoding_over_host_caches() {
    let Some(gpu) = require_cuda("gpu_decoding_over_device_caches_matches_cpu_decoding_over_host_caches") else { return };
    let config = config();
    for dtype in [DType::F32, DType::BF16] {
        let model = |device: &Device| Qwen3ForCausalLM::new(config.clone(), ParamStore::random(&config, 0.05, 11, dtype, device).unwrap()).unwrap();
        let (cpu, cuda) = (decode(&model(&Device::Cpu)), decode(&model(&gpu)));
        // bf16 on the CPU decodes over f32 host caches, on the GPU over bf16 caches: a bf16 rounding apart
        let tolerance = 2.0 * parity_tolerance(dtype);
        for (step, (c, g)) in cpu.iter().zip(&cuda).enumerate() {
            let err = relative_error(g, c);
            eprintln!("{dtype:?} step {step}: logits relative error {err:.2e}");
            assert!(err <= tolerance, "{dtype:?} step {step}: logits relative error {err:.2e} above {tolerance:.0e}");
        }
    }
}

/// The engine's prefix cache copies a device cache's first positions into a larger one
/// (`KvCache::prefix_copy`, `slice_set` on the GPU): continuing from the copy must give the logits
/// of prefilling the whole sequence.
#[test]
fn a_device_cache_prefix_copy_continues_like_a_whole_prefill() {
    let Some(gpu) = require_cuda("a_device_cache_prefix_copy_continues_like_a_whole_prefill") else { return };
    let config = config();
    let tokens = sequence(305, 3);
    for dtype in [DType::F32, DType::BF16] {
        let model = Qwen3ForCausalLM::new(config.clone(), ParamStore::random(&config, 0.05, 11, dtype, &gpu).unwrap()).unwrap();
        let mut whole = model.new_kv_cache(320).unwrap();
        let want = host(&model.forward_step(&mut [SequenceStep { cache: &mut whole, tokens: &tokens }]).unwrap());
        let mut original = model.new_kv_cache(300).unwrap();
        model.forward_step(&mut [SequenceStep { cache: &mut original, tokens: &tokens[..300] }]).unwrap();
        let mut copy = original.prefix_copy(200, 320).unwrap();
        assert!(copy.on_device() && copy.len() == 200 && copy.capacity() == 320);
        let got = host(&model.forward_step(&mut [SequenceStep { cache: &mut copy, tokens: &tokens[200..] }]).unwrap());
        let err = relative_error(&got, &want);
        eprintln!("{dtype:?}: logits after a prefix copy, relative error {err:.2e}");
        assert!(err <= parity_tolerance(dtype), "{dtype:?}: logits after a prefix copy, relative error {err:.2e}");
    }
}
