#!/usr/bin/env node
// Reading a training-data file: wall time and peak memory of readTrainingData() on a JSONL file of (query,
// positive) pairs of MS MARCO's proportions (queries ~35 characters, passages ~350), written here with a seed.
// One read per process, so that the peak resident memory (getrusage's maxrss, less the process's before reading)
// is this read's. --dist picks the compiled lib/ (npm run build:ts), to compare builds.
//   node scripts/bench/read-data.js [--pairs 1000000] [--dist dist] [--file /tmp/pairs.jsonl] [--json out.json]
// The file is written once and reused if it is already there with the same pair count.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const v8 = require('node:v8');
const { parseArgs } = require('node:util');

const ROOT = path.join(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    pairs: { type: 'string', default: '1000000' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    file: { type: 'string' },
    json: { type: 'string' },
  },
});
const pairs = Number(values.pairs);
const file = values.file ?? path.join(os.tmpdir(), `coltrast-read-data-${pairs}.jsonl`);

const WORDS = 'the of and to in is was for on that with as by at from his an were are which this be has or had its first new after who they have her she two been other when there all during into school time may years more most only over city some world would where later up such used many can state about national out known university united then made'.split(' ');

function write() {
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const words = (n) => Array.from({ length: n }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' ');
  const fd = fs.openSync(`${file}.tmp`, 'w');
  let buffer = '';
  for (let i = 0; i < pairs; i++) {
    buffer += `${JSON.stringify({ query: `${words(5 + Math.floor(random() * 4))}?`, positive: words(50 + Math.floor(random() * 40)) })}\n`;
    if (buffer.length > 1 << 20) {
      fs.writeSync(fd, buffer);
      buffer = '';
    }
  }
  fs.writeSync(fd, buffer);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
  fs.writeFileSync(`${file}.count`, String(pairs));
}

if (!fs.existsSync(file) || fs.readFileSync(`${file}.count`, 'utf8') !== String(pairs)) write();
const { readTrainingData } = require(path.join(path.resolve(values.dist), 'train-data.js'));
const rssBefore = process.memoryUsage().rss;
const start = process.hrtime.bigint();
// The event loop's longest stall while reading: the longest gap between a 5 ms timer's ticks (or between the last tick
// and the read's end). A synchronous reader stalls it for the whole read.
let lastTick;
let longestStall = 0;
const tick = () => {
  const now = performance.now();
  longestStall = Math.max(longestStall, now - lastTick);
  lastTick = now;
};

async function read() {
  lastTick = performance.now();
  const timer = setInterval(tick, 5);
  try {
    const data = await readTrainingData(file);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return { ok: true, examples: data.examples.length, seconds, heapUsedMiB: process.memoryUsage().heapUsed / 2 ** 20 };
  } catch (error) {
    return { ok: false, error: `${error.code ?? ''} ${error.message}`.trim().slice(0, 200), seconds: Number(process.hrtime.bigint() - start) / 1e9 };
  } finally {
    tick();
    clearInterval(timer);
  }
}

(async () => {
  const result = {
    ...(await read()),
    longestEventLoopStallMs: longestStall,
    file,
    fileMiB: fs.statSync(file).size / 2 ** 20,
    peakRssGrowthMiB: (process.resourceUsage().maxRSS * 1024 - rssBefore) / 2 ** 20,
    heapLimitMiB: v8.getHeapStatistics().heap_size_limit / 2 ** 20,
    dist: path.resolve(values.dist),
    node: process.version,
  };
  console.log(JSON.stringify(result));
  if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
})();
