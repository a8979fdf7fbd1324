// Encoder outputs against the fixture's reference (see test/fixtures/tiny-bert.reference.json's
// `reference` field for what produced it), plus batching, ordering, save/load and lifecycle.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, ColtrastError, cudaMemory, type Matrix } from '../lib';
import { FIXTURE, editJson, fixtureCopy, loadReference, maxAbsDiff, tempDir } from './helpers/fixture';
import { f32ToBf16, f32ToF16, readSafetensors, writeSafetensors } from './helpers/safetensors';
import { native } from '../lib/native';

const ref = loadReference();
const texts = ref.items.map((i) => i.text);
const TOL = 1e-5;

test.before((t) => {
  t.log(`reference: ${ref.reference}`);
});

function row(m: Matrix, i: number): Float32Array {
  return m.data.subarray(i * m.dims[1], (i + 1) * m.dims[1]);
}

function l2normalize(v: number[]): number[] {
  const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => x / n);
}

/** Asserts every text's token states equal `expected` (one [len][dim] per text) within TOL. */
async function assertTokenStates(t: any, enc: Encoder, expected: number[][][], batchSize = 5) {
  const tokens = await enc.embed(texts, { output: 'tokens', batchSize });
  t.is(tokens.length, texts.length);
  let worst = 0;
  tokens.forEach((m, i) => {
    t.deepEqual(m.dims, [expected[i].length, ref.hiddenSize], `token count of text ${i}`);
    worst = Math.max(worst, maxAbsDiff(m.data, expected[i].flat()));
  });
  t.true(worst < TOL, `max abs error ${worst}`);
}

test('loads the fixture with its sentence-transformers settings', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.is(enc.dimension, ref.hiddenSize);
  t.is(enc.maxSeqLength, ref.maxSeqLength);
  t.is(enc.pooling, 'mean');
  t.true(enc.normalize);
  t.is(enc.device, 'cpu');
  t.is(enc.configSource, 'sentence-transformers');
  enc.dispose();
});

test('token states match the reference (padded batches of mixed lengths)', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  await assertTokenStates(t, enc, ref.items.map((i) => i.tokenStates));
  enc.dispose();
});

test('tokenization and truncation match the recorded ids', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.deepEqual(await enc.tokenize(texts), ref.items.map((item) => item.inputIds));
  const tokens = await enc.embed(texts, { output: 'tokens' });
  ref.items.forEach((item, i) => t.is(tokens[i].dims[0], item.inputIds.length, JSON.stringify(item.text)));
  t.true(ref.items.some((i) => i.inputIds.length === ref.maxSeqLength), 'some texts are truncated to maxSeqLength');
  t.true(ref.items.some((i) => i.text === '' && i.inputIds.length === 2), 'the empty string is [CLS] [SEP]');
  enc.dispose();
});

for (const mode of ['cls', 'mean', 'max', 'mean_sqrt_len'] as const) {
  test(`pooling '${mode}' matches the reference, raw and normalized`, async (t) => {
    const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
    const raw = await enc.embed(texts, { pooling: mode, normalize: false, batchSize: 4 });
    const unit = await enc.embed(texts, { pooling: mode, normalize: true, batchSize: 4 });
    t.deepEqual(raw.dims, [texts.length, ref.hiddenSize]);
    ref.items.forEach((item, i) => {
      t.true(maxAbsDiff(row(raw, i), item.pooled[mode]) < TOL, `text ${i} raw`);
      t.true(maxAbsDiff(row(unit, i), l2normalize(item.pooled[mode])) < TOL, `text ${i} normalized`);
    });
    enc.dispose();
  });
}

test("the default output follows modules.json: mean pooling, then Normalize", async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const e = await enc.embed(texts);
  ref.items.forEach((item, i) => t.true(maxAbsDiff(row(e, i), l2normalize(item.pooled.mean)) < TOL));
  enc.dispose();
});

test('batch size does not change results; a batch of one and an empty list work', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const one = await enc.embed(texts, { batchSize: 1 });
  const all = await enc.embed(texts, { batchSize: 64 });
  t.true(maxAbsDiff(one.data, all.data) < 1e-6);
  const single = await enc.embed([texts[3]]);
  t.deepEqual(single.dims, [1, ref.hiddenSize]);
  t.true(maxAbsDiff(single.data, row(all, 3)) < 1e-6);
  const none = await enc.embed([]);
  t.deepEqual(none.dims, [0, ref.hiddenSize]);
  t.is(none.data.length, 0);
  t.deepEqual(await enc.embed([], { output: 'tokens' }), []);
  enc.dispose();
});

test('1,000 texts come back in input order', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const many = Array.from({ length: 1000 }, (_, i) => texts[(i * 7) % texts.length] + ' ' + 'word '.repeat(i % 13));
  const progress: number[] = [];
  const e = await enc.embed(many, { batchSize: 64, onProgress: (done, total) => (progress.push(done), t.is(total, 1000)) });
  t.deepEqual(e.dims, [1000, ref.hiddenSize]);
  // A call at the start, then one per batch.
  t.deepEqual(progress, [0, ...Array.from({ length: Math.ceil(1000 / 64) }, (_, i) => Math.min(1000, (i + 1) * 64))]);
  for (const i of [0, 1, 13, 500, 998, 999]) {
    const alone = await enc.embed([many[i]]);
    t.true(maxAbsDiff(alone.data, row(e, i)) < 1e-6, `text ${i}`);
  }
  enc.dispose();
});

// A GPU's way of embedding (texts tokenized in chunks of 512 while the batches before them run) on the CPU.
// Serial: the setting is process-wide while the test runs, and ava runs serial tests before the others.
test.serial('9,000 texts tokenized ahead in chunks (COLTRAST_TOKENIZE_AHEAD=1) come back in input order with their token counts', async (t) => {
  process.env.COLTRAST_TOKENIZE_AHEAD = '1';
  t.teardown(() => delete process.env.COLTRAST_TOKENIZE_AHEAD);
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  // Counts the calls to the tokenizer: one per chunk.
  const tokenizer = (enc as unknown as { tokenizer: { encode: (texts: string[], maxLength?: number) => Promise<unknown> } }).tokenizer;
  const encode = tokenizer.encode.bind(tokenizer);
  let calls = 0;
  tokenizer.encode = (batch, maxLength) => (calls++, encode(batch, maxLength));
  const many = Array.from({ length: 9000 }, (_, i) => texts[(i * 7) % texts.length] + ' ' + 'word '.repeat(i % 17));
  const progress: number[] = [];
  const { result, tokens } = await enc.embedCounting(many, { batchSize: 64, onProgress: (done, total) => (progress.push(done), t.is(total, 9000)) });
  const e = result as Matrix;
  t.deepEqual(e.dims, [9000, ref.hiddenSize]);
  t.is(calls, Math.ceil(9000 / 512));
  t.deepEqual(tokens, (await enc.tokenize(many)).map((ids) => ids.length));
  t.is(progress.at(-1), 9000);
  t.true(progress.every((d, k) => k === 0 || d >= progress[k - 1]));
  // One report per batch: 141 of 64 texts (the chunks of 512 hold 8 each).
  t.is(new Set(progress).size - 1, Math.ceil(9000 / 64));
  for (const i of [0, 1, 16, 511, 512, 4096, 8191, 8999]) {
    const alone = await enc.embed([many[i]]);
    t.true(maxAbsDiff(alone.data, row(e, i)) < 1e-6, `text ${i}`);
  }
  const asTokens = await enc.embed(many, { output: 'tokens', batchSize: 64 });
  // The CPU's default, all texts tokenized first: one call, the same vectors.
  delete process.env.COLTRAST_TOKENIZE_AHEAD;
  calls = 0;
  const allFirst = await enc.embed(many, { batchSize: 64 });
  t.is(calls, 1);
  t.true(maxAbsDiff(allFirst.data, e.data) < 1e-6);
  for (const i of [3, 5000, 8998]) {
    const [alone] = await enc.embed([many[i]], { output: 'tokens' });
    t.deepEqual(asTokens[i].dims, alone.dims);
    // Unnormalized token states: float32 rounding in padded batches differs from one text alone by up to 1.1e-6
    // here (with all texts tokenized first too).
    t.true(maxAbsDiff(asTokens[i].data, alone.data) < 1e-5, `text ${i}`);
  }
  enc.dispose();
});

for (const act of Object.keys(ref.variants)) {
  test(`hidden_act '${act}' matches the reference`, async (t) => {
    const dir = fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_act: act })));
    const enc = await Encoder.load(dir, { device: 'cpu' });
    await assertTokenStates(t, enc, ref.variants[act]);
    enc.dispose();
  });
}

/** Rewrites the fixture's weights with `change` applied to every tensor. */
function rewriteWeights(change: (name: string, t: { dtype: string; shape: number[]; data: Buffer }) => [string, any], options: { oddData?: boolean } = {}) {
  return fixtureCopy((d) => {
    const file = path.join(d, 'model.safetensors');
    const { tensors } = readSafetensors(file);
    writeSafetensors(file, new Map([...tensors].map(([name, tensor]) => change(name, tensor))), options);
  });
}

const weightVariants: Array<[string, Parameters<typeof rewriteWeights>[0]]> = [
  ['F16', (n, w) => [n, w.dtype === 'F32' ? { ...w, dtype: 'F16', data: f32ToF16(w.data) } : w]],
  ['BF16', (n, w) => [n, w.dtype === 'F32' ? { ...w, dtype: 'BF16', data: f32ToBf16(w.data) } : w]],
  ["'bert.'-prefixed", (n, w) => [`bert.${n}`, w]],
  ['no position_ids and no pooler', (n, w) => [n.startsWith('pooler') || n.includes('position_ids') ? `ignored.${n}` : n, w]],
];
for (const [what, change] of weightVariants) {
  test(`${what} weights load to the same outputs`, async (t) => {
    const enc = await Encoder.load(rewriteWeights(change), { device: 'cpu' });
    await assertTokenStates(t, enc, ref.items.map((i) => i.tokenStates));
    enc.dispose();
  });
}

// Weights are copied from the file into the parameters as they are (a memcpy, or a conversion through a view of the
// mapping): data starting at an odd byte, unaligned for every element type, loads to the same numbers.
test('weights at unaligned offsets load as aligned ones do, in F32, F16 and BF16', async (t) => {
  const variants: typeof weightVariants = [['F32', (n, w) => [n, w]], weightVariants[0], weightVariants[1]];
  for (const [what, change] of variants) {
    const [aligned, odd] = [await Encoder.load(rewriteWeights(change), { device: 'cpu' }), await Encoder.load(rewriteWeights(change, { oddData: true }), { device: 'cpu' })];
    try {
      t.deepEqual((await odd.embed(texts)).data, (await aligned.embed(texts)).data, what);
    } finally {
      aligned.dispose();
      odd.dispose();
    }
  }
});

test('save() writes a sentence-transformers folder that loads back identically', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const out = path.join(tempDir(), 'copy');
  await enc.save(out);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'modules.json', '1_Pooling/config.json', 'sentence_bert_config.json']) {
    t.true(fs.existsSync(path.join(out, f)), f);
  }
  t.true(fs.statSync(path.join(out, '2_Normalize')).isDirectory());
  const saved = readSafetensors(path.join(out, 'model.safetensors'));
  const original = readSafetensors(path.join(FIXTURE, 'model.safetensors'));
  t.deepEqual([...saved.tensors.keys()].sort(), [...original.tensors.keys()].sort(), 'same tensor names, extras kept');
  for (const [name, tensor] of original.tensors) t.true(tensor.data.equals(saved.tensors.get(name)!.data), name);
  const again = await Encoder.load(out, { device: 'cpu' });
  t.deepEqual((await again.embed(texts)).data, (await enc.embed(texts)).data);
  t.is(again.pooling, enc.pooling);
  t.is(again.maxSeqLength, enc.maxSeqLength);
  t.true(fs.readdirSync(path.dirname(out)).every((f) => !f.includes('.saving-')), 'no staging folder left behind');
  again.dispose();
  enc.dispose();
});

test('save() refuses to clobber a folder unless asked, and can store float16', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const out = path.join(tempDir(), 'copy');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'keep.txt'), 'x');
  await t.throwsAsync(enc.save(out), { instanceOf: ColtrastError, message: /exists and is not empty; pass \{ overwrite: true \}/ });
  t.true(fs.existsSync(path.join(out, 'keep.txt')));
  await enc.save(out, { overwrite: true, dtype: 'float16' });
  t.false(fs.existsSync(path.join(out, 'keep.txt')));
  const dtypes = new Set([...readSafetensors(path.join(out, 'model.safetensors')).tensors.values()].map((w) => w.dtype));
  t.true(dtypes.has('F16') && !dtypes.has('F32'));
  const half = await Encoder.load(out, { device: 'cpu' });
  // The fixture's weights are exactly representable in float16, so nothing changes.
  t.true(maxAbsDiff((await half.embed(texts)).data, (await enc.embed(texts)).data) < 1e-6);
  half.dispose();
  enc.dispose();
});

test('a plain Hugging Face folder defaults to mean pooling without normalization', async (t) => {
  const dir = fixtureCopy((d) => {
    for (const f of ['modules.json', 'sentence_bert_config.json', 'config_sentence_transformers.json']) fs.rmSync(path.join(d, f), { force: true });
    fs.rmSync(path.join(d, '1_Pooling'), { recursive: true });
  });
  const enc = await Encoder.load(dir, { device: 'cpu' });
  t.is(enc.pooling, 'mean');
  t.false(enc.normalize);
  t.regex(enc.configSource, /default mean pooling/);
  // Without sentence_bert_config.json the limit is tokenizer_config's 512, capped by the 40 positions.
  t.is(enc.maxSeqLength, 40);
  const short = ref.items.filter((item) => item.inputIds.length < ref.maxSeqLength);
  t.true(short.length >= 8);
  const e = await enc.embed(short.map((item) => item.text));
  short.forEach((item, i) => t.true(maxAbsDiff(row(e, i), item.pooled.mean) < TOL, JSON.stringify(item.text)));
  enc.dispose();
});

test('concurrent embed() calls on one model give the sequential results', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const expected = await enc.embed(texts);
  const runs = await Promise.all(Array.from({ length: 6 }, (_, i) => enc.embed(texts, { batchSize: 1 + i })));
  for (const r of runs) t.true(maxAbsDiff(r.data, expected.data) < 1e-6);
  enc.dispose();
});

test('dispose() frees the model; later calls fail with DISPOSED, in-flight calls finish', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const inFlight = enc.embed(texts);
  enc.dispose();
  t.deepEqual((await inFlight).dims, [texts.length, ref.hiddenSize]);
  const error = await t.throwsAsync(enc.embed(texts), { instanceOf: ColtrastError });
  t.is(error?.code, 'DISPOSED');
  await t.throwsAsync(enc.save(tempDir()), { instanceOf: ColtrastError, message: /disposed/ });
  t.notThrows(() => enc.dispose(), 'dispose twice is harmless');
});

test('bfloat16 on the CPU: close to float32 (its rounding), not equal to it; float16 is refused there', async (t) => {
  const fp32 = await Encoder.load(FIXTURE, { device: 'cpu' });
  const bf16 = await Encoder.load(FIXTURE, { device: 'cpu', dtype: 'bfloat16' });
  t.is(bf16.dtype, 'bfloat16');
  const a = await bf16.embed(texts);
  const b = await fp32.embed(texts);
  const diff = maxAbsDiff(a.data, b.data);
  t.true(diff > 0 && diff < 5e-2, `pooled vectors differ by ${diff}`);
  const ta = await bf16.embed(texts, { output: 'tokens' });
  const tb = await fp32.embed(texts, { output: 'tokens' });
  ta.forEach((m, i) => t.true(maxAbsDiff(m.data, tb[i].data) < 0.5, `text ${i}`));
  bf16.dispose();
  fp32.dispose();
  const error = await Encoder.load(FIXTURE, { device: 'cpu', dtype: 'float16' }).catch((e) => e);
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /'float16' needs a CUDA device; on the CPU use 'float32' or 'bfloat16'/);
});

// CUDA (runs where a GPU and a CUDA build are present; reported as skipped elsewhere).
const cudaAvailable = native().runtimeInfo().cudaAvailable;
for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
  // float32 on the GPU differs from the CPU by summation order only; half types by their rounding.
  const tol = dtype === 'float32' ? 1e-4 : dtype === 'float16' ? 5e-3 : 5e-2;
  (cudaAvailable ? test : test.skip)(
    `cuda ${dtype}: token states and pooled vectors match the CPU${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
    async (t) => {
      const cpu = await Encoder.load(FIXTURE, { device: 'cpu' });
      const gpu = await Encoder.load(FIXTURE, { device: 'cuda', dtype });
      t.is(gpu.device, 'cuda:0');
      t.true(maxAbsDiff((await gpu.embed(texts)).data, (await cpu.embed(texts)).data) < tol);
      const a = await gpu.embed(texts, { output: 'tokens' });
      const b = await cpu.embed(texts, { output: 'tokens' });
      a.forEach((m, i) => t.true(maxAbsDiff(m.data, b[i].data) < 10 * tol, `text ${i}`));
      cpu.dispose();
      gpu.dispose();
    },
  );
}

test(`cudaMemory reports the caching allocator's bytes and peak${cudaAvailable ? '' : ' (here: the errors without CUDA)'}`, async (t) => {
  t.throws(() => cudaMemory('gpu:0'), { instanceOf: ColtrastError, message: /device must be 'cuda' or 'cuda:N'/ });
  if (!cudaAvailable) {
    const error = t.throws(() => cudaMemory('cuda'), { instanceOf: ColtrastError });
    t.is(error?.code, 'DEVICE');
    return;
  }
  cudaMemory('cuda', { resetPeak: true, emptyCache: true });
  const enc = await Encoder.load(FIXTURE, { device: 'cuda' });
  const loaded = cudaMemory('cuda');
  t.true(loaded.allocatedBytes > 0, 'the model weights are on the GPU');
  await enc.embed(Array.from({ length: 64 }, (_, i) => `${texts[i % texts.length]} ${i}`));
  const after = cudaMemory('cuda', { resetPeak: true });
  t.true(after.peakAllocatedBytes > loaded.allocatedBytes, 'embedding allocated activations beyond the weights');
  t.true(after.reservedBytes >= after.allocatedBytes);
  t.true(cudaMemory('cuda').peakAllocatedBytes <= after.peakAllocatedBytes, 'the peak was reset');
  enc.dispose();
});

// Self-attention: libtorch's scaled_dot_product_attention on libtorch 2.x, eager on 1.13 or when
// COLTRAST_EAGER_ATTENTION=1 asks for it. The two forms agree (the reference tests above check whichever
// this libtorch runs; `npm run test:libtorch2` runs them on 2.x).
test('attention: fused on libtorch 2.x, eager on request or on 1.13, and both give the same vectors', async (t) => {
  const info = native().runtimeInfo();
  const major = Number(info.torchVersion.split('.')[0]);
  t.is(info.attention, major >= 2 ? 'scaled_dot_product_attention' : 'eager', `libtorch ${info.torchVersion}`);
  const script = `
    const { Encoder } = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist'))});
    const { native } = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'native'))});
    (async () => {
      const enc = await Encoder.load(${JSON.stringify(FIXTURE)}, { device: 'cpu' });
      const e = await enc.embed(${JSON.stringify(texts)}, { output: 'tokens', batchSize: 3 });
      process.stdout.write(JSON.stringify({ attention: native().runtimeInfo().attention, tokens: e.map((m) => Array.from(m.data)) }));
    })().catch((error) => { console.error(error); process.exit(1); });`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_EAGER_ATTENTION: '1' } });
  t.is(child.status, 0, child.stderr);
  const eager = JSON.parse(child.stdout) as { attention: string; tokens: number[][] };
  t.is(eager.attention, 'eager');
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const here = await enc.embed(texts, { output: 'tokens', batchSize: 3 });
  enc.dispose();
  const worst = Math.max(...here.map((m, i) => maxAbsDiff(m.data, eager.tokens[i])));
  t.true(worst < 1e-5, `${info.attention} vs eager: max abs difference ${worst}`);
  t.log(`${info.attention} vs eager on libtorch ${info.torchVersion}: max abs difference ${worst.toExponential(2)}`);
});

// cuDNN's attention kernels (libtorch 2.5+): turned off when the addon loads, since cuDNN builds a plan for every
// new shape and each batch is padded to its own length; COLTRAST_CUDNN_ATTENTION=1 keeps libtorch's choice. The
// switch is libtorch's global one, so its state is read back from libtorch, in this process and in a child with
// the variable set. libtorch 1.13 (and 2.0-2.4) has no such switch in coltrast: false either way.
test('cuDNN attention: off by default on libtorch 2.5+, allowed by COLTRAST_CUDNN_ATTENTION=1', (t) => {
  const info = native().runtimeInfo();
  const [major, minor] = info.torchVersion.split('.').map(Number);
  const hasSwitch = major > 2 || (major === 2 && minor >= 5);
  t.false(info.cudnnAttention, `libtorch ${info.torchVersion}`);
  const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'native'))}).native().runtimeInfo().cudnnAttention))`;
  const asked = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_CUDNN_ATTENTION: '1' } });
  t.is(asked.status, 0, asked.stderr);
  t.is(JSON.parse(asked.stdout), hasSwitch, `COLTRAST_CUDNN_ATTENTION=1 on libtorch ${info.torchVersion}`);
  const zero = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_CUDNN_ATTENTION: '0' } });
  t.is(zero.status, 0, zero.stderr);
  t.false(JSON.parse(zero.stdout), 'COLTRAST_CUDNN_ATTENTION=0 is the default');
});

// embed() keeps two batches in flight. When one fails, the call rejects with that error only after the batch
// queued behind it has settled (so dispose() waits for no stray native work), nothing is left unhandled, and
// the model goes on working.
test('a failing batch: embed() rejects with its error once the next batch has settled; nothing unhandled', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const real = (enc as any).model.handle;
  const events: string[] = [];
  let calls = 0;
  (enc as any).model.handle = new Proxy(real, {
    get(target, key) {
      if (key !== 'embed') return Reflect.get(target, key).bind(target);
      return (request: unknown) => {
        const n = ++calls;
        events.push(`submit ${n}`);
        const work = n === 1 ? Promise.reject(Object.assign(new Error('batch 1 failed'), { code: 'NATIVE' })) : target.embed(request);
        return work.finally(() => events.push(`settled ${n}`));
      };
    },
  });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const error = await t.throwsAsync(enc.embed(texts, { batchSize: 2 }));
    events.push('rejected');
    t.is(error?.message, 'batch 1 failed');
    t.true(error instanceof ColtrastError);
    t.deepEqual(events, ['submit 1', 'submit 2', 'settled 1', 'settled 2', 'rejected'], 'the second batch was queued, then awaited');
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  (enc as any).model.handle = real;
  const again = await enc.embed(texts, { batchSize: 2 });
  t.is(again.dims[0], texts.length);
  enc.dispose();
});
