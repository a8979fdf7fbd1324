#!/usr/bin/env node
// Does adaptive-layer training (train's loss.adaptiveLayers: sentence-transformers' AdaptiveLayerLoss) make a model's
// first layers work alone? Fine-tunes one model twice on the same pairs, seed and steps: once with the plain
// contrastive loss and once with adaptive layers around it; then cuts each (and the starting model) to each number of
// layers (truncateLayers, what `coltrast truncate` writes) and measures nDCG@10 and MRR@10 on a held-out BEIR folder,
// and each cut model's embedding speed on that folder's corpus (texts/s, the same texts for every model).
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js); the manual-page source by default.
//   node scripts/bench/adaptive-layers.js [--model default] [--source man] [--epochs 1] [--batch-size 32]
//        [--layers-per-step 1] [--pairs 0 (all)] [--work models/matryoshka-bench (the fine-tuning benchmarks' data is there)]
//        [--out bench-results/adaptive-layers.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Encoder, truncateLayers, loadBeir, evaluateRun, runtimeInfo } = require('../../dist');
const { fineTuneBench, fineTune: fineTuneWith } = require('./fine-tune-data');

const bench = fineTuneBench('adaptive-layers', { 'layers-per-step': '1' });
const { values, work, pairs, testDir } = bench;
const fineTune = (name, loss) => fineTuneWith(bench, name, loss);
let test; // the BEIR test split, loaded first thing in main

/** nDCG@10 and MRR@10 of `model` on the test split by exact inner product, and its corpus embedding speed. */
async function measure(model) {
  const enc = await Encoder.load(model, { device: 'cpu' });
  try {
    const ids = [...test.qrels.keys()].filter((q) => test.queries.has(q));
    const q = await enc.embed(ids.map((id) => test.queries.get(id)), { task: 'query' });
    const texts = test.corpus.map((doc) => (doc.title ? `${doc.title} ${doc.text}` : doc.text));
    const started = process.hrtime.bigint();
    const d = await enc.embed(texts, { task: 'document' });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const width = q.dims[1];
    const run = new Map(
      ids.map((id, i) => {
        const scored = test.corpus.map((doc, j) => {
          let s = 0;
          for (let k = 0; k < width; k++) s += q.data[i * width + k] * d.data[j * width + k];
          return { id: doc.id, score: s };
        });
        scored.sort((a, b) => b.score - a.score);
        return [id, scored.slice(0, 100)];
      }),
    );
    const { metrics } = evaluateRun(run, test.qrels, [10, 100]);
    return { layers: enc.layers, ndcg10: metrics.ndcg[10], mrr10: metrics.mrr[10], recall100: metrics.recall[100], textsPerSecond: texts.length / seconds };
  } finally {
    enc.dispose();
  }
}


/** Each number of layers from 1 to the model's: the model cut to it (the model itself for all of them), measured. */
async function measureCuts(name, model) {
  const probe = await Encoder.load(model, { device: 'cpu' });
  const layers = probe.layers;
  probe.dispose();
  const rows = [];
  for (let n = 1; n <= layers; n++) {
    const cut = n === layers ? model : (await truncateLayers({ model, layers: n, output: path.join(work, `${name}-${n}-layers`), overwrite: true })).output;
    rows.push(await measure(cut));
    console.log(`${name}, ${n} layers: nDCG@10 ${rows[rows.length - 1].ndcg10.toFixed(4)}`);
  }
  return rows;
}

(async () => {
  test = await loadBeir(testDir);
  const base = { contrastiveWeight: 1, lateInteractionWeight: 0 };
  const perStep = values['layers-per-step'] === 'all' ? 'all' : Number(values['layers-per-step']);
  const plain = await fineTune('adaptive-bench-plain', base);
  const adaptive = await fineTune('adaptive-bench-adaptive', { ...base, adaptiveLayers: { layersPerStep: perStep } });
  const systems = { start: await measureCuts('start', values.model), plain: await measureCuts('plain', plain.output), adaptive: await measureCuts('adaptive', adaptive.output) };
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    command: `node scripts/bench/adaptive-layers.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, torch: info.torchVersion, blas: info.blas },
    model: values.model, source: values.source, trainPairs: pairs.length, testQueries: test.qrels.size, corpus: test.corpus.length,
    epochs: Number(values.epochs), batchSize: Number(values['batch-size']), layersPerStep: perStep,
    trainSeconds: { plain: plain.seconds, adaptive: adaptive.seconds },
    systems,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(result, null, 2));
  console.log('| layers | texts/s | before fine-tuning | plain fine-tune | adaptive-layer fine-tune | adaptive − plain |\n|---|---|---|---|---|---|');
  systems.plain.forEach((p, i) => {
    const a = systems.adaptive[i];
    const s = systems.start[i];
    console.log(`| ${p.layers} | ${Math.round(p.textsPerSecond)} | ${s.ndcg10.toFixed(4)} | ${p.ndcg10.toFixed(4)} | ${a.ndcg10.toFixed(4)} | ${(a.ndcg10 - p.ndcg10 >= 0 ? '+' : '') + (a.ndcg10 - p.ndcg10).toFixed(4)} |`);
  });
  console.log(`train seconds: plain ${plain.seconds.toFixed(0)}, adaptive ${adaptive.seconds.toFixed(0)}; ${pairs.length} pairs, ${test.qrels.size} test queries`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
