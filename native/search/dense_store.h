// The JS class `NativeDenseStore` (see dense_store.cc): exact inner-product search over rows kept in
// native memory, for lib/index.ts.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <memory>

namespace coltrast {

class DenseStoreWrap : public Napi::ObjectWrap<DenseStoreWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit DenseStoreWrap(const Napi::CallbackInfo& info);
  ~DenseStoreWrap() override;

 private:
  Napi::Value add(const Napi::CallbackInfo& info);
  Napi::Value remove(const Napi::CallbackInfo& info);
  Napi::Value size(const Napi::CallbackInfo& info);
  Napi::Value rows(const Napi::CallbackInfo& info);
  Napi::Value search(const Napi::CallbackInfo& info);
  Napi::Value save(const Napi::CallbackInfo& info);
  Napi::Value load(const Napi::CallbackInfo& info);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coltrast
