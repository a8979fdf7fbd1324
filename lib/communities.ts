/**
 * Near-duplicates and clusters among a set of embeddings, as sentence-transformers' `util.paraphrase_mining_embeddings`
 * and `util.community_detection` find them: by cosine similarity, each row's nearest rows found by the native dense
 * store's search (a float32 store of the unit rows: its inner products are the cosines), a block of rows at a time off
 * the event loop. Written here rather than taken from a library: the npm packages for clustering run k-means or
 * DBSCAN in JavaScript over all pairs, and these two are a nearest-neighbour search and some bookkeeping over it.
 */
import { ColtrastError } from './errors';
import { fromNative } from './native';
import { newStore, rankedHits } from './search-index';
import { unitRows } from './similarity';
import { Turns } from './turns';
import { checkOptions, floatMatrix, numberValue, positiveInteger, signalOption } from './validate';

export interface CommunityOptions {
  /** Cosine similarity at or above which two rows are close (default 0.75). */
  threshold?: number;
  /** The fewest rows a community holds (default 10; at most the rows given). */
  minCommunitySize?: number;
  /** Rows searched at a time (default 1024). */
  batchSize?: number;
  /** Called after each block of rows with the rows done and all rows. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface ParaphraseOptions {
  /** How many of its nearest other rows each row pairs with (default 100). */
  topK?: number;
  /** The most pairs returned, the best (default 500,000). */
  maxPairs?: number;
  /** Rows searched at a time (default 1024). */
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** A pair of rows `i` < `j` and their cosine similarity. */
export interface ParaphrasePair {
  score: number;
  i: number;
  j: number;
}

type Matrix = { dims: [number, number]; data: Float32Array };

/**
 * Communities of `embeddings` (rows of `{ dims: [n, d], data }`, such as `enc.embed()` returns): each is a row with at
 * least `minCommunitySize` rows (itself included) at cosine similarity `threshold` or more, and those rows, the row
 * first and then the others by falling similarity (a tie by row). Largest first (a tie in the order of their first
 * rows); a row is in one community at most, the largest that could take it, and a community that loses rows to larger
 * ones is kept only while it still holds `minCommunitySize`. sentence-transformers' `community_detection`: the same
 * communities (test/python-interop.test.ts).
 */
export async function communityDetection(embeddings: Matrix, options: CommunityOptions = {}): Promise<number[][]> {
  const o = checkOptions('options', options, ['threshold', 'minCommunitySize', 'batchSize', 'onProgress', 'signal']);
  const m = floatMatrix('embeddings', embeddings);
  const threshold = numberValue('options.threshold', o.threshold ?? 0.75, (x) => x >= -1 && x <= 1, 'a cosine similarity in [-1, 1]');
  const n = m.dims[0];
  const minSize = Math.min(positiveInteger('options.minCommunitySize', o.minCommunitySize ?? 10), n);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 1024);
  const signal = signalOption(o.signal);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new ColtrastError('INVALID_ARGUMENT', 'options.onProgress must be a function');
  if (n === 0) return [];
  const store = await unitStore(m);
  const found: number[][] = [];
  for (let start = 0; start < n; start += batchSize) {
    if (signal?.aborted) throw new ColtrastError('ABORTED', `communityDetection() was aborted (options.signal) after ${start} of ${n} rows`);
    const rows = Array.from({ length: Math.min(batchSize, n - start) }, (_, b) => start + b);
    // Rows with minSize rows close enough (their minSize-th hit at the threshold or above), then each one's hits
    // searched with twice as many while its last is close enough: all of its close rows. Kept in the rows' order.
    const first = await search(store, rows, minSize);
    const block: (number[] | undefined)[] = new Array(rows.length);
    let pending = rows.map((_, b) => b).filter((b) => first[b].length >= minSize && first[b][minSize - 1].score >= threshold);
    for (let wanted = Math.min(n, Math.max(2 * minSize, 50)); pending.length > 0; wanted = Math.min(n, 2 * wanted)) {
      const hits = await search(store, pending.map((b) => rows[b]), wanted);
      const more: number[] = [];
      pending.forEach((b, p) => {
        const h = hits[p];
        if (wanted < n && h.length === wanted && h[wanted - 1].score >= threshold) more.push(b);
        else block[b] = members(h, threshold, rows[b]);
      });
      pending = more;
    }
    for (const community of block) if (community) found.push(community);
    o.onProgress?.(rows[rows.length - 1] + 1, n);
  }
  // Largest first (Array.prototype.sort is stable: a tie keeps the rows' order), then each row in one community.
  found.sort((a, b) => b.length - a.length);
  const used = new Uint8Array(n);
  const kept: number[][] = [];
  for (const community of found) {
    const free = community.filter((i) => !used[i]);
    if (free.length < minSize) continue;
    free.forEach((i) => (used[i] = 1));
    kept.push(free);
  }
  return kept.sort((a, b) => b.length - a.length);
}

/**
 * The pairs of rows of `embeddings` most alike by cosine similarity: each row with its `topK` nearest other rows, each
 * pair once (i < j), best first (a tie by i, then j), at most `maxPairs` (the best). sentence-transformers'
 * `paraphrase_mining_embeddings` (its score function cosine): the same pairs and scores (test/python-interop.test.ts).
 * To find near-duplicate texts, embed them first: `paraphraseMining(await enc.embed(texts))`.
 */
export async function paraphraseMining(embeddings: Matrix, options: ParaphraseOptions = {}): Promise<ParaphrasePair[]> {
  const o = checkOptions('options', options, ['topK', 'maxPairs', 'batchSize', 'onProgress', 'signal']);
  const m = floatMatrix('embeddings', embeddings);
  const topK = positiveInteger('options.topK', o.topK ?? 100);
  const maxPairs = positiveInteger('options.maxPairs', o.maxPairs ?? 500_000);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 1024);
  const signal = signalOption(o.signal);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new ColtrastError('INVALID_ARGUMENT', 'options.onProgress must be a function');
  const n = m.dims[0];
  if (n < 2) return [];
  const store = await unitStore(m);
  // The pairs so far by key i * n + j; past 2 maxPairs of them the best maxPairs are kept, and pairs below the worst of
  // those are passed over from then on (as sentence-transformers' queue of max_pairs does), so memory stays bounded.
  let best = new Map<number, ParaphrasePair>();
  let floor = -Infinity;
  const turn = new Turns();
  for (let start = 0; start < n; start += batchSize) {
    if (signal?.aborted) throw new ColtrastError('ABORTED', `paraphraseMining() was aborted (options.signal) after ${start} of ${n} rows`);
    const rows = Array.from({ length: Math.min(batchSize, n - start) }, (_, b) => start + b);
    // One more than topK: a row finds itself (or a copy of itself) among its nearest.
    const hits = await search(store, rows, Math.min(n, topK + 1));
    for (let b = 0; b < rows.length; b++) {
      const i = rows[b];
      // Every other row among its topK + 1 nearest (topK + 1 of them where its own copy is not there).
      for (const { doc: j, score } of hits[b]) {
        if (j === i || score < floor) continue;
        const [a, c] = i < j ? [i, j] : [j, i];
        const key = a * n + c;
        const had = best.get(key);
        if (!had || score > had.score) best.set(key, { score, i: a, j: c });
      }
      await turn.maybe();
    }
    if (best.size > 2 * maxPairs) {
      const kept = [...best.values()].sort(byScore).slice(0, maxPairs);
      floor = kept[kept.length - 1].score;
      best = new Map(kept.map((p) => [p.i * n + p.j, p]));
    }
    o.onProgress?.(rows[rows.length - 1] + 1, n);
  }
  return [...best.values()].sort(byScore).slice(0, maxPairs);
}

/** Best first; a tie by i, then j. */
const byScore = (x: ParaphrasePair, y: ParaphrasePair) => y.score - x.score || x.i - y.i || x.j - y.j;

/** A float32 dense store of `m`'s rows scaled to unit length (a zero row stays zero), as cos_sim normalizes them. */
async function unitStore(m: Matrix) {
  const unit = (await unitRows(m)).data;
  const store = newStore(m.dims[1], 'float32');
  store.add(unit);
  return { store, unit, d: m.dims[1] };
}

/** Each of `rows`' `k` best rows of the store, best first (a tie by row). */
async function search(s: Awaited<ReturnType<typeof unitStore>>, rows: number[], k: number): Promise<{ doc: number; score: number }[][]> {
  const queries = new Float32Array(rows.length * s.d);
  rows.forEach((row, b) => queries.set(s.unit.subarray(row * s.d, (row + 1) * s.d), b * s.d));
  let r: { scores: Float32Array; indices: Int32Array; k: number };
  try {
    r = await s.store.search(queries, k);
  } catch (error) {
    throw fromNative(error);
  }
  return rows.map((_, b) => rankedHits(r, b).sort((x, y) => y.score - x.score || x.doc - y.doc));
}

/** A community's rows from a row's hits: those at the threshold or above, the row itself first. */
function members(hits: { doc: number; score: number }[], threshold: number, row: number): number[] {
  const close = hits.filter((h) => h.score >= threshold).map((h) => h.doc);
  return [row, ...close.filter((i) => i !== row)];
}
