/**
 * `SparseIndex`: exact search over sparse vectors (a SparseEncoder's) with an inverted index: for each vocabulary entry,
 * the documents whose vector has it and their weight there. A query walks the postings of its own non-zero entries
 * only, adding query weight × document weight into one array of scores, and keeps its k best in a heap (lib/top-k.ts):
 * the documents sharing no entry with the query cost nothing. Postings live in typed arrays, outside Node's heap.
 */
import fs from 'node:fs';
import { IdStore } from './doc-store';
import { ColtrastError } from './errors';
import { atomicOutput } from './files';
import { checkVector, checkVectors, type SparseVector } from './sparse-encoder';
import { TopKHeap } from './top-k';
import { Turns, inTurns } from './turns';
import { invalid, numberValue, oneOf, positiveInteger } from './validate';

/** One hit: a document's id and its score (the dot product of the two vectors, or their cosine). */
export interface SparseHit {
  id: string;
  score: number;
}

export interface SparseIndexOptions {
  /**
   * 'dot' (default: a SparseEncoder's similarity) or 'cosine' (each vector scaled to unit length as it is added or
   * searched): the model's `similarityFunction`.
   */
  similarity?: 'dot' | 'cosine';
}

/** A search's scratch arrays (SparseIndex.finding). */
interface Scratch {
  scores: Float64Array;
  met: Uint32Array;
  /** The documents a search met, in the order it met them. */
  touched: Int32Array;
  searches: number;
}

/** Postings a search scores between its pauses (about 2 ms of work). */
const POSTINGS_A_TURN = 1 << 18;
/** Documents a search's top-k selection looks at before it pauses (a heap's work per document is more than a posting's). */
const SELECTED_A_TURN = 1 << 16;

const byNumber = (a: number, b: number) => a < b;
const hitByNumber = (doc: number, score: number) => ({ doc, score });

/**
 * Adds `w` × the weights of postings [start, end) into `scratch`'s scores (documents below `n` that `allow` flags), each
 * document met for the first time by `search` appended to `scratch.touched` after the `count` already there; returns
 * the new count. A function of its own rather than the generator's body, whose loops V8 may compile less well.
 */
function scorePostings(
  docs: Int32Array, weights: Float32Array, start: number, end: number, w: number, n: number, allow: Uint8Array | undefined, scratch: Scratch, search: number, count: number,
): number {
  const { scores, met, touched } = scratch;
  for (let i = start; i < end; i++) {
    const doc = docs[i];
    if (doc >= n || (allow && !allow[doc])) continue;
    if (met[doc] !== search) {
      // Its first product this search sets its score: no search leaves the scores to clear (a million random writes).
      met[doc] = search;
      touched[count++] = doc;
      scores[doc] = w * weights[i];
    } else {
      scores[doc] += w * weights[i];
    }
  }
  return count;
}

/** A search generator run to its end at once. */
function drain<T>(search: Generator<void, T>): T {
  for (;;) {
    const r = search.next();
    if (r.done) return r.value;
  }
}

/** A search generator run to its end, letting the event loop run at its pauses when `turn` is due. */
async function inTurnsOf<T>(search: Generator<void, T>, turn: Turns): Promise<T> {
  for (;;) {
    const r = search.next();
    if (r.done) return r.value;
    if (turn.due) await turn.maybe();
  }
}

const MAGIC = 'CTSPARSE';
const VERSION = 1;
const HEADER_BYTES = 24; // magic, version, dimension, similarity (0 dot, 1 cosine), document count

export class SparseIndex {
  /** Per vocabulary entry: its documents and their weights (the first `counts[t]` of each array), or none yet. */
  private docs: (Int32Array | undefined)[];
  private weights: (Float32Array | undefined)[];
  private readonly counts: Int32Array;
  private readonly ids = new IdStore();
  /**
   * Scratch arrays of searches, each one's own while it runs (searches in turns interleave): a score per document, zero
   * again after each search, and the number of the search that last met each document.
   */
  private spare: Scratch[] = [];
  readonly similarity: 'dot' | 'cosine';

  /** `dimension`: the vectors' width, the SparseEncoder's `dimension` (its vocabulary's size). */
  constructor(readonly dimension: number, options?: SparseIndexOptions) {
    positiveInteger('dimension', dimension);
    if (options !== undefined && (typeof options !== 'object' || options === null)) throw invalid('options', 'an object', options);
    for (const key of Object.keys(options ?? {})) if (key !== 'similarity') throw invalid(`options.${key}`, 'not an option here (similarity is)', key);
    this.similarity = oneOf('options.similarity', options?.similarity ?? 'dot', ['dot', 'cosine'] as const);
    this.docs = new Array(dimension);
    this.weights = new Array(dimension);
    this.counts = new Int32Array(dimension);
  }

  /** Documents indexed. */
  get size(): number {
    return this.ids.length;
  }

  /** @internal The id of document `doc` (numbered in the order added). */
  idAt(doc: number): string {
    return this.ids.get(doc);
  }

  /** Non-zero entries held, over all documents. */
  get postings(): number {
    return this.counts.reduce((sum, n) => sum + n, 0);
  }

  /** Indexes one document's vector under `id`, which must be new. */
  add(id: string, vector: SparseVector): void {
    if (typeof id !== 'string') throw invalid('id', 'a string', id);
    if (this.ids.has(id)) throw new ColtrastError('INVALID_ARGUMENT', `id ${JSON.stringify(id)} is already in the sparse index (ids must be unique)`);
    checkVectors('vector', [vector], this.dimension);
    this.insert(id, vector);
  }

  /**
   * add() of each document, letting the event loop run every few milliseconds; every id and vector is checked before
   * any is added (an error leaves the index as it was). The index must not change meanwhile.
   */
  async addAll(ids: readonly string[], vectors: readonly SparseVector[]): Promise<void> {
    if (!Array.isArray(ids)) throw invalid('ids', 'an array of strings', ids);
    if (!Array.isArray(vectors)) throw invalid('vectors', 'an array of sparse vectors ({ indices: Int32Array, values: Float32Array })', vectors);
    if (ids.length !== vectors.length) throw new ColtrastError('INVALID_ARGUMENT', `${ids.length} ids and ${vectors.length} vectors: give one id a vector`);
    const seen = new Set<string>();
    await inTurns(ids.keys(), (i) => {
      const id = ids[i];
      if (typeof id !== 'string') throw invalid(`ids[${i}]`, 'a string', id);
      if (seen.has(id) || this.ids.has(id)) throw new ColtrastError('INVALID_ARGUMENT', `id ${JSON.stringify(id)} is ${seen.has(id) ? 'given twice' : 'already in the sparse index'} (ids must be unique)`);
      seen.add(id);
      checkVector(`vectors[${i}]`, vectors[i], this.dimension);
    });
    await inTurns(ids.keys(), (i) => this.insert(ids[i], vectors[i]));
  }

  private insert(id: string, vector: SparseVector): void {
    const doc = this.ids.length;
    const scale = this.scaleOf(vector);
    for (let k = 0; k < vector.indices.length; k++) {
      const t = vector.indices[k];
      const n = this.counts[t];
      let docs = this.docs[t];
      let weights = this.weights[t];
      if (!docs || n === docs.length) {
        const size = Math.max(4, 2 * n);
        const grownDocs = new Int32Array(size);
        const grownWeights = new Float32Array(size);
        if (docs) {
          grownDocs.set(docs);
          grownWeights.set(weights!);
        }
        this.docs[t] = docs = grownDocs;
        this.weights[t] = weights = grownWeights;
      }
      docs[n] = doc;
      weights![n] = vector.values[k] * scale;
      this.counts[t] = n + 1;
    }
    this.ids.push(id);
  }

  /**
   * @internal Every document's vector as stored (for 'cosine', scaled to unit length), by document in the order added:
   * compressed sparse rows, document i's entries at [offsets[i], offsets[i + 1]) of `indices` (ascending) and `values`.
   * Built a vocabulary entry's postings at a time, letting the event loop run between them (export.ts writes them out).
   */
  async documentVectors(): Promise<{ offsets: Int32Array; indices: Int32Array; values: Float32Array }> {
    const n = this.ids.length;
    const offsets = new Int32Array(n + 1);
    for (let t = 0; t < this.dimension; t++) {
      const docs = this.docs[t];
      for (let i = 0; i < this.counts[t]; i++) offsets[docs![i] + 1]++;
    }
    for (let i = 0; i < n; i++) offsets[i + 1] += offsets[i];
    const indices = new Int32Array(offsets[n]);
    const values = new Float32Array(offsets[n]);
    const filled = offsets.slice(0, n);
    const turn = new Turns();
    for (let t = 0; t < this.dimension; t++) {
      const docs = this.docs[t];
      const weights = this.weights[t];
      for (let i = 0; i < this.counts[t]; i++) {
        const at = filled[docs![i]]++;
        indices[at] = t;
        values[at] = weights![i];
      }
      if (turn.due) await turn.maybe();
    }
    return { offsets, indices, values };
  }

  /** 1, or for cosine the inverse of the vector's length (a zero vector stays zero). */
  private scaleOf(vector: SparseVector): number {
    if (this.similarity === 'dot') return 1;
    let sum = 0;
    for (const x of vector.values) sum += x * x;
    return sum > 0 ? 1 / Math.sqrt(sum) : 0;
  }

  /** The k best documents for `query` (fewer when fewer share an entry with it), best first, ties by id. */
  search(query: SparseVector, k: number): SparseHit[] {
    checkVectors('query', [query], this.dimension);
    numberValue('k', k, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
    return this.find(query, k);
  }

  /**
   * search() of each query, letting the event loop run every few milliseconds, inside a query too (between its terms, and
   * within a long postings list). The index must not change meanwhile.
   */
  async searchAll(queries: readonly SparseVector[], k: number): Promise<SparseHit[][]> {
    checkVectors('queries', queries, this.dimension);
    numberValue('k', k, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
    const out: SparseHit[][] = [];
    const turn = new Turns();
    for (const q of queries) out.push(await inTurnsOf(this.finding(q, k, undefined, this.byId, this.hitById), turn));
    return out;
  }

  /**
   * Removes the documents of `ids` (each must be in the index), letting the event loop run between parts of the work;
   * searches must not run meanwhile.
   */
  async remove(ids: readonly string[]): Promise<void> {
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) throw invalid('ids', 'an array of strings', ids);
    const keep = new Uint8Array(this.ids.length).fill(1);
    for (const id of ids) {
      const at = this.ids.position(id);
      if (at === undefined) throw new ColtrastError('INVALID_ARGUMENT', `no document ${JSON.stringify(id)} in the sparse index`);
      keep[at] = 0;
    }
    await this.retain(keep);
  }

  /**
   * @internal Keeps the documents whose flag in `keep` (one per document, in the order added) is 1, numbered again in
   * order, as Index's documents are; in turns.
   */
  async retain(keep: Uint8Array): Promise<void> {
    const renumber = new Int32Array(this.ids.length);
    let kept = 0;
    for (let doc = 0; doc < renumber.length; doc++) renumber[doc] = keep[doc] ? kept++ : -1;
    await inTurns(this.counts.keys(), (t) => {
      const docs = this.docs[t];
      const weights = this.weights[t];
      if (!docs || !weights) return;
      let j = 0;
      for (let i = 0; i < this.counts[t]; i++) {
        const doc = renumber[docs[i]];
        if (doc < 0) continue;
        docs[j] = doc;
        weights[j++] = weights[i];
      }
      this.counts[t] = j;
    });
    await this.ids.retain(keep);
  }

  /**
   * @internal The k best documents for `query` by their numbers (in the order added), ties by number, among those whose
   * flag in `allow` is 1 (all without it): Index's sparse search, whose documents are numbered as these. The event loop
   * runs between the query's terms (and within a long postings list) when `turn` is due.
   */
  rowsInTurns(query: SparseVector, k: number, allow: Uint8Array | undefined, turn: Turns): Promise<{ doc: number; score: number }[]> {
    return inTurnsOf(this.finding(query, k, allow, byNumber, hitByNumber), turn);
  }

  private find(query: SparseVector, k: number): SparseHit[] {
    return drain(this.finding(query, k, undefined, this.byId, this.hitById));
  }

  private readonly byId = (a: number, b: number) => this.ids.get(a) < this.ids.get(b);
  private readonly hitById = (doc: number, score: number): SparseHit => ({ id: this.ids.get(doc), score });

  /**
   * The k best documents for `query` among those `allow` flags (all without it), ties broken by `before`, as `hit`
   * makes them: a generator that pauses (yields) after each of the query's terms, every POSTINGS_A_TURN postings of
   * a long list and every SELECTED_A_TURN documents of the selection, for a caller to let the event loop run (inTurnsOf), or not (drain). Its scratch arrays are its own
   * while it runs (about 16 bytes a document, kept for later searches: as many sets as searches ran at once). Documents
   * added while it is paused are not seen.
   */
  private *finding<T>(query: SparseVector, k: number, allow: Uint8Array | undefined, before: (a: number, b: number) => boolean, hit: (doc: number, score: number) => T): Generator<void, T[]> {
    const n = this.ids.length;
    if (n === 0 || k <= 0) return [];
    const scratch = this.spare.pop() ?? { scores: new Float64Array(0), met: new Uint32Array(0), touched: new Int32Array(0), searches: 0 };
    if (scratch.scores.length < n) {
      scratch.scores = new Float64Array(Math.max(n, 2 * scratch.scores.length));
      scratch.met = new Uint32Array(scratch.scores.length);
      scratch.touched = new Int32Array(scratch.scores.length);
      scratch.searches = 0;
    }
    // A document is met once a search: `met` holds the number of the search that last met it (a product of zero, or of
    // the opposite sign, leaves its score where it was, so the score cannot tell).
    if (scratch.searches === 0xffffffff) {
      scratch.met.fill(0);
      scratch.searches = 0;
    }
    const search = ++scratch.searches;
    const { scores, touched } = scratch;
    // The documents met so far, the first `met` of `touched` (a typed array: a JS array of a million numbers was work for
    // the garbage collector, whose pauses held the event loop).
    let met = 0;
    const scale = this.scaleOf(query);
    for (let q = 0; q < query.indices.length; q++) {
      const t = query.indices[q];
      const count = this.counts[t];
      if (count === 0) continue;
      const w = query.values[q] * scale;
      const docs = this.docs[t]!;
      const weights = this.weights[t]!;
      for (let start = 0; start < count; start += POSTINGS_A_TURN) {
        met = scorePostings(docs, weights, start, Math.min(count, start + POSTINGS_A_TURN), w, n, allow, scratch, search, met);
        yield;
      }
    }
    const better = (a: number, b: number) => scores[a] > scores[b] || (scores[a] === scores[b] && before(a, b));
    // The best k of the documents met, pausing as the scoring does (a million of them took 40 ms in one turn).
    const heap = new TopKHeap(k, (i, j) => better(touched[i], touched[j]));
    for (let start = 0; start < met; start += SELECTED_A_TURN) {
      const end = Math.min(met, start + SELECTED_A_TURN);
      for (let i = start; i < end; i++) heap.offer(i);
      if (end < met) yield;
    }
    const hits = heap.best().map((i) => hit(touched[i], scores[touched[i]]));
    this.spare.push(scratch);
    return hits;
  }

  /**
   * Writes the index to `file` (a binary file of its own: header, ids, postings), through a temporary file renamed over
   * it: an interrupted save leaves the old file as it was.
   */
  async save(file: string): Promise<void> {
    if (typeof file !== 'string' || file.length === 0) throw invalid('file', 'a file path', file);
    const out = atomicOutput(file);
    try {
      const header = Buffer.alloc(HEADER_BYTES);
      header.write(MAGIC, 0, 'latin1');
      header.writeUInt32LE(VERSION, 8);
      header.writeUInt32LE(this.dimension, 12);
      header.writeUInt32LE(this.similarity === 'cosine' ? 1 : 0, 16);
      header.writeUInt32LE(this.ids.length, 20);
      await out.write(header);
      // Ids: each one's UTF-8 byte length, then the bytes (encoded in turns: a million took a fifth of a second).
      const idBytes: Buffer[] = [];
      await inTurns(this.ids.length === 0 ? [] : Array.from({ length: this.ids.length }, (_, i) => i), (i) => idBytes.push(Buffer.from(this.ids.get(i), 'utf8')));
      await out.write(Buffer.from(Uint32Array.from(idBytes, (b) => b.length).buffer));
      for (let i = 0; i < idBytes.length; i += 65536) await out.write(Buffer.concat(idBytes.slice(i, i + 65536)));
      // Postings: every entry's count, then each entry's documents and weights.
      await out.write(Buffer.from(this.counts.buffer.slice(0)));
      for (let t = 0; t < this.dimension; t++) {
        const n = this.counts[t];
        if (n === 0) continue;
        await out.write(Buffer.from(this.docs[t]!.buffer, 0, 4 * n));
        await out.write(Buffer.from(this.weights[t]!.buffer, 0, 4 * n));
      }
      await out.commit();
    } catch (error) {
      out.abort();
      throw error;
    }
  }

  /** Reads an index save() wrote; a file that is not one is an INVALID_ARGUMENT error naming it. */
  static async load(file: string): Promise<SparseIndex> {
    if (typeof file !== 'string' || file.length === 0) throw invalid('file', 'a file path', file);
    const bytes = await fs.promises.readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new ColtrastError('INVALID_ARGUMENT', `cannot read the sparse index ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`);
    });
    const bad = (what: string) => new ColtrastError('INVALID_ARGUMENT', `${file} is not a sparse index SparseIndex.save() wrote (${what})`);
    if (bytes.length < HEADER_BYTES || bytes.toString('latin1', 0, 8) !== MAGIC) throw bad('no header');
    if (bytes.readUInt32LE(8) !== VERSION) throw bad(`version ${bytes.readUInt32LE(8)}; this coltrast reads version ${VERSION}`);
    const dimension = bytes.readUInt32LE(12);
    const count = bytes.readUInt32LE(20);
    if (dimension === 0) throw bad('its dimension is 0');
    const index = new SparseIndex(dimension, { similarity: bytes.readUInt32LE(16) === 1 ? 'cosine' : 'dot' });
    let at = HEADER_BYTES;
    const take = (length: number) => {
      if (at + length > bytes.length) throw bad('it ends too soon');
      const part = bytes.subarray(at, at + length);
      at += length;
      return part;
    };
    // Copied out into aligned arrays (a Buffer's offset into its pool may not be a multiple of 4), a block at a time
    // (Uint8Array.from went byte by byte); in turns, letting the event loop run: a million documents' index was one
    // stall of seconds.
    const aligned = (length: number) => {
      const part = take(length);
      return part.buffer.slice(part.byteOffset, part.byteOffset + part.length);
    };
    const turn = new Turns();
    const lengths = new Int32Array(aligned(4 * count));
    for (let i = 0; i < count; i++) {
      if (lengths[i] < 0) throw bad("an id's length is negative");
      const id = take(lengths[i]).toString('utf8');
      if (index.ids.has(id)) throw bad(`id ${JSON.stringify(id)} appears twice`);
      index.ids.push(id);
      if (turn.due) await turn.maybe();
    }
    const counts = new Int32Array(aligned(4 * dimension));
    for (let t = 0; t < dimension; t++) {
      const n = counts[t];
      if (n < 0) throw bad('a negative count');
      if (n === 0) continue;
      const docs = new Int32Array(aligned(4 * n));
      for (let i = 0; i < n; i++) if (docs[i] < 0 || docs[i] >= count) throw bad('a posting of a document it does not hold');
      index.docs[t] = docs;
      index.weights[t] = new Float32Array(aligned(4 * n));
      index.counts[t] = n;
      if (turn.due) await turn.maybe();
    }
    if (at !== bytes.length) throw bad('bytes after its postings');
    return index;
  }
}
