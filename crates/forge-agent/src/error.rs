//! Errors of the agent. A mistake of the *model* (bad tool call, failing command) is never an
//! error: it becomes an observation. These are failures of the infrastructure around it.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Loading or using the model directory's tokenizer or chat template failed.
    #[error("chat format: {0}")]
    Model(#[from] forge_model::ModelError),

    /// The chat template's output cannot be continued token by token (see `ChatFormat`).
    #[error("chat template: {0}")]
    Template(String),

    /// The Docker sandbox failed (engine, image, container).
    #[error(transparent)]
    Sandbox(#[from] forge_sandbox::SandboxError),

    /// The harness failed (dataset, grading run).
    #[error(transparent)]
    Swe(#[from] forge_swe::SweError),

    /// The policy (the engine) failed to generate.
    #[error("policy failed to generate: {0:#}")]
    Policy(anyhow::Error),

    /// Setting up the task's repository in the container failed.
    #[error("setting up /testbed for {instance_id} failed (exit {exit_code:?}): {output}")]
    Setup {
        instance_id: String,
        exit_code: Option<i64>,
        output: String,
    },

    /// Computing the repository diff failed.
    #[error("computing the patch failed (exit {exit_code:?}): {output}")]
    Diff {
        exit_code: Option<i64>,
        output: String,
    },

    /// A run-directory file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Options that cannot work together.
    #[error("{0}")]
    Invalid(String),
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.into(),
            source,
        }
    }
}
