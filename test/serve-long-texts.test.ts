// coltrast serve tokenizes each request as it arrives, before its batch queue (BatchQueue's prepare, as
// text-embeddings-inference's tokenization workers): a model call only pads and runs what is ready, so that a short
// /embed is never batched behind the tokenizing of huge ones. The vectors are embed()'s, bit for bit (pooled, token
// vectors, prompts and tasks), a cross-encoder's scores predict()'s; the queue keeps its limits, cancellation and
// errors with a preparation stage (deterministically, with a held preparation); a client gone while its huge texts
// wait on the tokenizer's long lane has them never tokenized. Latencies are compared with a same-run baseline only.
import test from 'ava';
import net from 'node:net';
import path from 'node:path';
import { CrossEncoder, Encoder, serve, type EmbedOptions, type Server } from '../lib';
import { BatchQueue } from '../lib/serve';
import { TextTokenizer } from '../lib/tokenizer';
import { FIXTURE } from './helpers/fixture';
import { longText as text, postJson } from './helpers/long-texts';
import { tick } from './helpers/queue';
import { until } from './helpers/wait';
import { makeSmallMultiVector } from './helpers/vectors';

const CE = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const TEXTS = ['fast search over many documents', '', 'a tiny random bert', text(3000, 2), 'node library for training embedding models on the gpu', text(40, 5)];

let enc: Encoder;
let ce: CrossEncoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  ce = await CrossEncoder.load(CE, { device: 'cpu', threads: 1 });
});
test.after.always(() => {
  enc?.dispose();
  ce?.dispose();
});

const post = (server: Server, route: string, body: unknown, signal?: AbortSignal) => postJson(`${server.url}${route}`, body, signal);

test('embedCounting of texts prepared ahead gives embed()\'s vectors bit for bit, pooled, cut and prompted, and token vectors of queries and documents', async (t) => {
  const same = async (e: Encoder, options: EmbedOptions) => {
    const prepared = await e.prepare(TEXTS, options);
    const { result, tokens } = await e.embedCounting({ prepared }, options);
    t.deepEqual(result, await e.embed(TEXTS, options as any), JSON.stringify(options));
    t.deepEqual(tokens, prepared.map((p) => p.tokens));
    t.deepEqual(tokens, (await e.embedCounting(TEXTS, options)).tokens);
  };
  await same(enc, {});
  await same(enc, { batchSize: 2, normalize: false, prompt: 'query: ' });
  await same(enc, { task: 'query', truncateDim: 8, normalize: true });
  await same(enc, { output: 'tokens', task: 'document' });
  // Prepared under other options (here, another prompt), they are refused rather than embedded as they were tokenized.
  const prepared = await enc.prepare(TEXTS, { prompt: 'a: ' });
  await t.throwsAsync(enc.embedCounting({ prepared }, { prompt: 'b: ' }), { message: /prepared by another Encoder, or with another task, prompt or output/ });
  const multi = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  try {
    await makeSmallMultiVector(multi);
    await same(multi, { output: 'tokens', task: 'query' }); // expanded queries
    await same(multi, { output: 'tokens', task: 'document' });
  } finally {
    multi.dispose();
  }
  const pairs = TEXTS.map((d): [string, string] => ['what is a tiny bert', d]);
  t.deepEqual(await ce.predictPrepared(await ce.preparePairs(pairs), { batchSize: 2 }), await ce.predict(pairs, { batchSize: 2 }));
});

test('/embed, /embed_all and /rerank answer with the library\'s vectors and scores, bit for bit, and usage counts the tokens read', async (t) => {
  const server = await serve({ encoder: enc, reranker: ce, port: 0 });
  const multi = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  await makeSmallMultiVector(multi);
  const mv = await serve({ encoder: multi, port: 0 });
  try {
    const pooled = await enc.embed(TEXTS, { task: 'query' });
    const embed = await post(server, '/embed', { inputs: TEXTS, task: 'query', normalize: true });
    t.is(embed.status, 200);
    t.deepEqual(embed.json.map((v: number[]) => Float32Array.from(v)), Array.from({ length: TEXTS.length }, (_, i) => pooled.data.slice(i * enc.dimension, (i + 1) * enc.dimension)));
    const prompted = await enc.embed(TEXTS, { prompt: 'query: ' });
    const openai = await post(server, '/v1/embeddings', { input: TEXTS, prompt: 'query: ' });
    t.deepEqual(openai.json.data.map((d: { embedding: number[] }) => Float32Array.from(d.embedding)), Array.from({ length: TEXTS.length }, (_, i) => prompted.data.slice(i * enc.dimension, (i + 1) * enc.dimension)));
    const used = (await enc.embedCounting(TEXTS, { prompt: 'query: ' })).tokens.reduce((a, b) => a + b, 0);
    t.deepEqual(openai.json.usage, { prompt_tokens: used, total_tokens: used });
    for (const task of ['query', 'document'] as const) {
      const tokens = await multi.embed(TEXTS, { output: 'tokens', task });
      const all = await post(mv, '/embed_all', { inputs: TEXTS, task });
      t.is(all.status, 200);
      t.deepEqual(all.json.map((m: number[][]) => Float32Array.from(m.flat())), tokens.map((m) => m.data), task);
    }
    const scores = (await ce.predict(TEXTS.map((d): [string, string] => ['a tiny bert', d]))).data;
    const rerank = await post(server, '/rerank', { query: 'a tiny bert', texts: TEXTS });
    t.deepEqual(rerank.json.map((r: { index: number; score: number }) => [r.index, Math.fround(r.score)]).sort((a: number[], b: number[]) => a[0] - b[0]), Array.from(scores, (s, i) => [i, s]));
  } finally {
    await server.close();
    await mv.close();
    multi.dispose();
  }
});

/** A BatchQueue of numbers whose preparation (each input times ten) waits for the test to let it go, and fails for a negative input. */
function preparedQueue(maxItems: number, maxWaiting: number) {
  const calls: number[][] = [];
  const preparing: { inputs: number[]; signal: AbortSignal | undefined; go: () => void }[] = [];
  const queue = new BatchQueue<number, number, number>(
    async (_, items) => {
      calls.push(items);
      return items.map((x) => x + 1);
    },
    maxItems,
    maxWaiting,
    (_, inputs, signal) =>
      new Promise((resolve, reject) => {
        preparing.push({ inputs, signal, go: () => (inputs.some((x) => x < 0) ? reject(new Error(`cannot prepare ${inputs.join(', ')}`)) : resolve(inputs.map((x) => x * 10))) });
      }),
  );
  return { queue, calls, preparing };
}

test('BatchQueue with a preparation: a request prepared first runs first, batched with whatever else is ready; preparing inputs count towards maxQueue; a failed preparation answers its own request only; a client gone while prepared leaves nothing to run', async (t) => {
  const { queue, calls, preparing } = preparedQueue(8, 10);
  const outcome = (p: Promise<number[]>): Promise<number[] | string> => p.then((out) => out, (e: { status?: number; message: string }) => `${e.status ?? ''}: ${e.message}`);
  const huge = outcome(queue.submit('k', [1, 2, 3]));
  const gone = new AbortController();
  const abandoned = outcome(queue.submit('k', [4, 5], gone.signal));
  const broken = outcome(queue.submit('k', [-1]));
  const short = outcome(queue.submit('k', [6]));
  t.is(preparing.length, 4, 'each request is prepared as it arrives, concurrently');
  t.is(queue.stats().waiting, 7);
  // Over maxQueue, counting the inputs still being prepared: 503 at once, nothing prepared.
  t.regex(String(await outcome(queue.submit('k', [7, 8, 9, 10]))), /^503: the server is busy: 7 inputs are waiting \(maxQueue 10\)/);
  t.is(preparing.length, 4);
  // The short request is ready first: it runs at once, alone, not behind the huge one still being prepared.
  preparing[3].go();
  t.deepEqual(await short, [61]);
  t.deepEqual(calls, [[60]]);
  // A client gone while its inputs are prepared: its preparation's signal aborts, its inputs leave the count, and
  // what the preparation gives later is dropped.
  gone.abort();
  t.true(preparing[1].signal!.aborted);
  t.is(await abandoned, '499: the client went away before its answer was ready');
  t.like(queue.stats(), { waiting: 4, cancelled: 2 });
  preparing[1].go();
  // A preparation that fails answers its own request with its error; the others go on.
  preparing[2].go();
  t.is(await broken, ': cannot prepare -1');
  preparing[0].go();
  t.deepEqual(await huge, [11, 21, 31]);
  await tick();
  t.deepEqual(calls, [[60], [10, 20, 30]], 'nothing ran for the client that went away, nor for the failed preparation');
  t.deepEqual(queue.stats(), { calls: 2, inputs: 4, largestCall: 3, waiting: 0, cancelled: 2 });
});

test('a long text whose signal aborts while it waits its turn on the tokenizer\'s long lane is never tokenized', async (t) => {
  const tokenizer = await TextTokenizer.load(path.join(FIXTURE, 'tokenizer.json'), 24, false);
  try {
    const huge = text(400_000, 1);
    const first = tokenizer.encode([huge]); // holds the long lane
    const gone = new AbortController();
    const waiting = tokenizer.encode([text(300_000, 2)], undefined, gone.signal);
    const pair = tokenizer.encodePairs([['q', text(300_000, 3)]], undefined, gone.signal);
    gone.abort();
    await t.throwsAsync(waiting, { code: 'ABORTED', message: /the tokenizer's encode was aborted \(its signal\) before it began/ });
    await t.throwsAsync(pair, { code: 'ABORTED', message: /the tokenizer's encodePairs was aborted/ });
    // The lane goes on: the one ahead and the next one are tokenized as ever.
    const [ahead] = await first;
    t.is(ahead.ids.length, 24);
    t.deepEqual(await tokenizer.encode([huge]), [ahead]);
    // An aborted signal before the call: nothing sent, short texts too.
    await t.throwsAsync(tokenizer.encode(['short'], undefined, gone.signal), { code: 'ABORTED' });
  } finally {
    tokenizer.dispose();
  }
});

// Serial: the other tests' tokenizing would share the cores with it.
test.serial('a short /embed sent after four huge ones is answered without waiting for their tokenizing; clients gone have their huge texts never tokenized', async (t) => {
  const server = await serve({ encoder: enc, port: 0 });
  const huge = text(800_000, 1);
  try {
    await post(server, '/embed', { inputs: 'warm up' });
    const alone = await post(server, '/embed', { inputs: huge }); // the same-run baseline: one huge request, nothing else running
    t.is(alone.status, 200);
    let answered = false;
    const four = Promise.all([1, 2, 3, 4].map(() => post(server, '/embed', { inputs: huge }))).finally(() => (answered = true));
    const waits: number[] = [];
    while (!answered) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const short = await post(server, '/embed', { inputs: 'the cat sat' });
      t.is(short.status, 200);
      waits.push(short.ms);
    }
    for (const { json } of await four) t.deepEqual(json, alone.json);
    const worst = Math.max(...waits);
    t.log(`one /embed of ${huge.length} characters: ${alone.ms.toFixed(0)} ms; a short one while four ran: ${waits.length} requests, the slowest ${worst.toFixed(0)} ms`);
    t.true(waits.length > 0);
    t.true(worst < alone.ms / 3, `a short /embed waited ${worst.toFixed(0)} ms behind huge ones that take ${alone.ms.toFixed(0)} ms each`);

    // Eight clients go while their huge texts wait on the long lane behind another's: theirs are never tokenized, so
    // a huge request sent after them waits for the one ahead only, as one sent behind a single huge one does (the
    // same-run baseline), not for eight more.
    const queued = (n: number) => until(`${n} inputs in the embed queue (preparation included)`, () => server.stats().embed.waiting >= n);
    const ahead = post(server, '/embed', { inputs: huge });
    await queued(1);
    const behind = await post(server, '/embed', { inputs: huge });
    await ahead;
    const before = server.stats().embed.cancelled;
    let keptDone = false;
    const kept = post(server, '/embed', { inputs: huge }).finally(() => (keptDone = true));
    await queued(1);
    const clients = Array.from({ length: 8 }, () => new AbortController());
    const left = clients.map((c) => post(server, '/embed', { inputs: huge }, c.signal).catch((e: Error) => e.name));
    // Each being tokenized, or waiting for the long lane; `kept` too unless it was answered before they all came in (a
    // loaded CI machine once took longer to send the eight than the server to answer it).
    await until(`${clients.length} inputs in the embed queue, and the one before them unless answered`, () => server.stats().embed.waiting >= clients.length + (keptDone ? 0 : 1));
    for (const c of clients) c.abort();
    t.deepEqual(await Promise.all(left), clients.map(() => 'AbortError'));
    const after = await post(server, '/embed', { inputs: huge });
    t.is((await kept).status, 200);
    t.is(after.status, 200);
    t.is(server.stats().embed.cancelled - before, 8);
    t.log(`a huge /embed sent behind one: ${behind.ms.toFixed(0)} ms; behind one and eight whose clients went: ${after.ms.toFixed(0)} ms`);
    t.true(after.ms < behind.ms + alone.ms, `a huge /embed took ${after.ms.toFixed(0)} ms (${behind.ms.toFixed(0)} ms behind one alone): the huge texts of clients gone were tokenized (one takes ${alone.ms.toFixed(0)} ms)`);
  } finally {
    await server.close();
  }
});

test('a compressed body gets its 415 before it is read, and the connection is closed rather than drained', async (t) => {
  const server = await serve({ encoder: enc, port: 0 });
  try {
    // A raw connection (Node's client would ask for Connection: close itself): the headers of a 32 MiB body, none of
    // it sent. A server that reads the refused body to its end keeps the connection open for it.
    const socket = net.connect(server.port, '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
    socket.on('error', () => {}); // a reset once the server closes is as good as an end
    const closed = new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000).unref();
    });
    socket.write(`POST /embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${32 << 20}\r\n\r\n`);
    const wasClosed = await closed;
    socket.destroy();
    t.regex(answer, /^HTTP\/1\.1 415 /);
    t.regex(answer, /\r\nConnection: close\r\n/i);
    t.true(answer.endsWith('{"error":"Content-Encoding gzip is not supported: send the request body uncompressed","error_type":"invalid_request_error"}'), answer);
    t.true(wasClosed, 'the server closed the connection after its answer');
  } finally {
    await server.close();
  }
});
