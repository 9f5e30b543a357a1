//! Incremental decoding with the model's own weights: new tokens of several sequences, each at its
//! own position, in one forward pass over a per-sequence [`KvCache`].
//!
//! The new tokens of all sequences are laid out as one ragged row `[1, n, hidden]`, so embeddings,
//! projections and the MLP run as single matmuls whether a sequence contributes a whole prompt
//! (prefill) or one token (decode). Only attention is per sequence, over its own cache.

use candle_core::{DType, Tensor};
use forge_kernels::{decode_attn, rms_norm, rope};
use rayon::prelude::*;

use super::{linear, Attention, LayerInputs, Qwen3ForCausalLM};
use crate::{KvCache, ModelError, Result};

/// One sequence's share of a forward step: the tokens to append at positions `cache.len()..`.
pub struct SequenceStep<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// Below this many multiply-adds, attention runs on one thread: rayon's fork/join costs more.
const PARALLEL_ATTENTION_MIN_WORK: usize = 1 << 16;

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
        let mut ids = Vec::new();
        // (sequence, position) of each row of the ragged batch
        let mut rows = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if step.tokens.is_empty() {
                return Err(ModelError::Invalid(format!("sequence {i} of the step has no new tokens")));
            }
            step.cache.check_room(step.tokens.len())?;
            if step.cache.on_device() != steps[0].cache.on_device() {
                return Err(ModelError::Invalid("a step's KV caches must all be on the host or all on the GPU".into()));
            }
            ids.extend_from_slice(step.tokens);
            rows.extend((step.cache.len()..step.cache.len() + step.tokens.len()).map(|p| (i, p)));
        }
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
            h = (h + layer.self_attn.forward_cached(&x, &inputs, l, steps, &rows)?)?;
            let mlp = layer.mlp.forward(&rms_norm(&h, &layer.post_attention_layernorm, layer.eps)?, &inputs)?;
            h = (h + mlp)?;
        }
        for step in steps.iter_mut() {
            step.cache.advance(step.tokens.len());
        }
        // logits only where the next token is predicted: each sequence's last row
        let mut last = Vec::with_capacity(steps.len());
        let mut end = 0u32;
        for step in steps.iter() {
            end += step.tokens.len() as u32;
            last.push(end - 1);
        }
        let last = Tensor::from_vec(last, steps.len(), self.device())?;
        let h = h.squeeze(0)?.index_select(&last, 0)?;
        let h = rms_norm(&h, &held.head.norm, self.config.rms_norm_eps)?;
        let logits = match forge_kernels::few_rows::linear(&h, &held.head.lm_head)? {
            Some(logits) => logits,
            None => linear(&h, &held.head.lm_head)?,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }
}

impl Attention {
    /// Attention of the ragged batch `x: [1, n, hidden]` whose row `r` is at `rows[r] = (sequence,
    /// position)`: writes each row's key and value into its sequence's cache, then attends over it.
    fn forward_cached(&self, x: &Tensor, inputs: &LayerInputs, layer: usize, steps: &mut [SequenceStep<'_>], rows: &[(usize, usize)]) -> Result<Tensor> {
        let n = rows.len();
        let (h, h_kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = rms_norm(&self.q_proj.forward(x, inputs)?.reshape((1, n, h, d))?, &self.q_norm, self.eps)?;
        let k = rms_norm(&self.k_proj.forward(x, inputs)?.reshape((1, n, h_kv, d))?, &self.k_norm, self.eps)?;
        let v = self.v_proj.forward(x, inputs)?;
        let scale = 1.0 / (d as f32).sqrt();
        if steps[0].cache.on_device() {
            // 1. q: [n, h·d], k, v: [n, h_kv·d] appended to the caches, 2. attention: [1, n, h·d]
            let q = rope(&q, &inputs.cos, &inputs.sin)?.reshape((n, h * d))?;
            let k = rope(&k, &inputs.cos, &inputs.sin)?.reshape((n, h_kv * d))?;
            let v = v.reshape((n, h_kv * d))?;
            let caches: Vec<_> = steps.iter().map(|step| step.cache.device_layer(layer)).collect();
            let out = decode_attn::append_and_attend(&q, &k, &v, &caches, rows, h, scale, decode_attn::FLASH_MIN_ROWS)?.reshape((1, n, h * d))?;
            return self.o_proj.forward(&out, inputs);
        }
        let host = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let q = host(rope(&q, &inputs.cos, &inputs.sin)?)?;
        let k = host(rope(&k, &inputs.cos, &inputs.sin)?)?;
        let v = host(v)?;
        let kv_width = h_kv * d;
        for (r, &(seq, position)) in rows.iter().enumerate() {
            let at = r * kv_width..(r + 1) * kv_width;
            steps[seq].cache.write(layer, position, &k[at.clone()], &v[at]);
        }
        let width = h * d;
        let mut out = vec![0f32; n * width];
        let caches: Vec<&KvCache> = steps.iter().map(|s| &*s.cache).collect();
        let attend_row = |scores: &mut Vec<f32>, (r, o): (usize, &mut [f32])| {
            let (seq, position) = rows[r];
            caches[seq].attend(layer, position, &q[r * width..(r + 1) * width], scale, scores, o);
        };
        let work: usize = rows.iter().map(|&(_, p)| (p + 1) * width).sum();
        if work >= PARALLEL_ATTENTION_MIN_WORK {
            out.par_chunks_mut(width).enumerate().for_each_init(Vec::new, attend_row);
        } else {
            let mut scores = Vec::new();
            out.chunks_mut(width).enumerate().for_each(|row| attend_row(&mut scores, row));
        }
        let out = Tensor::from_vec(out, (1, n, width), x.device())?.to_dtype(x.dtype())?;
        self.o_proj.forward(&out, inputs)
    }
}
