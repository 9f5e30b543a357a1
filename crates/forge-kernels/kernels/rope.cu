// Rotary position embedding, "rotate half" convention (see src/rope.rs): one thread per pair
// (x[i], x[i + d/2]) of one head at one position; cos/sin are f32 [cos_batch, s, d/2].
// sign = +1 rotates by θ (forward), −1 by −θ (the transpose: the backward).
#include "common.cuh"

template <typename T>
__device__ void rope(const T* x, const float* cos, const float* sin, T* y, int b, int s, int h, int d, int cos_batch,
                     float sign) {
  const int half = d / 2;
  const size_t pairs = (size_t)b * s * h * half;
  for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += (size_t)gridDim.x * blockDim.x) {
    const int i = (int)(p % half);
    const size_t head_row = p / half;  // (batch·s + position)·h + head
    const size_t position_row = head_row / h;
    const int si = (int)(position_row % s), bi = (int)(position_row / s);
    const size_t c = ((size_t)(cos_batch == 1 ? 0 : bi) * s + si) * half + i;
    const float cv = cos[c], sv = sign * sin[c];
    const size_t base = head_row * d;
    const float x1 = to_f32(x[base + i]), x2 = to_f32(x[base + i + half]);
    y[base + i] = from_f32<T>(x1 * cv - x2 * sv);
    y[base + i + half] = from_f32<T>(x2 * cv + x1 * sv);
  }
}

#define INSTANTIATE(T, S)                                                                                     \
  extern "C" __global__ void rope_##S(const T* x, const float* cos, const float* sin, T* y, int b, int s, int h, \
                                      int d, int cos_batch, float sign) {                                     \
    rope<T>(x, cos, sin, y, b, s, h, d, cos_batch, sign);                                                     \
  }
FOR_EACH_FLOAT(INSTANTIATE)
