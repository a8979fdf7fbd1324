/**
 * Labeled pairs' similarity metrics (sentence-transformers' EmbeddingSimilarityEvaluator and its sparse and
 * cross-encoder kin): how well a model's scores of sentence pairs (an embedding model's cosine similarities, a sparse
 * encoder's similarity, a cross-encoder's scores) follow their labels (STS-B-style scores, or 1/0), by Spearman's rank
 * correlation and Pearson's. train() validates a loss.pairs run (measurePairs) and a cross-encoder's labeled pairs
 * (measureScoredPairs) with them; evaluateSimilarity() and `coltrast eval --data <pairs file>` measure a model on a file
 * of labeled pairs.
 */
import { CrossEncoder } from './cross-encoder';
import { Encoder, matrixRows, normalizeRow, type Device, type Quantize } from './encoder';
import { ColtrastError } from './errors';
import { resolveModelDir } from './hub';
import { isCrossEncoderFolder, isSparseEncoderFolder } from './model-dir';
import { SparseEncoder } from './sparse-encoder';
import { quantizeOption } from './native-model';
import { readTrainingData, type TrainExample } from './train-data';
import { checkOptions, invalid, positiveInteger } from './validate';

/**
 * How well a model's scores of labeled pairs follow their labels (for an embedding model, its cosine similarities:
 * sentence-transformers' EmbeddingSimilarityEvaluator's spearman_cosine and pearson_cosine).
 */
export interface SimilarityMetrics {
  /** Spearman's rank correlation (ties given their mean rank). */
  spearman: number;
  pearson: number;
  pairs: number;
  /** With loss.matryoshka: the correlations with the vectors cut to each width (largest first). */
  dimensions?: { dimension: number; spearman: number; pearson: number }[];
  /** Where every label is 1 or 0 (duplicates and not): how well a threshold on the scores separates them. */
  classification?: BinaryClassificationMetrics;
}

/**
 * Pairs labeled 1 (similar, duplicates) or 0, classified by a threshold on their scores (higher: more similar), as
 * sentence-transformers' BinaryClassificationEvaluator measures them: the best accuracy over the thresholds between
 * neighbouring scores and that threshold, the best F1 with its precision, recall and threshold, the average precision
 * of the ranking by score (scikit-learn's average_precision_score), and Matthews' correlation coefficient of the
 * classification at the F1 threshold.
 */
export interface BinaryClassificationMetrics {
  accuracy: number;
  accuracyThreshold: number;
  f1: number;
  f1Threshold: number;
  precision: number;
  recall: number;
  averagePrecision: number;
  mcc: number;
}

/**
 * BinaryClassificationMetrics of `scores` against `labels` (each 1 or 0): sentence-transformers'
 * find_best_acc_and_threshold and find_best_f1_and_threshold over the pairs sorted by falling score (a tie in the given
 * order), scikit-learn's average precision (tied scores one threshold) and Matthews' correlation at the F1 threshold.
 */
export function binaryClassification(scores: ArrayLike<number>, labels: ArrayLike<number>): BinaryClassificationMetrics {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const positives = Array.from(labels).filter((l) => l === 1).length;
  let accuracy = 0;
  let accuracyThreshold = -1;
  let f1 = 0;
  let precision = 0;
  let recall = 0;
  let f1Threshold = 0;
  let above = 0; // pairs at or above the current place
  let correct = 0; // positives among them
  let negativesLeft = n - positives;
  for (let k = 0; k < n - 1; k++) {
    const i = order[k];
    const between = (scores[i] + scores[order[k + 1]]) / 2;
    above += 1;
    if (labels[i] === 1) correct += 1;
    else negativesLeft -= 1;
    const acc = (correct + negativesLeft) / n;
    if (acc > accuracy) [accuracy, accuracyThreshold] = [acc, between];
    if (correct > 0) {
      const p = correct / above;
      const r = correct / positives;
      const f = (2 * p * r) / (p + r);
      if (f > f1) [f1, precision, recall, f1Threshold] = [f, p, r, between];
    }
  }
  // Average precision: the precision at each distinct score, weighted by the recall it adds.
  let averagePrecision = 0;
  let recallBefore = 0;
  for (let k = 0, tp = 0; k < n && positives > 0; ) {
    let end = k;
    for (; end < n && scores[order[end]] === scores[order[k]]; end++) if (labels[order[end]] === 1) tp += 1;
    averagePrecision += (tp / positives - recallBefore) * (tp / end);
    recallBefore = tp / positives;
    k = end;
  }
  // Matthews' correlation of the classification at the F1 threshold (0 where a margin of the table is empty).
  let [tpAt, fpAt, tnAt, fnAt] = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    const predicted = scores[i] >= f1Threshold;
    if (predicted && labels[i] === 1) tpAt++;
    else if (predicted) fpAt++;
    else if (labels[i] === 1) fnAt++;
    else tnAt++;
  }
  const denominator = Math.sqrt((tpAt + fpAt) * (tpAt + fnAt) * (tnAt + fpAt) * (tnAt + fnAt));
  const mcc = denominator === 0 ? 0 : (tpAt * tnAt - fpAt * fnAt) / denominator;
  return { accuracy, accuracyThreshold, f1, f1Threshold, precision, recall, averagePrecision, mcc };
}

/** BinaryClassificationMetrics where every label is 1 or 0, else nothing. */
function classifiedAs(scores: ArrayLike<number>, labels: number[]): { classification?: BinaryClassificationMetrics } {
  return labels.every((l) => l === 0 || l === 1) && labels.includes(1) && labels.includes(0) ? { classification: binaryClassification(scores, labels) } : {};
}

/**
 * SimilarityMetrics of labeled pairs (each example's query and positive, its label): the cosines of the encoder's
 * vectors against the labels; with Matryoshka `widths`, each width's too, the vectors cut to it and normalized again.
 * `prompts`: 'tasks', the model's query and document prompts; 'default', its default prompt if it has one (as
 * sentence-transformers' encode() without a task); 'none', none at all (as train() embeds without prompts).
 */
export async function measurePairs(encoder: Encoder, examples: TrainExample[], prompts: 'tasks' | 'default' | 'none', widths?: number[], signal?: AbortSignal, batchSize?: number): Promise<SimilarityMetrics> {
  const how = (task: 'query' | 'document') => (prompts === 'tasks' ? { task } : prompts === 'none' ? { prompt: '' } : {});
  const side = async (texts: string[], task: 'query' | 'document') => matrixRows(await encoder.embed(texts, { ...how(task), signal, ...(batchSize && { batchSize }) }));
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
    return { spearman: spearman(cosines, labels), pearson: pearson(cosines, labels), cosines };
  };
  const { cosines, ...full } = at(encoder.dimension);
  return {
    ...full,
    pairs: examples.length,
    ...(widths && {
      dimensions: widths.map((dimension) => {
        const r = at(dimension);
        return { dimension, spearman: r.spearman, pearson: r.pearson };
      }),
    }),
    ...classifiedAs(cosines, labels),
  };
}

/**
 * SimilarityMetrics of a cross-encoder on labeled pairs: its scores of the pairs (with its activation) against the labels
 * (sentence-transformers' CrossEncoderCorrelationEvaluator).
 */
export async function measureScoredPairs(encoder: CrossEncoder, examples: TrainExample[], signal?: AbortSignal): Promise<SimilarityMetrics> {
  const { data } = await encoder.predict(examples.map((e): [string, string] => [e.query, e.positive]), { signal });
  const labels = examples.map((e) => e.label!);
  return { spearman: spearman(data, labels), pearson: pearson(data, labels), pairs: examples.length, ...classifiedAs(data, labels) };
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
  /**
   * A model folder, Hugging Face id or loaded model (default: coltrast's shipped model): an Encoder (cosine similarity
   * of the pair's vectors, as EmbeddingSimilarityEvaluator), a SparseEncoder (the model's similarity of its sparse
   * vectors, as SparseEmbeddingSimilarityEvaluator) or a CrossEncoder (its score of the pair read together, as
   * CrossEncoderCorrelationEvaluator). A folder's kind is read from it.
   */
  model?: string | Encoder | SparseEncoder | CrossEncoder;
  /**
   * Embed the first sentences as the model's queries and the second as its documents (its prompts; default false, as
   * sentence-transformers' evaluator embeds both plainly). Not for a CrossEncoder.
   */
  prompts?: boolean;
  /** For a model given by name: its vectors cut to this width (EncoderLoadOptions.truncateDim), or run in int8 on the CPU. */
  truncateDim?: number;
  quantize?: Quantize;
  batchSize?: number;
  device?: Device;
}

/** evaluateSimilarity's result: the correlations, what was correlated with the labels, and the seconds it took. */
export interface SimilarityEvaluation extends SimilarityMetrics {
  /** 'cosine' (an Encoder), a SparseEncoder's similarity function ('dot', ...), or 'cross-encoder score'. */
  scoredBy: string;
  seconds: number;
}

/**
 * Spearman's and Pearson's correlations of an embedding model's cosine similarities of labeled pairs with their labels
 * (sentence-transformers' EmbeddingSimilarityEvaluator's spearman_cosine and pearson_cosine), on `options.data`.
 */
export async function evaluateSimilarity(options: SimilarityEvaluationOptions): Promise<SimilarityEvaluation> {
  const o = checkOptions('options', options, ['data', 'model', 'prompts', 'truncateDim', 'quantize', 'batchSize', 'device']);
  const loaded = o.model instanceof Encoder || o.model instanceof SparseEncoder || o.model instanceof CrossEncoder;
  if (o.model !== undefined && !loaded && (typeof o.model !== 'string' || o.model === '')) throw invalid('options.model', 'a model folder, Hugging Face id, Encoder, SparseEncoder or CrossEncoder', o.model);
  if (o.prompts !== undefined && typeof o.prompts !== 'boolean') throw invalid('options.prompts', 'true or false', o.prompts);
  if ((o.truncateDim !== undefined || o.quantize !== undefined) && loaded) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.truncateDim and options.quantize apply to a model given by name; load the model with them instead');
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
  const model = loaded ? (o.model as Encoder | SparseEncoder | CrossEncoder) : await loadAnyModel((o.model as string | undefined) ?? 'default', o);
  try {
    if (model instanceof CrossEncoder) {
      if (o.prompts) throw invalid('options.prompts', 'absent with a CrossEncoder (it reads each pair together, without prompts)', o.prompts);
      return { ...(await measureScoredPairs(model, examples)), scoredBy: 'cross-encoder score', seconds: (Date.now() - started) / 1000 };
    }
    if (model instanceof SparseEncoder) {
      const side = (texts: string[], task: 'query' | 'document') => model.encode(texts, { ...(o.prompts && { task }), ...(batchSize && { batchSize }) });
      const scores = await model.similarityPairwise(await side(examples.map((e) => e.query), 'query'), await side(examples.map((e) => e.positive), 'document'));
      const labels = examples.map((e) => e.label!);
      return { spearman: spearman(scores, labels), pearson: pearson(scores, labels), pairs: examples.length, ...classifiedAs(scores, labels), scoredBy: model.similarityFunction, seconds: (Date.now() - started) / 1000 };
    }
    if (model.multiVector) throw new ColtrastError('INVALID_ARGUMENT', `${model.modelDir} is a multi-vector model: the pairs' cosine similarities need pooled vectors`);
    return { ...(await measurePairs(model, examples, o.prompts ? 'tasks' : 'default', undefined, undefined, batchSize)), scoredBy: 'cosine', seconds: (Date.now() - started) / 1000 };
  } finally {
    if (model !== o.model) model.dispose();
  }
}

/** A model given by name, loaded as the kind its folder is (a hub id's snapshot, downloaded if need be). */
async function loadAnyModel(name: string, o: SimilarityEvaluationOptions): Promise<Encoder | SparseEncoder | CrossEncoder> {
  const device = o.device ?? 'auto';
  const quantize = o.quantize === undefined ? {} : { quantize: quantizeOption(o.quantize) };
  const dir = name === 'default' ? undefined : await resolveModelDir(name);
  if (dir && (isCrossEncoderFolder(dir) || isSparseEncoderFolder(dir))) {
    if (o.truncateDim !== undefined) throw invalid('options.truncateDim', `absent: ${name} is a ${isCrossEncoderFolder(dir) ? 'cross-encoder' : 'sparse encoder'}, whose output is not cut`, o.truncateDim);
    return isCrossEncoderFolder(dir) ? CrossEncoder.load(name, { device, ...quantize }) : SparseEncoder.load(name, { device, ...quantize });
  }
  return Encoder.load(name, { device, truncateDim: o.truncateDim, ...quantize });
}

export interface TripletEvaluationOptions {
  /** Triplets: a .jsonl, .json, .csv or .tsv file of { query (or anchor), positive, negative }, or those objects. */
  data: string | readonly unknown[];
  /** A model folder, Hugging Face id or loaded Encoder (default: coltrast's shipped model). */
  model?: string | Encoder;
  /** A triplet counts as right when its positive's score beats its negative's by more than this (default 0). */
  margin?: number;
  truncateDim?: number;
  quantize?: Quantize;
  batchSize?: number;
  device?: Device;
}

/**
 * The share of `examples` (each with a first negative) whose positive `encoder` scores above that negative by more than
 * `margin`, by the model's similarity function, the anchors embedded as queries and the others as documents (with the
 * model's prompts for them when `prompts` is 'tasks'; none when 'none'): TripletEvaluator's accuracy. For evaluateTriplets
 * and a triplet run's validation.
 */
export async function measureTriplets(
  encoder: Encoder,
  examples: TrainExample[],
  o: { prompts: 'tasks' | 'none'; margin?: number; batchSize?: number; signal?: AbortSignal },
): Promise<number> {
  const embed = (texts: string[], task: 'query' | 'document') =>
    encoder.embed(texts, { ...(o.prompts === 'tasks' ? { task } : { prompt: '' }), ...(o.batchSize && { batchSize: o.batchSize }), ...(o.signal && { signal: o.signal }) });
  const anchors = await embed(examples.map((e) => e.query), 'query');
  const positive = await encoder.similarityPairwise(anchors, await embed(examples.map((e) => e.positive), 'document'));
  const negative = await encoder.similarityPairwise(anchors, await embed(examples.map((e) => e.negatives![0]), 'document'));
  let right = 0;
  for (let i = 0; i < examples.length; i++) if (positive[i] > negative[i] + (o.margin ?? 0)) right++;
  return right / examples.length;
}

/** evaluateTriplets' result: the share of triplets ranked right, by which similarity, and the seconds it took. */
export interface TripletEvaluation {
  accuracy: number;
  triplets: number;
  /** The model's similarity function ('cosine', 'dot', or the negated 'euclidean' or 'manhattan' distance). */
  scoredBy: string;
  seconds: number;
}

/**
 * The share of triplets whose anchor the model scores closer to the positive than to the negative (by more than
 * `margin`): sentence-transformers' TripletEvaluator, the anchors embedded as queries and the others as documents (the
 * model's prompts), scored by the model's similarity function; each example's first negative.
 */
export async function evaluateTriplets(options: TripletEvaluationOptions): Promise<TripletEvaluation> {
  const o = checkOptions('options', options, ['data', 'model', 'margin', 'truncateDim', 'quantize', 'batchSize', 'device']);
  const loaded = o.model instanceof Encoder;
  if (o.model !== undefined && !loaded && (typeof o.model !== 'string' || o.model === '')) throw invalid('options.model', 'an embedding model folder, Hugging Face id or Encoder', o.model);
  if ((o.truncateDim !== undefined || o.quantize !== undefined) && loaded) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.truncateDim and options.quantize apply to a model given by name; load the model with them instead');
  }
  const margin = o.margin === undefined ? 0 : o.margin;
  if (typeof margin !== 'number' || !Number.isFinite(margin)) throw invalid('options.margin', 'a finite number', o.margin);
  const batchSize = o.batchSize === undefined ? undefined : positiveInteger('options.batchSize', o.batchSize);
  const started = Date.now();
  const data = await readTrainingData(o.data as string | readonly unknown[]);
  const examples = 'examples' in data ? data.examples : [];
  const missing = examples.findIndex((e) => !e.negatives?.length);
  if (!('examples' in data) || examples.length === 0 || missing >= 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.data must be triplets ({ "query" or "anchor", "positive", "negative" }), and ${!('examples' in data) ? 'it is a ColTrast project file' : examples.length === 0 ? 'it holds none' : `example ${missing + 1} has no negative`}`,
    );
  }
  const model = loaded ? (o.model as Encoder) : await Encoder.load((o.model as string | undefined) ?? 'default', { device: o.device ?? 'auto', truncateDim: o.truncateDim, ...(o.quantize !== undefined && { quantize: quantizeOption(o.quantize) }) });
  try {
    if (model.multiVector) throw new ColtrastError('INVALID_ARGUMENT', `${model.modelDir} is a multi-vector model: evaluateTriplets scores one vector a text`);
    const accuracy = await measureTriplets(model, examples, { prompts: 'tasks', margin, batchSize });
    return { accuracy, triplets: examples.length, scoredBy: model.similarityFunction, seconds: (Date.now() - started) / 1000 };
  } finally {
    if (model !== o.model) model.dispose();
  }
}
