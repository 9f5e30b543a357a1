//! Launches of kernels/cross_entropy.cu for the cross-entropy CustomOps.

use candle_core::{Layout, Result};

use crate::backend::{as_i32, Backend, Elem};
use crate::kernels::{cross_entropy_fwd, cross_entropy_grad};
use crate::launch::per_row;

fn rows_and_vocab(ll: &Layout, op: &str) -> Result<(usize, usize, i32, i32)> {
    let (rows, vocab) = ll.shape().dims2()?;
    Ok((rows, vocab, as_i32(rows, op, "rows")?, as_i32(vocab, op, "vocabulary")?))
}

/// nll: `[rows]` f32.
pub fn forward<T: Elem, B: Backend>(dev: &B, ls: &B::Storage, ll: &Layout, ts: &B::Storage, tl: &Layout) -> Result<B::Storage> {
    let op = "forge-cross-entropy";
    let (rows, vocab, rows_i, vocab_i) = rows_and_vocab(ll, op)?;
    let (logits, targets) = (dev.view::<T>(ls, ll, op, "logits")?, dev.view::<u32>(ts, tl, op, "targets")?);
    let nll = dev.alloc::<f32>(rows)?;
    cross_entropy_fwd::<B, T>(dev, &per_row(rows, vocab), &logits, &targets, &nll, rows_i, vocab_i)?;
    Ok(dev.wrap(nll))
}

/// dlogits: `[rows, vocab]` in the logits' dtype.
#[allow(clippy::too_many_arguments)]
pub fn grad<T: Elem, B: Backend>(dev: &B, ls: &B::Storage, ll: &Layout, ts: &B::Storage, tl: &Layout, gs: &B::Storage, gl: &Layout) -> Result<B::Storage> {
    let op = "forge-cross-entropy-grad";
    let (rows, vocab, rows_i, vocab_i) = rows_and_vocab(ll, op)?;
    let (logits, targets) = (dev.view::<T>(ls, ll, op, "logits")?, dev.view::<u32>(ts, tl, op, "targets")?);
    let dnll = dev.view::<f32>(gs, gl, op, "dnll")?;
    let dlogits = dev.alloc::<T>(rows * vocab)?;
    cross_entropy_grad::<B, T>(dev, &per_row(rows, vocab), &logits, &targets, &dnll, &dlogits, rows_i, vocab_i)?;
    Ok(dev.wrap(dlogits))
}
