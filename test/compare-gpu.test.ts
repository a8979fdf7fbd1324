// scripts/bench/python/compare-gpu.js only measures something on the accelerator machine, where
// sentence-transformers is installed. Its plumbing (child processes, arguments, JSON, the largest-batch
// search, the time budget) runs here on the CPU against a stand-in for sentence-transformers
// (test/fixtures/st-stand-in), so that a session with a few minutes of GPU time does not spend them on a
// broken script. The numbers of such a run mean nothing and are not checked.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURE, tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch']).status === 0);
const withPython = PYTHON ? test : test.skip;
const why = PYTHON ? '' : ' [skipped: no python3 with torch]';

withPython(`compare-gpu.js runs end to end on the CPU against a stand-in for sentence-transformers${why}`, (t) => {
  const out = path.join(tempDir(), 'compare.json');
  const r = spawnSync(
    process.execPath,
    [
      path.join(ROOT, 'scripts', 'bench', 'python', 'compare-gpu.js'),
      '--device', 'cpu', '--shapes', 'tiny', '--train-shape', 'tiny', '--texts', '40', '--embed-batch-size', '16',
      '--batch-sizes', '8', '--steps', '1', '--precisions', 'bfloat16', '--max-batch', '256', '--largest-mini-batch-size', '16', '--cached-batch-size', '16', '--json', out,
    ],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, COLTRAST_PYTHON: PYTHON, PYTHONPATH: path.join(ROOT, 'test', 'fixtures', 'st-stand-in') } },
  );
  t.is(r.status, 0, r.stderr.slice(-3000));
  const result = JSON.parse(fs.readFileSync(out, 'utf8'));
  t.true(result.complete);
  t.deepEqual(result.errors, []);
  t.deepEqual(result.skipped, []);
  t.deepEqual(result.rows.embed.map((e: any) => [e.shape, e.dtype, e.texts]), [['tiny', 'float32', 40]]);
  t.true(result.rows.embed.every((e: any) => e.coltrast.textsPerSecond > 0 && e.sentenceTransformers.textsPerSecond > 0 && Number.isFinite(e.maxAbsDiff)));
  t.deepEqual(result.rows.train.map((e: any) => [e.loss, e.precision, e.batchSize, e.miniBatchSize]), [
    ['coltrast', 'bfloat16', 8, undefined],
    ['contrastive', 'bfloat16', 8, undefined],
    ['contrastive', 'bfloat16', 16, 16],
  ]);
  for (const row of result.rows.train) {
    t.true(row.coltrast.samplesPerSecond > 0 && row.python.samplesPerSecond > 0, JSON.stringify(row));
    t.true(row.coltrast.medianSamplesPerSecond > 0 && row.python.medianSamplesPerSecond > 0, JSON.stringify(row));
    t.is(row.medianSpeedup, +(row.coltrast.medianSamplesPerSecond / row.python.medianSamplesPerSecond).toFixed(2));
    t.true(row.coltrast.nodeOverheadPercent >= 0 && row.coltrast.nodeOverheadPercent < 100);
  }
  // bfloat16 rows time the Python side a second time with cuDNN's attention off (st_baseline.py --no-cudnn-attention).
  for (const row of result.rows.train.slice(0, 2)) {
    t.true(row.pythonNoCudnn.samplesPerSecond > 0, JSON.stringify(row));
    t.is(row.speedupNoCudnn, +(row.coltrast.samplesPerSecond / row.pythonNoCudnn.samplesPerSecond).toFixed(2));
  }
  t.is(result.rows.embed[0].sentenceTransformersNoCudnn, undefined, 'float32 has no cuDNN attention to turn off');
  // float32 rows profile a second encode() (st_baseline.py --profile-kernels): on the CPU, the aten operators' self
  // times by kind, matrix products among them; coltrast's wall time over their sum.
  const kernels = result.rows.embed[0].sentenceTransformers.kernels;
  t.regex(kernels.source, /CPU/, JSON.stringify(kernels));
  t.true(kernels.events > 0 && kernels.seconds.matmul > 0 && kernels.wallSeconds > 0, JSON.stringify(kernels));
  const sum = Object.values(kernels.seconds as Record<string, number>).reduce((a, b) => a + b, 0);
  t.true(Math.abs(kernels.totalSeconds - sum) <= 3e-4, `${kernels.totalSeconds} against ${sum} (each rounded to 1e-4)`);
  t.true(result.rows.embed[0].coltrastWallOverKernels > 0);
  // One process a side ran these (st_baseline.py serve, compare-gpu.js --serve-trials); on the CPU there is no GPU
  // memory to leave behind.
  t.deepEqual(result.rows.train.slice(0, 2).map((row: any) => [row.coltrast.allocatedMiBAtStart, row.python.allocatedMiBAtStart]), [[0, 0], [0, 0]]);
  t.is(result.rows.embed[0].coltrast.allocatedMiBAtStart, 0);
  t.regex(result.rows.train[0].python.baseline, /eager ColTrast/);
  t.regex(result.rows.train[1].python.baseline, /MNRL \(trainer\)/);
  t.regex(result.rows.train[2].python.baseline, /CachedMNRL, mini-batch 16 \(manual\)/);
  const [largest] = result.rows.largest;
  t.is(largest.coltrast.largestBatch, 256, 'doubling from 256 up to --max-batch');
  t.true(largest.coltrast.reachedLimit);
  t.is(largest.python.largestBatch, 256);
  t.is(largest.coltrastCached.largestBatch, 256, 'gradient caching (miniBatchSize) measured too');
  t.is(largest.miniBatchSize, 16);
  t.is(largest.ratioCached, 1);
});

withPython(`compare-gpu.js skips what would start after its time budget and still writes its JSON${why}`, (t) => {
  const out = path.join(tempDir(), 'compare.json');
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, 'scripts', 'bench', 'python', 'compare-gpu.js'), '--device', 'cpu', '--what', 'embed,train', '--shapes', 'tiny', '--train-shape', 'tiny', '--texts', '20', '--batch-sizes', '8', '--steps', '1', '--precisions', 'float32', '--cached-batch-size', '16', '--budget-seconds', '0', '--json', out],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, COLTRAST_PYTHON: PYTHON, PYTHONPATH: path.join(ROOT, 'test', 'fixtures', 'st-stand-in') } },
  );
  t.is(r.status, 0, r.stderr.slice(-3000));
  const result = JSON.parse(fs.readFileSync(out, 'utf8'));
  t.true(result.complete);
  t.deepEqual(result.skipped, ['embed tiny float32', 'train coltrast float32 batch 8', 'train contrastive float32 batch 8', 'train contrastive cached float32 batch 16']);
  t.deepEqual(result.rows.embed, []);
});

withPython(`st_baseline.py serve answers one job a line in one process: a failed job's error goes back and the next job runs${why}`, (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.json');
  fs.writeFileSync(texts, JSON.stringify(['a first text', 'the second one', 'three']));
  const encode = (file: string) => ['encode', '--model', FIXTURE, '--texts', file, '--batch-size', '2', '--device', 'cpu'];
  const jobs = [encode(path.join(dir, 'missing.json')), encode(texts), ['encode', '--texts', texts], encode(texts)];
  const r = spawnSync(PYTHON!, [path.join(ROOT, 'scripts', 'bench', 'python', 'st_baseline.py'), 'serve'], {
    input: jobs.map((j) => `${JSON.stringify(j)}\n`).join(''),
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: path.join(ROOT, 'test', 'fixtures', 'st-stand-in') },
  });
  t.is(r.status, 0, r.stderr.slice(-3000));
  const answers = r.stdout.split('\n').filter((l) => l.startsWith('@@st_baseline ')).map((l) => JSON.parse(l.slice('@@st_baseline '.length)));
  t.is(answers.length, 4);
  t.regex(answers[0].error, /FileNotFoundError.*missing\.json/s);
  t.is(answers[1].result.texts, 3);
  t.true(answers[1].result.textsPerSecond > 0);
  t.regex(answers[2].error, /exited \(2\)/, 'an argparse error (no --model) is that job\'s answer');
  t.deepEqual(answers[3].result.dimension, answers[1].result.dimension);
});

test('compare-gpu.js --serve-trials answers one coltrast measurement a line in one process: an error goes back and the next runs', (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.json');
  fs.writeFileSync(texts, JSON.stringify(['a first text', 'the second one', 'three']));
  const embed = ['--trial', 'coltrast-embed', '--model', FIXTURE, '--data', texts, '--batch-size', '2'];
  const jobs = [['--trial', 'no-such-trial'], embed, ['--trial', 'coltrast-embed', '--model', path.join(dir, 'missing'), '--data', texts, '--batch-size', '2'], embed];
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'bench', 'python', 'compare-gpu.js'), '--device', 'cpu', '--serve-trials'], {
    input: jobs.map((j) => `${JSON.stringify(j)}\n`).join(''),
    encoding: 'utf8',
  });
  t.is(r.status, 0, r.stderr.slice(-3000));
  const answers = r.stdout.split('\n').filter((l) => l.startsWith('@@trial ')).map((l) => JSON.parse(l.slice('@@trial '.length)));
  t.is(answers.length, 4);
  t.regex(answers[0].error, /unknown --trial no-such-trial/);
  t.true(answers[1].result.textsPerSecond > 0);
  t.is(answers[1].result.allocatedMiBAtStart, 0);
  t.regex(answers[2].error, /missing/);
  t.deepEqual(answers[3].result.tokens, answers[1].result.tokens);
});
