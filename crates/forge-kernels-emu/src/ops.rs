//! kernels/{rms_norm,rope,swiglu,cross_entropy,adamw}.cu under emulation, launched as src/cuda/*.rs
//! launches them on a GPU (the shapes of forge_kernels::launch), for each storage type.

use forge_kernels::adamw::{group_launch, AdamWScalars, AdamWTensor};
use forge_kernels::launch::{column_reduction, elementwise_packs, grid_stride, per_row};
use half::{bf16, f16};

use crate::{launch, Buffer, Schedule};

/// The entry points of one storage type (`<root>_f32`, `_bf16`, `_f16`).
pub struct Kernels<T> {
    rms_norm_fwd: unsafe extern "C" fn(*const T, *const T, *mut T, i32, i32, f32),
    rms_norm_grad_input: unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32, i32, f32),
    rms_norm_inv_rms: unsafe extern "C" fn(*const T, *mut f32, i32, i32, f32),
    rms_norm_grad_weight_partial: unsafe extern "C" fn(*const T, *const T, *const f32, *mut f32, i32, i32, i32),
    rms_norm_grad_weight_finish: unsafe extern "C" fn(*const f32, *mut T, i32, i32),
    rope: unsafe extern "C" fn(*const T, *const f32, *const f32, *mut T, i32, i32, i32, i32, i32, f32),
    swiglu_fwd: unsafe extern "C" fn(*const T, *const T, *mut T, i32),
    swiglu_grad: unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32),
    cross_entropy_fwd: unsafe extern "C" fn(*const T, *const u32, *mut f32, i32, i32),
    cross_entropy_grad: unsafe extern "C" fn(*const T, *const u32, *const f32, *mut T, i32, i32),
    adamw: unsafe extern "C" fn(*const AdamWTensor, i32),
}

/// A storage type the kernels are instantiated for.
pub trait Float: Copy + 'static {
    /// NaN: what every output holds before a kernel writes it.
    const POISON: Self;
    const KERNELS: Kernels<Self>;
}

macro_rules! float_kernels {
    ($t:ty, $s:ident, $poison:expr) => {
        paste::paste! {
            extern "C" {
                fn [<rms_norm_fwd_ $s>](x: *const $t, w: *const $t, y: *mut $t, rows: i32, n: i32, eps: f32);
                fn [<rms_norm_grad_input_ $s>](x: *const $t, w: *const $t, dy: *const $t, dx: *mut $t, rows: i32, n: i32, eps: f32);
                fn [<rms_norm_inv_rms_ $s>](x: *const $t, out: *mut f32, rows: i32, n: i32, eps: f32);
                fn [<rms_norm_grad_weight_partial_ $s>](x: *const $t, dy: *const $t, inv: *const f32, partial: *mut f32, rows: i32, n: i32, chunk: i32);
                fn [<rms_norm_grad_weight_finish_ $s>](partial: *const f32, dw: *mut $t, chunks: i32, n: i32);
                fn [<rope_ $s>](x: *const $t, cos: *const f32, sin: *const f32, y: *mut $t, b: i32, s: i32, h: i32, d: i32, cos_batch: i32, sign: f32);
                fn [<swiglu_fwd_ $s>](g: *const $t, u: *const $t, y: *mut $t, n: i32);
                fn [<swiglu_grad_ $s>](g: *const $t, u: *const $t, dy: *const $t, grads: *mut $t, n: i32);
                fn [<cross_entropy_fwd_ $s>](logits: *const $t, targets: *const u32, nll: *mut f32, rows: i32, vocab: i32);
                fn [<cross_entropy_grad_ $s>](logits: *const $t, targets: *const u32, dnll: *const f32, dlogits: *mut $t, rows: i32, vocab: i32);
                fn [<adamw_ $s>](tensors: *const AdamWTensor, count: i32);
            }
            impl Float for $t {
                const POISON: Self = $poison;
                const KERNELS: Kernels<Self> = Kernels {
                    rms_norm_fwd: [<rms_norm_fwd_ $s>],
                    rms_norm_grad_input: [<rms_norm_grad_input_ $s>],
                    rms_norm_inv_rms: [<rms_norm_inv_rms_ $s>],
                    rms_norm_grad_weight_partial: [<rms_norm_grad_weight_partial_ $s>],
                    rms_norm_grad_weight_finish: [<rms_norm_grad_weight_finish_ $s>],
                    rope: [<rope_ $s>],
                    swiglu_fwd: [<swiglu_fwd_ $s>],
                    swiglu_grad: [<swiglu_grad_ $s>],
                    cross_entropy_fwd: [<cross_entropy_fwd_ $s>],
                    cross_entropy_grad: [<cross_entropy_grad_ $s>],
                    adamw: [<adamw_ $s>],
                };
            }
        }
    };
}
float_kernels!(f32, f32, f32::from_bits(0xffff_ffff));
float_kernels!(bf16, bf16, bf16::from_bits(0xffff));
float_kernels!(f16, f16, f16::from_bits(0xffff));

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} = {v} exceeds the kernels' int"))
}

fn rows_of(len: usize, n: usize) -> Result<(usize, i32, i32), String> {
    if n == 0 || !len.is_multiple_of(n) {
        return Err(format!("{len} elements are not rows of {n}"));
    }
    Ok((len / n, int(len / n, "rows")?, int(n, "row length")?))
}

/// `y = x · rsqrt(mean(x²) + eps) · w` over rows of `n = w.len()`.
pub fn rms_norm<T: Float>(x: &[T], w: &[T], eps: f32, schedule: Schedule) -> Result<Vec<T>, String> {
    let (rows, rows_i, n_i) = rows_of(x.len(), w.len())?;
    let (xb, wb, y) = (Buffer::from_slice(c"x", x), Buffer::from_slice(c"w", w), Buffer::filled(c"y", x.len(), T::POISON));
    let kernel = T::KERNELS.rms_norm_fwd;
    // SAFETY (all launches here): each kernel's C signature, with buffers of the sizes it indexes.
    launch(&per_row(rows, w.len()), schedule, || unsafe { kernel(xb.ptr(), wb.ptr(), y.ptr(), rows_i, n_i, eps) })?;
    Ok(y.to_vec())
}

/// `(dx, dw)` of RMSNorm given the output's gradient `dy`: grad_input, then the row statistics
/// and the two-stage column reduction of the weight gradient.
pub fn rms_norm_grads<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f32, schedule: Schedule) -> Result<(Vec<T>, Vec<T>), String> {
    let n = w.len();
    let (rows, rows_i, n_i) = rows_of(x.len(), n)?;
    let (xb, wb, dyb) = (Buffer::from_slice(c"x", x), Buffer::from_slice(c"w", w), Buffer::from_slice(c"dy", dy));
    let k = &T::KERNELS;
    let dx = Buffer::filled(c"dx", x.len(), T::POISON);
    let grad_input = k.rms_norm_grad_input;
    launch(&per_row(rows, n), schedule, || unsafe { grad_input(xb.ptr(), wb.ptr(), dyb.ptr(), dx.ptr(), rows_i, n_i, eps) })?;
    let inv = Buffer::filled(c"inv_rms", rows, f32::NAN);
    let inv_rms = k.rms_norm_inv_rms;
    launch(&per_row(rows, n), schedule, || unsafe { inv_rms(xb.ptr(), inv.ptr(), rows_i, n_i, eps) })?;
    let columns = column_reduction(rows, n);
    let partial = Buffer::filled(c"partial", columns.chunks * n, f32::NAN);
    let (chunk_i, chunks_i) = (int(columns.chunk, "rows per chunk")?, int(columns.chunks, "row chunks")?);
    let partial_kernel = k.rms_norm_grad_weight_partial;
    launch(&columns.partial, schedule, || unsafe { partial_kernel(xb.ptr(), dyb.ptr(), inv.ptr(), partial.ptr(), rows_i, n_i, chunk_i) })?;
    let dw = Buffer::filled(c"dw", n, T::POISON);
    let finish = k.rms_norm_grad_weight_finish;
    launch(&columns.finish, schedule, || unsafe { finish(partial.ptr(), dw.ptr(), chunks_i, n_i) })?;
    Ok((dx.to_vec(), dw.to_vec()))
}

/// RoPE of `x: [b, s, h, d]` with `cos`, `sin: [cos_batch, s, d / 2]`; `inverse` rotates back
/// (the backward).
pub fn rope<T: Float>(x: &[T], cos: &[f32], sin: &[f32], dims: [usize; 4], inverse: bool, schedule: Schedule) -> Result<Vec<T>, String> {
    let [b, s, h, d] = dims;
    if s * d / 2 == 0 || x.len() != b * s * h * d || cos.len() != sin.len() || !cos.len().is_multiple_of(s * d / 2) {
        return Err(format!("x of {} elements, tables of {} and {} do not fit {dims:?}", x.len(), cos.len(), sin.len()));
    }
    let cos_batch = int(cos.len() / (s * d / 2), "cos batch")?;
    let (xb, cb, sb, y) = (Buffer::from_slice(c"x", x), Buffer::from_slice(c"cos", cos), Buffer::from_slice(c"sin", sin), Buffer::filled(c"y", x.len(), T::POISON));
    let [bi, si, hi, di] = [int(b, "batch")?, int(s, "seq")?, int(h, "heads")?, int(d, "head dim")?];
    let sign = if inverse { -1.0 } else { 1.0 };
    let kernel = T::KERNELS.rope;
    launch(&grid_stride(b * s * h * d / 2, 256), schedule, || unsafe { kernel(xb.ptr(), cb.ptr(), sb.ptr(), y.ptr(), bi, si, hi, di, cos_batch, sign) })?;
    Ok(y.to_vec())
}

/// `silu(g) · u`, elementwise.
pub fn swiglu<T: Float>(g: &[T], u: &[T], schedule: Schedule) -> Result<Vec<T>, String> {
    let n = same_length(&[g, u])?;
    let (gb, ub, y) = (Buffer::from_slice(c"g", g), Buffer::from_slice(c"u", u), Buffer::filled(c"y", g.len(), T::POISON));
    let kernel = T::KERNELS.swiglu_fwd;
    launch(&elementwise_packs(g.len(), size_of::<T>()), schedule, || unsafe { kernel(gb.ptr(), ub.ptr(), y.ptr(), n) })?;
    Ok(y.to_vec())
}

/// `(d g, d u)` of [`swiglu`] given the output's gradient `dy` (the kernel writes both into one
/// buffer of `2·n`, as the CUDA op's packed output).
pub fn swiglu_grads<T: Float>(g: &[T], u: &[T], dy: &[T], schedule: Schedule) -> Result<(Vec<T>, Vec<T>), String> {
    let n = same_length(&[g, u, dy])?;
    let (gb, ub, db) = (Buffer::from_slice(c"g", g), Buffer::from_slice(c"u", u), Buffer::from_slice(c"dy", dy));
    let grads = Buffer::filled(c"grads", 2 * g.len(), T::POISON);
    let kernel = T::KERNELS.swiglu_grad;
    launch(&elementwise_packs(g.len(), size_of::<T>()), schedule, || unsafe { kernel(gb.ptr(), ub.ptr(), db.ptr(), grads.ptr(), n) })?;
    let mut d_gate = grads.to_vec();
    let d_up = d_gate.split_off(g.len());
    Ok((d_gate, d_up))
}

fn same_length<T>(operands: &[&[T]]) -> Result<i32, String> {
    let n = operands[0].len();
    if operands.iter().any(|o| o.len() != n) {
        return Err(format!("operands of {:?} elements differ in length", operands.iter().map(|o| o.len()).collect::<Vec<_>>()));
    }
    int(n, "elements")
}

/// Per-row negative log-likelihood of `targets` under `logits: [rows, vocab]` (0 where ignored).
pub fn cross_entropy<T: Float>(logits: &[T], targets: &[u32], vocab: usize, schedule: Schedule) -> Result<Vec<f32>, String> {
    let (rows, rows_i, vocab_i) = rows_of(logits.len(), vocab)?;
    let (lb, tb, nll) = (Buffer::from_slice(c"logits", logits), Buffer::from_slice(c"targets", targets), Buffer::filled(c"nll", rows, f32::NAN));
    let kernel = T::KERNELS.cross_entropy_fwd;
    launch(&per_row(rows, vocab), schedule, || unsafe { kernel(lb.ptr(), tb.ptr(), nll.ptr(), rows_i, vocab_i) })?;
    Ok(nll.to_vec())
}

/// dlogits given the gradient `dnll` of each row's loss.
pub fn cross_entropy_grad<T: Float>(logits: &[T], targets: &[u32], dnll: &[f32], vocab: usize, schedule: Schedule) -> Result<Vec<T>, String> {
    let (rows, rows_i, vocab_i) = rows_of(logits.len(), vocab)?;
    let (lb, tb, gb) = (Buffer::from_slice(c"logits", logits), Buffer::from_slice(c"targets", targets), Buffer::from_slice(c"dnll", dnll));
    let dlogits = Buffer::filled(c"dlogits", logits.len(), T::POISON);
    let kernel = T::KERNELS.cross_entropy_grad;
    launch(&per_row(rows, vocab), schedule, || unsafe { kernel(lb.ptr(), tb.ptr(), gb.ptr(), dlogits.ptr(), rows_i, vocab_i) })?;
    Ok(dlogits.to_vec())
}

/// The optimizer state of one tensor: f32 moments and, for 16-bit parameters, the f32 master.
pub struct AdamWState<T> {
    pub param: Vec<T>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
    pub master: Option<Vec<f32>>,
}

/// One AdamW step of each state with its gradient and scalars, in place, as one group launch
/// (src/cuda/adamw.rs's table and shape, forge_kernels::adamw::group_launch).
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
    let Some(shape) = group_launch(&mut table).map_err(|e| e.to_string())? else { return Ok(()) };
    let tensors = Buffer::from_slice(c"adamw tensors", &table);
    let count = table.len() as i32;
    let kernel = T::KERNELS.adamw;
    // SAFETY: adamw's C signature; every table entry addresses live buffers of its n elements.
    launch(&shape, schedule, || unsafe { kernel(tensors.ptr(), count) })?;
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

#[cfg(test)]
mod tests {
    use forge_kernels::signatures::{self as sig, instantiate, Pointee};

    use super::*;
    use crate::declarations::declared;

    fn declarations_match_signatures<T: Float + Pointee>() {
        let k = &T::KERNELS;
        let want = |signature| instantiate(signature, T::NAME);
        assert_eq!(declared(&k.rms_norm_fwd), want(sig::RMS_NORM_FWD), "rms_norm_fwd_{}", T::NAME);
        assert_eq!(declared(&k.rms_norm_grad_input), want(sig::RMS_NORM_GRAD_INPUT), "rms_norm_grad_input_{}", T::NAME);
        assert_eq!(declared(&k.rms_norm_inv_rms), want(sig::RMS_NORM_INV_RMS), "rms_norm_inv_rms_{}", T::NAME);
        assert_eq!(declared(&k.rms_norm_grad_weight_partial), want(sig::RMS_NORM_GRAD_WEIGHT_PARTIAL), "rms_norm_grad_weight_partial_{}", T::NAME);
        assert_eq!(declared(&k.rms_norm_grad_weight_finish), want(sig::RMS_NORM_GRAD_WEIGHT_FINISH), "rms_norm_grad_weight_finish_{}", T::NAME);
        assert_eq!(declared(&k.rope), want(sig::ROPE), "rope_{}", T::NAME);
        assert_eq!(declared(&k.swiglu_fwd), want(sig::SWIGLU_FWD), "swiglu_fwd_{}", T::NAME);
        assert_eq!(declared(&k.swiglu_grad), want(sig::SWIGLU_GRAD), "swiglu_grad_{}", T::NAME);
        assert_eq!(declared(&k.cross_entropy_fwd), want(sig::CROSS_ENTROPY_FWD), "cross_entropy_fwd_{}", T::NAME);
        assert_eq!(declared(&k.cross_entropy_grad), want(sig::CROSS_ENTROPY_GRAD), "cross_entropy_grad_{}", T::NAME);
        assert_eq!(declared(&k.adamw), want(sig::ADAMW), "adamw_{}", T::NAME);
    }

    #[test]
    fn the_declarations_are_the_kernels_signatures() {
        declarations_match_signatures::<f32>();
        declarations_match_signatures::<bf16>();
        declarations_match_signatures::<f16>();
    }
}
