// Reading the arguments lib/ passes to native code: optional options with a fallback (a value of the
// wrong type is an INVALID_ARGUMENT error), and padded token batches ({inputIds, attentionMask,
// tokenTypeIds: Int32Array, batchSize, seqLen}, as lib/tokenizer.ts's padBatch makes them), rows of vectors, and
// what the vector stores (native/search) take and give back.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "error.h"

namespace coltrast {

inline std::string stringOr(const Napi::Object& o, const char* key, const std::string& fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) throw invalidArgument(std::string(key) + " must be a string");
  return v.As<Napi::String>();
}

inline bool boolOr(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) throw invalidArgument(std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>();
}

// An array of strings; undefined gives none. Anything else is an INVALID_ARGUMENT error, `what` its message.
inline std::vector<std::string> stringsOr(const Napi::Value& v, const std::string& what) {
  std::vector<std::string> out;
  if (v.IsUndefined()) return out;
  if (!v.IsArray()) throw invalidArgument(what);
  auto list = v.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    if (!list.Get(i).IsString()) throw invalidArgument(what);
    out.push_back(list.Get(i).As<Napi::String>());
  }
  return out;
}

// The largest integer that a JS number holds exactly (Number.MAX_SAFE_INTEGER).
constexpr int64_t kMaxSafeInteger = 9007199254740991;

// A whole number from min to max, or an INVALID_ARGUMENT error naming `what`. N-API's own integer getters turn NaN
// and ±Infinity into 0 and drop fractions and out-of-range parts without a word (an Infinity k once became a
// division by zero); this refuses them.
inline int64_t integerIn(const Napi::Value& v, const std::string& what, int64_t min, int64_t max = kMaxSafeInteger) {
  const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!(x >= double(min) && x <= double(max) && x == std::floor(x))) {
    const std::string range = max != kMaxSafeInteger ? "an integer from " + std::to_string(min) + " to " + std::to_string(max)
                              : min == 0             ? "a non-negative integer"
                              : min == 1             ? "a positive integer"
                                                     : "an integer of at least " + std::to_string(min);
    throw invalidArgument(what + " must be " + range);
  }
  return static_cast<int64_t>(x);
}

// o[key] as integerIn reads it, or `fallback` when it is undefined.
inline int64_t integerOr(const Napi::Object& o, const char* key, int64_t min, int64_t max, int64_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsUndefined() ? fallback : integerIn(v, key, min, max);
}

inline double numberOr(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw invalidArgument(std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// One right-padded batch of token ids, copied out of JS memory (workers outlive the call).
struct TokenBatch {
  std::vector<int32_t> ids, mask, types;
  // The positions pooled, returned or scored when they are not the attended ones ("outputMask"): a prompt
  // left out of pooling, a multi-vector model's query expansion and skiplist. Empty: the attention mask.
  std::vector<int32_t> scored;
  int64_t batch = 0, seq = 0;

  // One of the three as an int64 [batch, seq] tensor on `device`.
  torch::Tensor tensor(const std::vector<int32_t>& values, const torch::Device& device) const {
    return torch::from_blob(const_cast<int32_t*>(values.data()), {batch, seq}, torch::kInt32).to(device, torch::kInt64);
  }
};

// Reads the batch held by `o`; `name` prefixes the keys in error messages ("" for none).
inline TokenBatch readTokenBatch(const Napi::Object& o, const std::string& name) {
  TokenBatch b;
  const std::string prefix = name.empty() ? "" : name + ".";
  b.batch = integerIn(o.Get("batchSize"), prefix + "batchSize", 0, INT32_MAX);
  b.seq = integerIn(o.Get("seqLen"), prefix + "seqLen", 0, INT32_MAX);
  const auto n = static_cast<size_t>(b.batch * b.seq);
  auto copy = [&](const char* key) {
    auto array = o.Get(key).As<Napi::Int32Array>();
    if (array.ElementLength() != n) {
      throw invalidArgument((name.empty() ? key : name + "." + key) + " has " + std::to_string(array.ElementLength()) +
                            " elements, expected " + std::to_string(n));
    }
    return std::vector<int32_t>(array.Data(), array.Data() + n);
  };
  b.ids = copy("inputIds");
  b.mask = copy("attentionMask");
  b.types = copy("tokenTypeIds");
  if (o.Has("outputMask") && !o.Get("outputMask").IsUndefined()) b.scored = copy("outputMask");
  return b;
}

// Refuses token ids outside [0, vocabulary): a tokenizer that does not match the weights (tokens added to it without
// resizing the model's embeddings) would otherwise fail deep in libtorch as "index out of range in self".
template <typename Int>
void checkTokenIds(const std::vector<Int>& ids, int64_t vocabulary, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || int64_t(ids[i]) >= vocabulary) {
      throw Error("MODEL_FILES", "token id " + std::to_string(ids[i]) + " (in " + what + ") is outside the model's vocabulary of " +
                                     std::to_string(vocabulary) + " tokens: the tokenizer does not match the model's weights (tokens " +
                                     "added to tokenizer.json without resizing the embeddings?)");
    }
  }
}

// checkTokenIds for a batch's input ids, and its token type ids against `types` when the model reads them (types > 0).
inline void checkTokenRange(const TokenBatch& b, int64_t vocabulary, int64_t types, const std::string& name) {
  const std::string prefix = name.empty() ? "" : name + ".";
  checkTokenIds(b.ids, vocabulary, prefix + "inputIds");
  if (types <= 0) return;
  for (int32_t t : b.types) {
    if (t < 0 || t >= types) {
      throw invalidArgument(prefix + "tokenTypeIds holds " + std::to_string(t) + ", but the model has " + std::to_string(types) + " token types");
    }
  }
}

// A copy of a Float32Array of rows `dim` wide (`what` names it in errors).
inline std::vector<float> floatsOf(const Napi::Value& v, int64_t dim, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw invalidArgument(std::string(what) + " must be a Float32Array");
  }
  auto a = v.As<Napi::Float32Array>();
  if (a.ElementLength() % size_t(dim) != 0) {
    throw invalidArgument(std::string(what) + " has " + std::to_string(a.ElementLength()) + " values, not a multiple of dim " + std::to_string(dim));
  }
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

// A copy of an Int32Array's values as T (`what` names it in errors).
template <typename T = int32_t>
std::vector<T> int32ArrayOf(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) throw invalidArgument(what + " must be an Int32Array");
  auto a = v.As<Napi::Int32Array>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

// A store's rows(start, count) arguments, checked against its `rows` (INVALID_ARGUMENT errors otherwise).
inline std::pair<int64_t, int64_t> rowRange(const Napi::Value& start, const Napi::Value& count, int64_t rows) {
  const int64_t from = integerIn(start, "start", 0), n = integerIn(count, "count", 0);
  if (from + n > rows) throw invalidArgument("rows out of range");
  return {from, n};
}

// A copy of a contiguous float32 CPU tensor as a Float32Array.
inline Napi::Float32Array float32Array(Napi::Env env, const torch::Tensor& t) {
  auto array = Napi::Float32Array::New(env, size_t(t.numel()));
  if (t.numel() > 0) std::memcpy(array.Data(), t.data_ptr<float>(), t.numel() * sizeof(float));
  return array;
}

// A worker's float32 result handed to JS without a copy on the JS thread: a Float32Array over the tensor's own memory,
// which the array keeps alive (an external ArrayBuffer, whose finalizer drops the tensor). A copy there of 300 MB of
// gradients was part of the second an op's call held the event loop. Only for a tensor nothing else holds or changes (a fresh result):
// the array shares its memory. Where external buffers are not allowed (runtimes with V8's sandbox, e.g. Electron)
// it is a copy after all.
inline Napi::Float32Array float32ArrayTaking(Napi::Env env, torch::Tensor t) {
  const size_t n = size_t(t.numel());
  if (n == 0 || !t.device().is_cpu() || t.scalar_type() != torch::kFloat32 || !t.is_contiguous()) {
    return float32Array(env, t.to(torch::kCPU, torch::kFloat32).contiguous());
  }
  auto* owner = new torch::Tensor(std::move(t));
  napi_value buffer = nullptr;
  const napi_status status = napi_create_external_arraybuffer(
      env, owner->data_ptr<float>(), n * sizeof(float), [](napi_env, void*, void* hint) { delete static_cast<torch::Tensor*>(hint); },
      owner, &buffer);
  if (status != napi_ok) {
    Napi::Float32Array copy = float32Array(env, *owner);
    delete owner;
    return copy;
  }
  return Napi::Float32Array::New(env, n, Napi::ArrayBuffer(env, buffer), 0);
}

// A typed array JS passed to asynchronous work, held rather than copied on the JS thread: the reference keeps it
// (and its memory, which V8 never moves once Node-API has given out its address) alive until the worker is deleted,
// back on the JS thread; the worker reads `data` (copying it there when the work must not see later writes).
struct HeldArray {
  Napi::Reference<Napi::TypedArray> reference;
  const void* data = nullptr;
  size_t elements = 0;

  HeldArray() = default;
  // The address from napi_get_typedarray_info (the view's first element), which a SharedArrayBuffer's views have too;
  // array.ArrayBuffer().Data() refuses a SharedArrayBuffer ("Invalid argument").
  explicit HeldArray(const Napi::TypedArray& array) : reference(Napi::Persistent(array)), elements(array.ElementLength()) {
    void* first = nullptr;
    if (napi_get_typedarray_info(array.Env(), array, nullptr, nullptr, &first, nullptr, nullptr) != napi_ok) {
      throw invalidArgument("a typed array whose memory cannot be read (a detached buffer?)");
    }
    data = first;
  }
};

// A store's remove(keep) flags: a Uint8Array with one flag per row, copied for the worker that removes them.
inline std::vector<uint8_t> keepFlagsCopy(const Napi::Value& v, int64_t rows) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || int64_t(v.As<Napi::Uint8Array>().ElementLength()) != rows) {
    throw invalidArgument("keep must be a Uint8Array with one flag per row");
  }
  const uint8_t* flags = v.As<Napi::Uint8Array>().Data();
  return std::vector<uint8_t>(flags, flags + rows);
}

// A search's filter: undefined (every row may be found) or a Uint8Array of `rows` flags, 1 where a row may be
// found; a copy of the flags (`unit` names what a flag stands for in the error: "row", "document"). The copy is
// all the JS thread does: the worker turns it into row numbers (allowedRows).
inline std::optional<std::vector<uint8_t>> allowFlags(const Napi::Value& v, int64_t rows, const char* unit) {
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || int64_t(v.As<Napi::Uint8Array>().ElementLength()) != rows) {
    throw invalidArgument(std::string("allow must be a Uint8Array with one flag per ") + unit + " (" + std::to_string(rows) + ")");
  }
  const uint8_t* flags = v.As<Napi::Uint8Array>().Data();
  return std::vector<uint8_t>(flags, flags + rows);
}

// The numbers of the rows a filter's flags allow, in order (the vector sized once: growing it faulted in fresh
// pages again and again, 50 ms for a million rows on the development VM).
inline std::vector<int64_t> allowedRows(const std::vector<uint8_t>& flags) {
  int64_t count = 0;
  for (uint8_t f : flags) count += f ? 1 : 0;
  std::vector<int64_t> out(static_cast<size_t>(count));
  size_t n = 0;
  for (size_t r = 0; r < flags.size(); ++r) {
    if (flags[r]) out[n++] = int64_t(r);
  }
  return out;
}

// A store search's result, row-major [queries, k]: { scores: Float32Array, indices: Int32Array, k }.
inline Napi::Object rankedRows(Napi::Env env, const float* scores, const int32_t* indices, size_t n, int64_t k) {
  auto out = Napi::Object::New(env);
  auto s = Napi::Float32Array::New(env, n);
  auto i = Napi::Int32Array::New(env, n);
  if (n > 0) {
    std::memcpy(s.Data(), scores, n * sizeof(float));
    std::memcpy(i.Data(), indices, n * sizeof(int32_t));
  }
  out.Set("scores", s);
  out.Set("indices", i);
  out.Set("k", double(k));
  return out;
}

}  // namespace coltrast
