// tokenizeInBatches (lib/native-model.ts) with a stand-in tokenizer and model: which texts each batch holds, in
// what order, when tokenizing happens relative to the batches, progress, and errors; unpackIds (lib/tokenizer.ts),
// which makes a large input's ids, sent back packed by the tokenizer's worker, a slice per turn of the event loop; and
// TextTokenizer, whose tokenizers live in that worker. Without `ahead` (a model on
// the CPU) everything is tokenized first; with it (a GPU's way) chunks are tokenized while earlier batches run.
import test from 'ava';
import { ColtrastError } from '../lib';
import { TOKENIZE_CHUNK, tokenizeInBatches } from '../lib/native-model';
import path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { ENCODE_SLICE, IDS_SLICE, SEND_CHARACTERS, TextTokenizer, setSendCharacters, longestFirst, unpackIds } from '../lib/tokenizer';
import { FIXTURE } from './helpers/fixture';

interface Item {
  ids: number[];
  index: number;
}

// Text i has a character length and a token count that disagree a little, as real ones do.
const characters = (i: number) => (i * 37) % 101;
const tokensOf = (i: number) => Math.floor(1 + ((i * 37) % 101) / 4 + (i % 3));

function harness(count: number, batchSize: number, ahead: boolean) {
  const events: string[] = [];
  const batches: Item[][] = [];
  const taken = new Map<number, number>();
  const progress: [number, number][] = [];
  let calls = 0;
  const tokenize = async (indices: number[]) => {
    const c = calls++;
    events.push(`tokenize ${c} start`);
    await new Promise((resolve) => setTimeout(resolve, 2));
    events.push(`tokenize ${c} end`);
    return indices.map((index) => ({ index, ids: new Array<number>(tokensOf(index)).fill(0) }));
  };
  const run = async (items: Item[]) => {
    const b = batches.length;
    batches.push(items);
    events.push(`run ${b} start`);
    await new Promise((resolve) => setTimeout(resolve, 1));
    events.push(`run ${b} end`);
    return items.map((item) => item.index * 10);
  };
  const take = (result: number[], indices: number[], items: Item[]) => {
    indices.forEach((index, r) => {
      if (items[r].index !== index || result[r] !== index * 10) throw new Error(`batch row ${r} is not text ${index}`);
      taken.set(index, (taken.get(index) ?? 0) + 1);
    });
  };
  const done = tokenizeInBatches(count, batchSize, ahead, characters, tokenize, run, take, (d, total) => progress.push([d, total]));
  return { done, events, batches, taken, progress, calls: () => calls };
}

const longestFirstOf = (count: number) => longestFirst(Array.from({ length: count }, (_, index) => ({ ids: new Array<number>(tokensOf(index)) })));

for (const ahead of [false, true]) {
  const mode = ahead ? 'ahead' : 'all first';
  for (const [count, batchSize] of [[0, 4], [1, 4], [TOKENIZE_CHUNK - 1, 64], [TOKENIZE_CHUNK, 64], [TOKENIZE_CHUNK + 1, 64], [3 * TOKENIZE_CHUNK + 5, 100], [TOKENIZE_CHUNK + 7, 3]]) {
    test(`${mode}: ${count} texts in batches of ${batchSize}: each text once, longest first`, async (t) => {
      const h = harness(count, batchSize, ahead);
      await h.done;
      t.is(h.taken.size, count);
      t.true([...h.taken.values()].every((n) => n === 1));
      // Chunks hold whole batches (the chunk size rounded up to them): every batch is full but a chunk's last.
      const perChunk = ahead ? batchSize * Math.ceil(TOKENIZE_CHUNK / batchSize) : Math.max(count, 1);
      t.is(h.calls(), Math.ceil(count / perChunk));
      const chunkOfBatch: number[] = [];
      let seen = 0;
      for (const b of h.batches) {
        t.true(b.length <= batchSize);
        const c = Math.floor(seen / perChunk);
        seen += b.length;
        t.is(Math.floor((seen - 1) / perChunk), c, 'a batch does not cross a chunk');
        chunkOfBatch.push(c);
      }
      // Within a chunk, token counts fall (ties in input order); across chunks, characters fall.
      for (let c = 0; c * perChunk < count; c++) {
        const items = h.batches.filter((_, b) => chunkOfBatch[b] === c).flat();
        for (let k = 1; k < items.length; k++) {
          const [a, b] = [items[k - 1], items[k]];
          t.true(a.ids.length > b.ids.length || (a.ids.length === b.ids.length && a.index < b.index), `chunk ${c} row ${k}`);
        }
        const next = h.batches.filter((_, b) => chunkOfBatch[b] === c + 1).flat();
        if (next.length > 0) t.true(Math.min(...items.map((i) => characters(i.index))) >= Math.max(...next.map((i) => characters(i.index))));
      }
      // One chunk: exactly longestFirst's order.
      if (count <= perChunk) t.deepEqual(h.batches.flat().map((i) => i.index), longestFirstOf(count));
      // Progress: the start, then one call per batch, rising to the count.
      t.deepEqual(h.progress[0], [0, count]);
      t.deepEqual(h.progress.at(-1), [count, count]);
      t.true(h.progress.every(([d], k) => k === 0 || d >= h.progress[k - 1][0]));
      t.is(h.progress.filter(([d], k) => k > 0 && d > h.progress[k - 1][0]).length, h.batches.length);
    });
  }

  test(`${mode}: a tokenizer's error comes back as thrown; a model's as a ColtrastError`, async (t) => {
    const tokenizerError = new TypeError('bad text');
    let ran = 0;
    const failing = tokenizeInBatches(
      2 * TOKENIZE_CHUNK, 64, ahead, characters,
      async (indices) => {
        // Text 0 has the fewest characters: in the last chunk.
        if (indices.includes(0)) throw tokenizerError;
        return indices.map((index) => ({ index, ids: [1] }));
      },
      async (items) => (ran++, items.length), () => {},
    );
    t.is(await t.throwsAsync(failing), tokenizerError);
    // All first: before any batch; ahead: after the first chunk's.
    t.is(ran, ahead ? TOKENIZE_CHUNK / 64 : 0);
    const modelError = Object.assign(new Error('out of memory'), { code: 'NATIVE' });
    const error = await t.throwsAsync(
      tokenizeInBatches(2 * TOKENIZE_CHUNK, 64, ahead, characters, async (indices) => indices.map((index) => ({ index, ids: [1] })), async () => {
        throw modelError;
      }, () => {}),
    );
    t.true(error instanceof ColtrastError);
    t.is(error?.message, 'out of memory');
  });
}

test('ahead: each chunk is tokenized while the batches before it run', async (t) => {
  const h = harness(3 * TOKENIZE_CHUNK, TOKENIZE_CHUNK / 4, true);
  await h.done;
  const at = (e: string) => h.events.indexOf(e);
  // Four batches a chunk: chunk 1 is tokenized when chunk 0's batches start, chunk 2 when chunk 1's do.
  t.true(at('tokenize 1 start') < at('run 0 start'), h.events.join(', '));
  t.true(at('tokenize 2 start') < at('run 4 start') && at('tokenize 2 start') > at('run 3 start'), h.events.join(', '));
  t.true(at('tokenize 0 end') < at('run 0 start'));
});

test('all first: one tokenizing call before any batch', async (t) => {
  const h = harness(3 * TOKENIZE_CHUNK, TOKENIZE_CHUNK / 4, false);
  await h.done;
  t.is(h.calls(), 1);
  t.true(h.events.indexOf('tokenize 0 end') < h.events.indexOf('run 0 start'));
});

test('unpackIds makes the packed ids into arrays in order, a slice per turn of the event loop', async (t) => {
  const count = 2 * IDS_SLICE + 5;
  // Text i: ids [i, i + 1] (and none for every tenth), token types [0, i % 2].
  const lengths: number[] = Array.from({ length: count }, (_, i) => (i % 10 === 9 ? 0 : 2));
  const ends = new Int32Array(count);
  lengths.reduce((end, n, i) => (ends[i] = end + n), 0);
  const ids = new Int32Array(ends[count - 1]);
  const typeIds = new Int32Array(ends[count - 1]);
  lengths.forEach((n, i) => {
    if (n === 0) return;
    ids.set([i, i + 1], ends[i] - 2);
    typeIds.set([0, i % 2], ends[i] - 2);
  });
  let turns = 0;
  const tick = () => {
    turns++;
    if (turns < 10) setImmediate(tick);
  };
  setImmediate(tick);
  const out = await unpackIds({ ids, typeIds, ends });
  t.is(out.length, count);
  t.deepEqual(out[count - 1], { ids: [count - 1, count], typeIds: [0, (count - 1) % 2] });
  t.deepEqual(out[9], { ids: [], typeIds: [] });
  t.true(out.every((o, i) => (i % 10 === 9 ? o.ids.length === 0 : o.ids[0] === i)));
  // Three slices: the event loop turned between them.
  t.true(turns >= 2, `${turns} turns`);
  t.deepEqual(await unpackIds({ ids: new Int32Array(0), typeIds: new Int32Array(0), ends: new Int32Array(0) }), []);
});

// TextTokenizer tokenizes ENCODE_SLICE texts (or pairs) a call, so that a large input's encodings are not all held at
// once: the ids are those of one encodeBatch over everything (texts) or of each pair alone.
test('TextTokenizer.encode and encodePairs in slices give the ids of the whole input tokenized at once', async (t) => {
  const file = path.join(FIXTURE, 'tokenizer.json');
  const n = ENCODE_SLICE + 37;
  const words = ['model', 'token', 'vector', 'search', 'query', 'the', 'bank', 'river'];
  const texts = Array.from({ length: n }, (_, i) => Array.from({ length: 1 + (i % 30) }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' '));
  const whole = Tokenizer.fromFile(file);
  whole.setTruncation(24);
  whole.disablePadding();
  const reference = (await whole.encodeBatch(texts)).map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() }));
  const tokenizer = await TextTokenizer.load(file, 24, false);
  t.deepEqual(await tokenizer.encode(texts), reference);
  const bare = (await whole.encodeBatch(texts, { addSpecialTokens: false })).map((e) => e.getIds());
  t.deepEqual((await tokenizer.encodeBare(texts)).map((e) => e.ids), bare);
  const pairs = texts.map((a, i): [string, string] => [a, texts[(i * 13) % n]]);
  const pairIds = await tokenizer.encodePairs(pairs);
  t.is(pairIds.length, n);
  for (const i of [0, 1, ENCODE_SLICE - 1, ENCODE_SLICE, n - 1]) {
    const e = await whole.encode(pairs[i][0], pairs[i][1]);
    t.deepEqual(pairIds[i], { ids: e.getIds(), typeIds: e.getTypeIds() }, `pair ${i}`);
  }
});

// lib/tokenizer-host.ts encodes each pair with its own encode(a, b) because the package's encodeBatch takes single texts
// only. Should a release take pairs ([a, b], as Python's encode_batch takes tuples), this fails: encodePairs could then
// be one call a slice, once its ids (truncation past maxLength included) are shown to be those of encode(a, b).
test("the tokenizers package's encodeBatch refuses pairs, so encodePairs encodes each pair by itself", (t) => {
  const tokenizer = Tokenizer.fromFile(path.join(FIXTURE, 'tokenizer.json'));
  t.throws(() => tokenizer.encodeBatch([['a query', 'a document'] as unknown as string]), { code: 'StringExpected', message: /into rust type `String`/ });
});

// Texts of more than SEND_CHARACTERS characters in all go to the worker as several messages, a turn of the event loop
// apart (a postMessage copies its texts on the loop: 80 million characters held it 99-202 ms): the ids are those of the
// whole input tokenized at once, in order, pairs too.
test('TextTokenizer: an input larger than SEND_CHARACTERS is sent in parts, its ids those of the whole', async (t) => {
  const file = path.join(FIXTURE, 'tokenizer.json');
  const words = ['model', 'token', 'vector', 'search', 'query', 'the', 'bank', 'river'];
  // Parts of 2,000 characters here (setSendCharacters; SEND_CHARACTERS is 2M, which would take the test seconds of
  // tokenizing): five times that, in texts of 1 to 900 characters, and one longer than a part (it goes alone).
  t.is(SEND_CHARACTERS, 1 << 21);
  const limit = 2000;
  const sizes = [1, 300, 17, 200, limit + 5, 3, 300, 90, 600, 5, 900, 60, ...Array.from({ length: 60 }, (_, i) => (i * 97) % 200)];
  t.true(sizes.reduce((a, b) => a + b, 0) > 5 * limit);
  const texts = sizes.map((n, i) => `${words[i % words.length]} ${words[(i * 3) % words.length]} `.repeat(Math.ceil(n / 12)).slice(0, n));
  const whole = Tokenizer.fromFile(file);
  whole.setTruncation(24);
  whole.disablePadding();
  const reference = (await whole.encodeBatch(texts)).map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() }));
  const tokenizer = await TextTokenizer.load(file, 24, false);
  const before = setSendCharacters(limit);
  try {
    t.deepEqual(await tokenizer.encode(texts), reference);
    const pairs = texts.map((a, i): [string, string] => [a, texts[texts.length - 1 - i]]);
    const pairIds = await tokenizer.encodePairs(pairs);
    for (const [i, pair] of pairs.entries()) {
      const e = await whole.encode(pair[0], pair[1]);
      t.deepEqual(pairIds[i], { ids: e.getIds(), typeIds: e.getTypeIds() }, `pair ${i}`);
    }
  } finally {
    setSendCharacters(before);
    tokenizer.dispose();
  }
});
