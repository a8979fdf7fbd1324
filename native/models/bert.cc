#include "bert.h"

#include <cmath>

#include "../error.h"
#include "config_json.h"

namespace coltrast {
namespace {

using namespace config;

struct LayerNames {
  const char *query, *key, *value, *attentionOut, *attentionNorm, *intermediate, *output, *outputNorm;
};

LayerNames layerNames(BertVariant v) {
  switch (v) {
    case BertVariant::MPNet:
      return {"attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "attention.LayerNorm",
              "intermediate.dense", "output.dense", "output.LayerNorm"};
    case BertVariant::DistilBert:
      return {"attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm",
              "ffn.lin1", "ffn.lin2", "output_layer_norm"};
    default:
      return {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"};
  }
}

}  // namespace

BertConfig BertConfig::fromJson(const nlohmann::json& c) {
  BertConfig b;
  b.modelType = c["model_type"].get<std::string>();
  if (b.modelType == "bert") b.variant = BertVariant::Bert;
  else if (b.modelType == "roberta" || b.modelType == "xlm-roberta" || b.modelType == "camembert") b.variant = BertVariant::Roberta;
  else if (b.modelType == "mpnet") b.variant = BertVariant::MPNet;
  else if (b.modelType == "distilbert") b.variant = BertVariant::DistilBert;
  else if (b.modelType == "electra") b.variant = BertVariant::Electra;
  else throw unsupportedError("unsupported BERT-family model_type " + b.modelType);
  b.vocabSize = positiveInt(c, "vocab_size");
  b.maxPositions = positiveInt(c, "max_position_embeddings");
  if (b.variant == BertVariant::DistilBert) {
    // DistilBERT's own names; its layer norms' eps is fixed at 1e-12.
    b.hiddenSize = positiveInt(c, "dim");
    b.numLayers = positiveInt(c, "n_layers");
    b.numHeads = positiveInt(c, "n_heads");
    b.intermediateSize = positiveInt(c, "hidden_dim");
    b.hiddenDropout = numberOr(c, "dropout", 0.1);
    b.attentionDropout = numberOr(c, "attention_dropout", 0.1);
    b.hiddenAct = stringOr(c, "activation", "gelu");
    b.typeVocabSize = 0;
  } else {
    b.hiddenSize = positiveInt(c, "hidden_size");
    b.numLayers = positiveInt(c, "num_hidden_layers");
    b.numHeads = positiveInt(c, "num_attention_heads");
    b.intermediateSize = positiveInt(c, "intermediate_size");
    b.layerNormEps = numberOr(c, "layer_norm_eps", 1e-12);
    b.hiddenDropout = numberOr(c, "hidden_dropout_prob", 0.1);
    b.attentionDropout = numberOr(c, "attention_probs_dropout_prob", 0.1);
    b.hiddenAct = stringOr(c, "hidden_act", "gelu");
    b.typeVocabSize = b.variant == BertVariant::MPNet ? 0 : positiveIntOr(c, "type_vocab_size", 2);
    if (c.contains("position_embedding_type") && !c["position_embedding_type"].is_null() && c["position_embedding_type"] != "absolute")
      throw unsupportedError("unsupported position_embedding_type " + c["position_embedding_type"].dump() + " (coltrast's " + b.modelType +
                             " supports \"absolute\")");
  }
  if (b.variant == BertVariant::Roberta) {
    if (!c.contains("pad_token_id") || !c["pad_token_id"].is_number_integer() || c["pad_token_id"].get<int64_t>() < 0)
      throw modelFilesError("config.json: " + b.modelType + " needs \"pad_token_id\" (its positions count from it)");
    b.paddingIdx = c["pad_token_id"].get<int64_t>();
  } else if (b.variant == BertVariant::MPNet) {
    b.paddingIdx = 1;  // fixed in MPNet, whatever the config says
    // transformers buckets relative positions into 32 whatever the config says; the table must have them.
    b.relativeBuckets = positiveIntOr(c, "relative_attention_num_buckets", 32);
    if (b.relativeBuckets < 32)
      throw modelFilesError("config.json: relative_attention_num_buckets " + std::to_string(b.relativeBuckets) + " is below the 32 MPNet uses");
  }
  b.embeddingSize = b.variant == BertVariant::Electra ? positiveIntOr(c, "embedding_size", b.hiddenSize) : b.hiddenSize;
  checkActivation(b.hiddenAct);  // reject an unknown activation at load, not at first use
  if (b.hiddenSize % b.numHeads != 0)
    throw modelFilesError("config.json: hidden size " + std::to_string(b.hiddenSize) + " is not a multiple of the number of heads " +
                          std::to_string(b.numHeads));
  if (b.usablePositions() < 2)
    throw modelFilesError("config.json: max_position_embeddings " + std::to_string(b.maxPositions) + " leaves no room for a text");
  return b;
}

int64_t BertConfig::usablePositions() const {
  const bool offset = variant == BertVariant::Roberta || variant == BertVariant::MPNet;
  return offset ? maxPositions - paddingIdx - 1 : maxPositions;
}

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) : config(c) {
  const int64_t width = c.embeddingSize;
  word_embeddings = register_module("word_embeddings", embeddingToFill(c.vocabSize, width));
  position_embeddings = register_module("position_embeddings", embeddingToFill(c.maxPositions, width));
  if (c.typeVocabSize > 0)
    token_type_embeddings = register_module("token_type_embeddings", embeddingToFill(c.typeVocabSize, width));
  LayerNorm = register_module("LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(c.layerNormEps)));
  dropout = register_module("dropout", torch::nn::Dropout(c.hiddenDropout));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& inputIds, const torch::Tensor& tokenTypeIds) {
  torch::Tensor positions;
  if (config.variant == BertVariant::Roberta || config.variant == BertVariant::MPNet) {
    // fairseq's numbering, as transformers': tokens that are not the padding id count 1, 2, ... after it; the
    // padding id itself (wherever it is) gets the padding position.
    const torch::Tensor real = inputIds.ne(config.paddingIdx).to(torch::kLong);
    positions = real.cumsum(1) * real + config.paddingIdx;
  } else {
    positions = torch::arange(inputIds.size(1), inputIds.options()).unsqueeze(0);
  }
  auto x = word_embeddings(inputIds) + position_embeddings(positions);
  if (token_type_embeddings) {
    // RoBERTa's tokenizers return no token types: transformers then uses 0 for every token.
    x = x + token_type_embeddings(config.variant == BertVariant::Roberta ? torch::zeros_like(inputIds) : tokenTypeIds);
  }
  return dropout(LayerNorm(x));
}

BertLayerImpl::BertLayerImpl(const BertConfig& c)
    : numHeads(c.numHeads), headSize(c.hiddenSize / c.numHeads), hiddenAct(c.hiddenAct) {
  const LayerNames n = layerNames(c.variant);
  auto norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hiddenSize}).eps(c.layerNormEps)); };
  query = registerAt(*this, n.query, Dense(c.hiddenSize, c.hiddenSize));
  key = registerAt(*this, n.key, Dense(c.hiddenSize, c.hiddenSize));
  value = registerAt(*this, n.value, Dense(c.hiddenSize, c.hiddenSize));
  attentionOut = registerAt(*this, n.attentionOut, Dense(c.hiddenSize, c.hiddenSize));
  attentionNorm = registerAt(*this, n.attentionNorm, norm());
  intermediate = registerAt(*this, n.intermediate, Dense(c.hiddenSize, c.intermediateSize));
  output = registerAt(*this, n.output, Dense(c.intermediateSize, c.hiddenSize));
  outputNorm = registerAt(*this, n.outputNorm, norm());
  attentionDropout = register_module("attention_dropout", torch::nn::Dropout(c.attentionDropout));
  // DistilBERT has no dropout on the attention's output, only after the feed-forward.
  hiddenDropout = register_module("hidden_dropout", torch::nn::Dropout(c.hiddenDropout));
  if (c.variant == BertVariant::DistilBert) attentionOutDropout = false;
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& mask) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1);
  auto heads = [&](const torch::Tensor& t) { return t.view({batch, seq, numHeads, headSize}).transpose(1, 2); };
  auto q = heads(query(hidden)), k = heads(key(hidden)), v = heads(value(hidden));
  const double dropout = is_training() ? attentionDropout->options.p() : 0.0;
  auto context = attend(q, k, v, mask, dropout).transpose(1, 2).reshape({batch, seq, numHeads * headSize});
  auto projected = attentionOut(context);
  auto attended = attentionNorm((attentionOutDropout ? hiddenDropout(projected) : projected) + hidden);
  auto expanded = output(activate(intermediate(attended), hiddenAct));
  return outputNorm(hiddenDropout(expanded) + attended);
}

BertModel::BertModel(const BertConfig& config) : config_(config) {
  embeddings_ = register_module("embeddings", BertEmbeddings(config));
  if (config.embeddingSize != config.hiddenSize)
    embeddingsProject_ = register_module("embeddings_project", Dense(config.embeddingSize, config.hiddenSize));
  auto stack = register_module(config.variant == BertVariant::DistilBert ? "transformer" : "encoder", std::make_shared<ModuleGroup>());
  layers_ = stack->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.numLayers; ++i) layers_->push_back(BertLayer(config));
  if (config.variant == BertVariant::MPNet)
    relativeBias_ = stack->register_module("relative_attention_bias", embeddingToFill(config.relativeBuckets, config.numHeads));
}

std::string BertModel::weightPrefix() const {
  switch (config_.variant) {
    case BertVariant::Roberta: return "roberta.";  // XLM-RoBERTa and CamemBERT too
    case BertVariant::MPNet: return "mpnet.";
    case BertVariant::DistilBert: return "distilbert.";
    case BertVariant::Electra: return "electra.";
    default: return "bert.";
  }
}

torch::Tensor BertModel::positionBias(int64_t seq, const torch::Device& device, torch::ScalarType dtype) {
  // T5's buckets as MPNet computes them: 32 buckets and distances up to 128, whatever the config says.
  const torch::Tensor bucket = relativePositionBuckets(seq, 32, 128, device);
  return relativeBias_(bucket).permute({2, 0, 1}).unsqueeze(0).to(dtype);  // [1, heads, seq, seq]
}

torch::Tensor BertModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                                 const torch::Tensor& tokenTypeIds) {
  if (inputIds.size(1) > config_.usablePositions())
    throw invalidArgument("sequence of " + std::to_string(inputIds.size(1)) + " tokens exceeds the " + std::to_string(config_.usablePositions()) +
                          " positions of the model (max_position_embeddings)");
  auto hidden = embeddings_->forward(inputIds, tokenTypeIds);
  const double lowest = maskedScore(hidden.scalar_type());
  torch::Tensor mask;
  if (!fusedAttention()) {
    // Hugging Face's eager attention: an additive mask in the model's dtype, padding keys at the dtype's lowest value
    // (their softmax weight exactly 0), always added, so under autocast the scores and softmax are float32 as there.
    mask = (1 - attentionMask.to(hidden.scalar_type())).mul(lowest).view({inputIds.size(0), 1, 1, -1});
  } else if (!attentionMask.all().item<bool>()) {
    // A batch without padding gets no mask, as in Hugging Face's SDPA path: on a GPU that admits FlashAttention,
    // which takes none (one device-to-host read per forward, not per layer).
    mask = attentionMask.to(torch::kBool).view({inputIds.size(0), 1, 1, -1});
  }
  // MPNet: the position bias added to the scores, the padding keys' entries at the lowest value, computed once and
  // handed to every layer (a checkpointed layer's gradient reaches it through the checkpoint).
  std::vector<torch::Tensor> shared;
  if (relativeBias_) {
    torch::Tensor bias = positionBias(inputIds.size(1), inputIds.device(), hidden.scalar_type());
    if (mask.defined()) bias = mask.scalar_type() == torch::kBool ? torch::where(mask, bias, torch::full({1}, lowest, bias.options())) : bias + mask;
    shared.push_back(bias);
  }
  // ELECTRA's projection, back in the model's dtype under autocast (libtorch 1.13's CPU autocast leaves a layer norm
  // of bfloat16 input to fail on its float32 weight), as the mask above is in it.
  if (embeddingsProject_) hidden = embeddingsProject_(hidden).to(hidden.scalar_type());
  for (const auto& layer : *layers_) {
    BertLayerImpl* l = layer->as<BertLayer>();
    hidden = runLayer([l, mask](const torch::Tensor& x, const std::vector<torch::Tensor>& bias) { return l->forward(x, bias.empty() ? mask : bias[0]); },
                      hidden, shared);
  }
  return hidden;
}

}  // namespace coltrast
