#include "checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>

#include "../runtime.h"
#include "../train/precision.h"

namespace coltrast {
namespace {

// What the recomputation needs, handed to backward through the autograd context (as a capsule).
struct Replay : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> layer;
  torch::Device device{torch::kCPU};
  torch::ScalarType autocast = torch::kFloat32;
  at::Tensor cpuRng, deviceRng;  // the generators' states before the first pass
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, c10::intrusive_ptr<Replay> replay) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    replay->cpuRng = generatorState(cpu);
    if (replay->device.is_cuda()) {
      at::Generator device = at::globalContext().defaultGenerator(replay->device);
      replay->deviceRng = generatorState(device);
    }
    torch::Tensor out;
    {
      torch::NoGradGuard noGrad;
      out = replay->layer(input);
    }
    ctx->save_for_backward({input});
    ctx->saved_data["replay"] = c10::IValue::make_capsule(replay);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data["replay"].toCapsule());
    const torch::Tensor input = ctx->get_saved_variables()[0];
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
    torch::Tensor x = input.detach().requires_grad_(input.requires_grad());
    torch::Tensor out;
    {
      torch::AutoGradMode grad(true);
      AutocastScope scope(replay->device, replay->autocast);
      // A view, not the leaf itself: autocast caches its casts of leaves that require grad (weights), and one cached
      // cast of the input shared by its uses would sum their gradients in the lower precision, where the plain
      // forward sums them after casting each back.
      out = replay->layer(x.view_as(x));
    }
    setGeneratorState(cpu, cpuNow);
    if (device.defined()) setGeneratorState(device, deviceNow);
    torch::autograd::backward({out}, {grads[0]});
    return {x.requires_grad() ? x.grad() : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointLayer(std::function<torch::Tensor(const torch::Tensor&)> layer, const torch::Tensor& input) {
  auto replay = c10::make_intrusive<Replay>();
  replay->layer = std::move(layer);
  replay->device = input.device();
  replay->autocast = activeAutocast(input.device());
  return CheckpointFunction::apply(input, replay);
}

}  // namespace coltrast
