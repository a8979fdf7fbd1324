/**
 * Labeled pairs' similarity metrics (sentence-transformers' EmbeddingSimilarityEvaluator): how well an embedding
 * model's cosine similarities of sentence pairs follow their labels (STS-B-style scores, or 1/0), by Spearman's rank
 * correlation and Pearson's. train() validates a loss.pairs run with them (measurePairs); evaluateSimilarity() and
 * `coltrast eval --data <pairs file>` measure a model on a file of labeled pairs.
 */
import type { CrossEncoder } from './cross-encoder';
import { Encoder, matrixRows, normalizeRow, type Device, type Quantize } from './encoder';
import { ColtrastError } from './errors';
import { quantizeOption } from './native-model';
import { readTrainingData, type TrainExample } from './train-data';
import { checkOptions, invalid, positiveInteger } from './validate';

/**
 * How well a model's cosine similarities of labeled pairs follow their labels (sentence-transformers'
 * EmbeddingSimilarityEvaluator's spearman_cosine and pearson_cosine).
 */
export interface SimilarityMetrics {
  /** Spearman's rank correlation (ties given their mean rank). */
  spearman: number;
  pearson: number;
  pairs: number;
  /** With loss.matryoshka: the correlations with the vectors cut to each width (largest first). */
  dimensions?: { dimension: number; spearman: number; pearson: number }[];
}

/**
 * SimilarityMetrics of labeled pairs (each example's query and positive, its label): the cosines of the encoder's
 * vectors (embedded as the training embeds them: with the model's query and document prompts when `prompts`) against
 * the labels; with Matryoshka `widths`, each width's too, the vectors cut to it and normalized again.
 */
export async function measurePairs(encoder: Encoder, examples: TrainExample[], prompts: boolean, widths?: number[], signal?: AbortSignal, batchSize?: number): Promise<SimilarityMetrics> {
  const side = async (texts: string[], task: 'query' | 'document') => matrixRows(await encoder.embed(texts, { ...(prompts && { task }), signal, ...(batchSize && { batchSize }) }));
  const first = await side(examples.map((e) => e.query), 'query');
  const second = await side(examples.map((e) => e.positive), 'document');
  const labels = examples.map((e) => e.label!);
  const at = (width: number) => {
    const cosines = first.map((a, i) => {
      const x = normalizeRow(a.slice(0, width));
      const y = normalizeRow(second[i].slice(0, width));
      let dot = 0;
      for (let k = 0; k < width; k++) dot += x[k] * y[k];
      return dot;
    });
    return { spearman: spearman(cosines, labels), pearson: pearson(cosines, labels) };
  };
  return { ...at(encoder.dimension), pairs: examples.length, ...(widths && { dimensions: widths.map((dimension) => ({ dimension, ...at(dimension) })) }) };
}

/**
 * SimilarityMetrics of a cross-encoder on labeled pairs: its scores of the pairs (with its activation) against the labels
 * (sentence-transformers' CrossEncoderCorrelationEvaluator).
 */
export async function measureScoredPairs(encoder: CrossEncoder, examples: TrainExample[], signal?: AbortSignal): Promise<SimilarityMetrics> {
  const { data } = await encoder.predict(examples.map((e): [string, string] => [e.query, e.positive]), { signal });
  const labels = examples.map((e) => e.label!);
  return { spearman: spearman(data, labels), pearson: pearson(data, labels), pairs: examples.length };
}

/** Pearson's correlation coefficient of `x` and `y` (NaN where either is constant, as scipy gives). */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? NaN : sxy / Math.sqrt(sxx * syy);
}

/** Spearman's rank correlation of `x` and `y`: Pearson's of their ranks, tied values given their mean rank (scipy's spearmanr). */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  return pearson(meanRanks(x), meanRanks(y));
}

function meanRanks(values: ArrayLike<number>): Float64Array {
  const order = Array.from({ length: values.length }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const out = new Float64Array(values.length);
  for (let start = 0; start < order.length; ) {
    let end = start + 1;
    while (end < order.length && values[order[end]] === values[order[start]]) end++;
    for (let k = start; k < end; k++) out[order[k]] = (start + end + 1) / 2; // ranks start + 1 .. end, their mean
    start = end;
  }
  return out;
}


export interface SimilarityEvaluationOptions {
  /** Labeled pairs: a .jsonl, .json, .csv or .tsv file of { sentence1, sentence2, score or label }, or those objects. */
  data: string | readonly unknown[];
  /** A model folder, Hugging Face id or loaded Encoder (default: coltrast's shipped model). */
  model?: string | Encoder;
  /** Embed the first sentences as the model's queries and the second as its documents (its prompts; default false, as sentence-transformers' evaluator embeds both plainly). */
  prompts?: boolean;
  /** For a model given by name: its vectors cut to this width (EncoderLoadOptions.truncateDim), or run in int8 on the CPU. */
  truncateDim?: number;
  quantize?: Quantize;
  batchSize?: number;
  device?: Device;
}

/** evaluateSimilarity's result: the correlations, and the seconds the evaluation took. */
export interface SimilarityEvaluation extends SimilarityMetrics {
  seconds: number;
}

/**
 * Spearman's and Pearson's correlations of an embedding model's cosine similarities of labeled pairs with their labels
 * (sentence-transformers' EmbeddingSimilarityEvaluator's spearman_cosine and pearson_cosine), on `options.data`.
 */
export async function evaluateSimilarity(options: SimilarityEvaluationOptions): Promise<SimilarityEvaluation> {
  const o = checkOptions('options', options, ['data', 'model', 'prompts', 'truncateDim', 'quantize', 'batchSize', 'device']);
  if (o.model !== undefined && !(o.model instanceof Encoder) && (typeof o.model !== 'string' || o.model === '')) throw invalid('options.model', 'a model folder, Hugging Face id or Encoder', o.model);
  if (o.prompts !== undefined && typeof o.prompts !== 'boolean') throw invalid('options.prompts', 'true or false', o.prompts);
  if ((o.truncateDim !== undefined || o.quantize !== undefined) && o.model instanceof Encoder) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.truncateDim and options.quantize apply to a model given by name; load the Encoder with them instead');
  }
  const batchSize = o.batchSize === undefined ? undefined : positiveInteger('options.batchSize', o.batchSize);
  const started = Date.now();
  const data = await readTrainingData(o.data as string | readonly unknown[]);
  const examples = 'examples' in data ? data.examples : [];
  const unlabeled = examples.findIndex((e) => e.label === undefined);
  if (!('examples' in data) || unlabeled >= 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.data must be labeled pairs ({ "sentence1", "sentence2", "score" } or "label"), and ${'examples' in data ? `example ${unlabeled + 1} has no label` : 'it is a ColTrast project file'}`,
    );
  }
  if (examples.length < 2) throw new ColtrastError('INVALID_ARGUMENT', 'options.data holds one labeled pair: a correlation needs at least two');
  const encoder = o.model instanceof Encoder ? o.model : await Encoder.load((o.model as string | undefined) ?? 'default', { device: o.device ?? 'auto', truncateDim: o.truncateDim, ...(o.quantize !== undefined && { quantize: quantizeOption(o.quantize) }) });
  try {
    if (encoder.multiVector) throw new ColtrastError('INVALID_ARGUMENT', `${encoder.modelDir} is a multi-vector model: the pairs' cosine similarities need pooled vectors`);
    return { ...(await measurePairs(encoder, examples, o.prompts ?? false, undefined, undefined, batchSize)), seconds: (Date.now() - started) / 1000 };
  } finally {
    if (encoder !== o.model) encoder.dispose();
  }
}
