//! The rollout engine: batched decoding with a KV cache over the model's own weights, greedy and
//! seeded sampling (temperature, top-k, top-p), per-token log-probs of the raw distribution,
//! continuous batching behind an async handle that many agent tasks share, a paged KV cache (one
//! pool of fixed-size blocks under a memory budget, with admission control and preemption by
//! recompute) and automatic prefix caching on its blocks (an agent's next turn, or another sample
//! of a prompt, references the blocks already computed).
//!
//! ```no_run
//! # async fn demo(model: std::sync::Arc<forge_model::Qwen3ForCausalLM>) -> Result<(), forge_engine::EngineError> {
//! use forge_engine::{EngineConfig, EngineHandle, SamplingParams};
//! let engine = EngineHandle::start(model, EngineConfig::default())?;
//! let params = SamplingParams { max_new_tokens: 64, temperature: 0.7, stop_tokens: vec![151645], ..Default::default() };
//! let generation = engine.generate(vec![1, 2, 3], params).await?;
//! # Ok(()) }
//! ```

mod engine;
mod error;
mod kv_blocks;
pub mod generate;
pub mod sampling;

pub use engine::{EngineConfig, EngineHandle, FinishReason, Generation, GenerationStream, PausedEngine, PrefillStats, StreamedToken};
pub use error::EngineError;
pub use kv_blocks::KvCacheStats;
pub use sampling::SamplingParams;
