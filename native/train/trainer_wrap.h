// The JS class `NativeTrainer` (see trainer_wrap.cc): optimizer state bound to a loaded encoder.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "encoder_wrap.h"
#include "train/precision.h"

namespace coltrast {

struct TrainerState {
  std::shared_ptr<LoadedEncoder> encoder;  // training updates this model in place; Encoder.save() writes it
  // Contrastive Tension (Carlsson et al. 2021): a second, independently trained copy of the model that encodes
  // the queries (the encoder above encodes the documents and is the model kept), or none.
  std::shared_ptr<LoadedEncoder> twin;
  // ContextFlow (retrieval-augmented generation trained jointly): the decoder LLM that generates the answer from
  // each retrieved document, or none. Trained with the encoder unless `generatorFrozen`.
  std::shared_ptr<LoadedEncoder> generator;
  bool generatorFrozen = false;
  // Everything the optimizer may update: the encoder's parameters, then the twin's, then the generator's (the
  // order of the saved optimizer state; frozen ones have none).
  std::vector<torch::Tensor> parameters() const;
  // The model that encodes the queries: the twin when there is one.
  LoadedEncoder& queryEncoder() const { return twin ? *twin : *encoder; }
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t steps = 0;
  // This run's random-number state (dropout). Swapped into libtorch's global CPU generator for each step,
  // so a run's randomness depends on its seed alone, not on other work in the process.
  at::Tensor rngState;
  // On a GPU, the same for the device's generator, which dropout there draws from (seeded from the same seed).
  at::Tensor cudaRngState;
  // The precision of the forward pass (kFloat32: no autocast) and float16's loss scaling.
  torch::ScalarType autocast = torch::kFloat32;
  GradScaler scaler;
};

class TrainerWrap : public Napi::ObjectWrap<TrainerWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TrainerWrap(const Napi::CallbackInfo& info);

 private:
  static Napi::Value create(const Napi::CallbackInfo& info);
  Napi::Value step(const Napi::CallbackInfo& info);
  Napi::Value evaluate(const Napi::CallbackInfo& info);
  // Optimizer moments, step counts and the random-number state, to and from a safetensors file.
  Napi::Value saveState(const Napi::CallbackInfo& info);
  Napi::Value loadState(const Napi::CallbackInfo& info);
  Napi::Value run(const Napi::CallbackInfo& info, bool train);
  void dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<TrainerState> live(Napi::Env env) const;

  std::shared_ptr<TrainerState> state_;
};

}  // namespace coltrast
