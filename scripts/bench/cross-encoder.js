#!/usr/bin/env node
// Re-ranking throughput: coltrast's CrossEncoder.predict() against sentence-transformers' CrossEncoder.predict()
// on the same random-weight cross-encoder (a BERT of a real shape with a seeded classification head, written
// by scripts/bench/python/cross_encoder.py), the same (query, document) pairs, batch size and thread count.
// Both timings are whole predict() calls: tokenizing the pairs, sorting them by length, the forward passes and
// the activation. Each side runs --rounds times, alternating, after one warm-up batch; each side's fastest
// round is reported. The scores of the two sides are compared.
//
//   node scripts/bench/cross-encoder.js [--shape minilm] [--pairs 500] [--batch-size 32] [--threads 2]
//       [--rounds 2] [--json out.json]
//
// Python: $COLTRAST_ST_PYTHON, else build/pyenv/bin/python (scripts/setup.sh makes it: PyTorch 2.x and
// sentence-transformers). coltrast runs on whichever addon loads (Debian's libtorch 1.13 by default;
// COLTRAST_BINARY=cpu COLTRAST_PYTHON=build/pyenv/bin/python for the prebuild on the same PyTorch 2.x).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const { CrossEncoder, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'minilm' },
    pairs: { type: 'string', default: '500' },
    'batch-size': { type: 'string', default: '32' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const PYTHON = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const SCRIPT = path.join(__dirname, 'python', 'cross_encoder.py');

// Queries of 5-15 words and documents of 30-120, from the example sentences, seeded.
function makePairs(n) {
  const words = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
  let seed = 42;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const text = (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo)) }, () => words[Math.floor(next() * words.length)]).join(' ');
  return Array.from({ length: n }, () => [text(5, 15), text(30, 120)]);
}

function python(args) {
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${PYTHON} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout.trim() ? JSON.parse(r.stdout.trim().split('\n').pop()) : null;
}

async function main() {
  if (!fs.existsSync(PYTHON)) throw new Error(`no ${PYTHON}: run scripts/setup.sh, or set COLTRAST_ST_PYTHON`);
  const threads = Number(values.threads);
  const batchSize = Number(values['batch-size']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-cross-encoder-'));
  const bert = makeRandomBert(path.join(work, 'bert'), { shape: values.shape, seed: 1 });
  const model = path.join(work, 'cross-encoder');
  python([SCRIPT, 'make', bert, model]);
  const pairs = makePairs(Number(values.pairs));
  const pairsFile = path.join(work, 'pairs.json');
  fs.writeFileSync(pairsFile, JSON.stringify(pairs));

  const ce = await CrossEncoder.load(model, { device: 'cpu', threads });
  await ce.predict(pairs.slice(0, batchSize), { batchSize });
  const rounds = [];
  let ours;
  let theirs;
  for (let round = 0; round < Number(values.rounds); round++) {
    const t0 = process.hrtime.bigint();
    ours = await ce.predict(pairs, { batchSize });
    const coltrast = Number(process.hrtime.bigint() - t0) / 1e9;
    const scoresFile = path.join(work, 'scores.bin');
    const py = python([SCRIPT, 'bench', model, pairsFile, '--threads', String(threads), '--batch-size', String(batchSize), '--scores', scoresFile]);
    const bytes = fs.readFileSync(scoresFile);
    theirs = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    rounds.push({ coltrast, python: py });
    console.error(`round ${round + 1}: coltrast ${coltrast.toFixed(2)} s, sentence-transformers ${py.seconds.toFixed(2)} s`);
  }
  ce.dispose();
  let maxDiff = 0;
  for (let i = 0; i < pairs.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours.data[i] - theirs[i]));
  const best = Math.min(...rounds.map((r) => r.coltrast));
  const bestPy = rounds.reduce((a, r) => (r.python.seconds < a.seconds ? r.python : a), rounds[0].python);
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    cpu: `${os.cpus()[0]?.model} (${os.cpus().length} cores)`,
    threads,
    torch: info.torchVersion,
    versions: { libtorch: info.torchVersion, blas: info.blas, torchPython: bestPy.torch, sentenceTransformers: bestPy.sentenceTransformers },
    shape: values.shape,
    pairs: pairs.length,
    batchSize,
    coltrast: { seconds: best, pairsPerSecond: pairs.length / best, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) },
    sentenceTransformers: { seconds: bestPy.seconds, pairsPerSecond: bestPy.pairsPerSecond, peakRssMiB: bestPy.peakRssMiB },
    ratio: bestPy.seconds / best,
    maxAbsScoreDifference: maxDiff,
    rows: [
      { side: `coltrast (libtorch ${info.torchVersion})`, pairsPerSecond: pairs.length / best, seconds: best },
      { side: `sentence-transformers ${bestPy.sentenceTransformers} (torch ${bestPy.torch})`, pairsPerSecond: bestPy.pairsPerSecond, seconds: bestPy.seconds },
    ],
    rounds,
  };
  fs.rmSync(work, { recursive: true, force: true });
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  console.log(`| side | seconds | pairs/s | peak RSS MiB |\n|---|---|---|---|`);
  console.log(`| coltrast (libtorch ${info.torchVersion}) | ${best.toFixed(2)} | ${result.coltrast.pairsPerSecond.toFixed(1)} | ${result.coltrast.peakRssMiB} |`);
  console.log(`| sentence-transformers ${bestPy.sentenceTransformers} (torch ${bestPy.torch}) | ${bestPy.seconds.toFixed(2)} | ${bestPy.pairsPerSecond.toFixed(1)} | ${bestPy.peakRssMiB} |`);
  console.log(`\n${values.shape}, ${pairs.length} pairs, batch ${batchSize}, ${threads} threads; sentence-transformers' time / coltrast's: ${result.ratio.toFixed(2)}; max |score difference| ${maxDiff.toExponential(2)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
