/**
 * BM25 over an in-memory inverted index: the lexical half of hybrid search and the classic baseline.
 * Scoring is Lucene's: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), term weight
 * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgLen)), with BEIR's usual k1 = 0.9, b = 0.4.
 *
 * Tokens are lowercase runs of [a-z0-9] (accents folded first); stemming, when asked, is the Porter2
 * English stemmer of the `porter2` package. A tokenizer this simple needs no library; the stemmer is one.
 * test/bm25-check.test.ts checks the scores against bm25s and the stems against Snowball's own English
 * stemmer (PyStemmer). `porter2` replaced wink-porter2-stemmer, which that check caught turning every digit 3
 * into its internal marker for a consonant y ('python3' became 'pythoni', 'mp3s' 'mpys').
 */
import { stem as porter2 } from 'porter2';
import { TextStore, doubled, hasLoneSurrogate } from './doc-store';
import { invalid } from './validate';
import { topK } from './top-k';
import { inTurns } from './turns';

export interface Bm25Options {
  k1?: number;
  b?: number;
  /** Porter2 stemming of every token (default false). */
  stem?: boolean;
}

export function bm25Tokens(text: string, stem = false): string[] {
  const tokens = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase().match(/[a-z0-9]+/g) ?? [];
  return stem ? tokens.map((t) => porter2(t)) : tokens;
}

/** Past this many documents a term's postings move from a plain array to a typed array. */
const SMALL_POSTINGS = 64;

/**
 * One term's postings: the documents that hold it, in the order added, and how often each does, interleaved
 * (document, count, document, count, ...). A plain array while short, a typed array (outside Node's heap) once long:
 * a typed array costs ~200 bytes of its own, and most of a real corpus's terms are in a document or two.
 */
class Postings {
  data: number[] | Int32Array;
  length = 1;

  constructor(doc: number, tf: number) {
    this.data = [doc, tf];
  }

  push(doc: number, tf: number): void {
    let data = this.data;
    if (Array.isArray(data)) {
      if (this.length < SMALL_POSTINGS) {
        data.push(doc, tf);
        this.length++;
        return;
      }
      data = this.data = Int32Array.from(data);
    }
    if (2 * this.length === data.length) {
      const grown = new Int32Array(2 * data.length);
      grown.set(data);
      data = this.data = grown;
    }
    data[2 * this.length] = doc;
    data[2 * this.length + 1] = tf;
    this.length++;
  }

  /** Lets go of a typed array's room to grow (a quarter of its size on average, after doubling). */
  trim(): void {
    if (!Array.isArray(this.data) && this.data.length > 2 * this.length) this.data = this.data.slice(0, 2 * this.length);
  }

  /** Keeps the first `length` postings (after remove() moved the kept ones to the front). */
  truncate(length: number): void {
    this.length = length;
    if (Array.isArray(this.data)) this.data.length = 2 * length;
  }
}

/**
 * The postings are arrays of numbers (8 bytes a posting; typed, outside Node's heap, for common terms) and each
 * search adds into one array of scores and keeps its k best in a heap: a million documents' postings as objects took
 * gigabytes of heap, and a search that sorted every matching document took ~50 ms a query at 80,000 documents whose
 * terms were all common.
 */
export class Bm25Index {
  private readonly postings = new Map<string, Postings>();
  /** Each document's token count, and its id (UTF-8, outside Node's heap: a million ids took ~40 MiB of it). */
  private lengths: Uint32Array = new Uint32Array(16);
  private readonly ids = new TextStore();
  private totalLength = 0;
  private readonly k1: number;
  private readonly b: number;
  private readonly stem: boolean;
  /** Scores of the search under way, one per document; zero again after each search. */
  private scratch = new Float64Array(0);

  constructor(options: Bm25Options = {}) {
    this.k1 = options.k1 ?? 0.9;
    this.b = options.b ?? 0.4;
    this.stem = options.stem ?? false;
  }

  get size(): number {
    return this.ids.length;
  }

  /** Indexes one document; its id must be well-formed Unicode (ids are kept as UTF-8). */
  add(id: string, text: string): void {
    if (typeof id !== 'string' || hasLoneSurrogate(id)) throw invalid('id', 'a string of well-formed Unicode (ids are kept as UTF-8, which has no lone surrogate)', id);
    const doc = this.ids.length;
    const counts = new Map<string, number>();
    const tokens = bm25Tokens(text, this.stem);
    for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
    for (const [term, tf] of counts) {
      const list = this.postings.get(term);
      if (list) list.push(doc, tf);
      else this.postings.set(term, new Postings(doc, tf));
    }
    if (doc === this.lengths.length) this.lengths = doubled(this.lengths);
    this.ids.push(id);
    this.lengths[doc] = tokens.length;
    this.totalLength += tokens.length;
  }

  /**
   * Adds each of `docs` (as add() does), letting the event loop run every few milliseconds: indexing 100,000
   * documents of 120 words takes seconds. The caller keeps `docs` unchanged meanwhile.
   */
  async addAll(docs: Iterable<{ id: string; text: string }>): Promise<void> {
    await inTurns(docs, (d) => this.add(d.id, d.text));
    await inTurns(this.postings.values(), (list) => list.trim());
  }

  /** search() of each query, letting the event loop run every few milliseconds. */
  async searchAll(queries: readonly string[], k: number, allow?: Uint8Array): Promise<{ id: string; score: number }[][]> {
    const out: { id: string; score: number }[][] = [];
    await inTurns(queries, (q) => out.push(this.search(q, k, allow)));
    return out;
  }

  /**
   * Removes the documents whose flag in `keep` (one per document, in the order added) is 0; the others keep their
   * order. One pass over the postings, instead of tokenizing every document again, letting the event loop run every
   * few milliseconds (at a million documents the pass takes a fraction of a second; BENCHMARKS.md, "Removing
   * documents"). No search may run until it resolves (Index holds its write lock).
   */
  async remove(keep: Uint8Array): Promise<void> {
    const n = this.ids.length;
    if (keep.length !== n) throw new RangeError(`keep has ${keep.length} flags for ${n} documents`);
    const renumbered = new Int32Array(n);
    let kept = 0;
    for (let i = 0; i < n; i++) renumbered[i] = keep[i] ? kept++ : -1;
    if (kept === n) return;
    await inTurns(this.postings, ([term, list]) => {
      let w = 0;
      const { data } = list;
      for (let r = 0; r < list.length; r++) {
        const doc = renumbered[data[2 * r]];
        if (doc < 0) continue;
        data[2 * w] = doc;
        data[2 * w++ + 1] = data[2 * r + 1];
      }
      list.truncate(w);
      if (w === 0) this.postings.delete(term);
    });
    let w = 0;
    this.totalLength = 0;
    for (let i = 0; i < n; i++) {
      if (!keep[i]) continue;
      this.lengths[w++] = this.lengths[i];
      this.totalLength += this.lengths[i];
    }
    this.ids.retain(keep);
  }

  /**
   * The k best documents for `query` (fewer when fewer documents share a term with it), by score, ties by id. `allow`:
   * one flag per document in the order added, 1 where it may be found (a filter).
   */
  search(query: string, k: number, allow?: Uint8Array): { id: string; score: number }[] {
    const n = this.ids.length;
    if (n === 0 || k <= 0) return [];
    const avgLength = this.totalLength / n || 1;
    if (this.scratch.length < n) this.scratch = new Float64Array(Math.max(n, 2 * this.scratch.length));
    const scores = this.scratch;
    // Every score is positive (idf > 0, tf >= 1), so a zero marks a document not met yet.
    const touched: number[] = [];
    for (const term of new Set(bm25Tokens(query, this.stem))) {
      const list = this.postings.get(term);
      if (!list) continue;
      const idf = Math.log(1 + (n - list.length + 0.5) / (list.length + 0.5));
      const { data } = list;
      for (let i = 0; i < 2 * list.length; i += 2) {
        const doc = data[i];
        if (allow && !allow[doc]) continue;
        const tf = data[i + 1];
        const norm = tf + this.k1 * (1 - this.b + (this.b * this.lengths[doc]) / avgLength);
        if (scores[doc] === 0) touched.push(doc);
        scores[doc] += (idf * tf * (this.k1 + 1)) / norm;
      }
    }
    // Ids are decoded only to break ties, and for the hits.
    const better = (a: number, b: number) => scores[a] > scores[b] || (scores[a] === scores[b] && this.ids.get(a) < this.ids.get(b));
    const hits = topK(touched.length, k, (i, j) => better(touched[i], touched[j])).map((i) => ({ id: this.ids.get(touched[i]), score: scores[touched[i]] }));
    for (const doc of touched) scores[doc] = 0;
    return hits;
  }
}
