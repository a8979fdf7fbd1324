// In-batch contrastive loss (InfoNCE) on the CPU, forward and backward (the contract is in backend.h).
//
// Large logit matrices q . c^T / tau are never held whole: they are produced one [bq, nc] tile at a time by a
// BLAS product, and each tile updates running (max, sum of exp) statistics per query row (and, when
// symmetric, per positive column): the online log-sum-exp of FlashAttention / Inf-CL. Memory beyond the
// inputs is one tile plus O(B + N) statistics, whatever B and N are. Small ones (at most kKeptBytes, which
// covers every training batch short of gradient caching's large ones) are one tile that the forward keeps
// for the backward (ContrastiveResult::logits): three products per step, as eager's, instead of four.
//
// Backward recomputes each tile (unless kept) from the saved log-sum-exps, forms the logit gradient
//   dL/dlogit[i,k] = a * (exp(logit - rowLse_i) - [k == i])  (+ the column term when symmetric)
// and accumulates dq += dlogit . c / tau and dc += dlogit^T . q / tau with two more tile products; dtau
// comes from dq at the end (temperatureGradFrom). Tiles are visited in order; the work inside a tile is ATen's (BLAS
// for the products, vectorized and threaded elementwise ops for the rest).
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/backend.h"

namespace coltrast::ops {
namespace {

// Tile: 512 x 2048 floats (4 MiB): large enough for BLAS efficiency, small enough to stay in cache.
constexpr int64_t kTileRows = 512;
constexpr int64_t kTileCols = 2048;
constexpr double kTiny = 1e-30;
// Logits kept from the forward to the backward when B x N floats fit this (B = N = 4096).
constexpr int64_t kKeptBytes = int64_t(64) << 20;

bool keepLogits(int64_t B, int64_t N) { return B * N * int64_t(sizeof(float)) <= kKeptBytes; }

// The tile shape: all the logits when they are kept, else kTileRows x kTileCols at most.
int64_t tileRows(int64_t B, int64_t N) { return keepLogits(B, N) ? B : std::min(B, kTileRows); }
int64_t tileCols(int64_t B, int64_t N) { return keepLogits(B, N) ? N : std::min(N, kTileCols); }

// Calls visit(tile, r0, nr, c0, nc) for every tile of the scaled logits q . c^T / tau; with `kept` (all of them,
// from the forward) defined, once on it.
template <typename Visit>
void forEachTile(const at::Tensor& q, const at::Tensor& c, float invTau, const at::Tensor& kept, Visit visit) {
  const int64_t B = q.size(0), N = c.size(0);
  if (kept.defined()) {
    visit(kept, 0, B, 0, N);
    return;
  }
  const int64_t rows = tileRows(B, N), cols = tileCols(B, N);
  at::Tensor buffer = at::empty({rows, cols}, at::kFloat);
  for (int64_t r0 = 0; r0 < B; r0 += rows) {
    const int64_t nr = std::min(rows, B - r0);
    for (int64_t c0 = 0; c0 < N; c0 += cols) {
      const int64_t nc = std::min(cols, N - c0);
      at::Tensor tile = buffer.narrow(0, 0, nr).narrow(1, 0, nc);
      // tile = invTau * q c^T in one BLAS call (beta 0: the buffer's old contents are ignored, as ATen documents).
      at::addmm_out(tile, tile, q.narrow(0, r0, nr), c.narrow(0, c0, nc).t(), 0.0, invTau);
      visit(tile, r0, nr, c0, nc);
    }
  }
}

// Running log-sum-exp statistics of rows (or columns) across tiles: the max, and the sum of exp(x - shift) where
// shift is the max when finite, else 0 (as ATen's logsumexp does). Kept apart, not as one float32 log-sum-exp,
// so a row's loss can be formed as (max - positive) + log(sum): when the positive is the largest logit that is
// log(1 + tiny) >= 0, where lse - positive loses half a float32 step of the largest logit (about 4e-6 at
// 1/tau = 100) and went negative for losses near 0. The elementwise work is ATen's (vectorized exp,
// TensorIterator's threads), not a scalar loop: at B = N = 4096 a scalar std::exp loop cost as much as two of the
// four tile products.
struct LseStats {
  at::Tensor max, sum;
  explicit LseStats(int64_t n)
      : max(at::full({n}, -std::numeric_limits<float>::infinity(), at::kFloat)), sum(at::zeros({n}, at::kFloat)) {}
  static at::Tensor shiftOf(const at::Tensor& max) { return max.masked_fill(max.isinf(), 0.0); }
  // Folds in one tile along `dim` (1: its rows, 0: its columns), which are entries [at, at + n).
  void fold(const at::Tensor& tile, int64_t dim, int64_t at0, int64_t n) {
    at::Tensor m = max.narrow(0, at0, n), s = sum.narrow(0, at0, n);
    const at::Tensor newMax = at::maximum(m, at::amax(tile, {dim}));  // both propagate NaN
    const at::Tensor newShift = shiftOf(newMax);
    // The old sum rescaled to the new shift; a sum of 0 stays 0 (exp of a large shift difference could be inf).
    const at::Tensor carried = at::where(s > 0, s * at::exp(shiftOf(m) - newShift), at::zeros_like(s));
    s.copy_(carried + (tile - newShift.unsqueeze(dim)).exp_().sum(dim));
    m.copy_(newMax);
  }
  at::Tensor lse() const { return shiftOf(max) + at::log(sum); }
  // Each entry's log-sum-exp minus `positive`, in float64: (max - positive) + log(sum) where max is finite.
  at::Tensor minus(const at::Tensor& positive) const {
    const at::Tensor pos = positive.to(at::kDouble), m = max.to(at::kDouble);
    return at::where(at::isfinite(m), (m - pos) + sum.to(at::kDouble).log(), lse().to(at::kDouble) - pos);
  }
};

// exp(tile - lse) into out, with every term whose exponent is below logFloor set to 0 (see contrastiveBackwardCpu).
void softmaxTerms(at::Tensor out, const at::Tensor& tile, const at::Tensor& lse, int64_t dim, double logFloor) {
  at::sub_out(out, tile, lse.unsqueeze(dim));
  at::threshold_(out, logFloor, -std::numeric_limits<double>::infinity());
  out.exp_();
}

}  // namespace

ContrastiveResult contrastiveForwardCpu(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                        const ContrastiveOptions& options) {
  const at::Tensor qf = q.to(at::kFloat).contiguous(), cf = c.to(at::kFloat).contiguous();
  const int64_t B = qf.size(0);
  const float invTau = 1.0f / temperature.item<float>();
  ContrastiveResult result;
  const int64_t N = cf.size(0);
  LseStats rows(B), cols(options.symmetric ? B : 0);
  // The positives are the tiles' own float32 diagonal, the numbers the statistics saw (as eager's cross-entropy
  // subtracts the logit it summed): a positive that is the largest logit cancels exactly.
  at::Tensor positive = at::empty({B}, at::kFloat);
  forEachTile(qf, cf, invTau, at::Tensor(), [&](const at::Tensor& tile, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    rows.fold(tile, 1, r0, nr);
    if (options.symmetric && c0 < B) {
      const int64_t ncols = std::min(nc, B - c0);
      cols.fold(tile.narrow(1, 0, ncols), 0, c0, ncols);
    }
    const int64_t lo = std::max(r0, c0), hi = std::min({r0 + nr, c0 + nc, B});
    if (lo < hi) {
      positive.narrow(0, lo, hi - lo).copy_(tile.narrow(0, lo - r0, hi - lo).narrow(1, lo - c0, hi - lo).diagonal());
    }
    if (keepLogits(B, N)) result.logits = tile;  // the only tile; forEachTile allocated it for this call
  });
  result.rowLse = rows.lse();
  if (options.symmetric) result.colLse = cols.lse();
  result.loss = contrastiveLossFromTerms(rows.minus(positive), options.symmetric ? cols.minus(positive) : at::Tensor());
  return result;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCpu(
    const at::Tensor& gradLoss, const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options) {
  const at::Tensor qf = q.to(at::kFloat).contiguous(), cf = c.to(at::kFloat).contiguous();
  const int64_t B = qf.size(0), N = cf.size(0);
  const float invTau = 1.0f / temperature.item<float>();
  // a: d loss / d (one row's cross-entropy term).
  const double a = double(gradLoss.item<float>()) / double(B) * (options.symmetric ? 0.5 : 1.0);
  at::Tensor dq = at::zeros_like(qf), dc = at::zeros_like(cf);
  if (a == 0.0) return {dq.to(q.scalar_type()), dc.to(c.scalar_type()), at::zeros({}, at::kFloat)};
  // dL/dlogit[i,k] = a * (p[i,k] - [k == i]) (+ the column term when symmetric), p = exp(logit - lse).
  // Far-off logits give probabilities below float's normal range; subnormal operands make BLAS products
  // tens of times slower, and such terms are below float precision anyway: a term whose contribution
  // a * p stays under 1e-30 (or p itself under 1e-30) is set to 0 before the exp.
  const double logFloor = std::max(std::log(kTiny / std::fabs(a)), std::log(kTiny));
  const int64_t rows = tileRows(B, N), cols = tileCols(B, N);
  at::Tensor gradBuffer = at::empty({rows, cols}, at::kFloat);
  at::Tensor colBuffer;
  if (options.symmetric) colBuffer = at::empty({rows, std::min(B, cols)}, at::kFloat);

  forEachTile(qf, cf, invTau, saved.logits, [&](const at::Tensor& tile, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    at::Tensor grad = gradBuffer.narrow(0, 0, nr).narrow(1, 0, nc);
    softmaxTerms(grad, tile, saved.rowLse.narrow(0, r0, nr), 1, logFloor);
    if (options.symmetric && c0 < B) {
      const int64_t ncols = std::min(nc, B - c0);
      at::Tensor colTerms = colBuffer.narrow(0, 0, nr).narrow(1, 0, ncols);
      softmaxTerms(colTerms, tile.narrow(1, 0, ncols), saved.colLse.narrow(0, c0, ncols), 0, logFloor);
      grad.narrow(1, 0, ncols).add_(colTerms);
    }
    // The targets: element (r, k) with r0 + r == c0 + k, on the diagonal at offset r0 - c0.
    grad.diagonal(r0 - c0).sub_(options.symmetric ? 2.0 : 1.0);
    // dlogit/dq = c / tau and dlogit/dc = q / tau: fold 1 / tau into the products.
    dq.narrow(0, r0, nr).addmm_(grad, cf.narrow(0, c0, nc), 1.0, invTau);
    dc.narrow(0, c0, nc).addmm_(grad.t(), qf.narrow(0, r0, nr), 1.0, invTau);
  });
  // The factor a last: a product's alpha must fit a float, and a loss scale can make a overflow it (the
  // gradients then become inf, as eager autograd's would, and the scaler skips the step).
  dq.mul_(a);
  dc.mul_(a);
  return {dq.to(q.scalar_type()), dc.to(c.scalar_type()), temperatureGradFrom(qf, dq, temperature)};
}

}  // namespace coltrast::ops
