//! Launches of kernels/rms_norm.cu for the RMSNorm CustomOps.

use candle_core::{bail, Layout, Result};

use crate::backend::{as_i32, Backend, Elem};
use crate::kernels::{rms_norm_fwd, rms_norm_grad_input, rms_norm_grad_weight_finish, rms_norm_grad_weight_partial, rms_norm_inv_rms};
use crate::launch::{column_reduction, per_row};

fn rows_and_cols(xl: &Layout, op: &str) -> Result<(usize, usize, i32, i32)> {
    let n = crate::cpu::last_dim(xl, op)?;
    let rows = xl.shape().elem_count() / n;
    Ok((rows, n, as_i32(rows, op, "rows")?, as_i32(n, op, "last dim")?))
}

pub fn forward<T: Elem, B: Backend>(dev: &B, eps: f32, xs: &B::Storage, xl: &Layout, ws: &B::Storage, wl: &Layout) -> Result<B::Storage> {
    let op = "forge-rms-norm";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    if wl.dims() != [n] {
        bail!("{op}: weight shape {:?} does not match the last dim {n}", wl.dims());
    }
    let (x, w) = (dev.view::<T>(xs, xl, op, "x")?, dev.view::<T>(ws, wl, op, "w")?);
    let y = dev.alloc::<T>(rows * n)?;
    rms_norm_fwd::<B, T>(dev, &per_row(rows, n), &x, &w, &y, rows_i, n_i, eps)?;
    Ok(dev.wrap(y))
}

#[allow(clippy::too_many_arguments)]
pub fn grad_input<T: Elem, B: Backend>(
    dev: &B,
    eps: f32,
    xs: &B::Storage,
    xl: &Layout,
    ws: &B::Storage,
    wl: &Layout,
    gs: &B::Storage,
    gl: &Layout,
) -> Result<B::Storage> {
    let op = "forge-rms-norm-grad-input";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    let (x, w, dy) = (dev.view::<T>(xs, xl, op, "x")?, dev.view::<T>(ws, wl, op, "w")?, dev.view::<T>(gs, gl, op, "dy")?);
    let dx = dev.alloc::<T>(rows * n)?;
    rms_norm_grad_input::<B, T>(dev, &per_row(rows, n), &x, &w, &dy, &dx, rows_i, n_i, eps)?;
    Ok(dev.wrap(dx))
}

/// dw = Σ_rows dy · x · inv_rms(x): the per-row statistics, then column sums over chunks of rows,
/// then the sum of the chunks (three launches; deterministic, no atomics).
pub fn grad_weight<T: Elem, B: Backend>(dev: &B, eps: f32, xs: &B::Storage, xl: &Layout, gs: &B::Storage, gl: &Layout) -> Result<B::Storage> {
    let op = "forge-rms-norm-grad-weight";
    let (rows, n, rows_i, n_i) = rows_and_cols(xl, op)?;
    let (x, dy) = (dev.view::<T>(xs, xl, op, "x")?, dev.view::<T>(gs, gl, op, "dy")?);
    let inv = dev.alloc::<f32>(rows)?;
    rms_norm_inv_rms::<B, T>(dev, &per_row(rows, n), &x, &inv, rows_i, n_i, eps)?;
    let columns = column_reduction(rows, n);
    let partial = dev.alloc::<f32>(columns.chunks * n)?;
    let chunk_i = as_i32(columns.chunk, op, "rows per chunk")?;
    rms_norm_grad_weight_partial::<B, T>(dev, &columns.partial, &x, &dy, &inv, &partial, rows_i, n_i, chunk_i)?;
    let dw = dev.alloc::<T>(n)?;
    let chunks_i = as_i32(columns.chunks, op, "row chunks")?;
    rms_norm_grad_weight_finish::<B, T>(dev, &columns.finish, &partial, &dw, chunks_i, n_i)?;
    Ok(dev.wrap(dw))
}
