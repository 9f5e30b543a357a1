//! Shared by the agent's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use forge_agent::ChatFormat;

/// The bundled tiny tokenizer with its ChatML/Hermes chat template.
pub fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/tiny-tokenizer")
}

pub fn tiny_chat() -> Arc<ChatFormat> {
    Arc::new(ChatFormat::from_model_dir(&tiny_dir(), serde_json::Value::Null).expect("tiny tokenizer loads"))
}
