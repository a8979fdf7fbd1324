/**
 * BEIR-format evaluation data: a folder with `corpus.jsonl` ({_id, title, text}), `queries.jsonl`
 * ({_id, text}) and `qrels/<split>.tsv` (query-id, corpus-id, score; a header line is optional). Gzipped files
 * (`.jsonl.gz`) and a flat `qrels-<split>.tsv` are read too. Every problem is reported with its file and
 * line; an id that a corpus or queries file repeats is an error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { nonEmptyString } from './validate';
import { fileLines, parseJsonLines } from './data-files';
import type { Project } from './chunking';
import type { Qrels } from './ir-metrics';

export interface CorpusDoc {
  id: string;
  title: string;
  text: string;
}

export interface BeirData {
  corpus: CorpusDoc[];
  queries: Map<string, string>;
  qrels: Qrels;
  /**
   * The relevant judgements (grade above 0) of a folder's qrels that name a document its corpus lacks (BEIR's own
   * ArguAna has some): kept, so they count as relevant documents never retrieved, as BEIR and pytrec_eval count them.
   * Absent when there are none.
   */
  missingDocuments?: { judgements: number; examples: string[] };
  /**
   * The judged queries of a folder's qrels that its queries file lacks (BEIR's NFCorpus has one): left out of the qrels,
   * with no text to run, as trec_eval leaves out a judged query the run does not have (BEIR's own loader fails on
   * them). Absent when there are none.
   */
  missingQueries?: { queries: number; judgements: number; examples: string[] };
}

function bad(where: string, message: string): ColtrastError {
  return new ColtrastError('INVALID_ARGUMENT', `${where}: ${message}`);
}

function findFile(dir: string, names: string[]): string {
  for (const name of names) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) return file;
  }
  throw new ColtrastError('INVALID_ARGUMENT', `${dir} has none of ${names.join(', ')} (a BEIR folder needs corpus, queries and qrels)`);
}

function readJsonl<T>(file: string, each: (value: Record<string, unknown>, where: string) => T): Promise<T[]> {
  return parseJsonLines(file, (value, where) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad(where, 'expected an object');
    return each(value as Record<string, unknown>, where);
  });
}

function id(value: unknown, where: string): string {
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number') return String(value);
  throw bad(where, '"_id" must be a non-empty string');
}

/**
 * Reads a qrels TSV: query-id, corpus-id, integer score; a first line whose score is not a number is a header, skipped.
 * `known`: the folder's queries and documents; a query it lacks is left out and counted in `known.lacking` (it has no
 * text to run), a document it lacks is kept and counted in `known.missing` (relevant judgements only).
 */
export async function readQrels(
  file: string,
  known?: { queries: Map<string, string>; docs: Set<string>; missing?: { judgements: number; examples: string[] }; lacking?: { queries: Set<string>; judgements: number; examples: string[] } },
): Promise<Qrels> {
  const qrels: Qrels = new Map();
  let i = -1;
  let first = true;
  for await (const lines of fileLines(file)) for (const line of lines) {
    i++;
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    const cols = line.split('\t');
    if (cols.length !== 3) throw bad(where, `expected 3 tab-separated columns (query-id, corpus-id, score), got ${cols.length}`);
    const [q, d, s] = cols.map((c) => c.trim());
    // The header is told by its score column (BEIR's "score", or "rel", "relevance"...), not by its first: a first
    // judgement whose query id held "query" (query-1) was dropped as a header, and a "qid" header was refused.
    const header = first && !/^[-+]?[\d.]/.test(s);
    first = false;
    if (header) continue;
    if (!/^-?\d+$/.test(s)) throw bad(where, `score "${s}" is not an integer (grades are whole numbers: 0 not relevant, 1 or more relevant)`);
    if (known && !known.queries.has(q)) {
      if (!known.lacking) throw bad(where, `query "${q}" is not in queries.jsonl: add its text there, or remove the judgement`);
      known.lacking.judgements++;
      if (!known.lacking.queries.has(q) && known.lacking.examples.length < 3) known.lacking.examples.push(`${path.basename(file)}:${i + 1} ${q}`);
      known.lacking.queries.add(q);
      continue;
    }
    if (known?.missing && !known.docs.has(d) && Number(s) > 0) {
      known.missing.judgements++;
      if (known.missing.examples.length < 3) known.missing.examples.push(`${path.basename(file)}:${i + 1} ${d}`);
    }
    if (!qrels.has(q)) qrels.set(q, new Map());
    qrels.get(q)!.set(d, Number(s));
  }
  if (qrels.size === 0) throw bad(file, known?.lacking?.judgements ? `holds no judgements of a query in queries.jsonl (its ${known.lacking.queries.size} judged queries have no text there)` : 'holds no judgements');
  return qrels;
}

/** Loads a BEIR folder; `split` picks the qrels file (default 'test'). The files are read without holding the event loop (fileLines). */
export async function loadBeir(dir: string, split = 'test'): Promise<BeirData> {
  nonEmptyString('dir', dir);
  nonEmptyString('split', split);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ColtrastError('INVALID_ARGUMENT', `BEIR folder ${dir} does not exist`);
  // Ids are unique in each file: a repeated query id replaced the earlier text unseen (and a repeated document id
  // counted one document twice).
  const repeated = (where: string, what: string) => bad(where, `the _id "${what}" is repeated (ids must be unique)`);
  const docs = new Set<string>();
  const corpus = await readJsonl(findFile(dir, ['corpus.jsonl', 'corpus.jsonl.gz']), (v, where) => {
    const doc = {
      id: id(v._id, where),
      title: typeof v.title === 'string' ? v.title : '',
      text: typeof v.text === 'string' ? v.text : (() => { throw bad(where, '"text" must be a string'); })(),
    };
    if (docs.has(doc.id)) throw repeated(where, doc.id);
    docs.add(doc.id);
    return doc;
  });
  const queries = new Map<string, string>();
  await readJsonl(findFile(dir, ['queries.jsonl', 'queries.jsonl.gz']), (v, where) => {
    if (typeof v.text !== 'string') throw bad(where, '"text" must be a string');
    const q = id(v._id, where);
    if (queries.has(q)) throw repeated(where, q);
    queries.set(q, v.text);
  });
  const missing = { judgements: 0, examples: [] as string[] };
  const lacking = { queries: new Set<string>(), judgements: 0, examples: [] as string[] };
  const qrels = await readQrels(findFile(dir, [path.join('qrels', `${split}.tsv`), `qrels-${split}.tsv`]), { queries, docs, missing, lacking });
  return {
    corpus,
    queries,
    qrels,
    ...(missing.judgements > 0 && { missingDocuments: missing }),
    ...(lacking.judgements > 0 && { missingQueries: { queries: lacking.queries.size, judgements: lacking.judgements, examples: lacking.examples } }),
  };
}

/** The text a document is embedded or indexed as: title and body, as BEIR's evaluations do. */
export function docText(doc: CorpusDoc): string {
  return doc.title ? `${doc.title} ${doc.text}` : doc.text;
}

/**
 * Evaluation data from a ColTrast project file, independent of any model: the corpus is every README's
 * paragraphs (split at blank lines; `<project>#<n>`), the queries are the questions, and a question's
 * judgements are its project's paragraphs: grade 2 for the paragraph sharing the most words with its
 * context (or answer), grade 1 for the project's other paragraphs. So nDCG rewards finding the exact
 * passage, Recall@k the right project.
 */
export function coltrastEvalData(projects: Project[]): BeirData {
  const corpus: CorpusDoc[] = [];
  const queries = new Map<string, string>();
  const qrels: Qrels = new Map();
  const words = (text: string) => new Set(text.toLowerCase().match(/[a-z0-9]+/g) ?? []);
  for (const p of projects) {
    const paragraphs = p.document
      .split(/\n\s*\n/)
      .map((x) => x.trim())
      .filter(Boolean)
      .map((text, i) => ({ id: `${p.id}#${i}`, title: '', text }));
    corpus.push(...paragraphs);
    p.qa.forEach((qa, j) => {
      const qid = `${p.id}/q${j}`;
      queries.set(qid, qa.question);
      const target = words(qa.context ?? qa.answer);
      const overlap = paragraphs.map((d) => [...words(d.text)].filter((w) => target.has(w)).length);
      const best = overlap.indexOf(Math.max(...overlap));
      qrels.set(qid, new Map(paragraphs.map((d, i) => [d.id, i === best ? 2 : 1])));
    });
  }
  return { corpus, queries, qrels };
}
