// coltrast serve / serve(): every route's answer against the library call it stands for (embed, rank, search),
// OpenAI's own Node client against /v1/embeddings, batching across requests (BatchQueue, deterministically),
// every refusal with its status and message, and the CLI from start to SIGTERM. The tests that compare vectors
// run serially: a request batched with another test's texts is padded differently (equal to float rounding only).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { ColtrastError, CrossEncoder, Encoder, Index, serve, type IndexDoc, type Server } from '../lib';
import { FIXTURE, maxAbsDiff, tempDir } from './helpers/fixture';
import { heldQueue, tick } from './helpers/queue';
import { runServe, startServe } from './helpers/serve-cli';
import { makeSmallMultiVector, rejection, rows } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const CE = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'st');
const projects = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8')).projects;
const DOCS: IndexDoc[] = projects.flatMap((p: any) =>
  p.readme_content.split(/\n\n+/).map((text: string, i: number) => ({ id: `${p.project_id}#${i}`, text, metadata: { project: p.project_id } })),
);
const TEXTS = ['fast search over many documents', 'a tiny random bert', '', 'node library for training embedding models on the gpu'];

let enc: Encoder;
let ce: CrossEncoder;
let index: Index;
let server: Server;

test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  ce = await CrossEncoder.load(CE, { device: 'cpu' });
  index = await Index.build(enc, DOCS, { lateInteraction: true });
  server = await serve({ encoder: enc, reranker: ce, index, port: 0, modelName: 'tiny-bert' });
});

test.after.always(async () => {
  await server?.close();
  enc?.dispose();
  ce?.dispose();
});

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(url, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'Content-Type': 'application/json', ...headers } });
  const text = await res.text();
  return { status: res.status, json: res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text, headers: res.headers };
}

test.serial('/v1/embeddings returns what embed() returns, with OpenAI usage counts', async (t) => {
  const { status, json } = await post(`${server.url}/v1/embeddings`, { input: TEXTS, model: 'whatever' });
  t.is(status, 200);
  t.is(json.object, 'list');
  t.is(json.model, 'tiny-bert');
  const expected = rows(await enc.embed(TEXTS));
  t.deepEqual(
    json.data.map((d: any) => d.index),
    [0, 1, 2, 3],
  );
  json.data.forEach((d: any, i: number) => {
    t.is(d.object, 'embedding');
    t.is(maxAbsDiff(d.embedding, expected[i]), 0);
  });
  const tokens = (await enc.tokenize(TEXTS)).reduce((s, ids) => s + ids.length, 0);
  t.deepEqual(json.usage, { prompt_tokens: tokens, total_tokens: tokens });
  // One string is one input.
  const one = await post(`${server.url}/v1/embeddings`, { input: TEXTS[0] });
  t.is(maxAbsDiff(one.json.data[0].embedding, rows(await enc.embed([TEXTS[0]]))[0]), 0);
});

test("OpenAI's Node client embeds through the server (base64 by default) and gets embed()'s vectors", async (t) => {
  const keyed = await serve({ encoder: enc, port: 0, apiKey: 'sk-test', modelName: 'tiny-bert' });
  try {
    const client = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sk-test', maxRetries: 0 });
    const r = await client.embeddings.create({ model: 'tiny-bert', input: TEXTS });
    const expected = rows(await enc.embed(TEXTS));
    r.data.forEach((d, i) => t.is(maxAbsDiff(d.embedding, expected[i]), 0));
    const short = await client.embeddings.create({ model: 'tiny-bert', input: TEXTS[0], dimensions: 8, encoding_format: 'float' });
    const head = expected[0].slice(0, 8);
    const norm = Math.hypot(...head);
    t.true(maxAbsDiff(short.data[0].embedding, head.map((x) => x / norm)) < 1e-6, 'dimensions: the first 8 entries, normalized again');
    const models = await client.models.list();
    t.deepEqual(
      models.data.map((m) => m.id),
      ['tiny-bert'],
    );
    const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    const error = await t.throwsAsync(wrong.embeddings.create({ model: 'tiny-bert', input: 'x' }));
    t.is((error as any).status, 401);
    t.regex(error!.message, /missing or wrong API key/);
    t.is((await fetch(`${keyed.url}/health`)).status, 200, '/health needs no key');
  } finally {
    await keyed.close();
  }
});

test.serial('prompts, normalization and dimensions in /v1/embeddings and /embed equal the embed() options they stand for', async (t) => {
  const prompted = await post(`${server.url}/v1/embeddings`, { input: TEXTS, prompt: 'query: ' });
  rows(await enc.embed(TEXTS, { prompt: 'query: ' })).forEach((v, i) => t.is(maxAbsDiff(prompted.json.data[i].embedding, v), 0));
  const raw = await post(`${server.url}/embed`, { inputs: TEXTS, normalize: false });
  rows(await enc.embed(TEXTS, { normalize: false })).forEach((v, i) => t.is(maxAbsDiff(raw.json[i], v), 0));
  // text-embeddings-inference normalizes by default.
  const tei = await post(`${server.url}/embed`, { inputs: TEXTS[1], truncate: true });
  t.is(maxAbsDiff(tei.json[0], rows(await enc.embed([TEXTS[1]], { normalize: true }))[0]), 0);
  const b64 = await post(`${server.url}/v1/embeddings`, { input: TEXTS.slice(0, 2), encoding_format: 'base64' });
  const decoded = new Float32Array(Uint8Array.from(Buffer.from(b64.json.data[1].embedding, 'base64')).buffer);
  t.is(maxAbsDiff(decoded, rows(await enc.embed(TEXTS.slice(0, 2)))[1]), 0);
  const cut = await post(`${server.url}/embed`, { inputs: [TEXTS[0]], dimensions: 5, normalize: false });
  t.is(maxAbsDiff(cut.json[0], rows(await enc.embed([TEXTS[0]], { normalize: false }))[0].slice(0, 5)), 0, 'not normalized: the first 5 entries as they are');
});

test.serial('/embed_all returns each text\'s token vectors, as embed({ output: "tokens" })', async (t) => {
  const { status, json } = await post(`${server.url}/embed_all`, { inputs: TEXTS });
  t.is(status, 200);
  const expected = await enc.embed(TEXTS, { output: 'tokens' });
  json.forEach((tokens: number[][], i: number) => {
    t.is(tokens.length, expected[i].dims[0]);
    t.is(maxAbsDiff(tokens.flat(), expected[i].data), 0);
  });
});

test.serial('/rerank (text-embeddings-inference) and /v1/rerank (Jina, Cohere, vLLM) rank as CrossEncoder.rank', async (t) => {
  const query = 'which project trains a retrieval model?';
  const texts = DOCS.slice(0, 7).map((d) => d.text);
  const expected = await ce.rank(query, texts);
  const tei = await post(`${server.url}/rerank`, { query, texts, return_text: true });
  t.is(tei.status, 200);
  t.deepEqual(
    tei.json.map((r: any) => r.index),
    expected.map((r) => r.index),
  );
  tei.json.forEach((r: any, i: number) => {
    t.is(r.score, expected[i].score);
    t.is(r.text, texts[r.index]);
  });
  const logits = await ce.predict(texts.map((d) => [query, d]), { activation: 'identity' });
  const raw = await post(`${server.url}/rerank`, { query, texts, raw_scores: true });
  raw.json.forEach((r: any) => t.is(r.score, logits.data[r.index]));
  const jina = await post(`${server.url}/v1/rerank`, { model: 'x', query, documents: texts.map((text, i) => (i % 2 ? { text } : text)), top_n: 3 });
  t.is(jina.status, 200);
  t.deepEqual(
    jina.json.results,
    expected.slice(0, 3).map((r) => ({ index: r.index, relevance_score: r.score, document: { text: texts[r.index] } })),
  );
  const bare = await post(`${server.url}/v1/rerank`, { query, documents: texts, return_documents: false });
  t.false('document' in bare.json.results[0]);
  t.is(bare.json.results.length, texts.length);
});

test.serial('/search returns what Index.search returns, in each mode and re-ranking', async (t) => {
  const queries = ['Which project uses reinforcement learning?', 'pneumonia x-ray'];
  for (const [body, options] of [
    [{ query: queries, k: 3 }, { k: 3 }],
    [{ query: queries, k: 4, mode: 'hybrid', hybrid_weight: 0.3 }, { k: 4, mode: 'hybrid', hybridWeight: 0.3 }],
    [{ query: queries, k: 2, mode: 'bm25' }, { k: 2, mode: 'bm25' }],
    [{ query: queries, k: 3, rerank: 'maxsim', candidates: 20 }, { k: 3, rerank: 'maxsim', candidates: 20 }],
    [{ query: queries, k: 3, rerank: 'cross-encoder', candidates: 10 }, { k: 3, rerank: ce, candidates: 10 }],
  ] as const) {
    const { status, json } = await post(`${server.url}/search`, body);
    t.is(status, 200);
    const expected = await index.search(queries, options as any);
    t.deepEqual(json.results, queries.map((query, i) => ({ query, hits: expected[i] })), JSON.stringify(body));
  }
  const one = await post(`${server.url}/search`, { query: queries[0] });
  t.is(one.json.results.length, 1);
  t.is(one.json.results[0].hits.length, 10);
});

test.serial('/health, /info, /v1/models and /metrics describe the server', async (t) => {
  t.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: 'ok' });
  const info: any = await (await fetch(`${server.url}/info`)).json();
  t.like(info, { model_id: 'tiny-bert', dimension: enc.dimension, max_input_length: enc.maxSeqLength, pooling: 'mean', normalize: true, multi_vector: false, device: 'cpu' });
  t.like(info.index, { documents: DOCS.length, late_interaction: true });
  t.is(info.reranker.max_input_length, ce.maxSeqLength);
  const models: any = await (await fetch(`${server.url}/v1/models`)).json();
  t.deepEqual(
    models.data.map((m: any) => m.id),
    ['tiny-bert', 'st'],
  );
  await post(`${server.url}/embed`, { inputs: ['a', 'b', 'c'] });
  const res = await fetch(`${server.url}/metrics`);
  t.regex(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  t.regex(text, /^coltrast_requests_total\{route="\/embed",status="200"\} [1-9]\d*$/m);
  const inputs = Number(/^coltrast_model_inputs_total\{queue="embed"\} (\d+)$/m.exec(text)![1]);
  t.is(inputs, server.stats().embed.inputs);
  t.true(inputs >= 3);
});

test.serial('concurrent requests, one of them large, all get their own vectors', async (t) => {
  const before = server.stats().embed;
  const big = Array.from({ length: 700 }, (_, i) => `${TEXTS[i % 4]} ${i}`);
  const singles = Array.from({ length: 20 }, (_, i) => `query number ${i} about search`);
  const [bigOut, ...singleOut] = await Promise.all([
    post(`${server.url}/embed`, { inputs: big }),
    ...singles.map((s) => post(`${server.url}/v1/embeddings`, { input: s })),
  ]);
  const expectedBig = rows(await enc.embed(big));
  t.true(Math.max(...bigOut.json.map((v: number[], i: number) => maxAbsDiff(v, expectedBig[i]))) < 1e-5);
  const expectedSingles = rows(await enc.embed(singles));
  // In a batch with other texts the padding differs from embed()'s batch: equal to float rounding.
  singleOut.forEach((r, i) => t.true(maxAbsDiff(r.json.data[0].embedding, expectedSingles[i]) < 1e-5));
  const after = server.stats().embed;
  t.is(after.inputs - before.inputs, 720);
  t.true(after.largestCall <= 256, 'a call takes at most maxBatchTexts texts');
  t.is(after.waiting, 0);
});

test('BatchQueue: one call takes every waiting request with the same key, up to the limit', async (t) => {
  const { queue, calls, keys, release } = heldQueue(4, 100);
  const first = queue.submit('a', [1]); // starts a call at once
  const waiting = [queue.submit('a', [2, 3]), queue.submit('b', [4]), queue.submit('a', [5]), queue.submit('a', [6, 7])];
  await tick();
  t.deepEqual(calls, [[1]]);
  t.is(queue.stats().waiting, 7);
  release();
  t.deepEqual(await first, [10]);
  await tick();
  // The oldest waiting request's key, every such request that fits in 4 items: [2, 3] and [5]; [6, 7] would make 5.
  t.deepEqual(calls[1], [2, 3, 5]);
  release();
  await tick();
  t.deepEqual(calls[2], [4]);
  release();
  await tick();
  t.deepEqual(calls[3], [6, 7]);
  release();
  t.deepEqual(await Promise.all(waiting), [[20, 30], [40], [50], [60, 70]]);
  t.deepEqual(keys, ['a', 'a', 'b', 'a']);
  t.deepEqual(queue.stats(), { calls: 4, inputs: 7, largestCall: 3, waiting: 0, cancelled: 0 });
});

test('BatchQueue: a large request goes one piece at a time, behind requests that came meanwhile', async (t) => {
  const { queue, calls, release } = heldQueue(3, 100, (items) => items.map((x) => -x));
  const large = queue.submit('k', [1, 2, 3, 4, 5, 6, 7]);
  await tick();
  const small = queue.submit('k', [100]);
  release();
  await tick();
  // The small request comes first; the large one's second piece does not fit beside it.
  t.deepEqual(calls, [[1, 2, 3], [100]]);
  release();
  t.deepEqual(await small, [-100]);
  for (let i = 0; i < 2; i++) {
    await tick();
    release();
  }
  t.deepEqual(await large, [-1, -2, -3, -4, -5, -6, -7]);
  t.deepEqual(calls, [[1, 2, 3], [100], [4, 5, 6], [7]]);
});

test('BatchQueue: a failed call fails the requests in it, not the others; a full queue refuses with 503', async (t) => {
  let fail = true;
  const { queue, release } = heldQueue(2, 5, (items) => {
    if (fail) throw new Error('model failed');
    return items;
  });
  const a = queue.submit('x', [1, 2, 3]); // two pieces: the second never runs
  const b = queue.submit('y', [4]);
  await tick();
  const full = await t.throwsAsync(queue.submit('y', [5, 6]));
  t.is((full as any).status, 503);
  t.regex(full!.message, /the server is busy: 4 inputs are waiting \(maxQueue 5\)/);
  release();
  await t.throwsAsync(a, { message: 'model failed' });
  fail = false;
  await tick();
  release();
  t.deepEqual(await b, [4]);
  t.is(queue.stats().waiting, 0);
});

test('bad requests get a status and a message that names the problem', async (t) => {
  const cases: [string, string, unknown, number, RegExp][] = [
    ['POST', '/v1/embeddings', '{"input": ', 400, /not valid JSON/],
    ['POST', '/v1/embeddings', [1, 2], 400, /must be a JSON object/],
    ['POST', '/v1/embeddings', {}, 400, /missing field "input"/],
    ['POST', '/v1/embeddings', { input: [] }, 400, /"input" is empty/],
    ['POST', '/v1/embeddings', { input: [[1, 2, 3]] }, 400, /token-id input is not supported/],
    ['POST', '/v1/embeddings', { input: ['a', 7] }, 400, /token-id input is not supported/],
    ['POST', '/v1/embeddings', { input: ['a', null] }, 400, /"input\[1\]" must be a string/],
    ['POST', '/v1/embeddings', { input: 'a', inputs: 'b' }, 400, /unknown field "inputs" \(this route takes: input, model/],
    ['POST', '/v1/embeddings', { input: 'a', encoding_format: 'int8' }, 400, /"encoding_format" must be "float" or "base64"/],
    ['POST', '/v1/embeddings', { input: 'a', dimensions: 33 }, 400, /"dimensions" is 33; the model's vectors have 32/],
    ['POST', '/v1/embeddings', { input: 'a', dimensions: 0 }, 400, /"dimensions" must be a positive integer/],
    ['POST', '/v1/embeddings', { input: 'a', task: 'passage' }, 400, /"task" must be "query" or "document"/],
    ['POST', '/v1/embeddings', { input: 'a', prompt_name: 'query' }, 400, /"prompt_name" must be one of the model's prompts \(it has none\)/],
    ['POST', '/v1/embeddings', { input: 'a', normalize: 'yes' }, 400, /"normalize" must be true or false/],
    // OpenAI's model and user are not used, but a wrong type is a client's bug all the same.
    ['POST', '/v1/embeddings', { input: 'a', model: 5 }, 400, /"model" must be a string/],
    ['POST', '/v1/embeddings', { input: 'a', user: {} }, 400, /"user" must be a string/],
    ['POST', '/v1/rerank', { query: 'q', documents: ['a'], model: ['m'] }, 400, /"model" must be a string/],
    ['POST', '/embed', { inputs: 'a', truncate: false }, 400, /"truncate": false is not supported/],
    ['POST', '/embed', { inputs: 'a', truncation_direction: 'Left' }, 400, /"truncation_direction" must be "Right"/],
    ['POST', '/rerank', { texts: ['a'] }, 400, /"query" must be a string/],
    ['POST', '/rerank', { query: 'q' }, 400, /missing field "texts"/],
    ['POST', '/v1/rerank', { query: 'q', documents: ['a'], top_n: -1 }, 400, /"top_n" must be a positive integer/],
    ['POST', '/search', { query: 'q', mode: 'fuzzy' }, 400, /"mode" must be "dense", "bm25", "hybrid" or \(an index with a sparse encoder's vectors\) "sparse"/],
    ['POST', '/search', { query: 'q', rerank: 'colbert' }, 400, /"rerank" must be "none", "maxsim" or "cross-encoder"/],
    ['POST', '/search', { query: 'q', hybrid_weight: 2 }, 400, /"hybrid_weight" must be a number in \[0, 1\]/],
    ['POST', '/search', { query: 'q', rescore_multiplier: 2 }, 400, /"rescore_multiplier" is for an index with binary storage; this one stores float/],
    ['POST', '/search', { query: 'q', nprobe: 2 }, 400, /"nprobe" and "full_scores" are for a multi-vector index with residual token storage/],
    ['GET', '/v1/embeddings', undefined, 405, /\/v1\/embeddings takes POST, not GET/],
    ['POST', '/health', {}, 405, /\/health takes GET, HEAD, not POST/],
    ['HEAD', '/embed', undefined, 405, /\/embed takes POST, not HEAD/],
    ['GET', '/v2/embeddings', undefined, 404, /no route \/v2\/embeddings \(routes: \/health, /],
  ];
  for (const [method, route, body, status, message] of cases) {
    const res = await fetch(`${server.url}${route}`, { method, ...(body !== undefined && { body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'Content-Type': 'application/json' } }) });
    if (method === 'HEAD') {
      // A HEAD answer has no body: the status and Allow say it.
      t.is(res.status, status);
      t.is(res.headers.get('allow'), 'POST');
      continue;
    }
    const json: any = await res.json();
    t.is(res.status, status, `${method} ${route} ${JSON.stringify(body)}`);
    // OpenAI's routes answer in OpenAI's error shape, the others in text-embeddings-inference's.
    const error = route.startsWith('/v1/') ? json.error.message : json.error;
    t.regex(error, message, `${method} ${route} ${JSON.stringify(body)}`);
  }
  const many = await serve({ encoder: enc, port: 0, maxInputs: 3, maxBodyBytes: 200 });
  try {
    const tooMany = await post(`${many.url}/v1/embeddings`, { input: ['a', 'b', 'c', 'd'] });
    t.is(tooMany.status, 400);
    t.regex(tooMany.json.error.message, /holds 4 texts; this server takes at most 3 per request \(maxInputs\)/);
    const tooLarge = await post(`${many.url}/embed`, { inputs: ['x'.repeat(300)] });
    t.is(tooLarge.status, 413);
    t.regex(tooLarge.json.error, /the request body is over 200 bytes/);
    t.is((await post(`${many.url}/embed`, { inputs: ['still fine'] })).status, 200, 'the server goes on after a 413');
  } finally {
    await many.close();
  }
});

test('routes without their model say which flag starts the server with one; a multi-vector model serves /embed_all only', async (t) => {
  const rerankOnly = await serve({ reranker: ce, port: 0 });
  const multi = await Encoder.load(FIXTURE, { device: 'cpu' });
  await makeSmallMultiVector(multi);
  const mv = await serve({ encoder: multi, port: 0 });
  let indexed: Server | undefined;
  try {
    const noModel = await post(`${rerankOnly.url}/v1/embeddings`, { input: 'a' });
    t.is(noModel.status, 404);
    t.regex(noModel.json.error.message, /needs an embedding model: start the server with one \(coltrast serve --model/);
    t.is((await post(`${rerankOnly.url}/rerank`, { query: 'q', texts: ['a', 'b'] })).status, 200);
    const noReranker = await post(`${mv.url}/rerank`, { query: 'q', texts: ['a'] });
    t.is(noReranker.status, 404);
    t.regex(noReranker.json.error, /needs a cross-encoder: start the server with one \(coltrast serve --reranker/);
    t.regex((await post(`${mv.url}/search`, { query: 'q' })).json.error, /needs an index/);
    const pooled = await post(`${mv.url}/embed`, { inputs: 'a' });
    t.is(pooled.status, 400);
    t.regex(pooled.json.error, /multi-vector \(ColBERT-style\) and has no pooled vector: use \/embed_all/);
    const tokens = await post(`${mv.url}/embed_all`, { inputs: ['what is late interaction'], task: 'query' });
    const expected = await multi.embed(['what is late interaction'], { output: 'tokens', task: 'query' });
    t.is(maxAbsDiff(tokens.json[0].flat(), expected[0].data), 0);
    // A residual multi-vector index: /search takes PLAID's nprobe and full_scores.
    const residual = await Index.build(multi, DOCS, { tokenStorage: 'residual', centroids: 4 });
    indexed = await serve({ encoder: multi, index: residual, port: 0 });
    const searched = await post(`${indexed.url}/search`, { query: 'what is late interaction', k: 3, nprobe: 1, full_scores: 2 });
    t.is(searched.status, 200);
    t.deepEqual(searched.json.results[0].hits, (await residual.search(['what is late interaction'], { k: 3, nprobe: 1, fullScores: 2 }))[0]);
    t.like(((await (await fetch(`${indexed.url}/info`)).json()) as { index: object }).index, { token_storage: 'residual' });
    // Where the multi-vector model cuts its queries and documents (a single-vector model's /info has neither).
    const info: any = await (await fetch(`${mv.url}/info`)).json();
    t.like(info, { multi_vector: true, max_query_length: 10, max_document_length: multi.maxSeqLength });
    t.is((await multi.embed(['word '.repeat(40)], { output: 'tokens', task: 'query' }))[0].dims[0], info.max_query_length);
    t.false('max_query_length' in ((await (await fetch(`${server.url}/info`)).json()) as object));
  } finally {
    await rerankOnly.close();
    await mv.close();
    await indexed?.close();
    multi.dispose();
  }
});

test('serve() refuses bad options before listening, and a port in use', async (t) => {
  const cases: [object, RegExp][] = [
    [{}, /serve\(\) needs a model: options\.encoder, sparseEncoder, reranker, generator or rag/],
    [{ encoder: enc, port: 70000 }, /options\.port must be an integer port from 0 to 65535/],
    [{ index, reranker: ce }, /options\.index needs options\.encoder/],
    [{ encoder: enc, maxInputs: 10, maxQueue: 5 }, /options\.maxQueue \(5\) must be at least options\.maxInputs \(10\)/],
    [{ encoder: enc, threads: 2 }, /unknown option options\.threads/],
    [{ encoder: 'model-dir' }, /options\.encoder must be an Encoder/],
  ];
  for (const [options, message] of cases) t.regex((await rejection(() => serve(options as any))).message, message);
  const busy = await rejection(() => serve({ encoder: enc, port: server.port }));
  t.regex(busy.message, new RegExp(`port ${server.port} on 127\\.0\\.0\\.1 is in use: choose another`));
  t.is(busy.code, 'INVALID_ARGUMENT');
  // A host that is no address, and an address that is not this machine's: named errors too, not ENOTFOUND and
  // EADDRNOTAVAIL as Node gives them. 192.0.2.1 is TEST-NET-1 (RFC 5737), never a local address.
  for (const [host, message, reason] of [
    ['not a host', /^options\.host "not a host" \(--host\) is neither an IP address nor a name this machine resolves: give an address such as 127\.0\.0\.1/, 'ENOTFOUND'],
    ['192.0.2.1', /^options\.host "192\.0\.2\.1" \(--host\) is not an address of this machine, so nothing can listen on it/, 'EADDRNOTAVAIL'],
  ] as const) {
    const e = await rejection(() => serve({ encoder: enc, port: 0, host }));
    t.true(e instanceof ColtrastError, host);
    t.is(e.code, 'INVALID_ARGUMENT');
    t.regex(e.message, message);
    t.is((e.cause as NodeJS.ErrnoException).code, reason);
  }
});

test('CrossEncoder.predict names the element of a pair that is not a string, and its type (what /rerank builds its pairs with)', async (t) => {
  for (const [pairs, message] of [
    [[['a', 5]], /^pairs\[0\]\[1\] must be a string \(pairs\[0\] is a \[query, document\] pair of texts\), got number 5$/],
    [[['a', 'b'], [null, 'c']], /^pairs\[1\]\[0\] must be a string .*, got null$/],
    [[['a', 'b'], ['c']], /^pairs\[1\] must be a \[string, string\] pair, got an array of length 1$/],
  ] as const) {
    const e = await rejection(() => ce.predict(pairs as never));
    t.is(e.code, 'INVALID_ARGUMENT');
    t.regex(e.message, message);
  }
});

test('the API key\'s scheme is case-insensitive (RFC 7235): Bearer, bearer and BEARER; anything else is a 401', async (t) => {
  const keyed = await serve({ encoder: enc, port: 0, apiKey: 'sk-test' });
  try {
    const status = async (authorization?: string) => (await fetch(`${keyed.url}/v1/models`, { headers: authorization === undefined ? {} : { authorization } })).status;
    for (const good of ['Bearer sk-test', 'bearer sk-test', 'BEARER sk-test', 'bEaReR   sk-test']) t.is(await status(good), 200, good);
    for (const bad of [undefined, 'sk-test', 'Bearer', 'Bearer sk-tes', 'Bearer sk-test2', 'Basic sk-test', 'Bearer sk-test extra', 'Bearersk-test']) t.is(await status(bad), 401, String(bad));
  } finally {
    await keyed.close();
  }
});

test('HEAD on a GET route answers as GET does, without the body', async (t) => {
  for (const route of ['/health', '/info', '/v1/models', '/metrics']) {
    const head = await fetch(`${server.url}${route}`, { method: 'HEAD' });
    t.is(head.status, 200, route);
    t.is(await head.text(), '', route);
    const get = await fetch(`${server.url}${route}`);
    t.is(head.headers.get('content-type'), get.headers.get('content-type'), route);
    if (route !== '/metrics') t.is(Number(head.headers.get('content-length')), Buffer.byteLength(await get.text()), route); // /metrics counts the GET itself
  }
  t.regex(await (await fetch(`${server.url}/metrics`)).text(), /^coltrast_requests_total\{route="\/health",status="200"\} [2-9]\d*$/m, 'a HEAD is counted as its route\'s request');
});

test('close() twice: the second call resolves too, once the server is closed', async (t) => {
  const s = await serve({ encoder: enc, port: 0 });
  const [first, second] = [s.close(), s.close()];
  t.is(first, second, 'the same promise');
  await t.notThrowsAsync(Promise.all([first, second]));
  await t.notThrowsAsync(s.close(), 'and after it resolved');
  await t.throwsAsync(fetch(`${s.url}/health`), undefined, 'closed: nothing listens');
});

test('a failed save of a writable index reaches onSaveError as a ColtrastError naming the folder and the reason', async (t) => {
  const file = path.join(tempDir(), 'a-file');
  fs.writeFileSync(file, 'not a folder');
  const saveTo = path.join(file, 'index'); // under a file: ENOTDIR
  const small = await Index.build(enc, DOCS.slice(0, 3));
  const errors: Error[] = [];
  let reported: (e: Error) => void = () => {};
  const first = new Promise<Error>((resolve) => (reported = resolve));
  const writable = await serve({ encoder: enc, index: small, port: 0, writable: true, saveTo, saveInterval: 0, onSaveError: (e) => (errors.push(e), reported(e)) });
  try {
    t.is((await post(`${writable.url}/documents`, { documents: [{ id: 'new', text: 'a new document' }] })).status, 200);
    const e = (await first) as ColtrastError;
    t.true(e instanceof ColtrastError);
    t.is(e.code, 'INVALID_ARGUMENT');
    // The writer's own error names the file on the path (lib/files.ts), with Node's ENOTDIR as its cause.
    const escaped = (p: string) => p.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    t.regex(e.message, new RegExp(`^saving the index to ${escaped(saveTo)} failed: .*cannot write ${escaped(saveTo)}: ${escaped(file)} is a file, not a folder; give a path under a folder; the changes stay in memory`));
    t.is(((e.cause as ColtrastError).cause as NodeJS.ErrnoException).code, 'ENOTDIR');
  } finally {
    await writable.close();
  }
  t.is(errors.length, 2, 'tried again at close(), and reported again');
});

test('coltrast serve: an index and a reranker over HTTP, a line per request with --verbose, a clean stop on SIGTERM', async (t) => {
  const dir = path.join(tempDir(), 'docs.index');
  await index.save(dir);
  const server = await startServe(['--index', dir, '--model', FIXTURE, '--reranker', CE, '--port', '0', '--device', 'cpu', '--verbose']);
  t.regex(server.listening, /listening on http:\/\/\S+ \(model .*tiny-bert \(cpu\), reranker .*st, index .*docs\.index \((\d+) documents\)\)/);
  const { json } = await post(`${server.url}/search`, { query: 'pneumonia x-ray', k: 2, rerank: 'cross-encoder' });
  t.deepEqual(json.results[0].hits, (await index.search(['pneumonia x-ray'], { k: 2, rerank: ce }))[0]);
  t.is(await server.stop(), 0);
  t.regex(server.stderr(), /POST \/search 200 [\d.]+ ms 1 inputs/);
  t.regex(server.stderr(), /SIGTERM, finishing the requests in progress/);
});

test('coltrast serve refuses contradictory flags with exit status 2', async (t) => {
  for (const [args, message] of [
    [['--no-model', '--reranker', CE, '--model', FIXTURE], /--no-model serves a reranker or a generator alone/],
    [['--port', '99999'], /--port must be an integer from 0 to 65535/],
    [['--model', FIXTURE, '--max-batch', '0'], /--max-batch must be a positive integer/],
    [['--model', FIXTURE, '--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    const r = await runServe([...args]);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message);
  }
});
