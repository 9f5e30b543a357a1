//! Errors: [`ServeError`] when the server cannot start or stops abnormally; [`ApiError`] for a
//! request, answered in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use forge_engine::EngineError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] forge_model::ModelError),

    #[error(transparent)]
    Engine(#[from] EngineError),

    #[error("{path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },

    #[error("invalid option: {0}")]
    Option(String),

    #[error("could not listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },

    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A request's failure as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error` for the client's mistakes, `server_error` else.
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: a field the server cannot accept (`param` names it).
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param: param.into(), code: None }
    }

    /// 400 for a request asking for what the server does not do (`param` names it).
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self { code: Some("unsupported_parameter"), ..Self::invalid(param.to_string(), message) }
    }

    pub fn model_not_found(asked: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{asked}` does not exist: this server serves `{served}`."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    pub fn context_length_exceeded(max: usize, prompt: usize, what: &str) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(
                (what == "messages").then(|| "messages".to_string()).or(Some("prompt".into())),
                format!("This model's maximum context length is {max} tokens. However, your {what} resulted in {prompt} tokens, which leaves no room for a completion. Please reduce the length of the {what}."),
            )
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("no route {path}: this server has GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, GET /metrics"),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
        }
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), kind: "server_error", param: None, code: None }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// The engine's refusals of a request are the client's mistakes; its failures are the server's.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::EmptyPrompt => Self::invalid("prompt".to_string(), "the prompt is empty: give at least one token"),
            EngineError::TokenOutOfVocab { .. } => Self::invalid("prompt".to_string(), e.to_string()),
            EngineError::PromptTooLong { len, max } => Self::context_length_exceeded(max, len, "prompt"),
            EngineError::InvalidParams(reason) => Self::invalid(None, reason),
            // the pool is the server's (--kv-cache-memory); the client can ask for fewer tokens
            EngineError::ExceedsKvCache { .. } => Self::invalid("max_tokens".to_string(), e.to_string()),
            EngineError::Stopped => Self { status: StatusCode::SERVICE_UNAVAILABLE, ..Self::server("the engine has stopped: the server is shutting down") },
            EngineError::Model(reason) => Self::server(format!("the model failed during generation: {reason}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
