#!/usr/bin/env node
// Does global orthogonal regularization (train's loss.gor: sentence-transformers' GlobalOrthogonalRegularizationLoss)
// change retrieval quality, at full precision and in the int8 and binary index storage it is said to help? Fine-tunes
// one model three times on the same pairs, seed and steps: the plain contrastive loss, the loss with GOR's defaults,
// and with EmbeddingGemma's setting (no mean term, the sides summed); then measures nDCG@10 on a held-out BEIR folder
// with the corpus's vectors stored as float32, int8 and binary (evaluate({ storage }); binary rescored), and how spread
// out the corpus's vectors are (the mean cosine of every two documents).
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js); the manual-page source by default.
//   node scripts/bench/gor.js [--model default] [--source man] [--epochs 1] [--batch-size 32] [--pairs 0 (all)]
//        [--work models/matryoshka-bench (the fine-tuning benchmarks' data is there)] [--out bench-results/gor.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Encoder, evaluate, loadBeir, runtimeInfo } = require('../../dist');
const { fineTuneBench, fineTune: fineTuneWith } = require('./fine-tune-data');

const bench = fineTuneBench('gor', {});
const { values, pairs, testDir } = bench;
const fineTune = (name, loss) => fineTuneWith(bench, name, loss);
const STORAGES = ['float32', 'int8', 'binary'];

/** The mean cosine of every two different documents of the corpus (the vectors are unit length). */
async function meanCosine(model, texts) {
  const enc = await Encoder.load(model, { device: 'cpu' });
  try {
    const v = await enc.embed(texts, { task: 'document', normalize: true });
    const [n, width] = v.dims;
    const sum = new Float64Array(width);
    for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) sum[k] += v.data[i * width + k];
    // sum over i != j of <v_i, v_j> = |sum v|^2 - n (each row has norm 1).
    let square = 0;
    for (let k = 0; k < width; k++) square += sum[k] * sum[k];
    return (square - n) / (n * (n - 1));
  } finally {
    enc.dispose();
  }
}

async function measure(model, texts) {
  const row = { meanCosine: await meanCosine(model, texts) };
  for (const storage of STORAGES) {
    const r = await evaluate({ data: testDir, model, storage, device: 'cpu' });
    row[storage] = { ndcg10: r.metrics.ndcg[10], mrr10: r.metrics.mrr[10] };
  }
  return row;
}

(async () => {
  const test = await loadBeir(testDir);
  const texts = test.corpus.map((doc) => (doc.title ? `${doc.title} ${doc.text}` : doc.text));
  const base = { contrastiveWeight: 1, lateInteractionWeight: 0 };
  const runs = {
    plain: await fineTune('gor-bench-plain', base),
    gor: await fineTune('gor-bench-gor', { ...base, gor: true }),
    gemma: await fineTune('gor-bench-gemma', { ...base, gor: { meanWeight: 0, aggregation: 'sum' } }),
  };
  const systems = { start: await measure(values.model, texts) };
  for (const [name, run] of Object.entries(runs)) systems[name] = await measure(run.output, texts);
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    command: `node scripts/bench/gor.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, torch: info.torchVersion, blas: info.blas },
    model: values.model, source: values.source, trainPairs: pairs.length, testQueries: test.qrels.size, corpus: test.corpus.length,
    epochs: Number(values.epochs), batchSize: Number(values['batch-size']),
    trainSeconds: Object.fromEntries(Object.entries(runs).map(([name, run]) => [name, run.seconds])),
    systems,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(result, null, 2));
  console.log(`| model | mean cosine of two documents | nDCG@10 float32 | int8 | binary |\n|---|---|---|---|---|`);
  for (const [name, s] of Object.entries(systems)) {
    console.log(`| ${name} | ${s.meanCosine.toFixed(3)} | ${STORAGES.map((storage) => s[storage].ndcg10.toFixed(4)).join(' | ')} |`);
  }
  console.log(`train seconds: ${Object.entries(runs).map(([name, run]) => `${name} ${run.seconds.toFixed(0)}`).join(', ')}; ${pairs.length} pairs, ${test.qrels.size} test queries`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
