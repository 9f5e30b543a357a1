//! The engine thread and its handle: requests arrive on a tokio channel, sequences join the batch
//! between decoding steps (up to `max_batch_size`, and only while the KV pool has blocks for their
//! next prompt chunk; the rest wait in arrival order) and leave it when they finish, so many agent
//! tasks share one batch.
//!
//! Keys and values live in one pool of fixed-size blocks ([`KvBlockPool`], sized by a memory
//! budget) that every sequence draws on through its block table, as vLLM's PagedAttention: a
//! sequence takes a block when its positions reach one, blocks holding a prefix already computed
//! are shared by reference ([`crate::kv_blocks`]), and when a decoding sequence needs a block and
//! none is free the most recently admitted sequence is preempted: its blocks are freed and it goes
//! back to the front of the queue with its prompt and the tokens generated so far, to be computed
//! again (its sampler, tokens and log-probs are kept, so the result is as if never preempted).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::Instant;

use forge_model::forge_kernels::decode_attn;
use forge_model::{KvBlockPool, PagedStep, Qwen3ForCausalLM};
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::kv_blocks::{BlockManager, KvCacheStats, NO_PREFIX};
use crate::sampling::{Sampler, SamplingParams};
use crate::EngineError;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoded together in one step.
    pub max_batch_size: usize,
    /// Most tokens one step feeds the model (vLLM's `max_num_batched_tokens`): longer prompts are
    /// prefilled in chunks over several steps, decoding sequences first, so a step's activations
    /// stay bounded whatever the prompts. At least `max_batch_size`.
    pub max_step_tokens: usize,
    /// Automatic prefix caching on blocks (`kv_blocks.rs`): a prompt references the blocks already
    /// computed for its prefix (by a running sequence, or a finished one whose blocks are still
    /// cached) instead of computing them again.
    pub prefix_caching: bool,
    /// Bytes of the KV block pool (`engine.kv_cache_memory`): `kv_cache_memory /
    /// forge_model::memory::kv_block_bytes(..)` blocks. `None`: room for `max_batch_size`
    /// sequences of the model's whole context; on the host that is a cap (pages are committed only
    /// as blocks are first written), on a GPU (allocated at once) at most 90% of its free memory.
    pub kv_cache_memory: Option<u64>,
    /// Positions per KV block (vLLM's default 16): the granularity of allocation and of prefix
    /// sharing.
    pub block_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_batch_size: 32, max_step_tokens: 8192, prefix_caching: true, kv_cache_memory: None, block_size: 16 }
    }
}

impl EngineConfig {
    /// Blocks of the pool for `model`: the budget over the bytes of one block.
    fn num_blocks(&self, model: &Qwen3ForCausalLM) -> Result<usize, EngineError> {
        let config = model.config();
        let per_block = forge_model::memory::kv_block_bytes(config, self.block_size, model.dtype(), model.device());
        let Some(budget) = self.kv_cache_memory else {
            let full_batch = self.max_batch_size * config.max_context().div_ceil(self.block_size);
            // a GPU pool is allocated at once: at most vLLM's default share of what is free
            let on_gpu = decode_attn::supported(model.device(), config.num_attention_heads, config.num_key_value_heads, config.head_dim);
            let free = if on_gpu { forge_model::device::memory_available(model.device()) } else { None };
            return Ok(free.map_or(full_batch, |free| full_batch.min((free as f64 * DEFAULT_GPU_SHARE) as u64 as usize / per_block as usize)));
        };
        match (budget / per_block) as usize {
            0 => Err(EngineError::InvalidParams(format!(
                "engine.kv_cache_memory ({budget} bytes) holds no KV block: one block of block_size {} positions takes {per_block} bytes",
                self.block_size
            ))),
            blocks => Ok(blocks),
        }
    }
}

/// The share of a GPU's free memory a pool without a budget takes (vLLM's gpu_memory_utilization).
const DEFAULT_GPU_SHARE: f64 = 0.9;

/// Prompt tokens the engine was asked to process since it started, and how many of them came
/// from the prefix cache instead of a forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefillStats {
    pub prompt_tokens: u64,
    pub reused_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced; it is the last of `tokens`.
    Stop,
    /// `max_new_tokens` were produced, or the sequence reached `max_position_embeddings`.
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens only.
    pub tokens: Vec<u32>,
    /// `log p(token | prefix)` under the model's raw distribution (temperature 1, no top-p/k),
    /// natural log, one per token.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

type Reply = oneshot::Sender<Result<Generation, EngineError>>;

/// One new token of a streamed generation, sent the step it is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamedToken {
    pub token: u32,
    /// As [`Generation::logprobs`]: under the raw distribution.
    pub logprob: f32,
}

/// A generation whose tokens arrive as they are sampled ([`EngineHandle::generate_stream`]).
/// Dropping it cancels the generation, as dropping [`EngineHandle::generate`]'s future does.
pub struct GenerationStream {
    tokens: mpsc::UnboundedReceiver<StreamedToken>,
    result: oneshot::Receiver<Result<Generation, EngineError>>,
}

impl GenerationStream {
    /// The next new token; `None` once the generation has ended (then [`GenerationStream::finish`]
    /// says how) or failed.
    pub async fn next_token(&mut self) -> Option<StreamedToken> {
        self.tokens.recv().await
    }

    /// The whole generation, as [`EngineHandle::generate`] returns it; tokens not yet taken with
    /// [`GenerationStream::next_token`] are in it too.
    pub async fn finish(self) -> Result<Generation, EngineError> {
        self.result.await.map_err(|_| EngineError::Stopped)?
    }
}

type TokenSink = mpsc::UnboundedSender<StreamedToken>;

struct Request {
    prompt: Vec<u32>,
    params: SamplingParams,
    reply: Reply,
    /// Where each new token goes as it is sampled, for a streaming requester.
    stream: Option<TokenSink>,
}

enum Message {
    Generate(Request),
    Shutdown,
}

/// A cheap, cloneable handle to an engine thread. The thread ends when every handle is dropped
/// (after finishing the work it has) or on [`EngineHandle::shutdown`].
#[derive(Clone)]
pub struct EngineHandle {
    messages: mpsc::UnboundedSender<Message>,
    vocab_size: usize,
    max_positions: usize,
    /// The pool's shape, to refuse a request that could never fit it.
    num_blocks: usize,
    block_size: usize,
    shared: Arc<Shared>,
}

/// What the engine thread and its handles share besides the request channel.
#[derive(Default)]
struct Shared {
    /// Read-held by the engine for each decoding step; write-held by a trainer changing the weights.
    weights: RwLock<()>,
    /// Nanoseconds the engine spent in decoding steps since it started.
    busy_nanos: AtomicU64,
    /// Bumped by every pause: caches computed before it may hold keys of other weights.
    weights_version: AtomicU64,
    prompt_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    blocks_in_use: AtomicUsize,
    peak_blocks_in_use: AtomicUsize,
    blocks_cached: AtomicUsize,
    preemptions: AtomicU64,
}

/// While alive, the engine decodes nothing (between steps; sequences keep their place). A
/// trainer changes the weights through [`EngineHandle::update_weights`], which holds one.
pub struct PausedEngine<'a> {
    _weights: RwLockWriteGuard<'a, ()>,
}

impl EngineHandle {
    /// Starts the engine thread, which decodes with `model` (its weights are shared, not copied:
    /// a trainer holding the same `Arc` updates what the engine samples from).
    pub fn start(model: Arc<Qwen3ForCausalLM>, config: EngineConfig) -> Result<Self, EngineError> {
        if config.max_batch_size == 0 {
            return Err(EngineError::InvalidParams("max_batch_size must be at least 1".into()));
        }
        if config.max_step_tokens < config.max_batch_size {
            return Err(EngineError::InvalidParams(format!(
                "max_step_tokens ({}) must be at least max_batch_size ({}) so every decoding sequence fits a step",
                config.max_step_tokens, config.max_batch_size
            )));
        }
        if config.block_size == 0 {
            return Err(EngineError::InvalidParams("engine.block_size must be at least 1 position".into()));
        }
        let num_blocks = config.num_blocks(&model)?;
        let pool = model
            .new_kv_pool(num_blocks, config.block_size)
            .map_err(|e| EngineError::Model(format!("allocating the KV pool of {num_blocks} blocks of {} positions (engine.kv_cache_memory): {e}", config.block_size)))?;
        let (messages, inbox) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let handle = Self {
            messages,
            vocab_size: model.config().vocab_size,
            max_positions: model.config().max_context(),
            num_blocks,
            block_size: config.block_size,
            shared: shared.clone(),
        };
        let blocks = BlockManager::new(num_blocks, config.block_size);
        std::thread::Builder::new()
            .name("forge-engine".into())
            .spawn(move || EngineLoop { model, config, inbox, shared, waiting: VecDeque::new(), active: Vec::new(), pool, blocks, preemptions: 0 }.run())
            .map_err(|e| EngineError::Model(format!("could not start the engine thread: {e}")))?;
        Ok(handle)
    }

    /// Generates a continuation of `prompt`. Cancel-safe: dropping the future frees the sequence's
    /// place in the batch.
    pub async fn generate(&self, prompt: Vec<u32>, params: SamplingParams) -> Result<Generation, EngineError> {
        self.submit(prompt, params, None)?.await.map_err(|_| EngineError::Stopped)?
    }

    /// [`EngineHandle::generate`] for synchronous callers; must not be called from async code.
    pub fn generate_blocking(&self, prompt: Vec<u32>, params: SamplingParams) -> Result<Generation, EngineError> {
        self.submit(prompt, params, None)?.blocking_recv().map_err(|_| EngineError::Stopped)?
    }

    /// [`EngineHandle::generate`], with each new token delivered as soon as it is sampled (for a
    /// server streaming tokens to its client); batched with every other request alike.
    pub fn generate_stream(&self, prompt: Vec<u32>, params: SamplingParams) -> Result<GenerationStream, EngineError> {
        let (sink, tokens) = mpsc::unbounded_channel();
        let result = self.submit(prompt, params, Some(sink))?;
        Ok(GenerationStream { tokens, result })
    }

    /// The one way a trainer changes the weights the engine serves (they are updated in place:
    /// the optimizer's parameters are the served model's): waits for the current decoding step to
    /// end, runs `update` while no step runs, and bumps the weights' version, which empties the
    /// prefix cache (its entries hold keys of the old weights). Blocking.
    pub fn update_weights<T>(&self, update: impl FnOnce() -> T) -> T {
        let _paused = self.pause();
        update()
    }

    /// Waits for the current decoding step to end and holds the engine between steps until the
    /// guard is dropped (sequences keep their place and caches; the prefix cache is emptied, as the
    /// weights may change).
    pub fn pause(&self) -> PausedEngine<'_> {
        let weights = self.shared.weights.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.shared.weights_version.fetch_add(1, Ordering::Relaxed);
        PausedEngine { _weights: weights }
    }

    /// The KV pool's blocks: in use, cached, the peak, and preemptions since the engine started.
    pub fn kv_cache_stats(&self) -> KvCacheStats {
        KvCacheStats {
            blocks_total: self.num_blocks,
            block_size: self.block_size,
            blocks_in_use: self.shared.blocks_in_use.load(Ordering::Relaxed),
            peak_blocks_in_use: self.shared.peak_blocks_in_use.load(Ordering::Relaxed),
            blocks_cached: self.shared.blocks_cached.load(Ordering::Relaxed),
            preemptions: self.shared.preemptions.load(Ordering::Relaxed),
        }
    }

    /// Prompt tokens processed since the engine started, and those reused from the prefix cache.
    pub fn prefill_stats(&self) -> PrefillStats {
        PrefillStats {
            prompt_tokens: self.shared.prompt_tokens.load(Ordering::Relaxed),
            reused_tokens: self.shared.reused_tokens.load(Ordering::Relaxed),
        }
    }

    /// Seconds the engine has spent decoding since it started; idle time is wall time minus this.
    pub fn busy_seconds(&self) -> f64 {
        self.shared.busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Stops the engine: requests in flight and later ones fail with [`EngineError::Stopped`].
    pub fn shutdown(&self) {
        let _ = self.messages.send(Message::Shutdown);
    }

    fn submit(&self, prompt: Vec<u32>, params: SamplingParams, stream: Option<TokenSink>) -> Result<oneshot::Receiver<Result<Generation, EngineError>>, EngineError> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= self.max_positions {
            return Err(EngineError::PromptTooLong { len: prompt.len(), max: self.max_positions });
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EngineError::TokenOutOfVocab { id, vocab_size: self.vocab_size });
        }
        // the last new token is never fed back, so at most max_len - 1 positions are cached
        let positions = max_len(prompt.len(), &params, self.max_positions) - 1;
        if positions.div_ceil(self.block_size) > self.num_blocks {
            return Err(EngineError::ExceedsKvCache { positions, block_size: self.block_size, blocks: self.num_blocks });
        }
        let (reply, receiver) = oneshot::channel();
        self.messages.send(Message::Generate(Request { prompt, params, reply, stream })).map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }
}

/// Positions a request's sequence may occupy: the prompt and its new tokens, within the model's
/// context.
fn max_len(prompt_len: usize, params: &SamplingParams, max_positions: usize) -> usize {
    (prompt_len + params.max_new_tokens).min(max_positions)
}

/// A request's sequence, waiting or in the batch.
struct Sequence {
    reply: Reply,
    stream: Option<TokenSink>,
    sampler: Sampler,
    /// The prompt, then the new tokens: `history[..cached]` is in the blocks, the rest is fed at
    /// the next steps (the prompt, less what the prefix cache held, then the last sampled token).
    history: Vec<u32>,
    prompt_len: usize,
    max_len: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// The block table: block `i` holds positions `i·block_size..(i+1)·block_size`.
    blocks: Vec<u32>,
    /// Positions whose keys and values are in `blocks`.
    cached: usize,
    /// Leading blocks given to the prefix cache, and the chain hash after them.
    registered: usize,
    chain: u64,
    /// The weights version its blocks were computed with.
    weights_version: u64,
    /// Preempted at least once: its prompt was counted in the prefill stats already.
    preempted: bool,
}

impl Sequence {
    fn new(request: Request, max_positions: usize) -> Self {
        let prompt_len = request.prompt.len();
        let max_new = request.params.max_new_tokens;
        let max_len = max_len(prompt_len, &request.params, max_positions);
        let mut history = request.prompt;
        history.reserve(max_new);
        Self {
            reply: request.reply,
            stream: request.stream,
            sampler: Sampler::new(request.params),
            history,
            prompt_len,
            max_len,
            tokens: Vec::with_capacity(max_new),
            logprobs: Vec::with_capacity(max_new),
            blocks: Vec::new(),
            cached: 0,
            registered: 0,
            chain: NO_PREFIX,
            weights_version: 0,
            preempted: false,
        }
    }

    /// Tokens to feed before the next token can be sampled.
    fn pending(&self) -> usize {
        self.history.len() - self.cached
    }

    /// Blocks to add so that `n` more positions fit the block table.
    fn blocks_short(&self, n: usize, block_size: usize) -> usize {
        (self.cached + n).div_ceil(block_size).saturating_sub(self.blocks.len())
    }

    /// Appends the sampled `token`; returns why the sequence ends, if it does.
    fn advance(&mut self, (token, logprob): (u32, f32)) -> Option<FinishReason> {
        if let Some(stream) = &self.stream {
            // a streaming requester that went away is noticed through `reply` before the next step
            let _ = stream.send(StreamedToken { token, logprob });
        }
        self.tokens.push(token);
        self.logprobs.push(logprob);
        self.history.push(token);
        let params = self.sampler.params();
        if params.stop_tokens.contains(&token) {
            Some(FinishReason::Stop)
        } else if self.tokens.len() == params.max_new_tokens || self.prompt_len + self.tokens.len() == self.max_len {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    /// Answers the requester.
    fn finish(self, outcome: Result<FinishReason, EngineError>) {
        let result = outcome.map(|finish_reason| Generation { tokens: self.tokens, logprobs: self.logprobs, finish_reason });
        // the requester may have gone away; its result is then simply dropped
        let _ = self.reply.send(result);
    }
}

struct EngineLoop {
    model: Arc<Qwen3ForCausalLM>,
    config: EngineConfig,
    inbox: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    /// In arrival order, preempted sequences in front.
    waiting: VecDeque<Sequence>,
    /// In admission order: the last is the first to be preempted.
    active: Vec<Sequence>,
    pool: KvBlockPool,
    blocks: BlockManager,
    preemptions: u64,
}

impl EngineLoop {
    fn run(mut self) {
        let max_positions = self.model.config().max_context();
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                // idle: sleep until a request arrives; every handle gone ends the thread
                match self.inbox.blocking_recv() {
                    Some(Message::Generate(request)) => self.waiting.push_back(Sequence::new(request, max_positions)),
                    Some(Message::Shutdown) | None => return self.stop(),
                }
            }
            loop {
                match self.inbox.try_recv() {
                    Ok(Message::Generate(request)) => self.waiting.push_back(Sequence::new(request, max_positions)),
                    Ok(Message::Shutdown) => return self.stop(),
                    // disconnected: no new requests, but finish those we have
                    Err(_) => break,
                }
            }
            self.waiting.retain(|s| !s.reply.is_closed());
            for cancelled in extract(&mut self.active, |s| s.reply.is_closed()) {
                self.blocks.release(&cancelled.blocks);
            }
            let shared = self.shared.clone();
            // scheduled under the weights lock too, so a sequence's reused blocks and its first
            // step see the same weights
            let weights = shared.weights.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let weights_version = shared.weights_version.load(Ordering::Relaxed);
            self.blocks.sync_weights(weights_version);
            let take = self.schedule(weights_version);
            self.publish_stats();
            if self.active.is_empty() {
                continue;
            }
            let started = Instant::now();
            let finished = self.step(&take, weights_version);
            shared.busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            drop(weights);
            self.publish_stats();
            // reply only once the step is accounted, so a caller that has its result sees its busy time
            for (sequence, outcome) in finished {
                sequence.finish(outcome);
            }
        }
    }

    fn publish_stats(&self) {
        let in_use = self.blocks.in_use();
        self.shared.blocks_in_use.store(in_use, Ordering::Relaxed);
        self.shared.peak_blocks_in_use.fetch_max(in_use, Ordering::Relaxed);
        self.shared.blocks_cached.store(self.blocks.cached_unused(), Ordering::Relaxed);
        self.shared.preemptions.store(self.preemptions, Ordering::Relaxed);
    }

    /// Tokens each active sequence feeds this step (parallel to `active`), with the blocks they
    /// need allocated: every decoding sequence its one token, then prompts in admission order,
    /// chunked to the step's token budget; then waiting sequences are admitted while the batch,
    /// the budget and the pool have room. A running sequence short of blocks preempts the most
    /// recently admitted one (possibly itself), until it fits.
    fn schedule(&mut self, weights_version: u64) -> Vec<usize> {
        let block_size = self.blocks.block_size();
        let mut budget = self.config.max_step_tokens;
        let mut take = vec![0; self.active.len()];
        let decoding = (0..self.active.len()).filter(|&i| self.active[i].pending() == 1);
        let prefilling = (0..self.active.len()).filter(|&i| self.active[i].pending() > 1);
        // indices stay valid: preemption removes only from the end, and a removed index is skipped
        let order: Vec<usize> = decoding.chain(prefilling).collect();
        let mut preempted = false;
        for i in order {
            if i >= self.active.len() || budget == 0 {
                continue;
            }
            loop {
                let s = &self.active[i];
                // a prompt chunk shrinks to the blocks free; one position is the least any step takes
                let fits = (s.blocks.len() + self.blocks.free()) * block_size - s.cached;
                let n = s.pending().min(budget).min(fits);
                if n > 0 {
                    let short = s.blocks_short(n, block_size);
                    let new: Vec<u32> = (0..short).map(|_| self.blocks.allocate().expect("counted free")).collect();
                    self.active[i].blocks.extend(new);
                    take[i] = n;
                    budget -= n;
                    break;
                }
                let victim = self.active.len() - 1;
                budget += take.pop().expect("parallel to active");
                let sequence = self.active.pop().expect("the pool is short, so some sequence holds blocks");
                self.preempt(sequence);
                preempted = true;
                if victim == i {
                    break;
                }
            }
        }
        // vLLM's rule: no admission in a step that had to preempt (the pool is at its limit)
        while !preempted && budget > 0 && self.active.len() < self.config.max_batch_size {
            let Some(position) = self.waiting.iter().position(|s| !self.waits_for_shared_prefill(s)) else { break };
            let s = &self.waiting[position];
            // at least the last token is always computed: its logits give the next token
            let hits = if self.config.prefix_caching { self.blocks.lookup(&s.history[..s.history.len() - 1]) } else { Vec::new() };
            let reused = hits.len() * block_size;
            // the chunk is cut to what the whole pool could ever hold beside the hits, so a
            // prompt longer than the pool still starts (and goes on chunk by chunk)
            let n = (s.history.len() - reused).min(budget).min((self.blocks.num_blocks() - hits.len()) * block_size);
            let needed = (reused + n).div_ceil(block_size) - hits.len();
            if needed + self.blocks.unreferenced(&hits) > self.blocks.free() {
                break;
            }
            let mut s = self.waiting.remove(position).expect("found above");
            self.blocks.reference(&hits);
            s.blocks = hits;
            s.blocks.extend((0..needed).map(|_| self.blocks.allocate().expect("counted free")));
            s.cached = reused;
            s.registered = 0;
            s.chain = NO_PREFIX;
            // the hits are registered already: walk the chain past them
            for chunk in s.history[..reused].chunks_exact(block_size) {
                s.chain = self.blocks.register(s.blocks[s.registered], s.chain, chunk);
                s.registered += 1;
            }
            s.weights_version = weights_version;
            if !s.preempted {
                self.shared.prompt_tokens.fetch_add(s.prompt_len as u64, Ordering::Relaxed);
                self.shared.reused_tokens.fetch_add(reused as u64, Ordering::Relaxed);
            }
            self.active.push(s);
            take.push(n);
            budget -= n;
        }
        take
    }

    /// Frees a running sequence's blocks and puts it back at the front of the queue, to be
    /// computed again (prompt and tokens so far) when the pool has room.
    fn preempt(&mut self, mut sequence: Sequence) {
        self.blocks.release(&sequence.blocks);
        sequence.blocks.clear();
        sequence.cached = 0;
        sequence.preempted = true;
        self.preemptions += 1;
        tracing::debug!("KV pool exhausted: preempted a sequence of {} positions to recompute later", sequence.history.len());
        self.waiting.push_front(sequence);
    }

    /// Whether `sequence` should wait for a running one still prefilling most of its prompt, to
    /// share those blocks once they are computed instead of computing them again.
    fn waits_for_shared_prefill(&self, sequence: &Sequence) -> bool {
        let prompt = &sequence.history;
        let worth_waiting = |shared: usize| shared >= self.blocks.block_size() && 2 * shared >= prompt.len();
        self.config.prefix_caching && self.active.iter().any(|s| s.pending() > 1 && worth_waiting(shared_prefix(&s.history, prompt)))
    }

    /// One forward pass over the active sequences' scheduled tokens, then one new token for each
    /// sequence whose tokens are now all in its blocks; returns the sequences that ended (all of
    /// them, with the error, if the step failed), for the caller to answer, their blocks freed.
    fn step(&mut self, take: &[usize], weights_version: u64) -> Vec<(Sequence, Result<FinishReason, EngineError>)> {
        let steps: Vec<PagedStep> = self
            .active
            .iter()
            .zip(take)
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| PagedStep { block_table: &s.blocks, cached: s.cached, tokens: &s.history[s.cached..s.cached + n] })
            .collect();
        let fed = steps.len();
        let logits = self.model.forward_paged(&mut self.pool, &steps).and_then(|l| Ok(l.flatten_all()?.to_vec1::<f32>()?));
        drop(steps);
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => {
                tracing::error!("engine step failed for {} sequence(s): {e}", self.active.len());
                let failed: Vec<Sequence> = self.active.drain(..).collect();
                for s in &failed {
                    self.blocks.release(&s.blocks);
                }
                return failed.into_iter().map(|sequence| (sequence, Err(EngineError::Model(e.to_string())))).collect();
            }
        };
        let vocab = logits.len() / fed;
        let block_size = self.blocks.block_size();
        let share = self.config.prefix_caching;
        // a sequence with tokens left to feed keeps them for the next step; the others sample
        let mut rows = logits.chunks_exact(vocab);
        let mut samples = vec![false; self.active.len()];
        let mut sampling: Vec<(&mut Sequence, &[f32])> = Vec::new();
        for ((s, &n), sample) in self.active.iter_mut().zip(take).zip(&mut samples).filter(|((_, &n), _)| n > 0) {
            let row = rows.next().expect("one logits row per fed sequence");
            s.cached += n;
            // blocks now full go to the prefix cache (if computed with the current weights alone)
            while share && s.weights_version == weights_version && (s.registered + 1) * block_size <= s.cached {
                let tokens = &s.history[s.registered * block_size..(s.registered + 1) * block_size];
                s.chain = self.blocks.register(s.blocks[s.registered], s.chain, tokens);
                s.registered += 1;
            }
            if s.pending() == 0 {
                *sample = true;
                sampling.push((s, row));
            }
        }
        // each sampling sequence reads a whole vocabulary row: spread them over the cores
        let picks: Vec<(u32, f32)> = sampling.into_par_iter().map(|(s, row)| s.sampler.sample(row)).collect();
        let mut picks = picks.into_iter();
        let mut finished = Vec::new();
        for (mut sequence, sample) in std::mem::take(&mut self.active).into_iter().zip(samples) {
            let outcome = if sample { sequence.advance(picks.next().expect("a pick per sampling sequence")) } else { None };
            match outcome {
                Some(reason) => {
                    self.blocks.release(&sequence.blocks);
                    finished.push((sequence, Ok(reason)));
                }
                None => self.active.push(sequence),
            }
        }
        finished
    }

    /// Fails everything queued or running with [`EngineError::Stopped`].
    fn stop(mut self) {
        self.inbox.close();
        while let Ok(message) = self.inbox.try_recv() {
            if let Message::Generate(request) = message {
                let _ = request.reply.send(Err(EngineError::Stopped));
            }
        }
        for sequence in self.waiting.into_iter().chain(self.active) {
            let _ = sequence.reply.send(Err(EngineError::Stopped));
        }
    }
}

/// How many leading tokens `a` and `b` share.
fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Removes and returns the items of `items` for which `pred` holds, keeping the others in order.
fn extract<T>(items: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep) = std::mem::take(items).into_iter().partition(pred);
    *items = keep;
    out
}
