#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use forge_model::Gradients;
use forge_train::config::load_config;
use forge_train::sft::SftConfig;

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/optim").join(name)
}

/// A fixture's tensors (on CPU) and metadata.
pub struct Fixture {
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fixtures/make_optim_fixtures.py)", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        Fixture { tensors, meta }
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("fixture lacks `{key}`"))
    }

    pub fn number(&self, key: &str) -> f64 {
        self.meta[key].parse().unwrap_or_else(|e| panic!("metadata {key}: {e}"))
    }

    /// Parameter names in the order of the fixture script (sorted: the order is irrelevant).
    pub fn param_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().filter_map(|k| k.strip_prefix("init.")).map(str::to_string).collect();
        names.sort();
        names
    }

    pub fn grads(&self, step: usize, dtype: DType) -> Gradients {
        self.param_names()
            .into_iter()
            .map(|n| {
                let g = self.tensor(&format!("grad.{step}.{n}")).to_dtype(dtype).unwrap();
                (n, g)
            })
            .collect()
    }
}

pub fn vars_from(fixture: &Fixture, dtype: DType) -> Vec<(String, Var)> {
    fixture
        .param_names()
        .into_iter()
        .map(|n| {
            let t = fixture.tensor(&format!("init.{n}")).to_dtype(dtype).unwrap();
            (n, Var::from_tensor(&t).unwrap())
        })
        .collect()
}

/// max |a − b| / max |b|: the error relative to the tensor's scale.
pub fn rel_err(actual: &Tensor, expected: &Tensor) -> f64 {
    let a = actual.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = expected.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

pub fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.dtype() == b.dtype() && a.dims() == b.dims() && bits(a) == bits(b)
}

/// Deterministic pseudo-random gradients for step `step` (no RNG state to carry across a resume).
pub fn synthetic_grads(params: &[(String, Var)], step: u64, scale: f32) -> Gradients {
    params
        .iter()
        .enumerate()
        .map(|(i, (name, var))| {
            let n = var.elem_count();
            let data: Vec<f32> = (0..n)
                .map(|j| {
                    let x = ((j as f64 + 1.0) * 0.7548776662 + (i as f64 + 1.0) * 0.5698402910 + step as f64 * 0.1234567).sin();
                    scale * (x * 43758.5453).fract() as f32
                })
                .collect();
            let g = Tensor::from_vec(data, var.shape(), &Device::Cpu).unwrap().to_dtype(var.dtype()).unwrap();
            (name.clone(), g)
        })
        .collect()
}

/// The repository: `FORGE_REPO` where the test binary runs away from where it was built (the GPU
/// machine: scripts/gpu/gpu-check.sh sets it), else the checkout it was built in.
pub fn repo() -> PathBuf {
    let dir = std::env::var_os("FORGE_REPO").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."), PathBuf::from);
    dir.canonicalize().unwrap_or_else(|e| panic!("repository {}: {e}", dir.display()))
}

/// configs/tiny/sft.toml shrunk to seconds: a smaller model and the first `examples` trajectories.
pub fn small_sft_config(run_dir: &Path, examples: usize, extra: &[&str]) -> SftConfig {
    let repo = repo();
    let data = run_dir.with_extension("jsonl");
    let lines: Vec<String> = std::fs::read_to_string(repo.join("assets/sft/tiny-trajectories.jsonl"))
        .unwrap()
        .lines()
        .take(examples)
        .map(String::from)
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let model_config = run_dir.with_extension("model.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo.join("configs/tiny/qwen3-tiny.json")).unwrap()).unwrap();
    c["hidden_size"] = 64.into();
    c["intermediate_size"] = 128.into();
    c["num_hidden_layers"] = 2.into();
    c["head_dim"] = 16.into();
    std::fs::write(&model_config, c.to_string()).unwrap();
    let mut overrides: Vec<String> = vec![
        format!("model.init_config=\"{}\"", model_config.display()),
        format!("model.tokenizer=\"{}\"", repo.join("assets/tiny-tokenizer").display()),
        format!("data.train=\"{}\"", data.display()),
        format!("run.dir=\"{}\"", run_dir.display()),
        "train.epochs=3".into(),
        "train.grad_accum=1".into(),
        "run.checkpoint_every=2".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let (config, _) = load_config::<SftConfig>(&repo.join("configs/tiny/sft.toml"), &overrides).unwrap();
    config
}
