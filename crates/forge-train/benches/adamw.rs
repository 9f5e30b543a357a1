//! One AdamW step over ~21M f32 parameters on CPU: forge-train's fused kernel (all threads and
//! one thread), its composite candle-op path, and candle-nn's `AdamW`, in the same process.
//!
//! `cargo bench -p forge-train --bench adamw -- [--tensors 10] [--rows 1024] [--cols 2048] [--warmup 2] [--steps 10]`
//! prints one JSON line per optimizer and a summary line.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{Optimizer, ParamsAdamW};
use forge_model::Gradients;
use forge_train::{AdamW, AdamWConfig};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn params(count: usize, rows: usize, cols: usize) -> Vec<(String, Var)> {
    (0..count)
        .map(|i| {
            let data: Vec<f32> = (0..rows * cols).map(|j| ((i * 31 + j) as f32 * 1e-3).sin() * 0.02).collect();
            let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
            (format!("model.layers.{i}.mlp.up_proj.weight"), Var::from_tensor(&t).unwrap())
        })
        .collect()
}

fn grads(params: &[(String, Var)]) -> Gradients {
    params
        .iter()
        .map(|(n, v)| {
            let g = (v.as_tensor().sin().unwrap() * 1e-2).unwrap();
            (n.clone(), g)
        })
        .collect()
}

/// Median and mean seconds of `steps` calls after `warmup`.
fn time(warmup: usize, steps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        let start = Instant::now();
        f();
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], mean)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // cargo's bench discovery
    }
    let (count, rows, cols) = (arg(&args, "--tensors", 10), arg(&args, "--rows", 1024), arg(&args, "--cols", 2048));
    let (warmup, steps) = (arg(&args, "--warmup", 2), arg(&args, "--steps", 10));
    let numel = count * rows * cols;
    let config = AdamWConfig { lr: 1e-4, weight_decay: 0.1, ..Default::default() };
    let threads = rayon::current_num_threads();
    let mut results = Vec::new();
    let mut report = |name: &str, (median, mean): (f64, f64), bytes_per_param: usize| {
        let line = serde_json::json!({
            "bench": "adamw_step", "optimizer": name, "params": numel, "tensors": count,
            "median_ms": median * 1e3, "mean_ms": mean * 1e3,
            "params_per_s": numel as f64 / median,
            "effective_gb_per_s": (numel * bytes_per_param) as f64 / median / 1e9,
            "steps": steps, "rayon_threads": threads,
        });
        println!("{line}");
        results.push((name.to_string(), median));
    };

    // forge-train fused: reads p, g, m, v and writes p, m, v (28 bytes per parameter).
    {
        let p = params(count, rows, cols);
        let g = grads(&p);
        let mut opt = AdamW::new(p, config.clone())?;
        report("forge_fused", time(warmup, steps, || { opt.step(&g).unwrap(); }), 28);
    }
    {
        let p = params(count, rows, cols);
        let g = grads(&p);
        let mut opt = AdamW::new(p, config.clone())?;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        report("forge_fused_1thread", time(warmup, steps, || pool.install(|| { opt.step(&g).unwrap(); })), 28);
    }
    {
        let p = params(count, rows, cols);
        let g = grads(&p);
        let mut opt = AdamW::new(p, config.clone())?.with_composite_update();
        report("forge_composite", time(warmup, steps, || { opt.step(&g).unwrap(); }), 28);
    }
    {
        let p = params(count, rows, cols);
        let g = grads(&p);
        let mut store = GradStore::default();
        for (name, var) in &p {
            store.insert(var.as_tensor(), g[name].clone());
        }
        let vars: Vec<Var> = p.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = candle_nn::AdamW::new(
            vars,
            ParamsAdamW { lr: config.lr, beta1: config.beta1, beta2: config.beta2, eps: config.eps, weight_decay: config.weight_decay },
        )?;
        report("candle_nn_adamw", time(warmup, steps, || opt.step(&store).unwrap()), 28);
    }
    let fused = results[0].1;
    let candle = results.iter().find(|(n, _)| n == "candle_nn_adamw").map(|(_, t)| *t).unwrap_or(f64::NAN);
    println!("{}", serde_json::json!({"bench": "adamw_step", "summary": "speedup of forge_fused over candle_nn_adamw", "speedup": candle / fused}));
    Ok(())
}
