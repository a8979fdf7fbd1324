/**
 * An index folder's index.json (lib/search-index.ts describes the folder), read and checked in one place for the two
 * that read it, Index.load and exportIndex, with docs.jsonl's lines, and the tensors that index.json says its
 * safetensors files hold; and the one way they say a folder is damaged (indexDamaged). Apart from
 * search-index.ts (which imports the native addon and the encoder), so that export.ts reads a folder without them.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IdStore } from './doc-store';
import { ColtrastError } from './errors';
import { readSafetensorsHeader, tensorInfo } from './safetensors';

/** How an index keeps its pooled vectors (BuildOptions.storage). */
export type Storage = 'float32' | 'float16' | 'int8' | 'binary';
export const STORAGES = ['float32', 'float16', 'int8', 'binary'] as const;
/** How an index keeps its token vectors (BuildOptions.tokenStorage). */
export type TokenStorage = 'float16' | 'residual';
export const TOKEN_STORAGES = ['float16', 'residual'] as const;
/** Residual token storage's bits per dimension (BuildOptions.residualBits). */
export const RESIDUAL_BITS = [1, 2, 4];

export interface IndexManifest {
  format: 'coltrast-index';
  version: 1;
  /** source: the folder the building model was loaded from (where `coltrast search` finds it by default). */
  /** truncateDim: the width the building Encoder cut its vectors to (EncoderLoadOptions.truncateDim), if it did. */
  /** fingerprintVersion: the formula of `fingerprint` (absent in indexes saved before 2: 1). */
  /**
   * changedInMemory: the model was changed in memory after it was read from `source` (Encoder.memoryChanges: a LoRA
   * adapter or a head added, trained), in words; its fingerprint then matches no model loaded from a folder.
   */
  /**
   * dtype and quantize: how the building model ran, when not float32 or unquantized (Encoder.load's dtype and quantize):
   * `coltrast search` and `serve` embed queries so by default, where the device allows.
   */
  model: { fingerprint: string; fingerprintVersion?: number; dimension: number; source?: string; truncateDim?: number; changedInMemory?: string[]; dtype?: string; quantize?: string };
  storage: Storage;
  /** Token vectors kept (absent: none; Index.save always writes it, an index.json written by hand may leave it out). */
  lateInteraction?: boolean;
  /** How the token vectors are kept (absent: float16), and a residual store's bits per dimension. */
  tokenStorage?: TokenStorage;
  residualBits?: number;
  /** Token pooling of the documents' token vectors (absent: none). */
  tokenPooling?: { poolFactor: number; protectedTokens: number };
  /** Built with a multi-vector model: token vectors only (absent in indexes from before it existed: false). */
  multiVector?: boolean;
  /**
   * Built with a sparse (SPLADE) encoder: its vectors in sparse.bin (a SparseIndex file), none in vectors.safetensors,
   * model.dimension its vocabulary's size (absent: false).
   */
  sparse?: boolean;
  /**
   * An Encoder's index's second model, a sparse (SPLADE) encoder (BuildOptions.sparseEncoder): its fingerprint (version
   * 2's formula), its width (its vocabulary's size), the folder it was loaded from, and how it ran when not float32 (as
   * `model`'s dtype and quantize); its vectors in sparse.bin.
   */
  sparseEncoder?: { fingerprint: string; fingerprintVersion: number; dimension: number; source?: string; dtype?: string; quantize?: string };
  documents: number;
  /**
   * With token vectors: tokenCountsDigest of the documents' token counts in docs.jsonl, in order. Their sum is checked
   * against tokens.safetensors' rows; counts moved between documents (sum unchanged) would hand each document another's
   * token vectors. Absent in indexes saved before it existed: their counts are not checked beyond the sum.
   */
  tokenCounts?: string;
  /**
   * idsDigest of the documents' ids in docs.jsonl, in order: whole lines moved (ids, texts and token counts together)
   * loaded, and each document was given another's vectors, found by search with full confidence. Absent in indexes
   * saved before it existed: their order is not checked.
   */
  ids?: string;
}

/**
 * The MODEL_FILES error for index folder `where` (resolved), the one way Index.load, exportIndex and this file say a
 * folder's files are damaged or disagree: `index <where>: <message>`.
 */
export function indexDamaged(where: string, message: string, options?: { cause?: unknown }): ColtrastError {
  return new ColtrastError('MODEL_FILES', `index ${where}: ${message}`, options);
}

/** What to do about a folder whose files disagree, the last words of those messages. */
export const SAVE_AGAIN = 'the folder is damaged: save the index again or rebuild it';

/**
 * How to load the model that built an index, as its index.json records it: the folder or hub id it was loaded from
 * (as written: `coltrast search` checks it), its truncateDim when that is a number, and whether it is a sparse encoder.
 */
export function builtModelOptions(manifest: IndexManifest): BuiltModelOptions {
  const model = manifest.model ?? {};
  const second = manifest.sparseEncoder;
  return {
    source: model.source,
    ...(typeof model.truncateDim === 'number' ? { truncateDim: model.truncateDim } : {}),
    ...(typeof model.dtype === 'string' && { dtype: model.dtype }),
    ...(typeof model.quantize === 'string' && { quantize: model.quantize }),
    ...(manifest.sparse === true && { sparse: true }),
    ...(second !== null && typeof second === 'object' && typeof second.source === 'string' && { sparseSource: second.source }),
    ...(second !== null && typeof second === 'object' && typeof second.dtype === 'string' && { sparseDtype: second.dtype }),
    ...(second !== null && typeof second === 'object' && typeof second.quantize === 'string' && { sparseQuantize: second.quantize }),
  };
}

/** What index.json says of the models that built an index: what loads them again as they ran (builtModelOptions). */
export interface BuiltModelOptions {
  source?: string;
  truncateDim?: number;
  sparse?: boolean;
  dtype?: string;
  quantize?: string;
  /** The second, sparse model's folder, dtype and quantize (index.json's sparseEncoder). */
  sparseSource?: string;
  sparseDtype?: string;
  sparseQuantize?: string;
}

/**
 * The index.json of the index folder `where` (resolved), parsed and checked: its format and version, a model with a
 * fingerprint and a width, a known storage, booleans where there are booleans, a count of documents, a known token
 * storage and residual bits. Every problem is a MODEL_FILES error naming the folder, index.json and what to do. Whether
 * it fits a model (the fingerprint, the width, multi-vector) is the loader's to check.
 */
export function readIndexManifest(where: string): IndexManifest {
  const file = path.join(where, 'index.json');
  if (!fs.existsSync(file)) throw indexDamaged(where, 'no index.json (not an index folder)');
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw indexDamaged(where, `index.json is not valid JSON (${(error as Error).message})`);
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m) || m.format !== 'coltrast-index' || m.version !== 1) throw indexDamaged(where, 'index.json is not a coltrast index of format version 1');
  const says = (key: string, value: unknown, want: string) => indexDamaged(where, `index.json says ${key} ${JSON.stringify(value)}, not ${want}; ${SAVE_AGAIN}`);
  const model = m.model as Record<string, unknown> | null | undefined;
  if (model === null || typeof model !== 'object' || Array.isArray(model)) throw says('model', model, 'an object { fingerprint, dimension, ... }');
  if (typeof model.fingerprint !== 'string') throw says('model.fingerprint', model.fingerprint, "a string (the sha256 of the model's files)");
  if (!Number.isSafeInteger(model.dimension) || (model.dimension as number) < 1) throw says('model.dimension', model.dimension, 'a positive whole number');
  const numerics = (key: string, o: Record<string, unknown>) => {
    if (o.dtype !== undefined && !['bfloat16', 'float16'].includes(o.dtype as string)) throw says(`${key}.dtype`, o.dtype, '"bfloat16" or "float16" (absent: float32)');
    if (o.quantize !== undefined && o.quantize !== 'int8') throw says(`${key}.quantize`, o.quantize, '"int8" (absent: none)');
  };
  numerics('model', model);
  if (!(STORAGES as readonly unknown[]).includes(m.storage)) throw says('storage', m.storage, `one of ${STORAGES.join(', ')}`);
  if (m.lateInteraction !== undefined && typeof m.lateInteraction !== 'boolean') throw says('lateInteraction', m.lateInteraction, 'true or false');
  for (const key of ['multiVector', 'sparse']) if (m[key] !== undefined && typeof m[key] !== 'boolean') throw says(key, m[key], 'true or false');
  const second = m.sparseEncoder as Record<string, unknown> | null | undefined;
  if (second !== undefined) {
    if (second === null || typeof second !== 'object' || Array.isArray(second)) throw says('sparseEncoder', second, 'an object { fingerprint, fingerprintVersion, dimension, source }');
    if (typeof second.fingerprint !== 'string') throw says('sparseEncoder.fingerprint', second.fingerprint, "a string (the sha256 of the sparse encoder's files)");
    if (!Number.isSafeInteger(second.dimension) || (second.dimension as number) < 1) throw says('sparseEncoder.dimension', second.dimension, 'a positive whole number');
    if (m.sparse === true) throw says('sparseEncoder', second, "absent in a sparse encoder's index (its own vectors are the sparse ones)");
    if (m.multiVector === true) throw says('sparseEncoder', second, 'absent in a multi-vector index');
    numerics('sparseEncoder', second);
  }
  if (m.tokenStorage !== undefined && !(TOKEN_STORAGES as readonly unknown[]).includes(m.tokenStorage)) throw says('tokenStorage', m.tokenStorage, `one of ${TOKEN_STORAGES.join(', ')}`);
  if (m.tokenStorage === 'residual' && !RESIDUAL_BITS.includes(m.residualBits as number)) throw says('residualBits', m.residualBits, '1, 2 or 4');
  if (!Number.isSafeInteger(m.documents) || (m.documents as number) < 0) throw says('documents', m.documents, 'a count of documents');
  for (const key of ['tokenCounts', 'ids']) {
    if (m[key] !== undefined && (typeof m[key] !== 'string' || !/^[0-9a-f]{64}$/.test(m[key] as string))) throw says(key, m[key], 'a sha256 (64 hexadecimal digits)');
  }
  return m as unknown as IndexManifest;
}

/** A docs.jsonl line as the index wrote it: its id, text, metadata and (with token vectors) token count. */
export interface IndexDocLine {
  id: string;
  text: string;
  /** (null too, as a hand-written line may have it: kept as it is, as before) */
  metadata?: Record<string, unknown>;
  tokens?: number;
}

/**
 * docs.jsonl's line `lineNumber` (not blank), parsed and checked for IndexDocsReader (so as Index.load and exportIndex
 * both read it): an object with a non-empty string id, a string text and metadata that is an object when present (null
 * was a TypeError naming no file, and metadata of 5 was exported as jsonb 5); a problem is `bad`'s error, naming the line.
 */
function readIndexDocLine(line: string, lineNumber: number, bad: (message: string) => Error): IndexDocLine {
  let doc: IndexDocLine;
  try {
    doc = JSON.parse(line);
  } catch {
    throw bad(`docs.jsonl:${lineNumber} is not valid JSON`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc) || typeof doc.id !== 'string' || doc.id.length === 0 || typeof doc.text !== 'string') {
    throw bad(`docs.jsonl:${lineNumber} needs a non-empty string "id" and a string "text"`);
  }
  if (doc.metadata !== undefined && doc.metadata !== null && (typeof doc.metadata !== 'object' || Array.isArray(doc.metadata))) throw bad(`docs.jsonl:${lineNumber} has "metadata" that is not an object`);
  return doc;
}

/**
 * index.json's tokenCounts: sha256 of the documents' token counts in order, each 4 bytes little-endian. A million
 * documents' counts hash in some 30 ms (one 4 MB buffer, not a hash update, nor a Buffer write, per document), against
 * seconds to read their docs.jsonl.
 */
export function tokenCountsDigest(counts: readonly number[]): string {
  const bytes = Buffer.from(Uint32Array.from(counts).buffer);
  if (os.endianness() === 'BE') bytes.swap32();
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * index.json's ids: sha256 of the documents' ids in order, each as a JSON string followed by a comma (a string's JSON
 * ends where it ends, so no two lists of ids give the same bytes). Fed a few thousand ids at a time as one
 * JSON.stringify of them: a million ids of 20-odd characters digest in some 70-100 ms, where a hash update per id
 * took 200-550 ms (against seconds to read or write their docs.jsonl). `add` as the ids are read or written, `digest` once.
 */
export class IdsDigest {
  private readonly hash = createHash('sha256');
  private batch: string[] = [];

  add(id: string): void {
    this.batch.push(id);
    if (this.batch.length === 4096) this.flush();
  }

  digest(): string {
    this.flush();
    return this.hash.digest('hex');
  }

  private flush(): void {
    // '["a","b"]' less its brackets, and a comma: '"a","b",', so the digest does not depend on where batches end.
    if (this.batch.length > 0) this.hash.update(`${JSON.stringify(this.batch).slice(1, -1)},`);
    this.batch = [];
  }
}

/** index.json's ids for `ids` in order (IdsDigest says what is hashed). */
export function idsDigest(ids: Iterable<string>): string {
  const digest = new IdsDigest();
  for (const id of ids) digest.add(id);
  return digest.digest();
}

/**
 * docs.jsonl read in order as Index.load and exportIndex both read it: each line by readIndexDocLine, an id that an
 * earlier line has refused with both lines' numbers (exportIndex wrote both, and PostgreSQL's COPY then refused the
 * file on its primary key, far from the cause), and the ids digested for `finish`'s check against index.json.
 * `ids`: where the documents read are found by id, `positionOf` where the caller keeps them (Index.load's DocStore),
 * else `documents`, how many to make room for in the reader's own IdStore (ids outside the heap: a Map of millions of
 * ids stops the event loop each time it doubles, as doc-store.ts says).
 */
export class IndexDocsReader {
  /** Documents read. */
  documents = 0;
  /** For each blank line, the position of the document after it (a document's line: position + 1 + blanks before it). */
  private readonly blanks: number[] = [];
  private readonly own?: IdStore;
  private readonly positionOf: (id: string) => number | undefined;
  private readonly ids = new IdsDigest();

  constructor(
    private readonly where: string,
    ids: { positionOf: (id: string) => number | undefined } | { documents: number },
  ) {
    if ('positionOf' in ids) this.positionOf = ids.positionOf;
    else {
      const own = (this.own = new IdStore(ids.documents));
      this.positionOf = (id) => own.position(id);
    }
  }

  /** The document on line `lineNumber` (from 1), or undefined for a blank line. */
  read(line: string, lineNumber: number): IndexDocLine | undefined {
    if (line.length === 0) {
      this.blanks.push(this.documents);
      return undefined;
    }
    const doc = readIndexDocLine(line, lineNumber, (message) => indexDamaged(this.where, message));
    const earlier = this.positionOf(doc.id);
    if (earlier !== undefined) {
      const earlierLine = earlier + 1 + this.blanks.filter((before) => before <= earlier).length;
      throw indexDamaged(this.where, `docs.jsonl:${lineNumber} repeats the id "${doc.id}" of docs.jsonl:${earlierLine}; ${SAVE_AGAIN}`);
    }
    this.own?.push(doc.id);
    this.ids.add(doc.id);
    this.documents++;
    return doc;
  }

  /** Refuses a file that ended with another count of documents than index.json's, or other ids or another order. */
  finish(manifest: IndexManifest): void {
    if (this.documents !== manifest.documents) throw indexDamaged(this.where, `docs.jsonl has ${this.documents} documents, index.json says ${manifest.documents}`);
    if (manifest.ids !== undefined && this.ids.digest() !== manifest.ids) {
      throw indexDamaged(
        this.where,
        "the ids in docs.jsonl, in their order, are not those the index was saved with (index.json's ids digest differs): lines moved give documents other documents' vectors, and an id changed names another document's; " +
          SAVE_AGAIN,
      );
    }
  }
}

/** The safetensors dtype of each vector storage: what Index.save writes (native/search/dense_store.cc). */
export const STORAGE_DTYPES: Record<Storage, string> = { float32: 'F32', float16: 'F16', int8: 'I8', binary: 'U8' };

/** A tensor an index file must hold: its dtype and shape (undefined: any size on that axis). */
export interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: (number | undefined)[];
  /** May be absent (left to the native loader, which knows when: an int8 store's ranges, absent while it has no rows). */
  optional?: boolean;
}

/** The tensors of vectors.safetensors for `storage` and vectors of width `dim` (the row count is the loader's to check). */
export function vectorTensors(storage: Storage, dim: number): ExpectedTensor[] {
  const vectors = { name: 'vectors', dtype: STORAGE_DTYPES[storage], shape: [undefined, storage === 'binary' ? Math.ceil(dim / 8) : dim] };
  return storage === 'int8' ? [vectors, { name: 'ranges', dtype: 'F32', shape: [2, dim], optional: true }] : [vectors];
}

/**
 * The tensors of tokens.safetensors for token vectors of width `dim` kept as `storage`: float16 rows. A residual
 * store's are none here: its native loader checks each tensor's dtype and shape, and the file's bits against
 * index.json's (native/search/residual_store.cc), with messages that say more than these would.
 */
export function tokenTensors(storage: TokenStorage, dim: number): ExpectedTensor[] {
  return storage === 'float16' ? [{ name: 'vectors', dtype: 'F16', shape: [undefined, dim] }] : [];
}

/** What is wrong with `header`'s tensors against `expected`, in words, or undefined when they agree. */
export function tensorsMismatch(header: Record<string, unknown>, expected: ExpectedTensor[]): string | undefined {
  const shapeText = (shape: (number | undefined)[]) => `[${shape.map((n) => n ?? 'rows').join(', ')}]`;
  for (const want of expected) {
    const entry = header[want.name] as Parameters<typeof tensorInfo>[0];
    if (entry === undefined && want.optional) continue;
    const info = tensorInfo(entry);
    const wanted = `${want.dtype} ${shapeText(want.shape)}`;
    if (!info) return `holds no well-formed "${want.name}" tensor, and index.json says it holds ${wanted}`;
    if (info.dtype !== want.dtype || info.shape.length !== want.shape.length || want.shape.some((n, i) => n !== undefined && info.shape[i] !== n)) {
      return `holds "${want.name}" ${info.dtype} [${info.shape.join(', ')}], and index.json says ${wanted}`;
    }
  }
  return undefined;
}

/**
 * Refuses the index file `name` in `where` when its header disagrees with what index.json says it holds (`expected`;
 * `says`: index.json's words for it, e.g. `storage int8`): the native loader converts a float file of another dtype
 * silently, so codes edited under a float storage (or floats under another float storage) searched as the wrong
 * numbers. A file that is missing or whose header cannot be read is left to the loader, which says what is wrong.
 */
export function checkIndexTensors(where: string, name: string, expected: ExpectedTensor[], says: string): void {
  const file = path.join(where, name);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return;
  }
  try {
    const read = readSafetensorsHeader(fd, 1 << 24);
    if ('problem' in read) return;
    checkIndexHeader(where, name, read.header, expected, says);
  } finally {
    fs.closeSync(fd);
  }
}

/** checkIndexTensors of a header already read (exportIndex reads it for the offsets of the rows too). */
export function checkIndexHeader(where: string, name: string, header: Record<string, unknown>, expected: ExpectedTensor[], says: string): void {
  const problem = tensorsMismatch(header, expected);
  if (problem) throw indexDamaged(where, `${name} ${problem} (${says}): the file or index.json was changed after the index was saved; ${SAVE_AGAIN}`);
}
