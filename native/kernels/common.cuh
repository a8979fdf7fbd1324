// Device helpers shared by coltrast's kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace coltrast::kernels {

constexpr int64_t kMaxGridX = 2147483647;

__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// (value, index) max over a warp; index -1 means "no value"; ties go to the smaller index, as on the CPU.
__device__ __forceinline__ void warpArgMax(float& value, int32_t& index) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_down_sync(0xffffffffu, value, offset);
    const int32_t i = __shfl_down_sync(0xffffffffu, index, offset);
    const bool take = i >= 0 && (index < 0 || v > value || (v == value && i < index));
    if (take) {
      value = v;
      index = i;
    }
  }
}

__device__ __forceinline__ float warpSum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

__device__ __forceinline__ double warpSum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

}  // namespace coltrast::kernels
