// Gradient checkpointing (activation recomputation, Chen et al. 2016; torch.utils.checkpoint's reentrant form, which
// Hugging Face's gradient_checkpointing_enable() uses): a layer runs forward without keeping its activations, only
// its input, and backward runs it again, with autograd, to get them. Memory for activations goes from one set per
// layer to one layer's worth, at the price of a second forward pass of every layer.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace coltrast {

// A layer of the stack: its output from its input and the tensors it shares with the other layers (a relative position
// bias computed once from parameters outside the layers).
using SharedInputLayer = std::function<torch::Tensor(const torch::Tensor& input, const std::vector<torch::Tensor>& shared)>;

// `layer(input, shared)` with its activations recomputed in backward. The recomputation replays the random-number state
// the first pass drew from (dropout draws the same masks) and the autocast dtype it ran under, so the gradients are
// those of the plain forward. Parameter gradients accumulate into the parameters' .grad during that backward, as
// torch.utils.checkpoint's reentrant variant does: use it only where the loss's backward covers the whole graph
// (torch::autograd::grad with `inputs` would miss them).
// `shared` are inputs of the checkpoint's autograd node beside `input`, so the gradient reaching them from each layer
// flows on into their own graph, which backward then runs once (a tensor with a graph captured by the layer instead
// would be backpropagated once per layer, and autograd frees a graph after its first backward).
torch::Tensor checkpointLayer(SharedInputLayer layer, const torch::Tensor& input, const std::vector<torch::Tensor>& shared = {});

}  // namespace coltrast
