// Quantized embeddings: quantizeEmbeddings() on hand-checked cases (sentence-transformers' own
// quantize_embeddings is compared in python-interop.test.ts), and the int8 and binary index storage against
// references recomputed here from those codes: int8 rows scored at their buckets' midpoints, binary rows ranked
// by Hamming distance then rescored by the float query's cosine with their sign vectors, ties by row; save and
// load, removal, the Index and CLI around them, and the refusals.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, exportIndex, quantizeEmbeddings } from '../lib';
import { newStore } from '../lib/search-index';
import { FIXTURE, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');

/** `n` seeded rows of width `dim`, unit length (as an Index stores them), from a simple LCG. */
function randomRows(n: number, dim: number, seed: number): { dims: [number, number]; data: Float32Array } {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5;
  const data = Float32Array.from({ length: n * dim }, r);
  for (let i = 0; i < n; i++) {
    const row = data.subarray(i * dim, (i + 1) * dim);
    const norm = Math.hypot(...row);
    for (let k = 0; k < dim; k++) row[k] /= norm;
  }
  return { dims: [n, dim], data };
}

test('quantizeEmbeddings: sign bits packed most significant first, int8 and uint8 buckets between each dimension\'s minimum and maximum', (t) => {
  const m = { dims: [2, 10] as [number, number], data: Float32Array.from([1, -1, 0, 2, -3, 0.5, 0.1, -0.1, 4, 0, -1, 1, 1, -1, -1, -1, -1, 1, 0, 5]) };
  const ubinary = quantizeEmbeddings(m, 'ubinary');
  t.deepEqual(ubinary.dims, [2, 2]);
  // Row 0: 1 0 0 1 0 1 1 0 | 1 0 -> 0b10010110 = 150, 0b10000000 = 128.
  t.deepEqual(Array.from(ubinary.data), [150, 128, 0b01100001, 0b01000000]);
  t.deepEqual(Array.from(quantizeEmbeddings(m, 'binary').data), [150 - 128, 0, 0b01100001 - 128, 0b01000000 - 128]);
  // int8 with ranges [0, 255] in every dimension: step 1, so codes are floor(x) clipped, minus 128.
  const ranges = { dims: [2, 10] as [number, number], data: Float32Array.from([...new Array(10).fill(0), ...new Array(10).fill(255)]) };
  const x = { dims: [1, 10] as [number, number], data: Float32Array.from([0, 0.5, 1.99, 254.5, 255, 300, -1, 128, 127.999, 3]) };
  t.deepEqual(Array.from(quantizeEmbeddings(x, 'uint8', { ranges }).data), [0, 0, 1, 254, 255, 255, 0, 128, 127, 3]);
  t.deepEqual(Array.from(quantizeEmbeddings(x, 'int8', { ranges }).data), [-128, -128, -127, 126, 127, 127, -128, 0, -1, -125]);
  // Without ranges: from the embeddings; a constant dimension gets step 1. In float32, 1 / (1 / 255) is just
  // under 255, so the maximum lands in bucket 254, as in sentence-transformers (checked there).
  const q = quantizeEmbeddings({ dims: [3, 2], data: Float32Array.from([0, 7, 1, 7, 0.5, 7]) }, 'uint8');
  t.deepEqual(Array.from(q.data), [0, 0, 254, 0, 127, 0]);
  t.deepEqual(Array.from(q.ranges!.data), [0, 7, 1, 7]);
  // Calibration sets the ranges; the returned ranges quantize queries alike.
  const calibrated = quantizeEmbeddings(x, 'int8', { calibration: { dims: [2, 10], data: ranges.data } });
  t.deepEqual(Array.from(calibrated.data), Array.from(quantizeEmbeddings(x, 'int8', { ranges }).data));
  t.deepEqual(Array.from(quantizeEmbeddings(m, 'float32').data), Array.from(m.data));
  for (const [args, pattern] of [
    [[m, 'int4'], /precision/],
    [[{ dims: [2, 3], data: new Float32Array(5) }, 'int8'], /embeddings/],
    [[x, 'int8', { ranges, calibration: ranges }], /not both/],
    [[x, 'int8', { ranges: { dims: [2, 3], data: new Float32Array(6) } }], /\[2, 10\]/],
    [[{ dims: [0, 4], data: new Float32Array(0) }, 'int8'], /needs ranges/],
    [[x, 'int8', { scale: 1 }], /unknown option options\.scale/],
  ] as const) {
    const error = t.throws(() => (quantizeEmbeddings as any)(...args));
    t.true(error instanceof ColtrastError);
    t.regex(error!.message, pattern);
  }
});

test('int8 storage: codes from the first rows\' ranges, scores at the buckets\' midpoints; rows, removal, save and load', async (t) => {
  const dim = 23;
  const first = randomRows(300, dim, 1);
  const later = randomRows(50, dim, 2);
  const store = newStore(dim, 'int8');
  store.add(first.data);
  store.add(later.data);
  // The reference: the same codes, ranges from the first rows only, decoded to midpoints.
  const codes = quantizeEmbeddings(first, 'int8');
  const laterCodes = quantizeEmbeddings(later, 'int8', { ranges: codes.ranges });
  const start = codes.ranges!.data.subarray(0, dim);
  const step = Array.from({ length: dim }, (_, c) => Math.fround(Math.fround(codes.ranges!.data[dim + c] - start[c]) / 255) || 1);
  const all = [...codes.data, ...laterCodes.data];
  const decoded = Float32Array.from(all, (code, i) => (code + 128.5) * step[i % dim] + start[i % dim]);
  t.true(maxAbsDiff(store.rows(0, 350), decoded) < 1e-6, 'rows() are the decoded midpoints');
  // Quantization error stays within half a bucket per entry.
  t.true(maxAbsDiff(store.rows(0, 300), first.data) <= Math.max(...step) / 2 + 1e-6);
  const queries = randomRows(4, dim, 3);
  const r = await store.search(queries.data, 7);
  for (let i = 0; i < 4; i++) {
    const scores = Array.from({ length: 350 }, (_, row) => decoded.subarray(row * dim, (row + 1) * dim).reduce((s, x, k) => s + x * queries.data[i * dim + k], 0));
    const best = scores.map((score, row) => ({ score, row })).sort((a, b) => b.score - a.score).slice(0, 7);
    t.deepEqual(Array.from(r.indices.subarray(i * 7, i * 7 + 7)), best.map((b) => b.row));
    t.true(maxAbsDiff(r.scores.subarray(i * 7, i * 7 + 7), best.map((b) => b.score)) < 1e-5);
  }
  const file = path.join(tempDir(), 'vectors.safetensors');
  await store.save(file);
  const again = newStore(dim, 'int8');
  t.is(await again.load(file), 350);
  t.deepEqual(await again.search(queries.data, 7), r);
  // A float store refuses nothing of it, but a binary store of the same width refuses int8 rows.
  const wrong = newStore(dim, 'binary');
  await t.throwsAsync(wrong.load(file), { message: /vectors must be \[rows, 3\]/ });
  const keep = Uint8Array.from({ length: 350 }, (_, i) => (i % 2 === 0 ? 1 : 0));
  t.is(await again.remove(keep), 175);
  t.true(maxAbsDiff(again.rows(0, 1), decoded.subarray(0, dim)) < 1e-6 && maxAbsDiff(again.rows(1, 1), decoded.subarray(2 * dim, 3 * dim)) < 1e-6);
});

for (const dim of [77, 9]) {
  test(`binary storage, dim ${dim}: Hamming distance, then the k × multiplier nearest rescored by the float query, ties by row`, async (t) => {
    const n = 400;
    const rows = randomRows(n, dim, 10 + dim);
    const store = newStore(dim, 'binary');
    store.add(rows.data.subarray(0, 100 * dim));
    store.add(rows.data.subarray(100 * dim));
    const bits = quantizeEmbeddings(rows, 'ubinary').data as Uint8Array;
    const width = Math.ceil(dim / 8);
    const sign = (row: number, k: number) => ((bits[row * width + (k >> 3)] >> (7 - (k & 7))) & 1 ? 1 : -1);
    const decoded = Float32Array.from({ length: n * dim }, (_, i) => sign(Math.floor(i / dim), i % dim) / Math.sqrt(dim));
    t.true(maxAbsDiff(store.rows(0, n), decoded) < 1e-7, 'rows() are the unit sign vectors');
    const queries = randomRows(3, dim, 99);
    const qbits = quantizeEmbeddings(queries, 'ubinary').data as Uint8Array;
    const popcount = (x: number) => x.toString(2).split('').filter((b) => b === '1').length;
    for (const [k, multiplier] of [[5, 1], [5, 4], [10, 100]]) {
      const r = await store.search(queries.data, k, multiplier);
      t.is(r.k, k);
      for (let i = 0; i < 3; i++) {
        const distance = (row: number) => Array.from({ length: width }, (_, b) => popcount(bits[row * width + b] ^ qbits[i * width + b])).reduce((a, b) => a + b, 0);
        const near = Array.from({ length: n }, (_, row) => ({ row, d: distance(row) }))
          .sort((a, b) => a.d - b.d || a.row - b.row)
          .slice(0, Math.min(n, k * multiplier));
        const q = queries.data.subarray(i * dim, (i + 1) * dim);
        const rescored = near
          .map(({ row }) => ({ row, score: Array.from(q).reduce((s, x, c) => s + x * decoded[row * dim + c], 0) }))
          .sort((a, b) => b.score - a.score || a.row - b.row)
          .slice(0, k);
        t.deepEqual(Array.from(r.indices.subarray(i * k, (i + 1) * k)), rescored.map((x) => x.row), `k ${k} × ${multiplier}, query ${i}`);
        t.true(maxAbsDiff(r.scores.subarray(i * k, (i + 1) * k), rescored.map((x) => x.score)) < 1e-5);
      }
    }
    const file = path.join(tempDir(), 'vectors.safetensors');
    await store.save(file);
    const again = newStore(dim, 'binary');
    t.is(await again.load(file), n);
    t.deepEqual(await again.search(queries.data, 5, 4), await store.search(queries.data, 5, 4));
    await t.throwsAsync(async () => store.search(queries.data, 5, 0), { message: /rescoreMultiplier must be a positive integer/ });
    await t.throwsAsync(newStore(dim, 'int8').load(file), { message: dim === 9 ? /vectors must be \[rows, 9\]/ : /vectors must be \[rows, 77\]/ });
  });
}

test('an Index with int8 or binary storage: build, search, save and load, the CLI; refusals', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const docs = wordDataset(60, 8).map((p, i) => ({ id: `d${i}`, text: p.positive }));
  const queries = wordDataset(5, 9).map((p) => p.query);
  try {
    const float = await Index.build(enc, docs);
    for (const storage of ['int8', 'binary'] as const) {
      const index = await Index.build(enc, docs, { storage });
      t.is(index.storage, storage);
      const options = storage === 'binary' ? { k: 5, rescoreMultiplier: 60 } : { k: 5 };
      const hits = await index.search(queries, options);
      if (storage === 'int8') {
        // At int8's precision the top hit is the float index's on most queries.
        const exact = await float.search(queries, { k: 5 });
        const agree = hits.filter((h, i) => h[0].id === exact[i][0].id).length;
        t.true(agree >= 4, `int8: top hit agrees on ${agree} of 5 queries`);
      } else {
        // Every row rescored (60 × 5 ≥ 60 rows): the ranking is by the query's cosine with each document's sign vector.
        const q = (await enc.embed(queries, { task: 'query', normalize: true })).data;
        const d = (await enc.embed(docs.map((x) => x.text), { task: 'document', normalize: true })).data;
        const dim = enc.dimension;
        hits.forEach((list, i) => {
          const ranked = docs
            .map((doc, j) => ({ id: doc.id, j, score: Array.from({ length: dim }, (_, c) => q[i * dim + c] * (d[j * dim + c] > 0 ? 1 : -1)).reduce((a, b) => a + b, 0) / Math.sqrt(dim) }))
            .sort((a, b) => b.score - a.score || a.j - b.j)
            .slice(0, 5);
          t.deepEqual(list.map((h) => h.id), ranked.map((r) => r.id));
          t.true(maxAbsDiff(list.map((h) => h.score), ranked.map((r) => r.score)) < 1e-5);
        });
      }
      const dir = path.join(tempDir(), storage);
      await index.save(dir);
      t.is(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).storage, storage);
      const loaded = await Index.load(dir, enc);
      t.deepEqual(await loaded.search(queries, options), hits);
      if (storage === 'binary') {
        // Its size on disk: a bit per dimension.
        t.true(fs.statSync(path.join(dir, 'vectors.safetensors')).size < 60 * 4 + 1024);
        const out = spawnSync(process.execPath, [CLI, 'search', '--index', dir, '--device', 'cpu', '--json', '--rescore-multiplier', '60', '--k', '5', ...queries], { encoding: 'utf8', timeout: 240_000 });
        t.is(out.status, 0, out.stderr);
        t.deepEqual(JSON.parse(out.stdout).map((r: { hits: { id: string }[] }) => r.hits.map((h) => h.id)), hits.map((h) => h.map((x) => x.id)));
        await t.throwsAsync(exportIndex(dir, path.join(tempDir(), 'x.sql')), { message: /stores binary vectors; the export writes float vectors/ });
      } else {
        await t.throwsAsync(index.search(queries, { rescoreMultiplier: 2 }), { message: /rescoreMultiplier is for an index with binary storage; this one stores int8/ });
      }
    }
    const built = spawnSync(process.execPath, [CLI, 'index', '--data', writeJsonl(docs), '--output', path.join(tempDir(), 'cli'), '--model', FIXTURE, '--storage', 'int8', '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 240_000 });
    t.is(built.status, 0, built.stderr);
    const bad = spawnSync(process.execPath, [CLI, 'index', '--data', writeJsonl(docs), '--output', path.join(tempDir(), 'cli'), '--model', FIXTURE, '--storage', 'int4'], { encoding: 'utf8', timeout: 240_000 });
    t.not(bad.status, 0);
    t.regex(bad.stderr, /--storage must be float32, float16, int8 or binary/);
    await t.throwsAsync(Index.build(enc, docs, { storage: 'int4' as any }), { message: /options\.storage/ });
  } finally {
    enc.dispose();
  }
});

function writeJsonl(docs: { id: string; text: string }[]): string {
  const file = path.join(tempDir(), 'docs.jsonl');
  fs.writeFileSync(file, docs.map((d) => JSON.stringify(d)).join('\n'));
  return file;
}
