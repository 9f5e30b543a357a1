//! Scaled dot-product attention with grouped K/V heads (GQA) and an additive mask.

use candle_core::{bail, Result, Tensor};

use crate::softmax::scaled_masked_softmax;

/// `softmax(q·kᵀ·scale + bias)·v`, differentiable in `q`, `k` and `v`.
///
/// Shapes: `q: [b, h, sq, d]`, `k`, `v: [b, h_kv, sk, d]` with `h` a multiple of `h_kv` (query head
/// `i` reads K/V head `i / (h / h_kv)`, as HF's `repeat_kv`), `bias: [b or 1, 1, sq, sk]` added to
/// the scores (0 = attend, a large negative value = masked). Returns `[b, h, sq, d]`.
///
/// K/V are never repeated in memory: the `h / h_kv` query heads of a group are stacked along the
/// query axis so one batched matmul serves the whole group.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, sq, d) = q.dims4()?;
    let (kb, h_kv, sk, kd) = k.dims4()?;
    if kb != b || kd != d || v.dims() != k.dims() {
        bail!("attention: q {:?}, k {:?}, v {:?} do not match", q.dims(), k.dims(), v.dims());
    }
    if h_kv == 0 || h % h_kv != 0 {
        bail!("attention: {h} query heads are not a multiple of {h_kv} key/value heads");
    }
    let groups = h / h_kv;
    // 1. scores: [b, h_kv, groups·sq, d] x [b, h_kv, d, sk] -> [b, h, sq, sk]
    let q_grouped = q.contiguous()?.reshape((b, h_kv, groups * sq, d))?;
    let scores = q_grouped.matmul(&k.contiguous()?.t()?)?.reshape((b, h, sq, sk))?;
    // 2. scale, mask and normalise in one pass
    let probs = scaled_masked_softmax(&scores, bias, scale)?;
    // 3. [b, h_kv, groups·sq, sk] x [b, h_kv, sk, d] -> [b, h, sq, d]
    probs.reshape((b, h_kv, groups * sq, sk))?.matmul(&v.contiguous()?)?.reshape((b, h, sq, d))
}
