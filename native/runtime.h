// Process-wide libtorch settings and facts: thread count, devices, versions.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <string>

namespace coltrast {

// Applies the configured intra-op thread count on the calling thread. libtorch's OpenMP backend keeps
// the count per thread, so every worker thread calls this before computing.
void applyThreadSetting();
// "cpu", "cuda", "cuda:N" -> a device, or a DEVICE error saying what is missing.
torch::Device parseDevice(const std::string& name);
torch::ScalarType parseDtype(const std::string& name);

void defineRuntime(Napi::Env env, Napi::Object exports);

}  // namespace coltrast
