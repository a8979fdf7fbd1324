// Hard-negative mining (lib/mining.ts). Each query's negatives are checked against the definition written out
// here on the full score matrix (every query against every document, from embed() with the model's prompts):
// among the query's best rangeMax + maxPositives documents, strike its positives and whatever a filter refuses,
// rank the rest, skip rangeMin and take numNegatives. Then the other formats against the triplets, seeded random
// sampling, a cross-encoder's rescoring, the JSONL file and the CLI (whose rows train() reads), and the refusals.
// test/python-interop.test.ts compares the rows with sentence-transformers' own mine_hard_negatives.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, Index, mineHardNegatives, train, type MineOptions, type MinedRow } from '../lib';
import { fixtureCopy, FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { dot, makeSmallMultiVector, rejection, rows } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const projects = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8')).projects;
const qa: { question: string; answer: string; context?: string }[] = projects.flatMap((p: any) => p.qa_pairs);
// Every question with its answer; the first question again with a second positive that scores higher than the answer (the lower
// sets the margins), and one pair repeated.
const PAIRS = [...qa.map((x) => ({ query: x.question, positive: x.answer })), { query: qa[0].question, positive: 'MedScan uses a ResNet-50 architecture.' }, { query: qa[3].question, positive: qa[3].answer }];
const CORPUS = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').split('\n').filter((l) => l.trim());

let encoder: Encoder;
test.before(async () => {
  encoder = await Encoder.load('default', { device: 'cpu' });
});
test.after.always(() => encoder?.dispose());

interface Reference {
  queries: string[];
  corpus: string[];
  scores: number[][];
  positives: number[][];
}

/**
 * Every query's score against every document, and each query's positives (by corpus position); `score` gives the
 * score matrix of the distinct queries against the corpus (default: the shared model's normalized vectors, dotted).
 */
async function reference(score?: (queries: string[], corpus: string[]) => Promise<number[][]>): Promise<Reference> {
  const corpus = [...new Set([...CORPUS, ...PAIRS.map((p) => p.positive)])];
  const queries = [...new Set(PAIRS.map((p) => p.query))];
  const dense = async () => {
    const q = rows(await encoder.embed(queries, { task: 'query', normalize: true }) as any);
    const d = rows(await encoder.embed(corpus, { task: 'document', normalize: true }) as any);
    return q.map((v) => d.map((w) => dot(v, w)));
  };
  const positives = queries.map((query) => [...new Set(PAIRS.filter((p) => p.query === query).map((p) => corpus.indexOf(p.positive)))]);
  return { queries, corpus, scores: await (score ? score(queries, corpus) : dense()), positives };
}

/** The definition: the negatives (corpus positions, best first) of query i. */
function expected(ref: Reference, i: number, o: { rangeMin?: number; rangeMax: number; numNegatives: number; maxPositives: number; refuse?: (s: number, hardest: number) => boolean }): number[] {
  const s = ref.scores[i];
  const window = s.map((_, j) => j).sort((a, b) => s[b] - s[a]).slice(0, o.rangeMax + o.maxPositives);
  const hardest = Math.min(...ref.positives[i].map((p) => s[p]));
  const left = window.filter((j) => !ref.positives[i].includes(j) && !(o.refuse?.(s[j], hardest) ?? false));
  return left.slice(o.rangeMin ?? 0, o.rangeMax).slice(0, o.numNegatives);
}

/** The triplets (with their scores) that the definition gives, every query's positives times its negatives. */
function expectedTriplets(ref: Reference, o: Parameters<typeof expected>[2]): MinedRow[] {
  const want: MinedRow[] = [];
  ref.queries.forEach((query, i) => {
    const negatives = expected(ref, i, o);
    for (const p of ref.positives[i]) {
      for (const n of negatives) want.push({ query, positive: ref.corpus[p], negative: ref.corpus[n], scores: [ref.scores[i][p], ref.scores[i][n]] });
    }
  });
  return want;
}

/** The largest difference between the rows' scores and the expected rows' (row by row). */
const worstScore = (got: MinedRow[], want: MinedRow[]) => Math.max(...got.flatMap((x, k) => (x as any).scores.map((v: number, j: number) => Math.abs(v - (want[k] as any).scores[j]))));

/** `pairs` with the negatives of the n-tuple `rows` mined for them (pairs without a row keep none). */
function withMinedNegatives<P extends { query: string; positive: string }>(pairs: P[], rows: MinedRow[]): P[] {
  const byPair = new Map(rows.map((r: any) => [`${r.query}\n${r.positive}`, r.negatives as string[]]));
  return pairs.map((p) => ({ ...p, ...(byPair.has(`${p.query}\n${p.positive}`) && { negatives: byPair.get(`${p.query}\n${p.positive}`) }) }));
}

const CASES: [string, Partial<MineOptions>, { rangeMax: number; refuse?: (s: number, hardest: number) => boolean }][] = [
  // Defaults: 3 negatives from a window of rangeMin + 3 + 2 (the most positives of a query, the repeat counted).
  ['the defaults', {}, { rangeMax: 5 }],
  ['rangeMin 2', { rangeMin: 2, numNegatives: 2 }, { rangeMax: 6 }],
  ['relativeMargin 0.05', { relativeMargin: 0.05 }, { rangeMax: 32, refuse: (s, p) => s > p - Math.abs(p) * 0.05 }],
  ['absoluteMargin and maxScore', { absoluteMargin: 0.02, maxScore: 0.3, rangeMax: 12 }, { rangeMax: 12, refuse: (s, p) => s + 0.02 > p || s > 0.3 }],
  ['minScore', { minScore: 0.25, numNegatives: 4 }, { rangeMax: 6, refuse: (s) => s < 0.25 }],
];

for (const [name, options, how] of CASES) {
  test(`triplets: each query's negatives are its best candidates left after its positives and the filters (${name})`, async (t) => {
    const ref = await reference();
    const r = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: encoder, outputScores: true, ...options });
    t.is(r.rangeMax, how.rangeMax);
    t.is(r.queries, ref.queries.length);
    t.is(r.corpus, ref.corpus.length);
    const want = expectedTriplets(ref, { ...options, numNegatives: options.numNegatives ?? 3, rangeMax: how.rangeMax, maxPositives: 2, refuse: how.refuse });
    t.true(want.length > 20, `${want.length} rows`);
    t.deepEqual(r.rows.map((x) => ({ ...x, scores: undefined })), want.map((x) => ({ ...x, scores: undefined })));
    const worst = worstScore(r.rows, want);
    t.true(worst < 1e-5, `scores differ by ${worst}`);
    t.is(r.negative.count, want.length);
    t.is(r.missing, ref.positives.flat().length * (options.numNegatives ?? 3) - want.length);
    if (how.refuse) t.true(Object.values(r.skipped).every((n) => n > 0), JSON.stringify(r.skipped));
  });
}

test('n-tuple, labeled-pair and labeled-list rows hold the triplets\' negatives; includePositives ranks the positives among them', async (t) => {
  const base = { data: PAIRS, corpus: CORPUS, model: encoder, relativeMargin: 0.05, numNegatives: 2 } as const;
  const triplets = (await mineHardNegatives(base)).rows as { query: string; positive: string; negative: string }[];
  const negativesOf = (query: string, positive: string) => triplets.filter((x) => x.query === query && x.positive === positive).map((x) => x.negative);

  const tuples = await mineHardNegatives({ ...base, outputFormat: 'n-tuple', outputScores: true });
  const full = new Set(tuples.rows.map((x: any) => `${x.query}\n${x.positive}`));
  for (const x of tuples.rows as any[]) {
    t.deepEqual(x.negatives, negativesOf(x.query, x.positive));
    t.is(x.scores.length, 3);
  }
  // A (query, positive) with fewer than two negatives has no tuple; every other has one.
  for (const p of PAIRS) t.is(full.has(`${p.query}\n${p.positive}`), negativesOf(p.query, p.positive).length === 2);
  t.is(tuples.missing, tuples.possible - tuples.rows.length);

  const labeled = (await mineHardNegatives({ ...base, outputFormat: 'labeled-pair' })).rows as { query: string; document: string; label: number }[];
  for (const query of new Set(PAIRS.map((p) => p.query))) {
    const mine = labeled.filter((x) => x.query === query);
    const positives = [...new Set(PAIRS.filter((p) => p.query === query).map((p) => p.positive))];
    t.deepEqual(mine.filter((x) => x.label === 1).map((x) => x.document), positives);
    t.deepEqual(mine.filter((x) => x.label === 0).map((x) => x.document), negativesOf(query, positives[0]));
  }

  const lists = (await mineHardNegatives({ ...base, outputFormat: 'labeled-list', outputScores: true })).rows as { query: string; documents: string[]; scores: number[] }[];
  for (const x of lists) {
    t.deepEqual(x.documents.slice(1), negativesOf(x.query, x.documents[0]));
    t.is(x.scores.length, x.documents.length);
  }

  // With the positives kept, a query's row is its plain ranking: the best candidate is usually its positive.
  const ranked = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: encoder, includePositives: true, outputFormat: 'triplet', outputScores: true });
  t.is(ranked.format, 'n-tuple');
  const ref = await reference();
  for (const x of ranked.rows as any[]) {
    const i = ref.queries.indexOf(x.query);
    const best = ref.scores[i].map((_, j) => j).sort((a, b) => ref.scores[i][b] - ref.scores[i][a]).slice(0, 3);
    t.deepEqual(x.negatives, best.map((j) => ref.corpus[j]));
  }
});

test('random sampling: seeded, drawn from the candidates left in the window, written best first', async (t) => {
  const base = { data: PAIRS, corpus: CORPUS, model: encoder, samplingStrategy: 'random', rangeMax: 15, numNegatives: 3, outputFormat: 'n-tuple', outputScores: true } as const;
  const a = await mineHardNegatives({ ...base, seed: 1 });
  const again = await mineHardNegatives({ ...base, seed: 1 });
  const other = await mineHardNegatives({ ...base, seed: 2 });
  t.deepEqual(a.rows, again.rows);
  t.notDeepEqual(a.rows, other.rows);
  const top = await mineHardNegatives({ ...base, samplingStrategy: 'top' });
  t.notDeepEqual(a.rows, top.rows);
  const ref = await reference();
  for (const x of a.rows as any[]) {
    const i = ref.queries.indexOf(x.query);
    const allowed = new Set(expected(ref, i, { rangeMax: 15, numNegatives: 15, maxPositives: 2 }).map((j) => ref.corpus[j]));
    t.true(x.negatives.every((n: string) => allowed.has(n)));
    t.deepEqual([...x.scores.slice(1)].sort((p: number, q: number) => q - p), x.scores.slice(1));
  }
});

test('a cross-encoder rescores the candidates and the positives: its scores rank, filter and are written', async (t) => {
  const ce = await CrossEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'st'), { device: 'cpu' });
  try {
    const r = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: encoder, crossEncoder: ce, absoluteMargin: 0, rangeMax: 10, outputFormat: 'n-tuple', outputScores: true, numNegatives: 2 });
    t.true(r.rows.length > 5, `${r.rows.length} rows`);
    for (const x of r.rows as any[]) {
      const { data } = await ce.predict([x.positive, ...x.negatives].map((d: string) => [x.query, d] as [string, string]));
      t.true(Math.max(...Array.from(data, (v, j) => Math.abs(v - x.scores[j]))) < 1e-6);
      t.true(x.scores[1] >= x.scores[2] && x.scores[1] <= x.scores[0], 'ranked by the cross-encoder, below the positive (margin 0)');
    }
  } finally {
    ce.dispose();
  }
});

test('coltrast mine writes the rows as JSONL, and train reads triplets and scored n-tuples', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, PAIRS.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const corpus = path.join(dir, 'corpus.txt');
  fs.writeFileSync(corpus, CORPUS.join('\n'));
  for (const [format, extra] of [['triplet', []], ['n-tuple', ['--output-scores']]] as const) {
    const output = path.join(dir, `${format}.jsonl`);
    const r = spawnSync(process.execPath, [CLI, 'mine', '--data', data, '--corpus', corpus, '--output', output, '--output-format', format, '--num-negatives', '2', '--device', 'cpu', ...extra], { encoding: 'utf8', timeout: 240_000 });
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /Metric\s+Positive\s+Negative\s+Difference/);
    const written = fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const api = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: encoder, outputFormat: format, numNegatives: 2, outputScores: extra.length > 0 });
    t.deepEqual(written, JSON.parse(JSON.stringify(api.rows)));
    t.deepEqual(fs.readdirSync(path.dirname(output)).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
    // train() reads them: `negative` as one hard negative; n-tuple scores as teacher scores (distillation).
    const model = path.join(dir, `model-${format}`);
    const run = await train({ model: FIXTURE, data: output, output: model, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 1 });
    t.true(run.history.steps.every((s) => Number.isFinite(s.loss)));
    if (format === 'n-tuple') t.true(run.history.steps.every((s) => s.distillation > 0), JSON.stringify(run.history.steps[0]));
  }
  const json = spawnSync(process.execPath, [CLI, 'mine', '--data', data, '--output', path.join(dir, 'x.jsonl'), '--json', '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000 });
  t.is(json.status, 0, json.stderr);
  t.like(JSON.parse(json.stdout), { format: 'triplet', queries: 33, rangeMax: 5 });
  const bad = spawnSync(process.execPath, [CLI, 'mine', '--data', data, '--output', path.join(dir, 'y.jsonl'), '--num-negative', '2'], { encoding: 'utf8', timeout: 240_000 });
  t.is(bad.status, 2);
  t.regex(bad.stderr, /num-negative/);
});

test('mining refuses bad options, project files, empty data, manhattan models and a many-label cross-encoder', async (t) => {
  const base = { data: PAIRS, model: encoder };
  const refusals: [Partial<MineOptions>, RegExp][] = [
    [{ numNegatives: 0 }, /numNegatives must be an integer >= 1/],
    [{ rangeMin: -1 }, /rangeMin must be an integer >= 0/],
    [{ rangeMin: 5, rangeMax: 5 }, /rangeMin \(5\) must be below options.rangeMax \(5\)/],
    [{ numNegatives: 4, rangeMin: 2, rangeMax: 5 }, /cannot mine 4 negatives per query: only 3 candidates remain/],
    [{ samplingStrategy: 'best' as 'top' }, /samplingStrategy must be one of 'top', 'random'/],
    [{ outputFormat: 'pairs' as 'triplet' }, /outputFormat must be one of/],
    [{ relativeMargin: NaN }, /relativeMargin must be a finite number/],
    [{ output: tempDir() }, /options\.output: .+ is a folder; give the path of the file to write/],
    [{ ['numNegative' as 'numNegatives']: 2 }, /unknown option options.numNegative/],
    [{ data: path.join(ROOT, 'examples', 'ai-projects.json') }, /ColTrast project file: train\(\) chunks and mines those itself/],
    [{ data: [] }, /holds no examples/],
    [{ data: [{ query: 'a' }] }, /"positive" must be a non-empty string/],
    [{ corpus: '/nonexistent/corpus.txt' }, /corpus file \/nonexistent\/corpus.txt does not exist/],
    [{ crossEncoder: path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'hf') }, /must score relevance with one label; .* has 3/],
  ];
  for (const [options, message] of refusals) {
    const e = await rejection(() => mineHardNegatives({ ...base, ...options } as MineOptions));
    t.regex(e.message, message);
  }
  const manhattan = fixtureCopy((dir) => {
    const file = path.join(dir, 'config_sentence_transformers.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), similarity_fn_name: 'manhattan' }));
  });
  t.regex((await rejection(() => mineHardNegatives({ data: PAIRS, model: manhattan, device: 'cpu' }))).message, /manhattan distance/);
});

test("a multi-vector model mines by MaxSim: each query's token vectors against every document's, the positives' scores setting the margin", async (t) => {
  const multi = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    await makeSmallMultiVector(multi);
    // MaxSim in float64: each query token's best document token, summed.
    const maxSim = (a: number[][], b: number[][]) => a.reduce((s, v) => s + Math.max(...b.map((w) => dot(v, w))), 0);
    const ref = await reference(async (queries, corpus) => {
      const q = (await multi.embed(queries, { output: 'tokens', task: 'query' })).map((m) => rows(m));
      const d = (await multi.embed(corpus, { output: 'tokens', task: 'document' })).map((m) => rows(m));
      return q.map((a) => d.map((b) => maxSim(a, b)));
    });
    const r = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: multi, outputScores: true, relativeMargin: 0.05 });
    t.is(r.rangeMax, 32);
    const want = expectedTriplets(ref, { numNegatives: 3, rangeMax: 32, maxPositives: 2, refuse: (s, p) => s > p - Math.abs(p) * 0.05 });
    t.true(want.length > 20, `${want.length} rows`);
    t.deepEqual(r.rows.map((x) => ({ ...x, scores: undefined })), want.map((x) => ({ ...x, scores: undefined })));
    const worst = worstScore(r.rows, want);
    t.true(worst < 1e-4, `scores differ by ${worst}`);
    t.true(r.skipped.relativeMargin! > 0, JSON.stringify(r.skipped));
    // MaxSim sums over the query's tokens: scores well above a cosine's 1.
    t.true(Math.max(...ref.scores.flat()) > 1);
  } finally {
    multi.dispose();
  }
});

test('plaid: a multi-vector model mines over a PLAID index, ranking and scoring the candidates and the positives as its search scores them', async (t) => {
  const multi = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    await makeSmallMultiVector(multi);
    // Every document a candidate of every query, every candidate scored fully (MaxSim over its decoded vectors).
    const everything = { nprobe: 1_000_000, fullScores: 1_000_000 };
    const refuse = (s: number, p: number) => s > p - Math.abs(p) * 0.05;
    // The definition on the score matrix that Index's own PLAID search gives an index built the same way.
    const ref = await reference(async (queries, corpus) => {
      const index = await Index.build(multi, corpus.map((text, i) => ({ id: String(i), text })), { tokenStorage: 'residual', residualBits: 4 });
      const hits = await index.search(queries, { k: corpus.length, ...everything });
      return hits.map((list) => {
        const row = new Array<number>(corpus.length).fill(-Infinity);
        for (const h of list) row[Number(h.id)] = h.score;
        return row;
      });
    });
    t.true(ref.scores.every((row) => row.every(Number.isFinite)), 'the search scored every document');
    const common = { data: PAIRS, corpus: CORPUS, model: multi, outputScores: true, relativeMargin: 0.05 } as const;
    const stages = new Set<string>();
    const r = await mineHardNegatives({ ...common, plaid: { residualBits: 4, ...everything }, onProgress: (p) => stages.add(p.stage) });
    t.deepEqual([...stages], ['corpus', 'queries', 'search']);
    const want = expectedTriplets(ref, { numNegatives: 3, rangeMax: 32, maxPositives: 2, refuse });
    t.true(want.length > 20, `${want.length} rows`);
    t.deepEqual(r.rows.map((x) => ({ ...x, scores: undefined })), want.map((x) => ({ ...x, scores: undefined })));
    const worst = worstScore(r.rows, want);
    t.true(worst < 1e-4, `scores differ by ${worst}`);
    // Against exact MaxSim over the float32 vectors, without a margin (this tiny model's MaxSim scores sit close together,
    // and a margin turns small compression errors into other strikes): the scores move a little, every document scored
    // at 4 bits finds nearly all the same negatives, 2 bits fewer, and more probes more.
    const plain = { data: PAIRS, corpus: CORPUS, model: multi } as const;
    const exact = await mineHardNegatives(plain);
    const key = (x: MinedRow) => `${x.query}\n${(x as { negative: string }).negative}`;
    const exactNegatives = new Set(exact.rows.map(key));
    const found = async (plaid: MineOptions['plaid']) => {
      const mined = await mineHardNegatives({ ...plain, plaid });
      t.true(Math.abs(mined.positive.mean - exact.positive.mean) < 0.01 * exact.positive.mean, `positives' mean score ${mined.positive.mean} vs exact ${exact.positive.mean}`);
      return new Set(mined.rows.map(key).filter((k) => exactNegatives.has(k))).size / exactNegatives.size;
    };
    const [full, defaults, probes, twoBits] = [await found({ ...everything }), await found(true), await found({ nprobe: 4 }), await found({ residualBits: 2 })];
    t.log(`exact MaxSim's negatives found: ${[full, defaults, probes, twoBits].map((x) => `${(100 * x).toFixed(0)}%`).join(', ')} (all scored; the defaults: 4 bits, 1 probe; 4 probes; 2 bits)`);
    t.true(full > 0.9 && probes > 0.9 && defaults > 0.5 && probes >= defaults && defaults >= twoBits);
    // The CLI: --plaid and its settings, on the model saved.
    const dir = tempDir();
    const saved = path.join(dir, 'multi');
    await multi.save(saved);
    const data = path.join(dir, 'pairs.jsonl');
    fs.writeFileSync(data, PAIRS.map((p) => JSON.stringify(p)).join('\n') + '\n');
    const corpus = path.join(dir, 'corpus.txt');
    fs.writeFileSync(corpus, CORPUS.join('\n'));
    const output = path.join(dir, 'plaid.jsonl');
    const flags = ['mine', '--data', data, '--corpus', corpus, '--model', saved, '--relative-margin', '0.05', '--device', 'cpu', '--output', output];
    const cli = spawnSync(process.execPath, [CLI, ...flags, '--plaid', '--residual-bits', '4', '--nprobe', '1000000', '--full-scores', '1000000'], { encoding: 'utf8', timeout: 240_000 });
    t.is(cli.status, 0, cli.stderr);
    const written = fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    t.deepEqual(written, r.rows.map((x) => ({ ...x, scores: undefined })).map((x) => JSON.parse(JSON.stringify(x))));
    const withoutPlaid = spawnSync(process.execPath, [CLI, ...flags, '--nprobe', '2'], { encoding: 'utf8', timeout: 240_000 });
    t.not(withoutPlaid.status, 0);
    t.regex(withoutPlaid.stderr, /set the PLAID search: add --plaid/);
    // Refusals: a single-vector model, a corpus prompt (Index embeds documents with the model's own), bad settings.
    t.regex((await rejection(() => mineHardNegatives({ data: PAIRS, model: encoder, plaid: true }))).message, /options\.plaid searches token vectors: .* is a single-vector model/);
    t.regex((await rejection(() => mineHardNegatives({ ...common, plaid: true, corpusPrompt: 'doc: ' }))).message, /leave out options\.corpusPrompt/);
    t.regex((await rejection(() => mineHardNegatives({ ...common, plaid: { residualBits: 3 } }))).message, /options\.plaid\.residualBits must be 1, 2 or 4/);
    t.regex((await rejection(() => mineHardNegatives({ ...common, plaid: { probes: 2 } as never }))).message, /unknown option options\.plaid\.probes/);
    t.regex((await rejection(() => mineHardNegatives({ ...common, plaid: 'yes' as never }))).message, /options\.plaid must be true, false or/);
  } finally {
    multi.dispose();
  }
});

test('a euclidean model mines by negative distance, as sentence-transformers scores it', async (t) => {
  const model = fixtureCopy((dir) => {
    const file = path.join(dir, 'config_sentence_transformers.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), similarity_fn_name: 'euclidean' }));
  });
  const cosine = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model: FIXTURE, device: 'cpu', outputScores: true });
  const euclid = await mineHardNegatives({ data: PAIRS, corpus: CORPUS, model, device: 'cpu', outputScores: true });
  t.deepEqual(euclid.rows.map((x: any) => x.negative), cosine.rows.map((x: any) => x.negative));
  const worst = Math.max(...euclid.rows.flatMap((x: any, k) => x.scores.map((s: number, j: number) => Math.abs(s + Math.sqrt(Math.max(0, 2 - 2 * (cosine.rows[k] as any).scores[j]))))));
  t.true(worst < 1e-6, `${worst}`);
});

test('train({ mineNegatives }) trains on what mineHardNegatives mines, as if the pairs had come with those negatives', async (t) => {
  const pairs = wordDataset(24);
  const mined = await mineHardNegatives({ data: pairs, model: FIXTURE, device: 'cpu', relativeMargin: 0.05, outputFormat: 'n-tuple' });
  const filled = new Set(mined.rows.map((r: any) => `${r.query}\n${r.positive}`)).size;
  t.true(filled >= 12, `${filled} pairs got 3 negatives`);
  const given = withMinedNegatives(pairs, mined.rows);
  const dir = tempDir();
  const common = { model: FIXTURE, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3 } as const;
  const losses = async (name: string, more: object) => (await train({ ...common, output: path.join(dir, name), ...more } as any)).history.steps.map((s) => s.loss);
  const minedRun = await losses('mined', { data: pairs, mineNegatives: true });
  t.deepEqual(minedRun, await losses('given', { data: given }));
  t.notDeepEqual(minedRun, await losses('plain', { data: pairs }));
  // The settings pass through: 1 negative, sampled.
  const one = await mineHardNegatives({ data: pairs, model: FIXTURE, device: 'cpu', numNegatives: 1, samplingStrategy: 'random', seed: 5, outputFormat: 'n-tuple' });
  const givenOne = withMinedNegatives(pairs, one.rows);
  t.deepEqual(await losses('one', { data: pairs, mineNegatives: { numNegatives: 1, samplingStrategy: 'random', seed: 5 } }), await losses('given-one', { data: givenOne }));
});

test('train({ mineNegatives }) on a multi-vector model mines with its MaxSim, as if the pairs had come with those negatives', async (t) => {
  const dir = tempDir();
  const model = path.join(dir, 'multi');
  const multi = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    await makeSmallMultiVector(multi);
    await multi.save(model);
  } finally {
    multi.dispose();
  }
  const pairs = wordDataset(24);
  const mined = await mineHardNegatives({ data: pairs, model, device: 'cpu', relativeMargin: 0.05, outputFormat: 'n-tuple' });
  const filled = new Set(mined.rows.map((r: any) => `${r.query}\n${r.positive}`)).size;
  t.true(filled >= 12, `${filled} pairs got 3 negatives`);
  const given = withMinedNegatives(pairs, mined.rows);
  const common = { model, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3 } as const;
  const losses = async (name: string, more: object) => (await train({ ...common, output: path.join(dir, name), ...more } as any)).history.steps.map((s) => s.loss);
  const minedRun = await losses('mined', { data: pairs, mineNegatives: { relativeMargin: 0.05 } });
  t.deepEqual(minedRun, await losses('given', { data: given }));
  t.notDeepEqual(minedRun, await losses('plain', { data: pairs }));
  // Over a PLAID index (mineNegatives.plaid), the same.
  const plaid = { residualBits: 2, nprobe: 2 };
  const viaPlaid = await mineHardNegatives({ data: pairs, model, device: 'cpu', relativeMargin: 0.05, outputFormat: 'n-tuple', plaid });
  t.deepEqual(await losses('mined-plaid', { data: pairs, mineNegatives: { relativeMargin: 0.05, plaid } }), await losses('given-plaid', { data: withMinedNegatives(pairs, viaPlaid.rows) }));
  t.regex((await rejection(() => train({ ...common, output: path.join(dir, 'x'), data: pairs, mineNegatives: { plaid: { bits: 2 } } } as any))).message, /unknown option options\.mineNegatives\.plaid\.bits/);
});

test('train({ mineNegatives }) refuses project files, Contrastive Tension and bad settings before loading a model', async (t) => {
  const output = path.join(tempDir(), 'out');
  const refusals: [object, RegExp][] = [
    [{ data: path.join(ROOT, 'examples', 'ai-projects.json'), mineNegatives: true }, /options.mineNegatives is for pairs: ColTrast project files get their hard negatives from options.mining/],
    [{ data: ['a b', 'c d', 'e f'], contrastiveTension: true, mineNegatives: true }, /options.mineNegatives mines for \(query, positive\) pairs; Contrastive Tension/],
    [{ data: PAIRS, mineNegatives: { numNegatives: 0 } }, /options.mineNegatives.numNegatives must be an integer >= 1/],
    [{ data: PAIRS, mineNegatives: { margin: 0.1 } }, /unknown option options.mineNegatives.margin/],
    [{ data: PAIRS, mineNegatives: 3 }, /options.mineNegatives must be true, false or an object of mining settings/],
    [{ data: PAIRS, mineNegatives: { corpus: '/nonexistent/corpus.txt' } }, /corpus file \/nonexistent\/corpus.txt does not exist/],
  ];
  for (const [options, message] of refusals) {
    const e = await rejection(() => train({ model: '/nonexistent/model', output, ...options } as any));
    t.regex(e.message, message);
  }
});
