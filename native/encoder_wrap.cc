#include "encoder_wrap.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <set>

#include "causal_lm.h"
#include "models/config_json.h"
#include "napi_args.h"
#include "pooling.h"
#include "promise_worker.h"
#include "runtime.h"
#include "safetensors.h"

namespace coltrast {
namespace {

struct LoadOptions {
  std::string weightsPath, config, device, dtype;
  // Sharded weights: every shard (weightsPath is then the index file, named in messages). Empty: weightsPath.
  std::vector<std::string> weightShards;
  // The Dense module's weights (linear.weight [out, in], optional linear.bias); empty: no head. Then the Dense
  // modules after it: their weights and activations.
  std::string denseWeightsPath, denseActivation;
  struct DenseFile {
    std::string path, activation;
  };
  std::vector<DenseFile> denseStack;
  // "sequence-classification": the weights file's pooler and classifier become a cross-encoder's head, which
  // must have `numLabels` outputs.
  std::string head;
  int64_t numLabels = 0;
  // A new head, seeded (a cross-encoder made from an embedding model): the file's pooler when it has one, else
  // a new one, and a new classifier, drawn as transformers initializes them (normal(0, initializer_range), zero bias).
  // With "masked-lm": a new masked-LM head where the file has none (MlmHead::take's drawIfMissing).
  bool newHead = false;
  uint64_t seed = 42;
  // "masked-lm": the prediction head of a *ForMaskedLM checkpoint (a sparse encoder's, native/mlm_head.h).
  // "causal-lm": the output layer of a *ForCausalLM checkpoint, lm_head.weight, or the token embeddings when tied.
  bool tieWordEmbeddings = false;
  // With "causal-lm": a reranker's score from that layer (sentence-transformers' LogitScore): the logit of the first
  // token id, minus that of the second when there is one.
  std::vector<int64_t> scoreTokens;
  // Each projection quantized to int8 as soon as its weights are read (TransformerEncoder::loadWeights): loading then
  // never holds the whole float32 model.
  bool quantizeInt8 = false;
};

// A Linear module whose parameters are `weight` [out, in] and `bias` [out] (undefined: none), in float32, taken as
// they are (the caller's own tensors, or copies where they are not float32). libtorch's Linear draws its weights when
// it is made: it is made 1 × 1 (that draw with the global generator held and put back, runtime.h) and then given
// these, rather than drawing an out × in matrix (a language model's head: a vocabulary's rows) only to replace it.
torch::nn::Linear linearFrom(const torch::Tensor& weight, const torch::Tensor& bias) {
  torch::nn::Linear linear{nullptr};
  {
    PreservedCpuGenerator initialWeights;
    linear = torch::nn::Linear(torch::nn::LinearOptions(1, 1).bias(bias.defined()));
  }
  torch::NoGradGuard noGrad;
  linear->weight.set_data(weight.to(torch::kFloat32).contiguous());
  if (bias.defined()) linear->bias.set_data(bias.to(torch::kFloat32).contiguous());
  linear->options.in_features(weight.size(1)).out_features(weight.size(0));
  return linear;
}

// A seeded Linear layer drawn as transformers' BertPreTrainedModel._init_weights draws one.
torch::nn::Linear newLinear(int64_t in, int64_t out, double std, at::Generator& generator, bool bias = true) {
  return linearFrom(torch::empty({out, in}).normal_(0, std, generator), bias ? torch::zeros({out}) : torch::Tensor());
}

using HeadKind = LoadedEncoder::HeadKind;

// Where each family's *ForSequenceClassification keeps its head: the dense layer, the norm after it (ModernBERT) and
// the output layer. BERT's dense layer is the base model's pooler: the model keeps it without the prefix, and it is
// saved under the prefix (`savedDense`). `module`: the module holding the dense layer (and norm) by the name PEFT's
// modules_to_save matches it with, when it is not inside the classifier (RoBERTa's classifier.dense is).
struct HeadNames {
  std::string dense, norm, out, savedDense, module;
};

HeadKind headKindOf(const std::string& modelType) {
  if (modelType == "roberta" || modelType == "xlm-roberta" || modelType == "camembert" || modelType == "mpnet" || modelType == "electra")
    return HeadKind::Roberta;
  if (modelType == "distilbert") return HeadKind::DistilBert;
  if (modelType == "deberta-v2") return HeadKind::Deberta;
  if (modelType == "modernbert") return HeadKind::ModernBert;
  return HeadKind::Bert;
}

HeadNames headNames(HeadKind kind, const std::string& prefix) {
  switch (kind) {
    case HeadKind::Roberta: return {"classifier.dense", "", "classifier.out_proj", "classifier.dense", ""};
    case HeadKind::DistilBert: return {"pre_classifier", "", "classifier", "pre_classifier", "pre_classifier"};
    case HeadKind::Deberta: return {"pooler.dense", "", "classifier", "pooler.dense", "pooler"};
    case HeadKind::ModernBert: return {"head.dense", "head.norm", "classifier", "head.dense", "head"};
    case HeadKind::Decoder: return {"", "", "score", "", ""};
    default: return {"pooler.dense", "", "classifier", prefix + "pooler.dense", "pooler"};
  }
}

// A linear layer from tensors the model kept from its weights file (Hugging Face's names, e.g. "classifier"),
// checked against the expected shape; an undefined Linear when `optional` and the file has no such weight. `bias`:
// whether the layer has one (ModernBERT's head.dense has none unless classifier_bias).
torch::nn::Linear takeLinear(TransformerEncoder& model, const std::string& name, int64_t in, int64_t out, bool optional,
                             const std::string& file, bool withBias = true) {
  torch::Tensor weight = model.takeKept(name + ".weight"), bias = model.takeKept(name + ".bias");
  if (!weight.defined()) {
    if (optional) return torch::nn::Linear(nullptr);
    throw modelFilesError(file + " has no " + name + ".weight: it is not a sequence-classification model (a cross-encoder)");
  }
  if (weight.dim() != 2 || weight.size(0) != out || weight.size(1) != in) {
    throw modelFilesError(file + ": " + name + ".weight has shape " + c10::str(weight.sizes()) + ", expected [" + std::to_string(out) +
                          ", " + std::to_string(in) + "] (config.json's " + (out != in ? "labels" : "hidden_size") +
                          " and the weights disagree)");
  }
  if (withBias && (!bias.defined() || bias.dim() != 1 || bias.size(0) != out))
    throw modelFilesError(file + ": " + name + ".bias is missing or does not match its weight");
  if (!withBias && bias.defined()) throw modelFilesError(file + ": " + name + ".bias is there but config.json says the layer has none");
  return linearFrom(weight, withBias ? bias : torch::Tensor());
}

// ModernBERT's head.norm from the weights file (weight, and bias when config.json's norm_bias), or a new one (ones, zeros).
Norm takeNorm(TransformerEncoder& model, const std::string& name, int64_t size, double eps, bool withBias, bool fresh, const std::string& file) {
  Norm norm(size, eps, withBias);
  torch::Tensor weight = model.takeKept(name + ".weight"), bias = model.takeKept(name + ".bias");
  if (fresh) return norm;
  if (!weight.defined() || weight.dim() != 1 || weight.size(0) != size) throw modelFilesError(file + ": " + name + ".weight is missing or not [" + std::to_string(size) + "]");
  if (withBias != bias.defined()) throw modelFilesError(file + ": " + name + ".bias " + (withBias ? "is missing" : "is there but config.json's norm_bias is false"));
  torch::NoGradGuard noGrad;
  norm->weight.copy_(weight.to(torch::kFloat32));
  if (withBias) norm->bias.copy_(bias.to(torch::kFloat32));
  return norm;
}

// A projection head from a Dense module's safetensors file, checked against the width it takes (the model's hidden
// size, or the previous Dense module's output).
torch::nn::Linear loadDense(const std::string& path, int64_t inFeatures, const char* inName = "the model's hidden size") {
  SafetensorsFile file(path);
  if (!file.has("linear.weight")) throw modelFilesError(path + " has no linear.weight (a sentence-transformers Dense module)");
  torch::Tensor weight = file.read("linear.weight", torch::kFloat32);
  if (weight.dim() != 2 || weight.size(1) != inFeatures) {
    throw modelFilesError(path + ": linear.weight has shape " + c10::str(weight.sizes()) + ", expected [out_features, " +
                          std::to_string(inFeatures) + "] (" + inName + ")");
  }
  torch::Tensor bias;
  if (file.has("linear.bias")) {
    bias = file.read("linear.bias", torch::kFloat32);
    if (bias.dim() != 1 || bias.size(0) != weight.size(0)) throw modelFilesError(path + ": linear.bias does not match linear.weight");
  }
  return linearFrom(weight, bias);
}

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, LoadOptions options, Napi::Function constructor)
      : PromiseWorker(env, options.device), options_(std::move(options)), constructor_(Napi::Persistent(constructor)) {}

 protected:
  void compute() override {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(options_.config);
    } catch (const nlohmann::json::exception& e) {
      throw modelFilesError(std::string("config.json is not valid JSON: ") + e.what());
    }
    auto loaded = std::make_shared<LoadedEncoder>();
    loaded->device = parseDevice(options_.device);
    loaded->dtype = parseDtype(options_.dtype);
    {
      // Projections and embedding tables draw nothing (models/layers.h); whatever else a constructor draws would be
      // replaced by the file's weights, so the global generator is kept as it was.
      PreservedCpuGenerator initialWeights;
      loaded->model = createEncoder(config);
    }
    WeightFiles weights(options_.weightShards.empty() ? std::vector<std::string>{options_.weightsPath} : options_.weightShards);
    // In the dtype asked for from the start (a bfloat16 model is never a float32 one first), then onto the device.
    loaded->model->loadWeights(weights, loaded->dtype, options_.quantizeInt8);
    loaded->model->to(loaded->device);
    loaded->model->eval();
    if (!options_.denseWeightsPath.empty()) {
      // The head stays float32 (it is small, and pooling hands it float32).
      loaded->dense = loadDense(options_.denseWeightsPath, loaded->model->hiddenSize());
      loaded->dense->to(loaded->device);
      loaded->denseTanh = options_.denseActivation == "tanh";
      for (const auto& file : options_.denseStack) {
        const int64_t in = (loaded->denseStack.empty() ? loaded->dense : loaded->denseStack.back().linear)->weight.size(0);
        torch::nn::Linear linear = loadDense(file.path, in, "the previous Dense module's out_features");
        linear->to(loaded->device);
        loaded->denseStack.push_back({linear, file.activation == "tanh"});
      }
    }
    if (options_.head == "causal-lm") {
      loadLmHead(*loaded);
      if (!options_.scoreTokens.empty()) scoreFromLmHead(*loaded);
    }
    if (options_.head == "sequence-classification") {
      loadClassificationHead(*loaded, config);
    }
    if (options_.head == "masked-lm") {
      loaded->mlm = std::make_shared<MlmHead>(MlmHead::take(*loaded->model, config, options_.weightsPath, options_.newHead, options_.seed));
      loaded->mlm->to(loaded->device);
    }
    loaded_ = std::move(loaded);
  }
  void loadClassificationHead(LoadedEncoder& loaded, const nlohmann::json& config) {
    using namespace ::coltrast::config;
    TransformerEncoder& model = *loaded.model;
    const int64_t hidden = model.hiddenSize();
    // A decoder (the model with token embeddings an output layer can share) reads its last token; the others, their first.
    loaded.headKind = model.inputEmbeddings().defined() ? HeadKind::Decoder : headKindOf(model.modelType());
    const HeadKind kind = loaded.headKind;
    const HeadNames names = headNames(kind, model.prefix());
    if (kind == HeadKind::Decoder) {
      // Hugging Face's *ForSequenceClassification on a decoder: `score` (no bias) on the last real token, no dropout.
      loaded.classifierDropout = 0;
      if (options_.newHead) {
        const double std = config.contains("initializer_range") && config["initializer_range"].is_number() ? config["initializer_range"].get<double>() : 0.02;
        auto generator = at::detail::createCPUGenerator(options_.seed);
        model.takeKept("score.weight");
        loaded.classifier = newLinear(hidden, options_.numLabels, std, generator, /*bias=*/false);
      } else {
        loaded.classifier = takeLinear(model, "score", hidden, options_.numLabels, false, options_.weightsPath, /*withBias=*/false);
      }
      loaded.classifier->to(loaded.device);
      return;
    }
    const bool modern = kind == HeadKind::ModernBert;
    const bool denseBias = !modern || boolOr(config, "classifier_bias", false);
    if (modern) {
      loaded.headActivation = stringOr(config, "classifier_activation", "gelu");
      checkActivation(loaded.headActivation);
      const std::string pooling = stringOr(config, "classifier_pooling", "cls");
      if (pooling != "cls" && pooling != "mean") throw unsupportedError("unsupported classifier_pooling " + pooling + " (coltrast runs cls and mean)");
      loaded.meanPoolHead = pooling == "mean";
    } else {
      // ELECTRA's head is RoBERTa's with GELU in place of tanh.
      loaded.headActivation = kind == HeadKind::DistilBert ? "relu"
                              : kind == HeadKind::Deberta  ? stringOr(config, "pooler_hidden_act", "gelu")
                              : model.modelType() == "electra" ? "gelu"
                                                               : "tanh";
      checkActivation(loaded.headActivation);
    }
    // BERT's pooler may be absent (a model saved without it reads [CLS] straight into the classifier).
    loaded.pooler = takeLinear(model, names.dense, hidden, hidden, /*optional=*/kind == HeadKind::Bert || options_.newHead, options_.weightsPath, denseBias);
    if (modern) {
      loaded.headNorm = takeNorm(model, names.norm, hidden, numberOr(config, "norm_eps", 1e-5), boolOr(config, "norm_bias", false), options_.newHead,
                                 options_.weightsPath);
    }
    if (options_.newHead) {
      const double std = config.contains("initializer_range") && config["initializer_range"].is_number() ? config["initializer_range"].get<double>() : 0.02;
      auto generator = at::detail::createCPUGenerator(options_.seed);
      // The head is new as a whole, but for BERT's pretrained pooler, which the base model holds.
      if (kind != HeadKind::Bert) loaded.pooler = nullptr;
      if (!loaded.pooler) {
        loaded.pooler = newLinear(hidden, hidden, std, generator, denseBias);
        if (!names.module.empty()) loaded.newHeadModules.push_back(names.module);
      }
      model.takeKept(names.out + ".weight");
      model.takeKept(names.out + ".bias");
      loaded.classifier = newLinear(hidden, options_.numLabels, std, generator);
    } else {
      loaded.classifier = takeLinear(model, names.out, hidden, options_.numLabels, false, options_.weightsPath);
    }
    if (loaded.pooler) loaded.pooler->to(loaded.device);
    if (loaded.headNorm) loaded.headNorm->to(loaded.device);
    loaded.classifier->to(loaded.device);
    const std::vector<const char*> dropoutKeys = kind == HeadKind::DistilBert ? std::vector<const char*>{"seq_classif_dropout"}
                                                 : modern                      ? std::vector<const char*>{"classifier_dropout"}
                                                 : kind == HeadKind::Deberta   ? std::vector<const char*>{"cls_dropout", "hidden_dropout_prob"}
                                                                               : std::vector<const char*>{"classifier_dropout", "hidden_dropout_prob"};
    loaded.classifierDropout = kind == HeadKind::DistilBert ? 0.2 : modern ? 0.0 : 0.1;
    for (const char* key : dropoutKeys) {
      if (config.contains(key) && config[key].is_number()) {
        loaded.classifierDropout = config[key].get<double>();
        break;
      }
    }
    loaded.inputDropout = kind == HeadKind::Roberta ? loaded.classifierDropout : kind == HeadKind::Deberta ? numberOr(config, "pooler_dropout", 0.0) : 0.0;
  }
  void loadLmHead(LoadedEncoder& loaded) {
    TransformerEncoder& model = *loaded.model;
    const torch::Tensor embeddings = model.inputEmbeddings();
    if (!embeddings.defined()) throw unsupportedError(model.modelType() + " is not a decoder: it has no language-model head to generate with");
    torch::Tensor weight = model.takeKept("lm_head.weight");
    if (options_.tieWordEmbeddings) {
      // Tied: transformers uses the embedding matrix whatever lm_head.weight the file holds, and saves none.
      loaded.tiedLmHead = true;
      return;
    }
    if (!weight.defined()) {
      throw modelFilesError(options_.weightsPath + " has no lm_head.weight and config.json's tie_word_embeddings is false: it is not a causal language model (*ForCausalLM)");
    }
    if (weight.sizes() != embeddings.sizes()) {
      throw modelFilesError(options_.weightsPath + ": lm_head.weight has shape " + c10::str(weight.sizes()) + ", expected " + c10::str(embeddings.sizes()) +
                            " (vocab_size, hidden_size)");
    }
    torch::nn::Linear head = linearFrom(weight, {});
    head->to(loaded.device, loaded.dtype);
    loaded.lmHead = head;
  }
  // LogitScore: the score of the last real token's state is its logit of scoreTokens[0] (minus that of scoreTokens[1]).
  void scoreFromLmHead(LoadedEncoder& loaded) {
    const int64_t vocabulary = (loaded.lmHead ? loaded.lmHead->weight : loaded.model->inputEmbeddings()).size(0);
    for (const int64_t id : options_.scoreTokens) {
      if (id < 0 || id >= vocabulary) {
        throw modelFilesError("LogitScore's token id " + std::to_string(id) + " is outside the model's vocabulary of " + std::to_string(vocabulary));
      }
    }
    loaded.scoreTokens = torch::tensor(options_.scoreTokens, torch::kInt64).to(loaded.device);
    loaded.headKind = HeadKind::Decoder;
    loaded.classifierDropout = 0;
  }

  Napi::Value result(Napi::Env env) override {
    auto holder = Napi::External<std::shared_ptr<LoadedEncoder>>::New(
        env, new std::shared_ptr<LoadedEncoder>(std::move(loaded_)),
        [](Napi::Env, std::shared_ptr<LoadedEncoder>* p) { delete p; });
    return constructor_.New({holder});
  }

 private:
  LoadOptions options_;
  Napi::FunctionReference constructor_;
  std::shared_ptr<LoadedEncoder> loaded_;
};

// One padded batch of token ids in, pooled vectors or the valid tokens' states out.
struct EmbedRequest {
  TokenBatch batch;
  bool tokens = false;  // output: 'tokens' (valid tokens of every row, concatenated) or 'pooled'
  bool scores = false;  // output: 'scores' (a cross-encoder's logits, [rows, labels])
  // output: 'sparse' (SPLADE over the masked-LM head: spladePool's options, and at most maxActiveDims non-zero
  // entries a row, the largest; 0: all of them).
  bool sparse = false;
  SpladeSettings splade;
  int64_t maxActiveDims = 0;
  std::string pooling;
  bool normalize = false;
  // 'tokens' output through the Dense module (a multi-vector model's token-level projection).
  bool projectTokens = false;
};

class EmbedWorker : public PromiseWorker {
 public:
  EmbedWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, EmbedRequest request)
      : PromiseWorker(env, encoder->device), encoder_(std::move(encoder)), request_(std::move(request)) {}

 protected:
  void compute() override {
    torch::NoGradGuard noGrad;
    const auto& r = request_;
    const auto& b = r.batch;
    auto ids = b.tensor(b.ids, encoder_->device), mask = b.tensor(b.mask, encoder_->device),
         types = b.tensor(b.types, encoder_->device);
    torch::Tensor states;
    {
      std::lock_guard<std::mutex> lock(encoder_->mutex);
      states = encoder_->model->forward(ids, mask, types);
    }
    const torch::Tensor selected = b.scored.empty() ? mask : b.tensor(b.scored, encoder_->device);
    torch::Tensor out;
    if (r.sparse) {
      sparse_ = sparseRows(spladePool(*encoder_->mlm, encoder_->model->tokenEmbeddings(), states, mask, r.splade));
      return;
    }
    if (r.scores) {
      out = encoder_->classify(states, mask);
    } else if (r.tokens) {
      out = states.to(torch::kFloat32).index({selected.to(torch::kBool)});  // [selected tokens, dim], row-major order
      if (r.projectTokens) out = encoder_->project(out);
    } else {
      out = encoder_->project(pool(states, selected, r.pooling));
    }
    if (r.normalize) out = torch::nn::functional::normalize(out, torch::nn::functional::NormalizeFuncOptions().dim(-1));
    output_ = out.to(torch::kCPU).contiguous();
  }
  Napi::Value result(Napi::Env env) override {
    if (request_.sparse) {
      auto out = Napi::Object::New(env);
      const auto copy = [&](const torch::Tensor& t, auto array) {
        if (t.numel() > 0) std::memcpy(array.Data(), t.data_ptr(), t.numel() * t.element_size());  // none: no valid pointer
        return array;
      };
      out.Set("counts", copy(sparse_.counts, Napi::Int32Array::New(env, sparse_.counts.numel())));
      out.Set("indices", copy(sparse_.indices, Napi::Int32Array::New(env, sparse_.indices.numel())));
      out.Set("values", copy(sparse_.values, Napi::Float32Array::New(env, sparse_.values.numel())));
      return out;
    }
    auto array = Napi::Float32Array::New(env, static_cast<size_t>(output_.numel()));
    if (output_.numel() > 0) std::memcpy(array.Data(), output_.data_ptr<float>(), output_.numel() * sizeof(float));
    return array;
  }

 private:
  // Each row's non-zero entries, by index: int32 counts [rows], int32 indices and float32 values [non-zeros], on the CPU.
  struct SparseRows {
    torch::Tensor counts, indices, values;
  };
  SparseRows sparseRows(torch::Tensor pooled) const {
    pooled = pooled.to(torch::kCPU).contiguous();
    const int64_t k = request_.maxActiveDims;
    if (k > 0 && k < pooled.size(1)) {
      // The k largest of each row kept (sentence-transformers' select_max_active_dims: by magnitude; these are >= 0).
      const torch::Tensor top = std::get<1>(pooled.abs().topk(k, 1));
      pooled = torch::zeros_like(pooled).scatter_(1, top, pooled.gather(1, top));
    }
    const torch::Tensor at = pooled.nonzero();  // [non-zeros, 2], row by row, indices rising
    const torch::Tensor rowOf = at.select(1, 0), column = at.select(1, 1);
    return {torch::bincount(rowOf, {}, pooled.size(0)).to(torch::kInt32).contiguous(), column.to(torch::kInt32).contiguous(),
            pooled.index({rowOf, column}).contiguous()};
  }

  std::shared_ptr<LoadedEncoder> encoder_;
  EmbedRequest request_;
  torch::Tensor output_;
  SparseRows sparse_;
};

class SaveWorker : public PromiseWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, std::string path, std::string dtype, std::string densePath,
             std::vector<std::string> stackPaths)
      : PromiseWorker(env, encoder->device),
        encoder_(std::move(encoder)),
        path_(std::move(path)),
        dtype_(std::move(dtype)),
        densePath_(std::move(densePath)),
        stackPaths_(std::move(stackPaths)) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(encoder_->mutex);
    const auto dtype = parseDtype(dtype_);
    if (encoder_->causalLm()) {
      // As Hugging Face's *ForCausalLM saves: the base model under "model.", then lm_head unless it is tied (a
      // LogitScore reranker's score is made from it again at load).
      auto weights = encoder_->model->weightsForSaving(dtype, /*prefixed=*/true);
      if (encoder_->lmHead) weights.emplace_back("lm_head.weight", encoder_->lmHead->weight.detach().to(torch::kCPU, dtype));
      writeSafetensors(path_, weights, {{"format", "pt"}});
      return;
    }
    if (encoder_->mlm) {
      // As Hugging Face's *ForMaskedLM saves: the base model under its prefix, then the head.
      auto weights = encoder_->model->weightsForSaving(dtype, /*prefixed=*/true);
      for (auto& item : encoder_->mlm->tensors(dtype)) weights.push_back(std::move(item));
      writeSafetensors(path_, weights, {{"format", "pt"}});
      return;
    }
    if (encoder_->classifier) {
      // As Hugging Face's *ForSequenceClassification saves: the base model under its prefix, then the head.
      auto weights = encoder_->model->weightsForSaving(dtype, /*prefixed=*/true);
      for (const auto& [name, tensor] : encoder_->headTensors()) weights.emplace_back(name, tensor.detach().to(torch::kCPU, dtype));
      writeSafetensors(path_, weights, {{"format", "pt"}});
      return;
    }
    if (stackPaths_.size() != encoder_->denseStack.size()) {
      throw invalidArgument("saveWeights: " + std::to_string(encoder_->denseStack.size()) + " Dense modules follow the first, and " +
                            std::to_string(stackPaths_.size()) + " files were given for them");
    }
    writeSafetensors(path_, encoder_->model->weightsForSaving(dtype), {{"format", "pt"}});
    // Named as sentence-transformers' Dense module names them.
    const auto writeDense = [&](const torch::nn::Linear& dense, const std::string& path) {
      std::vector<std::pair<std::string, torch::Tensor>> head{{"linear.weight", dense->weight.detach().to(torch::kCPU, dtype)}};
      if (dense->bias.defined()) head.emplace_back("linear.bias", dense->bias.detach().to(torch::kCPU, dtype));
      writeSafetensors(path, head, {{"format", "pt"}});
    };
    if (encoder_->dense && !densePath_.empty()) writeDense(encoder_->dense, densePath_);
    for (size_t i = 0; i < stackPaths_.size(); ++i) writeDense(encoder_->denseStack[i].linear, stackPaths_[i]);
  }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<LoadedEncoder> encoder_;
  std::string path_, dtype_, densePath_;
  std::vector<std::string> stackPaths_;
};

}  // namespace

torch::Tensor LoadedEncoder::project(const torch::Tensor& pooled) const {
  if (!dense) return pooled;
  torch::Tensor out = torch::nn::functional::linear(pooled, dense->weight, dense->bias);
  if (denseTanh) out = torch::tanh(out);
  for (const auto& layer : denseStack) {
    out = torch::nn::functional::linear(out, layer.linear->weight, layer.linear->bias);
    if (layer.tanh) out = torch::tanh(out);
  }
  return out;
}

torch::Tensor LoadedEncoder::classify(const torch::Tensor& states, const torch::Tensor& mask, bool training) const {
  namespace F = torch::nn::functional;
  torch::Tensor x;
  if (headKind == HeadKind::Decoder) {
    // The last real token's state (rows are right-padded): the one that has seen the whole text.
    const torch::Tensor last = mask.to(torch::kInt64).sum(1) - 1;
    x = states.index({torch::arange(states.size(0), last.options()), last}).to(torch::kFloat32);
  } else if (meanPoolHead) {
    // ModernBERT's classifier_pooling "mean": over the attended tokens.
    const torch::Tensor m = mask.to(torch::kFloat32).unsqueeze(-1);
    x = (states.to(torch::kFloat32) * m).sum(1) / m.sum(1);
  } else {
    x = states.select(1, 0).to(torch::kFloat32);  // the first token's state ([CLS], <s>)
  }
  const auto drop = [&](const torch::Tensor& t, double p) {
    return training && p > 0 ? F::dropout(t, F::DropoutFuncOptions().p(p).training(true)) : t;
  };
  if (scoreTokens.defined()) {
    // LogitScore: the logits of its tokens (float32 rows of the output layer), the true one's minus the false one's.
    const torch::Tensor rows = (lmHead ? lmHead->weight : model->inputEmbeddings()).index_select(0, scoreTokens).to(torch::kFloat32);
    const torch::Tensor logits = softcapped(F::linear(x, rows));
    return scoreTokens.size(0) == 2 ? (logits.select(1, 0) - logits.select(1, 1)).unsqueeze(1) : logits;
  }
  x = drop(x, inputDropout);
  if (pooler) x = activate(F::linear(x, pooler->weight, pooler->bias), headActivation);
  if (headNorm) x = headNorm->forward(x);
  return F::linear(drop(x, classifierDropout), classifier->weight, classifier->bias);
}

torch::Tensor LoadedEncoder::logits(const torch::Tensor& states) const {
  const torch::Tensor weight = lmHead ? lmHead->weight : model->inputEmbeddings();
  return softcapped(torch::nn::functional::linear(states, weight).to(torch::kFloat32));
}

torch::Tensor LoadedEncoder::softcapped(const torch::Tensor& logits) const {
  const double cap = model->finalLogitSoftcap();
  return cap > 0 ? torch::tanh(logits / cap) * cap : logits;
}

std::vector<torch::Tensor> LoadedEncoder::parameters() const {
  std::vector<torch::Tensor> params = model->parameters();
  for (const auto& head : {dense, pooler, classifier, lmHead}) {
    if (!head) continue;
    for (auto& p : head->parameters()) params.push_back(p);
  }
  if (headNorm) {
    for (auto& p : headNorm->parameters()) params.push_back(p);
  }
  for (const auto& layer : denseStack)
    for (auto& p : layer.linear->parameters()) params.push_back(p);
  if (mlm) {
    for (auto& p : mlm->parameters()) params.push_back(p);
  }
  return params;
}

std::vector<std::pair<std::string, torch::Tensor>> LoadedEncoder::headTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (!classifier) return out;
  const HeadNames names = headNames(headKind, model->prefix());
  const auto add = [&](const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias) {
    out.emplace_back(name + ".weight", weight);
    if (bias.defined()) out.emplace_back(name + ".bias", bias);
  };
  if (pooler) add(names.savedDense, pooler->weight, pooler->bias);
  if (headNorm) add(names.norm, headNorm->weight, headNorm->bias);
  add(names.out, classifier->weight, classifier->bias);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LoadedEncoder::headTensorsMatching(const std::vector<std::string>& modules) const {
  if (modules.empty()) return {};
  std::string list;
  for (const auto& m : modules) list += (list.empty() ? "" : ", ") + m;
  if (!classifier) {
    throw invalidArgument("modules_to_save (" + list + ") trains a classification head beside the adapters, and this model has none: it is an adapter for a cross-encoder");
  }
  // The module of `tensor` that one of `modules` matches (its path ends with the name), or "".
  const auto matched = [&](const std::string& tensor) -> std::string {
    for (size_t dot = tensor.find('.'); dot != std::string::npos; dot = tensor.find('.', dot + 1)) {
      const std::string path = tensor.substr(0, dot);
      for (const auto& m : modules)
        if (path.size() >= m.size() && path.compare(path.size() - m.size(), m.size(), m) == 0) return path;
    }
    return "";
  };
  for (const auto& item : model->named_parameters(true)) {
    const std::string path = matched(model->prefix() + item.key());
    if (!path.empty()) {
      throw unsupportedError("modules_to_save (" + list + ") names " + path + ", a module of the base model; coltrast trains a cross-encoder's head beside LoRA adapters, not whole modules of the base model");
    }
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& item : headTensors())
    if (!matched(item.first).empty()) out.push_back(std::move(item));
  return out;
}

Napi::Function EncoderWrap::define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeEncoder",
                                   {
                                       StaticMethod<&EncoderWrap::load>("load"),
                                       InstanceMethod<&EncoderWrap::embed>("embed"),
                                       InstanceMethod<&EncoderWrap::saveWeights>("saveWeights"),
                                       InstanceMethod<&EncoderWrap::addProjection>("addProjection"),
                                       InstanceMethod<&EncoderWrap::addLora>("addLora"),
                                       InstanceMethod<&EncoderWrap::quantizeInt8>("quantizeInt8"),
                                       InstanceMethod<&EncoderWrap::loadLora>("loadLora"),
                                       InstanceMethod<&EncoderWrap::saveLora>("saveLora"),
                                       InstanceMethod<&EncoderWrap::info>("info"),
                                       InstanceMethod<&EncoderWrap::logLikelihood>("logLikelihood"),
                                       InstanceMethod<&EncoderWrap::generate>("generate"),
                                       InstanceMethod<&EncoderWrap::dispose>("dispose"),
                                   });
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(cls)));
  return cls;
}

EncoderWrap::EncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EncoderWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "NativeEncoder cannot be constructed directly; use NativeEncoder.load()");
  // Moved, not copied: the External lives until V8 collects it, and a copy there would keep the model's
  // memory after dispose().
  encoder_ = std::move(*info[0].As<Napi::External<std::shared_ptr<LoadedEncoder>>>().Data());
}

std::shared_ptr<LoadedEncoder> EncoderWrap::shared(const Napi::Object& object) {
  Napi::Env env = object.Env();
  auto constructor = env.GetInstanceData<Napi::FunctionReference>()->Value();
  if (!object.InstanceOf(constructor)) throw invalidArgument("expected a NativeEncoder");
  return Unwrap(object)->live(env);
}

std::shared_ptr<LoadedEncoder> EncoderWrap::live(Napi::Env env) const {
  if (!encoder_) throw jsError(env, {"DISPOSED", "this encoder was disposed; load it again"});
  return encoder_;
}

Napi::Value EncoderWrap::load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = info[0].As<Napi::Object>();
  LoadOptions options{o.Get("weightsPath").As<Napi::String>(), o.Get("config").As<Napi::String>(),
                      o.Get("device").As<Napi::String>(), o.Get("dtype").As<Napi::String>()};
  try {
    options.denseWeightsPath = stringOr(o, "denseWeightsPath", "");
    options.denseActivation = stringOr(o, "denseActivation", "identity");
    if (o.Has("denseStack") && !o.Get("denseStack").IsUndefined()) {
      if (!o.Get("denseStack").IsArray()) throw invalidArgument("denseStack must be an array of { weightsPath, activation }");
      auto stack = o.Get("denseStack").As<Napi::Array>();
      for (uint32_t i = 0; i < stack.Length(); ++i) {
        if (!stack.Get(i).IsObject()) throw invalidArgument("denseStack must be an array of { weightsPath, activation }");
        auto layer = stack.Get(i).As<Napi::Object>();
        options.denseStack.push_back({stringOr(layer, "weightsPath", ""), stringOr(layer, "activation", "identity")});
      }
      if (!options.denseStack.empty() && options.denseWeightsPath.empty()) throw invalidArgument("denseStack follows a Dense module: denseWeightsPath is missing");
    }
    options.head = stringOr(o, "head", "");
    options.numLabels = integerOr(o, "numLabels", 0, INT32_MAX, 0);
    options.newHead = boolOr(o, "newHead", false);
    options.seed = static_cast<uint64_t>(integerOr(o, "seed", 0, kMaxSafeInteger, 42));
    options.tieWordEmbeddings = boolOr(o, "tieWordEmbeddings", false);
    options.quantizeInt8 = boolOr(o, "quantizeInt8", false);
    if (o.Has("scoreTokens") && !o.Get("scoreTokens").IsUndefined()) {
      if (!o.Get("scoreTokens").IsArray()) throw invalidArgument("scoreTokens must be an array of one or two token ids");
      auto tokens = o.Get("scoreTokens").As<Napi::Array>();
      for (uint32_t i = 0; i < tokens.Length(); ++i) {
        options.scoreTokens.push_back(integerIn(tokens.Get(i), "scoreTokens[" + std::to_string(i) + "] (a token id)", 0, INT32_MAX));
      }
      if (options.scoreTokens.empty() || options.scoreTokens.size() > 2 || options.head != "causal-lm") {
        throw invalidArgument("scoreTokens (one or two token ids) goes with the causal-lm head");
      }
    }
    options.weightShards = stringsOr(o.Get("weightShards"), "weightShards must be an array of file paths");
    if (!options.head.empty() && options.head != "sequence-classification" && options.head != "causal-lm" && options.head != "masked-lm") {
      throw invalidArgument("unknown head " + options.head);
    }
    if (options.head == "sequence-classification" && options.numLabels < 1) throw invalidArgument("numLabels must be a positive integer");
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  auto* worker = new LoadWorker(env, std::move(options), env.GetInstanceData<Napi::FunctionReference>()->Value());
  return worker->start();
}

Napi::Value EncoderWrap::embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  auto o = info[0].As<Napi::Object>();
  EmbedRequest r;
  try {
    r.batch = readTokenBatch(o, "");
    checkTokens(r.batch, *encoder->model, "");
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  const std::string output = o.Get("output").As<Napi::String>();
  if (output != "pooled" && output != "tokens" && output != "scores" && output != "sparse") {
    throw jsError(env, {"INVALID_ARGUMENT", "output must be 'pooled', 'tokens', 'scores' or 'sparse', got '" + output + "'"});
  }
  r.tokens = output == "tokens";
  r.scores = output == "scores";
  r.sparse = output == "sparse";
  if (r.scores && !encoder->scores()) throw jsError(env, {"INVALID_ARGUMENT", "this model has no classifier head: load it as a CrossEncoder"});
  if (r.sparse) {
    if (!encoder->mlm) throw jsError(env, {"INVALID_ARGUMENT", "this model has no masked-language-model head: load it as a SparseEncoder"});
    try {
      r.splade = spladeSettings(stringOr(o, "spladePooling", "max"), stringOr(o, "spladeActivation", "relu"));
      r.maxActiveDims = integerOr(o, "maxActiveDims", 0, INT32_MAX, 0);
    } catch (const Error& e) {
      throw jsError(env, {e.code(), e.what()});
    }
  }
  if (!r.sparse) {
    r.pooling = o.Get("pooling").As<Napi::String>();
    r.normalize = o.Get("normalize").As<Napi::Boolean>();
  }
  r.projectTokens = o.Has("projectTokens") && o.Get("projectTokens").ToBoolean();
  return (new EmbedWorker(env, std::move(encoder), std::move(r)))->start();
}

// saveWeights(path, dtype, densePath?, stackPaths?): the model's weights, the projection head's when it has one, and
// those of the Dense modules after it, one file each.
Napi::Value EncoderWrap::saveWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string densePath = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  std::vector<std::string> stackPaths;
  try {
    stackPaths = stringsOr(info[3], "denseStackFiles must be an array of file paths");
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  return (new SaveWorker(env, live(env), info[0].As<Napi::String>(), info[1].As<Napi::String>(), densePath, std::move(stackPaths)))->start();
}

// addProjection({ outFeatures, tanh, seed, bias }): a new, randomly initialized projection head (PyTorch's
// nn.Linear initialization: uniform in ±1/sqrt(in_features), from a generator of its own so the draw is
// seeded; with a bias unless `bias` is false, as for a multi-vector model's token projection). On a worker
// thread: building the module waits for the global generator (runtime.h), which a training step elsewhere
// may hold.
class AddProjectionWorker : public PromiseWorker {
 public:
  AddProjectionWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, int64_t out, bool tanh, uint64_t seed, bool bias)
      : PromiseWorker(env, encoder->device), encoder_(std::move(encoder)), out_(out), tanh_(tanh), seed_(seed), bias_(bias) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(encoder_->mutex);
    if (encoder_->dense) throw invalidArgument("this model already has a projection head");
    const int64_t in = encoder_->model->hiddenSize();
    auto generator = at::detail::createCPUGenerator(seed_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    // The weight drawn before the bias, from the seeded generator, as before.
    const torch::Tensor weight = torch::empty({out_, in}).uniform_(-bound, bound, generator);
    torch::nn::Linear dense = linearFrom(weight, bias_ ? torch::empty({out_}).uniform_(-bound, bound, generator) : torch::Tensor());
    dense->to(encoder_->device);
    encoder_->dense = dense;
    encoder_->denseTanh = tanh_;
  }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<LoadedEncoder> encoder_;
  int64_t out_;
  bool tanh_;
  uint64_t seed_;
  bool bias_;
};

Napi::Value EncoderWrap::addProjection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  try {
    auto o = info[0].As<Napi::Object>();
    if (o.Get("outFeatures").IsUndefined()) throw invalidArgument("outFeatures must be a positive integer");
    const int64_t out = integerOr(o, "outFeatures", 1, INT32_MAX, 0);
    return (new AddProjectionWorker(env, encoder, out, boolOr(o, "tanh", false), static_cast<uint64_t>(integerOr(o, "seed", 0, kMaxSafeInteger, 42)),
                                    boolOr(o, "bias", true)))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// Work on a model under its mutex, on the thread its device's work runs on, resolving to a number (or undefined).
class ModelTaskWorker : public PromiseWorker {
 public:
  ModelTaskWorker(Napi::Env env, std::shared_ptr<LoadedEncoder> encoder, std::function<double(LoadedEncoder&)> task, bool returnsNumber)
      : PromiseWorker(env, encoder->device), encoder_(std::move(encoder)), task_(std::move(task)), returnsNumber_(returnsNumber) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(encoder_->mutex);
    value_ = task_(*encoder_);
  }
  Napi::Value result(Napi::Env env) override { return returnsNumber_ ? Napi::Number::New(env, value_) : env.Undefined(); }

 private:
  std::shared_ptr<LoadedEncoder> encoder_;
  std::function<double(LoadedEncoder&)> task_;
  bool returnsNumber_;
  double value_ = 0;
};

// LoRA adapters go on embedding models' and cross-encoders' projections (the trainer then trains nothing else, but for
// a cross-encoder's head modules in modules_to_save).
static void checkTakesLora(const LoadedEncoder& encoder) {
  // A causal LM takes them as a LogitScore reranker; as a generator, not.
  if (encoder.causalLm() && !encoder.scoreTokens.defined()) throw invalidArgument("LoRA adapters are for embedding models and cross-encoders here, not generators");
}

// addLora({ targets, rank, scale, dropout, seed, modulesToSave }): new LoRA adapters on the model's projections named
// in `targets` (TransformerEncoder::addLora); resolves to their count. With them only the adapters train, and a
// cross-encoder's head modules that `modulesToSave` names (PEFT's modules_to_save); an embedding model's Dense head
// stays as it is.
Napi::Value EncoderWrap::addLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  try {
    auto o = info[0].As<Napi::Object>();
    if (!o.Get("targets").IsArray()) throw invalidArgument("targets must be an array of projection names");
    const std::vector<std::string> targets = stringsOr(o.Get("targets"), "targets must be an array of projection names");
    const std::vector<std::string> modulesToSave = stringsOr(o.Get("modulesToSave"), "modulesToSave must be an array of module names");
    const int64_t rank = integerOr(o, "rank", 1, INT32_MAX, 8);
    const double scale = numberOr(o, "scale", 1.0), dropout = numberOr(o, "dropout", 0.0);
    const auto seed = static_cast<uint64_t>(integerOr(o, "seed", 0, kMaxSafeInteger, 42));
    checkTakesLora(*encoder);
    return (new ModelTaskWorker(
                env, encoder,
                [targets, rank, scale, dropout, seed, modulesToSave](LoadedEncoder& e) {
                  e.headTensorsMatching(modulesToSave);  // checks the names
                  const auto count = e.model->addLora(targets, rank, scale, dropout, seed);
                  e.loraModulesToSave = modulesToSave;
                  return static_cast<double>(count);
                },
                true))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// quantizeInt8(): the transformer's projections quantized to int8 for CPU inference (TransformerEncoder::quantizeInt8);
// resolves to their count. The heads (Dense, classifier) stay float32; training such a model is refused.
Napi::Value EncoderWrap::quantizeInt8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  try {
    if (encoder->device.type() != torch::kCPU || encoder->dtype != torch::kFloat32) throw invalidArgument("int8 quantization is for float32 models on the CPU");
    return (new ModelTaskWorker(env, encoder, [](LoadedEncoder& e) { return static_cast<double>(e.model->quantizeInt8()); }, true))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// loadLora(path, { scale, dropout, modulesToSave }): the LoRA adapters of a PEFT adapter file (adapter_model.safetensors),
// and the cross-encoder head modules `modulesToSave` names, which the file holds as PEFT saves them
// ("base_model.model.classifier.weight"); resolves to the adapters' count.
Napi::Value EncoderWrap::loadLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  try {
    const std::string path = info[0].As<Napi::String>();
    auto o = info[1].As<Napi::Object>();
    const double scale = numberOr(o, "scale", 1.0), dropout = numberOr(o, "dropout", 0.0);
    const std::vector<std::string> modulesToSave = stringsOr(o.Get("modulesToSave"), "modulesToSave must be an array of module names");
    checkTakesLora(*encoder);
    return (new ModelTaskWorker(
                env, encoder,
                [path, scale, dropout, modulesToSave](LoadedEncoder& e) {
                  WeightFiles file({path});
                  // Every head tensor read and checked before anything changes.
                  const auto head = e.headTensorsMatching(modulesToSave);
                  std::vector<torch::Tensor> values;
                  for (const auto& [name, tensor] : head) {
                    const std::string stored = PEFT_PREFIX + name;
                    if (!file.has(stored)) {
                      throw modelFilesError("adapter " + file.description() + " has no " + stored + ", which its adapter_config.json's modules_to_save says it trained");
                    }
                    torch::Tensor value = file.read(stored);
                    if (value.sizes() != tensor.sizes()) {
                      throw modelFilesError("adapter " + file.description() + ": " + stored + " has shape " + c10::str(value.sizes()) + ", the model's " + name + " " +
                                            c10::str(tensor.sizes()) + " (an adapter of another model?)");
                    }
                    values.push_back(value);
                  }
                  const auto count = e.model->loadLora(file, scale, dropout);
                  torch::NoGradGuard noGrad;
                  for (size_t i = 0; i < head.size(); ++i) head[i].second.copy_(values[i]);
                  e.loraModulesToSave = modulesToSave;
                  return static_cast<double>(count);
                },
                true))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// saveLora(path, dtype): the model's LoRA adapters as PEFT's adapter_model.safetensors, with a cross-encoder's head
// modules that train with them, named as a PeftModel of its *ForSequenceClassification (or, for a LogitScore reranker,
// its *ForCausalLM) saves them.
Napi::Value EncoderWrap::saveLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  const std::string path = info[0].As<Napi::String>(), dtype = info[1].As<Napi::String>();
  return (new ModelTaskWorker(
              env, encoder,
              [path, dtype](LoadedEncoder& e) {
                const auto type = parseDtype(dtype);
                // Under the task model's base prefix ("bert.", "model.") for a cross-encoder, as PEFT names them.
                auto weights = e.model->loraWeights(type, /*prefixed=*/e.scores());
                if (weights.empty()) throw invalidArgument("this model has no LoRA adapter to save");
                for (const auto& [name, tensor] : e.headTensorsMatching(e.loraModulesToSave)) weights.emplace_back(PEFT_PREFIX + name, tensor.detach().to(torch::kCPU, type));
                writeSafetensors(path, weights, {{"format", "pt"}});
                return 0.0;
              },
              false))
      ->start();
}

Napi::Value EncoderWrap::info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto encoder = live(env);
  int64_t parameters = 0, parameterBytes = 0;
  // Bytes by storage, each counted once (a quantized projection's weight is one broadcast zero: its float memory given back).
  std::set<const void*> storages;
  for (const auto& p : encoder->parameters()) {
    parameters += p.numel();
    if (storages.insert(p.storage().unsafeGetStorageImpl()).second) parameterBytes += static_cast<int64_t>(p.storage().nbytes());
  }
  auto out = Napi::Object::New(env);
  out.Set("modelType", encoder->model->modelType());
  out.Set("hiddenSize", static_cast<double>(encoder->model->hiddenSize()));
  out.Set("maxPositions", static_cast<double>(encoder->model->maxPositions()));
  out.Set("layers", static_cast<double>(encoder->model->layerCount()));
  out.Set("numParameters", static_cast<double>(parameters));
  out.Set("parameterBytes", static_cast<double>(parameterBytes));
  const torch::nn::Linear& last = encoder->denseStack.empty() ? encoder->dense : encoder->denseStack.back().linear;
  out.Set("outputSize", static_cast<double>(last ? last->weight.size(0) : encoder->model->hiddenSize()));
  out.Set("numLabels", static_cast<double>(encoder->classifier ? encoder->classifier->weight.size(0) : encoder->scoreTokens.defined() ? 1 : 0));
  auto newHead = Napi::Array::New(env, encoder->newHeadModules.size());
  for (uint32_t i = 0; i < encoder->newHeadModules.size(); ++i) newHead.Set(i, encoder->newHeadModules[i]);
  out.Set("newHeadModules", newHead);
  out.Set("causalLm", encoder->causalLm());
  const torch::Tensor embeddings = encoder->model->inputEmbeddings();
  out.Set("vocabSize", static_cast<double>(embeddings.defined() ? embeddings.size(0) : 0));
  out.Set("device", encoder->device.str());
  out.Set("dtype", std::string(c10::toString(encoder->dtype)));
  out.Set("quantizedInt8", encoder->model->quantizedInt8());
  // A sparse encoder's width: its vocabulary (0 without a masked-LM head).
  out.Set("sparseDimension", static_cast<double>(encoder->mlm ? encoder->model->tokenEmbeddings().size(0) : 0));
  return out;
}

Napi::Value EncoderWrap::logLikelihood(const Napi::CallbackInfo& info) {
  return logLikelihoodCall(info.Env(), live(info.Env()), info[0].As<Napi::Object>());
}

Napi::Value EncoderWrap::generate(const Napi::CallbackInfo& info) {
  return generateCall(info.Env(), live(info.Env()), info[0].As<Napi::Object>());
}

void EncoderWrap::dispose(const Napi::CallbackInfo&) { encoder_.reset(); }

}  // namespace coltrast
