// Process-wide libtorch settings and facts: thread count, devices, versions.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <mutex>
#include <string>

namespace coltrast {

// Applies the configured intra-op thread count on the calling thread. libtorch's OpenMP backend keeps
// the count per thread, so every thread that computes calls this first.
void applyThreadSetting();
// "cpu", "cuda", "cuda:N" -> a device, or a DEVICE error saying what is missing.
torch::Device parseDevice(const std::string& name);
torch::ScalarType parseDtype(const std::string& name);

// libtorch's default CPU generator is one per process. A training step swaps its run's state into it for
// dropout (train/trainer_wrap.cc), and building a torch::nn module draws the module's initial weights from
// it (coltrast overwrites them). Everyone who uses the generator holds this lock, so that a model loading
// on one thread never moves the random stream of a step running on another.
std::mutex& cpuGeneratorMutex();

// A generator's state, read or set under the generator's own lock (which its draws take too).
at::Tensor generatorState(at::Generator& generator);
void setGeneratorState(at::Generator& generator, const at::Tensor& state);

// For code that draws numbers nobody keeps (module construction): holds the lock and puts the generator
// back as it found it.
class PreservedCpuGenerator {
 public:
  PreservedCpuGenerator();
  ~PreservedCpuGenerator();
  PreservedCpuGenerator(const PreservedCpuGenerator&) = delete;
  PreservedCpuGenerator& operator=(const PreservedCpuGenerator&) = delete;

 private:
  std::lock_guard<std::mutex> lock_;
  at::Tensor state_;
};

void defineRuntime(Napi::Env env, Napi::Object exports);

}  // namespace coltrast
