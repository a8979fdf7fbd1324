// DeBERTa-v2 and DeBERTa-v3 (`model_type: deberta-v2`: microsoft/deberta-v3-*, mxbai-rerank-*-v1, NLI and reranking
// cross-encoders), with module and parameter names identical to Hugging Face's DebertaV2Model so weights load and save
// by name. Post-norm layers like BERT's, whose attention adds disentangled relative-position terms to the
// content-to-content scores (He et al., "DeBERTa: Decoding-enhanced BERT with Disentangled Attention", 2021):
// content-to-position (c2p: a query against the embedding of its distance to the key) and position-to-content (p2c: a
// key against the embedding of the query's distance to it), with distances in log buckets past position_buckets / 2
// (v3), one table of relative embeddings shared by all layers (layer-normed when norm_rel_ebd says so) and projected by
// each layer's own key and query projections (share_att_key) or by separate ones (pos_key_proj, pos_query_proj).
// Absolute positions (position_biased_input), token types, narrow embeddings projected to the hidden size (embed_proj)
// and v2's convolution beside the first layer (conv_kernel_size) as the config says.
#pragma once
#include "layers.h"
#include "transformer_encoder.h"

namespace coltrast {

struct DebertaConfig {
  int64_t vocabSize = 0, hiddenSize = 0, embeddingSize = 0, numLayers = 0, numHeads = 0, headSize = 0, intermediateSize = 0;
  int64_t maxPositions = 512, typeVocabSize = 0;
  bool positionBiasedInput = true;  // absolute position embeddings added to the token embeddings
  bool relativeAttention = false, shareAttKey = false, c2p = false, p2c = false, normRelEmbeddings = false;
  int64_t positionBuckets = -1;       // > 0: log buckets, and the relative table has 2 * positionBuckets rows
  int64_t maxRelativePositions = -1;  // the farthest distance told apart (max_position_embeddings when unset)
  int64_t convKernel = 0, convGroups = 1;
  std::string convAct = "tanh", hiddenAct = "gelu";
  double layerNormEps = 1e-7, hiddenDropout = 0.1, attentionDropout = 0.1;
  static DebertaConfig fromJson(const nlohmann::json& config);
  // Rows of the relative embedding table either side of distance 0 (Hugging Face's pos_ebd_size).
  int64_t span() const { return positionBuckets > 0 ? positionBuckets : maxRelativePositions; }
  // The divisor of the scores: sqrt(head size * (1 + one per relative term)).
  double scale() const;
};

struct DebertaLayerImpl : torch::nn::Module {
  explicit DebertaLayerImpl(const DebertaConfig& c);
  // keyMask: boolean [batch, 1, 1, seq] (true for tokens), or undefined without padding. relEmbeddings: the relative
  // embedding table [2 * span, hidden] (normed), c2pIndex and p2cIndex: int64 [seq, seq], the rows of the table each
  // query-key pair reads; all undefined without relative attention.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& keyMask, const torch::Tensor& relEmbeddings,
                        const torch::Tensor& c2pIndex, const torch::Tensor& p2cIndex);
  DebertaConfig config;
  Dense query{nullptr}, key{nullptr}, value{nullptr}, posKey{nullptr}, posQuery{nullptr}, attentionOut{nullptr},
      intermediate{nullptr}, output{nullptr};
  torch::nn::LayerNorm attentionNorm{nullptr}, outputNorm{nullptr};
};
TORCH_MODULE(DebertaLayer);

class DebertaModel : public TransformerEncoder {
 public:
  explicit DebertaModel(const DebertaConfig& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.hiddenSize; }
  int64_t maxPositions() const override { return config_.maxPositions; }
  int64_t layerCount() const override { return config_.numLayers; }
  int64_t vocabularySize() const override { return wordEmbeddings_->weight.size(0); }
  int64_t tokenTypeCount() const override { return tokenTypeEmbeddings_ ? tokenTypeEmbeddings_->weight.size(0) : 0; }
  std::string modelType() const override { return "deberta-v2"; }

 protected:
  std::string weightPrefix() const override { return "deberta."; }

 private:
  torch::Tensor embed(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds);
  // The relative embedding table as the layers read it (layer-normed when norm_rel_ebd says so).
  torch::Tensor relativeEmbeddings();
  // v2's convolution over the embeddings, added to the first layer's output and normed.
  torch::Tensor convolve(const torch::Tensor& embeddings, const torch::Tensor& layerOutput, const torch::Tensor& attentionMask);

  DebertaConfig config_;
  torch::nn::Embedding wordEmbeddings_{nullptr}, positionEmbeddings_{nullptr}, tokenTypeEmbeddings_{nullptr}, relEmbeddings_{nullptr};
  Dense embedProj_{nullptr};
  torch::nn::LayerNorm embeddingNorm_{nullptr}, relNorm_{nullptr}, convNorm_{nullptr};
  torch::nn::Conv1d conv_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
};

// The relative position of key j seen from query i (i - j) for i, j < seq, in DeBERTa's log buckets when buckets > 0:
// exact within buckets / 2, then ceil(log(|d| / mid) / log((maxRelative - 1) / mid) * (mid - 1)) + mid, signed, in
// float32 as transformers computes it. int64 [seq, seq] on the CPU.
torch::Tensor debertaRelativePositions(int64_t seq, int64_t buckets, int64_t maxRelative);

}  // namespace coltrast
