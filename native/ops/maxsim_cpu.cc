// MaxSim on the CPU, forward and backward (the contract is in backend.h).
//
// Forward, `all` mode: the token similarities of a block of queries against a block of documents are
// one matrix product, [bq*Lq, dim] x [dim, nc*Ld], done by BLAS (which is where the flops are fast on a
// CPU); then a parallel pass over the block's queries reduces each query token's row to the max over the
// valid tokens of each document and sums those. Only one block of similarities exists at a time
// (kBlockElements floats), never the full [B, N, Lq, Ld]. Paired mode does the same per pair.
//
// Backward uses the stored argmax: dQ[b,i] gathers g[b,n] * D[n, argmax] over documents, parallel over
// queries; dD[n,j] scatters g[b,n] * Q[b,i] into the chosen token, parallel over documents. Each thread
// owns the rows it writes, so there are no races and no atomics, and the cost is O(B N Lq dim) instead
// of the two full products eager autograd does.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "ops/backend.h"

namespace coltrast::ops {
namespace {

// Floats in one similarity block: 16 MiB, large enough for BLAS to run at full speed, small enough to
// stay in the last-level cache of a server CPU.
constexpr int64_t kBlockElements = int64_t(1) << 22;

struct Sizes {
  int64_t B, Lq, N, Ld, dim;
};

Sizes sizesOf(const at::Tensor& q, const at::Tensor& d) {
  return {q.size(0), q.size(1), d.size(0), d.size(1), q.size(2)};
}

// Weight of query b's sum: 1, or 1 / (its valid token count) when normalized (0 for an empty query).
std::vector<float> queryWeights(const uint8_t* qmask, const Sizes& s, bool normalize) {
  std::vector<float> w(s.B, 1.0f);
  if (!normalize) return w;
  for (int64_t b = 0; b < s.B; ++b) {
    int64_t count = 0;
    for (int64_t i = 0; i < s.Lq; ++i) count += qmask[b * s.Lq + i] != 0;
    w[b] = count > 0 ? 1.0f / float(count) : 0.0f;
  }
  return w;
}

// Max over the valid entries of one similarity row segment; writes the index (or -1) to *arg.
// `masked` lists the document's padding positions, which are overwritten with -inf first (the block is
// scratch), so the scan itself has no mask loads or branches: eight running maxima in the form
// `a > b ? a : b` that compilers turn into vector max instructions, then a search for the first index
// holding the maximum. That form drops a NaN as soon as a later value follows it, so a NaN among the valid
// entries (NaN or infinite inputs) is tracked beside the maxima: the score is then NaN, as eager's is,
// wherever the NaN stands, rather than a finite max over the other tokens.
inline float maxValid(float* sim, const std::vector<int32_t>& masked, int64_t Ld, int32_t* arg) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int32_t j : masked) sim[j] = kNegInf;
  float lanes[8] = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  int32_t unordered[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= Ld; j += 8) {
    for (int l = 0; l < 8; ++l) {
      lanes[l] = lanes[l] > sim[j + l] ? lanes[l] : sim[j + l];
      unordered[l] |= sim[j + l] != sim[j + l];
    }
  }
  float best = kNegInf;
  bool nan = false;
  for (int l = 0; l < 8; ++l) {
    best = best > lanes[l] ? best : lanes[l];
    nan |= unordered[l] != 0;
  }
  for (; j < Ld; ++j) {
    best = best > sim[j] ? best : sim[j];
    nan |= sim[j] != sim[j];
  }
  if (nan) {
    *arg = -1;  // no gradient flows through a NaN score's token
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (best == kNegInf) {
    *arg = -1;
    return 0.0f;
  }
  int32_t at = 0;
  while (sim[at] != best) ++at;
  *arg = at;
  return best;
}

// Padding positions of each document (most documents of a batch have some).
std::vector<std::vector<int32_t>> maskedPositions(const uint8_t* dmask, int64_t N, int64_t Ld) {
  std::vector<std::vector<int32_t>> masked(N);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < Ld; ++j)
      if (!dmask[n * Ld + j]) masked[n].push_back(int32_t(j));
  return masked;
}

void forwardAll(const float* Q, const uint8_t* qmask, const float* D, const uint8_t* dmask, const Sizes& s,
                const std::vector<float>& w, float* scores, int32_t* argmax) {
  const auto masked = maskedPositions(dmask, s.N, s.Ld);
  const at::Tensor q2 = at::from_blob(const_cast<float*>(Q), {s.B * s.Lq, s.dim});
  const at::Tensor d2 = at::from_blob(const_cast<float*>(D), {s.N * s.Ld, s.dim});
  // Block sizes: as many documents as fit beside one query, then as many queries as fit.
  const int64_t nc = std::max<int64_t>(1, std::min<int64_t>(s.N, kBlockElements / std::max<int64_t>(1, s.Lq * s.Ld)));
  const int64_t bq = std::max<int64_t>(1, std::min<int64_t>(s.B, kBlockElements / std::max<int64_t>(1, s.Lq * nc * s.Ld)));
  at::Tensor block = at::empty({bq * s.Lq, nc * s.Ld}, at::kFloat);
  for (int64_t b0 = 0; b0 < s.B; b0 += bq) {
    const int64_t nb = std::min(bq, s.B - b0);
    for (int64_t n0 = 0; n0 < s.N; n0 += nc) {
      const int64_t nn = std::min(nc, s.N - n0);
      at::Tensor sim = block.narrow(0, 0, nb * s.Lq).narrow(1, 0, nn * s.Ld);
      at::mm_out(sim, q2.narrow(0, b0 * s.Lq, nb * s.Lq), d2.narrow(0, n0 * s.Ld, nn * s.Ld).t());
      float* S = sim.data_ptr<float>();
      const int64_t ld = sim.stride(0);
      at::parallel_for(0, nb * nn, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t b = b0 + p / nn, n = n0 + p % nn;
          float total = 0.0f;
          for (int64_t i = 0; i < s.Lq; ++i) {
            int32_t* arg = argmax + (b * s.N + n) * s.Lq + i;
            if (!qmask[b * s.Lq + i]) {
              *arg = -1;
              continue;
            }
            float* row = S + ((b - b0) * s.Lq + i) * ld + (n - n0) * s.Ld;
            total += maxValid(row, masked[n], s.Ld, arg);
          }
          scores[b * s.N + n] = w[b] * total;
        }
      });
    }
  }
}

void forwardPaired(const float* Q, const uint8_t* qmask, const float* D, const uint8_t* dmask, const Sizes& s,
                   const std::vector<float>& w, float* scores, int32_t* argmax) {
  // A batched product over a block of pairs ([nb, Lq, Ld] similarities, by BLAS), then the same
  // masked max + sum, parallel over the block's pairs.
  const auto masked = maskedPositions(dmask, s.N, s.Ld);
  const at::Tensor q3 = at::from_blob(const_cast<float*>(Q), {s.B, s.Lq, s.dim});
  const at::Tensor d3 = at::from_blob(const_cast<float*>(D), {s.N, s.Ld, s.dim});
  const int64_t bq = std::max<int64_t>(1, std::min<int64_t>(s.B, kBlockElements / std::max<int64_t>(1, s.Lq * s.Ld)));
  for (int64_t b0 = 0; b0 < s.B; b0 += bq) {
    const int64_t nb = std::min(bq, s.B - b0);
    const at::Tensor sim = at::bmm(q3.narrow(0, b0, nb), d3.narrow(0, b0, nb).transpose(1, 2)).contiguous();
    float* S = sim.data_ptr<float>();
    at::parallel_for(0, nb, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t b = b0 + p;
        float total = 0.0f;
        for (int64_t i = 0; i < s.Lq; ++i) {
          int32_t* arg = argmax + b * s.Lq + i;
          if (!qmask[b * s.Lq + i]) {
            *arg = -1;
            continue;
          }
          total += maxValid(S + (p * s.Lq + i) * s.Ld, masked[b], s.Ld, arg);
        }
        scores[b] = w[b] * total;
      }
    });
  }
}

inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] += a * x[k];
}

}  // namespace

MaxSimResult maxsimForwardCpu(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                              const at::Tensor& dmask, const MaxSimOptions& options) {
  const Sizes s = sizesOf(q, d);
  const at::Tensor qf = q.to(at::kFloat).contiguous(), df = d.to(at::kFloat).contiguous();
  const at::Tensor qm = qmask.contiguous(), dm = dmask.contiguous();
  const auto w = queryWeights(qm.data_ptr<uint8_t>(), s, options.normalizeByQueryLength);
  MaxSimResult r;
  if (options.paired) {
    r.scores = at::empty({s.B}, at::kFloat);
    r.argmax = at::empty({s.B, s.Lq}, at::kInt);
    forwardPaired(qf.data_ptr<float>(), qm.data_ptr<uint8_t>(), df.data_ptr<float>(), dm.data_ptr<uint8_t>(), s, w,
                  r.scores.data_ptr<float>(), r.argmax.data_ptr<int32_t>());
  } else {
    r.scores = at::empty({s.B, s.N}, at::kFloat);
    r.argmax = at::empty({s.B, s.N, s.Lq}, at::kInt);
    forwardAll(qf.data_ptr<float>(), qm.data_ptr<uint8_t>(), df.data_ptr<float>(), dm.data_ptr<uint8_t>(), s, w,
               r.scores.data_ptr<float>(), r.argmax.data_ptr<int32_t>());
  }
  return r;
}

std::tuple<at::Tensor, at::Tensor> maxsimBackwardCpu(const at::Tensor& gradScores, const at::Tensor& q,
                                                     const at::Tensor& qmask, const at::Tensor& d,
                                                     const at::Tensor& argmax, const MaxSimOptions& options) {
  const Sizes s = sizesOf(q, d);
  const at::Tensor qf = q.to(at::kFloat).contiguous(), df = d.to(at::kFloat).contiguous();
  const at::Tensor qm = qmask.contiguous(), g = gradScores.to(at::kFloat).contiguous(), am = argmax.contiguous();
  const auto w = queryWeights(qm.data_ptr<uint8_t>(), s, options.normalizeByQueryLength);
  at::Tensor dq = at::zeros({s.B, s.Lq, s.dim}, at::kFloat), dd = at::zeros({s.N, s.Ld, s.dim}, at::kFloat);
  const float *Q = qf.data_ptr<float>(), *D = df.data_ptr<float>(), *G = g.data_ptr<float>();
  const int32_t* A = am.data_ptr<int32_t>();
  float *dQ = dq.data_ptr<float>(), *dD = dd.data_ptr<float>();
  // Index of argmax/grad entries for (query b, document n) in either mode; documents a query meets.
  const bool paired = options.paired;
  const int64_t docsPerQuery = paired ? 1 : s.N;
  auto pairIndex = [&](int64_t b, int64_t n) { return paired ? b : b * s.N + n; };

  at::parallel_for(0, s.B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t k = 0; k < docsPerQuery; ++k) {
        const int64_t n = paired ? b : k;
        const float coef = G[pairIndex(b, n)] * w[b];
        if (coef == 0.0f) continue;
        const int32_t* arg = A + pairIndex(b, n) * s.Lq;
        for (int64_t i = 0; i < s.Lq; ++i) {
          if (arg[i] >= 0) axpy(coef, D + (n * s.Ld + arg[i]) * s.dim, dQ + (b * s.Lq + i) * s.dim, s.dim);
        }
      }
    }
  });
  at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b0 = paired ? n : 0, b1 = paired ? n + 1 : s.B;
      for (int64_t b = b0; b < b1; ++b) {
        const float coef = G[pairIndex(b, n)] * w[b];
        if (coef == 0.0f) continue;
        const int32_t* arg = A + pairIndex(b, n) * s.Lq;
        for (int64_t i = 0; i < s.Lq; ++i) {
          if (arg[i] >= 0) axpy(coef, Q + (b * s.Lq + i) * s.dim, dD + (n * s.Ld + arg[i]) * s.dim, s.dim);
        }
      }
    }
  });
  return {dq.to(q.scalar_type()), dd.to(d.scalar_type())};
}

}  // namespace coltrast::ops
