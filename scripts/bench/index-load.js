#!/usr/bin/env node
// Loading a large saved Index: wall time, the longest event-loop stall, and memory (Node's heap, memory outside it,
// resident growth) of Index.load() on a folder of N documents of MS MARCO passages' length (~340 characters of
// English words, ids "d<i>", no metadata) with random unit vectors, then one search (top 10). The folder is written
// here once, as Index.save() writes one, for the tiny fixture model (32-wide vectors, so that the documents, not the
// vectors, are what is measured), and reused while its document count matches. One load per process. Then, each
// timed with the longest event-loop stall it caused: searches with filters of each kind (on the text, on ids, on
// metadata, a function) and the removal of 1,000 documents. --dist picks the compiled lib/ (npm run build:ts), to
// compare builds. Needs --expose-gc:
//   node --expose-gc scripts/bench/index-load.js [--docs 1000000] [--dir /tmp/coltrast-index-<docs>] [--mmap] [--dist dist]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.join(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'tiny-bert');
const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '1000000' },
    dir: { type: 'string' },
    mmap: { type: 'boolean', default: false },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
  },
});
if (typeof global.gc !== 'function') throw new Error('run with node --expose-gc');
const docs = Number(values.docs);
const dir = values.dir ?? path.join(os.tmpdir(), `coltrast-index-${docs}`);
const { Encoder, Index } = require(path.resolve(values.dist));
const { seededRandom } = require(path.join(ROOT, 'dist', 'random.js'));

const WORDS =
  'the of and to in is was for on that with as by at from his an were are which this be has or had its first new after who they have her she two been other when there all during into school time may years more most only over city some world would where later up such used many can state about national out known university united then made'.split(
    ' ',
  );

/** Writes the folder: the manifest and vector header of a real two-document index, scaled to `docs` rows. */
async function write(encoder) {
  const small = `${dir}.small`;
  await (await Index.build(encoder, [{ id: 'a', text: 'one' }, { id: 'b', text: 'two' }])).save(small);
  const manifest = JSON.parse(fs.readFileSync(path.join(small, 'index.json'), 'utf8'));
  const vectors = fs.readFileSync(path.join(small, 'vectors.safetensors'));
  const header = JSON.parse(vectors.subarray(8, 8 + Number(vectors.readBigUInt64LE(0))).toString());
  fs.rmSync(small, { recursive: true });
  const dim = header.vectors.shape[1];
  if (header.vectors.dtype !== 'F32') throw new Error(`expected float32 vectors, got ${header.vectors.dtype}`);
  header.vectors.shape = [docs, dim];
  header.vectors.data_offsets = [0, docs * dim * 4];
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const random = seededRandom(1).next;
  const out = fs.openSync(path.join(dir, 'vectors.safetensors'), 'w');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(out, length);
  fs.writeSync(out, json);
  const block = new Float32Array(10000 * dim);
  for (let start = 0; start < docs; start += 10000) {
    const n = Math.min(10000, docs - start);
    for (let r = 0; r < n; r++) {
      const row = block.subarray(r * dim, (r + 1) * dim);
      for (let j = 0; j < dim; j++) row[j] = random() - 0.5;
      const norm = Math.hypot(...row);
      for (let j = 0; j < dim; j++) row[j] /= norm;
    }
    fs.writeSync(out, new Uint8Array(block.buffer, 0, n * dim * 4));
  }
  fs.closeSync(out);
  const lines = fs.openSync(path.join(dir, 'docs.jsonl'), 'w');
  for (let start = 0; start < docs; start += 10000) {
    const rows = [];
    for (let i = start; i < Math.min(docs, start + 10000); i++) {
      const words = [];
      for (let length = 0; length < 340; ) {
        const w = WORDS[Math.floor(random() * WORDS.length)];
        words.push(w);
        length += w.length + 1;
      }
      rows.push(JSON.stringify({ id: `d${i}`, text: words.join(' ') }));
    }
    fs.writeSync(lines, `${rows.join('\n')}\n`);
  }
  fs.closeSync(lines);
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ ...manifest, documents: docs }));
}

/** The longest gap between ticks of a 5 ms timer since the last reset(): how long the event loop was held. */
function stallWatch() {
  let longest = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 5);
  return { longest: () => longest, reset: () => (longest = 0), stop: () => clearInterval(timer) };
}

const memory = () => {
  global.gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, outside: m.arrayBuffers, rss: m.rss };
};

(async () => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  const manifest = path.join(dir, 'index.json');
  if (!fs.existsSync(manifest) || JSON.parse(fs.readFileSync(manifest, 'utf8')).documents !== docs) await write(encoder);
  const before = memory();
  const loading = stallWatch();
  const started = performance.now();
  const index = await Index.load(dir, encoder, { mmap: values.mmap });
  const loadSeconds = (performance.now() - started) / 1000;
  loading.stop();
  const after = memory();
  const loaded = index.size;
  const searchStarted = performance.now();
  const [hits] = await index.search(['school city world'], { k: 10 });
  const searchMs = performance.now() - searchStarted;
  // Then each operation alone: milliseconds, and the longest gap between 5 ms timer ticks it caused.
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
  const watch = stallWatch();
  const operations = {};
  const search = (filter) => index.search(['school city world'], { k: 10, filter });
  for (const [name, run] of [
    ['filter on the text ($regex)', () => search({ text: { $regex: '^school' } })],
    ['filter on ids ($in)', () => search({ id: { $in: ['d5', 'd7', 'd9'] } })],
    ['filter on metadata', () => search({ 'metadata.lang': 'en' })],
    ['filter by a function', () => search((d) => d.id.endsWith('7'))],
    ['remove 1,000 documents', () => index.remove(Array.from({ length: 1000 }, (_, i) => `d${Math.floor((i * docs) / 1000)}`))],
  ]) {
    await settle();
    watch.reset();
    const start = performance.now();
    await run();
    const ms = performance.now() - start;
    await settle();
    operations[name] = { ms: Math.round(ms), longestStallMs: Math.round(watch.longest()) };
  }
  watch.stop();
  const mib = (x) => Math.round(x / 2 ** 20);
  console.log(
    JSON.stringify({
      docs: loaded,
      mmap: values.mmap,
      loadSeconds: Number(loadSeconds.toFixed(2)),
      longestStallMs: Math.round(loading.longest()),
      heapMiB: mib(after.heap - before.heap),
      outsideHeapMiB: mib(after.outside - before.outside),
      rssGrowthMiB: mib(after.rss - before.rss),
      searchMs: Math.round(searchMs),
      firstHit: { id: hits[0].id, textLength: hits[0].text.length },
      operations,
      dist: path.resolve(values.dist),
    }),
  );
})().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
