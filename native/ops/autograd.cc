// Input checks, backend choice and autograd wrappers for the loss operations (see autograd.h).
#include "ops/autograd.h"

#include <torch/autograd.h>

#include <cstdlib>
#include <limits>
#include <sstream>

#include "error.h"
#include "ops/reference.h"

namespace coltrast::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::string shapeOf(const at::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

[[noreturn]] void fail(const std::string& message) { throw invalidArgument(message); }

void checkFloat(const char* name, const at::Tensor& t) {
  const auto type = t.scalar_type();
  if (type != at::kFloat && type != at::kHalf && type != at::kBFloat16) {
    fail(std::string(name) + " must be float32, float16 or bfloat16; got " + std::string(c10::toString(type)));
  }
}

void checkSameDevice(const at::Tensor& a, const at::Tensor& b, const char* nameA, const char* nameB) {
  if (a.device() != b.device()) {
    fail(std::string(nameA) + " is on " + a.device().str() + " but " + nameB + " is on " + b.device().str());
  }
}

at::Tensor maskOf(const char* name, const at::Tensor& mask, int64_t rows, int64_t cols, const at::Tensor& like) {
  if (mask.dim() != 2 || mask.size(0) != rows || mask.size(1) != cols) {
    fail(std::string(name) + " must have shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]; got " +
         shapeOf(mask));
  }
  if (at::isFloatingType(mask.scalar_type()) || at::isComplexType(mask.scalar_type())) {
    fail(std::string(name) + " must be an integer or bool tensor (nonzero = valid token)");
  }
  checkSameDevice(mask, like, name, "the embeddings");
  return mask.ne(0).to(at::kByte).contiguous();
}

// Throws DEVICE where the inputs are on a GPU this build cannot run; returns whether they are on one.
bool onCuda(const at::Tensor& t) {
  if (!t.is_cuda()) {
    if (!t.is_cpu()) fail("coltrast's loss operations run on CPU or CUDA tensors; got " + t.device().str());
    return false;
  }
#ifdef COLTRAST_WITH_CUDA
  return true;
#else
  throw Error("DEVICE",
              "this build of coltrast has no CUDA kernels (its libtorch has no CUDA); build against a CUDA libtorch "
              "(LIBTORCH=... or a CUDA Python torch) to run the loss operations on a GPU");
#endif
}

struct MaxSimInputs {
  at::Tensor q, qmask, d, dmask;
};

MaxSimInputs checkMaxSim(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                         const MaxSimOptions& options) {
  if (q.dim() != 3) fail("q must have shape [B, Lq, dim]; got " + shapeOf(q));
  if (d.dim() != 3) fail("d must have shape [N, Ld, dim]; got " + shapeOf(d));
  checkFloat("q", q);
  checkFloat("d", d);
  if (q.scalar_type() != d.scalar_type()) fail("q and d must have the same dtype");
  checkSameDevice(q, d, "q", "d");
  if (q.size(2) != d.size(2)) {
    fail("q and d must have the same embedding size; got " + std::to_string(q.size(2)) + " and " + std::to_string(d.size(2)));
  }
  if (q.size(0) < 1 || q.size(1) < 1 || d.size(0) < 1 || d.size(1) < 1 || q.size(2) < 1) {
    fail("q " + shapeOf(q) + " and d " + shapeOf(d) + " must have no empty dimension");
  }
  if (options.paired && q.size(0) != d.size(0)) {
    fail("paired mode needs as many documents as queries; got B = " + std::to_string(q.size(0)) +
         ", N = " + std::to_string(d.size(0)));
  }
  return {q.contiguous(), maskOf("qmask", qmask, q.size(0), q.size(1), q), d.contiguous(),
          maskOf("dmask", dmask, d.size(0), d.size(1), d)};
}

at::Tensor checkTemperature(const at::Tensor& temperature, const at::Tensor& like) {
  if (temperature.numel() != 1) fail("temperature must be a scalar tensor; got shape " + shapeOf(temperature));
  if (!at::isFloatingType(temperature.scalar_type())) fail("temperature must be a floating-point tensor");
  const double value = temperature.item<double>();
  // The backends compute 1 / temperature in float32: below float's normal range it overflows (NaN losses).
  if (!(value >= std::numeric_limits<float>::min()) || !std::isfinite(value)) {
    std::ostringstream got;
    got << value;
    fail("temperature must be > 0 and finite, at least 1.2e-38 (float32's normal range); got " + got.str());
  }
  return temperature.reshape({}).to(like.device(), at::kFloat);
}

class MaxSimFunction : public torch::autograd::Function<MaxSimFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                            const at::Tensor& dmask, bool paired, bool normalize) {
    const MaxSimOptions options{paired, normalize};
    MaxSimResult r;
#ifdef COLTRAST_WITH_CUDA
    if (q.is_cuda()) r = maxsimForwardCuda(q, qmask, d, dmask, options);
    else
#endif
      r = maxsimForwardCpu(q, qmask, d, dmask, options);
    ctx->save_for_backward({q, qmask, d, r.argmax});
    ctx->saved_data["paired"] = paired;
    ctx->saved_data["normalize"] = normalize;
    return r.scores;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const MaxSimOptions options{ctx->saved_data["paired"].toBool(), ctx->saved_data["normalize"].toBool()};
    const at::Tensor g = grads[0].to(at::kFloat).contiguous();
    std::tuple<at::Tensor, at::Tensor> r;
#ifdef COLTRAST_WITH_CUDA
    if (saved[0].is_cuda()) r = maxsimBackwardCuda(g, saved[0], saved[1], saved[2], saved[3], options);
    else
#endif
      r = maxsimBackwardCpu(g, saved[0], saved[1], saved[2], saved[3], options);
    return {std::get<0>(r), at::Tensor(), std::get<1>(r), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class ContrastiveFunction : public torch::autograd::Function<ContrastiveFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& c,
                            const at::Tensor& temperature, bool symmetric, int64_t strategy, int64_t chunkRows) {
    const ContrastiveOptions options{symmetric, ContrastiveOptions::Strategy(strategy), chunkRows};
    ContrastiveResult r;
#ifdef COLTRAST_WITH_CUDA
    if (q.is_cuda()) r = contrastiveForwardCuda(q, c, temperature, options);
    else
#endif
      r = contrastiveForwardCpu(q, c, temperature, options);
    ctx->save_for_backward({q, c, temperature, r.rowLse, symmetric ? r.colLse : at::Tensor(), r.logits});
    ctx->saved_data["symmetric"] = symmetric;
    ctx->saved_data["strategy"] = strategy;
    ctx->saved_data["chunkRows"] = chunkRows;
    return r.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const ContrastiveOptions options{ctx->saved_data["symmetric"].toBool(),
                                     ContrastiveOptions::Strategy(ctx->saved_data["strategy"].toInt()),
                                     ctx->saved_data["chunkRows"].toInt()};
    ContrastiveResult stats;
    stats.rowLse = saved[3];
    stats.colLse = saved[4];
    stats.logits = saved[5];
    const at::Tensor g = grads[0].to(at::kFloat);
    std::tuple<at::Tensor, at::Tensor, at::Tensor> r;
#ifdef COLTRAST_WITH_CUDA
    if (saved[0].is_cuda()) r = contrastiveBackwardCuda(g, saved[0], saved[1], saved[2], stats, options);
    else
#endif
      r = contrastiveBackwardCpu(g, saved[0], saved[1], saved[2], stats, options);
    at::Tensor dTemperature = std::get<2>(r).to(saved[2].scalar_type());
    return {std::get<0>(r), std::get<1>(r), dTemperature, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool referenceOpsDefault() {
  static const bool on = [] {
    const char* value = std::getenv("COLTRAST_REFERENCE_OPS");
    return value != nullptr && std::string(value) != "" && std::string(value) != "0";
  }();
  return on;
}

ContrastiveOptions::Strategy contrastiveStrategyDefault() {
  using Strategy = ContrastiveOptions::Strategy;
  static const Strategy strategy = [] {
    const char* value = std::getenv("COLTRAST_CONTRASTIVE_STRATEGY");
    const std::string v = value ? value : "";
    if (v == "" || v == "auto") return Strategy::Auto;
    if (v == "fused") return Strategy::Fused;
    if (v == "chunked") return Strategy::Chunked;
    throw invalidArgument("COLTRAST_CONTRASTIVE_STRATEGY must be 'fused', 'chunked' or 'auto' (or unset); got '" + v + "'");
  }();
  return strategy;
}

at::Tensor maxsim(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                  const MaxSimOptions& options, std::optional<bool> reference) {
  const MaxSimInputs in = checkMaxSim(q, qmask, d, dmask, options);
  onCuda(in.q);  // DEVICE error before any work when this build cannot run them
  if (reference.value_or(referenceOpsDefault())) return maxsimReference(in.q, in.qmask, in.d, in.dmask, options);
  return MaxSimFunction::apply(in.q, in.qmask, in.d, in.dmask, options.paired, options.normalizeByQueryLength);
}

at::Tensor contrastiveLoss(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                           const ContrastiveOptions& options, std::optional<bool> reference) {
  if (q.dim() != 2) fail("q must have shape [B, dim]; got " + shapeOf(q));
  if (c.dim() != 2) fail("c must have shape [N, dim]; got " + shapeOf(c));
  checkFloat("q", q);
  checkFloat("c", c);
  if (q.scalar_type() != c.scalar_type()) fail("q and c must have the same dtype");
  checkSameDevice(q, c, "q", "c");
  if (q.size(1) != c.size(1)) {
    fail("q and c must have the same embedding size; got " + std::to_string(q.size(1)) + " and " + std::to_string(c.size(1)));
  }
  if (q.size(0) < 1 || q.size(1) < 1) fail("q must have at least one row and one column; got " + shapeOf(q));
  if (c.size(0) < q.size(0)) {
    fail("c needs at least B = " + std::to_string(q.size(0)) + " rows (the positives come first); got " +
         std::to_string(c.size(0)));
  }
  const at::Tensor tau = checkTemperature(temperature, q);
  onCuda(q);
  if (reference.value_or(referenceOpsDefault())) return contrastiveReference(q, c, tau, options);
  // Read here, on every device, so a misspelt value is an error even where only CUDA would use it.
  if (options.strategy == ContrastiveOptions::Strategy::Auto) contrastiveStrategyDefault();
  if (options.chunkRows < 0) fail("chunkRows must be 0 (automatic) or positive; got " + std::to_string(options.chunkRows));
  return ContrastiveFunction::apply(q.contiguous(), c.contiguous(), tau, options.symmetric,
                                    int64_t(options.strategy), options.chunkRows);
}

at::Tensor lateInteractionLoss(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                               const at::Tensor& dmask, const at::Tensor& temperature,
                               const LateInteractionOptions& options, std::optional<bool> reference) {
  if (q.dim() == 3 && d.dim() == 3 && d.size(0) < q.size(0)) {
    fail("d needs at least B = " + std::to_string(q.size(0)) + " documents (the positives come first); got " +
         std::to_string(d.size(0)));
  }
  const at::Tensor tau = checkTemperature(temperature, q);
  // The [B, N] score matrix is small next to the token tensors, so the loss on top of it is plain ATen.
  const at::Tensor scores = maxsim(q, qmask, d, dmask, {false, options.normalizeByQueryLength}, reference);
  const int64_t B = scores.size(0), N = scores.size(1);
  const at::Tensor logits = scores / tau;
  const at::Tensor target = at::arange(B, scores.options().dtype(at::kLong));
  if (options.kind == LateInteractionOptions::Kind::CrossEntropy) {
    at::Tensor loss = at::cross_entropy_loss(logits, target);
    if (options.symmetric) loss = 0.5 * (loss + at::cross_entropy_loss(logits.narrow(1, 0, B).t(), target));
    return loss;
  }
  const at::Tensor labels = at::eye(B, N, scores.options());
  const at::Tensor perPair = at::binary_cross_entropy_with_logits(logits, labels, {}, {}, at::Reduction::None);
  const at::Tensor positives = (perPair * labels).sum() / double(B);
  if (N == 1) return positives;  // B = N = 1: no negatives to average
  const at::Tensor negatives = (perPair * (1 - labels)).sum() / double(B * N - B);
  return 0.5 * (positives + negatives);
}

}  // namespace coltrast::ops
