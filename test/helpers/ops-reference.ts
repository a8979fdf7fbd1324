/**
 * The float64 references of the loss operations, in plain TypeScript (loops, no libtorch), and the seeded inputs and
 * error measure their tests use (test/ops.test.ts checks the references' own gradients by finite differences;
 * test/ops-probe.test.ts uses them at the edges).
 */
import type { Mask, Tensor } from '../../lib';
import { seededRandom } from '../../lib/random';

// ---------------------------------------------------------------------------------------------------
// Seeded inputs

export const rng = (seed: number) => seededRandom(seed).next;

export function randomTensor(random: () => number, dims: number[], scale = 1): Tensor {
  const size = dims.reduce((a, b) => a * b, 1);
  return { dims, data: Float32Array.from({ length: size }, () => (random() * 2 - 1) * scale) };
}

/** A mask with valid prefixes of random length >= 1, except rows listed in `empty` (no valid token). */
export function randomMask(random: () => number, rows: number, cols: number, empty: number[] = []): Mask {
  const data = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    if (empty.includes(r)) continue;
    const len = 1 + Math.floor(random() * cols);
    // Holes too, not only padding at the end: masks are per token.
    for (let j = 0; j < len; j++) data[r * cols + j] = j === 0 || random() > 0.15 ? 1 : 0;
  }
  return { dims: [rows, cols], data };
}

// ---------------------------------------------------------------------------------------------------
// float64 reference

export interface MaxSimRef {
  scores: Float64Array;
  dq: Float64Array;
  dd: Float64Array;
}

/** Scores and, for upstream gradient g (scores' shape), dQ and dD. */
export function maxsimRef(q: Tensor, qm: Mask, d: Tensor, dm: Mask, paired: boolean, normalize: boolean, g?: ArrayLike<number>): MaxSimRef {
  const [B, Lq, dim] = q.dims;
  const [N, Ld] = d.dims;
  const scores = new Float64Array(paired ? B : B * N);
  const dq = new Float64Array(q.data.length);
  const dd = new Float64Array(d.data.length);
  for (let b = 0; b < B; b++) {
    let count = 0;
    for (let i = 0; i < Lq; i++) count += qm.data[b * Lq + i] ? 1 : 0;
    const w = normalize ? (count > 0 ? 1 / count : 0) : 1;
    for (let n = paired ? b : 0; n < (paired ? b + 1 : N); n++) {
      const idx = paired ? b : b * N + n;
      let total = 0;
      for (let i = 0; i < Lq; i++) {
        if (!qm.data[b * Lq + i]) continue;
        let best = -Infinity;
        let at = -1;
        for (let j = 0; j < Ld; j++) {
          if (!dm.data[n * Ld + j]) continue;
          let s = 0;
          for (let k = 0; k < dim; k++) s += q.data[(b * Lq + i) * dim + k] * d.data[(n * Ld + j) * dim + k];
          if (s > best) {
            best = s;
            at = j;
          }
        }
        if (at < 0) continue;
        total += best;
        if (g) {
          const coef = g[idx] * w;
          for (let k = 0; k < dim; k++) {
            dq[(b * Lq + i) * dim + k] += coef * d.data[(n * Ld + at) * dim + k];
            dd[(n * Ld + at) * dim + k] += coef * q.data[(b * Lq + i) * dim + k];
          }
        }
      }
      scores[idx] = w * total;
    }
  }
  return { scores, dq, dd };
}

export interface LossRef {
  loss: number;
  /** d loss / d logits, [B, N] */
  dlogits: Float64Array;
  dtau: number;
}

interface LogitStats {
  rowLse: Float64Array;
  colLse: Float64Array;
  diag: Float64Array;
}

/**
 * What every cross-entropy term needs of logits [B, N] (positives on the diagonal): each row's log-sum-exp over
 * its N candidates, each of the first B columns' over the B queries (the symmetric term), and the diagonal.
 * `row(i, out)` writes row i's logits into out; each row is asked for once, so a caller may compute them on the
 * fly and keep nothing of size B x N.
 */
function logitStats(B: number, N: number, row: (i: number, out: Float64Array) => void): LogitStats {
  const rowLse = new Float64Array(B);
  const colLse = new Float64Array(B);
  const diag = new Float64Array(B);
  const block = new Float64Array(B * B); // logits [i, j] for j < B, for the column log-sum-exps
  const buf = new Float64Array(N);
  for (let i = 0; i < B; i++) {
    row(i, buf);
    rowLse[i] = logSumExp(buf, 0, N, 1);
    diag[i] = buf[i];
    block.set(buf.subarray(0, B), i * B);
  }
  for (let j = 0; j < B; j++) colLse[j] = logSumExp(block, j, B, B);
  return { rowLse, colLse, diag };
}

/** log Σ exp(values[start + k * stride]) over k < count, shifted by the maximum. */
export function logSumExp(values: ArrayLike<number>, start = 0, count = values.length, stride = 1): number {
  let m = -Infinity;
  for (let k = 0, at = start; k < count; k++, at += stride) m = Math.max(m, values[at]);
  let sum = 0;
  for (let k = 0, at = start; k < count; k++, at += stride) sum += Math.exp(values[at] - m);
  return m + Math.log(sum);
}

/** The loss of both settings of `symmetric`: (row terms) and (row terms + column terms) / 2, each a mean over B. */
function crossEntropyLosses({ rowLse, colLse, diag }: LogitStats): { asymmetric: number; symmetric: number } {
  const B = diag.length;
  let rowTerm = 0;
  let colTerm = 0;
  for (let i = 0; i < B; i++) {
    rowTerm += rowLse[i] - diag[i];
    colTerm += colLse[i] - diag[i];
  }
  return { asymmetric: rowTerm / B, symmetric: 0.5 * (rowTerm / B + colTerm / B) };
}

/** Cross-entropy over logits = s / tau (s: [B, N] raw scores), positives on the diagonal. */
export function crossEntropyRef(s: ArrayLike<number>, B: number, N: number, tau: number, symmetric: boolean): LossRef {
  const logits = (i: number, out: Float64Array) => {
    for (let k = 0; k < N; k++) out[k] = s[i * N + k] / tau;
  };
  const stats = logitStats(B, N, logits);
  const dl = new Float64Array(B * N);
  const weight = symmetric ? 0.5 / B : 1 / B;
  const row = new Float64Array(N);
  let dtau = 0;
  for (let i = 0; i < B; i++) {
    logits(i, row);
    for (let k = 0; k < N; k++) {
      let g = Math.exp(row[k] - stats.rowLse[i]) - (k === i ? 1 : 0);
      if (symmetric && k < B) g += Math.exp(row[k] - stats.colLse[k]) - (k === i ? 1 : 0);
      dl[i * N + k] = weight * g;
      dtau -= (dl[i * N + k] * row[k]) / tau;
    }
  }
  const losses = crossEntropyLosses(stats);
  return { loss: symmetric ? losses.symmetric : losses.asymmetric, dlogits: dl, dtau };
}

/** (mean over positives + mean over negatives) / 2 of BCE-with-logits(s / tau, diagonal labels). */
export function bceRef(s: ArrayLike<number>, B: number, N: number, tau: number): LossRef {
  const dl = new Float64Array(B * N);
  let pos = 0;
  let neg = 0;
  const negCount = B * N - B;
  const softplus = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
  const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
  for (let i = 0; i < B; i++) {
    for (let k = 0; k < N; k++) {
      const x = s[i * N + k] / tau;
      if (k === i) {
        pos += softplus(-x);
        dl[i * N + k] = (0.5 * (sigmoid(x) - 1)) / B;
      } else {
        neg += softplus(x);
        dl[i * N + k] = (0.5 * sigmoid(x)) / negCount;
      }
    }
  }
  const loss = 0.5 * (pos / B + neg / negCount);
  let dtau = 0;
  for (let i = 0; i < B * N; i++) dtau -= (dl[i] * s[i]) / tau / tau;
  return { loss, dlogits: dl, dtau };
}

export interface ContrastiveRef {
  loss: number;
  dq: Float64Array;
  dc: Float64Array;
  dtau: number;
}

/** Row i of the raw scores q · cᵀ, divided by tau, into out. */
function contrastiveLogits(q: Tensor, c: Tensor, tau: number) {
  const dim = q.dims[1];
  const N = c.dims[0];
  const [qd, cd] = [q.data, c.data];
  return (i: number, out: Float64Array) => {
    for (let k = 0; k < N; k++) {
      let acc = 0;
      for (let x = 0; x < dim; x++) acc += qd[i * dim + x] * cd[k * dim + x];
      out[k] = acc / tau;
    }
  };
}

/**
 * The contrastive loss of both settings of `symmetric`, without gradients: one pass over the logits, row by row
 * (nothing of size B x N is kept, so it serves shapes whose logits would not fit a test's memory).
 */
export function contrastiveLossRefs(q: Tensor, c: Tensor, tau: number): { asymmetric: number; symmetric: number } {
  return crossEntropyLosses(logitStats(q.dims[0], c.dims[0], contrastiveLogits(q, c, tau)));
}

/**
 * Loss and gradients of both settings of `symmetric` at once: they share the logits and their log-sum-exps, and
 * the products are the slow part of the reference at the tests' larger shapes. The logits are computed again,
 * row by row, for the backward rather than kept.
 */
export function contrastiveRefs(q: Tensor, c: Tensor, tau: number): { asymmetric: ContrastiveRef; symmetric: ContrastiveRef } {
  const [B, dim] = q.dims;
  const N = c.dims[0];
  const logits = contrastiveLogits(q, c, tau);
  const stats = logitStats(B, N, logits);
  const losses = crossEntropyLosses(stats);
  const [dqA, dcA, dqS, dcS] = [B * dim, N * dim, B * dim, N * dim].map((n) => new Float64Array(n));
  let dtauA = 0;
  let dtauS = 0;
  const [qd, cd] = [q.data, c.data];
  const row = new Float64Array(N);
  for (let i = 0; i < B; i++) {
    logits(i, row);
    for (let k = 0; k < N; k++) {
      // d loss / d logit [i, k]: the row term's share, and the column term's where k is one of the first B
      // columns; then through logits = s / tau and s = q · cᵀ.
      const fromRow = Math.exp(row[k] - stats.rowLse[i]) - (k === i ? 1 : 0);
      const fromCol = k < B ? Math.exp(row[k] - stats.colLse[k]) - (k === i ? 1 : 0) : 0;
      const dlA = fromRow / B;
      const dlS = (0.5 * (fromRow + fromCol)) / B;
      dtauA -= (dlA * row[k]) / tau;
      dtauS -= (dlS * row[k]) / tau;
      const gA = dlA / tau;
      const gS = dlS / tau;
      for (let x = 0; x < dim; x++) {
        const cx = cd[k * dim + x];
        const qx = qd[i * dim + x];
        dqA[i * dim + x] += gA * cx;
        dcA[k * dim + x] += gA * qx;
        dqS[i * dim + x] += gS * cx;
        dcS[k * dim + x] += gS * qx;
      }
    }
  }
  const asymmetric: ContrastiveRef = { loss: losses.asymmetric, dq: dqA, dc: dcA, dtau: dtauA };
  const symmetric: ContrastiveRef = { loss: losses.symmetric, dq: dqS, dc: dcS, dtau: dtauS };
  return { asymmetric, symmetric };
}

export function contrastiveRef(q: Tensor, c: Tensor, tau: number, symmetric: boolean): ContrastiveRef {
  const both = contrastiveRefs(q, c, tau);
  return symmetric ? both.symmetric : both.asymmetric;
}

export function lateRef(q: Tensor, qm: Mask, d: Tensor, dm: Mask, tau: number, kind: 'cross_entropy' | 'bce', normalize: boolean, symmetric: boolean) {
  const B = q.dims[0];
  const N = d.dims[0];
  const s = maxsimRef(q, qm, d, dm, false, normalize).scores;
  const r = kind === 'bce' ? bceRef(s, B, N, tau) : crossEntropyRef(s, B, N, tau, symmetric);
  const dS = r.dlogits.map((v) => v / tau);
  const back = maxsimRef(q, qm, d, dm, false, normalize, dS);
  return { loss: r.loss, dq: back.dq, dd: back.dd, dtau: r.dtau };
}

// ---------------------------------------------------------------------------------------------------
// Comparison helpers

/**
 * make() on the first call, its result on every later one: one case's inputs and float64 reference, shared by the
 * tests that check the fused and the eager op on them (at the larger shapes the reference is the slow part).
 */
export function once<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}

/** max |a - b| / (1 + max |b|): a relative error for arrays whose entries vary in size. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return worst / (1 + scale);
}
