// MaxSim kernels (declared in kernels.h).
//
// maxsimBlockReduce consumes one cuBLAS similarity block: a CUDA block per (query, document) pair, a warp
// per query token at a time, lanes striding over the document's tokens (so reads of a similarity row and
// of the document mask are coalesced), a warp-shuffle reduction of (max, first index), and a block sum of
// the per-token maxima. The backward kernels follow the stored argmax: dQ gathers (one CUDA block per
// query token, threads over the embedding, no atomics), dD scatters with float32 atomics (one CUDA block
// per pair; collisions only where several query tokens chose the same document token).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "common.cuh"
#include "kernels.h"

namespace coltrast::kernels {
namespace {

constexpr int kReduceThreads = 128;
constexpr int kWarps = kReduceThreads / 32;

__global__ void blockReduceKernel(MaxSimBlockArgs a) {
  const int64_t pair = blockIdx.x;
  const int64_t p = a.paired ? pair : pair / a.nn;  // query within the block
  const int64_t m = a.paired ? pair : pair % a.nn;  // document within the block
  const int64_t b = a.b0 + p, n = a.n0 + m;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint8_t* dmask = a.dmask + n * a.Ld;
  const int64_t out = a.paired ? b : b * a.N + n;
  float partial = 0.0f;
  for (int64_t i = warp; i < a.Lq; i += kWarps) {
    int32_t* arg = a.argmax + out * a.Lq + i;
    if (!a.qmask[b * a.Lq + i]) {
      if (lane == 0) *arg = -1;
      continue;
    }
    const float* row = a.paired ? a.sim + (p * a.Lq + i) * a.Ld : a.sim + (p * a.Lq + i) * a.ld + m * a.Ld;
    float best = -FLT_MAX;
    int32_t at = -1;
    for (int64_t j = lane; j < a.Ld; j += 32) {
      const float v = row[j];
      if (dmask[j] && (at < 0 || v > best)) {
        best = v;
        at = int32_t(j);
      }
    }
    warpArgMax(best, at);
    if (lane == 0) {
      *arg = at;
      if (at >= 0) partial += best;
    }
  }
  __shared__ float sums[kWarps];
  if (lane == 0) sums[warp] = partial;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += sums[w];
    a.scores[out] = a.weight[b] * total;
  }
}

__global__ void queryWeightsKernel(const uint8_t* qmask, int64_t B, int64_t Lq, bool normalize, float* weight) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  if (!normalize) {
    weight[b] = 1.0f;
    return;
  }
  int count = 0;
  for (int64_t i = 0; i < Lq; ++i) count += qmask[b * Lq + i] != 0;
  weight[b] = count > 0 ? 1.0f / float(count) : 0.0f;
}

// dQ[b, i, :]: one CUDA block per query token, threads over the embedding.
template <typename T>
__global__ void gradQueryKernel(MaxSimBackwardArgs a) {
  const int64_t b = blockIdx.x / a.Lq, i = blockIdx.x % a.Lq;
  const T* d = static_cast<const T*>(a.d);
  const int64_t n0 = a.paired ? b : 0, n1 = a.paired ? b + 1 : a.N;
  for (int64_t k = threadIdx.x; k < a.dim; k += blockDim.x) {
    float acc = 0.0f;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t pairIndex = a.paired ? b : b * a.N + n;
      const int32_t j = a.argmax[pairIndex * a.Lq + i];
      if (j < 0) continue;
      acc += a.grad[pairIndex] * toFloat(d[(n * a.Ld + j) * a.dim + k]);
    }
    a.dq[(b * a.Lq + i) * a.dim + k] = acc * a.weight[b];
  }
}

// dD scatter: one CUDA block per (query, document) pair, threads over the embedding.
template <typename T>
__global__ void gradDocumentKernel(MaxSimBackwardArgs a) {
  const int64_t pair = blockIdx.x;
  const int64_t b = a.paired ? pair : pair / a.N, n = a.paired ? pair : pair % a.N;
  const float coef = a.grad[pair] * a.weight[b];
  if (coef == 0.0f) return;
  const T* q = static_cast<const T*>(a.q);
  for (int64_t i = 0; i < a.Lq; ++i) {
    const int32_t j = a.argmax[pair * a.Lq + i];
    if (j < 0) continue;
    for (int64_t k = threadIdx.x; k < a.dim; k += blockDim.x) {
      atomicAdd(a.dd + (n * a.Ld + j) * a.dim + k, coef * toFloat(q[(b * a.Lq + i) * a.dim + k]));
    }
  }
}

template <typename T>
cudaError_t launchBackward(const MaxSimBackwardArgs& a, cudaStream_t stream) {
  const int threads = a.dim >= 256 ? 256 : a.dim >= 128 ? 128 : 64;
  gradQueryKernel<T><<<dim3(unsigned(a.B * a.Lq)), threads, 0, stream>>>(a);
  const int64_t pairs = a.paired ? a.B : a.B * a.N;
  gradDocumentKernel<T><<<dim3(unsigned(pairs)), threads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t maxsimBlockReduce(const MaxSimBlockArgs& args, cudaStream_t stream) {
  const int64_t pairs = args.paired ? args.nb : args.nb * args.nn;
  if (pairs <= 0) return cudaSuccess;
  if (pairs > kMaxGridX) return cudaErrorInvalidConfiguration;
  blockReduceKernel<<<dim3(unsigned(pairs)), kReduceThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t maxsimQueryWeights(const uint8_t* qmask, int64_t B, int64_t Lq, bool normalize, float* weight,
                               cudaStream_t stream) {
  if (B <= 0) return cudaSuccess;
  queryWeightsKernel<<<dim3(unsigned((B + 255) / 256)), 256, 0, stream>>>(qmask, B, Lq, normalize, weight);
  return cudaGetLastError();
}

cudaError_t maxsimBackward(const MaxSimBackwardArgs& args, cudaStream_t stream) {
  const int64_t pairs = args.paired ? args.B : args.B * args.N;
  if (args.B * args.Lq > kMaxGridX || pairs > kMaxGridX) return cudaErrorInvalidConfiguration;
  switch (args.dtype) {
    case DType::F32:
      return launchBackward<float>(args, stream);
    case DType::F16:
      return launchBackward<__half>(args, stream);
    case DType::BF16:
      return launchBackward<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace coltrast::kernels
