#!/usr/bin/env node
// Huge requests beside short ones: how long a short request waits while --huge requests of one --chars-character
// text each are under way (sent all at once, the short one --delay ms after them), against the same short request
// alone and one huge request alone, in the same run. Routes: coltrast serve's /embed (TEI's), /rerank (a query and
// one huge document), /search (a huge query over a small index) and /ask (a huge question, refused with a 400: it
// cannot fit the generator's positions; the short one is answered), and embed() called directly. The server runs
// in this process over the test fixtures (tiny-bert, tiny-cross-encoder/st, tiny-causal-lms/llama: the model's time
// is not what is measured, the tokenizing of the huge texts is). Uses the built package (npm run build).
//   node scripts/bench/serve-huge.js [--routes embed,rerank,search,ask,api] [--chars 2000000] [--huge 4] [--delay 50]
//                                    [--rounds 3] [--dist dist] [--json out.json]
// --dist: the built package to measure (another build's dist folder, to compare two builds on one machine).
// Each number is the median of the rounds, after a warm-up request; "short, behind" is the slowest of the short
// requests sent every --delay ms while the huge ones run; "huge at once" is the time until all of them are answered.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    routes: { type: 'string', default: 'embed,rerank,search,api' },
    chars: { type: 'string', default: '2000000' },
    huge: { type: 'string', default: '4' },
    delay: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '3' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    json: { type: 'string' },
  },
});
const [chars, huge, delay, rounds] = ['chars', 'huge', 'delay', 'rounds'].map((k) => Number(values[k]));
const { CrossEncoder, Encoder, Generator, Index, Rag, serve } = require(path.resolve(values.dist, 'index.js'));
const FIXTURES = path.join(ROOT, 'test', 'fixtures');

const WORDS = 'the quick brown fox jumps over lazy dog model text search cat'.split(' ');
const text = (n) => {
  let s = '';
  for (let i = 0; s.length < n; i++) s += `${WORDS[(i * 7) % WORDS.length]} `;
  return s.slice(0, n);
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long `request()` takes, in ms. */
async function timed(request) {
  const started = performance.now();
  await request();
  return performance.now() - started;
}

/**
 * One round: `big()` alone, `small()` alone, then `huge` big() at once with small() sent every `delay` ms until they
 * are done (the slowest of those, and how many).
 */
async function round(big, small) {
  const shortAlone = await timed(small);
  const hugeAlone = await timed(big);
  let done = false;
  const started = performance.now();
  let hugeAll = 0;
  const all = Promise.all(Array.from({ length: huge }, () => big())).finally(() => {
    done = true;
    hugeAll = performance.now() - started;
  });
  const behind = [];
  await sleep(delay);
  while (!done) behind.push(await timed(small));
  await all;
  return { shortAloneMs: shortAlone, hugeAloneMs: hugeAlone, hugeAllMs: hugeAll, shortBehindMs: Math.max(...behind), shortRequests: behind.length };
}

async function post(url, route, body, status = 200) {
  const res = await fetch(url + route, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  if (res.status !== status) throw new Error(`${route}: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

(async () => {
  const routes = values.routes.split(',');
  const encoder = await Encoder.load(path.join(FIXTURES, 'tiny-bert'), { device: 'cpu', threads: 1 });
  const reranker = routes.includes('rerank') ? await CrossEncoder.load(path.join(FIXTURES, 'tiny-cross-encoder', 'st'), { device: 'cpu', threads: 1 }) : undefined;
  const index = routes.includes('search')
    ? await Index.build(encoder, Array.from({ length: 200 }, (_, i) => ({ id: `d${i}`, text: text(40 + (i % 60)) })))
    : undefined;
  const generator = routes.includes('ask') ? await Generator.load(path.join(FIXTURES, 'tiny-causal-lms', 'llama'), { device: 'cpu', threads: 1 }) : undefined;
  const corpus = ['The cat sat on the mat.', 'A library for training embedding models in node.', 'Paris is the capital of France.', 'GPU kernels make search fast.'];
  const rag = generator && (await Rag.create({ retriever: encoder, generator, corpus }));
  const server = await serve({ encoder, reranker, index, generator, rag, port: 0, host: '127.0.0.1' });
  const big = text(chars);
  const cases = {
    embed: [() => post(server.url, '/embed', { inputs: big }), () => post(server.url, '/embed', { inputs: 'the cat sat' })],
    rerank: [() => post(server.url, '/rerank', { query: 'the cat', texts: [big] }), () => post(server.url, '/rerank', { query: 'the cat', texts: ['the cat sat'] })],
    search: [() => post(server.url, '/search', { query: big, k: 3 }), () => post(server.url, '/search', { query: 'the cat sat', k: 3 })],
    ask: [() => post(server.url, '/ask', { question: big, max_new_tokens: 4 }, 400), () => post(server.url, '/ask', { question: 'where did the cat sit?', max_new_tokens: 4 })],
    api: [() => encoder.embed([big]), () => encoder.embed(['the cat sat'])],
  };
  const rows = [];
  for (const name of routes) {
    if (!cases[name]) throw new Error(`unknown route ${name} (one of ${Object.keys(cases).join(', ')})`);
    const [bigRequest, smallRequest] = cases[name];
    await bigRequest(); // warm-up
    await smallRequest();
    const results = [];
    for (let r = 0; r < rounds; r++) results.push(await round(bigRequest, smallRequest));
    const row = { route: name };
    for (const key of ['shortAloneMs', 'hugeAloneMs', 'hugeAllMs', 'shortBehindMs', 'shortRequests']) row[key] = median(results.map((x) => x[key]));
    rows.push(row);
    console.log(
      `${name}: short alone ${row.shortAloneMs.toFixed(0)} ms, one huge alone ${row.hugeAloneMs.toFixed(0)} ms, ${huge} huge at once ` +
        `${row.hugeAllMs.toFixed(0)} ms, short behind them: the slowest of ${row.shortRequests} ${row.shortBehindMs.toFixed(0)} ms`,
    );
  }
  await server.close();
  const out = { chars, huge, delay, rounds, dist: values.dist, load: os.loadavg(), date: new Date().toISOString(), rows };
  if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(out, null, 2)}\n`);
  process.exit(0);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
