/**
 * The documents `coltrast index --data` reads: a JSON Lines file (.jsonl, or .jsonl.gz) of `{id, text, metadata?}`,
 * or a CSV or TSV file (gzipped or not) with "id" and "text" columns, read a slice at a time; a .json array of the
 * same documents; or a ColTrast project file, whose READMEs are cut into semantic chunks. Every document is checked
 * where it is read, so that a problem names its file and line (or array element), not its place in a slice given to
 * the index.
 */
import { semanticChunks } from './chunking';
import { hasLoneSurrogate } from './doc-store';
import { Encoder } from './encoder';
import { SparseEncoder } from './sparse-encoder';
import type { Device } from './native-model';
import { ColtrastError } from './errors';
import { CSV, countLines, csvBatches, jsonLineBatches, parseJsonDocument, readWholeText, type CsvReader } from './data-files';
import type { IndexDoc } from './search-index';
import { encoderEmbedder } from './train';
import { JSONL, checkDataFile, readProjects } from './train-data';
import { invalid } from './validate';

/** Documents `coltrast index` reads at a time from a .jsonl file: a corpus of millions never sits in memory whole. */
export const INDEX_SLICE = 16384;

/** A document and where it was read (`file:line`, or `file: [i]` in a .json array), for errors. */
export interface PlacedDoc {
  doc: IndexDoc;
  where: string;
}

/**
 * The document `value`, read at `where`: an object with a non-empty string "id" (well-formed Unicode) and a string
 * "text", and "metadata" an object, null or absent (null counts as none: the document comes back without it).
 */
export function indexDocument(where: string, value: unknown): IndexDoc {
  const shape = '{"id": "...", "text": "...", "metadata"?: {...}}';
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid(where, `a document ${shape}`, value);
  const { id, text, metadata } = value as Record<string, unknown>;
  if (typeof id !== 'string' || id.length === 0) throw invalid(`${where}: "id"`, 'a non-empty string', id);
  if (hasLoneSurrogate(id)) throw invalid(`${where}: "id"`, 'well-formed Unicode (it holds a lone surrogate, which UTF-8 cannot keep)', id);
  if (typeof text !== 'string') throw invalid(`${where}: "text"`, 'a string', text);
  if (metadata === undefined || metadata === null) return { id, text };
  if (typeof metadata !== 'object' || Array.isArray(metadata)) throw invalid(`${where}: "metadata"`, 'an object (or null, or absent)', metadata);
  return { id, text, metadata: metadata as Record<string, unknown> };
}

/**
 * A CSV or TSV file's documents: its header names an "id" and a "text" column, and each other column is a string
 * field of the documents' metadata (a filter's `metadata.<column>`), an empty cell left out, as a spreadsheet's
 * empty cell is no value; a document whose other cells are all empty has no metadata.
 */
const csvDocuments: CsvReader<PlacedDoc> = (columns, where) => {
  for (const name of ['id', 'text']) {
    if (!columns.includes(name)) {
      throw new ColtrastError('INVALID_ARGUMENT', `${where}: no "${name}" column (columns found: ${columns.join(', ')}): coltrast index reads a CSV or TSV file whose header row names an "id" and a "text" column, a document a row (its other columns become the document's metadata, strings)`);
    }
  }
  const id = columns.indexOf('id');
  const text = columns.indexOf('text');
  const others = columns.flatMap((_, i) => (i === id || i === text ? [] : [i]));
  return (fields, at) => {
    // fromEntries defines each column as a field of its own (a column named __proto__ too, as JSON.parse does).
    const kept = others.filter((i) => fields[i].trim() !== '').map((i) => [columns[i], fields[i]]);
    const metadata = kept.length > 0 ? Object.fromEntries(kept) : undefined;
    return { doc: indexDocument(at, { id: fields[id], text: fields[text], metadata }), where: at };
  };
};

/**
 * A CSV or TSV file's documents counted, each row read and checked as it will be indexed (its header's columns, its
 * fields, its id), without keeping them: a quoted field may hold line breaks, so its lines are not its rows.
 * `coltrast index` counts them before the model loads, so that an empty table or a bad row is refused first.
 */
export async function countCsvDocuments(file: string): Promise<number> {
  let n = 0;
  for await (const batch of csvBatches(file, csvDocuments)) n += batch.length;
  return n;
}

/**
 * The documents of `file` for `coltrast index`, in slices, each document with where it was read (for errors), and how
 * many there are: a .jsonl (or .jsonl.gz) of {id, text, metadata?} or a .csv/.tsv (csvDocuments' columns, gzipped
 * or not) read INDEX_SLICE at a time, a .json array of them, or a ColTrast project file's READMEs in semantic chunks
 * (one slice). `spread`: the first slice is documents spread evenly over the whole file (every k-th), the rest
 * follow in file order, so that what the first slice decides (a residual store's centroids) does not come from one
 * end of a sorted corpus. `counted`: a .jsonl's or a .csv's documents, when the caller has counted them (countLines,
 * or countCsvDocuments) already.
 */
export async function indexDocumentSlices(file: string, encoder: Encoder | SparseEncoder, spread: boolean, counted?: number): Promise<{ total: number; slices: AsyncIterable<PlacedDoc[]> }> {
  checkDataFile(file);
  const csv = CSV.test(file);
  if (JSONL.test(file) || csv) {
    const total = counted ?? (csv ? await countCsvDocuments(file) : await countLines(file));
    const stride = spread ? Math.ceil(total / INDEX_SLICE) : 1;
    // Documents numbered in file order, in slices of those that `keep` takes.
    async function* read(keep: (n: number) => boolean) {
      let n = -1;
      let slice: PlacedDoc[] = [];
      const batches = csv ? csvBatches(file, csvDocuments) : jsonLineBatches(file, INDEX_SLICE, (value, where) => ({ doc: indexDocument(where, value), where }));
      // Cut at INDEX_SLICE exactly: a CSV file's batches are its pieces' records, of any number.
      for await (const batch of batches) {
        for (const d of batch) {
          if (!keep(++n)) continue;
          slice.push(d);
          if (slice.length === INDEX_SLICE) {
            yield slice;
            slice = [];
          }
        }
      }
      if (slice.length > 0) yield slice;
    }
    // With a stride k, documents 0, k, 2k, ... (at most INDEX_SLICE) make the first slice, read in a pass of their own.
    async function* slices() {
      if (stride > 1) yield* read((n) => n % stride === 0);
      yield* read((n) => stride === 1 || n % stride !== 0);
    }
    return { total, slices: slices() };
  }
  const value = parseJsonDocument(file, await readWholeText(file, 'data'), 'JSON Lines files must end in .jsonl');
  let docs: PlacedDoc[];
  if (Array.isArray(value)) {
    docs = value.map((item, i) => {
      const where = `${file}: [${i}]`;
      return { doc: indexDocument(where, item), where };
    });
  } else if (value !== null && typeof value === 'object' && 'projects' in value) {
    docs = [];
    // Semantic chunking compares sentence embeddings: a sparse encoder's index has its READMEs chunked by the default
    // model, as train() chunks them for one.
    const chunker = encoder instanceof SparseEncoder ? await Encoder.load('default', { device: encoder.device as Device }) : encoder;
    try {
      for (const p of readProjects(file, value)) {
        const chunks = await semanticChunks(p.document, encoderEmbedder(chunker), { maxTokens: encoder.maxSeqLength });
        chunks.forEach((text, i) => docs.push({ doc: { id: `${p.id}#${i}`, text, metadata: { project: p.id } }, where: `${file}: project ${p.id}` }));
      }
    } finally {
      if (chunker !== encoder) chunker.dispose();
    }
  } else {
    throw new ColtrastError('INVALID_ARGUMENT', `${file}: expected a JSON array of documents {"id", "text", "metadata"?}, a ColTrast project file ({"projects": [...]}), or a .jsonl file of documents`);
  }
  return { total: docs.length, slices: arraySlices(docs, spread) };
}

/** `docs` in slices of INDEX_SLICE, the first spread over all of them when `spread` (as indexDocumentSlices reads a .jsonl). */
async function* arraySlices(docs: PlacedDoc[], spread: boolean): AsyncGenerator<PlacedDoc[]> {
  const stride = spread ? Math.ceil(docs.length / INDEX_SLICE) : 1;
  const rest = stride > 1 ? docs.filter((_, n) => n % stride !== 0) : docs;
  if (stride > 1) yield docs.filter((_, n) => n % stride === 0);
  for (let start = 0; start < rest.length; start += INDEX_SLICE) yield rest.slice(start, start + INDEX_SLICE);
}
