#include "transformer_encoder.h"

#include <set>

#include "../error.h"
#include "checkpoint.h"

namespace coltrast {

void TransformerEncoder::loadWeights(const WeightFiles& file, torch::ScalarType dtype) {
  torch::NoGradGuard noGrad;
  const std::string prefix = weightPrefix();
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    std::string stored = name;
    if (!file.has(stored)) stored = prefix + name;
    if (!file.has(stored)) {
      missing.push_back(name);
      continue;
    }
    torch::Tensor value = file.read(stored);
    torch::Tensor& param = item.value();
    if (value.sizes() != param.sizes()) {
      std::ostringstream msg;
      msg << "weight '" << stored << "' in " << file.description() << " has shape " << value.sizes()
          << " but config.json implies " << param.sizes() << " (config.json and weights disagree)";
      throw modelFilesError(msg.str());
    }
    if (!value.is_floating_point())
      throw modelFilesError("weight '" + stored + "' in " + file.description() + " is not a floating-point tensor");
    param.copy_(value.to(param.scalar_type()));
    used.insert(stored);
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw modelFilesError("weights file " + file.description() + " lacks " + list +
                          " (is it a checkpoint of a different architecture or size than config.json?)");
  }
  kept_.clear();
  for (const auto& name : file.names()) {
    if (used.count(name)) continue;
    const bool prefixed = name.rfind(prefix, 0) == 0;
    kept_.push_back({prefixed ? name.substr(prefix.size()) : name, prefixed, file.read(name)});
  }
  to(dtype);
}

std::vector<std::pair<std::string, torch::Tensor>> TransformerEncoder::weightsForSaving(torch::ScalarType dtype, bool prefixed) const {
  const std::string prefix = prefixed ? weightPrefix() : "";
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(true)) out.emplace_back(prefix + item.key(), item.value().detach().to(dtype));
  // A kept tensor outside the base model (a head's) keeps its own name.
  for (const auto& k : kept_)
    out.emplace_back((k.prefixed ? prefix : "") + k.name, k.value.is_floating_point() ? k.value.to(dtype) : k.value);
  return out;
}

torch::Tensor TransformerEncoder::takeKept(const std::string& name) {
  for (auto it = kept_.begin(); it != kept_.end(); ++it) {
    if (it->name != name) continue;
    torch::Tensor t = it->value;
    kept_.erase(it);
    return t;
  }
  return {};
}

torch::Tensor TransformerEncoder::runLayer(const std::function<torch::Tensor(const torch::Tensor&)>& layer, const torch::Tensor& hidden) {
  return checkpointed(hidden) ? checkpointLayer(layer, hidden) : layer(hidden);
}

bool TransformerEncoder::checkpointed(const torch::Tensor& hidden) const {
  // Only where backward will reach the layer through its input: a checkpoint whose input needs no gradient would
  // hide the layer's parameters from autograd.
  return gradientCheckpointing && is_training() && torch::GradMode::is_enabled() && hidden.requires_grad();
}

}  // namespace coltrast
