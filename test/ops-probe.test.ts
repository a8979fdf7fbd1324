// The loss operations at the edges of what a caller may pass: degenerate shapes (one row, one token, dim 1 and
// 3, very unequal token counts, rows without a valid token), masks and data given as views and Buffers,
// non-finite inputs, temperatures at the ends of float32's range, and many calls at once. Every case that
// should work is checked against a float64 reference written here in plain TypeScript (as ops.test.ts does);
// every case that should not must be a ColtrastError naming the problem.
import test from 'ava';
import { ColtrastError, ops, type Mask, type OpResult } from '../lib';
import { native } from '../lib/native';
import { contrastiveLossRefs, contrastiveRef, maxsimRef, once, randomMask, randomTensor, relError, rng } from './helpers/ops-reference';

const F32 = 1e-5;

async function rejects(t: any, run: () => Promise<unknown>, pattern: RegExp) {
  const error = await t.throwsAsync(run);
  t.true(error instanceof ColtrastError, `${error}`);
  t.is((error as ColtrastError).code, 'INVALID_ARGUMENT', (error as Error).message);
  t.regex((error as Error).message, pattern);
}

// ---------------------------------------------------------------------------------------------------
// Degenerate shapes

const SHAPES = [
  { B: 1, N: 1, Lq: 1, Ld: 1, dim: 1 },
  { B: 1, N: 4, Lq: 3, Ld: 2, dim: 3 },
  { B: 2, N: 3, Lq: 1, Ld: 700, dim: 3 }, // one query token against long documents
  { B: 2, N: 2, Lq: 300, Ld: 1, dim: 5 }, // long queries against one-token documents
  { B: 3, N: 4, Lq: 9, Ld: 17, dim: 7, emptyQueries: [0, 1, 2] }, // no query has a token
  { B: 3, N: 4, Lq: 9, Ld: 17, dim: 7, emptyDocs: [0, 1, 2, 3] }, // no document has a token
];

for (const reference of [false, true]) {
  for (const c of SHAPES) {
    test(`${reference ? 'eager' : 'fused'} maxsim ${JSON.stringify(c)}: both modes, both normalizations match float64`, async (t) => {
      const random = rng(c.B * 100 + c.Ld);
      const q = randomTensor(random, [c.B, c.Lq, c.dim]);
      const d = randomTensor(random, [c.N, c.Ld, c.dim]);
      const qm = randomMask(random, c.B, c.Lq, c.emptyQueries);
      const dm = randomMask(random, c.N, c.Ld, c.emptyDocs);
      for (const mode of c.B === c.N ? (['all', 'paired'] as const) : (['all'] as const)) {
        const g = Float32Array.from({ length: mode === 'all' ? c.B * c.N : c.B }, () => random() * 2 - 1);
        for (const normalize of [false, true]) {
          const expected = maxsimRef(q, qm, d, dm, mode === 'paired', normalize, g);
          const r = await ops.maxsim(q, qm, d, dm, { mode, normalize, gradOutput: g, reference });
          t.true(relError(r.value, expected.scores) < F32, `${mode} ${normalize} scores`);
          t.true(relError(r.grads!.q, expected.dq) < F32, `${mode} ${normalize} dq`);
          t.true(relError(r.grads!.d!, expected.dd) < F32, `${mode} ${normalize} dd`);
        }
      }
      for (const kind of ['cross_entropy', 'bce'] as const) {
        const r = await ops.lateInteractionLoss(q, qm, d, dm, { kind, temperature: 0.5, gradOutput: 1, learnTemperature: true, reference });
        t.true(Number.isFinite(r.value[0]) && Number.isFinite(r.grads!.temperature!), `${kind}: ${r.value[0]}`);
        t.true(r.grads!.q.every(Number.isFinite) && r.grads!.d!.every(Number.isFinite), kind);
      }
    });
  }
}

for (const reference of [false, true]) {
  for (const [B, N, dim] of [[1, 1, 1], [1, 5, 3], [4, 4, 1], [3, 9, 3]]) {
    for (const symmetric of [false, true]) {
      test(`${reference ? 'eager' : 'fused'} contrastive B=${B} N=${N} dim=${dim} symmetric=${symmetric} matches float64`, async (t) => {
        const random = rng(B * 10 + N + dim);
        const q = randomTensor(random, [B, dim]);
        const c = randomTensor(random, [N, dim]);
        const expected = contrastiveRef(q, c, 0.3, symmetric);
        const r = await ops.contrastiveLoss(q, c, { temperature: 0.3, symmetric, learnTemperature: true, gradOutput: 1, reference });
        t.true(Math.abs(r.value[0] - expected.loss) < F32 * (1 + expected.loss), `loss ${r.value[0]} vs ${expected.loss}`);
        t.true(relError(r.grads!.q, expected.dq) < F32);
        t.true(relError(r.grads!.c!, expected.dc) < F32);
        t.true(Math.abs(r.grads!.temperature! - expected.dtau) < 1e-4 * (1 + Math.abs(expected.dtau)));
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Typed arrays as callers hold them

test('views at an offset, Buffers and mask values other than 1 are read as their elements say', async (t) => {
  const random = rng(21);
  const [B, N, Lq, Ld, dim] = [2, 3, 4, 5, 6];
  const q = randomTensor(random, [B, Lq, dim]);
  const d = randomTensor(random, [N, Ld, dim]);
  const qm = randomMask(random, B, Lq);
  const dm = randomMask(random, N, Ld, [1]);
  const expected = await ops.maxsim(q, qm, d, dm);
  // The same data at an offset inside larger buffers.
  const inside = <T extends Float32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
    const big = make(a.length + 7);
    big.fill(99 as never);
    big.set(a as never, 3);
    return big.subarray(3, 3 + a.length) as T;
  };
  const qv = { dims: q.dims, data: inside(q.data, (n) => new Float32Array(n)) };
  const dv = { dims: d.dims, data: inside(d.data, (n) => new Float32Array(n)) };
  const qmv = { dims: qm.dims, data: Buffer.from(qm.data.map((v) => v * 200)) };
  const dmv = { dims: dm.dims, data: inside(dm.data.map((v) => v * 7), (n) => new Uint8Array(n)) };
  const r = await ops.maxsim(qv, qmv, dv, dmv);
  t.deepEqual(Array.from(r.value), Array.from(expected.value));
  // Boolean arrays, Float32Array masks and Uint8ClampedArray are refused by name.
  await rejects(t, () => ops.maxsim(q, { dims: qm.dims, data: Array.from(qm.data, Boolean) as any }, d, dm), /qmask\.data must be a Uint8Array/);
  await rejects(t, () => ops.maxsim(q, qm, d, { dims: dm.dims, data: Float32Array.from(dm.data) as any }), /dmask\.data must be a Uint8Array/);
  await rejects(t, () => ops.maxsim(q, { dims: qm.dims, data: new Uint8ClampedArray(qm.data) as any }, d, dm), /qmask\.data must be a Uint8Array/);
  // Data longer or shorter than the dims say.
  await rejects(t, () => ops.maxsim({ dims: q.dims, data: new Float32Array(q.data.length + 1) }, qm, d, dm), /q\.data has 49 elements/);
  await rejects(t, () => ops.contrastiveLoss({ dims: [2, 3], data: new Float32Array(5) }, { dims: [2, 3], data: new Float32Array(6) }), /q\.data has 5 elements/);
  // Zero rows, zero tokens, zero dims.
  await rejects(t, () => ops.maxsim(q, qm, { dims: [0, Ld, dim], data: new Float32Array(0) }, { dims: [0, Ld], data: new Uint8Array(0) }), /d\.dims must be/);
  await rejects(t, () => ops.maxsim({ dims: [B, 0, dim], data: new Float32Array(0) }, { dims: [B, 0], data: new Uint8Array(0) }, d, dm), /q\.dims must be/);
});

test('a result fed back as the next input, and many calls at once, give what one call alone gives', async (t) => {
  const random = rng(31);
  const inputs = Array.from({ length: 24 }, (_, i) => ({
    q: randomTensor(random, [2 + (i % 3), 3, 8]),
    d: randomTensor(random, [4, 5 + i, 8]),
    i,
  }));
  const run = ({ q, d, i }: (typeof inputs)[number]) =>
    ops.maxsim(q, { dims: [q.dims[0], 3], data: new Uint8Array(q.dims[0] * 3).fill(1) }, d, { dims: [4, 5 + i], data: new Uint8Array(4 * (5 + i)).fill(1) }, {
      gradOutput: new Float32Array(q.dims[0] * 4).fill(1),
    });
  const alone: OpResult[] = [];
  for (const x of inputs) alone.push(await run(x));
  const together = await Promise.all(inputs.map(run));
  together.forEach((r, i) => {
    t.deepEqual(Array.from(r.value), Array.from(alone[i].value));
    t.deepEqual(Array.from(r.grads!.q), Array.from(alone[i].grads!.q));
  });
  // A gradient as the next call's input (the arrays the ops return are ordinary Float32Arrays).
  const grad = { dims: inputs[0].q.dims, data: together[0].grads!.q };
  const again = await ops.maxsim(grad, { dims: [2, 3], data: new Uint8Array(6).fill(1) }, grad, { dims: [2, 3], data: new Uint8Array(6).fill(1) });
  const expected = maxsimRef(grad, { dims: [2, 3], data: new Uint8Array(6).fill(1) }, grad, { dims: [2, 3], data: new Uint8Array(6).fill(1) }, false, false);
  t.true(relError(again.value, expected.scores) < F32);
});

// ---------------------------------------------------------------------------------------------------
// Non-finite inputs and temperatures at float32's ends

// The CPU scan keeps eight running maxima as `a > b ? a : b`, which drops a NaN as soon as a later value
// follows it: a NaN document token before the last eight gave a finite score (the max over the others)
// where eager gives NaN. A NaN at a padding position, of a document or of a query, changes nothing.
test('fused maxsim: a NaN among a document\'s valid tokens makes the score NaN wherever it stands; at padding it is ignored', async (t) => {
  const random = rng(41);
  const [Lq, Ld, dim] = [3, 21, 4];
  const q = randomTensor(random, [1, Lq, dim]);
  const qm: Mask = { dims: [1, Lq], data: new Uint8Array(Lq).fill(1) };
  const dm: Mask = { dims: [1, Ld], data: new Uint8Array(Ld).fill(1) };
  for (const at of [0, 5, 8, 16, 20]) {
    const d = randomTensor(random, [1, Ld, dim]);
    d.data[at * dim + 1] = Number.NaN;
    for (const mode of ['all', 'paired'] as const) {
      for (const reference of [false, true]) {
        const r = await ops.maxsim(q, qm, d, dm, { mode, reference });
        t.true(Number.isNaN(r.value[0]), `NaN at token ${at}, ${mode}, reference ${reference}: ${r.value[0]}`);
      }
    }
    // The same NaN at a padding position: the score is the max over the valid tokens.
    const padded: Mask = { dims: [1, Ld], data: dm.data.map((_, j) => (j === at ? 0 : 1)) };
    const expected = maxsimRef(q, qm, d, padded, false, false);
    const r = await ops.maxsim(q, qm, d, padded, { gradOutput: Float32Array.of(1) });
    t.true(relError(r.value, expected.scores) < F32, `NaN at padding ${at}: ${r.value[0]} vs ${expected.scores[0]}`);
    t.true(r.grads!.q.every(Number.isFinite) && r.grads!.d!.every(Number.isFinite));
  }
  const qNaN = randomTensor(random, [1, Lq, dim]);
  qNaN.data[0] = Number.NaN;
  const d = randomTensor(random, [1, Ld, dim]);
  const queryPadded: Mask = { dims: [1, Lq], data: Uint8Array.of(0, 1, 1) };
  for (const reference of [false, true]) {
    const r = await ops.maxsim(qNaN, queryPadded, d, dm, { reference });
    t.true(relError(r.value, maxsimRef(qNaN, queryPadded, d, dm, false, false).scores) < F32,
      `a NaN in a padded query token, reference ${reference}: ${r.value[0]}`);
    t.true(Number.isNaN((await ops.maxsim(qNaN, qm, d, dm, { reference })).value[0]), `a NaN in a valid query token, reference ${reference}`);
  }
});

// τ is a float32 in native code: 1e39 overflowed there into an error that did not name it (code NATIVE),
// 1e-46 became 0 ("must be > 0; got 0.000000" for a positive τ), and 1e-39 (subnormal) gave NaN losses.
test('a temperature outside float32\'s normal range is an INVALID_ARGUMENT error naming it; its ends work', async (t) => {
  const random = rng(51);
  const q = randomTensor(random, [3, 4]);
  const qt = randomTensor(random, [2, 3, 4]);
  const m: Mask = { dims: [2, 3], data: new Uint8Array(6).fill(1) };
  for (const temperature of [1e39, 1e300, 1e-39, 1e-46, 5e-324, Number.MAX_VALUE]) {
    await rejects(t, () => ops.contrastiveLoss(q, q, { temperature, gradOutput: 1 }), /options\.temperature must be a number > 0 that float32 holds/);
    await rejects(t, () => ops.lateInteractionLoss(qt, m, qt, m, { temperature, reference: true }), /options\.temperature/);
    const raw = (native() as any).ops;
    const error = await t.throwsAsync(async () => raw.contrastiveLoss({ q, c: q, temperature }));
    t.is((error as any).code, 'INVALID_ARGUMENT', `${temperature}: ${(error as Error).message}`);
    t.regex((error as Error).message, /temperature must be > 0 and a float32/);
  }
  // Large temperatures inside the range: the logits vanish and the loss is log N.
  for (const temperature of [1e30, 3e38]) {
    const r = await ops.contrastiveLoss(q, q, { temperature, gradOutput: 1, learnTemperature: true });
    t.true(Math.abs(r.value[0] - Math.log(3)) < 1e-6, `${temperature}: ${r.value[0]}`);
    t.true(r.grads!.q.every(Number.isFinite) && Number.isFinite(r.grads!.temperature!));
  }
});

// A loss near 0 (each positive far above its negatives, τ = 0.01): the loss was formed as a float32 log-sum-exp
// minus the positive, which loses half a float32 step of the largest logit (about 4e-6 at 1/τ = 100) and gave
// −1.0e-6 where float64 gives 0. Now it is (max − positive) + log Σ exp(x − max), with the positive the logit the
// sum saw. The last case is past the size whose logits are kept whole (B·N floats > 64 MiB), so the statistics are
// carried across tiles of rows and columns. The inputs and the float64 losses of both settings of `symmetric` are
// made once per shape (one pass over the logits, which at the last shape is the slow part of these tests).
for (const [B, N, dim, tau] of [[7, 7, 33, 0.01], [5, 12, 9, 0.01], [600, 30000, 5, 0.05]]) {
  const inputs = once(() => {
    const random = rng(B + N + dim);
    const rows = randomTensor(random, [N, dim]);
    for (let i = 0; i < N; i++) {
      const row = rows.data.subarray(i * dim, (i + 1) * dim);
      const norm = Math.hypot(...row);
      row.forEach((v, k) => (row[k] = v / norm));
    }
    // The queries are the first B rows themselves: each positive is its row's largest logit, 1/τ.
    const q = { dims: [B, dim], data: rows.data.slice(0, B * dim) };
    return { q, rows, losses: contrastiveLossRefs(q, rows, tau) };
  });
  for (const symmetric of [false, true]) {
    test(`fused contrastive B=${B} N=${N} τ=${tau} symmetric=${symmetric}: the loss near 0 keeps float64's value`, async (t) => {
      const { q, rows, losses } = inputs();
      const expected = symmetric ? losses.symmetric : losses.asymmetric;
      const r = await ops.contrastiveLoss(q, rows, { temperature: tau, symmetric });
      t.true(r.value[0] >= 0, `a negative loss: ${r.value[0]}`);
      t.true(Math.abs(r.value[0] - expected) < 1e-7 + 1e-5 * expected, `loss ${r.value[0]} vs float64 ${expected}`);
    });
  }
}
