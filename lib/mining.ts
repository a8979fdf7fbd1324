/**
 * Hard-negative mining for (query, positive) pairs: `mineHardNegatives()` and `coltrast mine`, the function
 * sentence-transformers calls `mine_hard_negatives` (same options, same candidate window, filters, sampling and
 * output formats; test/python-interop.test.ts checks its rows against sentence-transformers' own).
 *
 * The corpus (the pairs' positives, plus any extra documents) and the distinct queries are embedded with the
 * model's document and query prompts, normalized; each query's `rangeMax + maxPositives` nearest documents come
 * from an exact search in the native dense store (off the JS thread), or, for a multi-vector (ColBERT-style) model,
 * from exact MaxSim of its token vectors against every document's, as Index scores them (sentence-transformers'
 * mine_hard_negatives takes single-vector models only), or with `plaid` from a PLAID search of an Index whose
 * token vectors are kept compressed (for corpora whose token vectors do not fit in memory); a cross-encoder, when given, rescores
 * those candidates and the positives. Then the query's own positives, candidates too close to the positive
 * (margins), too high or too low (maxScore, minScore) are struck out, the survivors are ranked, the first
 * `rangeMin` skipped, and `numNegatives` taken from the top or at random.
 */
import path from 'node:path';
import { CrossEncoder } from './cross-encoder';
import { Encoder, type Device, type Matrix } from './encoder';
import { ColtrastError } from './errors';
import { quantizeOption, type Quantize } from './native-model';
import { checkOutputFile, writeJsonLinesAtomic } from './files';
import { seededRandom } from './random';
import { exactMaxSim, Index, newStore, RESIDUAL_BITS, topIndices } from './search-index';
import { padTokens } from './ops';
import { ProgressBar } from './progress';
import { readCorpus, readTrainingData, type TrainExample } from './train-data';
import { Turns } from './turns';
import { abortedAs, booleanValue, checkOptions, invalid, numberValue, oneOf, positiveInteger, signalOption } from './validate';

export const MINING_FORMATS = ['triplet', 'n-tuple', 'labeled-pair', 'labeled-list'] as const;
export type MiningFormat = (typeof MINING_FORMATS)[number];

export interface MineOptions {
  /** (query, positive) pairs: a .jsonl / .json file of `{ query, positive }` or an array of them (other fields are not used). */
  data: string | readonly unknown[];
  /** The embedding model (a folder, hub id or loaded Encoder; default coltrast's shipped model); a multi-vector one mines by MaxSim. */
  model?: string | Encoder;
  /** More candidate documents beside the positives: .txt (one per line), .jsonl / .json of strings or `{ text }`, or an array. */
  corpus?: string | readonly unknown[];
  /** A one-label cross-encoder (folder, hub id or loaded) that rescores every candidate and positive. */
  crossEncoder?: string | CrossEncoder;
  /** Skip this many of the best-scoring candidates (likely unlabeled positives; default 0). */
  rangeMin?: number;
  /** Look at most this far down the ranking (default rangeMin + numNegatives + the most positives of a query, or ... + 10 × numNegatives with a margin or maxScore). */
  rangeMax?: number;
  /** Strike out candidates scoring above this. */
  maxScore?: number;
  /** Strike out candidates scoring below this. */
  minScore?: number;
  /** Strike out candidates scoring above (the query's lowest positive score − this). */
  absoluteMargin?: number;
  /** Strike out candidates scoring above (p − |p| × this), p the query's lowest positive score (NV-Retriever's TopK-PercPos: 0.05). */
  relativeMargin?: number;
  /** Negatives per query (default 3). */
  numNegatives?: number;
  /** 'top' (default): the best survivors; 'random': a seeded sample of them. */
  samplingStrategy?: 'top' | 'random';
  seed?: number;
  /** Embed the queries with this prompt (default: the model's 'query' prompt, as encode_query). */
  queryPrompt?: string;
  queryPromptName?: string;
  /** Embed the corpus with this prompt (default: the model's document prompt, as encode_document). */
  corpusPrompt?: string;
  corpusPromptName?: string;
  /** Keep the positives among the candidates (for re-ranking evaluation sets); the format becomes 'n-tuple'. */
  includePositives?: boolean;
  /** Rows: 'triplet' (default), 'n-tuple', 'labeled-pair' or 'labeled-list' (MinedRow). */
  outputFormat?: MiningFormat;
  /** Add the scores (bi-encoder's, or the cross-encoder's) to each row. */
  outputScores?: boolean;
  /**
   * A multi-vector model: rank each query's candidates with a PLAID search (Santhanam et al. 2022) of an Index of the
   * corpus whose token vectors are kept as ColBERTv2 compresses them (a centroid's number and a `residualBits`
   * residual, 4 by default: 68 bytes a 128-dimension vector, 36 at 2 bits, against 512 as float32), instead of exact MaxSim over every
   * document's token vectors, which all sit in memory as float32 until the search ends. The candidates' and the
   * positives' scores are MaxSim over the decoded vectors; `nprobe` and `fullScores` as Index.search's (defaults 1 and
   * max(256, 4 × the candidate window)). Documents are embedded with the model's document prompt (no corpusPrompt).
   * true: the defaults.
   */
  plaid?: boolean | PlaidMining;
  /** Texts per forward pass (default 32). */
  batchSize?: number;
  /** Write the rows here as JSONL (atomically) as well as returning them. */
  output?: string;
  device?: Device;
  threads?: number;
  /**
   * 'int8': the models this call loads by name (the embedding model, the cross-encoder) run their projections in int8
   * on the CPU (EncoderLoadOptions.quantize): faster mining for slightly changed scores. A loaded Encoder or CrossEncoder
   * runs as it was loaded.
   */
  quantize?: Quantize;
  /** Progress of each stage: embedding the corpus and the queries, searching, rescoring. */
  onProgress?: (p: MiningProgress) => void;
  /**
   * Stops mining when aborted: looked at before each batch embedded or rescored and each group of queries searched
   * (a PLAID index's build and search run to their end); it rejects with ABORTED.
   */
  signal?: AbortSignal;
}

/** MineOptions.plaid's settings: BuildOptions' residualBits (here 4 by default) and centroids, SearchOptions' nprobe and fullScores. */
export interface PlaidMining {
  residualBits?: number;
  centroids?: number;
  nprobe?: number;
  fullScores?: number;
}

export interface MiningProgress {
  stage: 'corpus' | 'queries' | 'search' | 'rescore';
  done: number;
  total: number;
}

/**
 * One output row. 'triplet': `{ query, positive, negative, scores?: [positive, negative] }` and 'n-tuple':
 * `{ query, positive, negatives, scores?: [positive, ...negatives] }` are what train() reads (scores become teacher
 * scores); 'labeled-pair': `{ query, document, label | score }`; 'labeled-list': `{ query, documents, labels | scores }`
 * (the positive first).
 */
export type MinedRow =
  | { query: string; positive: string; negative: string; scores?: [number, number] }
  | { query: string; positive: string; negatives: string[]; scores?: number[] }
  | { query: string; document: string; label?: number; score?: number }
  | { query: string; documents: string[]; labels?: number[]; scores?: number[] };

/** Summary statistics of a list of scores (as sentence-transformers prints them). */
export interface ScoreSummary {
  count: number;
  mean: number;
  median: number;
  std: number;
  min: number;
  p25: number;
  p75: number;
  max: number;
}

export interface MineResult {
  rows: MinedRow[];
  format: MiningFormat;
  /** Distinct queries, corpus documents (deduplicated, positives included), and the candidate window used. */
  queries: number;
  corpus: number;
  rangeMax: number;
  /** Scores of the (query, positive) pairs, of the negatives written, and positive minus negative. */
  positive: ScoreSummary;
  negative: ScoreSummary;
  difference: ScoreSummary;
  /** Candidates struck out by each filter that was set. */
  skipped: Partial<Record<'absoluteMargin' | 'relativeMargin' | 'maxScore' | 'minScore', number>>;
  /** Rows (or negatives) that could not be filled, of the most possible. */
  missing: number;
  possible: number;
  output?: string;
}

const KEYS = [
  'data', 'model', 'corpus', 'crossEncoder', 'rangeMin', 'rangeMax', 'maxScore', 'minScore', 'absoluteMargin', 'relativeMargin', 'numNegatives',
  'samplingStrategy', 'seed', 'queryPrompt', 'queryPromptName', 'corpusPrompt', 'corpusPromptName', 'includePositives', 'outputFormat',
  'outputScores', 'plaid', 'batchSize', 'output', 'device', 'threads', 'quantize', 'onProgress', 'signal',
] as const;
const PLAID_KEYS = ['residualBits', 'centroids', 'nprobe', 'fullScores'] as const;

/** Queries searched per native call (progress steps; the store scores them against the whole corpus at once). */
const SEARCH_CHUNK = 512;
/** A multi-vector model's queries scored per pass over the corpus's token vectors (as Index's exact search groups them). */
const MULTI_VECTOR_QUERY_GROUP = 64;
/** (query, candidate) pairs a cross-encoder call takes (progress steps). */
const RESCORE_CHUNK = 4096;

/**
 * Adds hard negatives to (query, positive) pairs. Rows come grouped by query, in the order queries first appear;
 * a query's rows follow its positives' order and its negatives' ranking (best first).
 */
export async function mineHardNegatives(options: MineOptions): Promise<MineResult> {
  const o = checkOptions('options', options, KEYS);
  const { numNegatives, rangeMin, maxScore, minScore, absoluteMargin, relativeMargin, sampling, seed, rangeMaxOption } = miningSettings('options', o);
  const includePositives = booleanValue('options.includePositives', o.includePositives ?? false);
  // As sentence-transformers: with the positives among the candidates, rows keep the full ranking (n-tuple).
  const format = includePositives ? 'n-tuple' : oneOf('options.outputFormat', o.outputFormat ?? 'triplet', MINING_FORMATS);
  const outputScores = booleanValue('options.outputScores', o.outputScores ?? false);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
  if (o.output !== undefined && (typeof o.output !== 'string' || o.output.length === 0)) throw invalid('options.output', 'a file path', o.output);
  if (o.output !== undefined) checkOutputFile(o.output, 'options.output');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  for (const name of ['queryPrompt', 'queryPromptName', 'corpusPrompt', 'corpusPromptName'] as const) {
    if (o[name] !== undefined && typeof o[name] !== 'string') throw invalid(`options.${name}`, 'a string', o[name]);
  }
  const progress = (stage: MiningProgress['stage'], done: number, total: number) => o.onProgress?.({ stage, done, total });
  const signal = signalOption(o.signal);
  // Looked at before each batch of embedding or rescoring and each group of searched queries (the one under way finishes).
  const stopIfAborted = (stage: MiningProgress['stage']) => {
    if (signal?.aborted) throw new ColtrastError('ABORTED', `mineHardNegatives() was aborted (options.signal) in its ${stage} stage`);
  };
  // An embed() or predict() that the signal stopped: said as mining's abort, not as the inner call's.
  const abortable = <T>(stage: MiningProgress['stage'], work: Promise<T>): Promise<T> => abortedAs(work, () => stopIfAborted(stage));
  const quantize = quantizeOption(o.quantize);
  if (quantize !== undefined && o.model instanceof Encoder && (o.crossEncoder === undefined || o.crossEncoder instanceof CrossEncoder)) {
    throw new ColtrastError('INVALID_ARGUMENT', "options.quantize applies to the models mining loads by name; load the Encoder (and CrossEncoder) with { quantize: 'int8' } instead");
  }
  const plaid = plaidSettings('options.plaid', o.plaid);
  if (plaid && (o.corpusPrompt !== undefined || o.corpusPromptName !== undefined)) {
    throw new ColtrastError('INVALID_ARGUMENT', "options.plaid embeds the corpus as Index does, with the model's document prompt: leave out options.corpusPrompt and options.corpusPromptName");
  }
  // After the options' checks (their mistakes are said as such), before anything is read or loaded.
  stopIfAborted('corpus');

  const read = await readTrainingData(o.data as string | readonly unknown[]);
  if ('projects' in read) {
    throw new ColtrastError('INVALID_ARGUMENT', `${String(o.data)} is a ColTrast project file: train() chunks and mines those itself; mining takes (query, positive) pairs`);
  }
  const pairs = read.examples;
  const extra = o.corpus === undefined ? [] : await readCorpus(o.corpus as Parameters<typeof readCorpus>[0]);

  // Every loop over the pairs or the queries lets the event loop run in turns: at a million pairs each holds it for seconds.
  const turns = new Turns();
  // Rows per query (repeats included, as sentence-transformers counts them) set the default candidate window.
  const rowsPerQuery = new Map<string, number>();
  for (const p of pairs) {
    rowsPerQuery.set(p.query, (rowsPerQuery.get(p.query) ?? 0) + 1);
    if (turns.due) await turns.maybe();
  }
  let maxPositives = 0;
  for (const n of rowsPerQuery.values()) maxPositives = Math.max(maxPositives, n);
  const filtering = absoluteMargin !== undefined || relativeMargin !== undefined || maxScore !== undefined;
  const rangeMax = rangeMaxOption ?? rangeMin + numNegatives * (filtering ? 10 : 1) + maxPositives;
  if (rangeMin >= rangeMax) throw new ColtrastError('INVALID_ARGUMENT', `options.rangeMin (${rangeMin}) must be below options.rangeMax (${rangeMax})`);
  if (numNegatives > rangeMax - rangeMin) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `cannot mine ${numNegatives} negatives per query: only ${rangeMax - rangeMin} candidates remain after skipping the first rangeMin=${rangeMin} of rangeMax=${rangeMax}; lower numNegatives or rangeMin, or raise rangeMax`,
    );
  }

  // The corpus: the extra documents, then the positives, each text once; the queries, each once.
  const corpus = [...new Set([...extra, ...pairs.map((p) => p.positive)])];
  const corpusIndex = new Map(corpus.map((t, i) => [t, i]));
  const queries = [...rowsPerQuery.keys()];
  const queryIndex = new Map(queries.map((q, i) => [q, i]));
  const positives: number[][] = queries.map(() => []);
  for (const p of pairs) {
    const list = positives[queryIndex.get(p.query)!];
    const d = corpusIndex.get(p.positive)!;
    if (!list.includes(d)) list.push(d);
    if (turns.due) await turns.maybe();
  }

  const ownEncoder = !(o.model instanceof Encoder);
  const load = { device: o.device ?? 'auto', ...(o.threads !== undefined && { threads: o.threads }), ...(quantize !== undefined && { quantize }) };
  const encoder = o.model instanceof Encoder ? o.model : await Encoder.load(o.model ?? 'default', load);
  let reranker: CrossEncoder | undefined;
  try {
    const multi = encoder.multiVector;
    if (plaid && !multi) throw new ColtrastError('INVALID_ARGUMENT', `options.plaid searches token vectors: ${encoder.modelDir} is a single-vector model, which mining searches exactly`);
    const similarity = encoder.similarityFunction;
    if (!multi && similarity === 'manhattan') {
      throw new ColtrastError('INVALID_ARGUMENT', `${encoder.modelDir} scores by manhattan distance, which mining does not rank by; use a cosine, dot or euclidean model`);
    }
    // On unit vectors cosine and dot are the inner product; euclidean is sentence-transformers' negative distance.
    const score = similarity === 'euclidean' ? (c: number) => -Math.sqrt(Math.max(0, 2 - 2 * c)) : (c: number) => c;
    if (o.crossEncoder !== undefined) {
      reranker = o.crossEncoder instanceof CrossEncoder ? o.crossEncoder : await CrossEncoder.load(o.crossEncoder as string, load);
      if (reranker.numLabels !== 1) throw new ColtrastError('INVALID_ARGUMENT', `the cross-encoder must score relevance with one label; ${reranker.modelDir} has ${reranker.numLabels}`);
    }

    const embedOptions = (task: 'query' | 'document', prompt: unknown, promptName: unknown, stage: 'corpus' | 'queries') => ({
      task,
      batchSize,
      // An explicit prompt wins over a named one (sentence-transformers' precedence).
      ...(prompt !== undefined ? { prompt: prompt as string } : promptName !== undefined ? { promptName: promptName as string } : {}),
      onProgress: (done: number, total: number) => progress(stage, done, total),
      signal,
    });

    // Each query's window: the best `width` documents. No wider than the corpus: a numNegatives or rangeMax in the
    // millions made arrays of queries × rangeMax that ended the process for want of memory.
    const width = Math.min(rangeMax + maxPositives, corpus.length);
    const k = width;
    const candidates = new Int32Array(queries.length * width).fill(-1);
    const scores = new Float64Array(queries.length * width).fill(-Infinity);
    /**
     * A multi-vector model's windows: the token vectors as its pipeline gives them, every query scored against every
     * document by exact MaxSim (as Index ranks them, 'meanmaxsim' divided by the query's token count); the positives' scores.
     */
    const embedTokens = (texts: string[], ...how: Parameters<typeof embedOptions>) => abortable(how[3], encoder.embed(texts, { ...embedOptions(...how), output: 'tokens' }) as Promise<Matrix[]>);
    const multiVectorWindows = async (): Promise<number[][]> => {
      const corpusTokens = await embedTokens(corpus, 'document', o.corpusPrompt, o.corpusPromptName, 'corpus');
      const queryTokens = await embedTokens(queries, 'query', o.queryPrompt, o.queryPromptName, 'queries');
      const docs = Array.from(corpus.keys());
      const positiveScores: number[][] = positives.map(() => []);
      progress('search', 0, queries.length);
      for (let start = 0; start < queries.length; start += MULTI_VECTOR_QUERY_GROUP) {
        stopIfAborted('search');
        const end = Math.min(queries.length, start + MULTI_VECTOR_QUERY_GROUP);
        const rows = await exactMaxSim(encoder, queryTokens.slice(start, end), docs, (d) => corpusTokens[d].dims[0], (ds) => padTokens(ds.map((d) => corpusTokens[d]), encoder.tokenDimension));
        rows.forEach((row, i) => {
          const q = start + i;
          const order = topIndices(row, k);
          for (let j = 0; j < k; j++) {
            candidates[q * width + j] = order[j];
            scores[q * width + j] = row[order[j]];
          }
          positiveScores[q] = positives[q].map((d) => row[d]);
        });
        progress('search', end, queries.length);
      }
      return positiveScores;
    };

    /**
     * A multi-vector model's windows from a PLAID search of a residual Index of the corpus (positions = corpus
     * indices); the positives' scores, exact MaxSim over their decoded vectors as the search scores its candidates.
     */
    const plaidWindows = async (settings: PlaidMining): Promise<number[][]> => {
      const docs = corpus.map((text, i) => ({ id: String(i), text }));
      const index = await Index.build(encoder, docs, {
        tokenStorage: 'residual',
        residualBits: settings.residualBits,
        ...(settings.centroids !== undefined && { centroids: settings.centroids }),
        batchSize,
        onProgress: (done, total) => progress('corpus', done, total),
      });
      const queryTokens = await embedTokens(queries, 'query', o.queryPrompt, o.queryPromptName, 'queries');
      stopIfAborted('search');
      progress('search', 0, queries.length);
      const search = { nprobe: settings.nprobe ?? 1, fullScores: settings.fullScores ?? Math.max(256, 4 * k) };
      const hits = await index.searchQueryTokens(queryTokens, k, search, (done) => progress('search', done, queries.length));
      hits.forEach((list, q) =>
        list.forEach((h, j) => {
          candidates[q * width + j] = h.doc;
          scores[q * width + j] = h.score;
        }),
      );
      return index.scoreQueryTokens(queryTokens, positives);
    };

    /** A single-vector model's windows: exact search of the normalized vectors in the native store; the positives' scores. */
    const denseWindows = async (): Promise<number[][]> => {
      const embed = (texts: string[], ...how: Parameters<typeof embedOptions>) => abortable(how[3], encoder.embed(texts, { ...embedOptions(...how), normalize: true }) as Promise<Matrix>);
      const corpusVectors = await embed(corpus, 'document', o.corpusPrompt, o.corpusPromptName, 'corpus');
      const queryVectors = await embed(queries, 'query', o.queryPrompt, o.queryPromptName, 'queries');
      const dim = corpusVectors.dims[1];
      const store = newStore(dim, 'float32');
      store.add(corpusVectors.data);
      progress('search', 0, queries.length);
      for (let start = 0; start < queries.length; start += SEARCH_CHUNK) {
        stopIfAborted('search');
        const end = Math.min(queries.length, start + SEARCH_CHUNK);
        const r = await store.search(queryVectors.data.subarray(start * dim, end * dim), k);
        for (let q = start; q < end; q++) {
          for (let j = 0; j < r.k; j++) {
            const d = r.indices[(q - start) * r.k + j];
            if (d < 0) continue;
            candidates[q * width + j] = d;
            scores[q * width + j] = score(r.scores[(q - start) * r.k + j]);
          }
        }
        progress('search', end, queries.length);
      }
      const cosine = (q: number, d: number) => {
        let s = 0;
        for (let i = 0; i < dim; i++) s += queryVectors.data[q * dim + i] * corpusVectors.data[d * dim + i];
        return s;
      };
      // The positives' scores, per query in its positives' order.
      return positives.map((list, q) => list.map((d) => score(cosine(q, d))));
    };

    let positiveScores = plaid ? await plaidWindows(plaid) : multi ? await multiVectorWindows() : await denseWindows();

    if (reranker) {
      const slots: number[] = [];
      for (let s = 0; s < candidates.length; s++) if (candidates[s] >= 0) slots.push(s);
      const positiveSlots = positives.flatMap((list, q) => list.map((d) => [q, d] as const));
      const total = slots.length + positiveSlots.length;
      const pairText = (q: number, d: number): [string, string] => [queries[q], corpus[d]];
      const all = [...slots.map((s) => pairText(Math.floor(s / width), candidates[s])), ...positiveSlots.map(([q, d]) => pairText(q, d))];
      const rescored = new Float32Array(total);
      for (let start = 0; start < total; start += RESCORE_CHUNK) {
        const end = Math.min(total, start + RESCORE_CHUNK);
        stopIfAborted('rescore');
        const m = await abortable('rescore', reranker.predict(all.slice(start, end), { batchSize, signal }));
        rescored.set(m.data, start);
        progress('rescore', end, total);
      }
      slots.forEach((s, i) => (scores[s] = rescored[i]));
      let next = slots.length;
      positiveScores = positives.map((list) => list.map(() => rescored[next++]));
    }

    // Strike out: the query's own positives, then the filters; each counts what it struck that was still in.
    const skipped: MineResult['skipped'] = {};
    const strike = async (name: keyof MineResult['skipped'], out: (q: number, s: number) => boolean) => {
      let n = 0;
      for (let q = 0; q < queries.length; q++) {
        for (let j = 0; j < width; j++) {
          const s = scores[q * width + j];
          if (s !== -Infinity && out(q, s)) {
            scores[q * width + j] = -Infinity;
            n++;
          }
        }
        if (turns.due) await turns.maybe();
      }
      skipped[name] = n;
    };
    if (!includePositives) {
      for (let q = 0; q < queries.length; q++) {
        for (let j = 0; j < width; j++) if (positives[q].includes(candidates[q * width + j])) scores[q * width + j] = -Infinity;
        if (turns.due) await turns.maybe();
      }
    }
    // With several positives, the margin is taken from the lowest-scoring (hardest) one.
    const hardest = positiveScores.map((list) => list.reduce((a, b) => Math.min(a, b), Infinity));
    if (absoluteMargin !== undefined) await strike('absoluteMargin', (q, s) => s + absoluteMargin > hardest[q]);
    if (relativeMargin !== undefined) await strike('relativeMargin', (q, s) => s > hardest[q] - Math.abs(hardest[q]) * relativeMargin);
    if (maxScore !== undefined) await strike('maxScore', (_, s) => s > maxScore);
    if (minScore !== undefined) await strike('minScore', (_, s) => s < minScore);

    // Each query's negatives: its window ranked by score (struck ones last), past rangeMin, then sampled.
    const random = seededRandom(seed);
    const chosen: { doc: number; score: number }[][] = [];
    for (let q = 0; q < queries.length; q++) {
      if (turns.due) await turns.maybe();
      const order = Array.from({ length: width }, (_, j) => j).sort((a, b) => cmp(scores[q * width + b], scores[q * width + a]) || a - b);
      let window = order.slice(rangeMin, rangeMax).map((j) => ({ doc: candidates[q * width + j], score: scores[q * width + j] }));
      if (sampling === 'top') {
        window = window.slice(0, numNegatives);
      } else {
        // Sample among the candidates left in (or the first numNegatives of the window, when fewer are).
        const options = Math.min(window.length, Math.max(numNegatives, window.filter((c) => c.score !== -Infinity).length));
        const picks = Array.from({ length: options }, (_, i) => i);
        for (let i = 0; i < Math.min(numNegatives, options); i++) {
          const j = i + Math.floor(random.next() * (options - i));
          [picks[i], picks[j]] = [picks[j], picks[i]];
        }
        window = picks.slice(0, numNegatives).map((i) => window[i]).sort((a, b) => cmp(b.score, a.score));
      }
      chosen.push(window);
    }

    const rows: MinedRow[] = [];
    const positivesOut: number[] = [];
    const negativesOut: number[] = [];
    const differences: number[] = [];
    let possible = 0;
    const keep = (c: { score: number }) => c.score !== -Infinity;
    const texts = (list: { doc: number }[]) => list.map((c) => corpus[c.doc]);
    const scoresOf = (list: { score: number }[]) => list.map((c) => c.score);
    for (let q = 0; q < queries.length; q++) {
      if (turns.due) await turns.maybe();
      const query = queries[q];
      const found = chosen[q].filter(keep);
      positiveScores[q].forEach((p) => positivesOut.push(p));
      if (format === 'labeled-pair') {
        positives[q].forEach((d, i) => rows.push({ query, document: corpus[d], ...(outputScores ? { score: positiveScores[q][i] } : { label: 1 }) }));
        found.forEach((c) => rows.push({ query, document: corpus[c.doc], ...(outputScores ? { score: c.score } : { label: 0 }) }));
      }
      positives[q].forEach((d, i) => {
        const p = positiveScores[q][i];
        const positive = corpus[d];
        if (format === 'triplet') {
          found.forEach((c) => rows.push({ query, positive, negative: corpus[c.doc], ...(outputScores && { scores: [p, c.score] as [number, number] }) }));
          possible += numNegatives;
        } else if (format === 'n-tuple') {
          possible += 1;
          if (found.length < numNegatives) return;
          rows.push({ query, positive, negatives: texts(found), ...(outputScores && { scores: [p, ...scoresOf(found)] }) });
        } else if (format === 'labeled-list') {
          possible += 1;
          if (found.length === 0) return;
          rows.push({
            query,
            documents: [positive, ...texts(found)],
            ...(outputScores ? { scores: [p, ...scoresOf(found)] } : { labels: [1, ...found.map(() => 0)] }),
          });
        }
        if (format !== 'n-tuple' || found.length === numNegatives) {
          for (const c of found) {
            negativesOut.push(c.score);
            differences.push(p - c.score);
          }
        }
      });
    }
    // A labeled pair for every input row and numNegatives for every query (sentence-transformers' count).
    if (format === 'labeled-pair') possible = queries.length * numNegatives + pairs.length;

    let output: string | undefined;
    if (o.output !== undefined) {
      output = path.resolve(o.output);
      await writeJsonLinesAtomic(output, rows);
    }
    const summaries: ScoreSummary[] = [];
    for (const values of [positivesOut, negativesOut, differences]) {
      await turns.maybe();
      summaries.push(summarize(values));
    }
    return {
      rows,
      format,
      queries: queries.length,
      corpus: corpus.length,
      rangeMax,
      positive: summaries[0],
      negative: summaries[1],
      difference: summaries[2],
      skipped,
      missing: Math.max(0, possible - rows.length),
      possible,
      ...(output !== undefined && { output }),
    };
  } finally {
    if (ownEncoder) encoder.dispose();
    if (reranker && !(o.crossEncoder instanceof CrossEncoder)) reranker.dispose();
  }
}

/** MineOptions.plaid (`name` in errors) checked: undefined when off, its settings when on (true: the defaults). */
export function plaidSettings(name: string, value: unknown): (Required<Pick<PlaidMining, 'residualBits'>> & PlaidMining) | undefined {
  if (value === undefined || value === false) return undefined;
  if (value !== true && (value === null || typeof value !== 'object')) throw invalid(name, 'true, false or { residualBits, centroids, nprobe, fullScores }', value);
  const o = value === true ? {} : checkOptions(name, value as PlaidMining, PLAID_KEYS);
  // 4 bits by default, not Index's 2: a query's few negatives come from candidates whose scores sit close together, and
  // 2 bits' coarser scores choose other ones more often (BENCHMARKS.md, "Mining over a PLAID index").
  const residualBits = o.residualBits ?? 4;
  if (!RESIDUAL_BITS.includes(residualBits)) throw invalid(`${name}.residualBits`, '1, 2 or 4', o.residualBits);
  return {
    residualBits,
    ...(o.centroids !== undefined && { centroids: positiveInteger(`${name}.centroids`, o.centroids) }),
    ...(o.nprobe !== undefined && { nprobe: positiveInteger(`${name}.nprobe`, o.nprobe) }),
    ...(o.fullScores !== undefined && { fullScores: positiveInteger(`${name}.fullScores`, o.fullScores) }),
  };
}

/** What chooses a query's negatives (MiningSettings), as train({ mineNegatives }) takes them too. */
export const MINING_SETTING_KEYS = ['numNegatives', 'rangeMin', 'rangeMax', 'maxScore', 'minScore', 'absoluteMargin', 'relativeMargin', 'samplingStrategy', 'seed'] as const;
export type MiningSettings = Pick<MineOptions, (typeof MINING_SETTING_KEYS)[number]>;

/** Checks the settings that choose the negatives; `prefix` names them in errors ('options', 'options.mineNegatives'). */
export function miningSettings(prefix: string, o: MiningSettings) {
  const count = (name: string, value: unknown, fallback: number, min: number) =>
    numberValue(`${prefix}.${name}`, value ?? fallback, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
  const maybe = (name: string, value: unknown) => (value === undefined ? undefined : numberValue(`${prefix}.${name}`, value, () => true, 'a finite number'));
  const settings = {
    numNegatives: count('numNegatives', o.numNegatives, 3, 1),
    rangeMin: count('rangeMin', o.rangeMin, 0, 0),
    rangeMaxOption: o.rangeMax === undefined ? undefined : count('rangeMax', o.rangeMax, 0, 1),
    maxScore: maybe('maxScore', o.maxScore),
    minScore: maybe('minScore', o.minScore),
    absoluteMargin: maybe('absoluteMargin', o.absoluteMargin),
    relativeMargin: maybe('relativeMargin', o.relativeMargin),
    sampling: oneOf(`${prefix}.samplingStrategy`, o.samplingStrategy ?? 'top', ['top', 'random'] as const),
    seed: count('seed', o.seed, 42, 0),
  };
  const { rangeMin, rangeMaxOption } = settings;
  if (rangeMaxOption !== undefined && rangeMin >= rangeMaxOption) {
    throw new ColtrastError('INVALID_ARGUMENT', `${prefix}.rangeMin (${rangeMin}) must be below ${prefix}.rangeMax (${rangeMaxOption})`);
  }
  return settings;
}

/** train({ mineNegatives }): the settings, more candidate documents beside the positives, and a multi-vector model's PLAID search. */
export type MineNegativesOptions = MiningSettings & { corpus?: MineOptions['corpus']; plaid?: MineOptions['plaid'] };

/**
 * The examples, those without negatives and teacher scores given hard negatives mined by `encoder` among the
 * examples' positives and `settings.corpus` (n-tuples: an example left without a full set keeps none).
 */
export async function addMinedNegatives(examples: TrainExample[], encoder: Encoder, settings: MineNegativesOptions, progressBar: boolean, signal?: AbortSignal): Promise<TrainExample[]> {
  const open = (e: TrainExample) => !e.negatives?.length && !e.scores;
  const pairs = examples.filter(open).map((e) => ({ query: e.query, positive: e.positive }));
  if (pairs.length === 0) return examples;
  const bars = new Map<string, ProgressBar>();
  const r = await mineHardNegatives({
    ...settings,
    data: pairs,
    model: encoder,
    outputFormat: 'n-tuple',
    signal,
    ...(progressBar && {
      onProgress: (p: MiningProgress) => {
        if (!bars.has(p.stage)) bars.set(p.stage, new ProgressBar(`mining: ${p.stage}`, p.stage === 'search' ? 'queries' : 'texts'));
        bars.get(p.stage)!.update(p.done, p.total);
      },
    }),
  });
  const mined = new Map(r.rows.map((x) => [`${x.query}\n${(x as { positive: string }).positive}`, (x as { negatives: string[] }).negatives]));
  return examples.map((e) => {
    const negatives = open(e) ? mined.get(`${e.query}\n${e.positive}`) : undefined;
    return negatives ? { ...e, negatives } : e;
  });
}

/** Descending order with -Infinity last (a plain subtraction gives NaN for two of them). */
function cmp(a: number, b: number): number {
  return a === b ? 0 : a < b ? -1 : 1;
}

/**
 * Count, mean, median (the lower middle value, as torch.median), standard deviation (n − 1), min, quartiles
 * (linear interpolation, as torch.quantile) and max; NaN where there is nothing to summarize.
 */
export function summarize(values: readonly number[]): ScoreSummary {
  const n = values.length;
  if (n === 0) return { count: 0, mean: NaN, median: NaN, std: NaN, min: NaN, p25: NaN, p75: NaN, max: NaN };
  // A typed array's own numeric sort: a comparator's, over the millions of scores of a large run, held the event loop for seconds.
  const sorted = Float64Array.from(values).sort();
  const mean = values.reduce((s, x) => s + x, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : NaN;
  const quantile = (p: number) => {
    const at = p * (n - 1);
    const lo = Math.floor(at);
    return lo + 1 < n ? sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (at - lo) : sorted[lo];
  };
  return { count: n, mean, median: sorted[Math.floor((n - 1) / 2)], std, min: sorted[0], p25: quantile(0.25), p75: quantile(0.75), max: sorted[n - 1] };
}

/** The statistics as a text table (sentence-transformers prints the same after mining). */
export function miningReport(r: MineResult): string {
  if (typeof r?.positive?.count !== 'number' || typeof r.negative?.count !== 'number' || typeof r.difference !== 'object' || typeof r.skipped !== 'object') {
    throw invalid('result', 'what mineHardNegatives() returned', r);
  }
  const f = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(4));
  const line = (name: string, a: string, b: string, c: string) => `${name.padEnd(7)}${a.padStart(14)}${b.padStart(14)}${c.padStart(14)}`;
  const lines = [line('Metric', 'Positive', 'Negative', 'Difference'), line('Count', r.positive.count.toLocaleString('en'), r.negative.count.toLocaleString('en'), '')];
  for (const [name, key] of [['Mean', 'mean'], ['Median', 'median'], ['Std', 'std'], ['Min', 'min'], ['25%', 'p25'], ['75%', 'p75'], ['Max', 'max']] as const) {
    lines.push(line(name, f(r.positive[key]), f(r.negative[key]), f(r.difference[key])));
  }
  for (const [name, n] of Object.entries(r.skipped)) lines.push(`struck out ${n.toLocaleString('en')} candidates by ${name}`);
  if (r.missing > 0) {
    lines.push(
      `could not fill ${r.missing.toLocaleString('en')} of ${r.possible.toLocaleString('en')} ${r.format === 'triplet' || r.format === 'labeled-pair' ? 'rows' : 'tuples'} (${((100 * r.missing) / r.possible).toFixed(2)}%): widen rangeMax, or loosen rangeMin, the margins or maxScore`,
    );
  }
  return lines.join('\n');
}
