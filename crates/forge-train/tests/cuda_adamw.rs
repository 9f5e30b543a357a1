//! The fused CUDA AdamW step against the fused CPU step: same parameters, same gradients, several
//! steps; parameters, moments and master weights must agree bit for bit (the kernel uses the CPU
//! arithmetic operation by operation, without FMA contraction). Needs a GPU: run by
//! scripts/gpu/gpu-check.sh (CI=true there; CI on GPU-less machines only compiles this file).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{rel_err, same_bits, synthetic_grads};
use forge_kernels::testing::require_cuda;
use forge_model::Gradients;
use forge_train::{AdamW, AdamWConfig};

/// A matrix whose size is not a multiple of the block size, a small matrix and a 1-D weight
/// (no decay), with values of the same kind as tests/adamw.rs.
fn vars(dtype: DType, device: &Device) -> Vec<(String, Var)> {
    [("big.weight", vec![385usize, 517]), ("small.weight", vec![7, 5]), ("final_norm.weight", vec![512])]
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|j| ((j as f32) * 0.01).cos()).collect();
            let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
            (name.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect()
}

fn on(grads: Gradients, device: &Device) -> Gradients {
    grads.into_iter().map(|(n, g)| (n, g.to_device(device).unwrap())).collect()
}

fn run(params: &[(String, Var)], config: &AdamWConfig, device: &Device) -> AdamW {
    let mut optimizer = AdamW::new(params.to_vec(), config.clone()).unwrap();
    for step in 0..4u64 {
        optimizer.set_lr(5e-3 * (1.0 - step as f64 / 8.0));
        let scale = if step % 2 == 0 { 1.0 } else { 1e-4 };
        optimizer.step(&on(synthetic_grads(params, step, scale), device)).unwrap();
    }
    optimizer
}

#[test]
fn cuda_step_equals_cpu_step_bit_for_bit() {
    let Some(gpu) = require_cuda("cuda_step_equals_cpu_step_bit_for_bit") else { return };
    for (dtype, pure_bf16) in [(DType::F32, false), (DType::BF16, false), (DType::BF16, true), (DType::F16, false)] {
        let config = AdamWConfig { lr: 5e-3, weight_decay: 0.05, pure_bf16, ..Default::default() };
        let (cpu_params, gpu_params) = (vars(dtype, &Device::Cpu), vars(dtype, &gpu));
        let (cpu, cuda) = (run(&cpu_params, &config, &Device::Cpu), run(&gpu_params, &config, &gpu));
        for ((name, c), (_, g)) in cpu_params.iter().zip(&gpu_params) {
            assert!(g.device().is_cuda(), "`{name}` left the GPU");
            let case = format!("{dtype:?} pure_bf16={pure_bf16} `{name}`");
            assert!(same_bits(c.as_tensor(), g.as_tensor()), "{case}: parameters differ");
            for (what, a, b) in [
                ("exp_avg", cpu.exp_avg(name).unwrap(), cuda.exp_avg(name).unwrap()),
                ("exp_avg_sq", cpu.exp_avg_sq(name).unwrap(), cuda.exp_avg_sq(name).unwrap()),
                ("master weight", cpu.master_weight(name).unwrap(), cuda.master_weight(name).unwrap()),
            ] {
                match (a, b) {
                    (Some(a), Some(b)) => assert!(same_bits(&a, &b), "{case}: {what} differs"),
                    (None, None) => assert_eq!(what, "master weight", "{case}: no {what}"),
                    _ => panic!("{case}: {what} exists on one device only"),
                }
            }
        }
    }
}

/// With clipping, the coefficient comes from a gradient norm reduced on each device in its own
/// order, so the steps agree to rounding rather than to the bit.
#[test]
fn cuda_step_with_clipping_matches_cpu() {
    let Some(gpu) = require_cuda("cuda_step_with_clipping_matches_cpu") else { return };
    let config = AdamWConfig { lr: 5e-3, weight_decay: 0.05, max_grad_norm: Some(0.5), ..Default::default() };
    let (cpu_params, gpu_params) = (vars(DType::F32, &Device::Cpu), vars(DType::F32, &gpu));
    run(&cpu_params, &config, &Device::Cpu);
    run(&gpu_params, &config, &gpu);
    for ((name, c), (_, g)) in cpu_params.iter().zip(&gpu_params) {
        let e = rel_err(&g.as_tensor().to_device(&Device::Cpu).unwrap(), c.as_tensor());
        assert!(e < 1e-6, "`{name}`: relative difference {e:e}");
    }
}
