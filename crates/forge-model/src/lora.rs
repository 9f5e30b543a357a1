//! LoRA adapters (`W x + (alpha/r)·B A x`, PEFT naming and file layout): the base weights stay
//! frozen, only `A` and `B` train; export merges them into the base (`W + (alpha/r)·B A`).

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Config, ModelError, ParamStore, Result};

/// Projections that can carry an adapter (HF module names).
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT prefixes adapter tensor names with the wrapped model's path.
const PEFT_PREFIX: &str = "base_model.model.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    pub target_modules: Vec<String>,
    /// Seed of the `A` initialisation.
    #[serde(default)]
    pub seed: u64,
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(format!("lora: {m}")));
        if self.rank == 0 {
            return bad("rank must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must lie in [0, 1), got {}", self.dropout));
        }
        if self.target_modules.is_empty() {
            return bad(format!("target_modules is empty; choose from {LORA_TARGETS:?}"));
        }
        if let Some(t) = self.target_modules.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
            return bad(format!("unknown target module \"{t}\"; choose from {LORA_TARGETS:?}"));
        }
        Ok(())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == module)
    }
}

/// `(module path, out, in)` of every adapted projection, e.g. `model.layers.0.self_attn.q_proj`.
pub fn adapted_modules(config: &Config, lora: &LoraConfig) -> Vec<(String, usize, usize)> {
    config
        .parameter_shapes()
        .into_iter()
        .filter_map(|(name, shape)| {
            let module = name.strip_suffix(".weight")?;
            let leaf = module.rsplit('.').next()?;
            (module.starts_with("model.layers.") && lora.targets(leaf)).then(|| (module.to_string(), shape[0], shape[1]))
        })
        .collect()
}

/// Fresh adapters as PEFT initialises them: `A ~ U(−1/√in, 1/√in)` (kaiming-uniform, a = √5),
/// `B = 0`, so the adapted model starts equal to the base.
pub fn init_adapters(config: &Config, lora: &LoraConfig, dtype: DType, device: &Device) -> Result<ParamStore> {
    lora.validate()?;
    let mut rng = StdRng::seed_from_u64(lora.seed);
    let mut entries = Vec::new();
    for (module, out, inp) in adapted_modules(config, lora) {
        let bound = 1.0 / (inp as f32).sqrt();
        let a: Vec<f32> = (0..lora.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_vec(a, (lora.rank, inp), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out, lora.rank), dtype, device)?;
        entries.push((format!("{module}.lora_A.weight"), Var::from_tensor(&a)?));
        entries.push((format!("{module}.lora_B.weight"), Var::from_tensor(&b)?));
    }
    Ok(ParamStore::from_entries(entries))
}

/// Base weights with the adapters folded in: `W + scale·B·A`, computed in f32.
pub fn merge(base: &ParamStore, adapters: &ParamStore, lora: &LoraConfig) -> Result<ParamStore> {
    let mut entries = Vec::new();
    for (name, var) in base.iter() {
        let module = name.strip_suffix(".weight").unwrap_or(name);
        let merged = match (adapters.get(&format!("{module}.lora_A.weight")), adapters.get(&format!("{module}.lora_B.weight"))) {
            (Ok(a), Ok(b)) => {
                let w = var.as_tensor();
                let delta = b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)?;
                (w.to_dtype(DType::F32)? + (delta * lora.scale())?)?.to_dtype(w.dtype())?
            }
            _ => var.as_tensor().clone(),
        };
        entries.push((name.to_string(), Var::from_tensor(&merged)?));
    }
    Ok(ParamStore::from_entries(entries))
}

/// Writes `adapter_model.safetensors` + `adapter_config.json` in PEFT's layout.
pub fn save_adapters(dir: &Path, adapters: &ParamStore, lora: &LoraConfig, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors: Vec<(String, Tensor)> =
        adapters.iter().map(|(n, v)| (format!("{PEFT_PREFIX}{n}"), v.as_tensor().clone())).collect();
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let path = dir.join(ADAPTER_FILE);
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), metadata, &path)
        .map_err(|e| ModelError::Safetensors { path: path.clone(), reason: e.to_string() })?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "forge_seed": lora.seed,
    });
    let path = dir.join(ADAPTER_CONFIG_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("JSON") + "\n").map_err(|e| ModelError::io(&path, e))
}

/// Reads a PEFT adapter directory: its config, the base model it names, and the adapters.
pub fn load_adapters(dir: &Path, config: &Config, dtype: DType, device: &Device) -> Result<(LoraConfig, String, ParamStore)> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    let field = |key: &str| value.get(key).ok_or_else(|| ModelError::Invalid(format!("{}: missing \"{key}\"", path.display())));
    let lora = LoraConfig {
        rank: field("r")?.as_u64().unwrap_or(0) as usize,
        alpha: field("lora_alpha")?.as_f64().unwrap_or(0.0),
        dropout: value.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0),
        target_modules: serde_json::from_value(field("target_modules")?.clone())
            .map_err(|e| ModelError::Invalid(format!("{}: target_modules: {e}", path.display())))?,
        seed: value.get("forge_seed").and_then(|v| v.as_u64()).unwrap_or(0),
    };
    lora.validate()?;
    let base = value.get("base_model_name_or_path").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let file = dir.join(ADAPTER_FILE);
    // SAFETY: read-only mapping; tensors are copied out.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&file) }
        .map_err(|e| ModelError::Safetensors { path: file.clone(), reason: e.to_string() })?;
    let mut entries = Vec::new();
    for (module, out, inp) in adapted_modules(config, &lora) {
        for (suffix, shape) in [("lora_A.weight", [lora.rank, inp]), ("lora_B.weight", [out, lora.rank])] {
            let name = format!("{module}.{suffix}");
            let tensor = st.load(&format!("{PEFT_PREFIX}{name}"), device).map_err(|_| ModelError::MissingTensor {
                dir: dir.to_path_buf(),
                name: name.clone(),
                hint: "the adapter does not match this base model or its target_modules".into(),
            })?;
            if tensor.dims() != shape {
                return Err(ModelError::ShapeMismatch { name, expected: shape.to_vec(), found: tensor.dims().to_vec() });
            }
            entries.push((name, Var::from_tensor(&tensor.to_dtype(dtype)?)?));
        }
    }
    Ok((lora, base, ParamStore::from_entries(entries)))
}
