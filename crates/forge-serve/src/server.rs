//! The HTTP routes and the generation of their responses, whole or streamed as server-sent events.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonBody, Router};
use forge_engine::{EngineHandle, GenerationStream};
use futures_util::future::join_all;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::choice::{ChoiceBuilder, FinishedChoice, Piece};
use crate::model::ServedModel;
use crate::request::{chat_plan, completion_plan, parse_body, Plan};
use crate::ApiError;

/// Conversations with long tool outputs exceed axum's default 2 MB body limit.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Counters behind `GET /metrics` (Prometheus text format).
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Responses whose `<tool_call>` blocks did not parse (returned as text instead).
    pub tool_call_parse_failures: AtomicU64,
    /// Streams whose client went away before the end.
    pub disconnects: AtomicU64,
}

pub struct AppState {
    pub model: ServedModel,
    pub engine: EngineHandle,
    /// One permit per sequence being generated (`--max-concurrency`); requests beyond wait.
    pub slots: Arc<Semaphore>,
    pub metrics: Metrics,
    /// Unix time the server started (the model's `created`).
    pub created: u64,
    /// Where the model came from (a directory or hub id), for /v1/models.
    pub source: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn models(State(state): State<Arc<AppState>>) -> JsonBody<Json> {
    JsonBody(json!({
        "object": "list",
        "data": [{
            "id": state.model.name,
            "object": "model",
            "created": state.created,
            "owned_by": "forge",
            "root": state.source,
            "max_model_len": state.model.max_model_len,
        }],
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    let m = &state.metrics;
    let running = state.model.max_concurrency - state.slots.available_permits();
    let counters = [
        ("forge_serve_requests_total", "Requests to the completion endpoints.", m.requests.load(Ordering::Relaxed)),
        ("forge_serve_failed_requests_total", "Requests answered with an error.", m.failed_requests.load(Ordering::Relaxed)),
        ("forge_serve_prompt_tokens_total", "Prompt tokens of answered requests.", m.prompt_tokens.load(Ordering::Relaxed)),
        ("forge_serve_generated_tokens_total", "Tokens generated.", m.generated_tokens.load(Ordering::Relaxed)),
        ("forge_serve_tool_call_parse_failures_total", "Responses whose <tool_call> blocks did not parse (returned as text).", m.tool_call_parse_failures.load(Ordering::Relaxed)),
        ("forge_serve_stream_disconnects_total", "Streams whose client left before the end.", m.disconnects.load(Ordering::Relaxed)),
    ];
    let mut out = String::new();
    for (name, help, value) in counters {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
    }
    out.push_str(&format!("# HELP forge_serve_running_sequences Sequences being generated.\n# TYPE forge_serve_running_sequences gauge\nforge_serve_running_sequences {running}\n"));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let plan = parse_body(&body).and_then(|body| chat_plan(&body, &state.model));
    answer(state, plan, Endpoint::Chat).await
}

async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let plan = parse_body(&body).and_then(|body| completion_plan(&body, &state.model));
    answer(state, plan, Endpoint::Completion).await
}

async fn answer(state: Arc<AppState>, plan: Result<Plan, ApiError>, endpoint: Endpoint) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = match plan {
        Ok(plan) => generate(state.clone(), plan, endpoint).await,
        Err(e) => Err(e),
    };
    response.unwrap_or_else(|e| {
        state.metrics.failed_requests.fetch_add(1, Ordering::Relaxed);
        if e.status.is_server_error() {
            tracing::error!("{}", e.message);
        }
        e.into_response()
    })
}

/// One sequence of the response: choice `index`, generating in the engine.
struct Job {
    index: usize,
    prompt: usize,
    stream: GenerationStream,
}

async fn generate(state: Arc<AppState>, plan: Plan, endpoint: Endpoint) -> Result<Response, ApiError> {
    let sequences = plan.prompts.len() * plan.n;
    if sequences > state.model.max_concurrency {
        return Err(ApiError::invalid(
            "prompt".to_string(),
            format!("{} prompts × n = {} asks for {sequences} sequences at once, over the server's --max-concurrency {}", plan.prompts.len(), plan.n, state.model.max_concurrency),
        ));
    }
    // excess requests wait here, in arrival order, for sequences to finish
    let permit = state.slots.clone().acquire_many_owned(sequences as u32).await.expect("the semaphore is never closed");
    // every sequence is submitted before anything is sent, so a refusal is still a plain 400
    let mut jobs = Vec::with_capacity(sequences);
    for (p, prompt) in plan.prompts.iter().enumerate() {
        for i in 0..plan.n {
            let params = plan.params_for(prompt, i, state.model.max_model_len);
            jobs.push(Job { index: p * plan.n + i, prompt: p, stream: state.engine.generate_stream(prompt.clone(), params)? });
        }
    }
    let prompt_tokens: usize = plan.prompts.iter().map(Vec::len).sum();
    state.metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    let format = Format::new(&state, Arc::new(plan), endpoint);
    if format.plan.stream {
        return Ok(stream(state, format, jobs, permit));
    }
    // a client that disconnects drops this future, and with it the engine's sequences
    let finished = futures_util::future::try_join_all(jobs.into_iter().map(|job| {
        let (state, plan) = (&state, &format.plan);
        let Job { index, prompt, stream } = job;
        async move { run_choice(state, plan, stream, |_| true, std::future::pending()).await.map(|c| (index, prompt, c.expect("never cancelled"))) }
    }))
    .await?;
    Ok(JsonBody(format.whole(&state, &finished)).into_response())
}

/// Feeds the engine's tokens of one choice to its builder; `on_piece` gets what may be sent so
/// far and returns false when the client is gone (the sequence is then dropped: `None`).
/// `client_gone` completes when the client has left while no piece is being sent.
async fn run_choice(
    state: &AppState,
    plan: &Plan,
    mut stream: GenerationStream,
    mut on_piece: impl FnMut(Piece) -> bool,
    client_gone: impl Future<Output = ()>,
) -> Result<Option<FinishedChoice>, ApiError> {
    let model = &state.model;
    let mut builder = ChoiceBuilder::new(&model.tokenizer, &plan.sampling.stop_tokens, &plan.stop, plan.tools.as_deref());
    let mut stopped_by_string = false;
    tokio::pin!(client_gone);
    loop {
        let token = tokio::select! {
            token = stream.next_token() => token,
            // a client waiting on text still held back (or a slow engine) is noticed too
            () = &mut client_gone => return Ok(None),
        };
        let Some(token) = token else { break };
        stopped_by_string = builder.push(token.token, token.logprob).map_err(|e| ApiError::server(e.to_string()))?;
        if let Some(piece) = builder.take_piece() {
            if !on_piece(piece) {
                return Ok(None);
            }
        }
        if stopped_by_string {
            break;
        }
    }
    // after a stop string the stream is dropped unfinished, which ends the sequence in the engine
    let engine_finish = if stopped_by_string { None } else { Some(stream.finish().await?.finish_reason) };
    let finished = builder.finish(engine_finish, new_tool_call_id).map_err(|e| ApiError::server(e.to_string()))?;
    state.metrics.generated_tokens.fetch_add(finished.tokens.len() as u64, Ordering::Relaxed);
    if !finished.tool_call_errors.is_empty() {
        let failures = state.metrics.tool_call_parse_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!("tool call(s) did not parse, returned as text ({failures} response(s) so far): {}", finished.tool_call_errors.join("; "));
    }
    Ok(Some(finished))
}

fn new_tool_call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Streams the response as server-sent events: one chunk per piece of each choice (choices
/// interleaved), each choice's last chunk with its `finish_reason`, then the usage chunk when
/// `stream_options.include_usage`, then `data: [DONE]`.
fn stream(state: Arc<AppState>, format: Format, jobs: Vec<Job>, permit: OwnedSemaphorePermit) -> Response {
    let (events, receiver) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let _permit = permit;
        let format = &format;
        let state = &state;
        for job in &jobs {
            if let Some(first) = format.opening_chunk(job.index, job.prompt) {
                let _ = events.send(first.to_string());
            }
        }
        let runs = jobs.into_iter().map(|job| {
            let events = events.clone();
            async move {
                let mut offset = 0;
                let send = |chunk: Json| events.send(chunk.to_string()).is_ok();
                let on_piece = |piece: Piece| send(format.piece_chunk(state, job.index, &piece, None, &[], &mut offset));
                let result = run_choice(state, &format.plan, job.stream, on_piece, events.closed()).await;
                match result {
                    Ok(Some(finished)) => {
                        send(format.piece_chunk(state, job.index, &finished.rest, Some(finished.finish_reason), &finished.tool_calls, &mut offset));
                        Some(finished.tokens.len())
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!("stream of choice {}: {}", job.index, e.message);
                        send(e.body());
                        None
                    }
                }
            }
        });
        let generated = join_all(runs).await;
        if events.is_closed() {
            state.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if format.plan.include_usage && generated.iter().all(Option::is_some) {
            let completion_tokens = generated.iter().flatten().sum();
            let _ = events.send(format.usage_chunk(completion_tokens).to_string());
        }
        let _ = events.send("[DONE]".into());
    });
    // when the client leaves, hyper drops this stream and the producer's sends start failing
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let data = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Event::default().data(data)), receiver))
    });
    Sse::new(body).into_response()
}

/// The JSON of one endpoint's responses and chunks.
struct Format {
    plan: Arc<Plan>,
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
}

impl Format {
    fn new(state: &AppState, plan: Arc<Plan>, endpoint: Endpoint) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Self { plan, endpoint, id: format!("{prefix}-{:032x}", rand::random::<u128>()), created: unix_now(), model: state.model.name.clone() }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn usage(&self, completion_tokens: usize) -> Json {
        let prompt_tokens: usize = self.plan.prompts.iter().map(Vec::len).sum();
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
    }

    /// The log-probs of `tokens` in the endpoint's format; `offset` is the completion text's
    /// length before them (text completions' `text_offset`).
    fn logprobs(&self, state: &AppState, tokens: &[u32], logprobs: &[f32], offset: &mut usize) -> Json {
        if !self.plan.logprobs {
            return Json::Null;
        }
        let texts: Vec<String> = tokens.iter().map(|&t| state.model.tokenizer.decode(&[t]).unwrap_or_default()).collect();
        match self.endpoint {
            Endpoint::Chat => json!({
                "content": texts.iter().zip(logprobs).map(|(text, logprob)| json!({
                    "token": text, "logprob": logprob, "bytes": text.as_bytes(), "top_logprobs": [],
                })).collect::<Vec<_>>(),
            }),
            Endpoint::Completion => {
                let offsets: Vec<usize> = texts
                    .iter()
                    .map(|text| {
                        let at = *offset;
                        *offset += text.len();
                        at
                    })
                    .collect();
                json!({"tokens": texts, "token_logprobs": logprobs, "top_logprobs": null, "text_offset": offsets})
            }
        }
    }

    /// The whole response; `finished` holds (choice index, prompt index, choice).
    fn whole(&self, state: &AppState, finished: &[(usize, usize, FinishedChoice)]) -> Json {
        let choices: Vec<Json> = finished
            .iter()
            .map(|(index, prompt, choice)| {
                let logprobs = self.logprobs(state, &choice.tokens, &choice.logprobs, &mut 0);
                let mut out = match self.endpoint {
                    Endpoint::Chat => {
                        let mut message = json!({"role": "assistant", "content": choice.content});
                        if !choice.tool_calls.is_empty() {
                            if choice.content.is_empty() {
                                message["content"] = Json::Null;
                            }
                            message["tool_calls"] = choice.tool_calls.iter().map(|c| c.to_json()).collect();
                        }
                        json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": choice.finish_reason})
                    }
                    Endpoint::Completion => json!({"index": index, "text": choice.content, "logprobs": logprobs, "finish_reason": choice.finish_reason}),
                };
                if self.plan.return_token_ids {
                    if self.endpoint == Endpoint::Completion {
                        out["prompt_token_ids"] = json!(self.plan.prompts[*prompt]);
                    }
                    out["token_ids"] = json!(choice.tokens);
                }
                out
            })
            .collect();
        let completion_tokens = finished.iter().map(|(_, _, c)| c.tokens.len()).sum();
        let mut response = json!({
            "id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
            "choices": choices, "usage": self.usage(completion_tokens),
        });
        if self.plan.return_token_ids && self.endpoint == Endpoint::Chat {
            response["prompt_token_ids"] = json!(self.plan.prompts[0]);
        }
        response
    }

    fn chunk(&self, choice: Json) -> Json {
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// The chunk that opens choice `index`: the assistant role for a chat, the prompt ids (when
    /// asked for) for a text completion.
    fn opening_chunk(&self, index: usize, prompt: usize) -> Option<Json> {
        match self.endpoint {
            Endpoint::Chat => {
                let mut chunk = self.chunk(json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}));
                if self.plan.return_token_ids {
                    chunk["prompt_token_ids"] = json!(self.plan.prompts[prompt]);
                }
                Some(chunk)
            }
            Endpoint::Completion if self.plan.return_token_ids => Some(self.chunk(json!({
                "index": index, "text": "", "logprobs": null, "finish_reason": null,
                "prompt_token_ids": self.plan.prompts[prompt], "token_ids": [],
            }))),
            Endpoint::Completion => None,
        }
    }

    fn piece_chunk(&self, state: &AppState, index: usize, piece: &Piece, finish_reason: Option<&str>, tool_calls: &[crate::choice::ToolCall], offset: &mut usize) -> Json {
        let logprobs = self.logprobs(state, &piece.tokens, &piece.logprobs, offset);
        let mut choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = json!({});
                if !piece.text.is_empty() {
                    delta["content"] = json!(piece.text);
                }
                if !tool_calls.is_empty() {
                    delta["tool_calls"] = tool_calls
                        .iter()
                        .enumerate()
                        .map(|(k, call)| {
                            let mut call = call.to_json();
                            call["index"] = json!(k);
                            call
                        })
                        .collect();
                }
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason})
            }
            Endpoint::Completion => json!({"index": index, "text": piece.text, "logprobs": logprobs, "finish_reason": finish_reason}),
        };
        if self.plan.return_token_ids {
            choice["token_ids"] = json!(piece.tokens);
        }
        self.chunk(choice)
    }

    fn usage_chunk(&self, completion_tokens: usize) -> Json {
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [], "usage": self.usage(completion_tokens)})
    }
}
