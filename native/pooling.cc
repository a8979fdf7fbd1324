#include "pooling.h"

#include "error.h"

namespace coltrast {

torch::Tensor pool(const torch::Tensor& statesIn, const torch::Tensor& maskIn, const std::string& mode) {
  auto states = statesIn.to(torch::kFloat32);
  auto mask = maskIn.to(torch::kFloat32).unsqueeze(-1);  // [batch, seq, 1]
  if (mode == "cls") return states.select(1, 0);
  if (mode == "mean" || mode == "mean_sqrt_len") {
    auto sum = (states * mask).sum(1);
    auto count = mask.sum(1);
    return mode == "mean" ? sum / count.clamp_min(1e-9) : sum / count.clamp_min(1e-9).sqrt();
  }
  if (mode == "max") return states.masked_fill(mask == 0, -1e9).amax(1);
  if (mode == "lasttoken") {
    auto last = maskIn.to(torch::kInt64).sum(1).sub(1).clamp_min(0);  // right padding
    return states.index({torch::arange(states.size(0), last.options()), last});
  }
  throw invalidArgument("unknown pooling mode " + mode + " (cls, mean, max, mean_sqrt_len, lasttoken)");
}

}  // namespace coltrast
