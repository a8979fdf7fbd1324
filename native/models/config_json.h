// Reading an architecture's settings from config.json, with the key named in every error.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "../error.h"

namespace coltrast::config {

inline int64_t positiveInt(const nlohmann::json& c, const char* key) {
  if (!c.contains(key) || !c[key].is_number_integer() || c[key].get<int64_t>() <= 0)
    throw modelFilesError(std::string("config.json: \"") + key + "\" must be a positive integer");
  return c[key].get<int64_t>();
}

// A positive integer, or `fallback` when the key is absent or null.
inline int64_t positiveIntOr(const nlohmann::json& c, const char* key, int64_t fallback) {
  return !c.contains(key) || c[key].is_null() ? fallback : positiveInt(c, key);
}

inline double numberOr(const nlohmann::json& c, const char* key, double fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_number()) throw modelFilesError(std::string("config.json: \"") + key + "\" must be a number");
  return c[key].get<double>();
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
