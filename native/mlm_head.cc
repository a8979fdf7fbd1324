#include "mlm_head.h"

#include <algorithm>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "error.h"
#include "models/config_json.h"
#include "runtime.h"

namespace coltrast {
namespace {

MlmHead::Names namesOf(const std::string& modelType) {
  if (modelType == "bert") {
    return {"cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias", "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias"};
  }
  if (modelType == "distilbert") return {"vocab_transform", "vocab_layer_norm", "vocab_projector.bias", "vocab_projector.weight", ""};
  if (modelType == "roberta" || modelType == "xlm-roberta" || modelType == "camembert" || modelType == "mpnet") {
    return {"lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder.weight", "lm_head.decoder.bias"};
  }
  if (modelType == "modernbert") return {"head.dense", "head.norm", "decoder.bias", "decoder.weight", ""};
  throw unsupportedError("a masked-language-model head (a sparse encoder's) on " + modelType +
                         " is not supported (bert, distilbert, roberta, xlm-roberta, camembert, mpnet and modernbert are)");
}

// A tensor of the weights file, checked to have `shape`; undefined when `optional` and the file has none.
torch::Tensor takeShaped(TransformerEncoder& model, const std::string& name, const std::vector<int64_t>& shape, bool optional, const std::string& file,
                         const char* what) {
  torch::Tensor t = model.takeKept(name);
  if (!t.defined()) {
    if (optional) return {};
    throw modelFilesError(file + " has no " + name + ": it is not a masked language model (*ForMaskedLM), which a sparse encoder needs (" + what + ")");
  }
  if (t.sizes() != torch::IntArrayRef(shape)) {
    throw modelFilesError(file + ": " + name + " has shape " + c10::str(t.sizes()) + ", expected " + c10::str(torch::IntArrayRef(shape)) + " (" + what + ")");
  }
  return t;
}

}  // namespace

MlmHead MlmHead::take(TransformerEncoder& model, const nlohmann::json& config, const std::string& file, bool drawIfMissing, uint64_t seed) {
  using namespace ::coltrast::config;
  const std::string type = model.modelType();
  MlmHead head;
  head.names = namesOf(type);
  const int64_t hidden = model.hiddenSize();
  const torch::Tensor embeddings = model.tokenEmbeddings();
  if (!embeddings.defined() || embeddings.size(1) != hidden) throw unsupportedError(type + "'s token embeddings are not as wide as its hidden states: no masked-language-model head here");
  const int64_t vocab = embeddings.size(0);
  const bool modern = type == "modernbert";
  const bool denseBias = !modern || boolOr(config, "classifier_bias", false);
  head.activation = type == "bert"         ? stringOr(config, "hidden_act", "gelu")
                    : type == "distilbert" ? stringOr(config, "activation", "gelu")
                    : modern               ? stringOr(config, "classifier_activation", "gelu")
                                           : "gelu";
  checkActivation(head.activation);
  const double eps = type == "distilbert" ? 1e-12 : modern ? numberOr(config, "norm_eps", 1e-5) : numberOr(config, "layer_norm_eps", 1e-12);
  const bool normBias = !modern || boolOr(config, "norm_bias", false);

  {
    // Its initial draw is replaced by the file's weights or the seeded draw below: the global generator is kept as it was.
    PreservedCpuGenerator initialWeights;
    head.dense = torch::nn::Linear(torch::nn::LinearOptions(hidden, hidden).bias(denseBias));
  }
  head.norm = Norm(hidden, eps, normBias);
  const bool decoderBias = !modern || boolOr(config, "decoder_bias", true);
  // Missing with drawIfMissing: the whole head is new.
  const torch::Tensor weight = takeShaped(model, head.names.dense + ".weight", {hidden, hidden}, drawIfMissing, file, "the head's dense layer");
  if (!weight.defined()) {
    // Whatever pieces of a head the file has go (they would be saved beside the new ones).
    for (const auto& name : {head.names.dense + ".bias", head.names.norm + ".weight", head.names.norm + ".bias", head.names.bias, head.names.decoder, head.names.decoderBias}) {
      if (!name.empty()) model.takeKept(name);
    }
    auto generator = at::detail::createCPUGenerator(seed);
    const double std = numberOr(config, "initializer_range", 0.02);
    torch::NoGradGuard noGrad;
    head.dense->weight.normal_(0, std, generator);
    if (denseBias) head.dense->bias.zero_();
    if (decoderBias) head.bias = torch::zeros({vocab}, embeddings.options()).set_requires_grad(true);
    if (!boolOr(config, "tie_word_embeddings", true)) {
      head.decoder = torch::empty({vocab, hidden}).normal_(0, std, generator).to(embeddings.scalar_type()).set_requires_grad(true);
    }
    return head;
  }
  const torch::Tensor bias = denseBias ? takeShaped(model, head.names.dense + ".bias", {hidden}, false, file, "the head's dense layer") : torch::Tensor();
  const torch::Tensor normWeight = takeShaped(model, head.names.norm + ".weight", {hidden}, false, file, "the head's layer norm");
  const torch::Tensor normBiasTensor = normBias ? takeShaped(model, head.names.norm + ".bias", {hidden}, false, file, "the head's layer norm") : torch::Tensor();
  {
    torch::NoGradGuard noGrad;
    head.dense->weight.copy_(weight.to(torch::kFloat32));
    if (denseBias) head.dense->bias.copy_(bias.to(torch::kFloat32));
    head.norm->weight.copy_(normWeight.to(torch::kFloat32));
    if (normBias) head.norm->bias.copy_(normBiasTensor.to(torch::kFloat32));
  }
  // The output layer's bias: the head's own (older files hold a second copy as the decoder's, which transformers ties to it).
  if (decoderBias) {
    head.bias = takeShaped(model, head.names.bias, {vocab}, !head.names.decoderBias.empty(), file, "the output layer's bias");
    if (!head.names.decoderBias.empty()) {
      const torch::Tensor copy = takeShaped(model, head.names.decoderBias, {vocab}, true, file, "the output layer's bias");
      if (!head.bias.defined()) head.bias = copy;
      if (!head.bias.defined()) throw modelFilesError(file + " has no " + head.names.bias + ": it is not a masked language model (*ForMaskedLM), which a sparse encoder needs");
    }
    head.bias = head.bias.to(embeddings.scalar_type()).contiguous().set_requires_grad(true);
  }
  // Tied unless the config says otherwise (each of these families ties by default); a tied file's copy is dropped.
  const torch::Tensor decoder = takeShaped(model, head.names.decoder, {vocab, hidden}, true, file, "the output layer");
  if (!boolOr(config, "tie_word_embeddings", true)) {
    if (!decoder.defined()) throw modelFilesError(file + " has no " + head.names.decoder + " and config.json's tie_word_embeddings is false");
    head.decoder = decoder.to(embeddings.scalar_type()).contiguous().set_requires_grad(true);
  }
  return head;
}

void MlmHead::to(const torch::Device& device) {
  dense->to(device);
  norm->to(device);
  // Still leaves of autograd (trained tensors) on the device.
  torch::NoGradGuard noGrad;
  if (decoder.defined()) decoder = decoder.to(device).set_requires_grad(true);
  if (bias.defined()) bias = bias.to(device).set_requires_grad(true);
}

torch::Tensor MlmHead::logits(const torch::Tensor& states, const torch::Tensor& tokenEmbeddings) const {
  namespace F = torch::nn::functional;
  const torch::Tensor& out = decoder.defined() ? decoder : tokenEmbeddings;
  if (states.is_cuda()) {
    // The transform in float32 (the norm's weights are float32; under mixed precision the product comes back in the
    // autocast dtype), the output layer in the output layer's dtype or autocast's.
    const torch::Tensor x = norm->forward(activate(F::linear(states.to(torch::kFloat32), dense->weight, dense->bias).to(torch::kFloat32), activation));
    return F::linear(x.to(out.scalar_type()), out, bias).to(torch::kFloat32);
  }
  // On the CPU all in float32, autocast off: libtorch 1.13's bfloat16 products (oneDNN's brgemm, Debian's build) threw
  // std::bad_array_new_length creating a kernel for some row counts of these [rows, hidden] products, which a mixed
  // precision training reached after a few hundred steps. A float32 model's output layer is used as it is.
  c10::impl::ExcludeDispatchKeyGuard noAutocast(c10::DispatchKey::AutocastCPU);
  const torch::Tensor x = norm->forward(activate(F::linear(states.to(torch::kFloat32), dense->weight, dense->bias), activation));
  return F::linear(x, out.to(torch::kFloat32), bias.defined() ? bias.to(torch::kFloat32) : bias);
}

std::vector<torch::Tensor> MlmHead::parameters() const {
  std::vector<torch::Tensor> out = dense->parameters();
  for (const auto& p : norm->parameters()) out.push_back(p);
  if (decoder.defined()) out.push_back(decoder);
  if (bias.defined()) out.push_back(bias);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> MlmHead::tensors(torch::ScalarType dtype) const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (t.defined()) out.emplace_back(name, t.detach().to(torch::kCPU, dtype).contiguous());
  };
  add(names.dense + ".weight", dense->weight);
  add(names.dense + ".bias", dense->bias);
  add(names.norm + ".weight", norm->weight);
  add(names.norm + ".bias", norm->bias);
  add(names.bias, bias);
  add(names.decoder, decoder);
  return out;
}

SpladeSettings spladeSettings(const std::string& pooling, const std::string& activation) {
  if (pooling != "max" && pooling != "sum") throw invalidArgument("spladePooling must be 'max' or 'sum', got '" + pooling + "'");
  if (activation != "relu" && activation != "log1p_relu") throw invalidArgument("spladeActivation must be 'relu' or 'log1p_relu', got '" + activation + "'");
  return {pooling == "sum", activation == "log1p_relu"};
}

torch::Tensor spladePool(const MlmHead& head, const torch::Tensor& tokenEmbeddings, const torch::Tensor& states, const torch::Tensor& mask,
                         const SpladeSettings& settings) {
  const bool sum = settings.sum, log1pTwice = settings.log1pTwice;
  const int64_t rows = states.size(0), vocab = tokenEmbeddings.size(0);
  const torch::Tensor lengthTensor = mask.to(torch::kCPU, torch::kInt64).sum(1);
  const auto lengths = lengthTensor.accessor<int64_t, 1>();
  const torch::Tensor keep = mask.to(torch::kBool);
  // About 64 MiB of float32 logits a group (at least one row): 512 tokens of a 30,522-token vocabulary, padded to the
  // group's longest row.
  const int64_t budget = std::max<int64_t>(1, (int64_t{64} << 20) / (4 * vocab));
  const auto transform = [&](torch::Tensor x) {
    x = torch::log1p(torch::relu(x));
    return log1pTwice ? torch::log1p(x) : x;
  };
  std::vector<torch::Tensor> pooled;
  for (int64_t start = 0; start < rows;) {
    int64_t end = start, tokens = 0, longest = 0;
    // Rows join the group while its logits, and its rows padded to the longest, stay within the budget.
    while (end < rows && (end == start || (end - start + 1) * std::max(longest, lengths[end]) <= budget)) {
      longest = std::max(longest, lengths[end]);
      tokens += lengths[end++];
    }
    const torch::Tensor group = states.narrow(0, start, end - start).index({keep.narrow(0, start, end - start)});  // [tokens, hidden]
    torch::Tensor logits = head.logits(group, tokenEmbeddings);                                                     // [tokens, vocab]
    // The group's rows side by side, [rows, longest, vocab], through one index: each row's tokens, then a filler row
    // (-inf before the maximum, 0 after the transform for the sum) up to the longest. One gather and one reduction a
    // group, in forward and backward (a reduction per row of a view into the group's logits had each row's backward
    // fill a whole [tokens, vocab] gradient).
    std::vector<int64_t> at(static_cast<size_t>((end - start) * std::max<int64_t>(longest, 1)), tokens);
    for (int64_t r = start, offset = 0; r < end; offset += lengths[r++]) {
      for (int64_t i = 0; i < lengths[r]; ++i) at[static_cast<size_t>((r - start) * longest + i)] = offset + i;
    }
    const torch::Tensor index = torch::tensor(at, torch::kInt64).to(logits.device());
    const auto filled = [&](const torch::Tensor& x, double filler) {
      return torch::cat({x, torch::full({1, vocab}, filler, x.options())}).index_select(0, index).view({end - start, std::max<int64_t>(longest, 1), vocab});
    };
    // The transform rises with x: the maximum of the transformed logits is the transformed maximum.
    pooled.push_back(sum ? filled(transform(logits), 0).sum(1) : transform(std::get<0>(filled(logits, -std::numeric_limits<double>::infinity()).max(1))));
    start = end;
  }
  return pooled.size() == 1 ? pooled[0] : torch::cat(pooled);
}

}  // namespace coltrast
