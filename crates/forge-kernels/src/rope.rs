//! Rotary position embedding in the "rotate half" convention of HF Llama/Qwen:
//! `out[..i] = x1·cos − x2·sin`, `out[i..] = x2·cos + x1·sin` with `x1 = x[..d/2]`, `x2 = x[d/2..]`.

use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{dispatch_float, for_each_row, view, Elem};

/// Differentiable RoPE of `x: [b, s, h, d]` with f32 `cos`, `sin: [b or 1, s, d/2]`.
/// Only `x` receives a gradient (the rotation is a fixed function of positions).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check_shapes(x, cos, sin)?;
    match x.device() {
        Device::Cpu | Device::Cuda(_) => {
            x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { inverse: false })
        }
        _ => crate::reference::rope(x, cos, sin),
    }
}

fn check_shapes(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    let (b, s, _h, d) = x.dims4()?;
    if d % 2 != 0 {
        bail!("rope: head dim {d} must be even");
    }
    for (name, t) in [("cos", cos), ("sin", sin)] {
        let (cb, cs, half) = t.dims3()?;
        if (cb != 1 && cb != b) || cs != s || half != d / 2 {
            bail!("rope: {name} has shape {:?}, expected [1 or {b}, {s}, {}]", t.dims(), d / 2);
        }
        if t.dtype() != DType::F32 {
            bail!("rope: {name} must be f32, got {:?}", t.dtype());
        }
    }
    Ok(())
}

/// `inverse` rotates by −θ: the transpose of the rotation, i.e. its backward.
struct Rope {
    inverse: bool,
}

#[allow(clippy::too_many_arguments)]
fn forward<T: Elem>(
    op: &Rope,
    xs: &CpuStorage,
    xl: &Layout,
    cs: &CpuStorage,
    cl: &Layout,
    ss: &CpuStorage,
    sl: &Layout,
) -> Result<CpuStorage> {
    let name = op.name();
    let (b, s, h, d) = xl.shape().dims4()?;
    let x = view::<T>(xs, xl, name, "x")?;
    let (cos, sin) = (view::<f32>(cs, cl, name, "cos")?, view::<f32>(ss, sl, name, "sin")?);
    let half = d / 2;
    let cos_batch = cl.dims()[0];
    let sign = if op.inverse { -1.0 } else { 1.0 };
    let mut y = vec![T::from_f32(0.0); x.len()];
    // One row = the h heads of one (batch, position).
    for_each_row(&mut y, h * d, |row, out| {
        let (bi, si) = (row / s, row % s);
        let c0 = ((if cos_batch == 1 { 0 } else { bi }) * s + si) * half;
        let (c, sn) = (&cos[c0..c0 + half], &sin[c0..c0 + half]);
        let xr = &x[row * h * d..(row + 1) * h * d];
        for (xh, oh) in xr.chunks(d).zip(out.chunks_mut(d)) {
            for i in 0..half {
                let (x1, x2) = (xh[i].to_f32(), xh[i + half].to_f32());
                let (cv, sv) = (c[i], sign * sn[i]);
                oh[i] = T::from_f32(x1 * cv - x2 * sv);
                oh[i + half] = T::from_f32(x2 * cv + x1 * sv);
            }
        }
    });
    debug_assert_eq!(y.len(), b * s * h * d);
    Ok(T::wrap(y))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "forge-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), forward(self, xs, xl, cs, cl, ss, sl))?;
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        cs: &CudaStorage,
        cl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use crate::launch::rope::rotate;
        let out = dispatch_float!(xs.dtype(), self.name(), rotate::<_, candle_core::CudaDevice>(&xs.device, self.inverse, xs, xl, cs, cl, ss, sl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = dy.detach().contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { inverse: !self.inverse })?;
        Ok((Some(dx), None, None))
    }
}
