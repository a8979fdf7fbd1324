/**
 * GISTEmbed's guide (Solatorio 2024, "GISTEmbed: Guided In-sample Selection of Training Negatives"; what
 * sentence-transformers' GISTEmbedLoss does): a second embedding model judges which of a batch's negatives are
 * likely false negatives, and train() leaves those out of each query's softmax. The guide embeds every training
 * text once before training (its vectors stay in memory; a resumed run embeds them again), and each batch's
 * masks come from those vectors here, in JavaScript: B × (N + 2B) dot products a batch, small next to a step.
 */
import { dot } from './chunking';
import { Encoder, matrixRows, type Device } from './encoder';
import type { NativeGuideMasks } from './native';
import { ProgressBar } from './progress';
import type { Batch, TrainExample } from './train-data';

export interface GuideSettings {
  marginStrategy: 'absolute' | 'relative';
  margin: number;
  contrastQueries: boolean;
  contrastPositives: boolean;
}

/** The guide's L2-normalized vector of every query and every document of the examples. */
export interface GuideVectors {
  queries: Map<string, Float32Array>;
  documents: Map<string, Float32Array>;
}

/** Embeds the examples' texts with the guide `model` (queries and documents with its prompts for each). */
export async function embedWithGuide(model: string, examples: TrainExample[], load: { device: Device; threads?: number }, progressBar = false, signal?: AbortSignal): Promise<GuideVectors> {
  const guide = await Encoder.load(model, load);
  try {
    guide.checkNotMultiVector('a guide (GISTEmbed compares one vector per text)');
    const queries = [...new Set(examples.map((e) => e.query))];
    const documents = [...new Set(examples.flatMap((e) => [e.positive, ...(e.negatives ?? [])]))];
    const bar = progressBar ? new ProgressBar('guide', 'texts') : undefined;
    const embed = async (texts: string[], task: 'query' | 'document', before: number) => {
      const total = queries.length + documents.length;
      const m = await guide.embed(texts, { task, normalize: true, onProgress: bar && ((done) => bar.update(before + done, total)), signal });
      const vectors = matrixRows(m);
      return new Map(texts.map((t, i) => [t, vectors[i]]));
    };
    return { queries: await embed(queries, 'query', 0), documents: await embed(documents, 'document', queries.length) };
  } finally {
    guide.dispose();
  }
}

/**
 * The batch's masks (1 = left out): a candidate goes when the guide scores it with query i above the guide's
 * score of query i's positive, less the margin. A query's own positive always stays; a text is never its own
 * negative (the diagonals of `queries` and `positives` are masked).
 */
export function guideMasks(batch: Batch, vectors: GuideVectors, settings: GuideSettings): NativeGuideMasks {
  const B = batch.queries.length;
  const N = batch.documents.length;
  const q = batch.queries.map((t) => vectors.queries.get(t)!);
  const d = batch.documents.map((t) => vectors.documents.get(t)!);
  const limit = q.map((v, i) => {
    const positive = dot(v, d[i]);
    return settings.marginStrategy === 'absolute' ? positive - settings.margin : positive - Math.abs(positive) * settings.margin;
  });
  const mask = (rows: number, columns: number, score: (i: number, j: number) => number, keep: (i: number, j: number) => boolean) => {
    const out = new Uint8Array(rows * columns);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < columns; j++) out[i * columns + j] = !keep(i, j) && score(i, j) > limit[i] ? 1 : 0;
    }
    return out;
  };
  const masks: NativeGuideMasks = { documents: mask(B, N, (i, j) => dot(q[i], d[j]), (i, j) => i === j) };
  const never = () => false;
  if (settings.contrastQueries) masks.queries = mask(B, B, (i, j) => (i === j ? Infinity : dot(q[i], q[j])), never);
  if (settings.contrastPositives) masks.positives = mask(B, B, (i, j) => (i === j ? Infinity : dot(d[i], d[j])), never);
  return masks;
}
