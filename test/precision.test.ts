// Mixed-precision training: bfloat16 autocast on the CPU, float16's refusal there, dynamic loss scaling
// (exact when nothing overflows, skipping and backing off when something does, saved with the trainer
// state), the divergence error, and the same on CUDA where a GPU is present.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, retrievalMetrics, train } from '../lib';
import { native, type NativeStepOptions } from '../lib/native';
import type { Device } from '../lib/encoder';
import { FIXTURE, STEP, dropoutOff, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';

const dataset = wordDataset;

const BATCHES = [0, 1, 2, 3, 4, 5].map((i) => dataset(4, 100 + i));

/** Runs the native trainer over BATCHES on `device` and returns each step's result. */
async function steps(
  device: Device,
  trainer: Parameters<Encoder['createTrainer']>[0],
  step: Partial<NativeStepOptions> | ((index: number) => Partial<NativeStepOptions>) = {},
  model = FIXTURE,
) {
  const enc = await Encoder.load(model, { device });
  try {
    const tr = await enc.createTrainer({ learningRate: 1e-3, seed: 3, ...trainer });
    const out = [];
    for (const [i, b] of BATCHES.entries()) {
      out.push(await tr.step(b.map((e) => e.query), b.map((e) => e.positive), { ...STEP, ...(typeof step === 'function' ? step(i) : step) }));
    }
    return out;
  } finally {
    enc.dispose();
  }
}

const relative = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

test.serial('bfloat16 autocast on the CPU: close to float32, not equal to it, and repeatable', async (t) => {
  const fp32 = await steps('cpu', { precision: 'float32' });
  const bf16 = await steps('cpu', { precision: 'bfloat16' });
  const again = await steps('cpu', { precision: 'bfloat16' });
  t.deepEqual(again.map((r) => r.loss), bf16.map((r) => r.loss));
  // Step 1 sees the same weights: only the precision of the forward differs.
  t.not(bf16[0].loss, fp32[0].loss, 'autocast changed nothing: the forward did not run in bfloat16');
  t.true(relative(bf16[0].loss, fp32[0].loss) < 0.03, `step 1: bf16 ${bf16[0].loss} vs fp32 ${fp32[0].loss}`);
  t.true(relative(bf16[0].gradNorm, fp32[0].gradNorm) < 0.05, `step 1 grad norm: bf16 ${bf16[0].gradNorm} vs fp32 ${fp32[0].gradNorm}`);
  t.true(bf16.every((r) => !r.skipped && r.gradScale === 1 && r.seconds > 0 && r.tokenizeSeconds >= 0));
});

test('float16 is refused on the CPU, before anything is trained, naming the fix', async (t) => {
  const options = { model: FIXTURE, data: dataset(8), output: path.join(tempDir(), 'out'), batchSize: 2, device: 'cpu' as const, precision: 'float16' as const };
  for (const device of ['cpu', 'auto'] as const) {
    if (device === 'auto' && native().runtimeInfo().cudaAvailable) continue;
    const error = await train({ ...options, device }).catch((e) => e);
    t.true(error instanceof ColtrastError);
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, /options\.precision 'float16' needs a CUDA device; on the CPU use 'bfloat16' or 'float32'/);
  }
  t.false(fs.existsSync(options.output));
  const bad = await train({ ...options, precision: 'half' as any }).catch((e) => e);
  t.regex(bad.message, /options\.precision must be one of 'float32', 'bfloat16', 'float16'/);
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  await t.throwsAsync(enc.createTrainer({ precision: 'float16' }), { message: /float16 mixed precision needs a CUDA device/ });
  enc.dispose();
});

test.serial('loss scaling by a power of two changes nothing while no gradient overflows', async (t) => {
  const plain = await steps('cpu', {});
  const scaled = await steps('cpu', { gradScaler: { initScale: 1024, growthInterval: 2 } });
  t.deepEqual(scaled.map((r) => [r.loss, r.gradNorm]), plain.map((r) => [r.loss, r.gradNorm]));
  // The scale doubles after every 2 clean steps.
  t.deepEqual(scaled.map((r) => r.gradScale), [1024, 2048, 2048, 4096, 4096, 8192]);
  t.true(plain.every((r) => r.gradScale === 1 && !r.skipped));
});

test.serial('an overflowing step is skipped and the scale backs off; the scale survives saveState/loadState', async (t) => {
  // At 2^127 the scaled gradients overflow float32: those steps apply nothing and halve the scale.
  const huge = 2 ** 127;
  const out = await steps('cpu', { gradScaler: { initScale: huge, growthInterval: 1000 } });
  const skipped = out.map((r) => r.skipped);
  t.true(skipped.some((s) => s), `no step overflowed at scale 2^127: ${out.map((r) => r.gradNorm).join(' ')}`);
  t.true(skipped.some((s) => !s));
  let scale = huge;
  out.forEach((r) => {
    if (r.skipped) scale /= 2;
    t.is(r.gradScale, scale);
    t.is(Number.isFinite(r.gradNorm), !r.skipped);
  });
  // A skipped step leaves the weights alone (a loss times 1e30 times 2^127 overflows for certain).
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const q = BATCHES[2].map((e) => e.query);
  const before = await enc.embed(q);
  const overflow = await (await enc.createTrainer({ gradScaler: { initScale: huge } })).step(q, BATCHES[2].map((e) => e.positive), { ...STEP, lossScale: 1e30 });
  t.true(overflow.skipped);
  t.is(overflow.gradScale, huge / 2);
  t.deepEqual(await enc.embed(q), before);

  const dir = tempDir();
  const a = await enc.createTrainer({ seed: 3, gradScaler: { initScale: 256, growthInterval: 1 } });
  const b = BATCHES[0];
  const r1 = await a.step(b.map((e) => e.query), b.map((e) => e.positive), STEP);
  t.is(r1.gradScale, 512);
  await a.saveState(path.join(dir, 'state.safetensors'));
  const c = await enc.createTrainer({ seed: 3, gradScaler: { initScale: 1, growthInterval: 1 } });
  await c.loadState(path.join(dir, 'state.safetensors'));
  const r2 = await c.evaluate(b.map((e) => e.query), b.map((e) => e.positive), STEP);
  t.is(r2.gradScale, 512, 'the loaded trainer continues at the saved scale');
  await t.throwsAsync(enc.createTrainer({ gradScaler: { backoffFactor: 2 } }), { message: /0 < backoffFactor < 1/ });
  enc.dispose();
});

test.serial('a non-finite gradient without loss scaling is a clear error and leaves the weights unchanged', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const b = BATCHES[1];
  const q = b.map((e) => e.query);
  const d = b.map((e) => e.positive);
  const before = await enc.embed(q);
  const tr = await enc.createTrainer({ seed: 3 });
  const error = await tr.step(q, d, { ...STEP, lossScale: 1e39 }).catch((e) => e);
  t.true(error instanceof ColtrastError);
  t.is(error.code, 'INVALID_ARGUMENT');
  // Before any update the learning rate is not the cause: the message says what is.
  t.regex(error.message, /gradient norm is (NaN|infinite) at step 1: training diverged before any update \(the loss overflows: lower options\.loss's weights, raise its temperature, or train in float32\)$/);
  t.deepEqual(await enc.embed(q), before);
  // The trainer still works afterwards.
  const ok = await tr.step(q, d, STEP);
  t.true(Number.isFinite(ok.loss) && Number.isFinite(ok.gradNorm));
  // After an update, the learning rate may be the cause.
  const later = await tr.step(q, d, { ...STEP, lossScale: 1e39 }).catch((e) => e);
  t.regex(later.message, /gradient norm is (NaN|infinite) at step 2: training diverged \(lower options\.learningRate, keep gradient clipping on, or train in float32\)$/);
  // dispose() frees it; later calls say so.
  tr.dispose();
  const gone = await tr.step(q, d, STEP).catch((e) => e);
  t.true(gone instanceof ColtrastError);
  t.is(gone.code, 'DISPOSED');
  await t.throwsAsync(tr.saveState(path.join(tempDir(), 's.safetensors')), { message: /this trainer was disposed/ });
  enc.dispose();
});

test.serial('train() in bfloat16 lowers the loss, improves retrieval and reports where the step time went', async (t) => {
  const data = dataset(24);
  const output = path.join(tempDir(), 'out');
  const base = await Encoder.load(FIXTURE, { device: 'cpu' });
  const before = await retrievalMetrics(base, data);
  base.dispose();
  const run = await train({ model: FIXTURE, data, output, epochs: 12, batchSize: 6, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 1, precision: 'bfloat16' });
  const losses = run.history.epochs.map((e) => e.trainLoss);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  t.true(mean(losses.slice(-3)) < 0.8 * mean(losses.slice(0, 3)), `epoch losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  t.false(run.history.steps.some((s) => s.skipped));
  const trained = await Encoder.load(output, { device: 'cpu' });
  const after = await retrievalMetrics(trained, data);
  trained.dispose();
  t.true(after['recall@1'] > before['recall@1'] + 0.1, `recall@1 ${before['recall@1']} -> ${after['recall@1']}`);
  // The saved weights are float32 (autocast never changes the master weights); position_ids stay I64.
  const file = fs.readFileSync(path.join(output, 'model.safetensors'));
  const header = JSON.parse(file.subarray(8, 8 + Number(file.readBigUInt64LE(0))).toString('utf8'));
  const dtypes = new Set(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([, v]: [string, any]) => v.dtype));
  t.deepEqual([...dtypes].sort(), ['F32', 'I64']);
  const timing = run.timing!;
  t.is(timing.batches, 48);
  t.true(timing.nativeSeconds > 0 && timing.nativeSeconds + timing.tokenizeSeconds <= timing.seconds * 1.001, JSON.stringify(timing));
  t.true(timing.jsFraction >= 0 && timing.jsFraction < 1);
  t.is(JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8')).config.precision, 'bfloat16');
});

const cuda = native().runtimeInfo().cudaAvailable;
const why = cuda ? '' : ' [skipped: no CUDA device or CUDA libtorch here]';
// Dropout off: on a GPU, scaled_dot_product_attention picks another fused kernel for each dtype (flash attention
// for the half types), each drawing its own dropout masks, so with dropout the runs would differ by their masks
// (5% in step 1's loss on an H200), not by their precision.
const noDropout = cuda ? fixtureCopy(dropoutOff) : FIXTURE;
for (const precision of ['bfloat16', 'float16'] as const) {
  (cuda ? test.serial : test.skip)(`cuda ${precision}: autocast steps stay close to float32 and apply their updates${why}`, async (t) => {
    const mixed = await steps('cuda', { precision }, {}, noDropout);
    // float16's loss scaler skips the steps whose scaled gradients overflow (no update, AdamW's count unchanged), as
    // torch.amp.GradScaler does: the float32 run skips the same ones, or their losses would differ by the updates
    // missed. Its scaler starts at 1 (scaling by powers of two is exact in float32) and a loss factor of 1e39
    // overflows the steps to skip.
    const skipped = mixed.map((r) => r.skipped);
    const fp32 = await steps('cuda', { precision: 'float32', gradScaler: { initScale: 1, growthInterval: 1000 } }, (i) => (skipped[i] ? { lossScale: 1e39 } : {}), noDropout);
    const show = (rs: typeof mixed) => rs.map((r) => `${r.loss.toFixed(4)}${r.skipped ? ' (skipped)' : ''} x${r.gradScale}`).join(', ');
    t.log(`${precision}: ${show(mixed)}`);
    t.log(`float32: ${show(fp32)}`);
    t.deepEqual(fp32.map((r) => r.skipped), skipped, 'the float32 run skips the same steps');
    t.not(mixed[0].loss, fp32[0].loss);
    t.true(relative(mixed[0].loss, fp32[0].loss) < 0.03, `step 1: ${precision} ${mixed[0].loss} vs fp32 ${fp32[0].loss}`);
    t.true(mixed.every((r) => Number.isFinite(r.loss)));
    if (precision === 'float16') {
      // The scale after step 1: GradScaler's default, halved if that step overflowed.
      t.is(mixed[0].gradScale, skipped[0] ? 32768 : 65536, 'float16 scales the loss by torch.amp.GradScaler\'s default');
      t.false(skipped.every((s) => s));
    } else {
      t.true(mixed.every((r) => r.gradScale === 1 && !r.skipped));
    }
    // Both runs learn: the losses of the last steps are close to each other.
    t.true(relative(mixed[5].loss, fp32[5].loss) < 0.1, `step 6: ${precision} ${mixed[5].loss} vs fp32 ${fp32[5].loss}`);
  });
}
