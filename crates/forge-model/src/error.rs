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

    /// Finding or downloading an `org/name` model (boxed: these carry the most context).
    #[error(transparent)]
    Hub(Box<HubError>),

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

/// The `huggingface-cli download` command for a hub id as the errors show it (`org/name` or
/// `org/name@revision`).
fn download_command(id: &str) -> String {
    match id.split_once('@') {
        Some((repo, revision)) => format!("huggingface-cli download {repo} --revision {revision}"),
        None => format!("huggingface-cli download {id}"),
    }
}

/// Locating or downloading a model of the Hugging Face hub. `id` is `org/name`, or
/// `org/name@revision` when pinned to another than `main`.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model `{id}` is not in the Hugging Face cache {cache}, and HF_HUB_OFFLINE is set so it was not downloaded: unset HF_HUB_OFFLINE to download it, or fill that cache on a connected machine (`{}`), or pass a local directory", download_command(.id))]
    NotInHubCache { id: String, cache: PathBuf },

    #[error("the cached snapshot {snapshot} of model `{id}` lacks {missing}, and HF_HUB_OFFLINE is set so the cache was not repaired: unset HF_HUB_OFFLINE to download what is missing, or run `{}` on a connected machine", download_command(.id))]
    IncompleteInHubCache { id: String, snapshot: PathBuf, missing: String },

    #[error("model `{id}` is not in the Hugging Face cache {cache} ({lacking}), and the hub at {endpoint} cannot be reached to download it ({reason}): check the network, proxy and HF_ENDPOINT, or fill that cache on a connected machine (`{}`) and set HF_HUB_OFFLINE=1 to use it without the network", download_command(.id))]
    HubUnreachable { id: String, endpoint: String, cache: PathBuf, lacking: String, reason: String },

    #[error("the Hugging Face hub at {endpoint} refused `{file}` of model `{id}`: HTTP {status}{}; {hint}", .error_code.as_ref().map(|code| format!(" ({code})")).unwrap_or_default())]
    HubRefused { id: String, file: String, endpoint: String, status: u16, error_code: Option<String>, hint: String },

    #[error("downloading `{file}` of model `{id}` into the Hugging Face cache {cache} failed: {reason}")]
    HubDownload { id: String, file: String, cache: PathBuf, reason: String },
}

impl From<HubError> for ModelError {
    fn from(error: HubError) -> Self {
        ModelError::Hub(Box::new(error))
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
