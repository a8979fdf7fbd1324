// coltrast serve and the coltrast command as a careful user (and a careless or hostile client) drives them: request
// lines and headers that are not what a client library sends, and a shutdown while clients keep their connections.
// Each test is a bug found by probing, checked to fail without its fix.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { Encoder, serve, type Server } from '../lib';
import { FIXTURE, maxAbsDiff, tempDir } from './helpers/fixture';
import { until } from './helpers/wait';
import { rows } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');

let enc: Encoder;
let server: Server;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  server = await serve({ encoder: enc, port: 0 });
});
test.after.always(async () => {
  await server?.close();
  enc?.dispose();
});

/** What the server answers to `raw`, bytes as sent on a new connection (status line, headers and body as text). */
function rawRequest(raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1', () => socket.write(raw));
    let answer = '';
    socket.on('data', (d) => {
      answer += d;
      // One answer is enough: its body is as long as its Content-Length says.
      const [head, body] = answer.split('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(head ?? '');
      if (length && body !== undefined && Buffer.byteLength(body) >= Number(length[1])) socket.end();
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
  });
}

function request(path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, path, method: 'POST', headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a request target that is not a URL gets a 400, and the server goes on serving', async (t) => {
  // An absolute-form target (as proxies send) that does not parse: new URL() threw in the request handler, and the
  // uncaught exception ended the whole server.
  const answer = await rawRequest('GET http://[bad/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.regex(answer, /^HTTP\/1\.1 400 /);
  t.is(JSON.parse(answer.split('\r\n\r\n')[1]).error, 'the request target "http://[bad/health" is not a URL path: send a path such as /v1/embeddings');
  const health = await fetch(`${server.url}/health`);
  t.is(health.status, 200);
  // An absolute-form target that parses is served by its path.
  t.regex(await rawRequest(`GET http://127.0.0.1:${server.port}/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 200 [^]*\{"status":"ok"\}/);
});

test('a path that starts with two slashes (a base URL with a trailing slash) is named as sent in the 404', async (t) => {
  // new URL('//embed', base) reads "embed" as a host name: the 404 said "no route /", which hides the mistake.
  const { status, json } = await request('//embed', JSON.stringify({ inputs: 'a' }));
  t.is(status, 404);
  t.regex(json.error, /^no route \/\/embed \(routes: \/health, /);
});

test('a gzip-compressed body is refused with 415, naming the encoding, rather than as JSON that does not parse', async (t) => {
  const { status, json } = await request('/v1/embeddings', gzipSync(JSON.stringify({ input: 'hello' })), { 'Content-Encoding': 'gzip' });
  t.is(status, 415);
  t.is(json.error.message, 'Content-Encoding gzip is not supported: send the request body uncompressed');
  // identity is no encoding at all.
  t.is((await request('/embed', JSON.stringify({ inputs: 'hello' }), { 'Content-Encoding': 'identity' })).status, 200);
});

test('a JSON body that starts with a byte order mark is read as the JSON after it (RFC 8259 lets parsers ignore it)', async (t) => {
  const { status, json } = await request('/embed', `\uFEFF${JSON.stringify({ inputs: ['hello'] })}`);
  t.is(status, 200);
  t.is(maxAbsDiff(json[0], rows(await enc.embed(['hello']))[0]), 0);
});

test('a request in progress when close() begins is answered, with Connection: close so that its keep-alive client sends nothing more', async (t) => {
  // The model's call waits for the test: the request is in progress, deterministically, when close() begins.
  const held = await Encoder.load(FIXTURE, { device: 'cpu' });
  let release = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  const embedCounting = held.embedCounting.bind(held);
  held.embedCounting = async (texts, options) => {
    await gate;
    return embedCounting(texts, options);
  };
  const closing = await serve({ encoder: held, port: 0 });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const answer = new Promise<{ status: number; connection: string | undefined; body: any }>((resolve, reject) => {
      const req = http.request(`${closing.url}/embed`, { method: 'POST', agent, headers: { 'Content-Type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ inputs: ['hello'] }));
    });
    await until('the request to be queued', () => closing.stats().embed.waiting === 1);
    const closed = closing.close();
    release();
    const { status, connection, body } = await answer;
    t.is(status, 200);
    t.is(maxAbsDiff(body[0], rows(await enc.embed(['hello']))[0]), 0);
    // keep-alive here let the client send its next request on a connection the server was about to close.
    t.is(connection, 'close');
    await closed;
  } finally {
    agent.destroy();
    await closing.close();
    held.dispose();
  }
});

/** Runs the coltrast command with `input` on its standard input; its exit status (null: stopped after 30 s) and what it printed. */
function cli(args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // A command that should have refused its flags and did not (a server that started) is stopped, not waited for.
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

test('coltrast embed - reads its texts from the standard input, one a line, as from a file', async (t) => {
  // "-" was taken for a file's name: "input file - does not exist".
  const { code, stdout, stderr } = await cli(['embed', '-', '--model', FIXTURE, '--device', 'cpu'], 'fast search\n\na tiny random bert\n');
  t.is(code, 0, stderr);
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(
    lines.map((l) => l.index),
    [0, 1],
  );
  const expected = rows(await enc.embed(['fast search', 'a tiny random bert']));
  lines.forEach((l, i) => t.true(maxAbsDiff(l.embedding, expected[i]) <= 5e-7, 'written with 6 decimals'));
  const empty = await cli(['embed', '-', '--model', FIXTURE], '\n');
  t.is(empty.code, 2);
  t.regex(empty.stderr, /^coltrast: input file - holds no texts/);
});

test('an --output that is the command\'s input file (by any path) is refused before the input is replaced', async (t) => {
  // The texts were read whole, then the embeddings renamed over them: the user's input was gone.
  const dir = tempDir();
  const input = path.join(dir, 'my texts.txt');
  fs.writeFileSync(input, 'fast search\na tiny random bert\n');
  fs.symlinkSync(input, path.join(dir, 'link.txt'));
  for (const output of [input, path.join(dir, '.', 'my texts.txt'), path.join(dir, 'link.txt')]) {
    const { code, stderr } = await cli(['embed', input, '--model', FIXTURE, '--output', output], '');
    t.is(code, 2);
    t.is(stderr, `coltrast: --output ${output} is the input file ${input}: writing it would replace what the command reads; give another path\n`);
  }
  const pairs = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(pairs, `${JSON.stringify({ query: 'q', positive: 'p' })}\n`);
  const mine = await cli(['mine', '--data', pairs, '--output', pairs, '--model', FIXTURE], '');
  t.is(mine.code, 2);
  t.regex(mine.stderr, /^coltrast: --output \S+ is --data \S+: writing it would replace what the command reads; give another path$/m);
  t.is(fs.readFileSync(input, 'utf8'), 'fast search\na tiny random bert\n');
  t.is(fs.readFileSync(pairs, 'utf8'), `${JSON.stringify({ query: 'q', positive: 'p' })}\n`);
});

test('coltrast serve refuses flags that would do nothing, and a model name that names nothing', async (t) => {
  // --save-interval without --writable and --mmap without --index were taken and ignored; --name '' served a model
  // whose id (in /v1/models and every answer) was empty.
  for (const [flags, message] of [
    [['--save-interval', '5'], '--save-interval is how soon --writable saves the changes clients make: give --writable (and --index <dir>) too'],
    [['--mmap'], "--mmap maps an index's files instead of reading them: give --index <dir> too"],
    [['--name', ''], '--name must be a non-empty string, got ""'],
  ] as const) {
    const { code, stderr } = await cli(['serve', '--model', FIXTURE, '--port', '0', '--device', 'cpu', ...flags], '');
    t.is(code, 2, flags.join(' '));
    t.is(stderr, `coltrast: ${message}\n`);
  }
  const refused = await serve({ encoder: enc, port: 0, modelName: '' }).then(
    (started) => started.close().then(() => 'served'),
    (error: Error) => error.message,
  );
  t.is(refused, 'options.modelName must be a non-empty string, got the string ""');
});

test('an API key that no client could send (a space, a line break, non-ASCII) is refused at start, without repeating it', async (t) => {
  // "Authorization: Bearer <key>" carries one word of ASCII: such a key answered every request with 401.
  for (const apiKey of ['my key', 'sk-test\n', 'clé']) {
    const refused = await serve({ encoder: enc, port: 0, apiKey }).then(
      (started) => started.close().then(() => 'served'),
      (error: Error) => error.message,
    );
    t.is(refused, 'options.apiKey must be printable ASCII without spaces or line breaks: clients send it as one word, "Authorization: Bearer <key>", and no request could match this one');
  }
});
