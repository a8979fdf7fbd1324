// Index.search's options at their edges, and the JavaScript work after the first stage done in turns:
//   - maximal marginal relevance and hybrid fusion let the event loop run between queries (they ran every query in
//     one synchronous map: MMR of 64 queries, k 100 of 1000 candidates held the loop 1.1-1.7 s);
//   - hybridWeight NaN is refused (it passed `w < 0 || w > 1` and made every score NaN);
//   - a PLAID search scores at least k candidates fully, so fullScores below k still returns k hits; candidates below
//     k count as k too.
import test from 'ava';
import { performance } from 'node:perf_hooks';
import { ColtrastError, Encoder, Index, type IndexDoc } from '../lib';
import { fixtureCopy } from './helpers/fixture';
import { makeSmallMultiVector } from './helpers/vectors';
import { fuseRankings } from '../lib/search-index';

const WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega'.split(' ');
const DOCS: IndexDoc[] = Array.from({ length: 600 }, (_, i) => ({ id: `d${i}`, text: Array.from({ length: 6 }, (_, j) => WORDS[(i * 7 + j * 13 + (i >> j)) % WORDS.length]).join(' ') }));

let plain: Encoder;
let index: Index;
test.before(async () => {
  plain = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  index = await Index.build(plain, DOCS, { batchSize: 128 });
});
test.after.always(() => plain?.dispose());

/**
 * Runs `search` and counts the turns of the event loop (a setImmediate that queues itself again) that pass after
 * `marked` is called: the JavaScript work from there to the end of the search. In one synchronous stretch, none
 * pass; done in turns, one passes each time the work yields. Also the longest stretch between turns, for the log.
 */
async function turnsAfter(search: (mark: () => void) => Promise<unknown>): Promise<{ turns: number; longest: number; ms: number }> {
  let marked = false;
  let done = false;
  let turns = 0;
  let last = performance.now();
  let longest = 0;
  const tick = () => {
    const now = performance.now();
    if (marked) {
      turns++;
      longest = Math.max(longest, now - last);
    }
    last = now;
    if (!done) setImmediate(tick);
  };
  setImmediate(tick);
  let start = 0;
  await search(() => {
    marked = true;
    start = last = performance.now();
  });
  const ms = performance.now() - start;
  done = true;
  return { turns, longest: Math.max(longest, performance.now() - last), ms };
}

/** `target` with its async `method` calling `mark` when it resolves, for turnsAfter. */
function marking<T extends object>(target: T, method: string, mark: () => void): T {
  return new Proxy(target, {
    get(_, key) {
      const value = (target as Record<string | symbol, unknown>)[key];
      if (typeof value !== 'function') return value;
      if (key !== method) return value.bind(target);
      return async (...args: unknown[]) => {
        const result = await value.apply(target, args);
        mark();
        return result;
      };
    },
  });
}

// Serial: each puts a marking stand-in into the shared index while it runs.
test.serial('maximal marginal relevance lets the event loop run between its picks', async (t) => {
  const queries = DOCS.slice(0, 32).map((d) => d.text);
  // The dense store's search resolves; from there on the work is JavaScript: the candidates' MMR, the hits.
  let mark = () => {};
  const fields = index as unknown as { vectors: object };
  const store = fields.vectors;
  fields.vectors = marking(store, 'search', () => mark());
  try {
    const r = await turnsAfter((m) => ((mark = m), index.search(queries, { k: 100, candidates: 600, mmrLambda: 0.5 })));
    t.log(`MMR of 32 queries, k 100 of 600 candidates: ${r.ms.toFixed(0)} ms, ${r.turns} turns, the longest stretch ${r.longest.toFixed(0)} ms`);
    t.true(r.turns >= 2, `the event loop turned ${r.turns} times while MMR ran`);
  } finally {
    fields.vectors = store;
  }
});

test.serial('hybrid fusion lets the event loop run between queries', async (t) => {
  const queries = Array.from({ length: 256 }, (_, i) => DOCS[i].text);
  await index.search(queries.slice(0, 1), { mode: 'bm25' }); // builds the BM25 index
  let mark = () => {};
  // Search takes the BM25 index from the promise that built it.
  const fields = index as unknown as { bm25Build: Promise<object> };
  const built = fields.bm25Build;
  fields.bm25Build = Promise.resolve(marking(await built, 'searchAll', () => mark()));
  try {
    // BM25's search resolves; from there on: each query's BM25 hits by position, the fusion, the hits.
    const r = await turnsAfter((m) => ((mark = m), index.search(queries, { k: 10, candidates: 600, mode: 'hybrid' })));
    t.log(`fusion of 256 queries of 600 + 600 candidates: ${r.ms.toFixed(0)} ms, ${r.turns} turns, the longest stretch ${r.longest.toFixed(0)} ms`);
    t.true(r.turns >= 2, `the event loop turned ${r.turns} times while fusion ran`);
  } finally {
    fields.bm25Build = built;
  }
  // In turns or not, the fusion is that of the two rankings.
  const some = queries.slice(0, 8);
  const [dense, lexical, hybrid] = [await index.search(some, { k: 600 }), await index.search(some, { k: 600, mode: 'bm25' }), await index.search(some, { k: 10, candidates: 600, mode: 'hybrid' })];
  const position = new Map(DOCS.map((d, i) => [d.id, i]));
  some.forEach((_, i) => {
    const fused = fuseRankings(dense[i], lexical[i], (h) => position.get(h.id)!, { fusion: 'rrf', weight: 0.5, rrfK: 60 }, (a, b) => a - b).slice(0, 10);
    t.deepEqual(hybrid[i].map((h) => [h.id, h.score]), fused.map((f) => [DOCS[f.key].id, f.score]));
  });
});

test('hybridWeight must be a number in [0, 1]: NaN is refused, not fused into NaN scores', async (t) => {
  for (const weight of [NaN, Infinity, -1e-9, 1.0001, '0.5']) {
    const e = await t.throwsAsync(index.search(['alpha'], { mode: 'hybrid', hybridWeight: weight as number }), { instanceOf: ColtrastError });
    t.is(e!.code, 'INVALID_ARGUMENT');
    t.regex(e!.message, /^options\.hybridWeight must be a number in \[0, 1\], got /);
  }
  for (const weight of [0, 0.25, 1]) {
    const [hits] = await index.search(['alpha beta'], { mode: 'hybrid', hybridWeight: weight, k: 3 });
    t.is(hits.length, 3);
    t.true(hits.every((h) => Number.isFinite(h.score)));
  }
});

test('a PLAID search scores at least k candidates fully: fullScores below k still returns k hits', async (t) => {
  const multi = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  try {
    await makeSmallMultiVector(multi);
    const docs = DOCS.slice(0, 40);
    const residual = await Index.build(multi, docs, { tokenStorage: 'residual', centroids: 8, batchSize: 8 });
    const queries = [docs[3].text, 'alpha beta', 'omega psi chi'];
    // Every centroid probed: every document is a candidate, so k of them are found, and scored fully.
    const asked = await residual.search(queries, { k: 10, nprobe: 8, fullScores: 3 });
    const atK = await residual.search(queries, { k: 10, nprobe: 8, fullScores: 10 });
    for (const hits of asked) t.is(hits.length, 10);
    t.deepEqual(asked, atK, 'fullScores below k counts as k');
    // Above k it is as asked: more candidates scored, the top k from them.
    t.is((await residual.search(queries, { k: 10, nprobe: 8, fullScores: 40 }))[0].length, 10);
  } finally {
    multi.dispose();
  }
});

test('candidates below k count as k: MMR, hybrid fusion and re-ranking still return k hits', async (t) => {
  const queries = ['alpha beta', 'omega psi chi'];
  for (const options of [{ mmrLambda: 0.5 }, { mode: 'hybrid' as const }, { mode: 'bm25' as const, mmrLambda: 0.7 }]) {
    const asked = await index.search(queries, { k: 10, candidates: 3, ...options });
    for (const hits of asked) t.is(hits.length, 10, JSON.stringify(options));
    t.deepEqual(asked, await index.search(queries, { k: 10, candidates: 10, ...options }), JSON.stringify(options));
  }
});
