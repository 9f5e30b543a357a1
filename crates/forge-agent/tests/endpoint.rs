//! [`EndpointPolicy`] against a real local HTTP server (axum) that answers `/v1/completions` as
//! vLLM does, from a scripted policy of the prompt ids: the agent loop over HTTP equals the loop
//! over the same policy called directly; transient failures are retried; lasting ones are
//! infrastructure errors; the request carries the prompt ids, stop ids, sampling and the key.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use forge_agent::testing::{tool_call_text, ScriptedPolicy};
use forge_agent::*;
use forge_sandbox::{Observation, ToolCall};
use serde_json::{json, Value};

/// Runs nothing: answers every call with its command.
#[derive(Default)]
struct FakeWorkspace {
    calls: usize,
}

impl Workspace for FakeWorkspace {
    async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
        self.calls += 1;
        Ok(Observation {
            output: format!("ran {}", call.arguments["command"].as_str().unwrap_or("?")),
            exit_code: Some(0),
            timed_out: false,
            finished: call.name == forge_sandbox::FINISH,
        })
    }

    async fn patch(&mut self) -> Result<String> {
        Ok(format!("{} calls\n", self.calls))
    }
}

/// How the fake server answers.
#[derive(Clone)]
struct Behaviour {
    /// The first `failures` requests get `failure` (with `Retry-After: 0` when `retry_after`).
    failures: usize,
    failure: StatusCode,
    retry_after: bool,
    /// `token_ids` in the choices (vLLM ≥ 0.10, forge serve); without, text only.
    token_ids: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour { failures: 0, failure: StatusCode::INTERNAL_SERVER_ERROR, retry_after: false, token_ids: true }
    }
}

struct Server {
    policy: ScriptedPolicy,
    chat: Arc<ChatFormat>,
    behaviour: Behaviour,
    requests: Mutex<Vec<(HeaderMap, Value)>>,
}

/// `/v1/completions` as vLLM answers it, from `policy` on the prompt ids.
async fn completions(State(server): State<Arc<Server>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let n = {
        let mut requests = server.requests.lock().unwrap();
        requests.push((headers, body.clone()));
        requests.len()
    };
    let b = &server.behaviour;
    if n <= b.failures {
        let error = Json(json!({"object": "error", "message": "busy", "type": "ServiceUnavailableError", "code": b.failure.as_u16()}));
        return if b.retry_after { (b.failure, [("retry-after", "0")], error).into_response() } else { (b.failure, error).into_response() };
    }
    let prompt: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
    let params = SamplingParams {
        max_new_tokens: body["max_tokens"].as_u64().unwrap() as usize,
        temperature: body["temperature"].as_f64().unwrap() as f32,
        top_p: body["top_p"].as_f64().unwrap() as f32,
        top_k: body["top_k"].as_i64().unwrap().max(0) as usize,
        stop_tokens: serde_json::from_value(body["stop_token_ids"].clone()).unwrap(),
        seed: body["seed"].as_u64().unwrap(),
    };
    let generation = server.policy.generate(&prompt, &params).await.unwrap();
    let stopped = generation.finish_reason == FinishReason::Stop;
    // the text leaves the stop token out (skip_special_tokens)
    let text_ids = if stopped { &generation.tokens[..generation.tokens.len() - 1] } else { &generation.tokens[..] };
    let mut choice = json!({
        "index": 0,
        "text": server.chat.decode(text_ids).unwrap(),
        "logprobs": if body["logprobs"].is_null() { Value::Null } else { json!({"token_logprobs": generation.logprobs, "tokens": [], "top_logprobs": null, "text_offset": []}) },
        "finish_reason": if stopped { "stop" } else { "length" },
        "stop_reason": if stopped { json!(generation.tokens.last()) } else { Value::Null },
    });
    if b.token_ids && body["return_token_ids"] == true {
        choice["token_ids"] = json!(generation.tokens);
        choice["prompt_token_ids"] = json!(prompt);
    }
    Json(json!({
        "id": format!("cmpl-{n}"),
        "object": "text_completion",
        "model": body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": prompt.len(), "completion_tokens": generation.tokens.len(), "total_tokens": prompt.len() + generation.tokens.len()},
    }))
    .into_response()
}

/// Serves `turns` (turn k of an episode answers `turns[k]`) on a free local port.
async fn serve(turns: Vec<String>, behaviour: Behaviour) -> (String, Arc<Server>) {
    let chat = common::tiny_chat();
    let server = Arc::new(Server { policy: scripted(turns), chat, behaviour, requests: Mutex::new(Vec::new()) });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "agent", "object": "model", "max_model_len": 4096}]})) }))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, server)
}

fn scripted(turns: Vec<String>) -> ScriptedPolicy {
    ScriptedPolicy::new(common::tiny_chat(), move |_, turn| turns.get(turn).cloned().unwrap_or_default())
}

fn bash(chat: &ChatFormat, command: &str) -> String {
    tool_call_text(chat, &[("execute_bash", json!({"command": command}))])
}

/// Three tool turns, a reply without a tool call, one cut by the token limit, then `finish`.
fn turns() -> Vec<String> {
    let chat = common::tiny_chat();
    vec![
        bash(&chat, "ls"),
        format!("Let me look.\n{}", bash(&chat, "cat a.py")),
        "I think it is fine.".into(),
        format!("{}{}", "very long reasoning ".repeat(80), bash(&chat, "never run")),
        bash(&chat, "python -m pytest -q"),
        tool_call_text(&chat, &[("finish", json!({"message": "done"}))]),
    ]
}

/// Short backoff, few retries: failures end fast.
fn config(url: &str) -> EndpointConfig {
    EndpointConfig {
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        request_timeout: Duration::from_secs(20),
        ..EndpointConfig::new(url, "agent")
    }
}

fn agent_config() -> AgentConfig {
    AgentConfig { max_new_tokens: 120, temperature: 0.7, top_p: 0.9, top_k: 20, seed: 11, ..AgentConfig::default() }
}

async fn episode(policy: &impl Policy) -> Trajectory {
    let chat = common::tiny_chat();
    run_episode(policy, &mut FakeWorkspace::default(), &chat, "demo-1", "The frobnicator crashes on empty input.", &agent_config()).await
}

/// A trajectory without its timings.
fn timeless(mut t: Trajectory) -> Trajectory {
    for turn in &mut t.turns {
        turn.generation_seconds = 0.0;
        turn.tool_seconds = 0.0;
    }
    t.generation_seconds = 0.0;
    t.tool_seconds = 0.0;
    t.total_seconds = 0.0;
    t
}

#[tokio::test]
async fn the_agent_loop_over_http_equals_the_policy_called_directly() {
    let (url, server) = serve(turns(), Behaviour::default()).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    let over_http = timeless(episode(&policy).await);
    let direct = timeless(episode(&scripted(turns())).await);
    assert_eq!(over_http.status, Status::Finished, "{:?}", over_http.error);
    assert_eq!(over_http.turns.len(), 6);
    assert_eq!(over_http.turns[3].finish_reason, FinishReason::Length, "turn 4 is cut by max_tokens");
    assert_eq!(over_http.tokens, direct.tokens, "the same token record: ids, mask, log-probs");
    assert_eq!(over_http.earlier_tokens, direct.earlier_tokens);
    assert_eq!(over_http.messages, direct.messages);
    assert_eq!(over_http, direct, "the whole trajectory, timings aside");

    let requests = server.requests.lock().unwrap().len();
    assert_eq!(requests, 6);
    let usage = policy.usage();
    let generated: usize = over_http.turns.iter().map(|t| t.generated_end - t.prompt_len).sum();
    let prompts: usize = over_http.turns.iter().map(|t| t.prompt_len).sum();
    assert_eq!(
        usage,
        EndpointUsage { generations: 6, prompt_tokens: prompts as u64, completion_tokens: generated as u64, ..Default::default() },
        "usage sums the responses' usage; nothing retried, every generation had token ids and log-probs"
    );
}

#[tokio::test]
async fn responses_without_token_ids_are_retokenised_and_their_logprobs_marked_unavailable() {
    let (url, _server) = serve(turns(), Behaviour { token_ids: false, ..Behaviour::default() }).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    let over_http = timeless(episode(&policy).await);
    let direct = timeless(episode(&scripted(turns())).await);
    assert_eq!(over_http.status, Status::Finished, "{:?}", over_http.error);
    // the scripted text re-tokenises to the same ids, the stop token is put back from stop_reason
    assert_eq!(over_http.tokens.input_ids, direct.tokens.input_ids);
    assert_eq!(over_http.tokens.loss_mask, direct.tokens.loss_mask);
    assert!(over_http.tokens.logprobs.iter().all(|&l| l == 0.0), "unavailable log-probs are 0");
    assert_eq!(over_http.messages, direct.messages);
    let usage = policy.usage();
    assert_eq!((usage.generations, usage.generations_without_token_ids, usage.generations_without_logprobs), (6, 6, 6));
}

#[tokio::test]
async fn a_429_then_success_is_retried() {
    let behaviour = Behaviour { failures: 1, failure: StatusCode::TOO_MANY_REQUESTS, retry_after: true, ..Behaviour::default() };
    let (url, server) = serve(turns(), behaviour).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    let over_http = timeless(episode(&policy).await);
    assert_eq!(over_http.status, Status::Finished, "{:?}", over_http.error);
    assert_eq!(over_http, timeless(episode(&scripted(turns())).await));
    assert_eq!(server.requests.lock().unwrap().len(), 7, "6 turns, one of them sent twice");
    let usage = policy.usage();
    assert_eq!((usage.retries, usage.failed_requests, usage.generations), (1, 0, 6));

    // a 503 twice is within 2 retries too
    let behaviour = Behaviour { failures: 2, failure: StatusCode::SERVICE_UNAVAILABLE, ..Behaviour::default() };
    let (url, _server) = serve(turns(), behaviour).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    assert_eq!(episode(&policy).await.status, Status::Finished);
    assert_eq!(policy.usage().retries, 2);
}

#[tokio::test]
async fn a_server_failing_for_good_is_an_infrastructure_error_after_the_retries() {
    let behaviour = Behaviour { failures: usize::MAX, ..Behaviour::default() };
    let (url, server) = serve(turns(), behaviour).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    let clock = Instant::now();
    let trajectory = episode(&policy).await;
    assert!(clock.elapsed() < Duration::from_secs(5), "short backoff: {:?}", clock.elapsed());
    assert_eq!(trajectory.status, Status::InfraError, "never a model outcome (unresolved)");
    assert!(!trajectory.status.is_model_outcome());
    let error = trajectory.error.unwrap();
    assert!(error.contains("500") && error.contains("3 attempts failed"), "{error}");
    assert_eq!(server.requests.lock().unwrap().len(), 3, "1 attempt + 2 retries");
    let usage = policy.usage();
    assert_eq!((usage.retries, usage.failed_requests, usage.generations), (2, 1, 0));

    // a client error is not retried
    let behaviour = Behaviour { failures: usize::MAX, failure: StatusCode::BAD_REQUEST, ..Behaviour::default() };
    let (url, server) = serve(turns(), behaviour).await;
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    assert_eq!(episode(&policy).await.status, Status::InfraError);
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_an_infrastructure_error_after_the_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let policy = EndpointPolicy::new(config(&url), common::tiny_chat()).unwrap();
    let clock = Instant::now();
    let trajectory = episode(&policy).await;
    assert!(clock.elapsed() < Duration::from_secs(5), "short backoff: {:?}", clock.elapsed());
    assert_eq!(trajectory.status, Status::InfraError);
    assert!(trajectory.turns.is_empty());
    let usage = policy.usage();
    assert_eq!((usage.retries, usage.failed_requests), (2, 1));
    assert!(policy.served_models().await.is_err());

    // https (rustls) builds a client and fails the same way on a closed port
    let policy = EndpointPolicy::new(config(&url.replace("http://", "https://")), common::tiny_chat()).unwrap();
    assert_eq!(episode(&policy).await.status, Status::InfraError);
    assert!(EndpointPolicy::new(config("ftp://127.0.0.1:1"), common::tiny_chat()).is_err());
}

#[tokio::test]
async fn the_request_has_the_prompt_ids_stop_ids_sampling_and_the_bearer_key() {
    let (url, server) = serve(turns(), Behaviour::default()).await;
    let chat = common::tiny_chat();
    let policy = EndpointPolicy::new(EndpointConfig { api_key: Some("sk-test-123".into()), ..config(&format!("{url}/v1/")) }, chat.clone()).unwrap();
    let prompt = chat.encode(&chat.render(&chat.initial_messages("Fix it."), true).unwrap()).unwrap();
    let params = SamplingParams { max_new_tokens: 77, temperature: 0.6, top_p: 0.95, top_k: 20, stop_tokens: vec![chat.end_of_turn_id()], seed: 1234 };
    let generation = policy.generate(&prompt, &params).await.unwrap();
    assert_eq!(generation.tokens.last(), Some(&chat.end_of_turn_id()));

    let requests = server.requests.lock().unwrap().clone();
    let (headers, body) = &requests[0];
    assert_eq!(headers["authorization"], "Bearer sk-test-123");
    assert_eq!(body["model"], "agent");
    assert_eq!(body["prompt"], json!(prompt));
    assert_eq!(body["stop_token_ids"], json!([chat.end_of_turn_id()]));
    assert_eq!(body["max_tokens"], 77);
    assert!((body["temperature"].as_f64().unwrap() - 0.6).abs() < 1e-6);
    assert!((body["top_p"].as_f64().unwrap() - 0.95).abs() < 1e-6);
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["seed"], 1234);
    assert_eq!(body["logprobs"], 0, "the sampled tokens' log-probs only");
    assert_eq!(body["return_token_ids"], true);

    // top_k off is vLLM's -1; no key, no header; no log-probs asked, none marked available
    let policy = EndpointPolicy::new(EndpointConfig { logprobs: false, ..config(&url) }, chat.clone()).unwrap();
    let generation = policy.generate(&prompt, &SamplingParams { top_k: 0, ..params }).await.unwrap();
    assert!(generation.logprobs.iter().all(|&l| l == 0.0));
    assert_eq!(policy.usage().generations_without_logprobs, 1);
    let requests = server.requests.lock().unwrap().clone();
    let (headers, body) = &requests[1];
    assert!(!headers.contains_key("authorization"));
    assert_eq!(body["top_k"], -1);
    assert!(body.get("logprobs").is_none());

    let models = policy.served_models().await.unwrap();
    assert_eq!(models, vec![forge_agent::endpoint::ServedModel { id: "agent".into(), max_model_len: Some(4096) }]);
}
