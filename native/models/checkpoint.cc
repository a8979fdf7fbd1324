#include "checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>

#include "../runtime.h"
#include "../train/precision.h"

namespace coltrast {
namespace {

// What the recomputation needs, handed to backward through the autograd context (as a capsule).
struct Replay : torch::CustomClassHolder {
  SharedInputLayer layer;
  torch::Device device{torch::kCPU};
  torch::ScalarType autocast = torch::kFloat32;
  at::Tensor cpuRng, deviceRng;  // the generators' states before the first pass
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, const at::TensorList& shared,
                               c10::intrusive_ptr<Replay> replay) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    replay->cpuRng = generatorState(cpu);
    if (replay->device.is_cuda()) {
      at::Generator device = at::globalContext().defaultGenerator(replay->device);
      replay->deviceRng = generatorState(device);
    }
    torch::Tensor out;
    {
      torch::NoGradGuard noGrad;
      out = replay->layer(input, shared.vec());
    }
    std::vector<torch::Tensor> saved{input};
    saved.insert(saved.end(), shared.begin(), shared.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["replay"] = c10::IValue::make_capsule(replay);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data["replay"].toCapsule());
    const std::vector<torch::Tensor> saved = ctx->get_saved_variables();
    // The generators as the first pass found them, then back to where they are now.
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    const at::Tensor cpuNow = generatorState(cpu);
    setGeneratorState(cpu, replay->cpuRng);
    at::Generator device;
    at::Tensor deviceNow;
    if (replay->deviceRng.defined()) {
      device = at::globalContext().defaultGenerator(replay->device);
      deviceNow = generatorState(device);
      setGeneratorState(device, replay->deviceRng);
    }
    // New leaves for the input and the shared tensors, whose gradients this backward returns.
    std::vector<torch::Tensor> leaves;
    for (const auto& t : saved) leaves.push_back(t.detach().requires_grad_(t.requires_grad()));
    torch::Tensor out;
    {
      torch::AutoGradMode grad(true);
      AutocastScope scope(replay->device, replay->autocast);
      // Views, not the leaves themselves: autocast caches its casts of leaves that require grad (weights), and one
      // cached cast of a tensor shared by its uses would sum their gradients in the lower precision, where the plain
      // forward sums them after casting each back.
      std::vector<torch::Tensor> shared;
      for (size_t i = 1; i < leaves.size(); ++i) shared.push_back(leaves[i].view_as(leaves[i]));
      out = replay->layer(leaves[0].view_as(leaves[0]), shared);
    }
    setGeneratorState(cpu, cpuNow);
    if (device.defined()) setGeneratorState(device, deviceNow);
    torch::autograd::backward({out}, {grads[0]});
    torch::autograd::variable_list result;
    for (const auto& leaf : leaves) result.push_back(leaf.requires_grad() ? leaf.grad() : torch::Tensor());
    result.emplace_back();  // the replay
    return result;
  }
};

}  // namespace

torch::Tensor checkpointLayer(SharedInputLayer layer, const torch::Tensor& input, const std::vector<torch::Tensor>& shared) {
  auto replay = c10::make_intrusive<Replay>();
  replay->layer = std::move(layer);
  replay->device = input.device();
  replay->autocast = activeAutocast(input.device());
  return CheckpointFunction::apply(input, at::TensorList(shared), replay);
}

}  // namespace coltrast
