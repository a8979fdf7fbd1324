// coltrast's CUDA kernels: plain C++ declarations over raw pointers, sizes, strides and a stream (no ATen),
// so that they compile with nvcc alone (CI compiles them; the GPU machine runs them). native/ops/*_cuda.cc
// wraps them for libtorch.
//
// The loss operations split their work between cuBLAS and these kernels: the dot products of a tile
// (query tokens x document tokens, or queries x candidates) are one cuBLAS GEMM on the tensor cores with
// float32 output, and a kernel here consumes the tile at once (masked max + argmax + sum for MaxSim; an
// online log-sum-exp update, or the logit gradient, for the contrastive loss). Only one tile of the
// [B, N, Lq, Ld] similarities or of the [B, N] logits exists at any time.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace coltrast::kernels {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// ---- MaxSim ------------------------------------------------------------------------------------
// A block of float32 similarities for queries [b0, b0 + nb) and documents [n0, n0 + nn):
//   all mode:    row p * Lq + i (query b0 + p, token i), column m * Ld + j (document n0 + m, token j),
//                leading dimension ld;
//   paired mode: nb separate [Lq, Ld] matrices, pair p at sim + p * Lq * Ld (ld = Ld), nn == nb.
// Writes scores[b, n] (all: b * N + n; paired: b) = weight[b] * sum over valid query tokens of the max over
// valid document tokens, and argmax[(b * N + n) * Lq + i] (paired: b * Lq + i), -1 where no valid token.
struct MaxSimBlockArgs {
  const float* sim;
  int64_t ld;
  int64_t b0, nb, n0, nn;
  int64_t N, Lq, Ld;
  bool paired;
  const uint8_t* qmask;   // [B, Lq]
  const uint8_t* dmask;   // [N, Ld]
  const float* weight;    // [B]: 1, or 1 / valid query tokens
  float* scores;
  int32_t* argmax;
};
cudaError_t maxsimBlockReduce(const MaxSimBlockArgs& args, cudaStream_t stream);

// weight[b] = normalize ? 1 / (valid tokens of query b) (0 when none) : 1.
cudaError_t maxsimQueryWeights(const uint8_t* qmask, int64_t B, int64_t Lq, bool normalize, float* weight,
                               cudaStream_t stream);

// dQ[b, i] = sum_n grad[b, n] * weight[b] * D[n, argmax[b, n, i]] and
// dD[n, j] = sum over (b, i) with argmax[b, n, i] == j of grad[b, n] * weight[b] * Q[b, i]
// (paired: n == b only). dq and dd are float32 and zeroed by the caller; dD uses atomic adds, so its
// low bits may differ from run to run when several query tokens choose the same document token.
struct MaxSimBackwardArgs {
  DType dtype;
  const void* q;  // [B, Lq, dim], contiguous
  const void* d;  // [N, Ld, dim], contiguous
  int64_t B, N, Lq, Ld, dim;
  bool paired;
  const float* grad;    // [B, N] or [B]
  const float* weight;  // [B]
  const int32_t* argmax;
  float* dq;
  float* dd;
};
cudaError_t maxsimBackward(const MaxSimBackwardArgs& args, cudaStream_t stream);

// ---- In-batch contrastive loss -----------------------------------------------------------------
// One tile of scaled logits (float32, rows x cols, leading dimension ld) updates the running max and sum
// of exp of each of its rows: rowMax/rowSum point at the tile's first row. Start from max = -inf, sum = 0.
struct OnlineLseArgs {
  const float* tile;
  int64_t ld, rows, cols;
  float* rowMax;
  float* rowSum;
};
cudaError_t onlineLseUpdate(const OnlineLseArgs& args, cudaStream_t stream);

// lse[i] = max[i] + log(sum[i]).
cudaError_t finishLse(const float* rowMax, const float* rowSum, int64_t n, float* lse, cudaStream_t stream);

// Replaces a tile of scaled logits (rows r0.., columns c0..) by the loss gradient with respect to them:
//   g = scale * (exp(logit - rowLse[i]) - [j == i])  (+ scale * (exp(logit - colLse[j]) - [j == i]) for
//   j < B when colLse is given), flushed to 0 below 1e-30,
// and adds sum(g * logit) over the tile to *gradLogitDot (float64), from which d loss / d tau follows.
struct ContrastiveGradArgs {
  float* tile;
  int64_t ld, rows, cols, r0, c0, B;
  const float* rowLse;  // [B]
  const float* colLse;  // [B] or nullptr
  float scale;
  double* gradLogitDot;
};
cudaError_t contrastiveGradTile(const ContrastiveGradArgs& args, cudaStream_t stream);

}  // namespace coltrast::kernels
