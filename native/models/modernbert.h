// ModernBERT (answerdotai/ModernBERT, gte-modernbert, modernbert-embed, ...), with module and parameter names identical
// to Hugging Face's ModernBertModel so weights load and save by name: token embeddings and a norm, then pre-norm
// layers (the first without an attention norm) of rotary self-attention, global in every
// `global_attn_every_n_layers`-th layer (rope theta 160000 by default) and within a window of local_attention / 2
// tokens either side in the others (theta 10000), and a GeGLU feed-forward; a final norm. Biases and norm biases as
// the config says (none by default). transformers 4 configs (global_attn_every_n_layers, global_rope_theta) and 5
// (layer_types, rope_parameters) both read.
#pragma once
#include "layers.h"
#include "transformer_encoder.h"

namespace coltrast {

struct ModernBertConfig {
  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0, numHeads = 0, intermediateSize = 0, maxPositions = 0;
  int64_t window = 64;  // local layers attend to keys at most this many positions away (local_attention / 2)
  std::vector<bool> global;  // per layer: full attention (else local)
  double globalTheta = 160000.0, localTheta = 10000.0, normEps = 1e-5;
  double embeddingDropout = 0.0, attentionDropout = 0.0, mlpDropout = 0.0;
  bool normBias = false, attentionBias = false, mlpBias = false;
  std::string activation = "gelu";
  static ModernBertConfig fromJson(const nlohmann::json& config);
};

struct ModernBertLayerImpl : torch::nn::Module {
  ModernBertLayerImpl(const ModernBertConfig& c, int64_t index);
  // cos, sin: [seq, headDim] for this layer's kind of attention; mask: boolean, broadcastable to [batch, 1, seq, seq],
  // or undefined when every key is seen; emptyRows: boolean [batch, 1, seq, 1], the positions whose attention output
  // is zero (no key in their window), or undefined.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask,
                        const torch::Tensor& emptyRows = {});
  ModernBertConfig config;
  Norm attn_norm{nullptr}, mlp_norm{nullptr};  // attn_norm: none in the first layer
  Dense Wqkv{nullptr}, attnWo{nullptr}, Wi{nullptr}, mlpWo{nullptr};
};
TORCH_MODULE(ModernBertLayer);

class ModernBertModel : public TransformerEncoder {
 public:
  explicit ModernBertModel(const ModernBertConfig& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.hiddenSize; }
  int64_t maxPositions() const override { return config_.maxPositions; }
  int64_t layerCount() const override { return config_.numLayers; }
  int64_t vocabularySize() const override { return tokEmbeddings_->weight.size(0); }
  std::string modelType() const override { return "modernbert"; }
  torch::Tensor tokenEmbeddings() const override { return tokEmbeddings_->weight; }

 protected:
  std::string weightPrefix() const override { return "model."; }

 private:
  ModernBertConfig config_;
  torch::nn::Embedding tokEmbeddings_{nullptr};
  Norm embeddingNorm_{nullptr}, finalNorm_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
};

}  // namespace coltrast
