//! GRPO reinforcement learning: the objective (this module's `objective`), and the recipe that
//! drives rollouts in Docker sandboxes through the agent and trains on finished groups.

pub mod objective;
pub mod step;

pub use objective::{group_advantages, grpo_loss, kl_per_token, AdvantageNorm, Aggregation, KlEstimator, ObjectiveConfig, ObjectiveOutput, TokenInputs};
pub use step::{policy_gradient, Sample, UpdateStats};
