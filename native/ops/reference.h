// Eager reference versions of coltrast's loss operations: plain ATen ops differentiated by libtorch's
// autograd, the way Python trainers write them. They are the baseline that tests and benchmarks compare
// the fused implementations against inside one process (COLTRAST_REFERENCE_OPS=1 or reference: true).
#pragma once

#include <ATen/ATen.h>

#include "ops/backend.h"

namespace coltrast::ops {

// einsum over every token pair ([B, N, Lq, Ld] materialized), masked max over document tokens, masked sum.
at::Tensor maxsimReference(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                           const MaxSimOptions& options);
// cross_entropy(q @ c^T / tau, arange(B)), plus the symmetric term.
at::Tensor contrastiveReference(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                const ContrastiveOptions& options);

}  // namespace coltrast::ops
