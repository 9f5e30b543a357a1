//! `forge sample` end to end on bundled tasks in real containers: a scripted teacher behind an
//! OpenAI-compatible endpoint (axum, answering `/v1/completions` with token ids) solves two tasks
//! (one with replies that vary with the attempt's seed, one always the same) and fails a third; its
//! first request for the third is refused (an infrastructure failure, retried, not an attempt).
//! sft.jsonl holds exactly the resolved attempts (deduplicated), attempts.jsonl and
//! solve_rates.jsonl say what happened, `--resume` redoes nothing finished and exactly what a
//! crash lost, and `forge train sft` trains on the output.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use forge_agent::sample::{read_attempts, AttemptRecord, SolveRate};
use forge_agent::testing::{edit_oracle_turns, oracle_turns, tool_call_text};
use forge_agent::*;
use serde_json::{json, Value};

const SOLVED_VARIED: &str = "forge__confparse-2";
const SOLVED_SAME: &str = "forge__calutil-1";
const FAILED: &str = "forge__confparse-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn docker_with_base_image(test: &str) -> bool {
    forge_sandbox::testing::docker_image_available(test, "forge/base:py3")
}

struct Teacher {
    chat: Arc<ChatFormat>,
    /// (problem statement, instance id, the turns' replies)
    scripts: Vec<(String, String, Vec<String>)>,
    refused_once: AtomicBool,
    requests: AtomicUsize,
}

/// `/v1/completions` with token ids, as vLLM answers it: the scripted reply of the instance whose
/// problem statement is in the prompt.
async fn completions(State(teacher): State<Arc<Teacher>>, Json(body): Json<Value>) -> Response {
    teacher.requests.fetch_add(1, Ordering::SeqCst);
    let prompt: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
    let text = teacher.chat.decode(&prompt).unwrap();
    let turn = text.matches("<|im_start|>assistant").count().saturating_sub(1);
    let seed = body["seed"].as_u64().unwrap();
    let Some((_, id, turns)) = teacher.scripts.iter().find(|(problem, _, _)| text.contains(problem.as_str())) else {
        return (StatusCode::BAD_REQUEST, "unknown task").into_response();
    };
    if id == FAILED && !teacher.refused_once.swap(true, Ordering::SeqCst) {
        return (StatusCode::BAD_REQUEST, Json(json!({"object": "error", "message": "refused once"}))).into_response();
    }
    let mut reply = turns.get(turn).cloned().unwrap_or_default();
    if id == SOLVED_VARIED && turn == 0 {
        // the attempt's seed (turn 0 samples with it) shows in the reply: each attempt differs
        reply = format!("Attempt with seed {seed}.\n{reply}");
    }
    let mut tokens = teacher.chat.encode(&reply).unwrap();
    tokens.push(teacher.chat.end_of_turn_id());
    let logprobs: Vec<f32> = tokens.iter().map(|_| -0.5).collect();
    Json(json!({
        "id": "cmpl", "object": "text_completion", "model": body["model"],
        "choices": [{"index": 0, "text": reply, "token_ids": tokens, "logprobs": {"token_logprobs": logprobs}, "finish_reason": "stop", "stop_reason": teacher.chat.end_of_turn_id()}],
        "usage": {"prompt_tokens": prompt.len(), "completion_tokens": tokens.len()},
    }))
    .into_response()
}

async fn serve(teacher: Arc<Teacher>) -> String {
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "teacher", "object": "model", "max_model_len": 32768}]})) }))
        .with_state(teacher);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A `str_replace` that comments the line the gold patch fixes instead of fixing it.
fn wrong_edit(instance: &forge_swe::TaskInstance) -> Value {
    let file = forge_swe::instance::patch_files(&instance.patch)[0].clone();
    let removed = instance.patch.lines().find(|l| l.starts_with('-') && !l.starts_with("---")).expect("the fix removes a line")[1..].trim();
    json!({"command": "str_replace", "path": format!("/testbed/{file}"), "old_str": removed, "new_str": format!("{removed}  # NOT A FIX")})
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sample_keeps_exactly_the_resolved_attempts_resumes_and_trains() {
    let test = "sample_keeps_exactly_the_resolved_attempts_resumes_and_trains";
    if !docker_with_base_image(test) {
        return;
    }
    // the terse prompts of tiny models keep the SFT examples short
    let chat = Arc::new(ChatFormat::from_model_dir(&common::tiny_dir(), Value::Null).unwrap().with_scaffold(Scaffold::Minimal));
    let dataset = repo().join("tasks/bundled.jsonl");
    let ids = [SOLVED_VARIED, SOLVED_SAME, FAILED].map(String::from).to_vec();
    let instances = forge_swe::select_instances(forge_swe::load_instances(&dataset).unwrap(), &ids).unwrap();
    let scripts = instances
        .iter()
        .map(|i| {
            let turns = if i.instance_id == FAILED {
                // a patch that fixes nothing
                vec![
                    tool_call_text(&chat, &[("str_replace_editor", wrong_edit(i))]),
                    tool_call_text(&chat, &[("finish", json!({"message": "done"}))]),
                ]
            } else {
                edit_oracle_turns(&chat, i).unwrap_or_else(|| oracle_turns(&chat, i))
            };
            (i.problem_statement.trim().to_string(), i.instance_id.clone(), turns)
        })
        .collect();
    let teacher = Arc::new(Teacher { chat: chat.clone(), scripts, refused_once: AtomicBool::new(false), requests: AtomicUsize::new(0) });
    let url = serve(teacher.clone()).await;
    let (policy, max_model_len) = forge_agent::sample::connect_endpoint(EndpointConfig { max_retries: 0, ..EndpointConfig::new(&url, "teacher") }, chat.clone()).await.unwrap();
    assert_eq!(max_model_len, Some(32768));
    let policy = Arc::new(policy);

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sample");
    let label = format!("sample-test-{}", std::process::id());
    let mut options = SampleOptions::new(&dataset, &out);
    options.instance_ids = ids.clone();
    options.attempts = 2;
    options.workers = 2;
    options.agent.max_turns = 6;
    options.agent.temperature = 0.7;
    options.agent.seed = 11;
    options.test_timeout = std::time::Duration::from_secs(300);
    options.labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    options.progress = false;

    let summary = run_sampling(policy.clone(), chat.clone(), &options).await.unwrap();
    assert_eq!((summary.attempts_run, summary.attempts_reused), (6, 0), "{summary:?}");
    assert_eq!(summary.infra_retries, 1, "the refused request made one infrastructure retry: {summary:?}");
    assert!(summary.infra_failures.is_empty(), "{summary:?}");
    assert_eq!((summary.resolved, summary.instances_solved), (4, 2), "{summary:?}");
    assert_eq!(summary.sft_records, 3, "two different solutions of one task, one (deduplicated) of the other: {summary:?}");

    let attempts: Vec<AttemptRecord> = read_attempts(&out.join("attempts.jsonl")).unwrap();
    assert_eq!(attempts.len(), 6);
    for a in &attempts {
        let solved = a.instance_id != FAILED;
        assert_eq!(a.resolved, solved, "{a:?}");
        assert_eq!(a.status, "finished", "{a:?}");
        assert_eq!(a.grading, "graded", "{a:?}");
        assert!(a.infra_error.is_none(), "{a:?}");
        assert_eq!(a.seed, forge_agent::sample::attempt_seed(11, &a.instance_id, a.attempt));
    }
    let refused: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.infra_retries > 0).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].instance_id, FAILED);
    let mut keys: Vec<(String, usize)> = attempts.iter().map(|a| (a.instance_id.clone(), a.attempt)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "each (instance, attempt) once");

    let rates: Vec<SolveRate> = lines(&out.join("solve_rates.jsonl")).into_iter().map(|v| serde_json::from_value(v).unwrap()).collect();
    let rate = |id: &str| rates.iter().find(|r| r.instance_id == id).unwrap().clone();
    assert_eq!((rate(SOLVED_VARIED).attempts, rate(SOLVED_VARIED).solved, rate(SOLVED_VARIED).solve_rate), (2, 2, 1.0));
    assert_eq!((rate(SOLVED_SAME).attempts, rate(SOLVED_SAME).solved), (2, 2));
    assert_eq!((rate(FAILED).attempts, rate(FAILED).solved, rate(FAILED).solve_rate, rate(FAILED).infra_errors), (2, 0, 0.0, 0));

    // sft.jsonl: the resolved attempts' records, deduplicated, each exactly its trajectory's
    let sft_path = out.join("sft.jsonl");
    let sft = lines(&sft_path);
    assert_eq!(sft.len(), 3);
    let mut expected = Vec::new();
    for a in attempts.iter().filter(|a| a.resolved) {
        let t: Trajectory = serde_json::from_str(&std::fs::read_to_string(forge_agent::sample::attempt_trajectory_path(&out, &a.instance_id, a.attempt)).unwrap()).unwrap();
        assert!(!t.patch.is_empty());
        if !expected.contains(&t.sft_record()) {
            expected.push(t.sft_record());
        }
    }
    for record in &sft {
        assert!(expected.contains(record), "every line is a resolved attempt's record");
        assert!(record["messages"].as_array().unwrap().len() > 2 && record["tools"].as_array().is_some_and(|t| !t.is_empty()));
    }
    assert_eq!(sft.len(), expected.len());
    assert!(sft.iter().all(|r| !r.to_string().contains("NOT A FIX")), "no unresolved attempt's record");
    let leftover = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=forge.test={label}")]).output().unwrap();
    assert!(String::from_utf8_lossy(&leftover.stdout).trim().is_empty(), "every container was removed");

    // Without --resume an output directory with attempts is refused.
    let refused = run_sampling(policy.clone(), chat.clone(), &options).await.unwrap_err();
    assert!(refused.to_string().contains("--resume"), "{refused}");

    // --resume: nothing finished runs again.
    options.resume = true;
    let requests = teacher.requests.load(Ordering::SeqCst);
    let sft_before = std::fs::read_to_string(&sft_path).unwrap();
    let again = run_sampling(policy.clone(), chat.clone(), &options).await.unwrap();
    assert_eq!((again.attempts_run, again.attempts_reused, again.resolved, again.sft_records), (0, 6, 4, 3), "{again:?}");
    assert_eq!(teacher.requests.load(Ordering::SeqCst), requests, "no request to the teacher");
    assert_eq!(std::fs::read_to_string(&sft_path).unwrap(), sft_before);

    // A crash that lost the last record (and cut a line in half): exactly that attempt runs again.
    let text = std::fs::read_to_string(out.join("attempts.jsonl")).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    let lost: AttemptRecord = serde_json::from_str(kept[5]).unwrap();
    std::fs::write(out.join("attempts.jsonl"), format!("{}\n{}", kept[..5].join("\n"), &kept[5][..kept[5].len() / 2])).unwrap();
    let rerun = run_sampling(policy.clone(), chat.clone(), &options).await.unwrap();
    assert_eq!((rerun.attempts_run, rerun.attempts_reused, rerun.resolved, rerun.sft_records), (1, 5, 4, 3), "{rerun:?}");
    let after = read_attempts(&out.join("attempts.jsonl")).unwrap();
    assert_eq!(after.len(), 6);
    let redone = after.last().unwrap();
    assert_eq!((&redone.instance_id, redone.attempt, redone.resolved), (&lost.instance_id, lost.attempt, lost.resolved));
    assert_eq!(std::fs::read_to_string(&sft_path).unwrap(), sft_before, "the same seed gives the same attempt; sft.jsonl is canonical");

    // forge train sft on the output: a short tiny run logs a loss and finishes.
    let run_dir = tmp.path().join("sft-run");
    let q = |p: &Path| format!("\"{}\"", p.display());
    let overrides = vec![
        format!("model.init_config={}", q(&repo().join("configs/tiny/qwen3-tiny.json"))),
        format!("model.tokenizer={}", q(&repo().join("assets/tiny-tokenizer"))),
        format!("data.train={}", q(&sft_path)),
        format!("run.dir={}", q(&run_dir)),
        "train.max_steps=2".to_string(),
        "data.max_seq_len=4096".to_string(),
        "train.micro_batch_tokens=4096".to_string(),
        "train.grad_accum=1".to_string(),
        "optim.warmup_steps=1".to_string(),
    ];
    let (config, resolved) = forge_train::config::load_config::<forge_train::sft::SftConfig>(&repo().join("configs/tiny/sft.toml"), &overrides).unwrap();
    let trained = tokio::task::spawn_blocking(move || forge_train::sft::run(&config, &resolved, &forge_train::sft::SftOptions::default())).await.unwrap().unwrap();
    assert_eq!(trained.data.examples, 3, "{:?}", trained.data);
    assert!(trained.steps >= 1 && trained.first_loss.is_finite() && trained.last_loss.is_finite(), "steps {} loss {} -> {}", trained.steps, trained.first_loss, trained.last_loss);
    let metrics = lines(&run_dir.join("metrics.jsonl"));
    assert!(metrics.iter().any(|m| m["loss"].as_f64().is_some_and(f64::is_finite)), "a loss is logged: {metrics:?}");
    assert!(trained.model_dir.join("config.json").exists(), "the run finished with its model");
}
