#!/usr/bin/env node
// Quality parity with the Python baseline: the same ColTrast fine-tuning steps in coltrast and in plain
// PyTorch (scripts/bench/python/coltrast_train.py), from the same random BERT, on the same token ids, in the
// same batch order, with the same hyper-parameters, threads and BLAS; per-step losses of both sides go to
// parity.json and parity.svg. Uses the built package (npm run build first) and a python3 with torch
// (Debian: python3-torch; COLTRAST_PYTHON=/path/to/python to choose one).
//
//   node scripts/bench/parity.js [--shape small] [--steps 50] [--batch-size 8] [--learning-rate 1e-4]
//       [--schedule linear|cosine|constant] [--warmup-ratio 0.1] [--negatives 1]
//       [--late-interaction cross_entropy|bce] [--symmetric] [--no-dropout] [--threads 2] [--out tmp/parity]
//
// Batch order: train() shuffles its examples each epoch with its seeded generator and has no option to
// take a given order, so this script computes the batches exactly as train() does (seededRandom, shuffle,
// makeBatches from the package), drives the native trainer through the path train() uses
// (Encoder.createTrainer, the learning rate from learningRateAt), and hands the same batches, as token ids
// from coltrast's tokenizer, to Python. It then runs train() itself on the same data (unless
// --no-train-check) and checks that its per-step losses are the driven run's, so what is compared with
// Python is what train() computes.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON_SCRIPT = path.join(__dirname, 'python', 'coltrast_train.py');
const { Encoder, train, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { learningRateAt } = require(path.join(ROOT, 'dist', 'train'));
const { makeBatches, shuffle } = require(path.join(ROOT, 'dist', 'train-data'));
const { seededRandom } = require(path.join(ROOT, 'dist', 'random'));
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

/** train()'s batches for `epochs` epochs: each epoch's order from the seeded generator where the last one left it. */
function trainOrder(examples, batchSize, epochs, seed) {
  let state = seededRandom(seed).state();
  const batches = [];
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const random = seededRandom(0, state);
    batches.push(...makeBatches(shuffle(examples, random.next), batchSize));
    state = random.state();
  }
  return batches;
}

const DEFAULTS = {
  shape: 'small',
  steps: 50,
  batchSize: 8,
  batchesPerEpoch: 5,
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
  trainCheck: true,
  tolerance: 0.01,
};

/**
 * Runs both sides and compares them. Returns the report written to `<out>/parity.json` (when `out` is
 * given): per-step losses of both sides, the relative differences and whether the largest is within
 * `tolerance`.
 */
async function runParity(options = {}) {
  const o = { ...DEFAULTS, ...options };
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

    const examples = makeExamples(o.batchSize * o.batchesPerEpoch, o.negatives);
    const epochs = Math.ceil(o.steps / o.batchesPerEpoch);
    const totalSteps = o.batchesPerEpoch * epochs;
    const batches = trainOrder(examples, o.batchSize, epochs, o.seed).slice(0, o.steps);
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
    };

    // coltrast, driven step by step through the path train() uses.
    const enc = await Encoder.load(model, { device: 'cpu', threads: o.threads });
    const tokenized = [];
    const coltrast = [];
    const t0 = process.hrtime.bigint();
    try {
      const trainer = await enc.createTrainer({ learningRate: o.learningRate, weightDecay: o.weightDecay, seed: o.seed });
      for (let i = 0; i < batches.length; i++) {
        const b = batches[i];
        tokenized.push({ queries: await enc.tokenize(b.queries), documents: await enc.tokenize(b.documents) });
        const learningRate = learningRateAt(i, totalSteps, o.learningRate, o.warmupRatio, o.schedule);
        const r = await trainer.step(b.queries, b.documents, { ...stepOptions, learningRate, lossScale: 1, apply: true });
        coltrast.push({ ...r, learningRate });
      }
    } finally {
      enc.dispose();
    }
    const coltrastSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

    // train() itself on the same data: its losses must be the driven run's.
    let trainCheck;
    if (o.trainCheck) {
      const result = await train({
        model,
        data: examples,
        output: path.join(work, 'trained'),
        epochs,
        batchSize: o.batchSize,
        learningRate: o.learningRate,
        warmupRatio: o.warmupRatio,
        schedule: o.schedule,
        weightDecay: o.weightDecay,
        maxGradNorm: o.maxGradNorm,
        loss,
        valSplit: 0,
        checkpointEvery: 0,
        seed: o.seed,
        device: 'cpu',
        threads: o.threads,
      });
      const losses = result.history.steps.slice(0, o.steps).map((s) => s.loss);
      const differing = losses.map((l, i) => (l === coltrast[i].loss ? -1 : i)).filter((i) => i >= 0);
      trainCheck = { steps: losses.length, identical: differing.length === 0, firstDifferentStep: differing.length ? differing[0] + 1 : null };
    }

    // Python on the same token ids.
    const request = {
      model,
      threads: o.threads,
      seed: o.seed,
      trainer: { learningRate: o.learningRate, weightDecay: o.weightDecay },
      step: stepOptions,
      schedule: { peak: o.learningRate, warmupRatio: o.warmupRatio, schedule: o.schedule, totalSteps },
      batches: tokenized,
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
    const steps = coltrast.map((c, i) => {
      const p = py.steps[i];
      return {
        step: i + 1,
        learningRate: c.learningRate,
        coltrast: { loss: c.loss, contrastive: c.contrastive, lateInteraction: c.lateInteraction, gradNorm: c.gradNorm },
        python: { loss: p.loss, contrastive: p.contrastive, lateInteraction: p.lateInteraction, gradNorm: p.gradNorm },
        relDiff: {
          loss: rel(p.loss, c.loss),
          contrastive: rel(p.contrastive, c.contrastive),
          lateInteraction: rel(p.lateInteraction, c.lateInteraction),
          gradNorm: rel(p.gradNorm, c.gradNorm),
          learningRate: rel(p.learningRate, c.learningRate),
        },
      };
    });
    const maxOf = (key) => Math.max(...steps.map((s) => s.relDiff[key]));
    const info = runtimeInfo();
    const report = {
      date: new Date().toISOString(),
      cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
      coltrast: { torch: info.torchVersion, threads: info.threads, blas: info.blas.libraries, seconds: +coltrastSeconds.toFixed(3) },
      python: { executable: python, torch: py.torch, threads: py.threads, blas: py.blas, pooling: py.pooling, seconds: +pythonSeconds.toFixed(3) },
      options: { ...o, python: undefined, out: undefined, epochs, totalSteps, model: { ...config, shape: o.shape } },
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
      steps,
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
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H}" font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n${left}\n${right}\n</svg>\n`;
}

module.exports = { runParity, findPython, makeExamples, trainOrder };

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
      console.log(`coltrast ${r.coltrast.seconds} s, python ${r.python.seconds} s (incl. start-up); ${r.coltrast.threads}/${r.python.threads} threads; libtorch ${r.coltrast.torch} / torch ${r.python.torch}`);
      console.log(`${r.pass ? 'PASS' : 'FAIL'}: within ${r.tolerance} relative; wrote ${path.join(values.out, 'parity.json')} and parity.svg`);
      process.exit(r.pass && (!r.trainCheck || r.trainCheck.identical) ? 0 : 1);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
