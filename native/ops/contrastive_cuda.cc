// In-batch contrastive loss on CUDA: backend.h's contrastive*Cuda over the fused kernels of
// kernels/contrastive.cu (compiled only with COLTRAST_WITH_CUDA). This file only allocates outputs and
// scratch on the inputs' device, picks the current stream and turns a CUDA error into coltrast::Error.
// The temperature and the upstream gradient stay on the device (the kernels read them there), so nothing
// here waits for the GPU. Memory beyond the inputs and gradients: O(B) floats.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <sstream>
#include <string>

#include "error.h"
#include "kernels/kernels.h"
#include "ops/backend.h"
#include "ops/cuda_common.h"

namespace coltrast::ops {
namespace {

// A float32 scalar on `like`'s device.
at::Tensor deviceScalar(const at::Tensor& t, const at::Tensor& like) {
  return t.reshape({}).to(like.device(), at::kFloat).contiguous();
}

void check(cudaError_t status, const char* what, const kernels::ContrastiveArgs& a) {
  if (status == cudaSuccess) return;
  std::ostringstream message;
  message << "CUDA contrastive loss " << what << " failed: " << cudaGetErrorString(status) << " (B=" << a.B
          << ", N=" << a.N << ", dim=" << a.dim << (a.symmetric ? ", symmetric" : "") << ")";
  throw Error("NATIVE", message.str());
}

kernels::ContrastiveArgs argsOf(const at::Tensor& q, const at::Tensor& c, const at::Tensor& tau,
                                const ContrastiveOptions& options) {
  kernels::ContrastiveArgs a;
  a.dtype = kernelType(q, "contrastive loss");
  a.q = q.data_ptr();
  a.qStride = q.stride(0);
  a.c = c.data_ptr();
  a.cStride = c.stride(0);
  a.B = q.size(0);
  a.N = c.size(0);
  a.dim = q.size(1);
  a.temperature = tau.data_ptr<float>();
  a.symmetric = options.symmetric;
  return a;
}

}  // namespace

ContrastiveResult contrastiveForwardCuda(const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
                                         const ContrastiveOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), c = innerContiguous(cIn), tau = deviceScalar(temperature, qIn);
  const kernels::ContrastiveArgs a = argsOf(q, c, tau, options);
  const auto floats = q.options().dtype(at::kFloat);
  ContrastiveResult r;
  r.loss = at::empty({}, floats);
  r.rowLse = at::empty({a.B}, floats);
  if (options.symmetric) r.colLse = at::empty({a.B}, floats);
  const size_t bytes = kernels::contrastiveForwardWorkspaceBytes(a);
  at::Tensor workspace = at::empty({int64_t(bytes)}, q.options().dtype(at::kByte));
  check(kernels::contrastiveForward(a, r.loss.data_ptr<float>(), r.rowLse.data_ptr<float>(),
                                    options.symmetric ? r.colLse.data_ptr<float>() : nullptr, workspace.data_ptr(),
                                    bytes, c10::cuda::getCurrentCUDAStream().stream()),
        "forward", a);
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastiveBackwardCuda(
    const at::Tensor& gradLoss, const at::Tensor& qIn, const at::Tensor& cIn, const at::Tensor& temperature,
    const ContrastiveResult& saved, const ContrastiveOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), c = innerContiguous(cIn), tau = deviceScalar(temperature, qIn);
  const at::Tensor g = deviceScalar(gradLoss, qIn);
  const at::Tensor rowLse = saved.rowLse.to(q.device(), at::kFloat).contiguous();
  const at::Tensor colLse =
      options.symmetric ? saved.colLse.to(q.device(), at::kFloat).contiguous() : at::Tensor();
  const kernels::ContrastiveArgs a = argsOf(q, c, tau, options);
  at::Tensor dq = at::empty({a.B, a.dim}, q.options()), dc = at::empty({a.N, a.dim}, c.options());
  at::Tensor dTemperature = at::empty({}, q.options().dtype(at::kFloat));
  kernels::ContrastiveGrads grads;
  grads.gradLoss = g.data_ptr<float>();
  grads.rowLse = rowLse.data_ptr<float>();
  grads.colLse = options.symmetric ? colLse.data_ptr<float>() : nullptr;
  grads.dq = dq.data_ptr();
  grads.dqStride = dq.stride(0);
  grads.dc = dc.data_ptr();
  grads.dcStride = dc.stride(0);
  grads.dTemperature = dTemperature.data_ptr<float>();
  const size_t bytes = kernels::contrastiveBackwardWorkspaceBytes(a);
  at::Tensor workspace = at::empty({int64_t(bytes)}, q.options().dtype(at::kByte));
  check(kernels::contrastiveBackward(a, grads, workspace.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream()),
        "backward", a);
  return {dq, dc, dTemperature};
}

}  // namespace coltrast::ops
