// The C++ safetensors reader must reject every malformed file with a MODEL_FILES error that says what
// is wrong, never crash or allocate the size a corrupt header claims.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, ColtrastError } from '../lib';
import { fixtureCopy } from './helpers/fixture';
import { rawSafetensors, readSafetensors, writeSafetensors } from './helpers/safetensors';

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
