//! `Config` mirrors the fields of a Hugging Face Qwen3 `config.json` that change the computation.
//! Options this implementation does not support are rejected, never silently ignored.
//!
//! Two layouts of the rotary-embedding keys exist in the wild and both are read:
//! - transformers ≤ 4.x (and the hub's Qwen/Qwen3-* repos): top-level `rope_theta`, `rope_scaling`
//!   (null or `{"rope_type": "yarn", "factor": …}`), `torch_dtype`;
//! - transformers ≥ 5: `rope_parameters` = `{"rope_theta": …, "rope_type": "default" | "yarn", …}`,
//!   `dtype`.
//!
//! A `Config` always serialises in the first layout: transformers 4.x reads only that one, and 5.x
//! converts it on load (`rope_scaling` becomes `rope_parameters`, the top-level `rope_theta` fills
//! its `rope_theta`), so an exported directory loads identically in both.

use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};
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
    /// `rope_scaling` / `rope_parameters` with `rope_type = "yarn"`; `None` for unscaled RoPE.
    #[serde(rename = "rope_scaling", serialize_with = "serialize_yarn", skip_deserializing)]
    pub yarn: Option<Yarn>,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    /// Every other key of config.json, kept so export writes back what was read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// YaRN rotary scaling (Peng et al. 2023) as transformers computes it (`_compute_yarn_parameters`):
/// frequencies interpolated by `factor` below a ramp between the `beta_slow`/`beta_fast` rotation
/// counts over `original_max_position_embeddings`, extrapolated above it, and cos/sin scaled by the
/// attention factor.
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Explicit post-processing scale of cos/sin; derived from `factor` (and the mscales) if absent.
    pub attention_factor: Option<f64>,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    /// Round the correction range outwards to whole dimensions (transformers' default: true).
    pub truncate: bool,
}

/// Keys of a YaRN parameter dict this implementation understands.
const YARN_KEYS: &[&str] = &[
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "truncate",
];

impl Yarn {
    /// `get_mscale(factor)` of the paper (Eq. 21), or the ratio of the two mscales.
    pub fn attention_scaling(&self) -> f64 {
        fn mscale(scale: f64, m: f64) -> f64 {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * m * scale.ln() + 1.0
            }
        }
        match (self.attention_factor, self.mscale, self.mscale_all_dim) {
            (Some(explicit), _, _) => explicit,
            // Python truthiness: an mscale of 0 counts as absent
            (None, Some(m), Some(m_all)) if m != 0.0 && m_all != 0.0 => mscale(self.factor, m) / mscale(self.factor, m_all),
            _ => mscale(self.factor, 1.0),
        }
    }

    /// The inverse frequencies of `head_dim / 2` rotary pairs, computed in f32 as transformers does.
    pub fn inv_freq(&self, rope_theta: f64, head_dim: usize) -> Vec<f32> {
        let dim = head_dim as f64;
        let correction_dim = |rotations: f64| (dim * (self.original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * rope_theta.ln());
        let (mut low, mut high) = (correction_dim(self.beta_fast), correction_dim(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
        if low == high {
            high += 0.001; // transformers: prevents a singular ramp
        }
        let factor = self.factor as f32;
        rope_pos_freqs(rope_theta, head_dim)
            .into_iter()
            .enumerate()
            .map(|(i, pos_freq)| {
                let (extrapolation, interpolation) = (1.0 / pos_freq, 1.0 / (factor * pos_freq));
                let ramp = ((i as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                let extrapolation_weight = 1.0 - ramp;
                interpolation * (1.0 - extrapolation_weight) + extrapolation * extrapolation_weight
            })
            .collect()
    }

    /// Reads a `rope_scaling` / `rope_parameters` dict of type yarn.
    fn from_json(params: &Map<String, Value>, max_position_embeddings: Option<usize>) -> Result<Self, String> {
        if let Some(key) = params.keys().find(|k| !YARN_KEYS.contains(&k.as_str())) {
            return Err(format!("YaRN parameter `{key}` is not supported (supported: {})", YARN_KEYS.join(", ")));
        }
        let number = |key: &str| -> Result<Option<f64>, String> {
            match params.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("YaRN parameter `{key}` must be a number, found {v}")),
            }
        };
        let original = match params.get("original_max_position_embeddings").filter(|v| !v.is_null()) {
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| format!("original_max_position_embeddings must be a positive integer, found {v}"))?,
            None => max_position_embeddings.ok_or("YaRN needs original_max_position_embeddings (or max_position_embeddings)")?,
        };
        if original == 0 {
            return Err("original_max_position_embeddings must be positive".into());
        }
        // transformers 5: a missing factor is the ratio of the context lengths
        let factor = match number("factor")? {
            Some(f) => f,
            None => max_position_embeddings.ok_or("YaRN needs a factor")? as f64 / original as f64,
        };
        if !(factor > 0.0) {
            return Err(format!("YaRN factor must be positive, found {factor}"));
        }
        let or_default = |key: &str, default: f64| -> Result<f64, String> {
            // transformers: `get(key) or default`, so 0 also means the default
            Ok(number(key)?.filter(|v| *v != 0.0).unwrap_or(default))
        };
        let truncate = match params.get("truncate") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("YaRN parameter `truncate` must be true or false, found {v}")),
        };
        Ok(Yarn {
            factor,
            original_max_position_embeddings: original,
            beta_fast: or_default("beta_fast", 32.0)?,
            beta_slow: or_default("beta_slow", 1.0)?,
            attention_factor: number("attention_factor")?,
            mscale: number("mscale")?,
            mscale_all_dim: number("mscale_all_dim")?,
            truncate,
        })
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("rope_type".into(), "yarn".into());
        map.insert("factor".into(), self.factor.into());
        map.insert("original_max_position_embeddings".into(), self.original_max_position_embeddings.into());
        map.insert("beta_fast".into(), self.beta_fast.into());
        map.insert("beta_slow".into(), self.beta_slow.into());
        for (key, value) in [("attention_factor", self.attention_factor), ("mscale", self.mscale), ("mscale_all_dim", self.mscale_all_dim)] {
            if let Some(v) = value {
                map.insert(key.into(), v.into());
            }
        }
        if !self.truncate {
            map.insert("truncate".into(), false.into());
        }
        Value::Object(map)
    }
}

fn serialize_yarn<S: Serializer>(yarn: &Option<Yarn>, serializer: S) -> Result<S::Ok, S::Error> {
    yarn.as_ref().map(Yarn::to_json).unwrap_or(Value::Null).serialize(serializer)
}

/// `theta^(2i / head_dim)` for the `head_dim / 2` rotary pairs, in f32 as transformers computes it.
fn rope_pos_freqs(rope_theta: f64, head_dim: usize) -> Vec<f32> {
    let theta = rope_theta as f32;
    (0..head_dim / 2).map(|i| theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// Unscaled RoPE: `1 / theta^(2i / head_dim)`.
pub fn default_inv_freq(rope_theta: f64, head_dim: usize) -> Vec<f32> {
    rope_pos_freqs(rope_theta, head_dim).into_iter().map(|f| 1.0 / f).collect()
}

/// Keys of Mixture-of-Experts Qwen configs (Qwen3-MoE, Qwen3-Next): a dense Qwen3 never has them.
const MOE_KEYS: &[&str] = &["num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "num_local_experts"];

/// Moves the rotary keys of either layout into the fields `Config` deserialises: top-level
/// `rope_theta`, and the returned YaRN parameters. `rope_parameters` and `rope_scaling` leave the map.
fn take_rope(map: &mut Map<String, Value>) -> Result<Option<Yarn>, String> {
    let max_positions = map.get("max_position_embeddings").and_then(Value::as_u64).map(|n| n as usize);
    let rope_scaling = map.remove("rope_scaling").filter(|v| !v.is_null());
    let rope_parameters = map.remove("rope_parameters").filter(|v| !v.is_null());
    // transformers 5: `rope_scaling or rope_parameters`, then the top-level rope_theta as a default
    let (source, params) = match (rope_scaling, rope_parameters) {
        (Some(scaling), _) => ("rope_scaling", scaling),
        (None, Some(params)) => ("rope_parameters", params),
        (None, None) => ("rope_parameters", Value::Object(Map::new())),
    };
    let Value::Object(params) = params else {
        return Err(format!("{source} must be an object, found {params}"));
    };
    if let Some(Value::Object(_)) = params.values().next() {
        return Err(format!("{source} is nested by layer type ({}); only one RoPE for every layer (all full_attention) is supported", params.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    if let Some(theta) = params.get("rope_theta").filter(|v| !v.is_null()) {
        map.insert("rope_theta".into(), theta.clone());
    }
    if !map.get("rope_theta").is_some_and(Value::is_number) {
        return Err("missing field `rope_theta`: expected a top-level rope_theta (transformers ≤ 4) or rope_parameters.rope_theta (transformers ≥ 5)".into());
    }
    if let Some(partial) = map.get("partial_rotary_factor").or_else(|| params.get("partial_rotary_factor")).and_then(Value::as_f64) {
        if partial != 1.0 {
            return Err(format!("partial_rotary_factor {partial} is not supported (Qwen3 rotates the whole head: 1.0)"));
        }
    }
    let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str).unwrap_or("default");
    match kind {
        "default" => {
            if let Some(key) = params.keys().find(|k| !["rope_type", "type", "rope_theta", "partial_rotary_factor"].contains(&k.as_str())) {
                return Err(format!("{source}.{key} has no meaning for rope_type \"default\"; remove it"));
            }
            Ok(None)
        }
        "yarn" => Yarn::from_json(&params, max_positions).map(Some).map_err(|e| format!("{source}: {e}")),
        other => Err(format!(
            "{source}.rope_type \"{other}\" is not supported; supported: \"default\" (unscaled) and \"yarn\" (Qwen3's long context: factor 4 over original_max_position_embeddings 32768)"
        )),
    }
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
        let Value::Object(map) = &mut value else {
            return Err(invalid("config.json must be a JSON object".into()));
        };
        let yarn = take_rope(map).map_err(invalid)?;
        // transformers ≥ 4.56 names the stored dtype `dtype`, older versions `torch_dtype`
        if let (Some(dtype), false) = (map.get("dtype").cloned(), map.contains_key("torch_dtype")) {
            map.insert("torch_dtype".into(), dtype);
        }
        // Older Qwen configs leave head_dim out: it is then hidden_size / num_attention_heads.
        {
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
        let mut config: Config = serde_json::from_value(value).map_err(|e| invalid(format!("{e}")))?;
        config.yarn = yarn;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let extra = |key: &str| self.extra.get(key).filter(|v| !v.is_null());
        if let Some(model_type) = extra("model_type") {
            if model_type != "qwen3" {
                return Err(format!("model_type is {model_type}: only \"qwen3\" (dense Qwen3) is supported, not Mixture-of-Experts (qwen3_moe) or other architectures"));
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
        if let Some(Value::Array(types)) = extra("layer_types") {
            if let Some(other) = types.iter().find(|t| *t != "full_attention") {
                return Err(format!(
                    "layer_types contains {other}: only \"full_attention\" layers are supported (sliding-window and linear-attention layers are not); use a dense Qwen3 config"
                ));
            }
            if types.len() != self.num_hidden_layers {
                return Err(format!("layer_types has {} entries for {} layers", types.len(), self.num_hidden_layers));
            }
        }
        if let Some(key) = MOE_KEYS.iter().find(|k| extra(k).is_some_and(|v| v.as_u64() != Some(0))) {
            return Err(format!("`{key}` marks a Mixture-of-Experts model, which is not supported: only dense Qwen3 models (model_type \"qwen3\", e.g. Qwen3-0.6B … Qwen3-32B) are"));
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

    /// The inverse frequencies of the rotary pairs (`head_dim / 2`).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        match &self.yarn {
            Some(yarn) => yarn.inv_freq(self.rope_theta, self.head_dim),
            None => default_inv_freq(self.rope_theta, self.head_dim),
        }
    }

    /// The factor cos and sin are multiplied by (YaRN's attention scaling; 1 without scaling).
    pub fn rope_attention_scaling(&self) -> f64 {
        self.yarn.as_ref().map_or(1.0, Yarn::attention_scaling)
    }

    /// The longest sequence the model is meant for: `max_position_embeddings`, or YaRN's
    /// `factor × original_max_position_embeddings` when larger (as vLLM derives `max_model_len`;
    /// Qwen3-8B with factor 4 over 32,768: 131,072).
    pub fn max_context(&self) -> usize {
        let scaled = self.yarn.as_ref().map_or(0, |y| (y.factor * y.original_max_position_embeddings as f64) as usize);
        self.max_position_embeddings.max(scaled)
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

    /// The architecture of the Qwen3 release a hub repo holds (`Qwen/Qwen3-8B`, `Qwen/Qwen3-8B-Base`,
    /// any case), for planning without its files; `None` for other repos.
    pub fn qwen3_hub_release(repo: &str) -> Option<Self> {
        let name = repo.to_ascii_lowercase();
        let size = name.strip_prefix("qwen/qwen3-")?;
        Self::qwen3_release(size.strip_suffix("-base").unwrap_or(size))
    }

    /// This architecture with `rope_scaling` (a config.json `rope_scaling` dict, e.g. YaRN's
    /// `{"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32768}`) in
    /// place of its own, checked as config.json's is.
    pub fn with_rope_scaling(&self, rope_scaling: &Map<String, Value>) -> Result<Self, ModelError> {
        let mut json = serde_json::to_value(self).expect("a Config always serialises");
        json["rope_scaling"] = Value::Object(rope_scaling.clone());
        Self::from_json(&json.to_string())
    }

    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 256"#;

    fn parse(rope: &str) -> Result<Config, String> {
        Config::from_json(&format!("{{{BASE}, {rope}}}")).map_err(|e| e.to_string())
    }

    #[test]
    fn both_rope_layouts_give_the_same_config() {
        let v4 = parse(r#""rope_theta": 1000000.0, "rope_scaling": null, "torch_dtype": "bfloat16""#).unwrap();
        let v5 = parse(r#""rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "dtype": "bfloat16""#).unwrap();
        assert_eq!(v4.rope_theta, 1e6);
        assert_eq!(v5.rope_theta, 1e6);
        assert_eq!((v4.yarn.as_ref(), v5.yarn.as_ref()), (None, None));
        assert_eq!(v5.extra["torch_dtype"], "bfloat16", "dtype is also written as torch_dtype for transformers 4");
        assert!(!v5.extra.contains_key("rope_parameters"));

        let yarn4 = parse(r#""rope_theta": 10000.0, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}"#).unwrap();
        let yarn5 = parse(r#""rope_parameters": {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}"#).unwrap();
        assert_eq!(yarn4.yarn, yarn5.yarn);
        assert_eq!(yarn4.rope_inv_freq(), yarn5.rope_inv_freq());
        let yarn = yarn4.yarn.clone().unwrap();
        assert_eq!((yarn.factor, yarn.original_max_position_embeddings, yarn.beta_fast, yarn.beta_slow), (4.0, 64, 32.0, 1.0));
        assert_eq!(yarn4.max_context(), 256);
        // the legacy `type` key and transformers 5's factor-less form (factor = max / original)
        let legacy = parse(r#""rope_theta": 10000.0, "rope_scaling": {"type": "yarn", "original_max_position_embeddings": 64}"#).unwrap();
        assert_eq!(legacy.yarn.unwrap().factor, 4.0);
    }

    #[test]
    fn serialises_in_the_layout_both_transformers_read() {
        let v5 = parse(r#""rope_parameters": {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}"#).unwrap();
        let written: Value = serde_json::from_str(&v5.to_json_pretty()).unwrap();
        assert_eq!(written["rope_theta"], 10000.0);
        assert_eq!(written["rope_scaling"]["rope_type"], "yarn");
        assert_eq!(written["rope_scaling"]["factor"], 4.0);
        assert_eq!(written["rope_scaling"]["original_max_position_embeddings"], 64);
        assert!(written.get("rope_parameters").is_none());
        assert_eq!(Config::from_json(&v5.to_json_pretty()).unwrap(), v5, "a written config reads back the same");
        let plain = parse(r#""rope_theta": 10000.0"#).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&plain.to_json_pretty()).unwrap()["rope_scaling"], Value::Null);
    }

    #[test]
    fn yarn_matches_the_formulas_of_the_paper() {
        // head_dim 32, theta 1e4, original 64: correction range [floor(-1.99), ceil(4.03)] = [0, 5]
        let config = parse(r#""rope_theta": 10000.0, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}"#).unwrap();
        let plain = default_inv_freq(10000.0, 32);
        let yarn = config.rope_inv_freq();
        assert_eq!(yarn.len(), 16);
        assert_eq!(yarn[0], plain[0], "below the ramp: extrapolation (the unscaled frequency)");
        for i in 5..16 {
            assert!((yarn[i] - plain[i] / 4.0).abs() <= 1e-7 * plain[i], "pair {i}: interpolation = frequency / factor");
        }
        let ramp = 2.0 / 5.0; // pair 2: weight of interpolation
        let expected = plain[2] / 4.0 * ramp + plain[2] * (1.0 - ramp);
        assert!((yarn[2] - expected).abs() <= 1e-6 * expected, "{} vs {expected}", yarn[2]);
        assert!((config.rope_attention_scaling() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-15);
        let explicit = parse(r#""rope_theta": 10000.0, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.5}"#).unwrap();
        assert_eq!(explicit.rope_attention_scaling(), 1.5);
        let qwen = parse(r#""rope_theta": 1000000.0, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}"#).unwrap();
        assert_eq!(qwen.max_context(), 131_072, "Qwen3's YaRN: factor 4 over 32,768");
    }

    #[test]
    fn a_release_is_known_by_its_hub_id_and_takes_a_rope_scaling_override() {
        let eight = Config::qwen3_hub_release("Qwen/Qwen3-8B").unwrap();
        assert_eq!(eight, Config::qwen3_release("8b").unwrap());
        assert_eq!(Config::qwen3_hub_release("qwen/qwen3-8b-base"), Some(eight.clone()));
        assert_eq!(Config::qwen3_hub_release("Qwen/Qwen3-4B"), None, "a release this build has no table for");
        assert_eq!(Config::qwen3_hub_release("someone/Qwen3-8B"), None);
        let yarn: Map<String, Value> = serde_json::from_str(r#"{"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32768}"#).unwrap();
        let long = eight.with_rope_scaling(&yarn).unwrap();
        assert_eq!((long.max_context(), long.yarn.as_ref().map(|y| y.factor)), (65_536, Some(2.0)));
        assert_eq!(Config { yarn: None, ..long }, eight, "only the rotary scaling changes");
        let bad: Map<String, Value> = serde_json::from_str(r#"{"rope_type": "dynamic", "factor": 2.0}"#).unwrap();
        assert!(eight.with_rope_scaling(&bad).unwrap_err().to_string().contains("\"dynamic\" is not supported"));
    }

    #[test]
    fn unsupported_options_are_named() {
        let cases = [
            (r#""rope_theta": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}"#, "rope_scaling.rope_type \"linear\" is not supported"),
            (r#""rope_parameters": {"rope_theta": 1e4, "rope_type": "llama3", "factor": 8.0}"#, "rope_parameters.rope_type \"llama3\" is not supported"),
            (r#""rope_parameters": {"rope_theta": 1e4, "rope_type": "dynamic"}"#, "\"dynamic\" is not supported"),
            (r#""rope_parameters": {"rope_theta": 1e4, "rope_type": "longrope"}"#, "\"longrope\" is not supported"),
            (r#""rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#, "missing field `rope_theta`"),
            (r#""rope_theta": 1e4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "short_factor": [1]}"#, "YaRN parameter `short_factor` is not supported"),
            (r#""rope_theta": 1e4, "rope_scaling": {"rope_type": "yarn", "factor": -1.0}"#, "factor must be positive"),
            (r#""rope_theta": 1e4, "layer_types": ["full_attention", "sliding_attention"]"#, "layer_types contains \"sliding_attention\""),
            (r#""rope_theta": 1e4, "layer_types": ["full_attention", "linear_attention"]"#, "layer_types contains \"linear_attention\""),
            (r#""rope_theta": 1e4, "num_experts": 128, "num_experts_per_tok": 8"#, "`num_experts` marks a Mixture-of-Experts model"),
            (r#""rope_theta": 1e4, "partial_rotary_factor": 0.5"#, "partial_rotary_factor 0.5 is not supported"),
            (r#""rope_parameters": {"full_attention": {"rope_theta": 1e4}, "sliding_attention": {"rope_theta": 1e4}}"#, "nested by layer type"),
        ];
        for (rope, expected) in cases {
            let err = parse(rope).unwrap_err();
            assert!(err.contains(expected), "{rope}: {err}");
        }
        let moe = Config::from_json(&format!("{{{}, \"rope_theta\": 1e4}}", BASE.replace("\"qwen3\"", "\"qwen3_moe\""))).unwrap_err().to_string();
        assert!(moe.contains("model_type is \"qwen3_moe\"") && moe.contains("Mixture-of-Experts"), "{moe}");
        assert!(parse(r#""rope_theta": 1e4, "layer_types": ["full_attention", "full_attention"]"#).is_ok());
    }
}
