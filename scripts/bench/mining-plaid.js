#!/usr/bin/env node
// Mining hard negatives with a multi-vector model: exact MaxSim over every document's float32 token vectors against
// a PLAID search of a residual index (mineHardNegatives({ plaid })). Each setting runs in a process of its own, so
// that its peak resident memory is its own; reported: the time, the peak RSS, and the share of exact mining's
// negatives (query, negative) that the setting also mines.
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js; the manual-page source by default),
// every pair's positive a corpus document, plus --corpus (more documents, as mineHardNegatives' corpus option reads them).
//   node scripts/bench/mining-plaid.js --model <multi-vector model> [--source man] [--corpus file] [--bits 2,4]
//        [--nprobe 1,4] [--relative-margin 0.05] [--negatives 3] [--out bench-results/mining-plaid.json]
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

if (process.argv[2] === '--one') {
  // A child: one setting, its rows written to a file, {seconds, peakRssMiB} printed.
  const { mineHardNegatives } = require('../../dist');
  const job = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  const started = Date.now();
  mineHardNegatives(job.options).then((r) => {
    const seconds = (Date.now() - started) / 1000;
    fs.writeFileSync(job.rows, JSON.stringify(r.rows.map((x) => [x.query, x.negative])));
    console.log(JSON.stringify({ seconds, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), rows: r.rows.length, positiveMean: r.positive.mean }));
  });
  return;
}

const { runtimeInfo } = require('../../dist');
const { readCorpus } = require('../../dist/train-data');
const { fineTuneBench } = require('./fine-tune-data');

const { values, pairs } = fineTuneBench('mining-plaid', { corpus: '', bits: '2,4', nprobe: '1,4', 'relative-margin': '0.05', negatives: '3' });
if (values.model === 'default') {
  console.error('mining-plaid.js needs --model <a multi-vector model folder> (e.g. coltrast train --model default --multi-vector 128 ...)');
  process.exit(2);
}
const corpus = values.corpus ? readCorpus(path.resolve(values.corpus)) : [];
const common = {
  data: pairs, model: path.resolve(values.model), corpus, numNegatives: Number(values.negatives), relativeMargin: Number(values['relative-margin']),
  device: 'cpu',
};
const settings = [{ name: 'exact MaxSim (float32 token vectors in memory)' }];
for (const bits of values.bits.split(',').map(Number)) {
  for (const nprobe of values.nprobe.split(',').map(Number)) settings.push({ name: `PLAID, ${bits} bits, nprobe ${nprobe}`, plaid: { residualBits: bits, nprobe } });
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mining-plaid-'));
const results = [];
let exact;
for (const [i, s] of settings.entries()) {
  const jobFile = path.join(dir, `job-${i}.json`);
  const rowsFile = path.join(dir, `rows-${i}.json`);
  fs.writeFileSync(jobFile, JSON.stringify({ options: { ...common, ...(s.plaid && { plaid: s.plaid }) }, rows: rowsFile }));
  const child = spawnSync(process.execPath, [__filename, '--one', jobFile], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (child.status !== 0) throw new Error(`${s.name}: ${child.stderr}`);
  const r = JSON.parse(child.stdout.trim().split('\n').pop());
  const keys = new Set(JSON.parse(fs.readFileSync(rowsFile, 'utf8')).map(([q, n]) => `${q}\n${n}`));
  exact ??= keys;
  const shared = [...keys].filter((k) => exact.has(k)).length / exact.size;
  results.push({ setting: s.name, ...r, sharedWithExact: shared });
  console.error(`${s.name}: ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB, ${(100 * shared).toFixed(1)}% of exact's negatives`);
}

const documents = new Set([...corpus, ...pairs.map((p) => p.positive)]).size;
const queries = new Set(pairs.map((p) => p.query)).size;
console.log(`\n${queries} queries, ${documents} documents, ${values.negatives} negatives each, relativeMargin ${values['relative-margin']}\n`);
console.log('| mining | seconds | peak RSS | exact negatives also mined |');
console.log('|---|---|---|---|');
for (const r of results) console.log(`| ${r.setting} | ${r.seconds.toFixed(1)} | ${r.peakRssMiB} MiB | ${(100 * r.sharedWithExact).toFixed(1)}% |`);
const out = path.resolve(values.out);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), model: values.model, source: values.source, queries, documents, runtime: runtimeInfo(), results }, null, 2));
fs.rmSync(dir, { recursive: true, force: true });
console.error(`wrote ${out}`);
