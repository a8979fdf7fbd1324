// GISTEmbed's guide (train({ guide })): the masks a guide's vectors give a batch, the native guided losses against
// a float64 reference computed from embed() (contrastive with the extra query and positive blocks, and late
// interaction), a guided run end to end (API and CLI, resume), and the errors.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, train } from '../lib';
import { guideMasks, type GuideSettings, type GuideVectors } from '../lib/guide';
import { makeBatches, type TrainExample } from '../lib/train-data';
import { checkKillAndResume } from './helpers/resume';
import { dot, makeSmallMultiVector, rows, tokenRows } from './helpers/vectors';
import { FIXTURE, STEP, editJson, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const TAU = 0.05;
/** The fixture with CLS pooling: a guide that disagrees with the (mean-pooling) student. */
const CLS_GUIDE = fixtureCopy((dir) =>
  editJson(path.join(dir, '1_Pooling', 'config.json'), (c) => ({ ...c, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false })),
);

function triplets(n: number, seed = 13): TrainExample[] {
  const pairs = wordDataset(n, seed);
  return pairs.map((p, i) => ({ ...p, negatives: [pairs[(i + 3) % n].positive + ' extra'] }));
}

const SETTINGS: GuideSettings = { marginStrategy: 'absolute', margin: 0, contrastQueries: true, contrastPositives: true };

test('guideMasks: a candidate goes when the guide scores it above the positive less the margin; the own positive stays, a text is never its own negative', (t) => {
  const v = (...x: number[]) => Float32Array.from(x);
  const vectors: GuideVectors = {
    queries: new Map([['q0', v(1, 0)], ['q1', v(0, 1)]]),
    documents: new Map([['p0', v(0.8, 0.6)], ['p1', v(0.6, 0.8)], ['n', v(1, 0)]]),
  };
  const batch = { queries: ['q0', 'q1'], documents: ['p0', 'p1', 'n'] };
  // q0: p0 0.8 (its positive), p1 0.6, n 1.0 > 0.8: out. q1: p1 0.8, p0 0.6, n 0.
  const masks = guideMasks(batch, vectors, SETTINGS);
  t.deepEqual([...masks.documents], [0, 0, 1, 0, 0, 0]);
  // Queries: q0·q1 = 0 (kept), diagonals out. Positives: p0·p1 = 0.96 > 0.8 for both rows: out.
  t.deepEqual([...masks.queries!], [1, 0, 0, 1]);
  t.deepEqual([...masks.positives!], [1, 1, 1, 1]);
  // An absolute margin of 0.25 also drops the other positive of each query (0.6 > 0.8 - 0.25); a relative one of 0.5
  // does too (0.6 > 0.8 - 0.4), one of 0.1 does not (0.6 < 0.8 - 0.08).
  t.deepEqual([...guideMasks(batch, vectors, { ...SETTINGS, margin: 0.25 }).documents], [0, 1, 1, 1, 0, 0]);
  t.deepEqual([...guideMasks(batch, vectors, { ...SETTINGS, marginStrategy: 'relative', margin: 0.5 }).documents], [0, 1, 1, 1, 0, 0]);
  t.deepEqual([...guideMasks(batch, vectors, { ...SETTINGS, marginStrategy: 'relative', margin: 0.1 }).documents], [0, 0, 1, 0, 0, 0]);
  const plain = guideMasks(batch, vectors, { ...SETTINGS, contrastQueries: false, contrastPositives: false });
  t.is(plain.queries, undefined);
  t.is(plain.positives, undefined);
});

/** Mean over queries of the cross-entropy over the kept entries of each row's blocks (column i of the first is the label). */
function guidedReference(blocks: { score: (i: number, j: number) => number; columns: number; mask?: Uint8Array }[], B: number): number {
  let total = 0;
  for (let i = 0; i < B; i++) {
    const logits: number[] = [];
    for (const b of blocks) for (let j = 0; j < b.columns; j++) if (!b.mask?.[i * b.columns + j]) logits.push(b.score(i, j) / TAU);
    const max = Math.max(...logits);
    total += max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0)) - blocks[0].score(i, i) / TAU;
  }
  return total / B;
}

test("the native guided losses equal a float64 reference from embed(): the contrastive loss's blocks, late interaction over MaxSim", async (t) => {
  const [batch] = makeBatches(triplets(7), 7);
  const B = batch.queries.length;
  const N = batch.documents.length;
  // A guide that leaves out some of each kind: seeded, never a query's own positive, diagonals out.
  let seed = 3;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const documents = Uint8Array.from({ length: B * N }, (_, k) => (k % N !== Math.floor(k / N) && random() < 0.3 ? 1 : 0));
  const queries = Uint8Array.from({ length: B * B }, (_, k) => (k % B === Math.floor(k / B) || random() < 0.3 ? 1 : 0));
  const positives = Uint8Array.from({ length: B * B }, (_, k) => (k % B === Math.floor(k / B) || random() < 0.3 ? 1 : 0));
  t.true(documents.some((x) => x) && queries.some((x, k) => x && k % B !== Math.floor(k / B)));
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const q = rows(await encoder.embed(batch.queries, { task: 'query', normalize: true }));
    const d = rows(await encoder.embed(batch.documents, { task: 'document', normalize: true }));
    const trainer = await encoder.createTrainer({ seed: 1 });
    const options = { ...STEP, contrastiveWeight: 1, lateInteractionWeight: 0, apply: false };
    const qd = { score: (i: number, j: number) => dot(q[i], d[j]), columns: N, mask: documents };
    const qq = { score: (i: number, j: number) => dot(q[i], q[j]), columns: B, mask: queries };
    const pp = { score: (i: number, j: number) => dot(d[i], d[j]), columns: B, mask: positives };
    for (const [guide, blocks] of [
      [{ documents, queries, positives }, [qd, qq, pp]],
      [{ documents }, [qd]],
      [{ documents, positives }, [qd, pp]],
    ] as const) {
      const r = await trainer.evaluate(batch.queries, batch.documents, { ...options, guide });
      const expected = guidedReference([...blocks], B);
      t.true(Math.abs(r.contrastive - expected) < 1e-4 * expected, `${Object.keys(guide)}: ${r.contrastive} vs ${expected}`);
    }
    // A guide that leaves nothing out, without the extra blocks, is the plain (fused) contrastive loss.
    const plain = await trainer.evaluate(batch.queries, batch.documents, options);
    const none = await trainer.evaluate(batch.queries, batch.documents, { ...options, guide: { documents: new Uint8Array(B * N) } });
    t.true(Math.abs(none.contrastive - plain.contrastive) < 1e-5 * plain.contrastive);
    trainer.dispose();

    await makeSmallMultiVector(encoder);
    const qt = await tokenRows(encoder, batch.queries, 'query');
    const dt = await tokenRows(encoder, batch.documents, 'document');
    const maxsim = (i: number, j: number) => qt[i].reduce((s, v) => s + Math.max(...dt[j].map((w) => dot(v, w))), 0) / qt[i].length;
    const multi = await encoder.createTrainer({ seed: 1 });
    const r = await multi.evaluate(batch.queries, batch.documents, { ...options, contrastiveWeight: 0, lateInteractionWeight: 1, guide: { documents } });
    const expected = guidedReference([{ score: maxsim, columns: N, mask: documents }], B);
    t.true(Math.abs(r.lateInteraction - expected) < 1e-4 * expected, `late interaction: ${r.lateInteraction} vs ${expected}`);
    const unguided = await multi.evaluate(batch.queries, batch.documents, { ...options, contrastiveWeight: 0, lateInteractionWeight: 1 });
    t.true(unguided.lateInteraction > r.lateInteraction, 'leaving negatives out lowers the loss');
    multi.dispose();
  } finally {
    encoder.dispose();
  }
});

test('train({ guide }): the guide embeds the texts once and filters every batch (API and CLI; the model card says so)', async (t) => {
  const data = triplets(24);
  const output = path.join(tempDir(), 'guided');
  const result = await train({ model: FIXTURE, data, output, guide: { model: CLS_GUIDE, margin: 0.05 }, epochs: 2, batchSize: 6, learningRate: 1e-3, valSplit: 0.25, device: 'cpu' });
  t.true(result.history.steps.every((s) => Number.isFinite(s.loss) && s.contrastive > 0 && s.lateInteraction > 0));
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.like(history.config.guide, { model: CLS_GUIDE, margin: 0.05, marginStrategy: 'absolute', contrastQueries: true, contrastPositives: true });
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Negatives guided by: `.*` \(GISTEmbed, margin 0\.05, absolute\)/);
  // The same run unguided differs: the guide changed the loss.
  const unguided = await train({ model: FIXTURE, data, output: path.join(tempDir(), 'plain'), epochs: 1, batchSize: 6, learningRate: 1e-3, valSplit: 0.25, device: 'cpu' });
  t.not(unguided.history.steps[0].loss, result.history.steps[0].loss);

  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'triplets.jsonl'), data.map((e) => JSON.stringify(e)).join('\n'));
  execFileSync(
    process.execPath,
    [path.join(ROOT, 'dist', 'cli.js'), 'train', '--model', FIXTURE, '--data', path.join(dir, 'triplets.jsonl'), '--output', path.join(dir, 'cli'),
      '--guide', CLS_GUIDE, '--guide-margin', '0.1', '--guide-margin-strategy', 'relative', '--epochs', '1', '--batch-size', '6', '--device', 'cpu', '--json'],
    { encoding: 'utf8' },
  );
  const cli = JSON.parse(fs.readFileSync(path.join(dir, 'cli', 'training_history.json'), 'utf8'));
  t.like(cli.config.guide, { model: CLS_GUIDE, margin: 0.1, marginStrategy: 'relative' });
});

test('a guided run killed mid-epoch resumes (the guide embeds again) to the same weights', (t) => {
  const base = { model: FIXTURE, data: triplets(20), guide: CLS_GUIDE, epochs: 2, batchSize: 4, learningRate: 1e-3, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2 };
  checkKillAndResume(t, base, { steps: 8, killAt: 7, checkpointAt: 6 });
});

test('guide errors name the problem', async (t) => {
  const base = { model: FIXTURE, data: triplets(8), output: path.join(tempDir(), 'x'), epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu' as const };
  const multi = path.join(tempDir(), 'multi');
  await train({ ...base, output: multi, multiVector: { dimension: 8 } });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ guide: { model: FIXTURE, loss: 1 } }, /options\.guide.*loss/],
    [{ guide: { model: '' } }, /options\.guide\.model/],
    [{ guide: { model: FIXTURE, marginStrategy: 'max' } }, /options\.guide\.marginStrategy/],
    [{ guide: FIXTURE, loss: { symmetric: true } }, /the guided losses have no symmetric term/],
    [{ guide: FIXTURE, loss: { lateInteraction: 'bce' } }, /'bce' late-interaction loss has none to filter/],
    [{ guide: FIXTURE, crossEncoder: true }, /options\.crossEncoder: options\.guide is for embedding models/],
    [{ guide: multi }, /multi-vector .* a guide \(GISTEmbed compares one vector per text\) is not supported/],
  ];
  for (const [options, pattern] of cases) {
    const error = await (train({ ...base, ...options } as Parameters<typeof train>[0]) as Promise<unknown>).then(
      () => null,
      (e: unknown) => e,
    );
    t.true(error instanceof ColtrastError, `${JSON.stringify(options)}: ${error}`);
    t.regex((error as ColtrastError).message, pattern);
  }
});
