// Standalone check of coltrast's CUDA kernels (no ATen, no addon): every kernel on random odd-shaped
// inputs, every dtype, forward and backward, against a float64 CPU reference written here. Outputs are
// poisoned (NaN) before each run, so an element the kernel forgot shows up; backward runs twice and must
// agree bit for bit (the kernels promise determinism). Exit status 0 only when every check passes.
//
//   nvcc -std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -o /tmp/test_kernels \
//        native/kernels/test_kernels.cu native/kernels/maxsim.cu native/kernels/contrastive.cu
//   /tmp/test_kernels                  correctness (seconds)
//   /tmp/test_kernels --quick          a subset covering every kernel variant (the compute-sanitizer workload)
//   /tmp/test_kernels --bench          plus timings at the issue's shapes, one JSON line each ("BENCH {...}")
//   /tmp/test_kernels --bench --big    plus contrastive forward + backward at B = N = 262,144, dim 384
//   /tmp/test_kernels --profile        only the bfloat16 contrastive benchmark at B = N = 16,384, dim 384, no
//                                      checks (the workload of Nsight Compute in scripts/device/cuda-check.sh)
//
// The reference reads the inputs after rounding to the dtype, so for float16/bfloat16 the forward values
// differ only by float32 accumulation; the gradients also carry the dtype's rounding of the result (and,
// for the contrastive loss, of the logit gradient fed to the tensor cores), hence looser tolerances.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

using coltrast::kernels::DType;

#define CHECK(call)                                                                                  \
  do {                                                                                               \
    cudaError_t e_ = (call);                                                                         \
    if (e_ != cudaSuccess) {                                                                         \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(2);                                                                                  \
    }                                                                                                \
  } while (0)

namespace {

int failures = 0;

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double normal() {
    const double u = std::max(uniform(), 1e-300), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
  int below(int n) { return int(next() % uint64_t(n)); }
};

const char* name(DType t) { return t == DType::F32 ? "float32" : t == DType::F16 ? "float16" : "bfloat16"; }
size_t elementSize(DType t) { return t == DType::F32 ? 4 : 2; }

// Rounds to the dtype; returns the rounded value, appends its bytes.
float roundTo(DType t, float x, std::vector<unsigned char>* bytes) {
  unsigned char raw[4];
  float back = x;
  if (t == DType::F32) {
    std::memcpy(raw, &x, 4);
  } else if (t == DType::F16) {
    const __half h = __float2half_rn(x);
    std::memcpy(raw, &h, 2);
    back = __half2float(h);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    std::memcpy(raw, &h, 2);
    back = __bfloat162float(h);
  }
  if (bytes) bytes->insert(bytes->end(), raw, raw + elementSize(t));
  return back;
}

float readBack(DType t, const unsigned char* p) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (t == DType::F16) {
    __half h;
    std::memcpy(&h, p, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, p, 2);
  return __bfloat162float(h);
}

struct Device {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Device(size_t n) : bytes(std::max<size_t>(n, 1)) { CHECK(cudaMalloc(&p, bytes)); }
  ~Device() { cudaFree(p); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void upload(const void* src, size_t n) { CHECK(cudaMemcpy(p, src, n, cudaMemcpyHostToDevice)); }
  void poison() { CHECK(cudaMemset(p, 0xFF, bytes)); }  // NaN for float32/16/bf16, -1 for int32
  std::vector<unsigned char> download() const {
    std::vector<unsigned char> out(bytes);
    CHECK(cudaMemcpy(out.data(), p, bytes, cudaMemcpyDeviceToHost));
    return out;
  }
};

// A row-major [rows, dim] matrix with row stride `stride` (>= dim) in the dtype; padding holds NaN so a
// kernel that reads it poisons its result. `values` keeps the rounded values densely.
struct Matrix {
  int64_t rows = 0, dim = 0, stride = 0;
  std::vector<float> values;
  std::vector<unsigned char> bytes;
};

Matrix makeMatrix(DType t, int64_t rows, int64_t dim, int64_t stride, Rng& rng, bool unitRows,
                  const Matrix* near = nullptr, double noise = 0.0) {
  Matrix m;
  m.rows = rows;
  m.dim = dim;
  m.stride = stride;
  m.values.resize(size_t(rows * dim));
  std::vector<double> row(static_cast<size_t>(dim));
  for (int64_t r = 0; r < rows; ++r) {
    double norm = 0.0;
    for (int64_t k = 0; k < dim; ++k) {
      row[k] = rng.normal();
      if (near && r < near->rows) row[k] = near->values[r * dim + k] * std::sqrt(double(dim)) + noise * row[k];
      norm += row[k] * row[k];
    }
    norm = unitRows ? std::sqrt(norm) : 1.0;
    for (int64_t k = 0; k < stride; ++k) {
      if (k < dim) {
        m.values[r * dim + k] = roundTo(t, float(row[k] / norm), &m.bytes);
      } else {
        roundTo(t, NAN, &m.bytes);
      }
    }
  }
  return m;
}

// ||got - want|| / max(||want||, sqrt(count) * floor): normwise relative error, except where the true value
// is far below the scale of the terms that make it (a loss of 1e-40 from logits of 100): there the error
// is measured against `floor`, that scale.
struct Error {
  double num = 0.0, den = 0.0, worst = 0.0, count = 0.0;
  bool nonFinite = false;
  void add(double got, double want) {
    if (!std::isfinite(got)) nonFinite = true;
    num += (got - want) * (got - want);
    den += want * want;
    count += 1.0;
    worst = std::max(worst, std::fabs(got - want));
  }
  double relative(double floor) const {
    return nonFinite ? INFINITY : std::sqrt(num / std::max({den, count * floor * floor, 1e-300}));
  }
};

void report(const std::string& what, const Error& e, double tolerance, double floor = 0.0) {
  const double rel = e.relative(floor);
  const bool ok = rel <= tolerance;
  if (!ok) ++failures;
  std::printf("  %-4s %-44s rel %.3e  max abs %.3e  (tol %.0e)%s\n", ok ? "ok" : "FAIL", what.c_str(), rel, e.worst,
              tolerance, e.nonFinite ? "  NON-FINITE" : "");
}

void expect(bool condition, const std::string& what) {
  if (!condition) ++failures;
  std::printf("  %-4s %s\n", condition ? "ok" : "FAIL", what.c_str());
}

double gradTolerance(DType t) { return t == DType::F32 ? 1e-4 : t == DType::F16 ? 4e-3 : 2e-2; }

// ---- MaxSim ------------------------------------------------------------------------------------------
struct MaxSimCase {
  int64_t B, N, Lq, Ld, dim;
  bool paired, normalize;
  int64_t pad;      // extra elements per token row (strided inputs); 0 = contiguous
  bool duplicates;  // every third document token repeats the previous one: exact ties
};

void testMaxSim(DType t, const MaxSimCase& c, uint64_t seed) {
  Rng rng(seed);
  const int64_t qStrideL = c.dim + c.pad, dStrideL = c.dim + c.pad;
  Matrix q = makeMatrix(t, c.B * c.Lq, c.dim, qStrideL, rng, true);
  Matrix d = makeMatrix(t, c.N * c.Ld, c.dim, dStrideL, rng, true);
  if (c.duplicates) {
    const size_t es = elementSize(t), row = size_t(dStrideL) * es;
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = 2; j < c.Ld; j += 3) {
        const int64_t r = n * c.Ld + j;
        std::memcpy(d.bytes.data() + r * row, d.bytes.data() + (r - 1) * row, row);
        std::memcpy(&d.values[r * c.dim], &d.values[(r - 1) * c.dim], size_t(c.dim) * sizeof(float));
      }
  }
  std::vector<uint8_t> qmask(static_cast<size_t>(c.B * c.Lq)), dmask(static_cast<size_t>(c.N * c.Ld));
  for (int64_t b = 0; b < c.B; ++b) {
    const int64_t valid = b == 1 ? 0 : 1 + rng.below(int(c.Lq));  // query 1 has no valid token
    for (int64_t i = 0; i < c.Lq; ++i) qmask[b * c.Lq + i] = i < valid ? uint8_t(1 + rng.below(3)) : 0;
  }
  for (int64_t n = 0; n < c.N; ++n) {
    const int64_t valid = n == 2 ? 0 : 1 + rng.below(int(c.Ld));  // document 2 has no valid token
    for (int64_t j = 0; j < c.Ld; ++j) dmask[n * c.Ld + j] = (j < valid && rng.below(8) != 0) ? 1 : 0;
  }
  const int64_t pairs = c.paired ? c.B : c.B * c.N;
  std::vector<float> grad(static_cast<size_t>(pairs));
  for (auto& g : grad) g = float(rng.normal());
  grad[0] = 0.0f;  // a zero upstream gradient is skipped

  Device dq_(q.bytes.size()), dd_(d.bytes.size()), qm_(qmask.size()), dm_(dmask.size());
  dq_.upload(q.bytes.data(), q.bytes.size());
  dd_.upload(d.bytes.data(), d.bytes.size());
  qm_.upload(qmask.data(), qmask.size());
  dm_.upload(dmask.data(), dmask.size());
  Device scores(size_t(pairs) * 4), argmax(size_t(pairs * c.Lq) * 4), g_(size_t(pairs) * 4);
  g_.upload(grad.data(), grad.size() * 4);
  const size_t es = elementSize(t);
  Device gq(size_t(c.B * c.Lq * c.dim) * es), gd(size_t(c.N * c.Ld * c.dim) * es);

  coltrast::kernels::MaxSimArgs a;
  a.dtype = t;
  a.q = dq_.p;
  a.qStrideL = qStrideL;
  a.qStrideB = c.Lq * qStrideL;
  a.qmask = qm_.as<uint8_t>();
  a.qmaskStrideB = c.Lq;
  a.d = dd_.p;
  a.dStrideL = dStrideL;
  a.dStrideN = c.Ld * dStrideL;
  a.dmask = dm_.as<uint8_t>();
  a.dmaskStrideN = c.Ld;
  a.B = c.B;
  a.N = c.N;
  a.Lq = c.Lq;
  a.Ld = c.Ld;
  a.dim = c.dim;
  a.paired = c.paired;
  a.normalize = c.normalize;
  scores.poison();
  argmax.poison();
  CHECK(coltrast::kernels::maxsimForward(a, scores.as<float>(), argmax.as<int32_t>(), 0));
  CHECK(cudaDeviceSynchronize());
  const auto sBytes = scores.download(), aBytes = argmax.download();
  const float* S = reinterpret_cast<const float*>(sBytes.data());
  const int32_t* A = reinterpret_cast<const int32_t*>(aBytes.data());

  std::printf("maxsim %s B=%lld N=%lld Lq=%lld Ld=%lld dim=%lld %s%s%s\n", name(t), (long long)c.B, (long long)c.N,
              (long long)c.Lq, (long long)c.Ld, (long long)c.dim, c.paired ? "paired" : "all",
              c.normalize ? " normalized" : "", c.pad ? " strided" : "");
  auto sim = [&](int64_t b, int64_t i, int64_t n, int64_t j) {
    double s = 0.0;
    for (int64_t k = 0; k < c.dim; ++k) s += double(q.values[(b * c.Lq + i) * c.dim + k]) * d.values[(n * c.Ld + j) * c.dim + k];
    return s;
  };
  std::vector<double> w(size_t(c.B), 1.0);
  for (int64_t b = 0; b < c.B && c.normalize; ++b) {
    int count = 0;
    for (int64_t i = 0; i < c.Lq; ++i) count += qmask[b * c.Lq + i] != 0;
    w[b] = count > 0 ? 1.0 / count : 0.0;
  }
  Error scoreErr;
  int64_t argmaxWrong = 0, argmaxTies = 0;
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t n = c.paired ? b : 0; n < (c.paired ? b + 1 : c.N); ++n) {
      const int64_t pair = c.paired ? b : b * c.N + n;
      double total = 0.0;
      for (int64_t i = 0; i < c.Lq; ++i) {
        int64_t at = -1;
        double best = -INFINITY;
        if (qmask[b * c.Lq + i]) {
          for (int64_t j = 0; j < c.Ld; ++j) {
            if (!dmask[n * c.Ld + j]) continue;
            const double s = sim(b, i, n, j);
            if (s > best) {
              best = s;
              at = j;
            }
          }
        }
        if (at >= 0) total += best;
        const int32_t got = A[pair * c.Lq + i];
        if (got != at) {
          // A different token is fine only when it is valid and ties the max to float32 rounding; an exact
          // tie (identical tokens) must go to the lowest index, like the CPU.
          const double other = got >= 0 && got < c.Ld ? sim(b, i, n, got) : NAN;
          const bool tie = got >= 0 && at >= 0 && got < c.Ld && dmask[n * c.Ld + got] && other != best &&
                           std::fabs(other - best) <= 1e-5 * (1.0 + std::fabs(best));
          if (tie) ++argmaxTies; else ++argmaxWrong;
        }
      }
      scoreErr.add(S[pair], w[b] * total);
    }
  }
  report("scores", scoreErr, 2e-5);
  expect(argmaxWrong == 0, "argmax matches (" + std::to_string(argmaxWrong) + " wrong, " + std::to_string(argmaxTies) +
                               " float32 ties of " + std::to_string(pairs * c.Lq) + ")");

  // Backward: the reference follows the kernel's (checked) argmax.
  coltrast::kernels::MaxSimGrads gr;
  gr.grad = g_.as<float>();
  gr.argmax = argmax.as<int32_t>();
  gr.dq = gq.p;
  gr.dqStrideL = c.dim;
  gr.dqStrideB = c.Lq * c.dim;
  gr.dd = gd.p;
  gr.ddStrideL = c.dim;
  gr.ddStrideN = c.Ld * c.dim;
  Device ws(coltrast::kernels::maxsimBackwardWorkspaceBytes(a));
  std::vector<unsigned char> firstQ, firstD;
  for (int run = 0; run < 2; ++run) {
    gq.poison();
    gd.poison();
    CHECK(coltrast::kernels::maxsimBackward(a, gr, ws.p, ws.bytes, 0));
    CHECK(cudaDeviceSynchronize());
    if (run == 0) {
      firstQ = gq.download();
      firstD = gd.download();
    } else {
      expect(firstQ == gq.download() && firstD == gd.download(), "backward is deterministic (two runs, same bits)");
    }
  }
  std::vector<double> refQ(size_t(c.B * c.Lq * c.dim), 0.0), refD(size_t(c.N * c.Ld * c.dim), 0.0);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t n = c.paired ? b : 0; n < (c.paired ? b + 1 : c.N); ++n) {
      const int64_t pair = c.paired ? b : b * c.N + n;
      const double coef = double(grad[pair]) * w[b];
      for (int64_t i = 0; i < c.Lq; ++i) {
        const int32_t j = A[pair * c.Lq + i];
        if (j < 0 || coef == 0.0) continue;
        for (int64_t k = 0; k < c.dim; ++k) {
          refQ[(b * c.Lq + i) * c.dim + k] += coef * d.values[(n * c.Ld + j) * c.dim + k];
          refD[(n * c.Ld + j) * c.dim + k] += coef * q.values[(b * c.Lq + i) * c.dim + k];
        }
      }
    }
  }
  Error eq, ed;
  for (size_t x = 0; x < refQ.size(); ++x) eq.add(readBack(t, firstQ.data() + x * es), refQ[x]);
  for (size_t x = 0; x < refD.size(); ++x) ed.add(readBack(t, firstD.data() + x * es), refD[x]);
  report("dQ", eq, gradTolerance(t));
  report("dD", ed, gradTolerance(t));
}

// ---- contrastive -------------------------------------------------------------------------------------
struct ContrastiveCase {
  int64_t B, N, dim;
  bool symmetric;
  float tau;
  int64_t pad;
  // Forced tilings (ContrastiveArgs' overrides), for 16-bit inputs; float32 runs the case with its automatic
  // tiling (its tiles are twice as wide: a resident 384-wide forward does not fit).
  int forwardResident = 0, backwardSlice = 0;
  // Each positive its query itself (rounded again), so at a small tau the true loss is 0 to float64's eye; the loss
  // is then checked to 1e-7 absolute and must not be negative (not just to 2e-5 of the lse's size, as otherwise).
  bool nearZero = false;
};

void testContrastive(DType t, const ContrastiveCase& c, uint64_t seed) {
  Rng rng(seed);
  Matrix q = makeMatrix(t, c.B, c.dim, c.dim + c.pad, rng, true);
  // Positives near their queries (the easy case real training reaches), negatives random.
  Matrix cm = makeMatrix(t, c.N, c.dim, c.dim + c.pad, rng, true, &q, c.nearZero ? 0.0 : 4.0);
  const float gradLoss = 1.3f;
  Device dq_(q.bytes.size()), dc_(cm.bytes.size()), tau_(4), gl_(4);
  dq_.upload(q.bytes.data(), q.bytes.size());
  dc_.upload(cm.bytes.data(), cm.bytes.size());
  tau_.upload(&c.tau, 4);
  gl_.upload(&gradLoss, 4);
  Device loss(4), rowLse(size_t(c.B) * 4), colLse(size_t(c.B) * 4), dTau(4);
  const size_t es = elementSize(t);
  Device gq(size_t(c.B * c.dim) * es), gc(size_t(c.N * c.dim) * es);

  coltrast::kernels::ContrastiveArgs a;
  a.dtype = t;
  a.q = dq_.p;
  a.qStride = c.dim + c.pad;
  a.c = dc_.p;
  a.cStride = c.dim + c.pad;
  a.B = c.B;
  a.N = c.N;
  a.dim = c.dim;
  a.temperature = tau_.as<float>();
  a.symmetric = c.symmetric;
  if (t != DType::F32) {
    a.forwardResident = c.forwardResident;
    a.backwardSlice = c.backwardSlice;
  }
  std::printf("contrastive %s B=%lld N=%lld dim=%lld tau=%g%s%s", name(t), (long long)c.B, (long long)c.N,
              (long long)c.dim, c.tau, c.symmetric ? " symmetric" : "", c.pad ? " strided" : "");
  if (c.nearZero) std::printf(" (loss near 0)");
  if (a.forwardResident != 0 || a.backwardSlice != 0)
    std::printf(" (forced: forward %s, backward slice %d)", a.forwardResident > 0 ? "resident" : a.forwardResident < 0 ? "chunked" : "auto", a.backwardSlice);
  std::printf("\n");
  Device wsF(coltrast::kernels::contrastiveForwardWorkspaceBytes(a));
  loss.poison();
  rowLse.poison();
  colLse.poison();
  CHECK(coltrast::kernels::contrastiveForward(a, loss.as<float>(), rowLse.as<float>(), colLse.as<float>(), wsF.p,
                                              wsF.bytes, 0));
  CHECK(cudaDeviceSynchronize());

  // Reference, float64.
  const int64_t B = c.B, N = c.N, dim = c.dim;
  std::vector<double> logit(static_cast<size_t>(B * N));
  for (int64_t i = 0; i < B; ++i)
    for (int64_t k = 0; k < N; ++k) {
      double s = 0.0;
      for (int64_t x = 0; x < dim; ++x) s += double(q.values[i * dim + x]) * cm.values[k * dim + x];
      logit[i * N + k] = s / c.tau;
    }
  std::vector<double> rl(static_cast<size_t>(B)), cl(static_cast<size_t>(B));
  double lossRef = 0.0, colTerm = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    double m = -INFINITY, s = 0.0;
    for (int64_t k = 0; k < N; ++k) m = std::max(m, logit[i * N + k]);
    for (int64_t k = 0; k < N; ++k) s += std::exp(logit[i * N + k] - m);
    rl[i] = m + std::log(s);
    lossRef += rl[i] - logit[i * N + i];
  }
  lossRef /= double(B);
  if (c.symmetric) {
    for (int64_t j = 0; j < B; ++j) {
      double m = -INFINITY, s = 0.0;
      for (int64_t i = 0; i < B; ++i) m = std::max(m, logit[i * N + j]);
      for (int64_t i = 0; i < B; ++i) s += std::exp(logit[i * N + j] - m);
      cl[j] = m + std::log(s);
      colTerm += cl[j] - logit[j * N + j];
    }
    lossRef = 0.5 * (lossRef + colTerm / double(B));
  }
  const auto lossBytes = loss.download(), rowBytes = rowLse.download(), colBytes = colLse.download();
  const float* RL = reinterpret_cast<const float*>(rowBytes.data());
  const float* CL = reinterpret_cast<const float*>(colBytes.data());
  Error el, er, ec;
  el.add(*reinterpret_cast<const float*>(lossBytes.data()), lossRef);
  for (int64_t i = 0; i < B; ++i) er.add(RL[i], rl[i]);
  for (int64_t i = 0; i < B && c.symmetric; ++i) ec.add(CL[i], cl[i]);
  double lseScale = 0.0;  // the magnitude of the numbers the loss is a difference of
  for (int64_t i = 0; i < B; ++i) lseScale = std::max(lseScale, std::fabs(rl[i]));
  report("loss", el, 2e-5, lseScale);
  if (c.nearZero) {
    // The terms lse - positive come out of the kernels whole: a loss near 0 stays within float32's reach of 0,
    // not of the lse (float32's step at 100 is 7.6e-6).
    const double got = *reinterpret_cast<const float*>(lossBytes.data());
    char line[128];
    std::snprintf(line, sizeof line, "loss near 0: %.3e (float64 %.3e) within 1e-7, not negative", got, lossRef);
    expect(std::fabs(got - lossRef) <= 1e-7 && got >= 0.0, line);
  }
  report("rowLse", er, 2e-5);
  if (c.symmetric) report("colLse", ec, 2e-5);

  coltrast::kernels::ContrastiveGrads gr;
  gr.gradLoss = gl_.as<float>();
  gr.rowLse = rowLse.as<float>();
  gr.colLse = c.symmetric ? colLse.as<float>() : nullptr;
  gr.dq = gq.p;
  gr.dqStride = dim;
  gr.dc = gc.p;
  gr.dcStride = dim;
  gr.dTemperature = dTau.as<float>();
  Device wsB(coltrast::kernels::contrastiveBackwardWorkspaceBytes(a));
  std::vector<unsigned char> firstQ, firstC, firstT;
  for (int run = 0; run < 2; ++run) {
    gq.poison();
    gc.poison();
    dTau.poison();
    CHECK(coltrast::kernels::contrastiveBackward(a, gr, wsB.p, wsB.bytes, 0));
    CHECK(cudaDeviceSynchronize());
    if (run == 0) {
      firstQ = gq.download();
      firstC = gc.download();
      firstT = dTau.download();
    } else {
      expect(firstQ == gq.download() && firstC == gc.download() && firstT == dTau.download(),
             "backward is deterministic (two runs, same bits)");
    }
  }
  // The reference backward uses its own (float64) log-sum-exps.
  const double scale = double(gradLoss) / double(B) * (c.symmetric ? 0.5 : 1.0);
  std::vector<double> refQ(size_t(B * dim), 0.0), refC(size_t(N * dim), 0.0);
  double refTau = 0.0;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t k = 0; k < N; ++k) {
      const double l = logit[i * N + k], delta = i == k ? 1.0 : 0.0;
      double g = std::exp(l - rl[i]) - delta;
      if (c.symmetric && k < B) g += std::exp(l - cl[k]) - delta;
      g *= scale;
      refTau -= g * l / c.tau;
      for (int64_t x = 0; x < dim; ++x) {
        refQ[i * dim + x] += g * cm.values[k * dim + x] / c.tau;
        refC[k * dim + x] += g * q.values[i * dim + x] / c.tau;
      }
    }
  Error eq, ecg, et;
  for (size_t x = 0; x < refQ.size(); ++x) eq.add(readBack(t, firstQ.data() + x * es), refQ[x]);
  for (size_t x = 0; x < refC.size(); ++x) ecg.add(readBack(t, firstC.data() + x * es), refC[x]);
  et.add(*reinterpret_cast<const float*>(firstT.data()), refTau);
  // Scales: one logit's gradient contribution (a * c / tau), and a * sum_i |logit_ii| for dtau.
  double rms = 0.0, diag = 0.0;
  for (float v : cm.values) rms += double(v) * v;
  rms = std::sqrt(rms / double(cm.values.size()));
  for (int64_t i = 0; i < B; ++i) diag += std::fabs(logit[i * N + i]);
  report("dq", eq, gradTolerance(t), scale * rms / c.tau);
  report("dc", ecg, gradTolerance(t), scale * rms / c.tau);
  report("dtemperature", et, 1e-4, scale * diag / c.tau);
}

// ---- the contrastive loss's chunked strategy ---------------------------------------------------------
// Its kernels over float32 logits S (the product is cuBLAS's, in ops/contrastive_cuda.cc): row statistics and
// positives, column statistics folded chunk by chunk, the loss terms and log-sum-exps the op forms from them, and
// the logit gradient in every output dtype, against float64 on the same S. Chunks of `chunkRows` rows, row stride
// N + pad. nearZero: every positive is 1 and the other logits at most 0.5, so at a small tau the terms are 0 to
// float64's eye and must come out within 1e-7 of it, not 7.6e-6 (float32's step at an lse of 100).
void testContrastiveChunks(DType t, int64_t B, int64_t N, int64_t chunkRows, bool symmetric, float tau, int64_t pad,
                           uint64_t seed, bool nearZero = false) {
  Rng rng(seed);
  std::printf("contrastive chunks %s B=%lld N=%lld chunk rows %lld tau=%g%s%s\n", name(t), (long long)B, (long long)N,
              (long long)chunkRows, tau, symmetric ? " symmetric" : "", nearZero ? " (terms near 0)" : "");
  const int64_t ld = N + pad;
  // Logits of unit vectors: S in [-1, 1], the positive (k == i) higher.
  std::vector<float> S(size_t(B * ld), NAN);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t k = 0; k < N; ++k) {
      S[i * ld + k] = nearZero ? float(k == i ? 1.0 : 1.5 * rng.uniform() - 1.0)
                               : float(k == i ? 0.5 + 0.5 * rng.uniform() : 2.0 * rng.uniform() - 1.0);
    }
  Device chunk(size_t(chunkRows * ld) * 4), tau_(4), rowMax(size_t(B) * 4), rowSum(size_t(B) * 4);
  Device positive(size_t(B) * 4), rowLse(size_t(B) * 4), colMax(size_t(B) * 4), colSum(size_t(B) * 4);
  Device colLse(size_t(B) * 4);
  tau_.upload(&tau, 4);
  rowMax.poison();
  rowSum.poison();
  positive.poison();
  colMax.poison();
  CHECK(cudaMemset(colSum.p, 0, colSum.bytes));
  coltrast::kernels::LogitChunk ch;
  ch.ld = ld;
  ch.B = B;
  ch.N = N;
  ch.temperature = tau_.as<float>();
  ch.s = chunk.as<float>();
  for (int64_t r0 = 0; r0 < B; r0 += chunkRows) {
    ch.r0 = r0;
    ch.rows = std::min(chunkRows, B - r0);
    chunk.upload(S.data() + r0 * ld, size_t(ch.rows * ld) * 4);
    CHECK(coltrast::kernels::contrastiveChunkRows(ch, rowMax.as<float>(), rowSum.as<float>(), positive.as<float>(), 0));
    if (symmetric) CHECK(coltrast::kernels::contrastiveChunkColumns(ch, colMax.as<float>(), colSum.as<float>(), 0));
    CHECK(cudaDeviceSynchronize());
  }
  // float64: each row's and column's lse, and its term lse - positive as log(sum exp(logit - positive)).
  std::vector<double> rl(static_cast<size_t>(B)), cl(static_cast<size_t>(B)), rt(static_cast<size_t>(B)),
      ct(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    double m = -INFINITY, sum = 0.0, terms = 0.0;
    for (int64_t k = 0; k < N; ++k) m = std::max(m, double(S[i * ld + k]) / tau);
    for (int64_t k = 0; k < N; ++k) sum += std::exp(double(S[i * ld + k]) / tau - m);
    for (int64_t k = 0; k < N; ++k) terms += std::exp((double(S[i * ld + k]) - S[i * ld + i]) / tau);
    rl[i] = m + std::log(sum);
    rt[i] = std::log(terms);
  }
  for (int64_t j = 0; j < B; ++j) {
    double m = -INFINITY, sum = 0.0, terms = 0.0;
    for (int64_t i = 0; i < B; ++i) m = std::max(m, double(S[i * ld + j]) / tau);
    for (int64_t i = 0; i < B; ++i) sum += std::exp(double(S[i * ld + j]) / tau - m);
    for (int64_t i = 0; i < B; ++i) terms += std::exp((double(S[i * ld + j]) - S[j * ld + j]) / tau);
    cl[j] = m + std::log(sum);
    ct[j] = std::log(terms);
  }
  // What contrastive_cuda.cc forms from the statistics, in float32 as ATen does there: lse = (max + log2(sum)) ln 2
  // and term = ((max - positive2) + log2(sum)) ln 2 (ln 2 applied in float64, with the mean).
  const auto floats = [](const Device& d) {
    const auto bytes = d.download();
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), v.size() * 4);
    return v;
  };
  const std::vector<float> M = floats(rowMax), Sum = floats(rowSum), P = floats(positive);
  std::vector<float> rowLseHost(static_cast<size_t>(B)), colLseHost(static_cast<size_t>(B));
  Error er, ep, ert, ec, ect;
  double lowest = INFINITY;
  const float ln2 = float(std::log(2.0));
  for (int64_t i = 0; i < B; ++i) {
    const float logSum = std::log2(Sum[i]), term = (M[i] - P[i]) + logSum;
    rowLseHost[i] = (M[i] + logSum) * ln2;
    er.add(rowLseHost[i], rl[i]);
    ep.add(P[i], double(S[i * ld + i]) / tau * std::log2(std::exp(1.0)));
    ert.add(term * std::log(2.0), rt[i]);
    lowest = std::min(lowest, double(term));
  }
  report("rowLse", er, 2e-6);
  report("positive (base 2)", ep, 2e-7);
  // Relative, except where the terms are near 0: there within 1e-7 (the floor, times the tolerance) of float64.
  report("row terms (lse - positive)", ert, 1e-5, 1e-2);
  if (symmetric) {
    const std::vector<float> CM = floats(colMax), CS = floats(colSum);
    for (int64_t j = 0; j < B; ++j) {
      const float logSum = std::log2(CS[j]), term = (CM[j] - P[j]) + logSum;
      colLseHost[j] = (CM[j] + logSum) * ln2;
      ec.add(colLseHost[j], cl[j]);
      ect.add(term * std::log(2.0), ct[j]);
      lowest = std::min(lowest, double(term));
    }
    report("colLse (folded over chunks)", ec, 2e-6);
    report("column terms (folded over chunks)", ect, 1e-5, 1e-2);
    colLse.upload(colLseHost.data(), size_t(B) * 4);
  }
  expect(lowest >= 0.0, "no term is negative");
  rowLse.upload(rowLseHost.data(), size_t(B) * 4);
  // The gradient from the kernels' own statistics (what the backward uses), in dtype t, scale 2^14 for float16.
  const float scale = t == DType::F16 ? 16384.0f : 1.0f;
  const size_t es = elementSize(t);
  const int64_t ldOut = N + 3;
  Device out(size_t(chunkRows * ldOut) * es);
  Error eg;
  bool deterministic = true;
  for (int64_t r0 = 0; r0 < B; r0 += chunkRows) {
    ch.r0 = r0;
    ch.rows = std::min(chunkRows, B - r0);
    chunk.upload(S.data() + r0 * ld, size_t(ch.rows * ld) * 4);
    std::vector<unsigned char> first;
    for (int run = 0; run < 2; ++run) {
      out.poison();
      CHECK(coltrast::kernels::contrastiveChunkGrad(ch, rowLse.as<float>(), symmetric ? colLse.as<float>() : nullptr, t,
                                                    scale, out.p, ldOut, 0));
      CHECK(cudaDeviceSynchronize());
      if (run == 0) first = out.download();
      else deterministic = deterministic && first == out.download();
    }
    for (int64_t r = 0; r < ch.rows; ++r)
      for (int64_t k = 0; k < N; ++k) {
        const int64_t i = r0 + r;
        const double l = double(S[i * ld + k]) / tau, delta = k == i ? 1.0 : 0.0;
        double g = std::exp(l - rl[i]) - delta;
        if (symmetric && k < B) g += std::exp(l - cl[k]) - delta;
        eg.add(readBack(t, first.data() + size_t(r * ldOut + k) * es) / scale, g);
      }
  }
  // nearZero: every logit gradient is 0 to float64's eye (p = 1 at the positive, e^-50 elsewhere, which float16
  // flushes to 0); what remains is float32's rounding of p - 1 (exp2 of a difference of two numbers near 144, whose
  // step is 1.5e-5; where an FMA takes the scaled logit unrounded it is not exactly 0), so the error is measured
  // against 1, the size of p and of the target.
  report("dlogit", eg, t == DType::F32 ? 1e-5 : t == DType::F16 ? 2e-3 : 1e-2, nearZero ? 1.0 : 0.0);
  expect(deterministic, "dlogit is deterministic (two runs, same bits)");
}

// ---- benchmarks -----------------------------------------------------------------------------------
template <typename F>
double medianMs(F&& run, int reps) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  run();  // warm-up
  CHECK(cudaDeviceSynchronize());
  std::vector<float> times;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(start));
    run();
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void fillRandom(Device& buf, DType t, size_t count, Rng& rng, double scale) {
  std::vector<unsigned char> bytes;
  bytes.reserve(count * elementSize(t));
  for (size_t i = 0; i < count; ++i) roundTo(t, float(rng.normal() * scale), &bytes);
  buf.upload(bytes.data(), bytes.size());
}

void benchMaxSim(DType t) {
  const int64_t B = 32, N = 256, Lq = 32, Ld = 180, dim = 128;
  Rng rng(7);
  const size_t es = elementSize(t);
  Device q(size_t(B * Lq * dim) * es), d(size_t(N * Ld * dim) * es), qm(size_t(B * Lq)), dm(size_t(N * Ld));
  fillRandom(q, t, size_t(B * Lq * dim), rng, 1.0 / std::sqrt(double(dim)));
  fillRandom(d, t, size_t(N * Ld * dim), rng, 1.0 / std::sqrt(double(dim)));
  std::vector<uint8_t> qmask(size_t(B * Lq), 1), dmask(static_cast<size_t>(N * Ld));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t valid = 100 + rng.below(int(Ld - 100) + 1);
    for (int64_t j = 0; j < Ld; ++j) dmask[n * Ld + j] = j < valid;
  }
  qm.upload(qmask.data(), qmask.size());
  dm.upload(dmask.data(), dmask.size());
  Device scores(size_t(B * N) * 4), argmax(size_t(B * N * Lq) * 4), g(size_t(B * N) * 4);
  std::vector<float> ones(size_t(B * N), 1.0f);
  g.upload(ones.data(), ones.size() * 4);
  Device gq(size_t(B * Lq * dim) * es), gd(size_t(N * Ld * dim) * es);
  coltrast::kernels::MaxSimArgs a;
  a.dtype = t;
  a.q = q.p;
  a.qStrideL = dim;
  a.qStrideB = Lq * dim;
  a.qmask = qm.as<uint8_t>();
  a.qmaskStrideB = Lq;
  a.d = d.p;
  a.dStrideL = dim;
  a.dStrideN = Ld * dim;
  a.dmask = dm.as<uint8_t>();
  a.dmaskStrideN = Ld;
  a.B = B;
  a.N = N;
  a.Lq = Lq;
  a.Ld = Ld;
  a.dim = dim;
  coltrast::kernels::MaxSimGrads gr;
  gr.grad = g.as<float>();
  gr.argmax = argmax.as<int32_t>();
  gr.dq = gq.p;
  gr.dqStrideL = dim;
  gr.dqStrideB = Lq * dim;
  gr.dd = gd.p;
  gr.ddStrideL = dim;
  gr.ddStrideN = Ld * dim;
  Device ws(coltrast::kernels::maxsimBackwardWorkspaceBytes(a));
  auto fwd = [&] { CHECK(coltrast::kernels::maxsimForward(a, scores.as<float>(), argmax.as<int32_t>(), 0)); };
  auto bwd = [&] { CHECK(coltrast::kernels::maxsimBackward(a, gr, ws.p, ws.bytes, 0)); };
  const double f = medianMs(fwd, 50), b = medianMs(bwd, 50), fb = medianMs([&] { fwd(); bwd(); }, 50);
  const double flops = 2.0 * B * N * Lq * Ld * dim;
  std::printf("BENCH {\"op\":\"maxsim\",\"impl\":\"coltrast-kernels\",\"dtype\":\"%s\",\"B\":%lld,\"N\":%lld,\"Lq\":%lld,"
              "\"Ld\":%lld,\"dim\":%lld,\"forward_ms\":%.4f,\"backward_ms\":%.4f,\"median_ms\":%.4f,"
              "\"forward_tflops\":%.1f,\"extra_MiB\":%.2f}\n",
              name(t), (long long)B, (long long)N, (long long)Lq, (long long)Ld, (long long)dim, f, b, fb,
              flops / (f * 1e-3) / 1e12, (argmax.bytes + scores.bytes + ws.bytes) / 1048576.0);
}

void benchContrastive(DType t, int64_t n, int64_t dim, bool symmetric, int reps, int forwardResident = 0,
                      int backwardSlice = 0) {
  Rng rng(11);
  const size_t es = elementSize(t);
  Device q(size_t(n * dim) * es), c(size_t(n * dim) * es);
  fillRandom(q, t, size_t(n * dim), rng, 1.0 / std::sqrt(double(dim)));
  fillRandom(c, t, size_t(n * dim), rng, 1.0 / std::sqrt(double(dim)));
  const float tau = 0.05f, one = 1.0f;
  Device tau_(4), g(4), loss(4), rowLse(size_t(n) * 4), colLse(size_t(n) * 4), dTau(4);
  tau_.upload(&tau, 4);
  g.upload(&one, 4);
  Device gq(size_t(n * dim) * es), gc(size_t(n * dim) * es);
  coltrast::kernels::ContrastiveArgs a;
  a.dtype = t;
  a.q = q.p;
  a.qStride = dim;
  a.c = c.p;
  a.cStride = dim;
  a.B = n;
  a.N = n;
  a.dim = dim;
  a.temperature = tau_.as<float>();
  a.symmetric = symmetric;
  a.forwardResident = forwardResident;
  a.backwardSlice = backwardSlice;
  coltrast::kernels::ContrastiveGrads gr;
  gr.gradLoss = g.as<float>();
  gr.rowLse = rowLse.as<float>();
  gr.colLse = colLse.as<float>();
  gr.dq = gq.p;
  gr.dqStride = dim;
  gr.dc = gc.p;
  gr.dcStride = dim;
  gr.dTemperature = dTau.as<float>();
  Device wsF(coltrast::kernels::contrastiveForwardWorkspaceBytes(a)), wsB(coltrast::kernels::contrastiveBackwardWorkspaceBytes(a));
  auto fwd = [&] {
    CHECK(coltrast::kernels::contrastiveForward(a, loss.as<float>(), rowLse.as<float>(), colLse.as<float>(), wsF.p,
                                                wsF.bytes, 0));
  };
  auto bwd = [&] { CHECK(coltrast::kernels::contrastiveBackward(a, gr, wsB.p, wsB.bytes, 0)); };
  const double f = medianMs(fwd, reps), b = medianMs(bwd, reps), fb = medianMs([&] { fwd(); bwd(); }, reps);
  float lossValue = 0.0f;
  CHECK(cudaMemcpy(&lossValue, loss.p, 4, cudaMemcpyDeviceToHost));
  const double gemm = 2.0 * double(n) * double(n) * double(dim);
  std::printf("BENCH {\"op\":\"contrastive\",\"impl\":\"coltrast-kernels\",\"dtype\":\"%s\",\"B\":%lld,\"N\":%lld,"
              "\"dim\":%lld,\"symmetric\":%s,\"forward_tiling\":\"%s\",\"backward_slice\":%d,\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"median_ms\":%.3f,"
              "\"forward_tflops\":%.1f,\"backward_tflops_4gemm\":%.1f,\"extra_MiB\":%.2f,\"loss\":%.6f}\n",
              name(t), (long long)n, (long long)n, (long long)dim, symmetric ? "true" : "false",
              forwardResident > 0 ? "resident" : forwardResident < 0 ? "chunked" : "auto", backwardSlice, f, b, fb,
              gemm * (symmetric ? 1.0 : 1.0) / (f * 1e-3) / 1e12, 4.0 * gemm / (b * 1e-3) / 1e12,
              (rowLse.bytes + colLse.bytes + wsF.bytes + wsB.bytes) / 1048576.0, lossValue);
  if (!std::isfinite(lossValue)) {
    ++failures;
    std::printf("FAIL contrastive bench loss is not finite\n");
  }
}

// The chunked strategy's kernels on one chunk at the issue's shape (N = 16,384; 2,688 rows: what ops picks for
// bfloat16 within 256 MiB): each is a pass over the float32 chunk, so the figure is its bandwidth, in GB/s of the
// bytes it must move, next to the device's copy bandwidth (cudaMemcpy device to device of the same chunk).
void benchChunks(DType t, int64_t N, int64_t rows, int reps) {
  Rng rng(12);
  const int64_t B = N;
  Device S(size_t(rows * N) * 4), out(size_t(rows * N) * elementSize(t)), copy(size_t(rows * N) * 4);
  fillRandom(S, DType::F32, size_t(rows * N), rng, 0.05);
  const float tau = 0.05f;
  std::vector<float> zeros(size_t(B), 0.0f);
  Device tau_(4), rowLse(size_t(B) * 4), positive(size_t(B) * 4), colMax(size_t(B) * 4), colSum(size_t(B) * 4);
  Device rowMax(size_t(B) * 4), rowSum(size_t(B) * 4);
  tau_.upload(&tau, 4);
  rowLse.upload(zeros.data(), size_t(B) * 4);
  colSum.upload(zeros.data(), size_t(B) * 4);
  coltrast::kernels::LogitChunk ch;
  ch.s = S.as<float>();
  ch.ld = N;
  ch.r0 = 0;
  ch.rows = rows;
  ch.B = B;
  ch.N = N;
  ch.temperature = tau_.as<float>();
  const double chunkBytes = double(rows) * double(N) * 4.0;
  const double copyMs = medianMs([&] { CHECK(cudaMemcpy(copy.p, S.p, size_t(chunkBytes), cudaMemcpyDeviceToDevice)); }, reps);
  const double rowsMs = medianMs([&] { CHECK(coltrast::kernels::contrastiveChunkRows(ch, rowMax.as<float>(), rowSum.as<float>(), positive.as<float>(), 0)); }, reps);
  const double colsMs = medianMs([&] { CHECK(coltrast::kernels::contrastiveChunkColumns(ch, colMax.as<float>(), colSum.as<float>(), 0)); }, reps);
  const double gradMs = medianMs([&] {
    CHECK(coltrast::kernels::contrastiveChunkGrad(ch, rowLse.as<float>(), rowLse.as<float>(), t, 1.0f, out.p, N, 0));
  }, reps);
  const double gradBytes = chunkBytes * (1.0 + double(elementSize(t)) / 4.0);
  std::printf("BENCH {\"op\":\"contrastive-chunk-kernels\",\"dtype\":\"%s\",\"rows\":%lld,\"N\":%lld,\"copy_GBps\":%.0f,"
              "\"rows_ms\":%.3f,\"rows_GBps\":%.0f,\"columns_ms\":%.3f,\"columns_GBps\":%.0f,\"grad_symmetric_ms\":%.3f,\"grad_GBps\":%.0f}\n",
              name(t), (long long)rows, (long long)N, 2.0 * chunkBytes / (copyMs * 1e6), rowsMs, chunkBytes / (rowsMs * 1e6),
              colsMs, chunkBytes / (colsMs * 1e6), gradMs, gradBytes / (gradMs * 1e6));
}

}  // namespace

int main(int argc, char** argv) {
  bool bench = false, big = false, quick = false, profile = false;
  for (int i = 1; i < argc; ++i) {
    bench = bench || std::strcmp(argv[i], "--bench") == 0;
    big = big || std::strcmp(argv[i], "--big") == 0;
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    profile = profile || std::strcmp(argv[i], "--profile") == 0;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs, %zu KB shared memory per block opt-in)\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, prop.sharedMemPerBlockOptin / 1024);

  if (profile) {
    benchContrastive(DType::BF16, 16384, 384, false, 3);
    return failures == 0 ? 0 : 1;
  }
  const DType types[] = {DType::F32, DType::F16, DType::BF16};
  const MaxSimCase maxsimCases[] = {
      {3, 5, 7, 13, 40, false, false, 0, false},      // everything smaller than a tile
      {5, 70, 33, 130, 100, false, true, 0, false},   // dim % 8 != 0 (16-bit: element-wise staging), 3 tiles per doc
      {4, 9, 64, 64, 128, false, false, 8, true},     // exact tiles; strided rows; exact ties
      {2, 3, 100, 70, 136, false, true, 0, false},    // Lq > 64: a query split over two row blocks
      {6, 6, 17, 200, 64, true, true, 0, false},      // paired
      {3, 4, 5, 19, 1030, false, false, 0, false},    // wide embedding: chunked, queries streamed
      {9, 130, 8, 9, 24, false, false, 3, false},     // odd stride (element-wise staging)
      {3, 1600, 20, 10, 32, false, true, 0, true},    // several documents per CTA
      {1, 1200, 130, 5, 16, false, false, 0, false},  // several documents per CTA, query split in three
      {3, 3, 150, 66, 48, true, false, 0, true},      // paired, Lq > 64, 2 tiles per doc
      {1, 1, 1, 1, 8, false, true, 0, false},         // one of everything
      {70, 3, 33, 70, 40, false, false, 0, false},    // B * Lq = 2,310 > kEntryChunk: dD stages its entries twice
  };
  const ContrastiveCase contrastiveCases[] = {
      {1, 1, 8, false, 0.05f, 0},       // one query, one candidate
      {70, 200, 384, false, 0.05f, 0},  // the issue's dim, resident slice
      {65, 130, 40, true, 0.1f, 0},     // symmetric, small dim
      {33, 100, 777, true, 0.05f, 0},   // wide, odd dim: several slices
      {64, 64, 1024, false, 1.0f, 0},   // dim 1024
      {20, 45, 96, true, 0.07f, 5},     // strided, odd stride
      {50, 77, 64, true, 0.01f, 0},     // sharp softmax (logits up to 100)
      {70, 200, 384, false, 0.05f, 0, 1, 128},  // forced: forward resident, backward in three slices
      {70, 130, 384, true, 0.05f, 0, -1, 256},  // forced: forward chunked, backward in two slices
      {33, 70, 40, true, 0.1f, 0, -1, 384},     // forced: forward chunked in one chunk, backward slice wider than dim
      {33, 45, 97, true, 0.01f, 0, 0, 0, true},   // loss near 0: positives = queries, logits up to 100, odd sizes
      {33, 45, 97, false, 0.01f, 0, 0, 0, true},  // the same without the column pass
  };
  // --quick (the compute-sanitizer workload): the cases that cover every kernel variant.
  const bool quickMaxSim[] = {true, false, true, true, true, true, false, false, false, true, false, true};
  const bool quickContrastive[] = {true, true, true, true, false, false, false, true, true, true, true, false};
  uint64_t seed = 1;
  for (DType t : types) {
    for (size_t i = 0; i < sizeof(maxsimCases) / sizeof(maxsimCases[0]); ++i, ++seed)
      if (!quick || quickMaxSim[i]) testMaxSim(t, maxsimCases[i], seed);
    for (size_t i = 0; i < sizeof(contrastiveCases) / sizeof(contrastiveCases[0]); ++i, ++seed)
      if (!quick || quickContrastive[i]) testContrastive(t, contrastiveCases[i], seed);
    testContrastiveChunks(t, 33, 70, 7, true, 0.05f, 3, seed++);      // odd chunks, the last one short
    testContrastiveChunks(t, 20, 1500, 20, false, 0.02f, 0, seed++);  // one chunk, long rows (several CTAs per row)
    testContrastiveChunks(t, 40, 40, 16, true, 0.1f, 1, seed++);      // B = N, more than 32 columns
    testContrastiveChunks(t, 33, 45, 7, true, 0.01f, 0, seed++, true);  // sharp (logits up to 100), terms near 0
  }
  if (bench) {
    for (DType t : {DType::BF16, DType::F16, DType::F32}) benchMaxSim(t);
    for (DType t : {DType::BF16, DType::F32}) benchContrastive(t, 16384, 384, false, t == DType::F32 ? 3 : 20);
    benchContrastive(DType::BF16, 16384, 384, true, 20);
    // The other tilings at the issue's shape (the automatic choice at dim 384: forward chunked, one 384-wide
    // backward slice): which one a GPU runs fastest.
    benchContrastive(DType::BF16, 16384, 384, false, 20, 1, 128);
    benchContrastive(DType::BF16, 16384, 384, false, 20, 1, 256);
    for (DType t : {DType::BF16, DType::F32}) benchChunks(t, 16384, 2688, 20);
    if (big) benchContrastive(DType::BF16, 262144, 384, false, 1);
  }
  std::printf(failures == 0 ? "all kernel checks passed\n" : "%d kernel check(s) FAILED\n", failures);
  return failures == 0 ? 0 : 1;
}
