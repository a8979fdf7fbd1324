// What the two CUDA wrappers (maxsim_cuda.cc, contrastive_cuda.cc) share: the tensor dtype as the
// kernels' DType, and inputs with a contiguous last dimension (all the kernels need).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "error.h"
#include "kernels/kernels.h"

namespace coltrast::ops {

inline kernels::DType kernelType(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return kernels::DType::F32;
    case at::kHalf:
      return kernels::DType::F16;
    case at::kBFloat16:
      return kernels::DType::BF16;
    default:
      throw invalidArgument(std::string("the CUDA ") + op + " takes float32, float16 or bfloat16 embeddings; got " +
                            c10::toString(t.scalar_type()));
  }
}

inline at::Tensor innerContiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

}  // namespace coltrast::ops
