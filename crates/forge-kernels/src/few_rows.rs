//! `x·wᵀ` for the rows of a decoding step (CPU, f32, no gradient), reading the weights where
//! they lie. gemm repacks `wᵀ` on every call, and for a `w: [n, k]` stored row-major that packing
//! is a strided gather: with 32 rows of `x` it took three times as long as the multiply itself
//! (perf, batch-32 decode). Both `x` and `w` are contiguous along `k`, so dot products need no
//! packing at all; the register-tiled kernel below reads each weight row once per step.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Up to this many rows of `x` the in-place kernel beats gemm (`cargo bench -p forge-kernels
/// --bench ops -- few_rows`); above it gemm's packing is shared by enough rows to pay off.
pub const MAX_ROWS: usize = 512;
/// Without AVX-512, up to this many rows take the streaming fallback ([`streaming_product`]).
const STREAMING_MAX_ROWS: usize = 8;
/// Output features (rows of `w`) per parallel task.
const COLUMNS_PER_TASK: usize = 64;

/// `x: [.., k]` times `w: [n, k]` transposed, when an in-place kernel applies (`None` otherwise:
/// another device or dtype, strided weights, or more rows than the kernel is faster for).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("rank ≥ 1");
    let on_cpu_f32 = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && w.dtype() == DType::F32;
    if !on_cpu_f32 || w.rank() != 2 || w.dim(1)? != k || k == 0 {
        return Ok(None);
    }
    let m = x.elem_count() / k;
    if m > max_rows() {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else { return Ok(None) };
    let Some((start, end)) = layout.contiguous_offsets() else { return Ok(None) };
    let ws = &storage.as_slice::<f32>()?[start..end];
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let out = product(&xs, ws, k);
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank ≥ 1") = w.dim(0)?;
    Ok(Some(Tensor::from_vec(out, out_dims, x.device())?))
}

/// Most rows [`linear`] takes on this CPU.
pub fn max_rows() -> usize {
    if has_avx512() {
        MAX_ROWS
    } else {
        STREAMING_MAX_ROWS
    }
}

/// `x: [m, k]` times `w: [n, k]` transposed, row-major `[m, n]`, both given row-major; parallel
/// over blocks of rows of `w`.
pub fn product(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        return avx512::product(x, w, k);
    }
    streaming_product(x, w, k)
}

/// [`product`] into `out: [m, n]` on the calling thread, for callers that are parallel already.
pub fn product_on_this_thread(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    assert!(k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k) && out.len() == x.len() / k * (w.len() / k));
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        return avx512::product_on_this_thread(x, w, k, out);
    }
    dot_products(x, w, k, out)
}

/// The portable [`product_on_this_thread`]: one dot product per output.
fn dot_products(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    for (x_row, out_row) in x.chunks_exact(k).zip(out.chunks_exact_mut(w.len() / k)) {
        for (o, w_row) in out_row.iter_mut().zip(w.chunks_exact(k)) {
            *o = dot(x_row, w_row);
        }
    }
}

pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The portable path: each weight row is read once and dotted with every row of `x` (which stays
/// in cache), so a step costs about one pass over the weights; good for a handful of rows.
pub fn streaming_product(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let (m, n) = (x.len() / k, w.len() / k);
    // computed feature-major ([n, m]: each task owns whole weight rows), then transposed
    let mut by_feature = vec![0f32; n * m];
    by_feature.par_chunks_mut(m * COLUMNS_PER_TASK).enumerate().for_each(|(task, block)| {
        for (offset, out) in block.chunks_exact_mut(m).enumerate() {
            let j = task * COLUMNS_PER_TASK + offset;
            let weights = &w[j * k..(j + 1) * k];
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(&x[i * k..(i + 1) * k], weights);
            }
        }
    });
    let mut out = vec![0f32; m * n];
    for (j, row) in by_feature.chunks_exact(m).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

/// Dot product with eight independent partial sums, so the compiler can vectorise it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use rayon::prelude::*;

    use super::COLUMNS_PER_TASK;

    /// Rows of `x` × rows of `w` per register tile: 16 accumulators, 4 weight vectors and one `x`
    /// vector of AVX-512's 32 registers; each load then feeds four multiply-adds.
    const TILE_ROWS: usize = 4;
    const TILE_COLS: usize = 4;
    const LANES: usize = 16;

    /// The output, written by parallel tasks at disjoint columns.
    #[derive(Clone, Copy)]
    struct Out {
        at: *mut f32,
        n: usize,
    }
    // SAFETY: tasks write disjoint elements of one live buffer (see `product`).
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}

    /// Parallel over blocks of weight rows: each block is read from memory once and multiplied
    /// by every row of `x` (which stays in cache).
    pub(super) fn product(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
        assert!(is_x86_feature_detected!("avx512f"));
        assert!(k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k));
        let n = w.len() / k;
        let mut out = vec![0f32; x.len() / k * n];
        let target = Out { at: out.as_mut_ptr(), n };
        (0..n.div_ceil(COLUMNS_PER_TASK)).into_par_iter().for_each(|task| {
            let columns = task * COLUMNS_PER_TASK..((task + 1) * COLUMNS_PER_TASK).min(n);
            // SAFETY: AVX-512F was detected above; each task writes only its own columns of
            // `out`, which outlives the parallel loop.
            unsafe { columns_block(x, w, k, columns, target) };
        });
        out
    }

    pub(super) fn product_on_this_thread(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
        assert!(is_x86_feature_detected!("avx512f"));
        let n = w.len() / k;
        // SAFETY: AVX-512F was detected above; the caller checked that `out` is [m, n].
        unsafe { columns_block(x, w, k, 0..n, Out { at: out.as_mut_ptr(), n }) };
    }

    /// Columns `columns` of every row of the output.
    #[target_feature(enable = "avx512f")]
    unsafe fn columns_block(x: &[f32], w: &[f32], k: usize, columns: Range<usize>, out: Out) {
        let m = x.len() / k;
        // rows of x outermost: the first pass reads the block's weights from memory in one
        // sequential sweep, the later ones find them in L2
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(TILE_ROWS);
            let mut j = columns.start;
            while j < columns.end {
                let cols = (columns.end - j).min(TILE_COLS);
                let (x_at, w_at, out_at) = (x[i * k..].as_ptr(), w[j * k..].as_ptr(), unsafe { out.at.add(i * out.n + j) });
                // SAFETY: `rows` rows of x from row i and `cols` rows of w from row j exist, and
                // the tile's outputs lie inside `out`.
                unsafe {
                    if cols == TILE_COLS {
                        tile_of_rows::<TILE_COLS>(rows, x_at, w_at, k, out_at, out.n);
                    } else {
                        for c in 0..cols {
                            tile_of_rows::<1>(rows, x_at, w_at.add(c * k), k, out_at.add(c), out.n);
                        }
                    }
                }
                j += cols;
            }
            i += rows;
        }
    }

    /// [`tile`] for a run-time count of `x` rows (≤ `TILE_ROWS`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_of_rows<const C: usize>(rows: usize, x: *const f32, w: *const f32, k: usize, out: *mut f32, n: usize) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match rows {
                4 => tile::<4, C>(x, w, k, out, n),
                3 => tile::<3, C>(x, w, k, out, n),
                2 => tile::<2, C>(x, w, k, out, n),
                _ => tile::<1, C>(x, w, k, out, n),
            }
        }
    }

    /// `out[r·n + c] = x_r · w_c` for `R` rows of `x` and `C` rows of `w` (each `k` long, one after
    /// the other), accumulated in registers over `k` and summed across lanes once at the end.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(x: *const f32, w: *const f32, k: usize, out: *mut f32, n: usize) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        // SAFETY (loads): row r of x is x[r·k..(r+1)·k], row c of w is w[c·k..(c+1)·k]; the
        // full steps stay below k and the last one is masked to the k - p remaining lanes.
        while p + LANES <= k {
            unsafe { multiply_add::<R, C, false>(&mut acc, x.add(p), w.add(p), k, 0) };
            p += LANES;
        }
        if p < k {
            unsafe { multiply_add::<R, C, true>(&mut acc, x.add(p), w.add(p), k, (1u16 << (k - p)) - 1) };
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: the caller's tile lies inside the output.
            unsafe {
                match <&[__m512; 4]>::try_from(row.as_slice()) {
                    Ok(four) => _mm_storeu_ps(out.add(r * n), sums_of_four(four)),
                    Err(_) => {
                        for (c, &sum) in row.iter().enumerate() {
                            *out.add(r * n + c) = _mm512_reduce_add_ps(sum);
                        }
                    }
                }
            }
        }
    }

    /// One step of 16 lanes of every dot product of the tile; `MASKED`: only the lanes of `mask`
    /// (the unmasked loads of the full steps can be folded into the multiply-adds).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn multiply_add<const R: usize, const C: usize, const MASKED: bool>(acc: &mut [[__m512; C]; R], x: *const f32, w: *const f32, k: usize, mask: __mmask16) {
        // SAFETY: the caller's rows hold the loaded lanes.
        let load = |at: *const f32| unsafe {
            if MASKED {
                _mm512_maskz_loadu_ps(mask, at)
            } else {
                _mm512_loadu_ps(at)
            }
        };
        let mut weights = [_mm512_setzero_ps(); C];
        for (c, v) in weights.iter_mut().enumerate() {
            *v = load(unsafe { w.add(c * k) });
            if !MASKED {
                // the same lanes of the next tile's weight rows: on the first pass over a block
                // they come from memory (measured +6% on weights that miss the cache); a
                // prefetch is only a hint, so one past the end of `w` is harmless
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(c * k + C * k).cast());
            }
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xv = load(unsafe { x.add(r * k) });
            for (a, &wv) in row.iter_mut().zip(&weights) {
                *a = _mm512_fmadd_ps(xv, wv, *a);
            }
        }
    }

    /// The lane sums of four vectors, in one shuffle tree rather than four separate reductions.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sums_of_four(v: &[__m512; 4]) -> __m128 {
        // within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c and d
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
        // within each 128-bit lane: [a, b, c, d]
        let abcd = _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(ab, cd), _mm512_shuffle_ps::<0b11_10_11_10>(ab, cd));
        // across the four 128-bit lanes: swap halves, then neighbours
        let halves = _mm512_add_ps(abcd, _mm512_shuffle_f32x4::<0b01_00_11_10>(abcd, abcd));
        let total = _mm512_add_ps(halves, _mm512_shuffle_f32x4::<0b10_11_00_01>(halves, halves));
        _mm512_castps512_ps128(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x·wᵀ` by the definition, in f64.
    fn reference(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
        let (m, n) = (x.len() / k, w.len() / k);
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p])).sum::<f64>() as f32;
            }
        }
        out
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let max_diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "{what}: max diff {max_diff}");
    }

    /// Shapes with rows, output features and `k` off every tile and lane multiple.
    const SHAPES: [(usize, usize, usize); 8] = [(1, 1, 1), (1, 200, 96), (3, 7, 17), (4, 64, 16), (5, 67, 33), (9, 130, 512), (32, 257, 100), (MAX_ROWS, 129, 47)];

    #[test]
    fn every_product_path_matches_the_definition() {
        for (seed, &(m, n, k)) in SHAPES.iter().enumerate() {
            let (x, w) = (random(m * k, seed as u64), random(n * k, seed as u64 + 100));
            let want = reference(&x, &w, k);
            assert_close(&product(&x, &w, k), &want, &format!("product {m}×{k} · ({n}×{k})ᵀ"));
            assert_close(&streaming_product(&x, &w, k), &want, &format!("streaming {m}×{k} · ({n}×{k})ᵀ"));
            let mut on_this_thread = vec![f32::NAN; m * n];
            product_on_this_thread(&x, &w, k, &mut on_this_thread);
            assert_close(&on_this_thread, &want, &format!("on this thread {m}×{k} · ({n}×{k})ᵀ"));
            dot_products(&x, &w, k, &mut on_this_thread);
            assert_close(&on_this_thread, &want, &format!("dot products {m}×{k} · ({n}×{k})ᵀ"));
        }
    }

    #[test]
    fn linear_matches_the_gemm_product_up_to_max_rows_and_declines_above() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (200, 96), &device).unwrap();
        // without AVX-512 the kernel takes at most STREAMING_MAX_ROWS rows
        for m in [1, 2, 7, 8, 9, 31, max_rows()].into_iter().filter(|&m| m <= max_rows()) {
            let x = Tensor::randn(0f32, 1.0, (1, m, 96), &device).unwrap();
            let ours = linear(&x, &w).unwrap().expect("applies");
            let gemm = x.reshape((m, 96)).unwrap().matmul(&w.t().unwrap()).unwrap().reshape((1, m, 200)).unwrap();
            let diff = (ours - gemm).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{m} rows: max diff {diff}");
        }
        let many = Tensor::zeros((1, max_rows() + 1, 96), DType::F32, &device).unwrap();
        assert!(linear(&many, &w).unwrap().is_none());
        assert!(linear(&Tensor::zeros((2, 96), DType::BF16, &device).unwrap(), &w.to_dtype(DType::BF16).unwrap()).unwrap().is_none());
    }
}
