#include "deberta.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "../error.h"
#include "config_json.h"

namespace coltrast {
namespace {

using namespace config;

// A non-negative integer, or `fallback` when absent or null.
int64_t countOr(const nlohmann::json& c, const char* key, int64_t fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_number_integer() || c[key].get<int64_t>() < 0 || c[key].get<int64_t>() > largestSize(key))
    throw modelFilesError(std::string("config.json: \"") + key + "\" must be a non-negative integer (at most " + std::to_string(largestSize(key)) + ")");
  return c[key].get<int64_t>();
}

// A list of lower-case names given as a JSON array or as one string joined by "|" (older configs: "p2c|c2p").
std::vector<std::string> nameList(const nlohmann::json& c, const char* key, const std::string& fallback) {
  std::vector<std::string> names;
  const auto add = [&](std::string name) {
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (!name.empty()) names.push_back(name);
  };
  if (c.contains(key) && c[key].is_array()) {
    for (const auto& item : c[key]) {
      if (!item.is_string()) throw modelFilesError(std::string("config.json: \"") + key + "\" must list strings");
      add(item.get<std::string>());
    }
    return names;
  }
  std::stringstream joined(stringOr(c, key, fallback));
  for (std::string part; std::getline(joined, part, '|');) add(part);
  return names;
}

bool listed(const std::vector<std::string>& names, const char* name) { return std::find(names.begin(), names.end(), name) != names.end(); }

// `x` [batch, seq, heads * size] as [batch, heads, seq, size].
torch::Tensor splitHeads(const torch::Tensor& x, int64_t heads) { return x.view({x.size(0), x.size(1), heads, -1}).transpose(1, 2); }

}  // namespace

DebertaConfig DebertaConfig::fromJson(const nlohmann::json& c) {
  DebertaConfig d;
  d.vocabSize = positiveInt(c, "vocab_size");
  d.hiddenSize = positiveInt(c, "hidden_size");
  d.embeddingSize = positiveIntOr(c, "embedding_size", d.hiddenSize);
  d.numLayers = positiveInt(c, "num_hidden_layers");
  d.numHeads = positiveInt(c, "num_attention_heads");
  d.intermediateSize = positiveInt(c, "intermediate_size");
  d.maxPositions = positiveIntOr(c, "max_position_embeddings", 512);
  d.typeVocabSize = countOr(c, "type_vocab_size", 0);
  d.layerNormEps = numberOr(c, "layer_norm_eps", 1e-7);
  d.hiddenDropout = numberOr(c, "hidden_dropout_prob", 0.1);
  d.attentionDropout = numberOr(c, "attention_probs_dropout_prob", 0.1);
  d.hiddenAct = stringOr(c, "hidden_act", "gelu");
  checkActivation(d.hiddenAct);
  if (c.contains("attention_head_size") && !c["attention_head_size"].is_null()) {
    d.headSize = positiveInt(c, "attention_head_size");
  } else {
    if (d.hiddenSize % d.numHeads != 0)
      throw modelFilesError("config.json: hidden_size " + std::to_string(d.hiddenSize) + " is not a multiple of num_attention_heads " +
                            std::to_string(d.numHeads));
    d.headSize = d.hiddenSize / d.numHeads;
  }
  d.positionBiasedInput = boolOr(c, "position_biased_input", true);
  d.relativeAttention = boolOr(c, "relative_attention", false);
  d.shareAttKey = boolOr(c, "share_att_key", false);
  // Hugging Face reads "c2p" and "p2c" and ignores other entries (DeBERTa v1's "p2p"); so does coltrast.
  const auto terms = nameList(c, "pos_att_type", "");
  d.c2p = listed(terms, "c2p");
  d.p2c = listed(terms, "p2c");
  d.normRelEmbeddings = listed(nameList(c, "norm_rel_ebd", "none"), "layer_norm");
  if (d.relativeAttention) {
    d.positionBuckets = c.contains("position_buckets") && c["position_buckets"].is_number_integer() ? c["position_buckets"].get<int64_t>() : -1;
    d.maxRelativePositions = c.contains("max_relative_positions") && c["max_relative_positions"].is_number_integer()
                                 ? c["max_relative_positions"].get<int64_t>()
                                 : -1;
    if (d.maxRelativePositions < 1) d.maxRelativePositions = d.maxPositions;
    if (d.positionBuckets > 0 && (d.positionBuckets < 4 || d.maxRelativePositions <= d.positionBuckets / 2 + 1))
      throw modelFilesError("config.json: position_buckets " + std::to_string(d.positionBuckets) + " needs at least 4 buckets and max_relative_positions (" +
                            std::to_string(d.maxRelativePositions) + ") above position_buckets / 2 + 1");
  }
  d.convKernel = countOr(c, "conv_kernel_size", 0);
  if (d.convKernel > 0) {
    if (d.convKernel % 2 == 0)
      throw unsupportedError("unsupported conv_kernel_size " + std::to_string(d.convKernel) + " (an even kernel shortens the sequence; DeBERTa uses odd ones)");
    d.convGroups = positiveIntOr(c, "conv_groups", 1);
    if (d.hiddenSize % d.convGroups != 0)
      throw modelFilesError("config.json: hidden_size " + std::to_string(d.hiddenSize) + " is not a multiple of conv_groups " + std::to_string(d.convGroups));
    d.convAct = stringOr(c, "conv_act", "tanh");
    checkActivation(d.convAct);
  }
  if (c.contains("pooler_hidden_size") && c["pooler_hidden_size"] != d.hiddenSize)
    throw unsupportedError("unsupported pooler_hidden_size " + c["pooler_hidden_size"].dump() + " (transformers' head needs it equal to hidden_size " +
                           std::to_string(d.hiddenSize) + ")");
  return d;
}

double DebertaConfig::scale() const {
  // transformers: sqrt(float32(head size) * factor), a float32 value.
  return static_cast<float>(std::sqrt(static_cast<float>(headSize * (1 + (c2p ? 1 : 0) + (p2c ? 1 : 0)))));
}

torch::Tensor debertaRelativePositions(int64_t seq, int64_t buckets, int64_t maxRelative) {
  const torch::Tensor ids = torch::arange(seq, torch::kLong);
  const torch::Tensor relative = ids.unsqueeze(1) - ids.unsqueeze(0);
  if (buckets <= 0 || maxRelative <= 0) return relative;
  const int64_t mid = buckets / 2;
  const torch::Tensor near = relative.lt(mid).logical_and(relative.gt(-mid));
  const torch::Tensor distance = torch::where(near, torch::full_like(relative, mid - 1), relative.abs());
  const torch::Tensor logStep = torch::log(torch::tensor(static_cast<double>(maxRelative - 1) / mid, torch::kFloat32));
  const torch::Tensor logPosition = torch::ceil(torch::log(distance.to(torch::kFloat32) / static_cast<float>(mid)) / logStep * (mid - 1)) + mid;
  return torch::where(distance.le(mid), relative.to(torch::kFloat32), logPosition * relative.sign().to(torch::kFloat32)).to(torch::kLong);
}

DebertaLayerImpl::DebertaLayerImpl(const DebertaConfig& c) : config(c) {
  const int64_t all = c.numHeads * c.headSize;
  query = registerAt(*this, "attention.self.query_proj", Dense(c.hiddenSize, all));
  key = registerAt(*this, "attention.self.key_proj", Dense(c.hiddenSize, all));
  value = registerAt(*this, "attention.self.value_proj", Dense(c.hiddenSize, all));
  if (c.relativeAttention && !c.shareAttKey) {
    if (c.c2p) posKey = registerAt(*this, "attention.self.pos_key_proj", Dense(c.hiddenSize, all));
    if (c.p2c) posQuery = registerAt(*this, "attention.self.pos_query_proj", Dense(c.hiddenSize, all));
  }
  auto norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hiddenSize}).eps(c.layerNormEps)); };
  attentionOut = registerAt(*this, "attention.output.dense", Dense(all, c.hiddenSize));
  attentionNorm = registerAt(*this, "attention.output.LayerNorm", norm());
  intermediate = registerAt(*this, "intermediate.dense", Dense(c.hiddenSize, c.intermediateSize));
  output = registerAt(*this, "output.dense", Dense(c.intermediateSize, c.hiddenSize));
  outputNorm = registerAt(*this, "output.LayerNorm", norm());
}

torch::Tensor DebertaLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& keyMask, const torch::Tensor& relEmbeddings,
                                        const torch::Tensor& c2pIndex, const torch::Tensor& p2cIndex) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1), heads = config.numHeads;
  const bool training = is_training();
  const torch::Tensor q = splitHeads(query(hidden), heads), k = splitHeads(key(hidden), heads), v = splitHeads(value(hidden), heads);
  const double scale = config.scale();
  // The relative terms, each [batch, heads, seq (query), seq (key)] over the scale as transformers adds them.
  torch::Tensor bias;
  if (relEmbeddings.defined() && (config.c2p || config.p2c)) {
    const torch::Tensor rel = torch::dropout(relEmbeddings, config.hiddenDropout, training);
    // A projection of the table [2 * span, heads * size] as [heads, size, 2 * span], to multiply with the heads.
    const auto table = [&](Dense& projection) { return projection(rel).view({rel.size(0), heads, -1}).permute({1, 2, 0}); };
    const std::vector<int64_t> pairs = {batch, heads, seq, seq};
    if (config.c2p) {
      // The query against the embedding of the key's distance from it.
      const torch::Tensor c2p = torch::matmul(q, table(config.shareAttKey ? key : posKey)).gather(-1, c2pIndex.expand(pairs));
      bias = c2p / scale;
    }
    if (config.p2c) {
      // The key against the embedding of the query's distance from it: gathered per key row, then turned to query rows.
      const torch::Tensor p2c = torch::matmul(k, table(config.shareAttKey ? query : posQuery)).gather(-1, p2cIndex.expand(pairs)).transpose(-1, -2);
      bias = bias.defined() ? bias + p2c / scale : p2c / scale;
    }
  }
  // The padding keys at the lowest score; a padding query still sees the real keys (its output is never read).
  torch::Tensor mask = keyMask;
  if (bias.defined()) mask = keyMask.defined() ? bias.masked_fill(keyMask.logical_not(), maskedScore(bias.scalar_type())) : bias;
  // attend() divides by sqrt(size); DeBERTa by sqrt(size * factor): the query carries the rest.
  const double dropout = training ? config.attentionDropout : 0.0;
  const torch::Tensor context = attend(q * (std::sqrt(static_cast<double>(config.headSize)) / scale), k, v, mask, dropout);
  const torch::Tensor attended =
      attentionNorm(torch::dropout(attentionOut(context.transpose(1, 2).reshape({batch, seq, -1})), config.hiddenDropout, training) + hidden);
  const torch::Tensor expanded = output(activate(intermediate(attended), config.hiddenAct));
  return outputNorm(torch::dropout(expanded, config.hiddenDropout, training) + attended);
}

DebertaModel::DebertaModel(const DebertaConfig& config) : config_(config) {
  const auto& c = config;
  auto norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hiddenSize}).eps(c.layerNormEps)); };
  wordEmbeddings_ = registerAt(*this, "embeddings.word_embeddings", embeddingToFill(c.vocabSize, c.embeddingSize));
  if (c.positionBiasedInput)
    positionEmbeddings_ = registerAt(*this, "embeddings.position_embeddings", embeddingToFill(c.maxPositions, c.embeddingSize));
  if (c.typeVocabSize > 0)
    tokenTypeEmbeddings_ = registerAt(*this, "embeddings.token_type_embeddings", embeddingToFill(c.typeVocabSize, c.embeddingSize));
  if (c.embeddingSize != c.hiddenSize)
    embedProj_ = registerAt(*this, "embeddings.embed_proj", Dense(c.embeddingSize, c.hiddenSize, false));
  embeddingNorm_ = registerAt(*this, "embeddings.LayerNorm", norm());
  layers_ = registerAt(*this, "encoder.layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.numLayers; ++i) layers_->push_back(DebertaLayer(c));
  if (c.relativeAttention) relEmbeddings_ = registerAt(*this, "encoder.rel_embeddings", embeddingToFill(2 * c.span(), c.hiddenSize));
  if (c.normRelEmbeddings) relNorm_ = registerAt(*this, "encoder.LayerNorm", norm());
  if (c.convKernel > 0) {
    conv_ = registerAt(*this, "encoder.conv.conv",
                       torch::nn::Conv1d(torch::nn::Conv1dOptions(c.hiddenSize, c.hiddenSize, c.convKernel).padding((c.convKernel - 1) / 2).groups(c.convGroups)));
    convNorm_ = registerAt(*this, "encoder.conv.LayerNorm", norm());
  }
}

torch::Tensor DebertaModel::embed(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds) {
  const bool training = is_training();
  torch::Tensor e = wordEmbeddings_(inputIds);
  if (positionEmbeddings_) e = e + positionEmbeddings_(torch::arange(inputIds.size(1), inputIds.options().dtype(torch::kLong))).unsqueeze(0);
  if (tokenTypeEmbeddings_) e = e + tokenTypeEmbeddings_(tokenTypeIds);
  // Back in the embeddings' dtype under autocast, as libtorch 1.13's CPU autocast leaves the layer norm of a bfloat16
  // input to fail on its float32 weight.
  if (embedProj_) e = embedProj_(e).to(e.scalar_type());
  e = embeddingNorm_(e);
  e = e * attentionMask.unsqueeze(-1).to(e.scalar_type());  // padding positions zeroed, as transformers does
  return torch::dropout(e, config_.hiddenDropout, training);
}

torch::Tensor DebertaModel::relativeEmbeddings() {
  const torch::Tensor table = relEmbeddings_->weight;
  return relNorm_ ? relNorm_(table) : table;
}

torch::Tensor DebertaModel::convolve(const torch::Tensor& embeddings, const torch::Tensor& layerOutput, const torch::Tensor& attentionMask) {
  const torch::Tensor padding = attentionMask.eq(0).unsqueeze(-1);
  torch::Tensor out = conv_(embeddings.transpose(1, 2)).transpose(1, 2).masked_fill(padding, 0);
  out = activate(torch::dropout(out, config_.hiddenDropout, is_training()), config_.convAct);
  const torch::Tensor sum = layerOutput + out;
  return convNorm_(sum).to(sum.scalar_type()) * attentionMask.unsqueeze(-1).to(sum.scalar_type());
}

torch::Tensor DebertaModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor& tokenTypeIds) {
  const int64_t batch = inputIds.size(0), seq = inputIds.size(1);
  if (config_.positionBiasedInput && seq > config_.maxPositions)
    throw invalidArgument("sequence of " + std::to_string(seq) + " tokens exceeds max_position_embeddings " + std::to_string(config_.maxPositions));
  const torch::Tensor embeddings = embed(inputIds, attentionMask, tokenTypeIds);
  torch::Tensor keyMask;
  if (!attentionMask.all().item<bool>()) keyMask = attentionMask.to(torch::kBool).view({batch, 1, 1, seq});
  torch::Tensor c2pIndex, p2cIndex;
  if (config_.relativeAttention) {
    const int64_t span = config_.span();
    const torch::Tensor relative = debertaRelativePositions(seq, config_.positionBuckets, config_.maxRelativePositions).to(inputIds.device());
    c2pIndex = (relative + span).clamp(0, 2 * span - 1);
    p2cIndex = (span - relative).clamp(0, 2 * span - 1);
  }
  // The (normalized) relative table, computed once and handed to every layer, which projects it.
  std::vector<torch::Tensor> shared;
  if (relEmbeddings_) shared.push_back(relativeEmbeddings());
  torch::Tensor hidden = embeddings;
  for (int64_t i = 0; i < config_.numLayers; ++i) {
    auto* layer = layers_[i]->as<DebertaLayer>();
    hidden = runLayer(
        [layer, keyMask, c2pIndex, p2cIndex](const torch::Tensor& x, const std::vector<torch::Tensor>& table) {
          return layer->forward(x, keyMask, table.empty() ? torch::Tensor() : table[0], c2pIndex, p2cIndex);
        },
        hidden, shared);
    // Outside the checkpoint: the convolution reads the embeddings, which the first layer's checkpoint holds as its input.
    if (i == 0 && conv_) hidden = convolve(embeddings, hidden, attentionMask);
  }
  return hidden;
}

}  // namespace coltrast
