//! The fused AdamW step: the per-step constants and the update of one element (forge-train's CPU
//! optimizer runs it over each tensor), and on CUDA (kernels/adamw.cu) one launch per parameter
//! tensor that reads the gradient, updates the f32 moments and the f32 master weight, and writes the
//! parameter in place. forge-train's optimizer owns the state; this is only the arithmetic.

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

#[cfg(feature = "cuda")]
// SAFETY: plain old data of eight f32, laid out as the kernel's C struct.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for AdamWScalars {}

#[cfg(feature = "cuda")]
pub use device::adamw_step;

#[cfg(feature = "cuda")]
mod device {
    use super::AdamWScalars;
    use candle_core::backend::BackendStorage as _;
    use candle_core::cuda_backend::cudarc::driver::CudaView;
    use candle_core::{bail, CudaStorage, InplaceOp2, Layout, Result, Storage, Tensor};

    use crate::cpu::dispatch_float;
    use crate::cuda::{launch, view, CudaElem, ADAMW};
    use crate::launch::grid_stride;


    /// Updates `param` (a CUDA tensor, contiguous, any float dtype) in place from `grad` (same dtype),
    /// with f32 moments `exp_avg`, `exp_avg_sq` and, for non-f32 parameters, the f32 `master` copy
    /// (also updated in place). All tensors have the parameter's element count.
    pub fn adamw_step(
        param: &Tensor,
        grad: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        master: Option<&Tensor>,
        scalars: AdamWScalars,
    ) -> Result<()> {
        let n = param.elem_count();
        for (what, t) in [("gradient", Some(grad)), ("exp_avg", Some(exp_avg)), ("exp_avg_sq", Some(exp_avg_sq)), ("master", master)] {
            if let Some(t) = t {
                if t.elem_count() != n || !t.device().same_device(param.device()) {
                    bail!("adamw: {what} {:?} on {:?} does not match the parameter {:?} on {:?}", t.shape(), t.device(), param.shape(), param.device());
                }
            }
        }
        param.inplace_op2(&grad.contiguous()?, &FusedAdamW { scalars, exp_avg, exp_avg_sq, master })
    }

    struct FusedAdamW<'a> {
        scalars: AdamWScalars,
        exp_avg: &'a Tensor,
        exp_avg_sq: &'a Tensor,
        master: Option<&'a Tensor>,
    }

    /// Runs `f` on the f32 device view of an optimizer state tensor.
    fn with_state<R>(t: &Tensor, what: &str, f: impl FnOnce(CudaView<'_, f32>) -> Result<R>) -> Result<R> {
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else { bail!("adamw: {what} is not on a CUDA device") };
        f(view::<f32>(storage, layout, "adamw", what)?)
    }

    fn step<T: CudaElem>(op: &FusedAdamW<'_>, ps: &CudaStorage, pl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<()> {
        let (param, grad) = (view::<T>(ps, pl, "adamw", "parameter")?, view::<T>(gs, gl, "adamw", "gradient")?);
        let n = pl.shape().elem_count();
        let (dev, k, cfg) = (&ps.device, op.scalars, grid_stride(n, 256));
        // The state tensors belong to the optimizer alone: nothing else reads them while it steps,
        // so the kernel may write them through these views.
        with_state(op.exp_avg, "exp_avg", |m| {
            with_state(op.exp_avg_sq, "exp_avg_sq", |v| match op.master {
                Some(master) => with_state(master, "master", |w| launch!(T, dev, ADAMW, "adamw", cfg, param, grad, m, v, w, n, k)),
                None => {
                    let no_master: u64 = 0; // a null `float*`
                    launch!(T, dev, ADAMW, "adamw", cfg, param, grad, m, v, no_master, n, k)
                }
            })
        })
    }

    impl InplaceOp2 for FusedAdamW<'_> {
        fn name(&self) -> &'static str {
            "forge-adamw"
        }

        fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &Layout, _: &candle_core::CpuStorage, _: &Layout) -> Result<()> {
            bail!("forge-adamw is the CUDA kernel; forge-train's optimizer has the CPU one")
        }

        fn cuda_fwd(&self, ps: &mut CudaStorage, pl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<()> {
            dispatch_float!(ps.dtype(), self.name(), step(self, ps, pl, gs, gl))
        }
    }
}
