// CSV and TSV files (gzipped too) where coltrast reads texts or documents beside training data: `coltrast embed`'s
// input (a "text" column, a text a row), `coltrast index --data` (id and text columns, the others the documents'
// metadata; counted and checked before the model loads, as a .jsonl is) and trainRag()'s questions and answers
// (question or query, answer, group). Runs the built CLI, dist/cli.js (npm run build:ts first).
import test from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Encoder, Index, trainRag, type IndexDoc } from '../lib';
import { csvBatches, parseCsv } from '../lib/data-files';
import { INDEX_SLICE, indexDocumentSlices, type PlacedDoc } from '../lib/index-docs';
import { readRagData } from '../lib/rag';
import { FIXTURE, tempDir } from './helpers/fixture';
import { TINY_GENERATOR } from './helpers/rag-data';
import { rejection } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };

function cli(args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: ENV, timeout: 120_000 });
}

/** A user error as the CLI reports one: exit 2, one `coltrast: ...` line matching `message`, no stack trace. */
function userError(t: import('ava').ExecutionContext, run: { status: number | null; stderr: string }, message: RegExp, label = ''): void {
  t.is(run.status, 2, `${label}\n${run.stderr}`);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('coltrast: '));
  t.is(lines.length, 1, `${label}\n${run.stderr}`);
  t.regex(lines[0] ?? '', message, label);
  t.notRegex(run.stderr, /\n\s+at |node:internal/, `${label}: no stack trace`);
}

function write(dir: string, name: string, content: string | Buffer): string {
  fs.writeFileSync(path.join(dir, name), content);
  return name;
}

/** The same table as a .csv, a .tsv and a .csv.gz in `dir` (their names): `tsv` is its TSV text. */
function tables(dir: string, base: string, csv: string, tsv: string): string[] {
  return [write(dir, `${base}.csv`, csv), write(dir, `${base}.tsv`, tsv), write(dir, `${base}.csv.gz`, zlib.gzipSync(csv))];
}

// A cell with a comma and a line break (quoted), and one with quotes: "" in CSV, as they are in an unquoted TSV cell.
const TEXTS = ['plain text', 'a text, with a comma\nand a second line', 'she said "hi"'];
const TEXTS_CSV = 'id,text\n1,plain text\n2,"a text, with a comma\nand a second line"\n3,"she said ""hi"""\n';
const TEXTS_TSV = 'id\ttext\n1\tplain text\n2\t"a text, with a comma\nand a second line"\n3\tshe said "hi"\n';

test('embed reads the "text" column of a .csv, .tsv or .csv.gz, a text a row, as it reads the same texts from JSONL', (t) => {
  const dir = tempDir();
  write(dir, 'texts.jsonl', TEXTS.map((text) => JSON.stringify({ text })).join('\n'));
  const expected = cli(['embed', 'texts.jsonl', '--model', FIXTURE, '--threads', '1'], dir);
  t.is(expected.status, 0, expected.stderr);
  t.is(expected.stdout.trim().split('\n').length, 3);
  for (const file of tables(dir, 'texts', TEXTS_CSV, TEXTS_TSV)) {
    const run = cli(['embed', file, '--model', FIXTURE, '--threads', '1'], dir);
    t.is(run.status, 0, `${file}: ${run.stderr}`);
    t.is(run.stdout, expected.stdout, `${file}: three texts, the same vectors`);
  }
});

test('embed refuses a table without a "text" column, naming its columns, and one without rows, before the model loads', (t) => {
  const dir = tempDir();
  const noModel = path.join(dir, 'no-model');
  write(dir, 'body.csv', 'id,body\n1,x\n');
  userError(t, cli(['embed', 'body.csv', '--model', noModel], dir), /^coltrast: body\.csv:1: no "text" column \(columns found: id, body\): embed reads a CSV or TSV file whose header row names a "text" column, a text a row$/);
  write(dir, 'header.tsv', 'text\n\n');
  userError(t, cli(['embed', 'header.tsv', '--model', noModel], dir), /^coltrast: input file header\.tsv holds no texts \(it is empty or has only a header row\)/);
});

// Quoted cells holding '\r\n', a lone '\r', '\n' and a blank line, between CRLF record ends, after a byte-order mark.
const BREAKS_CSV = '\uFEFFid,text\r\n1,"a\r\nb"\r\n2,"c\rd"\r\n\r\n3,"e\nf, g"\r\n4,"h\r\n\r\ni ""j"""\r\n5,plain\r\n';
const BREAKS_TSV = BREAKS_CSV.replace(/,(?=[^ ])/g, '\t');

/** `file`'s rows as Python's csv module reads them (DictReader, the file opened with newline='' as its manual says). */
function pythonRows(file: string): Record<string, string>[] {
  const script = [
    'import csv, gzip, json, sys',
    'f = sys.argv[1]',
    "opener = gzip.open if f.endswith('.gz') else open",
    "with opener(f, 'rt', newline='', encoding='utf-8-sig') as h:",
    "    print(json.dumps(list(csv.DictReader(h, delimiter='\\t' if '.tsv' in f else ','))))",
  ].join('\n');
  const run = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8', timeout: 240_000 });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(run.stdout);
}

test("a quoted cell's '\\r\\n', lone '\\r' and '\\n' are kept as Python's csv module reads them, CRLF record ends dropped", async (t) => {
  const dir = tempDir();
  const files = tables(dir, 'breaks', BREAKS_CSV, BREAKS_TSV).map((f) => path.join(dir, f));
  const want = ['a\r\nb', 'c\rd', 'e\nf, g', 'h\r\n\r\ni "j"', 'plain'];
  for (const file of files) {
    const rows = await parseCsv(file, (columns) => (fields) => Object.fromEntries(columns.map((c, i) => [c, fields[i]])));
    t.deepEqual(rows, pythonRows(file), path.basename(file));
    t.deepEqual(rows.map((r) => r.text), want, path.basename(file));
  }
  // embed embeds those texts, as it does from JSON Lines.
  write(dir, 'breaks.jsonl', want.map((text) => JSON.stringify({ text })).join('\n'));
  const expected = cli(['embed', 'breaks.jsonl', '--model', FIXTURE, '--threads', '1'], dir);
  t.is(expected.status, 0, expected.stderr);
  const run = cli(['embed', 'breaks.csv', '--model', FIXTURE, '--threads', '1'], dir);
  t.is(run.status, 0, run.stderr);
  t.is(run.stdout, expected.stdout);
});

test('embed skips blank lines in every format (they are no rows) and refuses an empty or blank text with its line, before the model loads', (t) => {
  const dir = tempDir();
  write(dir, 'two.txt', 'first text\nsecond text\n');
  const expected = cli(['embed', 'two.txt', '--model', FIXTURE, '--threads', '1'], dir);
  t.is(expected.status, 0, expected.stderr);
  t.is(expected.stdout.trim().split('\n').length, 2);
  // Blank lines, and a .txt's lines of spaces, are not rows: the same two vectors, at indexes 0 and 1.
  const blank: [string, string][] = [
    ['blank.txt', '\nfirst text\n\n   \nsecond text\n\n'],
    ['blank.jsonl', '{"text": "first text"}\n\n  \n{"text": "second text"}\n'],
    ['blank.csv', 'id,text\r\n\r\n1,first text\r\n\r\n2,second text\r\n'],
    ['blank.tsv', 'id\ttext\n1\tfirst text\n\n2\tsecond text\n\n'],
  ];
  for (const [name, content] of blank) {
    const run = cli(['embed', write(dir, name, content), '--model', FIXTURE, '--threads', '1'], dir);
    t.is(run.status, 0, `${name}: ${run.stderr}`);
    t.is(run.stdout, expected.stdout, name);
  }
  // A row whose text is empty or blank would shift every later vector if skipped: an error naming its line.
  const noModel = path.join(dir, 'no-model');
  const refused: [string, string, RegExp][] = [
    ['empty.jsonl', '{"text": "a"}\n\n{"text": ""}\n', /^coltrast: empty\.jsonl:3: "text" is empty: embed writes a vector a row, in order, and neither skips a row \(every later vector would move up one\) nor embeds no text; write the text there, or remove the row$/],
    ['spaces.jsonl', '{"text": " \\t"}\n', /^coltrast: spaces\.jsonl:1: "text" is blank \(only whitespace\): embed writes a vector a row/],
    ['cell.csv', 'id,text\n1,a\n2,\n3,c\n', /^coltrast: cell\.csv:3: the "text" cell is empty: embed writes a vector a row/],
    ['quoted.csv', 'text\n"a\nb"\n""\nc\n', /^coltrast: quoted\.csv:4: the "text" cell is empty/],
    // A row of empty cells: Python's csv module and pandas read it as a row, so it is one here too.
    ['commas.csv', 'id,text\r\n1,a\r\n,\r\n2,b\r\n', /^coltrast: commas\.csv:3: the "text" cell is empty/],
    ['blank.tsv', 'id\ttext\n1\ta\n2\t  \n', /^coltrast: blank\.tsv:3: the "text" cell is blank \(only whitespace\)/],
  ];
  for (const [name, content, message] of refused) userError(t, cli(['embed', write(dir, name, content), '--model', noModel], dir), message, name);
});

// Documents with metadata columns: an empty cell is left out, a row with none has no metadata.
const DOCS_CSV = 'id,title,text,lang\na,Alpha,"alpha is first, before beta",en\nb,,"beta is\nsecond",\nc,"Gamma ""G""",gamma,en\n';
const DOCS_TSV = 'id\ttitle\ttext\tlang\na\tAlpha\talpha is first, before beta\ten\nb\t\t"beta is\nsecond"\t\nc\tGamma "G"\tgamma\ten\n';
const DOCS: IndexDoc[] = [
  { id: 'a', text: 'alpha is first, before beta', metadata: { title: 'Alpha', lang: 'en' } },
  { id: 'b', text: 'beta is\nsecond' },
  { id: 'c', text: 'gamma', metadata: { title: 'Gamma "G"', lang: 'en' } },
];

test('index --data reads a .csv, .tsv or .csv.gz of id and text columns, the other columns string metadata; --update adds a table', async (t) => {
  const dir = tempDir();
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    for (const file of tables(dir, 'docs', DOCS_CSV, DOCS_TSV)) {
      const output = `idx-${file.replace(/\./g, '-')}`;
      const run = cli(['index', '--data', file, '--model', FIXTURE, '--threads', '1', '--output', output, '--json'], dir);
      t.is(run.status, 0, `${file}: ${run.stderr}`);
      t.is(JSON.parse(run.stdout).documents, 3, file);
      const index = await Index.load(path.join(dir, output), enc);
      t.deepEqual(index.get(['a', 'b', 'c']), DOCS, file);
      t.false('metadata' in index.get(['b'])[0]!, `${file}: a row of empty metadata cells has no metadata`);
    }
    write(dir, 'more.csv', 'id,text,year\nd,"delta, fourth",2024\na,"alpha, again",\n');
    const updated = cli(['index', '--data', 'more.csv', '--output', 'idx-docs-csv', '--update', '--threads', '1', '--json'], dir);
    t.is(updated.status, 0, updated.stderr);
    t.like(JSON.parse(updated.stdout), { documents: 4, added: 1, replaced: 1 });
    const index = await Index.load(path.join(dir, 'idx-docs-csv'), enc);
    t.deepEqual(index.get(['a', 'd']), [{ id: 'a', text: 'alpha, again' }, { id: 'd', text: 'delta, fourth', metadata: { year: '2024' } }]);
  } finally {
    enc.dispose();
  }
});

test('index refuses an empty table, a missing column and a bad row before the model loads, and a repeated id with its line', (t) => {
  const dir = tempDir();
  // This model does not exist: each error comes before it would load.
  const noModel = ['--model', path.join(dir, 'no-model'), '--output', 'idx'];
  write(dir, 'header.csv', 'id,text\n');
  userError(t, cli(['index', '--data', 'header.csv', ...noModel], dir), /^coltrast: data file header\.csv holds no documents \(it is empty or has only a header row\): give .*a \.csv\/\.tsv with "id" and "text" columns/);
  write(dir, 'empty.tsv.gz', zlib.gzipSync(''));
  userError(t, cli(['index', '--data', 'empty.tsv.gz', ...noModel], dir), /^coltrast: data file empty\.tsv\.gz holds no documents \(it is empty or has only a header row\)/);
  write(dir, 'body.csv', 'id,body,lang\n1,x,en\n');
  userError(t, cli(['index', '--data', 'body.csv', ...noModel], dir), /^coltrast: body\.csv:1: no "text" column \(columns found: id, body, lang\): coltrast index reads a CSV or TSV file whose header row names an "id" and a "text" column/);
  write(dir, 'noid.tsv', 'text\nx\n');
  userError(t, cli(['index', '--data', 'noid.tsv', ...noModel], dir), /^coltrast: noid\.tsv:1: no "id" column \(columns found: text\)/);
  // The last row, after a record of two lines, has no id.
  write(dir, 'blank-id.csv', 'id,text\na,"x\ny"\n,z\n');
  userError(t, cli(['index', '--data', 'blank-id.csv', ...noModel], dir), /^coltrast: blank-id\.csv:4: "id" must be a non-empty string, got the string ""/);
  t.false(fs.existsSync(path.join(dir, 'idx')));
  write(dir, 'twice.csv', 'id,text\na,x\nb,"y\nz"\na,w\n');
  userError(t, cli(['index', '--data', 'twice.csv', '--model', FIXTURE, '--threads', '1', '--output', 'idx'], dir), /^coltrast: twice\.csv:5: the id "a" is repeated \(ids must be unique\)/);
  t.false(fs.existsSync(path.join(dir, 'idx')));
});

test("spread (residual storage): a table's first slice is every k-th row, as a .jsonl's, and every row comes once", async (t) => {
  const dir = tempDir();
  const n = INDEX_SLICE + 500;
  const rows = Array.from({ length: n }, (_, i) => ({ id: `d${i}`, text: i % 1000 === 0 ? `text ${i}, on\ntwo lines` : `text ${i}` }));
  const csv = path.join(dir, write(dir, 'many.csv', `id,text\n${rows.map((r) => `${r.id},"${r.text}"`).join('\n')}\n`));
  const jsonl = path.join(dir, write(dir, 'many.jsonl', rows.map((r) => JSON.stringify(r)).join('\n')));
  const read = async (file: string, spread: boolean) => {
    const { total, slices } = await indexDocumentSlices(file, undefined as unknown as Encoder, spread);
    const out: PlacedDoc[][] = [];
    for await (const slice of slices) out.push(slice);
    return { total, ids: out.map((s) => s.map((d) => d.doc.id)), docs: out.flat().map((d) => d.doc) };
  };
  for (const spread of [false, true]) {
    const [a, b] = [await read(csv, spread), await read(jsonl, spread)];
    t.is(a.total, n);
    t.deepEqual(a.ids[0], b.ids[0], `spread ${spread}: the same first slice`);
    t.deepEqual(a.docs, b.docs, `spread ${spread}: the same documents in the same order`);
    t.true(a.ids.every((s) => s.length <= INDEX_SLICE));
  }
  const stride = Math.ceil(n / INDEX_SLICE);
  t.deepEqual((await read(csv, true)).ids[0], rows.filter((_, i) => i % stride === 0).map((r) => r.id));
});

test('trainRag() reads questions and answers from a .csv, .tsv or .csv.gz (question or query, answer, group columns)', async (t) => {
  const dir = tempDir();
  const csv = 'id,question,answer,group\n1,"what is in the river, mostly?",water,nature\n2,where is the money?,"in the bank,\nsafe",\n3,"what does ""fox"" do?",jumps,nature\n';
  const tsv = 'query\tanswer\nwhat is in the river, mostly?\twater\nwhere is the money?\t"in the bank,\nsafe"\nwhat does "fox" do?\tjumps\n';
  const [csvFile, tsvFile, gzFile] = tables(dir, 'qa', csv, tsv).map((f) => path.join(dir, f));
  const expected = [
    { question: 'what is in the river, mostly?', answer: 'water', group: 'nature' },
    { question: 'where is the money?', answer: 'in the bank,\nsafe' },
    { question: 'what does "fox" do?', answer: 'jumps', group: 'nature' },
  ];
  t.deepEqual(await readRagData(csvFile), { examples: expected });
  t.deepEqual(await readRagData(gzFile), { examples: expected });
  t.deepEqual(await readRagData(tsvFile), { examples: expected.map(({ question, answer }) => ({ question, answer })) });
});

test('trainRag() refuses a table without an answer column, with an empty cell, with both question and query, or without rows', async (t) => {
  const dir = tempDir();
  const base = { retriever: FIXTURE, generator: TINY_GENERATOR, corpus: ['a document', 'another one'], output: path.join(dir, 'out'), device: 'cpu' as const, progressBar: false };
  const cases: [string, string, RegExp][] = [
    ['response.csv', 'question,response\nq,a\n', /response\.csv:1: no "answer" column \(columns found: question, response; expected: a "question" \(or "query"\) and an "answer" column, and optionally "group"\)$/],
    ['noq.tsv', 'answer\na\n', /noq\.tsv:1: no "question" column \(columns found: answer;/],
    ['both.csv', 'question,query,answer\nq,q,a\n', /both\.csv:1: give a "question" or a "query" column, not both/],
    ['cell.csv', 'question,answer\nq,"a\nb"\nq2, \n', /cell\.csv:4: "answer" must be a non-empty string$/],
    ['header.csv', 'question,answer\n', /header\.csv holds no questions \(it is empty or has only a header row\)$/],
  ];
  for (const [name, content, message] of cases) {
    const error = await rejection(() => trainRag({ ...base, data: path.join(dir, write(dir, name, content)) }));
    t.is(error.code, 'INVALID_ARGUMENT', name);
    t.regex(error.message, message, name);
  }
  t.false(fs.existsSync(base.output));
});

// Carriage returns in and between quoted cells: each expected value is what Python's csv module (newline='') reads from the same bytes.

const CSV_CASES: [name: string, text: string, rows: string[][]][] = [
  ['mixed.csv', 'a,b\r\n1,"x\r\ny"\n2,"p\nq"\r\n3,z', [['1', 'x\r\ny'], ['2', 'p\nq'], ['3', 'z']]],
  ['cr-before-quote.csv', 'a,b\n1,"x\r"\n2,"y\r"\r\n', [['1', 'x\r'], ['2', 'y\r']]],
  ['no-line-end.csv', 'a,b\r\n1,"multi\r\nline"', [['1', 'multi\r\nline']]],
  ['cr-at-end.csv', 'a,b\n1,2\r', [['1', '2']]],
  ['quoted-cr-at-end.csv', 'a,b\n1,"2\r"\r', [['1', '2\r']]],
  ['blank-crlf.csv', 'a,b\r\n\r\n1,2\r\n\r\n', [['1', '2']]],
  ['quoted-tab.tsv', 'a\tb\n1\t"x\ty"\r\n2\t"p\r\nq"\n', [['1', 'x\ty'], ['2', 'p\r\nq']]],
];

test('CSV and TSV with carriage returns in and between quoted cells read as Python\'s csv module reads them', async (t) => {
  const dir = tempDir();
  for (const [name, text, rows] of CSV_CASES) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    t.deepEqual(await parseCsv(file, () => (fields) => fields, { keepBlankRows: true }), rows, name);
  }
});

test('a 2 MiB quoted cell of CRLF lines, across the line reader\'s 1 MiB chunks, is read whole, .csv and .csv.gz, and the next record keeps its line', async (t) => {
  const dir = tempDir();
  const line = `${'x'.repeat(59)}é ""q""\r\n`; // 64 characters in the file, 60 + '"q"' + CRLF in the cell
  const count = (2 * 1024 * 1024) / 64;
  const text = `id,text\r\n1,"${line.repeat(count)}"\r\n2,after\r\n`;
  const cell = `${'x'.repeat(59)}é "q"\r\n`.repeat(count);
  for (const [name, bytes] of [['big.csv', Buffer.from(text)], ['big.csv.gz', zlib.gzipSync(text)]] as const) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    const rows = await parseCsv(file, () => (fields, where) => [where.slice(file.length + 1), ...fields]);
    t.is(rows.length, 2, name);
    t.true(rows[0][2] === cell, `${name}: the cell (${rows[0][2].length} characters, ${cell.length} expected)`);
    t.deepEqual(rows[1], [`${count + 3}`, '2', 'after'], name);
  }
});

// Line ends outside quotes, as Python's csv module (the file opened with newline='') reads them: a lone '\r' ends a
// record (old Mac line ends), '\r\r\n' is a record's end and a blank line, and a '\r' in an unquoted cell ends the
// record there; in a quoted cell every '\r' is kept. Each expected row is what Python read from the same bytes
// (csv.reader; a record's line as its line_num counts them), and the test reads them with Python again. `lines`:
// coltrast's lines of the records where they are not Python's: a '\r' alone inside a quoted cell is no line break
// in coltrast's count (test/csv-data.test.ts), as in a text editor in Unix mode, where Python's line_num counts one.
const CR_CASES: [name: string, text: string, rows: [line: number, ...fields: string[]][], lines?: number[]][] = [
  ['mac.csv', 'a,b\rc,d\r', [[1, 'a', 'b'], [2, 'c', 'd']]],
  ['cr-crlf.csv', 'a,b\r\r\nc,d', [[1, 'a', 'b'], [3, 'c', 'd']]],
  ['quoted-cr.csv', 'a,b\r"x\ry",z\rp,q\r', [[1, 'a', 'b'], [2, 'x\ry', 'z'], [4, 'p', 'q']], [1, 2, 3]],
  ['quoted-crlf.csv', 'a,b\r\n"x\r\ny",z\r\np,q\r\n', [[1, 'a', 'b'], [2, 'x\r\ny', 'z'], [4, 'p', 'q']]],
  ['quoted-then-cr.csv', 'a,b\n"x",z\ry,"\r"\r\n', [[1, 'a', 'b'], [2, 'x', 'z'], [3, 'y', '\r']]],
  ['cell-cr.csv', 'text\nfirst\rsecond\n', [[1, 'text'], [2, 'first'], [3, 'second']]],
  ['blank-crs.csv', '\r\ra,b\r\n\rc,d\r\r', [[3, 'a', 'b'], [5, 'c', 'd']]],
];

/** `file`'s records as Python's csv module reads them (newline=''): each one's first line, then its fields; no blank lines. */
function pythonRecords(file: string): [number, ...string[]][] {
  const script = [
    'import csv, gzip, json, sys',
    'f = sys.argv[1]',
    "opener = gzip.open if f.endswith('.gz') else open",
    "with opener(f, 'rt', newline='', encoding='utf-8-sig') as h:",
    "    reader = csv.reader(h, delimiter='\\t' if '.tsv' in f else ',')",
    '    out, line = [], 0',
    '    for row in reader:',
    '        if row: out.append([line + 1] + row)',
    '        line = reader.line_num',
    '    print(json.dumps(out))',
  ].join('\n');
  const run = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8', timeout: 240_000 });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(run.stdout);
}

/** `file`'s records as parseCsv reads them, the header's too: each one's line, then its fields. */
async function coltrastRecords(file: string): Promise<[number, ...string[]][]> {
  const line = (where: string) => Number(where.slice(file.length + 1));
  let header: [number, ...string[]] | undefined;
  const rows = await parseCsv(file, (columns, where) => {
    header = [line(where), ...columns];
    return (fields, at) => [line(at), ...fields] as [number, ...string[]];
  }, { keepBlankRows: true });
  return header ? [header, ...rows] : rows;
}

test("a lone '\\r' outside quotes ends a CSV or TSV record, and '\\r\\r\\n' is a record's end and a blank line, as Python's csv module reads them", async (t) => {
  const dir = tempDir();
  for (const [name, text, rows, lines] of CR_CASES) {
    const ours = rows.map(([line, ...fields], i) => [lines?.[i] ?? line, ...fields]);
    for (const [file, bytes] of [[name, text], [name.replace(/\.csv$/, '.tsv'), text.replace(/,/g, '\t')], [`${name}.gz`, zlib.gzipSync(text)]] as const) {
      const full = path.join(dir, file);
      fs.writeFileSync(full, bytes);
      t.deepEqual(pythonRecords(full), rows, `${file}: Python reads what the test expects`);
      t.deepEqual(await coltrastRecords(full), ours, file);
    }
  }
});

test("a '\\r' inside an unquoted cell ends the record there, as in Python's csv module: a record of fewer fields than the header is an error naming its line", async (t) => {
  const dir = tempDir();
  for (const [name, text] of [['mid-cell.csv', 'a,b\nx\ry,z\n'], ['mid-cell.tsv', 'a\tb\nx\ry\tz\n']]) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    t.deepEqual(pythonRecords(file), [[1, 'a', 'b'], [2, 'x'], [3, 'y', 'z']], name);
    const error = await rejection(() => parseCsv(file, () => (fields) => fields));
    t.is(error.code, 'INVALID_ARGUMENT', name);
    t.regex(error.message, new RegExp(`^${file.replace(/[.]/g, '\\.')}:2: a record of 1 field where the header has 2: not valid ${name.endsWith('.tsv') ? 'TSV' : 'CSV'}`), name);
  }
});

test("a table with old Mac line ends ('\\r' alone) larger than the line reader's chunk is read a piece at a time, every row in order", async (t) => {
  const n = 60_000; // ~1.6 MiB: more than one 1 MiB chunk of the file, many pieces of the parser's
  const text = `id,text\r${Array.from({ length: n }, (_, i) => `${i},"row ${i}${i % 1000 === 0 ? '\r\nsecond line' : ''}"`).join('\r')}\r`;
  const file = path.join(tempDir(), 'mac.csv');
  fs.writeFileSync(file, text);
  const batches: string[][][] = [];
  for await (const batch of csvBatches(file, () => (fields) => fields)) batches.push(batch);
  t.true(batches.length > 1, `${batches.length} batches`);
  const rows = batches.flat();
  t.is(rows.length, n);
  t.deepEqual(rows[1000], ['1000', 'row 1000\r\nsecond line']);
  t.deepEqual(rows[n - 1], [`${n - 1}`, `row ${n - 1}`]);
});
