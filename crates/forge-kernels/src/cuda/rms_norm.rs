//! Launches of kernels/rms_norm.cu for the RMSNorm CustomOps.

use candle_core::{bail, CudaStorage, Layout, Result};

use super::kernels::{RMS_NORM_FWD, RMS_NORM_GRAD_INPUT, RMS_NORM_GRAD_WEIGHT_FINISH, RMS_NORM_GRAD_WEIGHT_PARTIAL, RMS_NORM_INV_RMS};
use super::{alloc_output, as_i32, launch, view, CudaElem};
use crate::launch::{column_reduction, per_row};

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
    launch!(T, dev, RMS_NORM_FWD, per_row(rows, n), x, w, y, rows_i, n_i, eps)?;
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
    launch!(T, dev, RMS_NORM_GRAD_INPUT, per_row(rows, n), x, w, dy, dx, rows_i, n_i, eps)?;
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
    launch!(T, dev, RMS_NORM_INV_RMS, per_row(rows, n), x, inv, rows_i, n_i, eps)?;
    let columns = column_reduction(rows, n);
    let partial = alloc_output::<f32>(dev, columns.chunks * n)?;
    let chunk_i = as_i32(columns.chunk, op, "rows per chunk")?;
    launch!(T, dev, RMS_NORM_GRAD_WEIGHT_PARTIAL, columns.partial, x, dy, inv, partial, rows_i, n_i, chunk_i)?;
    let dw = alloc_output::<T>(dev, n)?;
    let chunks_i = as_i32(columns.chunks, op, "row chunks")?;
    launch!(T, dev, RMS_NORM_GRAD_WEIGHT_FINISH, columns.finish, partial, dw, chunks_i, n_i)?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
