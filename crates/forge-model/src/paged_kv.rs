//! Keys and values of many sequences in fixed-size blocks of one pool (vLLM's PagedAttention): a
//! sequence's positions live in the blocks its block table lists, `block_size` positions each, so
//! sequences grow a block at a time, and blocks holding a common prefix are shared by reference
//! (the engine keeps the tables and the reference counts; this is only the storage).
//!
//! Two homes, as [`crate::KvCache`]: the host in f32 (a decoding row's attention reads the blocks
//! in place through the block table, `cached_attention::attend_blocks`: the contiguous cache's
//! arithmetic in the same order, so the same bits where `block_size` is a multiple of
//! `SCORE_TILE`, 4; a prompt chunk's rows read the blocks gathered once per layer), or the GPU
//! in the model's dtype where the decode kernels serve the attention shape (each step gathers the
//! blocks of its sequences into contiguous caches for those kernels and writes the blocks it
//! appended to back; a paged kernel would read the blocks in place).

use candle_core::{DType, Device, Tensor};
use forge_kernels::cached_attention::attend_blocks;
use forge_kernels::decode_attn::{self, LayerCache as DeviceLayer};

use crate::{Config, ModelError, Result};

/// The keys and values of every layer in `num_blocks` blocks of `block_size` positions.
pub struct KvBlockPool {
    storage: Storage,
    num_kv_heads: usize,
    head_dim: usize,
    num_blocks: usize,
    block_size: usize,
}

enum Storage {
    /// Keys and values `[num_blocks, num_kv_heads, block_size, head_dim]` per layer: one head's
    /// rows of a block are contiguous. Allocated zeroed, so the OS commits a block's pages only
    /// when it is first written: the budget is a cap, not an up-front cost.
    Host(Vec<(Vec<f32>, Vec<f32>)>),
    /// The same layout as tensors on the GPU.
    Device(Vec<(Tensor, Tensor)>),
}

/// One sequence's share of a paged forward step: the tokens to append at positions
/// `cached..cached + tokens.len()`, in the blocks of `block_table` (block `i` holds positions
/// `i·block_size..(i+1)·block_size`).
pub struct PagedStep<'a> {
    pub block_table: &'a [u32],
    pub cached: usize,
    pub tokens: &'a [u32],
}

impl KvBlockPool {
    /// A host pool of `num_blocks` blocks (f32).
    pub fn new(config: &Config, num_blocks: usize, block_size: usize) -> Self {
        let size = num_blocks * config.num_key_value_heads * block_size * config.head_dim;
        let layers = (0..config.num_hidden_layers).map(|_| (vec![0.0; size], vec![0.0; size])).collect();
        Self { storage: Storage::Host(layers), num_kv_heads: config.num_key_value_heads, head_dim: config.head_dim, num_blocks, block_size }
    }

    /// A pool for a model of `dtype` on `device`: on the GPU where the decode kernels serve this
    /// attention shape ([`decode_attn::supported`]), else on the host. Where that is, and the
    /// element size, decide [`crate::memory::kv_block_bytes`].
    pub fn for_model(config: &Config, num_blocks: usize, block_size: usize, dtype: DType, device: &Device) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(ModelError::Invalid(format!("a KV block pool needs at least one block of at least one position (got {num_blocks} blocks of {block_size})")));
        }
        if !decode_attn::supported(device, config.num_attention_heads, config.num_key_value_heads, config.head_dim) {
            return Ok(Self::new(config, num_blocks, block_size));
        }
        let shape = (num_blocks, config.num_key_value_heads, block_size, config.head_dim);
        let layers = (0..config.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { storage: Storage::Device(layers), num_kv_heads: config.num_key_value_heads, head_dim: config.head_dim, num_blocks, block_size })
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Whether the pool lives on the GPU (attended by the decode kernels).
    pub fn on_device(&self) -> bool {
        matches!(self.storage, Storage::Device(_))
    }

    /// Rejects a step whose tokens would go beyond its block table or name a block not in the pool.
    pub(crate) fn check_step(&self, step: &PagedStep<'_>) -> Result<()> {
        let end = step.cached + step.tokens.len();
        if end > step.block_table.len() * self.block_size {
            return Err(ModelError::Invalid(format!(
                "a block table of {} blocks of {} positions cannot hold positions up to {end}",
                step.block_table.len(),
                self.block_size
            )));
        }
        if let Some(&block) = step.block_table.iter().find(|&&b| b as usize >= self.num_blocks) {
            return Err(ModelError::Invalid(format!("block {block} is not in the pool of {} blocks", self.num_blocks)));
        }
        Ok(())
    }

    /// Offset of `head`'s rows in `block` of a host layer.
    fn head_offset(&self, block: u32, head: usize) -> usize {
        (block as usize * self.num_kv_heads + head) * self.block_size * self.head_dim
    }

    /// Stores one position's key and value rows (`[num_kv_heads · head_dim]` each) in `layer` of a
    /// host pool, at `position` of the sequence whose blocks `block_table` lists.
    pub(crate) fn write(&mut self, layer: usize, block_table: &[u32], position: usize, key: &[f32], value: &[f32]) {
        let d = self.head_dim;
        let (block, offset) = (block_table[position / self.block_size], position % self.block_size);
        let starts: Vec<usize> = (0..self.num_kv_heads).map(|head| self.head_offset(block, head) + offset * d).collect();
        let Storage::Host(layers) = &mut self.storage else { unreachable!("forward_paged checks where the pool lives") };
        let (keys, values) = &mut layers[layer];
        for (head, at) in starts.into_iter().enumerate() {
            keys[at..at + d].copy_from_slice(&key[head * d..(head + 1) * d]);
            values[at..at + d].copy_from_slice(&value[head * d..(head + 1) * d]);
        }
    }

    /// `softmax(q·kᵀ·scale)·v` of one query row `[num_heads · head_dim]` at `position` over
    /// positions `0..=position` of `layer` of a host pool, of the sequence whose blocks
    /// `block_table` lists, into `out` (same shape): [`crate::KvCache`]'s attention over the
    /// blocks where they lie. `scores` is scratch space.
    #[allow(clippy::too_many_arguments)] // one attention's operands
    pub(crate) fn attend(&self, layer: usize, block_table: &[u32], position: usize, query: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
        let (d, bs) = (self.head_dim, self.block_size);
        let Storage::Host(layers) = &self.storage else { unreachable!("forward_paged checks where the pool lives") };
        let (keys, values) = &layers[layer];
        let visible = position + 1;
        let blocks = &block_table[..visible.div_ceil(bs)];
        let (mut key_blocks, mut value_blocks) = (Vec::with_capacity(blocks.len()), Vec::with_capacity(blocks.len()));
        // the query heads of one K/V head are adjacent in the row
        let group_width = query.len() / self.num_kv_heads;
        for (head, (queries, o)) in query.chunks_exact(group_width).zip(out.chunks_exact_mut(group_width)).enumerate() {
            key_blocks.clear();
            value_blocks.clear();
            for (i, &block) in blocks.iter().enumerate() {
                let (at, rows) = (self.head_offset(block, head), bs.min(visible - i * bs) * d);
                key_blocks.push(&keys[at..at + rows]);
                value_blocks.push(&values[at..at + rows]);
            }
            attend_blocks(queries, &key_blocks, &value_blocks, d, scale, scores, o);
        }
    }

    /// Positions `0..len` of `layer` of a host pool, of the sequence whose blocks `block_table`
    /// lists, as contiguous keys and values `[num_kv_heads, len, head_dim]`: the layout of a
    /// [`crate::KvCache`] of capacity `len`.
    pub(crate) fn gather(&self, layer: usize, block_table: &[u32], len: usize) -> (Vec<f32>, Vec<f32>) {
        let (d, bs) = (self.head_dim, self.block_size);
        let Storage::Host(layers) = &self.storage else { unreachable!("forward_paged checks where the pool lives") };
        let (keys, values) = &layers[layer];
        let mut out_keys = Vec::with_capacity(self.num_kv_heads * len * d);
        let mut out_values = Vec::with_capacity(self.num_kv_heads * len * d);
        for head in 0..self.num_kv_heads {
            for (i, &block) in block_table.iter().enumerate().take(len.div_ceil(bs)) {
                let (at, rows) = (self.head_offset(block, head), bs.min(len - i * bs) * d);
                out_keys.extend_from_slice(&keys[at..at + rows]);
                out_values.extend_from_slice(&values[at..at + rows]);
            }
        }
        (out_keys, out_values)
    }

    /// `layer`'s blocks `block_table[..blocks]` on the GPU as one contiguous cache `[num_kv_heads,
    /// blocks · block_size, head_dim]` (keys, values), for the decode kernels.
    pub(crate) fn gather_device(&self, layer: usize, block_table: &[u32], blocks: usize) -> Result<(Tensor, Tensor)> {
        let Storage::Device(layers) = &self.storage else { unreachable!("forward_paged checks where the pool lives") };
        let (keys, values) = &layers[layer];
        let ids = Tensor::from_slice(&block_table[..blocks], blocks, keys.device())?;
        let gather = |pool: &Tensor| -> Result<Tensor> {
            // [blocks, heads, bs, d] -> [heads, blocks·bs, d]
            let picked = pool.index_select(&ids, 0)?.transpose(0, 1)?.contiguous()?;
            Ok(picked.reshape((self.num_kv_heads, blocks * self.block_size, self.head_dim))?)
        };
        Ok((gather(keys)?, gather(values)?))
    }

    /// Writes blocks `block_table[first..last]` of a gathered cache (as [`Self::gather_device`]
    /// returns it, after the kernels appended to it) back into `layer` of the pool.
    pub(crate) fn scatter_device(&self, layer: usize, block_table: &[u32], first: usize, last: usize, cache: &DeviceLayer<'_>) -> Result<()> {
        let Storage::Device(layers) = &self.storage else { unreachable!("forward_paged checks where the pool lives") };
        let (keys, values) = &layers[layer];
        for (i, &block) in block_table.iter().enumerate().take(last).skip(first) {
            for (pool, gathered) in [(keys, cache.keys), (values, cache.values)] {
                let rows = gathered.narrow(1, i * self.block_size, self.block_size)?.contiguous()?.unsqueeze(0)?;
                pool.slice_set(&rows, 0, block as usize)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_json(
            r#"{"vocab_size": 16, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
                "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64}"#,
        )
        .unwrap()
    }

    #[test]
    fn attention_through_a_block_table_is_that_of_a_contiguous_cache_bit_for_bit() {
        let config = config();
        let mut pool = KvBlockPool::new(&config, 6, 4);
        let mut cache = crate::KvCache::new(&config, 10);
        // a sequence of 10 positions in blocks 5, 1, 3 (out of order, as a pool hands them out)
        let table = [5, 1, 3];
        let row = |p: usize, salt: f32| (0..8).map(|i| ((p * 8 + i) as f32 * 0.37 + salt).sin()).collect::<Vec<f32>>();
        for p in 0..10 {
            pool.write(1, &table, p, &row(p, 0.0), &row(p, 0.5));
            cache.write(1, p, &row(p, 0.0), &row(p, 0.5));
        }
        let query: Vec<f32> = (0..16).map(|i| (i as f32 * 0.21).cos()).collect();
        for position in [0, 3, 4, 9] {
            let (mut paged, mut contiguous) = (vec![f32::NAN; 16], vec![f32::NAN; 16]);
            pool.attend(1, &table, position, &query, 0.5, &mut Vec::new(), &mut paged);
            cache.attend(1, position, &query, 0.5, &mut Vec::new(), &mut contiguous);
            assert_eq!(paged, contiguous, "position {position}");
        }
        let (keys, values) = pool.gather(1, &table, 10);
        for head in 0..2 {
            for p in 0..10 {
                let at = (head * 10 + p) * 4;
                assert_eq!(&keys[at..at + 4], &row(p, 0.0)[head * 4..head * 4 + 4], "key head {head} position {p}");
                assert_eq!(&values[at..at + 4], &row(p, 0.5)[head * 4..head * 4 + 4], "value head {head} position {p}");
            }
        }
        let err = pool.check_step(&PagedStep { block_table: &table, cached: 10, tokens: &[1, 2, 3] }).unwrap_err().to_string();
        assert!(err.contains("a block table of 3 blocks of 4 positions cannot hold positions up to 13"), "{err}");
        let err = pool.check_step(&PagedStep { block_table: &[6], cached: 0, tokens: &[1] }).unwrap_err().to_string();
        assert!(err.contains("block 6 is not in the pool of 6 blocks"), "{err}");
    }

    #[test]
    fn device_blocks_gather_into_a_contiguous_cache_and_appended_blocks_scatter_back() {
        // the GPU layout's tensor logic, on CPU tensors: 5 blocks of 4 positions, 2 heads of dim 3
        let (blocks, heads, bs, d) = (5, 2, 4, 3);
        let values = |salt: f32| Tensor::arange(0f32, (blocks * heads * bs * d) as f32, &Device::Cpu).unwrap().affine(1.0, salt as f64).unwrap().reshape((blocks, heads, bs, d)).unwrap();
        let pool = KvBlockPool { storage: Storage::Device(vec![(values(0.0), values(0.5))]), num_kv_heads: heads, head_dim: d, num_blocks: blocks, block_size: bs };
        let table = [3, 1];
        let (keys, vals) = pool.gather_device(0, &table, 2).unwrap();
        assert_eq!(keys.dims(), [heads, 2 * bs, d]);
        let block_rows = |t: &Tensor, block: usize, head: usize| t.get(block).unwrap().get(head).unwrap().to_vec2::<f32>().unwrap();
        for head in 0..heads {
            let gathered = keys.get(head).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(gathered[..bs], block_rows(&values(0.0), 3, head), "head {head}: positions 0..4 are block 3's");
            assert_eq!(gathered[bs..], block_rows(&values(0.0), 1, head), "head {head}: positions 4..8 are block 1's");
        }
        // the kernels append position 5 (table block 1 = pool block 1) to the gathered cache
        let row = Tensor::full(-1f32, (heads, 1, d), &Device::Cpu).unwrap();
        keys.slice_set(&row, 1, 5).unwrap();
        vals.slice_set(&row, 1, 5).unwrap();
        pool.scatter_device(0, &table, 1, 2, &DeviceLayer { keys: &keys, values: &vals }).unwrap();
        let Storage::Device(layers) = &pool.storage else { unreachable!() };
        for head in 0..heads {
            let block = block_rows(&layers[0].0, 1, head);
            assert_eq!(block[1], vec![-1.0; d], "head {head}: position 5 written back");
            assert_eq!(block[0], block_rows(&values(0.0), 1, head)[0], "head {head}: the rest unchanged");
            assert_eq!(block_rows(&layers[0].0, 3, head), block_rows(&values(0.0), 3, head), "head {head}: block 3 not scattered");
            assert_eq!(block_rows(&layers[0].1, 1, head)[1], vec![-1.0; d], "head {head}: values too");
        }
    }
}
