// CSV and TSV data files (lib/data-files.ts parseCsv, lib/train-data.ts): training pairs and triplets by
// sentence-transformers' column names, corpora, Contrastive Tension's sentences; quoting, line ends, gzip, and errors
// that name the file, the line and the columns.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseCsv } from '../lib/data-files';
import { readCorpus, readSentences, readTrainingData } from '../lib/train-data';
import { tempDir } from './helpers/fixture';

function write(name: string, content: string | Buffer): string {
  const file = path.join(tempDir(), name);
  fs.writeFileSync(file, content);
  return file;
}

async function examples(file: string) {
  const read = await readTrainingData(file);
  if (!('examples' in read)) throw new Error('expected examples');
  return read.examples;
}

test('a CSV file of pairs is read by its header, and a quoted field may hold a comma, a quote and a line break', async (t) => {
  const file = write('pairs.csv', 'query,positive\nwhat is x,"x is a letter, and ""x"" is one\nsecond line"\nwhy,because\n');
  t.deepEqual(await examples(file), [
    { query: 'what is x', positive: 'x is a letter, and "x" is one\nsecond line' },
    { query: 'why', positive: 'because' },
  ]);
});

test("sentence-transformers' anchor/positive/negative_N columns are triplets, empty negative cells skipped, in the header's order", async (t) => {
  const file = write('st.csv', 'anchor,positive,negative_1,negative_2,group\nq1,p1,n1,n2,g\nq2,p2,,n3,\nq3,p3,, ,\n');
  t.deepEqual(await examples(file), [
    { query: 'q1', positive: 'p1', negatives: ['n1', 'n2'], group: 'g' },
    { query: 'q2', positive: 'p2', negatives: ['n3'] },
    { query: 'q3', positive: 'p3' },
  ]);
  const triplet = write('triplets.tsv', 'query\tpositive\tnegative\nq\tp\tn\n');
  t.deepEqual(await examples(triplet), [{ query: 'q', positive: 'p', negatives: ['n'] }]);
});

test("CRLF line ends, a byte-order mark, blank lines and rows of empty cells are fine, and a CRLF in a quoted field is kept (as Python's csv module reads it)", async (t) => {
  const file = write('crlf.csv', '\uFEFFquery,positive\r\nq1,"a\r\nb"\r\n\r\n,\r\nq2,p2');
  t.deepEqual(await examples(file), [
    { query: 'q1', positive: 'a\r\nb' },
    { query: 'q2', positive: 'p2' },
  ]);
});

test('TSV files use tabs, keep a quote inside an unquoted field, and read quoted fields as pandas writes them', async (t) => {
  const file = write('pairs.tsv', 'query\tpositive\nsay "hi"\tok, fine\n"a\tb"\t"he said ""no"""\n');
  t.deepEqual(await examples(file), [
    { query: 'say "hi"', positive: 'ok, fine' },
    { query: 'a\tb', positive: 'he said "no"' },
  ]);
});

test('gzipped CSV and TSV files are decompressed', async (t) => {
  const csv = write('pairs.csv.gz', zlib.gzipSync('query,positive\nq,p\n'));
  t.deepEqual(await examples(csv), [{ query: 'q', positive: 'p' }]);
  const tsv = write('docs.tsv.gz', zlib.gzipSync('id\ttext\n1\tdoc one\n2\tdoc two\n'));
  t.deepEqual(await readCorpus(tsv), ['doc one', 'doc two']);
});

test('a corpus CSV reads its text column, a document a row, and its other columns not', async (t) => {
  const file = write('corpus.csv', '_id,title,text\nd1,T,"first, document"\nd2,T,second\nd3,T,second\n');
  t.deepEqual(await readCorpus(file), ['first, document', 'second']);
  const none = write('nocol.csv', 'id,body\n1,x\n');
  await t.throwsAsync(readCorpus(none), { code: 'INVALID_ARGUMENT', message: /nocol\.csv:1: no "text" column \(columns found: id, body\): a corpus's CSV or TSV file has a header row naming a "text" column/ });
  const empty = write('header-only.csv', 'text\n');
  await t.throwsAsync(readCorpus(empty), { message: /corpus file .*header-only\.csv holds no documents \(it is empty or has only a header row\)/ });
  const blank = write('blank.csv', 'id,text\n1, \n');
  await t.throwsAsync(readCorpus(blank), { message: /blank\.csv:2: "text" must be a non-empty string/ });
});

test('sentences come from a text or sentence column, or from the pair columns', async (t) => {
  t.deepEqual(await readSentences(write('s.csv', 'text\none\ntwo\none\n')), ['one', 'two']);
  t.deepEqual(await readSentences(write('s.tsv', 'sentence\nthree\nfour\n')), ['three', 'four']);
  t.deepEqual(await readSentences(write('p.csv', 'anchor,positive,negative\na,b,c\n')), ['a', 'b', 'c']);
  await t.throwsAsync(readSentences(write('x.csv', 'id,text\n1,a\n')), {
    message: /x\.csv:1: a "text" column must be the file's only one \(columns found: id, text; expected: one column, "text" \(or "sentence"\), or the pairs' query \(or anchor\), positive/,
  });
  await t.throwsAsync(readSentences(write('y.csv', 'query,positive,weight\nq,p,1\n')), { message: /y\.csv:1: unknown column "weight" \(columns found: query, positive, weight; expected: one column, "text"/ });
});

test('readSentences says what a sentence item may be, not only the fields of a pair', async (t) => {
  const jsonl = write('s.jsonl', '"a"\n{"text": "b", "id": 2}\n');
  const error = await t.throwsAsync(readSentences(jsonl), { code: 'INVALID_ARGUMENT' });
  t.regex(error!.message, /s\.jsonl:2: a sentence is a non-empty string or \{ "text": string \} \(with no other field\), or a pair or triplet \{ query, positive, negatives\? \} whose texts all count; this object has "text" and "id"/);
  t.notRegex(error!.message, /unknown field/);
  await t.throwsAsync(readSentences(['a', { sentence: 'b' }]), { message: /^data\[1\]: a sentence is .*; this object has "sentence"$/ });
  await t.throwsAsync(readSentences(['a', 3]), { message: /^data\[1\]: a sentence is .*; this is a number$/ });
  // A pair's own mistakes still name the pairs' fields.
  await t.throwsAsync(readSentences(['a', { query: 'q', positive: 'p', weight: 1 }]), { message: /data\[1\]: unknown field "weight" \(known: query \(or anchor\), positive/ });
});

test('a header with unknown, missing or misnamed columns is refused with the file, the columns found and those expected', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['weight.csv', 'query,positive,weight\nq,p,1\n', /weight\.csv:1: unknown column "weight" \(columns found: query, positive, weight; expected: query \(or anchor\), positive, and optionally negative or negative_1, negative_2, \.\.\. \(a hard negative each\) and group; or a labeled pair: sentence1, sentence2 and label or score; or parallel sentences: english, non_english; or texts of classes: text \(or sentence\) and label\)/],
    ['nopos.csv', 'query,negative\nq,n\n', /nopos\.csv:1: no "positive" column \(columns found: query, negative;/],
    ['noquery.csv', 'positive\np\n', /noquery\.csv:1: no "query" column/],
    ['both.csv', 'query,anchor,positive\nq,a,p\n', /both\.csv:1: give one of the "query", "anchor", "sentence1" and "english" columns/],
    ['negs.csv', 'query,positive,negatives\nq,p,n\n', /negs\.csv:1: a "negatives" column: a cell holds one text, so give each hard negative a column of its own, negative_1/],
    ['noheader.csv', 'what is x,x is a letter\n', /noheader\.csv:1: the first row must be a header naming the columns \(columns found: what is x, x is a letter;/],
    ['index.csv', ',query,positive\n0,q,p\n', /index\.csv:1: column 1 of the header \(".*", "query", "positive"\) has no name \(pandas writes its index so: to_csv\(\.\.\., index=False\) leaves it out\)/],
    ['twice.csv', 'query,positive,positive\nq,p,p\n', /twice\.csv:1: the header names column "positive" twice/],
    ['tabs.csv', 'query\tpositive\nq\tp\n', /tabs\.csv:1: the header's column .* holds a tab: the file looks tab-separated; name it \.tsv/],
    ['commas.tsv', 'query,positive\nq,p\n', /commas\.tsv:1: .*holds a comma: the file looks comma-separated; name it \.csv/],
    ['semi.csv', 'query;positive\nq;p\n', /semi\.csv:1: the header "query;positive" is separated by semicolons/],
  ];
  for (const [name, content, message] of cases) await t.throwsAsync(readTrainingData(write(name, content)), { code: 'INVALID_ARGUMENT', message }, name);
  await t.throwsAsync(readTrainingData(write('empty.csv', '')), { message: /data file .*empty\.csv holds no examples \(it is empty or has only a header row\)/ });
  await t.throwsAsync(readTrainingData(write('empty-cell.csv', 'query,positive\nq,p\nq2,\n')), { message: /empty-cell\.csv:3: "positive" must be a non-empty string/ });
});

test('a row with the wrong number of fields names the line its record starts on, past quoted line breaks and blank lines', async (t) => {
  // Line 2-3 is one record; 4-5 blank; 6 holds a bare '\r' inside a field (no line break); 7 is short.
  const file = write('short.csv', 'query,positive\nq1,"two\nlines"\n\n\nq2,"a\rb"\nonly one field\nq3,p3\n');
  await t.throwsAsync(readTrainingData(file), {
    code: 'INVALID_ARGUMENT',
    message: /short\.csv:7: a record of 1 field where the header has 2: not valid CSV \(a field that holds a comma must be quoted: "a, b"\)/,
  });
  const long = write('long.tsv', 'query\tpositive\nq\tp\textra\n');
  await t.throwsAsync(readTrainingData(long), { message: /long\.tsv:2: a record of 3 fields where the header has 2: not valid TSV \(a field that holds a tab must be quoted/ });
});

test('an unterminated quote names the line of the record it starts in', async (t) => {
  const file = write('open.csv', 'query,positive\nq1,p1\n\nq2,"never closed\nq3,p3\nq4,p4\n');
  await t.throwsAsync(readTrainingData(file), { code: 'INVALID_ARGUMENT', message: /open\.csv:4: a quoted field of the record that starts here is never closed .*not valid CSV; close it with "/ });
});

test('bytes that are not UTF-8 are refused with their line and the iconv command, as in other data files', async (t) => {
  const file = write('latin1.csv', Buffer.concat([Buffer.from('query,positive\nq,p\nq2,caf'), Buffer.from([0xe9]), Buffer.from('\n')]));
  await t.throwsAsync(readTrainingData(file), { code: 'INVALID_ARGUMENT', message: /latin1\.csv:3 is not UTF-8 text \(byte 0xE9 .*\): convert it, e\.g\. iconv -f latin1 -t utf-8 .*latin1\.csv > .*latin1\.utf8\.csv/ });
  const utf16 = write('utf16.tsv', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('text\tx\n', 'utf16le')]));
  await t.throwsAsync(readCorpus(utf16), { message: /utf16\.tsv:1 is UTF-16 text/ });
});

test('parseCsv reads records that span its megabyte chunks, and a file without records gives none', async (t) => {
  const long = 'x'.repeat(3 << 19);
  const rows = Array.from({ length: 3000 }, (_, i) => `q${i},"${i % 500 === 0 ? `${long}\n,${i}` : `p ${i}`}"`);
  const file = write('big.csv', `query,positive\n${rows.join('\n')}\n`);
  const read = await parseCsv(file, () => (fields, where) => ({ where: where.slice(file.length + 1), fields }));
  t.is(read.length, 3000);
  // Records 0, 500, ... hold a line break: each later record starts a line further down.
  t.is(read[1].where, '4');
  t.is(read[2999].where, String(2 + 2999 + 6));
  t.is(read[500].fields[1], `${long}\n,500`);
  t.deepEqual(await parseCsv(write('nothing.csv', '\n\n'), () => () => 1), []);
});

test('reading a large CSV file leaves the event loop free: timers fire meanwhile', async (t) => {
  const rows = Array.from({ length: 60000 }, (_, i) => `what is item ${i},"item ${i} is a thing, ""quoted"", with a passage of text after it"`);
  const file = write('large.csv', `query,positive\n${rows.join('\n')}\n`);
  let fired = 0;
  const timer = setInterval(() => fired++, 1);
  const read = await examples(file);
  clearInterval(timer);
  t.is(read.length, 60000);
  t.is(read[59999].positive, 'item 59999 is a thing, "quoted", with a passage of text after it');
  // About 8 MB, ~130 pieces of 64 Ki characters: the timer fired 84-85 times. Parsed a megabyte chunk at a time
  // (each held the loop ~70 ms) it fired 13 times, and read in one go it would fire once or twice.
  t.true(fired >= 40, `a 1 ms timer fired ${fired} times`);
});
