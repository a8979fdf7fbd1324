#!/usr/bin/env node
// Retrieval quality on BEIR SciFact (read from ../shared/data/scifact, never copied into the repository):
// BM25 with and without stemming, and any models given, through evaluate(). Uses the built package.
//   node scripts/bench/scifact.js [--data ../shared/data/scifact] [--model dir ...] [--device cpu] [--quantize int8]
//     [--modes dense,hybrid,late_interaction] [--no-bm25]
// --quantize int8: each model's dense rows again with the model loaded so (Encoder.load({ quantize: 'int8' })).
'use strict';
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Encoder, evaluate } = require('../../dist');

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'scifact') },
    model: { type: 'string', multiple: true, default: [] },
    device: { type: 'string', default: 'cpu' },
    quantize: { type: 'string' },
    modes: { type: 'string', default: 'dense,hybrid,late_interaction' },
    'no-bm25': { type: 'boolean', default: false },
  },
});

async function main() {
  const modes = values.modes.split(',');
  const named = {
    dense: (m) => `dense ${m}`,
    hybrid: (m) => `hybrid ${m} + BM25 (RRF)`,
    late_interaction: (m) => `late interaction ${m} (top 100 re-ranked by MaxSim)`,
  };
  const name = (mode, m) => (named[mode] ? named[mode](m) : `${mode} ${m}`);
  const systems = [
    ...(values['no-bm25']
      ? []
      : [
          { name: 'BM25 (k1 0.9, b 0.4)', options: { mode: 'bm25' } },
          { name: 'BM25 + Porter2 stemming', options: { mode: 'bm25', bm25: { stem: true } } },
        ]),
    ...values.model.flatMap((m) => [
      ...modes.map((mode) => ({ name: name(mode, m), options: { mode, model: m, device: values.device } })),
      ...(values.quantize
        ? modes.map((mode) => ({ name: name(mode, `${m} (${values.quantize})`), options: { mode, device: values.device }, quantize: { model: m, quantize: values.quantize } }))
        : []),
    ]),
  ];
  console.log('| system | nDCG@10 | Recall@100 | MRR@10 | MAP@10 | seconds |');
  console.log('|---|---|---|---|---|---|');
  for (const s of systems) {
    const model = s.quantize && (await Encoder.load(s.quantize.model, { device: values.device, quantize: s.quantize.quantize }));
    const r = await evaluate({ data: values.data, k: [10, 100], ...s.options, ...(model && { model }) });
    model?.dispose();
    const m = r.metrics;
    console.log(`| ${s.name} | ${m.ndcg[10].toFixed(4)} | ${m.recall[100].toFixed(4)} | ${m.mrr[10].toFixed(4)} | ${m.map[10].toFixed(4)} | ${r.seconds.toFixed(1)} |`);
  }
  console.log(`\n${new Date().toISOString()}, ${values.data}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
