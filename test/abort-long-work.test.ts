// options.signal for the long calls besides training and generation: embed(), a cross-encoder's predict() and rank(),
// mineHardNegatives(); and train()'s work before its first step (mining, a teacher's scores, a guide's vectors),
// which went on to its end after an abort (the run stopped at its first step).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, CrossEncoder, Encoder, mineHardNegatives, train } from '../lib';
import { FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const CROSS_ENCODER = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const texts = Array.from({ length: 10 }, (_, i) => `text number ${i} about ${'word '.repeat(i)}`);

test('embed(): an abort stops it between batches with ABORTED; an aborted signal before any work; a signal of the wrong type is named', async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const controller = new AbortController();
    const seen: number[] = [];
    const error = await rejection(() =>
      encoder.embed(texts, { batchSize: 2, signal: controller.signal, onProgress: (done) => (seen.push(done), done === 2 && controller.abort()) }),
    );
    t.is((error as ColtrastError).code, 'ABORTED');
    t.regex(error.message, /^embed\(\) was aborted \(options\.signal\) after \d+ of 10 inputs$/);
    t.true(Math.max(...seen) < 10, `batches done: ${seen}`);
    const before = await rejection(() => encoder.embed(texts, { signal: AbortSignal.abort() }));
    t.is(before.message, 'embed() was aborted (options.signal) after 0 of 10 inputs');
    const wrong = await rejection(() => encoder.embed(texts, { signal: { aborted: true } as any }));
    t.is((wrong as ColtrastError).code, 'INVALID_ARGUMENT');
    t.regex(wrong.message, /^options\.signal must be an AbortSignal/);
    // Not aborted: the same vectors as without a signal.
    t.deepEqual(await encoder.embed(texts, { batchSize: 2, signal: new AbortController().signal }), await encoder.embed(texts, { batchSize: 2 }));
  } finally {
    encoder.dispose();
  }
});

test("a cross-encoder's predict() and rank() stop at an abort between batches", async (t) => {
  const ce = await CrossEncoder.load(CROSS_ENCODER, { device: 'cpu' });
  try {
    const pairs = texts.map((d): [string, string] => ['a query', d]);
    const controller = new AbortController();
    const error = await rejection(() => ce.predict(pairs, { batchSize: 3, signal: controller.signal, onProgress: (done) => done === 3 && controller.abort() }));
    t.is((error as ColtrastError).code, 'ABORTED');
    t.regex(error.message, /^predict\(\) was aborted \(options\.signal\) after \d+ of 10 inputs$/);
    const ranked = await rejection(() => ce.rank('a query', texts, { signal: AbortSignal.abort() }));
    t.is(ranked.message, 'rank() was aborted (options.signal) after 0 of 10 inputs');
    t.regex((await rejection(() => ce.predict(pairs, { signal: 'stop' as any }))).message, /^options\.signal must be an AbortSignal/);
  } finally {
    ce.dispose();
  }
});

test('mineHardNegatives(): an abort while the corpus is embedded stops it with ABORTED', async (t) => {
  const controller = new AbortController();
  const stages: string[] = [];
  const error = await rejection(() =>
    mineHardNegatives({
      data: wordDataset(24), model: FIXTURE, device: 'cpu', batchSize: 4, signal: controller.signal,
      onProgress: (p) => (stages.push(p.stage), p.stage === 'corpus' && p.done > 0 && controller.abort()),
    }),
  );
  t.is((error as ColtrastError).code, 'ABORTED');
  t.false(stages.includes('search'), `stages: ${[...new Set(stages)]}`);
  t.regex((await rejection(() => mineHardNegatives({ data: wordDataset(8), model: FIXTURE, device: 'cpu', signal: AbortSignal.abort() }))).message, /^mineHardNegatives\(\) was aborted \(options\.signal\) in its corpus stage$/);
});

// The abort comes with mining's first embed() call, after the model has loaded: deterministic, and past every check
// train() made before (its signal is looked at before reading the data and before the model loads).
test.serial("train(): an abort while it mines hard negatives ends it at once as an abort before its first step, writing nothing", async (t) => {
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const embed = Encoder.prototype.embed;
  let calls = 0;
  Encoder.prototype.embed = function (this: Encoder, ...args: Parameters<typeof embed>) {
    calls++;
    controller.abort();
    return embed.apply(this, args);
  } as typeof embed;
  try {
    const error = await rejection(() => train({ model: FIXTURE, data: wordDataset(24), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', mineNegatives: true, signal: controller.signal }));
    t.is((error as ColtrastError).code, 'ABORTED');
    t.is(error.message, 'train() was aborted (options.signal) before its first step: nothing was written');
    t.is(calls, 1, 'mining stopped at its first embed() call');
  } finally {
    Encoder.prototype.embed = embed;
  }
  t.false(fs.existsSync(output));
  t.false(fs.existsSync(`${output}.checkpoint`));
});
