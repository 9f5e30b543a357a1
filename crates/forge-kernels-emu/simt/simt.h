// Host emulation of the CUDA C++ that kernels/*.cu use, so forge-kernels' kernels run unchanged on
// the CPU (crates/forge-kernels-emu). Force-included before each kernel file (`-include simt.h`,
// with FORGE_HOST_EMULATION defined); `simt/include` stands in for the CUDA headers.
//
// Execution model: a launch runs its blocks one after another on the calling OS thread; inside a
// block every CUDA thread is a fiber with its own stack. A fiber runs until it reaches a block
// barrier (__syncthreads) or a warp collective (shuffle, mma.sync, ldmatrix), then yields; a barrier
// releases when every live thread of the block (collectives: all 32 lanes of the warp) has arrived.
// Asynchronous copies (cp.async) land as late as the PTX ISA allows and are visible as early as it
// allows: the destination is poisoned (NaN) when a copy is issued and written only when the issuing
// thread waits for its group, so a read before the wait, or of another thread's copy before the
// barrier after that thread's wait, sees NaN; a thread that exits with copies it never waited for
// fails the launch.
// Warp collectives compute their results from what each lane brought, following the PTX ISA's
// definitions: the emulated tensor-core product is the fragment map of the PTX ISA ("Matrix
// Fragments for mma.m16n8k16"), written here independently of the kernel that relies on it.
//
// What a launch checks (simt.cpp): a barrier or collective some threads never reach (deadlock), a
// collective with a partial lane mask, ldmatrix rows outside shared memory or misaligned (and it
// counts what the warps' memory requests cost: bank conflicts of ldmatrix phases and of other
// shared-memory requests, 32-byte sectors of global ones, simt_take_memory_counts); through
// guard pages and trapping UB checks (-fsanitize=bounds,alignment,...), any access past a buffer,
// past the dynamic shared memory the launch asked for, or past a fixed-size array; and, through
// -fsanitize=thread's instrumentation (hooks in simt.cpp), every race racecheck would report: two
// threads touching a byte of shared or global memory, one of them writing, with no __syncthreads
// between them (a warp collective is no fence) or from different blocks of the launch; and a read
// of shared memory no thread of the block has written.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // as CUDA's host_defines.h: allowed among the decl-specifiers
// One copy per launch (blocks run one at a time on one OS thread; tests launch from several).
#define __shared__ static thread_local
#define DYNAMIC_SHARED(name) unsigned char* const name = ::simt::dynamic_shared()
#define __syncthreads() ::simt::sync_block()

using std::max;
using std::min;

struct dim3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
// IEEE single-precision operations, rounded to nearest: what the host's SSE arithmetic does
// (-std=c++17 keeps GCC from contracting them into FMAs).
inline float rsqrtf(float v) { return 1.f / sqrtf(v); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }

namespace simt {
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_block();
// Lane of the calling thread: its linear index in the block, mod 32 (as the hardware numbers lanes).
int lane();
unsigned char* dynamic_shared();
// Every lane of the calling warp deposits `bytes` from `mine`; once all 32 have, each gets all 32
// deposits (lane order) in `all`. `mask` must name the whole warp, as every caller here does.
void warp_exchange(unsigned mask, const void* mine, size_t bytes, void* all, const char* what);
// Counts the bank conflicts of an ldmatrix.x4's four phases (`rows`: the 32 lanes' row addresses;
// simt_take_memory_counts reads the totals).
void count_ldmatrix_wavefronts(const void* const* rows);
// Brackets the calling thread's reads of an ldmatrix's rows: counted as its phases, not as
// ordinary shared-memory requests.
void ldmatrix_reads(bool inside);
// Whether `p .. p + bytes` lies inside this block's dynamic shared memory.
bool in_dynamic_shared(const void* p, size_t bytes);
[[noreturn]] void fail(const char* what);
// cp.async.cg.shared.global [dst], [src], 16, src_bytes (0 or 16: the rest is zero-filled),
// cp.async.commit_group and cp.async.wait_group n, for the calling thread.
void cp_async_16(void* dst, const void* src, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending_groups);
}  // namespace simt

#define threadIdx (::simt::thread_idx())
#define blockIdx (::simt::block_idx())
#define blockDim (::simt::block_dim())
#define gridDim (::simt::grid_dim())

// ---- 16-bit floats: storage plus round-to-nearest-even conversions --------------------------
struct __nv_bfloat16 {
  uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct __half {
  uint16_t bits;
};

inline uint32_t simt_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline float simt_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline float __bfloat162float(__nv_bfloat16 v) { return simt_float((uint32_t)v.bits << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = simt_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)}; }

inline float __half2float(__half h) {
  const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
  if (exp == 0x1f) return simt_float(sign | 0x7f800000u | (man << 13));          // inf, NaN
  if (exp != 0) return simt_float(sign | ((exp + 112) << 23) | (man << 13));     // normal
  return simt_float(sign) + (man ? (sign ? -1.f : 1.f) * ldexpf((float)man, -24) : 0.f);  // subnormal, zero
}
inline __half __float2half_rn(float f) {
  const uint32_t u = simt_bits(f), sign = (u >> 16) & 0x8000u;
  const float a = fabsf(f);
  if (a != a) return __half{(uint16_t)(sign | 0x7e00u)};
  if (a >= 65520.f) return __half{(uint16_t)(sign | 0x7c00u)};  // rounds to inf
  if (a < 6.103515625e-05f) {                                   // subnormal half: multiples of 2^-24
    return __half{(uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.f))};
  }
  uint32_t v = simt_bits(a);
  v += 0xfffu + ((v >> 13) & 1u);  // round the 13 dropped mantissa bits to nearest even
  return __half{(uint16_t)(sign | (((v >> 23) - 112) << 10) | ((v >> 13) & 0x3ffu))};
}

// ---- warp collectives -------------------------------------------------------------------------
// Left out of the race tracker's instrumentation: their scratch arrays hold registers, not memory
// other threads see, and tracking them would cost more than the rest of the emulated flash kernels.
#define SIMT_REGISTERS_ONLY __attribute__((no_sanitize("thread")))

SIMT_REGISTERS_ONLY inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  float all[32];
  simt::warp_exchange(mask, &v, sizeof v, all, "__shfl_xor_sync");
  return all[::simt::lane() ^ (unsigned)lane_mask];
}

namespace simt {
// The bf16 halves of a register pair as floats (a bf16 is the upper half of an f32), written with a
// builtin so that mma's untracked body inlines them (GCC inlines no tracked function into it).
SIMT_REGISTERS_ONLY inline float bf16_lo(uint32_t pair) { return __builtin_bit_cast(float, pair << 16); }
SIMT_REGISTERS_ONLY inline float bf16_hi(uint32_t pair) { return __builtin_bit_cast(float, pair & 0xffff0000u); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: D = A·B + C for the warp. PTX ISA fragment
// layout (groupID = lane >> 2, threadID_in_group = lane % 4; each .b32 holds two bf16, the lower
// index in the lower half):
//   A 16x16: a_i (i = 0..7) at row groupID + 8·((i >> 1) & 1), col 2·threadID_in_group + (i & 1) + 8·(i >= 4)
//   B 16x8:  b_i (i = 0..3) at row 2·threadID_in_group + (i & 1) + 8·(i >= 2), col groupID
//   C/D 16x8: c_i (i = 0..3) at row groupID + 8·(i >= 2), col 2·threadID_in_group + (i & 1)
SIMT_REGISTERS_ONLY inline void mma_m16n8k16_bf16_f32(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  struct Operands {
    uint32_t a[4], b[2];
  } mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[32];
  warp_exchange(0xffffffffu, &mine, sizeof mine, all, "mma.sync.m16n8k16");
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane >> 2, tig = lane & 3;
    for (int i = 0; i < 8; ++i) {
      const uint32_t reg = all[lane].a[i >> 1];
      A[group + 8 * ((i >> 1) & 1)][2 * tig + (i & 1) + 8 * (i >= 4)] = (i & 1) ? bf16_hi(reg) : bf16_lo(reg);
    }
    for (int i = 0; i < 4; ++i) {
      const uint32_t reg = all[lane].b[i >> 1];
      B[2 * tig + (i & 1) + 8 * (i >= 2)][group] = (i & 1) ? bf16_hi(reg) : bf16_lo(reg);
    }
  }
  const int lane = ::simt::lane(), group = lane >> 2, tig = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = group + 8 * (i >= 2), col = 2 * tig + (i & 1);
    float sum = 0.f;  // bf16 products are exact in f32
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[i] += sum;
  }
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8j..8j+7 give the addresses of rows 0..7 of
// matrix j (16 bytes each, 16-byte aligned, in shared memory). Without .trans, register j of a lane
// holds row groupID, elements 2·threadID_in_group and +1; .trans delivers the transposed matrix, so
// register j holds elements (row 2·threadID_in_group, col groupID) and (row +1, col groupID).
inline void ldmatrix_x4_trans_b16(uint32_t r[4], const void* row_address) {
  const void* rows[32];
  warp_exchange(0xffffffffu, &row_address, sizeof row_address, rows, "ldmatrix.x4.trans");
  const int lane = ::simt::lane(), group = lane >> 2, tig = lane & 3;
  if (lane == 0) count_ldmatrix_wavefronts(rows);  // once per warp
  ldmatrix_reads(true);
  for (int j = 0; j < 4; ++j) {
    for (int i = 0; i < 8; ++i) {
      if (((uintptr_t)rows[8 * j + i] & 15) != 0) fail("ldmatrix: a row address is not 16-byte aligned");
      if (!in_dynamic_shared(rows[8 * j + i], 16)) fail("ldmatrix: a row address is outside the block's dynamic shared memory");
    }
    uint16_t lo, hi;
    memcpy(&lo, (const unsigned char*)rows[8 * j + 2 * tig] + 2 * group, 2);
    memcpy(&hi, (const unsigned char*)rows[8 * j + 2 * tig + 1] + 2 * group, 2);
    r[j] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
  ldmatrix_reads(false);
}
}  // namespace simt
