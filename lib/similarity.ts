/**
 * Scores between embeddings as a model defines them: sentence-transformers' `model.similarity()` and
 * `model.similarity_pairwise()`, with the model's similarity_fn_name (cosine, dot, euclidean, manhattan; a multi-vector
 * model's maxsim or meanmaxsim). The products run natively, off the event loop (the MaxSim op with one vector a
 * row is the inner product); distances run in JavaScript in turns.
 */
import { ColtrastError } from './errors';
import { maxsim, padTokens } from './ops';
import { Turns } from './turns';
import { floatMatrix, invalid } from './validate';

export interface ScoreMatrix {
  dims: [number, number];
  data: Float32Array;
}

export type SimilarityFunction = 'cosine' | 'dot' | 'euclidean' | 'manhattan';
export const SIMILARITY_FUNCTIONS: readonly SimilarityFunction[] = ['cosine', 'dot', 'euclidean', 'manhattan'];
export type MultiVectorSimilarity = 'maxsim' | 'meanmaxsim';

/**
 * Floats of each side that one native product call takes at most (4 MiB each). One call over 100,000 768-wide rows
 * held the event loop (a server's other requests, Ctrl-C) about a second on a busy 2-core machine, when the addon
 * still copied its inputs on the main thread (it copies them on its worker now); the blocks also keep each copy of
 * scores into the result, made here on the main thread, to milliseconds.
 */
export const PRODUCT_BLOCK_FLOATS = 1 << 20;

/** `m`'s rows scaled to unit length as torch.nn.functional.normalize does (a zero row stays zero): a copy, made in turns. */
export async function unitRows(m: ScoreMatrix): Promise<ScoreMatrix> {
  const [n, d] = m.dims;
  const data = new Float32Array(n * d);
  const turn = new Turns();
  for (let i = 0; i < n; i++) {
    const from = m.data.subarray(i * d, (i + 1) * d);
    const row = data.subarray(i * d, (i + 1) * d);
    let sum = 0;
    for (let k = 0; k < d; k++) sum += from[k] * from[k];
    const scale = 1 / Math.max(Math.sqrt(sum), 1e-12);
    for (let k = 0; k < d; k++) row[k] = from[k] * scale;
    await turn.maybe();
  }
  return { dims: [n, d], data };
}

/**
 * Every row of `a` against every row of `b`: the inner products, [n, m], computed natively a block of rows of each
 * side at a time (PRODUCT_BLOCK_FLOATS).
 */
async function products(a: ScoreMatrix, b: ScoreMatrix): Promise<Float32Array> {
  const [n, d] = a.dims;
  const m = b.dims[0];
  const out = new Float32Array(n * m);
  if (n === 0 || m === 0 || d === 0) return out;
  const rows = Math.max(1, Math.floor(PRODUCT_BLOCK_FLOATS / d));
  const ones = (count: number) => ({ dims: [count, 1], data: new Uint8Array(count).fill(1) });
  for (let i = 0; i < n; i += rows) {
    const ni = Math.min(rows, n - i);
    const x = { dims: [ni, 1, d], data: a.data.subarray(i * d, (i + ni) * d) };
    for (let j = 0; j < m; j += rows) {
      const mj = Math.min(rows, m - j);
      const r = await maxsim(x, ones(ni), { dims: [mj, 1, d], data: b.data.subarray(j * d, (j + mj) * d) }, ones(mj));
      for (let r0 = 0; r0 < ni; r0++) out.set(r.value.subarray(r0 * mj, (r0 + 1) * mj), (i + r0) * m + j);
    }
  }
  return out;
}

function checkPair(a: unknown, b: unknown): [ScoreMatrix, ScoreMatrix] {
  const x = floatMatrix('a', a, 'embeddings { dims: [rows, dim], data: Float32Array }, as embed() returns them');
  const y = floatMatrix('b', b, 'embeddings { dims: [rows, dim], data: Float32Array }, as embed() returns them');
  if (x.dims[1] !== y.dims[1]) throw new ColtrastError('INVALID_ARGUMENT', `a's vectors have ${x.dims[1]} entries and b's ${y.dims[1]}: compare vectors of one model (and one truncateDim)`);
  return [x, y];
}

/**
 * Every row of `a` against every row of `b` ([n, m] scores, higher is more similar) under `fn`: cosine similarity,
 * the inner product, or the negated Euclidean or Manhattan distance, as sentence-transformers' similarity() gives them.
 */
export async function similarityMatrix(a: ScoreMatrix, b: ScoreMatrix, fn: SimilarityFunction): Promise<ScoreMatrix> {
  const [x, y] = checkPair(a, b);
  const [n, d] = x.dims;
  const m = y.dims[0];
  if (fn === 'cosine') return { dims: [n, m], data: await products(await unitRows(x), await unitRows(y)) };
  if (fn === 'dot') return { dims: [n, m], data: await products(x, y) };
  if (fn !== 'euclidean' && fn !== 'manhattan') throw invalid('similarity function', SIMILARITY_FUNCTIONS.join(', '), fn);
  // Distances element by element, not |x|² + |y|² - 2 x·y from the products: that form loses the small distances
  // (a vector against itself came out 1.5e-4 away, where sentence-transformers' torch.cdist gives 0 at small sizes).
  const out = new Float32Array(n * m);
  const turn = new Turns();
  const l1 = fn === 'manhattan';
  for (let i = 0; i < n; i++) {
    const row = x.data.subarray(i * d, (i + 1) * d);
    for (let j = 0; j < m; j++) {
      let sum = 0;
      for (let k = 0, at = j * d; k < d; k++, at++) {
        const diff = row[k] - y.data[at];
        sum += l1 ? Math.abs(diff) : diff * diff;
      }
      out[i * m + j] = l1 ? -sum : -Math.sqrt(sum);
      // Within the row too: one query against a million documents is a row of seconds.
      if (turn.due) await turn.maybe();
    }
  }
  return { dims: [n, m], data: out };
}

/** Row i of `a` against row i of `b` under `fn` (sentence-transformers' similarity_pairwise()): n scores. */
export async function pairwiseSimilarity(a: ScoreMatrix, b: ScoreMatrix, fn: SimilarityFunction): Promise<Float32Array> {
  const [x, y] = checkPair(a, b);
  if (x.dims[0] !== y.dims[0]) throw new ColtrastError('INVALID_ARGUMENT', `pairwise scores need as many rows in b as in a: a has ${x.dims[0]}, b ${y.dims[0]}`);
  if (!SIMILARITY_FUNCTIONS.includes(fn)) throw invalid('similarity function', SIMILARITY_FUNCTIONS.join(', '), fn);
  const [n, d] = x.dims;
  const [p, q] = fn === 'cosine' ? [await unitRows(x), await unitRows(y)] : [x, y];
  const out = new Float32Array(n);
  const turn = new Turns();
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = i * d; k < (i + 1) * d; k++) {
      const u = p.data[k];
      const v = q.data[k];
      sum += fn === 'manhattan' ? Math.abs(u - v) : fn === 'euclidean' ? (u - v) * (u - v) : u * v;
    }
    out[i] = fn === 'manhattan' ? -sum : fn === 'euclidean' ? -Math.sqrt(sum) : sum;
    await turn.maybe();
  }
  return out;
}

function tokenMatrices(name: string, value: unknown, dim: number | undefined): ScoreMatrix[] {
  const expected = "a multi-vector model's token vectors: an array of { dims: [tokens, dim], data: Float32Array }, as embed() returns them";
  if (!Array.isArray(value)) throw invalid(name, expected, value);
  return value.map((m, i) => {
    const checked = floatMatrix(`${name}[${i}]`, m, expected);
    if (dim !== undefined && checked.dims[1] !== dim) throw new ColtrastError('INVALID_ARGUMENT', `${name}[${i}]'s token vectors have ${checked.dims[1]} entries, the model's ${dim}`);
    return checked;
  });
}

/**
 * A multi-vector model's scores: each query's token vectors (`a`) against each document's (`b`) by MaxSim, divided by
 * the query's token count for 'meanmaxsim'; [n, m], or n paired scores with `paired`.
 */
export async function maxsimScores(a: unknown, b: unknown, fn: MultiVectorSimilarity, dim: number, paired: boolean): Promise<ScoreMatrix> {
  const q = tokenMatrices('a', a, dim);
  const d = tokenMatrices('b', b, dim);
  if (paired && q.length !== d.length) throw new ColtrastError('INVALID_ARGUMENT', `pairwise scores need as many documents in b as queries in a: a has ${q.length}, b ${d.length}`);
  const dims: [number, number] = paired ? [q.length, 1] : [q.length, d.length];
  const out = new Float32Array(dims[0] * dims[1]);
  if (q.length === 0 || d.length === 0) return { dims, data: out };
  const options = { mode: paired ? ('paired' as const) : ('all' as const), normalize: fn === 'meanmaxsim' };
  // A block of rows at a time, as products() works: padTokens' copy and the addon's copy of it are synchronous.
  if (paired) {
    for (const [start, end] of tokenBlocks(q.map((m, i) => Math.max(m.dims[0], d[i].dims[0])), dim)) {
      const qp = padTokens(q.slice(start, end), dim);
      const dp = padTokens(d.slice(start, end), dim);
      out.set((await maxsim(qp.tokens, qp.mask, dp.tokens, dp.mask, options)).value, start);
    }
    return { dims, data: out };
  }
  const docBlocks = tokenBlocks(d.map((m) => m.dims[0]), dim);
  for (const [qs, qe] of tokenBlocks(q.map((m) => m.dims[0]), dim)) {
    const qp = padTokens(q.slice(qs, qe), dim);
    for (const [ds, de] of docBlocks) {
      const dp = padTokens(d.slice(ds, de), dim);
      const value = (await maxsim(qp.tokens, qp.mask, dp.tokens, dp.mask, options)).value;
      const width = de - ds;
      for (let i = 0; i < qe - qs; i++) out.set(value.subarray(i * width, (i + 1) * width), (qs + i) * d.length + ds);
    }
  }
  return { dims, data: out };
}

/**
 * Runs [start, end) of consecutive rows of `lengths` tokens each whose padded copy (rows × the longest × dim) holds at
 * most PRODUCT_BLOCK_FLOATS floats, a row at least.
 */
function tokenBlocks(lengths: number[], dim: number): [number, number][] {
  const blocks: [number, number][] = [];
  let start = 0;
  let longest = 1;
  for (let i = 0; i < lengths.length; i++) {
    const next = Math.max(longest, lengths[i]);
    if (i > start && (i - start + 1) * next * dim > PRODUCT_BLOCK_FLOATS) {
      blocks.push([start, i]);
      start = i;
      longest = Math.max(1, lengths[i]);
    } else longest = next;
  }
  blocks.push([start, lengths.length]);
  return blocks;
}
