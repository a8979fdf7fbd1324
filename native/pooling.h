// Sentence-level pooling of token states, with the definitions of sentence-transformers' Pooling module.
#pragma once
#include <torch/torch.h>

#include <string>

namespace coltrast {

// states [batch, seq, dim], mask [batch, seq] (1 = token). mode: cls | mean | max | mean_sqrt_len | lasttoken.
// Returns float32 [batch, dim].
torch::Tensor pool(const torch::Tensor& states, const torch::Tensor& mask, const std::string& mode);

}  // namespace coltrast
