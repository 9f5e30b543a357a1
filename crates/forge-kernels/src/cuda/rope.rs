//! Launch of kernels/rope.cu for the RoPE CustomOp (forward and, with `inverse`, backward).

use candle_core::{CudaStorage, Layout, Result};

use super::kernels::ROPE_ROTATE;
use super::{alloc_output, as_i32, launch, view, CudaElem};
use crate::launch::grid_stride;

/// Threads per block of the grid-stride rotation.
pub(super) const THREADS: u32 = 256;

#[allow(clippy::too_many_arguments)]
pub(crate) fn rotate<T: CudaElem>(
    inverse: bool,
    xs: &CudaStorage,
    xl: &Layout,
    cs: &CudaStorage,
    cl: &Layout,
    ss: &CudaStorage,
    sl: &Layout,
) -> Result<CudaStorage> {
    let op = "forge-rope";
    let (b, s, h, d) = xl.shape().dims4()?;
    let x = view::<T>(xs, xl, op, "x")?;
    let (cos, sin) = (view::<f32>(cs, cl, op, "cos")?, view::<f32>(ss, sl, op, "sin")?);
    let dims = [as_i32(b, op, "batch")?, as_i32(s, op, "seq")?, as_i32(h, op, "heads")?, as_i32(d, op, "head dim")?];
    let cos_batch = as_i32(cl.dims()[0], op, "cos batch")?;
    let sign: f32 = if inverse { -1.0 } else { 1.0 };
    let dev = &xs.device;
    let y = alloc_output::<T>(dev, b * s * h * d)?;
    let cfg = grid_stride(b * s * h * d / 2, THREADS);
    launch!(T, dev, ROPE_ROTATE, cfg, x, cos, sin, y, dims[0], dims[1], dims[2], dims[3], cos_batch, sign)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}
