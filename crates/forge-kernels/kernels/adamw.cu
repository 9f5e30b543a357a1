// Fused AdamW step over f32 state: one pass reads the gradient, updates both moments and the
// weight (or its f32 master copy) and writes the parameter. The arithmetic is that of
// `StepScalars::apply` in forge-train's fused.rs, operation by operation, with explicitly rounded
// intrinsics so nvcc cannot contract them into FMAs: the GPU step equals the CPU step bit for bit.
#include "common.cuh"

struct Scalars {
  float grad_scale, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, step_size;
};

template <typename T>
__device__ void adamw(T* param, const T* grad, float* exp_avg, float* exp_avg_sq, float* master, size_t n, Scalars k) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float g = __fmul_rn(to_f32(grad[i]), k.grad_scale);
    const float w = __fmul_rn(master ? master[i] : to_f32(param[i]), k.decay);
    const float m = __fadd_rn(exp_avg[i], __fmul_rn(k.one_minus_beta1, __fsub_rn(g, exp_avg[i])));
    const float v = __fadd_rn(__fmul_rn(exp_avg_sq[i], k.beta2), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bias_correction2_sqrt), k.eps);
    const float updated = __fsub_rn(w, __fmul_rn(k.step_size, __fdiv_rn(m, denom)));
    if (master) master[i] = updated;
    param[i] = from_f32<T>(updated);
  }
}

// `master` is null when the parameter itself is f32 (or pure-bf16 training keeps no master copy).
#define INSTANTIATE(T, S)                                                                                 \
  extern "C" __global__ void adamw_##S(T* param, const T* grad, float* exp_avg, float* exp_avg_sq,         \
                                       float* master, size_t n, Scalars k) {                              \
    adamw<T>(param, grad, exp_avg, exp_avg_sq, master, n, k);                                            \
  }
FOR_EACH_FLOAT(INSTANTIATE)
