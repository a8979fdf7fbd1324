// What every architecture behind `Encoder` provides: token states from token ids. The N-API layer,
// pooling and training code only see this interface, so a new architecture (a decoder LLM for CoTrEnD,
// a cross-encoder) is one new file plus one line in registry.cc.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../safetensors.h"
#include "checkpoint.h"

namespace coltrast {

// The prefix of every name in a PEFT adapter file (PeftModel's "base_model" and the LoRA model's "model").
inline const std::string PEFT_PREFIX = "base_model.model.";

class TransformerEncoder : public torch::nn::Module {
 public:
  // inputIds, attentionMask (1 = token, 0 = padding) and tokenTypeIds: int64 [batch, seq] on the
  // model's device. Returns the last hidden states [batch, seq, hiddenSize] in the model's dtype.
  virtual torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                                const torch::Tensor& tokenTypeIds) = 0;
  virtual int64_t hiddenSize() const = 0;
  virtual int64_t maxPositions() const = 0;
  // The layers of the stack (num_hidden_layers).
  virtual int64_t layerCount() const = 0;
  // The rows of the token embedding matrix: token ids must be below it.
  virtual int64_t vocabularySize() const = 0;
  // The rows of the token type embeddings the model adds, 0 when it reads no token types.
  virtual int64_t tokenTypeCount() const { return 0; }
  virtual std::string modelType() const = 0;
  // The token embedding matrix [vocab, hidden], which a causal LM's output layer shares when its config ties
  // them; undefined for architectures that are not decoders.
  virtual torch::Tensor inputEmbeddings() const { return {}; }
  // The token embedding matrix [vocab, hidden] of any architecture that has one a masked-language-model head can share
  // (native/mlm_head.h): a decoder's inputEmbeddings, BERT's family's and ModernBERT's word embeddings; else undefined.
  virtual torch::Tensor tokenEmbeddings() const { return inputEmbeddings(); }
  // A causal LM's soft-capping of its logits, cap * tanh(x / cap) (Gemma 2's final_logit_softcapping); 0: none.
  virtual double finalLogitSoftcap() const { return 0; }

  // Fills every parameter from `file` (one safetensors file or its shards; names as Hugging Face saves them, with or without the
  // architecture's prefix such as `bert.`) and keeps tensors the model does not use (a pooler head,
  // position_ids) so that saving writes them back unchanged. The parameters become `dtype` first and each weight is
  // converted as it is copied in. `quantizeInt8`: each projection quantized (quantizeInt8 below) as soon as its weight
  // and bias are in, so that the float32 model is never whole in memory.
  void loadWeights(const WeightFiles& file, torch::ScalarType dtype, bool quantizeInt8 = false);
  // Parameters (with LoRA adapters merged into the weights they adapt, and not saved themselves) and kept tensors, named as Hugging Face's base model class names them, or with the task
  // heads' prefix ("bert.embeddings...") when `prefixed`, as a model with a head saves them. Refused for a model quantized
  // to int8, whose float projections are gone.
  std::vector<std::pair<std::string, torch::Tensor>> weightsForSaving(torch::ScalarType dtype, bool prefixed = false) const;
  // A kept tensor (named without the prefix, e.g. "classifier.weight"), removed from the kept ones so that it
  // is not saved twice when a head takes it over; undefined when the file had none.
  torch::Tensor takeKept(const std::string& name);
  std::string prefix() const { return weightPrefix(); }

  // LoRA adapters (Dense in models/layers.h) on the projections whose own name, the last part of their path ("query",
  // "q_proj", "Wqkv"), is in `targets`, each new (A seeded, B zero), with out += scale * B A x; returns how many.
  // Throws when no projection has such a name.
  int64_t addLora(const std::vector<std::string>& targets, int64_t rank, double scale, double dropout, uint64_t seed);
  // The adapters of a PEFT adapter file: each "<path>.lora_A.weight" with its "lora_B.weight" (the path with or
  // without PEFT's "base_model.model." and the architecture's prefix), the rank read from their shapes; returns how many.
  // Adapters of layers the model keeps without running them (BERT's pooler) are left out.
  int64_t loadLora(const WeightFiles& file, double scale, double dropout);
  // The adapters' tensors as PEFT names them ("base_model.model.<path>.lora_A.weight"; with the task heads' prefix,
  // "base_model.model.bert.<path>...", when `prefixed`, as on a model with a head), in `dtype` on the CPU.
  std::vector<std::pair<std::string, torch::Tensor>> loraWeights(torch::ScalarType dtype, bool prefixed = false) const;
  bool hasLora() const { return !loraParameters().empty(); }
  // The adapters' A and B matrices: with adapters, the only parameters a trainer updates.
  std::vector<torch::Tensor> loraParameters() const;

  // Every projection (Dense) quantized to int8 for CPU inference (DenseImpl::quantizeInt8: their float weights given
  // back); returns how many.
  int64_t quantizeInt8();
  bool quantizedInt8() const;

  // While set, forward appends the hidden states that enter each layer of the stack, in order: transformers'
  // hidden_states[0 .. layers - 1] (the embeddings' output, then each layer's but the last's). For AdaptiveLayerLoss
  // training (native/train); see LayerInputs.
  std::vector<torch::Tensor>* layerInputs = nullptr;

  // Gradient checkpointing in training (models/checkpoint.h): each layer's activations are recomputed in backward
  // instead of kept. Set by the trainer.
  bool gradientCheckpointing = false;

 protected:
  // The prefix Hugging Face's task heads put before the base model's names ("bert.").
  virtual std::string weightPrefix() const = 0;
  // Other names a checkpoint may store the parameter `name` under (tied weights: T5's shared table as
  // encoder.embed_tokens.weight), read when the file lacks `name` itself.
  virtual std::vector<std::string> tiedCopies(const std::string& name) const { return {}; }
  // Whether a tensor of the file that no parameter took (named as stored) is kept and saved back; false drops it at
  // load (T5's decoder, in a checkpoint of the whole encoder-decoder).
  virtual bool keepsUnused(const std::string& stored) const { return true; }
  // One layer of the stack on `hidden`, checkpointed (models/checkpoint.h) when gradientCheckpointing is on and
  // autograd records the layer. What a layer takes from parameters outside it (a relative position bias shared by the
  // layers) comes in `shared`, not captured by the function: see checkpointLayer.
  torch::Tensor runLayer(const SharedInputLayer& layer, const torch::Tensor& hidden, const std::vector<torch::Tensor>& shared);
  torch::Tensor runLayer(const std::function<torch::Tensor(const torch::Tensor&)>& layer, const torch::Tensor& hidden);

 private:
  bool checkpointed(const torch::Tensor& hidden) const;

  struct Kept {
    std::string name;  // without the prefix
    bool prefixed;     // the file named it with the prefix (a base-model tensor of a model with a head)
    torch::Tensor value;
  };
  std::vector<Kept> kept_;
};

// Points `model`'s layerInputs at `into` for its lifetime (nothing when `into` is null).
class LayerInputs {
 public:
  LayerInputs(TransformerEncoder& model, std::vector<torch::Tensor>* into) : model_(model) { model_.layerInputs = into; }
  ~LayerInputs() { model_.layerInputs = nullptr; }
  LayerInputs(const LayerInputs&) = delete;
  LayerInputs& operator=(const LayerInputs&) = delete;

 private:
  TransformerEncoder& model_;
};

using EncoderFactory = std::function<std::shared_ptr<TransformerEncoder>(const nlohmann::json& config)>;

// Builds the architecture named by config.json's `model_type`, or throws UNSUPPORTED_MODEL.
std::shared_ptr<TransformerEncoder> createEncoder(const nlohmann::json& config);
// The model types createEncoder accepts.
std::vector<std::string> supportedModelTypes();

}  // namespace coltrast
