// Gradient checkpointing (train({ gradientCheckpointing }), native/models/checkpoint.h): each layer keeps only its
// input and recomputes its activations in backward, replaying the first pass's dropout masks and autocast dtype.
// Checked against the plain step, where the gradients must be the same: BERT with dropout on, in float32 and under
// bfloat16 autocast, alone and with gradient caching; MPNet, DeBERTa and T5, whose layers share a relative position table;
// a decoder generator in a ContextFlow step; train() from the API and the CLI ending with the same weights.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Generator, train } from '../lib';
import { native, type NativeStepOptions } from '../lib/native';
import { formatAnswer, formatPrompt, DEFAULT_TEMPLATE } from '../lib/rag';
import { padBatch } from '../lib/tokenizer';
import { FIXTURE, STEP, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { readSafetensors } from './helpers/safetensors';

const BATCHES = [0, 1, 2].map((i) => {
  const pairs = wordDataset(6, 300 + i);
  return { queries: pairs.map((p) => p.query), documents: pairs.map((p) => p.positive) };
});

/** Three steps on BATCHES (the fixture has dropout 0.1 on); each step's result and a probe text's vector after them. */
async function steps(trainer: Parameters<Encoder['createTrainer']>[0], step: Partial<NativeStepOptions> = {}, device: 'cpu' | 'cuda' = 'cpu') {
  const enc = await Encoder.load(FIXTURE, { device });
  try {
    const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 11, ...trainer });
    const results = [];
    for (const b of BATCHES) results.push(await tr.step(b.queries, b.documents, { ...STEP, ...step }));
    tr.dispose();
    return { results, probe: Array.from((await enc.embed(['model token vector search'])).data) };
  } finally {
    enc.dispose();
  }
}

for (const [name, trainer, step] of [
  ['float32', {}, {}],
  ['bfloat16 autocast', { precision: 'bfloat16' as const }, {}],
  ['gradient caching (mini-batches of 2)', {}, { miniBatchSize: 2 }],
] as const) {
  test(`${name}: with checkpointing, the same losses, gradient norms and weights as without (dropout on, its masks replayed)`, async (t) => {
    const plain = await steps(trainer, step);
    const checkpointed = await steps({ ...trainer, gradientCheckpointing: true }, step);
    t.deepEqual(checkpointed.results.map((r) => r.loss), plain.results.map((r) => r.loss));
    t.deepEqual(checkpointed.results.map((r) => r.gradNorm), plain.results.map((r) => r.gradNorm));
    t.deepEqual(checkpointed.probe, plain.probe);
    t.true(plain.results.every((r) => r.gradNorm > 0));
  });
}

for (const name of ['mpnet', 'deberta-v3', 'deberta-v2', 't5']) {
  test(`${name} (a relative position table shared by the layers): train() with checkpointing ends with the weights of a run without`, async (t) => {
    const model = path.resolve(__dirname, 'fixtures', 'tiny-encoders', name);
    const dir = tempDir();
    const run = async (gradientCheckpointing: boolean) => {
      const output = path.join(dir, String(gradientCheckpointing));
      const result = await train({ model, data: wordDataset(16, 5), output, epochs: 1, batchSize: 8, valSplit: 0, device: 'cpu', seed: 3, gradientCheckpointing, progressBar: false });
      return { losses: result.history.epochs.map((e) => e.trainLoss), weights: readSafetensors(path.join(output, 'model.safetensors')).tensors };
    };
    const plain = await run(false);
    const checkpointed = await run(true);
    t.deepEqual(checkpointed.losses, plain.losses);
    t.deepEqual([...checkpointed.weights.keys()], [...plain.weights.keys()]);
    // Equal up to the order in which float32 gradients are summed: DeBERTa-v2's table reaches each layer twice
    // (pos_key_proj, pos_query_proj), which a checkpointed layer sums before the other layers' terms. AdamW scales each
    // entry's update by its own gradient's size (m / √v), so an entry whose gradient is near 0 moves by up to the
    // learning rate (2e-5) whatever the sum's last bits: the bound is a tenth of the learning rate, not float32's
    // rounding of the weights (the largest difference was below 1e-7 on earlier machines, 4.6e-7 on a later Xeon).
    let worst = 0;
    for (const [tensor, raw] of plain.weights) {
      const a = new Float32Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength / 4);
      const b = checkpointed.weights.get(tensor)!.data;
      worst = Math.max(worst, maxAbsDiff(a, new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)));
    }
    t.true(worst < 2e-6, `max abs difference ${worst}`);
  });
}

test('a ContextFlow step with checkpointing (retriever and decoder generator) equals one without', async (t) => {
  const questions = [
    { question: 'what is in the river?', answer: 'water' },
    { question: 'where is the money?', answer: 'in the bank' },
  ];
  const documents = ['the river bank has water', 'a cafe with paper', 'money in the bank', 'search that is fast'];
  const format = { template: DEFAULT_TEMPLATE, chat: false };
  const run = async (gradientCheckpointing: boolean) => {
    const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
    const generator = await Generator.load(path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama'), { device: 'cpu' });
    const trainer = await retriever.createTrainer({ learningRate: 1e-3, seed: 4, generator: generator.nativeHandle().current(), gradientCheckpointing });
    const pairs = questions.flatMap((e, m) => documents.slice(m * 2, m * 2 + 2).map((doc) => ({ prompt: formatPrompt(format, doc, e.question), completion: formatAnswer(format, e.answer) })));
    const options = { ...STEP, rag: true, sequences: padBatch(await generator.sequences(pairs)), documentsPerQuery: 2 };
    const prepared = await trainer.prepare(questions.map((e) => e.question), documents);
    const results = [await trainer.stepPrepared(prepared, options), await trainer.stepPrepared(prepared, options)];
    const ll = Array.from(await generator.logLikelihood(pairs));
    trainer.dispose();
    generator.dispose();
    retriever.dispose();
    return { losses: results.map((r) => r.loss), norms: results.map((r) => r.gradNorm), ll };
  };
  const plain = await run(false);
  t.deepEqual(await run(true), plain);
});

test('train({ gradientCheckpointing }) and --gradient-checkpointing end with the weights of a run without', (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(24, 9).map((p) => JSON.stringify(p)).join('\n'));
  const cli = path.resolve(__dirname, '..', 'dist', 'cli.js');
  const base = ['train', '--model', FIXTURE, '--data', data, '--epochs', '1', '--batch-size', '8', '--val-split', '0', '--device', 'cpu', '--json'];
  for (const [name, extra] of [['plain', []], ['checkpointed', ['--gradient-checkpointing']]] as const) {
    const r = spawnSync(process.execPath, [cli, ...base, '--output', path.join(dir, name), ...extra], { encoding: 'utf8', timeout: 240_000 });
    t.is(r.status, 0, r.stderr);
  }
  t.true(fs.readFileSync(path.join(dir, 'checkpointed', 'model.safetensors')).equals(fs.readFileSync(path.join(dir, 'plain', 'model.safetensors'))));
  t.true(JSON.parse(fs.readFileSync(path.join(dir, 'checkpointed', 'training_history.json'), 'utf8')).config.gradientCheckpointing);
});

test('train() checks the option', async (t) => {
  await t.throwsAsync(train({ data: wordDataset(4), output: path.join(tempDir(), 'x'), model: FIXTURE, gradientCheckpointing: 'yes' as never }), {
    message: /options\.gradientCheckpointing must be true or false/,
  });
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: with checkpointing, the same losses, gradient norms and weights as without (float32 and bfloat16; the GPU generator's dropout replayed)${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    for (const precision of ['float32', 'bfloat16'] as const) {
      const plain = await steps({ precision }, {}, 'cuda');
      const checkpointed = await steps({ precision, gradientCheckpointing: true }, {}, 'cuda');
      t.deepEqual(checkpointed.results.map((r) => r.loss), plain.results.map((r) => r.loss), precision);
      t.deepEqual(checkpointed.probe, plain.probe, precision);
    }
  },
);
