/**
 * `Encoder`: a sentence-embedding model loaded from a Hugging Face / sentence-transformers directory
 * (or a hub id), run by the native libtorch code off the JS thread.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { ADAPTER_DIR, adapterBaseModel, addAdapters, isAdapterOnlyFolder, loadAdapter, saveAdapter, type AdapterBase, type LoraConfig } from './lora';
import { configJson, denseStackDir, lastDense, positionLimit, taskPrompt, readModelDirectory, readSpecialToken, writeModelFiles, DENSE_DIR, POOLING_MODES, type DenseHead, type ModelDirectory, type MultiVectorConfig, type PoolingMode } from './model-dir';
import { configWithLayers } from './model-layers';
import { poolAll } from './token-pooling';
import { SIMILARITY_FUNCTIONS, maxsimScores, pairwiseSimilarity, similarityMatrix, type SimilarityFunction } from './similarity';
import { DTYPES, ModelHandle, applyQuantize, bindTrainer, checkQuantize, loadNative, quantizeOption, resolveLoad, tokenizeAhead, tokenizeInBatches, type ModelTrainer, type DType, type LoadOptions, type Quantize } from './native-model';
import { fromNative, type NativeEncoder, type NativeTrainerOptions, type PaddedBatch } from './native';
import { TextTokenizer, padBatch, type ModelInput, type TokenizedText } from './tokenizer';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger, signalOption } from './validate';

export { setThreads, type Device, type DType, type LoadOptions, type Quantize } from './native-model';


/** Encoder.load's options: LoadOptions, the width pooled vectors are cut to, and a LoRA adapter. */
export interface EncoderLoadOptions extends LoadOptions {
  /**
   * Cut every pooled vector to its first `truncateDim` entries (L2-normalized again when the model normalizes),
   * as sentence-transformers' `truncate_dim`: for a model trained with Matryoshka widths (train's
   * `loss.matryoshka`), smaller vectors at a small loss of quality. `dimension` is then this width, and search
   * indexes built with this Encoder hold vectors of it. Default: the full width.
   */
  truncateDim?: number;
  /**
   * Run only the model's first `layers` layers (1 to its count), as sentence-transformers users slice
   * `model[0].auto_model.encoder.layer` in memory: for a model trained with adaptive layers (train's
   * `loss.adaptiveLayers`), a faster model at a small loss of quality. The later layers' weights are not loaded, and
   * `save()` writes a model of that many layers (as truncateLayers does). Default: all of them.
   */
  layers?: number;
  /**
   * A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) made on this model: its adapters are
   * added to the model's projections (as PEFT's `PeftModel.from_pretrained` or sentence-transformers'
   * `load_adapter` do), and `save()` writes the merged weights with the adapter beside them.
   */
  adapter?: string;
  /**
   * false: load `adapter` even when it records another base model than this one (coltrast records the base an
   * adapter was trained on in its adapter_model.safetensors, and refuses it on a base whose adapted weights differ).
   * Default true; an adapter without the record (PEFT's own) is not checked.
   */
  checkAdapterBase?: boolean;
  /**
   * 'int8': dynamic int8 quantization for CPU inference, as PyTorch's `quantize_dynamic(model, {nn.Linear:
   * per_channel_dynamic_qconfig}, dtype=torch.qint8)` makes it: each of the transformer's projections holds its
   * weight as int8 (per output row, symmetric) and quantizes each input to 8 bits as it comes, so its matrix products
   * run in integers (libtorch's quantized engine: oneDNN or FBGEMM, which use the CPU's VNNI instructions where it has
   * them). Embedding gets faster and its vectors change slightly (BENCHMARKS.md, "int8 embedding on the CPU", has both);
   * the heads (Dense, Normalize) stay float32. Needs `device: 'cpu'` (or 'auto' on a machine without a GPU) and
   * dtype 'float32'. The projections' float32 weights are given back once they are packed in int8, so the model takes
   * less memory and is for inference only: training such an Encoder and `save()` are refused (load the model without
   * quantize for them). Default: none.
   */
  quantize?: Quantize;
}

/** A dense float32 matrix, row-major. */
export interface Matrix {
  dims: [number, number];
  data: Float32Array;
}

/** @internal Scales `v` in place to unit L2 norm, as torch.nn.functional.normalize (a zero vector stays zero); returns it. */
export function normalizeRow(v: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] * v[i];
  const scale = 1 / Math.max(Math.sqrt(sum), 1e-12);
  for (let i = 0; i < v.length; i++) v[i] *= scale;
  return v;
}

/** @internal The rows of a [n, dim] matrix, as views of its data. */
export function matrixRows(m: Matrix): Float32Array[] {
  const [n, d] = m.dims;
  return Array.from({ length: n }, (_, i) => m.data.subarray(i * d, (i + 1) * d));
}

export interface EmbedOptions {
  /** Texts per forward pass (default 32). Texts are sorted by length first, so padding is small. */
  batchSize?: number;
  /** 'pooled' (default): one vector per text. 'tokens': one [tokens, dim] matrix per text. */
  output?: 'pooled' | 'tokens';
  /** L2-normalize each vector (default: as the model's modules.json says for pooled, false for tokens). */
  normalize?: boolean;
  /**
   * Cut pooled vectors to their first `truncateDim` entries (sentence-transformers' `truncate_dim`; default the
   * Encoder's `truncateDim`, else the full width). With `normalize` the cut vector is normalized, as
   * sentence-transformers' encode(truncate_dim, normalize_embeddings=True).
   */
  truncateDim?: number;
  /** Override the model's pooling mode. */
  pooling?: PoolingMode;
  /**
   * What the texts are, as sentence-transformers' encode_query / encode_document take them: the model's
   * 'query' prompt (or 'document', 'passage', 'corpus') goes before each text, and a multi-vector model
   * applies its query or document length, query expansion and skiplist. Default: neither.
   */
  task?: 'query' | 'document';
  /** One of the model's named prompts (`encoder.prompts`) to put before each text, whatever the task. */
  promptName?: string;
  /** A text to put before each text, instead of a named prompt. */
  prompt?: string;
  /** Called after each batch with texts done so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the call when aborted: looked at before each batch is sent to the model (the one running and the one queued behind it finish); it rejects with ABORTED. */
  signal?: AbortSignal;
}

export interface SaveOptions {
  /** Replace `dir` if it exists (default false: an existing non-empty folder is an error). */
  overwrite?: boolean;
  /** dtype of the saved weights (default float32). */
  dtype?: DType;
}

const EMBED_KEYS = ['batchSize', 'output', 'normalize', 'truncateDim', 'pooling', 'task', 'promptName', 'prompt', 'onProgress', 'signal'] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;
const TASKS = ['query', 'document'] as const;

/** How train({ multiVector }) makes a model multi-vector (see TrainOptions.multiVector). */
export interface MultiVectorSettings {
  dimension: number;
  queryLength: number;
  documentLength?: number;
  queryExpansion: 'fixed' | 'min' | 'none';
  attendExpansion: boolean;
  skiplist: string[];
  queryPrompt?: string;
  documentPrompt?: string;
}

/** A multi-vector model's tokenization: its expansion token and skiplist, as token ids. */
interface MultiVectorTokens {
  config: MultiVectorConfig;
  expansionId: number;
  skiplist: Set<number>;
  keepOnly?: Set<number>;
}

/** @internal A batch tokenized and padded for the trainer, and how long that took (seconds). */
export interface PreparedBatch {
  queries: PaddedBatch;
  documents: PaddedBatch;
  tokenizeSeconds: number;
}

/**
 * @internal A text tokenized ahead as embed() would feed it to the model (Encoder.prepare): the server tokenizes each
 * request as it arrives, before its batch queue, whose model calls then only pad and run (embedCounting). Opaque but
 * for `tokens`.
 */
export interface PreparedText {
  /** The tokens the model reads for the text (the server's usage counts). */
  readonly tokens: number;
  readonly input: ModelInput;
  /** The text's length: embed() orders the texts it tokenizes ahead by it, a prepared text's batches the same. */
  readonly characters: number;
  /** The Encoder and the settings (task, prompt, pooled or not) it was prepared for: embedding it under others is refused. */
  readonly encoder: Encoder;
  readonly setting: string;
}

/** What prepareTexts' result depends on, as PreparedText.setting. */
const preparedSetting = (task: string | undefined, prompt: string | undefined, forPooling: boolean) => JSON.stringify([task ?? null, prompt ?? null, forPooling]);

/** @internal See Encoder.createTrainer. */
export type EncoderTrainer = ModelTrainer<PreparedBatch>;

function checkTexts(texts: unknown): asserts texts is string[] {
  if (!Array.isArray(texts)) throw invalid('texts', 'an array of strings', texts);
  texts.forEach((t, i) => {
    if (typeof t !== 'string') throw invalid(`texts[${i}]`, 'a string', t);
  });
}

export class Encoder {
  private readonly model: ModelHandle;

  /** The projection head after pooling (sentence-transformers' Dense module), if the model has one. */
  private dense: DenseHead | undefined;
  private loraConfig: LoraConfig | undefined;
  /** What was done to the model since it was read from its folder (memoryChanges), in words, and how many times. */
  private readonly changes: string[] = [];
  private changeCount = 0;
  /** Tells this Encoder's changed states from another's changed the same ways. */
  private readonly instanceId = randomUUID();

  private constructor(
    handle: NativeEncoder,
    private files: ModelDirectory,
    private readonly tokenizer: TextTokenizer,
    /** The transformer's hidden size. */
    private readonly hiddenSize: number,
    /** The device the model runs on, e.g. 'cpu' or 'cuda:0'. */
    readonly device: string,
    readonly dtype: DType,
    private multi: MultiVectorTokens | undefined,
    /** The width pooled vectors are cut to (EncoderLoadOptions.truncateDim), if any. */
    readonly truncateDim: number | undefined,
  ) {
    this.model = new ModelHandle(handle, 'Encoder');
    this.dense = files.dense;
  }

  /** 'int8' when loaded with EncoderLoadOptions.quantize (the projections run in int8 on the CPU); undefined otherwise. */
  get quantize(): Quantize | undefined {
    return this.model.quantized;
  }

  /** Width of pooled vectors: `truncateDim` when given, else the projection head's output, or the hidden size
   * without a head. A multi-vector model has no pooled vector; for it this is the width of its token vectors. */
  get dimension(): number {
    return this.truncateDim ?? this.fullDimension;
  }
  /** Width of the pooled vectors the model computes, before any truncateDim. */
  get fullDimension(): number {
    return lastDense({ dense: this.dense, denseStack: this.files.denseStack })?.outFeatures ?? this.hiddenSize;
  }
  /** The layers of the model's transformer stack (config.json's num_hidden_layers). */
  get layers(): number {
    return this.model.current().info().layers;
  }
  /** Width of token vectors: the hidden size, or a multi-vector model's projected width. */
  get tokenDimension(): number {
    return this.multi && this.dense ? this.dense.outFeatures : this.hiddenSize;
  }
  /** The model's named prompts (sentence-transformers' config_sentence_transformers.json), e.g. { query: 'query: ' }. */
  get prompts(): Readonly<Record<string, string>> {
    return this.files.prompts;
  }
  /** The prompt used when embed() is given no task or prompt, if the model names one. */
  get defaultPromptName(): string | null {
    return this.files.defaultPromptName;
  }
  /** @internal The model's tokenizer, for the server's /tokenize and /decode (lib/serve.ts); DISPOSED after dispose(). */
  get textTokenizer(): TextTokenizer {
    this.model.current();
    return this.tokenizer;
  }
  /**
   * Set for a multi-vector (late-interaction, ColBERT-style) model: one vector per token, scored with MaxSim.
   * Such a model embeds with `{ output: 'tokens', task }` only.
   */
  get multiVector(): Readonly<MultiVectorConfig> | undefined {
    return this.multi?.config;
  }
  /** The projection head's shape and activation, if the model has one (the first Dense module's, when several follow one another). */
  get projection(): { inFeatures: number; outFeatures: number; activation: 'identity' | 'tanh' } | undefined {
    return this.dense && { inFeatures: this.dense.inFeatures, outFeatures: this.dense.outFeatures, activation: this.dense.activation };
  }

  /**
   * @internal How the model differs from its folder's, when it was changed in memory (a LoRA adapter or a head added,
   * made multi-vector, trained) and not loaded again: what was done, in words, and an id of the state it is in now
   * (another after each change and training step, and another for each Encoder). Undefined for a model as loaded:
   * its folder (modelDir) makes the same vectors. An index built with a changed model records it (lib/search-index.ts).
   */
  get memoryChanges(): { changes: string[]; state: string } | undefined {
    return this.changes.length === 0 ? undefined : { changes: [...this.changes], state: `${this.instanceId}/${this.changeCount}` };
  }

  private changed(what: string): void {
    if (!this.changes.includes(what)) this.changes.push(what);
    this.changeCount++;
  }

  /** config.json's model_type ("bert", "qwen3", ...). */
  get modelType(): string {
    return String(this.files.config.model_type);
  }
  /** The folder the model was read from. */
  get modelDir(): string {
    return this.files.dir;
  }
  get pooling(): PoolingMode {
    return this.files.pooling;
  }
  get normalize(): boolean {
    return this.files.normalize;
  }
  /** How the model compares vectors: config_sentence_transformers.json's similarity_fn_name, else 'cosine' (its default). */
  get similarityFunction(): string {
    return this.files.similarity ?? 'cosine';
  }

  /**
   * Every embedding of `a` against every one of `b`, as sentence-transformers' `model.similarity()`: [a's rows, b's rows]
   * scores under the model's similarityFunction (cosine, dot, or the negated euclidean or manhattan distance), higher
   * is more similar. A multi-vector model's token vectors (`embed()`'s arrays) are scored by MaxSim ('meanmaxsim':
   * divided by the query's token count), `a` the queries.
   */
  async similarity(a: Matrix | Matrix[], b: Matrix | Matrix[]): Promise<Matrix> {
    if (this.multiVector) return maxsimScores(a, b, this.multiVector.similarity, this.tokenDimension, false);
    return similarityMatrix(a as Matrix, b as Matrix, this.singleVectorSimilarity());
  }

  /** Row i of `a` against row i of `b` (sentence-transformers' `similarity_pairwise()`): one score a row. */
  async similarityPairwise(a: Matrix | Matrix[], b: Matrix | Matrix[]): Promise<Float32Array> {
    if (this.multiVector) return (await maxsimScores(a, b, this.multiVector.similarity, this.tokenDimension, true)).data;
    return pairwiseSimilarity(a as Matrix, b as Matrix, this.singleVectorSimilarity());
  }

  private singleVectorSimilarity(): SimilarityFunction {
    const fn = this.similarityFunction;
    if (!(SIMILARITY_FUNCTIONS as readonly string[]).includes(fn)) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${this.modelDir}: config_sentence_transformers.json's similarity_fn_name ${JSON.stringify(fn)} is none of ${SIMILARITY_FUNCTIONS.join(', ')}`);
    }
    return fn as SimilarityFunction;
  }
  /** Longer texts are truncated to this many tokens (special tokens included). */
  get maxSeqLength(): number {
    return this.files.maxSeqLength;
  }
  /** Where pooling/normalization came from: modules.json or the plain Hugging Face default. */
  get configSource(): ModelDirectory['source'] {
    return this.files.source;
  }

  /**
   * Loads a model folder (Hugging Face or sentence-transformers layout, safetensors weights) or a
   * Hugging Face id (downloaded once into the hub cache).
   */
  static async load(model: string, options?: EncoderLoadOptions): Promise<Encoder> {
    const { truncateDim: cut, layers, adapter, checkAdapterBase, quantize, ...loadOptions } = options ?? {};
    const keepLayers = layers === undefined ? undefined : positiveInteger('options.layers', layers);
    if (adapter !== undefined && (typeof adapter !== 'string' || adapter.length === 0)) throw invalid('options.adapter', 'a PEFT adapter folder', adapter);
    const checkBase = booleanValue('options.checkAdapterBase', checkAdapterBase ?? true);
    const truncateDim = cut === undefined ? undefined : positiveInteger('options.truncateDim', cut);
    const int8 = quantizeOption(quantize);
    const { dir, device, dtype } = await resolveLoad(model, loadOptions);
    checkQuantize(int8, device, dtype);
    // A sentence-transformers folder saved with a LoRA adapter (add_adapter, then save): the adapter, the tokenizer and
    // the modules, and no config.json or weights, which are its base model's (adapter_config.json names it).
    // With `adapter` too, that one replaces the folder's (a resumed training run's).
    let adapterDir = adapter === undefined ? undefined : path.resolve(adapter);
    let base: string | undefined;
    if (isAdapterOnlyFolder(dir)) {
      base = (await resolveLoad(adapterBaseModel(dir), loadOptions)).dir;
      adapterDir ??= dir;
    }
    let files = readModelDirectory(dir, 'embedding', base);
    let cutTo: number | undefined;
    if (keepLayers !== undefined) {
      const { config, from } = configWithLayers(files.config, keepLayers, { option: 'options.layers', model, file: path.join(files.transformerDir, 'config.json') });
      files = { ...files, config, configText: configJson(files.configText, config) };
      if (keepLayers < from) cutTo = keepLayers;
    }
    let tokenizer = await TextTokenizer.load(files.tokenizerPath, files.maxSeqLength, files.lowercase);
    const prefixes = await prefixTokensToRegister(tokenizer, files.multiVector?.prefixTokens ?? []);
    if (prefixes.length > 0) tokenizer = await TextTokenizer.load(files.tokenizerPath, files.maxSeqLength, files.lowercase, prefixes);
    const multi = files.multiVector && (await multiVectorTokens(files, tokenizer));
    const handle = await loadNative(files, device, dtype, {
      // Quantized as it loads unless an adapter is to be merged in first (applyQuantize below, after it).
      ...(int8 && adapterDir === undefined && { quantizeInt8: true }),
      denseWeightsPath: files.dense?.weightsPath,
      denseActivation: files.dense?.activation,
      ...(files.denseStack && { denseStack: files.denseStack.map((d) => ({ weightsPath: d.weightsPath!, activation: d.activation })) }),
    });
    const info = handle.info();
    if (files.dense && (files.dense.inFeatures !== info.hiddenSize || lastDense(files)!.outFeatures !== info.outputSize)) {
      handle.dispose();
      throw new ColtrastError(
        'MODEL_FILES',
        `the Dense module of ${dir} says in_features ${files.dense.inFeatures} → out_features ${files.dense.outFeatures}, but its ` +
          `weights map ${info.hiddenSize} → ${info.outputSize} (the model's hidden size is ${info.hiddenSize})`,
      );
    }
    const encoder = new Encoder(handle, files, tokenizer, info.hiddenSize, info.device, dtype, multi, truncateDim);
    encoder.layersCut = cutTo;
    try {
      if (truncateDim !== undefined) encoder.checkTruncateDim('options.truncateDim', truncateDim);
      if (adapterDir !== undefined) {
        encoder.loraConfig = await loadAdapter(encoder.model, adapterDir, 'embedding', checkBase ? encoder.baseWeights() : undefined);
        encoder.adapterFolder = adapterDir;
        encoder.adapterBase = encoder.baseWeights();
      }
      // After the adapter, which the packed int8 weights then hold merged in. A failure is disposed of below.
      await applyQuantize(encoder.model, int8);
    } catch (error) {
      encoder.dispose();
      throw error;
    }
    return encoder;
  }

  /**
   * @internal Optimizer state bound to this model, for lib/train.ts: each `step` tokenizes the queries and
   * documents, then runs forward, loss, backward and the AdamW update natively; the weights this Encoder
   * embeds and saves change in place.
   */
  async createTrainer(options: NativeTrainerOptions, prompts = true, twin?: Encoder): Promise<EncoderTrainer> {
    // Contrastive Tension: a second copy of this model, trained with it, encodes the queries.
    if (twin) {
      if (twin === this) throw new ColtrastError('INVALID_ARGUMENT', 'the twin must be a second copy of the model, not the model itself');
      options = { ...options, twin: twin.model.current() };
    }
    // The model trains on what it embeds: queries and documents as embed({ task }) prepares them (the model's
    // prompts, and a multi-vector model's markers, lengths, query expansion and skiplist). `prompts: false`
    // leaves a single-vector model's prompts out, as sentence-transformers' trainer does unless given them.
    const side = async (texts: string[], task: 'query' | 'document') => {
      const prompt = prompts || this.multi ? this.resolvePrompt(undefined, undefined, task) : undefined;
      return padBatch(await this.prepareTexts(texts, task, prompt, true));
    };
    const prepare = async (queries: string[], documents: string[]): Promise<PreparedBatch> => {
      const started = performance.now();
      const [q, d] = await Promise.all([side(queries, 'query'), side(documents, 'document')]);
      return { queries: q, documents: d, tokenizeSeconds: (performance.now() - started) / 1000 };
    };
    const trainer = bindTrainer(this.model, options, prepare, (batch, stepOptions) => ({
      queries: batch.queries,
      documents: batch.documents,
      pooling: this.files.pooling,
      ...stepOptions,
      projectTokens: this.multi !== undefined,
    }));
    // Each step changes the weights in place (the twin's too): they are the folder's no longer. Counted when a step
    // fails too, which may have changed some of them.
    const trained = <A extends unknown[], R>(step: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
      try {
        return await step(...args);
      } finally {
        this.changed('trained');
        twin?.changed('trained');
      }
    };
    return { ...trainer, step: trained(trainer.step), stepPrepared: trained(trainer.stepPrepared) };
  }

  /**
   * @internal Gives a model without one a new projection head (a Dense module, PyTorch's nn.Linear
   * initialization from `seed`), for train({ projection }); it is trained with the model and saved with it.
   */
  async addProjectionHead(outFeatures: number, activation: 'identity' | 'tanh', seed: number): Promise<void> {
    this.model.current();
    this.checkNotMultiVector('a projection head');
    if (this.dense) throw new ColtrastError('INVALID_ARGUMENT', `${this.files.dir} already has a projection head (a Dense module); drop the projection option`);
    await this.addDense({ outFeatures, tanh: activation === 'tanh', seed });
    this.dense = { inFeatures: this.tokenDimension, outFeatures, bias: true, activation };
    this.changed('a projection head added');
  }

  /** The model's LoRA adapter (train's `lora`, or `Encoder.load`'s `adapter`), if it has one. */
  get lora(): LoraConfig | undefined {
    return this.loraConfig;
  }

  private adapterFolder: string | undefined;
  private layersCut: number | undefined;

  /** @internal The layers Encoder.load's `layers` kept, where fewer than the folder's (an index's model fingerprint covers it). */
  get cutToLayers(): number | undefined {
    return this.layersCut;
  }

  /** @internal The folder of the adapter `Encoder.load` added (an index's model fingerprint covers it). */
  get adapterDir(): string | undefined {
    return this.adapterFolder;
  }

  /**
   * The base weights the adapter was added to, which save() records in it (lib/lora.ts' recordBase): the folder's,
   * unless the model was trained before the adapter was added (its base is then in memory only, and is not recorded).
   */
  private adapterBase: AdapterBase | undefined;

  /** The safetensors files the model's weights were read from, and their folder. */
  private baseWeights(): AdapterBase {
    return { dir: path.dirname(this.files.weightsPath), files: this.files.weightShards ?? [this.files.weightsPath] };
  }

  /** @internal New LoRA adapters (train({ lora })): from then on only they train, and save() writes them beside the merged weights. */
  async addLora(config: LoraConfig, seed: number): Promise<void> {
    if (this.loraConfig) throw new ColtrastError('INVALID_ARGUMENT', `${this.files.dir} already has a LoRA adapter (train() trains it)`);
    await addAdapters(this.model, config, seed);
    this.loraConfig = config;
    this.adapterBase = this.changes.includes('trained') ? undefined : this.baseWeights();
    this.changed('a LoRA adapter added');
  }

  /** A new, seeded Dense module in the native model (addProjectionHead, makeMultiVector). */
  private addDense(options: Parameters<NativeEncoder['addProjection']>[0]): Promise<void> {
    return this.model.use(async (handle) => {
      try {
        await handle.addProjection(options);
      } catch (error) {
        throw fromNative(error);
      }
    });
  }

  /** Throws INVALID_ARGUMENT unless `width` is a width this model's pooled vectors can be cut to. */
  private checkTruncateDim(name: string, width: number): void {
    this.checkNotMultiVector(`${name} (it cuts pooled vectors)`);
    if (width > this.fullDimension) throw invalid(name, `at most the model's width, ${this.fullDimension}`, width);
  }

  /** @internal Throws UNSUPPORTED_MODEL for a multi-vector model, which `what` needs a pooled vector for. */
  checkNotMultiVector(what: string): void {
    if (this.multi) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${this.files.dir} is a multi-vector (ColBERT-style) model, which has no pooled vector: ${what} is not supported for it`);
    }
  }

  /**
   * @internal Makes this model multi-vector, for train({ multiVector }): a new token projection (a Dense
   * module without bias, PyTorch's nn.Linear initialization from `seed`, as PyLate starts a ColBERT model)
   * and the query/document settings given. It trains and saves as a sentence-transformers MultiVectorEncoder.
   */
  async makeMultiVector(settings: MultiVectorSettings, seed: number): Promise<void> {
    this.model.current();
    if (this.multi) throw new ColtrastError('INVALID_ARGUMENT', `${this.files.dir} is a multi-vector model already; drop the multiVector option`);
    if (this.dense) throw new ColtrastError('INVALID_ARGUMENT', `${this.files.dir} has a Dense head on its pooled vector; start a multi-vector model from one without`);
    await this.addDense({ outFeatures: settings.dimension, tanh: false, seed, bias: false });
    this.dense = { inFeatures: this.hiddenSize, outFeatures: settings.dimension, bias: false, activation: 'identity', modulePath: '1_Dense' };
    const expansion = settings.queryExpansion === 'none' ? undefined : { strategy: settings.queryExpansion, attend: settings.attendExpansion, token: null, length: settings.queryLength };
    const prompts = { ...this.files.prompts };
    if (settings.queryPrompt !== undefined) prompts.query = settings.queryPrompt;
    if (settings.documentPrompt !== undefined) prompts.document = settings.documentPrompt;
    const files: ModelDirectory = {
      ...this.files,
      dense: this.dense,
      prompts,
      madeMultiVector: true,
      multiVector: {
        format: 'sentence-transformers MultiVectorEncoder',
        queryLength: settings.queryLength,
        documentLength: Math.min(settings.documentLength ?? this.files.maxSeqLength, this.files.maxSeqLength),
        queryExpansion: expansion,
        skiplistWords: settings.skiplist,
        skiplistTasks: ['document'],
        normalize: true,
        similarity: 'maxsim',
        prefixTokens: [],
      },
    };
    const multi = await multiVectorTokens(files, this.tokenizer);
    this.files = files;
    this.multi = multi;
    this.changed('made multi-vector');
  }

  /** The token ids `embed()` feeds the model for each text (special tokens included, truncated). */
  async tokenize(texts: string[]): Promise<number[][]> {
    this.model.current();
    checkTexts(texts);
    return (await this.tokenizer.encode(texts)).map((t) => t.ids);
  }

  /** One vector per text: `{ dims: [texts.length, dimension], data }`. */
  embed(texts: string[], options?: EmbedOptions & { output?: 'pooled' }): Promise<Matrix>;
  /** The states of each text's tokens (special tokens included): one `{ dims: [tokens, dimension], data }` per text. */
  embed(texts: string[], options: EmbedOptions & { output: 'tokens' }): Promise<Matrix[]>;
  async embed(texts: string[], options?: EmbedOptions): Promise<Matrix | Matrix[]> {
    return this.model.use((handle) => this.embedWith(handle, texts, options));
  }

  /**
   * @internal embed(), also returning how many tokens the model read for each text (the server's usage counts); of
   * texts, or of texts tokenized ahead by prepare() with the same options (the call then only pads and runs them).
   */
  async embedCounting(texts: string[] | { prepared: PreparedText[] }, options?: EmbedOptions): Promise<{ result: Matrix | Matrix[]; tokens: number[] }> {
    const tokens: number[] = [];
    const result = await this.model.use((handle) => this.embedWith(handle, texts, options, tokens));
    return { result, tokens };
  }

  /**
   * @internal Tokenizes `texts` as embed() of the same options would (prompt, task, truncation, a multi-vector model's
   * expansion and skiplist), for embedCounting to embed later: the server's requests are tokenized as they arrive,
   * concurrently, before their batch queue, so that a short request is never batched behind the tokenizing of huge
   * ones (as text-embeddings-inference's tokenization workers do). `signal` aborted, the texts not yet sent to the
   * tokenizer never are (a huge one waiting on its long lane), and it rejects ABORTED.
   */
  async prepare(texts: string[], options?: EmbedOptions): Promise<PreparedText[]> {
    this.model.current();
    const o = checkOptions('options', options, EMBED_KEYS);
    checkTexts(texts);
    const { output, task, prompt, signal } = this.embedSettings(o);
    const inputs = await this.prepareTexts(texts, task, prompt, output === 'pooled', signal);
    const setting = preparedSetting(task, prompt, output === 'pooled');
    return inputs.map((input, i) => ({ tokens: input.ids.length, input, characters: texts[i].length, encoder: this, setting }));
  }

  /** embed()'s options, checked (but `texts`' own). */
  private embedSettings(o: EmbedOptions) {
    const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
    const output = oneOf('options.output', o.output ?? 'pooled', ['pooled', 'tokens'] as const);
    const pooling = oneOf('options.pooling', o.pooling ?? this.files.pooling, POOLING_MODES);
    const normalize = booleanValue('options.normalize', o.normalize ?? (output === 'pooled' ? this.files.normalize : (this.multi?.config.normalize ?? false)));
    const truncateDim = o.truncateDim === undefined ? this.truncateDim : positiveInteger('options.truncateDim', o.truncateDim);
    if (o.truncateDim !== undefined) {
      if (output === 'tokens') throw new ColtrastError('INVALID_ARGUMENT', "options.truncateDim cuts pooled vectors; it does not apply to output 'tokens'");
      this.checkTruncateDim('options.truncateDim', truncateDim!);
    }
    // Cut pooled vectors: the model's full vectors come back unnormalized, and are cut, then normalized, below.
    const cut = output === 'pooled' && truncateDim !== undefined && truncateDim < this.fullDimension ? truncateDim : undefined;
    const signal = signalOption(o.signal);

    const task = o.task === undefined ? undefined : oneOf('options.task', o.task, TASKS);
    if (this.multi && output === 'pooled') {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `${this.files.dir} is a multi-vector (ColBERT-style) model: it embeds to token vectors only; use { output: 'tokens', task: 'query' | 'document' }`,
      );
    }
    const prompt = this.resolvePrompt(o.prompt, o.promptName, task);
    return { batchSize, output, pooling, normalize, cut, signal, task, prompt };
  }

  /** embed() of `input`: texts, or texts tokenized ahead (prepare(), with the same options); the loop is the same. */
  private async embedWith(handle: NativeEncoder, input: string[] | { prepared: PreparedText[] }, options?: EmbedOptions, tokenCounts?: number[]): Promise<Matrix | Matrix[]> {
    const o = checkOptions('options', options, EMBED_KEYS);
    const prepared = Array.isArray(input) ? undefined : input.prepared;
    const texts = prepared ? [] : (input as string[]);
    if (!prepared) checkTexts(texts);
    const { batchSize, output, pooling, normalize, cut, signal, task, prompt } = this.embedSettings(o);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
      throw invalid('options.onProgress', 'a function', o.onProgress);
    }
    const count = prepared ? prepared.length : texts.length;
    if (prepared) {
      const setting = preparedSetting(task, prompt, output === 'pooled');
      if (prepared.some((p) => p.encoder !== this || p.setting !== setting)) {
        throw new ColtrastError('INVALID_ARGUMENT', 'texts prepared by another Encoder, or with another task, prompt or output, cannot be embedded with these options: prepare() them with the options of the embedding');
      }
    }
    const counts = tokenCounts && new Array<number>(count);
    const dim = output === 'pooled' ? this.fullDimension : this.tokenDimension;
    const width = cut ?? dim;
    const pooled = new Float32Array(output === 'pooled' ? count * width : 0);
    const tokens: Matrix[] = new Array(output === 'tokens' ? count : 0);
    const tokenize = async (indices: number[]) => {
      const items = prepared ? indices.map((i) => prepared[i].input) : await this.prepareTexts(indices.map((i) => texts[i]), task, prompt, output === 'pooled', signal);
      if (counts) indices.forEach((textIndex, k) => (counts[textIndex] = items[k].ids.length));
      return items;
    };
    const run = (items: ModelInput[]) =>
      handle.embed({ ...padBatch(items), output, pooling, normalize: normalize && cut === undefined, projectTokens: this.multi !== undefined });
    const take = (result: Float32Array, indices: number[], items: ModelInput[]) => {
      let offset = 0;
      indices.forEach((textIndex, r) => {
        if (output === 'pooled') {
          const row = pooled.subarray(textIndex * width, (textIndex + 1) * width);
          row.set(result.subarray(r * dim, r * dim + width));
          if (cut !== undefined && normalize) normalizeRow(row);
        } else {
          const item = items[r];
          const n = item.scored ? item.scored.reduce((sum, v) => sum + v, 0) : item.ids.length;
          tokens[textIndex] = { dims: [n, dim], data: result.slice(offset, offset + n * dim) };
          offset += n * dim;
        }
      });
    };
    const characters = prepared ? (i: number) => prepared[i].characters : (i: number) => texts[i].length;
    await tokenizeInBatches(count, batchSize, tokenizeAhead(this.device), characters, tokenize, run, take, o.onProgress, { signal, call: 'embed()' });
    if (counts) tokenCounts!.push(...counts);
    // A HierarchicalTokenPooling module pools the token vectors of its tasks' texts (none given: a document's).
    const pool = this.multi?.config.tokenPooling;
    if (output === 'tokens' && pool && pool.poolFactor > 1 && pool.tasks.includes(task ?? 'document')) return poolAll(tokens, pool.poolFactor, pool.protectedTokens);
    return output === 'pooled' ? { dims: [count, width], data: pooled } : tokens;
  }

  /**
   * @internal The prompt to put before each text: sentence-transformers' rules for encode, encode_query and
   * encode_document (a PyLate model's [Q] / [D] marker is its query or document prompt). The server's /tokenize too.
   */
  resolvePrompt(prompt: unknown, promptName: unknown, task: 'query' | 'document' | undefined): string | undefined {
    return taskPrompt(this.files, prompt, promptName, task);
  }

  /** @internal The truncation length for `task`: a multi-vector model's query or document length, else the model's (server's /info too). */
  maxLengthFor(task: 'query' | 'document' | undefined): number {
    const mv = this.multi?.config;
    const positions = positionLimit(this.files.config);
    let length = this.files.maxSeqLength;
    if (mv && task === 'query') {
      const expansion = mv.queryExpansion;
      if (expansion?.strategy === 'fixed') length = expansion.length;
      else if (expansion) length = Math.max(mv.queryLength ?? length, expansion.length);
      else length = mv.queryLength ?? length;
    } else if (mv && task === 'document') {
      length = mv.documentLength ?? length;
    }
    return Math.min(length, positions);
  }

  /**
   * Texts as the model gets them for `task`: `prompt` before each, truncated to the task's length, a multi-vector
   * model's queries expanded and its scored positions marked; for pooling (`forPooling`) with include_prompt
   * false, the prompt's tokens left out of the pooled positions, as sentence-transformers does.
   */
  private async prepareTexts(texts: string[], task: 'query' | 'document' | undefined, prompt: string | undefined, forPooling: boolean, signal?: AbortSignal): Promise<ModelInput[]> {
    const maxLength = this.maxLengthFor(task);
    const tokenized = this.modelInputs(await this.tokenizer.encode(prompt ? texts.map((t) => prompt + t) : texts, maxLength, signal), task);
    if (prompt && forPooling && !this.files.includePrompt && !this.multi) {
      const skip = await this.tokenizer.promptLength(prompt, maxLength);
      for (const t of tokenized) t.scored = t.ids.map((_, i) => (i < skip ? 0 : 1));
    }
    return tokenized;
  }

  /**
   * @internal Tokens as the model gets them: for a multi-vector model, queries expanded and the scored positions
   * marked. The server's /tokenize too.
   */
  modelInputs(tokenized: TokenizedText[], task: 'query' | 'document' | undefined): ModelInput[] {
    const mv = this.multi;
    if (!mv) return tokenized;
    const expansion = task === 'query' ? mv.config.queryExpansion : undefined;
    const skip = mv.config.skiplistTasks.includes(task ?? 'document') && mv.skiplist.size > 0 ? mv.skiplist : undefined;
    const keepOnly = task !== 'query' ? mv.keepOnly : undefined;
    return tokenized.map(({ ids, typeIds }) => {
      const n = ids.length;
      const attention = new Array<number>(n).fill(1);
      const out: ModelInput = { ids: [...ids], typeIds: [...typeIds], attention };
      if (expansion && n < expansion.length) {
        // ColBERT's query expansion: mask tokens up to the expansion length, scored whether attended or not.
        const extra = expansion.length - n;
        out.ids.push(...new Array<number>(extra).fill(mv.expansionId));
        out.typeIds.push(...new Array<number>(extra).fill(0));
        attention.push(...new Array<number>(extra).fill(expansion.attend ? 1 : 0));
      }
      out.scored = out.ids.map((id, i) => (i >= n || ((!skip || !skip.has(id)) && (!keepOnly || keepOnly.has(id))) ? 1 : 0));
      return out;
    });
  }

  /**
   * Writes the model as a sentence-transformers directory (config.json, model.safetensors, tokenizer
   * files, modules.json, pooling/normalize configs) that `Encoder.load` and Python's
   * sentence-transformers both load. The folder appears complete or not at all.
   */
  async save(dir: string, options?: SaveOptions): Promise<void> {
    return this.model.use((handle) => this.saveWith(handle, dir, options));
  }

  private async saveWith(handle: NativeEncoder, dir: string, options?: SaveOptions): Promise<void> {
    const o = checkOptions('options', options, SAVE_KEYS);
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
    const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
    this.model.checkSavable();
    const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
    await writeFolderAtomic(path.resolve(dir), overwrite, async (staging) => {
      writeModelFiles(this.files, staging, {
        pooling: this.files.pooling,
        normalize: this.files.normalize,
        maxSeqLength: this.files.maxSeqLength,
        dimension: this.hiddenSize,
        dense: this.dense,
        denseStack: this.files.denseStack,
      });
      try {
        const denseDir = this.multi ? this.dense?.modulePath : DENSE_DIR;
        const denseFile = this.dense && denseDir ? path.join(staging, denseDir, 'model.safetensors') : undefined;
        const stackFiles = (this.files.denseStack ?? []).map((_, i) => path.join(staging, denseStackDir(i), 'model.safetensors'));
        await handle.saveWeights(path.join(staging, 'model.safetensors'), dtype, denseFile, stackFiles);
        // The adapter beside the merged weights: what PEFT (or sentence-transformers' load_adapter) adds to the base model.
        if (this.loraConfig) await saveAdapter(handle, path.join(staging, ADAPTER_DIR), this.loraConfig, dtype, this.adapterBase);
      } catch (error) {
        throw fromNative(error);
      }
    });
  }

  /**
   * Frees the native model (it is also freed when garbage-collected). Calls already running finish
   * first; calls made afterwards throw DISPOSED.
   */
  dispose(): void {
    this.model.dispose();
    this.tokenizer.dispose();
  }
}

/**
 * The markers PyLate inserted as single tokens ("[unused0]", "[Q] ") that this tokenizer would split: they are
 * registered as special tokens so that a text starting with one tokenizes as PyLate trained it, as
 * sentence-transformers does when it loads such a model.
 */
async function prefixTokensToRegister(tokenizer: TextTokenizer, prefixes: string[]): Promise<string[]> {
  const register: string[] = [];
  for (const value of prefixes) {
    if (!value.trim()) continue;
    for (const candidate of [value, value.trim().split(/\s+/)[0]]) {
      if ((await tokenizer.tokenToId(candidate)) === null) continue;
      const pieces = await tokenizer.pieces(candidate);
      if (pieces.length !== 1 || pieces[0] !== candidate) register.push(candidate);
      break;
    }
  }
  return register;
}

/** A multi-vector model's expansion token and skiplist as token ids (skiplist words not in the vocabulary are
 * dropped, as sentence-transformers drops them). */
async function multiVectorTokens(files: ModelDirectory, tokenizer: TextTokenizer): Promise<MultiVectorTokens> {
  const config = files.multiVector!;
  const expansion = config.queryExpansion;
  let expansionId = 0;
  if (expansion) {
    const token = expansion.token ?? readSpecialToken(files.transformerDir, 'mask_token') ?? readSpecialToken(files.transformerDir, 'eos_token') ?? readSpecialToken(files.transformerDir, 'pad_token');
    const id = token === undefined ? null : await tokenizer.tokenToId(token);
    if (id === null) {
      throw new ColtrastError(
        'MODEL_FILES',
        `${files.dir}: query expansion needs ${token === undefined ? 'a mask token (tokenizer_config.json names none)' : `the token ${JSON.stringify(token)}, which the tokenizer does not have`}`,
      );
    }
    expansionId = id;
  }
  const skiplist = new Set((await tokenizer.tokenToIds(config.skiplistWords)).filter((id): id is number => id !== null));
  return {
    config,
    expansionId,
    skiplist,
    keepOnly: config.keepOnlyTokenIds && new Set(config.keepOnlyTokenIds),
  };
}
