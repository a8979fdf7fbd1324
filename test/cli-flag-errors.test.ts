// The command line names the flags its user typed in the library's argument errors, not the library's options:
// `--temperature must be a number > 0, got -1`, not `options.loss.temperature must be a number > 0, got number -1`.
// Runs the built CLI, dist/cli.js (npm run build:ts first).
import test from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index } from '../lib';
import { flagNamed, nearest, type FlagNames } from '../lib/cli';
import { FIXTURE, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const GENERATOR = path.join(__dirname, 'fixtures', 'tiny-causal-lms', 'llama');
const CROSS_ENCODER = path.join(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };

function cli(args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
}

/** The one `coltrast: ...` line of a user error (exit 2, no stack trace). */
function errorLine(t: import('ava').ExecutionContext, run: SpawnSyncReturns<string>, label: string): string {
  t.is(run.status, 2, `${label}\n${run.stderr}`);
  t.notRegex(run.stderr, /\n\s+at |node:internal/, `${label}: no stack trace`);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('coltrast: '));
  t.is(lines.length, 1, `${label}\n${run.stderr}`);
  return lines[0] ?? '';
}

function writeFile(name: string, text: string): string {
  const file = path.join(tempDir(), name);
  fs.writeFileSync(file, text);
  return file;
}

const pairsFile = () => writeFile('pairs.jsonl', wordDataset(3).map((p) => JSON.stringify(p)).join('\n') + '\n');

test('each command that passes flags to the library names the flag in the library\'s error, with the value as typed', async (t) => {
  const texts = writeFile('texts.txt', 'alpha beta\ngamma delta\n');
  const docs = writeFile('docs.jsonl', '{"id":"a","text":"alpha beta"}\n{"id":"b","text":"gamma delta"}\n');
  const pairs = pairsFile();
  const beir = tempDir();
  fs.mkdirSync(path.join(beir, 'qrels'));
  fs.writeFileSync(path.join(beir, 'corpus.jsonl'), '{"_id":"d1","text":"alpha beta"}\n{"_id":"d2","text":"gamma delta"}\n');
  fs.writeFileSync(path.join(beir, 'queries.jsonl'), '{"_id":"q1","text":"alpha"}\n');
  fs.writeFileSync(path.join(beir, 'qrels', 'test.tsv'), 'query-id\tcorpus-id\tscore\nq1\td1\t1\n');
  const index = path.join(tempDir(), 'idx');
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  await (await Index.build(enc, [{ id: 'a', text: 'alpha beta' }, { id: 'b', text: 'gamma delta' }])).save(index);
  enc.dispose();
  const out = tempDir();
  // [command, arguments, what the error says]: one value the library refuses per command (export's flags are all
  // checked by the command line itself).
  const cases: [string, string[], RegExp][] = [
    ['train', ['--data', pairs, '--output', path.join(out, 'model'), '--model', FIXTURE, '--temperature=-1'], /^coltrast: --temperature must be a number > 0, got -1$/],
    ['embed', [texts, '--model', FIXTURE, '--dtype', 'float64'], /^coltrast: --dtype must be one of .*, got float64$/],
    // tokenStorage, named bare in the reason, is a flag too.
    ['index', ['--data', docs, '--output', path.join(out, 'idx'), '--model', FIXTURE, '--centroids', '5'], /^coltrast: --centroids must be absent: it is for --token-storage 'residual', got 5$/],
    // --mmr is search()'s mmrLambda.
    ['search', ['--index', index, '--model', FIXTURE, '--mmr', '2', 'alpha'], /^coltrast: --mmr must be a number in \[0, 1\], got 2$/],
    ['eval', ['--data', beir, '--mode', 'bm25', '--hybrid-weight', '0.3'], /^coltrast: --hybrid-weight must be absent with mode 'bm25' \(it is for mode 'hybrid'\), got 0.3$/],
    // --stem is evaluate()'s bm25: { stem: true }, a value the flag's user never typed.
    ['eval', ['--data', beir, '--mode', 'dense', '--model', FIXTURE, '--stem'], /^coltrast: --stem must be absent with mode 'dense' \(it is for modes 'bm25' and 'hybrid'\)$/],
    // --max-inputs was not given: its default is named by its flag all the same.
    ['serve', ['--no-model', '--reranker', CROSS_ENCODER, '--port', '0', '--max-queue', '10'], /^coltrast: --max-queue \(10\) must be at least --max-inputs \(2048\)$/],
    // The cross-encoder's adapter is --reranker-adapter, not the embedding model's --adapter.
    ['serve', ['--no-model', '--reranker', CROSS_ENCODER, '--port', '0', '--reranker-adapter='], /^coltrast: --reranker-adapter must be a PEFT adapter folder, got ""$/],
    ['ask', ['--retriever', FIXTURE, '--generator', GENERATOR, '--corpus', texts, '--template', 'no placeholders', 'a question'], /^coltrast: --template must be a string with \{context\} and \{question\}, got "no placeholders"$/],
    ['generate', ['--model', GENERATOR, '--temperature', '0.5', '--num-beams', '2', 'a prompt'], /^coltrast: beam search is deterministic: give --temperature 0 \(or leave it out\) with --num-beams > 1$/],
    ['generate-queries', ['--generator', GENERATOR, '--corpus', texts, '--output', path.join(out, 'q.jsonl'), '--temperature', '0'], /^coltrast: --temperature 0 is greedy decoding, .*: set --per-document to 1/],
    ['rag-train', ['--generator', GENERATOR, '--retriever', FIXTURE, '--data', pairs, '--corpus', texts, '--output', path.join(out, 'rag'), '--warmup-ratio', '2'], /^coltrast: --warmup-ratio must be a number in \[0, 1\), got 2$/],
    ['mine', ['--data', pairs, '--output', path.join(out, 'mined.jsonl'), '--model', FIXTURE, '--range-min', '5', '--range-max', '2'], /^coltrast: --range-min \(5\) must be below --range-max \(2\)$/],
    // --residual-bits is mine()'s plaid.residualBits.
    ['mine', ['--data', pairs, '--output', path.join(out, 'mined.jsonl'), '--model', FIXTURE, '--plaid', '--residual-bits', '3'], /^coltrast: --residual-bits must be 1, 2 or 4, got 3$/],
  ];
  for (const [command, args, message] of cases) {
    const label = `${command} ${args.filter((a) => a.startsWith('--')).join(' ')}`;
    const line = errorLine(t, cli([command, ...args, '--threads', '1']), label);
    t.regex(line, message, label);
    t.false(line.includes('options.'), `${label}: ${line}`);
  }
  t.deepEqual(fs.readdirSync(out), [], 'nothing written');
});

test('train: an option its --config file sets keeps its name there; a flag given over it is named', (t) => {
  const pairs = pairsFile();
  const config = writeFile('config.json', JSON.stringify({ batchSize: 8, valSplit: 0 }));
  const output = path.join(tempDir(), 'model');
  const fromConfig = errorLine(t, cli(['train', '--config', config, '--data', pairs, '--output', output, '--model', FIXTURE, '--threads', '1']), 'config');
  t.regex(fromConfig, /^coltrast: options\.batchSize 8 is larger than the 3 training examples; lower it$/);
  const fromFlag = errorLine(t, cli(['train', '--config', config, '--data', pairs, '--output', output, '--model', FIXTURE, '--threads', '1', '--batch-size', '4']), 'flag');
  t.regex(fromFlag, /^coltrast: --batch-size 4 is larger than the 3 training examples; lower it$/);
});

/** FlagNames as train's command line records them for `typed` (a part of its flags). */
function trainNames(typed: FlagNames['typed']): FlagNames {
  return {
    options: {
      'loss.temperature': 'temperature', prompts: 'no-prompts', 'lora.rank': 'lora-rank', 'lora.targetModules': 'lora-targets',
      'crossEncoder.chatTemplate': 'cross-encoder-template', writable: 'writable', port: 'port', perDocument: 'per-document', crossEncoder: 'cross-encoder',
    },
    typed,
    booleans: new Set(['no-prompts', 'writable', 'cross-encoder']),
    lists: new Set(['lora-targets']),
  };
}

test('a negating flag (--no-prompts) is named only where the message says its option false', (t) => {
  const names = trainNames({ 'no-prompts': true });
  t.is(flagNamed('options.prompts: false needs a model without prompts', names), '--no-prompts needs a model without prompts');
  // The flag's name would say the opposite of what the message means.
  t.is(flagNamed('options.prompts must be true with this model', names), 'options.prompts must be true with this model');
  t.is(flagNamed('options.prompts must be true or false, got boolean false', names), 'options.prompts must be true or false, got boolean false');
});

test('a value the command converts is said as the library saw it, a list as typed, a number or string as typed', (t) => {
  // --cross-encoder-template reads a file: the value is its text, not the path typed.
  const template = trainNames({ 'cross-encoder-template': 'tmpl.jinja' });
  t.is(
    flagNamed('options.crossEncoder.chatTemplate must be a template over query and document, got the string "{{ x }}"', template),
    '--cross-encoder-template must be a template over query and document, got the string "{{ x }}"',
  );
  t.is(flagNamed('options.lora.targetModules must be known projections, got an array of length 2', trainNames({ 'lora-targets': 'q, v' })), '--lora-targets must be known projections, got "q, v"');
  t.is(flagNamed('options.lora.rank must be a positive integer, got number 0', trainNames({ 'lora-rank': '0.0' })), '--lora-rank must be a positive integer, got 0.0');
  // A value that is not the one typed (the library's default, another option's) is left as it is.
  t.is(flagNamed('options.lora.rank must be a positive integer, got number 3', trainNames({ 'lora-rank': '2' })), '--lora-rank must be a positive integer, got number 3');
  t.is(flagNamed('options.loss.temperature must be a number > 0, got number -1', trainNames({})), '--temperature must be a number > 0, got number -1');
});

test('options without a flag keep their names; nested ones are named only where a flag sets them; code in braces is left alone', (t) => {
  const names = trainNames({ writable: true });
  t.is(flagNamed('options.lora.dropout must be in [0, 1), got number 2', names), 'options.lora.dropout must be in [0, 1), got number 2');
  t.is(flagNamed('options.loss must be an object', names), 'options.loss must be an object');
  t.is(flagNamed('options.saveTo saves the changes clients make: give options.writable: true too', names), 'options.saveTo saves the changes clients make: give --writable too');
  t.is(flagNamed('port 80 is in use: choose another (options.port, --port)', names), 'port 80 is in use: choose another (--port)');
  t.is(flagNamed('set perDocument to 1 or train({ crossEncoder }) a reranker', names), 'set --per-document to 1 or train({ crossEncoder }) a reranker');
  // A dotted field is a file's (index.json's), not an option, and a sentence's last word is still one.
  t.is(flagNamed('index.json says crossEncoder.quantize "int4", not "int8"', names), 'index.json says crossEncoder.quantize "int4", not "int8"');
  t.is(flagNamed('it needs perDocument.', names), 'it needs --per-document.');
  // A boolean flag given: the library's description of its value goes, the advice after it stays.
  t.is(flagNamed('options.writable must be false without an index, got boolean true: give --index too', names), '--writable must be false without an index: give --index too');
  t.is(flagNamed('options.crossEncoder must be absent here, got a CrossEncoder; drop it', trainNames({ 'cross-encoder': true })), '--cross-encoder must be absent here; drop it');
  t.is(flagNamed('options.writable must be false, got boolean true', names), '--writable must be false');
});

test('an unknown command or flag near a known one is answered with it ("did you mean"), and one near none with the list', (t) => {
  for (const [args, expected] of [
    [['evaluate'], /^coltrast: unknown command evaluate: did you mean eval\? \(commands: info, /],
    [['trian'], /^coltrast: unknown command trian: did you mean train\? /],
    [['xyz'], /^coltrast: unknown command xyz \(commands: /],
    [['train', '--epoch', '3'], /^coltrast: Unknown option '--epoch': did you mean --epochs\? \(coltrast train --help lists its flags\)$/],
    [['train', '--batchsize', '3'], /^coltrast: Unknown option '--batchsize': did you mean --batch-size\? /],
    [['serve', '--prot', '3'], /^coltrast: Unknown option '--prot': did you mean --port\? /],
    [['embed', 'x', '--bogus'], /^coltrast: Unknown option '--bogus' \(coltrast embed --help lists its flags\)$/],
  ] as const) {
    t.regex(errorLine(t, cli([...args]), args.join(' ')), expected);
  }
  // Nothing suggested for a short word far from every name, nor the word itself.
  t.is(nearest('k', ['top-k', 'kk']), undefined);
  t.is(nearest('port', ['port', 'host']), undefined);
  t.is(nearest('outptu', ['output', 'out']), 'output');
});
