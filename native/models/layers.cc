#include "layers.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "../error.h"
#include "../torch_version.h"

namespace coltrast {

bool fusedAttention() {
#if COLTRAST_TORCH_AT_LEAST(2, 1)
  static const bool fused = [] {
    const char* eager = std::getenv("COLTRAST_EAGER_ATTENTION");
    return eager == nullptr || std::string(eager) == "" || std::string(eager) == "0";
  }();
  return fused;
#else
  return false;
#endif
}

bool cudnnAttention() {
#if COLTRAST_TORCH_AT_LEAST(2, 5)
  static const bool allowed = [] {
    const char* env = std::getenv("COLTRAST_CUDNN_ATTENTION");
    const bool asked = env != nullptr && std::string(env) != "" && std::string(env) != "0";
    if (!asked) at::globalContext().setSDPUseCuDNN(false);
    return at::globalContext().userEnabledCuDNNSDP();
  }();
  return allowed;
#else
  return false;
#endif
}

torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask, double dropout,
                     bool float32Softmax, double scale) {
#if COLTRAST_TORCH_AT_LEAST(2, 1)
  if (fusedAttention()) {
    // A boolean mask becomes an additive one in the query's dtype inside libtorch, so autocast needs no cast here.
    // With dropout, the CPU runs the math form, whose dropout draws from the same generator as the eager form's.
    const c10::optional<at::Tensor> keys = mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt;
    const c10::optional<double> factor = scale > 0 ? c10::optional<double>(scale) : c10::nullopt;
    return at::scaled_dot_product_attention(q, k, v, keys, dropout, false, factor);
  }
#endif
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2));
  if (scale <= 0) scores = scores / std::sqrt(static_cast<double>(q.size(-1)));
  else if (scale != 1) scores = scores * scale;
  if (mask.defined()) {
    if (mask.scalar_type() == torch::kBool) {
      scores = scores.masked_fill(mask.logical_not(), maskedScore(scores.scalar_type()));
    } else {
      scores = scores + mask;
    }
  }
  torch::Tensor weights = float32Softmax ? torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type()) : torch::softmax(scores, -1);
  if (dropout > 0) weights = torch::dropout(weights, dropout, true);
  return torch::matmul(weights, v);
}

torch::Tensor relativePositionBuckets(int64_t seq, int64_t buckets, double maxDistance, const torch::Device& device) {
  const torch::Tensor positions = torch::arange(seq, torch::TensorOptions().device(device).dtype(torch::kLong));
  const torch::Tensor n = positions.unsqueeze(1) - positions.unsqueeze(0);  // query - key: -(relative position)
  const int64_t half = buckets / 2, exact = half / 2;
  const torch::Tensor distance = n.abs();
  const torch::Tensor logBucket =
      (exact + (torch::log(distance.clamp_min(1).to(torch::kFloat32) / exact) / std::log(maxDistance / exact) * (half - exact)).to(torch::kLong))
          .clamp_max(half - 1);
  return n.lt(0).to(torch::kLong) * half + torch::where(distance.lt(exact), distance, logBucket);
}

torch::Tensor activate(const torch::Tensor& x, const std::string& act) {
  if (act == "gelu") return torch::gelu(x);
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") return torch::gelu(x, "tanh");
  if (act == "relu") return torch::relu(x);
  if (act == "silu" || act == "swish") return torch::silu(x);
  if (act == "tanh") return torch::tanh(x);
  throw unsupportedError("unsupported hidden_act " + act);
}

void checkActivation(const std::string& name) { activate(torch::zeros({1}), name); }

torch::Tensor rotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor Rotary::inverseFrequencies(int64_t fullHeadDim, const torch::Device& device, bool longFactors) const {
  const auto f32 = torch::TensorOptions().device(device).dtype(torch::kFloat32);
  const int64_t headDim = dims(fullHeadDim);
  const torch::Tensor exponents = torch::arange(0, headDim, 2, f32.dtype(torch::kInt64)).to(torch::kFloat32) / headDim;
  if (type == "longrope") {
    // transformers' _compute_longrope_parameters: 1 / (factor_i * theta^(2i/d)), one factor per rotated pair (as
    // DecoderConfig::fromJson checks).
    const auto& f = longFactors ? longFactor : shortFactor;
    return 1.0 / (torch::tensor(f, torch::TensorOptions().dtype(torch::kFloat64)).to(f32) * torch::pow(theta, exponents));
  }
  const torch::Tensor base = 1.0 / torch::pow(theta, exponents);
  if (type == "default" || type == "dynamic") return base;
  if (type == "linear") return base / factor;
  if (type == "llama3") {
    const double lowWavelength = originalMaxPositions / lowFreqFactor, highWavelength = originalMaxPositions / highFreqFactor;
    const torch::Tensor wavelength = 2 * M_PI / base;
    const torch::Tensor kept = torch::where(wavelength > lowWavelength, base / factor, base);
    const torch::Tensor smooth = (originalMaxPositions / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    const torch::Tensor smoothed = (1 - smooth) * kept / factor + smooth * kept;
    const torch::Tensor medium = wavelength.ge(highWavelength).logical_and(wavelength.le(lowWavelength));
    return torch::where(medium, smoothed, kept);
  }
  if (type == "yarn") {
    // The dimension that turns `rotations` times within the pretraining length, and the range between betaFast's and
    // betaSlow's, as transformers' find_correction_range.
    const auto dimension = [&](double rotations) {
      return headDim * std::log(originalMaxPositions / (rotations * 2 * M_PI)) / (2 * std::log(theta));
    };
    double low = dimension(betaFast), high = dimension(betaSlow);
    if (truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, static_cast<double>(headDim - 1));
    if (low == high) high += 0.001;
    // The base frequencies kept (extrapolation) or divided by factor (interpolation), as transformers computes each.
    const torch::Tensor interpolation = 1.0 / (factor * torch::pow(theta, exponents));
    const torch::Tensor& extrapolation = base;
    const torch::Tensor ramp = ((torch::arange(headDim / 2, f32) - low) / (high - low)).clamp(0, 1);
    const torch::Tensor keep = 1 - ramp;
    return interpolation * (1 - keep) + extrapolation * keep;
  }
  throw unsupportedError("unsupported rotary scaling type " + type);
}

std::pair<torch::Tensor, torch::Tensor> rotaryCosSin(const torch::Tensor& positions, const Rotary& rotary, int64_t headDim,
                                                     const torch::Tensor& longRows) {
  torch::Tensor frequencies = rotary.inverseFrequencies(headDim, positions.device());
  if (rotary.longrope() && longRows.defined()) {
    // Each row's own: [batch, 1, dims / 2] against positions [batch, n].
    const torch::Tensor longer = rotary.inverseFrequencies(headDim, positions.device(), true);
    frequencies = torch::where(longRows.to(positions.device()).view({-1, 1}), longer, frequencies).unsqueeze(1);
  }
  const torch::Tensor angles = positions.to(torch::kFloat32).unsqueeze(-1) * frequencies;
  const torch::Tensor emb = torch::cat({angles, angles}, -1);
  if (rotary.attentionFactor == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * rotary.attentionFactor, emb.sin() * rotary.attentionFactor};
}

std::pair<torch::Tensor, torch::Tensor> rotaryCosSin(const torch::Tensor& positions, double theta, int64_t headDim) {
  Rotary rotary;
  rotary.theta = theta;
  return rotaryCosSin(positions, rotary, headDim);
}

DenseImpl::DenseImpl(int64_t in, int64_t out, bool withBias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (withBias) bias = register_parameter("bias", torch::empty({out}));
}

torch::nn::Embedding embeddingToFill(int64_t count, int64_t width) {
  // With _weight given, torch::nn::Embedding takes it as its weight and draws nothing.
  return torch::nn::Embedding(torch::nn::EmbeddingOptions(count, width)._weight(torch::empty({count, width})));
}

namespace {

// A quantized operator of libtorch's (quantized::linear_prepack, ...); UNSUPPORTED_MODEL naming the fix where this
// libtorch lacks it.
c10::OperatorHandle quantizedOp(const char* name) {
  const auto op = c10::Dispatcher::singleton().findSchema({name, ""});
  if (!op) throw unsupportedError(std::string("this libtorch has no ") + name + " operator, which int8 quantization needs: load the model without quantize");
  return *op;
}

#if COLTRAST_TORCH_AT_LEAST(2, 0)
// Drops the warnings of the thread it is installed on (WarningHandlerGuard).
struct QuietWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};
#endif

}  // namespace

void DenseImpl::quantizeInt8() {
  torch::NoGradGuard noGrad;
  if (!weight.device().is_cpu()) throw invalidArgument("int8 quantization is for models on the CPU");
  if (at::globalContext().qEngine() == at::QEngine::NoQEngine) throw unsupportedError("this libtorch has no quantized engine (fbgemm, x86, onednn or qnnpack): load the model without quantize");
  // Both operators looked up first: a libtorch without them is refused before anything is quantized.
  quantizedOp("quantized::linear_dynamic");
  const c10::OperatorHandle prepack = quantizedOp("quantized::linear_prepack");
#if COLTRAST_TORCH_AT_LEAST(2, 0)
  // PyTorch 2.x warns, once, that its quantized tensors are deprecated (pytorch/pytorch#184982): a notice for its own
  // Python users, which a coltrast user can do nothing about (README, Encoder.load's quantize, says what happens where a
  // libtorch drops them). quantize_per_channel below is where it fires.
  QuietWarnings quiet;
  c10::WarningUtils::WarningHandlerGuard guard(&quiet);
#endif
  const torch::Tensor w = mergedWeight().to(torch::kFloat32).contiguous();
  // PerChannelMinMaxObserver, per_channel_symmetric, qint8 (quant range -128..127, not reduced): each row's scale is
  // max(-min(row, 0), max(row, 0)) / 127.5, at least float32's epsilon, its zero point 0.
  const torch::Tensor low = std::get<0>(w.min(1)).clamp_max(0), high = std::get<0>(w.max(1)).clamp_min(0);
  const torch::Tensor scales = torch::maximum(-low, high).div(127.5).clamp_min(std::numeric_limits<float>::epsilon());
  const torch::Tensor q = torch::quantize_per_channel(w, scales.to(torch::kFloat64), torch::zeros({w.size(0)}, torch::kInt64), 0, torch::kQInt8);
  std::vector<c10::IValue> stack{q, bias.defined() ? c10::IValue(bias.detach().to(torch::kFloat32).contiguous()) : c10::IValue()};
  prepack.callBoxed(&stack);
  packedInt8 = stack.at(0);
  // The float weight is given back: the packed copy is all that runs from here on (forward refuses what it cannot run),
  // and save() is refused for a quantized model, so it is kept only as its shape (one zero, broadcast), which the
  // adapter and size checks read. No other module shares a projection's weight (the tied language-model head is a
  // Linear over the embeddings, which stay float32).
  weight.set_data(torch::zeros({}, weight.options()).expand(weight.sizes()));
}

torch::Tensor DenseImpl::forward(const torch::Tensor& x) {
  if (quantizedInt8()) {
    if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || torch::GradMode::is_enabled())
      throw invalidArgument("a model loaded with quantize: 'int8' runs float32 inputs on the CPU without gradients only (got " + std::string(c10::toString(x.scalar_type())) +
                            " on " + x.device().str() + (torch::GradMode::is_enabled() ? ", recording gradients" : "") + "): load it without quantize for this");
    // Looked up once: quantizeInt8 has refused a libtorch without it before any layer was packed.
    static const c10::OperatorHandle linearDynamic = quantizedOp("quantized::linear_dynamic");
    // The adapter is in the packed weight already. The op takes [rows, in]: the leading dimensions flattened and restored.
    auto sizes = x.sizes().vec();
    std::vector<c10::IValue> stack{x.reshape({-1, sizes.back()}).contiguous(), packedInt8, true};
    linearDynamic.callBoxed(&stack);
    sizes.back() = weight.size(0);
    return stack.at(0).toTensor().view(sizes);
  }
  torch::Tensor out = torch::nn::functional::linear(x, weight, bias);
  if (!loraA.defined()) return out;
  const torch::Tensor input = loraDropout > 0 ? torch::dropout(x, loraDropout, is_training()) : x;
  const torch::Tensor update = torch::nn::functional::linear(torch::nn::functional::linear(input, loraA), loraB) * loraScale;
  return out + update.to(out.scalar_type());
}

void DenseImpl::attachLora(int64_t rank, double scale, double dropout, const torch::Tensor& a, const torch::Tensor& b, at::Generator* generator) {
  if (loraA.defined()) throw invalidArgument("a layer already has a LoRA adapter");
  if (quantizedInt8()) throw invalidArgument("a model loaded with quantize: 'int8' takes no LoRA adapter afterwards (it is for inference): load it without quantize");
  const int64_t in = weight.size(1), out = weight.size(0);
  // In the weight's dtype, as PEFT keeps an adapter in its model's: float32 for training, bfloat16 or float16 when
  // the model was loaded so.
  const auto onDevice = torch::TensorOptions().device(weight.device()).dtype(weight.scalar_type());
  torch::Tensor initA = a, initB = b;
  if (!initA.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    initA = torch::empty({rank, in}).uniform_(-bound, bound, *generator);
    initB = torch::zeros({out, rank});
  }
  loraA = register_parameter("lora_A", initA.to(onDevice).clone());
  loraB = register_parameter("lora_B", initB.to(onDevice).clone());
  loraScale = scale;
  loraDropout = dropout;
}

torch::Tensor DenseImpl::mergedWeight() const {
  torch::NoGradGuard noGrad;
  if (!loraA.defined()) return weight.detach();
  return (weight.to(torch::kFloat32) + torch::matmul(loraB, loraA) * loraScale).to(weight.scalar_type());
}

NormImpl::NormImpl(int64_t size, double eps, bool withBias) : size(size), eps(eps) {
  weight = register_parameter("weight", torch::ones({size}));
  if (withBias) bias = register_parameter("bias", torch::zeros({size}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) const { return torch::layer_norm(x, {size}, weight, bias, eps); }

}  // namespace coltrast
