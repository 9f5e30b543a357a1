//! Runs forge-kernels' CUDA C++ kernels (crates/forge-kernels/kernels) on the CPU, unchanged, under
//! a SIMT emulator (simt/simt.h): every CUDA thread a fiber, barriers and warp collectives
//! (shuffles, `mma.sync`, `ldmatrix`) emulated from the PTX ISA's definitions, every buffer ending
//! at an inaccessible page. It checks on a machine without a GPU what a GPU run would show first:
//! whether the kernels index, tile, mask and synchronise correctly (parity with the reference on
//! the CPU, every output element written, no out-of-bounds access, no race — neither one the race
//! tracker sees (racecheck's rule, for shared and global memory) nor one a different thread order
//! exposes — and no barrier some threads miss). It also counts what each warp's memory requests
//! would cost ([`take_memory_counts`]: shared-memory bank conflicts, global 32-byte sectors).
//!
//! The kernels run through forge-kernels' own launch code: [`Emulator`] is a
//! `forge_kernels::backend::Backend`, the second one beside the GPU, so `forge_kernels::launch`
//! (grids, argument lists, output buffers) runs here as it runs on a GPU. The wrappers of
//! [`ops`], [`flash_attn`] and [`decode_attn`] only move host data into buffers and back.
//!
//! It is not a GPU: it says nothing about speed, and a fragment layout the kernel and the emulator
//! both got wrong in the same way would pass here and fail on hardware. `scripts/gpu/gpu-check.sh`
//! stays the measurement.

use std::ffi::{c_char, c_void, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

pub use forge_kernels::launch::LaunchShape;

mod bindings;
pub mod decode_attn;
pub mod device;
pub mod flash_attn;
pub mod ops;

pub use device::{Emulator, Storage};

extern "C" {
    fn simt_take_memory_counts(out: *mut RawMemoryCounts);
    fn simt_alloc(bytes: usize, name: *const c_char) -> *mut c_void;
    fn simt_free(p: *mut c_void);
    fn simt_launch(
        grid: *const u32,
        block: *const u32,
        shared_bytes: usize,
        order: i32,
        seed: u64,
        track_races: i32,
        kernel: extern "C" fn(*mut c_void),
        context: *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
}

/// The emulator's "device memory": host memory whose last byte touches an inaccessible page, so a
/// kernel reading or writing past it fails its launch with the buffer's name.
pub struct Buffer<T> {
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

impl<T: Copy> Buffer<T> {
    fn alloc(name: &'static CStr, len: usize) -> Self {
        // SAFETY: simt_alloc returns len·size_of::<T>() writable bytes, 16-byte aligned, or null.
        let raw = unsafe { simt_alloc(len * size_of::<T>(), name.as_ptr()) };
        let ptr = NonNull::new(raw.cast::<T>()).expect("simt_alloc: out of memory");
        Self { ptr, len, _owns: PhantomData }
    }

    /// A copy of `data`.
    pub fn from_slice(name: &'static CStr, data: &[T]) -> Self {
        let buffer = Self::alloc(name, data.len());
        // SAFETY: the allocation holds data.len() elements and does not overlap `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buffer.ptr.as_ptr(), data.len()) };
        buffer
    }

    /// `len` elements with every bit set (NaN for floats): a kernel output before the kernel runs,
    /// as the GPU's poisoned outputs.
    pub fn poisoned(name: &'static CStr, len: usize) -> Self {
        let buffer = Self::alloc(name, len);
        // SAFETY: the allocation holds len·size_of::<T>() writable bytes.
        unsafe { std::ptr::write_bytes(buffer.ptr.as_ptr().cast::<u8>(), 0xFF, len * size_of::<T>()) };
        buffer
    }

    /// `len` copies of `value` (an output poisoned with NaN shows any element a kernel skips).
    pub fn filled(name: &'static CStr, len: usize, value: T) -> Self {
        Self::from_slice(name, &vec![value; len])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: the allocation holds `len` initialised elements.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }.to_vec()
    }

    /// The device pointer a kernel argument takes.
    pub fn ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Drop for Buffer<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by simt_alloc, freed once.
        unsafe { simt_free(self.ptr.as_ptr().cast()) }
    }
}

/// The order the emulator runs a block's ready threads in between barriers, and picks the warp that
/// runs ahead to its next barrier in. A race-free kernel gives bit-identical results under all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Ascending,
    Descending,
    /// A fresh permutation of the threads every round (and of the warps at every release), from
    /// this seed.
    Shuffled(u64),
}

/// The orders the kernel tests run every case under (a shuffled one with a fixed seed, so a failure
/// reproduces).
pub const ORDERS: [Schedule; 3] = [Schedule::Ascending, Schedule::Descending, Schedule::Shuffled(0x5eed)];

/// Runs `kernel` (a call of one kernel entry point with its arguments) as every thread of a
/// launch of `shape`. An error names what went wrong and in which block and thread: an access
/// outside any buffer, a trapped out-of-bounds index, a barrier or warp collective that not every
/// thread reaches, a race (two threads touching a byte of shared or global memory, at least one
/// writing, with no `__syncthreads` between them, or from different blocks), a read of shared
/// memory no thread of the block has written.
pub fn launch(shape: &LaunchShape, schedule: Schedule, kernel: impl Fn()) -> Result<(), String> {
    run(shape, schedule, true, kernel)
}

/// [`launch`] without the race tracker: what the thread orders alone expose (the emulator's own
/// tests show both ways of finding a race).
pub fn launch_untracked(shape: &LaunchShape, schedule: Schedule, kernel: impl Fn()) -> Result<(), String> {
    run(shape, schedule, false, kernel)
}

/// Shared-memory accesses of some kind and the wavefronts they needed beyond one per phase: a
/// phase whose lanes touch several distinct words of one of the 32 banks is served in several (a
/// bank conflict, a cost the GPU pays in time, not in results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wavefronts {
    pub accesses: u64,
    pub extra: u64,
}

/// Global-memory requests and the 32-byte sectors they moved, against the fewest their bytes need
/// (a request whose lanes are scattered moves more sectors than bytes: uncoalesced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sectors {
    pub requests: u64,
    pub sectors: u64,
    pub ideal: u64,
}

/// What the warps of the launches on this OS thread asked of memory, each request rebuilt from its
/// lanes' accesses (see simt.cpp `for_each_request`: where lanes diverge around a loop it can pair
/// the wrong ones): `ldmatrix` counts phases (one per 8x8 matrix: 8 rows of 16 bytes), `shared`
/// the other shared-memory requests (plain loads and stores, `cp.async` writes), `global` the
/// global ones (buffers assumed 256-byte aligned, as the GPU allocates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryCounts {
    pub ldmatrix: Wavefronts,
    pub shared: Wavefronts,
    pub global: Sectors,
}

impl MemoryCounts {
    /// The wavefronts all shared-memory requests needed beyond one per phase.
    pub fn bank_conflicts(&self) -> u64 {
        self.ldmatrix.extra + self.shared.extra
    }
}

#[repr(C)]
#[derive(Default)]
struct RawMemoryCounts {
    ldmatrix_phases: u64,
    ldmatrix_extra_wavefronts: u64,
    shared_requests: u64,
    shared_extra_wavefronts: u64,
    global_requests: u64,
    global_sectors: u64,
    global_ideal_sectors: u64,
}

/// The [`MemoryCounts`] since the last call on this OS thread (then zero again).
pub fn take_memory_counts() -> MemoryCounts {
    let mut raw = RawMemoryCounts::default();
    // SAFETY: a valid out-pointer to the C struct's layout; the counters are the calling thread's.
    unsafe { simt_take_memory_counts(&mut raw) };
    MemoryCounts {
        ldmatrix: Wavefronts { accesses: raw.ldmatrix_phases, extra: raw.ldmatrix_extra_wavefronts },
        shared: Wavefronts { accesses: raw.shared_requests, extra: raw.shared_extra_wavefronts },
        global: Sectors { requests: raw.global_requests, sectors: raw.global_sectors, ideal: raw.global_ideal_sectors },
    }
}

fn run(shape: &LaunchShape, schedule: Schedule, track_races: bool, kernel: impl Fn()) -> Result<(), String> {
    extern "C" fn call<F: Fn()>(context: *mut c_void) {
        // SAFETY: `context` is the `&F` passed below, alive for the whole launch.
        unsafe { (*context.cast::<F>())() }
    }
    fn call_for<F: Fn()>(_: &F) -> extern "C" fn(*mut c_void) {
        call::<F>
    }
    let mut error = vec![0 as c_char; 1024];
    // SAFETY: the shape arrays and `error` outlive the call; `kernel` is only called during it.
    let status = unsafe {
        simt_launch(
            shape.grid.as_ptr(),
            shape.block.as_ptr(),
            shape.shared_bytes as usize,
            match schedule {
                Schedule::Ascending => 0,
                Schedule::Descending => 1,
                Schedule::Shuffled(_) => 2,
            },
            match schedule {
                Schedule::Shuffled(seed) => seed,
                _ => 0,
            },
            i32::from(track_races),
            call_for(&kernel),
            &kernel as *const _ as *mut c_void,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if status == 0 {
        return Ok(());
    }
    // SAFETY: simt_launch wrote a NUL-terminated message into `error`.
    Err(unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy().into_owned())
}
