// The ops (lib/ops.ts, native/ops/ops_wrap.cc) with inputs and results of hundreds of megabytes: the addon copied the
// typed arrays into its own memory on the JS thread before the work, and its results into fresh Float32Arrays after
// it, holding the event loop over a second for 300 MB of documents. It now holds them and copies on the worker, and
// hands results over as arrays on their own memory. The measure is against a copy of the documents in JS in the same
// run (the old code made at least one such copy on the JS thread, and one of the gradients), so a slow or busy
// machine moves both sides (serial: another test's JavaScript would stall the loop measured). Then what holding the
// arrays could get wrong: views at odd offsets of one shared buffer, many calls in flight, results kept through
// allocation pressure and sent to a worker thread, an error inside the native work, a buffer transferred away.
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { ColtrastError, ops } from '../lib';
import { loadAddon } from '../lib/native';
import { longestStall } from '../lib/turns';

const WIDTH = 128;
const DOC_TOKENS = 100;
const DOCS = 4000; // 4000 × 100 × 128 floats: 205 MB of document token vectors

test.serial('maxsim with 200 MB of documents and their gradients holds the event loop far less than one copy of them in JS', async (t) => {
  const d = new Float32Array(DOCS * DOC_TOKENS * WIDTH);
  for (let i = 0; i < d.length; i += 97) d[i] = ((i % 1000) - 500) / 1000;
  const dmask = new Uint8Array(DOCS * DOC_TOKENS).fill(1);
  const q = new Float32Array(2 * 8 * WIDTH).fill(0.01);
  const qmask = new Uint8Array(2 * 8).fill(1);
  const copies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    const copy = d.slice();
    copies.push(performance.now() - started);
    t.is(copy.length, d.length);
  }
  const stalls: number[] = [];
  for (let i = 0; i < 2; i++) {
    const { result, stallMs } = await longestStall(() =>
      ops.maxsim({ dims: [2, 8, WIDTH], data: q }, { dims: [2, 8], data: qmask }, { dims: [DOCS, DOC_TOKENS, WIDTH], data: d }, { dims: [DOCS, DOC_TOKENS], data: dmask }, { gradOutput: new Float32Array(2 * DOCS).fill(1) }),
    );
    stalls.push(stallMs);
    t.is(result.value.length, 2 * DOCS);
    t.is(result.grads!.d!.length, d.length);
    t.true(result.value.every((v) => Number.isFinite(v)));
  }
  const copy = Math.min(...copies);
  const stall = Math.min(...stalls);
  t.log(`longest stall ${stalls.map((s) => s.toFixed(0)).join(', ')} ms; a JS copy of the documents ${copies.map((c) => c.toFixed(0)).join(', ')} ms`);
  t.true(stall < copy / 2, `the event loop was held ${stall.toFixed(0)} ms, a JS copy of the documents takes ${copy.toFixed(0)} ms`);
});

test.serial("an op's results keep their numbers after the call is gone and garbage collected, and pass to other threads whole", async (t) => {
  const q = { dims: [1, 2, 3], data: new Float32Array([1, 0, 0, 0, 1, 0]) };
  const qmask = { dims: [1, 2], data: new Uint8Array([1, 1]) };
  const d = { dims: [2, 2, 3], data: new Float32Array([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 4]) };
  const dmask = { dims: [2, 2], data: new Uint8Array([1, 1, 1, 0]) };
  const results = [];
  const seen = [];
  for (let i = 0; i < 20; i++) {
    const r = await ops.maxsim(q, qmask, d, dmask, { gradOutput: new Float32Array([1, 1]) });
    results.push(r);
    seen.push([Array.from(r.value), Array.from(r.grads!.q), Array.from(r.grads!.d!)]);
  }
  // Document 0: token 0 for query token 0 (1), token 1 for query token 1 (2); document 1's only valid token faces
  // neither (0).
  t.deepEqual(seen[0][0], [3, 0]);
  if (global.gc) global.gc();
  await new Promise((resolve) => setTimeout(resolve, 10));
  for (const [i, r] of results.entries()) t.deepEqual([Array.from(r.value), Array.from(r.grads!.q), Array.from(r.grads!.d!)], seen[0], `call ${i}`);
  t.deepEqual(seen[19], seen[0]);
  // Passed on with its buffer in the transfer list (a copy: Node cannot move memory the addon handed over).
  const cloned = structuredClone(results[0].grads!.d!, { transfer: [results[0].grads!.d!.buffer as ArrayBuffer] });
  t.deepEqual(Array.from(cloned), seen[0][2]);
});

/** MaxSim 'all' in float64, with the gradients for an upstream gradient g [B, N]. */
function maxsimReference(q: Float32Array, qm: Uint8Array, d: Float32Array, dm: Uint8Array, [B, Lq, D]: number[], [N, Ld]: number[], g: ArrayLike<number>) {
  const value = new Float64Array(B * N);
  const gq = new Float64Array(q.length);
  const gd = new Float64Array(d.length);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < Lq; i++) {
        if (!qm[b * Lq + i]) continue;
        let best = -Infinity;
        let at = -1;
        for (let j = 0; j < Ld; j++) {
          if (!dm[n * Ld + j]) continue;
          let dot = 0;
          for (let k = 0; k < D; k++) dot += q[(b * Lq + i) * D + k] * d[(n * Ld + j) * D + k];
          if (dot > best) [best, at] = [dot, j];
        }
        if (at < 0) continue;
        value[b * N + n] += best;
        for (let k = 0; k < D; k++) {
          gq[(b * Lq + i) * D + k] += g[b * N + n] * d[(n * Ld + at) * D + k];
          gd[(n * Ld + at) * D + k] += g[b * N + n] * q[(b * Lq + i) * D + k];
        }
      }
    }
  }
  return { value, gq, gd };
}

function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

const B = 3;
const N = 4;
const LQ = 5;
const LD = 7;
const DIM = 6;

/** Every input of one maxsim call as views of a single ArrayBuffer, at offsets that are not 0 (the masks' odd). */
function sharedInputs(seed: number, memory: 'ArrayBuffer' | 'SharedArrayBuffer' = 'ArrayBuffer') {
  const buffer = memory === 'ArrayBuffer' ? new ArrayBuffer(8192) : new SharedArrayBuffer(8192);
  const q = new Float32Array(buffer, 4, B * LQ * DIM);
  const d = new Float32Array(buffer, 4 + q.byteLength + 12, N * LD * DIM);
  const masks = new Uint8Array(buffer, 4001, B * LQ + N * LD + 2);
  const qm = masks.subarray(1, 1 + B * LQ);
  const dm = masks.subarray(2 + B * LQ, 2 + B * LQ + N * LD);
  const g = new Float32Array(buffer, 6000, B * N + 1).subarray(1);
  for (let i = 0; i < q.length; i++) q[i] = Math.sin(seed + i * 0.37);
  for (let i = 0; i < d.length; i++) d[i] = Math.cos(seed * 3 + i * 0.11);
  for (let i = 0; i < qm.length; i++) qm[i] = (i + seed) % 4 === 0 ? 0 : 1;
  for (let i = 0; i < dm.length; i++) dm[i] = (i + seed) % 3 === 0 ? 0 : 1;
  masks[0] = masks[1 + B * LQ] = masks[masks.length - 1] = 9; // the bytes around the masks are not theirs
  for (let i = 0; i < g.length; i++) g[i] = 0.5 + ((i * 7 + seed) % 5) / 4;
  return { q, d, qm, dm, g, buffer };
}

function runShared(x: ReturnType<typeof sharedInputs>) {
  return ops.maxsim({ dims: [B, LQ, DIM], data: x.q }, { dims: [B, LQ], data: x.qm }, { dims: [N, LD, DIM], data: x.d }, { dims: [N, LD], data: x.dm }, { gradOutput: x.g });
}

function checkShared(t: import('ava').ExecutionContext, x: ReturnType<typeof sharedInputs>, r: Awaited<ReturnType<typeof runShared>>, what: string) {
  const want = maxsimReference(x.q, x.qm, x.d, x.dm, [B, LQ, DIM], [N, LD], x.g);
  t.true(maxError(r.value, want.value) < 1e-5, `${what}: value ${Array.from(r.value)} vs ${Array.from(want.value)}`);
  t.true(maxError(r.grads!.q, want.gq) < 1e-5, `${what}: grads.q`);
  t.true(maxError(r.grads!.d!, want.gd) < 1e-5, `${what}: grads.d`);
}

test('maxsim reads inputs, masks and gradOutput that are views at odd offsets of one shared ArrayBuffer', async (t) => {
  const x = sharedInputs(1);
  const r = await runShared(x);
  checkShared(t, x, r, 'shared buffer');
  // The results are arrays of their own, not views of the inputs' buffer.
  t.not(r.value.buffer, x.buffer);
  t.is(r.value.byteOffset, 0);
  t.is(r.value.buffer.byteLength, B * N * 4);
});

test('maxsim reads inputs, masks and gradOutput that are views of a SharedArrayBuffer', async (t) => {
  // The addon took the memory's address through its ArrayBuffer, which a SharedArrayBuffer's views refuse: inputs were
  // a NATIVE "Invalid argument" error, and so (since the arrays are held, not copied on the JS thread) was gradOutput.
  const x = sharedInputs(2, 'SharedArrayBuffer');
  checkShared(t, x, await runShared(x), 'SharedArrayBuffer');
});

test('many maxsim calls in flight at once each answer their own inputs, and their results survive allocation pressure', async (t) => {
  const inputs = Array.from({ length: 24 }, (_, i) => sharedInputs(i + 2));
  const results = await Promise.all(inputs.map(runShared));
  const copies = results.map((r) => Float32Array.from(r.value));
  // Garbage for the collector: the results' external buffers must stay theirs through many collections.
  let junk: unknown[] = [];
  for (let i = 0; i < 400; i++) {
    junk.push(new Float32Array(64 * 1024), { i, s: `x${i}`.repeat(50) });
    if (junk.length > 100) junk = [];
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  results.forEach((r, i) => {
    t.deepEqual(r.value, copies[i]);
    checkShared(t, inputs[i], r, `call ${i}`);
  });
});

test('an op\'s results copy like any typed array: Buffer.from over their memory, structuredClone, postMessage to a worker and back', async (t) => {
  const x = sharedInputs(30);
  const r = await runShared(x);
  const bytes = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
  t.deepEqual(Array.from({ length: r.value.length }, (_, i) => bytes.readFloatLE(i * 4)), Array.from(r.value));
  t.deepEqual(structuredClone(r.value), r.value);
  const worker = new Worker("require('node:worker_threads').parentPort.on('message', (m) => { require('node:worker_threads').parentPort.postMessage(m); })", { eval: true });
  try {
    const echoed = new Promise<{ value: Float32Array; d: Float32Array }>((resolve) => worker.once('message', resolve));
    // Listed for transfer: an external buffer is not transferable, so Node copies it and the result stays whole here.
    worker.postMessage({ value: r.value, d: r.grads!.d }, [r.value.buffer as ArrayBuffer]);
    const back = await echoed;
    t.deepEqual(back.value, r.value);
    t.deepEqual(back.d, r.grads!.d);
    t.is(r.value.length, B * N);
  } finally {
    await worker.terminate();
  }
});

test('a gradOutput of the wrong length found inside the native work rejects INVALID_ARGUMENT, and the next call works', async (t) => {
  const addon = await loadAddon();
  const x = sharedInputs(40);
  const args = { q: { dims: [B, LQ, DIM], data: x.q }, qmask: { dims: [B, LQ], data: x.qm }, d: { dims: [N, LD, DIM], data: x.d }, dmask: { dims: [N, LD], data: x.dm } };
  for (let i = 0; i < 20; i++) {
    const error = await t.throwsAsync(addon.ops.maxsim({ ...args, gradOutput: new Float32Array(B * N + 1) } as any));
    t.regex(error!.message, /gradOutput has 13 elements; the value has 12/);
  }
  checkShared(t, x, await runShared(x), 'after the errors');
});

test('an input whose buffer was transferred away before the call is refused, naming its length', async (t) => {
  const x = sharedInputs(50);
  const q = Float32Array.from(x.q);
  structuredClone(q.buffer, { transfer: [q.buffer] });
  const error = await t.throwsAsync(ops.maxsim({ dims: [B, LQ, DIM], data: q }, { dims: [B, LQ], data: x.qm }, { dims: [N, LD, DIM], data: x.d }, { dims: [N, LD], data: x.dm }));
  t.true(error instanceof ColtrastError);
  t.is((error as ColtrastError).code, 'INVALID_ARGUMENT');
  t.regex(error!.message, /q\.data has 0 elements but dims \[3, 5, 6\] need 90 \(its buffer is empty: if it was transferred to another thread, pass a copy/);
});
