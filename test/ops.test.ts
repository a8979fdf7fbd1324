// The fused loss operations against a float64 reference written here in plain TypeScript (loops, no
// libtorch), forward and every gradient, on odd shapes; the reference's own gradients are checked by
// central finite differences first. Both the fused ops and the eager libtorch baseline (reference: true)
// must match it.
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ColtrastError, ops, type Tensor } from '../lib';
import { native } from '../lib/native';
import { contrastiveLossRefs, contrastiveRef, contrastiveRefs, lateRef, maxsimRef, once, randomMask, randomTensor, relError, rng } from './helpers/ops-reference';

// float32 inputs, float32 accumulation over up to a few hundred terms: 1e-5 relative is ample and still
// catches any wrong index, mask or scale (those give errors of order 1).
const F32 = 1e-5;

/** Central finite difference of f at x[i] (x is changed and restored). */
function numericGrad(f: () => number, x: Float32Array | Float64Array, i: number, h = 1e-3): number {
  const saved = x[i];
  x[i] = saved + h;
  const up = f();
  x[i] = saved - h;
  const down = f();
  x[i] = saved;
  return (up - down) / (2 * h);
}

// ---------------------------------------------------------------------------------------------------
// The reference checks itself

test('the float64 reference gradients agree with finite differences', (t) => {
  const random = rng(1);
  // Float64Array data so finite differences are exact enough; the reference reads any ArrayLike.
  const as64 = (x: Tensor) => ({ dims: x.dims, data: Float64Array.from(x.data) }) as unknown as Tensor;
  const q = as64(randomTensor(random, [2, 3, 5]));
  const d = as64(randomTensor(random, [3, 4, 5]));
  const qm = randomMask(random, 2, 3);
  const dm = randomMask(random, 3, 4, [1]);
  const g = Float64Array.from({ length: 6 }, () => random());
  const m = maxsimRef(q, qm, d, dm, false, true, g);
  const scalar = () => maxsimRef(q, qm, d, dm, false, true).scores.reduce((s, v, i) => s + v * g[i], 0);
  let worst = 0;
  for (let i = 0; i < q.data.length; i++) worst = Math.max(worst, Math.abs(numericGrad(scalar, q.data, i, 1e-6) - m.dq[i]));
  for (let i = 0; i < d.data.length; i++) worst = Math.max(worst, Math.abs(numericGrad(scalar, d.data, i, 1e-6) - m.dd[i]));
  t.true(worst < 1e-6, `maxsim ${worst}`);

  for (const symmetric of [false, true]) {
    const qq = as64(randomTensor(random, [3, 4]));
    const c = as64(randomTensor(random, [5, 4]));
    const tau = { value: 0.7 };
    const r = contrastiveRef(qq, c, tau.value, symmetric);
    const f = () => contrastiveRef(qq, c, tau.value, symmetric).loss;
    let e = 0;
    for (let i = 0; i < qq.data.length; i++) e = Math.max(e, Math.abs(numericGrad(f, qq.data, i, 1e-6) - r.dq[i]));
    for (let i = 0; i < c.data.length; i++) e = Math.max(e, Math.abs(numericGrad(f, c.data, i, 1e-6) - r.dc[i]));
    const tauBox = Float64Array.of(tau.value);
    const ft = () => contrastiveRef(qq, c, tauBox[0], symmetric).loss;
    e = Math.max(e, Math.abs(numericGrad(ft, tauBox, 0, 1e-6) - r.dtau));
    t.true(e < 1e-6, `contrastive symmetric=${symmetric}: ${e}`);
    // The loss alone (ops-probe's reference at shapes too large for the gradients) is the same number.
    t.is(contrastiveLossRefs(qq, c, tau.value)[symmetric ? 'symmetric' : 'asymmetric'], r.loss);
  }

  for (const kind of ['cross_entropy', 'bce'] as const) {
    const tauBox = Float64Array.of(0.3);
    const r = lateRef(q, qm, d, dm, tauBox[0], kind, true, kind === 'cross_entropy');
    const f = () => lateRef(q, qm, d, dm, tauBox[0], kind, true, kind === 'cross_entropy').loss;
    let e = Math.abs(numericGrad(f, tauBox, 0, 1e-6) - r.dtau);
    for (let i = 0; i < q.data.length; i++) e = Math.max(e, Math.abs(numericGrad(f, q.data, i, 1e-6) - r.dq[i]));
    for (let i = 0; i < d.data.length; i++) e = Math.max(e, Math.abs(numericGrad(f, d.data, i, 1e-6) - r.dd[i]));
    t.true(e < 1e-5, `late ${kind}: ${e}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// MaxSim

interface MaxSimCase {
  B: number;
  N: number;
  Lq: number;
  Ld: number;
  dim: number;
  emptyQueries?: number[];
  emptyDocs?: number[];
}

const MAXSIM_ALL: MaxSimCase[] = [
  { B: 3, N: 5, Lq: 7, Ld: 33, dim: 64 },
  { B: 2, N: 16, Lq: 1, Ld: 1, dim: 96 }, // N = 8B, single tokens
  { B: 5, N: 5, Lq: 32, Ld: 180, dim: 128, emptyQueries: [2], emptyDocs: [0, 3] },
  { B: 2, N: 3, Lq: 7, Ld: 300, dim: 384, emptyDocs: [1] },
  { B: 13, N: 71, Lq: 32, Ld: 180, dim: 64, emptyQueries: [12] }, // more than one similarity block
];

// Each case's inputs and references, made once for its fused and its eager test.
const MAXSIM_ALL_CASES = MAXSIM_ALL.map((c, index) => {
  const inputs = once(() => {
    const random = rng(100 + index);
    const q = randomTensor(random, [c.B, c.Lq, c.dim], 0.3);
    const d = randomTensor(random, [c.N, c.Ld, c.dim], 0.3);
    const qm = randomMask(random, c.B, c.Lq, c.emptyQueries);
    const dm = randomMask(random, c.N, c.Ld, c.emptyDocs);
    const g = Float32Array.from({ length: c.B * c.N }, () => random() * 2 - 1);
    return { q, d, qm, dm, g };
  });
  const expected = [false, true].map((normalize) =>
    once(() => {
      const { q, d, qm, dm, g } = inputs();
      return maxsimRef(q, qm, d, dm, false, normalize, g);
    }),
  );
  return { inputs, expected: (normalize: boolean) => expected[Number(normalize)]() };
});

for (const reference of [false, true]) {
  for (const [index, c] of MAXSIM_ALL.entries()) {
    for (const normalize of index < 3 ? [false, true] : [true]) {
      const label = `${reference ? 'eager' : 'fused'} maxsim all B=${c.B} N=${c.N} Lq=${c.Lq} Ld=${c.Ld} dim=${c.dim} normalize=${normalize}`;
      test(`${label}: scores, dQ and dD match float64`, async (t) => {
        const { q, d, qm, dm, g } = MAXSIM_ALL_CASES[index].inputs();
        const expected = MAXSIM_ALL_CASES[index].expected(normalize);
        const r = await ops.maxsim(q, qm, d, dm, { normalize, gradOutput: g, reference });
        t.true(relError(r.value, expected.scores) < F32, `scores ${relError(r.value, expected.scores)}`);
        t.true(relError(r.grads!.q, expected.dq) < F32, `dq ${relError(r.grads!.q, expected.dq)}`);
        t.true(relError(r.grads!.d!, expected.dd) < F32, `dd ${relError(r.grads!.d!, expected.dd)}`);
        for (const b of c.emptyQueries ?? []) {
          for (let n = 0; n < c.N; n++) t.is(r.value[b * c.N + n], 0, 'a query without tokens scores 0');
        }
        for (const n of c.emptyDocs ?? []) {
          t.true(r.grads!.d!.subarray(n * c.Ld * c.dim, (n + 1) * c.Ld * c.dim).every((v) => v === 0), 'an empty document gets no gradient');
        }
      });
    }
  }
  test(`${reference ? 'eager' : 'fused'} maxsim paired (masked rows, normalize) matches float64`, async (t) => {
    const random = rng(7);
    const [B, Lq, Ld, dim] = [6, 7, 33, 96];
    const q = randomTensor(random, [B, Lq, dim]);
    const d = randomTensor(random, [B, Ld, dim]);
    const qm = randomMask(random, B, Lq, [1]);
    const dm = randomMask(random, B, Ld, [4]);
    const g = Float32Array.from({ length: B }, () => random() * 2 - 1);
    for (const normalize of [false, true]) {
      const expected = maxsimRef(q, qm, d, dm, true, normalize, g);
      const r = await ops.maxsim(q, qm, d, dm, { mode: 'paired', normalize, gradOutput: g, reference });
      t.is(r.value.length, B);
      t.true(relError(r.value, expected.scores) < F32);
      t.true(relError(r.grads!.q, expected.dq) < F32);
      t.true(relError(r.grads!.d!, expected.dd) < F32);
    }
    // Paired equals the diagonal of all.
    const all = await ops.maxsim(q, qm, d, dm, { reference });
    const paired = await ops.maxsim(q, qm, d, dm, { mode: 'paired', reference });
    t.true(relError(paired.value, Array.from({ length: B }, (_, b) => all.value[b * B + b])) < F32);
  });
}

// ---------------------------------------------------------------------------------------------------
// Contrastive

const CONTRASTIVE: { B: number; N: number; dim: number; scale: number }[] = [
  { B: 7, N: 7, dim: 64, scale: 0.3 },
  { B: 5, N: 40, dim: 96, scale: 0.3 }, // N = 8B
  { B: 33, N: 33, dim: 384, scale: 0.1 },
  { B: 600, N: 2500, dim: 64, scale: 0.2 }, // the CPU keeps these logits (up to 64 MiB) for the backward
  { B: 520, N: 33000, dim: 4, scale: 0.5 }, // past 64 MiB: several 512 x 2048 tiles each way, the last ones short
];

// Each case's inputs and the references of both settings of `symmetric`, made once (in one pass over the logits)
// for its four tests.
const CONTRASTIVE_CASES = CONTRASTIVE.map((c, index) =>
  once(() => {
    const random = rng(200 + index);
    const q = randomTensor(random, [c.B, c.dim], c.scale);
    const cand = randomTensor(random, [c.N, c.dim], c.scale);
    const tau = 0.05 + index * 0.1;
    return { q, cand, tau, expected: contrastiveRefs(q, cand, tau) };
  }),
);

for (const reference of [false, true]) {
  for (const [index, c] of CONTRASTIVE.entries()) {
    for (const symmetric of [false, true]) {
      test(`${reference ? 'eager' : 'fused'} contrastive B=${c.B} N=${c.N} dim=${c.dim} symmetric=${symmetric}: loss, dq, dc, dtau match float64`, async (t) => {
        const { q, cand, tau, expected: both } = CONTRASTIVE_CASES[index]();
        const expected = symmetric ? both.symmetric : both.asymmetric;
        const r = await ops.contrastiveLoss(q, cand, { temperature: tau, symmetric, learnTemperature: true, gradOutput: 1, reference });
        t.true(Math.abs(r.value[0] - expected.loss) < F32 * (1 + expected.loss), `loss ${r.value[0]} vs ${expected.loss}`);
        t.true(relError(r.grads!.q, expected.dq) < F32, `dq ${relError(r.grads!.q, expected.dq)}`);
        t.true(relError(r.grads!.c!, expected.dc) < F32, `dc ${relError(r.grads!.c!, expected.dc)}`);
        t.true(Math.abs(r.grads!.temperature! - expected.dtau) < 1e-4 * (1 + Math.abs(expected.dtau)), `dtau ${r.grads!.temperature} vs ${expected.dtau}`);
      });
    }
  }
}

test('computeMs times the op alone: positive and within the whole call, with and without a backward', async (t) => {
  const random = rng(810);
  const q = randomTensor(random, [300, 64]);
  const c = randomTensor(random, [900, 64]);
  for (const gradOutput of [undefined, 1]) {
    const started = performance.now();
    const r = await ops.contrastiveLoss(q, c, { gradOutput });
    const wall = performance.now() - started;
    t.true(r.computeMs > 0 && r.computeMs <= wall, `gradOutput ${gradOutput}: computeMs ${r.computeMs} within the call's ${wall} ms`);
  }
});

test('contrastive: gradOutput scales the gradients; without learnTemperature no tau gradient', async (t) => {
  const random = rng(9);
  const q = randomTensor(random, [4, 16]);
  const c = randomTensor(random, [9, 16]);
  const one = await ops.contrastiveLoss(q, c, { temperature: 0.5, gradOutput: 1 });
  const three = await ops.contrastiveLoss(q, c, { temperature: 0.5, gradOutput: 3 });
  t.true(relError(three.grads!.q, one.grads!.q.map((v) => v * 3)) < F32);
  t.is(one.grads!.temperature, undefined);
  const plain = await ops.contrastiveLoss(q, c, { temperature: 0.5 });
  t.is(plain.grads, undefined);
  t.is(plain.value[0], one.value[0]);
});

// ---------------------------------------------------------------------------------------------------
// Late interaction

// N = 3B with an empty document (the common training batch: positives, then hard negatives) and
// N = B (in-batch negatives only, with an empty query); each kind with and without query-length
// normalization; cross-entropy also symmetric.
const LATE: { B: number; N: number; Lq: number; Ld: number; dim: number; emptyQueries?: number[]; emptyDocs?: number[] }[] = [
  { B: 4, N: 12, Lq: 7, Ld: 33, dim: 64, emptyDocs: [7] },
  { B: 5, N: 5, Lq: 32, Ld: 1, dim: 96, emptyQueries: [3] },
];

for (const reference of [false, true]) {
  for (const kind of ['cross_entropy', 'bce'] as const) {
    for (const [index, c] of LATE.entries()) {
      const variants = kind === 'cross_entropy' ? [{ normalize: true, symmetric: true }, { normalize: false, symmetric: false }] : [{ normalize: true, symmetric: false }, { normalize: false, symmetric: false }];
      for (const { normalize, symmetric } of variants) {
        test(`${reference ? 'eager' : 'fused'} late-interaction ${kind} B=${c.B} N=${c.N} normalize=${normalize} symmetric=${symmetric}: loss and gradients match float64`, async (t) => {
          const random = rng(300 + index);
          const q = randomTensor(random, [c.B, c.Lq, c.dim], 0.3);
          const d = randomTensor(random, [c.N, c.Ld, c.dim], 0.3);
          const qm = randomMask(random, c.B, c.Lq, c.emptyQueries);
          const dm = randomMask(random, c.N, c.Ld, c.emptyDocs);
          // Unnormalized scores are sums of up to Lq similarities: a larger temperature keeps logits moderate.
          const tau = normalize ? 0.2 : 2;
          const expected = lateRef(q, qm, d, dm, tau, kind, normalize, symmetric);
          const r = await ops.lateInteractionLoss(q, qm, d, dm, { kind, temperature: tau, normalize, symmetric, learnTemperature: true, gradOutput: 1, reference });
          t.true(Math.abs(r.value[0] - expected.loss) < F32 * (1 + expected.loss), `loss ${r.value[0]} vs ${expected.loss}`);
          t.true(relError(r.grads!.q, expected.dq) < F32, `dq ${relError(r.grads!.q, expected.dq)}`);
          t.true(relError(r.grads!.d!, expected.dd) < F32, `dd ${relError(r.grads!.d!, expected.dd)}`);
          t.true(Math.abs(r.grads!.temperature! - expected.dtau) < 1e-4 * (1 + Math.abs(expected.dtau)), `dtau ${r.grads!.temperature} vs ${expected.dtau}`);
          for (const b of c.emptyQueries ?? []) {
            t.true(r.grads!.q.subarray(b * c.Lq * c.dim, (b + 1) * c.Lq * c.dim).every((v) => v === 0), 'a query without tokens gets no gradient');
          }
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Half precision inputs (CPU)

for (const dtype of ['float16', 'bfloat16'] as const) {
  test(`${dtype} inputs: maxsim, contrastive and late interaction stay within the input rounding of float64`, async (t) => {
    const random = rng(400);
    const q = randomTensor(random, [3, 7, 64], 0.3);
    const d = randomTensor(random, [5, 33, 64], 0.3);
    const qm = randomMask(random, 3, 7);
    const dm = randomMask(random, 5, 33, [4]);
    const g = Float32Array.from({ length: 15 }, () => random());
    // The float64 reference sees the float32 inputs, the op sees them rounded to 8 (bfloat16) or 11
    // (float16) significant bits: a score moves by about that relative amount. A near-tie can move an
    // argmax, and the gradients come back rounded to the input dtype, so gradients get a looser bound.
    // Wrong indices, masks or scales would still give errors of order 1.
    const tol = dtype === 'bfloat16' ? 3e-2 : 4e-3;
    const expected = maxsimRef(q, qm, d, dm, false, true, g);
    for (const reference of [false, true]) {
      const r = await ops.maxsim(q, qm, d, dm, { dtype, normalize: true, gradOutput: g, reference });
      t.true(relError(r.value, expected.scores) < tol, `maxsim reference=${reference} scores ${relError(r.value, expected.scores)}`);
      t.true(relError(r.grads!.q, expected.dq) < 10 * tol, `maxsim reference=${reference} dq ${relError(r.grads!.q, expected.dq)}`);
      t.true(relError(r.grads!.d!, expected.dd) < 10 * tol, `maxsim reference=${reference} dd ${relError(r.grads!.d!, expected.dd)}`);
    }

    const qq = randomTensor(random, [9, 64], 0.3);
    const c = randomTensor(random, [20, 64], 0.3);
    const e = contrastiveRef(qq, c, 0.1, true);
    const l = await ops.contrastiveLoss(qq, c, { dtype, temperature: 0.1, symmetric: true, learnTemperature: true, gradOutput: 1 });
    t.true(Math.abs(l.value[0] - e.loss) < 5 * tol * (1 + e.loss), `contrastive loss ${l.value[0]} vs ${e.loss}`);
    t.true(relError(l.grads!.q, e.dq) < 10 * tol, `contrastive dq ${relError(l.grads!.q, e.dq)}`);
    t.true(relError(l.grads!.c!, e.dc) < 10 * tol, `contrastive dc ${relError(l.grads!.c!, e.dc)}`);
    t.true(Math.abs(l.grads!.temperature! - e.dtau) < 10 * tol * (1 + Math.abs(e.dtau)), `contrastive dtau ${l.grads!.temperature} vs ${e.dtau}`);

    for (const kind of ['cross_entropy', 'bce'] as const) {
      const le = lateRef(q, qm, d, dm, 0.2, kind, true, false);
      const lr = await ops.lateInteractionLoss(q, qm, d, dm, { dtype, kind, temperature: 0.2, gradOutput: 1 });
      t.true(Math.abs(lr.value[0] - le.loss) < 5 * tol * (1 + le.loss), `late ${kind} loss ${lr.value[0]} vs ${le.loss}`);
      t.true(relError(lr.grads!.q, le.dq) < 10 * tol, `late ${kind} dq ${relError(lr.grads!.q, le.dq)}`);
      t.true(relError(lr.grads!.d!, le.dd) < 10 * tol, `late ${kind} dd ${relError(lr.grads!.d!, le.dd)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Bad input

async function rejects(t: any, promise: () => Promise<unknown>, code: string, pattern: RegExp) {
  const error = await (async () => {
    try {
      await promise();
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.true(error instanceof ColtrastError, `expected a ColtrastError, got ${error}`);
  t.is((error as ColtrastError).code, code);
  t.regex((error as ColtrastError).message, pattern);
}

test('bad input is an INVALID_ARGUMENT error naming the problem', async (t) => {
  const random = rng(500);
  const q = randomTensor(random, [2, 3, 8]);
  const d = randomTensor(random, [3, 4, 8]);
  const qm = randomMask(random, 2, 3);
  const dm = randomMask(random, 3, 4);
  await rejects(t, () => ops.maxsim({ dims: [2, 24], data: q.data }, qm, d, dm), 'INVALID_ARGUMENT', /q\.dims must be \[B, Lq, dim\]/);
  await rejects(t, () => ops.maxsim(q, qm, randomTensor(random, [3, 4, 9]), dm), 'INVALID_ARGUMENT', /same dim/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { mode: 'paired' }), 'INVALID_ARGUMENT', /paired.*B = 2, N = 3/);
  await rejects(t, () => ops.maxsim(q, { dims: [2, 2], data: new Uint8Array(4) }, d, dm), 'INVALID_ARGUMENT', /qmask\.dims must be \[2, 3\]/);
  await rejects(t, () => ops.maxsim(q, { dims: [2, 3], data: new Uint8Array(5) }, d, dm), 'INVALID_ARGUMENT', /qmask\.data has 5 elements/);
  await rejects(t, () => ops.maxsim(q, { dims: [2, 3], data: new Float32Array(6) as any }, d, dm), 'INVALID_ARGUMENT', /qmask\.data must be a Uint8Array/);
  await rejects(t, () => ops.maxsim({ dims: q.dims, data: new Float64Array(48) as any }, qm, d, dm), 'INVALID_ARGUMENT', /q\.data must be a Float32Array/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { mode: 'every' as any }), 'INVALID_ARGUMENT', /options\.mode/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { normalise: true } as any), 'INVALID_ARGUMENT', /unknown option options\.normalise/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { gradOutput: new Float32Array(5) }), 'INVALID_ARGUMENT', /gradOutput/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { dtype: 'float64' as any }), 'INVALID_ARGUMENT', /options\.dtype/);
  const qq = randomTensor(random, [4, 8]);
  await rejects(t, () => ops.contrastiveLoss(qq, randomTensor(random, [3, 8])), 'INVALID_ARGUMENT', /at least B = 4 rows/);
  await rejects(t, () => ops.contrastiveLoss(qq, randomTensor(random, [4, 7])), 'INVALID_ARGUMENT', /same dim/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { temperature: 0 }), 'INVALID_ARGUMENT', /temperature/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { temperature: -1 }), 'INVALID_ARGUMENT', /temperature/);
  await rejects(t, () => ops.contrastiveLoss({ dims: [4, 0], data: new Float32Array(0) }, qq), 'INVALID_ARGUMENT', /positive integers/);
  await rejects(t, () => ops.lateInteractionLoss(q, qm, randomTensor(random, [1, 4, 8]), randomMask(random, 1, 4)), 'INVALID_ARGUMENT', /at least B = 2 documents/);
  await rejects(t, () => ops.lateInteractionLoss(q, qm, d, dm, { kind: 'hinge' as any }), 'INVALID_ARGUMENT', /options\.kind/);
  await rejects(t, () => ops.lateInteractionLoss(q, qm, d, dm, { kind: 'bce', symmetric: true }), 'INVALID_ARGUMENT', /symmetric applies to kind 'cross_entropy'/);
  await rejects(t, () => ops.lateInteractionLoss(q, qm, d, dm, { temperature: Number.NaN }), 'INVALID_ARGUMENT', /options\.temperature/);
  await rejects(t, () => ops.lateInteractionLoss(q, qm, d, { dims: [3, 4], data: new Uint8Array(11) }), 'INVALID_ARGUMENT', /dmask\.data has 11 elements/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { temperture: 0.1 } as any), 'INVALID_ARGUMENT', /unknown option options\.temperture/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { gradOutput: new Float32Array(1) as any }), 'INVALID_ARGUMENT', /options\.gradOutput/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { device: 'tpu' }), 'INVALID_ARGUMENT', /options\.device/);
  await rejects(t, () => ops.contrastiveLoss(qq, qq, { strategy: 'blas' as any }), 'INVALID_ARGUMENT', /options\.strategy/);
  for (const chunkRows of [0, -3, 2.5]) {
    await rejects(t, () => ops.contrastiveLoss(qq, qq, { strategy: 'chunked', chunkRows }), 'INVALID_ARGUMENT', /options\.chunkRows/);
  }
  await rejects(t, () => ops.lateInteractionLoss(q, qm, d, dm, { strategy: 'fused' } as any), 'INVALID_ARGUMENT', /unknown option options\.strategy/);
  await rejects(t, () => ops.contrastiveLoss(qq, { dims: [4, 8], data: Array.from({ length: 32 }, () => 0) as any }), 'INVALID_ARGUMENT', /c\.data must be a Float32Array/);
  await rejects(t, () => ops.maxsim(q, qm, d, dm, { reference: 1 as any }), 'INVALID_ARGUMENT', /options\.reference/);
});

test('argument errors are rejected promises, never synchronous throws', async (t) => {
  const bad = ops.maxsim({ dims: [1], data: new Float32Array(1) }, { dims: [1, 1], data: new Uint8Array(1) }, { dims: [1], data: new Float32Array(1) }, { dims: [1, 1], data: new Uint8Array(1) });
  t.true(bad instanceof Promise);
  const error = await t.throwsAsync(bad);
  t.true(error instanceof ColtrastError);
  t.is((error as ColtrastError).code, 'INVALID_ARGUMENT');
});

test('the native layer checks its input too (what a caller bypassing lib/ops.ts would hit)', async (t) => {
  const raw = (native() as any).ops;
  const q = { dims: [2, 3, 4], data: new Float32Array(24) };
  const qmask = { dims: [2, 3], data: new Uint8Array(6).fill(1) };
  await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: { dims: [2, 3, 5], data: new Float32Array(30) }, dmask: qmask }), {
    message: /same embedding size/,
  });
  await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: { dims: [2, 3, 4], data: new Float32Array(7) }, dmask: qmask }), {
    message: /has 7 elements but dims say 24/,
  });
  const q2 = { dims: [2, 4], data: new Float32Array(8) };
  await t.throwsAsync(async () => raw.contrastiveLoss({ q: q2, c: q2, temperature: 0 }), { message: /temperature must be > 0/ });
  await t.throwsAsync(async () => raw.contrastiveLoss({ q: q2, c: q2 }), { message: /temperature is required/ });
  await t.throwsAsync(async () => raw.contrastiveLoss({ q: q2, c: { dims: [1, 4], data: new Float32Array(4) }, temperature: 1 }), { message: /at least B = 2 rows/ });
  await t.throwsAsync(async () => raw.contrastiveLoss({ q: q2, c: q2, temperature: 1, strategy: 'blas' }), { message: /strategy must be 'auto', 'fused' or 'chunked'/ });
  await t.throwsAsync(async () => raw.contrastiveLoss({ q: q2, c: q2, temperature: 1, chunkRows: -2 }), { message: /chunkRows must be 0 \(automatic\) or positive/ });
  await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: q, dmask: { dims: [2, 3], data: new Float32Array(6) } }), { message: /dmask\.data must be a Uint8Array/ });
  await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: q, dmask: qmask, mode: 'diagonal' }), { message: /mode must be 'all' or 'paired'/ });
  await t.throwsAsync(async () => raw.maxsim({ q: { dims: [2 ** 40, 2 ** 40, 2 ** 40], data: new Float32Array(8) }, qmask, d: q, dmask: qmask }), { message: /q\.dims are too large/ });
  await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: q, dmask: qmask, gradOutput: new Float32Array(5) }), { message: /gradOutput has 5 elements; the value has 4/ });
  // Each of those is an ordinary rejection with a code: the process is still here and the addon works.
  const error = await t.throwsAsync(async () => raw.maxsim({ q, qmask, d: q, dmask: qmask, mode: 'paired', gradOutput: new Float32Array(3) }));
  t.is((error as any).code, 'INVALID_ARGUMENT');
  const ok = await raw.maxsim({ q, qmask, d: q, dmask: qmask });
  t.deepEqual(Array.from(ok.value), [0, 0, 0, 0]);
});

// Runs `script` in a child Node process with `env` added to this one's; asserts it exits 0 and returns the JSON
// of its last stdout line.
function childJson(t: ExecutionContext, script: string, env: Record<string, string>): any {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, ...env } });
  t.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

// The process-wide switch is read once, at the first op call, so it is checked in child processes. Fused
// and eager results agree to float rounding but not bit for bit (different summation orders), which is
// what tells the two paths apart: with the switch on, a call without `reference` must give the eager
// bits, and `reference: false` must still give the fused ones.
// Serial (ava runs serial tests before the concurrent ones): starting a child process while another test's
// op is inside OpenBLAS on a worker thread can wedge OpenBLAS's thread pool (its fork handler shuts the
// pool down under the running product), and every later op in this process then hangs.
test.serial('COLTRAST_REFERENCE_OPS=1 makes the eager path the default; reference: false overrides it', (t) => {
  const script = `
    const { ops } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
    const { seededRandom } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib', 'random'))});
    const next = seededRandom(5).next;
    const tensor = (dims) => ({ dims, data: Float32Array.from({ length: dims[0] * dims[1] }, () => next() - 0.5) });
    const q = tensor([64, 32]), c = tensor([200, 32]);
    const run = (reference) => ops.contrastiveLoss(q, c, { temperature: 0.1, symmetric: true, gradOutput: 1, reference });
    const same = (a, b) => a.grads.q.every((v, i) => Object.is(v, b.grads.q[i])) && a.grads.c.every((v, i) => Object.is(v, b.grads.c[i]));
    (async () => {
      const byDefault = await run(undefined), eager = await run(true), fused = await run(false);
      console.log(JSON.stringify({ pathsDiffer: !same(eager, fused), defaultIsEager: same(byDefault, eager), defaultIsFused: same(byDefault, fused) }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = (value: string) => childJson(t, script, { COLTRAST_REFERENCE_OPS: value });
  const on = child('1');
  t.true(on.pathsDiffer, 'the fused and eager paths give different bits on these inputs');
  t.true(on.defaultIsEager);
  const off = child('0');
  t.true(off.defaultIsFused);
  t.false(off.defaultIsEager);
});

// COLTRAST_CONTRASTIVE_STRATEGY picks the CUDA strategy of `strategy: 'auto'`; it is read once, at the first
// contrastive call, on every device, so a wrong value fails on the CPU too. (Serial, like the test above.)
test.serial('COLTRAST_CONTRASTIVE_STRATEGY: a wrong value is an INVALID_ARGUMENT error naming it; a right one changes nothing on the CPU', (t) => {
  const script = `
    const { ops } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
    const q = { dims: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)) };
    (async () => {
      try {
        const r = await ops.contrastiveLoss(q, q, { gradOutput: 1 });
        console.log(JSON.stringify({ loss: r.value[0], dq: Array.from(r.grads.q) }));
      } catch (e) {
        console.log(JSON.stringify({ code: e.code, message: e.message }));
      }
    })();`;
  const child = (value: string) => childJson(t, script, { COLTRAST_CONTRASTIVE_STRATEGY: value });
  const wrong = child('cublas');
  t.is(wrong.code, 'INVALID_ARGUMENT');
  t.regex(wrong.message, /COLTRAST_CONTRASTIVE_STRATEGY must be 'fused', 'chunked' or 'auto'.*got 'cublas'/);
  const chunked = child('chunked'), fused = child('fused');
  t.true(Number.isFinite(chunked.loss));
  t.deepEqual(chunked, fused);
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;

// Where CUDA is available this error cannot happen, so the test is reported as skipped there rather
// than passing without asserting anything.
(cudaAvailable ? test.skip : test)(`device cuda without CUDA is a DEVICE error for every op${cudaAvailable ? ' [skipped: CUDA is available here]' : ''}`, async (t) => {
  const random = rng(600);
  const q = randomTensor(random, [2, 8]);
  const qt = randomTensor(random, [2, 3, 8]);
  const qm = randomMask(random, 2, 3);
  for (const device of ['cuda', 'cuda:1']) {
    await rejects(t, () => ops.contrastiveLoss(q, q, { device }), 'DEVICE', /CUDA/);
    await rejects(t, () => ops.maxsim(qt, qm, qt, qm, { device, gradOutput: new Float32Array(4) }), 'DEVICE', /CUDA/);
    await rejects(t, () => ops.lateInteractionLoss(qt, qm, qt, qm, { device, reference: true }), 'DEVICE', /CUDA/);
  }
});

// ---------------------------------------------------------------------------------------------------
// CUDA against CPU (runs where a GPU and a CUDA build are present; reported as skipped elsewhere)

const cudaTest = cudaAvailable ? test : test.skip;
const noCuda = cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]';

for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
  const tol = dtype === 'float32' ? 1e-4 : dtype === 'float16' ? 4e-3 : 3e-2;
  cudaTest(`cuda ${dtype}: maxsim, contrastive and late interaction match the CPU${noCuda}`, async (t) => {
    const random = rng(700);
    for (const c of MAXSIM_ALL) {
      const q = randomTensor(random, [c.B, c.Lq, c.dim], 0.3);
      const d = randomTensor(random, [c.N, c.Ld, c.dim], 0.3);
      const qm = randomMask(random, c.B, c.Lq, c.emptyQueries);
      const dm = randomMask(random, c.N, c.Ld, c.emptyDocs);
      const g = Float32Array.from({ length: c.B * c.N }, () => random() * 2 - 1);
      const cpu = await ops.maxsim(q, qm, d, dm, { normalize: true, gradOutput: g, dtype: 'float32' });
      const gpu = await ops.maxsim(q, qm, d, dm, { normalize: true, gradOutput: g, dtype, device: 'cuda' });
      t.true(relError(gpu.value, cpu.value) < tol, `maxsim ${JSON.stringify(c)} scores`);
      t.true(relError(gpu.grads!.q, cpu.grads!.q) < 10 * tol, `maxsim ${JSON.stringify(c)} dq`);
      t.true(relError(gpu.grads!.d!, cpu.grads!.d!) < 10 * tol, `maxsim ${JSON.stringify(c)} dd`);
    }
    for (const c of CONTRASTIVE) {
      for (const symmetric of [false, true]) {
        const q = randomTensor(random, [c.B, c.dim], c.scale);
        const cand = randomTensor(random, [c.N, c.dim], c.scale);
        const options = { temperature: 0.1, symmetric, learnTemperature: true, gradOutput: 1 };
        const cpu = await ops.contrastiveLoss(q, cand, options);
        // Both CUDA strategies; the chunked one also in chunks of 7 rows (several, the last one short).
        for (const strategy of [{ strategy: 'fused' }, { strategy: 'chunked' }, { strategy: 'chunked', chunkRows: 7 }] as const) {
          const what = `contrastive ${JSON.stringify({ ...c, symmetric, ...strategy })}`;
          const gpu = await ops.contrastiveLoss(q, cand, { ...options, ...strategy, dtype, device: 'cuda' });
          t.true(Math.abs(gpu.value[0] - cpu.value[0]) < tol * (1 + cpu.value[0]), `${what} loss`);
          t.true(relError(gpu.grads!.q, cpu.grads!.q) < 10 * tol, `${what} dq`);
          t.true(relError(gpu.grads!.c!, cpu.grads!.c!) < 10 * tol, `${what} dc`);
          const dtau = cpu.grads!.temperature!;
          t.true(Math.abs(gpu.grads!.temperature! - dtau) < 10 * tol * (1 + Math.abs(dtau)), `${what} dtau`);
        }
      }
    }
  });
}
