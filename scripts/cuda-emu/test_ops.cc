// The CUDA ops' host side run whole on the CPU emulator: the contrastive loss (native/ops/contrastive_cuda.cc,
// both strategies, the chunked one's chunk loop, products, accumulation and scaling) against a float64
// reference, and MaxSim (maxsim_cuda.cc: arguments, strides, outputs) against the CPU implementation. The
// wrappers are compiled unchanged except for COLTRAST_CUDA_EMULATOR (the chunked loss's 16-bit products run as
// float32 products, as the CPU's ATen has no mm with a float32 output); their tensors are CPU tensors, ATen's
// CPU ops stand in for cuBLAS and scripts/cuda-emu's emulated kernels for the GPU's. The kernels alone are
// checked by native/kernels/test_kernels.cu; what the GPU run (scripts/device/cuda-check.sh) still adds is
// real hardware, cuBLAS and libtorch 2.x's mm.dtype.
//   build.sh <out-dir>, then <out-dir>/test_ops   ->  "all op checks passed", or FAIL lines and exit status 1
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "error.h"
#include "ops/autograd.h"
#include "ops/backend.h"

namespace coltrast::ops {
// autograd.cc, which reads COLTRAST_CONTRASTIVE_STRATEGY, is not linked here: the loss cases name their
// strategy, and checkResolution sets what the variable would have said.
ContrastiveOptions::Strategy environmentStrategy = ContrastiveOptions::Strategy::Auto;
ContrastiveOptions::Strategy contrastiveStrategyDefault() { return environmentStrategy; }
}  // namespace coltrast::ops

namespace {
using coltrast::ops::ContrastiveOptions;
using Strategy = ContrastiveOptions::Strategy;

int failures = 0, checks = 0;

void expect(bool ok, const std::string& what, double error, double tol) {
  ++checks;
  if (!ok) ++failures;
  std::printf("  %s %-78s err %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", what.c_str(), error, tol);
}

// max |a - b| / max |b|
double relError(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
  const double scale = std::max(b64.abs().max().item<double>(), 1e-30);
  return (a64 - b64).abs().max().item<double>() / scale;
}

struct Expected {
  double loss, dtau;
  at::Tensor dq, dc;
};

// The loss in float64 with autograd: cross-entropy over q c^T / tau, targets on the diagonal; gradLoss upstream.
Expected reference(const at::Tensor& q, const at::Tensor& c, double tau, bool symmetric, double gradLoss) {
  const at::Tensor q64 = q.to(at::kDouble).requires_grad_(), c64 = c.to(at::kDouble).requires_grad_();
  const at::Tensor t64 = at::full({}, tau, at::kDouble).requires_grad_();
  const int64_t B = q.size(0);
  const at::Tensor logits = at::mm(q64, c64.t()) / t64, target = at::arange(B, at::kLong);
  at::Tensor loss = at::cross_entropy_loss(logits, target);
  if (symmetric) loss = 0.5 * (loss + at::cross_entropy_loss(logits.narrow(1, 0, B).t(), target));
  (loss * gradLoss).backward();
  return {loss.item<double>(), t64.grad().item<double>(), q64.grad(), c64.grad()};
}

const char* nameOf(at::ScalarType t) { return t == at::kFloat ? "float32" : t == at::kHalf ? "float16" : "bfloat16"; }

void run(int64_t B, int64_t N, int64_t dim, at::ScalarType dtype, bool symmetric, Strategy strategy, int64_t chunkRows) {
  // Rows of norm about 1, like a model's normalized embeddings (at tau 0.05, logits up to about 20); rounded to
  // the dtype first, so the reference sees the values the op sees.
  const double tau = 0.05, gradLoss = 0.7;
  const at::Tensor q = (at::randn({B, dim}, at::kFloat) / std::sqrt(double(dim))).to(dtype);
  const at::Tensor c = (at::randn({N, dim}, at::kFloat) / std::sqrt(double(dim))).to(dtype);
  const at::Tensor temperature = at::full({}, tau, at::kFloat), g = at::full({}, gradLoss, at::kFloat);
  ContrastiveOptions options;
  options.symmetric = symmetric;
  options.strategy = strategy;
  options.chunkRows = chunkRows;
  const auto result = coltrast::ops::contrastiveForwardCuda(q, c, temperature, options);
  const auto [dq, dc, dtau] = coltrast::ops::contrastiveBackwardCuda(g, q, c, temperature, result, options);
  const Expected want = reference(q, c, tau, symmetric, gradLoss);

  // Tolerances: the loss comes from float32 products of the (exact) inputs in every dtype; the gradients of
  // 16-bit runs pass through the logit gradient stored in the input dtype (the fused kernels: the tiles'
  // product operands), 8 significant bits for bfloat16, 11 for float16.
  const double tol = dtype == at::kFloat ? 1e-4 : dtype == at::kHalf ? 4e-3 : 3e-2;
  const std::string what = std::string(nameOf(dtype)) + " B=" + std::to_string(B) + " N=" + std::to_string(N) +
                           " dim=" + std::to_string(dim) + (symmetric ? " symmetric" : "") +
                           (strategy == Strategy::Fused ? " fused" : " chunked") +
                           (chunkRows ? " rows=" + std::to_string(chunkRows) : "");
  const double lossError = std::abs(result.loss.item<double>() - want.loss) / (1 + std::abs(want.loss));
  expect(lossError < 1e-5, what + " loss", lossError, 1e-5);
  const bool types = dq.scalar_type() == dtype && dc.scalar_type() == dtype && dtau.scalar_type() == at::kFloat &&
                     dq.sizes() == q.sizes() && dc.sizes() == c.sizes() && dtau.dim() == 0;
  expect(types, what + " gradient dtypes and shapes", 0, 0);
  const double dqError = relError(dq, want.dq), dcError = relError(dc, want.dc);
  expect(dqError < tol, what + " dq", dqError, tol);
  expect(dcError < tol, what + " dc", dcError, tol);
  const double dtauError = std::abs(dtau.item<double>() - want.dtau) / (1 + std::abs(want.dtau));
  expect(dtauError < tol, what + " dtau", dtauError, tol);
}

// A loss near 0, the value a well-trained model logs: each positive is its query itself and the rest are random
// unit rows, at tau 0.01, so the logits reach 100 and the true loss is far below float32's step there (7.6e-6);
// candidates past B are hard negatives of the first queries (cosine about 0.9, terms about e^-10), so the value is
// not simply 0 either. The loss must come out within 1e-7 of float64's and never negative: a log-sum-exp and a
// positive logit rounded to float32 each and subtracted afterwards miss by several times that, either side.
void runNearZero(int64_t B, int64_t N, int64_t dim, at::ScalarType dtype, bool symmetric, Strategy strategy,
                 int64_t chunkRows) {
  const double tau = 0.01;
  const auto unit = [](const at::Tensor& x) { return x / x.norm(2, 1, true); };
  const at::Tensor q = unit(at::randn({B, dim}, at::kFloat)).to(dtype);
  at::Tensor c = unit(at::randn({N, dim}, at::kFloat));
  c.narrow(0, 0, B).copy_(q);
  const int64_t hard = std::min(N - B, B);
  if (hard > 0) c.narrow(0, B, hard).copy_(unit(q.narrow(0, 0, hard).to(at::kFloat) + 0.45 * unit(at::randn({hard, dim}))));
  c = c.to(dtype);
  ContrastiveOptions options;
  options.symmetric = symmetric;
  options.strategy = strategy;
  options.chunkRows = chunkRows;
  const auto result = coltrast::ops::contrastiveForwardCuda(q, c, at::full({}, tau, at::kFloat), options);
  const Expected want = reference(q, c, tau, symmetric, 1.0);
  const double got = result.loss.item<double>(), error = std::abs(got - want.loss);
  char value[96];
  std::snprintf(value, sizeof value, " (float64 %.3e, got %.3e)", want.loss, got);
  const std::string what = std::string(nameOf(dtype)) + " B=" + std::to_string(B) + " N=" + std::to_string(N) +
                           " dim=" + std::to_string(dim) + (symmetric ? " symmetric" : "") +
                           (strategy == Strategy::Fused ? " fused" : " chunked") +
                           (chunkRows ? " rows=" + std::to_string(chunkRows) : "") + " loss near 0" + value;
  expect(error < 1e-7 && got >= 0, what, error, 1e-7);
}

// MaxSim's CUDA wrapper (maxsim_cuda.cc) against the CPU implementation (itself checked against float64 by
// test/ops.test.ts) on the same inputs: scores and both gradients. The documents are a slice of longer rows
// (a row stride the kernels must follow); one query and one document have no valid token. `withNaN`: document 0's
// token 1 (valid) is NaN, so its scores are NaN with no token taking a gradient, and a padded token of document 1
// is NaN too, which changes nothing (ops-probe.test.ts checks the CPU's against float64).
void runMaxSim(int64_t B, int64_t N, int64_t Lq, int64_t Ld, int64_t dim, at::ScalarType dtype, bool paired,
               bool normalize, bool withNaN = false) {
  const at::Tensor q = (at::randn({B, Lq, dim}, at::kFloat) / std::sqrt(double(dim))).to(dtype);
  const at::Tensor d = (at::randn({N, Ld + 3, dim}, at::kFloat) / std::sqrt(double(dim))).to(dtype).narrow(1, 0, Ld);
  at::Tensor qmask = (at::rand({B, Lq}) < 0.8).to(at::kByte), dmask = (at::rand({N, Ld}) < 0.8).to(at::kByte);
  qmask[0][0] = 1;  // query 0 keeps one valid token
  if (B > 1) qmask[B - 1].zero_();
  if (N > 1) dmask[N - 1].zero_();
  if (withNaN) {
    d[0][1].fill_(NAN);
    dmask[0][1] = 1;
    if (N > 2) {
      d[1][2].fill_(NAN);
      dmask[1][2] = 0;
    }
  }
  coltrast::ops::MaxSimOptions options;
  options.paired = paired;
  options.normalizeByQueryLength = normalize;
  const auto gpu = coltrast::ops::maxsimForwardCuda(q, qmask, d, dmask, options);
  const at::Tensor qf = q.to(at::kFloat), df = d.to(at::kFloat).contiguous();
  const auto cpu = coltrast::ops::maxsimForwardCpu(qf, qmask, df, dmask, options);
  const at::Tensor g = at::rand(cpu.scores.sizes()) * 2 - 1;
  const auto [dq, dd] = coltrast::ops::maxsimBackwardCuda(g, q, qmask, d, gpu.argmax, options);
  const auto [dqCpu, ddCpu] = coltrast::ops::maxsimBackwardCpu(g, qf, qmask, df, cpu.argmax, options);

  // Both sides multiply the same (rounded) values in float32; only the order of the sums differs.
  const double tol = 1e-5;
  const std::string what = std::string(nameOf(dtype)) + " maxsim B=" + std::to_string(B) + " N=" + std::to_string(N) +
                           " Lq=" + std::to_string(Lq) + " Ld=" + std::to_string(Ld) + " dim=" + std::to_string(dim) +
                           (paired ? " paired" : " all") + (normalize ? " normalized" : "");
  // NaN scores where the CPU's are NaN (compared as such), the others to float rounding.
  const bool sameNaN = gpu.scores.isnan().equal(cpu.scores.isnan());
  expect(sameNaN && (!withNaN || cpu.scores.isnan().any().item<bool>()), what + (withNaN ? " NaN" : "") + " scores NaN where the CPU's are", 0, 0);
  const double scoreError = relError(gpu.scores.nan_to_num(0), cpu.scores.nan_to_num(0));
  expect(scoreError < tol, what + (withNaN ? " NaN" : "") + " scores", scoreError, tol);
  // A near-tie could pick another token through another summation order (then the gradients differ there too);
  // the tokens picked are compared outright, and these inputs have none.
  const int64_t differ = gpu.argmax.ne(cpu.argmax).sum().item<int64_t>();
  expect(differ == 0, what + " argmax (tokens that differ: " + std::to_string(differ) + ")", double(differ), 0);
  const bool types = dq.scalar_type() == dtype && dd.scalar_type() == dtype && dq.sizes() == q.sizes() &&
                     dd.sizes() == d.sizes();
  expect(types, what + " gradient dtypes and shapes", 0, 0);
  // The gradients are stored in the input dtype.
  const double gradTol = dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 1e-3 : 8e-3;
  const double dqError = relError(dq, dqCpu), ddError = relError(dd, ddCpu);
  expect(dqError < gradTol, what + " dq", dqError, gradTol);
  expect(ddError < gradTol, what + " dd", ddError, gradTol);
}

// Auto's choice per dtype (this build has the 16-bit chunked products, as libtorch >= 2.8 does): chunked for
// float16/bfloat16, fused for float32; COLTRAST_CONTRASTIVE_STRATEGY, when set, decides; an explicit option wins.
void checkResolution() {
  using coltrast::ops::environmentStrategy;
  using coltrast::ops::resolveContrastiveStrategy;
  const char* names[] = {"auto", "fused", "chunked"};
  struct Case {
    Strategy environment, requested;
    at::ScalarType dtype;
    Strategy expected;
  };
  const Case cases[] = {
      {Strategy::Auto, Strategy::Auto, at::kBFloat16, Strategy::Chunked},
      {Strategy::Auto, Strategy::Auto, at::kHalf, Strategy::Chunked},
      {Strategy::Auto, Strategy::Auto, at::kFloat, Strategy::Fused},
      {Strategy::Fused, Strategy::Auto, at::kBFloat16, Strategy::Fused},
      {Strategy::Chunked, Strategy::Auto, at::kFloat, Strategy::Chunked},
      {Strategy::Auto, Strategy::Fused, at::kHalf, Strategy::Fused},
      {Strategy::Fused, Strategy::Chunked, at::kFloat, Strategy::Chunked},
  };
  for (const Case& c : cases) {
    environmentStrategy = c.environment;
    const Strategy got = resolveContrastiveStrategy(c.dtype, c.requested);
    expect(got == c.expected,
           std::string("strategy ") + names[int(c.requested)] + " with COLTRAST_CONTRASTIVE_STRATEGY=" +
               names[int(c.environment)] + ", " + nameOf(c.dtype) + " -> " + names[int(got)],
           0, 0);
  }
  environmentStrategy = Strategy::Auto;
}

}  // namespace

int main() {
  at::manual_seed(7);
  struct Shape {
    int64_t B, N, dim;
  };
  // Odd sizes: one query, B = N, N = 8B, long rows (B = N = 1 is left out: its gradients are exactly 0). Each
  // chunked case in one chunk (the automatic size) and in 7-row chunks (several, the last one short); the fused
  // strategy, already checked on a GPU, on the small shapes only (its kernels emulate slowly).
  const Shape shapes[] = {{1, 9, 64}, {7, 7, 96}, {5, 40, 128}, {33, 33, 384}, {200, 260, 64}};
  try {
    checkResolution();
    for (const Shape& s : shapes) {
      for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
        for (const bool symmetric : {false, true}) {
          run(s.B, s.N, s.dim, dtype, symmetric, Strategy::Chunked, 0);
          if (s.B > 1) run(s.B, s.N, s.dim, dtype, symmetric, Strategy::Chunked, 7);
          if (s.B <= 33) run(s.B, s.N, s.dim, dtype, symmetric, Strategy::Fused, 0);
        }
      }
    }
    for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      for (const bool symmetric : {false, true}) {
        runNearZero(33, 45, 97, dtype, symmetric, Strategy::Chunked, 0);
        runNearZero(33, 45, 97, dtype, symmetric, Strategy::Chunked, 7);
        runNearZero(33, 45, 97, dtype, symmetric, Strategy::Fused, 0);
      }
    }
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      for (const bool normalize : {false, true}) {
        runMaxSim(3, 10, 7, 33, 64, dtype, false, normalize);
        runMaxSim(5, 5, 32, 180, 128, dtype, true, normalize);
        runMaxSim(2, 3, 1, 1, 96, dtype, false, normalize);
        runMaxSim(3, 10, 7, 33, 64, dtype, false, normalize, /*withNaN=*/true);
        runMaxSim(5, 5, 32, 180, 128, dtype, true, normalize, /*withNaN=*/true);
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  if (failures) {
    std::printf("%d of %d op checks FAILED\n", failures, checks);
    return 1;
  }
  std::printf("all op checks passed (%d)\n", checks);
  return 0;
}
