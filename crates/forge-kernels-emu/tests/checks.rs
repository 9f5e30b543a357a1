//! The emulator's checks fail where they must: each deliberately faulty kernel of simt/faulty.cu
//! makes its launch fail with the matching message (a race: reported by the race tracker under every
//! thread order, and without the tracker, a difference between orders), while the correct controls
//! pass; the asynchronous copies (cp.async) land no earlier than their wait allows.

use forge_kernels_emu::{launch, launch_untracked, take_memory_counts, Buffer, LaunchShape, Schedule, Sectors, Wavefronts, ORDERS};

extern "C" {
    fn simt_selftest_write_past_end(out: *mut f32, n: i32);
    fn simt_selftest_reverse(out: *mut f32, with_barrier: i32);
    fn simt_selftest_divergent_barrier(out: *mut f32);
    fn simt_selftest_half_warp_shuffle(out: *mut f32);
    fn simt_selftest_warp_sum(out: *mut f32);
    fn simt_selftest_index_past_array(out: *mut f32, k: i32);
    fn simt_selftest_shared_overrun(out: *mut f32);
    fn simt_selftest_async_copy(out: *mut f32, input: *const f32, mode: i32);
    fn simt_selftest_async_groups(out: *mut f32, input: *const f32);
    fn simt_selftest_overwrite_while_read(out: *mut f32, with_barrier: i32);
    fn simt_selftest_shuffle_as_fence(out: *mut f32);
    fn simt_selftest_blocks_share_memory(out: *mut f32, mode: i32);
    fn simt_selftest_ldmatrix_rows(out: *mut f32, with_barrier: i32, stride: i32);
    fn simt_selftest_shared_requests(out: *mut f32, stride: i32, vector: i32);
    fn simt_selftest_global_stride(out: *mut f32, input: *const f32, stride: i32);
}

fn block(threads: u32, shared_bytes: u32) -> LaunchShape {
    LaunchShape { grid: [1, 1, 1], block: [threads, 1, 1], shared_bytes }
}

#[test]
fn a_write_past_the_end_of_a_buffer_fails_the_launch_naming_the_buffer() {
    let out = Buffer::filled(c"out", 100, 0f32);
    let shape = LaunchShape { grid: [2, 1, 1], block: [64, 1, 1], shared_bytes: 0 };
    // SAFETY: the kernel's C signature; the overrun it makes is what the guard page must catch.
    let err = launch(&shape, Schedule::Ascending, || unsafe { simt_selftest_write_past_end(out.ptr(), 100) }).unwrap_err();
    assert!(err.contains("invalid memory access") && err.contains("0 bytes past the end of out (400 bytes)"), "{err}");
    assert!(err.contains("block (1, 0, 0) thread (36, 0, 0)"), "the faulting thread is named: {err}");
}

fn assert_race(err: &str, memory: &str, unordered_by: &str) {
    assert!(err.starts_with("race (") && err.contains(" hazard) on byte "), "{err}");
    assert!(err.contains(&format!(" of {memory}: block (")) && err.contains(unordered_by), "{err}");
}

#[test]
fn a_read_of_shared_memory_no_thread_has_written_fails_the_launch() {
    let run = |with_barrier: i32, schedule| {
        let out = Buffer::filled(c"out", 128, 0f32);
        // SAFETY: the kernel's C signature; 128 threads, 512 bytes of shared memory.
        launch(&block(128, 512), schedule, || unsafe { simt_selftest_reverse(out.ptr(), with_barrier) })
    };
    for order in ORDERS {
        run(1, order).unwrap();
        let err = run(0, order).unwrap_err();
        assert!(err.starts_with("read of uninitialised shared memory: "), "{order:?}: {err}");
    }
    // ascending: thread 0 reads slot 127 before thread 127 has run; descending: thread 127 reads slot 0
    let err = run(0, Schedule::Ascending).unwrap_err();
    assert!(err.contains("block (0, 0, 0) thread (0, 0, 0) reads byte 508 of dynamic shared memory, which no thread of its block has written"), "{err}");
    let err = run(0, Schedule::Descending).unwrap_err();
    assert!(err.contains("block (0, 0, 0) thread (127, 0, 0) reads byte 0 of dynamic shared memory, which no thread of its block has written"), "{err}");
}

#[test]
fn an_overwrite_other_warps_still_read_is_reported_as_a_race() {
    for order in ORDERS {
        let out = Buffer::filled(c"out", 128, 0f32);
        // SAFETY: the kernel's C signature; 128 threads (4 warps), 512 bytes of shared memory.
        launch(&block(128, 512), order, || unsafe { simt_selftest_overwrite_while_read(out.ptr(), 1) }).unwrap();
        // SAFETY: as above, without the barrier before the overwrite: the defect under test.
        let err = launch(&block(128, 512), order, || unsafe { simt_selftest_overwrite_while_read(out.ptr(), 0) }).unwrap_err();
        assert_race(&err, "dynamic shared memory", "with no __syncthreads between");
    }
    // ascending: warp 0 runs ahead and overwrites slot 0 while warp 3 (thread 96 reads slot 0) has yet to run
    let out = Buffer::filled(c"out", 128, 0f32);
    // SAFETY: as above.
    let err = launch(&block(128, 512), Schedule::Ascending, || unsafe { simt_selftest_overwrite_while_read(out.ptr(), 0) }).unwrap_err();
    assert!(err.starts_with("race (write-after-read hazard) on byte 0 of dynamic shared memory: block (0, 0, 0) thread (0, 0, 0) writes it"), "{err}");
}

#[test]
fn a_shuffle_is_no_memory_fence() {
    let out = Buffer::filled(c"out", 64, 0f32);
    // SAFETY: the kernel's C signature; 64 threads, 256 bytes of shared memory.
    let err = launch(&block(64, 256), Schedule::Ascending, || unsafe { simt_selftest_shuffle_as_fence(out.ptr()) }).unwrap_err();
    assert!(err.contains("race (read-after-write hazard) on byte 4 of dynamic shared memory: block (0, 0, 0) thread (0, 0, 0) reads it, block (0, 0, 0) thread (1, 0, 0) wrote it"), "{err}");
}

/// Runs simt_selftest_ldmatrix_rows: 2 warps, 32 rows of 8 bf16 `stride` elements apart.
fn ldmatrix_rows(with_barrier: i32, stride: i32) -> Result<Vec<f32>, String> {
    let out = Buffer::filled(c"out", 128, f32::NAN);
    // SAFETY: the kernel's C signature; 32 rows of `stride` bf16 of shared memory.
    launch(&block(64, 64 * stride as u32), Schedule::Ascending, || unsafe { simt_selftest_ldmatrix_rows(out.ptr(), with_barrier, stride) }).map(|()| out.to_vec())
}

#[test]
fn a_fragment_load_is_a_tracked_read() {
    let run = |with_barrier: i32| ldmatrix_rows(with_barrier, 8);
    // lane (group g, thread t) of warp 0 holds matrix j's elements (row 2t, col g) and (row 2t + 1, col g)
    let element = |j: u32, row: u32, col: u32| 8 * (8 * j + row) + col;
    let expected: Vec<f32> = (0..32u32)
        .flat_map(|lane| (0..4).map(move |j| (element(j, 2 * (lane & 3), lane >> 2) | element(j, 2 * (lane & 3) + 1, lane >> 2) << 16) as f32))
        .collect();
    assert_eq!(run(1).unwrap(), expected);
    let err = run(0).unwrap_err();
    assert_race(&err, "dynamic shared memory", "with no __syncthreads between");
    assert!(err.contains("block (0, 0, 0) thread (0, 0, 0) reads it"), "warp 0's load is the read: {err}");
}

#[test]
fn ldmatrix_phases_count_their_bank_conflicts() {
    take_memory_counts();
    // warp 1's stores of the rows are requests of their own: 8 of 2 bytes per lane, 16 bytes apart (4-way)
    let stores = Wavefronts { accesses: 8, extra: 8 * 3 };
    ldmatrix_rows(1, 8).unwrap();
    let counts = take_memory_counts();
    assert_eq!(counts.ldmatrix, Wavefronts { accesses: 4, extra: 0 }, "packed rows: 32 banks per phase");
    assert_eq!(counts.shared, stores, "the ldmatrix's own row reads are not counted as loads");
    // rows 128 bytes apart: a phase's 8 rows share 4 banks, 8 wavefronts instead of 1
    ldmatrix_rows(1, 64).unwrap();
    assert_eq!(take_memory_counts().ldmatrix, Wavefronts { accesses: 4, extra: 4 * 7 });
    // the flash kernels' padding: rows of 136 bf16 (272 bytes) step 4 banks, conflict-free
    ldmatrix_rows(1, 136).unwrap();
    assert_eq!(take_memory_counts().ldmatrix, Wavefronts { accesses: 4, extra: 0 });
}

#[test]
fn shared_loads_and_stores_count_their_bank_conflicts() {
    let run = |stride: i32, vector: i32| {
        let out = Buffer::filled(c"out", 4 * 32, f32::NAN);
        take_memory_counts();
        // SAFETY: the kernel's C signature; one warp, 1072 words of shared memory, which every read
        // stays within; `out` holds 32 uint4 (Buffers start 16-byte aligned).
        launch(&block(32, 1072 * 4), Schedule::Descending, || unsafe { simt_selftest_shared_requests(out.ptr(), stride, vector) }).unwrap();
        let counts = take_memory_counts();
        assert_eq!(counts.ldmatrix, Wavefronts::default());
        counts.shared
    };
    // 34 fill requests (the last of 16 lanes), then one read
    let reads = |extra| Wavefronts { accesses: 35, extra };
    assert_eq!(run(1, 0), reads(0), "consecutive words: 32 banks");
    assert_eq!(run(0, 0), reads(0), "one word for every lane: a broadcast");
    assert_eq!(run(2, 0), reads(1), "every other word: 2 words in each of 16 banks");
    assert_eq!(run(32, 0), reads(31), "a column of 32 words: one bank");
    assert_eq!(run(33, 0), reads(0), "a column of rows padded by a word: 32 banks");
    // 16-byte loads run in 4 phases of 8 lanes (128 bytes each)
    assert_eq!(run(1, 1), reads(0), "consecutive packs");
    assert_eq!(run(2, 1), reads(4), "packs 32 bytes apart: 2-way in each phase");
}

#[test]
fn global_requests_count_their_sectors() {
    let run = |stride: i32| {
        let (out, input) = (Buffer::filled(c"out", 32, f32::NAN), Buffer::from_slice(c"in", &[1f32; 8 * 32]));
        take_memory_counts();
        // SAFETY: the kernel's C signature; one warp, reads within 8·32 floats.
        launch(&block(32, 0), Schedule::Ascending, || unsafe { simt_selftest_global_stride(out.ptr(), input.ptr(), stride) }).unwrap();
        take_memory_counts().global
    };
    // the read, then the write of 128 consecutive bytes (4 sectors)
    assert_eq!(run(1), Sectors { requests: 2, sectors: 4 + 4, ideal: 4 + 4 }, "consecutive floats");
    assert_eq!(run(0), Sectors { requests: 2, sectors: 1 + 4, ideal: 1 + 4 }, "one float for every lane");
    assert_eq!(run(8), Sectors { requests: 2, sectors: 32 + 4, ideal: 4 + 4 }, "floats 32 bytes apart: a sector each");
}

#[test]
fn blocks_of_one_launch_are_never_ordered() {
    let run = |mode: i32| {
        let out = Buffer::filled(c"out", 4 * 64, f32::NAN);
        let shape = LaunchShape { grid: [4, 1, 1], block: [64, 1, 1], shared_bytes: 0 };
        // SAFETY: the kernel's C signature; 4 blocks of 64 threads, 64 slots each.
        launch(&shape, Schedule::Ascending, || unsafe { simt_selftest_blocks_share_memory(out.ptr(), mode) }).map(|()| out.to_vec())
    };
    let own: Vec<f32> = (0..256).map(|i| (i / 64) as f32).collect();
    assert_eq!(run(0).unwrap(), own);
    let err = run(1).unwrap_err();
    assert!(err.contains("race (write-after-write hazard) on byte 0 of out: block (1, 0, 0) thread (0, 0, 0) writes it, block (0, 0, 0) thread (0, 0, 0) wrote it in the same launch (blocks are never ordered)"), "{err}");
    let err = run(2).unwrap_err();
    assert!(err.contains("race (read-after-write hazard) on byte 0 of out: block (1, 0, 0) thread (0, 0, 0) reads it, block (0, 0, 0) thread (0, 0, 0) wrote it in the same launch"), "{err}");
}

#[test]
fn without_the_tracker_a_missing_barrier_shows_as_a_difference_between_schedules() {
    let run = |with_barrier: i32, schedule| {
        let out = Buffer::filled(c"out", 128, 0f32);
        // SAFETY: the kernel's C signature; 128 threads, 512 bytes of shared memory.
        launch_untracked(&block(128, 512), schedule, || unsafe { simt_selftest_reverse(out.ptr(), with_barrier) }).unwrap();
        out.to_vec()
    };
    let expected: Vec<f32> = (0..128).rev().map(|i| i as f32).collect();
    for order in ORDERS {
        assert_eq!(run(1, order), expected, "{order:?}");
    }
    let (up, down) = (run(0, Schedule::Ascending), run(0, Schedule::Descending));
    assert_ne!(up, down, "the racy kernel must read unwritten (NaN) shared memory under one schedule");
    assert!(up.iter().chain(&down).any(|v| v.is_nan()), "unwritten shared memory reads as NaN");
    // a shuffled round runs some readers before their writers and some after
    let shuffled = run(0, Schedule::Shuffled(1));
    assert!(shuffled.iter().any(|v| v.is_nan()) && shuffled.iter().any(|v| !v.is_nan()), "{shuffled:?}");
}

#[test]
fn without_the_tracker_a_warp_running_ahead_exposes_an_overwrite_other_warps_still_read() {
    let run = |with_barrier: i32, schedule| {
        let out = Buffer::filled(c"out", 128, 0f32);
        // SAFETY: the kernel's C signature; 128 threads (4 warps), 512 bytes of shared memory.
        launch_untracked(&block(128, 512), schedule, || unsafe { simt_selftest_overwrite_while_read(out.ptr(), with_barrier) }).unwrap();
        out.to_vec()
    };
    let expected: Vec<f32> = (0..128).map(|i| (0..4).map(|r| ((i + 32 + r) % 128) as f32).sum()).collect();
    for order in ORDERS {
        assert_eq!(run(1, order), expected, "{order:?}");
    }
    // every read precedes every overwrite in lockstep; only a warp running ahead shows the race
    let (up, down) = (run(0, Schedule::Ascending), run(0, Schedule::Descending));
    assert_ne!(up, down, "the warp scheduled first overwrites slots a later warp has yet to read");
    assert!(up != expected && down != expected);
    assert_ne!(run(0, Schedule::Shuffled(1)), expected, "a shuffled release lets some warp run ahead too");
}

#[test]
fn a_barrier_inside_divergent_code_is_reported_as_a_deadlock() {
    let out = Buffer::filled(c"out", 128, 0f32);
    // SAFETY: the kernel's C signature.
    let err = launch(&block(128, 0), Schedule::Ascending, || unsafe { simt_selftest_divergent_barrier(out.ptr()) }).unwrap_err();
    assert!(err.contains("deadlock") && err.contains("64 at __syncthreads") && err.contains("64 exited"), "{err}");
}

#[test]
fn a_shuffle_half_the_warp_skips_is_reported_as_a_deadlock() {
    let out = Buffer::filled(c"out", 64, 0f32);
    // SAFETY: the kernel's C signature.
    let err = launch(&block(64, 0), Schedule::Ascending, || unsafe { simt_selftest_half_warp_shuffle(out.ptr()) }).unwrap_err();
    assert!(err.contains("deadlock") && err.contains("__shfl_xor_sync"), "{err}");
}

#[test]
fn a_butterfly_shuffle_sums_each_warp() {
    let out = Buffer::filled(c"out", 96, f32::NAN);
    // SAFETY: the kernel's C signature.
    launch(&block(96, 0), Schedule::Descending, || unsafe { simt_selftest_warp_sum(out.ptr()) }).unwrap();
    let sums: Vec<f32> = (0..96).map(|i| ((i / 32) * 32..(i / 32) * 32 + 32).sum::<i32>() as f32).collect();
    assert_eq!(out.to_vec(), sums);
}

#[test]
fn an_index_past_a_fixed_size_array_traps() {
    let out = Buffer::filled(c"out", 32, 0f32);
    // SAFETY: the kernel's C signature.
    launch(&block(32, 0), Schedule::Ascending, || unsafe { simt_selftest_index_past_array(out.ptr(), 3) }).unwrap();
    assert!(out.to_vec().iter().all(|&v| v == 4.0));
    // SAFETY: as above; index 4 of a 4-element array is the defect under test.
    let err = launch(&block(32, 0), Schedule::Ascending, || unsafe { simt_selftest_index_past_array(out.ptr(), 4) }).unwrap_err();
    assert!(err.contains("trapped undefined behaviour") && err.contains("thread (0, 0, 0)"), "{err}");
}

#[test]
fn shared_memory_past_what_the_launch_asked_for_is_out_of_bounds() {
    let out = Buffer::filled(c"out", 64, 0f32);
    // SAFETY: the kernel's C signature; 64 floats of shared memory are needed.
    launch(&block(64, 256), Schedule::Ascending, || unsafe { simt_selftest_shared_overrun(out.ptr()) }).unwrap();
    // SAFETY: as above, with 64 bytes fewer than needed: the defect under test.
    let err = launch(&block(64, 192), Schedule::Ascending, || unsafe { simt_selftest_shared_overrun(out.ptr()) }).unwrap_err();
    assert!(err.contains("past the end of the dynamic shared memory the launch asked for (192 bytes)"), "{err}");
    assert!(err.contains("thread (48, 0, 0)"), "{err}");
}

#[test]
fn bad_launch_shapes_are_rejected_before_running() {
    let shape = LaunchShape { grid: [1, 1, 1], block: [2048, 1, 1], shared_bytes: 0 };
    assert!(launch(&shape, Schedule::Ascending, || {}).unwrap_err().contains("block size"));
    let shape = LaunchShape { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 300 * 1024 };
    assert!(launch(&shape, Schedule::Ascending, || {}).unwrap_err().contains("227 KB"));
}

fn async_copy(mode: i32, schedule: Schedule) -> Result<Vec<f32>, String> {
    let input = Buffer::from_slice(c"in", &(0..256).map(|v| v as f32).collect::<Vec<_>>());
    let out = Buffer::filled(c"out", 64, -1f32);
    // SAFETY: the kernel's C signature; 64 threads, 16 bytes of shared memory each.
    launch(&block(64, 64 * 16), schedule, || unsafe { simt_selftest_async_copy(out.ptr(), input.ptr(), mode) })?;
    Ok(out.to_vec())
}

#[test]
fn an_async_copy_lands_at_its_wait_and_zero_fills_an_empty_source() {
    // thread i reads thread 63 - i's copy: element 0 of in[4(63 - i)..], or 0 where that thread is odd (no source)
    let expected: Vec<f32> = (0..64).map(|i| if (63 - i) % 2 == 0 { (4 * (63 - i)) as f32 } else { 0.0 }).collect();
    for schedule in ORDERS {
        assert_eq!(async_copy(0, schedule).unwrap(), expected);
    }
}

#[test]
fn reading_an_async_copy_before_its_wait_reads_nan() {
    for schedule in ORDERS {
        let out = async_copy(1, schedule).unwrap();
        assert!(out.iter().all(|v| v.is_nan()), "every thread reads its copy before waiting for it: {out:?}");
    }
}

#[test]
fn reading_another_threads_async_copy_with_no_barrier_after_its_wait_is_a_race() {
    for schedule in ORDERS {
        let err = async_copy(3, schedule).unwrap_err();
        assert_race(&err, "dynamic shared memory", "with no __syncthreads between");
    }
}

#[test]
fn a_thread_that_never_waits_for_its_async_copies_fails_the_launch() {
    let err = async_copy(2, Schedule::Ascending).unwrap_err();
    assert!(err.contains("cp.async copies it never waited for"), "{err}");
}

#[test]
fn wait_group_one_leaves_the_newest_group_in_flight() {
    let input = Buffer::from_slice(c"in", &(0..512).map(|v| v as f32).collect::<Vec<_>>());
    let out = Buffer::filled(c"out", 128, -1f32);
    // SAFETY: the kernel's C signature; 64 threads, two 16-byte copies each.
    launch(&block(64, 2 * 64 * 16), Schedule::Ascending, || unsafe { simt_selftest_async_groups(out.ptr(), input.ptr()) }).unwrap();
    let out = out.to_vec();
    let first: Vec<f32> = (0..64).map(|i| (4 * i) as f32).collect();
    assert_eq!(out[..64], first[..], "the older group has landed");
    assert!(out[64..].iter().all(|v| v.is_nan()), "the newest group has not: {:?}", &out[64..]);
}
