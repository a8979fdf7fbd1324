// The C++ safetensors reader must reject every malformed file with a MODEL_FILES error that says what
// is wrong, never crash or allocate the size a corrupt header claims.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, ColtrastError, Generator, Index } from '../lib';
import { fixtureCopy, tempDir } from './helpers/fixture';
import { rawSafetensors, readSafetensors, shardWeights, writeSafetensors } from './helpers/safetensors';

async function loadWithWeights(bytes: Buffer) {
  const dir = fixtureCopy((d) => fs.writeFileSync(path.join(d, 'model.safetensors'), bytes));
  return Encoder.load(dir, { device: 'cpu' });
}

function fixtureWeights() {
  return readSafetensors(path.join(fixtureCopy(), 'model.safetensors')).tensors;
}

const f32 = (n: number) => Buffer.alloc(n * 4);

const cases: Array<[string, () => Buffer, RegExp]> = [
  ['an empty file', () => Buffer.alloc(0), /shorter than the 8-byte header length/],
  ['a 5-byte file', () => Buffer.from([1, 2, 3, 4, 5]), /shorter than the 8-byte header length/],
  [
    'an absurd header length',
    () => {
      const b = Buffer.alloc(64);
      b.writeBigUInt64LE(1n << 60n);
      return b;
    },
    /exceeds 100 MB/,
  ],
  [
    'a header running past the end (truncated file)',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(2)).subarray(0, 20),
    /runs past the end/,
  ],
  [
    'a header that is not JSON',
    () => {
      const json = Buffer.from('{"a": [1, 2', 'utf8');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([len, json]);
    },
    /not valid JSON/,
  ],
  ['a header that is a JSON array', () => rawSafetensors([1, 2, 3], Buffer.alloc(0)), /not a JSON object/],
  [
    'offsets past the end of the data',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)),
    /ends at byte 16 but the data section has only 8 bytes/,
  ],
  [
    'overlapping tensors',
    () =>
      rawSafetensors(
        {
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
        },
        f32(3),
      ),
    /overlap/,
  ],
  [
    'an unknown dtype',
    () => rawSafetensors({ a: { dtype: 'F8_E9M9', shape: [2], data_offsets: [0, 2] } }, Buffer.alloc(2)),
    /unsupported dtype F8_E9M9/,
  ],
  [
    'a shape that does not match the byte size',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)),
    /shape\/size mismatch/,
  ],
  [
    'a shape whose size overflows',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, f32(2)),
    /overflows/,
  ],
  [
    'a negative dimension',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2)),
    /negative or non-integer dimension/,
  ],
  [
    'an entry without data_offsets',
    () => rawSafetensors({ a: { dtype: 'F32', shape: [2] } }, f32(2)),
    /lacks dtype, shape or data_offsets/,
  ],
];

for (const [what, bytes, message] of cases) {
  test(`rejects ${what}`, async (t) => {
    const error = await t.throwsAsync(loadWithWeights(bytes()), { instanceOf: ColtrastError, message });
    t.is(error?.code, 'MODEL_FILES');
    t.regex(error!.message, /malformed safetensors file .*model\.safetensors/);
  });
}

test('rejects a weights file missing a tensor the config needs, and names it', async (t) => {
  const tensors = fixtureWeights();
  tensors.delete('encoder.layer.1.output.dense.weight');
  const dir = fixtureCopy((d) => writeSafetensors(path.join(d, 'model.safetensors'), tensors));
  const error = await t.throwsAsync(Encoder.load(dir, { device: 'cpu' }), { instanceOf: ColtrastError });
  t.is(error?.code, 'MODEL_FILES');
  t.regex(error!.message, /lacks encoder\.layer\.1\.output\.dense\.weight/);
});

test('rejects a weight whose shape disagrees with config.json', async (t) => {
  const tensors = fixtureWeights();
  const w = tensors.get('encoder.layer.0.intermediate.dense.bias')!;
  tensors.set('encoder.layer.0.intermediate.dense.bias', { ...w, shape: [w.shape[0] - 1], data: w.data.subarray(4) });
  const dir = fixtureCopy((d) => writeSafetensors(path.join(d, 'model.safetensors'), tensors));
  const error = await t.throwsAsync(Encoder.load(dir, { device: 'cpu' }), { instanceOf: ColtrastError });
  t.is(error?.code, 'MODEL_FILES');
  t.regex(error!.message, /intermediate\.dense\.bias.*has shape \[36\] but config\.json implies \[37\]/);
});

test('rejects an integer tensor where a weight belongs', async (t) => {
  const tensors = fixtureWeights();
  const w = tensors.get('embeddings.LayerNorm.bias')!;
  tensors.set('embeddings.LayerNorm.bias', { ...w, dtype: 'I32' });
  const dir = fixtureCopy((d) => writeSafetensors(path.join(d, 'model.safetensors'), tensors));
  await t.throwsAsync(Encoder.load(dir, { device: 'cpu' }), { instanceOf: ColtrastError, message: /not a floating-point tensor/ });
});

test('sharded weights (model.safetensors.index.json and its shards) load as the single file does; saving writes one file', async (t) => {
  const texts = ['a query', 'the quick brown fox', ''];
  const whole = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  const expected = await whole.embed(texts);
  whole.dispose();
  const dir = fixtureCopy((d) => t.is(shardWeights(d, 3).length, 3));
  const sharded = await Encoder.load(dir, { device: 'cpu' });
  t.deepEqual(Array.from((await sharded.embed(texts)).data), Array.from(expected.data));
  // An index over a sharded model fingerprints its shards.
  const index = await Index.build(sharded, [{ id: 'a', text: 'the quick brown fox' }]);
  t.is((await index.search(['fox'], { k: 1 }))[0][0].id, 'a');
  const saved = path.join(tempDir(), 'saved');
  await sharded.save(saved);
  sharded.dispose();
  t.true(fs.existsSync(path.join(saved, 'model.safetensors')));
  t.false(fs.existsSync(path.join(saved, 'model.safetensors.index.json')));

  // A causal LM too (the generator of retrieval-augmented generation is where shards are common).
  const lmDir = path.join(tempDir(), 'llama');
  fs.cpSync(path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama'), lmDir, { recursive: true });
  const pairs = [{ prompt: 'what is a query?', completion: 'a search text' }];
  const lm = await Generator.load(lmDir, { device: 'cpu' });
  const ll = await lm.logLikelihood(pairs);
  lm.dispose();
  shardWeights(lmDir, 2);
  const shardedLm = await Generator.load(lmDir, { device: 'cpu' });
  t.deepEqual(Array.from(await shardedLm.logLikelihood(pairs)), Array.from(ll));
  shardedLm.dispose();
});

test('sharded weights: a missing shard, a tensor in two shards or a bad index are refused with the reason', async (t) => {
  const missing = fixtureCopy((d) => fs.rmSync(path.join(d, shardWeights(d, 2)[1])));
  const e1 = await t.throwsAsync(Encoder.load(missing, { device: 'cpu' }), { instanceOf: ColtrastError });
  t.is(e1!.code, 'MODEL_FILES');
  t.regex(e1!.message, /names model-00002-of-00002\.safetensors, which the folder lacks/);
  const twice = fixtureCopy((d) => {
    const [first, second] = shardWeights(d, 2);
    const a = readSafetensors(path.join(d, first)).tensors;
    const b = readSafetensors(path.join(d, second)).tensors;
    const [name, tensor] = [...a][0];
    b.set(name, tensor);
    writeSafetensors(path.join(d, second), b);
  });
  const e2 = await t.throwsAsync(Encoder.load(twice, { device: 'cpu' }), { instanceOf: ColtrastError });
  t.is(e2!.code, 'MODEL_FILES');
  t.regex(e2!.message, /tensor '.+' is in both .*model-00001-of-00002\.safetensors and .*model-00002-of-00002\.safetensors/);
  const badIndex = fixtureCopy((d) => {
    shardWeights(d, 2);
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: '../elsewhere.safetensors' } }));
  });
  const e3 = await t.throwsAsync(Encoder.load(badIndex, { device: 'cpu' }), { instanceOf: ColtrastError });
  t.regex(e3!.message, /has no "weight_map" of tensor names to shard files in the folder/);
});
