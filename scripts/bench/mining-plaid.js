#!/usr/bin/env node
// Mining hard negatives with a multi-vector model: exact MaxSim over every document's float32 token vectors against
// a PLAID search of a residual index (mineHardNegatives({ plaid })). Each setting runs in a process of its own, so
// that its peak resident memory is its own; reported: the time, the peak RSS, and the share of exact mining's
// negatives (query, negative) that the setting also mines. --fine-tune yes then trains the model once more on the pairs
// alone and on the pairs with each 'exact' / PLAID (nprobe 1) setting's negatives (a pair gets them when it got all
// --negatives, as n-tuples), one epoch each, and reports nDCG@10 and Recall@100 on the source's held-out split.
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js; the manual-page source by default),
// every pair's positive a corpus document, plus --corpus (more documents, as mineHardNegatives' corpus option reads them).
//   node scripts/bench/mining-plaid.js --model <multi-vector model> [--source man] [--corpus file] [--bits 2,4]
//        [--nprobe 1,4] [--relative-margin 0.05] [--negatives 3] [--fine-tune yes] [--out bench-results/mining-plaid.json]
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
    fs.writeFileSync(job.rows, JSON.stringify(r.rows.map((x) => [x.query, x.positive, x.negative])));
    console.log(JSON.stringify({ seconds, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), rows: r.rows.length, positiveMean: r.positive.mean }));
  });
  return;
}

const { evaluate, runtimeInfo, train } = require('../../dist');
const { readCorpus } = require('../../dist/train-data');
const { fineTuneBench } = require('./fine-tune-data');

const { values, work, pairs, testDir } = fineTuneBench('mining-plaid', { corpus: '', bits: '2,4', nprobe: '1,4', 'relative-margin': '0.05', negatives: '3', 'fine-tune': 'no' });
if (values.model === 'default') {
  console.error('mining-plaid.js needs --model <a multi-vector model folder> (e.g. coltrast train --model default --multi-vector 128 ...)');
  process.exit(2);
}

async function main() {
  const corpus = values.corpus ? await readCorpus(path.resolve(values.corpus)) : [];
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
  const mined = new Map(); // setting -> its (query, positive, negative) rows
  let exact;
  for (const [i, s] of settings.entries()) {
    const jobFile = path.join(dir, `job-${i}.json`);
    const rowsFile = path.join(dir, `rows-${i}.json`);
    fs.writeFileSync(jobFile, JSON.stringify({ options: { ...common, ...(s.plaid && { plaid: s.plaid }) }, rows: rowsFile }));
    const child = spawnSync(process.execPath, [__filename, '--one', jobFile], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (child.status !== 0) throw new Error(`${s.name}: ${child.stderr}`);
    const r = JSON.parse(child.stdout.trim().split('\n').pop());
    const rows = JSON.parse(fs.readFileSync(rowsFile, 'utf8'));
    mined.set(s.name, rows);
    const keys = new Set(rows.map(([q, , n]) => `${q}\n${n}`));
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
  const fineTuned = values['fine-tune'] === 'no' ? undefined : await fineTunes(mined);
  fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), model: values.model, source: values.source, queries, documents, runtime: runtimeInfo(), results, fineTuned }, null, 2));
  fs.rmSync(dir, { recursive: true, force: true });
  console.error(`wrote ${out}`);
}

/** The pairs with the negatives of `rows`, a pair's when it got all of them (as n-tuples give them). */
function withNegatives(rows) {
  const byPair = new Map();
  for (const [q, p, n] of rows) byPair.set(`${q}\n${p}`, [...(byPair.get(`${q}\n${p}`) ?? []), n]);
  return pairs.map((p) => {
    const negatives = byPair.get(`${p.query}\n${p.positive}`);
    return negatives && negatives.length === Number(values.negatives) ? { ...p, negatives } : p;
  });
}

async function fineTunes(mined) {
  const measure = async (model) => {
    const r = await evaluate({ data: testDir, model, mode: 'dense', k: [10, 100], device: 'cpu' });
    return { ndcg10: r.metrics.ndcg[10], recall100: r.metrics.recall[100] };
  };
  const runs = [['none (the model as it is)', null], ['pairs alone', pairs]];
  for (const name of mined.keys()) if (!name.includes('nprobe 4')) runs.push([`+ negatives of ${name}`, withNegatives(mined.get(name))]);
  const out = [];
  for (const [i, [name, data]] of runs.entries()) {
    let model = path.resolve(values.model);
    let seconds = 0;
    if (data) {
      const started = Date.now();
      model = path.join(work, `mining-plaid-${i}`);
      await train({
        model: path.resolve(values.model), data, output: model, epochs: 1, batchSize: Number(values['batch-size']), learningRate: Number(values['learning-rate']),
        valSplit: 0, seed: Number(values.seed), device: 'cpu', checkpointEvery: 0, progressBar: false,
      });
      seconds = (Date.now() - started) / 1000;
    }
    out.push({ run: name, trainSeconds: seconds, withNegatives: data ? data.filter((p) => p.negatives).length : 0, ...(await measure(model)) });
    console.error(`${name}: ${JSON.stringify(out[out.length - 1])}`);
  }
  console.log(`\n| fine-tune (1 epoch) | pairs with negatives | ${values.source}-test nDCG@10 | Recall@100 | train s |`);
  console.log('|---|---|---|---|---|');
  for (const r of out) console.log(`| ${r.run} | ${r.withNegatives} | ${r.ndcg10.toFixed(4)} | ${r.recall100.toFixed(4)} | ${r.trainSeconds.toFixed(0)} |`);
  return out;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
