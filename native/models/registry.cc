// The one place that maps config.json's `model_type` to an architecture.
#include "../error.h"
#include "bert.h"
#include "deberta.h"
#include "decoder.h"
#include "modernbert.h"
#include "t5.h"
#include "transformer_encoder.h"

namespace coltrast {
namespace {

std::shared_ptr<TransformerEncoder> decoder(const nlohmann::json& c) { return std::make_shared<DecoderModel>(DecoderConfig::fromJson(c)); }
std::shared_ptr<TransformerEncoder> t5Encoder(const nlohmann::json& c) { return std::make_shared<T5EncoderModel>(T5Config::fromJson(c)); }
std::shared_ptr<TransformerEncoder> bertFamily(const nlohmann::json& c) { return std::make_shared<BertModel>(BertConfig::fromJson(c)); }

const std::vector<std::pair<std::string, EncoderFactory>>& factories() {
  static const std::vector<std::pair<std::string, EncoderFactory>> table = {
      {"bert", bertFamily},
      {"roberta", bertFamily},
      {"xlm-roberta", bertFamily},
      {"camembert", bertFamily},
      {"mpnet", bertFamily},
      {"distilbert", bertFamily},
      {"electra", bertFamily},
      {"deberta-v2", [](const nlohmann::json& c) { return std::make_shared<DebertaModel>(DebertaConfig::fromJson(c)); }},
      {"modernbert", [](const nlohmann::json& c) { return std::make_shared<ModernBertModel>(ModernBertConfig::fromJson(c)); }},
      {"t5", t5Encoder},
      {"mt5", t5Encoder},
      {"llama", decoder},
      {"mistral", decoder},
      {"qwen2", decoder},
      {"qwen3", decoder},
      {"gemma3_text", decoder},
      {"gemma2", decoder},
      {"gemma", decoder},
      {"phi3", decoder},
  };
  return table;
}

}  // namespace

std::vector<std::string> supportedModelTypes() {
  std::vector<std::string> names;
  for (const auto& [name, f] : factories()) names.push_back(name);
  return names;
}

std::shared_ptr<TransformerEncoder> createEncoder(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("model_type") || !config["model_type"].is_string())
    throw modelFilesError("config.json has no \"model_type\" string");
  const auto type = config["model_type"].get<std::string>();
  for (const auto& [name, factory] : factories())
    if (name == type) return factory(config);
  std::string known;
  for (const auto& name : supportedModelTypes()) known += (known.empty() ? "" : ", ") + name;
  throw unsupportedError("unsupported model_type " + type + " (coltrast runs: " + known + ")");
}

}  // namespace coltrast
