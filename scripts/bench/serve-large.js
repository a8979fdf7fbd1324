#!/usr/bin/env node
// coltrast serve's large answers: how long the event loop is held while the server writes one big JSON answer
// (the longest gap of a 1 ms setInterval in the server's process, from the request to its last byte), the request's
// total time, the time to its first byte, and the answer's size and SHA-256 (the same model and texts give the same
// digest, so two builds' answers can be compared byte for byte). The server runs in this process, over a random
// BERT of --width (one layer: the model's time is not what is measured); the client only counts and hashes the
// bytes. Uses the built package (npm run build).
//   node scripts/bench/serve-large.js [--routes embed,embed_all,v1-float,v1-base64,tokenize] [--width 1024]
//                                     [--texts 2048] [--words 8] [--rounds 3] [--dist dist] [--json out.json]
// --dist: the built package to measure (another build's dist folder, to compare two builds on one machine).
// Each number is the median of the rounds, after a warm-up request.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    routes: { type: 'string', default: 'embed,v1-float,v1-base64,tokenize' },
    width: { type: 'string', default: '1024' },
    texts: { type: 'string', default: '2048' },
    words: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    json: { type: 'string' },
  },
});
const { Encoder, serve } = require(path.resolve(values.dist, 'index.js'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert.js'));
// The measure is this checkout's, whichever build is measured (an older one may lack it).
const { longestStall } = require(path.join(ROOT, 'dist', 'turns.js'));

const WORDS = 'the quick brown fox jumps over lazy dog model text search cat'.split(' ');

const ROUTES = {
  embed: (inputs) => ['/embed', { inputs }],
  embed_all: (inputs) => ['/embed_all', { inputs }],
  'v1-float': (input) => ['/v1/embeddings', { input }],
  'v1-base64': (input) => ['/v1/embeddings', { input, encoding_format: 'base64' }],
  tokenize: (inputs) => ['/tokenize', { inputs: inputs.map((t) => t.repeat(40)) }],
};

/** POSTs `body`; resolves with the status, the bytes' count and digest, and the times to the first and last byte. */
function post(url, body) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let first;
    let bytes = 0;
    let start = '';
    const hash = crypto.createHash('sha256');
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      res.on('data', (chunk) => {
        first ??= performance.now() - started;
        bytes += chunk.length;
        hash.update(chunk);
        if (start.length < 300) start += chunk.toString('utf8', 0, 300);
      });
      res.on('end', () => resolve({ status: res.statusCode, start: start.slice(0, 300), chunked: res.headers['transfer-encoding'] === 'chunked', bytes, sha256: hash.digest('hex'), firstMs: first, totalMs: performance.now() - started }));
      res.on('error', reject);
      // An answer cut short (its last chunk missing): what a client sees when the server fails midway.
      res.on('aborted', () => reject(new Error(`the answer was cut short after ${bytes} bytes`)));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function main() {
  const width = Number(values.width);
  const count = Number(values.texts);
  const dir = makeRandomBert(path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-serve-large-')), 'model'), {
    hiddenSize: width, layers: 1, heads: 4, intermediate: 64, vocabSize: 198, maxPositions: 64, seed: 3,
  });
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  const server = await serve({ encoder, port: 0, maxInputs: count, maxBatchTexts: count, batchSize: 256 });
  const texts = Array.from({ length: count }, (_, i) => Array.from({ length: Number(values.words) }, (_, j) => WORDS[(i * 7 + j * 3) % WORDS.length]).join(' '));
  const results = [];
  for (const name of values.routes.split(',')) {
    const [route, body] = ROUTES[name](texts);
    const rounds = [];
    for (let r = 0; r <= Number(values.rounds); r++) {
      const { result: answer, stallMs: stall } = await longestStall(() => post(server.url + route, body));
      if (answer.status !== 200) throw new Error(`${route} answered ${answer.status}: ${answer.start}`);
      if (r > 0) rounds.push({ ...answer, stallMs: stall });
    }
    const median = (key) => [...rounds].sort((a, b) => a[key] - b[key])[Math.floor(rounds.length / 2)][key];
    const digests = new Set(rounds.map((a) => a.sha256));
    const row = {
      route: name, bytes: rounds[0].bytes, chunked: rounds[0].chunked, sha256: [...digests].join(' '),
      stallMs: median('stallMs'), maxStallMs: Math.max(...rounds.map((a) => a.stallMs)), firstByteMs: median('firstMs'), totalMs: median('totalMs'),
    };
    results.push(row);
    console.log(`${name.padEnd(10)} ${(row.bytes / 2 ** 20).toFixed(1).padStart(7)} MiB${row.chunked ? ' chunked' : ''}  longest stall ${row.stallMs.toFixed(0)} ms (max ${row.maxStallMs.toFixed(0)})  first byte ${row.firstByteMs.toFixed(0)} ms  total ${row.totalMs.toFixed(0)} ms  sha256 ${row.sha256.slice(0, 16)}`);
  }
  await server.close();
  encoder.dispose();
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ width, texts: count, words: Number(values.words), results }, null, 2) + '\n');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
