//! Qwen3 for training and inference on candle: HF config, trainable forward, weight load and
//! export in the Hugging Face layout, tokenizer, scoring.

pub mod chat_template;
mod config;
pub mod device;
mod error;
pub mod export;
mod kv_cache;
pub mod lora;
pub mod memory;
mod paged_kv;
mod params;
pub mod qwen3;
pub mod score;
pub mod sharded;
pub mod tokenizer;
pub mod weights;

pub use config::{Config, Yarn};
pub use forge_kernels;
pub use error::{HubError, ModelError, Result};
pub use lora::LoraConfig;
pub use params::{Gradients, ParamStore};
pub use kv_cache::KvCache;
pub use paged_kv::{KvBlockPool, PagedStep};
pub use qwen3::decode::SequenceStep;
pub use qwen3::{Batch, Qwen3ForCausalLM, Weights};
pub use sharded::{GatherUnit, ParamGather};

use std::path::Path;

use candle_core::{DType, Device};

/// Reads an HF model directory's config.json and safetensors weights in `dtype` on `device`.
pub fn load_weights(dir: &Path, dtype: DType, device: &Device) -> Result<(Config, ParamStore)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::NotAModelDir { dir: dir.into(), reason: "config.json is missing".into() });
    }
    let config = Config::from_file(&config_path)?;
    let params = weights::load_params(dir, &config, dtype, device)?;
    Ok((config, params))
}

/// Loads an HF model directory (config.json + safetensors) in `dtype` on `device`.
pub fn load_model(dir: &Path, dtype: DType, device: &Device) -> Result<Qwen3ForCausalLM> {
    let (config, params) = load_weights(dir, dtype, device)?;
    Qwen3ForCausalLM::new(config, params)
}
