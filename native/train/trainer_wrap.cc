// The JS class `NativeTrainer`: one optimizer step of ColTrast fine-tuning per call, entirely in native
// code on a worker thread: forward of the queries and the documents, the weighted sum of the in-batch
// contrastive loss on pooled, L2-normalized vectors and the late-interaction loss on L2-normalized token
// states (both through the fused ops of native/ops), backward, gradient clipping and an AdamW update.
// TypeScript (lib/train.ts) owns data, batching, the learning-rate schedule and everything per epoch.
// With mixed precision (train/precision.h) the forward pass runs under autocast and, for float16, the
// loss is scaled for backward and the step skipped when the gradients overflowed.
#include "train/trainer_wrap.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "encoder_wrap.h"
#include "error.h"
#include "ops/autograd.h"
#include "train/precision.h"
#include "napi_args.h"
#include "pooling.h"
#include "safetensors.h"
#include "promise_worker.h"
#include "runtime.h"

namespace coltrast {
namespace {

namespace F = torch::nn::functional;

struct StepOptions {
  std::string pooling = "mean";
  double contrastiveWeight = 0.5, lateInteractionWeight = 0.5, temperature = 0.05;
  bool symmetric = false, bce = false;
  double learningRate = 2e-5, maxGradNorm = 1.0, lossScale = 1.0;
  bool apply = true;  // false: accumulate gradients only (gradient accumulation)
};

StepOptions readStepOptions(const Napi::Object& o) {
  StepOptions s;
  s.pooling = stringOr(o, "pooling", s.pooling);
  s.contrastiveWeight = numberOr(o, "contrastiveWeight", s.contrastiveWeight);
  s.lateInteractionWeight = numberOr(o, "lateInteractionWeight", s.lateInteractionWeight);
  s.temperature = numberOr(o, "temperature", s.temperature);
  s.symmetric = boolOr(o, "symmetric", s.symmetric);
  s.bce = stringOr(o, "lateInteractionKind", "cross_entropy") == "bce";
  s.learningRate = numberOr(o, "learningRate", s.learningRate);
  s.maxGradNorm = numberOr(o, "maxGradNorm", s.maxGradNorm);
  s.lossScale = numberOr(o, "lossScale", s.lossScale);
  s.apply = boolOr(o, "apply", s.apply);
  return s;
}

struct LossParts {
  double total = 0, contrastive = 0, lateInteraction = 0, gradNorm = 0;
  bool skipped = false;  // float16: the gradients overflowed and the update was not applied
};

// The two losses of one batch, differentiable when grad mode is on. The model (and the projection head)
// run under autocast when `autocast` is a lower precision; the losses take float32 inputs, except the
// late-interaction loss on a GPU (below), and compute in float32.
std::pair<torch::Tensor, LossParts> batchLoss(LoadedEncoder& enc, const TokenBatch& q, const TokenBatch& d,
                                              const StepOptions& s, torch::ScalarType autocast) {
  const torch::Tensor qMask = q.tensor(q.mask, enc.device), dMask = d.tensor(d.mask, enc.device);
  torch::Tensor qStates, dStates, qPooled, dPooled;
  {
    AutocastScope scope(enc.device, autocast);
    qStates = enc.model->forward(q.tensor(q.ids, enc.device), qMask, q.tensor(q.types, enc.device));
    dStates = enc.model->forward(d.tensor(d.ids, enc.device), dMask, d.tensor(d.types, enc.device));
    if (s.contrastiveWeight > 0) {
      qPooled = enc.project(pool(qStates, qMask, s.pooling));
      dPooled = enc.project(pool(dStates, dMask, s.pooling));
    }
  }
  const torch::Tensor tau = torch::full({}, s.temperature, torch::TensorOptions().device(enc.device));
  const auto unit = F::NormalizeFuncOptions().dim(-1);
  torch::Tensor total = torch::zeros({}, torch::TensorOptions().device(enc.device));
  LossParts parts;
  if (s.contrastiveWeight > 0) {
    const torch::Tensor qp = F::normalize(qPooled.to(torch::kFloat32), unit);
    const torch::Tensor dp = F::normalize(dPooled.to(torch::kFloat32), unit);
    const torch::Tensor loss = ops::contrastiveLoss(qp, dp, tau, {s.symmetric});
    parts.contrastive = loss.item<double>();
    total = total + s.contrastiveWeight * loss;
  }
  if (s.lateInteractionWeight > 0) {
    // Normalized in float32. With mixed precision on a GPU the fused MaxSim kernels then take the token
    // vectors in the autocast dtype, which runs their products on the tensor cores (accumulating in
    // float32); on the CPU they stay float32.
    const torch::ScalarType tokens = enc.device.is_cuda() ? autocast : torch::kFloat32;
    const torch::Tensor qt = F::normalize(qStates.to(torch::kFloat32), unit).to(tokens);
    const torch::Tensor dt = F::normalize(dStates.to(torch::kFloat32), unit).to(tokens);
    ops::LateInteractionOptions late;
    late.kind = s.bce ? ops::LateInteractionOptions::Kind::Bce : ops::LateInteractionOptions::Kind::CrossEntropy;
    late.normalizeByQueryLength = true;
    late.symmetric = s.symmetric;
    const torch::Tensor loss = ops::lateInteractionLoss(qt, qMask.to(torch::kUInt8), dt, dMask.to(torch::kUInt8), tau, late);
    parts.lateInteraction = loss.item<double>();
    total = total + s.lateInteractionWeight * loss;
  }
  parts.total = total.item<double>();
  return {total, parts};
}

// Steps of all trainers in the process take turns with the global generator.
std::mutex& rngMutex() {
  static std::mutex m;
  return m;
}

// Holds the global CPU generator on `state` for the guard's lifetime and saves where it got to.
class RngScope {
 public:
  explicit RngScope(at::Tensor& state) : lock_(rngMutex()), state_(state), generator_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> g(generator_.mutex());
    generator_.set_state(state_);
  }
  ~RngScope() {
    std::lock_guard<std::mutex> g(generator_.mutex());
    state_ = generator_.get_state();
  }

 private:
  std::lock_guard<std::mutex> lock_;
  at::Tensor& state_;
  at::Generator generator_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<TrainerState> state, TokenBatch q, TokenBatch d, StepOptions options,
             bool train)
      : PromiseWorker(env), state_(std::move(state)), q_(std::move(q)), d_(std::move(d)), options_(options), train_(train) {}

 protected:
  void compute() override {
    const auto started = std::chrono::steady_clock::now();
    LoadedEncoder& enc = *state_->encoder;
    std::lock_guard<std::mutex> lock(enc.mutex);
    if (!train_) {
      torch::NoGradGuard noGrad;
      enc.model->eval();
      parts_ = batchLoss(enc, q_, d_, options_, state_->autocast).second;
    } else {
      RngScope rng(state_->rngState);
      enc.model->train();
      try {
        trainStep(enc);
      } catch (...) {
        // A step that failed part-way (out of memory in backward, say) must not leave its partial
        // gradients for the next one to add to; gradients accumulated by earlier batches go too.
        state_->optimizer->zero_grad();
        enc.model->eval();
        throw;
      }
      enc.model->eval();
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  void trainStep(LoadedEncoder& enc) {
    GradScaler& scaler = state_->scaler;
    auto [loss, parts] = batchLoss(enc, q_, d_, options_, state_->autocast);
    (loss * (options_.lossScale * scaler.lossFactor())).backward();
    parts_ = parts;
    if (!options_.apply) return;
    auto params = enc.parameters();
    scaler.unscale(params);
    parts_.gradNorm = torch::nn::utils::clip_grad_norm_(
        params, options_.maxGradNorm > 0 ? options_.maxGradNorm : std::numeric_limits<double>::infinity());
    const bool finite = std::isfinite(parts_.gradNorm);
    if (!finite && !scaler.enabled) {
      state_->optimizer->zero_grad();
      throw invalidArgument(std::string("the gradient norm is ") + (std::isnan(parts_.gradNorm) ? "NaN" : "infinite") +
                            " at step " + std::to_string(state_->steps + 1) +
                            ": training diverged (lower options.learningRate, keep gradient clipping on, or train in float32)");
    }
    if (finite) {
      for (auto& group : state_->optimizer->param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(options_.learningRate);
      }
      state_->optimizer->step();
    }
    parts_.skipped = !finite;
    scaler.update(finite);
    state_->optimizer->zero_grad();
    state_->steps++;
  }
  Napi::Value result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("loss", parts_.total);
    out.Set("contrastive", parts_.contrastive);
    out.Set("lateInteraction", parts_.lateInteraction);
    out.Set("gradNorm", parts_.gradNorm);
    out.Set("skipped", parts_.skipped);
    out.Set("gradScale", state_->scaler.lossFactor());
    out.Set("seconds", seconds_);
    return out;
  }

 private:
  std::shared_ptr<TrainerState> state_;
  TokenBatch q_, d_;
  StepOptions options_;
  bool train_;
  LossParts parts_;
  double seconds_ = 0;  // wall time of compute(), for the caller's measure of its own overhead
};

// Optimizer and random-number state as safetensors (never pickle): for parameter i (in
// LoadedEncoder::parameters() order: the model's, then the projection head's) "adamw.i.exp_avg",
// "adamw.i.exp_avg_sq" and "adamw.i.step", plus "rng" and "steps", and with float16's loss scaling
// "scaler.scale" and "scaler.growth_tracker".
class StateWorker : public PromiseWorker {
 public:
  StateWorker(Napi::Env env, std::shared_ptr<TrainerState> state, std::string path, bool save)
      : PromiseWorker(env), state_(std::move(state)), path_(std::move(path)), save_(save) {}

 protected:
  void compute() override {
    LoadedEncoder& enc = *state_->encoder;
    std::lock_guard<std::mutex> lock(enc.mutex);
    auto params = enc.parameters();
    auto& optimizerState = state_->optimizer->state();
    auto keyOf = [](const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); };
    if (save_) {
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      for (size_t i = 0; i < params.size(); ++i) {
        auto found = optimizerState.find(keyOf(params[i]));
        if (found == optimizerState.end()) continue;  // no step taken for this parameter yet
        auto& s = static_cast<torch::optim::AdamWParamState&>(*found->second);
        const std::string prefix = "adamw." + std::to_string(i) + ".";
        tensors.emplace_back(prefix + "exp_avg", s.exp_avg());
        tensors.emplace_back(prefix + "exp_avg_sq", s.exp_avg_sq());
        tensors.emplace_back(prefix + "step", torch::full({1}, static_cast<int64_t>(s.step()), torch::kInt64));
      }
      tensors.emplace_back("rng", state_->rngState);
      tensors.emplace_back("steps", torch::full({1}, state_->steps, torch::kInt64));
      if (state_->scaler.enabled) {
        tensors.emplace_back("scaler.scale", torch::full({1}, state_->scaler.scale, torch::kFloat64));
        tensors.emplace_back("scaler.growth_tracker", torch::full({1}, state_->scaler.growthTracker, torch::kInt64));
      }
      writeSafetensors(path_, tensors, {{"format", "coltrast-trainer"}});
      return;
    }
    SafetensorsFile file(path_);
    if (!file.has("rng") || !file.has("steps")) throw modelFilesError(path_ + " is not a coltrast trainer state (no rng/steps)");
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string prefix = "adamw." + std::to_string(i) + ".";
      if (!file.has(prefix + "exp_avg")) continue;
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      torch::Tensor avg = file.read(prefix + "exp_avg", torch::kFloat32).to(params[i].device());
      if (avg.sizes() != params[i].sizes()) throw modelFilesError(path_ + ": optimizer state does not match the model");
      s->exp_avg(avg);
      s->exp_avg_sq(file.read(prefix + "exp_avg_sq", torch::kFloat32).to(params[i].device()));
      s->step(file.read(prefix + "step", torch::kInt64).item<int64_t>());
      optimizerState[keyOf(params[i])] = std::move(s);
    }
    state_->rngState = file.read("rng", torch::kUInt8);
    state_->steps = file.read("steps", torch::kInt64).item<int64_t>();
    if (state_->scaler.enabled && file.has("scaler.scale")) {
      state_->scaler.scale = file.read("scaler.scale", torch::kFloat64).item<double>();
      state_->scaler.growthTracker = file.read("scaler.growth_tracker", torch::kInt64).item<int64_t>();
    }
  }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<TrainerState> state_;
  std::string path_;
  bool save_;
};

}  // namespace

std::shared_ptr<TrainerState> TrainerWrap::live(Napi::Env env) const {
  if (!state_) throw jsError(env, {"DISPOSED", "this trainer was disposed"});
  return state_;
}

Napi::Value TrainerWrap::saveState(const Napi::CallbackInfo& info) {
  return (new StateWorker(info.Env(), live(info.Env()), info[0].As<Napi::String>(), true))->start();
}
Napi::Value TrainerWrap::loadState(const Napi::CallbackInfo& info) {
  return (new StateWorker(info.Env(), live(info.Env()), info[0].As<Napi::String>(), false))->start();
}

// Frees the optimizer state and the trainer's hold on the model now (steps in flight keep theirs until
// they end), rather than when V8 collects this object.
void TrainerWrap::dispose(const Napi::CallbackInfo&) { state_.reset(); }

Napi::Function TrainerWrap::define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeTrainer",
                                   {
                                       StaticMethod<&TrainerWrap::create>("create"),
                                       InstanceMethod<&TrainerWrap::step>("step"),
                                       InstanceMethod<&TrainerWrap::evaluate>("evaluate"),
                                       InstanceMethod<&TrainerWrap::saveState>("saveState"),
                                       InstanceMethod<&TrainerWrap::loadState>("loadState"),
                                       InstanceMethod<&TrainerWrap::dispose>("dispose"),
                                   });
  return cls;
}

TrainerWrap::TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeTrainer cannot be constructed directly; use NativeTrainer.create()");
  }
  // Moved, not copied: a copy in the External would keep the optimizer state (and the model) alive until
  // V8 collects the External.
  state_ = std::move(*info[0].As<Napi::External<std::shared_ptr<TrainerState>>>().Data());
}

// create(nativeEncoder, { weightDecay, beta1, beta2, eps, seed, precision, gradScaler }): AdamW over the
// encoder's parameters, without weight decay on biases and LayerNorm weights (the usual BERT fine-tuning
// split). precision: 'float32' (default), 'bfloat16' or 'float16' (autocast; the weights stay float32).
// gradScaler: { initScale, growthFactor, backoffFactor, growthInterval } turns loss scaling on; float16
// turns it on with torch.amp.GradScaler's defaults.
Napi::Value TrainerWrap::create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto encoder = EncoderWrap::shared(info[0].As<Napi::Object>());
    auto o = info[1].As<Napi::Object>();
    if (encoder->dtype != torch::kFloat32) {
      throw invalidArgument("training needs the model loaded in float32; for mixed precision pass precision 'bfloat16' or 'float16' to the trainer");
    }
    const std::string precision = stringOr(o, "precision", "float32");
    torch::ScalarType autocast;
    if (precision == "float32") {
      autocast = torch::kFloat32;
    } else if (precision == "bfloat16") {
      autocast = torch::kBFloat16;
    } else if (precision == "float16") {
      autocast = torch::kFloat16;
    } else {
      throw invalidArgument("precision must be 'float32', 'bfloat16' or 'float16', not '" + precision + "'");
    }
    checkAutocast(encoder->device, autocast);
    GradScaler scaler;
    scaler.enabled = autocast == torch::kFloat16;
    if (o.Get("gradScaler").IsObject()) {
      auto g = o.Get("gradScaler").As<Napi::Object>();
      scaler.enabled = true;
      scaler.scale = numberOr(g, "initScale", scaler.scale);
      scaler.growthFactor = numberOr(g, "growthFactor", scaler.growthFactor);
      scaler.backoffFactor = numberOr(g, "backoffFactor", scaler.backoffFactor);
      scaler.growthInterval = static_cast<int64_t>(numberOr(g, "growthInterval", static_cast<double>(scaler.growthInterval)));
      if (!(scaler.scale > 0) || !(scaler.growthFactor >= 1) || !(scaler.backoffFactor > 0 && scaler.backoffFactor < 1) ||
          scaler.growthInterval < 1) {
        throw invalidArgument("gradScaler needs initScale > 0, growthFactor >= 1, 0 < backoffFactor < 1 and growthInterval >= 1");
      }
    }
    std::vector<torch::Tensor> decay, noDecay;
    for (auto& p : encoder->parameters()) {
      p.set_requires_grad(true);
      (p.dim() >= 2 ? decay : noDecay).push_back(p);
    }
    auto options = torch::optim::AdamWOptions(numberOr(o, "learningRate", 2e-5))
                       .betas({numberOr(o, "beta1", 0.9), numberOr(o, "beta2", 0.999)})
                       .eps(numberOr(o, "eps", 1e-8));
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(options).weight_decay(numberOr(o, "weightDecay", 0.01))));
    groups.emplace_back(noDecay,
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
    auto state = std::make_shared<TrainerState>();
    state->encoder = std::move(encoder);
    state->autocast = autocast;
    state->scaler = scaler;
    state->rngState = at::detail::createCPUGenerator(static_cast<uint64_t>(numberOr(o, "seed", 42))).get_state();
    state->optimizer = std::make_unique<torch::optim::AdamW>(groups, options);
    auto holder = Napi::External<std::shared_ptr<TrainerState>>::New(
        env, new std::shared_ptr<TrainerState>(std::move(state)), [](Napi::Env, std::shared_ptr<TrainerState>* p) { delete p; });
    // A static method's `this` is the class itself (JS calls NativeTrainer.create(...)).
    return info.This().As<Napi::Function>().New({holder});
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value TrainerWrap::step(const Napi::CallbackInfo& info) { return run(info, true); }
Napi::Value TrainerWrap::evaluate(const Napi::CallbackInfo& info) { return run(info, false); }

Napi::Value TrainerWrap::run(const Napi::CallbackInfo& info, bool train) {
  Napi::Env env = info.Env();
  try {
    auto args = info[0].As<Napi::Object>();
    auto batchAt = [&](const char* key) {
      if (!args.Get(key).IsObject()) throw invalidArgument(std::string(key) + " must be a padded token batch");
      return readTokenBatch(args.Get(key).As<Napi::Object>(), key);
    };
    TokenBatch q = batchAt("queries"), d = batchAt("documents");
    if (d.batch < q.batch) throw invalidArgument("documents must hold at least one positive per query");
    return (new StepWorker(env, live(env), std::move(q), std::move(d), readStepOptions(args), train))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace coltrast
