// Older sentence-transformers folder layouts: the Transformer module in a subfolder that modules.json names
// (0_Transformer; 0_BERT with the type sentence_transformers.models.BERT before that), as many models on the hub are
// still laid out. Each is made from the tiny BERT fixture by moving its Transformer's files into the subfolder.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, CrossEncoder, Encoder, Index, resolveModelDir, type IndexDoc } from '../lib';
import { repoCacheDir } from '../lib/hub';
import { FIXTURE, editJson, folderCopy, tempDir } from './helpers/fixture';
import { makeSmallMultiVector } from './helpers/vectors';

/** The files sentence-transformers' Transformer module saves into its folder. */
const TRANSFORMER_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'sentence_bert_config.json'];

/** A copy of the model folder `source` as an older sentence-transformers saved it: its Transformer's files in `folder`, of `type`. */
function oldLayout(source = FIXTURE, folder = '0_Transformer', type = 'sentence_transformers.models.Transformer', edit?: (dir: string) => void): string {
  return folderCopy(source, (d) => {
    fs.mkdirSync(path.join(d, folder));
    for (const file of TRANSFORMER_FILES) {
      if (fs.existsSync(path.join(d, file))) fs.renameSync(path.join(d, file), path.join(d, folder, file));
    }
    editJson(path.join(d, 'modules.json'), (modules) => modules.map((m: { path: string }, i: number) => (i === 0 ? { ...m, path: folder, type } : m)));
    edit?.(d);
  }, 'old-layout');
}

const TEXTS = ['hello world', 'the quick brown fox jumps over the lazy dog', 'A Tiny Model'];
const DOCS: IndexDoc[] = TEXTS.map((text, i) => ({ id: `d${i}`, text }));

async function loadError(dir: string): Promise<ColtrastError> {
  const error = await Encoder.load(dir, { device: 'cpu' }).then(
    (e) => (e.dispose(), undefined),
    (e: unknown) => e,
  );
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${String(error)}`);
  return error;
}

test('a model with its Transformer in 0_Transformer, or in 0_BERT as sentence_transformers.models.BERT, embeds exactly as the same model laid out today', async (t) => {
  const today = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const expected = await today.embed(TEXTS);
    for (const [folder, type] of [['0_Transformer', 'sentence_transformers.models.Transformer'], ['0_BERT', 'sentence_transformers.models.BERT']]) {
      const dir = oldLayout(FIXTURE, folder, type);
      t.false(fs.existsSync(path.join(dir, 'config.json')));
      const old = await Encoder.load(dir, { device: 'cpu' });
      try {
        t.is(old.modelDir, dir);
        // The Transformer's sentence_bert_config.json is read from its folder: the fixture's 24 tokens, not the positions'.
        t.is(old.maxSeqLength, today.maxSeqLength);
        t.is(old.pooling, today.pooling);
        t.is(old.normalize, today.normalize);
        t.deepEqual(await old.tokenize(TEXTS), await today.tokenize(TEXTS));
        const got = await old.embed(TEXTS);
        t.deepEqual(got.dims, expected.dims);
        t.deepEqual(Array.from(got.data), Array.from(expected.data), folder);
      } finally {
        old.dispose();
      }
    }
  } finally {
    today.dispose();
  }
});

test('saving a model loaded from an older layout writes today\'s layout, which loads and embeds the same', async (t) => {
  const old = await Encoder.load(oldLayout(), { device: 'cpu' });
  const saved = path.join(tempDir(), 'saved');
  try {
    await old.save(saved);
    const modules = JSON.parse(fs.readFileSync(path.join(saved, 'modules.json'), 'utf8'));
    t.like(modules[0], { path: '', type: 'sentence_transformers.models.Transformer' });
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt', 'sentence_bert_config.json']) {
      t.true(fs.existsSync(path.join(saved, file)), file);
    }
    t.false(fs.existsSync(path.join(saved, '0_Transformer')));
    const again = await Encoder.load(saved, { device: 'cpu' });
    t.deepEqual(Array.from((await again.embed(TEXTS)).data), Array.from((await old.embed(TEXTS)).data));
    again.dispose();
  } finally {
    old.dispose();
  }
});

test('a multi-vector model in the older layout loads, and saves in today\'s layout (its modules.json\'s Transformer at "")', async (t) => {
  const made = await Encoder.load(FIXTURE, { device: 'cpu' });
  const folder = path.join(tempDir(), 'multi');
  await makeSmallMultiVector(made);
  await made.save(folder);
  made.dispose();
  const today = await Encoder.load(folder, { device: 'cpu' });
  const old = await Encoder.load(oldLayout(folder), { device: 'cpu' });
  const saved = path.join(tempDir(), 'saved-multi');
  try {
    t.truthy(old.multiVector);
    t.deepEqual(old.multiVector, today.multiVector);
    const tokens = async (e: Encoder) => (await e.embed(TEXTS, { output: 'tokens', task: 'query' })).map((m) => Array.from(m.data));
    t.deepEqual(await tokens(old), await tokens(today));
    await old.save(saved);
    const modules = JSON.parse(fs.readFileSync(path.join(saved, 'modules.json'), 'utf8'));
    t.is(modules[0].path, '');
    t.true(fs.existsSync(path.join(saved, 'config.json')));
    t.true(fs.existsSync(path.join(saved, 'sentence_bert_config.json')));
    t.false(fs.existsSync(path.join(saved, '0_Transformer')));
    const again = await Encoder.load(saved, { device: 'cpu' });
    t.deepEqual(await tokens(again), await tokens(today));
    again.dispose();
  } finally {
    today.dispose();
    old.dispose();
  }
});

test('a cross-encoder saved with its Transformer in a subfolder scores as the same folder laid out today, and saves in today\'s layout', async (t) => {
  const folder = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
  const today = await CrossEncoder.load(folder, { device: 'cpu' });
  const old = await CrossEncoder.load(oldLayout(folder), { device: 'cpu' });
  const saved = path.join(tempDir(), 'saved-cross-encoder');
  try {
    const pairs: [string, string][] = [['a query', 'a matching document'], ['hello', 'the quick brown fox']];
    const expected = Array.from((await today.predict(pairs)).data);
    t.deepEqual(Array.from((await old.predict(pairs)).data), expected);
    await old.save(saved);
    t.is(JSON.parse(fs.readFileSync(path.join(saved, 'modules.json'), 'utf8'))[0].path, '');
    t.true(['config.json', 'model.safetensors', 'tokenizer.json'].every((f) => fs.existsSync(path.join(saved, f))));
    const again = await CrossEncoder.load(saved, { device: 'cpu' });
    t.deepEqual(Array.from((await again.predict(pairs)).data), expected);
    again.dispose();
  } finally {
    today.dispose();
    old.dispose();
  }
});

test('a Transformer subfolder holding only pytorch_model.bin is refused as the top level is: safetensors only', async (t) => {
  const pickled = (d: string) => fs.renameSync(path.join(d, 'model.safetensors'), path.join(d, 'pytorch_model.bin'));
  const top = folderCopy(FIXTURE, pickled);
  const sub = oldLayout(FIXTURE, '0_Transformer', undefined, (d) => pickled(path.join(d, '0_Transformer')));
  const [topError, subError] = [await loadError(top), await loadError(sub)];
  t.is(subError.code, 'MODEL_FILES');
  t.regex(subError.message, /0_Transformer has pytorch_model\.bin but no model\.safetensors: coltrast loads safetensors only \(never pickle\)/);
  t.is(subError.message.replace(path.join(sub, '0_Transformer'), '<dir>'), topError.message.replace(top, '<dir>'));
});

test('a modules.json path outside the model folder, or to a folder that is not there, is refused naming modules.json and the fix', async (t) => {
  for (const outside of ['../x', '0_Transformer/../../x', '/etc', path.join(tempDir(), 'elsewhere')]) {
    const e = await loadError(oldLayout(FIXTURE, '0_Transformer', undefined, (d) => editJson(path.join(d, 'modules.json'), (m) => (m[0].path = outside, m))));
    t.is(e.code, 'MODEL_FILES', outside);
    t.regex(e.message, /modules\.json: entry 0 \(sentence_transformers\.models\.Transformer\) has path .*, which is outside the model folder/, outside);
    t.regex(e.message, /a folder inside it, relative to it \("" for the model folder itself, "1_Pooling" for a subfolder\): correct it in modules\.json$/, outside);
  }
  // A Pooling module's path is checked the same.
  const pooling = await loadError(folderCopy(FIXTURE, (d) => editJson(path.join(d, 'modules.json'), (m) => (m[1].path = '../1_Pooling', m))));
  t.regex(pooling.message, /entry 1 \(sentence_transformers\.models\.Pooling\) has path "\.\.\/1_Pooling", which is outside the model folder/);
  const missing = await loadError(oldLayout(FIXTURE, '0_Transformer', undefined, (d) => editJson(path.join(d, 'modules.json'), (m) => (m[0].path = '0_Missing', m))));
  t.is(missing.code, 'MODEL_FILES');
  t.regex(missing.message, /modules\.json puts the Transformer module \(the model's config\.json, weights and tokenizer\) in "0_Missing", and .*0_Missing is not a folder: move those files into it, or set that module's "path" to "" if they are in .* itself$/);
});

test('a hub snapshot in the older layout is found in the cache, offline', async (t) => {
  const commit = 'c0ffee0000000000000000000000000000000002';
  const cacheDir = tempDir();
  const repo = repoCacheDir(cacheDir, 'org/old-layout');
  fs.mkdirSync(path.join(repo, 'snapshots'), { recursive: true });
  fs.cpSync(oldLayout(), path.join(repo, 'snapshots', commit), { recursive: true });
  fs.mkdirSync(path.join(repo, 'refs'));
  fs.writeFileSync(path.join(repo, 'refs', 'main'), commit);
  t.is(await resolveModelDir('org/old-layout', { cacheDir, offline: true }), path.join(repo, 'snapshots', commit));
  const viaCache = await Encoder.load('org/old-layout', { cacheDir, offline: true, device: 'cpu' });
  const today = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.deepEqual(Array.from((await viaCache.embed(TEXTS)).data), Array.from((await today.embed(TEXTS)).data));
  viaCache.dispose();
  today.dispose();
  // A cached modules.json with a path outside the folder is the model's fault, said by name: offline, "not cached" sent
  // the user looking for a download that would bring the same file.
  editJson(path.join(repo, 'snapshots', commit, 'modules.json'), (m) => ((m[1].path = '../1_Pooling'), m));
  const error = await t.throwsAsync(resolveModelDir('org/old-layout', { cacheDir, offline: true }));
  t.is((error as { code?: string }).code, 'MODEL_FILES', error?.message);
  t.regex(error!.message, /modules\.json: entry 1 .* has path "\.\.\/1_Pooling", which is outside the model folder/);
});

test("an index built with an older-layout model covers the subfolder's files: other weights there are another model", async (t) => {
  const dir = oldLayout();
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  const index = path.join(tempDir(), 'old.index');
  await (await Index.build(encoder, DOCS)).save(index);
  const same = await Encoder.load(folderCopy(dir), { device: 'cpu' });
  const other = await Encoder.load(folderCopy(dir, (d) => {
    const file = path.join(d, '0_Transformer', 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
  }), { device: 'cpu' });
  const tokenizer = await Encoder.load(folderCopy(dir, (d) => editJson(path.join(d, '0_Transformer', 'tokenizer.json'), (tok) => ({ ...tok, normalizer: null }))), { device: 'cpu' });
  try {
    t.is((await Index.load(index, encoder)).size, DOCS.length);
    t.is((await Index.load(index, same)).size, DOCS.length);
    for (const changed of [other, tokenizer]) {
      const error = await Index.load(index, changed).then(() => undefined, (e: unknown) => e);
      t.true(error instanceof ColtrastError);
      t.regex((error as Error).message, /was built with another model/);
    }
  } finally {
    [encoder, same, other, tokenizer].forEach((e) => e.dispose());
  }
});
