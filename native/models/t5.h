// The encoder of T5 (Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
// Transformer", 2020) and mT5, as sentence-T5, GTR and Instructor embed with it: module and parameter names identical to
// Hugging Face's T5EncoderModel (shared, encoder.block.N.layer.0.SelfAttention.{q,k,v,o}, ...), so weights load and
// save by name. Token embeddings (not scaled, no positions), then pre-norm blocks of self-attention, unscaled, with a
// bucketed relative position bias that the first block's table holds and every block adds, and a feed-forward (ReLU
// with wi and wo, or gated with wi_0, wi_1 and wo as T5 v1.1, mT5 and Flan-T5), each behind T5's layer norm (a scale,
// no mean and no bias); a final norm. No biases anywhere. float16 hidden states are clamped below infinity after
// each half-block, as transformers does.
#pragma once
#include "layers.h"
#include "transformer_encoder.h"

namespace coltrast {

struct T5Config {
  std::string modelType;
  int64_t vocabSize = 0, dModel = 0, dKv = 0, numHeads = 0, dFf = 0, numLayers = 0;
  int64_t buckets = 32, maxDistance = 128;
  int64_t maxPositions = 512;  // n_positions: what the model was trained on (relative positions set no hard limit)
  double eps = 1e-6, dropout = 0.1;
  bool gated = false;              // feed_forward_proj "gated-<act>"
  std::string activation = "relu";  // Hugging Face's name; "gated-gelu" means gelu_new
  static T5Config fromJson(const nlohmann::json& config);
};

// T5's layer norm: x / sqrt(mean(x^2) + eps) (the mean of squares taken in float32), times the weight; back in the
// weight's dtype when that is float16 or bfloat16.
struct T5NormImpl : torch::nn::Module {
  T5NormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(T5Norm);

struct T5BlockImpl : torch::nn::Module {
  T5BlockImpl(const T5Config& c, bool hasRelativeBias);
  // bias: additive, broadcastable to [batch, heads, seq, seq]: the relative position bias with padding keys at the
  // dtype's lowest value.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& bias);
  T5Config config;
  Dense q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, wi{nullptr}, wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
  T5Norm attentionNorm{nullptr}, ffNorm{nullptr};
  torch::nn::Embedding relativeBias{nullptr};  // the first block's only
};
TORCH_MODULE(T5Block);

class T5EncoderModel : public TransformerEncoder {
 public:
  explicit T5EncoderModel(const T5Config& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.dModel; }
  int64_t maxPositions() const override { return config_.maxPositions; }
  int64_t layerCount() const override { return config_.numLayers; }
  int64_t vocabularySize() const override { return shared_->weight.size(0); }
  std::string modelType() const override { return config_.modelType; }

 protected:
  // T5's classes name the encoder's weights alike (no task prefix).
  std::string weightPrefix() const override { return ""; }
  std::vector<std::string> tiedCopies(const std::string& name) const override;
  // A whole encoder-decoder checkpoint's decoder, output layer and the encoder's copy of the shared table are dropped:
  // coltrast trains and saves the encoder, as T5EncoderModel holds it.
  bool keepsUnused(const std::string& stored) const override;

 private:
  // The relative position bias [1, heads, seq, seq] in `dtype`.
  torch::Tensor positionBias(int64_t seq, const torch::Device& device, torch::ScalarType dtype);

  T5Config config_;
  torch::nn::Embedding shared_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  T5Norm finalNorm_{nullptr};
};

}  // namespace coltrast
