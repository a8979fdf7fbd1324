// Emulator stand-in for c10's CUDA stream API, the one call native/ops/*_cuda.cc make. The emulated kernels
// run to completion on the calling thread, so there is one stream: the null stream.
#pragma once
#include <cuda_runtime.h>

namespace c10::cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(int = -1) { return {}; }
}  // namespace c10::cuda
