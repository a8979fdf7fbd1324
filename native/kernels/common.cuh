// Device building blocks shared by coltrast's fused kernels (maxsim.cu, contrastive.cu).
//
// Both ops are "a tiled matrix product whose output tile is consumed at once": MaxSim reduces each tile of
// query-token x document-token similarities to a running max/argmax per query token, the contrastive
// loss reduces each tile of query x candidate logits to a running log-sum-exp (forward) or turns it into
// the logit gradient and multiplies that by the other operand again (backward). So both share:
//
//  - a CTA of 256 threads (8 warps) that owns a tile of 64 "X" rows (query tokens; queries; candidates)
//    and walks over tiles of 64 "Y" rows (document tokens; candidates; queries);
//  - the X and Y rows are staged in shared memory in chunks of KC columns of the embedding. When the whole
//    embedding fits (KC >= dim), X is loaded once and stays resident while the Y tiles stream through a
//    double buffer (cp.async: tile t+1 loads while tile t is multiplied), so each Y row is read once per
//    CTA; otherwise X and Y chunks stream together through the same double buffer;
//  - the 64 x 64 similarity tile is computed by the 8 warps as 2 (rows) x 4 (columns) warp tiles of
//    32 x 16, on the tensor cores for float16/bfloat16 (ldmatrix + mma.sync m16n8k16, float32
//    accumulation) and with plain float32 FMAs for float32 inputs (same register layout, so the
//    epilogues are shared). float32 never uses TF32: results must match the CPU to ~1e-4.
//
// Why 64 x 64 tiles and 8 warps: the tile must be small enough that three or four 64-row tiles of a
// 384-wide embedding fit in shared memory (~150 KB, within sm_80's 163 KB) and that a 64 x 384 float32
// gradient slice fits in the registers of 256 threads (96 each, contrastive.cu), and large enough to keep
// the tensor cores busy. The inline PTX (cp.async, ldmatrix, mma.sync) is in ptx.cuh.
//
// Accumulator layout (PTX mma.m16n8 "C" fragment, also used by the FMA path): a warp tile has MT x NT
// fragments of 16 x 8; lane l holds, in acc[mt][nt][h * 2 + e], the element at row mt*16 + l/4 + 8h and
// column nt*8 + 2*(l%4) + e of its warp tile.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "kernels.h"
#include "ptx.cuh"

namespace coltrast::kernels::detail {

constexpr int kThreads = 256;  // 8 warps per CTA
constexpr int kTileX = 64;     // X rows per CTA
constexpr int kTileY = 64;     // Y rows per tile
constexpr int kWarpsM = 2;     // warp grid over the 64 x 64 similarity tile: 2 x 4 warps of 32 x 16
constexpr int kWarpsN = 4;
constexpr int kMT = 2;         // 16-row fragments per warp tile
constexpr int kNT = 2;         // 8-column fragments per warp tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- element types --------------------------------------------------------------------------------
__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ float fromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Elements per 16-byte vector; also the shared-memory row padding (16 bytes), which makes every row
// stride an odd multiple of 16 bytes, so the 8 rows an ldmatrix (or a float4 read) touches fall in 8
// different bank groups.
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));

// Stages columns [col0, col0 + width) of `rows` rows into shared memory (row r at dst + r * ld), zeros
// for rows without a source (rowPtr returns nullptr) and for columns at or past `dim`. width is a
// multiple of 16. vec: every row pointer and dim are 16-byte aligned, so whole 16-byte vectors are either
// inside or outside [0, dim) and go through cp.async; otherwise elements are copied one by one
// (synchronously; correct for any dim or stride, just slower). anyRow: any valid global address, given to
// cp.async for zero-filled vectors (it reads nothing there).
template <typename T, typename RowPtr>
__device__ __forceinline__ void stageRows(T* dst, int ld, int rows, RowPtr rowPtr, int col0, int width, int dim,
                                          bool vec, const T* anyRow) {
  if (vec) {
    constexpr int V = kVec<T>;
    const int perRow = width / V;
    for (int idx = threadIdx.x; idx < rows * perRow; idx += kThreads) {
      const int r = idx / perRow, c = (idx - r * perRow) * V;
      const T* src = rowPtr(r);
      const bool valid = src != nullptr && col0 + c < dim;
      copyAsync16(dst + r * ld + c, valid ? src + col0 + c : anyRow /* not read */, valid);
    }
  } else {
    for (int idx = threadIdx.x; idx < rows * width; idx += kThreads) {
      const int r = idx / width, c = idx - r * width;
      const T* src = rowPtr(r);
      dst[r * ld + c] = (src != nullptr && col0 + c < dim) ? src[col0 + c] : fromFloat<T>(0.0f);
    }
  }
}

// ---- warp-level products ----------------------------------------------------------------------------
template <int MT, int NT>
__device__ __forceinline__ void zero(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.0f;
}

// acc += A . B^T over k in [0, K): A = MT*16 rows at `a` (row stride lda), B = NT*8 rows at `b` (row
// stride ldb), both row-major in shared memory with k contiguous ("NT" product: both operands are rows
// of embeddings). K is a multiple of 16.
template <typename T, int MT, int NT>
struct WarpProductNT {
  static __device__ __forceinline__ void run(float (&acc)[MT][NT][4], const T* a, int lda, const T* b, int ldb,
                                             int K) {
    static_assert(NT % 2 == 0, "B fragments load in pairs");
    const int lane = threadIdx.x & 31;
    // ldmatrix row addresses: A: rows lane%16, k half lane/16; B: rows (lane%8) + 8*(lane/16), k half (lane/8)%2.
    const T* aBase = a + (lane & 15) * lda + (lane >> 4) * 8;
    const T* bBase = b + ((lane & 7) + ((lane >> 4) << 3)) * ldb + ((lane >> 3) & 1) * 8;
    for (int k = 0; k < K; k += 16) {
      uint32_t af[MT][4], bf[NT / 2][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) ldmatrixX4(af[m], aBase + m * 16 * lda + k);
#pragma unroll
      for (int p = 0; p < NT / 2; ++p) ldmatrixX4(bf[p], bBase + p * 16 * ldb + k);
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n) mma16816<T>(acc[m][n], af[m], bf[n / 2][(n & 1) * 2], bf[n / 2][(n & 1) * 2 + 1]);
    }
  }
};

// float32: the same fragment layout computed with FMAs (exact float32 products, k in order), 16-byte
// shared-memory reads of 4 consecutive k per row.
template <int MT, int NT>
struct WarpProductNT<float, MT, NT> {
  static __device__ __forceinline__ void run(float (&acc)[MT][NT][4], const float* a, int lda, const float* b,
                                             int ldb, int K) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int k = 0; k < K; k += 4) {
      float4 av[MT][2], bv[NT][2];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) av[m][h] = *reinterpret_cast<const float4*>(a + (m * 16 + g + 8 * h) * lda + k);
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) bv[n][e] = *reinterpret_cast<const float4*>(b + (n * 8 + 2 * t + e) * ldb + k);
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& c = acc[m][n][h * 2 + e];
              const float4 x = av[m][h], y = bv[n][e];
              c = fmaf(x.x, y.x, c);
              c = fmaf(x.y, y.y, c);
              c = fmaf(x.z, y.z, c);
              c = fmaf(x.w, y.w, c);
            }
    }
  }
};

// acc += A . B over k in [0, K): A = MT*16 rows at `a` (row stride lda, k contiguous), B = K rows at `b`
// (row stride ldb) of which the warp uses columns [0, NT*8) ("NN" product: B is a tile of embedding rows
// and the output runs along the embedding). Column pairs at or past nLimit (a multiple of 16) are
// skipped: they are outside the embedding, and their shared memory may hold stale data.
template <typename T, int MT, int NT>
struct WarpProductNN {
  static __device__ __forceinline__ void run(float (&acc)[MT][NT][4], const T* a, int lda, const T* b, int ldb,
                                             int K, int nLimit) {
    static_assert(NT % 2 == 0, "B fragments load in pairs");
    const int lane = threadIdx.x & 31;
    const T* aBase = a + (lane & 15) * lda + (lane >> 4) * 8;
    // ldmatrix.trans: matrix lane/8 covers k rows ((lane/8)%2)*8 .. +8 and columns (lane/16)*8 .. +8.
    const T* bBase = b + ((lane & 7) + ((lane >> 3) & 1) * 8) * ldb + (lane >> 4) * 8;
    for (int k = 0; k < K; k += 16) {
      uint32_t af[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) ldmatrixX4(af[m], aBase + m * 16 * lda + k);
#pragma unroll
      for (int p = 0; p < NT / 2; ++p) {
        if (p * 16 >= nLimit) break;
        uint32_t bf[4];
        ldmatrixX4Trans(bf, bBase + k * ldb + p * 16);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma16816<T>(acc[m][2 * p], af[m], bf[0], bf[1]);
          mma16816<T>(acc[m][2 * p + 1], af[m], bf[2], bf[3]);
        }
      }
    }
  }
};

template <int MT, int NT>
struct WarpProductNN<float, MT, NT> {
  static __device__ __forceinline__ void run(float (&acc)[MT][NT][4], const float* a, int lda, const float* b,
                                             int ldb, int K, int nLimit) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int k = 0; k < K; ++k) {
      float av[MT][2];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) av[m][h] = a[(m * 16 + g + 8 * h) * lda + k];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        if ((n / 2) * 16 >= nLimit) break;
        const float2 bv = *reinterpret_cast<const float2*>(b + k * ldb + n * 8 + 2 * t);
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            acc[m][n][h * 2 + 0] = fmaf(av[m][h], bv.x, acc[m][n][h * 2 + 0]);
            acc[m][n][h * 2 + 1] = fmaf(av[m][h], bv.y, acc[m][n][h * 2 + 1]);
          }
      }
    }
  }
};

// ---- reductions ---------------------------------------------------------------------------------------
__device__ __forceinline__ float warpSum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ double warpSum(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Sum of one double per thread over the CTA, in a fixed order (deterministic). Result in thread 0.
__device__ __forceinline__ double blockSum(double x, double* scratch /* kThreads / 32 */) {
  x = warpSum(x);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) total += scratch[w];
  return total;
}

// ---- host-side helpers --------------------------------------------------------------------------------
struct DeviceLimits {
  int smemOptin = 48 * 1024;  // bytes of dynamic shared memory one block may opt into
  int multiprocessors = 1;
};

inline cudaError_t deviceLimits(DeviceLimits* out) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&out->smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return e;
  return cudaDeviceGetAttribute(&out->multiprocessors, cudaDevAttrMultiProcessorCount, device);
}

// Lets `kernel` take `bytes` of dynamic shared memory on the current device (beyond the default 48 KB),
// calling the runtime only the first time a kernel needs more than before on a device.
template <typename Kernel>
cudaError_t allowSharedMemory(Kernel* kernel, int64_t bytes) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int64_t> allowed;
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = allowed.find(key);
  if (it != allowed.end() && it->second >= bytes) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e == cudaSuccess) allowed[key] = bytes;
  return e;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

__host__ __device__ inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t roundUp(int64_t a, int64_t b) { return ceilDiv(a, b) * b; }

}  // namespace coltrast::kernels::detail
