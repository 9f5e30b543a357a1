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
