// Decoder-only LLM families as embedding models (Qwen3-Embedding, gte-Qwen2, e5-mistral, EmbeddingGemma and the like)
// and as the frozen base of CoTrEnD: Llama, Mistral, Qwen2, Qwen3, Gemma 3 (text), 2 and 1 and Phi-3 checkpoints, with
// module and parameter names identical to Hugging Face's LlamaModel / MistralModel / Qwen2Model / Qwen3Model /
// Gemma3TextModel / Gemma2Model / GemmaModel / Phi3Model, so weights load and save by name. The forward pass is theirs: token embeddings, layers of RMSNorm, causal
// grouped-query self-attention with rotary positions (Qwen3, Gemma 3: RMSNorm on each head's queries and keys first)
// and a SwiGLU MLP, then a final RMSNorm; the output is the last hidden states, which sentence-transformers pools
// (usually the last token). Gemma differs in several places (DecoderConfig::gemma), Phi-3 in a few (DecoderConfig::fused,
// Rotary's partial rotation and LongRoPE).
#pragma once
#include "layers.h"
#include "transformer_encoder.h"

namespace coltrast {

struct DecoderConfig {
  std::string modelType;
  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0, numHeads = 0, numKvHeads = 0, headDim = 0;
  int64_t intermediateSize = 0, maxPositions = 0;
  double rmsNormEps = 1e-6, attentionDropout = 0.0;
  Rotary rotary;  // rope_theta and rope_scaling / rope_parameters (Gemma 3: its full-attention layers')
  std::string activation = "silu";  // the MLP's gate activation
  bool qkvBias = false, outputBias = false, mlpBias = false;
  bool qkNorm = false;  // Qwen3, Gemma 3
  // Phi-3: the query, key and value projections one (qkv_proj), the gate and up projections one (gate_up_proj); and
  // dropout on the attention's and the MLP's output before each residual sum (resid_pdrop) in training.
  bool fused = false;
  double residualDropout = 0.0;
  // Gemma 3 (gemma3_text) and Gemma 2 (gemma2: no query/key norms, one rotary base, soft-capping below): embeddings
  // scaled by sqrt(hidden_size); RMSNorm scaling by 1 + weight, in float32; the
  // attention's output and the MLP's normed too before each residual sum (post_attention_layernorm,
  // pre_/post_feedforward_layernorm); a GELU (tanh) gated MLP; scores scaled by query_pre_attn_scalar^-1/2; and per
  // layer (layer_types) full attention or attention within `window` tokens, with rotary positions `rotary` or
  // `localRotary`. `bidirectional` (EmbeddingGemma's use_bidirectional_attention): no causal mask, and a sliding
  // layer's window reaches both ways, |query - key| < sliding_window / 2 + 1, as transformers computes it.
  // `gemma` covers Gemma 1 (gemma) too: its scaled embeddings and 1 + weight norms, a GELU-gated MLP, scores scaled by
  // head_dim^-1/2 (queryScalar = head_dim), and Llama's layer otherwise; `sandwich`: Gemma 2's and 3's extra norms
  // (post_attention_layernorm on the attention's output, pre_/post_feedforward_layernorm around the MLP).
  bool gemma = false, sandwich = false, bidirectional = false;
  double queryScalar = 0;
  // Gemma 2's tanh soft-capping (0: none): attention scores to (-cap, cap) before the mask (attn_logit_softcapping),
  // and a causal LM's logits (final_logit_softcapping): cap * tanh(x / cap).
  double attnSoftcap = 0, finalSoftcap = 0;
  Rotary localRotary;
  // Sliding-window attention: the layers (slidingLayers[i]) whose queries see only the keys less than `window`
  // positions back (Gemma's sliding layers; every layer of a Mistral with sliding_window; Qwen2's and Qwen3's from
  // max_window_layers on, with use_sliding_window). Empty: none.
  int64_t window = 0;
  std::vector<bool> slidingLayers;
  // Whether some layer's window can cut off a sequence of `length` tokens.
  bool windowed(int64_t length) const;
  // Whether a sequence of `length` tokens takes a mask (and rotary base) per kind of layer: Gemma 2's and 3's always
  // (their sliding layers), others' when a window cuts it.
  bool perLayerMasks(int64_t length) const { return !slidingLayers.empty() && (sandwich || windowed(length)); }
  static DecoderConfig fromJson(const nlohmann::json& config);
};

// Root-mean-square layer norm as Hugging Face's: in float32, then scaled by `weight` in the input's dtype; with
// `offset` (Gemma's), scaled by 1 + weight in float32 before the cast back (the weight then starts at zero).
struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t size, double eps, bool offset = false);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
  bool offset;
};
TORCH_MODULE(RmsNorm);

// One layer's keys and values of the tokens seen so far (after rotary positions, before grouped-query repetition),
// for generation: each new token attends to them instead of recomputing them.
struct KvCache {
  torch::Tensor keys, values;  // [batch, kvHeads, tokens, headDim]
  // LongRoPE models only, in the first layer's cache: the tokens' ids and positions [batch, tokens] and which rows'
  // keys were rotated with the long factors [batch], so that a row that grows past the pretraining length can be
  // computed again with them.
  torch::Tensor ids, positions, longRows;
  // Keeps only these rows of the batch (sequences that are still generating), int64 on the cache's device.
  void keepRows(const torch::Tensor& rows);
};

struct DecoderLayerImpl : torch::nn::Module {
  explicit DecoderLayerImpl(const DecoderConfig& c);
  // cos, sin: [seq, headDim], or [batch, 1, seq, headDim] for positions per row (float32); mask: boolean
  // [batch, 1, seq, keys], true where a query may attend, or undefined for plain causal attention (no padding).
  // With `cache`, the new tokens' keys and values are appended to it and the queries attend to all of them:
  // causally on the first call (the prompt), then one token at a time; `mask` then covers the cached keys too.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask,
                        KvCache* cache = nullptr);
  DecoderConfig config;
  Dense q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Dense gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  Dense qkv_proj{nullptr}, gate_up_proj{nullptr};  // Phi-3's fused projections (DecoderConfig::fused)
  RmsNorm q_norm{nullptr}, k_norm{nullptr}, input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  RmsNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};  // Gemma 3
};
TORCH_MODULE(DecoderLayer);

class DecoderModel : public TransformerEncoder {
 public:
  explicit DecoderModel(const DecoderConfig& config);
  torch::Tensor forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                        const torch::Tensor& tokenTypeIds) override;
  int64_t hiddenSize() const override { return config_.hiddenSize; }
  int64_t maxPositions() const override { return config_.maxPositions; }
  int64_t layerCount() const override { return config_.numLayers; }
  double finalLogitSoftcap() const override { return config_.finalSoftcap; }
  std::string modelType() const override { return config_.modelType; }
  torch::Tensor inputEmbeddings() const override { return embed_tokens_->weight; }
  int64_t vocabularySize() const override { return embed_tokens_->weight.size(0); }
  const DecoderConfig& config() const { return config_; }

  // The last hidden states of `inputIds` [batch, n] that follow the `caches`' tokens, which get theirs appended (one
  // cache per layer; empty ones on the first call). The first call holds the prompts, left-padded, later ones one
  // token per row. `keyMask` [batch, cached + n] marks the real tokens (0: padding) of all of them, and
  // `positions` [batch, n] (int64) are the new tokens' positions, counted over real tokens only.
  torch::Tensor forwardCached(const torch::Tensor& inputIds, const torch::Tensor& positions, const torch::Tensor& keyMask,
                              std::vector<KvCache>& caches);

 protected:
  // What *ForCausalLM and *ForSequenceClassification put before the base model's names.
  std::string weightPrefix() const override { return "model."; }

 private:
  // The token embeddings of `inputIds`; Gemma 3's times sqrt(hidden_size), the factor rounded to their dtype first, as
  // transformers does.
  torch::Tensor embed(const torch::Tensor& inputIds);
  // Rotary cos and sin [..., rotated dimensions] (float32) of `positions` (int64, any shape); `local`: Gemma 3's sliding
  // layers' base; `longer`: LongRoPE's rows that take the long factors (positions [batch, n]).
  std::pair<torch::Tensor, torch::Tensor> rotary(const torch::Tensor& positions, bool local = false, const torch::Tensor& longer = {}) const;
  // The same for right-padded rows of `attentionMask` [batch, seq] at positions 0 .. seq - 1: [seq, dimensions], or
  // with LongRoPE [batch, 1, seq, dimensions], each row's factors chosen by its own length.
  std::pair<torch::Tensor, torch::Tensor> positionRotary(const torch::Tensor& attentionMask, bool local) const;
  // LongRoPE: whether each row of these `lengths` [batch] (int64) is past the pretraining length and takes the long
  // factors; undefined for other rotary types. transformers decides for a whole batch, by its longest row (padding
  // included); coltrast for each row, so that a text's output is the one it has alone, whatever it is batched with.
  torch::Tensor longRows(const torch::Tensor& lengths) const;
  // The forward from the (scaled) embeddings with a mask per kind of layer (full, sliding window) and Gemma's local
  // rotary positions for its sliding layers: Gemma's always, others' when a window cuts the sequence.
  torch::Tensor forwardWindowed(torch::Tensor hidden, const torch::Tensor& attentionMask);
  void checkLength(int64_t seq) const;

  DecoderConfig config_;
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  RmsNorm norm_{nullptr};
};

}  // namespace coltrast
