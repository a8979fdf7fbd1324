// The BERT family: encoders of post-norm layers (attention, add & norm, feed-forward, add & norm) with learned
// absolute positions, in four variants whose parameter names are Hugging Face's own, so weights load and save by name:
// - bert: BERT, MiniLM, BGE, E5, ... (every `model_type: bert` checkpoint): token types, positions 0, 1, 2, ...
// - roberta, xlm-roberta, camembert: positions counted from pad_token_id + 1 over the non-padding tokens; token
//   types always 0 (their tokenizers return none), under `roberta.` in a checkpoint with a head.
// - mpnet: RoBERTa's positions (padding index 1) plus a relative position bias shared by all layers (T5's
//   bidirectional buckets), no token types; all-mpnet-base-v2 and the like.
// - distilbert: other names (transformer.layer.N.attention.q_lin, ffn.lin1, ...), no token types.
// - electra: BERT's layers under `electra.`, with embeddings of their own width (embedding_size) projected to the
//   hidden size by embeddings_project when the two differ.
#pragma once
#include "layers.h"
#include "transformer_encoder.h"

namespace coltrast {

enum class BertVariant { Bert, Roberta, MPNet, DistilBert, Electra };

struct BertConfig {
  BertVariant variant = BertVariant::Bert;
  std::string modelType = "bert";
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t embeddingSize = 0;  // the embeddings' width: hidden_size but in ELECTRA
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t intermediateSize = 0;
  int64_t maxPositions = 0;
  int64_t typeVocabSize = 0;  // 0: no token type embeddings
  int64_t paddingIdx = 0;     // roberta, mpnet: positions start after it
  int64_t relativeBuckets = 0;  // mpnet
  double layerNormEps = 1e-12;
  double hiddenDropout = 0.1;
  double attentionDropout = 0.1;
  std::string hiddenAct = "gelu";
  static BertConfig fromJson(const nlohmann::json& config);
  // The longest input: max_position_embeddings, less the positions RoBERTa-style numbering skips.
  int64_t usablePositions() const;
};

struct BertEmbeddingsImpl : torch::nn::Module {
  explicit BertEmbeddingsImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& tokenTypeIds);
  BertConfig config;
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertEmbeddings);

struct BertLayerImpl : torch::nn::Module {
  explicit BertLayerImpl(const BertConfig& c);
  // mask: undefined (no padding), boolean [batch, 1, 1, seq] (true for tokens) or additive, broadcastable to
  // [batch, heads, seq, seq] (MPNet's position bias with the padding at the lowest value).
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& mask);
  int64_t numHeads, headSize;
  std::string hiddenAct;
  Dense query{nullptr}, key{nullptr}, value{nullptr}, attentionOut{nullptr}, intermediate{nullptr},
      output{nullptr};
  torch::nn::LayerNorm attentionNorm{nullptr}, outputNorm{nullptr};
  torch::nn::Dropout attentionDropout{nullptr}, hiddenDropout{nullptr};
  bool attentionOutDropout = true;  // DistilBERT: false
};
TORCH_MODULE(BertLayer);

class BertModel : public TransformerEncoder {
 public:
  explicit BertModel(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                        const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.hiddenSize; }
  int64_t maxPositions() const override { return config_.usablePositions(); }
  int64_t layerCount() const override { return config_.numLayers; }
  int64_t vocabularySize() const override { return embeddings_->word_embeddings->weight.size(0); }
  // RoBERTa's family adds type 0's row whatever the ids say.
  int64_t tokenTypeCount() const override {
    return embeddings_->token_type_embeddings && config_.variant != BertVariant::Roberta ? embeddings_->token_type_embeddings->weight.size(0) : 0;
  }
  std::string modelType() const override { return config_.modelType; }
  torch::Tensor tokenEmbeddings() const override { return embeddings_->word_embeddings->weight; }

 protected:
  std::string weightPrefix() const override;

 private:
  // MPNet's relative position bias [1, heads, seq, seq] in `dtype`.
  torch::Tensor positionBias(int64_t seq, const torch::Device& device, torch::ScalarType dtype);

  BertConfig config_;
  BertEmbeddings embeddings_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  torch::nn::Embedding relativeBias_{nullptr};
  Dense embeddingsProject_{nullptr};  // ELECTRA with embedding_size != hidden_size
};

}  // namespace coltrast
