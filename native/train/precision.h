// Mixed-precision training: autocast around the forward pass and a dynamic loss scale for float16.
//
// The model's weights and AdamW's moments stay float32. Inside an AutocastScope, libtorch's autocast runs
// matrix products in the lower precision (bfloat16 on CPU and CUDA, float16 on CUDA) and keeps
// precision-sensitive ops (softmax, layer norm on CUDA, reductions) in float32, as torch.autocast does in
// Python. The losses run after the scope, on float32 casts of the model's outputs.
//
// float16's range is small, so its gradients are computed on the loss times a scale and divided by it
// before clipping; a step whose gradients overflowed is skipped and the scale halved, and after
// `growthInterval` clean steps it doubles (the defaults and rules of torch.amp.GradScaler).
#pragma once
#include <torch/torch.h>

#include <vector>

namespace coltrast {

// Autocast on `device`'s type for this thread while alive; a no-op for float32. Restores the thread's
// earlier autocast settings (worker threads are reused) and drops autocast's cache of cast weights when
// the outermost scope ends, since the next step changes the weights.
class AutocastScope {
 public:
  AutocastScope(const torch::Device& device, torch::ScalarType dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType type_;
  bool active_;
  bool wasEnabled_ = false;
  torch::ScalarType wasDtype_ = torch::kFloat32;
};

// The dtype autocast runs `device`'s matrix products in on this thread now, kFloat32 when it is off.
torch::ScalarType activeAutocast(const torch::Device& device);

// Throws invalidArgument when this libtorch cannot autocast to `dtype` on `device`.
void checkAutocast(const torch::Device& device, torch::ScalarType dtype);

struct GradScaler {
  bool enabled = false;
  double scale = 65536.0;
  double growthFactor = 2.0;
  double backoffFactor = 0.5;
  int64_t growthInterval = 2000;
  int64_t growthTracker = 0;  // clean steps since the scale last changed

  // The factor the loss is multiplied by before backward.
  double lossFactor() const { return enabled ? scale : 1.0; }
  // Divides the gradients of `params` by the scale (nothing when disabled).
  void unscale(const std::vector<torch::Tensor>& params) const;
  // After an optimizer step (finite gradients) or a skipped one (overflow): the next scale.
  void update(bool finite);
};

}  // namespace coltrast
