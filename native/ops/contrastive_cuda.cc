// In-batch contrastive loss on CUDA (backend.h's *Cuda functions; built only with COLTRAST_WITH_CUDA).
//
// Forward: logits q . c^T / tau are produced one [kTileRows, kTileCols] tile at a time by cuBLAS (tensor
// cores for float16/bfloat16, float32 output), and kernels::onlineLseUpdate folds each tile into per-row
// running (max, sum of exp): the online log-sum-exp of FlashAttention / Inf-CL. The symmetric term's
// column log-sum-exps are the row log-sum-exps of the swapped problem (candidates j < B against the
// queries), computed the same way. Backward: each tile is recomputed, kernels::contrastiveGradTile turns
// it into d loss / d logits in place (and accumulates sum(g * logit) for tau), and two more cuBLAS products
// add its share of dq and dc. Memory beyond the inputs: one tile (128 MiB) plus O(B + N).
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <limits>

#include "kernels/kernels.h"
#include "ops/backend.h"
#include "ops/cuda_gemm.h"

namespace coltrast::ops {
namespace {

constexpr int64_t kTileRows = 4096;
constexpr int64_t kTileCols = 8192;

// Row log-sum-exps of (a . b^T) * invTau for rows of a: a [rows, dim], b [cols, dim], same dtype.
at::Tensor rowLogSumExp(const at::Tensor& a, int64_t rows, const at::Tensor& b, int64_t cols, float invTau) {
  const int64_t dim = a.size(1), elementSize = a.element_size();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto floats = a.options().dtype(at::kFloat);
  at::Tensor max = at::full({rows}, -std::numeric_limits<float>::infinity(), floats);
  at::Tensor sum = at::zeros({rows}, floats);
  at::Tensor tile = at::empty({std::min(rows, kTileRows), std::min(cols, kTileCols)}, floats);
  const int64_t ld = tile.size(1);
  const char* ap = static_cast<const char*>(a.data_ptr());
  const char* bp = static_cast<const char*>(b.data_ptr());
  for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
    const int64_t nr = std::min(kTileRows, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += kTileCols) {
      const int64_t nc = std::min(kTileCols, cols - c0);
      cuda::gemmNT(ap + r0 * dim * elementSize, dim, bp + c0 * dim * elementSize, dim, a.scalar_type(), nr, nc, dim,
                   invTau, 0.0f, tile.data_ptr<float>(), ld);
      kernels::OnlineLseArgs args{tile.data_ptr<float>(), ld, nr, nc, max.data_ptr<float>() + r0,
                                  sum.data_ptr<float>() + r0};
      cuda::check(kernels::onlineLseUpdate(args, stream), "online log-sum-exp");
    }
  }
  at::Tensor lse = at::empty({rows}, floats);
  cuda::check(kernels::finishLse(max.data_ptr<float>(), sum.data_ptr<float>(), rows, lse.data_ptr<float>(), stream),
              "log-sum-exp");
  return lse;
}

}  // namespace

ContrastiveResult contrastiveForwardCuda(const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
                                         const ContrastiveOptions& options) {
  const at::Tensor q = qIn.contiguous(), c = cIn.contiguous();
  const int64_t B = q.size(0), N = c.size(0);
  const float invTau = 1.0f / temperature.item<float>();
  ContrastiveResult r;
  r.rowLse = rowLogSumExp(q, B, c, N, invTau);
  const at::Tensor positives = (q.to(at::kFloat) * c.narrow(0, 0, B).to(at::kFloat)).sum(1) * invTau;
  at::Tensor loss = (r.rowLse - positives).mean();
  if (options.symmetric) {
    r.colLse = rowLogSumExp(c, B, q, B, invTau);
    loss = 0.5 * (loss + (r.colLse - positives).mean());
  }
  r.loss = loss;
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCuda(
    const at::Tensor& gradLoss, const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options) {
  const at::Tensor q = qIn.contiguous(), c = cIn.contiguous();
  const int64_t B = q.size(0), N = c.size(0), dim = q.size(1), elementSize = q.element_size();
  const auto type = q.scalar_type();
  const float tau = temperature.item<float>(), invTau = 1.0f / tau;
  const float scale = gradLoss.item<float>() / float(B) * (options.symmetric ? 0.5f : 1.0f);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto floats = q.options().dtype(at::kFloat);
  at::Tensor dq = at::zeros({B, dim}, floats), dc = at::zeros({N, dim}, floats);
  at::Tensor dot = at::zeros({1}, q.options().dtype(at::kDouble));
  at::Tensor tile = at::empty({std::min(B, kTileRows), std::min(N, kTileCols)}, floats);
  // The gradient tile in the inputs' dtype, as the second operand of the dq / dc products.
  at::Tensor tileTyped = type == at::kFloat ? tile : at::empty(tile.sizes(), q.options());
  const int64_t ld = tile.size(1);
  const char* qp = static_cast<const char*>(q.data_ptr());
  const char* cp = static_cast<const char*>(c.data_ptr());
  for (int64_t r0 = 0; r0 < B; r0 += kTileRows) {
    const int64_t nr = std::min(kTileRows, B - r0);
    for (int64_t c0 = 0; c0 < N; c0 += kTileCols) {
      const int64_t nc = std::min(kTileCols, N - c0);
      cuda::gemmNT(qp + r0 * dim * elementSize, dim, cp + c0 * dim * elementSize, dim, type, nr, nc, dim, invTau, 0.0f,
                   tile.data_ptr<float>(), ld);
      kernels::ContrastiveGradArgs args{tile.data_ptr<float>(),
                                        ld,
                                        nr,
                                        nc,
                                        r0,
                                        c0,
                                        B,
                                        saved.rowLse.data_ptr<float>(),
                                        options.symmetric ? saved.colLse.data_ptr<float>() : nullptr,
                                        scale,
                                        dot.data_ptr<double>()};
      cuda::check(kernels::contrastiveGradTile(args, stream), "contrastive gradient tile");
      if (type != at::kFloat) tileTyped.narrow(0, 0, nr).narrow(1, 0, nc).copy_(tile.narrow(0, 0, nr).narrow(1, 0, nc));
      // dq[r0:] += G . c[c0:] / tau ; dc[c0:] += G^T . q[r0:] / tau
      cuda::gemmNN(tileTyped.data_ptr(), ld, cp + c0 * dim * elementSize, dim, type, nr, dim, nc, invTau, 1.0f,
                   dq.data_ptr<float>() + r0 * dim, dim);
      cuda::gemmTN(tileTyped.data_ptr(), ld, qp + r0 * dim * elementSize, dim, type, nc, dim, nr, invTau, 1.0f,
                   dc.data_ptr<float>() + c0 * dim, dim);
    }
  }
  // logit = s / tau, so d loss / d tau = -sum(g * logit) / tau.
  at::Tensor dTemperature = (dot.to(at::kFloat) * (-1.0f / tau)).reshape({});
  return {dq.to(type), dc.to(type), dTemperature};
}

}  // namespace coltrast::ops
