//! Shared helpers of the fused CPU kernels: element conversion, typed views, dtype dispatch.

use candle_core::backend::BackendStorage as _;
use candle_core::{bail, CpuStorage, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// A storage element the kernels read and write; all arithmetic happens in f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
    fn wrap(data: Vec<Self>) -> CpuStorage;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, |$v:ident| $to:expr, |$f:ident| $from:expr) => {
        impl Elem for $t {
            #[inline(always)]
            fn to_f32(self) -> f32 {
                let $v = self;
                $to
            }
            #[inline(always)]
            fn from_f32($f: f32) -> Self {
                $from
            }
            fn slice(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn wrap(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(data)
            }
        }
    };
}
impl_elem!(f32, F32, |v| v, |f| f);
impl_elem!(bf16, BF16, |v| v.to_f32(), |f| bf16::from_f32(f));
impl_elem!(f16, F16, |v| v.to_f32(), |f| f16::from_f32(f));

/// The contiguous, correctly typed slice behind an op input.
pub(crate) fn view<'a, T: Elem>(storage: &'a CpuStorage, layout: &Layout, op: &str, what: &str) -> Result<&'a [T]> {
    let Some(data) = T::slice(storage) else {
        bail!("{op}: {what} has dtype {:?}, expected the dtype of the first input", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: {what} must be contiguous (call .contiguous() first)"),
    }
}

pub(crate) fn last_dim(layout: &Layout, op: &str) -> Result<usize> {
    match layout.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => bail!("{op}: input must have a non-empty last dimension, got {:?}", layout.dims()),
    }
}

/// Below this many elements a kernel runs on one thread: rayon's fork/join costs more than the work.
const PARALLEL_MIN_ELEMS: usize = 1 << 14;

/// Runs `f(row_index, row)` over the `n`-element rows of `out`, in parallel when it pays.
pub(crate) fn for_each_row<T: Send, F>(out: &mut [T], n: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Send + Sync,
{
    if out.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// At most this many partial sums in `sum_rows`: enough tasks for any CPU, little memory.
const MAX_ROW_BLOCKS: usize = 64;

/// Σ over rows of `f(row)` (each an `n`-vector), accumulated in f32, in parallel when it pays.
///
/// The rows are cut into blocks fixed by `rows` and `n` alone, each block summed in row order, and
/// the block sums added in block order: the result is the same bits on any number of threads and
/// under any scheduling (a rayon `fold` would group rows by how work happened to be stolen).
pub(crate) fn sum_rows<F>(rows: usize, n: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Send + Sync,
{
    let blocks = (rows * n / PARALLEL_MIN_ELEMS).clamp(1, MAX_ROW_BLOCKS);
    let rows_per_block = rows.div_ceil(blocks).max(1);
    let block_count = rows.div_ceil(rows_per_block).max(1);
    let block_sum = |block: usize| {
        let mut acc = vec![0f32; n];
        let first = block * rows_per_block;
        (first..(first + rows_per_block).min(rows)).for_each(|r| f(r, &mut acc));
        acc
    };
    let partials: Vec<Vec<f32>> = if block_count > 1 {
        (0..block_count).into_par_iter().map(block_sum).collect()
    } else {
        vec![block_sum(0)]
    };
    let mut total = vec![0f32; n];
    for partial in &partials {
        total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
    }
    total
}

/// Calls the generic `$f::<T>(args)` for the float element type `T` of `$dtype`.
macro_rules! dispatch_float {
    // a function generic over the dtype and then one more type, given (`f::<_, CudaDevice>(..)`)
    ($dtype:expr, $op:expr, $f:ident::<_, $b:ty>($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32, $b>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16, $b>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16, $b>($($arg),*),
            other => candle_core::bail!("{}: unsupported dtype {other:?} (use f32, bf16 or f16)", $op),
        }
    };
    ($dtype:expr, $op:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16>($($arg),*),
            other => candle_core::bail!("{}: unsupported dtype {other:?} (use f32, bf16 or f16)", $op),
        }
    };
}
pub(crate) use dispatch_float;
