// In-batch contrastive loss on CUDA: backend.h's contrastive*Cuda (compiled only with COLTRAST_WITH_CUDA), in
// either of ContrastiveOptions' two strategies over the kernels of kernels/contrastive.cu:
// - fused: the fused kernels do everything; this file allocates outputs and scratch (O(B) floats).
// - chunked: for each chunk of query rows, ATen's mm (cuBLAS; float32 output from 16-bit inputs) computes the
//   logits S = q_chunk c^T, our kernels turn them into row log-sum-exps, column statistics or the logit
//   gradient G, and two more products give dq_chunk = G c and dc += G^T q_chunk, in float32. The constant
//   factor gradLoss / (B tau) is applied once to dq and dc at the end, and dtau comes from dq
//   (temperatureGradFrom in backend.h), so the gradient kernel needs no reduction.
// The temperature and the upstream gradient stay on the device (the kernels and ATen read them there), so
// nothing here waits for the GPU. CUDA errors become coltrast::Error.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "error.h"
#include "kernels/kernels.h"
#include "ops/autograd.h"
#include "ops/backend.h"
#include "ops/cuda_common.h"
#include "torch_version.h"

namespace coltrast::ops {
namespace {

// A float32 scalar on `like`'s device.
at::Tensor deviceScalar(const at::Tensor& t, const at::Tensor& like) {
  return t.reshape({}).to(like.device(), at::kFloat).contiguous();
}

void check(cudaError_t status, const char* what, const kernels::ContrastiveArgs& a) {
  if (status == cudaSuccess) return;
  std::ostringstream message;
  message << "CUDA contrastive loss " << what << " failed: " << cudaGetErrorString(status) << " (B=" << a.B
          << ", N=" << a.N << ", dim=" << a.dim << (a.symmetric ? ", symmetric" : "") << ")";
  throw Error("NATIVE", message.str());
}

kernels::ContrastiveArgs argsOf(const at::Tensor& q, const at::Tensor& c, const at::Tensor& tau,
                                const ContrastiveOptions& options) {
  kernels::ContrastiveArgs a;
  a.dtype = kernelType(q, "contrastive loss");
  a.q = q.data_ptr();
  a.qStride = q.stride(0);
  a.c = c.data_ptr();
  a.cStride = c.stride(0);
  a.B = q.size(0);
  a.N = c.size(0);
  a.dim = q.size(1);
  a.temperature = tau.data_ptr<float>();
  a.symmetric = options.symmetric;
  return a;
}

// ---- the chunked strategy ------------------------------------------------------------------------------

// 16-bit inputs need mm with a float32 output (ATen's mm.dtype, libtorch 2.8). COLTRAST_CUDA_EMULATOR: this file
// built for the CPU emulator (scripts/cuda-emu/test_ops.cc), whose tensors are CPU tensors; the CPU's ATen has no
// mm.dtype, so the product is taken from float32 copies of the operands, which is the same arithmetic (16-bit
// values are exact in float32, accumulation in float32).
#if COLTRAST_TORCH_AT_LEAST(2, 8) || defined(COLTRAST_CUDA_EMULATOR)
constexpr bool kChunkedHalf = true;
#else
constexpr bool kChunkedHalf = false;
#endif

}  // namespace

ContrastiveOptions::Strategy resolveContrastiveStrategy(at::ScalarType dtype, ContrastiveOptions::Strategy requested) {
  using Strategy = ContrastiveOptions::Strategy;
  const bool possible = dtype == at::kFloat || kChunkedHalf;
  Strategy strategy = requested == Strategy::Auto ? contrastiveStrategyDefault() : requested;
  // Auto's own choice, from the H100's measurements (backend.h): chunked where cuBLAS gives 16-bit products.
  if (strategy == Strategy::Auto) strategy = dtype != at::kFloat && possible ? Strategy::Chunked : Strategy::Fused;
  // The environment's chunked stays a preference where the build cannot do it; an explicit option is an error.
  if (strategy == Strategy::Chunked && !possible && requested == Strategy::Auto) strategy = Strategy::Fused;
  if (strategy == Strategy::Chunked && !possible) {
    throw invalidArgument("the chunked contrastive loss needs libtorch >= 2.8 for " +
                          std::string(c10::toString(dtype)) +
                          " inputs (mm with a float32 output); use strategy 'fused' or float32 inputs");
  }
  return strategy;
}

namespace {

bool useChunked(const at::Tensor& q, const ContrastiveOptions& options) {
  return resolveContrastiveStrategy(q.scalar_type(), options.strategy) == ContrastiveOptions::Strategy::Chunked;
}

constexpr int64_t kChunkBytes = int64_t(256) << 20;

// Rows per chunk: what options ask, else as many as keep the chunk's float32 logits and its logit gradient
// within kChunkBytes, rounded down to 64, at least 512 (thinner chunks would spend more time re-reading the
// float32 dc than multiplying); at most B and the kernels' 65,535.
int64_t chunkRowsOf(int64_t B, int64_t N, const at::Tensor& q, const ContrastiveOptions& options) {
  int64_t rows = options.chunkRows;
  if (rows <= 0) rows = std::max<int64_t>(kChunkBytes / (N * int64_t(4 + q.element_size())) / 64 * 64, 512);
  return std::min<int64_t>({rows, B, 65535});
}

// out (float32) = a . b, on cuBLAS through ATen; 16-bit operands accumulate in float32 and write float32.
void productInto(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kFloat) {
    at::mm_out(out, a, b);
    return;
  }
#if defined(COLTRAST_CUDA_EMULATOR)
  at::mm_out(out, a.to(at::kFloat), b.to(at::kFloat));
#elif COLTRAST_TORCH_AT_LEAST(2, 8)
  at::mm_out(out, a, b, at::kFloat);
#else
  throw Error("NATIVE", "unreachable: the chunked contrastive loss without mm's float32 output");
#endif
}

at::Tensor productOf(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options().dtype(at::kFloat));
  productInto(out, a, b);
  return out;
}

void checkChunk(cudaError_t status, const char* what, int64_t B, int64_t N, int64_t r0) {
  if (status == cudaSuccess) return;
  std::ostringstream message;
  message << "CUDA contrastive loss (chunked) " << what << " failed: " << cudaGetErrorString(status) << " (B=" << B
          << ", N=" << N << ", chunk at row " << r0 << ")";
  throw Error("NATIVE", message.str());
}

ContrastiveResult chunkedForward(const at::Tensor& q, const at::Tensor& c, const at::Tensor& tau,
                                 const ContrastiveOptions& options) {
  const int64_t B = q.size(0), N = c.size(0);
  const int64_t rows = chunkRowsOf(B, N, q, options);
  const auto floats = q.options().dtype(at::kFloat);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  at::Tensor S = at::empty({rows, N}, floats);
  ContrastiveResult r;
  // Base-2 statistics (kernels.h, contrastiveChunkRows): the positive logits scaled as the folds scale them.
  at::Tensor rowMax = at::empty({B}, floats), rowSum = at::empty({B}, floats), positive2 = at::empty({B}, floats);
  at::Tensor colMax, colSum;
  if (options.symmetric) {
    colMax = at::empty({B}, floats);
    colSum = at::zeros({B}, floats);
  }
  kernels::LogitChunk ch;
  ch.ld = N;
  ch.B = B;
  ch.N = N;
  ch.temperature = tau.data_ptr<float>();
  for (int64_t r0 = 0; r0 < B; r0 += rows) {
    const int64_t n = std::min(rows, B - r0);
    at::Tensor s = S.narrow(0, 0, n);
    productInto(s, q.narrow(0, r0, n), c.t());
    ch.s = s.data_ptr<float>();
    ch.r0 = r0;
    ch.rows = n;
    checkChunk(kernels::contrastiveChunkRows(ch, rowMax.data_ptr<float>(), rowSum.data_ptr<float>(),
                                             positive2.data_ptr<float>(), stream),
               "row statistics", B, N, r0);
    if (options.symmetric) {
      checkChunk(kernels::contrastiveChunkColumns(ch, colMax.data_ptr<float>(), colSum.data_ptr<float>(), stream),
                 "column statistics", B, N, r0);
    }
  }
  // The lse for the backward; each loss term as (max - positive) + log2(sum), exactly 0 + log2(sum) where the
  // positive is the largest logit, instead of lse - positive (two numbers about 1/tau, float32's step far above a
  // loss near 0).
  const float ln2 = float(std::log(2.0));
  const at::Tensor rowLog = at::log2(rowSum);
  r.rowLse = (rowMax + rowLog) * ln2;
  at::Tensor colTerm;
  if (options.symmetric) {
    const at::Tensor colLog = at::log2(colSum);
    r.colLse = (colMax + colLog) * ln2;
    colTerm = (colMax - positive2) + colLog;
  }
  r.loss = contrastiveLossFromTerms((rowMax - positive2) + rowLog, colTerm, std::log(2.0));
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> chunkedBackward(const at::Tensor& g, const at::Tensor& q,
                                                               const at::Tensor& c, const at::Tensor& tau,
                                                               const at::Tensor& rowLse, const at::Tensor& colLse,
                                                               const ContrastiveOptions& options) {
  const int64_t B = q.size(0), N = c.size(0), dim = q.size(1);
  const int64_t rows = chunkRowsOf(B, N, q, options);
  const auto floats = q.options().dtype(at::kFloat);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  // float16 logit gradients are stored times 2^14 (|G| <= 2, so at most 32,768 < 65,504): small probabilities
  // stay clear of float16's subnormal range; the factor is divided out with the others at the end.
  const float scale = q.scalar_type() == at::kHalf ? 16384.0f : 1.0f;
  at::Tensor S = at::empty({rows, N}, floats), G = at::empty({rows, N}, q.options());
  at::Tensor dq = at::empty({B, dim}, floats), dc = at::zeros({N, dim}, floats);
  kernels::LogitChunk ch;
  ch.ld = N;
  ch.B = B;
  ch.N = N;
  ch.temperature = tau.data_ptr<float>();
  const kernels::DType type = kernelType(q, "contrastive loss");
  for (int64_t r0 = 0; r0 < B; r0 += rows) {
    const int64_t n = std::min(rows, B - r0);
    const at::Tensor qChunk = q.narrow(0, r0, n);
    at::Tensor s = S.narrow(0, 0, n), grad = G.narrow(0, 0, n);
    productInto(s, qChunk, c.t());
    ch.s = s.data_ptr<float>();
    ch.r0 = r0;
    ch.rows = n;
    checkChunk(kernels::contrastiveChunkGrad(ch, rowLse.data_ptr<float>(),
                                             options.symmetric ? colLse.data_ptr<float>() : nullptr, type, scale,
                                             grad.data_ptr(), N, stream),
               "logit gradient", B, N, r0);
    productInto(dq.narrow(0, r0, n), grad, c);
    if (q.scalar_type() == at::kFloat) dc.addmm_(grad.t(), qChunk);
    else dc.add_(productOf(grad.t(), qChunk));
  }
  // dL/dlogit = gradLoss / B (/ 2 when symmetric) times what the kernel wrote / scale; d logit = d s / tau.
  const at::Tensor factor = g / (tau * float(double(B) * scale * (options.symmetric ? 2.0 : 1.0)));
  dq.mul_(factor);
  dc.mul_(factor);
  return {dq.to(q.scalar_type()), dc.to(c.scalar_type()), temperatureGradFrom(q, dq, tau)};
}

}  // namespace

ContrastiveResult contrastiveForwardCuda(const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
                                         const ContrastiveOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), c = innerContiguous(cIn), tau = deviceScalar(temperature, qIn);
  if (useChunked(q, options)) return chunkedForward(q, c, tau, options);
  const kernels::ContrastiveArgs a = argsOf(q, c, tau, options);
  const auto floats = q.options().dtype(at::kFloat);
  ContrastiveResult r;
  r.loss = at::empty({}, floats);
  r.rowLse = at::empty({a.B}, floats);
  if (options.symmetric) r.colLse = at::empty({a.B}, floats);
  const size_t bytes = kernels::contrastiveForwardWorkspaceBytes(a);
  at::Tensor workspace = at::empty({int64_t(bytes)}, q.options().dtype(at::kByte));
  check(kernels::contrastiveForward(a, r.loss.data_ptr<float>(), r.rowLse.data_ptr<float>(),
                                    options.symmetric ? r.colLse.data_ptr<float>() : nullptr, workspace.data_ptr(),
                                    bytes, c10::cuda::getCurrentCUDAStream().stream()),
        "forward", a);
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCuda(
    const at::Tensor& gradLoss, const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), c = innerContiguous(cIn), tau = deviceScalar(temperature, qIn);
  const at::Tensor g = deviceScalar(gradLoss, qIn);
  const at::Tensor rowLse = saved.rowLse.to(q.device(), at::kFloat).contiguous();
  const at::Tensor colLse =
      options.symmetric ? saved.colLse.to(q.device(), at::kFloat).contiguous() : at::Tensor();
  if (useChunked(q, options)) return chunkedBackward(g, q, c, tau, rowLse, colLse, options);
  const kernels::ContrastiveArgs a = argsOf(q, c, tau, options);
  at::Tensor dq = at::empty({a.B, a.dim}, q.options()), dc = at::empty({a.N, a.dim}, c.options());
  at::Tensor dTemperature = at::empty({}, q.options().dtype(at::kFloat));
  kernels::ContrastiveGrads grads;
  grads.gradLoss = g.data_ptr<float>();
  grads.rowLse = rowLse.data_ptr<float>();
  grads.colLse = options.symmetric ? colLse.data_ptr<float>() : nullptr;
  grads.dq = dq.data_ptr();
  grads.dqStride = dq.stride(0);
  grads.dc = dc.data_ptr();
  grads.dcStride = dc.stride(0);
  grads.dTemperature = dTemperature.data_ptr<float>();
  const size_t bytes = kernels::contrastiveBackwardWorkspaceBytes(a);
  at::Tensor workspace = at::empty({int64_t(bytes)}, q.options().dtype(at::kByte));
  check(kernels::contrastiveBackward(a, grads, workspace.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream()),
        "backward", a);
  return {dq, dc, dTemperature};
}

}  // namespace coltrast::ops
