/**
 * Masked-language-model training's inputs (BERT's objective): the tokens a batch masks and what the model must
 * predict there, drawn as transformers' DataCollatorForLanguageModeling draws them. Each position that is not a special
 * token (the tokenizer's [CLS], [SEP], [PAD], [UNK], [MASK], ...) is chosen with `probability`; of those chosen, 80%
 * become the mask token, 10% a random token of the vocabulary and 10% stay; the labels are the original tokens at the
 * chosen positions and -100 (no label) elsewhere. Seeded: a batch's masks are a function of its seed, so that a resumed
 * run masks as the run it continues.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { seededRandom } from './random';

/** What masking needs of a tokenizer: the mask token's id and the special tokens' ids. */
export interface MaskingTokens {
  maskId: number;
  special: Set<number>;
}

/**
 * The mask token (tokenizer_config.json's or special_tokens_map.json's mask_token, else an added token [MASK] or <mask>)
 * and the special tokens (tokenizer.json's added tokens marked special) of the tokenizer files `tokenizerJson` and the
 * folder `dir` beside it; a tokenizer without a mask token is UNSUPPORTED_MODEL, naming the folder.
 */
export function maskingTokens(tokenizerJson: Buffer | string, dir: string): MaskingTokens {
  const parsed = JSON.parse(typeof tokenizerJson === 'string' ? tokenizerJson : tokenizerJson.toString('utf8')) as { added_tokens?: { id: number; content: string; special?: boolean }[] };
  const added = parsed.added_tokens ?? [];
  const special = new Set(added.filter((t) => t.special).map((t) => t.id));
  const named = (file: string): string | undefined => {
    const at = path.join(dir, file);
    if (!fs.existsSync(at)) return undefined;
    const token = (JSON.parse(fs.readFileSync(at, 'utf8')) as { mask_token?: string | { content?: string } }).mask_token;
    return typeof token === 'string' ? token : token?.content;
  };
  const name = named('tokenizer_config.json') ?? named('special_tokens_map.json');
  const mask = added.find((t) => (name !== undefined ? t.content === name : t.content === '[MASK]' || t.content === '<mask>'));
  if (!mask) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${dir}: its tokenizer has no mask token${name ? ` (it names "${name}", which is no token of tokenizer.json)` : ''}, which masked-language-model training needs`);
  }
  return { maskId: mask.id, special };
}

/**
 * The batch `ids` [rows × seqLen] masked (a copy) and its labels, drawn from `seed`: positions where `attention` is 0
 * or the token is special are never chosen; `vocabulary`: the random tokens' range. Where the draw chooses no position
 * at all (a batch of a few short texts), its first choosable position is chosen, so that every batch has a label.
 */
export function maskTokens(
  ids: Int32Array,
  attention: Int32Array,
  tokens: MaskingTokens,
  vocabulary: number,
  probability: number,
  seed: number,
): { ids: Int32Array; labels: Int32Array } {
  const random = seededRandom(seed).next;
  const masked = ids.slice();
  const labels = new Int32Array(ids.length).fill(-100);
  let first = -1;
  let any = false;
  for (let i = 0; i < ids.length; i++) {
    if (attention[i] === 0 || tokens.special.has(ids[i])) continue;
    if (first < 0) first = i;
    if (random() >= probability) continue;
    choose(i);
  }
  if (!any && first >= 0) choose(first);
  return { ids: masked, labels };

  function choose(i: number): void {
    any = true;
    labels[i] = ids[i];
    const r = random();
    if (r < 0.8) masked[i] = tokens.maskId;
    else if (r < 0.9) masked[i] = Math.floor(random() * vocabulary);
  }
}
