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

export class Bm25Index {
  private readonly postings = new Map<string, { doc: number; tf: number }[]>();
  private readonly lengths: number[] = [];
  private readonly ids: string[] = [];
  private totalLength = 0;
  private readonly k1: number;
  private readonly b: number;
  private readonly stem: boolean;

  constructor(options: Bm25Options = {}) {
    this.k1 = options.k1 ?? 0.9;
    this.b = options.b ?? 0.4;
    this.stem = options.stem ?? false;
  }

  get size(): number {
    return this.ids.length;
  }

  add(id: string, text: string): void {
    const doc = this.ids.length;
    const counts = new Map<string, number>();
    const tokens = bm25Tokens(text, this.stem);
    for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
    for (const [term, tf] of counts) {
      let list = this.postings.get(term);
      if (!list) this.postings.set(term, (list = []));
      list.push({ doc, tf });
    }
    this.ids.push(id);
    this.lengths.push(tokens.length);
    this.totalLength += tokens.length;
  }

  /**
   * The k best documents for `query` (fewer when fewer documents share a term with it). `allow`: one flag per
   * document in the order added, 1 where it may be found (a filter).
   */
  search(query: string, k: number, allow?: Uint8Array): { id: string; score: number }[] {
    const n = this.ids.length;
    if (n === 0) return [];
    const avgLength = this.totalLength / n || 1;
    const scores = new Map<number, number>();
    for (const term of new Set(bm25Tokens(query, this.stem))) {
      const list = this.postings.get(term);
      if (!list) continue;
      const idf = Math.log(1 + (n - list.length + 0.5) / (list.length + 0.5));
      for (const { doc, tf } of list) {
        if (allow && !allow[doc]) continue;
        const norm = tf + this.k1 * (1 - this.b + (this.b * this.lengths[doc]) / avgLength);
        scores.set(doc, (scores.get(doc) ?? 0) + (idf * tf * (this.k1 + 1)) / norm);
      }
    }
    return [...scores]
      .map(([doc, score]) => ({ id: this.ids[doc], score }))
      .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
      .slice(0, k);
  }
}
