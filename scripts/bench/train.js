#!/usr/bin/env node
// train() throughput (samples/s: query + positive pairs per second, forward + backward + AdamW) for the
// tiny fixture and random-weight models of real shapes, and where the step time goes: native work,
// tokenizing, and the rest of the Node side (train()'s `timing`, over every step including the first).
// Uses the built package (npm run build).
//   node scripts/bench/train.js [--shapes tiny,minilm] [--steps 4] [--batch-size 16] [--device cpu]
//     [--precision float32|bfloat16|float16] [--gradient-checkpointing] [--lora] [--lora-rank 8] [--cross-encoder] [--json out.json]
// --lora trains LoRA adapters (rank --lora-rank on the attention's query and value projections) instead of every weight.
// --cross-encoder trains a reranker (a new one-label head on the model; every query of a batch read with every
// document, batch² pairs a step) instead of an embedding model.
// Peak tensor memory: coltrast's CPU allocator's peak of large (>= 1 MiB) blocks during the run (cpuMemory), or the
// CUDA caching allocator's peak on a GPU.
'use strict';
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { train, cpuMemory, cudaMemory, runtimeInfo } = require('../../dist');
const { makeRandomBert } = require('../fixtures/random-bert');
const { median } = require('./stats');

const { values } = parseArgs({
  options: {
    shapes: { type: 'string', default: 'tiny,minilm' },
    steps: { type: 'string', default: '4' },
    'batch-size': { type: 'string', default: '16' },
    device: { type: 'string', default: 'cpu' },
    precision: { type: 'string', default: 'float32' },
    'gradient-checkpointing': { type: 'boolean', default: false },
    lora: { type: 'boolean', default: false },
    'lora-rank': { type: 'string', default: '8' },
    'cross-encoder': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});

// Query/positive pairs from the example sentences, seeded: queries of 5 to 15 words, positives of 30 to 80.
function makePairs(n) {
  const words = fs.readFileSync(path.join(__dirname, '..', '..', 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
  let seed = 42;
  const next = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const text = (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo)) }, () => words[Math.floor(next() * words.length)]).join(' ');
  return Array.from({ length: n }, (_, i) => ({ query: `${i} ${text(5, 15)}`, positive: `${i} ${text(30, 80)}` }));
}

async function main() {
  const batchSize = Number(values['batch-size']);
  const steps = Number(values.steps);
  const rows = [];
  for (const shape of values.shapes.split(',')) {
    const dir =
      shape === 'tiny'
        ? path.join(__dirname, '..', '..', 'test', 'fixtures', 'tiny-bert')
        : makeRandomBert(fs.mkdtempSync(path.join(os.tmpdir(), `bench-${shape}-`)) + '/model', { shape, seed: 1, maxSeqLength: 128 });
    const times = [];
    let last = 0;
    const gpu = values.device.startsWith('cuda');
    if (gpu) cudaMemory(values.device, { resetPeak: true, emptyCache: true });
    else cpuMemory({ resetPeak: true, emptyCache: true });
    const run = await train({
      model: dir,
      data: makePairs(batchSize * (steps + 1)),
      output: fs.mkdtempSync(path.join(os.tmpdir(), 'bench-train-')),
      epochs: 1,
      batchSize,
      valSplit: 0,
      checkpointEvery: 0,
      device: values.device,
      precision: values.precision,
      gradientCheckpointing: values['gradient-checkpointing'],
      ...(values.lora && { lora: { rank: Number(values['lora-rank']) } }),
      ...(values['cross-encoder'] && { crossEncoder: true }),
      onProgress: () => {
        const now = process.hrtime.bigint();
        if (last) times.push(Number(now - last) / 1e9);
        last = now;
      },
    });
    // The first step (warm-up) is not timed: steps 2..n.
    const seconds = times.reduce((a, b) => a + b, 0);
    const t = run.timing;
    rows.push({
      model: shape,
      batchSize,
      timedSteps: times.length,
      secondsPerStep: +(seconds / times.length).toFixed(3),
      // The median beside the mean: one slow step (a kernel chosen or compiled for a new padded length) moves
      // the mean only. Every timed step's seconds are kept in the JSON.
      medianSecondsPerStep: +median(times).toFixed(3),
      stepSeconds: times.map((x) => +x.toFixed(4)),
      samplesPerSecond: +((batchSize * times.length) / seconds).toFixed(1),
      nativePercent: +((100 * t.nativeSeconds) / t.seconds).toFixed(2),
      tokenizePercent: +((100 * t.tokenizeSeconds) / t.seconds).toFixed(2),
      jsPercent: +(100 * t.jsFraction).toFixed(2),
      jsMsPerStep: +((1000 * (t.seconds - t.nativeSeconds - t.tokenizeSeconds)) / t.batches).toFixed(2),
      peakRssMiB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
      ...(gpu ? { peakGpuMiB: Math.round(cudaMemory(values.device).peakAllocatedBytes / 2 ** 20) } : { peakCpuTensorMiB: Math.round(cpuMemory().peakAllocatedBytes / 2 ** 20) }),
    });
  }
  const info = runtimeInfo();
  const result = { date: new Date().toISOString(), device: values.device, precision: values.precision, gradientCheckpointing: values['gradient-checkpointing'], lora: values.lora ? Number(values['lora-rank']) : undefined, crossEncoder: values['cross-encoder'], cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`, threads: info.threads, torch: info.torchVersion, blas: info.blas.kind, rows };
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  console.log('| model | batch | timed steps | s/step | median s/step | samples/s | native % | tokenizing % | other JS % (ms/step) | peak RSS MiB | peak tensor MiB (CPU / GPU) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.model} | ${r.batchSize} | ${r.timedSteps} | ${r.secondsPerStep} | ${r.medianSecondsPerStep} | ${r.samplesPerSecond} | ${r.nativePercent} | ${r.tokenizePercent} | ` +
        `${r.jsPercent} (${r.jsMsPerStep}) | ${r.peakRssMiB} | ${r.peakGpuMiB ?? r.peakCpuTensorMiB} |`,
    );
  }
  console.log(`\n${result.date}, ${result.device}, ${result.precision}${result.gradientCheckpointing ? ', gradient checkpointing' : ''}${result.lora ? `, LoRA rank ${result.lora}` : ''}${result.crossEncoder ? ', cross-encoder' : ''}, ${result.cpu}, ${result.threads} threads, libtorch ${result.torch}, BLAS ${result.blas}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
