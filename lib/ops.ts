/**
 * coltrast's fused loss operations, callable from JavaScript: MaxSim (late interaction), the in-batch
 * contrastive loss (InfoNCE) and the late-interaction contrastive loss. Training uses the same native
 * functions from C++; this module is for tests, benchmarks and users who want the ops on their own.
 *
 * Tensors are `{ dims, data }`: float32 embeddings in a Float32Array, masks in a Uint8Array (nonzero =
 * valid token). Each call runs off the JS thread, and reads its arrays there (the JS thread copies nothing the
 * size of the inputs or results: 300 MB of documents held the event loop over a second when it did), so a caller
 * must not write to them, or transfer them to another thread, until the promise settles, as with `fs.write`'s
 * buffer. Pass `gradOutput` to also get the input gradients (for a loss, usually 1); without it only the value is
 * computed.
 *
 * Every argument is checked here before native code runs (shapes, typed-array types, option names and
 * values); every failure, here or in native code, is a rejected promise with a ColtrastError
 * (INVALID_ARGUMENT naming the argument, DEVICE for a device this build or machine cannot use).
 */
import { ColtrastError } from './errors';
import { checkGpuArch } from './binary';
import { cudaKernelInfo, loadAddon, fromNative, type NativeOps } from './native';
import { FLOAT32_MAX, FLOAT32_MIN_NORMAL, checkOptions, invalid, oneOf } from './validate';

export interface Tensor<T extends Float32Array | Uint8Array = Float32Array> {
  dims: number[];
  data: T;
}
export type Mask = Tensor<Uint8Array>;

export interface CommonOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** dtype the inputs are cast to before the op (default float32); gradients come back as float32. */
  dtype?: 'float32' | 'float16' | 'bfloat16';
  /**
   * Run the plain eager version (libtorch ops + autograd) instead of the fused one: the baseline for
   * tests and benchmarks. Default: on when the environment has COLTRAST_REFERENCE_OPS=1.
   */
  reference?: boolean;
}

export interface MaxSimOptions extends CommonOptions {
  /** 'all' (default): every query against every document, scores [B, N]. 'paired': query b against document b, [B]. */
  mode?: 'all' | 'paired';
  /** Divide each query's score by its number of valid tokens (default false). */
  normalize?: boolean;
  /** Upstream gradient, shaped like the scores: when given, `grads.q` and `grads.d` are returned. */
  gradOutput?: Float32Array;
}

export interface ContrastiveOptions extends CommonOptions {
  /** Softmax temperature τ > 0 (default 0.05); a float32, from 1.2e-38 to 3.4e38. */
  temperature?: number;
  /** Also return d loss / d τ (default false). */
  learnTemperature?: boolean;
  /**
   * Add the candidates → queries term over the first B candidates and average the two (default false).
   * Late interaction: only with kind 'cross_entropy'.
   */
  symmetric?: boolean;
  /** Upstream gradient of the loss: when given, input gradients are returned. */
  gradOutput?: number;
  /**
   * How CUDA computes the contrastive loss (the CPU has one way and ignores it): 'fused' (our kernels do
   * everything; memory beyond the inputs O(B)), 'chunked' (cuBLAS products a chunk of query rows at a time,
   * our kernels for the rest; memory beyond the inputs one chunk of float32 logits, at most 256 MiB unless
   * 512 rows need more) or 'auto' (default: the COLTRAST_CONTRASTIVE_STRATEGY environment variable, else
   * 'chunked' for float16/bfloat16 where libtorch has it and 'fused' otherwise). 'chunked' with
   * float16/bfloat16 needs libtorch >= 2.8.
   */
  strategy?: 'auto' | 'fused' | 'chunked';
  /** 'chunked' only: query rows per chunk (default: automatic); tests force several chunks with it. */
  chunkRows?: number;
}

export interface LateInteractionOptions extends Omit<ContrastiveOptions, 'strategy' | 'chunkRows'> {
  /** 'cross_entropy' (default; ColBERT/PyLate) or 'bce' (pairwise, the ColTrast write-up). */
  kind?: 'cross_entropy' | 'bce';
  /** Divide MaxSim scores by the query's token count (default true). */
  normalize?: boolean;
}

export interface OpResult {
  /** Scores (MaxSim) or a one-element loss. */
  value: Float32Array;
  /** Present when `gradOutput` was given: one gradient per float input, and τ's when learnTemperature. */
  grads?: { q: Float32Array; d?: Float32Array; c?: Float32Array; temperature?: number };
  /**
   * Milliseconds of the operation itself: forward, and backward when `gradOutput` was given, with the device
   * synchronized before and after; the copies from and to JS are outside it. For benchmarks.
   */
  computeMs: number;
}

const COMMON = ['device', 'dtype', 'reference'] as const;
const MAXSIM_KEYS = [...COMMON, 'mode', 'normalize', 'gradOutput'] as const;
const LOSS_KEYS = [...COMMON, 'temperature', 'learnTemperature', 'symmetric', 'gradOutput'] as const;
const CONTRASTIVE_KEYS = [...LOSS_KEYS, 'strategy', 'chunkRows'] as const;
const LATE_KEYS = [...LOSS_KEYS, 'kind', 'normalize'] as const;

/** Checks a tensor argument: the typed array, integer dims of the right rank, and a matching length. */
function tensor(name: string, value: unknown, rank: number, kind: 'float' | 'mask', layout: string): number[] {
  const t = value as Tensor<Float32Array | Uint8Array> | undefined;
  if (!t || typeof t !== 'object' || !Array.isArray(t.dims)) throw invalid(name, `{ dims: ${layout}, data }`, value);
  if (t.dims.length !== rank || !t.dims.every((d) => Number.isInteger(d) && d > 0)) {
    throw new ColtrastError('INVALID_ARGUMENT', `${name}.dims must be ${layout} with positive integers; got [${t.dims.join(', ')}]`);
  }
  const type = kind === 'float' ? Float32Array : Uint8Array;
  if (!(t.data instanceof type)) throw invalid(`${name}.data`, `a ${type.name}`, t.data);
  const size = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== size) {
    // A view of a buffer transferred to another thread (postMessage, structuredClone) has no elements left, and Node 20
    // cannot tell it from an empty one (ArrayBuffer.prototype.detached is Node 22's).
    const empty = t.data.length === 0 && t.data.buffer.byteLength === 0 ? ' (its buffer is empty: if it was transferred to another thread, pass a copy, or transfer it after the promise settles)' : '';
    throw new ColtrastError('INVALID_ARGUMENT', `${name}.data has ${t.data.length} elements but dims [${t.dims.join(', ')}] need ${size}${empty}`);
  }
  return t.dims;
}

function sameDims(what: string, got: number[], expected: number[]): void {
  if (got.length !== expected.length || got.some((d, i) => d !== expected[i])) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what} must be [${expected.join(', ')}]; got [${got.join(', ')}]`);
  }
}

function common(o: CommonOptions): void {
  if (o.dtype !== undefined) oneOf('options.dtype', o.dtype, ['float32', 'float16', 'bfloat16'] as const);
  if (o.device !== undefined && (typeof o.device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(o.device))) {
    throw invalid('options.device', "'cpu', 'cuda' or 'cuda:N'", o.device);
  }
  if (o.device !== undefined && o.device !== 'cpu') checkGpuArch(o.device === 'cuda' ? 'cuda:0' : o.device, cudaKernelInfo());
  if (o.reference !== undefined && typeof o.reference !== 'boolean') throw invalid('options.reference', 'true or false', o.reference);
}

function lossOptions(o: ContrastiveOptions): void {
  common(o);
  const t = o.temperature ?? 0.05;
  // The ops take τ as a float32: past its largest value it overflows there (an error that did not name τ), and
  // below its smallest normal one it rounds to 0 or 1/τ overflows (NaN losses and gradients).
  if (typeof t !== 'number' || !(t >= FLOAT32_MIN_NORMAL && t <= FLOAT32_MAX)) {
    throw invalid('options.temperature', 'a number > 0 that float32 holds (from 1.2e-38 to 3.4e38)', t);
  }
  for (const key of ['learnTemperature', 'symmetric'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') throw invalid(`options.${key}`, 'true or false', o[key]);
  }
  if (o.gradOutput !== undefined && (typeof o.gradOutput !== 'number' || !Number.isFinite(o.gradOutput))) {
    throw invalid('options.gradOutput', 'a finite number', o.gradOutput);
  }
}

function maskedInputs(q: Tensor, qmask: Mask, d: Tensor, dmask: Mask) {
  const [B, Lq, dim] = tensor('q', q, 3, 'float', '[B, Lq, dim]');
  const [N, Ld, dDim] = tensor('d', d, 3, 'float', '[N, Ld, dim]');
  if (dDim !== dim) throw new ColtrastError('INVALID_ARGUMENT', `q and d must have the same dim; got ${dim} and ${dDim}`);
  sameDims('qmask.dims', tensor('qmask', qmask, 2, 'mask', '[B, Lq]'), [B, Lq]);
  sameDims('dmask.dims', tensor('dmask', dmask, 2, 'mask', '[N, Ld]'), [N, Ld]);
  return { B, N };
}

async function call(name: keyof NativeOps, args: Record<string, unknown>): Promise<OpResult> {
  try {
    return await (await loadAddon()).ops[name](args);
  } catch (error) {
    throw fromNative(error);
  }
}

/**
 * Token-vector matrices of different lengths (`[tokens, dim]` each, as `embed({ output: 'tokens' })` returns
 * them) as one right-padded `[rows, L, dim]` tensor and its mask, the layout maxsim() takes.
 */
export function padTokens(rows: { dims: number[]; data: Float32Array }[], dim: number): { tokens: Tensor; mask: Mask } {
  const L = Math.max(1, ...rows.map((m) => m.dims[0]));
  const data = new Float32Array(rows.length * L * dim);
  const mask = new Uint8Array(rows.length * L);
  rows.forEach((m, i) => {
    data.set(m.data, i * L * dim);
    mask.fill(1, i * L, i * L + m.dims[0]);
  });
  return { tokens: { dims: [rows.length, L, dim], data }, mask: { dims: [rows.length, L], data: mask } };
}

/**
 * MaxSim (ColBERT late interaction): `S[b, n] = Σ_i qmask[b,i] · max_{j: dmask[n,j]} <q[b,i], d[n,j]>`.
 * A query token facing a document with no valid token contributes 0 and gets no gradient.
 * q: [B, Lq, dim], qmask: [B, Lq], d: [N, Ld, dim], dmask: [N, Ld].
 */
export async function maxsim(q: Tensor, qmask: Mask, d: Tensor, dmask: Mask, options?: MaxSimOptions): Promise<OpResult> {
  const o = checkOptions('options', options, MAXSIM_KEYS);
  common(o);
  const { B, N } = maskedInputs(q, qmask, d, dmask);
  const mode = oneOf('options.mode', o.mode ?? 'all', ['all', 'paired'] as const);
  if (mode === 'paired' && B !== N) {
    throw new ColtrastError('INVALID_ARGUMENT', `mode 'paired' needs as many documents as queries; got B = ${B}, N = ${N}`);
  }
  if (o.normalize !== undefined && typeof o.normalize !== 'boolean') throw invalid('options.normalize', 'true or false', o.normalize);
  if (o.gradOutput !== undefined) {
    const size = mode === 'all' ? B * N : B;
    if (!(o.gradOutput instanceof Float32Array) || o.gradOutput.length !== size) {
      throw invalid('options.gradOutput', `a Float32Array of ${size} elements (the scores' shape)`, o.gradOutput);
    }
  }
  return call('maxsim', { q, qmask, d, dmask, ...o, mode });
}

/**
 * In-batch contrastive loss (InfoNCE): `mean_i CE(q_i · cᵀ / τ, i)`. q: [B, dim], c: [N, dim] with N ≥ B;
 * candidate i is query i's positive, candidates B.. are extra negatives shared by the batch.
 */
export async function contrastiveLoss(q: Tensor, c: Tensor, options?: ContrastiveOptions): Promise<OpResult> {
  const o = checkOptions('options', options, CONTRASTIVE_KEYS);
  lossOptions(o);
  if (o.strategy !== undefined) oneOf('options.strategy', o.strategy, ['auto', 'fused', 'chunked'] as const);
  if (o.chunkRows !== undefined && !(Number.isInteger(o.chunkRows) && o.chunkRows > 0)) {
    throw invalid('options.chunkRows', 'a positive integer', o.chunkRows);
  }
  const [B, dim] = tensor('q', q, 2, 'float', '[B, dim]');
  const [N, cDim] = tensor('c', c, 2, 'float', '[N, dim]');
  if (cDim !== dim) throw new ColtrastError('INVALID_ARGUMENT', `q and c must have the same dim; got ${dim} and ${cDim}`);
  if (N < B) throw new ColtrastError('INVALID_ARGUMENT', `c needs at least B = ${B} rows (the positives come first); got ${N}`);
  return call('contrastiveLoss', { q, c, ...o, temperature: o.temperature ?? 0.05 });
}

/**
 * Late-interaction contrastive loss over MaxSim `all` scores S [B, N] (normalized by query length
 * unless `normalize: false`): cross-entropy `mean_i CE(S_i / τ, i)` (query i's positive is document i;
 * ColBERT/PyLate), or the pairwise BCE form of the ColTrast write-up: every (query, document) pair is a
 * binary example labelled 1 on the diagonal, and the loss is
 * `(mean over positives + mean over negatives) / 2` of `BCE-with-logits(S / τ, label)`.
 * q: [B, Lq, dim], qmask: [B, Lq], d: [N, Ld, dim], dmask: [N, Ld], N ≥ B.
 */
export async function lateInteractionLoss(q: Tensor, qmask: Mask, d: Tensor, dmask: Mask, options?: LateInteractionOptions): Promise<OpResult> {
  const o = checkOptions('options', options, LATE_KEYS);
  lossOptions(o);
  const { B, N } = maskedInputs(q, qmask, d, dmask);
  if (N < B) throw new ColtrastError('INVALID_ARGUMENT', `d needs at least B = ${B} documents (the positives come first); got ${N}`);
  const kind = oneOf('options.kind', o.kind ?? 'cross_entropy', ['cross_entropy', 'bce'] as const);
  if (kind === 'bce' && o.symmetric) {
    // Pairwise BCE scores every (query, document) pair on its own: there is no direction to symmetrize.
    throw new ColtrastError('INVALID_ARGUMENT', "options.symmetric applies to kind 'cross_entropy' only; the pairwise 'bce' loss has no direction");
  }
  if (o.normalize !== undefined && typeof o.normalize !== 'boolean') throw invalid('options.normalize', 'true or false', o.normalize);
  return call('lateInteractionLoss', { q, qmask, d, dmask, ...o, temperature: o.temperature ?? 0.05 });
}
