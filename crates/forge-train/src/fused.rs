//! The CPU AdamW update as ONE pass over each tensor: read the gradient, update both moments,
//! update the weight (or its f32 master) and write the parameter, element by element.
//!
//! candle-nn's AdamW runs about ten tensor ops per parameter, each a full read and write of the
//! tensor plus an allocation; here the parameter is mutated in place through candle's
//! `InplaceOp2`, so the `Var` (and every clone of its tensor the model holds) sees the new values
//! without a copy. Large tensors are split into fixed chunks over rayon; the result does not
//! depend on the number of threads (the update is element-wise).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 15;
/// Tensors below this size are updated on the calling thread.
const PARALLEL_MIN: usize = 1 << 17;

/// The per-step constants and the element update live with the CUDA kernel that uses them too.
pub(crate) use forge_kernels::adamw::AdamWScalars as StepScalars;

/// The element types a parameter or gradient can have.
pub(crate) trait Element: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x) // round to nearest even, as torch's `.to(torch.bfloat16)`
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

fn update_serial<P: Element, G: Element>(
    param: &mut [P],
    grad: &[G],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    master: Option<&mut [f32]>,
    k: &StepScalars,
) {
    // Two loops rather than a per-element branch, so the f32 loop vectorises.
    match master {
        Some(master) => {
            for ((((p, g), m), v), w) in param.iter_mut().zip(grad).zip(exp_avg.iter_mut()).zip(exp_avg_sq.iter_mut()).zip(master.iter_mut()) {
                *w = k.apply(*w, g.to_f32(), m, v);
                *p = P::from_f32(*w);
            }
        }
        None => {
            for (((p, g), m), v) in param.iter_mut().zip(grad).zip(exp_avg.iter_mut()).zip(exp_avg_sq.iter_mut()) {
                *p = P::from_f32(k.apply(p.to_f32(), g.to_f32(), m, v));
            }
        }
    }
}

pub(crate) fn update<P: Element, G: Element>(
    param: &mut [P],
    grad: &[G],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    master: Option<&mut [f32]>,
    k: &StepScalars,
) {
    debug_assert!(param.len() == grad.len() && param.len() == exp_avg.len() && param.len() == exp_avg_sq.len());
    if param.len() < PARALLEL_MIN {
        return update_serial(param, grad, exp_avg, exp_avg_sq, master, k);
    }
    let chunks = param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(exp_avg.par_chunks_mut(CHUNK)).zip(exp_avg_sq.par_chunks_mut(CHUNK));
    match master {
        Some(master) => chunks
            .zip(master.par_chunks_mut(CHUNK))
            .for_each(|((((p, g), m), v), w)| update_serial(p, g, m, v, Some(w), k)),
        None => chunks.for_each(|(((p, g), m), v)| update_serial(p, g, m, v, None, k)),
    }
}

/// The host-side state one update mutates besides the parameter.
pub(crate) struct HostMoments<'a> {
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    pub master: Option<&'a mut [f32]>,
}

/// In-place op whose destination is the parameter and whose source is the gradient.
/// candle hands the op `&self`, so the moments travel in a Mutex (locked once per tensor).
pub(crate) struct FusedAdamW<'a> {
    pub scalars: StepScalars,
    pub moments: Mutex<HostMoments<'a>>,
}

fn contiguous<'s, T>(data: &'s [T], layout: &Layout, what: &str) -> candle_core::Result<&'s [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused AdamW needs a contiguous {what}"),
    }
}

fn contiguous_mut<'s, T>(data: &'s mut [T], layout: &Layout) -> candle_core::Result<&'s mut [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("fused AdamW writes parameters in place and needs them contiguous"),
    }
}

fn with_param<G: Element>(
    dst: &mut CpuStorage,
    dst_l: &Layout,
    grad: &[G],
    moments: &mut HostMoments<'_>,
    k: &StepScalars,
) -> candle_core::Result<()> {
    let HostMoments { exp_avg, exp_avg_sq, master } = moments;
    let master = master.as_deref_mut();
    match dst {
        CpuStorage::F32(p) => update(contiguous_mut(p, dst_l)?, grad, exp_avg, exp_avg_sq, master, k),
        CpuStorage::BF16(p) => update(contiguous_mut(p, dst_l)?, grad, exp_avg, exp_avg_sq, master, k),
        CpuStorage::F16(p) => update(contiguous_mut(p, dst_l)?, grad, exp_avg, exp_avg_sq, master, k),
        other => candle_core::bail!("AdamW updates f32/bf16/f16 parameters, not {:?}", other.dtype()),
    }
    Ok(())
}

impl InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, grad: &CpuStorage, grad_l: &Layout) -> candle_core::Result<()> {
        if dst_l.shape().elem_count() != grad_l.shape().elem_count() {
            candle_core::bail!("fused AdamW: parameter {:?} and gradient {:?} differ", dst_l.shape(), grad_l.shape());
        }
        let mut moments = self.moments.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let k = &self.scalars;
        match grad {
            CpuStorage::F32(g) => with_param(dst, dst_l, contiguous(g, grad_l, "gradient")?, &mut moments, k),
            CpuStorage::BF16(g) => with_param(dst, dst_l, contiguous(g, grad_l, "gradient")?, &mut moments, k),
            CpuStorage::F16(g) => with_param(dst, dst_l, contiguous(g, grad_l, "gradient")?, &mut moments, k),
            other => candle_core::bail!("AdamW gradients must be f32/bf16/f16, not {:?}", other.dtype()),
        }
    }
}

/// Sum of squares of a CPU tensor, accumulated in f64 over fixed chunks so the result is the
/// same for any number of threads (resume must be bit-exact).
pub(crate) fn sum_of_squares_cpu(t: &Tensor) -> candle_core::Result<f64> {
    fn chunked<G: Element>(data: &[G]) -> f64 {
        let partial = |c: &[G]| c.iter().map(|x| {
            let x = x.to_f32() as f64;
            x * x
        }).sum::<f64>();
        if data.len() < PARALLEL_MIN {
            return partial(data);
        }
        let partials: Vec<f64> = data.par_chunks(CHUNK).map(partial).collect();
        partials.iter().sum()
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("sum_of_squares_cpu called on a non-CPU tensor")
    };
    Ok(match cpu {
        CpuStorage::F32(d) => chunked(contiguous(d, layout, "gradient")?),
        CpuStorage::BF16(d) => chunked(contiguous(d, layout, "gradient")?),
        CpuStorage::F16(d) => chunked(contiguous(d, layout, "gradient")?),
        CpuStorage::F64(d) => contiguous(d, layout, "gradient")?.iter().map(|x| x * x).sum(),
        other => candle_core::bail!("gradients must be floating point, not {:?}", other.dtype()),
    })
}

/// Copies a tensor's values out as f32 (for initialising master weights and saving state).
pub(crate) fn to_f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_and_serial_agree_bitwise() {
        let n = PARALLEL_MIN + 12_345;
        let grad: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        let init: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
        let k = StepScalars::new(1e-2, 0.1, 0.9, 0.999, 1e-8, 3, 0.5);
        let (mut p1, mut m1, mut v1) = (init.clone(), vec![0.1f32; n], vec![0.2f32; n]);
        let (mut p2, mut m2, mut v2) = (init.clone(), vec![0.1f32; n], vec![0.2f32; n]);
        update(&mut p1, &grad, &mut m1, &mut v1, None, &k);
        update_serial(&mut p2, &grad, &mut m2, &mut v2, None, &k);
        assert!(p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(m1 == m2 && v1 == v2);
    }

    #[test]
    fn master_weights_round_into_bf16() {
        let grad = vec![0.5f32; 4];
        let mut param = vec![bf16::from_f32(1.0); 4];
        let mut master = vec![1.0f32; 4];
        let (mut m, mut v) = (vec![0f32; 4], vec![0f32; 4]);
        let k = StepScalars::new(1e-3, 0.0, 0.9, 0.999, 1e-8, 1, 1.0);
        update(&mut param, &grad, &mut m, &mut v, Some(&mut master), &k);
        assert!((master[0] - (1.0 - 1e-3)).abs() < 1e-6);
        assert!(param.iter().zip(&master).all(|(p, w)| *p == bf16::from_f32(*w)));
    }
}
