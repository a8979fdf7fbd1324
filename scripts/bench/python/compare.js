#!/usr/bin/env node
// CPU throughput of coltrast and of the plain-PyTorch baseline (coltrast_train.py --bench, embed.py) on the
// same random-weight model, the same token ids, batch sizes, thread count and BLAS. Uses the built package.
//
//   node scripts/bench/python/compare.js [--shape minilm] [--what train,embed,largest] [--batch-sizes 32,64]
//       [--steps 5] [--texts 1000] [--threads 2] [--rounds 2] [--loss coltrast|contrastive] [--embed-dtype float32]
//       [--embed-quantize none|int8]
//       [--precision float32|bfloat16]
//       [--mini-batch-size 0] [--rss-budget-mib 12288] [--largest-sizes 64,128,256,512,1024]
//       [--largest-mini-batch-size 32] [--json out.json] [--svg largest.svg]
//   node scripts/bench/python/compare.js --from-json out.json [--svg largest.svg]   (tables of an earlier run)
//
// --loss contrastive: the in-batch contrastive loss alone on both sides (default: both losses, 0.5 each).
// --embed-quantize int8: both sides embed with the projections quantized to int8 (Encoder.load({ quantize: 'int8' });
// torch.ao.quantization.quantize_dynamic with per_channel_dynamic_qconfig in Python).
// --embed-dtype bfloat16: both sides embed with the model held in bfloat16. --precision bfloat16: both sides
// train with the forward pass under autocast (train({ precision }), torch.autocast).
// --mini-batch-size: coltrast's gradient caching (train({ miniBatchSize })) in the train rows (0: off).
// largest: the largest of --largest-sizes at which training fits in --rss-budget-mib of resident memory,
// for coltrast without and with gradient caching (--largest-mini-batch-size) and for Python: every trial
// (one warm-up step and one timed step) runs in a process of its own that is killed when its resident set
// passes the budget, so that peaks are each trial's and the machine never runs out of memory. --svg writes
// it as a chart: peak resident memory against batch size per side, the budget as a line, each side's
// first batch over it as a cross at the memory where it was stopped.
// Training: query/positive pairs as scripts/bench/train.js makes them (queries of 5-15 words, positives of
// 30-80, max_seq_length 128), in-batch negatives, both losses, AdamW; coltrast is driven step by step through
// the native trainer train() uses (Encoder.createTrainer; its time includes tokenizing each batch), Python
// runs the same steps from the same token ids (its time includes padding them into tensors). One untimed
// warm-up step first on each side; samples/s = query/positive pairs per second.
// Embedding: the mixed-length texts of scripts/bench/embed.js (10-120 words, max_seq_length 256), sorted by
// length and batched on both sides; coltrast's embed() time includes tokenizing, which is also timed alone.
// Both sides' vectors are compared. Each measurement runs --rounds times, alternating coltrast and Python, and
// each side's fastest round is reported (on a shared machine the fastest is the least disturbed); every round,
// with the 1-minute load average before and after it, is in the --json file. Peak RSS: each Python run is a process of its own; coltrast's figure is
// this process's high-water mark so far, so run one measurement per invocation (--what, --batch-sizes) for
// a clean one.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const { Encoder, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));
const { findPython } = require(path.join(ROOT, 'scripts', 'bench', 'parity'));
const { stepOptions } = require('./step-options');
const { residentMiB } = require(path.join(ROOT, 'scripts', 'bench', 'st-compare'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'minilm' },
    what: { type: 'string', default: 'train,embed' },
    'batch-sizes': { type: 'string', default: '32' },
    steps: { type: 'string', default: '5' },
    texts: { type: 'string', default: '1000' },
    'embed-batch-size': { type: 'string', default: '32' },
    'embed-dtype': { type: 'string', default: 'float32' },
    'embed-quantize': { type: 'string', default: 'none' },
    precision: { type: 'string', default: 'float32' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    loss: { type: 'string', default: 'coltrast' },
    'mini-batch-size': { type: 'string', default: '0' },
    'rss-budget-mib': { type: 'string', default: '12288' },
    'largest-sizes': { type: 'string', default: '64,128,256,512,1024' },
    'largest-mini-batch-size': { type: 'string', default: '32' },
    json: { type: 'string' },
    svg: { type: 'string' },
    // Print the tables (and --svg the chart) of an earlier run's --json file instead of measuring.
    'from-json': { type: 'string' },
    // A child's one training measurement (largest): --trial train --model M --data F --batch-size B.
    trial: { type: 'string' },
    model: { type: 'string' },
    data: { type: 'string' },
    'batch-size': { type: 'string' },
  },
});
// Both sides' step options (coltrast_train.py --loss sets the same weights), with coltrast's caching.
const LOSS = stepOptions(values.loss, Number(values['mini-batch-size']));

const words = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
function lcg() {
  let seed = 42;
  return () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
}
// scripts/bench/train.js's pairs.
function makePairs(n) {
  const next = lcg();
  const text = (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo)) }, () => words[Math.floor(next() * words.length)]).join(' ');
  return Array.from({ length: n }, (_, i) => ({ query: `${i} ${text(5, 15)}`, positive: `${i} ${text(30, 80)}` }));
}
// scripts/bench/embed.js's texts.
function makeTexts(n) {
  const next = lcg();
  return Array.from({ length: n }, () => {
    const len = 10 + Math.floor(next() * 110);
    return Array.from({ length: len }, () => words[Math.floor(next() * words.length)]).join(' ');
  });
}

// The same environment as this process: the Python side sets its thread count with torch.set_num_threads.
function python(python, args) {
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${python} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
// This process's high-water mark so far (everything run before counts: measure one thing per run for a clean figure).
const peakRss = () => Math.round(process.resourceUsage().maxRSS / 1024);
// CPU seconds (user + system, every thread of this process) and minor page faults so far.
function usage() {
  const u = process.resourceUsage();
  return { cpu: (u.userCPUTime + u.systemCPUTime) / 1e6, faults: u.minorPageFault };
}

// ---- largest: trials in child processes under a resident-memory budget ----
// The child: one warm-up step and --steps timed steps of coltrast training from token ids, a JSON line out.
async function trial() {
  const batchSize = Number(values['batch-size']);
  const steps = Number(values.steps);
  const texts = JSON.parse(fs.readFileSync(values.data, 'utf8')); // [{ query, positive }] as text; its time includes tokenizing
  const enc = await Encoder.load(values.model, { device: 'cpu', threads: Number(values.threads) });
  const trainer = await enc.createTrainer({ learningRate: 2e-5, weightDecay: 0.01, seed: 42, precision: values.precision });
  const times = [];
  for (let s = 0; s <= steps; s++) {
    const batch = texts.slice(s * batchSize, (s + 1) * batchSize);
    const t0 = process.hrtime.bigint();
    await trainer.step(batch.map((p) => p.query), batch.map((p) => p.positive), LOSS);
    if (s > 0) times.push(seconds(t0));
  }
  enc.dispose();
  return { secondsPerStep: times.reduce((a, b) => a + b, 0) / times.length, peakRssMiB: peakRss() };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Runs a child, killing it when its resident set passes `budgetMiB` (checked every 50 ms): its JSON
// result, or { overBudget, rssAtKillMiB }, or { error }.
async function budgeted(command, args, budgetMiB) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  let killedAt = 0;
  let done = false;
  exited.then(() => (done = true));
  while (!done) {
    const rss = residentMiB(child.pid);
    if (rss > budgetMiB && !killedAt) {
      killedAt = rss;
      child.kill('SIGKILL');
    }
    await sleep(50);
  }
  const { code, signal } = await exited;
  if (killedAt) return { overBudget: true, rssAtKillMiB: Math.round(killedAt) };
  if (code !== 0) return { error: `exit ${code ?? signal}: ${err.trim().split('\n').slice(-3).join(' | ')}` };
  const r = JSON.parse(out.trim().split('\n').pop());
  // A peak shorter than the polling interval escapes the watchdog; the child's own high-water mark does not.
  if (r.peakRssMiB > budgetMiB) return { overBudget: true, rssAtKillMiB: null, peakRssMiB: Math.round(r.peakRssMiB) };
  return r;
}

async function largest(py, threads) {
  const sizes = values['largest-sizes'].split(',').map(Number);
  const budgetMiB = Number(values['rss-budget-mib']);
  const cachedSize = Number(values['largest-mini-batch-size']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-largest-'));
  try {
    const model = makeRandomBert(path.join(work, 'model'), { shape: values.shape, seed: 1, maxSeqLength: 128 });
    const enc = await Encoder.load(model, { device: 'cpu', threads });
    const pairs = makePairs(2 * Math.max(...sizes));
    const ids = { q: await enc.tokenize(pairs.map((p) => p.query)), d: await enc.tokenize(pairs.map((p) => p.positive)) };
    enc.dispose();
    // Python gets coltrast's token ids (it has no tokenizer); coltrast tokenizes the texts itself.
    const idsFile = path.join(work, 'pairs-ids.json');
    const textFile = path.join(work, 'pairs-text.json');
    fs.writeFileSync(idsFile, JSON.stringify(ids.q.map((q, i) => ({ query: q, positive: ids.d[i] }))));
    fs.writeFileSync(textFile, JSON.stringify(pairs));
    // One warm-up and one timed step at batch b, with the same options on every side.
    const common = (b) => ['--model', model, '--batch-size', String(b), '--steps', '1', '--threads', String(threads), '--loss', values.loss, '--precision', values.precision];
    const coltrastSide = (miniBatchSize) => (b) =>
      budgeted(process.execPath, [__filename, '--trial', 'train', '--data', textFile, ...common(b), '--mini-batch-size', String(miniBatchSize)], budgetMiB);
    const sides = [
      { name: 'coltrast', run: coltrastSide(0) },
      { name: `coltrast, miniBatchSize ${cachedSize}`, run: coltrastSide(cachedSize) },
      { name: 'python', run: (b) => budgeted(py, [path.join(__dirname, 'coltrast_train.py'), '--bench', '--data', idsFile, ...common(b)], budgetMiB) },
    ];
    const out = [];
    for (const side of sides) {
      const trials = [];
      for (const b of sizes) {
        const r = await side.run(b);
        trials.push({ batchSize: b, ...r });
        console.error(`largest, ${side.name}, batch ${b}: ${r.overBudget ? `over budget (${r.rssAtKillMiB ? `killed at ${r.rssAtKillMiB}` : `peak ${r.peakRssMiB}`} MiB)` : r.error ?? `${r.secondsPerStep.toFixed(2)} s/step, peak RSS ${Math.round(r.peakRssMiB)} MiB`}`);
        if (r.overBudget || r.error) break;
      }
      const fit = trials.filter((r) => !r.overBudget && !r.error);
      out.push({ side: side.name, largestBatch: fit.length ? fit.at(-1).batchSize : 0, reachedLastSize: fit.length === sizes.length, trials });
    }
    return { loss: values.loss, precision: values.precision, budgetMiB, sizes, sides: out };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The largest-batch search as an SVG line chart (hand-written, as lib/report.ts explains). */
function largestSvg(largest, title) {
  const [W, H, L, R, T, B] = [640, 360, 64, 190, 40, 46];
  const colors = ['#3b6ea5', '#2e9d5b', '#e08a2c', '#8c4fb0'];
  const xs = largest.sizes;
  const mib = (r) => (r.overBudget ? (r.rssAtKillMiB ?? r.peakRssMiB) : r.peakRssMiB);
  const yMax = Math.max(largest.budgetMiB, ...largest.sides.flatMap((s) => s.trials.map(mib).filter(Number.isFinite))) * 1.08;
  const sx = (b) => L + (Math.log2(b / xs[0]) / Math.max(1, Math.log2(xs.at(-1) / xs[0]))) * (W - L - R);
  const sy = (m) => H - B - (m / yMax) * (H - T - B);
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`,
  ];
  for (let g = 0; g <= yMax / 1024; g += Math.max(1, Math.ceil(yMax / 1024 / 6))) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(g * 1024)}" y2="${sy(g * 1024)}" stroke="#eee"/>`);
    parts.push(`<text x="${L - 6}" y="${sy(g * 1024) + 4}" text-anchor="end">${g}</text>`);
  }
  for (const b of xs) parts.push(`<text x="${sx(b)}" y="${H - B + 16}" text-anchor="middle">${b}</text>`);
  parts.push(`<text x="${L + (W - L - R) / 2}" y="${H - 8}" text-anchor="middle">batch size (query/positive pairs)</text>`);
  parts.push(`<text x="14" y="${T + (H - T - B) / 2}" transform="rotate(-90 14 ${T + (H - T - B) / 2})" text-anchor="middle">peak resident memory (GiB)</text>`);
  parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(largest.budgetMiB)}" y2="${sy(largest.budgetMiB)}" stroke="#c33" stroke-dasharray="6,4"/>`);
  parts.push(`<text x="${L + 6}" y="${sy(largest.budgetMiB) - 6}" fill="#c33">budget ${(largest.budgetMiB / 1024).toFixed(0)} GiB</text>`);
  largest.sides.forEach((s, i) => {
    const color = colors[i % colors.length];
    const fit = s.trials.filter((r) => !r.overBudget && !r.error);
    if (fit.length) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${fit.map((r) => `${sx(r.batchSize).toFixed(1)},${sy(r.peakRssMiB).toFixed(1)}`).join(' ')}"/>`);
    for (const r of fit) parts.push(`<circle cx="${sx(r.batchSize).toFixed(1)}" cy="${sy(r.peakRssMiB).toFixed(1)}" r="3" fill="${color}"/>`);
    for (const r of s.trials.filter((t) => t.overBudget && Number.isFinite(mib(t)))) {
      const [x, y] = [sx(r.batchSize), sy(mib(r))];
      parts.push(`<path d="M${x - 5},${y - 5}L${x + 5},${y + 5}M${x - 5},${y + 5}L${x + 5},${y - 5}" stroke="${color}" stroke-width="2"/>`);
    }
    const ly = T + 16 + i * 18;
    parts.push(`<line x1="${W - R + 6}" x2="${W - R + 22}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${W - R + 26}" y="${ly}">${esc(s.side)}</text>`);
  });
  parts.push(`<text x="${W - R + 6}" y="${T + 30 + largest.sides.length * 18}" fill="#555">× stopped over budget</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

async function main() {
  if (values.trial) {
    console.log(JSON.stringify(await trial()));
    return;
  }
  if (values['from-json']) {
    report(JSON.parse(fs.readFileSync(values['from-json'], 'utf8')), {});
    return;
  }
  const py = findPython();
  if (!py) throw new Error('no python3 with torch found (Debian: apt-get install python3-torch; or set COLTRAST_PYTHON)');
  const threads = Number(values.threads);
  const steps = Number(values.steps);
  const what = values.what.split(',');
  const roundCount = Number(values.rounds);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-compare-'));
  const rows = { train: [], embed: [], largest: null };
  try {
    if (what.includes('train')) {
      const model = makeRandomBert(path.join(work, 'train-model'), { shape: values.shape, seed: 1, maxSeqLength: 128 });
      for (const batchSize of values['batch-sizes'].split(',').map(Number)) {
        const pairs = makePairs(batchSize * (steps + 1));
        const enc = await Encoder.load(model, { device: 'cpu', threads });
        const ids = { q: await enc.tokenize(pairs.map((p) => p.query)), d: await enc.tokenize(pairs.map((p) => p.positive)) };
        enc.dispose();
        const dataFile = path.join(work, `pairs-${batchSize}.json`);
        fs.writeFileSync(dataFile, JSON.stringify(ids.q.map((q, i) => ({ query: q, positive: ids.d[i] }))));
        const rounds = { coltrast: [], python: [] };
        let pythonInfo;
        for (let round = 0; round < roundCount; round++) {
          // coltrast: a fresh model and trainer each round, one warm-up step, then `steps` timed steps.
          const load0 = os.loadavg()[0];
          const e = await Encoder.load(model, { device: 'cpu', threads });
          const times = [];
          let cpu = 0;
          let faults = 0;
          try {
            const trainer = await e.createTrainer({ learningRate: 2e-5, weightDecay: 0.01, seed: 42, precision: values.precision });
            for (let s = 0; s <= steps; s++) {
              const batch = pairs.slice(s * batchSize, (s + 1) * batchSize);
              const [t0, c0] = [process.hrtime.bigint(), usage()];
              await trainer.step(batch.map((p) => p.query), batch.map((p) => p.positive), LOSS);
              if (s > 0) {
                times.push(seconds(t0));
                const c1 = usage();
                cpu += c1.cpu - c0.cpu;
                faults += c1.faults - c0.faults;
              }
            }
          } finally {
            e.dispose();
          }
          rounds.coltrast.push({
            secondsPerStep: times.reduce((a, b) => a + b, 0) / times.length,
            cpuSecondsPerStep: cpu / times.length,
            minorFaultsPerStep: faults / times.length,
            steps: times.map((t) => +t.toFixed(3)),
            loadavg: [load0, os.loadavg()[0]],
          });
          const load1 = os.loadavg()[0];
          pythonInfo = python(py, [path.join(__dirname, 'coltrast_train.py'), '--bench', '--model', model, '--data', dataFile, '--batch-size', String(batchSize), '--steps', String(steps), '--threads', String(threads), '--loss', values.loss, '--precision', values.precision]);
          rounds.python.push({
            secondsPerStep: pythonInfo.secondsPerStep,
            cpuSecondsPerStep: pythonInfo.cpuSecondsPerStep,
            minorFaultsPerStep: pythonInfo.minorFaultsPerStep,
            steps: pythonInfo.stepSeconds.map((t) => +t.toFixed(3)),
            loadavg: [load1, os.loadavg()[0]],
          });
          const [c, p] = [rounds.coltrast.at(-1), rounds.python.at(-1)];
          console.error(
            `train batch ${batchSize} round ${round + 1}: coltrast ${c.secondsPerStep.toFixed(3)} s/step (CPU ${c.cpuSecondsPerStep.toFixed(3)} s, ` +
              `${Math.round(c.minorFaultsPerStep)} page faults), python ${p.secondsPerStep.toFixed(3)} s/step (CPU ${p.cpuSecondsPerStep.toFixed(3)} s, ${Math.round(p.minorFaultsPerStep)} page faults)`,
          );
        }
        const best = (side) => Math.min(...rounds[side].map((r) => r.secondsPerStep));
        const queryTokens = ids.q.reduce((n, t) => n + t.length, 0) / ids.q.length;
        const docTokens = ids.d.reduce((n, t) => n + t.length, 0) / ids.d.length;
        rows.train.push({
          batchSize,
          loss: values.loss,
          precision: values.precision,
          miniBatchSize: Number(values['mini-batch-size']),
          timedSteps: steps,
          rounds: roundCount,
          meanQueryTokens: +queryTokens.toFixed(1),
          meanPositiveTokens: +docTokens.toFixed(1),
          coltrast: { secondsPerStep: +best('coltrast').toFixed(3), samplesPerSecond: +(batchSize / best('coltrast')).toFixed(2), peakRssMiB: peakRss(), rounds: rounds.coltrast },
          python: { secondsPerStep: +best('python').toFixed(3), samplesPerSecond: +(batchSize / best('python')).toFixed(2), peakRssMiB: Math.round(pythonInfo.peakRssMiB), threads: pythonInfo.threads, blas: pythonInfo.blas, rounds: rounds.python },
        });
      }
    }
    if (what.includes('largest')) rows.largest = await largest(py, threads);
    if (what.includes('embed')) {
      const model = makeRandomBert(path.join(work, 'embed-model'), { shape: values.shape, seed: 1 });
      const texts = makeTexts(Number(values.texts));
      const batchSize = Number(values['embed-batch-size']);
      const quantize = values['embed-quantize'] === 'none' ? undefined : values['embed-quantize'];
      const enc = await Encoder.load(model, { device: 'cpu', threads, dtype: values['embed-dtype'], ...(quantize && { quantize }) });
      let t0 = process.hrtime.bigint();
      const ids = await enc.tokenize(texts);
      const tokenizeSeconds = seconds(t0);
      const dataFile = path.join(work, 'texts.json');
      fs.writeFileSync(dataFile, JSON.stringify(ids));
      await enc.embed(texts.slice(0, batchSize), { batchSize }); // warm-up
      const rounds = { coltrast: [], python: [] };
      let p;
      for (let round = 0; round < roundCount; round++) {
        const load0 = os.loadavg()[0];
        const c0 = usage();
        t0 = process.hrtime.bigint();
        const vectors = await enc.embed(texts, { batchSize });
        const wall = seconds(t0);
        const c1 = usage();
        rounds.coltrast.push({ seconds: wall, cpuSeconds: c1.cpu - c0.cpu, minorFaults: c1.faults - c0.faults, loadavg: [load0, os.loadavg()[0]] });
        const vectorFile = path.join(work, 'vectors.bin');
        fs.writeFileSync(vectorFile, Buffer.from(vectors.data.buffer, vectors.data.byteOffset, vectors.data.byteLength));
        const load1 = os.loadavg()[0];
        p = python(py, [path.join(__dirname, 'embed.py'), '--model', model, '--data', dataFile, '--batch-size', String(batchSize), '--threads', String(threads), '--dtype', values['embed-dtype'], ...(quantize ? ['--quantize', quantize] : []), '--check', vectorFile]);
        rounds.python.push({ seconds: p.seconds, cpuSeconds: p.cpuSeconds, minorFaults: p.minorFaults, maxAbsDiff: p.maxAbsDiffVsColtrast, loadavg: [load1, os.loadavg()[0]] });
        const c = rounds.coltrast.at(-1);
        console.error(
          `embed round ${round + 1}: coltrast ${c.seconds.toFixed(2)} s (CPU ${c.cpuSeconds.toFixed(2)} s, ${c.minorFaults} page faults), ` +
            `python ${p.seconds.toFixed(2)} s (CPU ${p.cpuSeconds.toFixed(2)} s, ${p.minorFaults} page faults)`,
        );
      }
      enc.dispose();
      const best = (side) => Math.min(...rounds[side].map((r) => r.seconds));
      const tokens = ids.reduce((n, t) => n + t.length, 0);
      rows.embed.push({
        dtype: values['embed-dtype'],
        ...(quantize && { quantize }),
        texts: texts.length,
        tokens,
        batchSize,
        rounds: roundCount,
        coltrast: { seconds: +best('coltrast').toFixed(3), textsPerSecond: +(texts.length / best('coltrast')).toFixed(2), tokenizeSeconds: +tokenizeSeconds.toFixed(3), peakRssMiB: peakRss(), rounds: rounds.coltrast },
        python: { seconds: +best('python').toFixed(3), textsPerSecond: +(texts.length / best('python')).toFixed(2), peakRssMiB: Math.round(p.peakRssMiB), threads: p.threads, blas: p.blas, rounds: rounds.python },
        maxAbsDiff: Math.max(...rounds.python.map((r) => r.maxAbsDiff)),
      });
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
    shape: values.shape,
    threads,
    coltrast: { torch: info.torchVersion, threads: info.threads, blas: info.blas.libraries },
    python: py,
    rows,
  };
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
  report(result, { roundCount, torch: info.torchVersion, blas: info.blas.kind });
}

// The tables (Markdown) and, with --svg, the largest-batch chart of a result, measured now or read back
// with --from-json.
function report(result, { roundCount, torch, blas }) {
  const { rows } = result;
  if (values.svg && rows.largest) {
    fs.writeFileSync(values.svg, largestSvg(rows.largest, `Training memory by batch size: ${result.shape}, ${rows.largest.loss} loss, CPU`));
  }
  if (rows.train.length) {
    console.log('| training, batch | timed steps | coltrast s/step | python s/step | coltrast samples/s | python samples/s | coltrast / python time | CPU s/step coltrast / python | peak RSS MiB coltrast / python |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const r of rows.train) {
      const cpu = (side) => r[side].rounds.find((x) => x.secondsPerStep === Math.min(...r[side].rounds.map((y) => y.secondsPerStep))).cpuSecondsPerStep.toFixed(2);
      console.log(`| ${r.batchSize}${r.precision && r.precision !== 'float32' ? ` (${r.precision})` : ''} | ${r.timedSteps} | ${r.coltrast.secondsPerStep} | ${r.python.secondsPerStep} | ${r.coltrast.samplesPerSecond} | ${r.python.samplesPerSecond} | ${(r.coltrast.secondsPerStep / r.python.secondsPerStep).toFixed(2)} | ${cpu('coltrast')} / ${cpu('python')} | ${r.coltrast.peakRssMiB} / ${r.python.peakRssMiB} |`);
    }
  }
  if (rows.embed.length) {
    console.log('\n| embedding, texts | dtype | tokens | batch | coltrast s (tokenizing alone) | python s | coltrast texts/s | python texts/s | max abs diff | peak RSS MiB coltrast / python |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    for (const r of rows.embed) {
      console.log(`| ${r.texts} | ${r.dtype ?? 'float32'}${r.quantize ? `, ${r.quantize}` : ''} | ${r.tokens} | ${r.batchSize} | ${r.coltrast.seconds} (${r.coltrast.tokenizeSeconds}) | ${r.python.seconds} | ${r.coltrast.textsPerSecond} | ${r.python.textsPerSecond} | ${r.maxAbsDiff.toExponential(2)} | ${r.coltrast.peakRssMiB} / ${r.python.peakRssMiB} |`);
    }
  }
  if (rows.largest) {
    console.log(`\n| largest batch within ${rows.largest.budgetMiB} MiB resident, loss ${rows.largest.loss} | largest batch | ${rows.largest.sizes.map((b) => `batch ${b}: s/step, peak RSS MiB`).join(' | ')} |`);
    console.log(`|---|---|${rows.largest.sizes.map(() => '---|').join('')}`);
    for (const s of rows.largest.sides) {
      const cell = (b) => {
        const r = s.trials.find((x) => x.batchSize === b);
        if (!r) return '';
        if (r.overBudget) return r.rssAtKillMiB ? `over budget (killed at ${r.rssAtKillMiB})` : `over budget (peak ${r.peakRssMiB})`;
        if (r.error) return `failed: ${r.error}`;
        return `${r.secondsPerStep.toFixed(2)}, ${Math.round(r.peakRssMiB)}`;
      };
      console.log(`| ${s.side} | ${s.largestBatch}${s.reachedLastSize ? '+' : ''} | ${rows.largest.sizes.map(cell).join(' | ')} |`);
    }
  }
  console.log(`\n${roundCount ? `fastest of ${roundCount} alternating rounds per side; ` : ''}${result.date}, ${result.cpu}, ${result.threads} threads both sides, libtorch ${torch ?? result.coltrast.torch} (coltrast) / ${result.python} torch${blas ? `, BLAS ${blas}` : ''}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
