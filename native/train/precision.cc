#include "train/precision.h"

#include <ATen/autocast_mode.h>
#include "error.h"
#include "torch_version.h"

// PyTorch 2.4 replaced the per-device autocast functions (set_enabled, set_cpu_enabled,
// set_autocast_gpu_dtype, ...) with ones that take the device type; the old ones are deprecated there.
#if COLTRAST_TORCH_AT_LEAST(2, 4)
#define COLTRAST_AUTOCAST_BY_DEVICE_TYPE 1
#endif

namespace coltrast {
namespace {

bool autocastEnabled(c10::DeviceType type) {
#ifdef COLTRAST_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

void setAutocastEnabled(c10::DeviceType type, bool enabled) {
#ifdef COLTRAST_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

torch::ScalarType autocastDtype(c10::DeviceType type) {
#ifdef COLTRAST_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

void setAutocastDtype(c10::DeviceType type, torch::ScalarType dtype) {
#ifdef COLTRAST_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

torch::ScalarType activeAutocast(const torch::Device& device) {
  return autocastEnabled(device.type()) ? autocastDtype(device.type()) : torch::kFloat32;
}

void checkAutocast(const torch::Device& device, torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return;
  if (dtype != torch::kBFloat16 && dtype != torch::kFloat16) throw invalidArgument("mixed precision is float16 or bfloat16");
  if (!device.is_cpu() && !device.is_cuda()) throw invalidArgument("mixed precision runs on the CPU or CUDA");
  // float16 autocast on the CPU arrived in PyTorch 2.x and is slow there; we offer it on CUDA only.
  if (device.is_cpu() && dtype == torch::kFloat16)
    throw invalidArgument("float16 mixed precision needs a CUDA device; on the CPU use 'bfloat16' or 'float32'");
}

AutocastScope::AutocastScope(const torch::Device& device, torch::ScalarType dtype)
    : type_(device.type()), active_(dtype != torch::kFloat32) {
  if (!active_) return;
  wasEnabled_ = autocastEnabled(type_);
  wasDtype_ = autocastDtype(type_);
  setAutocastEnabled(type_, true);
  setAutocastDtype(type_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  setAutocastEnabled(type_, wasEnabled_);
  setAutocastDtype(type_, wasDtype_);
}

void GradScaler::unscale(const std::vector<torch::Tensor>& params) const {
  if (!enabled) return;
  torch::NoGradGuard noGrad;
  for (const auto& p : params) {
    if (p.grad().defined()) p.grad().mul_(1.0 / scale);
  }
}

void GradScaler::update(bool finite) {
  if (!enabled) return;
  if (!finite) {
    scale *= backoffFactor;
    growthTracker = 0;
  } else if (++growthTracker >= growthInterval) {
    scale *= growthFactor;
    growthTracker = 0;
  }
}

}  // namespace coltrast
