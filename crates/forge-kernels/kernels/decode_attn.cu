// Attention of decoding steps over per-sequence KV caches on the GPU ("flash decoding"): each new
// query row attends the cached keys and values 0..=position of its own sequence. A decode step has
// few rows (one per sequence) but long caches, so the positions are split across blocks (split-K)
// to fill the GPU, and a second kernel combines the splits' partial softmaxes.
// See src/decode_attn.rs for the op and its CPU reference (cached_attention::attend).
//
// Layout (what src/launch/decode_attn.rs passes):
//   q, o: [n, h, D]; k_new, v_new: [n, h_kv, D] (storage type T)
//   slots[s]: the row that split-K slot s attends (rows of a long prefill run go through
//   flash_attn.cu's flash_fwd_cached instead; src/decode_attn.rs plans which)
//   sequences[r]: row r's sequence z; keys[z], values[z]: device pointers to its cache,
//   [h_kv, capacities[z], D] (one entry per sequence, however many rows it has in the step)
//   positions[r]: where row r sits; it attends cached positions 0..=positions[r]
//   partial_o: [slots, h, splits, D] f32 (Σ exp(s - m)·v over the split, unnormalised),
//   partial_ml: [slots, h, splits, 2] f32 (m = the split's largest scaled score, l = Σ exp(s - m));
//   every element is written, a split past the row's positions as (-inf, 0) with zero sums.
//   Query head hq reads K/V head hq / (h / h_kv) (HF's repeat_kv).
//
// Design: block = one K/V head of one row over CHUNK positions (grid: slots × K/V heads × splits,
// slots in x, whose limit is 2^31 - 1: a prefill step may hold many rows), 4 warps; a warp takes every 4th
// position, each lane holds D / 32 consecutive elements of a row (lane·D/32 ..) and loads them as
// one vector access (4 to 16 bytes: a warp reads a whole key or value row in one coalesced load;
// q, o and the caches are 16-byte aligned, src/launch/decode_attn.rs checks), a warp reduction gives
// each score, and each warp keeps an online softmax per query head in registers. The warps' states
// merge through shared memory. No cp.async; untimed.
#include "common.cuh"

namespace decode {

constexpr int WARPS = 4;
constexpr int THREADS = 32 * WARPS;
// Positions per split: src/decode_attn.rs DECODE_CHUNK.
constexpr int CHUNK = 256;
// Query heads per K/V head at most (Qwen3: 1 to 8); src/decode_attn.rs checks it. The split kernel
// is built for groups of at most 2, 4 and 8 (G, src/decode_attn.rs GROUP_BOUNDS): its registers
// hold G query heads' state, so a smaller bound leaves room for more blocks per SM.
constexpr int MAX_GROUP = 8;

// N consecutive elements read or written as one vector access: its address must be aligned to
// the vector's size.
template <typename T, int N>
struct alignas(sizeof(T) * N) Lanes {
  T v[N];
};

template <typename T, int D, int G>
__device__ void split(const T* q, const T* const* keys, const T* const* values, const int* slots, const int* sequences, const int* positions,
                      const int* capacities, float* partial_o, float* partial_ml, int h, int h_kv, int splits, float scale) {
  constexpr int PER_LANE = D / 32;
  using Row = Lanes<T, PER_LANE>;
  using Acc = Lanes<float, PER_LANE>;
  static_assert(G <= MAX_GROUP, "a group bound above MAX_GROUP");
  __shared__ float warp_ml[WARPS][G][2];
  __shared__ __align__(16) float warp_acc[WARPS][G][D];
  const int slot = blockIdx.x, row = slots[slot], kv_head = blockIdx.y, split = blockIdx.z;
  const int group = h / h_kv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c0 = lane * PER_LANE;  // this lane's elements of a row: c0 .. c0 + PER_LANE
  const int begin = split * CHUNK, end = min(begin + CHUNK, positions[row] + 1);
  const int z = sequences[row];
  const size_t cache_offset = (size_t)kv_head * capacities[z] * D;
  const T* k = keys[z] + cache_offset;
  const T* v = values[z] + cache_offset;

  // Loops over the group run to G, unrolled, and stop at `group` (<= G, the launcher's choice):
  // constant indices keep these arrays in registers (a loop bounded by `group` alone put them in
  // local memory).
  float qr[G][PER_LANE], acc[G][PER_LANE], m[G], l[G];
  #pragma unroll
  for (int g = 0; g < G; ++g) {
    if (g >= group) break;
    const Row qg = *reinterpret_cast<const Row*>(q + ((size_t)row * h + kv_head * group + g) * D + c0);
    for (int i = 0; i < PER_LANE; ++i) {
      qr[g][i] = to_f32(qg.v[i]);
      acc[g][i] = 0.f;
    }
    m[g] = -INFINITY;
    l[g] = 0.f;
  }
  for (int p = begin + warp; p < end; p += WARPS) {
    const Row kp = *reinterpret_cast<const Row*>(k + (size_t)p * D + c0);
    const Row vp = *reinterpret_cast<const Row*>(v + (size_t)p * D + c0);
    float kr[PER_LANE], vr[PER_LANE];
    for (int i = 0; i < PER_LANE; ++i) {
      kr[i] = to_f32(kp.v[i]);
      vr[i] = to_f32(vp.v[i]);
    }
    #pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= group) break;
      float dot = 0.f;
      for (int i = 0; i < PER_LANE; ++i) dot += qr[g][i] * kr[i];
      const float s = warp_reduce<Sum>(dot) * scale;
      const float m_new = fmaxf(m[g], s);
      const float correction = expf(m[g] - m_new);  // exp(-inf) = 0 on the first position
      const float weight = expf(s - m_new);
      l[g] = l[g] * correction + weight;
      for (int i = 0; i < PER_LANE; ++i) acc[g][i] = acc[g][i] * correction + weight * vr[i];
      m[g] = m_new;
    }
  }
  #pragma unroll
  for (int g = 0; g < G; ++g) {
    if (g >= group) break;
    if (lane == 0) {
      warp_ml[warp][g][0] = m[g];
      warp_ml[warp][g][1] = l[g];
    }
    Acc out;
    for (int i = 0; i < PER_LANE; ++i) out.v[i] = acc[g][i];
    *reinterpret_cast<Acc*>(&warp_acc[warp][g][c0]) = out;
  }
  __syncthreads();
  // merge the warps: thread t takes elements t, t + THREADS, ... of the group's [group, D]
  for (int e = threadIdx.x; e < group * D; e += THREADS) {
    const int g = e / D, c = e % D;
    float m_all = -INFINITY;
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, warp_ml[w][g][0]);
    float l_all = 0.f, a_all = 0.f;
    if (m_all != -INFINITY) {  // else no position of this split is visible: (-inf, 0), zero sums
      for (int w = 0; w < WARPS; ++w) {
        const float f = expf(warp_ml[w][g][0] - m_all);
        l_all += warp_ml[w][g][1] * f;
        a_all += warp_acc[w][g][c] * f;
      }
    }
    const size_t at = ((size_t)slot * h + kv_head * group + g) * splits + split;
    partial_o[at * D + c] = a_all;
    if (c == 0) {
      partial_ml[at * 2] = m_all;
      partial_ml[at * 2 + 1] = l_all;
    }
  }
}

// o[slots[s], head] = Σ_i exp(m_i - M)·partial_o_i / Σ_i exp(m_i - M)·l_i over the splits i of
// slot s, M = max_i m_i. Block = one (slot, head), D threads.
template <typename T, int D>
__device__ void combine(const float* partial_o, const float* partial_ml, const int* slots, T* o, int h, int splits) {
  const int slot = blockIdx.x, row = slots[slot], head = blockIdx.y, c = threadIdx.x;
  const size_t first = ((size_t)slot * h + head) * splits;
  float m_all = -INFINITY;
  for (int s = 0; s < splits; ++s) m_all = fmaxf(m_all, partial_ml[(first + s) * 2]);
  float l_all = 0.f, a_all = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float m = partial_ml[(first + s) * 2];
    if (m == -INFINITY) continue;  // a split with no visible position
    const float f = expf(m - m_all);
    l_all += partial_ml[(first + s) * 2 + 1] * f;
    a_all += partial_o[(first + s) * D + c] * f;
  }
  o[((size_t)row * h + head) * D + c] = from_f32<T>(a_all / l_all);
}

// keys[r][kv_head, positions[r], :] = k_new[r, kv_head, :] (and values), grid-stride over
// n · h_kv · D elements.
template <typename T>
__device__ void append(const T* k_new, const T* v_new, T* const* keys, T* const* values, const int* sequences, const int* positions, const int* capacities,
                       int n, int h_kv, int d) {
  const size_t total = (size_t)n * h_kv * d;
  for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(e % d), kv_head = (int)(e / d % h_kv), row = (int)(e / ((size_t)d * h_kv));
    const int z = sequences[row];
    const size_t at = ((size_t)kv_head * capacities[z] + positions[row]) * d + c;
    keys[z][at] = k_new[e];
    values[z][at] = v_new[e];
  }
}

}  // namespace decode

#define DECODE_SPLIT_G(T, S, D, G)                                                                                     \
  extern "C" __global__ void __launch_bounds__(decode::THREADS) decode_attn_split_d##D##_g##G##_##S(                  \
      const T* q, const T* const* keys, const T* const* values, const int* slots, const int* sequences,                \
      const int* positions, const int* capacities, float* partial_o, float* partial_ml, int h, int h_kv, int splits,   \
      float scale) {                                                                                                   \
    decode::split<T, D, G>(q, keys, values, slots, sequences, positions, capacities, partial_o, partial_ml, h, h_kv,   \
                           splits, scale);                                                                             \
  }
#define DECODE_SPLIT(T, S, D)                                                                                          \
  DECODE_SPLIT_G(T, S, D, 2)                                                                                           \
  DECODE_SPLIT_G(T, S, D, 4)                                                                                           \
  DECODE_SPLIT_G(T, S, D, 8)                                                                                           \
  extern "C" __global__ void decode_attn_combine_d##D##_##S(const float* partial_o, const float* partial_ml,           \
                                                            const int* slots, T* o, int h, int splits) {              \
    decode::combine<T, D>(partial_o, partial_ml, slots, o, h, splits);                                                 \
  }
#define DECODE_KERNELS(T, S)                                                                                           \
  DECODE_SPLIT(T, S, 64)                                                                                               \
  DECODE_SPLIT(T, S, 128)                                                                                              \
  extern "C" __global__ void kv_append_##S(const T* k_new, const T* v_new, T* const* keys, T* const* values,           \
                                           const int* sequences, const int* positions, const int* capacities, int n,  \
                                           int h_kv, int d) {                                                         \
    decode::append<T>(k_new, v_new, keys, values, sequences, positions, capacities, n, h_kv, d);                       \
  }
FOR_EACH_FLOAT(DECODE_KERNELS)
