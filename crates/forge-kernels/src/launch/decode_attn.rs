//! Launches of the decode-attention op (src/decode_attn.rs): kernels/decode_attn.cu's append and
//! split-K, and kernels/flash_attn.cu's `flash_fwd_cached` for prefill runs, as `plan` decides.

use candle_core::{bail, Layout, Result};

use crate::backend::{as_i32, Backend, Elem};
use crate::decode_attn::{plan, CachedAttentionPlan};
use crate::kernels::{decode_attn_combine, decode_attn_split, flash_fwd_cached, kv_append};

const OP: &str = "forge-decode-attn";

/// One sequence's KV cache of one layer: the device addresses of its keys and values
/// (`[kv_heads, capacity, head_dim]` each, contiguous, of the step's dtype) and its capacity.
#[derive(Debug, Clone, Copy)]
pub struct CacheAddresses {
    pub keys: u64,
    pub values: u64,
    pub capacity: usize,
}

/// One decode step: query row `r` of sequence `rows[r].0` at position `rows[r].1`.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub rows: &'a [(usize, usize)],
    pub heads: usize,
    pub scale: f32,
    /// Runs of at least this many rows of one sequence go through flash tiles.
    pub flash_min_rows: usize,
}

/// q, k, v: each op input's storage and layout.
pub type Inputs<'a, S> = [(&'a S, &'a Layout); 3];

/// Appends the step's keys and values to the caches, then attends each query row to its
/// sequence's cache: `o` as `[rows, heads · head_dim]`, and the plan it ran by.
pub fn append_and_attend<T: Elem, B: Backend>(dev: &B, step: &Step, caches: &[CacheAddresses], [(qs, ql), (ks, kl), (vs, vl)]: Inputs<'_, B::Storage>) -> Result<(B::Storage, CachedAttentionPlan)> {
    let Step { rows, heads, scale, flash_min_rows } = *step;
    let (n, width) = ql.shape().dims2()?;
    let (kn, kv_width) = kl.shape().dims2()?;
    if heads == 0 || !width.is_multiple_of(heads) || kn != n || vl.dims() != kl.dims() || rows.len() != n {
        bail!("{OP}: q {:?}, k {:?}, v {:?} and {} rows do not describe {n} rows of {heads} heads", ql.dims(), kl.dims(), vl.dims(), rows.len());
    }
    let d = width / heads;
    if !kv_width.is_multiple_of(d) {
        bail!("{OP}: k rows of {kv_width} are not whole heads of {d}");
    }
    let kv_heads = kv_width / d;
    let plan = plan(rows, heads, kv_heads, d, T::DTYPE, flash_min_rows)?;
    let (q, k, v) = (dev.view::<T>(qs, ql, OP, "q")?, dev.view::<T>(ks, kl, OP, "k")?, dev.view::<T>(vs, vl, OP, "v")?);

    // one table entry per sequence, however many rows it has in the step
    let key_addresses: Vec<u64> = caches.iter().map(|c| c.keys).collect();
    let value_addresses: Vec<u64> = caches.iter().map(|c| c.values).collect();
    let (mut sequences, mut positions) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &(z, p) in rows {
        match caches.get(z) {
            Some(cache) if p < cache.capacity => {}
            Some(cache) => bail!("{OP}: row at position {p} of sequence {z}: position {p} in a cache of {} positions", cache.capacity),
            None => bail!("{OP}: row at position {p} of sequence {z}: no such sequence"),
        }
        sequences.push(as_i32(z, OP, "sequence")?);
        positions.push(as_i32(p, OP, "position")?);
    }
    let capacities: Vec<i32> = caches.iter().map(|c| as_i32(c.capacity, OP, "capacity")).collect::<Result<_>>()?;
    let (keys, values) = (dev.upload(&key_addresses)?, dev.upload(&value_addresses)?);
    let (sequences, positions, capacities) = (dev.upload(&sequences)?, dev.upload(&positions)?, dev.upload(&capacities)?);
    let (n_i, h_i, h_kv_i, d_i) = (as_i32(n, OP, "rows")?, as_i32(heads, OP, "heads")?, as_i32(kv_heads, OP, "kv heads")?, as_i32(d, OP, "head dim")?);

    // both kernels read q and the caches in vector loads of up to 16 bytes
    if !(ql.start_offset() * std::mem::size_of::<T>()).is_multiple_of(16) || key_addresses.iter().chain(&value_addresses).any(|a| !a.is_multiple_of(16)) {
        bail!("{OP}: q or a KV cache is not 16-byte aligned (the attention kernels load up to 16 bytes at a time)");
    }
    kv_append::<B, T>(dev, &plan.append, &k, &v, &keys, &values, &sequences, &positions, &capacities, n_i, h_kv_i, d_i)?;
    // every row of o is written once: by its flash tile or by its split-K slot's combine
    let o = dev.alloc::<T>(n * width)?;
    if let Some(shape) = plan.flash {
        let variant = super::flash_attn::variant(d);
        super::flash_attn::allow_shared(dev, "flash_fwd_cached", &variant, &shape)?;
        let tiles = dev.upload(&plan.tile_table()?)?;
        // `plan` gives tiles only for bf16, the one storage type the kernel is built for (the
        // launch function refuses any other)
        flash_fwd_cached::<B, T>(dev, &variant, &shape, &q, &keys, &values, &capacities, &tiles, &o, h_i, h_kv_i, scale)?;
    }
    if let Some(shape) = plan.split {
        let slots = dev.upload(&plan.slot_table()?)?;
        let splits_i = as_i32(shape.splits, OP, "splits")?;
        let partials = plan.slots.len() * heads * shape.splits;
        let partial_o = dev.alloc::<f32>(partials * d)?;
        let partial_ml = dev.alloc::<f32>(partials * 2)?;
        let variant = format!("d{d}_g{}", shape.group_bound);
        decode_attn_split::<B, T>(dev, &variant, &shape.split, &q, &keys, &values, &slots, &sequences, &positions, &capacities, &partial_o, &partial_ml, h_i, h_kv_i, splits_i, scale)?;
        decode_attn_combine::<B, T>(dev, &format!("d{d}"), &shape.combine, &partial_o, &partial_ml, &slots, &o, h_i, splits_i)?;
    }
    Ok((dev.wrap(o), plan))
}
