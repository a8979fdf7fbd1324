// The command line when things go wrong around the work: outputs that cannot be written (a full disk, a path
// through a file, a folder that takes no files) refused first or reported in a line with exit 2, never a stack
// trace; outputs written atomically (an error, Ctrl-C or SIGTERM leaves the old file and no temporary file); a
// closed stdout ends a command quietly; empty input refused; serve's listen errors and a failed final save; control
// characters of documents escaped; train's interruption says where its checkpoint is. Runs the built CLI,
// dist/cli.js (npm run build:ts first).
import test from 'ava';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { Encoder, Index } from '../lib';
import { printable } from '../lib/cli';
import { rawSafetensors } from './helpers/safetensors';
import { FIXTURE, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';
import { until } from './helpers/wait';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const GENERATOR = path.join(__dirname, 'fixtures', 'tiny-causal-lms', 'llama');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };

function cli(args: string[], cwd = ROOT): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: ENV, timeout: 120_000 });
}

function start(args: string[], stdout: 'pipe' | 'ignore' = 'ignore'): ChildProcess & { stderrText: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { env: ENV, stdio: ['ignore', stdout, 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return Object.assign(child, { stderrText: () => stderr });
}

/** until()'s options for a wait on `child`: a minute, and its stderr so far in the message of a time-out. */
function watching(child: { stderrText: () => string }) {
  return { ms: 60_000, every: 10, detail: () => `its stderr so far:\n${child.stderrText()}` };
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** A user error as the CLI reports one: exit 2, one `coltrast: ...` line matching `message`, no stack trace. */
function userError(t: import('ava').ExecutionContext, run: { status: number | null; stderr: string }, message: RegExp, label = ''): void {
  t.is(run.status, 2, `${label}\n${run.stderr}`);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('coltrast: '));
  t.is(lines.length, 1, `${label}\n${run.stderr}`);
  t.regex(lines[0] ?? '', message, label);
  t.notRegex(run.stderr, /\n\s+at |node:internal|Error: E[A-Z]+/, `${label}: no stack trace`);
}

/** An index folder as Index.save writes one, of `rows` documents with `dim`-wide vectors, written directly (no model). */
function syntheticIndex(rows: number, dim = 8): string {
  const dir = path.join(tempDir(), 'idx');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ format: 'coltrast-index', version: 1, model: { dimension: dim, source: 'synthetic', fingerprint: 'x' }, storage: 'float32', documents: rows }));
  const docs: string[] = [];
  for (let i = 0; i < rows; i++) docs.push(JSON.stringify({ id: `d${i}`, text: `document number ${i}` }));
  fs.writeFileSync(path.join(dir, 'docs.jsonl'), `${docs.join('\n')}\n`);
  const data = Buffer.alloc(rows * dim * 4);
  for (let i = 0; i < rows * dim; i++) data.writeFloatLE(((i * 7919) % 1000) / 1000 - 0.5, i * 4);
  fs.writeFileSync(path.join(dir, 'vectors.safetensors'), rawSafetensors({ vectors: { dtype: 'F32', shape: [rows, dim], data_offsets: [0, data.length] } }, data));
  return dir;
}

/**
 * A link to `device` (/dev/full, /dev/stdout) in a temporary folder, to give as an output: a device is written in
 * place, and code that renamed a temporary file over it instead (run as root) would replace the link, not the device.
 */
function deviceLink(device: string): string {
  const link = path.join(tempDir(), 'device');
  fs.symlinkSync(device, link);
  return link;
}

/** A file of `n` short texts, one a line. */
function textsFile(n: number): string {
  const file = path.join(tempDir(), 'texts.txt');
  fs.writeFileSync(file, Array.from({ length: n }, (_, i) => `text number ${i} with a few words`).join('\n') + '\n');
  return file;
}

/** A training data file of `n` (query, positive) pairs. */
function pairsFile(n: number): string {
  const file = path.join(tempDir(), 'pairs.jsonl');
  fs.writeFileSync(file, wordDataset(n).map((p) => JSON.stringify(p)).join('\n') + '\n');
  return file;
}

test('an output path through a file, or in a folder that takes no files, is refused before any model loads (every writing command)', (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'afile'), 'x');
  const texts = textsFile(3);
  const pairs = pairsFile(8);
  const index = syntheticIndex(3);
  // A model that does not exist: the output's check must come first, or the error would be about the model.
  const model = path.join(dir, 'no-such-model');
  const commands: [string, string[]][] = [
    ['train', ['train', '--data', pairs, '--model', model, '--threads', '1']],
    ['index', ['index', '--data', pairs, '--model', model, '--threads', '1']],
    ['mine', ['mine', '--data', pairs, '--model', model, '--threads', '1']],
    ['export', ['export', '--index', index]],
    ['embed', ['embed', texts, '--model', model, '--threads', '1']],
    ['generate-queries', ['generate-queries', '--corpus', texts, '--generator', model, '--threads', '1']],
    ['rag-train', ['rag-train', '--data', pairs, '--generator', model, '--retriever', model, '--threads', '1']],
  ];
  for (const [name, args] of commands) {
    userError(t, cli([...args, '--output', 'afile/sub'], dir), new RegExp(`^coltrast: --output: cannot write afile/sub: ${dir}/afile is a file, not a folder`), name);
    if (fs.existsSync('/proc/self')) userError(t, cli([...args, '--output', '/proc/x.out'], dir), /^coltrast: --output: cannot write \/proc\/x.out: \/proc takes no new files/, `${name} /proc`);
  }
  t.deepEqual(fs.readdirSync(dir), ['afile'], 'nothing written');
});

test('a full disk is a line and exit 2, not a stack trace: embed and export to /dev/full', (t) => {
  if (!fs.existsSync('/dev/full')) return t.pass('no /dev/full here');
  const texts = textsFile(3);
  for (const [name, args] of [
    ['embed', ['embed', texts, '--model', FIXTURE, '--threads', '1']],
    ['export', ['export', '--index', syntheticIndex(50)]],
  ] as const) {
    const full = deviceLink('/dev/full');
    userError(t, cli([...args, '--output', full]), new RegExp(`^coltrast: cannot write ${full}: no space left on the device \\(disk full\\?\\)`), name);
    t.true(fs.lstatSync(full).isSymbolicLink(), `${name}: a device is written in place, never renamed over`);
    t.deepEqual(fs.readdirSync(path.dirname(full)), ['device'], `${name}: no temporary file left`);
  }
});

test('index on a full disk (a tiny tmpfs, where one can be mounted): a line naming the output folder, exit 2, nothing left', (t) => {
  const dir = tempDir();
  const data = path.join(tempDir(), 'docs.jsonl');
  fs.writeFileSync(data, Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `d${i}`, text: `document ${i} about topic ${i % 5}` })).join('\n'));
  if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', dir]).status !== 0) return t.pass('no tmpfs can be mounted here');
  try {
    const run = cli(['index', '--data', data, '--model', FIXTURE, '--threads', '1', '--output', path.join(dir, 'idx')]);
    userError(t, run, new RegExp(`^coltrast: cannot write ${dir}/idx: no space left on the device \\(disk full\\?\\)`));
    t.deepEqual(fs.readdirSync(dir), []);
  } finally {
    spawnSync('umount', [dir]);
  }
});

test('embed --output makes missing folders, as mine and export do', (t) => {
  const dir = tempDir();
  const run = cli(['embed', textsFile(2), '--model', FIXTURE, '--threads', '1', '--output', 'nodir/x/o.jsonl'], dir);
  t.is(run.status, 0, run.stderr);
  t.is(fs.readFileSync(path.join(dir, 'nodir', 'x', 'o.jsonl'), 'utf8').trim().split('\n').length, 2);
});

test('embed --output is atomic: an error leaves the old file whole and no temporary file', (t) => {
  // A tokenizer that gives a token id past the model's vocabulary: embed fails after its output is open.
  const model = fixtureCopy((dir) => {
    const file = path.join(dir, 'tokenizer.json');
    const tokenizer = JSON.parse(fs.readFileSync(file, 'utf8'));
    tokenizer.model.vocab.hello = 99999;
    fs.writeFileSync(file, JSON.stringify(tokenizer));
  });
  const dir = tempDir();
  const output = path.join(dir, 'o.jsonl');
  fs.writeFileSync(output, 'OLD\n');
  const input = path.join(dir, 'in.txt');
  fs.writeFileSync(input, 'a text\nhello world\n');
  userError(t, cli(['embed', input, '--model', model, '--threads', '1', '--output', output]), /outside the model's vocabulary/);
  t.is(fs.readFileSync(output, 'utf8'), 'OLD\n');
  t.deepEqual(fs.readdirSync(dir).sort(), ['in.txt', 'o.jsonl']);
});

// Serial: the other tests of this file run their commands with spawnSync, which holds this process's event loop
// until they end; a poll held past a child's whole run never sees its temporary file (seen: embed ended, exit 0, before
// the first look; before the test checked for that, the wait timed out, twice under load and once in CI).
test.serial('embed --output and export interrupted by SIGINT or SIGTERM: the old file whole, no temporary file, ended by the signal', async (t) => {
  const texts = textsFile(40000);
  const index = syntheticIndex(300000);
  const runs: [string, NodeJS.Signals, (output: string) => string[]][] = [
    ['embed', 'SIGINT', (output) => ['embed', texts, '--model', FIXTURE, '--threads', '1', '--output', output]],
    ['export', 'SIGINT', (output) => ['export', '--index', index, '--output', output]],
    ['export', 'SIGTERM', (output) => ['export', '--index', index, '--output', output]],
  ];
  for (const [name, signal, args] of runs) {
    const dir = tempDir();
    const output = path.join(dir, 'out');
    fs.writeFileSync(output, 'OLD\n');
    const child = start(args(output));
    const done = exited(child);
    // A child that ends before its temporary file is seen (an error, or done already) fails here with what it said,
    // not after the minute of waiting.
    await until(`${name}'s temporary file`, () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} ended (${child.exitCode ?? child.signalCode}) before its temporary file was seen:\n${child.stderrText()}`);
      return fs.readdirSync(dir).some((f) => f.endsWith('.tmp'));
    }, watching(child));
    child.kill(signal);
    const { signal: by } = await done;
    t.is(by, signal, `${name}: ended by ${signal}\n${child.stderrText()}`);
    t.is(fs.readFileSync(output, 'utf8'), 'OLD\n', name);
    t.deepEqual(fs.readdirSync(dir), ['out'], `${name}: no temporary file left`);
  }
});

/** `coltrast <args> | <reader>` in bash (a real pipe, as a shell makes: Node's child stdio is a socket): coltrast's exit status and stderr, and what the reader printed. */
function piped(args: string[], reader: string): { status: number; stderr: string; stdout: string } {
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  const line = `${[process.execPath, CLI, ...args].map(q).join(' ')} | ${reader}; echo "status \${PIPESTATUS[0]}" >&2`;
  const run = spawnSync('bash', ['-c', line], { encoding: 'utf8', env: ENV, timeout: 120_000 });
  const status = /status (\d+)\n$/.exec(run.stderr);
  return { status: status ? Number(status[1]) : -1, stderr: run.stderr.slice(0, status?.index), stdout: run.stdout };
}

test('a closed stdout ends embed and export quietly with status 0 (as `| head` does)', (t) => {
  const runs: [string, string[]][] = [
    ['embed', ['embed', textsFile(3000), '--model', FIXTURE, '--threads', '1']],
    ['export', ['export', '--index', syntheticIndex(100000), '--output', deviceLink('/dev/stdout')]],
  ];
  for (const [name, args] of runs) {
    const run = piped(args, 'head -c 100');
    t.is(run.stdout.length, 100, name);
    t.is(run.status, 0, `${name}\n${run.stderr}`);
    t.notRegex(run.stderr, /EPIPE|\n\s+at /, name);
  }
});

test('export --output /dev/stdout (here a link to it) writes the SQL to stdout and its summary to stderr', (t) => {
  const run = piped(['export', '--index', syntheticIndex(3), '--output', deviceLink('/dev/stdout')], 'cat');
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /^-- coltrast index export/);
  t.regex(run.stdout, /ANALYZE "coltrast_docs";\n$/);
  t.regex(run.stderr, /exported 3 documents/);
});

test('embed and index refuse input that holds nothing, naming the file, and write nothing', (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'empty.txt'), '\n  \n');
  fs.writeFileSync(path.join(dir, 'empty.jsonl'), '');
  fs.writeFileSync(path.join(dir, 'o.jsonl'), 'OLD\n');
  userError(t, cli(['embed', 'empty.txt', '--model', FIXTURE, '--threads', '1'], dir), /^coltrast: input file empty.txt holds no texts/);
  userError(t, cli(['embed', 'empty.txt', '--model', FIXTURE, '--threads', '1', '--output', 'o.jsonl'], dir), /holds no texts/);
  t.is(fs.readFileSync(path.join(dir, 'o.jsonl'), 'utf8'), 'OLD\n');
  userError(t, cli(['index', '--data', 'empty.jsonl', '--model', FIXTURE, '--threads', '1', '--output', 'idx'], dir), /^coltrast: data file empty.jsonl holds no documents/);
  t.false(fs.existsSync(path.join(dir, 'idx')));
  // Gzipped, the same, before any model loads (this model does not exist).
  fs.writeFileSync(path.join(dir, 'empty.jsonl.gz'), zlib.gzipSync(''));
  userError(t, cli(['index', '--data', 'empty.jsonl.gz', '--model', path.join(dir, 'no-model'), '--output', 'idx'], dir), /^coltrast: data file empty.jsonl.gz holds no documents/);
});

test('embed reads a .jsonl.gz as JSON Lines: the texts of its "text" fields, as the plain .jsonl', (t) => {
  const dir = tempDir();
  const lines = ['{"text": "hello world"}', '{"text": "a second text"}'].join('\n') + '\n';
  fs.writeFileSync(path.join(dir, 'in.jsonl'), lines);
  fs.writeFileSync(path.join(dir, 'in.jsonl.gz'), zlib.gzipSync(lines));
  const [plain, gz] = ['in.jsonl', 'in.jsonl.gz'].map((file) => cli(['embed', file, '--model', FIXTURE, '--threads', '1'], dir));
  t.is(gz.status, 0, gz.stderr);
  t.is(gz.stdout.trim().split('\n').length, 2);
  t.is(gz.stdout, plain.stdout);
});

test('index --data takes a .json array of documents as it takes a .jsonl; a bad document names its line', async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'docs.json'), JSON.stringify([{ id: 'a', text: 'alpha is the first letter', metadata: { lang: 'en' } }, { id: 'b', text: 'beta is the second', metadata: null }]));
  const built = cli(['index', '--data', 'docs.json', '--model', FIXTURE, '--threads', '1', '--output', 'idx'], dir);
  t.is(built.status, 0, built.stderr);
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const index = await Index.load(path.join(dir, 'idx'), enc);
  t.deepEqual(index.get(['a', 'b']), [{ id: 'a', text: 'alpha is the first letter', metadata: { lang: 'en' } }, { id: 'b', text: 'beta is the second' }]);
  enc.dispose();
  fs.writeFileSync(path.join(dir, 'meta.jsonl'), '{"id": "a", "text": "x"}\n{"id": "b", "text": "y", "metadata": "x"}\n');
  userError(t, cli(['index', '--data', 'meta.jsonl', '--model', FIXTURE, '--threads', '1', '--output', 'idx2'], dir), /^coltrast: meta\.jsonl:2: "metadata" must be an object \(or null, or absent\), got the string "x"/);
});

test('train --metric without --patience keeps the best epoch by that metric and trains every epoch', (t) => {
  const output = path.join(tempDir(), 'model');
  const run = cli(['train', '--data', pairsFile(40), '--model', FIXTURE, '--output', output, '--metric', 'mrr@10', '--epochs', '2', '--batch-size', '8', '--threads', '1', '--device', 'cpu']);
  t.is(run.status, 0, run.stderr);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.is(history.config.metric, 'mrr@10');
  t.is(history.history.epochs.length, 2, 'no early stop');
});

test('train interrupted by Ctrl-C says where its checkpoint is and that --resume continues it', async (t) => {
  const output = path.join(tempDir(), 'model');
  const child = start(['train', '--data', pairsFile(400), '--model', FIXTURE, '--output', output, '--epochs', '50', '--batch-size', '8', '--checkpoint-every', '1', '--threads', '1', '--device', 'cpu']);
  const done = exited(child);
  await until('the first checkpoint', () => fs.existsSync(path.join(`${output}.checkpoint`, 'state.json')), watching(child));
  child.kill('SIGINT');
  const { signal } = await done;
  t.is(signal, 'SIGINT');
  t.true(child.stderrText().includes(`coltrast: training interrupted; its checkpoint is at ${output}.checkpoint: run the same command with --resume to continue from it`), child.stderrText());
});

test('--system without --chat is refused by ask, generate, generate-queries and rag-train before any model loads; generate-queries takes --top-k 0 (no cut)', (t) => {
  const dir = tempDir();
  const missing = path.join(dir, 'no-model');
  const data = path.join(dir, 'qa.jsonl');
  fs.writeFileSync(data, JSON.stringify({ question: 'q', answer: 'a' }) + '\n');
  const corpus = textsFile(4);
  for (const args of [
    ['ask', 'a question', '--generator', missing, '--corpus', corpus, '--system', 'be brief'],
    ['generate', 'a prompt', '--model', missing, '--system', 'be brief'],
    ['generate-queries', '--generator', missing, '--corpus', corpus, '--output', path.join(dir, 'q.jsonl'), '--system', 'be brief'],
    ['rag-train', '--data', data, '--corpus', corpus, '--generator', missing, '--output', path.join(dir, 'rag'), '--system', 'be brief'],
  ]) {
    userError(t, cli(args), /^coltrast: --system goes with --chat$/, args[0]);
  }
  // --top-k 0 passes the flags (the library's "no cut"): what fails is the missing generator.
  const run = cli(['generate-queries', '--generator', missing, '--corpus', corpus, '--output', path.join(dir, 'q.jsonl'), '--top-k', '0']);
  t.not(run.status, 0);
  t.notRegex(run.stderr, /--top-k/);
  t.regex(run.stderr, /no-model/);
});

test('rag-train on a non-empty output folder names the flags --overwrite and --resume', (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'x'), 'x');
  const data = path.join(tempDir(), 'qa.jsonl');
  fs.writeFileSync(data, Array.from({ length: 4 }, (_, i) => JSON.stringify({ question: `q ${i}`, answer: `a ${i}` })).join('\n'));
  const run = cli(['rag-train', '--data', data, '--corpus', textsFile(4), '--generator', GENERATOR, '--retriever', FIXTURE, '--output', dir, '--threads', '1']);
  userError(t, run, /is not empty: pass --overwrite to replace it, or --resume to continue an interrupted run$/);
});

test('serve: a host that is no address of this machine, or an empty --port, is a line and exit 2, before any model loads', (t) => {
  const model = path.join(tempDir(), 'no-such-model');
  userError(t, cli(['serve', '--host', 'not-a-host.invalid', '--model', model]), /^coltrast: cannot listen on not-a-host.invalid:8080: no address is known by the name/);
  // An empty --port is no port (Number('') would be 0: any free port).
  userError(t, cli(['serve', '--port', '', '--model', model]), /^coltrast: --port must be an integer, got $/);
  const local = Object.values(os.networkInterfaces()).flat().some((a) => a?.address === '10.254.254.1');
  if (!local) userError(t, cli(['serve', '--host', '10.254.254.1', '--port', '0', '--model', model]), /^coltrast: cannot listen on 10.254.254.1:0: 10.254.254.1 is not an address of this machine/);
});

test('search, serve and index --update refuse a folder that is no index, or a damaged index.json, before any model loads', (t) => {
  // The model named does not exist: had it been loaded first (as search and serve did), its error would come instead.
  const model = path.join(tempDir(), 'no-such-model');
  const empty = tempDir();
  const damaged = tempDir();
  fs.writeFileSync(path.join(damaged, 'index.json'), '{"format": "coltrast-index", "version": 1, "model": {}}');
  const docs = path.join(tempDir(), 'docs.jsonl');
  fs.writeFileSync(docs, '{"id": "a", "text": "one"}\n');
  for (const [dir, message] of [
    [empty, 'no index.json \\(not an index folder\\)'],
    [damaged, 'index.json says model.fingerprint undefined'],
  ] as const) {
    const index = new RegExp(`^coltrast: index ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${message}`);
    userError(t, cli(['search', '--index', dir, '--model', model, 'a question']), index, 'search');
    userError(t, cli(['serve', '--index', dir, '--model', model, '--port', '0']), index, 'serve');
    if (dir === damaged) userError(t, cli(['index', '--update', '--data', docs, '--output', dir, '--model', model]), index, 'index --update');
  }
});

test('serve --writable exits 1 when its final save at shutdown fails', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const dir = path.join(tempDir(), 'idx');
  try {
    await (await Index.build(enc, [{ id: 'a', text: 'first document' }])).save(dir);
  } finally {
    enc.dispose();
  }
  const child = start(['serve', '--index', dir, '--writable', '--port', '0', '--save-interval', '3600', '--threads', '1', '--device', 'cpu'], 'pipe');
  const done = exited(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await until('the server', () => /listening on (\S+)/.test(out), watching(child));
  const url = /listening on (\S+)/.exec(out)![1];
  const added = await fetch(`${url}/documents`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ documents: [{ id: 'b', text: 'second' }] }) });
  t.is(added.status, 200);
  // The folder becomes a file: the save at shutdown cannot replace it.
  fs.rmSync(dir, { recursive: true });
  fs.writeFileSync(dir, 'not an index');
  child.kill('SIGINT');
  const { code } = await done;
  t.is(code, 1, child.stderrText());
  t.regex(child.stderrText(), /saving the index to .* failed/);
  t.regex(child.stderrText(), /the index's last changes are not saved/);
});

test('search escapes the control characters of documents (an escape sequence would drive the terminal)', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const dir = path.join(tempDir(), 'idx');
  try {
    await (await Index.build(enc, [{ id: 'evil\u0007', text: 'clear \u001b[2J the screen \u009b here' }])).save(dir);
  } finally {
    enc.dispose();
  }
  const run = cli(['search', '--index', dir, '--model', FIXTURE, '--threads', '1', 'clear']);
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /1\. evil\\u0007 .* clear \\u001b\[2J the screen \\u009b here/);
  t.notRegex(run.stdout, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  t.is(printable('a\tb\nc\rd\u0000'), 'a\tb\nc\\u000dd\\u0000');
});

test('with --output /dev/stdout (here a link to it), mine, generate-queries and embed --json say their summaries on stderr, not in the output', (t) => {
  const dir = tempDir();
  const pairs = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(pairs, ['alpha', 'beta', 'gamma'].map((w) => JSON.stringify({ query: `what is ${w}`, positive: `${w} is a letter` })).join('\n') + '\n');
  const corpus = textsFile(5);
  const mine = ['mine', '--data', pairs, '--corpus', corpus, '--model', FIXTURE, '--num-negatives', '1', '--device', 'cpu', '--threads', '1'];
  const generate = ['generate-queries', '--generator', GENERATOR, '--corpus', textsFile(2), '--per-document', '1', '--max-new-tokens', '3', '--device', 'cpu', '--threads', '1'];
  const runs: [string[], string, RegExp][] = [
    [mine, 'negative', /Metric\s+Positive\s+Negative[\s\S]* triplet rows .* -> /],
    [[...mine, '--json'], 'negative', /"format":"triplet"/],
    [generate, 'query', /pairs for 2 documents/],
    [[...generate, '--json'], 'query', /"documents":2/],
    [['embed', corpus, '--model', FIXTURE, '--threads', '1', '--json'], 'embedding', /"texts":5/],
  ];
  for (const [args, key, summary] of runs) {
    const run = piped([...args, '--output', deviceLink('/dev/stdout')], 'cat');
    const label = args.join(' ');
    t.is(run.status, 0, `${label}\n${run.stderr}`);
    const lines = run.stdout.split('\n').filter((l) => l !== '');
    t.true(lines.length > 0, label);
    const rows = lines.filter((line) => /^\{/.test(line) && key in JSON.parse(line));
    t.deepEqual(rows, lines, `${label}: rows of the output only, no summary`);
    t.regex(run.stderr, summary, label);
  }
});

// Serial, as the SIGINT test above: a sibling's spawnSync holds this process's event loop, and the timer below with it.
test.serial('export to a FIFO that no one reads yet still ends at Ctrl-C (its open, which waits for a reader, holds no event loop)', async (t) => {
  const fifo = path.join(tempDir(), 'fifo');
  if (spawnSync('mkfifo', [fifo]).status !== 0) return t.pass('no mkfifo here');
  const child = start(['export', '--index', syntheticIndex(3), '--output', fifo]);
  const done = exited(child);
  // The progress bar's 0% is said just before the output is opened.
  await until('the export to start', () => {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`export ended (${child.exitCode ?? child.signalCode}):\n${child.stderrText()}`);
    return /export\s+0%/.test(child.stderrText());
  }, watching(child));
  await new Promise((resolve) => setTimeout(resolve, 500));
  child.kill('SIGINT');
  // An open of the FIFO on the event loop's thread answered no signal: the process had to be killed.
  const ended = await Promise.race([done, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000))]);
  if (!ended) child.kill('SIGKILL');
  t.is(ended?.signal, 'SIGINT', child.stderrText());
  t.deepEqual(fs.readdirSync(path.dirname(fifo)), ['fifo']);
});

test('search and index --update refuse an index.json whose model.source is no folder or hub id, unless --model is given', async (t) => {
  const dir = tempDir();
  const docs = path.join(dir, 'docs.jsonl');
  fs.writeFileSync(docs, '{"id":"a","text":"the cat sat"}\n{"id":"b","text":"hello world"}\n');
  const index = path.join(dir, 'index');
  const built = spawnSync(process.execPath, [CLI, 'index', '--model', FIXTURE, '--output', index, '--data', docs, '--threads', '1'], { encoding: 'utf8', timeout: 240_000 });
  t.is(built.status, 0, built.stderr);
  const manifest = JSON.parse(fs.readFileSync(path.join(index, 'index.json'), 'utf8'));
  for (const source of [null, 5, '', '  ', { dir: 'x' }]) {
    fs.writeFileSync(path.join(index, 'index.json'), JSON.stringify({ ...manifest, model: { ...manifest.model, source } }));
    for (const args of [['search', '--index', index, 'cat'], ['index', '--update', '--output', index, '--data', docs]]) {
      const r = spawnSync(process.execPath, [CLI, ...args, '--threads', '1'], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
      t.is(r.status, 2, `${args[0]} ${JSON.stringify(source)}: ${r.stderr}`);
      t.true(r.stderr.includes(`index.json says model.source ${JSON.stringify(source)}`) && r.stderr.includes('--model <dir|hub id>'), r.stderr);
    }
  }
  const searched = spawnSync(process.execPath, [CLI, 'search', '--index', index, '--model', FIXTURE, '--threads', '1', 'cat'], { encoding: 'utf8', timeout: 240_000 });
  t.is(searched.status, 0, searched.stderr);
  t.regex(searched.stdout, /the cat sat/);
});
