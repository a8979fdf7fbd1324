/** Small float64 helpers the loss tests compute their references with, and what they ask of a model. */
import type { Encoder, Matrix } from '../../lib';
import { ColtrastError } from '../../lib';

/** The rows of a [n, dim] matrix as plain arrays. */
export const rows = (m: Matrix): number[][] => Array.from({ length: m.dims[0] }, (_, i) => Array.from(m.data.subarray(i * m.dims[1], (i + 1) * m.dims[1])));
export const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => Array.from(a).reduce((s, x, k) => s + x * b[k], 0);
export const unit = (a: number[]): number[] => {
  const n = Math.hypot(...a);
  return a.map((x) => x / n);
};

/** Makes `encoder` a small multi-vector model (12-wide token projection, queries expanded to 10) for the loss tests. */
export async function makeSmallMultiVector(encoder: Encoder): Promise<void> {
  await encoder.makeMultiVector({ dimension: 12, queryLength: 10, queryExpansion: 'fixed', attendExpansion: false, skiplist: [] }, 3);
}

/** Each text's L2-normalized token vectors as `embed({ output: 'tokens', task })` gives them. */
export async function tokenRows(encoder: Encoder, texts: string[], task: 'query' | 'document'): Promise<number[][][]> {
  return (await encoder.embed(texts, { output: 'tokens', task })).map((m) => rows(m).map(unit));
}

/** The ColtrastError `work` rejects with; throws when it resolves or rejects with something else. */
export async function rejection(work: () => Promise<unknown>): Promise<ColtrastError> {
  const error = await work().then(
    () => null,
    (e: unknown) => e,
  );
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${String(error)}`);
  return error;
}
