// Gradient caching (train({ miniBatchSize })): the batch encoded a few texts at a time, the loss over the
// whole batch, each mini-batch re-encoded with autograd. Checked here against the plain step: the same
// losses, gradient norms and weights (within float rounding) with dropout off and mini-batches smaller than
// the batch; an exact replay of dropout in each mini-batch's second pass; one mini-batch equal to the plain
// step even with dropout; each loss alone; evaluation; and train() with the option, from the API and CLI.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, train } from '../lib';
import { native, type NativeStepOptions } from '../lib/native';
import { FIXTURE, STEP, dropoutOff, fixtureCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

// Batches of 7 pairs plus 2 hard negatives: 7 queries and 9 documents of different lengths.
const BATCHES = [0, 1, 2, 3].map((i) => {
  const pairs = wordDataset(9, 200 + i);
  return { queries: pairs.slice(0, 7).map((p) => p.query), documents: [...pairs.slice(0, 7).map((p) => p.positive), ...pairs.slice(7).map((p) => `${p.positive} extra words here`)] };
});

const noDropout = fixtureCopy(dropoutOff);

/** Trains on BATCHES with the given step options; returns each step's result and the final token vectors of a probe text. */
async function run(model: string, step: Partial<NativeStepOptions>, trainer: Parameters<Encoder['createTrainer']>[0] = {}) {
  const enc = await Encoder.load(model, { device: 'cpu' });
  try {
    const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 5, ...trainer });
    const results = [];
    for (const b of BATCHES) results.push(await tr.step(b.queries, b.documents, { ...STEP, ...step }));
    const probe = await enc.embed(['model token vector search'], {});
    return { results, probe: probe.data };
  } finally {
    enc.dispose();
  }
}

const relative = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

test('dropout off: mini-batches of 1, 3 and 4 give the plain step\'s losses, gradient norms and weights', async (t) => {
  const plain = await run(noDropout, {});
  for (const miniBatchSize of [1, 3, 4]) {
    const cached = await run(noDropout, { miniBatchSize });
    cached.results.forEach((r, i) => {
      const p = plain.results[i];
      t.true(relative(r.loss, p.loss) < 1e-5, `m=${miniBatchSize} step ${i + 1}: loss ${r.loss} vs ${p.loss}`);
      t.true(relative(r.contrastive, p.contrastive) < 1e-5 && relative(r.lateInteraction, p.lateInteraction) < 1e-5);
      t.true(relative(r.gradNorm, p.gradNorm) < 1e-4, `m=${miniBatchSize} step ${i + 1}: grad norm ${r.gradNorm} vs ${p.gradNorm}`);
    });
    t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5, `m=${miniBatchSize}: weights after 4 steps differ by ${maxAbsDiff(cached.probe, plain.probe)}`);
    // And the steps did change the model, so the comparison above is not of untouched weights.
    t.not(plain.results[0].loss, plain.results[3].loss);
  }
});

test('dropout off: the contrastive loss with global orthogonal regularization in mini-batches gives the plain step\'s losses, gradient norms and weights', async (t) => {
  const gor = { contrastiveWeight: 1, lateInteractionWeight: 0, gorMeanWeight: 2, gorSecondMomentWeight: 1, gorAggregation: 'mean' as const };
  const plain = await run(noDropout, gor);
  const cached = await run(noDropout, { ...gor, miniBatchSize: 3 });
  cached.results.forEach((r, i) => {
    const p = plain.results[i];
    t.true(p.regularizer > 0);
    t.true(relative(r.loss, p.loss) < 1e-5 && relative(r.regularizer, p.regularizer) < 1e-5, `step ${i + 1}: loss ${r.loss} vs ${p.loss}, regularizer ${r.regularizer} vs ${p.regularizer}`);
    t.true(relative(r.gradNorm, p.gradNorm) < 1e-4, `step ${i + 1}: grad norm ${r.gradNorm} vs ${p.gradNorm}`);
  });
  t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5);
});

test('dropout off: the labeled-pair losses, TripletLoss and MSELoss in mini-batches give the plain step\'s losses, gradient norms and weights', async (t) => {
  // 7 pairs a batch (each query with its own document, no others), labeled 1/0 for the contrastive losses, graded else.
  const pairs = (kind: string) => BATCHES.map((b) => ({ queries: b.queries, documents: b.documents.slice(0, 7), labels: Float32Array.from(b.queries, (_, i) => (kind.includes('contrastive') ? i % 2 : (i % 4) / 3)) }));
  const runPairs = async (kind: 'cosent' | 'online_contrastive', miniBatchSize?: number) => {
    const enc = await Encoder.load(noDropout, { device: 'cpu' });
    try {
      const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 5 });
      const results = [];
      for (const b of pairs(kind)) {
        results.push(await tr.step(b.queries, b.documents, { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, pairLoss: kind, pairLabels: b.labels, ...(miniBatchSize && { miniBatchSize }) }));
      }
      return { results, probe: (await enc.embed(['model token vector search'], {})).data };
    } finally {
      enc.dispose();
    }
  };
  for (const kind of ['cosent', 'online_contrastive'] as const) {
    const plain = await runPairs(kind);
    const cached = await runPairs(kind, 3);
    cached.results.forEach((r, i) => {
      t.true(relative(r.loss, plain.results[i].loss) < 1e-5, `${kind} step ${i + 1}: loss ${r.loss} vs ${plain.results[i].loss}`);
      t.true(relative(r.gradNorm, plain.results[i].gradNorm) < 1e-4, `${kind} step ${i + 1}: grad norm ${r.gradNorm} vs ${plain.results[i].gradNorm}`);
    });
    t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5, `${kind}: weights after 4 steps differ by ${maxAbsDiff(cached.probe, plain.probe)}`);
    t.true(plain.results.every((r) => r.gradNorm > 0), `${kind}: the steps have gradients`);
  }
  // TripletLoss: each query's negative one of the batch's two extra documents.
  const runTriplets = async (miniBatchSize?: number) => {
    const enc = await Encoder.load(noDropout, { device: 'cpu' });
    try {
      const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 5 });
      const results = [];
      for (const b of BATCHES) {
        const tripletNegatives = Int32Array.from(b.queries, (_, i) => 7 + (i % 2));
        results.push(await tr.step(b.queries, b.documents, { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, tripletDistance: 'euclidean', tripletMargin: 1, normalizedVectors: true, tripletNegatives, ...(miniBatchSize && { miniBatchSize }) }));
      }
      return { results, probe: (await enc.embed(['model token vector search'], {})).data };
    } finally {
      enc.dispose();
    }
  };
  const plain = await runTriplets();
  const cached = await runTriplets(3);
  cached.results.forEach((r, i) => t.true(relative(r.loss, plain.results[i].loss) < 1e-5 && relative(r.gradNorm, plain.results[i].gradNorm) < 1e-4, `triplet step ${i + 1}`));
  t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5, `triplets: weights after 4 steps differ by ${maxAbsDiff(cached.probe, plain.probe)}`);
  t.true(plain.results.some((r) => r.gradNorm > 0), 'triplets: the steps have gradients');
  // Embedding distillation (MSELoss): each query's positive its translation, a made-up teacher vector per query.
  const runMse = async (miniBatchSize?: number) => {
    const enc = await Encoder.load(noDropout, { device: 'cpu' });
    try {
      const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 5 });
      const results = [];
      for (const b of BATCHES) {
        const targetVectors = Float32Array.from({ length: b.queries.length * enc.dimension }, (_, k) => Math.sin(k * 0.7) / 4);
        results.push(await tr.step(b.queries, b.documents.slice(0, b.queries.length), { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, targetVectors, normalizedVectors: true, ...(miniBatchSize && { miniBatchSize }) }));
      }
      return { results, probe: (await enc.embed(['model token vector search'], {})).data };
    } finally {
      enc.dispose();
    }
  };
  const plainMse = await runMse();
  const cachedMse = await runMse(3);
  cachedMse.results.forEach((r, i) => t.true(relative(r.loss, plainMse.results[i].loss) < 1e-5 && relative(r.gradNorm, plainMse.results[i].gradNorm) < 1e-4, `MSELoss step ${i + 1}`));
  t.true(maxAbsDiff(cachedMse.probe, plainMse.probe) < 1e-5, `MSELoss: weights after 4 steps differ by ${maxAbsDiff(cachedMse.probe, plainMse.probe)}`);
  t.true(plainMse.results.every((r) => r.gradNorm > 0), 'MSELoss: the steps have gradients');
});

test('dropout on: each mini-batch\'s second pass replays its first exactly, and runs repeat', async (t) => {
  const a = await run(FIXTURE, { miniBatchSize: 2, verifyMiniBatches: true });
  const b = await run(FIXTURE, { miniBatchSize: 2, verifyMiniBatches: true });
  for (const r of a.results) t.is(r.miniBatchMaxDiff, 0, 'the recomputed mini-batch differs from its first pass: dropout masks were not replayed');
  t.deepEqual(a.results.map((r) => r.loss), b.results.map((r) => r.loss));
  t.deepEqual(Array.from(a.probe), Array.from(b.probe));
  // Dropout is really on: the same model without it trains differently.
  const off = await run(noDropout, { miniBatchSize: 2 });
  t.not(off.results[0].loss, a.results[0].loss);
});

test('dropout on: one mini-batch holding the whole batch is the plain step', async (t) => {
  const plain = await run(FIXTURE, {});
  const cached = await run(FIXTURE, { miniBatchSize: 64 });
  cached.results.forEach((r, i) => {
    t.true(relative(r.loss, plain.results[i].loss) < 1e-5, `step ${i + 1}: ${r.loss} vs ${plain.results[i].loss}`);
    t.true(relative(r.gradNorm, plain.results[i].gradNorm) < 1e-4);
  });
  t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5);
  t.is(plain.results[0].miniBatchMaxDiff, undefined);
});

test('each loss alone, and bfloat16 autocast, with mini-batches', async (t) => {
  for (const weights of [{ contrastiveWeight: 1, lateInteractionWeight: 0 }, { contrastiveWeight: 0, lateInteractionWeight: 1 }]) {
    const plain = await run(noDropout, weights);
    const cached = await run(noDropout, { ...weights, miniBatchSize: 3 });
    cached.results.forEach((r, i) => t.true(relative(r.loss, plain.results[i].loss) < 1e-5, `${JSON.stringify(weights)} step ${i + 1}`));
    t.true(cached.results.every((r) => r.gradNorm > 0));
  }
  const plain = await run(noDropout, {}, { precision: 'bfloat16' });
  const cached = await run(noDropout, { miniBatchSize: 3 }, { precision: 'bfloat16' });
  // Mini-batches are cut to their own length, so bfloat16 rounds differently: close, not equal.
  cached.results.forEach((r, i) => t.true(relative(r.loss, plain.results[i].loss) < 0.03, `bf16 step ${i + 1}: ${r.loss} vs ${plain.results[i].loss}`));
});

test('evaluation in mini-batches gives the whole batch\'s loss', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const tr = await enc.createTrainer({ seed: 1 });
    for (const b of BATCHES) {
      const whole = await tr.evaluate(b.queries, b.documents, { ...STEP, apply: false });
      const mini = await tr.evaluate(b.queries, b.documents, { ...STEP, apply: false, miniBatchSize: 2 });
      t.true(relative(mini.loss, whole.loss) < 1e-5, `${mini.loss} vs ${whole.loss}`);
    }
    await t.throwsAsync(tr.step(BATCHES[0].queries, BATCHES[0].documents, { ...STEP, miniBatchSize: 1.5 }), { message: /miniBatchSize must be an integer >= 0/ });
  } finally {
    enc.dispose();
  }
});

test('train({ miniBatchSize }) trains as train() does without it (dropout off); bad values are refused', async (t) => {
  const data = wordDataset(30, 11);
  const common = { model: noDropout, data, epochs: 2, batchSize: 8, learningRate: 1e-3, valSplit: 0.2, device: 'cpu' as const };
  const plain = await train({ ...common, output: path.join(tempDir(), 'plain') });
  const output = path.join(tempDir(), 'cached');
  const cached = await train({ ...common, output, miniBatchSize: 3 });
  t.is(cached.history.steps.length, plain.history.steps.length);
  cached.history.steps.forEach((s, i) => t.true(relative(s.loss, plain.history.steps[i].loss) < 1e-4, `step ${i + 1}: ${s.loss} vs ${plain.history.steps[i].loss}`));
  cached.history.epochs.forEach((e, i) => t.true(relative(e.valLoss!, plain.history.epochs[i].valLoss!) < 1e-4, `epoch ${i + 1} validation loss`));
  t.true(fs.existsSync(path.join(output, 'model.safetensors')));
  for (const bad of [0, -2, 2.5, '4']) {
    const error = await train({ model: FIXTURE, data, output: path.join(tempDir(), 'bad'), miniBatchSize: bad as any }).catch((e) => e);
    t.true(error instanceof ColtrastError, String(bad));
    t.regex(error.message, /options\.miniBatchSize/);
  }
});

test('coltrast train --mini-batch-size', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(12, 3).map((p) => JSON.stringify(p)).join('\n'));
  const cli = path.resolve(__dirname, '..', 'dist', 'cli.js');
  const out = spawnSync(process.execPath, [cli, 'train', '--model', FIXTURE, '--data', data, '--output', path.join(dir, 'model'), '--batch-size', '6', '--mini-batch-size', '2', '--val-split', '0', '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 240_000 });
  t.is(out.status, 0, out.stderr);
  t.true(fs.existsSync(path.join(dir, 'model', 'model.safetensors')));
  const bad = spawnSync(process.execPath, [cli, 'train', '--model', FIXTURE, '--data', data, '--output', path.join(dir, 'bad'), '--mini-batch-size', '0'], { encoding: 'utf8', timeout: 240_000 });
  t.not(bad.status, 0);
  t.regex(bad.stderr, /--mini-batch-size must be a positive integer, got 0/);
});

// On a GPU dropout draws from the device's generator: the trainer seeds it and swaps it in per step as it
// does the CPU's, so runs repeat and mini-batches replay there too.
const cuda = native().runtimeInfo().cudaAvailable;
const cudaWhy = cuda ? '' : ' [skipped: no CUDA device or CUDA libtorch here]';
(cuda ? test.serial : test.skip)(`cuda: seeded dropout, and mini-batches replay exactly${cudaWhy}`, async (t) => {
  const steps = async (seed: number, step: Partial<NativeStepOptions>) => {
    const enc = await Encoder.load(FIXTURE, { device: 'cuda' });
    try {
      const tr = await enc.createTrainer({ learningRate: 1e-3, seed });
      const out = [];
      for (const b of BATCHES) out.push(await tr.step(b.queries, b.documents, { ...STEP, ...step }));
      return out;
    } finally {
      enc.dispose();
    }
  };
  const a = await steps(5, {});
  const b = await steps(5, {});
  const other = await steps(6, {});
  a.forEach((r, i) => t.true(relative(r.loss, b[i].loss) < 1e-5, `seed 5 twice, step ${i + 1}: ${r.loss} vs ${b[i].loss}`));
  t.true(a.some((r, i) => relative(r.loss, other[i].loss) > 1e-3), 'seeds 5 and 6 gave the same dropout');
  const cached = await steps(5, { miniBatchSize: 2, verifyMiniBatches: true });
  for (const r of cached) t.true(r.miniBatchMaxDiff! < 1e-5, `second pass differs by ${r.miniBatchMaxDiff}`);
});
