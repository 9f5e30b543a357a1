//! What the server serves: the model directory's tokenizer, chat template, end-of-turn tokens and
//! default sampling settings, loaded once and shared by every request.

use std::path::Path;

use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;
use serde_json::Value as Json;

use crate::ServeError;

/// Sampling settings for a request that does not give them: generation_config.json's
/// `temperature`, `top_p` and `top_k` when present (as vLLM's `--generation-config auto`),
/// else OpenAI's defaults (temperature 1, no top-p/top-k cut).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
}

impl Default for SamplingDefaults {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0 }
    }
}

impl SamplingDefaults {
    pub fn from_model_dir(dir: &Path) -> Result<Self, ServeError> {
        let path = dir.join("generation_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Self::default()) };
        let json: Json = serde_json::from_str(&text).map_err(|e| ServeError::ModelFile { path: path.clone(), reason: format!("not valid JSON: {e}") })?;
        let mut defaults = Self::default();
        if let Some(t) = json["temperature"].as_f64() {
            defaults.temperature = t as f32;
        }
        if let Some(p) = json["top_p"].as_f64() {
            defaults.top_p = p as f32;
        }
        if let Some(k) = json["top_k"].as_u64() {
            defaults.top_k = k as usize;
        }
        Ok(defaults)
    }
}

pub struct ServedModel {
    /// The name requests must give as `model`.
    pub name: String,
    pub tokenizer: Tokenizer,
    /// The chat template, or why there is none (then only /v1/completions works).
    pub template: Result<ChatTemplate, String>,
    /// Tokens that end a turn (generation_config.json's eos ids and `<|im_end|>`).
    pub end_tokens: Vec<u32>,
    pub defaults: SamplingDefaults,
    /// Positions a sequence may fill, prompt and completion.
    pub max_model_len: usize,
    /// Sequences generated at once at most (a request with `n` choices counts `n`).
    pub max_concurrency: usize,
}

impl ServedModel {
    /// The chat template, or the 400 a chat request gets without one.
    pub fn template(&self) -> Result<&ChatTemplate, crate::ApiError> {
        self.template.as_ref().map_err(|reason| crate::ApiError::invalid(None, format!("this model has no usable chat template ({reason}); use /v1/completions with a rendered prompt")))
    }
}
