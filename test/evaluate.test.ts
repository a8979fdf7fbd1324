// Retrieval metrics on hand-computed cases, BEIR loading and its errors, BM25, and evaluate() in each mode.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Bm25Index, ColtrastError, evaluate, evaluateRun, loadBeir, queryMetrics } from '../lib';
import { CLI, FIXTURE, tempDir } from './helpers/fixture';

const close = (a: number, b: number) => Math.abs(a - b) < 1e-12;

test('metrics of one ranking, computed by hand', (t) => {
  // Relevant: d1 (grade 2), d3 (grade 1), d9 (grade 1, never retrieved). Ranking: d2 d1 d3 d4.
  const judged = new Map([['d1', 2], ['d3', 1], ['d9', 1], ['d4', 0]]);
  const m = queryMetrics(['d2', 'd1', 'd3', 'd4'], judged, [1, 3, 10]);
  t.is(m.recall[1], 0);
  t.true(close(m.recall[3], 2 / 3));
  t.true(close(m.precision[3], 2 / 3));
  t.true(close(m.precision[10], 2 / 10));
  t.is(m.mrr[1], 0);
  t.true(close(m.mrr[3], 1 / 2));
  // AP@3 = (1/2 + 2/3) / 3 relevant
  t.true(close(m.map[3], (1 / 2 + 2 / 3) / 3));
  // DCG@3 = 2/log2(3) + 1/log2(4); IDCG@3 = 2/log2(2) + 1/log2(3) + 1/log2(4)
  const dcg = 2 / Math.log2(3) + 1 / 2;
  const idcg = 2 + 1 / Math.log2(3) + 1 / 2;
  t.true(close(m.ndcg[3], dcg / idcg));
  t.is(m.ndcg[1], 0);
});

test('run metrics average over queries with a relevant document; ties break by id', (t) => {
  const qrels = new Map([
    ['q1', new Map([['a', 1]])],
    ['q2', new Map([['b', 1]])],
    ['q3', new Map([['c', 0]])], // no relevant document: left out
  ]);
  const run = new Map([
    ['q1', [{ id: 'b', score: 1 }, { id: 'a', score: 1 }]], // tie: 'a' ranks first
    ['q2', [{ id: 'a', score: 2 }, { id: 'b', score: 1 }]],
  ]);
  const { metrics, queries } = evaluateRun(run, qrels, [1, 2]);
  t.is(queries, 2);
  t.is(metrics.recall[1], 0.5);
  t.is(metrics.mrr[2], (1 + 0.5) / 2);
  t.is(evaluateRun(new Map(), qrels, [1]).metrics.ndcg[1], 0, 'a query with no results scores 0');
});

test('BM25 ranks by term statistics', (t) => {
  const index = new Bm25Index();
  index.add('cats', 'Cats and more cats sit on the mat.');
  index.add('dogs', 'Dogs run in the park.');
  index.add('both', 'A cat, a dog and a river bank.');
  t.deepEqual(index.search('cats', 3).map((h) => h.id), ['cats']);
  t.deepEqual(index.search('dogs park', 3).map((h) => h.id), ['dogs']);
  t.deepEqual(index.search('nothing here', 3), []);
  const stemmed = new Bm25Index({ stem: true });
  stemmed.add('cats', 'Cats and more cats.');
  stemmed.add('dog', 'A dog.');
  t.deepEqual(stemmed.search('cat', 2).map((h) => h.id), ['cats'], 'cat matches cats after stemming');
});

function beirFolder(edit?: (dir: string) => void): string {
  const dir = tempDir();
  const corpus = [
    { _id: 'd1', title: 'Trading', text: 'reinforcement learning trading bot with proximal policy optimization' },
    { _id: 'd2', title: 'Medical', text: 'chest x-ray classifier resnet pneumonia' },
    { _id: 'd3', title: 'Reviews', text: 'sentiment of product reviews with distilbert' },
  ];
  fs.writeFileSync(path.join(dir, 'corpus.jsonl.gz'), zlib.gzipSync(corpus.map((d) => JSON.stringify(d)).join('\n')));
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), ['{"_id": "q1", "text": "which project uses reinforcement learning"}', '{"_id": "q2", "text": "pneumonia x-ray model"}'].join('\n'));
  fs.mkdirSync(path.join(dir, 'qrels'));
  fs.writeFileSync(path.join(dir, 'qrels', 'test.tsv'), 'query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n');
  edit?.(dir);
  return dir;
}

test('a BEIR folder loads (gzip too); bad files are errors with file and line', async (t) => {
  const data = await loadBeir(beirFolder());
  t.is(data.corpus.length, 3);
  t.is(data.queries.get('q2'), 'pneumonia x-ray model');
  t.deepEqual([...data.qrels.get('q1')!], [['d1', 1]]);
  const error = async (edit: (dir: string) => void) => (await t.throwsAsync(loadBeir(beirFolder(edit)), { instanceOf: ColtrastError }))!;
  // A judged query queries.jsonl lacks (BEIR's NFCorpus has one) is left out and counted, not an error.
  const lacking = await loadBeir(beirFolder((d) => fs.appendFileSync(path.join(d, 'qrels', 'test.tsv'), 'q9\td1\t1\nq9\td2\t0\n')));
  t.false(lacking.qrels.has('q9'));
  t.deepEqual(lacking.missingQueries, { queries: 1, judgements: 2, examples: ['test.tsv:4 q9'] });
  t.is((await loadBeir(beirFolder())).missingQueries, undefined);
  t.regex((await error((d) => fs.writeFileSync(path.join(d, 'qrels', 'test.tsv'), 'q9\td1\t1\n'))).message, /holds no judgements of a query in queries\.jsonl \(its 1 judged queries have no text there\)/);
  t.regex((await error((d) => fs.appendFileSync(path.join(d, 'qrels', 'test.tsv'), 'q1\td1\thigh\n'))).message, /score "high" is not an integer/);
  t.regex((await error((d) => fs.appendFileSync(path.join(d, 'qrels', 'test.tsv'), 'q1 d1 1\n'))).message, /expected 3 tab-separated columns/);
  t.regex((await error((d) => fs.writeFileSync(path.join(d, 'qrels', 'test.tsv'), 'query-id\tcorpus-id\tscore\n'))).message, /no judgements/);
  t.regex((await error((d) => fs.appendFileSync(path.join(d, 'queries.jsonl'), '\n{"_id": "q3", "text": 5}'))).message, /queries\.jsonl:3: "text" must be a string/);
  t.regex((await error((d) => fs.writeFileSync(path.join(d, 'corpus.jsonl.gz'), 'not gzip'))).message, /cannot be decompressed/);
  t.regex((await error((d) => fs.rmSync(path.join(d, 'qrels'), { recursive: true }))).message, /none of qrels/);
  await t.throwsAsync(loadBeir(path.join(tempDir(), 'missing')), { message: /does not exist/ });
});

test("judgements naming a document the corpus lacks (BEIR's ArguAna has some) load, and count as relevant and never retrieved, as BEIR counts them", async (t) => {
  const folder = beirFolder((d) => fs.appendFileSync(path.join(d, 'qrels', 'test.tsv'), 'q1\td7\t1\nq2\td8\t0\n'));
  const data = await loadBeir(folder);
  t.deepEqual([...data.qrels.get('q1')!], [['d1', 1], ['d7', 1]]);
  // Relevant ones only (d8's grade is 0), with where they are.
  t.deepEqual(data.missingDocuments, { judgements: 1, examples: ['test.tsv:4 d7'] });
  t.is((await loadBeir(beirFolder())).missingDocuments, undefined);
  // Every document of this 3-document corpus is in the top 10: recall is 1 for q2, and 1 of q1's 2 relevant ones.
  const plain = await evaluate({ data: beirFolder(), mode: 'bm25', k: [10] });
  const result = await evaluate({ data: folder, mode: 'bm25', k: [10] });
  t.is(plain.metrics.recall[10], 1);
  t.is(result.metrics.recall[10], 0.75);
  t.deepEqual(result.missingDocuments, data.missingDocuments);
  t.is(plain.missingDocuments, undefined);
});

test("a judged query the queries file lacks (BEIR's NFCorpus has one) is left out of the metrics, as trec_eval leaves it, and coltrast eval says so", async (t) => {
  const folder = beirFolder((d) => fs.appendFileSync(path.join(d, 'qrels', 'test.tsv'), 'q9\td3\t1\n'));
  const plain = await evaluate({ data: beirFolder(), mode: 'bm25', k: [1, 3] });
  const result = await evaluate({ data: folder, mode: 'bm25', k: [1, 3] });
  t.deepEqual(result.metrics, plain.metrics, 'the same metrics as without the judgement');
  t.is(result.queries, plain.queries);
  t.deepEqual(result.missingQueries, { queries: 1, judgements: 1, examples: ['test.tsv:4 q9'] });
  const { spawnSync } = await import('node:child_process');
  const cli = CLI;
  const run = spawnSync(process.execPath, [cli, 'eval', '--data', folder, '--mode', 'bm25', '--k', '1'], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /^1 judged query has no text in the queries file \(test\.tsv:4 q9\): left out of the metrics, as trec_eval leaves out judged queries a run lacks$/m);
});

test('a BEIR folder whose corpus or queries repeat an id is an error naming the file and line', async (t) => {
  const error = async (edit: (dir: string) => void) => (await t.throwsAsync(loadBeir(beirFolder(edit)), { instanceOf: ColtrastError }))!.message;
  // A repeated query id replaced the earlier text unseen: q1's judgement was then scored for the other text.
  t.regex(await error((d) => fs.appendFileSync(path.join(d, 'queries.jsonl'), '\n{"_id": "q1", "text": "pneumonia"}')), /queries\.jsonl:3: the _id "q1" is repeated \(ids must be unique\)/);
  // A number and the same digits as a string are one id (as qrels name them).
  t.regex(
    await error((d) => fs.writeFileSync(path.join(d, 'queries.jsonl'), '{"_id": 7, "text": "a"}\n\n{"_id": "7", "text": "b"}\n')),
    /queries\.jsonl:3: the _id "7" is repeated/,
  );
  const corpus = (d: string, lines: string[]) => {
    fs.rmSync(path.join(d, 'corpus.jsonl.gz'));
    fs.writeFileSync(path.join(d, 'corpus.jsonl'), lines.join('\n'));
  };
  const doc = (id: string, text: string) => JSON.stringify({ _id: id, text });
  t.regex(await error((d) => corpus(d, [doc('d1', 'a'), doc('d2', 'b'), doc('d1', 'c')])), /corpus\.jsonl:3: the _id "d1" is repeated \(ids must be unique\)/);
  // The gzipped corpus is checked the same way.
  t.regex(
    await error((d) => fs.writeFileSync(path.join(d, 'corpus.jsonl.gz'), zlib.gzipSync([doc('d1', 'a'), doc('d2', 'b'), doc('d2', 'c')].join('\n')))),
    /corpus\.jsonl\.gz:3: the _id "d2" is repeated/,
  );
  // Distinct ids load as before.
  t.is((await loadBeir(beirFolder((d) => corpus(d, [doc('d1', 'a'), doc('d2', 'b'), doc('d3', 'c')])))).corpus.length, 3);
  // Through evaluate() too (and so `coltrast eval`).
  await t.throwsAsync(evaluate({ data: beirFolder((d) => fs.appendFileSync(path.join(d, 'queries.jsonl'), '\n{"_id": "q2", "text": "x"}')), mode: 'bm25' }), {
    message: /queries\.jsonl:3: the _id "q2" is repeated/,
  });
});

test('evaluate() checks loaded data as loadBeir checks files: grades that are not finite numbers, repeated document ids', async (t) => {
  const corpus = [{ id: 'a', title: '', text: 'alpha beta' }, { id: 'b', title: '', text: 'gamma delta' }];
  const queries = new Map([['q', 'alpha']]);
  const refused = async (data: unknown, message: RegExp) => {
    const e = await t.throwsAsync(evaluate({ data: data as never, k: [1] }), { instanceOf: ColtrastError, message });
    t.is(e!.code, 'INVALID_ARGUMENT');
  };
  // An infinite grade made nDCG NaN (ideal DCG infinite); NaN left the query out unseen.
  for (const grade of [Infinity, NaN, '1']) {
    await refused({ corpus, queries, qrels: new Map([['q', new Map([['a', grade]])]]) }, /^options\.data\.qrels\.get\("q"\)\.get\("a"\) must be a relevance grade \(a finite number\), got /);
  }
  // A repeated document id failed inside the BM25 index ("remove the document first to replace it").
  await refused({ corpus: [...corpus, { id: 'a', title: '', text: 'again' }], queries, qrels: new Map([['q', new Map([['a', 1]])]]) }, /^options\.data\.corpus\[2\]\.id "a" repeats options\.data\.corpus\[0\]'s \(ids must be unique\)$/);
  t.is((await evaluate({ data: { corpus, queries, qrels: new Map([['q', new Map([['a', 1]])]]) }, k: [1] })).metrics.recall[1], 1);
});

test('evaluate() in bm25, dense and hybrid modes', async (t) => {
  const data = beirFolder();
  const bm25 = await evaluate({ data, mode: 'bm25', k: [1, 3] });
  t.is(bm25.queries, 2);
  t.is(bm25.metrics.recall[1], 1, 'both queries share words with their document');
  t.is(bm25.metrics.ndcg[3], 1);
  const dense = await evaluate({ data, model: FIXTURE, device: 'cpu', k: [1, 3] });
  t.is(dense.mode, 'dense');
  t.is(dense.metrics.recall[3], 1, 'three documents: everything is in the top 3');
  t.true(dense.metrics.mrr[3] >= 1 / 3);
  const hybrid = await evaluate({ data, model: FIXTURE, device: 'cpu', mode: 'hybrid', hybridWeight: 0, k: [1, 3] });
  t.deepEqual(hybrid.metrics, bm25.metrics, 'weight 0 is BM25 alone');
  // Relative score fusion: weight 1 is the dense ranking alone, weight 0 BM25's (over the documents BM25 scored).
  t.deepEqual((await evaluate({ data, model: FIXTURE, device: 'cpu', mode: 'hybrid', fusion: 'relative', hybridWeight: 1, k: [1, 3] })).metrics, dense.metrics);
  t.deepEqual((await evaluate({ data, model: FIXTURE, device: 'cpu', mode: 'hybrid', fusion: 'relative', hybridWeight: 0, k: [1] })).metrics.recall[1], bm25.metrics.recall[1]);
  await t.throwsAsync(evaluate({ data, model: FIXTURE, mode: 'hybrid', fusion: 'sum' as 'rrf' }), { message: /options\.fusion must be one of 'rrf', 'relative'/ });
  const late = await evaluate({ data, model: FIXTURE, device: 'cpu', mode: 'late_interaction', k: [1, 3] });
  t.is(late.mode, 'late_interaction');
  t.is(late.metrics.recall[3], 1, 'all three documents are re-ranked and returned');
  await t.throwsAsync(evaluate({ data, mode: 'dense' }), { message: /needs options\.model/ });
  await t.throwsAsync(evaluate({ data, k: [0] }), { message: /options\.k\[0\]/ });
  // BM25's settings are checked like the rest: a misspelt one is not ignored.
  await t.throwsAsync(evaluate({ data, mode: 'bm25', bm25: { stemm: true } as never }), { message: /unknown option options\.bm25\.stemm \(known options: k1, b, stem\)/ });
  await t.throwsAsync(evaluate({ data, mode: 'bm25', bm25: { k1: -1 } }), { message: /options\.bm25\.k1 must be a number >= 0, got number -1/ });
  // Data and model of the wrong kind are named, not a TypeError from inside (or the index's "dim must be ...").
  for (const bad of [undefined, null, 3, {}, { qrels: [] }]) {
    await t.throwsAsync(evaluate({ data: bad as never }), { message: /options\.data must be a BEIR folder, a ColTrast project file or loaded data/ });
  }
  for (const bad of [3, {}, true, '']) {
    await t.throwsAsync(evaluate({ data, model: bad as never }), { message: /options\.model must be a model folder, Hugging Face id, Encoder or SparseEncoder/ });
  }
});

test('evaluate() refuses options its mode would ignore, and a hybrid weight that is not a number in [0, 1]', async (t) => {
  const data = beirFolder();
  const refused = async (options: Record<string, unknown>, message: RegExp) => {
    const e = await t.throwsAsync(evaluate({ data, ...options } as never), { instanceOf: ColtrastError, message });
    t.is(e!.code, 'INVALID_ARGUMENT');
  };
  // BM25 builds no dense index: storage and the rest were ignored, and the result read as int8's.
  await refused({ mode: 'bm25', storage: 'int8' }, /^options\.storage must be absent with mode 'bm25' \(BM25 uses no model; it is for modes 'dense', 'hybrid' and 'late_interaction'\), got the string "int8"$/);
  for (const [key, value] of [['model', FIXTURE], ['truncateDim', 8], ['rescoreMultiplier', 2], ['tokenStorage', 'residual'], ['residualBits', 2], ['poolFactor', 2], ['nprobe', 2], ['fullScores', 8]] as const) {
    await refused({ mode: 'bm25', [key]: value }, new RegExp(`^options\\.${key} must be absent with mode 'bm25'`));
  }
  await refused({ mode: 'dense', model: FIXTURE, hybridWeight: 0.3 }, /^options\.hybridWeight must be absent with mode 'dense' \(it is for mode 'hybrid'\), got number 0\.3$/);
  await refused({ mode: 'bm25', fusion: 'relative' }, /^options\.fusion must be absent with mode 'bm25' \(it is for mode 'hybrid'\)/);
  await refused({ mode: 'late_interaction', model: FIXTURE, rrfK: 10 }, /^options\.rrfK must be absent with mode 'late_interaction'/);
  await refused({ mode: 'dense', model: FIXTURE, bm25: { stem: true } }, /^options\.bm25 must be absent with mode 'dense' \(it is for modes 'bm25' and 'hybrid'\)/);
  await refused({ mode: 'hybrid', model: FIXTURE, candidates: 5 }, /^options\.candidates must be absent with mode 'hybrid' \(it is for mode 'late_interaction' or a reranker/);
  // NaN passed `w < 0 || w > 1` and fused every score to NaN (nDCG 0).
  for (const weight of [NaN, Infinity, -0.1, 1.5, '0.5']) {
    await refused({ mode: 'hybrid', model: FIXTURE, device: 'cpu', hybridWeight: weight }, /^options\.hybridWeight must be a number in \[0, 1\], got /);
  }
  // What the modes use is taken: stemming for hybrid's BM25, candidates for late interaction.
  t.is((await evaluate({ data, mode: 'hybrid', model: FIXTURE, device: 'cpu', bm25: { stem: true }, hybridWeight: 0.5, k: [1] })).queries, 2);
  t.is((await evaluate({ data, mode: 'late_interaction', model: FIXTURE, device: 'cpu', candidates: 3, k: [1] })).queries, 2);

  // The CLI: an empty --hybrid-weight was Number('') = 0; --compare leaves out what the compared system does not use.
  const { spawnSync } = await import('node:child_process');
  const cli = CLI;
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'eval', '--data', data, '--device', 'cpu', '--threads', '1', '--json', '--k', '1', ...args], { encoding: 'utf8', timeout: 240_000 });
  const empty = run('--model', FIXTURE, '--mode', 'hybrid', '--hybrid-weight', '');
  t.is(empty.status, 2);
  t.regex(empty.stderr, /--hybrid-weight must be a number, got $/m);
  const blank = run('--model', FIXTURE, '--mode', 'hybrid', '--hybrid-weight', ' ');
  t.is(blank.status, 2);
  const int8 = run('--mode', 'bm25', '--storage', 'int8');
  t.is(int8.status, 2);
  t.regex(int8.stderr, /^coltrast: --storage must be absent with mode 'bm25' .*, got int8$/m);
  const compared = run('--model', FIXTURE, '--mode', 'hybrid', '--hybrid-weight', '0.3', '--storage', 'float16', '--stem', '--compare', 'bm25');
  t.is(compared.status, 0, compared.stderr);
  t.deepEqual(JSON.parse(compared.stdout).map((r: { name: string }) => r.name), ['hybrid:tiny-bert', 'bm25']);
});

test('coltrast eval prints a side-by-side table or JSON; bad flags exit 2 with a reason', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const cli = CLI;
  const data = beirFolder();
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'eval', ...args], { encoding: 'utf8', timeout: 240_000 });
  const table = run('--data', data, '--model', FIXTURE, '--device', 'cpu', '--compare', 'bm25', '--k', '1,3', '--threads', '1');
  t.is(table.status, 0, table.stderr);
  t.regex(table.stdout, /^metric\s+dense:tiny-bert\s+bm25$/m);
  t.regex(table.stdout, /^ndcg@3\s+\d\.\d{4}\s+1\.0000$/m);
  const json = run('--data', data, '--json', '--k', '1', '--mode', 'bm25');
  t.is(json.status, 0, json.stderr);
  const [result] = JSON.parse(json.stdout);
  t.is(result.name, 'bm25');
  t.is(result.metrics.recall[1], 1);
  const dflt = run('--data', data, '--json', '--k', '1', '--device', 'cpu');
  t.is(dflt.status, 0, dflt.stderr);
  t.is(JSON.parse(dflt.stdout)[0].name, 'dense:default', 'without --model: the shipped default model');
  const help = run('--help');
  t.is(help.status, 0);
  t.regex(help.stdout, /^usage: coltrast eval/);
  t.regex(help.stdout, /--compare/);
  t.notRegex(help.stdout, /fine-tune/, 'only the eval section');
  const bad = run('--data', data, '--k', '1,x');
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--k must be positive integers/);
  const dangling = run('--data', data, '--k');
  t.is(dangling.status, 2, 'a flag without its value is a one-line error, not a crash');
  t.regex(dangling.stderr, /^coltrast: Option '--k/);
  const noThreads = run('--data', data, '--threads', '0');
  t.is(noThreads.status, 2);
  t.regex(noThreads.stderr, /--threads must be a positive integer, got 0/);
  const missing = run('--data', path.join(data, 'nope'));
  t.is(missing.status, 2);
  t.regex(missing.stderr, /does not exist/);
});

test('a ColTrast project file evaluates too: paragraphs are the corpus, the best-matching one is graded 2', async (t) => {
  const { coltrastEvalData } = await import('../lib/beir');
  const data = coltrastEvalData([
    { id: 'bot', document: 'Trading bot.\n\nIt uses reinforcement learning with PPO.\n\nIt trades stocks.', qa: [{ question: 'Which learning?', answer: 'reinforcement learning' }] },
    { id: 'scan', document: 'X-ray classifier.\n\nResNet-50 model.', qa: [{ question: 'Which model?', answer: 'x', context: 'ResNet-50 model.' }] },
  ]);
  t.deepEqual(data.corpus.map((d) => d.id), ['bot#0', 'bot#1', 'bot#2', 'scan#0', 'scan#1']);
  t.deepEqual([...data.qrels.get('bot/q0')!], [['bot#0', 1], ['bot#1', 2], ['bot#2', 1]]);
  t.deepEqual([...data.qrels.get('scan/q0')!], [['scan#0', 1], ['scan#1', 2]]);
  const r = await evaluate({ data: path.resolve(__dirname, '..', 'examples', 'ai-projects.json'), mode: 'bm25', k: [10] });
  t.is(r.queries, 33);
  t.true(r.metrics.ndcg[10] > 0.5, `BM25 nDCG@10 ${r.metrics.ndcg[10]}`);
});
