#include "decoder.h"

#include <algorithm>
#include <cmath>

#include "../error.h"
#include "../torch_version.h"
#include "layers.h"
#include "config_json.h"

namespace coltrast {
namespace {

using namespace config;

// Rotary settings from one rope_scaling / rope_parameters object `p` (null: plain), as transformers 4 and 5 read them:
// `theta` unless p names its own rope_theta; llama3's and yarn's pretraining length (original_max_position_embeddings)
// defaults to max_position_embeddings, `maxPositions`; `where` names the object in errors. `phi3`: Phi-3's rules (its
// 'longrope', old names 'su' and 'yarn' for it, and partial rotation), with `originalMaxPositions` its top-level
// original_max_position_embeddings, which transformers puts before the object's own.
Rotary rotaryFromJson(const nlohmann::json& p, double theta, double maxPositions, const std::string& where, bool phi3 = false,
                      double originalMaxPositions = 0, double partial = 1.0) {
  Rotary r;
  r.theta = theta;
  r.partial = partial;
  if (p.is_null()) return r;
  if (!p.is_object()) throw modelFilesError("config.json: " + where + " must be an object");
  r.type = stringOr(p, "rope_type", stringOr(p, "type", "default"));
  r.theta = numberOr(p, "rope_theta", theta);
  const auto unsupported = [&](const std::string& why) {
    return unsupportedError("unsupported rotary scaling " + p.dump() + " in config.json's " + where + ": " + why);
  };
  r.partial = numberOr(p, "partial_rotary_factor", partial);
  if (phi3) {
    if (!(r.partial > 0 && r.partial <= 1)) throw modelFilesError("config.json: partial_rotary_factor must be in (0, 1]");
    if (r.type == "su" || r.type == "yarn") r.type = "longrope";  // Phi3Config's old names for it
    if (r.type != "default" && r.type != "longrope") throw unsupported("Phi-3 runs the rope types default and longrope, as transformers' Phi3Config");
  } else if (r.partial != 1.0) {
    throw unsupported("coltrast rotates every dimension of this model type (partial_rotary_factor 1)");
  } else if (r.type != "default" && r.type != "linear" && r.type != "dynamic" && r.type != "llama3" && r.type != "yarn") {
    throw unsupported("coltrast runs the rope types default, linear, dynamic, llama3 and yarn (and Phi-3's longrope)");
  }
  const auto positive = [&](const char* key, double fallback) {
    const double v = numberOr(p, key, fallback);
    if (!(v > 0)) throw modelFilesError("config.json: " + where + "'s \"" + key + "\" must be a positive number for rope_type " + r.type);
    return v;
  };
  r.originalMaxPositions = phi3 ? originalMaxPositions : positive("original_max_position_embeddings", maxPositions);
  if (r.type == "longrope") {
    const auto factors = [&](const char* key) {
      if (!p.contains(key) || !p[key].is_array()) throw modelFilesError("config.json: " + where + "'s \"" + key + "\" must be a list of numbers for rope_type longrope");
      std::vector<double> f;
      for (const auto& x : p[key]) {
        if (!x.is_number() || !(x.get<double>() > 0)) throw modelFilesError("config.json: " + where + "'s \"" + key + "\" must hold positive numbers");
        f.push_back(x.get<double>());
      }
      return f;
    };
    r.shortFactor = factors("short_factor");
    r.longFactor = factors("long_factor");
    // transformers' _compute_longrope_parameters: a missing factor is the ratio of the lengths; the attention factor,
    // unless given, sqrt(1 + ln(factor) / ln(original length)).
    r.factor = positive("factor", maxPositions / r.originalMaxPositions);
    r.attentionFactor = p.contains("attention_factor") && !p["attention_factor"].is_null() ? positive("attention_factor", 1.0)
                        : r.factor <= 1 ? 1.0 : std::sqrt(1 + std::log(r.factor) / std::log(r.originalMaxPositions));
  }
  if (r.type == "linear" || r.type == "llama3") r.factor = positive("factor", 0);
  if (r.type == "llama3") {
    r.lowFreqFactor = positive("low_freq_factor", 0);
    r.highFreqFactor = positive("high_freq_factor", 0);
    if (!(r.highFreqFactor > r.lowFreqFactor)) throw modelFilesError("config.json: " + where + "'s high_freq_factor must exceed low_freq_factor");
  }
  if (r.type == "yarn") {
    // transformers' _compute_yarn_parameters: a null factor is the ratio of the lengths; the attention factor, unless
    // given, 0.1 ln(factor) + 1 (or the ratio of two such with mscale and mscale_all_dim).
    r.factor = positive("factor", maxPositions / r.originalMaxPositions);
    r.betaFast = numberOr(p, "beta_fast", 32.0);
    r.betaSlow = numberOr(p, "beta_slow", 1.0);
    if (r.betaFast == 0) r.betaFast = 32.0;
    if (r.betaSlow == 0) r.betaSlow = 1.0;
    r.truncate = boolOr(p, "truncate", true);
    const auto scale = [&](double m) { return r.factor <= 1 ? 1.0 : 0.1 * m * std::log(r.factor) + 1.0; };
    const double mscale = numberOr(p, "mscale", 0), mscaleAll = numberOr(p, "mscale_all_dim", 0);
    r.attentionFactor = p.contains("attention_factor") && !p["attention_factor"].is_null() ? positive("attention_factor", 1.0)
                        : mscale != 0 && mscaleAll != 0                                     ? scale(mscale) / scale(mscaleAll)
                                                                                            : scale(1.0);
  }
  return r;
}

// config.json's layer_types as sliding (true) or full (false) attention per layer; empty when it has none.
std::vector<bool> layerTypes(const nlohmann::json& c, int64_t numLayers) {
  std::vector<bool> sliding;
  if (!c.contains("layer_types") || !c["layer_types"].is_array()) return sliding;
  const auto& types = c["layer_types"];
  if (static_cast<int64_t>(types.size()) != numLayers) {
    throw modelFilesError("config.json: layer_types has " + std::to_string(types.size()) + " entries for " + std::to_string(numLayers) + " layers");
  }
  for (const auto& t : types) {
    const std::string type = t.is_string() ? t.get<std::string>() : t.dump();
    if (type != "sliding_attention" && type != "full_attention") throw unsupportedError("unsupported layer type " + type + " in config.json's layer_types");
    sliding.push_back(type == "sliding_attention");
  }
  return sliding;
}

// Gemma 3's and Gemma 2's settings (DecoderConfig::gemma), from config.json as transformers 4 or 5 writes it.
void gemmaFromJson(DecoderConfig& d, const nlohmann::json& c, bool v5) {
  const bool gemma2 = d.modelType == "gemma2";
  d.gemma = d.sandwich = true;
  d.qkNorm = !gemma2;
  d.qkvBias = d.outputBias = boolOr(c, "attention_bias", false);
  d.activation = stringOr(c, "hidden_activation", "gelu_pytorch_tanh");
  checkActivation(d.activation);
  d.queryScalar = numberOr(c, "query_pre_attn_scalar", 256.0);
  if (!(d.queryScalar > 0)) throw modelFilesError("config.json: query_pre_attn_scalar must be a positive number");
  // Soft-capping: Gemma 2's defaults, none for Gemma 3 unless its config sets them.
  const auto cap = [&](const char* key, double fallback) {
    const double v = numberOr(c, key, fallback);
    if (v < 0) throw modelFilesError(std::string("config.json: ") + key + " must be a positive number or null");
    return v;
  };
  d.attnSoftcap = cap("attn_logit_softcapping", gemma2 && !c.contains("attn_logit_softcapping") ? 50.0 : 0.0);
  d.finalSoftcap = cap("final_logit_softcapping", gemma2 && !c.contains("final_logit_softcapping") ? 30.0 : 0.0);
  d.bidirectional = boolOr(c, "use_bidirectional_attention", false);
  if (gemma2 && d.bidirectional) throw unsupportedError("gemma2 with use_bidirectional_attention is not supported (EmbeddingGemma's is gemma3_text)");
  d.window = positiveIntOr(c, "sliding_window", 4096);
  // transformers' bidirectional window: |query - key| < sliding_window / 2 + 1 (Gemma3TextConfig.__post_init__).
  if (d.bidirectional) d.window = d.window / 2 + 1;
  d.slidingLayers = layerTypes(c, d.numLayers);
  if (d.slidingLayers.empty()) {
    // Older configs: every sliding_window_pattern-th layer is a full one (Gemma 2: every second).
    const int64_t pattern = gemma2 ? 2 : positiveIntOr(c, "sliding_window_pattern", positiveIntOr(c, "_sliding_window_pattern", 6));
    for (int64_t i = 0; i < d.numLayers; ++i) d.slidingLayers.push_back((i + 1) % pattern != 0);
  }
  // Gemma 2's one rotary base serves both kinds of layer (DecoderConfig::fromJson read it).
  if (gemma2) return;
  // Rotary positions per layer type: rope_parameters' full_attention and sliding_attention (transformers 5), or
  // rope_theta with rope_scaling for the full layers and rope_local_base_freq for the sliding ones (4).
  const double maxPositions = static_cast<double>(d.maxPositions);
  const auto layerRotary = [&](const char* layerType, const char* v4Theta, double fallback, const char* v4Scaling) {
    if (v5 && c["rope_parameters"].contains(layerType)) {
      return rotaryFromJson(c["rope_parameters"][layerType], fallback, maxPositions, std::string("rope_parameters.") + layerType);
    }
    const double theta = numberOr(c, v4Theta, fallback);
    if (v4Scaling != nullptr && c.contains(v4Scaling)) return rotaryFromJson(c[v4Scaling], theta, maxPositions, v4Scaling);
    return rotaryFromJson(nullptr, theta, maxPositions, "");
  };
  d.rotary = layerRotary("full_attention", "rope_theta", 1000000.0, "rope_scaling");
  d.localRotary = layerRotary("sliding_attention", "rope_local_base_freq", 10000.0, nullptr);
}

}  // namespace

DecoderConfig DecoderConfig::fromJson(const nlohmann::json& c) {
  DecoderConfig d;
  d.modelType = c["model_type"].get<std::string>();
  d.vocabSize = positiveInt(c, "vocab_size");
  d.hiddenSize = positiveInt(c, "hidden_size");
  d.numLayers = positiveInt(c, "num_hidden_layers");
  d.numHeads = positiveInt(c, "num_attention_heads");
  d.numKvHeads = positiveIntOr(c, "num_key_value_heads", d.numHeads);
  d.headDim = positiveIntOr(c, "head_dim", d.hiddenSize / d.numHeads);
  d.intermediateSize = positiveInt(c, "intermediate_size");
  d.maxPositions = positiveInt(c, "max_position_embeddings");
  d.rmsNormEps = numberOr(c, "rms_norm_eps", 1e-6);
  d.attentionDropout = numberOr(c, "attention_dropout", 0.0);
  if (d.numHeads % d.numKvHeads != 0) {
    throw modelFilesError("config.json: num_attention_heads " + std::to_string(d.numHeads) + " is not a multiple of num_key_value_heads " +
                          std::to_string(d.numKvHeads));
  }
  if (d.headDim % 2 != 0) throw modelFilesError("config.json: head_dim must be even (rotary positions rotate pairs)");
  const std::string act = stringOr(c, "hidden_act", "silu");
  if (act != "silu" && d.modelType != "gemma3_text" && d.modelType != "gemma2" && d.modelType != "gemma") throw unsupportedError("unsupported hidden_act " + act + " for " + d.modelType + " (coltrast runs silu)");
  d.activation = act;
  // Rotary settings: top-level rope_theta and rope_scaling (transformers 4 configs, rope_scaling first, as transformers
  // 5 reads them), or rope_parameters (transformers 5). Gemma 3's are per layer type (gemmaFromJson).
  const bool v5 = c.contains("rope_parameters") && c["rope_parameters"].is_object();
  if (d.modelType != "gemma3_text") {
    const double theta = numberOr(v5 ? c["rope_parameters"] : c, "rope_theta", 10000.0);
    const bool scaling = c.contains("rope_scaling") && !c["rope_scaling"].is_null();
    // Phi-3's pretraining length and partial rotation are top-level keys too (Phi3Config's defaults 4096 and 1).
    const bool phi3 = d.modelType == "phi3";
    d.rotary = rotaryFromJson(scaling ? c["rope_scaling"] : v5 ? c["rope_parameters"] : nlohmann::json(), theta, static_cast<double>(d.maxPositions),
                              scaling ? "rope_scaling" : "rope_parameters", phi3, phi3 ? positiveIntOr(c, "original_max_position_embeddings", 4096) : 0,
                              phi3 ? numberOr(c, "partial_rotary_factor", 1.0) : 1.0);
    d.localRotary = d.rotary;  // one rotary base for every layer
  }
  if (d.modelType == "qwen2" || d.modelType == "qwen3") {
    if (d.modelType == "qwen2") {
      d.qkvBias = true;  // Qwen2's query, key and value projections always have biases
    } else {
      d.qkvBias = d.outputBias = boolOr(c, "attention_bias", false);
      d.qkNorm = true;
    }
    // With use_sliding_window, the layers layer_types names, else those from max_window_layers on (transformers').
    if (boolOr(c, "use_sliding_window", false) && positiveIntOr(c, "sliding_window", 0) > 0) {
      d.window = positiveInt(c, "sliding_window");
      d.slidingLayers = layerTypes(c, d.numLayers);
      if (d.slidingLayers.empty()) {
        const int64_t from = positiveIntOr(c, "max_window_layers", 28);
        for (int64_t i = 0; i < d.numLayers; ++i) d.slidingLayers.push_back(i >= from);
      }
    }
  } else if (d.modelType == "llama") {
    d.qkvBias = d.outputBias = boolOr(c, "attention_bias", false);
    d.mlpBias = boolOr(c, "mlp_bias", false);
  } else if (d.modelType == "mistral" || d.modelType == "phi3") {
    // transformers' MistralModel and Phi3Model: one sliding-window mask for every layer when sliding_window is set.
    d.window = positiveIntOr(c, "sliding_window", 0);
    if (d.window > 0) d.slidingLayers.assign(d.numLayers, true);
    if (d.modelType == "phi3") {
      // Phi-3 (Phi-3.5, Phi-4): Llama's layer without biases, its projections fused (self_attn.qkv_proj, mlp.gate_up_proj),
      // dropout on each residual branch in training (resid_pdrop), rotary positions of its own (rotaryFromJson).
      d.fused = true;
      d.residualDropout = numberOr(c, "resid_pdrop", 0.0);
      if (!(d.residualDropout >= 0 && d.residualDropout < 1)) throw modelFilesError("config.json: resid_pdrop must be in [0, 1)");
      const int64_t rotated = d.rotary.dims(d.headDim);
      if (rotated < 2 || rotated % 2 != 0) {
        throw modelFilesError("config.json: partial_rotary_factor " + std::to_string(d.rotary.partial) + " of head_dim " + std::to_string(d.headDim) +
                              " leaves " + std::to_string(rotated) + " rotated dimensions; rotary positions need an even number");
      }
      // LongRoPE divides each rotated pair's frequency by its own factor.
      const auto pairs = static_cast<size_t>(rotated / 2);
      if (d.rotary.longrope() && (d.rotary.shortFactor.size() != pairs || d.rotary.longFactor.size() != pairs)) {
        throw modelFilesError("config.json: longrope's short_factor and long_factor need " + std::to_string(pairs) + " numbers each (half of the rotated head dimensions)");
      }
    }
  } else if (d.modelType == "gemma3_text" || d.modelType == "gemma2") {
    gemmaFromJson(d, c, v5);
  } else if (d.modelType == "gemma") {
    // Gemma 1: Llama's layer with Gemma's embeddings, norms and GELU (tanh) MLP ("gelu" in old configs means it too).
    d.gemma = true;
    d.qkvBias = d.outputBias = boolOr(c, "attention_bias", false);
    d.activation = stringOr(c, "hidden_activation", stringOr(c, "hidden_act", "gelu_pytorch_tanh"));
    if (d.activation == "gelu") d.activation = "gelu_pytorch_tanh";
    checkActivation(d.activation);
    d.queryScalar = static_cast<double>(d.headDim);
    if (boolOr(c, "use_bidirectional_attention", false)) throw unsupportedError("gemma with use_bidirectional_attention is not supported");
  } else {
    throw unsupportedError("unsupported decoder model_type " + d.modelType);
  }
  return d;
}

bool DecoderConfig::windowed(int64_t length) const {
  // The farthest key is length - 1 positions from its query; a window reaches window - 1.
  return length > window && std::any_of(slidingLayers.begin(), slidingLayers.end(), [](bool b) { return b; });
}

RmsNormImpl::RmsNormImpl(int64_t size, double eps, bool offset) : eps(eps), offset(offset) {
  weight = register_parameter("weight", offset ? torch::zeros({size}) : torch::ones({size}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = x.to(torch::kFloat32);
  const torch::Tensor normed = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps);
  if (offset) return (normed * (1 + weight.to(torch::kFloat32))).to(x.scalar_type());
  return weight * normed.to(x.scalar_type());
}

DecoderLayerImpl::DecoderLayerImpl(const DecoderConfig& c) : config(c) {
  auto linear = [](int64_t in, int64_t out, bool bias) { return Dense(in, out, bias); };
  // Hugging Face's names: self_attn.{q,k,v,o}_proj (and q_norm, k_norm), mlp.{gate,up,down}_proj.
  // Phi-3's fused: self_attn.qkv_proj (the queries', keys' and values' rows one after another), mlp.gate_up_proj.
  auto attention = register_module("self_attn", std::make_shared<ModuleGroup>());
  if (c.fused) {
    qkv_proj = attention->register_module("qkv_proj", linear(c.hiddenSize, (c.numHeads + 2 * c.numKvHeads) * c.headDim, c.qkvBias));
  } else {
    q_proj = attention->register_module("q_proj", linear(c.hiddenSize, c.numHeads * c.headDim, c.qkvBias));
    k_proj = attention->register_module("k_proj", linear(c.hiddenSize, c.numKvHeads * c.headDim, c.qkvBias));
    v_proj = attention->register_module("v_proj", linear(c.hiddenSize, c.numKvHeads * c.headDim, c.qkvBias));
  }
  o_proj = attention->register_module("o_proj", linear(c.numHeads * c.headDim, c.hiddenSize, c.outputBias));
  if (c.qkNorm) {
    q_norm = attention->register_module("q_norm", RmsNorm(c.headDim, c.rmsNormEps, c.gemma));
    k_norm = attention->register_module("k_norm", RmsNorm(c.headDim, c.rmsNormEps, c.gemma));
  }
  auto mlp = register_module("mlp", std::make_shared<ModuleGroup>());
  if (c.fused) {
    gate_up_proj = mlp->register_module("gate_up_proj", linear(c.hiddenSize, 2 * c.intermediateSize, c.mlpBias));
  } else {
    gate_proj = mlp->register_module("gate_proj", linear(c.hiddenSize, c.intermediateSize, c.mlpBias));
    up_proj = mlp->register_module("up_proj", linear(c.hiddenSize, c.intermediateSize, c.mlpBias));
  }
  down_proj = mlp->register_module("down_proj", linear(c.intermediateSize, c.hiddenSize, c.mlpBias));
  input_layernorm = register_module("input_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps, c.gemma));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps, c.gemma));
  if (c.sandwich) {
    pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps, true));
    post_feedforward_layernorm = register_module("post_feedforward_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps, true));
  }
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const torch::Tensor& mask, KvCache* cache) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1), d = config.headDim;
  const torch::Tensor x = input_layernorm(hidden);
  auto heads = [&](const torch::Tensor& t, int64_t n, RmsNorm& norm) {
    torch::Tensor h = t.view({batch, seq, n, d});
    if (norm) h = norm(h);
    return h.transpose(1, 2);  // [batch, n, seq, d]
  };
  RmsNorm none{nullptr};
  torch::Tensor q, k, v;
  if (qkv_proj) {
    const torch::Tensor qkv = qkv_proj(x);
    const int64_t queries = config.numHeads * d, keys = config.numKvHeads * d;
    q = heads(qkv.narrow(-1, 0, queries), config.numHeads, q_norm);
    k = heads(qkv.narrow(-1, queries, keys), config.numKvHeads, k_norm);
    v = heads(qkv.narrow(-1, queries + keys, keys), config.numKvHeads, none);
  } else {
    q = heads(q_proj(x), config.numHeads, q_norm), k = heads(k_proj(x), config.numKvHeads, k_norm);
    v = heads(v_proj(x), config.numKvHeads, none);
  }
  // Rotary positions, with cos and sin in the queries' dtype as Hugging Face applies them; with partial rotation on
  // the first cos.size(-1) dimensions of each head, the rest passed through.
  const torch::Tensor c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
  const int64_t rotated = c.size(-1);
  const auto rotate = [&](const torch::Tensor& t) {
    if (rotated == d) return t * c + rotateHalf(t) * s;
    const torch::Tensor part = t.narrow(-1, 0, rotated);
    return torch::cat({part * c + rotateHalf(part) * s, t.narrow(-1, rotated, d - rotated)}, -1);
  };
  q = rotate(q);
  k = rotate(k);
  // Without a mask the attention is causal; with a cache, the mask covers the cached keys too.
  const bool causal = !mask.defined();
  if (cache) {
    if (causal) throw invalidArgument("cached decoding needs the attention mask");
    if (cache->keys.defined()) {
      k = torch::cat({cache->keys, k}, 2);
      v = torch::cat({cache->values, v}, 2);
    }
    cache->keys = k;
    cache->values = v;
  }
  // Grouped-query attention: each key/value head serves numHeads / numKvHeads query heads (repeat_kv).
  if (config.numKvHeads != config.numHeads) {
    const int64_t groups = config.numHeads / config.numKvHeads;
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  const double dropout = is_training() ? config.attentionDropout : 0.0;
  // Scores scaled by 1 / sqrt(head_dim), Gemma's by 1 / sqrt(query_pre_attn_scalar).
  const double scale = 1.0 / std::sqrt(config.gemma ? config.queryScalar : static_cast<double>(d));
  torch::Tensor context;
#if COLTRAST_TORCH_AT_LEAST(2, 1)
  // Soft-capped scores have no fused kernel: those layers compute attention as transformers' eager attention does.
  if (fusedAttention() && config.attnSoftcap == 0) {
    context = mask.defined() ? at::scaled_dot_product_attention(q, k, v, mask, dropout, false, scale)
                             : at::scaled_dot_product_attention(q, k, v, {}, dropout, causal, scale);
  } else
#endif
  {
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) * scale;
    if (config.attnSoftcap > 0) scores = torch::tanh(scores / config.attnSoftcap) * config.attnSoftcap;
    if (mask.defined() || causal) {
      const torch::Tensor allowed =
          mask.defined() ? mask : torch::ones({seq, seq}, q.options().dtype(torch::kBool)).tril().view({1, 1, seq, seq});
      scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    }
    // The softmax in float32, as Hugging Face's eager attention.
    torch::Tensor weights = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
    if (dropout > 0) weights = torch::dropout(weights, dropout, true);
    context = torch::matmul(weights, v);
  }
  context = context.transpose(1, 2).reshape({batch, seq, config.numHeads * d});
  if (config.sandwich) {
    const torch::Tensor attended = hidden + post_attention_layernorm(o_proj(context));
    const torch::Tensor y = pre_feedforward_layernorm(attended);
    return attended + post_feedforward_layernorm(down_proj(activate(gate_proj(y), config.activation) * up_proj(y)));
  }
  // Phi-3's dropout on each residual branch (resid_pdrop), in training.
  const auto branch = [&](const torch::Tensor& t) { return config.residualDropout > 0 ? torch::dropout(t, config.residualDropout, is_training()) : t; };
  const torch::Tensor attended = hidden + branch(o_proj(context));
  const torch::Tensor y = post_attention_layernorm(attended);
  torch::Tensor gate, up;
  if (gate_up_proj) {
    const auto halves = gate_up_proj(y).chunk(2, -1);
    gate = halves[0], up = halves[1];
  } else {
    gate = gate_proj(y), up = up_proj(y);
  }
  return attended + branch(down_proj((config.activation == "silu" ? torch::silu(gate) : activate(gate, config.activation)) * up));
}

DecoderModel::DecoderModel(const DecoderConfig& config) : config_(config) {
  embed_tokens_ = register_module("embed_tokens", embeddingToFill(config.vocabSize, config.hiddenSize));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.numLayers; ++i) layers_->push_back(DecoderLayer(config));
  norm_ = register_module("norm", RmsNorm(config.hiddenSize, config.rmsNormEps, config.gemma));
}

void DecoderModel::checkLength(int64_t seq) const {
  if (seq > config_.maxPositions) {
    throw invalidArgument("sequence of " + std::to_string(seq) + " tokens exceeds max_position_embeddings " + std::to_string(config_.maxPositions));
  }
}

torch::Tensor DecoderModel::embed(const torch::Tensor& inputIds) {
  const torch::Tensor hidden = embed_tokens_(inputIds);
  return config_.gemma ? hidden * torch::full({}, std::sqrt(static_cast<double>(config_.hiddenSize)), hidden.options()) : hidden;
}

std::pair<torch::Tensor, torch::Tensor> DecoderModel::rotary(const torch::Tensor& positions, bool local, const torch::Tensor& longRows) const {
  return rotaryCosSin(positions, local ? config_.localRotary : config_.rotary, config_.headDim, longRows);
}

torch::Tensor DecoderModel::longRows(const torch::Tensor& lengths) const {
  if (!config_.rotary.longrope()) return {};
  return lengths.gt(static_cast<int64_t>(config_.rotary.originalMaxPositions));
}

void KvCache::keepRows(const torch::Tensor& rows) {
  keys = keys.index_select(0, rows);
  values = values.index_select(0, rows);
  if (ids.defined()) {
    ids = ids.index_select(0, rows);
    positions = positions.index_select(0, rows);
    longRows = longRows.index_select(0, rows);
  }
}

torch::Tensor DecoderModel::forwardCached(const torch::Tensor& inputIds, const torch::Tensor& positions, const torch::Tensor& keyMask,
                                          std::vector<KvCache>& caches) {
  if (config_.bidirectional) throw unsupportedError("a bidirectional gemma3_text model (EmbeddingGemma) embeds; it does not generate");
  caches.resize(layers_->size());
  const int64_t batch = inputIds.size(0), n = inputIds.size(1);
  const int64_t past = caches[0].keys.defined() ? caches[0].keys.size(2) : 0;
  if (keyMask.size(0) != batch || keyMask.size(1) != past + n || positions.sizes() != inputIds.sizes()) {
    throw invalidArgument("cached decoding: keyMask must be [batch, cached + new] and positions [batch, new]");
  }
  const int64_t length = positions.max().item<int64_t>() + 1;
  checkLength(length);
  // LongRoPE: the rows longer than the pretraining length take the long factors (each row's length: its last new
  // token's position + 1). A row that has just grown past it had its cached keys rotated with the short ones: then
  // every row is computed again from its first token, which transformers' Phi3ForCausalLM means to do when it drops
  // its cache at that step (5.18's generate() then feeds it only the new token; tiny_causal_lms.py, NO_CACHE).
  const torch::Tensor longer = longRows(positions.select(1, n - 1) + 1);
  if (longer.defined()) {
    if (past > 0 && longer.logical_and(caches[0].longRows.logical_not()).any().item<bool>()) {
      const torch::Tensor ids = torch::cat({caches[0].ids, inputIds}, 1), all = torch::cat({caches[0].positions, positions}, 1);
      caches.assign(caches.size(), KvCache{});
      return forwardCached(ids, all, keyMask, caches).narrow(1, past, n);
    }
    caches[0].ids = past > 0 ? torch::cat({caches[0].ids, inputIds}, 1) : inputIds;
    caches[0].positions = past > 0 ? torch::cat({caches[0].positions, positions}, 1) : positions;
    caches[0].longRows = longer;
  }
  const auto perRow = [](std::pair<torch::Tensor, torch::Tensor> cs) { return std::make_pair(cs.first.unsqueeze(1), cs.second.unsqueeze(1)); };
  const auto [cos, sin] = perRow(rotary(positions, false, longer));  // [batch, 1, n, rotated dimensions]
  // Each new token sees the real tokens up to itself. A padding position of a prompt sees itself too, so that no
  // row of the attention is empty (its output is never used), as transformers unmasks such rows.
  const auto options = keyMask.options().dtype(torch::kBool);
  const torch::Tensor keys = keyMask.to(torch::kBool).view({batch, 1, 1, past + n});
  const torch::Tensor self = torch::cat({torch::zeros({n, past}, options), torch::eye(n, options)}, 1);
  torch::Tensor mask = keys;
  if (n > 1) mask = keys.logical_and(torch::ones({n, past + n}, options).tril(past)).logical_or(self);
  torch::Tensor hidden = embed(inputIds);
  if (!config_.perLayerMasks(length)) {
    for (size_t i = 0; i < layers_->size(); ++i) hidden = layers_[i]->as<DecoderLayer>()->forward(hidden, cos, sin, mask, &caches[i]);
    return norm_(hidden);
  }
  // Sliding layers see only the keys less than `window` positions back (each key's position: the real tokens before
  // it in its row), Gemma 3's with their own rotary base.
  const auto [localCos, localSin] = perRow(rotary(positions, true, longer));
  const torch::Tensor keyPositions = keyMask.to(torch::kInt64).cumsum(1) - 1;
  const torch::Tensor near = keyPositions.view({batch, 1, 1, past + n}).gt(positions.view({batch, 1, n, 1}) - config_.window);
  const torch::Tensor windowMask = mask.logical_and(near).logical_or(self);
  for (size_t i = 0; i < layers_->size(); ++i) {
    const bool sliding = config_.slidingLayers[i];
    hidden = layers_[i]->as<DecoderLayer>()->forward(hidden, sliding ? localCos : cos, sliding ? localSin : sin, sliding ? windowMask : mask, &caches[i]);
  }
  return norm_(hidden);
}

std::pair<torch::Tensor, torch::Tensor> DecoderModel::positionRotary(const torch::Tensor& attentionMask, bool local) const {
  const int64_t batch = attentionMask.size(0), seq = attentionMask.size(1);
  const torch::Tensor positions = torch::arange(seq, attentionMask.options().dtype(torch::kInt64));
  const torch::Tensor longer = longRows(attentionMask.sum(1));
  if (!longer.defined()) return rotary(positions, local);
  const auto [cos, sin] = rotary(positions.expand({batch, seq}), local, longer);
  return {cos.unsqueeze(1), sin.unsqueeze(1)};
}

torch::Tensor DecoderModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor&) {
  const int64_t batch = inputIds.size(0), seq = inputIds.size(1);
  checkLength(seq);
  torch::Tensor hidden = embed(inputIds);
  if (config_.perLayerMasks(seq)) return forwardWindowed(hidden, attentionMask);
  const auto [cos, sin] = positionRotary(attentionMask, false);
  // Right padding: every real token sees only real tokens before it; a padding position sees the real tokens
  // too (its output is never used), so no row of the mask is empty. Without padding, plain causal attention.
  torch::Tensor mask;
  if (!attentionMask.all().item<bool>()) {
    const torch::Tensor causal = torch::ones({seq, seq}, attentionMask.options().dtype(torch::kBool)).tril();
    mask = causal.view({1, 1, seq, seq}).logical_and(attentionMask.to(torch::kBool).view({batch, 1, 1, seq}));
  }
  for (const auto& layer : *layers_) {
    DecoderLayerImpl* l = layer->as<DecoderLayer>();
    hidden = runLayer([l, cos, sin, mask](const torch::Tensor& x) { return l->forward(x, cos, sin, mask); }, hidden);
  }
  return norm_(hidden);
}

torch::Tensor DecoderModel::forwardWindowed(torch::Tensor hidden, const torch::Tensor& attentionMask) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1);
  const torch::Tensor positions = torch::arange(seq, attentionMask.options().dtype(torch::kInt64));
  const auto [cos, sin] = positionRotary(attentionMask, false);
  const auto [localCos, localSin] = positionRotary(attentionMask, true);
  // Which key each query may attend: full layers causally (or everywhere when bidirectional), sliding ones within the
  // window, and only real tokens; each position may attend itself too, so that a padding position far past the real
  // tokens keeps a non-empty row (its output is never used, but an empty row would be NaN and reach the others).
  const torch::Tensor query = positions.view({seq, 1}), key = positions.view({1, seq});
  const torch::Tensor causal = key.le(query);
  const torch::Tensor full = config_.bidirectional ? torch::ones({seq, seq}, causal.options()) : causal;
  const torch::Tensor window = config_.bidirectional ? (query - key).abs().lt(config_.window) : causal.logical_and(key.gt(query - config_.window));
  const torch::Tensor keys = attentionMask.to(torch::kBool).view({batch, 1, 1, seq});
  const torch::Tensor self = torch::eye(seq, causal.options()).view({1, 1, seq, seq});
  const torch::Tensor fullMask = full.view({1, 1, seq, seq}).logical_and(keys).logical_or(self);
  const torch::Tensor windowMask = window.view({1, 1, seq, seq}).logical_and(keys).logical_or(self);
  for (size_t i = 0; i < layers_->size(); ++i) {
    DecoderLayerImpl* l = layers_[i]->as<DecoderLayer>();
    const bool sliding = config_.slidingLayers[i];
    const torch::Tensor c = sliding ? localCos : cos, s = sliding ? localSin : sin, mask = sliding ? windowMask : fullMask;
    hidden = runLayer([l, c, s, mask](const torch::Tensor& x) { return l->forward(x, c, s, mask); }, hidden);
  }
  return norm_(hidden);
}

}  // namespace coltrast
