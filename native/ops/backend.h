// The contract between coltrast's loss operations and their implementations.
//
// Each operation has one forward and one backward entry point per backend: CPU (ops/*_cpu.cc, blocked
// and parallel), CUDA (ops/*_cuda.cc over the raw-pointer kernels in kernels/*.cu, compiled only when
// the libtorch found has CUDA, COLTRAST_WITH_CUDA) and the eager reference (ops/reference.cc: plain
// ATen ops, the baseline for tests and benchmarks). ops/autograd.cc picks the backend from the inputs'
// device and the reference switch, and wraps each pair in a torch::autograd::Function.
//
// Conventions shared by every backend:
// - embeddings are float32, float16 or bfloat16, contiguous; accumulation is float32 and every returned
//   score, loss and statistic is float32. Gradients for inputs come back in the input's dtype.
// - masks are uint8 (0 = padding, anything else = valid), contiguous.
// - shapes are checked by the caller (ops/autograd.cc); backends may assume them.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace coltrast::ops {

// ---- MaxSim (late interaction) ------------------------------------------------------------------
// S[b, n] = w_b * sum_i qmask[b,i] * max_{j : dmask[n,j]} <Q[b,i], D[n,j]>, w_b = 1 or 1/count_b.
// A query token whose document has no valid token contributes 0 (argmax -1, zero gradient); so does
// a masked query token. A query with no valid token scores 0 (and w_b = 0 when normalized).
struct MaxSimOptions {
  bool paired = false;                  // false: every query against every document, S [B, N]
                                        // true: query b against document b (B == N), S [B]
  bool normalizeByQueryLength = false;  // divide by the number of valid query tokens
};

struct MaxSimResult {
  at::Tensor scores;  // float32 [B, N] ("all") or [B] (paired)
  at::Tensor argmax;  // int32 [B, N, Lq] or [B, Lq]: j of the best document token, -1 where none
};

// q [B, Lq, dim], qmask [B, Lq], d [N, Ld, dim], dmask [N, Ld]
MaxSimResult maxsimForwardCpu(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                              const at::Tensor& dmask, const MaxSimOptions& options);
// gradScores: float32, the shape of scores. Returns {dQ [B, Lq, dim], dD [N, Ld, dim]}.
std::tuple<at::Tensor, at::Tensor> maxsimBackwardCpu(const at::Tensor& gradScores, const at::Tensor& q,
                                                     const at::Tensor& qmask, const at::Tensor& d,
                                                     const at::Tensor& argmax, const MaxSimOptions& options);

// ---- In-batch contrastive loss (InfoNCE) --------------------------------------------------------
// q [B, dim], c [N, dim], N >= B; candidate i is query i's positive, the rest are negatives for all.
//   loss = mean_i [ logsumexp_k(q_i . c_k / tau) - q_i . c_i / tau ]
// symmetric adds, averaged the same way and the two halves averaged:
//   mean_j [ logsumexp_i(c_j . q_i / tau) - c_j . q_j / tau ]   over j < B, i < B
// so loss = (forward + backward) / 2 when symmetric, forward alone otherwise.
struct ContrastiveOptions {
  bool symmetric = false;
  // How CUDA computes it (the CPU has one way: BLAS tile products, the elementwise work in ATen, the logits
  // kept for the backward when small). Fused: our kernels do everything, the logits live only in registers,
  // memory beyond the inputs is O(B). Chunked: cuBLAS does the products (through ATen), a chunk of query rows
  // at a time, and our kernels the rest; memory beyond the inputs is one chunk of logits (float32) and of
  // their gradient (the input dtype), chunkRows x N each (by default as many rows as fit both in 256 MiB, at
  // least 512), plus the gradients in float32. Auto: COLTRAST_CONTRASTIVE_STRATEGY (fused or chunked) when
  // set, else chunked for float16/bfloat16 and fused for float32 (measured on an H100 at B = N = 16,384 and
  // 262,144, bfloat16: chunked 2.2-2.4 times as fast; float32 not measured yet). Chunked with 16-bit inputs
  // needs libtorch >= 2.8 (mm with a float32 output); where it is missing, auto means fused and chunked is an
  // error. resolveContrastiveStrategy (ops/contrastive_cuda.cc) applies these rules.
  enum class Strategy { Auto, Fused, Chunked };
  Strategy strategy = Strategy::Auto;
  int64_t chunkRows = 0;  // chunked: rows per chunk (0: the automatic choice); tests force small chunks with it
};

struct ContrastiveResult {
  at::Tensor loss;    // float32 scalar
  at::Tensor rowLse;  // float32 [B]: logsumexp over candidates of each query's scaled logits
  at::Tensor colLse;  // float32 [B] when symmetric (logsumexp over queries of candidate j < B), else undefined
  at::Tensor logits;  // CPU, when at most 64 MiB: the scaled logits [B, N] float32, kept for the backward
                      // (saving it one product); undefined otherwise and on CUDA
};

// temperature: float32 scalar tensor (may require grad upstream; the backends read its value).
ContrastiveResult contrastiveForwardCpu(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                        const ContrastiveOptions& options);
// gradLoss: float32 scalar. Returns {dq [B, dim], dc [N, dim], dTemperature (float32 scalar)}.
std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCpu(
    const at::Tensor& gradLoss, const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options);

// The loss from each row's (and, symmetric, each column's) own term lse - positive, which the backends form without
// subtracting the two: (max - positive) + log(sum) (the CPU's LseStats::minus; CUDA's in base 2). Near a loss of 0 the
// terms are far below float32's step at the lse's size (7.6e-6 at 100, tau = 0.01), where a difference of a rounded
// lse and the positive missed by that step, either side (a negative loss). The terms are multiplied by `unit` (ln 2
// for base-2 terms) and averaged in float64; colTerm undefined unless symmetric.
inline at::Tensor contrastiveLossFromTerms(const at::Tensor& rowTerm, const at::Tensor& colTerm, double unit = 1.0) {
  at::Tensor loss = rowTerm.to(at::kDouble).mean();
  if (colTerm.defined()) loss = 0.5 * (loss + colTerm.to(at::kDouble).mean());
  return (loss * unit).to(at::kFloat);
}
// dL/dtau from the finished dq (float32): logit = q . c / tau, so dL/dtau = -sum(dlogit * logit) / tau, and
// sum_k dlogit[i,k] logit[i,k] = q_i . dq_i: one O(B * dim) sum instead of a pass over every logit.
inline at::Tensor temperatureGradFrom(const at::Tensor& q, const at::Tensor& dq, const at::Tensor& temperature) {
  return (-(q.to(at::kDouble) * dq.to(at::kDouble)).sum() / temperature.to(at::kDouble)).to(at::kFloat);
}

#ifdef COLTRAST_WITH_CUDA
MaxSimResult maxsimForwardCuda(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                               const at::Tensor& dmask, const MaxSimOptions& options);
std::tuple<at::Tensor, at::Tensor> maxsimBackwardCuda(const at::Tensor& gradScores, const at::Tensor& q,
                                                      const at::Tensor& qmask, const at::Tensor& d,
                                                      const at::Tensor& argmax, const MaxSimOptions& options);
ContrastiveResult contrastiveForwardCuda(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                         const ContrastiveOptions& options);
std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCuda(
    const at::Tensor& gradLoss, const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options);
// The strategy CUDA runs for inputs of this dtype when asked for `requested` (Auto resolved as
// ContrastiveOptions says); INVALID_ARGUMENT for an explicit chunked that this libtorch cannot do.
ContrastiveOptions::Strategy resolveContrastiveStrategy(at::ScalarType dtype, ContrastiveOptions::Strategy requested);
#endif

}  // namespace coltrast::ops
