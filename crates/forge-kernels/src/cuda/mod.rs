//! Shared helpers of the CUDA kernels (`kernels/*.cu`, compiled to PTX by build.rs): the PTX
//! modules, typed views of op inputs, and launches. Each op's launch code lives beside its peers
//! here (`cuda/rms_norm.rs`, ...); the CustomOps call it from their `cuda_fwd`.

pub(crate) mod cross_entropy;
pub(crate) mod decode_attn;
pub(crate) mod flash_attn;
pub(crate) mod kernels;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod swiglu;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage as _;
use candle_core::cuda_backend::cudarc::driver::{result, CudaFunction, CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::{kernel_name, CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Storage, Tensor, WithDType};

use crate::launch::LaunchShape;
use crate::signatures::{self, Param, Pointee};
use kernels::Kernel;

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// One `.cu` file's PTX, loaded once per device under `name`.
pub(crate) struct Module {
    name: &'static str,
    ptx: &'static str,
}

const ADAMW: Module = Module { name: "forge-adamw", ptx: ptx::ADAMW };
const CROSS_ENTROPY: Module = Module { name: "forge-cross-entropy", ptx: ptx::CROSS_ENTROPY };
const DECODE_ATTN: Module = Module { name: "forge-decode-attn", ptx: ptx::DECODE_ATTN };
const FLASH_ATTN: Module = Module { name: "forge-flash-attn", ptx: ptx::FLASH_ATTN };
const RMS_NORM: Module = Module { name: "forge-rms-norm", ptx: ptx::RMS_NORM };
const ROPE: Module = Module { name: "forge-rope", ptx: ptx::ROPE };
const SWIGLU: Module = Module { name: "forge-swiglu", ptx: ptx::SWIGLU };

/// A storage element the kernels read and write (f32, bf16, f16).
pub(crate) trait CudaElem: CudaDType + DeviceRepr + WithDType + Pointee {}
impl<T: CudaDType + DeviceRepr + WithDType + Pointee> CudaElem for T {}

/// A launch argument as the kernel parameter it fills.
pub(crate) trait KernelArg {
    fn param(&self) -> Param;
}

impl<X: Pointee> KernelArg for CudaSlice<X> {
    fn param(&self) -> Param {
        Param::Ptr(X::NAME)
    }
}

impl<X: Pointee> KernelArg for CudaView<'_, X> {
    fn param(&self) -> Param {
        Param::Ptr(X::NAME)
    }
}

impl KernelArg for i32 {
    fn param(&self) -> Param {
        Param::Int
    }
}

impl KernelArg for f32 {
    fn param(&self) -> Param {
        Param::Float
    }
}

/// Fails, naming the kernel and both lists, where a launch's arguments are not its C signature
/// (`crate::signatures`) for dtype `T`: the launch would read them as garbage.
pub(crate) fn check_arguments<T: Pointee + WithDType>(kernel: &Kernel, arguments: &[Param]) -> Result<()> {
    let signature = signatures::instantiate(kernel.signature, T::NAME);
    if arguments != signature.as_slice() {
        bail!("{}: launched with {arguments:?}, its C signature takes {signature:?}", kernel_name::<T>(&kernel.root));
    }
    Ok(())
}

/// The contiguous, correctly typed device view behind an op input.
pub(crate) fn view<'a, T: CudaElem>(storage: &'a CudaStorage, layout: &Layout, op: &str, what: &str) -> Result<CudaView<'a, T>> {
    let Ok(slice) = storage.as_cuda_slice::<T>() else {
        bail!("{op}: {what} has dtype {:?}, expected {:?}", storage.dtype(), T::DTYPE)
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{op}: {what} must be contiguous (call .contiguous() first)"),
    }
}

/// The device address of a contiguous tensor of `T` on `dev`'s first element, for kernels that
/// take it through a pointer table (and may write through it: the caller owns the tensor alone).
pub(crate) fn device_address<T: CudaElem>(dev: &CudaDevice, t: &Tensor, op: &str, what: &str) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else { bail!("{op}: {what} is not on the GPU") };
    if !layout.is_contiguous() {
        bail!("{op}: {what} of shape {:?} is not contiguous", layout.dims());
    }
    let Ok(slice) = cs.as_cuda_slice::<T>() else { bail!("{op}: {what} has dtype {:?}, expected {:?}", cs.dtype(), T::DTYPE) };
    let stream = dev.cuda_stream();
    let (base, _sync) = slice.device_ptr(&stream);
    Ok(base + (layout.start_offset() * std::mem::size_of::<T>()) as u64)
}

static POISON_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// Fill every output buffer of the CUDA kernels with NaN (all bits set) before the kernel runs,
/// so an element a kernel fails to write shows up in the parity tests. Off by default (it costs a
/// memset per output).
pub fn poison_outputs(on: bool) {
    POISON_OUTPUTS.store(on, Ordering::Relaxed);
}

/// An output buffer of `len` elements, for a kernel that writes every one of them.
pub(crate) fn alloc_output<T: CudaElem>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: uninitialised device memory is only handed to kernels that write all of it (the
    // poisoned parity tests check that).
    let mut out = unsafe { dev.alloc::<T>(len)? };
    if POISON_OUTPUTS.load(Ordering::Relaxed) {
        let stream = dev.cuda_stream();
        let (ptr, _sync) = out.device_ptr_mut(&stream);
        // SAFETY: `ptr` is a live allocation of exactly len·size_of::<T>() bytes on this stream.
        unsafe { result::memset_d8_async(ptr, 0xFF, len * std::mem::size_of::<T>(), stream.cu_stream()) }.w()?;
    }
    Ok(out)
}

/// `<root>_<dtype of T>` of `kernel` (its module loaded once per device).
pub(crate) fn load<T: WithDType>(dev: &CudaDevice, kernel: &Kernel) -> Result<CudaFunction> {
    Ok(dev.get_or_load_custom_func(&kernel_name::<T>(&kernel.root), kernel.module.name, kernel.module.ptx)?.clone())
}

/// `launch!(T, device, kernel, config, args...)` launches `kernel` (one of [`kernels`]) for dtype
/// `T` on the device's stream with the given arguments (places, pushed by reference, in the order
/// of the kernel's C signature, which [`check_arguments`] holds them against first).
macro_rules! launch {
    ($t:ty, $dev:expr, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg as _;
        use candle_core::cuda_backend::WrapErr as _;
        let kernel = &$kernel;
        $crate::cuda::check_arguments::<$t>(kernel, &[$($crate::cuda::KernelArg::param(&$arg)),+])?;
        let func = $crate::cuda::load::<$t>($dev, kernel)?;
        let stream = $dev.cuda_stream();
        let mut args = stream.launch_builder(&func);
        $( args.arg(&$arg); )+
        // SAFETY: the arguments are the kernel's C signature (checked above against the list the
        // PTX is checked against), with device buffers at least as long as the sizes passed.
        unsafe { args.launch(candle_core::cuda_backend::cudarc::driver::LaunchConfig::from($cfg)) }.w().map(|_| ())
    }};
}
pub(crate) use launch;

impl From<LaunchShape> for LaunchConfig {
    fn from(shape: LaunchShape) -> Self {
        let [gx, gy, gz] = shape.grid;
        let [bx, by, bz] = shape.block;
        LaunchConfig { grid_dim: (gx, gy, gz), block_dim: (bx, by, bz), shared_mem_bytes: shape.shared_bytes }
    }
}

/// Kernel arguments are C `int`s: reject sizes that do not fit rather than wrap.
pub(crate) fn as_i32(v: usize, op: &str, what: &str) -> Result<i32> {
    i32::try_from(v).or_else(|_| bail!("{op}: {what} = {v} exceeds the kernels' 32-bit index range"))
}
