#include "modernbert.h"

#include "../error.h"
#include "config_json.h"

namespace coltrast {
namespace {

using namespace config;

// Rotary theta of one kind of layer: transformers 5's rope_parameters[kind].rope_theta, transformers 4's top-level
// key, or ModernBERT's default. Scaled rotary positions are refused.
double ropeTheta(const nlohmann::json& c, const char* kind, const char* legacyKey, double fallback) {
  double theta = numberOr(c, legacyKey, fallback);
  if (c.contains("rope_parameters") && c["rope_parameters"].is_object() && c["rope_parameters"].contains(kind)) {
    const auto& p = c["rope_parameters"][kind];
    if (p.is_object()) {
      theta = numberOr(p, "rope_theta", theta);
      const std::string type = stringOr(p, "rope_type", "default");
      if (type != "default") throw unsupportedError("unsupported rotary scaling " + p.dump() + " (coltrast's modernbert runs plain rotary positions)");
    }
  }
  if (c.contains("rope_scaling") && !c["rope_scaling"].is_null())
    throw unsupportedError("unsupported rope_scaling " + c["rope_scaling"].dump() + " (coltrast's modernbert runs plain rotary positions)");
  return theta;
}

}  // namespace

ModernBertConfig ModernBertConfig::fromJson(const nlohmann::json& c) {
  ModernBertConfig m;
  m.vocabSize = positiveInt(c, "vocab_size");
  m.hiddenSize = positiveInt(c, "hidden_size");
  m.numLayers = positiveInt(c, "num_hidden_layers");
  m.numHeads = positiveInt(c, "num_attention_heads");
  m.intermediateSize = positiveInt(c, "intermediate_size");
  m.maxPositions = positiveInt(c, "max_position_embeddings");
  m.normEps = numberOr(c, "norm_eps", 1e-5);
  m.normBias = boolOr(c, "norm_bias", false);
  m.attentionBias = boolOr(c, "attention_bias", false);
  m.mlpBias = boolOr(c, "mlp_bias", false);
  m.embeddingDropout = numberOr(c, "embedding_dropout", 0.0);
  m.attentionDropout = numberOr(c, "attention_dropout", 0.0);
  m.mlpDropout = numberOr(c, "mlp_dropout", 0.0);
  m.activation = stringOr(c, "hidden_activation", "gelu");
  checkActivation(m.activation);
  m.window = positiveIntOr(c, "local_attention", 128) / 2;
  m.globalTheta = ropeTheta(c, "full_attention", "global_rope_theta", 160000.0);
  m.localTheta = ropeTheta(c, "sliding_attention", "local_rope_theta", 10000.0);
  if (c.contains("layer_types") && c["layer_types"].is_array()) {
    const auto& types = c["layer_types"];
    if (static_cast<int64_t>(types.size()) != m.numLayers)
      throw modelFilesError("config.json: layer_types has " + std::to_string(types.size()) + " entries for " + std::to_string(m.numLayers) + " layers");
    for (const auto& t : types) {
      if (t != "full_attention" && t != "sliding_attention")
        throw unsupportedError("unsupported layer type " + t.dump() + " (coltrast's modernbert runs full_attention and sliding_attention)");
      m.global.push_back(t == "full_attention");
    }
  } else {
    const int64_t every = positiveIntOr(c, "global_attn_every_n_layers", 3);
    for (int64_t i = 0; i < m.numLayers; ++i) m.global.push_back(i % every == 0);
  }
  if (m.hiddenSize % m.numHeads != 0 || (m.hiddenSize / m.numHeads) % 2 != 0)
    throw modelFilesError("config.json: hidden_size " + std::to_string(m.hiddenSize) + " must split into num_attention_heads " +
                          std::to_string(m.numHeads) + " heads of an even size (rotary positions rotate pairs)");
  return m;
}

ModernBertLayerImpl::ModernBertLayerImpl(const ModernBertConfig& c, int64_t index) : config(c) {
  auto linear = [](int64_t in, int64_t out, bool bias) { return Dense(in, out, bias); };
  if (index > 0) attn_norm = register_module("attn_norm", Norm(c.hiddenSize, c.normEps, c.normBias));
  auto attn = register_module("attn", std::make_shared<ModuleGroup>());
  Wqkv = attn->register_module("Wqkv", linear(c.hiddenSize, 3 * c.hiddenSize, c.attentionBias));
  attnWo = attn->register_module("Wo", linear(c.hiddenSize, c.hiddenSize, c.attentionBias));
  mlp_norm = register_module("mlp_norm", Norm(c.hiddenSize, c.normEps, c.normBias));
  auto mlp = register_module("mlp", std::make_shared<ModuleGroup>());
  Wi = mlp->register_module("Wi", linear(c.hiddenSize, 2 * c.intermediateSize, c.mlpBias));
  mlpWo = mlp->register_module("Wo", linear(c.intermediateSize, c.hiddenSize, c.mlpBias));
}

torch::Tensor ModernBertLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                                           const torch::Tensor& mask, const torch::Tensor& emptyRows) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1), heads = config.numHeads, d = config.hiddenSize / heads;
  const bool training = is_training();
  const torch::Tensor x = attn_norm ? attn_norm(hidden) : hidden;
  // [batch, seq, 3, heads, d] -> query, key, value [batch, heads, seq, d]
  const auto qkv = Wqkv(x).view({batch, seq, 3, heads, d}).unbind(2);
  torch::Tensor q = qkv[0].transpose(1, 2), k = qkv[1].transpose(1, 2), v = qkv[2].transpose(1, 2);
  // Rotary positions in float32, as transformers applies them to ModernBERT, then back to the model's dtype.
  const auto rotate = [&](const torch::Tensor& t) {
    const torch::Tensor f = t.to(torch::kFloat32);
    return (f * cos + rotateHalf(f) * sin).to(t.scalar_type());
  };
  q = rotate(q);
  k = rotate(k);
  const double dropout = training ? config.attentionDropout : 0.0;
  torch::Tensor context = attend(q, k, v, mask, dropout, /*float32Softmax=*/true);
  if (emptyRows.defined()) context = context.masked_fill(emptyRows, 0);
  context = context.transpose(1, 2).reshape({batch, seq, heads * d});
  torch::Tensor attended = attnWo(context);
  if (config.attentionDropout > 0) attended = torch::dropout(attended, config.attentionDropout, training);
  const torch::Tensor h = hidden + attended;
  const auto parts = Wi(mlp_norm(h)).chunk(2, -1);
  torch::Tensor gated = activate(parts[0], config.activation) * parts[1];
  if (config.mlpDropout > 0) gated = torch::dropout(gated, config.mlpDropout, training);
  return h + mlpWo(gated);
}

ModernBertModel::ModernBertModel(const ModernBertConfig& config) : config_(config) {
  auto embeddings = register_module("embeddings", std::make_shared<ModuleGroup>());
  tokEmbeddings_ = embeddings->register_module("tok_embeddings", embeddingToFill(config.vocabSize, config.hiddenSize));
  embeddingNorm_ = embeddings->register_module("norm", Norm(config.hiddenSize, config.normEps, config.normBias));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.numLayers; ++i) layers_->push_back(ModernBertLayer(config, i));
  finalNorm_ = register_module("final_norm", Norm(config.hiddenSize, config.normEps, config.normBias));
}

torch::Tensor ModernBertModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor&) {
  const int64_t batch = inputIds.size(0), seq = inputIds.size(1);
  if (seq > config_.maxPositions)
    throw invalidArgument("sequence of " + std::to_string(seq) + " tokens exceeds max_position_embeddings " + std::to_string(config_.maxPositions));
  torch::Tensor hidden = embeddingNorm_(tokEmbeddings_(inputIds));
  if (config_.embeddingDropout > 0) hidden = torch::dropout(hidden, config_.embeddingDropout, is_training());
  const torch::Tensor positions = torch::arange(seq, inputIds.options().dtype(torch::kLong));
  const int64_t d = config_.hiddenSize / config_.numHeads;
  const auto [globalCos, globalSin] = rotaryCosSin(positions, config_.globalTheta, d);
  const auto [localCos, localSin] = rotaryCosSin(positions, config_.localTheta, d);
  // Global layers see every real token; local ones only those within the window (|query - key| <= window).
  torch::Tensor globalMask;
  if (!attentionMask.all().item<bool>()) globalMask = attentionMask.to(torch::kBool).view({batch, 1, 1, seq});
  torch::Tensor localMask, emptyRows;
  if (seq > config_.window + 1) {
    const torch::Tensor distance = (positions.unsqueeze(1) - positions.unsqueeze(0)).abs();
    localMask = distance.le(config_.window).view({1, 1, seq, seq});
    if (globalMask.defined()) {
      localMask = localMask.logical_and(globalMask);
      // A position whose whole window is padding (or unattended query-expansion tokens, which a multi-vector model
      // scores) has no key: PyTorch's attention (2.5 and later), which transformers runs, gives it a zero output. So
      // do we, on every libtorch: such rows see every key (no NaN, forward or backward) and their output is zeroed.
      emptyRows = localMask.logical_not().all(-1, /*keepdim=*/true);
      localMask = localMask.logical_or(emptyRows);
    }
  } else {
    localMask = globalMask;
  }
  for (int64_t i = 0; i < config_.numLayers; ++i) {
    auto* layer = layers_[i]->as<ModernBertLayer>();
    const bool global = config_.global[i];
    const torch::Tensor cos = global ? globalCos : localCos, sin = global ? globalSin : localSin, mask = global ? globalMask : localMask;
    const torch::Tensor empty = global ? torch::Tensor() : emptyRows;
    hidden = runLayer([layer, cos, sin, mask, empty](const torch::Tensor& x) { return layer->forward(x, cos, sin, mask, empty); }, hidden);
  }
  return finalNorm_(hidden);
}

}  // namespace coltrast
