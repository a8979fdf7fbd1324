// The JS class `NativeDenseStore`: the vectors of an Index in native memory, searched exactly.
//
// Rows live in one [capacity, dim] tensor that doubles when full (float32, or float16 to halve memory).
// A search multiplies the queries by blocks of kBlockRows rows (BLAS; float16 blocks are widened to
// float32 first), keeps each block's top k and merges those, so memory beyond the store is one block of
// scores whatever the number of rows. Work runs on the CPU thread (compute_thread.h); a mutex orders calls on
// one store.
#include "search/dense_store.h"

#include <cstring>
#include <mutex>

#include "error.h"
#include "promise_worker.h"
#include "safetensors.h"

namespace coltrast {

// The vectors and their lock (outside the anonymous namespace below: DenseStoreWrap::Impl holds one).
struct DenseVectors {
  torch::Tensor data;  // [capacity, dim]
  int64_t rows = 0;
  int64_t dim = 0;
  std::mutex mutex;
};

namespace {
using Store = DenseVectors;

// 8192 rows x 384 dims is 12 MiB of float32: small enough that widening a float16 block stays in cache
// (65536-row blocks made float16 search 6x slower at one million rows), large enough for BLAS.
constexpr int64_t kBlockRows = 8192;

void append(Store& s, const float* values, int64_t n) {
  if (n == 0) return;
  if (s.rows + n > s.data.size(0)) {
    const int64_t capacity = std::max<int64_t>({2 * s.data.size(0), s.rows + n, 1024});
    torch::Tensor grown = torch::empty({capacity, s.dim}, s.data.options());
    grown.narrow(0, 0, s.rows).copy_(s.data.narrow(0, 0, s.rows));
    s.data = grown;
  }
  s.data.narrow(0, s.rows, n).copy_(torch::from_blob(const_cast<float*>(values), {n, s.dim}, torch::kFloat32));
  s.rows += n;
}

class SearchWorker : public PromiseWorker {
 public:
  SearchWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<float> queries, int64_t k)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), queries_(std::move(queries)), k_(k) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    const int64_t dim = store_->dim, nq = int64_t(queries_.size()) / dim;
    const torch::Tensor q = torch::from_blob(queries_.data(), {nq, dim}, torch::kFloat32);
    const int64_t k = std::min(k_, store_->rows);
    torch::NoGradGuard noGrad;
    std::vector<torch::Tensor> scores, indices;
    for (int64_t r0 = 0; r0 < store_->rows; r0 += kBlockRows) {
      const int64_t n = std::min(kBlockRows, store_->rows - r0);
      const torch::Tensor block = store_->data.narrow(0, r0, n).to(torch::kFloat32);
      auto top = torch::mm(q, block.t()).topk(std::min(k, n), 1);
      scores.push_back(std::get<0>(top));
      indices.push_back(std::get<1>(top) + r0);
    }
    if (k == 0 || scores.empty()) {
      scores_ = torch::empty({nq, 0});
      indices_ = torch::empty({nq, 0}, torch::kInt64);
      return;
    }
    const torch::Tensor all = torch::cat(scores, 1), allIdx = torch::cat(indices, 1);
    auto best = all.topk(k, 1);
    scores_ = std::get<0>(best).contiguous();
    indices_ = allIdx.gather(1, std::get<1>(best)).to(torch::kInt32).contiguous();
  }
  Napi::Value result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    auto s = Napi::Float32Array::New(env, size_t(scores_.numel()));
    auto i = Napi::Int32Array::New(env, size_t(indices_.numel()));
    if (scores_.numel() > 0) {
      std::memcpy(s.Data(), scores_.data_ptr<float>(), scores_.numel() * sizeof(float));
      std::memcpy(i.Data(), indices_.data_ptr<int32_t>(), indices_.numel() * sizeof(int32_t));
    }
    out.Set("scores", s);
    out.Set("indices", i);
    out.Set("k", double(scores_.size(1)));
    return out;
  }

 private:
  std::shared_ptr<Store> store_;
  std::vector<float> queries_;
  int64_t k_;
  torch::Tensor scores_, indices_;
};

class FileWorker : public PromiseWorker {
 public:
  FileWorker(Napi::Env env, std::shared_ptr<Store> store, std::string path, bool save)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), path_(std::move(path)), save_(save) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    if (save_) {
      writeSafetensors(path_, {{"vectors", store_->data.narrow(0, 0, store_->rows)}}, {{"format", "coltrast-index"}});
      return;
    }
    SafetensorsFile file(path_);
    if (!file.has("vectors")) throw modelFilesError(path_ + " holds no \"vectors\" tensor");
    const auto& entry = file.entries().at("vectors");
    if (entry.shape.size() != 2 || entry.shape[1] != store_->dim) {
      throw modelFilesError(path_ + ": vectors must be [rows, " + std::to_string(store_->dim) + "]");
    }
    store_->data = file.read("vectors", store_->data.scalar_type());
    store_->rows = store_->data.size(0);
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->rows)); }

 private:
  std::shared_ptr<Store> store_;
  std::string path_;
  bool save_;
};

std::vector<float> floatsOf(const Napi::Value& v, int64_t dim, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw invalidArgument(std::string(what) + " must be a Float32Array");
  }
  auto a = v.As<Napi::Float32Array>();
  if (a.ElementLength() % size_t(dim) != 0) {
    throw invalidArgument(std::string(what) + " has " + std::to_string(a.ElementLength()) + " values, not a multiple of dim " +
                          std::to_string(dim));
  }
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

}  // namespace

struct DenseStoreWrap::Impl {
  std::shared_ptr<Store> store = std::make_shared<Store>();
};

Napi::Function DenseStoreWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeDenseStore",
                     {
                         InstanceMethod<&DenseStoreWrap::add>("add"),
                         InstanceMethod<&DenseStoreWrap::remove>("remove"),
                         InstanceMethod<&DenseStoreWrap::size>("size"),
                         InstanceMethod<&DenseStoreWrap::rows>("rows"),
                         InstanceMethod<&DenseStoreWrap::search>("search"),
                         InstanceMethod<&DenseStoreWrap::save>("save"),
                         InstanceMethod<&DenseStoreWrap::load>("load"),
                     });
}

// new NativeDenseStore(dim, 'float32' | 'float16')
DenseStoreWrap::DenseStoreWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DenseStoreWrap>(info), impl_(std::make_unique<Impl>()) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || info[0].As<Napi::Number>().Int64Value() < 1) throw jsError(env, {"INVALID_ARGUMENT", "dim must be a positive integer"});
  const std::string dtype = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "float32";
  if (dtype != "float32" && dtype != "float16") throw jsError(env, {"INVALID_ARGUMENT", "storage must be 'float32' or 'float16'"});
  impl_->store->dim = info[0].As<Napi::Number>().Int64Value();
  impl_->store->data = torch::empty({0, impl_->store->dim}, dtype == "float16" ? torch::kFloat16 : torch::kFloat32);
}

DenseStoreWrap::~DenseStoreWrap() = default;

// add(rows: Float32Array): appends rows (synchronous: a copy).
Napi::Value DenseStoreWrap::add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto& s = *impl_->store;
    const auto values = floatsOf(info[0], s.dim, "rows");
    std::lock_guard<std::mutex> lock(s.mutex);
    append(s, values.data(), int64_t(values.size()) / s.dim);
    return Napi::Number::New(env, double(s.rows));
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// remove(keep: Uint8Array of size()): keeps the rows whose flag is nonzero, in order.
Napi::Value DenseStoreWrap::remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& s = *impl_->store;
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      int64_t(info[0].As<Napi::Uint8Array>().ElementLength()) != s.rows) {
    throw jsError(env, {"INVALID_ARGUMENT", "keep must be a Uint8Array with one flag per row"});
  }
  auto keep = info[0].As<Napi::Uint8Array>();
  std::lock_guard<std::mutex> lock(s.mutex);
  torch::Tensor flags = torch::from_blob(keep.Data(), {s.rows}, torch::kUInt8).to(torch::kBool);
  torch::Tensor kept = s.data.narrow(0, 0, s.rows).index({flags}).clone();
  s.rows = kept.size(0);
  s.data = kept;
  return Napi::Number::New(env, double(s.rows));
}

// rows(start, count) -> Float32Array [count, dim]: a copy of those rows (widened to float32).
Napi::Value DenseStoreWrap::rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& s = *impl_->store;
  const int64_t start = info[0].As<Napi::Number>().Int64Value(), count = info[1].As<Napi::Number>().Int64Value();
  if (start < 0 || count < 0 || start + count > s.rows) throw jsError(env, {"INVALID_ARGUMENT", "rows out of range"});
  std::lock_guard<std::mutex> lock(s.mutex);
  const torch::Tensor out = s.data.narrow(0, start, count).to(torch::kFloat32).contiguous();
  auto array = Napi::Float32Array::New(env, size_t(out.numel()));
  if (out.numel() > 0) std::memcpy(array.Data(), out.data_ptr<float>(), out.numel() * sizeof(float));
  return array;
}

Napi::Value DenseStoreWrap::size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(impl_->store->rows)); }

// search(queries: Float32Array, k) -> Promise<{ scores: Float32Array, indices: Int32Array, k }>, row-major [nq, k].
Napi::Value DenseStoreWrap::search(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto values = floatsOf(info[0], impl_->store->dim, "queries");
    const int64_t k = info[1].As<Napi::Number>().Int64Value();
    if (k < 1) throw invalidArgument("k must be a positive integer");
    return (new SearchWorker(env, impl_->store, std::move(values), k))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value DenseStoreWrap::save(const Napi::CallbackInfo& info) {
  return (new FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), true))->start();
}
Napi::Value DenseStoreWrap::load(const Napi::CallbackInfo& info) {
  return (new FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), false))->start();
}

}  // namespace coltrast
