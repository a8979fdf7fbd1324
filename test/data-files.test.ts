// Data files read a line at a time (lib/files.ts fileLines): every line boundary, ending and encoding case at chunk
// sizes that split lines and characters, gzip, and a file larger than the longest string V8 can hold.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { constants } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import zlib from 'node:zlib';
import { Encoder, Index } from '../lib';
import { fileLines, parseJsonLines, readRunData, saveRunData } from '../lib/files';
import { readCorpus, readTrainingData } from '../lib/train-data';
import { seededRandom } from '../lib/random';
import { FIXTURE, tempDir } from './helpers/fixture';

// What reading the whole text and splitting it gives: the lines, a BOM and the '\r' of '\r\n' dropped, no empty
// line after a final '\n'.
function expectedLines(text: string): string[] {
  const lines = text.replace(/^\uFEFF/, '').split('\n').map((l) => l.replace(/\r$/, ''));
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

// Every line fileLines gives, in order.
async function allLines(file: string, chunkBytes?: number): Promise<string[]> {
  const out: string[] = [];
  for await (const lines of fileLines(file, chunkBytes)) out.push(...lines);
  return out;
}

test('fileLines gives the lines of a text, whatever chunk boundaries split (CRLF, multi-byte characters, BOM, long lines)', async (t) => {
  const random = seededRandom(7).next;
  const pieces = ['a', 'xyz', 'é', '€', '𝄞', '\u00a0', ' ', '\t', '{"q": "ü"}', '\r', '\r\n', '\n', '\n\n', 'x'.repeat(40)];
  const texts = ['', '\n', '\r\n', 'one', 'one\n', 'one\r\ntwo', '\uFEFFbom first\nsecond\n', '\uFEFF', 'a\r', '\n\n\nlast'];
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
      t.deepEqual(await allLines(file, chunk), expectedLines(text), `text ${JSON.stringify(text)}, chunks of ${chunk} bytes`);
      t.deepEqual(await allLines(gz, chunk), expectedLines(text), `gzipped ${JSON.stringify(text)}, chunks of ${chunk} bytes`);
      checked++;
    }
  }
  t.is(checked, texts.length * 7);
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
  const positive = 'x'.repeat(1 << 20);
  const lines = Math.ceil(constants.MAX_STRING_LENGTH / (1 << 20)) + 8;
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < lines; i++) fs.writeSync(fd, `{"query": "question ${i}", "positive": "${positive}"}\n`);
  fs.closeSync(fd);
  const size = fs.statSync(file).size;
  t.true(size > constants.MAX_STRING_LENGTH, `${size} bytes`);
  t.throws(() => fs.readFileSync(file, 'utf8'), { code: 'ERR_STRING_TOO_LONG' }, 'reading it whole fails');
  try {
    const data = await readTrainingData(file);
    if (!('examples' in data)) throw new Error('expected examples');
    t.is(data.examples.length, lines);
    t.is(data.examples[lines - 1].query, `question ${lines - 1}`);
    t.is(data.examples[lines - 1].positive.length, 1 << 20);
    const json = path.join(dir, 'big.json');
    fs.renameSync(file, json);
    await t.throwsAsync(readTrainingData(json), {
      message: /^data file .*big\.json \(0\.5\d GiB\) is too large to read as one JSON document .*write it as JSON Lines/,
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
    const run = spawnSync(process.execPath, ['--max-old-space-size=96', '--import', 'tsx', '-e', script], { encoding: 'utf8' });
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
  const toFile = spawnSync(process.execPath, [cli, 'embed', input, '--model', FIXTURE, '--device', 'cpu', '--output', output], { encoding: 'utf8' });
  t.is(toFile.status, 0, toFile.stderr);
  // Through a pipe too, where writes wait for the reader ('drain').
  const toPipe = spawnSync(process.execPath, [cli, 'embed', input, '--model', FIXTURE, '--device', 'cpu'], { encoding: 'utf8', maxBuffer: 1 << 30 });
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
