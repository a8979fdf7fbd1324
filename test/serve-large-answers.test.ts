// coltrast serve's large answers: JSON written a chunk per turn of the event loop (jsonPieces, and reply's writer in
// lib/serve.ts), byte for byte what one JSON.stringify wrote before, on a synthetic payload with every case of
// JSON.stringify's and over HTTP on a 1024-wide model (/embed, /v1/embeddings float and base64, /embed_all,
// /tokenize); the event loop turning while a 40 MB answer is written; a client gone mid-answer stopping the writing;
// HTTP/1.0 clients; small answers still sent whole with their Content-Length. The tests that compare vectors with
// embed() run serially, each request in one model call: another test's texts batched with them would change the
// padding (equal to float rounding only).
import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Encoder, serve, type RequestLog, type Server } from '../lib';
import { ANSWER_CHUNK, jsonPieces } from '../lib/serve-common';
import { tempDir } from './helpers/fixture';
import { rows } from './helpers/vectors';
import { until } from './helpers/wait';
import { longestStall } from '../lib/turns';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');

const WIDTH = 1024;
const WORDS = 'the quick brown fox jumps over lazy dog model text search cat'.split(' ');
const texts = (n: number, words = 8) => Array.from({ length: n }, (_, i) => Array.from({ length: words }, (_, j) => WORDS[(i * 7 + j * 3) % WORDS.length]).join(' '));

let enc: Encoder;
let server: Server;
const logged: RequestLog[] = [];

/** Bytes each request path's answers were given to write (every ServerResponse.write and end of this process). */
const written = new Map<string, number>();

test.before(async () => {
  // One layer, 1024 wide: answers as large as a real model's, for a small fraction of its time.
  const dir = makeRandomBert(path.join(tempDir(), 'wide'), { hiddenSize: WIDTH, layers: 1, heads: 4, intermediate: 64, vocabSize: 198, maxPositions: 64, seed: 3 });
  enc = await Encoder.load(dir, { device: 'cpu' });
  server = await serve({ encoder: enc, port: 0, maxInputs: 4096, maxBatchTexts: 4096, onRequest: (r) => logged.push(r) });
  const count = (res: http.ServerResponse, chunk: unknown) => {
    const url = res.req.url ?? '';
    const size = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk instanceof Uint8Array ? chunk.length : 0;
    written.set(url, (written.get(url) ?? 0) + size);
  };
  const { write, end } = http.ServerResponse.prototype as unknown as Record<'write' | 'end', (...args: unknown[]) => unknown>;
  Object.assign(http.ServerResponse.prototype, {
    write(this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
      count(this, chunk);
      return write.call(this, chunk, ...rest);
    },
    end(this: http.ServerResponse, chunk?: unknown, ...rest: unknown[]) {
      if (typeof chunk !== 'function') count(this, chunk);
      return end.call(this, chunk, ...rest);
    },
  });
});

test.after.always(async () => {
  await server?.close();
  enc?.dispose();
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The longest gap between two ticks of a 1 ms timer, from the request to the answer's last byte. */
  stallMs: number;
}

/** POSTs `body` and reads the answer's bytes (counting the event loop's longest stall meanwhile), parsing nothing. */
async function post(route: string, body: unknown): Promise<Answer> {
  const { result, stallMs } = await longestStall(
    () =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders; chunks: Buffer[] }>((resolve, reject) => {
        const req = http.request(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, chunks }));
        });
        req.on('error', reject);
        req.end(JSON.stringify(body));
      }),
  );
  // Joined after the measure: the client's own work on 40 MB is not the server's stall.
  return { status: result.status, headers: result.headers, text: Buffer.concat(result.chunks).toString('utf8'), stallMs };
}

test('jsonPieces writes exactly what JSON.stringify writes, typed arrays as arrays of their numbers', (t) => {
  class Point {
    constructor(
      readonly x: number,
      readonly y: number,
    ) {}
  }
  const sparse: unknown[] = [1, , 3]; // eslint-disable-line no-sparse-arrays
  const nullPrototype = Object.assign(Object.create(null), { a: [1, { b: 2 }] });
  let keys: string[] = [];
  const spy = (value: unknown) => ({ toJSON: (key: string) => (keys.push(key), value) });
  const big = Array.from({ length: 9000 }, (_, i) => (i % 1000 === 7 ? { i, nested: [i, { deep: `é${i}\u2028"\\` }] } : i % 3 === 0 ? i / 7 : i % 3 === 1 ? `s${i}` : null));
  const payload = {
    numbers: [0, -0, 1.5, -1e-7, 1e21, 2 ** 53 + 2, Number.MIN_VALUE, Number.MAX_VALUE, NaN, Infinity, -Infinity],
    strings: ['', 'plain', 'quote " backslash \\ newline \n tab \t', '\u0000\u001f', 'lone \ud800 surrogate', '😀 中文'],
    leaves: [true, false, null, undefined, () => 1, Symbol('s')],
    omitted: { a: undefined, b: () => 1, c: Symbol('s'), d: 1 },
    sparse,
    empty: { array: [], object: {} },
    date: new Date(Date.UTC(2026, 0, 2)),
    dates: [new Date(0), { when: new Date(1) }],
    instance: new Point(1, 2),
    nullPrototype,
    toJsonUndefined: { gone: { toJSON: () => undefined }, kept: 1 },
    inArray: [{ toJSON: () => undefined }],
    spied: [spy(1), { key: spy({ inner: spy(2) }) }],
    big,
    bigNumbers: Array.from({ length: 10000 }, (_, i) => Math.sin(i)),
    nested: [[[[{ a: [[1, 2], [3]] }]]]],
  };
  const expected = JSON.stringify(payload);
  const expectedKeys = keys;
  keys = [];
  const pieces = [...jsonPieces(payload)];
  t.is(pieces.join(''), expected);
  t.deepEqual(keys, expectedKeys, 'toJSON called once each, with the key JSON.stringify gives it');
  t.true(pieces.length > 100, 'a large value comes in many pieces');
  t.true(Math.max(...pieces.map((p) => p.length)) < 100_000, 'no piece holds a large part of it');

  // Typed arrays: as Array.from's arrays (JSON.stringify would write {"0": ...}), long ones in slices.
  const vectors = [new Float32Array(0), new Float32Array([0.1, -0, NaN, Infinity, 3e-39]), Float32Array.from({ length: 10_000 }, (_, i) => Math.cos(i) / (i + 1)), new Int32Array([1, -2]), new Float64Array([Math.PI])];
  t.is([...jsonPieces({ vectors })].join(''), JSON.stringify({ vectors: vectors.map((v) => Array.from(v)) }));
  // A string is a leaf; so are top-level leaves.
  for (const leaf of [1, 'text', null, true, NaN]) t.is([...jsonPieces(leaf)].join(''), JSON.stringify(leaf));
});

test.serial('large answers of /embed, /v1/embeddings (float and base64) and /embed_all are byte for byte what JSON.stringify wrote', async (t) => {
  const inputs = texts(96);
  const pooled = rows(await enc.embed(inputs));
  const expectations: [string, unknown, (answer: any) => string][] = [
    ['/embed', { inputs }, () => JSON.stringify(pooled)],
    ['/v1/embeddings', { input: inputs }, (a) => JSON.stringify({ object: 'list', data: pooled.map((v, i) => ({ object: 'embedding', index: i, embedding: v })), model: 'wide', usage: a.usage })],
    [
      '/v1/embeddings',
      { input: inputs, encoding_format: 'base64' },
      (a) => JSON.stringify({ object: 'list', data: pooled.map((v, i) => ({ object: 'embedding', index: i, embedding: Buffer.from(Float32Array.from(v).buffer).toString('base64') })), model: 'wide', usage: a.usage }),
    ],
  ];
  for (const [route, body, expected] of expectations) {
    const answer = await post(route, body);
    t.is(answer.status, 200, answer.text.slice(0, 200));
    t.is(answer.headers['transfer-encoding'], 'chunked', route);
    t.is(answer.headers['content-length'], undefined);
    t.is(answer.headers['content-type'], 'application/json');
    t.true(answer.text.length > 4 * ANSWER_CHUNK, `${route}: ${answer.text.length} characters, in many chunks`);
    t.is(answer.text, expected(JSON.parse(answer.text)), `${route} ${JSON.stringify(body).slice(-40)}`);
  }
  const some = inputs.slice(0, 24);
  const tokens = (await enc.embed(some, { output: 'tokens' })).map(rows);
  const all = await post('/embed_all', { inputs: some });
  t.is(all.status, 200);
  t.is(all.headers['transfer-encoding'], 'chunked');
  t.is(all.text, JSON.stringify(tokens));
});

test.serial('/tokenize of long texts is chunked, and is JSON.stringify of its tokens', async (t) => {
  const inputs = texts(64).map((text) => text.repeat(60));
  const answer = await post('/tokenize', { inputs });
  t.is(answer.status, 200);
  t.is(answer.headers['transfer-encoding'], 'chunked');
  const tokens = JSON.parse(answer.text) as { id: number }[][];
  t.is(answer.text, JSON.stringify(tokens));
  // Untruncated, as TEI's: the model's own tokenize() stops at its maximum length, and agrees until then.
  const [cut] = await enc.tokenize(inputs.slice(0, 1));
  t.true(tokens[0].length > 400);
  t.deepEqual(tokens[0].slice(0, 10).map((token) => token.id), cut.slice(0, 10));
});

test.serial('a 40 MB /embed answer does not hold the event loop longer than the same request with a small answer', async (t) => {
  // 2048 texts of a 1024-wide model: ~40 MB of JSON. The same texts with `dimensions: 1` make the same model work
  // with an answer of 2048 numbers: what the model's phase stalls the loop (the cores busy with its threads, or with
  // other test files beside this one: 509 ms seen in CI) is in both, and only the writing differs.
  const inputs = texts(2048);
  const small = await post('/embed', { inputs, dimensions: 1 });
  t.is(small.status, 200);
  const answer = await post('/embed', { inputs });
  t.is(answer.status, 200);
  t.true(answer.text.length > 30e6, `${answer.text.length} characters`);
  t.log(`${(answer.text.length / 2 ** 20).toFixed(1)} MiB; the event loop's longest stall from the request to the last byte: ${answer.stallMs.toFixed(0)} ms, ${small.stallMs.toFixed(0)} ms for the small answer`);
  // Written whole, the answer held the loop 0.9-1.1 s beyond the model's phase on the quiet 2-core VM; in chunks,
  // tens of milliseconds.
  t.true(answer.stallMs < small.stallMs + 300, `the event loop stalled for ${answer.stallMs.toFixed(0)} ms, ${small.stallMs.toFixed(0)} ms with a small answer`);
  const parsed = JSON.parse(answer.text) as number[][];
  t.is(parsed.length, 2048);
  t.is(parsed[2047].length, WIDTH);
});

test.serial('a client gone mid-answer stops the writing: counted cancelled, logged 499, nothing thrown', async (t) => {
  const route = '/embed_all';
  const inputs = texts(2048, 6); // ~2048 x 8 token vectors of 1024: ~300 MB of JSON
  const received = await new Promise<number>((resolve, reject) => {
    const req = http.request(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      t.is(res.statusCode, 200);
      res.once('data', (chunk: Buffer) => {
        req.destroy();
        resolve(chunk.length);
      });
    });
    req.on('error', (error) => (error.message.includes('socket hang up') ? undefined : reject(error)));
    req.end(JSON.stringify({ inputs }));
  });
  t.true(received > 0);
  await until('the abandoned request to be logged', () => logged.some((r) => r.path === route && r.status === 499));
  const at = written.get(route)!;
  // A few turns more: nothing else is written for it.
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(written.get(route), at, 'no write after the writing stopped');
  t.true(at < 20e6, `${at} bytes written of an answer of ~300 MB`);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  t.regex(metrics, /^coltrast_requests_cancelled_total\{route="\/embed_all"\} 1$/m);
  t.is((await post('/embed', { inputs: ['still serving'] })).status, 200);
});

test.serial('an HTTP/1.0 client gets a large answer whole, ended by the connection closing', async (t) => {
  const inputs = texts(48);
  const body = JSON.stringify({ inputs });
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', reject);
    // write, not end: a client that half-closes its side is taken for gone (Node's http, httpAllowHalfOpen false).
    socket.write(`POST /embed HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  const [head, text] = [raw.slice(0, raw.indexOf('\r\n\r\n')), raw.slice(raw.indexOf('\r\n\r\n') + 4)];
  t.regex(head, /^HTTP\/1\.1 200 OK/);
  t.notRegex(head, /transfer-encoding/i);
  t.true(text.length > 10 * ANSWER_CHUNK);
  t.is(text, JSON.stringify(rows(await enc.embed(inputs))));
});

test.serial('small answers are sent whole, with their Content-Length', async (t) => {
  const answer = await post('/embed', { inputs: ['one text'] });
  t.is(answer.status, 200);
  t.is(answer.headers['transfer-encoding'], undefined);
  t.is(Number(answer.headers['content-length']), Buffer.byteLength(answer.text));
  t.is(answer.text, JSON.stringify(rows(await enc.embed(['one text']))));
  const refused = await post('/embed', { inputs: texts(5000) });
  t.is(refused.status, 400);
  t.is(Number(refused.headers['content-length']), Buffer.byteLength(refused.text));
  t.regex(JSON.parse(refused.text).error, /at most 4096 per request/);
});
