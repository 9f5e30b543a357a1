//! Maintenance tool of the bundled task set (the `forge` CLI exposes the user-facing commands).
//!
//! `forge-swe-tasks build [TASKS_DIR]`     build the task images (idempotent) and check the dataset
//! `forge-swe-tasks generate [TASKS_DIR]`  rebuild and rewrite TASKS_DIR/bundled.jsonl (runs tests)
//! `forge-swe-tasks validate [TASKS_DIR]`  eval-readiness of every bundled task
//! `forge-swe-tasks bench [TASKS_DIR]`     gold evaluation with 1, 2, 4 workers; image sizes

use std::path::PathBuf;

use forge_sandbox::Runtime;
use forge_swe::bundled;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("build");
    let dir = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(bundled::default_tasks_dir);
    if let Err(e) = run(cmd, &dir).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cmd: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::connect().await?;
    match cmd {
        "build" => {
            let insts = bundled::prepare(&rt, dir).await?;
            let mut images: Vec<String> = insts.iter().filter_map(|i| i.image.clone()).collect();
            images.dedup();
            for img in images {
                let info = rt.image_info(&img).await?;
                println!("{img}\t{} bytes", info.size_bytes);
            }
            println!(
                "{} instances ready ({})",
                insts.len(),
                bundled::dataset_path(dir).display()
            );
        }
        "generate" => {
            let insts = bundled::generate(&rt, dir).await?;
            for i in &insts {
                println!(
                    "{}\tF2P {}\tP2P {}",
                    i.instance_id,
                    i.fail_to_pass.len(),
                    i.pass_to_pass.len()
                );
            }
        }
        "validate" => {
            let insts = bundled::prepare(&rt, dir).await?;
            let opts = forge_swe::ExecOptions::default();
            let res = forge_swe::validate_tasks(&rt, &insts, &opts, 2).await;
            let mut bad = 0;
            for v in &res {
                println!(
                    "{}\t{}\t{}",
                    v.instance_id,
                    if v.ok { "ok" } else { "FAIL" },
                    v.problems.join("; ")
                );
                bad += usize::from(!v.ok);
            }
            if bad > 0 {
                return Err(format!("{bad} task(s) not eval-ready").into());
            }
        }
        "bench" => {
            // Gold predictions on the bundled set with 1, 2 and 4 workers (fresh output dirs).
            let insts = bundled::prepare(&rt, dir).await?;
            let base = rt.image_info(&bundled::base_image()).await?.size_bytes;
            let runtime = rt
                .image_info(&bundled::ensure_runtime_base(&rt).await?)
                .await?
                .size_bytes;
            let mut per_image: std::collections::BTreeMap<String, usize> = Default::default();
            for i in &insts {
                *per_image
                    .entry(i.image.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            let mut layers = 0i64;
            for img in per_image.keys() {
                layers += rt.image_info(img).await?.size_bytes - runtime;
            }
            let mb = |b: i64| b as f64 / 1e6;
            let shared = mb(runtime);
            let n = insts.len() as f64;
            println!(
                "storage: {} project images for {} instances; shared: base {:.1} MB + byte-compiled layer {:.1} MB; \
                 project layers {:.3} MB in all ({:.4} MB per instance); total {:.1} MB = {:.2} MB per instance \
                 vs {:.1} MB per instance with one full image each",
                per_image.len(), insts.len(), mb(base), mb(runtime - base), mb(layers), mb(layers) / n,
                shared + mb(layers), (shared + mb(layers)) / n, shared + mb(layers) / per_image.len() as f64
            );
            for workers in [1usize, 2, 4] {
                let out = std::env::temp_dir()
                    .join(format!("forge-swe-bench-{}-{workers}", std::process::id()));
                let mut o = forge_swe::EvalOptions::new(
                    bundled::dataset_path(dir),
                    forge_swe::PredictionsSource::Gold,
                    &format!("bench-{workers}"),
                );
                o.workers = workers;
                o.output_root = out.clone();
                let s = forge_swe::run_evaluation(&o).await?;
                println!(
                    "workers {workers}: {} instances, {} resolved, {:.1} s wall, {:.2} s/instance, {:.1} instances/min",
                    s.submitted_instances, s.resolved_instances, s.wall_seconds,
                    s.wall_seconds / s.submitted_instances as f64,
                    60.0 * s.submitted_instances as f64 / s.wall_seconds
                );
                println!("  outputs: {}", out.display());
            }
        }
        other => {
            return Err(format!(
                "unknown command {other:?}: use build, generate, validate or bench"
            )
            .into())
        }
    }
    Ok(())
}
