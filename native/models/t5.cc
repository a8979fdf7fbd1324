#include "t5.h"

#include "../error.h"
#include "config_json.h"

namespace coltrast {
namespace {

using namespace config;

// transformers' clamp of float16 hidden states after each half-block (so that T5's large activations train in float16):
// to float16's largest finite value, or 1000 below it when some value is already infinite. Other dtypes pass through.
torch::Tensor clampFloat16(const torch::Tensor& h) {
  if (h.scalar_type() != torch::kFloat16) return h;
  const double largest = 65504.0;
  // The bound as a tensor: no read back to the host per layer.
  const torch::Tensor bound = torch::where(h.isinf().any(), torch::full({}, largest - 1000, h.options().dtype(torch::kFloat32)),
                                           torch::full({}, largest, h.options().dtype(torch::kFloat32)));
  return torch::clamp(h, -bound, bound);
}

}  // namespace

T5Config T5Config::fromJson(const nlohmann::json& c) {
  T5Config t;
  t.modelType = stringOr(c, "model_type", "t5");
  t.vocabSize = positiveInt(c, "vocab_size");
  t.dModel = positiveInt(c, "d_model");
  t.dKv = positiveInt(c, "d_kv");
  t.numHeads = positiveInt(c, "num_heads");
  t.dFf = positiveInt(c, "d_ff");
  t.numLayers = positiveInt(c, "num_layers");
  t.buckets = positiveIntOr(c, "relative_attention_num_buckets", 32);
  t.maxDistance = positiveIntOr(c, "relative_attention_max_distance", 128);
  t.maxPositions = positiveIntOr(c, "n_positions", 512);
  t.eps = numberOr(c, "layer_norm_epsilon", 1e-6);
  t.dropout = numberOr(c, "dropout_rate", 0.1);
  // Each half of the buckets holds exact distances below half of it, then logarithmic steps up to the maximum distance.
  if (t.buckets < 4 || t.maxDistance <= t.buckets / 4)
    throw modelFilesError("config.json: relative_attention_num_buckets " + std::to_string(t.buckets) + " and relative_attention_max_distance " +
                          std::to_string(t.maxDistance) + " leave no logarithmic buckets (at least 4 buckets, a distance past a quarter of them)");
  // "relu", "gelu", ... or "gated-<activation>"; transformers reads "gated-gelu" as gelu_new.
  const std::string proj = stringOr(c, "feed_forward_proj", "relu");
  const auto dash = proj.find('-');
  if (dash == std::string::npos) {
    t.activation = proj;
  } else if (proj.substr(0, dash) == "gated" && proj.find('-', dash + 1) == std::string::npos) {
    t.gated = true;
    t.activation = proj == "gated-gelu" ? "gelu_new" : proj.substr(dash + 1);
  } else {
    throw modelFilesError("config.json: feed_forward_proj \"" + proj + "\" is neither an activation nor gated-<activation>");
  }
  checkActivation(t.activation);
  return t;
}

T5NormImpl::T5NormImpl(int64_t size, double eps) : eps(eps) { weight = register_parameter("weight", torch::ones({size})); }

torch::Tensor T5NormImpl::forward(const torch::Tensor& x) const {
  // x times a float32 factor is float32; back to a half-precision weight's dtype as transformers does.
  torch::Tensor h = x * torch::rsqrt(x.to(torch::kFloat32).pow(2).mean(-1, true) + eps);
  if (weight.scalar_type() == torch::kFloat16 || weight.scalar_type() == torch::kBFloat16) h = h.to(weight.scalar_type());
  return weight * h;
}

T5BlockImpl::T5BlockImpl(const T5Config& c, bool hasRelativeBias) : config(c) {
  const int64_t inner = c.numHeads * c.dKv;
  q = registerAt(*this, "layer.0.SelfAttention.q", Dense(c.dModel, inner, false));
  k = registerAt(*this, "layer.0.SelfAttention.k", Dense(c.dModel, inner, false));
  v = registerAt(*this, "layer.0.SelfAttention.v", Dense(c.dModel, inner, false));
  o = registerAt(*this, "layer.0.SelfAttention.o", Dense(inner, c.dModel, false));
  if (hasRelativeBias)
    relativeBias = registerAt(*this, "layer.0.SelfAttention.relative_attention_bias", embeddingToFill(c.buckets, c.numHeads));
  attentionNorm = registerAt(*this, "layer.0.layer_norm", T5Norm(c.dModel, c.eps));
  if (c.gated) {
    wi_0 = registerAt(*this, "layer.1.DenseReluDense.wi_0", Dense(c.dModel, c.dFf, false));
    wi_1 = registerAt(*this, "layer.1.DenseReluDense.wi_1", Dense(c.dModel, c.dFf, false));
  } else {
    wi = registerAt(*this, "layer.1.DenseReluDense.wi", Dense(c.dModel, c.dFf, false));
  }
  wo = registerAt(*this, "layer.1.DenseReluDense.wo", Dense(c.dFf, c.dModel, false));
  ffNorm = registerAt(*this, "layer.1.layer_norm", T5Norm(c.dModel, c.eps));
}

torch::Tensor T5BlockImpl::forward(const torch::Tensor& hidden, const torch::Tensor& bias) {
  const int64_t batch = hidden.size(0), seq = hidden.size(1), heads = config.numHeads, d = config.dKv;
  const bool training = is_training();
  const double p = config.dropout;
  const torch::Tensor x = attentionNorm(hidden);
  const auto split = [&](const torch::Tensor& t) { return t.view({batch, seq, heads, d}).transpose(1, 2); };
  // T5 does not scale the scores (its initialization folds 1/sqrt(d) into the query weights).
  torch::Tensor context = attend(split(q(x)), split(k(x)), split(v(x)), bias, training ? p : 0.0, /*float32Softmax=*/true, /*scale=*/1.0);
  context = context.transpose(1, 2).reshape({batch, seq, heads * d});
  torch::Tensor h = clampFloat16(hidden + torch::dropout(o(context), p, training));
  const torch::Tensor y = ffNorm(h);
  torch::Tensor inner = config.gated ? activate(wi_0(y), config.activation) * wi_1(y) : activate(wi(y), config.activation);
  inner = torch::dropout(inner, p, training);
  return clampFloat16(h + torch::dropout(wo(inner), p, training));
}

T5EncoderModel::T5EncoderModel(const T5Config& config) : config_(config) {
  shared_ = register_module("shared", embeddingToFill(config.vocabSize, config.dModel));
  blocks_ = registerAt(*this, "encoder.block", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.numLayers; ++i) blocks_->push_back(T5Block(config, i == 0));
  finalNorm_ = registerAt(*this, "encoder.final_layer_norm", T5Norm(config.dModel, config.eps));
}

std::vector<std::string> T5EncoderModel::tiedCopies(const std::string& name) const {
  if (name == "shared.weight") return {"encoder.embed_tokens.weight"};
  return {};
}

bool T5EncoderModel::keepsUnused(const std::string& stored) const {
  return stored != "encoder.embed_tokens.weight" && stored.rfind("decoder.", 0) != 0 && stored.rfind("lm_head.", 0) != 0;
}

torch::Tensor T5EncoderModel::positionBias(int64_t seq, const torch::Device& device, torch::ScalarType dtype) {
  const torch::Tensor bucket = relativePositionBuckets(seq, config_.buckets, static_cast<double>(config_.maxDistance), device);
  auto* first = blocks_[0]->as<T5Block>();
  return first->relativeBias(bucket).permute({2, 0, 1}).unsqueeze(0).to(dtype);  // [1, heads, seq, seq]
}

torch::Tensor T5EncoderModel::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, const torch::Tensor&) {
  const int64_t batch = inputIds.size(0), seq = inputIds.size(1);
  const bool training = is_training();
  torch::Tensor hidden = torch::dropout(shared_(inputIds), config_.dropout, training);
  const torch::ScalarType dtype = hidden.scalar_type();
  // Padding keys at the dtype's lowest score, added to the position bias (as transformers adds its mask).
  torch::Tensor padding;
  if (!attentionMask.all().item<bool>()) padding = (1 - attentionMask.to(dtype)).mul(maskedScore(dtype)).view({batch, 1, 1, seq});
  // The bias, computed once and handed to every block (a checkpointed block's gradient reaches it through the checkpoint).
  torch::Tensor bias = positionBias(seq, inputIds.device(), dtype);
  if (padding.defined()) bias = bias + padding;
  for (int64_t i = 0; i < config_.numLayers; ++i) {
    auto* block = blocks_[i]->as<T5Block>();
    hidden = runLayer([block](const torch::Tensor& x, const std::vector<torch::Tensor>& shared) { return block->forward(x, shared[0]); }, hidden, {bias});
  }
  return torch::dropout(finalNorm_(hidden), config_.dropout, training);
}

}  // namespace coltrast
