// Encoder.similarity() and similarityPairwise(): sentence-transformers' model.similarity() and similarity_pairwise()
// under the model's similarity_fn_name, checked against a float64 reference on random inputs of odd shapes (the
// definitions: cosine of unit rows, the inner product, the negated L2 and L1 distances). A multi-vector model's MaxSim
// is test/multi-vector.test.ts's.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, type Matrix } from '../lib';
import { pairwiseSimilarity, similarityMatrix, SIMILARITY_FUNCTIONS, type SimilarityFunction } from '../lib/similarity';
import { FIXTURE, fixtureCopy } from './helpers/fixture';

let seed = 2024;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const random = (n: number, d: number): Matrix => ({ dims: [n, d], data: Float32Array.from({ length: n * d }, rand) });

/** The float64 score of rows x and y under `fn`, from the definitions. */
function reference(x: Float32Array, y: Float32Array, fn: SimilarityFunction): number {
  let dot = 0, nx = 0, ny = 0, l2 = 0, l1 = 0;
  for (let k = 0; k < x.length; k++) {
    dot += x[k] * y[k];
    nx += x[k] * x[k];
    ny += y[k] * y[k];
    l2 += (x[k] - y[k]) ** 2;
    l1 += Math.abs(x[k] - y[k]);
  }
  if (fn === 'cosine') return dot / (Math.max(Math.sqrt(nx), 1e-12) * Math.max(Math.sqrt(ny), 1e-12));
  return fn === 'dot' ? dot : fn === 'euclidean' ? -Math.sqrt(l2) : -l1;
}

const row = (m: Matrix, i: number) => m.data.subarray(i * m.dims[1], (i + 1) * m.dims[1]);

function close(t: any, got: number, want: number, what: string) {
  t.true(Math.abs(got - want) <= 1e-5 * Math.max(1, Math.abs(want)), `${what}: ${got} against ${want}`);
}

for (const fn of SIMILARITY_FUNCTIONS) {
  test(`${fn}: every row against every row, and row against row, agree with float64 on odd shapes`, async (t) => {
    for (const [n, m, d] of [[7, 5, 33], [1, 13, 3], [19, 1, 129], [3, 3, 1]]) {
      const a = random(n, d);
      const b = random(m, d);
      const s = await similarityMatrix(a, b, fn);
      t.deepEqual(s.dims, [n, m]);
      for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) close(t, s.data[i * m + j], reference(row(a, i), row(b, j), fn), `[${n}x${m}x${d}] (${i}, ${j})`);
      const c = random(n, d);
      const p = await pairwiseSimilarity(a, c, fn);
      t.is(p.length, n);
      for (let i = 0; i < n; i++) close(t, p[i], reference(row(a, i), row(c, i), fn), `pairwise ${i}`);
    }
  });
}

test('cosine of a zero vector is 0, as sentence-transformers\' normalize (eps 1e-12) makes it, not NaN', async (t) => {
  const a: Matrix = { dims: [2, 3], data: Float32Array.from([0, 0, 0, 1, 2, 3]) };
  const s = await similarityMatrix(a, a, 'cosine');
  t.deepEqual(Array.from(s.data.subarray(0, 3)), [0, 0, 0]);
  close(t, s.data[3], 1, 'a row against itself');
  t.deepEqual(Array.from(await pairwiseSimilarity(a, a, 'euclidean')), [-0, -0]);
});

test('empty inputs give empty scores', async (t) => {
  const s = await similarityMatrix(random(0, 4), random(3, 4), 'dot');
  t.deepEqual(s.dims, [0, 3]);
  t.is(s.data.length, 0);
});

test('Encoder.similarity uses the model\'s similarity_fn_name: cosine by default, euclidean where its config says so', async (t) => {
  const texts = ['a cat sat on the mat', 'quantum chromodynamics', 'the dog sat on a rug'];
  const cosine = await Encoder.load(FIXTURE, { threads: 1 });
  const euclidean = await Encoder.load(
    fixtureCopy((dir) => {
      const file = path.join(dir, 'config_sentence_transformers.json');
      const config = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
      fs.writeFileSync(file, JSON.stringify({ ...config, similarity_fn_name: 'euclidean' }));
    }),
    { threads: 1 },
  );
  try {
    t.is(cosine.similarityFunction, 'cosine');
    t.is(euclidean.similarityFunction, 'euclidean');
    const e = await cosine.embed(texts);
    const s = await cosine.similarity(e, e);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) close(t, s.data[i * 3 + j], reference(row(e, i), row(e, j), 'cosine'), `cosine (${i}, ${j})`);
    const f = await euclidean.embed(texts);
    const d = await euclidean.similarity(f, f);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) close(t, d.data[i * 3 + j], reference(row(f, i), row(f, j), 'euclidean'), `euclidean (${i}, ${j})`);
    const p = await euclidean.similarityPairwise(f, f);
    t.deepEqual(Array.from(p, (x) => Math.abs(x)), [0, 0, 0]);
  } finally {
    cosine.dispose();
    euclidean.dispose();
  }
});

test('similarity refuses what it cannot compare, saying what to pass', async (t) => {
  const enc = await Encoder.load(FIXTURE, { threads: 1 });
  try {
    await t.throwsAsync(enc.similarity(random(2, 4), random(2, 5)), { message: /a's vectors have 4 entries and b's 5: compare vectors of one model/ });
    await t.throwsAsync(enc.similarityPairwise(random(2, 4), random(3, 4)), { message: /as many rows in b as in a: a has 2, b 3/ });
    await t.throwsAsync(enc.similarity([random(2, 4)], random(2, 4)), { message: /^a must be embeddings \{ dims: \[rows, dim\], data: Float32Array \}, as embed\(\) returns them, got an array of length 1/ });
    await t.throwsAsync(enc.similarity({ dims: [2, 4], data: new Float32Array(7) }, random(2, 4)), { message: /^a must be embeddings .*got an object$/ });
  } finally {
    enc.dispose();
  }
  const odd = await Encoder.load(
    fixtureCopy((dir) => fs.writeFileSync(path.join(dir, 'config_sentence_transformers.json'), JSON.stringify({ similarity_fn_name: 'jaccard' }))),
    { threads: 1 },
  );
  try {
    await t.throwsAsync(odd.similarity(random(1, 4), random(1, 4)), { message: /similarity_fn_name "jaccard" is none of cosine, dot, euclidean, manhattan/ });
  } finally {
    odd.dispose();
  }
});
