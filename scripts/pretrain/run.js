#!/usr/bin/env node
// Pretrains coltrast's default model from scratch, with coltrast itself, in one seeded command:
//   1. data     Debian package descriptions and manual pages → (query, positive) pairs, split by package (data.js)
//   2. vocab    an uncased WordPiece vocabulary trained on the training texts (vocab.js)
//   3. init     a randomly initialized BERT of the chosen shape (its copy is the "random" baseline)
//   4. stage 1  contrastive pretraining on all training pairs, in-batch negatives (fused InfoNCE)
//   5. stage 2  the ColTrast recipe (contrastive + late interaction) on pairs with hard negatives mined by the
//               stage-1 model, GISTEmbed-guarded (a candidate scoring above the positive is dropped)
//   6. eval     each source's held-out split: nDCG@10, Recall@100, MRR@10 for the model (dense, MaxSim),
//               BM25, hybrid and the random model of the same shape
//   7. export   float16 safetensors + model card into <out> (default: default-model/, what the package ships)
// Every stage is resumable: run the same command again after an interruption and finished stages are
// skipped, an interrupted training stage continues from its last checkpoint.
//   node scripts/pretrain/run.js [--work models/pretrain] [--out default-model] [--threads N]
//        [--stage1-epochs 6] [--stage2-pairs 6000] [--batch-size 64] [--precision bfloat16|float32] [--seed 42]
//        [--mini-batch-size 0]   (stage 1's gradient caching: batches larger than the encoder's memory allows)
// Needs the built package (npm run build) and apt's English descriptions (`apt-get -o Acquire::Languages=en update`).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const { Encoder, Index, train, evaluate, runtimeInfo } = require('../../dist');
const { seededRandom } = require('../../dist/random');
const { makeRandomBert } = require('../fixtures/random-bert');
const { trainVocabulary } = require('./vocab');

const ROOT = path.resolve(__dirname, '..', '..');
const SOURCES = ['debian', 'man'];
const SHAPE = { hiddenSize: 256, layers: 4, heads: 4, intermediate: 1024, maxPositions: 512, maxSeqLength: 128 };
const VOCAB_SIZE = 16384;

const { values } = parseArgs({
  options: {
    work: { type: 'string', default: path.join(ROOT, 'models', 'pretrain') },
    out: { type: 'string', default: path.join(ROOT, 'default-model') },
    threads: { type: 'string', default: String(os.cpus().length) },
    'stage1-epochs': { type: 'string', default: '6' },
    'stage2-pairs': { type: 'string', default: '6000' },
    'batch-size': { type: 'string', default: '64' },
    // train()'s precision for both stages: bfloat16 autocast is about 2x faster on CPUs with AVX-512 BF16.
    precision: { type: 'string', default: 'bfloat16' },
    seed: { type: 'string', default: '42' },
    'mini-batch-size': { type: 'string', default: '0' },
  },
});
const work = path.resolve(values.work);
const threads = Number(values.threads);
const seed = Number(values.seed);
const batchSize = Number(values['batch-size']);
const log = (message) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
const readJsonl = (file) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
// Seconds per stage, summed over every invocation (a resumed run adds to what the interrupted one spent).
const timingsFile = path.join(work, 'timings.json');
const timings = fs.existsSync(timingsFile) ? JSON.parse(fs.readFileSync(timingsFile, 'utf8')) : {};
const timed = async (name, fn) => {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    timings[name] = (timings[name] || 0) + (Date.now() - t) / 1000;
    fs.mkdirSync(work, { recursive: true });
    fs.writeFileSync(timingsFile, JSON.stringify(timings, null, 2));
  }
};

function shuffled(items, random) {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function trainingPairs() {
  const pairs = SOURCES.flatMap((s) => readJsonl(path.join(work, 'data', s, 'train.jsonl')));
  return shuffled(pairs, seededRandom(seed).next);
}

async function trainStage(name, options) {
  const output = path.join(work, name);
  if (fs.existsSync(path.join(output, 'training_history.json')) && !fs.existsSync(`${output}.checkpoint`)) {
    log(`${name}: done earlier (${output})`);
    return JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  }
  log(`${name}: training (${options.data.length} examples, resumes from ${output}.checkpoint if there)`);
  return timed(name, () =>
    train({ output, threads, seed, device: 'cpu', resume: true, checkpointEvery: 100, progressBar: true, valSplit: 0.01, precision: values.precision, ...options }),
  );
}

/** Stage-2 triplets: each query's top dense hits from other groups, minus those the guide scores above the positive. */
async function mineTriplets(modelDir, pairs, perQuery) {
  const file = path.join(work, 'stage2-triplets.jsonl');
  if (fs.existsSync(file)) return readJsonl(file);
  const encoder = await Encoder.load(modelDir, { device: 'cpu', threads });
  try {
    const index = await Index.build(encoder, pairs.map((p, i) => ({ id: String(i), text: p.positive })), { batchSize: 64 });
    const hits = await index.search(pairs.map((p) => p.query), { k: perQuery + 10 });
    const positive = await encoder.embed(pairs.map((p) => p.positive), { normalize: true });
    const query = await encoder.embed(pairs.map((p) => p.query), { normalize: true });
    const dim = encoder.dimension;
    const triplets = pairs.map((p, i) => {
      let own = 0;
      for (let k = 0; k < dim; k++) own += query.data[i * dim + k] * positive.data[i * dim + k];
      const negatives = hits[i]
        .filter((h) => pairs[Number(h.id)].group !== p.group && h.score < own)
        .slice(0, perQuery)
        .map((h) => pairs[Number(h.id)].positive);
      return { query: p.query, positive: p.positive, negatives, group: p.group };
    });
    fs.writeFileSync(file, triplets.map((t) => JSON.stringify(t)).join('\n') + '\n');
    return triplets;
  } finally {
    encoder.dispose();
  }
}

async function evaluateAll(modelDir, randomDir) {
  const file = path.join(work, 'eval.json');
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const rows = [];
  const pick = (r) => ({ 'ndcg@10': r.metrics.ndcg[10], 'recall@100': r.metrics.recall[100], 'mrr@10': r.metrics.mrr[10], queries: r.queries, documents: r.documents });
  for (const source of SOURCES) {
    const data = path.join(work, 'data', source, 'test');
    const runs = [
      ['default model, dense', modelDir, 'dense'],
      ['default model, MaxSim', modelDir, 'late_interaction'],
      ['BM25', undefined, 'bm25'],
      ['hybrid (default dense + BM25, RRF)', modelDir, 'hybrid'],
      ['random-init model, dense', randomDir, 'dense'],
      ['random-init model, MaxSim', randomDir, 'late_interaction'],
    ];
    for (const [system, model, mode] of runs) {
      const r = await evaluate({ data, model, mode, k: [10, 100], batchSize: 64, device: 'cpu', bm25: { stem: true } });
      rows.push({ source, system, ...pick(r) });
      log(`eval ${source} / ${system}: nDCG@10 ${r.metrics.ndcg[10].toFixed(4)}`);
    }
  }
  fs.writeFileSync(file, JSON.stringify(rows, null, 2));
  return rows;
}

function table(rows) {
  const f = (x) => x.toFixed(4);
  return [
    '| held-out split | system | nDCG@10 | Recall@100 | MRR@10 |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.source} (${r.queries} queries, ${r.documents} docs) | ${r.system} | ${f(r['ndcg@10'])} | ${f(r['recall@100'])} | ${f(r['mrr@10'])} |`),
  ].join('\n');
}

/** One line per source: how the model's dense, MaxSim and hybrid rows compare with BM25 on nDCG@10. */
function versusBm25(rows) {
  return SOURCES.map((source) => {
    const get = (system) => rows.find((r) => r.source === source && r.system.startsWith(system))?.['ndcg@10'];
    const bm25 = get('BM25');
    const diff = (system) => {
      const d = get(system) - bm25;
      return `${system.replace('default model, ', '')} ${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(4)}`;
    };
    return `- ${source}: nDCG@10 against BM25 (${bm25.toFixed(4)}): ${diff('default model, dense')}, ${diff('default model, MaxSim')}, ${diff('hybrid')}.`;
  }).join('\n') + `
Where the model is behind BM25 it is by the margins above; the budget note says what would close them.`;
}

function modelCard({ manifest, rows, stage1, stage2, info, elapsed, commit }) {
  const src = manifest.sources;
  const params = (h, l, i, v) => v * h + 512 * h + 2 * h + 2 * h + l * (4 * (h * h + h) + 2 * h * i + i + h + 4 * h);
  const n = params(SHAPE.hiddenSize, SHAPE.layers, SHAPE.intermediate, VOCAB_SIZE);
  const recalls = stage1.history.history.epochs.map((e) => e.metrics?.['recall@1'] ?? NaN);
  const rising = recalls.length > 1 && recalls.at(-1) > recalls.at(-2);
  const epochs = (h) => h.history.epochs.map((e) => `epoch ${e.epoch}: train loss ${e.trainLoss.toFixed(4)}, val loss ${e.valLoss?.toFixed(4)}, val recall@1 ${e.metrics?.['recall@1'].toFixed(3)}`).join('; ');
  return `---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, coltrast]
language: [en]
license: mit
---
# coltrast-default

coltrast's built-in English retrieval encoder, pretrained from random weights by \`scripts/pretrain/run.js\`
with coltrast itself. It is what \`Encoder.load('default')\` and \`train()\` without \`model\` start from.
Pooled vectors (mean pooling, normalized, ${SHAPE.hiddenSize} dims) and token vectors (for MaxSim) both work.

## Model
BERT, ${SHAPE.layers} layers, width ${SHAPE.hiddenSize}, ${SHAPE.heads} heads, feed-forward ${SHAPE.intermediate},
${(n / 1e6).toFixed(1)} M parameters, float16 safetensors; max sequence length ${SHAPE.maxSeqLength} tokens.
Vocabulary: ${VOCAB_SIZE} uncased WordPiece tokens trained with Hugging Face \`tokenizers\` on the training texts
(no public BERT vocabulary can be fetched where it was built; a fitted one spends fewer pieces per word).

## Data (all public, from a Debian bookworm machine)
- **debian**: a package's short description (query) ↔ its long description (first ${manifest.maxWords} words),
  from apt's English description index (\`apt-get -o Acquire::Languages=en update\`); one pair per source package.
  ${src.debian.train} training pairs, ${src.debian.test} held out (${manifest.testFraction.debian * 100}% of source packages).
  Licence: each package's description is part of its Debian packaging, under DFSG-free licences.
- **man**: a manual page's NAME summary (query) ↔ its DESCRIPTION section, for the English pages of Debian
  packages installed on the build machine (\`manpages\`, \`manpages-dev\`, systemd, perl, …).
  ${src.man.train} training pairs, ${src.man.test} held out (${manifest.testFraction.man * 100}% of packages).
  Licence: each page's own (DFSG-free: GPL, BSD, the Linux man-pages licences, …).
Splits are by package (never by pair), fixed by a hash of the package name.

## Training
- Stage 1: in-batch contrastive (InfoNCE, τ 0.05) on all ${stage1.examples} training pairs, batch ${batchSize},
  AdamW lr 5e-4, ${values['stage1-epochs']} epoch(s). ${epochs(stage1.history)}.
- Stage 2: ColTrast (0.5 contrastive + 0.5 late interaction) on ${stage2.examples} pairs with up to 2 hard
  negatives each, mined by the stage-1 model and GISTEmbed-guarded, batch 32, lr 2e-4. ${epochs(stage2.history)}.
- Precision: ${values.precision === 'float32' ? 'float32' : `${values.precision} autocast (float32 weights and optimizer)`}.
- Hardware: ${info.cpu}, ${threads} threads, ${info.blas}, no GPU. Wall time: ${elapsed}.
- Seed ${seed}. Reproduce: \`node scripts/pretrain/run.js\` (after \`npm run build\` and the apt update above) at
  coltrast commit ${commit}; a later train() may differ in details that change the weights a little.

## Budget, and what it cost
No GPU was available where this model was made, so it was trained on two CPU cores within a budget of
about an hour: ${values['stage1-epochs']} epoch(s) of stage 1 at batch ${batchSize} (${stage1.history.history.steps.length} steps) and one short stage 2.
Stage-1 validation recall@1 by epoch: ${recalls.map((r) => r.toFixed(3)).join(' → ')}${rising ? ' (still rising at the end, so the model is under-trained)' : ''}.
More epochs, larger batches (the fused contrastive loss is built for thousands of in-batch negatives on a
GPU) and a wider model are what a bigger budget would buy; how much they would gain was not measured here.

## Evaluation (held-out splits; each query has one relevant document)
${table(rows)}

${versusBm25(rows)}

MaxSim rows re-rank the dense top 100 with late interaction. BM25: coltrast's Okapi BM25 (k1 0.9, b 0.4,
Porter2 stemming). The random-init model has the same shape and tokenizer, untrained.
`;
}

async function main() {
  fs.mkdirSync(work, { recursive: true });
  // 1. data
  if (!fs.existsSync(path.join(work, 'data', 'manifest.json'))) {
    log('data: building pairs from apt and man pages');
    execFileSync(process.execPath, [path.join(__dirname, 'data.js'), path.join(work, 'data')], { stdio: 'inherit' });
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(work, 'data', 'manifest.json'), 'utf8'));
  const pairs = trainingPairs();
  // 2. vocabulary, 3. the random initial model (kept as the baseline)
  const initDir = path.join(work, 'init');
  if (!fs.existsSync(path.join(initDir, 'model.safetensors'))) {
    log(`vocab: training ${VOCAB_SIZE} WordPiece tokens`);
    const vocab = trainVocabulary(pairs.flatMap((p) => [p.query, p.positive]), VOCAB_SIZE);
    makeRandomBert(initDir, { ...SHAPE, vocab, seed });
  }
  // 4. stage 1: contrastive only, the largest batch this machine runs at a good rate
  const stage1 = await trainStage('stage1', {
    model: initDir,
    data: pairs,
    epochs: Number(values['stage1-epochs']),
    batchSize,
    learningRate: 5e-4,
    warmupRatio: 0.05,
    loss: { contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 0.05 },
    ...(Number(values['mini-batch-size']) > 0 ? { miniBatchSize: Number(values['mini-batch-size']) } : {}),
  });
  // 5. stage 2: ColTrast with guided hard negatives, on a seeded subset
  const subset = pairs.slice(0, Number(values['stage2-pairs']));
  const triplets = await timed('mining', () => mineTriplets(path.join(work, 'stage1'), subset, 2));
  const stage2 = await trainStage('stage2', {
    model: path.join(work, 'stage1'),
    data: triplets,
    epochs: 1,
    batchSize: 32,
    learningRate: 2e-4,
    warmupRatio: 0.05,
    loss: { contrastiveWeight: 0.5, lateInteractionWeight: 0.5, temperature: 0.05 },
  });
  // 6. held-out evaluation, 7. export
  const rows = await timed('eval', () => evaluateAll(path.join(work, 'stage2'), initDir));
  const encoder = await Encoder.load(path.join(work, 'stage2'), { device: 'cpu', threads });
  try {
    await encoder.save(values.out, { overwrite: true, dtype: 'float16' });
  } finally {
    encoder.dispose();
  }
  const info = runtimeInfo();
  const minutes = (name) => `${((timings[name] ?? 0) / 60).toFixed(1)} min`;
  const elapsed = `stage 1 ${minutes('stage1')}, mining ${minutes('mining')}, stage 2 ${minutes('stage2')}, evaluation ${minutes('eval')}`;
  const summary = {
    manifest,
    rows,
    stage1: { examples: pairs.length, history: stage1 },
    stage2: { examples: triplets.length, history: stage2 },
    info: { cpu: `${os.cpus()[0].model} x${os.cpus().length}`, blas: `BLAS: ${info.blas.kind}` },
    elapsed,
    // The code that trained it (a rerun with a later train() may differ a little).
    commit: (() => {
      try {
        return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: path.join(__dirname, '..', '..'), encoding: 'utf8' }).trim();
      } catch {
        return 'unknown (not a git checkout)';
      }
    })(),
  };
  fs.writeFileSync(path.join(values.out, 'README.md'), modelCard(summary));
  fs.writeFileSync(path.join(values.out, 'pretrain.json'), JSON.stringify({ manifest, shape: SHAPE, vocabSize: VOCAB_SIZE, seed, threads, precision: values.precision, stage1Epochs: Number(values['stage1-epochs']), timings, eval: rows }, null, 2) + '\n');
  log(`wrote ${values.out}\n${table(rows)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
