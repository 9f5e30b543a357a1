// Shared by the kernels: element conversion (all arithmetic is f32), reductions, instantiation.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// A kernel's dynamic shared memory (the launch sets its size), 16-byte aligned for vector access.
// Under host emulation (crates/forge-kernels-emu) simt.h defines it instead.
#ifndef FORGE_HOST_EMULATION
#define DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// Round-to-nearest-even, as the CPU kernels (half crate) and torch's .to() round.
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

struct Sum {
  static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
  static constexpr float identity = 0.f;
};
struct Max {
  static __device__ __forceinline__ float apply(float a, float b) { return fmaxf(a, b); }
  static constexpr float identity = -INFINITY;
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Reduction over the blockDim.x threads that share one row (threadIdx.y); every one of them gets
// the result. blockDim.x is a multiple of 32 and at most 1024; when it is above 32 the block holds
// a single row (blockDim.y == 1), so the barriers below are reached by the whole block.
template <typename Op>
__device__ __forceinline__ float row_reduce(float v) {
  __shared__ float partial[32];
  v = warp_reduce<Op>(v);
  if (blockDim.x == 32) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x >> 5) ? partial[lane] : Op::identity;
  return warp_reduce<Op>(v);
}

__device__ __forceinline__ float row_sum(float v) { return row_reduce<Sum>(v); }
__device__ __forceinline__ float row_max(float v) { return row_reduce<Max>(v); }

// One extern "C" entry point per storage type, named <root>_<dtype> as candle's kernel_name().
#define FOR_EACH_FLOAT(M) M(float, f32) M(__nv_bfloat16, bf16) M(__half, f16)
