// A decoder LLM as a causal language model (the generator of ContextFlow's retrieval-augmented generation): the
// log-likelihood of a completion after a prompt, and greedy generation with cached keys and values. The model is
// a LoadedEncoder loaded with the "causal-lm" head (its lm_head, or the token embeddings when tied).
#pragma once
#include <napi.h>

#include <memory>

#include "encoder_wrap.h"

namespace coltrast {

// Σ log p(token t | tokens < t) over the tokens `targets` marks (1 = a completion token), one sum per row,
// float32 [batch], differentiable. ids, mask, targets: int64 [batch, seq] on the model's device, right-padded; a
// row's first token cannot be a target. Only the targets' logits are computed ([targets, vocab], not
// [batch, seq, vocab]).
torch::Tensor sequenceLogLikelihood(const LoadedEncoder& model, const torch::Tensor& ids, const torch::Tensor& mask,
                                    const torch::Tensor& targets);

// NativeEncoder.logLikelihood({ ...padded batch, outputMask: the targets }) → Promise<Float32Array [batch]>.
Napi::Value logLikelihoodCall(Napi::Env env, std::shared_ptr<LoadedEncoder> model, const Napi::Object& args);
// NativeEncoder.generate({ prompts: Int32Array[], maxNewTokens, stopIds: Int32Array, temperature, topK, topP, seed, batchSize,
// numBeams, lengthPenalty, earlyStopping (0 false, 1 true, 2 never): beam search when numBeams > 1 (batchSize prompts at a time, numBeams rows each),
// onTokens?: (promptIndices: Int32Array, tokens: Int32Array) => void, called after each step with the tokens it added,
// cancel?: Int32Array, a flag per prompt that stops its generation when the JS thread sets it })
// → Promise<{ outputs: Int32Array[], streamedCalls }>: each prompt's continuation (without the prompt), greedy
// (temperature 0) or sampled, ending at the first stop id (kept) or after maxNewTokens, or where the model's positions
// end; and how many onTokens calls were queued (some may still be on their way when the promise settles).
Napi::Value generateCall(Napi::Env env, std::shared_ptr<LoadedEncoder> model, const Napi::Object& args);

}  // namespace coltrast
