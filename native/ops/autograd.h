// coltrast's loss operations as differentiable libtorch functions: what training code calls.
// Each checks its inputs (shapes, dtypes, devices: coltrast::Error INVALID_ARGUMENT or DEVICE), then runs
// the eager reference (when the reference switch is on), the CUDA kernels (CUDA inputs) or the CPU
// implementation, wrapped in a torch::autograd::Function whose backward is the matching fused backward.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "ops/backend.h"

namespace coltrast::ops {

// The reference switch: COLTRAST_REFERENCE_OPS=1 in the environment turns it on for the process; a call
// can override it.
bool referenceOpsDefault();

// What ContrastiveOptions' Auto strategy means in this process: COLTRAST_CONTRASTIVE_STRATEGY (fused, chunked;
// auto or unset: Auto, which resolveContrastiveStrategy settles per dtype), read once; another value is an
// INVALID_ARGUMENT error at every call.
ContrastiveOptions::Strategy contrastiveStrategyDefault();

// Scores [B, N] (all) or [B] (paired), float32. Masks: any integer or bool dtype, nonzero = valid.
at::Tensor maxsim(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                  const MaxSimOptions& options, std::optional<bool> reference = std::nullopt);

// Scalar float32 loss. temperature: a float32 scalar tensor, > 0 (learnable when it requires grad).
at::Tensor contrastiveLoss(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                           const ContrastiveOptions& options, std::optional<bool> reference = std::nullopt);

// Late-interaction training losses over MaxSim `all` scores S [B, N] (query i's positive is document i).
//  - CrossEntropy (ColBERT / PyLate): mean_i CE(S_i / tau, i), plus the symmetric term over the first B
//    documents when asked.
//  - Bce (the ColTrast write-up's pairwise form): every (query, document) pair is a binary example,
//    positive on the diagonal; loss = (mean over positives + mean over negatives) / 2 of
//    BCE-with-logits(S / tau, label), so the many negatives do not drown the B positives.
struct LateInteractionOptions {
  enum class Kind { CrossEntropy, Bce };
  Kind kind = Kind::CrossEntropy;
  bool normalizeByQueryLength = true;
  bool symmetric = false;  // CrossEntropy only: pairwise Bce has no direction and ignores it
};
at::Tensor lateInteractionLoss(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d,
                               const at::Tensor& dmask, const at::Tensor& temperature,
                               const LateInteractionOptions& options, std::optional<bool> reference = std::nullopt);

}  // namespace coltrast::ops
