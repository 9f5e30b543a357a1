//! Launches of kernels/flash_attn.cu for the flash-attention CustomOps (src/flash_attn.rs).

use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg as _};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};
use half::bf16;

use super::kernels::{flash_delta, flash_tile, Kernel};
use super::{alloc_output, as_i32, launch, load, view};
use crate::flash_attn::{delta_launch, tile_launch, Sequences, TileKernel, KERNEL_HEAD_DIMS};
use crate::launch::LaunchShape;

const OP: &str = "forge-flash-attn";
/// Above this, a kernel's dynamic shared memory must be allowed explicitly.
const DEFAULT_SHARED: u32 = 48 * 1024;

/// Allows the bf16 flash kernel the dynamic shared memory `shape` asks for.
pub(crate) fn allow_shared(dev: &CudaDevice, kernel: &Kernel, shape: &LaunchShape) -> Result<()> {
    if shape.shared_bytes > DEFAULT_SHARED {
        let func = load::<bf16>(dev, kernel)?;
        func.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shape.shared_bytes as i32).w()?;
    }
    Ok(())
}

/// The tile kernel for head dim `d`, with its shared memory allowed, and its launch.
fn prepare(dev: &CudaDevice, tile: TileKernel, d: usize, seqs: &Sequences, heads: usize) -> Result<(Kernel, LaunchShape)> {
    let kernel = flash_tile(tile, d);
    let shape = tile_launch(tile, d, seqs, heads)?;
    allow_shared(dev, &kernel, &shape)?;
    Ok((kernel, shape))
}

struct Dims {
    total: i32,
    h: i32,
    h_kv: i32,
    d: usize,
}

fn dims(seqs: &Sequences, ql: &Layout, kl: &Layout, vl: &Layout) -> Result<Dims> {
    let (total, h, d) = ql.shape().dims3()?;
    let (kt, h_kv, kd) = kl.shape().dims3()?;
    if kt != total || kd != d || vl.dims() != kl.dims() || seqs.total() != total {
        bail!("{OP}: q {:?}, k {:?}, v {:?} do not match {} rows", ql.dims(), kl.dims(), vl.dims(), seqs.total());
    }
    if !KERNEL_HEAD_DIMS.contains(&d) {
        bail!("{OP}: head dim {d} (the kernels are built for {KERNEL_HEAD_DIMS:?})");
    }
    if h_kv == 0 || h % h_kv != 0 {
        bail!("{OP}: {h} query heads are not a multiple of {h_kv} key/value heads");
    }
    for (l, what) in [(ql, "q"), (kl, "k"), (vl, "v")] {
        if !l.start_offset().is_multiple_of(8) {
            bail!("{OP}: {what} starts at element {} (the kernels need 16-byte alignment)", l.start_offset());
        }
    }
    Ok(Dims { total: as_i32(total, OP, "rows")?, h: as_i32(h, OP, "heads")?, h_kv: as_i32(h_kv, OP, "kv heads")?, d })
}

fn upload(dev: &CudaDevice, seqs: &Sequences) -> Result<[CudaSlice<i32>; 3]> {
    let [starts, rows, valid] = seqs.as_i32()?;
    Ok([dev.clone_htod(&starts)?, dev.clone_htod(&rows)?, dev.clone_htod(&valid)?])
}

/// `(o [total, h, d] bf16, lse [h, total] f32)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    seqs: &Sequences,
    scale: f32,
    qs: &CudaStorage,
    ql: &Layout,
    ks: &CudaStorage,
    kl: &Layout,
    vs: &CudaStorage,
    vl: &Layout,
) -> Result<(CudaStorage, CudaStorage)> {
    let dm = dims(seqs, ql, kl, vl)?;
    let (q, k, v) = (view::<bf16>(qs, ql, OP, "q")?, view::<bf16>(ks, kl, OP, "k")?, view::<bf16>(vs, vl, OP, "v")?);
    let dev = &qs.device;
    let [starts, rows, valid] = upload(dev, seqs)?;
    let n = ql.shape().elem_count();
    let o = alloc_output::<bf16>(dev, n)?;
    let lse = alloc_output::<f32>(dev, dm.total as usize * dm.h as usize)?;
    let (kernel, cfg) = prepare(dev, TileKernel::Forward, dm.d, seqs, dm.h as usize)?;
    launch!(bf16, dev, kernel, cfg, q, k, v, o, lse, starts, rows, valid, dm.total, dm.h, dm.h_kv, scale)?;
    Ok((CudaStorage::wrap_cuda_slice(o, dev.clone()), CudaStorage::wrap_cuda_slice(lse, dev.clone())))
}

/// What the forward kept: its output, the output's gradient, and the log-sum-exp.
pub(crate) struct Saved<'a> {
    pub o: (&'a CudaStorage, &'a Layout),
    pub dout: (&'a CudaStorage, &'a Layout),
    pub lse: (&'a CudaStorage, &'a Layout),
}

/// `[dq.., dk.., dv..]` bf16 in one buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    seqs: &Sequences,
    scale: f32,
    qs: &CudaStorage,
    ql: &Layout,
    ks: &CudaStorage,
    kl: &Layout,
    vs: &CudaStorage,
    vl: &Layout,
    saved: Saved,
) -> Result<CudaStorage> {
    let dm = dims(seqs, ql, kl, vl)?;
    if saved.o.1.dims() != ql.dims() || saved.dout.1.dims() != ql.dims() || saved.lse.1.dims() != [dm.h as usize, dm.total as usize] {
        bail!("{OP}: saved o {:?}, dO {:?}, lse {:?} do not match q {:?}", saved.o.1.dims(), saved.dout.1.dims(), saved.lse.1.dims(), ql.dims());
    }
    if !saved.dout.1.start_offset().is_multiple_of(8) || !saved.o.1.start_offset().is_multiple_of(8) {
        bail!("{OP}: o and dO must be 16-byte aligned");
    }
    let (q, k, v) = (view::<bf16>(qs, ql, OP, "q")?, view::<bf16>(ks, kl, OP, "k")?, view::<bf16>(vs, vl, OP, "v")?);
    let o = view::<bf16>(saved.o.0, saved.o.1, OP, "o")?;
    let dout = view::<bf16>(saved.dout.0, saved.dout.1, OP, "dO")?;
    let lse = view::<f32>(saved.lse.0, saved.lse.1, OP, "lse")?;
    let dev = &qs.device;
    let [starts, rows, valid] = upload(dev, seqs)?;
    let (nq, nk) = (ql.shape().elem_count(), kl.shape().elem_count());

    // 1. delta = rowsum(dO∘O): a warp per (row, head)
    let delta = alloc_output::<f32>(dev, dm.total as usize * dm.h as usize)?;
    let cfg = delta_launch(dm.total as usize, dm.h as usize);
    launch!(bf16, dev, flash_delta(dm.d), cfg, o, dout, delta, dm.total, dm.h)?;

    let mut grads = alloc_output::<bf16>(dev, nq + 2 * nk)?;
    {
        let (mut dq, mut dkv) = grads.split_at_mut(nq);
        let (mut dk, mut dv) = dkv.split_at_mut(nk);
        let stream = dev.cuda_stream();
        // 2. dK, dV: a block per 64 keys of one K/V head
        let (kernel, cfg) = prepare(dev, TileKernel::BackwardDkDv, dm.d, seqs, dm.h_kv as usize)?;
        let func = load::<bf16>(dev, &kernel)?;
        let mut args = stream.launch_builder(&func);
        args.arg(&q).arg(&k).arg(&v).arg(&dout).arg(&lse).arg(&delta).arg(&mut dk).arg(&mut dv);
        args.arg(&starts).arg(&rows).arg(&valid).arg(&dm.total).arg(&dm.h).arg(&dm.h_kv).arg(&scale);
        // SAFETY: the arguments of flash_bwd_dkdv's C signature, buffers sized as `dims` checked.
        unsafe { args.launch(LaunchConfig::from(cfg)) }.w()?;
        // 3. dQ: a block per 64 query rows of one head
        let (kernel, cfg) = prepare(dev, TileKernel::BackwardDq, dm.d, seqs, dm.h as usize)?;
        let func = load::<bf16>(dev, &kernel)?;
        let mut args = stream.launch_builder(&func);
        args.arg(&q).arg(&k).arg(&v).arg(&dout).arg(&lse).arg(&delta).arg(&mut dq);
        args.arg(&starts).arg(&rows).arg(&valid).arg(&dm.total).arg(&dm.h).arg(&dm.h_kv).arg(&scale);
        // SAFETY: the arguments of flash_bwd_dq's C signature, buffers sized as `dims` checked.
        unsafe { args.launch(LaunchConfig::from(cfg)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(grads, dev.clone()))
}
