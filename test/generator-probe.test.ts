// Edge cases of generation found by probing as a user would: options past what the native loop takes (a temperature
// so small the logits overflow, 32-bit counts, 2^53 seeds), an async onText that rejects, arrays with holes,
// Rag.answer with documents or answers that do not fit the generator's positions, the server's /ask with one client's
// question that does not fit, and trainRag options checked before the run.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Generator, Rag, generateQueries, serve, trainRag } from '../lib';
import { FIXTURE, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const LMS = path.resolve(__dirname, 'fixtures', 'tiny-causal-lms');
const LLAMA = path.join(LMS, 'llama'); // 96 positions
const CORPUS = ['The cat sat on the mat.', 'Paris is the capital of France.', 'GPU kernels make search fast.'];

test('generate(): a temperature so small that the logits overflow, and counts past 32 bits or seeds past 2^53, are refused by their option', async (t) => {
  const generator = await Generator.load(LLAMA, { device: 'cpu' });
  try {
    // Was libtorch's NATIVE "probability tensor contains either `inf`, `nan` or element < 0" (a 500 from the server).
    for (const temperature of [1e-40, 1e-300]) {
      const e = await rejection(() => generator.generate(['hello'], { maxNewTokens: 2, temperature }));
      t.is(e.code, 'INVALID_ARGUMENT');
      t.regex(e.message, /^options\.temperature must be 0 \(greedy\) or at least 1e-30/);
    }
    t.is((await generator.generate(['hello'], { maxNewTokens: 2, temperature: 1e-30 }))[0].tokenIds.length, 2);
    // Were the native loop's own messages ("seed must be a non-negative integer" for 2^60).
    t.regex((await rejection(() => generator.generate(['hello'], { temperature: 1, seed: 2 ** 60 }))).message, /^options\.seed must be an integer from 0 to 9007199254740991/);
    t.regex((await rejection(() => generator.generate(['hello'], { temperature: 1, topK: 2 ** 40 }))).message, /^options\.topK must be/);
    t.regex((await rejection(() => generator.generate(['hello'], { maxNewTokens: 1e12 }))).message, /^options\.maxNewTokens must be a positive integer up to 2147483647/);
    // A stop id past 32 bits wrapped to another token (2^32 + 3 stopped at token 3).
    t.regex((await rejection(() => generator.generate(['hello'], { stopTokenIds: [2 ** 32 + 3] }))).message, /^options\.stopTokenIds must be an array of token ids/);
  } finally {
    generator.dispose();
  }
});

test('generate(): an async onText that rejects rejects generate() (no unhandled rejection), which waits for its calls', async (t) => {
  const generator = await Generator.load(LLAMA, { device: 'cpu' });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const failing = generator.generate(['hello', 'world'], {
      maxNewTokens: 4,
      onText: async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        throw new Error('write failed');
      },
    });
    await t.throwsAsync(failing, { message: 'write failed' });
    // Calls an async onText makes are awaited before generate() resolves.
    let running = 0;
    const pieces: string[] = ['', ''];
    const out = await generator.generate(['hello', 'world'], {
      maxNewTokens: 6,
      onText: async (i, text) => {
        running++;
        await new Promise((resolve) => setTimeout(resolve, 2));
        pieces[i] += text;
        running--;
      },
    });
    t.is(running, 0);
    t.deepEqual(pieces, out.map((g) => g.text));
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    generator.dispose();
  }
});

test('generate() and logLikelihood(): an array with holes is refused naming the hole, not a TypeError', async (t) => {
  const generator = await Generator.load(LLAMA, { device: 'cpu' });
  try {
    t.regex((await rejection(() => generator.generate(new Array<string>(2)))).message, /^prompts\[0\] must be a string or a non-empty array/);
    t.regex((await rejection(() => generator.logLikelihood(new Array(2)))).message, /^pairs\[0\] must be/);
  } finally {
    generator.dispose();
  }
});

test('Rag.answer(): a document whose prompt leaves no room, or answers that do not fit after the prompts, are errors naming the question; an answer that does not fit after one document scores 0 there', async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(LLAMA, { device: 'cpu' });
  try {
    const long = Array.from({ length: 60 }, (_, i) => `word${i % 7}`).join(' ');
    const rag = await Rag.create({ retriever, generator, corpus: [...CORPUS, long] });
    // Was generate()'s "prompts[3] is 96 tokens or more".
    const tooLong = await rejection(() => rag.answer(['where is paris'], { k: 4, maxNewTokens: 4 }));
    t.is(tooLong.code, 'INVALID_ARGUMENT');
    t.regex(tooLong.message, /^questions\[0\] with document 3 of the corpus is \d+ tokens or more, leaving none of the generator's 96 positions to generate in: shorten the corpus's documents/);
    const short = await Rag.create({ retriever, generator, corpus: CORPUS });
    // Generation that runs into the model's positions leaves no room for the end-of-sequence token: was
    // logLikelihood()'s "pairs[0] is 97 tokens, ...; shorten its prompt".
    const cut = await rejection(() => short.answer(['where is paris'], { k: 1, maxNewTokens: 200 }));
    t.regex(cut.message, /^questions\[0\]: no answer generated from its documents fits the generator's 96 positions .*: lower maxNewTokens/);
    // A longer document (a prompt of 74 tokens, the others' 65-67) beside short ones: the short ones' answers of 25
    // tokens do not fit after its prompt, and its own answer, cut at the positions, not after it with the end-of-sequence
    // token; each answer scores where it fits (was logLikelihood()'s "pairs[i] is ... tokens" error).
    const medium = Array.from({ length: 10 }, (_, i) => `word${i % 7}`).join(' ');
    const mixed = await Rag.create({ retriever, generator, corpus: [...CORPUS, medium] });
    const [answer] = await mixed.answer(['where is paris'], { k: 4, maxNewTokens: 25 });
    t.true(Number.isFinite(answer.logLikelihood), JSON.stringify(answer));
    t.is(answer.sources.length, 4);
  } finally {
    generator.dispose();
    retriever.dispose();
  }
});

test("/ask: one client's question that does not fit the generator fails its own request only, not the others' sharing its model call", async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(LLAMA, { device: 'cpu' });
  const rag = await Rag.create({ retriever, generator, corpus: CORPUS });
  const server = await serve({ rag, generator, port: 0 });
  const post = async (body: unknown) => {
    const res = await fetch(`${server.url}/ask`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    return { status: res.status, json: (await res.json()) as any };
  };
  try {
    // A question that fits with no document (its prompt then 89 tokens), not with any of the corpus's (98 or more): it
    // reaches the model call, where it is refused (a longer one is refused before the queue: serve-long-questions).
    const words = Array.from({ length: 45 }, () => 'cat').join(' ');
    // The first request takes the model; the next ones wait and share one call.
    const results = await Promise.all([
      post({ question: 'where is paris', k: 2, max_new_tokens: 8 }),
      post({ question: words, k: 2, max_new_tokens: 4 }),
      post({ question: 'what is fast', k: 2, max_new_tokens: 4 }),
      post({ question: ['what sat', 'on what'], k: 2, max_new_tokens: 4 }),
      post({ question: ['what sat', words], k: 2, max_new_tokens: 4 }),
    ]);
    t.deepEqual(
      results.map((r) => r.status),
      [200, 400, 200, 200, 400],
      JSON.stringify(results.map((r) => r.json)),
    );
    t.regex(results[1].json.error, /^"question" with document \d+ of the corpus is 96 tokens or more/);
    t.is(results[3].json.answers.length, 2);
    // Named as the client's request names it, not by its place in the shared call.
    t.regex(results[4].json.error, /^"question\[1\]" with document \d+ of the corpus is 96 tokens or more/);
    // A temperature so small the logits overflow: a 400 naming the field (was a 500 from libtorch).
    const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'hello', temperature: 1e-40, max_tokens: 2 }), headers: { 'Content-Type': 'application/json' } });
    t.is(res.status, 400);
    t.regex(((await res.json()) as any).error.message, /"temperature" must be a number from 0 to 2 \(above 0, at least 1e-30\)/);
  } finally {
    await server.close();
    generator.dispose();
    retriever.dispose();
  }
});

test('trainRag(): onProgress, progressBar and overwrite are checked before the run (a truthy overwrite does not replace the output)', async (t) => {
  const dir = tempDir();
  const output = path.join(dir, 'rag');
  fs.mkdirSync(output);
  fs.writeFileSync(path.join(output, 'keep.txt'), 'mine');
  const base = { retriever: FIXTURE, generator: LLAMA, data: [{ question: 'where is paris', answer: 'France' }], corpus: CORPUS, k: 2, device: 'cpu' as const, progressBar: false };
  // Was a TypeError ("o.onProgress is not a function") after the first step.
  t.regex((await rejection(() => trainRag({ ...base, output: path.join(dir, 'a'), onProgress: 5 as never }))).message, /^options\.onProgress must be a function/);
  t.regex((await rejection(() => trainRag({ ...base, output: path.join(dir, 'b'), progressBar: 'no' as never }))).message, /^options\.progressBar must be true or false/);
  // Was taken as true: the folder was replaced.
  t.regex((await rejection(() => trainRag({ ...base, output, overwrite: 'no' as never }))).message, /^options\.overwrite must be true or false/);
  t.is(fs.readFileSync(path.join(output, 'keep.txt'), 'utf8'), 'mine');
  t.false(fs.existsSync(path.join(dir, 'a')));
});

test('generateQueries(): topK, topP and a too small temperature are refused before the generator loads, also with greedy decoding', async (t) => {
  const base = { generator: path.join(LMS, 'qwen3'), corpus: CORPUS, device: 'cpu' as const };
  // With temperature 0 topK -5 was ignored.
  t.regex((await rejection(() => generateQueries({ ...base, temperature: 0, perDocument: 1, topK: -5 }))).message, /^options\.topK must be an integer >= 0/);
  t.regex((await rejection(() => generateQueries({ ...base, topP: 5 }))).message, /^options\.topP must be a number in \(0, 1\]/);
  t.regex((await rejection(() => generateQueries({ ...base, temperature: 1e-40 }))).message, /^options\.temperature must be 0 \(greedy\) or at least 1e-30/);
  // Checked before the model: a missing generator folder is not what is reported.
  t.regex((await rejection(() => generateQueries({ ...base, generator: '/nonexistent/generator', topK: 1.5 }))).message, /^options\.topK/);
});

test('a generator that names no eos_token_id: scoring whole completions says where to add it, and logLikelihood without it works', async (t) => {
  const dir = path.join(tempDir(), 'llama');
  fs.cpSync(LLAMA, dir, { recursive: true });
  for (const name of ['config.json', 'generation_config.json']) {
    const file = path.join(dir, name);
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    delete json.eos_token_id;
    fs.writeFileSync(file, JSON.stringify(json));
  }
  const generator = await Generator.load(dir, { device: 'cpu' });
  try {
    const pairs = [{ prompt: 'the cat', completion: ' sat' }];
    // The message trainRag and Rag.answer show too: it named an option (endOfSequence) that neither has.
    const e = await rejection(() => generator.logLikelihood(pairs));
    t.is(e.code, 'MODEL_FILES');
    t.regex(e.message, /names no eos_token_id \(generation_config\.json or config\.json\), which scoring a whole completion needs: add the id/);
    t.true(Number.isFinite((await generator.logLikelihood(pairs, { endOfSequence: false }))[0]));
  } finally {
    generator.dispose();
  }
});
