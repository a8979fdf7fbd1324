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
 *
 * Sparse (SPLADE) vectors, of an index built with a SparseEncoder or with one as its second model (sparse.bin), go
 * into a sparsevec column (pgvector 0.7.0 and later; the file checks the version first): `embedding` for the sparse
 * encoder's own index, `sparse_embedding` beside the dense `embedding` otherwise, stored as coltrast stores them (for
 * a cosine model, scaled to unit length) so that `-(column <#> q)` is coltrast's score, with an HNSW index
 * (sparsevec_ip_ops) where every vector has at most the 1,000 non-zero entries pgvector's HNSW takes.
 */
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { ColtrastError } from './errors';
import { IndexDocsReader, checkIndexHeader, indexDamaged, readIndexManifest, vectorTensors, type IndexManifest } from './index-manifest';
import { halfToFloat, readSafetensorsHeader, tensorInfo } from './safetensors';
import { SparseIndex } from './sparse-index';
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
  /** The dense vectors' width; 0 for an index of a sparse encoder's vectors alone. */
  dimension: number;
  /** The sparse vectors' width (the sparse encoder's vocabulary), for an index that has them. */
  sparseDimension?: number;
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

/**
 * The rows of a saved index folder in order: each document with its stored vector (as float32); `dim` undefined: an
 * index of sparse vectors alone (no vectors.safetensors), its rows without one.
 */
async function* indexRows(dir: string, manifest: IndexManifest, dim: number | undefined): AsyncGenerator<{ id: string; text: string; metadata?: unknown; vector?: Float32Array; line: number }> {
  const bad = (message: string) => indexDamaged(dir, message);
  const docsFile = path.join(dir, 'docs.jsonl');
  if (!fs.existsSync(docsFile)) throw bad('docs.jsonl is missing');
  if (dim === undefined) {
    yield* documentRows(dir, manifest, manifest.documents, () => undefined);
    return;
  }
  const vectorsFile = path.join(dir, 'vectors.safetensors');
  if (!fs.existsSync(vectorsFile)) throw bad('vectors.safetensors is missing');
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

    yield* documentRows(dir, manifest, rows, vectorOf);
  } finally {
    fs.closeSync(fd);
  }
}

/** docs.jsonl's documents in order, each with `vectorOf` its row. */
async function* documentRows<V>(dir: string, manifest: IndexManifest, rows: number, vectorOf: (row: number) => V): AsyncGenerator<{ id: string; text: string; metadata?: unknown; vector: V; line: number }> {
  const lines = readline.createInterface({ input: fs.createReadStream(path.join(dir, 'docs.jsonl'), { encoding: 'utf8' }), crlfDelay: Infinity });
  // Index.load's reader: a repeated id is refused here, with both lines, not by COPY's primary key when the file
  // is loaded; the count and the ids' order are checked at the end (the output is then left as it was).
  const reader = new IndexDocsReader(dir, { documents: rows });
  let lineNumber = 0;
  for await (const line of lines) {
    lineNumber++;
    const doc = reader.read(line, lineNumber);
    if (!doc) continue;
    if (reader.documents > rows) throw indexDamaged(dir, `docs.jsonl has more documents than index.json says (${rows})`);
    yield { id: doc.id, text: doc.text, metadata: doc.metadata, vector: vectorOf(reader.documents - 1), line: lineNumber };
  }
  reader.finish(manifest);
}

/**
 * The sparse vectors of sparse.bin (an index built with a sparse encoder, or with one as its second model), by row in
 * docs.jsonl's order, with the width and the count of non-zero entries of the fullest one; undefined for an index
 * without them.
 */
async function sparseRows(dir: string, manifest: IndexManifest): Promise<{ dimension: number; maxActive: number; idAt: (row: number) => string; text: (row: number) => string } | undefined> {
  if (manifest.sparse !== true && manifest.sparseEncoder === undefined) return undefined;
  const file = path.join(dir, 'sparse.bin');
  if (!fs.existsSync(file)) throw indexDamaged(dir, 'sparse.bin is missing');
  let index: SparseIndex;
  try {
    index = await SparseIndex.load(file);
  } catch (error) {
    throw indexDamaged(dir, (error as Error).message);
  }
  const expected = manifest.sparse === true ? manifest.model.dimension : manifest.sparseEncoder!.dimension;
  if (index.dimension !== expected || index.size !== manifest.documents) {
    throw indexDamaged(dir, `sparse.bin holds ${index.size} vectors of width ${index.dimension}, and index.json says ${manifest.documents} documents of width ${expected}`);
  }
  const { offsets, indices, values } = await index.documentVectors();
  let maxActive = 0;
  for (let i = 0; i < index.size; i++) maxActive = Math.max(maxActive, offsets[i + 1] - offsets[i]);
  // pgvector's sparsevec text: {index:value,...}/width, indices from 1.
  const text = (row: number) => {
    const entries = new Array<string>(offsets[row + 1] - offsets[row]);
    for (let k = offsets[row]; k < offsets[row + 1]; k++) {
      if (!Number.isFinite(values[k])) throw indexDamaged(dir, `the sparse vector of "${index.idAt(row)}" holds ${values[k]}`);
      entries[k - offsets[row]] = `${indices[k] + 1}:${float32Text(values[k])}`;
    }
    return `{${entries.join(',')}}/${index.dimension}`;
  };
  return { dimension: index.dimension, maxActive, idAt: (row) => index.idAt(row), text };
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

/** pgvector's HNSW index of sparse vectors holds vectors of up to 1,000 non-zero entries; IVFFlat takes none. */
const MAX_INDEXED_SPARSE = 1000;

function sparseIndexStatements(kind: 'auto' | 'hnsw' | 'ivfflat' | 'none', table: string, base: string, column: string, maxActive: number): string[] {
  if (kind === 'none') return [`-- No approximate index of ${column} (--vector-index none): queries scan the table exactly.`];
  if (kind === 'ivfflat') return [`-- No approximate index of ${column}: pgvector's IVFFlat does not index sparse vectors (HNSW does).`];
  if (maxActive > MAX_INDEXED_SPARSE) {
    return [`-- No approximate index of ${column}: pgvector's HNSW indexes sparse vectors of up to ${MAX_INDEXED_SPARSE} non-zero entries, and one here has ${maxActive}; queries scan the table exactly.`];
  }
  return [`CREATE INDEX "${base}_${column}_idx" ON ${table} USING hnsw (${column} sparsevec_ip_ops);`];
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
  // An index of a sparse encoder's vectors alone has no dense column; one with a second, sparse model has both.
  const dim = manifest.sparse === true ? undefined : manifest.model.dimension;
  const rows = manifest.documents;
  if (dim !== undefined && dim > MAX_DIM) throw new ColtrastError('INVALID_ARGUMENT', `pgvector's vector type holds at most ${MAX_DIM} dimensions; this index has ${dim}`);
  if (dim !== undefined && manifest.storage !== 'float32' && manifest.storage !== 'float16') {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `index ${dir} stores ${commentSafe(manifest.storage)} vectors; the export writes float vectors: rebuild the index with storage float32 or float16 (coltrast index --storage float16) and export that`,
    );
  }
  const target = path.resolve(output);
  const sparse = await sparseRows(dir, manifest);
  // A sparse encoder's own index: its vectors are the embedding column; with a second model, a column of their own.
  const sparseColumn = dim === undefined ? 'embedding' : 'sparse_embedding';
  const columns = [
    'id text PRIMARY KEY',
    'text text NOT NULL',
    'metadata jsonb',
    ...(dim !== undefined ? [`embedding vector(${dim}) NOT NULL`] : []),
    ...(sparse ? [`${sparseColumn} sparsevec(${sparse.dimension}) NOT NULL`] : []),
  ];
  const names = ['id', 'text', 'metadata', ...(dim !== undefined ? ['embedding'] : []), ...(sparse ? [sparseColumn] : [])];

  let done = 0;
  o.onProgress?.(0, rows);
  await writeStreamAtomic(target, async (write) => {
    const header = [
      '-- coltrast index export for PostgreSQL + pgvector',
      `-- index: ${commentSafe(dir)}`,
      `-- model: ${commentSafe(manifest.model?.source ?? 'unknown')} (fingerprint sha256 ${commentSafe(manifest.model?.fingerprint ?? 'unknown')})`,
      ...(dim !== undefined
        ? [
            `-- dimension: ${dim}, documents: ${rows}, stored as ${manifest.storage}`,
            '-- Vectors are L2-normalized and scored by inner product: order by embedding <#> q (negative inner product);',
            '-- -(embedding <#> q) is the score coltrast reports. Embed queries with the same model.',
          ]
        : [`-- documents: ${rows}`]),
      ...(sparse
        ? [
            `-- ${sparseColumn}: the sparse (SPLADE) encoder's vectors${manifest.sparseEncoder ? ` (${commentSafe(manifest.sparseEncoder.source ?? 'the second model')})` : ''}, sparsevec(${sparse.dimension}) (pgvector 0.7.0 or later),`,
            `-- scored by inner product as coltrast scores them: order by ${sparseColumn} <#> q, q the query's sparse vector`,
            `-- ('{index:value,...}/${sparse.dimension}', indices from 1); the fullest document has ${sparse.maxActive} non-zero entries.`,
          ]
        : []),
      `-- Load: psql -v ON_ERROR_STOP=1 -d <database> -f ${commentSafe(path.basename(target))}`,
      dim !== undefined
        ? `-- Query: SELECT id, text, -(embedding <#> '[...]') AS score FROM ${qualified} ORDER BY embedding <#> '[...]' LIMIT 10;`
        : `-- Query: SELECT id, text, -(embedding <#> '{...}/${sparse!.dimension}') AS score FROM ${qualified} ORDER BY embedding <#> '{...}/${sparse!.dimension}' LIMIT 10;`,
      '',
      "SET client_encoding = 'UTF8';",
      'SET standard_conforming_strings = on;',
      'CREATE EXTENSION IF NOT EXISTS vector;',
      ...(sparse
        ? [
            'DO $coltrast$',
            'BEGIN',
            "  IF string_to_array((SELECT extversion FROM pg_extension WHERE extname = 'vector'), '.')::int[] < ARRAY[0, 7, 0] THEN",
            "    RAISE EXCEPTION 'this index has sparse vectors, and pgvector''s sparsevec type needs pgvector 0.7.0 or later; this database has %: upgrade pgvector', (SELECT extversion FROM pg_extension WHERE extname = 'vector');",
            '  END IF;',
            'END',
            '$coltrast$;',
          ]
        : []),
      'BEGIN;',
      ...(replace ? [`DROP TABLE IF EXISTS ${qualified};`] : []),
      `CREATE TABLE ${qualified} (${columns.join(', ')});`,
      `COPY ${qualified} (${names.join(', ')}) FROM stdin;`,
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
      const fields = [copyText(doc.id), copyText(doc.text), metadata];
      if (doc.vector) {
        const values = new Array<string>(doc.vector.length);
        for (let j = 0; j < doc.vector.length; j++) {
          if (!Number.isFinite(doc.vector[j])) throw indexDamaged(dir, `the vector of "${doc.id}" holds ${doc.vector[j]}`);
          values[j] = float32Text(doc.vector[j]);
        }
        fields.push(`[${values.join(',')}]`);
      }
      if (sparse) {
        // sparse.bin's ids are docs.jsonl's in order (as Index.load checks them).
        if (sparse.idAt(done) !== doc.id) throw indexDamaged(dir, `sparse.bin's document ${done + 1} is "${sparse.idAt(done)}" and docs.jsonl's "${doc.id}"`);
        fields.push(sparse.text(done));
      }
      chunk.push(`${fields.join('\t')}\n`);
      done++;
      if (chunk.length === 256) {
        await write(chunk.join(''));
        chunk = [];
      }
      if (done % 10000 === 0) o.onProgress?.(done, rows);
    }
    await write(chunk.join(''));
    const footer = [
      '\\.',
      'COMMIT;',
      '',
      ...(dim !== undefined ? indexStatements(kind, qualified, base, rows, dim) : []),
      ...(sparse ? sparseIndexStatements(kind, qualified, base, sparseColumn, sparse.maxActive) : []),
      `ANALYZE ${qualified};`,
      '',
    ];
    await write(footer.join('\n'));
  });
  o.onProgress?.(done, rows);
  return { output: target, table: o.table ?? 'coltrast_docs', rows: done, dimension: dim ?? 0, ...(sparse && { sparseDimension: sparse.dimension }) };
}
