// Fused causal attention for training ("flash attention"): forward that also returns the per-row
// log-sum-exp, and backward recomputing the probabilities from it. bf16 in and out, f32
// accumulation, head_dim 64 or 128 (template), grouped K/V heads (GQA), variable-length batches.
// See src/flash_attn.rs for the op and FLASH.md for what is (un)measured.
//
// Layout (what src/launch/flash_attn.rs passes):
//   q, o, dq: [total, h, D]      k, v, dk, dv: [total, h_kv, D]      (rows of all sequences, packed)
//   lse, delta: [h, total] f32   (per query head, per row: natural-log log-sum-exp; rowsum(dO∘O))
//   starts[n], rows[n], valid[n]: sequence z owns rows starts[z] .. starts[z] + rows[z]; its query
//   row i (0-based in the sequence) attends its keys j with j <= i and j < valid[z].
//   Packed sequences: valid = rows. Right padding ([b, s] batches): rows = s, valid = the real
//   length (>= 1), so padded query rows attend every real key, as the additive-mask path does.
//   Query head hq reads K/V head hq / (h / h_kv) (HF's repeat_kv).
//
// Design (correctness and clarity first; not tuned — nothing here has been timed yet):
//   - Tensor cores through `mma.sync.m16n8k16` bf16 -> f32 (inline PTX) because its fragment
//     layout is specified (PTX ISA, "Matrix Fragments for mma.m16n8k16"): the online softmax works
//     on the score accumulators in registers, and a score accumulator pair *is* the A operand of
//     the next product (P·V, dS·K), so probabilities never go through shared memory. WMMA hides
//     that layout and would need a shared-memory round trip.
//   - Fragment map used throughout (lane = 4·g + t, g = lane / 4, t = lane % 4):
//       A 16x16 (row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//       B 16x8  (k x n):     b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//       C 16x8  (f32):       c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
//     An operand whose pairs are contiguous in shared memory is read with one 32-bit load; one
//     whose pairs run down a column (V in P·V, dO in Pᵀ·dO, Q in dSᵀ·Q, K in dS·K) with
//     `ldmatrix.trans`, which delivers exactly b0/b1 from row-major tiles.
//   - Shared-memory tiles are row-major with rows padded by 8 elements (D + 8): consecutive rows
//     then start 4 banks apart, so the 8 rows × 4 lanes of a fragment load, and the 8 row
//     addresses of an ldmatrix phase, hit 32 distinct banks.
//   - One warp owns 16 rows of every tile product; 4 warps per block.
//   - Forward: block = 64 query rows of one head of one sequence, loop over 64-key tiles up to
//     the causal/length limit, online softmax in the log2 domain (exp2 of scores pre-scaled by
//     scale·log2 e). The same tile routine serves the engine's prefill over per-sequence KV caches
//     (`flash_fwd_cached`): a chunk's rows are queries at positions offset.. of a cached sequence.
//   - Backward without atomics (deterministic): `flash_bwd_delta` computes delta = rowsum(dO∘O);
//     `flash_bwd_dkdv` owns 64 keys of one K/V head and loops over the query heads of its group and
//     the query tiles that can see those keys (so the GQA sum happens in registers);
//     `flash_bwd_dq` owns 64 query rows of one head and loops over key tiles. P and dP are thus
//     computed twice (7 tile products per tile pair instead of 5): the price of no atomics and
//     no f32 dQ scratch. A dQ-by-atomics variant is the obvious next step once timed.
//   - The forward's K/V tiles arrive by cp.async (sm_80+): the next K tile is in flight during the
//     softmax and p·v of the current one, the next V tile during the next q·kᵀ (same shared memory,
//     two more barriers per tile). The backward's tiles are loaded synchronously.
//   - Tiles are loaded with 16-byte vector loads; rows outside the sequence are zero-filled (never
//     read from a neighbour or out of bounds), scores of masked or out-of-range pairs are set to
//     -inf before the exponential, so every partial tile (lengths not multiples of 64) is exact.
//   - Dynamic shared memory (the launcher raises the per-function limit above 48 KB when needed):
//     forward 2·64 rows, dq 4·64 rows, dkdv (2·64 + 2·BR) rows of D + 8 bf16.
#include "common.cuh"

namespace flash {

constexpr int WARPS = 4;
constexpr int THREADS = 32 * WARPS;
constexpr float LOG2E = 1.4426950408889634f;

#ifdef FORGE_HOST_EMULATION
// crates/forge-kernels-emu runs this file on the CPU, where simt.h emulates the two instructions.
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) { simt::mma_m16n8k16_bf16_f32(c, a, b0, b1); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16* p) { simt::ldmatrix_x4_trans_b16(r, p); }
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool inside) { simt::cp_async_16(dst, src, inside ? 16 : 0); }
__device__ __forceinline__ void cp_async_commit() { simt::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { simt::cp_async_wait(N); }
#else
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// c += a·b (m16n8k16, bf16 inputs, f32 accumulators)
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four transposed 8x8 matrices: lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// 16 bytes global -> shared without staging in registers (sm_80+), zero-filled where !inside (src
// then is only a valid address, never read); lands by the matching cp_async_wait.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool inside) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(inside ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Until at most N of this thread's most recent groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
#endif

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo: the lower column
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// A fragment of the 16x16 block at (row0, col0) of a row-major shared tile with leading dim ld.
__device__ __forceinline__ void load_a(uint32_t a[4], const __nv_bfloat16* s, int ld, int row0, int col0, int g, int t) {
  const __nv_bfloat16* p = s + (row0 + g) * ld + col0 + 2 * t;
  a[0] = ld32(p);
  a[1] = ld32(p + 8 * ld);
  a[2] = ld32(p + 8);
  a[3] = ld32(p + 8 * ld + 8);
}

// B fragment (k x n = 16 x 8) of Xᵀ where X is a row-major shared tile: B[k][n] = X[n0 + n][k0 + k].
__device__ __forceinline__ void load_b_of_transposed(uint32_t& b0, uint32_t& b1, const __nv_bfloat16* s, int ld, int n0, int k0,
                                                     int g, int t) {
  const __nv_bfloat16* p = s + (n0 + g) * ld + k0 + 2 * t;
  b0 = ld32(p);
  b1 = ld32(p + 8);
}

// B fragments of two adjacent n-tiles (n0, n0 + 8) of X itself (k = rows k0..k0+15), via ldmatrix.trans:
// b[0], b[1] for columns n0..n0+7 and b[2], b[3] for n0+8..n0+15.
__device__ __forceinline__ void load_b_pair(uint32_t b[4], const __nv_bfloat16* s, int ld, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, s + (k0 + (lane & 15)) * ld + n0 + 8 * (lane >> 4));
}

// The A fragment (k = 16 columns kc·16..) of a 16-row block whose values are C fragments
// c[2kc] (columns +0..7) and c[2kc + 1] (columns +8..15): the accumulator-to-operand identity.
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// Row 0 of head `head` of a sequence starting at row `start` of a [rows, heads, D] tensor.
template <int D>
__device__ __forceinline__ const __nv_bfloat16* head_rows(const __nv_bfloat16* g, size_t start, int heads, int head) {
  return g + (start * heads + head) * D;
}

// Rows row0.. of a [ROWS, D] tile (row r of the head at rows + r·stride) into shared memory
// (leading dim D + 8); rows at or beyond `limit` are zero.
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* rows, int row0, int limit, size_t stride) {
  constexpr int LD = D + 8, CHUNKS = D / 8;
  for (int i = threadIdx.x; i < ROWS * CHUNKS; i += THREADS) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit) v = *reinterpret_cast<const uint4*>(rows + (row0 + r) * stride + c * 8);
    *reinterpret_cast<uint4*>(s + r * LD + c * 8) = v;
  }
}

// load_tile through cp.async: issues the copies (rows at or beyond `limit` zero-filled) and returns;
// the tile is there after this thread's cp_async_wait for its group and a barrier.
template <int D, int ROWS>
__device__ __forceinline__ void load_tile_async(__nv_bfloat16* s, const __nv_bfloat16* rows, int row0, int limit, size_t stride) {
  constexpr int LD = D + 8, CHUNKS = D / 8;
  for (int i = threadIdx.x; i < ROWS * CHUNKS; i += THREADS) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool inside = row0 + r < limit;
    cp_async16(s + r * LD + c * 8, inside ? rows + (row0 + r) * stride + c * 8 : rows, inside);
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Whether query row qi may see key kj (both relative to the sequence).
__device__ __forceinline__ bool visible(int qi, int kj, int rows, int valid) { return kj <= qi && kj < valid && qi < rows; }

// Keys a tile of queries [q0, q0 + n) may see: [0, min(q0 + n, rows, valid)).
__device__ __forceinline__ int key_limit(int q0, int n, int rows, int valid) { return min(min(q0 + n, rows), valid); }

// ---------------------------------------------------------------------------------------------
// Forward of one tile of up to 64 query rows of one head: q rows at q + i·q_stride (i < q_rows),
// keys and values at k, v + j·kv_stride. Query row i sits at key position offset + i and sees keys
// j <= offset + i with j < valid (training: offset = the tile's first row in its sequence; a
// prefill over a KV cache: the position of the chunk's first row). Writes o (row i at
// o + i·q_stride) and, if `lse` is not null, lse[i] (natural log). Block 128, smem 2·64·(D+8) bf16.
template <int D>
__device__ void forward_tile(const __nv_bfloat16* q, int q_rows, size_t q_stride, const __nv_bfloat16* k, const __nv_bfloat16* v,
                             size_t kv_stride, int offset, int valid, __nv_bfloat16* o, float* lse, float scale) {
  constexpr int BR = 64, BC = 64, LD = D + 8;
  DYNAMIC_SHARED(smem_raw);
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* vs = ks + BC * LD;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const float scale2 = scale * LOG2E;
  // positions are key coordinates: query row i is at offset + i, and rows end at `end`
  const int end = offset + q_rows;

  // 1. this warp's 16 query rows as A fragments (staged through the K buffer)
  load_tile<D, BR>(ks, q, 0, q_rows, q_stride);
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a(qf[kk], ks, LD, warp * 16, kk * 16, g, t);
  __syncthreads();

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g and g + 8 (log2 domain max; partial sums)
  const int qi[2] = {warp * 16 + g, warp * 16 + g + 8};
  const int qp[2] = {offset + qi[0], offset + qi[1]};

  // K and V tiles arrive by cp.async, one group each, the next one's copy in flight while this one
  // is used: K(j+1) during softmax and p·v of tile j, V(j+1) during q·kᵀ of tile j+1.
  const int keys = key_limit(offset, BR, end, valid);
  if (keys > 0) {
    load_tile_async<D, BC>(ks, k, 0, keys, kv_stride);
    cp_async_commit();
    load_tile_async<D, BC>(vs, v, 0, keys, kv_stride);
    cp_async_commit();
  }
  for (int k0 = 0; k0 < keys; k0 += BC) {
    const bool more = k0 + BC < keys;
    cp_async_wait<1>();  // K(j) has landed (V(j) may not have)
    __syncthreads();
    // 2. scores s = q·kᵀ for 16 rows x 64 keys
    float s[BC / 8][4];
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < BC / 8; ++n) {
        uint32_t b0, b1;
        load_b_of_transposed(b0, b1, ks, LD, n * 8, kk * 16, g, t);
        mma(s[n], qf[kk], b0, b1);
      }
    }
    __syncthreads();  // every warp is done with K(j)
    if (more) load_tile_async<D, BC>(ks, k, k0 + BC, keys, kv_stride);
    cp_async_commit();  // (empty after the last tile: keeps one group per tile for the waits)
    // 3. scale, mask, online softmax (element e of tile n: row qi[e / 2], key k0 + 8n + 2t + e % 2)
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kj = k0 + n * 8 + 2 * t + (e & 1);
        s[n][e] = visible(qp[e >> 1], kj, end, valid) ? s[n][e] * scale2 : -INFINITY;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[n][e]);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row that has seen no key yet: exp2(-inf) = 0
      alpha[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - base[e >> 1]);
        l[e >> 1] += s[n][e];
      }
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }
    // 4. acc += p·v: p's accumulators are the A operand; v's columns via ldmatrix.trans
    cp_async_wait<1>();  // V(j) has landed (K(j+1) may not have)
    __syncthreads();
#pragma unroll
    for (int kc = 0; kc < BC / 16; ++kc) {
      uint32_t a[4];
      c_to_a(a, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        load_b_pair(b, vs, LD, kc * 16, n * 8, lane);
        mma(acc[n], a, b[0], b[1]);
        mma(acc[n + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with V(j)
    if (more) load_tile_async<D, BC>(vs, v, k0 + BC, keys, kv_stride);
    cp_async_commit();
  }
  // (the groups still open here are the two empty ones committed after the last tile)

  // 5. normalise and write o (bf16) and lse (natural log) of the tile's rows
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = quad_sum(l[r]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    if (qi[r] >= q_rows) continue;
    __nv_bfloat16* out = o + qi[r] * q_stride;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      __nv_bfloat162 pair = __floats2bfloat162_rn(acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv);
      *reinterpret_cast<__nv_bfloat162*>(out + n * 8 + 2 * t) = pair;
    }
    if (lse != nullptr && t == 0) lse[qi[r]] = sum > 0.f ? (m[r] + log2f(sum)) / LOG2E : -INFINITY;
  }
}

// Forward of training batches. grid (ceil(max rows / 64), h, sequences): 64 query rows of one head
// of one sequence per block.
template <int D>
__device__ void forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o, float* lse,
                        const int* starts, const int* rows_of, const int* valid_of, int total, int h, int h_kv, float scale) {
  constexpr int BR = 64;
  const int z = blockIdx.z, head = blockIdx.y, q0 = blockIdx.x * BR;
  const int rows = rows_of[z];
  if (q0 >= rows) return;
  const size_t start = starts[z];
  const int kv_head = head / (h / h_kv);
  const size_t first = start + q0;
  forward_tile<D>(head_rows<D>(q, first, h, head), min(BR, rows - q0), (size_t)h * D, head_rows<D>(k, start, h_kv, kv_head),
                  head_rows<D>(v, start, h_kv, kv_head), (size_t)h_kv * D, q0, valid_of[z], o + (first * h + head) * D,
                  lse + (size_t)head * total + first, scale);
}

// Forward of a prefill step over per-sequence KV caches (what kernels/decode_attn.cu's split-K
// kernel does row by row, here on tensor cores for runs of a sequence's consecutive rows).
// q, o: [n, h, D]; keys[z], values[z]: sequence z's cache [h_kv, capacities[z], D], already holding
// the step's rows (kv_append ran first); tiles[4·b .. 4·b + 4] = (first row of the step, rows
// (1..64), position of the first row, sequence) of block b. grid (tiles, h).
template <int D>
__device__ void forward_cached(const __nv_bfloat16* q, const __nv_bfloat16* const* keys, const __nv_bfloat16* const* values,
                               const int* capacities, const int* tiles, __nv_bfloat16* o, int h, int h_kv, float scale) {
  const int* tile = tiles + 4 * (size_t)blockIdx.x;
  const int row = tile[0], rows = tile[1], position = tile[2], z = tile[3];
  const int head = blockIdx.y, kv_head = head / (h / h_kv);
  const size_t cache = (size_t)kv_head * capacities[z] * D;
  const size_t at = ((size_t)row * h + head) * D;
  forward_tile<D>(q + at, rows, (size_t)h * D, keys[z] + cache, values[z] + cache, D, position, position + rows, o + at, nullptr, scale);
}

// ---------------------------------------------------------------------------------------------
// Backward, step 1: delta[head][row] = Σ_d dO·O (f32). One warp per (row, head); grid-stride.
template <int D>
__device__ void bwd_delta(const __nv_bfloat16* o, const __nv_bfloat16* dout, float* delta, int total, int h) {
  const int lane = threadIdx.x & 31;
  const size_t warps = (size_t)gridDim.x * (blockDim.x >> 5);
  for (size_t w = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); w < (size_t)total * h; w += warps) {
    const size_t row = w / h;
    const int head = (int)(w % h);
    const __nv_bfloat16* a = o + w * D;
    const __nv_bfloat16* b = dout + w * D;
    float sum = 0.f;
    for (int i = lane; i < D; i += 32) sum += to_f32(a[i]) * to_f32(b[i]);
    sum = warp_reduce<Sum>(sum);
    if (lane == 0) delta[(size_t)head * total + row] = sum;
  }
}

// Backward, step 2: dK, dV of 64 keys of one K/V head, summed over the query heads of its group.
// grid (ceil(max rows / 64), h_kv, sequences), block 128, smem (2·64 + 2·BR)·(D+8) bf16 + 2·BR f32.
// Each warp owns 16 keys: it computes sᵀ = k·qᵀ (keys as rows) so that pᵀ and dsᵀ are A operands.
template <int D, int BR>
__device__ void bwd_dkdv(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout,
                         const float* lse, const float* delta, __nv_bfloat16* dk, __nv_bfloat16* dv, const int* starts,
                         const int* rows_of, const int* valid_of, int total, int h, int h_kv, float scale) {
  constexpr int BC = 64, LD = D + 8;
  DYNAMIC_SHARED(smem_raw);
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* vs = ks + BC * LD;
  __nv_bfloat16* qs = vs + BC * LD;
  __nv_bfloat16* dos = qs + BR * LD;
  float* lse_s = reinterpret_cast<float*>(dos + BR * LD);  // log2 domain
  float* delta_s = lse_s + BR;
  const int z = blockIdx.z, kv_head = blockIdx.y, k0 = blockIdx.x * BC;
  const int rows = rows_of[z], valid = valid_of[z];
  if (k0 >= rows) return;
  const size_t start = starts[z];
  const int group = h / h_kv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const float scale2 = scale * LOG2E;
  const int kj[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

  float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.f;

  if (k0 < valid) {  // keys at or past the length are seen by no query: their gradients are zero
    load_tile<D, BC>(ks, head_rows<D>(k, start, h_kv, kv_head), k0, rows, (size_t)h_kv * D);
    load_tile<D, BC>(vs, head_rows<D>(v, start, h_kv, kv_head), k0, rows, (size_t)h_kv * D);
    for (int head = kv_head * group; head < (kv_head + 1) * group; ++head) {
      // causal: query tiles before the first key of this block see none of it
      for (int q0 = (k0 / BR) * BR; q0 < rows; q0 += BR) {
        __syncthreads();  // the previous tile's readers are done
        load_tile<D, BR>(qs, head_rows<D>(q, start, h, head), q0, rows, (size_t)h * D);
        load_tile<D, BR>(dos, head_rows<D>(dout, start, h, head), q0, rows, (size_t)h * D);
        for (int i = threadIdx.x; i < BR; i += THREADS) {
          const bool in = q0 + i < rows;
          lse_s[i] = in ? lse[(size_t)head * total + start + q0 + i] * LOG2E : 0.f;
          delta_s[i] = in ? delta[(size_t)head * total + start + q0 + i] : 0.f;
        }
        __syncthreads();
        // sᵀ = k·qᵀ and dpᵀ = v·dOᵀ: 16 keys x BR queries each
        float p[BR / 8][4], dp[BR / 8][4];
#pragma unroll
        for (int n = 0; n < BR / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) p[n][e] = dp[n][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t ak[4], av[4];
          load_a(ak, ks, LD, warp * 16, kk * 16, g, t);
          load_a(av, vs, LD, warp * 16, kk * 16, g, t);
#pragma unroll
          for (int n = 0; n < BR / 8; ++n) {
            uint32_t b0, b1;
            load_b_of_transposed(b0, b1, qs, LD, n * 8, kk * 16, g, t);
            mma(p[n], ak, b0, b1);
            load_b_of_transposed(b0, b1, dos, LD, n * 8, kk * 16, g, t);
            mma(dp[n], av, b0, b1);
          }
        }
        // pᵀ = exp(s·scale − lse) (0 where masked); dsᵀ = pᵀ∘(dpᵀ − delta)
        // element e of tile n: key kj[e / 2], query q0 + 8n + 2t + e % 2
#pragma unroll
        for (int n = 0; n < BR / 8; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = n * 8 + 2 * t + (e & 1);
            const bool see = visible(q0 + c, kj[e >> 1], rows, valid);
            p[n][e] = see ? exp2f(p[n][e] * scale2 - lse_s[c]) : 0.f;
            dp[n][e] = p[n][e] * (dp[n][e] - delta_s[c]);
          }
        }
        // dv += pᵀ·dO, dk += dsᵀ·q (k = the BR queries)
#pragma unroll
        for (int kc = 0; kc < BR / 16; ++kc) {
          uint32_t ap[4], ads[4];
          c_to_a(ap, p[2 * kc], p[2 * kc + 1]);
          c_to_a(ads, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
          for (int n = 0; n < D / 8; n += 2) {
            uint32_t b[4];
            load_b_pair(b, dos, LD, kc * 16, n * 8, lane);
            mma(dv_acc[n], ap, b[0], b[1]);
            mma(dv_acc[n + 1], ap, b[2], b[3]);
            load_b_pair(b, qs, LD, kc * 16, n * 8, lane);
            mma(dk_acc[n], ads, b[0], b[1]);
            mma(dk_acc[n + 1], ads, b[2], b[3]);
          }
        }
      }
    }
  }
  // every key row of the sequence is written (zeros past the length)
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (kj[r] >= rows) continue;
    const size_t off = ((start + kj[r]) * h_kv + kv_head) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<__nv_bfloat162*>(dk + off + n * 8 + 2 * t) =
          __floats2bfloat162_rn(dk_acc[n][2 * r] * scale, dk_acc[n][2 * r + 1] * scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + off + n * 8 + 2 * t) = __floats2bfloat162_rn(dv_acc[n][2 * r], dv_acc[n][2 * r + 1]);
    }
  }
}

// Backward, step 3: dQ of 64 query rows of one head, looping over the key tiles they can see.
// grid (ceil(max rows / 64), h, sequences), block 128, smem 4·64·(D+8) bf16.
template <int D>
__device__ void bwd_dq(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout,
                       const float* lse, const float* delta, __nv_bfloat16* dq, const int* starts, const int* rows_of,
                       const int* valid_of, int total, int h, int h_kv, float scale) {
  constexpr int BR = 64, BC = 64, LD = D + 8;
  DYNAMIC_SHARED(smem_raw);
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* dos = qs + BR * LD;
  __nv_bfloat16* ks = dos + BR * LD;
  __nv_bfloat16* vs = ks + BC * LD;
  const int z = blockIdx.z, head = blockIdx.y, q0 = blockIdx.x * BR;
  const int rows = rows_of[z], valid = valid_of[z];
  if (q0 >= rows) return;
  const size_t start = starts[z];
  const int kv_head = head / (h / h_kv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const float scale2 = scale * LOG2E;
  const int qi[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool in = qi[r] < rows;
    row_lse[r] = in ? lse[(size_t)head * total + start + qi[r]] * LOG2E : 0.f;
    row_delta[r] = in ? delta[(size_t)head * total + start + qi[r]] : 0.f;
  }
  load_tile<D, BR>(qs, head_rows<D>(q, start, h, head), q0, rows, (size_t)h * D);
  load_tile<D, BR>(dos, head_rows<D>(dout, start, h, head), q0, rows, (size_t)h * D);

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  const int keys = key_limit(q0, BR, rows, valid);
  for (int k0 = 0; k0 < keys; k0 += BC) {
    __syncthreads();  // the previous tile's readers are done
    load_tile<D, BC>(ks, head_rows<D>(k, start, h_kv, kv_head), k0, rows, (size_t)h_kv * D);
    load_tile<D, BC>(vs, head_rows<D>(v, start, h_kv, kv_head), k0, rows, (size_t)h_kv * D);
    __syncthreads();
    // s = q·kᵀ and dp = dO·vᵀ: 16 rows x 64 keys each
    float p[BC / 8][4], dp[BC / 8][4];
#pragma unroll
    for (int n = 0; n < BC / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[n][e] = dp[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t aq[4], ado[4];
      load_a(aq, qs, LD, warp * 16, kk * 16, g, t);
      load_a(ado, dos, LD, warp * 16, kk * 16, g, t);
#pragma unroll
      for (int n = 0; n < BC / 8; ++n) {
        uint32_t b0, b1;
        load_b_of_transposed(b0, b1, ks, LD, n * 8, kk * 16, g, t);
        mma(p[n], aq, b0, b1);
        load_b_of_transposed(b0, b1, vs, LD, n * 8, kk * 16, g, t);
        mma(dp[n], ado, b0, b1);
      }
    }
    // p = exp(s·scale − lse), ds = p∘(dp − delta); element e of tile n: row qi[e / 2], key k0 + 8n + 2t + e % 2
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kj = k0 + n * 8 + 2 * t + (e & 1);
        const int r = e >> 1;
        const float pe = visible(qi[r], kj, rows, valid) ? exp2f(p[n][e] * scale2 - row_lse[r]) : 0.f;
        dp[n][e] = pe * (dp[n][e] - row_delta[r]);
      }
    }
    // acc += ds·k (k = the 64 keys)
#pragma unroll
    for (int kc = 0; kc < BC / 16; ++kc) {
      uint32_t a[4];
      c_to_a(a, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        load_b_pair(b, ks, LD, kc * 16, n * 8, lane);
        mma(acc[n], a, b[0], b[1]);
        mma(acc[n + 1], a, b[2], b[3]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (qi[r] >= rows) continue;
    __nv_bfloat16* out = dq + ((start + qi[r]) * h + head) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<__nv_bfloat162*>(out + n * 8 + 2 * t) = __floats2bfloat162_rn(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
  }
}

}  // namespace flash

// Entry points: <name>_d<D>_bf16. (The dkdv kernel's query tile is 32 rows at D = 128 to keep its
// two f32 gradient accumulators in registers, 64 at D = 64.)
#define FLASH_ARGS_SEQ const int *starts, const int *rows, const int *valid, int total, int h, int h_kv, float scale
#define INSTANTIATE_FLASH(D, BR_DKDV)                                                                                          \
  extern "C" __global__ void __launch_bounds__(flash::THREADS) flash_fwd_d##D##_bf16(                                         \
      const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o, float* lse, FLASH_ARGS_SEQ) { \
    flash::forward<D>(q, k, v, o, lse, starts, rows, valid, total, h, h_kv, scale);                                           \
  }                                                                                                                            \
  extern "C" __global__ void __launch_bounds__(flash::THREADS) flash_fwd_cached_d##D##_bf16(                                  \
      const __nv_bfloat16* q, const __nv_bfloat16* const* keys, const __nv_bfloat16* const* values, const int* capacities,    \
      const int* tiles, __nv_bfloat16* o, int h, int h_kv, float scale) {                                                      \
    flash::forward_cached<D>(q, keys, values, capacities, tiles, o, h, h_kv, scale);                                          \
  }                                                                                                                            \
  extern "C" __global__ void flash_bwd_delta_d##D##_bf16(const __nv_bfloat16* o, const __nv_bfloat16* dout, float* delta,     \
                                                         int total, int h) {                                                  \
    flash::bwd_delta<D>(o, dout, delta, total, h);                                                                             \
  }                                                                                                                            \
  extern "C" __global__ void __launch_bounds__(flash::THREADS) flash_bwd_dkdv_d##D##_bf16(                                    \
      const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout, const float* lse,    \
      const float* delta, __nv_bfloat16* dk, __nv_bfloat16* dv, FLASH_ARGS_SEQ) {                                             \
    flash::bwd_dkdv<D, BR_DKDV>(q, k, v, dout, lse, delta, dk, dv, starts, rows, valid, total, h, h_kv, scale);               \
  }                                                                                                                            \
  extern "C" __global__ void __launch_bounds__(flash::THREADS) flash_bwd_dq_d##D##_bf16(                                      \
      const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout, const float* lse,    \
      const float* delta, __nv_bfloat16* dq, FLASH_ARGS_SEQ) {                                                                 \
    flash::bwd_dq<D>(q, k, v, dout, lse, delta, dq, starts, rows, valid, total, h, h_kv, scale);                              \
  }
INSTANTIATE_FLASH(64, 64)
INSTANTIATE_FLASH(128, 32)
