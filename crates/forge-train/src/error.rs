use std::path::{Path, PathBuf};

/// Everything that can go wrong in the optimizer, schedules and checkpoints. Each message names
/// the value or file at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid optimizer setting: {0}")]
    InvalidConfig(String),

    #[error("invalid learning-rate schedule: {0}")]
    InvalidSchedule(String),

    #[error("gradient for `{name}` has shape {found:?} but the parameter has shape {expected:?}; gradients must come from the model this optimizer was built for")]
    GradientShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("gradient for `{name}` is on a different device than the parameter; move it with `to_device` first")]
    GradientDevice { name: String },

    #[error("gradient for `{0}` is not a parameter of this optimizer; build the optimizer from the same ParamStore as the model")]
    UnknownGradient(String),

    #[error("the gradients contain NaN or infinity (first in `{name}`, total norm {norm}); the step was skipped and nothing was changed — lower the learning rate, enable clipping, or check the data of this batch")]
    NonFiniteGradients { name: String, norm: f32 },

    #[error("no gradients were accumulated; call `add` for at least one micro-batch before `finish`")]
    EmptyAccumulation,

    #[error("optimizer state {path} does not match this model: {reason}; resume with the same model and optimizer settings, or start a fresh optimizer")]
    StateMismatch { path: PathBuf, reason: String },

    #[error("{path} is not a readable optimizer state ({reason}); the checkpoint is damaged: resume from an earlier one")]
    BadState { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("writing checkpoint step {step} into {dir} failed ({reason}); no partial step directory was left behind")]
    CheckpointWrite { step: u64, dir: PathBuf, reason: String },

    #[error("data-parallel run: {0}")]
    Distributed(String),

    #[error("invalid config: {0}")]
    Config(String),

    #[error("bad training data: {0}")]
    Data(String),

    #[error("{0}")]
    WouldNotFit(Box<MemoryShortfall>),

    #[error(transparent)]
    Model(#[from] forge_model::ModelError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What [`TrainError::WouldNotFit`] reports (boxed: it would double every `Result`'s size).
#[derive(Debug, thiserror::Error)]
#[error("this run does not fit: {reason}; to fit: {change}, or set train.check_memory = false to start anyway\n{plan}")]
pub struct MemoryShortfall {
    pub reason: String,
    pub change: String,
    /// The memory plan's table.
    pub plan: String,
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
