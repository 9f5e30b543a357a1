//! Launches of kernels/flash_attn.cu for the flash-attention CustomOps (src/flash_attn.rs).

use candle_core::{bail, Layout, Result};
use half::bf16;

use crate::backend::{as_i32, Backend};
use crate::flash_attn::{delta_launch, tile_launch, Sequences, TileKernel, KERNEL_HEAD_DIMS};
use crate::kernels::{entry, flash_bwd_delta, flash_bwd_dkdv, flash_bwd_dq, flash_fwd, Declaration, Entry, Pointee};
use crate::launch::LaunchShape;

const OP: &str = "forge-flash-attn";
/// Above this, a kernel's dynamic shared memory must be allowed explicitly.
const DEFAULT_SHARED: u32 = 48 * 1024;

/// The kernel table's variant of a flash kernel for head dim `d` (`flash_fwd_d64_bf16`: `d64`).
pub fn variant(d: usize) -> String {
    format!("d{d}")
}

/// Allows the bf16 flash kernel `kernel` (variant `variant`) the dynamic shared memory `shape` asks for.
pub fn allow_shared<B: Backend>(dev: &B, kernel: &str, variant: &str, shape: &LaunchShape) -> Result<()> {
    if shape.shared_bytes > DEFAULT_SHARED {
        let (module, name) = entry(Declaration::of(kernel), variant, bf16::NAME)?;
        dev.allow_shared(&Entry { module, name: &name }, shape.shared_bytes)?;
    }
    Ok(())
}

/// The launch of tile kernel `tile` for head dim `d`, with its shared memory allowed.
fn prepare<B: Backend>(dev: &B, tile: TileKernel, d: usize, seqs: &Sequences, heads: usize) -> Result<LaunchShape> {
    let shape = tile_launch(tile, d, seqs, heads)?;
    allow_shared(dev, tile.kernel(), &variant(d), &shape)?;
    Ok(shape)
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

fn upload<B: Backend>(dev: &B, seqs: &Sequences) -> Result<[B::Buffer<i32>; 3]> {
    let [starts, rows, valid] = seqs.as_i32()?;
    Ok([dev.upload(&starts)?, dev.upload(&rows)?, dev.upload(&valid)?])
}

/// `(o [total, h, d] bf16, lse [h, total] f32)`.
#[allow(clippy::too_many_arguments)]
pub fn forward<B: Backend>(
    dev: &B,
    seqs: &Sequences,
    scale: f32,
    qs: &B::Storage,
    ql: &Layout,
    ks: &B::Storage,
    kl: &Layout,
    vs: &B::Storage,
    vl: &Layout,
) -> Result<(B::Storage, B::Storage)> {
    let dm = dims(seqs, ql, kl, vl)?;
    let (q, k, v) = (dev.view::<bf16>(qs, ql, OP, "q")?, dev.view::<bf16>(ks, kl, OP, "k")?, dev.view::<bf16>(vs, vl, OP, "v")?);
    let [starts, rows, valid] = upload(dev, seqs)?;
    let n = ql.shape().elem_count();
    let o = dev.alloc::<bf16>(n)?;
    let lse = dev.alloc::<f32>(dm.total as usize * dm.h as usize)?;
    let cfg = prepare(dev, TileKernel::Forward, dm.d, seqs, dm.h as usize)?;
    flash_fwd::<B, bf16>(dev, &variant(dm.d), &cfg, &q, &k, &v, &o, &lse, &starts, &rows, &valid, dm.total, dm.h, dm.h_kv, scale)?;
    Ok((dev.wrap(o), dev.wrap(lse)))
}

/// What the forward kept: its output, the output's gradient, and the log-sum-exp.
pub struct Saved<'a, S> {
    pub o: (&'a S, &'a Layout),
    pub dout: (&'a S, &'a Layout),
    pub lse: (&'a S, &'a Layout),
}

/// `[dq.., dk.., dv..]` bf16 in one buffer.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    dev: &B,
    seqs: &Sequences,
    scale: f32,
    qs: &B::Storage,
    ql: &Layout,
    ks: &B::Storage,
    kl: &Layout,
    vs: &B::Storage,
    vl: &Layout,
    saved: Saved<B::Storage>,
) -> Result<B::Storage> {
    let dm = dims(seqs, ql, kl, vl)?;
    if saved.o.1.dims() != ql.dims() || saved.dout.1.dims() != ql.dims() || saved.lse.1.dims() != [dm.h as usize, dm.total as usize] {
        bail!("{OP}: saved o {:?}, dO {:?}, lse {:?} do not match q {:?}", saved.o.1.dims(), saved.dout.1.dims(), saved.lse.1.dims(), ql.dims());
    }
    if !saved.dout.1.start_offset().is_multiple_of(8) || !saved.o.1.start_offset().is_multiple_of(8) {
        bail!("{OP}: o and dO must be 16-byte aligned");
    }
    let (q, k, v) = (dev.view::<bf16>(qs, ql, OP, "q")?, dev.view::<bf16>(ks, kl, OP, "k")?, dev.view::<bf16>(vs, vl, OP, "v")?);
    let o = dev.view::<bf16>(saved.o.0, saved.o.1, OP, "o")?;
    let dout = dev.view::<bf16>(saved.dout.0, saved.dout.1, OP, "dO")?;
    let lse = dev.view::<f32>(saved.lse.0, saved.lse.1, OP, "lse")?;
    let [starts, rows, valid] = upload(dev, seqs)?;
    let (nq, nk) = (ql.shape().elem_count(), kl.shape().elem_count());
    let variant = variant(dm.d);

    // 1. delta = rowsum(dO∘O): a warp per (row, head)
    let delta = dev.alloc::<f32>(dm.total as usize * dm.h as usize)?;
    let cfg = delta_launch(dm.total as usize, dm.h as usize);
    flash_bwd_delta::<B, bf16>(dev, &variant, &cfg, &o, &dout, &delta, dm.total, dm.h)?;

    let grads = dev.alloc::<bf16>(nq + 2 * nk)?;
    {
        let (dq, dk, dv) = (dev.slice(&grads, 0, nq), dev.slice(&grads, nq, nk), dev.slice(&grads, nq + nk, nk));
        // 2. dK, dV: a block per 64 keys of one K/V head
        let cfg = prepare(dev, TileKernel::BackwardDkDv, dm.d, seqs, dm.h_kv as usize)?;
        flash_bwd_dkdv::<B, bf16>(dev, &variant, &cfg, &q, &k, &v, &dout, &lse, &delta, &dk, &dv, &starts, &rows, &valid, dm.total, dm.h, dm.h_kv, scale)?;
        // 3. dQ: a block per 64 query rows of one head
        let cfg = prepare(dev, TileKernel::BackwardDq, dm.d, seqs, dm.h as usize)?;
        flash_bwd_dq::<B, bf16>(dev, &variant, &cfg, &q, &k, &v, &dout, &lse, &delta, &dq, &starts, &rows, &valid, dm.total, dm.h, dm.h_kv, scale)?;
    }
    Ok(dev.wrap(grads))
}

