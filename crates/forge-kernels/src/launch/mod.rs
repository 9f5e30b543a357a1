//! The launch code of the CUDA kernels, written once over a [`Backend`](crate::backend::Backend)
//! (a GPU through candle's `CudaDevice`, or the host emulator of crates/forge-kernels-emu, which
//! runs it in CI): one module per op (`rms_norm.rs`, ...) checks the inputs, sizes the outputs,
//! picks each launch's shape and calls the kernels' typed launch functions (`crate::kernels`).
//! Here: the launch geometry (grid, block, dynamic shared memory) they share, computed without a
//! device.

pub mod adamw;
pub mod cross_entropy;
pub mod decode_attn;
pub mod flash_attn;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;

/// Grid and block dimensions (x, y, z) and the dynamic shared memory (bytes) of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Blocks of `threads` for a grid-stride loop over `n` items.
pub fn grid_stride(n: usize, threads: u32) -> LaunchShape {
    // More blocks than this only add scheduling: each thread then loops a few times.
    const MAX_BLOCKS: usize = 1 << 16;
    let blocks = n.div_ceil(threads as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchShape { grid: [blocks, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
}

/// Elementwise kernels that move 16-byte packs (kernels/swiglu.cu): a thread per pack of `n`
/// elements of `elem_bytes` each; the same grid serves their element-wise fallback, each thread
/// looping over more elements.
pub fn elementwise_packs(n: usize, elem_bytes: usize) -> LaunchShape {
    grid_stride(n.div_ceil(16 / elem_bytes), 256)
}

/// Row kernels: a warp per row for rows up to 1024 elements (several rows per block), else a
/// block of 256 threads per row (kernels/common.cuh `row_sum` relies on this shape).
pub fn per_row(rows: usize, n: usize) -> LaunchShape {
    const ROWS_PER_BLOCK: usize = 8;
    if n <= 1024 {
        LaunchShape { grid: [rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1], block: [32, ROWS_PER_BLOCK as u32, 1], shared_bytes: 0 }
    } else {
        LaunchShape { grid: [rows as u32, 1, 1], block: [256, 1, 1], shared_bytes: 0 }
    }
}

/// The column reduction of RMSNorm's weight gradient (`rms_norm_grad_weight_partial`, then
/// `_finish`): `chunk` rows per block row, `chunks` block rows, a thread per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnReduction {
    pub chunk: usize,
    pub chunks: usize,
    pub partial: LaunchShape,
    pub finish: LaunchShape,
}

/// [`ColumnReduction`] over `rows` rows of `n` columns.
pub fn column_reduction(rows: usize, n: usize) -> ColumnReduction {
    // Rows summed by one block: enough blocks to fill the GPU at training sizes, few enough
    // partial rows to keep the second stage small; the grid's y dimension is limited to 65535.
    const CHUNK: usize = 64;
    const MAX_CHUNKS: usize = 65535;
    const THREADS: u32 = 128;
    let chunk = CHUNK.max(rows.div_ceil(MAX_CHUNKS));
    let chunks = rows.div_ceil(chunk);
    let column_blocks = n.div_ceil(THREADS as usize) as u32;
    ColumnReduction {
        chunk,
        chunks,
        partial: LaunchShape { grid: [column_blocks, chunks as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 },
        finish: LaunchShape { grid: [column_blocks, 1, 1], block: [THREADS, 1, 1], shared_bytes: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stride_covers_every_item_up_to_the_block_cap() {
        assert_eq!(grid_stride(0, 256).grid, [1, 1, 1]);
        assert_eq!(grid_stride(257, 256).grid, [2, 1, 1]);
        assert_eq!(grid_stride(usize::MAX / 2, 256).grid, [1 << 16, 1, 1]);
    }

    #[test]
    fn per_row_switches_from_a_warp_to_a_block_per_row_above_1024() {
        assert_eq!(per_row(17, 1024), LaunchShape { grid: [3, 1, 1], block: [32, 8, 1], shared_bytes: 0 });
        assert_eq!(per_row(17, 1025), LaunchShape { grid: [17, 1, 1], block: [256, 1, 1], shared_bytes: 0 });
    }

    #[test]
    fn column_reduction_keeps_its_chunks_within_the_grid() {
        let small = column_reduction(130, 300);
        assert_eq!((small.chunk, small.chunks, small.partial.grid), (64, 3, [3, 3, 1]));
        let huge = column_reduction(10_000_000, 128);
        assert!(huge.chunks <= 65535 && huge.chunk * huge.chunks >= 10_000_000, "{huge:?}");
    }
}
