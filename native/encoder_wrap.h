// The JS class `NativeEncoder`: a loaded TransformerEncoder on one device. lib/encoder.ts is its only
// user; it validates every argument before calling in, so this layer converts and computes.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "mlm_head.h"
#include "models/layers.h"
#include "models/transformer_encoder.h"
#include "napi_args.h"

namespace coltrast {

// What the JS object and each in-flight worker share: dispose() drops the JS object's reference and the
// model's memory goes when the last running worker finishes with it.
struct LoadedEncoder {
  std::shared_ptr<TransformerEncoder> model;
  // sentence-transformers' Dense module after pooling (a trained projection head), or none; and the Dense modules
  // that follow it (EmbeddingGemma's second), each with its own activation (tanh or identity).
  torch::nn::Linear dense{nullptr};
  bool denseTanh = false;
  struct DenseLayer {
    torch::nn::Linear linear;
    bool tanh = false;
  };
  std::vector<DenseLayer> denseStack;
  // Hugging Face's sequence-classification head (a cross-encoder), float32 like the Dense head: the first token's
  // state (ModernBERT with classifier_pooling "mean": the mean over the attended tokens), dropout (`inputDropout`:
  // RoBERTa's, DeBERTa's pooler_dropout), `pooler`, a dense layer and its activation (BERT's pooler and RoBERTa's
  // classifier.dense: tanh, ELECTRA's: GELU; DistilBERT's pre_classifier: ReLU; DeBERTa's pooler.dense:
  // pooler_hidden_act; ModernBERT's head.dense: classifier_activation, then head.norm), dropout, and `classifier`.
  // The names each family saves them under: headNames(). A decoder LLM's (Decoder: Qwen3ForSequenceClassification and
  // the like) is the last attended token's state and `classifier` alone (Hugging Face's `score`, no bias); or, for a
  // reranker scored by sentence-transformers' LogitScore on a causal LM, the language-model head's logits of
  // `scoreTokens` (int64 [1 or 2]: the true token's, minus the false token's), computed from its rows each time so
  // that training trains the lm_head (or the tied embeddings) itself.
  enum class HeadKind { Bert, Roberta, DistilBert, Deberta, ModernBert, Decoder };
  HeadKind headKind = HeadKind::Bert;
  torch::nn::Linear pooler{nullptr};
  torch::nn::Linear classifier{nullptr};
  Norm headNorm{nullptr};
  std::string headActivation = "tanh";
  bool meanPoolHead = false;
  torch::Tensor scoreTokens;
  // The dropout before the head's dense layer and before the classifier in training (the latter: config.json's
  // classifier_dropout, else hidden_dropout_prob; DistilBERT's seq_classif_dropout; DeBERTa's cls_dropout, else
  // hidden_dropout_prob).
  double inputDropout = 0.0, classifierDropout = 0.1;
  // A new head's modules beside the classifier (drawn, not read from the weights file), by the names PEFT's
  // modules_to_save matches them with: "pooler" (BERT without a pooler in its file, DeBERTa), "pre_classifier"
  // (DistilBERT), "head" (ModernBERT).
  std::vector<std::string> newHeadModules;
  // With LoRA adapters on a cross-encoder: PEFT's modules_to_save, the head modules that train with the adapters and
  // are saved in the adapter file (headTensorsMatching()).
  std::vector<std::string> loraModulesToSave;
  // A causal language model's output layer (Hugging Face's lm_head, no bias, in the model's dtype), or none; with
  // tiedLmHead the output layer is the token embedding matrix itself (config.json's tie_word_embeddings).
  torch::nn::Linear lmHead{nullptr};
  bool tiedLmHead = false;
  // A masked language model's prediction head (a sparse encoder, SPLADE), or none.
  std::shared_ptr<MlmHead> mlm;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  std::mutex mutex;  // one forward at a time per model: concurrent embed() calls queue here

  // The pooled vector through the projection head (unchanged without one); float32 in and out.
  torch::Tensor project(const torch::Tensor& pooled) const;
  // The classifier's logits [batch, labels] (float32) from the model's last hidden states and the attention mask;
  // `training` applies the head's dropout, as Hugging Face's *ForSequenceClassification does.
  torch::Tensor classify(const torch::Tensor& states, const torch::Tensor& mask, bool training = false) const;
  bool causalLm() const { return lmHead || tiedLmHead; }
  // Whether classify() has a head to score with (a classifier, or LogitScore's tokens).
  bool scores() const { return classifier || scoreTokens.defined(); }
  // Next-token logits (float32) from the last hidden states [..., hidden] of a causal language model.
  torch::Tensor logits(const torch::Tensor& states) const;
  // Logits through the model's final soft-capping (Gemma 2's), as its *ForCausalLM gives them.
  torch::Tensor softcapped(const torch::Tensor& logits) const;
  // Every trained tensor: the model's parameters, then the heads' (the order of saved optimizer state).
  std::vector<torch::Tensor> parameters() const;
  // A cross-encoder's head parameters as its *ForSequenceClassification names them ("bert.pooler.dense.weight",
  // "classifier.weight"); empty without one.
  std::vector<std::pair<std::string, torch::Tensor>> headTensors() const;
  // The head parameters in modules `modules` names by PEFT's modules_to_save rule (peft.utils.other._set_trainable: a
  // module whose path ends with one of the names, "pre_classifier" ending with "classifier" too). Throws when a name
  // matches a module of the base model, which coltrast does not train beside adapters, or the model has no head.
  std::vector<std::pair<std::string, torch::Tensor>> headTensorsMatching(const std::vector<std::string>& modules) const;
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
  Napi::Value addLora(const Napi::CallbackInfo& info);
  Napi::Value quantizeInt8(const Napi::CallbackInfo& info);
  Napi::Value loadLora(const Napi::CallbackInfo& info);
  Napi::Value saveLora(const Napi::CallbackInfo& info);
  Napi::Value info(const Napi::CallbackInfo& info);
  Napi::Value logLikelihood(const Napi::CallbackInfo& info);
  Napi::Value generate(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<LoadedEncoder> live(Napi::Env env) const;

  std::shared_ptr<LoadedEncoder> encoder_;
};

// checkTokenRange against the model's vocabulary and token types.
inline void checkTokens(const TokenBatch& b, const TransformerEncoder& m, const std::string& name) {
  checkTokenRange(b, m.vocabularySize(), m.tokenTypeCount(), name);
}

}  // namespace coltrast
