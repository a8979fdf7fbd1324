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

export function logSumExp(values: number[]): number {
  const m = Math.max(...values);
  return m + Math.log(values.reduce((s, v) => s + Math.exp(v - m), 0));
}

export interface LossRef {
  loss: number;
  /** d loss / d logits, [B, N] */
  dlogits: Float64Array;
  dtau: number;
}

/** Cross-entropy over logits = s / tau (s: [B, N] raw scores), positives on the diagonal. */
export function crossEntropyRef(s: ArrayLike<number>, B: number, N: number, tau: number, symmetric: boolean): LossRef {
  const dl = new Float64Array(B * N);
  const logit = (i: number, k: number) => s[i * N + k] / tau;
  const weight = symmetric ? 0.5 / B : 1 / B;
  let rowTerm = 0;
  for (let i = 0; i < B; i++) {
    const row = Array.from({ length: N }, (_, k) => logit(i, k));
    const lse = logSumExp(row);
    rowTerm += lse - row[i];
    for (let k = 0; k < N; k++) dl[i * N + k] += weight * (Math.exp(row[k] - lse) - (k === i ? 1 : 0));
  }
  let loss = rowTerm / B;
  if (symmetric) {
    let colTerm = 0;
    for (let j = 0; j < B; j++) {
      const col = Array.from({ length: B }, (_, i) => logit(i, j));
      const lse = logSumExp(col);
      colTerm += lse - col[j];
      for (let i = 0; i < B; i++) dl[i * N + j] += weight * (Math.exp(col[i] - lse) - (i === j ? 1 : 0));
    }
    loss = 0.5 * (loss + colTerm / B);
  }
  let dtau = 0;
  for (let i = 0; i < B; i++) for (let k = 0; k < N; k++) dtau -= (dl[i * N + k] * logit(i, k)) / tau;
  return { loss, dlogits: dl, dtau };
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

export function contrastiveRef(q: Tensor, c: Tensor, tau: number, symmetric: boolean): ContrastiveRef {
  const [B, dim] = q.dims;
  const N = c.dims[0];
  const s = new Float64Array(B * N);
  for (let i = 0; i < B; i++)
    for (let k = 0; k < N; k++) {
      let acc = 0;
      for (let x = 0; x < dim; x++) acc += q.data[i * dim + x] * c.data[k * dim + x];
      s[i * N + k] = acc;
    }
  const r = crossEntropyRef(s, B, N, tau, symmetric);
  const dq = new Float64Array(B * dim);
  const dc = new Float64Array(N * dim);
  for (let i = 0; i < B; i++)
    for (let k = 0; k < N; k++) {
      const g = r.dlogits[i * N + k] / tau;
      if (g === 0) continue;
      for (let x = 0; x < dim; x++) {
        dq[i * dim + x] += g * c.data[k * dim + x];
        dc[k * dim + x] += g * q.data[i * dim + x];
      }
    }
  return { loss: r.loss, dq, dc, dtau: r.dtau };
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
