/**
 * `evaluate()`: retrieval quality of a model (dense), of BM25, or of both fused (hybrid, reciprocal-rank
 * fusion) on a BEIR-format data set, with the metrics of ir-metrics.ts at several cut-offs.
 */
import fs from 'node:fs';
import { coltrastEvalData, loadBeir, docText, type BeirData } from './beir';
import { readTrainingData } from './train-data';
import { Bm25Index, bm25Settings, type Bm25Options } from './bm25';
import { CrossEncoder, rerankCandidates } from './cross-encoder';
import { Encoder, type Device, type Quantize } from './encoder';
import { isSparseEncoderFolder } from './model-dir';
import { resolveModelDir } from './hub';
import { SparseEncoder } from './sparse-encoder';
import { quantizeOption } from './native-model';
import { ColtrastError } from './errors';
import { checkQrels, meanMetricsInTurns, type MetricTable, type Run } from './ir-metrics';
import { ProgressBar } from './progress';
import { FUSIONS, Index, fuseRankings, type Fusion, type Storage, type TokenStorage } from './search-index';
import { arrayInTurns } from './turns';
import { checkOptions, invalid, numberValue, oneOf, positiveInteger } from './validate';

export type EvalMode = 'dense' | 'bm25' | 'hybrid' | 'late_interaction' | 'sparse';

export interface EvaluateOptions {
  /**
   * A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; gzipped files too), a ColTrast project
   * file (see coltrastEvalData in beir.ts for its judgements) or loaded data.
   */
  data: string | BeirData;
  /**
   * A model folder, Hugging Face id or loaded Encoder (needed for 'dense', 'hybrid' and 'late_interaction'), or a
   * sparse encoder's (a SparseEncoder, or the folder of one: mode 'sparse').
   */
  model?: string | Encoder | SparseEncoder;
  /**
   * A second model for mode 'hybrid' (its default with one): a sparse (SPLADE) encoder, or the folder of one, whose
   * ranking fuses with the dense `model`'s in place of BM25's, as an Index with BuildOptions.sparseEncoder searches.
   */
  sparseModel?: string | SparseEncoder;
  /**
   * Evaluate the model's vectors cut to this width (EncoderLoadOptions.truncateDim: a Matryoshka model's
   * smaller vectors). For a loaded Encoder, load it with the truncateDim instead.
   */
  truncateDim?: number;
  /**
   * Evaluate the model's first `layers` layers alone (EncoderLoadOptions.layers: a model trained with adaptive layers,
   * cut). For a loaded Encoder, load it with the layers instead.
   */
  layers?: number;
  /**
   * Evaluate the model run in int8 on the CPU (EncoderLoadOptions.quantize): what the faster embedding costs in quality.
   * For a loaded Encoder, load it with the quantize instead.
   */
  quantize?: Quantize;
  /**
   * How the dense index keeps the corpus's vectors (Index's BuildOptions.storage; default float32): measure what
   * int8 or binary storage costs in quality. `rescoreMultiplier`: a binary index's candidates per hit (default 4).
   */
  storage?: Storage;
  rescoreMultiplier?: number;
  /**
   * How the index keeps token vectors (late_interaction, or a multi-vector model; BuildOptions.tokenStorage and
   * residualBits), and a residual multi-vector index's PLAID search (SearchOptions.nprobe and fullScores): measure
   * what the compression and the approximate search cost in quality.
   */
  tokenStorage?: TokenStorage;
  residualBits?: number;
  /** Token pooling of the documents' token vectors (BuildOptions.poolFactor). */
  poolFactor?: number;
  nprobe?: number;
  fullScores?: number;
  /** qrels split (default 'test'). */
  split?: string;
  /** Cut-offs (default [1, 3, 5, 10, 100]). */
  k?: number[];
  /**
   * 'dense' (default when a model is given), 'bm25' (default without one), 'hybrid' (RRF of both),
   * 'late_interaction' (the dense top `candidates` re-ranked by MaxSim over token vectors, ColBERT-style), or
   * 'sparse' (a SparseEncoder's vectors searched exactly through an Index's inverted index; the default for a SparseEncoder, loaded
   * or a folder of one). 'hybrid' with a SparseEncoder fuses its ranking with BM25's.
   */
  mode?: EvalMode;
  /** Hybrid: weight of the dense ranking in the fusion, the rest goes to BM25's (or `sparseModel`'s) (default 0.5). */
  hybridWeight?: number;
  /** late_interaction and reranker: first-stage candidates re-ranked per query (default 100). */
  candidates?: number;
  /**
   * A one-label cross-encoder (folder, Hugging Face id or loaded CrossEncoder) that re-ranks each query's top
   * `candidates` from the mode's ranking, reading query and document together. The lists then hold those
   * candidates only, so cut-offs above `candidates` see no more.
   */
  reranker?: string | CrossEncoder;
  /** Reciprocal-rank fusion constant (default 60). */
  rrfK?: number;
  /** Hybrid: 'rrf' (default) or 'relative' (min-max scaled scores, weighted; SearchOptions.fusion). */
  fusion?: Fusion;
  bm25?: Bm25Options;
  batchSize?: number;
  device?: Device;
  /** Draw a progress bar while embedding (default false; the CLI turns it on). */
  progressBar?: boolean;
}

export interface EvaluateResult {
  mode: EvalMode;
  /** The cross-encoder that re-ranked the mode's candidates (its folder), when one did. */
  reranker?: string;
  /** The second, sparse model whose ranking hybrid fused with the dense model's (its folder), when one did. */
  sparseModel?: string;
  metrics: MetricTable;
  /** Queries evaluated (those with at least one relevant document). */
  queries: number;
  documents: number;
  /**
   * Relevant judgements of the data that name a document its corpus lacks (BEIR's ArguAna has some), counted as
   * relevant and never retrieved (BeirData.missingDocuments); absent when there are none.
   */
  missingDocuments?: { judgements: number; examples: string[] };
  /**
   * Judged queries the data has no text for (BeirData.missingQueries; BEIR's NFCorpus has one): left out of the
   * metrics, as trec_eval leaves out judged queries its run lacks; absent when there are none.
   */
  missingQueries?: { queries: number; judgements: number; examples: string[] };
  seconds: number;
}

/** Options of the dense index (not for mode 'bm25'), of fusion (mode 'hybrid' only), of BM25 (modes 'bm25' and 'hybrid'). */
const DENSE_KEYS = ['model', 'truncateDim', 'layers', 'quantize', 'storage', 'rescoreMultiplier', 'tokenStorage', 'residualBits', 'poolFactor', 'nprobe', 'fullScores'] as const;
const HYBRID_KEYS = ['hybridWeight', 'fusion', 'rrfK'] as const;

const KEYS = ['data', 'model', 'sparseModel', 'truncateDim', 'layers', 'quantize', 'storage', 'rescoreMultiplier', 'tokenStorage', 'residualBits', 'poolFactor', 'nprobe', 'fullScores', 'split', 'k', 'mode', 'hybridWeight', 'candidates', 'reranker', 'rrfK', 'fusion', 'bm25', 'batchSize', 'device', 'progressBar'] as const;

async function loadEvalData(source: string, split: string): Promise<BeirData> {
  if (fs.existsSync(source) && fs.statSync(source).isFile()) {
    const data = await readTrainingData(source);
    if (!('projects' in data)) throw new ColtrastError('INVALID_ARGUMENT', `${source}: evaluation reads a BEIR folder or a ColTrast project file`);
    return coltrastEvalData(data.projects);
  }
  return loadBeir(source, split);
}

/**
 * `data` without the judgements of queries it has no text for (loaded data may judge such queries; a folder's are left
 * out as it is read), counted in missingQueries: scored, each would be a query that retrieved nothing, pulling every
 * mean down (the metrics were halved where half the judged queries lacked a text).
 */
function withoutQueriesLacking(data: BeirData): BeirData {
  const lacking = [...data.qrels.keys()].filter((q) => !data.queries.has(q));
  if (lacking.length === 0) return data;
  const judgements = lacking.reduce((sum, q) => sum + data.qrels.get(q)!.size, data.missingQueries?.judgements ?? 0);
  return {
    ...data,
    qrels: new Map([...data.qrels].filter(([q]) => data.queries.has(q))),
    missingQueries: { queries: lacking.length + (data.missingQueries?.queries ?? 0), judgements, examples: [...(data.missingQueries?.examples ?? []), ...lacking].slice(0, 3) },
  };
}

/**
 * Each query's `k` best hits, and past them those that tie the k-th. The Index breaks ties by position, the metrics
 * (rank()) by id: a list cut inside a tie kept the documents stored first, so documents of one text (which score
 * alike) could count at a cut-off or not depending on the largest cut-off asked. As Index.search itself: one hit more
 * is asked for, and twice as many while it ties the k-th, for the queries whose lists it does.
 */
async function pastTies(search: (texts: string[], k: number) => Promise<{ id: string; score: number }[][]>, texts: string[], k: number, documents: number) {
  const out: { id: string; score: number }[][] = new Array(texts.length);
  let pending = texts.map((_, i) => i);
  for (let wanted = k + 1; pending.length > 0; wanted *= 2) {
    const lists = await search(pending.map((i) => texts[i]), wanted);
    const tied: number[] = [];
    lists.forEach((list, j) => {
      if (list.length === wanted && wanted < documents && list[wanted - 1].score === list[k - 1].score) tied.push(pending[j]);
      else out[pending[j]] = list.filter((h, at) => at < k || h.score === list[k - 1].score);
    });
    pending = tied;
  }
  return out;
}

export async function evaluate(options: EvaluateOptions): Promise<EvaluateResult> {
  const o = checkOptions('options', options, KEYS);
  const ks = o.k ?? [1, 3, 5, 10, 100];
  if (!Array.isArray(ks) || ks.length === 0) throw invalid('options.k', 'a non-empty array of positive integers', ks);
  ks.forEach((k, i) => positiveInteger(`options.k[${i}]`, k));
  if (o.model !== undefined && !(o.model instanceof Encoder) && !(o.model instanceof SparseEncoder) && (typeof o.model !== 'string' || o.model === '')) {
    throw invalid('options.model', 'a model folder, Hugging Face id, Encoder or SparseEncoder', o.model);
  }
  // A model given by name without a mode, or for hybrid: its folder (a hub id's snapshot, downloaded if need be) says
  // which kind it is.
  const sparseModel = o.model instanceof SparseEncoder || (typeof o.model === 'string' && (o.mode === undefined || o.mode === 'hybrid') && isSparseEncoderFolder(await resolveModelDir(o.model)));
  const mode = oneOf('options.mode', o.mode ?? (sparseModel ? 'sparse' : o.sparseModel !== undefined ? 'hybrid' : o.model ? 'dense' : 'bm25'), ['dense', 'bm25', 'hybrid', 'late_interaction', 'sparse'] as const);
  if (o.sparseModel !== undefined) {
    if (!(o.sparseModel instanceof SparseEncoder) && (typeof o.sparseModel !== 'string' || o.sparseModel === '')) throw invalid('options.sparseModel', 'a SparseEncoder, or the folder or Hugging Face id of one', o.sparseModel);
    if (sparseModel) throw invalid('options.sparseModel', 'absent with a sparse encoder as options.model (hybrid fuses it with BM25); give an embedding model as options.model', o.sparseModel);
    if (mode !== 'hybrid') throw invalid('options.sparseModel', `absent with mode '${mode}' (its ranking fuses with the dense model's in mode 'hybrid')`, o.sparseModel);
    if (o.bm25 !== undefined) throw invalid('options.bm25', "absent with options.sparseModel (whose ranking takes BM25's place)", o.bm25);
  }
  if (mode === 'sparse' && o.model instanceof Encoder) throw invalid('options.model', "a SparseEncoder or the folder of one with mode 'sparse'", o.model);
  if (mode !== 'sparse' && mode !== 'hybrid' && o.model instanceof SparseEncoder) throw invalid('options.mode', "'sparse' (or absent), or 'hybrid' (with BM25), for a SparseEncoder", mode);
  // The model's stage: a sparse encoder's vectors (mode 'sparse', or 'hybrid' with one), else the dense index's.
  const sparseStage = mode === 'sparse' || (mode === 'hybrid' && sparseModel);
  // An option that the mode would ignore is refused: a run that says "int8" must have measured int8.
  const refuse = (key: keyof EvaluateOptions, why: string) => {
    if (o[key] !== undefined) throw invalid(`options.${key}`, `absent with mode '${mode}' (${why})`, o[key]);
  };
  if (mode === 'bm25') for (const key of DENSE_KEYS) refuse(key, "BM25 uses no model; it is for modes 'dense', 'hybrid' and 'late_interaction'");
  if (sparseStage) for (const key of DENSE_KEYS) if (key !== 'model' && key !== 'quantize') refuse(key, "it is for the dense index; a sparse encoder's vectors are searched exactly");
  if (mode !== 'hybrid') for (const key of HYBRID_KEYS) refuse(key, "it is for mode 'hybrid'");
  if (mode !== 'bm25' && mode !== 'hybrid') refuse('bm25', "it is for modes 'bm25' and 'hybrid'");
  if (mode !== 'late_interaction' && o.reranker === undefined) refuse('candidates', "it is for mode 'late_interaction' or a reranker: the candidates re-ranked");
  const candidates = positiveInteger('options.candidates', o.candidates ?? 100);
  if (mode !== 'bm25' && !o.model) throw new ColtrastError('INVALID_ARGUMENT', `mode '${mode}' needs options.model`);
  const truncateDim = o.truncateDim === undefined ? undefined : positiveInteger('options.truncateDim', o.truncateDim);
  if (truncateDim !== undefined && typeof o.model !== 'string') {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.truncateDim applies to a model given by name; load an Encoder with { truncateDim } to evaluate it cut');
  }
  const layers = o.layers === undefined ? undefined : positiveInteger('options.layers', o.layers);
  if (layers !== undefined && typeof o.model !== 'string') {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.layers applies to a model given by name; load an Encoder with { layers } to evaluate it cut');
  }
  const quantize = quantizeOption(o.quantize);
  if (quantize !== undefined && typeof o.model !== 'string') {
    throw new ColtrastError('INVALID_ARGUMENT', "options.quantize applies to a model given by name; load an Encoder with { quantize: 'int8' } to evaluate it so");
  }
  const weight = numberValue('options.hybridWeight', o.hybridWeight ?? 0.5, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  const rrfK = positiveInteger('options.rrfK', o.rrfK ?? 60);
  const fusion = oneOf('options.fusion', o.fusion ?? 'rrf', FUSIONS);
  const bm25 = bm25Settings('options.bm25', o.bm25);
  if (o.reranker !== undefined && (typeof o.reranker !== 'string' || o.reranker === '') && !(o.reranker instanceof CrossEncoder)) {
    throw invalid('options.reranker', 'a cross-encoder folder, Hugging Face id or CrossEncoder', o.reranker);
  }
  const loaded = o.data as Partial<BeirData> | undefined;
  if (typeof o.data !== 'string' && !(loaded?.qrels instanceof Map && loaded.queries instanceof Map && Array.isArray(loaded.corpus))) {
    throw invalid('options.data', 'a BEIR folder, a ColTrast project file or loaded data ({ corpus, queries, qrels }, as loadBeir returns)', o.data);
  }
  if (typeof o.data !== 'string') {
    // Loaded data is checked as loadBeir checks its files (and evaluateRun its qrels): an infinite grade made nDCG NaN,
    // and a repeated document id failed in the BM25 index or the Index, under names that are not the caller's.
    checkQrels('options.data.qrels', o.data.qrels);
    const first = new Map<string, number>();
    o.data.corpus.forEach((d, i) => {
      if (typeof d?.id !== 'string') return; // the index refuses it
      const earlier = first.get(d.id);
      if (earlier !== undefined) throw new ColtrastError('INVALID_ARGUMENT', `options.data.corpus[${i}].id "${d.id}" repeats options.data.corpus[${earlier}]'s (ids must be unique)`);
      first.set(d.id, i);
    });
  }
  const started = Date.now();
  const data = withoutQueriesLacking(typeof o.data === 'string' ? await loadEvalData(o.data, o.split ?? 'test') : o.data);
  // The metrics are means over the queries with a relevant document: with none, each was a 0 over 0 queries.
  if (![...data.qrels.values()].some((judged) => [...judged.values()].some((grade) => grade > 0))) {
    const source = typeof o.data === 'string' ? o.data : 'options.data';
    if (data.qrels.size === 0) throw new ColtrastError('INVALID_ARGUMENT', `${source}: every judged query lacks a text (${data.missingQueries?.examples.join(', ')}): add the queries' texts`);
    throw new ColtrastError('INVALID_ARGUMENT', `${source}: no query has a relevant document (a qrels score above 0), so there is nothing to measure; check the qrels' scores`);
  }
  const evaluated = [...data.qrels.keys()].filter((q) => data.queries.has(q));
  const queryTexts = evaluated.map((q) => data.queries.get(q)!);
  // Fusion needs deeper lists than the largest cut-off.
  const depth = Math.max(...ks, mode === 'hybrid' ? 100 : 0, o.reranker !== undefined ? candidates : 0);

  let lexical: { id: string; score: number }[][] = [];
  let sparseBy: string | undefined;
  if (o.sparseModel !== undefined) {
    // The second model's ranking, searched as mode 'sparse' searches a SparseEncoder (its own Index), in BM25's place.
    const owned = typeof o.sparseModel === 'string';
    const encoder = owned ? await SparseEncoder.load(o.sparseModel as string, { device: o.device ?? 'auto', ...(quantize && { quantize }) }) : (o.sparseModel as SparseEncoder);
    try {
      const bar = o.progressBar ? new ProgressBar('index corpus (sparse model)', 'docs') : undefined;
      const index = await Index.build(encoder, data.corpus.map((d) => ({ id: d.id, text: docText(d) })), { batchSize: o.batchSize ?? 32, onProgress: (d, n) => bar?.update(d, n) });
      const hits = await pastTies((texts, k) => index.search(texts, { k }), queryTexts, depth, data.corpus.length);
      lexical = hits.map((list) => list.map((h) => ({ id: h.id, score: h.score })));
      sparseBy = encoder.modelDir;
    } finally {
      if (owned) encoder.dispose();
    }
  } else if (mode === 'bm25' || mode === 'hybrid') {
    const index = new Bm25Index(bm25);
    await index.addAll(data.corpus.map((doc) => ({ id: doc.id, text: docText(doc) })));
    lexical = await index.searchAll(queryTexts, depth);
  }
  let dense: { id: string; score: number }[][] = [];
  if (mode !== 'bm25') {
    const load = { device: o.device ?? 'auto', ...(quantize && { quantize }) } as const;
    const owned = typeof o.model === 'string';
    const encoder = !owned ? (o.model as Encoder | SparseEncoder) : sparseStage ? await SparseEncoder.load(o.model as string, load) : await Encoder.load(o.model as string, { ...load, truncateDim, layers });
    try {
      // The Index's exact search (native, blocked; a sparse encoder's vectors through its inverted index); with late
      // interaction it keeps token vectors too.
      const bar = o.progressBar ? new ProgressBar('index corpus', 'docs') : undefined;
      const index = await Index.build(
        encoder,
        data.corpus.map((d) => ({ id: d.id, text: docText(d) })),
        {
          lateInteraction: mode === 'late_interaction',
          batchSize: o.batchSize ?? 32,
          onProgress: (d, n) => bar?.update(d, n),
          storage: o.storage,
          tokenStorage: o.tokenStorage,
          residualBits: o.residualBits,
          poolFactor: o.poolFactor,
        },
      );
      const late = mode === 'late_interaction';
      const search = (texts: string[], k: number) =>
        index.search(texts, {
          k, rerank: late ? 'maxsim' : 'none', candidates: Math.max(depth, candidates), rescoreMultiplier: o.rescoreMultiplier,
          nprobe: o.nprobe,
          fullScores: o.fullScores,
        });
      // Late interaction's lists hold all its candidates (its cut is the first stage's); binary storage's more hits
      // would rescore more candidates, changing what is measured.
      const hits = late || o.storage === 'binary' ? await search(queryTexts, Math.max(depth, candidates)) : await pastTies(search, queryTexts, depth, data.corpus.length);
      dense = hits.map((list) => list.map((h) => ({ id: h.id, score: h.score })));
    } finally {
      if (owned) encoder.dispose();
    }
  }
  // Fused a query at a time, letting the event loop run (thousands of queries' fusion take a while).
  let ranked = await arrayInTurns(
    (function* () {
      for (let i = 0; i < evaluated.length; i++) {
        yield mode === 'bm25' ? lexical[i] : mode === 'hybrid' ? fuseRankings(dense[i], lexical[i], (h) => h.id, { fusion, weight, rrfK }, (a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(({ key, score }) => ({ id: key, score })) : dense[i];
      }
    })(),
  );
  let rerankedBy: string | undefined;
  if (o.reranker !== undefined) {
    const reranker = typeof o.reranker === 'string' ? await CrossEncoder.load(o.reranker, { device: o.device ?? 'auto' }) : o.reranker;
    try {
      const texts = new Map(data.corpus.map((d) => [d.id, docText(d)]));
      const bar = o.progressBar ? new ProgressBar('rerank', 'pairs') : undefined;
      const reranked = await rerankCandidates(reranker, queryTexts, ranked.map((hits) => hits.slice(0, candidates)), (h) => texts.get(h.id)!, {
        batchSize: o.batchSize ?? 32,
        onProgress: (d, n) => bar?.update(d, n),
      });
      ranked = reranked.map((hits) => hits.map(({ item, score }) => ({ id: item.id, score })));
      rerankedBy = reranker.modelDir;
    } finally {
      if (typeof o.reranker === 'string') reranker.dispose();
    }
  }
  const run: Run = new Map(evaluated.map((q, i) => [q, ranked[i]]));
  const { metrics, queries } = await meanMetricsInTurns(run, data.qrels, ks);
  return {
    mode,
    ...(rerankedBy && { reranker: rerankedBy }),
    ...(sparseBy && { sparseModel: sparseBy }),
    metrics,
    queries,
    documents: data.corpus.length,
    ...(data.missingDocuments && { missingDocuments: data.missingDocuments }),
    ...(data.missingQueries && { missingQueries: data.missingQueries }),
    seconds: (Date.now() - started) / 1000,
  };
}
