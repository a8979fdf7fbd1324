/**
 * An index folder's index.json (lib/search-index.ts describes the folder), read and checked in one place for the two
 * that read it, Index.load and exportIndex, and the tensors that index.json says its safetensors files hold. Apart from
 * search-index.ts (which imports the native addon and the encoder), so that export.ts reads a folder without them.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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
  model: { fingerprint: string; fingerprintVersion?: number; dimension: number; source?: string; truncateDim?: number; changedInMemory?: string[] };
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
  documents: number;
  /**
   * With token vectors: tokenCountsDigest of the documents' token counts in docs.jsonl, in order. Their sum is checked
   * against tokens.safetensors' rows; counts moved between documents (sum unchanged) would hand each document another's
   * token vectors. Absent in indexes saved before it existed: their counts are not checked beyond the sum.
   */
  tokenCounts?: string;
}

/** The MODEL_FILES error for index folder `where`. */
function damaged(where: string, message: string): ColtrastError {
  return new ColtrastError('MODEL_FILES', `index ${where}: ${message}`);
}

const SAVE_AGAIN = 'the folder is damaged: save the index again or rebuild it';

/**
 * The index.json of the index folder `where` (resolved), parsed and checked: its format and version, a model with a
 * fingerprint and a width, a known storage, booleans where there are booleans, a count of documents, a known token
 * storage and residual bits. Every problem is a MODEL_FILES error naming the folder, index.json and what to do. Whether
 * it fits a model (the fingerprint, the width, multi-vector) is the loader's to check.
 */
export function readIndexManifest(where: string): IndexManifest {
  const file = path.join(where, 'index.json');
  if (!fs.existsSync(file)) throw damaged(where, 'no index.json (not an index folder)');
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw damaged(where, `index.json is not valid JSON (${(error as Error).message})`);
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m) || m.format !== 'coltrast-index' || m.version !== 1) throw damaged(where, 'index.json is not a coltrast index of format version 1');
  const says = (key: string, value: unknown, want: string) => damaged(where, `index.json says ${key} ${JSON.stringify(value)}, not ${want}; ${SAVE_AGAIN}`);
  const model = m.model as Record<string, unknown> | null | undefined;
  if (model === null || typeof model !== 'object' || Array.isArray(model)) throw says('model', model, 'an object { fingerprint, dimension, ... }');
  if (typeof model.fingerprint !== 'string') throw says('model.fingerprint', model.fingerprint, "a string (the sha256 of the model's files)");
  if (!Number.isSafeInteger(model.dimension) || (model.dimension as number) < 1) throw says('model.dimension', model.dimension, 'a positive whole number');
  if (!(STORAGES as readonly unknown[]).includes(m.storage)) throw says('storage', m.storage, `one of ${STORAGES.join(', ')}`);
  if (m.lateInteraction !== undefined && typeof m.lateInteraction !== 'boolean') throw says('lateInteraction', m.lateInteraction, 'true or false');
  if (m.multiVector !== undefined && typeof m.multiVector !== 'boolean') throw says('multiVector', m.multiVector, 'true or false');
  if (m.tokenStorage !== undefined && !(TOKEN_STORAGES as readonly unknown[]).includes(m.tokenStorage)) throw says('tokenStorage', m.tokenStorage, `one of ${TOKEN_STORAGES.join(', ')}`);
  if (m.tokenStorage === 'residual' && !RESIDUAL_BITS.includes(m.residualBits as number)) throw says('residualBits', m.residualBits, '1, 2 or 4');
  if (!Number.isSafeInteger(m.documents) || (m.documents as number) < 0) throw says('documents', m.documents, 'a count of documents');
  if (m.tokenCounts !== undefined && (typeof m.tokenCounts !== 'string' || !/^[0-9a-f]{64}$/.test(m.tokenCounts))) throw says('tokenCounts', m.tokenCounts, 'a sha256 (64 hexadecimal digits)');
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
 * docs.jsonl's line `lineNumber` (not blank), parsed and checked as Index.load and exportIndex both read it: an object
 * with a non-empty string id, a string text and metadata that is an object when present (null was a TypeError naming
 * no file, and metadata of 5 was exported as jsonb 5); a problem is `bad`'s error, naming the line.
 */
export function readIndexDocLine(line: string, lineNumber: number, bad: (message: string) => Error): IndexDocLine {
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
    const problem = tensorsMismatch(read.header, expected);
    if (problem) throw damaged(where, `${name} ${problem} (${says}): the file or index.json was changed after the index was saved; ${SAVE_AGAIN}`);
  } finally {
    fs.closeSync(fd);
  }
}
