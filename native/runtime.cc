#include "runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>

#ifdef COLTRAST_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#ifdef __linux__
#include <sched.h>
#endif

#include <atomic>
#include <cstdlib>
#include <thread>

#include "compute_thread.h"
#include "error.h"
#include "models/layers.h"
#include "napi_args.h"
#include "promise_worker.h"

namespace coltrast {
namespace {

std::atomic<int> configuredThreads{0};  // 0: not set, use defaultThreads()

// The thread count when none is set: OMP_NUM_THREADS when it holds a positive integer (PyTorch reads it for
// its own default, so one variable sets both, and a test runner or job scheduler that gives each process a
// share of the cores sets coltrast's too; of a nested list such as "4,2", the first level's, as OpenMP takes it),
// else every core this process may run on (its CPU affinity, as Node's os.availableParallelism() counts them).
// Read once.
int defaultThreads() {
  static const int n = [] {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      if (end != env && (*end == '\0' || *end == ',') && v > 0 && v <= 1 << 16) return static_cast<int>(v);
    }
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  int n = 0;
  try {
    n = int(integerIn(info[0], "threads", 0, 1 << 16));  // 0: the default
  } catch (const Error& e) {
    throw jsError(info.Env(), {e.code(), e.what()});
  }
  configuredThreads = n;
  applyThreadSetting();
  return info.Env().Undefined();
}

// The BLAS libtorch was built for ("BLAS_INFO=mkl" in its build configuration), "" when it does not say: a
// pip wheel links MKL into libtorch itself, where no BLAS library shows among the mapped ones; "generic"
// (Debian's) calls whatever libblas.so.3 the system selects. Read once: show_config() formats the whole
// build configuration, and runtimeInfo() runs on every Encoder.load with device 'auto'.
std::string blasBuild() {
  const std::string key = "BLAS_INFO=";
  const std::string config = at::show_config();
  const auto pos = config.find(key);
  if (pos == std::string::npos) return "";
  const auto start = pos + key.size();
  return config.substr(start, config.find_first_of(", \n", start) - start);
}

Napi::Value runtimeInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  applyThreadSetting();
  auto out = Napi::Object::New(env);
  out.Set("torchVersion", TORCH_VERSION);
  out.Set("cudaAvailable", torch::cuda::is_available());
  out.Set("cudaDeviceCount", static_cast<double>(torch::cuda::device_count()));
  out.Set("numThreads", at::get_num_threads());
  out.Set("parallelInfo", at::get_parallel_info());
  out.Set("attention", fusedAttention() ? "scaled_dot_product_attention" : "eager");
  out.Set("cudnnAttention", cudnnAttention());
  out.Set("cpuWorkThread", cpuWorkOnOwnThread() ? "own" : "pool");
  static const std::string blas = blasBuild();
  if (!blas.empty()) out.Set("blasBuild", blas);
#ifdef _GLIBCXX_USE_CXX11_ABI
  out.Set("cxx11Abi", _GLIBCXX_USE_CXX11_ABI == 1);
#endif
#ifdef COLTRAST_TORCH_SOURCE
  out.Set("torchSource", COLTRAST_TORCH_SOURCE);
#endif
#ifdef COLTRAST_WITH_CUDA
  // The GPU architectures the kernels were compiled for, and each visible GPU's compute capability, so that
  // a GPU too old for the kernels is refused with a reason before any kernel launch fails.
  out.Set("cudaArchs", COLTRAST_CUDA_ARCHS);
  auto capabilities = Napi::Array::New(env);
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  for (int i = 0; i < count; ++i) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
    capabilities.Set(static_cast<uint32_t>(i), Napi::Number::New(env, major * 10 + minor));
  }
  out.Set("cudaCapabilities", capabilities);
  int runtimeVersion = 0, driverVersion = 0;  // 13000 = 13.0; the driver's is the newest CUDA it supports
  if (cudaRuntimeGetVersion(&runtimeVersion) == cudaSuccess) out.Set("cudaRuntimeVersion", runtimeVersion);
  if (cudaDriverGetVersion(&driverVersion) == cudaSuccess) out.Set("cudaDriverVersion", driverVersion);
#endif
  return out;
}

// cudaMemory(deviceIndex, { resetPeak, emptyCache }): the CUDA caching allocator's byte counts on one GPU
// (what torch.cuda.max_memory_allocated and friends read), then optionally its peaks reset and its unused
// cached blocks released. A DEVICE error without a CUDA build or GPU.
Napi::Value cudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const int index = int(integerIn(info[0], "device index", 0, 1 << 16));
    const auto options = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    const torch::Device device = parseDevice("cuda:" + std::to_string(index));
#ifdef COLTRAST_WITH_CUDA
    namespace allocator = c10::cuda::CUDACachingAllocator;
    // libtorch 2.x sizes the allocator's per-GPU state when CUDA is first used (its lazy init) and refuses any
    // device before that ("Invalid device argument"); an empty tensor on the device runs that init, allocating nothing.
    (void)torch::empty({0}, torch::TensorOptions().device(device));
    const auto stats = allocator::getDeviceStats(device.index());
    // StatType::AGGREGATE, which is index 0 in every version; the enum itself moved between namespaces
    // (c10::CachingAllocator in PyTorch 2.x), so it is not named here.
    const size_t all = 0;
    auto out = Napi::Object::New(env);
    out.Set("allocatedBytes", static_cast<double>(stats.allocated_bytes[all].current));
    out.Set("peakAllocatedBytes", static_cast<double>(stats.allocated_bytes[all].peak));
    out.Set("reservedBytes", static_cast<double>(stats.reserved_bytes[all].current));
    out.Set("peakReservedBytes", static_cast<double>(stats.reserved_bytes[all].peak));
    if (options.Get("emptyCache").ToBoolean()) allocator::emptyCache();
    if (options.Get("resetPeak").ToBoolean()) allocator::resetPeakStats(device.index());
    return out;
#else
    (void)device;
    (void)options;
    throw Error("DEVICE", "this coltrast addon was built without CUDA");
#endif
  } catch (...) {
    throw jsError(env, describe(std::current_exception()));
  }
}

}  // namespace

std::mutex& cpuGeneratorMutex() {
  static std::mutex m;
  return m;
}

at::Tensor generatorState(at::Generator& generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void setGeneratorState(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

PreservedCpuGenerator::PreservedCpuGenerator() : lock_(cpuGeneratorMutex()) {
  auto generator = at::detail::getDefaultCPUGenerator();
  state_ = generatorState(generator);
}

PreservedCpuGenerator::~PreservedCpuGenerator() {
  auto generator = at::detail::getDefaultCPUGenerator();
  setGeneratorState(generator, state_);
}

void applyThreadSetting() {
  int wanted = configuredThreads.load();
  if (wanted <= 0) wanted = defaultThreads();
  if (at::get_num_threads() != wanted) at::set_num_threads(wanted);
}

torch::Device parseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      throw Error("DEVICE", "device '" + name +
                                "' requested but CUDA is not available: the libtorch in use has no CUDA support, or "
                                "no GPU/driver is visible. Use device 'cpu' or 'auto', or build against a CUDA "
                                "libtorch (see README: GPU)");
    torch::Device device(name);
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= count)
      throw Error("DEVICE", "device '" + name + "' requested but only " + std::to_string(count) + " GPU(s) are visible");
    if (!device.has_index()) device.set_index(0);
    return device;
  }
  throw invalidArgument("unknown device '" + name + "' (cpu, cuda, cuda:N, auto)");
}

torch::ScalarType parseDtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float16") return torch::kFloat16;
  if (name == "bfloat16") return torch::kBFloat16;
  throw invalidArgument("unknown dtype '" + name + "' (float32, float16, bfloat16)");
}

void defineRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("setNumThreads", Napi::Function::New(env, setNumThreads, "setNumThreads"));
  exports.Set("runtimeInfo", Napi::Function::New(env, runtimeInfo, "runtimeInfo"));
  exports.Set("cudaMemory", Napi::Function::New(env, cudaMemory, "cudaMemory"));
}

}  // namespace coltrast
