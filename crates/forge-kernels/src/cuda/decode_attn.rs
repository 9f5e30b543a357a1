//! Launches of the decode-attention op (src/decode_attn.rs): kernels/decode_attn.cu's append and
//! split-K, and kernels/flash_attn.cu's `flash_fwd_cached` for prefill runs, as `plan` decides.

use candle_core::backend::BackendStorage as _;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Tensor};
use half::{bf16, f16};

use super::kernels::{decode_combine, decode_split, flash_cached, KV_APPEND};
use super::{alloc_output, as_i32, device_address, launch, view, CudaElem};
use crate::decode_attn::{plan, DecodeAttention};

const OP: &str = "forge-decode-attn";

/// The device address of a cache tensor's first element, checked to be a contiguous
/// `[kv_heads, capacity, d]` tensor of `T` on `dev`; and its capacity.
fn cache_address<T: CudaElem>(dev: &CudaDevice, t: &Tensor, kv_heads: usize, d: usize) -> Result<(u64, usize)> {
    let (h, capacity, hd) = t.dims3()?;
    if h != kv_heads || hd != d {
        bail!("{OP}: a KV cache of shape {:?} is not a [{kv_heads}, capacity, {d}]", t.dims());
    }
    Ok((device_address::<T>(dev, t, OP, "a KV cache")?, capacity))
}

/// q, k, v: each op input's storage and layout.
type Inputs<'a> = [(&'a CudaStorage, &'a Layout); 3];

pub(crate) fn append_and_attend(op: &DecodeAttention, inputs: Inputs<'_>) -> Result<CudaStorage> {
    match inputs[0].0.dtype() {
        DType::F32 => run::<f32>(op, inputs),
        DType::BF16 => run::<bf16>(op, inputs),
        DType::F16 => run::<f16>(op, inputs),
        other => bail!("{OP}: dtype {other:?} (f32, bf16 or f16)"),
    }
}

fn run<T: CudaElem>(op: &DecodeAttention, [(qs, ql), (ks, kl), (vs, vl)]: Inputs<'_>) -> Result<CudaStorage> {
    let DecodeAttention { caches, rows, heads, scale, flash_min_rows } = op;
    let (heads, scale) = (*heads, *scale);
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
    let plan = plan(rows, heads, kv_heads, d, T::DTYPE, *flash_min_rows)?;
    let dev = &qs.device;
    let (q, k, v) = (view::<T>(qs, ql, OP, "q")?, view::<T>(ks, kl, OP, "k")?, view::<T>(vs, vl, OP, "v")?);

    // one table entry per sequence, however many rows it has in the step
    let (mut key_addresses, mut value_addresses, mut capacities) = (Vec::new(), Vec::new(), Vec::new());
    for (keys, values) in caches {
        let (key_address, capacity) = cache_address::<T>(dev, keys, kv_heads, d)?;
        let (value_address, value_capacity) = cache_address::<T>(dev, values, kv_heads, d)?;
        if value_capacity != capacity {
            bail!("{OP}: a cache of {capacity} keys and {value_capacity} values");
        }
        key_addresses.push(key_address);
        value_addresses.push(value_address);
        capacities.push(capacity);
    }
    let (mut sequences, mut positions) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &(z, p) in rows {
        match capacities.get(z) {
            Some(&capacity) if p < capacity => {}
            _ => bail!("{OP}: row at position {p} of sequence {z}: no such sequence, or its cache is shorter"),
        }
        sequences.push(as_i32(z, OP, "sequence")?);
        positions.push(as_i32(p, OP, "position")?);
    }
    let capacities: Vec<i32> = capacities.into_iter().map(|c| as_i32(c, OP, "capacity")).collect::<Result<_>>()?;
    let (keys, values) = (dev.clone_htod(&key_addresses)?, dev.clone_htod(&value_addresses)?);
    let (sequences, positions, capacities) = (dev.clone_htod(&sequences)?, dev.clone_htod(&positions)?, dev.clone_htod(&capacities)?);
    let (n_i, h_i, h_kv_i, d_i) = (as_i32(n, OP, "rows")?, as_i32(heads, OP, "heads")?, as_i32(kv_heads, OP, "kv heads")?, as_i32(d, OP, "head dim")?);

    // both kernels read q and the caches in vector loads of up to 16 bytes
    if !(ql.start_offset() * std::mem::size_of::<T>()).is_multiple_of(16) || key_addresses.iter().chain(&value_addresses).any(|a| !a.is_multiple_of(16)) {
        bail!("{OP}: q or a KV cache is not 16-byte aligned (the attention kernels load up to 16 bytes at a time)");
    }
    launch!(T, dev, KV_APPEND, plan.append, k, v, keys, values, sequences, positions, capacities, n_i, h_kv_i, d_i)?;
    // every row of o is written once: by its flash tile or by its split-K slot's combine
    let o = alloc_output::<T>(dev, n * width)?;
    if let Some(shape) = plan.flash {
        let kernel = flash_cached(d);
        super::flash_attn::allow_shared(dev, &kernel, &shape)?;
        let tiles = dev.clone_htod(&plan.tile_table()?)?;
        // `plan` gives tiles only for bf16, the one storage type the kernel is built for
        launch!(bf16, dev, kernel, shape, q, keys, values, capacities, tiles, o, h_i, h_kv_i, scale)?;
    }
    if let Some(shape) = plan.split {
        let slots = dev.clone_htod(&plan.slot_table()?)?;
        let splits_i = as_i32(shape.splits, OP, "splits")?;
        let partials = plan.slots.len() * heads * shape.splits;
        let partial_o = alloc_output::<f32>(dev, partials * d)?;
        let partial_ml = alloc_output::<f32>(dev, partials * 2)?;
        launch!(T, dev, decode_split(d, shape.group_bound), shape.split, q, keys, values, slots, sequences, positions, capacities, partial_o, partial_ml, h_i, h_kv_i, splits_i, scale)?;
        launch!(T, dev, decode_combine(d), shape.combine, partial_o, partial_ml, slots, o, h_i, splits_i)?;
    }
    Ok(CudaStorage::wrap_cuda_slice(o, dev.clone()))
}
