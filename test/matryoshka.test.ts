// Matryoshka representation learning (train's loss.matryoshka) and cut vectors (truncateDim): the step's loss
// at several widths equals the in-batch InfoNCE recomputed here from embed({ truncateDim }) vectors, with the
// widths' weights; the full width alone is the plain step; gradient caching gives the same step; embed and
// Encoder.load cut and renormalize as documented; an index remembers its width; train() reports every
// width's metrics and writes them into the model card; bad options fail before training.
// (sentence-transformers' own MatryoshkaLoss is compared in python-interop.test.ts.)
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, train } from '../lib';
import { matryoshkaStep, retrievalMetrics } from '../lib/train';
import { FIXTURE, STEP, dropoutOff, fixtureCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

const noDropout = fixtureCopy(dropoutOff);
const relative = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');

// 6 queries; 6 positives and 2 hard negatives.
const pairs = wordDataset(8, 77);
const QUERIES = pairs.slice(0, 6).map((p) => p.query);
const DOCUMENTS = [...pairs.slice(0, 6).map((p) => p.positive), ...pairs.slice(6).map((p) => `${p.positive} and more`)];

/** In-batch InfoNCE at temperature tau on unit rows: query i's positive is document i. */
function infoNce(q: Float32Array[], d: Float32Array[], tau: number): number {
  let sum = 0;
  for (let i = 0; i < q.length; i++) {
    const logits = d.map((row) => row.reduce((s, x, k) => s + x * q[i][k], 0) / tau);
    const max = Math.max(...logits);
    const lse = max + Math.log(logits.reduce((s, x) => s + Math.exp(x - max), 0));
    sum += lse - logits[i];
  }
  return sum / q.length;
}

const rows = (m: { dims: number[]; data: Float32Array }) => Array.from({ length: m.dims[0] }, (_, i) => m.data.subarray(i * m.dims[1], (i + 1) * m.dims[1]));

test('the Matryoshka loss is the weighted sum of InfoNCE at each width, from embed({ truncateDim }) vectors', async (t) => {
  const enc = await Encoder.load(noDropout, { device: 'cpu' });
  const trainer = await enc.createTrainer({ seed: 3 }, false);
  try {
    const options = { ...STEP, contrastiveWeight: 1, lateInteractionWeight: 0, learningRate: 0, apply: false };
    const widths = [32, 16, 5];
    const weights = [1, 0.5, 2];
    const ours = await trainer.evaluate(QUERIES, DOCUMENTS, { ...options, matryoshkaDimensions: widths, matryoshkaWeights: weights });
    let expected = 0;
    for (const [i, width] of widths.entries()) {
      const q = rows(await enc.embed(QUERIES, { truncateDim: width, normalize: true }));
      const d = rows(await enc.embed(DOCUMENTS, { truncateDim: width, normalize: true }));
      t.is(q[0].length, width);
      expected += weights[i] * infoNce(q, d, STEP.temperature);
    }
    t.true(relative(ours.loss, expected) < 1e-5, `coltrast ${ours.loss}, recomputed ${expected}`);
    t.true(relative(ours.contrastive, expected) < 1e-5);
    // The full width alone, weight 1, is the plain loss.
    const plain = await trainer.evaluate(QUERIES, DOCUMENTS, options);
    const full = await trainer.evaluate(QUERIES, DOCUMENTS, { ...options, matryoshkaDimensions: [32], matryoshkaWeights: [1] });
    t.is(full.loss, plain.loss);
    // The late-interaction loss is on token vectors, which Matryoshka does not cut.
    const late = { ...options, contrastiveWeight: 0, lateInteractionWeight: 1 };
    t.is((await trainer.evaluate(QUERIES, DOCUMENTS, { ...late, matryoshkaDimensions: [8], matryoshkaWeights: [1] })).loss, (await trainer.evaluate(QUERIES, DOCUMENTS, late)).loss);
    // The native step refuses widths the vectors do not have, and malformed lists.
    for (const [dims, w, pattern] of [
      [[33], [1], /larger than the pooled vectors \(32\)/],
      [[16, 8], [1], /same, non-zero length/],
      [[0], [1], /positive integers/],
      [[8], [-1], /finite numbers >= 0/],
    ] as const) {
      const error = await trainer.evaluate(QUERIES, DOCUMENTS, { ...options, matryoshkaDimensions: [...dims], matryoshkaWeights: [...w] }).catch((e) => e);
      t.true(error instanceof ColtrastError, JSON.stringify(dims));
      t.regex(error.message, pattern);
    }
  } finally {
    trainer.dispose();
    enc.dispose();
  }
});

test('Matryoshka steps with gradient caching equal the plain steps: losses, gradient norms and weights', async (t) => {
  const run = async (miniBatchSize?: number) => {
    const enc = await Encoder.load(noDropout, { device: 'cpu' });
    try {
      const trainer = await enc.createTrainer({ learningRate: 1e-3, seed: 5 });
      const results = [];
      for (let i = 0; i < 3; i++) {
        const batch = wordDataset(7, 300 + i);
        results.push(
          await trainer.step(batch.map((p) => p.query), batch.map((p) => p.positive), {
            ...STEP, matryoshkaDimensions: [32, 12, 4], matryoshkaWeights: [1, 1, 0.5], ...(miniBatchSize ? { miniBatchSize } : {}),
          }),
        );
      }
      trainer.dispose();
      return { results, probe: (await enc.embed(['model token vector search'])).data };
    } finally {
      enc.dispose();
    }
  };
  const plain = await run();
  const cached = await run(3);
  cached.results.forEach((r, i) => {
    t.true(relative(r.loss, plain.results[i].loss) < 1e-5, `step ${i + 1}: ${r.loss} vs ${plain.results[i].loss}`);
    t.true(relative(r.gradNorm, plain.results[i].gradNorm) < 1e-4, `step ${i + 1}: grad norm ${r.gradNorm} vs ${plain.results[i].gradNorm}`);
  });
  t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5);
  t.not(plain.results[0].loss, plain.results[2].loss);
});

test('embed({ truncateDim }) and Encoder.load({ truncateDim }): the first entries, normalized again when the model normalizes', async (t) => {
  const texts = ['a cat sat', 'fast search over vectors', 'x'];
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const cut = await Encoder.load(FIXTURE, { device: 'cpu', truncateDim: 10 });
  try {
    const raw = rows(await enc.embed(texts, { normalize: false }));
    for (const normalize of [false, true]) {
      const ours = await enc.embed(texts, { truncateDim: 10, normalize });
      t.deepEqual(ours.dims, [3, 10]);
      const expected = raw.map((v) => {
        const head = Array.from(v.subarray(0, 10));
        const norm = Math.hypot(...head);
        return head.map((x) => (normalize ? x / norm : x));
      });
      t.true(maxAbsDiff(ours.data, expected.flat()) < 1e-6, `normalize ${normalize}`);
    }
    t.is(cut.dimension, 10);
    t.is(cut.fullDimension, 32);
    t.is(cut.truncateDim, 10);
    t.is(enc.truncateDim, undefined);
    // The Encoder's width is embed's default; a call may cut further or ask for the full width.
    t.deepEqual((await cut.embed(texts)).data, (await enc.embed(texts, { truncateDim: 10 })).data);
    t.deepEqual((await cut.embed(texts, { truncateDim: 4 })).dims, [3, 4]);
    t.deepEqual((await cut.embed(texts, { truncateDim: 32 })).data, (await enc.embed(texts)).data);
    // Token vectors are not cut.
    t.deepEqual((await cut.embed(['a cat'], { output: 'tokens' }))[0].dims[1], 32);
    for (const [options, pattern] of [
      [{ truncateDim: 33 }, /options\.truncateDim.*at most the model's width, 32/],
      [{ truncateDim: 0 }, /options\.truncateDim/],
      [{ truncateDim: 8, output: 'tokens' }, /does not apply to output 'tokens'/],
    ] as const) {
      const error = await enc.embed(texts, options as any).catch((e) => e);
      t.true(error instanceof ColtrastError, JSON.stringify(options));
      t.regex(error.message, pattern);
    }
    const loadError = await Encoder.load(FIXTURE, { device: 'cpu', truncateDim: 64 }).catch((e) => e);
    t.true(loadError instanceof ColtrastError);
    t.regex(loadError.message, /options\.truncateDim.*32/);
  } finally {
    cut.dispose();
    enc.dispose();
  }
});

test('an index built with cut vectors records the width, and loads only with it', async (t) => {
  const dir = path.join(tempDir(), 'index');
  const docs = DOCUMENTS.map((text, i) => ({ id: `d${i}`, text }));
  const cut = await Encoder.load(FIXTURE, { device: 'cpu', truncateDim: 12 });
  const whole = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const index = await Index.build(cut, docs);
    await index.save(dir);
    t.deepEqual(Index.modelOptions(dir), { source: FIXTURE, truncateDim: 12 });
    const error = await Index.load(dir, whole).catch((e) => e);
    t.true(error instanceof ColtrastError);
    t.regex(error.message, /width 12 and the model gives 32: load the model with \{ truncateDim: 12 \}/);
    const again = await Index.load(dir, cut);
    const [hits] = await again.search([QUERIES[0]], { k: 3 });
    // The index's scores are the cut vectors' cosines.
    const q = rows(await cut.embed([QUERIES[0]]))[0];
    const d = rows(await cut.embed([docs.find((x) => x.id === hits[0].id)!.text]))[0];
    t.true(Math.abs(hits[0].score - q.reduce((s, x, k) => s + x * d[k], 0)) < 1e-5);
  } finally {
    whole.dispose();
    cut.dispose();
  }
  // coltrast search loads the model with the index's width.
  const out = spawnSync(process.execPath, [CLI, 'search', '--index', dir, '--device', 'cpu', '--json', QUERIES[0]], { encoding: 'utf8', timeout: 240_000 });
  t.is(out.status, 0, out.stderr);
  t.is(JSON.parse(out.stdout)[0].hits.length, 5);
});

test('retrievalMetrics with widths: the main metrics stay the full width\'s, each width\'s are those of an Encoder with that truncateDim', async (t) => {
  const examples = wordDataset(20, 31);
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const cut = await Encoder.load(FIXTURE, { device: 'cpu', truncateDim: 8 });
  try {
    const whole = await retrievalMetrics(enc, examples);
    const m = await retrievalMetrics(enc, examples, [16, 8]);
    t.is(m['recall@1'], whole['recall@1']);
    t.is(m['mrr@10'], whole['mrr@10']);
    t.deepEqual(m.dimensions!.map((d) => d.dimension), [16, 8]);
    const at8 = await retrievalMetrics(cut, examples);
    t.deepEqual(m.dimensions![1], { dimension: 8, 'recall@1': at8['recall@1'], 'mrr@10': at8['mrr@10'] });
    t.not(m.dimensions![1]['mrr@10'], whole['mrr@10'], 'cutting to 8 of 32 changes the ranking');
    await t.throwsAsync(retrievalMetrics(cut, examples, [16]), { message: /widths of at most the encoder's 8/ });
  } finally {
    cut.dispose();
    enc.dispose();
  }
});

test('matryoshkaStep: every width, or a seeded sample that repeats for the same batch', (t) => {
  const m = { dimensions: [32, 16, 8, 4], weights: [1, 2, 3, 4], perStep: 4 };
  t.deepEqual(matryoshkaStep(m, 1, 1, 0), { matryoshkaDimensions: [32, 16, 8, 4], matryoshkaWeights: [1, 2, 3, 4] });
  t.deepEqual(matryoshkaStep(undefined, 1, 1, 0), {});
  const two = { ...m, perStep: 2 };
  const seen = new Set<number>();
  for (let b = 0; b < 40; b++) {
    const s = matryoshkaStep(two, 42, 2, b);
    t.deepEqual(s, matryoshkaStep(two, 42, 2, b));
    t.is(s.matryoshkaDimensions!.length, 2);
    t.true(s.matryoshkaDimensions![0] > s.matryoshkaDimensions![1], 'largest first');
    s.matryoshkaDimensions!.forEach((d, i) => t.is(s.matryoshkaWeights![i], m.weights[m.dimensions.indexOf(d)]));
    s.matryoshkaDimensions!.forEach((d) => seen.add(d));
  }
  t.is(seen.size, 4, 'every width is drawn over 40 batches');
});

test('train({ loss: { matryoshka } }) reports each width\'s metrics, writes them into the model card, and refuses bad options', async (t) => {
  const data = wordDataset(30, 21);
  const output = path.join(tempDir(), 'model');
  const result = await train({
    model: FIXTURE, data, output, epochs: 2, batchSize: 8, learningRate: 1e-3, valSplit: 0.3, device: 'cpu', seed: 4,
    loss: { matryoshka: { dimensions: [8, 32, 16], weights: [1, 1, 0.5] } },
  });
  for (const m of [result.before!, result.after!]) {
    t.deepEqual(m.dimensions!.map((d) => d.dimension), [32, 16, 8]);
    // The full width's metrics are the main ones.
    t.is(m.dimensions![0]['recall@1'], m['recall@1']);
    t.is(m.dimensions![0]['mrr@10'], m['mrr@10']);
    for (const d of m.dimensions!) t.true(d['recall@1'] >= 0 && d['recall@1'] <= 1 && d['mrr@10'] >= d['recall@1']);
  }
  // The cut widths' metrics are those of embed({ truncateDim }) on the validation split: recomputed here for 8.
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.deepEqual(history.config.matryoshka, { dimensions: [32, 16, 8], weights: [1, 0.5, 1], perStep: 3 });
  const card = fs.readFileSync(path.join(output, 'README.md'), 'utf8');
  t.regex(card, /## Matryoshka widths/);
  t.regex(card, /\| 8 \| \d\.\d{3} \/ \d\.\d{3} \| \d\.\d{3} \/ \d\.\d{3} \|/);
  t.regex(card, /truncate_dim=8/);
  const kept = await Encoder.load(output, { device: 'cpu', truncateDim: 8 });
  t.is(kept.dimension, 8);
  kept.dispose();

  const bad = async (loss: object, pattern: RegExp, extra: object = {}) => {
    const error = await train({ model: FIXTURE, data, output: path.join(tempDir(), 'bad'), device: 'cpu', loss, ...extra } as any).catch((e) => e);
    t.true(error instanceof ColtrastError, JSON.stringify(loss));
    t.regex(error.message, pattern);
  };
  await bad({ matryoshka: { dimensions: [64, 16] } }, /matryoshka\.dimensions: 64 is wider than the pooled vectors of .* \(32\)/);
  await bad({ matryoshka: { dimensions: [16, 16] } }, /distinct widths/);
  await bad({ matryoshka: { dimensions: [] } }, /non-empty array/);
  await bad({ matryoshka: { dimensions: [16, 8], weights: [1] } }, /an array of 2 weights/);
  await bad({ matryoshka: { dimensions: [16, 8], weights: [0, 0] } }, /at least one weight above 0/);
  await bad({ matryoshka: { dimensions: [16, 8], dimensionsPerStep: 3 } }, /at most the 2 widths/);
  await bad({ matryoshka: { dimensions: [16], extra: 1 } }, /unknown option options\.loss\.matryoshka\.extra/);
  await bad({ matryoshka: { dimensions: [16] }, contrastiveWeight: 0 }, /needs loss\.contrastiveWeight > 0, distillation, options\.loss\.pairs or options\.loss\.triplet/);
  await bad({ matryoshka: { dimensions: [16] } }, /projection head/, { projection: { dimension: 8 } });
  await bad({ matryoshka: { dimensions: [16] } }, /pooled vectors/, { multiVector: { dimension: 16 } });
});

test('coltrast train --matryoshka and embed --truncate-dim', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(16, 5).map((p) => JSON.stringify(p)).join('\n'));
  const model = path.join(dir, 'model');
  const out = spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', data, '--output', model, '--batch-size', '4', '--val-split', '0.25', '--matryoshka', '32,8', '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000 });
  t.is(out.status, 0, out.stderr);
  t.regex(out.stdout, /width +8: before Recall@1 \d\.\d{3}, MRR@10 \d\.\d{3}; after Recall@1/);
  const texts = path.join(dir, 'texts.txt');
  fs.writeFileSync(texts, 'a cat\nfast search\n');
  const embedded = spawnSync(process.execPath, [CLI, 'embed', texts, '--model', model, '--truncate-dim', '8', '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000 });
  t.is(embedded.status, 0, embedded.stderr);
  const lines = embedded.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.is(lines.length, 2);
  t.is(lines[0].embedding.length, 8);
  const badFlag = spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', data, '--output', path.join(dir, 'bad'), '--matryoshka', '32,x'], { encoding: 'utf8', timeout: 240_000 });
  t.not(badFlag.status, 0);
  t.regex(badFlag.stderr, /--matryoshka must be positive integers/);
});
