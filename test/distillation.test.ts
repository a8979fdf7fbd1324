// Distillation from a teacher's scores (train({ teacher }) or `scores` in the data): the batches' teacher
// candidates, the native MarginMSE and KL losses against a float64 reference computed from embed(), a run that
// follows a teacher where the labels disagree with it, a cross-encoder teacher end to end (API and CLI), and
// the errors.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, train } from '../lib';
import { scoreWithTeacher } from '../lib/train';
import { loadExamples, makeBatches, type TrainExample } from '../lib/train-data';
import { checkKillAndResume } from './helpers/resume';
import { dot, makeSmallMultiVector, rejection, rows, tokenRows } from './helpers/vectors';
import { FIXTURE, STEP, dropoutOff, fixtureCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const TEACHER = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'st');
const THREE_LABELS = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'hf');
const TAU = 0.05;

/** Word-dataset triplets: each query's negatives are two other examples' positives. */
function triplets(n: number, seed = 11): TrainExample[] {
  const pairs = wordDataset(n, seed);
  return pairs.map((p, i) => ({ ...p, negatives: [pairs[(i + 1) % n].positive, pairs[(i + 5) % n].positive] }));
}

test("makeBatches: each query's teacher candidates are its positive and its own negatives, by index in the batch", (t) => {
  const examples: TrainExample[] = [
    { query: 'q0', positive: 'p0', negatives: ['n0', 'p1', 'shared'], scores: [5, 1, 2, 3] },
    { query: 'q1', positive: 'p1', negatives: ['shared', 'p1'], scores: [6, 4, 9] },
    { query: 'q2', positive: 'p2', scores: [7] },
  ];
  const [batch] = makeBatches(examples, 3);
  t.deepEqual(batch.documents, ['p0', 'p1', 'p2', 'n0', 'shared']);
  // q0: n0 -> 3, p1 (another query's positive) -> 1, shared -> 4. q1: shared -> 4, its own positive -> none.
  t.is(batch.teacher!.perQuery, 4);
  t.deepEqual([...batch.teacher!.candidates], [0, 3, 1, 4, 1, 4, -1, -1, 2, -1, -1, -1]);
  t.deepEqual([...batch.teacher!.scores], [5, 1, 2, 3, 6, 4, 0, 0, 7, 0, 0, 0]);
  // maxNegatives leaves `shared` out of the batch: its score goes with it.
  const [cut] = makeBatches(examples, 3, 1);
  t.deepEqual(cut.documents, ['p0', 'p1', 'p2', 'n0']);
  t.deepEqual([...cut.teacher!.candidates], [0, 3, 1, -1, 1, -1, -1, -1, 2, -1, -1, -1]);
  t.is(makeBatches([{ query: 'q', positive: 'p' }], 1)[0].teacher, undefined);
  t.throws(() => makeBatches([examples[0], { query: 'q', positive: 'p' }], 2), { message: /teacher scores are given for some examples only/ });
});

test('scores in the data: one per document, finite numbers; the error names the line', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'scored.jsonl');
  fs.writeFileSync(file, '{"query": "q", "positive": "p", "negatives": ["n1", "n2"], "scores": [3.5, -1, 0.25]}\n');
  t.deepEqual(await loadExamples(file), [{ query: 'q', positive: 'p', negatives: ['n1', 'n2'], scores: [3.5, -1, 0.25] }]);
  fs.writeFileSync(file, '{"query": "q", "positive": "p"}\n{"query": "q", "positive": "p", "negatives": ["n1"], "scores": [1]}\n');
  await t.throwsAsync(loadExamples(file), { message: /scored\.jsonl:2: "scores" holds 1 numbers; it needs 2: the positive's teacher score, then one per negative/ });
  fs.writeFileSync(file, '{"query": "q", "positive": "p", "negatives": ["n1"], "scores": [1, "2"]}\n');
  await t.throwsAsync(loadExamples(file), { message: /scored\.jsonl:1: "scores" must be an array of finite numbers/ });
});

/** Float64 MarginMSE or KL over student and teacher rows (candidate 0 the positive; NaN: missing). */
function referenceLoss(student: number[][], teacher: number[][], kind: 'margin_mse' | 'kl'): number {
  if (kind === 'margin_mse') {
    let sum = 0;
    let count = 0;
    student.forEach((s, i) =>
      s.forEach((x, k) => {
        if (k === 0 || Number.isNaN(x)) return;
        sum += (s[0] - x - (teacher[i][0] - teacher[i][k])) ** 2;
        count++;
      }),
    );
    return sum / count;
  }
  const logSoftmax = (row: number[]) => {
    const kept = row.filter((x) => !Number.isNaN(x));
    const max = Math.max(...kept);
    const lse = max + Math.log(kept.reduce((a, x) => a + Math.exp(x - max), 0));
    return row.map((x) => x - lse);
  };
  let total = 0;
  student.forEach((s, i) => {
    const ls = logSoftmax(s);
    const lt = logSoftmax(teacher[i]);
    lt.forEach((l, k) => {
      if (!Number.isNaN(l)) total += Math.exp(l) * (l - ls[k]);
    });
  });
  return total / student.length;
}

test("the native MarginMSE and KL losses equal a float64 reference from embed(): cosine / temperature, and a multi-vector model's MaxSim", async (t) => {
  const examples = triplets(6).map((e, i) => ({ ...e, scores: [4 - i, i % 3, -2 + i] }));
  // Five queries: the sixth's positive is a negative of the batch, which gives a shared index too.
  const [batch] = makeBatches(examples.slice(0, 5), 5);
  const { candidates, scores, perQuery } = batch.teacher!;
  const teacherRows = Array.from({ length: 5 }, (_, i) => Array.from({ length: perQuery }, (_, k) => (candidates[i * perQuery + k] < 0 ? NaN : scores[i * perQuery + k])));
  const studentRows = (score: (i: number, c: number) => number) =>
    teacherRows.map((_, i) => Array.from({ length: perQuery }, (_, k) => (candidates[i * perQuery + k] < 0 ? NaN : score(i, candidates[i * perQuery + k]) / TAU)));
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const q = rows(await encoder.embed(batch.queries, { task: 'query', normalize: true }));
    const d = rows(await encoder.embed(batch.documents, { task: 'document', normalize: true }));
    const pooled = studentRows((i, c) => dot(q[i], d[c]));
    const trainer = await encoder.createTrainer({ seed: 1 });
    for (const [kind, teacherTemperature] of [['margin_mse', 1], ['kl', 1], ['kl', 3]] as const) {
      const options = { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, distillationWeight: 1, distillation: kind, teacherTemperature, apply: false, teacher: batch.teacher };
      const r = await trainer.evaluate(batch.queries, batch.documents, options);
      const expected = referenceLoss(pooled, teacherRows.map((row) => row.map((x) => x / teacherTemperature)), kind);
      t.true(expected > 0.01);
      t.true(Math.abs(r.distillation - expected) < 1e-4 * expected, `${kind}, teacher temperature ${teacherTemperature}: ${r.distillation} vs ${expected}`);
      t.true(Math.abs(r.loss - expected) < 1e-4 * expected);
      // Weighted and added to the other losses.
      const both = await trainer.evaluate(batch.queries, batch.documents, { ...options, contrastiveWeight: 0.5, distillationWeight: 2 });
      t.true(Math.abs(both.loss - (0.5 * both.contrastive + 2 * both.distillation)) < 1e-5 * both.loss);
    }
    trainer.dispose();

    await makeSmallMultiVector(encoder);
    const qt = await tokenRows(encoder, batch.queries, 'query');
    const dt = await tokenRows(encoder, batch.documents, 'document');
    const maxsim = studentRows((i, c) => qt[i].reduce((s, v) => s + Math.max(...dt[c].map((w) => dot(v, w))), 0) / qt[i].length);
    const multi = await encoder.createTrainer({ seed: 1 });
    const options = { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, distillationWeight: 1, distillation: 'kl' as const, apply: false, teacher: batch.teacher };
    const r = await multi.evaluate(batch.queries, batch.documents, options);
    const expected = referenceLoss(maxsim, teacherRows, 'kl');
    t.true(Math.abs(r.distillation - expected) < 1e-4 * expected, `multi-vector kl: ${r.distillation} vs ${expected}`);
    multi.dispose();
  } finally {
    encoder.dispose();
  }
});

test('gradient caching: mini-batches give the plain steps\' distillation losses, gradient norms and weights (pooled MarginMSE, multi-vector KL)', async (t) => {
  const noDropout = fixtureCopy(dropoutOff);
  const data = triplets(7, 31);
  const [batch] = makeBatches(data.map((e, i) => ({ ...e, scores: [i, 3 - i, 2 * i - 4] })), 7);
  const run = async (multiVector: boolean, miniBatchSize?: number) => {
    const encoder = await Encoder.load(noDropout, { device: 'cpu' });
    if (multiVector) await makeSmallMultiVector(encoder);
    const trainer = await encoder.createTrainer({ learningRate: 1e-3, seed: 5 });
    const options = {
      ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, distillationWeight: 1, distillation: multiVector ? ('kl' as const) : ('margin_mse' as const),
      teacher: batch.teacher, ...(miniBatchSize ? { miniBatchSize } : {}),
    };
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await trainer.step(batch.queries, batch.documents, options));
    const probe = await encoder.embed(['model token vector search'], { output: 'tokens' });
    trainer.dispose();
    encoder.dispose();
    return { results, probe: probe[0].data };
  };
  for (const multiVector of [false, true]) {
    const plain = await run(multiVector);
    const cached = await run(multiVector, 3);
    cached.results.forEach((r, i) => {
      const p = plain.results[i];
      t.true(Math.abs(r.distillation - p.distillation) < 1e-5 * p.distillation, `step ${i + 1}: ${r.distillation} vs ${p.distillation}`);
      t.true(Math.abs(r.gradNorm - p.gradNorm) < 1e-4 * p.gradNorm && p.gradNorm > 0);
    });
    t.not(plain.results[0].distillation, plain.results[2].distillation);
    t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5, `multiVector ${multiVector}: weights differ by ${maxAbsDiff(cached.probe, plain.probe)}`);
  }
});

test('distillation makes the student follow its teacher: with margins that favour the negatives, the negatives come to outrank the positives', async (t) => {
  const base = triplets(24);
  const mean = async (model: string, which: 'positive' | 'negative') => {
    const encoder = await Encoder.load(model, { device: 'cpu' });
    const q = rows(await encoder.embed(base.map((e) => e.query), { task: 'query', normalize: true }));
    const docs = rows(await encoder.embed(base.map((e) => (which === 'positive' ? e.positive : e.negatives![0])), { task: 'document', normalize: true }));
    encoder.dispose();
    return q.reduce((s, v, i) => s + dot(v, docs[i]), 0) / q.length;
  };
  // The teacher likes each query's first negative far more than its positive.
  const data = base.map((e) => ({ ...e, scores: [0, 10, -5] }));
  const output = path.join(tempDir(), 'student');
  const before = (await mean(FIXTURE, 'negative')) - (await mean(FIXTURE, 'positive'));
  const result = await train({
    model: FIXTURE, data, output, epochs: 6, batchSize: 8, learningRate: 3e-3, valSplit: 0, device: 'cpu',
    loss: { contrastiveWeight: 0, lateInteractionWeight: 0 },
  });
  const after = (await mean(output, 'negative')) - (await mean(output, 'positive'));
  const steps = result.history.steps;
  t.true(steps.every((s) => s.contrastive === 0 && s.lateInteraction === 0 && s.distillation === s.loss));
  const first = steps.slice(0, 3).reduce((s, x) => s + x.distillation, 0);
  const last = steps.slice(-3).reduce((s, x) => s + x.distillation, 0);
  t.true(last < 0.8 * first, `distillation loss ${first / 3} -> ${last / 3}`);
  t.true(before < 0.05 && after > before + 0.1, `mean cos(negative) - cos(positive): ${before} -> ${after}`);
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Distilled from: the data's teacher scores \(MarginMSE, weight 1\)/);
});

test("options.teacher: a cross-encoder's logits score every positive and negative before training, and the run distills them (API and CLI)", async (t) => {
  const data = triplets(16);
  const ce = await CrossEncoder.load(TEACHER, { device: 'cpu' });
  const logits = await ce.predict(
    data.flatMap((e) => [e.positive, ...e.negatives!].map((d): [string, string] => [e.query, d])),
    { activation: 'identity' },
  );
  ce.dispose();
  const scored = await scoreWithTeacher(TEACHER, [...data.slice(0, 2).map((e) => ({ ...e, scores: [1, 2, 3] })), ...data.slice(2)], { device: 'cpu' });
  t.deepEqual(scored[0].scores, [1, 2, 3], 'scores already given are kept');
  // Batched differently from this predict() call: equal up to float32 rounding.
  t.true(maxAbsDiff(scored.slice(2).flatMap((e) => e.scores!), logits.data.subarray(6)) < 1e-5);
  t.is(data[2].scores, undefined, "the caller's examples are not changed");

  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'triplets.jsonl'), data.map((e) => JSON.stringify(e)).join('\n'));
  const output = path.join(dir, 'student');
  const stdout = execFileSync(
    process.execPath,
    [path.join(ROOT, 'dist', 'cli.js'), 'train', '--model', FIXTURE, '--data', path.join(dir, 'triplets.jsonl'), '--output', output,
      '--teacher', TEACHER, '--distillation', 'kl', '--distillation-weight', '0.5', '--epochs', '1', '--batch-size', '4', '--val-split', '0.25', '--device', 'cpu', '--json'],
    { encoding: 'utf8' },
  );
  t.truthy(JSON.parse(stdout).after);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.is(history.config.teacher, TEACHER);
  t.like(history.config.step, { distillation: 'kl', distillationWeight: 0.5, contrastiveWeight: 0.5 });
  for (const s of history.history.steps) {
    t.true(s.distillation > 0 && s.contrastive > 0);
    t.true(Math.abs(s.loss - (0.5 * s.contrastive + 0.5 * s.lateInteraction + 0.5 * s.distillation)) < 1e-4 * s.loss);
  }
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Distilled from: `.*tiny-cross-encoder.st` \(KL divergence, weight 0\.5\)/);
});

test('a distillation run killed mid-epoch resumes from its checkpoint (the teacher scores with it) to the same weights', (t) => {
  const base = { model: FIXTURE, data: triplets(20), teacher: TEACHER, epochs: 2, batchSize: 4, learningRate: 1e-3, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2 };
  // 16 training examples, batches of 4: 4 steps per epoch, 8 in all; killed mid-epoch 2, one step after the checkpoint at 6.
  checkKillAndResume(t, base, { steps: 8, killAt: 7, checkpointAt: 6 });
});

test('distillation errors name the problem before any training', async (t) => {
  const base = { model: FIXTURE, output: path.join(tempDir(), 'x'), epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu' as const };
  const data = triplets(8);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ data, loss: { distillationWeight: 1 } }, /distillationWeight needs teacher scores: options\.teacher \(a cross-encoder\) or "scores" in the data/],
    [{ data: [{ ...data[0], scores: [1, 2, 3] }, ...data.slice(1)] }, /1 of the 8 examples have teacher scores: give them for every example or none/],
    [{ data: wordDataset(8), teacher: TEACHER }, /distillation compares each positive with hard negatives, and no example has any/],
    [{ data, teacher: THREE_LABELS }, /has 3 labels; a teacher gives one score per pair/],
    [{ data, teacher: TEACHER, crossEncoder: true }, /options\.crossEncoder: options\.teacher is for embedding models/],
    [{ data, teacher: '' }, /options\.teacher/],
    [{ data, loss: { distillation: 'mse' } }, /options\.loss\.distillation/],
    [{ data, loss: { contrastiveWeight: 0, lateInteractionWeight: 0 } }, /at least one loss weight must be > 0 \(or the examples need teacher scores/],
    [{ data, loss: { contrastiveWeight: 0, lateInteractionWeight: 0, distillationWeight: 0 } }, /at least one loss weight must be > 0$/],
  ];
  for (const [options, pattern] of cases) {
    const error = await rejection(() => train({ ...base, ...options } as Parameters<typeof train>[0]));
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, pattern);
  }
  t.false(fs.existsSync(base.output));
});
