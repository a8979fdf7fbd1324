/**
 * The worker thread that owns every Hugging Face `tokenizers` object of the process (lib/tokenizer.ts starts it and
 * sends it the work). The package reads a tokenizer.json synchronously, ~0.4 s for a tokenizer of Qwen3's size
 * (BENCHMARKS.md), which here holds this thread, not the application's event loop. Each request names its tokenizer
 * by file, lowercasing and added special tokens; one `Tokenizer` is built per (that, truncation length) on first use,
 * so a restarted worker rebuilds what it is asked for. Ids go back packed in typed arrays, moved, not copied.
 */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from 'tokenizers';
import { ENCODE_SLICE, HOST_ROLE, fileVersion, lowercaseOrigins, specKey, utf8Boundaries, type DecodedIds, type PackedIds, type TokenOffsets, type TokenizerReply, type TokenizerRequest, type TokenizerSpec } from './tokenizer';

const tokenizers = new Map<string, Map<number, Tokenizer>>();

/** Thrown while a tokenizer.json is read: the main thread reports it as the model's files' fault. */
class LoadError extends Error {}

function instance(spec: TokenizerSpec, maxLength: number): Tokenizer {
  const key = specKey(spec);
  let tokenizer = tokenizers.get(key)?.get(maxLength);
  if (tokenizer) return tokenizer;
  try {
    // The file the model was loaded with, or a refusal: a worker restarted after the folder was rewritten would
    // otherwise tokenize with the new file for a model loaded with the old one.
    const now = fileVersion(fs.statSync(spec.file));
    if (spec.version && now !== spec.version) {
      throw new LoadError(`${spec.file} changed after the model was loaded (a folder rewritten in place?): load the model again`);
    }
    tokenizer = Tokenizer.fromFile(spec.file);
  } catch (error) {
    if (error instanceof LoadError) throw error;
    // The tokenizers package runs its prefix into the cause ("Error loading from fileEOF while parsing ..."); the
    // cause alone says what is wrong with the file.
    const cause = String((error as Error).message).replace(/^Error loading from file(?=\S)/, '');
    throw new LoadError(`cannot load tokenizer ${spec.file}: ${cause}; it must be a whole tokenizer.json as Hugging Face tokenizers saves one (tokenizer.save(path) in Python)`);
  }
  tokenizer.setTruncation(maxLength);
  tokenizer.disablePadding();
  if (spec.specialTokens.length > 0) tokenizer.addSpecialTokens(spec.specialTokens);
  // Kept only once built: a file that fails to load holds no entry (heldTokenizers would list it).
  let byLength = tokenizers.get(key);
  if (!byLength) tokenizers.set(key, (byLength = new Map()));
  byLength.set(maxLength, tokenizer);
  return tokenizer;
}

/** Each encoding's ids and token types, packed. */
function pack(encodings: { getIds(): number[]; getTypeIds(): number[] }[][]): PackedIds {
  const ids: number[][] = [];
  const typeIds: number[][] = [];
  for (const slice of encodings) {
    for (const e of slice) {
      ids.push(e.getIds());
      typeIds.push(e.getTypeIds());
    }
  }
  const ends = new Int32Array(ids.length);
  let total = 0;
  ids.forEach((x, i) => (ends[i] = total += x.length));
  const packed = { ids: new Int32Array(total), typeIds: new Int32Array(total), ends };
  ids.forEach((x, i) => {
    const start = ends[i] - x.length;
    packed.ids.set(x, start);
    packed.typeIds.set(typeIds[i], start);
  });
  return packed;
}

/**
 * Each encoding's ids, special-tokens mask and offsets, the offsets turned from the package's code points of the text
 * as tokenized (lowercased when `lowercase`) into UTF-8 bytes of the text as given.
 */
function packOffsets(tokenizer: Tokenizer, texts: string[], encodings: { getIds(): number[]; getSpecialTokensMask(): number[]; getOffsets(): number[][] }[], lowercase: boolean): TokenOffsets {
  const ids = encodings.map((e) => e.getIds());
  const ends = new Int32Array(encodings.length);
  let total = 0;
  ids.forEach((x, i) => (ends[i] = total += x.length));
  const out: TokenOffsets = { ids: new Int32Array(total), special: new Uint8Array(total), starts: new Int32Array(total), stops: new Int32Array(total), ends, specialTexts: [] };
  encodings.forEach((e, i) => {
    const from = i === 0 ? 0 : ends[i - 1];
    const bytes = utf8Boundaries(texts[i]);
    const last = bytes.length - 1;
    const origins = lowercase ? lowercaseOrigins(texts[i]) : undefined;
    const mask = e.getSpecialTokensMask();
    const offsets = e.getOffsets();
    out.ids.set(ids[i], from);
    for (let k = 0; k < mask.length; k++) {
      out.special[from + k] = mask[k];
      // By id, not getTokens(): the other tokens' strings are not needed, and all of them cost as much as the offsets.
      if (mask[k] === 1) out.specialTexts.push(tokenizer.idToToken(ids[i][k]) ?? '');
      let [start, stop] = offsets[k];
      if (origins) {
        const s = origins[Math.min(start, origins.length - 1)];
        // The end of the code point the last one came from: a token of half a lowercased 'İ' still covers it.
        stop = stop === start ? s : origins[Math.min(stop - 1, origins.length - 1)] + 1;
        start = s;
      }
      out.starts[from + k] = bytes[Math.min(start, last)];
      out.stops[from + k] = bytes[Math.min(stop, last)];
    }
  });
  return out;
}

async function handle(request: TokenizerRequest): Promise<unknown> {
  const { spec } = request;
  const cased = (text: string) => (spec.lowercase ? text.toLowerCase() : text);
  switch (request.op) {
    case 'load':
      instance(spec, request.maxLength);
      return null;
    case 'encode': {
      const tokenizer = instance(spec, request.maxLength);
      const slices = [];
      for (let start = 0; start < request.texts.length; start += ENCODE_SLICE) {
        const texts = request.texts.slice(start, start + ENCODE_SLICE).map(cased);
        slices.push(await tokenizer.encodeBatch(texts, request.special ? undefined : { addSpecialTokens: false }));
      }
      return pack(slices);
    }
    case 'encodePairs': {
      // encodeBatch takes single texts only (the package's binding reads each input as a string: an [a, b] array is
      // refused, "Failed to convert JavaScript value ... into rust type `String`"), so each pair is its own encode call.
      // Each side encoded by encodeBatch and joined by postProcess is no substitute: a pair past maxLength comes out
      // split one token differently from encode(a, b), and it was no faster (20,000 pairs on 2 cores).
      const tokenizer = instance(spec, request.maxLength);
      const slices = [];
      for (let start = 0; start < request.pairs.length; start += ENCODE_SLICE) {
        slices.push(await Promise.all(request.pairs.slice(start, start + ENCODE_SLICE).map(([a, b]) => tokenizer.encode(cased(a), cased(b)))));
      }
      return pack(slices);
    }
    case 'decode':
      return request.ids.length === 0 ? [] : instance(spec, request.maxLength).decodeBatch(request.ids, true);
    case 'decodeIds': {
      const tokenizer = instance(spec, request.maxLength);
      for (let i = 0; i < request.ids.length; i++) {
        const j = request.ids[i].findIndex((id) => tokenizer.idToToken(id) === null);
        if (j >= 0) return { unknown: [i, j, request.ids[i][j]], vocabularySize: tokenizer.getVocabSize(true) } satisfies DecodedIds;
      }
      return { texts: await tokenizer.decodeBatch(request.ids, request.skipSpecial) } satisfies DecodedIds;
    }
    case 'tokenOffsets': {
      const tokenizer = instance(spec, request.maxLength);
      const encodings = [];
      for (let start = 0; start < request.texts.length; start += ENCODE_SLICE) {
        const texts = request.texts.slice(start, start + ENCODE_SLICE).map(cased);
        encodings.push(...(await tokenizer.encodeBatch(texts, request.special ? undefined : { addSpecialTokens: false })));
      }
      return packOffsets(tokenizer, request.texts, encodings, spec.lowercase);
    }
    case 'tokenToIds': {
      const tokenizer = instance(spec, request.maxLength);
      return request.tokens.map((token) => tokenizer.tokenToId(token) ?? null);
    }
    case 'idsToTokens': {
      const tokenizer = instance(spec, request.maxLength);
      return request.ids.map((id) => tokenizer.idToToken(id) ?? null);
    }
    case 'promptLength': {
      const special = (await instance(spec, request.maxLength).encode(cased(request.prompt))).getSpecialTokensMask();
      return special.length - (special[special.length - 1] === 1 ? 1 : 0);
    }
    case 'pieces':
      return (await instance(spec, request.maxLength).encode(cased(request.text), null, { addSpecialTokens: false })).getTokens();
    case 'release':
      tokenizers.delete(specKey(spec));
      return null;
    case 'held':
      return [...tokenizers.keys()].map((key) => (JSON.parse(key) as [string])[0]);
  }
}

// Only as the worker lib/tokenizer.ts starts (an application's own worker thread that loads this file does nothing).
if (workerData?.role === HOST_ROLE) parentPort!.on('message', (request: TokenizerRequest) => {
  handle(request).then(
    (result) => {
      // Typed arrays (PackedIds, TokenOffsets) are moved, not copied: each has a buffer of its own.
      const transfer = result !== null && typeof result === 'object' ? Object.values(result).filter((v): v is Int32Array | Uint8Array => ArrayBuffer.isView(v)).map((v) => v.buffer) : [];
      parentPort!.postMessage({ id: request.id, result } satisfies TokenizerReply, transfer as ArrayBuffer[]);
    },
    (error: unknown) => {
      parentPort!.postMessage({ id: request.id, error: error instanceof Error ? error.message : String(error), loading: error instanceof LoadError } satisfies TokenizerReply);
    },
  );
});
