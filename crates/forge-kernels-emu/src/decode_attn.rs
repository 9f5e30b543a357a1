//! The decode-attention op under emulation, launched by forge-kernels' own launch code
//! (`forge_kernels::launch::decode_attn`, the code a GPU runs) on the [`Emulator`] backend:
//! kernels/decode_attn.cu's append, split and combine, and kernels/flash_attn.cu's
//! `flash_fwd_cached` for prefill runs, as forge_kernels::decode_attn::plan decides.

use candle_core::Layout;
use forge_kernels::decode_attn::CachedAttentionPlan;
use forge_kernels::launch::decode_attn::{self as launch, CacheAddresses};

use crate::ops::Float;
use crate::{Buffer, Emulator, Schedule, Storage};

/// A storage type the decode kernels are instantiated for.
pub trait DecodeFloat: Float {}
impl<T: Float> DecodeFloat for T {}

/// One layer's cache of one sequence: keys and values `[kv_heads, capacity, head_dim]`, each
/// ending at a guard page.
pub struct Cache<T> {
    pub keys: Buffer<T>,
    pub values: Buffer<T>,
    pub capacity: usize,
}

/// One decode step: `rows` new query rows, row `r` of sequence `sequence[r]` at `positions[r]`.
pub struct Step<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub sequence: &'a [usize],
    pub positions: &'a [usize],
    /// Runs of at least this many rows of one sequence go through flash tiles (caches of
    /// `FLASH_TILE_DTYPE`), as `forge_kernels::decode_attn::plan` decides; the engine's is
    /// `FLASH_MIN_ROWS`.
    pub flash_min_rows: usize,
}

/// Appends `k, v: [n, kv_heads, d]` to the caches, then returns `o: [n, heads, d]` and the plan
/// the step ran by, as the GPU op does (the launch code writes the caches through their
/// addresses; the partial sums and the output start poisoned).
pub fn append_and_attend<T: DecodeFloat>(step: &Step, q: &[T], k: &[T], v: &[T], caches: &[Cache<T>], schedule: Schedule) -> Result<(Vec<T>, CachedAttentionPlan), String> {
    let (n, h, h_kv, d) = (step.positions.len(), step.heads, step.kv_heads, step.head_dim);
    if step.sequence.len() != n || q.len() != n * h * d || k.len() != n * h_kv * d || v.len() != k.len() {
        return Err(format!("q {}, k {}, v {} elements and {} sequences do not describe {n} rows", q.len(), k.len(), v.len(), step.sequence.len()));
    }
    // the GPU op's check of each cache tensor's shape, on the buffers
    let mut addresses = Vec::with_capacity(caches.len());
    for cache in caches {
        let want = h_kv * cache.capacity * d;
        if cache.keys.len() != want || cache.values.len() != want {
            return Err(format!("a cache of {} positions holds {} keys and {} values, expected {want}", cache.capacity, cache.keys.len(), cache.values.len()));
        }
        addresses.push(CacheAddresses { keys: cache.keys.ptr() as u64, values: cache.values.ptr() as u64, capacity: cache.capacity });
    }
    let rows: Vec<(usize, usize)> = step.sequence.iter().copied().zip(step.positions.iter().copied()).collect();
    let (qs, ks, vs) = (Storage::from_slice(c"q", q), Storage::from_slice(c"k", k), Storage::from_slice(c"v", v));
    let (ql, kl) = (Layout::contiguous((n, h * d)), Layout::contiguous((n, h_kv * d)));
    let launch_step = launch::Step { rows: &rows, heads: h, scale: step.scale, flash_min_rows: step.flash_min_rows };
    let (o, plan) = launch::append_and_attend::<T, Emulator>(&Emulator::new(schedule), &launch_step, &addresses, [(&qs, &ql), (&ks, &kl), (&vs, &kl)]).map_err(|e| e.to_string())?;
    Ok((o.to_vec()?, plan))
}
