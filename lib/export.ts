/**
 * Export of a saved index folder (see search-index.ts for the format) to a vector database: today a SQL
 * file for PostgreSQL with the pgvector extension, loaded with `psql -d <db> -f <file.sql>`.
 *
 * The file creates the extension and a table (id text primary key, text, metadata jsonb, embedding
 * vector(dim)), loads the rows with `COPY ... FROM stdin` (text format), and builds an approximate index
 * with `vector_ip_ops`: coltrast's vectors are L2-normalized and scored by inner product, so queries order by
 * `embedding <#> '[...]'` (pgvector's negative inner product) and `-(embedding <#> q)` is coltrast's score.
 * Rows are streamed from docs.jsonl and vectors.safetensors (a million rows never sit in memory as one
 * string) into a temporary file that is renamed into place when complete.
 */
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { ColtrastError } from './errors';
import { IndexDocsReader, checkIndexHeader, indexDamaged, readIndexManifest, vectorTensors, type IndexManifest } from './index-manifest';
import { halfToFloat, readSafetensorsHeader, tensorInfo } from './safetensors';
import { atomicOutput, checkOutputFile } from './files';
import { booleanValue, checkOptions, invalid, nonEmptyString, oneOf } from './validate';

export interface ExportOptions {
  /** 'pgvector' (the only format so far). */
  format?: 'pgvector';
  /** Table name: lowercase letters, digits and _, optionally schema-qualified (default 'coltrast_docs'). */
  table?: string;
  /**
   * The approximate index: 'auto' (default) decides when the file is loaded, from the installed pgvector:
   * HNSW from 0.5.0 on, IVFFlat before; 'hnsw', 'ivfflat', or 'none' (exact scans only).
   */
  vectorIndex?: 'auto' | 'hnsw' | 'ivfflat' | 'none';
  /** Drop an existing table of that name first (default false: loading fails if it exists). */
  replace?: boolean;
  /** Called every 10,000 rows and at the end. */
  onProgress?: (done: number, total: number) => void;
}

export interface ExportResult {
  output: string;
  table: string;
  rows: number;
  dimension: number;
}

const KEYS = ['format', 'table', 'vectorIndex', 'replace', 'onProgress'] as const;
/** pgvector's limits: the vector type holds up to 16,000 dimensions, its HNSW and IVFFlat indexes 2,000. */
const MAX_DIM = 16000;
const MAX_INDEXED_DIM = 2000;
const ROWS_PER_READ = 4096;

/** COPY text format: backslash, tab, newline and carriage return are the characters that need escapes. */
export function copyText(value: string): string {
  return value.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

/** The shortest decimal that reads back (float4, as pgvector parses it) as exactly this float32. */
export function float32Text(x: number): string {
  if (x === 0) return '0';
  for (let digits = 6; digits < 9; digits++) {
    const s = x.toPrecision(digits);
    if (Math.fround(Number(s)) === x) return String(Number(s));
  }
  return String(Number(x.toPrecision(9)));
}

/** Whether a JSON value holds a NUL character in any string or key (jsonb refuses \u0000). */
function holdsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(holdsNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\0') || holdsNul(v));
  return false;
}

function checkTable(name: string): { qualified: string; base: string } {
  if (typeof name !== 'string' || !/^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    throw new ColtrastError('INVALID_ARGUMENT', `table name "${name}": use lowercase letters, digits and _ (at most 63), optionally schema.table`);
  }
  const parts = name.split('.');
  return { qualified: parts.map((p) => `"${p}"`).join('.'), base: parts[parts.length - 1] };
}

/** One line for a SQL comment (no line breaks can end the comment early). */
function commentSafe(value: unknown): string {
  return String(value).replace(/[\r\n]+/g, ' ');
}

/** The rows of a saved index folder in order: each document with its stored vector (as float32). */
async function* indexRows(dir: string, manifest: IndexManifest, dim: number): AsyncGenerator<{ id: string; text: string; metadata?: unknown; vector: Float32Array; line: number }> {
  const bad = (message: string) => indexDamaged(dir, message);
  const vectorsFile = path.join(dir, 'vectors.safetensors');
  const docsFile = path.join(dir, 'docs.jsonl');
  for (const f of [vectorsFile, docsFile]) if (!fs.existsSync(f)) throw bad(`${path.basename(f)} is missing`);
  const fd = fs.openSync(vectorsFile, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const read = readSafetensorsHeader(fd, 1 << 20);
    if ('problem' in read) throw bad(read.problem === 'truncated' ? 'vectors.safetensors is truncated' : 'vectors.safetensors has a damaged header');
    // Checked before use: offsets that are negative, fractional or not numbers read the header as vectors, or failed
    // with a TypeError or RangeError naming no file.
    const tensor = tensorInfo(read.header.vectors);
    const width = tensor?.dtype === 'F32' ? 4 : tensor?.dtype === 'F16' ? 2 : 0;
    if (!tensor || !width) throw bad('vectors.safetensors needs a "vectors" tensor of dtype F32 or F16, with a shape and data offsets');
    const [rows, cols] = tensor.shape;
    const { begin, end } = tensor;
    if (tensor.shape.length !== 2 || cols !== dim || rows !== manifest.documents) throw bad(`vectors.safetensors is [${tensor.shape}], index.json says ${manifest.documents} documents of dimension ${dim}`);
    if (end - begin !== rows * cols * width || read.dataStart + end > size) throw bad('vectors.safetensors is truncated');
    // Index.load's check and words (checkIndexTensors): a float file of the other dtype was exported as the numbers
    // index.json names. After the checks above, which say more of a header that lies about its offsets or shape.
    checkIndexHeader(dir, 'vectors.safetensors', read.header, vectorTensors(manifest.storage, dim), `storage ${manifest.storage}`);
    const dataStart = read.dataStart + begin;

    const block = Buffer.alloc(ROWS_PER_READ * dim * width);
    let blockStart = 0;
    let blockRows = 0;
    const vectorOf = (row: number): Float32Array => {
      if (row >= blockStart + blockRows) {
        blockStart = row;
        blockRows = Math.min(ROWS_PER_READ, rows - row);
        const bytes = blockRows * dim * width;
        if (fs.readSync(fd, block, 0, bytes, dataStart + row * dim * width) !== bytes) throw bad('vectors.safetensors is truncated');
      }
      const offset = (row - blockStart) * dim * width;
      const v = new Float32Array(dim);
      for (let j = 0; j < dim; j++) v[j] = width === 4 ? block.readFloatLE(offset + 4 * j) : halfToFloat(block.readUInt16LE(offset + 2 * j));
      return v;
    };

    const lines = readline.createInterface({ input: fs.createReadStream(docsFile, { encoding: 'utf8' }), crlfDelay: Infinity });
    // Index.load's reader: a repeated id is refused here, with both lines, not by COPY's primary key when the file
    // is loaded; the count and the ids' order are checked at the end (the output is then left as it was).
    const reader = new IndexDocsReader(dir, { documents: rows });
    let lineNumber = 0;
    for await (const line of lines) {
      lineNumber++;
      const doc = reader.read(line, lineNumber);
      if (!doc) continue;
      if (reader.documents > rows) throw bad(`docs.jsonl has more documents than index.json says (${rows})`);
      yield { id: doc.id, text: doc.text, metadata: doc.metadata, vector: vectorOf(reader.documents - 1), line: lineNumber };
    }
    reader.finish(manifest);
  } finally {
    fs.closeSync(fd);
  }
}

/** pgvector's rule of thumb for IVFFlat lists: rows / 1000 up to a million rows, sqrt(rows) beyond. */
function ivfflatLists(rows: number): number {
  return Math.max(1, rows <= 1_000_000 ? Math.round(rows / 1000) : Math.round(Math.sqrt(rows)));
}

function indexStatements(kind: 'auto' | 'hnsw' | 'ivfflat' | 'none', table: string, base: string, rows: number, dim: number): string[] {
  if (kind === 'none') return ['-- No approximate index (--vector-index none): queries scan the table exactly.'];
  if (dim > MAX_INDEXED_DIM) return [`-- No approximate index: pgvector indexes vectors of up to ${MAX_INDEXED_DIM} dimensions, these have ${dim}; queries scan the table exactly.`];
  const name = `"${base}_embedding_idx"`;
  const hnsw = `CREATE INDEX ${name} ON ${table} USING hnsw (embedding vector_ip_ops)`;
  const ivfflat = `CREATE INDEX ${name} ON ${table} USING ivfflat (embedding vector_ip_ops) WITH (lists = ${ivfflatLists(rows)})`;
  if (kind === 'hnsw') return ['-- HNSW needs pgvector >= 0.5.0.', `${hnsw};`];
  if (kind === 'ivfflat') return [`${ivfflat};`];
  return [
    '-- HNSW where the installed pgvector has it (0.5.0 and later), IVFFlat before that.',
    'DO $coltrast$',
    'BEGIN',
    "  IF string_to_array((SELECT extversion FROM pg_extension WHERE extname = 'vector'), '.')::int[] >= ARRAY[0, 5, 0] THEN",
    `    EXECUTE '${hnsw}';`,
    '  ELSE',
    `    EXECUTE '${ivfflat}';`,
    '  END IF;',
    'END',
    '$coltrast$;',
  ];
}

/**
 * Writes `output` through a temporary file beside it, renamed into place once `fill` has finished (files.ts
 * atomicOutput: a failure or an interruption leaves the old file and no temporary file; a device or pipe such as
 * /dev/stdout is written in place).
 */
async function writeStreamAtomic(output: string, fill: (write: (chunk: string) => Promise<void>) => Promise<void>): Promise<void> {
  const out = atomicOutput(output);
  try {
    await fill((chunk) => out.write(chunk));
    await out.commit();
  } catch (error) {
    out.abort();
    throw error;
  }
}

/**
 * Writes the index folder `indexDir` (written by `Index.save`) as a SQL file for PostgreSQL + pgvector at
 * `output`. Load it with `psql -v ON_ERROR_STOP=1 -d <db> -f <output>`.
 */
export async function exportIndex(indexDir: string, output: string, options?: ExportOptions): Promise<ExportResult> {
  nonEmptyString('indexDir', indexDir);
  const o = checkOptions('options', options, KEYS);
  oneOf('options.format', o.format ?? 'pgvector', ['pgvector'] as const);
  const kind = oneOf('options.vectorIndex', o.vectorIndex ?? 'auto', ['auto', 'hnsw', 'ivfflat', 'none'] as const);
  // A string such as 'false' was truthy: the file dropped the table it was asked to keep.
  const replace = booleanValue('options.replace', o.replace ?? false);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  const { qualified, base } = checkTable(o.table ?? 'coltrast_docs');
  nonEmptyString('output', output);
  checkOutputFile(output, 'output');
  const dir = path.resolve(indexDir);
  // The SQL file renamed over docs.jsonl (or another of the index's files) would destroy the index it was read from.
  if (path.dirname(path.resolve(output)) === dir && ['index.json', 'docs.jsonl', 'vectors.safetensors'].includes(path.basename(output))) {
    throw new ColtrastError('INVALID_ARGUMENT', `output ${path.resolve(output)} is one of the index's own files: write the SQL file elsewhere (e.g. ${path.join(path.dirname(dir), `${path.basename(dir)}.sql`)})`);
  }
  const manifest = readIndexManifest(dir);
  if (manifest.multiVector === true) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `index ${dir} was built with a multi-vector model: it holds token vectors only, and no pooled vector per document for pgvector's vector column; export an index built with a single-vector model`,
    );
  }
  if (manifest.sparse === true) {
    throw new ColtrastError('INVALID_ARGUMENT', `index ${dir} was built with a sparse (SPLADE) encoder: its vectors are sparse, and this export writes pgvector's dense vector column; export an index built with an embedding model`);
  }
  const dim = manifest.model.dimension;
  const rows = manifest.documents;
  if (dim > MAX_DIM) throw new ColtrastError('INVALID_ARGUMENT', `pgvector's vector type holds at most ${MAX_DIM} dimensions; this index has ${dim}`);
  if (manifest.storage !== 'float32' && manifest.storage !== 'float16') {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `index ${dir} stores ${commentSafe(manifest.storage)} vectors; the export writes float vectors: rebuild the index with storage float32 or float16 (coltrast index --storage float16) and export that`,
    );
  }
  const target = path.resolve(output);

  let done = 0;
  o.onProgress?.(0, rows);
  await writeStreamAtomic(target, async (write) => {
    const header = [
      '-- coltrast index export for PostgreSQL + pgvector',
      `-- index: ${commentSafe(dir)}`,
      `-- model: ${commentSafe(manifest.model?.source ?? 'unknown')} (fingerprint sha256 ${commentSafe(manifest.model?.fingerprint ?? 'unknown')})`,
      `-- dimension: ${dim}, documents: ${rows}, stored as ${manifest.storage}`,
      '-- Vectors are L2-normalized and scored by inner product: order by embedding <#> q (negative inner product);',
      '-- -(embedding <#> q) is the score coltrast reports. Embed queries with the same model.',
      `-- Load: psql -v ON_ERROR_STOP=1 -d <database> -f ${commentSafe(path.basename(target))}`,
      `-- Query: SELECT id, text, -(embedding <#> '[...]') AS score FROM ${qualified} ORDER BY embedding <#> '[...]' LIMIT 10;`,
      '',
      "SET client_encoding = 'UTF8';",
      'SET standard_conforming_strings = on;',
      'CREATE EXTENSION IF NOT EXISTS vector;',
      'BEGIN;',
      ...(replace ? [`DROP TABLE IF EXISTS ${qualified};`] : []),
      `CREATE TABLE ${qualified} (id text PRIMARY KEY, text text NOT NULL, metadata jsonb, embedding vector(${dim}) NOT NULL);`,
      `COPY ${qualified} (id, text, metadata, embedding) FROM stdin;`,
      '',
    ];
    await write(header.join('\n'));
    let chunk: string[] = [];
    for await (const doc of indexRows(dir, manifest, dim)) {
      if (doc.id.includes('\0') || doc.text.includes('\0')) {
        throw new ColtrastError('INVALID_ARGUMENT', `document "${doc.id.replace(/\0/g, '\\0')}" (docs.jsonl:${doc.line}) holds a NUL character, which PostgreSQL text cannot store`);
      }
      if (holdsNul(doc.metadata)) throw new ColtrastError('INVALID_ARGUMENT', `document "${doc.id}" (docs.jsonl:${doc.line}): metadata holds a NUL character, which jsonb cannot store`);
      const metadata = doc.metadata === undefined || doc.metadata === null ? '\\N' : copyText(JSON.stringify(doc.metadata));
      const values = new Array<string>(dim);
      for (let j = 0; j < dim; j++) {
        if (!Number.isFinite(doc.vector[j])) throw indexDamaged(dir, `the vector of "${doc.id}" holds ${doc.vector[j]}`);
        values[j] = float32Text(doc.vector[j]);
      }
      chunk.push(`${copyText(doc.id)}\t${copyText(doc.text)}\t${metadata}\t[${values.join(',')}]\n`);
      done++;
      if (chunk.length === 256) {
        await write(chunk.join(''));
        chunk = [];
      }
      if (done % 10000 === 0) o.onProgress?.(done, rows);
    }
    await write(chunk.join(''));
    const footer = ['\\.', 'COMMIT;', '', ...indexStatements(kind, qualified, base, rows, dim), `ANALYZE ${qualified};`, ''];
    await write(footer.join('\n'));
  });
  o.onProgress?.(done, rows);
  return { output: target, table: o.table ?? 'coltrast_docs', rows: done, dimension: dim };
}
