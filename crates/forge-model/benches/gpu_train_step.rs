//! One training step (forward + backward, no optimizer) of a Qwen3-0.6B, -1.7B or -8B shaped model
//! with random bf16 weights on the GPU: the shape `scripts/bench/bench_torch.py --device cuda` measures
//! with PyTorch + transformers on the same GPU. scripts/gpu/gpu-check.sh runs both side by side.
//!
//! `cargo bench -p forge-model --features cuda --bench gpu_train_step -- --model 8b [--seq 4096]
//!  [--batch 1] [--recompute] [--warmup 1] [--steps 5] [--profile-step]` prints one JSON line; with
//!  `--profile-step` it then runs one more step between cuProfilerStart/Stop (for
//!  `ncu --profile-from-start off`: scripts/gpu/gpu-check.sh profile).

mod gpu_common;

use candle_core::{DType, Tensor};
use forge_kernels::testing::{arg, device_mem_used_mib, median_seconds, profiled, require_cuda};
use forge_model::Batch;
use gpu_common::{qwen3_config, random_bf16_model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let Some(device) = require_cuda("gpu_train_step bench") else { return Ok(()) };
    let model_name: String = arg(&args, "--model", "0.6b".to_string());
    let recompute = args.iter().any(|a| a == "--recompute");
    let (warmup, steps) = (arg(&args, "--warmup", 1usize), arg(&args, "--steps", 5usize));
    let (batch, seq) = (arg(&args, "--batch", 1usize), arg(&args, "--seq", 4096usize));

    let config = qwen3_config(&model_name)?;
    let used_before = device_mem_used_mib();
    let model = random_bf16_model(&config, &device)?;
    let ids: Vec<u32> = (0..batch * seq).map(|i| ((i * 2654435761usize) % config.vocab_size) as u32).collect();
    let input_ids = Tensor::from_vec(ids, (batch, seq), &device)?;
    let step = Batch { labels: Some(input_ids.to_dtype(DType::I64)?), input_ids, attention_mask: None, position_ids: None };

    let (mut loss, mut used_peak) = (0.0, 0f64);
    let median = median_seconds(&device, warmup, steps, || {
        let (l, grads) = model.loss_and_gradients(&step, recompute).map_err(candle_core::Error::wrap)?;
        device.synchronize()?;
        used_peak = used_peak.max(device_mem_used_mib());
        drop(grads);
        loss = l;
        Ok(())
    })?;
    let report = serde_json::json!({
        "impl": "forge",
        "model": model_name,
        "dtype": "bf16",
        "recompute": recompute,
        "params": config.num_parameters(),
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "head_dim": config.head_dim,
        "batch": batch,
        "seq": seq,
        "tokens_per_step": batch * seq,
        "step_s_median": median,
        "tokens_per_s": (batch * seq) as f64 / median,
        "device_mem_used_after_step_mib": used_peak,
        "device_mem_used_before_model_mib": used_before,
        "loss": loss,
    });
    println!("{report}");
    if args.iter().any(|a| a == "--profile-step") {
        profiled(&device, || model.loss_and_gradients(&step, recompute).map(drop).map_err(candle_core::Error::wrap))?;
    }
    Ok(())
}
