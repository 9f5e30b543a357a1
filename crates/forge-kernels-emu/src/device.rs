//! The emulator as a [`Backend`] of forge-kernels' launch code (`forge_kernels::launch`): the same
//! functions that launch the kernels on a GPU launch them here, each entry point called through
//! its binding (src/bindings.rs) as every thread of the launch.

use std::any::Any;
use std::marker::PhantomData;

use candle_core::{bail, Layout, Result};
use forge_kernels::backend::{Arg, Backend, DeviceValue, Elem, Memory};
use forge_kernels::kernels::Entry;

use crate::{bindings, run, Buffer, LaunchShape, Schedule};

/// Runs launches under one thread order, with or without the race tracker.
#[derive(Debug, Clone, Copy)]
pub struct Emulator {
    pub schedule: Schedule,
    pub track_races: bool,
}

impl Emulator {
    /// Launches under `schedule`, races tracked.
    pub fn new(schedule: Schedule) -> Self {
        Self { schedule, track_races: true }
    }
}

/// A tensor's storage: one [`Buffer`] of its element type.
pub struct Storage(Box<dyn Any>);

impl Storage {
    pub fn new<T: Copy + 'static>(buffer: Buffer<T>) -> Self {
        Self(Box::new(buffer))
    }

    /// A copy of `data` (the buffer named `name` in an access fault).
    pub fn from_slice<T: Copy + 'static>(name: &'static std::ffi::CStr, data: &[T]) -> Self {
        Self::new(Buffer::from_slice(name, data))
    }

    pub fn buffer<T: 'static>(&self) -> Option<&Buffer<T>> {
        self.0.downcast_ref()
    }

    /// The buffer, if it holds `T`.
    pub fn into_buffer<T: 'static>(self) -> std::result::Result<Buffer<T>, String> {
        self.0.downcast().map(|b| *b).map_err(|_| format!("the storage does not hold {}", std::any::type_name::<T>()))
    }

    /// Its elements, if it holds `T`.
    pub fn to_vec<T: Copy + 'static>(&self) -> std::result::Result<Vec<T>, String> {
        self.buffer::<T>().map(Buffer::to_vec).ok_or_else(|| format!("the storage does not hold {}", std::any::type_name::<T>()))
    }
}

/// Contiguous elements of a buffer.
pub struct View<'a, T> {
    ptr: *mut T,
    _buffer: PhantomData<&'a Buffer<T>>,
}

impl<T: Copy> Memory<Emulator, T> for Buffer<T> {
    fn address<'a>(&'a self, _: &'a Emulator) -> (u64, ()) {
        (self.ptr() as u64, ())
    }
}

impl<T> Memory<Emulator, T> for View<'_, T> {
    fn address<'a>(&'a self, _: &'a Emulator) -> (u64, ()) {
        (self.ptr as u64, ())
    }
}

impl Backend for Emulator {
    type Storage = Storage;
    type Buffer<T: DeviceValue> = Buffer<T>;
    type View<'a, T: DeviceValue> = View<'a, T>;
    type Guard<'a> = ();

    fn view<'a, T: Elem>(&self, storage: &'a Storage, layout: &Layout, op: &str, what: &str) -> Result<View<'a, T>> {
        let Some(buffer) = storage.buffer::<T>() else { bail!("{op}: {what} does not hold {:?}", T::DTYPE) };
        match layout.contiguous_offsets() {
            Some((start, end)) if end <= buffer.len() => Ok(self.slice(buffer, start, end - start)),
            Some((_, end)) => bail!("{op}: {what}'s layout ends at element {end}, past its buffer of {}", buffer.len()),
            None => bail!("{op}: {what} must be contiguous (call .contiguous() first)"),
        }
    }

    fn slice<'a, T: DeviceValue>(&self, buffer: &'a Buffer<T>, start: usize, len: usize) -> View<'a, T> {
        assert!(start + len <= buffer.len(), "elements {start}..{} of a buffer of {}", start + len, buffer.len());
        // SAFETY: within the buffer's allocation (checked above).
        View { ptr: unsafe { buffer.ptr().add(start) }, _buffer: PhantomData }
    }

    fn alloc<T: DeviceValue>(&self, len: usize) -> Result<Buffer<T>> {
        Ok(Buffer::poisoned(c"kernel output", len))
    }

    fn upload<T: DeviceValue>(&self, data: &[T]) -> Result<Buffer<T>> {
        Ok(Buffer::from_slice(c"uploaded table", data))
    }

    fn wrap<T: Elem>(&self, buffer: Buffer<T>) -> Storage {
        Storage::new(buffer)
    }

    fn allow_shared(&self, _: &Entry<'_>, _: u32) -> Result<()> {
        // the emulator gives a launch whatever dynamic shared memory it asks for (up to a block's 227 KB)
        Ok(())
    }

    fn launch(&self, entry: &Entry<'_>, shape: &LaunchShape, args: &[Arg]) -> Result<()> {
        let Some(call) = bindings::lookup(entry.name) else { bail!("{}: no emulated entry point of that name", entry.name) };
        // SAFETY: `call` is `entry`'s binding and `args` its C parameters, built by its launch
        // function from the kernel table, addresses of buffers that outlive the launch.
        run(shape, self.schedule, self.track_races, || unsafe { call(args) }).map_err(|e| candle_core::Error::Msg(format!("{}: {e}", entry.name)))
    }
}
