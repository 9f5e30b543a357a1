//! The engine thread and its handle: requests arrive on a tokio channel, sequences join the batch
//! between decoding steps (up to `max_batch_size`; the rest wait in arrival order) and leave it when
//! they finish, so many agent tasks share one batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::Instant;

use forge_model::{KvCache, Qwen3ForCausalLM, SequenceStep};
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::prefix_cache::{shared_prefix, Hit, PrefixCache};
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
    /// Automatic prefix caching (`prefix_cache.rs`): keep finished sequences' KV caches, and
    /// prefill a prompt only from where it leaves what a kept or running sequence has computed.
    /// Kept and running caches together never exceed `max_batch_size`, so memory stays that of a
    /// full batch.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_batch_size: 32, max_step_tokens: 8192, prefix_caching: true }
    }
}

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
        let (messages, inbox) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let handle = Self {
            messages,
            vocab_size: model.config().vocab_size,
            max_positions: model.config().max_context(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("forge-engine".into())
            .spawn(move || {
                EngineLoop { model, config, inbox, shared, waiting: VecDeque::new(), active: Vec::new(), prefix_cache: PrefixCache::new() }.run()
            })
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
        let (reply, receiver) = oneshot::channel();
        self.messages.send(Message::Generate(Request { prompt, params, reply, stream })).map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }
}

/// A sequence in the batch.
struct Sequence {
    reply: Reply,
    stream: Option<TokenSink>,
    sampler: Sampler,
    cache: KvCache,
    /// Tokens to feed at the next step: the prompt (less what the prefix cache held), then the
    /// last sampled token.
    pending: Vec<u32>,
    /// The prompt, then the new tokens: `history[..cache.len()]` is what the cache holds.
    history: Vec<u32>,
    prompt_len: usize,
    /// The capacity the sequence's positions need; a cache from the prefix cache may be larger.
    max_len: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// The weights version its cache was begun with.
    weights_version: u64,
}

impl Sequence {
    /// Positions a request's sequence may occupy: the last new token is never fed back, so this
    /// holds every position that is.
    fn max_len(model: &Qwen3ForCausalLM, request: &Request) -> usize {
        (request.prompt.len() + request.params.max_new_tokens).min(model.config().max_context())
    }

    /// The request's sequence over `cache`, whose first `reused` positions hold the prompt's first
    /// tokens.
    fn new(request: Request, cache: KvCache, reused: usize, max_len: usize, weights_version: u64) -> Self {
        let prompt_len = request.prompt.len();
        let max_new = request.params.max_new_tokens;
        let mut history = request.prompt;
        history.reserve(max_new);
        Self {
            reply: request.reply,
            stream: request.stream,
            sampler: Sampler::new(request.params),
            cache,
            pending: history[reused..].to_vec(),
            history,
            prompt_len,
            max_len,
            tokens: Vec::with_capacity(max_new),
            logprobs: Vec::with_capacity(max_new),
            weights_version,
        }
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
        self.pending.clear();
        self.pending.push(token);
        let params = self.sampler.params();
        if params.stop_tokens.contains(&token) {
            Some(FinishReason::Stop)
        } else if self.tokens.len() == params.max_new_tokens || self.prompt_len + self.tokens.len() == self.max_len {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    /// Answers the requester; returns what the prefix cache may keep: the tokens and the cache.
    fn finish(self, outcome: Result<FinishReason, EngineError>) -> Option<(Vec<u32>, KvCache, u64)> {
        let ok = outcome.is_ok();
        let result = outcome.map(|finish_reason| Generation { tokens: self.tokens, logprobs: self.logprobs, finish_reason });
        // the requester may have gone away; its result is then simply dropped
        let _ = self.reply.send(result);
        ok.then_some((self.history, self.cache, self.weights_version))
    }
}

struct EngineLoop {
    model: Arc<Qwen3ForCausalLM>,
    config: EngineConfig,
    inbox: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    waiting: VecDeque<Request>,
    active: Vec<Sequence>,
    prefix_cache: PrefixCache,
}

impl EngineLoop {
    fn run(mut self) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                // idle: sleep until a request arrives; every handle gone ends the thread
                match self.inbox.blocking_recv() {
                    Some(Message::Generate(request)) => self.waiting.push_back(request),
                    Some(Message::Shutdown) | None => return self.stop(),
                }
            }
            loop {
                match self.inbox.try_recv() {
                    Ok(Message::Generate(request)) => self.waiting.push_back(request),
                    Ok(Message::Shutdown) => return self.stop(),
                    // disconnected: no new requests, but finish those we have
                    Err(_) => break,
                }
            }
            self.waiting.retain(|r| !r.reply.is_closed());
            self.active.retain(|s| !s.reply.is_closed());
            let shared = self.shared.clone();
            // admitted under the weights lock too, so a sequence's reused cache and its first step
            // see the same weights
            let weights = shared.weights.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let weights_version = shared.weights_version.load(Ordering::Relaxed);
            self.prefix_cache.sync_weights(weights_version);
            let mut held_back = Vec::new();
            while self.active.len() < self.config.max_batch_size {
                let Some(request) = self.waiting.pop_front() else { break };
                if self.waits_for_shared_prefill(&request.prompt) {
                    held_back.push(request);
                    continue;
                }
                if let Some(sequence) = self.admit(request, weights_version) {
                    self.active.push(sequence);
                }
            }
            for request in held_back.into_iter().rev() {
                self.waiting.push_front(request);
            }
            if self.active.is_empty() {
                continue;
            }
            let started = Instant::now();
            let finished = self.step();
            shared.busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            drop(weights);
            // reply only once the step is accounted, so a caller that has its result sees its busy time
            for (sequence, outcome) in finished {
                if let Some((tokens, cache, version)) = sequence.finish(outcome) {
                    if self.config.prefix_caching {
                        self.prefix_cache.insert(tokens, cache, version);
                    }
                }
            }
        }
    }

    /// The request's sequence over a cache from the prefix cache or a new one; `None` when no
    /// cache can be allocated (the requester is told).
    fn admit(&mut self, request: Request, weights_version: u64) -> Option<Sequence> {
        let max_len = Sequence::max_len(&self.model, &request);
        self.shared.prompt_tokens.fetch_add(request.prompt.len() as u64, Ordering::Relaxed);
        let hit = self.reuse(&request.prompt, max_len, weights_version);
        // kept caches give way to running ones: together at most a full batch (a no-op after a hit
        // that took its entry)
        self.prefix_cache.evict_to(self.config.max_batch_size - self.active.len() - 1);
        if let Some(hit) = hit {
            self.shared.reused_tokens.fetch_add(hit.reused as u64, Ordering::Relaxed);
            return Some(Sequence::new(request, hit.cache, hit.reused, max_len, weights_version));
        }
        let cache = self.model.new_kv_cache(max_len).or_else(|_| {
            // the kept caches may be what fills the device: retry without them
            self.prefix_cache.clear();
            self.model.new_kv_cache(max_len)
        });
        match cache {
            Ok(cache) => Some(Sequence::new(request, cache, 0, max_len, weights_version)),
            Err(e) => {
                let _ = request.reply.send(Err(EngineError::Model(format!("allocating a KV cache of {max_len} positions: {e}"))));
                None
            }
        }
    }

    /// Whether `prompt` should wait for a running sequence still prefilling most of it, to copy
    /// those positions once they are computed instead of computing them again.
    fn waits_for_shared_prefill(&self, prompt: &[u32]) -> bool {
        let worth_waiting = |shared: usize| shared > 1 && 2 * shared >= prompt.len();
        self.config.prefix_caching && self.active.iter().any(|s| s.tokens.is_empty() && worth_waiting(shared_prefix(&s.history[..s.prompt_len], prompt)))
    }

    /// A cache holding the longest prefix of `prompt` already computed with the current weights:
    /// from the prefix cache (on a tie: it may hand over its entry without a copy), or copied from
    /// a running sequence.
    fn reuse(&mut self, prompt: &[u32], max_len: usize, weights_version: u64) -> Option<Hit> {
        if !self.config.prefix_caching {
            return None;
        }
        let running = self
            .active
            .iter()
            .filter(|s| s.weights_version == weights_version)
            .map(|s| (shared_prefix(&s.history[..s.cache.len()], prompt), s))
            .max_by_key(|(common, _)| *common);
        let offered = running.map_or(0, |(common, _)| common);
        if let Some(hit) = self.prefix_cache.take(prompt, max_len, offered) {
            return Some(hit);
        }
        let (common, sequence) = running?;
        let reused = common.min(prompt.len() - 1);
        (reused > 0).then(|| Hit::copy(&sequence.cache, reused, max_len)).flatten()
    }

    /// Tokens each active sequence feeds this step: every decoding sequence its one token, then
    /// prompts in arrival order, chunked to the step's token budget.
    fn plan_step(&self) -> Vec<usize> {
        let mut budget = self.config.max_step_tokens;
        let mut take = vec![0; self.active.len()];
        for (t, _) in take.iter_mut().zip(&self.active).filter(|(_, s)| s.pending.len() == 1) {
            *t = 1;
            budget -= 1;
        }
        for (t, s) in take.iter_mut().zip(&self.active).filter(|(_, s)| s.pending.len() > 1) {
            *t = s.pending.len().min(budget);
            budget -= *t;
        }
        take
    }

    /// One forward pass over the active sequences' planned tokens, then one new token for each
    /// sequence whose prompt is now wholly in its cache; returns the sequences that ended (all of
    /// them, with the error, if the step failed), for the caller to answer.
    fn step(&mut self) -> Vec<(Sequence, Result<FinishReason, EngineError>)> {
        let take = self.plan_step();
        let mut steps: Vec<SequenceStep> = self
            .active
            .iter_mut()
            .zip(&take)
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| SequenceStep { cache: &mut s.cache, tokens: &s.pending[..n] })
            .collect();
        let fed = steps.len();
        let logits = self.model.forward_step(&mut steps).and_then(|l| Ok(l.flatten_all()?.to_vec1::<f32>()?));
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => {
                tracing::error!("engine step failed for {} sequence(s): {e}", self.active.len());
                return self.active.drain(..).map(|sequence| (sequence, Err(EngineError::Model(e.to_string())))).collect();
            }
        };
        let vocab = logits.len() / fed;
        // a sequence with prompt left over keeps it for the next step; the others sample
        let mut rows = logits.chunks_exact(vocab);
        let mut samples = vec![false; self.active.len()];
        let mut sampling: Vec<(&mut Sequence, &[f32])> = Vec::new();
        for ((s, &n), sample) in self.active.iter_mut().zip(&take).zip(&mut samples).filter(|((_, &n), _)| n > 0) {
            let row = rows.next().expect("one logits row per fed sequence");
            if n < s.pending.len() {
                s.pending.drain(..n);
            } else {
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
                Some(reason) => finished.push((sequence, Ok(reason))),
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
                self.waiting.push_back(request);
            }
        }
        for request in self.waiting {
            let _ = request.reply.send(Err(EngineError::Stopped));
        }
        for sequence in self.active {
            let _ = sequence.reply.send(Err(EngineError::Stopped));
        }
    }
}
