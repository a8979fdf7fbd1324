// The projection head (sentence-transformers' Dense module): train({ projection }) adds and trains one, the
// saved folder holds it as Python lays it out, a reloaded model computes tanh(W · pooled + b) exactly, token
// vectors keep the hidden width (late interaction still works), and broken Dense folders are refused.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, train } from '../lib';
import { editJson, FIXTURE, tempDir } from './helpers/fixture';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');
import { readSafetensors } from './helpers/safetensors';

const WORDS = 'model text token vector search query document retrieval train loss batch fast slow small large tiny cat dog river bank money water paper'.split(' ');
const data = Array.from({ length: 16 }, (_, i) => {
  const key = [WORDS[i % WORDS.length], WORDS[(i * 7 + 3) % WORDS.length], WORDS[(i * 5 + 1) % WORDS.length]];
  return { query: key.join(' '), positive: [WORDS[(i + 2) % WORDS.length], ...key, WORDS[(i + 9) % WORDS.length]].join(' ') };
});

let trained: string;
test.before(async () => {
  trained = path.join(tempDir(), 'with-head');
  await train({
    model: FIXTURE,
    data,
    output: trained,
    epochs: 3,
    batchSize: 4,
    learningRate: 1e-3,
    valSplit: 0,
    device: 'cpu',
    seed: 3,
    projection: { dimension: 12, activation: 'tanh' },
  });
});

function floats(raw: { dtype: string; data: Buffer }): Float32Array {
  if (raw.dtype !== 'F32') throw new Error(`expected F32, got ${raw.dtype}`);
  return new Float32Array(raw.data.buffer.slice(raw.data.byteOffset, raw.data.byteOffset + raw.data.byteLength));
}

test('the trained head is saved as a sentence-transformers Dense module', (t) => {
  const modules = JSON.parse(fs.readFileSync(path.join(trained, 'modules.json'), 'utf8'));
  t.deepEqual(
    modules.map((m: { type: string; path: string }) => [m.type.replace('sentence_transformers.models.', ''), m.path]),
    [['Transformer', ''], ['Pooling', '1_Pooling'], ['Dense', '2_Dense'], ['Normalize', '3_Normalize']],
  );
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(trained, '2_Dense', 'config.json'), 'utf8')), {
    in_features: 32,
    out_features: 12,
    bias: true,
    activation_function: 'torch.nn.modules.activation.Tanh',
  });
  const { tensors } = readSafetensors(path.join(trained, '2_Dense', 'model.safetensors'));
  t.deepEqual([...tensors.keys()].sort(), ['linear.bias', 'linear.weight']);
  t.deepEqual(tensors.get('linear.weight')!.shape, [12, 32]);
  // The pooling config still describes the transformer's width.
  t.is(JSON.parse(fs.readFileSync(path.join(trained, '1_Pooling', 'config.json'), 'utf8')).word_embedding_dimension, 32);
});

test('a reloaded model computes normalize(tanh(W · mean(tokens) + b)); tokens keep the hidden width', async (t) => {
  const enc = await Encoder.load(trained, { device: 'cpu' });
  t.is(enc.dimension, 12);
  t.is(enc.tokenDimension, 32);
  t.deepEqual(enc.projection, { inFeatures: 32, outFeatures: 12, activation: 'tanh' });
  const { tensors } = readSafetensors(path.join(trained, '2_Dense', 'model.safetensors'));
  const W = floats(tensors.get('linear.weight')!);
  const b = floats(tensors.get('linear.bias')!);
  const texts = ['river bank money', 'a tiny model for search', 'x'];
  const pooled = await enc.embed(texts);
  const tokens = await enc.embed(texts, { output: 'tokens' });
  t.deepEqual(pooled.dims, [3, 12]);
  let worst = 0;
  tokens.forEach((m, i) => {
    t.is(m.dims[1], 32);
    const mean = Array.from({ length: 32 }, (_, k) => {
      let s = 0;
      for (let r = 0; r < m.dims[0]; r++) s += m.data[r * 32 + k];
      return s / m.dims[0];
    });
    const y = Array.from({ length: 12 }, (_, o) => Math.tanh(b[o] + mean.reduce((s, x, k) => s + W[o * 32 + k] * x, 0)));
    const norm = Math.hypot(...y);
    y.forEach((v, o) => (worst = Math.max(worst, Math.abs(v / norm - pooled.data[i * 12 + o]))));
  });
  t.true(worst < 1e-5, `largest difference ${worst}`);
  enc.dispose();
});

test('the head trains: it moved from its seeded initialization, and saving again writes the same weights', async (t) => {
  const fresh = await Encoder.load(FIXTURE, { device: 'cpu' });
  await fresh.addProjectionHead(12, 'tanh', 3);
  const initial = path.join(tempDir(), 'initial');
  await fresh.save(initial);
  fresh.dispose();
  const a = fs.readFileSync(path.join(initial, '2_Dense', 'model.safetensors'));
  const b = fs.readFileSync(path.join(trained, '2_Dense', 'model.safetensors'));
  t.is(a.length, b.length);
  t.false(a.equals(b), 'training changed the head');
  const enc = await Encoder.load(trained, { device: 'cpu' });
  const again = path.join(tempDir(), 'again');
  await enc.save(again);
  enc.dispose();
  t.true(fs.readFileSync(path.join(again, '2_Dense', 'model.safetensors')).equals(b));
});

test('late-interaction indexes use the token width of a model with a head', async (t) => {
  const enc = await Encoder.load(trained, { device: 'cpu' });
  const index = await Index.build(enc, data.map((d, i) => ({ id: `d${i}`, text: d.positive })), { lateInteraction: true });
  const hits = await index.search([data[5].query], { k: 3, rerank: 'maxsim' });
  t.is(hits[0].length, 3);
  t.true(hits[0].every((h) => Number.isFinite(h.score)));
  enc.dispose();
});

async function loadError(t: any, dir: string, code: string, pattern: RegExp) {
  const error = await Encoder.load(dir, { device: 'cpu' }).then(
    (e) => (e.dispose(), undefined),
    (e) => e,
  );
  t.true(error instanceof ColtrastError, `expected a ColtrastError, got ${error}`);
  t.is(error.code, code);
  t.regex(error.message, pattern);
}

function copyOfTrained(edit: (dir: string) => void): string {
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(trained, dir, { recursive: true });
  edit(dir);
  return dir;
}

test('broken Dense modules are refused with the reason', async (t) => {
  const dense = (dir: string) => path.join(dir, '2_Dense');
  await loadError(t, copyOfTrained((d) => editJson(path.join(dense(d), 'config.json'), (c) => ({ ...c, activation_function: 'torch.nn.modules.activation.ReLU' }))), 'UNSUPPORTED_MODEL', /ReLU is not supported/);
  await loadError(t, copyOfTrained((d) => editJson(path.join(dense(d), 'config.json'), (c) => ({ ...c, out_features: 13 }))), 'MODEL_FILES', /out_features 13, but its weights map 32 → 12/);
  await loadError(t, copyOfTrained((d) => fs.renameSync(path.join(dense(d), 'model.safetensors'), path.join(dense(d), 'pytorch_model.bin'))), 'MODEL_FILES', /safetensors only \(never pickle\)/);
  await loadError(
    t,
    copyOfTrained((d) => editJson(path.join(d, 'modules.json'), (m) => [m[0], m[1], m[3], m[2]])),
    'UNSUPPORTED_MODEL',
    /Dense modules one after another between Pooling and Normalize are supported, not Transformer → Pooling → Normalize → Dense/,
  );
  // A second Dense module must take what the first gives (the trained head maps 32 → 12; a copy of it takes 32).
  const twice = (d: string, modules: (m: any[], second: object) => any[]) => {
    fs.cpSync(dense(d), path.join(d, '3_Dense'), { recursive: true });
    editJson(path.join(d, 'modules.json'), (m) => modules(m, { idx: 3, name: '3', path: '3_Dense', type: 'sentence_transformers.models.Dense' }));
  };
  await loadError(t, copyOfTrained((d) => twice(d, (m, second) => [m[0], m[1], m[2], second, m[3]])), 'MODEL_FILES', /the Dense module 3_Dense takes 32 features, and the one before it gives 12/);
  await loadError(t, copyOfTrained((d) => twice(d, (m, second) => [m[0], m[1], m[2], m[3], second])), 'UNSUPPORTED_MODEL', /not Transformer → Pooling → Dense → Normalize → Dense/);
  // A head whose weights do not fit the transformer's width (a 16-wide model with the 32-wide head).
  const narrow = path.join(tempDir(), 'narrow');
  makeRandomBert(narrow, { shape: 'tiny', hiddenSize: 16, vocabSize: 198, maxSeqLength: 24 });
  fs.cpSync(dense(trained), dense(narrow), { recursive: true });
  editJson(path.join(narrow, 'modules.json'), (m) => [m[0], m[1], { idx: 2, name: '2', path: '2_Dense', type: 'sentence_transformers.models.Dense' }, ...m.slice(2)]);
  await loadError(t, narrow, 'MODEL_FILES', /linear\.weight has shape \[12, 32\], expected \[out_features, 16\]/);
});

test('train({ projection }) is checked, and refused for a model that has a head', async (t) => {
  const base = { data, output: path.join(tempDir(), 'out'), device: 'cpu' as const, valSplit: 0 };
  const rejects = async (options: object, pattern: RegExp) => {
    const error = await train({ ...base, ...options } as any).then(
      () => undefined,
      (e) => e,
    );
    t.true(error instanceof ColtrastError, `expected a ColtrastError, got ${error}`);
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, pattern);
  };
  await rejects({ model: FIXTURE, projection: { dimension: 0 } }, /options\.projection\.dimension must be a positive integer/);
  await rejects({ model: FIXTURE, projection: { dimension: 8, activation: 'relu' } }, /options\.projection\.activation/);
  await rejects({ model: FIXTURE, projection: { dim: 8 } }, /unknown option options\.projection\.dim/);
  await rejects({ model: trained, projection: { dimension: 8 } }, /already has a projection head/);
});

test('a run with a new head that is killed mid-way resumes to the same weights as an uninterrupted run', async (t) => {
  // Each run alone in its own process, as bit-for-bit repeatability needs (README: train()).
  const { spawnSync } = await import('node:child_process');
  const child = path.resolve(__dirname, 'helpers', 'train-child.ts');
  const run = (options: object) => spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
  const options = { model: FIXTURE, data, epochs: 2, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 9, checkpointEvery: 2, projection: { dimension: 8 } };
  const whole = path.join(tempDir(), 'whole');
  t.is(run({ ...options, output: whole }).status, 0);
  const output = path.join(tempDir(), 'parts');
  const killed = run({ ...options, output, killAtStep: 5 });
  t.is(killed.signal, 'SIGKILL');
  t.true(fs.existsSync(`${output}.checkpoint`));
  const resumed = run({ ...options, output, resume: true });
  t.is(resumed.status, 0, resumed.stderr);
  for (const file of ['model.safetensors', path.join('2_Dense', 'model.safetensors')]) {
    t.true(fs.readFileSync(path.join(output, file)).equals(fs.readFileSync(path.join(whole, file))), file);
  }
});
