// The JS class `NativeResidualStore` (see residual_store.cc): token vectors compressed as ColBERTv2 does (a
// centroid and a quantized residual each), searched PLAID-style, for lib/search-index.ts.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <memory>

namespace coltrast {

class ResidualStoreWrap : public Napi::ObjectWrap<ResidualStoreWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit ResidualStoreWrap(const Napi::CallbackInfo& info);
  ~ResidualStoreWrap() override;

 private:
  Napi::Value train(const Napi::CallbackInfo& info);
  Napi::Value trained(const Napi::CallbackInfo& info);
  Napi::Value centroids(const Napi::CallbackInfo& info);
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
