//! Incremental decoding with the model's own weights: new tokens of several sequences, each at its
//! own position, in one forward pass over their key/value caches: one contiguous [`KvCache`] per
//! sequence ([`Qwen3ForCausalLM::forward_step`]), or blocks of a shared [`KvBlockPool`] listed by
//! each sequence's block table ([`Qwen3ForCausalLM::forward_paged`], the engine's).
//!
//! The new tokens of all sequences are laid out as one ragged row `[1, n, hidden]`, so embeddings,
//! projections and the MLP run as single matmuls whether a sequence contributes a whole prompt
//! (prefill) or one token (decode). Only attention is per sequence, over its own cache.

use candle_core::{DType, Tensor};
use forge_kernels::decode_attn::{self, LayerCache as DeviceLayer};
use forge_kernels::{rms_norm, rope};
use rayon::prelude::*;

use super::{linear, Attention, LayerInputs, Qwen3ForCausalLM};
use crate::kv_cache::attend_contiguous;
use crate::paged_kv::{KvBlockPool, PagedStep};
use crate::{KvCache, ModelError, Result};

/// One sequence's share of a forward step: the tokens to append at positions `cache.len()..`.
pub struct SequenceStep<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// Below this many multiply-adds, attention runs on one thread: rayon's fork/join costs more.
const PARALLEL_ATTENTION_MIN_WORK: usize = 1 << 16;

/// Where a step's sequences keep their keys and values.
enum StepCaches<'s, 'a> {
    Contiguous(&'s mut [SequenceStep<'a>]),
    Paged(&'s mut KvBlockPool, &'s [PagedStep<'a>]),
}

impl StepCaches<'_, '_> {
    fn on_device(&self) -> bool {
        match self {
            Self::Contiguous(steps) => steps[0].cache.on_device(),
            Self::Paged(pool, _) => pool.on_device(),
        }
    }
}

/// One layer of a sequence's blocks gathered into a contiguous cache: keys, values, length.
type Gathered = (Vec<f32>, Vec<f32>, usize);

/// The keys and values of each sequence of a step, as host attention reads them.
enum HostLayers<'c> {
    Caches(Vec<&'c KvCache>),
    /// The blocks of each sequence's table: read in place by a decoding row; gathered once into a
    /// contiguous cache (keys, values, length) for the rows of a prompt chunk, which all read
    /// them (one score product per row rather than one per block and row). The same bits either way.
    Paged(&'c KvBlockPool, &'c [PagedStep<'c>], Vec<Option<Gathered>>),
}

impl HostLayers<'_> {
    #[allow(clippy::too_many_arguments)] // one attention's operands
    fn attend(&self, layer: usize, sequence: usize, position: usize, query: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32], d: usize) {
        match self {
            Self::Caches(caches) => caches[sequence].attend(layer, position, query, scale, scores, out),
            Self::Paged(_, _, gathered) if gathered[sequence].is_some() => {
                let (keys, values, len) = gathered[sequence].as_ref().expect("checked");
                attend_contiguous(keys, values, *len, d, position, query, scale, scores, out);
            }
            Self::Paged(pool, steps, _) => pool.attend(layer, steps[sequence].block_table, position, query, scale, scores, out),
        }
    }
}

impl Qwen3ForCausalLM {
    /// An empty cache for one sequence of up to `capacity` tokens: on the model's GPU where the
    /// decode kernels serve its attention shape, else on the host.
    pub fn new_kv_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::for_model(&self.config, capacity, self.dtype(), self.device())
    }

    /// Appends each sequence's tokens to its cache and returns the next-token logits after each
    /// sequence's last new token: `[steps.len(), vocab]` f32. On error no cache is advanced.
    pub fn forward_step(&self, steps: &mut [SequenceStep<'_>]) -> Result<Tensor> {
        if steps.is_empty() {
            return Err(ModelError::Invalid("forward_step needs at least one sequence".into()));
        }
        for (i, step) in steps.iter().enumerate() {
            if step.tokens.is_empty() {
                return Err(ModelError::Invalid(format!("sequence {i} of the step has no new tokens")));
            }
            step.cache.check_room(step.tokens.len())?;
            if step.cache.on_device() != steps[0].cache.on_device() {
                return Err(ModelError::Invalid("a step's KV caches must all be on the host or all on the GPU".into()));
            }
        }
        let sequences: Vec<(usize, &[u32])> = steps.iter().map(|s| (s.cache.len(), s.tokens)).collect();
        let (ids, rows) = ragged_rows(&sequences);
        let logits = self.forward_rows(ids, &rows, &mut StepCaches::Contiguous(steps))?;
        for step in steps.iter_mut() {
            step.cache.advance(step.tokens.len());
        }
        Ok(logits)
    }

    /// An empty pool of `num_blocks` KV blocks of `block_size` positions: on the model's GPU where
    /// the decode kernels serve its attention shape, else on the host.
    pub fn new_kv_pool(&self, num_blocks: usize, block_size: usize) -> Result<KvBlockPool> {
        KvBlockPool::for_model(&self.config, num_blocks, block_size, self.dtype(), self.device())
    }

    /// [`Self::forward_step`] over blocks of `pool`: writes each sequence's tokens at positions
    /// `cached..` into the blocks of its table and returns the next-token logits after each
    /// sequence's last new token, `[steps.len(), vocab]` f32. Two sequences may share blocks only
    /// below both of their `cached` (the engine shares full, computed blocks alone).
    pub fn forward_paged(&self, pool: &mut KvBlockPool, steps: &[PagedStep<'_>]) -> Result<Tensor> {
        if steps.is_empty() {
            return Err(ModelError::Invalid("forward_paged needs at least one sequence".into()));
        }
        for (i, step) in steps.iter().enumerate() {
            if step.tokens.is_empty() {
                return Err(ModelError::Invalid(format!("sequence {i} of the step has no new tokens")));
            }
            pool.check_step(step)?;
        }
        let sequences: Vec<(usize, &[u32])> = steps.iter().map(|s| (s.cached, s.tokens)).collect();
        let (ids, rows) = ragged_rows(&sequences);
        self.forward_rows(ids, &rows, &mut StepCaches::Paged(pool, steps))
    }

    /// The forward pass of the ragged batch `ids` whose row `r` is at `rows[r] = (sequence,
    /// position)`: logits after each sequence's last row.
    fn forward_rows(&self, ids: Vec<u32>, rows: &[(usize, usize)], caches: &mut StepCaches<'_, '_>) -> Result<Tensor> {
        let n = ids.len();
        let (cos, sin) = self.rotary_tables(rows.iter().map(|&(_, p)| p))?;
        let inputs = LayerInputs {
            bias: None,
            causal_lengths: None,
            packed: None,
            cos,
            sin,
            adapters_on: true,
            dropout_seed: None,
            no_grad: true,
        };
        let held = self.held_modules("decoding")?;
        let mut h = self.embed(&held.embed_tokens, &Tensor::from_vec(ids, (1, n), self.device())?)?;
        for (l, layer) in held.layers.iter().enumerate() {
            let x = rms_norm(&h, &layer.input_layernorm, layer.eps)?;
            h = (h + layer.self_attn.forward_cached(&x, &inputs, l, caches, rows)?)?;
            let mlp = layer.mlp.forward(&rms_norm(&h, &layer.post_attention_layernorm, layer.eps)?, &inputs)?;
            h = (h + mlp)?;
        }
        // logits only where the next token is predicted: each sequence's last row
        let last: Vec<u32> = (0..n).filter(|&r| r + 1 == n || rows[r + 1].0 != rows[r].0).map(|r| r as u32).collect();
        let last = Tensor::from_vec(last.clone(), last.len(), self.device())?;
        let h = h.squeeze(0)?.index_select(&last, 0)?;
        let h = rms_norm(&h, &held.head.norm, self.config.rms_norm_eps)?;
        let logits = match forge_kernels::few_rows::linear(&h, &held.head.lm_head)? {
            Some(logits) => logits,
            None => linear(&h, &held.head.lm_head)?,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }
}

/// The step's token ids in sequence order and `(sequence, position)` of each, for sequences given
/// as (positions cached, new tokens).
fn ragged_rows(sequences: &[(usize, &[u32])]) -> (Vec<u32>, Vec<(usize, usize)>) {
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    for (i, &(cached, tokens)) in sequences.iter().enumerate() {
        ids.extend_from_slice(tokens);
        rows.extend((cached..cached + tokens.len()).map(|p| (i, p)));
    }
    (ids, rows)
}

impl Attention {
    /// Attention of the ragged batch `x: [1, n, hidden]` whose row `r` is at `rows[r] = (sequence,
    /// position)`: writes each row's key and value into its sequence's cache, then attends over it.
    fn forward_cached(&self, x: &Tensor, inputs: &LayerInputs, layer: usize, caches: &mut StepCaches<'_, '_>, rows: &[(usize, usize)]) -> Result<Tensor> {
        let n = rows.len();
        let (h, h_kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = rms_norm(&self.q_proj.forward(x, inputs)?.reshape((1, n, h, d))?, &self.q_norm, self.eps)?;
        let k = rms_norm(&self.k_proj.forward(x, inputs)?.reshape((1, n, h_kv, d))?, &self.k_norm, self.eps)?;
        let v = self.v_proj.forward(x, inputs)?;
        let scale = 1.0 / (d as f32).sqrt();
        if caches.on_device() {
            // 1. q: [n, h·d], k, v: [n, h_kv·d] appended to the caches, 2. attention: [1, n, h·d]
            let q = rope(&q, &inputs.cos, &inputs.sin)?.reshape((n, h * d))?;
            let k = rope(&k, &inputs.cos, &inputs.sin)?.reshape((n, h_kv * d))?;
            let v = v.reshape((n, h_kv * d))?;
            let attend = |layers: &[DeviceLayer<'_>]| decode_attn::append_and_attend(&q, &k, &v, layers, rows, h, scale, decode_attn::FLASH_MIN_ROWS);
            let out = match caches {
                StepCaches::Contiguous(steps) => attend(&steps.iter().map(|step| step.cache.device_layer(layer)).collect::<Vec<_>>())?,
                StepCaches::Paged(pool, steps) => {
                    // no paged kernel yet: each sequence's blocks are gathered into a contiguous
                    // cache the kernels append to, and the blocks they appended to are written back
                    let block_size = pool.block_size();
                    let gathered = steps
                        .iter()
                        .map(|s| pool.gather_device(layer, s.block_table, (s.cached + s.tokens.len()).div_ceil(block_size)))
                        .collect::<Result<Vec<_>>>()?;
                    let layers: Vec<DeviceLayer<'_>> = gathered.iter().map(|(keys, values)| DeviceLayer { keys, values }).collect();
                    let out = attend(&layers)?;
                    for (s, cache) in steps.iter().zip(&layers) {
                        pool.scatter_device(layer, s.block_table, s.cached / block_size, (s.cached + s.tokens.len()).div_ceil(block_size), cache)?;
                    }
                    out
                }
            };
            return self.o_proj.forward(&out.reshape((1, n, h * d))?, inputs);
        }
        let host = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let q = host(rope(&q, &inputs.cos, &inputs.sin)?)?;
        let k = host(rope(&k, &inputs.cos, &inputs.sin)?)?;
        let v = host(v)?;
        let kv_width = h_kv * d;
        let width = h * d;
        let work: usize = rows.iter().map(|&(_, p)| (p + 1) * width).sum();
        let parallel = work >= PARALLEL_ATTENTION_MIN_WORK;
        let layers = match caches {
            StepCaches::Contiguous(steps) => {
                for (r, &(seq, position)) in rows.iter().enumerate() {
                    let at = r * kv_width..(r + 1) * kv_width;
                    steps[seq].cache.write(layer, position, &k[at.clone()], &v[at]);
                }
                HostLayers::Caches(steps.iter().map(|s| &*s.cache).collect())
            }
            StepCaches::Paged(pool, steps) => {
                for (r, &(seq, position)) in rows.iter().enumerate() {
                    let at = r * kv_width..(r + 1) * kv_width;
                    pool.write(layer, steps[seq].block_table, position, &k[at.clone()], &v[at]);
                }
                let gather = |s: &PagedStep<'_>| {
                    let len = s.cached + s.tokens.len();
                    (s.tokens.len() > 1).then(|| {
                        let (keys, values) = pool.gather(layer, s.block_table, len);
                        (keys, values, len)
                    })
                };
                let gathered = if parallel { steps.par_iter().map(gather).collect() } else { steps.iter().map(gather).collect() };
                HostLayers::Paged(pool, steps, gathered)
            }
        };
        let mut out = vec![0f32; n * width];
        let attend_row = |scores: &mut Vec<f32>, (r, o): (usize, &mut [f32])| {
            let (seq, position) = rows[r];
            layers.attend(layer, seq, position, &q[r * width..(r + 1) * width], scale, scores, o, d);
        };
        if parallel {
            out.par_chunks_mut(width).enumerate().for_each_init(Vec::new, attend_row);
        } else {
            let mut scores = Vec::new();
            out.chunks_mut(width).enumerate().for_each(|row| attend_row(&mut scores, row));
        }
        let out = Tensor::from_vec(out, (1, n, width), x.device())?.to_dtype(x.dtype())?;
        self.o_proj.forward(&out, inputs)
    }
}
