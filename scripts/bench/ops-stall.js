#!/usr/bin/env node
// The event loop while an op (lib/ops.ts) with large inputs runs: the longest gap of a 1 ms setInterval from the call
// to its result, for MaxSim of a few queries against --docs documents of --length tokens (--dim wide), forward only
// and with its backward (whose document gradients are as large as the documents). Beside it, the op's own time
// (computeMs) and the call's total, and a copy of the documents in JavaScript (Float32Array.slice) for scale.
// Uses the built package (npm run build).
//   node scripts/bench/ops-stall.js [--docs 6000] [--length 100] [--dim 128] [--rounds 3] [--dist dist] [--json out.json]
// --dist: the built package to measure (another checkout's dist folder, whose addon is its own build/Release, to
// compare two builds on one machine). Each number is the median of the rounds, after a warm-up call.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '6000' },
    length: { type: 'string', default: '100' },
    dim: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '3' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    json: { type: 'string' },
  },
});
const [N, L, D, rounds] = ['docs', 'length', 'dim', 'rounds'].map((k) => Number(values[k]));
const { ops } = require(path.resolve(values.dist, 'index.js'));
// The measure is this checkout's, whichever build is measured (an older one may lack it).
const { longestStall } = require(path.join(ROOT, 'dist', 'turns.js'));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

(async () => {
  const d = new Float32Array(N * L * D);
  for (let i = 0; i < d.length; i++) d[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  const q = new Float32Array(4 * 32 * D).fill(0.01);
  const args = [{ dims: [4, 32, D], data: q }, { dims: [4, 32], data: new Uint8Array(4 * 32).fill(1) }, { dims: [N, L, D], data: d }, { dims: [N, L], data: new Uint8Array(N * L).fill(1) }];
  const rows = [];
  const copies = [];
  for (let r = 0; r < rounds; r++) {
    const started = performance.now();
    d.slice();
    copies.push(performance.now() - started);
  }
  for (const backward of [false, true]) {
    const options = () => (backward ? { gradOutput: new Float32Array(4 * N).fill(1) } : {});
    await ops.maxsim(...args, options()); // warm-up
    const stalls = [];
    const totals = [];
    const computes = [];
    for (let r = 0; r < rounds; r++) {
      const started = performance.now();
      const { result, stallMs: stall } = await longestStall(() => ops.maxsim(...args, options()));
      totals.push(performance.now() - started);
      stalls.push(stall);
      computes.push(result.computeMs);
    }
    rows.push({ backward, stallMs: median(stalls), totalMs: median(totals), opMs: median(computes) });
  }
  const out = {
    date: new Date().toISOString(),
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}`,
    dist: path.resolve(values.dist),
    documentsMB: d.byteLength / 1e6,
    shape: { queries: 4, queryTokens: 32, docs: N, docTokens: L, dim: D },
    jsCopyMs: median(copies),
    rows,
  };
  console.log(`maxsim: 4 queries of 32 tokens against ${N} documents of ${L} tokens, dim ${D} (${out.documentsMB.toFixed(0)} MB); a JS copy of the documents ${out.jsCopyMs.toFixed(0)} ms`);
  for (const r of rows) {
    console.log(`  ${r.backward ? 'forward + backward' : 'forward'}: event loop held at most ${r.stallMs.toFixed(0)} ms; call ${r.totalMs.toFixed(0)} ms, op ${r.opMs.toFixed(0)} ms`);
  }
  if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(out, null, 2)}\n`);
})();
