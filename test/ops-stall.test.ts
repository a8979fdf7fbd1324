// The ops (lib/ops.ts, native/ops/ops_wrap.cc) with inputs and results of hundreds of megabytes: the addon copied the
// typed arrays into its own memory on the JS thread before the work, and its results into fresh Float32Arrays after
// it, holding the event loop over a second for 300 MB of documents. It now holds them and copies on the worker, and
// hands results over as arrays on their own memory. The measure is against a copy of the documents in JS in the same
// run (the old code made at least one such copy on the JS thread, and one of the gradients), so a slow or busy
// machine moves both sides. Serial: another test's JavaScript would stall the loop measured.
import test from 'ava';
import { ops } from '../lib';
import { longestStall } from './helpers/stall';

const D = 128;
const L = 100;
const N = 4000; // 4000 × 100 × 128 floats: 205 MB of document token vectors

test.serial('maxsim with 200 MB of documents and their gradients holds the event loop far less than one copy of them in JS', async (t) => {
  const d = new Float32Array(N * L * D);
  for (let i = 0; i < d.length; i += 97) d[i] = ((i % 1000) - 500) / 1000;
  const dmask = new Uint8Array(N * L).fill(1);
  const q = new Float32Array(2 * 8 * D).fill(0.01);
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
      ops.maxsim({ dims: [2, 8, D], data: q }, { dims: [2, 8], data: qmask }, { dims: [N, L, D], data: d }, { dims: [N, L], data: dmask }, { gradOutput: new Float32Array(2 * N).fill(1) }),
    );
    stalls.push(stallMs);
    t.is(result.value.length, 2 * N);
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
