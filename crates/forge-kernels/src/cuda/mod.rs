//! The GPU [`Backend`]: candle's `CudaDevice` runs the launch code of `src/launch` on its stream,
//! loading each entry point from its module's PTX (`kernels/*.cu`, compiled by build.rs). Also the
//! GPU side of the ops whose inputs are not plain op inputs (the decode op's KV caches, AdamW's
//! tensors): their device addresses.

pub(crate) mod kernels;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::backend::BackendStorage as _;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{result, CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg as _, SyncOnDrop};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor};
use half::{bf16, f16};

use crate::backend::{Arg, Backend, DeviceValue, Elem, Memory};
use crate::decode_attn::DecodeAttention;
use crate::kernels::Entry;
use crate::launch::decode_attn::{CacheAddresses, Step};
use crate::launch::LaunchShape;

pub(crate) mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// Contiguous device memory borrowed from a tensor's storage (or a part of a buffer), with the
/// stream it lives on.
pub struct DeviceView<'a, T> {
    view: CudaView<'a, T>,
    stream: Arc<CudaStream>,
}

impl<T> Memory<CudaDevice, T> for CudaSlice<T> {
    fn address<'a>(&'a self, _: &'a CudaDevice) -> (u64, SyncOnDrop<'a>) {
        self.device_ptr(self.stream())
    }
}

impl<T> Memory<CudaDevice, T> for DeviceView<'_, T> {
    fn address<'a>(&'a self, _: &'a CudaDevice) -> (u64, SyncOnDrop<'a>) {
        self.view.device_ptr(&self.stream)
    }
}

impl Backend for CudaDevice {
    type Storage = CudaStorage;
    type Buffer<T: DeviceValue> = CudaSlice<T>;
    type View<'a, T: DeviceValue> = DeviceView<'a, T>;
    type Guard<'a> = SyncOnDrop<'a>;

    fn view<'a, T: Elem>(&self, storage: &'a CudaStorage, layout: &Layout, op: &str, what: &str) -> Result<DeviceView<'a, T>> {
        let Ok(slice) = storage.as_cuda_slice::<T>() else {
            bail!("{op}: {what} has dtype {:?}, expected {:?}", storage.dtype(), T::DTYPE)
        };
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(DeviceView { view: slice.slice(start..end), stream: slice.stream().clone() }),
            None => bail!("{op}: {what} must be contiguous (call .contiguous() first)"),
        }
    }

    fn slice<'a, T: DeviceValue>(&self, buffer: &'a CudaSlice<T>, start: usize, len: usize) -> DeviceView<'a, T> {
        DeviceView { view: buffer.slice(start..start + len), stream: buffer.stream().clone() }
    }

    fn alloc<T: DeviceValue>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: uninitialised device memory is only handed to kernels that write all of it (the
        // poisoned parity tests check that).
        let mut out = unsafe { self.alloc::<T>(len)? };
        if POISON_OUTPUTS.load(Ordering::Relaxed) {
            let stream = self.cuda_stream();
            let (ptr, _sync) = out.device_ptr_mut(&stream);
            // SAFETY: `ptr` is a live allocation of exactly len·size_of::<T>() bytes on this stream.
            unsafe { result::memset_d8_async(ptr, 0xFF, len * std::mem::size_of::<T>(), stream.cu_stream()) }.w()?;
        }
        Ok(out)
    }

    fn upload<T: DeviceValue>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.clone_htod(data)
    }

    fn wrap<T: Elem>(&self, buffer: CudaSlice<T>) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(buffer, self.clone())
    }

    fn allow_shared(&self, entry: &Entry<'_>, bytes: u32) -> Result<()> {
        load(self, entry)?.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32).w()?;
        Ok(())
    }

    fn launch(&self, entry: &Entry<'_>, shape: &LaunchShape, args: &[Arg]) -> Result<()> {
        let func = load(self, entry)?;
        let stream = self.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        for arg in args {
            match arg {
                Arg::Address(address) => builder.arg(address),
                Arg::Int(v) => builder.arg(v),
                Arg::Float(v) => builder.arg(v),
            };
        }
        // SAFETY: the arguments are the kernel's C signature (the launch functions of
        // crate::kernels build them from the kernel table, which the CUDA build checks against
        // the PTX), with device buffers at least as long as the sizes passed; each pointer's
        // memory stays borrowed, with its stream bookkeeping, until after this returns.
        unsafe { builder.launch(LaunchConfig::from(*shape)) }.w()?;
        Ok(())
    }
}

/// `entry`, its module loaded once per device.
fn load(dev: &CudaDevice, entry: &Entry<'_>) -> Result<CudaFunction> {
    Ok(dev.get_or_load_custom_func(entry.name, entry.module.name, entry.module.ptx)?.clone())
}

impl From<LaunchShape> for LaunchConfig {
    fn from(shape: LaunchShape) -> Self {
        let [gx, gy, gz] = shape.grid;
        let [bx, by, bz] = shape.block;
        LaunchConfig { grid_dim: (gx, gy, gz), block_dim: (bx, by, bz), shared_mem_bytes: shape.shared_bytes }
    }
}

static POISON_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// Fill every output buffer of the CUDA kernels with NaN (all bits set) before the kernel runs,
/// so an element a kernel fails to write shows up in the parity tests. Off by default (it costs a
/// memset per output).
pub fn poison_outputs(on: bool) {
    POISON_OUTPUTS.store(on, Ordering::Relaxed);
}

/// The device address of a contiguous tensor of `T` on `dev`'s first element, for kernels that
/// take it through a pointer table (and may write through it: the caller owns the tensor alone).
pub(crate) fn device_address<T: Elem>(dev: &CudaDevice, t: &Tensor, op: &str, what: &str) -> Result<u64> {
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

const DECODE_OP: &str = "forge-decode-attn";

/// The decode op on the GPU: its caches' addresses, then `crate::launch::decode_attn`.
pub(crate) fn append_and_attend(op: &DecodeAttention, inputs: crate::launch::decode_attn::Inputs<'_, CudaStorage>) -> Result<CudaStorage> {
    match inputs[0].0.dtype() {
        DType::F32 => decode::<f32>(op, inputs),
        DType::BF16 => decode::<bf16>(op, inputs),
        DType::F16 => decode::<f16>(op, inputs),
        other => bail!("{DECODE_OP}: dtype {other:?} (f32, bf16 or f16)"),
    }
}

fn decode<T: Elem>(op: &DecodeAttention, inputs: crate::launch::decode_attn::Inputs<'_, CudaStorage>) -> Result<CudaStorage> {
    let DecodeAttention { caches, rows, heads, scale, flash_min_rows } = op;
    let (ql, kl) = (inputs[0].1, inputs[1].1);
    let (_, width) = ql.shape().dims2()?;
    let (_, kv_width) = kl.shape().dims2()?;
    if *heads == 0 || !width.is_multiple_of(*heads) || !kv_width.is_multiple_of(width / heads) {
        bail!("{DECODE_OP}: q {:?} and k {:?} are not whole heads of {heads} query heads", ql.dims(), kl.dims());
    }
    let d = width / heads;
    let kv_heads = kv_width / d;
    let dev = &inputs[0].0.device;
    // The device address of a cache tensor's first element, checked to be a contiguous
    // `[kv_heads, capacity, d]` tensor of `T` on `dev`; and its capacity.
    let cache_address = |t: &Tensor| -> Result<(u64, usize)> {
        let (h, capacity, hd) = t.dims3()?;
        if h != kv_heads || hd != d {
            bail!("{DECODE_OP}: a KV cache of shape {:?} is not a [{kv_heads}, capacity, {d}]", t.dims());
        }
        Ok((device_address::<T>(dev, t, DECODE_OP, "a KV cache")?, capacity))
    };
    let mut addresses = Vec::with_capacity(caches.len());
    for (keys, values) in caches {
        let (keys, capacity) = cache_address(keys)?;
        let (values, value_capacity) = cache_address(values)?;
        if value_capacity != capacity {
            bail!("{DECODE_OP}: a cache of {capacity} keys and {value_capacity} values");
        }
        addresses.push(CacheAddresses { keys, values, capacity });
    }
    let step = Step { rows, heads: *heads, scale: *scale, flash_min_rows: *flash_min_rows };
    let (o, _plan) = crate::launch::decode_attn::append_and_attend::<T, CudaDevice>(dev, &step, &addresses, inputs)?;
    Ok(o)
}
