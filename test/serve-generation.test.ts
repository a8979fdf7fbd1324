// coltrast serve's generation routes: /v1/chat/completions and /v1/completions against Generator.generate (the
// tiny random Llama and Qwen3 of test/fixtures/tiny-causal-lms), streamed and not, through OpenAI's own Node client
// too; stop strings, overlapping ones included; /ask against Rag.answer, and a client leaving /ask mid-answer; the
// refusals; the CLI's flags. The tests that compare outputs run serially: requests of two tests could share a model
// call.
import test from 'ava';
import path from 'node:path';
import OpenAI from 'openai';
import { Encoder, Generator, Rag, serve, type Generated, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { runServe } from './helpers/serve-cli';
import { until } from './helpers/wait';

const ROOT = path.resolve(__dirname, '..');
const LLAMA = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama'); // has a chat template
const QWEN3 = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'qwen3'); // has none
const MESSAGES = [
  { role: 'system', content: 'be brief' },
  { role: 'user', content: 'which model searches text fast?' },
];
const CORPUS = ['The cat sat on the mat.', 'A library for training embedding models in node.', 'Paris is the capital of France.', 'GPU kernels make search fast.'];

let generator: Generator;
let retriever: Encoder;
let rag: Rag;
let server: Server;

test.before(async () => {
  generator = await Generator.load(LLAMA, { device: 'cpu' });
  retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  rag = await Rag.create({ retriever, generator, corpus: CORPUS });
  server = await serve({ generator, rag, port: 0, generatorName: 'tiny-llama' });
});

test.after.always(async () => {
  await server?.close();
  generator?.dispose();
  retriever?.dispose();
});

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return { status: res.status, json: await res.json() };
}

/** The events of a server-sent-events response: each `data:` line's JSON, and whether it ended with [DONE]. */
async function events(url: string, body: unknown): Promise<{ events: any[]; done: boolean; contentType: string | null }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  const text = await res.text();
  const data = text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length));
  const done = data[data.length - 1] === '[DONE]';
  return { events: data.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)), done, contentType: res.headers.get('content-type') };
}

test.serial('/v1/chat/completions answers as Generator.generate does with the chat template, with OpenAI usage counts', async (t) => {
  const [expected] = await generator.generate([MESSAGES], { maxNewTokens: 12 });
  const { status, json } = await post(`${server.url}/v1/chat/completions`, { model: 'x', messages: MESSAGES, max_tokens: 12 });
  t.is(status, 200);
  t.is(json.object, 'chat.completion');
  t.regex(json.id, /^chatcmpl-/);
  t.is(json.model, 'tiny-llama');
  t.deepEqual(json.choices, [{ index: 0, message: { role: 'assistant', content: expected.text }, logprobs: null, finish_reason: expected.finishReason }]);
  t.deepEqual(json.usage, { prompt_tokens: expected.promptTokens, completion_tokens: expected.tokenIds.length, total_tokens: expected.promptTokens + expected.tokenIds.length });
  // max_completion_tokens is the newer name of max_tokens; content parts of type text are joined.
  const parts = await post(`${server.url}/v1/chat/completions`, {
    messages: [MESSAGES[0], { role: 'user', content: [{ type: 'text', text: 'which model searches ' }, { type: 'text', text: 'text fast?' }] }],
    max_completion_tokens: 12,
  });
  t.is(parts.json.choices[0].message.content, expected.text);
});

test.serial("OpenAI's Node client: chat completions, plain and streamed, equal generate()'s text", async (t) => {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const [expected] = await generator.generate([MESSAGES], { maxNewTokens: 16 });
  const plain = await client.chat.completions.create({ model: 'tiny-llama', messages: MESSAGES as any, max_tokens: 16 });
  t.is(plain.choices[0].message.content, expected.text);
  const stream = await client.chat.completions.create({ model: 'tiny-llama', messages: MESSAGES as any, max_tokens: 16, stream: true, stream_options: { include_usage: true } });
  const deltas: string[] = [];
  let finish: string | null = null;
  let usage: any;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.content) deltas.push(choice.delta.content);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  t.true(deltas.length > 1, 'the text comes in pieces');
  t.is(deltas.join(''), expected.text);
  t.is(finish, expected.finishReason);
  t.is(usage.completion_tokens, expected.tokenIds.length);
  // Sampled with a seed: what generate() gives with that seed.
  const [sampled] = await generator.generate([MESSAGES], { maxNewTokens: 16, temperature: 0.8, seed: 7 });
  const seeded = await client.chat.completions.create({ model: 'tiny-llama', messages: MESSAGES as any, max_tokens: 16, temperature: 0.8, seed: 7 });
  t.is(seeded.choices[0].message.content, sampled.text);
});

test.serial('/v1/completions: several prompts, plain and streamed, each choice its prompt\'s continuation', async (t) => {
  const prompts = ['model text search', 'a tiny random', 'node library'];
  const expected = await generator.generate(prompts, { maxNewTokens: 6 });
  const { json } = await post(`${server.url}/v1/completions`, { prompt: prompts, max_tokens: 6 });
  t.is(json.object, 'text_completion');
  t.deepEqual(
    json.choices,
    expected.map((g, index) => ({ index, text: g.text, logprobs: null, finish_reason: g.finishReason })),
  );
  t.is(json.usage.completion_tokens, expected.reduce((s, g) => s + g.tokenIds.length, 0));
  const streamed = await events(`${server.url}/v1/completions`, { prompt: prompts, max_tokens: 6, stream: true });
  t.regex(streamed.contentType ?? '', /^text\/event-stream/);
  t.true(streamed.done);
  const texts = prompts.map(() => '');
  const finishes: (string | null)[] = prompts.map(() => null);
  for (const e of streamed.events) {
    for (const c of e.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes[c.index] = c.finish_reason;
    }
  }
  t.deepEqual(
    texts,
    expected.map((g) => g.text),
  );
  t.deepEqual(
    finishes,
    expected.map((g) => g.finishReason),
  );
  // Default: 16 new tokens, OpenAI's default for completions.
  const short = await post(`${server.url}/v1/completions`, { prompt: prompts[0] });
  t.is(short.json.usage.completion_tokens, (await generator.generate([prompts[0]], { maxNewTokens: 16 }))[0].tokenIds.length);
});

test.serial('stop strings end the text before them, plain and streamed, with finish_reason "stop"', async (t) => {
  const [full] = await generator.generate([MESSAGES], { maxNewTokens: 16 });
  const words = full.text.trim().split(/\s+/);
  t.true(words.length >= 3, full.text);
  const stop = ` ${words[2]}`;
  const cut = full.text.slice(0, full.text.indexOf(stop));
  const plain = await post(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 16, stop: [stop, 'never appears'] });
  t.is(plain.json.choices[0].message.content, cut);
  t.is(plain.json.choices[0].finish_reason, 'stop');
  const streamed = await events(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 16, stop });
  t.is(streamed.events.length, 0, 'without stream: true a response is one JSON body');
  const sse = await events(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 16, stop, stream: true });
  const text = sse.events.map((e) => e.choices[0]?.delta?.content ?? '').join('');
  t.is(text, cut);
  t.is(sse.events[sse.events.length - 1].choices[0].finish_reason, 'stop');
});

test.serial('overlapping stop strings end the text where the first to be completed starts, plain and streamed alike', async (t) => {
  const [full] = await generator.generate([MESSAGES], { maxNewTokens: 16 });
  // A two-character stop string across two tokens' texts, inside a longer one that starts a character before it and
  // completes a character after it: the shorter is completed first and ends the text, as vLLM and transformers stop,
  // though the longer starts earlier. Where the tokens' texts end: the text of the first k tokens, for each k. (The
  // streamed pieces join the texts of the steps decoded together, so where they end depends on timing; the stop
  // across pieces is test/serve-stop-strings.test.ts's.)
  let stops: string[] | undefined;
  let cut = '';
  for (let k = 1; k < 16 && !stops; k++) {
    const end = (await generator.generate([MESSAGES], { maxNewTokens: k }))[0].text.length;
    const longer = full.text.slice(end - 2, end + 2);
    const shorter = full.text.slice(end - 1, end + 1);
    if (end >= 2 && longer.length === 4 && full.text.indexOf(longer) === end - 2 && full.text.indexOf(shorter) === end - 1) {
      stops = [longer, shorter];
      cut = full.text.slice(0, end - 1);
    }
  }
  if (!stops) return t.fail(`no such stop strings in ${JSON.stringify(full.text)}`);
  const plain = await post(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 16, stop: stops });
  t.is(plain.json.choices[0].message.content, cut);
  t.is(plain.json.choices[0].finish_reason, 'stop');
  const sse = await events(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 16, stop: stops, stream: true });
  const deltas = sse.events.map((e) => e.choices[0]?.delta?.content ?? '').filter((text) => text !== '');
  t.is(deltas.join(''), cut);
  t.log(`${JSON.stringify(stops)}: streamed in ${deltas.length} pieces`);
  t.is(sse.events[sse.events.length - 1].choices[0].finish_reason, 'stop');
});

test.serial('a stop string ends its prompt\'s generation, plain and streamed; the other prompts of the batch go on; no cancellation is counted', async (t) => {
  // Its own server: /metrics counts its requests only.
  const own = await serve({ generator, port: 0 });
  try {
    const prompts = ['model text search', 'cat dog'];
    const maxTokens = 80;
    const full = await generator.generate(prompts, { maxNewTokens: maxTokens });
    t.deepEqual(
      full.map((g) => [g.tokenIds.length, g.finishReason]),
      [
        [maxTokens, 'length'],
        [maxTokens, 'length'],
      ],
      'without stop strings both run to max_tokens',
    );
    // The first prompt's second word ends its text a few tokens in; the second prompt's text never holds it.
    const stop = ` ${full[0].text.trim().split(/\s+/)[1]}`;
    t.false(full[1].text.includes(stop), `${JSON.stringify(stop)} in ${JSON.stringify(full[1].text)}`);
    const cut = full[0].text.slice(0, full[0].text.indexOf(stop));
    // The tokens it takes to complete the stop string: the generation stops then, or a few steps later (the text is
    // decoded while the model goes on).
    let needed = 1;
    while (!(await generator.generate([prompts[0]], { maxNewTokens: needed }))[0].text.includes(stop)) needed++;
    const body = { prompt: prompts, max_tokens: maxTokens, stop };
    /** The stopped prompt's tokens (the usage's, less the other prompt's max_tokens), each answer checked. */
    const stoppedTokens = async (stream: boolean) => {
      let texts: string[];
      let finishes: (string | null)[];
      let usage: { completion_tokens: number };
      if (stream) {
        const sse = await events(`${own.url}/v1/completions`, { ...body, stream: true, stream_options: { include_usage: true } });
        texts = ['', ''];
        finishes = [null, null];
        for (const e of sse.events) {
          for (const c of e.choices) {
            texts[c.index] += c.text;
            if (c.finish_reason) finishes[c.index] = c.finish_reason;
          }
        }
        usage = sse.events[sse.events.length - 1].usage;
      } else {
        const plain = await post(`${own.url}/v1/completions`, body);
        t.is(plain.status, 200);
        texts = plain.json.choices.map((c: any) => c.text);
        finishes = plain.json.choices.map((c: any) => c.finish_reason);
        usage = plain.json.usage;
      }
      t.deepEqual(texts, [cut, full[1].text], `stream: ${stream}`);
      t.deepEqual(finishes, ['stop', 'length'], `stream: ${stream}`);
      const tokens = usage.completion_tokens - maxTokens;
      t.true(tokens >= needed && tokens <= maxTokens, `stream: ${stream}, ${tokens} tokens`);
      return tokens;
    };
    // Fewer than max_tokens (without the stop, every try generated all 80): the stop string is seen in the text decoded
    // while the model goes on, a few steps behind (4-23 tokens here where 3 were needed), more when this process's
    // thread is starved (52 once under load). Up to five tries each, one of them within three quarters.
    const enough = (n: number) => n <= (maxTokens * 3) / 4;
    for (const stream of [false, true]) {
      const counts: number[] = [];
      while (counts.length < 5 && !counts.some(enough)) counts.push(await stoppedTokens(stream));
      t.log(`stream: ${stream}: ${counts.join(', ')} of ${maxTokens} tokens; ${needed} complete the stop string`);
      t.true(counts.some(enough), `stream: ${stream}: the stopped prompt generated ${counts.join(', ')} of ${maxTokens} tokens in each try`);
    }
    const metrics = await (await fetch(`${own.url}/metrics`)).text();
    t.regex(metrics, /^coltrast_generations_cancelled_total 0$/m);
    t.notRegex(metrics, /^coltrast_requests_cancelled_total\{.*\} [1-9]/m);
    t.is(own.stats().generate.cancelled, 0);
  } finally {
    await own.close();
  }
});

test.serial('/ask answers as Rag.answer does, with its sources', async (t) => {
  const questions = ['what is the capital of France?', 'which library trains embedding models?'];
  const expected = await rag.answer(questions, { k: 2, maxNewTokens: 5 });
  const { status, json } = await post(`${server.url}/ask`, { question: questions, k: 2, max_new_tokens: 5 });
  t.is(status, 200);
  t.deepEqual(
    json.answers,
    expected.map((a, i) => ({ question: questions[i], answer: a.answer, log_likelihood: a.logLikelihood, sources: a.sources })),
  );
  const [beamed] = await rag.answer([questions[0]], { k: 2, maxNewTokens: 5, numBeams: 3 });
  const viaBeams = await post(`${server.url}/ask`, { question: questions[0], k: 2, max_new_tokens: 5, num_beams: 3 });
  t.is(viaBeams.json.answers[0].answer, beamed.answer);
  t.is(viaBeams.json.answers[0].log_likelihood, beamed.logLikelihood);
});

test.serial('concurrent chat requests share model calls and each gets its own answer', async (t) => {
  const prompts = ['model', 'search query', 'tiny bert', 'node', 'gpu kernel fast', 'cat dog'].map((q) => [{ role: 'user', content: q }]);
  const expected = await Promise.all(prompts.map(async (m) => (await generator.generate([m], { maxNewTokens: 8 }))[0].text));
  const before = server.stats().generate;
  const answers = await Promise.all(prompts.map((messages) => post(`${server.url}/v1/chat/completions`, { messages, max_tokens: 8 })));
  t.deepEqual(
    answers.map((a) => a.json.choices[0].message.content),
    expected,
  );
  const after = server.stats().generate;
  t.is(after.inputs - before.inputs, 6);
  t.true(after.largestCall <= 8, 'a call takes at most one generation batch');
});

test('a client that goes away stops its generation, counted in /metrics', async (t) => {
  const small = await serve({ generator, port: 0, generationBatchSize: 2 });
  try {
    // A long request keeps the model busy (four calls of two prompts); a second one waits behind it, and its
    // client gives up while it waits.
    const long = post(`${small.url}/v1/completions`, { prompt: Array.from({ length: 8 }, (_, i) => `model text ${i}`), max_tokens: 60 });
    const gone = new AbortController();
    const waiting = fetch(`${small.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: MESSAGES, max_tokens: 60 }), headers: { 'Content-Type': 'application/json' }, signal: gone.signal });
    // The second request is in the queue (or a call) once the count waiting is odd: the long one's pieces are two
    // prompts each. Then its client goes.
    await until('the chat request to reach the queue', () => small.stats().generate.waiting % 2 === 1, { every: 2 });
    gone.abort();
    t.is(await waiting.then(() => 'answered', (e: Error) => e.name), 'AbortError');
    t.is((await long).status, 200);
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    t.regex(metrics, /^coltrast_generations_cancelled_total 1$/m);
    t.regex(metrics, /^coltrast_requests_cancelled_total\{route="\/v1\/chat\/completions"\} 1$/m);
    // Its prompt either left the queue unrun or stopped in its call: the model took each prompt once at most.
    const stats = small.stats().generate;
    t.is(stats.inputs + stats.cancelled, 9);
    t.is(stats.waiting, 0);
    // The server goes on answering.
    t.is((await post(`${small.url}/v1/completions`, { prompt: 'model', max_tokens: 2 })).status, 200);
  } finally {
    await small.close();
  }
});

test('a client that goes away from /ask stops its answer mid-generation; the question sharing its model call is answered', async (t) => {
  // A generator of its own: its generate() is watched here (which question, how it ended), and the first
  // question's is held so that the next two requests share the next model call.
  const own = await Generator.load(LLAMA, { device: 'cpu' });
  const ownRag = await Rag.create({ retriever, generator: own, corpus: CORPUS });
  const first = 'what is the capital of France?';
  const gone = ['which library trains embedding models?', 'what makes search fast?'];
  const stays = 'where did the cat sit?';
  const ask = { k: 2, max_new_tokens: 20 };
  const [expected] = await ownRag.answer([stays], { k: 2, maxNewTokens: 20 });
  const real = own.generate.bind(own);
  const generations: { question: string; outcome: Promise<string> }[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let generating!: () => void;
  const goneGenerating = new Promise<void>((resolve) => (generating = resolve));
  own.generate = (prompts, options) => {
    const question = [first, ...gone, stays].find((q) => String(prompts[0]).includes(q)) ?? '?';
    let run: Promise<Generated[]>;
    if (question === first) {
      run = held.then(() => real(prompts, options));
    } else if (question === gone[0]) {
      // Its client goes at the first text generated; each piece waits for the client's signal, so the generation is
      // under way when it aborts, and ends with it. (Without a signal it runs to its end.)
      const signal = options?.signal;
      const aborted = signal && new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
      run = real(prompts, { ...options, onText: () => (generating(), aborted) });
    } else {
      run = real(prompts, options);
    }
    generations.push({ question, outcome: run.then(() => 'finished', (e: { code?: string }) => e.code ?? String(e)) });
    return run;
  };
  // Requests join the queue once their questions are counted (Rag.questionLengths), in the order that ends in.
  let counted = 0;
  const questionLengths = ownRag.questionLengths.bind(ownRag);
  ownRag.questionLengths = async (questions, signal) => {
    const lengths = await questionLengths(questions, signal);
    counted++;
    return lengths;
  };
  const small = await serve({ generator: own, rag: ownRag, port: 0 });
  try {
    const answered = post(`${small.url}/ask`, { question: first, ...ask });
    await until('the first question to reach the model', () => generations.length === 1, { every: 2 });
    const client = new AbortController();
    const leaving = fetch(`${small.url}/ask`, { method: 'POST', body: JSON.stringify({ question: gone, ...ask }), headers: { 'Content-Type': 'application/json' }, signal: client.signal });
    await until('the leaving request to be queued', () => counted === 2, { every: 2 });
    const staying = post(`${small.url}/ask`, { question: stays, ...ask });
    await until('the staying request to be queued', () => counted === 3, { every: 2 });
    t.is(small.stats().ask.waiting, 4);
    release();
    await goneGenerating;
    client.abort();
    t.is(await leaving.then(() => 'answered', (e: Error) => e.name), 'AbortError');
    const { status, json } = await staying;
    t.is(status, 200);
    t.is(json.answers[0].answer, expected.answer);
    t.deepEqual(
      json.answers[0].sources.map((s: { index: number }) => s.index),
      expected.sources.map((s) => s.index),
    );
    t.is((await answered).status, 200);
    // The leaving client's first question stopped in its generation, its second never began; the staying
    // client's, in the same model call, was generated after them.
    t.deepEqual(await Promise.all(generations.map(async (g) => [g.question, await g.outcome])), [
      [first, 'finished'],
      [gone[0], 'ABORTED'],
      [stays, 'finished'],
    ]);
    t.like(small.stats().ask, { calls: 2, inputs: 4, waiting: 0 });
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    t.regex(metrics, /^coltrast_requests_cancelled_total\{route="\/ask"\} 1$/m);
    t.regex(metrics, /^coltrast_generations_cancelled_total 2$/m, 'both of the leaving client\'s questions');
  } finally {
    await small.close();
    own.dispose();
  }
});

test('bad generation requests get a status and a message that names the problem', async (t) => {
  const chat = '/v1/chat/completions';
  const cases: [string, unknown, number, RegExp][] = [
    [chat, {}, 400, /"messages" must be a non-empty array/],
    [chat, { messages: [{ content: 'hi' }] }, 400, /"messages\[0\]" must be an object with a "role" string/],
    [chat, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 400, /only text parts are supported/],
    [chat, { messages: MESSAGES, n: 2 }, 400, /"n": 2 is not supported \(only 1\)/],
    [chat, { messages: MESSAGES, presence_penalty: 0.5 }, 400, /"presence_penalty": 0\.5 is not supported/],
    [chat, { messages: MESSAGES, logit_bias: { '5': 10 } }, 400, /"logit_bias" is not supported/],
    [chat, { messages: MESSAGES, temperature: 3 }, 400, /"temperature" must be a number from 0 to 2/],
    [chat, { messages: MESSAGES, top_p: 0 }, 400, /"top_p" must be a number in \(0, 1\]/],
    [chat, { messages: MESSAGES, max_tokens: 0 }, 400, /"max_tokens" must be a positive integer/],
    [chat, { messages: MESSAGES, stop: ['a', 'b', 'c', 'd', 'e'] }, 400, /"stop" must be a non-empty string or an array of up to 4/],
    [chat, { messages: MESSAGES, stream_options: { include_usage: true } }, 400, /"stream_options" is for "stream": true/],
    [chat, { messages: MESSAGES, tools: [] }, 400, /unknown field "tools"/],
    ['/v1/completions', { prompt: [] }, 400, /"prompt" is empty/],
    ['/v1/completions', { prompt: 'a', echo: true }, 400, /"echo": true is not supported/],
    ['/ask', { question: 'q', k: 0 }, 400, /"k" must be a positive integer/],
    ['/ask', {}, 400, /missing field "question"/],
    [chat, { messages: MESSAGES, model: 5 }, 400, /"model" must be a string/],
    [chat, { messages: MESSAGES, user: {} }, 400, /"user" must be a string/],
    ['/v1/completions', { prompt: 'a', model: null, user: ['u'] }, 400, /"user" must be a string/],
  ];
  for (const [route, body, status, message] of cases) {
    const r = await post(`${server.url}${route}`, body);
    t.is(r.status, status, `${route} ${JSON.stringify(body)}`);
    t.regex(route.startsWith('/v1/') ? r.json.error.message : r.json.error, message, `${route} ${JSON.stringify(body)}`);
  }
  // A prompt too long for the model: a 400 naming the request's field (not generate()'s "prompts[i]").
  const words = Array.from({ length: 3000 }, () => 'model').join(' ');
  const long = await post(`${server.url}/v1/completions`, { prompt: words });
  t.is(long.status, 400);
  t.regex(long.json.error.message, /^"prompt" is 96 tokens or more: the model's 96 positions leave no room to generate; shorten it$/);
  const second = await post(`${server.url}/v1/completions`, { prompt: ['model', words] });
  t.regex(second.json.error.message, /^"prompt\[1\]" is 96 tokens or more/);
  const chatLong = await post(`${server.url}${chat}`, { messages: [{ role: 'user', content: words }] });
  t.is(chatLong.status, 400);
  t.regex(chatLong.json.error.message, /^"messages" \(with the chat template\) is 96 tokens or more/);
  // Refused before the queue: the requests it would have shared a model call with are answered.
  const together = await Promise.all([
    post(`${server.url}/v1/completions`, { prompt: words, max_tokens: 4 }),
    ...['model', 'search'].map((prompt) => post(`${server.url}/v1/completions`, { prompt, max_tokens: 4 })),
  ]);
  t.deepEqual(
    together.map((r) => r.status),
    [400, 200, 200],
  );

  const qwen = await Generator.load(QWEN3, { device: 'cpu' });
  const bare = await serve({ generator: qwen, port: 0 });
  try {
    const noTemplate = await post(`${bare.url}/v1/chat/completions`, { messages: MESSAGES });
    t.is(noTemplate.status, 400);
    t.regex(noTemplate.json.error.message, /has no chat template .*: send text to \/v1\/completions/);
    t.is((await post(`${bare.url}/v1/completions`, { prompt: 'model', max_tokens: 2 })).status, 200);
    const noRag = await post(`${bare.url}/ask`, { question: 'q' });
    t.is(noRag.status, 404);
    t.regex(noRag.json.error, /\/ask needs a generator and a corpus: start the server with them \(coltrast serve --generator <dir\|hub id> --corpus <file>\)/);
    const noEmbedder = await post(`${bare.url}/v1/embeddings`, { input: 'a' });
    t.is(noEmbedder.status, 404);
    const models: any = await (await fetch(`${bare.url}/v1/models`)).json();
    t.deepEqual(
      models.data.map((m: any) => m.id),
      ['qwen3'],
    );
  } finally {
    await bare.close();
    qwen.dispose();
  }
  const noGenerator = await serve({ encoder: retriever, port: 0 });
  try {
    const r = await post(`${noGenerator.url}/v1/chat/completions`, { messages: MESSAGES });
    t.is(r.status, 404);
    t.regex(r.json.error.message, /needs a causal language model: start the server with one \(coltrast serve --generator/);
  } finally {
    await noGenerator.close();
  }
});

test('coltrast serve: --generator and --corpus serve chat and /ask; their flags are checked', async (t) => {
  for (const [args, message] of [
    [['--corpus', 'docs.txt'], /--corpus needs --generator/],
    [['--generator', LLAMA, '--chat'], /--template, --chat and --system shape \/ask's prompts: give --corpus too/],
    [['--no-model'], /--no-model needs --reranker <cross-encoder> or --generator <causal LM>/],
    [['--no-model', '--generator', LLAMA, '--corpus', 'docs.txt'], /--no-model serves a reranker or a generator alone/],
    [['--generator', LLAMA, '--generation-batch', '0'], /--generation-batch must be a positive integer/],
  ] as const) {
    const r = await runServe([...args]);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message);
  }
});
