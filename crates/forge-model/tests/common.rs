//! Fixture access shared by the integration tests. Fixtures come from `scripts/fixtures/make_fixtures.py`
//! (Hugging Face transformers, f32, eager attention).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use forge_model::Batch;

/// Every fixture of make_fixtures.py: transformers 4.57 and 5.x model directories, unscaled and YaRN RoPE.
pub const FIXTURES: [&str; 7] = ["gqa2-untied-f32", "gqa4-tied-f32", "mha-bf16", "gqa2-sharded-f32", "tf5-gqa2-f32", "tf5-yarn-f32", "yarn-f32"];

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

pub fn model_dir(name: &str) -> PathBuf {
    fixture_dir(name).join("model")
}

pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn load(name: &str) -> Self {
        let path = fixture_dir(name).join("reference.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { tensors }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    pub fn batch(&self) -> Batch {
        Batch {
            input_ids: self.get("input_ids").to_dtype(DType::U32).unwrap(),
            attention_mask: Some(self.get("attention_mask").to_dtype(DType::U32).unwrap()),
            labels: Some(self.get("labels").clone()),
            position_ids: None,
        }
    }

    pub fn gradient_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().filter_map(|k| k.strip_prefix("grad.").map(String::from)).collect();
        names.sort();
        names
    }
}

/// ‖a − b‖ / ‖b‖ in f32.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    diff / norm.max(f32::MIN_POSITIVE)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
