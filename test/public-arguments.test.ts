// The package's smaller functions (README, "Smaller pieces") refuse arguments of the wrong kind with a
// ColtrastError that names the argument, what it must be and what it got, instead of a TypeError from inside,
// NaN, or a silently wrong result. (The classes' and the big functions' checks are tested with them.)
import test from 'ava';
import {
  cleanQuery,
  cpuMemory,
  evaluateRun,
  exportIndex,
  learningRateAt,
  loadBeir,
  miningReport,
  poolTokens,
  queryMetrics,
  retrievalMetrics,
} from '../lib';

const bad = (value: unknown) => value as never;

const CASES: [string, () => unknown, RegExp][] = [
  ['evaluateRun: run', () => evaluateRun(bad({}), new Map(), [1]), /^run must be a Map of query id to its hits \[\{ id, score \}\], got an object$/],
  ['evaluateRun: a run entry', () => evaluateRun(new Map([['q', bad([{ id: 1, score: 2 }])]]), new Map(), [1]), /^run\.get\("q"\) must be an array of \{ id: string, score: number \}/],
  ['evaluateRun: qrels', () => evaluateRun(new Map(), bad([]), [1]), /^qrels must be a Map of query id to a Map/],
  ['evaluateRun: a grade', () => evaluateRun(new Map(), new Map([['q', new Map([['d', bad('1')]])]]), [1]), /^qrels\.get\("q"\)\.get\("d"\) must be a relevance grade \(a finite number\), got the string "1"$/],
  // An infinite grade made nDCG Infinity / Infinity = NaN.
  ['evaluateRun: an infinite grade', () => evaluateRun(new Map(), new Map([['q', new Map([['d', Infinity]])]]), [1]), /^qrels\.get\("q"\)\.get\("d"\) must be a relevance grade \(a finite number\), got number Infinity$/],
  ['queryMetrics: an infinite grade', () => queryMetrics(['d'], new Map([['d', -Infinity]]), [1]), /^judged\.get\("d"\) must be a relevance grade \(a finite number\), got number -Infinity$/],
  // A repeated document counted as relevant twice: recall 1 with one of two relevant documents found (trec_eval refuses such a run).
  ['queryMetrics: a ranking that repeats a document', () => queryMetrics(['a', 'a'], new Map([['a', 1], ['c', 1]]), [2]), /^ranking must hold each document once, got the document "a" at 0 and 1/],
  [
    'evaluateRun: a run that repeats a document',
    () => evaluateRun(new Map([['q', [{ id: 'b', score: 3 }, { id: 'a', score: 2 }, { id: 'a', score: 1 }]]]), new Map([['q', new Map([['a', 1], ['c', 1]])]]), [3]),
    /^run\.get\("q"\) must hold each document once, got the document "a" at 1 and 2/,
  ],
  ['evaluateRun: ks', () => evaluateRun(new Map(), new Map(), [1, 0]), /^ks\[1\] must be a positive integer, got number 0$/],
  ['queryMetrics: ranking', () => queryMetrics(bad('abc'), new Map(), [1]), /^ranking must be an array of document ids \(strings\), best first, got the string "abc"$/],
  ['queryMetrics: judged', () => queryMetrics(['a'], bad({ a: 1 }), [1]), /^judged must be a Map of document id to relevance grade/],
  ['queryMetrics: ks', () => queryMetrics(['a'], new Map(), bad(10)), /^ks must be a non-empty array of positive integers \(the cut-offs k\), got number 10$/],
  ['learningRateAt: step', () => learningRateAt(-1, 10, 1e-4, 0.1, 'linear'), /^step must be a number >= 0, got number -1$/],
  ['learningRateAt: total', () => learningRateAt(0, 0, 1e-4, 0.1, 'linear'), /^total must be a positive integer, got number 0$/],
  ['learningRateAt: warmupRatio', () => learningRateAt(0, 10, 1e-4, 1.5, 'linear'), /^warmupRatio must be a number in \[0, 1\), got number 1\.5$/],
  ['learningRateAt: schedule', () => learningRateAt(0, 10, 1e-4, 0.1, bad('step')), /^schedule must be one of 'linear', 'cosine', 'constant', got the string "step"$/],
  ['cleanQuery', () => cleanQuery(bad(undefined)), /^text must be a string \(a generated text\), got undefined$/],
  ['poolTokens: a matrix whose data is short', () => poolTokens({ dims: [3, 2], data: new Float32Array(5) }, 2), /^tokens must be a float32 matrix \{ dims: \[tokens, dim\], data: Float32Array \}/],
  ['poolTokens: poolFactor', () => poolTokens({ dims: [3, 2], data: new Float32Array(6) }, 0), /^poolFactor must be a positive integer, got number 0$/],
  ['poolTokens: protectedTokens', () => poolTokens({ dims: [3, 2], data: new Float32Array(6) }, 2, -1), /^protectedTokens must be an integer >= 0, got number -1$/],
  ['miningReport', () => miningReport(bad({ rows: [] })), /^result must be what mineHardNegatives\(\) returned, got an object$/],
  ['cpuMemory: a misspelt option', () => cpuMemory(bad({ emptycache: true })), /^unknown option options\.emptycache \(known options: resetPeak, emptyCache\)$/],
  ['cpuMemory: a flag', () => cpuMemory(bad({ emptyCache: 'yes' })), /^options\.emptyCache must be true or false, got the string "yes"$/],
];

const ASYNC_CASES: [string, () => Promise<unknown>, RegExp][] = [
  ['loadBeir', () => loadBeir(bad(42)), /^dir must be a non-empty string, got number 42$/],
  ['exportIndex', () => exportIndex(bad(undefined), '/tmp/x.sql'), /^indexDir must be a non-empty string, got undefined$/],
  ['retrievalMetrics: encoder', () => retrievalMetrics(bad('./model'), [{ query: 'q', positive: 'p' }]), /^encoder must be an Encoder, a CrossEncoder or a SparseEncoder, got the string "\.\/model"$/],
];

for (const [name, call, message] of CASES) {
  test(`${name} is refused with a ColtrastError naming it`, (t) => {
    const error = t.throws(call, { message });
    t.is((error as { code?: string } | undefined)?.code, 'INVALID_ARGUMENT');
  });
}

for (const [name, call, message] of ASYNC_CASES) {
  test(`${name} is refused with a ColtrastError naming it`, async (t) => {
    const error = await t.throwsAsync(call, { message });
    t.is((error as { code?: string } | undefined)?.code, 'INVALID_ARGUMENT');
  });
}

test('the checked functions still compute what they did on good arguments', (t) => {
  const judged = new Map([['a', 1], ['b', 0]]);
  t.deepEqual(queryMetrics(['b', 'a'], judged, [1, 2]).mrr, { 1: 0, 2: 0.5 });
  const run = new Map([['q', [{ id: 'a', score: 1 }, { id: 'b', score: 2 }]]]);
  t.deepEqual(evaluateRun(run, new Map([['q', judged]]), [2]), { metrics: queryMetrics(['b', 'a'], judged, [2]), queries: 1 });
  t.is(learningRateAt(0, 10, 1, 0.1, 'linear'), 0.5, 'warm-up: one step of two');
  t.true(Math.abs(learningRateAt(9, 10, 1, 0, 'linear') - 0.1) < 1e-15, 'the last step still learns: the decay ends after it');
  t.is(cleanQuery('Query: "what is bm25"\nmore'), 'what is bm25');
  const tokens = { dims: [3, 2] as [number, number], data: Float32Array.from([1, 0, 0, 1, 0, 1]) };
  t.deepEqual(poolTokens(tokens, 2, 1), { dims: [2, 2], data: Float32Array.from([1, 0, 0, 1]) }, 'the two like vectors after the protected one pooled');
  t.is(typeof cpuMemory({ resetPeak: false }).allocatedBytes, 'number');
});
