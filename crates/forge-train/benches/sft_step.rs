//! One SFT optimizer step on CPU (forward, backward, clipping, fused AdamW) for the tiny config
//! and a ~50M-parameter Qwen3; `scripts/bench/bench_sft_torch.py` measures PyTorch on the same shapes
//! (`scripts/bench/bench-sft.sh` runs both side by side). Prints one JSON line.
//!
//! With `--workers N` the step is data-parallel: N worker processes (this program, started as
//! `forge train sft --nproc-per-node N` starts them), each with its own batch, gradients averaged
//! over the workers' TCP link; rank 0 prints the line, with the time spent averaging.
//! `scripts/bench/bench-data-parallel.sh` compares that with PyTorch DDP (gloo).
//!
//! With `--zero-stage S` the training state is sharded across the workers (ZeRO: 1 optimizer
//! state, 2 + reduced gradients, 3 + weights, which needs `--recompute`); the line carries this
//! worker's optimizer-state, reduced-gradient and weight bytes beside its peak RSS:
//! `scripts/bench/bench-zero.sh` sweeps the stages.
//!
//! `cargo bench -p forge-train --bench sft_step -- --model tiny|50m [--batch 2] [--seq 512] [--steps 10] [--workers N] [--zero-stage S] [--recompute]`

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use forge_model::{Batch, Config, ParamStore, Qwen3ForCausalLM};
use forge_train::distributed::launch;
use forge_train::{AdamWConfig, DistributedAdamW, ProcessGroup, Reduction, ShardedParams, Topology, ZeroStage};

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    forge_model::forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    let model_name = arg(&args, "--model").unwrap_or("tiny");
    let num = |name: &str, default: usize| arg(&args, name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (batch, seq, warmup, steps) = (num("--batch", 2), num("--seq", 512), num("--warmup", 2), num("--steps", 10));
    let workers = num("--workers", 1);
    let plan = launch::LaunchPlan::local(workers);
    if plan.wants_launch() {
        launch::run_workers(&plan)?;
        return Ok(());
    }
    let group = Arc::new(ProcessGroup::for_topology(Topology::from_env()?.as_ref(), &Device::Cpu)?);
    let config_json = match model_name {
        "tiny" => std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tiny/qwen3-tiny.json"))?,
        "50m" => r#"{"model_type": "qwen3", "vocab_size": 8192, "hidden_size": 768, "intermediate_size": 2048,
                     "num_hidden_layers": 6, "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 64,
                     "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
                     "max_position_embeddings": 4096}"#
            .to_string(),
        other => return Err(format!("unknown --model {other}: use tiny or 50m").into()),
    };
    let config = Config::from_json(&config_json)?;
    let rss_before = rss_mib("VmRSS:");
    let params = ParamStore::random(&config, 0.02, 0, DType::F32, &Device::Cpu)?;
    let zero_stage = ZeroStage::try_from(num("--zero-stage", 0) as u8)?;
    let recompute = args.iter().any(|a| a == "--recompute");
    zero_stage.check(recompute, false)?;
    let adamw = AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01, max_grad_norm: Some(1.0), pure_bf16: false };
    // at stage 3 the workers keep their rows of the weights and the model gathers each layer
    let (model, mut optimizer, weight_bytes) = if zero_stage.shards_parameters() && group.world_size() > 1 {
        let shards = Arc::new(ShardedParams::from_full(params, group.clone())?);
        let optimizer = DistributedAdamW::for_shards(&shards, adamw)?;
        let held = shards.owned_bytes();
        (Qwen3ForCausalLM::sharded(config.clone(), shards, DType::F32, &Device::Cpu)?, optimizer, held)
    } else {
        let model = Qwen3ForCausalLM::new(config.clone(), params)?;
        let optimizer = DistributedAdamW::new(model.params(), adamw, zero_stage, &group)?;
        let held = model.params().iter().map(|(_, v)| v.elem_count() * 4).sum();
        (model, optimizer, held)
    };
    let offset = group.rank() * batch * seq;
    let ids: Vec<u32> = (offset..offset + batch * seq).map(|i| ((i * 2654435761usize) % config.vocab_size) as u32).collect();
    let input_ids = Tensor::from_vec(ids, (batch, seq), &Device::Cpu)?;
    let step = Batch { labels: Some(input_ids.to_dtype(DType::I64)?), input_ids, attention_mask: None, position_ids: None };
    let (mut times, mut reduce_times, mut gradient_bytes) = (Vec::new(), Vec::new(), 0);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let (_, grads) = model.loss_and_gradients(&step, recompute)?;
        let reduce_start = Instant::now();
        let mut gradients = optimizer.begin_step()?;
        gradients.add(&group, grads)?;
        let grads = optimizer.reduce(&group, gradients, Reduction::Mean)?;
        let reduce_s = reduce_start.elapsed().as_secs_f64();
        gradient_bytes = grads.bytes();
        optimizer.step(&group, &grads)?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
            reduce_times.push(reduce_s);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (step_s, reduce_s) = (median(times), median(reduce_times));
    let tokens = batch * seq * group.world_size();
    if group.is_main() {
        println!(
            "{}",
            serde_json::json!({
                "impl": "forge", "model": model_name, "threads": rayon::current_num_threads(), "workers": group.world_size(),
                "params": config.num_parameters(), "tokens_per_step": tokens,
                "step_s_median": step_s, "tokens_per_s": tokens as f64 / step_s, "all_reduce_s_median": reduce_s,
                "peak_rss_mib": rss_mib("VmHWM:"), "rss_before_model_mib": rss_before,
                "zero_stage": zero_stage.number(), "recompute": recompute, "optimizer_state_bytes": optimizer.state_bytes(),
                "reduced_gradient_bytes": gradient_bytes, "weight_bytes": weight_bytes,
            })
        );
    }
    Ok(())
}
