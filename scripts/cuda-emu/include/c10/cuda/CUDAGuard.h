// Emulator stand-in for c10's CUDAGuard: the emulated "device" is the CPU, so there is nothing to switch.
#pragma once
#include <c10/core/Device.h>

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda
