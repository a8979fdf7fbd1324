#!/usr/bin/env node
// A cross-encoder (reranker) made from the default model with coltrast alone, and what it adds on top of the
// default model's dense retrieval: train({ crossEncoder: true }) starts a one-label cross-encoder on the default
// model's encoder and trains it on the stage-2 triplets of a pretraining work folder (scripts/pretrain/run.js:
// pairs with GISTEmbed-guarded mined negatives); then, on that folder's held-out splits and on SciFact (read
// from ../shared/data, never trained on), the default model's dense top `candidates` are re-ranked by it
// (evaluate({ reranker })), beside the dense ranking alone. Prints a Markdown table and writes
// <work>/reranker-eval.json.
//   node scripts/pretrain/reranker.js [--work models/pretrain-v2] [--out <work>/reranker] [--epochs 1]
//        [--batch-size 8] [--max-negatives 8] [--learning-rate 2e-4] [--candidates 20] [--threads N]
//        [--scifact ../shared/data/scifact] [--eval-only]
// Needs the built package (npm run build) and a work folder with stage2-triplets.jsonl and data/<source>/test.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { train, evaluate } = require('../../dist');
const { stage2Work, workOptions } = require('./work');

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    ...workOptions('2e-4'),
    'batch-size': { type: 'string', default: '8' },
    'max-negatives': { type: 'string', default: '8' },
    candidates: { type: 'string', default: '20' },
    scifact: { type: 'string', default: path.join(ROOT, '..', 'shared', 'data', 'scifact') },
    'eval-only': { type: 'boolean', default: false },
  },
});
const { work, triplets, heldOut } = stage2Work(values.work, 'reranker');
const out = path.resolve(values.out ?? path.join(work, 'reranker'));

async function main() {
  const started = Date.now();
  let run;
  if (!values['eval-only']) {
    run = await train({
      model: 'default',
      data: triplets,
      output: out,
      epochs: Number(values.epochs),
      batchSize: Number(values['batch-size']),
      maxNegatives: Number(values['max-negatives']),
      learningRate: Number(values['learning-rate']),
      valSplit: 0.05,
      seed: 42,
      device: 'cpu',
      threads: Number(values.threads),
      checkpointEvery: 100,
      crossEncoder: true,
      progressBar: process.stderr.isTTY,
      onProgress: process.stderr.isTTY ? undefined : (p) => p.step % 50 === 0 && console.error(`step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(4)} eta ${(p.etaSeconds / 60).toFixed(1)} min`),
    });
  }
  const trainMinutes = (Date.now() - started) / 60000;
  const candidates = Number(values.candidates);
  const splits = [...heldOut];
  if (fs.existsSync(values.scifact)) splits.push({ source: 'scifact', data: values.scifact });
  const rows = [];
  for (const { source, data } of splits) {
    for (const reranker of [undefined, out]) {
      const evalStarted = Date.now();
      const r = await evaluate({ data, model: 'default', mode: 'dense', k: [1, 10], candidates, reranker, batchSize: 64, device: 'cpu' });
      rows.push({
        source,
        system: reranker ? `default model, top ${candidates} re-ranked by the reranker` : 'default model, dense',
        'ndcg@10': r.metrics.ndcg[10],
        'mrr@10': r.metrics.mrr[10],
        'recall@1': r.metrics.recall[1],
        queries: r.queries,
        documents: r.documents,
        seconds: (Date.now() - evalStarted) / 1000,
      });
      console.error(`${source}: ${rows[rows.length - 1].system}: nDCG@10 ${r.metrics.ndcg[10].toFixed(4)} (${rows[rows.length - 1].seconds.toFixed(0)} s)`);
    }
  }
  const result = {
    date: new Date().toISOString(),
    command: process.argv.slice(1).join(' '),
    trainMinutes,
    ...(run && { validation: { before: run.before, after: run.after }, steps: run.history.steps.length }),
    rows,
  };
  fs.writeFileSync(path.join(work, 'reranker-eval.json'), JSON.stringify(result, null, 2));
  const f = (x) => x.toFixed(4);
  if (run) console.log(`trained in ${trainMinutes.toFixed(1)} min (${run.history.steps.length} steps); validation MRR@10 ${f(run.before['mrr@10'])} -> ${f(run.after['mrr@10'])}`);
  console.log('| split | system | nDCG@10 | MRR@10 | Recall@1 | seconds |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.source} (${r.queries} queries, ${r.documents} documents) | ${r.system} | ${f(r['ndcg@10'])} | ${f(r['mrr@10'])} | ${f(r['recall@1'])} | ${r.seconds.toFixed(0)} |`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
