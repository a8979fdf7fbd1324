// Changing an index while it is searched: the readers-writer lock (lib/rw-lock.ts) in arrival order; searches
// running side by side with add(), upsert() and remove() whose every hit's score is the score of the document it
// names (a search finished against an old row order would name the wrong one); and serve's writable index:
// POST /documents (upsert or add), /documents/delete, /documents/get, the read-only default, bad requests, the
// saves after changes and at close(), and `coltrast serve --writable`.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Bm25Index, Encoder, Index, serve, type IndexDoc } from '../lib';
import { ReadWriteLock } from '../lib/rw-lock';
import { FIXTURE, tempDir } from './helpers/fixture';
import { startServe } from './helpers/serve-cli';
import { dot, rows } from './helpers/vectors';

const WORDS = 'model text token vector embed search query document retrieval train loss batch fast slow small large tiny random bert node library native gpu cpu memory kernel score similar sentence word'.split(' ');
const doc = (i: number, version = 1): IndexDoc => ({ id: `d${i}`, text: `${WORDS[i % WORDS.length]} ${WORDS[(i * 7 + 3) % WORDS.length]} ${WORDS[(i * 11 + 5) % WORDS.length]} number ${i} v${version}`, metadata: { i } });

let enc: Encoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
});
test.after.always(() => enc?.dispose());

test('ReadWriteLock: readers share, a writer waits for the readers before it and goes alone, later readers wait for it', async (t) => {
  const lock = new ReadWriteLock();
  const log: string[] = [];
  const gate = () => {
    let open!: () => void;
    return { promise: new Promise<void>((r) => (open = r)), open: () => open() };
  };
  const r1 = gate();
  const r2 = gate();
  const w = gate();
  const a = lock.read(async () => (log.push('r1 start'), await r1.promise, log.push('r1 end')));
  const b = lock.read(async () => (log.push('r2 start'), await r2.promise, log.push('r2 end')));
  const c = lock.write(async () => (log.push('w start'), await w.promise, log.push('w end')));
  const d = lock.read(async () => log.push('r3'));
  await new Promise((r) => setImmediate(r));
  t.deepEqual(log, ['r1 start', 'r2 start']);
  r1.open();
  await a;
  t.deepEqual(log, ['r1 start', 'r2 start', 'r1 end'], 'the writer waits for both readers');
  r2.open();
  await b;
  await new Promise((r) => setImmediate(r));
  t.deepEqual(log.slice(3), ['r2 end', 'w start'], 'the later reader waits for the writer');
  w.open();
  await Promise.all([c, d]);
  t.deepEqual(log.slice(5), ['w end', 'r3']);
  // A failed piece of work releases the lock.
  await t.throwsAsync(lock.write(async () => Promise.reject(new Error('boom'))), { message: 'boom' });
  t.is(await lock.write(async () => 7), 7);
});

test('searches side by side with upsert and remove: every hit names the document its score belongs to', async (t) => {
  const docs = Array.from({ length: 300 }, (_, i) => doc(i));
  const index = await Index.build(enc, docs);
  const queries = ['fast search', 'tiny random bert', 'gpu memory kernel', 'sentence word score'];
  const qv = rows((await enc.embed(queries, { normalize: true, task: 'query' })) as any);
  const searches: Promise<void>[] = [];
  const seen: { query: number; id: string; text: string; score: number }[] = [];
  for (let round = 0; round < 12; round++) {
    for (let s = 0; s < 3; s++) {
      searches.push(index.search(queries, { k: 20 }).then((hits) => hits.forEach((h, q) => h.forEach((x) => seen.push({ query: q, id: x.id, text: x.text, score: x.score })))));
    }
    // Removes shift every later row; upserts move documents to the end with new texts.
    const removed = Array.from({ length: 5 }, (_, j) => `d${round * 20 + j}`);
    searches.push(index.remove(removed));
    searches.push(index.upsert([doc(round * 20 + 10, 2), doc(round * 20 + 11, 2), doc(1000 + round)]));
  }
  await Promise.all(searches);
  t.is(index.size, 300 - 12 * 5 + 12);
  t.true(seen.length > 1000, `${seen.length} hits`);
  const texts = [...new Set(seen.map((h) => h.text))];
  const vectors = new Map(rows((await enc.embed(texts, { normalize: true, task: 'document' })) as any).map((v, i) => [texts[i], v]));
  let worst = 0;
  for (const h of seen) {
    t.regex(h.text, new RegExp(`v[12]$`));
    worst = Math.max(worst, Math.abs(dot(qv[h.query], vectors.get(h.text)!) - h.score));
  }
  t.true(worst < 1e-5, `a hit's score is off its document's by ${worst}`);
  // Each hit's id is the id of its text's document.
  const byText = new Map([...Array.from({ length: 300 }, (_, i) => doc(i)), ...Array.from({ length: 300 }, (_, i) => doc(i, 2)), ...Array.from({ length: 12 }, (_, r) => doc(1000 + r))].map((d) => [d.text, d.id]));
  t.true(seen.every((h) => byText.get(h.text) === h.id));
  // After all of it, the index holds what the changes say.
  t.false(index.has('d0'));
  t.is(index.get(['d10'])[0]!.text, doc(10, 2).text);
  t.truthy(index.get(['d1011'])[0]);
});

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return { status: res.status, json: await res.json() };
}

test('BM25 and hybrid search follow add, upsert and remove: the hits of an index built afresh from the same documents', async (t) => {
  const index = await Index.build(enc, Array.from({ length: 40 }, (_, i) => doc(i)));
  const queries = ['model text', 'search query document number', 'gpu kernel memory', 'v2 tiny random'];
  await index.search(queries, { mode: 'bm25' }); // builds its BM25 index, which the changes below must keep current
  let order = Array.from({ length: 40 }, (_, i) => doc(i));
  await index.add([50, 51, 52].map((i) => doc(i)));
  order.push(...[50, 51, 52].map((i) => doc(i)));
  await index.remove(['d3', 'd17', 'd51']);
  order = order.filter((d) => !['d3', 'd17', 'd51'].includes(d.id));
  // A replaced document moves to the end.
  await index.upsert([doc(5, 2), doc(60, 2)]);
  order = [...order.filter((d) => d.id !== 'd5'), doc(5, 2), doc(60, 2)];
  const fresh = await Index.build(enc, order);
  for (const mode of ['bm25', 'hybrid'] as const) {
    for (const k of [3, 50]) {
      t.deepEqual(await index.search(queries, { mode, k }), await fresh.search(queries, { mode, k }), `${mode}, k ${k}`);
    }
  }
  const filtered = { mode: 'bm25' as const, k: 10, filter: (d: IndexDoc) => (d.metadata as { i: number }).i % 2 === 0 };
  t.deepEqual(await index.search(queries, filtered), await fresh.search(queries, filtered));
});

test('the first lexical searches share one BM25 build; a write made meanwhile goes into it', async (t) => {
  const docs = Array.from({ length: 600 }, (_, i) => ({ ...doc(i), text: `${doc(i).text} `.repeat(40).trim() }));
  const index = await Index.build(enc, docs);
  const fresh = await Index.build(enc, docs);
  const queries = ['model text', 'gpu kernel memory number 7', 'tiny random'];
  const expected = [await fresh.search(queries, { mode: 'bm25', k: 5 }), await fresh.search([...queries].reverse(), { mode: 'bm25', k: 3 })];
  // Counts the BM25 builds over 600 documents from here on (other tests' indexes are smaller).
  const addAll = Bm25Index.prototype.addAll;
  let builds = 0;
  Bm25Index.prototype.addAll = function (this: Bm25Index, docs) {
    const list = [...docs];
    if (list.length === 600) builds++;
    return addAll.call(this, list);
  };
  t.teardown(() => {
    Bm25Index.prototype.addAll = addAll;
  });
  const first = index.search(queries, { mode: 'bm25', k: 5 });
  const second = index.search([...queries].reverse(), { mode: 'bm25', k: 3 });
  const write = index.add([{ id: 'new', text: 'zebra zebra unicorn' }]);
  t.deepEqual([await first, await second], expected);
  await write;
  t.is(builds, 1, 'one build for both searches');
  t.deepEqual(
    (await index.search(['zebra unicorn'], { mode: 'bm25', k: 2 }))[0].map((h) => h.id),
    ['new'],
    'the BM25 index built by those searches takes the write',
  );
});

test('serve: a writable index takes /documents and /documents/delete, /documents/get reads it, and the changes are saved', async (t) => {
  const dir = path.join(tempDir(), 'index');
  const index = await Index.build(enc, Array.from({ length: 10 }, (_, i) => doc(i)));
  await index.save(dir);
  const saveErrors: Error[] = [];
  const server = await serve({ encoder: enc, index, port: 0, writable: true, saveTo: dir, saveInterval: 0.2, onSaveError: (e) => saveErrors.push(e) });
  try {
    let r = await post(`${server.url}/documents`, { documents: [doc(3, 2), doc(20), { id: 'x', text: 'gpu kernel', metadata: { lang: 'en' } }] });
    t.is(r.status, 200, JSON.stringify(r.json));
    t.deepEqual(r.json, { added: 2, replaced: 1, documents: 12 });
    r = await post(`${server.url}/search`, { query: 'gpu kernel', k: 1, filter: { 'metadata.lang': 'en' } });
    t.is(r.json.results[0].hits[0].id, 'x');
    r = await post(`${server.url}/documents`, { documents: [doc(4)], mode: 'add' });
    t.is(r.status, 400);
    t.regex(r.json.error, /"d4" is already in the index/);
    r = await post(`${server.url}/documents/delete`, { ids: ['d1', 'd2', 'nope'] });
    t.is(r.status, 404);
    t.regex(r.json.error, /no document "nope" in the index; nothing was deleted/);
    r = await post(`${server.url}/documents/delete`, { ids: ['d1', 'd2', 'd2'] });
    t.deepEqual(r.json, { deleted: 2, documents: 10 });
    r = await post(`${server.url}/documents/get`, { ids: ['d3', 'd1', 'x'] });
    t.deepEqual(r.json.documents, [doc(3, 2), null, { id: 'x', text: 'gpu kernel', metadata: { lang: 'en' } }]);
    const info = (await (await fetch(`${server.url}/info`)).json()) as { index: object };
    t.like(info.index, { documents: 10, writable: true });
    for (const [body, message] of [
      [{ documents: [] }, /"documents" must be a non-empty array/],
      [{ documents: [{ id: 'a', text: 'b', tags: [] }] }, /unknown field "tags"/],
      [{ documents: [{ id: '', text: 'b' }] }, /"documents\[0\].id" must be a non-empty string/],
      [{ documents: [{ id: 'a', text: 'b', metadata: [1] }] }, /"documents\[0\].metadata" must be an object/],
      [{ documents: [doc(30)], mode: 'replace' }, /"mode" must be "upsert"/],
    ] as const) {
      r = await post(`${server.url}/documents`, body);
      t.is(r.status, 400);
      t.regex(r.json.error, message);
    }
    // The timer saves the changes: the folder loads with them.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const saved = await Index.load(dir, enc);
    t.is(saved.size, 10);
    t.is(saved.get(['d3'])[0]!.text, doc(3, 2).text);
    t.false(saved.has('d1'));
    // null metadata is none, as Index.add takes it.
    r = await post(`${server.url}/documents`, { documents: [{ id: 'n', text: 'no metadata', metadata: null }] });
    t.is(r.status, 200, JSON.stringify(r.json));
    t.deepEqual((await post(`${server.url}/documents/get`, { ids: ['n'] })).json.documents, [{ id: 'n', text: 'no metadata' }]);
    await post(`${server.url}/documents/delete`, { ids: ['n'] });
    // A change after it is saved at close().
    await post(`${server.url}/documents/delete`, { ids: ['x'] });
  } finally {
    await server.close();
  }
  t.false((await Index.load(dir, enc)).has('x'));
  t.deepEqual(saveErrors, []);
});

test('serve: an index is read-only unless writable; writable needs an index, saveTo needs writable', async (t) => {
  const index = await Index.build(enc, [doc(1), doc(2)]);
  const server = await serve({ encoder: enc, index, port: 0 });
  try {
    const r = await post(`${server.url}/documents`, { documents: [doc(3)] });
    t.is(r.status, 403);
    t.regex(r.json.error, /read-only: start the server with options.writable \(coltrast serve --writable\)/);
    t.is((await post(`${server.url}/documents/delete`, { ids: ['d1'] })).status, 403);
    t.is((await post(`${server.url}/documents/get`, { ids: ['d1'] })).json.documents[0].id, 'd1');
    t.is(index.size, 2);
  } finally {
    await server.close();
  }
  await t.throwsAsync(serve({ encoder: enc, port: 0, writable: true }), { message: /options.writable lets clients change an index: give options.index too/ });
  await t.throwsAsync(serve({ encoder: enc, index, port: 0, saveTo: tempDir() }), { message: /options.saveTo .* give options.writable: true too/ });
  // saveTo replaces only an index (or an empty folder): saving there would destroy another folder's files.
  const folder = tempDir();
  fs.writeFileSync(path.join(folder, 'keep.txt'), 'mine');
  await t.throwsAsync(serve({ encoder: enc, index, port: 0, writable: true, saveTo: folder }), { message: /options\.saveTo, .+, exists and is not an index \(no index\.json\)/ });
  t.deepEqual(fs.readdirSync(folder), ['keep.txt']);
});

test('coltrast serve --writable saves what clients change to the --index folder on exit', async (t) => {
  const dir = path.join(tempDir(), 'index');
  await (await Index.build(enc, [doc(1), doc(2)])).save(dir);
  const server = await startServe(['--model', FIXTURE, '--index', dir, '--writable', '--save-interval', '3600', '--port', '0', '--device', 'cpu']);
  const r = await post(`${server.url}/documents`, { documents: [doc(5)] });
  t.is(r.status, 200);
  t.is(await server.stop(), 0, server.stderr());
  const saved = await Index.load(dir, enc);
  t.deepEqual(saved.get(['d5']), [doc(5)], server.stderr());
});
