// What careful users get wrong and a probe found: a qrels file's header told apart from its first judgement, loaded
// evaluation data that judges a query it has no text for, a run with a NaN score, and mining asked for more negatives
// (or a wider window) than the corpus holds, and a dense evaluation cut inside a tie.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, evaluate, evaluateRun, loadBeir, mineHardNegatives, type Matrix } from '../lib';
import { FIXTURE, tempDir } from './helpers/fixture';

function beirFolder(qrels: string, queries = [['q1', 'cats'], ['q2', 'dogs']]): string {
  const dir = tempDir();
  const corpus = [['d1', 'cats purr'], ['d2', 'dogs bark'], ['d3', 'birds sing']];
  fs.writeFileSync(path.join(dir, 'corpus.jsonl'), corpus.map(([id, text]) => JSON.stringify({ _id: id, text })).join('\n'));
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), queries.map(([id, text]) => JSON.stringify({ _id: id, text })).join('\n'));
  fs.mkdirSync(path.join(dir, 'qrels'));
  fs.writeFileSync(path.join(dir, 'qrels', 'test.tsv'), qrels);
  return dir;
}

const judgements = (qrels: Map<string, Map<string, number>>) => [...qrels].map(([q, docs]) => [q, [...docs]]);

test('a qrels file without a header keeps its first judgement, even when the query id holds "query"', async (t) => {
  const queries = [['query-1', 'cats'], ['query-2', 'dogs']];
  const data = await loadBeir(beirFolder('query-1\td1\t1\nquery-2\td2\t1\n', queries));
  t.deepEqual(judgements(data.qrels), [['query-1', [['d1', 1]]], ['query-2', [['d2', 1]]]]);
});

test('a qrels header is told by its score column: BEIR\'s, a "qid docid rel" one, and one after a blank line are skipped', async (t) => {
  for (const header of ['query-id\tcorpus-id\tscore\n', 'qid\tdocid\trel\n', '\nquery-id\tcorpus-id\tscore\n']) {
    const data = await loadBeir(beirFolder(`${header}q1\td1\t1\nq2\td2\t2\n`));
    t.deepEqual(judgements(data.qrels), [['q1', [['d1', 1]]], ['q2', [['d2', 2]]]], JSON.stringify(header));
  }
  // A malformed score past the first line is still an error with its line.
  const error = await t.throwsAsync(loadBeir(beirFolder('q1\td1\t1\nq2\td2\tyes\n')), { instanceOf: ColtrastError });
  t.regex(error!.message, /test\.tsv:2: score "yes" is not an integer/);
});

test('evaluate() leaves out the judged queries loaded data has no text for, and says so (missingQueries), rather than scoring them as queries that retrieved nothing', async (t) => {
  const data = {
    corpus: [{ id: 'd1', title: '', text: 'cats purr' }, { id: 'd2', title: '', text: 'dogs bark' }],
    queries: new Map([['q1', 'cats']]),
    // q2 has no text: it was counted as a query that retrieved nothing, halving every metric.
    qrels: new Map([['q1', new Map([['d1', 1]])], ['q2', new Map([['d2', 1], ['d1', 0]])]]),
  };
  const r = await evaluate({ data, k: [1] });
  t.is(r.queries, 1);
  t.is(r.metrics.recall[1], 1);
  t.deepEqual(r.missingQueries, { queries: 1, judgements: 2, examples: ['q2'] });
  t.true(data.qrels.has('q2'), "the caller's qrels are left as they were");
  data.qrels.delete('q2');
  t.is((await evaluate({ data, k: [1] })).missingQueries, undefined);
  // Nothing left to evaluate: said as such.
  const none = { ...data, qrels: new Map([['q9', new Map([['d1', 1]])]]) };
  const error = await t.throwsAsync(evaluate({ data: none, k: [1] }), { instanceOf: ColtrastError });
  t.regex(error!.message, /every judged query lacks a text \(q9\): add the queries' texts/);
});

test('evaluateRun refuses a NaN score, which the sort placed anywhere (here first, above the relevant document)', (t) => {
  const qrels = new Map([['q', new Map([['b', 1]])]]);
  const run = new Map([['q', [{ id: 'a', score: NaN }, { id: 'b', score: 1 }]]]);
  const error = t.throws(() => evaluateRun(run, qrels, [1]), { instanceOf: ColtrastError });
  t.regex(error!.message, /run\.get\("q"\)\[0\]\.score must be a number, not NaN/);
  // Infinite scores rank: at the top and at the bottom.
  const ranked = evaluateRun(new Map([['q', [{ id: 'a', score: -Infinity }, { id: 'b', score: Infinity }]]]), qrels, [1]);
  t.is(ranked.metrics.recall[1], 1);
});

test('mining asked for more negatives than the corpus holds takes what there is, without arrays as wide as numNegatives', async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const data = [{ query: 'dogs', positive: 'dogs bark' }, { query: 'cats', positive: 'cats purr' }, { query: 'birds', positive: 'birds sing' }];
    const others = (positive: string) => data.map((p) => p.positive).filter((d) => d !== positive).sort();
    for (const samplingStrategy of ['top', 'random'] as const) {
      // A window of 2^40 documents a query: arrays of queries × window were allocated (a RangeError here; at a few
      // million, the process ran out of memory and was killed).
      const r = await mineHardNegatives({ data, model: encoder, numNegatives: 2 ** 40, samplingStrategy });
      for (const p of data) {
        const negatives = r.rows.filter((row) => row.query === p.query).map((row) => (row as { negative: string }).negative);
        t.deepEqual(negatives.sort(), others(p.positive), `${samplingStrategy}: ${p.query}'s negatives are every other document`);
      }
      t.is(r.possible, 3 * 2 ** 40);
      t.is(r.missing, r.possible - 6);
    }
    const wide = await mineHardNegatives({ data, model: encoder, numNegatives: 1, rangeMax: 2 ** 40, outputFormat: 'n-tuple' });
    t.is(wide.rows.length, 3);
    t.is(wide.rangeMax, 2 ** 40);
  } finally {
    encoder.dispose();
  }
});

test('a dense evaluation breaks a tie at its deepest cut-off by id, as at the others: a metric at k does not depend on the cut-offs asked', async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    // Documents of one text tie exactly (one at a time, the same vector); 'b' is stored first, 'a' wins the tie by id.
    const corpus = [{ id: 'b', title: '', text: 'dogs bark' }, { id: 'a', title: '', text: 'dogs bark' }, { id: 'c', title: '', text: 'cats purr' }];
    const data = { corpus, queries: new Map([['q', 'dogs bark']]), qrels: new Map([['q', new Map([['a', 1]])]]) };
    const { data: vectors, dims } = (await encoder.embed(['dogs bark', 'dogs bark'], { normalize: true, batchSize: 1 })) as Matrix;
    t.deepEqual(vectors.subarray(0, dims[1]), vectors.subarray(dims[1]), 'the two documents tie');
    const at1 = await evaluate({ data, model: encoder, batchSize: 1, k: [1] });
    const at1and10 = await evaluate({ data, model: encoder, batchSize: 1, k: [1, 10] });
    // The Index ranks 'b' first (ties by position): a list cut at 1 held 'b' alone, and 'a' counted at [1, 10] only.
    t.is(at1.metrics.recall[1], 1);
    t.is(at1and10.metrics.recall[1], 1);
  } finally {
    encoder.dispose();
  }
});

test('evaluate() refuses data in which no query has a relevant document, whose metrics were zeros over no queries', async (t) => {
  const folder = beirFolder('query-id\tcorpus-id\tscore\nq1\td1\t0\nq2\td2\t-1\n');
  const error = await t.throwsAsync(evaluate({ data: folder, k: [1] }), { instanceOf: ColtrastError });
  t.regex(error!.message, /no query has a relevant document \(a qrels score above 0\)/);
  const loaded = await loadBeir(beirFolder('q1\td1\t1\nq2\td2\t0\n'));
  t.is((await evaluate({ data: loaded, k: [1] })).queries, 1, 'one relevant judgement is enough');
});
