#!/usr/bin/env node
// Does Matryoshka training (train's loss.matryoshka) keep retrieval quality when the vectors are cut? Fine-tunes
// one model twice on the same pairs, the same seed and steps: once with the plain contrastive loss and once with
// the Matryoshka widths, then measures nDCG@10, Recall@100 and MRR@10 on a held-out BEIR folder with the vectors
// cut to each width (the starting model too). Each model embeds queries and corpus once at its full width; each
// width's vectors are cut from those and normalized again, which is what embed({ truncateDim }) returns (tested in
// test/matryoshka.test.ts), and ranked by exact inner product.
// Data: the default model's pretraining pairs (scripts/bench/fine-tune-data.js); the manual-page source by default.
//   node scripts/bench/matryoshka.js [--model default] [--source man] [--widths 256,128,64,32,16] [--epochs 1]
//        [--batch-size 32] [--pairs 0 (all)] [--work models/matryoshka-bench] [--out bench-results/matryoshka.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Encoder, loadBeir, evaluateRun, runtimeInfo } = require('../../dist');
const { fineTuneBench, fineTune: fineTuneWith } = require('./fine-tune-data');

const bench = fineTuneBench('matryoshka', { widths: '256,128,64,32,16' });
const { values, pairs, testDir } = bench;
const fineTune = (name, loss) => fineTuneWith(bench, name, loss);
const widths = values.widths.split(',').map(Number);
let test; // the BEIR test split, loaded first thing in main

/** nDCG@10, Recall@100, MRR@10 of `model` on the test split at each width. */
async function measure(model) {
  const enc = await Encoder.load(model, { device: 'cpu' });
  try {
    const ids = [...test.qrels.keys()].filter((q) => test.queries.has(q));
    const q = await enc.embed(ids.map((id) => test.queries.get(id)), { task: 'query', normalize: false });
    const d = await enc.embed(test.corpus.map((doc) => (doc.title ? `${doc.title} ${doc.text}` : doc.text)), { task: 'document', normalize: false });
    const full = q.dims[1];
    const rows = {};
    for (const width of widths.filter((w) => w <= full)) {
      const cut = (m, n) =>
        Array.from({ length: n }, (_, i) => {
          const v = m.data.slice(i * full, i * full + width);
          const norm = Math.max(Math.hypot(...v), 1e-12);
          return v.map((x) => x / norm);
        });
      const qs = cut(q, ids.length);
      const ds = cut(d, test.corpus.length);
      const run = new Map(
        qs.map((qv, i) => {
          const scored = ds.map((dv, j) => {
            let s = 0;
            for (let k = 0; k < width; k++) s += qv[k] * dv[k];
            return { id: test.corpus[j].id, score: s };
          });
          scored.sort((a, b) => b.score - a.score);
          return [ids[i], scored.slice(0, 100)];
        }),
      );
      const { metrics } = evaluateRun(run, test.qrels, [10, 100]);
      rows[width] = { ndcg10: metrics.ndcg[10], recall100: metrics.recall[100], mrr10: metrics.mrr[10] };
    }
    return rows;
  } finally {
    enc.dispose();
  }
}


(async () => {
  test = await loadBeir(testDir);
  const base = { contrastiveWeight: 1, lateInteractionWeight: 0 };
  const plain = await fineTune('plain', base);
  const matryoshka = await fineTune('matryoshka', { ...base, matryoshka: { dimensions: widths } });
  const systems = { start: await measure(values.model), plain: await measure(plain.output), matryoshka: await measure(matryoshka.output) };
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    command: `node scripts/bench/matryoshka.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, torch: info.torchVersion, blas: info.blas },
    model: values.model, source: values.source, trainPairs: pairs.length, testQueries: test.qrels.size, corpus: test.corpus.length,
    epochs: Number(values.epochs), batchSize: Number(values['batch-size']), widths,
    trainSeconds: { plain: plain.seconds, matryoshka: matryoshka.seconds },
    systems,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(result, null, 2));
  console.log(`| width | start nDCG@10 | plain fine-tune | Matryoshka fine-tune |\n|---|---|---|---|`);
  for (const w of widths) {
    const cell = (s) => (systems[s][w] ? systems[s][w].ndcg10.toFixed(4) : 'n/a');
    console.log(`| ${w} | ${cell('start')} | ${cell('plain')} | ${cell('matryoshka')} |`);
  }
  console.log(`train seconds: plain ${plain.seconds.toFixed(0)}, Matryoshka ${matryoshka.seconds.toFixed(0)}; ${pairs.length} pairs, ${test.qrels.size} test queries`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
