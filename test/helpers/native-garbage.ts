// Run by test/native-boundary.test.ts in a child process of its own (a crash there is a signal, not a lost test
// worker), with a temporary folder as its argument, which becomes its working directory (a garbage file name may be
// written as a file there). It calls every
// native entry point with valid arguments mutated one field at a time into garbage (wrong types, negative, huge and
// non-finite numbers, typed arrays of the wrong kind or length, throwing getters), and prints one JSON line: how
// many calls, each call's outcome ('ok' or the error's code and message), the calls that threw something other than
// an Error, and whether the model that took the garbage still embeds exactly as before.
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, Generator, SparseEncoder } from '../../lib';
import { native, type NativeEncoder } from '../../lib/native';
import type { ModelHandle } from '../../lib/native-model';
import { padBatch } from '../../lib/tokenizer';
import { STEP } from './fixture';

const FIXTURES = path.resolve(__dirname, '..', 'fixtures');

const throwingGetter = Object.defineProperty({}, 'x', {
  enumerable: true,
  get() {
    throw new Error('a getter that throws');
  },
});
const GARBAGE: [string, unknown][] = [
  ['undefined', undefined], ['null', null], ['0', 0], ['-1', -1], ['1.5', 1.5], ['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity],
  ['2^31', 2 ** 31], ['2^32', 2 ** 32], ['2^53', 2 ** 53], ['-2^40', -(2 ** 40)], ['1e300', 1e300], ["''", ''], ["'x'", 'x'], ['true', true],
  ['{}', {}], ['[]', []], ['[1,2]', [1, 2]], ['[[1]]', [[1]]], ['Float32Array(0)', new Float32Array(0)], ['Float32Array(7)', new Float32Array(7)],
  ['Int32Array(0)', new Int32Array(0)], ['Int32Array(5) of -5', new Int32Array(5).fill(-5)], ['Int32Array(4) of 2^30', new Int32Array(4).fill(2 ** 30)],
  ['Uint8Array(3)', new Uint8Array(3)], ['Float64Array(4)', new Float64Array(4)], ['a function', () => 1], ['10n', 10n],
  ['a throwing getter', throwingGetter], ['Object.create(null)', Object.create(null)],
];

const outcomes: Record<string, string> = {};
const nonErrors: string[] = [];

// COLTRAST_GARBAGE_TRACE names a file that gets each call's label before the call: its last line names a call that
// crashed. A file, not stderr: writeSync to a pipe can fail with EAGAIN while the reader is busy.
const trace = process.env.COLTRAST_GARBAGE_TRACE ? fs.openSync(process.env.COLTRAST_GARBAGE_TRACE, 'w') : undefined;

async function attempt(label: string, call: () => unknown): Promise<void> {
  if (trace !== undefined) fs.writeSync(trace, `${label}\n`);
  try {
    await call();
    outcomes[label] = 'ok';
  } catch (error) {
    if (!(error instanceof Error)) {
      nonErrors.push(`${label}: ${String(error)}`);
      outcomes[label] = 'non-error';
    } else {
      outcomes[label] = `${(error as { code?: string }).code ?? error.name}: ${error.message.split('\n')[0]}`;
    }
  }
}

/** `call` with `base`, then with each of its fields replaced by each garbage value, then with garbage in its place. */
async function mutate(name: string, base: Record<string, unknown>, call: (arg: unknown) => unknown): Promise<void> {
  for (const key of Object.keys(base)) {
    for (const [label, value] of GARBAGE) await attempt(`${name} ${key}=${label}`, () => call({ ...base, [key]: value }));
  }
  for (const [label, value] of GARBAGE) await attempt(`${name}(${label})`, () => call(value));
}

/** `call` with each garbage value as its argument number `index` (the others as given). */
async function each(name: string, args: unknown[], index: number, call: (...args: unknown[]) => unknown): Promise<void> {
  for (const [label, value] of GARBAGE) await attempt(`${name} argument ${index}=${label}`, () => call(...args.map((a, i) => (i === index ? value : a))));
}

const handleOf = (encoder: Encoder | CrossEncoder) => (encoder as unknown as { model: ModelHandle }).model.current();

async function main() {
  process.chdir(process.argv[2]);
  const addon = native();
  const encoder = await Encoder.load(path.join(FIXTURES, 'tiny-bert'), { device: 'cpu' });
  const model: NativeEncoder = handleOf(encoder);
  const ids = await encoder.tokenize(['hello world', 'a cat and a dog']);
  const batch = padBatch(ids.map((row) => ({ ids: row, typeIds: row.map(() => 0) })));
  const embedBase = { ...batch, output: 'pooled', pooling: 'mean', normalize: true };
  const before = (await model.embed(embedBase as never)) as unknown as Float32Array;

  await mutate('embed', embedBase, (a) => model.embed(a as never));
  for (const output of ['tokens', 'scores']) await attempt(`embed output=${output}`, () => model.embed({ ...embedBase, output } as never));
  for (const [batchSize, seqLen] of [[2 ** 32, 2 ** 32], [-1, -1], [-2, -3], [2 ** 31, 2], [3e9, 1], [0, 5]]) {
    const empty = new Int32Array((batchSize * seqLen) % 2 ** 32 === 1 ? 1 : 0);
    await attempt(`embed shape ${batchSize}x${seqLen}`, () =>
      model.embed({ ...embedBase, inputIds: empty, attentionMask: empty, tokenTypeIds: empty, batchSize, seqLen } as never));
  }
  for (const id of [-1, 1e9, 2 ** 31 - 1]) await attempt(`embed ids of ${id}`, () => model.embed({ ...embedBase, inputIds: batch.inputIds.map(() => id) } as never));
  for (const type of [-1, 5, 1e9]) await attempt(`embed token types of ${type}`, () => model.embed({ ...embedBase, tokenTypeIds: batch.tokenTypeIds.map(() => type) } as never));
  await mutate('logLikelihood', { ...batch, outputMask: batch.attentionMask }, (a) => model.logLikelihood(a as never));
  await mutate('generate', { prompts: [batch.inputIds.slice(0, batch.seqLen)], maxNewTokens: 2 }, (a) => model.generate(a as never));
  await each('saveWeights', ['weights.safetensors', 'float32'], 0, (...a) => (model.saveWeights as (...x: unknown[]) => unknown)(...a));
  await each('saveWeights', ['weights.safetensors', 'float32'], 1, (...a) => (model.saveWeights as (...x: unknown[]) => unknown)(...a));
  await each('saveLora', ['lora.safetensors', 'float32'], 0, (...a) => (model.saveLora as (...x: unknown[]) => unknown)(...a));
  await attempt('info', () => model.info());

  // Calls that may change a model, on a second one.
  const other = handleOf(await Encoder.load(path.join(FIXTURES, 'tiny-bert'), { device: 'cpu' }));
  await mutate('addProjection', { outFeatures: 8, tanh: false, seed: 1 }, (a) => other.addProjection(a as never));
  await mutate('addLora', { targets: ['query'], rank: 2, scale: 1, dropout: 0, seed: 1, modulesToSave: [] }, (a) => other.addLora(a as never));
  await each('loadLora', ['missing.safetensors', { scale: 1, dropout: 0, modulesToSave: [] }], 0, (...a) => (other.loadLora as (...x: unknown[]) => unknown)(...a));
  await each('loadLora', ['missing.safetensors', { scale: 1, dropout: 0, modulesToSave: [] }], 1, (...a) => (other.loadLora as (...x: unknown[]) => unknown)(...a));

  // A causal LM's entry points.
  const generator = (await Generator.load(path.join(FIXTURES, 'tiny-causal-lms', 'llama'), { device: 'cpu' })).nativeHandle().current();
  const prompt = new Int32Array([1, 5, 6, 7]);
  await mutate('generate (causal LM)', { prompts: [prompt], maxNewTokens: 3, temperature: 0, numBeams: 1 }, (a) => generator.generate(a as never));
  await mutate('logLikelihood (causal LM)', { ...padBatch([{ ids: [1, 5, 6, 7], typeIds: [0, 0, 0, 0] }]), outputMask: new Int32Array([0, 0, 1, 1]) }, (a) =>
    generator.logLikelihood(a as never));

  // Trainers: their options, and a step's arguments.
  await each('NativeTrainer.create', [model, {}], 0, (...a) => (addon.NativeTrainer.create as (...x: unknown[]) => unknown)(...a));
  await mutate('NativeTrainer.create options', { learningRate: 1e-3, seed: 1, precision: 'float32' }, (a) => addon.NativeTrainer.create(other, a as never));
  const trainer = await encoder.createTrainer({ learningRate: 0, seed: 1 });
  const prepared = await trainer.prepare(['a cat', 'hello'], ['a cat and a dog', 'hello world']);
  const native_ = addon.NativeTrainer.create(model, { learningRate: 0, weightDecay: 0, seed: 1 });
  const stepBase = { queries: prepared.queries, documents: prepared.documents, pooling: 'mean', ...STEP, learningRate: 0, projectTokens: false };
  await mutate('step', stepBase, (a) => native_.evaluate(a as never));
  // The step's optional parts, one at a time over a valid step (2 queries, 2 documents).
  const extras: Record<string, Record<string, unknown>> = {
    'gradient caching': { miniBatchSize: 1, verifyMiniBatches: true },
    matryoshka: { matryoshkaDimensions: [4, 8], matryoshkaWeights: [1, 0.5] },
    distillation: { distillationWeight: 1, distillation: 'kl', teacherTemperature: 2, teacher: { candidates: new Int32Array([0, 1, 1, -1]), scores: new Float32Array([1, 0, 1, 0]), perQuery: 2 } },
    guide: { guide: { documents: new Uint8Array([0, 1, 0, 0]), queries: new Uint8Array(4), positives: new Uint8Array(4) } },
    'pair loss': { contrastiveWeight: 0, lateInteractionWeight: 0, pairLoss: 'online_contrastive', pairLabels: new Float32Array([1, 0]), pairScale: 20, pairMargin: 0.5 },
    'triplet loss': { contrastiveWeight: 0, lateInteractionWeight: 0, tripletDistance: 'manhattan', tripletMargin: 2, normalizedVectors: false, tripletNegatives: Int32Array.from([1, 0]) },
  };
  for (const [name, extra] of Object.entries(extras)) {
    await mutate(`step with ${name}`, { ...stepBase, ...extra }, (a) => native_.evaluate(a as never));
    for (const [key, value] of Object.entries(extra)) {
      if (value === null || typeof value !== 'object' || Array.isArray(value) || ArrayBuffer.isView(value)) continue;
      await mutate(`step with ${name}: ${key}`, value as Record<string, unknown>, (a) => native_.evaluate({ ...stepBase, ...extra, [key]: a } as never));
    }
  }
  for (const key of ['matryoshkaDimensions', 'matryoshkaWeights']) {
    for (const [label, value] of GARBAGE) {
      await attempt(`step with matryoshka: ${key}[1]=${label}`, () => native_.evaluate({ ...stepBase, ...extras.matryoshka, [key]: [4, value] } as never));
    }
  }
  // A cross-encoder's step: its pairs (2 queries with 2 documents each), on a cross-encoder and on a model without a score head.
  const pairs = padBatch([0, 1, 2, 3].map(() => ({ ids: ids[0], typeIds: ids[0].map(() => 0) })));
  const pairStep = { ...STEP, pairs, documentsPerQuery: 2, crossEncoder: true, crossEncoderLoss: 'bce', scoreActivation: 'identity', scale: 2, learningRate: 0 };
  await attempt('cross-encoder step on an embedding model', () => native_.evaluate(pairStep as never));
  const reranker = handleOf(await CrossEncoder.load(path.join(FIXTURES, 'tiny-cross-encoder', 'st'), { device: 'cpu' }));
  const rerankerTrainer = addon.NativeTrainer.create(reranker, { learningRate: 0, seed: 1 });
  await mutate('cross-encoder step', pairStep, (a) => rerankerTrainer.evaluate(a as never));
  await mutate('cross-encoder labeled step', { ...pairStep, documentsPerQuery: 1, pairLabels: Float32Array.from([1, 0, 0.5, 1]) }, (a) => rerankerTrainer.evaluate(a as never));
  rerankerTrainer.dispose();
  // A sparse encoder's steps: SPLADE's (queries against documents) and masked-language-model training's (inputs and labels).
  const splade = (await SparseEncoder.load(path.join(FIXTURES, 'tiny-sparse', 'bert'), { device: 'cpu' })) as unknown as { model: ModelHandle };
  const spladeTrainer = addon.NativeTrainer.create(splade.model.current(), { learningRate: 0, seed: 1 });
  await mutate('sparse step', { ...stepBase, sparse: true, spladePooling: 'max', spladeActivation: 'relu', queryRegularizer: 1e-3, documentRegularizer: 1e-3 }, (a) => spladeTrainer.evaluate(a as never));
  const inputs = padBatch([{ ids: [2, 9, 4, 11, 3], typeIds: [0, 0, 0, 0, 0] }, { ids: [2, 4, 3], typeIds: [0, 0, 0] }]);
  const labels = Int32Array.from([-100, -100, 10, -100, -100, -100, 12, -100, -100, -100]);
  await mutate('mlm step', { ...STEP, learningRate: 0, mlm: true, inputs, labels }, (a) => spladeTrainer.evaluate(a as never));
  for (const [label, bad] of [['no label', new Int32Array(10).fill(-100)], ['a label at padding', Int32Array.from([-100, -100, 10, -100, -100, -100, 12, -100, -100, 5])], ['a label past the vocabulary', Int32Array.from([-100, -100, 10 ** 6, -100, -100, -100, 12, -100, -100, -100])], ['too few labels', new Int32Array(3)]] as const) {
    await attempt(`mlm step with ${label}`, () => spladeTrainer.evaluate({ ...STEP, learningRate: 0, mlm: true, inputs, labels: bad } as never));
  }
  spladeTrainer.dispose();
  await each('saveState', ['state.safetensors'], 0, (...a) => (native_.saveState as (...x: unknown[]) => unknown)(...a));
  await each('loadState', ['missing.safetensors'], 0, (...a) => (native_.loadState as (...x: unknown[]) => unknown)(...a));
  native_.dispose();
  await attempt('step after dispose', () => native_.evaluate(stepBase as never));

  // The loss operations.
  const tensor = (dims: number[]) => ({ dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i)) });
  await mutate('contrastiveLoss', { q: tensor([3, 4]), c: tensor([5, 4]), temperature: 0.1 }, (a) => addon.ops.contrastiveLoss(a as never));
  await mutate('maxsim', { q: tensor([2, 3, 4]), d: tensor([3, 5, 4]) }, (a) => addon.ops.maxsim(a as never));
  await mutate('lateInteractionLoss', { q: tensor([2, 3, 4]), d: tensor([3, 5, 4]), temperature: 0.1 }, (a) => addon.ops.lateInteractionLoss(a as never));
  for (const dims of [[-1, 4], [0, 4], [2 ** 31, 2 ** 31], [3], [3, 4, 5, 6], [1e10, 0]]) {
    await attempt(`contrastiveLoss q dims ${dims}`, () => addon.ops.contrastiveLoss({ q: { dims, data: new Float32Array(12) }, c: tensor([5, 4]), temperature: 0.1 }));
  }
  for (const dims of [[-1, 3, 4], [2, -3, 4], [2 ** 31, 2 ** 31, 1], [2, 3], [0, 0, 0]]) {
    await attempt(`maxsim q dims ${dims}`, () => addon.ops.maxsim({ q: { dims, data: new Float32Array(24) }, d: tensor([3, 5, 4]) }));
  }

  // The vector stores.
  const { NativeDenseStore, NativeResidualStore } = addon as unknown as Record<string, new (...a: unknown[]) => Record<string, (...a: unknown[]) => unknown>>;
  await each('NativeDenseStore', [4, 'float32'], 0, (...a) => new NativeDenseStore(...a));
  await each('NativeDenseStore', [4, 'float32'], 1, (...a) => new NativeDenseStore(...a));
  await each('NativeResidualStore', [4], 0, (...a) => new NativeResidualStore(...a));
  for (const storage of ['float32', 'float16', 'int8', 'binary']) {
    const store = new NativeDenseStore(4, storage);
    await store.add(Float32Array.from({ length: 12 }, (_, i) => Math.cos(i)));
    for (const method of ['add', 'remove', 'search', 'rows', 'save', 'load']) {
      await each(`dense ${storage} ${method}`, [new Float32Array(4), 2], 0, (...a) => store[method](...a));
      await each(`dense ${storage} ${method}`, [new Float32Array(4), 2], 1, (...a) => store[method](...a));
    }
  }
  const residual = new NativeResidualStore(4);
  for (const method of ['train', 'centroids', 'add', 'remove', 'search', 'rows', 'size', 'save', 'load']) {
    await each(`residual ${method}`, [new Float32Array(8), 2], 0, (...a) => residual[method](...a));
    await each(`residual ${method}`, [new Float32Array(8), 2], 1, (...a) => residual[method](...a));
  }

  // The runtime's functions (the thread count is set back after).
  await each('setNumThreads', [2], 0, (...a) => (addon.setNumThreads as (...x: unknown[]) => unknown)(...a));
  addon.setNumThreads(0);
  await each('cudaMemory', [0, {}], 0, (...a) => (addon.cudaMemory as (...x: unknown[]) => unknown)(...a));
  await each('cpuMemory', [{}], 0, (...a) => (addon.cpuMemory as (...x: unknown[]) => unknown)(...a));
  await each('NativeEncoder.load', [{}], 0, (...a) => (addon.NativeEncoder.load as (...x: unknown[]) => unknown)(...a));

  const after = (await model.embed(embedBase as never)) as unknown as Float32Array;
  const unchanged = after.length === before.length && after.every((v, i) => v === before[i]);
  other.dispose();
  await attempt('embed after dispose', () => other.embed(embedBase as never));
  process.stdout.write(`${JSON.stringify({ calls: Object.keys(outcomes).length, outcomes, nonErrors, unchanged })}\n`);
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack}\n`);
  process.exit(3);
});
