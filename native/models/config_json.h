// Reading an architecture's settings from config.json, with the key named in every error.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "../error.h"

namespace coltrast::config {

// The largest value a size in config.json may have: a corrupt or mistyped one (2^31 layers, say) would otherwise
// allocate or build modules for hours before the weights are found not to match. Generous for every real model:
// positions and attention windows up to 2^31 - 1, layer counts up to 65,536, other sizes up to 2^24.
inline int64_t largestSize(const std::string& key) {
  if (key.find("position") != std::string::npos || key.find("window") != std::string::npos) return INT32_MAX;
  if (key == "num_hidden_layers" || key == "num_layers" || key == "n_layers") return 65536;
  return int64_t(1) << 24;
}

inline int64_t positiveInt(const nlohmann::json& c, const char* key) {
  const int64_t most = largestSize(key);
  if (!c.contains(key) || !c[key].is_number_integer() || c[key].get<int64_t>() <= 0 || c[key].get<int64_t>() > most)
    throw modelFilesError(std::string("config.json: \"") + key + "\" must be a positive integer (at most " + std::to_string(most) + ")");
  return c[key].get<int64_t>();
}

// A positive integer, or `fallback` when the key is absent or null.
inline int64_t positiveIntOr(const nlohmann::json& c, const char* key, int64_t fallback) {
  return !c.contains(key) || c[key].is_null() ? fallback : positiveInt(c, key);
}

inline double numberOr(const nlohmann::json& c, const char* key, double fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_number()) throw modelFilesError(std::string("config.json: \"") + key + "\" must be a number");
  const double x = c[key].get<double>();
  // A dropout probability out of range would surface later as libtorch's own error, without the key.
  if (std::string(key).find("dropout") != std::string::npos && !(x >= 0 && x <= 1))
    throw modelFilesError(std::string("config.json: \"") + key + "\" must be a probability from 0 to 1");
  return x;
}

inline bool boolOr(const nlohmann::json& c, const char* key, bool fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_boolean()) throw modelFilesError(std::string("config.json: \"") + key + "\" must be true or false");
  return c[key].get<bool>();
}

inline std::string stringOr(const nlohmann::json& c, const char* key, const std::string& fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_string()) throw modelFilesError(std::string("config.json: \"") + key + "\" must be a string");
  return c[key].get<std::string>();
}

}  // namespace coltrast::config
