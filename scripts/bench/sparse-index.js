#!/usr/bin/env node
// SparseIndex at scale: N documents of synthetic sparse vectors shaped like a SPLADE model's (a 30,522-entry
// vocabulary; --doc-entries non-zero entries a document and --query-entries a query, drawn from a Zipf distribution
// over the vocabulary so that postings lists are as skewed as a real vocabulary's; positive weights), indexed with
// addAll() a slice at a time, then searched (exact top 10), saved, loaded and searched again. Each step reports its wall
// time and the longest event-loop stall it caused (a 5 ms setInterval's largest gap); memory as resident growth and
// the heap. Seeded. Needs --expose-gc:
//   node --expose-gc scripts/bench/sparse-index.js [--docs 1000000] [--doc-entries 120] [--query-entries 30]
//       [--queries 1000] [--file /tmp/coltrast-sparse-<docs>.bin] [--json out.json] [--search-only]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.join(__dirname, '..', '..');
const { SparseIndex } = require(path.join(ROOT, 'dist'));
const { seededRandom } = require(path.join(ROOT, 'dist', 'random.js'));

const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '1000000' },
    'doc-entries': { type: 'string', default: '120' },
    'query-entries': { type: 'string', default: '30' },
    queries: { type: 'string', default: '1000' },
    vocabulary: { type: 'string', default: '30522' },
    file: { type: 'string' },
    json: { type: 'string' },
    'search-only': { type: 'boolean' },
  },
});
if (typeof global.gc !== 'function') throw new Error('run with node --expose-gc');
const docs = Number(values.docs);
const vocabulary = Number(values.vocabulary);
const file = values.file ?? path.join(os.tmpdir(), `coltrast-sparse-${docs}.bin`);
const random = seededRandom(7).next;

// Zipf (s = 1) over the vocabulary by inverse transform on the cumulative weights; the rank is shuffled onto ids so
// that frequent terms are not the low ids.
const cumulative = new Float64Array(vocabulary);
for (let r = 0, sum = 0; r < vocabulary; r++) cumulative[r] = sum += 1 / (r + 1);
const ids = Int32Array.from({ length: vocabulary }, (_, i) => i);
for (let i = vocabulary - 1; i > 0; i--) {
  const j = Math.floor(random() * (i + 1));
  [ids[i], ids[j]] = [ids[j], ids[i]];
}
function term() {
  const x = random() * cumulative[vocabulary - 1];
  let lo = 0, hi = vocabulary - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return ids[lo];
}
function vector(entries) {
  const picked = new Set();
  while (picked.size < entries) picked.add(term());
  const indices = Int32Array.from([...picked].sort((a, b) => a - b));
  return { indices, values: Float32Array.from(indices, () => 0.05 + 2 * random()) };
}

/**
 * Runs `work`, returning its seconds, the longest event-loop stall (ms) it caused (a 2 ms timer's largest gap) and how
 * many of the timer's gaps were over 20 ms, of how many.
 */
async function timed(work) {
  let last = performance.now(), longest = 0, over20 = 0, gaps = 0;
  const gap = () => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    if (now - last > 20) over20++;
    gaps++;
    last = now;
  };
  const timer = setInterval(gap, 2);
  const started = performance.now();
  const result = await work();
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  gap();
  return { seconds, stallMs: longest, over20, gaps, result };
}

const mib = (bytes) => Math.round(bytes / 2 ** 20);

async function main() {
  const docEntries = Number(values['doc-entries']);
  const queries = Array.from({ length: Number(values.queries) }, () => vector(Number(values['query-entries'])));
  global.gc();
  const before = process.memoryUsage();
  const index = new SparseIndex(vocabulary);
  const slice = 10000;
  // Each slice's vectors are drawn outside the timed part; addAll's own time and stalls are summed / maxed.
  let addSeconds = 0, addStall = 0;
  for (let start = 0; start < docs; start += slice) {
    const n = Math.min(slice, docs - start);
    const part = Array.from({ length: n }, () => vector(docEntries));
    const names = Array.from({ length: n }, (_, i) => `d${start + i}`);
    const t = await timed(() => index.addAll(names, part));
    addSeconds += t.seconds;
    addStall = Math.max(addStall, t.stallMs);
  }
  global.gc();
  const built = process.memoryUsage();
  const search = async (ix) => {
    const t = await timed(() => ix.searchAll(queries, 10));
    return { seconds: t.seconds, msPerQuery: (1000 * t.seconds) / queries.length, stallMs: t.stallMs, over20: t.over20, gaps: t.gaps, hits: t.result };
  };
  const first = await search(index);
  // --search-only: the search's figures alone (to compare versions of the search on one machine at one time).
  if (values['search-only']) {
    const out = { date: new Date().toISOString(), docs, queries: queries.length, search: { msPerQuery: +first.msPerQuery.toFixed(3), longestStallMs: +first.stallMs.toFixed(1), gapsOver20ms: `${first.over20} of ${first.gaps}` } };
    console.log(JSON.stringify(out, null, 2));
    if (values.json) fs.writeFileSync(values.json, JSON.stringify(out, null, 2));
    return;
  }
  const save = await timed(() => index.save(file));
  const bytes = fs.statSync(file).size;
  global.gc();
  const beforeLoad = process.memoryUsage();
  const load = await timed(() => SparseIndex.load(file));
  const loaded = load.result;
  const again = await search(loaded);
  const same = JSON.stringify(first.hits) === JSON.stringify(again.hits);
  const out = {
    date: new Date().toISOString(),
    machine: `${os.cpus().length} × ${os.cpus()[0].model}`,
    docs,
    docEntries,
    queries: queries.length,
    queryEntries: Number(values['query-entries']),
    vocabulary,
    postings: index.postings,
    addAll: { seconds: +addSeconds.toFixed(2), docsPerSecond: Math.round(docs / addSeconds), longestStallMs: +addStall.toFixed(1) },
    memory: { residentGrowthMiB: mib(built.rss - before.rss), heapMiB: mib(built.heapUsed - before.heapUsed), outsideHeapMiB: mib(built.arrayBuffers - before.arrayBuffers) },
    search: { msPerQuery: +first.msPerQuery.toFixed(3), longestStallMs: +first.stallMs.toFixed(1), gapsOver20ms: `${first.over20} of ${first.gaps}` },
    save: { seconds: +save.seconds.toFixed(2), fileMiB: mib(bytes), longestStallMs: +save.stallMs.toFixed(1) },
    load: { seconds: +load.seconds.toFixed(2), longestStallMs: +load.stallMs.toFixed(1), residentGrowthMiB: mib(process.memoryUsage().rss - beforeLoad.rss) },
    searchAfterLoad: { msPerQuery: +again.msPerQuery.toFixed(3), sameHits: same },
  };
  console.log(JSON.stringify(out, null, 2));
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(out, null, 2));
  fs.rmSync(file, { force: true });
  if (!same) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
