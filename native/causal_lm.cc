#include "causal_lm.h"

#include <cstring>
#include <set>

#include "models/decoder.h"
#include "napi_args.h"
#include "promise_worker.h"

namespace coltrast {
namespace {

void requireCausalLm(const LoadedEncoder& model) {
  if (!model.causalLm()) throw invalidArgument("this model was not loaded as a causal language model (Generator.load)");
}

class LogLikelihoodWorker : public PromiseWorker {
 public:
  LogLikelihoodWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> model, TokenBatch batch)
      : PromiseWorker(env, model->device), model_(std::move(model)), batch_(std::move(batch)) {}

 protected:
  void compute() override {
    torch::NoGradGuard noGrad;
    const auto& b = batch_;
    const auto& device = model_->device;
    std::lock_guard<std::mutex> lock(model_->mutex);
    sums_ = sequenceLogLikelihood(*model_, b.tensor(b.ids, device), b.tensor(b.mask, device), b.tensor(b.scored, device))
                .to(torch::kCPU)
                .contiguous();
  }
  Napi::Value result(Napi::Env env) override {
    auto array = Napi::Float32Array::New(env, static_cast<size_t>(sums_.numel()));
    std::memcpy(array.Data(), sums_.data_ptr<float>(), sums_.numel() * sizeof(float));
    return array;
  }

 private:
  std::shared_ptr<LoadedEncoder> model_;
  TokenBatch batch_;
  torch::Tensor sums_;
};

class GenerateWorker : public PromiseWorker {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> model, std::vector<std::vector<int64_t>> prompts, int64_t maxNew,
                 std::set<int64_t> stop)
      : PromiseWorker(env, model->device), model_(std::move(model)), prompts_(std::move(prompts)), maxNew_(maxNew), stop_(std::move(stop)) {}

 protected:
  void compute() override {
    torch::NoGradGuard noGrad;
    auto* decoder = dynamic_cast<DecoderModel*>(model_->model.get());
    if (!decoder) throw unsupportedError("generation needs a decoder model (" + model_->model->modelType() + " is an encoder)");
    std::lock_guard<std::mutex> lock(model_->mutex);
    const int64_t positions = decoder->maxPositions();
    for (const auto& prompt : prompts_) {
      std::vector<KvCache> caches;
      std::vector<int32_t> out;
      torch::Tensor input = torch::tensor(prompt, torch::kInt64).view({1, -1}).to(model_->device);
      int64_t length = static_cast<int64_t>(prompt.size());
      while (static_cast<int64_t>(out.size()) < maxNew_ && length < positions) {
        const torch::Tensor states = decoder->forwardCached(input, caches);
        // The first of equal maxima, as torch.argmax (and so transformers' greedy search) picks.
        const int64_t next = model_->logits(states.select(1, states.size(1) - 1)).argmax(-1).item<int64_t>();
        out.push_back(static_cast<int32_t>(next));
        ++length;
        if (stop_.count(next)) break;
        input = torch::full({1, 1}, next, torch::TensorOptions().dtype(torch::kInt64).device(model_->device));
      }
      outputs_.push_back(std::move(out));
    }
  }
  Napi::Value result(Napi::Env env) override {
    auto list = Napi::Array::New(env, outputs_.size());
    for (size_t i = 0; i < outputs_.size(); ++i) {
      auto ids = Napi::Int32Array::New(env, outputs_[i].size());
      if (!outputs_[i].empty()) std::memcpy(ids.Data(), outputs_[i].data(), outputs_[i].size() * sizeof(int32_t));
      list.Set(static_cast<uint32_t>(i), ids);
    }
    return list;
  }

 private:
  std::shared_ptr<LoadedEncoder> model_;
  std::vector<std::vector<int64_t>> prompts_;
  int64_t maxNew_;
  std::set<int64_t> stop_;
  std::vector<std::vector<int32_t>> outputs_;
};

std::vector<int64_t> idsOf(const Napi::Value& v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) throw invalidArgument(name + " must be an Int32Array");
  auto array = v.As<Napi::Int32Array>();
  return std::vector<int64_t>(array.Data(), array.Data() + array.ElementLength());
}

}  // namespace

torch::Tensor sequenceLogLikelihood(const LoadedEncoder& model, const torch::Tensor& ids, const torch::Tensor& mask,
                                    const torch::Tensor& targets) {
  requireCausalLm(model);
  const int64_t batch = ids.size(0), seq = ids.size(1);
  if (targets.select(1, 0).any().item<bool>()) throw invalidArgument("a row's first token has nothing before it to predict it from");
  if (targets.logical_and(mask.logical_not()).any().item<bool>()) throw invalidArgument("a target token is padding");
  torch::Tensor sums = torch::zeros({batch}, torch::TensorOptions().device(ids.device()).dtype(torch::kFloat32));
  if (seq < 2) return sums;
  const torch::Tensor states = model.model->forward(ids, mask, torch::zeros_like(ids));
  // Token t is predicted from the state at t - 1.
  const torch::Tensor predicted = targets.narrow(1, 1, seq - 1).to(torch::kBool);
  const torch::Tensor from = states.narrow(1, 0, seq - 1).index({predicted});  // [targets, hidden]
  const torch::Tensor tokens = ids.narrow(1, 1, seq - 1).index({predicted});
  const torch::Tensor rows = torch::arange(batch, ids.options()).view({batch, 1}).expand({batch, seq - 1}).index({predicted});
  const torch::Tensor logp = torch::log_softmax(model.logits(from), -1).gather(1, tokens.view({-1, 1})).view({-1});
  return sums.index_add(0, rows, logp);
}

Napi::Value logLikelihoodCall(Napi::Env env, std::shared_ptr<LoadedEncoder> model, const Napi::Object& args) {
  try {
    requireCausalLm(*model);
    TokenBatch batch = readTokenBatch(args, "");
    if (batch.scored.empty()) throw invalidArgument("outputMask (the completion tokens) is required");
    return (new LogLikelihoodWorker(env, std::move(model), std::move(batch)))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value generateCall(Napi::Env env, std::shared_ptr<LoadedEncoder> model, const Napi::Object& args) {
  try {
    requireCausalLm(*model);
    if (!args.Get("prompts").IsArray()) throw invalidArgument("prompts must be an array of Int32Array");
    auto list = args.Get("prompts").As<Napi::Array>();
    std::vector<std::vector<int64_t>> prompts;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      prompts.push_back(idsOf(list.Get(i), "prompts[" + std::to_string(i) + "]"));
      if (prompts.back().empty()) throw invalidArgument("prompts[" + std::to_string(i) + "] is empty: generation needs a token to start from");
    }
    const double maxNew = numberOr(args, "maxNewTokens", 64);
    if (!(maxNew >= 1) || maxNew != std::floor(maxNew)) throw invalidArgument("maxNewTokens must be a positive integer");
    std::set<int64_t> stop;
    if (!args.Get("stopIds").IsUndefined()) {
      for (int64_t id : idsOf(args.Get("stopIds"), "stopIds")) stop.insert(id);
    }
    return (new GenerateWorker(env, std::move(model), std::move(prompts), static_cast<int64_t>(maxNew), std::move(stop)))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace coltrast
