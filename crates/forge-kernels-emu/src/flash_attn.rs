//! kernels/flash_attn.cu under emulation, launched by forge-kernels' own launch code
//! (`forge_kernels::launch::flash_attn`, the code a GPU runs) on the [`Emulator`] backend.

use candle_core::Layout;
use half::bf16;

use forge_kernels::flash_attn::Sequences;
use forge_kernels::launch::flash_attn as launch;

use crate::{Buffer, Emulator, Schedule, Storage};

/// Shapes of one attention problem: `q: [total, h, d]`, `k, v: [total, h_kv, d]` (bf16).
pub struct Problem<'a> {
    pub seqs: &'a Sequences,
    pub h: usize,
    pub h_kv: usize,
    pub d: usize,
    pub scale: f32,
}

impl Problem<'_> {
    /// `[total, heads, d]`, checked to be what `buffer` holds.
    fn layout(&self, what: &str, buffer: &Buffer<bf16>, heads: usize) -> Result<Layout, String> {
        let want = self.seqs.total() * heads * self.d;
        match buffer.len() == want {
            true => Ok(Layout::contiguous((self.seqs.total(), heads, self.d))),
            false => Err(format!("{what} holds {} elements, expected {want}", buffer.len())),
        }
    }
}

/// A storage holding a copy of `buffer` (named `name` in an access fault).
fn copy<T: Copy + 'static>(name: &'static std::ffi::CStr, buffer: &Buffer<T>) -> Storage {
    Storage::from_slice(name, &buffer.to_vec())
}

/// `(o [total, h, d], lse [h, total])`, outputs poisoned before the launch.
pub fn forward(p: &Problem, q: &Buffer<bf16>, k: &Buffer<bf16>, v: &Buffer<bf16>, schedule: Schedule) -> Result<(Buffer<bf16>, Buffer<f32>), String> {
    let (ql, kl, vl) = (p.layout("q", q, p.h)?, p.layout("k", k, p.h_kv)?, p.layout("v", v, p.h_kv)?);
    let (qs, ks, vs) = (copy(c"q", q), copy(c"k", k), copy(c"v", v));
    let (o, lse) = launch::forward(&Emulator::new(schedule), p.seqs, p.scale, &qs, &ql, &ks, &kl, &vs, &vl).map_err(|e| e.to_string())?;
    Ok((o.into_buffer()?, lse.into_buffer()?))
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

/// Delta, then dK/dV, then dQ, as the CUDA op runs them (one output buffer `[dq.., dk.., dv..]`,
/// poisoned), split here.
pub fn backward(p: &Problem, q: &Buffer<bf16>, k: &Buffer<bf16>, v: &Buffer<bf16>, saved: &Saved, schedule: Schedule) -> Result<Gradients, String> {
    let (ql, kl, vl) = (p.layout("q", q, p.h)?, p.layout("k", k, p.h_kv)?, p.layout("v", v, p.h_kv)?);
    let (ol, dl) = (p.layout("o", saved.o, p.h)?, p.layout("dO", saved.dout, p.h)?);
    let ll = Layout::contiguous((p.h, p.seqs.total()));
    if saved.lse.len() != ll.shape().elem_count() {
        return Err(format!("lse holds {} elements, expected {}", saved.lse.len(), ll.shape().elem_count()));
    }
    let (qs, ks, vs) = (copy(c"q", q), copy(c"k", k), copy(c"v", v));
    let (os, ds, ls) = (copy(c"o", saved.o), copy(c"dO", saved.dout), copy(c"lse", saved.lse));
    let kept = launch::Saved { o: (&os, &ol), dout: (&ds, &dl), lse: (&ls, &ll) };
    let flat = launch::backward(&Emulator::new(schedule), p.seqs, p.scale, &qs, &ql, &ks, &kl, &vs, &vl, kept).map_err(|e| e.to_string())?;
    let mut dq = flat.to_vec::<bf16>()?;
    let mut dk = dq.split_off(q.len());
    let dv = dk.split_off(k.len());
    Ok(Gradients { dq: Buffer::from_slice(c"dq", &dq), dk: Buffer::from_slice(c"dk", &dk), dv: Buffer::from_slice(c"dv", &dv) })
}
