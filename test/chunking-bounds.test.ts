// Bounds that must hold whatever the input: a semantic chunk never passes maxTokens, even where one sentence does (a
// text with no sentence ends, Thai, which has no sentence punctuation, a long URL), and generateQueries refuses counts
// that would put millions of prompts into one generate() call.
import test from 'ava';
import path from 'node:path';
import { Encoder, Generator, generateQueries } from '../lib';
import { semanticChunks, type Embedder } from '../lib/chunking';
import { MAX_GENERATE_ROWS, MAX_PER_DOCUMENT } from '../lib/query-generation';
import { encoderEmbedder } from '../lib/train';
import { FIXTURE } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const LMS = path.join(__dirname, 'fixtures', 'tiny-causal-lms');

/** Every text the same vector (neighbours always similar enough to merge), `count` tokens; countTokens calls counted. */
function counting(count: (text: string) => number): Embedder & { calls: number } {
  return {
    calls: 0,
    embed: async (texts) => texts.map(() => Float32Array.of(1)),
    async countTokens(texts) {
      this.calls++;
      return texts.map(count);
    },
  };
}

/** 2 special tokens and a token per word. */
const words = (text: string) => 2 + (text.match(/\S+/g)?.length ?? 0);

test('a sentence longer than maxTokens is cut at spaces into pieces of at most maxTokens tokens, each as long as fits, with few countTokens calls', async (t) => {
  const sentence = Array.from({ length: 2000 }, (_, i) => `W${i}`).join(' ');
  const embedder = counting(words);
  const chunks = await semanticChunks(`Short one. ${sentence}\nAfter it.`, embedder, { maxTokens: 52 });
  // 50 words a piece, as long as fits: too long to merge with each other or with the short sentences around them.
  const pieces = Array.from({ length: 40 }, (_, k) => Array.from({ length: 50 }, (_, i) => `W${k * 50 + i}`).join(' '));
  t.deepEqual(chunks, ['Short one.', ...pieces, 'After it.']);
  // A binary search would take 11 calls a piece; the first piece's length guides the next ones' probes.
  t.true(embedder.calls <= 2 + 3 * 40, `${embedder.calls} countTokens calls`);
});

test('text without spaces (Thai, CJK) is cut between characters, never inside a surrogate pair or before a combining mark, and nothing is added to it', async (t) => {
  // 2 special tokens and a token per UTF-16 code unit: a surrogate pair is 2, each Thai vowel mark 1.
  const units = (text: string) => 2 + text.length;
  for (const text of ['นี่คือภาษาไทยที่ไม่มีจุด😀กำลังทำ'.repeat(40), '日本語の文章には空白がない𠮷'.repeat(40)]) {
    const chunks = await semanticChunks(text, counting(units), { maxTokens: 12 });
    t.true(chunks.length > 10, `${chunks.length} chunks`);
    t.is(chunks.join(''), text);
    for (const c of chunks) {
      t.true(units(c) <= 12, c);
      t.false(/^[\p{M}\udc00-\udfff]/u.test(c) || /[\ud800-\udbff]$/.test(c), `cut inside a character: ${c}`);
    }
  }
});

test('a word longer than maxTokens within spaced text (a URL) is cut between its characters; the words around it are not', async (t) => {
  // A token per 3 characters of each word, as subword tokenizers cut a word they do not know.
  const subwords = (text: string) => 2 + (text.match(/\S+/g) ?? []).reduce((n, w) => n + Math.ceil([...w].length / 3), 0);
  const url = `https://example.com/${'abcdefghij'.repeat(12)}`;
  const text = `See ${url} for the whole list of options and more`;
  const chunks = await semanticChunks(text, counting(subwords), { maxTokens: 10 });
  for (const c of chunks) {
    t.true(subwords(c) <= 10, c);
    t.true(text.includes(c), `not the document's text: ${c}`);
  }
  t.is(chunks.join('').replace(/\s/g, ''), text.replace(/\s/g, ''));
  // Whole words where they fit; the URL in pieces of 8 tokens' characters (24), joined with nothing between them.
  t.deepEqual(chunks, [
    'See',
    'https://example.com/abcd',
    'efghijabcdefghijabcdefgh',
    'ijabcdefghijabcdefghijab',
    'cdefghijabcdefghijabcdef',
    'ghijabcdefghijabcdefghij',
    'abcdefghijabcdefghij',
    'for the whole list of',
    'options and more',
  ]);
});

test("with a model's embedder, which counts a text's tokens whole, a text with no sentence ends becomes chunks of at most the model's length: chunks the model reads whole", async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const maxTokens = encoder.maxSeqLength;
    const text = Array.from({ length: 30 }, (_, i) => `the model reads word number ${i} and then some more words`).join(' ');
    const embedder = encoderEmbedder(encoder);
    const [whole] = await embedder.countTokens([text]);
    t.true(whole > 10 * maxTokens, `the whole text counts ${whole} tokens, not the model's ${maxTokens}`);
    const chunks = await semanticChunks(text, embedder, { maxTokens });
    t.true(chunks.length > 5, `${chunks.length} chunks`);
    t.is(chunks.join(' '), text);
    const counts = await embedder.countTokens(chunks);
    for (const count of counts) t.true(count <= maxTokens, `${count} tokens`);
    // Each chunk as long as fits: one that reaches the model's length exactly is kept whole, not split again.
    t.true(counts.some((count) => count === maxTokens), `counts ${counts.join(', ')}`);
  } finally {
    encoder.dispose();
  }
});

test("an embedder whose counter stops at maxTokens (as a model's tokenizer does) is detected: a count of exactly maxTokens is not trusted, and chunks stay below it", async (t) => {
  const maxTokens = 12;
  const embedder = counting((text) => Math.min(maxTokens, words(text)));
  const text = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
  const chunks = await semanticChunks(text, embedder, { maxTokens });
  t.is(chunks.join(' '), text);
  for (const chunk of chunks) t.true(words(chunk) < maxTokens, `${chunk}: ${words(chunk)} tokens`);
});

test('semanticChunks refuses a maxTokens that leaves no room beside the special tokens, or is not a positive integer', async (t) => {
  t.regex((await rejection(() => semanticChunks('Some text here.', counting(words), { maxTokens: 2 }))).message, /chunking\.maxTokens 2 leaves no room for text beside the 2 special tokens/);
  t.regex((await rejection(() => semanticChunks('Some text here.', counting(words), { maxTokens: Number.NaN }))).message, /chunking\.maxTokens must be a positive integer/);
});

test('generateQueries refuses a perDocument, batchSize or seed past its limit, naming the option and the limit, before loading the generator', async (t) => {
  const corpus = Array.from({ length: 20 }, (_, i) => `document ${i}`);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ perDocument: 1e6 }, new RegExp(`options\\.perDocument must be a positive integer up to ${MAX_PER_DOCUMENT} .*got number 1000000`)],
    [{ perDocument: 10, batchSize: 1000 }, new RegExp(`options\\.batchSize 1000 × options\\.perDocument 10 is 10000 prompts in one generate\\(\\) call, past the limit of ${MAX_GENERATE_ROWS}.*set batchSize to 409 or less`)],
    [{ batchSize: 1e9 }, /options\.batchSize 1000000000 × options\.perDocument 3/],
    // The second batch (documents 16 to 19) would be seeded past 2^53 - 1.
    [{ seed: Number.MAX_SAFE_INTEGER }, new RegExp(`options\\.seed must be an integer from 0 to ${Number.MAX_SAFE_INTEGER - 16} for 20 documents`)],
  ];
  for (const [options, message] of cases) {
    const e = await rejection(() => generateQueries({ generator: path.join(LMS, 'no-such-model'), corpus, ...options }));
    t.regex(e.message, message, JSON.stringify(options));
  }
});

test("generateQueries' default batchSize takes fewer documents per generate() call where perDocument is large", async (t) => {
  const generator = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu' });
  try {
    const progress: number[] = [];
    const corpus = Array.from({ length: 5 }, (_, i) => `document number ${i}`);
    await generateQueries({ generator, corpus, perDocument: 1000, maxNewTokens: 1, maxDocumentTokens: 4, onProgress: (done) => progress.push(done) });
    // 4096 prompts a call at most: 4 documents of 1000, then the last one.
    t.deepEqual(progress, [0, 4, 5]);
  } finally {
    generator.dispose();
  }
});
