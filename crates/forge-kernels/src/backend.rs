//! Where the CUDA kernels run: a [`Backend`] allocates device memory, views op inputs and launches
//! one kernel entry point with its arguments. The launch code (`src/launch/*.rs`: sizes, launch
//! shapes, argument lists, output buffers) is written once over this trait; with the `cuda`
//! feature candle's `CudaDevice` implements it (`src/cuda`), and the host emulator
//! (crates/forge-kernels-emu) implements it too, so CI runs the very launch code a GPU runs.

use candle_core::{bail, Layout, Result, WithDType};

use crate::kernels::{Entry, Pointee};
use crate::launch::LaunchShape;

/// A value device memory holds (elements, `int` tables, address tables, AdamW's tensor table).
#[cfg(feature = "cuda")]
pub trait DeviceValue: candle_core::cuda_backend::cudarc::driver::DeviceRepr + Pointee + Copy + 'static {}
#[cfg(feature = "cuda")]
impl<T: candle_core::cuda_backend::cudarc::driver::DeviceRepr + Pointee + Copy + 'static> DeviceValue for T {}
/// A value device memory holds (elements, `int` tables, address tables, AdamW's tensor table).
#[cfg(not(feature = "cuda"))]
pub trait DeviceValue: Pointee + Copy + 'static {}
#[cfg(not(feature = "cuda"))]
impl<T: Pointee + Copy + 'static> DeviceValue for T {}

/// The element type of a tensor's storage (f32, bf16, f16; u32 targets).
#[cfg(feature = "cuda")]
pub trait Elem: DeviceValue + WithDType + candle_core::cuda_backend::CudaDType {}
#[cfg(feature = "cuda")]
impl<T: DeviceValue + WithDType + candle_core::cuda_backend::CudaDType> Elem for T {}
/// The element type of a tensor's storage (f32, bf16, f16; u32 targets).
#[cfg(not(feature = "cuda"))]
pub trait Elem: DeviceValue + WithDType {}
#[cfg(not(feature = "cuda"))]
impl<T: DeviceValue + WithDType> Elem for T {}

/// One launch argument, as the kernel's C parameter receives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device pointer.
    Address(u64),
    Int(i32),
    Float(f32),
}

/// Device memory of `T` that a kernel can be passed.
pub trait Memory<B: Backend, T> {
    /// Its address, and what keeps the backend's bookkeeping of the access until the launch has
    /// been issued (CUDA: the stream waits for earlier writes, and records the read after).
    fn address<'a>(&'a self, backend: &'a B) -> (u64, B::Guard<'a>);
}

/// A device the kernels run on.
pub trait Backend: Sized {
    /// A tensor's storage on the device (dtype-erased, as candle's `CudaStorage`).
    type Storage;
    /// Device memory of `T` owned by the launch code.
    type Buffer<T: DeviceValue>: Memory<Self, T>;
    /// Borrowed contiguous device memory of `T`.
    type View<'a, T: DeviceValue>: Memory<Self, T>
    where
        Self: 'a;
    /// Held from an argument's [`Memory::address`] until its launch is issued.
    type Guard<'a>
    where
        Self: 'a;

    /// The contiguous, correctly typed device memory behind an op input.
    fn view<'a, T: Elem>(&self, storage: &'a Self::Storage, layout: &Layout, op: &str, what: &str) -> Result<Self::View<'a, T>>;
    /// Elements `start..start + len` of a buffer.
    fn slice<'a, T: DeviceValue>(&self, buffer: &'a Self::Buffer<T>, start: usize, len: usize) -> Self::View<'a, T>;
    /// An output buffer of `len` elements, for kernels that write every one of them (the
    /// emulator, and the GPU under `poison_outputs`, fill it with all bits set: NaN).
    fn alloc<T: DeviceValue>(&self, len: usize) -> Result<Self::Buffer<T>>;
    /// A copy of host data (sequence tables, address tables).
    fn upload<T: DeviceValue>(&self, data: &[T]) -> Result<Self::Buffer<T>>;
    /// An op's output buffer as tensor storage.
    fn wrap<T: Elem>(&self, buffer: Self::Buffer<T>) -> Self::Storage;
    /// Lets `entry` use `bytes` of dynamic shared memory (beyond the 48 KiB a launch gets unasked).
    fn allow_shared(&self, entry: &Entry<'_>, bytes: u32) -> Result<()>;
    /// Runs `entry` as a grid of `shape` with `args` (the kernel's C parameters, in order: the
    /// launch functions of `crate::kernels` build them from the kernel table).
    fn launch(&self, entry: &Entry<'_>, shape: &LaunchShape, args: &[Arg]) -> Result<()>;
}

/// Kernel arguments are C `int`s: reject sizes that do not fit rather than wrap.
pub fn as_i32(v: usize, op: &str, what: &str) -> Result<i32> {
    i32::try_from(v).or_else(|_| bail!("{op}: {what} = {v} exceeds the kernels' 32-bit index range"))
}
