// A masked language model's prediction head, as Hugging Face's *ForMaskedLM keeps it, and SPLADE's pooling of its
// vocabulary logits (sentence-transformers' SpladePooling): what a sparse encoder (SparseEncoder) runs after the
// transformer. One vector per text, as wide as the vocabulary, zero but for the tokens the text weighs.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "models/layers.h"
#include "models/transformer_encoder.h"

namespace coltrast {

// The head's parts under each family's names:
// - bert:                      cls.predictions.transform.dense, .transform.LayerNorm, cls.predictions.bias (hidden_act)
// - distilbert:                vocab_transform, vocab_layer_norm, vocab_projector.bias (config.json's activation)
// - roberta, xlm-roberta, camembert, mpnet: lm_head.dense, lm_head.layer_norm, lm_head.bias (GELU)
// - modernbert:                head.dense, head.norm, decoder.bias (classifier_activation; classifier_bias, norm_bias, decoder_bias)
// The output layer is the token embedding matrix (tied) unless config.json's tie_word_embeddings is false, when it is
// the file's decoder weight (cls.predictions.decoder.weight, vocab_projector.weight, lm_head.decoder.weight, decoder.weight).
struct MlmHead {
  struct Names {
    std::string dense, norm, bias, decoder, decoderBias;
  };
  Names names;
  torch::nn::Linear dense{nullptr};  // float32, as the other heads
  std::string activation;
  Norm norm{nullptr};
  torch::Tensor decoder;  // [vocab, hidden] in the model's dtype; undefined: tied to the token embeddings
  torch::Tensor bias;     // [vocab] in the model's dtype, or undefined (ModernBERT's decoder_bias false)

  // The head of `model` from the tensors its weights file held beside the base model (TransformerEncoder::takeKept),
  // checked against the model's shapes; throws MODEL_FILES naming a missing or misshapen tensor, UNSUPPORTED_MODEL for
  // a family without a head here. `file`: the weights file, for messages. `drawIfMissing`: a file without the head
  // (an embedding model's) gets a new one instead, drawn from `seed` as transformers initializes one (the dense
  // layer normal(0, initializer_range), the norm ones and zeros, the output layer's bias zeros; tied to the
  // embeddings), as transformers' *ForMaskedLM.from_pretrained does for a base model's checkpoint.
  static MlmHead take(TransformerEncoder& model, const nlohmann::json& config, const std::string& file, bool drawIfMissing = false, uint64_t seed = 42);
  void to(const torch::Device& device);
  // Vocabulary logits [rows, vocab] (float32) of token states [rows, hidden].
  torch::Tensor logits(const torch::Tensor& states, const torch::Tensor& tokenEmbeddings) const;
  // The trained tensors (the output layer's own weight when it is not tied).
  std::vector<torch::Tensor> parameters() const;
  // The head as *ForMaskedLM saves it, in `dtype` on the CPU (a tied output layer is not written: transformers ties it
  // again at load).
  std::vector<std::pair<std::string, torch::Tensor>> tensors(torch::ScalarType dtype) const;
};

// SpladePooling's settings: the sum over the tokens instead of the maximum ("sum"), log1p twice ("log1p_relu").
struct SpladeSettings {
  bool sum = false, log1pTwice = false;
};
// The settings its pooling_strategy ('max' | 'sum') and activation_function ('relu' | 'log1p_relu') name; throws
// INVALID_ARGUMENT for others.
SpladeSettings spladeSettings(const std::string& pooling, const std::string& activation);

// SPLADE: each token's logits through log(1 + relu(x)) (twice for "log1p_relu", OpenSearch's models), then the
// maximum (or the sum) over the attended tokens of each row: float32 [batch, vocab]. `states` [batch, seq, hidden],
// `mask` [batch, seq] (1 = token). The logits are computed a few rows at a time, so a batch never holds
// [batch, seq, vocab] at once; autograd records it (training).
torch::Tensor spladePool(const MlmHead& head, const torch::Tensor& tokenEmbeddings, const torch::Tensor& states, const torch::Tensor& mask,
                         const SpladeSettings& settings);

}  // namespace coltrast
