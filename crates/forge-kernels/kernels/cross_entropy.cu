// Per-token cross-entropy over rows of logits (see src/cross_entropy.rs): nll = max + log Σ exp(x − max)
// − x[target], zero for ignored targets; and its gradient (softmax − onehot(target)) · dnll, zero rows
// for ignored targets. Row kernels shaped as in rms_norm.cu; statistics in f32.
#include "common.cuh"

#define IGNORE_TARGET 0xffffffffu

// Row max and Σ exp(x − max) (every thread of the row gets both).
template <typename T>
__device__ __forceinline__ float2 row_stats(const T* row, int vocab) {
  float max = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) max = fmaxf(max, to_f32(row[i]));
  max = row_max(max);
  float sum = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(to_f32(row[i]) - max);
  return make_float2(max, row_sum(sum));
}

template <typename T>
__device__ void forward(const T* logits, const uint32_t* targets, float* nll, int rows, int vocab) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const uint32_t t = targets[row];
  if (t == IGNORE_TARGET) {  // uniform over the row: the whole row (block) leaves together
    if (threadIdx.x == 0) nll[row] = 0.f;
    return;
  }
  const T* x = logits + (size_t)row * vocab;
  const float2 stats = row_stats(x, vocab);
  if (threadIdx.x == 0) nll[row] = stats.x + logf(stats.y) - to_f32(x[t]);
}

template <typename T>
__device__ void grad(const T* logits, const uint32_t* targets, const float* dnll, T* dlogits, int rows, int vocab) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const uint32_t t = targets[row];
  const T* x = logits + (size_t)row * vocab;
  T* d = dlogits + (size_t)row * vocab;
  if (t == IGNORE_TARGET) {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) d[i] = from_f32<T>(0.f);
    return;
  }
  const float2 stats = row_stats(x, vocab);
  const float g = dnll[row], scale = g / stats.y;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float p = expf(to_f32(x[i]) - stats.x) * scale;
    d[i] = from_f32<T>(i == (int)t ? p - g : p);
  }
}

#define INSTANTIATE(T, S)                                                                                    \
  extern "C" __global__ void cross_entropy_fwd_##S(const T* logits, const uint32_t* targets, float* nll,     \
                                                   int rows, int vocab) {                                   \
    forward<T>(logits, targets, nll, rows, vocab);                                                           \
  }                                                                                                          \
  extern "C" __global__ void cross_entropy_grad_##S(const T* logits, const uint32_t* targets, const float* dnll, \
                                                    T* dlogits, int rows, int vocab) {                       \
    grad<T>(logits, targets, dnll, dlogits, rows, vocab);                                                    \
  }
FOR_EACH_FLOAT(INSTANTIATE)
