// Contrastive Tension (train({ contrastiveTension })): the sentence reader; the native trainer with a twin,
// whose loss is the symmetric in-batch contrastive loss between the twin's query vectors and the model's
// document vectors (checked against a float64 reference from each model's embed(), before and after the two
// copies have drifted apart), with gradient caching equal to the plain step; train() end to end (the loss
// falls, the model and not the twin is saved, a killed run resumes to the uninterrupted run's weights, which
// needs the twin's checkpoint), the CLI, and the errors.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, train } from '../lib';
import { readSentences } from '../lib/train-data';
import { checkKillAndResume } from './helpers/resume';
import { rejection, rows } from './helpers/vectors';
import { FIXTURE, STEP, dropoutOff, fixtureCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const TAU = 0.05;
const SENTENCES = wordDataset(40, 31).map((p) => p.positive);
const CT_STEP = { ...STEP, contrastiveWeight: 1, lateInteractionWeight: 0, symmetric: true };

const noDropout = fixtureCopy(dropoutOff);

test('readSentences: arrays, .txt, .jsonl of strings or {text}, and pairs; each sentence once; the errors', async (t) => {
  const dir = tempDir();
  const txt = path.join(dir, 's.txt');
  fs.writeFileSync(txt, 'one sentence\r\n\n  two sentences  \none sentence\n');
  t.deepEqual(await readSentences(txt), ['one sentence', 'two sentences']);
  const jsonl = path.join(dir, 's.jsonl');
  fs.writeFileSync(jsonl, '"a"\n{"text": "b"}\n{"query": "c", "positive": "a", "negatives": ["d"]}\n');
  t.deepEqual(await readSentences(jsonl), ['a', 'b', 'c', 'd']);
  t.deepEqual(await readSentences(['x', { text: 'y' }, 'x']), ['x', 'y']);
  const json = path.join(dir, 's.json');
  fs.writeFileSync(json, JSON.stringify(['e', { text: 'f' }, { query: 'g', positive: 'e' }]));
  t.deepEqual(await readSentences(json), ['e', 'f', 'g']);
  fs.writeFileSync(jsonl, '"a"\n{"text": 3}\n');
  await t.throwsAsync(readSentences(jsonl), { message: /s\.jsonl:2: "text" must be a non-empty string/ });
  await t.throwsAsync(readSentences(['same', 'same']), { message: /holds 1 distinct sentence; Contrastive Tension needs at least two/ });
  await t.throwsAsync(readSentences(path.join(dir, 'missing.txt')), { message: /missing\.txt does not exist/ });
  const project = path.join(dir, 'p.json');
  fs.writeFileSync(project, JSON.stringify({ projects: [{ project_id: 'p', readme_content: 'doc', qa_pairs: [{ question: 'q', answer: 'a' }] }] }));
  await t.throwsAsync(readSentences(project), { message: /Contrastive Tension trains on sentences: .*not a ColTrast project file/ });
  fs.writeFileSync(json, '["a",');
  await t.throwsAsync(readSentences(json), { message: /s\.json:1:6: not valid JSON/ });
});

/** Float64 symmetric InfoNCE between L2-normalized rows: row i of `a` matches row i of `b`. */
function symmetricInfoNce(a: number[][], b: number[][], tau: number): number {
  const unit = (v: number[]) => {
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const ua = a.map(unit);
  const ub = b.map(unit);
  const s = ua.map((x) => ub.map((y) => x.reduce((acc, xi, k) => acc + xi * y[k], 0) / tau));
  const ce = (m: number[][]) =>
    m.reduce((sum, row, i) => {
      const top = Math.max(...row);
      return sum + top + Math.log(row.reduce((e, x) => e + Math.exp(x - top), 0)) - row[i];
    }, 0) / m.length;
  const transposed = s[0].map((_, j) => s.map((row) => row[j]));
  return (ce(s) + ce(transposed)) / 2;
}

test('native: the twin encodes the queries and the model the documents; the loss is their symmetric contrastive loss, before and after they drift apart', async (t) => {
  const model = await Encoder.load(FIXTURE, { device: 'cpu' });
  const twin = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const trainer = await model.createTrainer({ learningRate: 3e-3, seed: 3 }, false, twin);
    const batch = SENTENCES.slice(0, 9);
    const reference = async () =>
      symmetricInfoNce(rows(await twin.embed(batch, { normalize: true })), rows(await model.embed(batch, { normalize: true })), TAU);
    const evaluate = async () => (await trainer.evaluate(batch, batch, { ...CT_STEP, learningRate: 0, apply: false })).loss;
    const before = await evaluate();
    const expectedBefore = await reference();
    t.true(Math.abs(before - expectedBefore) < 1e-5, `loss ${before} vs float64 ${expectedBefore}`);
    const probe = ['model token vector search'];
    const start = (await model.embed(probe)).data;
    for (let i = 0; i < 4; i++) await trainer.step(SENTENCES.slice(9 * i, 9 * i + 9), SENTENCES.slice(9 * i, 9 * i + 9), CT_STEP);
    const [m, w] = [(await model.embed(probe)).data, (await twin.embed(probe)).data];
    t.true(maxAbsDiff(m, start) > 1e-3, 'the model trained');
    t.true(maxAbsDiff(w, start) > 1e-3, 'the twin trained');
    t.true(maxAbsDiff(m, w) > 1e-4, 'the two copies drew different dropout and now differ');
    const after = await evaluate();
    const expectedAfter = await reference();
    t.true(Math.abs(after - expectedAfter) < 1e-5, `after training: loss ${after} vs float64 ${expectedAfter}`);
    // One direction on distinct texts: the twin's queries against the model's documents, and not the other way.
    const direct = (await trainer.evaluate(batch.slice(0, 5), batch.slice(1, 6), { ...CT_STEP, symmetric: false, learningRate: 0, apply: false })).loss;
    const oneWay = (q: number[][], d: number[][]) => {
      const s = q.map((x) => d.map((y) => x.reduce((acc, xi, k) => acc + xi * y[k], 0) / TAU));
      return s.reduce((sum, row, i) => sum + Math.log(row.reduce((e, x) => e + Math.exp(x), 0)) - row[i], 0) / s.length;
    };
    const expected = oneWay(rows(await twin.embed(batch.slice(0, 5), { normalize: true })), rows(await model.embed(batch.slice(1, 6), { normalize: true })));
    t.true(Math.abs(direct - expected) < 1e-5, `queries by the twin, documents by the model: ${direct} vs ${expected}`);
    t.true(Math.abs(direct - oneWay(rows(await model.embed(batch.slice(0, 5), { normalize: true })), rows(await twin.embed(batch.slice(1, 6), { normalize: true })))) > 1e-4);
    trainer.dispose();
  } finally {
    twin.dispose();
    model.dispose();
  }
});

test('native: gradient caching with a twin gives the plain step\'s losses and both copies\' weights (dropout off)', async (t) => {
  const run = async (miniBatchSize?: number) => {
    const model = await Encoder.load(noDropout, { device: 'cpu' });
    const twin = await Encoder.load(noDropout, { device: 'cpu' });
    try {
      // Without dropout two equal copies would get equal gradients and stay equal: the twin starts one step apart.
      const apart = await twin.createTrainer({ learningRate: 1e-2, seed: 1 });
      await apart.step(SENTENCES.slice(30, 36), SENTENCES.slice(31, 37), STEP);
      apart.dispose();
      const trainer = await model.createTrainer({ learningRate: 1e-3, seed: 5 }, false, twin);
      const losses = [];
      for (let i = 0; i < 3; i++) {
        const b = SENTENCES.slice(7 * i, 7 * i + 7);
        losses.push((await trainer.step(b, b, { ...CT_STEP, ...(miniBatchSize ? { miniBatchSize } : {}) })).loss);
      }
      trainer.dispose();
      const probe = ['model token vector search'];
      return { losses, model: (await model.embed(probe)).data, twin: (await twin.embed(probe)).data };
    } finally {
      twin.dispose();
      model.dispose();
    }
  };
  const plain = await run();
  const cached = await run(3);
  // The loss is a difference of log-sum-exps of logits up to 1 / TAU = 20, each rounded in float32 (~20 * 6e-8), and the
  // mini-batches' products round otherwise than the whole batch's (another BLAS blocking): on an AVX2 machine's
  // OpenBLAS the two differed by 1.5e-6 at step 3 (a loss of 0.046) while the gradient norms agreed to 1.5e-6 relative.
  plain.losses.forEach((l, i) => t.true(Math.abs(cached.losses[i] - l) < 1e-5 + 1e-5 * Math.abs(l), `step ${i + 1}: ${cached.losses[i]} vs ${l}`));
  t.true(maxAbsDiff(plain.model, plain.twin) > 1e-3, 'the copies differ');
  t.true(maxAbsDiff(cached.model, plain.model) < 1e-5, `model weights differ by ${maxAbsDiff(cached.model, plain.model)}`);
  t.true(maxAbsDiff(cached.twin, plain.twin) < 1e-5, `twin weights differ by ${maxAbsDiff(cached.twin, plain.twin)}`);
});

test('native: a twin must be a second copy of the same embedding model', async (t) => {
  const model = await Encoder.load(FIXTURE, { device: 'cpu' });
  const other = await Encoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-decoders', 'qwen3'), { device: 'cpu' });
  try {
    await t.throwsAsync(() => model.createTrainer({}, false, model), { message: /the twin must be a second copy of the model, not the model itself/ });
    await t.throwsAsync(() => model.createTrainer({}, false, other), { message: /twin must be the same embedding model as the trained one/ });
  } finally {
    other.dispose();
    model.dispose();
  }
});

test('train({ contrastiveTension }): sentences in, the loss falls, the model (not the twin) is saved, and the card says so', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'sentences.txt');
  fs.writeFileSync(data, `${SENTENCES.join('\n')}\n`);
  const output = path.join(dir, 'out');
  const result = await train({ model: FIXTURE, data, output, epochs: 3, batchSize: 8, learningRate: 2e-3, device: 'cpu', contrastiveTension: true, checkpointEvery: 0 });
  const epochs = result.history.epochs;
  t.is(epochs.length, 3);
  t.is(result.history.steps.length, 15, '40 sentences, batches of 8, 3 epochs (valSplit 0 by default)');
  t.true(epochs[2].trainLoss < epochs[0].trainLoss * 0.8, `train loss ${epochs.map((e) => e.trainLoss.toFixed(3)).join(' -> ')}`);
  t.true(result.history.steps.every((s) => s.lateInteraction === 0 && s.contrastive > 0));
  t.false(fs.existsSync(path.join(output, 'twin')));
  t.false(fs.existsSync(`${output}.checkpoint`));
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Contrastive Tension/);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.like(history.config, { contrastiveTension: true, valSplit: 0, prompts: false, step: { contrastiveWeight: 1, lateInteractionWeight: 0, symmetric: true } });
  const trained = await Encoder.load(output, { device: 'cpu' });
  const base = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    t.true(maxAbsDiff((await trained.embed(['model text'])).data, (await base.embed(['model text'])).data) > 1e-3);
  } finally {
    trained.dispose();
    base.dispose();
  }
});

test('train({ contrastiveTension }): a run killed mid-epoch resumes (twin and all) to the uninterrupted run\'s weights', (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'sentences.txt');
  fs.writeFileSync(data, `${SENTENCES.slice(0, 24).join('\n')}\n`);
  checkKillAndResume(t, { model: FIXTURE, data, epochs: 2, batchSize: 8, learningRate: 2e-3, device: 'cpu', contrastiveTension: true, checkpointEvery: 2, seed: 9 }, {
    steps: 6,
    killAt: 4,
    checkpointAt: 4,
  });
});

test('CLI: coltrast train --contrastive-tension on a text file', (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'sentences.txt');
  fs.writeFileSync(data, `${SENTENCES.slice(0, 16).join('\n')}\n`);
  const output = path.join(dir, 'out');
  execFileSync(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'train', '--model', FIXTURE, '--data', data, '--output', output, '--contrastive-tension', '--batch-size', '8', '--device', 'cpu'], { encoding: 'utf8', stdio: 'pipe' });
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.true(history.config.contrastiveTension);
  t.is(history.history.steps.length, 2);
});

test('train({ contrastiveTension }): the errors name what does not go with it', async (t) => {
  const base = { model: FIXTURE, data: SENTENCES, output: path.join(tempDir(), 'x'), batchSize: 8, device: 'cpu' as const, contrastiveTension: true };
  t.regex((await rejection(() => train({ ...base, multiVector: {} }))).message, /options\.contrastiveTension trains a single-vector embedding model on unlabeled sentences; drop options\.multiVector/);
  t.regex((await rejection(() => train({ ...base, teacher: FIXTURE, guide: FIXTURE }))).message, /drop options\.teacher, options\.guide/);
  t.regex((await rejection(() => train({ ...base, loss: { lateInteractionWeight: 0.5 } }))).message, /leave loss\.lateInteractionWeight and loss\.distillationWeight out/);
  t.regex((await rejection(() => train({ ...base, loss: { contrastiveWeight: 0 } }))).message, /needs loss\.contrastiveWeight > 0/);
  t.regex((await rejection(() => train({ ...base, data: ['only one'] }))).message, /holds 1 distinct sentence/);
});
