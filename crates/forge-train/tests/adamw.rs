//! AdamW behaviour beyond the torch goldens: fused == composite, clipping folded into the step,
//! bad gradients, skipped parameters, pure bf16, and a tiny Qwen3 that learns.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{same_bits, synthetic_grads};
use forge_model::{Batch, Config, Gradients, ParamStore, Qwen3ForCausalLM};
use forge_train::{clip_grad_norm, AdamW, AdamWConfig, GradAccumulator, LrSchedule, TrainError};

fn vars(dtype: DType) -> Vec<(String, Var)> {
    // One tensor above the kernel's parallel threshold (2^17 elements), one 1-D.
    [("big.weight", vec![384usize, 512]), ("small.weight", vec![7, 5]), ("final_norm.weight", vec![512])]
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|j| ((j as f32) * 0.01).cos()).collect();
            let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            (name.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect()
}

fn config() -> AdamWConfig {
    AdamWConfig { lr: 5e-3, weight_decay: 0.05, max_grad_norm: Some(0.5), ..Default::default() }
}

fn run(params: &[(String, Var)], config: AdamWConfig, composite: bool, steps: u64) -> AdamW {
    let mut optimizer = AdamW::new(params.to_vec(), config).unwrap();
    if composite {
        optimizer = optimizer.with_composite_update();
    }
    for step in 0..steps {
        optimizer.set_lr(LrSchedule::cosine(5e-3, 1, 5).lr(step));
        optimizer.step(&synthetic_grads(params, step, if step % 2 == 0 { 1.0 } else { 1e-4 })).unwrap();
    }
    optimizer
}

#[test]
fn fused_and_composite_updates_agree_bit_for_bit() {
    for (dtype, pure_bf16) in [(DType::F32, false), (DType::BF16, false), (DType::BF16, true), (DType::F16, false)] {
        let (a, b) = (vars(dtype), vars(dtype));
        let config = AdamWConfig { pure_bf16, ..config() };
        let fused = run(&a, config.clone(), false, 4);
        let composite = run(&b, config, true, 4);
        for ((name, va), (_, vb)) in a.iter().zip(&b) {
            assert!(same_bits(va.as_tensor(), vb.as_tensor()), "{dtype:?} pure={pure_bf16} `{name}`: parameters differ");
            let (ma, mb) = (fused.exp_avg_sq(name).unwrap().unwrap(), composite.exp_avg_sq(name).unwrap().unwrap());
            assert!(same_bits(&ma, &mb), "{dtype:?} `{name}`: exp_avg_sq differs");
            assert_eq!(fused.master_weight(name).unwrap().is_some(), dtype != DType::F32 && !pure_bf16);
        }
    }
}

#[test]
fn folded_clipping_equals_clipping_the_gradients_first() {
    let (a, b) = (vars(DType::F32), vars(DType::F32));
    let mut folded = AdamW::new(a.clone(), config()).unwrap();
    let mut explicit = AdamW::new(b.clone(), AdamWConfig { max_grad_norm: None, ..config() }).unwrap();
    let grads = synthetic_grads(&a, 0, 1.0);
    let stats = folded.step(&grads).unwrap();
    let mut clipped = grads.clone();
    let norm = clip_grad_norm(&mut clipped, 0.5).unwrap();
    assert_eq!(stats.grad_norm, norm);
    assert!(stats.clip_coef < 1.0, "the gradients were large enough to clip");
    explicit.step(&clipped).unwrap();
    for ((name, va), (_, vb)) in a.iter().zip(&b) {
        assert!(same_bits(va.as_tensor(), vb.as_tensor()), "`{name}` differs");
    }
}

#[test]
fn non_finite_gradients_change_nothing() {
    let params = vars(DType::F32);
    let before: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
    let mut optimizer = AdamW::new(params.clone(), config()).unwrap();
    let mut grads = synthetic_grads(&params, 0, 1.0);
    let bad = Tensor::new(&[1.0f32, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0], &Device::Cpu).unwrap();
    grads.insert("small.weight".into(), bad.broadcast_as((5, 7)).unwrap().t().unwrap().contiguous().unwrap());
    let err = optimizer.step(&grads).unwrap_err();
    assert!(matches!(&err, TrainError::NonFiniteGradients { name, .. } if name == "small.weight"), "{err}");
    assert_eq!(optimizer.steps(), 0);
    assert_eq!(optimizer.state_bytes(), 0);
    for ((name, var), old) in params.iter().zip(&before) {
        assert!(same_bits(var.as_tensor(), old), "`{name}` changed");
    }
}

#[test]
fn gradients_that_do_not_fit_are_rejected() {
    let params = vars(DType::F32);
    let mut optimizer = AdamW::new(params.clone(), config()).unwrap();
    let stranger: Gradients = [("lm_head.weight".to_string(), Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap())].into();
    assert!(matches!(optimizer.step(&stranger), Err(TrainError::UnknownGradient(n)) if n == "lm_head.weight"));
    let misshapen: Gradients = [("small.weight".to_string(), Tensor::zeros((5, 7), DType::F32, &Device::Cpu).unwrap())].into();
    let err = optimizer.step(&misshapen).unwrap_err();
    assert!(matches!(err, TrainError::GradientShape { .. }), "{err}");
    assert!(AdamW::new(params, AdamWConfig { beta2: 1.0, ..config() }).is_err());
}

#[test]
fn parameters_without_gradients_are_skipped() {
    let params = vars(DType::F32);
    let frozen_before = params[1].1.as_tensor().copy().unwrap();
    let mut optimizer = AdamW::new(params.clone(), config()).unwrap();
    let mut grads = synthetic_grads(&params, 0, 1.0);
    grads.remove("small.weight");
    optimizer.step(&grads).unwrap();
    assert!(same_bits(params[1].1.as_tensor(), &frozen_before), "no gradient, no update (not even decay)");
    assert!(optimizer.exp_avg("small.weight").unwrap().is_none(), "no state allocated");
    assert!(optimizer.exp_avg("big.weight").unwrap().is_some());
}

#[test]
fn norms_and_biases_are_not_decayed() {
    let params = vec![
        ("model.layers.0.self_attn.q_proj.weight".to_string(), Var::ones((4, 4), DType::F32, &Device::Cpu).unwrap()),
        ("model.layers.0.self_attn.q_norm.weight".to_string(), Var::ones(4, DType::F32, &Device::Cpu).unwrap()),
        ("model.layers.0.mlp.up_proj.bias".to_string(), Var::ones(4, DType::F32, &Device::Cpu).unwrap()),
        ("model.norm.weight".to_string(), Var::ones(4, DType::F32, &Device::Cpu).unwrap()),
    ];
    let mut optimizer = AdamW::new(params.clone(), AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() }).unwrap();
    let groups = optimizer.param_groups();
    assert_eq!(groups.decay, vec!["model.layers.0.self_attn.q_proj.weight"]);
    assert_eq!(groups.no_decay.len(), 3);
    // Zero gradients: only weight decay can move a parameter.
    let zeros: Gradients = params.iter().map(|(n, v)| (n.clone(), v.zeros_like().unwrap())).collect();
    optimizer.step(&zeros).unwrap();
    let first = |i: usize| params[i].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    assert_eq!(first(0), 0.95);
    assert_eq!((first(1), first(2), first(3)), (1.0, 1.0, 1.0));
}

#[test]
fn pure_bf16_keeps_no_master_copy_and_still_learns() {
    let params = vars(DType::BF16);
    let before = params[0].1.as_tensor().to_dtype(DType::F32).unwrap();
    let optimizer = run(&params, AdamWConfig { pure_bf16: true, ..config() }, false, 3);
    assert!(optimizer.master_weight("big.weight").unwrap().is_none());
    assert_eq!(optimizer.exp_avg("big.weight").unwrap().unwrap().dtype(), DType::F32, "moments stay f32");
    let after = params[0].1.as_tensor().to_dtype(DType::F32).unwrap();
    let moved = (after - before).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(moved > 0.0);
    // 2 moments × 4 bytes, no master
    let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(optimizer.state_bytes(), n * 8);
}

/// The whole loop on a real (tiny, random) Qwen3: accumulation, schedule, clipping, master
/// weights; the loss falls and every parameter moves.
#[test]
fn a_tiny_qwen3_learns_a_sequence() {
    let config = Config::from_json(
        r#"{"model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
            "max_position_embeddings": 128}"#,
    )
    .unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let params = ParamStore::random(&config, 0.02, 7, dtype, &Device::Cpu).unwrap();
        // `copy`: the update is in place, a plain clone would see it.
        let initial: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().to_dtype(DType::F32).unwrap().copy().unwrap()).collect();
        let model = Qwen3ForCausalLM::new(config.clone(), params.clone()).unwrap();
        let mut optimizer = AdamW::for_params(&params, AdamWConfig { lr: 1e-2, max_grad_norm: Some(1.0), ..Default::default() }).unwrap();
        let no_decay = optimizer.param_groups().no_decay;
        assert!(no_decay.iter().all(|n| n.contains("norm")) && no_decay.len() == 2 * 4 + 1, "{no_decay:?}");
        let schedule = LrSchedule::cosine(1e-2, 2, 20);
        let micro_batches: Vec<Batch> = (0..2u32)
            .map(|m| {
                let ids: Vec<u32> = (0..16).map(|i| (i * 5 + m * 3) % 64).collect();
                let input_ids = Tensor::from_vec(ids, (1, 16), &Device::Cpu).unwrap();
                Batch { labels: Some(input_ids.to_dtype(DType::I64).unwrap()), input_ids, attention_mask: None, position_ids: None }
            })
            .collect();
        let mut losses = Vec::new();
        for _ in 0..20 {
            let mut acc = GradAccumulator::new();
            let mut loss = 0.0;
            for batch in &micro_batches {
                let (l, grads) = model.loss_and_gradients(batch, false).unwrap();
                loss += l / micro_batches.len() as f32;
                acc.add(grads).unwrap();
            }
            losses.push(loss);
            optimizer.set_lr(schedule.lr(optimizer.steps()));
            let stats = optimizer.step(&acc.finish().unwrap()).unwrap();
            assert!(stats.grad_norm.is_finite() && stats.clip_coef <= 1.0);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.5 * first, "{dtype:?}: loss {first} -> {last}");
        for ((name, var), before) in params.iter().zip(&initial) {
            let diff = (var.as_tensor().to_dtype(DType::F32).unwrap() - before).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() > 0.0, "{dtype:?}: `{name}` never moved");
        }
        eprintln!("tiny qwen3 {dtype:?}: loss {first:.3} -> {last:.3}");
    }
}
