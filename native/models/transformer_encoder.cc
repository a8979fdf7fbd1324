#include "transformer_encoder.h"

#include <ATen/CPUGeneratorImpl.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <sstream>

#include "../cpu_allocator.h"
#include "../error.h"
#include "checkpoint.h"
#include "layers.h"

namespace coltrast {
namespace {

bool endsWith(const std::string& s, const std::string& tail) { return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0; }

// The model's Dense layers by path ("encoder.layer.0.attention.self.query").
std::vector<std::pair<std::string, DenseImpl*>> denseLayers(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, DenseImpl*>> layers;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto* dense = item.value()->as<DenseImpl>()) layers.emplace_back(item.key(), dense);
  return layers;
}

// One projection quantized, its float weight given back to the system at once (a block kept in the CPU cache would
// wait for a tensor of its size, and the int8 ones are a quarter of it).
void quantizeLayer(DenseImpl& dense) {
  dense.quantizeInt8();
  emptyCpuCache();
}

// After quantizing: the float weights under 1 MiB went back to glibc's heap, not the cache; returned too, or the
// process would keep them.
void trimAfterQuantizing() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace

namespace {

// The index of the stack layer the weight `name` belongs to ("encoder.layer.3.attention..." is 3), as BERT's family and
// DeBERTa (encoder.layer.N.), DistilBERT (transformer.layer.N.), ModernBERT and decoders (layers.N.) and T5's encoder
// (encoder.block.N.) name them, with or without a prefix; -1 for a weight outside the stack.
int64_t stackLayerIndex(const std::string& name) {
  for (const char* stack : {"encoder.layer.", "transformer.layer.", "encoder.block.", "layers."}) {
    const std::string marker(stack);
    for (size_t at = name.find(marker); at != std::string::npos; at = name.find(marker, at + 1)) {
      if (at != 0 && name[at - 1] != '.') continue;
      size_t end = at + marker.size();
      int64_t index = 0;
      bool digits = false;
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) {
        index = index * 10 + (name[end++] - '0');
        digits = true;
      }
      if (digits && end < name.size() && name[end] == '.') return index;
    }
  }
  return -1;
}

}  // namespace

void TransformerEncoder::loadWeights(const WeightFiles& file, torch::ScalarType dtype, bool quantizeInt8) {
  torch::NoGradGuard noGrad;
  // With quantizeInt8: each projection's parameters by name, and how many of them are still to be read.
  std::map<std::string, DenseImpl*> owner;
  std::map<DenseImpl*, int> unread;
  if (quantizeInt8) {
    for (const auto& [path, dense] : denseLayers(*this)) {
      owner[path + ".weight"] = dense;
      if (dense->bias.defined()) owner[path + ".bias"] = dense;
      unread[dense] = dense->bias.defined() ? 2 : 1;
    }
  }
  // The parameters in `dtype` before they are filled: they hold nothing yet, so each is a new empty tensor of it (no
  // float32 copy is filled and then converted; nor is their untouched memory read, which would map it to the zero
  // page and make the first write to that memory, reused, a copy-on-write with a TLB flush on every core).
  for (auto& p : parameters(/*recurse=*/true))
    if (p.is_floating_point() && p.scalar_type() != dtype) p.set_data(torch::empty(p.sizes(), p.options().dtype(dtype)));
  const std::string prefix = weightPrefix();
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    std::string stored = name;
    if (!file.has(stored)) stored = prefix + name;
    for (const auto& copy : tiedCopies(name))
      if (!file.has(stored) && file.has(copy)) stored = copy;
    if (!file.has(stored)) {
      missing.push_back(name);
      continue;
    }
    const SafetensorsFile::Entry& entry = file.entry(stored);
    torch::Tensor& param = item.value();
    if (c10::IntArrayRef(entry.shape) != param.sizes()) {
      std::ostringstream msg;
      msg << "weight '" << stored << "' in " << file.description() << " has shape " << c10::IntArrayRef(entry.shape)
          << " but config.json implies " << param.sizes() << " (config.json and weights disagree)";
      throw modelFilesError(msg.str());
    }
    if (!c10::isFloatingType(entry.dtype))
      throw modelFilesError("weight '" + stored + "' in " + file.description() + " is not a floating-point tensor");
    // Straight from the file into the parameter, converted to its dtype as it is copied.
    file.copyInto(stored, param);
    used.insert(stored);
    const auto o = owner.find(name);
    if (o != owner.end() && --unread[o->second] == 0) quantizeLayer(*o->second);
  }
  if (quantizeInt8) trimAfterQuantizing();
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw modelFilesError("weights file " + file.description() + " lacks " + list +
                          " (is it a checkpoint of a different architecture or size than config.json?)");
  }
  kept_.clear();
  for (const auto& name : file.names()) {
    // A layer past the stack's (a model loaded with fewer layers than its file holds, as config.json then says) is
    // neither run nor saved back.
    if (used.count(name) || !keepsUnused(name) || stackLayerIndex(name) >= layerCount()) continue;
    const bool prefixed = name.rfind(prefix, 0) == 0;
    kept_.push_back({prefixed ? name.substr(prefix.size()) : name, prefixed, file.read(name)});
  }
  to(dtype);  // the buffers, as the model's dtype asks
}

std::vector<std::pair<std::string, torch::Tensor>> TransformerEncoder::weightsForSaving(torch::ScalarType dtype, bool prefixed) const {
  if (quantizedInt8()) throw invalidArgument("a model loaded with quantize: 'int8' keeps only its int8 weights, which cannot be saved: load it without quantize to save it");
  const std::string prefix = prefixed ? weightPrefix() : "";
  std::map<std::string, torch::Tensor> merged;
  for (const auto& [path, dense] : denseLayers(*this))
    if (dense->hasLora()) merged[path + ".weight"] = dense->mergedWeight();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(true)) {
    const std::string& name = item.key();
    if (endsWith(name, ".lora_A") || endsWith(name, ".lora_B")) continue;
    const auto m = merged.find(name);
    out.emplace_back(prefix + name, (m != merged.end() ? m->second : item.value().detach()).to(dtype));
  }
  // A kept tensor outside the base model (a head's) keeps its own name.
  for (const auto& k : kept_)
    out.emplace_back((k.prefixed ? prefix : "") + k.name, k.value.is_floating_point() ? k.value.to(dtype) : k.value);
  return out;
}

torch::Tensor TransformerEncoder::takeKept(const std::string& name) {
  for (auto it = kept_.begin(); it != kept_.end(); ++it) {
    if (it->name != name) continue;
    torch::Tensor t = it->value;
    // Taken for a layer (a classifier, a head): integers there would be converted to float32 and run, scoring garbage,
    // as the base model's own weights are refused for it in load.
    if (!t.is_floating_point())
      throw modelFilesError("weight '" + name + "' in the model's weights file is not a floating-point tensor (" + std::string(c10::toString(t.scalar_type())) +
                            "): the file is damaged or not this model's");
    kept_.erase(it);
    return t;
  }
  return {};
}

torch::Tensor TransformerEncoder::runLayer(const SharedInputLayer& layer, const torch::Tensor& hidden, const std::vector<torch::Tensor>& shared) {
  if (layerInputs) layerInputs->push_back(hidden);
  return checkpointed(hidden) ? checkpointLayer(layer, hidden, shared) : layer(hidden, shared);
}

torch::Tensor TransformerEncoder::runLayer(const std::function<torch::Tensor(const torch::Tensor&)>& layer, const torch::Tensor& hidden) {
  // By value: a checkpoint keeps the function for its backward, after this call has returned.
  return runLayer([layer](const torch::Tensor& x, const std::vector<torch::Tensor>&) { return layer(x); }, hidden, {});
}

int64_t TransformerEncoder::addLora(const std::vector<std::string>& targets, int64_t rank, double scale, double dropout, uint64_t seed) {
  if (rank < 1) throw invalidArgument("LoRA rank must be a positive integer");
  auto generator = at::detail::createCPUGenerator(seed);
  std::vector<DenseImpl*> chosen;
  std::set<std::string> names;
  for (const auto& [path, dense] : denseLayers(*this)) {
    const std::string name = path.substr(path.rfind('.') + 1);
    names.insert(name);
    if (std::find(targets.begin(), targets.end(), name) != targets.end()) chosen.push_back(dense);
  }
  if (chosen.empty()) {
    std::string known, wanted;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    for (const auto& t : targets) wanted += (wanted.empty() ? "" : ", ") + t;
    throw invalidArgument("no projection of this " + modelType() + " model is named " + wanted + " (its projections: " + known + ")");
  }
  for (DenseImpl* dense : chosen) dense->attachLora(rank, scale, dropout, {}, {}, &generator);
  return static_cast<int64_t>(chosen.size());
}

int64_t TransformerEncoder::quantizeInt8() {
  const auto layers = denseLayers(*this);
  for (const auto& [path, dense] : layers) quantizeLayer(*dense);
  trimAfterQuantizing();
  return static_cast<int64_t>(layers.size());
}

bool TransformerEncoder::quantizedInt8() const {
  const auto layers = denseLayers(*this);
  return std::any_of(layers.begin(), layers.end(), [](const auto& layer) { return layer.second->quantizedInt8(); });
}

int64_t TransformerEncoder::loadLora(const WeightFiles& file, double scale, double dropout) {
  std::map<std::string, DenseImpl*> byPath;
  for (const auto& [path, dense] : denseLayers(*this)) byPath[path] = dense;
  const std::string prefix = weightPrefix();
  int64_t count = 0;
  for (const auto& name : file.names()) {
    if (!endsWith(name, ".lora_A.weight")) continue;
    std::string path = name.substr(0, name.size() - std::string(".lora_A.weight").size());
    const std::string bName = path + ".lora_B.weight";
    if (path.rfind(PEFT_PREFIX, 0) == 0) path = path.substr(PEFT_PREFIX.size());
    if (!byPath.count(path) && path.rfind(prefix, 0) == 0) path = path.substr(prefix.size());
    const auto it = byPath.find(path);
    if (it == byPath.end()) {
      // A layer the model keeps but does not run (BERT's pooler, which PEFT adapts when told to adapt every "dense"):
      // its adapter changes no output of coltrast's, and is left out.
      const bool unused = std::any_of(kept_.begin(), kept_.end(), [&](const Kept& k) { return k.name == path + ".weight"; });
      if (unused) continue;
      throw modelFilesError("adapter " + file.description() + ": " + name + " names no projection of this " + modelType() + " model");
    }
    if (!file.has(bName)) throw modelFilesError("adapter " + file.description() + " has " + name + " but no " + bName);
    const torch::Tensor a = file.read(name), b = file.read(bName);
    const torch::Tensor& w = it->second->weight;
    if (a.dim() != 2 || b.dim() != 2 || a.size(1) != w.size(1) || b.size(0) != w.size(0) || b.size(1) != a.size(0)) {
      std::ostringstream msg;
      msg << "adapter " << file.description() << ": " << name << " " << a.sizes() << " and lora_B " << b.sizes() << " do not fit the projection's weight "
          << w.sizes() << " (an adapter of another model?)";
      throw modelFilesError(msg.str());
    }
    it->second->attachLora(a.size(0), scale, dropout, a.to(torch::kFloat32), b.to(torch::kFloat32), nullptr);
    ++count;
  }
  if (count == 0) throw modelFilesError("adapter " + file.description() + " holds no LoRA weights (*.lora_A.weight)");
  return count;
}

std::vector<std::pair<std::string, torch::Tensor>> TransformerEncoder::loraWeights(torch::ScalarType dtype, bool prefixed) const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const std::string prefix = PEFT_PREFIX + (prefixed ? weightPrefix() : "");
  for (const auto& [path, dense] : denseLayers(*this)) {
    if (!dense->hasLora()) continue;
    out.emplace_back(prefix + path + ".lora_A.weight", dense->loraA.detach().to(torch::kCPU, dtype));
    out.emplace_back(prefix + path + ".lora_B.weight", dense->loraB.detach().to(torch::kCPU, dtype));
  }
  return out;
}

std::vector<torch::Tensor> TransformerEncoder::loraParameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& [path, dense] : denseLayers(*this)) {
    if (!dense->hasLora()) continue;
    params.push_back(dense->loraA);
    params.push_back(dense->loraB);
  }
  return params;
}

bool TransformerEncoder::checkpointed(const torch::Tensor& hidden) const {
  // Only where backward will reach the layer through its input: a checkpoint whose input needs no gradient would
  // hide the layer's parameters from autograd.
  return gradientCheckpointing && is_training() && torch::GradMode::is_enabled() && hidden.requires_grad();
}

}  // namespace coltrast
