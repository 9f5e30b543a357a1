//! RMSNorm over the last dimension: `y = x / sqrt(mean(x²) + eps) · w`, statistics in f32.
//! Fused CPU kernels here; the CUDA kernels (kernels/rms_norm.cu) compute the same formulas.

use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{dispatch_float, for_each_row, last_dim, sum_rows, view, Elem};

/// Differentiable RMSNorm of `x` (normalised over its last dim) with weight `w` of shape
/// `[last_dim]`. Gradients flow to both `x` and `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    match x.device() {
        Device::Cpu | Device::Cuda(_) => x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 }),
        _ => crate::reference::rms_norm(x, w, eps),
    }
}

#[inline]
fn inv_rms<T: Elem>(row: &[T], eps: f32) -> f32 {
    let sum_sq: f32 = row.iter().map(|v| v.to_f32() * v.to_f32()).sum();
    1.0 / (sum_sq / row.len() as f32 + eps).sqrt()
}

struct RmsNorm {
    eps: f32,
}

fn forward<T: Elem>(op: &RmsNorm, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<CpuStorage> {
    let name = op.name();
    let n = last_dim(xl, name)?;
    if wl.dims() != [n] {
        candle_core::bail!("{name}: weight shape {:?} does not match the last dim {n}", wl.dims());
    }
    let (x, w) = (view::<T>(xs, xl, name, "x")?, view::<T>(ws, wl, name, "w")?);
    let mut y = vec![T::from_f32(0.0); x.len()];
    for_each_row(&mut y, n, |r, out| {
        let row = &x[r * n..(r + 1) * n];
        let inv = inv_rms(row, op.eps);
        for ((o, xv), wv) in out.iter_mut().zip(row).zip(w) {
            *o = T::from_f32(xv.to_f32() * inv * wv.to_f32());
        }
    });
    Ok(T::wrap(y))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "forge-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), forward(self, xs, xl, ws, wl))?;
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        use crate::launch::rms_norm::forward;
        let out = dispatch_float!(xs.dtype(), self.name(), forward::<_, candle_core::CudaDevice>(&xs.device, self.eps, xs, xl, ws, wl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Detached: a Var's gradient must not carry a graph of its own.
        let (x, w, dy) = (x.detach(), w.detach(), dy.detach().contiguous()?);
        let dx = x.apply_op3_no_bwd(&w, &dy, &RmsNormGradInput { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&dy, &RmsNormGradWeight { eps: self.eps })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx = r · (g − x̂ · mean(g · x̂)) with x̂ = x·r and g = dy·w.
struct RmsNormGradInput {
    eps: f32,
}

fn grad_input<T: Elem>(
    op: &RmsNormGradInput,
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    gs: &CpuStorage,
    gl: &Layout,
) -> Result<CpuStorage> {
    let name = op.name();
    let n = last_dim(xl, name)?;
    let (x, w, dy) = (view::<T>(xs, xl, name, "x")?, view::<T>(ws, wl, name, "w")?, view::<T>(gs, gl, name, "dy")?);
    let mut dx = vec![T::from_f32(0.0); x.len()];
    for_each_row(&mut dx, n, |r, out| {
        let (xr, dyr) = (&x[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let inv = inv_rms(xr, op.eps);
        let dot: f32 = xr.iter().zip(dyr).zip(w).map(|((a, g), b)| a.to_f32() * g.to_f32() * b.to_f32()).sum();
        let mean_gx = dot * inv / n as f32;
        for (((o, a), g), b) in out.iter_mut().zip(xr).zip(dyr).zip(w) {
            *o = T::from_f32(inv * (g.to_f32() * b.to_f32() - a.to_f32() * inv * mean_gx));
        }
    });
    Ok(T::wrap(dx))
}

impl CustomOp3 for RmsNormGradInput {
    fn name(&self) -> &'static str {
        "forge-rms-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), grad_input(self, xs, xl, ws, wl, gs, gl))?;
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use crate::launch::rms_norm::grad_input;
        let out = dispatch_float!(xs.dtype(), self.name(), grad_input::<_, candle_core::CudaDevice>(&xs.device, self.eps, xs, xl, ws, wl, gs, gl))?;
        Ok((out, xl.shape().clone()))
    }
}

/// dw = Σ_rows dy · x̂, accumulated in f32.
struct RmsNormGradWeight {
    eps: f32,
}

fn grad_weight<T: Elem>(op: &RmsNormGradWeight, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<CpuStorage> {
    let name = op.name();
    let n = last_dim(xl, name)?;
    let (x, dy) = (view::<T>(xs, xl, name, "x")?, view::<T>(gs, gl, name, "dy")?);
    let dw = sum_rows(x.len() / n, n, |r, acc| {
        let xr = &x[r * n..(r + 1) * n];
        let inv = inv_rms(xr, op.eps);
        for ((a, xv), g) in acc.iter_mut().zip(xr).zip(&dy[r * n..(r + 1) * n]) {
            *a += g.to_f32() * xv.to_f32() * inv;
        }
    });
    Ok(T::wrap(dw.into_iter().map(T::from_f32).collect()))
}

impl CustomOp2 for RmsNormGradWeight {
    fn name(&self) -> &'static str {
        "forge-rms-norm-grad-weight"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), grad_weight(self, xs, xl, gs, gl))?;
        let n = last_dim(xl, self.name())?;
        Ok((out, Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<(CudaStorage, Shape)> {
        use crate::launch::rms_norm::grad_weight;
        let out = dispatch_float!(xs.dtype(), self.name(), grad_weight::<_, candle_core::CudaDevice>(&xs.device, self.eps, xs, xl, gs, gl))?;
        let n = last_dim(xl, self.name())?;
        Ok((out, Shape::from(n)))
    }
}
