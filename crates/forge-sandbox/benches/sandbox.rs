//! Sandbox latency bench (a plain binary: Docker round trips, not CPU loops, so no criterion).
//!
//!   cargo bench -p forge-sandbox --bench sandbox [-- --calls 500 --cli-calls 100 --containers 20]
//!
//! Measures, in one run and against the same container:
//! - `execute_bash("true")` round trip through our runtime (persistent shell over one attached exec),
//! - a one-shot exec through bollard (create + start + inspect exec),
//! - spawning the `docker exec <id> true` CLI per command (the reference),
//! - container create + start (+ shell) and remove latency, and the base image size.
//!
//! Prints a Markdown report (paste into benches/results/sandbox.md).

use std::time::{Duration, Instant};

use forge_sandbox::{Runtime, SandboxSpec, DEFAULT_IMAGE};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Stat {
    name: String,
    n: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stat(name: &str, mut v: Vec<Duration>) -> Stat {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    Stat {
        name: name.into(),
        n: v.len(),
        p50: pct(&v, 0.5),
        p99: pct(&v, 0.99),
        mean,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = arg("--calls", 500);
    let cli_calls = arg("--cli-calls", 100);
    let containers = arg("--containers", 20);
    let image = std::env::var("FORGE_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into());
    let rt = match Runtime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("sandbox bench needs Docker: {e}");
            }
            eprintln!("!!!!! sandbox bench SKIPPED: {e}");
            return;
        }
    };
    let info = match rt.image_info(&image).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("!!!!! sandbox bench SKIPPED: {e}");
            return;
        }
    };
    let spec = SandboxSpec::new(&image).label("forge.purpose", "bench");
    let mut sb = rt.create(&spec).await.expect("create sandbox");

    // warm up
    for _ in 0..20 {
        sb.execute_bash("true", None).await.unwrap();
    }
    let mut ours = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let o = sb.execute_bash("true", None).await.unwrap();
        ours.push(t.elapsed());
        assert_eq!(o.exit_code, Some(0));
    }
    let mut oneshot = Vec::with_capacity(cli_calls);
    for _ in 0..cli_calls {
        let t = Instant::now();
        let o = sb.exec(&["true"], None).await.unwrap();
        oneshot.push(t.elapsed());
        assert_eq!(o.exit_code, Some(0));
    }
    let mut cli = Vec::with_capacity(cli_calls);
    for _ in 0..cli_calls {
        let t = Instant::now();
        let st = tokio::process::Command::new("docker")
            .args(["exec", sb.id(), "true"])
            .status()
            .await
            .expect("spawn docker CLI");
        cli.push(t.elapsed());
        assert!(st.success());
    }
    sb.remove().await.unwrap();

    let mut create = Vec::new();
    let mut remove = Vec::new();
    for _ in 0..containers {
        let t = Instant::now();
        let mut s = rt.create(&spec).await.unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        s.remove().await.unwrap();
        remove.push(t.elapsed());
    }
    let total: Vec<Duration> = create.iter().zip(&remove).map(|(a, b)| *a + *b).collect();

    let ours = stat(
        "execute_bash(\"true\") via forge-sandbox (persistent shell)",
        ours,
    );
    let oneshot = stat(
        "one-shot exec `true` via bollard (create+start+inspect)",
        oneshot,
    );
    let cli = stat(
        "`docker exec <id> true` CLI spawn per command (reference)",
        cli,
    );
    println!("| measurement | n | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    for s in [
        &ours,
        &oneshot,
        &cli,
        &stat("container create+start (+shell ready)", create),
        &stat("container remove (force)", remove),
        &stat("create+start+remove total", total),
    ] {
        println!(
            "| {} | {} | {} | {} | {} |",
            s.name,
            s.n,
            ms(s.p50),
            ms(s.p99),
            ms(s.mean)
        );
    }
    println!(
        "\nspeed-up of execute_bash over the CLI spawn: p50 {:.1}x, p99 {:.1}x",
        cli.p50.as_secs_f64() / ours.p50.as_secs_f64(),
        cli.p99.as_secs_f64() / ours.p99.as_secs_f64()
    );
    println!(
        "base image {image}: {} bytes ({:.1} MiB)",
        info.size_bytes,
        info.size_bytes as f64 / (1 << 20) as f64
    );
}
