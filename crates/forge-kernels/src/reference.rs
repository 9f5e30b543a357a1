//! Slow composite implementations built only from candle's primitive (differentiable) ops.
//!
//! They define what the fused ops must compute, forward and backward, and serve devices that have
//! no fused kernel yet.

use candle_core::{DType, Result, Tensor, D};

/// HF `Qwen3RMSNorm`: statistics in f32, result cast back, then scaled by the weight.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x32.broadcast_mul(&inv)?.to_dtype(dtype)?.broadcast_mul(w)
}

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let max = x32.max_keepdim(D::Minus1)?.detach();
    let exp = x32.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

/// HF `apply_rotary_pos_emb` on `x: [b, s, h, d]` with `cos`, `sin: [b or 1, s, d/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    // [b, s, d/2] -> [b, s, 1, d] (HF concatenates the half-size tables with themselves)
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(2)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(2)?;
    let x1 = x32.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x32.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    (x32.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.to_dtype(dtype)
}

/// Attention with K/V heads explicitly repeated (HF `repeat_kv`) and the composite softmax.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    let (_, h_kv, sk, _) = k.dims4()?;
    let repeat = |t: &Tensor| -> Result<Tensor> {
        t.unsqueeze(2)?.expand((b, h_kv, h / h_kv, sk, d))?.reshape((b, h, sk, d))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match bias {
        Some(bias) => scores.broadcast_add(bias)?,
        None => scores,
    };
    softmax_last_dim(&scores)?.matmul(&v)
}

/// Per-token NLL through a composite log-softmax; ignored targets contribute zero.
pub fn cross_entropy_per_token(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let keep = targets.ne(crate::IGNORE_TARGET)?;
    let safe_targets = keep.where_cond(targets, &targets.zeros_like()?)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&safe_targets.unsqueeze(1)?, 1)?;
    let nll = (lse - picked)?.squeeze(1)?;
    nll.mul(&keep.to_dtype(DType::F32)?)
}

/// Per-token NLL of the full logits `hidden · weightᵀ`.
pub fn linear_cross_entropy_per_token(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_per_token(&hidden.matmul(&weight.t()?)?, targets)
}

/// `silu(gate) · up` from candle's primitives.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()?.mul(up)
}

/// `softmax(x·scale + bias)` from candle's primitives.
pub fn scaled_masked_softmax(x: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let scaled = (x * scale)?;
    match bias {
        Some(bias) => softmax_last_dim(&scaled.broadcast_add(bias)?),
        None => softmax_last_dim(&scaled),
    }
}
