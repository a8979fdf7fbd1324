// TextTokenizer's long lane (lib/tokenizer.ts, LONG_CHARACTERS): texts of more than LONG_CHARACTERS characters are
// tokenized on a lane of their own, one message at a time for the whole process (a call's long texts together, one
// encodeBatch; a pair alone), the shorter ones in parts of their own. The ids are
// those of the whole input tokenized at once, in order (texts, bare texts and pairs, mixed), as before the lane; and
// texts of hundreds of thousands of characters sent at once no longer hold libuv's whole pool, so that a short
// embed() meanwhile is answered at once.
import test from 'ava';
import path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { Encoder } from '../lib';
import { LONG_CHARACTERS, TextTokenizer, setLongCharacters, setSendCharacters } from '../lib/tokenizer';
import { FIXTURE } from './helpers/fixture';
import { longText as text, watchingMessages } from './helpers/long-texts';

const FILE = path.join(FIXTURE, 'tokenizer.json');

test("a call's long texts go to the long lane in one message (one encodeBatch, which spreads over the cores), pairs one a message", async (t) => {
  const texts = [10, 1500, 1600, 20, 1700, 1800, 30].map(text);
  const pairs = texts.slice(0, 4).map((a, i): [string, string] => [a, texts[6 - i]]);
  const whole = Tokenizer.fromFile(FILE);
  whole.setTruncation(24);
  whole.disablePadding();
  const tokenizer = await TextTokenizer.load(FILE, 24, false);
  const longBefore = setLongCharacters(1000);
  const sendBefore = setSendCharacters(6000);
  try {
    const { result, messages } = await watchingMessages(() => tokenizer.encode(texts));
    t.deepEqual(result, (await whole.encodeBatch(texts)).map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() })));
    // The four long texts (6,600 characters): two messages of at most 6,000; the short ones one message.
    t.deepEqual(
      messages.filter((m) => m.op === 'encode').map((m) => m.lengths).sort((a, b) => a[0] - b[0]),
      [[10, 20, 30], [1500, 1600, 1700], [1800]],
    );
    const paired = await watchingMessages(() => tokenizer.encodePairs(pairs));
    const pairIds = [];
    for (const [a, b] of pairs) {
      const e = await whole.encode(a, b);
      pairIds.push({ ids: e.getIds(), typeIds: e.getTypeIds() });
    }
    t.deepEqual(paired.result, pairIds);
    // The long pairs one a message (each is an encode call of its own, a pool thread each).
    t.deepEqual(
      paired.messages.filter((m) => m.op === 'encodePairs').map((m) => m.lengths).sort((a, b) => a[0] - b[0]),
      [[10 + 30, 20 + 20], [1500 + 1800], [1600 + 1700]],
    );
  } finally {
    setLongCharacters(longBefore);
    setSendCharacters(sendBefore);
    tokenizer.dispose();
  }
});

test('texts longer than LONG_CHARACTERS, mixed with short ones, get the ids of the whole input tokenized at once, in order, pairs too', async (t) => {
  t.is(LONG_CHARACTERS, 100_000);
  // Here texts of more than 1,000 characters are long, and parts of 2,000 (the real sizes would take seconds).
  const sizes = [5, 1500, 30, 200, 4000, 1001, 1000, 7, 900, 3000, 60, 2, 2500, 400, 999, 1200, ...Array.from({ length: 30 }, (_, i) => (i * 97) % 300)];
  const texts = sizes.map(text);
  const whole = Tokenizer.fromFile(FILE);
  whole.setTruncation(24);
  whole.disablePadding();
  const reference = (await whole.encodeBatch(texts)).map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() }));
  const bare = (await whole.encodeBatch(texts, { addSpecialTokens: false })).map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() }));
  const pairs = texts.map((a, i): [string, string] => [a, texts[(i * 7) % texts.length]]);
  const pairReference = [];
  for (const [a, b] of pairs) {
    const e = await whole.encode(a, b);
    pairReference.push({ ids: e.getIds(), typeIds: e.getTypeIds() });
  }
  const tokenizer = await TextTokenizer.load(FILE, 24, false);
  const all = () => Promise.all([tokenizer.encode(texts), tokenizer.encodeBare(texts), tokenizer.encodePairs(pairs)]);
  try {
    // The way before the lane: every part on the main lane.
    const longBefore = setLongCharacters(Infinity);
    const sendBefore = setSendCharacters(2000);
    let old;
    try {
      old = await all();
    } finally {
      setLongCharacters(1000);
    }
    try {
      // Several calls at once, so that the lane has a queue: each gets its own ids back.
      const [lanes, again] = await Promise.all([all(), all()]);
      t.deepEqual(lanes, old);
      t.deepEqual(again, old);
      t.deepEqual(lanes, [reference, bare, pairReference]);
      // Only long texts, and one long text alone.
      t.deepEqual(await tokenizer.encode([texts[1], texts[4]]), [reference[1], reference[4]]);
      t.deepEqual(await tokenizer.encodePairs([pairs[9]]), [pairReference[9]]);
      t.deepEqual(await tokenizer.encode([]), []);
    } finally {
      setLongCharacters(longBefore);
      setSendCharacters(sendBefore);
    }
  } finally {
    tokenizer.dispose();
  }
});

// Serial: the other test's tokenizing would share the cores with it.
test.serial('four embed() calls of a huge text at once do not hold up a short one: it waits far less than one of them takes', async (t) => {
  // The tokenizers package tokenizes a text whole and truncates after, on libuv's pool (4 threads, which the models'
  // calls run on too). Four calls of 2 million characters at once held all of it: an embed() of one short text sent
  // meanwhile waited 4.5 s, 2 s more than one of them alone took (2026-12-07, this VM); on the long lane, 21 ms.
  const enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  const huge = text(800_000, 1);
  const embed = async (texts: string[]) => {
    const started = performance.now();
    const vectors = await enc.embed(texts);
    return { ms: performance.now() - started, vectors };
  };
  try {
    await embed(['warm up']);
    const alone = await embed([huge]); // the same-run baseline: one huge text, nothing else running
    let answered = false;
    const four = Promise.all([embed([huge]), embed([huge]), embed([huge]), embed([huge])]).finally(() => (answered = true));
    const waits: number[] = [];
    while (!answered) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      waits.push((await embed(['the cat sat'])).ms);
    }
    for (const { vectors } of await four) t.deepEqual(vectors, alone.vectors);
    const worst = Math.max(...waits);
    t.log(`one embed() of ${huge.length} characters: ${alone.ms.toFixed(0)} ms; a short one while four ran: ${waits.length} calls, the slowest ${worst.toFixed(0)} ms`);
    t.true(waits.length > 0);
    t.true(worst < alone.ms / 3, `a short embed() waited ${worst.toFixed(0)} ms behind huge ones that take ${alone.ms.toFixed(0)} ms each`);
  } finally {
    enc.dispose();
  }
});
