/**
 * `SparseEncoder`: a learned sparse (SPLADE-style) retrieval model, as sentence-transformers' SparseEncoder runs one. A
 * masked language model reads the text, its head gives every token a logit for each vocabulary entry, and pooling
 * (log(1 + relu), then the maximum over the text's tokens) makes one vector as wide as the vocabulary whose few
 * non-zero entries are the terms the text weighs, expansions included. Scored by dot product, searched with an
 * inverted index (SparseIndex), and readable: decode() names the terms.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Matrix } from './encoder';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { maskTokens, maskingTokens } from './masked-lm';
import { readSparseEncoderDirectory, readSparseStart, taskPrompt, tokenizerAsLoaded, writeModelFiles, type ModelDirectory, type SparseConfig, type StaticQueryRoute } from './model-dir';
import { halfToFloat, readSafetensorsHeader, tensorInfo } from './safetensors';
import { DTYPES, ModelHandle, applyQuantize, bindTrainer, checkQuantize, loadNative, quantizeOption, resolveLoad, tokenizeAhead, tokenizeInBatches, type DType, type LoadOptions, type ModelTrainer, type Quantize } from './native-model';
import { fromNative, type NativeEncoder, type NativeSparseRows, type NativeTrainerOptions, type PaddedBatch } from './native';
import { SIMILARITY_FUNCTIONS, type SimilarityFunction } from './similarity';
import { TextTokenizer, padBatch, type ModelInput } from './tokenizer';
import { inTurns } from './turns';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger, signalOption } from './validate';

/**
 * A sparse vector: the indices of its non-zero entries, rising (token ids of the model's vocabulary), and their values.
 * The vector's width is its model's `dimension`.
 */
export interface SparseVector {
  indices: Int32Array;
  values: Float32Array;
}

/** SparseEncoder.load's options: LoadOptions, int8, and a cap on each vector's non-zero entries. */
export interface SparseEncoderLoadOptions extends LoadOptions {
  /**
   * Keep at most this many non-zero entries in each vector, the largest (sentence-transformers' `max_active_dims`):
   * smaller vectors and a faster index, at some loss of quality. encode()'s `maxActiveDims` overrides it. Default: all.
   */
  maxActiveDims?: number;
  /**
   * 'int8': the transformer's projections run in int8 on the CPU (EncoderLoadOptions.quantize has the details); the
   * masked-LM head stays float32. For inference: save() is refused.
   */
  quantize?: Quantize;
}

export interface SparseEncodeOptions {
  /** Texts per forward pass (default 32). Texts are sorted by length first, so padding is small. */
  batchSize?: number;
  /**
   * What the texts are, as sentence-transformers' encode_query / encode_document take them: the model's 'query' prompt
   * (or 'document', 'passage', 'corpus') goes before each text. Default: neither.
   */
  task?: 'query' | 'document';
  /** One of the model's named prompts (`prompts`) to put before each text, whatever the task. */
  promptName?: string;
  /** A text to put before each text, instead of a named prompt. */
  prompt?: string;
  /** At most this many non-zero entries a vector, the largest (default: the load option's, else all). */
  maxActiveDims?: number;
  /** Called after each batch with texts done so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the call when aborted: looked at before each batch is sent to the model; it rejects with ABORTED. */
  signal?: AbortSignal;
}

export interface SparseSaveOptions {
  /** Replace `dir` if it exists (default false: an existing non-empty folder is an error). */
  overwrite?: boolean;
  /** dtype of the saved weights (default float32). */
  dtype?: DType;
}

/** @internal A sparse encoder's training batch: queries and documents tokenized and padded, and how long that took (seconds). */
export interface SparsePreparedBatch {
  queries: PaddedBatch;
  documents: PaddedBatch;
  tokenizeSeconds: number;
}

/**
 * How train() regularizes a sparse encoder (TrainOptions.sparse): the FLOPS weights of queries and documents at full
 * strength, and their warm-up, sentence-transformers' SpladeRegularizerWeightSchedulerCallback.
 */
export interface SparseRegularizers {
  queryRegularizer: number;
  documentRegularizer: number;
  /** The share of the optimizer steps over which the weights rise from 0 (0: full from the first step). */
  warmupRatio: number;
  /** How they rise: ratio² or ratio, the ratio being the step / the warm-up's steps. */
  schedule: 'quadratic' | 'linear';
}

const ENCODE_KEYS = ['batchSize', 'task', 'promptName', 'prompt', 'maxActiveDims', 'onProgress', 'signal'] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;
const TASKS = ['query', 'document'] as const;

export class SparseEncoder {
  private readonly model: ModelHandle;
  /** The vocabulary's tokens by id, read from the tokenizer at the first decode(). */
  private vocabulary: Promise<(string | null)[]> | undefined;

  private constructor(
    handle: NativeEncoder,
    private readonly files: ModelDirectory & { sparse: SparseConfig },
    private readonly tokenizer: TextTokenizer,
    /** The vectors' width: the vocabulary's size. */
    readonly dimension: number,
    /** The device the model runs on, e.g. 'cpu' or 'cuda:0'. */
    readonly device: string,
    readonly dtype: DType,
    /** The load option's cap on non-zero entries a vector, if any. */
    readonly maxActiveDims: number | undefined,
    /**
     * How save() writes the model: a sentence-transformers SparseEncoder folder, or (a model train({ mlm }) trains) a
     * plain Hugging Face *ForMaskedLM folder.
     */
    private readonly layout: 'sparse-encoder' | 'masked-lm' = 'sparse-encoder',
    /** An inference-free SPLADE's query route: its tokenizer and a weight per vocabulary entry (files.staticQueries). */
    private readonly staticQueries?: { tokenizer: TextTokenizer; weights: Float32Array; route: StaticQueryRoute },
  ) {
    this.model = new ModelHandle(handle, 'SparseEncoder');
  }

  /**
   * An inference-free SPLADE (sentence-transformers' Router with a SparseStaticEmbedding): its queries are encoded
   * without the model, a weight per vocabulary entry of the tokens they hold; its documents as any sparse encoder's.
   */
  get inferenceFree(): boolean {
    return this.staticQueries !== undefined;
  }

  /**
   * Loads a sentence-transformers SparseEncoder folder (a Transformer with its masked-LM head, then SpladePooling), a
   * Hugging Face *ForMaskedLM folder (pooled as sentence-transformers pools one: max, relu), or a Hugging Face id such
   * as `naver/splade-v3`. The BERT family (bert, distilbert, roberta, xlm-roberta, camembert, mpnet) and ModernBERT.
   */
  static async load(model: string, options?: SparseEncoderLoadOptions): Promise<SparseEncoder> {
    const { maxActiveDims, quantize, ...loadOptions } = options ?? {};
    const cap = maxActiveDims === undefined ? undefined : positiveInteger('options.maxActiveDims', maxActiveDims);
    const int8 = quantizeOption(quantize);
    const { dir, device, dtype } = await resolveLoad(model, loadOptions);
    checkQuantize(int8, device, dtype);
    const encoder = await SparseEncoder.open(readSparseEncoderDirectory(dir), device, dtype, cap, { ...(int8 && { quantizeInt8: true }) });
    await applyQuantize(encoder.model, int8, () => encoder.dispose());
    return encoder;
  }

  /**
   * @internal The start of train({ sparse }) and train({ mlm }): a sparse encoder's folder, or a masked language
   * model's, or an embedding model's with a new masked-LM head drawn from `seed` (readSparseStart). `layout`: how its
   * save() writes it.
   */
  static async loadForTraining(model: string, options: LoadOptions, seed: number, layout: 'sparse-encoder' | 'masked-lm' = 'sparse-encoder'): Promise<SparseEncoder> {
    const { dir, device, dtype } = await resolveLoad(model, options);
    return SparseEncoder.open(readSparseStart(dir), device, dtype, undefined, { newHead: true, seed }, layout);
  }

  private static async open(
    files: ModelDirectory & { sparse: SparseConfig },
    device: string,
    dtype: DType,
    cap: number | undefined,
    extra: { quantizeInt8?: boolean; newHead?: boolean; seed?: number },
    layout: 'sparse-encoder' | 'masked-lm' = 'sparse-encoder',
  ): Promise<SparseEncoder> {
    const tokenizer = await TextTokenizer.load(files.tokenizerPath, files.maxSeqLength, files.lowercase);
    let handle: NativeEncoder;
    try {
      handle = await loadNative(files, device, dtype, { head: 'masked-lm', ...extra });
    } catch (error) {
      tokenizer.dispose();
      throw error;
    }
    const info = handle.info();
    let staticQueries: SparseEncoder['staticQueries'];
    if (files.staticQueries) {
      try {
        const route = files.staticQueries;
        const weights = readStaticWeights(route.weightsPath, info.sparseDimension);
        staticQueries = { tokenizer: await TextTokenizer.load(route.tokenizerPath, route.maxSeqLength, route.lowercase), weights, route };
      } catch (error) {
        handle.dispose();
        tokenizer.dispose();
        throw error;
      }
    }
    return new SparseEncoder(handle, files, tokenizer, info.sparseDimension, info.device, dtype, cap, layout, staticQueries);
  }

  /** 'int8' when loaded with quantize (the projections run in int8 on the CPU); undefined otherwise. */
  get quantize(): Quantize | undefined {
    return this.model.quantized;
  }
  /** config.json's model_type ("bert", "distilbert", ...). */
  get modelType(): string {
    return String(this.files.config.model_type);
  }
  /** The folder the model was read from. */
  get modelDir(): string {
    return this.files.dir;
  }
  /** SpladePooling's settings: the pooling over tokens ('max' or 'sum') and the activation ('relu', or 'log1p_relu'). */
  get pooling(): Readonly<SparseConfig> {
    return this.files.sparse;
  }
  /** Longer texts are truncated to this many tokens (special tokens included). */
  get maxSeqLength(): number {
    return this.files.maxSeqLength;
  }
  /** The model's named prompts (config_sentence_transformers.json), e.g. { query: 'query: ' }. */
  get prompts(): Readonly<Record<string, string>> {
    return this.files.prompts;
  }
  /** @internal The tokenizer (the server's /tokenize and /decode). */
  get textTokenizer(): TextTokenizer {
    this.model.current();
    return this.tokenizer;
  }
  /** @internal The prompt encode() puts before each text for these options (the server's /tokenize). */
  resolvePrompt(prompt: unknown, promptName: unknown, task: 'query' | 'document' | undefined): string | undefined {
    return taskPrompt(this.files, prompt, promptName, task);
  }
  /** How the model compares vectors: config_sentence_transformers.json's similarity_fn_name, else 'dot' (a SparseEncoder's default). */
  get similarityFunction(): SimilarityFunction {
    const fn = this.files.similarity ?? 'dot';
    if (!(SIMILARITY_FUNCTIONS as readonly string[]).includes(fn)) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${this.modelDir}: config_sentence_transformers.json's similarity_fn_name ${JSON.stringify(fn)} is none of ${SIMILARITY_FUNCTIONS.join(', ')}`);
    }
    return fn as SimilarityFunction;
  }

  /**
   * One sparse vector per text, in the order given (sentence-transformers' encode; with `task`, encode_query or
   * encode_document). Runs natively, off the JS thread, in batches sorted by length.
   */
  async encode(texts: string[], options?: SparseEncodeOptions): Promise<SparseVector[]> {
    return this.model.use((handle) => this.encodeWith(handle, texts, options));
  }

  private async encodeWith(handle: NativeEncoder, texts: string[], options?: SparseEncodeOptions): Promise<SparseVector[]> {
    const o = checkOptions('options', options, ENCODE_KEYS);
    if (!Array.isArray(texts)) throw invalid('texts', 'an array of strings', texts);
    for (let i = 0; i < texts.length; i++) if (typeof texts[i] !== 'string') throw invalid(`texts[${i}]`, 'a string', texts[i]);
    const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
    const task = o.task === undefined ? undefined : oneOf('options.task', o.task, TASKS);
    const maxActiveDims = o.maxActiveDims === undefined ? this.maxActiveDims : positiveInteger('options.maxActiveDims', o.maxActiveDims);
    const signal = signalOption(o.signal);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
    const prompt = taskPrompt(this.files, o.prompt, o.promptName, task);
    // An inference-free SPLADE's queries (and texts without a task, where its Router's default route is the queries'):
    // the weights of the vocabulary entries their tokens are, the model not run.
    if (this.staticQueries && (task ?? this.staticQueries.route.defaultRoute) === 'query') {
      const { tokenizer, weights, route } = this.staticQueries;
      const tokenized = await tokenizer.encodeBare(prompt ? texts.map((t) => prompt + t) : texts, route.maxSeqLength, signal);
      const vectors = tokenized.map(({ ids }) => staticVector(ids, weights, maxActiveDims));
      o.onProgress?.(texts.length, texts.length);
      return vectors;
    }
    const out = new Array<SparseVector>(texts.length);
    const tokenize = (indices: number[]) => this.tokenizer.encode(indices.map((i) => (prompt ? prompt + texts[i] : texts[i])), this.files.maxSeqLength, signal);
    const run = (items: ModelInput[]) =>
      handle.embed({
        ...padBatch(items),
        output: 'sparse',
        spladePooling: this.files.sparse.pooling,
        spladeActivation: this.files.sparse.activation,
        ...(maxActiveDims !== undefined && { maxActiveDims }),
      });
    const take = (result: NativeSparseRows, indices: number[]) => {
      let at = 0;
      indices.forEach((textIndex, r) => {
        const n = result.counts[r];
        out[textIndex] = { indices: result.indices.slice(at, at + n), values: result.values.slice(at, at + n) };
        at += n;
      });
    };
    await tokenizeInBatches(texts.length, batchSize, tokenizeAhead(this.device), (i) => texts[i].length, tokenize, run, take, o.onProgress, { signal, call: 'encode()' });
    return out;
  }

  /**
   * Every vector of `a` against every one of `b` (sentence-transformers' `model.similarity()`): [a's count, b's count]
   * scores under the model's similarityFunction (dot by default; cosine, or the negated euclidean or manhattan distance).
   * Computed a row at a time, letting the event loop run between rows every few milliseconds.
   */
  async similarity(a: SparseVector[], b: SparseVector[]): Promise<Matrix> {
    checkVectors('a', a, this.dimension);
    checkVectors('b', b, this.dimension);
    const fn = this.similarityFunction;
    const data = new Float32Array(a.length * b.length);
    await inTurns(a.keys(), (i) => {
      for (let j = 0; j < b.length; j++) data[i * b.length + j] = sparseSimilarity(a[i], b[j], fn);
    });
    return { dims: [a.length, b.length], data };
  }

  /** Vector i of `a` against vector i of `b` (sentence-transformers' `similarity_pairwise()`). */
  async similarityPairwise(a: SparseVector[], b: SparseVector[]): Promise<Float32Array> {
    checkVectors('a', a, this.dimension);
    checkVectors('b', b, this.dimension);
    if (a.length !== b.length) throw new ColtrastError('INVALID_ARGUMENT', `a has ${a.length} vectors and b has ${b.length}: pairwise similarity needs as many of each`);
    const fn = this.similarityFunction;
    const out = new Float32Array(a.length);
    await inTurns(a.keys(), (i) => (out[i] = sparseSimilarity(a[i], b[i], fn)));
    return out;
  }

  /**
   * The terms a vector weighs, as [token, weight] pairs, heaviest first (sentence-transformers' `decode()`): the `topK`
   * heaviest, or all of them. Tokens are spelled as the vocabulary spells them ("##ing" for a BERT word piece).
   */
  async decode(vector: SparseVector, topK?: number): Promise<[string, number][]> {
    this.model.current();
    checkVectors('vector', [vector], this.dimension);
    const k = topK === undefined ? vector.indices.length : positiveInteger('topK', topK);
    this.vocabulary ??= this.tokenizer.idsToTokens(Array.from({ length: this.dimension }, (_, i) => i));
    const vocabulary = await this.vocabulary;
    const order = Array.from(vector.indices.keys()).sort((x, y) => vector.values[y] - vector.values[x] || vector.indices[x] - vector.indices[y]);
    return order.slice(0, k).map((i) => [vocabulary[vector.indices[i]] ?? `[${vector.indices[i]}]`, vector.values[i]]);
  }

  /**
   * Writes the model as a sentence-transformers SparseEncoder folder (config.json, model.safetensors with the masked-LM
   * head as *ForMaskedLM saves it, tokenizer files, modules.json, SpladePooling's config) that SparseEncoder.load and
   * Python's sentence-transformers both load. The folder appears complete or not at all.
   */
  async save(dir: string, options?: SparseSaveOptions): Promise<void> {
    return this.model.use(async (handle) => {
      const o = checkOptions('options', options, SAVE_KEYS);
      if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
      const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
      const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
      this.model.checkSavable();
      if (this.staticQueries) {
        // An inference-free SPLADE does not train here: its folder is copied as it is (a Router of modules).
        if (dtype !== 'float32') throw invalid('options.dtype', "absent or 'float32' for an inference-free SPLADE (its folder is copied as it is)", o.dtype);
        await writeFolderAtomic(path.resolve(dir), overwrite, async (staging) => {
          fs.cpSync(this.files.dir, staging, { recursive: true, dereference: true });
        });
        return;
      }
      await writeFolderAtomic(path.resolve(dir), overwrite, async (staging) => {
        writeModelFiles(this.files, staging, { pooling: this.files.pooling, normalize: false, maxSeqLength: this.files.maxSeqLength, dimension: this.dimension, maskedLm: this.layout === 'masked-lm' });
        try {
          await handle.saveWeights(path.join(staging, 'model.safetensors'), dtype);
        } catch (error) {
          throw fromNative(error);
        }
      });
    });
  }

  /** The model's LoRA adapter: none (train() does not give a sparse encoder one). */
  readonly lora = undefined;

  /**
   * @internal Optimizer state bound to this model, for lib/train.ts: each step tokenizes the queries and documents as
   * encode({ task }) does (the model's prompts when `prompts`), then runs forward, SPLADE pooling, the loss (dot products,
   * FLOPS regularizers weighted by each step's queryRegularizer and documentRegularizer), backward and the AdamW update natively; the weights this SparseEncoder encodes with change in place.
   */
  createTrainer(options: NativeTrainerOptions, prompts: boolean): ModelTrainer<SparsePreparedBatch> {
    if (this.quantize) throw new ColtrastError('INVALID_ARGUMENT', `this SparseEncoder was loaded with quantize: '${this.quantize}', which is for inference: load it without quantize to train it`);
    const side = async (texts: string[], task: 'query' | 'document') => {
      const prompt = prompts ? taskPrompt(this.files, undefined, undefined, task) : undefined;
      return padBatch(await this.tokenizer.encode(prompt ? texts.map((t) => prompt + t) : texts, this.files.maxSeqLength));
    };
    const prepare = async (queries: string[], documents: string[]): Promise<SparsePreparedBatch> => {
      const started = performance.now();
      const [q, d] = await Promise.all([side(queries, 'query'), side(documents, 'document')]);
      return { queries: q, documents: d, tokenizeSeconds: (performance.now() - started) / 1000 };
    };
    return bindTrainer(this.model, options, prepare, (batch, stepOptions) => ({
      queries: batch.queries,
      documents: batch.documents,
      ...stepOptions,
      sparse: true,
      spladePooling: this.files.sparse.pooling,
      spladeActivation: this.files.sparse.activation,
    }));
  }

  /**
   * @internal Optimizer state bound to this model for masked-language-model training (train({ mlm })): each step
   * tokenizes the batch's texts (its queries; no prompts), masks them as lib/masked-lm.ts draws from the step's
   * `maskSeed`, and runs forward, the head's logits at the masked positions, their cross-entropy, backward and the AdamW
   * update natively.
   */
  createMlmTrainer(options: NativeTrainerOptions, probability: number): ModelTrainer<SparsePreparedBatch> {
    if (this.quantize) throw new ColtrastError('INVALID_ARGUMENT', `this SparseEncoder was loaded with quantize: '${this.quantize}', which is for inference: load it without quantize to train it`);
    // The tokenizer's own folder (a 5.x SparseEncoder keeps it in its MLMTransformer's) names the mask token.
    const tokens = maskingTokens(tokenizerAsLoaded(this.files), path.dirname(this.files.tokenizerPath));
    const prepare = async (texts: string[]): Promise<SparsePreparedBatch> => {
      const started = performance.now();
      const batch = padBatch(await this.tokenizer.encode(texts, this.files.maxSeqLength));
      return { queries: batch, documents: batch, tokenizeSeconds: (performance.now() - started) / 1000 };
    };
    return bindTrainer(this.model, options, prepare, (batch, stepOptions) => {
      const { ids, labels } = maskTokens(batch.queries.inputIds, batch.queries.attentionMask, tokens, this.dimension, probability, stepOptions.maskSeed ?? 0);
      return { ...stepOptions, mlm: true, inputs: { ...batch.queries, inputIds: ids }, labels };
    });
  }

  /** Frees the native model (it is also freed when garbage-collected). Calls already running finish first; later ones throw DISPOSED. */
  dispose(): void {
    this.model.dispose();
    this.tokenizer.dispose();
    this.staticQueries?.tokenizer.dispose();
  }
}

/**
 * A SparseStaticEmbedding's weights ("weight" in its model.safetensors: one per vocabulary entry, float32, float16 or
 * bfloat16), as float32; their count must be the document model's vocabulary's.
 */
function readStaticWeights(file: string, dimension: number): Float32Array {
  const handle = fs.openSync(file, 'r');
  let bytes: Buffer;
  let info: ReturnType<typeof tensorInfo>;
  try {
    const read = readSafetensorsHeader(handle, 1 << 24);
    if ('problem' in read) throw new ColtrastError('MODEL_FILES', `${file} is ${read.problem} (not a safetensors file as sentence-transformers saves one)`);
    info = tensorInfo(read.header.weight);
    if (!info || info.shape.length !== 1) throw new ColtrastError('MODEL_FILES', `${file} has no one-dimensional "weight" tensor (a SparseStaticEmbedding's weight per vocabulary entry)`);
    if (info.shape[0] !== dimension) throw new ColtrastError('MODEL_FILES', `${file}: "weight" holds ${info.shape[0]} values, and the document model's vocabulary has ${dimension} entries`);
    bytes = Buffer.alloc(info.end - info.begin);
    if (fs.readSync(handle, bytes, 0, bytes.length, read.dataStart + info.begin) !== bytes.length) throw new ColtrastError('MODEL_FILES', `${file} is truncated`);
  } finally {
    fs.closeSync(handle);
  }
  const out = new Float32Array(dimension);
  if (info.dtype === 'F32' && bytes.length === 4 * dimension) {
    for (let i = 0; i < dimension; i++) out[i] = bytes.readFloatLE(4 * i);
  } else if ((info.dtype === 'BF16' || info.dtype === 'F16') && bytes.length === 2 * dimension) {
    const word = new Uint32Array(1);
    const asFloat = new Float32Array(word.buffer);
    for (let i = 0; i < dimension; i++) {
      const h = bytes.readUInt16LE(2 * i);
      if (info.dtype === 'F16') {
        out[i] = halfToFloat(h);
      } else {
        // bfloat16: float32's upper half.
        word[0] = h << 16;
        out[i] = asFloat[0];
      }
    }
  } else {
    throw new ColtrastError('MODEL_FILES', `${file}: "weight" is ${info.dtype}, and a SparseStaticEmbedding's weights are read as float32, float16 or bfloat16`);
  }
  return out;
}

/**
 * A query's vector under a SparseStaticEmbedding (sentence-transformers': each vocabulary entry its tokens hold, once,
 * times its weight; zeros left out), its `maxActiveDims` largest kept when given.
 */
function staticVector(ids: number[], weights: Float32Array, maxActiveDims: number | undefined): SparseVector {
  let entries = [...new Set(ids)].filter((id) => id >= 0 && id < weights.length && weights[id] !== 0);
  if (maxActiveDims !== undefined && entries.length > maxActiveDims) entries = entries.sort((a, b) => weights[b] - weights[a] || a - b).slice(0, maxActiveDims);
  entries.sort((a, b) => a - b);
  return { indices: Int32Array.from(entries), values: Float32Array.from(entries, (id) => weights[id]) };
}

/** Throws INVALID_ARGUMENT unless `vectors` are sparse vectors of width `dimension`, indices rising. */
export function checkVectors(name: string, vectors: unknown, dimension: number): asserts vectors is SparseVector[] {
  if (!Array.isArray(vectors)) throw invalid(name, 'an array of sparse vectors ({ indices: Int32Array, values: Float32Array })', vectors);
  vectors.forEach((v: unknown, i) => checkVector(vectors.length === 1 && name === 'vector' ? name : `${name}[${i}]`, v, dimension));
}

/** Throws INVALID_ARGUMENT, naming it `where`, unless `v` is a sparse vector of width `dimension`, indices rising. */
export function checkVector(where: string, v: unknown, dimension: number): asserts v is SparseVector {
  const x = v as Partial<SparseVector> | null;
  if (!x || typeof x !== 'object' || !(x.indices instanceof Int32Array) || !(x.values instanceof Float32Array) || x.indices.length !== x.values.length) {
    throw invalid(where, 'a sparse vector: { indices: Int32Array, values: Float32Array } of one length', v);
  }
  for (let k = 0; k < x.indices.length; k++) {
    const index = x.indices[k];
    if (index < 0 || index >= dimension || (k > 0 && index <= x.indices[k - 1])) {
      throw new ColtrastError('INVALID_ARGUMENT', `${where}.indices must rise, each from 0 to ${dimension - 1} (the model's vocabulary); entry ${k} is ${index}`);
    }
  }
}

/** Two sparse vectors (indices rising) compared under `fn`, walking both index lists once. */
export function sparseSimilarity(a: SparseVector, b: SparseVector, fn: SimilarityFunction): number {
  let dot = 0, aa = 0, bb = 0, manhattan = 0;
  let i = 0, j = 0;
  const ai = a.indices, bi = b.indices, av = a.values, bv = b.values;
  while (i < ai.length || j < bi.length) {
    if (j >= bi.length || (i < ai.length && ai[i] < bi[j])) {
      aa += av[i] * av[i];
      manhattan += Math.abs(av[i++]);
    } else if (i >= ai.length || bi[j] < ai[i]) {
      bb += bv[j] * bv[j];
      manhattan += Math.abs(bv[j++]);
    } else {
      dot += av[i] * bv[j];
      aa += av[i] * av[i];
      bb += bv[j] * bv[j];
      manhattan += Math.abs(av[i++] - bv[j++]);
    }
  }
  switch (fn) {
    case 'dot': return dot;
    case 'cosine': return dot / (Math.max(Math.sqrt(aa), 1e-8) * Math.max(Math.sqrt(bb), 1e-8));
    case 'euclidean': return -Math.sqrt(Math.max(aa + bb - 2 * dot, 0));
    case 'manhattan': return -manhattan;
  }
}
