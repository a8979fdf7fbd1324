// The native addon's entry points given garbage (test/helpers/native-garbage.ts, in a child process): every call
// resolves or throws a JavaScript Error, none takes the process down, and the model that took the garbage embeds
// exactly as before. lib/ validates what users pass before it reaches native code; this checks the layer below, so
// that a mistake in lib/ surfaces as an error rather than a crash.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

test('garbage arguments to every native entry point: errors, never a crash, and the model unchanged', (t) => {
  const cwd = tempDir();
  const trace = path.join(cwd, 'trace.txt');
  const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'native-garbage.ts'), cwd], {
    encoding: 'utf8',
    cwd: path.resolve(__dirname, '..'),
    env: { ...process.env, COLTRAST_GARBAGE_TRACE: trace },
    maxBuffer: 64 * 1024 * 1024,
    timeout: 300_000,
  });
  // The trace's last line names the call that was running if the process died.
  t.is(run.signal, null, `the child died of ${run.signal} during: ${fs.readFileSync(trace, 'utf8').trim().split('\n').at(-1)}`);
  t.is(run.status, 0, run.stderr.slice(-2000));
  const result = JSON.parse(run.stdout) as { calls: number; outcomes: Record<string, string>; nonErrors: string[]; unchanged: boolean };
  t.true(result.calls > 4000, `${result.calls} calls`);
  t.deepEqual(result.nonErrors, []);
  t.true(result.unchanged, 'the model embeds the same vectors after the garbage');
  const refused = Object.values(result.outcomes).filter((o) => o !== 'ok').length;
  t.true(refused > result.calls / 2, `${refused} of ${result.calls} calls refused`);
  // Numbers that N-API's integer getters or casts used to turn silently into others (Infinity into 0: a division by zero
  // in k-means, SIGFPE), now refused by name; an output kind that used to fall back to 'pooled'; token ids beyond the
  // embeddings, which libtorch reported as "index out of range in self"; a cross-encoder step on a model without a head.
  const expected: Record<string, RegExp> = {
    'residual train argument 1=Infinity': /^INVALID_ARGUMENT: centroids must be a positive integer/,
    'residual train argument 1=1.5': /^INVALID_ARGUMENT: centroids must be a positive integer/,
    'embed batchSize=NaN': /^INVALID_ARGUMENT: batchSize must be an integer from 0 to 2147483647/,
    'embed shape 4294967296x4294967296': /^INVALID_ARGUMENT: batchSize must be an integer/,
    'embed seqLen=-1': /^INVALID_ARGUMENT: seqLen must be an integer/,
    "embed output='x'": /^INVALID_ARGUMENT: output must be 'pooled', 'tokens', 'scores' or 'sparse', got 'x'/,
    'NativeDenseStore argument 0=1.5': /^INVALID_ARGUMENT: dim must be a positive integer/,
    'NativeResidualStore argument 0=Infinity': /^INVALID_ARGUMENT: dim must be a positive integer/,
    'dense float32 rows argument 0=1e300': /^INVALID_ARGUMENT: start must be a non-negative integer/,
    'dense float32 search argument 1=Infinity': /^INVALID_ARGUMENT: k must be a positive integer/,
    'setNumThreads argument 0=-1': /^INVALID_ARGUMENT: threads must be an integer from 0 to 65536/,
    'embed ids of -1': /^MODEL_FILES: token id -1 \(in inputIds\) is outside the model's vocabulary of 198 tokens/,
    'embed token types of 5': /^INVALID_ARGUMENT: tokenTypeIds holds 5, but the model has 2 token types/,
    'logLikelihood (causal LM) inputIds=Int32Array(4) of 2^30': /^MODEL_FILES: token id 1073741824 \(in inputIds\) is outside/,
    'generate (causal LM) maxNewTokens=Infinity': /^INVALID_ARGUMENT: maxNewTokens must be an integer from 1/,
    'generate (causal LM) numBeams=1e300': /^INVALID_ARGUMENT: numBeams must be an integer from 1/,
    'step with gradient caching miniBatchSize=Infinity': /^INVALID_ARGUMENT: miniBatchSize must be an integer >= 0/,
    'step with matryoshka: matryoshkaDimensions[1]=Infinity': /^INVALID_ARGUMENT: matryoshkaDimensions must hold positive integers/,
    'step with distillation: teacher perQuery=Infinity': /^INVALID_ARGUMENT: teacher\.perQuery must be an integer from 1/,
    'cross-encoder step on an embedding model': /^INVALID_ARGUMENT: crossEncoder steps need a model with a score head/,
    'step with pair loss pairLabels=Float32Array(0)': /^INVALID_ARGUMENT: a pair loss takes B queries, B documents \(document i is query i's pair\) and B pairLabels/,
    'step with pair loss pairMargin=1e300': /^INVALID_ARGUMENT: pairMargin must be a float32 number >= 0/,
    "step with pair loss pairLoss='x'": /^INVALID_ARGUMENT: pairLoss must be 'none', 'cosent', 'angle', 'cosine', 'contrastive' or 'online_contrastive', got 'x'/,
    'cross-encoder labeled step documentsPerQuery=0': /^INVALID_ARGUMENT: a cross-encoder's labeled pairs take documentsPerQuery 1, one label per pair and crossEncoderLoss 'bce'/,
    'step with triplet loss tripletNegatives=Int32Array(0)': /^INVALID_ARGUMENT: tripletNegatives must hold one document per query \(2\)/,
    "step with triplet loss tripletDistance='x'": /^INVALID_ARGUMENT: tripletDistance must be 'none', 'euclidean', 'cosine' or 'manhattan', got 'x'/,
    'mlm step with no label': /^INVALID_ARGUMENT: labels must mark at least one position to predict/,
    'mlm step with a label at padding': /^INVALID_ARGUMENT: labels must be -100 at padding positions/,
    'mlm step with a label past the vocabulary': /^INVALID_ARGUMENT: labels must be token ids below 198/,
    'mlm step with too few labels': /^INVALID_ARGUMENT: labels must hold one value per input position \(10\)/,
    'mlm step labels=null': /^INVALID_ARGUMENT: labels must be an Int32Array/,
    'embed after dispose': /^DISPOSED/,
  };
  for (const [call, pattern] of Object.entries(expected)) t.regex(result.outcomes[call] ?? 'not called', pattern, call);
});

// A JavaScript environment torn down under native work: a user's Worker terminated while a call's promise settles or a
// generation hands over its text, process.exit() while the addon registers (its first load, in a worker thread). No
// JavaScript can run there, and node-addon-api's exceptions used to escape to std::terminate (SIGABRT: the whole
// process, main thread and all). Each case in a child process, from the built package (dist/).
const DIST = path.resolve(__dirname, '..', 'dist');
const TINY_BERT = path.join(__dirname, 'fixtures', 'tiny-bert');
const TINY_LM = path.join(__dirname, 'fixtures', 'tiny-causal-lms', 'qwen3');

function runChild(source: string, args: string[] = []) {
  const script = path.join(tempDir(), 'child.js');
  fs.writeFileSync(script, source);
  return spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 120_000 });
}

test("a user's Worker terminated while embed() and generate() run in it: the process lives on", (t) => {
  const run = runChild(`
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
if (isMainThread) {
  (async () => {
    // Rounds at growing delays, so that termination falls at different points of the calls (the embed case aborted by
    // its fourth or fifth round, the generate case at its first, before the fix).
    for (const [kind, rounds] of [['embed', 8], ['generate', 3]]) {
      for (let round = 0; round < rounds; round++) {
        const worker = new Worker(__filename, { workerData: kind });
        await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
        await new Promise((resolve) => setTimeout(resolve, 30 + round * 20));
        await worker.terminate();
      }
      console.log(kind, 'done');
    }
  })();
} else {
  const { Encoder, Generator } = require(${JSON.stringify(DIST)});
  (async () => {
    if (workerData === 'embed') {
      const enc = await Encoder.load(${JSON.stringify(TINY_BERT)}, { threads: 1, device: 'cpu' });
      const texts = Array.from({ length: 2000 }, (_, i) => 'worker text ' + i + ' ' + 'word '.repeat(i % 60));
      parentPort.postMessage('ready');
      for (;;) await enc.embed(texts);
    } else {
      const gen = await Generator.load(${JSON.stringify(TINY_LM)}, { threads: 1, device: 'cpu' });
      parentPort.postMessage('ready');
      for (;;) await gen.generate(['hello', 'world foo'], { maxNewTokens: 80, onText: () => {} });
    }
  })();
}
`);
  t.is(run.signal, null, run.stderr.slice(-2000));
  t.is(run.status, 0, run.stderr.slice(-2000));
  t.deepEqual(run.stdout.trim().split('\n'), ['embed done', 'generate done']);
});

test('process.exit() while the addon first loads (and while train() starts) exits with the code asked for', (t) => {
  const source = `
const { Encoder, train } = require(${JSON.stringify(DIST)});
const [what, delay] = process.argv.slice(2);
if (what === 'load') Encoder.load(${JSON.stringify(TINY_BERT)}, { threads: 1, device: 'cpu' }).catch(() => {});
else train({ model: ${JSON.stringify(TINY_BERT)}, data: Array.from({ length: 12 }, (_, i) => ({ query: 'q ' + i, positive: 'p ' + i })), output: process.argv[4], epochs: 50, batchSize: 2, threads: 1, device: 'cpu' })
  .then(() => console.log('trained'), (error) => console.log('train failed:', error.message));
setTimeout(() => process.exit(7), Number(delay));
`;
  // The window was about 50-300 ms after the first call on the development VM (exit 134 there, 5 of 5 times for train()).
  for (const [what, delay] of [['load', 50], ['load', 100], ['load', 200], ['load', 300], ['train', 100], ['train', 200]] as const) {
    const run = runChild(source, [what, String(delay), path.join(tempDir(), 'model')]);
    t.is(run.signal, null, `${what} at ${delay} ms: ${run.stderr.slice(-1000)}`);
    t.is(run.status, 7, `${what} at ${delay} ms: ${run.stderr.slice(-1000)}`);
    t.is(run.stdout, '', 'exited during the call, not after it'); // (train() takes some seconds here)
  }
});
