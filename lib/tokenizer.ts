/**
 * Tokenization with Hugging Face's `tokenizers` (the same Rust library Python uses), truncating to the
 * model's maximum sequence length. Padding is ours: batches are padded to their own longest text.
 */
import { Tokenizer } from 'tokenizers';
import { ColtrastError } from './errors';

export interface TokenizedText {
  ids: number[];
  typeIds: number[];
}

/** @internal Encodings read per turn of the event loop by idsOf. */
export const IDS_SLICE = 1024;

/** @internal Texts per encodeBatch call of TextTokenizer.encode. */
export const ENCODE_SLICE = 8192;

/**
 * @internal The ids and token types of each encoding. Reading them takes two calls into the tokenizer's binding per
 * text, so a large input is read in slices of IDS_SLICE with a turn of the event loop between them: embedding
 * 40,000 texts otherwise held the event loop for 0.23 s at once (BENCHMARKS.md, "Tokenizing while the model runs").
 */
export async function idsOf(encodings: { getIds(): number[]; getTypeIds(): number[] }[]): Promise<TokenizedText[]> {
  const out: TokenizedText[] = new Array(encodings.length);
  for (let start = 0; start < encodings.length; start += IDS_SLICE) {
    if (start > 0) await new Promise((resolve) => setImmediate(resolve));
    const end = Math.min(start + IDS_SLICE, encodings.length);
    for (let i = start; i < end; i++) out[i] = { ids: encodings[i].getIds(), typeIds: encodings[i].getTypeIds() };
  }
  return out;
}

export class TextTokenizer {
  /** One tokenizer per truncation length (a multi-vector model cuts queries and documents differently). */
  private readonly byLength = new Map<number, Tokenizer>();

  private constructor(
    private readonly file: string,
    private readonly maxLength: number,
    private readonly lowercase: boolean,
    /** Tokens to add as special (unsplittable, not normalized) before use. */
    private readonly specialTokens: string[],
  ) {}

  static load(file: string, maxLength: number, lowercase: boolean, specialTokens: string[] = []): TextTokenizer {
    const tokenizer = new TextTokenizer(file, maxLength, lowercase, specialTokens);
    tokenizer.instance(maxLength);
    return tokenizer;
  }

  private instance(maxLength: number): Tokenizer {
    let tokenizer = this.byLength.get(maxLength);
    if (tokenizer) return tokenizer;
    try {
      tokenizer = Tokenizer.fromFile(this.file);
    } catch (error) {
      throw new ColtrastError('MODEL_FILES', `cannot load tokenizer ${this.file}: ${(error as Error).message}`, { cause: error });
    }
    tokenizer.setTruncation(maxLength);
    tokenizer.disablePadding();
    if (this.specialTokens.length > 0) tokenizer.addSpecialTokens(this.specialTokens);
    this.byLength.set(maxLength, tokenizer);
    return tokenizer;
  }

  /** sentence-transformers' do_lower_case: the text lowercased before tokenizing, when the model says so. */
  private cased(text: string): string {
    return this.lowercase ? text.toLowerCase() : text;
  }

  /** Tokenizes, truncating to `maxLength` tokens (default: the model's maximum sequence length). */
  async encode(texts: string[], maxLength = this.maxLength): Promise<TokenizedText[]> {
    return this.encodeInSlices(texts, maxLength, true);
  }

  /** Tokenizes without the special tokens the tokenizer's template adds (a completion that follows a prompt). */
  async encodeBare(texts: string[], maxLength = this.maxLength): Promise<TokenizedText[]> {
    return this.encodeInSlices(texts, maxLength, false);
  }

  /**
   * encodeBatch on ENCODE_SLICE texts at a time, each slice's encodings read into ids and let go before the next:
   * an encoding holds much more than its ids (the token strings, offsets, masks), and all of a large input's at once
   * took ~8 KB of memory a text (3.2 GB for 400,000 texts).
   */
  private async encodeInSlices(texts: string[], maxLength: number, special: boolean): Promise<TokenizedText[]> {
    const tokenizer = this.instance(maxLength);
    const out: TokenizedText[] = [];
    for (let start = 0; start < texts.length; start += ENCODE_SLICE) {
      const slice = texts.slice(start, start + ENCODE_SLICE).map((t) => this.cased(t));
      const encodings = await tokenizer.encodeBatch(slice, special ? undefined : { addSpecialTokens: false });
      for (const ids of await idsOf(encodings)) out.push(ids);
    }
    return out;
  }

  /** Token ids back to text, special tokens left out. */
  async decode(ids: number[][]): Promise<string[]> {
    if (ids.length === 0) return [];
    return this.instance(this.maxLength).decodeBatch(ids, true);
  }

  /**
   * Tokenizes text pairs as one input each ([CLS] a [SEP] b [SEP], token types 0 then 1), cutting the longer
   * text first until the pair fits `maxLength` (transformers' 'longest_first', as cross-encoders are run).
   */
  async encodePairs(pairs: [string, string][], maxLength = this.maxLength): Promise<TokenizedText[]> {
    const tokenizer = this.instance(maxLength);
    const out: TokenizedText[] = [];
    // The tokenizers package's encodeBatch takes single texts only; each pair is its own call (ENCODE_SLICE at a
    // time, as encode's slices).
    for (let start = 0; start < pairs.length; start += ENCODE_SLICE) {
      const encodings = await Promise.all(pairs.slice(start, start + ENCODE_SLICE).map(([a, b]) => tokenizer.encode(this.cased(a), this.cased(b))));
      for (const ids of await idsOf(encodings)) out.push(ids);
    }
    return out;
  }

  /** A token's id (added tokens included), or null when the vocabulary has no such token. */
  tokenToId(token: string): number | null {
    return this.instance(this.maxLength).tokenToId(token) ?? null;
  }

  /** How many tokens `prompt` takes at the start of a text: with the leading special tokens, without a trailing one
   * (sentence-transformers' prompt length, which include_prompt false leaves out of pooling). */
  async promptLength(prompt: string, maxLength = this.maxLength): Promise<number> {
    const encoding = await this.instance(maxLength).encode(this.cased(prompt));
    const special = encoding.getSpecialTokensMask();
    return special.length - (special[special.length - 1] === 1 ? 1 : 0);
  }

  /** The tokens `text` splits into, without special tokens (to see whether a marker stays one piece). */
  async pieces(text: string): Promise<string[]> {
    return (await this.instance(this.maxLength).encode(this.cased(text), null, { addSpecialTokens: false })).getTokens();
  }
}

/**
 * A text's tokens as the model gets them. `attention` overrides the default (every token attended) and `scored`
 * names the positions pooled or returned as token vectors when they are not the attended ones.
 */
export interface ModelInput extends TokenizedText {
  attention?: number[];
  scored?: number[];
}

/** Indices of `items`, longest first: similar lengths share a batch, and a too-large batch fails at once, not at the end. */
export function longestFirst(items: { ids: number[] }[]): number[] {
  return items.map((_, i) => i).sort((a, b) => items[b].ids.length - items[a].ids.length);
}

/** Packs texts into one right-padded batch as the native encoder expects it. */
export function padBatch(items: ModelInput[]): {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  batchSize: number;
  seqLen: number;
  outputMask?: Int32Array;
} {
  const seqLen = Math.max(1, ...items.map((t) => t.ids.length));
  const size = items.length * seqLen;
  const inputIds = new Int32Array(size);
  const attentionMask = new Int32Array(size);
  const tokenTypeIds = new Int32Array(size);
  const outputMask = items.some((t) => t.scored) ? new Int32Array(size) : undefined;
  items.forEach((t, row) => {
    inputIds.set(t.ids, row * seqLen);
    tokenTypeIds.set(t.typeIds, row * seqLen);
    if (t.attention) attentionMask.set(t.attention, row * seqLen);
    else attentionMask.fill(1, row * seqLen, row * seqLen + t.ids.length);
    if (outputMask) {
      if (t.scored) outputMask.set(t.scored, row * seqLen);
      else outputMask.set(attentionMask.subarray(row * seqLen, row * seqLen + t.ids.length), row * seqLen);
    }
  });
  return { inputIds, attentionMask, tokenTypeIds, batchSize: items.length, seqLen, ...(outputMask && { outputMask }) };
}
