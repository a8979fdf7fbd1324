// What the benchmarks against sentence-transformers share (cross-encoder.js, architectures.js): the Python that has
// it, running one of scripts/bench/python/*.py and reading the JSON line it prints, and seeded texts from the
// example sentences.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..', '..');

/** $COLTRAST_ST_PYTHON, else build/pyenv/bin/python (scripts/setup.sh makes it: PyTorch 2.x and sentence-transformers). */
function stPython() {
  const python = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
  if (!fs.existsSync(python)) throw new Error(`no ${python}: run scripts/setup.sh, or set COLTRAST_ST_PYTHON`);
  return python;
}

/** Runs `python args` and returns the JSON of its last stdout line (null when it prints nothing); throws on failure. */
function runPython(python, args) {
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${python} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout.trim() ? JSON.parse(r.stdout.trim().split('\n').pop()) : null;
}

/** `text(lo, hi)`: a text of lo to hi-1 words drawn from the example sentences, from one seeded sequence. */
function wordSampler(seed = 42) {
  const words = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').toLowerCase().split(/\s+/).filter(Boolean);
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  return (lo, hi) => Array.from({ length: lo + Math.floor(next() * (hi - lo)) }, () => words[Math.floor(next() * words.length)]).join(' ');
}

/** A float32 file as written by numpy's tofile(). */
function readFloat32(file) {
  const bytes = fs.readFileSync(file);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/**
 * Runs both sides `rounds` times, alternating: `coltrast()` (timed here) resolves with its outputs, `python()` returns
 * the Python script's JSON ({ seconds, ... }) and its outputs. Returns each side's fastest round (on a shared
 * machine the least disturbed), every round, and the largest difference between the two sides' outputs.
 */
async function alternate(rounds, coltrast, python) {
  const all = [];
  let ours;
  let theirs;
  for (let round = 0; round < rounds; round++) {
    const t0 = process.hrtime.bigint();
    ours = await coltrast();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    let py;
    ({ result: py, outputs: theirs } = python());
    all.push({ coltrast: seconds, python: py });
    console.error(`round ${round + 1}: coltrast ${seconds.toFixed(2)} s, sentence-transformers ${py.seconds.toFixed(2)} s`);
  }
  let maxDiff = 0;
  for (let i = 0; i < theirs.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i]));
  return {
    coltrast: Math.min(...all.map((r) => r.coltrast)),
    python: all.reduce((a, r) => (r.python.seconds < a.seconds ? r.python : a), all[0].python),
    rounds: all,
    maxDiff,
  };
}

/**
 * The result JSON and the Markdown table both benchmarks print: `count` items (`unit`, e.g. 'pairs') per run,
 * `compared` from alternate(), `extra` fields for the JSON.
 */
function report({ unit, count, compared, info, threads, extra, json, summary }) {
  const rate = `${unit}PerSecond`;
  const { coltrast: best, python: bestPy } = compared;
  const coltrastSide = `coltrast (libtorch ${info.torchVersion})`;
  const pythonSide = `sentence-transformers ${bestPy.sentenceTransformers} (torch ${bestPy.torch})`;
  const result = {
    date: new Date().toISOString(),
    cpu: `${os.cpus()[0]?.model} (${os.cpus().length} cores)`,
    threads,
    versions: { libtorch: info.torchVersion, blas: info.blas, torchPython: bestPy.torch, sentenceTransformers: bestPy.sentenceTransformers },
    ...extra,
    coltrast: { seconds: best, [rate]: count / best, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) },
    sentenceTransformers: { seconds: bestPy.seconds, [rate]: bestPy[rate], peakRssMiB: bestPy.peakRssMiB },
    ratio: bestPy.seconds / best,
    maxAbsDifference: compared.maxDiff,
    rows: [
      { side: coltrastSide, [rate]: count / best, seconds: best },
      { side: pythonSide, [rate]: bestPy[rate], seconds: bestPy.seconds },
    ],
    rounds: compared.rounds,
  };
  if (json) fs.writeFileSync(json, JSON.stringify(result, null, 2));
  console.log(`| side | seconds | ${unit}/s | peak RSS MiB |\n|---|---|---|---|`);
  console.log(`| ${coltrastSide} | ${best.toFixed(2)} | ${result.coltrast[rate].toFixed(2)} | ${result.coltrast.peakRssMiB} |`);
  console.log(`| ${pythonSide} | ${bestPy.seconds.toFixed(2)} | ${bestPy[rate].toFixed(2)} | ${bestPy.peakRssMiB} |`);
  console.log(`\n${summary}, ${threads} threads; sentence-transformers' time / coltrast's: ${result.ratio.toFixed(2)}; max |difference| ${compared.maxDiff.toExponential(2)}`);
  return result;
}

/** A process's resident memory in MiB (VmRSS; 'self': this one's), 0 once it is gone. */
function residentMiB(pid = 'self') {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

module.exports = { ROOT, stPython, runPython, wordSampler, readFloat32, alternate, report, residentMiB };
