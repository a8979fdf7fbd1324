// Encoder.similarity() / similarityPairwise() on large inputs (lib/similarity.ts): they held the event loop for about a
// second on 100,000 768-wide rows (the addon copied a product's inputs on the main thread before it worked off it, the
// whole matrix in one call; cosine's unit rows were made in one synchronous loop; a distance row, one query against
// every document, ran without a turn). The products now run a block of rows at a time, the rest in turns; these tests
// pin that and check the blocks' seams against float64. The event-loop test runs serially: the others' JavaScript
// references would stall the loop it measures.
import test from 'ava';
import type { Matrix } from '../lib';
import { PRODUCT_BLOCK_FLOATS, maxsimScores, pairwiseSimilarity, similarityMatrix, type SimilarityFunction } from '../lib/similarity';
import { longestStall as stalled } from '../lib/turns';

let seed = 34;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const random = (n: number, d: number): Matrix => ({ dims: [n, d], data: Float32Array.from({ length: n * d }, rand) });

/** The longest stretch (ms) in which a 1 ms timer could not fire while `work` ran. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  return (await stalled(work)).stallMs;
}

function dot64(x: Float32Array, y: Float32Array): number {
  let s = 0;
  for (let k = 0; k < x.length; k++) s += x[k] * y[k];
  return s;
}

test.serial('similarity of one query against 60,000 documents keeps the event loop turning, for every function and pairwise', async (t) => {
  const d = 512;
  const docs = random(60_000, d);
  const query = random(1, d);
  const fns: SimilarityFunction[] = ['dot', 'cosine', 'euclidean', 'manhattan'];
  // The addon's first load and libtorch's first product are not what is measured.
  await similarityMatrix(query, query, 'dot');
  for (const fn of fns) {
    const stall = await longestStall(() => similarityMatrix(query, docs, fn));
    t.log(`${fn}: the event loop waited at most ${stall.toFixed(0)} ms`);
    t.true(stall < 150, `${fn} held the event loop for ${stall.toFixed(0)} ms`);
  }
  const stall = await longestStall(() => pairwiseSimilarity(docs, docs, 'cosine'));
  t.true(stall < 150, `pairwise cosine held the event loop for ${stall.toFixed(0)} ms`);
});

test('products computed a block of rows at a time are every row against every row, where the blocks meet too', async (t) => {
  const d = 1024;
  const rows = PRODUCT_BLOCK_FLOATS / d;
  const a = random(rows + 77, d);
  const b = random(rows * 2 + 5, d);
  const [n, m] = [a.dims[0], b.dims[0]];
  const row = (x: Matrix, i: number) => x.data.subarray(i * d, (i + 1) * d);
  for (const fn of ['dot', 'cosine'] as const) {
    const s = await similarityMatrix(a, b, fn);
    t.deepEqual(s.dims, [n, m]);
    for (const i of [0, rows - 1, rows, n - 1]) {
      for (const j of [0, rows - 1, rows, 2 * rows, m - 1]) {
        const want = fn === 'dot' ? dot64(row(a, i), row(b, j)) : dot64(row(a, i), row(b, j)) / Math.sqrt(dot64(row(a, i), row(a, i)) * dot64(row(b, j), row(b, j)));
        t.true(Math.abs(s.data[i * m + j] - want) <= 1e-4 * Math.max(1, Math.abs(want)), `${fn} (${i}, ${j}): ${s.data[i * m + j]} against ${want}`);
      }
    }
  }
});

test("a multi-vector model's MaxSim over more token vectors than one block holds is each query's against each document's", async (t) => {
  const dim = 1024;
  const matrices = (count: number, length: (i: number) => number) => Array.from({ length: count }, (_, i) => random(length(i), dim));
  const queries = matrices(PRODUCT_BLOCK_FLOATS / dim + 50, (i) => 1 + (i % 2));
  const docs = matrices(50, (i) => 1 + ((i * 7) % 30));
  const maxsim64 = (q: Matrix, doc: Matrix) => {
    let sum = 0;
    for (let i = 0; i < q.dims[0]; i++) {
      let best = -Infinity;
      for (let j = 0; j < doc.dims[0]; j++) best = Math.max(best, dot64(q.data.subarray(i * dim, (i + 1) * dim), doc.data.subarray(j * dim, (j + 1) * dim)));
      sum += best;
    }
    return sum;
  };
  const s = await maxsimScores(queries, docs, 'maxsim', dim, false);
  t.deepEqual(s.dims, [queries.length, docs.length]);
  for (const i of [0, 1, 1023, 1024, queries.length - 1]) {
    for (const j of [0, 20, 33, 34, docs.length - 1]) {
      const want = maxsim64(queries[i], docs[j]);
      t.true(Math.abs(s.data[i * docs.length + j] - want) <= 1e-3, `(${i}, ${j}): ${s.data[i * docs.length + j]} against ${want}`);
    }
  }
  const paired = matrices(queries.length, (i) => 1 + (i % 3));
  const p = await maxsimScores(queries, paired, 'meanmaxsim', dim, true);
  t.deepEqual(p.dims, [queries.length, 1]);
  for (const i of [0, 400, 682, 683, 1023, 1024, queries.length - 1]) {
    const want = maxsim64(queries[i], paired[i]) / queries[i].dims[0];
    t.true(Math.abs(p.data[i] - want) <= 1e-3, `paired ${i}: ${p.data[i]} against ${want}`);
  }
});
