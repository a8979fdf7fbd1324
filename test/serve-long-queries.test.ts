// coltrast serve tokenizes each /search request's queries as it arrives, before the search queue, as it does /embed's
// (test/serve-long-texts.test.ts): a search call only embeds what is tokenized already, so that a short /search is
// never batched behind the tokenizing of huge queries. The hits are Index.search()'s of the same strings (dense,
// multi-vector, hybrid, re-ranked), and embed()'s and predict()'s own signals reach the tokenizer: an abort while a
// huge text waits on the tokenizer's long lane rejects with the call's usual ABORTED message, the text never sent.
// Latencies are compared with a same-run baseline only.
import test from 'ava';
import path from 'node:path';
import { CrossEncoder, Encoder, Index, serve, type IndexDoc, type SearchOptions, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { longText as text, postJson, watchingTokenizer } from './helpers/long-texts';
import { makeSmallMultiVector, rejection } from './helpers/vectors';

const DOCS: IndexDoc[] = Array.from({ length: 24 }, (_, i) => ({ id: `d${i}`, text: `${text(30 + i * 7, i)} ${i % 3 === 0 ? 'river bank' : 'tiny model'}`, metadata: { even: i % 2 === 0 } }));

const CE = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const QUERIES = ['the river bank', '', 'a tiny model', text(2000, 4), 'vector search'];

let enc: Encoder;
let ce: CrossEncoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  ce = await CrossEncoder.load(CE, { device: 'cpu', threads: 1 });
});
test.after.always(() => {
  enc?.dispose();
  ce?.dispose();
});

const post = (server: Server, route: string, body: unknown, signal?: AbortSignal) => postJson(`${server.url}${route}`, body, signal);

// Serial: the other tests' tokenizing would share the cores with it.
test.serial('a short /search sent after four with huge queries is answered without waiting for their tokenizing', async (t) => {
  const index = await Index.build(enc, DOCS);
  const server = await serve({ encoder: enc, index, port: 0 });
  const huge = text(1_000_000, 1);
  try {
    await post(server, '/search', { query: 'warm up', k: 3 });
    const alone = await post(server, '/search', { query: huge, k: 3 }); // the same-run baseline: one huge request, nothing else running
    t.is(alone.status, 200);
    let answered = false;
    const four = Promise.all([1, 2, 3, 4].map(() => post(server, '/search', { query: huge, k: 3 }))).finally(() => (answered = true));
    const waits: number[] = [];
    while (!answered) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const short = await post(server, '/search', { query: 'the river bank', k: 3 });
      t.is(short.status, 200);
      waits.push(short.ms);
    }
    // The ids found (scores are equal to float rounding only: a batch pads its queries to its longest).
    const found = (json: any) => json.results.map((r: { hits: { id: string }[] }) => r.hits.map((h) => h.id));
    for (const { status, json } of await four) {
      t.is(status, 200);
      t.deepEqual(found(json), found(alone.json));
    }
    const worst = Math.max(...waits);
    t.log(`one /search of a ${huge.length}-character query: ${alone.ms.toFixed(0)} ms; a short one while four ran: ${waits.length} requests, the slowest ${worst.toFixed(0)} ms`);
    t.true(waits.length > 0);
    t.true(worst < alone.ms / 3, `a short /search waited ${worst.toFixed(0)} ms behind huge ones that take ${alone.ms.toFixed(0)} ms each`);
  } finally {
    await server.close();
  }
});

test('searchPrepared() of queries prepared ahead finds search()\'s hits, bit for bit: dense, filtered, MMR, MaxSim re-ranked, hybrid, BM25, cross-encoder re-ranked, multi-vector', async (t) => {
  const same = async (index: Index, options: SearchOptions, label: string) => {
    const prepared = await index.prepareQueries(QUERIES, options);
    t.deepEqual(await index.searchPrepared(prepared, options), await index.search(QUERIES, options), label);
  };
  const late = await Index.build(enc, DOCS, { lateInteraction: true });
  await same(late, { k: 4 }, 'dense');
  await same(late, { k: 3, filter: { 'metadata.even': true }, mmrLambda: 0.5 }, 'filtered, MMR');
  await same(late, { k: 4, rerank: 'maxsim', candidates: 8 }, 'MaxSim re-ranked');
  await same(late, { k: 4, mode: 'hybrid', rerank: 'maxsim', fusion: 'relative' }, 'hybrid, re-ranked');
  await same(late, { k: 4, mode: 'bm25', mmrLambda: 0.3 }, 'BM25, MMR');
  await same(late, { k: 4, mode: 'hybrid', rerank: ce, candidates: 6 }, 'hybrid, cross-encoder');
  // BM25 alone embeds nothing: nothing is tokenized (an aborted signal is never looked at).
  const lexical = await late.prepareQueries(QUERIES, { mode: 'bm25' }, AbortSignal.abort());
  t.deepEqual(lexical, QUERIES.map((text) => ({ text, pooled: undefined, tokens: undefined })));
  // Prepared for other options than the search's (here, BM25's: no tokens), the search embeds the texts: the same hits.
  t.deepEqual(await late.searchPrepared(lexical, { k: 4, rerank: 'maxsim' }), await late.search(QUERIES, { k: 4, rerank: 'maxsim' }));
  // The queries' tokenizing stops at an abort, with the tokenizer's ABORTED.
  const aborted = await rejection(() => late.prepareQueries(QUERIES, {}, AbortSignal.abort()));
  t.is(aborted.code, 'ABORTED');
  const multi = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  try {
    await makeSmallMultiVector(multi);
    const exact = await Index.build(multi, DOCS);
    await same(exact, { k: 4 }, 'multi-vector');
    await same(exact, { k: 4, mode: 'hybrid', filter: { 'metadata.even': false } }, 'multi-vector, hybrid, filtered');
  } finally {
    multi.dispose();
  }
});

// Serial: the long lane is the process's, and the texts sent to the tokenizer's worker are watched.
test.serial('embed() and predict() aborted while a huge text waits on the tokenizer\'s long lane reject at once with their usual ABORTED, the text never sent', async (t) => {
  await watchingTokenizer(async (sent) => {
    let settled = false;
    const holder = enc.tokenize([text(800_000, 1)]).finally(() => (settled = true)); // holds the long lane
    const stop = new AbortController();
    const embedding = rejection(() => enc.embed(['short', text(300_001, 2)], { signal: stop.signal }));
    const predicting = rejection(() => ce.predict([['q', text(300_002, 3)]], { signal: stop.signal }));
    const ranking = rejection(() => ce.rank('q', [text(300_003, 5)], { signal: stop.signal }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    const [embedError, predictError, rankError] = await Promise.all([embedding, predicting, ranking]);
    t.false(settled, 'they rejected at the abort, before the text ahead of them on the long lane was tokenized');
    t.is(embedError.code, 'ABORTED');
    t.is(embedError.message, 'embed() was aborted (options.signal) after 0 of 2 inputs');
    t.is(predictError.code, 'ABORTED');
    t.is(predictError.message, 'predict() was aborted (options.signal) after 0 of 1 inputs');
    t.is(rankError.message, 'rank() was aborted (options.signal) after 0 of 1 inputs');
    await holder;
    // The long lane takes its requests in turn: once one sent after theirs is answered, theirs have had their turn.
    await enc.tokenize([text(200_000, 6)]);
    t.true(sent.includes(800_000) && sent.includes(200_000), `sent: ${sent}`);
    t.deepEqual(sent.filter((n) => n > 300_000 && n < 300_010), [], 'the aborted calls\' huge texts were never sent to the tokenizer');
  });
  // Not aborted, a signal changes nothing.
  t.deepEqual(await enc.embed(['short', text(3000, 2)], { signal: new AbortController().signal }), await enc.embed(['short', text(3000, 2)]));
  const pairs: [string, string][] = [['q', text(3000, 2)], ['a tiny bert', 'short']];
  t.deepEqual(await ce.predict(pairs, { signal: new AbortController().signal }), await ce.predict(pairs));
});
