/**
 * Loads the native addon (a local build, found by node-gyp-build, else the prebuild that lib/binary.ts
 * picks for the libtorch installed here) and turns every way that can fail into a ColtrastError that says
 * what is missing and how to fix it.
 */
import path from 'node:path';
import { ColtrastError } from './errors';
import { defaultEnvironment, LIBTORCH_HELP, nothingFits, planBinary, planBinaryAsync, preload, preloadInWorker, secondLibtorch, type BinaryChoice } from './binary';

export interface NativeEncoderInfo {
  modelType: string;
  hiddenSize: number;
  maxPositions: number;
  /** The layers of the transformer stack (config.json's num_hidden_layers). */
  layers: number;
  numParameters: number;
  /** Bytes of the parameters' storages, each counted once: what the model's float weights hold (a projection quantized to int8 holds none). */
  parameterBytes: number;
  /** Width of the pooled output: the projection head's out_features, or hiddenSize without one. */
  outputSize: number;
  /** The classifier's outputs (a cross-encoder loaded with head 'sequence-classification'); 0 without one. */
  numLabels: number;
  /**
   * A cross-encoder's head modules drawn new (a head on an embedding model) beside the classifier, by the name PEFT
   * matches them with ('pooler', 'head', 'pre_classifier'); empty for every other model.
   */
  newHeadModules: string[];
  /** Loaded with head 'causal-lm': it has a language-model head (lm_head or tied embeddings). */
  causalLm: boolean;
  /** The token embeddings' rows (a decoder's vocab_size); 0 for encoders. */
  vocabSize: number;
  device: string;
  dtype: string;
  /** The projections run in int8 (quantizeInt8). */
  quantizedInt8: boolean;
  /** Loaded with head 'masked-lm' (a sparse encoder): its vectors' width, the vocabulary's size; 0 otherwise. */
  sparseDimension: number;
}

export interface NativeEmbedRequest {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  batchSize: number;
  seqLen: number;
  /** 'scores': a cross-encoder's logits, [batchSize, numLabels]. 'sparse': a sparse encoder's vectors (head 'masked-lm'). */
  output: 'pooled' | 'tokens' | 'scores' | 'sparse';
  /** For 'pooled' and 'tokens'. */
  pooling?: string;
  normalize?: boolean;
  /** For 'sparse': SpladePooling's pooling_strategy and activation_function, and at most this many non-zeros a row (the largest). */
  spladePooling?: 'max' | 'sum';
  spladeActivation?: 'relu' | 'log1p_relu';
  maxActiveDims?: number;
  /** The positions pooled or returned as tokens, when not `attentionMask` (same shape). */
  outputMask?: Int32Array;
  /** Tokens go through the Dense module (a multi-vector model's projection). */
  projectTokens?: boolean;
}

/** A sparse encoder's rows: each row's count of non-zeros, then every row's indices (rising) and values, row after row. */
export interface NativeSparseRows {
  counts: Int32Array;
  indices: Int32Array;
  values: Float32Array;
}

export interface NativeEncoder {
  embed(request: NativeEmbedRequest & { output: 'sparse' }): Promise<NativeSparseRows>;
  embed(request: NativeEmbedRequest): Promise<Float32Array>;
  /** The model's weights to `file`, and the projection head's to `denseFile` when it has one. */
  saveWeights(file: string, dtype: string, denseFile?: string, denseStackFiles?: string[]): Promise<void>;
  /** A new, seeded, randomly initialized projection head (throws if the model has one). */
  addProjection(options: { outFeatures: number; tanh: boolean; seed: number; bias?: boolean }): Promise<void>;
  /**
   * New LoRA adapters on the projections named in `targets` (A seeded, B zero); resolves to their count. A
   * cross-encoder's head modules matched by `modulesToSave` (PEFT's rule: a module whose path ends with one) train with them.
   */
  addLora(options: { targets: string[]; rank: number; scale: number; dropout: number; seed: number; modulesToSave: string[] }): Promise<number>;
  /** The transformer's projections quantized to int8 for CPU inference (float32 on the CPU only); resolves to their count. */
  quantizeInt8(): Promise<number>;
  /** The LoRA adapters of a PEFT adapter_model.safetensors, and the head modules `modulesToSave` matches from it; resolves to the adapters' count. */
  loadLora(file: string, options: { scale: number; dropout: number; modulesToSave: string[] }): Promise<number>;
  /** The model's LoRA adapters (and the head modules that train with them) to `file`, named as PEFT names them. */
  saveLora(file: string, dtype: string): Promise<void>;
  info(): NativeEncoderInfo;
  /** A causal LM's Σ log p of the tokens `outputMask` marks (each predicted from the tokens before it), per row. */
  logLikelihood(batch: PaddedBatch & { outputMask: Int32Array }): Promise<Float32Array>;
  /** A causal LM's continuation of each prompt (without the prompt; greedy, or sampled above temperature 0), ending at a stop id (kept) or maxNewTokens. */
  generate(args: {
    prompts: Int32Array[]; maxNewTokens: number; stopIds?: Int32Array; temperature?: number; topK?: number; topP?: number; seed?: number; batchSize?: number;
    /** Beam search when above 1; earlyStopping 0 (false), 1 (true), 2 ('never'). */
    numBeams?: number; lengthPenalty?: number; earlyStopping?: number;
    /** Called after each step with the prompts (their indices in `prompts`) that got a token and the tokens; may come after the promise settles (`streamedCalls` counts them). */
    onTokens?: (prompts: Int32Array, tokens: Int32Array) => void;
    /** A flag per prompt (in `prompts`' order): set to 1, that prompt stops at its next step. */
    cancel?: Int32Array;
  }): Promise<{ outputs: Int32Array[]; streamedCalls: number }>;
  dispose(): void;
}

export interface NativeRuntimeInfo {
  torchVersion: string;
  /** The BLAS libtorch was built for (its build configuration's BLAS_INFO: "mkl", "open", "generic"). */
  blasBuild?: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  numThreads: number;
  parallelInfo: string;
  /** How the encoders' self-attention runs: libtorch's fused scaled_dot_product_attention (libtorch 2.x) or eager. */
  attention: 'scaled_dot_product_attention' | 'eager';
  /** Whether libtorch may use cuDNN's attention kernels on a GPU (off unless COLTRAST_CUDNN_ATTENTION=1). */
  cudnnAttention: boolean;
  /** Where CPU work runs (native/compute_thread.h). */
  cpuWorkThread: 'own' | 'pool';
  cxx11Abi?: boolean;
  torchSource?: string;
  /** CUDA builds only: CMAKE_CUDA_ARCHITECTURES of the kernels, and each GPU's compute capability (86 = 8.6). */
  cudaArchs?: string;
  cudaCapabilities?: number[];
  /** CUDA builds only: the CUDA runtime's version and the newest the driver supports (13000 = 13.0). */
  cudaRuntimeVersion?: number;
  cudaDriverVersion?: number;
}

/** The CUDA caching allocator's byte counts on one GPU (torch.cuda.memory_allocated and friends). */
export interface CudaMemory {
  allocatedBytes: number;
  peakAllocatedBytes: number;
  reservedBytes: number;
  peakReservedBytes: number;
}

/** coltrast's caching allocator for libtorch's large CPU tensors (native/cpu_allocator.h). */
export interface CpuMemory {
  /** false when COLTRAST_CPU_ALLOCATOR=system turned it off (then every count below stays 0). */
  caching: boolean;
  /** Bytes of large (1 MiB and more) CPU tensors alive now, and the most at once since the last reset. */
  allocatedBytes: number;
  peakAllocatedBytes: number;
  /** Bytes of freed large blocks kept for reuse, and the most the cache may keep (COLTRAST_CPU_CACHE_MB). */
  cachedBytes: number;
  cacheLimitBytes: number;
  /** Large allocations served from the cache, and those that needed new memory. */
  hits: number;
  misses: number;
}

export interface NativeTrainerOptions {
  learningRate?: number;
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  seed?: number;
  /** Precision of the forward pass: 'float32' (default), or autocast to 'bfloat16' / 'float16' (CUDA only); weights stay float32. */
  precision?: 'float32' | 'bfloat16' | 'float16';
  /** Dynamic loss scaling (on by default for float16, with torch.amp.GradScaler's defaults). */
  gradScaler?: { initScale?: number; growthFactor?: number; backoffFactor?: number; growthInterval?: number };
  /** Train the heads only (the projection / Dense module); the transformer's weights stay as they are. */
  freezeBase?: boolean;
  /** Contrastive Tension: a second copy of the model, trained with it, that encodes the queries. */
  twin?: NativeEncoder;
  /** ContextFlow: the causal LM that generates the answers from the retrieved documents, trained with the model unless frozen. */
  generator?: NativeEncoder;
  freezeGenerator?: boolean;
  /** Recompute each layer's activations in backward instead of keeping them (native/models/checkpoint.h). */
  gradientCheckpointing?: boolean;
}

export interface NativeStepOptions {
  contrastiveWeight: number;
  lateInteractionWeight: number;
  temperature: number;
  symmetric: boolean;
  lateInteractionKind: 'cross_entropy' | 'bce';
  learningRate: number;
  maxGradNorm: number;
  /** Multiplies the loss before backward (1 / accumulation steps). */
  lossScale: number;
  /** false: only accumulate gradients. */
  apply: boolean;
  /**
   * > 0: gradient caching. The batch is encoded this many texts at a time, first without autograd, then
   * again with it, backpropagating the whole batch's loss gradient (TrainOptions.miniBatchSize).
   */
  miniBatchSize?: number;
  /** With miniBatchSize: report how far each mini-batch's second pass strayed from its first (miniBatchMaxDiff). */
  verifyMiniBatches?: boolean;
  /** A multi-vector model: token states go through its Dense module (set by the Encoder). */
  projectTokens?: boolean;
  /** A cross-encoder's step (set by the CrossEncoder): its loss over each query's row of pair scores. */
  crossEncoder?: boolean;
  /** 'cross_entropy' (default): listwise, over activation(logit) * scale; 'bce': on the logits, 1 for the positive pair. */
  crossEncoderLoss?: 'cross_entropy' | 'bce';
  scoreActivation?: 'sigmoid' | 'identity';
  /** Multiplies the scores before the cross-entropy (default 10, as sentence-transformers' cross-encoder loss). */
  scale?: number;
  /**
   * A sparse encoder's step (set by the SparseEncoder): the pooled vectors are SpladePooling's (`spladePooling`,
   * `spladeActivation`), scored by dot product / temperature, with the FLOPS regularizers of the queries and of the
   * documents added, each times its weight (sentence-transformers' SpladeLoss).
   */
  sparse?: boolean;
  spladePooling?: 'max' | 'sum';
  spladeActivation?: 'relu' | 'log1p_relu';
  queryRegularizer?: number;
  documentRegularizer?: number;
  /** A masked-language-model step's masks are drawn from this seed (set by train(); lib/masked-lm.ts). */
  maskSeed?: number;
  /** Weight of the distillation loss on the batch's `teacher` scores (0 or absent: off). */
  distillationWeight?: number;
  /** 'margin_mse' (default; MarginMSE) or 'kl' (KL divergence of the score distributions). */
  distillation?: 'margin_mse' | 'kl';
  /** The teacher's scores are divided by it (default 1). */
  teacherTemperature?: number;
  /** The batch's teacher scores, which distillation fits the student's scores to. */
  teacher?: NativeTeacherScores;
  /** A guide's false negatives (GISTEmbed): candidates the cross-entropy losses leave out of each query's softmax. */
  guide?: NativeGuideMasks;
  /**
   * ContextFlow (lib/rag.ts): the joint retrieval-augmented generation loss. `documents` holds each query's
   * `documentsPerQuery` retrieved documents (query-major) and `sequences` the generator's prompt + answer for each,
   * `outputMask` marking the answer's tokens; the trainer needs a generator.
   */
  rag?: boolean;
  /**
   * Matryoshka representation learning: the pooled losses at each of these widths (the pooled vectors' first
   * entries, L2-normalized again), times the matching weight, summed. Absent: the full vectors once.
   */
  matryoshkaDimensions?: number[];
  matryoshkaWeights?: number[];
  /**
   * Adaptive layers (sentence-transformers' AdaptiveLayerLoss; with Matryoshka widths, Matryoshka2dLoss): the pooled
   * losses also on the vectors after fewer layers, the pooled hidden states that enter layer `adaptiveLayers[i]` (0: the
   * embeddings' output, up to layers - 1; transformers' hidden_states[i]) through the projection head, each times
   * `adaptiveLayerWeights[i]`, and the final layer's times `lastLayerWeight` (default 1). With `klTemperature` > 0
   * (default 0.3) each such layer's vectors, as the model gives them, fit the final layer's by the KL divergence of their
   * softmax at that temperature (batchmean), times klTemperature * `klWeight` (default 1). Single-vector models only;
   * no late interaction or mini-batches.
   */
  /**
   * Global orthogonal regularization (sentence-transformers' GlobalOrthogonalRegularizationLoss): for the queries'
   * and the documents' pooled vectors each, over the cosine similarities of every two different rows, the mean squared
   * times `gorMeanWeight` and relu(the second moment - 1 / width) times `gorSecondMomentWeight`; the sides' terms
   * averaged ('mean', default) or summed (`gorAggregation` 'sum') and added to the loss (reported in `regularizer`).
   */
  /**
   * MegaBatchMarginLoss (sentence-transformers'): query i and document i a pair (no other documents), each query's
   * hardest negative the most similar other document; the mean of relu(positiveMargin - cos(q, d)) + relu(cos(q,
   * hardest) - negativeMargin) (defaults 0.8 and 0.3). The step's whole loss; Matryoshka widths apply.
   */
  megaBatchMargin?: boolean;
  positiveMargin?: number;
  negativeMargin?: number;
  gorMeanWeight?: number;
  gorSecondMomentWeight?: number;
  gorAggregation?: 'mean' | 'sum';
  adaptiveLayers?: number[];
  adaptiveLayerWeights?: number[];
  lastLayerWeight?: number;
  klWeight?: number;
  klTemperature?: number;
  /**
   * Labeled pairs: query i and document i are a pair labeled `pairLabels[i]`, and this loss of their pooled vectors is
   * the step's whole loss (the other weights 0): sentence-transformers' CoSENTLoss ('cosent'), AnglELoss ('angle'),
   * CosineSimilarityLoss ('cosine'), ContrastiveLoss ('contrastive') or OnlineContrastiveLoss ('online_contrastive').
   * `pairScale`: CoSENT's and AnglE's (default 20); `pairMargin`: the contrastive losses' (default 0.5).
   */
  pairLoss?: 'none' | PairLossKind;
  pairLabels?: Float32Array;
  pairScale?: number;
  pairMargin?: number;
  /**
   * Triplets: sentence-transformers' TripletLoss, the step's whole loss: query i, its positive (document i) and its
   * negative (document `tripletNegatives[i]`), mean of relu(d(q, p) - d(q, n) + tripletMargin) with d the
   * 'euclidean', 'cosine' or 'manhattan' distance of the pooled vectors (as the model gives them: `normalizedVectors`).
   */
  tripletDistance?: 'none' | TripletDistance;
  tripletMargin?: number;
  tripletNegatives?: Int32Array;
  /**
   * Embedding distillation: sentence-transformers' MSELoss, the step's whole loss: the teacher's vector of each query
   * (B rows of the pooled width), which the student's pooled vectors of the queries and of their documents (document
   * i: query i's translation) fit by mean squared error.
   */
  targetVectors?: Float32Array;
  /** The model L2-normalizes its vectors (a Normalize module): the triplet distances and targetVectors see them so. */
  normalizedVectors?: boolean;
  /**
   * Texts of classes: sentence-transformers' BatchAllTripletLoss ('all'), BatchHardTripletLoss ('hard'),
   * BatchSemiHardTripletLoss ('semi_hard') or BatchHardSoftMarginTripletLoss ('hard_soft_margin'), the step's whole
   * loss: the batch's texts are its queries (no documents), `classLabels[i]` query i's class, the distances
   * 'euclidean' (default) or 'cosine' of the pooled vectors as the model gives them (`normalizedVectors`), margin
   * `batchTripletMargin` (default 5; none for 'hard_soft_margin').
   */
  batchTriplet?: 'none' | BatchTripletKind;
  batchTripletDistance?: 'euclidean' | 'cosine';
  batchTripletMargin?: number;
  classLabels?: Int32Array;
  sequences?: PaddedBatch;
  documentsPerQuery?: number;
}

/** TripletLoss's distances (NativeStepOptions.tripletDistance; TrainOptions' loss.triplet). */
export type TripletDistance = 'euclidean' | 'cosine' | 'manhattan';

/** The batch triplet losses (NativeStepOptions.batchTriplet; TrainOptions' loss.batchTriplet). */
export type BatchTripletKind = 'all' | 'hard' | 'semi_hard' | 'hard_soft_margin';

/** The labeled-pair losses (NativeStepOptions.pairLoss; TrainOptions' loss.pairs). */
export type PairLossKind = 'cosent' | 'angle' | 'cosine' | 'contrastive' | 'online_contrastive';

/**
 * What a guide model (GISTEmbed) masks out of each query's softmax, 1 = left out: `documents` [B × N] (never a
 * query's own positive), and, for extra in-batch negatives, `queries` [B × B] (query i against query j) and
 * `positives` [B × B] (query i's positive against positive j) when given.
 */
export interface NativeGuideMasks {
  documents: Uint8Array;
  queries?: Uint8Array;
  positives?: Uint8Array;
}

/**
 * A teacher's scores for a batch: for each query, `perQuery` candidates (indices into the batch's documents,
 * the query's positive first, -1 where a query has fewer) and the teacher's score of each, query-major.
 */
export interface NativeTeacherScores {
  candidates: Int32Array;
  scores: Float32Array;
  perQuery: number;
}

export interface NativeStepResult {
  loss: number;
  contrastive: number;
  /** A sparse step's FLOPS regularizers, weighted (0 otherwise). */
  regularizer: number;
  lateInteraction: number;
  distillation: number;
  gradNorm: number;
  /** Loss scaling found non-finite gradients: no update was applied and the scale was lowered. */
  skipped: boolean;
  /** The loss scale of the next step (1 without loss scaling). */
  gradScale: number;
  /** Wall time of the native work of this call (forward, backward, update), in seconds. */
  seconds: number;
  /** verifyMiniBatches: the largest absolute difference between a mini-batch's two passes (0 when replayed exactly). */
  miniBatchMaxDiff?: number;
  /** A rag step: the generator's expected negative log-likelihood of the answers under the retriever's distribution. */
  generation?: number;
}

/** A right-padded token batch; `outputMask`: the positions scored or pooled when they are not the attended ones. */
export type PaddedBatch = { inputIds: Int32Array; attentionMask: Int32Array; tokenTypeIds: Int32Array; batchSize: number; seqLen: number; outputMask?: Int32Array };

/** A step's batch: an embedding model's queries and documents, or a cross-encoder's pairs (every query with each of `documentsPerQuery` documents, query-major). */
export type NativeStepArgs =
  | ({ queries: PaddedBatch; documents: PaddedBatch; pooling: string } & NativeStepOptions)
  | ({ queries: PaddedBatch; documents: PaddedBatch; sparse: true } & NativeStepOptions)
  | ({ pairs: PaddedBatch; documentsPerQuery: number } & NativeStepOptions)
  | ({ rag: true; queries: PaddedBatch; documents: PaddedBatch; sequences: PaddedBatch; documentsPerQuery: number; pooling: string } & NativeStepOptions)
  | ({ mlm: true; inputs: PaddedBatch; labels: Int32Array } & NativeStepOptions);

export interface NativeTrainer {
  step(args: NativeStepArgs): Promise<NativeStepResult>;
  evaluate(args: NativeStepArgs): Promise<NativeStepResult>;
  saveState(file: string): Promise<void>;
  loadState(file: string): Promise<void>;
  dispose(): void;
}

/** A `{ dims, data }` tensor as the native ops read it (float32 embeddings, uint8 masks). */
export interface NativeOpTensor {
  dims: number[];
  data: Float32Array | Uint8Array;
}

/** What each native op resolves with; `grads` only when `gradOutput` was given (see lib/ops.ts). */
export interface NativeOpResult {
  value: Float32Array;
  grads?: { q: Float32Array; d?: Float32Array; c?: Float32Array; temperature?: number };
  computeMs: number;
}

/**
 * The fused loss operations (native/ops/ops_wrap.cc). Arguments are one object: the tensors by name
 * (q, qmask, d, dmask or q, c), the op's options and the common ones (device, dtype, reference,
 * gradOutput; temperature and learnTemperature for the losses). lib/ops.ts is the checked wrapper.
 */
export interface NativeOps {
  maxsim(args: Record<string, unknown>): Promise<NativeOpResult>;
  contrastiveLoss(args: Record<string, unknown>): Promise<NativeOpResult>;
  lateInteractionLoss(args: Record<string, unknown>): Promise<NativeOpResult>;
}

export interface NativeBinding {
  ops: NativeOps;
  NativeTrainer: { create(encoder: NativeEncoder, options: NativeTrainerOptions): NativeTrainer };
  NativeEncoder: {
    load(options: {
      weightsPath: string;
      /** Sharded weights: every shard file (weightsPath then names the index, for messages). */
      weightShards?: string[];
      config: string;
      device: string;
      dtype: string;
      denseWeightsPath?: string;
      denseActivation?: string;
      /** The Dense modules after the first, in order. */
      denseStack?: { weightsPath: string; activation: string }[];
      /** The weights' pooler and classifier become a cross-encoder's head with `numLabels` outputs. */
      /** 'masked-lm': the weights' masked-LM head (a sparse encoder's, output 'sparse'). */
      head?: 'sequence-classification' | 'causal-lm' | 'masked-lm';
      numLabels?: number;
      /** head 'causal-lm': the output layer is the token embeddings (config.json's tie_word_embeddings). */
      tieWordEmbeddings?: boolean;
      /** Each projection quantized to int8 (quantizeInt8) as soon as it is read: the float32 model is never whole in memory. */
      quantizeInt8?: boolean;
      /**
       * head 'causal-lm': a reranker's score (output 'scores') on the last real token, its logit of the first token id
       * minus that of the second (sentence-transformers' LogitScore).
       */
      scoreTokens?: number[];
      /** A new head drawn from `seed` (a cross-encoder made from an embedding model). */
      newHead?: boolean;
      seed?: number;
    }): Promise<NativeEncoder>;
  };
  supportedModelTypes: string[];
  setNumThreads(n: number): void;
  runtimeInfo(): NativeRuntimeInfo;
  cudaMemory(index: number, options?: { resetPeak?: boolean; emptyCache?: boolean }): CudaMemory;
  cpuMemory(options?: { resetPeak?: boolean; emptyCache?: boolean }): CpuMemory;
}

/** The package root: lib/ and dist/ both sit one level below it. */
export const packageRoot = path.resolve(__dirname, '..');

/** Rewrites a failed load of the addon into an actionable error. Exported for tests. */
export function explainLoadError(error: unknown, file?: string): ColtrastError {
  if (error instanceof ColtrastError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const which = file ? ` (${file})` : '';
  const missingLib = /(lib(?:torch|c10|torch_cpu|torch_cuda|c10_cuda|cudart|gomp|openblas|blas)[^\s:]*): cannot open shared object/.exec(
    message,
  );
  if (missingLib) {
    return new ColtrastError(
      'NATIVE_LOAD',
      `coltrast's native addon${which} could not load ${missingLib[1]}: the libtorch it was built against is not installed ` +
        `or has moved.\n${LIBTORCH_HELP}\nor rebuild the addon against the libtorch you have: npx coltrast build\n(original error: ${message})`,
      { cause: error },
    );
  }
  if (/undefined symbol/.test(message)) {
    return new ColtrastError(
      'NATIVE_LOAD',
      `coltrast's native addon${which} does not match the libtorch found at run time (a different libtorch version or C++ ABI ` +
        'than it was built with). Rebuild it against the libtorch you have: npx coltrast build\n' +
        `(original error: ${message})`,
      { cause: error },
    );
  }
  return new ColtrastError('NATIVE_LOAD', `coltrast's native addon${which} failed to load: ${message}`, { cause: error });
}

let binding: NativeBinding | undefined;
let chosen: BinaryChoice | undefined;

/** The local build's path (build/Release/coltrast.node, as node-gyp-build finds it), or null. */
function localBuild(root: string): string | null {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ngb = require('node-gyp-build') as { path(dir: string): string };
  try {
    const file = ngb.path(root);
    return file.startsWith(path.join(root, 'build') + path.sep) ? file : null;
  } catch {
    return null; // node-gyp-build throws when it finds nothing
  }
}

let loading: Promise<NativeBinding> | undefined;

/**
 * native(), with the slow part of a first load on a worker thread (preloadInWorker), so that the event loop is not
 * held for it: every asynchronous entry point awaits this before its first native(). What goes wrong on the worker
 * is left to native(), which loads again here and explains the failure.
 */
export function loadAddon(): Promise<NativeBinding> {
  if (binding) return Promise.resolve(binding);
  loading ??= (async () => {
    try {
      const choice = (await planBinaryAsync(defaultEnvironment(packageRoot), localBuild(packageRoot))).choice;
      // native() may have loaded the addon meanwhile (a synchronous caller): a second libtorch must never be loaded.
      if (choice && !binding && !secondLibtorch(choice)) await preloadInWorker(choice.preload, choice.file);
    } catch {
      // native() plans again and reports it
    }
    return native();
  })().finally(() => {
    loading = undefined;
  });
  return loading;
}

/** Loads the addon lib/binary.ts chooses (a local build, else the prebuild that fits an installed libtorch). */
export function native(): NativeBinding {
  if (binding) return binding;
  const e = defaultEnvironment(packageRoot);
  let plan = planBinary(e, localBuild(packageRoot));
  if (!plan.choice) throw nothingFits(plan, e);
  let loadError: ColtrastError | undefined;
  for (;;) {
    try {
      const second = secondLibtorch(plan.choice!);
      if (second) throw second;
      preload(plan.choice!.preload);
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      binding = require(plan.choice!.file) as NativeBinding;
      break;
    } catch (error) {
      loadError ??= explainLoadError(error, plan.choice!.file);
      // A local build that no longer loads (its libtorch moved or changed): a fitting prebuild may still.
      if (plan.choice!.kind !== 'source' || e.env.COLTRAST_BINARY === 'source') throw loadError;
      plan = planBinary(e, null);
      if (!plan.choice) throw loadError;
    }
  }
  const { preload: _libs, ...choice } = plan.choice!;
  chosen = loadError ? { ...choice, reason: `${choice.reason}; the local build did not load (${loadError.message.split('\n')[0]})` } : choice;
  return binding!;
}

let kernels: Pick<NativeRuntimeInfo, 'cudaArchs' | 'cudaCapabilities'> | undefined;

/** The GPU architectures the loaded kernels were built for and each GPU's compute capability; fixed per process, read once. */
export function cudaKernelInfo(): Pick<NativeRuntimeInfo, 'cudaArchs' | 'cudaCapabilities'> {
  if (!kernels) {
    const { cudaArchs, cudaCapabilities } = native().runtimeInfo();
    kernels = { cudaArchs, cudaCapabilities };
  }
  return kernels;
}

/** Which addon native() loaded and why (undefined before it has). */
export function binaryChoice(): BinaryChoice | undefined {
  return chosen;
}

/** Converts an error from native code (a plain Error with `code`) into a ColtrastError. */
export function fromNative(error: unknown): ColtrastError {
  if (error instanceof ColtrastError) return error;
  const e = error as { code?: unknown; message?: unknown };
  const known = ['INVALID_ARGUMENT', 'MODEL_FILES', 'UNSUPPORTED_MODEL', 'NATIVE', 'DEVICE', 'DISPOSED', 'OUT_OF_MEMORY'];
  const code = typeof e?.code === 'string' && known.includes(e.code) ? e.code : 'NATIVE';
  return new ColtrastError(code as ColtrastError['code'], String(e?.message ?? error), { cause: error });
}
