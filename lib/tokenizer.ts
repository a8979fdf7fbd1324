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

export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly lowercase: boolean,
  ) {}

  static load(file: string, maxLength: number, lowercase: boolean): TextTokenizer {
    let tokenizer: Tokenizer;
    try {
      tokenizer = Tokenizer.fromFile(file);
    } catch (error) {
      throw new ColtrastError('MODEL_FILES', `cannot load tokenizer ${file}: ${(error as Error).message}`, { cause: error });
    }
    tokenizer.setTruncation(maxLength);
    tokenizer.disablePadding();
    return new TextTokenizer(tokenizer, lowercase);
  }

  async encode(texts: string[]): Promise<TokenizedText[]> {
    if (texts.length === 0) return [];
    const input = this.lowercase ? texts.map((t) => t.toLowerCase()) : texts;
    const encodings = await this.tokenizer.encodeBatch(input);
    return encodings.map((e) => ({ ids: e.getIds(), typeIds: e.getTypeIds() }));
  }
}

/** Packs texts into one right-padded batch as the native encoder expects it. */
export function padBatch(items: TokenizedText[]): {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  batchSize: number;
  seqLen: number;
} {
  const seqLen = Math.max(1, ...items.map((t) => t.ids.length));
  const size = items.length * seqLen;
  const inputIds = new Int32Array(size);
  const attentionMask = new Int32Array(size);
  const tokenTypeIds = new Int32Array(size);
  items.forEach((t, row) => {
    inputIds.set(t.ids, row * seqLen);
    tokenTypeIds.set(t.typeIds, row * seqLen);
    attentionMask.fill(1, row * seqLen, row * seqLen + t.ids.length);
  });
  return { inputIds, attentionMask, tokenTypeIds, batchSize: items.length, seqLen };
}
