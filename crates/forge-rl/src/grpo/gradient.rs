//! One GRPO update's loss and gradients over finished trajectories: the agent's token records
//! (ids, loss mask on generated tokens, sampling log-probs) become one right-padded batch, or one
//! packed row (trajectories back to back, positions restarting at 0); the model scores every
//! assistant token with gradient; the objective sees only those tokens.

use candle_core::{DType, Tensor};
use forge_model::{Batch, Gradients, ModelError, Qwen3ForCausalLM};

use forge_train::{Result, TrainError};

use super::objective::{grpo_loss, ObjectiveConfig, TokenInputs};

/// One trajectory as the trainer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every token fed to or produced by the model, in order.
    pub input_ids: Vec<u32>,
    /// 1 on tokens the policy generated (trained on), 0 on prompts and tool output.
    pub loss_mask: Vec<u8>,
    /// Per token: the log-prob recorded when it was sampled (read where `loss_mask` is 1).
    pub sampling_logprobs: Vec<f32>,
    /// Per token: the frozen reference's log-prob (read where `loss_mask` is 1); `None` when the
    /// objective has no KL term.
    pub reference_logprobs: Option<Vec<f32>>,
    /// The trajectory's group-normalised advantage.
    pub advantage: f32,
}

/// What one update reports.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStats {
    pub loss: f32,
    pub trained_tokens: usize,
    pub clip_fraction: f32,
    pub kl: f32,
    pub ratio_mean: f32,
}

impl UpdateStats {
    /// The stats of several parts (micro-batches of one update, or a step's mini-batch updates):
    /// the mean loss, the summed tokens, and the per-token figures weighted by each part's tokens.
    pub fn combine(parts: &[UpdateStats]) -> UpdateStats {
        let tokens: usize = parts.iter().map(|p| p.trained_tokens).sum();
        let weighted = |figure: fn(&UpdateStats) -> f32| parts.iter().map(|p| figure(p) * p.trained_tokens as f32).sum::<f32>() / tokens.max(1) as f32;
        UpdateStats {
            loss: parts.iter().map(|p| p.loss).sum::<f32>() / parts.len().max(1) as f32,
            trained_tokens: tokens,
            clip_fraction: weighted(|p| p.clip_fraction),
            kl: weighted(|p| p.kl),
            ratio_mean: weighted(|p| p.ratio_mean),
        }
    }
}

impl Sample {
    fn validate(&self, index: usize, needs_reference: bool) -> Result<()> {
        let n = self.input_ids.len();
        let bad = |what: String| Err(TrainError::Data(format!("trajectory {index}: {what}")));
        if self.loss_mask.len() != n || self.sampling_logprobs.len() != n {
            return bad(format!(
                "{n} tokens but {} mask entries and {} sampling log-probs; record one of each per token",
                self.loss_mask.len(),
                self.sampling_logprobs.len()
            ));
        }
        if self.loss_mask.first().is_some_and(|&m| m != 0) {
            return bad("the first token is marked as generated, but nothing precedes it to predict it from".into());
        }
        match (&self.reference_logprobs, needs_reference) {
            (Some(r), _) if r.len() != n => bad(format!("{n} tokens but {} reference log-probs", r.len())),
            (None, true) => bad("kl_coef > 0 but no reference log-probs were computed".into()),
            _ => Ok(()),
        }
    }
}

/// The generated (trained) tokens of `samples`.
pub fn trained_tokens(samples: &[Sample]) -> usize {
    samples.iter().map(|s| s.loss_mask.iter().filter(|&&m| m != 0).count()).sum()
}

/// The GRPO loss of `samples` — one micro-batch of an update whose loss is divided by
/// `normaliser` ([`super::Aggregation::normaliser`] of the whole update) — and the gradient of
/// every trainable parameter (`recompute`: activation checkpointing, same gradients up to float
/// summation order; `packing`: the samples back to back in one row instead of right-padded rows,
/// same loss and gradients without the padding's compute).
pub fn policy_gradient(
    model: &Qwen3ForCausalLM,
    samples: &[Sample],
    config: &ObjectiveConfig,
    normaliser: f64,
    recompute: bool,
    packing: bool,
) -> Result<(UpdateStats, Gradients)> {
    config.validate()?;
    let needs_reference = config.kl_coef > 0.0;
    for (i, sample) in samples.iter().enumerate() {
        sample.validate(i, needs_reference)?;
    }
    let longest = samples.iter().map(|x| x.input_ids.len()).max().unwrap_or(0);
    if longest < 2 {
        return Err(TrainError::Data("no trajectory has two or more tokens".into()));
    }
    let device = model.device();
    // 1. rows of s tokens: right-padded, one sample per row; or packed, every sample in one row
    // (sample r starts at starts[r]); labels are the generated tokens, -100 elsewhere
    let (b, s) = match packing {
        true => (1, samples.iter().map(|x| x.input_ids.len()).sum()),
        false => (samples.len(), longest),
    };
    let starts: Vec<usize> = match packing {
        true => samples.iter().scan(0, |at, x| Some(std::mem::replace(at, *at + x.input_ids.len()))).collect(),
        false => (0..samples.len()).map(|r| r * s).collect(),
    };
    let mut ids = vec![0u32; b * s];
    let mut keep = vec![0u32; b * s];
    let mut position_ids = vec![0u32; b * s];
    let mut labels = vec![-100i64; b * s];
    // per trained token: its flat position in the head's [b·(s−1)] layout, and its constants
    let (mut positions, mut old, mut reference, mut advantages) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (sample, &start) in samples.iter().zip(&starts) {
        for (t, &id) in sample.input_ids.iter().enumerate() {
            let at = start + t;
            ids[at] = id;
            keep[at] = 1;
            position_ids[at] = t as u32;
            if sample.loss_mask[t] != 0 {
                labels[at] = i64::from(id);
                // token `at` of row at / s is scored by the previous position of that row
                positions.push((at / s * (s - 1) + at % s - 1) as u32);
                old.push(sample.sampling_logprobs[t]);
                reference.push(sample.reference_logprobs.as_ref().map_or(0.0, |l| l[t]));
                advantages.push(sample.advantage);
            }
        }
    }
    if positions.is_empty() {
        return Err(TrainError::Data("the trajectories hold no generated tokens to train on".into()));
    }
    let n = positions.len();
    let batch = Batch {
        input_ids: Tensor::from_vec(ids, (b, s), device)?,
        attention_mask: if packing { None } else { Some(Tensor::from_vec(keep, (b, s), device)?) },
        labels: Some(Tensor::from_vec(labels, (b, s), device)?),
        position_ids: if packing { Some(Tensor::from_vec(position_ids, (b, s), device)?) } else { None },
    };
    let positions = Tensor::from_vec(positions, n, device)?;
    let old = Tensor::from_vec(old, n, device)?;
    let reference = Tensor::from_vec(reference, n, device)?;
    let advantages = Tensor::from_vec(advantages, n, device)?;
    // 2. the objective on the generated tokens' log-probs
    let mut stats = None;
    let (loss, grads) = model.objective_and_gradients(&batch, recompute, |nll, _| {
        let logprobs = nll.index_select(&positions, 0)?.to_dtype(DType::F32)?.neg()?;
        let inputs = TokenInputs {
            logprobs: &logprobs,
            old_logprobs: &old,
            ref_logprobs: needs_reference.then_some(&reference),
            advantages: &advantages,
            entropy: None,
        };
        let out = grpo_loss(&inputs, config, normaliser).map_err(|e| ModelError::Invalid(e.to_string()))?;
        stats = Some((out.clip_fraction, out.kl, out.ratio_mean));
        Ok(out.loss)
    })?;
    let (clip_fraction, kl, ratio_mean) = stats.expect("the objective ran");
    Ok((UpdateStats { loss, trained_tokens: n, clip_fraction, kl, ratio_mean }, grads))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use forge_model::{Config, ParamStore};

    use super::*;
    use crate::grpo::Aggregation;

    /// The normaliser of an update made of `samples` alone.
    fn whole(config: &ObjectiveConfig, samples: &[Sample]) -> f64 {
        config.aggregation.normaliser(trained_tokens(samples))
    }

    fn tiny_model() -> Qwen3ForCausalLM {
        let config: Config = serde_json::from_value(serde_json::json!({
            "model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64,
            "tie_word_embeddings": false
        }))
        .unwrap();
        let params = ParamStore::random(&config, 0.2, 7, DType::F32, &Device::Cpu).unwrap();
        Qwen3ForCausalLM::new(config, params).unwrap()
    }

    /// The model's own log-probs of `ids` (what the engine records while sampling).
    fn current_logprobs(model: &Qwen3ForCausalLM, ids: &[u32]) -> Vec<f32> {
        let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let row = model.token_logprobs(&t, &[ids.len()]).unwrap().remove(0);
        [vec![0.0], row].concat()
    }

    fn sample(model: &Qwen3ForCausalLM, ids: Vec<u32>, mask: Vec<u8>, advantage: f32) -> Sample {
        let sampling_logprobs = current_logprobs(model, &ids);
        Sample { input_ids: ids, loss_mask: mask, sampling_logprobs, reference_logprobs: None, advantage }
    }

    fn assert_grads_close(a: &Gradients, b: &Gradients, scale: f64) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, ga) in a {
            let gb = (&b[name] * scale).unwrap();
            let diff = (ga - &gb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let norm = gb.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-4 * norm.max(1e-6), "{name}: max diff {diff} vs max {norm}");
        }
    }

    /// On fresh samples (ratio 1, no KL) one trajectory's GRPO gradient is its advantage times the
    /// gradient of the mean NLL of its generated tokens — the SFT loss on those tokens.
    #[test]
    fn on_policy_gradient_is_advantage_times_the_sft_gradient_of_the_generated_tokens() {
        let model = tiny_model();
        let ids: Vec<u32> = vec![3, 9, 17, 4, 22, 41, 8, 13, 2, 60];
        let mask: Vec<u8> = vec![0, 0, 0, 1, 1, 0, 0, 1, 1, 1];
        let config = ObjectiveConfig { kl_coef: 0.0, ..Default::default() };
        for recompute in [false, true] {
            let batch = [sample(&model, ids.clone(), mask.clone(), 0.75)];
            let (stats, grads) = policy_gradient(&model, &batch, &config, whole(&config, &batch), recompute, false).unwrap();
            assert_eq!(stats.trained_tokens, 5);
            assert!((stats.ratio_mean - 1.0).abs() < 1e-5, "ratio {}", stats.ratio_mean);
            assert_eq!(stats.clip_fraction, 0.0);
            let labels: Vec<i64> = ids.iter().zip(&mask).map(|(&id, &m)| if m == 1 { i64::from(id) } else { -100 }).collect();
            let batch = Batch {
                input_ids: Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(),
                attention_mask: None,
                labels: Some(Tensor::new(labels.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()),
                position_ids: None,
            };
            let (_, sft) = model.loss_and_gradients(&batch, false).unwrap();
            assert_grads_close(&grads, &sft, 0.75);
        }
    }

    /// Two trajectories of different lengths (padding) with opposite advantages, token-mean over
    /// both, equal the hand-combined SFT gradients: (A₁·n₁·g₁ + A₂·n₂·g₂) / (n₁ + n₂).
    #[test]
    fn padded_groups_combine_per_token() {
        let model = tiny_model();
        let (ids1, mask1) = (vec![5u32, 6, 7, 8, 9, 10, 11], vec![0u8, 0, 1, 1, 1, 1, 0]);
        let (ids2, mask2) = (vec![12u32, 30, 31, 40], vec![0u8, 1, 0, 1]);
        let config = ObjectiveConfig { kl_coef: 0.0, aggregation: Aggregation::TokenMean, ..Default::default() };
        let samples = [sample(&model, ids1.clone(), mask1.clone(), 1.0), sample(&model, ids2.clone(), mask2.clone(), -0.5)];
        let (stats, grads) = policy_gradient(&model, &samples, &config, whole(&config, &samples), false, false).unwrap();
        assert_eq!(stats.trained_tokens, 6);
        let sft = |ids: &[u32], mask: &[u8]| {
            let labels: Vec<i64> = ids.iter().zip(mask).map(|(&id, &m)| if m == 1 { i64::from(id) } else { -100 }).collect();
            let batch = Batch {
                input_ids: Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap(),
                attention_mask: None,
                labels: Some(Tensor::new(labels.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()),
                position_ids: None,
            };
            model.loss_and_gradients(&batch, false).unwrap().1
        };
        let (g1, g2) = (sft(&ids1, &mask1), sft(&ids2, &mask2));
        let mut combined = Gradients::new();
        for (name, a) in &g1 {
            let v = ((a * (1.0 * 4.0 / 6.0)).unwrap() + (&g2[name] * (-0.5 * 2.0 / 6.0)).unwrap()).unwrap();
            combined.insert(name.clone(), v);
        }
        assert_grads_close(&grads, &combined, 1.0);
    }

    /// Packing the trajectories into one row changes the layout, not the objective: the loss,
    /// statistics and gradients equal those of the right-padded batch (with a reference for KL,
    /// clipped ratios from stale sampling log-probs, and recomputation).
    #[test]
    fn packed_trajectories_give_the_padded_update() {
        let model = tiny_model();
        let mut samples = [
            sample(&model, vec![5u32, 6, 7, 8, 9, 10, 11], vec![0u8, 0, 1, 1, 1, 1, 0], 1.0),
            sample(&model, vec![12u32, 30, 31, 40], vec![0u8, 1, 0, 1], -0.5),
            sample(&model, vec![3u32, 50], vec![0u8, 1], 0.25),
        ];
        for (i, s) in samples.iter_mut().enumerate() {
            s.reference_logprobs = Some(s.sampling_logprobs.iter().map(|l| l - 0.1 * i as f32).collect());
            s.sampling_logprobs.iter_mut().for_each(|l| *l += 0.3 * (i as f32 - 1.0));
        }
        let config = ObjectiveConfig { kl_coef: 0.05, aggregation: Aggregation::TokenMean, ..Default::default() };
        for recompute in [false, true] {
            let (padded, padded_grads) = policy_gradient(&model, &samples, &config, whole(&config, &samples), recompute, false).unwrap();
            let (packed, packed_grads) = policy_gradient(&model, &samples, &config, whole(&config, &samples), recompute, true).unwrap();
            assert_eq!(packed.trained_tokens, padded.trained_tokens);
            assert!(padded.clip_fraction > 0.0, "the stale log-probs clip some ratios");
            for (what, a, b) in [("loss", padded.loss, packed.loss), ("kl", padded.kl, packed.kl), ("ratio", padded.ratio_mean, packed.ratio_mean), ("clip", padded.clip_fraction, packed.clip_fraction)] {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "recompute {recompute}: {what} padded {a}, packed {b}");
            }
            assert_grads_close(&packed_grads, &padded_grads, 1.0);
        }
    }

    #[test]
    fn kl_to_a_reference_equal_to_the_policy_is_zero_and_bad_records_are_named() {
        let model = tiny_model();
        let ids = vec![1u32, 2, 3, 4, 5];
        let mut s = sample(&model, ids, vec![0, 1, 1, 1, 1], 1.0);
        let config = ObjectiveConfig::default();
        let err = policy_gradient(&model, std::slice::from_ref(&s), &config, whole(&config, std::slice::from_ref(&s)), false, false).unwrap_err().to_string();
        assert!(err.contains("no reference log-probs"), "{err}");
        s.reference_logprobs = Some(s.sampling_logprobs.clone());
        let (stats, _) = policy_gradient(&model, std::slice::from_ref(&s), &config, whole(&config, std::slice::from_ref(&s)), false, false).unwrap();
        assert!(stats.kl.abs() < 1e-6, "kl {}", stats.kl);
        let mut bad = s.clone();
        bad.loss_mask.pop();
        let err = policy_gradient(&model, std::slice::from_ref(&bad), &config, 1.0, false, false).unwrap_err().to_string();
        assert!(err.contains("trajectory 0") && err.contains("mask entries"), "{err}");
        let mut none = s;
        none.loss_mask = vec![0; 5];
        let err = policy_gradient(&model, std::slice::from_ref(&none), &config, 1.0, false, false).unwrap_err().to_string();
        assert!(err.contains("no generated tokens"), "{err}");
    }
}
