//! Writing a model in the Hugging Face layout: safetensors shards with `{"format": "pt"}` metadata,
//! `model.safetensors.index.json` when sharded, config.json with the stored dtype, and the
//! tokenizer/generation files of the source directory. Writes are atomic: a temporary sibling
//! directory is renamed into place, so a crash never leaves a half-written model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use crate::weights::{INDEX_FILE, SINGLE_FILE};
use crate::{Config, ModelError, ParamStore, Result};

/// Non-weight files of an HF model directory that travel with the weights.
pub const COMPANION_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Largest shard in bytes; a single tensor larger than this gets a shard of its own (as HF).
    pub shard_size: u64,
    pub dtype: DType,
    /// Replace a non-empty output directory.
    pub force: bool,
}

/// HF's default `max_shard_size` ("5GB").
pub const DEFAULT_SHARD_SIZE: u64 = 5_000_000_000;

/// Parses sizes as HF does: "5GB" = 5·10⁹ bytes, "2GiB" = 2·2³⁰, plain numbers are bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| ModelError::Invalid(format!("shard size `{text}`: expected a number with an optional unit, e.g. 5GB or 500MB")))?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        other => return Err(ModelError::Invalid(format!("shard size `{text}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)"))),
    };
    let bytes = (value * scale as f64) as u64;
    if bytes == 0 {
        return Err(ModelError::Invalid(format!("shard size `{text}` must be positive")));
    }
    Ok(bytes)
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F32 => "float32",
        _ => "float32",
    }
}

/// Writes `params` as an HF model directory at `out`, copying companion files from `source_dir`.
pub fn save_model_dir(params: &ParamStore, config: &Config, source_dir: Option<&Path>, out: &Path, options: &ExportOptions) -> Result<()> {
    prepare_output(out, options.force)?;
    let staging = staging_dir(out)?;
    let result = write_all(params, config, source_dir, &staging, options);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    commit(&staging, out)
}

fn prepare_output(out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        let non_empty = std::fs::read_dir(out).map_err(|e| ModelError::io(out, e))?.next().is_some();
        if non_empty && !force {
            return Err(ModelError::Invalid(format!(
                "output directory {} is not empty; choose another --out or pass --force to replace it",
                out.display()
            )));
        }
    }
    Ok(())
}

fn staging_dir(out: &Path) -> Result<PathBuf> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| ModelError::io(&staging, e))?;
    Ok(staging)
}

/// Moves the finished staging directory into place, replacing an old `out` only after success.
fn commit(staging: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        let old = staging.with_extension("old");
        std::fs::rename(out, &old).map_err(|e| ModelError::io(out, e))?;
        std::fs::rename(staging, out).map_err(|e| ModelError::io(out, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
    } else {
        std::fs::rename(staging, out).map_err(|e| ModelError::io(out, e))?;
    }
    Ok(())
}

fn write_all(params: &ParamStore, config: &Config, source_dir: Option<&Path>, dir: &Path, options: &ExportOptions) -> Result<()> {
    // 1. tensors in the target dtype, grouped into shards in parameter order
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(params.len());
    for (name, var) in params.iter() {
        if config.tie_word_embeddings && name == "lm_head.weight" {
            continue;
        }
        tensors.push((name.to_string(), var.as_tensor().to_dtype(options.dtype)?.contiguous()?));
    }
    let bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let size = bytes(t);
        if current + size > options.shard_size && !shards.last().expect("non-empty").is_empty() {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        current += size;
    }
    let metadata: Option<HashMap<String, String>> = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (k, shard) in shards.iter().enumerate() {
        let file = if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{:05}.safetensors", k + 1, n) };
        let entries: Vec<(&str, &Tensor)> = shard.iter().map(|&i| (tensors[i].0.as_str(), &tensors[i].1)).collect();
        let path = dir.join(&file);
        safetensors::serialize_to_file(entries.iter().map(|(n, t)| (*n, *t)), metadata.clone(), &path)
            .map_err(|e| ModelError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        for &i in shard {
            weight_map.insert(tensors[i].0.clone(), file.clone());
        }
    }
    if n > 1 {
        let total_size: u64 = tensors.iter().map(|(_, t)| bytes(t)).sum();
        let total_parameters: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
        let index = json!({
            "metadata": {"total_size": total_size, "total_parameters": total_parameters},
            "weight_map": weight_map,
        });
        write_json(&dir.join(INDEX_FILE), &index)?;
    }
    // 2. config.json naming the stored dtype (transformers ≥4.56 reads "dtype", older "torch_dtype")
    let mut config_json = serde_json::to_value(config).expect("a Config always serialises");
    if let Value::Object(map) = &mut config_json {
        let name = Value::from(dtype_name(options.dtype));
        map.insert("torch_dtype".into(), name.clone());
        if map.contains_key("dtype") {
            map.insert("dtype".into(), name);
        }
        map.entry("model_type").or_insert_with(|| Value::from("qwen3"));
        map.entry("architectures").or_insert_with(|| json!(["Qwen3ForCausalLM"]));
    }
    write_json(&dir.join("config.json"), &config_json)?;
    // 3. companions; a generation_config.json is always present
    if let Some(src) = source_dir {
        for name in COMPANION_FILES {
            let from = src.join(name);
            if *name == "tokenizer_config.json" && from.is_file() {
                let text = std::fs::read_to_string(&from).map_err(|e| ModelError::io(&from, e))?;
                let config = serde_json::from_str(&text)
                    .map_err(|e| ModelError::Tokenizer { path: from.clone(), reason: format!("not valid JSON: {e}") })?;
                write_json(&dir.join(name), &portable_tokenizer_config(config))?;
            } else if from.is_file() {
                std::fs::copy(&from, dir.join(name)).map_err(|e| ModelError::io(&from, e))?;
            }
        }
    }
    let generation = dir.join("generation_config.json");
    if !generation.exists() {
        let mut value = json!({"_from_model_config": true});
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            if let Some(v) = config.extra.get(key).filter(|v| !v.is_null()) {
                value[key] = v.clone();
            }
        }
        write_json(&generation, &value)?;
    }
    Ok(())
}

/// A tokenizer_config.json that transformers 4.x and 5.x both load. Tokenizers saved by 5.x list
/// their extra special tokens as `"extra_special_tokens": [...]`, which 4.x reads as a dict of named
/// tokens and fails on (`'list' object has no attribute 'keys'`); the same list under 4.x's name
/// `additional_special_tokens` means the same to both.
fn portable_tokenizer_config(mut config: Value) -> Value {
    if let Value::Object(map) = &mut config {
        if map.get("extra_special_tokens").is_some_and(Value::is_array) && !map.contains_key("additional_special_tokens") {
            let tokens = map.remove("extra_special_tokens").expect("checked above");
            map.insert("additional_special_tokens".into(), tokens);
        }
    }
    config
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(|e| ModelError::io(path, e))
}

/// `forge export`: loads a model directory (or a PEFT LoRA adapter directory, merged into the
/// base model its `adapter_config.json` names) and writes it in HF layout.
pub fn export(checkpoint: &Path, out: &Path, shard_size: u64, dtype: Option<DType>, force: bool) -> Result<ExportSummary> {
    let device = candle_core::Device::Cpu;
    let is_adapter = checkpoint.join(crate::lora::ADAPTER_CONFIG_FILE).is_file();
    let model_dir = if is_adapter {
        let text = std::fs::read_to_string(checkpoint.join(crate::lora::ADAPTER_CONFIG_FILE)).map_err(|e| ModelError::io(checkpoint, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", checkpoint.display())))?;
        let base = value["base_model_name_or_path"].as_str().unwrap_or_default();
        crate::weights::resolve_model_dir(base).map_err(|e| {
            ModelError::Invalid(format!("the adapter in {} names base model `{base}`, which cannot be loaded: {e}", checkpoint.display()))
        })?
    } else {
        checkpoint.to_path_buf()
    };
    let dtype = match dtype {
        Some(d) => d,
        None => crate::weights::stored_dtype(&model_dir)?,
    };
    let (config, mut params) = crate::load_weights(&model_dir, DType::F32, &device)?;
    if is_adapter {
        let (lora, _, adapters) = crate::lora::load_adapters(checkpoint, &config, DType::F32, &device)?;
        params = crate::lora::merge(&params, &adapters, &lora)?;
    }
    save_model_dir(&params, &config, Some(&model_dir), out, &ExportOptions { shard_size, dtype, force })?;
    let shards = std::fs::read_dir(out)
        .map_err(|e| ModelError::io(out, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .count();
    Ok(ExportSummary { parameters: params.num_elements(), shards, dtype })
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub parameters: usize,
    pub shards: usize,
    pub dtype: DType,
}
