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
/// query axis so one matmul serves the whole group.
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
    let (q_grouped, k, v) = (q.contiguous()?.reshape((b, h_kv, groups * sq, d))?, k.contiguous()?, v.contiguous()?);
    // One K/V head (and its query group) at a time: the backward then holds the [sq, sk] gradients,
    // and the copies candle's backward makes of each, for one group instead of all of them. The
    // gemm calls are those of one batched matmul, which runs one per (batch, K/V head) anyway.
    let per_group = (0..h_kv)
        .map(|j| {
            let (q, k, v) = (q_grouped.narrow(1, j, 1)?, k.narrow(1, j, 1)?, v.narrow(1, j, 1)?);
            // 1. scores: [b, 1, groups·sq, d] x [b, 1, d, sk] -> [b, groups, sq, sk]
            let scores = q.matmul(&k.t()?)?.reshape((b, groups, sq, sk))?;
            // 2. scale, mask and normalise in one pass
            let probs = scaled_masked_softmax(&scores, bias, scale)?;
            // 3. [b, 1, groups·sq, sk] x [b, 1, sk, d] -> [b, 1, groups·sq, d]
            probs.reshape((b, 1, groups * sq, sk))?.matmul(&v)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&per_group, 1)?.reshape((b, h, sq, d))
}
