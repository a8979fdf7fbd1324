// The loss operations for JavaScript (lib/ops.ts): each call holds its typed arrays and, off the JS thread
// (promise_worker.h), copies them, runs the op and, when asked, its backward, and resolves with the value and the
// input gradients as float32 arrays over the results' own memory: nothing the size of the inputs is copied on the JS
// thread (300 MB of documents held the event loop over a second when it was). Training does not go through here (it
// calls ops/autograd.h directly in C++); this is for tests, benchmarks and users who want the ops on their own.
#include "ops/ops_wrap.h"

#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "error.h"
#include "napi_args.h"
#include "ops/autograd.h"
#include "promise_worker.h"
#include "runtime.h"

namespace coltrast::ops {
namespace {

// One input tensor as JS gave it: float32 data or uint8 mask (held, not copied), with its dims.
struct HostTensor {
  std::vector<int64_t> dims;
  HeldArray array;
  bool isMask = false;
};

std::vector<int64_t> readDims(const Napi::Object& o, const std::string& name) {
  Napi::Value v = o.Get("dims");
  if (!v.IsArray()) throw invalidArgument(name + ".dims must be an array of sizes");
  auto array = v.As<Napi::Array>();
  std::vector<int64_t> dims;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value d = array.Get(i);
    if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 0 ||
        d.As<Napi::Number>().DoubleValue() != double(d.As<Napi::Number>().Int64Value())) {
      throw invalidArgument(name + ".dims must hold non-negative integers");
    }
    dims.push_back(d.As<Napi::Number>().Int64Value());
  }
  return dims;
}

HostTensor readTensor(const Napi::Object& args, const std::string& name, bool mask) {
  Napi::Value v = args.Get(name);
  if (!v.IsObject()) throw invalidArgument(name + " must be { dims, data }");
  auto o = v.As<Napi::Object>();
  HostTensor t;
  t.dims = readDims(o, name);
  t.isMask = mask;
  int64_t count = 1;
  for (int64_t d : t.dims) {
    // Sizes come from JS: refuse a product that would overflow before it can mislead the length check.
    if (d > 0 && count > std::numeric_limits<int64_t>::max() / d) throw invalidArgument(name + ".dims are too large");
    count *= d;
  }
  Napi::Value data = o.Get("data");
  if (!data.IsTypedArray()) throw invalidArgument(name + ".data must be a " + (mask ? "Uint8Array" : "Float32Array"));
  auto typed = data.As<Napi::TypedArray>();
  const auto expected = mask ? napi_uint8_array : napi_float32_array;
  if (typed.TypedArrayType() != expected) {
    throw invalidArgument(name + ".data must be a " + (mask ? "Uint8Array" : "Float32Array"));
  }
  if (int64_t(typed.ElementLength()) != count) {
    throw invalidArgument(name + ".data has " + std::to_string(typed.ElementLength()) + " elements but dims say " +
                          std::to_string(count));
  }
  t.array = HeldArray(typed);
  return t;
}

// What every op call shares: where it runs, in which dtype, eager reference or fused, and the upstream
// gradient (empty: no backward).
struct CallOptions {
  std::string device = "cpu", dtype = "float32";
  std::optional<bool> reference;
  bool backward = false;
  std::optional<float> gradNumber;  // the upstream gradient as a number (a loss's),
  HeldArray gradOutput;              // or as a Float32Array shaped like the value (MaxSim's scores)
  bool learnTemperature = false;
  double temperature = 1.0;  // losses only; checked there (> 0, finite)
};

CallOptions readCallOptions(const Napi::Object& o) {
  CallOptions c;
  c.device = stringOr(o, "device", "cpu");
  c.dtype = stringOr(o, "dtype", "float32");
  if (!o.Get("reference").IsUndefined()) c.reference = boolOr(o, "reference", false);
  c.learnTemperature = boolOr(o, "learnTemperature", false);
  Napi::Value t = o.Get("temperature");
  if (!t.IsUndefined()) {
    if (!t.IsNumber()) throw invalidArgument("temperature must be a number");
    c.temperature = t.As<Napi::Number>().DoubleValue();
    // It becomes a float32 tensor: past float's range that conversion throws an error that does not name it,
    // and below its normal range it rounds to 0 or 1/temperature overflows (NaN losses).
    if (!(c.temperature >= std::numeric_limits<float>::min() && c.temperature <= std::numeric_limits<float>::max())) {
      std::ostringstream got;
      got << c.temperature;
      throw invalidArgument("temperature must be > 0 and a float32 (from 1.2e-38 to 3.4e38); got " + got.str());
    }
  }
  Napi::Value g = o.Get("gradOutput");
  if (g.IsNumber()) {
    c.backward = true;
    c.gradNumber = float(g.As<Napi::Number>().DoubleValue());
  } else if (g.IsTypedArray() && g.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    c.backward = true;
    c.gradOutput = HeldArray(g.As<Napi::TypedArray>());
  } else if (!g.IsUndefined()) {
    throw invalidArgument("gradOutput must be a number (for a loss) or a Float32Array shaped like the scores");
  }
  return c;
}

enum class Op { MaxSim, Contrastive, LateInteraction };

class OpWorker : public PromiseWorker {
 public:
  OpWorker(Napi::Env env, Op op, std::map<std::string, HostTensor> inputs, CallOptions call, MaxSimOptions maxsim,
           ContrastiveOptions contrastive, LateInteractionOptions late)
      : PromiseWorker(env, call.device),
        op_(op),
        inputs_(std::move(inputs)),
        call_(std::move(call)),
        maxsim_(maxsim),
        contrastive_(contrastive),
        late_(late) {}

 protected:
  void compute() override {
    const torch::Device device = parseDevice(call_.device);
    const torch::ScalarType dtype = parseDtype(call_.dtype);
    torch::AutoGradMode grad(call_.backward);
    std::map<std::string, torch::Tensor> t;
    // Copies (copy = true even where device and dtype match): no tensor of the op shares JS memory, so no result handed
    // back over its own memory (float32ArrayTaking) can be a view of an input, and a write to an array meanwhile
    // (which lib/ops.ts asks callers not to make) changes nothing mid-op.
    for (auto& [name, host] : inputs_) {
      void* data = const_cast<void*>(host.array.data);
      if (host.isMask) {
        t[name] = torch::from_blob(data, host.dims, torch::kUInt8).to(device, torch::kUInt8, false, true);
      } else {
        t[name] = torch::from_blob(data, host.dims, torch::kFloat32).to(device, dtype, false, true);
        if (call_.backward) t[name].requires_grad_(true);
      }
    }
    torch::Tensor temperature = torch::full({}, call_.temperature, torch::TensorOptions().device(device));
    if (call_.backward && call_.learnTemperature) temperature.requires_grad_(true);

    // computeMs_: the op alone (forward, and backward when asked), the device synchronized on both sides, so
    // benchmarks can leave out the copies from and to JS.
    const auto synchronize = [&] {
      if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
    };
    synchronize();
    const auto started = std::chrono::steady_clock::now();
    torch::Tensor value;
    switch (op_) {
      case Op::MaxSim:
        value = maxsim(t["q"], t["qmask"], t["d"], t["dmask"], maxsim_, call_.reference);
        break;
      case Op::Contrastive:
        value = contrastiveLoss(t["q"], t["c"], temperature, contrastive_, call_.reference);
        break;
      case Op::LateInteraction:
        value = lateInteractionLoss(t["q"], t["qmask"], t["d"], t["dmask"], temperature, late_, call_.reference);
        break;
    }
    if (call_.backward) {
      const int64_t given = call_.gradNumber ? 1 : int64_t(call_.gradOutput.elements);
      if (given != value.numel()) {
        throw invalidArgument("gradOutput has " + std::to_string(given) + " elements; the value has " + std::to_string(value.numel()));
      }
      torch::Tensor g = call_.gradNumber ? torch::full(value.sizes(), *call_.gradNumber, torch::kFloat32)
                                         : torch::from_blob(const_cast<void*>(call_.gradOutput.data), value.sizes(), torch::kFloat32);
      value.backward(g.to(device, torch::kFloat32, false, true));
    }
    synchronize();
    computeMs_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    value_ = toHost(value);
    if (!call_.backward) return;
    for (auto& [name, tensor] : t) {
      if (inputs_[name].isMask) continue;
      grads_[name] = tensor.grad().defined() ? toHost(tensor.grad()) : torch::zeros(tensor.sizes(), torch::kFloat32);
    }
    if (call_.learnTemperature) {
      temperatureGrad_ = temperature.grad().defined() ? temperature.grad().item<double>() : 0.0;
    }
  }

  Napi::Value result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("value", float32ArrayTaking(env, std::move(value_)));
    out.Set("computeMs", computeMs_);
    if (call_.backward) {
      auto grads = Napi::Object::New(env);
      for (auto& [name, g] : grads_) grads.Set(name, float32ArrayTaking(env, std::move(g)));
      if (call_.learnTemperature) grads.Set("temperature", temperatureGrad_);
      out.Set("grads", grads);
    }
    return out;
  }

 private:
  // A result on the CPU in float32, for float32ArrayTaking: the JS array will share its memory, which nothing of JS's
  // can alias (the inputs and gradOutput were copied above) and which is dropped here when compute() ends.
  static torch::Tensor toHost(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32).contiguous(); }

  Op op_;
  std::map<std::string, HostTensor> inputs_;
  CallOptions call_;
  MaxSimOptions maxsim_;
  ContrastiveOptions contrastive_;
  LateInteractionOptions late_;
  torch::Tensor value_;
  std::map<std::string, torch::Tensor> grads_;
  double temperatureGrad_ = 0.0;
  double computeMs_ = 0.0;
};

Napi::Value run(const Napi::CallbackInfo& info, Op op) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw invalidArgument("expected one argument object");
    auto args = info[0].As<Napi::Object>();
    std::map<std::string, HostTensor> inputs;
    MaxSimOptions maxsimOptions;
    ContrastiveOptions contrastiveOptions;
    LateInteractionOptions lateOptions;
    if (op == Op::Contrastive) {
      inputs["q"] = readTensor(args, "q", false);
      inputs["c"] = readTensor(args, "c", false);
      contrastiveOptions.symmetric = boolOr(args, "symmetric", false);
      const std::string strategy = stringOr(args, "strategy", "auto");
      if (strategy == "fused") contrastiveOptions.strategy = ContrastiveOptions::Strategy::Fused;
      else if (strategy == "chunked") contrastiveOptions.strategy = ContrastiveOptions::Strategy::Chunked;
      else if (strategy != "auto") throw invalidArgument("strategy must be 'auto', 'fused' or 'chunked'; got '" + strategy + "'");
      // Negative values reach the check that names them (autograd.cc); fractions and non-finite ones stop here.
      contrastiveOptions.chunkRows = integerOr(args, "chunkRows", -kMaxSafeInteger, kMaxSafeInteger, 0);
    } else {
      inputs["q"] = readTensor(args, "q", false);
      inputs["qmask"] = readTensor(args, "qmask", true);
      inputs["d"] = readTensor(args, "d", false);
      inputs["dmask"] = readTensor(args, "dmask", true);
      if (op == Op::MaxSim) {
        const std::string mode = stringOr(args, "mode", "all");
        if (mode != "all" && mode != "paired") throw invalidArgument("mode must be 'all' or 'paired'; got '" + mode + "'");
        maxsimOptions.paired = mode == "paired";
        maxsimOptions.normalizeByQueryLength = boolOr(args, "normalize", false);
      } else {
        const std::string kind = stringOr(args, "kind", "cross_entropy");
        if (kind != "cross_entropy" && kind != "bce") {
          throw invalidArgument("kind must be 'cross_entropy' or 'bce'; got '" + kind + "'");
        }
        lateOptions.kind = kind == "bce" ? LateInteractionOptions::Kind::Bce : LateInteractionOptions::Kind::CrossEntropy;
        lateOptions.normalizeByQueryLength = boolOr(args, "normalize", true);
        lateOptions.symmetric = boolOr(args, "symmetric", false);
      }
    }
    CallOptions call = readCallOptions(args);
    // The losses have no sensible default temperature at this level (lib/ops.ts supplies its 0.05).
    if (op != Op::MaxSim && args.Get("temperature").IsUndefined()) {
      throw invalidArgument("temperature is required for the losses (a number > 0)");
    }
    return (new OpWorker(env, op, std::move(inputs), std::move(call), maxsimOptions, contrastiveOptions, lateOptions))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace

Napi::Object defineOps(Napi::Env env) {
  auto ops = Napi::Object::New(env);
  ops.Set("maxsim", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run(info, Op::MaxSim); }));
  ops.Set("contrastiveLoss",
          Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run(info, Op::Contrastive); }));
  ops.Set("lateInteractionLoss",
          Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run(info, Op::LateInteraction); }));
  return ops;
}

}  // namespace coltrast::ops
