//! `Config` mirrors the fields of a Hugging Face Qwen3 `config.json` that change the computation.
//! Options this implementation does not support are rejected, never silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ModelError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    /// Every other key of config.json, kept so export writes back what was read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config { reason, .. } => ModelError::Config { path: path.display().to_string(), reason },
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Config { path: "<config>".into(), reason };
        let mut value: Value = serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        // Older Qwen configs leave head_dim out: it is then hidden_size / num_attention_heads.
        if let Value::Object(map) = &mut value {
            if !map.contains_key("head_dim") {
                if let (Some(h), Some(n)) = (map.get("hidden_size").and_then(Value::as_u64), map.get("num_attention_heads").and_then(Value::as_u64)) {
                    if let Some(head_dim) = h.checked_div(n) {
                        map.insert("head_dim".into(), Value::from(head_dim));
                    }
                }
            }
            if !map.contains_key("num_key_value_heads") {
                if let Some(n) = map.get("num_attention_heads").cloned() {
                    map.insert("num_key_value_heads".into(), n);
                }
            }
        }
        let config: Config = serde_json::from_value(value).map_err(|e| invalid(format!("{e}")))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let extra = |key: &str| self.extra.get(key).filter(|v| !v.is_null());
        if let Some(model_type) = extra("model_type") {
            if model_type != "qwen3" {
                return Err(format!("model_type is {model_type}, only \"qwen3\" (dense Qwen3) is supported"));
            }
        }
        if let Some(act) = extra("hidden_act") {
            if act != "silu" {
                return Err(format!("hidden_act {act} is not supported (Qwen3 uses \"silu\")"));
            }
        }
        if extra("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err("use_sliding_window = true is not supported; set it to false (Qwen3 dense models do not use it)".into());
        }
        if extra("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err("attention_bias = true is not supported (Qwen3 has no attention biases)".into());
        }
        if let Some(scaling) = extra("rope_scaling") {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str);
            if kind != Some("default") {
                return Err(format!(
                    "rope_scaling {scaling} is not supported (only unscaled RoPE); remove rope_scaling or set it to null"
                ));
            }
        }
        if let Some(Value::Array(types)) = extra("layer_types") {
            if types.iter().any(|t| t != "full_attention") {
                return Err("layer_types other than \"full_attention\" (sliding-window layers) are not supported".into());
            }
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rope_theta > 0.0) || !(self.rms_norm_eps > 0.0) {
            return Err("rope_theta and rms_norm_eps must be positive".into());
        }
        Ok(())
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Config always serialises")
    }

    /// (name, shape) of every parameter, in HF naming and HF order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            shapes.extend([
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
                (format!("{p}.self_attn.q_norm.weight"), vec![self.head_dim]),
                (format!("{p}.self_attn.k_norm.weight"), vec![self.head_dim]),
                (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            ]);
        }
        shapes.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        shapes
    }

    /// The architecture of a Qwen3 release ("0.6b", "1.7b", "8b"): its config.json, without the
    /// weights (benchmarks with random weights, memory estimates).
    pub fn qwen3_release(size: &str) -> Option<Self> {
        let (hidden, intermediate, layers, heads, tied) = match size {
            "0.6b" => (1024, 3072, 28, 16, true),
            "1.7b" => (2048, 6144, 28, 16, true),
            "8b" => (4096, 12288, 36, 32, false),
            _ => return None,
        };
        let json = format!(
            r#"{{"model_type": "qwen3", "vocab_size": 151936, "hidden_size": {hidden}, "intermediate_size": {intermediate},
                "num_hidden_layers": {layers}, "num_attention_heads": {heads}, "num_key_value_heads": 8, "head_dim": 128,
                "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": {tied},
                "max_position_embeddings": 40960}}"#
        );
        Some(Self::from_json(&json).expect("the release configs are valid"))
    }

    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}
