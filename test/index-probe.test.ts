// Index behaviour found wrong by probing it as a user would:
//   - dense search broke ties between equal scores in whatever order torch's topk met them, and kept any of the
//     documents tied at the k-th place; now ties go by position, as a multi-vector index's and a float64 sort's do;
//   - the index kept the metadata objects it was given and handed the same objects back, so documents sharing one
//     object changed together when a caller changed it or a hit's copy, behind the filter's kept matches;
//   - ids that are not strings were looked up as if they were.
//   - Index.load of a damaged folder: an index.json or docs.jsonl line that is not an object threw a TypeError; a
//     document count that is not a count threw a RangeError, and a huge one reserved gigabytes before it was refused.
import test from 'ava';
import { Encoder, Index, type IndexDoc } from '../lib';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from '../lib';
import { FIXTURE, editJson, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';

let enc: Encoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
});
test.after.always(() => enc?.dispose());

test('dense search ranks equal scores by position, in every storage: the k first of a sort of all documents by score, then position', async (t) => {
  // A third of the documents share one text: their vectors, and so their scores, are equal (or nearly, float32's
  // products differing in the last bit by where a row sits in its batch).
  const docs = Array.from({ length: 300 }, (_, i) => ({ id: `x${String(i).padStart(3, '0')}`, text: i % 3 === 0 ? 'the same text' : `other text ${i}` }));
  let ties = 0;
  for (const storage of ['float32', 'float16', 'int8'] as const) {
    const index = await Index.build(enc, docs, { storage });
    for (const filter of [undefined, { id: { $ne: 'x000' } }]) {
      const [all] = await index.search(['the same text'], { k: docs.length, ...(filter && { filter }) });
      // The position of each document is its number (ids are in the order added).
      const sorted = [...all].sort((a, b) => b.score - a.score || a.id.localeCompare(b.id));
      t.deepEqual(all.map((h) => h.id), sorted.map((h) => h.id), `${storage}, filter ${JSON.stringify(filter)}: every hit`);
      for (const k of [1, 5, 8, 40]) {
        const [hits] = await index.search(['the same text'], { k, ...(filter && { filter }) });
        t.deepEqual(hits.map((h) => h.id), sorted.slice(0, k).map((h) => h.id), `${storage}, k ${k}, filter ${JSON.stringify(filter)}`);
      }
      ties += all.filter((h, i) => i > 0 && h.score === all[i - 1].score).length;
    }
  }
  t.true(ties > 100, `ties seen: ${ties}`);
});

test('the index keeps metadata of its own: changing the given objects, a hit\'s or get()\'s changes no stored document', async (t) => {
  const shared = { lang: 'en', tags: ['a'] };
  const index = await Index.build(enc, [
    { id: 'a', text: 'cats', metadata: shared },
    { id: 'b', text: 'dogs', metadata: shared },
  ]);
  const english = { 'metadata.lang': 'en' };
  t.deepEqual((await index.search(['cats'], { filter: english }))[0].map((h) => h.id).sort(), ['a', 'b']);
  // The caller reuses its object for the next documents.
  shared.lang = 'fr';
  shared.tags.push('b');
  await index.add([{ id: 'c', text: 'birds', metadata: shared }]);
  t.deepEqual((await index.search(['cats'], { filter: english }))[0].map((h) => h.id).sort(), ['a', 'b']);
  const [hits] = await index.search(['cats'], { k: 3 });
  for (const hit of hits) (hit.metadata as { lang: string }).lang = 'de';
  (index.get(['a'])[0]!.metadata!.tags as string[]).push('z');
  t.deepEqual(index.get(['a', 'b', 'c']), [
    { id: 'a', text: 'cats', metadata: { lang: 'en', tags: ['a'] } },
    { id: 'b', text: 'dogs', metadata: { lang: 'en', tags: ['a'] } },
    { id: 'c', text: 'birds', metadata: { lang: 'fr', tags: ['a', 'b'] } },
  ]);
  t.deepEqual((await index.search(['cats'], { filter: { 'metadata.lang': 'de' } }))[0], []);
  // Metadata it could neither copy nor save is refused by name.
  const e = await rejection(() => index.add([{ id: 'd', text: 'x' }, { id: 'e', text: 'y', metadata: { score: () => 1 } } as unknown as IndexDoc]));
  t.is(e.code, 'INVALID_ARGUMENT');
  t.regex(e.message, /^docs\[1\]\.metadata must be data the index can copy and save/);
});

test('remove and get refuse ids that are not strings rather than looking them up', async (t) => {
  const index = await Index.build(enc, [{ id: '5', text: 'five' }]);
  for (const work of [() => index.remove([5 as unknown as string]), async () => index.get([5 as unknown as string])]) {
    const e = await rejection(work);
    t.regex(e.message, /^ids must be an array of document ids \(strings\), got an array of length 1$/);
  }
  t.true(index.has('5'));
});

async function loadError(dir: string): Promise<ColtrastError> {
  const e = await Index.load(dir, enc).then(
    () => undefined,
    (x) => x,
  );
  if (!(e instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${e}`);
  return e;
}

/** A saved index of four documents, in a folder of its own. */
async function savedIndex(): Promise<string> {
  const index = await Index.build(enc, Array.from({ length: 4 }, (_, i) => ({ id: `d${i}`, text: `document ${i} about cats`, metadata: { n: i } })));
  const dir = path.join(tempDir(), 'saved.index');
  await index.save(dir);
  return dir;
}

test('Index.load refuses an index.json that is not an object with a MODEL_FILES error, not a TypeError', async (t) => {
  const dir = await savedIndex();
  for (const text of ['null', '[]', '7']) {
    fs.writeFileSync(path.join(dir, 'index.json'), text);
    const e = await loadError(dir);
    t.is(e.code, 'MODEL_FILES');
    t.regex(e.message, /index\.json is not a coltrast index/);
  }
});

test('Index.load refuses a document count in index.json that is not a count, and reserves nothing for a huge one', async (t) => {
  const dir = await savedIndex();
  const manifest = fs.readFileSync(path.join(dir, 'index.json'), 'utf8');
  for (const documents of [-1, 4.5, '4', 1e12]) {
    fs.writeFileSync(path.join(dir, 'index.json'), manifest);
    editJson(path.join(dir, 'index.json'), (m) => ({ ...m, documents }));
    const e = await loadError(dir);
    t.is(e.code, 'MODEL_FILES');
    t.regex(e.message, documents === 1e12 ? /docs\.jsonl has 4 documents, index\.json says 1000000000000/ : /index\.json says documents .*, not a count of documents/);
  }
  // 3e8 made room for 300 million ids first (some 28 s and 4 GB here) before the count check refused it.
  fs.writeFileSync(path.join(dir, 'index.json'), manifest);
  editJson(path.join(dir, 'index.json'), (m) => ({ ...m, documents: 3e8 }));
  const start = Date.now();
  t.regex((await loadError(dir)).message, /docs\.jsonl has 4 documents, index\.json says 300000000/);
  t.true(Date.now() - start < 3000, `took ${Date.now() - start} ms`);
});

test('Index.load refuses a docs.jsonl line that is not a document, an empty id or metadata that is not an object', async (t) => {
  const dir = await savedIndex();
  const file = path.join(dir, 'docs.jsonl');
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const cases: [string, RegExp][] = [
    ['null', /docs\.jsonl:2 needs a non-empty string "id" and a string "text"/],
    ['["d1", "text"]', /docs\.jsonl:2 needs a non-empty string "id" and a string "text"/],
    [JSON.stringify({ ...JSON.parse(lines[1]), id: '' }), /docs\.jsonl:2 needs a non-empty string "id"/],
    [JSON.stringify({ ...JSON.parse(lines[1]), metadata: 5 }), /docs\.jsonl:2 has "metadata" that is not an object/],
  ];
  for (const [line, message] of cases) {
    fs.writeFileSync(file, [lines[0], line, ...lines.slice(2)].join('\n'));
    const e = await loadError(dir);
    t.is(e.code, 'MODEL_FILES');
    t.regex(e.message, message);
  }
});
