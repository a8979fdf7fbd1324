// train() at its edges: a run that diverges, batches that compare nothing, duplicate queries in a batch, the logged
// loss of a step with gradient accumulation, options past float32's range, and output folders that hold the model.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, train, type TrainOptions } from '../lib';
import { batchExamples, makeBatches } from '../lib/train-data';
import { retrievalMetrics } from '../lib/train';
import { seededRandom, seedState } from '../lib/random';
import { FIXTURE, STEP, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';

const base = { model: FIXTURE, device: 'cpu' as const, epochs: 1, valSplit: 0 };

async function rejection(options: TrainOptions): Promise<ColtrastError> {
  const error = await train(options).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${String(error)}`);
  return error;
}

async function finiteEmbeddings(dir: string): Promise<boolean> {
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  const { data } = await encoder.embed(['hello world', 'a quick brown fox']);
  encoder.dispose();
  return data.every((x) => Number.isFinite(x));
}

test('a step that makes the weights overflow stops the run with an error naming the step; no model of NaNs is saved', async (t) => {
  // One step of 1e30: its own loss is finite, the weights after it are not. The run used to save that model as its
  // result (its embeddings all NaN); with a validation split, whose NaN loss was never the best, it saved no model and
  // failed writing training_history.json into a folder that was never made (ENOENT).
  for (const [n, valSplit] of [[8, 0], [10, 2]]) {
    const output = path.join(tempDir(), 'out');
    const error = await rejection({ ...base, data: wordDataset(n), output, batchSize: 8, learningRate: 1e30, valSplit });
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, /^the model's outputs are NaN or infinite after step 1: training diverged \(lower options\.learningRate, .*\)\. Nothing was saved$/);
    t.false(fs.existsSync(output), `valSplit ${valSplit}: nothing written`);
  }
});

test('a run that diverges keeps its last good checkpoint and the model of its last good epoch, and says so', async (t) => {
  // A constant 1000: the fixture's weights overflow after a few steps. The checkpoint written after that step held them
  // (its embeddings NaN), and the native step refused the next one with no word of what was kept.
  const output = path.join(tempDir(), 'out');
  const error = await rejection({
    ...base, data: wordDataset(16), output, epochs: 3, batchSize: 4, learningRate: 1000, warmupRatio: 0, schedule: 'constant', checkpointEvery: 1,
  });
  const match = /(?:after|at) step (\d+): training diverged .* Nothing after it was saved: (?:(.+) holds the model of epoch (\d+), and )?(.+) the checkpoint of step (\d+)$/.exec(error.message);
  t.truthy(match, error.message);
  const [, failed, kept, epoch, checkpoint, checkpointStep] = match!;
  t.is(Number(checkpointStep), Number(failed) - 1, 'every step writes a checkpoint: the one before it is kept');
  t.is(checkpoint, `${output}.checkpoint`);
  t.is(JSON.parse(fs.readFileSync(path.join(checkpoint, 'state.json'), 'utf8')).state.step, Number(checkpointStep));
  t.true(await finiteEmbeddings(path.join(checkpoint, 'model')), 'the checkpoint kept is a good one');
  if (kept) {
    t.is(kept, output);
    t.true(Number(epoch) >= 1);
    t.true(await finiteEmbeddings(output));
  }
});

test('a run whose every batch holds one example and no hard negative is refused: its losses are 0', async (t) => {
  // In-batch negatives with one example a batch: each query's softmax is over its positive alone, the loss 0 at every
  // step; the run went through its steps and returned the model unchanged.
  const output = path.join(tempDir(), 'out');
  const one = await rejection({ ...base, data: wordDataset(6), output, batchSize: 1 });
  t.regex(one.message, /^every batch holds a single example \(options\.batchSize 1\) and no hard negative: .* they are 0 and nothing would train; raise options\.batchSize, or give hard negatives/);
  const shared = await rejection({ ...base, data: wordDataset(6).map((e) => ({ ...e, positive: 'one passage for all' })), output, batchSize: 3 });
  t.regex(shared.message, /^every batch holds a single example \(the examples share one positive or one query, .*\) and no hard negative: .*; give examples with other positives and queries/);
  const tension = await rejection({ ...base, data: ['one sentence', 'another sentence', 'a third'], output, batchSize: 1, contrastiveTension: true });
  t.regex(tension.message, /^every batch holds a single example/);
  t.false(fs.existsSync(output));
  // With hard negatives a batch of one compares its positive with them, and trains.
  const data = wordDataset(6).map((e, i, all) => ({ ...e, negatives: [all[(i + 1) % all.length].positive] }));
  const run = await train({ ...base, data, output, batchSize: 1, learningRate: 1e-3 });
  t.true(run.history.steps.every((s) => s.loss > 0));
});

test('a batch never holds one query twice: the other copy’s positive would be a false negative', (t) => {
  // One question with two relevant passages (MS MARCO has many): in one batch each passage was the other copy's
  // in-batch negative, as sentence-transformers' NoDuplicatesBatchSampler keeps out.
  const examples = [
    { query: 'what is a river bank', positive: 'the land beside a river' },
    { query: 'what is a river bank', positive: 'a slope at the edge of a river' },
    { query: 'what is a cafe', positive: 'a small restaurant' },
  ];
  const batches = makeBatches(examples, 3);
  t.deepEqual(batches.map((b) => b.queries), [['what is a river bank', 'what is a cafe'], ['what is a river bank']]);
  for (const b of batches) t.is(new Set(b.queries).size, b.queries.length);
});

test("with gradient accumulation a step's logged loss is the mean of its batches' losses, in the history, progress and curves", async (t) => {
  // It was the last batch's alone: 12 examples in batches of 3, an update every 2 batches; the epoch's loss (the mean
  // of its 4 batches) is the mean of its 2 steps' losses only when each step's is the mean of its own batches.
  const output = path.join(tempDir(), 'out');
  const progress: number[] = [];
  const run = await train({
    ...base, data: wordDataset(12, 3), output, batchSize: 3, gradientAccumulation: 2, learningRate: 1e-3, onProgress: (p) => progress.push(p.loss),
  });
  const steps = run.history.steps;
  t.is(steps.length, 2);
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
  t.true(close((steps[0].loss + steps[1].loss) / 2, run.history.epochs[0].trainLoss), `steps ${steps.map((s) => s.loss).join(', ')}; epoch ${run.history.epochs[0].trainLoss}`);
  for (const s of steps) {
    const parts = 0.5 * s.contrastive + 0.5 * s.lateInteraction;
    t.true(close(parts, s.loss), `step ${s.step}: the parts ${parts} make its loss ${s.loss}`);
  }
  t.deepEqual(progress, steps.map((s) => s.loss));
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8')).history.steps, steps);
});

test('numbers past float32 and a progressBar that is no boolean are refused, naming the option', async (t) => {
  const output = path.join(tempDir(), 'out');
  const common = { ...base, data: wordDataset(8), output, batchSize: 4 };
  // They failed in the native step with libtorch's "value cannot be converted to type float without overflow".
  for (const [name, options] of [
    ['learningRate', { learningRate: 1e300 }],
    ['maxGradNorm', { maxGradNorm: 1e39 }],
    ['weightDecay', { weightDecay: 1e300 }],
  ] as const) {
    t.regex((await rejection({ ...common, ...options })).message, new RegExp(`^options\\.${name} must be at most 3\\.4e38 \\(float32's largest\\), got number`));
  }
  // The loss weights: 1e300 became an infinite weight, and a gradient norm error blaming the learning rate.
  for (const name of ['contrastiveWeight', 'lateInteractionWeight', 'distillationWeight'] as const) {
    t.regex((await rejection({ ...common, loss: { [name]: 1e300 } })).message, new RegExp(`^options\\.loss\\.${name} must be at most 3\\.4e38 \\(float32's largest\\), got number`));
  }
  for (const temperature of [1e300, 1e-300]) {
    t.regex((await rejection({ ...common, loss: { temperature } })).message, /^options\.loss\.temperature must be from 1\.2e-38 to 3\.4e38 \(float32's normal range\), got number/);
  }
  // 'yes' drew a bar: any truthy value did.
  t.is((await rejection({ ...common, progressBar: 'yes' as unknown as boolean })).message, 'options.progressBar must be true or false, got the string "yes"');
  t.false(fs.existsSync(output));
});

test('an output folder that is the model or holds it is refused: saving the trained model replaced it', async (t) => {
  const dir = tempDir();
  const first = path.join(dir, 'first');
  await train({ ...base, data: wordDataset(8), output: first, batchSize: 4 });
  const before = fs.readFileSync(path.join(first, 'model.safetensors'));
  // An earlier run's output may be replaced, and it was, while it was the model this run started from.
  const same = await rejection({ ...base, model: first, data: wordDataset(8, 3), output: first, batchSize: 4 });
  t.regex(same.message, /^options\.output .*first is the folder of options\.model: the trained model would replace the model it starts from; choose another output folder$/);
  t.true(fs.readFileSync(path.join(first, 'model.safetensors')).equals(before));
  // A model inside it was deleted with the folder.
  const inner = path.join(first, 'base');
  fs.cpSync(FIXTURE, inner, { recursive: true });
  const inside = await rejection({ ...base, model: inner, data: wordDataset(8, 3), output: first, batchSize: 4 });
  t.regex(inside.message, /^options\.model .*first[/\\]base is inside .*first, which the trained model replaces whole: move the model out of it, or choose another output folder$/);
  t.true(fs.existsSync(path.join(inner, 'model.safetensors')));
  // Inside the checkpoint folder, which the first checkpoint replaced.
  const checkpointed = path.join(dir, 'second.checkpoint', 'model');
  fs.cpSync(FIXTURE, checkpointed, { recursive: true });
  const inCheckpoint = await rejection({ ...base, model: checkpointed, data: wordDataset(8, 3), output: path.join(dir, 'second'), batchSize: 4 });
  t.regex(inCheckpoint.message, /is inside .*second\.checkpoint, the run's checkpoint folder, which each checkpoint replaces whole/);
  // An output inside the model's folder leaves the model as it was.
  const model = fixtureCopy();
  await train({ ...base, model, data: wordDataset(8, 3), output: path.join(model, 'tuned'), batchSize: 4 });
  t.true(fs.readFileSync(path.join(model, 'model.safetensors')).equals(fs.readFileSync(path.join(FIXTURE, 'model.safetensors'))));
});

test('a model whose scores are NaN gets recall@1 0 from retrievalMetrics, not 1; seeds past 2^32 shuffle differently', async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const pairs = wordDataset(6);
    const trainer = await encoder.createTrainer({ seed: 1 });
    await trainer.step(pairs.map((p) => p.query), pairs.map((p) => p.positive), { ...STEP, learningRate: 1e30 });
    trainer.dispose();
    t.false((await encoder.embed([pairs[0].query])).data.every(Number.isFinite), 'the step broke the model');
    // No comparison with a NaN score is true: each positive used to rank first.
    const metrics = await retrievalMetrics(encoder, pairs);
    t.is(metrics['recall@1'], 0);
    t.true(metrics['mrr@10'] <= 1 / Math.min(6, 10) + 1e-12, `mrr@10 ${metrics['mrr@10']}`);
  } finally {
    encoder.dispose();
  }
  t.is(seedState(42), 42, 'seeds below 2^32 start as they did');
  t.not(seedState(2 ** 32), seedState(0));
  t.not(seedState(2 ** 52 + 7), seedState(7));
  const error = await rejection({ ...base, data: wordDataset(8), output: path.join(tempDir(), 'x'), batchSize: 4, seed: 2 ** 60 });
  t.regex(error.message, /options\.seed must be an integer from 0 to 9007199254740991/);
});

test('batching with repeated queries and positives: every example once, no text twice in a batch, batches as full as the data allows', (t) => {
  for (let seed = 1; seed <= 60; seed++) {
    const random = seededRandom(seed).next;
    const n = 1 + Math.floor(random() * 300);
    const batchSize = 1 + Math.floor(random() * 16);
    const queries = 1 + Math.floor(random() * n);
    const positives = 1 + Math.floor(random() * n);
    const examples = Array.from({ length: n }, (_, i) => ({ query: `q${Math.floor(random() * queries)}`, positive: `p${Math.floor(random() * positives)}`, i }));
    const batches = [...batchExamples(examples, batchSize)];
    const seen = batches.flat().map((e) => (e as (typeof examples)[number]).i).sort((a, b) => a - b);
    t.deepEqual(seen, examples.map((e) => e.i), `seed ${seed}: every example in one batch`);
    for (const b of batches) {
      t.true(b.length >= 1 && b.length <= batchSize);
      t.is(new Set(b.map((e) => e.query)).size, b.length, `seed ${seed}: a query twice`);
      t.is(new Set(b.map((e) => e.positive)).size, b.length, `seed ${seed}: a positive twice`);
    }
  }
  // A label used as the query of every example (classification data as pairs): batches of the 5 labels, each example
  // once. Each batch used to rescan every waiting example (40,000 took 13 s; BENCHMARKS.md, "Data at scale").
  const labels = Array.from({ length: 40_000 }, (_, i) => ({ query: `label ${i % 5}`, positive: `text ${i}` }));
  const batches = [...batchExamples(labels, 32)];
  t.is(batches.length, 8000);
  t.true(batches.every((b) => b.length === 5));
  // Distinct queries and positives: full batches in the order given.
  const distinct = Array.from({ length: 100 }, (_, i) => ({ query: `q${i}`, positive: `p${i}` }));
  t.deepEqual([...batchExamples(distinct, 32)].map((b) => b.map((e) => e.query)), [0, 32, 64, 96].map((s) => distinct.slice(s, s + 32).map((e) => e.query)));
});

test('a run of distinct pairs counts its steps without forming every epoch\'s batches: 10^8 epochs start at once', async (t) => {
  // Each epoch's batches were formed before the first step to count them; at 10^8 epochs the run never started.
  const controller = new AbortController();
  const totals: number[] = [];
  const output = path.join(tempDir(), 'out');
  const error = await rejection({
    ...base, data: wordDataset(8), output, batchSize: 3, gradientAccumulation: 2, epochs: 1e8, signal: controller.signal,
    onProgress: (p) => {
      totals.push(p.totalSteps);
      controller.abort();
    },
  });
  t.is(error.code, 'ABORTED', error.message);
  t.regex(error.message, /after step 1\b/);
  t.deepEqual(totals, [2e8], 'ceil(ceil(8 / 3) / 2) = 2 steps an epoch');
});
