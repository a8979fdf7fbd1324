/**
 * `Index`: documents embedded by an Encoder, searchable by exact inner product (dense), BM25 or both
 * (reciprocal-rank fusion), with optional ColBERT-style re-ranking of the dense candidates by MaxSim over
 * stored token vectors. Documents are embedded as the model's documents and queries as its queries
 * (`embed({ task })`: its prompts, and a multi-vector model's query expansion and skiplist). A multi-vector
 * (ColBERT-style) model has no pooled vector: its index holds token vectors only, and its first stage is
 * an exact MaxSim over every document, or with residual token storage PLAID's approximate search (ColBERTv2's
 * compression: each token vector a centroid's number and a quantized residual; native/search/residual_store.cc).
 * A sparse (SPLADE) encoder's index holds its sparse vectors in an inverted index (lib/sparse-index.ts), searched
 * exactly by the model's similarity (dot or cosine) in the place of the dense stage. An Encoder's index may keep a
 * SparseEncoder's vectors beside its own (BuildOptions.sparseEncoder): mode 'sparse' searches them, and 'hybrid' fuses
 * the two models' rankings (in BM25's place).
 *
 * On disk an index is a folder, written through a staging folder and renamed into place:
 *   index.json          format version, model fingerprint (sha256 of the files that make the vectors: weights, modules,
 *                       tokenizer, prompts; fingerprintVersion 2; an index without it has version 1's, of config.json
 *                       and the weights only; for a model changed in memory, of that state, with changedInMemory
 *                       saying how it was changed),
 *                       dimension, storage dtype, lateInteraction, multiVector, document count, tokenStorage
 *                       and residualBits, tokenPooling { poolFactor, protectedTokens } (documents' token vectors
 *                       pooled: the counts and rows below are the pooled ones), ids (sha256 of docs.jsonl's ids in
 *                       order: lines moved whole are refused; absent in indexes saved before it, whose order is not
 *                       checked), and with token vectors tokenCounts (sha256 of docs.jsonl's token counts in order;
 *                       absent in indexes saved before it, whose counts are checked only by their sum); read and
 *                       checked by lib/index-manifest.ts
 *   docs.jsonl          one {id, text, metadata?, tokens?} per row, in vector order (tokens: the row's
 *                       token-vector count when lateInteraction)
 *   vectors.safetensors "vectors" [rows, dim] (float32, float16 or int8; binary: [rows, ceil(dim / 8)] uint8 sign
 *                       bits; not for a multi-vector model), and for int8 "ranges" [2, dim] (each dimension's
 *                       bucket start and step)
 *   sparse.bin          (a sparse encoder's index, which has no vectors.safetensors, or an index with a second,
 *                       sparse model: index.json's sparseEncoder, its fingerprint, width and folder) its documents'
 *                       sparse vectors: a SparseIndex file, its ids those of docs.jsonl in the same order
 *   tokens.safetensors  (lateInteraction only; rows in document order) float16: "vectors" [all tokens, dim];
 *                       residual: "centroids" [K, dim], "cutoffs" and "weights" (the residual buckets), "codes"
 *                       [all tokens] int32 and "residuals" [all tokens, ceil(dim × bits / 8)] uint8
 * Loading checks every file against index.json (the dtype and width of each stored tensor from its safetensors header,
 * before the native loader, which would convert floats of another dtype silently) and refuses another model than the
 * one that built it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Bm25Index } from './bm25';
import { topK } from './top-k';
import { CrossEncoder, rerankCandidates } from './cross-encoder';
import { Encoder, type Matrix, type PreparedText } from './encoder';
import { SparseEncoder } from './sparse-encoder';
import { SparseIndex } from './sparse-index';
import { ColtrastError } from './errors';
import { writeFolderAtomic, writeJsonAtomic, writeJsonLinesAtomic } from './files';
import { fileLines } from './data-files';
import { compileFilter, filterFields, filterKey, type Filter } from './filter';
import { poolAll } from './token-pooling';
import { parseModules, weightFiles } from './model-dir';
import { isAdapterOnlyFolder } from './lora';
import { native, fromNative } from './native';
import { maxsim, padTokens, type Mask, type Tensor } from './ops';
import { ReadWriteLock } from './rw-lock';
import { DocStore, hasLoneSurrogate } from './doc-store';
import { IdsDigest, IndexDocsReader, RESIDUAL_BITS, SAVE_AGAIN, STORAGES, TOKEN_STORAGES, builtModelOptions, checkIndexTensors, indexDamaged, readIndexManifest, tokenCountsDigest, tokenTensors, vectorTensors, type BuiltModelOptions, type IndexManifest, type Storage, type TokenStorage } from './index-manifest';
import { booleanValue, checkOptions, invalid, numberValue, oneOf, positiveInteger } from './validate';
import { Turns, nextTurn } from './turns';

export interface IndexDoc {
  id: string;
  text: string;
  metadata?: Record<string, unknown>;
}

export interface Hit {
  id: string;
  score: number;
  text: string;
  metadata?: Record<string, unknown>;
}

export interface BuildOptions {
  /** Keep each document's token vectors (float16) for MaxSim re-ranking (default false; always for a multi-vector model). */
  lateInteraction?: boolean;
  /**
   * A second model, a sparse (SPLADE) encoder, whose vectors the index keeps beside the Encoder's (single-vector
   * Encoders): search's mode 'sparse' ranks by them, 'hybrid' fuses their ranking with the dense one (in place of BM25's),
   * as hybrid search over a dense and a learned sparse model does in vector databases. Index.load then needs it too.
   */
  sparseEncoder?: SparseEncoder;
  /**
   * Storage of the pooled vectors (default float32). 'float16': half the memory. 'int8': a quarter; each
   * dimension scalar-quantized to 256 buckets between its minimum and maximum over the first documents added
   * (the first batchSize × 32), searched at the buckets' midpoints. 'binary': a 32nd; the sign bits, searched by
   * Hamming distance, the nearest k × rescoreMultiplier rescored with the float query (SearchOptions).
   * The codes are sentence-transformers' quantize_embeddings codes ('int8', 'ubinary').
   */
  storage?: Storage;
  /**
   * Storage of the token vectors (lateInteraction or a multi-vector model). 'float16' (default): as they are,
   * 2 × dim bytes each; a multi-vector index then searches every document exactly. 'residual': ColBERTv2's
   * compression, a centroid's number (4 bytes) and the vector's difference from it in `residualBits` per
   * dimension (36 bytes for 128 dimensions at 2 bits, against 256); the centroids are k-means on the token
   * vectors of batchSize × 32 documents spread evenly over those given to build() (embedded once more for it;
   * all of them when fewer), and documents added later are encoded with them. A multi-vector index then searches
   * as PLAID does (SearchOptions.nprobe, fullScores); MaxSim re-ranking scores the decoded vectors.
   */
  tokenStorage?: TokenStorage;
  /** Residual token storage: bits per dimension of the residual, 1, 2 or 4 (default 2). */
  residualBits?: number;
  /**
   * Token pooling (with token vectors): each document's token vectors clustered and replaced by the clusters'
   * means, about 1 / poolFactor of them kept, the first one as it is (sentence-transformers'
   * HierarchicalTokenPooling, PyLate's pool_factor; lib/token-pooling.ts). Default 1: none. Documents added later
   * are pooled alike; queries never are.
   */
  poolFactor?: number;
  /**
   * Residual token storage: the number of centroids (default ColBERTv2's, the power of two at or below
   * 16 × √(token vectors), the count estimated from the first documents; at most the token vectors they hold).
   */
  centroids?: number;
  batchSize?: number;
  /**
   * Documents embedded so far, of how many. With residual token storage and more documents than the k-means
   * sample, the sample's documents count twice (embedded for k-means first, then added).
   */
  onProgress?: (done: number, total: number) => void;
}

export interface SearchOptions {
  /** Hits per query (default 10). */
  k?: number;
  /**
   * 'dense' (default; the model's vectors: MaxSim over every document for a multi-vector model, the sparse vectors for a
   * SparseEncoder's index, which also takes 'sparse' for it), 'bm25' or 'hybrid' (fusion of the two). An index with a
   * second, sparse model (BuildOptions.sparseEncoder): 'sparse' ranks by its vectors, and 'hybrid' fuses the dense
   * ranking with that one instead of BM25's.
   */
  mode?: 'dense' | 'bm25' | 'hybrid' | 'sparse';
  /**
   * 'maxsim': re-score the dense candidates with late interaction (needs lateInteraction; a multi-vector model's
   * ranking is MaxSim already). A one-label CrossEncoder: re-score the first stage's candidates (any mode's)
   * with it, reading each query and document together; hits then carry its scores.
   */
  rerank?: 'none' | 'maxsim' | CrossEncoder;
  /** Candidates taken from the first stage before fusion or re-ranking (default max(100, k); at least k). */
  candidates?: number;
  /** Hybrid: weight of the dense ranking (default 0.5). */
  hybridWeight?: number;
  /**
   * Hybrid: how the two rankings combine. 'rrf' (default): reciprocal-rank fusion, weight / (60 + rank) from each.
   * 'relative': each ranking's scores min-max scaled to [0, 1] over its candidates, then weighted and summed (0 where
   * a document is missing), as Weaviate's relativeScoreFusion.
   */
  fusion?: Fusion;
  /**
   * A binary index: rows kept by Hamming distance per result wanted (default 4), then ordered by the float
   * query's cosine with their sign vectors. More finds more of the float ranking's hits, for more work.
   */
  rescoreMultiplier?: number;
  /**
   * A multi-vector index with residual token storage: centroids probed per query token (default 1). The documents
   * holding a token of a probed centroid are the candidates. More probes make more candidates, for more work; on
   * SciFact (BENCHMARKS.md) one probe ranked as well as four. A probe count of the index's centroid count
   * (Index.centroids) makes every document a candidate.
   */
  nprobe?: number;
  /**
   * A multi-vector index with residual token storage: candidates scored exactly (MaxSim over their decoded
   * vectors) after ranking all candidates by their centroids' MaxSim (default max(256, 4 × k); at least k, fewer would
   * return fewer than k hits).
   */
  fullScores?: number;
  /**
   * Only documents that match are found: a MongoDB query over `{ id, text, metadata }` (operators $eq, $ne, $gt,
   * $gte, $lt, $lte, $in, $nin, $exists, $regex, $and, $or, $not, …: lib/filter.ts), e.g.
   * `{ 'metadata.lang': 'en', 'metadata.year': { $gte: 2020 } }`, or a function of the document. The filter
   * applies before ranking, in every mode and storage, so a search returns k hits whenever k documents match.
   * A query object's matches are kept (16 filters) until documents are added or removed.
   */
  filter?: Filter;
  /**
   * Maximal marginal relevance (Carbonell and Goldstein, 1998), for varied hits (e.g. a RAG prompt's context): the
   * k hits are picked one at a time from the ranking's first `candidates` (after any re-ranking), each the one that
   * maximizes λ · cos(query, doc) − (1 − λ) · max cos(doc, a doc picked before), cosines of the pooled vectors
   * (as LangChain's max_marginal_relevance_search). 1: the most relevant first, 0: the most varied. Hits keep the
   * ranking's scores, in the order picked. Needs pooled vectors (not a multi-vector index).
   */
  mmrLambda?: number;
}

export { RESIDUAL_BITS, STORAGES, TOKEN_STORAGES, type Storage, type TokenStorage } from './index-manifest';

/** @internal The native store of dense vectors: exact inner-product search over all of them (native/search/dense_store.h). */
export interface NativeDenseStore {
  add(rows: Float32Array): number;
  /** Keeps the rows whose flag is 1, in place, off the JS thread; resolves to the rows left. */
  remove(keep: Uint8Array): Promise<number>;
  size(): number;
  rows(start: number, count: number): Float32Array;
  /** allow: one flag per row, 1 where a row may be found (a filter); indices -1 past the rows found. */
  search(queries: Float32Array, k: number, rescoreMultiplier?: number, allow?: Uint8Array): Promise<{ scores: Float32Array; indices: Int32Array; k: number }>;
  save(file: string): Promise<void>;
  /** map: the file's pages are the store's (mapped read-only) until it changes; else a copy in memory. */
  load(file: string, map?: boolean): Promise<number>;
}

/** @internal Token vectors compressed as ColBERTv2 does, searched as PLAID does (native/search/residual_store.h). */
export interface NativeResidualStore {
  train(sample: Float32Array, centroids: number, seed: number): Promise<number>;
  centroids(): number;
  add(rows: Float32Array): Promise<number>;
  /** Keeps the rows whose flag is 1, in place, off the JS thread; resolves to the rows left. */
  remove(keep: Uint8Array): Promise<number>;
  size(): number;
  rows(start: number, count: number): Float32Array;
  /** queries: [Σ lengths, dim]; documents: each document's row count; indices -1 past a query's candidates. */
  search(
    queries: Float32Array,
    lengths: Int32Array,
    documents: Int32Array,
    k: number,
    nprobe: number,
    fullScores: number,
    mean: boolean,
    allow?: Uint8Array,
  ): Promise<{ scores: Float32Array; indices: Int32Array; k: number }>;
  save(file: string): Promise<void>;
  load(file: string): Promise<number>;
}

/** The token store of an index: float16 rows, or residual codes (TokenStorage). */
type TokenStore = { kind: 'float16'; store: NativeDenseStore } | { kind: 'residual'; store: NativeResidualStore; bits: number; centroids?: number };

const BUILD_KEYS = ['lateInteraction', 'sparseEncoder', 'storage', 'tokenStorage', 'residualBits', 'centroids', 'poolFactor', 'batchSize', 'onProgress'] as const;
/** Token pooling's protected leading vectors (sentence-transformers' default: the [CLS] vector). */
const PROTECTED_TOKENS = 1;
/** How search() embeds its queries: pooled vectors, normalized; token vectors (normalized for MaxSim re-ranking). */
const POOLED_QUERIES = { normalize: true, task: 'query' } as const;
const QUERY_TOKENS = { output: 'tokens', task: 'query' } as const;

/**
 * @internal A query tokenized ahead (Index.prepareQueries) as search() embeds it: the server tokenizes each /search
 * request as it arrives, before its batch queue, so that a short search is never batched behind the tokenizing of
 * huge queries (as /embed's). Opaque.
 */
export interface PreparedQuery {
  /** The query (BM25, a cross-encoder's pairs and the hits' order need its text). */
  readonly text: string;
  /** Tokenized for its pooled vector (a single-vector index's dense stage, MMR), where the search embeds one. */
  readonly pooled?: PreparedText;
  /** Tokenized for its token vectors (a multi-vector index's first stage, MaxSim re-ranking), where the search embeds them. */
  readonly tokens?: PreparedText;
}

const SEARCH_KEYS = ['k', 'mode', 'rerank', 'candidates', 'hybridWeight', 'fusion', 'rescoreMultiplier', 'nprobe', 'fullScores', 'filter', 'mmrLambda'] as const;
/** Token vectors k-means trains the centroids on, at most (evenly spaced among the first documents'). */
const CENTROID_SAMPLE = 1 << 18;

/**
 * Reciprocal-rank fusion of two rankings of one query: each item scores weight / (k + rank) from the first
 * and (1 - weight) / (k + rank) from the second (ranks from 1). Returns [key, score] pairs, unsorted.
 */
/** How hybrid search combines its dense and BM25 rankings (SearchOptions.fusion). */
export type Fusion = 'rrf' | 'relative';
export const FUSIONS = ['rrf', 'relative'] as const;

/**
 * Relative score fusion: each list's scores scaled to [0, 1] by its minimum and maximum (all 1 when they are equal),
 * weight × the first's + (1 − weight) × the second's, 0 for a list an item is missing from.
 */
export function relativeScoreFusion<T extends { score: number }, K>(first: T[], second: T[], keyOf: (item: T) => K, weight: number): [K, number][] {
  const scores = new Map<K, number>();
  const add = (list: T[], w: number) => {
    // A loop, not Math.min(...scores): a spread of a long list overflows the stack.
    let lo = Infinity;
    let hi = -Infinity;
    for (const h of list) [lo, hi] = [Math.min(lo, h.score), Math.max(hi, h.score)];
    const span = hi - lo;
    for (const h of list) scores.set(keyOf(h), (scores.get(keyOf(h)) ?? 0) + w * (span > 0 ? (h.score - lo) / span : 1));
  };
  add(first, weight);
  add(second, 1 - weight);
  return [...scores];
}

/** The hybrid fusion of a dense and a BM25 list, best first (ties: the key's order, `compare`). */
export function fuseRankings<T extends { score: number }, K>(
  dense: T[],
  lexical: T[],
  keyOf: (item: T) => K,
  o: { fusion: Fusion; weight: number; rrfK: number },
  compare: (a: K, b: K) => number,
): { key: K; score: number }[] {
  const fused = o.fusion === 'relative' ? relativeScoreFusion(dense, lexical, keyOf, o.weight) : reciprocalRankFusion(dense, lexical, keyOf, o.weight, o.rrfK);
  return fused.map(([key, score]) => ({ key, score })).sort((a, b) => b.score - a.score || compare(a.key, b.key));
}

export function reciprocalRankFusion<T, K>(first: T[], second: T[], keyOf: (item: T) => K, weight: number, k: number): [K, number][] {
  const scores = new Map<K, number>();
  first.forEach((h, r) => scores.set(keyOf(h), (scores.get(keyOf(h)) ?? 0) + weight / (k + r + 1)));
  second.forEach((h, r) => scores.set(keyOf(h), (scores.get(keyOf(h)) ?? 0) + (1 - weight) / (k + r + 1)));
  return [...scores];
}

/** @internal An empty native store of `dim`-wide vectors. */
export function newStore(dim: number, storage: Storage): NativeDenseStore {
  const Store = (native() as unknown as { NativeDenseStore: new (dim: number, storage: string) => NativeDenseStore }).NativeDenseStore;
  return new Store(dim, storage);
}

/** @internal An empty token store: float16 rows, or residual codes of `bits` per dimension. */
function newTokenStore(dim: number, storage: TokenStorage, bits: number, centroids?: number): TokenStore {
  if (storage === 'float16') return { kind: 'float16', store: newStore(dim, 'float16') };
  const Store = (native() as unknown as { NativeResidualStore: new (dim: number, bits: number) => NativeResidualStore }).NativeResidualStore;
  return { kind: 'residual', store: new Store(dim, bits), bits, centroids };
}

/** ColBERTv2's number of centroids for about `tokens` token vectors: the power of two at or below 16 √tokens. */
export function defaultCentroids(tokens: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, 16 * Math.sqrt(tokens))));
}

/** Query `i`'s hits in a native store's result, up to its first index -1 (fewer documents found than k). */
export function rankedHits(r: { scores: Float32Array; indices: Int32Array; k: number }, i: number): { doc: number; score: number }[] {
  const hits: { doc: number; score: number }[] = [];
  for (let j = 0; j < r.k && r.indices[i * r.k + j] >= 0; j++) hits.push({ doc: r.indices[i * r.k + j], score: r.scores[i * r.k + j] });
  return hits;
}

/** The rows of token matrices one after another, in one array. */
function stackRows(matrices: { data: Float32Array }[]): Float32Array {
  const out = new Float32Array(matrices.reduce((n, m) => n + m.data.length, 0));
  matrices.reduce((at, m) => (out.set(m.data, at), at + m.data.length), 0);
  return out;
}

/**
 * How an index fingerprints its model (index.json's model.fingerprintVersion; absent: 1). 1: sha256 of config.json and
 * the weights, as indexes saved before version 2 record it: blind to the pooling, a Dense head, a multi-vector model's
 * projection, the tokenizer and the prompts, so that a mean-pooling model loaded a CLS-pooling copy's index. 2: all of
 * those (fingerprintFiles).
 */
const FINGERPRINT_VERSION = 2;

/**
 * The files of a model folder that make its vectors, by their paths in it ('/'-separated), sorted: config.json, the
 * weights (or shards), a LoRA adapter's files, modules.json and every file in each module's folder (a Pooling's
 * config, a Dense head's config and weights, a multi-vector model's mask and projection), the tokenizer and the
 * Transformer's settings (sentence_bert_config.json: length, lowercasing). Those absent are left out.
 */
function fingerprintFiles(dir: string): string[] {
  const files = new Set(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'modules.json', 'sentence_bert_config.json', 'adapter_config.json', 'adapter_model.safetensors']);
  for (const shard of weightFiles(dir)?.shards ?? ['model.safetensors']) files.add(path.basename(shard));
  if (fs.existsSync(path.join(dir, 'model.safetensors.index.json')) && !fs.existsSync(path.join(dir, 'model.safetensors'))) files.add('model.safetensors.index.json');
  let modules: { path: string; type: string }[];
  try {
    modules = parseModules(JSON.parse(fs.readFileSync(path.join(dir, 'modules.json'), 'utf8')), 'modules.json');
  } catch {
    modules = []; // none, unreadable or refused (hashed as it is; loading the model says what is wrong)
  }
  // Links are followed: a Hugging Face cache's snapshot holds links to its blobs, which a Dirent calls links, not files
  // (a hub model's Pooling and Dense files were left out). `above`: the real folders walked into, where a link back
  // up would loop.
  const walk = (folder: string, above: string[] = []) => {
    const real = fs.realpathSync(path.join(dir, folder));
    if (above.includes(real)) return;
    for (const entry of fs.readdirSync(path.join(dir, folder), { withFileTypes: true })) {
      const relative = `${folder}/${entry.name}`;
      const kind = entry.isSymbolicLink() ? fs.statSync(path.join(dir, relative), { throwIfNoEntry: false }) : entry;
      if (kind?.isDirectory()) walk(relative, [...above, real]);
      else if (kind?.isFile()) files.add(relative);
    }
  };
  // A Router's modules (an inference-free SPLADE's) are the folders its router_config.json names.
  const routed: string[] = [];
  if (modules.length === 1 && modules[0].type.split('.').pop() === 'Router') {
    const config = path.join(dir, modules[0].path, 'router_config.json');
    files.add(path.posix.join(modules[0].path, 'router_config.json'));
    try {
      const structure = (JSON.parse(fs.readFileSync(config, 'utf8')) as { structure?: Record<string, unknown> }).structure ?? {};
      const names = Object.values(structure).flatMap((n) => (Array.isArray(n) ? n.filter((x): x is string => typeof x === 'string') : []));
      for (const m of parseModules(names.map((name) => ({ path: path.posix.join(modules[0].path, name), type: '' })), config)) routed.push(m.path);
    } catch {
      // unreadable, or a path outside the folder: hashed as it is (loading the model says what is wrong)
    }
  }
  for (const folder of [...modules.map((m) => m.path), ...routed]) {
    // The Transformer's path is '' (the folder itself, whose files are above); parseModules keeps every path inside it.
    if (folder !== '' && fs.existsSync(path.join(dir, folder)) && fs.statSync(path.join(dir, folder)).isDirectory()) walk(folder);
  }
  return [...files].filter((f) => fs.existsSync(path.join(dir, f)) && fs.statSync(path.join(dir, f)).isFile()).sort();
}

/**
 * sha256 of what "the same model" means for an index (FINGERPRINT_VERSION): `version` 1 for an index saved before 2.
 * Version 2 hashes each of fingerprintFiles as its path, its length and its bytes, and config_sentence_transformers.json's
 * settings (the prompts, PyLate's query and document settings) without the versions of the libraries that saved it.
 * `memory`: the model's changes in memory (Encoder.memoryChanges) when it made the vectors; with them, that state's.
 */
async function fingerprint(encoder: Encoder | SparseEncoder, version: number, memory: Encoder['memoryChanges']): Promise<string> {
  const hash = createHash('sha256');
  const dir = encoder.modelDir;
  // A model changed in memory makes other vectors than its folder's: its fingerprint is that state's, which only the
  // same Encoder, changed no further, has.
  if (memory) return createHash('sha256').update(`changed in memory\0${memory.state}`).digest('hex');
  if (version === 1) {
    const weights = weightFiles(dir);
    const files = [path.join(dir, 'config.json'), ...(weights?.shards ?? [path.join(dir, 'model.safetensors')])];
    // An adapter-only folder has neither (its base model's are elsewhere): no index of version 1 was built with one
    // (building read them), so it is another model, not a failed read of a file it does not have.
    if (!files.every((file) => fs.existsSync(file))) return 'absent';
    for (const file of files) {
      for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
    }
    return hash.digest('hex');
  }
  for (const name of fingerprintFiles(dir)) {
    const file = path.join(dir, name);
    hash.update(`${name}\0${fs.statSync(file).size}\0`);
    for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  }
  // A LoRA adapter Encoder.load added. An adapter-only folder's own is among its files, and always applied; one beside
  // the weights is among them too, but applied only when the load names it (`adapter: dir`), so it is hashed again
  // then: without it, the folder loaded bare and with its adapter had one fingerprint and other vectors.
  const adapter = encoder instanceof Encoder ? encoder.adapterDir : undefined;
  if (adapter !== undefined && (path.resolve(adapter) !== path.resolve(dir) || !isAdapterOnlyFolder(dir))) {
    for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
      const file = path.join(adapter, name);
      if (!fs.existsSync(file)) continue;
      hash.update(`adapter/${name}\0${fs.statSync(file).size}\0`);
      for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
    }
  }
  // The folder's model run with its first layers alone (Encoder.load's layers) makes other vectors than the folder's.
  const cut = encoder instanceof Encoder ? encoder.cutToLayers : undefined;
  if (cut !== undefined) hash.update(`layers\0${cut}\0`);
  const stFile = path.join(dir, 'config_sentence_transformers.json');
  if (fs.existsSync(stFile)) {
    const text = fs.readFileSync(stFile, 'utf8');
    let settings = text;
    try {
      const parsed = JSON.parse(text);
      if (parsed !== null && typeof parsed === 'object') delete parsed.__version__;
      settings = JSON.stringify(parsed);
    } catch {
      // hashed as it is
    }
    hash.update(`config_sentence_transformers.json\0${settings}`);
  }
  return hash.digest('hex');
}

/** An Encoder or a SparseEncoder where `call` wants one (arguments in another order otherwise fail deep inside with a puzzling message). */
function checkEncoder(encoder: unknown, call: string): void {
  if (!(encoder instanceof Encoder) && !(encoder instanceof SparseEncoder)) throw invalid('encoder', `an Encoder (from Encoder.load) or a SparseEncoder (SparseEncoder.load): ${call}`, encoder);
}

/**
 * The sparse vectors of the index folder `where` (sparse.bin), read and checked against the model: its width and
 * similarity. Their ids are checked against docs.jsonl's by Index.load.
 */
async function readSparseVectors(where: string, model: SparseEncoder): Promise<SparseIndex> {
  const file = path.join(where, 'sparse.bin');
  if (!fs.existsSync(file)) throw indexDamaged(where, `sparse.bin is missing; ${SAVE_AGAIN}`);
  let vectors: SparseIndex;
  try {
    vectors = await SparseIndex.load(file);
  } catch (error) {
    throw indexDamaged(where, (error as Error).message, { cause: error });
  }
  if (vectors.dimension !== model.dimension) throw indexDamaged(where, `sparse.bin holds vectors of width ${vectors.dimension} and the model gives ${model.dimension}; ${SAVE_AGAIN}`);
  if (vectors.similarity !== sparseSimilarity(model)) throw indexDamaged(where, `sparse.bin ranks by ${vectors.similarity} and the model's similarity is ${model.similarityFunction}; ${SAVE_AGAIN}`);
  return vectors;
}

/**
 * Index.load's `sparseEncoder`, checked against the index at `where`: given where index.json has a second, sparse model
 * and only then, and that model (its fingerprint and width).
 */
async function checkSecondModel(where: string, manifest: IndexManifest, encoder: Encoder | SparseEncoder, given: unknown): Promise<SparseEncoder | undefined> {
  const built = manifest.sparseEncoder;
  if (given === undefined) {
    if (!built) return undefined;
    const from = typeof built.source === 'string' ? ` (index.json says it was loaded from ${built.source})` : '';
    throw new ColtrastError('INVALID_ARGUMENT', `index ${where} keeps a sparse encoder's vectors beside the Encoder's${from}: load it with { sparseEncoder: await SparseEncoder.load(<that folder>) } too`);
  }
  if (!(given instanceof SparseEncoder)) throw invalid('options.sparseEncoder', 'a SparseEncoder (SparseEncoder.load): the second model the index was built with', given);
  if (!built) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.sparseEncoder: index ${where} was built ${encoder instanceof SparseEncoder ? 'with a sparse encoder alone' : 'without a second, sparse model'}; load it without sparseEncoder`);
  }
  if (built.fingerprintVersion !== FINGERPRINT_VERSION) {
    throw indexDamaged(where, `index.json says sparseEncoder.fingerprintVersion ${JSON.stringify(built.fingerprintVersion)}, and this version of coltrast writes and reads ${FINGERPRINT_VERSION}`);
  }
  if (built.fingerprint !== (await fingerprint(given, FINGERPRINT_VERSION, undefined))) {
    const from = typeof built.source === 'string' ? ` (index.json says it was loaded from ${built.source})` : '';
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `index ${where} was built with another sparse encoder${from}: the weights, modules, tokenizer or prompts of ${given.modelDir} differ from that model's; load the index with the sparse encoder that built it, or rebuild the index with this one`,
    );
  }
  if (built.dimension !== given.dimension) throw indexDamaged(where, `index.json says the sparse encoder's width is ${built.dimension}, and ${given.modelDir} gives ${given.dimension}; ${SAVE_AGAIN}`);
  return given;
}

/** The model's changes in memory (Encoder.memoryChanges); a SparseEncoder has none that an index could see. */
function memoryChangesOf(model: Encoder | SparseEncoder): Encoder['memoryChanges'] {
  return model instanceof Encoder ? model.memoryChanges : undefined;
}

/**
 * BuildOptions.sparseEncoder, checked: a SparseEncoder beside a single-vector Encoder (a multi-vector model's first stage
 * is MaxSim over token vectors; a sparse one beside it is not supported).
 */
function secondSparseModel(encoder: Encoder, sparseEncoder: unknown): SparseEncoder {
  if (!(sparseEncoder instanceof SparseEncoder)) throw invalid('options.sparseEncoder', 'a SparseEncoder (SparseEncoder.load) whose vectors the index keeps beside the Encoder\'s', sparseEncoder);
  if (encoder.multiVector !== undefined) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.sparseEncoder: ${encoder.modelDir} is a multi-vector model, and an index keeps a second, sparse model's vectors beside a single-vector Encoder's only`);
  }
  sparseSimilarity(sparseEncoder);
  return sparseEncoder;
}

/** How an index of `model` scores: its similarity function, which must be one an inverted index ranks by (dot, cosine). */
function sparseSimilarity(model: SparseEncoder): 'dot' | 'cosine' {
  const fn = model.similarityFunction;
  if (fn !== 'dot' && fn !== 'cosine') {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${model.modelDir} compares its sparse vectors by ${fn} distance, and an index ranks sparse vectors by dot product or cosine only: set similarity_fn_name in its config_sentence_transformers.json to "dot" or "cosine" to index it`);
  }
  return fn;
}

/**
 * Refuses documents an index cannot take, naming each as `docs[i]` (`i` counted from `offset`: a slice of a larger
 * call): an id that is not a non-empty string, or that the index (`existing`) or an earlier document of the call holds;
 * a text that is not a string; metadata that is not an object. Metadata null counts as none (JSON's way of writing
 * "no metadata").
 */
function checkDocs(docs: IndexDoc[], existing: { has(id: string): boolean }, offset = 0): void {
  if (!Array.isArray(docs)) throw invalid('docs', 'an array of { id, text, metadata? }', docs);
  const seen = new Map<string, number>();
  docs.forEach((d, k) => {
    const i = offset + k;
    if (!d || typeof d !== 'object') throw invalid(`docs[${i}]`, 'an object { id, text, metadata? }', d);
    if (typeof d.id !== 'string' || d.id.length === 0) throw invalid(`docs[${i}].id`, 'a non-empty string', d.id);
    // Ids are kept as UTF-8, which has no lone surrogate: such an id would come back as another string.
    if (hasLoneSurrogate(d.id)) throw invalid(`docs[${i}].id`, 'well-formed Unicode (it holds a lone surrogate, which UTF-8 cannot keep)', d.id);
    if (typeof d.text !== 'string') throw invalid(`docs[${i}].text`, 'a string', d.text);
    if (d.metadata !== undefined && d.metadata !== null && (typeof d.metadata !== 'object' || Array.isArray(d.metadata))) {
      throw invalid(`docs[${i}].metadata`, 'an object (or absent, or null)', d.metadata);
    }
    const earlier = seen.get(d.id);
    if (earlier !== undefined) throw new ColtrastError('INVALID_ARGUMENT', `docs[${i}].id "${d.id}" repeats docs[${earlier}]'s (ids must be unique)`);
    if (existing.has(d.id)) throw new ColtrastError('INVALID_ARGUMENT', `docs[${i}].id "${d.id}" is already in the index`);
    seen.set(d.id, i);
  });
}

/**
 * `docs` with metadata of their own (structuredClone), `i` counted from `offset` in errors. The index kept the objects
 * it was given, and gave them back in hits and get(): documents added with one metadata object shared it, so changing
 * one hit's metadata (or the caller's object after add) changed every such document's, behind a filter's kept matches.
 */
function ownCopies(docs: IndexDoc[], offset: number): IndexDoc[] {
  return docs.map((d, k) => {
    if (d.metadata === undefined || d.metadata === null) return d;
    try {
      return { id: d.id, text: d.text, metadata: structuredClone(d.metadata) };
    } catch (error) {
      throw invalid(`docs[${offset + k}].metadata`, `data the index can copy and save (objects, arrays, strings, numbers, booleans, null; not functions or symbols: ${(error as Error).message})`, d.metadata);
    }
  });
}

/** `item` with a copy of its metadata (the index keeps its own: ownCopies). */
function withOwnMetadata<T extends { metadata?: Record<string, unknown> }>(item: T): T {
  return item.metadata === undefined ? item : { ...item, metadata: structuredClone(item.metadata) };
}

/** Where the fused MaxSim op runs for `encoder`: its CUDA device, else the CPU. */
function maxsimDevice(encoder: Encoder): string {
  return encoder.device.startsWith('cuda') ? encoder.device : 'cpu';
}

/** @internal The positions of `row`'s `k` highest values, best first, ties by position (what sorting every position would give). */
export function topIndices(row: ArrayLike<number>, k: number): number[] {
  return topK(row.length, k, (a, b) => row[a] > row[b] || (row[a] === row[b] && a < b));
}

/** Queries embedded and searched together by a multi-vector index's first stage. */
const MAXSIM_QUERY_GROUP = 64;
/** What a search's groups of queries share: a residual store's document token counts, an exact search's documents. */
interface MaxsimScope {
  counts?: Int32Array;
  findable?: number[];
}

/**
 * A multi-vector model's exact MaxSim (the fused op, on the model's device) of queries' token vectors against
 * documents `docs`, in blocks of documents whose padded token rows stay near 2^16: scores[b][i] is query b's score of
 * docs[i], divided by the query's token count when the model's similarity is 'meanmaxsim' (sentence-transformers'
 * scores). `tokens` gives a block's token vectors, right-padded, with their mask (padTokens' layout).
 */
export async function exactMaxSim(
  encoder: Encoder,
  queries: readonly Matrix[],
  docs: readonly number[],
  tokenCount: (doc: number) => number,
  tokens: (docs: number[]) => { tokens: Tensor; mask: Mask },
): Promise<Float32Array[]> {
  const BLOCK_TOKENS = 1 << 16;
  const options = { normalize: encoder.multiVector?.similarity === 'meanmaxsim', device: maxsimDevice(encoder) };
  const q = padTokens(queries as Matrix[], encoder.tokenDimension);
  const B = queries.length;
  const scores = Array.from({ length: B }, () => new Float32Array(docs.length));
  for (let start = 0; start < docs.length; ) {
    let end = start + 1;
    let Ld = Math.max(1, tokenCount(docs[start]));
    while (end < docs.length && Math.max(Ld, tokenCount(docs[end])) * (end + 1 - start) <= BLOCK_TOKENS) Ld = Math.max(Ld, tokenCount(docs[end++]));
    const n = end - start;
    const d = tokens(docs.slice(start, end));
    const r = await maxsim(q.tokens, q.mask, d.tokens, d.mask, options);
    for (let b = 0; b < B; b++) scores[b].set(r.value.subarray(b * n, (b + 1) * n), start);
    start = end;
  }
  return scores;
}

/**
 * @internal Refuses a folder that saving an index over would destroy: one that exists, is not empty and is not an index
 * (no index.json). Index.save's overwrite, `coltrast index --output` and serve's saveTo replace only an index: the
 * CLI once emptied whatever folder --output named.
 */
export function checkIndexFolder(dir: string, what: string): void {
  const target = path.resolve(dir);
  if (fs.existsSync(target) && (!fs.statSync(target).isDirectory() || (fs.readdirSync(target).length > 0 && !fs.existsSync(path.join(target, 'index.json'))))) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what}, ${target}, exists and is not an index (no index.json): saving would replace it; choose another folder`);
  }
}

/**
 * The stored vectors of MMR's candidates (int8 and binary decoded), each normalized again (cosines), read from the store
 * once per search: the queries of a search share many candidates.
 */
class CandidateVectors {
  private readonly at = new Map<number, number>();
  private data: Float32Array;
  private count = 0;

  constructor(
    private readonly store: NativeDenseStore,
    readonly dim: number,
  ) {
    this.data = new Float32Array(64 * dim);
  }

  /** Before a query's `n` candidates: forgets the vectors read so far when keeping them too would pass 64 MiB. */
  room(n: number): void {
    if ((this.count + n) * this.dim <= 1 << 24) return;
    this.at.clear();
    this.count = 0;
  }

  /** Where document `doc`'s vector starts in `rows` (read now if it was not yet). */
  offset(doc: number): number {
    let at = this.at.get(doc);
    if (at === undefined) {
      const v = this.store.rows(doc, 1);
      let norm = 0;
      for (let c = 0; c < v.length; c++) norm += v[c] * v[c];
      norm = Math.sqrt(norm) || 1;
      if ((this.count + 1) * this.dim > this.data.length) {
        const grown = new Float32Array(2 * this.data.length);
        grown.set(this.data);
        this.data = grown;
      }
      at = this.count++ * this.dim;
      for (let c = 0; c < this.dim; c++) this.data[at + c] = v[c] / norm;
      this.at.set(doc, at);
    }
    return at;
  }

  get rows(): Float32Array {
    return this.data;
  }
}

/** The inner product of a[ao, ao + dim) and b[bo, bo + dim), in four sums (a quarter faster than one). */
function dotAt(a: Float32Array, ao: number, b: Float32Array, bo: number, dim: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let c = 0;
  for (; c + 3 < dim; c += 4) {
    s0 += a[ao + c] * b[bo + c];
    s1 += a[ao + c + 1] * b[bo + c + 1];
    s2 += a[ao + c + 2] * b[bo + c + 2];
    s3 += a[ao + c + 3] * b[bo + c + 3];
  }
  for (; c < dim; c++) s0 += a[ao + c] * b[bo + c];
  return s0 + s1 + (s2 + s3);
}

/**
 * The k of `hits` that maximal marginal relevance picks (SearchOptions.mmrLambda), in the order picked: each next one
 * maximizes λ · cos(query, doc) − (1 − λ) · its highest cosine with one picked before (ties: the earlier in `hits`).
 * Each candidate's highest cosine is kept and raised with the one just picked, so the work is k × candidates cosines;
 * it lets the event loop run between picks (Turns).
 */
async function marginalRelevance(
  query: Float32Array,
  hits: { doc: number; score: number }[],
  k: number,
  lambda: number,
  vectors: CandidateVectors,
  turn: Turns,
): Promise<{ doc: number; score: number }[]> {
  const n = hits.length;
  const dim = vectors.dim;
  const at = new Int32Array(n);
  vectors.room(n);
  const relevance = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    at[j] = vectors.offset(hits[j].doc);
    relevance[j] = dotAt(query, 0, vectors.rows, at[j], dim);
  }
  const rows = vectors.rows; // grows no more
  const closest = new Float64Array(n); // each candidate's highest cosine with a picked one (none picked yet: no penalty)
  const taken = new Uint8Array(n);
  const picked: { doc: number; score: number }[] = [];
  const count = Math.min(k, n);
  while (picked.length < count) {
    let best = -1;
    let bestValue = -Infinity;
    for (let j = 0; j < n; j++) {
      if (taken[j]) continue;
      const value = lambda * relevance[j] - (1 - lambda) * closest[j];
      if (value > bestValue) {
        best = j;
        bestValue = value;
      }
    }
    if (best < 0) best = taken.indexOf(0); // values all NaN: none can be
    taken[best] = 1;
    picked.push(hits[best]);
    if (picked.length < count && lambda < 1) {
      const b = at[best];
      for (let j = 0; j < n; j++) {
        if (taken[j]) continue;
        const cos = dotAt(rows, at[j], rows, b, dim);
        if (picked.length === 1 || cos > closest[j]) closest[j] = cos;
      }
    }
    await turn.maybe();
  }
  return picked;
}

export class Index {
  /** The documents, in the order of the vectors (lib/doc-store.ts: ids and texts off the JS heap). */
  private docs = new DocStore();
  private tokenCounts: number[] = [];
  private tokenOffsets: number[] = [0];
  private bm25: Bm25Index | undefined;
  private bm25Build: Promise<Bm25Index> | undefined;
  /** The documents each recent query-object filter matches, by its filterKey; emptied when documents change. */
  private filterMatches = new Map<string, Uint8Array>();
  /** Token pooling of documents' token vectors (BuildOptions.poolFactor; 1: none). */
  private pooling = 1;
  /** Searches and saves read; add, upsert and remove write. */
  private readonly lock = new ReadWriteLock();

  private constructor(
    /** The model that embeds documents and queries: an Encoder, or a SparseEncoder (`sparseVectors`). */
    private readonly model: Encoder | SparseEncoder,
    /** Pooled vectors; none for a multi-vector model or a sparse encoder. */
    private readonly vectors: NativeDenseStore | undefined,
    private readonly tokens: TokenStore | undefined,
    /** How the pooled vectors are kept (BuildOptions.storage). */
    readonly storage: Storage,
    /** Computed when first needed (save): hashing the weights is work a search-only index never needs. */
    private modelFingerprint: string | undefined,
    /** A sparse encoder's vectors (`model`'s, or `secondModel`'s), its documents numbered as `docs`. */
    private readonly sparseVectors?: SparseIndex,
    /** An Encoder's index's second model, whose vectors `sparseVectors` holds (BuildOptions.sparseEncoder). */
    private readonly secondModel?: SparseEncoder,
  ) {
    this.modelChanges = memoryChangesOf(model);
  }

  /** The dense model: every path that reads it (pooled or token vectors) is one an index of a SparseEncoder never takes. */
  private get encoder(): Encoder {
    if (!(this.model instanceof Encoder)) throw new Error('internal: the Encoder of an index built with a SparseEncoder');
    return this.model;
  }

  /** The model's changes in memory when the index was built or loaded (Encoder.memoryChanges): those of its vectors. */
  private modelChanges: Encoder['memoryChanges'];
  /** The second model's fingerprint, as modelFingerprint: computed at the first save, or read at load. */
  private secondFingerprint: string | undefined;

  /**
   * Refuses work with the Encoder changed (trained, an adapter or head added) since the index's vectors were made:
   * its new vectors and query vectors would be another model's than the stored ones. An empty index takes the model
   * as it is now.
   */
  private checkModelUnchanged(work: string): void {
    const now = memoryChangesOf(this.model);
    if (now?.state === this.modelChanges?.state) return;
    if (this.docs.length === 0) {
      this.modelChanges = now;
      this.modelFingerprint = undefined;
      return;
    }
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `cannot ${work}: the index's Encoder was changed in memory (${now?.changes.join(', ')}) after the index's ${this.docs.length} ` +
        'documents were embedded, so its vectors are another model\'s than the stored ones. Build a new index with the model as it is now (Index.build)',
    );
  }

  get size(): number {
    return this.docs.length;
  }
  get lateInteraction(): boolean {
    return this.tokens !== undefined;
  }
  /** Built with a multi-vector model: token vectors only, ranked by MaxSim. */
  get multiVector(): boolean {
    return this.vectors === undefined && this.model instanceof Encoder;
  }
  /** Built with a sparse (SPLADE) encoder: sparse vectors in an inverted index, searched exactly. */
  get sparse(): boolean {
    return this.model instanceof SparseEncoder;
  }
  /** The second, sparse model of an Encoder's index (BuildOptions.sparseEncoder), whose vectors it keeps too. */
  get sparseEncoder(): SparseEncoder | undefined {
    return this.secondModel;
  }
  /** The model whose sparse vectors the index keeps: the index's own, or its second. */
  private get sparseModel(): SparseEncoder | undefined {
    return this.model instanceof SparseEncoder ? this.model : this.secondModel;
  }
  /** How the token vectors are kept (undefined without them). */
  get tokenStorage(): TokenStorage | undefined {
    return this.tokens?.kind;
  }
  /** Token pooling's factor for documents' token vectors (1: none; BuildOptions.poolFactor). */
  get poolFactor(): number {
    return this.pooling;
  }
  /** Residual token storage: the number of centroids (0 until the first documents train them; 0 for other storage). */
  get centroids(): number {
    return this.tokens?.kind === 'residual' ? this.tokens.store.centroids() : 0;
  }

  /** Embeds `docs` with `encoder` (an Encoder, or a SparseEncoder) into a new index. */
  static async build(encoder: Encoder | SparseEncoder, docs: IndexDoc[], options?: BuildOptions): Promise<Index> {
    checkEncoder(encoder, 'Index.build(encoder, docs, options?)');
    const o = checkOptions('options', options, BUILD_KEYS);
    if (encoder instanceof SparseEncoder) {
      // float32, the default, is taken as saying nothing, as for a multi-vector model (the CLI passes it).
      const dense: (keyof BuildOptions)[] = (['lateInteraction', 'sparseEncoder', 'tokenStorage', 'residualBits', 'centroids', 'poolFactor'] as const).filter((key) => o[key] !== undefined && o[key] !== false);
      if (o.storage !== undefined && o.storage !== 'float32') dense.unshift('storage');
      if (dense.length > 0) {
        throw invalid(`options.${dense[0]}`, "absent with a SparseEncoder: its index keeps the sparse vectors as they are, with no pooled or token vectors to store", o[dense[0]]);
      }
      const index = new Index(encoder, undefined, undefined, 'float32', undefined, new SparseIndex(encoder.dimension, { similarity: sparseSimilarity(encoder) }));
      await index.add(docs, { batchSize: o.batchSize === undefined ? undefined : positiveInteger('options.batchSize', o.batchSize), onProgress: o.onProgress });
      return index;
    }
    const storage = oneOf('options.storage', o.storage ?? 'float32', STORAGES);
    const multi = encoder.multiVector !== undefined;
    const second = o.sparseEncoder === undefined ? undefined : secondSparseModel(encoder, o.sparseEncoder);
    // float32, the default, is taken as saying nothing (the CLI passes it); another storage would not be what the index keeps.
    if (multi && storage !== 'float32') {
      throw invalid('options.storage', "absent with a multi-vector model: its index keeps token vectors only, no pooled vectors to store (tokenStorage sets how the token vectors are kept)", o.storage);
    }
    const late = multi || (o.lateInteraction ?? false);
    const tokenStorage = oneOf('options.tokenStorage', o.tokenStorage ?? 'float16', TOKEN_STORAGES);
    if (o.tokenStorage !== undefined && !late) throw invalid('options.tokenStorage', 'absent: the index keeps no token vectors (give lateInteraction: true, or use a multi-vector model)', o.tokenStorage);
    for (const key of ['residualBits', 'centroids'] as const) {
      if (o[key] !== undefined && tokenStorage !== 'residual') throw invalid(`options.${key}`, "absent: it is for tokenStorage 'residual'", o[key]);
    }
    const bits = o.residualBits ?? 2;
    if (!RESIDUAL_BITS.includes(bits)) throw invalid('options.residualBits', '1, 2 or 4', o.residualBits);
    const centroids = o.centroids === undefined ? undefined : positiveInteger('options.centroids', o.centroids);
    const poolFactor = positiveInteger('options.poolFactor', o.poolFactor ?? 1);
    if (o.poolFactor !== undefined && !late) throw invalid('options.poolFactor', 'absent: the index keeps no token vectors (give lateInteraction: true, or use a multi-vector model)', o.poolFactor);
    const modelPooling = encoder.multiVector?.tokenPooling;
    if (poolFactor > 1 && modelPooling && modelPooling.poolFactor > 1 && modelPooling.tasks.includes('document')) {
      throw invalid('options.poolFactor', `absent: the model pools its documents' token vectors already (a HierarchicalTokenPooling module, pool factor ${modelPooling.poolFactor}), and pooling again would pool them twice`, o.poolFactor);
    }
    const tokens = late ? newTokenStore(encoder.tokenDimension, tokenStorage, bits, centroids) : undefined;
    const index = new Index(
      encoder,
      multi ? undefined : newStore(encoder.dimension, storage),
      tokens,
      storage,
      undefined,
      second && new SparseIndex(second.dimension, { similarity: sparseSimilarity(second) }),
      second,
    );
    index.pooling = poolFactor;
    const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
    const slice = batchSize * 32;
    if (tokens?.kind === 'residual' && Array.isArray(docs) && docs.length > slice) {
      // k-means on documents spread over the whole corpus, not only its first slice (a corpus sorted by topic).
      checkDocs(docs, index.docs);
      const sample = Array.from({ length: slice }, (_, i) => docs[Math.floor((i * docs.length) / slice)].text);
      // Progress counts the sample's documents too: they are embedded once for k-means and again when added.
      const total = slice + docs.length;
      o.onProgress?.(0, total);
      const rows = await index.documentTokens(sample, batchSize, [], o.onProgress && ((done) => o.onProgress!(done, total)));
      await index.trainCentroids(tokens, rows, slice, docs.length);
      await index.add(docs, { batchSize, onProgress: o.onProgress && ((done) => o.onProgress!(slice + done, total)) });
      return index;
    }
    await index.add(docs, { batchSize, onProgress: o.onProgress });
    return index;
  }

  /**
   * Adds documents (ids must be new). Texts are embedded in slices, so token vectors of the whole corpus
   * never sit in memory at once. Each slice is embedded while searches go on, then added while they wait, so a
   * search sees a slice entirely or not at all.
   */
  async add(docs: IndexDoc[], options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
    checkDocs(docs, this.docs);
    await this.insert(docs, false, options);
  }

  /** add() and upsert(): `replace` removes, with each slice, the documents it holds already. */
  private async insert(docs: IndexDoc[], replace: boolean, options: { batchSize?: number; onProgress?: (done: number, total: number) => void }): Promise<void> {
    const batchSize = positiveInteger('options.batchSize', options.batchSize ?? 32);
    this.checkModelUnchanged(replace ? 'upsert documents' : 'add documents');
    const slice = batchSize * 32;
    options.onProgress?.(0, docs.length); // the start, so that a progress bar's rate counts the first slice
    for (let start = 0; start < docs.length; start += slice) {
      const part = ownCopies(docs.slice(start, start + slice), start);
      const texts = part.map((d) => d.text);
      const pooled = this.vectors ? await this.encoder.embed(texts, { normalize: true, batchSize, task: 'document' }) : undefined;
      const sparse = this.sparseModel ? await this.sparseModel.encode(texts, { batchSize, task: 'document' }) : undefined;
      const counts: number[] = [];
      const rows = this.tokens ? await this.documentTokens(texts, batchSize, counts) : undefined;
      await this.lock.write(async () => {
        if (replace) {
          const present = part.filter((d) => this.docs.has(d.id)).map((d) => d.id);
          if (present.length > 0) await this.removeNow(present);
        } else {
          checkDocs(part, this.docs, start); // another add() may have taken an id since
        }
        if (this.vectors && pooled) this.vectors.add(pooled.data);
        if (this.sparseVectors && sparse) await this.sparseVectors.addAll(part.map((d) => d.id), sparse);
        if (this.tokens && rows) {
          try {
            if (this.tokens.kind === 'float16') this.tokens.store.add(rows);
            else {
              if (this.tokens.store.centroids() === 0) await this.trainCentroids(this.tokens, rows, part.length, docs.length);
              await this.tokens.store.add(rows);
            }
          } catch (error) {
            throw fromNative(error);
          }
          for (const count of counts) {
            this.tokenCounts.push(count);
            this.tokenOffsets.push(this.tokenOffsets[this.tokenOffsets.length - 1] + count);
          }
        }
        for (const d of part) {
          this.docs.push(d);
          // Once built (by a lexical search), BM25 follows every change; it numbers documents as the index does.
          this.bm25?.add(d.id, d.text);
        }
        this.filterMatches.clear();
      });
      options.onProgress?.(Math.min(start + slice, docs.length), docs.length);
    }
  }

  /** The token vectors of `texts` embedded as documents, in one array; each text's count pushed onto `counts`. */
  private async documentTokens(texts: string[], batchSize: number, counts: number[] = [], onProgress?: (done: number) => void): Promise<Float32Array> {
    // A multi-vector model's own normalization (sentence-transformers scores its vectors as they come).
    let tokens = await this.encoder.embed(texts, {
      output: 'tokens', normalize: this.vectors ? true : undefined, batchSize, task: 'document', ...(onProgress && { onProgress: (done: number) => onProgress(done) }),
    });
    if (this.pooling > 1) tokens = await poolAll(tokens, this.pooling, PROTECTED_TOKENS);
    for (const m of tokens) counts.push(m.dims[0]);
    return stackRows(tokens);
  }

  /**
   * k-means centroids (seeded) for a residual token store, on the token vectors `rows` of `sampled` documents (at
   * most CENTROID_SAMPLE of them, evenly spaced); their default number is estimated for `total` documents like those.
   */
  private async trainCentroids(tokens: Extract<TokenStore, { kind: 'residual' }>, rows: Float32Array, sampled: number, total: number): Promise<void> {
    const dim = this.encoder.tokenDimension;
    const n = rows.length / dim;
    if (n === 0) return; // no token vectors yet: the next documents train them
    const expected = (n / sampled) * total;
    let sample = rows;
    if (n > CENTROID_SAMPLE) {
      sample = new Float32Array(CENTROID_SAMPLE * dim);
      for (let i = 0; i < CENTROID_SAMPLE; i++) {
        const r = Math.floor((i * n) / CENTROID_SAMPLE);
        sample.set(rows.subarray(r * dim, (r + 1) * dim), i * dim);
      }
    }
    await tokens.store.train(sample, Math.min(tokens.centroids ?? defaultCentroids(expected), sample.length / dim), 42);
  }

  /**
   * Adds documents, replacing those whose ids the index holds already (a replaced document moves to the end of
   * the index's order). A search sees the old document or the new one, never neither.
   */
  async upsert(docs: IndexDoc[], options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
    checkDocs(docs, new Map());
    await this.insert(docs, true, options);
  }

  /** Whether the index holds a document with this id. */
  has(id: string): boolean {
    return this.docs.has(id);
  }

  /** The stored documents with these ids ({ id, text, metadata? }), in the order asked; undefined for an id it does not hold. */
  get(ids: string[]): (IndexDoc | undefined)[] {
    if (!Array.isArray(ids) || !ids.every((id) => typeof id === 'string')) throw invalid('ids', 'an array of document ids (strings)', ids);
    return ids.map((id) => {
      const at = this.docs.position(id);
      return at === undefined ? undefined : withOwnMetadata(this.docs.doc(at));
    });
  }

  /** Removes documents by id (unknown ids are an error). */
  async remove(ids: string[]): Promise<void> {
    if (!Array.isArray(ids) || !ids.every((id) => typeof id === 'string')) throw invalid('ids', 'an array of document ids (strings)', ids);
    // After the searches under way (their hits name rows by position), before those that come later.
    await this.lock.write(async () => this.removeNow(ids));
  }

  private async removeNow(ids: string[]): Promise<void> {
    const drop = new Set(ids);
    const keep = new Uint8Array(this.docs.length).fill(1);
    for (const id of drop) {
      const at = this.docs.position(id);
      if (at === undefined) throw new ColtrastError('INVALID_ARGUMENT', `no document "${id}" in the index`);
      keep[at] = 0;
    }
    await this.vectors?.remove(keep);
    await this.sparseVectors?.retain(keep);
    if (this.tokens) {
      const keepTokens = new Uint8Array(this.tokenOffsets[this.tokenOffsets.length - 1]);
      for (let i = 0; i < keep.length; i++) keepTokens.fill(keep[i], this.tokenOffsets[i], this.tokenOffsets[i + 1]);
      await this.tokens.store.remove(keepTokens);
      this.tokenCounts = this.tokenCounts.filter((_, i) => keep[i]);
      this.tokenOffsets = [0];
      for (const c of this.tokenCounts) this.tokenOffsets.push(this.tokenOffsets[this.tokenOffsets.length - 1] + c);
    }
    await this.docs.retain(keep);
    await this.bm25?.remove(keep);
    this.filterMatches.clear();
  }

  /** The k best documents for each query. */
  async search(queries: string[], options?: SearchOptions): Promise<Hit[][]> {
    // Searches run side by side; add(), upsert() and remove() wait for them, and they for those.
    return this.lock.read(() => this.searchNow(queries, options));
  }

  /**
   * @internal Tokenizes `queries` as search() with these options embeds them (its pooled vectors, its token vectors,
   * both or neither: BM25 embeds none), for searchPrepared() to search later: the server's /search requests are
   * tokenized as they arrive, before their batch queue. `signal` aborted, the queries not yet sent to the tokenizer
   * never are, and it rejects ABORTED.
   */
  async prepareQueries(queries: string[], options?: Pick<SearchOptions, 'mode' | 'rerank' | 'mmrLambda'>, signal?: AbortSignal): Promise<PreparedQuery[]> {
    if (!Array.isArray(queries) || queries.some((q) => typeof q !== 'string')) throw invalid('queries', 'an array of strings', queries);
    const { pooled, tokens } = this.queryEmbeddings(options?.mode ?? 'dense', options?.rerank ?? 'none', options?.mmrLambda !== undefined);
    const vectors = pooled ? await this.encoder.prepare(queries, { ...POOLED_QUERIES, signal }) : undefined;
    const states = tokens ? await this.encoder.prepare(queries, { ...QUERY_TOKENS, signal }) : undefined;
    return queries.map((text, i) => ({ text, pooled: vectors?.[i], tokens: states?.[i] }));
  }

  /** @internal search() of queries tokenized ahead by prepareQueries() (with the options of the search): the same hits. */
  async searchPrepared(prepared: PreparedQuery[], options?: SearchOptions): Promise<Hit[][]> {
    if (!Array.isArray(prepared) || prepared.some((p) => typeof p?.text !== 'string')) throw invalid('prepared', 'the queries prepareQueries() gave', prepared);
    return this.lock.read(() => this.searchNow(prepared.map((p) => p.text), options, prepared));
  }

  /** Which of the queries' embeddings a search embeds: pooled vectors (a single-vector index's dense stage, MMR), token vectors (a multi-vector index's first stage, MaxSim re-ranking). */
  private queryEmbeddings(mode: SearchOptions['mode'], rerank: SearchOptions['rerank'], mmr: boolean): { pooled: boolean; tokens: boolean } {
    return {
      pooled: this.vectors !== undefined && ((mode !== 'bm25' && mode !== 'sparse') || mmr),
      tokens: (mode !== 'bm25' && this.multiVector) || (rerank === 'maxsim' && this.vectors !== undefined && this.tokens !== undefined),
    };
  }

  /**
   * The queries' vectors as search() embeds them (POOLED_QUERIES, or QUERY_TOKENS normalized or not): of their
   * tokens prepared ahead where `prepared` has them all (prepareQueries), else of their texts; the same either way.
   */
  private async queryVectors(queries: string[], prepared: PreparedQuery[] | undefined, output: 'pooled'): Promise<Matrix>;
  private async queryVectors(queries: string[], prepared: PreparedQuery[] | undefined, output: 'tokens', normalize?: boolean): Promise<Matrix[]>;
  private async queryVectors(queries: string[], prepared: PreparedQuery[] | undefined, output: 'pooled' | 'tokens', normalize?: boolean): Promise<Matrix | Matrix[]> {
    const options = output === 'pooled' ? POOLED_QUERIES : { ...QUERY_TOKENS, ...(normalize && { normalize }) };
    const ready = prepared?.map((p) => p[output]);
    const whole = ready?.every((p): p is PreparedText => p !== undefined) ? { prepared: ready as PreparedText[] } : queries;
    return (await this.encoder.embedCounting(whole, options)).result;
  }

  private async searchNow(queries: string[], options?: SearchOptions, prepared?: PreparedQuery[]): Promise<Hit[][]> {
    const o = checkOptions('options', options, SEARCH_KEYS);
    if (!Array.isArray(queries) || queries.some((q) => typeof q !== 'string')) throw invalid('queries', 'an array of strings', queries);
    const k = positiveInteger('options.k', o.k ?? 10);
    const asked = oneOf('options.mode', o.mode ?? 'dense', ['dense', 'bm25', 'hybrid', 'sparse'] as const);
    if (asked === 'sparse' && !this.sparseVectors) throw new ColtrastError('INVALID_ARGUMENT', "options.mode 'sparse' searches a sparse encoder's vectors, and this index holds an embedding model's only: 'dense', 'bm25' or 'hybrid' (or build it with { sparseEncoder })");
    // Mode 'sparse' is the first stage of a sparse encoder's index; with a second, sparse model, its ranking takes the
    // dense ranking's place ('sparse') or BM25's ('hybrid').
    const mode = asked === 'sparse' ? 'dense' : asked;
    let sparseStage: 'first' | 'lexical' | undefined;
    if (this.sparseVectors && mode !== 'bm25') sparseStage = this.sparse || asked === 'sparse' ? 'first' : mode === 'hybrid' ? 'lexical' : undefined;
    if (mode !== 'bm25') this.checkModelUnchanged('search');
    const rerank = o.rerank instanceof CrossEncoder ? o.rerank : oneOf('options.rerank', o.rerank ?? 'none', ['none', 'maxsim'] as const);
    if (rerank === 'maxsim' && !this.tokens) throw new ColtrastError('INVALID_ARGUMENT', "rerank 'maxsim' needs an index built with { lateInteraction: true }");
    // At least k, as fullScores: fewer candidates would return fewer than k hits where k documents match.
    const candidates = Math.max(k, positiveInteger('options.candidates', o.candidates ?? Math.max(100, k)));
    const weight = numberValue('options.hybridWeight', o.hybridWeight ?? 0.5, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
    const fusion = oneOf('options.fusion', o.fusion ?? 'rrf', FUSIONS);
    if (o.rescoreMultiplier !== undefined && this.storage !== 'binary') {
      throw new ColtrastError('INVALID_ARGUMENT', `options.rescoreMultiplier is for an index with binary storage; this one stores ${this.storage} vectors`);
    }
    const multiplier = positiveInteger('options.rescoreMultiplier', o.rescoreMultiplier ?? 4);
    for (const key of ['nprobe', 'fullScores'] as const) {
      if (o[key] !== undefined && (this.vectors || this.tokens?.kind !== 'residual')) {
        throw new ColtrastError('INVALID_ARGUMENT', `options.${key} is for a multi-vector index with residual token storage (PLAID search); this one ${this.vectors ? 'ranks by its pooled vectors' : 'searches exactly'}`);
      }
    }
    const nprobe = positiveInteger('options.nprobe', o.nprobe ?? 1);
    const fullScores = o.fullScores === undefined ? undefined : positiveInteger('options.fullScores', o.fullScores);
    const mmr = o.mmrLambda === undefined ? undefined : numberValue('options.mmrLambda', o.mmrLambda, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
    if (mmr !== undefined && !this.vectors) throw new ColtrastError('INVALID_ARGUMENT', `options.mmrLambda compares pooled vectors, and ${this.sparse ? "a sparse encoder's" : 'a multi-vector'} index has none`);
    // The first stage keeps k hits when nothing after it needs more.
    const firstK = (m: typeof mode) => (mode === m && rerank === 'none' && mmr === undefined ? k : candidates);
    const allow = o.filter === undefined ? undefined : await this.filterMask(o.filter);
    if (queries.length === 0 || this.docs.length === 0 || (allow && !allow.includes(1))) return queries.map(() => []);

    // The JavaScript work between and after the stages, a query (or an MMR pick) at a time, lets the event loop run.
    const turn = new Turns();
    let dense: { doc: number; score: number }[][] = queries.map(() => []);
    let lexical: { doc: number; score: number }[][] = queries.map(() => []);
    if (sparseStage) {
      const vectors = await this.sparseModel!.encode(queries, { task: 'query' });
      const ranked = sparseStage === 'first' ? dense : lexical;
      // Each query scored in turns (a query over a million documents took 50 ms in one).
      for (let i = 0; i < queries.length; i++) ranked[i] = await this.sparseVectors!.rowsInTurns(vectors[i], firstK('dense'), allow, turn);
    }
    if (mode !== 'bm25' && this.multiVector) {
      const wanted = firstK('dense');
      // At least the hits wanted are scored fully: fewer would return fewer than k hits.
      dense = await this.maxsimSearch(queries, prepared, wanted, { nprobe, fullScores: Math.max(fullScores ?? Math.max(256, 4 * wanted), wanted) }, allow);
    }
    let q: Matrix | undefined; // the queries' pooled vectors, normalized
    if (mode !== 'bm25' && this.vectors && sparseStage !== 'first') {
      q = await this.queryVectors(queries, prepared, 'pooled');
      dense = await this.denseSearch(q, firstK('dense'), multiplier, allow, turn);
    }
    if (mode !== 'dense' && sparseStage !== 'lexical') {
      // Built at the first lexical search, once for searches that come meanwhile (writes wait for searches, so the
      // documents stay as they are while it builds), then kept current by add, upsert and remove.
      this.bm25Build ??= (async () => {
        const built = new Bm25Index();
        const docs = this.docs;
        await built.addAll((function* () {
          for (let i = 0; i < docs.length; i++) yield { id: docs.id(i), text: docs.text(i) };
        })());
        return (this.bm25 = built);
      })();
      const bm25 = await this.bm25Build;
      const found = await bm25.searchAll(queries, firstK('bm25'), allow);
      lexical = [];
      for (const hits of found) {
        lexical.push(hits.map((h) => ({ doc: this.docs.position(h.id)!, score: h.score })));
        await turn.maybe();
      }
    }
    let ranked = mode === 'dense' ? dense : lexical;
    if (mode === 'hybrid') {
      // A query at a time, letting the event loop run between them (256 queries of 1000 candidates took ~250 ms in one go).
      ranked = [];
      for (let i = 0; i < queries.length; i++) {
        ranked.push(fuseRankings(dense[i], lexical[i], (h) => h.doc, { fusion, weight, rrfK: 60 }, (a, b) => a - b).map(({ key, score }) => ({ doc: key, score })));
        await turn.maybe();
      }
    }
    // A multi-vector index ranks by MaxSim in the first stage already (and fusion keeps ranks only).
    if (rerank === 'maxsim' && this.vectors) ranked = await this.rerank(queries, prepared, ranked);
    if (rerank instanceof CrossEncoder) {
      const reranked = await rerankCandidates(rerank, queries, ranked.map((hits) => hits.slice(0, candidates)), (h) => this.docs.text(h.doc));
      ranked = reranked.map((hits) => hits.map(({ item, score }) => ({ doc: item.doc, score })));
    }
    if (mmr !== undefined) {
      q ??= await this.queryVectors(queries, prepared, 'pooled');
      const vectors = new CandidateVectors(this.vectors!, q.dims[1]);
      const picked: { doc: number; score: number }[][] = [];
      for (let i = 0; i < ranked.length; i++) {
        picked.push(await marginalRelevance(q.data.subarray(i * q.dims[1], (i + 1) * q.dims[1]), ranked[i].slice(0, candidates), k, mmr, vectors, turn));
      }
      ranked = picked;
    }
    const out: Hit[][] = [];
    for (const hits of ranked) {
      out.push(hits.slice(0, k).map(({ doc, score }) => withOwnMetadata({ id: this.docs.id(doc), score, text: this.docs.text(doc), ...(this.docs.metadata(doc) ? { metadata: this.docs.metadata(doc) } : {}) })));
      await turn.maybe();
    }
    return out;
  }

  /**
   * The dense store's `k` best rows for each query, ties by position (as topIndices ranks a multi-vector index's): the
   * store's top k (torch's topk) orders equal scores as it meets them and keeps any of those tied at the k-th place, so
   * that documents of one text came back in another order, and another set, after a save and load or a removal. Each
   * query asks for one row more than it keeps; where that row ties the k-th, it asks again for twice as many, until the
   * tie ends or every row it may find is in. Binary storage breaks ties by row already (and more rows would rescore
   * more candidates).
   */
  private async denseSearch(q: Matrix, k: number, multiplier: number, allow: Uint8Array | undefined, turn: Turns): Promise<{ doc: number; score: number }[][]> {
    const [count, dim] = q.dims;
    const out: { doc: number; score: number }[][] = new Array(count);
    let pending = Array.from({ length: count }, (_, i) => i);
    for (let wanted = this.storage === 'binary' ? k : k + 1; pending.length > 0; wanted *= 2) {
      const data = pending.length === count ? q.data : new Float32Array(pending.length * dim);
      if (data !== q.data) pending.forEach((query, b) => data.set(q.data.subarray(query * dim, (query + 1) * dim), b * dim));
      let r: { scores: Float32Array; indices: Int32Array; k: number };
      try {
        r = await this.vectors!.search(data, wanted, multiplier, allow);
      } catch (error) {
        throw fromNative(error);
      }
      const tied: number[] = [];
      for (let b = 0; b < pending.length; b++) {
        const hits = rankedHits(r, b);
        // `wanted` rows came back (there may be more) and the one past the k-th ties it: ask for more.
        if (this.storage !== 'binary' && hits.length === wanted && hits[k].score === hits[k - 1].score) tied.push(pending[b]);
        else out[pending[b]] = hits.sort((x, y) => y.score - x.score || x.doc - y.doc).slice(0, k);
        await turn.maybe();
      }
      pending = tied;
    }
    return out;
  }

  /**
   * One flag per document, 1 where `filter` matches it. Evaluated in slices that yield to the event loop between
   * them; a query object's flags are kept by its filterKey (16 of them) until the documents change.
   */
  private async filterMask(filter: unknown): Promise<Uint8Array> {
    const test = compileFilter<IndexDoc>('options.filter', filter);
    // Not JSON.stringify(filter): it writes /a/ and /b/ alike, as {} (filterKey).
    const key = filterKey(filter);
    const kept = key === undefined ? undefined : this.filterMatches.get(key);
    if (kept) return kept;
    const docs = this.docs;
    const changes = docs.changes;
    const fields = filterFields(filter);
    const mask = new Uint8Array(docs.length);
    const SLICE = 16384;
    for (let start = 0; start < docs.length; start += SLICE) {
      if (start > 0) await nextTurn();
      if (docs.changes !== changes) throw new ColtrastError('INVALID_ARGUMENT', 'documents were added or removed while a search was filtering them; search again');
      for (let i = start; i < Math.min(docs.length, start + SLICE); i++) {
        let match: unknown;
        try {
          match = test(docs.view(i, fields) as IndexDoc);
        } catch (error) {
          throw new ColtrastError('INVALID_ARGUMENT', `options.filter failed on document "${docs.id(i)}": ${(error as Error).message}`);
        }
        mask[i] = match ? 1 : 0;
      }
    }
    if (key !== undefined) {
      if (this.filterMatches.size >= 16) this.filterMatches.delete(this.filterMatches.keys().next().value!);
      this.filterMatches.set(key, mask);
    }
    return mask;
  }

  /** Late-interaction second stage: MaxSim of the query's tokens against each candidate's tokens. */
  private async rerank(queries: string[], prepared: PreparedQuery[] | undefined, candidates: { doc: number; score: number }[][]): Promise<{ doc: number; score: number }[][]> {
    const dim = this.encoder.tokenDimension;
    const queryTokens = await this.queryVectors(queries, prepared, 'tokens', true);
    const out: { doc: number; score: number }[][] = [];
    for (let i = 0; i < queries.length; i++) {
      const docs = candidates[i].map((c) => c.doc);
      if (docs.length === 0) {
        out.push([]);
        continue;
      }
      const d = this.storedTokens(docs);
      const q = queryTokens[i];
      const r = await maxsim(
        { dims: [1, q.dims[0], dim], data: q.data },
        { dims: [1, q.dims[0]], data: new Uint8Array(q.dims[0]).fill(1) },
        d.tokens,
        d.mask,
        { normalize: true, device: maxsimDevice(this.encoder) },
      );
      out.push(docs.map((doc, n) => ({ doc, score: r.value[n] })).sort((a, b) => b.score - a.score || a.doc - b.doc));
    }
    return out;
  }

  /** The stored token vectors of `docs`, right-padded to the longest, with their mask (maxsim()'s layout). */
  private storedTokens(docs: number[]): { tokens: Tensor; mask: Mask } {
    const dim = this.encoder.tokenDimension;
    return padTokens(
      docs.map((doc) => {
        const count = this.tokenCounts[doc];
        return { dims: [count, dim], data: count > 0 ? this.tokens!.store.rows(this.tokenOffsets[doc], count) : new Float32Array(0) };
      }),
      dim,
    );
  }

  /**
   * A multi-vector model's first stage, keeping the `k` best per query: exact MaxSim of every query against every
   * document (the fused op, in blocks of documents, queries in groups), or PLAID's search of a residual store.
   * Scores are sentence-transformers' (MaxSim, or divided by the query's token count for 'meanmaxsim').
   */
  private async maxsimSearch(queries: string[], prepared: PreparedQuery[] | undefined, k: number, plaid: { nprobe: number; fullScores: number }, allow?: Uint8Array): Promise<{ doc: number; score: number }[][]> {
    const out: { doc: number; score: number }[][] = [];
    const scope: MaxsimScope = {};
    for (let q0 = 0; q0 < queries.length; q0 += MAXSIM_QUERY_GROUP) {
      const group = await this.queryVectors(queries.slice(q0, q0 + MAXSIM_QUERY_GROUP), prepared?.slice(q0, q0 + MAXSIM_QUERY_GROUP), 'tokens');
      out.push(...(await this.maxsimGroup(group, k, plaid, scope, allow)));
    }
    return out;
  }

  /**
   * @internal maxsimSearch for queries' token vectors embedded already (mining embeds them with its own prompts), in
   * groups; `onGroup` after each with the queries done.
   */
  async searchQueryTokens(queries: Matrix[], k: number, plaid: { nprobe: number; fullScores: number }, onGroup?: (done: number) => void): Promise<{ doc: number; score: number }[][]> {
    if (!this.tokens || this.vectors) throw new ColtrastError('INVALID_ARGUMENT', 'searchQueryTokens needs a multi-vector index');
    const out: { doc: number; score: number }[][] = [];
    const scope: MaxsimScope = {};
    for (let q0 = 0; q0 < queries.length; q0 += MAXSIM_QUERY_GROUP) {
      out.push(...(await this.maxsimGroup(queries.slice(q0, q0 + MAXSIM_QUERY_GROUP), k, plaid, scope)));
      onGroup?.(Math.min(queries.length, q0 + MAXSIM_QUERY_GROUP));
    }
    return out;
  }

  /**
   * @internal Each query's exact MaxSim (sentence-transformers' score, as maxsimSearch's) against each of its
   * `docs[i]` (positions), over the token vectors as the index keeps them (a residual store's decoded): the scores a
   * search gives those documents when it scores them fully.
   */
  async scoreQueryTokens(queries: Matrix[], docs: number[][]): Promise<number[][]> {
    if (!this.tokens || this.vectors) throw new ColtrastError('INVALID_ARGUMENT', 'scoreQueryTokens needs a multi-vector index');
    const out: number[][] = [];
    for (let i = 0; i < queries.length; i++) {
      const [row] = docs[i].length === 0 ? [new Float32Array(0)] : await exactMaxSim(this.encoder, [queries[i]], docs[i], (doc) => this.tokenCounts[doc], (ds) => this.storedTokens(ds));
      out.push(Array.from(row));
    }
    return out;
  }

  /** One group of queries' token vectors through maxsimSearch's first stage; `scope` keeps what the groups share. */
  private async maxsimGroup(group: Matrix[], k: number, plaid: { nprobe: number; fullScores: number }, scope: MaxsimScope, allow?: Uint8Array): Promise<{ doc: number; score: number }[][]> {
    const normalize = this.encoder.multiVector?.similarity === 'meanmaxsim';
    if (this.tokens!.kind === 'residual') {
      let r: { scores: Float32Array; indices: Int32Array; k: number };
      try {
        scope.counts ??= Int32Array.from(this.tokenCounts);
        r = await this.tokens!.store.search(stackRows(group), Int32Array.from(group, (m) => m.dims[0]), scope.counts, k, plaid.nprobe, plaid.fullScores, normalize, allow);
      } catch (error) {
        throw fromNative(error);
      }
      return group.map((_, b) => rankedHits(r, b));
    }
    // The documents scored (a filter's, or all), in order; scores[b][i] is query b's score of findable[i].
    const scored = (scope.findable ??= allow ? allow.reduce<number[]>((docs, flag, doc) => (flag ? (docs.push(doc), docs) : docs), []) : Array.from({ length: this.docs.length }, (_, i) => i));
    const scores = await exactMaxSim(this.encoder, group, scored, (doc) => this.tokenCounts[doc], (docs) => this.storedTokens(docs));
    return scores.map((row) => topIndices(row, k).map((i) => ({ doc: scored[i], score: row[i] })));
  }

  /** Writes the index folder (see the file comment); `dir` appears complete or not at all. */
  async save(dir: string, options?: { overwrite?: boolean }): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
    const o = checkOptions('options', options, ['overwrite']);
    const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
    await this.lock.read(() => this.saveNow(dir, { overwrite }));
  }

  private async saveNow(dir: string, options: { overwrite: boolean }): Promise<void> {
    if (options.overwrite) checkIndexFolder(dir, 'the folder to save to');
    const modelFingerprint = (this.modelFingerprint ??= await fingerprint(this.model, FINGERPRINT_VERSION, this.modelChanges));
    const second = this.secondModel;
    const secondFingerprint = second && (this.secondFingerprint ??= await fingerprint(second, FINGERPRINT_VERSION, undefined));
    const truncateDim = this.model instanceof Encoder ? this.model.truncateDim : undefined;
    await writeFolderAtomic(path.resolve(dir), options.overwrite, async (staging) => {
      const manifest: IndexManifest = {
        format: 'coltrast-index',
        version: 1,
        model: {
          fingerprint: modelFingerprint,
          fingerprintVersion: FINGERPRINT_VERSION,
          dimension: this.model.dimension,
          source: this.model.modelDir,
          ...(truncateDim === undefined ? {} : { truncateDim }),
          ...(this.modelChanges && { changedInMemory: this.modelChanges.changes }),
          ...(this.model.dtype !== 'float32' && { dtype: this.model.dtype }),
          ...(this.model.quantize && { quantize: this.model.quantize }),
        },
        storage: this.storage,
        lateInteraction: this.lateInteraction,
        ...(this.tokens?.kind === 'residual' ? { tokenStorage: 'residual', residualBits: this.tokens.bits } : {}),
        ...(this.pooling > 1 ? { tokenPooling: { poolFactor: this.pooling, protectedTokens: PROTECTED_TOKENS } } : {}),
        multiVector: this.multiVector,
        ...(this.sparse && { sparse: true }),
        ...(second && {
          sparseEncoder: {
            fingerprint: secondFingerprint!,
            fingerprintVersion: FINGERPRINT_VERSION,
            dimension: second.dimension,
            source: second.modelDir,
            ...(second.dtype !== 'float32' && { dtype: second.dtype }),
            ...(second.quantize && { quantize: second.quantize }),
          },
        }),
        documents: this.docs.length,
        ...(this.tokens ? { tokenCounts: tokenCountsDigest(this.tokenCounts) } : {}),
      };
      const tokens = this.tokens ? this.tokenCounts : undefined;
      // The ids are digested as docs.jsonl is written (decoded once, a slice at a time), and index.json written after
      // it: the staging folder is renamed into place only once both are there.
      const ids = new IdsDigest();
      await writeJsonLinesAtomic(path.join(staging, 'docs.jsonl'), (function* (index) {
        for (let i = 0; i < index.docs.length; i++) {
          const doc = index.docs.doc(i);
          ids.add(doc.id);
          yield tokens ? { ...doc, tokens: tokens[i] } : doc;
        }
      })(this));
      writeJsonAtomic(path.join(staging, 'index.json'), { ...manifest, ids: ids.digest() });
      try {
        if (this.vectors) await this.vectors.save(path.join(staging, 'vectors.safetensors'));
        if (this.sparseVectors) await this.sparseVectors.save(path.join(staging, 'sparse.bin'));
        if (this.tokens) await this.tokens.store.save(path.join(staging, 'tokens.safetensors'));
      } catch (error) {
        throw fromNative(error);
      }
    });
  }

  /**
   * How to load the models that built the index at `dir`, as its index.json records them: the model's folder,
   * truncateDim, dtype and quantize, and a second, sparse model's folder, dtype and quantize.
   */
  static modelOptions(dir: string): BuiltModelOptions {
    try {
      return builtModelOptions(JSON.parse(fs.readFileSync(path.join(path.resolve(dir), 'index.json'), 'utf8')));
    } catch {
      return {};
    }
  }

  /**
   * Loads an index folder written by save(); `encoder` must be the model that built it. `mmap: true` maps
   * vectors.safetensors and float16 tokens.safetensors instead of reading them: loading takes no time and no heap,
   * the pages load as searches touch them and stay in the operating system's page cache (shared by processes that
   * map the same files), so an index larger than free memory still searches, from disk. The first add() or
   * remove() copies the store into memory. save() writes a new folder and renames it into place, so saving over a
   * mapped index is safe; do not change the files any other way while they are mapped. An index built with a second,
   * sparse model (BuildOptions.sparseEncoder) needs that model as `sparseEncoder`.
   */
  static async load(dir: string, encoder: Encoder | SparseEncoder, options: { mmap?: boolean; sparseEncoder?: SparseEncoder } = {}): Promise<Index> {
    if (typeof dir !== 'string') throw invalid('dir', "an index folder's path: Index.load(dir, encoder, options?)", dir);
    checkEncoder(encoder, 'Index.load(dir, encoder, options?)');
    const o = checkOptions('options', options, ['mmap', 'sparseEncoder']);
    const map = o.mmap === undefined ? false : booleanValue('options.mmap', o.mmap);
    const where = path.resolve(dir);
    const bad = (message: string) => indexDamaged(where, message);
    const manifest = readIndexManifest(where);
    // A *ForMaskedLM folder loads both ways, with one fingerprint: the kind of model is checked first.
    const sparse = encoder instanceof SparseEncoder;
    if ((manifest.sparse ?? false) !== sparse) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        manifest.sparse
          ? `index ${where} holds a sparse (SPLADE) encoder's vectors: load its model with SparseEncoder.load, not Encoder.load`
          : `index ${where} holds an embedding model's vectors, not a sparse encoder's: load its model with Encoder.load, not SparseEncoder.load`,
      );
    }
    const fingerprintVersion = manifest.model?.fingerprintVersion ?? 1;
    if (fingerprintVersion !== 1 && fingerprintVersion !== FINGERPRINT_VERSION) {
      throw bad(`index.json says fingerprintVersion ${JSON.stringify(fingerprintVersion)}, which this version of coltrast does not know (1 or ${FINGERPRINT_VERSION}); a newer one wrote it`);
    }
    if (manifest.model?.fingerprint !== (await fingerprint(encoder, fingerprintVersion, memoryChangesOf(encoder)))) {
      const changes = manifest.model?.changedInMemory;
      if (Array.isArray(changes)) {
        const from = typeof manifest.model.source === 'string' ? ` after it was loaded from ${manifest.model.source}` : '';
        throw new ColtrastError(
          'INVALID_ARGUMENT',
          `index ${where} was built with a model changed in memory (${changes.join(', ')})${from}: only that Encoder, changed no further, makes its ` +
            `vectors, not the model of ${encoder.modelDir} nor any other loaded from a folder. Save the changed model (encoder.save(dir)), load it from ` +
            'that folder and rebuild the index with it; then that folder opens the index',
        );
      }
      const memory = memoryChangesOf(encoder);
      if (memory) {
        throw new ColtrastError(
          'INVALID_ARGUMENT',
          `index ${where} was not built with this Encoder as it is now: it was changed in memory (${memory.changes.join(', ')}) since it was loaded from ${encoder.modelDir}, ` +
            'and makes other vectors. Load the index with the model as it was loaded (Encoder.load of that folder), or rebuild the index with this one',
        );
      }
      const built = typeof manifest.model?.source === 'string' ? ` (index.json says it was loaded from ${manifest.model.source})` : '';
      const parts = fingerprintVersion === 1 ? 'config.json or weights' : 'weights, LoRA adapter, layers run (Encoder.load\'s layers), modules (pooling, Dense head, projection), tokenizer or prompts';
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `index ${where} was built with another model${built}: the ${parts} of ${encoder.modelDir} differ from that model's; load the index with the model that built it, or rebuild the index with this one`,
      );
    }
    if (manifest.model.dimension !== encoder.dimension) {
      const cut = manifest.model.truncateDim;
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `index ${where} holds vectors of width ${manifest.model.dimension} and the model gives ${encoder.dimension}: ` +
          (cut !== undefined ? `load the model with { truncateDim: ${cut} } (--truncate-dim ${cut}), as the index was built` : 'load the model without truncateDim, as the index was built'),
      );
    }
    const second = await checkSecondModel(where, manifest, encoder, o.sparseEncoder);
    const multi = encoder instanceof Encoder && encoder.multiVector !== undefined;
    if ((manifest.multiVector ?? false) !== multi || (multi && !manifest.lateInteraction)) throw bad(`index.json says multiVector ${manifest.multiVector ?? false}, but the model is ${multi ? '' : 'not '}multi-vector`);
    if (sparse && (manifest.lateInteraction || manifest.tokenPooling !== undefined)) throw bad("index.json says a sparse encoder's index keeps token vectors, which it never does");
    const tokenStorage = manifest.tokenStorage ?? 'float16';
    const tokens = encoder instanceof Encoder && manifest.lateInteraction ? newTokenStore(encoder.tokenDimension, tokenStorage, manifest.residualBits ?? 2) : undefined;
    const index = new Index(
      encoder,
      multi || sparse ? undefined : newStore(encoder.dimension, manifest.storage),
      tokens,
      manifest.storage,
      fingerprintVersion === FINGERPRINT_VERSION ? manifest.model.fingerprint : undefined,
      sparse ? await readSparseVectors(where, encoder) : second ? await readSparseVectors(where, second) : undefined,
      second,
    );
    index.secondFingerprint = second && manifest.sparseEncoder!.fingerprint;
    if (manifest.tokenPooling !== undefined) {
      const { poolFactor, protectedTokens } = manifest.tokenPooling;
      if (!manifest.lateInteraction || !Number.isInteger(poolFactor) || poolFactor < 1 || protectedTokens !== PROTECTED_TOKENS) {
        throw bad(`index.json says tokenPooling ${JSON.stringify(manifest.tokenPooling)}: a positive integer poolFactor and protectedTokens ${PROTECTED_TOKENS}, with token vectors, are what this version reads`);
      }
      index.pooling = poolFactor;
    }
    const docsFile = path.join(where, 'docs.jsonl');
    if (!fs.existsSync(docsFile)) throw bad('docs.jsonl is missing');
    const docsBytes = fs.statSync(docsFile).size;
    // The texts take at most the file's bytes (JSON only adds to them): one allocation, not one per doubling. Room for
    // no more documents than the file can hold ({"id":"x","text":""} and a newline): a damaged count of billions
    // would reserve gigabytes before the count check below refuses it.
    index.docs = new DocStore({ docs: Math.min(manifest.documents, Math.ceil(docsBytes / 21)), textBytes: docsBytes });
    const reader = new IndexDocsReader(where, { positionOf: (id) => index.docs.position(id) });
    let i = -1;
    for await (const lines of fileLines(docsFile)) for (const line of lines) {
      i++;
      const doc = reader.read(line, i + 1);
      if (!doc) continue;
      if (index.tokens) {
        if (!Number.isInteger(doc.tokens) || doc.tokens! < 0) throw bad(`docs.jsonl:${i + 1} needs a token count`);
        index.tokenCounts.push(doc.tokens!);
        index.tokenOffsets.push(index.tokenOffsets[index.tokenOffsets.length - 1] + doc.tokens!);
      }
      if (hasLoneSurrogate(doc.id)) throw bad(`docs.jsonl:${i + 1}: the id holds a lone surrogate, which this version keeps as UTF-8 and could not find again; rebuild the index with well-formed ids`);
      index.docs.push(doc);
    }
    // The count, then the ids in order (lines moved whole), where index.json has their digest.
    reader.finish(manifest);
    // The sum of the counts is checked against tokens.safetensors below; counts moved between documents are not,
    // without the digest (indexes saved before it existed have none).
    if (index.tokens && manifest.tokenCounts !== undefined && tokenCountsDigest(index.tokenCounts) !== manifest.tokenCounts) {
      throw bad(`the token counts in docs.jsonl are not those the index was saved with (index.json's tokenCounts digest differs): documents would be given other documents' token vectors; ${SAVE_AGAIN}`);
    }
    if (index.vectors) checkIndexTensors(where, 'vectors.safetensors', vectorTensors(manifest.storage, encoder.dimension), `storage ${manifest.storage}`);
    if (index.tokens) checkIndexTensors(where, 'tokens.safetensors', tokenTensors(tokenStorage, (encoder as Encoder).tokenDimension), `tokenStorage ${tokenStorage}`);
    if (index.sparseVectors) {
      const vectors = index.sparseVectors;
      if (vectors.size !== index.docs.length) throw bad(`sparse.bin holds ${vectors.size} documents' vectors and docs.jsonl ${index.docs.length} documents; ${SAVE_AGAIN}`);
      for (let i = 0; i < vectors.size; i++) {
        if (vectors.idAt(i) !== index.docs.id(i)) throw bad(`sparse.bin's document ${i + 1} is "${vectors.idAt(i)}" and docs.jsonl's "${index.docs.id(i)}": documents would be given other documents' vectors; ${SAVE_AGAIN}`);
        if (i % 65536 === 65535) await nextTurn();
      }
    }
    try {
      if (index.vectors && (await index.vectors.load(path.join(where, 'vectors.safetensors'), map)) !== index.docs.length) throw bad('vectors.safetensors does not have one row per document');
      const tokenRows = index.tokens && (index.tokens.kind === 'float16' ? await index.tokens.store.load(path.join(where, 'tokens.safetensors'), map) : await index.tokens.store.load(path.join(where, 'tokens.safetensors')));
      if (index.tokens && tokenRows !== index.tokenOffsets[index.tokenOffsets.length - 1]) {
        throw bad('tokens.safetensors does not match the token counts in docs.jsonl');
      }
    } catch (error) {
      if (error instanceof ColtrastError) throw error;
      throw indexDamaged(where, fromNative(error).message, { cause: error });
    }
    return index;
  }
}
