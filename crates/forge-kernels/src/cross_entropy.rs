//! Per-token cross-entropy `nll_i = logsumexp(logits_i) − logits_i[target_i]`, fused on CPU and
//! on CUDA (kernels/cross_entropy.cu).

use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use crate::cpu::{dispatch_float, for_each_row, view, Elem};

/// A target with this value contributes nothing (HF's `ignore_index = -100`, in u32 form).
pub const IGNORE_TARGET: u32 = u32::MAX;

/// Differentiable per-token negative log-likelihood: `logits: [n, vocab]` (any float dtype),
/// `targets: [n]` u32 → `[n]` f32, zero where the target is [`IGNORE_TARGET`].
pub fn cross_entropy_per_token(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    checked_targets(targets, n, vocab, "cross_entropy")?;
    match logits.device() {
        Device::Cpu | Device::Cuda(_) => logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy),
        _ => crate::reference::cross_entropy_per_token(logits, targets),
    }
}

/// The ids of `targets`, which must be u32 of shape `[n]`, each below `vocab` or [`IGNORE_TARGET`].
pub(crate) fn checked_targets(targets: &Tensor, n: usize, vocab: usize, op: &str) -> Result<Vec<u32>> {
    if targets.dims() != [n] || targets.dtype() != DType::U32 {
        bail!("{op}: targets must be u32 of shape [{n}], got {:?} {:?}", targets.dtype(), targets.dims());
    }
    let ids = targets.to_vec1::<u32>()?;
    if let Some(t) = ids.iter().find(|&&t| t != IGNORE_TARGET && t as usize >= vocab) {
        bail!("{op}: target id {t} is outside the vocabulary (size {vocab})");
    }
    Ok(ids)
}

struct CrossEntropy;

/// Row max and log Σ exp(x − max), in f32.
fn row_stats<T: Elem>(row: &[T]) -> (f32, f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.to_f32()));
    let sum: f32 = row.iter().map(|v| (v.to_f32() - max).exp()).sum();
    (max, sum.ln())
}

fn forward<T: Elem>(ls: &CpuStorage, ll: &Layout, ts: &CpuStorage, tl: &Layout) -> Result<CpuStorage> {
    let name = CrossEntropy.name();
    let (_, vocab) = ll.shape().dims2()?;
    let (logits, targets) = (view::<T>(ls, ll, name, "logits")?, view_u32(ts, tl, name)?);
    // one row of work is a whole vocabulary: parallel over rows even though the output is small
    let nll: Vec<f32> = (0..targets.len())
        .into_par_iter()
        .map(|r| match targets[r] {
            IGNORE_TARGET => 0.0,
            t => {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let (max, log_sum) = row_stats(row);
                max + log_sum - row[t as usize].to_f32()
            }
        })
        .collect();
    Ok(CpuStorage::F32(nll))
}

fn view_u32<'a>(ts: &'a CpuStorage, tl: &Layout, op: &str) -> Result<&'a [u32]> {
    match (ts, tl.contiguous_offsets()) {
        (CpuStorage::U32(t), Some((a, b))) => Ok(&t[a..b]),
        _ => bail!("{op}: targets must be contiguous u32"),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "forge-cross-entropy"
    }

    fn cpu_fwd(&self, ls: &CpuStorage, ll: &Layout, ts: &CpuStorage, tl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(ls.dtype(), self.name(), forward(ls, ll, ts, tl))?;
        Ok((out, Shape::from(tl.dims()[0])))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, ls: &CudaStorage, ll: &Layout, ts: &CudaStorage, tl: &Layout) -> Result<(CudaStorage, Shape)> {
        use crate::launch::cross_entropy::forward;
        let out = dispatch_float!(ls.dtype(), self.name(), forward::<_, candle_core::CudaDevice>(&ls.device, ls, ll, ts, tl))?;
        Ok((out, Shape::from(tl.dims()[0])))
    }

    fn bwd(&self, logits: &Tensor, targets: &Tensor, _nll: &Tensor, dnll: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(cross_entropy_grad(logits, targets, dnll)?), None))
    }
}

/// The gradient of the per-token loss w.r.t. the logits, without a graph (for backward passes).
pub(crate) fn cross_entropy_grad(logits: &Tensor, targets: &Tensor, dnll: &Tensor) -> Result<Tensor> {
    let dnll = dnll.detach().to_dtype(DType::F32)?.contiguous()?;
    logits.detach().contiguous()?.apply_op3_no_bwd(&targets.contiguous()?, &dnll, &CrossEntropyGrad)
}

/// dlogits_i = (softmax(logits_i) − onehot(target_i)) · dnll_i
struct CrossEntropyGrad;

fn grad<T: Elem>(
    ls: &CpuStorage,
    ll: &Layout,
    ts: &CpuStorage,
    tl: &Layout,
    gs: &CpuStorage,
    gl: &Layout,
) -> Result<CpuStorage> {
    let name = CrossEntropyGrad.name();
    let (_, vocab) = ll.shape().dims2()?;
    let (logits, targets, dnll) = (view::<T>(ls, ll, name, "logits")?, view_u32(ts, tl, name)?, view::<f32>(gs, gl, name, "dnll")?);
    let mut d = vec![T::from_f32(0.0); logits.len()];
    for_each_row(&mut d, vocab, |r, out| {
        let t = targets[r];
        if t == IGNORE_TARGET {
            return;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.to_f32()));
        // exponentials once, kept in f32 scratch, then scaled: softmax · dnll
        let exps: Vec<f32> = row.iter().map(|v| (v.to_f32() - max).exp()).collect();
        let scale = dnll[r] / exps.iter().sum::<f32>();
        let g = dnll[r];
        for (o, e) in out.iter_mut().zip(&exps) {
            *o = T::from_f32(e * scale);
        }
        out[t as usize] = T::from_f32(out[t as usize].to_f32() - g);
    });
    Ok(T::wrap(d))
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "forge-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(ls.dtype(), self.name(), grad(ls, ll, ts, tl, gs, gl))?;
        Ok((out, ll.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &CudaStorage,
        ll: &Layout,
        ts: &CudaStorage,
        tl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use crate::launch::cross_entropy::grad;
        let out = dispatch_float!(ls.dtype(), self.name(), grad::<_, candle_core::CudaDevice>(&ls.device, ls, ll, ts, tl, gs, gl))?;
        Ok((out, ll.shape().clone()))
    }
}
