/**
 * What `Encoder` and `CrossEncoder` share: the load options (device, dtype, threads, hub), the process-wide
 * thread setting, and the lifetime of the native model behind them.
 */
import { ColtrastError } from './errors';
import { resolveModelDir, type ResolveOptions } from './hub';
import { checkGpuArch } from './binary';
import { cudaKernelInfo, fromNative, loadAddon, native, type NativeBinding, type NativeEncoder, type NativeStepOptions, type NativeStepResult, type NativeTrainer, type NativeTrainerOptions } from './native';
import { longestFirst } from './tokenizer';
import { checkOptions, invalid, oneOf, positiveInteger } from './validate';

export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export type DType = 'float32' | 'float16' | 'bfloat16';
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

export interface LoadOptions extends Pick<ResolveOptions, 'cacheDir' | 'revision' | 'endpoint' | 'offline' | 'token'> {
  /** 'auto' (default) picks the first GPU when this libtorch has CUDA and one is visible, else the CPU. */
  device?: Device;
  /** float32 (default). float16 and bfloat16 are for CUDA devices. */
  dtype?: DType;
  /** Intra-op CPU threads for all of coltrast's native work in this process (default: OMP_NUM_THREADS when set, else every core). */
  threads?: number;
  /** Download progress, when `model` is a Hugging Face id that is not cached yet. */
  onDownloadProgress?: ResolveOptions['onProgress'];
}

const LOAD_KEYS = ['device', 'dtype', 'threads', 'cacheDir', 'revision', 'endpoint', 'offline', 'token', 'onDownloadProgress'] as const;

let threadsApplied = false;

/** The most intra-op threads native/runtime.cc's setNumThreads takes. */
const MAX_THREADS = 65536;

/**
 * Applies a thread count for the whole process; without one, the default (the first load applies it):
 * OMP_NUM_THREADS when it is a positive integer, as PyTorch takes it, else every core.
 */
export function setThreads(threads?: number): void {
  // 0 asks the addon for its default (native/runtime.cc: defaultThreads), which ops called before any load use too.
  const n = threads === undefined ? 0 : positiveInteger('threads', threads);
  if (n > MAX_THREADS) throw invalid('threads', `a positive integer up to ${MAX_THREADS}`, threads);
  native().setNumThreads(n);
  threadsApplied = true;
}

function resolveDevice(device: Device): string {
  const resolved = device === 'auto' ? (native().runtimeInfo().cudaAvailable ? 'cuda:0' : 'cpu') : device === 'cuda' ? 'cuda:0' : device;
  if (resolved !== 'cpu' && !/^cuda:\d+$/.test(resolved)) throw invalid('options.device', "'auto', 'cpu', 'cuda' or 'cuda:N'", device);
  if (resolved !== 'cpu') checkGpuArch(resolved, cudaKernelInfo());
  return resolved;
}

/** How a model's projections may run instead of in its dtype (EncoderLoadOptions.quantize, CrossEncoderLoadOptions.quantize). */
export type Quantize = 'int8';

/** @internal The `quantize` load option checked (undefined: none), before anything loads. */
export function quantizeOption(value: unknown): Quantize | undefined {
  return value === undefined ? undefined : oneOf('options.quantize', value, ['int8'] as const);
}

/** @internal Refuses `quantize` for another device or dtype than float32 on the CPU (resolveLoad's), before the model loads. */
export function checkQuantize(quantize: Quantize | undefined, device: string, dtype: DType): void {
  if (quantize !== undefined && (device !== 'cpu' || dtype !== 'float32')) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.quantize '${quantize}' is for float32 models on the CPU (this load: device '${device}', dtype '${dtype}'): pass device 'cpu' and dtype 'float32', or leave quantize out (on a GPU, dtype 'bfloat16' or 'float16' is the fast form)`);
  }
}

/**
 * @internal Quantizes the loaded model's projections (native quantizeInt8) when `quantize` asks, unless they were as
 * they loaded (loadNative's quantizeInt8, which loaders pass where no adapter comes after), recording it on the handle;
 * when that fails, `dispose` (where given) frees the model (its owner's dispose()) before the error is thrown.
 */
export async function applyQuantize(handle: ModelHandle, quantize: Quantize | undefined, dispose?: () => void): Promise<void> {
  if (quantize === undefined) return;
  try {
    if (!handle.current().info().quantizedInt8) await handle.current().quantizeInt8();
  } catch (error) {
    dispose?.();
    throw fromNative(error);
  }
  handle.quantized = quantize;
}

/** @internal Checks load options, applies the thread setting, and finds the model's folder (downloading a hub id). */
export async function resolveLoad(model: string, options: LoadOptions | undefined): Promise<{ dir: string; device: string; dtype: DType }> {
  const o = checkOptions('options', options, LOAD_KEYS);
  if (typeof model !== 'string' || model.length === 0) throw invalid('model', 'a folder path or a Hugging Face id', model);
  const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
  await loadAddon(); // the first load off the event loop; setThreads' native() then finds it
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
  return { dir, device, dtype };
}

/**
 * Model types whose activations overflow float16 (Gemma 3's reach past its 65,504): transformers and
 * sentence-transformers warn that EmbeddingGemma does not support it, so coltrast refuses it rather than compute infinities.
 */
const NO_FLOAT16 = ['gemma3_text', 'gemma2', 'gemma'];

/** @internal Throws for float16 (`what`: the option that asked for it) on a model type that overflows it. */
export function checkFloat16(modelType: unknown, precision: string, what: string): void {
  if (precision === 'float16' && NO_FLOAT16.includes(String(modelType))) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what} 'float16': a ${String(modelType)} model's activations overflow float16; use 'bfloat16' or 'float32'`);
  }
}

/** @internal Loads a model folder's weights natively (off the JS thread); `extra`: its heads. */
export async function loadNative(
  files: { weightsPath: string; weightShards?: string[]; configText: string; config: Record<string, unknown> },
  device: string,
  dtype: DType,
  extra: Omit<Parameters<NativeBinding['NativeEncoder']['load']>[0], 'weightsPath' | 'weightShards' | 'config' | 'device' | 'dtype'>,
): Promise<NativeEncoder> {
  checkFloat16(files.config.model_type, dtype, 'options.dtype');
  try {
    const shards = files.weightShards && { weightShards: files.weightShards };
    return await native().NativeEncoder.load({ weightsPath: files.weightsPath, ...shards, config: files.configText, device, dtype, ...extra });
  } catch (error) {
    throw fromNative(error);
  }
}

/**
 * @internal The native model behind an Encoder or CrossEncoder. Calls hold it while they run; dispose() frees
 * it when the last of them ends, and calls made afterwards throw DISPOSED.
 */
export class ModelHandle {
  private inFlight = 0;
  private disposed = false;
  /** How the model's projections run when it was loaded with quantize (applyQuantize records it); undefined: in its dtype. */
  quantized: Quantize | undefined;

  constructor(
    private handle: NativeEncoder | null,
    /** 'Encoder' or 'CrossEncoder', for the DISPOSED message. */
    private readonly what: string,
  ) {}

  /** The native model now, for work that does not outlive this call; throws DISPOSED after dispose(). */
  current(): NativeEncoder {
    if (this.disposed || !this.handle) throw new ColtrastError('DISPOSED', `this ${this.what} was disposed; load the model again`);
    return this.handle;
  }

  /** Runs `work` with the native model, keeping it alive until `work` settles even if dispose() comes first. */
  async use<T>(work: (handle: NativeEncoder) => Promise<T>): Promise<T> {
    const handle = this.current();
    this.inFlight++;
    try {
      return await work(handle);
    } finally {
      if (--this.inFlight === 0 && this.disposed) this.release();
    }
  }

  /** Throws INVALID_ARGUMENT for a quantized model, whose float weights are gone (before save() writes anything). */
  checkSavable(): void {
    if (this.quantized !== undefined) {
      throw new ColtrastError('INVALID_ARGUMENT', `this ${this.what} was loaded with quantize: '${this.quantized}', which keeps only its int8 projections: load the model without quantize to save it`);
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.inFlight === 0) this.release();
  }

  private release(): void {
    this.handle?.dispose();
    this.handle = null;
  }
}

/**
 * @internal Runs `count` rows in batches of `batchSize` through `run` (rows start..end), handing each result to
 * `take` in order. Two batches are in flight: the next one is queued while this one runs, so the model (a GPU
 * above all) starts it as soon as this one's forward is done instead of idling while the result travels back
 * to JavaScript and the next batch is padded. The native side runs one forward at a time per model.
 */
export async function inBatches<R>(
  count: number,
  batchSize: number,
  run: (start: number, end: number) => Promise<R>,
  take: (result: R, start: number, end: number) => void,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  onProgress?.(0, count); // the start, so that a progress bar's rate counts the first batch
  const submit = (start: number) => {
    const promise = run(start, Math.min(start + batchSize, count));
    promise.catch(() => {}); // rejections are handled where it is awaited; this one may fail first
    return promise;
  };
  let next = count > 0 ? submit(0) : undefined;
  for (let start = 0; start < count; start += batchSize) {
    const current = next!;
    next = start + batchSize < count ? submit(start + batchSize) : undefined;
    let result: R;
    try {
      result = await current;
    } catch (error) {
      await next?.catch(() => {}); // settled before this call ends (dispose() waits for calls)
      throw fromNative(error);
    }
    const end = Math.min(start + batchSize, count);
    take(result, start, end);
    onProgress?.(end, count);
  }
}

/**
 * @internal inBatches for `count` texts that still need tokenizing, ordered by token count, longest first (ties in
 * input order), so a batch's texts have similar lengths. Without `ahead`, the whole input is tokenized before the
 * first batch, and ordered exactly as longestFirst orders it. With `ahead` (a model on a GPU, whose CPU cores are
 * free while it runs), the texts go in chunks of TOKENIZE_CHUNK (rounded up to whole batches), longest in characters
 * first, ordered by token count within each chunk, and each chunk is tokenized while the batches of the chunk before
 * it run, so the model waits for one chunk's tokenization instead of the whole input's. On the CPU the tokenizer's
 * threads would compete with the model's for the cores (BENCHMARKS.md, "Tokenizing while the model runs").
 * `tokenize` gets input indices and returns their items in that order; `run` gets a batch of items; `take` gets its
 * result with the batch's input indices and items.
 */
export async function tokenizeInBatches<T extends { ids: number[] }, R>(
  count: number,
  batchSize: number,
  ahead: boolean,
  characters: (index: number) => number,
  tokenize: (indices: number[]) => Promise<T[]>,
  run: (items: T[]) => Promise<R>,
  take: (result: R, indices: number[], items: T[]) => void,
  onProgress?: (done: number, total: number) => void,
  abort?: { signal: AbortSignal | undefined; call: string },
): Promise<void> {
  // An abort is looked at before each batch: the batch under way finishes. A tokenizing under way is left at the abort
  // (`tokenize` gets the signal too: what it has not sent to the tokenizer, a huge text waiting its turn on the long
  // lane, never is), the call rejecting then rather than once the texts ahead of it are tokenized.
  let taken = 0; // inputs whose batches are done
  const aborted = (cause?: unknown) => new ColtrastError('ABORTED', `${abort!.call} was aborted (options.signal) after ${taken} of ${count} inputs`, cause === undefined ? undefined : { cause });
  const stopIfAborted = () => {
    if (abort?.signal?.aborted) throw aborted();
  };
  const untilAborted = <X>(work: Promise<X>): Promise<X> => {
    const signal = abort?.signal;
    if (!signal) return work;
    work.catch(() => {}); // its outcome once the call has rejected for the abort is nobody's
    return new Promise<X>((resolve, reject) => {
      const onAbort = () => reject(aborted(signal.reason));
      signal.addEventListener('abort', onAbort, { once: true });
      work
        .then(resolve, (error: unknown) => reject(signal.aborted && error instanceof ColtrastError && error.code === 'ABORTED' ? aborted(error) : error))
        .finally(() => signal.removeEventListener('abort', onAbort));
    });
  };
  stopIfAborted();
  const chunkSize = ahead ? batchSize * Math.max(1, Math.ceil(TOKENIZE_CHUNK / batchSize)) : Math.max(count, 1);
  const chunkCount = Math.ceil(count / chunkSize);
  const inputOrder = Array.from({ length: count }, (_, i) => i);
  const byCharacters = chunkCount > 1 ? inputOrder.slice().sort((a, b) => characters(b) - characters(a) || a - b) : inputOrder;
  // A chunk's tokenization, and its result once there; both dropped (null) after the chunk's last batch.
  const chunks: (Promise<{ indices: number[]; items: T[] }> | null)[] = [];
  const ready: ({ indices: number[]; items: T[] } | null)[] = [];
  let tokenizeError: { error: unknown } | undefined;
  const chunk = (c: number) => {
    if (chunks[c] === undefined) {
      // In input order, so that longestFirst (a stable sort) leaves ties in input order.
      const inputs = chunkCount > 1 ? byCharacters.slice(c * chunkSize, (c + 1) * chunkSize).sort((a, b) => a - b) : byCharacters;
      chunks[c] = untilAborted(tokenize(inputs)).then(
        (items) => {
          const order = longestFirst(items);
          return (ready[c] = { indices: order.map((k) => inputs[k]), items: order.map((k) => items[k]) });
        },
        (error: unknown) => {
          tokenizeError ??= { error };
          throw error;
        },
      );
      chunks[c]!.catch(() => {}); // awaited by the chunk's first batch; a chunk tokenized ahead may never be
    }
    return chunks[c]!;
  };
  // The whole input's tokens before anything runs: a tokenizer's error comes before any batch, as thrown.
  if (chunkCount === 1) await chunk(0);
  const batch = async (start: number, end: number) => {
    stopIfAborted();
    const c = Math.floor(start / chunkSize);
    const current = chunk(c);
    if (c + 1 < chunkCount) chunk(c + 1); // tokenized while this chunk's batches run
    const { items } = await current;
    return run(items.slice(start - c * chunkSize, end - c * chunkSize));
  };
  try {
    await inBatches(count, batchSize, batch, (result, start, end) => {
      const c = Math.floor(start / chunkSize);
      const { indices, items } = ready[c]!;
      const [from, to] = [start - c * chunkSize, end - c * chunkSize];
      take(result, indices.slice(from, to), items.slice(from, to));
      taken = end;
      if (to === items.length) chunks[c] = ready[c] = null; // its batches are all done
    }, onProgress);
  } catch (error) {
    // A tokenizer's error as it was thrown, not as a native one (inBatches' fromNative wraps what is not a ColtrastError).
    if (tokenizeError && (error === tokenizeError.error || (error as { cause?: unknown }).cause === tokenizeError.error)) throw tokenizeError.error;
    throw error;
  }
}

/**
 * @internal Whether embed() and predict() tokenize their texts in chunks, each while the one before it runs
 * (tokenizeInBatches): on a GPU, whose CPU cores are free meanwhile, and not on the CPU, where the tokenizer's threads
 * would compete with the model's; COLTRAST_TOKENIZE_AHEAD=1 or 0 decides instead (1 can suit a CPU model given fewer
 * threads than there are cores).
 */
export function tokenizeAhead(device: string): boolean {
  const setting = process.env.COLTRAST_TOKENIZE_AHEAD;
  return setting === undefined || setting === '' ? device !== 'cpu' : setting !== '0';
}

/** @internal Texts per chunk of tokenizeInBatches with `ahead` (rounded up to whole batches). */
export const TOKENIZE_CHUNK = 512;

/** @internal A trainer step's result: the native step's, and the time spent tokenizing its texts (seconds). */
export type TrainerStepResult = NativeStepResult & { tokenizeSeconds: number };

/**
 * @internal Optimizer state bound to a model, for lib/train.ts: each step tokenizes a batch of queries and their
 * documents (`prepare`, which train() runs for the next batch while a step runs), then runs forward, loss,
 * backward and the AdamW update natively; the model's weights change in place.
 */
export interface ModelTrainer<P extends { tokenizeSeconds: number }> {
  step(queries: string[], documents: string[], options: NativeStepOptions): Promise<TrainerStepResult>;
  evaluate(queries: string[], documents: string[], options: NativeStepOptions): Promise<TrainerStepResult>;
  prepare(queries: string[], documents: string[]): Promise<P>;
  stepPrepared(batch: P, options: NativeStepOptions): Promise<TrainerStepResult>;
  evaluatePrepared(batch: P, options: NativeStepOptions): Promise<TrainerStepResult>;
  /** Optimizer moments and random-number state, to and from a safetensors file. */
  saveState(file: string): Promise<void>;
  loadState(file: string): Promise<void>;
  /** Frees the optimizer state now (the model stays with its owner). */
  dispose(): void;
}

/**
 * @internal A ModelTrainer: a native trainer (AdamW state) created on `model` with `options`; `args` turns a
 * prepared batch into the native step's arguments.
 */
export function bindTrainer<P extends { tokenizeSeconds: number }>(
  model: ModelHandle,
  options: NativeTrainerOptions,
  prepare: (queries: string[], documents: string[]) => Promise<P>,
  args: (batch: P, options: NativeStepOptions) => Parameters<NativeTrainer['step']>[0],
): ModelTrainer<P> {
  let trainer: NativeTrainer;
  try {
    trainer = native().NativeTrainer.create(model.current(), options);
  } catch (error) {
    throw fromNative(error);
  }
  const run = (kind: 'step' | 'evaluate', batch: P, options: NativeStepOptions) =>
    model.use(async () => {
      try {
        return { ...(await trainer[kind](args(batch, options))), tokenizeSeconds: batch.tokenizeSeconds };
      } catch (error) {
        throw fromNative(error);
      }
    });
  const state = (kind: 'saveState' | 'loadState', file: string) =>
    model.use(async () => {
      try {
        await trainer[kind](file);
      } catch (error) {
        throw fromNative(error);
      }
    });
  return {
    step: async (queries, documents, options) => run('step', await prepare(queries, documents), options),
    evaluate: async (queries, documents, options) => run('evaluate', await prepare(queries, documents), options),
    prepare,
    stepPrepared: (batch, options) => run('step', batch, options),
    evaluatePrepared: (batch, options) => run('evaluate', batch, options),
    saveState: (file) => state('saveState', file),
    loadState: (file) => state('loadState', file),
    dispose: () => trainer.dispose(),
  };
}
