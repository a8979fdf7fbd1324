// Pieces the encoder architectures share: the attention call (fused or eager), activations by Hugging Face's
// names, rotary positions and a layer norm without a bias.
#pragma once
#include <torch/torch.h>

#include <string>

namespace coltrast {

// Self-attention through libtorch's scaled_dot_product_attention (libtorch 2.1 and later, whose function takes a scale), which picks a
// fused kernel for the device and inputs: FlashAttention or memory-efficient attention on a GPU (no
// [batch, heads, seq, seq] score tensor kept for backward), a flash kernel on the CPU when there is no
// dropout, and otherwise the eager math below it. Hugging Face's BERT uses the same function by default.
// false with libtorch 1.13 (and 2.0), or when COLTRAST_EAGER_ATTENTION=1 asks for the eager form
// (matmul, softmax, dropout, matmul), so that benchmarks can compare the two in one build.
bool fusedAttention();

// Whether libtorch may run scaled_dot_product_attention on cuDNN's attention kernels. libtorch 2.5 and later
// can prefer them on recent GPUs (sm_90 and newer with a recent cuDNN), and cuDNN builds an execution plan for
// every new input shape (batch, heads, lengths, strides), reported at hundreds of milliseconds each
// (pytorch/pytorch's sdp_utils.cpp and cudnn/MHA.cpp; modelscope/FunASR#3704 measured 0.44 s forward and
// 0.55 s backward on a B200 with torch 2.11). coltrast pads each batch to its own longest text, so almost every
// training step and embedding batch is a new shape, as is every token a decoder generates (a longer key
// cache). So the first call (the addon makes it when it loads) turns them off, leaving FlashAttention
// (batches without padding) and memory-efficient attention (with a padding mask), unless
// COLTRAST_CUDNN_ATTENTION=1 (any value but "" and "0") keeps libtorch's own choice. Before 2.5, libtorch
// ranks them after its own kernels and coltrast leaves it alone: false. The setting is the process's
// (libtorch has one), not a model's.
bool cudnnAttention();

// A module that only groups others under a checkpoint's nested names ("attention.self", "mlp", ...).
struct ModuleGroup : torch::nn::Module {};

// Registers `module` under the dotted `path` of `root` (Hugging Face's nested names, attention.self.query, ...), making
// the grouping modules on the way as needed, so a layer keeps flat members for readable code while its parameters
// carry the checkpoint's names.
template <typename M>
M registerAt(torch::nn::Module& root, const std::string& path, M module) {
  torch::nn::Module* parent = &root;
  size_t start = 0, dot;
  while ((dot = path.find('.', start)) != std::string::npos) {
    const std::string name = path.substr(start, dot - start);
    auto* found = parent->named_children().find(name);
    std::shared_ptr<torch::nn::Module> child = found ? *found : parent->register_module(name, std::make_shared<ModuleGroup>());
    parent = child.get();
    start = dot + 1;
  }
  return parent->register_module(path.substr(start), module);
}

// The score a masked key gets: the dtype's lowest value, as Hugging Face uses, so that its softmax weight is exactly 0
// (float16's lowest for float16; below float32's lowest for the rest, which bfloat16 also holds).
inline double maskedScore(torch::ScalarType dtype) { return dtype == torch::kFloat16 ? -65504.0 : -3.0e38; }

// Bidirectional attention of q, k, v [batch, heads, seq, headDim], the scores scaled by `scale` (0: 1/sqrt(headDim), the
// usual; T5 scales by 1). `mask`: undefined
// (every key), boolean (true where a query may attend) or additive (added to the scores: a relative position bias,
// padding at the dtype's lowest value), broadcastable to [batch, heads, seq, seq]. The eager form takes the softmax
// in float32 when `float32Softmax` (as Hugging Face's newer encoders do), else in the scores' dtype (as BERT's).
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask, double dropout,
                     bool float32Softmax = false, double scale = 0);

// T5's bidirectional relative position buckets (Raffel et al. 2020), which MPNet uses too: int64 [seq (query), seq (key)]
// on `device`. Half the buckets for keys before the query, half for keys after; within each half, one bucket per
// distance below half of it, then logarithmic steps up to `maxDistance`, beyond which distances share the last bucket.
torch::Tensor relativePositionBuckets(int64_t seq, int64_t buckets, double maxDistance, const torch::Device& device);

// The activation Hugging Face calls `name` (gelu, gelu_new, relu, silu, ...); throws UNSUPPORTED_MODEL for others.
torch::Tensor activate(const torch::Tensor& x, const std::string& name);
// Throws UNSUPPORTED_MODEL now, at load, for an activation activate() lacks.
void checkActivation(const std::string& name);

// Rotary position embedding as Hugging Face's: each half of the last dimension rotated into the other ([-x2, x1]).
torch::Tensor rotateHalf(const torch::Tensor& x);
// Rotary positions as a checkpoint configures them: the base `theta`, and transformers' scaled variants, which change
// only the inverse frequencies theta^(-2i/d) and scale cos and sin (transformers' ROPE_INIT_FUNCTIONS, computed the same
// way in float32): 'linear' (every frequency divided by `factor`), 'llama3' (Llama 3.1: low frequencies divided by
// `factor`, high ones kept, a smooth blend between, by `lowFreqFactor`, `highFreqFactor` and the pretraining length
// `originalMaxPositions`), 'yarn' (Peng et al. 2023, "YaRN": frequencies blended between kept and divided by `factor`
// over the dimensions that turn between `betaSlow` and `betaFast` times within `originalMaxPositions`, truncated to
// whole dimensions unless `truncate` is false; cos and sin scaled by `attentionFactor`). 'dynamic' (NTK) rescales only
// past max_position_embeddings, which coltrast refuses, so within it it is the base frequencies. 'longrope' (Phi-3's
// LongRoPE, Ding et al. 2024): each frequency divided by its own factor, `shortFactor`'s for a sequence of at most
// `originalMaxPositions` tokens and `longFactor`'s for a longer one, cos and sin scaled by `attentionFactor`.
// `partial` (partial_rotary_factor, Phi-4-mini's 0.75): only the first dims(headDim) dimensions of a head rotate.
struct Rotary {
  std::string type = "default";  // default | linear | dynamic | llama3 | yarn | longrope
  double theta = 10000.0, factor = 1.0;
  double lowFreqFactor = 1.0, highFreqFactor = 4.0, originalMaxPositions = 0;
  double betaFast = 32.0, betaSlow = 1.0, attentionFactor = 1.0;
  bool truncate = true;
  double partial = 1.0;
  std::vector<double> shortFactor, longFactor;
  bool longrope() const { return type == "longrope"; }
  // The rotated dimensions of a head of `headDim`: int(headDim * partial_rotary_factor), as transformers rounds it.
  int64_t dims(int64_t headDim) const { return static_cast<int64_t>(static_cast<double>(headDim) * partial); }
  // float32 [dims(headDim) / 2] on `device`; `longFactors`: longrope's for sequences past originalMaxPositions.
  torch::Tensor inverseFrequencies(int64_t headDim, const torch::Device& device, bool longFactors = false) const;
};
// Rotary cos and sin [..., dims(headDim)] (float32) of `positions` (int64, any shape): angle p * frequency, one float32
// multiplication each, as torch.outer and Hugging Face's rotary embeddings compute them. For longrope, `longRows`
// (boolean [batch], with positions [batch, n]) says which rows take the long factors; undefined: none.
std::pair<torch::Tensor, torch::Tensor> rotaryCosSin(const torch::Tensor& positions, const Rotary& rotary, int64_t headDim,
                                                     const torch::Tensor& longRows = {});
// The same with plain rotary positions of base `theta`.
std::pair<torch::Tensor, torch::Tensor> rotaryCosSin(const torch::Tensor& positions, double theta, int64_t headDim);

// torch.nn.Linear (weight [out, in], optional bias; the same names and initialization), which can carry a LoRA adapter
// (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) as PEFT's LoRA layer computes it:
// x W^T + b + scale * dropout(x) A^T B^T, with lora_A [rank, in] and lora_B [out, rank] registered as parameters of
// this module. Every architecture's projections are Dense, so an adapter can go on any of them by name.
struct DenseImpl : torch::nn::Module {
  // The weight and bias allocated, not initialized: every Dense is part of a model whose weights are then read from its
  // file (TransformerEncoder::loadWeights refuses a file that lacks one), and drawing them first was most of the time
  // a load took.
  DenseImpl(int64_t in, int64_t out, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  // Attaches an adapter: `a` and `b` as given (on the weight's device, in its dtype), or when undefined a new one: A drawn
  // as PEFT draws it (kaiming-uniform, bounds ±1/sqrt(in), from `generator`), B zero, so the output is unchanged.
  void attachLora(int64_t rank, double scale, double dropout, const torch::Tensor& a, const torch::Tensor& b, at::Generator* generator);
  bool hasLora() const { return loraA.defined(); }
  // The weight with the adapter merged in (W + scale * B A), detached; the weight itself without an adapter.
  torch::Tensor mergedWeight() const;
  // Dynamic int8 quantization for CPU inference, as PyTorch's quantize_dynamic(model, {Linear:
  // per_channel_dynamic_qconfig}, dtype=qint8) makes a layer: the weight (with its adapter merged in) quantized to int8
  // once, per output row, symmetric (PerChannelMinMaxObserver's scales: the row's largest magnitude / 127.5, at least
  // float32's epsilon), packed by libtorch's quantized engine (quantized::linear_prepack); each input quantized to 8 bits
  // as it comes, over its own range (quantized::linear_dynamic, reduce_range as PyTorch's module passes it), the product
  // in integers and the bias added in float32. The float weight's memory is given back (`weight` keeps its shape as one
  // broadcast zero): from then on forward() runs float32 inputs on the CPU without autograd and refuses others, and the
  // model cannot be saved (TransformerEncoder::weightsForSaving refuses). Throws UNSUPPORTED_MODEL where this libtorch
  // has no quantized engine or op (a CUDA weight, or a PyTorch that dropped them).
  void quantizeInt8();
  bool quantizedInt8() const { return !packedInt8.isNone(); }
  torch::Tensor weight, bias, loraA, loraB;
  double loraScale = 0, loraDropout = 0;
  c10::IValue packedInt8;
};
TORCH_MODULE(Dense);

// torch::nn::Embedding(count, width) with its weight allocated and not drawn, for a model whose weights are then loaded
// (as DenseImpl's).
torch::nn::Embedding embeddingToFill(int64_t count, int64_t width);

// torch.nn.LayerNorm with its bias optional (ModernBERT's norm_bias: false), named weight and bias as PyTorch's.
struct NormImpl : torch::nn::Module {
  NormImpl(int64_t size, double eps, bool bias);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;
  int64_t size;
  double eps;
};
TORCH_MODULE(Norm);

}  // namespace coltrast
