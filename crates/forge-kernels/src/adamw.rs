//! The fused AdamW step: the per-step constants and the update of one element (forge-train's CPU
//! optimizer runs it over each tensor), and on CUDA (kernels/adamw.cu) one launch per group of
//! parameter tensors of one dtype (multi-tensor apply, as torch's fused AdamW) that reads each
//! gradient, updates the f32 moments and the f32 master weight, and writes the parameter in place.
//! forge-train's optimizer owns the state; this is only the arithmetic.

use candle_core::{bail, Result};

use crate::launch::LaunchShape;

/// Elements one block of the group kernel updates (kernels/adamw.cu `adamw::CHUNK`).
pub const ADAMW_CHUNK: usize = 16384;
/// Threads per block of the group kernel.
pub const ADAMW_THREADS: u32 = 256;

/// Per-step constants of one tensor's update, already rounded to f32 the way torch rounds the
/// Python floats it passes to its f32 kernels. The layout matches `struct Scalars` in kernels/adamw.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AdamWScalars {
    /// Multiplier of the gradient (the clip coefficient; 1 = unchanged).
    pub grad_scale: f32,
    /// `1 - lr * weight_decay` (decoupled decay); 1 = no decay.
    pub decay: f32,
    /// `1 - beta1`: exp_avg moves towards the gradient by this fraction (torch's `lerp_`).
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
}

impl AdamWScalars {
    pub fn new(lr: f64, weight_decay: f64, beta1: f64, beta2: f64, eps: f64, step: u64, grad_scale: f32) -> Self {
        let bias_correction1 = 1.0 - beta1.powf(step as f64);
        let bias_correction2 = 1.0 - beta2.powf(step as f64);
        Self {
            grad_scale,
            decay: (1.0 - lr * weight_decay) as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / bias_correction1) as f32,
        }
    }

    /// One element: takes the weight and the moments, returns the new weight (all f32).
    #[inline(always)]
    pub fn apply(&self, weight: f32, grad: f32, exp_avg: &mut f32, exp_avg_sq: &mut f32) -> f32 {
        let g = grad * self.grad_scale;
        let w = weight * self.decay;
        let m = *exp_avg + self.one_minus_beta1 * (g - *exp_avg);
        let v = *exp_avg_sq * self.beta2 + self.one_minus_beta2 * g * g;
        *exp_avg = m;
        *exp_avg_sq = v;
        let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
        w - self.step_size * (m / denom)
    }
}

/// One tensor of a group step, laid out as kernels/adamw.cu's `adamw::Tensor`: device addresses
/// (`master` 0 when there is none), the element count, the first block of the grid it owns (set
/// by [`group_launch`]) and its own scalars.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AdamWTensor {
    pub param: u64,
    pub grad: u64,
    pub exp_avg: u64,
    pub exp_avg_sq: u64,
    pub master: u64,
    pub n: u64,
    pub first_block: u64,
    pub k: AdamWScalars,
}

/// Gives each tensor of the group its blocks (`ceil(n / ADAMW_CHUNK)`, in table order) and returns
/// the launch over all of them; `None` when the group has no element.
pub fn group_launch(tensors: &mut [AdamWTensor]) -> Result<Option<LaunchShape>> {
    const GRID_X: u64 = (1 << 31) - 1;
    if i32::try_from(tensors.len()).is_err() {
        bail!("adamw: {} tensors in one group exceed the kernel's int", tensors.len());
    }
    let mut blocks = 0u64;
    for t in tensors.iter_mut() {
        t.first_block = blocks;
        blocks += t.n.div_ceil(ADAMW_CHUNK as u64);
    }
    if blocks > GRID_X {
        bail!("adamw: {blocks} blocks of {ADAMW_CHUNK} elements exceed the grid");
    }
    Ok((blocks > 0).then_some(LaunchShape { grid: [blocks as u32, 1, 1], block: [ADAMW_THREADS, 1, 1], shared_bytes: 0 }))
}

#[cfg(feature = "cuda")]
// SAFETY: plain old data (seven u64 and eight f32), laid out as the kernel's C struct.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for AdamWTensor {}

/// One parameter's update in a group step: `param` (contiguous, any float dtype) and `grad` (same
/// dtype), f32 moments `exp_avg`, `exp_avg_sq` and, for non-f32 parameters, the f32 `master` copy,
/// all updated in place, all with the parameter's element count, on one CUDA device.
#[derive(Clone, Copy)]
pub struct AdamWUpdate<'a> {
    pub param: &'a candle_core::Tensor,
    pub grad: &'a candle_core::Tensor,
    pub exp_avg: &'a candle_core::Tensor,
    pub exp_avg_sq: &'a candle_core::Tensor,
    pub master: Option<&'a candle_core::Tensor>,
    pub scalars: AdamWScalars,
}

#[cfg(feature = "cuda")]
pub use device::adamw_step;

#[cfg(feature = "cuda")]
mod device {
    use candle_core::{bail, DType, Result};
    use half::{bf16, f16};

    use super::{AdamWTensor, AdamWUpdate};
    use crate::backend::Elem;
    use crate::cuda::device_address;

    /// Steps every update: one launch per parameter dtype among them.
    pub fn adamw_step(updates: &[AdamWUpdate<'_>]) -> Result<()> {
        let Some(first) = updates.first() else { return Ok(()) };
        for u in updates {
            let n = u.param.elem_count();
            for (what, t) in [("gradient", Some(u.grad)), ("exp_avg", Some(u.exp_avg)), ("exp_avg_sq", Some(u.exp_avg_sq)), ("master", u.master)] {
                if let Some(t) = t {
                    if t.elem_count() != n || !t.device().same_device(first.param.device()) {
                        bail!("adamw: {what} {:?} on {:?} does not match the parameter {:?} on {:?}", t.shape(), t.device(), u.param.shape(), first.param.device());
                    }
                }
            }
            if u.grad.dtype() != u.param.dtype() {
                bail!("adamw: a {:?} gradient for a {:?} parameter (cast it first)", u.grad.dtype(), u.param.dtype());
            }
        }
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let group: Vec<&AdamWUpdate> = updates.iter().filter(|u| u.param.dtype() == dtype).collect();
            match dtype {
                DType::F32 => step::<f32>(&group)?,
                DType::BF16 => step::<bf16>(&group)?,
                _ => step::<f16>(&group)?,
            }
        }
        if let Some(u) = updates.iter().find(|u| !matches!(u.param.dtype(), DType::F32 | DType::BF16 | DType::F16)) {
            bail!("adamw: parameter dtype {:?} (f32, bf16 or f16)", u.param.dtype());
        }
        Ok(())
    }

    fn step<T: Elem>(group: &[&AdamWUpdate<'_>]) -> Result<()> {
        let Some(first) = group.first() else { return Ok(()) };
        let candle_core::Device::Cuda(dev) = first.param.device() else { bail!("adamw: the parameters are not on a CUDA device") };
        // The parameters and their state belong to the optimizer alone: nothing else reads them
        // while it steps, so the kernel may write them through their addresses (as the KV caches).
        let mut table = group
            .iter()
            .map(|u| {
                Ok(AdamWTensor {
                    param: device_address::<T>(dev, u.param, "adamw", "parameter")?,
                    grad: device_address::<T>(dev, u.grad, "adamw", "gradient")?,
                    exp_avg: device_address::<f32>(dev, u.exp_avg, "adamw", "exp_avg")?,
                    exp_avg_sq: device_address::<f32>(dev, u.exp_avg_sq, "adamw", "exp_avg_sq")?,
                    master: u.master.map_or(Ok(0), |m| device_address::<f32>(dev, m, "adamw", "master"))?,
                    n: u.param.elem_count() as u64,
                    first_block: 0,
                    k: u.scalars,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        crate::launch::adamw::step::<T, candle_core::CudaDevice>(dev, &mut table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(n: u64) -> AdamWTensor {
        AdamWTensor { param: 0, grad: 0, exp_avg: 0, exp_avg_sq: 0, master: 0, n, first_block: u64::MAX, k: AdamWScalars::new(1e-3, 0.0, 0.9, 0.999, 1e-8, 1, 1.0) }
    }

    #[test]
    fn a_group_gives_each_tensor_its_blocks_in_order() {
        let mut group = [tensor(1), tensor(0), tensor(ADAMW_CHUNK as u64), tensor(ADAMW_CHUNK as u64 + 1), tensor(5)];
        let shape = group_launch(&mut group).unwrap().unwrap();
        assert_eq!(group.map(|t| t.first_block), [0, 1, 1, 2, 4]);
        assert_eq!(shape, LaunchShape { grid: [5, 1, 1], block: [ADAMW_THREADS, 1, 1], shared_bytes: 0 });
        assert!(group_launch(&mut [tensor(0)]).unwrap().is_none(), "nothing to launch");
        assert!(group_launch(&mut []).unwrap().is_none());
        // the kernel's C struct: seven 8-byte fields and eight f32
        assert_eq!(std::mem::size_of::<AdamWTensor>(), 7 * 8 + 8 * 4);
    }
}
