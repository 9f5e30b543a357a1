//! The optimizer layer of SFT and RL training: AdamW with fp32 state and master weights (one
//! fused pass per tensor on CPU), gradient clipping and accumulation, learning-rate schedules,
//! and atomic checkpoint directories.
//!
//! A training step, in order:
//! ```text
//! let mut acc = GradAccumulator::new();
//! for micro in micro_batches { acc.add(model.loss_and_gradients(&micro, recompute)?.1)?; }
//! optimizer.set_lr(schedule.lr(optimizer.steps()));
//! let stats = optimizer.step(&acc.finish()?)?;   // clips, decays, updates the Vars in place
//! ```

mod accumulate;
pub mod checkpoint;
mod clip;
pub mod config;
pub mod distributed;
mod error;
mod fused;
pub mod memory;
pub mod optim;
pub mod plan;
pub mod run_lock;
pub mod run_log;
pub mod schedule;
pub mod session;
pub mod sft;
pub mod text;

pub use accumulate::GradAccumulator;
pub use checkpoint::Checkpoints;
pub use distributed::zero::{DistributedAdamW, ReducedGradients, Reduction, ShardedParams, StepGradients};
pub use distributed::{ProcessGroup, Topology, ZeroStage};
pub use clip::{clip_coefficient, clip_grad_norm, grad_norm};
pub use error::{MemoryShortfall, Result, TrainError};
pub use optim::{applies_weight_decay, AdamW, AdamWConfig, ParamGroups, StepStats};
pub use schedule::{LrSchedule, ScheduleKind};
