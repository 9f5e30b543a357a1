//! The GRPO objective: group-normalised advantages, the clipped importance-ratio policy loss with
//! separate lower/upper clip ranges (clip-higher), a KL penalty to a frozen reference with the
//! k1/k2/k3 estimators, an optional entropy bonus, aggregated over the assistant tokens of whole
//! multi-turn trajectories.
//!
//! Everything here works on flat per-token tensors that already hold only the assistant
//! (trainable) tokens of a batch: tool outputs and prompts are masked out before this point.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use forge_train::{Result, TrainError};

/// How a group's rewards become advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageNorm {
    /// GRPO: `(r − mean) / (std + eps)`, std with Bessel's correction (TRL's convention).
    #[default]
    MeanStd,
    /// Dr. GRPO: `r − mean`, no division by the group's std (avoids up-weighting easy/hard groups).
    Mean,
}

/// The estimator of KL(π_θ ‖ π_ref) per sampled token, with `log_r = log π_ref − log π_θ`
/// (Schulman, "Approximating KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `−log_r`: unbiased, high variance, can be negative.
    K1,
    /// `½·log_r²`: biased, low variance.
    K2,
    /// `exp(log_r) − log_r − 1`: unbiased and non-negative (GRPO's choice).
    #[default]
    K3,
}

/// How per-token losses become one scalar.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Aggregation {
    /// Mean over every assistant token of the batch (DAPO's token-level mean): long trajectories
    /// weigh in proportion to their length.
    #[default]
    TokenMean,
    /// Sum over tokens divided by a constant (Dr. GRPO): no length bias from the normaliser.
    TokenSumOverConstant { constant: f64 },
}

/// Knobs of the objective. Defaults: the published recipe (KL β = 0.001, k3) with clip-higher
/// (ε_low = 0.2, ε_high = 0.28, as in DAPO) and no entropy bonus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    pub advantage_norm: AdvantageNorm,
    /// Added to the group std before dividing (MeanStd only).
    pub advantage_eps: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    pub kl_coef: f64,
    pub kl_estimator: KlEstimator,
    pub entropy_coef: f64,
    pub aggregation: Aggregation,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            advantage_norm: AdvantageNorm::MeanStd,
            advantage_eps: 1e-4,
            clip_low: 0.2,
            clip_high: 0.28,
            kl_coef: 0.001,
            kl_estimator: KlEstimator::K3,
            entropy_coef: 0.0,
            aggregation: Aggregation::TokenMean,
        }
    }
}

impl Aggregation {
    /// The loss's denominator — the one place it is decided: the per-token losses of a whole
    /// update (every micro-batch of every worker, `trained_tokens` assistant tokens in all) are
    /// summed and divided by this, however the update is split.
    pub fn normaliser(&self, trained_tokens: usize) -> f64 {
        match *self {
            Aggregation::TokenMean => trained_tokens as f64,
            Aggregation::TokenSumOverConstant { constant } => constant,
        }
    }
}

impl ObjectiveConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(TrainError::Config(format!("rl.objective: {what}")));
        if !(0.0..1.0).contains(&self.clip_low) {
            return bad(format!("clip_low = {} must be in [0, 1) (the ratio is clipped below at 1 − clip_low)", self.clip_low));
        }
        if !(self.clip_high >= 0.0) {
            return bad(format!("clip_high = {} must be ≥ 0", self.clip_high));
        }
        if !(self.kl_coef >= 0.0) || !(self.entropy_coef >= 0.0) || !(self.advantage_eps >= 0.0) {
            return bad("kl_coef, entropy_coef and advantage_eps must be ≥ 0".into());
        }
        if let Aggregation::TokenSumOverConstant { constant } = self.aggregation {
            if !(constant > 0.0) {
                return bad(format!("aggregation constant = {constant} must be > 0 (e.g. the maximum trajectory length in tokens)"));
            }
        }
        Ok(())
    }
}

/// Advantages of one group's samples, or `None` when every reward is equal: such a group carries
/// no learning signal under group normalisation and is skipped (and counted) by the trainer.
pub fn group_advantages(rewards: &[f32], norm: AdvantageNorm, eps: f64) -> Option<Vec<f32>> {
    let first = *rewards.first()?;
    if rewards.iter().all(|&r| r == first) {
        return None;
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
    let scale = match norm {
        AdvantageNorm::Mean => 1.0,
        AdvantageNorm::MeanStd => {
            let var = rewards.iter().map(|&r| (f64::from(r) - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            1.0 / (var.sqrt() + eps)
        }
    };
    Some(rewards.iter().map(|&r| ((f64::from(r) - mean) * scale) as f32).collect())
}

/// Per-token inputs of the objective, all `[n]` over the same assistant tokens.
pub struct TokenInputs<'a> {
    /// `log π_θ(token)` from the training forward: the only input that carries gradient.
    pub logprobs: &'a Tensor,
    /// `log π_old(token)` recorded when the token was sampled (constant).
    pub old_logprobs: &'a Tensor,
    /// `log π_ref(token)` of the frozen reference (constant); `None` when `kl_coef` is 0.
    pub ref_logprobs: Option<&'a Tensor>,
    /// The trajectory's advantage, repeated on each of its tokens (constant).
    pub advantages: &'a Tensor,
    /// Entropy of π_θ at each position (differentiable); `None` when `entropy_coef` is 0.
    pub entropy: Option<&'a Tensor>,
}

/// The scalar loss to minimise and what the run log reports about it.
pub struct ObjectiveOutput {
    pub loss: Tensor,
    /// Fraction of tokens whose gradient the clip removed.
    pub clip_fraction: f32,
    /// Mean KL estimate per token (0 without a reference).
    pub kl: f32,
    /// Mean entropy per token, when given.
    pub entropy: Option<f32>,
    /// Mean importance ratio π_θ/π_old.
    pub ratio_mean: f32,
}

/// The GRPO loss over `inputs` (f32, any device):
/// `Σ_t [ −min(r_t·A_t, clip(r_t, 1−ε_low, 1+ε_high)·A_t) + β·KL_t − c·H_t ] / normaliser`,
/// with `r_t = exp(log π_θ − log π_old)`. `inputs` may be one micro-batch of a larger update:
/// `normaliser` is the whole update's ([`Aggregation::normaliser`]), so the micro-batches' losses
/// sum to the update's.
pub fn grpo_loss(inputs: &TokenInputs, config: &ObjectiveConfig, normaliser: f64) -> Result<ObjectiveOutput> {
    let logp = inputs.logprobs.to_dtype(DType::F32)?;
    let n = logp.dims1()?;
    if n == 0 {
        return Err(TrainError::Data("the GRPO batch holds no assistant tokens to train on".into()));
    }
    for (name, t) in [("old_logprobs", Some(inputs.old_logprobs)), ("ref_logprobs", inputs.ref_logprobs), ("advantages", Some(inputs.advantages)), ("entropy", inputs.entropy)] {
        if let Some(t) = t {
            if t.dims() != [n] {
                return Err(TrainError::Data(format!("{name} has shape {:?}; logprobs has [{n}]", t.dims())));
            }
        }
    }
    let old = inputs.old_logprobs.to_dtype(DType::F32)?.detach();
    let adv = inputs.advantages.to_dtype(DType::F32)?.detach();
    // 1. clipped surrogate
    let ratio = (&logp - &old)?.exp()?;
    let unclipped = (&ratio * &adv)?;
    let clipped = (ratio.clamp(1.0 - config.clip_low, 1.0 + config.clip_high)? * &adv)?;
    let surrogate = unclipped.minimum(&clipped)?;
    let mut per_token = surrogate.neg()?;
    // the clip removes a token's gradient exactly where the clipped branch is strictly smaller
    let clip_fraction = clipped.lt(&unclipped)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
    // 2. KL to the reference
    let mut kl_mean = 0.0;
    if config.kl_coef > 0.0 {
        let reference = inputs
            .ref_logprobs
            .ok_or_else(|| TrainError::Config("kl_coef > 0 needs reference log-probs".into()))?
            .to_dtype(DType::F32)?
            .detach();
        let kl = kl_per_token(&logp, &reference, config.kl_estimator)?;
        kl_mean = kl.mean_all()?.to_scalar::<f32>()?;
        per_token = (per_token + (kl * config.kl_coef)?)?;
    }
    // 3. entropy bonus
    let mut entropy_mean = None;
    if let Some(entropy) = inputs.entropy {
        let entropy = entropy.to_dtype(DType::F32)?;
        entropy_mean = Some(entropy.mean_all()?.to_scalar::<f32>()?);
        if config.entropy_coef > 0.0 {
            per_token = (per_token - (entropy * config.entropy_coef)?)?;
        }
    }
    // 4. aggregate
    if !(normaliser > 0.0) {
        return Err(TrainError::Data(format!("the loss normaliser is {normaliser}; it must be > 0")));
    }
    let loss = (per_token.sum_all()? / normaliser)?;
    Ok(ObjectiveOutput {
        loss,
        clip_fraction,
        kl: kl_mean,
        entropy: entropy_mean,
        ratio_mean: ratio.mean_all()?.to_scalar::<f32>()?,
    })
}

/// Per-token KL estimate between the policy (`logp`, differentiable) and the reference.
pub fn kl_per_token(logp: &Tensor, ref_logp: &Tensor, estimator: KlEstimator) -> Result<Tensor> {
    let log_r = (ref_logp - logp)?;
    Ok(match estimator {
        KlEstimator::K1 => log_r.neg()?,
        KlEstimator::K2 => (log_r.sqr()? * 0.5)?,
        KlEstimator::K3 => ((log_r.exp()? - &log_r)? - 1.0)?,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn close(a: f32, b: f64, what: &str) {
        assert!((f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1.0), "{what}: {a} vs {b}");
    }

    #[test]
    fn advantages_match_hand_computed_values() {
        // rewards 1,0,0,1: mean 0.5, sample std sqrt(1/3) = 0.5773503
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], AdvantageNorm::MeanStd, 0.0).unwrap();
        for (x, want) in a.iter().zip([0.8660254, -0.8660254, -0.8660254, 0.8660254]) {
            close(*x, want, "mean-std");
        }
        // rewards 1,0,0: mean 1/3
        let a = group_advantages(&[1.0, 0.0, 0.0], AdvantageNorm::Mean, 0.0).unwrap();
        for (x, want) in a.iter().zip([2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0]) {
            close(*x, want, "mean");
        }
        // eps enters the denominator: std of (1, 0) = 0.70710678
        let a = group_advantages(&[1.0, 0.0], AdvantageNorm::MeanStd, 0.1).unwrap();
        close(a[0], 0.5 / (std::f64::consts::FRAC_1_SQRT_2 + 0.1), "eps");
    }

    #[test]
    fn zero_variance_groups_are_skipped() {
        assert!(group_advantages(&[1.0, 1.0, 1.0], AdvantageNorm::MeanStd, 1e-4).is_none());
        assert!(group_advantages(&[0.0; 4], AdvantageNorm::Mean, 1e-4).is_none());
        assert!(group_advantages(&[], AdvantageNorm::Mean, 1e-4).is_none());
        assert!(group_advantages(&[0.0, 1.0], AdvantageNorm::Mean, 1e-4).is_some());
    }

    #[test]
    fn kl_estimators_match_hand_computed_values() {
        // log_r = ref − logp = [-0.5, 0.25, 0]
        let logp = t(&[-1.0, -2.0, -0.3]);
        let reference = t(&[-1.5, -1.75, -0.3]);
        let v = |e| kl_per_token(&logp, &reference, e).unwrap().to_vec1::<f32>().unwrap();
        let k1 = v(KlEstimator::K1);
        let k2 = v(KlEstimator::K2);
        let k3 = v(KlEstimator::K3);
        for (got, want) in k1.iter().zip([0.5, -0.25, 0.0]) {
            close(*got, want, "k1");
        }
        for (got, want) in k2.iter().zip([0.125, 0.03125, 0.0]) {
            close(*got, want, "k2");
        }
        // exp(-0.5) + 0.5 − 1 = 0.10653066; exp(0.25) − 0.25 − 1 = 0.03402542
        for (got, want) in k3.iter().zip([0.10653066, 0.03402542, 0.0]) {
            close(*got, want, "k3");
        }
    }

    /// Four tokens chosen to hit every branch: inside the band, above 1+ε_high with A>0 (clipped),
    /// below 1−ε_low with A<0 (clipped), above the band with A<0 (not clipped: min picks r·A).
    #[test]
    fn loss_and_gradient_match_hand_computed_values() {
        let config = ObjectiveConfig { clip_low: 0.2, clip_high: 0.28, kl_coef: 0.1, kl_estimator: KlEstimator::K3, ..Default::default() };
        // ratios exp(logp − old): [1.1, 1.5, 0.5, 1.5]
        let old = [-1.0f32, -1.0, -1.0, -1.0];
        let logp_v: Vec<f32> = [1.1f32, 1.5, 0.5, 1.5].iter().map(|r| r.ln() - 1.0).collect();
        let adv = [1.0f32, 2.0, -1.0, -0.5];
        let reference = [-1.0f32, -1.0, -1.0, -1.0];
        let logp = Var::new(logp_v.as_slice(), &Device::Cpu).unwrap();
        let out = grpo_loss(
            &TokenInputs { logprobs: logp.as_tensor(), old_logprobs: &t(&old), ref_logprobs: Some(&t(&reference)), advantages: &t(&adv), entropy: None },
            &config,
            config.aggregation.normaliser(4),
        )
        .unwrap();
        // surrogate min(r·A, clip(r)·A): [1.1, min(3.0, 2.56)=2.56, min(-0.5, -0.8)=-0.8, min(-0.75, -0.64)=-0.75]
        // k3 with log_r = −ln r: 1/r + ln r − 1
        let k3 = |r: f64| 1.0 / r + r.ln() - 1.0;
        let pg = -(1.1 + 2.56 - 0.8 - 0.75);
        let kl: f64 = [1.1, 1.5, 0.5, 1.5].iter().map(|&r| k3(r)).sum();
        close(out.loss.to_scalar::<f32>().unwrap(), (pg + 0.1 * kl) / 4.0, "loss");
        close(out.clip_fraction, 0.5, "clip fraction");
        close(out.kl, kl / 4.0, "kl");
        close(out.ratio_mean, (1.1 + 1.5 + 0.5 + 1.5) / 4.0, "ratio mean");
        // d/dlogp: −A·r where unclipped is active, 0 where clipped; k3' = 1 − 1/r; all / 4
        let grads = out.loss.backward().unwrap();
        let g = grads.get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let want = [(-1.1, 1.1), (0.0, 1.5), (0.0, 0.5), (0.5 * 1.5, 1.5)].map(|(pg, r): (f64, f64)| (pg + 0.1 * (1.0 - 1.0 / r)) / 4.0);
        for (i, (got, want)) in g.iter().zip(want).enumerate() {
            close(*got, want, &format!("grad[{i}]"));
        }
    }

    #[test]
    fn on_policy_gradient_is_the_advantage_weighted_score() {
        // old == logp (the first update on fresh samples): ratio 1, gradient −A/n per token
        let logp = Var::new(&[-0.7f32, -2.0, -0.1], &Device::Cpu).unwrap();
        let config = ObjectiveConfig { kl_coef: 0.0, aggregation: Aggregation::TokenSumOverConstant { constant: 10.0 }, ..Default::default() };
        let old = logp.as_tensor().detach();
        let out = grpo_loss(
            &TokenInputs { logprobs: logp.as_tensor(), old_logprobs: &old, ref_logprobs: None, advantages: &t(&[1.0, -2.0, 0.5]), entropy: None },
            &config,
            config.aggregation.normaliser(3),
        )
        .unwrap();
        close(out.loss.to_scalar::<f32>().unwrap(), -(1.0 - 2.0 + 0.5) / 10.0, "loss");
        close(out.clip_fraction, 0.0, "clip fraction");
        let g = out.loss.backward().unwrap().get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (got, want) in g.iter().zip([-0.1, 0.2, -0.05]) {
            close(*got, want, "grad");
        }
    }

    #[test]
    fn entropy_bonus_lowers_the_loss_and_pushes_entropy_up() {
        let logp = t(&[-1.0, -1.0]);
        let entropy = Var::new(&[2.0f32, 3.0], &Device::Cpu).unwrap();
        let config = ObjectiveConfig { kl_coef: 0.0, entropy_coef: 0.01, ..Default::default() };
        let out = grpo_loss(
            &TokenInputs { logprobs: &logp, old_logprobs: &logp, ref_logprobs: None, advantages: &t(&[0.0, 0.0]), entropy: Some(entropy.as_tensor()) },
            &config,
            config.aggregation.normaliser(2),
        )
        .unwrap();
        close(out.loss.to_scalar::<f32>().unwrap(), -0.01 * 2.5, "loss");
        close(out.entropy.unwrap(), 2.5, "entropy");
        let g = out.loss.backward().unwrap().get(entropy.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![-0.005, -0.005]);
    }

    #[test]
    fn bad_inputs_are_named() {
        let config = ObjectiveConfig::default();
        let err = grpo_loss(
            &TokenInputs { logprobs: &t(&[-1.0, -1.0]), old_logprobs: &t(&[-1.0]), ref_logprobs: None, advantages: &t(&[1.0, 1.0]), entropy: None },
            &config,
            config.aggregation.normaliser(2),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("old_logprobs"), "{err}");
        let err = grpo_loss(
            &TokenInputs { logprobs: &t(&[-1.0]), old_logprobs: &t(&[-1.0]), ref_logprobs: None, advantages: &t(&[1.0]), entropy: None },
            &config,
            config.aggregation.normaliser(1),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("reference log-probs"), "{err}");
        let bad = ObjectiveConfig { clip_low: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("clip_low"));
    }
}
