//! The CUDA kernels against candle's composite paths on the same GPU, at Qwen3-8B training shapes
//! (4096 tokens, hidden 4096, 32 query heads of 128, intermediate 12288, vocabulary 151936), bf16:
//! RMSNorm, RoPE, the SwiGLU gate and per-token cross-entropy forward + backward, the chunked LM head + loss against full logits, one
//! AdamW step over bf16 parameters with f32 state (8 large matrices; the 310 tensors of a Qwen3-0.6B), and the bf16 matmul rate that MFU figures are
//! measured against. Run by scripts/gpu/gpu-check.sh.
//!
//! `cargo bench -p forge-train --features cuda --bench gpu_kernels -- [--warmup 3] [--steps 20]`
//! prints one JSON line per measurement.

use candle_core::{DType, Device, Result, Tensor, Var};
use forge_kernels::reference;
use forge_kernels::testing::{arg, bf16_matmul_rate, median_seconds, require_cuda};
use forge_model::Gradients;
use forge_train::{AdamW, AdamWConfig};

/// Forward, then backward of Σ out·probe w.r.t. every Var.
fn fwd_bwd(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], vars: &[&Var], probe: &Tensor) -> Result<()> {
    let out = f(inputs)?;
    let grads = (out.to_dtype(DType::F32)? * probe)?.sum_all()?.backward()?;
    for v in vars {
        grads.get(v.as_tensor()).expect("every input takes a gradient");
    }
    Ok(())
}

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

struct Bench<'a> {
    device: &'a Device,
    warmup: usize,
    steps: usize,
}

impl Bench<'_> {
    fn report(&self, bench: &str, shape: &str, implementation: &str, seconds: f64) {
        println!("{}", serde_json::json!({ "bench": bench, "shape": shape, "impl": implementation, "median_ms": seconds * 1e3 }));
    }

    /// The fused op and the composite reference, forward + backward, on the same inputs.
    fn pair(&self, bench: &str, shape: &str, fused: Op, composite: Op, vars: &[&Var], constants: &[Tensor]) -> Result<()> {
        let mut inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        inputs.extend(constants.iter().cloned());
        let probe = fused(&inputs)?.ones_like()?.to_dtype(DType::F32)?;
        for (name, f) in [("fused", &fused), ("composite", &composite)] {
            let seconds = median_seconds(self.device, self.warmup, self.steps, || fwd_bwd(f.as_ref(), &inputs, vars, &probe))?;
            self.report(bench, shape, name, seconds);
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let Some(device) = require_cuda("gpu_kernels bench") else { return Ok(()) };
    let bench = Bench { device: &device, warmup: arg(&args, "--warmup", 3usize), steps: arg(&args, "--steps", 20usize) };
    let (tokens, hidden, heads, head_dim) = (4096usize, 4096usize, 32usize, 128usize);
    let randn = |shape: &[usize]| -> Result<Tensor> { Tensor::randn(0f32, 1f32, shape, &device)?.to_dtype(DType::BF16) };

    let n = 8192;
    let (seconds, tflops) = bf16_matmul_rate(&device, n)?;
    println!("{}", serde_json::json!({ "bench": "matmul_bf16", "shape": format!("{n}x{n}x{n}"), "impl": "candle (cuBLAS)", "median_ms": seconds * 1e3, "tflops": tflops }));

    let x = Var::from_tensor(&randn(&[tokens, hidden])?)?;
    let w = Var::from_tensor(&(randn(&[hidden])? * 0.1)?.affine(1.0, 1.0)?)?;
    bench.pair(
        "rms_norm",
        &format!("[{tokens}, {hidden}] bf16"),
        Box::new(|t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6)),
        Box::new(|t| reference::rms_norm(&t[0], &t[1], 1e-6)),
        &[&x, &w],
        &[],
    )?;
    // Qwen3's per-head q_norm: many short rows.
    let q = Var::from_tensor(&randn(&[tokens * heads, head_dim])?)?;
    let wq = Var::from_tensor(&randn(&[head_dim])?)?;
    bench.pair(
        "rms_norm",
        &format!("[{}, {head_dim}] bf16 (q_norm)", tokens * heads),
        Box::new(|t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6)),
        Box::new(|t| reference::rms_norm(&t[0], &t[1], 1e-6)),
        &[&q, &wq],
        &[],
    )?;
    let xr = Var::from_tensor(&randn(&[1, tokens, heads, head_dim])?)?;
    let angles = Tensor::randn(0f32, 1f32, (1, tokens, head_dim / 2), &device)?;
    bench.pair(
        "rope",
        &format!("[1, {tokens}, {heads}, {head_dim}] bf16"),
        Box::new(|t| forge_kernels::rope(&t[0], &t[1], &t[2])),
        Box::new(|t| reference::rope(&t[0], &t[1], &t[2])),
        &[&xr],
        &[angles.cos()?, angles.sin()?],
    )?;

    // The MLP's gate: Qwen3-8B's intermediate width, its largest activation.
    let intermediate = 12288;
    let gate = Var::from_tensor(&randn(&[tokens, intermediate])?)?;
    let up = Var::from_tensor(&randn(&[tokens, intermediate])?)?;
    bench.pair(
        "swiglu",
        &format!("[{tokens}, {intermediate}] bf16"),
        Box::new(|t| forge_kernels::swiglu(&t[0], &t[1])),
        Box::new(|t| reference::swiglu(&t[0], &t[1])),
        &[&gate, &up],
        &[],
    )?;

    // The loss over Qwen3's vocabulary (the logits of one 4k sequence).
    let vocab = 151936;
    let logits = Var::from_tensor(&randn(&[tokens, vocab])?)?;
    let targets = Tensor::arange(0u32, tokens as u32, &device)?;
    bench.pair(
        "cross_entropy",
        &format!("[{tokens}, {vocab}] bf16"),
        Box::new(|t| forge_kernels::cross_entropy_per_token(&t[0], &t[1])),
        Box::new(|t| reference::cross_entropy_per_token(&t[0], &t[1])),
        &[&logits],
        std::slice::from_ref(&targets),
    )?;

    // The LM head and its loss, chunked (1024 rows of logits at a time) against full logits.
    let hidden_states = Var::from_tensor(&randn(&[tokens, hidden])?)?;
    let lm_head = Var::from_tensor(&(randn(&[vocab, hidden])? * 0.02)?)?;
    bench.pair(
        "linear_cross_entropy",
        &format!("[{tokens}, {hidden}] x [{vocab}, {hidden}] bf16, chunk 1024"),
        Box::new(|t| forge_kernels::linear_cross_entropy_row_chunks(&t[0], &t[1], &t[2], 1024)),
        Box::new(|t| reference::cross_entropy_per_token(&t[0].matmul(&t[1].t()?)?, &t[2])),
        &[&hidden_states, &lm_head],
        std::slice::from_ref(&targets),
    )?;

    // One AdamW step with f32 moments and master weights, fused (one multi-tensor launch) against
    // the composite candle-op update (a dozen ops per tensor): over 8 bf16 matrices of 4096 x 4096
    // (134M parameters), and over the 310 tensors of a Qwen3-0.6B (many of them small norm weights,
    // where launches rather than bandwidth decide).
    let config = AdamWConfig { lr: 1e-4, weight_decay: 0.1, ..Default::default() };
    let matrices: Vec<(String, Vec<usize>)> = (0..8).map(|i| (format!("model.layers.{i}.mlp.up_proj.weight"), vec![4096, 4096])).collect();
    for (shape, tensors) in [("8 x [4096, 4096] bf16, f32 state + master", matrices), ("Qwen3-0.6B (310 tensors) bf16, f32 state + master", qwen3_0_6b_parameters())] {
        let params: Vec<(String, Var)> = tensors.iter().map(|(n, dims)| Ok((n.clone(), Var::from_tensor(&(randn(dims)? * 0.02)?)?))).collect::<Result<_>>()?;
        let grads: Gradients = params.iter().map(|(n, v)| Ok((n.clone(), (v.as_tensor().sin()? * 1e-2)?))).collect::<Result<_>>()?;
        for (name, composite) in [("fused", false), ("composite", true)] {
            let mut optimizer = AdamW::new(params.clone(), config.clone()).map_err(candle_core::Error::wrap)?;
            if composite {
                optimizer = optimizer.with_composite_update();
            }
            let seconds = median_seconds(&device, bench.warmup, bench.steps, || optimizer.step(&grads).map(drop).map_err(candle_core::Error::wrap))?;
            bench.report("adamw_step", shape, name, seconds);
        }
    }
    Ok(())
}

/// Names and shapes of Qwen3-0.6B's parameters (tied embeddings): 28 layers of 11 tensors, the
/// embedding and the final norm.
fn qwen3_0_6b_parameters() -> Vec<(String, Vec<usize>)> {
    let (hidden, intermediate, q, kv, head_dim, vocab) = (1024, 3072, 16 * 128, 8 * 128, 128, 151936);
    let mut params = vec![("model.embed_tokens.weight".to_string(), vec![vocab, hidden]), ("model.norm.weight".to_string(), vec![hidden])];
    for l in 0..28 {
        let p = |name: &str, dims: Vec<usize>| (format!("model.layers.{l}.{name}"), dims);
        params.extend([
            p("self_attn.q_proj.weight", vec![q, hidden]),
            p("self_attn.k_proj.weight", vec![kv, hidden]),
            p("self_attn.v_proj.weight", vec![kv, hidden]),
            p("self_attn.o_proj.weight", vec![hidden, q]),
            p("self_attn.q_norm.weight", vec![head_dim]),
            p("self_attn.k_norm.weight", vec![head_dim]),
            p("mlp.gate_proj.weight", vec![intermediate, hidden]),
            p("mlp.up_proj.weight", vec![intermediate, hidden]),
            p("mlp.down_proj.weight", vec![hidden, intermediate]),
            p("input_layernorm.weight", vec![hidden]),
            p("post_attention_layernorm.weight", vec![hidden]),
        ]);
    }
    params
}
