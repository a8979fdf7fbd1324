// What the fine-tuning quality benchmarks (matryoshka.js, adaptive-layers.js, mining.js) share: their common flags (--model, --source,
// --epochs, --batch-size, --learning-rate, --pairs, --work, --out, --seed) beside each one's own, and the data: the
// default model's pretraining pairs (scripts/pretrain/data.js: Debian descriptions and manual pages, split by
// package), built into --work when absent, and the held-out BEIR folder of the chosen source.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');

/** Parses the flags (the common ones and `own`, { name: default }) and reads the training pairs. */
function fineTuneBench(name, own) {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'default' },
      source: { type: 'string', default: 'man' },
      epochs: { type: 'string', default: '1' },
      'batch-size': { type: 'string', default: '32' },
      'learning-rate': { type: 'string', default: '5e-5' },
      pairs: { type: 'string', default: '0' },
      work: { type: 'string', default: path.join(ROOT, 'models', 'matryoshka-bench') },
      out: { type: 'string', default: path.join(ROOT, 'bench-results', `${name}.json`) },
      seed: { type: 'string', default: '42' },
      ...Object.fromEntries(Object.entries(own).map(([flag, fallback]) => [flag, { type: 'string', default: fallback }])),
    },
  });
  const work = path.resolve(values.work);
  fs.mkdirSync(work, { recursive: true });
  const dataDir = path.join(work, 'data');
  if (!fs.existsSync(path.join(dataDir, values.source, 'train.jsonl'))) {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'pretrain', 'data.js'), dataDir], { stdio: 'inherit' });
  }
  const lines = fs.readFileSync(path.join(dataDir, values.source, 'train.jsonl'), 'utf8').trim().split('\n');
  let pairs = lines.map((l) => JSON.parse(l)).map(({ query, positive }) => ({ query, positive }));
  if (Number(values.pairs) > 0) pairs = pairs.slice(0, Number(values.pairs));
  return { values, work, pairs, testDir: path.join(dataDir, values.source, 'test') };
}

/**
 * Fine-tunes the bench's model on `pairs` into `<work>/<name>` with `loss` (the bench's epochs, batch size, learning
 * rate and seed; no validation split, no checkpoints); returns the folder and the seconds it took.
 */
async function fineTune({ values, work, pairs }, name, loss) {
  const { train } = require('../../dist');
  const output = path.join(work, name);
  const started = Date.now();
  await train({
    model: values.model, data: pairs, output, epochs: Number(values.epochs), batchSize: Number(values['batch-size']), learningRate: Number(values['learning-rate']),
    valSplit: 0, seed: Number(values.seed), device: 'cpu', checkpointEvery: 0, progressBar: process.stderr.isTTY, loss,
  });
  return { output, seconds: (Date.now() - started) / 1000 };
}

module.exports = { fineTuneBench, fineTune };
