// Index: exact dense search against a brute-force check, BM25/hybrid, MaxSim re-ranking, add/remove,
// persistence, and every way a saved index can be wrong.
import test from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, ops, type Hit, type IndexDoc } from '../lib';
import { readLoraOptions } from '../lib/lora';
import { relativeScoreFusion, topIndices } from '../lib/search-index';
import { CLI, FIXTURE, STEP, editJson, fixtureCopy, folderCopy, tempDir, wordDataset } from './helpers/fixture';
import { writeSafetensors, type RawTensor } from './helpers/safetensors';

const projects = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'examples', 'ai-projects.json'), 'utf8')).projects;
const DOCS: IndexDoc[] = projects.flatMap((p: any) =>
  p.readme_content.split(/\n\n+/).map((text: string, i: number) => ({ id: `${p.project_id}#${i}`, text, metadata: { project: p.project_id } })),
);
const QUESTION = 'Which project uses reinforcement learning?';

async function errorOf(promise: Promise<unknown>): Promise<ColtrastError> {
  const e = await promise.then(
    () => undefined,
    (x) => x,
  );
  if (!(e instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${e}`);
  return e;
}

test('dense search is the exact top k by inner product of normalized vectors', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS);
  t.is(index.size, DOCS.length);
  const queries = [QUESTION, 'pneumonia x-ray', 'sentiment of reviews'];
  const hits = await index.search(queries, { k: 5 });
  const q = await enc.embed(queries, { normalize: true });
  const d = await enc.embed(DOCS.map((x) => x.text), { normalize: true });
  const dim = enc.dimension;
  queries.forEach((_, i) => {
    const scores = DOCS.map((_, j) => {
      let s = 0;
      for (let x = 0; x < dim; x++) s += q.data[i * dim + x] * d.data[j * dim + x];
      return s;
    });
    const expected = scores.map((s, j) => ({ s, j })).sort((a, b) => b.s - a.s).slice(0, 5);
    t.deepEqual(hits[i].map((h) => h.id), expected.map((e) => DOCS[e.j].id));
    hits[i].forEach((h, r) => t.true(Math.abs(h.score - expected[r].s) < 1e-5));
  });
  t.deepEqual(hits[0][0].metadata, { project: hits[0][0].id.split('#')[0] });
  enc.dispose();
});

test('topIndices keeps the k best positions in the order a full sort gives (ties by position)', (t) => {
  let seed = 11;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (const n of [0, 1, 7, 1000]) {
    // Few distinct values, so that many scores tie.
    const row = Float32Array.from({ length: n }, () => Math.floor(random() * 9) / 4 - 1);
    const sorted = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
    for (const k of [0, 1, 5, n, n + 3]) t.deepEqual(topIndices(row, k), sorted.slice(0, k), `n ${n}, k ${k}`);
  }
});

test('BM25 and hybrid find the trading bot for the write-up question', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS);
  for (const mode of ['bm25', 'hybrid'] as const) {
    const [hits] = await index.search([QUESTION], { k: 3, mode });
    t.true(hits[0].id.startsWith('trading-bot'), `${mode}: ${hits.map((h) => h.id).join(', ')}`);
  }
  await t.throwsAsync(index.search([QUESTION], { rerank: 'maxsim' }), { message: /lateInteraction: true/ });
  await t.throwsAsync(index.search([QUESTION], { k: 0 }), { message: /options\.k/ });
  t.deepEqual(await index.search([]), []);
  enc.dispose();
});

test('relative score fusion: min-max scaled scores, weighted; hybrid search with it fuses the two rankings so', async (t) => {
  const pairs = relativeScoreFusion(
    [{ id: 'a', score: 3 }, { id: 'b', score: 1 }, { id: 'c', score: 2 }],
    [{ id: 'b', score: 10 }, { id: 'd', score: 5 }],
    (h) => h.id,
    0.7,
  );
  const fused = new Map(pairs);
  t.deepEqual([...fused.keys()].sort(), ['a', 'b', 'c', 'd']);
  // a: the first's maximum (1) × 0.7; b: its minimum (0), and the second's maximum (1) × 0.3; c: halfway (0.5) × 0.7;
  // d: the second's minimum. Equal scores all scale to 1.
  for (const [id, want] of [['a', 0.7], ['b', 0.3], ['c', 0.35], ['d', 0]] as const) t.true(Math.abs(fused.get(id)! - want) < 1e-12, id);
  t.deepEqual(relativeScoreFusion([{ id: 'x', score: 2 }, { id: 'y', score: 2 }], [], (h) => h.id, 0.5), [['x', 0.5], ['y', 0.5]]);

  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS);
  const queries = [QUESTION, 'pneumonia x-ray images'];
  const dense = await index.search(queries, { k: DOCS.length });
  const lexical = await index.search(queries, { k: DOCS.length, mode: 'bm25' });
  for (const weight of [0.5, 0.8]) {
    const got = await index.search(queries, { k: 6, mode: 'hybrid', fusion: 'relative', hybridWeight: weight, candidates: 10 });
    queries.forEach((_, i) => {
      const at = (id: string) => DOCS.findIndex((d) => d.id === id);
      const scaled = (list: Hit[]) => {
        const top = list.slice(0, 10);
        const lo = Math.min(...top.map((h) => h.score));
        const span = Math.max(...top.map((h) => h.score)) - lo;
        return new Map(top.map((h) => [h.id, span > 0 ? (h.score - lo) / span : 1]));
      };
      const d = scaled(dense[i]);
      const b = scaled(lexical[i]);
      const want = [...new Set([...d.keys(), ...b.keys()])]
        .map((id) => ({ id, score: weight * (d.get(id) ?? 0) + (1 - weight) * (b.get(id) ?? 0) }))
        .sort((x, y) => y.score - x.score || at(x.id) - at(y.id))
        .slice(0, 6);
      t.deepEqual(got[i].map((h) => h.id), want.map((h) => h.id), `weight ${weight}, query ${i}`);
      got[i].forEach((h, r) => t.true(Math.abs(h.score - want[r].score) < 1e-6));
    });
  }
  // RRF stays the default, and the two differ here.
  const rrf = await index.search(queries, { k: 6, mode: 'hybrid', candidates: 10 });
  t.deepEqual(rrf, await index.search(queries, { k: 6, mode: 'hybrid', fusion: 'rrf', candidates: 10 }));
  t.notDeepEqual(rrf.map((hits) => hits.map((h) => h.score)), (await index.search(queries, { k: 6, mode: 'hybrid', fusion: 'relative', candidates: 10 })).map((hits) => hits.map((h) => h.score)));
  await t.throwsAsync(index.search(queries, { mode: 'hybrid', fusion: 'linear' as 'rrf' }), { message: /options\.fusion must be one of 'rrf', 'relative'/ });
  enc.dispose();
});

test('MaxSim re-ranking scores candidates exactly as ops.maxsim does; float16 storage stays close', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS, { lateInteraction: true, storage: 'float16' });
  const [hits] = await index.search([QUESTION], { k: DOCS.length, rerank: 'maxsim', candidates: DOCS.length });
  t.is(hits.length, DOCS.length);
  const [q] = await enc.embed([QUESTION], { output: 'tokens', normalize: true });
  const docTokens = await enc.embed(DOCS.map((d) => d.text), { output: 'tokens', normalize: true });
  const dim = enc.dimension;
  const Ld = Math.max(...docTokens.map((m) => m.dims[0]));
  const data = new Float32Array(DOCS.length * Ld * dim);
  const mask = new Uint8Array(DOCS.length * Ld);
  docTokens.forEach((m, n) => {
    data.set(m.data, n * Ld * dim);
    mask.fill(1, n * Ld, n * Ld + m.dims[0]);
  });
  const r = await ops.maxsim(
    { dims: [1, q.dims[0], dim], data: q.data },
    { dims: [1, q.dims[0]], data: new Uint8Array(q.dims[0]).fill(1) },
    { dims: [DOCS.length, Ld, dim], data },
    { dims: [DOCS.length, Ld], data: mask },
    { normalize: true },
  );
  // Token vectors are stored as float16: scores agree to its precision.
  for (const h of hits) t.true(Math.abs(h.score - r.value[DOCS.findIndex((d) => d.id === h.id)]) < 2e-3, h.id);
  t.true(hits.every((h, i) => i === 0 || h.score <= hits[i - 1].score));
  enc.dispose();
});

test('add and remove keep vectors, tokens and ids in step; duplicate and unknown ids are errors', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS.slice(0, 10), { lateInteraction: true });
  await index.add(DOCS.slice(10));
  t.is(index.size, DOCS.length);
  const target = DOCS[3];
  const [before] = await index.search([target.text], { k: 1, rerank: 'maxsim' });
  t.is(before[0].id, target.id, 'a document finds itself');
  await index.remove([target.id, DOCS[0].id]);
  t.is(index.size, DOCS.length - 2);
  const [after] = await index.search([target.text], { k: DOCS.length, rerank: 'maxsim', candidates: DOCS.length });
  t.false(after.some((h) => h.id === target.id || h.id === DOCS[0].id));
  const [other] = await index.search([DOCS[5].text], { k: 1, rerank: 'maxsim' });
  t.is(other[0].id, DOCS[5].id, 'token vectors of the remaining documents still line up');
  t.regex((await errorOf(index.add([DOCS[5]]))).message, /already in the index/);
  t.regex((await errorOf(index.remove(['nope']))).message, /no document "nope"/);
  enc.dispose();
});

test('upsert replaces documents by id and adds new ones; get and has read the stored documents', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS.slice(0, 6), { lateInteraction: true });
  t.true(index.has(DOCS[2].id));
  t.false(index.has('missing'));
  t.deepEqual(index.get([DOCS[3].id, 'missing', DOCS[0].id]), [DOCS[3], undefined, DOCS[0]]);
  // Replace document 2's text with document 9's, and add document 7.
  const replaced = { id: DOCS[2].id, text: DOCS[9].text, metadata: { project: 'replaced' } };
  await index.upsert([replaced, DOCS[7]]);
  t.is(index.size, 7);
  t.deepEqual(index.get([DOCS[2].id]), [replaced]);
  // Its vectors are the new text's: searching for document 9's text finds it first, with document 9's score.
  const fresh = await Index.build(enc, [...DOCS.slice(0, 2), ...DOCS.slice(3, 6), replaced, DOCS[7]], { lateInteraction: true });
  const [a, b] = await Promise.all([index.search([DOCS[9].text], { k: 7, rerank: 'maxsim' }), fresh.search([DOCS[9].text], { k: 7, rerank: 'maxsim' })]);
  t.is(a[0][0].id, DOCS[2].id);
  t.deepEqual(a[0].map((h) => h.id), b[0].map((h) => h.id));
  a[0].forEach((h, i) => t.true(Math.abs(h.score - b[0][i].score) < 1e-6));
  // An id given twice in one call is named as repeated there, not as in the index (it is not).
  await t.throwsAsync(index.upsert([DOCS[8], DOCS[8]]), { message: new RegExp(`^docs\\[1\\]\\.id "${DOCS[8].id}" repeats docs\\[0\\]'s \\(ids must be unique\\)$`) });
  await t.throwsAsync(index.add([DOCS[8], DOCS[9], { id: DOCS[8].id, text: 'x' }]), { message: new RegExp(`^docs\\[2\\]\\.id "${DOCS[8].id}" repeats docs\\[0\\]'s`) });
  t.false(index.has(DOCS[8].id), 'nothing of a refused call is added');
  await t.throwsAsync(index.add([DOCS[8], DOCS[3]]), { message: new RegExp(`^docs\\[1\\]\\.id "${DOCS[3].id}" is already in the index$`) });
  t.throws(() => index.get('x' as unknown as string[]), { message: /ids must be an array of document ids/ });
  enc.dispose();
});

test('the index keeps its own copy of each id and text (as UTF-8): documents come back as given; bad metadata and arguments are refused', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const given = [
    { id: 'a', text: 'naïve café in 東京 🚀', metadata: { lang: 'mixed' } },
    { id: 'b', text: '' },
    { id: 'c', text: DOCS[0].text, metadata: { nested: { x: [1, 2] } } },
  ];
  const index = await Index.build(enc, given.map((d) => ({ ...d })));
  t.deepEqual(index.get(['a', 'b', 'c']), given);
  // Changing a text get() returned does not change the index's.
  index.get(['a'])[0]!.text = 'changed';
  t.is(index.get(['a'])[0]!.text, given[0].text);
  const [hits] = await index.search([given[0].text], { k: 3 });
  t.deepEqual(
    hits.map(({ id, text, metadata }) => ({ id, text, ...(metadata ? { metadata } : {}) })).sort((x, y) => x.id.localeCompare(y.id)),
    given,
  );
  // After a removal, each remaining id still has its own text and metadata.
  await index.remove(['a']);
  t.deepEqual(index.get(['b', 'c']), given.slice(1));
  t.deepEqual(await index.search(['café'], { k: 5, filter: { text: { $regex: 'café' } } }), [[]]);
  // Arguments in the wrong order are named, not left to fail inside.
  await t.throwsAsync(Index.build(given as unknown as Encoder, enc as unknown as IndexDoc[]), { message: /encoder must be an Encoder \(from Encoder\.load\) or a SparseEncoder \(SparseEncoder\.load\): Index\.build\(encoder, docs, options\?\), got an array of length 3/ });
  await t.throwsAsync(Index.load(enc as unknown as string, enc), { message: /dir must be an index folder's path: Index\.load\(dir, encoder, options\?\), got an Encoder/ });
  await t.throwsAsync(index.add([{ id: 'half \ud83d', text: 'x' }]), { message: /docs\[0\]\.id must be well-formed Unicode/ });
  await index.add([{ id: 'whole \ud83d\ude80', text: 'y' }]);
  t.deepEqual(index.get(['whole 🚀']), [{ id: 'whole 🚀', text: 'y' }]);
  for (const metadata of ['tag', [1, 2], 3]) {
    await t.throwsAsync(index.add([{ id: 'm', text: 'x', metadata } as unknown as IndexDoc]), { message: /docs\[0\]\.metadata must be an object \(or absent, or null\)/ });
  }
  // Metadata null (JSON's "none") is no metadata: the document comes back without it, and saves and loads so.
  await index.add([{ id: 'n', text: 'x', metadata: null } as unknown as IndexDoc]);
  t.deepEqual(index.get(['n']), [{ id: 'n', text: 'x' }]);
  await index.upsert([{ id: 'c', text: 'z', metadata: null } as unknown as IndexDoc]);
  t.deepEqual(index.get(['c']), [{ id: 'c', text: 'z' }]);
  const saved = path.join(tempDir(), 'index');
  await index.save(saved);
  t.deepEqual((await Index.load(saved, enc)).get(['n', 'c']), [{ id: 'n', text: 'x' }, { id: 'c', text: 'z' }]);
  enc.dispose();
});

test('maximal marginal relevance picks k of the candidates as a float64 reference does; λ 1 is the plain ranking', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS);
  const queries = [QUESTION, 'pneumonia x-ray'];
  const q = await enc.embed(queries, { normalize: true, task: 'query' });
  const d = await enc.embed(DOCS.map((x) => x.text), { normalize: true, task: 'document' });
  const dim = enc.dimension;
  const vec = (m: { data: Float32Array }, i: number) => Array.from(m.data.subarray(i * dim, (i + 1) * dim));
  const cos = (a: number[], b: number[]) => a.reduce((s, x, c) => s + x * b[c], 0) / Math.hypot(...a) / Math.hypot(...b);
  for (const [lambda, candidates] of [[0.5, 8], [0.2, 12], [0.9, DOCS.length]] as const) {
    const pool = await index.search(queries, { k: candidates });
    const got = await index.search(queries, { k: 4, mmrLambda: lambda, candidates });
    queries.forEach((_, i) => {
      const ids = pool[i].map((h) => h.id);
      const vectors = ids.map((id) => vec(d, DOCS.findIndex((x) => x.id === id)));
      const picked: number[] = [];
      while (picked.length < 4) {
        let best = -1;
        let value = -Infinity;
        vectors.forEach((v, j) => {
          if (picked.includes(j)) return;
          const redundancy = picked.length ? Math.max(...picked.map((p) => cos(v, vectors[p]))) : 0;
          const x = lambda * cos(vec(q, i), v) - (1 - lambda) * redundancy;
          if (x > value + 1e-9) [best, value] = [j, x];
        });
        picked.push(best);
      }
      t.deepEqual(got[i].map((h) => h.id), picked.map((j) => ids[j]), `λ ${lambda}, ${candidates} candidates, query ${i}`);
      // Hits keep the ranking's scores.
      got[i].forEach((h) => t.is(h.score, pool[i].find((p) => p.id === h.id)!.score));
    });
  }
  const plain = await index.search(queries, { k: 5 });
  t.deepEqual(await index.search(queries, { k: 5, mmrLambda: 1 }), plain);
  // With a low λ the hits come from more projects than the plain ranking's.
  const projectsOf = (hits: { metadata?: Record<string, unknown> }[]) => new Set(hits.map((h) => h.metadata!.project)).size;
  const varied = await index.search([QUESTION], { k: 3, mmrLambda: 0.1 });
  t.true(projectsOf(varied[0]) >= projectsOf((await index.search([QUESTION], { k: 3 }))[0]));
  await t.throwsAsync(index.search(queries, { mmrLambda: 1.5 }), { message: /options\.mmrLambda must be a number in \[0, 1\]/ });
  enc.dispose();
});

test('an index loaded with mmap searches, adds and removes as one read into memory, in every storage', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const queries = [QUESTION, 'pneumonia x-ray'];
  for (const storage of ['float32', 'float16', 'int8', 'binary'] as const) {
    const dir = path.join(tempDir(), storage);
    await (await Index.build(enc, DOCS.slice(0, 15), { storage, lateInteraction: true })).save(dir);
    const read = await Index.load(dir, enc);
    const mapped = await Index.load(dir, enc, { mmap: true });
    const same = async (label: string) => {
      for (const options of [{ k: 5 }, { k: 5, rerank: 'maxsim' as const }, { k: 5, mode: 'hybrid' as const }]) {
        t.deepEqual(await mapped.search(queries, options), await read.search(queries, options), `${storage}, ${label}, ${JSON.stringify(options)}`);
      }
    };
    await same('loaded');
    // Saving over the mapped folder (written aside, then renamed) leaves the mapped index searching its old pages.
    await mapped.save(dir, { overwrite: true });
    await same('saved over while mapped');
    // The first change copies the mapped store into memory; the file stays as it was.
    const before = fs.readFileSync(path.join(dir, 'vectors.safetensors'));
    for (const index of [read, mapped]) await index.add(DOCS.slice(15, 18));
    await same('added to');
    for (const index of [read, mapped]) await index.remove([DOCS[1].id, DOCS[16].id]);
    await same('removed from');
    t.true(fs.readFileSync(path.join(dir, 'vectors.safetensors')).equals(before));
  }
  await t.throwsAsync(Index.load(tempDir(), enc, { mmap: 'yes' as unknown as boolean }), { message: /options\.mmap must be true or false/ });
  enc.dispose();
});

test('save/load round-trips; another model or damaged files are refused', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.build(enc, DOCS, { lateInteraction: true });
  const dir = path.join(tempDir(), 'ai.index');
  await index.save(dir);
  t.regex((await errorOf(index.save(dir))).message, /exists/);
  t.regex((await errorOf(index.save(5 as never))).message, /^dir must be a folder path, got number 5$/);
  t.regex((await errorOf(index.save(dir, { overwite: true } as never))).message, /^unknown option options\.overwite \(known options: overwrite\)$/);
  const again = await Index.load(dir, enc);
  t.deepEqual(await again.search([QUESTION], { k: 5, rerank: 'maxsim' }), await index.search([QUESTION], { k: 5, rerank: 'maxsim' }));

  // A different model (same shapes, other weights) is refused.
  const otherDir = fixtureCopy((d) => {
    const file = path.join(d, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
  });
  const other = await Encoder.load(otherDir, { device: 'cpu' });
  t.regex((await errorOf(Index.load(dir, other))).message, /built with another model/);
  other.dispose();

  const damaged = (edit: (d: string) => void) => {
    const copy = path.join(tempDir(), 'copy.index');
    fs.cpSync(dir, copy, { recursive: true });
    edit(copy);
    return errorOf(Index.load(copy, enc));
  };
  t.regex((await damaged((d) => fs.writeFileSync(path.join(d, 'index.json'), '{'))).message, /index\.json is not valid JSON/);
  t.regex((await damaged((d) => fs.rmSync(path.join(d, 'index.json')))).message, /no index\.json/);
  t.regex((await damaged((d) => fs.truncateSync(path.join(d, 'vectors.safetensors'), 100))).message, /malformed safetensors file .*vectors\.safetensors/);
  t.regex((await damaged((d) => fs.appendFileSync(path.join(d, 'docs.jsonl'), '{"id": "x", "text": "y", "tokens": 1}\n'))).message, /docs\.jsonl has \d+ documents, index\.json says/);
  t.regex((await damaged((d) => fs.writeFileSync(path.join(d, 'docs.jsonl'), 'nonsense\n'))).message, /docs\.jsonl:1 is not valid JSON/);
  const repeated = (d: string) => {
    const lines = fs.readFileSync(path.join(d, 'docs.jsonl'), 'utf8').split('\n');
    lines[2] = JSON.stringify({ ...JSON.parse(lines[2]), id: JSON.parse(lines[0]).id });
    fs.writeFileSync(path.join(d, 'docs.jsonl'), lines.join('\n'));
  };
  t.regex((await damaged(repeated)).message, /docs\.jsonl:3 repeats the id "/);
  t.regex((await damaged((d) => fs.rmSync(path.join(d, 'tokens.safetensors')))).message, /tokens\.safetensors/);
  enc.dispose();
});

/** An index folder's index.json as an index saved before fingerprint version 2 has it: sha256 of config.json and model.safetensors. */
function asOldFormat(dir: string, modelDir: string): void {
  const file = path.join(dir, 'index.json');
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
  const hash = createHash('sha256');
  for (const f of ['config.json', 'model.safetensors']) hash.update(fs.readFileSync(path.join(modelDir, f)));
  delete manifest.model.fingerprintVersion;
  manifest.model.fingerprint = hash.digest('hex');
  fs.writeFileSync(file, JSON.stringify(manifest));
}

test('the fingerprint covers the pooling, the tokenizer, the prompts and the length; an index saved with the old fingerprint still loads with its model', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const dir = path.join(tempDir(), 'mean.index');
  const index = await Index.build(enc, DOCS.slice(0, 6));
  await index.save(dir);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).model.fingerprintVersion, 2);
  const expected = await index.search([QUESTION], { k: 3 });
  t.deepEqual(await (await Index.load(dir, enc)).search([QUESTION], { k: 3 }), expected);
  // A copy of the model, file for file, is the same model.
  const same = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  t.deepEqual(await (await Index.load(dir, same)).search([QUESTION], { k: 3 }), expected);
  same.dispose();

  // Same config.json and weights, other vectors: the old fingerprint took each for the other.
  const refused = async (index: string, edit: (d: string) => void) => {
    const other = await Encoder.load(fixtureCopy(edit), { device: 'cpu' });
    try {
      const e = await errorOf(Index.load(index, other));
      t.is(e.code, 'INVALID_ARGUMENT');
      t.regex(e.message, /was built with another model \(index\.json says it was loaded from .*tiny-bert\).*load the index with the model that built it, or rebuild the index with this one/);
    } finally {
      other.dispose();
    }
  };
  await refused(dir, (d) => editJson(path.join(d, '1_Pooling', 'config.json'), (c) => ({ ...c, pooling_mode_mean_tokens: false, pooling_mode_cls_token: true })));
  await refused(dir, (d) => editJson(path.join(d, 'tokenizer.json'), (tok) => ({ ...tok, normalizer: null })));
  await refused(dir, (d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { query: 'query: ', document: '' } })));
  await refused(dir, (d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: 8 })));
  // The versions of the libraries that saved the model change no vector.
  const resaved = await Encoder.load(fixtureCopy((d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, __version__: { sentence_transformers: '9.9.9' } }))), { device: 'cpu' });
  t.deepEqual(await (await Index.load(dir, resaved)).search([QUESTION], { k: 3 }), expected);
  resaved.dispose();

  // An index saved by an earlier version (no fingerprintVersion, the old formula) loads with its model, and is saved anew
  // with the new fingerprint.
  const { fingerprint } = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).model;
  asOldFormat(dir, FIXTURE);
  const old = await Index.load(dir, enc);
  t.deepEqual(await old.search([QUESTION], { k: 3 }), expected);
  const otherWeights = await Encoder.load(fixtureCopy((d) => {
    const file = path.join(d, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
  }), { device: 'cpu' });
  t.regex((await errorOf(Index.load(dir, otherWeights))).message, /was built with another model .*: the config\.json or weights of .* differ/);
  otherWeights.dispose();
  const resave = path.join(tempDir(), 'resaved.index');
  await old.save(resave);
  const manifest = JSON.parse(fs.readFileSync(path.join(resave, 'index.json'), 'utf8'));
  t.is(manifest.model.fingerprintVersion, 2);
  t.is(manifest.model.fingerprint, fingerprint);
  await refused(resave, (d) => editJson(path.join(d, '1_Pooling', 'config.json'), (c) => ({ ...c, pooling_mode_mean_tokens: false, pooling_mode_cls_token: true })));
  // A fingerprint version this one does not know (a newer coltrast's) is refused as such.
  editJson(path.join(resave, 'index.json'), (m) => ({ ...m, model: { ...m.model, fingerprintVersion: 3 } }));
  const unknown = await errorOf(Index.load(resave, enc));
  t.is(unknown.code, 'MODEL_FILES');
  t.regex(unknown.message, /index\.json says fingerprintVersion 3, which this version of coltrast does not know/);
  enc.dispose();
});

test('the fingerprint covers a Dense head: an index of a model with one refuses the model with another head', async (t) => {
  const t5 = path.resolve(__dirname, 'fixtures', 'tiny-encoders', 't5');
  const enc = await Encoder.load(t5, { device: 'cpu' });
  t.truthy(enc.projection);
  const dir = path.join(tempDir(), 't5.index');
  await (await Index.build(enc, DOCS.slice(0, 4))).save(dir);
  t.is((await Index.load(dir, enc)).size, 4);
  const head = folderCopy(t5, (d) => {
    const file = path.join(d, '2_Dense', 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 2] ^= 0x40; // one weight of the head, much changed
    fs.writeFileSync(file, bytes);
  });
  const other = await Encoder.load(head, { device: 'cpu' });
  const [a, b] = [await enc.embed(['a query']), await other.embed(['a query'])];
  t.notDeepEqual(Array.from(a.data), Array.from(b.data)); // the head changes the vectors
  const e = await errorOf(Index.load(dir, other));
  t.is(e.code, 'INVALID_ARGUMENT');
  t.regex(e.message, /was built with another model .*load the index with the model that built it, or rebuild the index with this one/);
  other.dispose();
  enc.dispose();
});

test('the fingerprint follows links: a model laid out as the Hugging Face cache lays it out (links to blobs) has its Pooling covered', async (t) => {
  // A snapshot as the hub cache writes it (lib/hub.ts): real folders, every file a link to a blob.
  const snapshot = (edit?: (d: string) => void) => {
    const blobs = fixtureCopy(edit);
    const snap = path.join(tempDir(), 'snapshot');
    const link = (relative: string) => {
      const source = path.join(blobs, relative);
      if (fs.statSync(source).isDirectory()) {
        fs.mkdirSync(path.join(snap, relative), { recursive: true });
        for (const name of fs.readdirSync(source)) link(path.join(relative, name));
      } else fs.symlinkSync(source, path.join(snap, relative));
    };
    link('');
    return snap;
  };
  const enc = await Encoder.load(snapshot(), { device: 'cpu' });
  const cls = await Encoder.load(snapshot((d) => editJson(path.join(d, '1_Pooling', 'config.json'), (c) => ({ ...c, pooling_mode_mean_tokens: false, pooling_mode_cls_token: true }))), { device: 'cpu' });
  const copy = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  try {
    t.is(enc.pooling, 'mean');
    t.is(cls.pooling, 'cls');
    const dir = path.join(tempDir(), 'linked.index');
    await (await Index.build(enc, DOCS.slice(0, 4))).save(dir);
    // Another pooling behind the links is another model (the links were not files to the fingerprint: it loaded).
    t.regex((await errorOf(Index.load(dir, cls))).message, /was built with another model/);
    // The same files, linked or not, are the same model.
    t.is((await Index.load(dir, copy)).size, 4);
  } finally {
    [enc, cls, copy].forEach((e) => e.dispose());
  }
});

test('the fingerprint tells a folder loaded bare from the same folder loaded with the LoRA adapter beside its weights; an old index refuses an adapter-only folder', async (t) => {
  // A PEFT adapter on the queries' projections, beside the model's own config.json and weights: Encoder.load applies
  // it only when told to (adapter: the folder itself).
  const addAdapter = (d: string) => {
    fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['query'], base_model_name_or_path: FIXTURE, task_type: 'FEATURE_EXTRACTION' }));
    const values = (n: number) => Buffer.from(Float32Array.from({ length: n }, (_, i) => 0.3 * ((i % 5) - 2)).buffer);
    const tensors = new Map<string, RawTensor>();
    for (const layer of [0, 1]) {
      tensors.set(`base_model.model.encoder.layer.${layer}.attention.self.query.lora_A.weight`, { dtype: 'F32', shape: [2, 32], data: values(64) });
      tensors.set(`base_model.model.encoder.layer.${layer}.attention.self.query.lora_B.weight`, { dtype: 'F32', shape: [32, 2], data: values(64) });
    }
    writeSafetensors(path.join(d, 'adapter_model.safetensors'), tensors);
  };
  const dir = fixtureCopy(addAdapter);
  const bare = await Encoder.load(dir, { device: 'cpu' });
  const adapted = await Encoder.load(dir, { device: 'cpu', adapter: dir });
  // The same adapter saved as sentence-transformers saves one: the folder without config.json or weights (its base's).
  const adapterOnly = await Encoder.load(fixtureCopy((d) => {
    addAdapter(d);
    fs.rmSync(path.join(d, 'config.json'));
    fs.rmSync(path.join(d, 'model.safetensors'));
  }), { device: 'cpu' });
  try {
    t.is(bare.lora, undefined);
    t.is(adapted.lora?.rank, 2);
    t.notDeepEqual(Array.from((await bare.embed(['a query'])).data), Array.from((await adapted.embed(['a query'])).data));
    const plain = path.join(tempDir(), 'bare.index');
    await (await Index.build(bare, DOCS.slice(0, 4))).save(plain);
    const withAdapter = path.join(tempDir(), 'adapted.index');
    await (await Index.build(adapted, DOCS.slice(0, 4))).save(withAdapter);
    // Each loads with its own model and is refused for the other (both loaded as one model: the adapter's files
    // were hashed as the folder's either way).
    t.is((await Index.load(plain, bare)).size, 4);
    t.is((await Index.load(withAdapter, adapted)).size, 4);
    t.regex((await errorOf(Index.load(plain, adapted))).message, /was built with another model .*: the weights, LoRA adapter, layers run \(Encoder.load.s layers\), modules/);
    t.regex((await errorOf(Index.load(withAdapter, bare))).message, /was built with another model/);
    // An index saved before fingerprint version 2 (of config.json and the weights) is another model's for an
    // adapter-only folder, which has neither (not an ENOENT from reading its config.json).
    asOldFormat(plain, dir);
    t.is((await Index.load(plain, bare)).size, 4);
    t.regex((await errorOf(Index.load(plain, adapterOnly))).message, /was built with another model .*: the config\.json or weights of /);
  } finally {
    bare.dispose();
    adapted.dispose();
    adapterOnly.dispose();
  }
});

test('an index built with a model changed in memory (trained, or a LoRA adapter added) records it, and its folder\'s model is refused with how to rebuild', async (t) => {
  const folder = fixtureCopy();
  const pairs = wordDataset(4);
  const trained = await Encoder.load(folder, { device: 'cpu' });
  const lora = await Encoder.load(folder, { device: 'cpu' });
  const fresh = await Encoder.load(folder, { device: 'cpu' });
  try {
    t.is(trained.memoryChanges, undefined);
    const before = await trained.embed(['a query']);
    const trainer = await trained.createTrainer({ learningRate: 1e-2, seed: 1 });
    await trainer.step(pairs.map((p) => p.query), pairs.map((p) => p.positive), STEP);
    trainer.dispose();
    t.deepEqual(trained.memoryChanges?.changes, ['trained']);
    t.notDeepEqual(Array.from((await trained.embed(['a query'])).data), Array.from(before.data));
    await lora.addLora(readLoraOptions(true, 'bert', folder), 1);
    t.deepEqual(lora.memoryChanges?.changes, ['a LoRA adapter added']);

    for (const [model, what] of [[trained, 'trained'], [lora, 'a LoRA adapter added']] as const) {
      const dir = path.join(tempDir(), 'changed.index');
      await (await Index.build(model, DOCS.slice(0, 4))).save(dir);
      t.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).model.changedInMemory, [what]);
      // The Encoder that built it, as it is, opens it; the folder it was loaded from does not make its vectors.
      t.is((await Index.load(dir, model)).size, 4);
      const e = await errorOf(Index.load(dir, fresh));
      t.is(e.code, 'INVALID_ARGUMENT');
      t.regex(e.message, new RegExp(`was built with a model changed in memory \\(${what}\\) after it was loaded from .*model: only that Encoder, changed no further, makes its vectors`));
      t.regex(e.message, /Save the changed model \(encoder\.save\(dir\)\), load it from that folder and rebuild the index with it/);
    }

    // Built with the model as loaded and saved after it changed: the vectors, and so the index, are the folder's.
    const model = await Encoder.load(folder, { device: 'cpu' });
    const index = await Index.build(model, DOCS.slice(0, 4));
    const again = await model.createTrainer({ learningRate: 1e-2, seed: 1 });
    await again.step(pairs.map((p) => p.query), pairs.map((p) => p.positive), STEP);
    again.dispose();
    const dir = path.join(tempDir(), 'before-training.index');
    await index.save(dir);
    t.is((await Index.load(dir, fresh)).size, 4);
    const changed = await errorOf(Index.load(dir, model));
    t.regex(changed.message, /was not built with this Encoder as it is now: it was changed in memory \(trained\) since it was loaded from .*model, and makes other vectors/);
    // The index in memory: adding documents or searching by vector would mix the two models' vectors.
    for (const [work, run] of [
      ['add documents', () => index.add([{ id: 'new', text: 'another document' }])],
      ['upsert documents', () => index.upsert([{ id: DOCS[0].id, text: 'replaced' }])],
      ['search', () => index.search(['a query'])],
      ['search', () => index.search(['a query'], { mode: 'hybrid' })],
    ] as const) {
      const e = await errorOf(run());
      t.is(e.code, 'INVALID_ARGUMENT');
      t.regex(e.message, new RegExp(`cannot ${work}: the index's Encoder was changed in memory \\(trained\\) after the index's 4 documents were embedded`));
    }
    t.is(index.size, 4);
    t.is((await index.search(['a query'], { mode: 'bm25', k: 2 }))[0].length, 2, 'BM25 does not use the model');
    // An empty index takes the model as it is now, and its save records the change.
    const empty = await Index.build(fresh, []);
    const onward = await fresh.createTrainer({ learningRate: 1e-2, seed: 1 });
    await onward.step(pairs.map((p) => p.query), pairs.map((p) => p.positive), STEP);
    onward.dispose();
    await empty.add(DOCS.slice(0, 2));
    t.is((await empty.search(['a query'], { k: 1 }))[0].length, 1);
    const emptyDir = path.join(tempDir(), 'empty-then-trained.index');
    await empty.save(emptyDir);
    t.deepEqual(JSON.parse(fs.readFileSync(path.join(emptyDir, 'index.json'), 'utf8')).model.changedInMemory, ['trained']);
    model.dispose();
  } finally {
    [trained, lora, fresh].forEach((e) => e.dispose());
  }
});

test('coltrast index reads a large .jsonl in slices: ids repeated across slices are refused by line; residual storage spreads its first slice', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  // More documents than one slice (16,384), so that the index is built from one and added to from the next.
  const n = 17000;
  const topics = ['cats', 'dogs', 'ships', 'trains', 'lighthouses'];
  const rows = Array.from({ length: n }, (_, i) => JSON.stringify({ id: `d${i}`, text: `document ${i} about ${topics[i % 5]}`, ...(i % 7 === 0 ? { metadata: { seventh: true } } : {}) }));
  const data = path.join(tempDir(), 'many.jsonl');
  fs.writeFileSync(data, `${rows.slice(0, 9000).join('\n')}\n\n${rows.slice(9000).join('\n')}\n`); // a blank line is skipped
  const dir = path.join(tempDir(), 'many.index');
  const built = run('index', '--data', data, '--model', FIXTURE, '--output', dir, '--device', 'cpu', '--json');
  t.is(built.status, 0, built.stderr);
  t.is(JSON.parse(built.stdout).documents, n);
  const saved = fs.readFileSync(path.join(dir, 'docs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as IndexDoc);
  t.deepEqual(saved.map((d) => d.id), rows.map((r) => JSON.parse(r).id), 'file order');
  t.deepEqual(saved[16999], { id: 'd16999', text: 'document 16999 about lighthouses' });
  t.deepEqual(saved[16996], { id: 'd16996', text: 'document 16996 about dogs', metadata: { seventh: true } });
  // The same id again, in the second slice: refused with its line (the blank line counts as a line).
  const repeated = path.join(tempDir(), 'repeated.jsonl');
  fs.writeFileSync(repeated, `${[...rows, JSON.stringify({ id: 'd5', text: 'again' })].join('\n')}\n`);
  const refused = run('index', '--data', repeated, '--model', FIXTURE, '--output', path.join(tempDir(), 'r.index'), '--device', 'cpu');
  t.is(refused.status, 2);
  t.regex(refused.stderr, new RegExp(`repeated\\.jsonl:${n + 1}: the id "d5" is repeated \\(ids must be unique\\)`));
  // Residual token storage trains its centroids on the first slice: documents 0, 2, 4, ... (every k-th of the file, k = 2
  // here), not the file's first 16,384; the others follow in file order.
  const residual = path.join(tempDir(), 'residual.index');
  const r = run('index', '--data', data, '--model', FIXTURE, '--output', residual, '--device', 'cpu', '--late-interaction', '--token-storage', 'residual', '--json');
  t.is(r.status, 0, r.stderr);
  const order = fs.readFileSync(path.join(residual, 'docs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).id as string);
  const even = Array.from({ length: n / 2 }, (_, i) => `d${2 * i}`);
  const odd = Array.from({ length: n / 2 }, (_, i) => `d${2 * i + 1}`);
  t.deepEqual(order, [...even, ...odd]);
});

test('coltrast index and search from the command line', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const dir = path.join(tempDir(), 'ai.index');
  const data = path.resolve(__dirname, '..', 'examples', 'ai-projects.json');
  const built = run('index', '--data', data, '--output', dir, '--late-interaction', '--device', 'cpu', '--threads', '1', '--json');
  t.is(built.status, 0, built.stderr);
  const summary = JSON.parse(built.stdout);
  t.true(summary.documents >= 3 && summary.lateInteraction);
  const found = run('search', '--index', dir, QUESTION, '--k', '3', '--mode', 'bm25', '--device', 'cpu', '--json');
  t.is(found.status, 0, found.stderr);
  const [result] = JSON.parse(found.stdout);
  t.is(result.query, QUESTION);
  t.true(result.hits[0].id.startsWith('trading-bot'), JSON.stringify(result.hits.map((h: { id: string }) => h.id)));
  t.is(result.hits[0].metadata.project, 'trading-bot');
  const reranked = run('search', '--index', dir, QUESTION, '--rerank', 'maxsim', '--device', 'cpu', '--threads', '1');
  t.is(reranked.status, 0, reranked.stderr);
  t.regex(reranked.stdout, /^ {2}1\. \S+#\d+ {2}\d\.\d{4}/m);
  const bad = run('search', '--index', path.join(dir, 'missing'), QUESTION, '--device', 'cpu');
  t.is(bad.status, 2);
  t.regex(bad.stderr, /no index\.json/);
  // --update: one document replaced, one added, with the index's own settings (token vectors too).
  const more = path.join(tempDir(), 'more.jsonl');
  fs.writeFileSync(more, `${JSON.stringify({ id: 'trading-bot#0', text: 'replaced text about options pricing', metadata: { v: 2 } })}\n${JSON.stringify({ id: 'new#1', text: 'a brand new document about lighthouses' })}\n`);
  const updated = run('index', '--data', more, '--output', dir, '--update', '--device', 'cpu', '--json');
  t.is(updated.status, 0, updated.stderr);
  t.like(JSON.parse(updated.stdout), { documents: summary.documents + 1, added: 1, replaced: 1 });
  const after = JSON.parse(run('search', '--index', dir, 'lighthouses', '--k', '1', '--mode', 'bm25', '--rerank', 'maxsim', '--device', 'cpu', '--json').stdout);
  t.is(after[0].hits[0].id, 'new#1');
  const refused = run('index', '--data', more, '--output', dir, '--update', '--storage', 'int8', '--device', 'cpu');
  t.is(refused.status, 2);
  t.regex(refused.stderr, /--update adds to the index as it was built: drop --storage/);
  const nothing = run('index', '--data', more, '--output', path.join(tempDir(), 'none'), '--update', '--device', 'cpu');
  t.is(nothing.status, 2);
  t.regex(nothing.stderr, /--update needs an index at --output/);
  // A folder that is not an index is never replaced (the CLI once emptied whatever --output named); an index is.
  const folder = tempDir();
  fs.writeFileSync(path.join(folder, 'keep.txt'), 'mine');
  const kept = run('index', '--data', more, '--output', folder, '--device', 'cpu');
  t.is(kept.status, 2);
  t.regex(kept.stderr, /^coltrast: --output, .+, exists and is not an index \(no index\.json\): saving would replace it; choose another folder\n$/);
  t.deepEqual(fs.readdirSync(folder), ['keep.txt']);
  const rebuilt = run('index', '--data', more, '--output', dir, '--device', 'cpu', '--json');
  t.is(rebuilt.status, 0, rebuilt.stderr);
  t.is(JSON.parse(rebuilt.stdout).documents, 2, 'an index folder is rebuilt from the new data');
  const index = await Index.load(dir, await Encoder.load('default', { device: 'cpu' }));
  await t.throwsAsync(index.save(folder, { overwrite: true }), { message: /exists and is not an index/ });
  t.deepEqual(fs.readdirSync(folder), ['keep.txt']);
  // Output files that name a folder: refused before any work.
  const embedded = run('embed', more, '--output', folder, '--device', 'cpu');
  t.is(embedded.status, 2);
  t.regex(embedded.stderr, /^coltrast: --output: .+ is a folder; give the path of the file to write\n$/);
  const exported = run('export', '--index', dir, '--format', 'pgvector', '--output', folder);
  t.is(exported.status, 2);
  t.regex(exported.stderr, /output: .+ is a folder; give the path of the file to write/);
});
