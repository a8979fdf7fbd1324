// Global orthogonal regularization (train({ loss: { gor } }), sentence-transformers' GlobalOrthogonalRegularizationLoss):
// a run with it spreads the model's vectors of unrelated texts further apart than the same run without it, its settings
// reach the step and the history, and what it cannot regularize is refused by name. The loss equals
// sentence-transformers' MultipleNegativesRankingLoss plus GlobalOrthogonalRegularizationLoss on a batch in three
// settings (test/python-interop.test.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, train } from '../lib';
import { CLI, FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

/** The mean and the mean square of the cosine similarities of every two different texts of `texts` by `model`. */
async function spread(model: string, texts: string[]): Promise<{ mean: number; square: number }> {
  const encoder = await Encoder.load(model, { device: 'cpu' });
  try {
    const v = await encoder.embed(texts);
    const [n, width] = v.dims;
    let sum = 0;
    let squares = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        if (i === j) continue;
        let s = 0;
        for (let k = 0; k < width; k++) s += v.data[i * width + k] * v.data[j * width + k];
        sum += s;
        squares += s * s;
      }
    }
    return { mean: sum / (n * (n - 1)), square: squares / (n * (n - 1)) };
  } finally {
    encoder.dispose();
  }
}

test('a run with global orthogonal regularization spreads the vectors of unrelated texts further than the same run without it', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(160, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const texts = wordDataset(60, 99).map((p) => p.positive);
  const base = { model: FIXTURE, data, epochs: 3, batchSize: 16, learningRate: 3e-3, device: 'cpu' as const, checkpointEvery: 0, seed: 4, valSplit: 0 };
  await train({ ...base, output: path.join(dir, 'plain'), loss: { contrastiveWeight: 1, lateInteractionWeight: 0 } });
  const gor = await train({ ...base, output: path.join(dir, 'gor'), loss: { contrastiveWeight: 1, lateInteractionWeight: 0, gor: { meanWeight: 5, secondMomentWeight: 5 } } });
  const [start, plain, spreadOut] = [await spread(FIXTURE, texts), await spread(path.join(dir, 'plain'), texts), await spread(path.join(dir, 'gor'), texts)];
  t.log(`mean cosine of unrelated texts: start ${start.mean.toFixed(3)}, plain ${plain.mean.toFixed(3)}, with GOR ${spreadOut.mean.toFixed(3)}; mean square ${start.square.toFixed(3)}, ${plain.square.toFixed(3)}, ${spreadOut.square.toFixed(3)}`);
  t.true(spreadOut.mean < plain.mean - 0.05, `mean cosine: plain ${plain.mean}, with GOR ${spreadOut.mean}`);
  t.true(spreadOut.square < plain.square, `mean square: plain ${plain.square}, with GOR ${spreadOut.square}`);
  const history = JSON.parse(fs.readFileSync(path.join(dir, 'gor', 'training_history.json'), 'utf8'));
  t.like(history.config.step, { gorMeanWeight: 5, gorSecondMomentWeight: 5, gorAggregation: 'mean' });
  // Each step reports the regularizer, falling as the vectors spread.
  const steps = gor.history.steps;
  t.true(steps.every((step) => step.regularizer! > 0), 'every step reports the regularizer');
  t.true(steps[steps.length - 1].regularizer! < steps[0].regularizer! / 2, `regularizer ${steps[0].regularizer} → ${steps[steps.length - 1].regularizer}`);
});

test('what global orthogonal regularization cannot regularize is refused by name; coltrast train --gor', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(40, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const base = { model: FIXTURE, data, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 8 };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  await refused({ ...base, multiVector: { dimension: 8 }, loss: { gor: true } }, /options\.loss\.gor spreads a single-vector model's pooled vectors: options\.multiVector is for other training/);
  await refused({ ...base, sparse: true, loss: { gor: true } }, /options\.sparse is for other training/);
  await refused({ ...base, loss: { gor: { meanWeight: 0, secondMomentWeight: 0 } } }, /options\.loss\.gor must be at least one of meanWeight and secondMomentWeight above 0/);
  await refused({ ...base, loss: { gor: { aggregation: 'max' as never } } }, /options\.loss\.gor\.aggregation must be one of 'mean', 'sum'/);
  await refused({ ...base, loss: { gor: { meanWeight: -1 } } }, /options\.loss\.gor\.meanWeight must be a number >= 0/);
  await refused({ ...base, loss: { gor: { weight: 1 } as never } }, /options\.loss\.gor/);

  const run = spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', data, '--output', path.join(dir, 'cli'), '--epochs', '1', '--batch-size', '8', '--device', 'cpu', '--gor', '--json'], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr);
  t.like(JSON.parse(fs.readFileSync(path.join(dir, 'cli', 'training_history.json'), 'utf8')).config.step, { gorMeanWeight: 1, gorSecondMomentWeight: 1, gorAggregation: 'mean' });
});
