// options.signal for the long calls besides training and generation: embed(), a cross-encoder's predict() and rank(),
// mineHardNegatives(), Rag.create()'s embedding of the corpus; and train()'s work before its first step (mining, a
// teacher's scores, a guide's vectors, the validation metrics before training), which went on to its end after an
// abort (the run stopped at its first step).
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, CrossEncoder, Encoder, Generator, Rag, mineHardNegatives, train, trainRag } from '../lib';
import { FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { TINY_GENERATOR, TINY_RAG_CORPUS, TINY_RAG_QA } from './helpers/rag-data';
import { rejection } from './helpers/vectors';

const CROSS_ENCODER = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const texts = Array.from({ length: 10 }, (_, i) => `text number ${i} about ${'word '.repeat(i)}`);
const NOTHING_WRITTEN = (run: string) => `${run} was aborted (options.signal) before its first step: nothing was written`;

/**
 * `Class.prototype[method]` made to abort `controller` as it is called (the first call), counting its calls and those
 * that went on to their end. The tests that use it are serial: AVA runs those before the others, which see the method as it is.
 */
function abortAtCall<C extends { prototype: any }>(Class: C, method: string, controller: AbortController) {
  const original = Class.prototype[method];
  const seen = { calls: 0, finished: 0 };
  Class.prototype[method] = function (this: unknown, ...args: unknown[]) {
    seen.calls++;
    controller.abort();
    const out: Promise<unknown> = original.apply(this, args);
    out.then(() => seen.finished++, () => undefined);
    return out;
  };
  return { seen, restore: () => (Class.prototype[method] = original) };
}

/** A ColTrast project file of four small projects, one question each. */
function projectFile(): string {
  const projects = ['river bank water', 'money paper cafe', 'quick brown fox', 'search fast small'].map((words, i) => ({
    project_id: `p${i}`,
    readme_content: `the ${words}. a ${words} test. hello world.`,
    qa_pairs: [{ question: `what about ${words.split(' ')[0]}?`, answer: words.split(' ')[1] }],
  }));
  const file = path.join(tempDir(), 'projects.json');
  fs.writeFileSync(file, JSON.stringify({ projects }));
  return file;
}

function nothingWritten(t: ExecutionContext, output: string): void {
  t.false(fs.existsSync(output), `${output} exists`);
  t.false(fs.existsSync(`${output}.checkpoint`), `${output}.checkpoint exists`);
}

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
  // Said as mining's abort, not as the embed() call's under it.
  t.is(error.message, 'mineHardNegatives() was aborted (options.signal) in its corpus stage');
  t.false(stages.includes('search'), `stages: ${[...new Set(stages)]}`);
  t.regex((await rejection(() => mineHardNegatives({ data: wordDataset(8), model: FIXTURE, device: 'cpu', signal: AbortSignal.abort() }))).message, /^mineHardNegatives\(\) was aborted \(options\.signal\) in its corpus stage$/);
  // Options are checked before the signal: their mistakes are said as such.
  t.regex((await rejection(() => mineHardNegatives({ data: wordDataset(8), model: FIXTURE, plaid: { nprobe: 0 }, signal: AbortSignal.abort() }))).message, /options\.plaid\.nprobe/);
  t.regex((await rejection(() => mineHardNegatives({ data: wordDataset(8), model: FIXTURE, signal: 'stop' as any }))).message, /^options\.signal must be an AbortSignal/);
  // Aborted as the search ends: the cross-encoder's rescoring does not start.
  const late = new AbortController();
  const rescoring = await rejection(() =>
    mineHardNegatives({
      data: wordDataset(12), model: FIXTURE, crossEncoder: CROSS_ENCODER, device: 'cpu', signal: late.signal,
      onProgress: (p) => p.stage === 'search' && p.done === p.total && late.abort(),
    }),
  );
  t.is(rescoring.message, 'mineHardNegatives() was aborted (options.signal) in its rescore stage');
});

test('Rag.create(): an abort stops the corpus\'s embedding between batches with ABORTED naming Rag.create(); an aborted signal reads nothing', async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(TINY_GENERATOR, { device: 'cpu' });
  try {
    // More documents than one embed() batch (32) holds: without the signal passed down, all of them were embedded.
    const corpus = Array.from({ length: 100 }, (_, i) => `document ${i} about ${'thing '.repeat(i % 7)}`);
    const controller = new AbortController();
    const seen: number[] = [];
    const error = await rejection(() => Rag.create({ retriever, generator, corpus, signal: controller.signal, onProgress: (done) => (seen.push(done), controller.abort()) }));
    t.is((error as ColtrastError).code, 'ABORTED');
    t.regex(error.message, /^Rag\.create\(\) was aborted \(options\.signal\) after embedding \d+ of 100 documents$/);
    t.true(Math.max(...seen) < 100, `documents embedded: ${seen}`);
    const missing = path.join(tempDir(), 'no-such-corpus.txt');
    t.is((await rejection(() => Rag.create({ retriever, generator, corpus: missing, signal: AbortSignal.abort() }))).message, 'Rag.create() was aborted (options.signal) before it embedded the corpus');
    t.regex((await rejection(() => Rag.create({ retriever, generator, corpus, signal: 'stop' as any }))).message, /^options\.signal must be an AbortSignal/);
    // Not aborted: a Rag over the whole corpus.
    t.is((await Rag.create({ retriever, generator, corpus: corpus.slice(0, 40), signal: new AbortController().signal })).documents, 40);
  } finally {
    generator.dispose();
    retriever.dispose();
  }
});

// Each abort comes with the phase's first model call (embed() or predict()), after the model has loaded: deterministic,
// and past every check train() made before (its signal is looked at before reading the data and before the model
// loads). Without the signal passed down, the phase ran to its end (every call finished) and the run stopped after it.
test.serial('train(): an abort while it mines hard negatives ends it at once as an abort before its first step, writing nothing', async (t) => {
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const { seen, restore } = abortAtCall(Encoder, 'embed', controller);
  try {
    const error = await rejection(() => train({ model: FIXTURE, data: wordDataset(24), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', mineNegatives: true, signal: controller.signal }));
    t.is((error as ColtrastError).code, 'ABORTED');
    t.is(error.message, NOTHING_WRITTEN('train()'));
    t.deepEqual(seen, { calls: 1, finished: 0 }, 'mining stopped at its first embed() call');
  } finally {
    restore();
  }
  nothingWritten(t, output);
});

test.serial("train(): an abort while it chunks and mines a ColTrast project file stops there", async (t) => {
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const { seen, restore } = abortAtCall(Encoder, 'embed', controller);
  try {
    const error = await rejection(() => train({ model: FIXTURE, data: projectFile(), output, epochs: 1, batchSize: 2, valSplit: 0, device: 'cpu', signal: controller.signal }));
    t.is(error.message, NOTHING_WRITTEN('train()'));
    t.deepEqual(seen, { calls: 1, finished: 0 }, 'chunking stopped at its first embed() call');
  } finally {
    restore();
  }
  nothingWritten(t, output);
});

test.serial("train(): an abort while the teacher scores the examples, or before its model loads, stops there", async (t) => {
  const pairs = wordDataset(12);
  const data = pairs.map((p, i) => ({ ...p, negatives: [pairs[(i + 1) % 12].positive] }));
  const run = (output: string, signal: AbortSignal) => train({ model: FIXTURE, data, teacher: CROSS_ENCODER, output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', signal });
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const { seen, restore } = abortAtCall(CrossEncoder, 'predict', controller);
  try {
    t.is((await rejection(() => run(output, controller.signal))).message, NOTHING_WRITTEN('train()'));
    t.deepEqual(seen, { calls: 1, finished: 0 }, "the teacher's predict() stopped before its first batch");
  } finally {
    restore();
  }
  nothingWritten(t, output);
  // Aborted as the student loads: the teacher does not load at all.
  const early = new AbortController();
  const load = Encoder.load;
  const teacherLoad = CrossEncoder.load;
  let teacherLoads = 0;
  Encoder.load = (async (...args: Parameters<typeof load>) => {
    const encoder = await load.apply(Encoder, args);
    early.abort();
    return encoder;
  }) as typeof load;
  CrossEncoder.load = ((...args: Parameters<typeof teacherLoad>) => (teacherLoads++, teacherLoad.apply(CrossEncoder, args))) as typeof teacherLoad;
  try {
    t.is((await rejection(() => run(output, early.signal))).message, NOTHING_WRITTEN('train()'));
    t.is(teacherLoads, 0);
  } finally {
    Encoder.load = load;
    CrossEncoder.load = teacherLoad;
  }
  nothingWritten(t, output);
});

test.serial("train(): an abort while a guide embeds the texts stops there", async (t) => {
  const pairs = wordDataset(12);
  const data = pairs.map((p, i) => ({ ...p, negatives: [pairs[(i + 3) % 12].positive] }));
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const { seen, restore } = abortAtCall(Encoder, 'embed', controller);
  try {
    const error = await rejection(() => train({ model: FIXTURE, data, guide: FIXTURE, output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', signal: controller.signal }));
    t.is(error.message, NOTHING_WRITTEN('train()'));
    t.deepEqual(seen, { calls: 1, finished: 0 }, "the guide's embed() stopped before its first batch");
  } finally {
    restore();
  }
  nothingWritten(t, output);
});

test.serial("trainRag(): an abort while it chunks a ColTrast project file, or embeds the corpus for its first retrieval, stops there", async (t) => {
  const base = { retriever: FIXTURE, generator: TINY_GENERATOR, k: 2, epochs: 1, batchSize: 2, device: 'cpu' as const, progressBar: false };
  for (const data of [{ data: projectFile() }, { data: TINY_RAG_QA, corpus: TINY_RAG_CORPUS }]) {
    const output = path.join(tempDir(), 'out');
    const controller = new AbortController();
    const { seen, restore } = abortAtCall(Encoder, 'embed', controller);
    try {
      t.is((await rejection(() => trainRag({ ...base, ...data, output, signal: controller.signal }))).message, NOTHING_WRITTEN('trainRag()'));
      // Chunking counts each project's sentences, then embeds them: the first embed() call is stopped before its first
      // batch, and the other projects' chunking, under way beside it, starts no call after the abort (calls left
      // running after trainRag() rejected would land in the next test's counts).
      t.is(seen.finished, 0, `${seen.calls} embed() calls, ${seen.finished} run to their end`);
      if (!('corpus' in data)) t.is(seen.calls, 1);
      else t.is(seen.calls, 1, 'the corpus, not then the questions');
    } finally {
      restore();
    }
    nothingWritten(t, output);
  }
});

test.serial('train(): an abort during the validation before training (its loss batches, then its metrics\' embed() calls) stops there', async (t) => {
  const run = (output: string, signal: AbortSignal) => train({ model: FIXTURE, data: wordDataset(24), output, epochs: 1, batchSize: 2, valSplit: 0.5, device: 'cpu', signal });
  // Aborted by the first validation batch's loss: the other batches and the metrics are not computed.
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const createTrainer = Encoder.prototype.createTrainer;
  const evaluated = { calls: 0 };
  Encoder.prototype.createTrainer = async function (this: Encoder, ...args: Parameters<typeof createTrainer>) {
    const trainer = await createTrainer.apply(this, args);
    const evaluate = trainer.evaluate.bind(trainer);
    trainer.evaluate = (...a: Parameters<typeof evaluate>) => (evaluated.calls++, controller.abort(), evaluate(...a));
    return trainer;
  };
  const embeds = abortAtCall(Encoder, 'embed', new AbortController());
  try {
    t.is((await rejection(() => run(output, controller.signal))).message, NOTHING_WRITTEN('train()'));
    t.is(evaluated.calls, 1, 'one validation batch');
    t.is(embeds.seen.calls, 0, 'no metrics');
  } finally {
    Encoder.prototype.createTrainer = createTrainer;
    embeds.restore();
  }
  nothingWritten(t, output);
  // Aborted by the metrics' first embed() call: it stops before its first batch.
  const late = path.join(tempDir(), 'out');
  const lateController = new AbortController();
  const { seen, restore } = abortAtCall(Encoder, 'embed', lateController);
  try {
    t.is((await rejection(() => run(late, lateController.signal))).message, NOTHING_WRITTEN('train()'));
    t.deepEqual(seen, { calls: 1, finished: 0 }, "the metrics' embed() stopped before its first batch");
  } finally {
    restore();
  }
  nothingWritten(t, late);
});
