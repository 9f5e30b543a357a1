//! Learning-rate schedules with the semantics of `transformers.optimization`:
//! `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup` and
//! `get_cosine_schedule_with_warmup` (plus the `min_lr_rate` floor of
//! `get_cosine_with_min_lr_schedule_with_warmup`, applied to the linear decay the same way).
//!
//! As with torch's `LambdaLR`, `lr(step)` is the learning rate of the optimizer step that follows
//! `step` completed steps: the first update uses `lr(0)` (zero when there is warmup).

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear warmup, then the base learning rate.
    Constant,
    /// Linear warmup, then linear decay to `min_lr_ratio × base` at `total_steps`.
    Linear,
    /// Linear warmup, then cosine decay (`num_cycles` half-waves; 0.5 = one half-cosine to the floor).
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Steps of the whole run (warmup included); ignored by `Constant`.
    #[serde(default)]
    pub total_steps: u64,
    /// Floor of the decay as a fraction of `base_lr` (transformers' `min_lr_rate`); 0 decays to 0.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Cosine only: number of waves; transformers' default 0.5 is a single decay from 1 to the floor.
    #[serde(default = "default_num_cycles")]
    pub num_cycles: f64,
}

fn default_num_cycles() -> f64 {
    0.5
}

impl LrSchedule {
    pub fn constant(base_lr: f64, warmup_steps: u64) -> Self {
        Self { kind: ScheduleKind::Constant, base_lr, warmup_steps, total_steps: 0, min_lr_ratio: 0.0, num_cycles: 0.5 }
    }

    pub fn linear(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Self { kind: ScheduleKind::Linear, base_lr, warmup_steps, total_steps, min_lr_ratio: 0.0, num_cycles: 0.5 }
    }

    pub fn cosine(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Self { kind: ScheduleKind::Cosine, base_lr, warmup_steps, total_steps, min_lr_ratio: 0.0, num_cycles: 0.5 }
    }

    pub fn with_min_lr_ratio(mut self, ratio: f64) -> Self {
        self.min_lr_ratio = ratio;
        self
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::InvalidSchedule(msg));
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            return bad(format!("base_lr must be a finite number >= 0, got {}", self.base_lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!("min_lr_ratio must lie in [0, 1], got {}", self.min_lr_ratio));
        }
        if self.kind != ScheduleKind::Constant && self.total_steps == 0 {
            return bad(format!("{:?} decay needs total_steps > 0", self.kind));
        }
        if self.kind != ScheduleKind::Constant && self.warmup_steps > self.total_steps {
            return bad(format!(
                "warmup_steps ({}) exceeds total_steps ({}); shorten the warmup",
                self.warmup_steps, self.total_steps
            ));
        }
        if !(self.num_cycles.is_finite() && self.num_cycles > 0.0) {
            return bad(format!("num_cycles must be > 0, got {}", self.num_cycles));
        }
        Ok(())
    }

    /// The multiplier of `base_lr` after `step` completed optimizer steps (LambdaLR's lambda).
    pub fn factor(&self, step: u64) -> f64 {
        let step_f = step as f64;
        if step < self.warmup_steps {
            return step_f / (self.warmup_steps.max(1) as f64);
        }
        // Same expressions as transformers (Python floats are f64), so the values agree to the bit.
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let floor = self.min_lr_ratio;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                let remaining = (self.total_steps as f64 - step_f) / decay_steps;
                let factor = remaining.max(0.0);
                if floor == 0.0 { factor } else { factor * (1.0 - floor) + floor }
            }
            ScheduleKind::Cosine => {
                let progress = (step_f - self.warmup_steps as f64) / decay_steps;
                let factor = 0.5 * (1.0 + (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos());
                // transformers clamps at 0 without a floor, and applies the floor before clamping.
                if floor == 0.0 { factor.max(0.0) } else { (factor * (1.0 - floor) + floor).max(0.0) }
            }
        }
    }

    /// The learning rate of the optimizer step that follows `step` completed steps.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_from_zero() {
        let s = LrSchedule::cosine(1e-3, 4, 20);
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(2), 0.5e-3);
        assert_eq!(s.lr(4), 1e-3);
    }

    #[test]
    fn linear_decays_to_zero_and_stays() {
        let s = LrSchedule::linear(2.0, 0, 10);
        assert_eq!(s.lr(5), 1.0);
        assert_eq!(s.lr(10), 0.0);
        assert_eq!(s.lr(15), 0.0);
    }

    #[test]
    fn cosine_reaches_the_floor() {
        let s = LrSchedule::cosine(1.0, 2, 12).with_min_lr_ratio(0.1);
        assert!((s.lr(7) - 0.55).abs() < 1e-12, "midpoint {}", s.lr(7));
        assert!((s.lr(12) - 0.1).abs() < 1e-12);
        let linear = LrSchedule::linear(1.0, 0, 10).with_min_lr_ratio(0.2);
        assert!((linear.lr(10) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn constant_ignores_total_steps() {
        let s = LrSchedule::constant(3e-4, 0);
        s.validate().unwrap();
        assert_eq!(s.lr(1_000_000), 3e-4);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(LrSchedule::cosine(1e-3, 10, 5).validate().is_err());
        assert!(LrSchedule::linear(1e-3, 0, 0).validate().is_err());
        assert!(LrSchedule::cosine(1e-3, 0, 5).with_min_lr_ratio(1.5).validate().is_err());
        let parsed: std::result::Result<LrSchedule, _> =
            serde_json::from_str(r#"{"kind": "cosine", "base_lr": 1e-3, "warmup": 3}"#);
        assert!(parsed.is_err(), "unknown keys must be rejected");
    }
}
