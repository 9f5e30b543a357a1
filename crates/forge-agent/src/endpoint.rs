//! A policy on any OpenAI-compatible server: vLLM, SGLang, `forge serve`, or a hosted endpoint
//! (`forge eval swebench --endpoint URL --served-model NAME`).
//!
//! Each turn is one `POST {URL}/v1/completions` whose `prompt` is the turn's token ids (the agent
//! renders the chat template itself, so the record the server continues is exactly the one RL
//! trains on), with `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `stop_token_ids` (the
//! end-of-turn id), `logprobs: 0` (the sampled tokens' log-probs) and `return_token_ids: true`.
//! vLLM ≥ 0.10 and `forge serve` answer with each choice's `token_ids`, so no generated token is
//! re-tokenised. A server that returns only text (older vLLM, SGLang without token ids, hosted
//! APIs) gets its text encoded with the model's tokenizer (plus the end-of-turn id when the turn
//! stopped), and the log-probs of such a generation are *unavailable*: they are all 0 in the
//! record, and the generation is counted in [`EndpointUsage::generations_without_logprobs`]
//! (reported in the eval summary; RL must not train on such a run's log-probs). The same holds
//! when the server sends no log-probs, or log-probs that do not align with its token ids.
//!
//! Transient failures — connection errors, 429 and 5xx — are retried up to
//! [`EndpointConfig::max_retries`] times with exponential backoff (a `Retry-After` of a 429/503 is
//! honoured, capped by the maximum backoff); each attempt has a timeout, and at most
//! [`EndpointConfig::max_concurrency`] requests are in flight at once. A request that still fails
//! is an error of the policy: the episode ends as [`crate::Status::InfraError`], which evaluation
//! leaves out of the predictions and runs again on resume (never "unresolved").
//!
//! The client is reqwest's async one (inside the agents' tokio runtime) with rustls and its default
//! aws-lc provider for https: no OpenSSL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use serde_json::{json, Value};

use crate::chat::ChatFormat;
use crate::policy::{FinishReason, Generation, Policy, SamplingParams};

/// Where and how to reach the server.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub url: String,
    /// The `model` of every request (vLLM's `--served-model-name`).
    pub served_model: String,
    /// Sent as `Authorization: Bearer {api_key}`.
    pub api_key: Option<String>,
    /// Retries of a request after a connection error, 429 or 5xx.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles every retry, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The timeout of one attempt (connection, generation and response).
    pub request_timeout: Duration,
    /// Requests in flight at once, at most.
    pub max_concurrency: usize,
    /// Ask for the sampled tokens' log-probs (`logprobs: 0`); without, they are 0 and counted as
    /// unavailable.
    pub logprobs: bool,
}

impl EndpointConfig {
    pub fn new(url: &str, served_model: &str) -> Self {
        EndpointConfig {
            url: url.to_string(),
            served_model: served_model.to_string(),
            api_key: None,
            max_retries: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(900),
            max_concurrency: 64,
            logprobs: true,
        }
    }

    /// `{url}/v1/{path}`.
    fn api_url(&self, path: &str) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/{path}")
    }
}

/// What the endpoint reported and how the requests went, summed over every generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointUsage {
    /// Generations answered.
    pub generations: u64,
    /// `usage.prompt_tokens` and `usage.completion_tokens` of the responses.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Attempts retried (connection errors, 429, 5xx), and requests that failed for good.
    pub retries: u64,
    pub failed_requests: u64,
    /// Responses without `token_ids`, whose text was re-tokenised.
    pub generations_without_token_ids: u64,
    /// Generations whose log-probs are unavailable (all 0 in the token record).
    pub generations_without_logprobs: u64,
}

#[derive(Default)]
struct Counters {
    generations: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    retries: AtomicU64,
    failed_requests: AtomicU64,
    without_token_ids: AtomicU64,
    without_logprobs: AtomicU64,
}

/// A model the server lists at `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    pub id: String,
    /// vLLM's and forge serve's context length, when the server says.
    pub max_model_len: Option<usize>,
}

/// [`Policy`] through an OpenAI-compatible `/v1/completions`.
pub struct EndpointPolicy {
    config: EndpointConfig,
    client: reqwest::Client,
    chat: Arc<ChatFormat>,
    in_flight: tokio::sync::Semaphore,
    counters: Counters,
}

impl EndpointPolicy {
    /// `chat`'s tokenizer re-tokenises the text of responses without token ids.
    pub fn new(config: EndpointConfig, chat: Arc<ChatFormat>) -> anyhow::Result<Self> {
        if config.served_model.is_empty() {
            bail!("the served model name is empty");
        }
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            bail!("the endpoint URL {:?} must start with http:// or https://", config.url);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).context("the API key is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(30)))
            .build()
            .context("building the HTTP client")?;
        let in_flight = tokio::sync::Semaphore::new(config.max_concurrency.max(1));
        Ok(EndpointPolicy { config, client, chat, in_flight, counters: Counters::default() })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The token usage and request statistics so far.
    pub fn usage(&self) -> EndpointUsage {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EndpointUsage {
            generations: get(&c.generations),
            prompt_tokens: get(&c.prompt_tokens),
            completion_tokens: get(&c.completion_tokens),
            retries: get(&c.retries),
            failed_requests: get(&c.failed_requests),
            generations_without_token_ids: get(&c.without_token_ids),
            generations_without_logprobs: get(&c.without_logprobs),
        }
    }

    /// `GET /v1/models` (with the retries of every request).
    pub async fn served_models(&self) -> anyhow::Result<Vec<ServedModel>> {
        let url = self.config.api_url("models");
        let body = self.send(|| self.client.get(&url)).await?;
        let data = body["data"].as_array().ok_or_else(|| anyhow!("{url} answered without a `data` list: {body}"))?;
        Ok(data
            .iter()
            .filter_map(|m| {
                let id = m["id"].as_str()?.to_string();
                Some(ServedModel { id, max_model_len: m["max_model_len"].as_u64().map(|n| n as usize) })
            })
            .collect())
    }

    /// The request body of a generation.
    pub fn request_body(&self, prompt: &[u32], params: &SamplingParams) -> Value {
        let mut body = json!({
            "model": self.config.served_model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            // vLLM and SGLang: -1 = off (0 is refused by older vLLM)
            "top_k": if params.top_k == 0 { -1 } else { params.top_k as i64 },
            "seed": params.seed,
            "stop_token_ids": params.stop_tokens,
            "return_token_ids": true,
            "n": 1,
            "stream": false,
        });
        if self.config.logprobs {
            body["logprobs"] = json!(0);
        }
        body
    }

    /// Sends the request `build` makes until it succeeds or is not worth retrying, and returns
    /// the JSON of the response.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let mut attempt = 0u32;
        loop {
            let outcome = {
                let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
                attempt_once(build()).await
            };
            let (error, retry_after) = match outcome {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fatal(error) => {
                    self.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
                Attempt::Transient(error, retry_after) => (error, retry_after),
            };
            if attempt >= self.config.max_retries {
                self.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                return Err(error.context(format!("{} attempts failed", attempt + 1)));
            }
            let backoff = self.config.initial_backoff.saturating_mul(1u32 << attempt.min(20)).min(self.config.max_backoff);
            let wait = retry_after.map_or(backoff, |r| r.min(self.config.max_backoff));
            tracing::warn!(error = %format!("{error:#}"), attempt = attempt + 1, wait_seconds = wait.as_secs_f64(), "endpoint request failed; retrying");
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The generation in a `/v1/completions` response.
    fn parse_generation(&self, response: &Value, params: &SamplingParams) -> anyhow::Result<Generation> {
        let choice = response["choices"].get(0).ok_or_else(|| anyhow!("the response has no choices: {response}"))?;
        let usage = &response["usage"];
        self.counters.prompt_tokens.fetch_add(usage["prompt_tokens"].as_u64().unwrap_or(0), Ordering::Relaxed);
        self.counters.completion_tokens.fetch_add(usage["completion_tokens"].as_u64().unwrap_or(0), Ordering::Relaxed);
        self.counters.generations.fetch_add(1, Ordering::Relaxed);

        let mut finish_reason = match choice["finish_reason"].as_str() {
            Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            other => bail!("unexpected finish_reason {other:?} (this policy sends no stop strings or tools): {choice}"),
        };
        let (mut tokens, mut logprobs) = match choice.get("token_ids").filter(|ids| !ids.is_null()) {
            Some(ids) => {
                let tokens: Vec<u32> = serde_json::from_value(ids.clone()).with_context(|| format!("token_ids is not a list of token ids: {ids}"))?;
                let logprobs = choice["logprobs"]["token_logprobs"]
                    .as_array()
                    .filter(|l| l.len() == tokens.len())
                    .and_then(|l| l.iter().map(|x| x.as_f64().map(|x| x as f32)).collect::<Option<Vec<f32>>>());
                (tokens, logprobs)
            }
            None => {
                self.counters.without_token_ids.fetch_add(1, Ordering::Relaxed);
                let text = choice["text"].as_str().ok_or_else(|| anyhow!("the choice has neither token_ids nor text: {choice}"))?;
                (self.chat.encode(text).context("re-tokenising the response text")?, None)
            }
        };
        // A stopped turn ends with its stop token (as the engine's); the text of a response does not
        // have it, and a server might leave it out of token_ids: put it back.
        if finish_reason == FinishReason::Stop && !tokens.last().is_some_and(|t| params.stop_tokens.contains(t)) {
            let stopped_by = choice["stop_reason"].as_u64().map(|t| t as u32).filter(|t| params.stop_tokens.contains(t));
            if let Some(stop) = stopped_by.or_else(|| params.stop_tokens.first().copied()) {
                tokens.push(stop);
                logprobs = None;
            }
        }
        if tokens.len() > params.max_new_tokens {
            tokens.truncate(params.max_new_tokens);
            finish_reason = FinishReason::Length;
            logprobs = logprobs.map(|mut l| {
                l.truncate(params.max_new_tokens);
                l
            });
        }
        let logprobs = logprobs.unwrap_or_else(|| {
            self.counters.without_logprobs.fetch_add(1, Ordering::Relaxed);
            vec![0.0; tokens.len()]
        });
        Ok(Generation { tokens, logprobs, finish_reason })
    }
}

enum Attempt {
    Done(Value),
    /// Worth retrying, after the server's `Retry-After` if it gave one.
    Transient(anyhow::Error, Option<Duration>),
    Fatal(anyhow::Error),
}

async fn attempt_once(request: reqwest::RequestBuilder) -> Attempt {
    let response = match request.send().await {
        Ok(response) => response,
        // a timed-out generation would likely time out again
        Err(e) if e.is_timeout() => return Attempt::Fatal(anyhow!(e).context("the request timed out")),
        Err(e) if e.is_builder() => return Attempt::Fatal(anyhow!(e)),
        Err(e) => return Attempt::Transient(anyhow!(e), None),
    };
    let status = response.status();
    let url = response.url().to_string();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = response.text().await.unwrap_or_default();
        let error = anyhow!("{url} answered {status}: {}", body.chars().take(2000).collect::<String>());
        return if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Transient(error, retry_after)
        } else {
            Attempt::Fatal(error)
        };
    }
    match response.bytes().await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Attempt::Done(value),
            Err(e) => Attempt::Fatal(anyhow!("{url} answered {status} with a body that is not JSON ({e}): {}", String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]))),
        },
        Err(e) if e.is_timeout() => Attempt::Fatal(anyhow!(e).context("reading the response timed out")),
        // the connection broke mid-response
        Err(e) => Attempt::Transient(anyhow!(e).context("reading the response"), None),
    }
}

impl Policy for EndpointPolicy {
    async fn generate(&self, prompt: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
        let url = self.config.api_url("completions");
        let body = self.request_body(prompt, params);
        let response = self.send(|| self.client.post(&url).json(&body)).await.with_context(|| format!("POST {url} (model {})", self.config.served_model))?;
        self.parse_generation(&response, params).with_context(|| format!("the response of POST {url}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_a_base_with_or_without_v1() {
        for base in ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"] {
            assert_eq!(EndpointConfig::new(base, "m").api_url("completions"), "http://h:8000/v1/completions");
        }
    }
}
