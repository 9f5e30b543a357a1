// Kernels with one deliberate defect each (and two correct controls), compiled like the real ones:
// the emulator's own tests (tests/checks.rs) show that every check it claims does fail on them.
extern "C" __global__ void simt_selftest_write_past_end(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // off by one
}

extern "C" __global__ void simt_selftest_reverse(float* out, int with_barrier) {
  DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  s[threadIdx.x] = (float)threadIdx.x;
  if (with_barrier) __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void simt_selftest_divergent_barrier(float* out) {
  if (threadIdx.x < 64) __syncthreads();
  out[threadIdx.x] = 1.f;
}

extern "C" __global__ void simt_selftest_half_warp_shuffle(float* out) {
  float v = 1.f;
  if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

extern "C" __global__ void simt_selftest_warp_sum(float* out) {
  float v = (float)threadIdx.x;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

extern "C" __global__ void simt_selftest_index_past_array(float* out, int k) {
  float r[4] = {1.f, 2.f, 3.f, 4.f};
  out[threadIdx.x] = r[k];
}

extern "C" __global__ void simt_selftest_shared_overrun(float* out) {
  DYNAMIC_SHARED(raw);
  reinterpret_cast<float*>(raw)[threadIdx.x] = 1.f;
  out[threadIdx.x] = 1.f;
}

// Thread i copies in[4i..4i+4) (odd threads: nothing, zero-filled) into shared memory with cp.async
// and reads thread n-1-i's copy. mode 0: wait, barrier, read (correct); 1: reads its own copy, then
// waits (too early: the copy has not landed); 2: never waits; 3: waits only after the barrier, so no
// barrier orders the partner's copy landing before the read.
extern "C" __global__ void simt_selftest_async_copy(float* out, const float* in, int mode) {
  DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  const int i = threadIdx.x, n = blockDim.x;
  simt::cp_async_16(s + 4 * i, in + 4 * i, i % 2 == 0 ? 16 : 0);
  simt::cp_async_commit();
  if (mode == 0) simt::cp_async_wait(0);
  __syncthreads();
  if (mode == 3) simt::cp_async_wait(0);
  out[i] = mode == 1 ? s[4 * i] : s[4 * (n - 1 - i)];
  if (mode == 1) simt::cp_async_wait(0);
}

// Two groups per thread (first half, then second half of shared memory); wait_group 1 lands only
// the first: out[i] reads the thread's first copy, out[n + i] its second.
extern "C" __global__ void simt_selftest_async_groups(float* out, const float* in) {
  DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  const int i = threadIdx.x, n = blockDim.x;
  simt::cp_async_16(s + 4 * i, in + 4 * i, 16);
  simt::cp_async_commit();
  simt::cp_async_16(s + 4 * (n + i), in + 4 * (n + i), 16);
  simt::cp_async_commit();
  simt::cp_async_wait(1);
  out[i] = s[4 * i];
  out[n + i] = s[4 * (n + i)];
  simt::cp_async_wait(0);
}

// Each thread sums four values of the next warp's slots, a warp collective between the reads (as
// the tile products between the fragment loads of a kernel), then overwrites its own slot: without
// the barrier before that write, a warp that runs ahead overwrites slots another warp still reads.
extern "C" __global__ void simt_selftest_overwrite_while_read(float* out, int with_barrier) {
  DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  const int i = threadIdx.x, n = blockDim.x;
  s[i] = (float)i;
  __syncthreads();
  float sum = 0.f;
  for (int r = 0; r < 4; ++r) {
    sum += s[(i + 32 + r) % n];
    sum += 0.f * __shfl_xor_sync(0xffffffffu, sum, 1);
  }
  if (with_barrier) __syncthreads();
  s[i] = -1000.f;
  out[i] = sum;
}

// A shuffle exchanges registers, not memory: reading the shared slot a neighbouring lane wrote needs
// a barrier all the same.
extern "C" __global__ void simt_selftest_shuffle_as_fence(float* out) {
  DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  const int i = threadIdx.x;
  s[i] = (float)i;
  const float neighbour = __shfl_xor_sync(0xffffffffu, (float)i, 1);
  out[i] = s[i ^ 1] + 0.f * neighbour;
}

// Blocks of one launch are never ordered. mode 0: each block writes its own slots (correct); 1: every
// block writes the same slots; 2: each block writes its slots, then reads those of the block before.
extern "C" __global__ void simt_selftest_blocks_share_memory(float* out, int mode) {
  const int i = threadIdx.x, n = blockDim.x, b = blockIdx.x;
  out[(mode == 1 ? 0 : b * n) + i] = (float)b;
  if (mode == 2 && b > 0) out[b * n + i] += out[(b - 1) * n + i];
}

// Warp 1 writes 32 rows of 8 bf16, `stride` elements apart, into shared memory; warp 0 loads them
// as four 8x8 matrices with ldmatrix.trans (lane l gives row l's address), after the barrier or,
// the defect, without it. A stride of 8 packs the rows (no bank conflict); 64 puts each phase's 8
// rows 128 bytes apart, all in the same 4 banks (8 wavefronts per phase instead of 1).
extern "C" __global__ void simt_selftest_ldmatrix_rows(float* out, int with_barrier, int stride) {
  DYNAMIC_SHARED(raw);
  uint16_t* rows = reinterpret_cast<uint16_t*>(raw);
  const int i = threadIdx.x, lane = i & 31;
  if (i >= 32)
    for (int k = 0; k < 8; ++k) rows[stride * lane + k] = (uint16_t)(8 * lane + k);
  if (with_barrier) __syncthreads();
  if (i < 32) {
    uint32_t r[4];
    simt::ldmatrix_x4_trans_b16(r, rows + stride * lane);
    for (int j = 0; j < 4; ++j) out[4 * i + j] = (float)r[j];
  }
}

// One warp fills 1072 words of shared memory (34 conflict-free requests), then each lane reads
// `stride` units apart: 4-byte words (`vector` 0) or 16-byte uint4 (`vector` 1, copied whole, as
// flash_attn.cu's tile loads copy them, so that the host compiler also moves 16 bytes at once).
// The bank-conflict count's control: stride 1 costs nothing, stride 2 two words per bank, stride
// 32 one bank. `out`: 32 floats, or 32 uint4.
extern "C" __global__ void simt_selftest_shared_requests(float* out, int stride, int vector) {
  DYNAMIC_SHARED(raw);
  uint32_t* words = reinterpret_cast<uint32_t*>(raw);
  const int lane = threadIdx.x;
  for (int i = lane; i < 1072; i += 32) words[i] = (uint32_t)i;
  __syncthreads();
  if (vector)
    reinterpret_cast<uint4*>(out)[lane] = reinterpret_cast<const uint4*>(raw)[lane * stride];
  else
    out[lane] = (float)words[lane * stride];
}

// One warp: lane i reads in[i · stride] and writes out[i] (4 bytes each). The sector count's
// control: stride 1 moves 4 sectors for 128 bytes, stride 8 (32 bytes apart) one sector per lane,
// stride 0 one sector for all (a broadcast).
extern "C" __global__ void simt_selftest_global_stride(float* out, const float* in, int stride) {
  out[threadIdx.x] = in[threadIdx.x * stride];
}
