// MaxSim on CUDA (backend.h's *Cuda functions; built only with COLTRAST_WITH_CUDA). Each block of token
// similarities is one cuBLAS product with float32 output (tensor cores for float16/bfloat16 inputs),
// consumed at once by kernels::maxsimBlockReduce; the block is capped at kBlockElements floats, so memory
// beyond the inputs stays a few tens of MiB whatever B and N are. The backward is the argmax
// gather/scatter of kernels/maxsim.cu.
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

#include "kernels/kernels.h"
#include "ops/backend.h"
#include "ops/cuda_gemm.h"

namespace coltrast::ops {
namespace {

// 8 Mi floats (32 MiB) per similarity block.
constexpr int64_t kBlockElements = int64_t(1) << 23;

kernels::DType kernelType(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return kernels::DType::F32;
    case at::kHalf:
      return kernels::DType::F16;
    case at::kBFloat16:
      return kernels::DType::BF16;
    default:
      throw invalidArgument(std::string("no CUDA kernel for dtype ") + c10::toString(t));
  }
}

// 1 per query, or 1 / its valid token count when normalized (float32 [B] on the masks' device).
at::Tensor queryWeights(const at::Tensor& qmask, const MaxSimOptions& options, cudaStream_t stream) {
  at::Tensor weight = at::empty({qmask.size(0)}, qmask.options().dtype(at::kFloat));
  cuda::check(kernels::maxsimQueryWeights(qmask.data_ptr<uint8_t>(), qmask.size(0), qmask.size(1),
                                          options.normalizeByQueryLength, weight.data_ptr<float>(), stream),
              "maxsim query weights");
  return weight;
}

}  // namespace

MaxSimResult maxsimForwardCuda(const at::Tensor& qIn, const at::Tensor& qmaskIn, const at::Tensor& dIn,
                               const at::Tensor& dmaskIn, const MaxSimOptions& options) {
  const at::Tensor q = qIn.contiguous(), d = dIn.contiguous(), qmask = qmaskIn.contiguous(), dmask = dmaskIn.contiguous();
  const int64_t B = q.size(0), Lq = q.size(1), dim = q.size(2), N = d.size(0), Ld = d.size(1);
  const auto type = q.scalar_type();
  const int64_t elementSize = q.element_size();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto floats = q.options().dtype(at::kFloat);
  const at::Tensor weight = queryWeights(qmask, options, stream);
  MaxSimResult r;
  const char* qp = static_cast<const char*>(q.data_ptr());
  const char* dp = static_cast<const char*>(d.data_ptr());
  kernels::MaxSimBlockArgs args{};
  args.N = N;
  args.Lq = Lq;
  args.Ld = Ld;
  args.paired = options.paired;
  args.qmask = qmask.data_ptr<uint8_t>();
  args.dmask = dmask.data_ptr<uint8_t>();
  args.weight = weight.data_ptr<float>();
  if (options.paired) {
    r.scores = at::empty({B}, floats);
    r.argmax = at::empty({B, Lq}, q.options().dtype(at::kInt));
    args.scores = r.scores.data_ptr<float>();
    args.argmax = r.argmax.data_ptr<int32_t>();
    const int64_t bq = std::max<int64_t>(1, std::min<int64_t>(B, kBlockElements / (Lq * Ld)));
    at::Tensor block = at::empty({bq, Lq, Ld}, floats);
    for (int64_t b0 = 0; b0 < B; b0 += bq) {
      const int64_t nb = std::min(bq, B - b0);
      cuda::gemmNTBatched(qp + b0 * Lq * dim * elementSize, dim, Lq * dim, dp + b0 * Ld * dim * elementSize, dim,
                          Ld * dim, type, Lq, Ld, dim, block.data_ptr<float>(), Ld, Lq * Ld, nb);
      args.sim = block.data_ptr<float>();
      args.ld = Ld;
      args.b0 = b0;
      args.nb = nb;
      args.n0 = b0;
      args.nn = nb;
      cuda::check(kernels::maxsimBlockReduce(args, stream), "maxsim block reduce");
    }
    return r;
  }
  r.scores = at::empty({B, N}, floats);
  r.argmax = at::empty({B, N, Lq}, q.options().dtype(at::kInt));
  args.scores = r.scores.data_ptr<float>();
  args.argmax = r.argmax.data_ptr<int32_t>();
  // As many documents as fit beside one query, then as many queries as fit.
  const int64_t nc = std::max<int64_t>(1, std::min<int64_t>(N, kBlockElements / (Lq * Ld)));
  const int64_t bq = std::max<int64_t>(1, std::min<int64_t>(B, kBlockElements / (Lq * nc * Ld)));
  at::Tensor block = at::empty({bq * Lq, nc * Ld}, floats);
  for (int64_t b0 = 0; b0 < B; b0 += bq) {
    const int64_t nb = std::min(bq, B - b0);
    for (int64_t n0 = 0; n0 < N; n0 += nc) {
      const int64_t nn = std::min(nc, N - n0);
      cuda::gemmNT(qp + b0 * Lq * dim * elementSize, dim, dp + n0 * Ld * dim * elementSize, dim, type, nb * Lq, nn * Ld,
                   dim, 1.0f, 0.0f, block.data_ptr<float>(), nc * Ld);
      args.sim = block.data_ptr<float>();
      args.ld = nc * Ld;
      args.b0 = b0;
      args.nb = nb;
      args.n0 = n0;
      args.nn = nn;
      cuda::check(kernels::maxsimBlockReduce(args, stream), "maxsim block reduce");
    }
  }
  return r;
}

std::tuple<at::Tensor, at::Tensor> maxsimBackwardCuda(const at::Tensor& gradScores, const at::Tensor& qIn,
                                                      const at::Tensor& qmaskIn, const at::Tensor& dIn,
                                                      const at::Tensor& argmaxIn, const MaxSimOptions& options) {
  const at::Tensor q = qIn.contiguous(), d = dIn.contiguous(), qmask = qmaskIn.contiguous();
  const at::Tensor argmax = argmaxIn.contiguous(), grad = gradScores.to(at::kFloat).contiguous();
  const int64_t B = q.size(0), Lq = q.size(1), dim = q.size(2), N = d.size(0), Ld = d.size(1);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto floats = q.options().dtype(at::kFloat);
  const at::Tensor weight = queryWeights(qmask, options, stream);
  at::Tensor dq = at::zeros({B, Lq, dim}, floats), dd = at::zeros({N, Ld, dim}, floats);
  kernels::MaxSimBackwardArgs args{};
  args.dtype = kernelType(q.scalar_type());
  args.q = q.data_ptr();
  args.d = d.data_ptr();
  args.B = B;
  args.N = N;
  args.Lq = Lq;
  args.Ld = Ld;
  args.dim = dim;
  args.paired = options.paired;
  args.grad = grad.data_ptr<float>();
  args.weight = weight.data_ptr<float>();
  args.argmax = argmax.data_ptr<int32_t>();
  args.dq = dq.data_ptr<float>();
  args.dd = dd.data_ptr<float>();
  cuda::check(kernels::maxsimBackward(args, stream), "maxsim backward");
  return {dq.to(q.scalar_type()), dd.to(d.scalar_type())};
}

}  // namespace coltrast::ops
