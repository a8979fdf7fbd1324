// communityDetection and paraphraseMining (sentence-transformers' util.community_detection and
// util.paraphrase_mining_embeddings) against a brute-force reading of their definitions on planted clusters: every
// pair's cosine computed in float64. Equal to sentence-transformers' own on the same vectors in
// test/python-interop.test.ts.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, communityDetection, paraphraseMining } from '../lib';
import { seededRandom } from '../lib/random';
import { CLI, FIXTURE, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';

/** `n` rows of width `d` around `centres` directions (`spread` of noise), some rows exact copies of others. */
function planted(n: number, d: number, centres: number, spread: number, seed: number): { dims: [number, number]; data: Float32Array } {
  const random = seededRandom(seed);
  const c = Array.from({ length: centres }, () => Array.from({ length: d }, () => random.next() - 0.5));
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    if (i % 17 === 16) {
      data.copyWithin(i * d, (i - 3) * d, (i - 2) * d); // a duplicate of an earlier row
      continue;
    }
    const centre = c[Math.floor(random.next() * centres)];
    for (let k = 0; k < d; k++) data[i * d + k] = centre[k] + spread * (random.next() - 0.5) * 2;
  }
  return { dims: [n, d], data };
}

/** Every pair's cosine in float64. */
function cosines(m: { dims: [number, number]; data: Float32Array }): number[][] {
  const [n, d] = m.dims;
  const norms = Array.from({ length: n }, (_, i) => Math.hypot(...m.data.subarray(i * d, (i + 1) * d)));
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += m.data[i * d + k] * m.data[j * d + k];
      return dot / (norms[i] * norms[j]);
    }),
  );
}

/** community_detection read from its definition, over float64 cosines. */
function communitiesByDefinition(cos: number[][], threshold: number, minSize: number): number[][] {
  const found = cos
    .map((row, i) => [i, ...row.map((s, j) => [s, j] as const).filter(([s, j]) => s >= threshold && j !== i).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, j]) => j)])
    .filter((c) => c.length >= minSize)
    .sort((a, b) => b.length - a.length);
  const used = new Set<number>();
  const kept: number[][] = [];
  for (const c of found) {
    const free = c.filter((i) => !used.has(i));
    if (free.length < minSize) continue;
    free.forEach((i) => used.add(i));
    kept.push(free);
  }
  return kept.sort((a, b) => b.length - a.length);
}

test('communityDetection finds the planted clusters as its definition does: each row with enough close rows, largest first, no row twice', async (t) => {
  const m = planted(300, 24, 6, 0.25, 3);
  const cos = cosines(m);
  for (const [threshold, minCommunitySize, batchSize] of [[0.75, 10, 1024], [0.9, 3, 37], [0.6, 40, 64], [0.99, 2, 50]] as const) {
    const got = await communityDetection(m, { threshold, minCommunitySize, batchSize });
    const want = communitiesByDefinition(cos, threshold, minCommunitySize);
    t.true(got.length > 0, `${threshold}/${minCommunitySize}: some community`);
    // A cosine within float32's error of the threshold may land either side: none here.
    t.deepEqual(got.map((c) => [...c].sort((a, b) => a - b)), want.map((c) => [...c].sort((a, b) => a - b)), `threshold ${threshold}, min size ${minCommunitySize}`);
    got.forEach((c) => t.true(c.length >= minCommunitySize));
    t.is(new Set(got.flat()).size, got.flat().length, 'a row is in one community');
  }
  // A min size above the rows given is the rows given; none close enough, no community.
  t.deepEqual(await communityDetection(planted(5, 4, 1, 0, 1), { threshold: 0.99, minCommunitySize: 50 }), [[0, 1, 2, 3, 4]]);
  t.deepEqual(await communityDetection(m, { threshold: 1, minCommunitySize: 3 }), []);
  t.deepEqual(await communityDetection({ dims: [0, 4], data: new Float32Array(0) }), []);
});

test('paraphraseMining gives each row\'s nearest other rows as pairs, once each, best first, as its definition does', async (t) => {
  const m = planted(120, 16, 5, 0.4, 9);
  const cos = cosines(m);
  for (const topK of [1, 5, 200]) {
    const got = await paraphraseMining(m, { topK, batchSize: 33 });
    const want = new Map<string, number>();
    cos.forEach((row, i) => {
      const nearest = row.map((s, j) => [s, j] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, topK + 1).filter(([, j]) => j !== i);
      for (const [s, j] of nearest) want.set(`${Math.min(i, j)},${Math.max(i, j)}`, s);
    });
    // Ties at the k-th place (the duplicated rows) may bring another tied row: the pairs of the others agree.
    t.true(Math.abs(got.length - want.size) <= m.dims[0] / 17 + 1, `topK ${topK}: ${got.length} pairs, ${want.size} by definition`);
    for (const p of got) {
      t.true(p.i < p.j);
      t.true(Math.abs(p.score - cos[p.i][p.j]) < 1e-5, `${p.i},${p.j}`);
    }
    const kept = got.filter((p) => want.has(`${p.i},${p.j}`)).length;
    t.true(kept >= want.size - m.dims[0] / 17 - 1, `topK ${topK}: ${kept} of ${want.size} pairs`);
    t.true(got.every((p, k) => k === 0 || got[k - 1].score >= p.score), 'best first');
  }
  const capped = await paraphraseMining(m, { topK: 5, maxPairs: 10 });
  t.deepEqual(capped, (await paraphraseMining(m, { topK: 5 })).slice(0, 10));
  // The duplicated rows are the best pairs, at cosine 1.
  t.true(capped.slice(0, 5).every((p) => Math.abs(p.score - 1) < 1e-6));
});

test('near-duplicate texts by paraphraseMining of embed() vectors; bad input is refused by name', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const texts = ['a fast model', 'the cat sat on the mat', 'a fast model', 'search vectors quickly', 'the cat sat on the mat'];
    const pairs = await paraphraseMining(await enc.embed(texts), { topK: 2 });
    t.deepEqual(pairs.slice(0, 2).map((p) => [p.i, p.j]), [[0, 2], [1, 4]]);
  } finally {
    enc.dispose();
  }
  const m = planted(10, 4, 2, 0.1, 1);
  t.regex((await rejection(() => communityDetection(m, { threshold: 2 }))).message, /options\.threshold must be a cosine similarity in \[-1, 1\]/);
  t.regex((await rejection(() => communityDetection(m, { minCommunitySize: 0 }))).message, /options\.minCommunitySize must be a positive integer/);
  t.regex((await rejection(() => paraphraseMining(m, { topk: 3 } as never))).message, /unknown option options\.topk/);
  t.regex((await rejection(() => paraphraseMining({ dims: [3, 4], data: new Float32Array(5) }))).message, /embeddings must be a float32 matrix/);
  const aborted = AbortSignal.abort();
  t.regex((await rejection(() => communityDetection(m, { signal: aborted }))).message, /communityDetection\(\) was aborted \(options\.signal\) after 0 of 10 rows/);
  t.is(((await rejection(() => paraphraseMining(m, { signal: aborted }))) as { code?: string }).code, 'ABORTED');
});

test('coltrast cluster writes the communities, or with --pairs the near-duplicate pairs, as JSON lines; misplaced flags are refused', async (t) => {
  const dir = tempDir();
  const texts = ['a fast model', 'the cat sat on the mat', 'a fast model', 'search vectors quickly', 'the cat sat on the mat', 'a fast model!'];
  const input = path.join(dir, 'texts.txt');
  fs.writeFileSync(input, texts.join('\n') + '\n');
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'cluster', input, '--model', FIXTURE, '--device', 'cpu', ...args], { encoding: 'utf8', timeout: 120_000 });
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const vectors = await enc.embed(texts);
  enc.dispose();
  let r = run(['--threshold', '0.99', '--min-size', '2']);
  t.is(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const want = await communityDetection(vectors, { threshold: 0.99, minCommunitySize: 2 });
  t.deepEqual(lines.map((l) => l.rows), want);
  t.deepEqual(lines[0].texts, want[0].map((i) => texts[i]));
  t.regex(r.stderr, /\d+ communities among 6 texts/);
  const out = path.join(dir, 'pairs.jsonl');
  r = run(['--pairs', '--top-k', '2', '--min-score', '0.999', '--output', out, '--json']);
  t.is(r.status, 0, r.stderr);
  t.is(JSON.parse(r.stdout).output, out);
  const pairs = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(pairs.map((p) => [p.i, p.j]), (await paraphraseMining(vectors, { topK: 2 })).filter((p) => p.score >= 0.999).map((p) => [p.i, p.j]));
  t.true(pairs.some((p) => p.text1 === 'a fast model' && p.text2 === 'a fast model'));
  r = run(['--pairs', '--threshold', '0.5']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--pairs lists near-duplicate pairs: --threshold is for communities/);
  r = run(['--top-k', '3']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--top-k goes with --pairs/);
  r = run(['--threshold', '3']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--threshold must be a cosine similarity in \[-1, 1\]/);
});
