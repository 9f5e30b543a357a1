//! Errors of the harness. Every variant names what failed and what to do about it.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = SweError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SweError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One record of a dataset or predictions file is malformed.
    #[error("{path}:{line}: {detail}")]
    BadRecord {
        path: PathBuf,
        /// 1-based line (JSONL) or record index (JSON list, parquet row).
        line: usize,
        detail: String,
    },
    /// The file as a whole is not in a supported format.
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    /// Predictions name instances the dataset lacks, or similar inconsistencies.
    #[error("{0}")]
    Invalid(String),
    /// `forge tasks label --coverage on` (the default) could not reach Docker.
    #[error("measuring which patched lines the FAIL_TO_PASS tests run (--coverage on, the default) needs the Docker Engine: {0}; start Docker, or pass --coverage off to label without it")]
    CoverageNeedsDocker(String),
    /// The rubric endpoint of `forge tasks label` failed or answered without a score.
    #[error("rubric endpoint {endpoint}: {detail}; check --rubric-endpoint and --rubric-model, or leave them out to label without the rubric")]
    Rubric { endpoint: String, detail: String },
    /// `forge tasks filter` was given a record without labels.
    #[error("{path}: instance {instance_id} has no labels; label the dataset first with `forge tasks label --dataset {path} --out LABELLED.jsonl` and filter LABELLED.jsonl")]
    Unlabelled { path: PathBuf, instance_id: String },
    /// The Docker sandbox failed (engine, image, container).
    #[error(transparent)]
    Sandbox(#[from] forge_sandbox::SandboxError),
}

impl SweError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SweError::Io {
            path: path.into(),
            source,
        }
    }
}
