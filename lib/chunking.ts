/**
 * ColTrast data preparation (the write-up's method): project documents are cut into semantic chunks,
 * each Q&A pair gets the chunk of its own project that best matches question + answer as its positive
 * (or its answer, when no chunk matches well enough), and chunks of other projects that resemble the
 * question become its hard negatives, minus any that resemble it more than the positive does (the
 * GISTEmbed guard against false negatives).
 *
 * The functions take an `Embedder` (texts -> unit vectors) and a token counter instead of a model, so
 * they can be tested on handmade vectors with known answers; train() passes the model being trained.
 */
import { ColtrastError } from './errors';
import type { TrainExample } from './train-data';
import { invalid } from './validate';

export interface Embedder {
  /** One L2-normalized vector per text. */
  embed(texts: string[]): Promise<Float32Array[]>;
  /** Token count of each text, special tokens included. */
  countTokens(texts: string[]): Promise<number[]>;
}

export interface Project {
  id: string;
  document: string;
  /** `context`, when given, is the known relevant passage: it is the positive and nothing is mined for it. */
  qa: { question: string; answer: string; context?: string }[];
}

export interface ChunkingOptions {
  /** Neighbouring sentences merge while their cosine similarity is at least this (default 0.7). */
  threshold?: number;
  /**
   * A chunk never grows past this many tokens, special tokens included: a longer sentence is cut into pieces first
   * (see semanticChunks). More than the special tokens alone.
   */
  maxTokens: number;
}

export interface MiningOptions {
  /** Below this similarity to question + answer, the answer itself is the positive (default 0.6). */
  positiveThreshold?: number;
  /** Hard negatives per question (default 3). */
  hardNegatives?: number;
}

/** The dot product of two equally long vectors (their cosine when both are L2-normalized). */
export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Sentences of a document: lines, then sentence ends followed by a capital, digit or markup, and CJK full stops.
 * Capitals, caseless letters (Arabic, Hebrew, CJK) and digits of any script, not ASCII's only: otherwise a paragraph
 * of German, Russian or Arabic, or one of Chinese, whose full stops no space follows, would be one "sentence", a
 * chunk past maxTokens. Sentence ends of other scripts too: Devanagari's danda (।, ॥: Hindi, Marathi, Nepali), the
 * Arabic question mark (؟) and Urdu's full stop (۔), and the ellipsis (…); without them a paragraph of Hindi or Urdu
 * was one sentence.
 */
export function splitSentences(document: string): string[] {
  return document
    .split(/\n+/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .flatMap((line) => line.split(/(?<=[.!?…؟۔।॥])\s+(?=[\p{Lu}\p{Lt}\p{Lo}\p{N}#*\-"'(])|(?<=[。！？])\s*/u))
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * Merges neighbouring sentences into chunks while each next sentence's similarity to the previous one
 * stays >= threshold and the chunk stays within maxTokens. A sentence longer than maxTokens (or a text with no sentence
 * ends at all: one "sentence"; Thai has no sentence punctuation) is first cut into pieces of at most maxTokens tokens,
 * each as long as fits: at spaces, or between characters (never inside one: a surrogate pair, a base and its marks)
 * where a word alone is longer, as CJK and Thai text is. Only a single character whose tokens alone pass maxTokens
 * is a longer piece.
 */
export async function semanticChunks(document: string, embedder: Embedder, options: ChunkingOptions): Promise<string[]> {
  const maxTokens = options.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens <= 0) throw invalid('chunking.maxTokens', 'a positive integer (the most tokens of a chunk)', maxTokens);
  const sentences = splitSentences(document);
  if (sentences.length === 0) return [];
  const threshold = options.threshold ?? 0.7;
  const [tokens, [special]] = await Promise.all([
    embedder.countTokens(sentences),
    // The special tokens ([CLS], [SEP]) every count includes: a chunk has them once, not once per sentence.
    embedder.countTokens(['']),
  ]);
  if (maxTokens <= special) {
    throw new ColtrastError('INVALID_ARGUMENT', `chunking.maxTokens ${maxTokens} leaves no room for text beside the ${special} special tokens every chunk has: raise it`);
  }
  // A counter may stop at the model's length (an embedder of one's own that tokenizes as the model reads; coltrast's
  // encoderEmbedder counts untruncated): where that is maxTokens, a sentence counted at exactly maxTokens may be
  // longer, so only counts below it are trusted.
  const truncates = tokens.includes(maxTokens) && (await embedder.countTokens(['a '.repeat(2 * maxTokens)]))[0] <= maxTokens;
  const fits = (count: number) => (truncates ? count < maxTokens : count <= maxTokens);
  const pieces: Piece[] = [];
  for (let i = 0; i < sentences.length; i++) {
    const glue = i > 0 && /[。！？]$/.test(sentences[i - 1]) ? '' : ' ';
    if (fits(tokens[i])) pieces.push({ text: sentences[i], tokens: tokens[i], glue });
    else pieces.push(...(await cutToFit(sentences[i], tokens[i], glue, { maxTokens, special, fits }, embedder)));
  }
  const vectors = await embedder.embed(pieces.map((p) => p.text));
  const chunks: string[] = [];
  let current = pieces[0].text;
  let size = pieces[0].tokens;
  for (let i = 1; i < pieces.length; i++) {
    const grown = size + pieces[i].tokens - special;
    if (dot(vectors[i - 1], vectors[i]) >= threshold && grown <= maxTokens) {
      current += pieces[i].glue + pieces[i].text;
      size = grown;
    } else {
      chunks.push(current);
      current = pieces[i].text;
      size = pieces[i].tokens;
    }
  }
  chunks.push(current);
  return chunks;
}

/**
 * A sentence or a piece of one, with its token count and what joins it to the text before it in a chunk: a space, as
 * splitSentences took one away, except after a CJK full stop, which no space follows in the document, and between the
 * pieces of a word cut between its characters (a space there would give the chunk, and a positive mined from it, a
 * character the document does not have).
 */
interface Piece {
  text: string;
  tokens: number;
  glue: string;
}

/** What fits in a chunk: `fits(count)` of a text's token count, special tokens included. */
interface Budget {
  maxTokens: number;
  special: number;
  fits: (count: number) => boolean;
}

/** Candidate cut points measured per countTokens call (a call narrows the range to an eighth of it). */
const PROBES = 7;
/** Where the first probes for a piece go, in multiples of the previous piece's length (or the estimate from the counts). */
const GUESSES = [0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2];

/**
 * `text`, which does not fit, as pieces that do, each the longest that fits from where the last ended: cut at spaces;
 * a word that alone does not fit is cut between its characters (grapheme clusters). Each piece's end is searched for
 * with a few countTokens calls, each measuring several cut points at once: first around the length the previous
 * piece had, then between the nearest that fit and did not.
 */
async function cutToFit(text: string, tokens: number, glue: string, budget: Budget, embedder: Embedder): Promise<Piece[]> {
  const words = [0, ...Array.from(text.matchAll(/\s+/g), (m) => m.index! + m[0].length), text.length];
  const pieces: Piece[] = [];
  for (const piece of await longestPieces(text, tokens, words, budget, embedder)) {
    if (piece.fits) {
      pieces.push({ text: piece.text, tokens: piece.tokens, glue: pieces.length === 0 ? glue : ' ' });
      continue;
    }
    const characters = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(piece.text)].map((s) => s.index);
    (await longestPieces(piece.text, piece.tokens, [...characters, piece.text.length], budget, embedder)).forEach((p, j) => {
      pieces.push({ text: p.text, tokens: p.tokens, glue: j > 0 ? '' : pieces.length === 0 ? glue : ' ' });
    });
  }
  return pieces;
}

/**
 * `text` cut at some of `cuts` (ascending offsets, its first 0 and its last text.length) into pieces, each the most of
 * them that fits; where not even one step from a cut fits, that step is a piece (`fits` false). The whole text, of
 * `tokens` tokens, does not fit.
 */
async function longestPieces(
  text: string,
  tokens: number,
  cuts: number[],
  { maxTokens, special, fits }: Budget,
  embedder: Embedder,
): Promise<{ text: string; tokens: number; fits: boolean }[]> {
  const n = cuts.length - 1;
  // How many steps a piece takes: first estimated from the whole text's count (an overestimate where the count was
  // cut at the model's length), then the last piece's.
  let guess = Math.max(1, Math.floor((n * (maxTokens - special)) / Math.max(1, tokens - special)));
  const pieces: { text: string; tokens: number; fits: boolean }[] = [];
  let start = 0;
  while (start < n) {
    const slice = (end: number) => text.slice(cuts[start], cuts[end]).trim();
    const counts = new Map<number, number>(start === 0 ? [[n, tokens]] : []);
    // lo fits (or is start), hi does not (or is past the end: not measured yet).
    let lo = start;
    let hi = start === 0 ? n : n + 1;
    let step = guess;
    let guessing = true;
    while (hi - lo > 1) {
      let probes: number[] = [];
      if (guessing) probes = GUESSES.map((f) => Math.min(n, lo + Math.max(1, Math.round(step * f))));
      probes = [...new Set(probes)].filter((c) => c > lo && c < hi);
      if (probes.length === 0) {
        guessing = false;
        const span = Math.min(hi, n + 1) - lo;
        probes = [...new Set(Array.from({ length: PROBES }, (_, k) => lo + Math.round(((k + 1) * span) / (PROBES + 1))))].filter((c) => c > lo && c < hi && c <= n);
        if (probes.length === 0) probes = [lo + 1];
      }
      const measured = await embedder.countTokens(probes.map(slice));
      probes.forEach((c, k) => counts.set(c, measured[k]));
      const over = probes.filter((c, k) => !fits(measured[k]));
      if (over.length > 0) hi = Math.min(...over);
      const under = probes.filter((c, k) => fits(measured[k]) && c < hi);
      if (under.length > 0) lo = Math.max(...under);
      if (guessing && over.length > 0) guessing = false;
      else if (guessing) step *= 2;
    }
    if (lo === start) {
      pieces.push({ text: slice(start + 1), tokens: counts.get(start + 1)!, fits: false });
      start += 1;
    } else {
      pieces.push({ text: slice(lo), tokens: counts.get(lo)!, fits: true });
      guess = lo - start;
      start = lo;
    }
  }
  return pieces;
}

/** Examples from projects: chunk, pick positives, mine hard negatives among the other projects' chunks. */
export async function mineExamples(
  projects: Project[],
  embedder: Embedder,
  chunking: ChunkingOptions,
  mining: MiningOptions = {},
): Promise<{ examples: TrainExample[]; chunks: Map<string, string[]> }> {
  const positiveThreshold = mining.positiveThreshold ?? 0.6;
  const k = mining.hardNegatives ?? 3;
  const chunks = new Map<string, string[]>();
  for (const p of projects) chunks.set(p.id, await semanticChunks(p.document, embedder, chunking));
  const all = projects.flatMap((p) => chunks.get(p.id)!.map((text) => ({ project: p.id, text })));
  const chunkVectors = await embedder.embed(all.map((c) => c.text));
  const examples: TrainExample[] = [];
  for (const p of projects) {
    if (p.qa.length === 0) continue;
    const questions = await embedder.embed(p.qa.map((qa) => qa.question));
    const questionAnswers = await embedder.embed(p.qa.map((qa) => `${qa.question} ${qa.answer}`));
    const answers = await embedder.embed(p.qa.map((qa) => qa.context ?? qa.answer));
    p.qa.forEach((qa, i) => {
      let best = -1;
      let bestScore = -Infinity;
      all.forEach((c, j) => {
        if (c.project !== p.id) return;
        const s = dot(questionAnswers[i], chunkVectors[j]);
        if (s > bestScore) {
          bestScore = s;
          best = j;
        }
      });
      const useChunk = qa.context === undefined && best >= 0 && bestScore >= positiveThreshold;
      const positive = useChunk ? all[best].text : (qa.context ?? qa.answer);
      // GISTEmbed's guard: a "negative" closer to the question than the positive is likely relevant too.
      const ownScore = dot(questions[i], useChunk ? chunkVectors[best] : answers[i]);
      // Projects can share text (the same README twice, a license paragraph): a chunk whose text is the positive or
      // one of the question's own project's chunks is no negative, and one text is one negative however many hold it.
      const taken = new Set([positive, ...chunks.get(p.id)!]);
      const negatives = all
        .map((c, j) => ({ c, score: dot(questions[i], chunkVectors[j]) }))
        .filter(({ c, score }) => c.project !== p.id && score <= ownScore)
        .sort((a, b) => b.score - a.score)
        .map(({ c }) => c.text)
        .filter((text) => !taken.has(text) && taken.add(text))
        .slice(0, k);
      examples.push({ query: qa.question, positive, negatives, group: p.id });
    });
  }
  return { examples, chunks };
}
