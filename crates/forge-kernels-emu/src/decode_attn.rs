//! The decode-attention op under emulation, launched as src/cuda/decode_attn.rs launches it on a
//! GPU: kernels/decode_attn.cu's append, split and combine, and kernels/flash_attn.cu's
//! `flash_fwd_cached` for prefill runs, as forge_kernels::decode_attn::plan decides.

use half::{bf16, f16};

use candle_core::WithDType;
use forge_kernels::decode_attn::{plan, CachedAttentionPlan, GROUP_BOUNDS};

use crate::ops::Float;
use crate::{launch, Buffer, Schedule};

type Append<T> = unsafe extern "C" fn(*const T, *const T, *const *mut T, *const *mut T, *const i32, *const i32, *const i32, i32, i32, i32);
type Split<T> = unsafe extern "C" fn(*const T, *const *const T, *const *const T, *const i32, *const i32, *const i32, *const i32, *mut f32, *mut f32, i32, i32, i32, f32);
type Combine<T> = unsafe extern "C" fn(*const f32, *const f32, *const i32, *mut T, i32, i32);
type FlashCached = unsafe extern "C" fn(*const bf16, *const *const bf16, *const *const bf16, *const i32, *const i32, *mut bf16, i32, i32, f32);

extern "C" {
    fn flash_fwd_cached_d64_bf16(q: *const bf16, keys: *const *const bf16, values: *const *const bf16, capacities: *const i32, tiles: *const i32, o: *mut bf16, h: i32, h_kv: i32, scale: f32);
    fn flash_fwd_cached_d128_bf16(q: *const bf16, keys: *const *const bf16, values: *const *const bf16, capacities: *const i32, tiles: *const i32, o: *mut bf16, h: i32, h_kv: i32, scale: f32);
}

/// The decode entry points of one storage type.
pub struct DecodeKernels<T> {
    append: Append<T>,
    /// Per head dim (64, 128), per group bound (`GROUP_BOUNDS`: 2, 4, 8).
    split: [[Split<T>; 3]; 2],
    combine: [Combine<T>; 2],
    /// `flash_fwd_cached` (head dim 64, 128), for the storage type it is built for
    /// (`decode_attn::FLASH_TILE_DTYPE`).
    flash: Option<[FlashCached; 2]>,
}

/// A storage type the decode kernels are instantiated for.
pub trait DecodeFloat: Float + WithDType {
    const DECODE: DecodeKernels<Self>;
}

macro_rules! decode_kernels {
    ($t:ty, $s:ident, $flash:expr) => {
        paste::paste! {
            extern "C" {
                fn [<kv_append_ $s>](k: *const $t, v: *const $t, keys: *const *mut $t, values: *const *mut $t, sequences: *const i32, positions: *const i32, capacities: *const i32, n: i32, h_kv: i32, d: i32);
                fn [<decode_attn_split_d64_g2_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_split_d64_g4_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_split_d64_g8_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_split_d128_g2_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_split_d128_g4_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_split_d128_g8_ $s>](q: *const $t, keys: *const *const $t, values: *const *const $t, slots: *const i32, sequences: *const i32, positions: *const i32, capacities: *const i32, partial_o: *mut f32, partial_ml: *mut f32, h: i32, h_kv: i32, splits: i32, scale: f32);
                fn [<decode_attn_combine_d64_ $s>](partial_o: *const f32, partial_ml: *const f32, slots: *const i32, o: *mut $t, h: i32, splits: i32);
                fn [<decode_attn_combine_d128_ $s>](partial_o: *const f32, partial_ml: *const f32, slots: *const i32, o: *mut $t, h: i32, splits: i32);
            }
            impl DecodeFloat for $t {
                const DECODE: DecodeKernels<Self> = DecodeKernels {
                    append: [<kv_append_ $s>],
                    split: [
                        [[<decode_attn_split_d64_g2_ $s>], [<decode_attn_split_d64_g4_ $s>], [<decode_attn_split_d64_g8_ $s>]],
                        [[<decode_attn_split_d128_g2_ $s>], [<decode_attn_split_d128_g4_ $s>], [<decode_attn_split_d128_g8_ $s>]],
                    ],
                    combine: [[<decode_attn_combine_d64_ $s>], [<decode_attn_combine_d128_ $s>]],
                    flash: $flash,
                };
            }
        }
    };
}
decode_kernels!(f32, f32, None);
decode_kernels!(bf16, bf16, Some([flash_fwd_cached_d64_bf16, flash_fwd_cached_d128_bf16]));
decode_kernels!(f16, f16, None);

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

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} = {v} exceeds the kernels' int"))
}

/// Appends `k, v: [n, kv_heads, d]` to the caches, then returns `o: [n, heads, d]` and the plan
/// the step ran by, as the CUDA launcher does: the partial sums and the output start poisoned.
pub fn append_and_attend<T: DecodeFloat>(step: &Step, q: &[T], k: &[T], v: &[T], caches: &[Cache<T>], schedule: Schedule) -> Result<(Vec<T>, CachedAttentionPlan), String> {
    let (n, h, h_kv, d) = (step.positions.len(), step.heads, step.kv_heads, step.head_dim);
    if step.sequence.len() != n || q.len() != n * h * d || k.len() != n * h_kv * d || v.len() != k.len() {
        return Err(format!("q {}, k {}, v {} elements and {} sequences do not describe {n} rows", q.len(), k.len(), v.len(), step.sequence.len()));
    }
    for (&s, &p) in step.sequence.iter().zip(step.positions) {
        let cache = caches.get(s).ok_or(format!("sequence {s} has no cache"))?;
        if p >= cache.capacity || cache.keys.len() != h_kv * cache.capacity * d {
            return Err(format!("position {p} in a cache of {} positions ({} elements)", cache.capacity, cache.keys.len()));
        }
    }
    let kernels = &T::DECODE;
    let rows: Vec<(usize, usize)> = step.sequence.iter().copied().zip(step.positions.iter().copied()).collect();
    let plan = plan(&rows, h, h_kv, d, T::DTYPE, step.flash_min_rows).map_err(|e| e.to_string())?;
    // one table entry per sequence, as the CUDA launcher passes them
    let table = |f: &dyn Fn(&Cache<T>) -> *mut T| -> Buffer<u64> {
        let addresses: Vec<u64> = caches.iter().map(|c| f(c) as u64).collect();
        Buffer::from_slice(c"cache pointers", &addresses)
    };
    let (keys, values) = (table(&|c| c.keys.ptr()), table(&|c| c.values.ptr()));
    let ints = |name: &'static std::ffi::CStr, values: &mut dyn Iterator<Item = usize>| -> Result<Buffer<i32>, String> {
        let values: Vec<i32> = values.map(|v| int(v, "index")).collect::<Result<_, _>>()?;
        Ok(Buffer::from_slice(name, &values))
    };
    let sequences = ints(c"sequences", &mut step.sequence.iter().copied())?;
    let positions = ints(c"positions", &mut step.positions.iter().copied())?;
    let capacities = ints(c"capacities", &mut caches.iter().map(|c| c.capacity))?;
    let (qb, kb, vb) = (Buffer::from_slice(c"q", q), Buffer::from_slice(c"k", k), Buffer::from_slice(c"v", v));
    let (n_i, h_i, h_kv_i, d_i) = (int(n, "rows")?, int(h, "heads")?, int(h_kv, "kv heads")?, int(d, "head dim")?);

    let append = kernels.append;
    launch(&plan.append, schedule, || {
        // SAFETY: kv_append's C signature; table entry z addresses sequence z's cache of
        // capacities[z] positions, and each row's position is below its sequence's (checked above).
        unsafe { append(kb.ptr(), vb.ptr(), keys.ptr() as *const *mut T, values.ptr() as *const *mut T, sequences.ptr(), positions.ptr(), capacities.ptr(), n_i, h_kv_i, d_i) }
    })
    .map_err(|e| format!("kv_append: {e}"))?;

    let which = usize::from(d == 128);
    let o = Buffer::filled(c"o", n * h * d, T::POISON);
    if let Some(shape) = plan.flash {
        let flash = kernels.flash.ok_or(format!("the plan sends rows to flash tiles, but no flash_fwd_cached is built for {:?}", T::DTYPE))?[which];
        let tiles = Buffer::from_slice(c"tiles", &plan.tile_table().map_err(|e| e.to_string())?);
        launch(&shape, schedule, || {
            // SAFETY: flash_fwd_cached's C signature; T is bf16 whenever kernels.flash is Some, and
            // every tile's rows lie inside q and o and its positions inside its sequence's cache.
            unsafe { flash(qb.ptr().cast::<bf16>(), keys.ptr() as *const *const bf16, values.ptr() as *const *const bf16, capacities.ptr(), tiles.ptr(), o.ptr().cast::<bf16>(), h_i, h_kv_i, step.scale) }
        })
        .map_err(|e| format!("flash_fwd_cached_d{d}: {e}"))?;
    }
    if let Some(shape) = plan.split {
        let slots = Buffer::from_slice(c"slots", &plan.slot_table().map_err(|e| e.to_string())?);
        let splits_i = int(shape.splits, "splits")?;
        let partials = plan.slots.len() * h * shape.splits;
        let partial_o = Buffer::filled(c"partial_o", partials * d, f32::POISON);
        let partial_ml = Buffer::filled(c"partial_ml", partials * 2, f32::POISON);
        let bound = GROUP_BOUNDS.iter().position(|&b| b == shape.group_bound).ok_or(format!("no split kernel for group bound {}", shape.group_bound))?;
        let split = kernels.split[which][bound];
        launch(&shape.split, schedule, || {
            // SAFETY: decode_attn_split's C signature; partial buffers of slots·h·splits (·d, ·2);
            // the kernel's group bound holds h / h_kv (decode_launch chose it).
            unsafe { split(qb.ptr(), keys.ptr() as *const *const T, values.ptr() as *const *const T, slots.ptr(), sequences.ptr(), positions.ptr(), capacities.ptr(), partial_o.ptr(), partial_ml.ptr(), h_i, h_kv_i, splits_i, step.scale) }
        })
        .map_err(|e| format!("decode_attn_split_d{d}_g{}: {e}", shape.group_bound))?;
        let combine = kernels.combine[which];
        launch(&shape.combine, schedule, || {
            // SAFETY: decode_attn_combine's C signature; o holds n·h·d elements, slots name rows < n.
            unsafe { combine(partial_o.ptr(), partial_ml.ptr(), slots.ptr(), o.ptr(), h_i, splits_i) }
        })
        .map_err(|e| format!("decode_attn_combine_d{d}: {e}"))?;
    }
    Ok((o.to_vec(), plan))
}

#[cfg(test)]
mod tests {
    use forge_kernels::signatures::{self as sig, instantiate, Pointee};

    use super::*;
    use crate::declarations::declared;

    fn declarations_match_signatures<T: DecodeFloat + Pointee>() {
        let k = &T::DECODE;
        assert_eq!(declared(&k.append), instantiate(sig::KV_APPEND, T::NAME), "kv_append_{}", T::NAME);
        for split in k.split.iter().flatten() {
            assert_eq!(declared(split), instantiate(sig::DECODE_SPLIT, T::NAME), "decode_attn_split_*_{}", T::NAME);
        }
        for combine in &k.combine {
            assert_eq!(declared(combine), instantiate(sig::DECODE_COMBINE, T::NAME), "decode_attn_combine_*_{}", T::NAME);
        }
        for flash in k.flash.iter().flatten() {
            assert_eq!(declared(flash), instantiate(sig::FLASH_FWD_CACHED, "bf16"), "flash_fwd_cached_*_bf16");
        }
    }

    #[test]
    fn the_declarations_are_the_kernels_signatures() {
        declarations_match_signatures::<f32>();
        declarations_match_signatures::<bf16>();
        declarations_match_signatures::<f16>();
    }
}
