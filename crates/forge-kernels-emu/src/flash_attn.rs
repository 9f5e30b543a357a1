//! kernels/flash_attn.cu under emulation, launched as src/cuda/flash_attn.rs launches it on a GPU:
//! the same entry points, arguments and launch shapes (forge_kernels::flash_attn::tile_launch).

use half::bf16;

use forge_kernels::flash_attn::{delta_launch, tile_launch, Sequences, TileKernel, KERNEL_HEAD_DIMS};

use crate::ops::Float;
use crate::{launch, Buffer, Schedule};

type Bf = *const bf16;
type BfMut = *mut bf16;
type Forward = unsafe extern "C" fn(Bf, Bf, Bf, BfMut, *mut f32, *const i32, *const i32, *const i32, i32, i32, i32, f32);
type Delta = unsafe extern "C" fn(Bf, Bf, *mut f32, i32, i32);
type DkDv = unsafe extern "C" fn(Bf, Bf, Bf, Bf, *const f32, *const f32, BfMut, BfMut, *const i32, *const i32, *const i32, i32, i32, i32, f32);
type Dq = unsafe extern "C" fn(Bf, Bf, Bf, Bf, *const f32, *const f32, BfMut, *const i32, *const i32, *const i32, i32, i32, i32, f32);

extern "C" {
    fn flash_fwd_d64_bf16(q: Bf, k: Bf, v: Bf, o: BfMut, lse: *mut f32, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
    fn flash_fwd_d128_bf16(q: Bf, k: Bf, v: Bf, o: BfMut, lse: *mut f32, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
    fn flash_bwd_delta_d64_bf16(o: Bf, dout: Bf, delta: *mut f32, total: i32, h: i32);
    fn flash_bwd_delta_d128_bf16(o: Bf, dout: Bf, delta: *mut f32, total: i32, h: i32);
    fn flash_bwd_dkdv_d64_bf16(q: Bf, k: Bf, v: Bf, dout: Bf, lse: *const f32, delta: *const f32, dk: BfMut, dv: BfMut, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
    fn flash_bwd_dkdv_d128_bf16(q: Bf, k: Bf, v: Bf, dout: Bf, lse: *const f32, delta: *const f32, dk: BfMut, dv: BfMut, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
    fn flash_bwd_dq_d64_bf16(q: Bf, k: Bf, v: Bf, dout: Bf, lse: *const f32, delta: *const f32, dq: BfMut, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
    fn flash_bwd_dq_d128_bf16(q: Bf, k: Bf, v: Bf, dout: Bf, lse: *const f32, delta: *const f32, dq: BfMut, starts: *const i32, rows: *const i32, valid: *const i32, total: i32, h: i32, h_kv: i32, scale: f32);
}

/// Shapes of one attention problem: `q: [total, h, d]`, `k, v: [total, h_kv, d]` (bf16).
pub struct Problem<'a> {
    pub seqs: &'a Sequences,
    pub h: usize,
    pub h_kv: usize,
    pub d: usize,
    pub scale: f32,
}

/// The sequence table as the kernels read it.
struct SequenceTable {
    starts: Buffer<i32>,
    rows: Buffer<i32>,
    valid: Buffer<i32>,
}

impl Problem<'_> {
    fn table(&self) -> Result<SequenceTable, String> {
        let [starts, rows, valid] = self.seqs.as_i32().map_err(|e| e.to_string())?;
        Ok(SequenceTable {
            starts: Buffer::from_slice(c"starts", &starts),
            rows: Buffer::from_slice(c"rows", &rows),
            valid: Buffer::from_slice(c"valid", &valid),
        })
    }

    fn dims(&self) -> Result<(i32, i32, i32), String> {
        let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} exceeds the kernels' int"));
        if !KERNEL_HEAD_DIMS.contains(&self.d) {
            return Err(format!("head dim {} (the kernels are built for {KERNEL_HEAD_DIMS:?})", self.d));
        }
        Ok((int(self.seqs.total())?, int(self.h)?, int(self.h_kv)?))
    }

    fn check(&self, what: &str, buffer_len: usize, heads: usize) -> Result<(), String> {
        let want = self.seqs.total() * heads * self.d;
        match buffer_len == want {
            true => Ok(()),
            false => Err(format!("{what} holds {buffer_len} elements, expected {want}")),
        }
    }
}

/// `(o [total, h, d], lse [h, total])`, outputs poisoned before the launch.
pub fn forward(p: &Problem, q: &Buffer<bf16>, k: &Buffer<bf16>, v: &Buffer<bf16>, schedule: Schedule) -> Result<(Buffer<bf16>, Buffer<f32>), String> {
    let (total, h, h_kv) = p.dims()?;
    p.check("q", q.len(), p.h)?;
    p.check("k", k.len(), p.h_kv)?;
    p.check("v", v.len(), p.h_kv)?;
    let t = p.table()?;
    let o = Buffer::filled(c"o", q.len(), bf16::POISON);
    let lse = Buffer::filled(c"lse", p.seqs.total() * p.h, f32::POISON);
    let kernel: Forward = if p.d == 64 { flash_fwd_d64_bf16 } else { flash_fwd_d128_bf16 };
    let shape = tile_launch(TileKernel::Forward, p.d, p.seqs, p.h).map_err(|e| e.to_string())?;
    launch(&shape, schedule, || {
        // SAFETY: flash_fwd's C signature; buffers sized as `check` verified.
        unsafe { kernel(q.ptr(), k.ptr(), v.ptr(), o.ptr(), lse.ptr(), t.starts.ptr(), t.rows.ptr(), t.valid.ptr(), total, h, h_kv, p.scale) }
    })
    .map_err(|e| format!("flash_fwd_d{}: {e}", p.d))?;
    Ok((o, lse))
}

/// What the forward kept and the output's gradient.
pub struct Saved<'a> {
    pub o: &'a Buffer<bf16>,
    pub lse: &'a Buffer<f32>,
    pub dout: &'a Buffer<bf16>,
}

/// The gradients of q, k and v.
pub struct Gradients {
    pub dq: Buffer<bf16>,
    pub dk: Buffer<bf16>,
    pub dv: Buffer<bf16>,
}

/// Delta, then dK/dV, then dQ, as the CUDA launcher runs them; outputs poisoned.
pub fn backward(
    p: &Problem,
    q: &Buffer<bf16>,
    k: &Buffer<bf16>,
    v: &Buffer<bf16>,
    saved: &Saved,
    schedule: Schedule,
) -> Result<Gradients, String> {
    let (total, h, h_kv) = p.dims()?;
    p.check("q", q.len(), p.h)?;
    p.check("k", k.len(), p.h_kv)?;
    p.check("v", v.len(), p.h_kv)?;
    p.check("o", saved.o.len(), p.h)?;
    p.check("dO", saved.dout.len(), p.h)?;
    let t = p.table()?;
    let (o, dout, lse) = (saved.o, saved.dout, saved.lse);
    let delta = Buffer::filled(c"delta", p.seqs.total() * p.h, f32::POISON);
    let dq = Buffer::filled(c"dq", q.len(), bf16::POISON);
    let dk = Buffer::filled(c"dk", k.len(), bf16::POISON);
    let dv = Buffer::filled(c"dv", v.len(), bf16::POISON);
    let d64 = p.d == 64;

    let kernel: Delta = if d64 { flash_bwd_delta_d64_bf16 } else { flash_bwd_delta_d128_bf16 };
    launch(&delta_launch(p.seqs.total(), p.h), schedule, || {
        // SAFETY: flash_bwd_delta's C signature; o, dO and delta hold total·h rows.
        unsafe { kernel(o.ptr(), dout.ptr(), delta.ptr(), total, h) }
    })
    .map_err(|e| format!("flash_bwd_delta_d{}: {e}", p.d))?;

    let kernel: DkDv = if d64 { flash_bwd_dkdv_d64_bf16 } else { flash_bwd_dkdv_d128_bf16 };
    let shape = tile_launch(TileKernel::BackwardDkDv, p.d, p.seqs, p.h_kv).map_err(|e| e.to_string())?;
    launch(&shape, schedule, || {
        // SAFETY: flash_bwd_dkdv's C signature; buffers sized as checked above.
        unsafe {
            kernel(q.ptr(), k.ptr(), v.ptr(), dout.ptr(), lse.ptr(), delta.ptr(), dk.ptr(), dv.ptr(), t.starts.ptr(), t.rows.ptr(), t.valid.ptr(), total, h, h_kv, p.scale)
        }
    })
    .map_err(|e| format!("flash_bwd_dkdv_d{}: {e}", p.d))?;

    let kernel: Dq = if d64 { flash_bwd_dq_d64_bf16 } else { flash_bwd_dq_d128_bf16 };
    let shape = tile_launch(TileKernel::BackwardDq, p.d, p.seqs, p.h).map_err(|e| e.to_string())?;
    launch(&shape, schedule, || {
        // SAFETY: flash_bwd_dq's C signature; buffers sized as checked above.
        unsafe { kernel(q.ptr(), k.ptr(), v.ptr(), dout.ptr(), lse.ptr(), delta.ptr(), dq.ptr(), t.starts.ptr(), t.rows.ptr(), t.valid.ptr(), total, h, h_kv, p.scale) }
    })
    .map_err(|e| format!("flash_bwd_dq_d{}: {e}", p.d))?;
    Ok(Gradients { dq, dk, dv })
}

#[cfg(test)]
mod tests {
    use forge_kernels::signatures::{self as sig, instantiate};

    use super::*;
    use crate::declarations::declared;

    #[test]
    fn the_declarations_are_the_kernels_signatures() {
        let want = |signature| instantiate(signature, "bf16");
        for forward in [flash_fwd_d64_bf16 as Forward, flash_fwd_d128_bf16] {
            assert_eq!(declared(&forward), want(sig::FLASH_FWD), "flash_fwd");
        }
        for delta in [flash_bwd_delta_d64_bf16 as Delta, flash_bwd_delta_d128_bf16] {
            assert_eq!(declared(&delta), want(sig::FLASH_BWD_DELTA), "flash_bwd_delta");
        }
        for dkdv in [flash_bwd_dkdv_d64_bf16 as DkDv, flash_bwd_dkdv_d128_bf16] {
            assert_eq!(declared(&dkdv), want(sig::FLASH_BWD_DKDV), "flash_bwd_dkdv");
        }
        for dq in [flash_bwd_dq_d64_bf16 as Dq, flash_bwd_dq_d128_bf16] {
            assert_eq!(declared(&dq), want(sig::FLASH_BWD_DQ), "flash_bwd_dq");
        }
    }
}
