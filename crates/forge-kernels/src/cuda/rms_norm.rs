//! Launches of kernels/rms_norm.cu for the RMSNorm CustomOps.

use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{bail, CudaStorage, Layout, Result};

use super::{alloc_output, as_i32, launch, per_row, view, CudaElem, RMS_NORM};

/// Rows summed by one block of the weight-gradient reduction: enough blocks to fill the GPU at
/// training sizes, few enough partial rows to keep the second stage small.
const GRAD_WEIGHT_CHUNK: usize = 64;
/// The grid's y dimension (one block row per chunk) is limited to 65535.
const MAX_CHUNKS: usize = 65535;
const COLUMN_THREADS: u32 = 128;

fn rows_and_cols(xl: &Layout, op: &str) -> Result<(usize, usize, i32, i32)> {
    let n = crate::cpu::last_dim(xl, op)?;
    let rows = xl.shape().elem_count() / n;
    Ok((rows, n, as_i32(rows, op, "rows")?, as_i32(n, op, "last dim")?))
}

pub(crate) fn forward<T: CudaElem>(eps: f32, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<CudaStorage> {
    let op = "forge-rms-norm";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    if wl.dims() != [n] {
        bail!("{op}: weight shape {:?} does not match the last dim {n}", wl.dims());
    }
    let (x, w) = (view::<T>(xs, xl, op, "x")?, view::<T>(ws, wl, op, "w")?);
    let dev = &xs.device;
    let y = alloc_output::<T>(dev, rows * n)?;
    launch!(T, dev, RMS_NORM, "rms_norm_fwd", per_row(rows, n), x, w, y, rows_i, n_i, eps)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn grad_input<T: CudaElem>(
    eps: f32,
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let op = "forge-rms-norm-grad-input";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    let (x, w, dy) = (view::<T>(xs, xl, op, "x")?, view::<T>(ws, wl, op, "w")?, view::<T>(gs, gl, op, "dy")?);
    let dev = &xs.device;
    let dx = alloc_output::<T>(dev, rows * n)?;
    launch!(T, dev, RMS_NORM, "rms_norm_grad_input", per_row(rows, n), x, w, dy, dx, rows_i, n_i, eps)?;
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// dw = Σ_rows dy · x · inv_rms(x): the per-row statistics, then column sums over chunks of rows,
/// then the sum of the chunks (three launches; deterministic, no atomics).
pub(crate) fn grad_weight<T: CudaElem>(eps: f32, xs: &CudaStorage, xl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<CudaStorage> {
    let op = "forge-rms-norm-grad-weight";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    let (x, dy) = (view::<T>(xs, xl, op, "x")?, view::<T>(gs, gl, op, "dy")?);
    let dev = &xs.device;
    let inv = alloc_output::<f32>(dev, rows)?;
    launch!(T, dev, RMS_NORM, "rms_norm_inv_rms", per_row(rows, n), x, inv, rows_i, n_i, eps)?;
    let chunk = GRAD_WEIGHT_CHUNK.max(rows.div_ceil(MAX_CHUNKS));
    let chunks = rows.div_ceil(chunk);
    let column_blocks = n.div_ceil(COLUMN_THREADS as usize) as u32;
    let partial = alloc_output::<f32>(dev, chunks * n)?;
    let cfg = LaunchConfig { grid_dim: (column_blocks, chunks as u32, 1), block_dim: (COLUMN_THREADS, 1, 1), shared_mem_bytes: 0 };
    let chunk_i = as_i32(chunk, op, "rows per chunk")?;
    launch!(T, dev, RMS_NORM, "rms_norm_grad_weight_partial", cfg, x, dy, inv, partial, rows_i, n_i, chunk_i)?;
    let dw = alloc_output::<T>(dev, n)?;
    let cfg = LaunchConfig { grid_dim: (column_blocks, 1, 1), block_dim: (COLUMN_THREADS, 1, 1), shared_mem_bytes: 0 };
    let chunks_i = as_i32(chunks, op, "row chunks")?;
    launch!(T, dev, RMS_NORM, "rms_norm_grad_weight_finish", cfg, partial, dw, chunks_i, n_i)?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
