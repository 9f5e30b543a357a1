//! Process-wide tuning of glibc malloc for training on CPU.
//!
//! candle allocates a fresh buffer for every op output. With glibc's defaults every buffer above
//! the (dynamic) mmap threshold is mmapped and unmapped again, so each step pays a page fault per
//! 4 KiB of every activation and gradient — measured as ~15% of a training step in the kernel and
//! a 1.6× slower step at 2×1024 tokens. Serving large blocks from the heap and never trimming it
//! lets steps reuse the same memory, at the price of keeping the peak of one step resident.

/// Makes large allocations come from the heap and keeps freed memory for reuse. Call once, early
/// (the `forge` binary and the benchmarks do). A no-op outside Linux/glibc.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before threads allocate heavily.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
