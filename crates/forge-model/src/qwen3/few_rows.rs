//! `x·wᵀ` for the few rows of a decoding step (CPU, f32, no gradient). A general GEMM packs the
//! whole weight matrix on every call, which costs more than the product itself when `x` has a
//! handful of rows; here each weight row is read once and dotted with every row of `x` (which
//! stays in cache), so a step costs about one pass over the weights.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::kv_cache::dot;
use crate::Result;

/// Up to this many rows take the streaming path; more amortise GEMM's packing.
pub(crate) const MAX_ROWS: usize = 8;
/// Output features per parallel task.
const COLUMNS_PER_TASK: usize = 64;

/// `x: [.., k]` times `w: [n, k]` transposed, when the streaming path applies (`None` otherwise).
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("rank ≥ 1");
    let m: usize = dims[..dims.len() - 1].iter().product();
    let applies = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && w.dtype() == DType::F32 && m <= MAX_ROWS && w.dim(1)? == k;
    if !applies {
        return Ok(None);
    }
    let n = w.dim(0)?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else { return Ok(None) };
    let Some((start, end)) = layout.contiguous_offsets() else { return Ok(None) };
    let ws = &storage.as_slice::<f32>()?[start..end];
    // computed feature-major ([n, m]: each task owns whole weight rows), then transposed
    let mut by_feature = vec![0f32; n * m];
    by_feature.par_chunks_mut(m * COLUMNS_PER_TASK).enumerate().for_each(|(task, block)| {
        for (offset, out) in block.chunks_exact_mut(m).enumerate() {
            let j = task * COLUMNS_PER_TASK + offset;
            let weights = &ws[j * k..(j + 1) * k];
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(&xs[i * k..(i + 1) * k], weights);
            }
        }
    });
    let mut out = vec![0f32; m * n];
    for (j, row) in by_feature.chunks_exact(m).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank ≥ 1") = n;
    Ok(Some(Tensor::from_vec(out, out_dims, x.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_gemm_product_for_one_to_max_rows() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (200, 96), &device).unwrap();
        for m in 1..=MAX_ROWS {
            let x = Tensor::randn(0f32, 1.0, (1, m, 96), &device).unwrap();
            let ours = linear(&x, &w).unwrap().expect("applies");
            let reference = x.reshape((m, 96)).unwrap().matmul(&w.t().unwrap()).unwrap().reshape((1, m, 200)).unwrap();
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{m} rows: max diff {diff}");
        }
        let many = Tensor::zeros((1, MAX_ROWS + 1, 96), DType::F32, &device).unwrap();
        assert!(linear(&many, &w).unwrap().is_none());
    }
}
