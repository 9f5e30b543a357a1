//! Reading HF model directories: locating them (local path or hub cache), their weight files
//! (single or sharded), and loading tensors into a [`ParamStore`] of the requested dtype.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Var};

use crate::{Config, ModelError, ParamStore, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A local directory, or an `org/name` id looked up (offline) in the Hugging Face hub cache
/// (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if !looks_like_hub_id {
        return Err(ModelError::NotAModelDir { dir: path.to_path_buf(), reason: "no such directory".into() });
    }
    resolve_in_hub_cache(spec, &hf_hub::Cache::from_env())
}

pub fn resolve_in_hub_cache(id: &str, cache: &hf_hub::Cache) -> Result<PathBuf> {
    let repo = cache.model(id.to_string());
    repo.get("config.json")
        .and_then(|config| config.parent().map(Path::to_path_buf))
        .ok_or_else(|| ModelError::NotInHubCache { id: id.to_string(), cache: cache.path().clone() })
}

/// The safetensors files of a model directory: the shards named by the index, else the single file.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::NotAModelDir { dir: dir.into(), reason: format!("{INDEX_FILE} is not valid JSON: {e}") })?;
        let map = parsed.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::NotAModelDir {
            dir: dir.into(),
            reason: format!("{INDEX_FILE} has no \"weight_map\" object"),
        })?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(ModelError::NotAModelDir { dir: dir.into(), reason: format!("shard {f} named in {INDEX_FILE} is missing") })
                }
            })
            .collect();
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::NotAModelDir {
        dir: dir.into(),
        reason: format!("neither {SINGLE_FILE} nor {INDEX_FILE} is there (only safetensors weights are supported)"),
    })
}

fn open(files: &[PathBuf]) -> Result<MmapedSafetensors> {
    for file in files {
        // SAFETY: the file is only read; a concurrent writer would corrupt the values, not memory safety of Rust objects we hand out (tensors are copied out below).
        unsafe { MmapedSafetensors::new(file) }
            .map_err(|e| ModelError::Safetensors { path: file.clone(), reason: e.to_string() })?;
    }
    // SAFETY: as above.
    unsafe { MmapedSafetensors::multi(files) }.map_err(|e| ModelError::Safetensors {
        path: files.first().cloned().unwrap_or_default(),
        reason: e.to_string(),
    })
}

/// The dtype the weights are stored in (that of the first tensor).
pub fn stored_dtype(dir: &Path) -> Result<DType> {
    let files = weight_files(dir)?;
    let st = open(&files)?;
    let tensors = st.tensors();
    let (_, view) = tensors
        .first()
        .ok_or_else(|| ModelError::Safetensors { path: files[0].clone(), reason: "it holds no tensors".into() })?;
    DType::try_from(view.dtype()).map_err(|e| ModelError::Safetensors { path: files[0].clone(), reason: e.to_string() })
}

/// Loads every parameter `config` implies from the directory's safetensors, converting to `dtype`.
pub fn load_params(dir: &Path, config: &Config, dtype: DType, device: &Device) -> Result<ParamStore> {
    let files = weight_files(dir)?;
    let st = open(&files)?;
    let mut entries = Vec::new();
    let expected = config.parameter_shapes();
    for (name, shape) in &expected {
        let tensor = st.load(name, device).map_err(|_| ModelError::MissingTensor {
            dir: dir.into(),
            name: name.clone(),
            hint: if name == "lm_head.weight" {
                "the checkpoint ties embeddings: set \"tie_word_embeddings\": true in config.json".into()
            } else {
                format!("is the checkpoint a Qwen3 model with {} layers?", config.num_hidden_layers)
            },
        })?;
        if tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch { name: name.clone(), expected: shape.clone(), found: tensor.dims().to_vec() });
        }
        entries.push((name.clone(), Var::from_tensor(&tensor.to_dtype(dtype)?)?));
    }
    let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in st.tensors() {
        if !(known.contains(name.as_str()) || config.tie_word_embeddings && name == "lm_head.weight") {
            tracing::warn!(tensor = %name, dir = %dir.display(), "ignoring a tensor the Qwen3 config does not use");
        }
    }
    Ok(ParamStore::from_entries(entries))
}
