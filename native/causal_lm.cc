#include "causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
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

// How the next token is chosen: the most likely (temperature 0), or drawn from softmax(logits / temperature) cut to
// the topK most likely (0: all) and to the smallest set whose probability reaches topP (1: all), as transformers'
// TopKLogitsWarper and TopPLogitsWarper cut them, from a generator seeded with `seed`.
struct Sampling {
  double temperature = 0, topP = 1;
  int64_t topK = 0;
  uint64_t seed = 0;
};

// The next token from one row's logits [vocab] (float32), drawn (temperature > 0; greedy decoding takes the argmax
// of the whole batch at once).
int64_t sampleToken(torch::Tensor logits, const Sampling& s, at::Generator& generator) {
  const double inf = std::numeric_limits<double>::infinity();
  logits = (logits / s.temperature).to(torch::kCPU);
  if (s.topK > 0 && s.topK < logits.size(0)) {
    const torch::Tensor kth = std::get<0>(logits.topk(s.topK)).min();
    logits = logits.masked_fill(logits < kth, -inf);
  }
  if (s.topP < 1) {
    auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
    const torch::Tensor probs = torch::softmax(sorted, 0);
    // A token goes when the tokens before it already reach topP; the most likely always stays.
    const torch::Tensor drop = (probs.cumsum(0) - probs) >= s.topP;
    logits = logits.index_put({order.masked_select(drop)}, torch::full({}, -inf));
  }
  return torch::multinomial(torch::softmax(logits, 0), 1, false, generator).item<int64_t>();
}

class GenerateWorker : public PromiseWorker {
 public:
  // `onTokens` (optional): called on the JS thread after each step with (prompt indices, tokens), an Int32Array
  // each: the tokens the step added. Calls may arrive after the promise settles; the caller reconciles with the
  // result (lib/generator.ts).
  GenerateWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> model, std::vector<std::vector<int64_t>> prompts, int64_t maxNew,
                 std::set<int64_t> stop, Sampling sampling, int64_t batchSize, Napi::Function onTokens)
      : PromiseWorker(env, model->device),
        model_(std::move(model)),
        prompts_(std::move(prompts)),
        maxNew_(maxNew),
        stop_(std::move(stop)),
        sampling_(sampling),
        batchSize_(batchSize),
        streaming_(!onTokens.IsEmpty()) {
    if (streaming_) onTokens_ = Napi::ThreadSafeFunction::New(env, onTokens, "coltrast generate onTokens", 0, 1);
  }

 protected:
  void compute() override {
    // The stream ends with the work, however it ends: its last calls are queued, and the event loop may exit after them.
    struct Release {
      GenerateWorker* worker;
      ~Release() { worker->endStream(); }
    } release{this};
    torch::NoGradGuard noGrad;
    auto* decoder = dynamic_cast<DecoderModel*>(model_->model.get());
    if (!decoder) throw unsupportedError("generation needs a decoder model (" + model_->model->modelType() + " is an encoder)");
    std::lock_guard<std::mutex> lock(model_->mutex);
    const int64_t positions = decoder->maxPositions();
    // Its own generator: a seeded run draws the same tokens whatever else the process does.
    at::Generator generator = at::detail::createCPUGenerator(sampling_.seed);
    outputs_.resize(prompts_.size());
    for (size_t start = 0; start < prompts_.size(); start += static_cast<size_t>(batchSize_)) {
      const size_t end = std::min(prompts_.size(), start + static_cast<size_t>(batchSize_));
      generateBatch(*decoder, start, end, positions, generator);
    }
  }

  // Prompts start .. end - 1 together: left-padded to the longest, so that every row's next token is in the last
  // column; rows leave the batch (and their cached keys and values go) as they finish.
  void generateBatch(DecoderModel& decoder, size_t start, size_t end, int64_t positions, at::Generator& generator) {
    const auto rows = static_cast<int64_t>(end - start);
    int64_t longest = 0;
    for (size_t i = start; i < end; ++i) longest = std::max(longest, static_cast<int64_t>(prompts_[i].size()));
    std::vector<int64_t> ids(static_cast<size_t>(rows * longest), 0), mask(ids.size(), 0), pos(ids.size(), 0), length(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const auto& prompt = prompts_[start + static_cast<size_t>(r)];
      const auto n = static_cast<int64_t>(prompt.size()), pad = longest - n;
      length[static_cast<size_t>(r)] = n;
      for (int64_t j = 0; j < n; ++j) {
        const auto at = static_cast<size_t>(r * longest + pad + j);
        ids[at] = prompt[static_cast<size_t>(j)];
        mask[at] = 1;
        pos[at] = j;
      }
    }
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    const auto device = model_->device;
    torch::Tensor input = torch::tensor(ids, longs).view({rows, longest}).to(device);
    torch::Tensor keyMask = torch::tensor(mask, longs).view({rows, longest}).to(device);
    torch::Tensor position = torch::tensor(pos, longs).view({rows, longest}).to(device);
    std::vector<int64_t> active(static_cast<size_t>(rows));  // the batch's rows still generating, in order
    std::iota(active.begin(), active.end(), int64_t{0});
    std::vector<KvCache> caches;
    while (!active.empty()) {
      const torch::Tensor states = decoder.forwardCached(input, position, keyMask, caches);
      const torch::Tensor logits = model_->logits(states.select(1, states.size(1) - 1));  // [active, vocab]
      std::vector<int64_t> next(active.size());
      if (sampling_.temperature <= 0) {
        // The first of equal maxima, as torch.argmax (and so transformers' greedy search) picks.
        const torch::Tensor best = logits.argmax(-1).to(torch::kCPU).contiguous();
        std::copy(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + best.numel(), next.begin());
      } else {
        for (size_t a = 0; a < active.size(); ++a) next[a] = sampleToken(logits[static_cast<int64_t>(a)], sampling_, generator);
      }
      if (streaming_) stream(start, active, next);
      std::vector<int64_t> keep, kept, keptNext;
      for (size_t a = 0; a < active.size(); ++a) {
        const int64_t r = active[a];
        auto& out = outputs_[start + static_cast<size_t>(r)];
        out.push_back(static_cast<int32_t>(next[a]));
        const bool done = stop_.count(next[a]) > 0 || static_cast<int64_t>(out.size()) >= maxNew_ ||
                          length[static_cast<size_t>(r)] + static_cast<int64_t>(out.size()) >= positions;
        if (!done) {
          keep.push_back(static_cast<int64_t>(a));
          kept.push_back(r);
          keptNext.push_back(next[a]);
        }
      }
      if (kept.empty()) break;
      const torch::Tensor lastPosition = position.select(1, position.size(1) - 1);
      if (kept.size() != active.size()) {
        const torch::Tensor rowsKept = torch::tensor(keep, longs).to(device);
        for (auto& cache : caches) cache.keepRows(rowsKept);
        keyMask = keyMask.index_select(0, rowsKept);
        position = lastPosition.index_select(0, rowsKept);
      } else {
        position = lastPosition;
      }
      active = kept;
      const auto count = static_cast<int64_t>(active.size());
      input = torch::tensor(keptNext, longs).view({count, 1}).to(device);
      position = (position + 1).view({count, 1});
      keyMask = torch::cat({keyMask, torch::ones({count, 1}, keyMask.options())}, 1);
    }
  }
  ~GenerateWorker() override { endStream(); }

  void endStream() {
    if (streaming_.exchange(false)) onTokens_.Release();
  }

  // Hands the step's tokens to the JS thread: [prompt index, token] pairs, the prompt indices the worker's own.
  void stream(size_t start, const std::vector<int64_t>& active, const std::vector<int64_t>& next) {
    auto* pairs = new std::vector<int32_t>();
    for (size_t a = 0; a < active.size(); ++a) {
      pairs->push_back(static_cast<int32_t>(start + static_cast<size_t>(active[a])));
      pairs->push_back(static_cast<int32_t>(next[a]));
    }
    const napi_status status = onTokens_.NonBlockingCall(pairs, [](Napi::Env env, Napi::Function callback, std::vector<int32_t>* data) {
      std::unique_ptr<std::vector<int32_t>> owned(data);
      if (env == nullptr) return;  // the environment is going away
      const size_t n = owned->size() / 2;
      auto indices = Napi::Int32Array::New(env, n), tokens = Napi::Int32Array::New(env, n);
      for (size_t i = 0; i < n; ++i) {
        indices[i] = (*owned)[2 * i];
        tokens[i] = (*owned)[2 * i + 1];
      }
      try {
        callback.Call({indices, tokens});
      } catch (const Napi::Error&) {
        // The JS side catches its own errors (lib/generator.ts); nothing to hand one to here.
      }
    });
    if (status != napi_ok) delete pairs;
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
  Sampling sampling_;
  int64_t batchSize_;
  std::atomic<bool> streaming_;
  Napi::ThreadSafeFunction onTokens_;
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
    Sampling sampling;
    sampling.temperature = numberOr(args, "temperature", 0);
    sampling.topP = numberOr(args, "topP", 1);
    const double topK = numberOr(args, "topK", 0), seed = numberOr(args, "seed", 0);
    if (!(sampling.temperature >= 0) || !std::isfinite(sampling.temperature)) throw invalidArgument("temperature must be a number >= 0 (0: greedy)");
    if (!(sampling.topP > 0 && sampling.topP <= 1)) throw invalidArgument("topP must be in (0, 1]");
    if (!(topK >= 0) || topK != std::floor(topK)) throw invalidArgument("topK must be an integer >= 0 (0: no cut)");
    if (!(seed >= 0) || seed != std::floor(seed)) throw invalidArgument("seed must be an integer >= 0");
    sampling.topK = static_cast<int64_t>(topK);
    sampling.seed = static_cast<uint64_t>(seed);
    const double batchSize = numberOr(args, "batchSize", 8);
    if (!(batchSize >= 1) || batchSize != std::floor(batchSize)) throw invalidArgument("batchSize must be a positive integer");
    const Napi::Value onTokens = args.Get("onTokens");
    if (!onTokens.IsUndefined() && !onTokens.IsFunction()) throw invalidArgument("onTokens must be a function");
    return (new GenerateWorker(env, std::move(model), std::move(prompts), static_cast<int64_t>(maxNew), std::move(stop), sampling,
                               static_cast<int64_t>(batchSize), onTokens.IsFunction() ? onTokens.As<Napi::Function>() : Napi::Function()))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace coltrast
