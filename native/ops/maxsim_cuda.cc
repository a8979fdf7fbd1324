// MaxSim on CUDA: backend.h's maxsim*Cuda over the fused kernels of kernels/maxsim.cu (compiled only with
// COLTRAST_WITH_CUDA). This file only allocates outputs and scratch on the inputs' device, picks the
// current stream and turns a CUDA error into coltrast::Error; the kernels take raw pointers and strides.
// Memory beyond the inputs: scores [B, N] and argmax [B, N, Lq] forward, B floats of scratch backward.
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

void check(cudaError_t status, const char* what, const kernels::MaxSimArgs& a) {
  if (status == cudaSuccess) return;
  std::ostringstream message;
  message << "CUDA MaxSim " << what << " failed: " << cudaGetErrorString(status) << " (B=" << a.B << ", N=" << a.N
          << ", Lq=" << a.Lq << ", Ld=" << a.Ld << ", dim=" << a.dim << (a.paired ? ", paired" : ", all") << ")";
  throw Error("NATIVE", message.str());
}

kernels::MaxSimArgs argsOf(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                           const MaxSimOptions& options) {
  kernels::MaxSimArgs a;
  a.dtype = kernelType(q, "MaxSim");
  a.q = q.data_ptr();
  a.qStrideB = q.stride(0);
  a.qStrideL = q.stride(1);
  a.qmask = qmask.data_ptr<uint8_t>();
  a.qmaskStrideB = qmask.stride(0);
  a.d = d.data_ptr();
  a.dStrideN = d.stride(0);
  a.dStrideL = d.stride(1);
  a.dmask = dmask.data_ptr<uint8_t>();
  a.dmaskStrideN = dmask.stride(0);
  a.B = q.size(0);
  a.Lq = q.size(1);
  a.dim = q.size(2);
  a.N = d.size(0);
  a.Ld = d.size(1);
  a.paired = options.paired;
  a.normalize = options.normalizeByQueryLength;
  return a;
}

}  // namespace

MaxSimResult maxsimForwardCuda(const at::Tensor& qIn, const at::Tensor& qmaskIn, const at::Tensor& dIn,
                               const at::Tensor& dmaskIn, const MaxSimOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), d = innerContiguous(dIn);
  const at::Tensor qmask = innerContiguous(qmaskIn.to(at::kByte)), dmask = innerContiguous(dmaskIn.to(at::kByte));
  const kernels::MaxSimArgs a = argsOf(q, qmask, d, dmask, options);
  MaxSimResult r;
  const auto floats = q.options().dtype(at::kFloat), ints = q.options().dtype(at::kInt);
  r.scores = options.paired ? at::empty({a.B}, floats) : at::empty({a.B, a.N}, floats);
  r.argmax = options.paired ? at::empty({a.B, a.Lq}, ints) : at::empty({a.B, a.N, a.Lq}, ints);
  check(kernels::maxsimForward(a, r.scores.data_ptr<float>(), r.argmax.data_ptr<int32_t>(),
                               c10::cuda::getCurrentCUDAStream().stream()),
        "forward", a);
  return r;
}

std::tuple<at::Tensor, at::Tensor> maxsimBackwardCuda(const at::Tensor& gradScores, const at::Tensor& qIn,
                                                      const at::Tensor& qmaskIn, const at::Tensor& dIn,
                                                      const at::Tensor& argmaxIn, const MaxSimOptions& options) {
  const c10::cuda::CUDAGuard guard(qIn.device());
  const at::Tensor q = innerContiguous(qIn), d = innerContiguous(dIn);
  const at::Tensor qmask = innerContiguous(qmaskIn.to(at::kByte));
  const at::Tensor grad = gradScores.to(q.device(), at::kFloat).contiguous();
  const at::Tensor argmax = argmaxIn.to(q.device(), at::kInt).contiguous();
  // The backward reads no document mask: the stored argmax already encodes it.
  const kernels::MaxSimArgs a = argsOf(q, qmask, d, qmask /* unused */, options);
  at::Tensor dq = at::empty({a.B, a.Lq, a.dim}, q.options()), dd = at::empty({a.N, a.Ld, a.dim}, d.options());
  kernels::MaxSimGrads g;
  g.grad = grad.data_ptr<float>();
  g.argmax = argmax.data_ptr<int32_t>();
  g.dq = dq.data_ptr();
  g.dqStrideB = dq.stride(0);
  g.dqStrideL = dq.stride(1);
  g.dd = dd.data_ptr();
  g.ddStrideN = dd.stride(0);
  g.ddStrideL = dd.stride(1);
  const size_t bytes = kernels::maxsimBackwardWorkspaceBytes(a);
  at::Tensor workspace = at::empty({int64_t(bytes)}, q.options().dtype(at::kByte));
  check(kernels::maxsimBackward(a, g, workspace.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream()),
        "backward", a);
  return {dq, dd};
}

}  // namespace coltrast::ops
