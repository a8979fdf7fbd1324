#!/usr/bin/env node
// GPU throughput and memory of coltrast against the Python baselines a user would run there
// (scripts/bench/python/st_baseline.py: sentence-transformers' encode(), its trainer with
// MultipleNegativesRankingLoss, and the ColTrast recipe written eagerly on a sentence-transformers model),
// on the same random-weight model folders and the same texts. Needs a CUDA build of the addon and a
// python3 with torch, transformers and sentence-transformers (the accelerator machine has them).
//
//   node scripts/bench/python/compare-gpu.js [--what embed,train,largest] [--quick] [--json out.json]
//       [--shapes minilm,base] [--train-shape minilm] [--texts 10000] [--embed-batch-size 128]
//       [--batch-sizes 32,128,512] [--steps 10] [--precisions bfloat16,float32] [--max-batch 65536]
//       [--budget-seconds 480] [--largest-mini-batch-size 256] [--cached-batch-size 4096]
//
// embed: --texts mixed-length texts (about 10 to 300 tokens) per shape and dtype (float32, bfloat16):
//   coltrast's embed() against SentenceTransformer.encode(), each with its own tokenization, texts/s and
//   peak GPU memory (the CUDA caching allocator's max allocated bytes), and the largest difference between
//   their vectors. float32 rows also give where the Python side's time went (sentenceTransformers.kernels: a
//   profiled encode(), its GPU kernels' seconds by kind and their share of its wall time) and coltrast's wall time
//   over those kernels' (coltrastWallOverKernels).
// train: query/positive pairs (queries of 5-15 words, positives of 30-80, max_seq_length 128), per batch
//   size and precision, both for the ColTrast loss (contrastive + late interaction, both 0.5, temperature
//   0.05) against the eager Python recipe, and for the contrastive loss alone against sentence-transformers'
//   trainer with MNRL: samples/s over --steps timed steps after one warm-up (by their mean time, and by the
//   median step, which a slow first use of some kernel does not move), peak GPU memory. coltrast's
//   steps run as train() runs them (the next batch tokenized during the step); both sides' times include
//   tokenizing. Then, in the first precision, the contrastive loss at --cached-batch-size with gradient
//   caching on both sides (coltrast's miniBatchSize against sentence-transformers'
//   CachedMultipleNegativesRankingLoss, both --largest-mini-batch-size texts at a time; 0, the --quick
//   default, skips it).
// largest: the largest batch (doubling from 256 up to --max-batch) at which one ColTrast training step of
//   each side fits in GPU memory, in bfloat16: coltrast as is, coltrast with gradient caching
//   (miniBatchSize --largest-mini-batch-size; its search starts at the plain step's largest batch), and the
//   eager Python recipe (which has no caching). Each trial is one step (--steps 0), its peak the whole step's. A
//   doubling is not tried when it would end past the budget.
// Each side's embed and train measurements run one after another in one child process of its own (coltrast:
// `compare-gpu.js --serve-trials`; Python: `st_baseline.py serve`), each measurement loading its model, seeding and
// resetting the peak itself, the CUDA cache emptied after it: starting Node with the CUDA libtorch, or Python with
// torch, transformers and sentence-transformers, costs seconds each time (2026-12-05's quick H100 comparison took 171 s
// for some 24 processes whose timed work came to well under a minute). Each result says
// what GPU memory earlier ones left allocated (allocatedMiBAtStart), which its peak would include; a warm process may
// favour a side a little (cuBLAS handles, kernel choices made by an earlier measurement), both sides alike. The
// largest-batch trials each run in a process of their own (`--trial ...`), after both workers have exited, so that
// memory peaks and out-of-memory errors do not carry over.
// A machine lent for minutes must not lose a run to one failure:
// the --json file is rewritten after every measurement (`complete: false` until the end), a failed or
// timed-out measurement is recorded with its error and the next one runs, and measurements that would start
// after --budget-seconds are listed as skipped. The model folders use the default model's English WordPiece
// vocabulary (so texts tokenize as real text does) with real shapes' embedding tables (30,522 rows).
// Attention: coltrast keeps libtorch off cuDNN's attention kernels (README, under enc.embed) and PyTorch may prefer
// them (on sm_90 and newer); each side's setting is recorded (cudnnAttention). The bfloat16 rows also run the Python
// side with them off (st_baseline.py --no-cudnn-attention: sentenceTransformersNoCudnn / pythonNoCudnn and
// speedupNoCudnn), the comparison without that difference; the plain rows are what a Python user gets by default.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const readline = require('node:readline');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const { Encoder, cudaMemory, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));
const { findPython } = require(path.join(ROOT, 'scripts', 'bench', 'parity'));
const { stepOptions } = require('./step-options');
const { median } = require('../stats');

const OPTIONS = {
  what: { type: 'string', default: 'embed,train,largest' },
  quick: { type: 'boolean', default: false },
  shapes: { type: 'string' },
  'train-shape': { type: 'string', default: 'minilm' },
  texts: { type: 'string' },
  'embed-batch-size': { type: 'string', default: '128' },
  'batch-sizes': { type: 'string' },
  steps: { type: 'string' },
  precisions: { type: 'string', default: 'bfloat16,float32' },
  'max-batch': { type: 'string', default: '65536' },
  'budget-seconds': { type: 'string', default: '480' },
  'largest-mini-batch-size': { type: 'string', default: '256' },
  'cached-batch-size': { type: 'string' },
  'mini-batch-size': { type: 'string', default: '0' },
  device: { type: 'string', default: 'cuda' },
  json: { type: 'string' },
  // A child's one measurement: coltrast-embed | coltrast-train.
  trial: { type: 'string' },
  model: { type: 'string' },
  data: { type: 'string' },
  'batch-size': { type: 'string' },
  dtype: { type: 'string', default: 'float32' },
  precision: { type: 'string', default: 'float32' },
  loss: { type: 'string', default: 'coltrast' },
  vectors: { type: 'string' },
  // A child that runs such measurements one after another, one JSON list of their arguments a line on stdin.
  'serve-trials': { type: 'boolean', default: false },
};
const { values } = parseArgs({ options: OPTIONS });
const quick = values.quick;
const shapes = (values.shapes ?? (quick ? 'minilm' : 'minilm,base')).split(',');
const textCount = Number(values.texts ?? (quick ? 2000 : 10000));
const batchSizes = (values['batch-sizes'] ?? (quick ? '128' : '32,128,512')).split(',').map(Number);
const steps = Number(values.steps ?? (quick ? 3 : 10));
const precisions = values.precisions.split(',');
const device = values.device;
// --device cpu runs the same measurements on the CPU: a smoke test of this script, not a benchmark.
const gpu = device.startsWith('cuda');
const resetPeak = () => gpu && cudaMemory(device, { resetPeak: true });
const peakMiB = () => (gpu ? Math.round(cudaMemory(device).peakAllocatedBytes / 2 ** 20) : null);

const words = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
function lcg(seed) {
  return () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
}
const text = (next, lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo + 1)) }, () => words[Math.floor(next() * words.length)]).join(' ');
// Mixed lengths: 6 to 230 words, about 10 to 300 tokens with the default model's vocabulary.
const makeTexts = (n) => {
  const next = lcg(42);
  return Array.from({ length: n }, () => text(next, 6, 230));
};
// scripts/bench/train.js's pairs, numbered so no two texts are equal.
const makePairs = (n) => {
  const next = lcg(7);
  return Array.from({ length: n }, (_, i) => ({ query: `${i} ${text(next, 5, 15)}`, positive: `${i} ${text(next, 30, 80)}` }));
};

function makeModel(dir, shape, maxSeqLength) {
  const vocab = fs.readFileSync(path.join(ROOT, 'default-model', 'vocab.txt'), 'utf8').split('\n').filter(Boolean);
  return makeRandomBert(dir, { shape, seed: 1, vocab, vocabSize: 30522, maxSeqLength });
}

const isOom = (message) => /out of memory/i.test(String(message));
const round = (x, digits = 1) => (typeof x === 'number' ? +x.toFixed(digits) : x);

/**
 * One side of a training row: samples/s over the timed steps (their mean time) and over the median step, which
 * one slow step (a kernel loaded or chosen on first use, for a new padded length) does not move; peak GPU memory.
 */
function trainSide(r, batchSize) {
  if (r.oom) return { oom: true };
  return { samplesPerSecond: round(r.samplesPerSecond), medianSamplesPerSecond: round(batchSize / median(r.stepSeconds)), peakGpuMiB: r.peakGpuMiB };
}

/** coltrast's samples/s over Python's, by mean and by median step time; null where a side ran out of memory. */
function trainSpeedups(c, p) {
  if (c.oom || p.oom) return { speedup: null, medianSpeedup: null };
  return { speedup: round(c.samplesPerSecond / p.samplesPerSecond, 2), medianSpeedup: round(c.medianSamplesPerSecond / p.medianSamplesPerSecond, 2) };
}

// ---- the children: one coltrast measurement each (`--trial`), or one after another (`--serve-trials`) ----
/** One measurement, `o` its options (parseArgs of OPTIONS); the model is freed however it ends. */
async function trial(o) {
  const batchSize = Number(o['batch-size']);
  if (o.trial === 'coltrast-embed') {
    const texts = JSON.parse(fs.readFileSync(o.data, 'utf8'));
    const enc = await Encoder.load(o.model, { device, dtype: o.dtype });
    try {
      return await embedTrial(enc, texts, batchSize, o.vectors);
    } finally {
      enc.dispose();
    }
  }
  if (o.trial === 'coltrast-train') {
    const pairs = JSON.parse(fs.readFileSync(o.data, 'utf8'));
    const enc = await Encoder.load(o.model, { device });
    try {
      return await trainTrial(enc, pairs, batchSize, o);
    } finally {
      enc.dispose();
    }
  }
  throw new Error(`unknown --trial ${o.trial}`);
}

async function embedTrial(enc, texts, batchSize, vectors) {
  await enc.embed(texts.slice(0, batchSize), { batchSize }); // warm-up
  resetPeak();
  const t0 = performance.now();
  const v = await enc.embed(texts, { batchSize });
  const seconds = (performance.now() - t0) / 1000;
  const peak = peakMiB();
  if (vectors) fs.writeFileSync(vectors, Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength));
  const lengths = (await enc.tokenize(texts)).map((ids) => ids.length);
  return {
    seconds,
    textsPerSecond: texts.length / seconds,
    peakGpuMiB: peak,
    tokens: { mean: lengths.reduce((a, b) => a + b, 0) / lengths.length, min: Math.min(...lengths), max: Math.max(...lengths) },
  };
}

async function trainTrial(enc, pairs, batchSize, o) {
  const n = Number(o.steps ?? 10);
  const trainer = await enc.createTrainer({ learningRate: 2e-5, weightDecay: 0.01, seed: 42, precision: o.precision });
  const options = stepOptions(o.loss, Number(o['mini-batch-size']));
  const batch = (s) => pairs.slice(s * batchSize, (s + 1) * batchSize);
  const prepare = (s) => trainer.prepare(batch(s).map((p) => p.query), batch(s).map((p) => p.positive));
  const times = [];
  let native = 0;
  // --steps 0 (the largest-batch search): one step, timed, its peak the whole step's (first use included).
  if (n === 0) resetPeak();
  try {
    let ahead = prepare(0);
    let last = performance.now();
    for (let s = 0; s <= n; s++) {
      const prepared = await ahead;
      // As train() does: the step queued first, then the next batch's tokenization, whose synchronous part
      // would otherwise delay the step (on 2026-12-05's H100 run this script still did it the other way round).
      const running = trainer.stepPrepared(prepared, options);
      if (s < n) {
        ahead = prepare(s + 1);
        ahead.catch(() => {}); // awaited by the next step, unless this one fails first
      }
      const r = await running;
      const now = performance.now();
      if (s === 0 && n > 0) resetPeak();
      else {
        times.push((now - last) / 1000);
        native += r.seconds;
      }
      last = performance.now();
    }
  } catch (error) {
    if (isOom(error.message)) return { oom: true, error: String(error.message).split('\n')[0] };
    throw error;
  } finally {
    trainer.dispose();
  }
  const seconds = times.reduce((a, b) => a + b, 0);
  return {
    oom: false,
    timedSteps: times.length,
    stepSeconds: times,
    secondsPerStep: seconds / times.length,
    samplesPerSecond: (batchSize * times.length) / seconds,
    nodeOverheadPercent: (100 * (seconds - native)) / seconds,
    peakGpuMiB: peakMiB(),
  };
}

/**
 * --serve-trials: trial() for each line of stdin (a JSON list of its arguments), answering each with a line on stdout:
 * TRIAL_MARKER and { result } or { error }. The CUDA cache is emptied after each, and each result says what GPU memory
 * earlier ones left allocated (allocatedMiBAtStart), which its peak would include.
 */
async function serveTrials() {
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let answer;
    try {
      const { values: o } = parseArgs({ args: JSON.parse(line), options: OPTIONS });
      const allocated = gpu ? cudaMemory(device).allocatedBytes : 0;
      answer = { result: { ...(await trial(o)), allocatedMiBAtStart: Math.round(allocated / 2 ** 20) } };
    } catch (error) {
      answer = { error: String(error?.stack ?? error).slice(0, 3000) };
    }
    if (gpu) cudaMemory(device, { emptyCache: true });
    process.stdout.write(`${TRIAL_MARKER}${JSON.stringify(answer)}\n`);
  }
}
const TRIAL_MARKER = '@@trial ';

// ---- the parent ----
function runJson(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 1 << 26, cwd: ROOT, timeout: 240_000, killSignal: 'SIGKILL' });
  const last = r.stdout.trim().split('\n').pop();
  if (r.status !== 0) {
    if (isOom(r.stderr) || isOom(r.stdout)) return { oom: true, error: 'out of memory (process failed)' };
    throw new Error(`${command} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stderr.slice(-3000)}`);
  }
  return JSON.parse(last);
}
const coltrastProcess = (args) => runJson(process.execPath, [__filename, '--device', device, ...args]);
const BASELINE = path.join(__dirname, 'st_baseline.py');
/** One measurement in a process of its own (the largest-batch search, where an out-of-memory must not linger). */
const pythonProcess = (py, args) => runJson(py, [BASELINE, ...args, '--device', device]);

/**
 * A child process that runs measurements one after another (`st_baseline.py serve`, `compare-gpu.js --serve-trials`),
 * started on first use: run(args) sends one job, a JSON list of its arguments, and resolves with its result (or
 * { oom: true } where it ran out of memory), or rejects with its error. Only stdout lines that start with `marker` are
 * answers; others go to stderr. A job past `timeoutMs` kills the process (the next job starts another); close() ends it.
 */
class LineWorker {
  constructor(name, command, args, marker) {
    Object.assign(this, { name, command, args, marker, child: null, pending: null });
  }

  start() {
    const child = spawn(this.command, this.args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
    const fail = (error) => {
      if (this.child === child) this.child = null;
      const pending = this.pending;
      this.pending = null;
      pending?.reject(error);
    };
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith(this.marker)) return console.error(line);
      const pending = this.pending;
      this.pending = null;
      pending?.resolve(JSON.parse(line.slice(this.marker.length)));
    });
    child.on('error', fail);
    child.stdin.on('error', () => {}); // a write to a process that died: its exit, just below, says so
    child.on('exit', (code, signal) => fail(new Error(`${this.name} exited (${code ?? signal})${child.timedOut ? ` after a job ran past ${child.timedOut / 1000} s` : ''}`)));
    this.child = child;
  }

  async run(args, timeoutMs = 240_000) {
    if (!this.child) this.start();
    const child = this.child;
    const answer = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.timedOut = timeoutMs;
        child.kill('SIGKILL');
      }, timeoutMs);
      this.pending = {
        resolve: (x) => (clearTimeout(timer), resolve(x)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      child.stdin.write(`${JSON.stringify(args)}\n`);
    });
    if (answer.error !== undefined) {
      if (isOom(answer.error)) return { oom: true, error: 'out of memory' };
      throw new Error(`${this.name}: ${args.join(' ')} failed:\n${answer.error}`);
    }
    return answer.result;
  }

  /** Ends the process (its stdin closed, so it exits after the job under way) and waits for it. */
  async close() {
    const child = this.child;
    if (!child) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin.end();
    await exited;
  }
}

async function main() {
  if (values['serve-trials']) return serveTrials();
  if (values.trial) {
    console.log(JSON.stringify(await trial(values)));
    return;
  }
  const info = runtimeInfo();
  if (gpu && !info.cudaAvailable) throw new Error('compare-gpu.js needs a CUDA build of the addon and a GPU (coltrast info)');
  const py = findPython();
  if (!py) throw new Error('no python3 with torch found (set COLTRAST_PYTHON)');
  const check = spawnSync(py, ['-c', 'import sentence_transformers, transformers'], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`${py} cannot import sentence_transformers and transformers:\n${check.stderr}`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-compare-gpu-'));
  const what = values.what.split(',');
  const rows = { embed: [], train: [], largest: [] };
  const log = (s) => console.error(s);
  const gpuName = gpu ? spawnSync(py, ['-c', 'import torch; print(torch.cuda.get_device_name())'], { encoding: 'utf8' }).stdout.trim() : null;
  const result = { date: new Date().toISOString(), device, gpu: gpuName, torch: info.torchVersion, cudnnAttention: info.cudnnAttention, quick, steps, complete: false, rows, errors: [], skipped: [] };
  const save = () => values.json && fs.writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
  const started = Date.now();
  const budget = Number(values['budget-seconds']) * 1000;
  const workers = {
    python: new LineWorker('st_baseline.py serve', py, [BASELINE, 'serve'], '@@st_baseline '),
    coltrast: new LineWorker('compare-gpu.js --serve-trials', process.execPath, [__filename, '--device', device, '--serve-trials'], TRIAL_MARKER),
  };
  const closeWorkers = () => Promise.all(Object.values(workers).map((w) => w.close()));
  // GPU memory an earlier job left allocated would count in this one's peak: each row keeps the figure.
  const noteLeft = (side, r) => r.allocatedMiBAtStart > 0 && log(`  (the ${side} process held ${r.allocatedMiBAtStart} MiB from earlier jobs when this one started)`);
  const python = async (args) => {
    const r = await workers.python.run([...args, '--device', device]);
    noteLeft('Python', r);
    return r;
  };
  const coltrast = async (args) => {
    const r = await workers.coltrast.run(args);
    noteLeft('coltrast', r);
    return r;
  };
  // Runs one measurement unless the budget is spent; records its failure and goes on.
  const measure = async (name, fn) => {
    if (Date.now() - started >= budget) {
      result.skipped.push(name);
      log(`${name}: skipped (past --budget-seconds)`);
      return;
    }
    try {
      await fn();
    } catch (error) {
      result.errors.push({ measurement: name, error: String(error.message ?? error).slice(0, 2000) });
      log(`${name}: FAILED ${String(error.message ?? error).split('\n')[0]}`);
    }
    save();
  };
  try {
    if (what.includes('embed')) {
      const texts = makeTexts(textCount);
      const textsFile = path.join(work, 'texts.json');
      fs.writeFileSync(textsFile, JSON.stringify(texts));
      const batchSize = values['embed-batch-size'];
      for (const shape of shapes) {
        const model = makeModel(path.join(work, `embed-${shape}`), shape, 512);
        for (const dtype of gpu ? ['float32', 'bfloat16'] : ['float32']) await measure(`embed ${shape} ${dtype}`, async () => {
          const ours = path.join(work, 'ours.bin');
          const theirs = path.join(work, 'theirs.bin');
          const c = await coltrast(['--trial', 'coltrast-embed', '--model', model, '--data', textsFile, '--batch-size', batchSize, '--dtype', dtype, '--vectors', ours]);
          // float32 (issue #9's missed target): where the Python side's time goes, kernel by kind (st_baseline.py
          // --profile-kernels, a second encode() under torch.profiler after the timed one).
          const profile = dtype === 'float32' ? ['--profile-kernels'] : [];
          const s = await python(['encode', '--model', model, '--texts', textsFile, '--batch-size', batchSize, '--dtype', dtype, '--vectors', theirs, ...profile]);
          const sOff = dtype === 'float32' ? null : await python(['encode', '--model', model, '--texts', textsFile, '--batch-size', batchSize, '--dtype', dtype, '--no-cudnn-attention']);
          const a = new Float32Array(fs.readFileSync(ours).buffer.slice(0));
          const b = new Float32Array(fs.readFileSync(theirs).buffer.slice(0));
          let maxAbsDiff = a.length === b.length ? 0 : Infinity;
          for (let i = 0; i < a.length && i < b.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[i] - b[i]));
          const row = {
            shape,
            dtype,
            texts: texts.length,
            tokens: c.tokens,
            batchSize: Number(batchSize),
            coltrast: { textsPerSecond: round(c.textsPerSecond), peakGpuMiB: c.peakGpuMiB, allocatedMiBAtStart: c.allocatedMiBAtStart },
            sentenceTransformers: { textsPerSecond: round(s.textsPerSecond), peakGpuMiB: s.peakGpuMiB, version: s.sentenceTransformers, cudnnAttention: s.cudnnAttention, allocatedMiBAtStart: s.allocatedMiBAtStart },
            speedup: round(c.textsPerSecond / s.textsPerSecond, 2),
            ...(sOff
              ? {
                  sentenceTransformersNoCudnn: { textsPerSecond: round(sOff.textsPerSecond), peakGpuMiB: sOff.peakGpuMiB, cudnnAttention: sOff.cudnnAttention },
                  speedupNoCudnn: round(c.textsPerSecond / sOff.textsPerSecond, 2),
                }
              : {}),
            maxAbsDiff,
          };
          if (s.kernels) {
            // coltrast's wall time over the time the Python side's kernels ran: about 1 when coltrast's whole call is
            // the GPU work that sentence-transformers' encode() launches (the same cuBLAS and attention kernels), so
            // that no change of coltrast's host side could make it faster.
            row.sentenceTransformers.kernels = s.kernels;
            if (s.kernels.totalSeconds > 0) row.coltrastWallOverKernels = round(texts.length / c.textsPerSecond / s.kernels.totalSeconds, 2);
          }
          rows.embed.push(row);
          log(`embed ${shape} ${dtype}: coltrast ${row.coltrast.textsPerSecond} texts/s, sentence-transformers ${row.sentenceTransformers.textsPerSecond} (x${row.speedup}), max |diff| ${maxAbsDiff.toExponential(2)}`);
        });
      }
    }
    const trainShape = values['train-shape'];
    const trainModel = what.some((w) => w === 'train' || w === 'largest') ? makeModel(path.join(work, `train-${trainShape}`), trainShape, 128) : undefined;
    const pairsFile = (n) => {
      const file = path.join(work, `pairs-${n}.json`);
      if (!fs.existsSync(file)) fs.writeFileSync(file, JSON.stringify(makePairs(n)));
      return file;
    };
    if (what.includes('train')) {
      for (const precision of precisions) {
        for (const loss of ['coltrast', 'contrastive']) {
          for (const batchSize of batchSizes) await measure(`train ${loss} ${precision} batch ${batchSize}`, async () => {
            const data = pairsFile(batchSize * (steps + 1));
            const common = ['--model', trainModel, '--data', data, '--batch-size', String(batchSize), '--steps', String(steps), '--precision', precision];
            const c = await coltrast(['--trial', 'coltrast-train', '--loss', loss, ...common]);
            const pyArgs = ['train', '--loss', loss === 'coltrast' ? 'coltrast' : 'mnrl', '--loop', loss === 'coltrast' ? 'manual' : 'trainer', ...common];
            const p = await python(pyArgs);
            const pOff = precision === 'float32' ? null : await python([...pyArgs, '--no-cudnn-attention']);
            const coltrastSide = trainSide(c, batchSize), pythonSide = trainSide(p, batchSize);
            const pythonOff = pOff ? trainSide(pOff, batchSize) : null;
            const row = {
              shape: trainShape,
              loss,
              precision,
              batchSize,
              coltrast: { ...coltrastSide, ...(c.oom ? {} : { nodeOverheadPercent: round(c.nodeOverheadPercent, 2) }), allocatedMiBAtStart: c.allocatedMiBAtStart },
              python: { ...pythonSide, baseline: p.side, cudnnAttention: p.cudnnAttention, allocatedMiBAtStart: p.allocatedMiBAtStart },
              ...trainSpeedups(coltrastSide, pythonSide),
              ...(pythonOff
                ? { pythonNoCudnn: { ...pythonOff, cudnnAttention: pOff.cudnnAttention }, speedupNoCudnn: trainSpeedups(coltrastSide, pythonOff).speedup }
                : {}),
            };
            rows.train.push(row);
            log(`train ${loss} ${precision} batch ${batchSize}: coltrast ${JSON.stringify(row.coltrast)}, python ${JSON.stringify(row.python)}`);
          });
        }
      }
    }
    // Off under --quick, whose few minutes go to the largest-batch search.
    const cachedBatch = Number(values['cached-batch-size'] ?? (quick ? 0 : 4096));
    if (what.includes('train') && cachedBatch > 0) {
      const precision = precisions[0];
      const mini = values['largest-mini-batch-size'];
      await measure(`train contrastive cached ${precision} batch ${cachedBatch}`, async () => {
        const cachedSteps = Math.min(steps, 3);
        const common = ['--model', trainModel, '--data', pairsFile(cachedBatch * (cachedSteps + 1)), '--batch-size', String(cachedBatch), '--steps', String(cachedSteps), '--precision', precision, '--mini-batch-size', mini];
        const c = await coltrast(['--trial', 'coltrast-train', '--loss', 'contrastive', ...common]);
        const p = await python(['train', '--loss', 'cached-mnrl', '--loop', 'manual', ...common]);
        const coltrastSide = trainSide(c, cachedBatch), pythonSide = trainSide(p, cachedBatch);
        const row = {
          shape: trainShape,
          loss: 'contrastive',
          precision,
          batchSize: cachedBatch,
          miniBatchSize: Number(mini),
          coltrast: { ...coltrastSide, ...(c.oom ? {} : { nodeOverheadPercent: round(c.nodeOverheadPercent, 2) }), allocatedMiBAtStart: c.allocatedMiBAtStart },
          python: { ...pythonSide, baseline: p.side },
          ...trainSpeedups(coltrastSide, pythonSide),
        };
        rows.train.push(row);
        log(`train contrastive cached ${precision} batch ${cachedBatch}: coltrast ${JSON.stringify(row.coltrast)}, python ${JSON.stringify(row.python)}`);
      });
    }
    // The largest-batch search runs with no worker holding GPU memory.
    await closeWorkers();
    if (what.includes('largest')) {
      const limit = Number(values['max-batch']);
      // Doubling from `from` (a batch known to fit, or 256) to --max-batch. A trial is not started when it would
      // end past --budget-seconds (one call of the device tool has 10 minutes), by the guess of its wall time:
      // the last trial's times 2.5 (twice the texts, and the late-interaction loss's all-pairs term grows
      // faster), or for the first, `firstSeconds` (a trial of the same batch in an earlier search).
      const largest = (run, from = 256, firstSeconds = 0) => {
        let fits = 0;
        let peak;
        let budgetSpent = false;
        let guess = firstSeconds;
        const trialSeconds = {};
        for (let b = from; b <= limit; b *= 2) {
          if (Date.now() - started + 1000 * guess >= budget) {
            budgetSpent = true;
            log(`  batch ${b}: not tried (the budget would end during it)`);
            break;
          }
          const t0 = Date.now();
          const r = run(b);
          const seconds = (Date.now() - t0) / 1000;
          trialSeconds[b] = round(seconds);
          guess = 2.5 * seconds;
          if (r.oom) {
            // Where even the starting batch does not fit, the search starts over from 256.
            if (fits === 0 && b === from && from > 256) return largest(run, 256);
            break;
          }
          fits = b;
          peak = r.peakGpuMiB;
          log(`  batch ${b}: fits (peak ${peak} MiB, ${round(r.secondsPerStep, 2)} s/step, trial ${round(seconds)} s)`);
        }
        return { largestBatch: fits, peakGpuMiB: peak, searchedFrom: from, reachedLimit: fits === limit, stoppedByBudget: budgetSpent, trialSeconds };
      };
      // One step a trial (--steps 0): whether it fits, and its peak; a warm-up step and a timed one took twice as long.
      const args = (b) => ['--model', trainModel, '--data', pairsFile(b), '--batch-size', String(b), '--steps', '0', '--precision', 'bfloat16'];
      const mini = values['largest-mini-batch-size'];
      const row = { shape: trainShape, loss: 'coltrast', precision: 'bfloat16', miniBatchSize: Number(mini), coltrast: null, coltrastCached: null, python: null, ratio: null, ratioCached: null };
      rows.largest.push(row);
      const ratios = () => {
        if (!row.python?.largestBatch) return;
        if (row.coltrast?.largestBatch) row.ratio = round(row.coltrast.largestBatch / row.python.largestBatch, 2);
        if (row.coltrastCached?.largestBatch) row.ratioCached = round(row.coltrastCached.largestBatch / row.python.largestBatch, 2);
      };
      await measure('largest batch, python', () => {
        log('largest batch, python (eager ColTrast):');
        row.python = largest((b) => pythonProcess(py, ['train', '--loss', 'coltrast', '--loop', 'manual', ...args(b)]));
      });
      await measure('largest batch, coltrast', () => {
        log('largest batch, coltrast:');
        row.coltrast = largest((b) => coltrastProcess(['--trial', 'coltrast-train', '--loss', 'coltrast', ...args(b)]));
        ratios();
      });
      await measure(`largest batch, coltrast with miniBatchSize ${mini}`, () => {
        log(`largest batch, coltrast with gradient caching (miniBatchSize ${mini}):`);
        // Gradient caching needs no more memory than the plain step, so its search starts at the plain step's
        // largest batch (four trials fewer on 2026-12-05's H100 numbers).
        const from = Math.max(256, row.coltrast?.largestBatch ?? 0);
        const run = (b) => coltrastProcess(['--trial', 'coltrast-train', '--loss', 'coltrast', '--mini-batch-size', mini, ...args(b)]);
        row.coltrastCached = largest(run, from, row.coltrast?.trialSeconds?.[from] ?? 0);
        ratios();
      });
    }
  } finally {
    await closeWorkers();
    fs.rmSync(work, { recursive: true, force: true });
  }
  result.complete = true;
  save();
  console.log(JSON.stringify(result, null, 2));
  if (result.errors.length) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
