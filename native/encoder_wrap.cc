#include "encoder_wrap.h"

#include <cstring>

#include "napi_args.h"
#include "pooling.h"
#include "promise_worker.h"
#include "runtime.h"

namespace coltrast {
namespace {

struct LoadOptions {
  std::string weightsPath, config, device, dtype;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, LoadOptions options, Napi::Function constructor)
      : PromiseWorker(env), options_(std::move(options)), constructor_(Napi::Persistent(constructor)) {}

 protected:
  void compute() override {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(options_.config);
    } catch (const nlohmann::json::exception& e) {
      throw modelFilesError(std::string("config.json is not valid JSON: ") + e.what());
    }
    auto loaded = std::make_shared<LoadedEncoder>();
    loaded->device = parseDevice(options_.device);
    loaded->dtype = parseDtype(options_.dtype);
    loaded->model = createEncoder(config);
    SafetensorsFile weights(options_.weightsPath);
    loaded->model->loadWeights(weights, torch::kFloat32);
    loaded->model->to(loaded->device, loaded->dtype);
    loaded->model->eval();
    loaded_ = std::move(loaded);
  }
  Napi::Value result(Napi::Env env) override {
    auto holder = Napi::External<std::shared_ptr<LoadedEncoder>>::New(
        env, new std::shared_ptr<LoadedEncoder>(std::move(loaded_)),
        [](Napi::Env, std::shared_ptr<LoadedEncoder>* p) { delete p; });
    return constructor_.New({holder});
  }

 private:
  LoadOptions options_;
  Napi::FunctionReference constructor_;
  std::shared_ptr<LoadedEncoder> loaded_;
};

// One padded batch of token ids in, pooled vectors or the valid tokens' states out.
struct EmbedRequest {
  TokenBatch batch;
  bool tokens = false;  // output: 'tokens' (valid tokens of every row, concatenated) or 'pooled'
  std::string pooling;
  bool normalize = false;
};

class EmbedWorker : public PromiseWorker {
 public:
  EmbedWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, EmbedRequest request)
      : PromiseWorker(env), encoder_(std::move(encoder)), request_(std::move(request)) {}

 protected:
  void compute() override {
    torch::NoGradGuard noGrad;
    const auto& r = request_;
    const auto& b = r.batch;
    auto ids = b.tensor(b.ids, encoder_->device), mask = b.tensor(b.mask, encoder_->device),
         types = b.tensor(b.types, encoder_->device);
    torch::Tensor states;
    {
      std::lock_guard<std::mutex> lock(encoder_->mutex);
      states = encoder_->model->forward(ids, mask, types);
    }
    torch::Tensor out;
    if (r.tokens) {
      out = states.to(torch::kFloat32).index({mask.to(torch::kBool)});  // [valid tokens, dim], row-major order
    } else {
      out = pool(states, mask, r.pooling);
    }
    if (r.normalize) out = torch::nn::functional::normalize(out, torch::nn::functional::NormalizeFuncOptions().dim(-1));
    output_ = out.to(torch::kCPU).contiguous();
  }
  Napi::Value result(Napi::Env env) override {
    auto array = Napi::Float32Array::New(env, static_cast<size_t>(output_.numel()));
    std::memcpy(array.Data(), output_.data_ptr<float>(), output_.numel() * sizeof(float));
    return array;
  }

 private:
  std::shared_ptr<LoadedEncoder> encoder_;
  EmbedRequest request_;
  torch::Tensor output_;
};

class SaveWorker : public PromiseWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, std::string path, std::string dtype)
      : PromiseWorker(env), encoder_(std::move(encoder)), path_(std::move(path)), dtype_(std::move(dtype)) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(encoder_->mutex);
    writeSafetensors(path_, encoder_->model->weightsForSaving(parseDtype(dtype_)), {{"format", "pt"}});
  }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<LoadedEncoder> encoder_;
  std::string path_, dtype_;
};

}  // namespace

Napi::Function EncoderWrap::define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeEncoder",
                                   {
                                       StaticMethod<&EncoderWrap::load>("load"),
                                       InstanceMethod<&EncoderWrap::embed>("embed"),
                                       InstanceMethod<&EncoderWrap::saveWeights>("saveWeights"),
                                       InstanceMethod<&EncoderWrap::info>("info"),
                                       InstanceMethod<&EncoderWrap::dispose>("dispose"),
                                   });
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(cls)));
  return cls;
}

EncoderWrap::EncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EncoderWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "NativeEncoder cannot be constructed directly; use NativeEncoder.load()");
  encoder_ = *info[0].As<Napi::External<std::shared_ptr<LoadedEncoder>>>().Data();
}

std::shared_ptr<LoadedEncoder> EncoderWrap::shared(const Napi::Object& object) {
  Napi::Env env = object.Env();
  auto constructor = env.GetInstanceData<Napi::FunctionReference>()->Value();
  if (!object.InstanceOf(constructor)) throw invalidArgument("expected a NativeEncoder");
  return Unwrap(object)->live(env);
}

std::shared_ptr<LoadedEncoder> EncoderWrap::live(Napi::Env env) const {
  if (!encoder_) throw jsError(env, {"DISPOSED", "this encoder was disposed; load it again"});
  return encoder_;
}

Napi::Value EncoderWrap::load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = info[0].As<Napi::Object>();
  LoadOptions options{o.Get("weightsPath").As<Napi::String>(), o.Get("config").As<Napi::String>(),
                      o.Get("device").As<Napi::String>(), o.Get("dtype").As<Napi::String>()};
  auto* worker = new LoadWorker(env, std::move(options), env.GetInstanceData<Napi::FunctionReference>()->Value());
  return worker->start();
}

Napi::Value EncoderWrap::embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  auto o = info[0].As<Napi::Object>();
  EmbedRequest r;
  try {
    r.batch = readTokenBatch(o, "");
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  r.tokens = o.Get("output").As<Napi::String>().Utf8Value() == "tokens";
  r.pooling = o.Get("pooling").As<Napi::String>();
  r.normalize = o.Get("normalize").As<Napi::Boolean>();
  return (new EmbedWorker(env, std::move(encoder), std::move(r)))->start();
}

Napi::Value EncoderWrap::saveWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return (new SaveWorker(env, live(env), info[0].As<Napi::String>(), info[1].As<Napi::String>()))->start();
}

Napi::Value EncoderWrap::info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  int64_t parameters = 0;
  for (const auto& p : encoder->model->parameters()) parameters += p.numel();
  auto out = Napi::Object::New(env);
  out.Set("modelType", encoder->model->modelType());
  out.Set("hiddenSize", static_cast<double>(encoder->model->hiddenSize()));
  out.Set("maxPositions", static_cast<double>(encoder->model->maxPositions()));
  out.Set("numParameters", static_cast<double>(parameters));
  out.Set("device", encoder->device.str());
  out.Set("dtype", std::string(c10::toString(encoder->dtype)));
  return out;
}

void EncoderWrap::dispose(const Napi::CallbackInfo&) { encoder_.reset(); }

}  // namespace coltrast
