//! The fused flash attention (kernels/flash_attn.cu) on the GPU at Qwen3-8B's attention shape (32
//! query heads, 8 K/V heads, head_dim 128, causal, one sequence), forward and backward, at 4k, 8k
//! and 32k tokens; the composite matmul path (`forge_kernels::attention` with an additive causal
//! mask) at the same shapes, which is also the memory check (it may run out of memory where the
//! fused op fits); and the bf16 matmul rate. Run by `scripts/gpu/gpu-check.sh flash` beside
//! scripts/gpu/bench_flash_torch.py.
//!
//! `cargo bench -p forge-kernels --features cuda --bench gpu_flash -- [--warmup 2] [--steps 10]
//! [--seqs 4096,8192,32768]` prints one JSON line per measurement. FLOPs follow the usual
//! flash-attention convention: causal forward 2·s²·h·d (two products over half the score matrix),
//! backward 2.5× that (five products; this implementation actually does seven, see FLASH.md).

use candle_core::{DType, Device, Result, Tensor, Var};
use forge_kernels::testing::{arg, arg_list, bf16_matmul_rate, device_mem_used_mib, json_line, median_seconds, quoted, require_cuda};

struct Shape {
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Forward alone, then forward + backward (w.r.t. q, k, v) of `f`; prints both, or the error (out of
/// memory, typically) of the first call that fails.
fn measure(
    device: &Device,
    implementation: &str,
    shape: &Shape,
    warmup: usize,
    steps: usize,
    f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    let Shape { seq, heads, kv_heads, head_dim } = *shape;
    let label = format!("[1, {seq}, {heads} ({kv_heads} kv), {head_dim}] bf16 causal");
    let report = |pass: &str, seconds: std::result::Result<(f64, f64), String>, flops: f64| {
        let mut fields = vec![("bench", quoted("flash_attention")), ("pass", quoted(pass)), ("impl", quoted(implementation)), ("seq", seq.to_string()), ("shape", quoted(&label))];
        match seconds {
            Ok((s, mem)) => {
                fields.push(("median_ms", format!("{:.4}", s * 1e3)));
                fields.push(("tflops", format!("{:.2}", flops / s / 1e12)));
                fields.push(("device_mem_used_mib", format!("{mem:.0}")));
            }
            Err(e) => fields.push(("error", quoted(&e))),
        }
        println!("{}", json_line(&fields));
    };
    let randn = |heads: usize| -> Result<Var> { Var::from_tensor(&Tensor::randn(0f32, 1f32, (1, seq, heads, head_dim), device)?.to_dtype(DType::BF16)?) };
    let fwd_flops = 2.0 * (seq as f64).powi(2) * heads as f64 * head_dim as f64;
    let inputs = (|| -> Result<(Var, Var, Var)> { Ok((randn(heads)?, randn(kv_heads)?, randn(kv_heads)?)) })();
    let (q, k, v) = match inputs {
        Ok(t) => t,
        Err(e) => {
            report("forward", Err(e.to_string()), fwd_flops);
            return Ok(());
        }
    };
    let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
    let mut mem = f64::NAN;
    let forward = median_seconds(device, warmup, steps, || {
        let out = f(qt, kt, vt)?;
        mem = device_mem_used_mib();
        drop(out);
        Ok(())
    });
    let forward = match forward {
        Ok(s) => s,
        Err(e) => {
            report("forward", Err(e.to_string()), fwd_flops);
            return Ok(());
        }
    };
    report("forward", Ok((forward, mem)), fwd_flops);
    let both = median_seconds(device, warmup, steps, || {
        let out = f(qt, kt, vt)?;
        let grads = out.sum_all()?.backward()?;
        mem = device_mem_used_mib();
        for var in [&q, &k, &v] {
            grads.get(var.as_tensor()).expect("every input takes a gradient");
        }
        Ok(())
    });
    match both {
        // the backward alone: forward + backward minus the forward
        Ok(s) => report("backward", Ok(((s - forward).max(1e-9), mem)), 2.5 * fwd_flops),
        Err(e) => report("backward", Err(e.to_string()), 2.5 * fwd_flops),
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let Some(device) = require_cuda("gpu_flash bench") else { return Ok(()) };
    let (warmup, steps) = (arg(&args, "--warmup", 2usize), arg(&args, "--steps", 10usize));
    let seqs = arg_list(&args, "--seqs", "4096,8192,32768");

    let n = 8192;
    let (seconds, tflops) = bf16_matmul_rate(&device, n)?;
    println!(
        "{}",
        json_line(&[
            ("bench", quoted("matmul_bf16")),
            ("impl", quoted("candle (cuBLAS)")),
            ("shape", quoted(&format!("{n}x{n}x{n}"))),
            ("median_ms", format!("{:.4}", seconds * 1e3)),
            ("tflops", format!("{tflops:.1}")),
        ])
    );

    let (heads, kv_heads, head_dim) = (32, 8, 128);
    let scale = 1.0 / (head_dim as f64).sqrt();
    for &seq in &seqs {
        let shape = Shape { seq, heads, kv_heads, head_dim };
        // fewer repetitions where one step takes seconds
        let (w, s) = if seq > 16384 { (1, 3.min(steps)) } else { (warmup, steps) };
        measure(&device, "forge fused", &shape, w, s, &|q, k, v| forge_kernels::causal_attention_padded(q, k, v, &[seq], scale))?;
    }
    // The composite path last: at 32k it is expected to run out of memory (the memory check).
    for &seq in &seqs {
        let shape = Shape { seq, heads, kv_heads, head_dim };
        let (w, s) = if seq > 16384 { (0, 1) } else { (1, 3.min(steps)) };
        measure(&device, "forge matmul path", &shape, w, s, &|q, k, v| {
            // [1, s, h, d] -> [1, h, s, d], the additive causal mask built on the device
            let mask = Tensor::tril2(seq, DType::F32, q.device())?;
            let bias = ((mask - 1.0)? * f64::from(half::bf16::MAX))?.to_dtype(DType::BF16)?.reshape((1, 1, seq, seq))?;
            let t = |x: &Tensor| x.transpose(1, 2);
            forge_kernels::attention(&t(q)?, &t(k)?, &t(v)?, Some(&bias), scale)?.transpose(1, 2)
        })?;
    }
    Ok(())
}
