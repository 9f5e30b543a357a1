//! All of GRPO, in the order a step runs it:
//! - [`groups`]: finished rollouts gather into groups; infrastructure failures and stale samples
//!   leave them; the rest get group-normalised advantages (or the group is skipped and counted);
//! - [`objective`]: advantages' formula, the clipped importance-ratio loss with a KL penalty,
//!   and the loss's normaliser ([`Aggregation::normaliser`], decided there and nowhere else);
//! - [`gradient`]: one micro-batch of trajectories → the objective's loss and gradients;
//! - [`update`]: a step's samples → reference log-probs, mini-batches (one AdamW update each),
//!   micro-batches, gradients summed across workers.

pub mod gradient;
pub mod groups;
pub mod objective;
pub(crate) mod update;

pub use gradient::{policy_gradient, trained_tokens, Sample, UpdateStats};
pub use groups::{select_samples, FinishedGroup, GroupBuffer, GroupCounts, Reward, Rollout, TrainSample};
pub use objective::{group_advantages, grpo_loss, kl_per_token, AdvantageNorm, Aggregation, KlEstimator, ObjectiveConfig, ObjectiveOutput, TokenInputs};
