//! What the agent needs from a model: tokens in, tokens and their log-probs out. The rollout
//! engine is the production policy; tests drive the loop with scripted ones.

use std::future::Future;

pub use forge_engine::{FinishReason, Generation, SamplingParams};

/// A model the agent can sample from. Shared by many concurrent agents.
pub trait Policy: Send + Sync {
    fn generate(&self, prompt: &[u32], params: &SamplingParams) -> impl Future<Output = anyhow::Result<Generation>> + Send;
}

/// The engine batches the generations of every agent that shares its handle.
impl Policy for forge_engine::EngineHandle {
    async fn generate(&self, prompt: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
        Ok(forge_engine::EngineHandle::generate(self, prompt.to_vec(), params.clone()).await?)
    }
}
