// Module entry: registers the native classes and functions that lib/native.ts loads.
#include <napi.h>

#include "cpu_allocator.h"
#include "encoder_wrap.h"
#include "fork_guard.h"
#include "models/layers.h"
#include "ops/ops_wrap.h"
#include "search/dense_store.h"
#include "search/residual_store.h"
#include "train/trainer_wrap.h"
#include "runtime.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  coltrast::installForkGuard();
  coltrast::installCpuCachingAllocator();
  coltrast::cudnnAttention();  // applies COLTRAST_CUDNN_ATTENTION before any attention runs
  exports.Set("NativeEncoder", coltrast::EncoderWrap::define(env));
  auto types = Napi::Array::New(env);
  for (const auto& name : coltrast::supportedModelTypes()) types.Set(types.Length(), name);
  exports.Set("supportedModelTypes", types);
  coltrast::defineRuntime(env, exports);
  coltrast::defineCpuMemory(env, exports);
  exports.Set("ops", coltrast::ops::defineOps(env));
  exports.Set("NativeTrainer", coltrast::TrainerWrap::define(env));
  exports.Set("NativeDenseStore", coltrast::DenseStoreWrap::define(env));
  exports.Set("NativeResidualStore", coltrast::ResidualStoreWrap::define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(coltrast, init)
