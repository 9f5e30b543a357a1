// RMSNorm over the last dim, forward and backward; statistics in f32 (see src/rms_norm.rs for the
// formulas and the CPU reference these must match).
//
// Row kernels: blockDim.x threads per row (32 when the row has at most 1024 elements, several
// rows per block; else one row per block), rows = gridDim.x * blockDim.y, the last block partial.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ float inv_rms(const T* xr, int n, float eps) {
  float sum_sq = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = to_f32(xr[i]);
    sum_sq += v * v;
  }
  return rsqrtf(row_sum(sum_sq) / n + eps);
}

// y = x · inv_rms(x) · w
template <typename T>
__device__ void forward(const T* x, const T* w, T* y, int rows, int n, float eps) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * n;
  T* yr = y + (size_t)row * n;
  const float inv = inv_rms(xr, n, eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = from_f32<T>(to_f32(xr[i]) * inv * to_f32(w[i]));
}

// dx = r · (g − x̂ · mean(g · x̂)) with r = inv_rms(x), x̂ = x·r, g = dy·w
template <typename T>
__device__ void grad_input(const T* x, const T* w, const T* dy, T* dx, int rows, int n, float eps) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const size_t off = (size_t)row * n;
  const float inv = inv_rms(x + off, n, eps);
  float dot = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) dot += to_f32(x[off + i]) * to_f32(dy[off + i]) * to_f32(w[i]);
  const float mean_gx = row_sum(dot) * inv / n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float g = to_f32(dy[off + i]) * to_f32(w[i]);
    dx[off + i] = from_f32<T>(inv * (g - to_f32(x[off + i]) * inv * mean_gx));
  }
}

// inv_rms of every row, in f32, for the weight gradient.
template <typename T>
__device__ void row_inv_rms(const T* x, float* out, int rows, int n, float eps) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const float inv = inv_rms(x + (size_t)row * n, n, eps);
  if (threadIdx.x == 0) out[row] = inv;
}

// dw, stage 1: block (x, y) sums dy·x·r over the `chunk` rows y·chunk.. of columns x·blockDim.x..
// into partial[y, col]. One thread per column: coalesced, and no atomics, so the result is
// deterministic.
template <typename T>
__device__ void grad_weight_partial(const T* x, const T* dy, const float* inv, float* partial, int rows, int n, int chunk) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n) return;
  const int first = blockIdx.y * chunk;
  const int last = min(rows, first + chunk);
  float acc = 0.f;
  for (int r = first; r < last; ++r) acc += to_f32(dy[(size_t)r * n + col]) * to_f32(x[(size_t)r * n + col]) * inv[r];
  partial[(size_t)blockIdx.y * n + col] = acc;
}

// dw, stage 2: dw[col] = Σ over chunks of partial[chunk, col].
template <typename T>
__device__ void grad_weight_finish(const float* partial, T* dw, int chunks, int n) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n) return;
  float acc = 0.f;
  for (int c = 0; c < chunks; ++c) acc += partial[(size_t)c * n + col];
  dw[col] = from_f32<T>(acc);
}

#define INSTANTIATE(T, S)                                                                                        \
  extern "C" __global__ void rms_norm_fwd_##S(const T* x, const T* w, T* y, int rows, int n, float eps) {        \
    forward<T>(x, w, y, rows, n, eps);                                                                           \
  }                                                                                                              \
  extern "C" __global__ void rms_norm_grad_input_##S(const T* x, const T* w, const T* dy, T* dx, int rows, int n, \
                                                      float eps) {                                              \
    grad_input<T>(x, w, dy, dx, rows, n, eps);                                                                   \
  }                                                                                                              \
  extern "C" __global__ void rms_norm_inv_rms_##S(const T* x, float* out, int rows, int n, float eps) {          \
    row_inv_rms<T>(x, out, rows, n, eps);                                                                        \
  }                                                                                                              \
  extern "C" __global__ void rms_norm_grad_weight_partial_##S(const T* x, const T* dy, const float* inv,         \
                                                               float* partial, int rows, int n, int chunk) {     \
    grad_weight_partial<T>(x, dy, inv, partial, rows, n, chunk);                                                 \
  }                                                                                                              \
  extern "C" __global__ void rms_norm_grad_weight_finish_##S(const float* partial, T* dw, int chunks, int n) {   \
    grad_weight_finish<T>(partial, dw, chunks, n);                                                               \
  }
FOR_EACH_FLOAT(INSTANTIATE)
