#!/usr/bin/env node
// Quality parity with the Python baseline: the same ColTrast fine-tuning steps in coltrast and in plain
// PyTorch (scripts/bench/python/coltrast_train.py), from the same random BERT, on the same token ids, in the
// same batch order, with the same hyper-parameters, threads and BLAS; per-step losses of both sides go to
// parity.json and parity.svg. Uses the built package (npm run build first) and a python3 with torch
// (Debian: python3-torch; COLTRAST_PYTHON=/path/to/python to choose one).
//
//   node scripts/bench/parity.js [--shape small] [--steps 50] [--batch-size 8] [--learning-rate 1e-4]
//       [--schedule linear|cosine|constant] [--warmup-ratio 0.1] [--negatives 1]
//       [--late-interaction cross_entropy|bce] [--symmetric] [--no-dropout] [--threads 2]
//       [--pooling mean|cls|max|mean_sqrt_len|lasttoken] [--projection DIM] [--projection-activation identity|tanh]
//       [--accumulation K] [--mini-batch-size M] [--precision float32|bfloat16] [--batches-per-epoch N]
//       [--val-examples 64] [--out tmp/parity]
//
// Batch order: train() shuffles its examples each epoch with its seeded generator and has no option to
// take a given order, so this script computes the batches exactly as train() does (seededRandom, shuffle,
// makeBatches from the package), drives the native trainer through the path train() uses
// (Encoder.createTrainer, the learning rate from learningRateAt), and hands the same batches, as token ids
// from coltrast's tokenizer, to Python. It then runs train() itself on the same data (unless
// --no-train-check) and checks that its per-step losses are the driven run's, so what is compared with
// Python is what train() computes.
//
// Options as train() has them: --pooling sets the model folder's pooling mode (1_Pooling/config.json), which
// both sides read. --projection DIM is train()'s `projection` option: coltrast adds its seeded head
// (Encoder.addProjectionHead, as train() does) and saves the model with it; Python loads that saved folder,
// head included (2_Dense), so both start from the same head. --accumulation K is train()'s
// `gradientAccumulation`: K micro-batches per optimizer step (fewer for the last group of an epoch), each
// loss scaled by 1/K, the update after the group; --steps counts optimizer steps. Without
// --batches-per-epoch an epoch has 5 * K micro-batches (5 optimizer steps), as 5 batches without
// accumulation. With accumulation, a step's loss in the report is the mean of its micro-batches' losses and
// its relative difference the largest over its micro-batches. --mini-batch-size M is train()'s
// `miniBatchSize` (gradient caching); Python runs the same GradCache step (Trainer.cached_backward: the
// same mini-batches in the same order, each replaying its dropout masks). --precision bfloat16 is train()'s
// `precision`: both sides run the forward pass under CPU autocast (Trainer.encode in coltrast_train.py).
//
// Validation: after the steps, both sides embed --val-examples held-out (query, positive) pairs (seeded, not
// trained on) with their final weights and compute Recall@1, MRR@10 and nDCG@10 of each query against all
// held-out positives: coltrast with the package's evaluate() (dense mode, the Encoder being trained), Python
// by hand. When train() ends at the compared step, its saved model is evaluated the same way too.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON_SCRIPT = path.join(__dirname, 'python', 'coltrast_train.py');
const { Encoder, Index, evaluate, train, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { rank } = require(path.join(ROOT, 'dist', 'ir-metrics'));
const { learningRateAt } = require(path.join(ROOT, 'dist', 'train'));
const { makeBatches, shuffle } = require(path.join(ROOT, 'dist', 'train-data'));
const { seededRandom } = require(path.join(ROOT, 'dist', 'random'));
const { median } = require('./stats');
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));

/** The first of COLTRAST_PYTHON, python3, /usr/bin/python3 that imports torch; null when none does. */
function findPython() {
  const candidates = [process.env.COLTRAST_PYTHON, 'python3', '/usr/bin/python3'].filter(Boolean);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return python;
  }
  return null;
}

/**
 * Seeded (query, positive, negatives) examples over examples/sentences.txt's words: positives of 20 to 40
 * words, queries of 4 to 8 words taken from their positive (so there is something to learn), `negatives`
 * other random texts per example.
 */
function makeExamples(n, negatives, seed = 7) {
  const words = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
  const next = seededRandom(seed).next;
  const pick = (list) => list[Math.floor(next() * list.length)];
  const text = (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo + 1)) }, () => pick(words));
  return Array.from({ length: n }, (_, i) => {
    const positive = text(20, 40);
    const query = Array.from({ length: 4 + Math.floor(next() * 5) }, () => pick(positive));
    return {
      query: query.join(' '),
      positive: `${i} ${positive.join(' ')}`,
      negatives: Array.from({ length: negatives }, () => text(20, 40).join(' ')),
    };
  });
}

const DEFAULTS = {
  shape: 'small',
  steps: 50,
  batchSize: 8,
  // Micro-batches per epoch; undefined: 5 * accumulation (5 optimizer steps per epoch).
  batchesPerEpoch: undefined,
  negatives: 1,
  learningRate: 1e-4,
  warmupRatio: 0.1,
  schedule: 'linear',
  weightDecay: 0.01,
  maxGradNorm: 1,
  contrastiveWeight: 0.5,
  lateInteractionWeight: 0.5,
  temperature: 0.05,
  lateInteraction: 'cross_entropy',
  symmetric: false,
  dropout: true,
  threads: 2,
  seed: 42,
  maxSeqLength: 64,
  // undefined: the model folder's (mean).
  pooling: undefined,
  // undefined: no projection head; a number: train()'s projection.dimension.
  projection: undefined,
  projectionActivation: 'identity',
  accumulation: 1,
  // 0: no gradient caching; M: train()'s miniBatchSize.
  miniBatchSize: 0,
  precision: 'float32',
  valExamples: 64,
  valSeed: 1234,
  trainCheck: true,
  tolerance: 0.01,
};

const POOLING_KEYS = {
  cls: 'pooling_mode_cls_token',
  mean: 'pooling_mode_mean_tokens',
  max: 'pooling_mode_max_tokens',
  mean_sqrt_len: 'pooling_mode_mean_sqrt_len_tokens',
  lasttoken: 'pooling_mode_lasttoken',
};

/**
 * train()'s micro-batches until `steps` optimizer steps: per epoch the batches in train()'s order (each
 * epoch shuffled by the seeded generator from where the last one left it), each with the optimizer step it
 * belongs to (0-based) and whether the update follows it (every `accumulation` batches and at the epoch's
 * end, as train() does). Also train()'s epochs and totalSteps (the schedule's
 * length, computed as train() computes it).
 */
function trainPlan(examples, batchSize, batchesPerEpoch, accumulation, steps, seed) {
  const stepsPerEpoch = Math.ceil(batchesPerEpoch / accumulation);
  const epochs = Math.ceil(steps / stepsPerEpoch);
  const totalSteps = stepsPerEpoch * epochs;
  const micro = [];
  let step = 0;
  let state = seededRandom(seed).state();
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const random = seededRandom(0, state);
    const batches = makeBatches(shuffle(examples, random.next), batchSize);
    if (batches.length !== batchesPerEpoch) throw new Error(`epoch ${epoch} has ${batches.length} batches, expected ${batchesPerEpoch}`);
    batches.forEach((batch, b) => {
      if (step >= steps) return;
      const apply = (b + 1) % accumulation === 0 || b === batches.length - 1;
      micro.push({ batch, step, apply });
      if (apply) step++;
    });
    state = random.state();
  }
  return { micro, epochs, totalSteps, trainSteps: stepsPerEpoch * epochs };
}

/** The held-out set as evaluate() takes it: each query's one relevant document is its positive. */
function validationData(examples) {
  const corpus = examples.map((e, j) => ({ id: `d${j}`, text: e.positive }));
  const queries = new Map(examples.map((e, i) => [`q${i}`, e.query]));
  const qrels = new Map(examples.map((_, i) => [`q${i}`, new Map([[`d${i}`, 1]])]));
  return { corpus, queries, qrels };
}

/** Recall@1, MRR@10 and nDCG@10 of an Encoder (or model folder) on the held-out set, by the package's evaluate(). */
async function coltrastMetrics(model, data) {
  const r = await evaluate({ data, model, mode: 'dense', k: [1, 10], device: 'cpu' });
  return { 'recall@1': r.metrics.recall[1], 'mrr@10': r.metrics.mrr[10], 'ndcg@10': r.metrics.ndcg[10], queries: r.queries };
}

/** Each held-out query's rank of its positive (1-based) in coltrast's full ranking: the Index evaluate() builds, searched to the end. */
async function coltrastRanks(encoder, data) {
  const index = await Index.build(encoder, data.corpus.map((d) => ({ id: d.id, text: d.text })), { batchSize: 32 });
  const ids = [...data.queries.keys()];
  const hits = await index.search(ids.map((q) => data.queries.get(q)), { k: data.corpus.length });
  return ids.map((q, i) => {
    const relevant = [...data.qrels.get(q).keys()][0];
    return rank(hits[i].map((h) => ({ id: h.id, score: h.score }))).indexOf(relevant) + 1;
  });
}

/**
 * Runs both sides and compares them. Returns the report written to `<out>/parity.json` (when `out` is
 * given): per-step losses of both sides, the relative differences and whether the largest is within
 * `tolerance`, and both sides' held-out metrics after the last step.
 */
async function runParity(options = {}) {
  const o = { ...DEFAULTS, ...options };
  o.batchesPerEpoch ??= 5 * o.accumulation;
  if (!Number.isInteger(o.accumulation) || o.accumulation < 1) throw new Error(`accumulation must be an integer >= 1, got ${o.accumulation}`);
  if (o.pooling !== undefined && !(o.pooling in POOLING_KEYS)) throw new Error(`pooling must be one of ${Object.keys(POOLING_KEYS).join(', ')}, got ${o.pooling}`);
  const python = o.python ?? findPython();
  if (!python) throw new Error('no python3 with torch found (Debian: apt-get install python3-torch; or set COLTRAST_PYTHON)');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-parity-'));
  try {
    // A random BERT of the given shape with the tiny fixture's 198-word vocabulary (a small embedding table).
    const vocab = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-bert', 'vocab.txt'), 'utf8').split('\n').filter(Boolean);
    const model = makeRandomBert(path.join(work, 'model'), { shape: o.shape, seed: 1, vocab, maxPositions: o.maxSeqLength, maxSeqLength: o.maxSeqLength });
    const configFile = path.join(model, 'config.json');
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
    if (!o.dropout) {
      config.hidden_dropout_prob = 0;
      config.attention_probs_dropout_prob = 0;
      fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
    }
    if (o.pooling) {
      const poolingFile = path.join(model, '1_Pooling', 'config.json');
      const pooling = JSON.parse(fs.readFileSync(poolingFile, 'utf8'));
      for (const [mode, key] of Object.entries(POOLING_KEYS)) pooling[key] = mode === o.pooling;
      fs.writeFileSync(poolingFile, JSON.stringify(pooling, null, 2));
    }
    const projection = o.projection ? { dimension: o.projection, activation: o.projectionActivation } : undefined;

    const examples = makeExamples(o.batchSize * o.batchesPerEpoch, o.negatives);
    const { micro, epochs, totalSteps, trainSteps } = trainPlan(examples, o.batchSize, o.batchesPerEpoch, o.accumulation, o.steps, o.seed);
    const steps = micro.length ? micro[micro.length - 1].step + 1 : 0;
    // A check that the schedule covers every step train() takes (it once ran short when an epoch's last
    // group of batches was short, and learningRateAt() past its end went negative).
    const warnings = [];
    if (steps > totalSteps) warnings.push(`steps ${totalSteps + 1}..${steps} lie past train()'s schedule length ${totalSteps}`);
    const valExamples = makeExamples(o.valExamples, 0, o.valSeed);
    const valData = validationData(valExamples);
    const loss = {
      contrastiveWeight: o.contrastiveWeight,
      lateInteractionWeight: o.lateInteractionWeight,
      temperature: o.temperature,
      lateInteraction: o.lateInteraction,
      symmetric: o.symmetric,
    };
    const stepOptions = {
      contrastiveWeight: o.contrastiveWeight,
      lateInteractionWeight: o.lateInteractionWeight,
      temperature: o.temperature,
      symmetric: o.symmetric,
      lateInteractionKind: o.lateInteraction,
      maxGradNorm: o.maxGradNorm,
      miniBatchSize: o.miniBatchSize,
    };

    // coltrast, driven micro-batch by micro-batch through the path train() uses.
    const enc = await Encoder.load(model, { device: 'cpu', threads: o.threads });
    const tokenized = [];
    const coltrast = [];
    let coltrastMetricsBefore;
    let coltrastMetricsAfter;
    let pythonModel = model;
    let validationIds;
    const t0 = process.hrtime.bigint();
    try {
      if (projection) {
        // train()'s head (seeded from train()'s seed), saved with the model for Python to start from.
        await enc.addProjectionHead(projection.dimension, projection.activation, o.seed);
        pythonModel = path.join(work, 'initial');
        await enc.save(pythonModel);
      }
      // The held-out metrics of the starting point (the same on both sides), to show how far training moved them.
      if (o.valExamples > 0) coltrastMetricsBefore = await coltrastMetrics(enc, valData);
      const trainer = await enc.createTrainer({ learningRate: o.learningRate, weightDecay: o.weightDecay, seed: o.seed, precision: o.precision });
      for (const m of micro) {
        const b = m.batch;
        tokenized.push({ queries: await enc.tokenize(b.queries), documents: await enc.tokenize(b.documents), step: m.step, lossScale: 1 / o.accumulation, apply: m.apply });
        const learningRate = learningRateAt(m.step, totalSteps, o.learningRate, o.warmupRatio, o.schedule);
        // As train() steps: the batch tokenized by prepare(), then stepPrepared().
        const prepared = await trainer.prepare(b.queries, b.documents);
        const r = await trainer.stepPrepared(prepared, { ...stepOptions, learningRate, lossScale: 1 / o.accumulation, apply: m.apply });
        coltrast.push({ loss: r.loss, contrastive: r.contrastive, lateInteraction: r.lateInteraction, gradNorm: r.gradNorm, learningRate });
      }
      if (o.valExamples > 0) {
        coltrastMetricsAfter = await coltrastMetrics(enc, valData);
        coltrastMetricsAfter.ranks = await coltrastRanks(enc, valData);
        const queryTexts = valExamples.map((e) => e.query);
        const documentTexts = valExamples.map((e) => e.positive);
        validationIds = { queries: await enc.tokenize(queryTexts), documents: await enc.tokenize(documentTexts), relevant: valExamples.map((_, i) => i) };
        // The same vectors evaluate() ranks with (normalized pooled output), to compare with Python's.
        validationIds.vectors = { queries: await enc.embed(queryTexts, { normalize: true }), documents: await enc.embed(documentTexts, { normalize: true }) };
      }
    } finally {
      enc.dispose();
    }
    const coltrastSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

    // train() itself on the same data: its losses must be the driven run's (train() records the mean of each
    // optimizer step's micro-batch losses, as transformers' Trainer logs an accumulated step).
    let trainCheck;
    if (o.trainCheck) {
      const output = path.join(work, 'trained');
      const result = await train({
        model,
        data: examples,
        output,
        epochs,
        batchSize: o.batchSize,
        learningRate: o.learningRate,
        warmupRatio: o.warmupRatio,
        schedule: o.schedule,
        weightDecay: o.weightDecay,
        maxGradNorm: o.maxGradNorm,
        gradientAccumulation: o.accumulation,
        ...(o.miniBatchSize > 0 ? { miniBatchSize: o.miniBatchSize } : {}),
        precision: o.precision,
        ...(projection ? { projection } : {}),
        loss,
        valSplit: 0,
        checkpointEvery: 0,
        seed: o.seed,
        device: 'cpu',
        threads: o.threads,
      });
      const driven = [];
      let group = [];
      micro.forEach((m, i) => {
        group.push(coltrast[i].loss);
        if (m.apply) {
          driven.push(group.reduce((a, b) => a + b, 0) / group.length);
          group = [];
        }
      });
      const losses = result.history.steps.slice(0, steps).map((s) => s.loss);
      const differing = losses.map((l, i) => (l === driven[i] ? -1 : i)).filter((i) => i >= 0);
      trainCheck = { steps: losses.length, identical: differing.length === 0 && losses.length === driven.length, firstDifferentStep: differing.length ? differing[0] + 1 : null };
      // train() kept its last epoch's model (valSplit 0); when that is the compared step, its held-out
      // metrics, from the saved folder, must be the driven run's.
      if (coltrastMetricsAfter && result.history.steps.length === steps) {
        const saved = await coltrastMetrics(output, valData);
        const keys = ['recall@1', 'mrr@10', 'ndcg@10', 'queries'];
        trainCheck.validation = { metrics: saved, identical: keys.every((k) => saved[k] === coltrastMetricsAfter[k]) };
      }
    }

    // Python on the same token ids.
    const request = {
      model: pythonModel,
      threads: o.threads,
      seed: o.seed,
      headSeed: projection ? o.seed : undefined,
      trainer: { learningRate: o.learningRate, weightDecay: o.weightDecay, precision: o.precision },
      step: stepOptions,
      schedule: { peak: o.learningRate, warmupRatio: o.warmupRatio, schedule: o.schedule, totalSteps },
      batches: tokenized,
      validation: validationIds && { queries: validationIds.queries, documents: validationIds.documents, relevant: validationIds.relevant },
    };
    fs.writeFileSync(path.join(work, 'request.json'), JSON.stringify(request));
    const t1 = process.hrtime.bigint();
    const run = spawnSync(python, [PYTHON_SCRIPT, '--parity', path.join(work, 'request.json'), '--out', path.join(work, 'python.json')], {
      encoding: 'utf8', // the same environment as this process; the Python side sets its threads itself
    });
    const pythonSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
    if (run.status !== 0) throw new Error(`${python} ${PYTHON_SCRIPT} failed (${run.status}):\n${run.stderr}`);
    const py = JSON.parse(fs.readFileSync(path.join(work, 'python.json'), 'utf8'));

    const rel = (a, b) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const parts = ['loss', 'contrastive', 'lateInteraction'];
    const compared = [];
    for (let first = 0; first < micro.length; ) {
      let last = first;
      while (!micro[last].apply && last + 1 < micro.length) last++;
      const cs = coltrast.slice(first, last + 1);
      const ps = py.steps.slice(first, last + 1);
      const side = (xs) => ({ ...Object.fromEntries(parts.map((k) => [k, mean(xs.map((x) => x[k]))])), gradNorm: xs[xs.length - 1].gradNorm });
      const entry = {
        step: micro[first].step + 1,
        learningRate: cs[cs.length - 1].learningRate,
        coltrast: side(cs),
        python: side(ps),
        relDiff: {
          ...Object.fromEntries(parts.map((k) => [k, Math.max(...cs.map((c, j) => rel(ps[j][k], c[k])))])),
          gradNorm: rel(ps[ps.length - 1].gradNorm, cs[cs.length - 1].gradNorm),
          learningRate: rel(ps[ps.length - 1].learningRate, cs[cs.length - 1].learningRate),
        },
      };
      if (o.accumulation > 1) {
        entry.microBatches = cs.map((c, j) => ({
          coltrast: Object.fromEntries(parts.map((k) => [k, c[k]])),
          python: Object.fromEntries(parts.map((k) => [k, ps[j][k]])),
        }));
      }
      compared.push(entry);
      first = last + 1;
    }
    const maxOf = (key) => Math.max(...compared.map((s) => s.relDiff[key]));

    let validation;
    if (coltrastMetricsAfter && py.validation) {
      const pm = py.validation.metrics;
      const maxAbs = (m, rows) => {
        let worst = 0;
        rows.forEach((row, i) => row.forEach((x, k) => (worst = Math.max(worst, Math.abs(x - m.data[i * m.dims[1] + k])))));
        return worst;
      };
      const { ranks, ...coltrastValues } = coltrastMetricsAfter;
      // Queries whose positive ranks differently on the two sides, with Python's smallest score gap between
      // the positive and any other document: a gap near float rounding means a tie broken by rounding.
      const differing = ranks
        .map((r, i) => ({ query: i, coltrastRank: r, pythonRank: py.validation.ranks[i], pythonGap: py.validation.gaps[i] }))
        .filter((x) => x.coltrastRank !== x.pythonRank);
      validation = {
        examples: o.valExamples,
        before: coltrastMetricsBefore,
        coltrast: coltrastValues,
        python: pm,
        difference: Object.fromEntries(['recall@1', 'mrr@10', 'ndcg@10'].map((k) => [k, pm[k] - coltrastValues[k]])),
        maxAbsVectorDiff: Math.max(maxAbs(validationIds.vectors.queries, py.validation.queryVectors), maxAbs(validationIds.vectors.documents, py.validation.documentVectors)),
        differentRanks: differing,
        // Of those, the ones where Python's positive is within 1e-6 (about 16 float32 steps at 1) of another document.
        differentRanksAtTies: differing.filter((x) => x.pythonGap <= 1e-6).length,
        // Rank changes are expected where the positive is within this of another document's score.
        smallestPythonGap: Math.min(...py.validation.gaps),
        medianPythonGap: median(py.validation.gaps),
      };
    }
    const info = runtimeInfo();
    const report = {
      date: new Date().toISOString(),
      cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
      coltrast: { torch: info.torchVersion, threads: info.threads, blas: info.blas.libraries, seconds: +coltrastSeconds.toFixed(3) },
      python: { executable: python, torch: py.torch, threads: py.threads, blas: py.blas, pooling: py.pooling, head: py.head, seconds: +pythonSeconds.toFixed(3) },
      options: { ...o, python: undefined, out: undefined, epochs, totalSteps, trainSteps, microBatches: micro.length, model: { ...config, shape: o.shape } },
      warnings,
      maxRelDiff: {
        loss: maxOf('loss'),
        contrastive: maxOf('contrastive'),
        lateInteraction: maxOf('lateInteraction'),
        gradNorm: maxOf('gradNorm'),
        learningRate: maxOf('learningRate'),
      },
      tolerance: o.tolerance,
      pass: maxOf('loss') <= o.tolerance,
      trainCheck,
      validation,
      steps: compared,
    };
    if (o.out) {
      fs.mkdirSync(o.out, { recursive: true });
      fs.writeFileSync(path.join(o.out, 'parity.json'), JSON.stringify(report, null, 2) + '\n');
      fs.writeFileSync(path.join(o.out, 'parity.svg'), paritySvg(report));
    }
    return report;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

// ---- the plot: loss per step of both sides, and their relative difference (log scale) ----------------

const W = 460;
const H = 300;
const PAD = { left: 60, right: 16, top: 34, bottom: 44 };

function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const unit = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) ?? step * 10;
  const out = [];
  for (let v = Math.ceil(lo / unit) * unit; v <= hi + 1e-12; v += unit) out.push(+v.toPrecision(12));
  return out;
}

function panel(x0, title, yLabel, series, { log = false } = {}) {
  const f = log ? (y) => Math.log10(Math.max(y, 1e-10)) : (y) => y;
  const pts = series.flatMap((s) => s.points);
  let [xMin, xMax] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [yMin, yMax] = [Math.min(...pts.map((p) => f(p[1]))), Math.max(...pts.map((p) => f(p[1])))];
  if (xMax === xMin) xMax = xMin + 1;
  if (log) [yMin, yMax] = [Math.floor(yMin), Math.ceil(yMax)];
  if (yMax === yMin) [yMin, yMax] = [yMin - 0.5, yMax + 0.5];
  if (!log) {
    const pad = (yMax - yMin) * 0.05;
    [yMin, yMax] = [yMin - pad, yMax + pad];
  }
  const w = W - PAD.left - PAD.right;
  const h = H - PAD.top - PAD.bottom;
  const sx = (x) => (x0 + PAD.left + ((x - xMin) / (xMax - xMin)) * w).toFixed(1);
  const sy = (y) => (PAD.top + h - ((f(y) - yMin) / (yMax - yMin)) * h).toFixed(1);
  const out = [
    `<text x="${x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">${title}</text>`,
    `<rect x="${x0 + PAD.left}" y="${PAD.top}" width="${w}" height="${h}" fill="none" stroke="#999"/>`,
  ];
  const yTicks = log ? Array.from({ length: yMax - yMin + 1 }, (_, i) => 10 ** (yMin + i)) : ticks(yMin, yMax);
  for (const t of yTicks) {
    out.push(`<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + w}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    out.push(`<text x="${x0 + PAD.left - 6}" y="${+sy(t) + 4}" text-anchor="end">${log ? `1e${Math.round(Math.log10(t))}` : t}</text>`);
  }
  for (const t of ticks(xMin, xMax)) out.push(`<text x="${sx(t)}" y="${PAD.top + h + 16}" text-anchor="middle">${t}</text>`);
  out.push(`<text x="${x0 + PAD.left + w / 2}" y="${H - 8}" text-anchor="middle">step</text>`);
  out.push(`<text x="${x0 + 14}" y="${PAD.top + h / 2}" text-anchor="middle" transform="rotate(-90 ${x0 + 14} ${PAD.top + h / 2})">${yLabel}</text>`);
  series.forEach((s, i) => {
    const d = s.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(' ');
    out.push(`<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.5}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    const ly = PAD.top + 14 + i * 16;
    out.push(`<line x1="${x0 + W - PAD.right - 130}" x2="${x0 + W - PAD.right - 110}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${x0 + W - PAD.right - 105}" y="${ly}">${s.label}</text>`);
  });
  return out.join('\n');
}

function paritySvg(report) {
  const s = report.steps;
  const left = panel(0, 'training loss per step', 'loss', [
    { label: 'coltrast', color: '#1f77b4', width: 3, points: s.map((x) => [x.step, x.coltrast.loss]) },
    { label: 'PyTorch eager', color: '#d62728', dash: '5,4', points: s.map((x) => [x.step, x.python.loss]) },
  ]);
  const right = panel(W, `|python - coltrast| / coltrast (tolerance ${report.tolerance})`, 'relative difference (0 drawn at 1e-10)', [
    { label: 'loss', color: '#2ca02c', points: s.map((x) => [x.step, x.relDiff.loss]) },
    { label: 'grad norm', color: '#9467bd', dash: '3,3', points: s.map((x) => [x.step, x.relDiff.gradNorm]) },
    { label: 'tolerance', color: '#999', dash: '2,2', points: s.map((x) => [x.step, report.tolerance]) },
  ], { log: true });
  // The held-out metrics of both sides after the last step, as a line under the panels.
  const v = report.validation;
  const m = (x) => ['recall@1', 'mrr@10', 'ndcg@10'].map((k) => x[k].toFixed(4)).join(' / ');
  const footer = v
    ? `\n<text x="${W}" y="${H + 14}" text-anchor="middle">held-out after step ${s.length} (${v.examples} queries), R@1 / MRR@10 / nDCG@10: coltrast ${m(v.coltrast)}; PyTorch eager ${m(v.python)}</text>`
    : '';
  const height = v ? H + 24 : H;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${height}" font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n${left}\n${right}${footer}\n</svg>\n`;
}

module.exports = { runParity, findPython, makeExamples, trainPlan };

if (require.main === module) {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: DEFAULTS.shape },
      steps: { type: 'string', default: String(DEFAULTS.steps) },
      'batch-size': { type: 'string', default: String(DEFAULTS.batchSize) },
      'learning-rate': { type: 'string', default: String(DEFAULTS.learningRate) },
      schedule: { type: 'string', default: DEFAULTS.schedule },
      'warmup-ratio': { type: 'string', default: String(DEFAULTS.warmupRatio) },
      negatives: { type: 'string', default: String(DEFAULTS.negatives) },
      'late-interaction': { type: 'string', default: DEFAULTS.lateInteraction },
      symmetric: { type: 'boolean', default: false },
      'no-dropout': { type: 'boolean', default: false },
      'no-train-check': { type: 'boolean', default: false },
      threads: { type: 'string', default: String(DEFAULTS.threads) },
      pooling: { type: 'string' },
      projection: { type: 'string' },
      'projection-activation': { type: 'string', default: DEFAULTS.projectionActivation },
      accumulation: { type: 'string', default: String(DEFAULTS.accumulation) },
      'mini-batch-size': { type: 'string', default: String(DEFAULTS.miniBatchSize) },
      precision: { type: 'string', default: DEFAULTS.precision },
      'batches-per-epoch': { type: 'string' },
      'val-examples': { type: 'string', default: String(DEFAULTS.valExamples) },
      tolerance: { type: 'string', default: String(DEFAULTS.tolerance) },
      out: { type: 'string', default: path.join('tmp', 'parity') },
    },
  });
  runParity({
    shape: values.shape,
    steps: Number(values.steps),
    batchSize: Number(values['batch-size']),
    learningRate: Number(values['learning-rate']),
    schedule: values.schedule,
    warmupRatio: Number(values['warmup-ratio']),
    negatives: Number(values.negatives),
    lateInteraction: values['late-interaction'],
    symmetric: values.symmetric,
    dropout: !values['no-dropout'],
    trainCheck: !values['no-train-check'],
    threads: Number(values.threads),
    pooling: values.pooling,
    projection: values.projection === undefined ? undefined : Number(values.projection),
    projectionActivation: values['projection-activation'],
    accumulation: Number(values.accumulation),
    miniBatchSize: Number(values['mini-batch-size']),
    precision: values.precision,
    batchesPerEpoch: values['batches-per-epoch'] === undefined ? undefined : Number(values['batches-per-epoch']),
    valExamples: Number(values['val-examples']),
    tolerance: Number(values.tolerance),
    out: values.out,
  })
    .then((r) => {
      const f = (x) => x.toExponential(2);
      console.log('| step | lr | coltrast loss | python loss | rel. diff |');
      console.log('|---|---|---|---|---|');
      for (const s of r.steps) {
        if (s.step <= 3 || s.step % 10 === 0 || s.step === r.steps.length) {
          console.log(`| ${s.step} | ${f(s.learningRate)} | ${s.coltrast.loss.toFixed(6)} | ${s.python.loss.toFixed(6)} | ${f(s.relDiff.loss)} |`);
        }
      }
      const m = r.maxRelDiff;
      console.log(`\nmax relative difference over ${r.steps.length} steps: loss ${f(m.loss)}, contrastive ${f(m.contrastive)}, late interaction ${f(m.lateInteraction)}, grad norm ${f(m.gradNorm)}, lr ${f(m.learningRate)}`);
      if (r.trainCheck) console.log(`train() on the same data: ${r.trainCheck.identical ? 'identical per-step losses' : `differs from step ${r.trainCheck.firstDifferentStep}`} (${r.trainCheck.steps} steps)`);
      if (r.trainCheck?.validation) console.log(`train()'s saved model: ${r.trainCheck.validation.identical ? 'the same' : 'other'} held-out metrics as the driven run`);
      if (r.validation) {
        const v = r.validation;
        const row = (m) => ['recall@1', 'mrr@10', 'ndcg@10'].map((k) => m[k].toFixed(4)).join(' / ');
        console.log(`held-out (${v.examples} queries against ${v.examples} positives), Recall@1 / MRR@10 / nDCG@10: before training ${row(v.before)}; after: coltrast ${row(v.coltrast)}, python ${row(v.python)}, difference ${['recall@1', 'mrr@10', 'ndcg@10'].map((k) => v.difference[k].toExponential(1)).join(' / ')}; largest vector difference ${v.maxAbsVectorDiff.toExponential(2)}`);
        const d = v.differentRanks;
        const shown = d.slice(0, 5).map((x) => `q${x.query}: ${x.coltrastRank} vs ${x.pythonRank}, gap ${x.pythonGap.toExponential(1)}`).join('; ');
        console.log(`  queries whose positive ranks differently: ${d.length}, ${v.differentRanksAtTies} of them at a score gap <= 1e-6${d.length ? ` (${shown}${d.length > 5 ? '; ...' : ''})` : ''}; median score gap around the positive ${v.medianPythonGap.toExponential(1)}`);
      }
      if (r.python.head) console.log(`projection head ${r.python.head.inFeatures} -> ${r.python.head.outFeatures} ${r.python.head.activation}; Python's seeded nn.Linear draw equals coltrast's initial head: ${r.python.head.initialIsSeededLinearInit}`);
      for (const w of r.warnings) console.log(`warning: ${w}`);
      console.log(`coltrast ${r.coltrast.seconds} s, python ${r.python.seconds} s (incl. start-up); ${r.coltrast.threads}/${r.python.threads} threads; libtorch ${r.coltrast.torch} / torch ${r.python.torch}`);
      console.log(`${r.pass ? 'PASS' : 'FAIL'}: within ${r.tolerance} relative; wrote ${path.join(values.out, 'parity.json')} and parity.svg`);
      process.exit(r.pass && (!r.trainCheck || (r.trainCheck.identical && r.trainCheck.validation?.identical !== false)) ? 0 : 1);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
