//! Launches of kernels/cross_entropy.cu for the cross-entropy CustomOps.

use candle_core::{CudaStorage, Layout, Result};

use super::kernels::{CROSS_ENTROPY_FWD, CROSS_ENTROPY_GRAD};
use super::{alloc_output, as_i32, launch, view, CudaElem};
use crate::launch::per_row;

fn rows_and_vocab(ll: &Layout, op: &str) -> Result<(usize, usize, i32, i32)> {
    let (rows, vocab) = ll.shape().dims2()?;
    Ok((rows, vocab, as_i32(rows, op, "rows")?, as_i32(vocab, op, "vocabulary")?))
}

/// nll: `[rows]` f32.
pub(crate) fn forward<T: CudaElem>(ls: &CudaStorage, ll: &Layout, ts: &CudaStorage, tl: &Layout) -> Result<CudaStorage> {
    let op = "forge-cross-entropy";
    let (rows, vocab, rows_i, vocab_i) = rows_and_vocab(ll, op)?;
    let (logits, targets) = (view::<T>(ls, ll, op, "logits")?, view::<u32>(ts, tl, op, "targets")?);
    let dev = &ls.device;
    let nll = alloc_output::<f32>(dev, rows)?;
    launch!(T, dev, CROSS_ENTROPY_FWD, per_row(rows, vocab), logits, targets, nll, rows_i, vocab_i)?;
    Ok(CudaStorage::wrap_cuda_slice(nll, dev.clone()))
}

/// dlogits: `[rows, vocab]` in the logits' dtype.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grad<T: CudaElem>(
    ls: &CudaStorage,
    ll: &Layout,
    ts: &CudaStorage,
    tl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let op = "forge-cross-entropy-grad";
    let (rows, vocab, rows_i, vocab_i) = rows_and_vocab(ll, op)?;
    let (logits, targets) = (view::<T>(ls, ll, op, "logits")?, view::<u32>(ts, tl, op, "targets")?);
    let dnll = view::<f32>(gs, gl, op, "dnll")?;
    let dev = &ls.device;
    let dlogits = alloc_output::<T>(dev, rows * vocab)?;
    launch!(T, dev, CROSS_ENTROPY_GRAD, per_row(rows, vocab), logits, targets, dnll, dlogits, rows_i, vocab_i)?;
    Ok(CudaStorage::wrap_cuda_slice(dlogits, dev.clone()))
}
