/**
 * BM25 over an in-memory inverted index: the lexical half of hybrid search and the classic baseline.
 * Scoring is Lucene's: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), term weight
 * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgLen)), with BEIR's usual k1 = 0.9, b = 0.4.
 *
 * Tokens are lowercase runs of [a-z0-9] (accents folded first), and the words of other scripts (bm25Tokens);
 * stemming, when asked, is the Porter2 English stemmer of the `porter2` package. A tokenizer this simple needs no
 * library; the stemmer is one.
 * test/bm25-check.test.ts checks the scores against bm25s and the stems against Snowball's own English
 * stemmer (PyStemmer). `porter2` replaced wink-porter2-stemmer, which that check caught turning every digit 3
 * into its internal marker for a consonant y ('python3' became 'pythoni', 'mp3s' 'mpys').
 */
import { stem as porter2 } from 'porter2';
import { IdStore, doubled, hashOf, hasLoneSurrogate, insertSlot } from './doc-store';
import { ColtrastError } from './errors';
import { booleanValue, checkOptions, invalid, numberValue, stringList } from './validate';
import { topK } from './top-k';
import { inTurns } from './turns';

export interface Bm25Options {
  k1?: number;
  b?: number;
  /** Porter2 stemming of every token (default false). */
  stem?: boolean;
}

const BM25_KEYS = ['k1', 'b', 'stem'] as const;

/** @internal The settings of `options` (named `name` in errors), checked, with their defaults. */
export function bm25Settings(name: string, options: Bm25Options | undefined): Required<Bm25Options> {
  const o = checkOptions(name, options, BM25_KEYS);
  return {
    k1: o.k1 === undefined ? 0.9 : numberValue(`${name}.k1`, o.k1, (x) => x >= 0, 'a number >= 0'),
    b: o.b === undefined ? 0.4 : numberValue(`${name}.b`, o.b, (x) => x >= 0 && x <= 1, 'a number from 0 to 1'),
    stem: o.stem === undefined ? false : booleanValue(`${name}.stem`, o.stem),
  };
}

/**
 * Latin letters that NFKD does not split into an ASCII letter and an accent, folded as Lucene's ASCIIFoldingFilter
 * does: without this 'straße' was the tokens 'stra' and 'e', 'Łódź' 'odz' and 'København' 'k' and 'benhavn'.
 */
const LATIN_FOLDS: Record<string, string> = { ß: 'ss', æ: 'ae', ø: 'o', œ: 'oe', ł: 'l', đ: 'd', ð: 'd', þ: 'th', ı: 'i', ħ: 'h', ŧ: 't', ŋ: 'n', ĸ: 'k' };
const LATIN_FOLDED = /[ßæøœłđðþıħŧŋĸ]/g;
const NON_ASCII = /[^\x00-\x7f]/;
/** A letter or digit past ASCII. */
const NON_ASCII_WORD = /(?=[^\x00-\x7f])[\p{L}\p{N}]/u;
const MARK_AFTER_ASCII = /(?<=[\x00-\x7f])\p{M}+/gu;
/**
 * Tokens of other scripts: runs of letters, digits and the marks within them (Devanagari's vowel signs, say), except
 * Chinese characters and kana, each of which is a token with its marks (ガ is カ and a voiced mark after NFKD): those
 * scripts put no spaces between words, so a run would be a whole phrase and a query of one word in it would find
 * nothing; single characters are the CJK baseline, as Lucene's StandardTokenizer gives them.
 */
const UNICODE_TOKEN = /(?=\p{L})[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}]\p{M}*|(?:(?![\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}])[\p{L}\p{N}])(?:(?![\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}])[\p{L}\p{N}\p{M}])*/gu;

/**
 * A text's tokens: accents folded (NFKD, combining accents dropped, letters such as ß and ø spelled in ASCII),
 * lowercase, then runs of [a-z0-9]; text in other scripts (Cyrillic, Greek, Arabic, Devanagari, CJK) gives their
 * words as tokens too (UNICODE_TOKEN), where [a-z0-9] alone made a query in Russian or Chinese find nothing. Porter2
 * stems only ASCII tokens (it is an English stemmer).
 */
export function bm25Tokens(text: string, stem = false): string[] {
  let folded = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
  // Text whose letters and digits are ASCII (most of an English corpus, curly quotes and dashes and all) takes the
  // plain pattern, which finds the same tokens several times faster.
  let plain = !NON_ASCII.test(folded);
  if (!plain) {
    folded = folded.replace(LATIN_FOLDED, (c) => LATIN_FOLDS[c]);
    plain = !NON_ASCII_WORD.test(folded);
    // A mark after an ASCII character (one NFKD did not fold, U+20DD say) separates tokens, as the plain pattern has it.
    if (!plain) folded = folded.replace(MARK_AFTER_ASCII, ' ');
  }
  const tokens = (plain ? folded.match(/[a-z0-9]+/g) : folded.match(UNICODE_TOKEN)) ?? [];
  return stem ? tokens.map((t) => (ASCII.test(t) ? porter2(t) : t)) : tokens;
}

/** The first block of a term's postings holds one; each next block twice the last, up to this many. */
const LARGEST_BLOCK = 1024;
/** Pages of the postings pool, in 32-bit words: doubling from 256 KiB to 64 MiB (V8 starts a full collection for every 64 MiB or so allocated outside its heap). */
const FIRST_PAGE = 1 << 16;
const PAGE_BITS = 24;
const LARGEST_PAGE = 1 << PAGE_BITS;
/** A block's address is page << PAGE_BITS | offset, a non-negative 32-bit integer: 128 pages, up to 8 GiB of postings. */
const MOST_PAGES = 128;

/**
 * Every term's postings, in blocks on pages of 32-bit words outside Node's heap. A block is [next block's address
 * or -1, capacity, (document, count) × capacity]; a term's blocks form a chain whose capacities double from 1 to
 * LARGEST_BLOCK, so a term in one document takes 16 bytes and a common one's slack is at most its last block.
 */
class PostingsPool {
  readonly pages: Int32Array[] = [];
  private used = 0;

  /** A new, empty block for `capacity` postings; its address. */
  allocate(capacity: number): number {
    const size = 2 + 2 * capacity;
    let page = this.pages[this.pages.length - 1];
    if (!page || this.used + size > page.length) {
      if (this.pages.length === MOST_PAGES) throw new RangeError(`BM25 postings past ${MOST_PAGES} pages of ${4 * LARGEST_PAGE} bytes`);
      page = new Int32Array(Math.min(LARGEST_PAGE, Math.max(FIRST_PAGE, 2 * (page?.length ?? 0))));
      this.pages.push(page);
      this.used = 0;
    }
    const at = this.used;
    this.used += size;
    page[at] = -1;
    page[at + 1] = capacity;
    return ((this.pages.length - 1) << PAGE_BITS) | at;
  }
}
const pageOf = (block: number) => block >>> PAGE_BITS;
const offsetOf = (block: number) => block & (LARGEST_PAGE - 1);

/**
 * The distinct terms, numbered in the order first seen, outside Node's heap: their UTF-8 bytes (one a character for the
 * ASCII terms of Latin text) and an open-addressing table with linear probing, at most half full. A Map of 1.9 million
 * terms took most of 690 MiB of heap (BENCHMARKS.md, "BM25 with a real corpus's vocabulary"); comparing an ASCII term
 * with its bytes, character by character, decodes nothing.
 */
class TermTable {
  private bytes = Buffer.allocUnsafeSlow(64 * 1024);
  private used = 0;
  /** Term t's bytes end at ends[t] (and start where term t - 1's end). */
  private ends = new Uint32Array(16);
  private hashes = new Uint32Array(16);
  private table = new Int32Array(32).fill(-1);
  private count = 0;

  get length(): number {
    return this.count;
  }

  /** The number of `term` (hash `h`, hashOf), or -1. */
  find(term: string, h: number): number {
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const t = this.table[slot];
      if (t === -1) return -1;
      if (this.hashes[t] === h && this.equals(t, term)) return t;
    }
  }

  /** Adds `term`, which find() did not find; its number is the length before. */
  add(term: string, h: number): number {
    // A UTF-16 unit takes at most 3 bytes of UTF-8.
    if (this.used + 3 * term.length > this.bytes.length) {
      let size = 2 * this.bytes.length;
      while (this.used + 3 * term.length > size) size *= 2;
      const grown = Buffer.allocUnsafeSlow(size);
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    this.used += this.bytes.write(term, this.used, 'utf8');
    const t = this.count++;
    if (t === this.ends.length) {
      this.ends = doubled(this.ends);
      this.hashes = doubled(this.hashes);
    }
    this.ends[t] = this.used;
    this.hashes[t] = h;
    if (2 * this.count > this.table.length) {
      this.table = new Int32Array(2 * this.table.length).fill(-1);
      for (let i = 0; i < this.count; i++) insertSlot(this.table, this.hashes[i], i);
    } else insertSlot(this.table, h, t);
    return t;
  }

  private equals(t: number, term: string): boolean {
    const from = t === 0 ? 0 : this.ends[t - 1];
    const bytes = this.ends[t] - from;
    // A term's UTF-8 is as long as the term only when it is ASCII; a longer one is decoded (its hash matched already).
    if (bytes > term.length) return this.bytes.toString('utf8', from, this.ends[t]) === term;
    if (bytes !== term.length) return false;
    for (let i = 0; i < term.length; i++) if (this.bytes[from + i] !== term.charCodeAt(i)) return false;
    return true;
  }
}
const ASCII = /^[\x00-\x7f]*$/;

/**
 * Terms, postings, ids and token counts all live in typed arrays and Buffers, outside Node's heap: a million documents
 * with a real corpus's vocabulary took 690 MiB of heap as a Map of terms to arrays, and a heap that size slows every
 * full garbage collection. Each search adds into one array of scores and keeps its k best in a heap: a search that
 * sorted every matching document took ~50 ms a query at 80,000 documents whose terms were all common.
 */
export class Bm25Index {
  private readonly terms = new TermTable();
  private readonly pool = new PostingsPool();
  /** Per term: its documents, its first block and the block its last posting is in, and how full that block is. */
  private postingCount = new Int32Array(16);
  private head = new Int32Array(16);
  private tail = new Int32Array(16);
  private tailFill = new Int32Array(16);
  /** Per term, for add(): the last document it was counted in (-1: none since the last removal), and its count there. */
  private lastDoc = new Int32Array(16);
  private tf = new Int32Array(16);
  /** Each document's token count, and its id (UTF-8, outside Node's heap: a million ids took ~40 MiB of it; unique, found by a hash table). */
  private lengths: Uint32Array = new Uint32Array(16);
  private readonly ids = new IdStore();
  private totalLength = 0;
  private readonly k1: number;
  private readonly b: number;
  private readonly stem: boolean;
  /** Scores of the search under way, one per document; zero again after each search. */
  private scratch = new Float64Array(0);

  constructor(options?: Bm25Options) {
    ({ k1: this.k1, b: this.b, stem: this.stem } = bm25Settings('options', options));
  }

  get size(): number {
    return this.ids.length;
  }

  /** Distinct terms seen, those whose documents were all removed included. */
  get termCount(): number {
    return this.terms.length;
  }

  /** Indexes one document; its id must be new and well-formed Unicode (ids are kept as UTF-8). */
  add(id: string, text: string): void {
    if (typeof id !== 'string' || hasLoneSurrogate(id)) throw invalid('id', 'a string of well-formed Unicode (ids are kept as UTF-8, which has no lone surrogate)', id);
    if (typeof text !== 'string') throw invalid('text', 'a string', text);
    // Two documents of one id would be two hits of one id (remove() it first to replace it).
    if (this.ids.has(id)) throw new ColtrastError('INVALID_ARGUMENT', `id ${JSON.stringify(id)} is already in the BM25 index (ids must be unique; remove the document first to replace it)`);
    const doc = this.ids.length;
    const tokens = bm25Tokens(text, this.stem);
    const distinct: number[] = [];
    for (const token of tokens) {
      const h = hashOf(token);
      let t = this.terms.find(token, h);
      if (t === -1) t = this.newTerm(token, h);
      if (this.lastDoc[t] !== doc) {
        this.lastDoc[t] = doc;
        this.tf[t] = 0;
        distinct.push(t);
      }
      this.tf[t]++;
    }
    for (const t of distinct) this.push(t, doc, this.tf[t]);
    if (doc === this.lengths.length) this.lengths = doubled(this.lengths);
    this.ids.push(id);
    this.lengths[doc] = tokens.length;
    this.totalLength += tokens.length;
  }

  private newTerm(term: string, h: number): number {
    const t = this.terms.add(term, h);
    if (t === this.head.length) {
      this.postingCount = doubled(this.postingCount);
      this.head = doubled(this.head);
      this.tail = doubled(this.tail);
      this.tailFill = doubled(this.tailFill);
      this.lastDoc = doubled(this.lastDoc);
      this.tf = doubled(this.tf);
    }
    this.head[t] = this.tail[t] = this.pool.allocate(1);
    this.postingCount[t] = this.tailFill[t] = 0;
    this.lastDoc[t] = -1;
    return t;
  }

  /** Appends (doc, tf) to term t's postings: into its last block, or the next one (reused after a removal, or new). */
  private push(t: number, doc: number, tf: number): void {
    const { pages } = this.pool;
    let block = this.tail[t];
    let fill = this.tailFill[t];
    let page = pages[pageOf(block)];
    let at = offsetOf(block);
    if (fill === page[at + 1]) {
      let next = page[at];
      if (next === -1) page[at] = next = this.pool.allocate(Math.min(2 * page[at + 1], LARGEST_BLOCK));
      this.tail[t] = block = next;
      fill = 0;
      page = pages[pageOf(block)];
      at = offsetOf(block);
    }
    page[at + 2 + 2 * fill] = doc;
    page[at + 3 + 2 * fill] = tf;
    this.tailFill[t] = fill + 1;
    this.postingCount[t]++;
  }

  /** @internal How many blocks each term's postings fill (tests: short and long chains). */
  blocksPerTerm(): number[] {
    const out: number[] = [];
    for (let t = 0; t < this.terms.length; t++) {
      let blocks = 0;
      for (let left = this.postingCount[t], block = this.head[t]; left > 0; blocks++) {
        const page = this.pool.pages[pageOf(block)];
        left -= page[offsetOf(block) + 1];
        block = page[offsetOf(block)];
      }
      out.push(blocks);
    }
    return out;
  }

  /**
   * Adds each of `docs` (as add() does), letting the event loop run every few milliseconds: indexing 100,000
   * documents of 120 words takes seconds. The caller keeps `docs` unchanged meanwhile.
   */
  async addAll(docs: Iterable<{ id: string; text: string }>): Promise<void> {
    await inTurns(docs, (d) => this.add(d.id, d.text));
  }

  /** search() of each query, letting the event loop run every few milliseconds. */
  async searchAll(queries: readonly string[], k: number, allow?: Uint8Array): Promise<{ id: string; score: number }[][]> {
    stringList('queries', queries);
    this.checkSearch(k, allow);
    const out: { id: string; score: number }[][] = [];
    await inTurns(queries, (q) => out.push(this.find(q, k, allow)));
    return out;
  }

  /**
   * Removes the documents whose flag in `keep` (one per document, in the order added) is 0; the others keep their
   * order. One pass over the postings, instead of tokenizing every document again, letting the event loop run every
   * few milliseconds (at a million documents the pass takes a fraction of a second; BENCHMARKS.md, "Removing
   * documents"). Nothing else may use the index until it resolves (Index holds its write lock).
   */
  async remove(keep: Uint8Array): Promise<void> {
    const n = this.ids.length;
    if (!(keep instanceof Uint8Array) || keep.length !== n) throw invalid('keep', `a Uint8Array of ${n} flags (one per document)`, keep);
    const renumbered = new Int32Array(n);
    let kept = 0;
    for (let i = 0; i < n; i++) renumbered[i] = keep[i] ? kept++ : -1;
    if (kept === n) return;
    await inTurns(this.compaction(renumbered), () => {});
    // Documents are numbered anew: no term was counted in a document of the new numbering yet.
    this.lastDoc.fill(-1);
    let w = 0;
    this.totalLength = 0;
    for (let i = 0; i < n; i++) {
      if (!keep[i]) continue;
      this.lengths[w++] = this.lengths[i];
      this.totalLength += this.lengths[i];
    }
    await this.ids.retain(keep);
  }

  /**
   * Moves each term's kept postings, renumbered, to the front of its chain (its later blocks stay linked, for adds to
   * reuse). Yields after each term and after each full-size block, so that removal from a list of a million documents is not one turn.
   */
  private *compaction(renumbered: Int32Array): Generator<void> {
    const { pages } = this.pool;
    for (let t = 0; t < this.terms.length; t++) {
      let read = this.head[t];
      // The write cursor: its block, that block's page and offset there, where the next posting goes and the block's end.
      let write = read;
      let out = pages[pageOf(write)];
      let outAt = offsetOf(write);
      let outPos = outAt + 2;
      let outEnd = outPos + 2 * out[outAt + 1];
      let r = 0;
      for (let left = this.postingCount[t]; left > 0; ) {
        const page = pages[pageOf(read)];
        const at = offsetOf(read);
        const m = Math.min(left, page[at + 1]);
        for (let i = at + 2; i < at + 2 + 2 * m; i += 2) {
          const doc = renumbered[page[i]];
          if (doc < 0) continue;
          if (outPos === outEnd) {
            write = out[outAt];
            out = pages[pageOf(write)];
            outAt = offsetOf(write);
            outPos = outAt + 2;
            outEnd = outPos + 2 * out[outAt + 1];
          }
          out[outPos] = doc;
          out[outPos + 1] = page[i + 1];
          outPos += 2;
          r++;
        }
        left -= m;
        read = page[at];
        if (m === LARGEST_BLOCK && left > 0) yield;
      }
      this.postingCount[t] = r;
      this.tail[t] = write;
      this.tailFill[t] = (outPos - outAt - 2) / 2;
      yield;
    }
  }

  private checkSearch(k: unknown, allow: unknown): void {
    numberValue('k', k, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
    const n = this.ids.length;
    if (allow !== undefined && (!(allow instanceof Uint8Array) || allow.length !== n)) throw invalid('allow', `a Uint8Array of ${n} flags (one per document)`, allow);
  }

  /**
   * The k best documents for `query` (fewer when fewer documents share a term with it), by score, ties by id. `allow`:
   * one flag per document in the order added, 1 where it may be found (a filter).
   */
  search(query: string, k: number, allow?: Uint8Array): { id: string; score: number }[] {
    if (typeof query !== 'string') throw invalid('query', 'a string', query);
    this.checkSearch(k, allow);
    return this.find(query, k, allow);
  }

  /** search() of arguments already checked (searchAll checks them once for all its queries). */
  private find(query: string, k: number, allow?: Uint8Array): { id: string; score: number }[] {
    const n = this.ids.length;
    if (n === 0 || k <= 0) return [];
    const avgLength = this.totalLength / n || 1;
    if (this.scratch.length < n) this.scratch = new Float64Array(Math.max(n, 2 * this.scratch.length));
    const scores = this.scratch;
    // Every score is positive (idf > 0, tf >= 1), so a zero marks a document not met yet.
    const touched: number[] = [];
    const { pages } = this.pool;
    for (const term of new Set(bm25Tokens(query, this.stem))) {
      const t = this.terms.find(term, hashOf(term));
      const df = t < 0 ? 0 : this.postingCount[t];
      if (df === 0) continue;
      const idf = Math.log(1 + (n - df + 0.5) / (df + 0.5));
      for (let left = df, block = this.head[t]; left > 0; ) {
        const page = pages[pageOf(block)];
        const at = offsetOf(block);
        const m = Math.min(left, page[at + 1]);
        for (let i = at + 2; i < at + 2 + 2 * m; i += 2) {
          const doc = page[i];
          if (allow && !allow[doc]) continue;
          const tf = page[i + 1];
          const norm = tf + this.k1 * (1 - this.b + (this.b * this.lengths[doc]) / avgLength);
          if (scores[doc] === 0) touched.push(doc);
          scores[doc] += (idf * tf * (this.k1 + 1)) / norm;
        }
        left -= m;
        block = page[at];
      }
    }
    // Ids are decoded only to break ties, and for the hits.
    const better = (a: number, b: number) => scores[a] > scores[b] || (scores[a] === scores[b] && this.ids.get(a) < this.ids.get(b));
    const hits = topK(touched.length, k, (i, j) => better(touched[i], touched[j])).map((i) => ({ id: this.ids.get(touched[i]), score: scores[touched[i]] }));
    for (const doc of touched) scores[doc] = 0;
    return hits;
  }
}
