// An index folder whose files no longer agree with one another, found by editing a saved one as a damaged copy or a
// careless hand would:
//   - exportIndex read index.json itself: one that is null was a TypeError (Index.load refused it); both now read it
//     with one reader (lib/index-manifest.ts), and refuse a model, storage or flag of the wrong kind alike;
//   - an index.json whose storage disagreed with the dtype of the stored tensor loaded: int8 codes were read as
//     float32 or float16 vectors and searched, float16 rows as float32 (and the other way), and exportIndex wrote
//     a float16 file as the float32 index.json said; token stores alike (the native loader converts floats);
//   - token counts moved between docs.jsonl lines (their sum unchanged) loaded: a document was given another's token
//     vectors. index.json now holds a digest of the counts, checked on load when present;
//   - exportIndex read a docs.jsonl line of null with a TypeError, and wrote metadata that is not an object (5, a list)
//     as jsonb, and an empty id, where Index.load refuses them;
//   - whole docs.jsonl lines moved (ids, texts and token counts together) loaded, and each document was found by
//     another's vector with full confidence. index.json now holds a digest of the ids in order, checked on load and
//     export when present;
//   - exportIndex wrote a docs.jsonl with an id on two lines, which PostgreSQL's COPY then refused on the primary key,
//     far from the cause; it now reads docs.jsonl with Index.load's reader, which names both lines;
//   - exportIndex checked vectors.safetensors' dtype with a check and a message of its own; it now uses Index.load's.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, exportIndex } from '../lib';
import { FIXTURE, editJson, folderCopy, tempDir } from './helpers/fixture';
import { idsDigest } from '../lib/index-manifest';
import { readSafetensors, writeSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

let enc: Encoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
});
test.after.always(() => enc?.dispose());

const DOCS = ['cats sleep all day', 'dogs', 'a bird sings in the tall green tree at dawn', 'fish swim', 'the quick brown fox jumps'].map((text, i) => ({ id: `d${i}`, text }));
const STORAGE_KINDS = ['float32', 'float16', 'int8', 'binary'] as const;

async function saved(options: Parameters<typeof Index.build>[2]): Promise<string> {
  const dir = path.join(tempDir(), 'saved.index');
  await (await Index.build(enc, DOCS, options)).save(dir);
  return dir;
}

const loading = (dir: string) => rejection(() => Index.load(dir, enc));
const exporting = (dir: string) => rejection(() => exportIndex(dir, path.join(tempDir(), 'out.sql')));

test('exportIndex refuses an index.json that is not an object as Index.load does: a MODEL_FILES error, not a TypeError', async (t) => {
  const dir = await saved({});
  for (const text of ['null', '[]', '7', '"index"']) {
    fs.writeFileSync(path.join(dir, 'index.json'), text);
    for (const e of [await exporting(dir), await loading(dir)]) {
      t.is(e.code, 'MODEL_FILES', text);
      t.regex(e.message, /index\.json is not a coltrast index of format version 1/, text);
    }
  }
});

test('Index.load and exportIndex refuse index.json fields of the wrong kind by name, before anything is read by them', async (t) => {
  const dir = await saved({});
  const manifest = fs.readFileSync(path.join(dir, 'index.json'), 'utf8');
  const cases: [(m: any) => any, RegExp][] = [
    // Was "built with another model" (INVALID_ARGUMENT): the model's fingerprint was compared through a null.
    [(m) => ({ ...m, model: null }), /index\.json says model null, not an object/],
    [(m) => ({ ...m, model: { ...m.model, dimension: '32' } }), /index\.json says model\.dimension "32", not a positive whole number/],
    // The string was truthy: a store of token vectors was made and docs.jsonl refused for lacking token counts.
    [(m) => ({ ...m, lateInteraction: 'false' }), /index\.json says lateInteraction "false", not true or false/],
    [(m) => ({ ...m, multiVector: 0 }), /index\.json says multiVector 0, not true or false/],
    [(m) => ({ ...m, storage: undefined }), /index\.json says storage undefined, not one of float32, float16, int8, binary/],
    [(m) => ({ ...m, tokenCounts: 12 }), /index\.json says tokenCounts 12, not a sha256/],
    [(m) => ({ ...m, ids: 'd0,d1' }), /index\.json says ids "d0,d1", not a sha256/],
  ];
  for (const [edit, message] of cases) {
    fs.writeFileSync(path.join(dir, 'index.json'), manifest);
    editJson(path.join(dir, 'index.json'), edit);
    for (const e of [await loading(dir), await exporting(dir)]) {
      t.is(e.code, 'MODEL_FILES', String(message));
      t.regex(e.message, message);
      t.regex(e.message, /save the index again or rebuild it/);
    }
  }
});

test('Index.load refuses an index.json whose storage is not the dtype of vectors.safetensors, in every pair of storages', async (t) => {
  const dirs = new Map<(typeof STORAGE_KINDS)[number], string>();
  for (const storage of STORAGE_KINDS) dirs.set(storage, await saved({ storage }));
  const dtypes = { float32: 'F32', float16: 'F16', int8: 'I8', binary: 'U8' };
  for (const built of STORAGE_KINDS) {
    for (const says of STORAGE_KINDS) {
      if (built === says) continue;
      // int8 codes were searched as float32 or float16 vectors; float32 rows were read as float16 and the other way.
      const dir = folderCopy(dirs.get(built)!, (d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, storage: says })));
      const e = await loading(dir);
      t.is(e.code, 'MODEL_FILES', `${built} said to be ${says}`);
      t.regex(e.message, new RegExp(`vectors\\.safetensors holds "vectors" ${dtypes[built]} \\[5, \\d+\\], and index\\.json says ${dtypes[says]} \\[rows, \\d+\\] \\(storage ${says}\\)`), `${built} said to be ${says}`);
    }
  }
  // As saved, each loads (and mapped).
  for (const [storage, dir] of dirs) for (const mmap of [false, true]) t.is((await Index.load(dir, enc, { mmap })).storage, storage);
});

test('exportIndex refuses a float32 file whose index.json says float16, and the other way, rather than export it as the other, in the words of Index.load', async (t) => {
  for (const [built, says] of [
    ['float32', 'float16'],
    ['float16', 'float32'],
  ] as const) {
    const dir = await saved({ storage: built });
    editJson(path.join(dir, 'index.json'), (m) => ({ ...m, storage: says }));
    const e = await exporting(dir);
    t.is(e.code, 'MODEL_FILES');
    // Was its own message ("vectors.safetensors holds F32 vectors, and index.json says storage float16 (F16)"): one
    // check (checkIndexTensors) now says it for both.
    const [dtype, want] = built === 'float32' ? ['F32', 'F16'] : ['F16', 'F32'];
    t.regex(e.message, new RegExp(`vectors\\.safetensors holds "vectors" ${dtype} \\[5, ${enc.dimension}\\], and index\\.json says ${want} \\[rows, ${enc.dimension}\\] \\(storage ${says}\\)`));
    t.is(e.message, (await loading(dir)).message);
  }
});

test('Index.load refuses a tokens.safetensors whose dtype is not its token storage: float16 rows replaced by int8 or float32 ones, residual codes called float16', async (t) => {
  const dir = await saved({ lateInteraction: true });
  const file = path.join(dir, 'tokens.safetensors');
  const { tensors } = readSafetensors(file);
  const rows = tensors.get('vectors')!;
  for (const dtype of ['I8', 'F32']) {
    const copy = folderCopy(dir, (d) => {
      const data = dtype === 'I8' ? rows.data.subarray(0, rows.data.length / 2) : Buffer.concat([rows.data, rows.data]);
      writeSafetensors(path.join(d, 'tokens.safetensors'), new Map([['vectors', { ...rows, dtype, data }]]));
    });
    const e = await loading(copy);
    t.is(e.code, 'MODEL_FILES', dtype);
    t.regex(e.message, new RegExp(`tokens\\.safetensors holds "vectors" ${dtype} \\[${rows.shape.join(', ')}\\], and index\\.json says F16 \\[rows, ${rows.shape[1]}\\] \\(tokenStorage float16\\)`));
  }
  const residual = await saved({ lateInteraction: true, tokenStorage: 'residual', centroids: 4 });
  editJson(path.join(residual, 'index.json'), (m) => ({ ...m, tokenStorage: 'float16' }));
  t.regex((await loading(residual)).message, /tokens\.safetensors holds no well-formed "vectors" tensor, and index\.json says it holds F16 \[rows, \d+\] \(tokenStorage float16\)/);
});

test('token counts moved between docs.jsonl lines (their sum unchanged) are refused when index.json has their digest; an index saved without one still loads', async (t) => {
  for (const tokenStorage of ['float16', 'residual'] as const) {
    const dir = await saved({ lateInteraction: true, tokenStorage, ...(tokenStorage === 'residual' && { centroids: 4 }) });
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
    t.regex(manifest.tokenCounts, /^[0-9a-f]{64}$/);
    const docsFile = path.join(dir, 'docs.jsonl');
    const docs = fs.readFileSync(docsFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    t.true(docs[2].tokens > docs[1].tokens + 1, 'the documents differ in length');
    // Document 1 takes one of document 2's token vectors: the sum, and so the check against the rows, is unchanged.
    const shifted = folderCopy(dir, (d) => {
      const moved = docs.map((doc, i) => ({ ...doc, tokens: doc.tokens + (i === 1 ? 1 : i === 2 ? -1 : 0) }));
      fs.writeFileSync(path.join(d, 'docs.jsonl'), moved.map((doc) => JSON.stringify(doc)).join('\n') + '\n');
    });
    const e = await loading(shifted);
    t.is(e.code, 'MODEL_FILES', tokenStorage);
    t.regex(e.message, /the token counts in docs\.jsonl are not those the index was saved with/, tokenStorage);
    // An index saved before the digest existed has none: loaded as before, its counts checked by their sum only.
    const older = folderCopy(dir, (d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, tokenCounts: undefined })));
    const [loaded, original] = [await Index.load(older, enc), await Index.load(dir, enc)];
    t.deepEqual(await loaded.search(['a bird in a tree'], { rerank: 'maxsim' }), await original.search(['a bird in a tree'], { rerank: 'maxsim' }));
    // Saved again, it has the digest.
    const resaved = path.join(tempDir(), 'resaved.index');
    await loaded.save(resaved);
    t.is(JSON.parse(fs.readFileSync(path.join(resaved, 'index.json'), 'utf8')).tokenCounts, manifest.tokenCounts);
  }
});

test('the digest follows the documents: after remove and add the saved index loads, and an index without token vectors has none', async (t) => {
  const index = await Index.build(enc, DOCS, { lateInteraction: true });
  await index.remove(['d1']);
  await index.add([{ id: 'n', text: 'a new and rather long document about many things' }]);
  const dir = path.join(tempDir(), 'changed.index');
  await index.save(dir);
  t.regex(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).tokenCounts, /^[0-9a-f]{64}$/);
  t.deepEqual(await (await Index.load(dir, enc)).search(['cats'], { rerank: 'maxsim' }), await index.search(['cats'], { rerank: 'maxsim' }));
  t.false('tokenCounts' in JSON.parse(fs.readFileSync(path.join(await saved({}), 'index.json'), 'utf8')));
});

test('exportIndex refuses a docs.jsonl line of null, an empty id or metadata that is not an object as Index.load does, not with a TypeError or as jsonb', async (t) => {
  const dir = await saved({});
  const file = path.join(dir, 'docs.jsonl');
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const cases: [string, RegExp][] = [
    ['null', /docs\.jsonl:2 needs a non-empty string "id" and a string "text"/],
    [JSON.stringify({ ...JSON.parse(lines[1]), id: '' }), /docs\.jsonl:2 needs a non-empty string "id"/],
    [JSON.stringify({ ...JSON.parse(lines[1]), metadata: 5 }), /docs\.jsonl:2 has "metadata" that is not an object/],
    [JSON.stringify({ ...JSON.parse(lines[1]), metadata: ['a'] }), /docs\.jsonl:2 has "metadata" that is not an object/],
  ];
  for (const [line, message] of cases) {
    fs.writeFileSync(file, [lines[0], line, ...lines.slice(2)].join('\n'));
    for (const e of [await exporting(dir), await loading(dir)]) {
      t.is(e.code, 'MODEL_FILES', line);
      t.regex(e.message, message, line);
    }
  }
});

/** docs.jsonl's lines (no trailing empty line). */
const docLines = (dir: string) => fs.readFileSync(path.join(dir, 'docs.jsonl'), 'utf8').trim().split('\n');

test('whole docs.jsonl lines moved (ids, texts and token counts together) are refused by Index.load and exportIndex when index.json has the ids digest; an index saved without one loads as before', async (t) => {
  for (const options of [{}, { lateInteraction: true }, { lateInteraction: true, tokenStorage: 'residual' as const, centroids: 4 }]) {
    const what = JSON.stringify(options);
    const dir = await saved(options);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
    t.is(manifest.ids, idsDigest(DOCS.map((d) => d.id)), what);
    // Lines 1 and 3 trade places: every document keeps its text, metadata and token count, and takes the other's vectors.
    const moved = (d: string) => {
      const lines = docLines(d);
      [lines[0], lines[2]] = [lines[2], lines[0]];
      fs.writeFileSync(path.join(d, 'docs.jsonl'), lines.join('\n') + '\n');
    };
    const swapped = folderCopy(dir, moved);
    for (const e of [await loading(swapped), await exporting(swapped)]) {
      t.is(e.code, 'MODEL_FILES', what);
      t.is(
        e.message,
        `index ${swapped}: the ids in docs.jsonl, in their order, are not those the index was saved with (index.json's ids digest differs): lines moved give documents other documents' vectors, and an id changed names another document's; the folder is damaged: save the index again or rebuild it`,
        what,
      );
    }
  }
  // An index saved before the digest existed has none: it loads and exports as before, moved lines and all (the
  // document found first is then the wrong one, which is what the digest prevents).
  const dir = await saved({});
  const older = folderCopy(dir, (d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, ids: undefined })));
  t.deepEqual(await (await Index.load(older, enc)).search([DOCS[2].text, 'fish']), await (await Index.load(dir, enc)).search([DOCS[2].text, 'fish']));
  await exportIndex(older, path.join(tempDir(), 'older.sql'));
  const lines = docLines(older);
  [lines[0], lines[2]] = [lines[2], lines[0]];
  fs.writeFileSync(path.join(older, 'docs.jsonl'), lines.join('\n') + '\n');
  const [[hit]] = await (await Index.load(older, enc)).search([DOCS[2].text], { k: 1 });
  t.is(hit.id, 'd0');
  // Saved again, it has the digest of its (now moved) order.
  const resaved = path.join(tempDir(), 'resaved.index');
  await (await Index.load(older, enc)).save(resaved);
  t.is(JSON.parse(fs.readFileSync(path.join(resaved, 'index.json'), 'utf8')).ids, idsDigest(['d2', 'd1', 'd0', 'd3', 'd4']));
});

test('an id on two docs.jsonl lines is refused by exportIndex, as by Index.load, naming both lines, not left to PostgreSQL\'s primary key', async (t) => {
  const dir = await saved({});
  const withoutDigest = folderCopy(dir, (d) => editJson(path.join(d, 'index.json'), (m) => ({ ...m, ids: undefined })));
  for (const d of [dir, withoutDigest]) {
    const lines = docLines(d);
    lines[3] = JSON.stringify({ ...JSON.parse(lines[3]), id: 'd1' });
    // A blank line before it: the numbers are the file's lines, not the documents' positions.
    fs.writeFileSync(path.join(d, 'docs.jsonl'), [lines[0], '', ...lines.slice(1)].join('\n') + '\n');
    const out = path.join(tempDir(), 'out.sql');
    fs.writeFileSync(out, 'old');
    const exported = await rejection(() => exportIndex(d, out));
    t.is(fs.readFileSync(out, 'utf8'), 'old');
    for (const e of [exported, await loading(d)]) {
      t.is(e.code, 'MODEL_FILES');
      t.is(e.message, `index ${d}: docs.jsonl:5 repeats the id "d1" of docs.jsonl:3; the folder is damaged: save the index again or rebuild it`);
    }
  }
});

test('the ids digest follows the documents: after add, upsert and remove the saved index.json has the digest of docs.jsonl\'s ids, and loads and exports', async (t) => {
  for (const options of [{}, { lateInteraction: true }]) {
    const index = await Index.build(enc, DOCS, options);
    const dir = path.join(tempDir(), 'changed.index');
    const digestOfFile = () => idsDigest(docLines(dir).map((line) => JSON.parse(line).id));
    const steps: [string, () => Promise<void>][] = [
      ['add', () => index.add([{ id: 'n', text: 'a new and rather long document about many things' }])],
      // A replaced document moves to the end of the order.
      ['upsert', () => index.upsert([{ id: 'd0', text: 'cats sleep most of the day' }, { id: 'u', text: 'an upserted one' }])],
      ['remove', () => index.remove(['d2', 'n'])],
    ];
    for (const [step, change] of steps) {
      await change();
      await index.save(dir, { overwrite: true });
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
      t.is(manifest.ids, digestOfFile(), step);
      const loaded = await Index.load(dir, enc);
      t.deepEqual(await loaded.search(['cats', 'upserted']), await index.search(['cats', 'upserted']), step);
      await exportIndex(dir, path.join(tempDir(), 'changed.sql'));
    }
    t.deepEqual(docLines(dir).map((line) => JSON.parse(line).id), ['d1', 'd3', 'd4', 'd0', 'u']);
  }
});
