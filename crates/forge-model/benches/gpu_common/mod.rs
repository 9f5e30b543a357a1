//! What the GPU benches share: a Qwen3 release architecture with random bf16 weights on the GPU.

use candle_core::{DType, Device, Tensor, Var};
use forge_model::{Config, ParamStore, Qwen3ForCausalLM};

/// `--model 0.6b|1.7b|8b`: the architecture of that Qwen3 release (its config.json, no weights).
pub fn qwen3_config(model: &str) -> Result<Config, Box<dyn std::error::Error>> {
    Config::qwen3_release(model).ok_or_else(|| format!("--model {model}: expected 0.6b, 1.7b or 8b").into())
}

/// The model with N(0, 0.02²) bf16 weights drawn on the GPU (an 8B host-side init would take
/// minutes) and norms at 1.
pub fn random_bf16_model(config: &Config, device: &Device) -> Result<Qwen3ForCausalLM, Box<dyn std::error::Error>> {
    let mut entries = Vec::new();
    for (name, shape) in config.parameter_shapes() {
        let t = if shape.len() == 1 { Tensor::ones(shape, DType::BF16, device)? } else { Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(DType::BF16)? };
        entries.push((name, Var::from_tensor(&t)?));
    }
    Ok(Qwen3ForCausalLM::new(config.clone(), ParamStore::from_entries(entries))?)
}
