#!/usr/bin/env node
// A ColBERT-style (multi-vector) variant of the default model, made and measured with coltrast alone: the
// default model gets a 128-wide token projection (train({ multiVector })) and is fine-tuned with the
// late-interaction loss on the stage-2 triplets of a pretraining work folder (scripts/pretrain/run.js: pairs
// with GISTEmbed-guarded mined negatives), then evaluated on that folder's held-out splits as run.js evaluates
// the default model: an exact MaxSim index over each split's corpus. Prints a Markdown table and writes
// <work>/colbert-eval.json.
//   node scripts/pretrain/colbert.js [--work models/pretrain-v2] [--model default] [--out <work>/colbert]
//        [--epochs 1] [--batch-size 32] [--learning-rate 5e-5] [--dimension 128] [--threads N]
// Needs the built package (npm run build) and a work folder with stage2-triplets.jsonl and data/<source>/test.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { train, evaluate } = require('../../dist');
const { stage2Work, workOptions } = require('./work');

const { values } = parseArgs({
  options: {
    ...workOptions('5e-5'),
    model: { type: 'string', default: 'default' },
    'batch-size': { type: 'string', default: '32' },
    dimension: { type: 'string', default: '128' },
  },
});
const { work, triplets, heldOut } = stage2Work(values.work, 'colbert');
const out = path.resolve(values.out ?? path.join(work, 'colbert'));

async function main() {
  const started = Date.now();
  const run = await train({
    model: values.model,
    data: triplets,
    output: out,
    epochs: Number(values.epochs),
    batchSize: Number(values['batch-size']),
    learningRate: Number(values['learning-rate']),
    valSplit: 0.05,
    seed: 42,
    device: 'cpu',
    threads: Number(values.threads),
    multiVector: { dimension: Number(values.dimension), queryLength: 32 },
    progressBar: process.stderr.isTTY,
  });
  const trainMinutes = (Date.now() - started) / 60000;
  const rows = [];
  for (const { source, data } of heldOut) {
    const evalStarted = Date.now();
    const r = await evaluate({ data, model: out, mode: 'dense', k: [10, 100], batchSize: 64, device: 'cpu' });
    rows.push({ source, 'ndcg@10': r.metrics.ndcg[10], 'recall@100': r.metrics.recall[100], 'mrr@10': r.metrics.mrr[10], queries: r.queries, documents: r.documents, seconds: (Date.now() - evalStarted) / 1000 });
  }
  const result = { date: new Date().toISOString(), command: process.argv.slice(1).join(' '), trainMinutes, validation: { before: run.before, after: run.after }, steps: run.history.steps.length, rows };
  fs.writeFileSync(path.join(work, 'colbert-eval.json'), JSON.stringify(result, null, 2));
  const f = (x) => x.toFixed(4);
  console.log(`trained in ${trainMinutes.toFixed(1)} min (${run.history.steps.length} steps); validation MRR@10 ${f(run.before['mrr@10'])} -> ${f(run.after['mrr@10'])}`);
  console.log('| held-out split | system | nDCG@10 | Recall@100 | MRR@10 |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.source} (${r.queries} queries) | ColBERT from the default model, exact MaxSim | ${f(r['ndcg@10'])} | ${f(r['recall@100'])} | ${f(r['mrr@10'])} |`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
