// CORS for serve() and coltrast serve: preflights answered for every route with its methods and the Authorization
// header, Access-Control-Allow-Origin on every answer to an allowed origin (JSON, errors, 401s, 404s, event
// streams) and on none to another, preflights counted apart in /metrics, the origins checked at start, and the
// flag. Node's fetch sends whatever Origin it is given, so the tests play the browser's part by hand.
import test from 'ava';
import path from 'node:path';
import { ColtrastError, Encoder, Generator, serve, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { runServe } from './helpers/serve-cli';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const GENERATOR = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama');
const APP = 'https://app.example.com';
const LOCAL = 'http://localhost:5173';
const OTHER = 'https://evil.example.net';

let enc: Encoder;
let server: Server;

test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  server = await serve({ encoder: enc, port: 0, apiKey: 'sk-test', cors: { origins: [APP, LOCAL] } });
});

test.after.always(async () => {
  await server?.close();
  enc?.dispose();
});

/** A browser's preflight for `method` on `route`, asking for `headers`. */
function preflight(url: string, origin: string | undefined, method: string, headers = 'authorization,content-type'): Promise<Response> {
  return fetch(url, {
    method: 'OPTIONS',
    headers: { ...(origin !== undefined && { Origin: origin }), 'Access-Control-Request-Method': method, 'Access-Control-Request-Headers': headers },
  });
}

test('a preflight from an allowed origin is answered 204 for every route, with its methods, Authorization and no API key', async (t) => {
  for (const [route, methods] of [
    ['/v1/embeddings', 'POST'],
    ['/embed', 'POST'],
    ['/v1/models', 'GET, HEAD'],
    ['/health', 'GET, HEAD'],
    ['/metrics', 'GET, HEAD'],
    ['/search', 'POST'],
    ['/v1/chat/completions', 'POST'],
  ] as const) {
    const res = await preflight(`${server.url}${route}`, APP, methods.split(',')[0]);
    t.is(res.status, 204, route);
    t.is(res.headers.get('access-control-allow-origin'), APP, route);
    t.is(res.headers.get('access-control-allow-methods'), methods, route);
    t.is(res.headers.get('allow'), methods, route);
    t.is(res.headers.get('access-control-allow-headers'), 'Authorization, Content-Type', route);
    t.is(res.headers.get('access-control-max-age'), '600', route);
    t.is(res.headers.get('access-control-allow-credentials'), null, route);
    t.regex(res.headers.get('vary') ?? '', /^Origin, Access-Control-Request-Method, Access-Control-Request-Headers$/, route);
    t.is(await res.text(), '', route);
  }
  // The other allowed origin gets its own origin back, and the headers a client adds of its own are allowed too
  // (OpenAI's client sends x-stainless-*); Authorization is named even when not asked for ("*" would not cover it).
  const local = await preflight(`${server.url}/v1/embeddings`, LOCAL, 'POST', 'content-type, x-stainless-os,x-stainless-retry-count');
  t.is(local.headers.get('access-control-allow-origin'), LOCAL);
  t.is(local.headers.get('access-control-allow-headers'), 'Authorization, Content-Type, x-stainless-os, x-stainless-retry-count');
  t.is(local.headers.get('access-control-allow-private-network'), null, 'not asked');
  // Chromium's Private Network Access: a public page calling this machine asks, and is told yes.
  const pna = await fetch(`${server.url}/embed`, { method: 'OPTIONS', headers: { Origin: APP, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Private-Network': 'true' } });
  t.is(pna.status, 204);
  t.is(pna.headers.get('access-control-allow-private-network'), 'true');
});

test('a preflight from another origin, or with none, is refused with 403 and no Access-Control-Allow-Origin', async (t) => {
  for (const origin of [OTHER, `${APP}/`, 'https://APP.example.com', 'https://app.example.com:8443', 'http://app.example.com', undefined]) {
    const res = await preflight(`${server.url}/v1/embeddings`, origin, 'POST');
    t.is(res.status, 403, String(origin));
    t.is(res.headers.get('access-control-allow-origin'), null, String(origin));
    t.is(res.headers.get('access-control-allow-methods'), null, String(origin));
    t.is(res.headers.get('vary'), 'Origin', String(origin));
    t.regex(((await res.json()) as any).error.message, /^CORS: the origin .* is not one this server allows \(its cors\.origins, --cors-allow-origin\)$/, String(origin));
  }
});

test('answers to an allowed origin carry Access-Control-Allow-Origin: JSON, 401, 404, 405 and 400 alike; to another origin, none', async (t) => {
  const call = (route: string, origin: string, init: RequestInit = {}) =>
    fetch(`${server.url}${route}`, { ...init, headers: { Origin: origin, Authorization: 'Bearer sk-test', 'Content-Type': 'application/json', ...(init.headers as Record<string, string>) } });
  const cases: [string, RequestInit, number][] = [
    ['/v1/embeddings', { method: 'POST', body: JSON.stringify({ input: 'a text' }) }, 200],
    ['/v1/models', {}, 200],
    ['/health', {}, 200],
    ['/v1/embeddings', { method: 'POST', body: JSON.stringify({ input: 'a text' }), headers: { Authorization: 'Bearer sk-wrong' } }, 401],
    ['/nowhere', {}, 404],
    ['/embed', {}, 405],
    ['/embed', { method: 'POST', body: '{not json' }, 400],
  ];
  for (const [route, init, status] of cases) {
    const allowed = await call(route, APP, init);
    t.is(allowed.status, status, `${route} ${status}`);
    t.is(allowed.headers.get('access-control-allow-origin'), APP, `${route} ${status}`);
    t.is(allowed.headers.get('access-control-expose-headers'), 'Retry-After', `${route} ${status}`);
    t.is(allowed.headers.get('vary'), 'Origin', `${route} ${status}`);
    await allowed.arrayBuffer();
    const other = await call(route, OTHER, init);
    t.is(other.status, status, `${route} ${status}, served all the same: the browser keeps it from the page`);
    t.is(other.headers.get('access-control-allow-origin'), null, `${route} ${status}`);
    t.is(other.headers.get('vary'), 'Origin', `${route} ${status}: a cache must not give one origin's answer to another`);
    await other.arrayBuffer();
  }
  // No Origin (curl, a server-side client): no CORS headers but Vary.
  const plain = await fetch(`${server.url}/health`);
  t.is(plain.headers.get('access-control-allow-origin'), null);
  t.is(plain.headers.get('vary'), 'Origin');
});

test('a streamed answer (server-sent events) carries Access-Control-Allow-Origin too', async (t) => {
  const generator = await Generator.load(GENERATOR, { device: 'cpu' });
  const s = await serve({ generator, port: 0, cors: { origins: [APP] } });
  try {
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { Origin: APP, 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: 'hello', max_tokens: 3, stream: true }),
    });
    t.is(res.status, 200);
    t.is(res.headers.get('content-type'), 'text/event-stream');
    t.is(res.headers.get('access-control-allow-origin'), APP);
    t.regex(await res.text(), /data: \[DONE\]\n\n$/);
  } finally {
    await s.close();
    generator.dispose();
  }
});

test("origins '*' answers every origin with *, and no Vary: Origin; maxAge and credentials are sent as given", async (t) => {
  const any = await serve({ encoder: enc, port: 0, cors: { origins: '*', maxAge: 60 } });
  const withCookies = await serve({ encoder: enc, port: 0, cors: { origins: [APP], credentials: true } });
  try {
    const pre = await preflight(`${any.url}/embed`, OTHER, 'POST');
    t.is(pre.status, 204);
    t.is(pre.headers.get('access-control-allow-origin'), '*');
    t.is(pre.headers.get('access-control-max-age'), '60');
    // An OPTIONS that is no preflight (no Access-Control-Request-Method) is told what the route takes.
    const plain = await fetch(`${any.url}/embed`, { method: 'OPTIONS', headers: { Origin: OTHER } });
    t.is(plain.status, 204);
    t.is(plain.headers.get('allow'), 'POST');
    t.is(plain.headers.get('access-control-allow-methods'), null);
    t.is(plain.headers.get('access-control-allow-origin'), '*');
    const res = await fetch(`${any.url}/health`, { headers: { Origin: OTHER } });
    t.is(res.headers.get('access-control-allow-origin'), '*');
    t.is(res.headers.get('vary'), null);
    // With credentials the origin is echoed, never "*" (browsers refuse that).
    const cred = await preflight(`${withCookies.url}/embed`, APP, 'POST');
    t.is(cred.headers.get('access-control-allow-origin'), APP);
    t.is(cred.headers.get('access-control-allow-credentials'), 'true');
    const answer = await fetch(`${withCookies.url}/health`, { headers: { Origin: APP } });
    t.is(answer.headers.get('access-control-allow-credentials'), 'true');
  } finally {
    await any.close();
    await withCookies.close();
  }
});

test('without cors: no CORS headers, and OPTIONS is a 405 whose message names the option', async (t) => {
  const s = await serve({ encoder: enc, port: 0 });
  try {
    const res = await preflight(`${s.url}/v1/embeddings`, APP, 'POST');
    t.is(res.status, 405);
    t.is(res.headers.get('allow'), 'POST');
    t.is(res.headers.get('access-control-allow-origin'), null);
    t.regex(((await res.json()) as any).error.message, /^\/v1\/embeddings takes POST, not OPTIONS; OPTIONS is a browser's CORS preflight: start the server with cors\.origins \(coltrast serve --cors-allow-origin <origin>\)/);
    const get = await fetch(`${s.url}/health`, { headers: { Origin: APP } });
    t.is(get.headers.get('access-control-allow-origin'), null);
    t.is(get.headers.get('vary'), null);
  } finally {
    await s.close();
  }
});

test('preflights are counted in /metrics apart from the requests of their route', async (t) => {
  const s = await serve({ encoder: enc, port: 0, cors: { origins: [APP] } });
  try {
    await (await preflight(`${s.url}/embed`, APP, 'POST')).arrayBuffer();
    await (await preflight(`${s.url}/embed`, APP, 'POST')).arrayBuffer();
    await (await preflight(`${s.url}/embed`, OTHER, 'POST')).arrayBuffer();
    await (await fetch(`${s.url}/embed`, { method: 'POST', headers: { Origin: APP, 'Content-Type': 'application/json' }, body: JSON.stringify({ inputs: 'a text' }) })).arrayBuffer();
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    t.regex(metrics, /^coltrast_cors_preflights_total\{route="\/embed",status="204"\} 2$/m);
    t.regex(metrics, /^coltrast_cors_preflights_total\{route="\/embed",status="403"\} 1$/m);
    t.regex(metrics, /^coltrast_requests_total\{route="\/embed",status="200"\} 1$/m);
    t.notRegex(metrics, /^coltrast_requests_total\{route="\/embed",status="(204|403)"\}/m, 'no preflight among the route\'s requests');
    t.regex(metrics, /^coltrast_request_seconds_count\{route="\/embed"\} 1$/m);
  } finally {
    await s.close();
  }
});

test('serve() refuses origins no browser sends, "*" in a list, "null", and credentials with "*", before listening', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ origins: [`${APP}/`] }, /^options\.cors\.origins: "https:\/\/app\.example\.com\/" is not an origin as browsers send it \(.*no path or trailing slash\), so no request would match it: give "https:\/\/app\.example\.com"$/],
    [{ origins: ['https://App.Example.com:443'] }, /is not an origin as browsers send it .*: give "https:\/\/app\.example\.com"$/],
    [{ origins: ['https://app.example.com/page'] }, /give "https:\/\/app\.example\.com"$/],
    [{ origins: ['app.example.com'] }, /^options\.cors\.origins: "app\.example\.com" is not an origin: give the scheme, host and port that a browser sends in its Origin header/],
    [{ origins: ['https://user@app.example.com'] }, /is not an origin: give the scheme, host and port/],
    [{ origins: [APP, '*'] }, /^options\.cors\.origins: "\*" allows every origin on its own \(origins: '\*'\), not as one origin of a list$/],
    [{ origins: ['null'] }, /"null" is the origin of every sandboxed frame and file:\/\/ page/],
    [{ origins: [] }, /^options\.cors\.origins must be '\*' or a non-empty array of origins .*, got an array of length 0$/],
    [{ origins: APP }, /^options\.cors\.origins must be '\*' or a non-empty array of origins/],
    [{ origins: [42] }, /^options\.cors\.origins\[\] must be an origin such as "https:\/\/app\.example\.com", got number 42$/],
    [{}, /^options\.cors needs origins/],
    [{ origins: '*', credentials: true }, /^options\.cors\.credentials cannot go with origins '\*': browsers refuse credentials/],
    [{ origins: [APP], maxAge: -1 }, /^options\.cors\.maxAge must be a whole number of seconds >= 0, got number -1$/],
    [{ origins: [APP], methods: ['GET'] }, /^unknown option options\.cors\.methods \(known options: origins, maxAge, credentials\)$/],
  ];
  for (const [cors, message] of cases) {
    const e = await rejection(() => serve({ encoder: enc, port: 0, cors: cors as never }));
    t.true(e instanceof ColtrastError, JSON.stringify(cors));
    t.is(e.code, 'INVALID_ARGUMENT');
    t.regex(e.message, message, JSON.stringify(cors));
  }
  // Non-web schemes with a host are origins too (a browser extension's page).
  const extension = await serve({ encoder: enc, port: 0, cors: { origins: ['chrome-extension://abcdefghijklmnop', 'http://[::1]:8080'] } });
  try {
    const res = await preflight(`${extension.url}/embed`, 'chrome-extension://abcdefghijklmnop', 'POST');
    t.is(res.headers.get('access-control-allow-origin'), 'chrome-extension://abcdefghijklmnop');
  } finally {
    await extension.close();
  }
});

/** `coltrast serve` of the tiny model with `args` (helpers/serve-cli's runServe). */
function serveModel(args: string[], whileUp?: (url: string) => Promise<void>) {
  return runServe(['--model', FIXTURE, '--port', '0', '--device', 'cpu', ...args], whileUp);
}

test('coltrast serve --cors-allow-origin: origins separated by commas are allowed, a malformed one is refused with exit status 2', async (t) => {
  const r = await serveModel(['--cors-allow-origin', `${APP}, ${LOCAL}`], async (url) => {
    for (const origin of [APP, LOCAL]) {
      const res = await preflight(`${url}/v1/embeddings`, origin, 'POST');
      t.is(res.status, 204);
      t.is(res.headers.get('access-control-allow-origin'), origin);
    }
    t.is((await preflight(`${url}/v1/embeddings`, OTHER, 'POST')).status, 403);
  });
  t.is(r.code, 0, r.stderr);
  const any = await serveModel(['--cors-allow-origin', '*'], async (url) => {
    t.is((await preflight(`${url}/embed`, OTHER, 'POST')).headers.get('access-control-allow-origin'), '*');
  });
  t.is(any.code, 0, any.stderr);
  const bad = await serveModel(['--cors-allow-origin', `${APP}/`]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--cors-allow-origin: "https:\/\/app\.example\.com\/" is not an origin as browsers send it .*: give "https:\/\/app\.example\.com"/);
  const empty = await serveModel(['--cors-allow-origin', '']);
  t.is(empty.code, 2);
  t.regex(empty.stderr, /--cors-allow-origin must be '\*' or a non-empty array of origins/);
});
