// MegaBatchMarginLoss (train({ loss: { megaBatchMargin } }), sentence-transformers'): a run on pairs raises held-out
// retrieval, gradient caching (its mini-batched version) gives the plain step's losses and gradients, the command line
// and the card name it, and what it cannot train on is refused by name. The loss equals sentence-transformers' on a
// batch with its default margins and others (test/python-interop.test.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, train } from '../lib';
import { CLI, FIXTURE, STEP, dropoutOff, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

test('train({ loss: { megaBatchMargin } }) on pairs raises held-out retrieval; the history and the card name the loss', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(200, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const output = path.join(dir, 'out');
  const result = await train({ model: FIXTURE, data, output, epochs: 4, batchSize: 16, learningRate: 3e-3, loss: { megaBatchMargin: true }, device: 'cpu', checkpointEvery: 0, seed: 4 });
  t.log(`held-out MRR@10 ${result.before!['mrr@10'].toFixed(3)} → ${result.after!['mrr@10'].toFixed(3)}`);
  t.true(result.after!['mrr@10'] > result.before!['mrr@10'] + 0.1, `MRR@10 ${result.before!['mrr@10']} → ${result.after!['mrr@10']}`);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.like(history.config.step, { megaBatchMargin: true, positiveMargin: 0.8, negativeMargin: 0.3, contrastiveWeight: 0, lateInteractionWeight: 0 });
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /- Loss: MegaBatchMarginLoss on \(anchor, positive\) pairs, positive margin 0\.8, negative margin 0\.3/);
});

test('with mini-batches (its mini-batched version) a MegaBatchMarginLoss step is the plain step: losses, gradient norms and weights', async (t) => {
  const model = fixtureCopy(dropoutOff);
  const batches = [0, 1, 2].map((i) => wordDataset(9, 300 + i));
  const run = async (miniBatchSize?: number) => {
    const enc = await Encoder.load(model, { device: 'cpu' });
    try {
      const trainer = await enc.createTrainer({ learningRate: 1e-3, seed: 5 });
      const results = [];
      for (const b of batches) {
        const step = { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, megaBatchMargin: true, positiveMargin: 0.95, negativeMargin: -0.2, ...(miniBatchSize && { miniBatchSize }) };
        results.push(await trainer.step(b.map((p) => p.query), b.map((p) => p.positive), step));
      }
      return { results, probe: Array.from((await enc.embed(['model token vector search'])).data) };
    } finally {
      enc.dispose();
    }
  };
  const plain = await run();
  const cached = await run(4);
  plain.results.forEach((p, i) => {
    const c = cached.results[i];
    t.true(Math.abs(c.loss - p.loss) <= 1e-5 * Math.abs(p.loss), `step ${i + 1}: loss ${c.loss} vs ${p.loss}`);
    t.true(Math.abs(c.gradNorm - p.gradNorm) <= 1e-4 * p.gradNorm, `step ${i + 1}: grad norm ${c.gradNorm} vs ${p.gradNorm}`);
  });
  t.true(plain.probe.every((x, k) => Math.abs(x - cached.probe[k]) < 1e-5));
  t.not(plain.results[0].loss, plain.results[2].loss);
});

test('what MegaBatchMarginLoss cannot train on is refused by name; coltrast train --mega-batch-margin', async (t) => {
  const dir = tempDir();
  const pairs = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(pairs, wordDataset(40, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const triplets = path.join(dir, 'triplets.jsonl');
  fs.writeFileSync(triplets, wordDataset(40, 3).map((p, i, all) => JSON.stringify({ ...p, negative: all[(i + 1) % all.length].positive })).join('\n') + '\n');
  const base = { model: FIXTURE, data: pairs, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 8 };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  await refused({ ...base, data: triplets, loss: { megaBatchMargin: true } }, /options\.loss\.megaBatchMargin trains on \(anchor, positive\) pairs, its negatives the batch's other positives, and example 1 has hard negatives/);
  await refused({ ...base, loss: { megaBatchMargin: true, contrastiveWeight: 1 } }, /options\.loss\.megaBatchMargin is the whole loss: drop options\.loss\.contrastiveWeight/);
  await refused({ ...base, multiVector: { dimension: 8 }, loss: { megaBatchMargin: true } }, /options\.loss\.megaBatchMargin trains a single-vector embedding model on \(anchor, positive\) pairs: options\.multiVector is for other training/);
  await refused({ ...base, loss: { megaBatchMargin: { positiveMargin: 'high' as never } } }, /options\.loss\.megaBatchMargin\.positiveMargin must be a number/);
  await refused({ ...base, loss: { megaBatchMargin: { margin: 1 } as never } }, /options\.loss\.megaBatchMargin/);

  const run = spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', pairs, '--output', path.join(dir, 'cli'), '--epochs', '1', '--batch-size', '8', '--device', 'cpu', '--mega-batch-margin', '--mini-batch-size', '4', '--json'], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr);
  t.like(JSON.parse(fs.readFileSync(path.join(dir, 'cli', 'training_history.json'), 'utf8')).config.step, { megaBatchMargin: true, miniBatchSize: 4 });
});
