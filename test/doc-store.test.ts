// DocStore and TextStore: an index's documents with ids and texts as UTF-8 outside the JS heap; what goes in comes out,
// across chunk boundaries and removals, and ids find their positions as a Map would.
import test from 'ava';
import { DocStore, TextStore } from '../lib/doc-store';
import type { IndexDoc } from '../lib/search-index';

/** Texts of every kind of UTF-8: empty, ASCII, two-, three- and four-byte characters, and long ones. */
function texts(n: number, seed: number): string[] {
  const pieces = ['', 'a', 'plain words ', 'é', 'ü ß ', '中文', '🙂', 'x'.repeat(100), '\u0000', 'naïve café 東京 🚀 '];
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648);
  return Array.from({ length: n }, () => {
    let t = '';
    for (let k = next() % 12; k > 0; k--) t += pieces[next() % pieces.length];
    return t;
  });
}

test('TextStore: every text comes back as it went in, across chunks', (t) => {
  for (const largestChunk of [16, 100, 64 * 1024 * 1024]) {
    const want = texts(3000, largestChunk);
    want.push('y'.repeat(500)); // longer than a small store's chunks: a chunk of its own
    want.push('');
    const store = new TextStore({}, largestChunk);
    for (const text of want) store.push(text);
    t.is(store.length, want.length);
    t.deepEqual(Array.from({ length: store.length }, (_, i) => store.get(i)), want, `largest chunk ${largestChunk}`);
  }
});

test('TextStore: retain() keeps the flagged texts in order, and the store takes more texts after', async (t) => {
  const want = texts(2000, 7);
  const store = new TextStore({}, 64);
  for (const text of want) store.push(text);
  const keep = Uint8Array.from(want, (_, i) => (i % 3 === 1 || i > 1900 ? 0 : 1));
  await store.retain(keep);
  const expected = want.filter((_, i) => keep[i]);
  t.is(store.length, expected.length);
  t.deepEqual(Array.from({ length: store.length }, (_, i) => store.get(i)), expected);
  store.push('after 🙂');
  t.is(store.get(store.length - 1), 'after 🙂');
  await store.retain(new Uint8Array(store.length));
  t.is(store.length, 0);
  store.push('again');
  t.is(store.get(0), 'again');
});

test('TextStore: retain() keeps the chunks while the kept bytes fill half of them and copies below; texts added between removals stay whole', async (t) => {
  const firstChunk = (store: TextStore) => (store as unknown as { chunks: Buffer[] }).chunks[0];
  for (const largestChunk of [64, 64 * 1024 * 1024]) {
    let model = texts(3000, 11);
    const store = new TextStore({}, largestChunk);
    for (const text of model) store.push(text);
    let chunk = firstChunk(store);
    // A few removed: the same chunks, the texts as before.
    const few = Uint8Array.from(model, (_, i) => (i % 97 === 5 ? 0 : 1));
    await store.retain(few);
    t.is(firstChunk(store), chunk, 'kept in place');
    model = model.filter((_, i) => few[i]);
    // Removals one after another, texts added between them, until the kept bytes fall below half and are copied.
    let copied = false;
    for (let round = 0; round < 12 && store.length > 0; round++) {
      for (let k = 0; k < 40; k++) {
        store.push(`round ${round}, ${k} 🙂`);
        model.push(`round ${round}, ${k} 🙂`);
      }
      const flags = Uint8Array.from(model, (_, i) => ((i + round) % 5 === 0 ? 0 : 1));
      await store.retain(flags);
      copied ||= firstChunk(store) !== chunk;
      chunk = firstChunk(store);
      model = model.filter((_, i) => flags[i]);
      t.deepEqual(Array.from({ length: store.length }, (_, i) => store.get(i)), model, `largest chunk ${largestChunk}, round ${round}`);
    }
    t.true(copied, 'removing a fifth at a time, the kept bytes fell below half and were copied');
  }
});

test('TextStore: positions out of range and wrong masks are errors', async (t) => {
  const store = new TextStore();
  store.push('one');
  t.throws(() => store.get(1), { instanceOf: RangeError, message: /no text 1 \(1 texts\)/ });
  t.throws(() => store.get(-1), { instanceOf: RangeError });
  await t.throwsAsync(store.retain(new Uint8Array(2)), { instanceOf: RangeError, message: /2 flags for 1 texts/ });
});

test('TextStore: a lone surrogate comes back as U+FFFD, as a UTF-8 file would hold it', (t) => {
  const store = new TextStore();
  store.push('a\ud800b');
  t.is(store.get(0), 'a\ufffdb');
});

/** Documents with ids of many shapes (some differ in one character, some non-ASCII), a third with metadata. */
function documents(n: number, seed: number): IndexDoc[] {
  const body = texts(n, seed);
  return body.map((text, i) => {
    const id = i % 5 === 0 ? `doc-${i}` : i % 5 === 1 ? `文書${i}` : i % 5 === 2 ? `${i}` : i % 5 === 3 ? `d${i}🙂` : `x`.repeat(1 + (i % 40)) + i;
    return i % 3 === 0 ? { id, text, metadata: { i, tag: `t${i % 7}` } } : { id, text };
  });
}

/** A plain model of what a DocStore holds: the documents in order, and a Map from id to position. */
function model(docs: IndexDoc[]) {
  return { docs, positions: new Map(docs.map((d, i) => [d.id, i])) };
}

function check(t: import('ava').ExecutionContext, store: DocStore, want: ReturnType<typeof model>, absent: string[]) {
  t.is(store.length, want.docs.length);
  want.docs.forEach((d, i) => {
    t.deepEqual(store.doc(i), d);
    t.is(store.position(d.id), want.positions.get(d.id));
    t.true(store.has(d.id));
  });
  for (const id of absent) {
    t.is(store.position(id), undefined, id);
    t.false(store.has(id));
  }
}

test('DocStore: documents and their positions by id, as an array and a Map hold them, through growth and retain()', async (t) => {
  const docs = documents(5000, 3);
  const absent = ['', 'doc-1', 'doc-50000', '文書0', 'nope', 'd3', '2.5'];
  const grown = new DocStore();
  const sized = new DocStore({ docs: docs.length, textBytes: 1 << 20 });
  for (const d of docs) {
    grown.push(d);
    sized.push(d);
  }
  check(t, grown, model(docs), absent);
  check(t, sized, model(docs), absent);
  const keep = Uint8Array.from(docs, (_, i) => (i % 4 === 2 || (i > 1000 && i < 1200) ? 0 : 1));
  const before = grown.changes;
  await grown.retain(keep);
  t.true(grown.changes > before, 'a removal counts as a change');
  const remaining = docs.filter((_, i) => keep[i]);
  check(t, grown, model(remaining), [...absent, ...docs.filter((_, i) => !keep[i]).map((d) => d.id)]);
  // The store grows on (an id removed before comes back), and removes again (the table shrinks with it).
  grown.push({ id: 'doc-2', text: 'back again', metadata: { again: true } });
  check(t, grown, model([...remaining, { id: 'doc-2', text: 'back again', metadata: { again: true } }]), absent);
  await sized.retain(new Uint8Array(docs.length));
  check(t, sized, model([]), docs.slice(0, 50).map((d) => d.id));
  sized.push(docs[7]);
  check(t, sized, model([docs[7]]), absent);
  const one = Uint8Array.from(docs, (_, i) => (i === 4321 ? 1 : 0));
  const single = new DocStore();
  for (const d of docs) single.push(d);
  await single.retain(one);
  check(t, single, model([docs[4321]]), docs.slice(0, 50).map((d) => d.id));
});

test("DocStore: a filter's view of a document has its metadata, and its id and text where the filter reads them", async (t) => {
  const store = new DocStore();
  store.push({ id: 'a', text: 'first', metadata: { n: 1 } });
  store.push({ id: 'b', text: 'second' });
  t.deepEqual(store.view(0, { id: true, text: true }), { id: 'a', text: 'first', metadata: { n: 1 } });
  t.deepEqual(store.view(1, { id: true, text: true }), { id: 'b', text: 'second' });
  t.deepEqual(store.view(0, { id: false, text: false }), { metadata: { n: 1 } });
  t.deepEqual(store.view(1, { id: false, text: true }), { text: 'second' });
  t.deepEqual(store.view(1, { id: true, text: false }), { id: 'b' });
  await t.throwsAsync(store.retain(new Uint8Array(3)), { instanceOf: RangeError, message: /3 flags for 2 documents/ });
});

test('DocStore.retain works in steps, letting timers fire, and leaves what TextStore.retain leaves', async (t) => {
  const n = 600_000;
  const store = new DocStore();
  const twin = new DocStore();
  const ids = new TextStore();
  for (let i = 0; i < n; i++) {
    store.push({ id: `d${i}`, text: `text ${i}` });
    twin.push({ id: `d${i}`, text: `text ${i}` });
    ids.push(`d${i}`);
  }
  const keep = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i += 997) keep[i] = 0;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const started = performance.now();
  await store.retain(keep);
  const ms = performance.now() - started;
  clearInterval(timer);
  // The steps inTurns runs it in: a yield per run of kept documents (602 here) and every 65,536 of a pass.
  const steps = [...(twin as unknown as { retaining(keep: Uint8Array): Iterable<void> }).retaining(keep)].length;
  t.log(`retain of ${n} documents: ${ms.toFixed(0)} ms, the timer fired ${ticks} times; ${steps} steps`);
  t.true(steps > 2 * 602, `${steps} steps`);
  t.true(ticks >= 1, `the timer fired ${ticks} times`);
  await ids.retain(keep);
  for (const s of [store, twin]) {
    t.is(s.length, ids.length);
    for (const i of [0, 1, 996, 997, 5000, 123_456, s.length - 1]) {
      t.is(s.id(i), ids.get(i));
      t.is(s.position(ids.get(i)), i);
    }
    t.is(s.position('d0'), undefined);
    t.is(s.position('d997'), undefined);
  }
});
