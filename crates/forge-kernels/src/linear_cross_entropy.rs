//! The language-model head and its loss in one op: per-token cross-entropy of the logits
//! `hidden · weightᵀ`, computed a slice of the vocabulary at a time, so the `[tokens, vocab]`
//! logits and their gradient never exist in full (fp32 logits of a 151,936 vocabulary are
//! 5 GB at 8k tokens). Backward recomputes each slice of logits: one extra head matmul buys the
//! memory, as activation recomputation does for the layers.
//!
//! Per vocabulary slice `[start, start + width)`:
//! - forward: `logits = hidden · weight[slice]ᵀ`, folded into each row's running max and sum of
//!   exponentials (online log-sum-exp), and the target's logit picked when it lies in the slice;
//! - backward: `dlogits = (exp(logits − lse) − onehot(target)) · dnll`, then
//!   `dweight[slice] = dlogitsᵀ · hidden` (each slice writes its own rows) and
//!   `dhidden += dlogits · weight[slice]`.

//!
//! Devices other than the CPU (and dtypes other than f32) take [`linear_cross_entropy_row_chunks`]:
//! a few rows of full-vocabulary logits at a time through candle's matmuls (cuBLAS on CUDA) and the
//! fused per-token cross-entropy op, recomputed the same way in backward.
use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Storage, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::cpu::view;
use crate::cross_entropy::{checked_targets, cross_entropy_grad, cross_entropy_per_token};
use crate::IGNORE_TARGET;

/// Logits held at once by default, in elements (4 MiB of f32).
const LOGITS_CHUNK_ELEMS: usize = 1 << 20;
/// Narrower vocabulary slices make the matmuls inefficient.
const MIN_VOCAB_CHUNK: usize = 128;

/// The vocabulary slice width [`linear_cross_entropy_per_token`] uses for `rows` tokens.
pub fn default_vocab_chunk(rows: usize, vocab: usize) -> usize {
    (LOGITS_CHUNK_ELEMS / rows.max(1)).max(MIN_VOCAB_CHUNK).min(vocab.max(1))
}

/// Differentiable per-token negative log-likelihood of the logits `hidden · weightᵀ`:
/// `hidden: [n, h]`, `weight: [vocab, h]` (HF `lm_head.weight`), `targets: [n]` u32 → `[n]` f32,
/// zero where the target is [`IGNORE_TARGET`]. Equals
/// `cross_entropy_per_token(&hidden.matmul(&weight.t()?)?, targets)` up to float summation order.
pub fn linear_cross_entropy_per_token(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let chunk = default_vocab_chunk(hidden.dim(0)?, weight.dim(0)?);
    linear_cross_entropy_per_token_chunked(hidden, weight, targets, chunk)
}

/// [`linear_cross_entropy_per_token`] with an explicit vocabulary slice width: at most
/// `n · vocab_chunk` logits exist at once.
pub fn linear_cross_entropy_per_token_chunked(hidden: &Tensor, weight: &Tensor, targets: &Tensor, vocab_chunk: usize) -> Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (vocab, wh) = weight.dims2()?;
    if wh != h {
        bail!("linear_cross_entropy: hidden {:?} and weight {:?} differ in the hidden size", hidden.dims(), weight.dims());
    }
    if h == 0 || vocab == 0 {
        bail!("linear_cross_entropy: empty hidden size or vocabulary ({:?}, {:?})", hidden.dims(), weight.dims());
    }
    if vocab_chunk == 0 {
        bail!("linear_cross_entropy: the vocabulary chunk must be at least 1");
    }
    let ids = checked_targets(targets, n, vocab, "linear_cross_entropy")?;
    match (hidden.device(), hidden.dtype(), weight.dtype()) {
        (Device::Cpu, DType::F32, DType::F32) => {
            let op = LinearCrossEntropy { targets: ids, vocab_chunk };
            // packed [2, n]: the nll, then the log-sum-exp that backward needs
            let packed = hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
            packed.get(0)
        }
        _ => linear_cross_entropy_row_chunks(hidden, weight, targets, (LOGITS_CHUNK_ELEMS / vocab).max(1)),
    }
}

struct LinearCrossEntropy {
    targets: Vec<u32>,
    vocab_chunk: usize,
}

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    }
}

/// `logits[n, width] = hidden[n, h] · weight_slice[width, h]ᵀ`, all row-major.
fn slice_logits(hidden: &[f32], weight_slice: &[f32], logits: &mut [f32], n: usize, width: usize, h: usize) {
    // SAFETY: the slices hold n·h, width·h and n·width elements, matching the strides given.
    unsafe {
        gemm(
            n, width, h,
            logits.as_mut_ptr(), 1, width as isize, false,
            hidden.as_ptr(), 1, h as isize,
            weight_slice.as_ptr(), h as isize, 1,
            0.0, 1.0, false, false, false, parallelism(),
        );
    }
}

/// Running log-sum-exp of one row, and the logit of its target once seen.
#[derive(Clone, Copy)]
struct RowState {
    max: f32,
    sum: f32,
    target_logit: f32,
}

fn forward(op: &LinearCrossEntropy, hidden: &[f32], weight: &[f32], n: usize, h: usize) -> Vec<f32> {
    let vocab = weight.len() / h;
    let chunk = op.vocab_chunk.min(vocab);
    let mut rows = vec![RowState { max: f32::NEG_INFINITY, sum: 0.0, target_logit: 0.0 }; n];
    let mut logits = vec![0f32; n * chunk];
    for start in (0..vocab).step_by(chunk) {
        let width = chunk.min(vocab - start);
        let logits = &mut logits[..n * width];
        slice_logits(hidden, &weight[start * h..(start + width) * h], logits, n, width, h);
        rows.par_iter_mut().zip(logits.par_chunks(width)).zip(&op.targets).for_each(|((state, row), &t)| {
            if t == IGNORE_TARGET {
                return;
            }
            let max = row.iter().fold(state.max, |m, &v| m.max(v));
            let rescaled = state.sum * (state.max - max).exp();
            state.sum = row.iter().fold(rescaled, |s, &v| s + (v - max).exp());
            state.max = max;
            if (start..start + width).contains(&(t as usize)) {
                state.target_logit = row[t as usize - start];
            }
        });
    }
    let lse: Vec<f32> = rows.iter().map(|r| r.max + r.sum.ln()).collect();
    let nll = rows.iter().zip(&lse).zip(&op.targets).map(|((r, lse), &t)| if t == IGNORE_TARGET { 0.0 } else { lse - r.target_logit });
    nll.chain(lse.iter().copied()).collect()
}

impl CustomOp2 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "forge-linear-cross-entropy"
    }

    fn cpu_fwd(&self, hs: &CpuStorage, hl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h) = hl.shape().dims2()?;
        let (hidden, weight) = (view::<f32>(hs, hl, self.name(), "hidden")?, view::<f32>(ws, wl, self.name(), "weight")?);
        Ok((CpuStorage::F32(forward(self, hidden, weight, n, h)), Shape::from((2, n))))
    }

    fn bwd(&self, hidden: &Tensor, weight: &Tensor, packed: &Tensor, dpacked: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = hidden.dim(0)?;
        // the log-sum-exp row is internal (never handed out), so only the nll row carries a gradient
        let lse_and_dnll = Tensor::stack(&[packed.get(1)?, dpacked.get(0)?], 0)?.detach().contiguous()?;
        // a frozen head (LoRA) needs no weight gradient: skip its matmuls and its buffer
        let weight_grad = weight.track_op();
        let grad = LinearCrossEntropyGrad { targets: &self.targets, vocab_chunk: self.vocab_chunk, weight_grad };
        let grads = hidden.detach().apply_op3_no_bwd(&weight.detach(), &lse_and_dnll, &grad)?;
        let dweight = if weight_grad { Some(grads.narrow(0, n, weight.dim(0)?)?) } else { None };
        Ok((Some(grads.narrow(0, 0, n)?), dweight))
    }
}

/// Both gradients in one pass over the recomputed logits, packed as `[n + vocab, h]`:
/// `dhidden` rows, then `dweight` rows (`[n, h]`, only `dhidden`, without `weight_grad`).
struct LinearCrossEntropyGrad<'a> {
    targets: &'a [u32],
    vocab_chunk: usize,
    weight_grad: bool,
}

fn backward(op: &LinearCrossEntropyGrad, hidden: &[f32], weight: &[f32], lse: &[f32], dnll: &[f32], n: usize, h: usize) -> Vec<f32> {
    let vocab = weight.len() / h;
    let chunk = op.vocab_chunk.min(vocab);
    let mut grads = vec![0f32; (n + if op.weight_grad { vocab } else { 0 }) * h];
    let (dhidden, dweight) = grads.split_at_mut(n * h);
    let mut logits = vec![0f32; n * chunk];
    for start in (0..vocab).step_by(chunk) {
        let width = chunk.min(vocab - start);
        let (logits, weight_slice) = (&mut logits[..n * width], &weight[start * h..(start + width) * h]);
        slice_logits(hidden, weight_slice, logits, n, width, h);
        // logits → dlogits in place
        logits.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
            let t = op.targets[r];
            if t == IGNORE_TARGET {
                row.fill(0.0);
                return;
            }
            let (lse, g) = (lse[r], dnll[r]);
            for v in row.iter_mut() {
                *v = (*v - lse).exp() * g;
            }
            if (start..start + width).contains(&(t as usize)) {
                row[t as usize - start] -= g;
            }
        });
        // SAFETY: every pointer/stride pair below addresses inside the slice it comes from:
        // logits n×width, hidden n×h, weight_slice width×h, dweight rows start..start+width, dhidden n×h.
        unsafe {
            if op.weight_grad {
                // dweight[slice] = dlogitsᵀ · hidden: [width, n] · [n, h]
                gemm(
                    width, h, n,
                    dweight[start * h..].as_mut_ptr(), 1, h as isize, false,
                    logits.as_ptr(), width as isize, 1,
                    hidden.as_ptr(), 1, h as isize,
                    0.0, 1.0, false, false, false, parallelism(),
                );
            }
            // dhidden += dlogits · weight[slice]: [n, width] · [width, h]
            gemm(
                n, h, width,
                dhidden.as_mut_ptr(), 1, h as isize, start > 0,
                logits.as_ptr(), 1, width as isize,
                weight_slice.as_ptr(), 1, h as isize,
                1.0, 1.0, false, false, false, parallelism(),
            );
        }
    }
    grads
}

impl candle_core::CustomOp3 for LinearCrossEntropyGrad<'_> {
    fn name(&self) -> &'static str {
        "forge-linear-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, h) = hl.shape().dims2()?;
        let (hidden, weight) = (view::<f32>(hs, hl, self.name(), "hidden")?, view::<f32>(ws, wl, self.name(), "weight")?);
        let stats = view::<f32>(ss, sl, self.name(), "lse and dnll")?;
        let grads = backward(self, hidden, weight, &stats[..n], &stats[n..], n, h);
        let rows = grads.len() / h;
        Ok((CpuStorage::F32(grads), Shape::from((rows, h))))
    }
}

/// Per-token negative log-likelihood of the logits `hidden · weightᵀ`: `hidden: [n, h]`,
/// `weight: [vocab, h]` (same dtype), `targets: [n]` u32 ([`IGNORE_TARGET`](crate::IGNORE_TARGET)
/// = no loss) → `[n]` f32. Gradients flow to `hidden` and `weight`; logits are materialised for
/// at most `chunk` rows at a time.
pub fn linear_cross_entropy_row_chunks(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk: usize) -> Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (_, wh) = weight.dims2()?;
    if wh != h || weight.dtype() != hidden.dtype() {
        bail!("linear_cross_entropy_row_chunks: hidden {:?} {:?} and weight {:?} {:?} do not match", hidden.dims(), hidden.dtype(), weight.dims(), weight.dtype());
    }
    if targets.dims() != [n] {
        bail!("linear_cross_entropy_row_chunks: targets {:?} do not match {n} rows", targets.dims());
    }
    if chunk == 0 || n == 0 {
        bail!("linear_cross_entropy_row_chunks: needs at least one row and a chunk of at least one row (got {n} rows, chunk {chunk})");
    }
    let op = RowChunks { targets: targets.clone(), chunk };
    // The loss itself is computed outside the op, without a graph; the op hands it out and owns
    // the backward pass.
    let nll = op.chunks(n).map(|(start, len)| {
        let logits = hidden.detach().narrow(0, start, len)?.matmul(&weight.detach().t()?)?;
        cross_entropy_per_token(&logits, &targets.narrow(0, start, len)?)
    });
    let nll = Tensor::cat(&nll.collect::<Result<Vec<_>>>()?, 0)?;
    hidden.contiguous()?.apply_op2(&weight.contiguous()?, RowChunkedLoss { op, nll })
}

struct RowChunks {
    targets: Tensor,
    chunk: usize,
}

impl RowChunks {
    /// `(first row, rows)` of each chunk.
    fn chunks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk).map(move |start| (start, self.chunk.min(n - start)))
    }
}

/// The op of the graph: forward = the precomputed loss; backward = the chunked recomputation.
struct RowChunkedLoss {
    op: RowChunks,
    nll: Tensor,
}

impl RowChunkedLoss {
    fn shape(&self) -> Shape {
        self.nll.shape().clone()
    }
}

impl CustomOp2 for RowChunkedLoss {
    fn name(&self) -> &'static str {
        "forge-linear-cross-entropy"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.nll.storage_and_layout();
        match &*storage {
            Storage::Cpu(nll) => Ok((nll.try_clone(layout)?, self.shape())),
            _ => bail!("{}: the loss is not on the CPU", self.name()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let (storage, layout) = self.nll.storage_and_layout();
        match &*storage {
            Storage::Cuda(nll) => Ok((nll.try_clone(layout)?, self.shape())),
            _ => bail!("{}: the loss is not on the GPU", self.name()),
        }
    }

    /// Per chunk: logits again, dlogits = (softmax − onehot)·dnll, dhidden = dlogits · weight,
    /// dweight += dlogitsᵀ · hidden (accumulated in f32 across chunks).
    fn bwd(&self, hidden: &Tensor, weight: &Tensor, _nll: &Tensor, dnll: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (hidden, weight) = (hidden.detach(), weight.detach());
        let dnll = dnll.detach().to_dtype(DType::F32)?;
        let weight_t = weight.t()?;
        let mut dhidden = Vec::new();
        let mut dweight: Option<Tensor> = None;
        for (start, len) in self.op.chunks(hidden.dim(0)?) {
            let rows = hidden.narrow(0, start, len)?;
            let logits = rows.matmul(&weight_t)?;
            let dlogits = cross_entropy_grad(&logits, &self.op.targets.narrow(0, start, len)?, &dnll.narrow(0, start, len)?)?;
            dhidden.push(dlogits.matmul(&weight)?);
            let dw = dlogits.t()?.matmul(&rows)?.to_dtype(DType::F32)?;
            dweight = Some(match dweight {
                Some(acc) => (acc + dw)?,
                None => dw,
            });
        }
        let dhidden = Tensor::cat(&dhidden, 0)?;
        let dweight = match dweight {
            Some(dw) => dw.to_dtype(weight.dtype())?,
            None => weight.zeros_like()?,
        };
        Ok((Some(dhidden), Some(dweight)))
    }
}
