//! Launch of kernels/rope.cu for the RoPE CustomOp (forward and, with `inverse`, backward).

use candle_core::{Layout, Result};

use crate::backend::{as_i32, Backend, Elem};
use crate::kernels::rope;
use crate::launch::grid_stride;

/// Threads per block of the grid-stride rotation.
pub const THREADS: u32 = 256;

#[allow(clippy::too_many_arguments)]
pub fn rotate<T: Elem, B: Backend>(
    dev: &B,
    inverse: bool,
    xs: &B::Storage,
    xl: &Layout,
    cs: &B::Storage,
    cl: &Layout,
    ss: &B::Storage,
    sl: &Layout,
) -> Result<B::Storage> {
    let op = "forge-rope";
    let (b, s, h, d) = xl.shape().dims4()?;
    let x = dev.view::<T>(xs, xl, op, "x")?;
    let (cos, sin) = (dev.view::<f32>(cs, cl, op, "cos")?, dev.view::<f32>(ss, sl, op, "sin")?);
    let dims = [as_i32(b, op, "batch")?, as_i32(s, op, "seq")?, as_i32(h, op, "heads")?, as_i32(d, op, "head dim")?];
    let cos_batch = as_i32(cl.dims()[0], op, "cos batch")?;
    let sign: f32 = if inverse { -1.0 } else { 1.0 };
    let y = dev.alloc::<T>(b * s * h * d)?;
    let cfg = grid_stride(b * s * h * d / 2, THREADS);
    rope::<B, T>(dev, &cfg, &x, &cos, &sin, &y, dims[0], dims[1], dims[2], dims[3], cos_batch, sign)?;
    Ok(dev.wrap(y))
}
