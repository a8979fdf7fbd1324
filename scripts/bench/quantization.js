#!/usr/bin/env node
// What smaller vectors cost in retrieval quality: evaluate() of one model on BEIR folders with the index's vectors
// kept as float32, int8 and binary (rescored ×4 and ×10), each at the full width and cut to smaller widths
// (truncateDim; a Matryoshka model's), with the bytes each document's vector takes.
//   node scripts/bench/quantization.js --data <BEIR folder>[,<BEIR folder>...] [--model default] [--widths 256,64]
//        [--out bench-results/quantization.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Encoder, evaluate, runtimeInfo } = require('../../dist');

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    model: { type: 'string', default: 'default' },
    widths: { type: 'string' },
    out: { type: 'string', default: path.join(__dirname, '..', '..', 'bench-results', 'quantization.json') },
  },
});
if (!values.data) {
  console.error('give --data <BEIR folder>[,<BEIR folder>...]');
  process.exit(2);
}

const SETTINGS = [
  { storage: 'float32', label: 'float32' },
  { storage: 'int8', label: 'int8' },
  { storage: 'binary', rescoreMultiplier: 4, label: 'binary, rescored ×4' },
  { storage: 'binary', rescoreMultiplier: 10, label: 'binary, rescored ×10' },
];
const bytesPerVector = (storage, width) => ({ float32: 4 * width, int8: width, binary: Math.ceil(width / 8) })[storage];

(async () => {
  const encoder = await Encoder.load(values.model, { device: 'cpu' });
  const full = encoder.dimension;
  encoder.dispose();
  const widths = values.widths ? values.widths.split(',').map(Number) : [full];
  const rows = [];
  for (const data of values.data.split(',')) {
    for (const width of widths) {
      for (const s of SETTINGS) {
        const started = Date.now();
        const r = await evaluate({
          data, model: values.model, mode: 'dense', k: [10, 100], device: 'cpu', storage: s.storage,
          ...(width < full ? { truncateDim: width } : {}), ...(s.rescoreMultiplier ? { rescoreMultiplier: s.rescoreMultiplier } : {}),
        });
        const row = {
          data: path.basename(path.dirname(data)) + '/' + path.basename(data), width, setting: s.label, bytes: bytesPerVector(s.storage, width),
          ndcg10: r.metrics.ndcg[10], recall100: r.metrics.recall[100], queries: r.queries, documents: r.documents, seconds: (Date.now() - started) / 1000,
        };
        rows.push(row);
        console.error(JSON.stringify(row));
      }
    }
  }
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    command: `node scripts/bench/quantization.js ${process.argv.slice(2).join(' ')}`,
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, torch: info.torchVersion, blas: info.blas.kind },
    model: values.model,
    rows,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(result, null, 2));
  console.log('| data | width | storage | bytes per vector | nDCG@10 | Recall@100 |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.data} (${r.queries} queries) | ${r.width} | ${r.setting} | ${r.bytes} | ${r.ndcg10.toFixed(4)} | ${r.recall100.toFixed(4)} |`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
