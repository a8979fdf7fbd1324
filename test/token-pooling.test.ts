// Hierarchical token pooling (lib/token-pooling.ts; checked against sentence-transformers itself in
// test/python-interop.test.ts): a handmade case with a known answer, and an Index that pools its documents' token
// vectors (BuildOptions.poolFactor): its scores are MaxSim over poolTokens() of each document's vectors, it keeps
// the factor through save, load and add, works with residual storage and from the CLI, and refuses what it cannot do.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, poolTokens, serve, type IndexDoc } from '../lib';
import { fixtureCopy, tempDir } from './helpers/fixture';
import { makeSmallMultiVector, rejection } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const WORDS = 'the cat sat on a mat while river banks hold money and search engines rank tiny models quickly'.split(' ');
const DOCS: IndexDoc[] = Array.from({ length: 24 }, (_, i) => ({
  id: `d${i}`,
  text: Array.from({ length: 3 + (i % 9) }, (_, j) => WORDS[(i * 7 + j * 3) % WORDS.length]).join(' '),
}));
const QUERIES = ['cat on a mat', 'river bank money', 'search engines'];

let multi: Encoder;
test.before(async () => {
  multi = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  await makeSmallMultiVector(multi);
});
test.after.always(() => multi?.dispose());

test('poolTokens: three tight groups after a protected vector become the protected vector and the three means', (t) => {
  const dim = 4;
  const axis = (a: number, noise: number) => Array.from({ length: dim }, (_, c) => (c === a ? 1 : 0) + (c === 3 ? noise : 0));
  // The protected vector, then groups along axes 0, 1 and 2 with small offsets along axis 3, interleaved.
  const groups = [0, 1, 2, 0, 1, 2, 0, 1, 2].map((a, i) => axis(a, 0.01 * (i + 1)));
  const rows = [axis(3, 0), ...groups];
  const pooled = poolTokens({ dims: [rows.length, dim], data: Float32Array.from(rows.flat()) }, 3, 1);
  t.deepEqual(pooled.dims, [4, dim]);
  t.deepEqual(Array.from(pooled.data.subarray(0, dim)), axis(3, 0), 'the protected vector first, as it was');
  // The means, in fcluster's order (here axis 0: members 1, 4, 7; axis 1: 2, 5, 8; axis 2: 3, 6, 9).
  [0, 1, 2].forEach((a, g) => {
    const members = groups.filter((_, i) => i % 3 === a);
    const mean = Array.from({ length: dim }, (_, c) => members.reduce((s, m) => s + m[c], 0) / members.length);
    Array.from(pooled.data.subarray((g + 1) * dim, (g + 2) * dim)).forEach((x, c) => t.true(Math.abs(x - mean[c]) < 1e-6, `group ${a}, entry ${c}`));
  });
  // Nothing to pool: a factor that keeps every vector, or one vector after the protected one.
  const two = { dims: [2, dim] as [number, number], data: Float32Array.from([...axis(0, 0), ...axis(1, 0)]) };
  t.is(poolTokens(two, 2, 1), two);
  t.is(poolTokens({ dims: [rows.length, dim], data: Float32Array.from(rows.flat()) }, 1, 1).dims[0], rows.length);
});

test('an index with token pooling scores MaxSim over the pooled vectors, keeps its factor through save, load and add', async (t) => {
  const index = await Index.build(multi, DOCS.slice(0, 20), { poolFactor: 2 });
  t.is(index.poolFactor, 2);
  const docTokens = await multi.embed(DOCS.map((d) => d.text), { output: 'tokens', task: 'document' });
  const pooled = docTokens.map((m) => poolTokens(m, 2, 1));
  t.true(pooled.some((m, i) => m.dims[0] < docTokens[i].dims[0]), 'some documents pooled');
  const queryTokens = await multi.embed(QUERIES, { output: 'tokens', task: 'query' });
  const dim = multi.tokenDimension;
  /** MaxSim of query q against each of the first `docs` documents' pooled vectors, best first. */
  const expected = (q: number, docs: number) =>
    pooled
      .slice(0, docs)
      .map((m, d) => {
        const qm = queryTokens[q];
        let sum = 0;
        for (let a = 0; a < qm.dims[0]; a++) {
          let best = -Infinity;
          for (let r = 0; r < m.dims[0]; r++) {
            let dot = 0;
            for (let c = 0; c < dim; c++) dot += qm.data[a * dim + c] * m.data[r * dim + c];
            best = Math.max(best, dot);
          }
          sum += best;
        }
        return { id: DOCS[d].id, score: sum };
      })
      .sort((a, b) => b.score - a.score)
      .slice(0, 5);
  const check = async (ix: Index, docs: number, label: string) => {
    const hits = await ix.search(QUERIES, { k: 5 });
    QUERIES.forEach((_, q) => {
      const want = expected(q, docs);
      t.deepEqual(hits[q].map((h) => h.id), want.map((h) => h.id), `${label}, query ${q}`);
      hits[q].forEach((h, r) => t.true(Math.abs(h.score - want[r].score) < 1e-2, `${label}: ${h.score} vs ${want[r].score} (float16 storage)`));
    });
  };
  await check(index, 20, 'built');
  const dir = path.join(tempDir(), 'index');
  await index.save(dir);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).tokenPooling, { poolFactor: 2, protectedTokens: 1 });
  const loaded = await Index.load(dir, multi);
  t.is(loaded.poolFactor, 2);
  await loaded.add(DOCS.slice(20));
  await check(loaded, 24, 'loaded, then added to');
  const server = await serve({ encoder: multi, index: loaded, port: 0 });
  try {
    t.like(((await (await fetch(`${server.url}/info`)).json()) as { index: object }).index, { documents: 24, pool_factor: 2 });
  } finally {
    await server.close();
  }

  // With residual storage: the k-means sample and the stored vectors are the pooled ones; every centroid probed and
  // every candidate scored, the top hits stay near the float16 index's.
  const residual = await Index.build(multi, DOCS, { poolFactor: 2, tokenStorage: 'residual', residualBits: 4, centroids: 8 });
  const [a] = await residual.search([QUERIES[0]], { k: 3, nprobe: 8, fullScores: 100 });
  t.is(a.length, 3);
  t.true(expected(0, 24).slice(0, 5).map((h) => h.id).includes(a[0].id));
  // A damaged tokenPooling in index.json is refused.
  const manifest = path.join(dir, 'index.json');
  const json = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  fs.writeFileSync(manifest, JSON.stringify({ ...json, tokenPooling: { poolFactor: 0, protectedTokens: 1 } }));
  t.regex((await rejection(() => Index.load(dir, multi))).message, /index\.json says tokenPooling \{"poolFactor":0/);
});

test('token pooling from the CLI, and its refusals', async (t) => {
  const root = tempDir();
  const modelDir = path.join(root, 'model');
  await multi.save(modelDir);
  const jsonl = path.join(root, 'docs.jsonl');
  fs.writeFileSync(jsonl, DOCS.map((d) => JSON.stringify(d)).join('\n'));
  const out = path.join(root, 'index');
  const built = spawnSync(process.execPath, [CLI, 'index', '--data', jsonl, '--model', modelDir, '--output', out, '--pool-factor', '3', '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 240_000 });
  t.is(built.status, 0, built.stderr);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')).tokenPooling, { poolFactor: 3, protectedTokens: 1 });
  const counts = fs.readFileSync(path.join(out, 'docs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).tokens as number);
  const raw = (await multi.embed(DOCS.map((d) => d.text), { output: 'tokens', task: 'document' })).map((m) => m.dims[0]);
  t.deepEqual(counts, raw.map((n) => (n - 1 <= 1 || Math.floor((n - 1) / 3) >= n - 1 ? n : 1 + Math.max(1, Math.floor((n - 1) / 3)))));

  const plain = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  t.teardown(() => plain.dispose());
  t.regex((await rejection(() => Index.build(plain, DOCS, { poolFactor: 2 }))).message, /options\.poolFactor must be absent: the index keeps no token vectors/);
  t.regex((await rejection(() => Index.build(multi, DOCS, { poolFactor: 0 }))).message, /options\.poolFactor must be a positive integer/);
  t.regex((await rejection(() => Index.build(multi, DOCS, { poolFactor: 1.5 }))).message, /options\.poolFactor must be a positive integer/);
  // A late-interaction index pools too.
  const late = await Index.build(plain, DOCS, { lateInteraction: true, poolFactor: 2 });
  const hits = await late.search(QUERIES, { k: 3, rerank: 'maxsim' });
  t.is(hits[0].length, 3);
});
