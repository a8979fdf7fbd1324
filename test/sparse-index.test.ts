// SparseIndex: exact inverted-index search over sparse vectors against brute force (every document scored), dot and
// cosine, ties by id; save and load; bad input and files that are not an index refused; evaluate()'s sparse mode.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Bm25Index, Encoder, Index, SparseEncoder, SparseIndex, evaluate, evaluateRun, type SparseVector } from '../lib';
import { fuseRankings } from '../lib/search-index';
import { sparseSimilarity } from '../lib/sparse-encoder';
import { tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { seededRandom } from '../lib/random';
import { longestStall } from '../lib/turns';

const ROOT = path.resolve(__dirname, '..');

/** `n` random sparse vectors of width `dim`, a few to a few dozen entries each, some values zero or negative. */
function randomVectors(n: number, dim: number, seed: number): SparseVector[] {
  const random = seededRandom(seed).next;
  return Array.from({ length: n }, () => {
    const picked = new Set<number>();
    const count = 1 + Math.floor(random() * 30);
    while (picked.size < count) picked.add(Math.floor(random() * dim));
    const indices = Int32Array.from([...picked].sort((a, b) => a - b));
    return { indices, values: Float32Array.from(indices, () => (random() < 0.1 ? 0 : random() < 0.2 ? -random() : random())) };
  });
}

/** Brute force: every document scored, the best k, ties by id. */
function bruteForce(docs: SparseVector[], ids: string[], query: SparseVector, k: number, fn: 'dot' | 'cosine') {
  const scored = docs.map((d, i) => ({ id: ids[i], score: sparseSimilarity(query, d, fn), shares: d.indices.some((x) => query.indices.includes(x)) }));
  return scored
    .filter((s) => s.shares)
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
    .slice(0, k);
}

for (const similarity of ['dot', 'cosine'] as const) {
  test(`${similarity}: search finds what scoring every document finds (ids, order, scores to 1e-5), with documents that share no entry left out`, async (t) => {
    const dim = 211;
    const docs = randomVectors(500, dim, 3);
    const ids = docs.map((_, i) => `doc-${(i * 7919) % 1000}`);
    const index = new SparseIndex(dim, { similarity });
    await index.addAll(ids.slice(0, 300), docs.slice(0, 300));
    for (let i = 300; i < 500; i++) index.add(ids[i], docs[i]);
    t.is(index.size, 500);
    t.is(index.postings, docs.reduce((n, d) => n + d.indices.length, 0));
    const queries = randomVectors(40, dim, 11);
    const all = await index.searchAll(queries, 10);
    queries.forEach((q, i) => {
      const expected = bruteForce(docs, ids, q, 10, similarity);
      const got = index.search(q, 10);
      t.deepEqual(all[i], got);
      t.deepEqual(got.map((h) => h.id), expected.map((h) => h.id), `query ${i}`);
      got.forEach((h, r) => t.true(Math.abs(h.score - expected[r].score) < 1e-5));
    });
    t.deepEqual(index.search(queries[0], 0), []);
    t.deepEqual(index.search({ indices: new Int32Array(0), values: new Float32Array(0) }, 5), []);
  });
}

test('equal scores come back by id; a zero product still counts the document as met', (t) => {
  const index = new SparseIndex(10);
  const v = (pairs: [number, number][]): SparseVector => ({ indices: Int32Array.from(pairs, (p) => p[0]), values: Float32Array.from(pairs, (p) => p[1]) });
  index.add('b', v([[1, 1]]));
  index.add('a', v([[1, 1]]));
  index.add('c', v([[2, 0], [3, 1]]));
  t.deepEqual(index.search(v([[1, 2], [2, 5]]), 3), [
    { id: 'a', score: 2 },
    { id: 'b', score: 2 },
    { id: 'c', score: 0 },
  ]);
});

test('save and load give the same index and the same hits; a model\'s vectors search as its similarity ranks them', async (t) => {
  const model = await SparseEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert'), { device: 'cpu' });
  const texts = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').split('\n').filter(Boolean).slice(0, 60);
  const docs = await model.encode(texts, { task: 'document' });
  const queries = await model.encode(texts.slice(0, 5), { task: 'query' });
  const index = new SparseIndex(model.dimension);
  await index.addAll(texts.map((_, i) => `s${i}`), docs);
  const scores = await model.similarity(queries, docs);
  const hits = await index.searchAll(queries, 3);
  hits.forEach((row, q) => {
    const best = Array.from(scores.data.subarray(q * docs.length, (q + 1) * docs.length)).map((s, i) => ({ i, s })).sort((a, b) => b.s - a.s)[0];
    t.is(row[0].id, `s${best.i}`);
    t.true(Math.abs(row[0].score - best.s) < 1e-5);
  });
  const file = path.join(tempDir(), 'sub', 'index.sparse');
  await index.save(file);
  const again = await SparseIndex.load(file);
  t.is(again.size, index.size);
  t.is(again.dimension, model.dimension);
  t.is(again.similarity, 'dot');
  t.deepEqual(await again.searchAll(queries, 3), hits);
  // Saved over: the file is replaced whole.
  index.add('more', docs[0]);
  await index.save(file);
  t.is((await SparseIndex.load(file)).size, texts.length + 1);
  t.deepEqual(fs.readdirSync(path.dirname(file)), ['index.sparse']);
  model.dispose();
});

test('bad arguments and files that are not a sparse index are refused, naming the problem', async (t) => {
  t.throws(() => new SparseIndex(0), { message: /dimension/ });
  t.throws(() => new SparseIndex(5, { similarity: 'euclidean' as never }), { message: /similarity/ });
  t.throws(() => new SparseIndex(5, { metric: 'dot' } as never), { message: /metric/ });
  const index = new SparseIndex(5);
  const v: SparseVector = { indices: Int32Array.of(1), values: Float32Array.of(1) };
  index.add('a', v);
  t.throws(() => index.add('a', v), { message: /already in the sparse index/ });
  t.throws(() => index.add('b', { indices: Int32Array.of(5), values: Float32Array.of(1) }), { message: /from 0 to 4/ });
  await t.throwsAsync(() => index.addAll(['c', 'c'], [v, v]), { message: /given twice/ });
  await t.throwsAsync(() => index.addAll(['c'], [v, v]), { message: /one id a vector/ });
  t.is(index.size, 1, 'a refused addAll adds nothing');
  t.throws(() => index.search(v, -1), { message: /k/ });
  const dir = tempDir();
  let error = await rejection(() => SparseIndex.load(path.join(dir, 'missing')));
  t.regex(error.message, /no such file/);
  fs.writeFileSync(path.join(dir, 'text'), 'not an index at all, just text');
  error = await rejection(() => SparseIndex.load(path.join(dir, 'text')));
  t.regex(error.message, /not a sparse index.*no header/);
  await index.save(path.join(dir, 'ok'));
  const bytes = fs.readFileSync(path.join(dir, 'ok'));
  fs.writeFileSync(path.join(dir, 'cut'), bytes.subarray(0, bytes.length - 3));
  error = await rejection(() => SparseIndex.load(path.join(dir, 'cut')));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /ends too soon/);
});

test('evaluate() with a SparseEncoder (mode sparse, its default) gives the metrics of ranking every document by the model\'s similarity', async (t) => {
  const dir = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert');
  const model = await SparseEncoder.load(dir, { device: 'cpu' });
  const pairs = wordDataset(24, 13);
  const data = {
    corpus: pairs.map((p, i) => ({ id: `d${i}`, title: '', text: p.positive })),
    queries: new Map(pairs.map((p, i) => [`q${i}`, p.query])),
    qrels: new Map(pairs.map((_, i) => [`q${i}`, new Map([[`d${i}`, 1]])])),
  };
  const ks = [1, 5, 10];
  const result = await evaluate({ data, model, k: ks });
  t.is(result.mode, 'sparse');
  // By hand: every document scored by similarity(), best first, ties by id.
  const docs = await model.encode(data.corpus.map((d) => d.text), { task: 'document' });
  const queries = await model.encode(pairs.map((p) => p.query), { task: 'query' });
  const scores = await model.similarity(queries, docs);
  // Query q's every document sharing an entry with it, best first, ties by id.
  const full = (q: number) =>
    data.corpus
      .map((d, j) => ({ id: d.id, score: scores.data[q * docs.length + j] }))
      .filter((h, j) => docs[j].indices.some((x) => queries[q].indices.includes(x)))
      .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  const run = new Map(pairs.map((_, q) => [`q${q}`, full(q).slice(0, 10)]));
  const expected = evaluateRun(run, data.qrels, ks).metrics;
  for (const metric of ['ndcg', 'recall', 'mrr'] as const) {
    for (const k of ks) t.true(Math.abs(result.metrics[metric][k] - expected[metric][k]) < 1e-6, `${metric}@${k}: ${result.metrics[metric][k]} vs ${expected[metric][k]}`);
  }
  // Hybrid: its ranking (every document that shares an entry) fused with BM25's by reciprocal rank, ties by id.
  const hybrid = await evaluate({ data, model, k: ks, mode: 'hybrid' });
  t.is(hybrid.mode, 'hybrid');
  const bm25 = new Bm25Index();
  await bm25.addAll(data.corpus.map((d) => ({ id: d.id, text: d.text })));
  const lexical = await bm25.searchAll(pairs.map((p) => p.query), 100);
  const fused = new Map(pairs.map((_, q) => [
    `q${q}`,
    fuseRankings(full(q), lexical[q], (h) => h.id, { fusion: 'rrf', weight: 0.5, rrfK: 60 }, (a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(({ key, score }) => ({ id: key, score })),
  ]));
  const hybridExpected = evaluateRun(fused, data.qrels, ks).metrics;
  for (const metric of ['ndcg', 'recall', 'mrr'] as const) {
    for (const k of ks) t.true(Math.abs(hybrid.metrics[metric][k] - hybridExpected[metric][k]) < 1e-6, `hybrid ${metric}@${k}: ${hybrid.metrics[metric][k]} vs ${hybridExpected[metric][k]}`);
  }
  t.not(hybrid.metrics.ndcg[10], result.metrics.ndcg[10]);
  t.is((await evaluate({ data, model: dir, k: ks, mode: 'hybrid', device: 'cpu' })).mode, 'hybrid');
  // A folder of one is evaluated so without a mode; the dense index's options are refused.
  t.is((await evaluate({ data, model: dir, k: ks, device: 'cpu' })).mode, 'sparse');
  await t.throwsAsync(evaluate({ data, model: dir, storage: 'int8', device: 'cpu' }), { message: /storage/ });
  await t.throwsAsync(evaluate({ data, model, mode: 'dense' }), { message: /options.mode/ });

  // A second, sparse model beside a dense one: hybrid (its default) fuses the two rankings as an Index of both does.
  const dense = await Encoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-bert'), { device: 'cpu' });
  const both = await Index.build(dense, data.corpus, { sparseEncoder: model });
  const twoModels = await evaluate({ data, model: dense, sparseModel: model, k: ks, hybridWeight: 0.3 });
  t.is(twoModels.mode, 'hybrid');
  t.is(twoModels.sparseModel, model.modelDir);
  const fusedRun = new Map((await both.search(pairs.map((p) => p.query), { k: 100, mode: 'hybrid', hybridWeight: 0.3 })).map((hits, q) => [`q${q}`, hits]));
  const twoExpected = evaluateRun(fusedRun, data.qrels, ks).metrics;
  for (const metric of ['ndcg', 'recall', 'mrr'] as const) {
    for (const k of ks) t.true(Math.abs(twoModels.metrics[metric][k] - twoExpected[metric][k]) < 1e-6, `dense + sparse ${metric}@${k}: ${twoModels.metrics[metric][k]} vs ${twoExpected[metric][k]}`);
  }
  t.not(twoModels.metrics.ndcg[10], hybrid.metrics.ndcg[10]);
  t.is((await evaluate({ data, model: dense, sparseModel: dir, k: ks, device: 'cpu' })).sparseModel, model.modelDir);
  await t.throwsAsync(evaluate({ data, model: dense, sparseModel: model, mode: 'dense' }), { message: /options\.sparseModel must be absent with mode 'dense'/ });
  await t.throwsAsync(evaluate({ data, model, sparseModel: model }), { message: /options\.sparseModel must be absent with a sparse encoder as options\.model/ });
  await t.throwsAsync(evaluate({ data, model: dense, sparseModel: model, bm25: { stem: true } }), { message: /options\.bm25/ });
  dense.dispose();
  model.dispose();
});

test('remove drops documents: searches then find what scoring the documents left finds; unknown ids are refused', async (t) => {
  const dim = 97;
  const docs = randomVectors(200, dim, 5);
  const ids = docs.map((_, i) => `d${i}`);
  const index = new SparseIndex(dim);
  await index.addAll(ids, docs);
  const gone = new Set(ids.filter((_, i) => i % 3 === 1 || i > 180));
  await index.remove([...gone]);
  t.is(index.size, 200 - gone.size);
  const kept = docs.filter((_, i) => !gone.has(ids[i]));
  const keptIds = ids.filter((id) => !gone.has(id));
  t.is(index.postings, kept.reduce((n, d) => n + d.indices.length, 0));
  for (const q of randomVectors(20, dim, 9)) t.deepEqual(index.search(q, 7).map((h) => h.id), bruteForce(kept, keptIds, q, 7, 'dot').map((h) => h.id));
  // A removed id may come back; the documents after it keep their hits.
  index.add('d1', docs[1]);
  t.true(index.search(docs[1], 200).some((h) => h.id === 'd1'));
  const error = await rejection(() => index.remove(['d4']));
  t.regex(error.message, /no document "d4"/);
});

test('Index of a SparseEncoder: search, filters, hybrid, removal and save/load rank as scoring every document with the model does', async (t) => {
  const model = await SparseEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert'), { device: 'cpu' });
  const pairs = wordDataset(40, 13);
  const docs = pairs.map((p, i) => ({ id: `doc-${i}`, text: p.positive, metadata: { even: i % 2 === 0 } }));
  const index = await Index.build(model, docs, { batchSize: 7 });
  t.true(index.sparse);
  t.false(index.multiVector);
  t.false(index.lateInteraction);
  const queries = pairs.slice(0, 8).map((p) => p.query);
  // Embedded in the batches the index embeds them in, so that near ties fall as they fall there.
  const vectors = await model.encode(docs.map((d) => d.text), { task: 'document', batchSize: 7 });
  const queryVectors = await model.encode(queries, { task: 'query' });
  // Ties by position, as the dense index breaks them; documents sharing no entry with the query are no hits.
  const expected = (keep: (i: number) => boolean, k: number) =>
    queryVectors.map((q) =>
      vectors
        .map((v, i) => ({ i, score: sparseSimilarity(q, v, 'dot'), shares: v.indices.some((x) => q.indices.includes(x)) }))
        .filter((s) => s.shares && keep(s.i))
        .sort((a, b) => b.score - a.score || a.i - b.i)
        .slice(0, k),
    );
  const check = (hits: { id: string; score: number }[][], want: { i: number; score: number }[][], what: string) =>
    hits.forEach((row, q) => {
      t.deepEqual(row.map((h) => h.id), want[q].map((w) => docs[w.i].id), `${what}, query ${q}: ${JSON.stringify(row.map((h) => h.score))} vs ${JSON.stringify(want[q].map((w) => w.score))}`);
      row.forEach((h, r) => t.true(Math.abs(h.score - want[q][r].score) <= 1e-4 * Math.max(1, Math.abs(want[q][r].score)), `${what}: ${h.score} vs ${want[q][r].score}`));
    });
  check(await index.search(queries, { k: 5 }), expected(() => true, 5), 'search');
  check(await index.search(queries, { k: 5, filter: { 'metadata.even': true } }), expected((i) => i % 2 === 0, 5), 'filtered');
  const hybrid = await index.search(queries, { k: 5, mode: 'hybrid' });
  t.true(hybrid.every((row) => row.length === 5));
  t.deepEqual((await index.search(queries, { k: 5, mode: 'bm25' }))[0].length, 5);

  await index.remove(['doc-0', 'doc-3', 'doc-17']);
  await index.upsert([{ id: 'doc-5', text: docs[6].text }]);
  const after = (i: number) => i !== 0 && i !== 3 && i !== 17;
  // doc-5 now holds doc-6's text, at the end of the index: its vector is that text's, embedded alone as upsert did.
  vectors.push((await model.encode([docs[6].text], { task: 'document' }))[0]);
  docs.push({ ...docs[5] });
  const moved = (i: number) => after(i) && i !== 5;
  check(await index.search(queries, { k: 6 }), expected(moved, 6), 'after removal and upsert');

  const dir = path.join(tempDir(), 'sparse.index');
  await index.save(dir);
  t.true(fs.existsSync(path.join(dir, 'sparse.bin')));
  t.false(fs.existsSync(path.join(dir, 'vectors.safetensors')));
  t.deepEqual(Index.modelOptions(dir), { source: model.modelDir, sparse: true });
  const loaded = await Index.load(dir, model);
  t.deepEqual(await loaded.search(queries, { k: 6 }), await index.search(queries, { k: 6 }));
  model.dispose();
});

test('Index of a SparseEncoder refuses dense options and the wrong kind of model; damaged sparse vectors are named', async (t) => {
  const folder = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert-plain');
  const model = await SparseEncoder.load(folder, { device: 'cpu' });
  const docs = wordDataset(6, 2).map((p, i) => ({ id: `d${i}`, text: p.positive }));
  for (const options of [{ lateInteraction: true }, { storage: 'int8' as const }, { poolFactor: 2 }]) {
    const error = await rejection(() => Index.build(model, docs, options));
    t.regex(error.message, /absent with a SparseEncoder/, JSON.stringify(options));
  }
  const index = await Index.build(model, docs);
  t.regex((await rejection(() => index.search(['x'], { mmrLambda: 0.5 }))).message, /sparse encoder's index has none/);
  t.regex((await rejection(() => index.search(['x'], { rerank: 'maxsim' }))).message, /lateInteraction/);
  const dir = path.join(tempDir(), 'idx');
  await index.save(dir);
  // A plain *ForMaskedLM folder loads as an embedding model too, with the same files.
  const dense = await Encoder.load(folder, { device: 'cpu' });
  let error = await rejection(() => Index.load(dir, dense));
  t.regex(error.message, /SparseEncoder\.load/);
  const denseDir = path.join(tempDir(), 'dense-idx');
  await (await Index.build(dense, docs)).save(denseDir);
  error = await rejection(() => Index.load(denseDir, model));
  t.regex(error.message, /not a sparse encoder's/);
  dense.dispose();
  // sparse.bin of other documents (the same count, other ids), then none at all.
  const other = new SparseIndex(model.dimension);
  await other.addAll(docs.map((_, i) => `x${i}`), await model.encode(docs.map((d) => d.text)));
  await other.save(path.join(dir, 'sparse.bin'));
  error = await rejection(() => Index.load(dir, model));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /sparse\.bin's document 1 is "x0"/);
  fs.rmSync(path.join(dir, 'sparse.bin'));
  error = await rejection(() => Index.load(dir, model));
  t.regex(error.message, /sparse\.bin is missing/);
  model.dispose();
});

test.serial('a large index is added to, saved and loaded in turns: the event loop runs meanwhile', async (t) => {
  const dim = 5000;
  const docs = randomVectors(80_000, dim, 17).map((v) => {
    // Fifty entries a document: 4 million postings.
    const extra = randomVectors(1, dim, v.indices[0] + 1)[0];
    const merged = new Map<number, number>();
    for (const x of [v, extra]) x.indices.forEach((index, k) => merged.set(index, x.values[k]));
    const indices = Int32Array.from([...merged.keys()].sort((a, b) => a - b));
    return { indices, values: Float32Array.from(indices, (i) => merged.get(i)!) };
  });
  const ids = docs.map((_, i) => `document-${i}`);
  const index = new SparseIndex(dim);
  const added = await longestStall(() => index.addAll(ids, docs));
  const file = path.join(tempDir(), 'large.sparse');
  const saved = await longestStall(() => index.save(file));
  const loads: { ms: number; stallMs: number }[] = [];
  for (let i = 0; i < 2; i++) {
    const started = performance.now();
    const { result, stallMs } = await longestStall(() => SparseIndex.load(file));
    loads.push({ ms: performance.now() - started, stallMs });
    t.is(result.size, docs.length);
  }
  // A query of many terms meets most documents: its best hits, selected in turns, are those of scoring every document.
  const query = { indices: Int32Array.from({ length: 400 }, (_, i) => i * 12), values: Float32Array.from({ length: 400 }, (_, i) => 1 + (i % 7) / 10) };
  const weight = new Map(Array.from(query.indices, (x, i) => [x, query.values[i]]));
  const scored = docs
    .map((d, i) => {
      let score = 0;
      let shares = false;
      d.indices.forEach((x, j) => {
        const w = weight.get(x);
        if (w !== undefined) {
          score += Math.fround(w) * d.values[j];
          shares = true;
        }
      });
      return { id: ids[i], score, shares };
    })
    .filter((h) => h.shares);
  t.true(scored.length > 65_536, `${scored.length} documents met: more than one turn of the selection`);
  const { result: [found], stallMs } = await longestStall(() => index.searchAll([query], 10));
  const want = scored.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1)).slice(0, 10);
  t.deepEqual(found.map((h) => h.id), want.map((h) => h.id));
  found.forEach((h, i) => t.true(Math.abs(h.score - want[i].score) < 1e-4));
  t.log(`a search meeting ${scored.length} documents held the loop ${stallMs.toFixed(0)} ms`);
  const load = loads.reduce((a, b) => (a.stallMs < b.stallMs ? a : b));
  t.log(`addAll held the loop ${added.stallMs.toFixed(0)} ms, save ${saved.stallMs.toFixed(0)} ms, load ${load.stallMs.toFixed(0)} of its ${load.ms.toFixed(0)} ms`);
  t.true(load.stallMs < load.ms / 3, `load held the event loop ${load.stallMs.toFixed(0)} ms of its ${load.ms.toFixed(0)} ms`);
});

test('Index of an Encoder with a second, sparse model: dense, sparse and bm25 as each alone, hybrid their fusion, saved and loaded with both', async (t) => {
  const dense = await Encoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-bert'), { device: 'cpu' });
  const sparse = await SparseEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert'), { device: 'cpu' });
  const pairs = wordDataset(30, 5);
  const docs = pairs.map((p, i) => ({ id: `doc-${i}`, text: p.positive, metadata: { even: i % 2 === 0 } }));
  const queries = pairs.slice(0, 6).map((p) => p.query);
  const both = await Index.build(dense, docs, { sparseEncoder: sparse, batchSize: 7 });
  let denseOnly = await Index.build(dense, docs, { batchSize: 7 });
  let sparseOnly = await Index.build(sparse, docs, { batchSize: 7 });
  t.is(both.sparseEncoder, sparse);
  t.false(both.sparse);
  t.false(both.multiVector);
  t.is(denseOnly.sparseEncoder, undefined);
  /** Each mode's hits as the one-model indexes give them; hybrid: their rankings fused as search fuses dense and BM25. */
  const compare = async (index: Index, what: string, filter?: { 'metadata.even': boolean }) => {
    const f = filter ? { filter } : {};
    t.deepEqual(await index.search(queries, { k: 5, ...f }), await denseOnly.search(queries, { k: 5, ...f }), `${what}: dense`);
    t.deepEqual(await index.search(queries, { k: 5, mode: 'sparse', ...f }), await sparseOnly.search(queries, { k: 5, ...f }), `${what}: sparse`);
    t.deepEqual(await index.search(queries, { k: 5, mode: 'bm25', ...f }), await denseOnly.search(queries, { k: 5, mode: 'bm25', ...f }), `${what}: bm25`);
    const d = await denseOnly.search(queries, { k: 100, ...f });
    const s = await sparseOnly.search(queries, { k: 100, ...f });
    const position = new Map(docs.map((doc, i) => [doc.id, i]));
    for (const [fusion, weight] of [['rrf', 0.5], ['relative', 0.3]] as const) {
      const got = await index.search(queries, { k: 5, mode: 'hybrid', fusion, hybridWeight: weight, ...f });
      got.forEach((row, q) => {
        const want = fuseRankings(d[q], s[q], (h) => position.get(h.id)!, { fusion, weight, rrfK: 60 }, (a, b) => a - b).slice(0, 5);
        t.deepEqual(row.map((h) => h.id), want.map((w) => docs[w.key].id), `${what}: hybrid ${fusion}, query ${q}`);
        row.forEach((h, r) => t.true(Math.abs(h.score - want[r].score) < 1e-6));
      });
      // The fusion is its own ranking, neither model's alone.
      const ids = (rows: { id: string }[][]) => rows.map((row) => row.slice(0, 5).map((h) => h.id));
      t.notDeepEqual(ids(got), ids(d), `${what}: hybrid ${fusion} is not the dense ranking`);
      t.notDeepEqual(ids(got), ids(s), `${what}: hybrid ${fusion} is not the sparse ranking`);
    }
  };
  await compare(both, 'built');
  await compare(both, 'filtered', { 'metadata.even': true });
  // Removal and upsert reach both models' vectors.
  for (const index of [both, denseOnly, sparseOnly]) {
    await index.remove(['doc-1', 'doc-4']);
    await index.upsert([{ id: 'doc-2', text: docs[9].text }]);
  }
  docs.splice(0, docs.length, ...docs.filter((d) => d.id !== 'doc-1' && d.id !== 'doc-4' && d.id !== 'doc-2'), { id: 'doc-2', text: docs[9].text, metadata: docs[2].metadata });
  await compare(both, 'after removal and upsert');

  const dir = path.join(tempDir(), 'two-models.index');
  await both.save(dir);
  t.true(fs.existsSync(path.join(dir, 'vectors.safetensors')) && fs.existsSync(path.join(dir, 'sparse.bin')));
  t.deepEqual(Index.modelOptions(dir), { source: dense.modelDir, sparseSource: sparse.modelDir });
  let error = await rejection(() => Index.load(dir, dense));
  t.regex(error.message, /keeps a sparse encoder's vectors beside the Encoder's \(index\.json says it was loaded from .*tiny-sparse.bert\): load it with \{ sparseEncoder/);
  const loaded = await Index.load(dir, dense, { sparseEncoder: sparse });
  t.is(loaded.sparseEncoder, sparse);
  denseOnly = await Index.load(await saved(denseOnly), dense);
  sparseOnly = await Index.load(await saved(sparseOnly), sparse);
  await compare(loaded, 'loaded');
  // Saved again from the loaded index (its fingerprint read, not hashed again): the same manifest.
  const again = path.join(tempDir(), 'again.index');
  await loaded.save(again);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(again, 'index.json'), 'utf8')).sparseEncoder, JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).sparseEncoder);

  // A damaged record of the second model, or its vectors missing, are named.
  const damaged = await saved(loaded);
  const json = JSON.parse(fs.readFileSync(path.join(damaged, 'index.json'), 'utf8'));
  fs.writeFileSync(path.join(damaged, 'index.json'), JSON.stringify({ ...json, sparseEncoder: { ...json.sparseEncoder, dimension: 'wide' } }));
  error = await rejection(() => Index.load(damaged, dense, { sparseEncoder: sparse }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /index\.json says sparseEncoder\.dimension "wide", not a positive whole number/);
  fs.writeFileSync(path.join(damaged, 'index.json'), JSON.stringify(json));
  fs.rmSync(path.join(damaged, 'sparse.bin'));
  error = await rejection(() => Index.load(damaged, dense, { sparseEncoder: sparse }));
  t.regex(error.message, /sparse\.bin is missing/);

  // The wrong second model, or one where the index has none, is refused by name.
  const plain = await SparseEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert-plain'), { device: 'cpu' });
  error = await rejection(() => Index.load(dir, dense, { sparseEncoder: plain }));
  t.regex(error.message, /built with another sparse encoder .*tiny-sparse.bert\)/);
  const denseDir = await saved(denseOnly);
  error = await rejection(() => Index.load(denseDir, dense, { sparseEncoder: sparse }));
  t.regex(error.message, /without a second, sparse model; load it without sparseEncoder/);
  error = await rejection(() => Index.load(dir, dense, { sparseEncoder: dense as unknown as SparseEncoder }));
  t.regex(error.message, /options\.sparseEncoder/);
  error = await rejection(() => Index.build(dense, docs, { sparseEncoder: dense as unknown as SparseEncoder }));
  t.regex(error.message, /options\.sparseEncoder/);
  error = await rejection(() => Index.build(sparse, docs, { sparseEncoder: plain }));
  t.regex(error.message, /options\.sparseEncoder.*absent with a SparseEncoder/);
  error = await rejection(() => denseOnly.search(queries, { mode: 'sparse' }));
  t.regex(error.message, /build it with \{ sparseEncoder \}/);
  plain.dispose();
  sparse.dispose();
  dense.dispose();
});

/** `index` saved to a new temporary folder, whose path it returns. */
async function saved(index: Index): Promise<string> {
  const dir = path.join(tempDir(), 'saved.index');
  await index.save(dir);
  return dir;
}
