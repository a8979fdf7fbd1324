// MaxSim (late interaction), forward and backward (declared in kernels.h; tiling in common.cuh).
//
// Forward: one CTA per (query group, document group). A query group is as many whole queries as fit in
// the CTA's 64 X rows (64 / Lq of them; one query in ceil(Lq / 64) row sub-blocks when Lq > 64; one query
// in paired mode); a document group is G documents (all mode) chosen so the grid has a few CTAs per
// multiprocessor, or the query's own document (paired). The CTA walks its documents 64 tokens at a time:
// each 64 x 64 tile of query-token x document-token dot products is computed on the tensor cores into
// registers and folded into a running (max, argmax) per query token held in the same registers (4 rows
// per thread). After a document's last tile the 4 lanes sharing a row and then the 4 warps sharing a row
// merge their maxima through shared memory; one thread per row applies the query mask and writes the
// argmax; one warp per query sums its tokens' maxima into the score. The queries' tokens stay resident in
// shared memory while document tiles stream through a double buffer, so the documents are read once per
// query group (from L2 mostly) and nothing of size [B, N, Lq, Ld] exists. Ties go to the lowest token
// index (strict > in increasing token order, then index order when merging), like the CPU.
//
// Backward (deterministic: no atomics, every output element written by one thread):
//  - dQ[b, i] = sum_n g[b, n] w_b D[n, argmax[b, n, i]]: a gather. One CTA per query token and 256-wide
//    slice of the embedding; its 256 threads form groups of (slice / 8) threads, each thread holding 8
//    consecutive float32 sums; the groups take documents round-robin, 4 in flight per group, and their
//    partial sums are added in group order through shared memory.
//  - dD[n, j] = sum over (b, i) with argmax[b, n, i] = j of g[b, n] w_b Q[b, i]: the inverse map, built per
//    document instead of scattered with atomics (which would need a float32 copy of dD, more memory than
//    the whole forward): one CTA per (document, 64 of its tokens, 128-wide slice of the embedding) keeps
//    float32 sums for its 64 x 128 outputs in shared memory; it reads the document's argmax column
//    (every (b, i)) in chunks, and warp w adds the query-token rows whose argmax is one of "its" tokens
//    (j % 8 == w) in increasing (b, i) order. Each sum has one owner and a fixed order.
#include <algorithm>
#include <cfloat>

#include "common.cuh"
#include "kernels.h"

namespace coltrast::kernels {
namespace {

using namespace detail;

struct ForwardParams {
  const void* q;
  int64_t qStrideB, qStrideL;
  const uint8_t* qmask;
  int64_t qmaskStrideB;
  const void* d;
  int64_t dStrideN, dStrideL;
  const uint8_t* dmask;
  int64_t dmaskStrideN;
  int64_t B, N;
  int Lq, Ld, dim;
  bool paired, normalize;
  float* scores;
  int32_t* argmax;
  // tiling (see launchForward)
  int KC, ld, nchunks;
  bool xResident, vecQ, vecD;
  int queriesPerCta, subBlocks, docsPerCta, tilesPerDoc;
};

// (v2, a2) beats (v1, a1): a valid index, a larger value, or the same value at a smaller index.
__device__ __forceinline__ bool better(float v2, int a2, float v1, int a1) {
  // A NaN wins (NaN or infinite inputs): the row's value is NaN then, as on the CPU (maxsim_cpu.cc's maxValid).
  return a2 >= 0 && (a1 < 0 || v2 > v1 || (v2 != v2 && v1 == v1) || (v2 == v1 && a2 < a1));
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) maxsimForwardKernel(const ForwardParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  // Shared memory: X tile(s) (one when resident, else double-buffered), two Y tiles, then the merges.
  // Buffer b of a pair is base + b * step (arithmetic, not an array: a run-time index would put the
  // pointers in local memory).
  const int tileElems = kTileX * p.ld;
  T* const xBase = reinterpret_cast<T*>(smem);
  const int xStep = p.xResident ? 0 : tileElems;
  T* const yBase = xBase + xStep + tileElems;
  float* redVal = reinterpret_cast<float*>(yBase + 2 * tileElems);  // [64][kWarpsN]
  int* redArg = reinterpret_cast<int*>(redVal + kTileX * kWarpsN);  // [64][kWarpsN]
  float* rowVal = reinterpret_cast<float*>(redArg + kTileX * kWarpsN);  // [64]
  float* qWeight = rowVal + kTileX;                                     // [queriesPerCta <= 64]
  float* partial = qWeight + kTileX;                                    // [docsPerCta] (sub-blocks > 1)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int QB = p.queriesPerCta, Lq = p.Lq, Ld = p.Ld, dim = p.dim;
  const int64_t b0 = int64_t(blockIdx.x) * QB;
  const int64_t n0 = p.paired ? int64_t(blockIdx.x) : int64_t(blockIdx.y) * p.docsPerCta;
  const int nd = p.paired ? 1 : int(min(int64_t(p.docsPerCta), p.N - n0));
  const T* Q = static_cast<const T*>(p.q);
  const T* D = static_cast<const T*>(p.d);

  // Per-query weight (1, or 1 / valid tokens) and the partial scores of split queries.
  for (int qs = warp; qs < QB; qs += kThreads / 32) {
    const int64_t b = b0 + qs;
    float w = 1.0f;
    if (p.normalize && b < p.B) {
      int count = 0;
      for (int i = lane; i < Lq; i += 32) count += p.qmask[b * p.qmaskStrideB + i] != 0;
      count = __reduce_add_sync(0xffffffffu, count);
      w = count > 0 ? 1.0f / float(count) : 0.0f;
    }
    if (lane == 0) qWeight[qs] = w;
  }
  for (int i = tid; i < nd; i += kThreads) partial[i] = 0.0f;

  // X row r of sub-block rb: query token (b0 + gr / Lq, gr % Lq) with gr = rb * 64 + r.
  const int64_t B = p.B, qStrideB = p.qStrideB, qStrideL = p.qStrideL, dStrideN = p.dStrideN, dStrideL = p.dStrideL;
  auto queryRow = [=](int rb) {
    return [=](int r) -> const T* {
      const int gr = rb * kTileX + r, qs = gr / Lq, i = gr - qs * Lq;
      const int64_t b = b0 + qs;
      return (qs < QB && b < B) ? Q + b * qStrideB + int64_t(i) * qStrideL : nullptr;
    };
  };
  auto docRow = [=](int64_t n, int tile) {
    return [=](int r) -> const T* {
      const int j = tile * kTileY + r;
      return j < Ld ? D + n * dStrideN + int64_t(j) * dStrideL : nullptr;
    };
  };
  auto chunkWidth = [&](int c) { return (min(p.KC, dim - c * p.KC) + 15) & ~15; };

  // Item s = (sub-block, document, tile, chunk), chunk fastest.
  struct Item {
    int chunk, tile, doc, rb;
  };
  auto decode = [&](int s) {
    Item it;
    it.chunk = s % p.nchunks;
    int rest = s / p.nchunks;
    it.tile = rest % p.tilesPerDoc;
    rest /= p.tilesPerDoc;
    it.doc = rest % nd;
    it.rb = rest / nd;
    return it;
  };
  auto load = [&](int s, int buf) {
    const Item it = decode(s);
    const int col0 = it.chunk * p.KC, width = chunkWidth(it.chunk);
    if (!p.xResident) stageRows<T>(xBase + buf * xStep, p.ld, kTileX, queryRow(it.rb), col0, width, dim, p.vecQ, Q);
    stageRows<T>(yBase + buf * tileElems, p.ld, kTileY, docRow(n0 + it.doc, it.tile), col0, width, dim, p.vecD, D);
  };

  float acc[kMT][kNT][4];
  float best[kMT][2];
  int arg[kMT][2];
#pragma unroll
  for (int m = 0; m < kMT; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      best[m][h] = -INFINITY;
      arg[m][h] = -1;
    }

  const int items = p.subBlocks * nd * p.tilesPerDoc * p.nchunks;
  if (p.xResident) stageRows<T>(xBase, p.ld, kTileX, queryRow(0), 0, chunkWidth(0), dim, p.vecQ, Q);
  load(0, 0);
  copyAsyncCommit();
  for (int s = 0; s < items; ++s) {
    if (s + 1 < items) {
      load(s + 1, (s + 1) & 1);
      copyAsyncCommit();
      copyAsyncWait<1>();
    } else {
      copyAsyncWait<0>();
    }
    __syncthreads();
    const Item it = decode(s);
    if (it.chunk == 0) zero(acc);
    WarpProductNT<T, kMT, kNT>::run(acc, xBase + (s & 1) * xStep + wm * 32 * p.ld, p.ld,
                                    yBase + (s & 1) * tileElems + wn * 16 * p.ld, p.ld,
                                    chunkWidth(it.chunk));
    if (it.chunk == p.nchunks - 1) {
      // Fold the tile into each row's running max (columns in increasing token order per thread).
      const int64_t n = n0 + it.doc;
      const uint8_t* dm = p.dmask + n * p.dmaskStrideN;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = it.tile * kTileY + wn * 16 + nt * 8 + 2 * t + e;
          const bool valid = j < Ld && dm[j] != 0;
#pragma unroll
          for (int m = 0; m < kMT; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const float v = acc[m][nt][h * 2 + e];
              if (valid && (v > best[m][h] || (v != v && best[m][h] == best[m][h]))) {
                best[m][h] = v;
                arg[m][h] = j;
              }
            }
        }
      if (it.tile == p.tilesPerDoc - 1) {
        // The document is done: merge the row maxima over the quad, then over the 4 column warps.
#pragma unroll
        for (int m = 0; m < kMT; ++m)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float v = best[m][h];
            int a = arg[m][h];
#pragma unroll
            for (int o = 1; o <= 2; o <<= 1) {
              const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
              const int a2 = __shfl_xor_sync(0xffffffffu, a, o);
              if (better(v2, a2, v, a)) {
                v = v2;
                a = a2;
              }
            }
            if (t == 0) {
              const int row = wm * 32 + m * 16 + g + 8 * h;
              redVal[row * kWarpsN + wn] = v;
              redArg[row * kWarpsN + wn] = a;
            }
            best[m][h] = -INFINITY;
            arg[m][h] = -1;
          }
        __syncthreads();
        if (tid < kTileX) {
          float v = redVal[tid * kWarpsN];
          int a = redArg[tid * kWarpsN];
          for (int w = 1; w < kWarpsN; ++w) {
            if (better(redVal[tid * kWarpsN + w], redArg[tid * kWarpsN + w], v, a)) {
              v = redVal[tid * kWarpsN + w];
              a = redArg[tid * kWarpsN + w];
            }
          }
          const int gr = it.rb * kTileX + tid, qs = gr / Lq, i = gr - qs * Lq;
          const int64_t b = b0 + qs;
          float value = 0.0f;
          if (qs < QB && b < p.B) {
            if (p.qmask[b * p.qmaskStrideB + i] == 0) a = -1;
            // A NaN among the document's valid tokens makes the row NaN, with no token to take a gradient (as on the CPU).
            const bool unordered = a >= 0 && v != v;
            if (unordered) a = -1;
            value = unordered || a >= 0 ? v : 0.0f;
            p.argmax[(p.paired ? b : b * p.N + n) * Lq + i] = a;
          }
          rowVal[tid] = value;
        }
        __syncthreads();
        for (int qs = warp; qs < QB; qs += kThreads / 32) {
          const int lo = max(qs * Lq - it.rb * kTileX, 0), hi = min((qs + 1) * Lq - it.rb * kTileX, kTileX);
          float sum = 0.0f;
          for (int r = lo + lane; r < hi; r += 32) sum += rowVal[r];
          sum = warpSum(sum);
          const int64_t b = b0 + qs;
          if (lane == 0 && b < p.B) {
            if (p.subBlocks == 1) {
              p.scores[p.paired ? b : b * p.N + n] = qWeight[qs] * sum;
            } else {
              partial[it.doc] += sum;  // one query (qs = 0, warp 0): a single writer
            }
          }
        }
      }
    }
    __syncthreads();  // this buffer is loaded again two items later
  }
  if (p.subBlocks > 1 && b0 < p.B) {
    for (int doc = tid; doc < nd; doc += kThreads) {
      p.scores[p.paired ? b0 : b0 * p.N + n0 + doc] = qWeight[0] * partial[doc];
    }
  }
}

// weight[b] = normalize ? 1 / (valid tokens of query b), 0 when none : 1. One warp per query.
__global__ void queryWeightsKernel(const uint8_t* qmask, int64_t stride, int64_t B, int Lq, bool normalize,
                                   float* weight) {
  const int64_t b = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (b >= B) return;
  int count = 0;
  for (int i = lane; i < Lq; i += 32) count += qmask[b * stride + i] != 0;
  count = __reduce_add_sync(0xffffffffu, count);
  if (lane == 0) weight[b] = !normalize ? 1.0f : count > 0 ? 1.0f / float(count) : 0.0f;
}

struct BackwardParams {
  const void* q;
  int64_t qStrideB, qStrideL;
  const void* d;
  int64_t dStrideN, dStrideL;
  int64_t B, N;
  int Lq, Ld, dim;
  bool paired;
  const float* grad;
  const float* weight;
  const int32_t* argmax;
  void* dq;
  int64_t dqStrideB, dqStrideL;
  void* dd;
  int64_t ddStrideN, ddStrideL;
  bool vecQ, vecD;
  int slotsLog2;  // dQ: log2 of the threads per group (each covers 8 elements of the 256-wide slice)
};

// 8 consecutive elements from k0 (zeros past dim) as float32.
template <typename T>
__device__ __forceinline__ void load8(float (&x)[8], const T* row, int k0, int dim, bool vec) {
  if (vec && k0 + 8 <= dim) {
    if constexpr (sizeof(T) == 2) {
      union {
        uint4 raw;
        T h[8];
      } v;
      v.raw = __ldg(reinterpret_cast<const uint4*>(row + k0));
#pragma unroll
      for (int e = 0; e < 8; ++e) x[e] = toFloat(v.h[e]);
    } else {
      const float4 lo = __ldg(reinterpret_cast<const float4*>(row + k0));
      const float4 hi = __ldg(reinterpret_cast<const float4*>(row + k0 + 4));
      x[0] = lo.x, x[1] = lo.y, x[2] = lo.z, x[3] = lo.w, x[4] = hi.x, x[5] = hi.y, x[6] = hi.z, x[7] = hi.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = k0 + e < dim ? toFloat(row[k0 + e]) : 0.0f;
  }
}

// 4 consecutive elements from k0 (zeros past dim) as float32.
template <typename T>
__device__ __forceinline__ void load4(float (&x)[4], const T* row, int k0, int dim, bool vec) {
  if (vec && k0 + 4 <= dim) {
    if constexpr (sizeof(T) == 2) {
      union {
        uint2 raw;
        T h[4];
      } v;
      v.raw = __ldg(reinterpret_cast<const uint2*>(row + k0));
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = toFloat(v.h[e]);
    } else {
      const float4 v = __ldg(reinterpret_cast<const float4*>(row + k0));
      x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) x[e] = k0 + e < dim ? toFloat(row[k0 + e]) : 0.0f;
  }
}

constexpr int kGatherSlice = 256;  // embedding elements per dQ CTA
constexpr int kGatherUnroll = 4;   // documents in flight per thread group

template <typename T>
__global__ void __launch_bounds__(kThreads) maxsimGradQueryKernel(const BackwardParams p) {
  __shared__ float sums[kThreads * 8];  // [group][slot * 8 + e]
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.Lq;
  const int i = int(row - b * p.Lq);
  const int slots = 1 << p.slotsLog2, groups = kThreads >> p.slotsLog2;
  const int slot = threadIdx.x & (slots - 1), group = threadIdx.x >> p.slotsLog2;
  const int k0 = blockIdx.y * kGatherSlice + slot * 8;
  const T* D = static_cast<const T*>(p.d);
  const float w = p.weight[b];
  const int64_t nBegin = p.paired ? b : 0, nEnd = p.paired ? b + 1 : p.N;

  float acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
  for (int64_t n = nBegin + group; n < nEnd; n += int64_t(kGatherUnroll) * groups) {
    int j[kGatherUnroll];
    float coef[kGatherUnroll];
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      const int64_t nu = n + int64_t(u) * groups;
      j[u] = -1;
      coef[u] = 0.0f;
      if (nu < nEnd) {
        const int64_t pair = p.paired ? b : b * p.N + nu;
        j[u] = p.argmax[pair * p.Lq + i];
        coef[u] = p.grad[pair] * w;
      }
    }
    float x[kGatherUnroll][8];
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      if (j[u] >= 0 && coef[u] != 0.0f) {
        load8<T>(x[u], D + (n + int64_t(u) * groups) * p.dStrideN + int64_t(j[u]) * p.dStrideL, k0, p.dim, p.vecD);
      }
    }
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      if (j[u] >= 0 && coef[u] != 0.0f) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = fmaf(coef[u], x[u][e], acc[e]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) sums[group * slots * 8 + slot * 8 + e] = acc[e];
  __syncthreads();
  T* dq = static_cast<T*>(p.dq) + b * p.dqStrideB + int64_t(i) * p.dqStrideL;
  for (int kk = threadIdx.x; kk < slots * 8; kk += kThreads) {
    float total = 0.0f;
    for (int gr = 0; gr < groups; ++gr) total += sums[gr * slots * 8 + kk];
    const int k = blockIdx.y * kGatherSlice + kk;
    if (k < p.dim) dq[k] = fromFloat<T>(total);
  }
}

constexpr int kOwnRows = 64;      // document tokens per dD CTA
constexpr int kOwnCols = 128;     // embedding elements per dD CTA (32 lanes x 4)
constexpr int kEntryChunk = 2048;  // (b, i) entries staged at a time

template <typename T>
__global__ void __launch_bounds__(kThreads) maxsimGradDocKernel(const BackwardParams p) {
  __shared__ __align__(16) float sums[kOwnRows * kOwnCols];
  __shared__ int8_t entryRow[kEntryChunk];
  __shared__ float entryCoef[kEntryChunk];
  const int64_t n = blockIdx.x;
  const int j0 = blockIdx.y * kOwnRows, k0 = blockIdx.z * kOwnCols;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* Q = static_cast<const T*>(p.q);
  for (int idx = threadIdx.x; idx < kOwnRows * kOwnCols; idx += kThreads) sums[idx] = 0.0f;

  // Entries e = (b, i) of this document in order: all mode b * Lq + i over every query; paired: b = n.
  const int64_t entries = p.paired ? p.Lq : p.B * p.Lq;
  for (int64_t base = 0; base < entries; base += kEntryChunk) {
    const int count = int(min(int64_t(kEntryChunk), entries - base));
    __syncthreads();  // the previous chunk's entries are consumed (and sums zeroed, the first time)
    for (int e = threadIdx.x; e < count; e += kThreads) {
      const int64_t ge = base + e;
      const int64_t b = p.paired ? n : ge / p.Lq;
      const int i = int(p.paired ? ge : ge - b * p.Lq);
      const int64_t pair = p.paired ? b : b * p.N + n;
      const int r = p.argmax[pair * p.Lq + i] - j0;
      float coef = 0.0f;
      if (r >= 0 && r < kOwnRows) coef = p.grad[pair] * p.weight[b];
      entryRow[e] = int8_t(coef != 0.0f ? r : -1);
      entryCoef[e] = coef;
    }
    __syncthreads();
    // Warp `warp` owns rows r with r % 8 == warp; it takes its entries in order, 4 row loads in flight.
    for (int e0 = 0; e0 < count; e0 += 32) {
      const int e = e0 + lane;
      const int r = e < count ? entryRow[e] : -1;
      unsigned mine = __ballot_sync(0xffffffffu, r >= 0 && (r & 7) == warp);
      while (mine != 0u) {
        int pos[4], m = 0;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          pos[u] = -1;
          if (mine != 0u) {
            pos[u] = e0 + __ffs(mine) - 1;
            mine &= mine - 1u;
            ++m;
          }
        }
        float x[4][4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          if (u < m) {
            const int64_t ge = base + pos[u];
            const int64_t b = p.paired ? n : ge / p.Lq;
            const int i = int(p.paired ? ge : ge - b * p.Lq);
            load4<T>(x[u], Q + b * p.qStrideB + int64_t(i) * p.qStrideL, k0 + lane * 4, p.dim, p.vecQ);
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          if (u < m) {
            const float coef = entryCoef[pos[u]];
            float4* s = reinterpret_cast<float4*>(sums + entryRow[pos[u]] * kOwnCols + lane * 4);
            float4 v = *s;
            v.x = fmaf(coef, x[u][0], v.x);
            v.y = fmaf(coef, x[u][1], v.y);
            v.z = fmaf(coef, x[u][2], v.z);
            v.w = fmaf(coef, x[u][3], v.w);
            *s = v;
          }
        }
      }
    }
  }
  __syncthreads();
  T* dd = static_cast<T*>(p.dd) + n * p.ddStrideN;
  for (int idx = threadIdx.x; idx < kOwnRows * kOwnCols; idx += kThreads) {
    const int r = idx / kOwnCols, c = idx - r * kOwnCols;
    const int j = j0 + r, k = k0 + c;
    if (j < p.Ld && k < p.dim) dd[int64_t(j) * p.ddStrideL + k] = fromFloat<T>(sums[idx]);
  }
}

bool checkArgs(const MaxSimArgs& a) {
  return a.q != nullptr && a.d != nullptr && a.qmask != nullptr && a.dmask != nullptr && a.B > 0 && a.N > 0 &&
         a.Lq > 0 && a.Ld > 0 && a.dim > 0 && a.Lq < (int64_t(1) << 30) && a.Ld < (int64_t(1) << 30) &&
         a.dim < (int64_t(1) << 30) && (!a.paired || a.B == a.N) && a.B < (int64_t(1) << 31) &&
         a.N < (int64_t(1) << 31);
}

template <typename T>
bool vectorizable(const void* base, int64_t dim, int64_t stride1, int64_t stride2) {
  constexpr int V = kVec<T>;
  return aligned16(base) && dim % V == 0 && stride1 % V == 0 && stride2 % V == 0;
}

template <typename T>
cudaError_t launchForward(const MaxSimArgs& a, float* scores, int32_t* argmax, cudaStream_t stream) {
  DeviceLimits limits;
  cudaError_t err = deviceLimits(&limits);
  if (err != cudaSuccess) return err;
  ForwardParams p{};
  p.q = a.q;
  p.qStrideB = a.qStrideB;
  p.qStrideL = a.qStrideL;
  p.qmask = a.qmask;
  p.qmaskStrideB = a.qmaskStrideB;
  p.d = a.d;
  p.dStrideN = a.dStrideN;
  p.dStrideL = a.dStrideL;
  p.dmask = a.dmask;
  p.dmaskStrideN = a.dmaskStrideN;
  p.B = a.B;
  p.N = a.N;
  p.Lq = int(a.Lq);
  p.Ld = int(a.Ld);
  p.dim = int(a.dim);
  p.paired = a.paired;
  p.normalize = a.normalize;
  p.scores = scores;
  p.argmax = argmax;
  p.vecQ = vectorizable<T>(a.q, a.dim, a.qStrideB, a.qStrideL);
  p.vecD = vectorizable<T>(a.d, a.dim, a.dStrideN, a.dStrideL);
  p.queriesPerCta = a.paired || a.Lq > kTileX ? 1 : int(kTileX / a.Lq);
  p.subBlocks = int(ceilDiv(int64_t(p.queriesPerCta) * a.Lq, kTileX));
  p.tilesPerDoc = int(ceilDiv(a.Ld, kTileY));
  const int64_t groups = a.paired ? a.B : ceilDiv(a.B, p.queriesPerCta);

  // Documents per CTA: about 4 CTAs per multiprocessor in all, at most 64 (and at most 65535 CTAs down).
  int64_t docs = 1;
  if (!a.paired) {
    docs = std::max<int64_t>(1, std::min<int64_t>(64, groups * a.N / (4 * int64_t(limits.multiprocessors))));
    docs = std::max<int64_t>(docs, ceilDiv(a.N, 65535));
  }
  p.docsPerCta = int(docs);

  // Embedding chunking: the whole (16-aligned) embedding at once when the three 64-row tiles (resident
  // queries, two document buffers) fit in about 110 KB, so two CTAs share a multiprocessor on sm_80 and
  // sm_90; else chunks of 256 bytes per row (64 float32 or 128 16-bit elements), the query tile streaming
  // along with the document tiles.
  constexpr int V = kVec<T>;
  const int64_t extraBytes = int64_t(kTileX * kWarpsN * 2 + 2 * kTileX + docs) * 4;
  const int64_t dimPad = roundUp(a.dim, 16);
  auto bytesFor = [&](int64_t kc, bool resident) {
    return ((resident ? 1 : 2) + 2) * kTileX * (kc + V) * int64_t(sizeof(T)) + extraBytes;
  };
  const int64_t budget = std::min<int64_t>(limits.smemOptin, 110 * 1024);
  if (p.subBlocks == 1 && bytesFor(dimPad, true) <= budget) {
    p.KC = int(dimPad);
    p.nchunks = 1;
    p.xResident = true;
  } else {
    const int64_t kc = std::min<int64_t>(dimPad, sizeof(T) == 2 ? 128 : 64);
    p.nchunks = int(ceilDiv(a.dim, kc));
    p.KC = int(roundUp(ceilDiv(a.dim, p.nchunks), 16));
    p.xResident = false;
  }
  p.ld = p.KC + V;
  const int64_t bytes = bytesFor(p.KC, p.xResident);
  if (bytes > limits.smemOptin) return cudaErrorInvalidValue;
  err = allowSharedMemory(maxsimForwardKernel<T>, bytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(groups), a.paired ? 1u : unsigned(ceilDiv(a.N, docs)));
  maxsimForwardKernel<T><<<grid, kThreads, size_t(bytes), stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launchBackward(const MaxSimArgs& a, const MaxSimGrads& grads, float* weight, cudaStream_t stream) {
  queryWeightsKernel<<<unsigned(ceilDiv(a.B, 8)), 256, 0, stream>>>(a.qmask, a.qmaskStrideB, a.B, int(a.Lq),
                                                                      a.normalize, weight);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  BackwardParams p{};
  p.q = a.q;
  p.qStrideB = a.qStrideB;
  p.qStrideL = a.qStrideL;
  p.d = a.d;
  p.dStrideN = a.dStrideN;
  p.dStrideL = a.dStrideL;
  p.B = a.B;
  p.N = a.N;
  p.Lq = int(a.Lq);
  p.Ld = int(a.Ld);
  p.dim = int(a.dim);
  p.paired = a.paired;
  p.grad = grads.grad;
  p.weight = weight;
  p.argmax = grads.argmax;
  p.dq = grads.dq;
  p.dqStrideB = grads.dqStrideB;
  p.dqStrideL = grads.dqStrideL;
  p.dd = grads.dd;
  p.ddStrideN = grads.ddStrideN;
  p.ddStrideL = grads.ddStrideL;
  // dQ reads 8 elements per thread, dD 4 per lane: both need the rows 16 (8) byte aligned.
  p.vecD = aligned16(a.d) && a.dStrideN % kVec<T> == 0 && a.dStrideL % kVec<T> == 0;
  p.vecQ = (reinterpret_cast<uintptr_t>(a.q) % (4 * sizeof(T))) == 0 && a.dim % 4 == 0 && a.qStrideB % 4 == 0 &&
           a.qStrideL % 4 == 0;
  // dQ thread groups: enough 8-element slots to cover the slice (a power of two, at most 32).
  const int64_t sliceSlots = ceilDiv(std::min<int64_t>(a.dim, kGatherSlice), 8);
  int slotsLog2 = 0;
  while ((int64_t(1) << slotsLog2) < sliceSlots) ++slotsLog2;
  p.slotsLog2 = slotsLog2;

  const dim3 gridQ(unsigned(a.B * a.Lq), unsigned(ceilDiv(a.dim, kGatherSlice)));
  maxsimGradQueryKernel<T><<<gridQ, kThreads, 0, stream>>>(p);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 gridD(unsigned(a.N), unsigned(ceilDiv(a.Ld, kOwnRows)), unsigned(ceilDiv(a.dim, kOwnCols)));
  maxsimGradDocKernel<T><<<gridD, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t maxsimForward(const MaxSimArgs& args, float* scores, int32_t* argmax, cudaStream_t stream) {
  if (!checkArgs(args) || scores == nullptr || argmax == nullptr) return cudaErrorInvalidValue;
  if ((args.paired ? args.B : ceilDiv(args.B, kTileX / std::min<int64_t>(args.Lq, kTileX))) >= (int64_t(1) << 31)) {
    return cudaErrorInvalidValue;
  }
  switch (args.dtype) {
    case DType::F32:
      return launchForward<float>(args, scores, argmax, stream);
    case DType::F16:
      return launchForward<__half>(args, scores, argmax, stream);
    case DType::BF16:
      return launchForward<__nv_bfloat16>(args, scores, argmax, stream);
  }
  return cudaErrorInvalidValue;
}

size_t maxsimBackwardWorkspaceBytes(const MaxSimArgs& args) {
  return size_t(detail::roundUp(std::max<int64_t>(args.B, 1) * int64_t(sizeof(float)), 256));
}

cudaError_t maxsimBackward(const MaxSimArgs& args, const MaxSimGrads& grads, void* workspace, size_t workspaceBytes,
                           cudaStream_t stream) {
  if (!checkArgs(args) || grads.grad == nullptr || grads.argmax == nullptr || grads.dq == nullptr ||
      grads.dd == nullptr || workspace == nullptr || workspaceBytes < maxsimBackwardWorkspaceBytes(args)) {
    return cudaErrorInvalidValue;
  }
  if (args.B * args.Lq >= (int64_t(1) << 31) || args.Ld > int64_t(65535) * kOwnRows) return cudaErrorInvalidValue;
  float* weight = static_cast<float*>(workspace);
  switch (args.dtype) {
    case DType::F32:
      return launchBackward<float>(args, grads, weight, stream);
    case DType::F16:
      return launchBackward<__half>(args, grads, weight, stream);
    case DType::BF16:
      return launchBackward<__nv_bfloat16>(args, grads, weight, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace coltrast::kernels
