//! kernels/{rms_norm,rope,swiglu,cross_entropy,adamw}.cu under emulation, launched by forge-kernels'
//! own launch code (`forge_kernels::launch`, the code a GPU runs) on the [`Emulator`] backend, for
//! each storage type: these wrappers only put host data into buffers and read the outputs back.

use candle_core::{Layout, WithDType};
use forge_kernels::adamw::{AdamWScalars, AdamWTensor};
use forge_kernels::backend::Elem;
use forge_kernels::launch;
use half::{bf16, f16};

use crate::{Buffer, Emulator, Schedule, Storage};

/// A storage type the kernels are instantiated for.
pub trait Float: Elem + WithDType {}
impl Float for f32 {}
impl Float for bf16 {}
impl Float for f16 {}

fn rows_of(len: usize, n: usize) -> Result<usize, String> {
    if n == 0 || !len.is_multiple_of(n) {
        return Err(format!("{len} elements are not rows of {n}"));
    }
    Ok(len / n)
}

fn text(e: candle_core::Error) -> String {
    e.to_string()
}

/// `y = x · rsqrt(mean(x²) + eps) · w` over rows of `n = w.len()`.
pub fn rms_norm<T: Float>(x: &[T], w: &[T], eps: f32, schedule: Schedule) -> Result<Vec<T>, String> {
    let rows = rows_of(x.len(), w.len())?;
    let (xs, ws) = (Storage::from_slice(c"x", x), Storage::from_slice(c"w", w));
    let y = launch::rms_norm::forward::<T, Emulator>(&Emulator::new(schedule), eps, &xs, &Layout::contiguous((rows, w.len())), &ws, &Layout::contiguous(w.len())).map_err(text)?;
    y.to_vec()
}

/// `(dx, dw)` of RMSNorm given the output's gradient `dy`: grad_input, then the row statistics
/// and the two-stage column reduction of the weight gradient.
pub fn rms_norm_grads<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f32, schedule: Schedule) -> Result<(Vec<T>, Vec<T>), String> {
    let n = w.len();
    let rows = rows_of(x.len(), n)?;
    let (xs, ws, dys) = (Storage::from_slice(c"x", x), Storage::from_slice(c"w", w), Storage::from_slice(c"dy", dy));
    let (xl, wl) = (Layout::contiguous((rows, n)), Layout::contiguous(n));
    let dev = Emulator::new(schedule);
    let dx = launch::rms_norm::grad_input::<T, Emulator>(&dev, eps, &xs, &xl, &ws, &wl, &dys, &xl).map_err(text)?;
    let dw = launch::rms_norm::grad_weight::<T, Emulator>(&dev, eps, &xs, &xl, &dys, &xl).map_err(text)?;
    Ok((dx.to_vec()?, dw.to_vec()?))
}

/// RoPE of `x: [b, s, h, d]` with `cos`, `sin: [cos_batch, s, d / 2]`; `inverse` rotates back
/// (the backward).
pub fn rope<T: Float>(x: &[T], cos: &[f32], sin: &[f32], dims: [usize; 4], inverse: bool, schedule: Schedule) -> Result<Vec<T>, String> {
    let [b, s, h, d] = dims;
    if s * d / 2 == 0 || x.len() != b * s * h * d || cos.len() != sin.len() || !cos.len().is_multiple_of(s * d / 2) {
        return Err(format!("x of {} elements, tables of {} and {} do not fit {dims:?}", x.len(), cos.len(), sin.len()));
    }
    let table = Layout::contiguous((cos.len() / (s * d / 2), s, d / 2));
    let (xs, cs, ss) = (Storage::from_slice(c"x", x), Storage::from_slice(c"cos", cos), Storage::from_slice(c"sin", sin));
    let y = launch::rope::rotate::<T, Emulator>(&Emulator::new(schedule), inverse, &xs, &Layout::contiguous((b, s, h, d)), &cs, &table, &ss, &table).map_err(text)?;
    y.to_vec()
}

/// `silu(g) · u`, elementwise.
pub fn swiglu<T: Float>(g: &[T], u: &[T], schedule: Schedule) -> Result<Vec<T>, String> {
    let (gs, us) = (Storage::from_slice(c"g", g), Storage::from_slice(c"u", u));
    let y = launch::swiglu::gate::<T, Emulator>(&Emulator::new(schedule), &gs, &Layout::contiguous(g.len()), &us, &Layout::contiguous(u.len())).map_err(text)?;
    y.to_vec()
}

/// `(d g, d u)` of [`swiglu`] given the output's gradient `dy` (the kernel writes both into one
/// buffer of `2·n`, as the CUDA op's packed output).
pub fn swiglu_grads<T: Float>(g: &[T], u: &[T], dy: &[T], schedule: Schedule) -> Result<(Vec<T>, Vec<T>), String> {
    let (gs, us, ds) = (Storage::from_slice(c"g", g), Storage::from_slice(c"u", u), Storage::from_slice(c"dy", dy));
    let layout = |v: &[T]| Layout::contiguous(v.len());
    let grads = launch::swiglu::grads::<T, Emulator>(&Emulator::new(schedule), &gs, &layout(g), &us, &layout(u), &ds, &layout(dy)).map_err(text)?;
    let mut d_gate = grads.to_vec()?;
    let d_up = d_gate.split_off(g.len());
    Ok((d_gate, d_up))
}

/// Per-row negative log-likelihood of `targets` under `logits: [rows, vocab]` (0 where ignored).
pub fn cross_entropy<T: Float>(logits: &[T], targets: &[u32], vocab: usize, schedule: Schedule) -> Result<Vec<f32>, String> {
    let rows = rows_of(logits.len(), vocab)?;
    let (ls, ts) = (Storage::from_slice(c"logits", logits), Storage::from_slice(c"targets", targets));
    let nll = launch::cross_entropy::forward::<T, Emulator>(&Emulator::new(schedule), &ls, &Layout::contiguous((rows, vocab)), &ts, &Layout::contiguous(targets.len())).map_err(text)?;
    nll.to_vec()
}

/// dlogits given the gradient `dnll` of each row's loss.
pub fn cross_entropy_grad<T: Float>(logits: &[T], targets: &[u32], dnll: &[f32], vocab: usize, schedule: Schedule) -> Result<Vec<T>, String> {
    let rows = rows_of(logits.len(), vocab)?;
    let (ls, ts, gs) = (Storage::from_slice(c"logits", logits), Storage::from_slice(c"targets", targets), Storage::from_slice(c"dnll", dnll));
    let (ll, rl) = (Layout::contiguous((rows, vocab)), Layout::contiguous(rows));
    let dlogits = launch::cross_entropy::grad::<T, Emulator>(&Emulator::new(schedule), &ls, &ll, &ts, &Layout::contiguous(targets.len()), &gs, &rl).map_err(text)?;
    dlogits.to_vec()
}

/// The optimizer state of one tensor: f32 moments and, for 16-bit parameters, the f32 master.
pub struct AdamWState<T> {
    pub param: Vec<T>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
    pub master: Option<Vec<f32>>,
}

/// One AdamW step of each state with its gradient and scalars, in place, as one group launch
/// (`forge_kernels::launch::adamw::step`, as the GPU optimizer runs it).
pub fn adamw<T: Float>(states: &mut [AdamWState<T>], grads: &[&[T]], scalars: &[AdamWScalars], schedule: Schedule) -> Result<(), String> {
    if grads.len() != states.len() || scalars.len() != states.len() {
        return Err(format!("{} states, {} gradients and {} scalars", states.len(), grads.len(), scalars.len()));
    }
    struct Buffers<T> {
        param: Buffer<T>,
        grad: Buffer<T>,
        m: Buffer<f32>,
        v: Buffer<f32>,
        master: Option<Buffer<f32>>,
    }
    let mut buffers = Vec::with_capacity(states.len());
    for (state, grad) in states.iter().zip(grads) {
        let n = state.param.len();
        if grad.len() != n || state.exp_avg.len() != n || state.exp_avg_sq.len() != n || state.master.as_ref().is_some_and(|m| m.len() != n) {
            return Err("param, grad, moments and master differ in length".into());
        }
        buffers.push(Buffers {
            param: Buffer::from_slice(c"param", &state.param),
            grad: Buffer::from_slice(c"grad", grad),
            m: Buffer::from_slice(c"exp_avg", &state.exp_avg),
            v: Buffer::from_slice(c"exp_avg_sq", &state.exp_avg_sq),
            master: state.master.as_ref().map(|w| Buffer::from_slice(c"master", w)),
        });
    }
    let mut table: Vec<AdamWTensor> = buffers
        .iter()
        .zip(scalars)
        .map(|(b, &k)| AdamWTensor {
            param: b.param.ptr() as u64,
            grad: b.grad.ptr() as u64,
            exp_avg: b.m.ptr() as u64,
            exp_avg_sq: b.v.ptr() as u64,
            master: b.master.as_ref().map_or(0, |w| w.ptr() as u64),
            n: b.param.len() as u64,
            first_block: 0,
            k,
        })
        .collect();
    launch::adamw::step::<T, Emulator>(&Emulator::new(schedule), &mut table).map_err(text)?;
    for (state, b) in states.iter_mut().zip(buffers) {
        state.param = b.param.to_vec();
        state.exp_avg = b.m.to_vec();
        state.exp_avg_sq = b.v.to_vec();
        if let (Some(out), Some(w)) = (state.master.as_mut(), b.master) {
            *out = w.to_vec();
        }
    }
    Ok(())
}
