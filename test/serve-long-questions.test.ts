// coltrast serve counts each /ask request's questions as it arrives, before the ask queue (as it checks /v1's prompts
// before theirs): a question that cannot fit the generator even with no document is refused there, with a 400 naming
// its field, and is never embedded for retrieval nor tokenized in each of its k prompts inside a model call that other
// clients' questions share, so a short /ask is not held behind huge ones. A question that fits is answered as
// Rag.answer answers it; one that fits alone but not with its documents is still refused in its model call; a client
// gone while its question waits on the tokenizer's long lane leaves nothing queued and its text is never tokenized.
// Latencies are compared with a same-run baseline only.
import test from 'ava';
import path from 'node:path';
import { Encoder, Generator, Rag, serve, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { longText as text, postJson, watchingTokenizer } from './helpers/long-texts';
import { until } from './helpers/wait';

const LLAMA = path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama'); // 96 positions, a chat template
const CORPUS = ['The cat sat on the mat.', 'A library for training embedding models in node.', 'Paris is the capital of France.', 'GPU kernels make search fast.'];
const SHORT = 'where did the cat sit?';
const refusal = (field: string) => `${field} is 96 tokens or more in /ask's prompt with no document: the generator's 96 positions leave no room to generate; shorten it`;

let retriever: Encoder;
let generator: Generator;
let rag: Rag;
test.before(async () => {
  retriever = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  generator = await Generator.load(LLAMA, { device: 'cpu', threads: 1 });
  rag = await Rag.create({ retriever, generator, corpus: CORPUS });
});
test.after.always(() => {
  generator?.dispose();
  retriever?.dispose();
});

const post = (server: Server, body: unknown, signal?: AbortSignal) => postJson(`${server.url}/ask`, body, signal);

/** Rag.answer's answers as /ask gives them. */
async function expected(questions: string[], k: number, maxNewTokens: number, on = rag): Promise<unknown[]> {
  const answers = await on.answer(questions, { k, maxNewTokens });
  return answers.map((a, i) => ({ question: questions[i], answer: a.answer, log_likelihood: a.logLikelihood, sources: a.sources }));
}

// Serial: the other tests' tokenizing would share the cores with it.
test.serial('a short /ask sent after four with huge questions is answered without waiting for them, which are refused before the queue', async (t) => {
  const server = await serve({ generator, rag, port: 0 });
  const huge = text(1_000_000, 1);
  const ask = { k: 2, max_new_tokens: 4 };
  const answers = await expected([SHORT], 2, 4);
  try {
    await post(server, { question: 'warm up', ...ask });
    const alone = await post(server, { question: huge, ...ask }); // the same-run baseline: one huge request, nothing else running
    t.is(alone.status, 400);
    let done = false;
    const four = Promise.all([1, 2, 3, 4].map(() => post(server, { question: huge, ...ask }))).finally(() => (done = true));
    const waits: number[] = [];
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const short = await post(server, { question: SHORT, ...ask });
      t.is(short.status, 200);
      t.deepEqual(short.json.answers, answers);
      waits.push(short.ms);
    }
    const worst = Math.max(...waits);
    t.log(`one /ask of a ${huge.length}-character question: ${alone.ms.toFixed(0)} ms; a short one while four ran: ${waits.length} requests, the slowest ${worst.toFixed(0)} ms`);
    t.true(waits.length > 0);
    // Held behind them, it would wait at least one huge request's time (each embedded and tokenized k times in a call).
    t.true(worst < alone.ms / 2, `a short /ask waited ${worst.toFixed(0)} ms behind huge ones that take ${alone.ms.toFixed(0)} ms each`);
    for (const { status, json } of [alone, ...(await four)]) {
      t.is(status, 400);
      t.is(json.error, refusal('"question"'));
    }
    // The huge questions never reached a model call, and left the queue's counts as they were.
    t.like(server.stats().ask, { calls: 1 + waits.length, inputs: 1 + waits.length, waiting: 0, cancelled: 0 });
  } finally {
    await server.close();
  }
});

// Serial: the long lane is the process's, and the texts sent to the tokenizer's worker are watched.
test.serial('a client gone while its huge question waits on the tokenizer\'s long lane leaves nothing queued, and its question is never tokenized', async (t) => {
  const server = await serve({ generator, rag, port: 0 });
  try {
    await watchingTokenizer(async (sent) => {
      const holder = retriever.tokenize([text(800_000, 1)]); // holds the long lane
      const client = new AbortController();
      const leaving = post(server, { question: text(300_001, 2), k: 2, max_new_tokens: 4 }, client.signal);
      await until('the question to be counted', () => server.stats().ask.waiting === 1, { every: 2 });
      client.abort();
      t.is(await leaving.then(() => 'answered', (e: Error) => e.name), 'AbortError');
      await until('the question to leave the queue', () => server.stats().ask.waiting === 0, { every: 2 });
      t.like(server.stats().ask, { calls: 0, inputs: 0, cancelled: 1 });
      await holder;
      // The long lane takes its requests in turn: once one sent after the question's is answered, it has had its turn.
      await retriever.tokenize([text(200_000, 3)]);
      t.true(sent.includes(800_000) && sent.includes(200_000), `sent: ${sent}`);
      t.deepEqual(sent.filter((n) => n > 300_000 && n < 301_000), [], 'the question, in its prompt or alone, was never sent to the tokenizer');
    });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    t.regex(metrics, /^coltrast_requests_cancelled_total\{route="\/ask"\} 1$/m);
    t.regex(metrics, /^coltrast_generations_cancelled_total 1$/m);
    // The server goes on answering.
    const after = await post(server, { question: SHORT, k: 2, max_new_tokens: 4 });
    t.is(after.status, 200);
    t.deepEqual(after.json.answers, await expected([SHORT], 2, 4));
  } finally {
    await server.close();
  }
});

test('/ask refuses a question that fits no document up front, naming its field, with the chat template too; one that fits alone but not with its document is still refused in its model call', async (t) => {
  const server = await serve({ generator, rag, port: 0 });
  const words = Array.from({ length: 200 }, () => 'cat').join(' ');
  try {
    const one = await post(server, { question: words, k: 2, max_new_tokens: 4 });
    t.is(one.status, 400);
    t.is(one.json.error, refusal('"question"'));
    // A request's questions are refused together: the one that fits is not answered either.
    const second = await post(server, { question: [SHORT, text(200_000, 4)], k: 2, max_new_tokens: 4 });
    t.is(second.status, 400);
    t.is(second.json.error, refusal('"question[1]"'));
    t.like(server.stats().ask, { calls: 0, inputs: 0, waiting: 0, cancelled: 0 });
    // Questions that fit are answered as Rag.answer answers them.
    const fits = await post(server, { question: [SHORT, 'what is the capital of France?'], k: 3, max_new_tokens: 5 });
    t.is(fits.status, 200);
    t.deepEqual(fits.json.answers, await expected([SHORT, 'what is the capital of France?'], 3, 5));
  } finally {
    await server.close();
  }
  // The user's message in the chat template: counted as rendered.
  const chat = await Rag.create({ retriever, generator, corpus: CORPUS, chat: true });
  const chatServer = await serve({ generator, rag: chat, port: 0 });
  try {
    const refused = await post(chatServer, { question: words, k: 2, max_new_tokens: 4 });
    t.is(refused.status, 400);
    t.is(refused.json.error, refusal('"question"'));
    const answered = await post(chatServer, { question: SHORT, k: 2, max_new_tokens: 4 });
    t.is(answered.status, 200);
    t.deepEqual(answered.json.answers, await expected([SHORT], 2, 4, chat));
  } finally {
    await chatServer.close();
  }
  // A question that fits with no document, but not with the corpus's long one: refused in its model call, as before.
  const long = await Rag.create({ retriever, generator, corpus: [Array.from({ length: 60 }, (_, i) => `word${i % 7}`).join(' ')] });
  const longServer = await serve({ generator, rag: long, port: 0 });
  try {
    const refused = await post(longServer, { question: 'where is paris', k: 1, max_new_tokens: 4 });
    t.is(refused.status, 400);
    t.regex(refused.json.error, /^"question" with document 0 of the corpus is 96 tokens or more, leaving none of the generator's 96 positions to generate in/);
    t.like(longServer.stats().ask, { calls: 1, inputs: 1, waiting: 0 });
  } finally {
    await longServer.close();
  }
});
