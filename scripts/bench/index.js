#!/usr/bin/env node
// Exact dense search at scale: fills an index store with random unit vectors (embedding a million texts
// is an embed() benchmark of its own; see BENCHMARKS.md) and measures add time, memory, search latency
// and queries per second. Uses the built package (npm run build).
//   node scripts/bench/index.js [--rows 1000000] [--dim 384] [--storage float32|float16|int8|binary] [--batch 1,32]
//        [--rescore-multiplier 4 (binary)] [--allow 1,0.1,0.01] [--json out.json]
// --allow: searches with a filter that leaves that share of the rows (chosen at random, seeded; 1 = no filter), and
// the time an Index takes to test a MongoDB filter on that many documents in JavaScript (lib/filter.ts).
// --save <file>: write the filled store there. --load <file> [--mmap]: fill the store from that file instead (read
// into memory, or mapped), and report the load's time and resident memory and the first search's latency.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const { parseArgs } = require('node:util');
const { runtimeInfo } = require('../../dist');
const { native } = require('../../dist/native');
const { seededRandom } = require('../../dist/random');
const { compileFilter } = require('../../dist/filter');

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    dim: { type: 'string', default: '384' },
    storage: { type: 'string', default: 'float16' },
    batch: { type: 'string', default: '1,32' },
    k: { type: 'string', default: '10' },
    'rescore-multiplier': { type: 'string', default: '4' },
    allow: { type: 'string', default: '1' },
    save: { type: 'string' },
    load: { type: 'string' },
    mmap: { type: 'boolean' },
    json: { type: 'string' },
  },
});
const rows = Number(values.rows);
const dim = Number(values.dim);
const k = Number(values.k);

function unitRows(n, next) {
  const data = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    let norm = 0;
    for (let i = 0; i < dim; i++) {
      const v = next() - 0.5;
      data[r * dim + i] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let i = 0; i < dim; i++) data[r * dim + i] /= norm;
  }
  return data;
}

async function main() {
  const { NativeDenseStore } = native();
  const store = new NativeDenseStore(dim, values.storage);
  const next = seededRandom(1).next;
  const chunk = 50000;
  let generating = 0;
  const started = process.hrtime.bigint();
  let loaded;
  if (values.load) {
    const rssBefore = process.memoryUsage().rss;
    await store.load(values.load, values.mmap ?? false);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const rssMiB = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    const t0 = process.hrtime.bigint();
    await store.search(unitRows(1, next), k, Number(values['rescore-multiplier']));
    const firstMs = Number(process.hrtime.bigint() - t0) / 1e6;
    loaded = { file: values.load, mmap: values.mmap ?? false, seconds: +seconds.toFixed(3), rssGrowthMiB: +rssMiB.toFixed(0), firstSearchMs: +firstMs.toFixed(1) };
    console.log(`load${values.mmap ? ' (mmap)' : ''}: ${seconds.toFixed(2)} s, resident memory +${rssMiB.toFixed(0)} MiB; first search ${firstMs.toFixed(1)} ms`);
  } else {
    for (let done = 0; done < rows; done += chunk) {
      const g = process.hrtime.bigint();
      const data = unitRows(Math.min(chunk, rows - done), next);
      generating += Number(process.hrtime.bigint() - g);
      store.add(data);
    }
    if (values.save) await store.save(values.save);
  }
  const addSeconds = (Number(process.hrtime.bigint() - started) - generating) / 1e9;
  const results = [];
  const fractions = values.allow.split(',').map(Number);
  console.log(`| rows | dim | storage | rows allowed | batch | latency ms (median) | queries/s |`);
  console.log(`|---|---|---|---|---|---|---|`);
  for (const fraction of fractions) {
    const pick = seededRandom(7).next;
    const allow = fraction >= 1 ? undefined : Uint8Array.from({ length: rows }, () => (pick() < fraction ? 1 : 0));
    for (const batch of values.batch.split(',').map(Number)) {
      const queries = unitRows(batch, next);
      const multiplier = Number(values['rescore-multiplier']);
      await store.search(queries, k, multiplier, allow); // warm-up
      const times = [];
      for (let i = 0; i < 7; i++) {
        const t0 = process.hrtime.bigint();
        await store.search(queries, k, multiplier, allow);
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      times.sort((a, b) => a - b);
      const ms = times[3];
      console.log(`| ${rows} | ${dim} | ${values.storage} | ${fraction} | ${batch} | ${ms.toFixed(1)} | ${((batch * 1000) / ms).toFixed(1)} |`);
      results.push({ rows, dim, storage: values.storage, ...(fraction < 1 && { allowed: fraction }), batch, latencyMs: +ms.toFixed(2), queriesPerSecond: +((batch * 1000) / ms).toFixed(1) });
    }
  }
  // Testing a filter on every document, as Index.search does once per new filter (documents with metadata like
  // { group: 0..999, year: 2000..2024 }; the filter keeps groups below fraction × 1000).
  const filterRuns = [];
  if (fractions.some((f) => f < 1)) {
    const docs = Array.from({ length: rows }, (_, i) => ({ id: `d${i}`, text: '', metadata: { group: (i * 7919) % 1000, year: 2000 + (i % 25) } }));
    for (const fraction of fractions.filter((f) => f < 1)) {
      const test = compileFilter('filter', { 'metadata.group': { $lt: Math.round(fraction * 1000) }, 'metadata.year': { $gte: 2000 } });
      const t0 = process.hrtime.bigint();
      let matched = 0;
      for (const d of docs) matched += test(d) ? 1 : 0;
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      console.log(`filter testing ${rows} documents (${matched} match): ${ms.toFixed(0)} ms`);
      filterRuns.push({ documents: rows, matched, ms: +ms.toFixed(1) });
    }
  }
  const info = runtimeInfo();
  if (values.json) {
    const peakRssMiB = +(process.resourceUsage().maxRSS / 1024).toFixed(0);
    const result = { date: new Date().toISOString(), device: 'cpu', cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`, threads: info.threads, torch: info.torchVersion, blas: info.blas.kind, addSeconds: +addSeconds.toFixed(2), peakRssMiB, ...(loaded && { loaded }), rows: results, ...(filterRuns.length > 0 && { filters: filterRuns }) };
    fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  }
  console.log(
    `\nadd: ${addSeconds.toFixed(1)} s for ${rows} rows (excluding generating them); peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB; ` +
      `${new Date().toISOString()}, ${os.cpus()[0]?.model} x${os.cpus().length}, ${info.threads} threads, libtorch ${info.torchVersion}, BLAS ${info.blas.kind}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
