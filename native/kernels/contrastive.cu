// In-batch contrastive loss kernels (declared in kernels.h): the elementwise and reduction work on one
// cuBLAS tile of scaled logits. A warp owns a row, lanes stride over its columns (coalesced reads and
// writes), and the row's partial results merge with warp shuffles, so no tile element is read twice.
#include <cfloat>

#include "common.cuh"
#include "kernels.h"

namespace coltrast::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

// Merges (m2, s2) into the running (m, s) of a log-sum-exp: sum of exp(x - m) over both parts.
__device__ __forceinline__ void mergeLse(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float hi = fmaxf(m, m2);
  s = s * __expf(m - hi) + s2 * __expf(m2 - hi);
  m = hi;
}

__global__ void onlineLseKernel(OnlineLseArgs a) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= a.rows) return;
  const float* x = a.tile + row * a.ld;
  float m = -INFINITY, s = 0.0f;
  for (int64_t k = lane; k < a.cols; k += 32) mergeLse(m, s, x[k], 1.0f);
  for (int offset = 16; offset > 0; offset /= 2) {
    const float m2 = __shfl_down_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_down_sync(0xffffffffu, s, offset);
    mergeLse(m, s, m2, s2);
  }
  if (lane == 0) {
    float rm = a.rowMax[row], rs = a.rowSum[row];
    mergeLse(rm, rs, m, s);
    a.rowMax[row] = rm;
    a.rowSum[row] = rs;
  }
}

__global__ void finishLseKernel(const float* rowMax, const float* rowSum, int64_t n, float* lse) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) lse[i] = rowMax[i] + logf(rowSum[i]);
}

__global__ void gradTileKernel(ContrastiveGradArgs a) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= a.rows) return;
  const int64_t i = a.r0 + row;
  const float rowLse = a.rowLse[i];
  float* x = a.tile + row * a.ld;
  double dot = 0.0;
  for (int64_t k = lane; k < a.cols; k += 32) {
    const int64_t j = a.c0 + k;
    const float logit = x[k];
    const float positive = j == i ? 1.0f : 0.0f;
    float g = __expf(logit - rowLse) - positive;
    if (a.colLse != nullptr && j < a.B) g += __expf(logit - a.colLse[j]) - positive;
    g *= a.scale;
    // Probabilities below float's normal range would make the following GEMMs slow and add nothing.
    if (fabsf(g) < 1e-30f) g = 0.0f;
    x[k] = g;
    dot += double(g) * double(logit);
  }
  dot = warpSum(dot);
  if (lane == 0) atomicAdd(a.gradLogitDot, dot);
}

unsigned rowBlocks(int64_t rows) { return unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

cudaError_t onlineLseUpdate(const OnlineLseArgs& args, cudaStream_t stream) {
  if (args.rows <= 0 || args.cols <= 0) return cudaSuccess;
  if (int64_t(rowBlocks(args.rows)) > kMaxGridX) return cudaErrorInvalidConfiguration;
  onlineLseKernel<<<dim3(rowBlocks(args.rows)), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t finishLse(const float* rowMax, const float* rowSum, int64_t n, float* lse, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  finishLseKernel<<<dim3(unsigned((n + 255) / 256)), 256, 0, stream>>>(rowMax, rowSum, n, lse);
  return cudaGetLastError();
}

cudaError_t contrastiveGradTile(const ContrastiveGradArgs& args, cudaStream_t stream) {
  if (args.rows <= 0 || args.cols <= 0) return cudaSuccess;
  gradTileKernel<<<dim3(rowBlocks(args.rows)), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace coltrast::kernels
