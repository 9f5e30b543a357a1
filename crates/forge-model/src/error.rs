use std::path::{Path, PathBuf};

/// Everything that can go wrong loading, running or exporting a model. Each message names the
/// file or value at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("invalid model config {path}: {reason}")]
    Config { path: String, reason: String },

    #[error("{dir} is not a model directory: {reason}")]
    NotAModelDir { dir: PathBuf, reason: String },

    #[error("model `{id}` is not in the Hugging Face cache {cache} (this tool works offline: download it with `huggingface-cli download {id}` on a connected machine, or pass a local directory)")]
    NotInHubCache { id: String, cache: PathBuf },

    #[error("{path} is not a readable safetensors file ({reason}); re-download or re-export it")]
    Safetensors { path: PathBuf, reason: String },

    #[error("weights in {dir} lack tensor `{name}` required by config.json ({hint})")]
    MissingTensor { dir: PathBuf, name: String, hint: String },

    #[error("tensor `{name}` has shape {found:?} on disk but config.json implies {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("token id {id} is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },

    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
