//! Launches of kernels/swiglu.cu for the SwiGLU CustomOps: the gate forward, and both gradients
//! packed as `[2, ..dims]` (the CPU op's layout).

use candle_core::{bail, Layout, Result};

use crate::backend::{as_i32, Backend, Elem};
use crate::kernels::{swiglu_fwd, swiglu_grad};
use crate::launch::elementwise_packs;

pub fn gate<T: Elem, B: Backend>(dev: &B, gs: &B::Storage, gl: &Layout, us: &B::Storage, ul: &Layout) -> Result<B::Storage> {
    let op = "forge-swiglu";
    let (g, u) = (dev.view::<T>(gs, gl, op, "gate")?, dev.view::<T>(us, ul, op, "up")?);
    let len = same_length(op, gl, &[ul])?;
    let n = as_i32(len, op, "elements")?;
    let y = dev.alloc::<T>(len)?;
    swiglu_fwd::<B, T>(dev, &elementwise_packs(len, size_of::<T>()), &g, &u, &y, n)?;
    Ok(dev.wrap(y))
}

#[allow(clippy::too_many_arguments)]
pub fn grads<T: Elem, B: Backend>(dev: &B, gs: &B::Storage, gl: &Layout, us: &B::Storage, ul: &Layout, ds: &B::Storage, dl: &Layout) -> Result<B::Storage> {
    let op = "forge-swiglu-grad";
    let (g, u, dy) = (dev.view::<T>(gs, gl, op, "gate")?, dev.view::<T>(us, ul, op, "up")?, dev.view::<T>(ds, dl, op, "dy")?);
    let len = same_length(op, gl, &[ul, dl])?;
    let n = as_i32(len, op, "elements")?;
    let packed = dev.alloc::<T>(2 * len)?;
    swiglu_grad::<B, T>(dev, &elementwise_packs(len, size_of::<T>()), &g, &u, &dy, &packed, n)?;
    Ok(dev.wrap(packed))
}

/// The element count the kernels index every operand with: the gate's, which the others must share.
fn same_length(op: &str, gate: &Layout, others: &[&Layout]) -> Result<usize> {
    let len = gate.shape().elem_count();
    if let Some(other) = others.iter().find(|l| l.shape().elem_count() != len) {
        bail!("{op}: operands of shapes {:?} and {:?} differ in size", gate.dims(), other.dims());
    }
    Ok(len)
}
