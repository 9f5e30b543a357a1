//! `forge train rl`: GRPO with a KL penalty to a frozen reference, on multi-turn agent
//! trajectories rolled out in Docker and rewarded by the instance's tests.
//!
//! ```text
//!  (instance, sample) jobs ──► rollout workers ──► episode in the task container ──► patch
//!        ▲                      (engine batches                                       │
//!        │                       all generations)              grade in a fresh container
//!        │                                                                             ▼
//!  trainer: finished groups ◄── reward 1 iff tests pass (infra failures excluded) ◄────┘
//!        └─► advantages ─► GRPO loss + gradients ─► AdamW (engine paused) ─► weights in place
//! ```

pub mod config;
pub mod grpo;
pub mod recipe;
mod report;
pub mod rollout;

pub use config::{RlConfig, RolloutMode};
pub use grpo::{select_samples, FinishedGroup, GroupBuffer, GroupCounts, Reward, Rollout};
pub use recipe::{run, RlOptions, RlSummary};
pub use rollout::{roll_out, RolloutEnv, RolloutJob, RolloutWorkers};

use std::path::{Path, PathBuf};

/// Everything that can stop an RL run; each message names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Train(#[from] forge_train::TrainError),
    #[error(transparent)]
    Model(#[from] forge_model::ModelError),
    #[error(transparent)]
    Agent(#[from] forge_agent::AgentError),
    #[error(transparent)]
    Swe(#[from] forge_swe::SweError),
    #[error(transparent)]
    Sandbox(#[from] forge_sandbox::SandboxError),
    #[error(transparent)]
    Engine(#[from] forge_engine::EngineError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl RlError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RlError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = RlError> = std::result::Result<T, E>;
