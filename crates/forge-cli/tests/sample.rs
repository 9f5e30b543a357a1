//! `forge sample` as a user runs it, end to end: the built binary against a scripted teacher
//! behind an OpenAI-compatible endpoint (an axum server in this test, answering
//! `/v1/completions` with token ids as vLLM does). The teacher plays the gold patch's tool calls
//! for two bundled tasks (for one of them each attempt's reply differs with its seed, for the other
//! every attempt is the same) and a wrong edit for a third. The agent runs in real containers and
//! is graded in fresh ones; OUT/sft.jsonl must hold exactly the resolved attempts' records
//! (deduplicated), and `forge train sft` (the binary) must train on it and log a loss.
//! crates/forge-agent/tests/sample.rs covers the same at library level with resume and retries.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{docker_with_base_image, repo};
use forge_agent::sample::{attempt_trajectory_path, read_attempts, AttemptRecord};
use forge_agent::testing::{edit_oracle_turns, oracle_turns, tool_call_text};
use forge_agent::{ChatFormat, Scaffold, Trajectory};
use serde_json::{json, Value};

const SOLVED_VARIED: &str = "forge__confparse-2";
const SOLVED_SAME: &str = "forge__calutil-1";
const FAILED: &str = "forge__confparse-1";

struct Teacher {
    chat: ChatFormat,
    /// (problem statement, instance id, the turns' replies)
    scripts: Vec<(String, String, Vec<String>)>,
    requests: AtomicUsize,
}

/// `/v1/completions` with token ids: the scripted reply of the instance whose problem statement
/// is in the prompt, for the turn the prompt is at.
async fn completions(State(teacher): State<Arc<Teacher>>, Json(body): Json<Value>) -> Response {
    teacher.requests.fetch_add(1, Ordering::SeqCst);
    if body["model"] != "teacher" {
        return (StatusCode::NOT_FOUND, Json(json!({"object": "error", "message": "unknown model"}))).into_response();
    }
    let prompt: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
    let text = teacher.chat.decode(&prompt).unwrap();
    let turn = text.matches("<|im_start|>assistant").count().saturating_sub(1);
    let Some((_, id, turns)) = teacher.scripts.iter().find(|(problem, _, _)| text.contains(problem.as_str())) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"object": "error", "message": "unknown task"}))).into_response();
    };
    let mut reply = turns.get(turn).cloned().unwrap_or_default();
    if id == SOLVED_VARIED && turn == 0 {
        // the attempt's seed (turn 0 samples with it) shows in the reply: each attempt differs
        reply = format!("Attempt with seed {}.\n{reply}", body["seed"]);
    }
    let mut tokens = teacher.chat.encode(&reply).unwrap();
    tokens.push(teacher.chat.end_of_turn_id());
    let logprobs: Vec<f32> = tokens.iter().map(|_| -0.25).collect();
    Json(json!({
        "id": "cmpl-teacher", "object": "text_completion", "model": "teacher",
        "choices": [{"index": 0, "text": reply, "token_ids": tokens, "logprobs": {"token_logprobs": logprobs}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt.len(), "completion_tokens": tokens.len()},
    }))
    .into_response()
}

/// A `str_replace` that comments the line the gold patch fixes instead of fixing it.
fn wrong_edit(instance: &forge_swe::TaskInstance) -> Value {
    let file = forge_swe::instance::patch_files(&instance.patch)[0].clone();
    let removed = instance.patch.lines().find(|l| l.starts_with('-') && !l.starts_with("---")).expect("the fix removes a line")[1..].trim();
    json!({"command": "str_replace", "path": format!("/testbed/{file}"), "old_str": removed, "new_str": format!("{removed}  # NOT A FIX")})
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn forge(args: Vec<String>) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_forge")).args(&args).output().await.expect("forge runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_sample_with_a_scripted_teacher_keeps_exactly_the_resolved_attempts_and_forge_train_sft_trains_on_them() {
    let test = "forge_sample_with_a_scripted_teacher_keeps_exactly_the_resolved_attempts_and_forge_train_sft_trains_on_them";
    if !docker_with_base_image(test) {
        return;
    }
    let tiny = repo().join("assets/tiny-tokenizer");
    // the chat format `forge sample --tokenizer assets/tiny-tokenizer --scaffold minimal` uses
    let chat = ChatFormat::from_model_dir(&tiny, json!({"enable_thinking": false})).unwrap().with_scaffold(Scaffold::Minimal);
    let dataset = repo().join("tasks/bundled.jsonl");
    let ids = [SOLVED_VARIED, SOLVED_SAME, FAILED].map(String::from).to_vec();
    let instances = forge_swe::select_instances(forge_swe::load_instances(&dataset).unwrap(), &ids).unwrap();
    let scripts = instances
        .iter()
        .map(|i| {
            let turns = if i.instance_id == FAILED {
                vec![tool_call_text(&chat, &[("str_replace_editor", wrong_edit(i))]), tool_call_text(&chat, &[("finish", json!({"message": "done"}))])]
            } else {
                edit_oracle_turns(&chat, i).unwrap_or_else(|| oracle_turns(&chat, i))
            };
            (i.problem_statement.trim().to_string(), i.instance_id.clone(), turns)
        })
        .collect();
    let teacher = Arc::new(Teacher { chat, scripts, requests: AtomicUsize::new(0) });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "teacher", "object": "model", "max_model_len": 32768}]})) }))
        .with_state(teacher.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sample");
    let s = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec!["sample".into(), "--dataset".into(), s(&dataset), "--endpoint".into(), url.clone(), "--served-model".into(), "teacher".into(), "--tokenizer".into(), s(&tiny)];
    args.extend(["--scaffold", "minimal", "--attempts", "2", "--temperature", "0.7", "--seed", "11", "--workers", "2", "--max-turns", "6", "--timeout", "300", "--out"].map(String::from));
    args.push(s(&out));
    args.push("--instance-ids".into());
    args.extend(ids.iter().cloned());
    let sampled = forge(args).await;
    let log = String::from_utf8_lossy(&sampled.stderr).into_owned();
    assert!(sampled.status.success(), "forge sample failed:\n{log}");
    assert!(log.contains("sample: 6 attempts run, 0 reused, 0 skipped; 4 resolved over 2 of 3 instances; 3 SFT records"), "{log}");
    assert!(teacher.requests.load(Ordering::SeqCst) >= 6, "every attempt asked the teacher");

    // attempts.jsonl: every attempt graded, resolved exactly for the gold-patch tasks
    let attempts: Vec<AttemptRecord> = read_attempts(&out.join("attempts.jsonl")).unwrap();
    assert_eq!(attempts.len(), 6, "{attempts:?}");
    for a in &attempts {
        assert_eq!((a.status.as_str(), a.grading.as_str()), ("finished", "graded"), "{a:?}");
        assert_eq!(a.resolved, a.instance_id != FAILED, "{a:?}");
        assert!(a.infra_error.is_none(), "{a:?}");
    }

    // sft.jsonl: the resolved attempts' records, each once, and nothing else
    let sft_path = out.join("sft.jsonl");
    let sft = lines(&sft_path);
    let mut expected: Vec<Value> = Vec::new();
    for a in attempts.iter().filter(|a| a.resolved) {
        let t: Trajectory = serde_json::from_str(&std::fs::read_to_string(attempt_trajectory_path(&out, &a.instance_id, a.attempt)).unwrap()).unwrap();
        assert!(!t.patch.is_empty(), "{a:?}");
        if !expected.contains(&t.sft_record()) {
            expected.push(t.sft_record());
        }
    }
    assert_eq!(expected.len(), 3, "two different solutions of {SOLVED_VARIED}, one (deduplicated) of {SOLVED_SAME}");
    assert_eq!(sft.len(), expected.len(), "{sft:?}");
    for record in &sft {
        assert!(expected.contains(record), "a line that is no resolved attempt's record: {record}");
        assert!(record["messages"].as_array().is_some_and(|m| m.len() > 2) && record["tools"].as_array().is_some_and(|t| !t.is_empty()), "{record}");
    }
    assert!(sft.iter().all(|r| !r.to_string().contains("NOT A FIX")), "no unresolved attempt's record");
    let rates = lines(&out.join("solve_rates.jsonl"));
    let rate = |id: &str| rates.iter().find(|r| r["instance_id"] == id).unwrap_or_else(|| panic!("no solve rate of {id}: {rates:?}")).clone();
    assert_eq!((rate(SOLVED_VARIED)["solved"].as_u64(), rate(SOLVED_SAME)["solved"].as_u64(), rate(FAILED)["solved"].as_u64()), (Some(2), Some(2), Some(0)), "{rates:?}");

    // forge train sft on sample's output: a short tiny run logs a finite loss and saves its model
    let run_dir = tmp.path().join("sft-run");
    let q = |p: &Path| format!("\"{}\"", p.display());
    let mut train: Vec<String> = vec!["train".into(), "sft".into(), "--config".into(), s(&repo().join("configs/tiny/sft.toml"))];
    for set in [
        format!("model.init_config={}", q(&repo().join("configs/tiny/qwen3-tiny.json"))),
        format!("model.tokenizer={}", q(&tiny)),
        format!("data.train={}", q(&sft_path)),
        format!("run.dir={}", q(&run_dir)),
        "train.max_steps=2".into(),
        "data.max_seq_len=4096".into(),
        "train.micro_batch_tokens=4096".into(),
        "train.grad_accum=1".into(),
        "optim.warmup_steps=1".into(),
    ] {
        train.extend(["--set".to_string(), set]);
    }
    let trained = forge(train).await;
    assert!(trained.status.success(), "forge train sft failed:\n{}", String::from_utf8_lossy(&trained.stderr));
    let metrics = lines(&run_dir.join("metrics.jsonl"));
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m["loss"].as_f64()).collect();
    assert!(!losses.is_empty() && losses.iter().all(|l| l.is_finite() && *l > 0.0), "a finite loss is logged per step: {metrics:?}");
    eprintln!("forge train sft on forge sample's {} records: losses {losses:?}", sft.len());
    assert!(run_dir.join("model/config.json").exists(), "the run finished with its model");
}
