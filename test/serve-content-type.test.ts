// The server reads a request body only when its Content-Type says JSON: a web page on any origin can make a
// browser POST text/plain, form-urlencoded or multipart bodies (or none with no type at all: fetch() of a Blob)
// without a CORS preflight, and the answer, unreadable to the page, would come after the side effect. Each refused
// type on a TEI-style route, an OpenAI-style one and a writable index's routes (the index unchanged), the accepted
// ones, and the refusal sent before a large body is read.
import test from 'ava';
import http from 'node:http';
import { Encoder, Index, serve, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';

let enc: Encoder;
let index: Index;
let server: Server;

test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  index = await Index.build(enc, [{ id: 'a', text: 'first document' }, { id: 'b', text: 'second document' }]);
  server = await serve({ encoder: enc, index, port: 0, writable: true });
});

test.after.always(async () => {
  await server?.close();
  enc?.dispose();
});

/** A POST of `body` with exactly the headers given (fetch adds text/plain to a string body sent without a type). */
function post(route: string, body: string | Buffer, headers: Record<string, string>): Promise<{ status: number; json: any; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${server.url}${route}`, { method: 'POST', headers: { 'Content-Length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString('utf8')), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const REFUSED = ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=----x'];
const FIX = /send the JSON body with -H 'Content-Type: application\/json' \(other types are refused, so that a web page cannot make a browser post to this server without a CORS preflight\)$/;

test('a body sent as text/plain, form-urlencoded or multipart gets 415 naming the header, in each route\'s error shape', async (t) => {
  for (const type of REFUSED) {
    const tei = await post('/embed', JSON.stringify({ inputs: 'a text' }), { 'Content-Type': type });
    t.is(tei.status, 415, type);
    t.is(tei.json.error_type, 'invalid_request_error');
    t.regex(tei.json.error, FIX);
    t.true(tei.json.error.startsWith(`Content-Type ${type} is not JSON`), tei.json.error);
    t.is(tei.headers.connection, 'close', 'the connection is closed rather than drained');
    const openai = await post('/v1/embeddings', JSON.stringify({ input: 'a text' }), { 'Content-Type': type });
    t.is(openai.status, 415, type);
    t.like(openai.json.error, { type: 'invalid_request_error', code: 415, param: null });
    t.regex(openai.json.error.message, FIX);
  }
});

test('a writable index is not changed by a body that is not JSON-typed', async (t) => {
  for (const type of REFUSED) {
    const added = await post('/documents', JSON.stringify({ documents: [{ id: 'c', text: 'third document' }] }), { 'Content-Type': type });
    t.is(added.status, 415, type);
    t.regex(added.json.error, FIX);
    const deleted = await post('/documents/delete', JSON.stringify({ ids: ['a'] }), { 'Content-Type': type });
    t.is(deleted.status, 415, type);
    t.regex(deleted.json.error, FIX);
  }
  const none = await post('/documents/delete', JSON.stringify({ ids: ['a'] }), {});
  t.is(none.status, 415);
  t.regex(none.json.error, /^the request has no Content-Type: send its JSON body with -H 'Content-Type: application\/json' \(a body that says no type is refused, so that a web page cannot make a browser post/);
  t.is(index.size, 2);
  t.true(index.has('a'));
  t.false(index.has('c'));
});

test('a body with no Content-Type gets 415: a page\'s fetch() of a Blob or an ArrayBuffer sends none and no preflight', async (t) => {
  const res = await post('/v1/embeddings', JSON.stringify({ input: 'a text' }), {});
  t.is(res.status, 415);
  t.regex(res.json.error.message, /^the request has no Content-Type: send its JSON body with -H 'Content-Type: application\/json'/);
  const empty = await post('/embed', JSON.stringify({ inputs: 'a text' }), { 'Content-Type': '' });
  t.is(empty.status, 415);
});

test('a charset other than UTF-8 gets 415: the body is decoded as UTF-8 only', async (t) => {
  for (const type of ['application/json; charset=iso-8859-1', 'application/json;charset="utf-16"']) {
    const res = await post('/embed', JSON.stringify({ inputs: 'a text' }), { 'Content-Type': type });
    t.is(res.status, 415, type);
    t.is(res.json.error, `Content-Type ${type}: the server reads request bodies as UTF-8 only: send the body in UTF-8 with -H 'Content-Type: application/json' (or charset=utf-8)`);
  }
});

test('application/json in any case, with a UTF-8 charset or other parameters, and +json types are read', async (t) => {
  const types = ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/json; charset=utf8', 'application/json; foo=bar', 'application/vnd.api+json'];
  for (const type of types) {
    const res = await post('/embed', JSON.stringify({ inputs: 'a text' }), { 'Content-Type': type });
    t.is(res.status, 200, type);
    t.is(res.json.length, 1);
  }
  const openai = await post('/v1/embeddings', JSON.stringify({ input: 'a text' }), { 'Content-Type': 'application/json; charset=utf-8' });
  t.is(openai.status, 200);
  t.is(openai.json.data.length, 1);
  // Bad JSON under the right type is still the 400 it was.
  const bad = await post('/embed', '{not json', { 'Content-Type': 'application/json' });
  t.is(bad.status, 400);
  t.regex(bad.json.error, /^the request body is not valid JSON/);
});

test('the 415 comes before the body is read: a client that sent only its headers gets it', async (t) => {
  const answer = await new Promise<{ status: number; connection: string | undefined; error: string }>((resolve, reject) => {
    // 32 MiB announced (over maxBodyBytes), none of it sent.
    const req = http.request(`${server.url}/documents`, { method: 'POST', agent: false, headers: { 'Content-Type': 'text/plain', 'Content-Length': String(32 << 20) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode!, connection: res.headers.connection, error: JSON.parse(Buffer.concat(chunks).toString('utf8')).error });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.flushHeaders();
    // A server that waits for the body never answers.
    setTimeout(() => (req.destroy(), reject(new Error('no answer in 10 s to headers alone: the server waits for the body'))), 10_000).unref();
  });
  t.is(answer.status, 415);
  t.is(answer.connection, 'close');
  t.regex(answer.error, FIX);
});

test('GET routes and OPTIONS need no Content-Type, and a GET\'s Content-Type is not looked at', async (t) => {
  const health = await fetch(`${server.url}/health`, { headers: { 'Content-Type': 'text/plain' } });
  t.is(health.status, 200);
  const info = await fetch(`${server.url}/info`);
  t.is(info.status, 200);
  // Without cors an OPTIONS is refused as before (405), not as a body.
  const options = await fetch(`${server.url}/embed`, { method: 'OPTIONS', headers: { 'Content-Type': 'text/plain' } });
  t.is(options.status, 405);
});

test('with cors, preflights are answered as before, and an allowed page\'s text/plain POST gets a 415 it can read', async (t) => {
  const app = 'https://app.example.com';
  const s = await serve({ encoder: enc, index, port: 0, writable: true, cors: { origins: [app] } });
  try {
    const preflight = await fetch(`${s.url}/documents`, { method: 'OPTIONS', headers: { Origin: app, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' } });
    t.is(preflight.status, 204);
    t.is(preflight.headers.get('access-control-allow-origin'), app);
    const simple = await fetch(`${s.url}/documents`, { method: 'POST', headers: { Origin: app }, body: JSON.stringify({ documents: [{ id: 'c', text: 'third document' }] }) });
    t.is(simple.status, 415);
    t.is(simple.headers.get('access-control-allow-origin'), app);
    t.regex(((await simple.json()) as any).error, /^Content-Type text\/plain;charset=UTF-8 is not JSON/);
    t.false(index.has('c'));
  } finally {
    await s.close();
  }
});
