//! What the agent needs from a model: tokens in, tokens and their log-probs out.
//!
//! These mirror `forge_engine`'s `SamplingParams`, `FinishReason` and `Generation` field for
//! field; the agent does not depend on the engine, so at merge the mirrors are replaced by the
//! engine's types and `impl Policy for forge_engine::EngineHandle` forwards to
//! `EngineHandle::generate`.

use std::future::Future;

/// How to sample one assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub stop_tokens: Vec<u32>,
    pub seed: u64,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced; it is the last of `tokens`.
    Stop,
    /// `max_new_tokens` were produced without a stop token.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens only.
    pub tokens: Vec<u32>,
    /// log p(token | prefix) under the model's raw distribution (temperature 1, no top-p/k),
    /// natural log, one per token.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// A model the agent can sample from. Shared by many concurrent agents.
pub trait Policy: Send + Sync {
    fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
    ) -> impl Future<Output = anyhow::Result<Generation>> + Send;
}
