// The JS class `NativeTrainer`: one optimizer step of ColTrast fine-tuning per call, entirely in native
// code on a worker thread: forward of the queries and the documents, the weighted sum of the in-batch
// contrastive loss on pooled, L2-normalized vectors and the late-interaction loss on L2-normalized token
// states (both through the fused ops of native/ops), backward, gradient clipping and an AdamW update.
// TypeScript (lib/train.ts) owns data, batching, the learning-rate schedule and everything per epoch.
// With mixed precision (train/precision.h) the forward pass runs under autocast and, for float16, the
// loss is scaled for backward and the step skipped when the gradients overflowed.
#include "train/trainer_wrap.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>
#include <type_traits>

#include <ATen/CPUGeneratorImpl.h>

#include "causal_lm.h"
#include "encoder_wrap.h"
#include "error.h"
#include "ops/autograd.h"
#include "train/precision.h"
#include "napi_args.h"
#include "pooling.h"
#include "safetensors.h"
#include "torch_version.h"
#include "promise_worker.h"
#include "runtime.h"

namespace coltrast {
namespace {

namespace F = torch::nn::functional;

struct StepOptions {
  std::string pooling = "mean";
  double contrastiveWeight = 0.5, lateInteractionWeight = 0.5, temperature = 0.05;
  bool symmetric = false, bce = false;
  double learningRate = 2e-5, maxGradNorm = 1.0, lossScale = 1.0;
  bool apply = true;  // false: accumulate gradients only (gradient accumulation)
  // > 0: encode the batch this many texts at a time (gradient caching, below); 0: all at once.
  int64_t miniBatchSize = 0;
  // With miniBatchSize: compare each mini-batch's recomputed output with its first pass (a diagnostic).
  bool verifyMiniBatches = false;
  // A multi-vector model: its token states go through the Dense module (the vectors it scores).
  bool projectTokens = false;
  // A cross-encoder: the batch is every query read with every document (crossEncoderLoss below).
  bool crossEncoder = false;
  bool crossEncoderBce = false;   // the pairwise BCE on logits instead of the listwise cross-entropy
  bool sigmoidScores = true;      // cross-entropy over sigmoid(logit) * scale (the model's activation), else logit * scale
  double scale = 10.0;
  int64_t documentsPerQuery = 0;
  // Distillation from a teacher's scores (distillationLoss below): for each query, K candidates (indices into
  // the batch's documents, its positive first, -1 for none) and the teacher's score of each, [B, K].
  double distillationWeight = 0;
  bool distillationKl = false;  // KL divergence of the score distributions, else MarginMSE
  double teacherTemperature = 1.0;  // the teacher's scores are divided by it
  torch::Tensor teacherCandidates, teacherScores;
  // A guide's false negatives (GISTEmbed), true = left out of the query's softmax: documents [B, N]; when
  // defined, the other queries [B, B] and the other positives [B, B] as extra negatives of the contrastive loss.
  torch::Tensor guideDocuments, guideQueries, guidePositives;
  // ContextFlow's joint retrieval-augmented generation loss (ragLoss below), `documentsPerQuery` retrieved
  // documents per query.
  bool rag = false;
  // Matryoshka representation learning (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss): the
  // pooled losses (contrastive, pooled distillation) at each of these widths, on the pooled vectors' first
  // `dimension` entries L2-normalized again, times its weight, summed. Empty: the full vectors, weight 1.
  std::vector<std::pair<int64_t, double>> matryoshka;
  // A sparse encoder (SPLADE; sentence-transformers' SpladeLoss): the pooled vectors are spladePool's (its pooling
  // and activation), unnormalized, the contrastive loss scores their dot products / temperature (SparseMultipleNegatives-
  // RankingLoss at scale 1 / temperature), and the FLOPS regularizer, sum over the vocabulary of the squared mean
  // weight, is added for the queries and for the documents, each times its weight.
  bool sparse = false;
  SpladeSettings splade;
  double queryRegularizer = 0, documentRegularizer = 0;
  // Masked-language-model training (BERT's objective; transformers' *ForMaskedLM loss): the batch's inputs, some
  // tokens masked, and for each position the token to predict there, -100 where none is (the labels [B, S], int64).
  bool mlm = false;
  torch::Tensor mlmLabels;
  // Labeled pairs (sentence-transformers' CoSENTLoss, AnglELoss, CosineSimilarityLoss, ContrastiveLoss and
  // OnlineContrastiveLoss; pairLoss below): query i and document i are a pair, pairLabels[i] its label (a similarity
  // score, or 1 similar / 0 not), float32 [B]. The pooled vectors' pair loss is the step's whole loss.
  enum class PairLoss { None, CoSent, Angle, Cosine, Contrastive, OnlineContrastive };
  PairLoss pairLoss = PairLoss::None;
  double pairScale = 20.0;   // CoSENT and AnglE: the similarities' scale (an inverse temperature)
  double pairMargin = 0.5;   // the contrastive losses: dissimilar pairs are pushed to at least this cosine distance
  torch::Tensor pairLabels;
  // Triplets (sentence-transformers' TripletLoss): query i, its positive (document i) and its negative (document
  // tripletNegatives[i], int64 [B]); mean of relu(d(q, p) - d(q, n) + margin) over the queries, d the distance between
  // pooled vectors, L2-normalized where the model normalizes its vectors (always for cosine).
  enum class TripletDistance { None, Euclidean, Cosine, Manhattan };
  TripletDistance tripletDistance = TripletDistance::None;
  double tripletMargin = 5.0;
  torch::Tensor tripletNegatives;
  // Embedding distillation (sentence-transformers' MSELoss, as its multilingual knowledge distillation uses it): the
  // teacher's vectors of the batch's queries (source sentences), float32 [B, width]; the mean squared error of the
  // student's pooled vectors of the queries and of their documents (document i: query i's translation; or no documents,
  // sentences alone) against them is the step's whole loss.
  torch::Tensor targetVectors;
  // The model's vectors are L2-normalized (a Normalize module): the triplet distances and the embedding distillation
  // see its pooled vectors so, as the model gives them.
  bool normalizedVectors = false;
  // Texts with class labels (sentence-transformers' BatchAllTripletLoss, BatchHardTripletLoss, BatchSemiHardTripletLoss
  // and BatchHardSoftMarginTripletLoss; batchTripletLoss below): the batch's texts are its queries, with no documents,
  // classLabels[i] (int64 [B]) query i's class; the triplets are formed within the batch, by the labels, on the
  // euclidean or cosine distances of the pooled vectors as the model gives them. The step's whole loss.
  enum class BatchTriplet { None, All, Hard, SemiHard, HardSoftMargin };
  BatchTriplet batchTriplet = BatchTriplet::None;
  bool batchTripletCosine = false;
  double batchTripletMargin = 5.0;
  torch::Tensor classLabels;
  // Adaptive layers (Li et al. 2024, 2D Matryoshka sentence embeddings; sentence-transformers' AdaptiveLayerLoss, and
  // with Matryoshka widths its Matryoshka2dLoss): the pooled losses also on the vectors the model gives after fewer
  // layers: for each (layer, weight), transformers' hidden_states[layer] (0: the embeddings' output, up to the layers
  // less one) pooled and through the projection head, its loss times the weight; the final layer's loss times
  // lastLayerWeight. With klTemperature > 0 each such layer's vectors, as the model gives them, also fit the final
  // layer's (held fixed): the KL divergence of their softmax over the entries at that temperature, the mean over the
  // batch's texts, times klTemperature * klWeight.
  std::vector<std::pair<int64_t, double>> adaptiveLayers;
  double lastLayerWeight = 1.0, klWeight = 1.0, klTemperature = 0.3;
  // Global orthogonal regularization (Zhang et al. 2017; sentence-transformers' GlobalOrthogonalRegularizationLoss, as
  // EmbeddingGemma trains with it): for the queries' and the documents' pooled vectors each, the cosine similarities of
  // every two different rows, their mean squared (times gorMeanWeight) and relu(their second moment - 1 / width) (times
  // gorSecondMomentWeight); the two sides' terms averaged (or summed: gorSum) and added to the loss. 0 and 0: none.
  double gorMeanWeight = 0, gorSecondMomentWeight = 0;
  bool gorSum = false;
  // MegaBatchMarginLoss (Wieting and Gimpel 2018; sentence-transformers'): query i and document i a pair (no other
  // documents); each query's hardest negative is the most similar other query's document; the mean over the queries of
  // relu(positiveMargin - cos(q, its document)) + relu(cos(q, hardest negative) - negativeMargin). The step's whole loss.
  bool megaBatchMargin = false;
  double positiveMargin = 0.8, negativeMargin = 0.3;
};

// The adaptive layers of a step's arguments: adaptiveLayers: number[] (layer indices) and adaptiveLayerWeights: number[]
// of the same length, lastLayerWeight, klWeight and klTemperature.
void readAdaptiveLayers(const Napi::Object& o, StepOptions& s) {
  const Napi::Value layers = o.Get("adaptiveLayers");
  if (layers.IsUndefined()) return;
  const Napi::Value weights = o.Get("adaptiveLayerWeights");
  if (!layers.IsArray() || !weights.IsArray() || layers.As<Napi::Array>().Length() != weights.As<Napi::Array>().Length() ||
      layers.As<Napi::Array>().Length() == 0) {
    throw invalidArgument("adaptiveLayers and adaptiveLayerWeights must be arrays of the same, non-zero length");
  }
  const auto l = layers.As<Napi::Array>(), w = weights.As<Napi::Array>();
  for (uint32_t i = 0; i < l.Length(); ++i) {
    const double layer = l.Get(i).ToNumber().DoubleValue(), weight = w.Get(i).ToNumber().DoubleValue();
    if (!(layer >= 0 && layer <= INT32_MAX) || layer != std::floor(layer)) throw invalidArgument("adaptiveLayers must hold integers >= 0 (layer indices)");
    if (!(weight >= 0) || !std::isfinite(weight)) throw invalidArgument("adaptiveLayerWeights must hold finite numbers >= 0");
    s.adaptiveLayers.emplace_back(static_cast<int64_t>(layer), weight);
  }
  s.lastLayerWeight = numberOr(o, "lastLayerWeight", s.lastLayerWeight);
  s.klWeight = numberOr(o, "klWeight", s.klWeight);
  s.klTemperature = numberOr(o, "klTemperature", s.klTemperature);
  if (!(s.lastLayerWeight >= 0 && std::isfinite(s.lastLayerWeight)) || !(s.klWeight >= 0 && std::isfinite(s.klWeight)) ||
      !(s.klTemperature >= 0 && std::isfinite(s.klTemperature))) {
    throw invalidArgument("lastLayerWeight, klWeight and klTemperature must be finite numbers >= 0 (klTemperature 0: no KL divergence)");
  }
  if (s.projectTokens || s.crossEncoder || s.sparse || s.lateInteractionWeight > 0 || s.miniBatchSize > 0) {
    throw invalidArgument("adaptive layers train a single-vector model's pooled vectors: not with late interaction, mini-batches (gradient caching), a multi-vector model, a cross-encoder or a sparse encoder");
  }
}

// The Matryoshka widths and weights of a step's arguments: matryoshkaDimensions: number[] and
// matryoshkaWeights: number[] of the same length.
void readMatryoshka(const Napi::Object& o, StepOptions& s) {
  const Napi::Value dims = o.Get("matryoshkaDimensions");
  if (dims.IsUndefined()) return;
  const Napi::Value weights = o.Get("matryoshkaWeights");
  if (!dims.IsArray() || !weights.IsArray() || dims.As<Napi::Array>().Length() != weights.As<Napi::Array>().Length() ||
      dims.As<Napi::Array>().Length() == 0) {
    throw invalidArgument("matryoshkaDimensions and matryoshkaWeights must be arrays of the same, non-zero length");
  }
  const auto d = dims.As<Napi::Array>();
  const auto w = weights.As<Napi::Array>();
  for (uint32_t i = 0; i < d.Length(); ++i) {
    const Napi::Value di = d.Get(i), wi = w.Get(i);
    const double dim = di.IsNumber() ? di.As<Napi::Number>().DoubleValue() : -1;
    const double weight = wi.IsNumber() ? wi.As<Napi::Number>().DoubleValue() : -1;
    if (!(dim >= 1 && dim <= INT32_MAX) || dim != std::floor(dim)) throw invalidArgument("matryoshkaDimensions must hold positive integers");
    if (!(weight >= 0) || !std::isfinite(weight)) throw invalidArgument("matryoshkaWeights must hold finite numbers >= 0");
    s.matryoshka.emplace_back(static_cast<int64_t>(dim), weight);
  }
}

// The guide's masks of a step's arguments: { documents: Uint8Array [B * N], queries?, positives?: Uint8Array [B * B] }.
void readGuide(const Napi::Object& g, int64_t queries, int64_t documents, StepOptions& s) {
  auto mask = [&](const char* key, int64_t columns) -> torch::Tensor {
    const Napi::Value v = g.Get(key);
    if (v.IsUndefined()) return {};
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw invalidArgument(std::string("guide.") + key + " must be a Uint8Array");
    }
    auto array = v.As<Napi::Uint8Array>();
    if (static_cast<int64_t>(array.ElementLength()) != queries * columns) {
      throw invalidArgument(std::string("guide.") + key + " must hold " + std::to_string(queries * columns) + " values");
    }
    return torch::from_blob(array.Data(), {queries, columns}, torch::kUInt8).ne(0);
  };
  s.guideDocuments = mask("documents", documents);
  if (!s.guideDocuments.defined()) throw invalidArgument("guide.documents is required");
  if (s.guideDocuments.diagonal().any().item<bool>()) throw invalidArgument("guide.documents must keep each query's own positive (document i)");
  s.guideQueries = mask("queries", queries);
  s.guidePositives = mask("positives", queries);
}

// The teacher's candidates and scores of a step's arguments: { candidates: Int32Array, scores: Float32Array,
// perQuery } for `queries` queries and `documents` documents.
void readTeacher(const Napi::Object& t, int64_t queries, int64_t documents, StepOptions& s) {
  if (!t.Get("candidates").IsTypedArray() || !t.Get("scores").IsTypedArray()) {
    throw invalidArgument("teacher must be { candidates: Int32Array, scores: Float32Array, perQuery }");
  }
  const int64_t perQuery = integerIn(t.Get("perQuery"), "teacher.perQuery", 1, INT32_MAX);
  auto candidates = t.Get("candidates").As<Napi::Int32Array>();
  auto scores = t.Get("scores").As<Napi::Float32Array>();
  const auto n = static_cast<size_t>(queries * perQuery);
  if (candidates.ElementLength() != n || scores.ElementLength() != n) {
    throw invalidArgument("teacher.candidates and teacher.scores must hold queries * perQuery = " + std::to_string(n) + " values");
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t c = candidates.Data()[i];
    const bool first = i % static_cast<size_t>(perQuery) == 0;
    if (c < -1 || c >= documents || (first && c != static_cast<int32_t>(i / static_cast<size_t>(perQuery)))) {
      throw invalidArgument("teacher.candidates: each query's row starts with its positive (document i) and holds document indices or -1");
    }
    if (c >= 0 && !std::isfinite(scores.Data()[i])) throw invalidArgument("teacher.scores must be finite");
  }
  s.teacherCandidates = torch::from_blob(candidates.Data(), {queries, perQuery}, torch::kInt32).to(torch::kInt64);
  s.teacherScores = torch::from_blob(scores.Data(), {queries, perQuery}, torch::kFloat32).clone();
}

StepOptions readStepOptions(const Napi::Object& o) {
  StepOptions s;
  s.pooling = stringOr(o, "pooling", s.pooling);
  s.contrastiveWeight = numberOr(o, "contrastiveWeight", s.contrastiveWeight);
  s.lateInteractionWeight = numberOr(o, "lateInteractionWeight", s.lateInteractionWeight);
  s.temperature = numberOr(o, "temperature", s.temperature);
  s.symmetric = boolOr(o, "symmetric", s.symmetric);
  s.bce = stringOr(o, "lateInteractionKind", "cross_entropy") == "bce";
  s.learningRate = numberOr(o, "learningRate", s.learningRate);
  s.maxGradNorm = numberOr(o, "maxGradNorm", s.maxGradNorm);
  s.lossScale = numberOr(o, "lossScale", s.lossScale);
  s.apply = boolOr(o, "apply", s.apply);
  const double mini = numberOr(o, "miniBatchSize", 0);
  if (!(mini >= 0 && mini <= INT32_MAX) || mini != std::floor(mini)) throw invalidArgument("miniBatchSize must be an integer >= 0 (0: no mini-batches)");
  s.miniBatchSize = static_cast<int64_t>(mini);
  s.verifyMiniBatches = boolOr(o, "verifyMiniBatches", s.verifyMiniBatches);
  s.projectTokens = boolOr(o, "projectTokens", s.projectTokens);
  if (s.projectTokens && s.contrastiveWeight > 0) throw invalidArgument("a multi-vector model has no pooled vector: contrastiveWeight must be 0");
  s.crossEncoder = boolOr(o, "crossEncoder", false);
  if (s.crossEncoder) {
    const std::string kind = stringOr(o, "crossEncoderLoss", "cross_entropy");
    if (kind != "cross_entropy" && kind != "bce") throw invalidArgument("crossEncoderLoss must be 'cross_entropy' or 'bce'");
    s.crossEncoderBce = kind == "bce";
    const std::string activation = stringOr(o, "scoreActivation", "sigmoid");
    if (activation != "sigmoid" && activation != "identity") throw invalidArgument("scoreActivation must be 'sigmoid' or 'identity'");
    s.sigmoidScores = activation == "sigmoid";
    s.scale = numberOr(o, "scale", s.scale);
    if (!(s.scale > 0)) throw invalidArgument("scale must be positive");
    if (s.miniBatchSize > 0) throw invalidArgument("gradient caching (miniBatchSize) is for embedding models, not cross-encoders");
  }
  s.distillationWeight = numberOr(o, "distillationWeight", 0);
  if (!(s.distillationWeight >= 0)) throw invalidArgument("distillationWeight must be >= 0");
  const std::string distillation = stringOr(o, "distillation", "margin_mse");
  if (distillation != "margin_mse" && distillation != "kl") throw invalidArgument("distillation must be 'margin_mse' or 'kl'");
  s.distillationKl = distillation == "kl";
  s.teacherTemperature = numberOr(o, "teacherTemperature", s.teacherTemperature);
  if (!(s.teacherTemperature > 0)) throw invalidArgument("teacherTemperature must be positive");
  if (s.distillationWeight > 0 && s.crossEncoder) throw invalidArgument("distillation is for embedding models, not cross-encoders");
  readMatryoshka(o, s);
  if (!s.matryoshka.empty() && (s.crossEncoder || s.projectTokens)) throw invalidArgument("Matryoshka widths are for pooled vectors: not for a cross-encoder or a multi-vector model");
  s.sparse = boolOr(o, "sparse", false);
  if (s.sparse) {
    s.splade = spladeSettings(stringOr(o, "spladePooling", "max"), stringOr(o, "spladeActivation", "relu"));
    s.queryRegularizer = numberOr(o, "queryRegularizer", 0);
    s.documentRegularizer = numberOr(o, "documentRegularizer", 0);
    if (!(s.queryRegularizer >= 0) || !(s.documentRegularizer >= 0)) throw invalidArgument("queryRegularizer and documentRegularizer must be >= 0");
    if (s.lateInteractionWeight > 0 || s.projectTokens || s.crossEncoder || !s.matryoshka.empty()) {
      throw invalidArgument("a sparse encoder trains its pooled vectors alone: no late interaction, multi-vector, cross-encoder or Matryoshka loss");
    }
  }
  const std::string pairs = stringOr(o, "pairLoss", "none");
  using PL = StepOptions::PairLoss;
  const std::vector<std::pair<std::string, PL>> kinds = {{"none", PL::None}, {"cosent", PL::CoSent}, {"angle", PL::Angle}, {"cosine", PL::Cosine},
                                                         {"contrastive", PL::Contrastive}, {"online_contrastive", PL::OnlineContrastive}};
  const auto kind = std::find_if(kinds.begin(), kinds.end(), [&](const auto& k) { return k.first == pairs; });
  if (kind == kinds.end()) throw invalidArgument("pairLoss must be 'none', 'cosent', 'angle', 'cosine', 'contrastive' or 'online_contrastive', got '" + pairs + "'");
  s.pairLoss = kind->second;
  const std::string triplet = stringOr(o, "tripletDistance", "none");
  using TD = StepOptions::TripletDistance;
  if (triplet == "euclidean") s.tripletDistance = TD::Euclidean;
  else if (triplet == "cosine") s.tripletDistance = TD::Cosine;
  else if (triplet == "manhattan") s.tripletDistance = TD::Manhattan;
  else if (triplet != "none") throw invalidArgument("tripletDistance must be 'none', 'euclidean', 'cosine' or 'manhattan', got '" + triplet + "'");
  if (s.tripletDistance != TD::None) {
    s.tripletMargin = numberOr(o, "tripletMargin", s.tripletMargin);
    if (!(s.tripletMargin >= 0 && s.tripletMargin <= std::numeric_limits<float>::max())) throw invalidArgument("tripletMargin must be a float32 number >= 0");
    if (s.contrastiveWeight > 0 || s.lateInteractionWeight > 0 || s.distillationWeight > 0 || s.projectTokens || s.crossEncoder || s.sparse || s.pairLoss != PL::None) {
      throw invalidArgument("a triplet loss is the step's whole loss, on a single-vector model's pooled vectors: contrastiveWeight, lateInteractionWeight and distillationWeight must be 0, with no pair loss, and not for a multi-vector model, a cross-encoder or a sparse encoder");
    }
  }
  if (s.pairLoss != PL::None) {
    s.pairScale = numberOr(o, "pairScale", s.pairScale);
    s.pairMargin = numberOr(o, "pairMargin", s.pairMargin);
    // In float32's range: the loss is computed in float32.
    const double largest = std::numeric_limits<float>::max();
    if (!(s.pairScale > 0 && s.pairScale <= largest)) throw invalidArgument("pairScale must be a positive float32 number");
    if (!(s.pairMargin >= 0 && s.pairMargin <= largest)) throw invalidArgument("pairMargin must be a float32 number >= 0");
    if (s.contrastiveWeight > 0 || s.lateInteractionWeight > 0 || s.distillationWeight > 0 || s.projectTokens || s.crossEncoder || s.sparse) {
      throw invalidArgument("a pair loss is the step's whole loss, on a single-vector model's pooled vectors: contrastiveWeight, lateInteractionWeight and distillationWeight must be 0, and not for a multi-vector model, a cross-encoder or a sparse encoder");
    }
  }
  s.normalizedVectors = boolOr(o, "normalizedVectors", false);
  const std::string batchTriplet = stringOr(o, "batchTriplet", "none");
  using BT = StepOptions::BatchTriplet;
  const std::vector<std::pair<std::string, BT>> batchKinds = {{"none", BT::None}, {"all", BT::All}, {"hard", BT::Hard}, {"semi_hard", BT::SemiHard}, {"hard_soft_margin", BT::HardSoftMargin}};
  const auto batchKind = std::find_if(batchKinds.begin(), batchKinds.end(), [&](const auto& k) { return k.first == batchTriplet; });
  if (batchKind == batchKinds.end()) throw invalidArgument("batchTriplet must be 'none', 'all', 'hard', 'semi_hard' or 'hard_soft_margin', got '" + batchTriplet + "'");
  s.batchTriplet = batchKind->second;
  if (s.batchTriplet != BT::None) {
    const std::string distance = stringOr(o, "batchTripletDistance", "euclidean");
    if (distance != "euclidean" && distance != "cosine") throw invalidArgument("batchTripletDistance must be 'euclidean' or 'cosine', got '" + distance + "'");
    s.batchTripletCosine = distance == "cosine";
    s.batchTripletMargin = numberOr(o, "batchTripletMargin", s.batchTripletMargin);
    if (!(s.batchTripletMargin >= 0 && s.batchTripletMargin <= std::numeric_limits<float>::max())) throw invalidArgument("batchTripletMargin must be a float32 number >= 0");
    if (s.contrastiveWeight > 0 || s.lateInteractionWeight > 0 || s.distillationWeight > 0 || s.projectTokens || s.crossEncoder || s.sparse || s.pairLoss != PL::None ||
        s.tripletDistance != TD::None || !s.matryoshka.empty() || s.miniBatchSize > 0) {
      throw invalidArgument("a batch triplet loss is the step's whole loss, on a single-vector model's full pooled vectors: contrastiveWeight, lateInteractionWeight and distillationWeight must be 0, with no pair or triplet loss, Matryoshka widths or mini-batches, and not for a multi-vector model, a cross-encoder or a sparse encoder");
    }
  }
  readAdaptiveLayers(o, s);
  s.gorMeanWeight = numberOr(o, "gorMeanWeight", 0);
  s.gorSecondMomentWeight = numberOr(o, "gorSecondMomentWeight", 0);
  if (!(s.gorMeanWeight >= 0 && std::isfinite(s.gorMeanWeight)) || !(s.gorSecondMomentWeight >= 0 && std::isfinite(s.gorSecondMomentWeight))) {
    throw invalidArgument("gorMeanWeight and gorSecondMomentWeight must be finite numbers >= 0");
  }
  s.megaBatchMargin = boolOr(o, "megaBatchMargin", false);
  if (s.megaBatchMargin) {
    s.positiveMargin = numberOr(o, "positiveMargin", s.positiveMargin);
    s.negativeMargin = numberOr(o, "negativeMargin", s.negativeMargin);
    if (!std::isfinite(s.positiveMargin) || !std::isfinite(s.negativeMargin)) throw invalidArgument("positiveMargin and negativeMargin must be finite numbers");
    if (s.contrastiveWeight > 0 || s.lateInteractionWeight > 0 || s.distillationWeight > 0 || s.projectTokens || s.crossEncoder || s.sparse ||
        s.pairLoss != StepOptions::PairLoss::None || s.tripletDistance != StepOptions::TripletDistance::None || s.batchTriplet != StepOptions::BatchTriplet::None) {
      throw invalidArgument("MegaBatchMarginLoss is the step's whole loss, on a single-vector model's pooled vectors: contrastiveWeight, lateInteractionWeight and distillationWeight must be 0, with no pair, triplet or batch triplet loss, and not for a multi-vector model, a cross-encoder or a sparse encoder");
    }
  }
  const std::string gorAggregation = stringOr(o, "gorAggregation", "mean");
  if (gorAggregation != "mean" && gorAggregation != "sum") throw invalidArgument("gorAggregation must be 'mean' or 'sum', got '" + gorAggregation + "'");
  s.gorSum = gorAggregation == "sum";
  if ((s.gorMeanWeight > 0 || s.gorSecondMomentWeight > 0) && (s.projectTokens || s.crossEncoder || s.sparse)) {
    throw invalidArgument("global orthogonal regularization spreads a single-vector model's pooled vectors: not for a multi-vector model, a cross-encoder or a sparse encoder");
  }
  return s;
}

// The key under which torch::optim keeps a parameter's state: the TensorImpl's address as a string in
// libtorch 1.x (c10::guts::to_string, which is `ostream << pointer`), the void* itself in 2.x.
template <typename Key>
Key optimizerStateKey(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;
    key << static_cast<void*>(p.unsafeGetTensorImpl());
    return key.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

// One AdamW update of every parameter with a gradient, keeping its state in torch::optim::AdamW's own
// AdamWParamState (step, exp_avg, exp_avg_sq), which checkpoints save and load. libtorch 2.4 and later run
// it as one fused multi-tensor kernel per parameter group on the CPU and on CUDA (at::_fused_adamw_, what
// torch.optim.AdamW(fused=True) and Hugging Face's trainer use): torch::optim::AdamW::step() runs about ten
// operations per parameter tensor, 66 ms a step against 9 ms for the fused kernel at MiniLM-L6's 22.6M
// parameters on the 2-core development VM (torch 2.13, measured through torch.optim), and on a GPU each of
// those operations is a kernel launch. Older libtorch: torch::optim::AdamW::step(). The same update either
// way, up to float rounding.
void adamwStep(torch::optim::AdamW& optimizer) {
#if COLTRAST_TORCH_AT_LEAST(2, 4)
  auto& state = optimizer.state();
  using KeyType = typename std::decay_t<decltype(state)>::key_type;
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK(!o.amsgrad(), "coltrast's AdamW has no amsgrad");
    std::vector<torch::Tensor> params, grads, avgs, squares, steps;
    std::map<int64_t, torch::Tensor> stepTensors;  // the fused kernel reads each parameter's step count
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state[optimizerStateKey<KeyType>(p)];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
      s.step(s.step() + 1);
      auto& step = stepTensors[s.step()];
      if (!step.defined()) step = torch::full({}, static_cast<double>(s.step()), p.options().dtype(torch::kFloat32));
      params.push_back(p);
      grads.push_back(p.grad());
      avgs.push_back(s.exp_avg());
      squares.push_back(s.exp_avg_sq());
      steps.push_back(step);
    }
    if (params.empty()) continue;
    torch::NoGradGuard noGrad;
    at::_fused_adamw_(params, grads, avgs, squares, {}, steps, o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()),
                      o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false);
  }
#else
  optimizer.step();
#endif
}

// The gradients' global L2 norm, and their scaling to at most maxNorm (infinity: none), as
// torch.nn.utils.clip_grad_norm_ does. On libtorch 2.4 and later through multi-tensor operations, two
// launches where torch::nn::utils::clip_grad_norm_ makes two per parameter tensor (on the CPU the time is
// the same: 4.9 against 4.7 ms at MiniLM-L6's size through torch.nn.utils, foreach off and on).
double clipGradNorm(const std::vector<torch::Tensor>& params, double maxNorm) {
#if COLTRAST_TORCH_AT_LEAST(2, 4)
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  const torch::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  if (std::isfinite(maxNorm)) at::_foreach_mul_(grads, at::clamp_max(maxNorm / (total + 1e-6), 1.0));
  return total.item<double>();
#else
  return torch::nn::utils::clip_grad_norm_(params, maxNorm);
#endif
}

struct LossParts {
  double total = 0, contrastive = 0, lateInteraction = 0, distillation = 0, gradNorm = 0;
  // A sparse encoder's FLOPS regularizers, weighted, queries' and documents' together.
  double regularizer = 0;
  // ContextFlow: the generator's expected negative log-likelihood of the answers under the retriever's
  // distribution over the retrieved documents (a diagnostic; the loss is the marginal's).
  double generation = 0;
  bool skipped = false;  // float16: the gradients overflowed and the update was not applied
  double miniBatchMaxDiff = -1;  // verifyMiniBatches: largest |recomputed - first pass| (-1: not checked)
};

// One side of a batch (queries or documents) on the model's device.
struct Side {
  torch::Tensor ids, mask, types;
  // The batch's outputMask, else `mask`: the tokens pooled (a prompt left out, include_prompt false) and, for a
  // multi-vector model, the tokens its late-interaction loss scores (query expansion, skiplist).
  torch::Tensor scored;
  int64_t batch, seq;
  std::vector<int64_t> lengths;  // each row's columns up to its last attended or scored token (at least 1)
  Side(const TokenBatch& b, const torch::Device& device)
      : ids(b.tensor(b.ids, device)), mask(b.tensor(b.mask, device)), types(b.tensor(b.types, device)),
        scored(b.scored.empty() ? mask : b.tensor(b.scored, device)), batch(b.batch), seq(b.seq),
        lengths(static_cast<size_t>(b.batch), 1) {
    for (int64_t r = 0; r < batch; ++r) {
      for (int64_t c = seq - 1; c > 0; --c) {
        const auto at = static_cast<size_t>(r * seq + c);
        if (b.mask[at] != 0 || (!b.scored.empty() && b.scored[at] != 0)) {
          lengths[static_cast<size_t>(r)] = c + 1;
          break;
        }
      }
    }
  }
};

// Token states [rows, len, dim] (the model's output dtype) and, when the contrastive loss is on, pooled
// vectors through the projection head [rows, out]; with adaptive layers, the pooled vectors after each of those layers.
struct Encoded {
  torch::Tensor states, pooled;
  std::vector<torch::Tensor> layerPooled;
};

Encoded encode(LoadedEncoder& enc, const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& types,
               const torch::Tensor& pooled, const StepOptions& s, torch::ScalarType autocast) {
  AutocastScope scope(enc.device, autocast);
  Encoded out;
  std::vector<torch::Tensor> layerInputs;
  {
    LayerInputs capture(*enc.model, s.adaptiveLayers.empty() ? nullptr : &layerInputs);
    out.states = enc.model->forward(ids, mask, types);
  }
  if (s.sparse) {
    if (!enc.mlm) throw invalidArgument("sparse training needs a model loaded with its masked-language-model head (a SparseEncoder)");
    // Over the attended tokens, as SpladePooling pools (a prompt's tokens included).
    out.pooled = spladePool(*enc.mlm, enc.model->tokenEmbeddings(), out.states, mask, s.splade);
    return out;
  }
  if (s.projectTokens) out.states = enc.project(out.states);
  if (s.contrastiveWeight > 0 || s.pairLoss != StepOptions::PairLoss::None || s.tripletDistance != StepOptions::TripletDistance::None ||
      s.targetVectors.defined() || s.batchTriplet != StepOptions::BatchTriplet::None || s.megaBatchMargin || (s.distillationWeight > 0 && !s.projectTokens)) {
    out.pooled = enc.project(pool(out.states, pooled, s.pooling));
    for (const auto& [layer, weight] : s.adaptiveLayers) {
      if (layer >= static_cast<int64_t>(layerInputs.size())) {
        throw invalidArgument("adaptiveLayers: layer " + std::to_string(layer) + " is past the model's " + std::to_string(layerInputs.size()) + " layers (0 to " +
                              std::to_string(static_cast<int64_t>(layerInputs.size()) - 1) + ": the embeddings' output, then each layer's but the last's)");
      }
      out.layerPooled.push_back(enc.project(pool(layerInputs[static_cast<size_t>(layer)], pooled, s.pooling)));
    }
  }
  return out;
}

// The mask the late-interaction loss takes: a multi-vector model's scoring mask, else the attended tokens.
const torch::Tensor& lateMask(const Side& side, const StepOptions& s) { return s.projectTokens ? side.scored : side.mask; }

// Distillation (knowledge distillation from a teacher's scores, e.g. a cross-encoder's: GPL, ColBERTv2) on
// the student's scores of each query's candidates, `student` and `teacher` [B, K] (column 0: the positive),
// over the candidates `valid` marks.
//  - MarginMSE (Hofstätter et al. 2020; sentence-transformers' MarginMSELoss): the mean over every
//    (query, negative) of ((s_pos - s_neg) - (t_pos - t_neg))^2.
//  - KL (ColBERTv2, PyLate's Distillation loss): mean over queries of KL(softmax(t) || softmax(s)) over the
//    query's candidates.
torch::Tensor distillationLoss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& valid, bool kl) {
  const torch::Tensor zero = torch::zeros({}, student.options());
  if (kl) {
    const double inf = std::numeric_limits<double>::infinity();
    const torch::Tensor logS = torch::log_softmax(student.masked_fill(valid.logical_not(), -inf), 1);
    const torch::Tensor logT = torch::log_softmax(teacher.masked_fill(valid.logical_not(), -inf), 1);
    // Where a candidate is missing both are -inf and its weight exp(logT) is 0: zeros there keep the
    // product (and its gradient) finite.
    const torch::Tensor terms = logT.exp() * (torch::where(valid, logT, zero) - torch::where(valid, logS, zero));
    return terms.sum(1).mean();
  }
  using torch::indexing::Slice;
  const torch::Tensor negatives = valid.index({Slice(), Slice(1)});
  const torch::Tensor studentMargin = student.index({Slice(), Slice(0, 1)}) - student.index({Slice(), Slice(1)});
  const torch::Tensor teacherMargin = teacher.index({Slice(), Slice(0, 1)}) - teacher.index({Slice(), Slice(1)});
  const torch::Tensor squares = torch::where(negatives, (studentMargin - teacherMargin).square(), zero);
  return squares.sum() / negatives.sum().clamp_min(1).to(squares.scalar_type());
}

// Cross-entropy over each query's row of the score blocks (query i's positive: column i of the first), with
// the guide's masked entries left out of the softmax, at temperature tau: GISTEmbed's loss.
torch::Tensor guidedCrossEntropy(std::vector<torch::Tensor> blocks, const std::vector<torch::Tensor>& masks, const torch::Tensor& tau) {
  const double inf = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = blocks[i].masked_fill(masks[i].to(blocks[i].device()), -inf);
  const torch::Tensor logits = torch::cat(blocks, 1) / tau;
  return F::cross_entropy(logits, torch::arange(logits.size(0), logits.options().dtype(torch::kInt64)));
}

// The contrastive loss with a guide: query i against every document, and the other queries and positives
// when their masks are given, each filtered by the guide (sentence-transformers' GISTEmbedLoss; the [B, N + 2B]
// logits are materialized, as there, where the fused loss keeps O(B + N) memory).
torch::Tensor guidedContrastiveLoss(const torch::Tensor& qp, const torch::Tensor& dp, const torch::Tensor& tau, const StepOptions& s) {
  // Room for all three blocks from the start (growing from an initializer list inside batchLoss's loop over
  // Matryoshka widths drew a false -Warray-bounds from GCC 12).
  std::vector<torch::Tensor> blocks, masks;
  blocks.reserve(3);
  masks.reserve(3);
  blocks.push_back(qp.matmul(dp.t()));
  masks.push_back(s.guideDocuments);
  if (s.guideQueries.defined()) {
    blocks.push_back(qp.matmul(qp.t()));
    masks.push_back(s.guideQueries);
  }
  if (s.guidePositives.defined()) {
    const torch::Tensor positives = dp.narrow(0, 0, qp.size(0));
    blocks.push_back(positives.matmul(positives.t()));
    masks.push_back(s.guidePositives);
  }
  return guidedCrossEntropy(blocks, masks, tau);
}

// The losses of one batch from its encoded sides, differentiable when grad mode is on. The losses take
// float32 inputs, except the late-interaction loss on a GPU (below), and compute in float32.
// AnglE's similarity of row pairs (sentence-transformers' pairwise_angle_sim): each vector's halves are a complex
// vector's real and imaginary parts; the sum of the entries of x / y, scaled by |y| / |x|, in absolute value. Unchanged by
// the vectors' lengths. An odd width gets a zero entry first.
torch::Tensor angleSimilarity(torch::Tensor x, torch::Tensor y) {
  if (x.size(1) % 2 != 0) {
    x = torch::constant_pad_nd(x, {0, 1}, 0);
    y = torch::constant_pad_nd(y, {0, 1}, 0);
  }
  const auto xs = x.chunk(2, 1), ys = y.chunk(2, 1);
  const torch::Tensor &a = xs[0], &b = xs[1], &c = ys[0], &d = ys[1];
  const torch::Tensor z = (c * c + d * d).sum(1, true);
  const torch::Tensor lengths = (a * a + b * b).sum(1, true).sqrt() / z.sqrt();
  const torch::Tensor re = (a * c + b * d) / z / lengths, im = (b * c - a * d) / z / lengths;
  return torch::cat({re, im}, 1).sum(1).abs();
}

// A labeled-pair loss (StepOptions::pairLoss) of the L2-normalized float32 rows `a` and `b` (pair i: a[i], b[i]) and
// their labels, as sentence-transformers computes it: CoSENT and AnglE, log(1 + sum of exp(scale * (s_i - s_j))) over
// the pairs i, j with label_i < label_j (s: cosine, or AnglE's similarity); CosineSimilarityLoss, the mean squared
// error of the cosines against the labels; ContrastiveLoss, the mean of 0.5 * (l * d^2 + (1 - l) * relu(margin - d)^2)
// with d the cosine distance; OnlineContrastiveLoss, the summed squared distance of the similar pairs farther apart
// than the nearest dissimilar one and relu(margin - d)^2 of the dissimilar ones nearer than the farthest similar one.
torch::Tensor pairLossOf(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& labels, const StepOptions& s) {
  using PL = StepOptions::PairLoss;
  const torch::Tensor cosine = (a * b).sum(-1);
  switch (s.pairLoss) {
    case PL::CoSent:
    case PL::Angle: {
      const torch::Tensor scores = (s.pairLoss == PL::CoSent ? cosine : angleSimilarity(a, b)) * s.pairScale;
      const torch::Tensor ordered = labels.unsqueeze(1).lt(labels.unsqueeze(0)).to(scores.scalar_type());
      const torch::Tensor diff = (scores.unsqueeze(1) - scores.unsqueeze(0)) - (1 - ordered) * 1e12;
      return torch::logsumexp(torch::cat({torch::zeros({1}, scores.options()), diff.view({-1})}), 0);
    }
    case PL::Cosine:
      return (cosine - labels).square().mean();
    case PL::Contrastive: {
      const torch::Tensor distance = 1 - cosine;
      return (0.5 * (labels * distance.square() + (1 - labels) * torch::relu(s.pairMargin - distance).square())).mean();
    }
    case PL::OnlineContrastive: {
      const torch::Tensor distance = 1 - cosine;
      const torch::Tensor negatives = distance.index({labels.eq(0)}), positives = distance.index({labels.eq(1)});
      const torch::Tensor below = positives.size(0) > 1 ? positives.max() : negatives.mean();
      const torch::Tensor above = negatives.size(0) > 1 ? negatives.min() : positives.mean();
      const torch::Tensor hardNegatives = negatives.index({negatives.lt(below)}), hardPositives = positives.index({positives.gt(above)});
      return hardPositives.square().sum() + torch::relu(s.pairMargin - hardNegatives).square().sum();
    }
    case PL::None:
      break;
  }
  throw std::logic_error("pairLossOf without a pair loss");
}

// sentence-transformers' TripletLoss of pooled rows: the mean over the queries of relu(d(q, p) - d(q, n) + margin),
// d the Euclidean distance, the cosine distance (1 - cosine) or the Manhattan distance.
torch::Tensor tripletLossOf(const torch::Tensor& q, const torch::Tensor& p, const torch::Tensor& n, const StepOptions& s) {
  using TD = StepOptions::TripletDistance;
  const auto distance = [&](const torch::Tensor& a, const torch::Tensor& b) {
    if (s.tripletDistance == TD::Cosine) return 1 - F::cosine_similarity(a, b, F::CosineSimilarityFuncOptions().dim(-1));
    if (s.tripletDistance == TD::Manhattan) return (a - b).abs().sum(-1);
    return (a - b).square().sum(-1).sqrt();
  };
  return torch::relu(distance(q, p) - distance(q, n) + s.tripletMargin).mean();
}

// The pairwise distances of the rows of `x` [B, D] as sentence-transformers' BatchHardTripletLossDistanceFunction
// computes them: euclidean from the Gram matrix (negative squares clipped to 0, and 0 where the square is 0, so that
// sqrt's gradient stays finite on the diagonal), or 1 - cosine similarity.
torch::Tensor batchTripletDistances(const torch::Tensor& x, bool cosine) {
  if (cosine) {
    const torch::Tensor unit = F::normalize(x, F::NormalizeFuncOptions().dim(-1));
    return 1 - unit.matmul(unit.t());
  }
  const torch::Tensor dot = x.matmul(x.t());
  const torch::Tensor square = dot.diagonal();
  torch::Tensor distances = (square.unsqueeze(0) - 2.0 * dot + square.unsqueeze(1)).clamp_min(0);
  const torch::Tensor zero = distances.eq(0).to(distances.scalar_type());
  return (1.0 - zero) * torch::sqrt(distances + zero * 1e-16);
}

// The batch triplet losses (StepOptions::batchTriplet) of the pooled vectors `x` [B, D] with class `labels` [B]:
//  - All: the mean, over the triplets (anchor, positive of its class, negative of another) with a positive loss, of
//    d(a, p) - d(a, n) + margin (BatchAllTripletLoss);
//  - Hard, HardSoftMargin: each anchor's farthest positive and nearest negative, relu(d_p - d_n + margin) or
//    log(1 + exp(d_p - d_n)), mean over anchors (BatchHardTripletLoss, BatchHardSoftMarginTripletLoss);
//  - SemiHard: FaceNet's semi-hard negatives (BatchSemiHardTripletLoss, as TensorFlow Addons computes it): for each
//    (anchor, positive) the nearest negative farther than the positive, else the farthest negative, summed over the
//    pairs and divided by their number.
torch::Tensor batchTripletLoss(const torch::Tensor& x, const torch::Tensor& labels, const StepOptions& s) {
  using BT = StepOptions::BatchTriplet;
  const torch::Tensor d = batchTripletDistances(x, s.batchTripletCosine);
  const int64_t n = x.size(0);
  const torch::Tensor same = labels.unsqueeze(0).eq(labels.unsqueeze(1));
  const torch::Tensor eye = torch::eye(n, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
  const double margin = s.batchTripletMargin;
  const auto floats = [&](const torch::Tensor& m) { return m.to(d.scalar_type()); };
  switch (s.batchTriplet) {
    case BT::All: {
      const torch::Tensor valid = same.unsqueeze(2) & same.logical_not().unsqueeze(1) & eye.logical_not().unsqueeze(2) & eye.logical_not().unsqueeze(1) &
                                  eye.logical_not().unsqueeze(0);
      const torch::Tensor loss = (floats(valid) * (d.unsqueeze(2) - d.unsqueeze(1) + margin)).clamp_min(0);
      const torch::Tensor positive = loss.gt(1e-16).sum().to(d.scalar_type());
      return loss.sum() / (positive + 1e-16);
    }
    case BT::Hard:
    case BT::HardSoftMargin: {
      const torch::Tensor hardestPositive = std::get<0>((floats(same & eye.logical_not()) * d).max(1, true));
      const torch::Tensor farthest = std::get<0>(d.max(1, true));
      const torch::Tensor hardestNegative = std::get<0>((d + farthest * floats(same)).min(1, true));
      if (s.batchTriplet == BT::Hard) return (hardestPositive - hardestNegative + margin).clamp_min(0).mean();
      return torch::log1p(torch::exp(hardestPositive - hardestNegative)).mean();
    }
    case BT::SemiHard: {
      const torch::Tensor other = same.logical_not();
      // TensorFlow Addons' tiling, as sentence-transformers computes it: row r of the [n * n, n] tile is d[r % n], its
      // mask the other classes' entries beyond d[r % n][r / n]; its masked minimum, reshaped and transposed, is each
      // (anchor, positive)'s nearest negative farther than the positive.
      const torch::Tensor tile = d.repeat({n, 1});
      const torch::Tensor mask = other.repeat({n, 1}) & tile.gt(d.t().reshape({-1, 1}));
      const torch::Tensor found = mask.sum(1, true).gt(0).reshape({n, n}).t();
      const auto maskedMin = [&](const torch::Tensor& data, const torch::Tensor& m) {
        const torch::Tensor top = std::get<0>(data.max(1, true));
        return std::get<0>(((data - top) * floats(m)).min(1, true)) + top;
      };
      const auto maskedMax = [&](const torch::Tensor& data, const torch::Tensor& m) {
        const torch::Tensor bottom = std::get<0>(data.min(1, true));
        return std::get<0>(((data - bottom) * floats(m)).max(1, true)) + bottom;
      };
      const torch::Tensor outside = maskedMin(tile, mask).reshape({n, n}).t();
      const torch::Tensor inside = maskedMax(d, other).repeat({1, n});
      const torch::Tensor semiHard = torch::where(found, outside, inside);
      const torch::Tensor positives = floats(same) - floats(eye);
      const torch::Tensor loss = ((d - semiHard + margin) * positives).clamp_min(0);
      return loss.sum() / positives.sum().clamp_min(1e-16);
    }
    case BT::None:
      break;
  }
  throw std::logic_error("batchTripletLoss without a batch triplet loss");
}

std::pair<torch::Tensor, LossParts> batchLoss(const LoadedEncoder& enc, const Encoded& q, const torch::Tensor& qMask,
                                              const Encoded& d, const torch::Tensor& dMask, const StepOptions& s,
                                              torch::ScalarType autocast) {
  const torch::Tensor tau = torch::full({}, s.temperature, torch::TensorOptions().device(enc.device));
  // L2-normalized rows (a helper rather than one options object held through the function: GCC 12 took that
  // object's empty optional for uninitialized memory, -Wmaybe-uninitialized, with libtorch 2.x's headers).
  const auto unit = [](const torch::Tensor& x) { return F::normalize(x, F::NormalizeFuncOptions().dim(-1)); };
  torch::Tensor total = torch::zeros({}, torch::TensorOptions().device(enc.device));
  LossParts parts;
  // The widths the pooled losses see, and each one's weight: Matryoshka's, else the full vectors once.
  std::vector<std::pair<int64_t, double>> widths = s.matryoshka;
  if (q.pooled.defined()) {
    const int64_t full = q.pooled.size(-1);
    if (widths.empty()) widths.emplace_back(full, 1.0);
    for (const auto& [dim, weight] : widths) {
      if (dim > full) throw invalidArgument("a Matryoshka width (" + std::to_string(dim) + ") is larger than the pooled vectors (" + std::to_string(full) + ")");
    }
  }
  // Pooled vectors cut to `dim` entries, float32, L2-normalized where `normalize` says; pooledAt's L2-normalized (a
  // sparse encoder's as they are: scored by dot product).
  const auto cutAt = [&](const Encoded& e, int64_t dim, bool normalize) {
    const torch::Tensor cut = e.pooled.narrow(-1, 0, dim).to(torch::kFloat32);
    return normalize ? unit(cut) : cut;
  };
  const auto pooledAt = [&](const Encoded& e, int64_t dim) { return cutAt(e, dim, !s.sparse); };
  if (s.tripletDistance != StepOptions::TripletDistance::None) {
    // At each width (MatryoshkaLoss around it): the vectors cut, as the model gives them (normalized again where it
    // normalizes).
    const int64_t queries = q.pooled.size(0);
    const torch::Tensor negatives = s.tripletNegatives.to(enc.device);
    for (const auto& [dim, weight] : widths) {
      const torch::Tensor qp = cutAt(q, dim, s.normalizedVectors), dp = cutAt(d, dim, s.normalizedVectors);
      total = total + weight * tripletLossOf(qp, dp.narrow(0, 0, queries), dp.index_select(0, negatives), s);
    }
  }
  if (s.batchTriplet != StepOptions::BatchTriplet::None) {
    total = total + batchTripletLoss(cutAt(q, q.pooled.size(-1), s.normalizedVectors), s.classLabels.to(enc.device), s);
  }
  if (s.targetVectors.defined()) {
    // MSELoss: the queries' and the documents' vectors as the model gives them, against the teacher's of the queries
    // (each document is its query's translation), the mean over every entry of both.
    const int64_t width = q.pooled.size(-1), queries = q.pooled.size(0);
    if (s.targetVectors.size(1) != width) {
      throw invalidArgument("targetVectors are " + std::to_string(s.targetVectors.size(1)) + " wide, and the model's pooled vectors " + std::to_string(width));
    }
    const torch::Tensor target = s.targetVectors.to(enc.device);
    // Sentences without translations (no documents: distillation of one model into another) fit on their own.
    if (!d.pooled.defined()) {
      total = total + F::mse_loss(cutAt(q, width, s.normalizedVectors), target);
    } else {
      const torch::Tensor student = torch::cat({cutAt(q, width, s.normalizedVectors), cutAt(d, width, s.normalizedVectors).narrow(0, 0, queries)});
      total = total + F::mse_loss(student, torch::cat({target, target}));
    }
  }
  if (s.megaBatchMargin) {
    // At each width (MatryoshkaLoss around it): cosines of every query with every query's document.
    const int64_t queries = q.pooled.size(0);
    for (const auto& [dim, weight] : widths) {
      const torch::Tensor cosines = pooledAt(q, dim).matmul(pooledAt(d, dim).narrow(0, 0, queries).t());
      const torch::Tensor positive = cosines.diagonal();
      const torch::Tensor own = torch::eye(queries, cosines.options().dtype(torch::kBool));
      // A batch of one query has no negative: its hardest is -inf, which the relu takes to 0.
      const torch::Tensor hardest = cosines.masked_fill(own, -std::numeric_limits<float>::infinity()).amax(1);
      total = total + weight * (F::relu(s.positiveMargin - positive) + F::relu(hardest - s.negativeMargin)).mean();
    }
  }
  if (s.pairLoss != StepOptions::PairLoss::None) {
    // The pair loss at each width (MatryoshkaLoss around it), summed with the widths' weights.
    const int64_t pairs = q.pooled.size(0);
    const torch::Tensor labels = s.pairLabels.to(enc.device);
    for (const auto& [dim, weight] : widths) total = total + weight * pairLossOf(pooledAt(q, dim), pooledAt(d, dim).narrow(0, 0, pairs), labels, s);
  }
  if (s.contrastiveWeight > 0) {
    torch::Tensor loss = torch::zeros({}, total.options());
    for (const auto& [dim, weight] : widths) {
      const torch::Tensor qp = pooledAt(q, dim), dp = pooledAt(d, dim);
      loss = loss + weight * (s.guideDocuments.defined() ? guidedContrastiveLoss(qp, dp, tau, s) : ops::contrastiveLoss(qp, dp, tau, {s.symmetric}));
    }
    parts.contrastive = loss.item<double>();
    total = total + s.contrastiveWeight * loss;
  }
  if (s.gorMeanWeight > 0 || s.gorSecondMomentWeight > 0) {
    // Each side's rows, L2-normalized at the full width: their cosine similarities, the diagonal left out.
    std::vector<torch::Tensor> means, moments;
    for (const Encoded* side : {&q, &d}) {
      if (!side->pooled.defined() || side->pooled.size(0) < 2) continue;
      const torch::Tensor x = pooledAt(*side, side->pooled.size(-1));
      const int64_t n = x.size(0);
      const torch::Tensor similarity = x.matmul(x.t()) * (1 - torch::eye(n, x.options()));
      const double pairs = static_cast<double>(n * (n - 1));
      means.push_back((similarity.sum() / pairs).square());
      moments.push_back(F::relu(similarity.square().sum() / pairs - 1.0 / static_cast<double>(x.size(1))));
    }
    if (!means.empty()) {
      const auto aggregate = [&](const std::vector<torch::Tensor>& terms) { return s.gorSum ? torch::stack(terms).sum() : torch::stack(terms).mean(); };
      const torch::Tensor loss = s.gorMeanWeight * aggregate(means) + s.gorSecondMomentWeight * aggregate(moments);
      parts.regularizer += loss.item<double>();
      total = total + loss;
    }
  }
  if (s.sparse && (s.queryRegularizer > 0 || s.documentRegularizer > 0)) {
    // FLOPS (Paria et al. 2020): the squared mean weight of each vocabulary entry over the batch, summed.
    const auto flops = [](const torch::Tensor& v) { return v.to(torch::kFloat32).mean(0).square().sum(); };
    const torch::Tensor loss = s.queryRegularizer * flops(q.pooled) + s.documentRegularizer * flops(d.pooled);
    parts.regularizer = loss.item<double>();
    total = total + loss;
  }
  // Normalized in float32. With mixed precision on a GPU the fused MaxSim kernels then take the token
  // vectors in the autocast dtype, which runs their products on the tensor cores (accumulating in float32);
  // on the CPU they stay float32.
  const torch::ScalarType tokens = enc.device.is_cuda() ? autocast : torch::kFloat32;
  const bool distillTokens = s.distillationWeight > 0 && s.projectTokens;
  torch::Tensor qt, dt;
  if (s.lateInteractionWeight > 0 || distillTokens) {
    qt = unit(q.states.to(torch::kFloat32)).to(tokens);
    dt = unit(d.states.to(torch::kFloat32)).to(tokens);
  }
  if (s.lateInteractionWeight > 0) {
    ops::LateInteractionOptions late;
    late.kind = s.bce ? ops::LateInteractionOptions::Kind::Bce : ops::LateInteractionOptions::Kind::CrossEntropy;
    late.normalizeByQueryLength = true;
    late.symmetric = s.symmetric;
    torch::Tensor loss;
    if (s.guideDocuments.defined()) {
      // The cross-entropy over MaxSim scores, with the guide's false negatives left out.
      ops::MaxSimOptions all;
      all.normalizeByQueryLength = true;
      loss = guidedCrossEntropy({ops::maxsim(qt, qMask.to(torch::kUInt8), dt, dMask.to(torch::kUInt8), all)}, {s.guideDocuments}, tau);
    } else {
      loss = ops::lateInteractionLoss(qt, qMask.to(torch::kUInt8), dt, dMask.to(torch::kUInt8), tau, late);
    }
    parts.lateInteraction = loss.item<double>();
    total = total + s.lateInteractionWeight * loss;
  }
  if (s.distillationWeight > 0 && s.teacherScores.defined()) {
    // The student's score of each query's candidates, on the scale its other losses use: cosine / tau of the
    // pooled vectors, or, for a multi-vector model, MaxSim over the query's tokens / tau (the fused op in
    // paired mode on the query repeated once per candidate).
    const torch::Tensor candidates = s.teacherCandidates.to(enc.device);
    const torch::Tensor valid = candidates.ge(0);
    const torch::Tensor index = candidates.clamp_min(0).flatten();
    const int64_t rows = candidates.size(0), perQuery = candidates.size(1);
    const torch::Tensor teacher = s.teacherScores.to(enc.device) / s.teacherTemperature;
    torch::Tensor loss;
    if (distillTokens) {
      const torch::Tensor queryRows = torch::arange(rows, candidates.options()).repeat_interleave(perQuery);
      ops::MaxSimOptions paired;
      paired.paired = true;
      paired.normalizeByQueryLength = true;
      const torch::Tensor student =
          ops::maxsim(qt.index_select(0, queryRows), qMask.index_select(0, queryRows).to(torch::kUInt8), dt.index_select(0, index),
                      dMask.index_select(0, index).to(torch::kUInt8), paired)
              .view({rows, perQuery});
      loss = distillationLoss(student / tau, teacher, valid, s.distillationKl);
    } else {
      loss = torch::zeros({}, total.options());
      for (const auto& [dim, weight] : widths) {
        const torch::Tensor qp = pooledAt(q, dim), dp = pooledAt(d, dim);
        const torch::Tensor student = (qp.unsqueeze(1) * dp.index_select(0, index).view({rows, perQuery, -1})).sum(-1);
        loss = loss + weight * distillationLoss(student / tau, teacher, valid, s.distillationKl);
      }
    }
    parts.distillation = loss.item<double>();
    total = total + s.distillationWeight * loss;
  }
  parts.total = total.item<double>();
  return {total, parts};
}

// batchLoss, with AdaptiveLayerLoss around it where the step has adaptive layers (StepOptions::adaptiveLayers): the
// final layer's loss times lastLayerWeight, each layer's (its pooled vectors in place of the final ones) times its
// weight, and each layer's KL divergence from the final layer. The parts are the final layer's, the total the whole.
std::pair<torch::Tensor, LossParts> stepLoss(const LoadedEncoder& enc, const Encoded& q, const torch::Tensor& qMask, const Encoded& d,
                                             const torch::Tensor& dMask, const StepOptions& s, torch::ScalarType autocast) {
  auto result = batchLoss(enc, q, qMask, d, dMask, s, autocast);
  if (s.adaptiveLayers.empty()) return result;
  auto& [total, parts] = result;
  total = total * s.lastLayerWeight;
  // Every text's vector of the batch (queries, then documents) as the model gives it: sentence-transformers' KL term
  // reads the sentence embeddings, after every module of the model.
  const auto given = [&](const torch::Tensor& qp, const torch::Tensor& dp) {
    const torch::Tensor rows = (dp.defined() ? torch::cat({qp, dp}) : qp).to(torch::kFloat32);
    return s.normalizedVectors ? F::normalize(rows, F::NormalizeFuncOptions().dim(-1)) : rows;
  };
  torch::Tensor target;
  if (s.klTemperature > 0) target = F::softmax(given(q.pooled, d.pooled) / s.klTemperature, F::SoftmaxFuncOptions(-1)).detach();
  for (size_t i = 0; i < s.adaptiveLayers.size(); ++i) {
    Encoded ql, dl;
    ql.pooled = q.layerPooled[i];
    if (d.pooled.defined()) dl.pooled = d.layerPooled[i];
    total = total + s.adaptiveLayers[i].second * batchLoss(enc, ql, qMask, dl, dMask, s, autocast).first;
    if (s.klTemperature > 0) {
      const torch::Tensor logProbabilities = F::log_softmax(given(ql.pooled, dl.pooled) / s.klTemperature, F::LogSoftmaxFuncOptions(-1));
      total = total + (s.klTemperature * s.klWeight) * F::kl_div(logProbabilities, target, F::KLDivFuncOptions().reduction(torch::kBatchMean));
    }
  }
  parts.total = total.item<double>();
  return result;
}

// A cross-encoder's batch: B queries each read with the same N documents ([B * N] pairs, query-major); query
// i's positive is document i, and the other documents (the other queries' positives, then shared hard
// negatives) are its negatives. 'cross_entropy' is the listwise loss sentence-transformers' cross-encoder
// MultipleNegativesRankingLoss computes: cross-entropy over each query's row of activation(logit) * scale.
// 'bce': binary cross-entropy on the logits, 1 for the positive pair and 0 for every other. With pairLabels (one
// document per query: labeled pairs), 'bce' is the binary cross-entropy of each pair's logit with its label in [0, 1]
// (sentence-transformers' cross-encoder BinaryCrossEntropyLoss).
std::pair<torch::Tensor, LossParts> crossEncoderLoss(LoadedEncoder& enc, const Side& pairs, const StepOptions& s,
                                                     torch::ScalarType autocast) {
  torch::Tensor states;
  {
    AutocastScope scope(enc.device, autocast);
    states = enc.model->forward(pairs.ids, pairs.mask, pairs.types);
  }
  const int64_t perQuery = s.documentsPerQuery, queries = pairs.batch / perQuery;
  const torch::Tensor logits = enc.classify(states, pairs.mask, enc.model->is_training()).view({queries, perQuery});
  const auto options = torch::TensorOptions().device(enc.device);
  torch::Tensor loss;
  if (s.pairLabels.defined()) {
    loss = F::binary_cross_entropy_with_logits(logits.view({-1}), s.pairLabels.to(enc.device));
  } else if (s.crossEncoderBce) {
    loss = F::binary_cross_entropy_with_logits(logits, torch::eye(queries, perQuery, options));
  } else {
    const torch::Tensor scores = (s.sigmoidScores ? torch::sigmoid(logits) : logits) * s.scale;
    loss = F::cross_entropy(scores, torch::arange(queries, options.dtype(torch::kInt64)));
  }
  LossParts parts;
  parts.total = loss.item<double>();
  return {loss, parts};
}

// ContextFlow's loss (RAG-Sequence, Lewis et al. 2020, with a decoder-only generator): for query m and its K
// retrieved documents z_k, the retriever's p(z_k | x) = softmax_k(cos(q_m, d_mk) / tau) over those K, the
// generator's log p(y | f(x, z_k)) = Σ log p of the answer tokens after the prompt that holds the document and
// the question (`g`: B * K sequences, query-major, outputMask marking the answer), and the loss
// -1/B Σ_m log Σ_k p(z_k | x) p(y | f(x, z_k)), in log space (logsumexp). Its gradient trains the retriever to
// put its probability on the documents that make the answer likely, and the generator (unless frozen, when its
// log-likelihoods are constants computed without autograd) to use them.
std::pair<torch::Tensor, LossParts> ragLoss(const TrainerState& state, const Side& q, const Side& d, const Side& g, const StepOptions& s,
                                            torch::ScalarType autocast) {
  LoadedEncoder& enc = *state.encoder;
  LoadedEncoder& gen = *state.generator;
  const int64_t queries = q.batch, k = s.documentsPerQuery;
  StepOptions pooled = s;  // the retriever's pooled vectors only
  pooled.contrastiveWeight = 1;
  pooled.lateInteractionWeight = pooled.distillationWeight = 0;
  pooled.projectTokens = false;
  const auto unit = [](const torch::Tensor& x) { return F::normalize(x, F::NormalizeFuncOptions().dim(-1)); };
  const torch::Tensor qp = unit(encode(enc, q.ids, q.mask, q.types, q.scored, pooled, autocast).pooled.to(torch::kFloat32));
  const torch::Tensor dp = unit(encode(enc, d.ids, d.mask, d.types, d.scored, pooled, autocast).pooled.to(torch::kFloat32));
  const torch::Tensor logRetrieve = torch::log_softmax((dp.view({queries, k, -1}) * qp.unsqueeze(1)).sum(-1) / s.temperature, 1);
  torch::Tensor logGenerate;
  {
    std::optional<torch::NoGradGuard> frozen;
    if (state.generatorFrozen) frozen.emplace();
    AutocastScope scope(gen.device, autocast);
    logGenerate = sequenceLogLikelihood(gen, g.ids, g.mask, g.scored).view({queries, k});
  }
  const torch::Tensor loss = -torch::logsumexp(logRetrieve + logGenerate, 1).mean();
  LossParts parts;
  parts.total = loss.item<double>();
  parts.generation = -(logRetrieve.detach().exp() * logGenerate.detach()).sum(1).mean().item<double>();
  return {loss, parts};
}

// The masked-language-model loss of a batch: the head's vocabulary logits at the positions with a label, and the
// mean cross-entropy of each label among them, as transformers' *ForMaskedLM computes it (CrossEntropyLoss over every
// position, -100 ignored). Only the labelled positions go through the head, never [B, S, vocab].
std::pair<torch::Tensor, LossParts> mlmLoss(LoadedEncoder& enc, const Side& inputs, const StepOptions& s, torch::ScalarType autocast) {
  if (!enc.mlm) throw invalidArgument("masked-language-model training needs the model loaded with its masked-LM head");
  const torch::Tensor labels = s.mlmLabels.to(enc.device).view({-1});
  const torch::Tensor positions = labels.ne(-100).nonzero().squeeze(1);
  torch::Tensor logits;
  {
    AutocastScope scope(enc.device, autocast);
    const torch::Tensor states = enc.model->forward(inputs.ids, inputs.mask, inputs.types);
    logits = enc.mlm->logits(states.reshape({-1, states.size(-1)}).index_select(0, positions), enc.model->tokenEmbeddings());
  }
  const torch::Tensor loss = F::cross_entropy(logits.to(torch::kFloat32), labels.index_select(0, positions));
  LossParts parts;
  parts.total = loss.item<double>();
  return {loss, parts};
}

// Gradient caching (GradCache, Gao et al. 2021; sentence-transformers' Cached* losses): the batch is
// encoded `miniBatchSize` texts at a time without autograd, the loss and its gradient with respect to the
// token states and pooled vectors are computed over the whole batch, and then each mini-batch is encoded
// again with autograd and backpropagates its slice of that gradient. The gradients are those of the whole
// batch (the loss is not split), while the encoder's activations are held for one mini-batch at a time, so
// the batch size, and with it the number of in-batch negatives, is bounded by the fused losses' O(B·N)
// memory rather than by the encoder. The price is a second forward pass. Each mini-batch's second pass
// replays the random-number state of its first (dropout draws the same masks); mini-batches hold texts of
// similar length and are cut to their own longest.
class MiniBatches {
 public:
  MiniBatches(const torch::Device& device, const StepOptions& s, torch::ScalarType autocast)
      : s_(s), autocast_(autocast), generator_(at::globalContext().defaultGenerator(device)) {}

  // Encodes every mini-batch of `side` with `enc` (grad mode as the caller set it) and returns the whole side in the
  // batch's row order, padded back to its length; remembers each mini-batch's rows, length and
  // random-number state for backward(). With more than one mini-batch the rows go longest first, so that
  // each mini-batch holds texts of similar length and pads little.
  Encoded encodeAll(const Side& side, LoadedEncoder& enc) {
    std::vector<int64_t> order(static_cast<size_t>(side.batch));
    std::iota(order.begin(), order.end(), int64_t{0});
    if (side.batch > s_.miniBatchSize) {
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return side.lengths[static_cast<size_t>(a)] > side.lengths[static_cast<size_t>(b)];
      });
    }
    // The token states are kept only for the token losses (or to verify the second pass): with the
    // contrastive loss alone, [batch, seq, dim] of them would be most of the memory a step needs.
    const bool keepStates = s_.lateInteractionWeight > 0 || (s_.distillationWeight > 0 && s_.projectTokens) || s_.verifyMiniBatches;
    Encoded all;
    for (int64_t start = 0; start < side.batch; start += s_.miniBatchSize) {
      const auto first = order.begin() + start, last = first + std::min(s_.miniBatchSize, side.batch - start);
      Chunk c{&side, &enc, torch::tensor(std::vector<int64_t>(first, last), torch::kInt64).to(enc.device), 1, generatorState(generator_)};
      for (auto r = first; r != last; ++r) c.len = std::max(c.len, side.lengths[static_cast<size_t>(*r)]);
      const Encoded part = encodeChunk(c);
      if (keepStates && !all.states.defined()) {
        all.states = torch::zeros({side.batch, side.seq, part.states.size(2)}, part.states.options());
      }
      if (part.pooled.defined() && !all.pooled.defined()) {
        all.pooled = torch::zeros({side.batch, part.pooled.size(1)}, part.pooled.options());
      }
      if (keepStates) all.states.narrow(1, 0, c.len).index_copy_(0, c.rows, part.states);
      if (part.pooled.defined()) all.pooled.index_copy_(0, c.rows, part.pooled);
      chunks_.push_back(std::move(c));
    }
    return all;
  }

  // The second pass: every mini-batch encoded with autograd, backpropagating its rows of `grad` (the loss's
  // gradient with respect to the first pass's output of that mini-batch's side, `cached`). Returns the
  // largest difference between recomputed and cached outputs when asked to verify, else -1.
  double backward(const Side& q, const Encoded& qCached, const Encoded& qGrad, const Side& d, const Encoded& dCached,
                  const Encoded& dGrad) {
    const auto after = generatorState(generator_);
    double maxDiff = -1;
    for (const Chunk& c : chunks_) {
      const bool isQuery = c.side == &q;
      const Encoded& grad = isQuery ? qGrad : dGrad;
      const Encoded& cached = isQuery ? qCached : dCached;
      setGeneratorState(generator_, c.rng);
      const Encoded out = encodeChunk(c);
      // A loss with weight 0 leaves its input without a gradient.
      std::vector<torch::Tensor> outputs, grads;
      if (grad.states.defined()) {
        outputs.push_back(out.states);
        grads.push_back(grad.states.narrow(1, 0, c.len).index_select(0, c.rows));
      }
      if (grad.pooled.defined()) {
        outputs.push_back(out.pooled);
        grads.push_back(grad.pooled.index_select(0, c.rows));
      }
      if (s_.verifyMiniBatches) {
        const torch::Tensor first = cached.states.narrow(1, 0, c.len).index_select(0, c.rows);
        maxDiff = std::max(maxDiff, (out.states.detach().to(torch::kFloat32) - first.to(torch::kFloat32)).abs().max().item<double>());
      }
      torch::autograd::backward(outputs, grads);
    }
    setGeneratorState(generator_, after);
    return maxDiff;
  }

 private:
  struct Chunk {
    const Side* side;
    LoadedEncoder* enc;  // the model that encodes it (a Contrastive Tension run's queries: the twin)
    torch::Tensor rows;  // the batch rows it holds, on the model's device
    int64_t len;         // its longest text's length
    at::Tensor rng;
  };
  Encoded encodeChunk(const Chunk& c) {
    auto take = [&](const torch::Tensor& t) { return t.narrow(1, 0, c.len).index_select(0, c.rows); };
    return encode(*c.enc, take(c.side->ids), take(c.side->mask), take(c.side->types), take(c.side->scored), s_, autocast_);
  }

  const StepOptions& s_;
  torch::ScalarType autocast_;
  at::Generator generator_;  // the device's default generator, which dropout draws from
  std::vector<Chunk> chunks_;
};

// Both sides of a batch, the queries by the state's query encoder (the twin in Contrastive Tension) and the
// documents by its encoder: whole, or through `mini`'s first pass when gradient caching is on (grad mode as
// the caller set it).
std::pair<Encoded, Encoded> encodeBatch(const TrainerState& state, const Side& q, const Side& d, const StepOptions& s,
                                        torch::ScalarType autocast, MiniBatches* mini) {
  LoadedEncoder& qEnc = state.queryEncoder();
  LoadedEncoder& dEnc = *state.encoder;
  if (mini) {
    Encoded qe = mini->encodeAll(q, qEnc);
    return {std::move(qe), mini->encodeAll(d, dEnc)};
  }
  Encoded qe = encode(qEnc, q.ids, q.mask, q.types, q.scored, s, autocast);
  // A batch of texts alone (the batch triplet losses, embedding distillation of sentences alone) has no documents.
  if (d.batch == 0) return {std::move(qe), Encoded()};
  return {std::move(qe), encode(dEnc, d.ids, d.mask, d.types, d.scored, s, autocast)};
}

// Training or evaluation mode (dropout) for the state's model and its twin.
void setTraining(const TrainerState& state, bool on) {
  for (LoadedEncoder* e : {state.encoder.get(), state.twin.get()}) {
    if (e) e->model->train(on);
  }
  // A frozen generator stays in evaluation mode (no dropout), as a frozen model is run.
  if (state.generator) state.generator->model->train(on && !state.generatorFrozen);
}

// Holds the state's model (and its twin's) for one step or state transfer: one forward at a time per model.
class ModelLock {
 public:
  explicit ModelLock(const TrainerState& state) : encoder_(state.encoder->mutex) {
    if (state.twin) twin_ = std::unique_lock<std::mutex>(state.twin->mutex);
    if (state.generator) generator_ = std::unique_lock<std::mutex>(state.generator->mutex);
  }

 private:
  std::unique_lock<std::mutex> encoder_, twin_, generator_;
};

// Holds the global CPU generator on the run's state for the guard's lifetime and saves where it got to;
// on a GPU, the device's generator too (dropout there draws from it). Steps of all trainers in the process,
// and model construction (runtime.h), take turns with the generators.
class RngScope {
 public:
  RngScope(TrainerState& state, const torch::Device& device)
      : lock_(cpuGeneratorMutex()), cpuState_(state.rngState), cpu_(at::detail::getDefaultCPUGenerator()) {
    setGeneratorState(cpu_, cpuState_);
    if (device.is_cuda() && state.cudaRngState.defined()) {
      cudaState_ = &state.cudaRngState;
      cuda_ = at::globalContext().defaultGenerator(device);
      setGeneratorState(cuda_, *cudaState_);
    }
  }
  ~RngScope() {
    cpuState_ = generatorState(cpu_);
    if (cudaState_) *cudaState_ = generatorState(cuda_);
  }

 private:
  std::lock_guard<std::mutex> lock_;
  at::Tensor& cpuState_;
  at::Generator cpu_;
  at::Tensor* cudaState_ = nullptr;
  at::Generator cuda_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<TrainerState> state, TokenBatch q, TokenBatch d, StepOptions options,
             bool train, TokenBatch g = TokenBatch())
      : PromiseWorker(env, state->encoder->device),
        state_(std::move(state)),
        q_(std::move(q)),
        d_(std::move(d)),
        g_(std::move(g)),
        options_(options),
        train_(train) {}

 protected:
  void compute() override {
    const auto started = std::chrono::steady_clock::now();
    LoadedEncoder& enc = *state_->encoder;
    ModelLock lock(*state_);
    if (!train_ && options_.mlm) {
      torch::NoGradGuard noGrad;
      enc.model->eval();
      parts_ = mlmLoss(enc, Side(q_, enc.device), options_, state_->autocast).second;
    } else if (!train_ && options_.rag) {
      torch::NoGradGuard noGrad;
      setTraining(*state_, false);
      parts_ = ragLoss(*state_, Side(q_, enc.device), Side(d_, enc.device), Side(g_, enc.device), options_, state_->autocast).second;
    } else if (!train_ && options_.crossEncoder) {
      torch::NoGradGuard noGrad;
      enc.model->eval();
      parts_ = crossEncoderLoss(enc, Side(q_, enc.device), options_, state_->autocast).second;
    } else if (!train_) {
      torch::NoGradGuard noGrad;
      setTraining(*state_, false);
      const Side q(q_, enc.device), d(d_, enc.device);
      MiniBatches mini(enc.device, options_, state_->autocast);
      const auto [qe, de] = encodeBatch(*state_, q, d, options_, state_->autocast, options_.miniBatchSize > 0 ? &mini : nullptr);
      parts_ = stepLoss(enc, qe, lateMask(q, options_), de, lateMask(d, options_), options_, state_->autocast).second;
    } else {
      RngScope rng(*state_, enc.device);
      setTraining(*state_, true);
      try {
        trainStep(enc);
      } catch (...) {
        // A step that failed part-way (out of memory in backward, say) must not leave its partial
        // gradients for the next one to add to; gradients accumulated by earlier batches go too.
        state_->optimizer->zero_grad();
        setTraining(*state_, false);
        throw;
      }
      setTraining(*state_, false);
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  void trainStep(LoadedEncoder& enc) {
    GradScaler& scaler = state_->scaler;
    const double factor = options_.lossScale * scaler.lossFactor();
    if (options_.crossEncoder) {
      auto [loss, parts] = crossEncoderLoss(enc, Side(q_, enc.device), options_, state_->autocast);
      (loss * factor).backward();
      parts_ = parts;
    } else if (options_.mlm) {
      auto [loss, parts] = mlmLoss(enc, Side(q_, enc.device), options_, state_->autocast);
      (loss * factor).backward();
      parts_ = parts;
    } else if (options_.rag) {
      auto [loss, parts] = ragLoss(*state_, Side(q_, enc.device), Side(d_, enc.device), Side(g_, enc.device), options_, state_->autocast);
      (loss * factor).backward();
      parts_ = parts;
    } else {
      biEncoderStep(enc, factor);
    }
    update();
  }

  // Forward, losses and backward of an embedding model's batch (queries against documents).
  void biEncoderStep(LoadedEncoder& enc, double factor) {
    const Side q(q_, enc.device), d(d_, enc.device);
    if (options_.miniBatchSize > 0) {
      MiniBatches mini(enc.device, options_, state_->autocast);
      Encoded qe, de;
      {
        torch::NoGradGuard noGrad;
        std::tie(qe, de) = encodeBatch(*state_, q, d, options_, state_->autocast, &mini);
      }
      // The cached outputs as leaves: backward through the losses stops at them.
      for (Encoded* e : {&qe, &de}) {
        if (e->states.defined()) e->states.requires_grad_(true);
        if (e->pooled.defined()) e->pooled.requires_grad_(true);
      }
      auto [loss, parts] = stepLoss(enc, qe, lateMask(q, options_), de, lateMask(d, options_), options_, state_->autocast);
      (loss * factor).backward();
      parts_ = parts;
      auto gradOf = [](const Encoded& e) {
        Encoded g;
        if (e.states.defined()) g.states = e.states.grad();
        if (e.pooled.defined()) g.pooled = e.pooled.grad();
        return g;
      };
      const Encoded qGrad = gradOf(qe), dGrad = gradOf(de);
      parts_.miniBatchMaxDiff = mini.backward(q, qe, qGrad, d, de, dGrad);
    } else {
      const auto [qe, de] = encodeBatch(*state_, q, d, options_, state_->autocast, nullptr);
      auto [loss, parts] = stepLoss(enc, qe, lateMask(q, options_), de, lateMask(d, options_), options_, state_->autocast);
      (loss * factor).backward();
      parts_ = parts;
    }
  }

  // Unscaling, clipping and the AdamW update, when this batch ends a group of accumulated ones.
  void update() {
    GradScaler& scaler = state_->scaler;
    if (!options_.apply) return;
    auto params = state_->parameters();
    scaler.unscale(params);
    parts_.gradNorm = clipGradNorm(params, options_.maxGradNorm > 0 ? options_.maxGradNorm : std::numeric_limits<double>::infinity());
    const bool finite = std::isfinite(parts_.gradNorm);
    if (!finite && !scaler.enabled) {
      state_->optimizer->zero_grad();
      // Before the first update the learning rate has changed nothing: the loss itself overflowed.
      const std::string advice = state_->steps == 0
                                     ? "training diverged before any update (the loss overflows: lower options.loss's weights, raise its temperature, or train in float32)"
                                     : "training diverged (lower options.learningRate, keep gradient clipping on, or train in float32)";
      throw invalidArgument(std::string("the gradient norm is ") + (std::isnan(parts_.gradNorm) ? "NaN" : "infinite") +
                            " at step " + std::to_string(state_->steps + 1) + ": " + advice);
    }
    if (finite) {
      for (auto& group : state_->optimizer->param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(options_.learningRate);
      }
      adamwStep(*state_->optimizer);
    }
    parts_.skipped = !finite;
    scaler.update(finite);
    state_->optimizer->zero_grad();
    state_->steps++;
  }
  Napi::Value result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("loss", parts_.total);
    out.Set("contrastive", parts_.contrastive);
    out.Set("regularizer", parts_.regularizer);
    out.Set("lateInteraction", parts_.lateInteraction);
    out.Set("distillation", parts_.distillation);
    if (options_.rag) out.Set("generation", parts_.generation);
    out.Set("gradNorm", parts_.gradNorm);
    out.Set("skipped", parts_.skipped);
    out.Set("gradScale", state_->scaler.lossFactor());
    out.Set("seconds", seconds_);
    if (parts_.miniBatchMaxDiff >= 0) out.Set("miniBatchMaxDiff", parts_.miniBatchMaxDiff);
    return out;
  }

 private:
  std::shared_ptr<TrainerState> state_;
  TokenBatch q_, d_, g_;
  StepOptions options_;
  bool train_;
  LossParts parts_;
  double seconds_ = 0;  // wall time of compute(), for the caller's measure of its own overhead
};

// Optimizer and random-number state as safetensors (never pickle): for parameter i (in
// TrainerState::parameters() order: the model's, then the projection head's, then the same of a twin's) "adamw.i.exp_avg",
// "adamw.i.exp_avg_sq" and "adamw.i.step", plus "rng" (on a GPU also "rng.cuda") and "steps", and with
// float16's loss scaling "scaler.scale" and "scaler.growth_tracker".
class StateWorker : public PromiseWorker {
 public:
  StateWorker(Napi::Env env, std::shared_ptr<TrainerState> state, std::string path, bool save)
      : PromiseWorker(env, state->encoder->device), state_(std::move(state)), path_(std::move(path)), save_(save) {}

 protected:
  void compute() override {
    ModelLock lock(*state_);
    auto params = state_->parameters();
    auto& optimizerState = state_->optimizer->state();
    auto keyOf = [](const torch::Tensor& p) {
      return optimizerStateKey<typename std::decay_t<decltype(optimizerState)>::key_type>(p);
    };
    if (save_) {
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      for (size_t i = 0; i < params.size(); ++i) {
        auto found = optimizerState.find(keyOf(params[i]));
        if (found == optimizerState.end()) continue;  // no step taken for this parameter yet
        auto& s = static_cast<torch::optim::AdamWParamState&>(*found->second);
        const std::string prefix = "adamw." + std::to_string(i) + ".";
        tensors.emplace_back(prefix + "exp_avg", s.exp_avg());
        tensors.emplace_back(prefix + "exp_avg_sq", s.exp_avg_sq());
        tensors.emplace_back(prefix + "step", torch::full({1}, static_cast<int64_t>(s.step()), torch::kInt64));
      }
      tensors.emplace_back("rng", state_->rngState);
      if (state_->cudaRngState.defined()) tensors.emplace_back("rng.cuda", state_->cudaRngState);
      tensors.emplace_back("steps", torch::full({1}, state_->steps, torch::kInt64));
      if (state_->scaler.enabled) {
        tensors.emplace_back("scaler.scale", torch::full({1}, state_->scaler.scale, torch::kFloat64));
        tensors.emplace_back("scaler.growth_tracker", torch::full({1}, state_->scaler.growthTracker, torch::kInt64));
      }
      writeSafetensors(path_, tensors, {{"format", "coltrast-trainer"}});
      return;
    }
    SafetensorsFile file(path_);
    if (!file.has("rng") || !file.has("steps")) throw modelFilesError(path_ + " is not a coltrast trainer state (no rng/steps)");
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string prefix = "adamw." + std::to_string(i) + ".";
      if (!file.has(prefix + "exp_avg")) continue;
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      torch::Tensor avg = file.read(prefix + "exp_avg", torch::kFloat32).to(params[i].device());
      if (avg.sizes() != params[i].sizes()) throw modelFilesError(path_ + ": optimizer state does not match the model");
      s->exp_avg(avg);
      s->exp_avg_sq(file.read(prefix + "exp_avg_sq", torch::kFloat32).to(params[i].device()));
      s->step(file.read(prefix + "step", torch::kInt64).item<int64_t>());
      optimizerState[keyOf(params[i])] = std::move(s);
    }
    state_->rngState = file.read("rng", torch::kUInt8);
    if (state_->cudaRngState.defined() && file.has("rng.cuda")) state_->cudaRngState = file.read("rng.cuda", torch::kUInt8);
    state_->steps = file.read("steps", torch::kInt64).item<int64_t>();
    if (state_->scaler.enabled && file.has("scaler.scale")) {
      state_->scaler.scale = file.read("scaler.scale", torch::kFloat64).item<double>();
      state_->scaler.growthTracker = file.read("scaler.growth_tracker", torch::kInt64).item<int64_t>();
    }
  }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<TrainerState> state_;
  std::string path_;
  bool save_;
};

}  // namespace

std::vector<torch::Tensor> TrainerState::parameters() const {
  std::vector<torch::Tensor> all = encoder->parameters();
  for (LoadedEncoder* e : {twin.get(), generator.get()}) {
    if (!e) continue;
    for (auto& p : e->parameters()) all.push_back(p);
  }
  return all;
}

std::shared_ptr<TrainerState> TrainerWrap::live(Napi::Env env) const {
  if (!state_) throw jsError(env, {"DISPOSED", "this trainer was disposed"});
  return state_;
}

Napi::Value TrainerWrap::saveState(const Napi::CallbackInfo& info) {
  return (new StateWorker(info.Env(), live(info.Env()), info[0].As<Napi::String>(), true))->start();
}
Napi::Value TrainerWrap::loadState(const Napi::CallbackInfo& info) {
  return (new StateWorker(info.Env(), live(info.Env()), info[0].As<Napi::String>(), false))->start();
}

// Frees the optimizer state and the trainer's hold on the model now (steps in flight keep theirs until
// they end), rather than when V8 collects this object.
void TrainerWrap::dispose(const Napi::CallbackInfo&) { state_.reset(); }

Napi::Function TrainerWrap::define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeTrainer",
                                   {
                                       StaticMethod<&TrainerWrap::create>("create"),
                                       InstanceMethod<&TrainerWrap::step>("step"),
                                       InstanceMethod<&TrainerWrap::evaluate>("evaluate"),
                                       InstanceMethod<&TrainerWrap::saveState>("saveState"),
                                       InstanceMethod<&TrainerWrap::loadState>("loadState"),
                                       InstanceMethod<&TrainerWrap::dispose>("dispose"),
                                   });
  return cls;
}

TrainerWrap::TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeTrainer cannot be constructed directly; use NativeTrainer.create()");
  }
  // Moved, not copied: a copy in the External would keep the optimizer state (and the model) alive until
  // V8 collects the External.
  state_ = std::move(*info[0].As<Napi::External<std::shared_ptr<TrainerState>>>().Data());
}

// create(nativeEncoder, { weightDecay, beta1, beta2, eps, seed, precision, gradScaler, freezeBase, twin, generator,
// freezeGenerator, gradientCheckpointing }): AdamW
// over the encoder's parameters (only its heads' with freezeBase, only its LoRA adapters' when it has some), without weight decay on biases and LayerNorm
// weights (the usual BERT fine-tuning split). twin: a second NativeEncoder of the same model, trained with it (its
// parameters join the optimizer after the encoder's), that encodes the queries (Contrastive Tension). precision: 'float32' (default), 'bfloat16' or 'float16' (autocast; the weights stay float32).
// gradScaler: { initScale, growthFactor, backoffFactor, growthInterval } turns loss scaling on; float16
// turns it on with torch.amp.GradScaler's defaults.
Napi::Value TrainerWrap::create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto encoder = EncoderWrap::shared(info[0].As<Napi::Object>());
    auto o = info[1].As<Napi::Object>();
    if (encoder->dtype != torch::kFloat32) {
      throw invalidArgument("training needs the model loaded in float32; for mixed precision pass precision 'bfloat16' or 'float16' to the trainer");
    }
    const std::string precision = stringOr(o, "precision", "float32");
    torch::ScalarType autocast;
    if (precision == "float32") {
      autocast = torch::kFloat32;
    } else if (precision == "bfloat16") {
      autocast = torch::kBFloat16;
    } else if (precision == "float16") {
      autocast = torch::kFloat16;
    } else {
      throw invalidArgument("precision must be 'float32', 'bfloat16' or 'float16', not '" + precision + "'");
    }
    checkAutocast(encoder->device, autocast);
    std::shared_ptr<LoadedEncoder> twin;
    if (!o.Get("twin").IsUndefined()) {
      if (!o.Get("twin").IsObject()) throw invalidArgument("twin must be a NativeEncoder");
      twin = EncoderWrap::shared(o.Get("twin").As<Napi::Object>());
      if (twin == encoder) throw invalidArgument("twin must be a second copy of the model, not the model itself");
      const auto ours = encoder->parameters(), theirs = twin->parameters();
      bool same = twin->dtype == torch::kFloat32 && twin->device == encoder->device && ours.size() == theirs.size() &&
                  !twin->classifier && !encoder->classifier;
      for (size_t i = 0; same && i < ours.size(); ++i) same = ours[i].sizes() == theirs[i].sizes();
      if (!same) throw invalidArgument("twin must be the same embedding model as the trained one (float32, on the same device)");
    }
    std::shared_ptr<LoadedEncoder> generator;
    const bool generatorFrozen = boolOr(o, "freezeGenerator", false);
    if (!o.Get("generator").IsUndefined()) {
      if (!o.Get("generator").IsObject()) throw invalidArgument("generator must be a NativeEncoder loaded as a causal language model");
      generator = EncoderWrap::shared(o.Get("generator").As<Napi::Object>());
      if (!generator->causalLm()) throw invalidArgument("generator must be loaded as a causal language model (Generator.load)");
      if (generator == encoder || generator == twin) throw invalidArgument("the generator must be a model of its own, not the retriever");
      if (generator->device != encoder->device) throw invalidArgument("the generator and the retriever must be on the same device");
      if (!generatorFrozen && generator->dtype != torch::kFloat32) {
        throw invalidArgument("a trained generator must be loaded in float32 (for mixed precision pass precision to the trainer); a frozen one may be float16 or bfloat16");
      }
    }
    // int8 projections run only without autograd, and training would leave them behind the float weights it changes.
    for (const auto* e : {encoder.get(), twin.get(), generator.get()}) {
      if (e && e->model->quantizedInt8()) throw invalidArgument("a model loaded with quantize: 'int8' is for inference: load it without quantize to train with it");
    }
    GradScaler scaler;
    scaler.enabled = autocast == torch::kFloat16;
    if (o.Get("gradScaler").IsObject()) {
      auto g = o.Get("gradScaler").As<Napi::Object>();
      scaler.enabled = true;
      scaler.scale = numberOr(g, "initScale", scaler.scale);
      scaler.growthFactor = numberOr(g, "growthFactor", scaler.growthFactor);
      scaler.backoffFactor = numberOr(g, "backoffFactor", scaler.backoffFactor);
      const double interval = numberOr(g, "growthInterval", static_cast<double>(scaler.growthInterval));
      if (!(scaler.scale > 0) || !(scaler.growthFactor >= 1) || !(scaler.backoffFactor > 0 && scaler.backoffFactor < 1) ||
          !(interval >= 1 && interval <= double(kMaxSafeInteger)) || interval != std::floor(interval)) {
        throw invalidArgument("gradScaler needs initScale > 0, growthFactor >= 1, 0 < backoffFactor < 1 and growthInterval >= 1");
      }
      scaler.growthInterval = static_cast<int64_t>(interval);
    }
    // freezeBase: only the heads train (the transformer's parameters get no gradient, so backward stops at its
    // output and keeps none of its activations).
    const bool freezeBase = boolOr(o, "freezeBase", false);
    auto state = std::make_shared<TrainerState>();
    state->encoder = std::move(encoder);
    state->twin = std::move(twin);
    state->generator = std::move(generator);
    state->generatorFrozen = generatorFrozen;
    // Gradient checkpointing: every trained model's layers recompute their activations in backward.
    const bool checkpointing = boolOr(o, "gradientCheckpointing", false);
    for (LoadedEncoder* e : {state->encoder.get(), state->twin.get(), state->generator.get()}) {
      if (e) e->model->gradientCheckpointing = checkpointing;
    }
    std::set<const void*> frozen;
    if (state->generator && generatorFrozen) {
      for (const auto& p : state->generator->parameters()) frozen.insert(p.unsafeGetTensorImpl());
    }
    if (freezeBase) {
      for (LoadedEncoder* e : {state->encoder.get(), state->twin.get()}) {
        if (!e) continue;
        for (const auto& p : e->model->parameters()) frozen.insert(p.unsafeGetTensorImpl());
      }
      if (frozen.size() == state->parameters().size()) throw invalidArgument("freezeBase leaves nothing to train: the model has no head");
    }
    if (state->encoder->model->hasLora()) {
      // LoRA: only the adapters train, and a cross-encoder's head modules named in modules_to_save (as PEFT trains
      // them); the base model and the other heads stay as they are (what an adapter file holds is then the whole change).
      if (freezeBase || state->twin) throw invalidArgument("a model with LoRA adapters trains only them: no freezeBase, no twin");
      std::set<const void*> adapters;
      for (const auto& p : state->encoder->model->loraParameters()) adapters.insert(p.unsafeGetTensorImpl());
      for (const auto& [name, p] : state->encoder->headTensorsMatching(state->encoder->loraModulesToSave)) adapters.insert(p.unsafeGetTensorImpl());
      for (const auto& p : state->encoder->parameters())
        if (!adapters.count(p.unsafeGetTensorImpl())) frozen.insert(p.unsafeGetTensorImpl());
    }
    if (!frozen.empty() && frozen.size() == state->parameters().size()) {
      throw invalidArgument("nothing to train: every parameter is frozen");
    }
    std::vector<torch::Tensor> decay, noDecay;
    for (auto& p : state->parameters()) {
      const bool trains = frozen.count(p.unsafeGetTensorImpl()) == 0;
      p.set_requires_grad(trains);
      if (trains) (p.dim() >= 2 ? decay : noDecay).push_back(p);
    }
    auto options = torch::optim::AdamWOptions(numberOr(o, "learningRate", 2e-5))
                       .betas({numberOr(o, "beta1", 0.9), numberOr(o, "beta2", 0.999)})
                       .eps(numberOr(o, "eps", 1e-8));
    std::vector<torch::optim::OptimizerParamGroup> groups;
    if (!decay.empty()) {
      groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                     torch::optim::AdamWOptions(options).weight_decay(numberOr(o, "weightDecay", 0.01))));
    }
    if (!noDecay.empty()) {
      groups.emplace_back(noDecay,
                          std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
    }
    state->autocast = autocast;
    state->scaler = scaler;
    const auto seed = static_cast<uint64_t>(integerOr(o, "seed", 0, kMaxSafeInteger, 42));
    state->rngState = at::detail::createCPUGenerator(seed).get_state();
    if (state->encoder->device.is_cuda()) {
      // The device generator's state for this seed, read by seeding it and putting it back as it was.
      // One locked section: a step elsewhere must not draw from the generator while it holds this seed.
      at::Generator cuda = at::globalContext().defaultGenerator(state->encoder->device);
      std::lock_guard<std::mutex> lock(cuda.mutex());
      const at::Tensor before = cuda.get_state();
      cuda.set_current_seed(seed);
      state->cudaRngState = cuda.get_state();
      cuda.set_state(before);
    }
    state->optimizer = std::make_unique<torch::optim::AdamW>(groups, options);
    auto holder = Napi::External<std::shared_ptr<TrainerState>>::New(
        env, new std::shared_ptr<TrainerState>(std::move(state)), [](Napi::Env, std::shared_ptr<TrainerState>* p) { delete p; });
    // A static method's `this` is the class itself (JS calls NativeTrainer.create(...)).
    return info.This().As<Napi::Function>().New({holder});
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value TrainerWrap::step(const Napi::CallbackInfo& info) { return run(info, true); }
Napi::Value TrainerWrap::evaluate(const Napi::CallbackInfo& info) { return run(info, false); }

Napi::Value TrainerWrap::run(const Napi::CallbackInfo& info, bool train) {
  Napi::Env env = info.Env();
  try {
    auto args = info[0].As<Napi::Object>();
    auto batchAt = [&](const char* key) {
      if (!args.Get(key).IsObject()) throw invalidArgument(std::string(key) + " must be a padded token batch");
      TokenBatch b = readTokenBatch(args.Get(key).As<Napi::Object>(), key);
      const auto state = live(env);
      // The generator's sequences go to the generator, everything else to the model trained (a twin has its vocabulary).
      checkTokens(b, *(std::string(key) == "sequences" && state->generator ? state->generator : state->encoder)->model, key);
      return b;
    };
    StepOptions options = readStepOptions(args);
    options.mlm = boolOr(args, "mlm", false);
    options.rag = boolOr(args, "rag", false);
    if (!options.adaptiveLayers.empty() && (options.mlm || options.rag)) throw invalidArgument("adaptive layers train embedding models: not in mlm or rag steps");
    if (options.mlm) {
      // inputs: the texts with some tokens masked; labels: Int32Array [batch * seq], the token to predict at each
      // position or -100 (none).
      auto state = live(env);
      if (!state->encoder->mlm) throw invalidArgument("mlm steps need a model loaded with its masked-LM head (a SparseEncoder)");
      if (state->twin || state->generator || options.crossEncoder || options.sparse || options.miniBatchSize > 0) {
        throw invalidArgument("mlm steps take no twin, generator, crossEncoder, sparse or miniBatchSize");
      }
      TokenBatch inputs = batchAt("inputs");
      if (inputs.batch < 1) throw invalidArgument("inputs must hold at least one text");
      const Napi::Value given = args.Get("labels");
      if (!given.IsTypedArray() || given.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) throw invalidArgument("labels must be an Int32Array");
      auto labels = given.As<Napi::Int32Array>();
      if (static_cast<int64_t>(labels.ElementLength()) != inputs.batch * inputs.seq) {
        throw invalidArgument("labels must hold one value per input position (" + std::to_string(inputs.batch * inputs.seq) + ")");
      }
      const int64_t vocab = state->encoder->model->tokenEmbeddings().size(0);
      bool any = false;
      for (size_t i = 0; i < labels.ElementLength(); ++i) {
        const int32_t label = labels.Data()[i];
        if (label == -100) continue;
        if (label < 0 || label >= vocab) throw invalidArgument("labels must be token ids below " + std::to_string(vocab) + ", or -100 (no label)");
        if (inputs.mask[i] == 0) throw invalidArgument("labels must be -100 at padding positions");
        any = true;
      }
      if (!any) throw invalidArgument("labels must mark at least one position to predict");
      options.mlmLabels = torch::from_blob(labels.Data(), {inputs.batch, inputs.seq}, torch::kInt32).to(torch::kInt64);
      return (new StepWorker(env, state, std::move(inputs), TokenBatch(), options, train))->start();
    }
    if (options.rag) {
      auto state = live(env);
      if (!state->generator) throw invalidArgument("rag steps need a trainer created with a generator");
      if (options.crossEncoder || options.sparse || options.miniBatchSize > 0) throw invalidArgument("rag steps take no crossEncoder, sparse or miniBatchSize");
      TokenBatch q = batchAt("queries"), d = batchAt("documents"), g = batchAt("sequences");
      options.documentsPerQuery = integerOr(args, "documentsPerQuery", 0, INT32_MAX, 0);
      const int64_t k = options.documentsPerQuery;
      if (q.batch < 1 || k < 1 || d.batch != q.batch * k || g.batch != q.batch * k) {
        throw invalidArgument("a rag step takes B >= 1 queries, B * documentsPerQuery documents and as many generator sequences");
      }
      if (g.scored.empty()) throw invalidArgument("sequences.outputMask must mark the answer tokens");
      return (new StepWorker(env, state, std::move(q), std::move(d), options, train, std::move(g)))->start();
    }
    if (options.crossEncoder) {
      if (live(env)->twin) throw invalidArgument("a trainer with a twin (Contrastive Tension) trains embedding models, not cross-encoders");
      if (!live(env)->encoder->scores()) throw invalidArgument("crossEncoder steps need a model with a score head (a CrossEncoder)");
      // Every query with every document: `pairs` holds them query-major, `documentsPerQuery` per query.
      TokenBatch pairs = batchAt("pairs");
      options.documentsPerQuery = integerOr(args, "documentsPerQuery", 0, INT32_MAX, 0);
      const int64_t n = options.documentsPerQuery;
      const Napi::Value labeled = args.Get("pairLabels");
      if (!labeled.IsUndefined()) {
        // Labeled pairs: each pair its own query's one document, and its label in [0, 1].
        const std::vector<float> labels = floatsOf(labeled, 1, "pairLabels");
        if (n != 1 || pairs.batch < 1 || static_cast<int64_t>(labels.size()) != pairs.batch || !options.crossEncoderBce) {
          throw invalidArgument("a cross-encoder's labeled pairs take documentsPerQuery 1, one label per pair and crossEncoderLoss 'bce'");
        }
        for (const float label : labels) {
          if (!(label >= 0 && label <= 1)) throw invalidArgument("a cross-encoder's pairLabels must be numbers in [0, 1]");
        }
        options.pairLabels = torch::tensor(labels, torch::kFloat32);
      } else if (n < 1 || pairs.batch % n != 0 || pairs.batch / n > n || pairs.batch < 1) {
        throw invalidArgument("pairs must hold B * documentsPerQuery pairs with 1 <= B <= documentsPerQuery");
      }
      return (new StepWorker(env, live(env), std::move(pairs), TokenBatch(), options, train))->start();
    }
    TokenBatch q = batchAt("queries"), d = batchAt("documents");
    if (q.batch < 1) throw invalidArgument("queries must hold at least one text");
    if (options.batchTriplet != StepOptions::BatchTriplet::None) {
      // classLabels: Int32Array [B], each text's class; the texts are the queries, with no documents.
      const std::vector<int64_t> labels = int32ArrayOf<int64_t>(args.Get("classLabels"), "classLabels");
      if (static_cast<int64_t>(labels.size()) != q.batch || d.batch != 0) throw invalidArgument("a batch triplet loss takes B texts as queries, no documents and B classLabels");
      if (args.Get("guide").IsObject() || args.Get("teacher").IsObject() || !args.Get("targetVectors").IsUndefined()) throw invalidArgument("a batch triplet loss takes no guide, teacher or targetVectors");
      options.classLabels = torch::tensor(labels, torch::kInt64);
      return (new StepWorker(env, live(env), std::move(q), std::move(d), options, train))->start();
    }
    if (d.batch < q.batch && !(d.batch == 0 && !args.Get("targetVectors").IsUndefined())) throw invalidArgument("documents must hold at least one positive per query");
    if (args.Get("teacher").IsObject()) readTeacher(args.Get("teacher").As<Napi::Object>(), q.batch, d.batch, options);
    if (options.megaBatchMargin && d.batch != q.batch) throw invalidArgument("MegaBatchMarginLoss takes B queries and B documents (document i is query i's pair), no others");
    if (options.pairLoss != StepOptions::PairLoss::None) {
      // pairLabels: Float32Array [B], query i and document i a pair; no other documents.
      const std::vector<float> labels = floatsOf(args.Get("pairLabels"), 1, "pairLabels");
      if (d.batch != q.batch || static_cast<int64_t>(labels.size()) != q.batch) {
        throw invalidArgument("a pair loss takes B queries, B documents (document i is query i's pair) and B pairLabels");
      }
      for (const float label : labels) {
        if (!std::isfinite(label)) throw invalidArgument("pairLabels must be finite numbers");
      }
      if (args.Get("guide").IsObject() || options.teacherScores.defined()) throw invalidArgument("a pair loss takes no guide or teacher");
      options.pairLabels = torch::tensor(labels, torch::kFloat32);
    }
    if (options.tripletDistance != StepOptions::TripletDistance::None) {
      // tripletNegatives: Int32Array [B], query i's negative among the documents (not its own positive).
      const std::vector<int64_t> negatives = int32ArrayOf<int64_t>(args.Get("tripletNegatives"), "tripletNegatives");
      if (static_cast<int64_t>(negatives.size()) != q.batch) throw invalidArgument("tripletNegatives must hold one document per query (" + std::to_string(q.batch) + ")");
      for (size_t i = 0; i < negatives.size(); ++i) {
        if (negatives[i] < 0 || negatives[i] >= d.batch || negatives[i] == static_cast<int64_t>(i)) throw invalidArgument("tripletNegatives must be documents of the batch, other than the query's own positive");
      }
      if (args.Get("guide").IsObject() || options.teacherScores.defined()) throw invalidArgument("a triplet loss takes no guide or teacher");
      options.tripletNegatives = torch::tensor(negatives, torch::kInt64);
    }
    if (!args.Get("targetVectors").IsUndefined()) {
      // targetVectors: Float32Array [B * width], the teacher's vector of each query; document i is query i's translation,
      // or there are no documents (sentences alone).
      const std::vector<float> target = floatsOf(args.Get("targetVectors"), q.batch, "targetVectors");
      if ((d.batch != q.batch && d.batch != 0) || target.empty()) {
        throw invalidArgument("embedding distillation takes B queries, B documents (document i is query i's translation) or none, and B targetVectors");
      }
      for (const float x : target) {
        if (!std::isfinite(x)) throw invalidArgument("targetVectors must be finite numbers");
      }
      if (options.contrastiveWeight > 0 || options.lateInteractionWeight > 0 || options.distillationWeight > 0 || options.pairLoss != StepOptions::PairLoss::None ||
          options.tripletDistance != StepOptions::TripletDistance::None || options.projectTokens || options.sparse || !options.matryoshka.empty() ||
          args.Get("guide").IsObject() || options.teacherScores.defined()) {
        throw invalidArgument("embedding distillation (targetVectors) is the step's whole loss, on a single-vector model's full pooled vectors: no other loss, Matryoshka widths, guide or teacher scores");
      }
      const auto width = static_cast<int64_t>(target.size()) / q.batch;
      options.targetVectors = torch::tensor(target, torch::kFloat32).view({q.batch, width});
    }
    if (args.Get("guide").IsObject()) {
      if (options.symmetric || (options.bce && options.lateInteractionWeight > 0)) {
        throw invalidArgument("a guide filters the one-directional cross-entropy losses: not with symmetric or bce");
      }
      readGuide(args.Get("guide").As<Napi::Object>(), q.batch, d.batch, options);
    }
    if (options.distillationWeight > 0 && !options.teacherScores.defined()) {
      throw invalidArgument("distillationWeight > 0 needs the teacher's scores of the batch (teacher)");
    }
    return (new StepWorker(env, live(env), std::move(q), std::move(d), options, train))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

}  // namespace coltrast
