//! Every CUDA kernel of `kernels/*.cu`, declared once: [`kernel_table!`] lists each kernel's name,
//! its variants (template instances such as `_d64_g2`), the storage types it is built for and its
//! C parameters. Everything that must agree with the `.cu` signature is derived from that list:
//!
//! - the typed launch function of each kernel (below, one `pub fn` per kernel, generic over the
//!   [`Backend`] it runs on: a GPU or the host emulator), which the launch code (`src/launch`)
//!   calls; a wrong argument there is a compile error;
//! - [`DECLARATIONS`], which the CUDA build's kernel check (`src/cuda/kernels.rs`, CI) holds against
//!   each PTX entry's `.param` list, and which names every entry a launch may load;
//! - the host emulator's `extern "C"` bindings (crates/forge-kernels-emu/src/bindings.rs expands
//!   the same table).
//!
//! Changing a kernel's parameters: change the `.cu` file and its line in the table, then the
//! compiler points at every launch to update.

use candle_core::{bail, Result};

use crate::backend::{Arg, Backend, Memory};
use crate::launch::LaunchShape;

/// The kernel table: `$callback! { module MODULE_CONST "loaded name" { kernel [variants] [dtypes] (params); ... } ... }`.
///
/// A kernel's entry points are `<kernel>_<variant>_<dtype>` for each variant (or `<kernel>_<dtype>`
/// without variants) and each dtype. Parameter kinds: `Elems` (a pointer to the dtype's elements),
/// `F32s`, `I32s`, `U32s` (pointers to those), `Addresses` (a table of device addresses, `T* const*`),
/// `AdamWTensors` (`adamw::Tensor*`), `Int` (C `int`), `Float` (C `float`).
#[macro_export]
macro_rules! kernel_table {
    ($callback:ident) => {
        $callback! {
            adamw ADAMW "forge-adamw" {
                adamw [] [f32 bf16 f16] (tensors: AdamWTensors, count: Int);
            }
            cross_entropy CROSS_ENTROPY "forge-cross-entropy" {
                cross_entropy_fwd [] [f32 bf16 f16] (logits: Elems, targets: U32s, nll: F32s, rows: Int, vocab: Int);
                cross_entropy_grad [] [f32 bf16 f16] (logits: Elems, targets: U32s, dnll: F32s, dlogits: Elems, rows: Int, vocab: Int);
            }
            decode_attn DECODE_ATTN "forge-decode-attn" {
                kv_append [] [f32 bf16 f16] (k: Elems, v: Elems, keys: Addresses, values: Addresses, sequences: I32s, positions: I32s, capacities: I32s, n: Int, h_kv: Int, d: Int);
                decode_attn_split [d64_g2 d64_g4 d64_g8 d128_g2 d128_g4 d128_g8] [f32 bf16 f16]
                    (q: Elems, keys: Addresses, values: Addresses, slots: I32s, sequences: I32s, positions: I32s, capacities: I32s, partial_o: F32s, partial_ml: F32s, h: Int, h_kv: Int, splits: Int, scale: Float);
                decode_attn_combine [d64 d128] [f32 bf16 f16] (partial_o: F32s, partial_ml: F32s, slots: I32s, o: Elems, h: Int, splits: Int);
            }
            flash_attn FLASH_ATTN "forge-flash-attn" {
                flash_fwd [d64 d128] [bf16]
                    (q: Elems, k: Elems, v: Elems, o: Elems, lse: F32s, starts: I32s, rows: I32s, valid: I32s, total: Int, h: Int, h_kv: Int, scale: Float);
                flash_bwd_delta [d64 d128] [bf16] (o: Elems, dout: Elems, delta: F32s, total: Int, h: Int);
                flash_bwd_dkdv [d64 d128] [bf16]
                    (q: Elems, k: Elems, v: Elems, dout: Elems, lse: F32s, delta: F32s, dk: Elems, dv: Elems, starts: I32s, rows: I32s, valid: I32s, total: Int, h: Int, h_kv: Int, scale: Float);
                flash_bwd_dq [d64 d128] [bf16]
                    (q: Elems, k: Elems, v: Elems, dout: Elems, lse: F32s, delta: F32s, dq: Elems, starts: I32s, rows: I32s, valid: I32s, total: Int, h: Int, h_kv: Int, scale: Float);
                flash_fwd_cached [d64 d128] [bf16]
                    (q: Elems, keys: Addresses, values: Addresses, capacities: I32s, tiles: I32s, o: Elems, h: Int, h_kv: Int, scale: Float);
            }
            rms_norm RMS_NORM "forge-rms-norm" {
                rms_norm_fwd [] [f32 bf16 f16] (x: Elems, w: Elems, y: Elems, rows: Int, n: Int, eps: Float);
                rms_norm_grad_input [] [f32 bf16 f16] (x: Elems, w: Elems, dy: Elems, dx: Elems, rows: Int, n: Int, eps: Float);
                rms_norm_inv_rms [] [f32 bf16 f16] (x: Elems, inv: F32s, rows: Int, n: Int, eps: Float);
                rms_norm_grad_weight_partial [] [f32 bf16 f16] (x: Elems, dy: Elems, inv: F32s, partial: F32s, rows: Int, n: Int, chunk: Int);
                rms_norm_grad_weight_finish [] [f32 bf16 f16] (partial: F32s, dw: Elems, chunks: Int, n: Int);
            }
            rope ROPE "forge-rope" {
                rope [] [f32 bf16 f16] (x: Elems, cos: F32s, sin: F32s, y: Elems, b: Int, s: Int, h: Int, d: Int, cos_batch: Int, sign: Float);
            }
            swiglu SWIGLU "forge-swiglu" {
                swiglu_fwd [] [f32 bf16 f16] (g: Elems, u: Elems, y: Elems, n: Int);
                swiglu_grad [] [f32 bf16 f16] (g: Elems, u: Elems, dy: Elems, grads: Elems, n: Int);
            }
        }
    };
}

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

/// A type kernels take pointers to, by the name [`Param::Ptr`] gives it (and the dtype suffix of
/// a kernel's entry point: `rms_norm_fwd_bf16`).
pub trait Pointee {
    const NAME: &'static str;
}

macro_rules! pointees {
    ($($t:ty => $name:literal),+) => { $(impl Pointee for $t { const NAME: &'static str = $name; })+ };
}
pointees!(f32 => "f32", half::bf16 => "bf16", half::f16 => "f16", i32 => "i32", u32 => "u32", u64 => "u64", crate::adamw::AdamWTensor => "AdamWTensor");

/// A PTX `.param` type (`.u64`, `.u32`, `.f32`, ...) as the parameter it can carry: every
/// pointer is a 64-bit address, so PTX tells pointers from `int` and `float`, not one pointee
/// from another.
pub fn ptx_carries(ptx_type: &str, param: Param) -> bool {
    match param {
        Param::Elems | Param::Ptr(_) => ptx_type == ".u64" || ptx_type == ".b64",
        Param::Int => matches!(ptx_type, ".u32" | ".s32" | ".b32"),
        Param::Float => ptx_type == ".f32",
    }
}

/// One `.cu` file: the name its PTX is loaded under once per device (and, with the `cuda`
/// feature, the PTX build.rs compiled).
#[derive(Debug)]
pub struct Module {
    /// The file's stem (`rms_norm` for kernels/rms_norm.cu).
    pub file: &'static str,
    pub name: &'static str,
    #[cfg(feature = "cuda")]
    pub ptx: &'static str,
}

/// One kernel of the table: every entry point `<kernel>[_<variant>]_<dtype>` takes `params`.
#[derive(Debug)]
pub struct Declaration {
    pub kernel: &'static str,
    pub module: &'static Module,
    pub variants: &'static [&'static str],
    pub dtypes: &'static [&'static str],
    pub params: &'static [Param],
}

impl Declaration {
    /// The entry point of `variant` ("" for a kernel without variants) for `dtype`.
    pub fn entry_name(&self, variant: &str, dtype: &str) -> String {
        if variant.is_empty() {
            format!("{}_{dtype}", self.kernel)
        } else {
            format!("{}_{variant}_{dtype}", self.kernel)
        }
    }

    /// Every entry point the `.cu` file must define.
    pub fn entry_names(&self) -> Vec<String> {
        let variants: &[&str] = if self.variants.is_empty() { &[""] } else { self.variants };
        variants.iter().flat_map(|v| self.dtypes.iter().map(move |t| self.entry_name(v, t))).collect()
    }

    /// The named kernel of the table.
    pub fn of(kernel: &str) -> &'static Declaration {
        DECLARATIONS.iter().find(|d| d.kernel == kernel).expect("every launch function is declared in the table")
    }
}

/// One entry point of one module, as a backend loads it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub module: &'static Module,
    pub name: &'a str,
}

/// The [`Entry`] of `kernel`'s `variant` for dtype `dtype`, refused unless the table declares it.
pub fn entry(kernel: &'static Declaration, variant: &str, dtype: &'static str) -> Result<(&'static Module, String)> {
    let declared_variant = if kernel.variants.is_empty() { variant.is_empty() } else { kernel.variants.contains(&variant) };
    if !declared_variant || !kernel.dtypes.contains(&dtype) {
        bail!("{}: no such entry point (kernel_table! builds variants {:?} for {:?})", kernel.entry_name(variant, dtype), kernel.variants, kernel.dtypes);
    }
    Ok((kernel.module, kernel.entry_name(variant, dtype)))
}

/// The Rust type of a launch function's argument for a parameter kind.
macro_rules! argument_type {
    (Elems, $b:ident, $t:ident) => { &dyn Memory<$b, $t> };
    (F32s, $b:ident, $t:ident) => { &dyn Memory<$b, f32> };
    (I32s, $b:ident, $t:ident) => { &dyn Memory<$b, i32> };
    (U32s, $b:ident, $t:ident) => { &dyn Memory<$b, u32> };
    (Addresses, $b:ident, $t:ident) => { &dyn Memory<$b, u64> };
    (AdamWTensors, $b:ident, $t:ident) => { &dyn Memory<$b, $crate::adamw::AdamWTensor> };
    (Int, $b:ident, $t:ident) => { i32 };
    (Float, $b:ident, $t:ident) => { f32 };
}

/// The [`Param`] of a parameter kind.
macro_rules! param {
    (Elems) => { Param::Elems };
    (F32s) => { Param::Ptr("f32") };
    (I32s) => { Param::Ptr("i32") };
    (U32s) => { Param::Ptr("u32") };
    (Addresses) => { Param::Ptr("u64") };
    (AdamWTensors) => { Param::Ptr("AdamWTensor") };
    (Int) => { Param::Int };
    (Float) => { Param::Float };
}

/// An argument as the backend passes it, and what holds its memory for the launch.
macro_rules! argument {
    (Int, $b:ident, $v:ident) => { (Arg::Int($v), None) };
    (Float, $b:ident, $v:ident) => { (Arg::Float($v), None) };
    ($pointer:ident, $b:ident, $v:ident) => {{
        let (address, guard) = $v.address($b);
        (Arg::Address(address), Some(guard))
    }};
}

/// The launch function of one kernel: with variants, it takes the variant's name.
macro_rules! launch_function {
    ($kernel:ident [] ($($p:ident : $kind:ident),*)) => {
        #[doc = concat!("Launches `", stringify!($kernel), "_<dtype of T>` (its parameters: [`kernel_table!`]).")]
        #[allow(clippy::too_many_arguments)]
        pub fn $kernel<B: Backend, T: Pointee>(backend: &B, shape: &LaunchShape, $($p: argument_type!($kind, B, T)),*) -> Result<()> {
            let (module, name) = entry(Declaration::of(stringify!($kernel)), "", T::NAME)?;
            let held = [$(argument!($kind, backend, $p)),*];
            let args: Vec<Arg> = held.iter().map(|(arg, _)| *arg).collect();
            let launched = backend.launch(&Entry { module, name: &name }, shape, &args);
            drop(held);
            launched
        }
    };
    ($kernel:ident [$($variant:ident)+] ($($p:ident : $kind:ident),*)) => {
        #[doc = concat!("Launches `", stringify!($kernel), "_<variant>_<dtype of T>`, variants ", $("`", stringify!($variant), "` ",)+ "(its parameters: [`kernel_table!`]).")]
        #[allow(clippy::too_many_arguments)]
        pub fn $kernel<B: Backend, T: Pointee>(backend: &B, variant: &str, shape: &LaunchShape, $($p: argument_type!($kind, B, T)),*) -> Result<()> {
            let (module, name) = entry(Declaration::of(stringify!($kernel)), variant, T::NAME)?;
            let held = [$(argument!($kind, backend, $p)),*];
            let args: Vec<Arg> = held.iter().map(|(arg, _)| *arg).collect();
            let launched = backend.launch(&Entry { module, name: &name }, shape, &args);
            drop(held);
            launched
        }
    };
}

/// forge-kernels' expansion of the table: the modules, [`DECLARATIONS`] and the launch functions.
macro_rules! declare_kernels {
    ($($file:ident $module:ident $name:literal { $($kernel:ident [$($variant:ident)*] [$($t:ident)+] ($($p:ident : $kind:ident),* $(,)?);)+ })+) => {
        $(
            #[doc = concat!("kernels/", stringify!($file), ".cu")]
            pub static $module: Module = Module {
                file: stringify!($file),
                name: $name,
                #[cfg(feature = "cuda")]
                ptx: crate::cuda::ptx::$module,
            };
        )+
        /// Every kernel of `kernels/*.cu`.
        pub static DECLARATIONS: &[Declaration] = &[$($(Declaration {
            kernel: stringify!($kernel),
            module: &$module,
            variants: &[$(stringify!($variant)),*],
            dtypes: &[$(stringify!($t)),+],
            params: &[$(param!($kind)),*],
        },)+)+];
        $($(launch_function!($kernel [$($variant)*] ($($p : $kind),*));)+)+
    };
}

kernel_table!(declare_kernels);

#[cfg(test)]
mod tests {
    use super::*;
    use Param::{Float, Int, Ptr};

    #[test]
    fn elems_become_the_instantiated_type() {
        assert_eq!(instantiate(Declaration::of("rms_norm_inv_rms").params, "bf16"), [Ptr("bf16"), Ptr("f32"), Int, Int, Float]);
    }

    #[test]
    fn ptx_tells_pointers_ints_and_floats_apart() {
        assert!(ptx_carries(".u64", Param::Elems) && ptx_carries(".u64", Ptr("i32")));
        assert!(ptx_carries(".u32", Int) && ptx_carries(".s32", Int));
        assert!(ptx_carries(".f32", Float));
        assert!(!ptx_carries(".u32", Float) && !ptx_carries(".f32", Int) && !ptx_carries(".u32", Param::Elems) && !ptx_carries(".u64", Int));
    }

    #[test]
    fn entry_names_cover_every_variant_and_dtype() {
        assert_eq!(Declaration::of("rope").entry_names(), ["rope_f32", "rope_bf16", "rope_f16"]);
        let split = Declaration::of("decode_attn_split").entry_names();
        assert_eq!(split.len(), 18);
        assert_eq!((split[0].as_str(), split[17].as_str()), ("decode_attn_split_d64_g2_f32", "decode_attn_split_d128_g8_f16"));
        assert_eq!(Declaration::of("flash_fwd_cached").entry_names(), ["flash_fwd_cached_d64_bf16", "flash_fwd_cached_d128_bf16"]);
        let names: Vec<String> = DECLARATIONS.iter().flat_map(Declaration::entry_names).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "an entry point declared twice");
    }

    #[test]
    fn an_undeclared_variant_or_dtype_is_refused_by_name() {
        let err = entry(Declaration::of("flash_fwd"), "d96", "bf16").unwrap_err().to_string();
        assert!(err.contains("flash_fwd_d96_bf16: no such entry point"), "{err}");
        assert!(entry(Declaration::of("flash_fwd"), "d64", "f32").is_err());
        assert!(entry(Declaration::of("rope"), "d64", "f32").is_err());
        let (module, name) = entry(Declaration::of("decode_attn_split"), "d128_g4", "f16").unwrap();
        assert_eq!((module.name, name.as_str()), ("forge-decode-attn", "decode_attn_split_d128_g4_f16"));
    }
}
