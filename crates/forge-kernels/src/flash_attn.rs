//! Causal attention over variable-length batches, fused on CUDA ("flash attention").
//!
//! On CUDA bf16 tensors with head_dim 64 or 128 ([`supported`]) the op runs kernels/flash_attn.cu:
//! the forward keeps the per-row log-sum-exp and the backward recomputes the probabilities from it,
//! so no `[seq, seq]` tensor is ever stored. Everywhere else the same functions compute the
//! reference: [`crate::attention`] (the matmul + fused-softmax path) with the equivalent additive
//! mask, per sequence. GPU parity and speed of the fused kernels are unmeasured until
//! `scripts/gpu/gpu-check.sh flash` runs on a GPU machine (kernels/FLASH.md).
//!
//! Two layouts, one semantics (query row `i` of a sequence attends its keys `j <= i` with
//! `j < length`), both with grouped K/V heads (query head `i` reads K/V head `i / (h / h_kv)`):
//! - [`causal_attention_padded`]: `[b, s, heads, d]` right-padded batches with per-row lengths (the
//!   model's layout; padded query rows attend every real key, exactly as the additive-mask path);
//! - [`causal_attention_varlen`]: `[total, heads, d]` packed sequences with cumulative offsets.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

/// How the rows of a batch split into sequences: sequence `z` owns rows `starts[z] ..
/// starts[z] + rows[z]` and its queries see its first `valid[z]` keys (causally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequences {
    starts: Vec<usize>,
    rows: Vec<usize>,
    valid: Vec<usize>,
    total: usize,
}

impl Sequences {
    /// Packed sequences from cumulative offsets `[0, len0, len0 + len1, ..., total]`.
    pub fn packed(cu_seqlens: &[usize]) -> Result<Self> {
        let (Some(&first), Some(&total)) = (cu_seqlens.first(), cu_seqlens.last()) else {
            bail!("flash attention: cu_seqlens is empty (it must start at 0 and end at the total row count)")
        };
        if first != 0 || cu_seqlens.len() < 2 {
            bail!("flash attention: cu_seqlens {cu_seqlens:?} must start at 0 and hold at least one sequence");
        }
        if let Some(w) = cu_seqlens.windows(2).find(|w| w[1] < w[0]) {
            bail!("flash attention: cu_seqlens decreases ({} then {})", w[0], w[1]);
        }
        let rows: Vec<usize> = cu_seqlens.windows(2).map(|w| w[1] - w[0]).collect();
        Ok(Self { starts: cu_seqlens[..cu_seqlens.len() - 1].to_vec(), valid: rows.clone(), rows, total })
    }

    /// `batch` right-padded rows of `seq` positions, row `r` holding `lengths[r]` (1..=seq) real tokens.
    pub fn padded(batch: usize, seq: usize, lengths: &[usize]) -> Result<Self> {
        if lengths.len() != batch {
            bail!("flash attention: {} lengths for a batch of {batch}", lengths.len());
        }
        if let Some(&bad) = lengths.iter().find(|&&n| n == 0 || n > seq) {
            bail!("flash attention: length {bad} is outside 1..={seq}");
        }
        Ok(Self { starts: (0..batch).map(|r| r * seq).collect(), rows: vec![seq; batch], valid: lengths.to_vec(), total: batch * seq })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Rows of all sequences together.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Rows of the longest sequence.
    pub fn max_rows(&self) -> usize {
        self.rows.iter().copied().max().unwrap_or(0)
    }

    /// `(starts, rows, valid)` as the kernels' `int`s.
    pub fn as_i32(&self) -> Result<[Vec<i32>; 3]> {
        let convert = |v: &[usize], what: &str| -> Result<Vec<i32>> {
            v.iter().map(|&x| i32::try_from(x).or_else(|_| bail!("flash attention: {what} {x} exceeds 32 bits"))).collect()
        };
        Ok([convert(&self.starts, "row offset")?, convert(&self.rows, "row count")?, convert(&self.valid, "length")?])
    }
}

/// The kernels of kernels/flash_attn.cu that tile over rows: a block of [`TILE_THREADS`] per
/// [`TILE_ROWS`] rows (queries; keys for dK/dV) of one head of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKernel {
    Forward,
    BackwardDkDv,
    BackwardDq,
}

/// The head dims the attention kernels (flash and decode) are built for.
pub const KERNEL_HEAD_DIMS: [usize; 2] = [64, 128];
/// Threads per block of the tile kernels (`flash::THREADS`).
pub const TILE_THREADS: u32 = 128;
/// Query rows per block of the forward and dQ kernels, keys per block of the dK/dV kernel.
pub const TILE_ROWS: usize = 64;

impl TileKernel {
    /// The kernel's name in the kernel table (`crate::kernels`; its entry points are
    /// `<name>_d<head dim>_bf16`).
    pub fn kernel(self) -> &'static str {
        match self {
            Self::Forward => "flash_fwd",
            Self::BackwardDkDv => "flash_bwd_dkdv",
            Self::BackwardDq => "flash_bwd_dq",
        }
    }

    /// Dynamic shared memory (bytes), as the kernel lays it out: tiles of bf16 rows of d + 8.
    pub fn shared_bytes(self, d: usize) -> usize {
        let row = (d + 8) * 2;
        match self {
            Self::Forward => 2 * TILE_ROWS * row,
            Self::BackwardDq => 4 * TILE_ROWS * row,
            Self::BackwardDkDv => {
                // query rows per step (INSTANTIATE_FLASH's second argument), plus f32 lse and delta
                let br = if d == 128 { 32 } else { 64 };
                (2 * TILE_ROWS + 2 * br) * row + 2 * br * 4
            }
        }
    }
}

/// The launch of a tile kernel over `heads` heads (query heads; K/V heads for dK/dV).
pub fn tile_launch(kernel: TileKernel, d: usize, seqs: &Sequences, heads: usize) -> Result<crate::launch::LaunchShape> {
    const GRID_YZ: usize = 65535;
    if heads > GRID_YZ || seqs.len() > GRID_YZ {
        bail!("flash attention: {heads} heads or {} sequences exceed the grid's limit of {GRID_YZ}", seqs.len());
    }
    let tiles = seqs.max_rows().div_ceil(TILE_ROWS).max(1);
    let Ok(tiles) = u32::try_from(tiles) else { bail!("flash attention: {tiles} row tiles exceed the grid") };
    Ok(crate::launch::LaunchShape {
        grid: [tiles, heads as u32, seqs.len() as u32],
        block: [TILE_THREADS, 1, 1],
        shared_bytes: kernel.shared_bytes(d) as u32,
    })
}

/// The launch of `flash_bwd_delta`: a warp per (row, head), grid-stride.
pub fn delta_launch(total: usize, heads: usize) -> crate::launch::LaunchShape {
    crate::launch::grid_stride(total * heads * 32, 256)
}

/// Whether [`causal_attention_padded`] / [`causal_attention_varlen`] run the fused kernels for
/// tensors on `device` of `dtype` with this head dim (CUDA builds only, bf16, head_dim 64 or 128).
pub fn supported(device: &Device, dtype: DType, head_dim: usize) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && runs_on_cuda(dtype, head_dim)
}

/// Whether a CUDA build runs the fused kernels for this dtype and head dim on a GPU (what a plan
/// made away from the GPU assumes).
pub fn runs_on_cuda(dtype: DType, head_dim: usize) -> bool {
    dtype == DType::BF16 && KERNEL_HEAD_DIMS.contains(&head_dim)
}

/// The additive-mask value of masked positions: the most negative finite value of the dtype (as
/// forge-model's mask).
fn mask_value(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::MIN.to_f32(),
        DType::BF16 => half::bf16::MIN.to_f32(),
        _ => f32::MIN,
    }
}

/// Heads and head dim of `q: [.., h, d]`, `k`, `v: [.., h_kv, d]` (rows already checked).
fn check_heads(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize)> {
    let (qd, kd) = (q.dims(), k.dims());
    let (h, d) = (qd[qd.len() - 2], qd[qd.len() - 1]);
    let (h_kv, dk) = (kd[kd.len() - 2], kd[kd.len() - 1]);
    if k.dims() != v.dims() || dk != d || qd[..qd.len() - 2] != kd[..kd.len() - 2] {
        bail!("flash attention: q {:?}, k {:?}, v {:?} do not match", q.dims(), k.dims(), v.dims());
    }
    if h_kv == 0 || h % h_kv != 0 {
        bail!("flash attention: {h} query heads are not a multiple of {h_kv} key/value heads");
    }
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        bail!("flash attention: q, k, v dtypes {:?}, {:?}, {:?} differ", q.dtype(), k.dtype(), v.dtype());
    }
    Ok((h, h_kv, d))
}

/// Causal attention of right-padded batches: `q: [b, s, h, d]`, `k`, `v: [b, s, h_kv, d]`,
/// `lengths[r]` (1..=s) real tokens in row `r`; returns `[b, s, h, d]`. Query `i` of row `r` attends
/// keys `j <= i` with `j < lengths[r]` — the model's causal + padding mask. Differentiable in q, k, v.
pub fn causal_attention_padded(q: &Tensor, k: &Tensor, v: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let (b, s, _, _) = q.dims4()?;
    k.dims4()?;
    let (h, h_kv, d) = check_heads(q, k, v)?;
    let seqs = Sequences::padded(b, s, lengths)?;
    if supported(q.device(), q.dtype(), d) {
        let flat = |t: &Tensor, heads: usize| t.reshape((b * s, heads, d));
        let out = fused(&flat(q, h)?, &flat(k, h_kv)?, &flat(v, h_kv)?, seqs, scale)?;
        return out.reshape((b, s, h, d));
    }
    reference_padded(q, k, v, lengths, scale)
}

/// The reference of [`causal_attention_padded`]: the additive causal + padding mask and
/// [`crate::attention`] on heads-first views.
pub fn reference_padded(q: &Tensor, k: &Tensor, v: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let (b, s, _, _) = q.dims4()?;
    let masked = mask_value(q.dtype());
    // query i of row r sees keys j < min(i + 1, length): mask the rest of its row
    let mut bias = vec![0f32; b * s * s];
    for (r, rows) in bias.chunks_exact_mut(s * s).enumerate() {
        for (i, row) in rows.chunks_exact_mut(s).enumerate() {
            row[(i + 1).min(lengths[r])..].fill(masked);
        }
    }
    let bias = Tensor::from_vec(bias, (b, 1, s, s), q.device())?.to_dtype(q.dtype())?;
    let heads_first = |t: &Tensor| t.transpose(1, 2);
    crate::attention(&heads_first(q)?, &heads_first(k)?, &heads_first(v)?, Some(&bias), scale)?.transpose(1, 2)?.contiguous()
}

/// Causal attention of packed sequences: `q: [total, h, d]`, `k`, `v: [total, h_kv, d]`,
/// sequence `z` in rows `cu_seqlens[z] .. cu_seqlens[z + 1]` (no attention across sequences);
/// returns `[total, h, d]`. Differentiable in q, k, v.
pub fn causal_attention_varlen(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize], scale: f64) -> Result<Tensor> {
    let (total, _, _) = q.dims3()?;
    k.dims3()?;
    let (_, _, d) = check_heads(q, k, v)?;
    let seqs = Sequences::packed(cu_seqlens)?;
    if seqs.total() != total {
        bail!("flash attention: cu_seqlens ends at {} but q has {total} rows", seqs.total());
    }
    if supported(q.device(), q.dtype(), d) {
        return fused(q, k, v, seqs, scale);
    }
    reference_varlen(q, k, v, cu_seqlens, scale)
}

/// The reference of [`causal_attention_varlen`]: each sequence alone through [`reference_padded`].
pub fn reference_varlen(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize], scale: f64) -> Result<Tensor> {
    let parts = cu_seqlens
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| {
            let n = w[1] - w[0];
            let one = |t: &Tensor| t.narrow(0, w[0], n)?.unsqueeze(0);
            reference_padded(&one(q)?, &one(k)?, &one(v)?, &[n], scale)?.squeeze(0)
        })
        .collect::<Result<Vec<_>>>()?;
    match parts.is_empty() {
        true => q.zeros_like(),
        false => Tensor::cat(&parts, 0),
    }
}

/// Contiguous, with its first element 16-byte aligned (the kernels load 8 bf16 at a time).
fn aligned(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    match t.layout().start_offset() % 8 {
        0 => Ok(t),
        _ => t.copy(),
    }
}

fn fused(q: &Tensor, k: &Tensor, v: &Tensor, seqs: Sequences, scale: f64) -> Result<Tensor> {
    if seqs.total() == 0 {
        return q.zeros_like();
    }
    let op = FlashAttn { seqs: Arc::new(seqs), scale: scale as f32, lse: Mutex::new(None) };
    aligned(q)?.apply_op3(&aligned(k)?, &aligned(v)?, op)
}

/// The fused forward: `o` as the op's output; the log-sum-exp `[h, total]` (f32) kept for `bwd`.
struct FlashAttn {
    seqs: Arc<Sequences>,
    scale: f32,
    lse: Mutex<Option<Tensor>>,
}

impl CustomOp3 for FlashAttn {
    fn name(&self) -> &'static str {
        "forge-flash-attn"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("forge-flash-attn runs on CUDA only; the CPU path is the reference attention")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (o, lse) = crate::launch::flash_attn::forward(&qs.device, &self.seqs, self.scale, qs, ql, ks, kl, vs, vl)?;
        let (total, h, _) = ql.shape().dims3()?;
        let lse = Tensor::from_storage(candle_core::Storage::Cuda(lse), (h, total), candle_core::op::BackpropOp::none(), false);
        *self.lse.lock().expect("flash lse lock") = Some(lse);
        Ok((o, ql.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, dout: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.lse.lock().expect("flash lse lock").clone() else {
            bail!("forge-flash-attn: backward before a forward on CUDA")
        };
        let grad_op = FlashAttnGrad { seqs: self.seqs.clone(), scale: self.scale, o: o.detach(), dout: aligned(&dout.detach().to_dtype(o.dtype())?)?, lse };
        let flat = q.detach().apply_op3_no_bwd(&k.detach(), &v.detach(), &grad_op)?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        let dq = flat.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = flat.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = flat.narrow(0, nq + nk, nk)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// The fused backward of (q, k, v) given o, dO and the log-sum-exp: one flat output
/// `[dq.., dk.., dv..]` (a CustomOp has one output), split by [`FlashAttn::bwd`].
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FlashAttnGrad {
    seqs: Arc<Sequences>,
    scale: f32,
    o: Tensor,
    dout: Tensor,
    lse: Tensor,
}

impl CustomOp3 for FlashAttnGrad {
    fn name(&self) -> &'static str {
        "forge-flash-attn-grad"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("forge-flash-attn-grad runs on CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::Storage;
        let ((os, ol), (gs, gl), (ls, ll)) = (self.o.storage_and_layout(), self.dout.storage_and_layout(), self.lse.storage_and_layout());
        let (Storage::Cuda(os), Storage::Cuda(gs), Storage::Cuda(ls)) = (&*os, &*gs, &*ls) else {
            bail!("forge-flash-attn-grad: o, dO and lse must be on the GPU")
        };
        let saved = crate::launch::flash_attn::Saved { o: (os, ol), dout: (gs, gl), lse: (ls, ll) };
        let flat = crate::launch::flash_attn::backward(&qs.device, &self.seqs, self.scale, qs, ql, ks, kl, vs, vl, saved)?;
        let len = ql.shape().elem_count() + 2 * kl.shape().elem_count();
        Ok((flat, Shape::from(len)))
    }
}
