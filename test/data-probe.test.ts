// What users get wrong in data files, documents to chunk and texts to search with BM25: found by probing
// lib/data-files.ts, lib/train-data.ts, lib/chunking.ts and lib/bm25.ts with the inputs people actually have.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Bm25Index, bm25Tokens } from '../lib/bm25';
import { semanticChunks, splitSentences, type Embedder } from '../lib/chunking';
import { readCorpus, readTrainingData } from '../lib/train-data';
import { tempDir } from './helpers/fixture';

test('BM25 folds Latin letters that have no accent to drop (ß, ø, æ, ł, œ, þ): a word spelled either way is one term', (t) => {
  t.deepEqual(bm25Tokens('Straße Łódź København Ærø Œuvre Þór'), ['strasse', 'lodz', 'kobenhavn', 'aero', 'oeuvre', 'thor']);
  const index = new Bm25Index();
  index.add('street', 'Die Straße in Łódź');
  index.add('city', 'Hotels in København');
  index.add('other', 'nothing here');
  t.deepEqual(index.search('strasse', 5).map((h) => h.id), ['street']);
  t.deepEqual(index.search('Lodz', 5).map((h) => h.id), ['street']);
  t.deepEqual(index.search('Kobenhavn', 5).map((h) => h.id), ['city']);
});

test('BM25 finds words of non-Latin scripts (Cyrillic, Greek, Arabic, Devanagari) and CJK characters, which gave no tokens at all', (t) => {
  t.deepEqual(bm25Tokens('Привет, мир! Ελληνικά; مرحبا بالعالم हिंदी भाषा'), ['привет', 'мир', 'ελληνικα', 'مرحبا', 'بالعالم', 'हिंदी', 'भाषा']);
  // CJK puts no spaces between words: each character is a term, so a word inside a phrase is found.
  t.deepEqual(bm25Tokens('東京タワーへ行く'), ['東', '京', 'タ', 'ワ', 'ー', 'へ', '行', 'く']);
  // A kana with a voiced mark stays one term (NFKD splits ガ into カ and a mark).
  t.deepEqual(bm25Tokens('ガ'), ['ガ'.normalize('NFKD')]);
  // A mark after a Latin letter that NFKD leaves (U+20DD) splits a word alike, whatever other script the text holds.
  t.deepEqual(bm25Tokens('x\u20ddy'), ['x', 'y']);
  t.deepEqual(bm25Tokens('x\u20ddy мир'), ['x', 'y', 'мир']);
  const index = new Bm25Index({ stem: true });
  index.add('ru', 'Привет мир, это документ о поиске');
  index.add('zh', '我们在东京塔附近');
  index.add('hi', 'यह हिंदी भाषा का दस्तावेज़ है');
  index.add('en', 'running in the world');
  t.deepEqual(index.search('мир', 10).map((h) => h.id), ['ru']);
  t.deepEqual(index.search('东京', 10).map((h) => h.id), ['zh']);
  t.deepEqual(index.search('भाषा', 10).map((h) => h.id), ['hi']);
  // Stemming is English Porter2: it leaves other scripts' tokens as they are and still stems English.
  t.deepEqual(index.search('runs', 10).map((h) => h.id), ['en']);
});

test('BM25 over texts of many scripts: added and removed documents score as a fresh index of the kept ones; NFC and NFD are one text', async (t) => {
  const words = ['мир', 'поиск', 'café', 'cafe\u0301', 'straße', '東', '京', 'भाषा', 'ελληνικα', 'plain', 'Łódź'];
  const docs = Array.from({ length: 120 }, (_, i) => ({ id: `d${i}`, text: Array.from({ length: 1 + (i % 7) }, (_, j) => words[(i * 3 + j * 5) % words.length]).join(' ') }));
  const grown = new Bm25Index();
  for (const d of docs.slice(0, 80)) grown.add(d.id, d.text);
  const keep = Uint8Array.from({ length: 80 }, (_, i) => (i % 3 === 0 ? 0 : 1));
  await grown.remove(keep);
  for (const d of docs.slice(80)) grown.add(d.id, d.text);
  const fresh = new Bm25Index();
  for (const d of [...docs.slice(0, 80).filter((_, i) => keep[i]), ...docs.slice(80)]) fresh.add(d.id, d.text);
  for (const query of ['мир', 'café', 'cafe', 'strasse 京', 'भाषा plain', 'lodz ελληνικα']) {
    const hits = grown.search(query, 1000);
    t.true(hits.length > 0, query);
    t.deepEqual(hits, fresh.search(query, 1000), query);
  }
  t.deepEqual(grown.search('caf\u00e9', 1000), grown.search('cafe\u0301', 1000));
  // A query of punctuation only finds nothing; k past the corpus gives every match once.
  t.deepEqual(grown.search('?! ... —', 10), []);
  t.is(grown.search('plain', 10_000).length, new Set(grown.search('plain', 10_000).map((h) => h.id)).size);
});

test('splitSentences ends sentences at the Devanagari danda, the Arabic question mark, the Urdu full stop and the ellipsis', (t) => {
  t.deepEqual(splitSentences('यह एक वाक्य है। यह दूसरा वाक्य है॥ तीसरा।'), ['यह एक वाक्य है।', 'यह दूसरा वाक्य है॥', 'तीसरा।']);
  t.deepEqual(splitSentences('كيف حالك؟ أنا بخير.'), ['كيف حالك؟', 'أنا بخير.']);
  t.deepEqual(splitSentences('یہ ایک جملہ ہے۔ یہ دوسرا ہے۔'), ['یہ ایک جملہ ہے۔', 'یہ دوسرا ہے۔']);
  t.deepEqual(splitSentences('Wait… What?'), ['Wait…', 'What?']);
});

test('semanticChunks joins CJK sentences without the space the document does not have', async (t) => {
  const same: Embedder = {
    embed: async (texts) => texts.map(() => Float32Array.of(1)),
    countTokens: async (texts) => texts.map((s) => 2 + [...s].length),
  };
  t.deepEqual(await semanticChunks('你好。世界！Hello there. Next one.', same, { maxTokens: 100 }), ['你好。世界！Hello there. Next one.']);
});

test('a JSON Lines file that is pretty-printed, joined with cat (a BOM mid-file) or has old Mac line endings: the error says which', async (t) => {
  const dir = tempDir();
  const pair = JSON.stringify({ query: 'q', positive: 'p' });
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const pretty = write('pretty.jsonl', JSON.stringify([{ query: 'q', positive: 'p' }], null, 2));
  await t.throwsAsync(readTrainingData(pretty), { message: /pretty\.jsonl:1: not valid JSON .*one whole JSON value: a document written over several lines \(pretty-printed\) belongs in a \.json file/ });
  const joined = write('joined.jsonl', `\ufeff${pair}\n\ufeff${pair}\n`);
  await t.throwsAsync(readTrainingData(joined), { message: /joined\.jsonl:2: not valid JSON .*starts with a byte-order mark \(U\+FEFF\).*sed -i/ });
  const mac = write('mac.jsonl', `${pair}\r${pair}\r`);
  await t.throwsAsync(readTrainingData(mac), { message: /mac\.jsonl:1: not valid JSON .*end in '\\r' alone .*tr '\\r' '\\n'/ });
  // A line that is simply wrong gets no guess.
  const wrong = write('wrong.jsonl', `${pair},\n`);
  const error = await t.throwsAsync(readTrainingData(wrong));
  t.regex(error!.message, /wrong\.jsonl:1: not valid JSON \([^)]*\)$/);
});

test('an empty data file or corpus file is an error that names the file', async (t) => {
  const dir = tempDir();
  const empty = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(empty, '\n  \r\n');
  await t.throwsAsync(readTrainingData(empty), { code: 'INVALID_ARGUMENT', message: /^data file .*pairs\.jsonl holds no examples/ });
  const corpus = path.join(dir, 'corpus.txt');
  fs.writeFileSync(corpus, '\n\n');
  await t.throwsAsync(readCorpus(corpus), { code: 'INVALID_ARGUMENT', message: /^corpus file .*corpus\.txt holds no documents/ });
  // Arrays keep their message: there is no file to name.
  await t.throwsAsync(readTrainingData([]), { message: 'the training data holds no examples' });
});

test('a compressed data file without its .gz name is named as compressed, not given an iconv command that garbles it', async (t) => {
  const dir = tempDir();
  const pairs = Buffer.from(`${JSON.stringify({ query: 'q', positive: 'p' })}\n`);
  const write = (name: string, bytes: Buffer) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    return file;
  };
  // Read a line at a time (.jsonl) and whole (.json).
  for (const name of ['pairs.jsonl', 'pairs.json']) {
    const file = write(name, zlib.gzipSync(pairs));
    const error = await t.throwsAsync(readTrainingData(file));
    t.regex(error!.message, /is gzip-compressed but not named \.gz: rename it \(mv .*\.gz\)/, name);
    t.notRegex(error!.message, /iconv/, name);
  }
  await t.throwsAsync(readTrainingData(write('twice.jsonl.gz', zlib.gzipSync(zlib.gzipSync(pairs)))), { message: /twice\.jsonl\.gz is gzipped twice/ });
  const zip = Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0xff, 0xfe, 0x80]), pairs]);
  await t.throwsAsync(readCorpus(write('corpus.txt', zip)), { message: /corpus\.txt is a zip archive, not text: extract/ });
  // Text that merely starts as bzip2's magic does ("BZh") is text.
  t.deepEqual(await readCorpus(write('bzh.txt', Buffer.from('BZh is a word\n'))), ['BZh is a word']);
});
