// The JS class `NativeEncoder`: a loaded TransformerEncoder on one device. lib/encoder.ts is its only
// user; it validates every argument before calling in, so this layer converts and computes.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "models/transformer_encoder.h"

namespace coltrast {

// What the JS object and each in-flight worker share: dispose() drops the JS object's reference and the
// model's memory goes when the last running worker finishes with it.
struct LoadedEncoder {
  std::shared_ptr<TransformerEncoder> model;
  // sentence-transformers' Dense module after pooling (a trained projection head), or none.
  torch::nn::Linear dense{nullptr};
  bool denseTanh = false;
  // Hugging Face's sequence-classification head (a cross-encoder): the pooler (dense + tanh of the first
  // token's state, when the model has one) and the classifier. Both float32, like the Dense head. RoBERTa's and
  // MPNet's head (robertaHead) is the same computation under other names, classifier.dense and classifier.out_proj,
  // with dropout before its dense layer too.
  torch::nn::Linear pooler{nullptr};
  torch::nn::Linear classifier{nullptr};
  bool robertaHead = false;
  // The dropout before the classifier in training (config.json's classifier_dropout, else hidden_dropout_prob).
  double classifierDropout = 0.1;
  // A causal language model's output layer (Hugging Face's lm_head, no bias, in the model's dtype), or none; with
  // tiedLmHead the output layer is the token embedding matrix itself (config.json's tie_word_embeddings).
  torch::nn::Linear lmHead{nullptr};
  bool tiedLmHead = false;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  std::mutex mutex;  // one forward at a time per model: concurrent embed() calls queue here

  // The pooled vector through the projection head (unchanged without one); float32 in and out.
  torch::Tensor project(const torch::Tensor& pooled) const;
  // The classifier's logits [batch, labels] (float32) from the model's last hidden states; `training`
  // applies the dropout before the classifier, as Hugging Face's *ForSequenceClassification does.
  torch::Tensor classify(const torch::Tensor& states, bool training = false) const;
  bool causalLm() const { return lmHead || tiedLmHead; }
  // Next-token logits (float32) from the last hidden states [..., hidden] of a causal language model.
  torch::Tensor logits(const torch::Tensor& states) const;
  // Every trained tensor: the model's parameters, then the heads' (the order of saved optimizer state).
  std::vector<torch::Tensor> parameters() const;
};

class EncoderWrap : public Napi::ObjectWrap<EncoderWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit EncoderWrap(const Napi::CallbackInfo& info);
  // The model behind a NativeEncoder JS object (for the trainer); throws if it is not one or was disposed.
  static std::shared_ptr<LoadedEncoder> shared(const Napi::Object& object);

 private:
  static Napi::Value load(const Napi::CallbackInfo& info);
  Napi::Value embed(const Napi::CallbackInfo& info);
  Napi::Value saveWeights(const Napi::CallbackInfo& info);
  Napi::Value addProjection(const Napi::CallbackInfo& info);
  Napi::Value info(const Napi::CallbackInfo& info);
  Napi::Value logLikelihood(const Napi::CallbackInfo& info);
  Napi::Value generate(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<LoadedEncoder> live(Napi::Env env) const;

  std::shared_ptr<LoadedEncoder> encoder_;
};

}  // namespace coltrast
