#!/usr/bin/env node
// Fused loss ops against the eager libtorch baseline (the same functions with reference: true: einsum +
// masked max + sum, matmul + cross_entropy, libtorch autograd for the backward), in one process on the
// same inputs: median time of forward + backward over many runs, the two alternating run by run: the whole
// call (copies from and to JS included) and the op alone (computeMs: the device synchronized on both sides).
// On CUDA the contrastive loss runs in both strategies (fused kernels; chunked: cuBLAS products + our
// kernels). Each row also says how far its loss / scores and gradients are from eager's (or, where eager ran
// out of memory, the first strategy's): a correctness check at sizes the tests do not reach. Uses the built
// package (npm run build). On CUDA each row also has its warm-up call's peak GPU memory (peakMiB: the caching
// allocator's peak during the call less what was allocated before it; the call's copies of the inputs and
// gradients included, so the rows of one shape compare).
//   node scripts/bench/ops.js [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--runs 20] [--json out.json]
//                             [--ops maxsim,contrastive,late_interaction]   (default: all three)
//                             [--max-batch B]   (only the shapes with at most B queries)
'use strict';
const os = require('node:os');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { ops, runtimeInfo, cudaMemory } = require('../../dist');

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    runs: { type: 'string', default: '20' },
    json: { type: 'string' },
    ops: { type: 'string', default: 'maxsim,contrastive,late_interaction' },
    'max-batch': { type: 'string' },
  },
});
const runs = Number(values.runs);

const { seededRandom } = require('../../dist/random');
const { median } = require('./stats');
const random = (seed) => {
  const next = seededRandom(seed).next;
  return () => next() - 0.5;
};
const floats = (r, dims) => ({ dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b) }, r) });
// Unit rows, as embeddings are in training: logits q.c / tau stay within +-1/tau.
function unitRows(t) {
  const dim = t.dims[t.dims.length - 1];
  for (let r = 0; r < t.data.length; r += dim) {
    let norm = 0;
    for (let k = 0; k < dim; k++) norm += t.data[r + k] ** 2;
    norm = Math.sqrt(norm);
    for (let k = 0; k < dim; k++) t.data[r + k] /= norm;
  }
  return t;
}
const fullMask = (dims) => ({ dims, data: new Uint8Array(dims[0] * dims[1]).fill(1) });

// Median ms of each function over `count` rounds, { call, op }: the whole call and the op alone (its
// computeMs). The functions alternate within each round, so a change in machine load (a shared box, thermal
// limits) shifts both alike and the ratio stays meaningful. A function whose warm-up runs out of memory is
// reported as 'OOM' and not timed. Each also has `result`, its warm-up's (null when out of memory), and on CUDA
// `peakMiB`, the warm-up's peak GPU memory beyond what was allocated before it.
async function medians(fns, count = runs) {
  const ok = [];
  const results = [];
  const peaks = [];
  const gpu = values.device.startsWith('cuda') ? values.device : null;
  for (const fn of fns) {
    try {
      const before = gpu ? cudaMemory(gpu, { resetPeak: true }).allocatedBytes : 0;
      results.push(await fn()); // warm-up
      peaks.push(gpu ? +((cudaMemory(gpu).peakAllocatedBytes - before) / 2 ** 20).toFixed(1) : undefined);
      ok.push(true);
    } catch (error) {
      if (!/out of memory/i.test(String(error.message))) throw error;
      ok.push(false);
      results.push(null);
      peaks.push(undefined);
    }
  }
  const times = fns.map(() => ({ call: [], op: [] }));
  for (let i = 0; i < count; i++) {
    for (const [k, fn] of fns.entries()) {
      if (!ok[k]) continue;
      const start = process.hrtime.bigint();
      const result = await fn();
      times[k].call.push(Number(process.hrtime.bigint() - start) / 1e6);
      times[k].op.push(result.computeMs);
    }
  }
  return times.map((t, k) =>
    ok[k] ? { call: median(t.call), op: median(t.op), result: results[k], peakMiB: peaks[k] } : { call: 'OOM', op: 'OOM', result: null },
  );
}

// How far an op's output is from another run's (eager's, or where eager ran out of memory the first CUDA
// strategy's): max |a - b| / max |b| over the value and over each input gradient, the largest of them.
function relDiff(a, b) {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / Math.max(scale, 1e-30);
}
function agreement(result, reference) {
  if (!result || !reference) return '-';
  const parts = [relDiff(result.value, reference.value)];
  for (const [name, grad] of Object.entries(result.grads ?? {})) {
    if (grad instanceof Float32Array) parts.push(relDiff(grad, reference.grads[name]));
  }
  return Math.max(...parts).toExponential(2);
}

const CASES = {
  cpu: [
    { op: 'maxsim', B: 16, N: 64, Lq: 32, Ld: 128, dim: 128 },
    { op: 'contrastive', B: 4096, N: 4096, dim: 384 },
    { op: 'late_interaction', B: 16, N: 64, Lq: 32, Ld: 128, dim: 128 },
  ],
  cuda: [
    { op: 'maxsim', B: 32, N: 256, Lq: 32, Ld: 180, dim: 128 },
    // Both CUDA strategies, each a row, timed in the same rounds as one eager run.
    { op: 'contrastive', B: 16384, N: 16384, dim: 384, strategies: ['fused', 'chunked'] },
    { op: 'late_interaction', B: 32, N: 256, Lq: 32, Ld: 180, dim: 128 },
    // Where eager runs out of memory on an 80 GB GPU; the fused loss needs O(B) beyond the inputs, the
    // chunked one a chunk of rows.
    { op: 'contrastive', B: 262144, N: 262144, dim: 384, runs: 3, strategies: ['fused', 'chunked'] },
  ],
};

async function main() {
  const device = values.device;
  const kind = device.startsWith('cuda') ? 'cuda' : 'cpu';
  const rows = [];
  const only = values.ops.split(',');
  const maxBatch = values['max-batch'] === undefined ? Infinity : Number(values['max-batch']);
  for (const c of CASES[kind].filter((x) => only.includes(x.op) && x.B <= maxBatch)) {
    const r = random(1);
    const common = { device, dtype: values.dtype };
    let run;
    if (c.op === 'contrastive') {
      const q = unitRows(floats(r, [c.B, c.dim]));
      const cand = unitRows(floats(r, [c.N, c.dim]));
      run = (reference, strategy) => ops.contrastiveLoss(q, cand, { ...common, strategy, temperature: 0.05, gradOutput: 1, reference });
    } else {
      const q = unitRows(floats(r, [c.B, c.Lq, c.dim]));
      const d = unitRows(floats(r, [c.N, c.Ld, c.dim]));
      const qm = fullMask([c.B, c.Lq]);
      const dm = fullMask([c.N, c.Ld]);
      const g = new Float32Array(c.B * c.N).fill(1);
      run =
        c.op === 'maxsim'
          ? (reference) => ops.maxsim(q, qm, d, dm, { ...common, gradOutput: g, reference })
          : (reference) => ops.lateInteractionLoss(q, qm, d, dm, { ...common, gradOutput: 1, reference });
    }
    const { strategies = [undefined], ...shape } = c;
    const timed = await medians([...strategies.map((strategy) => () => run(false, strategy)), () => run(true)], c.runs);
    const eager = timed.pop();
    const reference = eager.result ?? timed[0].result;
    const ms = (x) => (typeof x === 'number' ? +x.toFixed(2) : x);
    for (const [k, fused] of timed.entries()) {
      const speedup = typeof fused.op === 'number' && typeof eager.op === 'number' ? +(eager.op / fused.op).toFixed(2) : '-';
      rows.push({
        ...shape,
        ...(strategies[k] ? { strategy: strategies[k] } : {}),
        dtype: values.dtype,
        fusedMs: ms(fused.op),
        eagerMs: ms(eager.op),
        speedup,
        fusedCallMs: ms(fused.call),
        eagerCallMs: ms(eager.call),
        ...(fused.peakMiB !== undefined ? { fusedPeakMiB: fused.peakMiB } : {}),
        ...(eager.peakMiB !== undefined ? { eagerPeakMiB: eager.peakMiB } : {}),
        // against eager, or (eager out of memory) the first strategy; '-' for that strategy itself
        maxRelDiff: reference === fused.result ? '-' : agreement(fused.result, reference),
        against: eager.result ? 'eager' : strategies[0],
      });
    }
  }
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    device,
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
    threads: info.threads,
    torch: info.torchVersion,
    blas: info.blas.kind,
    runs,
    note: 'fusedMs / eagerMs: the op alone (computeMs, device synchronized); *CallMs: the whole call, copies from and to JS included',
    rows,
  };
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  const memory = rows.some((row) => row.fusedPeakMiB !== undefined);
  console.log(`| op | shape | dtype | coltrast ms | eager ms | speedup | whole call: coltrast ms | eager ms |${memory ? ' peak GPU MiB: coltrast | eager |' : ''} max rel diff (value, gradients) |`);
  console.log(`|---|---|---|---|---|---|---|---|${memory ? '---|---|' : ''}---|`);
  for (const row of rows) {
    const shape = row.op === 'contrastive' ? `B=${row.B} N=${row.N} dim=${row.dim}` : `B=${row.B} N=${row.N} Lq=${row.Lq} Ld=${row.Ld} dim=${row.dim}`;
    const op = `${row.op}${row.strategy ? ` (${row.strategy})` : ''} fwd+bwd`;
    const speedup = `${row.speedup}${typeof row.speedup === 'number' ? '×' : ''}`;
    const diff = row.maxRelDiff === '-' ? '-' : `${row.maxRelDiff} vs ${row.against}`;
    const peaks = memory ? ` ${row.fusedPeakMiB ?? '-'} | ${row.eagerPeakMiB ?? 'OOM'} |` : '';
    console.log(`| ${op} | ${shape} | ${row.dtype} | ${row.fusedMs} | ${row.eagerMs} | ${speedup} | ${row.fusedCallMs} | ${row.eagerCallMs} |${peaks} ${diff} |`);
  }
  console.log(`\n${result.date}, ${device}, ${result.cpu}, ${result.threads} threads, libtorch ${result.torch}, BLAS ${result.blas}, median of ${runs}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
