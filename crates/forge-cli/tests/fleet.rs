//! `forge eval swebench` over two Docker engines: this machine's and a second one the test starts
//! (its own dockerd, data root and network namespace, reached over TCP with TLS client
//! certificates: `scripts/fixtures/second-docker-engine.sh`). The bundled images reach the
//! second engine only by `docker save` → `docker load` from the first.
//!
//! Needs root, `ip` and `dockerd`: under `CI=true` their absence FAILS the test, elsewhere it is
//! skipped loudly (like every Docker test).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{docker_with_base_image, forge, repo, stderr};
use forge_sandbox::testing::SecondEngine;
use serde_json::Value;

fn summary(out_dir: &Path, run_id: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out_dir.join(format!("gold.{run_id}.json"))).unwrap()).unwrap()
}

fn engine<'a>(summary: &'a Value, endpoint: &str) -> &'a Value {
    summary["fleet"]["engines"].as_array().unwrap().iter().find(|e| e["endpoint"] == endpoint).unwrap_or_else(|| panic!("no engine {endpoint} in {summary}"))
}

#[test]
fn gold_over_two_engines_with_tls_image_transfer_and_an_engine_killed_mid_run() {
    let test = "fleet";
    if !docker_with_base_image(test) {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("forge-fleet-").tempdir_in("/tmp").unwrap();
    let Some(second) = SecondEngine::start(test, &tmp.path().join("engine2")) else { return };
    let dataset = repo().join("tasks/bundled.jsonl").display().to_string();
    let tasks = std::fs::read_to_string(&dataset).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    let out_dir = tmp.path().join("out");
    let out = out_dir.display().to_string();
    let local = "unix:///var/run/docker.sock";
    // the local engine takes one container at a time, so the others must go to the second
    let eval = |run_id: &str| -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_forge"));
        c.args(["eval", "swebench", "--dataset", &dataset, "--predictions", "gold", "--run-id", run_id, "--workers", "4", "--timeout", "300", "--output-dir", &out]);
        c.args(["--docker-host", &format!("{local},max_containers=1"), "--docker-host", &second.flag(3)]);
        c.env("RUST_LOG", "warn");
        c
    };

    // 1. every bundled task resolved, containers on both engines, images moved by save/load
    let started = Instant::now();
    let run = eval("both").output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let s = summary(&out_dir, "both");
    assert_eq!(s["resolved_instances"], tasks, "{s}");
    assert_eq!(s["error_instances"], 0, "{s}");
    let (on_local, on_second) = (engine(&s, local), engine(&s, &second.host));
    assert!(on_local["containers"].as_u64().unwrap() >= 1 && on_second["containers"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(on_local["containers"].as_u64().unwrap() + on_second["containers"].as_u64().unwrap(), tasks as u64, "one container per instance: {s}");
    assert!(on_local["peak_containers"].as_u64().unwrap() <= 1, "the local engine's bound held: {s}");
    assert!(on_second["image_transfers"].as_u64().unwrap() >= 1 && on_second["transfer_bytes"].as_u64().unwrap() > 0, "{s}");
    let ran_on: Vec<&str> = s["engines"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ran_on.len(), tasks);
    assert!(ran_on.contains(&local) && ran_on.contains(&second.host.as_str()), "{s}");
    assert!(second.sandboxes().is_empty(), "containers left on the second engine");
    assert!(second.docker(&["images", "-q"]).lines().count() >= 1, "the second engine holds the moved images");
    eprintln!("fleet: {tasks} instances over two engines in {:.1} s", started.elapsed().as_secs_f64());

    // 2. the second engine killed while instances run on it: they run again on the first
    let mut child = eval("killed").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while second.sandboxes().is_empty() {
        assert!(Instant::now() < deadline, "no container ever ran on the second engine");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before a container ran on the second engine");
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill();
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let s = summary(&out_dir, "killed");
    assert_eq!(s["resolved_instances"], tasks, "no instance lost: {s}");
    assert_eq!(s["error_instances"], 0, "{s}");
    assert!(engine(&s, &second.host)["failures"].as_u64().unwrap() >= 1, "the failure is counted: {s}");
    assert!(!engine(&s, &second.host)["up"].as_bool().unwrap(), "{s}");
    assert!(s["engine_reruns"].as_u64().unwrap() >= 1, "the instances in flight ran again: {s}");
    let last_on_second = s["engines"].as_object().unwrap().values().filter(|v| v.as_str() == Some(second.host.as_str())).count();
    assert!(last_on_second < tasks);

    // 3. no container left on either engine: the second engine comes back with what the kill
    // cut off, and the next forge command over both reaps the dead run's containers
    second.restart();
    let resume = eval("killed").output().unwrap();
    assert!(resume.status.success(), "{}", stderr(&resume));
    assert_eq!(summary(&out_dir, "killed")["resolved_instances"], tasks);
    assert!(second.sandboxes().is_empty(), "containers left on the second engine: {:?}", second.sandboxes());
    // other tests of the suite may run containers on the local engine now: this run's carry
    // the harness's run label
    let ours = Command::new("docker").args(["ps", "-aq", "--filter", "label=forge.swe.run=killed"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ours.stdout).trim().is_empty(), "containers of the killed run left on the local engine");
}

#[test]
fn a_fleet_whose_engines_are_all_down_is_refused_naming_each() {
    let dataset = repo().join("tasks/bundled.jsonl").display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = forge(&[
        "eval", "swebench", "--dataset", &dataset, "--predictions", "gold", "--run-id", "down", "--output-dir", &tmp.path().display().to_string(),
        "--docker-host", "tcp://127.0.0.1:1", "--docker-host", "unix:///nonexistent/docker.sock",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("every Docker engine") && err.contains("tcp://127.0.0.1:1") && err.contains("/nonexistent/docker.sock"), "{err}");
    let bad = forge(&["eval", "swebench", "--dataset", &dataset, "--predictions", "gold", "--run-id", "bad", "--docker-host", "tcp://h:1,gpus=8"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown engine setting"), "{}", stderr(&bad));
}
