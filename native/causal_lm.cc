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
    if (sums_.numel() > 0) std::memcpy(array.Data(), sums_.data_ptr<float>(), sums_.numel() * sizeof(float));
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

// Beam search (numBeams > 1), as transformers' generate(num_beams, length_penalty, early_stopping) does it: a finished
// hypothesis scores its summed log-probability divided by (new tokens) ** lengthPenalty; earlyStopping 0 (False:
// stop when the best running beam, at its current length, cannot beat the worst kept hypothesis), 1 (True: stop when
// numBeams hypotheses are finished) or 2 ("never": the canonical test, at the longest length when lengthPenalty > 0).
struct Beams {
  int64_t numBeams = 1;
  double lengthPenalty = 1;
  int earlyStopping = 0;
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
  // each: the tokens the step added. Calls may arrive after the promise settles (the step calls and the work's
  // completion are separate wake-ups of the event loop): the result counts the calls queued, so the caller can wait
  // for them all (lib/generator.ts).
  // `cancel` (optional): an Int32Array with a flag per prompt that the JS thread sets to stop that prompt's generation
  // (read at each step; the prompt keeps the tokens it has).
  GenerateWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> model, std::vector<std::vector<int64_t>> prompts, int64_t maxNew,
                 std::set<int64_t> stop, Sampling sampling, Beams beams, int64_t batchSize, Napi::Function onTokens, Napi::Value cancel)
      : PromiseWorker(env, model->device),
        model_(std::move(model)),
        prompts_(std::move(prompts)),
        maxNew_(maxNew),
        stop_(std::move(stop)),
        sampling_(sampling),
        beams_(beams),
        batchSize_(batchSize),
        streaming_(!onTokens.IsEmpty()) {
    if (streaming_) onTokens_ = Napi::ThreadSafeFunction::New(env, onTokens, "coltrast generate onTokens", 0, 1);
    if (!cancel.IsUndefined()) {
      auto flags = cancel.As<Napi::Int32Array>();
      cancelRef_ = Napi::Persistent(flags);
      cancel_ = flags.Data();
    }
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
    const int64_t positions = decoder->maxPositions();
    // Its own generator: a seeded run draws the same tokens whatever else the process does.
    at::Generator generator = at::detail::createCPUGenerator(sampling_.seed);
    outputs_.resize(prompts_.size());
    for (size_t start = 0; start < prompts_.size(); start += static_cast<size_t>(batchSize_)) {
      const size_t end = std::min(prompts_.size(), start + static_cast<size_t>(batchSize_));
      if (beams_.numBeams > 1) {
        beamSearch(*decoder, start, end, positions);
      } else {
        generateBatch(*decoder, start, end, positions, generator);
      }
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
    stepsUntilDone([&] {
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
                          length[static_cast<size_t>(r)] + static_cast<int64_t>(out.size()) >= positions ||
                          cancelled(start + static_cast<size_t>(r));
        if (!done) {
          keep.push_back(static_cast<int64_t>(a));
          kept.push_back(r);
          keptNext.push_back(next[a]);
        }
      }
      if (kept.empty()) return false;
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
      return true;
    });
  }
  // One prompt's beam search state: its running beams and the finished hypotheses kept, as transformers' _beam_search
  // holds them for each batch item (scores in float32 tensors, added to and compared as there, so that near ties
  // break the same way).
  struct BeamState {
    size_t index;  // the prompt's
    int64_t promptLength, maxLength, length;
    std::vector<std::vector<int64_t>> running, finished;
    torch::Tensor runningScores, finishedScores;
    std::vector<bool> isFinished;
    bool improvable = true;
    // This step's choice: the running beams' parent rows (among this prompt's) and tokens.
    std::vector<int64_t> parents, tokens;
  };

  // One step of one prompt's search from its rows' log-probabilities [beams, vocab]; false when its search ends.
  bool beamStep(BeamState& st, torch::Tensor logp) {
    const int64_t beams = beams_.numBeams, vocab = logp.size(1);
    const double never = -1.0e9;
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    const int64_t keep = std::min(std::max<int64_t>(2, 1 + static_cast<int64_t>(stop_.size())) * beams, beams * vocab);
    const auto [topScores, topIndices] = (logp + st.runningScores.unsqueeze(1)).reshape({-1}).topk(keep);
    const torch::Tensor parent = topIndices.div(vocab, "floor"), token = topIndices.remainder(vocab);
    const auto* parentAt = parent.data_ptr<int64_t>();
    const auto* tokenAt = token.data_ptr<int64_t>();
    std::vector<int64_t> hitsVector(static_cast<size_t>(keep));
    for (int64_t k = 0; k < keep; ++k) hitsVector[static_cast<size_t>(k)] = stop_.count(tokenAt[k]) > 0 || st.length + 1 >= st.maxLength;
    const torch::Tensor hits = torch::tensor(hitsVector, longs).to(torch::kBool);
    const auto sequence = [&](int64_t k) {
      std::vector<int64_t> seq = st.running[static_cast<size_t>(parentAt[k])];
      seq.push_back(tokenAt[k]);
      return seq;
    };
    // The best candidates that did not just finish run on.
    const torch::Tensor runLogp = topScores + hits.to(torch::kFloat32) * never;
    const torch::Tensor next = std::get<1>(runLogp.topk(beams));
    // Candidates among the best numBeams that finished join the kept hypotheses if they beat them.
    const bool allFinished = std::all_of(st.isFinished.begin(), st.isFinished.end(), [](bool f) { return f; });
    torch::Tensor candidates = topScores / std::pow(static_cast<double>(st.length + 1 - st.promptLength), beams_.lengthPenalty);
    if (allFinished && beams_.earlyStopping == 1) candidates = candidates + never;
    if (!st.improvable) candidates = candidates + never;
    const torch::Tensor justFinished = hits.logical_and(torch::arange(keep, longs) < beams);
    candidates = candidates + justFinished.logical_not().to(torch::kFloat32) * never;
    const torch::Tensor merged = torch::cat({st.finishedScores, candidates});
    const torch::Tensor mergedOrder = std::get<1>(merged.topk(beams));
    std::vector<std::vector<int64_t>> finished, running;
    std::vector<bool> isFinished;
    for (int64_t j = 0; j < beams; ++j) {
      const int64_t m = mergedOrder[j].item<int64_t>();
      if (m < beams) {
        finished.push_back(st.finished[static_cast<size_t>(m)]);
        isFinished.push_back(st.isFinished[static_cast<size_t>(m)]);
      } else {
        finished.push_back(sequence(m - beams));
        isFinished.push_back(justFinished[m - beams].item<bool>());
      }
    }
    st.parents.clear();
    st.tokens.clear();
    for (int64_t j = 0; j < beams; ++j) {
      const int64_t k = next[j].item<int64_t>();
      running.push_back(sequence(k));
      st.parents.push_back(parentAt[k]);
      st.tokens.push_back(tokenAt[k]);
    }
    st.runningScores = runLogp.index_select(0, next);
    st.finishedScores = merged.index_select(0, mergedOrder);
    st.running = std::move(running);
    st.finished = std::move(finished);
    st.isFinished = std::move(isFinished);
    ++st.length;
    // Can a running beam still beat the worst kept hypothesis? (transformers' _check_early_stop_heuristic)
    const bool full = std::all_of(st.isFinished.begin(), st.isFinished.end(), [](bool f) { return f; });
    const int64_t bestLength = beams_.earlyStopping == 2 && beams_.lengthPenalty > 0 ? st.maxLength - st.promptLength : st.length - st.promptLength;
    const torch::Tensor bestPossible = st.runningScores.narrow(0, 0, 1) / std::pow(static_cast<double>(bestLength), beams_.lengthPenalty);
    st.improvable = st.improvable && (!full || (bestPossible > st.finishedScores.min()).item<bool>());
    const bool allHit = std::all_of(hitsVector.begin(), hitsVector.end(), [](int64_t h) { return h != 0; });
    return st.improvable && !(full && beams_.earlyStopping == 1) && !allHit;
  }

  // Beam search for prompts start .. end - 1 together: numBeams rows each (one each for the left-padded prompt
  // pass), the cache reordered by each step's parent rows; a prompt whose search ends leaves the batch.
  void beamSearch(DecoderModel& decoder, size_t start, size_t end, int64_t positions) {
    const int64_t beams = beams_.numBeams;
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    const auto floats = torch::TensorOptions().dtype(torch::kFloat32);
    const auto device = model_->device;
    const auto count = static_cast<int64_t>(end - start);
    int64_t longest = 0;
    for (size_t i = start; i < end; ++i) longest = std::max(longest, static_cast<int64_t>(prompts_[i].size()));
    std::vector<int64_t> ids(static_cast<size_t>(count * longest), 0), mask(ids.size(), 0), pos(ids.size(), 0);
    std::vector<BeamState> states;
    for (int64_t r = 0; r < count; ++r) {
      const auto& prompt = prompts_[start + static_cast<size_t>(r)];
      const auto n = static_cast<int64_t>(prompt.size()), pad = longest - n;
      for (int64_t j = 0; j < n; ++j) {
        const auto at = static_cast<size_t>(r * longest + pad + j);
        ids[at] = prompt[static_cast<size_t>(j)];
        mask[at] = 1;
        pos[at] = j;
      }
      BeamState st;
      st.index = start + static_cast<size_t>(r);
      st.promptLength = st.length = n;
      st.maxLength = std::min(n + maxNew_, positions);
      st.running.assign(static_cast<size_t>(beams), {});
      st.finished.assign(static_cast<size_t>(beams), {});
      st.runningScores = torch::zeros({beams}, floats);
      st.runningScores.narrow(0, 1, beams - 1).fill_(-1.0e9);
      st.finishedScores = torch::full({beams}, -1.0e9, floats);
      st.isFinished.assign(static_cast<size_t>(beams), false);
      states.push_back(std::move(st));
    }
    torch::Tensor input = torch::tensor(ids, longs).view({count, longest}).to(device);
    torch::Tensor keyMask = torch::tensor(mask, longs).view({count, longest}).to(device);
    torch::Tensor position = torch::tensor(pos, longs).view({count, longest}).to(device);
    std::vector<KvCache> caches;
    std::vector<size_t> active(states.size());  // states still searching, in the batch's order
    std::iota(active.begin(), active.end(), size_t{0});
    int64_t rowsPerPrompt = 1;  // the first pass has each prompt once; later ones numBeams times
    stepsUntilDone([&] {
      const torch::Tensor hidden = decoder.forwardCached(input, position, keyMask, caches);
      const torch::Tensor logp =
          torch::log_softmax(model_->logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kCPU, torch::kFloat32), -1);
      std::vector<int64_t> rows, tokens, nextPositions;
      std::vector<size_t> kept;
      for (size_t a = 0; a < active.size(); ++a) {
        BeamState& st = states[active[a]];
        const auto first = static_cast<int64_t>(a) * rowsPerPrompt;
        // On the first pass every beam starts from the prompt's one row; only beam 0 scores above -1e9.
        const torch::Tensor mine = logp.narrow(0, first, rowsPerPrompt).expand({beams, logp.size(1)});
        if (!beamStep(st, mine) || cancelled(st.index)) {
          const auto& best = st.finished[0];
          outputs_[st.index].assign(best.begin(), best.end());
          continue;
        }
        kept.push_back(active[a]);
        for (int64_t j = 0; j < beams; ++j) {
          rows.push_back(first + (rowsPerPrompt == 1 ? 0 : st.parents[static_cast<size_t>(j)]));
          tokens.push_back(st.tokens[static_cast<size_t>(j)]);
          nextPositions.push_back(st.length - 1);
        }
      }
      active = std::move(kept);
      if (active.empty()) return false;
      const auto n = static_cast<int64_t>(rows.size());
      const torch::Tensor index = torch::tensor(rows, longs).to(device);
      for (auto& cache : caches) cache.keepRows(index);
      keyMask = torch::cat({keyMask.index_select(0, index), torch::ones({n, 1}, keyMask.options())}, 1);
      input = torch::tensor(tokens, longs).view({n, 1}).to(device);
      position = torch::tensor(nextPositions, longs).view({n, 1}).to(device);
      rowsPerPrompt = beams;
      return true;
    });
  }

  ~GenerateWorker() override { endStream(); }

  // Each new token is a step of its own on the CPU compute thread: an embed() call waits for one step, not the whole
  // generation.
  bool inSteps() const override { return true; }

  // Runs `decode` as steps (one token each), without autograd and holding the model's mutex for the step only,
  // until it returns false (nothing left to generate).
  void stepsUntilDone(const std::function<bool()>& decode) {
    for (bool more = true; more;) {
      step([&] {
        torch::NoGradGuard noGrad;
        std::lock_guard<std::mutex> lock(model_->mutex);
        more = decode();
      });
    }
  }

  // Whether the JS thread asked prompt i to stop (a plain flag, written there and read here once per step).
  bool cancelled(size_t i) const { return cancel_ != nullptr && __atomic_load_n(cancel_ + i, __ATOMIC_RELAXED) != 0; }

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
    if (status == napi_ok)
      ++streamedCalls_;
    else
      delete pairs;
  }

  Napi::Value result(Napi::Env env) override {
    auto list = Napi::Array::New(env, outputs_.size());
    for (size_t i = 0; i < outputs_.size(); ++i) {
      auto ids = Napi::Int32Array::New(env, outputs_[i].size());
      if (!outputs_[i].empty()) std::memcpy(ids.Data(), outputs_[i].data(), outputs_[i].size() * sizeof(int32_t));
      list.Set(static_cast<uint32_t>(i), ids);
    }
    auto out = Napi::Object::New(env);
    out.Set("outputs", list);
    out.Set("streamedCalls", Napi::Number::New(env, static_cast<double>(streamedCalls_)));
    return out;
  }

 private:
  std::shared_ptr<LoadedEncoder> model_;
  std::vector<std::vector<int64_t>> prompts_;
  int64_t maxNew_;
  std::set<int64_t> stop_;
  Sampling sampling_;
  Beams beams_;
  int64_t batchSize_;
  std::atomic<bool> streaming_;
  // The onTokens calls queued (written by the worker thread only, read by result() after it ends).
  int64_t streamedCalls_ = 0;
  Napi::ThreadSafeFunction onTokens_;
  Napi::Reference<Napi::Int32Array> cancelRef_;  // keeps the flags' memory alive while the work runs
  const int32_t* cancel_ = nullptr;
  std::vector<std::vector<int32_t>> outputs_;
};

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
    checkTokens(batch, *model->model, "");
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
      prompts.push_back(int32ArrayOf<int64_t>(list.Get(i), "prompts[" + std::to_string(i) + "]"));
      if (prompts.back().empty()) throw invalidArgument("prompts[" + std::to_string(i) + "] is empty: generation needs a token to start from");
      checkTokenIds(prompts.back(), model->model->vocabularySize(), "prompts[" + std::to_string(i) + "]");
    }
    const int64_t maxNew = integerOr(args, "maxNewTokens", 1, INT32_MAX, 64);
    std::set<int64_t> stop;
    if (!args.Get("stopIds").IsUndefined()) {
      for (int64_t id : int32ArrayOf<int64_t>(args.Get("stopIds"), "stopIds")) stop.insert(id);
    }
    Sampling sampling;
    sampling.temperature = numberOr(args, "temperature", 0);
    sampling.topP = numberOr(args, "topP", 1);
    if (!(sampling.temperature >= 0) || !std::isfinite(sampling.temperature)) throw invalidArgument("temperature must be a number >= 0 (0: greedy)");
    if (!(sampling.topP > 0 && sampling.topP <= 1)) throw invalidArgument("topP must be in (0, 1]");
    sampling.topK = integerOr(args, "topK", 0, INT32_MAX, 0);  // 0: no cut
    sampling.seed = static_cast<uint64_t>(integerOr(args, "seed", 0, kMaxSafeInteger, 0));
    Beams beams;
    const int64_t numBeams = integerOr(args, "numBeams", 1, INT32_MAX, 1);
    const double earlyStopping = numberOr(args, "earlyStopping", 0);
    beams.lengthPenalty = numberOr(args, "lengthPenalty", 1);
    if (!std::isfinite(beams.lengthPenalty)) throw invalidArgument("lengthPenalty must be a finite number");
    if (earlyStopping != 0 && earlyStopping != 1 && earlyStopping != 2) throw invalidArgument("earlyStopping must be 0 (false), 1 (true) or 2 (never)");
    if (numBeams > 1 && sampling.temperature > 0) throw invalidArgument("beam search is deterministic: temperature must be 0 with numBeams > 1");
    if (numBeams > 1 && args.Get("onTokens").IsFunction()) throw invalidArgument("beam search cannot stream: its best hypothesis is known only at the end");
    beams.numBeams = numBeams;
    beams.earlyStopping = static_cast<int>(earlyStopping);
    const int64_t batchSize = integerOr(args, "batchSize", 1, INT32_MAX, 8);
    const Napi::Value onTokens = args.Get("onTokens");
    if (!onTokens.IsUndefined() && !onTokens.IsFunction()) throw invalidArgument("onTokens must be a function");
    const Napi::Value cancel = args.Get("cancel");
    if (!cancel.IsUndefined() && (!cancel.IsTypedArray() || cancel.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
                                  cancel.As<Napi::Int32Array>().ElementLength() != prompts.size())) {
      throw invalidArgument("cancel must be an Int32Array with one flag per prompt");
    }
    return (new GenerateWorker(env, std::move(model), std::move(prompts), maxNew, std::move(stop), sampling, beams,
                               batchSize, onTokens.IsFunction() ? onTokens.As<Napi::Function>() : Napi::Function(), cancel))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace coltrast
