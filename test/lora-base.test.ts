// A LoRA adapter records the base model it was trained on (lib/lora.ts: recordBase, checkBase): the fingerprints of
// the base weights it adapts, in adapter_model.safetensors' __metadata__ (PEFT reads that file unchanged). Loaded on a
// base whose adapted weights differ (another checkpoint of the same shapes, a base fine-tuned since), where it used to
// load silently and compute wrong vectors, it is refused unless checkAdapterBase is false; a copy of its base loads,
// and so does an adapter without the record (PEFT's own).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, train } from '../lib';
import { BASE_WEIGHTS_KEY } from '../lib/lora';
import { FIXTURE, folderCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { f32ToBf16, readSafetensors, shardWeights, writeSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

const RERANKER = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const QUERY_0 = 'encoder.layer.0.attention.self.query';

/** A copy of model folder `source` whose weight `name` has one value changed (a base fine-tuned since, as far as the adapter can tell). */
function withOneWeightChanged(source: string, name: string): string {
  return folderCopy(source, (dir) => {
    const file = path.join(dir, 'model.safetensors');
    const { tensors } = readSafetensors(file);
    const data = Buffer.from(tensors.get(name)!.data);
    data.writeFloatLE(data.readFloatLE(0) + 0.25, 0);
    tensors.set(name, { ...tensors.get(name)!, data });
    writeSafetensors(file, tensors);
  });
}

/** A copy of adapter folder `adapter` as PEFT saves one: the same tensors, and __metadata__ {"format": "pt"} alone. */
function withoutRecord(adapter: string): string {
  return folderCopy(adapter, (dir) => {
    const file = path.join(dir, 'adapter_model.safetensors');
    writeSafetensors(file, readSafetensors(file).tensors);
  });
}

test('an embedding adapter records its base and loads on that base or a copy of it (sharded too), and is refused on a base whose adapted weights differ unless checkAdapterBase is false; one without the record loads', async (t) => {
  const output = path.join(tempDir(), 'lora');
  await train({ model: FIXTURE, data: wordDataset(8), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-2, lora: { rank: 2 } });
  const adapter = path.join(output, 'adapter');
  const { metadata } = readSafetensors(path.join(adapter, 'adapter_model.safetensors'));
  // PEFT's format key stays; the record is one string (safetensors' metadata maps strings to strings).
  t.is(metadata?.format, 'pt');
  const record = JSON.parse(metadata![BASE_WEIGHTS_KEY]);
  t.deepEqual(Object.keys(record), [0, 1].flatMap((l) => [`encoder.layer.${l}.attention.self.query`, `encoder.layer.${l}.attention.self.value`]).sort());
  t.regex(record[QUERY_0], /^F32 32x32 [0-9a-f]{64}$/);
  // adapter_config.json has only PEFT's keys.
  t.false(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8').includes('coltrast'));

  const texts = wordDataset(6).map((p) => p.query);
  const merged = await Encoder.load(output, { device: 'cpu' });
  const want = (await merged.embed(texts)).data;
  merged.dispose();
  const embeds = async (base: string, options: object = {}) => {
    const encoder = await Encoder.load(base, { device: 'cpu', adapter, ...options });
    try {
      return maxAbsDiff((await encoder.embed(texts)).data, want);
    } finally {
      encoder.dispose();
    }
  };
  t.true((await embeds(FIXTURE)) < 1e-6, 'its own base');
  t.true((await embeds(folderCopy(FIXTURE, undefined, 'elsewhere'))) < 1e-6, 'a copy of its base in another folder');
  t.true((await embeds(folderCopy(FIXTURE, (d) => shardWeights(d, 3), 'sharded'))) < 1e-6, 'its base in shards');

  // One value of one adapted weight changed: the adapter loaded, and every vector moved.
  const other = withOneWeightChanged(FIXTURE, `${QUERY_0}.weight`);
  const error = await rejection(() => Encoder.load(other, { device: 'cpu', adapter }));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.true(error.message.includes(`the LoRA adapter ${adapter} was trained on another base model than ${other}: 1 of the 4 base weights it adapts differ (the values of ${QUERY_0}.weight differ)`), error.message);
  t.true(error.message.includes(`Load it on the base it was trained on (adapter_config.json's base_model_name_or_path: ${FIXTURE}), or pass options.checkAdapterBase: false`), error.message);
  const unchecked = await embeds(other, { checkAdapterBase: false });
  t.true(unchecked > 1e-4, `checkAdapterBase: false loads it on the other base (whose vectors differ by ${unchecked})`);
  // The CLI says its flag.
  const textsFile = path.join(tempDir(), 'texts.txt');
  fs.writeFileSync(textsFile, texts.join('\n'));
  const cli = (...flags: string[]) =>
    spawnSync(process.execPath, [path.resolve(__dirname, '..', 'dist', 'cli.js'), 'embed', textsFile, '--model', other, '--adapter', adapter, '--device', 'cpu', ...flags], { encoding: 'utf8', timeout: 240_000 });
  const refused = cli();
  t.not(refused.status, 0);
  t.regex(refused.stderr, /was trained on another base model than .*, or pass --no-adapter-base-check to load it on this base all the same/);
  t.is(cli('--no-adapter-base-check').status, 0);
  // PEFT's adapter, or one saved before the record: loaded as before, on any base of its shapes.
  t.true((await embeds(other, { adapter: withoutRecord(adapter) })) > 1e-4);

  // The same weights stored in another dtype are another base to the adapter (the message says how).
  const bf16 = folderCopy(FIXTURE, (dir) => {
    const file = path.join(dir, 'model.safetensors');
    const { tensors } = readSafetensors(file);
    for (const [name, raw] of tensors) if (raw.dtype === 'F32') tensors.set(name, { ...raw, dtype: 'BF16', data: f32ToBf16(raw.data) });
    writeSafetensors(file, tensors);
  }, 'bf16');
  t.regex((await rejection(() => Encoder.load(bf16, { device: 'cpu', adapter }))).message, /4 of the 4 base weights it adapts differ \(encoder\.layer\.0\.attention\.self\.query\.weight is stored as BF16 there, as F32 in the adapter's base \(a converted copy\?\)\)/);

  // Saved again from its base: the same record; from the other base (unchecked): that base's.
  const again = async (base: string, options: object = {}) => {
    const encoder = await Encoder.load(base, { device: 'cpu', adapter, ...options });
    const dir = path.join(tempDir(), 'again');
    await encoder.save(dir);
    encoder.dispose();
    return readSafetensors(path.join(dir, 'adapter', 'adapter_model.safetensors')).metadata![BASE_WEIGHTS_KEY];
  };
  t.is(await again(FIXTURE), metadata![BASE_WEIGHTS_KEY]);
  t.not(await again(other, { checkAdapterBase: false }), metadata![BASE_WEIGHTS_KEY]);

  // A record that is not the JSON coltrast writes, and a checkAdapterBase that is not a boolean.
  const damaged = folderCopy(adapter, (dir) => {
    const file = path.join(dir, 'adapter_model.safetensors');
    const { tensors } = readSafetensors(file);
    writeSafetensors(file, tensors);
    const bytes = fs.readFileSync(file);
    const length = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
    header.__metadata__[BASE_WEIGHTS_KEY] = '{not json';
    const text = Buffer.from(JSON.stringify(header));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(text.length));
    fs.writeFileSync(file, Buffer.concat([prefix, text, bytes.subarray(8 + length)]));
  });
  const bad = await rejection(() => Encoder.load(FIXTURE, { device: 'cpu', adapter: damaged }));
  t.is(bad.code, 'MODEL_FILES');
  t.regex(bad.message, /__metadata__ "coltrast\.base_weights" \(the base model the adapter was trained on\) is damaged; save the adapter again, or pass options\.checkAdapterBase: false/);
  t.regex((await rejection(() => Encoder.load(FIXTURE, { device: 'cpu', adapter, checkAdapterBase: 'no' as never }))).message, /options\.checkAdapterBase must be true or false/);
});

test("a cross-encoder's adapter records its base too: refused on a reranker whose adapted weights differ, loaded with checkAdapterBase false, and through a folder holding only the adapter on its own base", async (t) => {
  const output = path.join(tempDir(), 'reranker-lora');
  await train({ model: RERANKER, data: wordDataset(8), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: { loss: 'bce' }, lora: { rank: 2 } });
  const adapter = path.join(output, 'adapter');
  // The adapters carry the task model's prefix ("bert."); the reranker's weights are named with it too.
  const record = JSON.parse(readSafetensors(path.join(adapter, 'adapter_model.safetensors')).metadata![BASE_WEIGHTS_KEY]);
  t.deepEqual(Object.keys(record), [0, 1].flatMap((l) => [`bert.encoder.layer.${l}.attention.self.query`, `bert.encoder.layer.${l}.attention.self.value`]).sort());
  const pairs: [string, string][] = [['a question about models', 'the river bank'], ['which model embeds text', 'vectors of text']];
  const merged = await CrossEncoder.load(output, { device: 'cpu' });
  const want = (await merged.predict(pairs, { activation: 'identity' })).data;
  merged.dispose();
  const copy = await CrossEncoder.load(folderCopy(RERANKER, undefined, 'elsewhere'), { device: 'cpu', adapter });
  t.true(maxAbsDiff((await copy.predict(pairs, { activation: 'identity' })).data, want) < 1e-5);
  copy.dispose();

  const other = withOneWeightChanged(RERANKER, 'bert.encoder.layer.1.attention.self.value.weight');
  const error = await rejection(() => CrossEncoder.load(other, { device: 'cpu', adapter }));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /was trained on another base model than .*: 1 of the 4 base weights it adapts differ \(the values of bert\.encoder\.layer\.1\.attention\.self\.value\.weight differ\).*checkAdapterBase: false/);
  const unchecked = await CrossEncoder.load(other, { device: 'cpu', adapter, checkAdapterBase: false });
  t.like(unchecked.lora, { rank: 2, taskType: 'SEQ_CLS' });
  unchecked.dispose();
  const peft = await CrossEncoder.load(other, { device: 'cpu', adapter: withoutRecord(adapter) });
  t.like(peft.lora, { rank: 2 });
  peft.dispose();
  // sentence-transformers' layout (the adapter and the tokenizer, no weights): loaded on the base adapter_config.json names, and checked against it.
  const onlyAdapter = folderCopy(output, (d) => {
    for (const f of ['config.json', 'model.safetensors']) fs.rmSync(path.join(d, f));
    for (const f of fs.readdirSync(path.join(d, 'adapter'))) fs.renameSync(path.join(d, 'adapter', f), path.join(d, f));
  });
  const direct = await CrossEncoder.load(onlyAdapter, { device: 'cpu' });
  t.true(maxAbsDiff((await direct.predict(pairs, { activation: 'identity' })).data, want) < 1e-5);
  direct.dispose();
});

test('a model with an adapter whose base folder is gone by the save still saves: the adapter without the record, as PEFT saves one', async (t) => {
  const base = folderCopy(FIXTURE);
  const output = path.join(tempDir(), 'lora');
  await train({ model: base, data: wordDataset(8), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-2, lora: { rank: 2 } });
  const encoder = await Encoder.load(base, { device: 'cpu', adapter: path.join(output, 'adapter') });
  try {
    fs.rmSync(base, { recursive: true });
    const saved = path.join(tempDir(), 'again');
    await encoder.save(saved);
    const { metadata } = readSafetensors(path.join(saved, 'adapter', 'adapter_model.safetensors'));
    t.is(metadata?.[BASE_WEIGHTS_KEY], undefined);
    t.is(metadata?.format, 'pt');
  } finally {
    encoder.dispose();
  }
});
