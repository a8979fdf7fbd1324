// The documents `coltrast index --data` reads (lib/index-docs.ts): .jsonl and .json arrays of {id, text, metadata?},
// each checked where it is read (file and line, or array element), and ColTrast project files.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Encoder, type IndexDoc } from '../lib';
import { INDEX_SLICE, indexDocumentSlices, type PlacedDoc } from '../lib/index-docs';
import { FIXTURE, tempDir } from './helpers/fixture';

// Reading documents needs no model except for a ColTrast project file (its READMEs are chunked by embedding).
const NO_MODEL = undefined as unknown as Encoder;

async function read(file: string, spread = false, encoder = NO_MODEL): Promise<{ total: number; slices: PlacedDoc[][] }> {
  const { total, slices } = await indexDocumentSlices(file, encoder, spread);
  const out: PlacedDoc[][] = [];
  for await (const slice of slices) out.push(slice);
  return { total, slices: out };
}

function write(dir: string, name: string, text: string | Buffer): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

test('a .json array of documents is read as its .jsonl is: metadata kept, null metadata dropped, each placed for errors', async (t) => {
  const dir = tempDir();
  const docs = [
    { id: 'a', text: 'first', metadata: { lang: 'en', year: 2020 } },
    { id: 'b', text: 'second', metadata: null },
    { id: 'c', text: '' },
  ];
  const expected: IndexDoc[] = [docs[0] as IndexDoc, { id: 'b', text: 'second' }, { id: 'c', text: '' }];
  const json = write(dir, 'docs.json', JSON.stringify(docs, null, 2));
  const jsonl = write(dir, 'docs.jsonl', docs.map((d) => JSON.stringify(d)).join('\n'));
  const gz = write(dir, 'docs.jsonl.gz', zlib.gzipSync(fs.readFileSync(jsonl)));
  const fromJson = await read(json);
  t.is(fromJson.total, 3);
  t.deepEqual(fromJson.slices, [expected.map((doc, i) => ({ doc, where: `${json}: [${i}]` }))]);
  for (const file of [jsonl, gz]) {
    const fromLines = await read(file);
    t.is(fromLines.total, 3);
    t.deepEqual(fromLines.slices, [expected.map((doc, i) => ({ doc, where: `${file}:${i + 1}` }))]);
  }
  t.false('metadata' in fromJson.slices[0][1].doc, 'null metadata is no metadata, not a key holding null');
  // An empty array is no documents (the command refuses it, as an empty .jsonl).
  t.deepEqual(await read(write(dir, 'empty.json', '[]')), { total: 0, slices: [] });
});

test('a bad document names its file and line (or element) and what it must be', async (t) => {
  const dir = tempDir();
  const lines = (name: string, ...rows: string[]) => write(dir, name, rows.join('\n'));
  const cases: [string, string][] = [
    [lines('meta.jsonl', '{"id":"a","text":"x"}', '{"id":"b","text":"y","metadata":"x"}'), ':2: "metadata" must be an object (or null, or absent), got the string "x"'],
    [lines('list.jsonl', '{"id":"a","text":"x","metadata":[1]}'), ':1: "metadata" must be an object (or null, or absent), got an array of length 1'],
    [lines('noid.jsonl', '', '{"text":"x"}'), ':2: "id" must be a non-empty string, got undefined'],
    [lines('numid.jsonl', '{"id":7,"text":"x"}'), ':1: "id" must be a non-empty string, got number 7'],
    [lines('notext.jsonl', '{"id":"a"}'), ':1: "text" must be a string, got undefined'],
    [lines('half.jsonl', '{"id":"\\ud83d","text":"x"}'), ':1: "id" must be well-formed Unicode (it holds a lone surrogate, which UTF-8 cannot keep), got the string "\\ud83d"'],
    [lines('row.jsonl', '["a","x"]'), ':1 must be a document {"id": "...", "text": "...", "metadata"?: {...}}, got an array of length 2'],
    [write(dir, 'meta.json', '[{"id":"a","text":"x"},{"id":"b","text":"y","metadata":"x"}]'), ': [1]: "metadata" must be an object (or null, or absent), got the string "x"'],
    [write(dir, 'five.json', '[{"id":"a","text":"x"}, 5]'), ': [1] must be a document {"id": "...", "text": "...", "metadata"?: {...}}, got number 5'],
  ];
  for (const [file, message] of cases) await t.throwsAsync(read(file), { code: 'INVALID_ARGUMENT', message: `${file}${message}` });
  // A .json that is neither documents nor projects, JSON null included; a syntax error names line and column.
  for (const value of ['null', '5', '{"docs": []}']) {
    const file = write(dir, 'other.json', value);
    await t.throwsAsync(read(file), { message: `${file}: expected a JSON array of documents {"id", "text", "metadata"?}, a ColTrast project file ({"projects": [...]}), or a .jsonl file of documents` });
  }
  const syntax = write(dir, 'syntax.json', '[\n  {"id": "a", "text": "x"},\n  {"id": "b" "text": "y"}\n]');
  await t.throwsAsync(read(syntax), { message: new RegExp(`^${syntax.replace(/[.]/g, '\\.')}:3:14: not valid JSON \\(`) });
  await t.throwsAsync(read(path.join(dir, 'missing.json')), { message: /^data file .*missing\.json does not exist$/ });
  await t.throwsAsync(read(write(dir, 'latin.jsonl', Buffer.from('{"id":"a","text":"caf\u00e9"}\n', 'latin1'))), { message: /latin\.jsonl:1 is not UTF-8 text/ });
});

test('spread: the first slice is every k-th document of a .json array, as of a .jsonl; every document comes once', async (t) => {
  const dir = tempDir();
  const n = 2 * INDEX_SLICE + 500;
  const docs = Array.from({ length: n }, (_, i) => ({ id: `d${i}`, text: `text ${i}` }));
  const json = write(dir, 'many.json', JSON.stringify(docs));
  const jsonl = write(dir, 'many.jsonl', docs.map((d) => JSON.stringify(d)).join('\n'));
  const ids = (r: { slices: PlacedDoc[][] }) => r.slices.map((s) => s.map((d) => d.doc.id));
  for (const spread of [false, true]) {
    const a = await read(json, spread);
    const b = await read(jsonl, spread);
    t.is(a.total, n);
    // The same documents in the same order from either format, the same first slice (a .jsonl's later slices may be
    // cut elsewhere: it fills them from batches of lines).
    t.deepEqual(ids(a).flat(), ids(b).flat(), `spread ${spread}: the same order from either format`);
    t.deepEqual(ids(a)[0], ids(b)[0]);
    t.true(a.slices.every((s) => s.length <= INDEX_SLICE));
    t.deepEqual(ids(a).flat().sort(), docs.map((d) => d.id).sort());
  }
  const stride = Math.ceil(n / INDEX_SLICE);
  t.deepEqual(ids(await read(json, true))[0], docs.filter((_, i) => i % stride === 0).map((d) => d.id));
});

test('a ColTrast project file is read as its READMEs in chunks, with the project in their metadata', async (t) => {
  const dir = tempDir();
  const file = write(dir, 'projects.json', JSON.stringify({
    projects: [{ project_id: 'bot', readme_content: 'A trading bot.\n\nIt learns with PPO.', qa_pairs: [{ question: 'How?', answer: 'PPO' }] }],
  }));
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const { total, slices } = await read(file, false, encoder);
    t.is(total, slices.flat().length);
    t.true(total >= 1);
    slices.flat().forEach(({ doc, where }, i) => {
      t.is(doc.id, `bot#${i}`);
      t.deepEqual(doc.metadata, { project: 'bot' });
      t.is(where, `${file}: project bot`);
    });
  } finally {
    encoder.dispose();
  }
});
