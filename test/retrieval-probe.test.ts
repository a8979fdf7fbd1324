// Odd inputs to chunking, mining, quantization, token pooling and top-k, each checked against a plain reference
// written here: identical projects, non-ASCII text, NaN values, a large mining run's hold on the event loop.
import test from 'ava';
import { ColtrastError, Encoder, mineHardNegatives, poolTokens, quantizeEmbeddings } from '../lib';
import { mineExamples, semanticChunks, splitSentences, type Embedder } from '../lib/chunking';
import { topK } from '../lib/top-k';
import { FIXTURE } from './helpers/fixture';

/** Bag-of-words unit vectors (words hashed into 64 dimensions), and a token count of 2 + the words. */
const bagOfWords: Embedder = {
  embed: async (texts) =>
    texts.map((text) => {
      const v = new Float32Array(64);
      for (const word of text.toLowerCase().match(/\p{L}+/gu) ?? []) v[[...word].reduce((h, c) => (h * 31 + c.codePointAt(0)!) % 64, 0)] += 1;
      const norm = Math.hypot(...v) || 1;
      return v.map((x) => x / norm);
    }),
  countTokens: async (texts) => texts.map((text) => 2 + (text.match(/\S+/g)?.length ?? 0)),
};

const matrix = (rows: number[][]) => ({ dims: [rows.length, rows[0].length] as [number, number], data: Float32Array.from(rows.flat()) });

test("mineExamples: a negative is never the question's positive or its own project's chunk, nor one text twice, when projects share text", async (t) => {
  const readme = 'Alpha uses a graph database.\nIt stores embeddings for search.\nThe license is MIT.';
  const projects = [
    { id: 'a', document: readme, qa: [{ question: 'What license does alpha use?', answer: 'MIT' }, { question: 'What database?', answer: 'graph database' }] },
    { id: 'b', document: readme, qa: [] },
    { id: 'c', document: readme, qa: [] },
    { id: 'd', document: 'Beta is a web app.\nThe license is MIT.', qa: [] },
  ];
  // threshold 2: every sentence its own chunk; positiveThreshold -1: the best chunk is always the positive.
  const { examples, chunks } = await mineExamples(projects, bagOfWords, { maxTokens: 50, threshold: 2 }, { positiveThreshold: -1, hardNegatives: 3 });
  t.is(examples.length, 2);
  for (const e of examples) {
    t.true(chunks.get('a')!.includes(e.positive));
    t.deepEqual(e.negatives, ['Beta is a web app.'], e.query); // the only text outside project a
  }
});

test('splitSentences: sentences start with capitals and digits of any script, and CJK full stops end them; chunks keep within maxTokens', async (t) => {
  t.deepEqual(splitSentences('Das ist gut. Über alles. Это тест. Ещё раз! ١٢ عدد. هذا. 日本語の文。次の文！ 最後？'), [
    'Das ist gut.', 'Über alles.', 'Это тест.', 'Ещё раз!', '١٢ عدد.', 'هذا.', '日本語の文。', '次の文！', '最後？',
  ]);
  // ASCII splits as before: a lowercase word or an abbreviation's dot starts no sentence.
  t.deepEqual(splitSentences('# Title\n\nAlpha one. Alpha two! e.g. this. Beta 3?\nGamma four'), ['# Title', 'Alpha one.', 'Alpha two! e.g. this.', 'Beta 3?', 'Gamma four']);
  const chunks = await semanticChunks('Привет мир. Это тест. Ещё одно предложение.', bagOfWords, { maxTokens: 6, threshold: -1 });
  t.deepEqual(chunks, ['Привет мир. Это тест.', 'Ещё одно предложение.']);
  for (const c of chunks) t.true((await bagOfWords.countTokens([c]))[0] <= 6, c);
});

test('quantizeEmbeddings refuses NaN and infinite values and names a calibration of the wrong width', (t) => {
  const ok = matrix([[0.5, -1], [0, 2]]);
  for (const [name, call] of [
    ['embeddings', () => quantizeEmbeddings(matrix([[NaN, 1], [0, 2]]), 'int8')],
    ['embeddings', () => quantizeEmbeddings(matrix([[Infinity, 1], [0, 2]]), 'uint8')],
    ['options.ranges', () => quantizeEmbeddings(ok, 'int8', { ranges: matrix([[NaN, 0], [1, 1]]) })],
    ['options.calibration', () => quantizeEmbeddings(ok, 'int8', { calibration: matrix([[-Infinity, 0], [1, 1]]) })],
  ] as const) {
    const e = t.throws(call, { instanceOf: ColtrastError });
    t.regex(e!.message, new RegExp(`^${name.replace('.', '\\.')} holds (NaN|-?Infinity) \\(row \\d, column 0\\): int8 / uint8 codes need finite values`), e!.message);
  }
  const e = t.throws(() => quantizeEmbeddings(ok, 'int8', { calibration: matrix([[1, 2, 3]]) }), { instanceOf: ColtrastError });
  t.regex(e!.message, /^options\.calibration must be embeddings of width 2/);
  // Sign bits are numpy's (NaN > 0 is false): binary codes stay defined for any value.
  t.deepEqual([...quantizeEmbeddings(matrix([[NaN, 1, -1, Infinity, 0, 1, 1, 1, -Infinity]]), 'ubinary').data], [0b01010111, 0]);
});

test('int8 and binary codes rank as the float vectors do on well-separated data; Hamming counts are the differing sign bits', (t) => {
  const dim = 37; // not a multiple of 8: the last byte is part padding
  const random = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const next = random(7);
  const docs = Array.from({ length: 20 }, () => Array.from({ length: dim }, next));
  // Each query: a document with a little noise, so its own document is far ahead of the rest.
  const queries = docs.map((d) => d.map((x) => x + 0.05 * next()));
  const int8Docs = quantizeEmbeddings(matrix(docs), 'int8');
  const int8Queries = quantizeEmbeddings(matrix(queries), 'int8', { ranges: int8Docs.ranges });
  const bits = (q: ReturnType<typeof quantizeEmbeddings>, r: number) => [...(q.data as Uint8Array).subarray(r * q.dims[1], (r + 1) * q.dims[1])];
  const ubDocs = quantizeEmbeddings(matrix(docs), 'ubinary');
  const ubQueries = quantizeEmbeddings(matrix(queries), 'ubinary');
  queries.forEach((q, i) => {
    const int8Scores = docs.map((_, j) => Array.from({ length: dim }, (_, c) => int8Queries.data[i * dim + c] * int8Docs.data[j * dim + c]).reduce((a, b) => a + b));
    t.is(int8Scores.indexOf(Math.max(...int8Scores)), i);
    const hamming = docs.map((d, j) => {
      const plain = d.filter((x, c) => x > 0 !== q[c] > 0).length;
      const popcount = bits(ubQueries, i).reduce((n, b, k) => n + [...(b ^ bits(ubDocs, j)[k]).toString(2)].filter((x) => x === '1').length, 0);
      t.is(popcount, plain);
      return plain;
    });
    t.is(hamming.indexOf(Math.min(...hamming)), i);
  });
});

test('poolTokens refuses NaN and infinite token vectors rather than pooling them into fewer, NaN, vectors', (t) => {
  for (const bad of [NaN, Infinity]) {
    const e = t.throws(() => poolTokens(matrix([[1, 0], [bad, 0], [0, 1], [1, 1], [0.5, 0.5]]), 2), { instanceOf: ColtrastError });
    t.regex(e!.message, /^tokens holds (NaN|Infinity) \(token 1, column 0\): token pooling needs finite vectors/);
  }
  // Edges: identical vectors pool to their mean; a pool factor past the token count keeps one cluster.
  t.deepEqual(poolTokens(matrix([[1, 0], [0, 1], [0, 1], [0, 1]]), 3).dims, [2, 2]);
  t.deepEqual([...poolTokens(matrix([[1, 0], [1, 0], [0, 1]]), 10).data], [1, 0, 0.5, 0.5]);
});

test('topK is the first k of a stable sort, for any k', (t) => {
  let seed = 1;
  const next = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  for (let trial = 0; trial < 500; trial++) {
    const n = Math.floor(next() * 30);
    const k = Math.floor(next() * 35);
    const row = Array.from({ length: n }, () => Math.floor(next() * 5)); // many ties
    const want = row.map((_, i) => i).sort((a, b) => row[b] - row[a] || a - b).slice(0, k);
    t.deepEqual(topK(n, k, (a, b) => row[a] > row[b] || (row[a] === row[b] && a < b)), want);
  }
});

test('mining many queries lets the event loop run after the search, and odd data mines what the definition says', async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  t.teardown(() => encoder.dispose());
  const data = Array.from({ length: 20000 }, (_, i) => ({ query: `question ${i} about ${i % 97}`, positive: `answer ${i} on ${i % 89}` }));
  let searched = false;
  let ticksAfterSearch = 0;
  const timer = setInterval(() => searched && ticksAfterSearch++, 1);
  const r = await mineHardNegatives({ data, model: encoder, relativeMargin: 0.01, onProgress: (p) => (searched = p.stage === 'search' && p.done === p.total) });
  clearInterval(timer);
  // Striking, ranking, writing rows and summarizing 20,000 queries held the event loop for a quarter of a second.
  t.true(ticksAfterSearch > 0, 'the event loop never ran between the search and the result');
  t.is(r.queries, 20000);
  for (const row of r.rows as { query: string; negative: string }[]) t.not(row.negative, data[Number(row.query.split(' ')[1])].positive);

  // A corpus of only the positive, every document the same, more negatives than documents.
  t.deepEqual((await mineHardNegatives({ data: [{ query: 'q', positive: 'p' }], model: encoder })).rows, []);
  const same = await mineHardNegatives({ data: [{ query: 'q', positive: 'same' }, { query: 'r', positive: 'same' }], corpus: ['same', 'same'], model: encoder });
  t.deepEqual([same.rows, same.corpus, same.missing], [[], 1, 6]);
  const few = await mineHardNegatives({ data: [{ query: 'q', positive: 'p' }], corpus: ['a', 'b'], numNegatives: 10, samplingStrategy: 'random', model: encoder });
  t.deepEqual(few.rows.map((x: any) => x.negative).sort(), ['a', 'b']);
  t.is(few.missing, 8);
});
