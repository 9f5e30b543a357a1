//! Softmax over the last dimension, computed in f32.

use candle_core::backend::BackendStorage as _;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{dispatch_float, for_each_row, last_dim, view, Elem};

/// Differentiable softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(Softmax),
        _ => crate::reference::softmax_last_dim(x),
    }
}

struct Softmax;

fn forward<T: Elem>(xs: &CpuStorage, xl: &Layout) -> Result<CpuStorage> {
    let name = Softmax.name();
    let n = last_dim(xl, name)?;
    let x = view::<T>(xs, xl, name, "x")?;
    let mut y = vec![T::from_f32(0.0); x.len()];
    for_each_row(&mut y, n, |r, out| {
        let row = &x[r * n..(r + 1) * n];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.to_f32()));
        let mut sum = 0f32;
        let mut exps = Vec::with_capacity(n);
        for v in row {
            let e = (v.to_f32() - max).exp();
            sum += e;
            exps.push(e);
        }
        let inv = 1.0 / sum;
        for (o, e) in out.iter_mut().zip(exps) {
            *o = T::from_f32(e * inv);
        }
    });
    Ok(T::wrap(y))
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "forge-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), forward(xs, xl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (y, dy) = (y.detach(), dy.detach().contiguous()?);
        Ok(Some(y.apply_op2_no_bwd(&dy, &SoftmaxGrad)?))
    }
}

/// dx = y · (dy − Σ dy·y)
struct SoftmaxGrad;

fn grad<T: Elem>(ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<CpuStorage> {
    let name = SoftmaxGrad.name();
    let n = last_dim(yl, name)?;
    let (y, dy) = (view::<T>(ys, yl, name, "y")?, view::<T>(gs, gl, name, "dy")?);
    let mut dx = vec![T::from_f32(0.0); y.len()];
    for_each_row(&mut dx, n, |r, out| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a.to_f32() * b.to_f32()).sum();
        for ((o, a), b) in out.iter_mut().zip(yr).zip(gr) {
            *o = T::from_f32(a.to_f32() * (b.to_f32() - dot));
        }
    });
    Ok(T::wrap(dx))
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "forge-softmax-grad"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(ys.dtype(), self.name(), grad(ys, yl, gs, gl))?;
        Ok((out, yl.shape().clone()))
    }
}
