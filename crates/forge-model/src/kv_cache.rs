//! One sequence's key/value cache for incremental decoding, and attention of new queries over it.
//!
//! Allocated once at the length the sequence may reach and written in place: a decoding step
//! neither reallocates nor copies the cache, and needs no mask, since a query at position `p` reads
//! exactly rows `0..=p` of its own sequence. Two homes:
//! - the host, in f32, attended on the CPU (`forge_kernels::cached_attention`): CPU models, and
//!   shapes the GPU decode kernels are not built for;
//! - the GPU, in the model's dtype, appended to and attended there by
//!   `forge_kernels::decode_attn` (split-K "flash decoding"): models on a CUDA device.

use candle_core::{DType, Device, Tensor};
use forge_kernels::decode_attn::{self, LayerCache as DeviceLayer};

use crate::{Config, ModelError, Result};

/// Keys and values of every layer for positions `0..len` of one sequence.
pub struct KvCache {
    storage: Storage,
    num_kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
}

enum Storage {
    Host(Vec<HostLayer>),
    /// Keys and values `[num_kv_heads, capacity, head_dim]` per layer, owned by this cache alone
    /// (the decode kernels write them in place).
    Device(Vec<(Tensor, Tensor)>),
}

/// `[num_kv_heads, capacity, head_dim]` each, so one head's rows are contiguous.
struct HostLayer {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    /// An empty host cache with room for `capacity` positions.
    pub fn new(config: &Config, capacity: usize) -> Self {
        let size = config.num_key_value_heads * capacity * config.head_dim;
        let layers = (0..config.num_hidden_layers).map(|_| HostLayer { keys: vec![0.0; size], values: vec![0.0; size] }).collect();
        Self { storage: Storage::Host(layers), num_kv_heads: config.num_key_value_heads, head_dim: config.head_dim, capacity, len: 0 }
    }

    /// An empty cache for a model of `dtype` on `device`: on the GPU where the decode kernels
    /// serve this attention shape ([`decode_attn::supported`]), else on the host.
    pub fn for_model(config: &Config, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        if !decode_attn::supported(device, config.num_attention_heads, config.num_key_value_heads, config.head_dim) {
            return Ok(Self::new(config, capacity));
        }
        let shape = (config.num_key_value_heads, capacity, config.head_dim);
        let layers = (0..config.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { storage: Storage::Device(layers), num_kv_heads: config.num_key_value_heads, head_dim: config.head_dim, capacity, len: 0 })
    }

    /// A new cache of `capacity` positions holding this cache's first `len` positions, in the same
    /// home: a continuation of those tokens (the next agent turn of a conversation) is then
    /// prefilled from position `len` instead of from 0.
    pub fn prefix_copy(&self, len: usize, capacity: usize) -> Result<Self> {
        if len > self.len || len > capacity {
            return Err(ModelError::Invalid(format!(
                "cannot copy {len} positions of a KV cache holding {} into one of {capacity} positions",
                self.len
            )));
        }
        let (heads, d) = (self.num_kv_heads, self.head_dim);
        let storage = match &self.storage {
            Storage::Host(layers) => Storage::Host(
                layers
                    .iter()
                    .map(|layer| {
                        let copy = |rows: &[f32]| {
                            let mut out = vec![0.0; heads * capacity * d];
                            for head in 0..heads {
                                let (from, to) = (head * self.capacity * d, head * capacity * d);
                                out[to..to + len * d].copy_from_slice(&rows[from..from + len * d]);
                            }
                            out
                        };
                        HostLayer { keys: copy(&layer.keys), values: copy(&layer.values) }
                    })
                    .collect(),
            ),
            Storage::Device(layers) => Storage::Device(
                layers
                    .iter()
                    .map(|(keys, values)| {
                        let copy = |rows: &Tensor| -> Result<Tensor> {
                            let out = Tensor::zeros((heads, capacity, d), rows.dtype(), rows.device())?;
                            if len > 0 {
                                out.slice_set(&rows.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                            }
                            Ok(out)
                        };
                        Ok((copy(keys)?, copy(values)?))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        Ok(Self { storage, num_kv_heads: heads, head_dim: d, capacity, len })
    }

    /// Positions cached so far: the next token goes to position `len()`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions `len..`: the next token goes to position `len` (the rows beyond are
    /// overwritten before any query reads them).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Whether the cache lives on the GPU (attended by the decode kernels).
    pub fn on_device(&self) -> bool {
        matches!(self.storage, Storage::Device(_))
    }

    /// Rejects appending `n` positions beyond the capacity.
    pub(crate) fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(ModelError::Invalid(format!(
                "KV cache of {} positions holds {} already; appending {n} more would overflow it",
                self.capacity, self.len
            )));
        }
        Ok(())
    }

    /// Marks `n` more positions (written in every layer) as cached.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    fn host_layer(&self, layer: usize) -> &HostLayer {
        match &self.storage {
            Storage::Host(layers) => &layers[layer],
            Storage::Device(_) => unreachable!("forward_step checks that a step's caches share one home"),
        }
    }

    /// `layer`'s keys and values on the GPU, for the decode kernels.
    pub(crate) fn device_layer(&self, layer: usize) -> DeviceLayer<'_> {
        match &self.storage {
            Storage::Device(layers) => DeviceLayer { keys: &layers[layer].0, values: &layers[layer].1 },
            Storage::Host(_) => unreachable!("forward_step checks that a step's caches share one home"),
        }
    }

    /// Stores one position's key and value rows (`[num_kv_heads · head_dim]` each) in `layer` of a
    /// host cache.
    pub(crate) fn write(&mut self, layer: usize, position: usize, key: &[f32], value: &[f32]) {
        let (d, cap, heads) = (self.head_dim, self.capacity, self.num_kv_heads);
        let Storage::Host(layers) = &mut self.storage else { unreachable!("forward_step checks that a step's caches share one home") };
        let cache = &mut layers[layer];
        for head in 0..heads {
            let at = (head * cap + position) * d;
            cache.keys[at..at + d].copy_from_slice(&key[head * d..(head + 1) * d]);
            cache.values[at..at + d].copy_from_slice(&value[head * d..(head + 1) * d]);
        }
    }

    /// `softmax(q·kᵀ·scale)·v` of one query row `[num_heads · head_dim]` at `position` over the
    /// cached rows `0..=position` of `layer` of a host cache, into `out` (same shape). Query head
    /// `i` reads K/V head `i / (num_heads / num_kv_heads)`, as HF's `repeat_kv`. `scores` is
    /// scratch space.
    pub(crate) fn attend(&self, layer: usize, position: usize, query: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
        let cache = self.host_layer(layer);
        attend_contiguous(&cache.keys, &cache.values, self.capacity, self.head_dim, position, query, scale, scores, out);
    }
}

/// `softmax(q·kᵀ·scale)·v` of one query row `[num_heads · head_dim]` at `position` over rows
/// `0..=position` of contiguous keys and values `[num_kv_heads, capacity, head_dim]` (a host
/// [`KvCache`] layer, or blocks of a [`crate::KvBlockPool`] gathered into that layout), into `out`
/// (same shape as the query). Query head `i` reads K/V head `i / (num_heads / num_kv_heads)`, as
/// HF's `repeat_kv`. `scores` is scratch space.
#[allow(clippy::too_many_arguments)] // one attention's operands and its shape
pub(crate) fn attend_contiguous(keys: &[f32], values: &[f32], capacity: usize, d: usize, position: usize, query: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let num_kv_heads = keys.len() / (capacity * d);
    // the query heads of one K/V head are adjacent in the row
    let group_width = query.len() / num_kv_heads;
    let visible = (position + 1) * d;
    for (head, (queries, o)) in query.chunks_exact(group_width).zip(out.chunks_exact_mut(group_width)).enumerate() {
        let start = head * capacity * d;
        forge_kernels::cached_attention::attend(queries, &keys[start..start + visible], &values[start..start + visible], d, scale, scores, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layers: usize, kv_heads: usize, head_dim: usize) -> Config {
        Config::from_json(&format!(
            r#"{{"vocab_size": 16, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": {layers},
                "num_attention_heads": 4, "num_key_value_heads": {kv_heads}, "head_dim": {head_dim},
                "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64}}"#
        ))
        .unwrap()
    }

    /// Position `p`'s key (`scale` 0.7) or value (1.3) row of 2 K/V heads of dim `d`.
    fn kv_row(p: usize, scale: f32, d: usize) -> Vec<f32> {
        (0..2 * d).map(|i| ((p * 2 * d + i) as f32 * scale).sin()).collect()
    }

    /// Query heads 4 × dim `d`.
    fn query(d: usize) -> Vec<f32> {
        (0..4 * d).map(|i| (i as f32 * 0.37).cos()).collect()
    }

    #[test]
    fn attention_over_the_cache_matches_a_direct_softmax() {
        // 4 query heads over 2 KV heads of dim 4, three cached positions
        let d = 4;
        let mut cache = KvCache::new(&config(1, 2, d), 4);
        let row = |p: usize, scale: f32| kv_row(p, scale, d);
        for p in 0..3 {
            cache.write(0, p, &row(p, 0.7), &row(p, 1.3));
        }
        let query = query(d);
        let mut out = vec![0f32; 4 * d];
        cache.attend(0, 2, &query, 0.5, &mut Vec::new(), &mut out);
        for head in 0..4 {
            let kv = head / 2;
            let q = &query[head * d..(head + 1) * d];
            let scores: Vec<f32> = (0..3).map(|p| 0.5 * (0..d).map(|i| q[i] * row(p, 0.7)[kv * d + i]).sum::<f32>()).collect();
            let total: f32 = scores.iter().map(|s| s.exp()).sum();
            for i in 0..d {
                let expected: f32 = (0..3).map(|p| scores[p].exp() / total * row(p, 1.3)[kv * d + i]).sum();
                assert!((out[head * d + i] - expected).abs() < 1e-6, "head {head} dim {i}: {} vs {expected}", out[head * d + i]);
            }
        }
    }

    #[test]
    fn a_prefix_copy_attends_like_the_original_over_its_positions() {
        let d = 4;
        let mut cache = KvCache::new(&config(2, 2, d), 5);
        let row = |p: usize, scale: f32| kv_row(p, scale, d);
        for layer in 0..2 {
            for p in 0..4 {
                cache.write(layer, p, &row(p + layer, 0.7), &row(p + layer, 1.3));
            }
        }
        cache.advance(4);
        let copy = cache.prefix_copy(3, 9).unwrap();
        assert_eq!((copy.len(), copy.capacity()), (3, 9));
        let query = query(d);
        for layer in 0..2 {
            let (mut a, mut b) = (vec![0f32; 4 * d], vec![0f32; 4 * d]);
            cache.attend(layer, 2, &query, 0.5, &mut Vec::new(), &mut a);
            copy.attend(layer, 2, &query, 0.5, &mut Vec::new(), &mut b);
            assert_eq!(a, b, "layer {layer}");
        }
        let err = cache.prefix_copy(5, 9).err().unwrap().to_string();
        assert!(err.contains("cannot copy 5 positions of a KV cache holding 4"), "{err}");
        assert!(cache.prefix_copy(4, 3).is_err());
    }

    #[test]
    fn overflowing_the_capacity_is_an_error() {
        let mut cache = KvCache::new(&config(2, 1, 2), 3);
        assert!(cache.check_room(3).is_ok());
        cache.advance(2);
        let err = cache.check_room(2).unwrap_err().to_string();
        assert!(err.contains("KV cache of 3 positions holds 2 already"), "{err}");
    }
}
