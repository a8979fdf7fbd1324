// trainRag() at its edges, as train()'s (test/train-probe.test.ts): a run whose retriever or generator diverges, and
// numbers past float32's range.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Generator, trainRag, type RagTrainOptions } from '../lib';
import { FIXTURE, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { TINY_GENERATOR, TINY_RAG_CORPUS, TINY_RAG_QA } from './helpers/rag-data';

const GENERATOR = TINY_GENERATOR;
const CORPUS = TINY_RAG_CORPUS;
const DATA = TINY_RAG_QA;
const base = { retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, k: 2, epochs: 1, batchSize: 6, device: 'cpu' as const, progressBar: false };

/** Whether the retriever and the generator saved in `dir` give finite outputs. */
async function finiteModels(dir: string): Promise<{ retriever: boolean; generator: boolean }> {
  const retriever = await Encoder.load(path.join(dir, 'retriever'), { device: 'cpu' });
  const generator = await Generator.load(path.join(dir, 'generator'), { device: 'cpu' });
  const embedded = (await retriever.embed(['hello world', 'a quick brown fox'])).data;
  const ll = await generator.logLikelihood([{ prompt: 'hello', completion: ' world' }]);
  retriever.dispose();
  generator.dispose();
  return { retriever: embedded.every((x) => Number.isFinite(x)), generator: ll.every((x) => Number.isFinite(x)) };
}

test("a step that makes the retriever's or the generator's weights overflow stops the run naming the step; no models of NaNs are saved", async (t) => {
  // One step of 1e30: its own loss is finite, the weights after it are not. The run resolved and saved a retriever
  // whose embeddings were all NaN.
  const cases: [string, Partial<RagTrainOptions>][] = [
    ["the retriever's embeddings", { learningRate: 1e30 }],
    // τ at float32's largest leaves the retriever's gradients about 1e-39, whose square Adam's v rounds to 0: its
    // update stays small while the generator's is 1e30. The run saved a generator whose log-likelihoods were NaN.
    ["the generator's log-likelihoods", { learningRate: 1e30, temperature: 3e38, weightDecay: 0 }],
  ];
  for (const [outputs, options] of cases) {
    const output = path.join(tempDir(), 'rag');
    const error = await rejection(() => trainRag({ ...base, ...options, output }));
    t.is(error.code, 'INVALID_ARGUMENT');
    t.is(error.message, `${outputs} are NaN or infinite after step 1: training diverged (lower options.learningRate, keep gradient clipping on, or train in float32). Nothing was saved`);
    t.false(fs.existsSync(output), `${outputs}: nothing written`);
    t.false(fs.existsSync(`${output}.checkpoint`));
  }
  // A frozen generator is not trained: the same run trains the retriever alone and ends with both models finite.
  const output = path.join(tempDir(), 'rag');
  await trainRag({ ...base, ...cases[1][1], output, freezeGenerator: true });
  t.deepEqual(await finiteModels(output), { retriever: true, generator: true });
});

test('a run that diverges keeps its last good checkpoint and the models of its last good epoch, and says so', async (t) => {
  // A learning rate of 1000, a checkpoint every step: the weights overflow after a few steps. The native step refused
  // the next one with no word of what was kept, and a checkpoint written after that step would hold them.
  const output = path.join(tempDir(), 'rag');
  const error = await rejection(() => trainRag({ ...base, output, epochs: 3, batchSize: 2, learningRate: 1000, warmupRatio: 0, checkpointEvery: 1 }));
  const match = /(?:after|at) step (\d+): training diverged .* Nothing after it was saved: (?:(.+) holds the retriever and generator of epoch (\d+), and )?(.+) the checkpoint of step (\d+)$/.exec(error.message);
  t.truthy(match, error.message);
  const [, failed, kept, epoch, checkpoint, checkpointStep] = match!;
  t.is(Number(checkpointStep), Number(failed) - 1, 'every step writes a checkpoint: the one before it is kept');
  t.is(checkpoint, `${output}.checkpoint`);
  t.is(JSON.parse(fs.readFileSync(path.join(checkpoint, 'state.json'), 'utf8')).state.step, Number(checkpointStep));
  t.deepEqual(await finiteModels(checkpoint), { retriever: true, generator: true }, 'the checkpoint kept is a good one');
  if (kept) {
    t.is(kept, output);
    t.true(Number(epoch) >= 1);
    t.deepEqual(await finiteModels(output), { retriever: true, generator: true });
  }
});

test('numbers past float32 are refused before the run, naming the option', async (t) => {
  const output = path.join(tempDir(), 'rag');
  // The learning rate and the clipping norm failed in the native step with libtorch's "value cannot be converted to
  // type float without overflow"; the weight decay saved a retriever of NaNs, and τ = 1e-40 ended as "the gradient
  // norm is NaN".
  for (const [name, value] of [['learningRate', 1e39], ['maxGradNorm', 1e39], ['weightDecay', 1e39]] as const) {
    t.is(
      (await rejection(() => trainRag({ ...base, output, [name]: value }))).message,
      `options.${name} must be at most 3.4e38 (float32's largest), got number 1e+39`,
    );
  }
  for (const temperature of [1e39, 1e-40]) {
    t.regex((await rejection(() => trainRag({ ...base, output, temperature }))).message, /^options\.temperature must be from 1\.2e-38 to 3\.4e38 \(float32's normal range\), got number/);
  }
  t.false(fs.existsSync(output));
});
