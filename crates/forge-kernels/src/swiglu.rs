//! SwiGLU gate of the Qwen3 MLP: `silu(gate) · up`, fused (candle's `silu` + `mul` make four
//! passes forward and about ten backward over the largest MLP activation), on the CPU and, through
//! kernels/swiglu.cu, on CUDA.

use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use crate::cpu::{dispatch_float, for_each_row, view, Elem};

/// Differentiable `silu(gate) · up` (elementwise; both receive gradients).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!("swiglu: gate {:?} and up {:?} differ in shape", gate.dims(), up.dims());
    }
    match gate.device() {
        Device::Cpu | Device::Cuda(_) => gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu),
        _ => crate::reference::swiglu(gate, up),
    }
}

/// Elements per parallel chunk.
const CHUNK: usize = 4096;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

struct SwiGlu;

fn forward<T: Elem>(gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<CpuStorage> {
    let (g, u) = (view::<T>(gs, gl, "swiglu", "gate")?, view::<T>(us, ul, "swiglu", "up")?);
    let mut out = vec![T::from_f32(0.0); g.len()];
    for_each_row(&mut out, CHUNK, |c, o| {
        let start = c * CHUNK;
        for (i, v) in o.iter_mut().enumerate() {
            let x = g[start + i].to_f32();
            *v = T::from_f32(x * sigmoid(x) * u[start + i].to_f32());
        }
    });
    Ok(T::wrap(out))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "forge-swiglu"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(gs.dtype(), self.name(), forward(gs, gl, us, ul))?;
        Ok((out, gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, gs: &CudaStorage, gl: &Layout, us: &CudaStorage, ul: &Layout) -> Result<(CudaStorage, Shape)> {
        use crate::launch::swiglu::gate;
        let out = dispatch_float!(gs.dtype(), self.name(), gate::<_, candle_core::CudaDevice>(&gs.device, gs, gl, us, ul))?;
        Ok((out, gl.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _out: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gate, up, dy) = (gate.detach(), up.detach(), dy.detach().contiguous()?);
        // both gradients from one pass (one sigmoid per element), packed as [2, ..dims]
        let packed = gate.apply_op3_no_bwd(&up, &dy, &SwiGluGrad)?;
        let dims = gate.dims();
        let d_gate = packed.narrow(0, 0, 1)?.reshape(dims)?;
        let d_up = packed.narrow(0, 1, 1)?.reshape(dims)?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// d gate = dy · up · σ(g)·(1 + g·(1 − σ(g))),  d up = dy · g·σ(g); output `[2, ..dims]`.
struct SwiGluGrad;

fn grad<T: Elem>(gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<CpuStorage> {
    let name = "forge-swiglu-grad";
    let (g, u, dy) = (view::<T>(gs, gl, name, "gate")?, view::<T>(us, ul, name, "up")?, view::<T>(ds, dl, name, "dy")?);
    let n = g.len();
    let mut out = vec![T::from_f32(0.0); 2 * n];
    let (d_gate, d_up) = out.split_at_mut(n);
    d_gate.par_chunks_mut(CHUNK).zip(d_up.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (dg, du))| {
        let start = c * CHUNK;
        for i in 0..dg.len() {
            let (x, d) = (g[start + i].to_f32(), dy[start + i].to_f32());
            let s = sigmoid(x);
            dg[i] = T::from_f32(d * u[start + i].to_f32() * s * (1.0 + x * (1.0 - s)));
            du[i] = T::from_f32(d * x * s);
        }
    });
    Ok(T::wrap(out))
}

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "forge-swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(gs.dtype(), self.name(), grad(gs, gl, us, ul, ds, dl))?;
        Ok((out, packed_shape(gl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use crate::launch::swiglu::grads;
        let out = dispatch_float!(gs.dtype(), self.name(), grads::<_, candle_core::CudaDevice>(&gs.device, gs, gl, us, ul, ds, dl))?;
        Ok((out, packed_shape(gl)))
    }
}

/// `[2, ..dims]`: d gate, then d up.
fn packed_shape(gate: &Layout) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(gate.dims());
    Shape::from(dims)
}
