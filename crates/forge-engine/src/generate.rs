//! `forge generate`: one continuation of a raw text or of a chat conversation, for manual checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;
use forge_model::ModelError;
use serde::Serialize;
use serde_json::Value as Json;

use crate::{EngineConfig, EngineError, EngineHandle, FinishReason, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),

    #[error(transparent)]
    Engine(#[from] EngineError),

    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
}

/// What to continue.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Raw text, continued as is (no chat template).
    Text(String),
    /// A JSON conversation — a list of messages, or `{"messages": [...], "tools": [...]}` — rendered
    /// with the model's chat template and the generation prompt.
    Messages(PathBuf),
}

#[derive(Debug, Serialize)]
pub struct GenerateOutput {
    pub text: String,
    /// New token ids.
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// `"stop"` or `"length"`.
    pub finish_reason: &'static str,
}

/// Loads the model in `dir`, renders and tokenizes `prompt`, and generates until one of the model's
/// end tokens (see [`stop_tokens`]) or `params.max_new_tokens`. `params.stop_tokens` is replaced.
pub fn generate(dir: &Path, dtype: DType, device: &Device, prompt: &Prompt, mut params: SamplingParams) -> Result<GenerateOutput, GenerateError> {
    let tokenizer = Tokenizer::from_model_dir(dir)?;
    let text = match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Messages(path) => render_conversation(dir, path)?,
    };
    let ids = tokenizer.encode(&text)?;
    params.stop_tokens = stop_tokens(dir, &tokenizer)?;
    let model = Arc::new(forge_model::load_model(dir, dtype, device)?);
    let engine = EngineHandle::start(model, EngineConfig { max_batch_size: 1, ..Default::default() })?;
    let generation = engine.generate_blocking(ids, params)?;
    Ok(GenerateOutput {
        text: tokenizer.decode(&generation.tokens)?,
        finish_reason: match generation.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        },
        tokens: generation.tokens,
        logprobs: generation.logprobs,
    })
}

fn render_conversation(dir: &Path, path: &Path) -> Result<String, GenerateError> {
    let input = |reason: String| GenerateError::Input { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| input(e.to_string()))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| input(format!("not valid JSON: {e}")))?;
    let (messages, tools) = match &json {
        Json::Array(messages) => (messages.clone(), None),
        Json::Object(object) => match object.get("messages") {
            Some(Json::Array(messages)) => (messages.clone(), object.get("tools").and_then(Json::as_array).cloned()),
            _ => return Err(input("expected a list of messages or {\"messages\": [...], \"tools\": [...]}".into())),
        },
        _ => return Err(input("expected a list of messages or {\"messages\": [...], \"tools\": [...]}".into())),
    };
    Ok(ChatTemplate::from_model_dir(dir)?.render(&messages, tools.as_deref(), true, &Json::Null)?)
}

/// The tokens that end a turn: `eos_token_id` of generation_config.json (a number or a list; else
/// of config.json) and `<|im_end|>`.
pub fn stop_tokens(dir: &Path, tokenizer: &Tokenizer) -> Result<Vec<u32>, GenerateError> {
    let mut stops = Vec::new();
    for file in ["generation_config.json", "config.json"] {
        let path = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let json: Json = serde_json::from_str(&text).map_err(|e| GenerateError::Input { path: path.clone(), reason: format!("not valid JSON: {e}") })?;
        let ids = match &json["eos_token_id"] {
            Json::Number(n) => vec![n.clone()],
            Json::Array(list) => list.iter().filter_map(|v| v.as_number().cloned()).collect(),
            _ => continue,
        };
        stops.extend(ids.iter().filter_map(|n| n.as_u64()).map(|id| id as u32));
        break;
    }
    stops.extend(tokenizer.token_to_id("<|im_end|>"));
    stops.sort_unstable();
    stops.dedup();
    Ok(stops)
}
