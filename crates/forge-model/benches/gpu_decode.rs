//! Decoding with a Qwen3-0.6B, -1.7B or -8B shaped model (random bf16 weights) on the GPU: `batch`
//! sequences prefilled with `context` tokens (in chunks of `--chunk` rows per sequence), then
//! `new_tokens` greedy single-token steps over the GPU KV caches (prefill chunks attended by
//! kernels/flash_attn.cu's `flash_fwd_cached`, decode steps by kernels/decode_attn.cu). The same
//! loop runs in PyTorch + transformers (`scripts/bench/bench_decode_torch.py --arch`); scripts/gpu/gpu-check.sh
//! runs both side by side.
//!
//! `cargo bench -p forge-model --features cuda --bench gpu_decode -- --model 8b [--context 4096]
//!  [--batch 8] [--new-tokens 64] [--chunk 2048]` prints one JSON line.

mod gpu_common;

use std::time::Instant;

use candle_core::D;
use forge_kernels::testing::{arg, device_mem_used_mib, require_cuda};
use forge_model::SequenceStep;
use gpu_common::{qwen3_config, random_bf16_model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let Some(device) = require_cuda("gpu_decode bench") else { return Ok(()) };
    let model_name: String = arg(&args, "--model", "0.6b".to_string());
    let (context, batch) = (arg(&args, "--context", 4096usize), arg(&args, "--batch", 8usize));
    let (new_tokens, chunk) = (arg(&args, "--new-tokens", 64usize), arg(&args, "--chunk", 2048usize));

    let config = qwen3_config(&model_name)?;
    let used_before = device_mem_used_mib();
    let model = random_bf16_model(&config, &device)?;
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|b| (0..context).map(|i| ((i * 2654435761 + b * 40503) % config.vocab_size) as u32).collect()).collect();
    let greedy = |logits: candle_core::Tensor| -> candle_core::Result<Vec<u32>> { logits.argmax(D::Minus1)?.to_vec1::<u32>() };

    // warm-up: the kernels' modules load on first use
    {
        let mut cache = model.new_kv_cache(16)?;
        model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &prompts[0][..8] }])?;
        model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &prompts[0][8..9] }])?;
        device.synchronize()?;
    }

    let mut caches = (0..batch).map(|_| model.new_kv_cache(context + new_tokens)).collect::<Result<Vec<_>, _>>()?;
    assert!(caches[0].on_device(), "the caches of a GPU model live on the GPU");
    let started = Instant::now();
    let mut next = Vec::new();
    for start in (0..context).step_by(chunk) {
        let end = (start + chunk).min(context);
        let mut steps: Vec<SequenceStep> = caches.iter_mut().zip(&prompts).map(|(cache, p)| SequenceStep { cache, tokens: &p[start..end] }).collect();
        next = greedy(model.forward_step(&mut steps)?)?;
    }
    let prefill_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for _ in 0..new_tokens {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut steps: Vec<SequenceStep> = caches.iter_mut().zip(&tokens).map(|(cache, t)| SequenceStep { cache, tokens: t }).collect();
        next = greedy(model.forward_step(&mut steps)?)?;
    }
    let decode_s = started.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "impl": "forge",
        "model": model_name,
        "dtype": "bf16",
        "params": config.num_parameters(),
        "batch": batch,
        "context": context,
        "new_tokens": new_tokens,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": (batch * context) as f64 / prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": (batch * new_tokens) as f64 / decode_s,
        "device_mem_used_after_decode_mib": device_mem_used_mib(),
        "device_mem_used_before_model_mib": used_before,
    });
    println!("{report}");
    Ok(())
}
