#include "bert.h"

#include <cmath>
#include <cstdlib>

#include "../error.h"
#include "../torch_version.h"
#include "config_json.h"

namespace coltrast {
namespace {

using config::numberOr;
using config::positiveInt;

torch::Tensor activate(const torch::Tensor& x, const std::string& act) {
  if (act == "gelu") return torch::gelu(x);
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") return torch::gelu(x, "tanh");
  if (act == "relu") return torch::relu(x);
  if (act == "silu" || act == "swish") return torch::silu(x);
  throw unsupportedError("unsupported hidden_act " + act);
}

// Hugging Face names the sub-modules of a layer attention.self.{query,key,value},
// attention.output.{dense,LayerNorm}, intermediate.dense and output.{dense,LayerNorm}; we keep flat
// members for readable code and register them under those nested names.
struct Named : torch::nn::Module {};

}  // namespace

bool fusedAttention() {
#if COLTRAST_TORCH_AT_LEAST(2, 0)
  static const bool fused = [] {
    const char* eager = std::getenv("COLTRAST_EAGER_ATTENTION");
    return eager == nullptr || std::string(eager) == "" || std::string(eager) == "0";
  }();
  return fused;
#else
  return false;
#endif
}

BertConfig BertConfig::fromJson(const nlohmann::json& c) {
  BertConfig b;
  b.vocabSize = positiveInt(c, "vocab_size");
  b.hiddenSize = positiveInt(c, "hidden_size");
  b.numLayers = positiveInt(c, "num_hidden_layers");
  b.numHeads = positiveInt(c, "num_attention_heads");
  b.intermediateSize = positiveInt(c, "intermediate_size");
  b.maxPositions = positiveInt(c, "max_position_embeddings");
  b.typeVocabSize = c.contains("type_vocab_size") ? positiveInt(c, "type_vocab_size") : 2;
  b.layerNormEps = numberOr(c, "layer_norm_eps", 1e-12);
  b.hiddenDropout = numberOr(c, "hidden_dropout_prob", 0.1);
  b.attentionDropout = numberOr(c, "attention_probs_dropout_prob", 0.1);
  if (c.contains("hidden_act")) {
    if (!c["hidden_act"].is_string()) throw modelFilesError("config.json: \"hidden_act\" must be a string");
    b.hiddenAct = c["hidden_act"].get<std::string>();
  }
  activate(torch::zeros({1}), b.hiddenAct);  // reject an unknown activation at load, not at first use
  if (b.hiddenSize % b.numHeads != 0)
    throw modelFilesError("config.json: hidden_size " + std::to_string(b.hiddenSize) +
                          " is not a multiple of num_attention_heads " + std::to_string(b.numHeads));
  if (c.contains("position_embedding_type") && c["position_embedding_type"] != "absolute")
    throw unsupportedError("unsupported position_embedding_type " + c["position_embedding_type"].dump() +
                           " (coltrast's BERT supports \"absolute\")");
  return b;
}

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) {
  word_embeddings = register_module("word_embeddings", torch::nn::Embedding(c.vocabSize, c.hiddenSize));
  position_embeddings = register_module("position_embeddings", torch::nn::Embedding(c.maxPositions, c.hiddenSize));
  token_type_embeddings = register_module("token_type_embeddings", torch::nn::Embedding(c.typeVocabSize, c.hiddenSize));
  LayerNorm = register_module(
      "LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hiddenSize}).eps(c.layerNormEps)));
  dropout = register_module("dropout", torch::nn::Dropout(c.hiddenDropout));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& inputIds, const torch::Tensor& tokenTypeIds) {
  const int64_t seq = inputIds.size(1);
  auto positions = torch::arange(seq, inputIds.options()).unsqueeze(0);
  auto x = word_embeddings(inputIds) + position_embeddings(positions) + token_type_embeddings(tokenTypeIds);
  return dropout(LayerNorm(x));
}

BertLayerImpl::BertLayerImpl(const BertConfig& c)
    : numHeads(c.numHeads), headSize(c.hiddenSize / c.numHeads), hiddenAct(c.hiddenAct) {
  auto norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hiddenSize}).eps(c.layerNormEps)); };
  auto attention = register_module("attention", std::make_shared<Named>());
  auto self = attention->register_module("self", std::make_shared<Named>());
  query = self->register_module("query", torch::nn::Linear(c.hiddenSize, c.hiddenSize));
  key = self->register_module("key", torch::nn::Linear(c.hiddenSize, c.hiddenSize));
  value = self->register_module("value", torch::nn::Linear(c.hiddenSize, c.hiddenSize));
  auto attnOutput = attention->register_module("output", std::make_shared<Named>());
  attentionOut = attnOutput->register_module("dense", torch::nn::Linear(c.hiddenSize, c.hiddenSize));
  attentionNorm = attnOutput->register_module("LayerNorm", norm());
  auto inter = register_module("intermediate", std::make_shared<Named>());
  intermediate = inter->register_module("dense", torch::nn::Linear(c.hiddenSize, c.intermediateSize));
  auto out = register_module("output", std::make_shared<Named>());
  output = out->register_module("dense", torch::nn::Linear(c.intermediateSize, c.hiddenSize));
  outputNorm = out->register_module("LayerNorm", norm());
  attentionDropout = register_module("attention_dropout", torch::nn::Dropout(c.attentionDropout));
  hiddenDropout = register_module("hidden_dropout", torch::nn::Dropout(c.hiddenDropout));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& mask) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1);
  auto heads = [&](const torch::Tensor& t) { return t.view({batch, seq, numHeads, headSize}).transpose(1, 2); };
  auto q = heads(query(hidden)), k = heads(key(hidden)), v = heads(value(hidden));
  torch::Tensor context;
#if COLTRAST_TORCH_AT_LEAST(2, 0)
  if (fusedAttention()) {
    // The scaling is 1/sqrt(headSize), libtorch's default. The boolean mask becomes an additive one in the
    // query's dtype inside libtorch, so autocast needs no cast here. With dropout, the CPU runs the math
    // form, whose dropout draws from the same generator as the eager form's.
    const double dropout = is_training() ? attentionDropout->options.p() : 0.0;
    const c10::optional<at::Tensor> keys = mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt;
    context = at::scaled_dot_product_attention(q, k, v, keys, dropout, false);
  } else
#endif
  {
    auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(headSize));
    if (mask.defined()) scores = scores + mask;
    context = torch::matmul(attentionDropout(torch::softmax(scores, -1)), v);
  }
  context = context.transpose(1, 2).reshape({batch, seq, numHeads * headSize});
  auto attended = attentionNorm(hiddenDropout(attentionOut(context)) + hidden);
  auto expanded = output(activate(intermediate(attended), hiddenAct));
  return outputNorm(hiddenDropout(expanded) + attended);
}

BertModel::BertModel(const BertConfig& config) : config_(config) {
  embeddings_ = register_module("embeddings", BertEmbeddings(config));
  auto encoder = register_module("encoder", std::make_shared<Named>());
  layers_ = encoder->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.numLayers; ++i) layers_->push_back(BertLayer(config));
}

torch::Tensor BertModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                                 const torch::Tensor& tokenTypeIds) {
  if (inputIds.size(1) > config_.maxPositions)
    throw invalidArgument("sequence of " + std::to_string(inputIds.size(1)) + " tokens exceeds max_position_embeddings " +
                          std::to_string(config_.maxPositions));
  auto hidden = embeddings_->forward(inputIds, tokenTypeIds);
  torch::Tensor mask;
  if (!fusedAttention()) {
    // Padding keys get the dtype's lowest value, as Hugging Face does, so their softmax weight is exactly 0.
    const double lowest = hidden.scalar_type() == torch::kFloat16 ? -65504.0 : -3.0e38;
    mask = (1 - attentionMask.to(hidden.scalar_type())).mul(lowest).view({inputIds.size(0), 1, 1, -1});
  } else if (!attentionMask.all().item<bool>()) {
    // A batch without padding gets no mask, as in Hugging Face's SDPA path: on a GPU that admits
    // FlashAttention, which takes none (one device-to-host read per forward, not per layer).
    mask = attentionMask.to(torch::kBool).view({inputIds.size(0), 1, 1, -1});
  }
  for (const auto& layer : *layers_) {
    BertLayerImpl* l = layer->as<BertLayer>();
    hidden = runLayer([l, mask](const torch::Tensor& x) { return l->forward(x, mask); }, hidden);
  }
  return hidden;
}

}  // namespace coltrast
