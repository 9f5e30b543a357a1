//! Launches of kernels/swiglu.cu for the SwiGLU CustomOps: the gate forward, and both gradients
//! packed as `[2, ..dims]` (the CPU op's layout).

use candle_core::{bail, CudaStorage, Layout, Result};

use super::kernels::{SWIGLU_FWD, SWIGLU_GRAD};
use super::{alloc_output, as_i32, launch, view, CudaElem};
use crate::launch::elementwise_packs;

pub(crate) fn gate<T: CudaElem>(gs: &CudaStorage, gl: &Layout, us: &CudaStorage, ul: &Layout) -> Result<CudaStorage> {
    let op = "forge-swiglu";
    let (g, u) = (view::<T>(gs, gl, op, "gate")?, view::<T>(us, ul, op, "up")?);
    let len = same_length(op, gl, &[ul])?;
    let n = as_i32(len, op, "elements")?;
    let dev = &gs.device;
    let y = alloc_output::<T>(dev, len)?;
    launch!(T, dev, SWIGLU_FWD, elementwise_packs(len, size_of::<T>()), g, u, y, n)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn grads<T: CudaElem>(
    gs: &CudaStorage,
    gl: &Layout,
    us: &CudaStorage,
    ul: &Layout,
    ds: &CudaStorage,
    dl: &Layout,
) -> Result<CudaStorage> {
    let op = "forge-swiglu-grad";
    let (g, u, dy) = (view::<T>(gs, gl, op, "gate")?, view::<T>(us, ul, op, "up")?, view::<T>(ds, dl, op, "dy")?);
    let len = same_length(op, gl, &[ul, dl])?;
    let n = as_i32(len, op, "elements")?;
    let dev = &gs.device;
    let packed = alloc_output::<T>(dev, 2 * len)?;
    launch!(T, dev, SWIGLU_GRAD, elementwise_packs(len, size_of::<T>()), g, u, dy, packed, n)?;
    Ok(CudaStorage::wrap_cuda_slice(packed, dev.clone()))
}

/// The element count the kernels index every operand with: the gate's, which the others must share.
fn same_length(op: &str, gate: &Layout, others: &[&Layout]) -> Result<usize> {
    let len = gate.shape().elem_count();
    if let Some(other) = others.iter().find(|l| l.shape().elem_count() != len) {
        bail!("{op}: operands of shapes {:?} and {:?} differ in size", gate.dims(), other.dims());
    }
    Ok(len)
}
