// In-batch contrastive loss (InfoNCE), forward and backward (declared in kernels.h; tiling in
// common.cuh). The [B, N] logits are never stored: every pass recomputes 64 x 64 tiles of them on the
// tensor cores and consumes them in registers, FlashAttention / Inf-CL style, so the memory beyond the
// inputs and outputs is O(B) floats.
//
// Forward (lseKernel): one CTA per 64 "X" rows; it streams every 64-row tile of "Y" rows, computes the
// logits tile and folds it into a running (max, sum of exp) per X row kept in registers (the online
// log-sum-exp, in base 2), merged over the 4 lanes and then the 4 warps sharing a row at the end. The row
// pass is X = q, Y = c (rowLse, and each row's loss term lse - q_i . c_i / tau, with the positive logit read
// off the diagonal tiles); the symmetric column pass is the same kernel with X = c[:B], Y = q (colLse and the
// column terms). A one-CTA kernel then averages the terms in float64, in a fixed order.
//
// Backward (gradKernel), with a = dL/dloss / B (halved when symmetric) and
//   dlogit[i, k] = a * ( exp(logit - rowLse_i) - [i = k]  +  [symmetric, k < B] (exp(logit - colLse_k) - [i = k]) ):
//   dq = dlogit . c / tau,   dc = dlogit^T . q / tau,   dtau = -sum(dlogit * logit) / tau.
// dq and dc are the same computation with the roles of q and c swapped, so one kernel does both, each in
// its own launch: a CTA owns 64 X rows (queries for dq, candidates for dc) and a KC-wide slice of the
// embedding, accumulates its 64 x KC output in registers (float32), and for every Y tile recomputes the
// 64 x 64 logits (full embedding), turns them into dlogit in shared memory (float32 for float32 inputs,
// else the input dtype like FlashAttention's dS, scaled by 2^14 for float16 so small probabilities stay
// normal numbers), and multiplies that by the Y tile's slice: dX += dlogit . Y. The slice's columns are
// the last chunk the logits pass loads, so the Y tile is read once per tile and the product reads it
// from shared memory. No atomics: each output has one owner, sums run in a fixed order (deterministic).
// The cost is two logit recomputations (dq pass, dc pass) instead of one with atomic dq (FlashAttention-2
// style; deterministic was preferred, measure before changing). Slices are 128, 256 or 384 columns wide
// for 16-bit inputs (64 or 128 for float32), the narrowest that covers the embedding; a wider embedding
// (dim > 384, or > 128 for float32) is cut into 384-wide slices (256 on sm_80, 128 for float32), each CTA
// of a slice recomputing the logits.
#include <algorithm>
#include <cfloat>

#include "common.cuh"
#include "kernels.h"

namespace coltrast::kernels {
namespace {

using namespace detail;

// Chunking of the embedding shared by both kernels (see forwardTiling / gradTiling) and whether each
// operand can be staged with 16-byte cp.async.
struct Tiling {
  int dim, KC, ld, nchunks;
  bool xResident, vecX, vecY;
};

struct LseParams {
  const void* x;
  int64_t xStride, nx;
  const void* y;
  int64_t yStride, ny;
  Tiling tiling;
  const float* temperature;
  float* lse;   // [nx]
  float* term;  // [nx]: lse - the logit of X row i against Y row i, formed without the difference (see lseKernel)
};

struct GradParams {
  const void* x;
  int64_t xStride, nx;
  const void* y;
  int64_t yStride, ny;
  Tiling tiling;
  int64_t B;
  bool xIsQuery, symmetric;
  const float* temperature;
  const float* gradLoss;
  const float* rowLse;
  const float* colLse;
  void* out;  // [nx, dim]
  int64_t outStride;
  double* tauPartial;  // X = q launches: [gridDim.x] partial sums of dlogit * logit / a
};

// Merges a running base-2 log-sum-exp (m, s: sum of 2^(x - m)) with another. s = 0 means "nothing yet";
// NaN sums propagate.
__device__ __forceinline__ void mergeLse(float& m, float& s, float m2, float s2) {
  if (s2 == 0.0f) return;
  if (s == 0.0f) {
    m = m2;
    s = s2;
    return;
  }
  const float hi = fmaxf(m, m2);
  s = s * exp2f(m - hi) + s2 * exp2f(m2 - hi);
  m = hi;
}

// The X / Y staging and the logits product, shared by both kernels. Item s = (Y tile s / nchunks, chunk
// order(s % nchunks)); the order puts chunk `last` at the end of each tile.
template <typename T>
struct TileStream {
  T* xBase;
  T* yBase;
  int xStep, tileElems;
  const T* X;
  const T* Y;
  int64_t xStride, yStride, nx, ny, r0;
  Tiling tl;
  int last;

  __device__ __forceinline__ int chunkOf(int s) const { return (last + 1 + s % tl.nchunks) % tl.nchunks; }
  __device__ __forceinline__ int width(int c) const { return (min(tl.KC, tl.dim - c * tl.KC) + 15) & ~15; }
  __device__ __forceinline__ T* x(int buf) const { return xBase + buf * xStep; }
  __device__ __forceinline__ T* y(int buf) const { return yBase + buf * tileElems; }

  __device__ __forceinline__ void loadX(int buf, int c) const {
    const T* X_ = X;
    const int64_t stride = xStride, n = nx, base = r0;
    stageRows<T>(x(buf), tl.ld, kTileX,
                 [=](int r) -> const T* { return base + r < n ? X_ + (base + r) * stride : nullptr; }, c * tl.KC,
                 width(c), tl.dim, tl.vecX, X);
  }
  __device__ __forceinline__ void load(int s, int buf) const {
    const int c = chunkOf(s), tile = s / tl.nchunks;
    if (!tl.xResident) loadX(buf, c);
    const T* Y_ = Y;
    const int64_t stride = yStride, n = ny, base = int64_t(tile) * kTileY;
    stageRows<T>(y(buf), tl.ld, kTileY,
                 [=](int r) -> const T* { return base + r < n ? Y_ + (base + r) * stride : nullptr; }, c * tl.KC,
                 width(c), tl.dim, tl.vecY, Y);
  }
};

template <typename T>
__device__ __forceinline__ TileStream<T> makeStream(unsigned char* smem, const void* x, int64_t xStride, int64_t nx,
                                                    const void* y, int64_t yStride, int64_t ny, const Tiling& tl,
                                                    int last) {
  TileStream<T> ts;
  ts.tileElems = kTileX * tl.ld;
  ts.xBase = reinterpret_cast<T*>(smem);
  ts.xStep = tl.xResident ? 0 : ts.tileElems;
  ts.yBase = ts.xBase + ts.xStep + ts.tileElems;
  ts.X = static_cast<const T*>(x);
  ts.Y = static_cast<const T*>(y);
  ts.xStride = xStride;
  ts.yStride = yStride;
  ts.nx = nx;
  ts.ny = ny;
  ts.r0 = int64_t(blockIdx.x) * kTileX;
  ts.tl = tl;
  ts.last = last;
  return ts;
}

// Bytes after the tiles, 16-aligned.
template <typename T>
__device__ __forceinline__ unsigned char* afterTiles(unsigned char* smem, const Tiling& tl) {
  return smem + size_t((tl.xResident ? 3 : 4) * kTileX * tl.ld) * sizeof(T);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) lseKernel(const LseParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Tiling tl = p.tiling;
  const TileStream<T> ts = makeStream<T>(smem, p.x, p.xStride, p.nx, p.y, p.yStride, p.ny, tl, tl.nchunks - 1);
  float* redM = reinterpret_cast<float*>(afterTiles<T>(smem, tl));  // [64][kWarpsN]
  float* redS = redM + kTileX * kWarpsN;                             // [64][kWarpsN]
  float* positive2 = redS + kTileX * kWarpsN;                        // [64]: each row's positive, base 2

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const float scale2 = (1.0f / *p.temperature) * kLog2e;  // as gradKernel's
  const int items = int(ceilDiv(p.ny, kTileY)) * tl.nchunks;

  float acc[kMT][kNT][4];
  float m[kMT][2], s[kMT][2];
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m[i][h] = -INFINITY;
      s[i][h] = 0.0f;
    }

  if (tl.xResident) ts.loadX(0, 0);
  ts.load(0, 0);
  copyAsyncCommit();
  for (int it = 0; it < items; ++it) {
    if (it + 1 < items) {
      ts.load(it + 1, (it + 1) & 1);
      copyAsyncCommit();
      copyAsyncWait<1>();
    } else {
      copyAsyncWait<0>();
    }
    __syncthreads();
    const int cc = it % tl.nchunks, c = ts.chunkOf(it), tile = it / tl.nchunks;
    if (cc == 0) zero(acc);
    WarpProductNT<T, kMT, kNT>::run(acc, ts.x(it & 1) + wm * 32 * tl.ld, tl.ld, ts.y(it & 1) + wn * 16 * tl.ld,
                                    tl.ld, ts.width(c));
    if (cc == tl.nchunks - 1) {
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t row = ts.r0 + wm * 32 + i * 16 + g + 8 * h;
          float tileMax = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int64_t col = int64_t(tile) * kTileY + wn * 16 + nt * 8 + 2 * t + e;
              // The scaled logit, rounded once (no FMA into the exponent below): the max and the positive are
              // then the same float when the positive is the largest, and its 2^(x2 - max) is exactly 1.
              const float x2 = __fmul_rn(acc[i][nt][h * 2 + e], scale2);
              acc[i][nt][h * 2 + e] = x2;
              if (col < p.ny) tileMax = fmaxf(tileMax, x2);
            }
          if (tileMax > m[i][h]) {
            s[i][h] *= exp2f(m[i][h] - tileMax);
            m[i][h] = tileMax;
          }
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int64_t col = int64_t(tile) * kTileY + wn * 16 + nt * 8 + 2 * t + e;
              const float x2 = acc[i][nt][h * 2 + e];
              // -inf adds nothing; NaN propagates into the sum.
              if (col < p.ny && x2 != -INFINITY) s[i][h] += exp2f(x2 - m[i][h]);
              if (col == row && row < p.nx) positive2[wm * 32 + i * 16 + g + 8 * h] = x2;
            }
        }
    }
    __syncthreads();  // this buffer is loaded again two items later
  }

#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mm = m[i][h], ss = s[i][h];
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) mergeLse(mm, ss, __shfl_xor_sync(0xffffffffu, mm, o), __shfl_xor_sync(0xffffffffu, ss, o));
      if (t == 0) {
        const int row = wm * 32 + i * 16 + g + 8 * h;
        redM[row * kWarpsN + wn] = mm;
        redS[row * kWarpsN + wn] = ss;
      }
    }
  __syncthreads();
  if (tid < kTileX && ts.r0 + tid < p.nx) {
    float mm = redM[tid * kWarpsN], ss = redS[tid * kWarpsN];
    for (int w = 1; w < kWarpsN; ++w) mergeLse(mm, ss, redM[tid * kWarpsN + w], redS[tid * kWarpsN + w]);
    const float logSum = log2f(ss);
    p.lse[ts.r0 + tid] = (mm + logSum) * kLn2;
    // The loss term lse - positive as (max - positive) + log2(sum): the lse and the positive are both about 1/tau
    // (float32's step at 100 is 7.6e-6), their difference can be far smaller, and it is >= 0 this way (sum >= 1).
    p.term[ts.r0 + tid] = ((mm - positive2[tid]) + logSum) * kLn2;
  }
}

// loss = mean(rowTerm), averaged with mean(colTerm) when symmetric (each lseKernel's lse - positive). One CTA,
// float64.
__global__ void lossKernel(const float* rowTerm, const float* colTerm, int64_t B, bool symmetric, float* loss) {
  __shared__ double scratch[32];
  double rows = 0.0, cols = 0.0;
  for (int64_t i = threadIdx.x; i < B; i += blockDim.x) {
    rows += double(rowTerm[i]);
    if (symmetric) cols += double(colTerm[i]);
  }
  rows = blockSum(rows, scratch);
  cols = blockSum(cols, scratch);
  if (threadIdx.x == 0) {
    double value = rows / double(B);
    if (symmetric) value = 0.5 * (value + cols / double(B));
    *loss = float(value);
  }
}

template <typename T, int NT3>
__global__ void __launch_bounds__(kThreads, 1) gradKernel(const GradParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Tiling tl = p.tiling;
  const int own = blockIdx.y;  // this CTA's slice of the embedding: columns [own * KC, own * KC + KC)
  const TileStream<T> ts = makeStream<T>(smem, p.x, p.xStride, p.nx, p.y, p.yStride, p.ny, tl, own);
  constexpr int ldS = kTileY + kVec<T>;
  T* dS = reinterpret_cast<T*>(afterTiles<T>(smem, tl));                // [64][ldS]
  double* scratch = reinterpret_cast<double*>(dS + kTileX * ldS);       // [8]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const float tau = *p.temperature, invTau = 1.0f / tau, scale2 = invTau * kLog2e;
  const float a = *p.gradLoss / float(p.B) * (p.symmetric ? 0.5f : 1.0f);
  // float16 dlogit is scaled into the normal range (|dlogit / a| <= 2, so 2^14 keeps it under 65504).
  const float sigma = std::is_same<T, __half>::value ? 16384.0f : 1.0f;
  const bool tauOn = p.xIsQuery && own == 0 && p.tauPartial != nullptr;
  const int items = int(ceilDiv(p.ny, kTileY)) * tl.nchunks;
  const int ownWidth = ts.width(own), warpCol0 = wn * NT3 * 8;

  float acc[kMT][kNT][4];
  float out[kMT][NT3][4];
  zero(out);
  double tauSum = 0.0;

  if (tl.xResident) ts.loadX(0, 0);
  ts.load(0, 0);
  copyAsyncCommit();
  for (int it = 0; it < items; ++it) {
    if (it + 1 < items) {
      ts.load(it + 1, (it + 1) & 1);
      copyAsyncCommit();
      copyAsyncWait<1>();
    } else {
      copyAsyncWait<0>();
    }
    __syncthreads();
    const int cc = it % tl.nchunks, c = ts.chunkOf(it), tile = it / tl.nchunks;
    if (cc == 0) zero(acc);
    WarpProductNT<T, kMT, kNT>::run(acc, ts.x(it & 1) + wm * 32 * tl.ld, tl.ld, ts.y(it & 1) + wn * 16 * tl.ld,
                                    tl.ld, ts.width(c));
    if (cc == tl.nchunks - 1) {
      // The logits tile is complete and the Y buffer holds this CTA's slice: dlogit / a into shared memory.
      float tileTau = 0.0f;
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int rowL = wm * 32 + i * 16 + g + 8 * h;
          const int64_t rowG = ts.r0 + rowL;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int colL = wn * 16 + nt * 8 + 2 * t + e;
              const int64_t colG = int64_t(tile) * kTileY + colL;
              float dl = 0.0f;
              if (rowG < p.nx && colG < p.ny) {
                const int64_t qi = p.xIsQuery ? rowG : colG, ck = p.xIsQuery ? colG : rowG;
                const float x2 = acc[i][nt][h * 2 + e] * scale2, delta = qi == ck ? 1.0f : 0.0f;
                dl = exp2f(x2 - p.rowLse[qi] * kLog2e) - delta;
                if (p.symmetric && ck < p.B) dl += exp2f(x2 - p.colLse[ck] * kLog2e) - delta;
                if (tauOn) tileTau = fmaf(dl, acc[i][nt][h * 2 + e] * invTau, tileTau);
              }
              dS[rowL * ldS + colL] = fromFloat<T>(dl * sigma);
            }
        }
      tauSum += double(tileTau);
      __syncthreads();
      WarpProductNN<T, kMT, NT3>::run(out, dS + wm * 32 * ldS, ldS, ts.y(it & 1) + warpCol0, tl.ld, kTileY,
                                      ownWidth - warpCol0);
    }
    __syncthreads();  // this buffer (and dS) is written again
  }

  const float outScale = a * invTau / sigma;
  T* O = static_cast<T*>(p.out);
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t rowG = ts.r0 + wm * 32 + i * 16 + g + 8 * h;
      if (rowG >= p.nx) continue;
#pragma unroll
      for (int nt = 0; nt < NT3; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = own * tl.KC + warpCol0 + nt * 8 + 2 * t + e;
          if (warpCol0 + nt * 8 + 2 * t + e < ownWidth && col < tl.dim) {
            O[rowG * p.outStride + col] = fromFloat<T>(out[i][nt][h * 2 + e] * outScale);
          }
        }
    }
  if (tauOn) {
    const double total = blockSum(tauSum, scratch);
    if (tid == 0) p.tauPartial[blockIdx.x] = total;
  }
}

// dtau = -a / tau * sum(partials), summed in a fixed order. One CTA.
__global__ void temperatureGradKernel(const double* partial, int64_t count, const float* temperature,
                                      const float* gradLoss, int64_t B, bool symmetric, float* dTemperature) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sum = blockSum(sum, scratch);
  if (threadIdx.x == 0) {
    const double a = double(*gradLoss) / double(B) * (symmetric ? 0.5 : 1.0);
    *dTemperature = float(-a * sum / double(*temperature));
  }
}

bool checkArgs(const ContrastiveArgs& a) {
  return a.q != nullptr && a.c != nullptr && a.temperature != nullptr && a.B > 0 && a.N >= a.B && a.dim > 0 &&
         a.dim < (int64_t(1) << 30) && a.N < (int64_t(1) << 37) && a.qStride >= a.dim && a.cStride >= a.dim;
}

template <typename T>
bool vectorizable(const void* base, int64_t stride, int64_t dim) {
  return aligned16(base) && stride % kVec<T> == 0 && dim % kVec<T> == 0;
}

template <typename T>
int64_t tileBytes(int64_t kc) {
  return kTileX * (kc + kVec<T>) * int64_t(sizeof(T));
}

// Forward chunking: the whole (16-aligned) embedding when the three tiles fit in about 110 KB (two CTAs
// per multiprocessor), else 256-byte chunks (128 16-bit or 64 float32 elements) with X streamed too.
// a.forwardResident overrides the 110 KB rule (the caller checks the bytes against the device).
template <typename T>
Tiling forwardTiling(const ContrastiveArgs& a, const void* x, int64_t xStride, const void* y, int64_t yStride,
                     int64_t* bytes) {
  Tiling tl{};
  tl.dim = int(a.dim);
  const int64_t dimPad = roundUp(a.dim, 16), extra = (2 * kWarpsN + 1) * kTileX * 4;
  const bool resident = a.forwardResident != 0 ? a.forwardResident > 0 : 3 * tileBytes<T>(dimPad) + extra <= 110 * 1024;
  if (resident) {
    tl.KC = int(dimPad);
    tl.nchunks = 1;
    tl.xResident = true;
  } else {
    const int64_t kc = sizeof(T) == 2 ? 128 : 64;
    tl.nchunks = int(ceilDiv(a.dim, kc));
    tl.KC = int(roundUp(ceilDiv(a.dim, tl.nchunks), 16));
    tl.xResident = false;
  }
  tl.ld = tl.KC + kVec<T>;
  tl.vecX = vectorizable<T>(x, xStride, a.dim);
  tl.vecY = vectorizable<T>(y, yStride, a.dim);
  *bytes = (tl.xResident ? 3 : 4) * tileBytes<T>(tl.KC) + extra;
  return tl;
}

// Backward chunking: the output slice is KC = 32 * NT3 columns wide (a template parameter: the slice's
// float32 sums live in registers). One slice covering the embedding when the tiles fit (X resident);
// else the widest slice that fits with X streamed, one CTA per slice. a.backwardSlice, when one of the
// widths, is taken instead (X resident if that one slice covers the embedding and fits).
template <typename T>
int64_t gradBytes(int64_t kc, bool resident) {
  return (resident ? 3 : 4) * tileBytes<T>(kc) + kTileX * (kTileY + kVec<T>) * int64_t(sizeof(T)) + 64;
}

template <typename T>
Tiling gradTiling(const ContrastiveArgs& a, int smemOptin, int64_t* bytes) {
  constexpr int kOptions16[] = {128, 256, 384};
  constexpr int kOptions32[] = {64, 128};
  const int* options = sizeof(T) == 2 ? kOptions16 : kOptions32;
  const int count = sizeof(T) == 2 ? 3 : 2;
  Tiling tl{};
  tl.dim = int(a.dim);
  tl.KC = 0;
  if (a.backwardSlice != 0) {
    if (std::find(options, options + count, a.backwardSlice) == options + count) return tl;  // not a width: fail
    tl.KC = a.backwardSlice;
    tl.xResident = a.backwardSlice >= a.dim && gradBytes<T>(tl.KC, true) <= smemOptin;
    if (!tl.xResident && gradBytes<T>(tl.KC, false) > smemOptin) tl.KC = 0;
  }
  for (int o = 0; o < count && tl.KC == 0 && a.backwardSlice == 0; ++o) {
    if (options[o] >= a.dim && gradBytes<T>(options[o], true) <= smemOptin) {
      tl.KC = options[o];
      tl.xResident = true;
    }
  }
  if (tl.KC == 0 && a.backwardSlice == 0) {
    for (int o = count - 1; o >= 0 && tl.KC == 0; --o) {
      if (gradBytes<T>(options[o], false) <= smemOptin) tl.KC = options[o];
    }
    tl.xResident = false;
  }
  if (tl.KC == 0) return tl;  // no option fits: the caller fails
  tl.nchunks = int(ceilDiv(a.dim, tl.KC));
  tl.xResident = tl.xResident && tl.nchunks == 1;
  tl.ld = tl.KC + kVec<T>;
  *bytes = gradBytes<T>(tl.KC, tl.xResident);
  return tl;
}

template <typename T>
cudaError_t launchLse(const LseParams& p, int64_t bytes, cudaStream_t stream) {
  cudaError_t err = allowSharedMemory(lseKernel<T>, bytes);
  if (err != cudaSuccess) return err;
  lseKernel<T><<<unsigned(ceilDiv(p.nx, kTileX)), kThreads, size_t(bytes), stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launchForward(const ContrastiveArgs& a, float* loss, float* rowLse, float* colLse, float* rowTerm,
                          float* colTerm, cudaStream_t stream) {
  DeviceLimits limits;
  cudaError_t err = deviceLimits(&limits);
  if (err != cudaSuccess) return err;
  LseParams p{};
  int64_t bytes = 0;
  p.x = a.q;
  p.xStride = a.qStride;
  p.nx = a.B;
  p.y = a.c;
  p.yStride = a.cStride;
  p.ny = a.N;
  p.tiling = forwardTiling<T>(a, a.q, a.qStride, a.c, a.cStride, &bytes);
  if (bytes > limits.smemOptin) return cudaErrorInvalidValue;
  p.temperature = a.temperature;
  p.lse = rowLse;
  p.term = rowTerm;
  err = launchLse<T>(p, bytes, stream);
  if (err != cudaSuccess) return err;
  if (a.symmetric) {
    p.x = a.c;
    p.xStride = a.cStride;
    p.nx = a.B;
    p.y = a.q;
    p.yStride = a.qStride;
    p.ny = a.B;
    p.tiling = forwardTiling<T>(a, a.c, a.cStride, a.q, a.qStride, &bytes);
    p.lse = colLse;
    p.term = colTerm;
    err = launchLse<T>(p, bytes, stream);
    if (err != cudaSuccess) return err;
  }
  lossKernel<<<1, 1024, 0, stream>>>(rowTerm, colTerm, a.B, a.symmetric, loss);
  return cudaGetLastError();
}

template <typename T, int NT3>
cudaError_t launchGrad(const GradParams& p, int64_t bytes, cudaStream_t stream) {
  cudaError_t err = allowSharedMemory(gradKernel<T, NT3>, bytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(ceilDiv(p.nx, kTileX)), unsigned(p.tiling.nchunks));
  gradKernel<T, NT3><<<grid, kThreads, size_t(bytes), stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launchGradSlice(const GradParams& p, int64_t bytes, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    switch (p.tiling.KC) {
      case 128:
        return launchGrad<T, 4>(p, bytes, stream);
      case 256:
        return launchGrad<T, 8>(p, bytes, stream);
      case 384:
        return launchGrad<T, 12>(p, bytes, stream);
    }
  } else {
    switch (p.tiling.KC) {
      case 64:
        return launchGrad<T, 2>(p, bytes, stream);
      case 128:
        return launchGrad<T, 4>(p, bytes, stream);
    }
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launchBackward(const ContrastiveArgs& a, const ContrastiveGrads& grads, double* tauPartial,
                           cudaStream_t stream) {
  DeviceLimits limits;
  cudaError_t err = deviceLimits(&limits);
  if (err != cudaSuccess) return err;
  int64_t bytes = 0;
  Tiling tl = gradTiling<T>(a, limits.smemOptin, &bytes);
  if (tl.KC == 0) return cudaErrorInvalidValue;
  GradParams p{};
  p.B = a.B;
  p.symmetric = a.symmetric;
  p.temperature = a.temperature;
  p.gradLoss = grads.gradLoss;
  p.rowLse = grads.rowLse;
  p.colLse = grads.colLse;
  // dq: X = q (all B), Y = c (all N).
  p.x = a.q;
  p.xStride = a.qStride;
  p.nx = a.B;
  p.y = a.c;
  p.yStride = a.cStride;
  p.ny = a.N;
  p.xIsQuery = true;
  p.out = grads.dq;
  p.outStride = grads.dqStride;
  p.tauPartial = tauPartial;
  p.tiling = tl;
  p.tiling.vecX = vectorizable<T>(a.q, a.qStride, a.dim);
  p.tiling.vecY = vectorizable<T>(a.c, a.cStride, a.dim);
  err = launchGradSlice<T>(p, bytes, stream);
  if (err != cudaSuccess) return err;
  // dc: X = c (all N), Y = q (all B).
  p.x = a.c;
  p.xStride = a.cStride;
  p.nx = a.N;
  p.y = a.q;
  p.yStride = a.qStride;
  p.ny = a.B;
  p.xIsQuery = false;
  p.out = grads.dc;
  p.outStride = grads.dcStride;
  p.tauPartial = nullptr;
  p.tiling.vecX = vectorizable<T>(a.c, a.cStride, a.dim);
  p.tiling.vecY = vectorizable<T>(a.q, a.qStride, a.dim);
  err = launchGradSlice<T>(p, bytes, stream);
  if (err != cudaSuccess) return err;
  temperatureGradKernel<<<1, 1024, 0, stream>>>(tauPartial, ceilDiv(a.B, kTileX), a.temperature, grads.gradLoss, a.B,
                                                a.symmetric, grads.dTemperature);
  return cudaGetLastError();
}

// ---- The chunked strategy's kernels: everything but the products, over a float32 chunk of q c^T ----------
// Folds one value into a running base-2 (max, sum): one exp2 per value.
__device__ __forceinline__ void foldLse(float& m, float& s, float x) {
  if (s == 0.0f) {
    m = x;
    s = 1.0f;
  } else if (x > m) {
    s = s * exp2f(m - x) + 1.0f;
    m = x;
  } else {
    s += exp2f(x - m);
  }
}

// One CTA per chunk row: every thread folds its columns into a base-2 (max, sum), then the CTA merges them.
// Every fold takes the scaled logit rounded once (__fmul_rn: never an FMA into the exponent), as the positive is,
// so that max - positive is exactly 0 when the positive is the largest (kernels.h, contrastiveChunkRows).
__global__ void __launch_bounds__(kThreads) chunkRowsKernel(const LogitChunk ch, float* rowMax, float* rowSum,
                                                            float* positive2) {
  __shared__ float ms[kThreads];
  __shared__ float ss[kThreads];
  const int64_t r = blockIdx.x;
  const float* row = ch.s + r * ch.ld;
  const float k2 = kLog2e / *ch.temperature;
  float m = 0.0f, sum = 0.0f;
  for (int64_t k = threadIdx.x; k < ch.N; k += kThreads) foldLse(m, sum, __fmul_rn(row[k], k2));
  ms[threadIdx.x] = m;
  ss[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) {
      float a = ms[threadIdx.x], b = ss[threadIdx.x];
      mergeLse(a, b, ms[threadIdx.x + half], ss[threadIdx.x + half]);
      ms[threadIdx.x] = a;
      ss[threadIdx.x] = b;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    rowMax[ch.r0 + r] = ms[0];
    rowSum[ch.r0 + r] = ss[0];
    positive2[ch.r0 + r] = __fmul_rn(row[ch.r0 + r], k2);
  }
}

// Columns j < B: a CTA of 32 x 8 threads owns 32 columns; each of its 8 thread rows folds every 8th chunk row,
// then the 8 partial (max, sum) of a column are merged, in order, into the running ones. The folded values are
// rounded as chunkRowsKernel's are, so its positive2[j] is the same float as column j's own S[j, j] scaled.
constexpr int kColumnsPerCta = 32, kColumnRowGroups = kThreads / kColumnsPerCta;
__global__ void __launch_bounds__(kThreads) chunkColumnsKernel(const LogitChunk ch, float* colMax, float* colSum) {
  __shared__ float ms[kThreads];  // [row group][column]
  __shared__ float ss[kThreads];
  const int tx = threadIdx.x % kColumnsPerCta, ty = threadIdx.x / kColumnsPerCta;
  const int64_t j = int64_t(blockIdx.x) * kColumnsPerCta + tx;
  const int64_t ncols = min(ch.B, ch.N);
  const float k2 = kLog2e / *ch.temperature;
  float m = 0.0f, sum = 0.0f;
  if (j < ncols)
    for (int64_t r = ty; r < ch.rows; r += kColumnRowGroups) foldLse(m, sum, __fmul_rn(ch.s[r * ch.ld + j], k2));
  ms[threadIdx.x] = m;
  ss[threadIdx.x] = sum;
  __syncthreads();
  if (ty == 0 && j < ncols) {
    float M = colMax[j], S = colSum[j];
    for (int g = 0; g < kColumnRowGroups; ++g) mergeLse(M, S, ms[g * kColumnsPerCta + tx], ss[g * kColumnsPerCta + tx]);
    colMax[j] = M;
    colSum[j] = S;
  }
}

// dlogit, elementwise: one CTA row per chunk row (blockIdx.y), kThreads * 4 columns per CTA.
template <typename T>
__global__ void __launch_bounds__(kThreads) chunkGradKernel(const LogitChunk ch, const float* rowLse, const float* colLse,
                                                           float scale, T* out, int64_t ldOut) {
  const int64_t r = blockIdx.y, i = ch.r0 + r;
  const float k2 = kLog2e / *ch.temperature;
  const float rowLse2 = rowLse[i] * kLog2e;
  const float* row = ch.s + r * ch.ld;
  T* dst = out + r * ldOut;
  const int64_t k0 = int64_t(blockIdx.x) * kThreads * 4;
  for (int u = 0; u < 4; ++u) {
    const int64_t k = k0 + u * kThreads + threadIdx.x;
    if (k >= ch.N) break;
    const float x = row[k] * k2;
    const float target = k == i ? 1.0f : 0.0f;
    float g = exp2f(x - rowLse2) - target;
    if (colLse != nullptr && k < ch.B) g += exp2f(x - colLse[k] * kLog2e) - target;
    dst[k] = fromFloat<T>(g * scale);
  }
}

bool checkChunk(const LogitChunk& ch) {
  return ch.s != nullptr && ch.temperature != nullptr && ch.rows >= 1 && ch.rows <= 65535 && ch.N >= 1 &&
         ch.B >= 1 && ch.ld >= ch.N && ch.r0 >= 0 && ch.r0 + ch.rows <= ch.B && ch.B <= ch.N;
}

}  // namespace

size_t contrastiveForwardWorkspaceBytes(const ContrastiveArgs& args) {
  return size_t(detail::roundUp(2 * std::max<int64_t>(args.B, 1) * int64_t(sizeof(float)), 256));
}

cudaError_t contrastiveForward(const ContrastiveArgs& args, float* loss, float* rowLse, float* colLse,
                               void* workspace, size_t workspaceBytes, cudaStream_t stream) {
  if (!checkArgs(args) || loss == nullptr || rowLse == nullptr || (args.symmetric && colLse == nullptr) ||
      workspace == nullptr || workspaceBytes < contrastiveForwardWorkspaceBytes(args)) {
    return cudaErrorInvalidValue;
  }
  // Each row's and each column's loss term.
  float* rowTerm = static_cast<float*>(workspace);
  float* colTerm = rowTerm + std::max<int64_t>(args.B, 1);
  switch (args.dtype) {
    case DType::F32:
      return launchForward<float>(args, loss, rowLse, colLse, rowTerm, colTerm, stream);
    case DType::F16:
      return launchForward<__half>(args, loss, rowLse, colLse, rowTerm, colTerm, stream);
    case DType::BF16:
      return launchForward<__nv_bfloat16>(args, loss, rowLse, colLse, rowTerm, colTerm, stream);
  }
  return cudaErrorInvalidValue;
}

size_t contrastiveBackwardWorkspaceBytes(const ContrastiveArgs& args) {
  return size_t(detail::roundUp(std::max<int64_t>(detail::ceilDiv(args.B, detail::kTileX), 1) * 8, 256));
}

cudaError_t contrastiveBackward(const ContrastiveArgs& args, const ContrastiveGrads& grads, void* workspace,
                                size_t workspaceBytes, cudaStream_t stream) {
  if (!checkArgs(args) || grads.gradLoss == nullptr || grads.rowLse == nullptr ||
      (args.symmetric && grads.colLse == nullptr) || grads.dq == nullptr || grads.dc == nullptr ||
      grads.dTemperature == nullptr || workspace == nullptr ||
      workspaceBytes < contrastiveBackwardWorkspaceBytes(args)) {
    return cudaErrorInvalidValue;
  }
  double* tauPartial = static_cast<double*>(workspace);
  switch (args.dtype) {
    case DType::F32:
      return launchBackward<float>(args, grads, tauPartial, stream);
    case DType::F16:
      return launchBackward<__half>(args, grads, tauPartial, stream);
    case DType::BF16:
      return launchBackward<__nv_bfloat16>(args, grads, tauPartial, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t contrastiveChunkRows(const LogitChunk& chunk, float* rowMax, float* rowSum, float* positive2,
                                 cudaStream_t stream) {
  if (!checkChunk(chunk) || rowMax == nullptr || rowSum == nullptr || positive2 == nullptr) return cudaErrorInvalidValue;
  chunkRowsKernel<<<unsigned(chunk.rows), kThreads, 0, stream>>>(chunk, rowMax, rowSum, positive2);
  return cudaGetLastError();
}

cudaError_t contrastiveChunkColumns(const LogitChunk& chunk, float* colMax, float* colSum, cudaStream_t stream) {
  if (!checkChunk(chunk) || colMax == nullptr || colSum == nullptr) return cudaErrorInvalidValue;
  chunkColumnsKernel<<<unsigned(ceilDiv(chunk.B, kColumnsPerCta)), kThreads, 0, stream>>>(chunk, colMax, colSum);
  return cudaGetLastError();
}

cudaError_t contrastiveChunkGrad(const LogitChunk& chunk, const float* rowLse, const float* colLse, DType outType,
                                 float scale, void* out, int64_t ldOut, cudaStream_t stream) {
  if (!checkChunk(chunk) || rowLse == nullptr || out == nullptr || ldOut < chunk.N) return cudaErrorInvalidValue;
  const dim3 grid(unsigned(ceilDiv(chunk.N, int64_t(kThreads) * 4)), unsigned(chunk.rows));
  switch (outType) {
    case DType::F32:
      chunkGradKernel<float><<<grid, kThreads, 0, stream>>>(chunk, rowLse, colLse, scale, static_cast<float*>(out), ldOut);
      break;
    case DType::F16:
      chunkGradKernel<__half><<<grid, kThreads, 0, stream>>>(chunk, rowLse, colLse, scale, static_cast<__half*>(out), ldOut);
      break;
    case DType::BF16:
      chunkGradKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(chunk, rowLse, colLse, scale,
                                                                      static_cast<__nv_bfloat16*>(out), ldOut);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace coltrast::kernels
