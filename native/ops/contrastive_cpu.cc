// In-batch contrastive loss (InfoNCE) on the CPU, forward and backward (the contract is in backend.h).
//
// The logits q . c^T / tau are never held whole: they are produced one [bq, nc] tile at a time by a BLAS
// product, and each tile updates running (max, sum of exp) statistics per query row (and, when
// symmetric, per positive column): the online log-sum-exp of FlashAttention / Inf-CL. Memory beyond the
// inputs is one tile plus O(B + N) statistics, whatever B and N are.
//
// Backward recomputes each tile from the saved log-sum-exps, forms the logit gradient
//   dL/dlogit[i,k] = a * (exp(logit - rowLse_i) - [k == i])  (+ the column term when symmetric)
// and accumulates dq += dlogit . c / tau and dc += dlogit^T . q / tau with two more tile products, plus
// dtau = -sum(dlogit * logit) / tau. Tiles are visited in order and the elementwise work inside a tile is
// split over rows (or columns) with at::parallel_for, so every write has one owner.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/backend.h"

namespace coltrast::ops {
namespace {

// Tile: 512 x 2048 floats (4 MiB): large enough for BLAS efficiency, small enough to stay in cache.
constexpr int64_t kTileRows = 512;
constexpr int64_t kTileCols = 2048;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kTiny = 1e-30f;

struct Online {
  std::vector<float> max, sum;
  explicit Online(int64_t n) : max(n, kNegInf), sum(n, 0.0f) {}
  void add(int64_t r, float x) {
    if (x > max[r]) {
      sum[r] = sum[r] * std::exp(max[r] - x) + 1.0f;
      max[r] = x;
    } else {
      sum[r] += std::exp(x - max[r]);
    }
  }
  float lse(int64_t r) const { return max[r] + std::log(sum[r]); }
};

// Calls visit(tile, r0, nr, c0, nc) for every tile of the scaled logits q . c^T / tau.
template <typename Visit>
void forEachTile(const at::Tensor& q, const at::Tensor& c, float invTau, Visit visit) {
  const int64_t B = q.size(0), N = c.size(0);
  at::Tensor buffer = at::empty({std::min(B, kTileRows), std::min(N, kTileCols)}, at::kFloat);
  for (int64_t r0 = 0; r0 < B; r0 += kTileRows) {
    const int64_t nr = std::min(kTileRows, B - r0);
    for (int64_t c0 = 0; c0 < N; c0 += kTileCols) {
      const int64_t nc = std::min(kTileCols, N - c0);
      at::Tensor tile = buffer.narrow(0, 0, nr).narrow(1, 0, nc);
      at::mm_out(tile, q.narrow(0, r0, nr), c.narrow(0, c0, nc).t());
      tile.mul_(invTau);
      visit(tile, r0, nr, c0, nc);
    }
  }
}

// q_i . c_i / tau for i < B, in float64 accumulation (it is subtracted from a log-sum-exp).
std::vector<float> positives(const at::Tensor& q, const at::Tensor& c, float invTau) {
  const int64_t B = q.size(0), dim = q.size(1);
  std::vector<float> pos(B);
  const float *Q = q.data_ptr<float>(), *C = c.data_ptr<float>();
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double acc = 0.0;
      for (int64_t k = 0; k < dim; ++k) acc += double(Q[i * dim + k]) * C[i * dim + k];
      pos[i] = float(acc * invTau);
    }
  });
  return pos;
}

}  // namespace

ContrastiveResult contrastiveForwardCpu(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                        const ContrastiveOptions& options) {
  const at::Tensor qf = q.to(at::kFloat).contiguous(), cf = c.to(at::kFloat).contiguous();
  const int64_t B = qf.size(0);
  const float invTau = 1.0f / temperature.item<float>();
  Online rows(B), cols(options.symmetric ? B : 0);
  forEachTile(qf, cf, invTau, [&](const at::Tensor& tile, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    const float* T = tile.data_ptr<float>();
    const int64_t ld = tile.stride(0);
    at::parallel_for(0, nr, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t k = 0; k < nc; ++k) rows.add(r0 + r, T[r * ld + k]);
    });
    if (options.symmetric && c0 < B) {
      // Each thread owns a range of columns but walks the tile row by row, so its reads stay contiguous
      // (a column at a time would stride by a whole tile row per element).
      const int64_t ncols = std::min(nc, B - c0);
      at::parallel_for(0, ncols, 256, [&](int64_t begin, int64_t end) {
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t k = begin; k < end; ++k) cols.add(c0 + k, T[r * ld + k]);
      });
    }
  });
  const auto pos = positives(qf, cf, invTau);
  ContrastiveResult result;
  result.rowLse = at::empty({B}, at::kFloat);
  double rowTerm = 0.0, colTerm = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    result.rowLse.data_ptr<float>()[i] = rows.lse(i);
    rowTerm += double(rows.lse(i)) - pos[i];
  }
  double loss = rowTerm / double(B);
  if (options.symmetric) {
    result.colLse = at::empty({B}, at::kFloat);
    for (int64_t j = 0; j < B; ++j) {
      result.colLse.data_ptr<float>()[j] = cols.lse(j);
      colTerm += double(cols.lse(j)) - pos[j];
    }
    loss = 0.5 * (loss + colTerm / double(B));
  }
  result.loss = at::full({}, float(loss), at::kFloat);
  return result;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCpu(
    const at::Tensor& gradLoss, const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options) {
  const at::Tensor qf = q.to(at::kFloat).contiguous(), cf = c.to(at::kFloat).contiguous();
  const int64_t B = qf.size(0), N = cf.size(0);
  const float tau = temperature.item<float>(), invTau = 1.0f / tau;
  // a: d loss / d (one row's cross-entropy term).
  const float a = gradLoss.item<float>() / float(B) * (options.symmetric ? 0.5f : 1.0f);
  const float* rowLse = saved.rowLse.data_ptr<float>();
  const float* colLse = options.symmetric ? saved.colLse.data_ptr<float>() : nullptr;
  at::Tensor dq = at::zeros_like(qf), dc = at::zeros_like(cf);
  double dTau = 0.0;
  at::Tensor gradBuffer = at::empty({std::min(B, kTileRows), std::min(N, kTileCols)}, at::kFloat);

  forEachTile(qf, cf, invTau, [&](const at::Tensor& tile, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    at::Tensor grad = gradBuffer.narrow(0, 0, nr).narrow(1, 0, nc);
    const float* T = tile.data_ptr<float>();
    float* G = grad.data_ptr<float>();
    const int64_t ldT = tile.stride(0), ldG = grad.stride(0);
    std::vector<double> partial(nr, 0.0);
    at::parallel_for(0, nr, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = r0 + r;
        double acc = 0.0;
        for (int64_t k = 0; k < nc; ++k) {
          const int64_t j = c0 + k;
          const float logit = T[r * ldT + k];
          float g = std::exp(logit - rowLse[i]) - (j == i ? 1.0f : 0.0f);
          if (colLse && j < B) g += std::exp(logit - colLse[j]) - (j == i ? 1.0f : 0.0f);
          g *= a;
          // Far-off logits give probabilities below float's normal range; subnormal operands make BLAS
          // products tens of times slower, and these terms are below float precision anyway.
          if (std::fabs(g) < kTiny) g = 0.0f;
          G[r * ldG + k] = g;
          acc += double(g) * logit;
        }
        partial[r] = acc;
      }
    });
    for (double p : partial) dTau -= p;
    // dlogit/dq = c / tau and dlogit/dc = q / tau: fold 1/tau into the products.
    dq.narrow(0, r0, nr).addmm_(grad, cf.narrow(0, c0, nc), 1.0, invTau);
    dc.narrow(0, c0, nc).addmm_(grad.t(), qf.narrow(0, r0, nr), 1.0, invTau);
  });
  // logit = s / tau  =>  d logit / d tau = -logit / tau.
  at::Tensor dTemperature = at::full({}, float(dTau / tau), at::kFloat);
  return {dq.to(q.scalar_type()), dc.to(c.scalar_type()), dTemperature};
}

}  // namespace coltrast::ops
