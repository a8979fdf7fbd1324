/**
 * `quantizeEmbeddings()`: vectors to int8 / uint8 codes or packed sign bits, as sentence-transformers'
 * `quantize_embeddings` makes them (the same codes: float32 arithmetic, most significant bit first), for
 * storing or sending embeddings at a quarter or a 32nd of their size. An `Index` quantizes the same way
 * with `storage: 'int8' | 'binary'` (native/search/dense_store.cc).
 *
 * Written here rather than taken from a package: no npm package implements these codes, and each is a few
 * lines of arithmetic whose exactness the tests check against sentence-transformers itself.
 */
import type { Matrix } from './encoder';
import { ColtrastError } from './errors';
import { checkOptions, floatMatrix, invalid, oneOf } from './validate';

export type Precision = 'float32' | 'int8' | 'uint8' | 'binary' | 'ubinary';

export interface QuantizeOptions {
  /**
   * int8 / uint8: each dimension's minimum (row 0) and maximum (row 1), `{ dims: [2, dim] }`. Default: from
   * `calibration`, else from the embeddings themselves (which needs many of them, and queries quantized later
   * need the same ranges: keep the returned `ranges`).
   */
  ranges?: Matrix;
  /** int8 / uint8: embeddings whose per-dimension minimum and maximum become the ranges. */
  calibration?: Matrix;
}

export interface Quantized {
  precision: Precision;
  /** [rows, dim] for float32 / int8 / uint8; [rows, ceil(dim / 8)] bytes for binary / ubinary. */
  dims: [number, number];
  data: Float32Array | Int8Array | Uint8Array;
  /** int8 / uint8: the ranges used, `{ dims: [2, dim] }` (minimum, maximum). */
  ranges?: Matrix;
}

const f32 = Math.fround;

/** Each column's minimum and maximum, [2, dim]. */
function columnRanges(m: Matrix): Matrix {
  const [n, dim] = m.dims;
  if (n === 0) throw new ColtrastError('INVALID_ARGUMENT', 'int8 quantization needs ranges: give options.ranges or options.calibration, or at least one embedding');
  const out = new Float32Array(2 * dim);
  for (let c = 0; c < dim; c++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let r = 0; r < n; r++) {
      const v = m.data[r * dim + c];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    out[c] = lo;
    out[dim + c] = hi;
  }
  return { dims: [2, dim], data: out };
}

/**
 * `m` itself, after checking that every value is finite: a NaN or infinite value or range would make every code of
 * its column silently wrong (NaN casts to 0, an infinite range puts every value in one bucket).
 */
function finite(name: string, m: Matrix): Matrix {
  const at = m.data.findIndex((x) => !Number.isFinite(x));
  if (at >= 0) {
    const [row, column] = [Math.floor(at / m.dims[1]), at % m.dims[1]];
    throw new ColtrastError('INVALID_ARGUMENT', `${name} holds ${m.data[at]} (row ${row}, column ${column}): int8 / uint8 codes need finite values; drop or fix that embedding`);
  }
  return m;
}

/** Quantizes `embeddings` to `precision`, with sentence-transformers' codes. */
export function quantizeEmbeddings(embeddings: Matrix, precision: Precision, options?: QuantizeOptions): Quantized {
  const m = floatMatrix('embeddings', embeddings);
  const p = oneOf('precision', precision, ['float32', 'int8', 'uint8', 'binary', 'ubinary'] as const);
  const o = checkOptions('options', options, ['ranges', 'calibration']);
  const [n, dim] = m.dims;
  if (p === 'float32') return { precision: p, dims: [n, dim], data: m.data.slice() };
  if (p === 'binary' || p === 'ubinary') {
    const width = Math.ceil(dim / 8);
    const bytes = new Uint8Array(n * width);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < dim; c++) if (m.data[r * dim + c] > 0) bytes[r * width + (c >> 3)] |= 0x80 >> (c & 7);
    }
    return { precision: p, dims: [n, width], data: p === 'ubinary' ? bytes : Int8Array.from(bytes, (b) => b - 128) };
  }
  if (o.ranges !== undefined && o.calibration !== undefined) throw new ColtrastError('INVALID_ARGUMENT', 'give options.ranges or options.calibration, not both');
  finite('embeddings', m);
  // The calibration's width checked before its ranges are taken (else the error would name options.ranges, not given).
  if (o.calibration !== undefined && floatMatrix('options.calibration', o.calibration).dims[1] !== dim) throw invalid('options.calibration', `embeddings of width ${dim}`, o.calibration.dims);
  const ranges = o.ranges !== undefined ? finite('options.ranges', floatMatrix('options.ranges', o.ranges)) : columnRanges(o.calibration !== undefined ? finite('options.calibration', o.calibration) : m);
  if (ranges.dims[0] !== 2 || ranges.dims[1] !== dim) throw invalid('options.ranges', `a [2, ${dim}] matrix (each dimension's minimum, then maximum)`, ranges.dims);
  // Rows swapped (maximum first) gave every code of the column mirrored, and scores of the wrong sign, without an error.
  for (let c = 0; c < dim; c++) {
    if (ranges.data[c] > ranges.data[dim + c]) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `options.ranges: column ${c}'s minimum (row 0, ${ranges.data[c]}) is above its maximum (row 1, ${ranges.data[dim + c]}): row 0 holds each dimension's minimum, row 1 its maximum`,
      );
    }
  }
  const out = p === 'int8' ? new Int8Array(n * dim) : new Uint8Array(n * dim);
  const offset = p === 'int8' ? 128 : 0;
  for (let c = 0; c < dim; c++) {
    const start = ranges.data[c];
    let step = f32(f32(ranges.data[dim + c] - start) / 255);
    if (step === 0) step = 1;
    for (let r = 0; r < n; r++) {
      const bucket = Math.min(255, Math.max(0, Math.floor(f32(f32(m.data[r * dim + c] - start) / step))));
      out[r * dim + c] = bucket - offset;
    }
  }
  return { precision: p, dims: [n, dim], data: out, ranges: { dims: [2, dim], data: ranges.data.slice() } };
}
