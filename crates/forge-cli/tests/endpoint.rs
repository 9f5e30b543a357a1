//! `forge eval swebench --endpoint` end to end: the built `forge serve` on a free port, the agent
//! on a bundled task in a real container with its policy over HTTP, and the same run with
//! `--model`: greedy, the same seed, equal token records.

mod common;

use std::path::Path;
use std::process::Command;

use common::{chat_model_dir, docker_with_base_image, repo, stderr, Server};
use serde_json::Value;

/// A trajectory's token records and what the turns did, without timings.
fn comparable(trajectory: &Value) -> Value {
    let mut t = trajectory.clone();
    for key in ["generation_seconds", "tool_seconds", "total_seconds"] {
        t.as_object_mut().unwrap().remove(key);
    }
    for turn in t["turns"].as_array_mut().unwrap() {
        turn.as_object_mut().unwrap().remove("generation_seconds");
        turn.as_object_mut().unwrap().remove("tool_seconds");
    }
    t
}

/// Every record's log-probs, taken out of `t` (compared within float tolerance).
fn take_logprobs(t: &mut Value) -> Vec<f64> {
    let mut all = Vec::new();
    let object = t.as_object_mut().unwrap();
    let mut records: Vec<&mut Value> = Vec::new();
    for (key, value) in object.iter_mut() {
        match (key.as_str(), value) {
            ("tokens", record) => records.push(record),
            ("earlier_tokens", Value::Array(earlier)) => records.extend(earlier.iter_mut()),
            _ => {}
        }
    }
    for record in records {
        all.extend(record["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()));
        record["logprobs"] = Value::Null;
    }
    all
}

#[test]
fn eval_swebench_over_forge_serve_equals_eval_with_the_model() {
    let test = "eval_swebench_over_forge_serve_equals_eval_with_the_model";
    if !docker_with_base_image(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model_path = chat_model_dir(tmp.path(), 4096);
    let model = model_path.display().to_string();
    let (server, url) = Server::start(&model_path, "tiny", 2);

    let dataset = repo().join("tasks/bundled.jsonl").display().to_string();
    let eval = |out_dir: &Path, policy: &[&str]| {
        let out_dir = out_dir.display().to_string();
        let mut args = vec!["eval", "swebench", "--dataset", &dataset, "--run-id", "e2e", "--instance-ids", "forge__calutil-1", "--max-turns", "2",
            "--max-context-tokens", "3000", "--scaffold", "minimal", "--temperature", "0", "--seed", "3", "--workers", "1", "--output-dir", &out_dir];
        args.extend_from_slice(policy);
        let out = Command::new(env!("CARGO_BIN_EXE_forge")).args(&args).output().expect("forge runs");
        assert!(out.status.success(), "forge {args:?}: {}", stderr(&out));
        let trajectory = std::fs::read_to_string(Path::new(&out_dir).join("runs/e2e/trajectories/forge__calutil-1.json")).unwrap();
        (serde_json::from_str::<Value>(&trajectory).unwrap(), stderr(&out))
    };
    // the served name and the tokenizer as an engineer coming from vLLM gives them
    let (over_http, log) = eval(&tmp.path().join("endpoint"), &["--endpoint", &url, "--served-model", "tiny", "--tokenizer", &model]);
    assert!(log.contains("endpoint: 2 generations") || log.contains("endpoint: 1 generations"), "{log}");
    assert!(log.contains("; 0 retries, 0 failed requests"), "{log}");
    let (direct, _) = eval(&tmp.path().join("model"), &["--model", &model]);
    drop(server);

    for (side, t) in [("--endpoint", &over_http), ("--model", &direct)] {
        let status = t["status"].as_str().unwrap();
        let short = format!("status {status}, error {}, turns {}", t["error"], t["turns"]);
        assert!(["finished", "turn_limit", "context_exhausted"].contains(&status), "{side}: a model outcome, not an infrastructure error: {short}");
        assert!(!t["turns"].as_array().unwrap().is_empty(), "{side}: {short}");
    }
    let (mut a, mut b) = (comparable(&over_http), comparable(&direct));
    let (la, lb) = (take_logprobs(&mut a), take_logprobs(&mut b));
    for key in ["input_ids", "loss_mask"] {
        let (x, y) = (a["tokens"][key].as_array().unwrap(), b["tokens"][key].as_array().unwrap());
        let first_difference = x.iter().zip(y).position(|(p, q)| p != q);
        assert!(x == y, "{key}: {} over forge serve, {} with --model, first difference at {first_difference:?}", x.len(), y.len());
    }
    assert!(a["tokens"]["input_ids"].as_array().is_some_and(|ids| !ids.is_empty()));
    assert_eq!(a["tokens"], b["tokens"], "the same token ids and mask over forge serve as with --model");
    assert_eq!(a, b, "the same trajectory (messages, turns, patch), timings aside");
    assert_eq!(la.len(), lb.len());
    assert!(la.iter().any(|&l| l != 0.0), "forge serve returned the sampled tokens' log-probs");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "log-probs {x} vs {y}");
    }
}

#[test]
fn eval_swebench_endpoint_options_go_together_and_an_unreachable_endpoint_fails_clearly() {
    let dataset = repo().join("tasks/bundled.jsonl").display().to_string();
    let tiny = repo().join("assets/tiny-tokenizer").display().to_string();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().display().to_string();
    let forge = |extra: &[&str]| {
        let mut args = vec!["eval", "swebench", "--dataset", &dataset, "--run-id", "x", "--output-dir", &out_dir];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_forge")).args(&args).output().expect("forge runs")
    };
    let refused = |extra: &[&str], expected: &str| {
        let out = forge(extra);
        assert!(!out.status.success(), "{extra:?} ran");
        assert!(stderr(&out).contains(expected), "{extra:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    };
    let endpoint = ["--endpoint", "http://127.0.0.1:9", "--served-model", "m", "--tokenizer", &tiny];
    refused(&["--endpoint", "http://127.0.0.1:9", "--tokenizer", &tiny], "--served-model");
    refused(&["--endpoint", "http://127.0.0.1:9", "--served-model", "m"], "--tokenizer");
    refused(&[&endpoint[..], &["--model", &tiny]].concat(), "cannot be used with");
    refused(&[&endpoint[..], &["--oracle"]].concat(), "cannot be used with");
    refused(&[&endpoint[..], &["--predictions", "gold"]].concat(), "cannot be used with");
    refused(&["--model", &tiny, "--served-model", "m"], "cannot be used with");
    refused(&["--oracle", "--tokenizer", &tiny, "--api-key-env", "X"], "cannot be used with");
    refused(&["--predictions", "gold", "--endpoint-retries", "1"], "cannot be used with");
    refused(&[&endpoint[..], &["--device", "cpu"]].concat(), "--endpoint run none");
    refused(&[&endpoint[..], &["--api-key-env", "FORGE_TEST_SURELY_UNSET_KEY"]].concat(), "FORGE_TEST_SURELY_UNSET_KEY is not set");
    // nothing listens on port 9 (discard): the models check fails after the retries, with the URL
    refused(&[&endpoint[..], &["--endpoint-retries", "0"]].concat(), "--endpoint http://127.0.0.1:9: listing its models");
}
