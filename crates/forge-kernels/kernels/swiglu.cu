// SwiGLU gate of the Qwen3 MLP (see src/swiglu.rs): y = silu(g)·u, and both gradients in one pass,
// dg = dy·u·σ(g)·(1 + g·(1 − σ(g))) into grads[0, n) and du = dy·g·σ(g) into grads[n, 2n) (the CPU
// op's packed [2, ..dims] output). The MLP's largest activation, read once and written once:
// bandwidth decides, so a thread moves 16-byte packs (one 128-bit load or store per operand) when
// every pointer is 16-byte aligned and n a whole number of packs — always so for the model's
// tensors — and single elements otherwise.
#include "common.cuh"

template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

template <typename T>
__device__ __forceinline__ bool packs_fit(int n, const void* a, const void* b, const void* c, const void* d = nullptr) {
  return n % Pack<T>::N == 0 && (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15) == 0;
}

// Calls f(i) for every i < count, grid-stride.
template <typename F>
__device__ __forceinline__ void grid_stride(size_t count, F f) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) f(i);
}

template <typename T>
__device__ __forceinline__ T gated(T g, T u) {
  const float x = to_f32(g);
  return from_f32<T>(x * sigmoid(x) * to_f32(u));
}

template <typename T>
__device__ __forceinline__ void gated_grads(T g, T u, T dy, T& dg, T& du) {
  const float x = to_f32(g), s = sigmoid(x), d = to_f32(dy);
  dg = from_f32<T>(d * to_f32(u) * s * (1.f + x * (1.f - s)));
  du = from_f32<T>(d * x * s);
}

template <typename T>
__device__ void swiglu_fwd(const T* g, const T* u, T* y, int n) {
  using P = Pack<T>;
  if (packs_fit<T>(n, g, u, y)) {
    grid_stride(n / P::N, [&](size_t p) {
      const P gp = ((const P*)g)[p], up = ((const P*)u)[p];
      P yp;
      for (int k = 0; k < P::N; ++k) yp.v[k] = gated(gp.v[k], up.v[k]);
      ((P*)y)[p] = yp;
    });
  } else {
    grid_stride(n, [&](size_t i) { y[i] = gated(g[i], u[i]); });
  }
}

template <typename T>
__device__ void swiglu_grad(const T* g, const T* u, const T* dy, T* grads, int n) {
  using P = Pack<T>;
  T *dg = grads, *du = grads + n;
  if (packs_fit<T>(n, g, u, dy, grads)) {
    grid_stride(n / P::N, [&](size_t p) {
      const P gp = ((const P*)g)[p], up = ((const P*)u)[p], dyp = ((const P*)dy)[p];
      P dgp, dup;
      for (int k = 0; k < P::N; ++k) gated_grads(gp.v[k], up.v[k], dyp.v[k], dgp.v[k], dup.v[k]);
      ((P*)dg)[p] = dgp;
      ((P*)du)[p] = dup;
    });
  } else {
    grid_stride(n, [&](size_t i) { gated_grads(g[i], u[i], dy[i], dg[i], du[i]); });
  }
}

#define INSTANTIATE(T, S)                                                                                  \
  extern "C" __global__ void swiglu_fwd_##S(const T* g, const T* u, T* y, int n) { swiglu_fwd<T>(g, u, y, n); } \
  extern "C" __global__ void swiglu_grad_##S(const T* g, const T* u, const T* dy, T* grads, int n) {        \
    swiglu_grad<T>(g, u, dy, grads, n);                                                                    \
  }
FOR_EACH_FLOAT(INSTANTIATE)
