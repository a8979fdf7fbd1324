// Model files, adapters and index exports as users get them wrong (lib/export.ts, lib/lora.ts, lib/model-dir.ts,
// lib/safetensors.ts): options of the wrong type, files whose headers lie, PEFT adapter configs whose settings coltrast
// would silently compute otherwise than PEFT, and a save whose source folder is gone (written with the tokenizer the model
// loaded, or refused where the save needs that folder). Each is refused by name.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, exportIndex, quantizeEmbeddings, train } from '../lib';
import { readLoraOptions } from '../lib/lora';
import { FIXTURE, editJson, fixtureCopy, folderCopy, tempDir, wordDataset } from './helpers/fixture';
import { rawSafetensors, readSafetensors, writeSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

/** A saved index of three documents, made once. */
let indexDir: Promise<string> | undefined;
function savedIndex(): Promise<string> {
  indexDir ??= (async () => {
    const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
    const dir = path.join(tempDir(), 'index');
    await (await Index.build(encoder, ['alpha beta', 'gamma delta', 'epsilon'].map((text, i) => ({ id: `d${i}`, text })))).save(dir);
    encoder.dispose();
    return dir;
  })();
  return indexDir;
}

test("exportIndex's options and output are checked: a replace that is not a boolean no longer drops the table, and the SQL file never replaces the index's own files", async (t) => {
  const dir = await savedIndex();
  const out = path.join(tempDir(), 'out.sql');
  // 'false' is truthy: the file began with DROP TABLE.
  let error = await rejection(() => exportIndex(dir, out, { replace: 'false' as never }));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /options\.replace must be true or false, got the string "false"/);
  // A TypeError after the file was begun.
  t.regex((await rejection(() => exportIndex(dir, out, { onProgress: 5 as never }))).message, /options\.onProgress must be a function, got number 5/);
  // '' was the current folder (EISDIR on the rename), a number fs's TypeError.
  for (const output of ['', 5]) t.regex((await rejection(() => exportIndex(dir, output as never))).message, /output must be a non-empty string/);
  t.false(fs.existsSync(out));
  // The SQL renamed over docs.jsonl destroyed the index it was read from.
  const docs = fs.readFileSync(path.join(dir, 'docs.jsonl'), 'utf8');
  error = await rejection(() => exportIndex(dir, path.join(dir, 'docs.jsonl')));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /is one of the index's own files: write the SQL file elsewhere/);
  t.is(fs.readFileSync(path.join(dir, 'docs.jsonl'), 'utf8'), docs);
  // A SQL file inside the index folder, and replace: true, are fine.
  const result = await exportIndex(dir, path.join(tempDir(), 'ok.sql'), { replace: true, onProgress: () => {} });
  t.is(result.rows, 3);
  t.regex(fs.readFileSync(result.output, 'utf8'), /DROP TABLE IF EXISTS "coltrast_docs";/);
});

test('a vectors.safetensors whose header lies (negative, fractional or string offsets, a 3-d shape, bytes that are not UTF-8) is a MODEL_FILES error, not vectors read from the header or a TypeError', async (t) => {
  const dir = await savedIndex();
  const vectors = readSafetensors(path.join(dir, 'vectors.safetensors')).tensors.get('vectors')!;
  const n = vectors.data.length;
  const exportWith = (bytes: Buffer) => {
    const copy = folderCopy(dir, (d) => fs.writeFileSync(path.join(d, 'vectors.safetensors'), bytes));
    return rejection(() => exportIndex(copy, path.join(tempDir(), 'out.sql')));
  };
  const lying: Array<[string, object, Buffer]> = [
    // Read 16 bytes of the header as the first vector's values, and exported them.
    ['negative offsets', { dtype: 'F32', shape: vectors.shape, data_offsets: [-16, n - 16] }, vectors.data],
    // A RangeError from fs.readSync.
    ['fractional offsets', { dtype: 'F32', shape: vectors.shape, data_offsets: [0.5, n + 0.5] }, Buffer.concat([vectors.data, Buffer.alloc(4)])],
    ['string offsets', { dtype: 'F32', shape: vectors.shape, data_offsets: ['0', String(n)] }, vectors.data],
    // A TypeError (not iterable).
    ['offsets that are not a list', { dtype: 'F32', shape: vectors.shape, data_offsets: 7 }, vectors.data],
    ['a shape that is not a list', { dtype: 'F32', shape: 5, data_offsets: [0, n] }, vectors.data],
  ];
  for (const [what, entry, data] of lying) {
    const error = await exportWith(rawSafetensors({ vectors: entry }, data));
    t.is(error.code, 'MODEL_FILES', what);
    t.regex(error.message, /vectors\.safetensors needs a "vectors" tensor of dtype F32 or F16, with a shape and data offsets/, what);
  }
  // [rows, dim, 1] passed as [rows, dim].
  const threeD = await exportWith(rawSafetensors({ vectors: { dtype: 'F32', shape: [...vectors.shape, 1], data_offsets: [0, n] } }, vectors.data));
  t.regex(threeD.message, /vectors\.safetensors is \[3,32,1\], index\.json says 3 documents of dimension 32/);
  // Invalid UTF-8 read as U+FFFD and passed.
  const json = Buffer.from(JSON.stringify({ __metadata__: { note: 'AB' }, vectors: { dtype: 'F32', shape: vectors.shape, data_offsets: [0, n] } }));
  json.set([0xff, 0xfe], json.indexOf('AB'));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  t.regex((await exportWith(Buffer.concat([length, json, vectors.data]))).message, /vectors\.safetensors has a damaged header/);
});

test("train({ lora }) options: duplicate target modules are saved once, as PEFT saves them, and an alpha / rank past float32's range is refused, not run as an infinite scale", (t) => {
  t.deepEqual(readLoraOptions({ targetModules: ['query', 'value', 'query'] }, 'bert', 'base').targetModules, ['query', 'value']);
  const error = t.throws(() => readLoraOptions({ rank: 2, alpha: 1e308 }, 'bert', 'base'));
  t.regex(error!.message, /options\.lora\.alpha \/ options\.lora\.rank must be at most 3\.4e38/);
  t.is(readLoraOptions({ rank: 64, alpha: 16 }, 'bert', 'base').rank, 64);
});

test('an adapter whose PEFT settings coltrast would compute otherwise (lora_bias, exclude_modules, layers_to_transform, layer_replication, a flag that is not a boolean, other LoRA tensors) is refused, not run unlike PEFT', async (t) => {
  const made = path.join(tempDir(), 'made');
  await train({ model: FIXTURE, data: wordDataset(8), output: made, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, lora: { rank: 2 } });
  const adapter = path.join(made, 'adapter');
  const editConfig = (edit: (c: Record<string, unknown>) => Record<string, unknown>, editWeights?: (tensors: ReturnType<typeof readSafetensors>['tensors']) => void) =>
    folderCopy(adapter, (d) => {
      editJson(path.join(d, 'adapter_config.json'), edit);
      if (editWeights) {
        const file = path.join(d, 'adapter_model.safetensors');
        const tensors = readSafetensors(file).tensors;
        editWeights(tensors);
        writeSafetensors(file, tensors);
      }
    });
  const load = (dir: string) => rejection(() => Encoder.load(FIXTURE, { device: 'cpu', adapter: dir }));
  const withBias = (tensors: Map<string, { dtype: string; shape: number[]; data: Buffer }>) => {
    for (const [name, raw] of [...tensors]) {
      if (name.endsWith('.lora_B.weight')) tensors.set(name.replace(/weight$/, 'bias'), { dtype: raw.dtype, shape: [raw.shape[0]], data: Buffer.alloc(raw.shape[0] * 4) });
    }
  };

  // PEFT 0.14's lora_bias: lora_B's bias was left out of every output.
  let error = await load(editConfig((c) => ({ ...c, lora_bias: true }), withBias));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /lora_bias is set \(lora_B has a bias\); coltrast runs plain LoRA adapters/);
  // The same tensors with the flag off: a file PEFT did not write as its config says.
  error = await load(editConfig((c) => c, withBias));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /holds base_model\.model\..*\.lora_B\.bias, which coltrast does not compute/);
  // Python's truth: "yes" is rsLoRA (or DoRA) in PEFT, and was plain LoRA here.
  for (const key of ['use_rslora', 'use_dora', 'lora_bias']) {
    error = await load(editConfig((c) => ({ ...c, [key]: 'yes' })));
    t.is(error.code, 'MODEL_FILES');
    t.regex(error.message, new RegExp(`"${key}" must be true or false, not "yes"`));
  }
  // PEFT leaves the excluded modules, and the layers not listed, unadapted; every adapter in the file was applied.
  error = await load(editConfig((c) => ({ ...c, exclude_modules: ['value'] })));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /exclude_modules \["value"\] names encoder\.layer\.0\.attention\.self\.value, whose adapter is in adapter_model\.safetensors/);
  error = await load(editConfig((c) => ({ ...c, layers_to_transform: [0] })));
  t.regex(error.message, /layers_to_transform \[0\] leaves out encoder\.layer\.1\.attention\.self\.query/);
  for (const [key, value, pattern] of [
    ['layer_replication', [[0, 2], [1, 2]], /layer_replication stacks copies of layers/],
    ['trainable_token_indices', [5, 6], /trainable_token_indices trains token embeddings too/],
  ] as const) {
    error = await load(editConfig((c) => ({ ...c, [key]: value })));
    t.is(error.code, 'UNSUPPORTED_MODEL');
    t.regex(error.message, pattern);
  }
  t.regex((await load(editConfig((c) => ({ ...c, target_modules: 5 })))).message, /"target_modules" must be a list of module names or a regular expression/);

  // What PEFT writes when these are off still loads, and so do layers_to_transform and exclude_modules that fit the file.
  for (const extra of [{ lora_bias: false, exclude_modules: null, layers_to_transform: null, layer_replication: null, trainable_token_indices: null, target_parameters: null }, { layers_to_transform: [0, 1], exclude_modules: ['key'] }]) {
    const loaded = await Encoder.load(FIXTURE, { device: 'cpu', adapter: editConfig((c) => ({ ...c, ...extra })) });
    t.like(loaded.lora, { rank: 2, rslora: false });
    loaded.dispose();
  }
});

test('saving a model whose source folder is gone (moved, deleted, or an old layout replaced by a save over itself) writes the tokenizer it loaded; a multi-vector one, whose module configs are read from there, is refused', async (t) => {
  // sentence-transformers' older layout: the transformer's files in 0_Transformer.
  const old = fixtureCopy((d) => {
    fs.mkdirSync(path.join(d, '0_Transformer'));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'sentence_bert_config.json']) {
      fs.renameSync(path.join(d, f), path.join(d, '0_Transformer', f));
    }
    editJson(path.join(d, 'modules.json'), (m) => m.map((x: { path: string }) => (x.path === '' ? { ...x, path: '0_Transformer' } : x)));
  });
  const tokenizerFiles = (dir: string) => Object.fromEntries(['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'].map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]));
  const loaded = tokenizerFiles(path.join(old, '0_Transformer'));
  const encoder = await Encoder.load(old, { device: 'cpu' });
  const vectors = await encoder.embed(['a cat', 'hello world']);
  // The first save over its own folder writes today's layout, and 0_Transformer is gone.
  await encoder.save(old, { overwrite: true });
  t.false(fs.existsSync(path.join(old, '0_Transformer')));
  // Each save has the tokenizer files the model loaded, and loads to the same vectors.
  const check = async (dir: string) => {
    t.deepEqual(tokenizerFiles(dir), loaded, dir);
    const again = await Encoder.load(dir, { device: 'cpu' });
    t.deepEqual(await again.embed(['a cat', 'hello world']), vectors, dir);
    again.dispose();
  };
  // The second wrote a folder without tokenizer.json (which nothing loads), then was refused: it writes the one the model has.
  await encoder.save(old, { overwrite: true });
  await check(old);
  // And with the folder deleted.
  const elsewhere = path.join(tempDir(), 'elsewhere');
  fs.rmSync(old, { recursive: true });
  await encoder.save(elsewhere);
  await check(elsewhere);
  encoder.dispose();
  // A multi-vector model loaded from a folder copies its module configs from there at a save: gone, it is refused.
  const made = await Encoder.load(FIXTURE, { device: 'cpu' });
  await made.makeMultiVector({ dimension: 12, queryLength: 10, queryExpansion: 'none', attendExpansion: false, skiplist: [] }, 3);
  const multiDir = path.join(tempDir(), 'multi');
  await made.save(multiDir);
  made.dispose();
  const multi = await Encoder.load(multiDir, { device: 'cpu' });
  fs.rmSync(multiDir, { recursive: true });
  const error = await rejection(() => multi.save(path.join(tempDir(), 'multi-copy')));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /^cannot save: .*multi, the folder the model being saved was loaded from, is gone .*load the model again from where its files are now/);
  multi.dispose();
});

test("sentence_bert_config.json's do_lower_case and max_seq_length of the wrong type, or a file that is no object, are refused by name", async (t) => {
  const withConfig = (edit: (c: any) => any) => fixtureCopy((d) => editJson(path.join(d, 'sentence_bert_config.json'), edit));
  const loadError = (dir: string) => rejection(() => Encoder.load(dir, { device: 'cpu' }));
  // "true" was read as false here, and as true (Python's truth of a string) by sentence-transformers: other embeddings.
  let error = await loadError(withConfig((c) => ({ ...c, do_lower_case: 'true' })));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /sentence_bert_config\.json: do_lower_case must be true or false; got "true"/);
  // "128" fell back to the tokenizer's limit without a word.
  error = await loadError(withConfig((c) => ({ ...c, max_seq_length: '128' })));
  t.regex(error.message, /sentence_bert_config\.json: max_seq_length must be a whole number of tokens, at least 2 \(or null for the tokenizer's limit\); got "128"/);
  error = await loadError(withConfig(() => [24]));
  t.regex(error.message, /sentence_bert_config\.json must be a JSON object/);
  // null is sentence-transformers' own value for "no limit of its own": the tokenizer's and the positions' limit.
  const unlimited = await Encoder.load(withConfig((c) => ({ ...c, max_seq_length: null, do_lower_case: null })), { device: 'cpu' });
  t.is(unlimited.maxSeqLength, 40);
  unlimited.dispose();
});

test('a model.safetensors.index.json whose weight_map names a folder ("..", ".") is refused before the native side tries to map it', async (t) => {
  for (const shard of ['..', '.', '']) {
    const dir = fixtureCopy((d) => {
      fs.renameSync(path.join(d, 'model.safetensors'), path.join(d, 'model-00001-of-00001.safetensors'));
      fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'embeddings.word_embeddings.weight': shard } }));
    });
    const error = await rejection(() => Encoder.load(dir, { device: 'cpu' }));
    t.is(error.code, 'MODEL_FILES', shard);
    // It was "cannot memory-map <the parent folder>: No such device".
    t.regex(error.message, /model\.safetensors\.index\.json has no "weight_map" of tensor names to shard files in the folder/, shard);
  }
});

test("quantizeEmbeddings refuses ranges whose rows are swapped (a minimum above its maximum), which mirrored every code", (t) => {
  const embeddings = { dims: [2, 2] as [number, number], data: new Float32Array([0.1, -0.2, 0.5, 0.4]) };
  const swapped = { dims: [2, 2] as [number, number], data: new Float32Array([1, 1, -1, -1]) };
  const error = t.throws(() => quantizeEmbeddings(embeddings, 'int8', { ranges: swapped }), { instanceOf: ColtrastError });
  t.is(error?.code, 'INVALID_ARGUMENT');
  t.regex(error!.message, /options\.ranges: column 0's minimum \(row 0, 1\) is above its maximum \(row 1, -1\): row 0 holds each dimension's minimum, row 1 its maximum/);
  // The same ranges the right way round, and a column of one value (minimum = maximum), quantize.
  const ranges = { dims: [2, 2] as [number, number], data: new Float32Array([-1, 0.4, 1, 0.4]) };
  t.deepEqual(quantizeEmbeddings(embeddings, 'uint8', { ranges }).dims, [2, 2]);
});
