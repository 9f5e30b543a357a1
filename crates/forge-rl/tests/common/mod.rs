//! What forge-rl's Docker tests share: the repository root and a random tiny policy.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use forge_model::export::{save_model_dir, ExportOptions, DEFAULT_SHARD_SIZE};
use forge_model::{Config, ParamStore};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A randomly initialised tiny Qwen3 saved as a model directory with the tiny tokenizer.
pub fn random_model(dir: &Path) -> PathBuf {
    let config = Config::from_file(&repo().join("configs/tiny/qwen3-tiny.json")).unwrap();
    let params = ParamStore::random(&config, 0.02, 3, DType::F32, &Device::Cpu).unwrap();
    let out = dir.join("model");
    let options = ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype: DType::F32, force: false };
    save_model_dir(&params, &config, Some(&repo().join("assets/tiny-tokenizer")), &out, &options).unwrap();
    out
}
