#include "transformer_encoder.h"

#include <set>

#include "../error.h"

namespace coltrast {

void TransformerEncoder::loadWeights(const SafetensorsFile& file, torch::ScalarType dtype) {
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
      msg << "weight '" << stored << "' in " << file.path() << " has shape " << value.sizes()
          << " but config.json implies " << param.sizes() << " (config.json and weights disagree)";
      throw modelFilesError(msg.str());
    }
    if (!value.is_floating_point())
      throw modelFilesError("weight '" + stored + "' in " + file.path() + " is not a floating-point tensor");
    param.copy_(value.to(param.scalar_type()));
    used.insert(stored);
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw modelFilesError("weights file " + file.path() + " lacks " + list +
                          " (is it a checkpoint of a different architecture or size than config.json?)");
  }
  kept_.clear();
  for (const auto& [name, entry] : file.entries()) {
    if (used.count(name)) continue;
    std::string plain = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
    kept_.emplace_back(plain, file.read(name));
  }
  to(dtype);
}

std::vector<std::pair<std::string, torch::Tensor>> TransformerEncoder::weightsForSaving(torch::ScalarType dtype) const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(true)) out.emplace_back(item.key(), item.value().detach().to(dtype));
  for (const auto& [name, t] : kept_) out.emplace_back(name, t.is_floating_point() ? t.to(dtype) : t);
  return out;
}

}  // namespace coltrast
