/**
 * Training data for `train()`: reads the accepted formats into one list of examples, with the file, line
 * and field of every problem in its error, splits off a validation set and forms batches.
 *
 * Formats: in-memory arrays of `{ query, positive, negatives? }`; JSONL files of pairs `{query, positive}`
 * or triplets `{query, positive, negatives: [...]}` (or `negative: "..."`, one); and the ColTrast JSON (`projects[]` with
 * `project_id`, `readme_content`, `qa_pairs[]` of `question`/`answer`/`context`), where each Q&A pair
 * becomes an example whose positive is its context (or its answer when it has none), grouped by project; and CSV or
 * TSV files with a header row (csvExamples' columns, sentence-transformers' names among them).
 */
import type { Project } from './chunking';
import { ColtrastError } from './errors';
import { notAFile } from './files';
import { CSV, fileLines, parseCsv, parseJsonDocument, parseJsonLines, readWholeText, type CsvReader } from './data-files';
import type { NativeTeacherScores } from './native';
import { seededRandom } from './random';
import { arrayInTurns, inTurns, mapInTurns, nextTurn } from './turns';
import { invalid } from './validate';

export interface TrainExample {
  query: string;
  positive: string;
  /** Hard negatives for this query (in-batch negatives come on top). */
  negatives?: string[];
  /** Examples of one group (a ColTrast project) stay on one side of the validation split. */
  group?: string;
  /**
   * A teacher's scores (a cross-encoder's logits, say) of the positive, then of each negative, for
   * distillation (train()'s loss.distillation).
   */
  scores?: number[];
  /**
   * A labeled pair's label (train()'s loss.pairs): a similarity score (CoSENT, AnglE, cosine) or 1 similar / 0 not (the
   * contrastive losses), for the pair (query, positive). Read from "label" or "score".
   */
  label?: number;
  /**
   * Embedding distillation (train()'s loss.distillation 'mse'): the teacher model's vector of the query (the source
   * sentence), which the student's vectors of the query and of the positive (its translation) are trained to fit. Set
   * by train(), not read from data files.
   */
  target?: number[];
  /**
   * A text's class (train()'s loss.batchTriplet): read from `{ "text" (or "sentence"), "label" }`, a number or a string
   * (kept as a string); the text is then both `query` and `positive`.
   */
  classLabel?: string;
  /**
   * A sentence alone (`{ "text" }`, a `.txt` line): for embedding distillation without translations (train()'s
   * loss.distillation 'mse'), the text is `query` and `positive`, and its batches hold no documents.
   */
  single?: true;
}

/** Refuses a data file that is missing or a folder, naming it. */
export function checkDataFile(file: string, noun = 'data'): void {
  const problem = notAFile(file);
  if (problem) throw new ColtrastError('INVALID_ARGUMENT', `${noun} file ${file} ${problem}`);
}

/** A data file's whole text (a .json document); a missing file (or a folder) is an error naming it. */
export async function readDataFile(file: string, noun = 'data'): Promise<string> {
  checkDataFile(file, noun);
  return readWholeText(file, noun);
}

/** How readTextList names its data in errors. */
export interface TextListMessages {
  /** The option's name: array elements are `<name>[i]`, a missing file is "<name> file X does not exist". */
  name: string;
  /** After "<file>: not valid JSON (...); ". */
  jsonHint: string;
  /** A .json file that holds no array. */
  notArray: string;
  /** `data` is neither a path nor an array. */
  wrongType: (data: unknown) => ColtrastError;
  /** How a .csv or .tsv file's records are read (its header's columns checked); without it, such a file is read as JSON. */
  csv?: CsvReader<string[]>;
}

/** A JSON Lines file's name (gzipped or not): read a line at a time; any other file is one JSON document. */
export const JSONL = /\.jsonl(\.gz)?$/i;

/**
 * The items of a list of texts: an array, a .txt file (each non-blank line, trimmed, is an item as it is), a
 * .jsonl file or a .json array, whose elements `one` reads (with where each is, for its errors), or a .csv or .tsv
 * file that `m.csv` reads.
 */
export async function readTextList(data: unknown, one: (where: string, value: unknown) => string[], m: TextListMessages): Promise<string[]> {
  if (Array.isArray(data)) return (await mapInTurns(data, (item, i) => one(`${m.name}[${i}]`, item))).flat();
  if (typeof data !== 'string') throw m.wrongType(data);
  checkDataFile(data, m.name);
  if (/\.txt(\.gz)?$/i.test(data)) {
    const items: string[] = [];
    for await (const lines of fileLines(data)) for (const line of lines) if (line.trim().length > 0) items.push(line.trim());
    return items;
  }
  if (JSONL.test(data)) return (await parseJsonLines(data, (value, where) => one(where, value))).flat();
  if (m.csv && CSV.test(data)) return (await parseCsv(data, m.csv)).flat();
  const value = parseJsonDocument(data, await readWholeText(data, m.name), m.jsonHint);
  if (!Array.isArray(value)) throw bad(data, m.notArray);
  return (await mapInTurns(value, (item, i) => one(`${data}: [${i}]`, item))).flat();
}

function bad(where: string, message: string): ColtrastError {
  return new ColtrastError('INVALID_ARGUMENT', `${where}: ${message}`);
}

function text(where: string, value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim().length === 0) throw bad(where, `"${field}" must be a non-empty string`);
  return value;
}

/** Checks one `{ query, positive, negatives? }` object. */
export function checkExample(where: string, value: unknown): TrainExample {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad(where, 'expected an object with "query" and "positive"');
  let o = value as Record<string, unknown>;
  // "anchor": the query, as sentence-transformers' datasets name it (a CSV's anchor column is read so too).
  if (o.anchor !== undefined) {
    if (o.query !== undefined) throw bad(where, 'give "query" or "anchor", not both');
    const { anchor, ...rest } = o;
    o = { query: anchor, ...rest };
  }
  for (const key of Object.keys(o)) {
    if (!['query', 'positive', 'negative', 'negatives', 'group', 'scores', 'sentence1', 'sentence2', 'label', 'score', 'english', 'non_english', 'text', 'sentence'].includes(key)) {
      throw bad(where, `unknown field "${key}" (known: query (or anchor), positive, negative, negatives, group, scores; a labeled pair: sentence1, sentence2 and label or score; parallel sentences: english, non_english; a text of a class: text or sentence, and label)`);
    }
  }
  // A text with its class, as sentence-transformers' datasets for the batch triplet losses hold them (TREC: text, label);
  // without a label, a sentence alone (embedding distillation's).
  if (o.text !== undefined || o.sentence !== undefined) {
    if (o.text !== undefined && o.sentence !== undefined) throw bad(where, 'give "text" or "sentence", not both');
    const field = o.text !== undefined ? 'text' : 'sentence';
    const other = Object.keys(o).filter((k) => ![field, 'label', 'group'].includes(k));
    if (other.length > 0) throw bad(where, `a text of a class ("${field}", "label") takes no ${other.map((k) => `"${k}"`).join(', ')}`);
    const body = text(where, o[field], field);
    const example: TrainExample = o.label === undefined ? { query: body, positive: body, single: true } : { query: body, positive: body, classLabel: classLabelOf(where, o.label) };
    if (o.group !== undefined) example.group = text(where, o.group, 'group');
    return example;
  }
  // Parallel sentences as sentence-transformers' parallel-sentences datasets name their columns: a source sentence and
  // its translation (the query and positive of embedding distillation).
  if (o.english !== undefined || o.non_english !== undefined) {
    const other = Object.keys(o).filter((k) => !['english', 'non_english', 'group'].includes(k));
    if (other.length > 0) throw bad(where, `parallel sentences ("english", "non_english") take no ${other.map((k) => `"${k}"`).join(', ')}`);
    const example: TrainExample = { query: text(where, o.english, 'english'), positive: text(where, o.non_english, 'non_english') };
    if (o.group !== undefined) example.group = text(where, o.group, 'group');
    return example;
  }
  // A labeled pair as sentence-transformers' datasets name its columns (STS-B: sentence1, sentence2, score).
  if (o.sentence1 !== undefined || o.sentence2 !== undefined) {
    if (o.query !== undefined || o.positive !== undefined) throw bad(where, 'give "sentence1" and "sentence2" or "query" and "positive", not both');
    return labeledPair(where, o, text(where, o.sentence1, 'sentence1'), text(where, o.sentence2, 'sentence2'));
  }
  if (o.label !== undefined || o.score !== undefined) return labeledPair(where, o, text(where, o.query, 'query'), text(where, o.positive, 'positive'));
  const example: TrainExample = { query: text(where, o.query, 'query'), positive: text(where, o.positive, 'positive') };
  // `negative`: one hard negative (a triplet row, as mineHardNegatives and sentence-transformers write them).
  if (o.negative !== undefined) {
    if (o.negatives !== undefined) throw bad(where, 'give "negative" (one) or "negatives" (a list), not both');
    example.negatives = [text(where, o.negative, 'negative')];
  }
  if (o.negatives !== undefined) {
    if (!Array.isArray(o.negatives)) throw bad(where, '"negatives" must be an array of strings');
    example.negatives = o.negatives.map((n, i) => text(where, n, `negatives[${i}]`));
  }
  if (o.group !== undefined) example.group = text(where, o.group, 'group');
  if (o.scores !== undefined) {
    const expected = 1 + (example.negatives?.length ?? 0);
    if (!Array.isArray(o.scores) || !o.scores.every((x) => typeof x === 'number' && Number.isFinite(x))) throw bad(where, '"scores" must be an array of finite numbers');
    if (o.scores.length !== expected) {
      throw bad(where, `"scores" holds ${o.scores.length} numbers; it needs ${expected}: the positive's teacher score, then one per negative`);
    }
    example.scores = o.scores;
  }
  return example;
}

/** A text's class label: a finite number or a non-empty string, kept as a string (1 and "1" are one class). */
function classLabelOf(where: string, value: unknown): string {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'string' && value.trim() !== '') return value;
  throw bad(where, `"label" must be a finite number or a non-empty string (the text's class), got ${JSON.stringify(value) ?? 'nothing'}`);
}

/** A labeled pair (`first`, `second`) of the object `o` at `where`: its finite number "label" or "score", and nothing but a group beside. */
function labeledPair(where: string, o: Record<string, unknown>, first: string, second: string): TrainExample {
  if (o.label !== undefined && o.score !== undefined) throw bad(where, 'give "label" or "score", not both');
  const label = o.label ?? o.score;
  const name = o.label !== undefined ? 'label' : 'score';
  if (label === undefined) throw bad(where, 'a pair given as "sentence1" and "sentence2" needs its "label" or "score" (a number)');
  if (typeof label !== 'number' || !Number.isFinite(label)) throw bad(where, `"${name}" must be a finite number`);
  const other = (['negative', 'negatives', 'scores'] as const).filter((k) => o[k] !== undefined);
  if (other.length > 0) throw bad(where, `a labeled pair takes no ${other.map((k) => `"${k}"`).join(', ')}: its loss compares the pairs' similarities with their labels`);
  const example: TrainExample = { query: first, positive: second, label };
  if (o.group !== undefined) example.group = text(where, o.group, 'group');
  return example;
}

/** The columns csvExamples reads, for its errors. */
const PAIR_COLUMNS = 'query (or anchor), positive, and optionally negative or negative_1, negative_2, ... (a hard negative each) and group; or a labeled pair: sentence1, sentence2 and label or score; or parallel sentences: english, non_english; or texts of classes: text (or sentence) and label';

/**
 * Reads a CSV or TSV file's pairs or triplets by its header's `columns` (named as sentence-transformers' datasets
 * name them): `query` (or `anchor`), `positive`, optional hard negatives `negative` and/or `negative_1`,
 * `negative_2`, ... (in the header's order; an empty cell is no negative, so rows may have fewer), and optional
 * `group`. Any other column, or a `negatives` column (a cell holds one text), is refused, naming the columns found
 * and those expected (`expected`: what the caller reads, for its error). Teacher scores are JSONL's alone.
 */
function csvExamples(columns: string[], where: string, expected = PAIR_COLUMNS): (fields: string[], where: string) => TrainExample {
  const refuse = (problem: string) => bad(where, `${problem} (columns found: ${columns.join(', ')}; expected: ${expected})`);
  let query = -1;
  let positive = -1;
  let group = -1;
  let label = -1;
  let single = -1;
  const negatives: number[] = [];
  const unknown: string[] = [];
  columns.forEach((c, i) => {
    if (c === 'query' || c === 'anchor' || c === 'sentence1' || c === 'english') {
      if (query >= 0) throw refuse('give one of the "query", "anchor", "sentence1" and "english" columns');
      query = i;
    } else if (c === 'positive' || c === 'sentence2' || c === 'non_english') {
      if (positive >= 0) throw refuse('give one of the "positive", "sentence2" and "non_english" columns');
      positive = i;
    } else if (c === 'label' || c === 'score') {
      if (label >= 0) throw refuse('give a "label" or a "score" column, not both');
      label = i;
    }
    else if (c === 'text' || c === 'sentence') {
      if (single >= 0) throw refuse('give a "text" or a "sentence" column, not both');
      single = i;
    } else if (c === 'negative' || /^negative_\d+$/.test(c)) negatives.push(i);
    else if (c === 'group') group = i;
    else if (c === 'negatives') throw refuse('a "negatives" column: a cell holds one text, so give each hard negative a column of its own, negative_1, negative_2, ...');
    else unknown.push(c);
  });
  if (unknown.length === columns.length) throw refuse('the first row must be a header naming the columns');
  if (unknown.length > 0) throw refuse(`unknown column${unknown.length === 1 ? '' : 's'} ${unknown.map((c) => `"${c}"`).join(', ')}`);
  if (single >= 0) {
    // Texts of classes: a text column and a label column, and nothing of pairs.
    const others = [query, positive, ...negatives].filter((i) => i >= 0);
    if (others.length > 0) throw refuse(`a "${columns[single]}" column holds texts of classes (with "label"), which take no ${others.map((i) => `"${columns[i]}"`).join(', ')} column`);
    if (label >= 0 && columns[label] !== 'label') throw refuse(`a "${columns[single]}" column takes a "label" column (each text's class), not "${columns[label]}"`);
    return (fields, at) => {
      const body = text(at, fields[single], columns[single]);
      if (label < 0) {
        // Sentences alone (embedding distillation's).
        const alone: TrainExample = { query: body, positive: body, single: true };
        if (group >= 0 && fields[group].trim() !== '') alone.group = fields[group];
        return alone;
      }
      const cell = fields[label].trim();
      if (cell === '') throw bad(at, '"label" must be the text\'s class, and it is empty');
      // A number is its class however it is written ("1.0" and 1 are one class, as in a .jsonl).
      const number = Number(cell);
      const example: TrainExample = { query: body, positive: body, classLabel: Number.isFinite(number) ? String(number) : cell };
      if (group >= 0 && fields[group].trim() !== '') example.group = fields[group];
      return example;
    };
  }
  if (query < 0 || positive < 0) throw refuse(`no "${query < 0 ? 'query' : 'positive'}" column`);
  if (label >= 0 && negatives.length > 0) throw refuse(`a "${columns[label]}" column labels pairs, which take no negative columns`);
  return (fields, at) => {
    const example: TrainExample = { query: text(at, fields[query], columns[query]), positive: text(at, fields[positive], columns[positive]) };
    if (label >= 0) {
      const cell = fields[label].trim();
      const value = cell === '' ? NaN : Number(cell);
      if (!Number.isFinite(value)) throw bad(at, `"${columns[label]}" must be a number, got ${JSON.stringify(fields[label])}`);
      example.label = value;
    }
    const negs = negatives.map((i) => fields[i]).filter((n) => n.trim() !== '');
    if (negs.length > 0) example.negatives = negs;
    if (group >= 0 && fields[group].trim() !== '') example.group = fields[group];
    return example;
  };
}

/** The projects of a parsed ColTrast file (`value`, read from `file`); a file without any Q&A pair is an error. */
export function readProjects(file: string, value: unknown): Project[] {
  const projects = readColtrast(file, value);
  if (projects.every((p) => p.qa.length === 0)) throw new ColtrastError('INVALID_ARGUMENT', `${file} holds no Q&A pairs`);
  return projects;
}

function readColtrast(file: string, value: unknown): Project[] {
  // JSON null, a number or a string holds no projects (null has no properties to read at all).
  const projects = value !== null && typeof value === 'object' ? (value as { projects?: unknown }).projects : undefined;
  if (!Array.isArray(projects)) throw bad(file, 'expected {"projects": [...]} (the ColTrast format) or a JSONL file of pairs');
  const ids = new Set<string>();
  return projects.map((p, i) => {
    const where = `${file}: projects[${i}]`;
    if (p === null || typeof p !== 'object') throw bad(where, 'expected an object');
    const project = p as Record<string, unknown>;
    const id = text(where, project.project_id, 'project_id');
    if (ids.has(id)) throw bad(where, `project_id "${id}" appears twice`);
    ids.add(id);
    const document = text(where, project.readme_content, 'readme_content');
    if (!Array.isArray(project.qa_pairs)) throw bad(where, '"qa_pairs" must be an array');
    const qa = project.qa_pairs.map((item, j) => {
      const at = `${where}.qa_pairs[${j}]`;
      if (item === null || typeof item !== 'object') throw bad(at, 'expected an object');
      const pair = item as Record<string, unknown>;
      const question = text(at, pair.question, 'question');
      const answer = text(at, pair.answer, 'answer');
      return pair.context === undefined ? { question, answer } : { question, answer, context: text(at, pair.context, 'context') };
    });
    return { id, document, qa };
  });
}

export type TrainingData = { examples: TrainExample[] } | { projects: Project[] };

/**
 * Reads `data`: a file path (.jsonl pairs/triplets, a .json array of them, the ColTrast .json with projects, or a
 * .csv/.tsv with a header row, csvExamples' columns) or an array of examples. Empty data is an error.
 */
export async function readTrainingData(data: string | readonly unknown[]): Promise<TrainingData> {
  let examples: TrainExample[];
  if (Array.isArray(data)) {
    // In turns: checking a million pairs holds the event loop about a second.
    examples = await mapInTurns(data, (item, i) => checkExample(`data[${i}]`, item));
  } else if (typeof data === 'string') {
    checkDataFile(data);
    if (JSONL.test(data)) {
      examples = await parseJsonLines(data, (value, where) => checkExample(where, value));
    } else if (CSV.test(data)) {
      examples = await parseCsv(data, (columns, where) => csvExamples(columns, where));
    } else {
      const value = parseJsonDocument(data, await readWholeText(data, 'data'), 'JSONL files must end in .jsonl');
      if (!Array.isArray(value)) return { projects: readProjects(data, value) };
      examples = await mapInTurns(value, (item, i) => checkExample(`${data}: [${i}]`, item));
    }
  } else {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.data must be a file path or an array of { query, positive, negatives? }');
  }
  if (examples.length === 0) {
    // A file that is empty or only blank lines is a mistake of the file's (an export that failed): name it.
    const what = typeof data === 'string' && CSV.test(data) ? 'it is empty or has only a header row' : 'it is empty or has only blank lines, or an empty array';
    throw new ColtrastError('INVALID_ARGUMENT', typeof data === 'string' ? `data file ${data} holds no examples (${what})` : 'the training data holds no examples');
  }
  return { examples };
}

/** What readSentences takes as one item, for its errors. */
const SENTENCE_ITEM = 'a sentence is a non-empty string or { "text": string } (with no other field), or a pair or triplet { query, positive, negatives? } whose texts all count';

/**
 * Unlabeled sentences for Contrastive Tension (train({ contrastiveTension })): an array of strings, a text file
 * (.txt: one sentence per line, blank lines skipped), a .jsonl file or .json array of strings or `{ "text": ... }`
 * objects, a .csv/.tsv file with a header row of one column, `text` (or `sentence`), or pairs/triplets (in any of
 * those, csvExamples' columns in a CSV file, or in an array of examples), whose queries, positives and negatives
 * all count. Each sentence is kept once (a repeat in the batch would be a false in-batch negative), in first-seen
 * order; fewer than two distinct sentences is an error.
 */
export async function readSentences(data: string | readonly unknown[]): Promise<string[]> {
  const ofExamples = (examples: TrainExample[]) => examples.flatMap((e) => [e.query, e.positive, ...(e.negatives ?? [])]);
  const one = (where: string, value: unknown): string[] => {
    if (typeof value === 'string') return [text(where, value, 'sentence')];
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad(where, `${SENTENCE_ITEM}; this is ${value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`}`);
    const keys = Object.keys(value);
    if (keys.includes('text')) {
      if (keys.length === 1) return [text(where, (value as { text: unknown }).text, 'text')];
      throw bad(where, `${SENTENCE_ITEM}; this object has "text" and ${keys.filter((k) => k !== 'text').map((k) => `"${k}"`).join(', ')}`);
    }
    // An object that is no pair either: what a sentence may be, not the pairs' fields alone.
    if (!keys.includes('query') && !keys.includes('positive')) throw bad(where, `${SENTENCE_ITEM}; this object has ${keys.length === 0 ? 'no fields' : keys.map((k) => `"${k}"`).join(', ')}`);
    return ofExamples([checkExample(where, value)]);
  };
  const csv: CsvReader<string[]> = (columns, where) => {
    if (columns.length === 1 && (columns[0] === 'text' || columns[0] === 'sentence')) return (fields, at) => [text(at, fields[0], columns[0])];
    const expected = `one column, "text" (or "sentence"), or the pairs' ${PAIR_COLUMNS}`;
    const named = columns.find((c) => c === 'text' || c === 'sentence');
    if (named) throw bad(where, `a "${named}" column must be the file's only one (columns found: ${columns.join(', ')}; expected: ${expected})`);
    const read = csvExamples(columns, where, expected);
    return (fields, at) => ofExamples([read(fields, at)]);
  };
  const sentences = await readTextList(data, one, {
    name: 'data',
    jsonHint: 'give a .txt file (one sentence per line), a .jsonl file, a .csv or .tsv file, or a .json array',
    notArray: 'Contrastive Tension trains on sentences: give a .txt file (one per line), a .jsonl file or a .json array of strings, a .csv or .tsv file, or pairs, not a ColTrast project file',
    wrongType: () => new ColtrastError('INVALID_ARGUMENT', 'options.data must be a file path (.txt, .jsonl, .csv, .tsv, .json) or an array of sentences'),
    csv,
  });
  const distinct = [...new Set(sentences)];
  if (distinct.length < 2) throw new ColtrastError('INVALID_ARGUMENT', `the training data holds ${distinct.length} distinct sentence${distinct.length === 1 ? '' : 's'}; Contrastive Tension needs at least two`);
  return distinct;
}

/**
 * The documents of `corpus`, each kept once; an empty one is an error. A .csv or .tsv corpus has a header row with a
 * `text` column, a document a row; its other columns (an id, a title) are not read, as a .jsonl's objects' other
 * fields are not.
 */
export async function readCorpus(corpus: string | readonly (string | { text: string })[] | undefined): Promise<string[]> {
  const one = (where: string, value: unknown): string[] => {
    const t = typeof value === 'string' ? value : (value as { text?: unknown })?.text;
    if (typeof t !== 'string' || !t.trim()) throw new ColtrastError('INVALID_ARGUMENT', `${where}: a document must be a non-empty string or { "text": string }`);
    return [t];
  };
  const docs = [
    ...new Set(
      await readTextList(corpus, one, {
        name: 'corpus',
        jsonHint: 'give a .txt, .jsonl or .json array',
        notArray: 'expected a JSON array of documents',
        wrongType: (value) => invalid('options.corpus', 'a file path or an array of documents', value),
        csv: (columns, where) => {
          const i = columns.indexOf('text');
          if (i < 0) throw bad(where, `no "text" column (columns found: ${columns.join(', ')}): a corpus's CSV or TSV file has a header row naming a "text" column, a document a row (other columns, an id or a title, are not read)`);
          return (fields, at) => [text(at, fields[i], 'text')];
        },
      }),
    ),
  ];
  if (docs.length === 0) {
    const what = typeof corpus === 'string' && CSV.test(corpus) ? 'it is empty or has only a header row' : 'it is empty or has only blank lines, or an empty array';
    throw new ColtrastError('INVALID_ARGUMENT', typeof corpus === 'string' ? `corpus file ${corpus} holds no documents (${what})` : 'the corpus holds no documents');
  }
  return docs;
}

/** Pairs/triplets only (a .jsonl, .csv, .tsv or .json file, or an array); ColTrast project files are refused. */
export async function loadExamples(data: string | readonly unknown[]): Promise<TrainExample[]> {
  const read = await readTrainingData(data);
  if ('projects' in read) throw bad(String(data), 'expected pairs or triplets, not a ColTrast project file (use readTrainingData)');
  return read.examples;
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * How much of the data a validation split holds out: a fraction of the groups in [0, 1) (0: none), or a whole number
 * ≥ 1 of groups; `maxGroups` caps a fraction's count (train()'s default split).
 */
export interface ValSplit {
  valSplit: number;
  maxGroups?: number;
}

/** The validation split's options, checked: `valSplit` a fraction in [0, 1) or a whole number ≥ 1 (of groups). */
export function valSplitValue(name: string, value: unknown, fallback: number): number {
  const x = value ?? fallback;
  if (typeof x !== 'number' || !Number.isFinite(x) || x < 0 || (x >= 1 && !Number.isInteger(x))) {
    throw invalid(name, 'a fraction in [0, 1) or a whole number of groups >= 1', value);
  }
  return x;
}

/**
 * Seeded split of items into groups (`groupOf`): no group on both sides; valSplit 0 keeps all for training. The
 * groups are ordered by key, then shuffled with `seed`, so the split does not depend on the items' order; each side
 * keeps its groups in that shuffled order and a group's items in their order. Runs in turns (a million ungrouped
 * examples take about a second).
 */
export async function splitByGroup<T>(
  items: T[],
  groupOf: (item: T, index: number) => string,
  { valSplit, maxGroups = Infinity }: ValSplit,
  seed: number,
): Promise<{ train: T[]; val: T[] }> {
  if (valSplit <= 0) return { train: items, val: [] };
  // Each item's group as a number (in order of first appearance), without an array per group.
  const groupIds = new Map<string, number>();
  const groupOfItem = new Int32Array(items.length);
  let i = 0;
  await inTurns(items, (item) => {
    const key = groupOf(item, i);
    let g = groupIds.get(key);
    if (g === undefined) {
      g = groupIds.size;
      groupIds.set(key, g);
    }
    groupOfItem[i++] = g;
  });
  const keys = [...groupIds.keys()];
  groupIds.clear();
  const byKey: number[] = [];
  for (let g = 0; g < keys.length; g++) byKey.push(g);
  await nextTurn();
  byKey.sort((a, b) => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0));
  await nextTurn();
  const order = shuffle(byKey, seededRandom(seed).next);
  await nextTurn();
  const valGroups = valSplit >= 1 ? valSplit : Math.min(maxGroups, Math.max(1, Math.round(keys.length * valSplit)));
  if (valGroups >= keys.length) {
    throw new ColtrastError('INVALID_ARGUMENT', `valSplit ${valSplit} leaves no training data (${keys.length} group(s)); lower it or set it to 0`);
  }
  // A counting sort of the items by their group's place in `order` (stable: a group's items keep their order).
  const start = new Int32Array(keys.length + 1);
  for (let k = 0; k < items.length; k++) start[groupOfItem[k] + 1]++;
  const sizes = start.slice(1);
  let at = 0;
  for (const g of order) {
    start[g] = at;
    at += sizes[g];
  }
  const place = new Int32Array(items.length);
  for (let k = 0; k < items.length; k++) place[start[groupOfItem[k]]++] = k;
  const valItems = order.slice(0, valGroups).reduce((n, g) => n + sizes[g], 0);
  const val = await arrayInTurns(map(place.subarray(0, valItems), (k) => items[k]));
  const train = await arrayInTurns(map(place.subarray(valItems), (k) => items[k]));
  return { train, val };
}

function* map<T>(indices: Int32Array, item: (index: number) => T): Generator<T> {
  for (const k of indices) yield item(k);
}

/** Seeded split by example group (an example without a group is its own group). */
export function splitExamples(examples: TrainExample[], split: ValSplit, seed: number): Promise<{ train: TrainExample[]; val: TrainExample[] }> {
  return splitByGroup(examples, (e, i) => e.group ?? `#${i}`, split, seed);
}

export interface Batch {
  queries: string[];
  /** The positives (one per query, in order), then the batch's hard negatives. */
  documents: string[];
  /** When the examples have teacher scores: each query's positive and own negatives among `documents`, with their scores. */
  teacher?: NativeTeacherScores;
  /** Labeled pairs: query i and document i are a pair, this its label. */
  pairLabels?: Float32Array;
  /** With `firstNegatives` asked (a triplet loss): each query's first hard negative among `documents`, -1 where it has none. */
  firstNegatives?: Int32Array;
  /** Embedding distillation: each query's teacher vector, row after row. */
  targetVectors?: Float32Array;
  /** Texts of classes (the batch triplet losses): each query's class, numbered within the batch; no documents. */
  classLabels?: Int32Array;
}

/**
 * The teacher scores of a batch's `chosen` examples, whose documents are `documents`: each query's positive
 * (document i) and its own negatives, by index; a negative that maxNegatives left out, or that equals the
 * query's positive, is -1.
 */
function teacherScores(chosen: TrainExample[], documents: string[]): NativeTeacherScores {
  const index = new Map<string, number>();
  documents.forEach((d, i) => index.has(d) || index.set(d, i));
  const perQuery = Math.max(...chosen.map((e) => 1 + (e.negatives?.length ?? 0)));
  const candidates = new Int32Array(chosen.length * perQuery).fill(-1);
  const scores = new Float32Array(chosen.length * perQuery);
  chosen.forEach((e, i) => {
    candidates[i * perQuery] = i;
    scores[i * perQuery] = e.scores![0];
    (e.negatives ?? []).forEach((n, j) => {
      const at = index.get(n);
      if (at === undefined || at === i) return;
      candidates[i * perQuery + 1 + j] = at;
      scores[i * perQuery + 1 + j] = e.scores![1 + j];
    });
  });
  return { candidates, scores, perQuery };
}

/**
 * Cuts examples (in the given order) into batches in which no text appears twice among the queries or among the
 * documents: an example whose positive or query is already in the current batch waits for the next one, and
 * negatives equal to a positive or to another negative are dropped (a teacher's score of such a negative stays with
 * its query, pointing at the copy the batch keeps).
 */
export function makeBatches(examples: TrainExample[], batchSize: number, maxNegatives = Infinity, firstNegatives = false): Batch[] {
  return [...batchesOf(examples, batchSize, maxNegatives, firstNegatives)];
}

/**
 * makeBatches' batches one at a time: a million examples are seconds of batching, which train() does in turns
 * (arrayInTurns) so that the event loop runs meanwhile.
 */
export function* batchesOf(examples: TrainExample[], batchSize: number, maxNegatives = Infinity, firstNegatives = false): Generator<Batch> {
  for (const chosen of batchExamples(examples, batchSize)) {
    if (chosen[0].classLabel !== undefined) {
      // Texts of classes: the texts alone, and each one's class as the batch numbers its classes.
      const classes = new Map<string, number>();
      const classLabels = Int32Array.from(chosen, (e) => classes.get(e.classLabel!) ?? (classes.set(e.classLabel!, classes.size), classes.size - 1));
      yield { queries: chosen.map((e) => e.query), documents: [], classLabels };
      continue;
    }
    const negatives: string[] = [];
    const seen = new Set(chosen.map((e) => e.positive));
    for (const e of chosen) {
      for (const n of e.negatives ?? []) {
        if (negatives.length >= maxNegatives) break;
        if (!seen.has(n)) {
          seen.add(n);
          negatives.push(n);
        }
      }
    }
    const documents = [...chosen.map((e) => e.positive), ...negatives];
    const batch: Batch = { queries: chosen.map((e) => e.query), documents };
    if (chosen[0].label !== undefined) batch.pairLabels = Float32Array.from(chosen, (e) => e.label!);
    if (chosen[0].target !== undefined) batch.targetVectors = Float32Array.from(chosen.flatMap((e) => e.target!));
    // Sentences alone: the queries only.
    if (chosen[0].single) batch.documents = [];
    if (firstNegatives) {
      // The document that holds each example's first negative text (the batch keeps one copy of a text).
      const at = new Map<string, number>();
      documents.forEach((d, i) => at.has(d) || at.set(d, i));
      batch.firstNegatives = Int32Array.from(chosen, (e, i) => {
        const n = e.negatives?.[0] === undefined ? undefined : at.get(e.negatives[0]);
        return n === undefined || n === i ? -1 : n;
      });
    }
    if (chosen.some((e) => e.scores)) {
      if (!chosen.every((e) => e.scores)) throw new ColtrastError('INVALID_ARGUMENT', 'teacher scores are given for some examples only: give them for every example or none');
      batch.teacher = teacherScores(chosen, documents);
    }
    yield batch;
  }
}

/**
 * Texts of classes in batches as sentence-transformers' GroupByLabelBatchSampler forms them, for the batch triplet
 * losses, which need each class of a batch twice at least: each class's texts in the given order, cut to an even count,
 * the classes of fewer than 2 left out; then rounds in which each class that still holds texts gives its next 2, while
 * 2 classes or more do, the classes in the order they first come (turned by one place each round, where
 * sentence-transformers draws each round's order), cut into batches of `batchSize` (even: train() checks), the last
 * kept when it holds 4 texts or more.
 */
function* classBatches(examples: TrainExample[], batchSize: number): Generator<TrainExample[]> {
  const groups = new Map<string, TrainExample[]>();
  for (const e of examples) {
    const group = groups.get(e.classLabel!);
    if (group) group.push(e);
    else groups.set(e.classLabel!, [e]);
  }
  const queues = [...groups.values()].filter((g) => g.length >= 2).map((g) => g.slice(0, g.length - (g.length % 2)));
  const heads = queues.map(() => 0);
  let live = queues.map((_, i) => i);
  let batch: TrainExample[] = [];
  for (let round = 0; live.length >= 2; round++) {
    const turn = round % live.length;
    for (const q of [...live.slice(turn), ...live.slice(0, turn)]) {
      batch.push(queues[q][heads[q]], queues[q][heads[q] + 1]);
      heads[q] += 2;
      if (batch.length >= batchSize) {
        yield batch.slice(0, batchSize);
        batch = batch.slice(batchSize);
      }
    }
    live = live.filter((q) => heads[q] < queues[q].length);
  }
  if (batch.length >= 4) yield batch;
}

/**
 * The examples of each of batchesOf's batches, in order: the rule that a batch never holds one positive or one query
 * twice, without forming the batches' documents (train() counts each epoch's batches with it). A query twice (one
 * question with two relevant passages, as MS MARCO's) made each copy's positive an in-batch negative of the other, a
 * false negative, as sentence-transformers' NoDuplicatesBatchSampler keeps out too.
 */
export function* batchExamples(examples: TrainExample[], batchSize: number): Generator<TrainExample[]> {
  if (examples.length > 0 && examples[0].classLabel !== undefined) {
    yield* classBatches(examples, batchSize);
    return;
  }
  // Labeled pairs are compared with each other, not used as each other's negatives: a text twice in a batch is no false
  // negative, and they go in order, batchSize at a time (as sentence-transformers' default sampler takes them).
  // Embedding distillation's parallel sentences likewise: one source sentence may come with several translations.
  if (examples.length > 0 && (examples[0].label !== undefined || examples[0].target !== undefined)) {
    for (let start = 0; start < examples.length; start += batchSize) yield examples.slice(start, start + batchSize);
    return;
  }
  // The examples not yet in a batch: those passed over (their positive or query was in the batch already), grouped by
  // query in the order their queries were first passed over, and then examples[next...]. A batch looks at each waiting
  // query once (its group's first example whose positive is free), stopping early when no waiting example could join it
  // (every waiting positive, or every waiting query, is in it already), then takes new examples in order until it is
  // full. So the work is about the examples plus the waiting queries a batch looks at, not every
  // waiting example for every batch: many examples of one query (a label used as the query) or of a few positives
  // made each batch rescan them all (40,000 examples over 5 labels took 13 s). Examples of distinct queries wait in
  // groups of one, in order, as one list did.
  // A query's waiting examples from `head` on (taken ones before it; one taken from further on is spliced out).
  interface Group { query: string; items: TrainExample[]; head: number }
  // The groups in order from groupsHead on; a group emptied stays in place until the head passes it.
  const groups: Group[] = [];
  let groupsHead = 0;
  const groupOf = new Map<string, Group>();
  let waitingCount = 0;
  const waitingKeys = { positives: new Map<string, number>(), queries: new Map<string, number>() };
  const count = (map: Map<string, number>, key: string, by: number) => {
    const n = (map.get(key) ?? 0) + by;
    if (n === 0) map.delete(key);
    else map.set(key, n);
  };
  const wait = (e: TrainExample) => {
    let group = groupOf.get(e.query);
    if (!group) {
      group = { query: e.query, items: [], head: 0 };
      groupOf.set(e.query, group);
      groups.push(group);
    }
    group.items.push(e);
    waitingCount++;
    count(waitingKeys.positives, e.positive, 1);
    count(waitingKeys.queries, e.query, 1);
  };
  let next = 0;
  while (waitingCount > 0 || next < examples.length) {
    const chosen: TrainExample[] = [];
    const positives = new Set<string>();
    const queries = new Set<string>();
    // The waiting examples' positives and queries not in the batch yet: at 0, no waiting example can join it.
    let freePositives = waitingKeys.positives.size;
    let freeQueries = waitingKeys.queries.size;
    const take = (e: TrainExample) => {
      chosen.push(e);
      positives.add(e.positive);
      queries.add(e.query);
      freePositives--;
      freeQueries--;
    };
    while (groupsHead < groups.length && groups[groupsHead].head === groups[groupsHead].items.length) groupsHead++;
    for (let g = groupsHead; g < groups.length; g++) {
      if (chosen.length >= batchSize || freePositives === 0 || freeQueries === 0) break;
      const group = groups[g];
      if (group.head === group.items.length || queries.has(group.query)) continue;
      let at = group.head;
      while (at < group.items.length && positives.has(group.items[at].positive)) at++;
      if (at === group.items.length) continue;
      const e = group.items[at];
      if (at === group.head) group.head++;
      else group.items.splice(at, 1);
      if (group.head === group.items.length) {
        // Emptied: a later example of its query starts a new group at the end, as it would have been passed over last.
        groupOf.delete(group.query);
        group.items = [];
        group.head = 0;
      }
      waitingCount--;
      count(waitingKeys.positives, e.positive, -1);
      count(waitingKeys.queries, e.query, -1);
      take(e);
    }
    while (chosen.length < batchSize && next < examples.length) {
      const e = examples[next++];
      if (!positives.has(e.positive) && !queries.has(e.query)) take(e);
      else wait(e);
    }
    yield chosen;
  }
}
