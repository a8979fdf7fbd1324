// Model work runs off the JS thread: timers keep firing while one large native forward pass runs.
import test from 'ava';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Encoder } from '../lib';
import { FIXTURE, tempDir } from './helpers/fixture';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');

test('the event loop stays responsive during a long embed()', async (t) => {
  const dir = makeRandomBert(path.join(tempDir(), 'small'), { shape: 'small', vocabSize: 512, seed: 7 });
  const enc = await Encoder.load(dir, { device: 'cpu' });
  // One batch, so the whole job is a single native call: if it ran on the JS thread no timer could fire.
  const texts = Array.from({ length: 256 }, (_, i) => 'the quick brown fox jumps over the lazy dog '.repeat(4 + (i % 5)));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const start = performance.now();
  const e = await enc.embed(texts, { batchSize: texts.length });
  const elapsed = performance.now() - start;
  clearInterval(timer);
  t.deepEqual(e.dims, [256, 256]);
  t.log(`embed took ${elapsed.toFixed(0)} ms; the timer fired ${ticks} times meanwhile`);
  t.true(elapsed > 50, 'the job is long enough to tell');
  t.true(ticks >= 3, `timer fired ${ticks} times during a ${elapsed.toFixed(0)} ms embed`);
  enc.dispose();
});

// Starting a child process forks; OpenBLAS's fork handler must not run while a product is in flight on a
// worker thread (it would wedge OpenBLAS for the rest of the process). coltrast's fork guard makes the
// fork wait for native work to finish.
test('child processes started during native work do not wedge later work', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const dir = makeRandomBert(path.join(tempDir(), 'small'), { shape: 'small', vocabSize: 512, seed: 7 });
  const enc = await Encoder.load(dir, { device: 'cpu' });
  const texts = Array.from({ length: 128 }, (_, i) => 'the quick brown fox jumps over the lazy dog '.repeat(4 + (i % 5)));
  const deadline = (ms: number) => new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms: native work is wedged`)), ms).unref());
  for (let round = 0; round < 3; round++) {
    const running = enc.embed(texts, { batchSize: 16 });
    await new Promise((resolve) => setTimeout(resolve, 30));
    for (let i = 0; i < 3; i++) t.is(spawnSync(process.execPath, ['-e', '0']).status, 0);
    await Promise.race([running, deadline(60_000)]);
  }
  const after = (await Promise.race([enc.embed(['one more'], {}), deadline(60_000)])) as { dims: number[] };
  t.deepEqual(after.dims, [1, 256]);
  enc.dispose();
});

// The first load of the addon maps libtorch and runs its static initializers (about half a second on Debian's
// libtorch): Encoder.load() and the ops do that on a worker thread, so timers keep firing meanwhile. A fresh
// process, since this one has loaded the addon already.
test("the addon's first load does not hold the event loop", async (t) => {
  const { spawnSync } = await import('node:child_process');
  const script = `
    const { loadAddon, binaryChoice } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native.js'))});
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const start = performance.now();
    loadAddon().then((binding) => {
      clearInterval(timer);
      console.log(JSON.stringify({ ms: performance.now() - start, ticks, ops: typeof binding.ops.maxsim, choice: binaryChoice().kind }));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 240_000 });
  t.is(r.status, 0, r.stderr);
  const { ms, ticks, ops, choice } = JSON.parse(r.stdout) as { ms: number; ticks: number; ops: string; choice: string };
  t.log(`first load took ${ms.toFixed(0)} ms (${choice}); the timer fired ${ticks} times meanwhile`);
  t.is(ops, 'function');
  t.true(ms > 50, 'the load is long enough to tell');
  // Held on this thread, the load would let the timer fire at most once (after it); on the worker it fires throughout.
  t.true(ticks >= 3, `timer fired ${ticks} times during a ${ms.toFixed(0)} ms load`);
});

// The tokenizers package reads a tokenizer.json synchronously: ~0.4 s for one of Qwen3's size. coltrast's tokenizers
// live in a worker thread, so the main thread's timers keep firing while a large one loads. This one is a byte-level
// BPE made here (100,000 tokens and as many merges), with the texts it is then asked to tokenize. Serial: the other
// tests of this file make models with JavaScript on the main thread, which would hold the timer too.
test.serial('a large tokenizer.json is read off the event loop, and tokenizes', async (t) => {
  const { TextTokenizer } = await import('../lib/tokenizer');
  const fs = await import('node:fs');
  const alphabet = 'abcdefghijklmnopqrstuvwxyz'.split('');
  const vocab: Record<string, number> = Object.fromEntries(alphabet.map((c, i) => [c, i]));
  const tokens = [...alphabet];
  const merges: string[] = [];
  for (let i = 0; tokens.length < 100_000; i++) {
    const a = tokens[(i * 7919) % tokens.length];
    const b = alphabet[i % alphabet.length];
    if (vocab[a + b] !== undefined || a.length > 6) continue;
    vocab[a + b] = tokens.length;
    tokens.push(a + b);
    merges.push(`${a} ${b}`);
  }
  const file = path.join(tempDir(), 'tokenizer.json');
  fs.writeFileSync(file, JSON.stringify({
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  }));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const start = performance.now();
  const tokenizer = await TextTokenizer.load(file, 64, false);
  const elapsed = performance.now() - start;
  clearInterval(timer);
  t.log(`loading ${merges.length} merges took ${elapsed.toFixed(0)} ms; the timer fired ${ticks} times meanwhile`);
  t.true(elapsed > 50, 'the load is long enough to tell');
  t.true(ticks >= 3, `timer fired ${ticks} times during a ${elapsed.toFixed(0)} ms load`);
  const [encoded] = await tokenizer.encode([`${tokens[30]} ${tokens[99_999]}`]);
  t.deepEqual(encoded.ids, [30, 99_999], 'each word one token of the vocabulary');
  t.deepEqual(await tokenizer.decode([encoded.ids]), [`${tokens[30]} ${tokens[99_999]}`], 'no decoder: the tokens joined by spaces');
  t.is(await tokenizer.tokenToId(tokens[500]), 500);
  t.is(await tokenizer.tokenToId('NOT-A-TOKEN'), null);
});

// The worker keeps a model's tokenizer while the model is in use; dispose() lets it go (collection would, later).
test.serial('disposing a model lets the tokenizer worker drop its tokenizer', async (t) => {
  const { heldTokenizers } = await import('../lib/tokenizer');
  const fs = await import('node:fs');
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(FIXTURE, dir, { recursive: true });
  const file = path.join(dir, 'tokenizer.json');
  const one = await Encoder.load(dir, { device: 'cpu' });
  const two = await Encoder.load(dir, { device: 'cpu' });
  t.true((await heldTokenizers()).includes(file));
  one.dispose();
  t.true((await heldTokenizers()).includes(file), 'the other model of that folder still uses it');
  t.deepEqual((await two.embed(['still works'])).dims, [1, 32]);
  two.dispose();
  t.false((await heldTokenizers()).includes(file));
});

test.serial('a tokenizer.json that fails to load leaves no entry in the worker', async (t) => {
  const { heldTokenizers } = await import('../lib/tokenizer');
  const fs = await import('node:fs');
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(FIXTURE, dir, { recursive: true });
  const file = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 100));
  await t.throwsAsync(async () => {
    const enc = await Encoder.load(dir, { device: 'cpu' });
    try {
      await enc.embed(['a text']);
    } finally {
      enc.dispose();
    }
  }, { message: /cannot load tokenizer/ });
  t.false((await heldTokenizers()).includes(file));
});
