// train() and trainRag() stopped from JavaScript (options.signal): the run finishes the step under way, writes a
// checkpoint of where it is and rejects with ABORTED, and a resume ends with the uninterrupted run's per-step losses and
// weights; aborted before its first step (or before the call) it writes nothing. And `coltrast train`'s Ctrl-C: the
// first one checkpoints and ends the process by the signal with a note, and --resume finishes the run. Runs the built
// CLI, dist/cli.js (npm run build:ts first).
//
// Serial: with other libtorch work running beside it in the process, OpenBLAS may split a product differently and change
// the last bits (train.test.ts); a run alone is deterministic, which the comparisons of weights here need. The CLI test
// waits on its child with a timer, which a sibling's spawnSync would hold (cli-errors.test.ts).
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Encoder, train, trainRag, type TrainOptions } from '../lib';
import { FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { until } from './helpers/wait';
import { TINY_RAG_CORPUS, TINY_RAG_QA } from './helpers/rag-data';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const GENERATOR = path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama');

/**
 * Runs `work` with the native steps of every trainer it creates counted: `onStep(n)` is called as the n-th batch's
 * step (1-based) has started and runs, which is where an abort from outside (a UI, a job queue) lands. `onTrainer`
 * is called once a trainer exists: after the models load, before any step.
 */
async function withSteps<T>(hooks: { onStep?: (n: number) => void; onTrainer?: () => void }, work: () => Promise<T>): Promise<T> {
  const original = Encoder.prototype.createTrainer;
  let n = 0;
  Encoder.prototype.createTrainer = async function (this: Encoder, ...args: Parameters<Encoder['createTrainer']>) {
    const trainer = await original.apply(this, args);
    hooks.onTrainer?.();
    return {
      ...trainer,
      stepPrepared: (batch, options) => {
        const running = trainer.stepPrepared(batch, options);
        hooks.onStep?.(++n);
        return running;
      },
    };
  };
  try {
    return await work();
  } finally {
    Encoder.prototype.createTrainer = original;
  }
}

const stateOf = (checkpoint: string) => JSON.parse(fs.readFileSync(path.join(checkpoint, 'state.json'), 'utf8')).state;

// 30 examples, 6 held out: 24 in batches of 4, 6 batches an epoch; an update every 2 batches, so 3 steps an epoch, 6 in all.
const BASE = {
  model: FIXTURE, data: wordDataset(30, 5), epochs: 2, batchSize: 4, gradientAccumulation: 2, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9,
} satisfies Partial<TrainOptions>;

test.serial('train() aborted between batches of an update and after a step checkpoints where it is; the resumed run ends as an uninterrupted one', async (t) => {
  const dir = tempDir();
  const whole = await train({ ...BASE, output: path.join(dir, 'whole') });
  t.is(whole.history.steps.length, 6);

  const output = path.join(dir, 'resumed');
  const checkpoint = `${output}.checkpoint`;
  // The abort lands while the 5th batch's step runs: the first batch of the 3rd update, whose gradients are then summed in
  // the model's grad buffers only. The run finishes that update (the 6th batch, epoch 1's last, and the optimizer step 3)
  // and checkpoints there, before epoch 1's validation: the weights and optimizer state after step 3, batch 6 of 6.
  const first = new AbortController();
  let batches = 0;
  const seen: number[] = [];
  const aborted = await withSteps(
    {
      onStep: (n) => {
        batches = n;
        if (n === 5) first.abort();
      },
    },
    () => rejection(() => train({ ...BASE, output, signal: first.signal, onProgress: (p) => seen.push(p.step) })),
  );
  t.is(aborted.code, 'ABORTED');
  t.is(aborted.message, `train() was aborted (options.signal) after step 3: its checkpoint is at ${checkpoint}; run it again with the same options and resume: true (the command line: --resume) to continue from it`);
  t.is(batches, 6, 'the update under way finished; no batch after it ran');
  t.deepEqual(seen, [1, 2, 3]);
  t.like(stateOf(checkpoint), { step: 3, epoch: 1, batch: 6 });
  t.false('signal' in JSON.parse(fs.readFileSync(path.join(checkpoint, 'state.json'), 'utf8')).run, "the run's identity");

  // Aborted before it starts, a resume writes nothing: the checkpoint stays as it was.
  const written = fs.readFileSync(path.join(checkpoint, 'state.json'));
  const early = await rejection(() => train({ ...BASE, output, resume: true, signal: AbortSignal.abort() }));
  t.is(early.code, 'ABORTED');
  t.regex(early.message, /before its first step: nothing was written; the checkpoint at .*resumed\.checkpoint is as it was \(resume: true/);
  t.true(fs.readFileSync(path.join(checkpoint, 'state.json')).equals(written));

  // Resumed into epoch 1's validation and aborted there (at the run's first embedding, the check of its outputs): the
  // validation and the epoch's end run (the epoch's model saved, a checkpoint of step 3 at epoch 2 written), and the
  // abort is seen at epoch 2's first update. It said "before its first step: nothing was written"; the checkpoint of
  // step 3 is this run's.
  const during = new AbortController();
  const originalEmbed = Encoder.prototype.embed;
  (Encoder.prototype as any).embed = function (this: Encoder, ...args: Parameters<Encoder['embed']>) {
    during.abort();
    return originalEmbed.apply(this, args);
  };
  let inValidation: Awaited<ReturnType<typeof rejection>>;
  try {
    inValidation = await rejection(() => train({ ...BASE, output, resume: true, signal: during.signal }));
  } finally {
    Encoder.prototype.embed = originalEmbed;
  }
  t.is(inValidation.code, 'ABORTED');
  t.regex(inValidation.message, /after step 3: its checkpoint is at /);
  t.like(stateOf(checkpoint), { step: 3, epoch: 2, batch: 0 });
  t.true(fs.existsSync(path.join(output, 'model.safetensors')), "epoch 1's model");

  // Resumed (a signal is no part of the run's identity: the resume is not refused), then aborted after step 5 by its
  // onProgress: at a step's end, with no batch of the next update run. The checkpoint holds epoch 2's batch 4.
  const second = new AbortController();
  const again = await rejection(() => train({ ...BASE, output, resume: true, signal: second.signal, onProgress: (p) => p.step === 5 && second.abort() }));
  t.is(again.code, 'ABORTED');
  t.regex(again.message, /after step 5: its checkpoint is at /);
  t.like(stateOf(checkpoint), { step: 5, epoch: 2, batch: 4 });

  const resumed = await train({ ...BASE, output, resume: true });
  t.deepEqual(resumed.history.steps, whole.history.steps, 'the same per-step losses and learning rates');
  t.deepEqual(resumed.history.epochs, whole.history.epochs);
  t.true(fs.readFileSync(path.join(output, 'model.safetensors')).equals(fs.readFileSync(path.join(whole.modelDir, 'model.safetensors'))));
  const texts = BASE.data.slice(0, 4).flatMap((e) => [e.query, e.positive]);
  const embed = async (folder: string) => {
    const encoder = await Encoder.load(folder, { device: 'cpu' });
    const vectors = Array.from((await encoder.embed(texts)).data);
    encoder.dispose();
    return vectors;
  };
  t.deepEqual(await embed(output), await embed(whole.modelDir));
  t.false(fs.existsSync(checkpoint), 'a finished run removes its checkpoint');
});

test.serial('train() aborted after its models load and before its first step writes nothing, and says so', async (t) => {
  const output = path.join(tempDir(), 'out');
  const controller = new AbortController();
  const error = await withSteps({ onTrainer: () => controller.abort() }, () => rejection(() => train({ ...BASE, output, signal: controller.signal })));
  t.is(error.code, 'ABORTED');
  t.is(error.message, 'train() was aborted (options.signal) before its first step: nothing was written');
  t.false(fs.existsSync(output));
  t.false(fs.existsSync(`${output}.checkpoint`));
});

test('an already aborted signal rejects before any data is read or model loads; a signal of the wrong type is named', async (t) => {
  const dir = tempDir();
  const missing = { model: path.join(dir, 'no-model'), data: path.join(dir, 'no-data.jsonl'), output: path.join(dir, 'out') };
  const early = await rejection(() => train({ ...missing, signal: AbortSignal.abort() }));
  t.is(early.code, 'ABORTED');
  t.regex(early.message, /^train\(\) was aborted \(options\.signal\) before its first step: nothing was written$/);
  const rag = { retriever: missing.model, generator: missing.model, data: missing.data, corpus: ['a', 'b'], output: missing.output };
  const ragEarly = await rejection(() => trainRag({ ...rag, signal: AbortSignal.abort() }));
  t.is(ragEarly.code, 'ABORTED');
  t.regex(ragEarly.message, /^trainRag\(\) was aborted \(options\.signal\) before its first step: nothing was written$/);
  t.false(fs.existsSync(missing.output));

  for (const signal of [{ aborted: true }, 'stop', true]) {
    for (const [name, run] of [['train', () => train({ ...missing, signal } as never)], ['trainRag', () => trainRag({ ...rag, signal } as never)]] as const) {
      const error = await rejection(run);
      t.is(error.code, 'INVALID_ARGUMENT', name);
      t.regex(error.message, /^options\.signal must be an AbortSignal, got /, name);
    }
  }
});

// The answers' data is not the point here: the resumed run must end as the uninterrupted one.
const CORPUS = TINY_RAG_CORPUS;
const QA = TINY_RAG_QA;

test.serial('trainRag() aborted after a step checkpoints there, and the resumed run ends with the uninterrupted weights', async (t) => {
  // 6 questions in batches of 2: 3 steps an epoch, 6 in all; no checkpoint but the abort's mid-epoch (checkpointEvery 50).
  const base = { retriever: FIXTURE, generator: GENERATOR, data: QA, corpus: CORPUS, k: 2, epochs: 2, batchSize: 2, learningRate: 1e-3, device: 'cpu', progressBar: false } as const;
  const dir = tempDir();
  const whole = await trainRag({ ...base, output: path.join(dir, 'whole') });
  const output = path.join(dir, 'resumed');
  const controller = new AbortController();
  const error = await rejection(() => trainRag({ ...base, output, signal: controller.signal, onProgress: (p) => p.step === 2 && controller.abort() }));
  t.is(error.code, 'ABORTED');
  t.is(error.message, `trainRag() was aborted (options.signal) after step 2: its checkpoint is at ${output}.checkpoint; run it again with the same options and resume: true (the command line: --resume) to continue from it`);
  t.like(stateOf(`${output}.checkpoint`), { step: 2, epoch: 1, batch: 2 });
  const resumed = await trainRag({ ...base, output, resume: true });
  t.deepEqual(resumed.history, whole.history);
  for (const file of ['retriever/model.safetensors', 'generator/model.safetensors']) {
    t.true(fs.readFileSync(path.join(output, file)).equals(fs.readFileSync(path.join(dir, 'whole', file))), file);
  }
  t.false(fs.existsSync(`${output}.checkpoint`));
});

function started(args: string[]): ChildProcess & { stderrText: () => string; done: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, OMP_NUM_THREADS: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return Object.assign(child, { stderrText: () => stderr, done });
}

test.serial('coltrast train: the first Ctrl-C checkpoints after the step under way and ends by SIGINT with a note; --resume finishes the run; a second signal ends it at once', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(40).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const output = path.join(dir, 'model');
  // 32 training pairs in batches of 4: 8 steps an epoch, 40 in all. No checkpoint is written before an epoch's end but the interrupt's.
  const args = (to: string) => ['train', '--data', data, '--model', FIXTURE, '--output', to, '--epochs', '5', '--batch-size', '4', '--checkpoint-every', '0', '--threads', '1', '--device', 'cpu'];
  // Not a TTY: the progress bar prints a line at the first step (and then every 5 s).
  const firstStep = (child: ReturnType<typeof started>) =>
    until('the first step', () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`train ended (${child.exitCode ?? child.signalCode}) before its first step was seen:\n${child.stderrText()}`);
      return /^train \d+% 1\/40 steps/m.test(child.stderrText());
    }, { ms: 60_000, every: 10, detail: () => `its stderr so far:\n${child.stderrText()}` });
  const child = started(args(output));
  await firstStep(child);
  child.kill('SIGINT');
  const { code, signal } = await child.done;
  const stderr = child.stderrText();
  t.true(signal === 'SIGINT' || code === 130, `ended by SIGINT (a shell's 130), not ${code ?? signal}:\n${stderr}`);
  t.regex(stderr, /^coltrast: SIGINT: stopping after the step under way to write a checkpoint \(again to stop at once\)$/m);
  t.true(stderr.includes(`coltrast: training interrupted; its checkpoint is at ${output}.checkpoint: run the same command with --resume to continue from it\n`), stderr);
  const step = stateOf(`${output}.checkpoint`).step;
  t.true(step >= 1 && step < 40, `checkpoint of step ${step}`);

  const resumed = started([...args(output), '--resume']);
  const ended = await resumed.done;
  t.is(ended.code, 0, resumed.stderrText());
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8')).history;
  t.deepEqual(history.steps.map((s: { step: number }) => s.step), Array.from({ length: 40 }, (_, i) => i + 1), 'the resumed run trained the steps after the checkpoint, and only those');
  t.false(fs.existsSync(`${output}.checkpoint`));

  // A second signal right after the first: the process ends by it, without waiting for the step and the checkpoint.
  const other = started(args(path.join(dir, 'other')));
  await firstStep(other);
  // Sent together, the two may be handled in either order (CI saw SIGTERM first): the one handled second ends the process.
  other.kill('SIGINT');
  other.kill('SIGTERM');
  const twice = await other.done;
  const first = /^coltrast: (SIGINT|SIGTERM): stopping after the step under way/m.exec(other.stderrText())?.[1];
  t.truthy(first, other.stderrText());
  t.is(twice.signal, first === 'SIGINT' ? 'SIGTERM' : 'SIGINT', other.stderrText());
});

test.serial('coltrast train: before its first step (a model download under way) a Ctrl-C ends the process at once', async (t) => {
  // A hub that never answers: the first signal used to wait for a step that would never come.
  let requested = false;
  const hub = http.createServer(() => {
    requested = true;
  });
  await new Promise<void>((resolve) => hub.listen(0, '127.0.0.1', resolve));
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(12).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const child = spawn(process.execPath, [CLI, 'train', '--data', data, '--model', 'org/never-answers', '--output', path.join(dir, 'out'), '--batch-size', '4', '--device', 'cpu'], {
    env: { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${(hub.address() as AddressInfo).port}`, HF_HOME: path.join(dir, 'hf'), HF_HUB_OFFLINE: '0' },
    stdio: 'ignore',
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    await until('the download to start', () => requested, { ms: 60_000, every: 10 });
    child.kill('SIGINT');
    const ended = await Promise.race([done, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000))]);
    t.deepEqual(ended, { code: null, signal: 'SIGINT' }, 'ended by the signal, not left downloading');
  } finally {
    child.kill('SIGKILL');
    hub.closeAllConnections();
    hub.close();
  }
});
