// Search filters (SearchOptions.filter, lib/filter.ts). A filtered search must equal the unfiltered ranking of
// every document with the non-matching ones taken out, so each case compares the two: dense search in every
// storage (float32, float16, int8, binary), MaxSim re-ranking, BM25, hybrid fusion, a multi-vector index searched
// exactly and with residual tokens (every centroid probed); PLAID with one probe still finds k matches. Then the
// refusals ($where, unknown operators, bad values), the kept matches following add() and remove(), the CLI's
// --filter and serve's "filter".
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, serve, type Filter, type Hit, type IndexDoc } from '../lib';
import { native } from '../lib/native';
import { reciprocalRankFusion, type NativeResidualStore } from '../lib/search-index';
import { compileFilter, filterFields, filterKey } from '../lib/filter';
import { fixtureCopy, tempDir } from './helpers/fixture';
import { makeSmallMultiVector, rejection } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const projects = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'examples', 'ai-projects.json'), 'utf8')).projects;
const DOCS: IndexDoc[] = projects.flatMap((p: any) =>
  p.readme_content.split(/\n\n+/).map((text: string, i: number) => ({
    id: `${p.project_id}#${i}`,
    text,
    metadata: { project: p.project_id, part: i, ...(i % 3 === 0 ? { tags: ['intro', `p${i}`] } : {}) },
  })),
);
const QUERIES = ['Which project uses reinforcement learning?', 'pneumonia x-ray images', 'sentiment of reviews'];
const position = new Map(DOCS.map((d, i) => [d.id, i]));

// Filters of each kind, with the same test written by hand.
const FILTERS: [string, Filter, (d: IndexDoc) => boolean][] = [
  ['equality on a metadata field', { 'metadata.project': projects[0].project_id }, (d) => d.metadata!.project === projects[0].project_id],
  ['$in and $gte', { 'metadata.project': { $in: [projects[1].project_id, projects[2].project_id] }, 'metadata.part': { $gte: 2 } }, (d) => d.metadata!.project !== projects[0].project_id && (d.metadata!.part as number) >= 2],
  ['$or, $exists and an array element', { $or: [{ 'metadata.tags': 'intro' }, { 'metadata.tags': { $exists: false }, id: `${projects[2].project_id}#1` }] }, (d) => 'tags' in d.metadata! || d.id === `${projects[2].project_id}#1`],
  ['$regex on the text and $not', { text: { $regex: 'model', $options: 'i' }, 'metadata.part': { $not: { $lt: 1 } } }, (d) => /model/i.test(d.text) && (d.metadata!.part as number) >= 1],
  ['a function', (d) => d.id.endsWith('1') || d.id.endsWith('4'), (d) => d.id.endsWith('1') || d.id.endsWith('4')],
  ['$nor on the id, $and on the text', { $nor: [{ id: `${projects[0].project_id}#0` }], $and: [{ text: { $regex: 'data' } }] }, (d) => d.id !== `${projects[0].project_id}#0` && /data/.test(d.text)],
  // Most documents (18 of 21): a dense store scores every row and masks the others instead of gathering.
  ['$ne, leaving most documents', { 'metadata.part': { $ne: 0 } }, (d) => d.metadata!.part !== 0],
];

test('filterFields: a query reads the id or text only where one of its paths (through $and, $or, $nor) starts there', (t) => {
  t.deepEqual(filterFields({ 'metadata.lang': 'en', 'metadata.year': { $gte: 2020 } }), { id: false, text: false });
  t.deepEqual(filterFields({ text: { $regex: 'x' } }), { id: false, text: true });
  t.deepEqual(filterFields({ $or: [{ 'metadata.a': 1 }, { $and: [{ id: 'x' }] }] }), { id: true, text: false });
  t.deepEqual(filterFields({ $nor: [{ 'text.length': 3 }] }), { id: false, text: true });
  t.deepEqual(filterFields({ metadata: { $exists: false } }), { id: false, text: false });
  // A function, or a top-level operator it does not follow, reads everything.
  t.deepEqual(filterFields(() => true), { id: true, text: true });
  t.deepEqual(filterFields({ $not: { id: 'x' } }), { id: true, text: true });
  t.deepEqual(filterFields({ $or: 'nonsense' }), { id: true, text: true });
});

test('a $regex string is matched in linear time (RE2): a pattern that backtracks for hours in JavaScript answers at once, and what RE2 does not take is refused with the reason', (t) => {
  // In a child process with a time limit: JavaScript's engine would hold the thread (2.6 s at 26 characters here,
  // doubling with each one more), and a held thread cannot be timed out from inside.
  const script = `const { compileFilter } = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'filter.js'))});
    const doc = (text) => ({ id: 'x', text });
    const tester = compileFilter('filter', { text: { $regex: '^(a+)+$' } });
    process.stdout.write(JSON.stringify([tester(doc('a'.repeat(5000) + '!')), tester(doc('a'.repeat(5000)))]));`;
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(run.status, 0, `${run.signal ?? ''} ${run.stderr}`);
  t.is(run.stdout, '[false,true]');
  // MongoDB's $options letters i, m and s, as JavaScript's flags.
  const doc = { id: 'x', text: 'First line\nSecond LINE' };
  for (const [query, expected] of [
    [{ $regex: 'line' }, true],
    [{ $regex: 'LINE$' }, true],
    [{ $regex: '^second' }, false],
    [{ $regex: '^second', $options: 'im' }, true],
    [{ $regex: 'line.second' }, false],
    [{ $regex: 'line.second', $options: 'si' }, true],
    [{ $regex: '\\bFirst\\s+\\w+' }, true],
  ] as const) {
    t.is(compileFilter('filter', { text: query })(doc), expected, JSON.stringify(query));
  }
  // What RE2 does not take, refused by name; a RegExp object (the API's own) is JavaScript's, as before.
  for (const [query, reason] of [
    [{ $regex: '(a)\\1' }, /is not a pattern RE2 takes .*without backreferences or lookarounds/],
    [{ $regex: 'a(?=b)' }, /is not a pattern RE2 takes/],
    [{ $regex: 'a', $options: 'x' }, /\$options "x": "x" is not one of i, m, s, u/],
    [{ $regex: 'a', $options: 1 }, /\$options takes letters/],
    [{ $regex: 5 }, /\$regex takes a pattern string/],
  ] as const) {
    const error = t.throws(() => compileFilter('options.filter', { text: query }), undefined, JSON.stringify(query)) as any;
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, reason);
    t.regex(error.message, /^options\.filter: /);
  }
  t.true(compileFilter('filter', { text: { $regex: /(line)\n\w+ \1/i } })(doc));
});

/** The first k hits of a full ranking (every document) that `match` keeps. */
const restricted = (full: Hit[], match: (d: IndexDoc) => boolean, k: number): Hit[] => full.filter((h) => match(DOCS[position.get(h.id)!])).slice(0, k);

function sameHits(t: any, got: Hit[], expected: Hit[], label: string, tolerance = 1e-6): void {
  t.deepEqual(got.map((h) => h.id), expected.map((h) => h.id), label);
  got.forEach((h, i) => t.true(Math.abs(h.score - expected[i].score) <= tolerance, `${label}: ${h.id} ${h.score} vs ${expected[i].score}`));
}

let plain: Encoder;
let multi: Encoder;
test.before(async () => {
  plain = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  multi = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  await makeSmallMultiVector(multi);
});
test.after.always(() => {
  plain?.dispose();
  multi?.dispose();
});

test('dense search in every storage, filtered, is the full ranking with the non-matching documents taken out', async (t) => {
  const N = DOCS.length;
  for (const storage of ['float32', 'float16', 'int8', 'binary'] as const) {
    const index = await Index.build(plain, DOCS, { storage });
    // A binary index: every candidate rescored in both searches, so the float cosine orders them all.
    const rescore = storage === 'binary' ? { rescoreMultiplier: N } : {};
    const full = await index.search(QUERIES, { k: N, ...rescore });
    for (const [name, filter, match] of FILTERS) {
      const matches = DOCS.filter(match).length;
      t.true(matches > 0 && matches < N, name);
      for (const k of [3, N]) {
        const got = await index.search(QUERIES, { k, filter, ...rescore });
        QUERIES.forEach((_, q) => {
          t.is(got[q].length, Math.min(k, matches), `${storage}, ${name}, k ${k}: hits`);
          sameHits(t, got[q], restricted(full[q], match, k), `${storage}, ${name}, k ${k}`);
        });
      }
    }
  }
});

test('MaxSim re-ranking, BM25 and hybrid search, filtered, rank only the matching documents', async (t) => {
  const N = DOCS.length;
  const index = await Index.build(plain, DOCS, { lateInteraction: true });
  const fullDense = await index.search(QUERIES, { k: N });
  const fullBm25 = await index.search(QUERIES, { k: N, mode: 'bm25' });
  const fullMaxsim = await index.search(QUERIES, { k: N, rerank: 'maxsim', candidates: N });
  for (const [name, filter, match] of FILTERS) {
    const bm25 = await index.search(QUERIES, { k: 4, mode: 'bm25', filter });
    // All matches are the candidates: re-ranking them is the full re-ranking, restricted.
    const maxsim = await index.search(QUERIES, { k: 4, rerank: 'maxsim', candidates: N, filter });
    const hybrid = await index.search(QUERIES, { k: 4, mode: 'hybrid', candidates: 5, filter });
    QUERIES.forEach((_, q) => {
      sameHits(t, bm25[q], restricted(fullBm25[q], match, 4), `bm25, ${name}`);
      sameHits(t, maxsim[q], restricted(fullMaxsim[q], match, 4), `maxsim, ${name}`, 1e-5);
      // Hybrid fuses the first 5 matches of each ranking.
      const fused = reciprocalRankFusion(restricted(fullDense[q], match, 5), restricted(fullBm25[q], match, 5), (h) => h.id, 0.5, 60)
        .sort((a, b) => b[1] - a[1] || position.get(a[0])! - position.get(b[0])!)
        .slice(0, 4);
      t.deepEqual(hybrid[q].map((h) => h.id), fused.map(([id]) => id), `hybrid, ${name}`);
    });
  }
});

test('a multi-vector index, exact and with residual tokens, filtered; PLAID with one probe still finds k matches', async (t) => {
  const N = DOCS.length;
  const exact = await Index.build(multi, DOCS);
  const residual = await Index.build(multi, DOCS, { tokenStorage: 'residual', residualBits: 4, centroids: 16, batchSize: 4 });
  const every = { nprobe: 16, fullScores: 10_000 };
  const fullExact = await exact.search(QUERIES, { k: N });
  const fullResidual = await residual.search(QUERIES, { k: N, ...every });
  for (const [name, filter, match] of FILTERS) {
    const matches = DOCS.filter(match).length;
    const a = await exact.search(QUERIES, { k: 4, filter });
    const b = await residual.search(QUERIES, { k: 4, filter, ...every });
    // One probe, and full scores for k documents only, fewer than the matches (so the candidates come from
    // probing, not from the matches themselves): k matches found.
    const c = await residual.search(QUERIES, { k: 4, filter, nprobe: 1, fullScores: 4 });
    QUERIES.forEach((_, q) => {
      sameHits(t, a[q], restricted(fullExact[q], match, 4), `exact, ${name}`, 1e-5);
      sameHits(t, b[q], restricted(fullResidual[q], match, 4), `residual, ${name}`, 1e-5);
      t.is(c[q].length, Math.min(4, matches), `one probe, ${name}`);
      t.true(c[q].every((h) => match(DOCS[position.get(h.id)!])), `one probe, ${name}: only matches`);
    });
  }
  await t.throwsAsync(exact.search(QUERIES, { mmrLambda: 0.5 }), { message: /options\.mmrLambda compares pooled vectors, and a multi-vector index has none/ });
  // Without a filter too: one probe and k larger than its documents, the probes widen until k are found.
  const [wide] = await residual.search([QUERIES[0]], { k: N, nprobe: 1, fullScores: N });
  t.is(wide.length, N);
});

test('PLAID widens its probes until k findable documents are candidates; a filter of few documents scores them all', async (t) => {
  // Four far-apart clusters (unit axes 0-3 of 8 dimensions), 40 documents of 3 tokens, document d in cluster d % 4.
  const dim = 8;
  const Store = (native() as unknown as { NativeResidualStore: new (dim: number, bits: number) => NativeResidualStore }).NativeResidualStore;
  const store = new Store(dim, 4);
  const rows = new Float32Array(40 * 3 * dim);
  for (let d = 0; d < 40; d++) {
    for (let j = 0; j < 3; j++) {
      const row = rows.subarray((d * 3 + j) * dim, (d * 3 + j + 1) * dim);
      row[d % 4] = 1;
      row[4 + j] = 0.05 * (1 + (d % 7));
      const norm = Math.hypot(...row);
      row.forEach((x, c) => (row[c] = x / norm));
    }
  }
  await store.train(rows, 4, 42);
  await store.add(rows);
  const counts = new Int32Array(40).fill(3);
  const query = new Float32Array(dim);
  query[0] = 1; // one token, nearest cluster 0's centroid
  const search = async (k: number, fullScores: number, allow?: Uint8Array) => {
    const r = await store.search(query, Int32Array.of(1), counts, k, 1, fullScores, false, allow);
    return Array.from(r.indices).filter((d) => d >= 0);
  };
  // Cluster 0 holds 10 documents: one probe finds those, and k = 20 takes the next probes' too.
  const twenty = await search(20, 1000);
  t.is(twenty.length, 20);
  t.deepEqual(twenty.slice(0, 10).map((d) => d % 4), new Array(10).fill(0));
  // Only cluster 2's 10 documents allowed, more than the 5 full scores: no probe of cluster 0 finds one, so the
  // probes widen until cluster 2's centroid is probed.
  const cluster2 = Uint8Array.from({ length: 40 }, (_, d) => (d % 4 === 2 ? 1 : 0));
  const found = await search(5, 5, cluster2);
  t.is(found.length, 5);
  t.true(found.every((d) => d % 4 === 2));
  // Three documents allowed, fewer than the full scores: all three scored, whatever the probes reach.
  const three = Uint8Array.from({ length: 40 }, (_, d) => (d === 1 || d === 6 || d === 39 ? 1 : 0));
  t.deepEqual((await search(5, 5, three)).sort((a, b) => a - b), [1, 6, 39]);
  // A document without token vectors (a 41st, of 0 rows) is never a hit, allowed or not.
  const withEmpty = Uint8Array.from({ length: 41 }, (_, d) => (d === 1 || d === 6 || d === 40 ? 1 : 0));
  const r = await store.search(query, Int32Array.of(1), Int32Array.from([...counts, 0]), 5, 1, 5, false, withEmpty);
  t.deepEqual(Array.from(r.indices).filter((d) => d >= 0).sort((a, b) => a - b), [1, 6]);
  // A filter of the wrong length is refused.
  t.throws(() => store.search(query, Int32Array.of(1), counts, 5, 1, 5, false, new Uint8Array(39)), { message: /allow must be a Uint8Array with one flag per document \(40\)/ });
});

test('filters are checked, follow added and removed documents, and may match nothing', async (t) => {
  const index = await Index.build(plain, DOCS.slice(0, 10));
  const message = async (filter: unknown) => (await rejection(() => index.search(QUERIES, { filter: filter as Filter }))).message;
  t.regex(await message({ $where: 'this.id === "x"' }), /options\.filter: Unsupported operation: \$where .*pass a function/);
  t.regex(await message({ 'metadata.part': { $near: 1 } }), /options\.filter: Unsupported operation: \$near \(known operators: \$eq, /);
  t.regex(await message('project'), /options\.filter must be a MongoDB query object/);
  t.regex(await message([{ id: 'a' }]), /options\.filter must be a MongoDB query object/);
  t.regex(
    await message(() => {
      throw new Error('broken predicate');
    }),
    new RegExp(`options\\.filter failed on document "${DOCS[0].id}": broken predicate`),
  );
  t.deepEqual(await index.search(QUERIES, { filter: { 'metadata.project': 'none' } }), [[], [], []]);
  // The kept matches of a query object are dropped when documents change.
  const newest = { id: DOCS[10].id };
  t.deepEqual(await index.search([QUERIES[0]], { filter: newest }), [[]]);
  await index.add([DOCS[10]]);
  t.deepEqual((await index.search([QUERIES[0]], { filter: newest }))[0].map((h) => h.id), [DOCS[10].id]);
  await index.remove([DOCS[10].id]);
  t.deepEqual(await index.search([QUERIES[0]], { filter: newest }), [[]]);
});

test("a query object's kept matches are found by what it says: RegExps, undefined values, Dates are not taken for one another", async (t) => {
  const docs: IndexDoc[] = [
    { id: 'a', text: 'postgres pgvector setup', metadata: { year: 2019, at: new Date('2019-05-01') } },
    { id: 'b', text: 'sqlite notes', metadata: { year: 2021, at: new Date('2021-05-01') } },
    { id: 'c', text: 'pgvector tuning', metadata: { year: 2023, at: new Date('2023-05-01') } },
  ];
  const index = await Index.build(plain, docs);
  const ids = async (filter: Filter) => (await index.search(['database'], { k: 10, filter }))[0].map((h) => h.id).sort().join(',');
  // Each pair once JSON.stringify'd alike ({} for a RegExp, the undefined key dropped), so the second got the first's matches.
  t.is(await ids({ text: /pgvector/ }), 'a,c');
  t.is(await ids({ text: /sqlite/ }), 'b');
  t.is(await ids({ text: /PGVECTOR/i }), 'a,c');
  t.is(await ids({ text: /PGVECTOR/ }), '');
  t.is(await ids({ text: { $regex: /tuning/ } }), 'c');
  t.is(await ids({ text: { $regex: /notes/ } }), 'b');
  t.is(await ids({ id: { $ne: 'zz' }, 'metadata.year': undefined }), ''); // sift: no document lacks the year
  t.is(await ids({ id: { $ne: 'zz' } }), 'a,b,c');
  t.is(await ids({ 'metadata.at': { $gt: new Date('2020-01-01') } }), 'b,c');
  t.is(await ids({ 'metadata.at': { $gt: new Date('2022-01-01') } }), 'c');
  // The same query in new objects is found again (the kept matches are used): what it says is its key.
  t.is(filterKey({ text: /pgvector/ }), filterKey({ text: /pgvector/ }));
  t.is(await ids({ text: /sqlite/ }), 'b');
});

test('filterKey: one key per query, told apart where JSON.stringify is not; none for what it cannot write', (t) => {
  const apart: [unknown, unknown][] = [
    [{ text: /a/ }, { text: /b/ }],
    [{ text: /a/i }, { text: /a/ }],
    [{ x: undefined }, {}],
    [{ x: NaN }, { x: null }],
    [{ x: Infinity }, { x: null }],
    [{ x: new Date(0) }, { x: new Date(1) }],
    [{ x: new Date(0) }, { x: '1970-01-01T00:00:00.000Z' }],
    [{ x: '1' }, { x: 1 }],
    [{ x: [1, undefined] }, { x: [1, null] }],
    [{ x: 1n }, { x: '1' }],
  ];
  for (const [a, b] of apart) {
    t.not(filterKey(a), undefined);
    t.not(filterKey(a), filterKey(b), `${String(filterKey(a))} vs ${String(filterKey(b))}`);
  }
  t.is(filterKey({ $or: [{ a: /x/g }, { b: { $in: [1, 'two', null] } }] }), filterKey({ $or: [{ a: /x/g }, { b: { $in: [1, 'two', null] } }] }));
  // A function, a class instance or a cycle is not kept (it is matched anew each search).
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  for (const uncached of [() => true, { x: () => true }, { x: new Map() }, cycle, { x: Symbol('s') }]) t.is(filterKey(uncached), undefined);
  const shared = { $gt: 1 };
  t.not(filterKey({ a: shared, b: shared }), undefined); // shared, not cyclic
});

test('coltrast search --filter and serve\'s "filter" (and "mmr_lambda", "fusion")', async (t) => {
  const root = tempDir();
  const jsonl = path.join(root, 'docs.jsonl');
  fs.writeFileSync(jsonl, DOCS.map((d) => JSON.stringify(d)).join('\n'));
  const dir = path.join(root, 'index');
  const modelDir = path.join(root, 'model');
  await plain.save(modelDir);
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const built = run('index', '--data', jsonl, '--model', modelDir, '--output', dir, '--device', 'cpu');
  t.is(built.status, 0, built.stderr);
  const [name, filter, match] = FILTERS[1];
  const searched = run('search', '--index', dir, '--filter', JSON.stringify(filter), '--k', '3', '--json', '--device', 'cpu', QUERIES[0]);
  t.is(searched.status, 0, `${name}: ${searched.stderr}`);
  const saved = await Encoder.load(modelDir, { device: 'cpu' });
  t.teardown(() => saved.dispose());
  const index = await Index.load(dir, saved);
  const expected = (await index.search([QUERIES[0]], { k: 3, filter }))[0];
  const hits: Hit[] = JSON.parse(searched.stdout)[0].hits;
  t.deepEqual(hits.map((h) => h.id), expected.map((h) => h.id));
  t.true(hits.every((h) => match(DOCS[position.get(h.id)!])));
  const bad = run('search', '--index', dir, '--filter', '{metadata: 1}', QUERIES[0]);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--filter must be a JSON MongoDB query/);
  const refused = run('search', '--index', dir, '--filter', '{"$where": "1"}', '--device', 'cpu', QUERIES[0]);
  t.not(refused.status, 0);
  t.regex(refused.stderr, /Unsupported operation: \$where/);

  const server = await serve({ encoder: saved, index, port: 0 });
  try {
    const post = async (body: unknown) => {
      const res = await fetch(`${server.url}/search`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
      return { status: res.status, json: (await res.json()) as any };
    };
    const ok = await post({ query: QUERIES[0], k: 3, filter });
    t.is(ok.status, 200);
    t.deepEqual(ok.json.results[0].hits, expected);
    const where = await post({ query: QUERIES[0], filter: { $where: 'true' } });
    t.is(where.status, 400);
    t.regex(where.json.error, /"filter": Unsupported operation: \$where/);
    // mmr_lambda reaches Index.search (λ 1: the plain ranking), and is checked.
    const plainHits = (await index.search([QUERIES[0]], { k: 3 }))[0];
    t.deepEqual((await post({ query: QUERIES[0], k: 3, mmr_lambda: 1 })).json.results[0].hits, plainHits);
    const varied = await post({ query: QUERIES[0], k: 3, mmr_lambda: 0 });
    t.deepEqual(varied.json.results[0].hits, (await index.search([QUERIES[0]], { k: 3, mmrLambda: 0 }))[0]);
    // So does fusion.
    const relative = await post({ query: QUERIES[0], k: 3, mode: 'hybrid', fusion: 'relative' });
    t.deepEqual(relative.json.results[0].hits, (await index.search([QUERIES[0]], { k: 3, mode: 'hybrid', fusion: 'relative' }))[0]);
    const badFusion = await post({ query: QUERIES[0], mode: 'hybrid', fusion: 'linear' });
    t.is(badFusion.status, 400);
    t.regex(badFusion.json.error, /"fusion" must be "rrf" or "relative"/);
    const badLambda = await post({ query: QUERIES[0], mmr_lambda: 2 });
    t.is(badLambda.status, 400);
    t.regex(badLambda.json.error, /"mmr_lambda" must be a number in \[0, 1\]/);
    const notObject = await post({ query: QUERIES[0], filter: 'project' });
    t.is(notObject.status, 400);
    t.regex(notObject.json.error, /"filter" must be a MongoDB query object/);
  } finally {
    await server.close();
  }
});
