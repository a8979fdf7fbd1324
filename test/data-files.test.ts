// Data files read a line at a time (lib/data-files.ts fileLines): every line boundary, ending and encoding case at chunk
// sizes that split lines and characters, gzip, and a file larger than the longest string V8 can hold.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { constants, isUtf8 } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Encoder, Index } from '../lib';
import { readRunData, saveRunData } from '../lib/files';
import { countLines, fileLines, firstBadByte, jsonErrorOffset, parseJsonLines, type LineEnds } from '../lib/data-files';
import { readQrels } from '../lib/beir';
import { readCorpus, readTrainingData } from '../lib/train-data';
import { seededRandom } from '../lib/random';
import { CLI, FIXTURE, tempDir } from './helpers/fixture';

// What reading the whole text and splitting it gives, a BOM dropped and no empty line after a final line end: 'any'
// splits at '\n', '\r\n' and a lone '\r'; 'lf' at '\n', the '\r' before it dropped; 'keep' as 'any', each line keeping
// its line end.
function expectedLines(text: string, ends: LineEnds = 'any'): string[] {
  const body = text.replace(/^\uFEFF/, '');
  if (ends === 'keep') return body.match(/[^\r\n]*(\r\n|\r|\n)|[^\r\n]+$/g) ?? [];
  const lines = ends === 'any' ? body.split(/\r\n|\r|\n/) : body.split('\n').map((l) => l.replace(/\r$/, ''));
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

// Every line fileLines gives, in order.
async function allLines(file: string, chunkBytes?: number, ends?: LineEnds): Promise<string[]> {
  const out: string[] = [];
  for await (const lines of fileLines(file, chunkBytes, { ends })) out.push(...lines);
  return out;
}

test('fileLines gives the lines of a text, whatever chunk boundaries split (CRLF, lone CR, multi-byte characters, BOM, long lines), for each kind of line end', async (t) => {
  const random = seededRandom(7).next;
  const pieces = ['a', 'xyz', 'é', '€', '𝄞', '\u00a0', ' ', '\t', '{"q": "ü"}', '\r', '\r\n', '\n', '\n\n', '\r\r\n', '\r\r', '\n\r', 'x'.repeat(40)];
  const texts = ['', '\n', '\r\n', '\r', 'one', 'one\n', 'one\r\ntwo', 'one\rtwo\r', 'one\r\r\ntwo', '\uFEFFbom first\nsecond\n', '\uFEFF', '\uFEFF\r\n', 'a\r', '\n\n\nlast'];
  for (let k = 0; k < 40; k++) {
    let text = random() < 0.3 ? '\uFEFF' : '';
    const n = 1 + Math.floor(random() * 60);
    for (let i = 0; i < n; i++) text += pieces[Math.floor(random() * pieces.length)];
    texts.push(text);
  }
  const dir = tempDir();
  let checked = 0;
  for (const [k, text] of texts.entries()) {
    const file = path.join(dir, `t${k}.txt`);
    fs.writeFileSync(file, text);
    const gz = `${file}.gz`;
    fs.writeFileSync(gz, zlib.gzipSync(text));
    for (const chunk of [1, 2, 3, 5, 7, 64, 1 << 22]) {
      for (const ends of ['any', 'lf', 'keep'] as const) {
        t.deepEqual(await allLines(file, chunk, ends), expectedLines(text, ends), `text ${JSON.stringify(text)}, chunks of ${chunk} bytes, ${ends}`);
        t.deepEqual(await allLines(gz, chunk, ends), expectedLines(text, ends), `gzipped ${JSON.stringify(text)}, chunks of ${chunk} bytes, ${ends}`);
        checked++;
      }
    }
    // 'keep' loses nothing but the BOM.
    t.is((await allLines(file, 3, 'keep')).join(''), text.replace(/^\uFEFF/, ''));
  }
  t.is(checked, texts.length * 7 * 3);
});

test('fileLines closes the file when its reader stops early, and a corrupt .gz is a named error', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'lines.txt');
  fs.writeFileSync(file, 'a\nb\nc\n');
  // Descriptors open on the file (not all of the process's: the test runner opens sockets and pipes meanwhile).
  const openOnFile = () =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === fs.realpathSync(file);
      } catch {
        return false;
      }
    }).length;
  for (let i = 0; i < 50; i++) {
    for await (const lines of fileLines(file, 1)) if (lines.includes('b')) break;
  }
  t.is(openOnFile(), 0, 'no file descriptor left open');
  // The check can see one: a reader left open holds one.
  const reader = fileLines(file, 1);
  await reader.next();
  t.is(openOnFile(), 1);
  await reader.return(undefined);
  t.is(openOnFile(), 0);
  const gz = path.join(dir, 'corpus.jsonl.gz');
  fs.writeFileSync(gz, 'not gzip at all');
  await t.throwsAsync(allLines(gz), { message: new RegExp(`^${gz.replace(/[.]/g, '\\.')} cannot be decompressed \\(`) });
});

test('parseJsonLines numbers lines as an editor does, with CRLF endings and a BOM', async (t) => {
  const file = path.join(tempDir(), 'pairs.jsonl');
  fs.writeFileSync(file, '\uFEFF{"query": "q1", "positive": "p1"}\r\n\r\n{"query": "q2", "positive": "p2"}\r\n{"query": oops}\r\n');
  await t.throwsAsync(parseJsonLines(file, (v) => v), { message: new RegExp(`:4: not valid JSON`) });
  const two = path.join(tempDir(), 'two.jsonl');
  fs.writeFileSync(two, '\uFEFF{"query": "q1", "positive": "p1"}\r\n\r\n{"query": "q2", "positive": "p2"}');
  t.deepEqual(await readTrainingData(two), { examples: [{ query: 'q1', positive: 'p1' }, { query: 'q2', positive: 'p2' }] });
  const txt = path.join(tempDir(), 'corpus.txt');
  fs.writeFileSync(txt, 'first document\r\n\r\n  second document \r\n');
  t.deepEqual(await readCorpus(txt), ['first document', 'second document']);
});

/** `file`'s non-blank lines, trimmed, as Python reads a text file (open() in text mode: universal newlines). */
function pythonTextLines(file: string): string[] {
  const script = "import json, sys\nprint(json.dumps([l.strip() for l in open(sys.argv[1], encoding='utf-8-sig') if l.strip()]))";
  const run = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8', timeout: 240_000 });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(run.stdout);
}

test("a .txt file's lines and a qrels TSV's end where Python's open() ends them, a lone '\\r' too; a .jsonl's at '\\n' only", async (t) => {
  const dir = tempDir();
  // Old Mac line ends, '\r\r\n' (a '\r\n' written through Windows' text mode), '\n\r' and a '\r' mid-line.
  const texts = ['first\rsecond\r', 'first\r\r\nsecond\r\r\n', 'first\n\rsecond', 'first text\rsecond text\nthird'];
  for (const [k, text] of texts.entries()) {
    const file = path.join(dir, `corpus${k}.txt`);
    fs.writeFileSync(file, text);
    const python = pythonTextLines(file);
    t.true(python.length >= 2, JSON.stringify(text));
    t.deepEqual(await readCorpus(file), python, JSON.stringify(text));
  }
  // A qrels file (BEIR's Python reads it with csv.reader on open(), without newline='') of old Mac line ends.
  const qrels = path.join(dir, 'qrels.tsv');
  fs.writeFileSync(qrels, 'query-id\tcorpus-id\tscore\rq1\td1\t1\rq1\td2\t0\r');
  t.deepEqual(await readQrels(qrels), new Map([['q1', new Map([['d1', 1], ['d2', 0]])]]));
  // JSON Lines end at '\n' (jsonlines.org, pandas' read_json(lines=True)): a '\r' inside a line is JSON whitespace,
  // '\r\r\n' a line's end, and lines are numbered as sed and an editor in Unix mode number them.
  const jsonl = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(jsonl, '{"query": "q1",\r"positive": "p1"}\r\r\n{"query": "q2", "positive": "p2"}\r\r\n{"query": oops}\r\n');
  await t.throwsAsync(parseJsonLines(jsonl, (v) => v), { message: new RegExp(`pairs\\.jsonl:3: not valid JSON`) });
  fs.writeFileSync(jsonl, '{"query": "q1",\r"positive": "p1"}\r\r\n{"query": "q2", "positive": "p2"}\r\r\n');
  t.deepEqual(await readTrainingData(jsonl), { examples: [{ query: 'q1', positive: 'p1' }, { query: 'q2', positive: 'p2' }] });
  t.is(await countLines(jsonl), 2);
});

test('reading a data file leaves the event loop free: timers fire while a large file is read', async (t) => {
  const file = path.join(tempDir(), 'pairs.jsonl');
  const line = (i: number) => `{"query": "question ${i}", "positive": "${'a passage of text '.repeat(20)}${i}"}\n`;
  fs.writeFileSync(file, Array.from({ length: 120_000 }, (_, i) => line(i)).join(''));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const started = performance.now();
  const data = await readTrainingData(file);
  const elapsed = performance.now() - started;
  clearInterval(timer);
  t.is('examples' in data ? data.examples.length : 0, 120_000);
  t.log(`read ${(fs.statSync(file).size / 2 ** 20).toFixed(0)} MiB in ${elapsed.toFixed(0)} ms; a 5 ms timer fired ${ticks} times meanwhile`);
  // A synchronous read gives the timer no turn at all until it is over.
  t.true(ticks >= 5, `the timer fired ${ticks} times during a ${elapsed.toFixed(0)} ms read`);
});

test('a JSONL file larger than the longest string V8 can hold is read; as one .json document it is a named error', async (t) => {
  // 1 MiB positives, so that the test spends its time reading, not parsing many small objects.
  const dir = tempDir();
  const file = path.join(dir, 'big.jsonl');
  // The positive is written as one Buffer, not encoded again for each line (half a GiB of UTF-8 encoding: seconds).
  const positive = Buffer.alloc(1 << 20, 'x');
  const lines = Math.ceil(constants.MAX_STRING_LENGTH / (1 << 20)) + 8;
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < lines; i++) fs.writevSync(fd, [Buffer.from(`{"query": "question ${i}", "positive": "`), positive, Buffer.from('"}\n')]);
  fs.closeSync(fd);
  const size = fs.statSync(file).size;
  t.true(size > constants.MAX_STRING_LENGTH, `${size} bytes`);
  // Its bytes read whole, then made one string: readFileSync(file, 'utf8') fails alike (ERR_STRING_TOO_LONG), but
  // only after ~5 s of CPU on Node 20 (its UTF-8 fast path decodes before it gives up), against ~1 s this way.
  t.throws(() => fs.readFileSync(file).toString('utf8'), { code: 'ERR_STRING_TOO_LONG' }, 'reading it whole fails');
  try {
    const data = await readTrainingData(file);
    if (!('examples' in data)) throw new Error('expected examples');
    t.is(data.examples.length, lines);
    t.is(data.examples[lines - 1].query, `question ${lines - 1}`);
    t.is(data.examples[lines - 1].positive, positive.toString('latin1'));
    const json = path.join(dir, 'big.json');
    fs.renameSync(file, json);
    await t.throwsAsync(readTrainingData(json), {
      message: /^data file .*big\.json \(0\.5\d GiB\) is too large to read as one JSON document .*write it as JSON Lines/,
    });
    // Gzipped, the size named is what it decompresses to, not the compressed file's (a few MiB: "0.00 GiB").
    const gz = path.join(dir, 'big.json.gz');
    await pipeline(fs.createReadStream(json), zlib.createGzip({ level: 1 }), fs.createWriteStream(gz));
    fs.rmSync(json);
    await t.throwsAsync(readTrainingData(gz), {
      message: /^data file .*big\.json\.gz \(0\.5\d GiB decompressed\) is too large to read as one JSON document /,
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an index whose documents.jsonl is larger than the longest string V8 can hold saves and loads', async (t) => {
  // Short texts (embedding is not what is tested) with 1 MiB of metadata each.
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const dir = tempDir();
  try {
    const count = Math.ceil(constants.MAX_STRING_LENGTH / (1 << 20)) + 4;
    const note = 'm'.repeat(1 << 20);
    const docs = Array.from({ length: count }, (_, i) => ({ id: `doc-${i}`, text: `document number ${i}`, metadata: { i, note } }));
    const index = await Index.build(enc, docs);
    await index.save(path.join(dir, 'big.index'));
    const size = fs.statSync(path.join(dir, 'big.index', 'docs.jsonl')).size;
    t.true(size > constants.MAX_STRING_LENGTH, `${size} bytes`);
    const again = await Index.load(path.join(dir, 'big.index'), enc);
    const [last] = again.get([`doc-${count - 1}`]);
    t.is(last?.text, `document number ${count - 1}`);
    t.deepEqual(last?.metadata, { i: count - 1, note });
    const hits = await again.search([`document number ${count - 1}`], { k: 1 });
    t.is(hits[0].length, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    enc.dispose();
  }
});

test("a data file too large for Node's heap is an OUT_OF_MEMORY error naming the fix, not V8's fatal out-of-memory", (t) => {
  // A 96 MiB heap and a 400 MiB file of pairs (what readTrainingData keeps of a line is about its size).
  const dir = tempDir();
  const file = path.join(dir, 'pairs.jsonl');
  const line = `{"query": "a question", "positive": "${'p'.repeat(4000)}"}\n`;
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < 100_000; i++) fs.writeSync(fd, line);
  fs.closeSync(fd);
  try {
    const script = `
      const { readTrainingData } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib', 'train-data.ts'))});
      readTrainingData(${JSON.stringify(file)}).then(
        () => console.log(JSON.stringify({ read: true })),
        (e) => console.log(JSON.stringify({ code: e.code, message: e.message })),
      );`;
    const run = spawnSync(process.execPath, ['--max-old-space-size=96', '--import', 'tsx', '-e', script], { encoding: 'utf8', timeout: 240_000 });
    t.is(run.status, 0, `exit ${run.status} ${run.signal ?? ''}: ${run.stderr.slice(-500)}`);
    const out = JSON.parse(run.stdout.trim().split('\n').pop()!);
    t.is(out.code, 'OUT_OF_MEMORY');
    t.regex(out.message, /pairs\.jsonl:\d+: Node's heap is nearly full \(\d+ of \d+ MiB\) with this file's data; give Node a larger heap \(NODE_OPTIONS=--max-old-space-size=1024, in MiB\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a run's data in a checkpoint: written once, hard-linked by later checkpoints, read back with its counts checked", async (t) => {
  const dir = tempDir();
  const first = path.join(dir, 'first');
  const second = path.join(dir, 'second');
  fs.mkdirSync(first);
  fs.mkdirSync(second);
  const lists = { train: [{ query: 'q\n1', positive: 'p' }, { query: 'q2', positive: 'p2', negatives: ['n'] }], val: [], corpus: ['a', 'b\u2028c'] };
  const counts = await saveRunData(first, lists, undefined);
  t.deepEqual(counts, { train: 2, val: 0, corpus: 2 });
  t.deepEqual(await readRunData(first, counts), lists);
  t.deepEqual(await saveRunData(second, lists, first), counts);
  for (const name of Object.keys(lists)) t.is(fs.statSync(path.join(second, `${name}.jsonl`)).ino, fs.statSync(path.join(first, `${name}.jsonl`)).ino, `${name}.jsonl is a hard link`);
  t.deepEqual(await readRunData(second, counts), lists);
  // A `from` without the files (a checkpoint folder changed by hand): written again.
  const third = path.join(dir, 'third');
  fs.mkdirSync(third);
  t.deepEqual(await saveRunData(third, lists, path.join(dir, 'nowhere')), counts);
  t.deepEqual(await readRunData(third, counts), lists);
  await t.throwsAsync(readRunData(first, { ...counts, train: 3 }), { code: 'MODEL_FILES', message: /train\.jsonl has 2 rows, state\.json says 3; delete the checkpoint to start over/ });
  fs.rmSync(path.join(first, 'val.jsonl'));
  await t.throwsAsync(readRunData(first, counts), { code: 'MODEL_FILES', message: /val\.jsonl is missing/ });
  fs.writeFileSync(path.join(first, 'corpus.jsonl'), '"a"\n"b\n');
  await t.throwsAsync(readRunData(first, { corpus: 2 }), { code: 'MODEL_FILES', message: /corpus\.jsonl is damaged \(.*corpus\.jsonl:2: not valid JSON/ });
});

test('coltrast embed writes every vector of an input larger than one embedding part, in order, each as embed() gives it', async (t) => {
  // 16,384 texts are embedded and written at a time (cli.ts EMBED_PART): 20,000 texts cross one boundary.
  const dir = tempDir();
  const input = path.join(dir, 'texts.txt');
  const texts = Array.from({ length: 20000 }, (_, i) => `text number ${i} about ${['search', 'models', 'data'][i % 3]}`);
  fs.writeFileSync(input, texts.join('\n') + '\n');
  const output = path.join(dir, 'vectors.jsonl');
  const cli = path.resolve(__dirname, '..', 'dist', 'cli.js');
  const toFile = spawnSync(process.execPath, [cli, 'embed', input, '--model', FIXTURE, '--device', 'cpu', '--output', output], { encoding: 'utf8', timeout: 240_000 });
  t.is(toFile.status, 0, toFile.stderr);
  // Through a pipe too, where writes wait for the reader ('drain').
  const toPipe = spawnSync(process.execPath, [cli, 'embed', input, '--model', FIXTURE, '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000, maxBuffer: 1 << 30 });
  t.is(toPipe.status, 0, toPipe.stderr);
  t.is(toPipe.stdout, fs.readFileSync(output, 'utf8'));
  const rows = fs.readFileSync(output, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { index: number; embedding: number[] });
  t.is(rows.length, texts.length);
  t.true(rows.every((r, i) => r.index === i), 'indices run 0..n-1 in order');
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const picked = [0, 16383, 16384, 16385, 19999];
  const expected = await enc.embed(picked.map((i) => texts[i]));
  picked.forEach((i, k) => {
    const want = Array.from(expected.data.subarray(k * enc.dimension, (k + 1) * enc.dimension));
    const diff = Math.max(...want.map((v, j) => Math.abs(v - rows[i].embedding[j])));
    t.true(diff < 1e-5, `text ${i}: differs from embed() by ${diff}`);
  });
  enc.dispose();
});

// Bytes that are not UTF-8 text: Latin-1 é, Windows-1252's ’, NUL, a lead byte without its continuation, a UTF-16
// surrogate written as UTF-8, an overlong '/', a byte past U+10FFFF, a cut-off €, a byte UTF-8 never uses.
const NOT_UTF8 = [[0xe9], [0x92], [0x00], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf5, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xff]];
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('bytes that are not UTF-8 text are an error naming the line, the byte and the fix, wherever chunks split the file', async (t) => {
  const random = seededRandom(11).next;
  const pieces = ['a', 'xyz', 'é', '€', '𝄞', '東京', ' ', '{"q": "ü"}', '\uFFFD'];
  const dir = tempDir();
  let checked = 0;
  for (let round = 0; round < 36; round++) {
    const lines = Array.from({ length: 1 + Math.floor(random() * 6) }, () => {
      let s = '';
      for (let m = Math.floor(random() * 8); m > 0; m--) s += pieces[Math.floor(random() * pieces.length)];
      return s;
    });
    // The bad bytes go between two characters of line `at`.
    const at = Math.floor(random() * lines.length);
    const bad = NOT_UTF8[round % NOT_UTF8.length];
    const chars = [...lines[at]];
    const c = Math.floor(random() * (chars.length + 1));
    const before = Buffer.from(chars.slice(0, c).join(''));
    const eol = random() < 0.3 ? '\r\n' : '\n';
    const bytes = Buffer.concat([
      Buffer.from(`${random() < 0.3 ? '\uFEFF' : ''}${lines.slice(0, at).map((l) => l + eol).join('')}`),
      before,
      Buffer.from(bad),
      Buffer.from(`${chars.slice(c).join('')}${lines.slice(at + 1).map((l) => eol + l).join('')}${random() < 0.5 ? eol : ''}`),
    ]);
    const file = path.join(dir, `t${round}.txt`);
    fs.writeFileSync(file, bytes);
    fs.writeFileSync(`${file}.gz`, zlib.gzipSync(bytes));
    const what = bad[0] === 0 ? 'it holds NUL bytes, as UTF-16 text does' : `byte 0x${bad[0].toString(16).toUpperCase()} at byte ${before.length + 1} of the line`;
    const message = (f: string) => new RegExp(`^${escape(f)}:${at + 1} is not UTF-8 text \\(${escape(what)}.*\\): convert it, e\\.g\\. `);
    for (const chunk of [1, 2, 3, 5, 7, 64, 1 << 20]) {
      await t.throwsAsync(allLines(file, chunk), { code: 'INVALID_ARGUMENT', message: message(file) }, `${JSON.stringify(bytes.toString('latin1'))}, chunks of ${chunk}`);
      await t.throwsAsync(allLines(`${file}.gz`, chunk), { code: 'INVALID_ARGUMENT', message: message(`${file}.gz`) });
      checked++;
    }
    // Read whole (a .json document), the same line and byte.
    const json = path.join(dir, `t${round}.json`);
    fs.writeFileSync(json, bytes);
    await t.throwsAsync(readTrainingData(json), { code: 'INVALID_ARGUMENT', message: message(json) });
  }
  t.is(checked, 36 * 7);
});

test('Latin-1, Windows-1252 and UTF-16 data files are refused with the iconv command that converts them; UTF-8 with a BOM is read', async (t) => {
  const dir = tempDir();
  const write = (name: string, bytes: Buffer) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    return file;
  };
  const latin = write('latin.jsonl', Buffer.from('{"id": "a", "text": "x"}\n{"id":"a","text":"caf\u00e9 au lait"}\n', 'latin1'));
  await t.throwsAsync(parseJsonLines(latin, (v) => v), {
    message: `${latin}:2 is not UTF-8 text (byte 0xE9 at byte 22 of the line: Latin-1? Windows-1252? UTF-16?): convert it, e.g. iconv -f latin1 -t utf-8 ${latin} > ${path.join(dir, 'latin.utf8.jsonl')}`,
  });
  // Windows-1252's curly quote (0x92), in a .txt: the conversion from windows-1252.
  const quote = write('notes.txt', Buffer.from([...Buffer.from('it'), 0x92, ...Buffer.from('s fine\n')]));
  await t.throwsAsync(readCorpus(quote), { message: new RegExp(`notes\\.txt:1 is not UTF-8 text .*iconv -f windows-1252 -t utf-8 ${escape(quote)} > ${escape(path.join(dir, 'notes.utf8.txt'))}$`) });
  const text = '{"id": "a", "text": "caf\u00e9"}\n{"id": "b", "text": "th\u00e9"}\n';
  const le = Buffer.from(text, 'utf16le');
  const be = Buffer.from(le).swap16();
  for (const [name, bytes] of [['le.jsonl', Buffer.concat([Buffer.from([0xff, 0xfe]), le])], ['be.jsonl', Buffer.concat([Buffer.from([0xfe, 0xff]), be])], ['le.json', Buffer.concat([Buffer.from([0xff, 0xfe]), le])]] as const) {
    const file = write(name, bytes);
    const message = `${file}:1 is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8: convert it, e.g. iconv -f utf-16 -t utf-8 ${file} > ${file.replace(/\.(jsonl?)$/, '.utf8.$1')}`;
    await t.throwsAsync(name.endsWith('.jsonl') ? parseJsonLines(file, (v) => v) : readTrainingData(file), { message });
  }
  // UTF-16 without a byte-order mark: NUL bytes in every other byte (never printed in the message).
  const bare = write('bare.txt', Buffer.from('first line\nsecond line\n', 'utf16le'));
  const error = await t.throwsAsync(readCorpus(bare), { message: new RegExp(`^${escape(bare)}:1 is not UTF-8 text \\(it holds NUL bytes, as UTF-16 text does\\): convert it, e\\.g\\. iconv -f utf-16le -t utf-8 `) });
  t.false(error!.message.includes('\0'));
  // Gzipped: the command decompresses, converts and compresses again; a path with a space is quoted.
  const gz = write('my docs.jsonl.gz', zlib.gzipSync(Buffer.from('{"id":"a","text":"na\u00efve"}\n', 'latin1')));
  await t.throwsAsync(parseJsonLines(gz, (v) => v), { message: new RegExp(`e\\.g\\. gunzip -c '${escape(gz)}' \\| iconv -f latin1 -t utf-8 \\| gzip > '${escape(path.join(dir, 'my docs.utf8.jsonl.gz'))}'$`) });
  // UTF-8 (U+FFFD itself included) is read, with or without a BOM, in a .json document too (a BOM there failed to parse).
  const good = write('good.json', Buffer.from('\uFEFF[{"query": "caf\u00e9 \uFFFD", "positive": "\u6771\u4eac \u{1F680}"}]\r\n'));
  t.deepEqual(await readTrainingData(good), { examples: [{ query: 'caf\u00e9 \uFFFD', positive: '\u6771\u4eac \u{1F680}' }] });
});

test('firstBadByte finds where bytes stop being UTF-8 text, as Buffer isUtf8 (and a NUL) judges them', (t) => {
  const random = seededRandom(5).next;
  for (let k = 0; k < 50_000; k++) {
    const bytes = Buffer.from(Array.from({ length: Math.floor(random() * 8) }, () => (random() < 0.3 ? Math.floor(random() * 128) : 0x80 + Math.floor(random() * 128))));
    const at = firstBadByte(bytes);
    const text = isUtf8(bytes) && !bytes.includes(0);
    if ((at === -1) !== text) t.fail(`${bytes.toString('hex')}: firstBadByte ${at}, isUtf8 ${isUtf8(bytes)}`);
    // What comes before is UTF-8 text, and what the byte at `at` starts is not.
    if (at >= 0 && !isUtf8(bytes.subarray(0, at))) t.fail(`${bytes.toString('hex')}: the bytes before ${at} are not UTF-8`);
  }
  t.is(firstBadByte(Buffer.from('plain é € 𝄞')), -1);
  t.is(firstBadByte(Buffer.from([0x61, 0xe2, 0x82])), 1, 'a character cut off at the end');
  t.is(firstBadByte(Buffer.from([0x61, 0x00])), 1);
});

test('a syntax error in a .json data file names its line and column', async (t) => {
  const dir = tempDir();
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const trailing = write('pairs.json', '[\n {"query": "a",\n  "positive": "b",\n }\n]\n');
  await t.throwsAsync(readTrainingData(trailing), { message: `${trailing}:4:2: not valid JSON (Expected double-quoted property name in JSON at position 38); JSONL files must end in .jsonl` });
  // V8 gives no position for an unexpected token: the line and column are found all the same; its quote of the text
  // stays on one line.
  const token = write('token.json', '[\n  {"query": "a", "positive": "b"},\n  {"query": oops}\n]');
  const error = await t.throwsAsync(readTrainingData(token), { message: new RegExp(`^${escape(token)}:3:13: not valid JSON \\(Unexpected token 'o'`) });
  t.false(error!.message.includes('\n'));
  // Cut off: the end; after a BOM, columns count from the first character.
  await t.throwsAsync(readTrainingData(write('cut.json', '[\n{"query": "a"')), { message: /cut\.json:2:14: not valid JSON/ });
  await t.throwsAsync(readTrainingData(write('bom.json', '\uFEFF{"projects": [}')), { message: /bom\.json:1:15: not valid JSON/ });
  await t.throwsAsync(readCorpus(write('corpus.json', '["one",\n "two"\n "three"]')), { message: /corpus\.json:3:2: not valid JSON .*; give a \.txt, \.jsonl or \.json array$/ });
  // The offset agrees with JSON.parse: where it fails (and at the position V8 gives, where it gives one), and never
  // for valid JSON.
  const random = seededRandom(3).next;
  const bases = ['{"a": [1, 2.5e-3, -0, true, false, null, "x\\u00e9\\n\\"\\\\"], "b": {}}', '[]', '[{"q":"é","p":"𝄞"}]', '"s"', '-12.5E+7', ' {"k" : [ [ ] , { } ] } '];
  const alphabet = ' \n\t{}[],:"\\-+.0123456789eEtrufalsn\u0001xé';
  for (let k = 0; k < 20_000; k++) {
    let text = bases[Math.floor(random() * bases.length)];
    for (let m = 1 + Math.floor(random() * 3); m > 0; m--) {
      const p = Math.floor(random() * (text.length + 1));
      const ch = alphabet[Math.floor(random() * alphabet.length)];
      const op = random();
      text = op < 0.33 ? text.slice(0, p) + ch + text.slice(p) : op < 0.66 ? text.slice(0, p) + text.slice(p + 1) : text.slice(0, p) + ch + text.slice(p + 1);
    }
    let position: number | undefined;
    let valid = true;
    try {
      JSON.parse(text);
    } catch (e) {
      valid = false;
      const m = /at position (\d+)/.exec((e as Error).message);
      if (m) position = Number(m[1]);
    }
    const offset = jsonErrorOffset(text);
    if ((offset === -1) !== valid || (position !== undefined && position !== offset)) t.fail(`${JSON.stringify(text)}: offset ${offset}, JSON.parse ${valid ? 'parses it' : `fails at ${position}`}`);
  }
  t.pass();
});

test('a data file holding JSON null is the ColTrast-format error, not a TypeError, in every command that reads --data', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'null.json');
  fs.writeFileSync(file, 'null\n');
  for (const value of ['null', '5', '"str"', 'true']) {
    fs.writeFileSync(file, value);
    await t.throwsAsync(readTrainingData(file), { code: 'INVALID_ARGUMENT', message: `${file}: expected {"projects": [...]} (the ColTrast format) or a JSONL file of pairs` });
  }
  fs.writeFileSync(file, 'null\n');
  const cli = CLI;
  const out = (name: string) => path.join(dir, name);
  const commands = [
    ['train', '--data', file, '--output', out('model'), '--model', FIXTURE],
    ['mine', '--data', file, '--output', out('mined.jsonl'), '--model', FIXTURE],
    ['index', '--data', file, '--output', out('index'), '--model', FIXTURE],
    ['eval', '--data', file],
    ['rag-train', '--data', file, '--output', out('rag'), '--generator', FIXTURE],
  ];
  const runs = await Promise.all(commands.map((args) => new Promise<{ status: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [cli, ...args, '--device', 'cpu'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stderr }));
  })));
  runs.forEach((r, i) => {
    t.is(r.status, 2, `${commands[i][0]}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^coltrast: ${escape(file)}: expected (\\{"projects"|a JSON array of documents)`), commands[i][0]);
    t.notRegex(r.stderr, /TypeError|\n\s+at /, `${commands[i][0]}: no stack trace`);
  });
});

test('gzipped training data and corpora are read as their plain files are (.jsonl.gz a line at a time, .json.gz and .txt.gz too)', async (t) => {
  const dir = tempDir();
  const pairs = [{ query: 'q1', positive: 'p1' }, { query: 'q2', positive: 'caf\u00e9' }];
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, zlib.gzipSync(text));
    return file;
  };
  t.deepEqual(await readTrainingData(write('pairs.jsonl.gz', pairs.map((p) => JSON.stringify(p)).join('\n'))), { examples: pairs });
  t.deepEqual(await readTrainingData(write('pairs.json.gz', JSON.stringify(pairs, null, 1))), { examples: pairs });
  t.deepEqual(await readCorpus(write('corpus.txt.gz', 'first\n\nsecond\n')), ['first', 'second']);
  await t.throwsAsync(readTrainingData(write('bad.json.gz', '[\n{"query": }]')), { message: /bad\.json\.gz:2:11: not valid JSON/ });
});

test('an array of a million training pairs is checked in turns of the event loop, and a hole in it is named', async (t) => {
  const pairs = Array.from({ length: 1_000_000 }, (_, i) => ({ query: `q${i}`, positive: `p${i}` }));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    const data = await readTrainingData(pairs);
    t.is('examples' in data ? data.examples.length : 0, pairs.length);
  } finally {
    clearInterval(timer);
  }
  t.true(ticks >= 2, `the timer ran ${ticks} times while the pairs were checked`);
  const holey = [{ query: 'q', positive: 'p' }, , { query: 'q2', positive: 'p2' }];
  await t.throwsAsync(readTrainingData(holey), { message: /^data\[1\]/ });
});
