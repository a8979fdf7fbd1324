// Eager reference versions (see reference.h): written for clarity, not speed.
#include "ops/reference.h"

#include <limits>

namespace coltrast::ops {

at::Tensor maxsimReference(const at::Tensor& q, const at::Tensor& qmask, const at::Tensor& d, const at::Tensor& dmask,
                           const MaxSimOptions& options) {
  const at::Tensor qf = q.to(at::kFloat), df = d.to(at::kFloat);
  const at::Tensor qm = qmask.to(at::kBool), dm = dmask.to(at::kBool);
  // sim [B, N, Lq, Ld] (paired: [B, Lq, Ld]); invalid document tokens can never be the max.
  at::Tensor sim = options.paired ? at::einsum("bid,bjd->bij", {qf, df}) : at::einsum("bid,njd->bnij", {qf, df});
  const at::Tensor docMask = options.paired ? dm.unsqueeze(1) : dm.unsqueeze(0).unsqueeze(2);
  sim = sim.masked_fill(docMask.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor best = std::get<0>(sim.max(-1));
  // A document without valid tokens gives -inf: such query tokens contribute 0.
  best = best.masked_fill(at::isinf(best), 0.0);
  // Padded query tokens are dropped with masked_fill, not a multiply by 0: a NaN there (NaN * 0 = NaN) must not
  // reach the score, as in the fused versions.
  const at::Tensor queryMask = options.paired ? qm : qm.unsqueeze(1);
  at::Tensor scores = best.masked_fill(queryMask.logical_not(), 0.0).sum(-1);
  if (options.normalizeByQueryLength) {
    at::Tensor count = qm.sum(1).to(at::kFloat);
    at::Tensor w = at::where(count > 0, count.reciprocal(), at::zeros_like(count));
    scores = scores * (options.paired ? w : w.unsqueeze(1));
  }
  return scores;
}

at::Tensor contrastiveReference(const at::Tensor& q, const at::Tensor& c, const at::Tensor& temperature,
                                const ContrastiveOptions& options) {
  const at::Tensor qf = q.to(at::kFloat), cf = c.to(at::kFloat);
  const int64_t B = qf.size(0);
  const at::Tensor logits = at::matmul(qf, cf.t()) / temperature;
  const at::Tensor target = at::arange(B, qf.options().dtype(at::kLong));
  at::Tensor loss = at::cross_entropy_loss(logits, target);
  if (options.symmetric) loss = 0.5 * (loss + at::cross_entropy_loss(logits.narrow(1, 0, B).t(), target));
  return loss;
}

}  // namespace coltrast::ops
