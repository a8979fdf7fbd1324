// Residual token storage and PLAID search (native/search/residual_store.cc), checked against references
// recomputed here in float64 from the stored codes:
//   - the codec: each vector's code is its nearest centroid, each residual bucket counts the cutoffs below the
//     residual, the cutoffs split the residual values into equal shares, rows() decode centroid + bucket values
//     (renormalized for unit vectors) at any width; k-means keeps well-separated clusters apart; save and load
//     keep every byte;
//   - the search: with every centroid probed and every candidate scored in full it is exact MaxSim over the
//     decoded vectors (documents of 0 to 12 tokens, queries of several lengths, mean MaxSim); with fewer probes each
//     hit holds a token of a probed centroid and carries its exact score;
//   - the Index: a multi-vector model's residual index (build, search, save and load, add, remove), its centroids
//     trained on documents spread over the corpus (a corpus sorted by topic), a late-interaction index re-ranking
//     with decoded vectors, evaluate() and the CLI; and the refusals.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, evaluate } from '../lib';
import { native } from '../lib/native';
import type { NativeResidualStore } from '../lib/search-index';
import { editJson, fixtureCopy, tempDir } from './helpers/fixture';
import { readSafetensors } from './helpers/safetensors';
import { makeSmallMultiVector, rejection } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const Store = (native() as unknown as { NativeResidualStore: new (dim: number, bits: number) => NativeResidualStore }).NativeResidualStore;

/** A seeded generator of uniform values in [-0.5, 0.5). */
function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5;
}

/** `n` unit rows of width `dim` near `clusters` random centres (noise `spread`); returns the rows and each one's centre. */
function clustered(n: number, dim: number, clusters: number, spread: number, seed: number): { data: Float32Array; cluster: number[] } {
  const r = lcg(seed);
  const centres = Array.from({ length: clusters }, () => Array.from({ length: dim }, r));
  const data = new Float32Array(n * dim);
  const cluster: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = i % clusters;
    cluster.push(c);
    const v = centres[c].map((x) => x + spread * r());
    const norm = Math.hypot(...v);
    v.forEach((x, j) => (data[i * dim + j] = x / norm));
  }
  return { data, cluster };
}

const f32 = (raw: { data: Buffer }) => new Float32Array(raw.data.buffer.slice(raw.data.byteOffset, raw.data.byteOffset + raw.data.length));
const i32 = (raw: { data: Buffer }) => new Int32Array(raw.data.buffer.slice(raw.data.byteOffset, raw.data.byteOffset + raw.data.length));

/** The stored codec read back from a saved store, and a float64 decoder of its rows by the documented layout. */
function codec(file: string, dim: number, bits: number) {
  const { tensors, metadata } = readSafetensors(file);
  const centroids = f32(tensors.get('centroids')!);
  const cutoffs = Array.from(f32(tensors.get('cutoffs')!));
  const weights = Array.from(f32(tensors.get('weights')!));
  const codes = i32(tensors.get('codes')!);
  const residuals = tensors.get('residuals')!;
  const width = Math.ceil((dim * bits) / 8);
  const bucket = (row: number, j: number) => (residuals.data[row * width + Math.floor((j * bits) / 8)] >> (8 - bits - ((j * bits) % 8))) & ((1 << bits) - 1);
  const decode = (row: number): number[] => {
    const v = Array.from({ length: dim }, (_, j) => centroids[codes[row] * dim + j] + weights[bucket(row, j)]);
    const norm = metadata?.normalized === 'true' ? Math.hypot(...v) : 1;
    return v.map((x) => x / norm);
  };
  return { centroids, cutoffs, weights, codes, bucket, decode, metadata, k: centroids.length / dim };
}

test('the codec: nearest centroids, residual buckets at quantiles, rows decoded as the stored layout says, at 1, 2 and 4 bits', async (t) => {
  const dim = 13; // 13 × 2 bits: a row's last byte is partly padding
  const n = 900;
  const { data, cluster } = clustered(n, dim, 6, 0.3, 5);
  const errors: number[] = [];
  for (const bits of [1, 2, 4]) {
    const store = new Store(dim, bits);
    t.is(store.centroids(), 0);
    t.is(await store.train(data, 24, 7), 24);
    t.is(await store.add(data), n);
    const file = path.join(tempDir(), 'tokens.safetensors');
    await store.save(file);
    const c = codec(file, dim, bits);
    t.is(c.metadata?.nbits, String(bits));
    t.is(c.metadata?.normalized, 'true', 'unit vectors: decoded vectors are renormalized');
    t.is(c.cutoffs.length, 2 ** bits - 1);
    t.is(c.weights.length, 2 ** bits);
    t.true(c.cutoffs.every((x, i) => i === 0 || x >= c.cutoffs[i - 1]));
    const decoded = store.rows(0, n);
    let err = 0;
    let worst = 0;
    const below = new Array(c.cutoffs.length).fill(0);
    const pure = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const x = data.subarray(i * dim, (i + 1) * dim);
      // The code is the nearest centroid (to float32 rounding of the distances).
      const dist = (k: number) => x.reduce((s, v, j) => s + (v - c.centroids[k * dim + j]) ** 2, 0);
      let best = Infinity;
      for (let k = 0; k < c.k; k++) best = Math.min(best, dist(k));
      t.true(dist(c.codes[i]) <= best + 1e-5, `row ${i}: code ${c.codes[i]} is not the nearest centroid`);
      if (pure.has(c.codes[i]) && pure.get(c.codes[i]) !== cluster[i]) t.fail(`centroid ${c.codes[i]} holds rows of two clusters`);
      pure.set(c.codes[i], cluster[i]);
      for (let j = 0; j < dim; j++) {
        // Each bucket counts the cutoffs below the residual (computed in float32, as the store does).
        const residual = Math.fround(x[j] - c.centroids[c.codes[i] * dim + j]);
        t.is(c.bucket(i, j), c.cutoffs.filter((cut) => cut < residual).length);
        c.cutoffs.forEach((cut, b) => (below[b] += residual <= cut ? 1 : 0));
      }
      const reference = c.decode(i);
      reference.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - decoded[i * dim + j]))));
      err += reference.reduce((s, v, j) => s + (v - x[j]) ** 2, 0);
    }
    t.true(worst < 1e-6, `rows() against the float64 decoding: ${worst}`);
    // The cutoffs are the residual values' quantiles i / 2^bits.
    below.forEach((count, b) => t.true(Math.abs(count / (n * dim) - (b + 1) / 2 ** bits) < 0.01, `cutoff ${b}: ${count / (n * dim)}`));
    errors.push(Math.sqrt(err / n));
    // Loading gives back every byte.
    const loaded = new Store(dim, bits);
    t.is(await loaded.load(file), n);
    t.is(loaded.centroids(), 24);
    t.deepEqual(loaded.rows(0, n), decoded);
  }
  t.true(errors[0] > errors[1] && errors[1] > errors[2], `reconstruction error falls with more bits: ${errors}`);
});

test('the search: every centroid probed and every candidate scored is exact MaxSim over the decoded vectors; fewer probes search their lists', async (t) => {
  const dim = 10;
  const counts = Int32Array.from({ length: 300 }, (_, i) => (i * 7) % 13); // 0 to 12 tokens, some documents empty
  const rows = counts.reduce((a, b) => a + b, 0);
  const { data } = clustered(rows, dim, 20, 0.6, 11);
  const store = new Store(dim, 2);
  await store.train(data, 32, 3);
  await store.add(data);
  const decoded = store.rows(0, rows);
  const offsets = [0];
  for (const c of counts) offsets.push(offsets[offsets.length - 1] + c);
  const lengths = Int32Array.of(1, 5, 8, 0);
  const queries = clustered(14, dim, 20, 0.6, 12).data;
  const k = 7;
  for (const mean of [false, true]) {
    const r = await store.search(queries, lengths, counts, k, 32, 10_000, mean);
    let q0 = 0;
    lengths.forEach((lq, qi) => {
      const scores: [number, number][] = [];
      for (let d = 0; d < counts.length; d++) {
        if (counts[d] === 0) continue; // no token: never a candidate
        let sum = 0;
        for (let a = 0; a < lq; a++) {
          let best = -Infinity;
          for (let tk = offsets[d]; tk < offsets[d + 1]; tk++) {
            let dot = 0;
            for (let j = 0; j < dim; j++) dot += queries[(q0 + a) * dim + j] * decoded[tk * dim + j];
            best = Math.max(best, dot);
          }
          sum += best;
        }
        scores.push([mean ? sum / lq : sum, d]);
      }
      scores.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const got = Array.from(r.indices.subarray(qi * k, (qi + 1) * k));
      if (lq === 0) t.deepEqual(got, new Array(k).fill(-1), 'an empty query finds nothing');
      else {
        t.deepEqual(got, scores.slice(0, k).map(([, d]) => d), `query ${qi}`);
        scores.slice(0, k).forEach(([s], j) => t.true(Math.abs(s - r.scores[qi * k + j]) < 1e-5));
      }
      q0 += lq;
    });
  }
  // One probe, three full scores: each hit holds a token whose centroid is a query token's nearest; three hits at most.
  const file = path.join(tempDir(), 'store.safetensors');
  await store.save(file);
  const c = codec(file, dim, 2);
  const narrow = await store.search(queries.subarray(0, 5 * dim), Int32Array.of(5), counts, 10, 1, 3, false);
  const nearest = new Set<number>();
  for (let a = 0; a < 5; a++) {
    let best = -1;
    let arg = -1;
    for (let cc = 0; cc < c.k; cc++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += queries[a * dim + j] * c.centroids[cc * dim + j];
      if (dot > best) [best, arg] = [dot, cc];
    }
    nearest.add(arg);
  }
  const hits = Array.from(narrow.indices).filter((d) => d >= 0);
  t.true(hits.length > 0 && hits.length <= 3);
  for (const d of hits) t.true(Array.from(c.codes.subarray(offsets[d], offsets[d + 1])).some((code) => nearest.has(code)), `document ${d}`);
  // Wrong input is refused.
  t.throws(() => store.search(queries, Int32Array.of(2), counts, 5, 4, 10, false), { message: /query lengths/ });
  await t.throwsAsync(store.search(queries.subarray(0, dim), Int32Array.of(1), counts.subarray(2), 5, 4, 10, false), { message: /add up to/ });
  t.throws(() => store.search(queries, lengths, counts, 0, 4, 10, false), { message: /k must be a positive integer/ });
  await t.throwsAsync(store.train(data, 8, 1), { message: /holds rows already/ });
  await t.throwsAsync(new Store(dim, 2).add(data), { message: /call train\(\)/ });
  t.throws(() => new Store(dim, 3), { message: /nbits must be 1, 2 or 4/ });
});

const WORDS = 'model text token vector search query document retrieval train loss batch fast slow small large tiny cat dog river bank money water paper'.split(' ');
/** `n` documents of six seeded words, ids from d<from>. */
function docsOf(n: number, from = 0): { id: string; text: string }[] {
  const r = lcg(from + 1);
  return Array.from({ length: n }, (_, i) => ({ id: `d${from + i}`, text: Array.from({ length: 6 }, () => WORDS[Math.floor((r() + 0.5) * WORDS.length)]).join(' ') }));
}
const QUERIES = ['cat dog', 'river bank money', 'search query', 'tiny model'];

let multi: Encoder;
let multiDir: string;
let plain: Encoder;
let plainDir: string;
test.before(async () => {
  multi = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  await makeSmallMultiVector(multi);
  multiDir = path.join(tempDir(), 'multi');
  await multi.save(multiDir);
  plainDir = fixtureCopy();
  plain = await Encoder.load(plainDir, { device: 'cpu' });
});
test.after.always(() => {
  multi?.dispose();
  plain?.dispose();
});

test('a multi-vector index with residual tokens: PLAID search near the exact one, saved and loaded, added to and removed from', async (t) => {
  const docs = docsOf(64);
  const exact = await Index.build(multi, docs);
  const index = await Index.build(multi, docs, { tokenStorage: 'residual', residualBits: 4, centroids: 16, batchSize: 1 });
  t.like(index, { multiVector: true, tokenStorage: 'residual', centroids: 16, size: 64 });
  t.is(exact.tokenStorage, 'float16');
  const all = { nprobe: 16, fullScores: 1000 };
  const truth = await exact.search(QUERIES, { k: 5 });
  const full = await index.search(QUERIES, { k: 5, ...all });
  // 4-bit residuals of 12-wide vectors: the exact top 5 mostly kept, scores near.
  // 4-bit residuals of 12-wide vectors: each hit's score near its exact one, and each hit's exact score near the
  // exact fifth best's (this random model's MaxSim scores of different documents lie close together), to 0.03 per
  // query token (queries are expanded to 10).
  const tolerance = 0.3;
  const exactScores = (await exact.search(QUERIES, { k: 64 })).map((hits) => new Map(hits.map((h) => [h.id, h.score])));
  full.forEach((hits, i) => hits.forEach((h) => {
    const e = exactScores[i].get(h.id)!;
    t.true(Math.abs(e - h.score) < tolerance, `${h.id}: ${h.score} against exact ${e}`);
    t.true(e > truth[i][4].score - tolerance, `${h.id}: exact score ${e}, the exact fifth best ${truth[i][4].score}`);
  }));
  // The defaults (4 probes, 256 full scores) and a narrow search: ranked lists of at most k.
  for (const hits of [await index.search(QUERIES, { k: 5 }), await index.search(QUERIES, { k: 5, nprobe: 1, fullScores: 5 })]) {
    hits.forEach((list) => {
      t.true(list.length > 0 && list.length <= 5);
      t.true(list.every((h, r) => r === 0 || h.score <= list[r - 1].score));
    });
  }

  const dir = path.join(tempDir(), 'residual-index');
  await index.save(dir);
  t.like(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')), { tokenStorage: 'residual', residualBits: 4, multiVector: true });
  t.deepEqual([...readSafetensors(path.join(dir, 'tokens.safetensors')).tensors.keys()].sort(), ['centroids', 'codes', 'cutoffs', 'residuals', 'weights']);
  const loaded = await Index.load(dir, multi);
  t.like(loaded, { tokenStorage: 'residual', centroids: 16 });
  t.deepEqual(await loaded.search(QUERIES, { k: 5, ...all }), full);

  // Added later in any slices: the same codes (the centroids trained at build encode them).
  const more = docsOf(8, 64);
  const grown = await Index.build(multi, docs.slice(0, 32), { tokenStorage: 'residual', residualBits: 4, centroids: 16, batchSize: 1 });
  const grownAgain = await Index.build(multi, docs.slice(0, 32), { tokenStorage: 'residual', residualBits: 4, centroids: 16, batchSize: 1 });
  await grown.add([...docs.slice(32), ...more], { batchSize: 1 });
  await grownAgain.add(docs.slice(32, 50), { batchSize: 8 });
  await grownAgain.add([...docs.slice(50), ...more], { batchSize: 2 });
  t.is(grown.centroids, 16);
  t.deepEqual(await grown.search(QUERIES, { k: 8, ...all }), await grownAgain.search(QUERIES, { k: 8, ...all }));

  // Removed documents are gone; the others keep their scores.
  const drop = full.map((hits) => hits[0].id);
  await loaded.remove([...new Set(drop)]);
  const after = await loaded.search(QUERIES, { k: 72, ...all });
  after.forEach((hits, i) => {
    t.false(hits.some((h) => drop.includes(h.id)));
    for (const h of full[i].filter((x) => !drop.includes(x.id))) t.is(hits.find((x) => x.id === h.id)?.score, h.score);
  });
});

test('build() trains the centroids on documents spread over the corpus, not only its first slice, and shows progress meanwhile', async (t) => {
  // A corpus sorted by topic: 32 copies of one text, then 32 varied documents; slices of 32 (batchSize 1).
  const same = Array.from({ length: 32 }, (_, i) => ({ id: `s${i}`, text: 'cat cat dog cat' }));
  const varied = docsOf(32, 100);
  const options = { tokenStorage: 'residual' as const, residualBits: 2, centroids: 8, batchSize: 1 };
  /** The mean squared error of the varied documents' decoded token vectors. */
  const error = async (index: Index, offset: number) => {
    const store = (index as unknown as { tokens: { store: NativeResidualStore } }).tokens.store;
    const exact = await multi.embed(varied.map((d) => d.text), { output: 'tokens', task: 'document' });
    const rows = exact.reduce((n, m) => n + m.dims[0], 0);
    const decoded = store.rows(offset, rows);
    let sum = 0;
    let at = 0;
    for (const m of exact) for (const x of m.data) sum += (x - decoded[at++]) ** 2;
    return sum / rows;
  };
  // Progress counts the sample's 32 documents (embedded for k-means) and then the 64 added, in order.
  const progress: [number, number][] = [];
  const spread = await Index.build(multi, [...same, ...varied], { ...options, onProgress: (done, total) => progress.push([done, total]) });
  t.deepEqual(progress[0], [0, 96]);
  t.deepEqual(progress[progress.length - 1], [96, 96]);
  t.true(progress.every(([done, total], i) => total === 96 && (i === 0 || done >= progress[i - 1][0])));
  t.true(progress.some(([done]) => done > 0 && done < 32), 'progress while the sample is embedded');
  const variedOnly = await Index.build(multi, varied, options);
  // Trained on the first slice alone (the sorted corpus's first topic), then the varied documents added.
  const firstSlice = await Index.build(multi, same, options);
  await firstSlice.add(varied, { batchSize: 1 });
  const sameTokens = (await multi.embed([same[0].text], { output: 'tokens', task: 'document' }))[0].dims[0] * 32;
  const [e, reference, stale] = [await error(spread, sameTokens), await error(variedOnly, 0), await error(firstSlice, sameTokens)];
  // Half the spread sample is the first topic (whose vectors take centroids too): within 3x of training on the
  // varied documents alone; the first slice alone leaves the varied documents' residuals 4x larger at least
  // (measured: 0.11, 0.06 and 0.74).
  t.true(e < 3 * reference, `spread sample: ${e}, the varied documents alone: ${reference}`);
  t.true(stale > 4 * e, `first slice only: ${stale}, spread sample: ${e}`);
});

test('a late-interaction index with residual tokens re-ranks by MaxSim over the decoded vectors', async (t) => {
  const docs = docsOf(48);
  const float16 = await Index.build(plain, docs, { lateInteraction: true });
  const residual = await Index.build(plain, docs, { lateInteraction: true, tokenStorage: 'residual', residualBits: 4 });
  t.like(residual, { multiVector: false, tokenStorage: 'residual' });
  t.true(residual.centroids > 1);
  const a = await float16.search(QUERIES, { k: 48, rerank: 'maxsim' });
  const b = await residual.search(QUERIES, { k: 48, rerank: 'maxsim' });
  let worst = 0;
  a.forEach((hits, i) => hits.forEach((h) => (worst = Math.max(worst, Math.abs(h.score - b[i].find((x) => x.id === h.id)!.score)))));
  t.true(worst < 0.15, `MaxSim over 4-bit residuals against float16 vectors: ${worst}`);
  // nprobe is for a multi-vector index's first stage.
  t.regex((await rejection(() => residual.search(QUERIES, { nprobe: 2 }))).message, /multi-vector index with residual token storage/);
});

test('evaluate() and the CLI build, search and load residual multi-vector indexes', async (t) => {
  const docs = docsOf(40);
  const options = { tokenStorage: 'residual' as const, residualBits: 2, batchSize: 8 };
  const hits = await (await Index.build(multi, docs, options)).search(QUERIES, { k: 3, nprobe: 2 });
  // Each query's first hit judged relevant: evaluate() with the same index settings finds it first.
  const data = {
    corpus: docs.map((d) => ({ id: d.id, title: '', text: d.text })),
    queries: new Map(QUERIES.map((q, i) => [`q${i}`, q])),
    qrels: new Map(QUERIES.map((_, i) => [`q${i}`, new Map([[hits[i][0].id, 1]])])),
  };
  const result = await evaluate({ data, model: multi, k: [1, 3], ...options, nprobe: 2 });
  t.like(result.metrics, { recall: { 1: 1, 3: 1 } });

  const root = tempDir();
  const jsonl = path.join(root, 'docs.jsonl');
  fs.writeFileSync(jsonl, docs.map((d) => JSON.stringify(d)).join('\n'));
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const out = path.join(root, 'index');
  const built = run('index', '--data', jsonl, '--model', multiDir, '--output', out, '--token-storage', 'residual', '--residual-bits', '4', '--centroids', '8', '--device', 'cpu', '--json');
  t.is(built.status, 0, built.stderr);
  t.like(JSON.parse(built.stdout), { documents: 40, lateInteraction: true, centroids: 8 });
  const searched = run('search', '--index', out, '--nprobe', '8', '--full-scores', '40', '--k', '3', '--device', 'cpu', '--json', 'cat dog');
  t.is(searched.status, 0, searched.stderr);
  const saved = await Encoder.load(multiDir, { device: 'cpu' });
  const loaded = await Index.load(out, saved);
  const expected = (await loaded.search(['cat dog'], { k: 3, nprobe: 8, fullScores: 40 }))[0];
  t.deepEqual(JSON.parse(searched.stdout)[0].hits.map((h: { id: string }) => h.id), expected.map((h) => h.id));
  const flat = path.join(root, 'flat');
  t.is(run('index', '--data', jsonl, '--model', multiDir, '--output', flat, '--device', 'cpu', '--json').status, 0);
  const refused = run('search', '--index', flat, '--nprobe', '2', '--device', 'cpu', 'cat dog');
  t.not(refused.status, 0);
  t.regex(refused.stderr, /nprobe is for a multi-vector index with residual token storage/);
  saved.dispose();
  // eval: the index flags are the main model's; a single-vector --compare model is evaluated as it comes.
  const beir = path.join(root, 'beir');
  fs.mkdirSync(path.join(beir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(beir, 'corpus.jsonl'), docs.map((d) => JSON.stringify({ _id: d.id, title: '', text: d.text })).join('\n'));
  fs.writeFileSync(path.join(beir, 'queries.jsonl'), QUERIES.map((q, i) => JSON.stringify({ _id: `q${i}`, text: q })).join('\n'));
  fs.writeFileSync(path.join(beir, 'qrels', 'test.tsv'), ['query-id\tcorpus-id\tscore', ...QUERIES.map((_, i) => `q${i}\t${docs[i].id}\t1`)].join('\n'));
  const compared = run('eval', '--data', beir, '--model', multiDir, '--token-storage', 'residual', '--nprobe', '2', '--compare', plainDir, '--device', 'cpu', '--json');
  t.is(compared.status, 0, compared.stderr);
  t.is(JSON.parse(compared.stdout).length, 2);
  const badFlag = run('index', '--data', jsonl, '--model', multiDir, '--output', flat, '--token-storage', 'int4');
  t.regex(badFlag.stderr, /--token-storage must be float16 or residual, got int4/);
});

test('residual storage options and files are checked', async (t) => {
  const docs = docsOf(6);
  const message = async (work: () => Promise<unknown>) => (await rejection(work)).message;
  t.regex(await message(() => Index.build(plain, docs, { tokenStorage: 'residual' })), /options\.tokenStorage.*keeps no token vectors/);
  t.regex(await message(() => Index.build(multi, docs, { tokenStorage: 'residual', residualBits: 3 })), /options\.residualBits.*1, 2 or 4/);
  t.regex(await message(() => Index.build(multi, docs, { centroids: 8 })), /options\.centroids.*tokenStorage 'residual'/);
  t.regex(await message(() => Index.build(multi, docs, { tokenStorage: 'residual', centroids: 0 })), /options\.centroids/);
  t.regex(await message(() => Index.build(multi, docs, { tokenStorage: 'int4' as 'residual' })), /options\.tokenStorage/);
  const flat = await Index.build(multi, docs);
  t.regex(await message(() => flat.search(['cat'], { fullScores: 10 })), /options\.fullScores is for a multi-vector index with residual token storage.*searches exactly/);

  const index = await Index.build(multi, docs, { tokenStorage: 'residual', centroids: 4 });
  t.is(index.centroids, 4);
  const dir = path.join(tempDir(), 'checked');
  await index.save(dir);
  const copy = (edit: (d: string) => void) => {
    const d = path.join(tempDir(), 'copy');
    fs.cpSync(dir, d, { recursive: true });
    edit(d);
    return d;
  };
  const loadError = async (d: string) => rejection(() => Index.load(d, multi));
  const bits = await loadError(copy((d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, residualBits: 4 }))));
  t.is(bits.code, 'MODEL_FILES');
  t.regex(bits.message, /stored with 2 bits, and the index says 4/);
  t.regex((await loadError(copy((d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, residualBits: 5 }))))).message, /residualBits 5, not 1, 2 or 4/);
  t.regex((await loadError(copy((d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, tokenStorage: 'pq' }))))).message, /tokenStorage "pq"/);
  // A float16 tokens file where residual codes should be.
  const float16Dir = path.join(tempDir(), 'f16');
  await flat.save(float16Dir);
  const swapped = await loadError(copy((d) => fs.copyFileSync(path.join(float16Dir, 'tokens.safetensors'), path.join(d, 'tokens.safetensors'))));
  t.is(swapped.code, 'MODEL_FILES');
  t.regex(swapped.message, /not a residual token store/);
  t.true(swapped instanceof ColtrastError);
});
