#!/usr/bin/env node
// Retrieval quality on BEIR SciFact (read from ../shared/data/scifact, never copied into the repository):
// BM25 with and without stemming, and any models given, through evaluate(). Uses the built package.
//   node scripts/bench/scifact.js [--data ../shared/data/scifact] [--model dir ...] [--device cpu]
'use strict';
const path = require('node:path');
const { parseArgs } = require('node:util');
const { evaluate } = require('../../dist');

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'scifact') },
    model: { type: 'string', multiple: true, default: [] },
    device: { type: 'string', default: 'cpu' },
  },
});

async function main() {
  const systems = [
    { name: 'BM25 (k1 0.9, b 0.4)', options: { mode: 'bm25' } },
    { name: 'BM25 + Porter2 stemming', options: { mode: 'bm25', bm25: { stem: true } } },
    ...values.model.flatMap((m) => [
      { name: `dense ${m}`, options: { mode: 'dense', model: m, device: values.device } },
      { name: `hybrid ${m} + BM25 (RRF)`, options: { mode: 'hybrid', model: m, device: values.device } },
      { name: `late interaction ${m} (top 100 re-ranked by MaxSim)`, options: { mode: 'late_interaction', model: m, device: values.device } },
    ]),
  ];
  console.log('| system | nDCG@10 | Recall@100 | MRR@10 | MAP@10 | seconds |');
  console.log('|---|---|---|---|---|---|');
  for (const s of systems) {
    const r = await evaluate({ data: values.data, k: [10, 100], ...s.options });
    const m = r.metrics;
    console.log(`| ${s.name} | ${m.ndcg[10].toFixed(4)} | ${m.recall[100].toFixed(4)} | ${m.mrr[10].toFixed(4)} | ${m.map[10].toFixed(4)} | ${r.seconds.toFixed(1)} |`);
  }
  console.log(`\n${new Date().toISOString()}, ${values.data}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
