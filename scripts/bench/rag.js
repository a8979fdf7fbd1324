#!/usr/bin/env node
// trainRag()'s step time (ContextFlow: retriever and decoder generator trained together), from onProgress's
// timestamps: the median and mean time between consecutive steps, over one epoch of --steps steps, the first step
// not counted. By default on the test fixtures (test/fixtures/tiny-bert and the tiny Llama), where a step is short
// enough that the Node side's share shows; --retriever and --generator take other model folders.
// Uses the built package (npm run build).
//   node scripts/bench/rag.js [--steps 60] [--batch-size 16] [--k 4] [--device cpu] [--threads N]
//     [--retriever dir] [--generator dir] [--json out.json]
// Questions, answers and a 64-document corpus are drawn (seeded) from 30 words that the fixtures' tokenizers hold whole.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { trainRag, runtimeInfo } = require('../../dist');
const { median } = require('./stats');

const ROOT = path.join(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '60' },
    'batch-size': { type: 'string', default: '16' },
    k: { type: 'string', default: '4' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string' },
    retriever: { type: 'string', default: path.join(ROOT, 'test', 'fixtures', 'tiny-bert') },
    generator: { type: 'string', default: path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama') },
    json: { type: 'string' },
  },
});

async function main() {
  const steps = Number(values.steps), batchSize = Number(values['batch-size']), k = Number(values.k);
  // Words the tiny fixtures' tokenizers hold whole (others become several pieces, and the sequences too long).
  const words = 'the river bank has water money in paper cafe quick brown fox jumps over lazy dog search fast small model turns text into token vector cat run hello world'.split(' ');
  let seed = 7;
  const next = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const text = (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo)) }, () => words[Math.floor(next() * words.length)]).join(' ');
  // Short documents: the tiny generator has 96 positions for the prompt (document and question) and the answer.
  const corpus = Array.from({ length: 64 }, () => text(6, 16));
  const data = Array.from({ length: steps * batchSize }, () => ({ question: `${text(4, 8)}?`, answer: text(2, 5) }));
  const output = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-rag-'));
  const gaps = [];
  let last;
  const started = performance.now();
  try {
    await trainRag({
      retriever: values.retriever, generator: values.generator, corpus, data, output: path.join(output, 'out'), epochs: 1, batchSize, k,
      valSplit: 0, checkpointEvery: 0, progressBar: false, device: values.device, ...(values.threads && { threads: Number(values.threads) }),
      onProgress: () => {
        const now = performance.now();
        if (last !== undefined) gaps.push(now - last);
        last = now;
      },
    });
  } finally {
    fs.rmSync(output, { recursive: true, force: true });
  }
  const row = {
    steps, batchSize, k, device: values.device, retriever: values.retriever, generator: values.generator,
    medianStepMs: median(gaps), meanStepMs: gaps.reduce((a, b) => a + b, 0) / gaps.length, totalSeconds: (performance.now() - started) / 1000,
  };
  const info = runtimeInfo();
  const result = { date: new Date().toISOString(), machine: { cpus: os.cpus().length, threads: info.threads }, rows: [row] };
  console.log(`trainRag, ${steps} steps of ${batchSize} questions, k = ${k}, ${values.device}: median ${row.medianStepMs.toFixed(2)} ms a step, mean ${row.meanStepMs.toFixed(2)} ms (first step not counted); ${row.totalSeconds.toFixed(2)} s in all`);
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
