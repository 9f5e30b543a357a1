//! Chunked fused linear + cross-entropy: the per-token loss of `hidden · weightᵀ` (the LM head)
//! without ever holding the logits of the whole sequence. At Qwen3's 151,936-token vocabulary the
//! f32 logits of 8k tokens are 5 GB, plus as much again for their gradient; here only `chunk` rows
//! of logits exist at a time, in the forward pass and again (recomputed) in the backward pass.
//!
//! Device-agnostic: the matmuls are candle's (cuBLAS on CUDA) and the loss per chunk is the fused
//! [`cross_entropy_per_token`](crate::cross_entropy_per_token) op (CPU or CUDA kernel).

use candle_core::backend::BackendStorage as _;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};

use crate::cross_entropy::{cross_entropy_grad, cross_entropy_per_token};

/// Per-token negative log-likelihood of the logits `hidden · weightᵀ`: `hidden: [n, h]`,
/// `weight: [vocab, h]` (same dtype), `targets: [n]` u32 ([`IGNORE_TARGET`](crate::IGNORE_TARGET)
/// = no loss) → `[n]` f32. Gradients flow to `hidden` and `weight`; logits are materialised for
/// at most `chunk` rows at a time.
pub fn linear_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk: usize) -> Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (_, wh) = weight.dims2()?;
    if wh != h || weight.dtype() != hidden.dtype() {
        bail!("linear_cross_entropy: hidden {:?} {:?} and weight {:?} {:?} do not match", hidden.dims(), hidden.dtype(), weight.dims(), weight.dtype());
    }
    if targets.dims() != [n] {
        bail!("linear_cross_entropy: targets {:?} do not match {n} rows", targets.dims());
    }
    if chunk == 0 || n == 0 {
        bail!("linear_cross_entropy: needs at least one row and a chunk of at least one row (got {n} rows, chunk {chunk})");
    }
    let op = LinearCrossEntropy { targets: targets.clone(), chunk };
    // The loss itself is computed outside the op, without a graph; the op hands it out and owns
    // the backward pass.
    let nll = op.chunks(n).map(|(start, len)| {
        let logits = hidden.detach().narrow(0, start, len)?.matmul(&weight.detach().t()?)?;
        cross_entropy_per_token(&logits, &targets.narrow(0, start, len)?)
    });
    let nll = Tensor::cat(&nll.collect::<Result<Vec<_>>>()?, 0)?;
    hidden.contiguous()?.apply_op2(&weight.contiguous()?, LinearCrossEntropyLoss { op, nll })
}

struct LinearCrossEntropy {
    targets: Tensor,
    chunk: usize,
}

impl LinearCrossEntropy {
    /// `(first row, rows)` of each chunk.
    fn chunks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk).map(move |start| (start, self.chunk.min(n - start)))
    }
}

/// The op of the graph: forward = the precomputed loss; backward = the chunked recomputation.
struct LinearCrossEntropyLoss {
    op: LinearCrossEntropy,
    nll: Tensor,
}

impl LinearCrossEntropyLoss {
    fn shape(&self) -> Shape {
        self.nll.shape().clone()
    }
}

impl CustomOp2 for LinearCrossEntropyLoss {
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
