// Fused AdamW step over f32 state, for a group of tensors in one launch (multi-tensor apply, as
// torch's fused AdamW): one pass reads the gradient, updates both moments and the weight (or its
// f32 master copy) and writes the parameter. The arithmetic is that of `StepScalars::apply` in
// forge-train's fused.rs, operation by operation, with explicitly rounded intrinsics so nvcc cannot
// contract them into FMAs: the GPU step equals the CPU step bit for bit.
//
// Layout (what src/launch/adamw.rs passes, src/adamw.rs `AdamWTensor`): a table of `count` tensors of
// one storage type; tensor i owns blocks first_block .. first_block + ceil(n / CHUNK) of the grid,
// each block updating CHUNK consecutive elements. Each tensor has its own scalars (its own step
// count and weight decay).
#include "common.cuh"

namespace adamw {

// Elements per block (src/adamw.rs ADAMW_CHUNK): 64 per thread of the 256 (ADAMW_THREADS).
constexpr size_t CHUNK = 16384;

struct Scalars {
  float grad_scale, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, step_size;
};

// `master` is null when the parameter itself is f32 (or pure-bf16 training keeps no master copy).
template <typename T>
struct Tensor {
  T* param;
  const T* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* master;
  unsigned long long n;
  unsigned long long first_block;
  Scalars k;
};

template <typename T>
__device__ void update(const Tensor<T>& t, size_t i) {
  const Scalars& k = t.k;
  const float g = __fmul_rn(to_f32(t.grad[i]), k.grad_scale);
  const float w = __fmul_rn(t.master ? t.master[i] : to_f32(t.param[i]), k.decay);
  const float m = __fadd_rn(t.exp_avg[i], __fmul_rn(k.one_minus_beta1, __fsub_rn(g, t.exp_avg[i])));
  const float v = __fadd_rn(__fmul_rn(t.exp_avg_sq[i], k.beta2), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
  t.exp_avg[i] = m;
  t.exp_avg_sq[i] = v;
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bias_correction2_sqrt), k.eps);
  const float updated = __fsub_rn(w, __fmul_rn(k.step_size, __fdiv_rn(m, denom)));
  if (t.master) t.master[i] = updated;
  t.param[i] = from_f32<T>(updated);
}

template <typename T>
__device__ void group(const Tensor<T>* tensors, int count) {
  // this block's tensor: the last whose first block is at or before it (first blocks ascend)
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tensors[mid].first_block <= blockIdx.x) lo = mid;
    else hi = mid - 1;
  }
  const Tensor<T> t = tensors[lo];  // a copy in registers: the writes below cannot alias it
  const size_t begin = (blockIdx.x - t.first_block) * CHUNK;
  const size_t end = begin + CHUNK < t.n ? begin + CHUNK : t.n;
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) update(t, i);
}

}  // namespace adamw

#define INSTANTIATE(T, S)                                                                       \
  extern "C" __global__ void adamw_##S(const adamw::Tensor<T>* tensors, int count) {            \
    adamw::group<T>(tensors, count);                                                            \
  }
FOR_EACH_FLOAT(INSTANTIATE)
