#!/usr/bin/env node
// embed() throughput (texts/s), the time to its first batch's result, the event loop's longest wait during the call
// and resident memory on this machine (once the model is loaded, and at its peak; peak GPU memory on CUDA), for the tiny fixture and random-weight models
// of real shapes. Uses the built package (npm run build first).
//   node scripts/bench/embed.js [--shapes tiny,minilm | --model <dir>] [--texts 2000] [--batch-size 32] [--device cpu]
//     [--dtype float32|bfloat16|float16 (CUDA)] [--quantize int8 (CPU)] [--json out.json]
// --model: a model folder instead of the shapes (one written beforehand keeps the writing's memory out of the resident
// figures: a shape's random weights are made in this process).
'use strict';
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { Encoder, cudaMemory, runtimeInfo } = require('../../dist');
const { makeRandomBert } = require('../fixtures/random-bert');
const { residentMiB } = require('./st-compare');

const { values } = parseArgs({
  options: {
    shapes: { type: 'string', default: 'tiny,minilm' },
    model: { type: 'string' },
    texts: { type: 'string', default: '2000' },
    'batch-size': { type: 'string', default: '32' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    quantize: { type: 'string' },
    json: { type: 'string' },
  },
});

// Mixed-length texts (about 10 to 120 words) from the example sentences, seeded and repeatable.
function makeTexts(n) {
  const words = fs
    .readFileSync(path.join(__dirname, '..', '..', 'examples', 'sentences.txt'), 'utf8')
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean);
  let seed = 42;
  const next = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: n }, () => {
    const len = 10 + Math.floor(next() * 110);
    return Array.from({ length: len }, () => words[Math.floor(next() * words.length)]).join(' ');
  });
}

async function main() {
  const info = runtimeInfo();
  const texts = makeTexts(Number(values.texts));
  const batchSize = Number(values['batch-size']);
  const rows = [];
  for (const shape of values.model ? [path.basename(path.resolve(values.model))] : values.shapes.split(',')) {
    const dir = values.model
      ? values.model
      : shape === 'tiny'
        ? path.join(__dirname, '..', '..', 'test', 'fixtures', 'tiny-bert')
        : makeRandomBert(fs.mkdtempSync(path.join(os.tmpdir(), `bench-${shape}-`)) + '/model', { shape, seed: 1 });
    const gpu = values.device.startsWith('cuda');
    if (gpu) cudaMemory(values.device, { resetPeak: true, emptyCache: true });
    const enc = await Encoder.load(dir, { device: values.device, dtype: values.dtype, ...(values.quantize && { quantize: values.quantize }) });
    // The process's resident memory with the model loaded (and quantized), before any text is embedded: the model's own.
    const loadedRssMiB = Math.round(residentMiB());
    // The peak so far: loading's (the weights read from the file, and quantized).
    const loadPeakRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
    await enc.embed(texts.slice(0, batchSize), { batchSize }); // warm-up
    // The longest the event loop waited during the call (a server's other requests wait as long).
    const loopDelay = monitorEventLoopDelay({ resolution: 5 });
    loopDelay.enable();
    const start = process.hrtime.bigint();
    let firstBatch;
    // embedCounting: embed() that also returns each text's token count, without a tokenizing pass of its own (which
    // would add the whole input's tokens to the peak memory).
    const { tokens: counts } = await enc.embedCounting(texts, {
      batchSize,
      onProgress: (done) => {
        if (done > 0 && firstBatch === undefined) firstBatch = Number(process.hrtime.bigint() - start) / 1e9;
      },
    });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    loopDelay.disable();
    const tokens = counts.reduce((sum, n) => sum + n, 0);
    rows.push({
      model: shape,
      dimension: enc.dimension,
      maxSeqLength: enc.maxSeqLength,
      texts: texts.length,
      batchSize,
      seconds: +seconds.toFixed(3),
      firstBatchSeconds: firstBatch === undefined ? null : +firstBatch.toFixed(3),
      maxEventLoopDelayMs: +(loopDelay.max / 1e6).toFixed(1),
      textsPerSecond: +(texts.length / seconds).toFixed(1),
      tokens,
      tokensPerSecond: Math.round(tokens / seconds),
      loadedRssMiB,
      loadPeakRssMiB,
      peakRssMiB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
      ...(gpu ? { peakGpuMiB: Math.round(cudaMemory(values.device).peakAllocatedBytes / 2 ** 20) } : {}),
    });
    enc.dispose();
  }
  const result = {
    date: new Date().toISOString(),
    device: values.device,
    dtype: values.dtype,
    ...(values.quantize && { quantize: values.quantize }),
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
    threads: runtimeInfo().threads,
    torch: info.torchVersion,
    blas: info.blas.kind,
    rows,
  };
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  console.log(`| model | dim | max len | texts | tokens | batch | seconds | first batch s | texts/s | tokens/s | event loop's longest wait ms | RSS loaded MiB | peak RSS loading MiB | peak RSS MiB | peak GPU MiB |`);
  console.log(`|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(
      `| ${r.model} | ${r.dimension} | ${r.maxSeqLength} | ${r.texts} | ${r.tokens} | ${r.batchSize} | ${r.seconds} | ${r.firstBatchSeconds} | ${r.textsPerSecond} | ${r.tokensPerSecond} | ${r.maxEventLoopDelayMs} | ${r.loadedRssMiB} | ${r.loadPeakRssMiB} | ${r.peakRssMiB} | ${r.peakGpuMiB ?? '-'} |`,
    );
  }
  console.log(`\n${result.date}, ${result.device} ${result.dtype}${result.quantize ? ` (${result.quantize})` : ''}, ${result.cpu}, ${result.threads} threads, libtorch ${result.torch}, BLAS ${result.blas}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
