//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
//! (applied in that order, as transformers' logits warpers are), from a per-sequence seeded RNG.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// At most this many new tokens (the sequence also ends at `max_position_embeddings`).
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling: the smallest set of most likely tokens whose probability reaches `top_p`;
    /// 1 = off.
    pub top_p: f32,
    /// Only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Generation ends after any of these (it is kept as the last new token).
    pub stop_tokens: Vec<u32>,
    /// Seeds this sequence's own RNG: the same seed gives the same tokens whatever else is batched.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_p: 1.0, top_k: 0, stop_tokens: Vec::new(), seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |reason: String| Err(EngineError::InvalidParams(reason));
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens must be at least 1".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return invalid(format!("temperature {} must be a finite number ≥ 0 (0 = greedy)", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("top_p {} must be in (0, 1] (1 = off)", self.top_p));
        }
        Ok(())
    }
}

/// Picks tokens for one sequence; owns that sequence's RNG.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch space reused across tokens: (token, weight) candidates.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng, candidates: Vec::new() }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token and its log-probability under the raw distribution `softmax(logits)`.
    pub fn sample(&mut self, logits: &[f32]) -> (u32, f32) {
        let token = if self.params.temperature == 0.0 { argmax(logits) } else { self.draw(logits) };
        (token, log_softmax_at(logits, token as usize))
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let inv_t = 1.0 / self.params.temperature;
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l * inv_t)));
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.params.top_k;
        if k > 0 && k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            candidates.truncate(k);
        }
        // probabilities of the survivors, most likely first
        candidates.sort_unstable_by(by_logit_desc);
        let max = candidates[0].1;
        let mut total = 0f64;
        for c in candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += f64::from(c.1);
        }
        if self.params.top_p < 1.0 {
            // keep a token while the tokens more likely than it hold less than top_p
            let threshold = f64::from(self.params.top_p) * total;
            let mut before = 0f64;
            let keep = candidates
                .iter()
                .position(|c| {
                    let over = before >= threshold;
                    before += f64::from(c.1);
                    over
                })
                .unwrap_or(candidates.len());
            candidates.truncate(keep.max(1));
            total = candidates.iter().map(|c| f64::from(c.1)).sum();
        }
        let mut u = self.rng.random::<f64>() * total;
        for &(token, weight) in candidates.iter() {
            u -= f64::from(weight);
            if u < 0.0 {
                return token;
            }
        }
        candidates.last().expect("at least one candidate").0
    }
}

/// Index of the largest logit; the first one on ties (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(logits)[index]`, with the normaliser accumulated in f64 (of f32 exponentials,
/// cheaper than f64 ones: their rounding, ~1e-7 relative, is far below the 1e-5 the log-probs
/// are held to).
pub fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    (f64::from(logits[index] - max) - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, top_k, seed, ..SamplingParams::default() }
    }

    fn frequencies(mut sampler: Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sampler.sample(logits).0 as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn log_softmax_at_is_normalised() {
        let logits = [1.0, 2.0, -3.0, 0.5];
        let total: f64 = (0..4).map(|i| f64::from(log_softmax_at(&logits, i)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((log_softmax_at(&[0.0, 0.0], 1) - 0.5f32.ln()).abs() < 1e-7);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut sampler = Sampler::new(params(0.0, 1.0, 0, 0));
        assert_eq!(sampler.sample(&[0.1, 3.0, 3.0, -1.0]).0, 1);
    }

    #[test]
    fn sampling_follows_the_tempered_distribution() {
        let logits = [0.0f32, 1.0, 2.0];
        let freq = frequencies(Sampler::new(params(0.5, 1.0, 0, 7)), &logits, 20_000);
        let weights: Vec<f64> = logits.iter().map(|&l| (2.0 * f64::from(l)).exp()).collect();
        let z: f64 = weights.iter().sum();
        for (f, w) in freq.iter().zip(&weights) {
            assert!((f - w / z).abs() < 0.015, "{freq:?} vs {weights:?}/{z}");
        }
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [3.0f32, 2.0, 1.0, 0.0, -1.0];
        let freq = frequencies(Sampler::new(params(1.0, 1.0, 2, 1)), &logits, 5_000);
        assert!(freq[2..].iter().all(|&f| f == 0.0) && freq[0] > freq[1] && freq[1] > 0.0, "{freq:?}");
        // probabilities ≈ [.64, .24, .09, .03, .01]: top_p 0.8 keeps the first two, 0.9 three
        let freq = frequencies(Sampler::new(params(1.0, 0.8, 0, 2)), &logits, 5_000);
        assert!(freq[2..].iter().all(|&f| f == 0.0) && freq[1] > 0.0, "{freq:?}");
        let freq = frequencies(Sampler::new(params(1.0, 0.9, 0, 3)), &logits, 5_000);
        assert!(freq[3..].iter().all(|&f| f == 0.0) && freq[2] > 0.0, "{freq:?}");
        // a top token above top_p alone is kept alone
        let freq = frequencies(Sampler::new(params(1.0, 0.5, 0, 4)), &logits, 1_000);
        assert_eq!(freq[0], 1.0);
    }

    #[test]
    fn the_log_prob_is_of_the_raw_distribution() {
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut sampler = Sampler::new(params(0.3, 0.5, 1, 9));
        let (token, logprob) = sampler.sample(&logits);
        assert_eq!(token, 0);
        assert_eq!(logprob, log_softmax_at(&logits, 0));
    }

    #[test]
    fn bad_params_are_rejected() {
        for (p, needle) in [
            (SamplingParams { max_new_tokens: 0, ..SamplingParams::default() }, "max_new_tokens"),
            (params(-1.0, 1.0, 0, 0), "temperature -1"),
            (params(f32::NAN, 1.0, 0, 0), "temperature NaN"),
            (params(1.0, 0.0, 0, 0), "top_p 0"),
            (params(1.0, 1.5, 0, 0), "top_p 1.5"),
        ] {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
