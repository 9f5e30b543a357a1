/// Why a generation request failed. Each message names the value at fault and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,

    #[error("the prompt has {len} tokens but the model's context (max_position_embeddings, or YaRN's factor × original_max_position_embeddings) is {max}: no room for a new token; shorten the prompt")]
    PromptTooLong { len: usize, max: usize },

    #[error("prompt token id {id} is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },

    #[error("the request may reach {positions} cached positions, {} blocks of block_size {block_size}, but the KV cache pool holds {blocks} blocks in all: raise engine.kv_cache_memory (or lower max_new_tokens)", positions.div_ceil(*block_size))]
    ExceedsKvCache { positions: usize, block_size: usize, blocks: usize },

    #[error("invalid sampling parameters: {0}")]
    InvalidParams(String),

    #[error("the engine has stopped (shut down, or its thread ended); start a new one")]
    Stopped,

    /// The model failed during a step; every sequence of that step receives this error.
    #[error("the model failed during generation: {0}")]
    Model(String),
}
