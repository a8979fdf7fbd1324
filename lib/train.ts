/**
 * `train()`: ColTrast fine-tuning. TypeScript owns the data, batching, the learning-rate schedule,
 * validation and saving; every optimizer step (forward, contrastive + late-interaction loss, backward,
 * clipping, AdamW) is one native call (Encoder.createTrainer).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, readDecoderStart, type DecoderRerankerStart, type CrossEncoderLoss } from './cross-encoder';
import { SparseEncoder, type SparseRegularizers } from './sparse-encoder';
import { Encoder, matrixRows, normalizeRow, type Device, type EncoderLoadOptions, type MultiVectorSettings } from './encoder';
import { ADAPTER_DIR, readLoraOptions, type LoraOptions } from './lora';
import { resolveModelDir } from './hub';
import { checkFloat16, type ModelTrainer } from './native-model';
import { PUNCTUATION, isCrossEncoderFolder } from './model-dir';
import { ColtrastError } from './errors';
import { nonEmptyFolder, removeFolder, readCheckpointState, readRunData, saveRunData, writeFolderAtomic, writeJsonAtomic, writeTextAtomic } from './files';
import type { BatchTripletKind, NativeStepOptions, PairLossKind, TripletDistance } from './native';
import { meanMetrics, type Qrels, type Run } from './ir-metrics';
import { ProgressBar } from './progress';
import { embedWithGuide, guideMasks } from './guide';
import { maxsim, padTokens, type Mask, type Tensor } from './ops';
import { modelCard, trainingCurvesSvg } from './report';
import { mineExamples, type ChunkingOptions, type Embedder, type MiningOptions } from './chunking';
import { addMinedNegatives, MINING_SETTING_KEYS, miningSettings, plaidSettings, type MineNegativesOptions } from './mining';
import { seededRandom } from './random';
import { checkSameRun, runIdentity } from './run-identity';
import { arrayInTurns, inTurns } from './turns';
import { batchExamples, batchesOf, readCorpus, readSentences, readTrainingData, shuffle, splitByGroup, splitExamples, valSplitValue, type Batch, type TrainExample } from './train-data';
import { FLOAT32_MIN_NORMAL, abortedAs, booleanValue, checkOptions, float32, invalid, numberValue, oneOf, positiveInteger, signalOption, stringList } from './validate';
import { UNTRUNCATED } from './tokenizer';
import { measurePairs, measureScoredPairs, measureTriplets, type SimilarityMetrics } from './pair-metrics';

export type { SimilarityMetrics } from './pair-metrics';

export interface LossOptions {
  /** Weight of the in-batch InfoNCE loss on pooled, L2-normalized embeddings (default 0.5). */
  contrastiveWeight?: number;
  /** Weight of the late-interaction loss on L2-normalized token embeddings (default 0.5). */
  lateInteractionWeight?: number;
  /** Softmax temperature of both losses (default 0.05). */
  temperature?: number;
  /** 'cross_entropy' over MaxSim scores (default; ColBERT/PyLate) or the write-up's pairwise 'bce'. */
  lateInteraction?: 'cross_entropy' | 'bce';
  /** Add the documents → queries direction to the cross-entropy terms (default false). */
  symmetric?: boolean;
  /**
   * Knowledge distillation from a teacher's scores (`options.teacher`, or `scores` in the data): 'margin_mse'
   * (default; MarginMSE, as GPL and sentence-transformers' MarginMSELoss: each query's margin between its
   * positive and each of its negatives matches the teacher's) or 'kl' (KL divergence between the teacher's and
   * the student's softmax over each query's positive and negatives, as ColBERTv2 and PyLate). The student's
   * scores are its cosine similarities / temperature, or a multi-vector model's MaxSim per query token /
   * temperature: the logits its other losses use.
   *
   * 'mse' distills an embedding model instead (sentence-transformers' MSELoss; Reimers & Gurevych 2020, "Making
   * Monolingual Sentence Embeddings Multilingual"): `options.teacher` is then an embedding model, the data parallel
   * sentences (`{ english, non_english }`, or query and positive: a source sentence and its translation), and the
   * student's vectors of both fit the teacher's vector of the source by mean squared error, the whole loss; or
   * sentences alone (a .txt file, or `{ text }`), each vector fitting the teacher's of it (model distillation).
   */
  distillation?: 'margin_mse' | 'kl' | 'mse';
  /** Weight of the distillation loss (default 1 when the examples have teacher scores, else 0). */
  distillationWeight?: number;
  /**
   * The teacher's scores are divided by it before either loss (default 1): above 1 it softens the teacher's
   * distribution for 'kl' and shrinks its margins for 'margin_mse', toward the student's scale.
   */
  teacherTemperature?: number;
  /**
   * Matryoshka representation learning (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss): the pooled
   * losses (contrastive, and distillation on pooled vectors) are computed at each width of `dimensions` on the
   * pooled vectors' first entries, L2-normalized again, times the width's weight (`weights`, default 1 each), and
   * summed. The model's vectors can then be cut (Encoder.load's `truncateDim`, embed's `truncateDim`, OpenAI's
   * `dimensions`) at a small loss of quality. Include the full width to train it as well.
   * `dimensionsPerStep`: each batch uses a seeded sample of that many widths (default: all of them).
   * The late-interaction loss is on token vectors, which are not cut.
   */
  matryoshka?: MatryoshkaOptions;
  /**
   * Train on labeled pairs instead (examples with a `label` or `score`: sentence1/sentence2, or query/positive), with
   * one of sentence-transformers' pair losses on the pooled vectors: 'cosent' (CoSENTLoss: every two pairs of the batch
   * ranked by their cosines as by their labels), 'angle' (AnglELoss: CoSENT on AnglE's angle similarity), 'cosine'
   * (CosineSimilarityLoss: the cosines' mean squared error against the labels), 'contrastive' (ContrastiveLoss: labels 1
   * similar / 0 not; similar pairs pulled together, dissimilar ones pushed to at least `margin` cosine distance) or
   * 'online_contrastive' (OnlineContrastiveLoss: the same on the batch's hard pairs only). CoSENT's and AnglE's scale is
   * 1 / temperature (default 20). The pair loss is the whole loss (no contrastive, late-interaction or distillation
   * loss); Matryoshka widths apply to it. Validation reports the Spearman and Pearson correlations of the held-out
   * pairs' cosines with their labels (TrainResult.similarity), and earlyStopping.metric may be 'spearman'.
   */
  pairs?: PairLossKind;
  /** The contrastive pair losses' margin on the cosine distance (default 0.5). */
  margin?: number;
  /**
   * Train on triplets with sentence-transformers' TripletLoss instead: each example's query, positive and first hard
   * negative, the mean of relu(d(query, positive) - d(query, negative) + margin), d the 'euclidean' (default), 'cosine'
   * or 'manhattan' distance of the pooled vectors as the model gives them (normalized where it has a Normalize module);
   * margin default 5, as sentence-transformers'. The whole loss (no contrastive, late-interaction or distillation
   * loss); Matryoshka widths apply to it. `true`: the defaults.
   */
  triplet?: boolean | { distance?: TripletDistance; margin?: number };
  /**
   * Train on texts of classes (`{ "text", "label" }`) with sentence-transformers' batch triplet losses instead: 'all'
   * (BatchAllTripletLoss: every triplet of the batch with a positive loss), 'hard' (BatchHardTripletLoss: each text's
   * farthest text of its class against its nearest of another), 'semi_hard' (BatchSemiHardTripletLoss: FaceNet's
   * semi-hard negatives) or 'hard_soft_margin' (BatchHardSoftMarginTripletLoss: log(1 + exp(d_p - d_n)), no margin),
   * on the 'euclidean' (default) or 'cosine' distances of the pooled vectors as the model gives them; margin 5 by
   * default, as there. Batches hold 2 texts of a class at a time, as sentence-transformers' GroupByLabelBatchSampler
   * forms them (batchSize even, 4 or more). The whole loss; validation is its loss.
   */
  batchTriplet?: BatchTripletKind | { kind: BatchTripletKind; distance?: 'euclidean' | 'cosine'; margin?: number };
  /**
   * Adaptive layers (Li et al. 2024, "2D Matryoshka Sentence Embeddings"; sentence-transformers' AdaptiveLayerLoss, and
   * with `matryoshka` its Matryoshka2dLoss): the pooled losses also on the vectors the model gives after fewer layers
   * (the hidden states entering a layer, pooled and through the projection head), so that the model's first layers
   * alone make a smaller, faster one (Encoder.load's `layers`; truncateLayers, `coltrast truncate`). `true`: the
   * defaults. Single-vector models; late interaction off (the loss's defaults then are the contrastive loss alone), no
   * gradient caching. Validation reports the whole model's metrics, and after training the kept model's with each
   * smaller number of its layers (TrainResult.after.layers).
   */
  adaptiveLayers?: boolean | AdaptiveLayerOptions;
  /**
   * Global orthogonal regularization (Zhang et al. 2017; sentence-transformers' GlobalOrthogonalRegularizationLoss, as
   * EmbeddingGemma trains with it) added to the loss: it spreads the vectors out. For the batch's queries and its
   * documents each, over the cosine similarities of every two different texts: their mean, squared, times `meanWeight`
   * (default 1), and relu(their mean square - 1 / width) times `secondMomentWeight` (default 1); the two sides averaged
   * (`aggregation` 'mean', the default) or summed ('sum'; EmbeddingGemma's is { meanWeight: 0, aggregation: 'sum' }).
   * `true`: the defaults. Single-vector models (not for multi-vector models, cross-encoders or sparse encoders).
   */
  gor?: boolean | { meanWeight?: number; secondMomentWeight?: number; aggregation?: 'mean' | 'sum' };
  /**
   * Train on (anchor, positive) pairs with sentence-transformers' MegaBatchMarginLoss instead (Wieting and Gimpel 2018,
   * ParaNMT): each anchor's hardest negative is the batch's most similar other positive, and the loss the mean of
   * relu(positiveMargin - cos(anchor, positive)) + relu(cos(anchor, hardest negative) - negativeMargin) (0.8 and 0.3 by
   * default, as there). It wants large batches: `miniBatchSize` (gradient caching) is its mini-batched version. The
   * whole loss; Matryoshka widths apply. `true`: the defaults.
   */
  megaBatchMargin?: boolean | { positiveMargin?: number; negativeMargin?: number };
}

export interface AdaptiveLayerOptions {
  /**
   * How many of the earlier layers each batch's loss adds (default 1, as the paper and sentence-transformers; 'all':
   * every one), a seeded draw for each batch from the model's layers 0 (the embeddings' output) to layers - 1 (the
   * last layer's input).
   */
  layersPerStep?: number | 'all';
  /** The final layer's loss is multiplied by it (default 1). */
  lastLayerWeight?: number;
  /** The earlier layers' losses, averaged over the layers drawn, are multiplied by it (default 1). */
  priorLayersWeight?: number;
  /**
   * Each earlier layer's loss weight before that average: 'uniform' (default, as 2DMSE and Starbucks), 'log'
   * 1 / (1 + ln(1 + i)) (as ESE), or 'linear' 1 / (1 + i), i the layer.
   */
  layerWeighting?: 'uniform' | 'log' | 'linear';
  /**
   * Each earlier layer's vectors also fit the final layer's: the KL divergence of their softmax over the entries at
   * this temperature (default 0.3; 0: none), times klTemperature × klWeight (default 1).
   */
  klTemperature?: number;
  klWeight?: number;
}

export interface MatryoshkaOptions {
  dimensions: number[];
  weights?: number[];
  dimensionsPerStep?: number;
}

export interface GuideOptions {
  /** The guide model: a folder or Hugging Face id Encoder.load accepts (a single-vector embedding model). */
  model: string;
  /** 'absolute' (default): a negative goes when guide(q, n) > guide(q, p) - margin; 'relative': > guide(q, p) - |guide(q, p)| × margin. */
  marginStrategy?: 'absolute' | 'relative';
  /** Default 0. */
  margin?: number;
  /** The batch's other queries as negatives of the contrastive loss (default true). */
  contrastQueries?: boolean;
  /** The batch's other positives as negatives of each positive's query in the contrastive loss (default true). */
  contrastPositives?: boolean;
}

export interface TrainProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  contrastive: number;
  lateInteraction: number;
  distillation: number;
  /** A sparse encoder's FLOPS regularizers, weighted (TrainOptions.sparse), or global orthogonal regularization (loss.gor); absent otherwise. */
  regularizer?: number;
  learningRate: number;
  samplesPerSecond: number;
  etaSeconds: number;
}

export interface TrainOptions {
  /** A model folder or Hugging Face id (anything Encoder.load accepts; default 'default', the shipped model). */
  model?: string;
  /**
   * A .jsonl file of pairs/triplets, a ColTrast .json file, or an array of { query, positive, negatives? }; with
   * `contrastiveTension`, sentences (an array of strings or `{ text }`, a .txt, .jsonl or .json file, or pairs).
   */
  data: string | TrainExample[] | (string | { text: string })[];
  /** Where the trained model is written (a sentence-transformers folder). */
  output: string;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  /** Fraction of the steps spent warming the learning rate up linearly from 0 (default 0.1). */
  warmupRatio?: number;
  /** Decay after warm-up: 'linear' (default) to 0, 'cosine' to 0, or 'constant'. */
  schedule?: 'linear' | 'cosine' | 'constant';
  weightDecay?: number;
  /** Gradient clipping by global norm (default 1; 0 turns it off). */
  maxGradNorm?: number;
  /** Batches whose gradients are summed before each update (default 1). */
  gradientAccumulation?: number;
  /**
   * Gradient caching (GradCache; sentence-transformers' Cached* losses): encode each batch this many texts
   * at a time, so that the encoder's activations are held for one mini-batch only and the batch size (the
   * number of in-batch negatives) is bounded by the losses' memory, not the encoder's. The gradients are
   * the whole batch's, unlike gradientAccumulation's; each step costs one more forward pass. Default: off.
   */
  miniBatchSize?: number;
  loss?: LossOptions;
  /**
   * A cross-encoder (a folder or Hugging Face id CrossEncoder.load accepts, with one label) that scores every
   * example's query with its positive and with each of its hard negatives before training (its logits), for
   * distillation into the embedding model (loss.distillation; GPL, augmented SBERT). Examples that have
   * `scores` keep them. Needs hard negatives: triplets, or ColTrast project files (mined). With loss.distillation
   * 'mse', an embedding model whose vectors of the source sentences the model learns to give (embedding distillation).
   */
  teacher?: string;
  /**
   * GISTEmbed (Solatorio 2024; sentence-transformers' GISTEmbedLoss): a guide, an embedding model (a folder or
   * Hugging Face id), embeds every training text once, and each batch's in-batch and hard negatives that the
   * guide scores above the query's positive (less `margin`) are left out of the cross-entropy losses' softmax
   * as likely false negatives. `contrastQueries` and `contrastPositives` (default true, as sentence-transformers)
   * add the other queries and the other positives as negatives of the contrastive loss, filtered the same way.
   */
  guide?: string | GuideOptions;
  /**
   * What is held out for validation, by group (a ColTrast project, an example's `group`, else the example): a fraction
   * in [0, 1) of the groups or a whole number ≥ 1 of them; 0 for none. Default 0.2 of the groups, at most
   * DEFAULT_VAL_GROUPS (1,000): validation ranks every held-out question against every held-out positive after each
   * epoch, which grows with the square of the split.
   */
  valSplit?: number;
  /** Stop when the validation metric has not improved for `patience` epochs. */
  earlyStopping?: { patience: number; metric?: 'loss' | 'recall@1' | 'mrr@10' | 'spearman' };
  /** Hard negatives used per batch at most (default all). */
  maxNegatives?: number;
  /**
   * A projection head (sentence-transformers' Dense module) on the pooled vector, trained with the model and
   * saved as its Dense module: `dimension` outputs, 'identity' (default) or 'tanh' activation. For a model
   * without a head; a model that has one trains it anyway.
   */
  projection?: { dimension: number; activation?: 'identity' | 'tanh' };
  /**
   * Make a single-vector model multi-vector (ColBERT-style) and train it so, as PyLate starts a ColBERT model from
   * a BERT: a new token projection to `dimension` (128) without bias, queries cut at `queryLength` (32) and
   * expanded to it with mask tokens (`queryExpansion` 'fixed'; 'min' only pads short ones, 'none' does not
   * expand; `attendExpansion` false), documents cut at `documentLength` (the model's maximum), `skiplist`
   * tokens (punctuation) dropped from documents, and optional `queryPrompt` / `documentPrompt` texts. The
   * late-interaction loss alone trains it; the output is a sentence-transformers MultiVectorEncoder folder.
   */
  multiVector?: {
    dimension?: number;
    queryLength?: number;
    documentLength?: number;
    queryExpansion?: 'fixed' | 'min' | 'none';
    attendExpansion?: boolean;
    skiplist?: string[];
    queryPrompt?: string;
    documentPrompt?: string;
  };
  /**
   * Train a cross-encoder (a reranker: query and document read together, one relevance score) instead of an
   * embedding model. `model` is a cross-encoder folder, or an embedding model or BERT whose encoder starts a
   * new one-label cross-encoder (a new head, seeded). Each batch scores every query with every document of
   * the batch (its positive, the other queries' positives, the hard negatives): `loss` 'cross_entropy'
   * (default: sentence-transformers' cross-encoder MultipleNegativesRankingLoss, cross-entropy over each
   * query's sigmoid(logit) × `scale` (10)) or 'bce' (binary cross-entropy on the logits, 1 for the positive
   * pair). ColTrast project files are chunked and mined with coltrast's default embedding model (or with
   * `model`, when it is one). Validation ranks each query's positive among 32 validation positives by the
   * cross-encoder's scores. The output is a sentence-transformers CrossEncoder folder (`CrossEncoder.load`).
   *
   * `model` may also be a decoder LLM's *ForCausalLM folder (Qwen3, Qwen2, Llama, Mistral, Gemma 3): it becomes a
   * reranker as Qwen3-Reranker is one, scored by sentence-transformers' LogitScore, the last position's logit of
   * `tokens[0]` minus that of `tokens[1]`, if given (default ['yes', 'no'], sentence-transformers' default), each pair rendered
   * by `chatTemplate` (Jinja over a "query" and a "document" message, and a "system" one holding a prompt; default
   * the model's own, which must carry them) and saved with it.
   */
  crossEncoder?: boolean | { loss?: 'cross_entropy' | 'bce'; scale?: number; chatTemplate?: string; tokens?: [string] | [string, string] };
  /**
   * Train a sparse (SPLADE) encoder instead of a dense one, as sentence-transformers' SparseEncoder trainer does with
   * SpladeLoss around SparseMultipleNegativesRankingLoss: `model` is a SparseEncoder folder, or any masked language
   * model (a *ForMaskedLM folder: BERT, DistilBERT, RoBERTa, XLM-RoBERTa, CamemBERT, MPNet, ModernBERT), which becomes
   * one (max pooling, relu).
   * Each batch's loss is the in-batch cross-entropy over the dot products of the SPLADE vectors / `loss.temperature`
   * (default 1 here: scale 1, sentence-transformers' default for it) plus the FLOPS regularizers, the squared mean
   * weight of each vocabulary entry over the batch, summed, times `queryRegularizer` (default 5e-5) for the queries and
   * `documentRegularizer` (default 3e-5) for the documents: the larger, the sparser the vectors. The weights rise from 0
   * over the first `warmupRatio` (default 1/3) of the optimizer steps, by the square of the share of the warm-up done
   * (`schedule` 'quadratic', the default; 'linear': by the share), then stay: sentence-transformers' trainer adds that
   * warm-up (SpladeRegularizerWeightSchedulerCallback) to every SpladeLoss; `warmupRatio: 0` weighs fully from the
   * first step. Validation losses use the weights of the step they follow. Distillation from a
   * teacher's scores (MarginMSE or KL on the dot products: sentence-transformers' SparseMarginMSELoss) works too.
   * `model` may also be an embedding model or a base model of those families without a masked-LM head (coltrast's
   * default model): a new head is drawn from `seed`, as sentence-transformers' SparseEncoder(model) draws one. The output
   * is a SparseEncoder folder (`SparseEncoder.load`). A SparseEncoder folder as `model` needs this option.
   */
  sparse?: boolean | { queryRegularizer?: number; documentRegularizer?: number; warmupRatio?: number; schedule?: 'quadratic' | 'linear' };
  /**
   * Masked-language-model training instead (BERT's objective, as transformers' *ForMaskedLM trains with
   * DataCollatorForLanguageModeling): `data` is unlabeled text (as for contrastiveTension: an array of strings or
   * `{ text }`, a .txt file a text a line, .jsonl or .json), each text's tokens chosen with `probability` (default 0.15),
   * 80% of those masked, 10% replaced by a random token, 10% kept, and the loss is the cross-entropy of the chosen
   * tokens under the model's masked-LM head. `model` is a masked language model (*ForMaskedLM, a SparseEncoder) or an
   * embedding or base model of the BERT family or ModernBERT, which gets a new head drawn from `seed`. The output is a
   * plain Hugging Face *ForMaskedLM folder, which transformers, SparseEncoder.load (the start of a SPLADE model:
   * train({ sparse })) and Encoder.load read: domain adaptation before fine-tuning. Validation reports its loss only
   * (valSplit defaults to 0).
   */
  mlm?: boolean | { probability?: number };
  /**
   * Train only the head on top of the frozen transformer: the projection head (`projection`, or the model's own
   * Dense module), or a multi-vector model's token projection. This is CoTrEnD's set-up (an encoder trained with
   * a contrastive loss on a frozen decoder LLM's final hidden states, e.g. a Qwen3 model with `projection`), and a
   * cheap way to adapt a large model: backward stops at the transformer's output. The late-interaction loss, which
   * scores the frozen token states of a single-vector model, is off (weight 0) unless the model is multi-vector.
   */
  freezeBase?: boolean;
  /**
   * Gradient checkpointing (default false): each transformer layer keeps only its input in the forward pass and
   * recomputes its activations in backward (with the first pass's dropout masks and precision), so a step holds
   * one layer's activations instead of every layer's, at the price of a second forward pass. The gradients are
   * the same (transformers' gradient_checkpointing_enable()).
   */
  gradientCheckpointing?: boolean;
  /**
   * LoRA (default off): low-rank adapters on the attention's query and value projections (or `targetModules`), and
   * only they train; the base model, and its Dense head if it has one, stay as they are. `true` takes PEFT's
   * defaults (rank 8, alpha 8, no dropout). The output folder holds the merged weights, which load anywhere, and the
   * adapter in `adapter/` (PEFT's adapter_config.json and adapter_model.safetensors), which PEFT and
   * sentence-transformers' load_adapter add to the base model, as Encoder.load's `adapter` does. A model folder that
   * carries an adapter (sentence-transformers' save of a model with one) trains that adapter (its rank and targets). For embedding models
   * (single- or multi-vector, encoders or decoders) and cross-encoders; not with projection, multiVector, freezeBase or
   * contrastiveTension. With `crossEncoder`, the classification head trains with the adapters and is saved in the
   * adapter file, as PEFT does for sequence classification (modules_to_save "classifier"; and the head's dense layer
   * when the head is new, drawn on an embedding model: "pooler" for BERT and DeBERTa, "head" for ModernBERT);
   * `CrossEncoder.load(base, { adapter })` and PEFT's `PeftModel.from_pretrained` on
   * `AutoModelForSequenceClassification` load it.
   */
  lora?: boolean | LoraOptions;
  /**
   * Contrastive Tension (Carlsson et al. 2021, "Semantic Re-tuning with Contrastive Tension"; sentence-transformers'
   * ContrastiveTensionLossInBatchNegatives): self-supervised training on unlabeled sentences. A second copy of the
   * model (the twin) encodes each sentence as the query, the model encodes it as the document, and the in-batch
   * contrastive loss pulls each pair of identical sentences together and pushes the batch's other sentences away,
   * in both directions; both copies train, and the model (not the twin) is saved. `data` is sentences: an array
   * of strings, a .txt file (one per line), a .jsonl file or .json array of strings or `{ "text" }` objects, or
   * pairs/triplets (all their texts). The defaults change with it: loss.contrastiveWeight 1, loss.lateInteractionWeight 0 (a
   * single-vector loss), loss.symmetric true, valSplit 0 (no labels to validate on) and prompts false (both
   * copies read the same text).
   */
  contrastiveTension?: boolean;
  /** ColTrast project files: semantic chunking of the documents (threshold 0.7, maxTokens the model's). */
  chunking?: Partial<ChunkingOptions>;
  /** ColTrast project files: positive threshold (0.6) and hard negatives per question (3). */
  mining?: MiningOptions;
  /**
   * Pairs: hard negatives mined before training by the model as it starts (mineHardNegatives, n-tuples): `true` for
   * 3 negatives under NV-Retriever's relative margin of 0.05, or the settings (numNegatives, rangeMin, rangeMax,
   * margins, score limits, samplingStrategy, seed) and a `corpus` of more candidates. Each side of the validation split
   * is mined among its own positives; examples that bring negatives or teacher scores keep them.
   */
  mineNegatives?: boolean | MineNegativesOptions;
  seed?: number;
  device?: Device;
  threads?: number;
  /**
   * Precision of the forward pass: 'float32' (default), or mixed precision with autocast to 'bfloat16'
   * (CPU or CUDA) or 'float16' (CUDA only, with dynamic loss scaling). Weights and optimizer state stay
   * float32 and the losses are computed in float32 either way.
   */
  precision?: 'float32' | 'bfloat16' | 'float16';
  /**
   * Put the model's named prompts before the training queries and documents, as `embed({ task })`, `Index` and
   * `evaluate()` do (default true; it matters only for models with prompts). A multi-vector model always gets
   * its query and document markers.
   */
  prompts?: boolean;
  /** Write a checkpoint every this many optimizer steps (default 50; 0: at epoch ends only). */
  checkpointEvery?: number;
  /** Continue from `<output>.checkpoint` when it exists (written every checkpointEvery steps and each epoch). */
  resume?: boolean;
  /** Called after every optimizer step. */
  onProgress?: (progress: TrainProgress) => void;
  /** Draw a progress bar on stderr (default false; the CLI turns it on). */
  progressBar?: boolean;
  /**
   * Stops the run when aborted. It is looked at between optimizer steps (the step under way finishes, all its
   * gradientAccumulation batches): the run then writes a checkpoint of where it is to `<output>.checkpoint` (as
   * checkpointEvery does) and rejects with an ABORTED error; train() with the same options and `resume: true`
   * continues from it, to the model an uninterrupted run ends with. Aborted before the first step (or before the call),
   * it writes nothing; the work before that step (mining, a teacher's scores, a guide's vectors, the validation
   * split's metrics before training) stops between its batches. An abort that comes during the last epoch's validation
   * lets the run finish.
   */
  signal?: AbortSignal;
}

export interface RetrievalMetrics {
  'recall@1': number;
  'mrr@10': number;
  queries: number;
  /** With loss.matryoshka: the metrics with the vectors cut to each width (largest first). */
  dimensions?: { dimension: number; 'recall@1': number; 'mrr@10': number }[];
  /**
   * With loss.triplet: the share of the held-out triplets whose positive the model scores above their negative
   * (sentence-transformers' TripletEvaluator's accuracy, margin 0).
   */
  tripletAccuracy?: number;
  /**
   * With loss.adaptiveLayers, the kept model's (TrainResult.after): its metrics with each smaller number of its first
   * layers alone, as Encoder.load({ layers }) runs them (fewest first).
   */
  layers?: { layers: number; 'recall@1': number; 'mrr@10': number }[];
}

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
  valLoss?: number;
  metrics?: RetrievalMetrics;
  /** Labeled pairs (loss.pairs): the validation pairs' correlations, in place of retrieval metrics. */
  similarity?: SimilarityMetrics;
}

/** Where the time of the training steps went (this invocation's, without validation and checkpoints). */
export interface StepTiming {
  /** Batches run (optimizer steps times gradient accumulation). */
  batches: number;
  /** Wall time of the step loop as Node sees it. */
  seconds: number;
  /** Native forward, loss, backward and update (measured inside the worker thread). */
  nativeSeconds: number;
  /**
   * Waiting for the batches' tokenization (Hugging Face tokenizers, called from JS). Each batch is tokenized
   * while the step before it runs, so this is the part that did not overlap (the first batch's, mostly).
   */
  tokenizeSeconds: number;
  /** Everything else on the Node side (batching, padding, scheduling, promise hops, progress), as a fraction of `seconds`. */
  jsFraction: number;
}

export interface TrainResult {
  history: {
    steps: { step: number; epoch: number; loss: number; contrastive: number; lateInteraction: number; distillation: number; regularizer?: number; learningRate: number; skipped?: boolean }[];
    epochs: EpochRecord[];
  };
  /** The epoch whose model was kept (by the early-stopping metric, validation loss by default). */
  best: { epoch: number; valLoss?: number; metrics?: RetrievalMetrics; similarity?: SimilarityMetrics };
  /** Retrieval metrics on the validation split before training and of the kept model. */
  before?: RetrievalMetrics;
  after?: RetrievalMetrics;
  /** Labeled pairs (loss.pairs): the validation pairs' correlations before training and of the kept model. */
  similarity?: { before?: SimilarityMetrics; after?: SimilarityMetrics };
  modelDir: string;
  timing?: StepTiming;
}

const KEYS = [
  'model', 'data', 'output', 'epochs', 'batchSize', 'learningRate', 'warmupRatio', 'schedule', 'weightDecay', 'maxGradNorm',
  'gradientAccumulation', 'miniBatchSize', 'loss', 'valSplit', 'earlyStopping', 'maxNegatives', 'projection', 'multiVector', 'chunking', 'mining', 'seed', 'device', 'threads',
  'precision', 'prompts', 'checkpointEvery', 'resume', 'onProgress', 'progressBar', 'crossEncoder', 'teacher', 'guide', 'freezeBase', 'gradientCheckpointing',
  'contrastiveTension', 'mineNegatives', 'lora', 'signal', 'sparse', 'mlm',
] as const;
/** The default validation split's cap: at most this many groups held out (options.valSplit). */
export const DEFAULT_VAL_GROUPS = 1000;
const LOSS_KEYS = [
  'contrastiveWeight', 'lateInteractionWeight', 'temperature', 'lateInteraction', 'symmetric', 'distillation', 'distillationWeight', 'teacherTemperature',
  'matryoshka', 'pairs', 'margin', 'triplet', 'batchTriplet', 'adaptiveLayers', 'gor', 'megaBatchMargin',
] as const;


interface Config {
  epochs: number;
  batchSize: number;
  learningRate: number;
  warmupRatio: number;
  schedule: 'linear' | 'cosine' | 'constant';
  weightDecay: number;
  maxGradNorm: number;
  accumulation: number;
  valSplit: number;
  /** The default split's cap on held-out groups (absent when valSplit was given). */
  valMaxGroups?: number;
  patience: number;
  metric: 'loss' | 'recall@1' | 'mrr@10' | 'spearman';
  maxNegatives: number;
  checkpointEvery: number;
  projection?: { dimension: number; activation: 'identity' | 'tanh' };
  multiVector?: MultiVectorSettings;
  crossEncoder?: CrossEncoderLoss & { decoderStart?: DecoderRerankerStart; labeled?: boolean };
  sparse?: SparseRegularizers;
  /** Masked-language-model training: the share of each text's tokens masked. */
  mlm?: { probability: number };
  /** Labeled pairs' loss (loss.pairs) and the contrastive ones' margin. */
  pairs?: { kind: PairLossKind; margin: number };
  /** TripletLoss (loss.triplet): its distance and margin. */
  triplet?: { distance: TripletDistance; margin: number };
  /** The batch triplet losses (loss.batchTriplet): which, the distance and the margin. */
  batchTriplet?: { kind: BatchTripletKind; distance: 'euclidean' | 'cosine'; margin: number };
  /** A cross-encoder whose scores are distilled. */
  teacher?: string;
  /** An embedding model whose vectors are distilled (loss.distillation 'mse'). */
  embeddingTeacher?: string;
  guide?: Required<GuideOptions>;
  freezeBase: boolean;
  gradientCheckpointing: boolean;
  /** train's `lora` option as given (checked against the model once it is loaded). */
  lora?: true | LoraOptions;
  contrastiveTension: boolean;
  /** Widths largest first, their weights, and how many each batch uses. */
  matryoshka?: { dimensions: number[]; weights: number[]; perStep: number };
  /** Adaptive layers (loss.adaptiveLayers), every setting filled in. */
  adaptiveLayers?: AdaptiveLayers;
  chunking: { threshold: number; maxTokens?: number };
  mining: Required<MiningOptions>;
  mineNegatives?: MineNegativesOptions;
  seed: number;
  precision: 'float32' | 'bfloat16' | 'float16';
  prompts: boolean;
  step: Omit<NativeStepOptions, 'learningRate' | 'lossScale' | 'apply'>;
}

const MULTI_VECTOR_KEYS = ['dimension', 'queryLength', 'documentLength', 'queryExpansion', 'attendExpansion', 'skiplist', 'queryPrompt', 'documentPrompt'] as const;

function readLora(o: TrainOptions): true | LoraOptions | undefined {
  if (o.lora === undefined || o.lora === false) return undefined;
  if (o.lora !== true && (typeof o.lora !== 'object' || o.lora === null || Array.isArray(o.lora))) throw invalid('options.lora', 'true or an object of LoRA options', o.lora);
  const clashing = (['projection', 'multiVector', 'freezeBase', 'contrastiveTension'] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (clashing.length > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.lora trains adapters on the model's projections and nothing else: drop ${clashing.map((k) => `options.${k}`).join(', ')}`,
    );
  }
  // Its fields are checked by readLoraOptions, which needs the model's type.
  readLoraOptions(o.lora, 'bert', '');
  return o.lora;
}

function readGuide(value: unknown, loss: LossOptions): Required<GuideOptions> | undefined {
  if (value === undefined) return undefined;
  const g = checkOptions('options.guide', typeof value === 'string' ? { model: value } : (value as GuideOptions), ['model', 'marginStrategy', 'margin', 'contrastQueries', 'contrastPositives']);
  if (typeof g.model !== 'string' || g.model.length === 0) throw invalid('options.guide.model', 'an embedding model folder or Hugging Face id', g.model);
  if (loss.symmetric) throw new ColtrastError('INVALID_ARGUMENT', 'options.guide: the guided losses have no symmetric term; drop options.loss.symmetric');
  if (loss.lateInteraction === 'bce' && loss.lateInteractionWeight !== 0) {
    throw new ColtrastError('INVALID_ARGUMENT', "options.guide filters the negatives of the cross-entropy losses; the 'bce' late-interaction loss has none to filter (use 'cross_entropy')");
  }
  return {
    model: g.model,
    marginStrategy: oneOf('options.guide.marginStrategy', g.marginStrategy ?? 'absolute', ['absolute', 'relative'] as const),
    margin: numberValue('options.guide.margin', g.margin ?? 0, () => true, 'a number'),
    contrastQueries: booleanValue('options.guide.contrastQueries', g.contrastQueries ?? true),
    contrastPositives: booleanValue('options.guide.contrastPositives', g.contrastPositives ?? true),
  };
}

/** A loss that is the step's whole loss (pairs, triplets, embedding distillation, batch triplets, MegaBatchMarginLoss) is set. */
function wholeLoss(config: Config): boolean {
  return Boolean(config.pairs || config.triplet || config.embeddingTeacher || config.batchTriplet || config.step.megaBatchMargin);
}

function noLoss(hint: boolean): never {
  throw new ColtrastError('INVALID_ARGUMENT', `options.loss: at least one loss weight must be > 0${hint ? ' (or the examples need teacher scores for distillation)' : ''}`);
}

/** Every option checked before any model is loaded or data read. */
function readConfig(options: TrainOptions): Config {
  const o = checkOptions('options', options, KEYS);
  if (o.model !== undefined && (typeof o.model !== 'string' || o.model.length === 0)) throw invalid('options.model', 'a model folder or Hugging Face id', o.model);
  if (typeof o.output !== 'string' || o.output.length === 0) throw invalid('options.output', 'a folder path', o.output);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  if (o.resume !== undefined) booleanValue('options.resume', o.resume);
  if (o.progressBar !== undefined) booleanValue('options.progressBar', o.progressBar);
  signalOption(o.signal);
  const loss = checkOptions('options.loss', o.loss, LOSS_KEYS);
  const tension = booleanValue('options.contrastiveTension', o.contrastiveTension ?? false);
  if (tension) contrastiveTensionOptions(o, loss);
  const sparse = readSparse(o, loss);
  const mlm = readMlm(o, loss);
  const pairs = readPairs(o, loss);
  const triplet = readTriplet(o, loss);
  const embeddingTeacher = readEmbeddingTeacher(o, loss);
  const batchTriplet = readBatchTriplet(o, loss);
  const megaBatchMargin = readMegaBatchMargin(o, loss);
  const adaptiveLayers = readAdaptiveLayers(o, loss);
  // Contrastive Tension, a sparse encoder and adaptive layers train the pooled vectors alone; a pair or triplet loss,
  // and embedding distillation, is the whole loss.
  const pooledOnly = tension || sparse !== undefined || adaptiveLayers !== undefined;
  const whole = pairs !== undefined || triplet !== undefined || embeddingTeacher !== undefined || batchTriplet !== undefined || megaBatchMargin !== undefined;
  const contrastiveWeight = float32('options.loss.contrastiveWeight', numberValue('options.loss.contrastiveWeight', loss.contrastiveWeight ?? (whole ? 0 : pooledOnly ? 1 : 0.5), (x) => x >= 0, 'a number >= 0'));
  const lateInteractionWeight = float32('options.loss.lateInteractionWeight', numberValue('options.loss.lateInteractionWeight', loss.lateInteractionWeight ?? (pooledOnly || whole ? 0 : 0.5), (x) => x >= 0, 'a number >= 0'));
  // Its default depends on the data (distillationWeight below); undefined until then.
  const distillationWeight =
    loss.distillationWeight === undefined ? undefined : float32('options.loss.distillationWeight', numberValue('options.loss.distillationWeight', loss.distillationWeight, (x) => x >= 0, 'a number >= 0'));
  // Without a distillation weight, teacher scores (options.teacher, or in the data: train() looks) give one.
  if (contrastiveWeight + lateInteractionWeight + (distillationWeight ?? 0) === 0 && distillationWeight !== undefined) noLoss(false);
  if (o.teacher !== undefined && (typeof o.teacher !== 'string' || o.teacher.length === 0)) throw invalid('options.teacher', 'a cross-encoder folder or Hugging Face id', o.teacher);
  const early = o.earlyStopping === undefined ? undefined : checkOptions('options.earlyStopping', o.earlyStopping, ['patience', 'metric']);
  const chunking = checkOptions('options.chunking', o.chunking, ['threshold', 'maxTokens']);
  const mining = checkOptions('options.mining', o.mining, ['positiveThreshold', 'hardNegatives']);
  const projection = o.projection === undefined ? undefined : checkOptions('options.projection', o.projection, ['dimension', 'activation']);
  const multi = o.multiVector === undefined ? undefined : checkOptions('options.multiVector', o.multiVector, MULTI_VECTOR_KEYS);
  if (multi && projection) throw new ColtrastError('INVALID_ARGUMENT', 'options.projection and options.multiVector: a multi-vector model has no pooled vector to put a head on; give one of them');
  const cross = o.crossEncoder === undefined || o.crossEncoder === false ? undefined : o.crossEncoder === true ? {} : checkOptions('options.crossEncoder', o.crossEncoder, ['loss', 'scale', 'chatTemplate', 'tokens']);
  if (cross) {
    const embeddingOnly = (['loss', 'projection', 'multiVector', 'miniBatchSize', 'teacher', 'guide', 'freezeBase'] as const).filter((k) => o[k] !== undefined);
    if (embeddingOnly.length > 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.crossEncoder: ${embeddingOnly.map((k) => `options.${k}`).join(', ')} ${embeddingOnly.length > 1 ? 'are' : 'is'} for embedding models (a cross-encoder's loss is options.crossEncoder.loss)`);
    }
  }
  const text = (key: string, value: unknown) => {
    if (value !== undefined && typeof value !== 'string') throw invalid(`options.multiVector.${key}`, 'a string', value);
    return value as string | undefined;
  };
  return {
    epochs: positiveInteger('options.epochs', o.epochs ?? 1),
    batchSize: positiveInteger('options.batchSize', o.batchSize ?? 16),
    learningRate: float32('options.learningRate', numberValue('options.learningRate', o.learningRate ?? 2e-5, (x) => x > 0, 'a number > 0')),
    warmupRatio: numberValue('options.warmupRatio', o.warmupRatio ?? 0.1, (x) => x >= 0 && x < 1, 'a number in [0, 1)'),
    schedule: oneOf('options.schedule', o.schedule ?? 'linear', SCHEDULES),
    weightDecay: float32('options.weightDecay', numberValue('options.weightDecay', o.weightDecay ?? 0.01, (x) => x >= 0, 'a number >= 0')),
    maxGradNorm: float32('options.maxGradNorm', numberValue('options.maxGradNorm', o.maxGradNorm ?? 1, (x) => x >= 0, 'a number >= 0')),
    accumulation: positiveInteger('options.gradientAccumulation', o.gradientAccumulation ?? 1),
    valSplit: valSplitValue('options.valSplit', o.valSplit, tension || mlm ? 0 : 0.2),
    ...(o.valSplit === undefined && { valMaxGroups: DEFAULT_VAL_GROUPS }),
    patience: early ? positiveInteger('options.earlyStopping.patience', early.patience) : Infinity,
    metric: batchTriplet
      ? oneOf('options.earlyStopping.metric', early?.metric ?? 'loss', ['loss'] as const)
      : earlyStoppingMetric(early?.metric, pairs !== undefined, cross !== undefined),
    maxNegatives: o.maxNegatives === undefined ? Infinity : numberValue('options.maxNegatives', o.maxNegatives, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    checkpointEvery: numberValue('options.checkpointEvery', o.checkpointEvery ?? 50, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    projection: projection && {
      dimension: positiveInteger('options.projection.dimension', projection.dimension),
      activation: oneOf('options.projection.activation', projection.activation ?? 'identity', ['identity', 'tanh'] as const),
    },
    multiVector: multi && {
      dimension: positiveInteger('options.multiVector.dimension', multi.dimension ?? 128),
      queryLength: positiveInteger('options.multiVector.queryLength', multi.queryLength ?? 32),
      documentLength: multi.documentLength === undefined ? undefined : positiveInteger('options.multiVector.documentLength', multi.documentLength),
      queryExpansion: oneOf('options.multiVector.queryExpansion', multi.queryExpansion ?? 'fixed', ['fixed', 'min', 'none'] as const),
      attendExpansion: booleanValue('options.multiVector.attendExpansion', multi.attendExpansion ?? false),
      skiplist: multi.skiplist === undefined ? [...PUNCTUATION] : stringList('options.multiVector.skiplist', multi.skiplist),
      queryPrompt: text('queryPrompt', multi.queryPrompt),
      documentPrompt: text('documentPrompt', multi.documentPrompt),
    },
    crossEncoder: cross && {
      kind: oneOf('options.crossEncoder.loss', cross.loss ?? 'cross_entropy', ['cross_entropy', 'bce'] as const),
      scale: numberValue('options.crossEncoder.scale', cross.scale ?? 10, (x) => x > 0, 'a number > 0'),
      decoderStart: readDecoderStart(cross, 'options.crossEncoder'),
    },
    sparse,
    mlm,
    pairs,
    triplet,
    batchTriplet,
    teacher: embeddingTeacher ? undefined : o.teacher,
    embeddingTeacher,
    guide: readGuide(o.guide, loss),
    freezeBase: booleanValue('options.freezeBase', o.freezeBase ?? false),
    gradientCheckpointing: booleanValue('options.gradientCheckpointing', o.gradientCheckpointing ?? false),
    lora: readLora(o),
    contrastiveTension: tension,
    mineNegatives: readMineNegatives(o.mineNegatives, tension),
    matryoshka: readMatryoshka(loss.matryoshka),
    adaptiveLayers,
    chunking: {
      threshold: numberValue('options.chunking.threshold', chunking.threshold ?? 0.7, (x) => x >= -1 && x <= 1, 'a number in [-1, 1]'),
      maxTokens: chunking.maxTokens === undefined ? undefined : positiveInteger('options.chunking.maxTokens', chunking.maxTokens),
    },
    mining: {
      positiveThreshold: numberValue('options.mining.positiveThreshold', mining.positiveThreshold ?? 0.6, (x) => x >= -1 && x <= 1, 'a number in [-1, 1]'),
      hardNegatives: numberValue('options.mining.hardNegatives', mining.hardNegatives ?? 3, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    },
    seed: numberValue('options.seed', o.seed ?? 42, (x) => Number.isSafeInteger(x) && x >= 0, `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`),
    precision: oneOf('options.precision', o.precision ?? 'float32', ['float32', 'bfloat16', 'float16'] as const),
    prompts: booleanValue('options.prompts', o.prompts ?? !(tension || mlm || pairs || embeddingTeacher || batchTriplet)),
    step: {
      contrastiveWeight,
      lateInteractionWeight,
      temperature: float32('options.loss.temperature', numberValue('options.loss.temperature', loss.temperature ?? (sparse ? 1 : 0.05), (x) => x > 0, 'a number > 0'), FLOAT32_MIN_NORMAL),
      symmetric: booleanValue('options.loss.symmetric', loss.symmetric ?? tension),
      lateInteractionKind: oneOf('options.loss.lateInteraction', loss.lateInteraction ?? 'cross_entropy', ['cross_entropy', 'bce'] as const),
      // 'mse' is embedding distillation (embeddingTeacher), no distillation of scores.
      distillation: embeddingTeacher ? 'margin_mse' : (oneOf('options.loss.distillation', loss.distillation ?? 'margin_mse', ['margin_mse', 'kl', 'mse'] as const) as 'margin_mse' | 'kl'),
      teacherTemperature: numberValue('options.loss.teacherTemperature', loss.teacherTemperature ?? 1, (x) => x > 0, 'a number > 0'),
      ...(distillationWeight === undefined ? {} : { distillationWeight }),
      maxGradNorm: 0, // set from maxGradNorm below
      ...(o.miniBatchSize === undefined ? {} : { miniBatchSize: positiveInteger('options.miniBatchSize', o.miniBatchSize) }),
      // CoSENT's and AnglE's scale is 1 / temperature (0.05: sentence-transformers' 20).
      ...(pairs && { pairLoss: pairs.kind, pairScale: 1 / (loss.temperature ?? 0.05), pairMargin: pairs.margin }),
      ...(triplet && { tripletDistance: triplet.distance, tripletMargin: triplet.margin }),
      ...(batchTriplet && { batchTriplet: batchTriplet.kind, batchTripletDistance: batchTriplet.distance, batchTripletMargin: batchTriplet.margin }),
      ...readGor(o, loss),
      ...megaBatchMargin,
    },
  };
}

/**
 * earlyStopping.metric checked: 'spearman' for labeled pairs (their validation's), the retrieval metrics otherwise; a
 * cross-encoder's may be either until its data says which it trains on (checkPairData).
 */
function earlyStoppingMetric(metric: unknown, pairs: boolean, crossEncoder: boolean): Config['metric'] {
  if (crossEncoder) return oneOf('options.earlyStopping.metric', metric ?? 'loss', ['loss', 'recall@1', 'mrr@10', 'spearman'] as const);
  if (pairs) {
    if (metric === 'recall@1' || metric === 'mrr@10') throw invalid('options.earlyStopping.metric', "'loss' or 'spearman' with options.loss.pairs (labeled pairs are validated by correlation, not retrieval)", metric);
    return oneOf('options.earlyStopping.metric', metric ?? 'loss', ['loss', 'spearman'] as const);
  }
  if (metric === 'spearman') throw invalid('options.earlyStopping.metric', "'loss', 'recall@1' or 'mrr@10' ('spearman' is for labeled pairs: options.loss.pairs)", metric);
  return oneOf('options.earlyStopping.metric', metric ?? 'loss', ['loss', 'recall@1', 'mrr@10'] as const);
}

/** sentence-transformers' name of each pair loss (the model card names it). */
const PAIR_LOSS_NAMES: Record<PairLossKind, string> = {
  cosent: 'CoSENTLoss', angle: 'AnglELoss', cosine: 'CosineSimilarityLoss', contrastive: 'ContrastiveLoss', online_contrastive: 'OnlineContrastiveLoss',
};

/** The contrastive pair losses, whose labels are 1 (similar) or 0 (not). */
const BINARY_PAIR_LOSSES: readonly PairLossKind[] = ['contrastive', 'online_contrastive'];

/**
 * loss.pairs and loss.margin checked, with what a pair loss leaves no room for: the other losses and their settings,
 * and the training modes of other models or data (a pair loss trains a single-vector embedding model on labeled pairs).
 */
function readPairs(o: TrainOptions, loss: LossOptions): Config['pairs'] {
  if (loss.pairs === undefined) {
    if (loss.margin !== undefined) throw invalid('options.loss.margin', "absent without options.loss.pairs 'contrastive' or 'online_contrastive' (the margin is theirs)", loss.margin);
    return undefined;
  }
  const kind = oneOf('options.loss.pairs', loss.pairs, ['cosent', 'angle', 'cosine', 'contrastive', 'online_contrastive'] as const);
  refuseBesideWholeLoss(o, loss, {
    name: 'options.loss.pairs',
    data: 'labeled pairs',
    modes: ['mineNegatives'],
    lossKeys: [],
    why: 'the other losses need queries with positives, not labeled pairs',
  });
  const binary = BINARY_PAIR_LOSSES.includes(kind);
  if (loss.margin !== undefined && !binary) throw invalid('options.loss.margin', `absent with options.loss.pairs '${kind}' (the margin is the contrastive losses')`, loss.margin);
  return { kind, margin: float32('options.loss.margin', numberValue('options.loss.margin', loss.margin ?? 0.5, (x) => x >= 0, 'a number >= 0')) };
}

/**
 * loss.batchTriplet checked, with what a batch triplet loss leaves no room for (it is the whole loss, on texts of
 * classes): the other losses and their settings, Matryoshka widths, gradient caching and other training modes; and
 * batchSize, which must be even and 4 or more (2 texts of a class at a time, and 2 classes at least).
 */
function readBatchTriplet(o: TrainOptions, loss: LossOptions): Config['batchTriplet'] {
  if (loss.batchTriplet === undefined) return undefined;
  const kinds = ['all', 'hard', 'semi_hard', 'hard_soft_margin'] as const;
  const given = typeof loss.batchTriplet === 'string' ? { kind: loss.batchTriplet } : checkOptions('options.loss.batchTriplet', loss.batchTriplet, ['kind', 'distance', 'margin']);
  const name = typeof loss.batchTriplet === 'string' ? 'options.loss.batchTriplet' : 'options.loss.batchTriplet.kind';
  const kind = oneOf(name, given.kind, kinds);
  refuseBesideWholeLoss(o, loss, {
    name: 'options.loss.batchTriplet',
    data: 'texts of classes ({ text, label })',
    modes: ['mineNegatives', 'maxNegatives', 'miniBatchSize'],
    lossKeys: ['pairs', 'margin', 'triplet', 'temperature', 'matryoshka'],
    why: 'its margin is options.loss.batchTriplet.margin',
  });
  const batchSize = o.batchSize ?? 16;
  if (typeof batchSize === 'number' && (batchSize < 4 || batchSize % 2 !== 0)) {
    throw invalid('options.batchSize', 'an even number >= 4 with options.loss.batchTriplet (each batch holds 2 texts of a class at a time, and 2 classes at least)', batchSize);
  }
  if (kind === 'hard_soft_margin' && given.margin !== undefined) throw invalid('options.loss.batchTriplet.margin', "absent with 'hard_soft_margin' (its soft margin has none)", given.margin);
  return {
    kind,
    distance: oneOf('options.loss.batchTriplet.distance', given.distance ?? 'euclidean', ['euclidean', 'cosine'] as const),
    margin: float32('options.loss.batchTriplet.margin', numberValue('options.loss.batchTriplet.margin', given.margin ?? 5, (x) => x >= 0, 'a number >= 0')),
  };
}

/**
 * loss.distillation 'mse' (embedding distillation) checked: options.teacher is its embedding model, and it is the whole
 * loss, on parallel sentences: the other losses, their settings and other training modes are refused. Returns the
 * teacher, or undefined for the other kinds of training.
 */
function readEmbeddingTeacher(o: TrainOptions, loss: LossOptions): string | undefined {
  if (loss.distillation !== 'mse') return undefined;
  if (typeof o.teacher !== 'string' || o.teacher.length === 0) {
    throw invalid('options.teacher', "an embedding model folder or Hugging Face id: options.loss.distillation 'mse' fits the model's vectors to that teacher's", o.teacher);
  }
  refuseBesideWholeLoss({ ...o, teacher: undefined }, { ...loss, distillation: undefined }, {
    name: "options.loss.distillation 'mse'",
    data: 'parallel sentences (a source sentence and its translation)',
    modes: ['mineNegatives', 'maxNegatives'],
    lossKeys: ['pairs', 'margin', 'triplet', 'temperature', 'matryoshka'],
    why: "the teacher's vectors are the targets",
  });
  return o.teacher;
}

/**
 * What a loss that is the whole loss (loss.pairs, loss.triplet: `name`) leaves no room for, refused by name: the training
 * modes of other models or data (and its own `modes`), then the other losses' settings (and its own `lossKeys`) and
 * weights above 0; `why` ends that message.
 */
function refuseBesideWholeLoss(
  o: TrainOptions,
  loss: LossOptions,
  rule: { name: string; data: string; modes: (keyof TrainOptions)[]; lossKeys: (keyof LossOptions)[]; why: string },
): void {
  const modes = (['crossEncoder', 'multiVector', 'contrastiveTension', 'sparse', 'mlm', 'teacher', 'guide', ...rule.modes] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (modes.length > 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `${rule.name} trains a single-vector embedding model on ${rule.data}: ${modes.map((k) => `options.${k}`).join(', ')} ${modes.length > 1 ? 'are' : 'is'} for other training; drop ${modes.length > 1 ? 'them' : 'it'}`);
  }
  const others: (keyof LossOptions)[] = (['lateInteraction', 'symmetric', 'distillation', 'distillationWeight', 'teacherTemperature', ...rule.lossKeys] as const).filter((k) => loss[k] !== undefined);
  for (const k of ['contrastiveWeight', 'lateInteractionWeight'] as const) if (loss[k] !== undefined && loss[k] !== 0) others.unshift(k);
  if (others.length > 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `${rule.name} is the whole loss: drop ${others.map((k) => `options.loss.${k}`).join(', ')} (${rule.why})`);
  }
}

/**
 * loss.triplet checked, with what the triplet loss leaves no room for: the other losses and their settings, labeled
 * pairs' losses, and the training modes of other models (TripletLoss trains a single-vector embedding model).
 */
function readTriplet(o: TrainOptions, loss: LossOptions): Config['triplet'] {
  if (loss.triplet === undefined || loss.triplet === false) return undefined;
  const given = loss.triplet === true ? {} : checkOptions('options.loss.triplet', loss.triplet, ['distance', 'margin']);
  refuseBesideWholeLoss(o, loss, {
    name: 'options.loss.triplet',
    data: '(query, positive, negative) triplets',
    modes: ['maxNegatives'],
    lossKeys: ['pairs', 'margin', 'temperature'],
    why: 'its margin is options.loss.triplet.margin',
  });
  return {
    distance: oneOf('options.loss.triplet.distance', given.distance ?? 'euclidean', ['euclidean', 'cosine', 'manhattan'] as const),
    margin: float32('options.loss.triplet.margin', numberValue('options.loss.triplet.margin', given.margin ?? 5, (x) => x >= 0, 'a number >= 0')),
  };
}

/** With loss.megaBatchMargin every example is a plain (anchor, positive) pair: its negatives are the batch's other positives. */
function checkMegaBatchData(config: Config, examples: TrainExample[]): void {
  if (!config.step.megaBatchMargin) return;
  const at = examples.findIndex((e) => e.negatives?.length || e.label !== undefined || e.classLabel !== undefined || e.scores || e.single);
  if (at >= 0) {
    const e = examples[at];
    const what = e.negatives?.length ? 'has hard negatives' : e.label !== undefined ? 'is a labeled pair' : e.classLabel !== undefined ? 'is a text of a class' : e.scores ? 'has teacher scores' : 'is a sentence alone';
    throw new ColtrastError('INVALID_ARGUMENT', `options.loss.megaBatchMargin trains on (anchor, positive) pairs, its negatives the batch's other positives, and example ${at + 1} ${what}: give plain pairs`);
  }
}

/** With loss.triplet every example has a hard negative other than its positive (its first is the triplet's). */
function checkTripletData(config: Config, examples: TrainExample[]): void {
  if (!config.triplet) return;
  const at = examples.findIndex((e) => e.negatives === undefined || e.negatives.length === 0 || e.negatives[0] === e.positive);
  if (at >= 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.loss.triplet trains on (query, positive, negative) triplets, and example ${at + 1} ${examples[at].negatives?.length ? 'has its positive as its negative' : 'has no hard negative'}: give each example a "negative" (or mine them: options.mineNegatives)`);
  }
}

/**
 * The examples checked against loss.pairs: with it every example is a labeled pair (binary labels for the contrastive
 * losses); without it, none is (its label would be ignored). ColTrast project files hold no labeled pairs.
 */
function checkPairData(config: Config, data: { examples: TrainExample[] } | { projects: unknown[] }, crossEncoderLoss: unknown): void {
  const examples = 'examples' in data ? data.examples : [];
  const labeled = examples.filter((e) => e.label !== undefined).length;
  if (config.crossEncoder) {
    // A cross-encoder's labeled pairs: each pair's logit against its label (BCE), its validation by correlation.
    if (labeled === 0) {
      if (config.metric === 'spearman') throw invalid('options.earlyStopping.metric', "'loss', 'recall@1' or 'mrr@10' ('spearman' is for labeled pairs)", config.metric);
      return;
    }
    if (labeled < examples.length) {
      throw new ColtrastError('INVALID_ARGUMENT', `${labeled} of the ${examples.length} examples are labeled pairs: a cross-encoder trains on labeled pairs (each with a "label" or "score" in [0, 1]) or on queries with positives, not both`);
    }
    if (crossEncoderLoss === 'cross_entropy') throw invalid('options.crossEncoder.loss', "'bce' (or absent) for labeled pairs: each pair's logit is fitted to its label", crossEncoderLoss);
    const at = examples.findIndex((e) => !(e.label! >= 0 && e.label! <= 1));
    if (at >= 0) throw new ColtrastError('INVALID_ARGUMENT', `a cross-encoder's labels are in [0, 1] (1: relevant; a score scaled into that range), and example ${at + 1} is labeled ${examples[at].label}`);
    if (config.metric === 'recall@1' || config.metric === 'mrr@10') throw invalid('options.earlyStopping.metric', "'loss' or 'spearman' with labeled pairs (validated by correlation, not retrieval)", config.metric);
    config.crossEncoder.kind = 'bce';
    config.crossEncoder.labeled = true;
    return;
  }
  if (!config.pairs) {
    if (labeled > 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `${labeled} of the ${examples.length} examples are labeled pairs (a "label" or "score"): choose their loss with options.loss.pairs ('cosent', 'angle', 'cosine', 'contrastive' or 'online_contrastive')`);
    }
    return;
  }
  if (!('examples' in data)) throw new ColtrastError('INVALID_ARGUMENT', 'options.loss.pairs trains on labeled pairs, and a ColTrast project file holds questions and READMEs: give pairs with a "label" or "score"');
  if (labeled < examples.length) {
    const at = examples.findIndex((e) => e.label === undefined);
    throw new ColtrastError('INVALID_ARGUMENT', `options.loss.pairs trains on labeled pairs, and ${examples.length - labeled} of the ${examples.length} examples have no "label" or "score" (the first: example ${at + 1}): label every pair`);
  }
  if (BINARY_PAIR_LOSSES.includes(config.pairs.kind)) {
    const at = examples.findIndex((e) => e.label !== 0 && e.label !== 1);
    if (at >= 0) throw new ColtrastError('INVALID_ARGUMENT', `options.loss.pairs '${config.pairs.kind}' takes labels 1 (similar) and 0 (not), and example ${at + 1} is labeled ${examples[at].label}: use 'cosent', 'angle' or 'cosine' for similarity scores`);
  }
}

/** loss.matryoshka checked, its widths sorted largest first (with their weights). */
function readMatryoshka(value: MatryoshkaOptions | undefined): Config['matryoshka'] {
  if (value === undefined) return undefined;
  const m = checkOptions('options.loss.matryoshka', value, ['dimensions', 'weights', 'dimensionsPerStep']);
  if (!Array.isArray(m.dimensions) || m.dimensions.length === 0) throw invalid('options.loss.matryoshka.dimensions', 'a non-empty array of widths, e.g. [768, 512, 256, 128, 64]', m.dimensions);
  const dimensions = m.dimensions.map((d, i) => positiveInteger(`options.loss.matryoshka.dimensions[${i}]`, d));
  if (new Set(dimensions).size !== dimensions.length) throw invalid('options.loss.matryoshka.dimensions', 'distinct widths', m.dimensions);
  if (m.weights !== undefined && (!Array.isArray(m.weights) || m.weights.length !== dimensions.length)) {
    throw invalid('options.loss.matryoshka.weights', `an array of ${dimensions.length} weights, one per width`, m.weights);
  }
  const weights = dimensions.map((_, i) => (m.weights === undefined ? 1 : numberValue(`options.loss.matryoshka.weights[${i}]`, m.weights[i], (x) => x >= 0, 'a number >= 0')));
  if (weights.every((w) => w === 0)) throw invalid('options.loss.matryoshka.weights', 'at least one weight above 0', m.weights);
  const perStep = m.dimensionsPerStep === undefined ? dimensions.length : positiveInteger('options.loss.matryoshka.dimensionsPerStep', m.dimensionsPerStep);
  if (perStep > dimensions.length) throw invalid('options.loss.matryoshka.dimensionsPerStep', `at most the ${dimensions.length} widths`, perStep);
  const order = dimensions.map((_, i) => i).sort((a, b) => dimensions[b] - dimensions[a]);
  return { dimensions: order.map((i) => dimensions[i]), weights: order.map((i) => weights[i]), perStep };
}

/**
 * The Matryoshka widths and weights of a batch's step: all of them, or a sample of `perStep` drawn from the
 * seed, the epoch and the batch (so a resumed run draws the same), largest first.
 */
export function matryoshkaStep(m: Config['matryoshka'], seed: number, epoch: number, batch: number): { matryoshkaDimensions?: number[]; matryoshkaWeights?: number[] } {
  if (!m) return {};
  let picked = m.dimensions.map((_, i) => i);
  if (m.perStep < picked.length) {
    const random = seededRandom((seed * 1_000_003 + epoch * 65_537 + batch) >>> 0);
    for (let i = 0; i < m.perStep; i++) {
      const j = i + Math.floor(random.next() * (picked.length - i));
      [picked[i], picked[j]] = [picked[j], picked[i]];
    }
    picked = picked.slice(0, m.perStep).sort((a, b) => a - b);
  }
  return { matryoshkaDimensions: picked.map((i) => m.dimensions[i]), matryoshkaWeights: picked.map((i) => m.weights[i]) };
}

type AdaptiveLayers = Required<AdaptiveLayerOptions>;

/**
 * loss.adaptiveLayers checked, with what it leaves no room for: late interaction, gradient caching, and the training
 * of multi-vector models, cross-encoders, sparse encoders and masked language models.
 */
function readAdaptiveLayers(o: TrainOptions, loss: LossOptions): AdaptiveLayers | undefined {
  if (loss.adaptiveLayers === undefined || loss.adaptiveLayers === false) return undefined;
  const a = loss.adaptiveLayers === true ? {} : checkOptions('options.loss.adaptiveLayers', loss.adaptiveLayers, ['layersPerStep', 'lastLayerWeight', 'priorLayersWeight', 'layerWeighting', 'klTemperature', 'klWeight']);
  const modes = (['crossEncoder', 'multiVector', 'sparse', 'mlm', 'miniBatchSize'] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (modes.length > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.loss.adaptiveLayers trains a single-vector embedding model's pooled vectors after each layer: ${modes.map((k) => `options.${k}`).join(', ')} ${modes.length > 1 ? 'are' : 'is'} for other training; drop ${modes.length > 1 ? 'them' : 'it'}`,
    );
  }
  if ((loss.lateInteractionWeight ?? 0) > 0 || loss.lateInteraction !== undefined) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.loss.adaptiveLayers trains pooled vectors, not token vectors: drop options.loss.lateInteractionWeight and options.loss.lateInteraction (late interaction is off with it)');
  }
  const weight = (key: 'lastLayerWeight' | 'priorLayersWeight' | 'klWeight' | 'klTemperature', fallback: number) =>
    float32(`options.loss.adaptiveLayers.${key}`, numberValue(`options.loss.adaptiveLayers.${key}`, a[key] ?? fallback, (x) => x >= 0, 'a number >= 0'));
  const perStep = a.layersPerStep ?? 1;
  return {
    layersPerStep: perStep === 'all' ? 'all' : positiveInteger('options.loss.adaptiveLayers.layersPerStep', perStep),
    lastLayerWeight: weight('lastLayerWeight', 1),
    priorLayersWeight: weight('priorLayersWeight', 1),
    layerWeighting: oneOf('options.loss.adaptiveLayers.layerWeighting', a.layerWeighting ?? 'uniform', ['uniform', 'log', 'linear'] as const),
    klTemperature: weight('klTemperature', 0.3),
    klWeight: weight('klWeight', 1),
  };
}

/**
 * loss.megaBatchMargin checked, as the native step's options, with what it leaves no room for (it is the whole loss, on
 * (anchor, positive) pairs); undefined without it.
 */
function readMegaBatchMargin(o: TrainOptions, loss: LossOptions): Pick<NativeStepOptions, 'megaBatchMargin' | 'positiveMargin' | 'negativeMargin'> | undefined {
  if (loss.megaBatchMargin === undefined || loss.megaBatchMargin === false) return undefined;
  const m = loss.megaBatchMargin === true ? {} : checkOptions('options.loss.megaBatchMargin', loss.megaBatchMargin, ['positiveMargin', 'negativeMargin']);
  refuseBesideWholeLoss(o, loss, {
    name: 'options.loss.megaBatchMargin',
    data: '(anchor, positive) pairs',
    modes: ['mineNegatives'],
    lossKeys: ['pairs', 'margin', 'triplet', 'batchTriplet', 'temperature'],
    why: 'its negatives are the batch\'s other positives, its margins options.loss.megaBatchMargin\'s',
  });
  const margin = (key: 'positiveMargin' | 'negativeMargin', fallback: number) => float32(`options.loss.megaBatchMargin.${key}`, numberValue(`options.loss.megaBatchMargin.${key}`, m[key] ?? fallback, () => true, 'a number'));
  return { megaBatchMargin: true, positiveMargin: margin('positiveMargin', 0.8), negativeMargin: margin('negativeMargin', 0.3) };
}

/** loss.gor checked, as the native step's options; undefined without it. */
function readGor(o: TrainOptions, loss: LossOptions): Pick<NativeStepOptions, 'gorMeanWeight' | 'gorSecondMomentWeight' | 'gorAggregation'> | undefined {
  if (loss.gor === undefined || loss.gor === false) return undefined;
  const g = loss.gor === true ? {} : checkOptions('options.loss.gor', loss.gor, ['meanWeight', 'secondMomentWeight', 'aggregation']);
  const modes = (['crossEncoder', 'multiVector', 'sparse', 'mlm'] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (modes.length > 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.loss.gor spreads a single-vector model's pooled vectors: ${modes.map((k) => `options.${k}`).join(', ')} ${modes.length > 1 ? 'are' : 'is'} for other training; drop ${modes.length > 1 ? 'them' : 'it'}`);
  }
  const aggregation = oneOf('options.loss.gor.aggregation', g.aggregation ?? 'mean', ['mean', 'sum'] as const);
  const weight = (key: 'meanWeight' | 'secondMomentWeight', fallback: number) => float32(`options.loss.gor.${key}`, numberValue(`options.loss.gor.${key}`, g[key] ?? fallback, (x) => x >= 0, 'a number >= 0'));
  const gorMeanWeight = weight('meanWeight', 1);
  const gorSecondMomentWeight = weight('secondMomentWeight', 1);
  if (gorMeanWeight === 0 && gorSecondMomentWeight === 0) throw invalid('options.loss.gor', 'at least one of meanWeight and secondMomentWeight above 0', loss.gor);
  return { gorMeanWeight, gorSecondMomentWeight, gorAggregation: aggregation };
}

/** The retrieval metrics of the model folder `model` run with its first 1, 2, ..., layers - 1 layers alone (Encoder.load({ layers })). */
async function depthMetrics(model: string, layers: number, val: TrainExample[], load: EncoderLoadOptions): Promise<NonNullable<RetrievalMetrics['layers']>> {
  const rows: NonNullable<RetrievalMetrics['layers']> = [];
  for (let n = 1; n < layers; n++) {
    const encoder = await Encoder.load(model, { ...load, layers: n });
    try {
      const m = await measureRetrieval(encoder, val);
      rows.push({ layers: n, 'recall@1': m['recall@1'], 'mrr@10': m['mrr@10'] });
    } finally {
      encoder.dispose();
    }
  }
  return rows;
}

/** Checks loss.adaptiveLayers against the model: a single-vector model of at least 2 layers, layersPerStep at most its layers. */
function adaptiveLayersFit(a: AdaptiveLayers, encoder: Encoder): void {
  if (encoder.multiVector) throw new ColtrastError('INVALID_ARGUMENT', `options.loss.adaptiveLayers trains pooled vectors, and ${encoder.modelDir} is a multi-vector model; start from a single-vector one`);
  if (encoder.layers < 2) throw new ColtrastError('INVALID_ARGUMENT', `options.loss.adaptiveLayers trains a model to work with fewer layers, and ${encoder.modelDir} has ${encoder.layers}`);
  if (a.layersPerStep !== 'all' && a.layersPerStep > encoder.layers) {
    throw invalid('options.loss.adaptiveLayers.layersPerStep', `at most the ${encoder.layers} layers of ${encoder.modelDir} (or 'all')`, a.layersPerStep);
  }
}

/**
 * The adaptive layers of a batch's step and their weights: `layersPerStep` of the model's `layers` first layers (0 to
 * layers - 1: the hidden states entering each layer), drawn from the seed, the epoch and the batch (a resumed run draws
 * the same), each layer's weight its layerWeighting's / the layers drawn × priorLayersWeight.
 */
export function adaptiveLayersStep(a: AdaptiveLayers | undefined, layers: number, seed: number, epoch: number, batch: number): Partial<NativeStepOptions> {
  if (!a) return {};
  let picked = Array.from({ length: layers }, (_, i) => i);
  const perStep = a.layersPerStep === 'all' ? layers : a.layersPerStep;
  if (perStep < layers) {
    // Another stream than matryoshkaStep's draw of widths from the same batch.
    const random = seededRandom(((seed * 1_000_003 + epoch * 65_537 + batch) ^ 0x2d4a5e1f) >>> 0);
    for (let i = 0; i < perStep; i++) {
      const j = i + Math.floor(random.next() * (picked.length - i));
      [picked[i], picked[j]] = [picked[j], picked[i]];
    }
    picked = picked.slice(0, perStep).sort((x, y) => x - y);
  }
  const weightOf = (i: number) => (a.layerWeighting === 'log' ? 1 / (1 + Math.log(1 + i)) : a.layerWeighting === 'linear' ? 1 / (1 + i) : 1);
  return {
    adaptiveLayers: picked,
    adaptiveLayerWeights: picked.map((i) => (weightOf(i) / picked.length) * a.priorLayersWeight),
    lastLayerWeight: a.lastLayerWeight,
    klTemperature: a.klTemperature,
    klWeight: a.klWeight,
  };
}

/** Checks that the model's pooled vectors, `width` wide, can be cut to every Matryoshka width. */
function matryoshkaWidths(config: Config, width: number, model: string): void {
  const tooWide = config.matryoshka!.dimensions.filter((d) => d > width);
  if (tooWide.length > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.loss.matryoshka.dimensions: ${tooWide.join(', ')} ${tooWide.length > 1 ? 'are' : 'is'} wider than the pooled vectors of ${model} (${width}${config.projection ? ', the projection head' : ''})`,
    );
  }
}

/**
 * options.sparse checked: its regularizer weights (sentence-transformers' SpladeLoss defaults in its examples: 5e-5 for
 * queries, 3e-5 for documents), and the options that are for dense models refused.
 */
function readSparse(o: TrainOptions, loss: LossOptions): SparseRegularizers | undefined {
  if (o.sparse === undefined || o.sparse === false) return undefined;
  const given = o.sparse === true ? {} : checkOptions('options.sparse', o.sparse, ['queryRegularizer', 'documentRegularizer', 'warmupRatio', 'schedule']);
  const dense = (['crossEncoder', 'multiVector', 'projection', 'contrastiveTension', 'guide', 'lora', 'freezeBase'] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (dense.length > 0) throw new ColtrastError('INVALID_ARGUMENT', `options.sparse trains a sparse encoder's SPLADE vectors; ${dense.map((k) => `options.${k}`).join(', ')} ${dense.length > 1 ? 'are' : 'is'} for dense models: drop ${dense.length > 1 ? 'them' : 'it'}`);
  if ((loss.lateInteractionWeight ?? 0) > 0 || loss.lateInteraction !== undefined || loss.matryoshka !== undefined || loss.symmetric) {
    throw new ColtrastError('INVALID_ARGUMENT', "options.sparse: a sparse encoder's loss is the contrastive loss on its SPLADE vectors (and distillation): leave loss.lateInteraction, loss.lateInteractionWeight, loss.matryoshka and loss.symmetric out");
  }
  const weight = (key: 'queryRegularizer' | 'documentRegularizer', fallback: number) =>
    float32(`options.sparse.${key}`, numberValue(`options.sparse.${key}`, given[key] ?? fallback, (x) => x >= 0, 'a number >= 0'));
  return {
    queryRegularizer: weight('queryRegularizer', 5e-5),
    documentRegularizer: weight('documentRegularizer', 3e-5),
    warmupRatio: numberValue('options.sparse.warmupRatio', given.warmupRatio ?? 1 / 3, (x) => x >= 0 && x <= 1, 'a number in [0, 1]'),
    schedule: oneOf('options.sparse.schedule', given.schedule ?? 'quadratic', ['quadratic', 'linear'] as const),
  };
}

/**
 * A sparse encoder's regularizer weights for the optimizer step after `step` updates of `total`: sentence-transformers'
 * SpladeRegularizerWeightSchedulerCallback, which sets them at each step's start from the updates done so far: full
 * weight times (step / warm-up steps)² (or to the first power, 'linear') before the warm-up's floor(total · ratio)
 * steps (at least 1) are done, full weight after.
 */
export function sparseRegularizersAt(step: number, total: number, r: SparseRegularizers): { queryRegularizer: number; documentRegularizer: number } {
  const warmup = Math.max(1, Math.floor(total * r.warmupRatio));
  const ratio = r.warmupRatio === 0 || step >= warmup ? 1 : step / warmup;
  const scale = r.schedule === 'linear' ? ratio : ratio * ratio;
  return { queryRegularizer: r.queryRegularizer * scale, documentRegularizer: r.documentRegularizer * scale };
}

/**
 * options.mlm checked: its masking probability, and the options of the retrieval losses refused (masked-language-model
 * training has a loss of its own and no pairs).
 */
function readMlm(o: TrainOptions, loss: LossOptions): { probability: number } | undefined {
  if (o.mlm === undefined || o.mlm === false) return undefined;
  const given = o.mlm === true ? {} : checkOptions('options.mlm', o.mlm, ['probability']);
  const other = (['sparse', 'crossEncoder', 'multiVector', 'projection', 'contrastiveTension', 'guide', 'lora', 'freezeBase', 'teacher', 'mineNegatives', 'miniBatchSize', 'mining', 'chunking', 'maxNegatives'] as const).filter(
    (k) => o[k] !== undefined && o[k] !== false,
  );
  if (Object.keys(loss).length > 0) other.push('loss' as never);
  if (other.length > 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.mlm trains a masked language model on unlabeled text, with a loss of its own; ${other.map((k) => `options.${k}`).join(', ')} ${other.length > 1 ? 'are' : 'is'} for retrieval training: drop ${other.length > 1 ? 'them' : 'it'}`);
  }
  const metric = (o.earlyStopping as { metric?: unknown } | undefined)?.metric;
  if (metric !== undefined && metric !== 'loss') throw invalid('options.earlyStopping.metric', "'loss' with options.mlm (its validation has no retrieval metrics)", metric);
  return { probability: numberValue('options.mlm.probability', given.probability ?? 0.15, (x) => x > 0 && x < 1, 'a number in (0, 1)') };
}

/** What Contrastive Tension cannot be combined with: it trains a single-vector embedding model on its pooled vectors. */
/** options.mineNegatives: true (3 negatives, relative margin 0.05), false, or the settings. */
function readMineNegatives(value: unknown, tension: boolean): MineNegativesOptions | undefined {
  if (value === undefined || value === false) return undefined;
  if (tension) throw new ColtrastError('INVALID_ARGUMENT', 'options.mineNegatives mines for (query, positive) pairs; Contrastive Tension trains on unlabeled sentences, with none');
  if (value === true) return { numNegatives: 3, relativeMargin: 0.05 };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid('options.mineNegatives', 'true, false or an object of mining settings', value);
  const m = checkOptions('options.mineNegatives', value as MineNegativesOptions, [...MINING_SETTING_KEYS, 'corpus', 'plaid']);
  miningSettings('options.mineNegatives', m);
  plaidSettings('options.mineNegatives.plaid', m.plaid);
  return { ...m };
}

function contrastiveTensionOptions(o: TrainOptions, loss: LossOptions): void {
  const other = (['crossEncoder', 'multiVector', 'teacher', 'guide'] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (other.length > 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.contrastiveTension trains a single-vector embedding model on unlabeled sentences; drop ${other.map((k) => `options.${k}`).join(', ')}`);
  }
  if ((loss.lateInteractionWeight ?? 0) > 0 || loss.distillationWeight !== undefined) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.contrastiveTension: its loss is the in-batch contrastive loss on pooled vectors; leave loss.lateInteractionWeight and loss.distillationWeight out');
  }
  if (loss.contrastiveWeight === 0) throw new ColtrastError('INVALID_ARGUMENT', 'options.contrastiveTension needs loss.contrastiveWeight > 0');
}

const SCHEDULES = ['linear', 'cosine', 'constant'] as const;

/** Learning rate at optimizer step `step` (0-based; a fraction lies between two steps) of `total`. */
export function learningRateAt(step: number, total: number, peak: number, warmupRatio: number, schedule: Config['schedule']): number {
  numberValue('step', step, (x) => x >= 0, 'a number >= 0');
  positiveInteger('total', total);
  numberValue('peak', peak, (x) => x >= 0, 'a number >= 0');
  numberValue('warmupRatio', warmupRatio, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
  oneOf('schedule', schedule, SCHEDULES);
  const warmup = Math.floor(total * warmupRatio);
  if (step < warmup) return (peak * (step + 1)) / (warmup + 1);
  if (schedule === 'constant') return peak;
  // The decay reaches 0 after the last step, not at it (as transformers' schedulers): the last step still learns.
  const progress = (step - warmup) / (total - warmup);
  return schedule === 'cosine' ? peak * 0.5 * (1 + Math.cos(Math.PI * progress)) : peak * (1 - progress);
}

/**
 * A multi-vector model has no pooled vector: it trains with the late-interaction loss (weight 1 unless given) on
 * its projected token vectors, and with distillation when there are teacher scores.
 */
function multiVectorLoss(config: Config, options: TrainOptions, model: string, scoredData: boolean): void {
  if ((options.loss?.contrastiveWeight ?? 0) > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.loss.contrastiveWeight: ${model} trains as a multi-vector (ColBERT-style) model, which has no pooled vector; it trains with the late-interaction loss alone (leave contrastiveWeight out or set it to 0)`,
    );
  }
  config.step.contrastiveWeight = 0;
  config.step.lateInteractionWeight = options.loss?.lateInteractionWeight ?? 1;
  if (config.step.lateInteractionWeight === 0 && !config.step.distillationWeight && config.teacher === undefined && !scoredData) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.loss: a multi-vector model needs lateInteractionWeight > 0 (or distillation from a teacher)');
  }
}

/**
 * With a frozen base only a head trains: the model must have one, and a single-vector model's late-interaction
 * loss (on the frozen token states, which no trained weight reaches) is off.
 */
function frozenBaseLoss(config: Config, options: TrainOptions, encoder: Encoder): void {
  if (!encoder.projection) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.freezeBase trains only a head, and ${encoder.modelDir} has none: add options.projection (or options.multiVector)`);
  }
  if (encoder.multiVector) return;
  if ((options.loss?.lateInteractionWeight ?? 0) > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      'options.loss.lateInteractionWeight: with options.freezeBase the late-interaction loss scores the frozen token states, which nothing trained changes; leave it out or set it to 0',
    );
  }
  config.step.lateInteractionWeight = 0;
  if (config.step.contrastiveWeight + (config.step.distillationWeight ?? 0) === 0) noLoss(false);
}

/**
 * Scores each example's query with its positive and each of its negatives by the cross-encoder `teacher` (its
 * logits), for distillation; examples that have scores keep them.
 */
export async function scoreWithTeacher(teacher: string, examples: TrainExample[], load: { device: Device; threads?: number }, progressBar = false, signal?: AbortSignal): Promise<TrainExample[]> {
  const todo = examples.filter((e) => !e.scores);
  if (todo.length === 0) return examples;
  const model = await CrossEncoder.load(teacher, load);
  try {
    if (model.numLabels !== 1) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.teacher ${teacher} has ${model.numLabels} labels; a teacher gives one score per pair (a one-label cross-encoder)`);
    }
    const pairs = todo.flatMap((e) => [e.positive, ...(e.negatives ?? [])].map((d): [string, string] => [e.query, d]));
    const bar = progressBar ? new ProgressBar('teacher', 'pairs') : undefined;
    const { data } = await model.predict(pairs, { activation: 'identity', onProgress: bar && ((done, total) => bar.update(done, total)), signal });
    let at = 0;
    const scores = new Map(
      todo.map((e) => {
        const n = 1 + (e.negatives?.length ?? 0);
        at += n;
        return [e, Array.from(data.subarray(at - n, at))];
      }),
    );
    return examples.map((e) => (scores.has(e) ? { ...e, scores: scores.get(e) } : e));
  } finally {
    model.dispose();
  }
}

/** sentence-transformers' name of each batch triplet loss (the model card names it). */
const BATCH_TRIPLET_NAMES: Record<BatchTripletKind, string> = {
  all: 'BatchAllTripletLoss', hard: 'BatchHardTripletLoss', semi_hard: 'BatchSemiHardTripletLoss', hard_soft_margin: 'BatchHardSoftMarginTripletLoss',
};

/**
 * The data checked against loss.batchTriplet: with it every example is a text of a class (`{ text, label }`), and two
 * classes hold two texts or more; without it, none is (its class would be ignored). Not a ColTrast project file.
 */
function checkClassData(config: Config, data: { examples: TrainExample[] } | { projects: unknown[] }): void {
  const examples = 'examples' in data ? data.examples : [];
  const classed = examples.filter((e) => e.classLabel !== undefined).length;
  if (!config.batchTriplet) {
    if (classed > 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `${classed} of the ${examples.length} examples are texts of classes ({ "text", "label" }): train them with options.loss.batchTriplet ('all', 'hard', 'semi_hard' or 'hard_soft_margin')`);
    }
    return;
  }
  const what = 'options.loss.batchTriplet trains on texts of classes ({ "text", "label" }, or "sentence")';
  if (!('examples' in data)) throw new ColtrastError('INVALID_ARGUMENT', `${what}, and a ColTrast project file holds questions and READMEs`);
  const at = examples.findIndex((e) => e.classLabel === undefined);
  if (at >= 0) throw new ColtrastError('INVALID_ARGUMENT', `${what}, and example ${at + 1} has no class: give every example its "label"`);
  const sizes = new Map<string, number>();
  for (const e of examples) sizes.set(e.classLabel!, (sizes.get(e.classLabel!) ?? 0) + 1);
  const usable = [...sizes.values()].filter((n) => n >= 2).length;
  if (usable < 2) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what}, and ${usable === 0 ? 'no class holds' : 'one class alone holds'} 2 texts or more: a batch needs 2 classes of 2 texts each at least (${sizes.size} classes given)`);
  }
}

/**
 * Embedding distillation's targets: the embedding model `teacher`'s vector of each example's query (the source
 * sentence), as the model gives it (normalized where it has a Normalize module), each distinct source embedded once.
 * The teacher's width must be the student's (`student.width`, of `student.model`).
 */
export async function embedWithTeacher(
  teacher: string,
  examples: TrainExample[],
  student: { width: number; model: string },
  load: { device: Device; threads?: number },
  progressBar = false,
  signal?: AbortSignal,
): Promise<TrainExample[]> {
  const model = await Encoder.load(teacher, load);
  try {
    model.checkNotMultiVector("a teacher of embedding distillation (its one vector per text is the student's target)");
    if (model.dimension !== student.width) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `options.teacher ${teacher} gives vectors of ${model.dimension} entries and ${student.model} of ${student.width}: embedding distillation fits the one to the other, so they must be as wide (options.projection: { dimension: ${model.dimension} } gives the model a head that wide)`,
      );
    }
    const sources = [...new Set(examples.map((e) => e.query))];
    const bar = progressBar ? new ProgressBar('teacher', 'texts') : undefined;
    const rows = matrixRows(await model.embed(sources, { onProgress: bar && ((done, total) => bar.update(done, total)), signal }));
    const target = new Map(sources.map((t, i) => [t, Array.from(rows[i])]));
    return examples.map((e) => ({ ...e, target: target.get(e.query)! }));
  } finally {
    model.dispose();
  }
}

/**
 * The data checked against loss.distillation 'mse': parallel sentences, a source and its translation per example
 * (query and positive, or english and non_english), with no labels, hard negatives or teacher scores; not a ColTrast
 * project file.
 */
function checkParallelData(config: Config, data: { examples: TrainExample[] } | { projects: unknown[] }): void {
  if (!config.embeddingTeacher) {
    const single = 'examples' in data ? data.examples.findIndex((e) => e.single) : -1;
    if (single >= 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `example ${single + 1} is a sentence alone ({ "text" } without a "label"): sentences alone train embedding distillation (options.teacher with options.loss.distillation 'mse'); give pairs ({ "query", "positive" }) here`);
    }
    return;
  }
  const what = "options.loss.distillation 'mse' trains on parallel sentences (a source sentence and its translation: english and non_english, or query and positive) or on sentences alone (a .txt file, or { \"text\" })";
  if (!('examples' in data)) throw new ColtrastError('INVALID_ARGUMENT', `${what}, and a ColTrast project file holds questions and READMEs`);
  const at = data.examples.findIndex((e) => e.label !== undefined || e.negatives !== undefined || e.scores !== undefined);
  if (at >= 0) {
    const e = data.examples[at];
    const field = e.label !== undefined ? 'a label' : e.negatives !== undefined ? 'hard negatives' : 'teacher scores';
    throw new ColtrastError('INVALID_ARGUMENT', `${what}, and example ${at + 1} has ${field}: give each source with its translation alone`);
  }
  const singles = data.examples.filter((e) => e.single).length;
  if (singles > 0 && singles < data.examples.length) {
    throw new ColtrastError('INVALID_ARGUMENT', `${singles} of the ${data.examples.length} examples are sentences alone and the others parallel sentences: give one kind (sentences alone distill the teacher's vectors of them, parallel sentences the source's into both)`);
  }
}

/**
 * The distillation loss's weight, now that the data is known (default: 1 when the examples have teacher
 * scores), and the checks that need the data: every example or none scored, negatives to distill on, and
 * some loss to train with.
 */
function distillationLoss(config: Config, examples: TrainExample[], lossGiven: boolean): void {
  const scored = examples.filter((e) => e.scores).length;
  if (scored > 0 && scored < examples.length) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `${scored} of the ${examples.length} examples have teacher scores: give them for every example or none (options.teacher scores the rest)`,
    );
  }
  const weight = config.step.distillationWeight ?? (scored > 0 ? 1 : 0);
  if (weight > 0 && scored === 0) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.loss.distillationWeight needs teacher scores: options.teacher (a cross-encoder) or "scores" in the data');
  }
  if (weight > 0 && !examples.some((e) => e.negatives?.length)) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      'distillation compares each positive with hard negatives, and no example has any: give triplets ({ query, positive, negatives }) or a ColTrast project file',
    );
  }
  if (weight === 0 && lossGiven) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.loss.distillation chooses how to distill, and nothing is distilled here: give options.teacher (a cross-encoder) or "scores" in the data, or leave it out');
  }
  config.step.distillationWeight = weight;
  if (config.step.contrastiveWeight + config.step.lateInteractionWeight + weight === 0 && !wholeLoss(config)) noLoss(false);
}

/**
 * An epoch's training examples in its order, shuffled by the seeded generator from its state at the epoch's start, and
 * the generator's state after (the next epoch's start). train() draws each epoch's order with it, and counts each
 * epoch's batches with it for the schedule, so the two cannot differ.
 */
function epochOrder(trainSet: TrainExample[], shuffleState: number): { order: TrainExample[]; next: number } {
  const random = seededRandom(0, shuffleState);
  return { order: shuffle(trainSet, random.next), next: random.state() };
}

/**
 * Every query against every document: cosine of pooled vectors, or MaxSim of a multi-vector model's tokens, given a
 * query's row of scores at a time to `each(w, i, row)` (w: the index in `widths`, the pooled vectors cut to their first
 * entries, the Matryoshka widths; 0 for the full vectors). Scored natively a block of queries at a time, so no
 * [queries × documents] matrix is kept (20,000 validation pairs would need 1.6 GB of scores).
 */
async function forEachScoreRow(
  encoder: Encoder,
  queries: string[],
  documents: string[],
  widths: number[] | undefined,
  each: (w: number, i: number, row: Float32Array) => void,
  signal?: AbortSignal,
): Promise<void> {
  const device = encoder.device.startsWith('cuda') ? encoder.device : 'cpu';
  // MaxSim (native) of a block of queries against every document at a time: [block × documents] scores, 64 MiB at
  // most. A pooled vector is a one-token MaxSim input, whose MaxSim is the dot product.
  const rows = async (w: number, q: { tokens: Tensor; mask: Mask }, d: { tokens: Tensor; mask: Mask }) => {
    const [B, L, dim] = q.tokens.dims;
    const block = Math.max(1, Math.floor(2 ** 24 / documents.length));
    for (let start = 0; start < B; start += block) {
      const n = Math.min(block, B - start);
      const tokens = { dims: [n, L, dim], data: q.tokens.data.subarray(start * L * dim, (start + n) * L * dim) };
      const mask = { dims: [n, L], data: q.mask.data.subarray(start * L, (start + n) * L) };
      const scores = (await maxsim(tokens, mask, d.tokens, d.mask, { device })).value;
      for (let i = 0; i < n; i++) each(w, start + i, scores.subarray(i * documents.length, (i + 1) * documents.length));
    }
  };
  if (encoder.multiVector) {
    const q = padTokens(await encoder.embed(queries, { output: 'tokens', task: 'query', signal }), encoder.tokenDimension);
    const d = padTokens(await encoder.embed(documents, { output: 'tokens', task: 'document', signal }), encoder.tokenDimension);
    await rows(0, q, d);
    return;
  }
  // The model's vectors are embedded once; each width's are cut from them and normalized, as embed({ truncateDim }) does.
  const q = matrixRows(await encoder.embed(queries, { normalize: !widths, task: 'query', signal }));
  const d = matrixRows(await encoder.embed(documents, { normalize: !widths, task: 'document', signal }));
  for (const [w, width] of (widths ?? [encoder.dimension]).entries()) {
    const oneToken = (vectors: Float32Array[]) => {
      const data = new Float32Array(vectors.length * width);
      vectors.forEach((v, i) => data.set(widths ? normalizeRow(v.slice(0, width)) : v, i * width));
      return { tokens: { dims: [vectors.length, 1, width], data }, mask: { dims: [vectors.length, 1], data: new Uint8Array(vectors.length).fill(1) } };
    };
    await rows(w, oneToken(q), oneToken(d));
  }
}

/**
 * The 1-based rank of document `positive` in a query's `scores` over every document, in evaluateRun's order (score
 * descending, ties by id ascending, the ids `d<index>` compared as strings).
 */
function rankOf(scores: Float32Array, positive: number): number {
  const score = scores[positive];
  // A NaN score (a broken model) ranks last: no comparison with it is true, which ranked it first.
  if (Number.isNaN(score)) return scores.length;
  const id = `d${positive}`;
  let rank = 1;
  for (let j = 0; j < scores.length; j++) {
    if (scores[j] > score || (scores[j] === score && j !== positive && `d${j}` < id)) rank++;
  }
  return rank;
}

/** Documents a cross-encoder ranks per validation query: reading every pair would cost queries × documents forward passes. */
const CROSS_ENCODER_CANDIDATES = 32;

/**
 * Recall@1 and MRR@10 of each query against every distinct positive of `examples` (cosine, or MaxSim for a
 * multi-vector model). A cross-encoder ranks, per query, its own positive and the next 31 distinct positives
 * (in the examples' order, wrapping around): 32 candidates, or all positives when there are fewer. The metrics
 * are those of the encoder's vectors (`encoder.dimension` wide); with Matryoshka `widths` (none wider),
 * `dimensions` adds each width's, the vectors cut to it and normalized again.
 */
export async function retrievalMetrics(encoder: Encoder | CrossEncoder | SparseEncoder, examples: TrainExample[], widths?: number[]): Promise<RetrievalMetrics> {
  return measureRetrieval(encoder, examples, widths);
}

/** retrievalMetrics, whose model calls (embed(), predict()) stop at `signal` with their ABORTED error. */
async function measureRetrieval(encoder: Encoder | CrossEncoder | SparseEncoder, examples: TrainExample[], widths?: number[], signal?: AbortSignal): Promise<RetrievalMetrics> {
  if (!(encoder instanceof Encoder) && !(encoder instanceof CrossEncoder) && !(encoder instanceof SparseEncoder)) throw invalid('encoder', 'an Encoder, a CrossEncoder or a SparseEncoder', encoder);
  if (!Array.isArray(examples) || examples.length === 0 || !examples.every((e) => typeof e?.query === 'string' && typeof e.positive === 'string')) {
    throw invalid('examples', 'a non-empty array of { query, positive } (strings)', examples);
  }
  if (widths !== undefined && (!Array.isArray(widths) || !widths.every((w) => Number.isInteger(w) && w > 0))) throw invalid('widths', 'an array of vector widths (positive integers)', widths);
  const documents = [...new Set(examples.map((e) => e.positive))];
  const position = new Map(documents.map((d, i) => [d, i]));
  const queries = examples.map((e) => e.query);
  let rankings: { id: string; score: number }[][][];
  // Matryoshka: the widths scored, the encoder's full width first (its metrics are the main ones).
  let scoredWidths: number[] = [];
  if (widths && (encoder instanceof CrossEncoder || encoder instanceof SparseEncoder || encoder.multiVector)) throw invalid('widths', 'none: they cut pooled vectors, and this model has none', widths);
  if (encoder instanceof CrossEncoder) {
    const k = Math.min(CROSS_ENCODER_CANDIDATES, documents.length);
    const candidates = examples.map((e) => Array.from({ length: k }, (_, c) => (position.get(e.positive)! + c) % documents.length));
    const { data } = await encoder.predict(candidates.flatMap((docs, i) => docs.map((j): [string, string] => [queries[i], documents[j]])), { signal });
    rankings = [candidates.map((docs, i) => docs.map((j, c) => ({ id: `d${j}`, score: data[i * k + c] })))];
  } else {
    const tooWide = widths?.filter((w) => w > encoder.dimension) ?? [];
    if (tooWide.length > 0) throw invalid('widths', `widths of at most the encoder's ${encoder.dimension}`, tooWide);
    if (widths) scoredWidths = [encoder.dimension, ...widths.filter((w) => w !== encoder.dimension)];
    // Each query's rank of its positive, per width: the metrics need no more (a ranking of every document for every
    // query took gigabytes at a few thousand validation pairs).
    const ranks = (widths ? scoredWidths : [encoder.dimension]).map(() => new Int32Array(examples.length));
    if (encoder instanceof SparseEncoder) {
      // Among every document, by the model's similarity of their sparse vectors.
      const q = await encoder.encode(queries, { task: 'query', signal });
      const d = await encoder.encode(documents, { task: 'document', signal });
      for (let i = 0; i < q.length; i++) ranks[0][i] = rankOf((await encoder.similarity([q[i]], d)).data, position.get(examples[i].positive)!);
    } else {
      await forEachScoreRow(encoder, queries, documents, widths && scoredWidths, (w, i, row) => {
        ranks[w][i] = rankOf(row, position.get(examples[i].positive)!);
      }, signal);
    }
    const scored = ranks.map((r) => {
      // Summed in query order and divided once, as evaluateRun does, so the numbers are the same to the bit.
      let recall = 0;
      let reciprocal = 0;
      for (const rank of r) {
        recall += rank === 1 ? 1 : 0;
        reciprocal += rank <= 10 ? 1 / rank : 0;
      }
      return { 'recall@1': recall / r.length, 'mrr@10': reciprocal / r.length };
    });
    return withWidths(scored, examples.length, widths, scoredWidths);
  }
  // Its own positive is each query's one relevant document.
  const qrels: Qrels = new Map(examples.map((e, i) => [`q${i}`, new Map([[`d${position.get(e.positive)}`, 1]])]));
  const scored = rankings.map((ranked) => {
    const run: Run = new Map(ranked.map((list, i) => [`q${i}`, list]));
    const { metrics } = meanMetrics(run, qrels, [1, 10]);
    return { 'recall@1': metrics.recall[1], 'mrr@10': metrics.mrr[10] };
  });
  return withWidths(scored, examples.length, widths, scoredWidths);
}

/** RetrievalMetrics of the full width's scores (first), with each Matryoshka width's when `widths` are given. */
function withWidths(scored: { 'recall@1': number; 'mrr@10': number }[], queries: number, widths: number[] | undefined, scoredWidths: number[]): RetrievalMetrics {
  return {
    ...scored[0],
    queries,
    ...(widths ? { dimensions: widths.map((dimension) => ({ dimension, ...scored[scoredWidths.indexOf(dimension)] })) } : {}),
  };
}

interface LoopState {
  epoch: number;
  /** Next batch of the epoch. */
  batch: number;
  step: number;
  samples: number;
  epochLoss: number;
  /** Shuffle-generator state at the start of the current epoch, and where it goes next. */
  epochSeed: number;
  shuffleState: number;
  bestScore: number;
  sinceBest: number;
  result: TrainResult;
}

/**
 * A checkpoint's state and data: version 2 keeps the examples in trainSet.jsonl and val.jsonl (saveRunData), version 1
 * kept them in state.json. `dataIn`: the folder, when its files are this run's data (later checkpoints link them).
 * `run`: the run's identity (runIdentity; absent in checkpoints written before it was kept).
 */
async function readCheckpoint(
  dir: string,
): Promise<{ state: LoopState; trainSet: TrainExample[]; val: TrainExample[]; dataIn?: string; run?: Record<string, string> } | undefined> {
  const saved = readCheckpointState<{ state: LoopState; trainSet?: TrainExample[]; val?: TrainExample[]; data?: Record<string, number>; run?: Record<string, string> }>(dir, [1, 2]);
  if (!saved) return undefined;
  saved.state.bestScore ??= -Infinity;
  if (!saved.data) return { state: saved.state, trainSet: saved.trainSet ?? [], val: saved.val ?? [], run: saved.run };
  const { trainSet, val } = (await readRunData(dir, saved.data)) as { trainSet: TrainExample[]; val: TrainExample[] };
  return { state: saved.state, trainSet, val, dataIn: dir, run: saved.run };
}

/**
 * Every resolved option that shapes the steps (defaults filled in, paths absolute; not checkpointEvery, which only
 * decides when to save), under the names the caller gives them: a refused resume names options.gradientAccumulation
 * or options.loss, not Config's own fields (accumulation, step), which are no options.
 */
function runSettings(config: Config, model: string): Record<string, unknown> {
  const absolute = (file: string) => (fs.existsSync(file) ? path.resolve(file) : file);
  const { checkpointEvery: _, accumulation, patience, metric, valSplit, valMaxGroups, matryoshka, step, teacher, embeddingTeacher, guide, mineNegatives, ...same } = config;
  const { miniBatchSize, maxGradNorm: __, ...loss } = step;
  return {
    model: absolute(model),
    ...same,
    // Left out, valSplit's default also caps the groups held out (valMaxGroups): not the same split as 0.2 given.
    valSplit: valMaxGroups === undefined ? valSplit : `${valSplit} (the default: at most ${valMaxGroups} groups)`,
    gradientAccumulation: accumulation,
    earlyStopping: Number.isFinite(patience) ? { patience, metric } : undefined,
    loss: { ...loss, matryoshka },
    miniBatchSize,
    teacher: teacher === undefined ? undefined : absolute(teacher),
    embeddingTeacher: embeddingTeacher === undefined ? undefined : absolute(embeddingTeacher),
    guide: guide && { ...guide, model: absolute(guide.model) },
    mineNegatives: typeof mineNegatives?.corpus === 'string' ? { ...mineNegatives, corpus: absolute(mineNegatives.corpus) } : mineNegatives,
  };
}

/** The Embedder of data preparation, backed by an Encoder: pooled, L2-normalized vectors. */
export function encoderEmbedder(encoder: Encoder, signal?: AbortSignal): Embedder {
  encoder.checkNotMultiVector('semantic chunking (it compares one vector per sentence; index ready-made chunks from a JSONL file instead)');
  // Aborted, no call starts: the documents chunked beside the one whose embed() the abort stopped (in parallel) would
  // go on to tokenize and embed after the caller has rejected.
  const stopped = () => {
    if (signal?.aborted) throw new ColtrastError('ABORTED', 'semantic chunking was aborted (options.signal)');
  };
  return {
    async embed(texts) {
      stopped();
      return matrixRows(await encoder.embed(texts, { normalize: true, signal }));
    },
    // Untruncated: tokenize() stops at the model's length, and a sentence counted at exactly that could be longer
    // (semanticChunks then had to split every sentence that reached it).
    async countTokens(texts) {
      stopped();
      return (await encoder.textTokenizer.encode(texts, UNTRUNCATED)).map((t) => t.ids.length);
    },
  };
}

/**
 * Refuses an options.model folder that is options.output or inside it, or inside the run's checkpoint folder: saving the
 * trained model (each checkpoint) replaces that folder whole, and the model the run started from was deleted with it
 * (or, the same folder, replaced by the run's result, and lost if the run failed after an epoch).
 */
function checkModelOutside(model: string, output: string, checkpointDir: string): void {
  if (model === 'default' || !fs.existsSync(model)) return; // the shipped model, or a Hugging Face id
  const real = (p: string) => (fs.existsSync(p) ? fs.realpathSync(p) : path.resolve(p));
  const from = real(model);
  for (const [dir, what] of [[output, 'which the trained model replaces'], [checkpointDir, "the run's checkpoint folder, which each checkpoint replaces"]]) {
    const relative = path.relative(real(dir), from);
    if (relative === '' && dir === output) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.output ${output} is the folder of options.model: the trained model would replace the model it starts from; choose another output folder`);
    }
    if (relative.split(path.sep)[0] !== '..' && !path.isAbsolute(relative)) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.model ${from} is inside ${dir}, ${what} whole: move the model out of it, or choose another output folder`);
    }
  }
}

/**
 * Refuses a run in which every batch holds a single example and there are no hard negatives: the losses rank each
 * query's positive against the batch's other documents, and with none they are 0 (the log of a softmax over one), so
 * the run went through its steps and trained nothing. A cross-encoder's 'bce' loss scores a pair alone, and trains.
 */
function checkBatchesCompare(config: Config, trainSet: TrainExample[], largestBatch: number, crossEncoder: boolean): void {
  // Labeled pairs compare within a pair (cosine, contrastive) or across the batch's pairs (CoSENT, AnglE: train() checks).
  if (config.pairs || config.batchTriplet) return;
  if (largestBatch > 1 || (crossEncoder && config.crossEncoder?.kind === 'bce')) return;
  if (config.maxNegatives > 0 && trainSet.some((e) => e.negatives?.some((n) => n !== e.positive))) return;
  const [why, fix] =
    config.batchSize === 1
      ? ['options.batchSize 1', 'raise options.batchSize']
      : ['the examples share one positive or one query, and a batch never holds one text twice', 'give examples with other positives and queries'];
  throw new ColtrastError(
    'INVALID_ARGUMENT',
    `every batch holds a single example (${why}) and no hard negative: the losses rank each query's positive against the batch's other documents, so with none they are 0 and nothing would train; ${fix}, or give hard negatives (triplets)`,
  );
}

/**
 * @internal Whether the model's outputs for `example` are finite: a step that made its weights overflow leaves NaN or
 * infinite ones (trainRag() checks its retriever so).
 */
export async function finiteOutputs(encoder: Encoder | CrossEncoder | SparseEncoder, example: TrainExample): Promise<boolean> {
  const finite = (data: Float32Array) => data.every((x) => Number.isFinite(x));
  if (encoder instanceof SparseEncoder) return (await encoder.encode([example.query, example.positive])).every((v) => finite(v.values));
  if (encoder instanceof CrossEncoder) return finite((await encoder.predict([[example.query, example.positive]], { activation: 'identity' })).data);
  if (encoder.multiVector) {
    const tokens = [
      ...(await encoder.embed([example.query], { output: 'tokens', task: 'query' })),
      ...(await encoder.embed([example.positive], { output: 'tokens', task: 'document' })),
    ];
    return tokens.every((m) => finite(m.data));
  }
  return finite((await encoder.embed([example.query, example.positive])).data);
}

/**
 * @internal The last sentence of a diverged run's error: what it kept, the model of its best epoch in `output` (`models`
 * names what that folder holds) and the checkpoint of step `checkpointStep` in `checkpointDir`.
 */
export function keptNote(kept: { output: string; epoch: number; models?: string; checkpointDir: string; checkpointStep?: number }): string {
  const parts = [
    ...(kept.epoch > 0 ? [`${kept.output} holds the ${kept.models ?? 'model'} of epoch ${kept.epoch}`] : []),
    ...(kept.checkpointStep !== undefined ? [`${kept.checkpointDir} the checkpoint of step ${kept.checkpointStep}`] : []),
  ];
  return parts.length > 0 ? `Nothing after it was saved: ${parts.join(', and ')}` : 'Nothing was saved';
}

/** @internal The error of a run whose `outputs` (such as "the model's outputs") are NaN or infinite after `step`, with what it kept. */
export function outputsDiverged(outputs: string, step: number, kept: string): ColtrastError {
  return new ColtrastError(
    'INVALID_ARGUMENT',
    `${outputs} are NaN or infinite after step ${step}: training diverged (lower options.learningRate, keep gradient clipping on, or train in float32). ${kept}`,
  );
}

/** @internal The native step's "training diverged" error with what the run kept; any other error as it is. */
export function stepDiverged(error: unknown, kept: string): unknown {
  return error instanceof ColtrastError && /training diverged/.test(error.message) ? new ColtrastError(error.code, `${error.message}. ${kept}`, { cause: error }) : error;
}

function checkPrecision(precision: Config['precision'], device: string): void {
  if (precision === 'float16' && device === 'cpu') {
    throw new ColtrastError('INVALID_ARGUMENT', "options.precision 'float16' needs a CUDA device; on the CPU use 'bfloat16' or 'float32'");
  }
}

/**
 * @internal The ABORTED error of a training run (`run`: "train()", "trainRag()") that its options.signal stopped: after
 * `step`, whose checkpoint it wrote to `checkpointDir`, or before its first step (`step` undefined), having written nothing.
 */
export function trainingAborted(run: string, checkpointDir: string, step?: number, resumed = false): ColtrastError {
  if (step !== undefined) {
    return new ColtrastError(
      'ABORTED',
      `${run} was aborted (options.signal) after step ${step}: its checkpoint is at ${checkpointDir}; run it again with the same options and resume: true (the command line: --resume) to continue from it`,
    );
  }
  // The checkpoint a resumed run started from is as it was (another run's, there without resume, is not this run's to offer).
  const kept = resumed && fs.existsSync(path.join(checkpointDir, 'state.json')) ? `; the checkpoint at ${checkpointDir} is as it was (resume: true, the command line's --resume, continues from it)` : '';
  return new ColtrastError('ABORTED', `${run} was aborted (options.signal) before its first step: nothing was written${kept}`);
}

/** Fine-tunes `options.model` on `options.data` and writes the kept model to `options.output`. */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const config = readConfig(options);
  // Before anything is read or loaded; looked at again before the model loads and at each step.
  const notStarted = () => {
    if (options.signal?.aborted) throw trainingAborted('train()', `${path.resolve(options.output)}.checkpoint`, undefined, options.resume === true);
  };
  notStarted();
  // The work before the first step (mining, a teacher's scores, a guide's vectors, the metrics before training) stops
  // at options.signal too: its abort is train()'s "before its first step". Looked at before each phase as well: an
  // abort that came during the last batch of the one before does not wait for a teacher or guide model to load.
  const beforeFirstStep = async <T>(work: () => Promise<T>): Promise<T> => {
    notStarted();
    return abortedAs(work(), notStarted);
  };
  if (options.device === 'cpu') checkPrecision(config.precision, 'cpu');
  const data = config.contrastiveTension || config.mlm
    ? { examples: (await readSentences(options.data)).map((sentence): TrainExample => ({ query: sentence, positive: sentence })) }
    : config.embeddingTeacher && typeof options.data === 'string' && /\.txt(\.gz)?$/i.test(options.data)
      ? // Embedding distillation's sentences alone, a line each.
        { examples: (await readSentences(options.data)).map((sentence): TrainExample => ({ query: sentence, positive: sentence, single: true })) }
      : await readTrainingData(options.data);
  // options.mineNegatives.corpus is read here, once, so that its mistakes surface before any model loads.
  const mineNegatives =
    config.mineNegatives?.corpus === undefined ? config.mineNegatives : { ...config.mineNegatives, corpus: await readCorpus(config.mineNegatives.corpus as Parameters<typeof readCorpus>[0]) };
  const { contrastiveWeight, lateInteractionWeight, distillationWeight } = config.step;
  const scoredData = 'examples' in data && data.examples.some((e) => e.scores);
  checkPairData(config, data, typeof options.crossEncoder === 'object' ? options.crossEncoder.loss : undefined);
  if (contrastiveWeight + lateInteractionWeight === 0 && distillationWeight === undefined && !config.teacher && !scoredData && !wholeLoss(config)) noLoss(true);
  checkParallelData(config, data);
  checkClassData(config, data);
  if ('projects' in data && mineNegatives) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.mineNegatives is for pairs: ColTrast project files get their hard negatives from options.mining (hardNegatives)');
  }
  // Split before anything is mined, so no project (or example group) is on both sides.
  const valSplit = { valSplit: config.valSplit, maxGroups: config.valMaxGroups };
  const split =
    'projects' in data
      ? { kind: 'projects' as const, ...(await splitByGroup(data.projects, (p) => p.id, valSplit, config.seed)) }
      : { kind: 'examples' as const, ...(await splitExamples(data.examples, valSplit, config.seed)) };
  const trainCount = split.kind === 'projects' ? split.train.reduce((n, p) => n + p.qa.length, 0) : split.train.length;
  if (config.batchSize > trainCount) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.batchSize ${config.batchSize} is larger than the ${trainCount} training examples; lower it`);
  }
  // Early stopping watches validation: without any, it would never act (and every epoch's "best" would be the last).
  if (options.earlyStopping !== undefined && split.val.length === 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.earlyStopping watches the validation split, and this run has none (options.valSplit ${JSON.stringify(options.valSplit ?? (config.contrastiveTension ? 0 : 'default'))}): give options.valSplit > 0, or leave earlyStopping out`,
    );
  }
  const output = path.resolve(options.output);
  // The kept model replaces `output`: only an empty folder or an earlier (finished or interrupted) training
  // run's output may be there.
  const earlierRun = fs.existsSync(path.join(output, 'training_history.json')) || fs.existsSync(`${output}.checkpoint`);
  if (nonEmptyFolder(output, 'options.output') && !earlierRun) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.output ${output} exists and is not the output of an earlier train(); choose another folder`);
  }
  const checkpointDir = `${output}.checkpoint`;
  const model = options.model ?? 'default';
  checkModelOutside(model, output, checkpointDir);
  const saved = options.resume ? await readCheckpoint(checkpointDir) : undefined;
  // A resumed run starts from the checkpoint's weights; the data it trains on is the checkpoint's too.
  const run = await runIdentity(runSettings(config, model), data as Record<string, readonly unknown[]>);
  if (saved) checkSameRun(checkpointDir, saved.run, run);
  notStarted();
  const loadOptions = { device: options.device ?? 'auto', threads: options.threads } as const;
  // A resumed LoRA run: the base model again, with the checkpoint's adapter (its merged weights are not the base).
  const from = saved && !config.lora ? path.join(checkpointDir, 'model') : model;
  const adapter = saved && config.lora ? path.join(checkpointDir, 'model', ADAPTER_DIR) : undefined;
  const encoder = config.crossEncoder
    ? await CrossEncoder.loadForTraining(from, loadOptions, config.seed, adapter, saved ? undefined : config.crossEncoder.decoderStart)
    : config.sparse || config.mlm
      ? await SparseEncoder.loadForTraining(from, loadOptions, config.seed, config.mlm ? 'masked-lm' : 'sparse-encoder')
      : await Encoder.load(from, { ...loadOptions, ...(adapter && { adapter }) });
  let releaseTrainer: (() => void) | undefined;
  let twin: Encoder | undefined;
  try {
    if (encoder instanceof Encoder && encoder.multiVector && config.contrastiveTension) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.contrastiveTension trains pooled vectors, and ${encoder.modelDir} is a multi-vector model; start from a single-vector one`);
    }
    if (encoder instanceof Encoder && (encoder.multiVector?.tokenPooling?.poolFactor ?? 1) > 1) {
      // sentence-transformers trains through the pooling (its cluster means); coltrast's training step does not pool.
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `${encoder.modelDir} pools its token vectors (a HierarchicalTokenPooling module), which coltrast's training does not do: train the model without that module (remove it from modules.json), then pool at indexing (Index.build's poolFactor)`,
      );
    }
    if (encoder instanceof Encoder && (encoder.multiVector || config.multiVector)) multiVectorLoss(config, options, encoder.modelDir, scoredData);
    if (config.matryoshka && encoder instanceof Encoder) {
      if (encoder.multiVector || config.multiVector) {
        throw new ColtrastError('INVALID_ARGUMENT', `options.loss.matryoshka cuts pooled vectors, and a multi-vector model (${config.multiVector ? 'options.multiVector' : encoder.modelDir}) has none`);
      }
      matryoshkaWidths(config, config.projection?.dimension ?? encoder.fullDimension, encoder.modelDir);
    }
    if (config.adaptiveLayers) {
      if (!(encoder instanceof Encoder)) throw new ColtrastError('INVALID_ARGUMENT', `options.loss.adaptiveLayers trains embedding models, and ${model} is not one`);
      adaptiveLayersFit(config.adaptiveLayers, encoder);
    }
    checkFloat16(encoder.modelType, config.precision, 'options.precision');
    checkPrecision(config.precision, encoder.device);
    let trainSet: TrainExample[];
    let val: TrainExample[];
    if (saved) {
      ({ trainSet, val } = saved);
    } else if (split.kind === 'projects') {
      // Chunks, positives and hard negatives come from the model as it is before training; a cross-encoder's
      // from the embedding model it starts from, or coltrast's default model.
      const miner = encoder instanceof Encoder ? encoder : await Encoder.load(config.sparse || isCrossEncoderFolder(await resolveModelDir(model)) ? 'default' : model, loadOptions);
      try {
        const embedder = encoderEmbedder(miner, options.signal);
        const chunking = { threshold: config.chunking.threshold, maxTokens: config.chunking.maxTokens ?? encoder.maxSeqLength };
        trainSet = (await beforeFirstStep(() => mineExamples(split.train, embedder, chunking, config.mining))).examples;
        val = split.val.length > 0 ? (await beforeFirstStep(() => mineExamples(split.val, embedder, chunking, config.mining))).examples : [];
      } finally {
        if (miner !== encoder) miner.dispose();
      }
    } else {
      trainSet = split.train;
      val = split.val;
      if (mineNegatives) {
        // As for project files: the model as it starts mines (a cross-encoder's or a sparse encoder's, coltrast's default model).
        const miner = encoder instanceof Encoder ? encoder : await Encoder.load(config.sparse || isCrossEncoderFolder(await resolveModelDir(model)) ? 'default' : model, loadOptions);
        try {
          trainSet = await beforeFirstStep(() => addMinedNegatives(trainSet, miner, mineNegatives, options.progressBar ?? false, options.signal));
          val = await beforeFirstStep(() => addMinedNegatives(val, miner, mineNegatives, options.progressBar ?? false, options.signal));
        } finally {
          if (miner !== encoder) miner.dispose();
        }
      }
    }
    const { teacher } = config;
    if (teacher && !saved) {
      const scored = await beforeFirstStep(() => scoreWithTeacher(teacher, [...trainSet, ...val], loadOptions, options.progressBar, options.signal));
      trainSet = scored.slice(0, trainSet.length);
      val = scored.slice(trainSet.length);
    }
    const { embeddingTeacher } = config;
    if (embeddingTeacher && encoder instanceof Encoder) {
      if (encoder.multiVector) throw new ColtrastError('INVALID_ARGUMENT', `options.loss.distillation 'mse' trains pooled vectors, and ${encoder.modelDir} is a multi-vector model; start from a single-vector one`);
      if (!saved) {
        const width = config.projection?.dimension ?? encoder.fullDimension;
        const targeted = await beforeFirstStep(() => embedWithTeacher(embeddingTeacher, [...trainSet, ...val], { width, model: encoder.modelDir }, loadOptions, options.progressBar, options.signal));
        trainSet = targeted.slice(0, trainSet.length);
        val = targeted.slice(trainSet.length);
      }
    }
    checkTripletData(config, [...trainSet, ...val]);
    checkMegaBatchData(config, [...trainSet, ...val]);
    if (!(encoder instanceof CrossEncoder)) distillationLoss(config, [...trainSet, ...val], options.loss?.distillation !== undefined && !config.embeddingTeacher);
    else if ([...trainSet, ...val].some((e) => e.scores)) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `the data's "scores" are a teacher's, for distilling an embedding model; a cross-encoder's training (options.crossEncoder) does not use them: remove them, or train an embedding model`,
      );
    }
    if (config.matryoshka && config.step.contrastiveWeight === 0 && !config.step.distillationWeight && !config.pairs && !config.triplet) {
      throw new ColtrastError('INVALID_ARGUMENT', 'options.loss.matryoshka applies to the pooled losses: it needs loss.contrastiveWeight > 0, distillation, options.loss.pairs or options.loss.triplet');
    }
    if ((config.pairs || config.triplet) && encoder instanceof Encoder && encoder.multiVector) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.loss.${config.pairs ? 'pairs' : 'triplet'} trains pooled vectors, and ${encoder.modelDir} is a multi-vector model; start from a single-vector one`);
    }
    const guideSettings = config.guide;
    const guide = guideSettings && (await beforeFirstStep(() => embedWithGuide(guideSettings.model, [...trainSet, ...val], loadOptions, options.progressBar, options.signal)));
    // What goes with each batch: the teacher's scores when distillation is on, the guide's masks with a guide.
    const extrasOf = (b: Batch) => ({
      ...(config.step.distillationWeight ? { teacher: b.teacher } : {}),
      ...(b.pairLabels && { pairLabels: b.pairLabels }),
      ...(b.firstNegatives && { tripletNegatives: b.firstNegatives }),
      ...(b.targetVectors && { targetVectors: b.targetVectors }),
      ...(b.classLabels && { classLabels: b.classLabels }),
      ...(guide ? { guide: guideMasks(b, guide, config.guide!) } : {}),
    });
    // A resumed run's checkpoint model has the head already.
    if (encoder instanceof Encoder && config.projection && !saved) await encoder.addProjectionHead(config.projection.dimension, config.projection.activation, config.seed);
    // After mining (which the single-vector model does); a resumed run's checkpoint model is multi-vector already.
    if (encoder instanceof Encoder && config.multiVector && !saved) await encoder.makeMultiVector(config.multiVector, config.seed);
    if (encoder instanceof Encoder && config.freezeBase) frozenBaseLoss(config, options, encoder);
    // A model that carries an adapter already (loaded from a folder sentence-transformers saved with one) trains that adapter.
    if (encoder instanceof Encoder && encoder.lora && !config.lora) {
      throw new ColtrastError('INVALID_ARGUMENT', `${encoder.modelDir} carries a LoRA adapter, which is what trains: pass options.lora (true) to train it`);
    }
    if (config.lora && !saved && !encoder.lora && !(encoder instanceof SparseEncoder)) {
      await encoder.addLora(readLoraOptions(config.lora, encoder.modelType, model, encoder instanceof CrossEncoder ? encoder.loraTask : undefined), config.seed);
    }
    // Contrastive Tension's twin: the same model loaded again (a resumed run's from the checkpoint), with the same
    // new head when there is one (the same seed makes it the same).
    if (config.contrastiveTension) {
      twin = await Encoder.load(saved ? path.join(checkpointDir, 'twin') : from, loadOptions);
      if (config.projection && !saved) await twin.addProjectionHead(config.projection.dimension, config.projection.activation, config.seed);
    }
    const optimizer = {
      learningRate: config.learningRate, weightDecay: config.weightDecay, seed: config.seed, precision: config.precision, freezeBase: config.freezeBase,
      gradientCheckpointing: config.gradientCheckpointing,
    };
    // Either model's trainer: train() only hands its prepared batches back to it.
    const trainer: ModelTrainer<{ tokenizeSeconds: number }> =
      encoder instanceof CrossEncoder
        ? encoder.createTrainer(optimizer, config.crossEncoder!, config.crossEncoder!.labeled)
        : encoder instanceof SparseEncoder
          ? config.mlm
            ? encoder.createMlmTrainer(optimizer, config.mlm.probability)
            : encoder.createTrainer(optimizer, config.prompts)
          : await encoder.createTrainer(optimizer, config.prompts, twin);
    releaseTrainer = () => trainer.dispose();
    if (saved) await trainer.loadState(path.join(checkpointDir, 'trainer.safetensors'));
    // The schedule's length. Each epoch's order comes from the seeded generator's state at its start, drawn as the loop
    // below draws it, and where positives repeat the order changes the number of batches (a batch never holds one text
    // twice), so each epoch's are counted. An epoch ends with an update even when its last group of batches is short.
    // Where every query and every positive is a text of its own, every epoch has the same full batches and one short one,
    // whatever the order: counted without forming any (an epoch's count on a million pairs took 0.4 s, and epochs: 1e6
    // never got to its first step).
    const queries = new Set<string>();
    const positives = new Set<string>();
    await inTurns(trainSet, (e) => {
      queries.add(e.query);
      positives.add(e.positive);
    });
    // (Texts of classes are batched by class, two of a class at a time: counted as the loop below counts.)
    const distinct = queries.size === trainSet.length && positives.size === trainSet.length && !config.batchTriplet;
    let totalSteps = distinct ? config.epochs * Math.ceil(Math.ceil(trainSet.length / config.batchSize) / config.accumulation) : 0;
    let largestBatch = distinct ? Math.min(config.batchSize, trainSet.length) : 0;
    for (let epoch = 1, shuffleState = seededRandom(config.seed).state(); epoch <= config.epochs && !distinct; epoch++) {
      const { order, next } = epochOrder(trainSet, shuffleState);
      let batches = 0;
      await inTurns(batchExamples(order, config.batchSize), (chosen) => {
        batches++;
        largestBatch = Math.max(largestBatch, chosen.length);
      });
      totalSteps += Math.ceil(batches / config.accumulation);
      shuffleState = next;
    }
    checkBatchesCompare(config, trainSet, largestBatch, encoder instanceof CrossEncoder);
    if (config.batchTriplet && largestBatch === 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.loss.batchTriplet: the training split's ${trainSet.length} texts form no batch (a batch needs 2 classes of 2 texts each at least, 4 texts or more): give more texts of each class, or hold fewer out (options.valSplit)`);
    }
    if (config.pairs && (config.pairs.kind === 'cosent' || config.pairs.kind === 'angle') && largestBatch < 2) {
      throw new ColtrastError('INVALID_ARGUMENT', `options.loss.pairs '${config.pairs.kind}' ranks the pairs of a batch against each other, and every batch holds one pair: raise options.batchSize`);
    }
    // A triplet loss measures the vectors as the model gives them: normalized where it has a Normalize module.
    // So does adaptive layers' KL divergence.
    const stepOptions = {
      ...config.step,
      maxGradNorm: config.maxGradNorm,
      ...((config.triplet || config.embeddingTeacher || config.batchTriplet || config.adaptiveLayers) && { normalizedVectors: (encoder as Encoder).normalize }),
    };
    const layers = config.adaptiveLayers ? (encoder as Encoder).layers : 0;
    // A sparse encoder's regularizer weights for the step after `step` updates (their warm-up).
    const regularizers = (step: number) => (config.sparse ? sparseRegularizersAt(step, totalSteps, config.sparse) : {});
    // A masked-language-model batch's masks: a function of the seed, the epoch and the batch (a resumed run masks as the
    // run it continues), and, for validation batches, of the seed and the batch alone (each validation the same masks).
    const masks = (epoch: number, batch: number) => (config.mlm ? { maskSeed: (config.seed * 1_000_003 + epoch * 65_537 + batch) >>> 0 } : {});
    // Validation scores every Matryoshka width.
    const allWidths = config.matryoshka && { matryoshkaDimensions: config.matryoshka.dimensions, matryoshkaWeights: config.matryoshka.weights };
    const bar = options.progressBar ? new ProgressBar('train', 'steps') : undefined;
    const valBatches = await arrayInTurns(batchesOf(val, config.batchSize, config.maxNegatives, config.triplet !== undefined));
    // `signal`: the validation before the first step stops at an abort (between its batches, and in the embed() or
    // predict() calls of its metrics), which is train()'s "before its first step". An epoch's validation takes none:
    // an abort then waits for it and the checkpoint after it (the signal's documented behaviour).
    const validate = async (signal?: AbortSignal): Promise<{ valLoss?: number; metrics?: RetrievalMetrics; similarity?: SimilarityMetrics }> => {
      // Held-out texts of classes too few to form a batch (2 classes of 2 texts each) give no validation.
      if (val.length === 0 || valBatches.length === 0) return {};
      let sum = 0;
      for (const [i, b] of valBatches.entries()) {
        if (signal) notStarted();
        sum += (await trainer.evaluate(b.queries, b.documents, { ...stepOptions, ...regularizers(state.step), ...masks(0, i), learningRate: 0, lossScale: 1, apply: false, ...extrasOf(b), ...allWidths })).loss;
      }
      if (signal) notStarted();
      // A masked language model's validation is its loss: its texts are no (query, document) pairs to retrieve.
      if (config.mlm) return { valLoss: sum / valBatches.length };
      // Texts of classes: the batch triplet loss of the held-out texts (their texts are no pairs to retrieve); sentences
      // alone, the held-out MSE.
      if (config.batchTriplet || val[0].single) return { valLoss: sum / valBatches.length };
      // Labeled pairs: how well the cosines (a cross-encoder's scores) follow the labels.
      if (config.crossEncoder?.labeled) return { valLoss: sum / valBatches.length, similarity: await measureScoredPairs(encoder as CrossEncoder, val, signal) };
      if (config.pairs) return { valLoss: sum / valBatches.length, similarity: await measurePairs(encoder as Encoder, val, config.prompts ? 'tasks' : 'none', config.matryoshka?.dimensions, signal) };
      const metrics = await measureRetrieval(encoder, val, config.matryoshka?.dimensions, signal);
      // Triplets: also how many of them the model orders right.
      if (config.triplet) metrics.tripletAccuracy = await measureTriplets(encoder as Encoder, val, { prompts: config.prompts ? 'tasks' : 'none', signal });
      return { valLoss: sum / valBatches.length, metrics };
    };
    const score = (r: { valLoss?: number; metrics?: RetrievalMetrics; similarity?: SimilarityMetrics }) =>
      config.metric === 'loss' ? -(r.valLoss ?? 0) : config.metric === 'spearman' ? (r.similarity?.spearman ?? 0) : (r.metrics?.[config.metric] ?? 0);
    // Everything a resumed run needs to continue exactly where this one is.
    const state: LoopState = saved?.state ?? {
      epoch: 1,
      batch: 0,
      step: 0,
      samples: 0,
      epochLoss: 0,
      epochSeed: 0,
      shuffleState: seededRandom(config.seed).state(),
      bestScore: -Infinity,
      sinceBest: 0,
      result: { history: { steps: [], epochs: [] }, best: { epoch: 0 }, modelDir: output },
    };
    const result = state.result;
    notStarted();
    if (!saved) {
      const before = await beforeFirstStep(() => validate(options.signal));
      result.before = before.metrics;
      if (before.similarity) result.similarity = { before: before.similarity };
    }
    // `position` overrides where the saved state says to continue (at an epoch's end: the next epoch).
    let dataIn = saved?.dataIn;
    // The step of the checkpoint in checkpointDir, and the model's outputs checked before anything is saved: a step
    // can leave weights that overflow (a learning rate far too high) with its own loss finite, and the model of NaNs
    // was saved as the result (or, with validation, no model at all, as its NaN loss was never the best).
    let checkpointStep = saved?.state.step;
    const kept = () => keptNote({ output, epoch: result.best.epoch, checkpointDir, checkpointStep });
    const checkFinite = async () => {
      if (!(await finiteOutputs(encoder, trainSet[0]))) throw outputsDiverged("the model's outputs", state.step, kept());
    };
    const checkpoint = async (position: Partial<LoopState> = {}) => {
      await checkFinite();
      await writeFolderAtomic(checkpointDir, true, async (staging) => {
        await encoder.save(path.join(staging, 'model'));
        if (twin) await twin.save(path.join(staging, 'twin'));
        await trainer.saveState(path.join(staging, 'trainer.safetensors'));
        const data = await saveRunData(staging, { trainSet, val }, dataIn);
        const saved = { ...state, ...position, bestScore: Number.isFinite(state.bestScore) ? state.bestScore : null };
        writeJsonAtomic(path.join(staging, 'state.json'), { version: 2, state: saved, data, run });
      });
      dataIn = checkpointDir;
      checkpointStep = state.step;
    };
    const started = Date.now();
    const startSamples = state.samples;
    const startStep = state.step;
    let stopped = false;
    // options.signal, looked at where the state is one that a checkpoint holds: before each group of batches (an
    // optimizer step) and after an epoch's last step, before its validation. An abort that comes between a group's
    // batches (gradientAccumulation) waits for the group's update: the gradients summed so far are in the model's grad
    // buffers, which no checkpoint holds, so the step under way finishes and the checkpoint is of the state after it.
    const stopIfAborted = async (ahead?: Promise<unknown>) => {
      if (!options.signal?.aborted) return;
      await ahead?.catch(() => undefined); // the next batch's tokenization, not left running into the models' disposal
      // A checkpoint of this step (checkpointEvery's, the epoch end's, or the one a resumed run started from) holds this
      // very state already: said as such, also when this run took no step of its own (it may have written one).
      if (checkpointStep === state.step) throw trainingAborted('train()', checkpointDir, state.step);
      if (state.step === startStep) throw trainingAborted('train()', checkpointDir);
      await checkpoint();
      throw trainingAborted('train()', checkpointDir, state.step);
    };
    const timing = { batches: 0, seconds: 0, nativeSeconds: 0, tokenizeSeconds: 0 };

    for (; state.epoch <= config.epochs && !stopped; state.epoch++, state.batch = 0, state.epochLoss = 0) {
      const epoch = state.epoch;
      // The epoch's order comes from the generator state at its start, so a resumed epoch sees the same batches.
      if (state.batch === 0) state.epochSeed = state.shuffleState;
      const { order, next: nextShuffleState } = epochOrder(trainSet, state.epochSeed);
      const batches = await arrayInTurns(batchesOf(order, config.batchSize, config.maxNegatives, config.triplet !== undefined));
      // Each batch is tokenized while the step before it runs; `ahead` is the next batch's tokenization.
      const prepare = (b: number) => {
        const prepared = trainer.prepare(batches[b].queries, batches[b].documents);
        prepared.catch(() => undefined); // awaited (and its error thrown) by its own step, unless training stops first
        return prepared;
      };
      let ahead = state.batch < batches.length ? prepare(state.batch) : undefined;
      // The losses of the batches since the last update: a step's loss is their mean (transformers' Trainer logs so),
      // not the last batch's. A checkpoint is written only after an update, so a resumed epoch starts a new group.
      const group = { batches: 0, loss: 0, contrastive: 0, lateInteraction: 0, distillation: 0, regularizer: 0 };
      for (; state.batch < batches.length; ) {
        if (state.batch % config.accumulation === 0) await stopIfAborted(ahead);
        const batchStarted = performance.now();
        const b = state.batch;
        const batch = batches[b];
        const prepared = await ahead!;
        timing.tokenizeSeconds += (performance.now() - batchStarted) / 1000;
        const apply = (b + 1) % config.accumulation === 0 || b === batches.length - 1;
        const learningRate = learningRateAt(state.step, totalSteps, config.learningRate, config.warmupRatio, config.schedule);
        const running = trainer.stepPrepared(prepared, {
          ...stepOptions, ...regularizers(state.step), ...masks(epoch, b), learningRate, lossScale: 1 / config.accumulation, apply, ...extrasOf(batch), ...matryoshkaStep(config.matryoshka, config.seed, epoch, b),
          ...adaptiveLayersStep(config.adaptiveLayers, layers, config.seed, epoch, b),
        });
        // The next batch's tokenization starts once this step is on its way: its synchronous part (handing the texts
        // to the tokenizer, about a millisecond for 64 pairs) would otherwise delay the step (BENCHMARKS.md, "Node's
        // share of a training step").
        ahead = b + 1 < batches.length ? prepare(b + 1) : undefined;
        const r = await running.catch((error: unknown) => {
          throw stepDiverged(error, kept());
        });
        state.epochLoss += r.loss;
        group.batches++;
        group.loss += r.loss;
        group.contrastive += r.contrastive;
        group.lateInteraction += r.lateInteraction;
        group.distillation += r.distillation;
        group.regularizer += r.regularizer;
        state.samples += batch.queries.length;
        state.batch++;
        timing.batches++;
        timing.nativeSeconds += r.seconds;
        if (!apply) {
          timing.seconds += (performance.now() - batchStarted) / 1000;
          continue;
        }
        const step = ++state.step;
        const mean = (sum: number) => sum / group.batches;
        const losses = {
          loss: mean(group.loss), contrastive: mean(group.contrastive), lateInteraction: mean(group.lateInteraction), distillation: mean(group.distillation),
          ...((config.sparse || config.step.gorMeanWeight || config.step.gorSecondMomentWeight) && { regularizer: mean(group.regularizer) }),
        };
        Object.assign(group, { batches: 0, loss: 0, contrastive: 0, lateInteraction: 0, distillation: 0, regularizer: 0 });
        result.history.steps.push({ step, epoch, ...losses, learningRate, ...(r.skipped ? { skipped: true } : {}) });
        timing.seconds += (performance.now() - batchStarted) / 1000;
        if (config.checkpointEvery > 0 && step % config.checkpointEvery === 0 && state.batch < batches.length) await checkpoint();
        const reportStarted = performance.now();
        const seconds = (Date.now() - started) / 1000;
        const done = step - startStep;
        options.onProgress?.({
          step,
          totalSteps,
          epoch,
          ...losses,
          learningRate,
          samplesPerSecond: (state.samples - startSamples) / Math.max(seconds, 1e-9),
          etaSeconds: (seconds / done) * (totalSteps - step),
        });
        bar?.update(step, totalSteps);
        timing.seconds += (performance.now() - reportStarted) / 1000;
      }
      // A checkpoint here resumes into this epoch's validation.
      await stopIfAborted();
      state.shuffleState = nextShuffleState;
      await checkFinite();
      const record: EpochRecord = { epoch, trainLoss: state.epochLoss / batches.length, ...(await validate()) };
      result.history.epochs.push(record);
      const current = val.length === 0 ? epoch : score(record);
      if (current > state.bestScore) {
        state.bestScore = current;
        state.sinceBest = 0;
        result.best = { epoch, valLoss: record.valLoss, metrics: record.metrics, ...(record.similarity && { similarity: record.similarity }) };
        await encoder.save(output, { overwrite: true });
      } else if (++state.sinceBest >= config.patience) {
        stopped = true;
      }
      if (epoch < config.epochs && !stopped) await checkpoint({ epoch: epoch + 1, batch: 0, epochLoss: 0 });
    }
    result.after = result.best.metrics;
    // Adaptive layers: the kept model (as saved) with each smaller number of its first layers alone.
    if (config.adaptiveLayers && result.after && val.length > 0) result.after.layers = await depthMetrics(output, layers, val, loadOptions);
    if (result.best.similarity) result.similarity = { ...result.similarity, after: result.best.similarity };
    result.timing = {
      ...timing,
      jsFraction: timing.seconds > 0 ? Math.max(0, timing.seconds - timing.nativeSeconds - timing.tokenizeSeconds) / timing.seconds : 0,
    };
    writeJsonAtomic(path.join(output, 'training_history.json'), { config, ...result });
    writeTextAtomic(path.join(output, 'training_curves.svg'), trainingCurvesSvg(result));
    const data = typeof options.data === 'string' ? options.data : `${options.data.length} in-memory examples`;
    writeTextAtomic(
      path.join(output, 'README.md'),
      modelCard(result, {
        baseModel: model,
        data,
        config: { ...config },
        kind: encoder instanceof CrossEncoder ? 'cross-encoder' : config.mlm ? 'masked-lm' : encoder instanceof SparseEncoder ? 'sparse' : encoder.multiVector ? 'multi-vector' : config.pairs ? 'similarity' : 'embedding',
        loss: config.pairs
          ? `${PAIR_LOSS_NAMES[config.pairs.kind]} on labeled pairs`
          : config.triplet
            ? `TripletLoss on (query, positive, negative) triplets, ${config.triplet.distance} distance, margin ${config.triplet.margin}`
            : config.embeddingTeacher
              ? `MSELoss: the vectors of parallel sentences fit \`${config.embeddingTeacher}\`'s vectors of the sources (embedding distillation)`
              : config.batchTriplet
                ? `${BATCH_TRIPLET_NAMES[config.batchTriplet.kind]} on texts of classes, ${config.batchTriplet.distance} distance${config.batchTriplet.kind === 'hard_soft_margin' ? '' : `, margin ${config.batchTriplet.margin}`}`
                : config.step.megaBatchMargin === true
                  ? `MegaBatchMarginLoss on (anchor, positive) pairs, positive margin ${config.step.positiveMargin}, negative margin ${config.step.negativeMargin}`
                  : undefined,
        guide: config.guide && `\`${config.guide.model}\` (GISTEmbed, margin ${config.guide.margin}, ${config.guide.marginStrategy})`,
        frozenBase: config.freezeBase,
        contrastiveTension: config.contrastiveTension,
        matryoshka: config.matryoshka?.dimensions,
        adaptiveLayers: config.adaptiveLayers && layers,
        lora: encoder.lora,
        distillation: config.step.distillationWeight
          ? `${config.teacher ? `\`${config.teacher}\`` : "the data's teacher scores"} (${config.step.distillation === 'kl' ? 'KL divergence' : 'MarginMSE'}, weight ${config.step.distillationWeight})`
          : undefined,
      }),
    );
    await removeFolder(checkpointDir);
    return result;
  } finally {
    releaseTrainer?.();
    twin?.dispose();
    encoder.dispose();
  }
}
