#!/usr/bin/env node
// coltrast serve under load: C clients, each sending one request after another (a sentence per request, or
// --texts-per-request), to POST /v1/embeddings of a `coltrast serve` child process. Each setting runs twice:
// with the server's batching across requests (--max-batch 256, the default) and without it (--max-batch 1:
// every request its own model call, which is what a server without a queue does). Reports requests/s,
// texts/s and the latency percentiles. Uses the built package (npm run build).
//   node scripts/bench/serve.js [--model default] [--concurrency 1,8,32] [--requests 400] [--texts-per-request 1]
//                               [--rounds 3] [--device cpu] [--threads n] [--json out.json]
// Each number is the median of the rounds (by requests/s); the servers run one after the other, warmed up first.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'default' },
    concurrency: { type: 'string', default: '1,8,32' },
    requests: { type: 'string', default: '400' },
    'texts-per-request': { type: 'string', default: '1' },
    rounds: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string' },
    json: { type: 'string' },
  },
});
const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const perRequest = Number(values['texts-per-request']);
const requests = Number(values.requests);

// Sentences of the bundled READMEs: real text of everyday length.
const SENTENCES = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8'))
  .projects.flatMap((p) => p.readme_content.split(/(?<=[.!?])\s+/))
  .map((s) => s.replace(/[#*`]/g, '').trim())
  .filter((s) => s.split(/\s+/).length >= 5);

/** Starts `coltrast serve` and resolves with its URL and the child. */
function startServer(maxBatch) {
  const args = [CLI, 'serve', '--model', values.model, '--port', '0', '--device', values.device, '--max-batch', String(maxBatch)];
  if (values.threads) args.push('--threads', values.threads);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1], child });
    });
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`coltrast serve exited with ${code}: ${out}`)));
  });
}

async function load(url, concurrency) {
  let next = 0;
  const latencies = [];
  const client = async () => {
    while (next < requests) {
      const i = next++;
      const input = Array.from({ length: perRequest }, (_, j) => SENTENCES[(i * perRequest + j) % SENTENCES.length]);
      const t0 = process.hrtime.bigint();
      const res = await fetch(`${url}/v1/embeddings`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ input }) });
      const body = await res.json();
      if (res.status !== 200 || body.data.length !== perRequest) throw new Error(`request ${i}: ${res.status} ${JSON.stringify(body).slice(0, 200)}`);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { seconds, requestsPerSecond: requests / seconds, p50: at(0.5), p99: at(0.99) };
}

async function main() {
  const rows = [];
  console.log(`coltrast serve, POST /v1/embeddings, ${perRequest} text(s) per request, ${requests} requests per round, median of ${values.rounds} rounds, model ${values.model}, ${values.device}`);
  console.log('| clients | batching across requests | requests/s | texts/s | p50 ms | p99 ms | texts per model call |');
  console.log('|---|---|---|---|---|---|---|');
  for (const maxBatch of [256, 1]) {
    const { url, child } = await startServer(maxBatch);
    try {
      await load(url, 8); // warm-up: the first calls allocate, and every sentence length is seen once
      for (const concurrency of values.concurrency.split(',').map(Number)) {
        const before = await (await fetch(`${url}/metrics`)).text();
        const rounds = [];
        for (let i = 0; i < Number(values.rounds); i++) rounds.push(await load(url, concurrency));
        const r = rounds.sort((a, b) => a.requestsPerSecond - b.requestsPerSecond)[Math.floor(rounds.length / 2)];
        const after = await (await fetch(`${url}/metrics`)).text();
        const metric = (text, name) => Number(new RegExp(`^${name}\\{queue="embed"\\} (\\d+)$`, 'm').exec(text)[1]);
        const calls = metric(after, 'coltrast_model_calls_total') - metric(before, 'coltrast_model_calls_total');
        const inputs = metric(after, 'coltrast_model_inputs_total') - metric(before, 'coltrast_model_inputs_total');
        const row = {
          clients: concurrency,
          batching: maxBatch > 1,
          maxBatch,
          requestsPerSecond: +r.requestsPerSecond.toFixed(1),
          textsPerSecond: +(r.requestsPerSecond * perRequest).toFixed(1),
          p50Ms: +r.p50.toFixed(1),
          p99Ms: +r.p99.toFixed(1),
          textsPerCall: +(inputs / calls).toFixed(1),
        };
        rows.push(row);
        console.log(`| ${row.clients} | ${row.batching ? `yes (--max-batch ${maxBatch})` : 'no (--max-batch 1)'} | ${row.requestsPerSecond} | ${row.textsPerSecond} | ${row.p50Ms} | ${row.p99Ms} | ${row.textsPerCall} |`);
      }
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.on('exit', resolve));
    }
  }
  if (values.json) {
    const { runtimeInfo } = require('../../dist');
    const info = runtimeInfo();
    const result = {
      date: new Date().toISOString(),
      device: values.device,
      cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
      threads: values.threads ? Number(values.threads) : info.threads,
      torch: info.torchVersion,
      blas: info.blas.kind,
      model: values.model,
      textsPerRequest: perRequest,
      requests,
      rounds: Number(values.rounds),
      rows,
    };
    fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
