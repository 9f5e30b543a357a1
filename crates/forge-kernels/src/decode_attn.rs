//! Attention of decoding steps over KV caches kept on the GPU (kernels/decode_attn.cu, "flash
//! decoding"). The new rows' keys and values are appended to their sequences' caches in place, then
//! each row attends its own cache at positions `0..=position`: the positions are split over blocks
//! of [`DECODE_CHUNK`] (split-K, so that one row per sequence still fills the GPU) and the splits'
//! partial softmaxes combined. The CPU reference is [`crate::cached_attention::attend`] over the
//! host cache (forge-model's `KvCache`); crates/forge-kernels-emu checks the kernels against it.

use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

use crate::launch::{grid_stride, LaunchShape};

/// Cached positions one block of the split kernel attends (kernels/decode_attn.cu `CHUNK`).
pub const DECODE_CHUNK: usize = 256;
/// Query heads per K/V head the split kernel holds in registers (kernels/decode_attn.cu `MAX_GROUP`).
pub const MAX_GROUP: usize = 8;
const SPLIT_THREADS: u32 = 128;
const APPEND_THREADS: u32 = 256;

/// Why the kernels cannot serve this attention shape, if they cannot.
pub fn unsupported_shape(heads: usize, kv_heads: usize, head_dim: usize) -> Option<String> {
    if head_dim != 64 && head_dim != 128 {
        return Some(format!("head dim {head_dim} (the decode kernels are built for 64 and 128)"));
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) || heads / kv_heads > MAX_GROUP {
        return Some(format!("{heads} query heads over {kv_heads} K/V heads (at most {MAX_GROUP} query heads per K/V head)"));
    }
    None
}

/// Whether caches of a model with this attention shape live on `device` and decode there: CUDA
/// builds on a CUDA device, for the shapes the kernels are built for.
pub fn supported(device: &Device, heads: usize, kv_heads: usize, head_dim: usize) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && unsupported_shape(heads, kv_heads, head_dim).is_none()
}

/// The launches of one decode attention: `splits` position blocks per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLaunch {
    pub splits: usize,
    /// `decode_attn_split_d{D}`: grid (rows, kv_heads, splits).
    pub split: LaunchShape,
    /// `decode_attn_combine_d{D}`: grid (rows, heads), a thread per element of a head.
    pub combine: LaunchShape,
    /// `kv_append`: grid-stride over the new rows' keys.
    pub append: LaunchShape,
}

/// [`DecodeLaunch`] for `rows` query rows whose longest attends `longest` positions.
pub fn decode_launch(rows: usize, heads: usize, kv_heads: usize, head_dim: usize, longest: usize) -> Result<DecodeLaunch> {
    // rows go in x (up to 2^31 - 1: a prefill step holds every new token of every sequence)
    const GRID_X: usize = (1 << 31) - 1;
    const GRID_YZ: usize = 65535;
    if let Some(why) = unsupported_shape(heads, kv_heads, head_dim) {
        bail!("decode attention: {why}");
    }
    let splits = longest.div_ceil(DECODE_CHUNK).max(1);
    if rows == 0 || rows > GRID_X || heads > GRID_YZ || splits > GRID_YZ {
        bail!("decode attention: {rows} rows, {heads} heads or {splits} splits of {DECODE_CHUNK} positions exceed the grid");
    }
    Ok(DecodeLaunch {
        splits,
        split: LaunchShape { grid: [rows as u32, kv_heads as u32, splits as u32], block: [SPLIT_THREADS, 1, 1], shared_bytes: 0 },
        combine: LaunchShape { grid: [rows as u32, heads as u32, 1], block: [head_dim as u32, 1, 1], shared_bytes: 0 },
        append: grid_stride(rows * kv_heads * head_dim, APPEND_THREADS),
    })
}

/// One layer's cache of one sequence: keys and values `[kv_heads, capacity, head_dim]`, contiguous,
/// on the GPU, owned by the cache alone (they are written in place).
#[derive(Clone, Copy)]
pub struct LayerCache<'a> {
    pub keys: &'a Tensor,
    pub values: &'a Tensor,
}

/// Row `r` of the step is `rows[r] = (sequence, position)`: writes its key and value (`k`, `v`:
/// `[n, kv_heads·d]`) into `caches[sequence]` at `position`, then returns `softmax(q·kᵀ·scale)·v`
/// of each row of `q: [n, heads·d]` over its sequence's positions `0..=position`, as `[n, heads·d]`
/// in q's dtype. Rows of one sequence share its cache (a prefill's rows see each other, causally).
/// CUDA only.
pub fn append_and_attend(q: &Tensor, k: &Tensor, v: &Tensor, caches: &[LayerCache<'_>], rows: &[(usize, usize)], heads: usize, scale: f32) -> Result<Tensor> {
    let op = DecodeAttention { caches: caches.iter().map(|c| (c.keys.clone(), c.values.clone())).collect(), rows: rows.to_vec(), heads, scale };
    q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

// read by the CUDA forward only
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DecodeAttention {
    /// Per sequence.
    pub(crate) caches: Vec<(Tensor, Tensor)>,
    /// Per row: (sequence, position).
    pub(crate) rows: Vec<(usize, usize)>,
    pub(crate) heads: usize,
    pub(crate) scale: f32,
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "forge-decode-attn"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("forge-decode-attn runs on CUDA only; on the CPU the KV cache lives on the host (cached_attention::attend)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let o = crate::cuda::decode_attn::append_and_attend(self, [(qs, ql), (ks, kl), (vs, vl)])?;
        Ok((o, ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_positions_split_into_chunks_and_every_head_is_combined() {
        let l = decode_launch(3, 32, 8, 128, 32768).unwrap();
        assert_eq!(l.splits, 128);
        assert_eq!(l.split.grid, [3, 8, 128]);
        assert_eq!(l.combine, LaunchShape { grid: [3, 32, 1], block: [128, 1, 1], shared_bytes: 0 });
        // a prefill step of 32 prompts of 4096 tokens: more rows than a grid's y or z allows
        assert_eq!(decode_launch(32 * 4096, 32, 8, 128, 4096).unwrap().split.grid, [131072, 8, 16]);
        assert_eq!(decode_launch(1, 16, 2, 64, 257).unwrap().splits, 2);
        assert_eq!(decode_launch(1, 16, 2, 64, 1).unwrap().splits, 1);
    }

    #[test]
    fn shapes_the_kernels_are_not_built_for_are_refused_by_name() {
        assert!(decode_launch(1, 8, 2, 96, 10).unwrap_err().to_string().contains("head dim 96"));
        assert!(decode_launch(1, 32, 2, 128, 10).unwrap_err().to_string().contains("at most 8 query heads per K/V head"));
        assert!(decode_launch(1, 6, 4, 128, 10).unwrap_err().to_string().contains("6 query heads over 4 K/V heads"));
        assert!(decode_launch(0, 8, 2, 128, 10).is_err());
        assert!(!supported(&Device::Cpu, 32, 8, 128), "host caches on the CPU");
    }
}
