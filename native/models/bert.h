// BERT-family encoder (BERT, MiniLM, BGE, E5, ... every `model_type: bert` checkpoint), with module and
// parameter names identical to Hugging Face's BertModel so weights load and save by name.
#pragma once
#include "transformer_encoder.h"

namespace coltrast {

// Self-attention through libtorch's scaled_dot_product_attention (libtorch 2.0 and later), which picks a
// fused kernel for the device and inputs: FlashAttention or memory-efficient attention on a GPU (no
// [batch, heads, seq, seq] score tensor kept for backward), a flash kernel on the CPU when there is no
// dropout, and otherwise the eager math below it. Hugging Face's BERT uses the same function by default.
// false with libtorch 1.13, which lacks it, or when COLTRAST_EAGER_ATTENTION=1 asks for the eager form
// (matmul, softmax, dropout, matmul), so that benchmarks can compare the two in one build.
bool fusedAttention();

struct BertConfig {
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t intermediateSize = 0;
  int64_t maxPositions = 0;
  int64_t typeVocabSize = 0;
  double layerNormEps = 1e-12;
  double hiddenDropout = 0.1;
  double attentionDropout = 0.1;
  std::string hiddenAct = "gelu";
  static BertConfig fromJson(const nlohmann::json& config);
};

struct BertEmbeddingsImpl : torch::nn::Module {
  explicit BertEmbeddingsImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& tokenTypeIds);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertEmbeddings);

struct BertLayerImpl : torch::nn::Module {
  explicit BertLayerImpl(const BertConfig& c);
  // mask: [batch, 1, 1, seq]; with fused attention boolean (true for tokens) or undefined when the batch has
  // no padding, otherwise additive (0 for tokens, a large negative value for padding).
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& mask);
  int64_t numHeads, headSize;
  std::string hiddenAct;
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, attentionOut{nullptr}, intermediate{nullptr},
      output{nullptr};
  torch::nn::LayerNorm attentionNorm{nullptr}, outputNorm{nullptr};
  torch::nn::Dropout attentionDropout{nullptr}, hiddenDropout{nullptr};
};
TORCH_MODULE(BertLayer);

class BertModel : public TransformerEncoder {
 public:
  explicit BertModel(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                        const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.hiddenSize; }
  int64_t maxPositions() const override { return config_.maxPositions; }
  std::string modelType() const override { return "bert"; }

 protected:
  std::string weightPrefix() const override { return "bert."; }

 private:
  BertConfig config_;
  BertEmbeddings embeddings_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
};

}  // namespace coltrast
