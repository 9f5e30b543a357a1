//! The C signature of every kernel in `kernels/*.cu`, as its callers pass the arguments. Three
//! callers are written apart from the `.cu` file and nothing compiles them against it: the CUDA
//! launchers (`src/cuda`), the PTX they load, and the host emulator's `extern` declarations
//! (crates/forge-kernels-emu). So each is held against these lists: the CUDA build's kernel check
//! (`src/cuda/kernels.rs`, CI) against the `.param` list of each PTX entry, the emulator's tests
//! (CI) against its declarations, and `launch!` against each launch's arguments before it launches
//! (on a GPU: a wrong argument there is a named error, not a kernel reading garbage).

/// One parameter of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `T*` (or `const T*`): elements of the dtype the kernel is instantiated for.
    Elems,
    /// A pointer to elements of a fixed type, by its Rust name: `f32`, `i32`, `u32`, `u64` (a
    /// table of device addresses, `T* const*`), `AdamWTensor`.
    Ptr(&'static str),
    /// C `int`.
    Int,
    /// C `float`.
    Float,
}

/// The parameters of a kernel instantiated for the element type named `elems`: each
/// [`Param::Elems`] becomes a pointer to that type.
pub fn instantiate(signature: &[Param], elems: &'static str) -> Vec<Param> {
    signature.iter().map(|&p| if p == Param::Elems { Param::Ptr(elems) } else { p }).collect()
}

/// A type kernels take pointers to, by the name [`Param::Ptr`] gives it.
pub trait Pointee {
    const NAME: &'static str;
}

macro_rules! pointees {
    ($($t:ty => $name:literal),+) => { $(impl Pointee for $t { const NAME: &'static str = $name; })+ };
}
pointees!(f32 => "f32", half::bf16 => "bf16", half::f16 => "f16", i32 => "i32", u32 => "u32", u64 => "u64", crate::adamw::AdamWTensor => "AdamWTensor");

/// A pointer to pointers is a table of device addresses, as the launchers build it (`u64`s).
impl<T> Pointee for *const T {
    const NAME: &'static str = "u64";
}

impl<T> Pointee for *mut T {
    const NAME: &'static str = "u64";
}

use Param::{Elems, Float, Int, Ptr};
const F32S: Param = Ptr("f32");
const INTS: Param = Ptr("i32");
const ADDRESSES: Param = Ptr("u64");

// adamw.cu
pub const ADAMW: &[Param] = &[Ptr("AdamWTensor"), Int];
// cross_entropy.cu: logits, targets, nll / dnll (and dlogits), rows, vocab
pub const CROSS_ENTROPY_FWD: &[Param] = &[Elems, Ptr("u32"), F32S, Int, Int];
pub const CROSS_ENTROPY_GRAD: &[Param] = &[Elems, Ptr("u32"), F32S, Elems, Int, Int];
// rms_norm.cu
pub const RMS_NORM_FWD: &[Param] = &[Elems, Elems, Elems, Int, Int, Float];
pub const RMS_NORM_GRAD_INPUT: &[Param] = &[Elems, Elems, Elems, Elems, Int, Int, Float];
pub const RMS_NORM_INV_RMS: &[Param] = &[Elems, F32S, Int, Int, Float];
pub const RMS_NORM_GRAD_WEIGHT_PARTIAL: &[Param] = &[Elems, Elems, F32S, F32S, Int, Int, Int];
pub const RMS_NORM_GRAD_WEIGHT_FINISH: &[Param] = &[F32S, Elems, Int, Int];
// rope.cu: x, cos, sin, y, b, s, h, d, cos_batch, sign
pub const ROPE: &[Param] = &[Elems, F32S, F32S, Elems, Int, Int, Int, Int, Int, Float];
// swiglu.cu: g, u, y / dy, grads, n
pub const SWIGLU_FWD: &[Param] = &[Elems, Elems, Elems, Int];
pub const SWIGLU_GRAD: &[Param] = &[Elems, Elems, Elems, Elems, Int];
// flash_attn.cu (bf16): ..., starts, rows, valid, total, h, h_kv, scale
pub const FLASH_FWD: &[Param] = &[Elems, Elems, Elems, Elems, F32S, INTS, INTS, INTS, Int, Int, Int, Float];
pub const FLASH_BWD_DELTA: &[Param] = &[Elems, Elems, F32S, Int, Int];
pub const FLASH_BWD_DKDV: &[Param] = &[Elems, Elems, Elems, Elems, F32S, F32S, Elems, Elems, INTS, INTS, INTS, Int, Int, Int, Float];
pub const FLASH_BWD_DQ: &[Param] = &[Elems, Elems, Elems, Elems, F32S, F32S, Elems, INTS, INTS, INTS, Int, Int, Int, Float];
// q, keys, values, capacities, tiles, o, h, h_kv, scale
pub const FLASH_FWD_CACHED: &[Param] = &[Elems, ADDRESSES, ADDRESSES, INTS, INTS, Elems, Int, Int, Float];
// decode_attn.cu
pub const KV_APPEND: &[Param] = &[Elems, Elems, ADDRESSES, ADDRESSES, INTS, INTS, INTS, Int, Int, Int];
pub const DECODE_SPLIT: &[Param] = &[Elems, ADDRESSES, ADDRESSES, INTS, INTS, INTS, INTS, F32S, F32S, Int, Int, Int, Float];
pub const DECODE_COMBINE: &[Param] = &[F32S, F32S, INTS, Elems, Int, Int];

/// A PTX `.param` type (`.u64`, `.u32`, `.f32`, ...) as the parameter it can carry: every
/// pointer is a 64-bit address, so PTX tells pointers from `int` and `float`, not one pointee
/// from another.
pub fn ptx_carries(ptx_type: &str, param: Param) -> bool {
    match param {
        Elems | Ptr(_) => ptx_type == ".u64" || ptx_type == ".b64",
        Int => matches!(ptx_type, ".u32" | ".s32" | ".b32"),
        Float => ptx_type == ".f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elems_become_the_instantiated_type() {
        assert_eq!(instantiate(RMS_NORM_INV_RMS, "bf16"), [Ptr("bf16"), Ptr("f32"), Int, Int, Float]);
    }

    #[test]
    fn ptx_tells_pointers_ints_and_floats_apart() {
        assert!(ptx_carries(".u64", Elems) && ptx_carries(".u64", Ptr("i32")));
        assert!(ptx_carries(".u32", Int) && ptx_carries(".s32", Int));
        assert!(ptx_carries(".f32", Float));
        assert!(!ptx_carries(".u32", Float) && !ptx_carries(".f32", Int) && !ptx_carries(".u32", Elems) && !ptx_carries(".u64", Int));
    }
}
