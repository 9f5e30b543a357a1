//! Save → load → continue equals an uninterrupted run, to the bit (CPU), through a checkpoint
//! directory, for f32 parameters and for bf16 parameters with master weights.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use common::{same_bits, synthetic_grads};
use forge_train::{AdamW, AdamWConfig, Checkpoints, LrSchedule, TrainError};

fn params(dtype: DType) -> Vec<(String, Var)> {
    let shapes: [(&str, &[usize]); 4] = [
        ("model.embed_tokens.weight", &[64, 16]),
        ("model.layers.0.self_attn.q_proj.weight", &[16, 16]),
        ("model.layers.0.input_layernorm.weight", &[16]),
        ("model.norm.weight", &[16]),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|j| ((j * 7 + i * 13) as f32 * 0.173).sin() * 0.5 + if shape.len() == 1 { 1.0 } else { 0.0 }).collect();
            let t = Tensor::from_vec(data, *shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            (name.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect()
}

fn config() -> AdamWConfig {
    AdamWConfig { lr: 1e-2, beta1: 0.9, beta2: 0.95, weight_decay: 0.1, max_grad_norm: Some(1.0), ..Default::default() }
}

fn schedule() -> LrSchedule {
    LrSchedule::cosine(1e-2, 2, 8)
}

fn train(optimizer: &mut AdamW, vars: &[(String, Var)], until: u64) {
    while optimizer.steps() < until {
        optimizer.set_lr(schedule().lr(optimizer.steps()));
        // Alternate large and small gradients so clipping is on in some steps and off in others.
        let scale = [2.0, 0.01][(optimizer.steps() % 2) as usize];
        optimizer.step(&synthetic_grads(vars, optimizer.steps(), scale)).unwrap();
    }
}

fn save_params(vars: &[(String, Var)], path: &std::path::Path) {
    let map: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn load_params(path: &std::path::Path, like: &[(String, Var)]) -> Vec<(String, Var)> {
    let map = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    like.iter().map(|(n, _)| (n.clone(), Var::from_tensor(&map[n]).unwrap())).collect()
}

fn assert_same_run(a: &AdamW, a_vars: &[(String, Var)], b: &AdamW, b_vars: &[(String, Var)]) {
    assert_eq!(a.steps(), b.steps());
    assert_eq!(a.lr().to_bits(), b.lr().to_bits());
    for ((name, va), (_, vb)) in a_vars.iter().zip(b_vars) {
        assert!(same_bits(va.as_tensor(), vb.as_tensor()), "`{name}` parameters differ after resume");
        for (kind, x, y) in [
            ("exp_avg", a.exp_avg(name).unwrap(), b.exp_avg(name).unwrap()),
            ("exp_avg_sq", a.exp_avg_sq(name).unwrap(), b.exp_avg_sq(name).unwrap()),
            ("master", a.master_weight(name).unwrap(), b.master_weight(name).unwrap()),
        ] {
            match (x, y) {
                (Some(x), Some(y)) => assert!(same_bits(&x, &y), "`{name}` {kind} differs after resume"),
                (None, None) => {}
                _ => panic!("`{name}` {kind} exists in one run only"),
            }
        }
    }
}

fn resume_is_bit_exact(dtype: DType, config: AdamWConfig) {
    let total = 7;
    let uninterrupted = params(dtype);
    let mut reference = AdamW::new(uninterrupted.clone(), config.clone()).unwrap();
    train(&mut reference, &uninterrupted, total);

    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path().join("checkpoints"));
    let first = params(dtype);
    let mut optimizer = AdamW::new(first.clone(), config.clone()).unwrap();
    train(&mut optimizer, &first, 3);
    checkpoints
        .save(optimizer.steps(), |tmp| {
            save_params(&first, &tmp.join("model.safetensors"));
            optimizer.save_state(&tmp.join("optimizer.safetensors"))
        })
        .unwrap();
    train(&mut optimizer, &first, 4); // progress after the checkpoint is lost in the "crash"
    drop(optimizer);

    let (step, latest) = checkpoints.latest().unwrap().expect("a checkpoint was written");
    assert_eq!(step, 3);
    let resumed = load_params(&latest.join("model.safetensors"), &first);
    let mut optimizer = AdamW::new(resumed.clone(), config).unwrap();
    optimizer.load_state(&latest.join("optimizer.safetensors")).unwrap();
    assert_eq!(optimizer.steps(), 3);
    train(&mut optimizer, &resumed, total);
    assert_same_run(&reference, &uninterrupted, &optimizer, &resumed);
}

#[test]
fn f32_resume_is_bit_exact() {
    resume_is_bit_exact(DType::F32, config());
}

#[test]
fn bf16_master_weight_resume_is_bit_exact() {
    resume_is_bit_exact(DType::BF16, config());
}

#[test]
fn pure_bf16_resume_is_bit_exact() {
    resume_is_bit_exact(DType::BF16, AdamWConfig { pure_bf16: true, ..config() });
}

#[test]
fn composite_path_state_round_trips() {
    let vars = params(DType::BF16);
    let mut a = AdamW::new(vars.clone(), config()).unwrap().with_composite_update();
    train(&mut a, &vars, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    a.save_state(&path).unwrap();
    let mut b = AdamW::new(vars.clone(), config()).unwrap().with_composite_update();
    b.load_state(&path).unwrap();
    assert_same_run(&a, &vars, &b, &vars);
}

#[test]
fn state_for_another_model_is_rejected_untouched() {
    let vars = params(DType::F32);
    let mut a = AdamW::new(vars.clone(), config()).unwrap();
    train(&mut a, &vars, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    a.save_state(&path).unwrap();

    // fewer parameters: the file names one this optimizer does not have
    let mut smaller = AdamW::new(vars[1..].to_vec(), config()).unwrap();
    let err = smaller.load_state(&path).unwrap_err();
    assert!(matches!(err, TrainError::StateMismatch { .. }), "{err}");
    assert!(err.to_string().contains("model.embed_tokens.weight"), "{err}");
    assert_eq!(smaller.steps(), 0);

    // master weights on one side only
    let mut pure = AdamW::new(params(DType::BF16), AdamWConfig { pure_bf16: true, ..config() }).unwrap();
    let err = pure.load_state(&path).unwrap_err();
    assert!(matches!(err, TrainError::StateMismatch { .. }), "{err}");

    // not an optimizer state at all
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let err = a.load_state(&junk).unwrap_err();
    assert!(matches!(err, TrainError::BadState { .. }), "{err}");
    assert_eq!(a.steps(), 2);
}
