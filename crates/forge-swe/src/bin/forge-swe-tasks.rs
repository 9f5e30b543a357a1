//! Maintenance tool of the bundled task set (the `forge` CLI exposes the user-facing commands).
//!
//! `forge-swe-tasks build [TASKS_DIR]`     build the task images (idempotent) and check the dataset
//! `forge-swe-tasks generate [TASKS_DIR]`  rebuild and rewrite TASKS_DIR/bundled.jsonl (runs tests)
//! `forge-swe-tasks validate [TASKS_DIR]`  eval-readiness of every bundled task

use std::path::PathBuf;

use forge_sandbox::Runtime;
use forge_swe::bundled;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("build");
    let dir = args.get(2).map(PathBuf::from).unwrap_or_else(bundled::default_tasks_dir);
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
            println!("{} instances ready ({})", insts.len(), bundled::dataset_path(dir).display());
        }
        "generate" => {
            let insts = bundled::generate(&rt, dir).await?;
            for i in &insts {
                println!("{}\tF2P {}\tP2P {}", i.instance_id, i.fail_to_pass.len(), i.pass_to_pass.len());
            }
        }
        "validate" => {
            let insts = bundled::prepare(&rt, dir).await?;
            let opts = forge_swe::ExecOptions::default();
            let res = forge_swe::validate_tasks(&rt, &insts, &opts, 2).await;
            let mut bad = 0;
            for v in &res {
                println!("{}\t{}\t{}", v.instance_id, if v.ok { "ok" } else { "FAIL" }, v.problems.join("; "));
                bad += usize::from(!v.ok);
            }
            if bad > 0 {
                return Err(format!("{bad} task(s) not eval-ready").into());
            }
        }
        other => return Err(format!("unknown command {other:?}: use build, generate or validate").into()),
    }
    Ok(())
}
