/**
 * `Encoder`: a sentence-embedding model loaded from a Hugging Face / sentence-transformers directory
 * (or a hub id), run by the native libtorch code off the JS thread.
 */
import os from 'node:os';
import path from 'node:path';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { resolveModelDir, type ResolveOptions } from './hub';
import { readModelDirectory, writeModelFiles, DENSE_DIR, POOLING_MODES, type DenseHead, type ModelDirectory, type PoolingMode } from './model-dir';
import { checkGpuArch } from './binary';
import { cudaKernelInfo, native, fromNative, type NativeEncoder, type NativeStepOptions, type NativeStepResult, type NativeTrainer, type NativeTrainerOptions, type PaddedBatch } from './native';
import { TextTokenizer, padBatch } from './tokenizer';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger } from './validate';

export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export type DType = 'float32' | 'float16' | 'bfloat16';
const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** A dense float32 matrix, row-major. */
export interface Matrix {
  dims: [number, number];
  data: Float32Array;
}

export interface LoadOptions extends Pick<ResolveOptions, 'cacheDir' | 'revision' | 'endpoint' | 'offline' | 'token'> {
  /** 'auto' (default) picks the first GPU when this libtorch has CUDA and one is visible, else the CPU. */
  device?: Device;
  /** float32 (default). float16 and bfloat16 are for CUDA devices. */
  dtype?: DType;
  /** Intra-op CPU threads for all of coltrast's native work in this process (default: every core). */
  threads?: number;
  /** Download progress, when `model` is a Hugging Face id that is not cached yet. */
  onDownloadProgress?: ResolveOptions['onProgress'];
}

export interface EmbedOptions {
  /** Texts per forward pass (default 32). Texts are sorted by length first, so padding is small. */
  batchSize?: number;
  /** 'pooled' (default): one vector per text. 'tokens': one [tokens, dim] matrix per text. */
  output?: 'pooled' | 'tokens';
  /** L2-normalize each vector (default: as the model's modules.json says for pooled, false for tokens). */
  normalize?: boolean;
  /** Override the model's pooling mode. */
  pooling?: PoolingMode;
  /** Called after each batch with texts done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

export interface SaveOptions {
  /** Replace `dir` if it exists (default false: an existing non-empty folder is an error). */
  overwrite?: boolean;
  /** dtype of the saved weights (default float32). */
  dtype?: DType;
}

const LOAD_KEYS = ['device', 'dtype', 'threads', 'cacheDir', 'revision', 'endpoint', 'offline', 'token', 'onDownloadProgress'] as const;
const EMBED_KEYS = ['batchSize', 'output', 'normalize', 'pooling', 'onProgress'] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;

let threadsApplied = false;

/** Applies a thread count for the whole process (the first load applies the default: every core). */
export function setThreads(threads?: number): void {
  const n = threads === undefined ? os.availableParallelism() : positiveInteger('threads', threads);
  native().setNumThreads(n);
  threadsApplied = true;
}

function resolveDevice(device: Device): string {
  const resolved = device === 'auto' ? (native().runtimeInfo().cudaAvailable ? 'cuda:0' : 'cpu') : device === 'cuda' ? 'cuda:0' : device;
  if (resolved !== 'cpu' && !/^cuda:\d+$/.test(resolved)) throw invalid('options.device', "'auto', 'cpu', 'cuda' or 'cuda:N'", device);
  if (resolved !== 'cpu') checkGpuArch(resolved, cudaKernelInfo());
  return resolved;
}

/** @internal A batch tokenized and padded for the trainer, and how long that took (seconds). */
export interface PreparedBatch {
  queries: PaddedBatch;
  documents: PaddedBatch;
  tokenizeSeconds: number;
}

/** @internal A trainer step's result: the native step's, and the time spent tokenizing its texts (seconds). */
export type TrainerStepResult = NativeStepResult & { tokenizeSeconds: number };

/** @internal See Encoder.createTrainer. */
export interface EncoderTrainer {
  step(queries: string[], documents: string[], options: NativeStepOptions): Promise<TrainerStepResult>;
  evaluate(queries: string[], documents: string[], options: NativeStepOptions): Promise<TrainerStepResult>;
  /** Tokenizes a batch ahead of its step (train() prepares the next batch while the current one runs). */
  prepare(queries: string[], documents: string[]): Promise<PreparedBatch>;
  stepPrepared(batch: PreparedBatch, options: NativeStepOptions): Promise<TrainerStepResult>;
  /** Optimizer moments and random-number state, to and from a safetensors file. */
  saveState(file: string): Promise<void>;
  loadState(file: string): Promise<void>;
  /** Frees the optimizer state now (the model stays with its Encoder). */
  dispose(): void;
}

function checkTexts(texts: unknown): asserts texts is string[] {
  if (!Array.isArray(texts)) throw invalid('texts', 'an array of strings', texts);
  texts.forEach((t, i) => {
    if (typeof t !== 'string') throw invalid(`texts[${i}]`, 'a string', t);
  });
}

export class Encoder {
  private handle: NativeEncoder | null;
  /** Calls that hold the native model; dispose() frees it when the last of them ends. */
  private inFlight = 0;
  private disposed = false;

  /** The projection head after pooling (sentence-transformers' Dense module), if the model has one. */
  private dense: DenseHead | undefined;

  private constructor(
    handle: NativeEncoder,
    private readonly files: ModelDirectory,
    private readonly tokenizer: TextTokenizer,
    /** Width of token vectors (the model's hidden size). */
    readonly tokenDimension: number,
    /** The device the model runs on, e.g. 'cpu' or 'cuda:0'. */
    readonly device: string,
    readonly dtype: DType,
  ) {
    this.handle = handle;
    this.dense = files.dense;
  }

  /** Width of pooled vectors: the projection head's output, or the hidden size without a head. */
  get dimension(): number {
    return this.dense?.outFeatures ?? this.tokenDimension;
  }
  /** The projection head's shape and activation, if the model has one. */
  get projection(): { inFeatures: number; outFeatures: number; activation: 'identity' | 'tanh' } | undefined {
    return this.dense && { inFeatures: this.dense.inFeatures, outFeatures: this.dense.outFeatures, activation: this.dense.activation };
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
  static async load(model: string, options?: LoadOptions): Promise<Encoder> {
    const o = checkOptions('options', options, LOAD_KEYS);
    if (typeof model !== 'string' || model.length === 0) throw invalid('model', 'a folder path or a Hugging Face id', model);
    const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
    if (o.threads !== undefined || !threadsApplied) setThreads(o.threads);
    const device = resolveDevice(o.device ?? 'auto');
    if (device === 'cpu' && dtype === 'float16') {
      // libtorch's CPU float16 matrix products are slow reference loops; bfloat16 ones use oneDNN.
      throw new ColtrastError('INVALID_ARGUMENT', `options.dtype 'float16' needs a CUDA device; on the CPU use 'float32' or 'bfloat16'`);
    }
    const dir = await resolveModelDir(model, {
      cacheDir: o.cacheDir,
      revision: o.revision,
      endpoint: o.endpoint,
      offline: o.offline,
      token: o.token,
      onProgress: o.onDownloadProgress,
    });
    const files = readModelDirectory(dir);
    const tokenizer = TextTokenizer.load(files.tokenizerPath, files.maxSeqLength, files.lowercase);
    let handle: NativeEncoder;
    try {
      handle = await native().NativeEncoder.load({
        weightsPath: files.weightsPath,
        config: files.configText,
        device,
        dtype,
        denseWeightsPath: files.dense?.weightsPath,
        denseActivation: files.dense?.activation,
      });
    } catch (error) {
      throw fromNative(error);
    }
    const info = handle.info();
    if (files.dense && (files.dense.inFeatures !== info.hiddenSize || files.dense.outFeatures !== info.outputSize)) {
      handle.dispose();
      throw new ColtrastError(
        'MODEL_FILES',
        `the Dense module of ${dir} says in_features ${files.dense.inFeatures} → out_features ${files.dense.outFeatures}, but its ` +
          `weights map ${info.hiddenSize} → ${info.outputSize} (the model's hidden size is ${info.hiddenSize})`,
      );
    }
    return new Encoder(handle, files, tokenizer, info.hiddenSize, info.device, dtype);
  }

  /** Runs `work` with the native model, keeping it alive until `work` settles even if dispose() comes first. */
  private async withModel<T>(work: (handle: NativeEncoder) => Promise<T>): Promise<T> {
    if (this.disposed || !this.handle) throw new ColtrastError('DISPOSED', 'this Encoder was disposed; load the model again');
    const handle = this.handle;
    this.inFlight++;
    try {
      return await work(handle);
    } finally {
      if (--this.inFlight === 0 && this.disposed) this.release();
    }
  }

  private release(): void {
    this.handle?.dispose();
    this.handle = null;
  }

  /**
   * @internal Optimizer state bound to this model, for lib/train.ts: each `step` tokenizes the queries and
   * documents, then runs forward, loss, backward and the AdamW update natively; the weights this Encoder
   * embeds and saves change in place.
   */
  async createTrainer(options: NativeTrainerOptions): Promise<EncoderTrainer> {
    if (this.disposed || !this.handle) throw new ColtrastError('DISPOSED', 'this Encoder was disposed; load the model again');
    let trainer: NativeTrainer;
    try {
      trainer = native().NativeTrainer.create(this.handle, options);
    } catch (error) {
      throw fromNative(error);
    }
    const prepare = async (queries: string[], documents: string[]): Promise<PreparedBatch> => {
      const started = performance.now();
      const [q, d] = await Promise.all([this.tokenizer.encode(queries), this.tokenizer.encode(documents)]);
      return { queries: padBatch(q), documents: padBatch(d), tokenizeSeconds: (performance.now() - started) / 1000 };
    };
    const run = async (kind: 'step' | 'evaluate', batch: PreparedBatch, stepOptions: NativeStepOptions) =>
      this.withModel(async () => {
        const { queries, documents, tokenizeSeconds } = batch;
        try {
          const result = await trainer[kind]({ queries, documents, pooling: this.files.pooling, ...stepOptions });
          return { ...result, tokenizeSeconds };
        } catch (error) {
          throw fromNative(error);
        }
      });
    const state = (kind: 'saveState' | 'loadState', file: string) =>
      this.withModel(async () => {
        try {
          await trainer[kind](file);
        } catch (error) {
          throw fromNative(error);
        }
      });
    return {
      step: async (queries, documents, stepOptions) => run('step', await prepare(queries, documents), stepOptions),
      evaluate: async (queries, documents, stepOptions) => run('evaluate', await prepare(queries, documents), stepOptions),
      prepare,
      stepPrepared: (batch, stepOptions) => run('step', batch, stepOptions),
      saveState: (file) => state('saveState', file),
      loadState: (file) => state('loadState', file),
      dispose: () => trainer.dispose(),
    };
  }

  /**
   * @internal Gives a model without one a new projection head (a Dense module, PyTorch's nn.Linear
   * initialization from `seed`), for train({ projection }); it is trained with the model and saved with it.
   */
  async addProjectionHead(outFeatures: number, activation: 'identity' | 'tanh', seed: number): Promise<void> {
    if (this.disposed || !this.handle) throw new ColtrastError('DISPOSED', 'this Encoder was disposed; load the model again');
    if (this.dense) throw new ColtrastError('INVALID_ARGUMENT', `${this.files.dir} already has a projection head (a Dense module); drop the projection option`);
    const handle = this.handle;
    await this.withModel(async () => {
      try {
        await handle.addProjection({ outFeatures, tanh: activation === 'tanh', seed });
      } catch (error) {
        throw fromNative(error);
      }
    });
    this.dense = { inFeatures: this.tokenDimension, outFeatures, bias: true, activation };
  }

  /** The token ids `embed()` feeds the model for each text (special tokens included, truncated). */
  async tokenize(texts: string[]): Promise<number[][]> {
    if (this.disposed) throw new ColtrastError('DISPOSED', 'this Encoder was disposed; load the model again');
    checkTexts(texts);
    return (await this.tokenizer.encode(texts)).map((t) => t.ids);
  }

  /** One vector per text: `{ dims: [texts.length, dimension], data }`. */
  embed(texts: string[], options?: EmbedOptions & { output?: 'pooled' }): Promise<Matrix>;
  /** The states of each text's tokens (special tokens included): one `{ dims: [tokens, dimension], data }` per text. */
  embed(texts: string[], options: EmbedOptions & { output: 'tokens' }): Promise<Matrix[]>;
  async embed(texts: string[], options?: EmbedOptions): Promise<Matrix | Matrix[]> {
    return this.withModel((handle) => this.embedWith(handle, texts, options));
  }

  private async embedWith(handle: NativeEncoder, texts: string[], options?: EmbedOptions): Promise<Matrix | Matrix[]> {
    const o = checkOptions('options', options, EMBED_KEYS);
    checkTexts(texts);
    const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
    const output = oneOf('options.output', o.output ?? 'pooled', ['pooled', 'tokens'] as const);
    const pooling = oneOf('options.pooling', o.pooling ?? this.files.pooling, POOLING_MODES);
    const normalize = booleanValue('options.normalize', o.normalize ?? (output === 'pooled' ? this.files.normalize : false));
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
      throw invalid('options.onProgress', 'a function', o.onProgress);
    }

    const tokenized = await this.tokenizer.encode(texts);
    // Longest first: similar lengths share a batch, and a too-large batch fails at once, not at the end.
    const order = tokenized.map((_, i) => i).sort((a, b) => tokenized[b].ids.length - tokenized[a].ids.length);
    const dim = output === 'pooled' ? this.dimension : this.tokenDimension;
    const pooled = new Float32Array(output === 'pooled' ? texts.length * dim : 0);
    const tokens: Matrix[] = new Array(output === 'tokens' ? texts.length : 0);
    o.onProgress?.(0, order.length); // the start, so that a progress bar's rate counts the first batch
    // Two batches in flight: the next one is queued while this one runs, so the model (a GPU above all)
    // starts it as soon as this one's forward is done instead of idling while the result travels back to
    // JavaScript and the next batch is padded. The native side runs one forward at a time per model.
    const submit = (start: number) => {
      const rows = order.slice(start, start + batchSize);
      const promise = handle.embed({ ...padBatch(rows.map((i) => tokenized[i])), output, pooling, normalize });
      promise.catch(() => {}); // rejections are handled where it is awaited; this one may fail first
      return { rows, promise };
    };
    let next = order.length > 0 ? submit(0) : undefined;
    for (let start = 0; start < order.length; start += batchSize) {
      const { rows, promise } = next!;
      next = start + batchSize < order.length ? submit(start + batchSize) : undefined;
      let result: Float32Array;
      try {
        result = await promise;
      } catch (error) {
        await next?.promise.catch(() => {}); // settled before this call ends (dispose() waits for calls)
        throw fromNative(error);
      }
      let offset = 0;
      rows.forEach((textIndex, r) => {
        if (output === 'pooled') {
          pooled.set(result.subarray(r * dim, (r + 1) * dim), textIndex * dim);
        } else {
          const n = tokenized[textIndex].ids.length;
          tokens[textIndex] = { dims: [n, dim], data: result.slice(offset, offset + n * dim) };
          offset += n * dim;
        }
      });
      o.onProgress?.(Math.min(start + batchSize, order.length), order.length);
    }
    return output === 'pooled' ? { dims: [texts.length, dim], data: pooled } : tokens;
  }

  /**
   * Writes the model as a sentence-transformers directory (config.json, model.safetensors, tokenizer
   * files, modules.json, pooling/normalize configs) that `Encoder.load` and Python's
   * sentence-transformers both load. The folder appears complete or not at all.
   */
  async save(dir: string, options?: SaveOptions): Promise<void> {
    return this.withModel((handle) => this.saveWith(handle, dir, options));
  }

  private async saveWith(handle: NativeEncoder, dir: string, options?: SaveOptions): Promise<void> {
    const o = checkOptions('options', options, SAVE_KEYS);
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
    const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
    const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
    await writeFolderAtomic(path.resolve(dir), overwrite, async (staging) => {
      writeModelFiles(this.files, staging, {
        pooling: this.files.pooling,
        normalize: this.files.normalize,
        maxSeqLength: this.files.maxSeqLength,
        dimension: this.tokenDimension,
        dense: this.dense,
      });
      try {
        const denseFile = this.dense ? path.join(staging, DENSE_DIR, 'model.safetensors') : undefined;
        await handle.saveWeights(path.join(staging, 'model.safetensors'), dtype, denseFile);
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
    this.disposed = true;
    if (this.inFlight === 0) this.release();
  }
}
