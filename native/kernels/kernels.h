// coltrast's CUDA kernels: plain C++ declarations over raw pointers, sizes, strides and a stream (no ATen),
// so they compile with nvcc alone (CI compiles them; the GPU machine runs them). native/ops/*_cuda.cc
// wraps them for libtorch; native/kernels/test_kernels.cu checks them against a float64 CPU reference.
//
// Both operations are fused: the similarity / logit tiles are computed on the tensor cores (float16,
// bfloat16: mma.sync with float32 accumulation) or with float32 FMAs (float32 inputs; no TF32, so float32
// results match the CPU to ~1e-5) and consumed in registers; nothing of size [B, N, Lq, Ld] or [B, N]
// is ever written. common.cuh explains the tiling; each .cu file the kernels' shapes. The exception is the
// contrastive loss's chunked strategy (last below): cuBLAS computes chunks of the logits, rows x N, and its
// kernels read and write those.
//
// Conventions: embeddings are row-major with a contiguous last dimension; strides are in elements. Masks
// are uint8 (0 = padding). Every output is written in full (no zero-initialized output needed), except the
// running column statistics of contrastiveChunkColumns, which accumulate over its calls. Every
// function returns the first CUDA error (cudaErrorInvalidValue for arguments it cannot take) and launches
// asynchronously on `stream`. The results are deterministic: no floating-point atomics anywhere.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace coltrast::kernels {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// ---- MaxSim (late interaction) -------------------------------------------------------------------------
// S[b, n] = w_b * sum_i qmask[b, i] * max_{j : dmask[n, j]} <Q[b, i], D[n, j]>; w_b = 1, or
// 1 / (valid tokens of query b) with normalize (0 for a query without any). A query token facing a
// document without valid tokens contributes 0; its argmax is -1, as is a masked query token's.
struct MaxSimArgs {
  DType dtype = DType::F32;
  const void* q = nullptr;  // [B, Lq, dim]
  int64_t qStrideB = 0, qStrideL = 0;
  const uint8_t* qmask = nullptr;  // [B, Lq]
  int64_t qmaskStrideB = 0;
  const void* d = nullptr;  // [N, Ld, dim]
  int64_t dStrideN = 0, dStrideL = 0;
  const uint8_t* dmask = nullptr;  // [N, Ld]
  int64_t dmaskStrideN = 0;
  int64_t B = 0, N = 0, Lq = 0, Ld = 0, dim = 0;
  bool paired = false;     // query b against document b only (B == N)
  bool normalize = false;  // divide by the query's valid token count
};

// scores: float32 [B, N] (paired: [B]), contiguous. argmax: int32 [B, N, Lq] (paired: [B, Lq]), contiguous.
cudaError_t maxsimForward(const MaxSimArgs& args, float* scores, int32_t* argmax, cudaStream_t stream);

// dQ[b, i] = sum_n g[b, n] w_b D[n, argmax[b, n, i]] and dD[n, j] = sum_{(b, i) : argmax[b, n, i] = j}
// g[b, n] w_b Q[b, i] (paired: n = b only). grad: float32, the scores' shape, contiguous. dq / dd: the
// inputs' dtype, [B, Lq, dim] / [N, Ld, dim] with the given strides. The workspace (device memory of
// maxsimBackwardWorkspaceBytes bytes, any content) holds the query weights.
struct MaxSimGrads {
  const float* grad = nullptr;
  const int32_t* argmax = nullptr;
  void* dq = nullptr;
  int64_t dqStrideB = 0, dqStrideL = 0;
  void* dd = nullptr;
  int64_t ddStrideN = 0, ddStrideL = 0;
};
size_t maxsimBackwardWorkspaceBytes(const MaxSimArgs& args);
cudaError_t maxsimBackward(const MaxSimArgs& args, const MaxSimGrads& grads, void* workspace, size_t workspaceBytes,
                           cudaStream_t stream);

// ---- In-batch contrastive loss (InfoNCE) ---------------------------------------------------------------
// q [B, dim], c [N, dim], N >= B, candidate i is query i's positive; logits = q c^T / tau.
//   loss = mean_i [ lse_k logit[i, k] - logit[i, i] ]                               (rowLse[i] = the lse)
//   symmetric: loss = (that + mean_j [ lse_{i<B} logit[i, j] - logit[j, j] ]) / 2  (colLse[j], j < B)
// The temperature is read on the device (a float32 scalar), so nothing waits for the host.
struct ContrastiveArgs {
  DType dtype = DType::F32;
  const void* q = nullptr;  // [B, dim]
  int64_t qStride = 0;
  const void* c = nullptr;  // [N, dim]
  int64_t cStride = 0;
  int64_t B = 0, N = 0, dim = 0;
  const float* temperature = nullptr;  // device scalar, > 0
  bool symmetric = false;
  // Tiling overrides, for benchmarks and tests (0: the automatic choice, which is what callers want). forwardResident:
  // 1 keeps the forward's 64 X rows in shared memory for the whole pass whenever they fit the device, -1 streams
  // them in chunks. backwardSlice: the width of the backward's output slice (128, 256 or 384 for 16-bit inputs, 64
  // or 128 for float32). A choice that the device cannot run makes the call return cudaErrorInvalidValue.
  int forwardResident = 0;
  int backwardSlice = 0;
};

// loss: device float32 scalar; rowLse: float32 [B]; colLse: float32 [B] (symmetric only, else ignored). Each
// row's (and column's) term lse - logit[i, i] is formed as (max - logit[i, i]) + log(sum of exp(logit - max)),
// never as a difference of the lse and the logit (both about 1/tau, where float32's step, 7.6e-6 at 100, can be
// far above a loss near 0), and the terms are averaged in float64. The workspace holds the terms.
size_t contrastiveForwardWorkspaceBytes(const ContrastiveArgs& args);
cudaError_t contrastiveForward(const ContrastiveArgs& args, float* loss, float* rowLse, float* colLse,
                               void* workspace, size_t workspaceBytes, cudaStream_t stream);

// gradLoss: device float32 scalar. dq [B, dim] and dc [N, dim] in the inputs' dtype (row strides given);
// dTemperature: device float32 scalar.
struct ContrastiveGrads {
  const float* gradLoss = nullptr;
  const float* rowLse = nullptr;
  const float* colLse = nullptr;  // symmetric only
  void* dq = nullptr;
  int64_t dqStride = 0;
  void* dc = nullptr;
  int64_t dcStride = 0;
  float* dTemperature = nullptr;
};
size_t contrastiveBackwardWorkspaceBytes(const ContrastiveArgs& args);
cudaError_t contrastiveBackward(const ContrastiveArgs& args, const ContrastiveGrads& grads, void* workspace,
                                size_t workspaceBytes, cudaStream_t stream);

// ---- The contrastive loss's chunked strategy --------------------------------------------------------------
// ops/contrastive_cuda.cc's other way to the same loss: the products run on cuBLAS (libtorch's mm with a float32
// output), a chunk of query rows at a time, S = q[r0 : r0 + rows] c^T, unscaled, [rows, N] with row stride ld;
// these kernels do the rest of each chunk. Memory beyond the inputs: the chunk (and its dlogit), not [B, N].
struct LogitChunk {
  const float* s = nullptr;
  int64_t ld = 0, r0 = 0, rows = 0;  // rows <= 65535, r0 + rows <= B
  int64_t B = 0, N = 0;              // B <= N
  const float* temperature = nullptr;  // device scalar, > 0
};
// The chunk's rows' statistics in base 2, like the columns' below: for i = r0 + r, rowMax[i] and rowSum[i] =
// sum_k 2^(x[r, k] - rowMax[i]), x = S log2(e) / tau rounded to float32 once per value, and positive2[i] =
// x[r, i], the same float as the one folded, so rowMax[i] - positive2[i] is exactly 0 when the positive is the
// row's largest logit. Then rowLse[i] = (rowMax[i] + log2(rowSum[i])) ln 2 and the row's loss term
// lse - S[r, i] / tau = ((rowMax[i] - positive2[i]) + log2(rowSum[i])) ln 2 (>= 0: rowSum >= 1), formed without
// the difference of two numbers about 1/tau in size (see contrastiveForward).
cudaError_t contrastiveChunkRows(const LogitChunk& chunk, float* rowMax, float* rowSum, float* positive2,
                                 cudaStream_t stream);
// The symmetric term's column statistics over columns j < B, folded chunk by chunk into running base-2 pairs:
// colMax[j] and colSum[j] = sum_i 2^(S[i, j] log2(e) / tau - colMax[j]), starting from colSum = 0 (colMax
// any), the values rounded as contrastiveChunkRows rounds them; after the last chunk colLse[j] = (colMax[j] +
// log2(colSum[j])) ln 2 and column j's loss term is ((colMax[j] - positive2[j]) + log2(colSum[j])) ln 2.
cudaError_t contrastiveChunkColumns(const LogitChunk& chunk, float* colMax, float* colSum, cudaStream_t stream);
// out[r, k] = scale * (exp(S[r, k] / tau - rowLse[i]) - [k = i]  +  [colLse, k < B] (exp(S[r, k] / tau - colLse[k]) - [k = i])),
// i = r0 + r, in outType with row stride ldOut (>= N): dL/dlogit up to the factor gradLoss / B (/ 2 when symmetric).
// colLse: nullptr unless symmetric. scale keeps float16 values clear of its subnormal range (the caller divides
// it out of the products).
cudaError_t contrastiveChunkGrad(const LogitChunk& chunk, const float* rowLse, const float* colLse, DType outType,
                                 float scale, void* out, int64_t ldOut, cudaStream_t stream);

}  // namespace coltrast::kernels
