//! Incremental decoding with a KV cache against the full-sequence forward.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{model_dir, rel_err};
use forge_model::{ModelError, Qwen3ForCausalLM, SequenceStep};

fn sequence(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 131 + salt * 977 + 7) % 480) as u32).collect()
}

/// Full-forward logits of `ids` at every position: `[len, vocab]` f32.
fn full_logits(model: &Qwen3ForCausalLM, ids: &[u32]) -> Tensor {
    let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    model.forward(&input, None).unwrap().squeeze(0).unwrap().to_dtype(DType::F32).unwrap()
}

#[test]
fn prefill_then_token_by_token_matches_the_full_forward() {
    for name in ["gqa2-untied-f32", "gqa4-tied-f32", "gqa2-sharded-f32"] {
        let model = forge_model::load_model(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
        let ids = sequence(40, 1);
        let full = full_logits(&model, &ids);
        let mut cache = model.new_kv_cache(ids.len()).unwrap();
        let prompt = 9;
        let logits = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &ids[..prompt] }]).unwrap();
        let e = rel_err(&logits.squeeze(0).unwrap(), &full.get(prompt - 1).unwrap());
        assert!(e <= 1e-5, "{name}: prefill logits relative error {e:e}");
        for t in prompt..ids.len() {
            let logits = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &ids[t..t + 1] }]).unwrap();
            let e = rel_err(&logits.squeeze(0).unwrap(), &full.get(t).unwrap());
            assert!(e <= 1e-5, "{name}: position {t}: logits relative error {e:e}");
        }
        assert_eq!(cache.len(), ids.len());
    }
}

#[test]
fn a_ragged_step_of_sequences_at_different_positions_matches_each_full_forward() {
    let model = forge_model::load_model(&model_dir("gqa2-untied-f32"), DType::F32, &Device::Cpu).unwrap();
    let seqs: Vec<Vec<u32>> = [30, 5, 17].iter().enumerate().map(|(i, &n)| sequence(n, i)).collect();
    let mut caches: Vec<_> = seqs.iter().map(|s| model.new_kv_cache(s.len()).unwrap()).collect();
    // sequence 0 is 20 tokens in, sequence 2 is 3 tokens in, sequence 1 is new
    for (i, done) in [(0, 20), (2, 3)] {
        model.forward_step(&mut [SequenceStep { cache: &mut caches[i], tokens: &seqs[i][..done] }]).unwrap();
    }
    // one step: a single token for sequence 0, a 5-token prefill for 1, 4 tokens for 2
    let chunks = [&seqs[0][20..21], &seqs[1][..], &seqs[2][3..7]];
    let mut steps: Vec<SequenceStep> = caches.iter_mut().zip(chunks).map(|(cache, tokens)| SequenceStep { cache, tokens }).collect();
    let logits = model.forward_step(&mut steps).unwrap();
    for (i, (seq, last)) in seqs.iter().zip([20, 4, 6]).enumerate() {
        let e = rel_err(&logits.get(i).unwrap(), &full_logits(&model, seq).get(last).unwrap());
        assert!(e <= 1e-5, "sequence {i}: logits relative error {e:e}");
    }
    assert_eq!(caches.iter().map(|c| c.len()).collect::<Vec<_>>(), [21, 5, 7]);
}

#[test]
fn bf16_decoding_stays_within_bf16_tolerance_of_the_full_forward() {
    let model = forge_model::load_model(&model_dir("mha-bf16"), DType::BF16, &Device::Cpu).unwrap();
    let ids = sequence(24, 3);
    let full = full_logits(&model, &ids);
    let mut cache = model.new_kv_cache(ids.len()).unwrap();
    model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &ids[..8] }]).unwrap();
    for t in 8..ids.len() {
        let logits = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &ids[t..t + 1] }]).unwrap();
        let e = rel_err(&logits.squeeze(0).unwrap(), &full.get(t).unwrap());
        assert!(e <= 2e-2, "position {t}: bf16 logits relative error {e:e}");
    }
}

#[test]
fn bad_steps_are_errors_and_leave_the_cache_untouched() {
    let model = forge_model::load_model(&model_dir("gqa2-untied-f32"), DType::F32, &Device::Cpu).unwrap();
    let mut cache = model.new_kv_cache(4).unwrap();
    model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &[1, 2, 3] }]).unwrap();
    let err = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &[4, 5] }]).unwrap_err();
    assert!(err.to_string().contains("KV cache of 4 positions holds 3 already"), "{err}");
    let err = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &[9999] }]).unwrap_err();
    assert!(matches!(err, ModelError::TokenOutOfVocab { id: 9999, vocab_size: 512 }), "{err}");
    let err = model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &[] }]).unwrap_err();
    assert!(err.to_string().contains("no new tokens"), "{err}");
    assert_eq!(cache.len(), 3);
    assert!(model.forward_step(&mut []).is_err());
}
