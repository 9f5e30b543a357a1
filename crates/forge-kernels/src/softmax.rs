//! Softmax over the last dimension, computed in f32; and its fused attention form
//! `softmax(x·scale + bias)` with a broadcast additive mask, which saves the scaled and masked
//! copies of the score tensor (the largest activation of attention) in forward and backward.

use candle_core::backend::BackendStorage as _;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{dispatch_float, for_each_row, last_dim, view, Elem};

/// Differentiable softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(Softmax { scale: 1.0 }),
        _ => crate::reference::softmax_last_dim(x),
    }
}

/// Differentiable `softmax(x·scale + bias)` over the last dim of `x: [b, h, sq, sk]`, with
/// `bias: [b or 1, 1, sq, sk]` (no gradient: masks are not trained).
pub fn scaled_masked_softmax(x: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, _h, sq, sk) = x.dims4()?;
    if let Some(bias) = bias {
        let (bb, one, bq, bk) = bias.dims4()?;
        if (bb != 1 && bb != b) || one != 1 || bq != sq || bk != sk {
            bail!("scaled_masked_softmax: bias {:?} does not broadcast to scores {:?}", bias.dims(), x.dims());
        }
    }
    match (x.device(), bias) {
        (Device::Cpu, Some(bias)) => x.contiguous()?.apply_op2(&bias.contiguous()?, MaskedSoftmax { scale: scale as f32 }),
        (Device::Cpu, None) => x.contiguous()?.apply_op1(Softmax { scale: scale as f32 }),
        (_, bias) => crate::reference::scaled_masked_softmax(x, bias, scale),
    }
}

/// One row: `out = softmax(row·scale + bias)`, in f32.
#[inline]
fn softmax_row<T: Elem>(row: &[T], bias: Option<&[T]>, scale: f32, out: &mut [T], work: &mut Vec<f32>) {
    work.clear();
    match bias {
        Some(bias) => work.extend(row.iter().zip(bias).map(|(v, b)| v.to_f32() * scale + b.to_f32())),
        None => work.extend(row.iter().map(|v| v.to_f32() * scale)),
    }
    let max = work.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in work.iter_mut() {
        // masked entries sit ~3e38 below the max: exp would underflow through glibc's slow path
        let shifted = *v - max;
        *v = if shifted < -88.0 { 0.0 } else { shifted.exp() };
        sum += *v;
    }
    let inv = 1.0 / sum;
    for (o, e) in out.iter_mut().zip(work.iter()) {
        *o = T::from_f32(e * inv);
    }
}

struct Softmax {
    scale: f32,
}

fn forward<T: Elem>(scale: f32, xs: &CpuStorage, xl: &Layout) -> Result<CpuStorage> {
    let name = "forge-softmax";
    let n = last_dim(xl, name)?;
    let x = view::<T>(xs, xl, name, "x")?;
    let mut y = vec![T::from_f32(0.0); x.len()];
    for_each_row(&mut y, n, |r, out| softmax_row(&x[r * n..(r + 1) * n], None, scale, out, &mut Vec::with_capacity(n)));
    Ok(T::wrap(y))
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "forge-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), forward(self.scale, xs, xl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (y, dy) = (y.detach(), dy.detach().contiguous()?);
        Ok(Some(y.apply_op2_no_bwd(&dy, &SoftmaxGrad { scale: self.scale })?))
    }
}

struct MaskedSoftmax {
    scale: f32,
}

fn masked_forward<T: Elem>(scale: f32, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<CpuStorage> {
    let name = "forge-masked-softmax";
    let (_, h, sq, sk) = xl.shape().dims4()?;
    let bias_batch = bl.dims()[0];
    let (x, bias) = (view::<T>(xs, xl, name, "x")?, view::<T>(bs, bl, name, "bias")?);
    let mut y = vec![T::from_f32(0.0); x.len()];
    for_each_row(&mut y, sk, |r, out| {
        // row r = (batch, head, query); the mask row depends on batch (if per-batch) and query
        let (bi, qi) = (r / (h * sq), r % sq);
        let b0 = ((if bias_batch == 1 { 0 } else { bi }) * sq + qi) * sk;
        softmax_row(&x[r * sk..(r + 1) * sk], Some(&bias[b0..b0 + sk]), scale, out, &mut Vec::with_capacity(sk));
    });
    Ok(T::wrap(y))
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "forge-masked-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(xs.dtype(), self.name(), masked_forward(self.scale, xs, xl, bs, bl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _bias: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (y, dy) = (y.detach(), dy.detach().contiguous()?);
        Ok((Some(y.apply_op2_no_bwd(&dy, &SoftmaxGrad { scale: self.scale })?), None))
    }
}

/// dx = scale · y · (dy − Σ dy·y)
struct SoftmaxGrad {
    scale: f32,
}

fn grad<T: Elem>(scale: f32, ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<CpuStorage> {
    let name = "forge-softmax-grad";
    let n = last_dim(yl, name)?;
    let (y, dy) = (view::<T>(ys, yl, name, "y")?, view::<T>(gs, gl, name, "dy")?);
    let mut dx = vec![T::from_f32(0.0); y.len()];
    for_each_row(&mut dx, n, |r, out| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a.to_f32() * b.to_f32()).sum();
        for ((o, a), b) in out.iter_mut().zip(yr).zip(gr) {
            *o = T::from_f32(scale * a.to_f32() * (b.to_f32() - dot));
        }
    });
    Ok(T::wrap(dx))
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "forge-softmax-grad"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(ys.dtype(), self.name(), grad(self.scale, ys, yl, gs, gl))?;
        Ok((out, yl.shape().clone()))
    }
}
