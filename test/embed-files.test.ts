// `coltrast embed --output` as binary files Python reads as they are: .npy (numpy.load) and .safetensors, pooled
// vectors and token vectors, float32 as the model gave them (JSONL rounds to 6 decimals). Runs the built CLI,
// dist/cli.js (npm run build:ts first); NumPy (python3-numpy, a dependency of python3-torch that scripts/setup.sh
// installs) reads the .npy files.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder } from '../lib';
import { npyHeader, safetensorsHeader } from '../lib/vector-files';
import { FIXTURE, tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };
const TEXTS = ['hello world', 'the quick brown fox jumps over the lazy dog', 'a, b', 'retrieval with token vectors', 'x'];

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
}

const numpy = spawnSync('/usr/bin/python3', ['-c', 'import numpy'], { encoding: 'utf8', timeout: 240_000 }).status === 0;
const PYENV = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const safetensorsPython = fs.existsSync(PYENV) && spawnSync(PYENV, ['-c', 'import safetensors.numpy'], { encoding: 'utf8', timeout: 240_000 }).status === 0;
const noSafetensors = safetensorsPython ? '' : ` [Python's check skipped: no Python with safetensors at ${PYENV}; scripts/setup.sh makes build/pyenv from this machine's wheels]`;
const noNumpy = numpy ? '' : ' [skipped: no python3 with numpy here; apt-get install python3-numpy (scripts/setup.sh installs it with python3-torch)]';

/** The float32 array a .safetensors file holds under `name`, read by its header's offsets. */
function tensor(file: string, name: string): { shape: number[]; dtype: string; data: Float32Array | BigInt64Array } {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  const entry = header[name];
  const [begin, end] = entry.data_offsets as [number, number];
  const raw = bytes.subarray(8 + length + begin, 8 + length + end);
  const copy = new Uint8Array(raw).buffer;
  return { shape: entry.shape, dtype: entry.dtype, data: entry.dtype === 'I64' ? new BigInt64Array(copy) : new Float32Array(copy) };
}

async function expected() {
  const enc = await Encoder.load(FIXTURE, { threads: 1 });
  try {
    return { pooled: await enc.embed(TEXTS), tokens: await enc.embed(TEXTS, { output: 'tokens' }) };
  } finally {
    enc.dispose();
  }
}

function input(dir: string): string {
  const file = path.join(dir, 'texts.txt');
  fs.writeFileSync(file, `${TEXTS.join('\n')}\n`);
  return file;
}

test('npy headers are what numpy writes: 64-byte aligned data, version 1.0, the shape as a tuple', (t) => {
  for (const shape of [[3, 256], [1, 7], [100000, 1024], [5]]) {
    const h = npyHeader(shape);
    t.is(h.length % 64, 0, `header of ${shape} ends at ${h.length}`);
    t.is(h.subarray(0, 6).toString('latin1'), '\x93NUMPY');
    t.is(h.readUInt16LE(8), h.length - 10);
    t.true(h.toString('latin1').endsWith('\n'));
    t.true(h.toString('latin1').includes(`'shape': (${shape.length === 1 ? `${shape[0]},` : shape.join(', ')})`));
  }
});

test('a safetensors header says each tensor, one after another, and is padded to 8 bytes', (t) => {
  const h = safetensorsHeader([
    { name: 'a', dtype: 'F32', shape: [2, 3], bytes: 24 },
    { name: 'b', dtype: 'I64', shape: [3], bytes: 24 },
  ]);
  const length = Number(h.readBigUInt64LE(0));
  t.is(length % 8, 0);
  t.is(h.length, 8 + length);
  const json = JSON.parse(h.subarray(8).toString('utf8'));
  t.deepEqual(json.a, { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
  t.deepEqual(json.b, { dtype: 'I64', shape: [3], data_offsets: [24, 48] });
});

test(`embed --output x.npy writes the model's float32 vectors, which numpy.load reads as a [texts, dim] array${noNumpy}`, async (t) => {
  const dir = tempDir();
  const out = path.join(dir, 'vectors.npy');
  const r = cli(['embed', input(dir), '--model', FIXTURE, '--output', out, '--threads', '1']);
  t.is(r.status, 0, r.stderr);
  const want = (await expected()).pooled;
  const bytes = fs.readFileSync(out);
  const start = 10 + bytes.readUInt16LE(8);
  t.deepEqual(new Float32Array(new Uint8Array(bytes.subarray(start)).buffer), want.data, 'the bytes after the header are the vectors, exactly');
  if (!numpy) return t.log(noNumpy);
  const py = spawnSync('/usr/bin/python3', ['-c', `import numpy, json, sys; a = numpy.load(sys.argv[1]); print(json.dumps({"shape": list(a.shape), "dtype": str(a.dtype), "first": a[0, :3].tolist()}))`, out], { encoding: 'utf8', timeout: 240_000 });
  t.is(py.status, 0, py.stderr);
  const got = JSON.parse(py.stdout);
  t.deepEqual(got.shape, [TEXTS.length, want.dims[1]]);
  t.is(got.dtype, 'float32');
  t.deepEqual(got.first, Array.from(want.data.subarray(0, 3)));
});

test('embed --output x.safetensors writes "embeddings", the float32 vectors, which safetensors\' own reader loads', async (t) => {
  const dir = tempDir();
  const out = path.join(dir, 'vectors.safetensors');
  const r = cli(['embed', input(dir), '--model', FIXTURE, '--output', out, '--threads', '1']);
  t.is(r.status, 0, r.stderr);
  const want = (await expected()).pooled;
  const e = tensor(out, 'embeddings');
  t.deepEqual(e.shape, want.dims);
  t.is(e.dtype, 'F32');
  t.deepEqual(e.data, want.data);
  if (!safetensorsPython) return t.log(noSafetensors);
  const py = spawnSync(PYENV, ['-c', `import json, sys; from safetensors.numpy import load_file; d = load_file(sys.argv[1]); print(json.dumps({k: [list(v.shape), str(v.dtype)] for k, v in d.items()}))`, out], { encoding: 'utf8', timeout: 240_000 });
  t.is(py.status, 0, py.stderr);
  t.deepEqual(JSON.parse(py.stdout), { embeddings: [want.dims, 'float32'] });
});

test('embed --tokens --output x.safetensors writes every text\'s token vectors and int64 offsets that cut them apart', async (t) => {
  const dir = tempDir();
  const out = path.join(dir, 'tokens.safetensors');
  const r = cli(['embed', input(dir), '--model', FIXTURE, '--tokens', '--output', out, '--threads', '1']);
  t.is(r.status, 0, r.stderr);
  const want = (await expected()).tokens;
  const tokens = tensor(out, 'tokens');
  const offsets = tensor(out, 'offsets').data as BigInt64Array;
  t.is(offsets.length, TEXTS.length + 1);
  t.is(offsets[0], 0n);
  const dim = want[0].dims[1];
  t.deepEqual(tokens.shape, [Number(offsets[TEXTS.length]), dim]);
  want.forEach((m, i) => {
    const rows = (tokens.data as Float32Array).subarray(Number(offsets[i]) * dim, Number(offsets[i + 1]) * dim);
    t.deepEqual(rows, m.data.subarray(0, m.dims[0] * m.dims[1]), `text ${i}'s token vectors`);
  });
  t.deepEqual(fs.readdirSync(dir).sort(), ['texts.txt', 'tokens.safetensors'], 'the side file of token vectors is gone');
});

test('embed --tokens with a .npy output is refused before the model loads, naming the formats that hold token vectors', (t) => {
  const dir = tempDir();
  const r = cli(['embed', input(dir), '--model', path.join(dir, 'no-such-model'), '--tokens', '--output', path.join(dir, 'v.npy')]);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /--tokens .*\.npy file holds one array of rows: write .*v\.safetensors \("tokens" and "offsets"\) or a \.jsonl file/);
  t.false(fs.existsSync(path.join(dir, 'v.npy')));
});

test("a killed embed --tokens run's side file of token vectors is removed by the next write of its output, a live one's kept", async (t) => {
  const dir = tempDir();
  const out = path.join(dir, 'tokens.safetensors');
  // A process that dies (SIGKILL: no handler runs) with its token vectors half written: its side file and its
  // output's temporary file are left behind, as a crash leaves them.
  const script = `const { vectorWriter } = require(${JSON.stringify(path.join(ROOT, 'dist', 'vector-files.js'))});
    const w = vectorWriter(process.argv[1], 'safetensors', 2, 4, 'tokens');
    w.tokens(new Float32Array(8)).then(() => process.kill(process.pid, 'SIGKILL'));`;
  const killed = spawnSync(process.execPath, ['-e', script, out], { encoding: 'utf8', timeout: 240_000 });
  t.is(killed.signal, 'SIGKILL', killed.stderr);
  const left = fs.readdirSync(dir);
  t.is(left.length, 2, `left: ${left.join(', ')}`);
  // A live process's temporary file beside it is its own, kept.
  const live = `.tokens.safetensors.${process.pid}-999.tmp`;
  fs.writeFileSync(path.join(dir, live), 'partial');
  const r = cli(['embed', input(dir), '--model', FIXTURE, '--tokens', '--output', out, '--threads', '1']);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(fs.readdirSync(dir).sort(), [live, 'texts.txt', 'tokens.safetensors'].sort());
});

test.serial('embed --tokens --output x.safetensors interrupted by SIGTERM leaves neither its output nor its side file', async (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.txt');
  fs.writeFileSync(texts, Array.from({ length: 40000 }, (_, i) => `text number ${i} with a few words`).join('\n') + '\n');
  const child = spawn(process.execPath, [CLI, 'embed', texts, '--model', FIXTURE, '--tokens', '--output', path.join(dir, 'tokens.safetensors'), '--threads', '1'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_, signal) => resolve(signal)));
  // The side file and the output's temporary file are made before the first text is embedded.
  const deadline = Date.now() + 60_000;
  while (fs.readdirSync(dir).length < 3) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      return t.fail(`embed ended (${child.exitCode}) or took a minute before its temporary files were seen:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  child.kill('SIGTERM');
  t.is(await done, 'SIGTERM', stderr);
  t.deepEqual(fs.readdirSync(dir), ['texts.txt']);
});
