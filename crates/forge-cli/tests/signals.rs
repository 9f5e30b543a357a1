//! No `forge` command leaks its containers: Ctrl-C (SIGINT) of `forge eval swebench` mid-run
//! removes its grading containers before the process exits with 130; after SIGKILL, which no
//! process can handle, the next forge command that starts containers removes the dead process's
//! containers (their owner labels name a pid that is gone) before it starts its own.
//!
//! Needs the Docker Engine and `forge/base:py3` (scripts/setup/build-base-image.sh); under CI=true a
//! missing one fails these tests, elsewhere they are skipped loudly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{docker_with_base_image, repo, stderr};

/// Ids of the containers (running or not) owned by process `pid` of this host.
fn containers_of(pid: u32) -> Vec<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=forge.owner={host}:{pid}")]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

/// `forge eval swebench` grading the gold patches of every bundled task, one at a time (a run of
/// minutes: it is interrupted long before its end).
fn start_eval(out: &std::path::Path, run_id: &str) -> Child {
    let dataset = repo().join("tasks/bundled.jsonl");
    Command::new(env!("CARGO_BIN_EXE_forge"))
        .args(["eval", "swebench", "--dataset", dataset.to_str().unwrap(), "--predictions", "gold", "--run-id", run_id, "--workers", "1"])
        .args(["--output-dir", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("forge runs")
}

/// Waits until process `pid` has a container of its own.
fn wait_for_a_container(child: &mut Child) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ids = containers_of(child.id());
        if !ids.is_empty() {
            return ids;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("forge eval ended ({status}) before it started a container");
        }
        assert!(Instant::now() < deadline, "no container after 600 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigint_of_forge_eval_removes_its_containers_and_after_sigkill_the_next_command_reaps_them() {
    if !docker_with_base_image("sigint_of_forge_eval_removes_its_containers_and_after_sigkill_the_next_command_reaps_them") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // SIGINT mid-run: the containers go with the process, which exits with 128 + SIGINT
    let mut eval = start_eval(tmp.path(), "interrupted");
    let pid = eval.id();
    wait_for_a_container(&mut eval);
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let out = eval.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted; removing"), "{}", stderr(&out));
    assert_eq!(containers_of(pid), Vec::<String>::new(), "containers left after SIGINT");

    // SIGKILL mid-run: its container stays behind until the next forge command that starts
    // containers (here a one-call sandbox replay) reaps it
    let mut eval = start_eval(tmp.path(), "killed");
    let pid = eval.id();
    wait_for_a_container(&mut eval);
    eval.kill().unwrap();
    eval.wait().unwrap();
    assert!(!containers_of(pid).is_empty(), "SIGKILL cannot be handled: the container outlives the process");
    let calls = tmp.path().join("calls.jsonl");
    std::fs::write(&calls, "{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"true\"}}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_forge")).args(["sandbox", "replay", "--calls", calls.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(containers_of(pid), Vec::<String>::new(), "the next forge command did not reap the killed run's container");
}
