//! Attention of engine steps over KV caches kept on the GPU. The new rows' keys and values are
//! appended to their sequences' caches in place (kernels/decode_attn.cu `kv_append`), then each row
//! attends its own cache at positions `0..=position`, by one of two kernels ([`plan`]):
//! - a run of at least `flash_min_rows` ([`FLASH_MIN_ROWS`] in the engine) consecutive rows of one
//!   sequence (a prefill chunk) goes through the flash forward's tensor-core tiles
//!   (kernels/flash_attn.cu `flash_fwd_cached`, bf16): 64 rows share each key tile they load;
//! - every other row (decoding: one row per sequence) through "flash decoding": the positions are
//!   split over blocks of [`DECODE_CHUNK`] (split-K, so that one row per sequence still fills the
//!   GPU) and the splits' partial softmaxes combined.
//!
//! The CPU reference is [`crate::cached_attention::attend`] over the host cache (forge-model's
//! `KvCache`); crates/forge-kernels-emu checks both kernels against it.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use crate::flash_attn::{TileKernel, KERNEL_HEAD_DIMS, TILE_ROWS, TILE_THREADS};
use crate::launch::{grid_stride, LaunchShape};

/// Cached positions one block of the split kernel attends (kernels/decode_attn.cu `CHUNK`).
pub const DECODE_CHUNK: usize = 256;
/// Query heads per K/V head the split kernel holds in registers (kernels/decode_attn.cu `MAX_GROUP`).
pub const MAX_GROUP: usize = 8;
/// The group sizes the split kernel is built for, as bounds (`decode_attn_split_d{D}_g{G}`): a group
/// runs in the smallest that holds it (fewer registers, more blocks per SM).
pub const GROUP_BOUNDS: [usize; 3] = [2, 4, MAX_GROUP];
const SPLIT_THREADS: u32 = 128;
const APPEND_THREADS: u32 = 256;

/// Why the kernels cannot serve this attention shape, if they cannot.
pub fn unsupported_shape(heads: usize, kv_heads: usize, head_dim: usize) -> Option<String> {
    if !KERNEL_HEAD_DIMS.contains(&head_dim) {
        return Some(format!("head dim {head_dim} (the decode kernels are built for {KERNEL_HEAD_DIMS:?})"));
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

/// Consecutive rows of one sequence (a prefill chunk) from which on they are attended by the flash
/// forward's tiles rather than split-K row by row: a warp's share of a tile (16 of its 64 rows).
/// Below it most of a tile's tensor-core work would be on empty rows. A guess until timed on a GPU:
/// benches/gpu_cached_attention.rs times both kernels per run length (`scripts/gpu/gpu-check.sh decode`).
pub const FLASH_MIN_ROWS: usize = 16;

/// The one storage type `flash_fwd_cached` is built for (its tiles are bf16 tensor-core products):
/// caches of any other dtype attend every row by split-K.
pub const FLASH_TILE_DTYPE: DType = DType::BF16;

const GRID_X: usize = (1 << 31) - 1;
const GRID_YZ: usize = 65535;

/// The split-K launches: `splits` position blocks per slot (a row split-K attends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLaunch {
    pub splits: usize,
    /// The split kernel's group bound, one of [`GROUP_BOUNDS`].
    pub group_bound: usize,
    /// `decode_attn_split_d{D}_g{group_bound}`: grid (slots, kv_heads, splits).
    pub split: LaunchShape,
    /// `decode_attn_combine_d{D}`: grid (slots, heads), a thread per element of a head.
    pub combine: LaunchShape,
}

/// [`DecodeLaunch`] for `slots` query rows whose longest attends `longest` positions.
pub fn decode_launch(slots: usize, heads: usize, kv_heads: usize, head_dim: usize, longest: usize) -> Result<DecodeLaunch> {
    if let Some(why) = unsupported_shape(heads, kv_heads, head_dim) {
        bail!("decode attention: {why}");
    }
    let splits = longest.div_ceil(DECODE_CHUNK).max(1);
    let group = heads / kv_heads;
    let group_bound = *GROUP_BOUNDS.iter().find(|&&bound| group <= bound).expect("unsupported_shape bounds the group by MAX_GROUP");
    // slots go in x (up to 2^31 - 1: a prefill step of short prompts holds many rows)
    if slots == 0 || slots > GRID_X || heads > GRID_YZ || splits > GRID_YZ {
        bail!("decode attention: {slots} rows, {heads} heads or {splits} splits of {DECODE_CHUNK} positions exceed the grid");
    }
    Ok(DecodeLaunch {
        splits,
        group_bound,
        split: LaunchShape { grid: [slots as u32, kv_heads as u32, splits as u32], block: [SPLIT_THREADS, 1, 1], shared_bytes: 0 },
        combine: LaunchShape { grid: [slots as u32, heads as u32, 1], block: [head_dim as u32, 1, 1], shared_bytes: 0 },
    })
}

/// One block of `flash_fwd_cached`: `rows` (1..=[`TILE_ROWS`]) consecutive rows of the step from
/// `row` on, of `sequence`, the first at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashTile {
    pub row: usize,
    pub rows: usize,
    pub position: usize,
    pub sequence: usize,
}

/// How one step's attention runs: which rows go through flash tiles and which through split-K,
/// and the launches (the CUDA launcher and the emulator follow it alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAttentionPlan {
    /// `kv_append`: grid-stride over every new row's keys.
    pub append: LaunchShape,
    pub tiles: Vec<FlashTile>,
    /// `flash_fwd_cached_d{D}_bf16`: grid (tiles, heads); `None` without tiles.
    pub flash: Option<LaunchShape>,
    /// The rows split-K attends, in step order (the kernels' `slots`).
    pub slots: Vec<usize>,
    /// `None` when every row is in a tile.
    pub split: Option<DecodeLaunch>,
}

impl CachedAttentionPlan {
    /// `[row, rows, position, sequence]` per tile, as `flash_fwd_cached` reads them.
    pub fn tile_table(&self) -> Result<Vec<i32>> {
        kernel_ints(self.tiles.iter().flat_map(|t| [t.row, t.rows, t.position, t.sequence]))
    }

    /// The slots as the kernels' `int`s.
    pub fn slot_table(&self) -> Result<Vec<i32>> {
        kernel_ints(self.slots.iter().copied())
    }
}

fn kernel_ints(values: impl Iterator<Item = usize>) -> Result<Vec<i32>> {
    values.map(|v| i32::try_from(v).or_else(|_| bail!("cached attention: {v} exceeds the kernels' int"))).collect()
}

/// Plans the attention of a step over caches of `dtype` whose row `r` is `rows[r] = (sequence,
/// position)`. Runs of at least `flash_min_rows` rows of one sequence at consecutive positions are
/// cut into flash tiles where the caches are [`FLASH_TILE_DTYPE`]; the other rows are split-K slots.
pub fn plan(rows: &[(usize, usize)], heads: usize, kv_heads: usize, head_dim: usize, dtype: DType, flash_min_rows: usize) -> Result<CachedAttentionPlan> {
    if let Some(why) = unsupported_shape(heads, kv_heads, head_dim) {
        bail!("decode attention: {why}");
    }
    if flash_min_rows == 0 {
        bail!("decode attention: flash_min_rows is 0; a run has at least 1 row (usize::MAX sends every row to split-K)");
    }
    let flash_min_rows = (dtype == FLASH_TILE_DTYPE).then_some(flash_min_rows);
    if rows.is_empty() {
        bail!("decode attention: a step without rows");
    }
    let (mut tiles, mut slots) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < rows.len() {
        let (sequence, position) = rows[start];
        let run = 1 + rows[start + 1..].iter().zip(1..).take_while(|&(&(z, p), i)| z == sequence && p == position + i).count();
        if flash_min_rows.is_some_and(|min| run >= min) {
            for first in (0..run).step_by(TILE_ROWS) {
                tiles.push(FlashTile { row: start + first, rows: TILE_ROWS.min(run - first), position: position + first, sequence });
            }
        } else {
            slots.extend(start..start + run);
        }
        start += run;
    }
    if tiles.len() > GRID_X || heads > GRID_YZ {
        bail!("decode attention: {} flash tiles or {heads} heads exceed the grid", tiles.len());
    }
    let flash = (!tiles.is_empty()).then(|| LaunchShape {
        grid: [tiles.len() as u32, heads as u32, 1],
        block: [TILE_THREADS, 1, 1],
        shared_bytes: TileKernel::Forward.shared_bytes(head_dim) as u32,
    });
    let split = match slots.is_empty() {
        true => None,
        false => {
            let longest = slots.iter().map(|&r| rows[r].1 + 1).max().unwrap_or(1);
            Some(decode_launch(slots.len(), heads, kv_heads, head_dim, longest)?)
        }
    };
    Ok(CachedAttentionPlan { append: grid_stride(rows.len() * kv_heads * head_dim, APPEND_THREADS), tiles, flash, slots, split })
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
/// Runs of at least `flash_min_rows` rows of one sequence go through the flash tiles in bf16 (see
/// [`plan`]; the engine passes [`FLASH_MIN_ROWS`]). CUDA only.
#[allow(clippy::too_many_arguments)] // the op's inputs, each a different kind of thing
pub fn append_and_attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: &[LayerCache<'_>],
    rows: &[(usize, usize)],
    heads: usize,
    scale: f32,
    flash_min_rows: usize,
) -> Result<Tensor> {
    let caches = caches.iter().map(|c| (c.keys.clone(), c.values.clone())).collect();
    let op = DecodeAttention { caches, rows: rows.to_vec(), heads, scale, flash_min_rows };
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
    pub(crate) flash_min_rows: usize,
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
        let o = crate::cuda::append_and_attend(self, [(qs, ql), (ks, kl), (vs, vl)])?;
        Ok((o, ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BF16: DType = FLASH_TILE_DTYPE;

    #[test]
    fn the_positions_split_into_chunks_and_every_head_is_combined() {
        let l = decode_launch(3, 32, 8, 128, 32768).unwrap();
        assert_eq!((l.splits, l.group_bound), (128, 4));
        assert_eq!(l.split.grid, [3, 8, 128]);
        assert_eq!(l.combine, LaunchShape { grid: [3, 32, 1], block: [128, 1, 1], shared_bytes: 0 });
        // a prefill step of 32 prompts of 4096 tokens: more rows than a grid's y or z allows
        assert_eq!(decode_launch(32 * 4096, 32, 8, 128, 4096).unwrap().split.grid, [131072, 8, 16]);
        assert_eq!(decode_launch(1, 16, 2, 64, 257).unwrap().splits, 2);
        // each group in the smallest bound that holds it
        let bound = |heads| decode_launch(1, heads, 1, 128, 1).unwrap().group_bound;
        assert_eq!([1, 2, 3, 4, 5, 8].map(bound), [2, 2, 4, 4, 8, 8]);
        assert_eq!(decode_launch(1, 16, 2, 64, 1).unwrap().splits, 1);
    }

    #[test]
    fn runs_of_a_sequences_consecutive_rows_become_flash_tiles_and_the_rest_split_k_slots() {
        // sequence 0 decodes at 300; sequence 1 prefills 130 rows from 40 (tiles of 64, 64, 2);
        // sequence 2 prefills 15 rows (one short of a tile run); sequence 3 exactly 16
        let mut rows = vec![(0, 300)];
        rows.extend((40..170).map(|p| (1, p)));
        rows.extend((0..15).map(|p| (2, p)));
        rows.extend((7..23).map(|p| (3, p)));
        let mixed = plan(&rows, 32, 8, 128, BF16, FLASH_MIN_ROWS).unwrap();
        let tile = |row, rows, position, sequence| FlashTile { row, rows, position, sequence };
        assert_eq!(mixed.tiles, [tile(1, 64, 40, 1), tile(65, 64, 104, 1), tile(129, 2, 168, 1), tile(146, 16, 7, 3)]);
        assert_eq!(mixed.slots, [0].into_iter().chain(131..146).collect::<Vec<_>>());
        assert_eq!(mixed.flash.unwrap().grid, [4, 32, 1]);
        assert_eq!(mixed.flash.unwrap().shared_bytes, 2 * 64 * (128 + 8) * 2);
        let split = mixed.split.unwrap();
        assert_eq!((split.splits, split.split.grid), (2, [16, 8, 2]), "the longest slot attends 301 positions");
        assert_eq!(mixed.append, grid_stride(rows.len() * 8 * 128, APPEND_THREADS));
        assert_eq!(mixed.tile_table().unwrap()[4..8], [65, 64, 104, 1]);

        // a run breaks where the sequence changes or a position is skipped
        let broken: Vec<_> = (0..20).map(|p| (0, p + usize::from(p >= 10))).collect();
        assert!(plan(&broken, 8, 8, 64, BF16, FLASH_MIN_ROWS).unwrap().tiles.is_empty(), "two runs of 10 rows");
        // the flash kernel is bf16 only: other dtypes attend every row by split-K
        assert_eq!(plan(&rows, 32, 8, 128, DType::F16, FLASH_MIN_ROWS).unwrap().slots.len(), rows.len());
        let f32_plan = plan(&rows, 32, 8, 128, DType::F32, FLASH_MIN_ROWS).unwrap();
        assert!(f32_plan.tiles.is_empty() && f32_plan.flash.is_none());
        assert_eq!(f32_plan.slots, (0..rows.len()).collect::<Vec<_>>());
        // a step of prefill chunks only has no split-K launch
        let prefill = plan(&rows[1..131], 32, 8, 128, BF16, FLASH_MIN_ROWS).unwrap();
        assert!(prefill.split.is_none() && prefill.slots.is_empty());
        assert_eq!(prefill.tiles[0], tile(0, 64, 40, 1));
    }

    #[test]
    fn the_run_length_threshold_routes_rows_between_the_kernels() {
        // two decodes, a run of 3 and a run of 20
        let mut rows = vec![(0, 300), (1, 9)];
        rows.extend((50..53).map(|p| (2, p)));
        rows.extend((0..20).map(|p| (3, p)));
        let rows_of = |plan: &CachedAttentionPlan| plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>();
        // 1: every row is in a tile, a decode in a tile of its own
        let all_flash = plan(&rows, 32, 8, 128, BF16, 1).unwrap();
        assert_eq!(rows_of(&all_flash), [1, 1, 3, 20]);
        assert!(all_flash.slots.is_empty() && all_flash.split.is_none());
        assert_eq!(rows_of(&plan(&rows, 32, 8, 128, BF16, 3).unwrap()), [3, 20]);
        assert_eq!(rows_of(&plan(&rows, 32, 8, 128, BF16, 21).unwrap()), Vec::<usize>::new());
        // usize::MAX: every row by split-K, as without flash
        let all_split = plan(&rows, 32, 8, 128, BF16, usize::MAX).unwrap();
        assert_eq!(all_split, plan(&rows, 32, 8, 128, DType::F32, FLASH_MIN_ROWS).unwrap());
        assert_eq!(all_split.slots, (0..rows.len()).collect::<Vec<_>>());
    }

    #[test]
    fn shapes_the_kernels_are_not_built_for_are_refused_by_name() {
        assert!(decode_launch(1, 8, 2, 96, 10).unwrap_err().to_string().contains("head dim 96"));
        assert!(decode_launch(1, 32, 2, 128, 10).unwrap_err().to_string().contains("at most 8 query heads per K/V head"));
        assert!(decode_launch(1, 6, 4, 128, 10).unwrap_err().to_string().contains("6 query heads over 4 K/V heads"));
        assert!(decode_launch(0, 8, 2, 128, 10).is_err());
        assert!(plan(&[], 8, 2, 128, BF16, FLASH_MIN_ROWS).is_err());
        assert!(plan(&[(0, 0)], 8, 2, 96, BF16, FLASH_MIN_ROWS).unwrap_err().to_string().contains("head dim 96"));
        assert!(plan(&[(0, 0)], 8, 2, 128, BF16, 0).unwrap_err().to_string().contains("flash_min_rows is 0"));
        assert!(!supported(&Device::Cpu, 32, 8, 128), "host caches on the CPU");
    }
}
