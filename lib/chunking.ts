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
import type { TrainExample } from './train-data';

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
  /** A chunk never grows past this many tokens. */
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
 * stays >= threshold and the chunk stays within maxTokens (a single longer sentence is its own chunk).
 */
export async function semanticChunks(document: string, embedder: Embedder, options: ChunkingOptions): Promise<string[]> {
  const sentences = splitSentences(document);
  if (sentences.length === 0) return [];
  const threshold = options.threshold ?? 0.7;
  const [vectors, tokens, [special]] = await Promise.all([
    embedder.embed(sentences),
    embedder.countTokens(sentences),
    // The special tokens ([CLS], [SEP]) every count includes: a chunk has them once, not once per sentence.
    embedder.countTokens(['']),
  ]);
  const chunks: string[] = [];
  let current = [sentences[0]];
  let size = tokens[0];
  for (let i = 1; i < sentences.length; i++) {
    const grown = size + tokens[i] - special;
    if (dot(vectors[i - 1], vectors[i]) >= threshold && grown <= options.maxTokens) {
      current.push(sentences[i]);
      size = grown;
    } else {
      chunks.push(joinSentences(current));
      current = [sentences[i]];
      size = tokens[i];
    }
  }
  chunks.push(joinSentences(current));
  return chunks;
}

/**
 * Sentences as one chunk's text: a space between them, as splitSentences took one away, except after a CJK full stop,
 * which no space follows in the document (a space there would give the chunk, and a positive mined from it, a
 * character the document does not have).
 */
function joinSentences(sentences: string[]): string {
  return sentences.reduce((text, s) => (/[。！？]$/.test(text) ? text + s : `${text} ${s}`));
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
