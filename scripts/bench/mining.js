#!/usr/bin/env node
// Do mined hard negatives (mineHardNegatives) make a better fine-tune than in-batch negatives alone? Fine-tunes
// one model on the same (query, positive) pairs, seed, batch size and epochs, three ways: the pairs alone (in-batch
// negatives), the pairs with the top negatives mined by the starting model, and with negatives mined under
// NV-Retriever's TopK-PercPos filter (relativeMargin 0.05, which strikes candidates scoring within 5% of the
// positive: likely false negatives). Then nDCG@10, Recall@100 and MRR@10 on held-out BEIR folders, the starting
// model too, and mining's own time.
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js); the manual-page source by default.
// --eval adds BEIR folders (e.g. ../shared/data/scifact), read in place.
//   node scripts/bench/mining.js [--model default] [--source man] [--negatives 3] [--epochs 1] [--batch-size 32]
//        [--matched-epochs 3 (the pairs alone also trained this many times longer)] [--pairs 0 (all)] [--eval dir,dir] [--work models/matryoshka-bench] [--out bench-results/mining.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { mineHardNegatives, miningReport, train, evaluate, runtimeInfo } = require('../../dist');
const { fineTuneBench } = require('./fine-tune-data');

const { values, work, pairs, testDir } = fineTuneBench('mining', { negatives: '3', eval: '', 'matched-epochs': '3' });
const evalSets = [testDir, ...values.eval.split(',').filter(Boolean).map((d) => path.resolve(d))];
const numNegatives = Number(values.negatives);

async function mine(name, options) {
  const started = Date.now();
  const r = await mineHardNegatives({ data: pairs, model: values.model, numNegatives, outputFormat: 'n-tuple', device: 'cpu', ...options });
  const seconds = (Date.now() - started) / 1000;
  console.error(`${name}: mined in ${seconds.toFixed(1)} s\n${miningReport(r)}`);
  // Pairs that got no full tuple train without hard negatives, so every run sees every pair.
  const mined = new Map(r.rows.map((x) => [`${x.query}\n${x.positive}`, x.negatives]));
  const data = pairs.map((p) => ({ ...p, ...(mined.has(`${p.query}\n${p.positive}`) && { negatives: mined.get(`${p.query}\n${p.positive}`) }) }));
  return { data, seconds, tuples: r.rows.length, skipped: r.skipped, negative: r.negative, positive: r.positive };
}

async function fineTune(name, data, epochs = Number(values.epochs)) {
  const output = path.join(work, `mining-${name}`);
  const started = Date.now();
  await train({
    model: values.model, data, output, epochs, batchSize: Number(values['batch-size']), learningRate: Number(values['learning-rate']),
    valSplit: 0, seed: Number(values.seed), device: 'cpu', checkpointEvery: 0, progressBar: process.stderr.isTTY,
    loss: { contrastiveWeight: 1, lateInteractionWeight: 0 },
  });
  return { output, seconds: (Date.now() - started) / 1000 };
}

async function measure(model) {
  const out = {};
  for (const dir of evalSets) {
    const r = await evaluate({ data: dir, model, mode: 'dense', k: [10, 100], device: 'cpu' });
    out[path.basename(path.dirname(dir)) === values.source ? `${values.source}-test` : path.basename(dir)] = {
      ndcg10: r.metrics.ndcg[10], recall100: r.metrics.recall[100], mrr10: r.metrics.mrr[10], queries: r.queries,
    };
  }
  return out;
}

(async () => {
  const top = await mine('top', {});
  const percPos = await mine('relative margin 0.05', { relativeMargin: 0.05 });
  // The pairs alone for more epochs too: a step with hard negatives embeds 1 + numNegatives documents per query, so
  // mined runs cost more per epoch; --matched-epochs of the pairs alone cost about as much as one mined epoch.
  const matched = Number(values['matched-epochs']);
  const runs = {
    pairs: await fineTune('pairs', pairs),
    ...(matched > 0 && { pairsMatched: await fineTune('pairs-matched', pairs, matched * Number(values.epochs)) }),
    top: await fineTune('top', top.data),
    percpos: await fineTune('percpos', percPos.data),
  };
  const systems = { start: await measure(values.model) };
  for (const [name, run] of Object.entries(runs)) systems[name] = await measure(run.output);
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    command: `node scripts/bench/mining.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, torch: info.torchVersion, blas: info.blas },
    model: values.model, source: values.source, trainPairs: pairs.length, numNegatives, epochs: Number(values.epochs), batchSize: Number(values['batch-size']),
    mining: { top: { seconds: top.seconds, tuples: top.tuples }, percpos: { seconds: percPos.seconds, tuples: percPos.tuples, skipped: percPos.skipped } },
    trainSeconds: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.seconds])),
    systems,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(result, null, 2));
  const sets = Object.keys(systems.start);
  console.log(`| fine-tune | ${sets.map((s) => `${s} nDCG@10 | ${s} R@100`).join(' | ')} | train s |`);
  console.log(`|---|${sets.map(() => '---|---').join('|')}|---|`);
  const rowsShown = [
    ['start', 'none (starting model)'],
    ['pairs', `pairs, in-batch negatives, ${values.epochs} epoch(s)`],
    ...(runs.pairsMatched ? [['pairsMatched', `pairs, in-batch negatives, ${matched * Number(values.epochs)} epochs`]] : []),
    ['top', `+ ${numNegatives} mined (top), ${values.epochs} epoch(s)`],
    ['percpos', `+ ${numNegatives} mined (relative margin 0.05), ${values.epochs} epoch(s)`],
  ];
  for (const [name, label] of rowsShown) {
    const cells = sets.map((s) => `${systems[name][s].ndcg10.toFixed(4)} | ${systems[name][s].recall100.toFixed(4)}`);
    console.log(`| ${label} | ${cells.join(' | ')} | ${name === 'start' ? '' : runs[name].seconds.toFixed(0)} |`);
  }
  console.log(`mining: top ${top.seconds.toFixed(1)} s, relative margin ${percPos.seconds.toFixed(1)} s (${percPos.tuples} of ${pairs.length} pairs got ${numNegatives} negatives); ${pairs.length} pairs`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
