#!/usr/bin/env node
// BM25 index memory and speed: builds a Bm25Index (addAll) over N synthetic documents of 60 words and times 200
// searches of 5 words. Words are drawn log-uniformly from a vocabulary of V ranks (rank r has probability ~1/r), so a
// large V gives what real corpora have, a few very common terms and a long tail of terms in one or two documents;
// a small V gives every term in many documents. Node's heap and array-buffer memory are read after a full collection.
// The event loop's longest gap (a 5 ms timer) is recorded while building, and while removing 1,000 documents spread
// over the index (remove(), after the searches).
// --docs-file: the first --docs documents of a JSONL file ({ id, text } a line; e.g. the folder that
// scripts/bench/index-load.js writes) instead, with the same synthetic queries.
// --dist picks the compiled lib/ (npm run build:ts), to compare builds. Needs --expose-gc:
//   node --expose-gc scripts/bench/bm25-memory.js [--docs 100000] [--vocabulary 2000000] [--seed 1] [--docs-file f.jsonl] [--dist dist]
'use strict';
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.join(__dirname, '..', '..');
const fs = require('node:fs');
const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '100000' },
    vocabulary: { type: 'string', default: '2000000' },
    seed: { type: 'string', default: '1' },
    'docs-file': { type: 'string' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
  },
});
if (typeof global.gc !== 'function') throw new Error('run with node --expose-gc');
const docs = Number(values.docs);
const vocabulary = Number(values.vocabulary);
const { Bm25Index } = require(path.join(path.resolve(values.dist), 'bm25.js'));
const { seededRandom } = require(path.join(ROOT, 'dist', 'random.js'));

const random = seededRandom(Number(values.seed)).next;
const word = () => `w${Math.floor(vocabulary ** random()).toString(36)}`;
const words = (n) => Array.from({ length: n }, word).join(' ');
const fromFile = () => {
  const out = [];
  for (const line of fs.readFileSync(values['docs-file'], 'utf8').split('\n')) {
    if (out.length === docs) break;
    if (line) out.push(JSON.parse(line));
  }
  if (out.length < docs) throw new Error(`${values['docs-file']} has ${out.length} documents, not ${docs}`);
  return out;
};
const corpus = values['docs-file'] ? fromFile() : Array.from({ length: docs }, (_, i) => ({ id: `d${i}`, text: words(60) }));
const queries = Array.from({ length: 200 }, () => words(5));

const memory = () => {
  global.gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, outside: m.arrayBuffers, rss: m.rss };
};

(async () => {
  // The longest time between two firings of a 5 ms timer while `work` runs.
  const longestGap = async (work) => {
    let last = performance.now();
    let longest = 0;
    const tick = () => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    };
    const timer = setInterval(tick, 5);
    await work();
    tick();
    clearInterval(timer);
    return Math.round(longest);
  };
  const before = memory();
  const index = new Bm25Index();
  let started = process.hrtime.bigint();
  const buildLongestGapMs = await longestGap(() => index.addAll(corpus));
  const buildSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const after = memory();
  const terms = index.termCount ?? index.postings.size;
  started = process.hrtime.bigint();
  for (const q of queries) index.search(q, 10);
  const msPerQuery = Number(process.hrtime.bigint() - started) / 1e6 / queries.length;
  const keep = new Uint8Array(docs).fill(1);
  for (let i = 0; i < 1000 && i < docs; i++) keep[Math.floor((i * docs) / Math.min(1000, docs))] = 0;
  started = process.hrtime.bigint();
  const removeLongestGapMs = await longestGap(() => index.remove(keep));
  const removeMs = Number(process.hrtime.bigint() - started) / 1e6;
  const mib = (x) => Math.round(x / 2 ** 20);
  console.log(
    JSON.stringify({
      docs,
      vocabulary,
      terms,
      buildSeconds,
      heapMiB: mib(after.heap - before.heap),
      arrayBuffersMiB: mib(after.outside - before.outside),
      rssGrowthMiB: mib(after.rss - before.rss),
      msPerQuery,
      buildLongestGapMs,
      removeMs,
      removeLongestGapMs,
      dist: path.resolve(values.dist),
      node: process.version,
    }),
  );
  if (index.size !== docs - Math.min(1000, docs)) throw new Error('lost documents');
})();
