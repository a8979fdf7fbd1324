// Hugging Face ids: download into the hub cache, resume, offline use and errors, all against a fake hub
// served on 127.0.0.1 (the tests never touch the real network).
import test from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { ColtrastError, Encoder, resolveModelDir, train } from '../lib';
import { looksLikeHubId, repoCacheDir } from '../lib/hub';
import { FIXTURE, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';
import { shardWeights, writeSafetensors } from './helpers/safetensors';

const COMMIT = 'c0ffee0000000000000000000000000000000001';

interface FakeFile {
  data: Buffer;
  lfs: boolean;
}

/** Every file of the fixture folder, plus files coltrast must never request. */
function fixtureFiles(): Map<string, FakeFile> {
  const files = new Map<string, FakeFile>();
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else files.set(path.relative(FIXTURE, full).split(path.sep).join('/'), { data: fs.readFileSync(full), lfs: entry.name.endsWith('.safetensors') });
    }
  };
  walk(FIXTURE);
  files.set('pytorch_model.bin', { data: Buffer.from('pickle, never to be read'), lfs: true });
  files.set('onnx/model.onnx', { data: Buffer.from('onnx'), lfs: true });
  return files;
}

interface Request {
  url: string;
  range?: string;
  authorization?: string;
}

interface HubBehaviour {
  /** Answer every request with this status. */
  status?: number;
  /** Answer Range requests with 200 and the whole file. */
  ignoreRange?: boolean;
  /** Send this many bytes of model.safetensors, then drop the connection. */
  cutWeightsAfter?: number;
  /**
   * Drop it only once this holds (polled every 5 ms, for at most 5 s): a socket closed before the client has
   * taken the bytes sent errors its body stream, and the stream then drops the chunks it still queues.
   */
  cutWhen?: () => boolean;
}

/** A fake hub: repos by id; `options` (which a test may change between calls) sets its failure modes. */
async function fakeHub(repos: Record<string, Map<string, FakeFile>>, options: HubBehaviour = {}) {
  const requests: Request[] = [];
  const gitOid = (data: Buffer) => createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    requests.push({ url: url.pathname, range: req.headers.range, authorization: req.headers.authorization });
    if (options.status) {
      res.writeHead(options.status).end();
      return;
    }
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (api && repos[api[1]]) {
      const siblings = [...repos[api[1]]].map(([name, f]) => ({
        rfilename: name,
        blobId: gitOid(f.data),
        size: f.data.length,
        ...(f.lfs ? { lfs: { sha256: createHash('sha256').update(f.data).digest('hex'), size: f.data.length } } : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: api[1], sha: COMMIT, siblings }));
      return;
    }
    const resolve = /^\/(.+)\/resolve\/([0-9a-f]{40})\/(.+)$/.exec(url.pathname);
    const file = resolve && repos[resolve[1]]?.get(decodeURIComponent(resolve[3]));
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    if (options.cutWeightsAfter !== undefined && url.pathname.endsWith('/model.safetensors')) {
      res.writeHead(200, { 'content-length': file.data.length });
      const cutWhen = options.cutWhen ?? (() => true);
      const deadline = Date.now() + 5000;
      const cut = () => (cutWhen() || Date.now() > deadline ? res.destroy() : setTimeout(cut, 5));
      res.write(file.data.subarray(0, options.cutWeightsAfter), () => setTimeout(cut, 5));
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && !options.ignoreRange) {
      const start = Number(range[1]);
      res.writeHead(206, { 'content-range': `bytes ${start}-${file.data.length - 1}/${file.data.length}` }).end(file.data.subarray(start));
    } else {
      res.writeHead(200, { 'content-length': file.data.length }).end(file.data);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function codeOf(promise: Promise<unknown>): Promise<ColtrastError> {
  const error = await promise.then(
    () => undefined,
    (e) => e,
  );
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${error}`);
  return error;
}

test('recognizes hub ids and paths', (t) => {
  for (const id of ['sentence-transformers/all-MiniLM-L6-v2', 'bert-base-uncased', 'BAAI/bge-small-en-v1.5', 'org/name@v1.0', 'org/name@refs/pr/3']) {
    t.true(looksLikeHubId(id), id);
  }
  for (const notId of ['./model', '/abs/model', 'a/b/c', '../up', 'org/..', '', 'org/name@', '-x', 'with space']) {
    t.false(looksLikeHubId(notId), notId);
  }
});

test('a local folder is returned as an absolute path; bad paths are MODEL_FILES errors', async (t) => {
  t.is(await resolveModelDir(path.relative(process.cwd(), FIXTURE)), FIXTURE);
  const missing = await codeOf(resolveModelDir('./no/such/model'));
  t.is(missing.code, 'MODEL_FILES');
  t.regex(missing.message, /does not exist/);
  const file = await codeOf(resolveModelDir(path.join(FIXTURE, 'config.json')));
  t.is(file.code, 'MODEL_FILES');
  t.regex(file.message, /is a file/);
});

test('downloads only the needed files into the hub cache layout, then never asks again', async (t) => {
  const files = fixtureFiles();
  const hub = await fakeHub({ 'org/tiny-bert': files });
  const cacheDir = tempDir();
  const progress: { file: string; downloaded: number; total?: number }[] = [];
  const dir = await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint, onProgress: (p) => progress.push(p) });
  const repo = repoCacheDir(cacheDir, 'org/tiny-bert');
  t.is(dir, path.join(repo, 'snapshots', COMMIT));
  t.is(fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8'), COMMIT);
  for (const [name, f] of files) {
    const wanted = !name.endsWith('.bin') && !name.startsWith('onnx/');
    t.is(fs.existsSync(path.join(dir, name)), wanted, name);
    if (wanted) t.true(fs.readFileSync(path.join(dir, name)).equals(f.data), name);
  }
  const fetched = hub.requests.map((r) => r.url);
  t.false(fetched.some((u) => u.endsWith('.bin') || u.includes('onnx')), 'pickle and onnx files are never requested');
  t.true(fs.lstatSync(path.join(dir, 'model.safetensors')).isSymbolicLink(), 'snapshot files link to blobs/');
  const weights = progress.filter((p) => p.file === 'model.safetensors');
  t.true(weights.length >= 2);
  t.is(weights[weights.length - 1].downloaded, files.get('model.safetensors')!.data.length);
  t.is(weights[weights.length - 1].total, files.get('model.safetensors')!.data.length);
  t.true(weights.every((p, i) => i === 0 || p.downloaded >= weights[i - 1].downloaded));

  const before = hub.requests.length;
  t.is(await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint }), dir);
  t.is(hub.requests.length, before, 'a cached model makes no request');
  await hub.close();
  t.is(await resolveModelDir('org/tiny-bert', { cacheDir, offline: true }), dir, 'works offline afterwards');
  t.is(await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint }), dir, 'and with the server gone');
});

test('Encoder.load of a hub id embeds exactly like the folder it came from', async (t) => {
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const cacheDir = tempDir();
  const viaHub = await Encoder.load('org/tiny-bert', { cacheDir, endpoint: hub.endpoint, device: 'cpu' });
  const local = await Encoder.load(FIXTURE, { device: 'cpu' });
  const texts = ['hello world', 'the quick brown fox'];
  t.deepEqual((await viaHub.embed(texts)).data, (await local.embed(texts)).data);
  t.is(viaHub.modelDir, path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'snapshots', COMMIT));
  viaHub.dispose();
  local.dispose();
  await hub.close();
});

test('a Dense head (2_Dense/model.safetensors) is fetched with its config, and the model embeds as the folder does', async (t) => {
  // The fixture with a sentence-transformers Dense module between Pooling and Normalize.
  const folder = path.join(tempDir(), 'with-dense');
  fs.cpSync(FIXTURE, folder, { recursive: true });
  const modules = JSON.parse(fs.readFileSync(path.join(folder, 'modules.json'), 'utf8'));
  modules.splice(2, 0, { idx: 2, name: '2', path: '2_Dense', type: 'sentence_transformers.models.Dense' });
  modules.forEach((m: { idx: number; name: string }, i: number) => Object.assign(m, { idx: i, name: String(i) }));
  fs.writeFileSync(path.join(folder, 'modules.json'), JSON.stringify(modules));
  fs.mkdirSync(path.join(folder, '2_Dense'));
  fs.writeFileSync(
    path.join(folder, '2_Dense', 'config.json'),
    JSON.stringify({ in_features: 32, out_features: 5, bias: true, activation_function: 'torch.nn.modules.activation.Tanh' }),
  );
  const weight = Buffer.from(new Float32Array(5 * 32).map((_, i) => Math.sin(i) / 8).buffer);
  const bias = Buffer.from(new Float32Array([0.1, -0.2, 0.3, 0, 0.05]).buffer);
  writeSafetensors(
    path.join(folder, '2_Dense', 'model.safetensors'),
    new Map([
      ['linear.weight', { dtype: 'F32', shape: [5, 32], data: weight }],
      ['linear.bias', { dtype: 'F32', shape: [5], data: bias }],
    ]),
  );
  const files = fixtureFiles();
  for (const name of ['modules.json', '2_Dense/config.json', '2_Dense/model.safetensors']) {
    files.set(name, { data: fs.readFileSync(path.join(folder, name)), lfs: name.endsWith('.safetensors') });
  }
  const hub = await fakeHub({ 'org/with-dense': files });
  const viaHub = await Encoder.load('org/with-dense', { cacheDir: tempDir(), endpoint: hub.endpoint, device: 'cpu' });
  const local = await Encoder.load(folder, { device: 'cpu' });
  const texts = ['hello world', 'the quick brown fox'];
  const a = await viaHub.embed(texts);
  t.deepEqual(a.dims, [2, 5]);
  t.deepEqual(a.data, (await local.embed(texts)).data);
  t.true(hub.requests.some((r) => r.url.endsWith('2_Dense/model.safetensors')));
  viaHub.dispose();
  local.dispose();
  await hub.close();
});

test("a repository in the older sentence-transformers layout (the Transformer's files in 0_Transformer) is fetched with that folder, embeds as the fixture, then loads offline", async (t) => {
  // The fixture as sentence-transformers saved models before its Transformer moved to the top: modules.json names the
  // folder, which holds config.json, the weights (and a pickle, never fetched), the tokenizer and sentence_bert_config.json.
  const moved = ['config.json', 'model.safetensors', 'pytorch_model.bin', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'sentence_bert_config.json'];
  const files = new Map<string, FakeFile>();
  for (const [name, f] of fixtureFiles()) files.set(moved.includes(name) ? `0_Transformer/${name}` : name, f);
  const modules = JSON.parse(files.get('modules.json')!.data.toString('utf8'));
  modules[0].path = '0_Transformer';
  files.set('modules.json', { data: Buffer.from(JSON.stringify(modules)), lfs: false });
  const hub = await fakeHub({ 'org/old-layout': files });
  const cacheDir = tempDir();
  const texts = ['hello world', 'the quick brown fox'];
  const local = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const want = Array.from((await local.embed(texts)).data);
    const viaHub = await Encoder.load('org/old-layout', { cacheDir, endpoint: hub.endpoint, device: 'cpu' });
    t.deepEqual(Array.from((await viaHub.embed(texts)).data), want);
    viaHub.dispose();
    const fetched = hub.requests.map((r) => r.url).filter((u) => u.includes('/resolve/'));
    for (const name of ['modules.json', '0_Transformer/config.json', '0_Transformer/model.safetensors', '0_Transformer/tokenizer.json', '0_Transformer/sentence_bert_config.json', '1_Pooling/config.json']) {
      t.is(fetched.filter((u) => u.endsWith(`/${name}`)).length, 1, name);
    }
    t.false(fetched.some((u) => u.endsWith('.bin') || u.includes('onnx')), 'pickle and onnx files are never requested');
    const before = hub.requests.length;
    const offline = await Encoder.load('org/old-layout', { cacheDir, offline: true, device: 'cpu' });
    t.deepEqual(Array.from((await offline.embed(texts)).data), want);
    offline.dispose();
    t.is(hub.requests.length, before, 'the cached snapshot is complete');
  } finally {
    local.dispose();
  }
  // Only a pickle in the Transformer's folder: refused by name, with nothing but modules.json fetched.
  const pickled = new Map(files);
  pickled.delete('0_Transformer/model.safetensors');
  const refusing = await fakeHub({ 'org/pickled-old': pickled });
  const error = await codeOf(resolveModelDir('org/pickled-old', { cacheDir: tempDir(), endpoint: refusing.endpoint }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /org\/pickled-old@main has no 0_Transformer\/model\.safetensors \(only 0_Transformer\/pytorch_model\.bin: pickle files, which coltrast never loads\)/);
  t.deepEqual(refusing.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.split('/').pop()), ['modules.json']);
  await refusing.close();
  await hub.close();
});

test("a repository holding only a LoRA adapter (sentence-transformers' save of a model with one) loads on its base from the hub, then offline from the cache", async (t) => {
  const trained = path.join(tempDir(), 'trained');
  await train({ model: FIXTURE, data: wordDataset(8), output: trained, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-2, lora: { rank: 2 } });
  // The layout sentence-transformers writes: modules, tokenizer and the adapter, no config.json or weights; its base
  // named by hub id.
  const folder = path.join(tempDir(), 'adapter-only');
  fs.cpSync(trained, folder, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) fs.rmSync(path.join(folder, f));
  for (const f of fs.readdirSync(path.join(folder, 'adapter'))) fs.renameSync(path.join(folder, 'adapter', f), path.join(folder, f));
  fs.rmdirSync(path.join(folder, 'adapter'));
  const adapterConfig = path.join(folder, 'adapter_config.json');
  fs.writeFileSync(adapterConfig, JSON.stringify({ ...JSON.parse(fs.readFileSync(adapterConfig, 'utf8')), base_model_name_or_path: 'org/tiny-bert' }));
  const files = new Map<string, FakeFile>();
  for (const name of ['modules.json', 'tokenizer.json', 'tokenizer_config.json', 'sentence_bert_config.json', 'adapter_config.json', 'adapter_model.safetensors']) {
    if (fs.existsSync(path.join(folder, name))) files.set(name, { data: fs.readFileSync(path.join(folder, name)), lfs: name.endsWith('.safetensors') });
  }
  for (const name of fs.readdirSync(folder).filter((f) => /^\d+_/.test(f))) {
    for (const inner of fs.readdirSync(path.join(folder, name))) files.set(`${name}/${inner}`, { data: fs.readFileSync(path.join(folder, name, inner)), lfs: false });
  }
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles(), 'org/adapter': files });
  const cacheDir = tempDir();
  const texts = ['hello world', 'the quick brown fox'];
  const expected = await Encoder.load(trained, { device: 'cpu' });
  try {
    const want = (await expected.embed(texts)).data;
    const viaHub = await Encoder.load('org/adapter', { cacheDir, endpoint: hub.endpoint, device: 'cpu' });
    t.like(viaHub.lora, { rank: 2, baseModel: 'org/tiny-bert' });
    t.true(maxAbs(want, (await viaHub.embed(texts)).data) < 1e-6);
    viaHub.dispose();
    const offline = await Encoder.load('org/adapter', { cacheDir, offline: true, device: 'cpu' });
    t.true(maxAbs(want, (await offline.embed(texts)).data) < 1e-6);
    offline.dispose();
  } finally {
    expected.dispose();
    await hub.close();
  }
  // An adapter saved as a pickle only is refused by name, before any download.
  const pickled = new Map(files);
  pickled.delete('adapter_model.safetensors');
  pickled.set('adapter_model.bin', { data: Buffer.from('pickle'), lfs: true });
  const refusing = await fakeHub({ 'org/pickled': pickled });
  const error = await codeOf(Encoder.load('org/pickled', { cacheDir: tempDir(), endpoint: refusing.endpoint, device: 'cpu' }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /holds a LoRA adapter without adapter_model\.safetensors \(only adapter_model\.bin, a pickle file/);
  t.false(refusing.requests.some((r) => r.url.includes('/resolve/')));
  await refusing.close();
});

const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

test('resumes a partial download with a Range request', async (t) => {
  const files = fixtureFiles();
  const hub = await fakeHub({ 'org/tiny-bert': files });
  const cacheDir = tempDir();
  const weights = files.get('model.safetensors')!.data;
  const blob = path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'blobs', createHash('sha256').update(weights).digest('hex'));
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.writeFileSync(`${blob}.incomplete`, weights.subarray(0, 1000));
  const dir = await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint });
  const get = hub.requests.find((r) => r.url.endsWith('/model.safetensors'));
  t.is(get?.range, 'bytes=1000-');
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(weights));
  t.false(fs.existsSync(`${blob}.incomplete`));
  await hub.close();
});

test('a server that ignores Range still yields the exact file', async (t) => {
  const files = fixtureFiles();
  const hub = await fakeHub({ 'org/tiny-bert': files }, { ignoreRange: true });
  const cacheDir = tempDir();
  const weights = files.get('model.safetensors')!.data;
  const blob = path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'blobs', createHash('sha256').update(weights).digest('hex'));
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.writeFileSync(`${blob}.incomplete`, weights.subarray(0, 1000));
  const dir = await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint });
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(weights));
  await hub.close();
});

test('offline, or with the hub unreachable, and nothing cached: a NETWORK error naming the folder option', async (t) => {
  const offline = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir: tempDir(), offline: true }));
  t.is(offline.code, 'NETWORK');
  t.regex(offline.message, /not in the cache/);
  t.regex(offline.message, /local folder/);
  const hub = await fakeHub({});
  const endpoint = hub.endpoint;
  await hub.close();
  const down = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir: tempDir(), endpoint }));
  t.is(down.code, 'NETWORK');
  t.regex(down.message, /cannot reach/);
  t.regex(down.message, /local folder/);
});

test('a repository with only pickle weights is refused without downloading them', async (t) => {
  const files = fixtureFiles();
  files.delete('model.safetensors');
  const hub = await fakeHub({ 'org/pickled': files });
  const e = await codeOf(resolveModelDir('org/pickled', { cacheDir: tempDir(), endpoint: hub.endpoint }));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /safetensors only/);
  t.regex(e.message, /pytorch_model\.bin/);
  t.false(hub.requests.some((r) => r.url.includes('/resolve/')));
  await hub.close();
});

test('an unknown id is MODEL_FILES; a refused one is NETWORK naming HF_TOKEN; the token is sent', async (t) => {
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const unknown = await codeOf(resolveModelDir('org/nope', { cacheDir: tempDir(), endpoint: hub.endpoint }));
  t.is(unknown.code, 'MODEL_FILES');
  t.regex(unknown.message, /no model org\/nope/);
  await resolveModelDir('org/tiny-bert', { cacheDir: tempDir(), endpoint: hub.endpoint, token: 'hf_secret' });
  t.true(hub.requests.slice(1).every((r) => r.authorization === 'Bearer hf_secret'));
  await hub.close();
  const gated = await fakeHub({}, { status: 401 });
  const refused = await codeOf(resolveModelDir('org/gated', { cacheDir: tempDir(), endpoint: gated.endpoint }));
  t.is(refused.code, 'NETWORK');
  t.regex(refused.message, /HF_TOKEN/);
  await gated.close();
});

test('a revision picks its own ref; a commit id is looked up directly', async (t) => {
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const cacheDir = tempDir();
  const dir = await resolveModelDir('org/tiny-bert@v1', { cacheDir, endpoint: hub.endpoint });
  t.true(hub.requests[0].url.endsWith('/revision/v1'));
  t.is(fs.readFileSync(path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'refs', 'v1'), 'utf8'), COMMIT);
  await hub.close();
  t.is(await resolveModelDir('org/tiny-bert', { cacheDir, revision: COMMIT, offline: true }), dir);
});

test.serial('HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE are honoured', async (t) => {
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const home = tempDir();
  const saved = { ...process.env };
  Object.assign(process.env, { HF_ENDPOINT: hub.endpoint, HF_HOME: home, HF_TOKEN: 'hf_env' });
  delete process.env.HF_HUB_CACHE;
  try {
    const dir = await resolveModelDir('org/tiny-bert');
    t.is(dir, path.join(repoCacheDir(path.join(home, 'hub'), 'org/tiny-bert'), 'snapshots', COMMIT));
    t.true(hub.requests.every((r) => r.authorization === 'Bearer hf_env'));
    process.env.HF_HUB_OFFLINE = '1';
    t.is((await codeOf(resolveModelDir('org/other'))).code, 'NETWORK');
  } finally {
    process.env = saved;
    await hub.close();
  }
});

/** blobs/<sha256>.incomplete of the fixture's weights in `cacheDir`, the name a partial download has. */
function partialWeights(cacheDir: string, weights: Buffer): string {
  const blob = path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'blobs', createHash('sha256').update(weights).digest('hex'));
  return `${blob}.incomplete`;
}

test('a connection lost mid-file is a NETWORK error that keeps the bytes; the next call resumes', async (t) => {
  const files = fixtureFiles();
  const weights = files.get('model.safetensors')!.data;
  const cacheDir = tempDir();
  const partial = partialWeights(cacheDir, weights);
  // The cut waits until the client has written what was sent (a busy test process may not have read it yet).
  const behaviour: HubBehaviour = { cutWeightsAfter: 1500, cutWhen: () => fs.existsSync(partial) && fs.statSync(partial).size >= 1500 };
  const hub = await fakeHub({ 'org/tiny-bert': files }, behaviour);
  const broken = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint }));
  t.is(broken.code, 'NETWORK');
  t.regex(broken.message, /run again to resume/);
  t.true(fs.readFileSync(partial).equals(weights.subarray(0, 1500)));
  t.false(fs.existsSync(path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'refs', 'main')), 'no ref for an incomplete download');

  delete behaviour.cutWeightsAfter;
  delete behaviour.cutWhen;
  hub.requests.length = 0;
  const dir = await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint });
  t.is(hub.requests.find((r) => r.url.endsWith('/model.safetensors'))?.range, 'bytes=1500-');
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(weights));
  await hub.close();
});

test('a partial file that is already whole is finished without requesting it again', async (t) => {
  const files = fixtureFiles();
  const weights = files.get('model.safetensors')!.data;
  const hub = await fakeHub({ 'org/tiny-bert': files });
  const cacheDir = tempDir();
  const partial = partialWeights(cacheDir, weights);
  fs.mkdirSync(path.dirname(partial), { recursive: true });
  fs.writeFileSync(partial, weights);
  const dir = await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint });
  t.false(hub.requests.some((r) => r.url.endsWith('/model.safetensors')));
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(weights));
  await hub.close();
});

test('a corrupt partial file fails the sha256 check and is removed', async (t) => {
  const files = fixtureFiles();
  const weights = files.get('model.safetensors')!.data;
  const hub = await fakeHub({ 'org/tiny-bert': files });
  const cacheDir = tempDir();
  const partial = partialWeights(cacheDir, weights);
  fs.mkdirSync(path.dirname(partial), { recursive: true });
  fs.writeFileSync(partial, Buffer.alloc(1000, 7));
  const e = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint }));
  t.is(e.code, 'NETWORK');
  t.regex(e.message, /sha256/);
  t.false(fs.existsSync(partial));
  t.true(fs.readFileSync(path.join(await resolveModelDir('org/tiny-bert', { cacheDir, endpoint: hub.endpoint }), 'model.safetensors')).equals(weights));
  await hub.close();
});

test('repositories without config.json or tokenizer.json are refused before any download', async (t) => {
  const without = (name: string) => {
    const files = fixtureFiles();
    files.delete(name);
    return files;
  };
  const hub = await fakeHub({ 'org/noconfig': without('config.json'), 'org/notok': without('tokenizer.json') });
  const noConfig = await codeOf(resolveModelDir('org/noconfig', { cacheDir: tempDir(), endpoint: hub.endpoint }));
  t.is(noConfig.code, 'MODEL_FILES');
  t.regex(noConfig.message, /config\.json/);
  const noTokenizer = await codeOf(resolveModelDir('org/notok', { cacheDir: tempDir(), endpoint: hub.endpoint }));
  t.is(noTokenizer.code, 'MODEL_FILES');
  t.regex(noTokenizer.message, /tokenizer\.json/);
  t.false(hub.requests.some((r) => r.url.includes('/resolve/')));
  await hub.close();
});

test('a repository with sharded weights: the index and every shard are fetched, and the snapshot loads and embeds as the whole file', async (t) => {
  const dir = fixtureCopy((d) => shardWeights(d, 2));
  const files = fixtureFiles();
  files.delete('model.safetensors');
  for (const name of ['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    files.set(name, { data: fs.readFileSync(path.join(dir, name)), lfs: name.endsWith('.safetensors') });
  }
  const hub = await fakeHub({ 'org/sharded': files });
  const cacheDir = tempDir();
  const snapshot = await resolveModelDir('org/sharded', { cacheDir, endpoint: hub.endpoint });
  t.true(['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'].every((f) => fs.existsSync(path.join(snapshot, f))));
  const sharded = await Encoder.load(snapshot, { device: 'cpu' });
  const whole = await Encoder.load(FIXTURE, { device: 'cpu' });
  t.deepEqual(Array.from((await sharded.embed(['a query'])).data), Array.from((await whole.embed(['a query'])).data));
  sharded.dispose();
  whole.dispose();
  // Cached now: no request the second time.
  hub.requests.length = 0;
  t.is(await resolveModelDir('org/sharded', { cacheDir, endpoint: hub.endpoint, offline: true }), snapshot);
  t.is(hub.requests.length, 0);
  await hub.close();
});

test('options.fetch carries every request; unknown options are refused', async (t) => {
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const seen: string[] = [];
  const viaProxy: typeof fetch = (input, init) => {
    seen.push(String(input));
    return fetch(input, init);
  };
  await resolveModelDir('org/tiny-bert', { cacheDir: tempDir(), endpoint: hub.endpoint, fetch: viaProxy });
  t.true(seen.length > 0);
  t.deepEqual(seen.map((u) => new URL(u).pathname), hub.requests.map((r) => r.url));
  const unknown = await codeOf(resolveModelDir('org/tiny-bert', { cacheDirectory: '/tmp' } as never));
  t.is(unknown.code, 'INVALID_ARGUMENT');
  await hub.close();
});

// Every command shows a bar for the weights it downloads (here `coltrast index`, whose model train(), evaluate() and
// the others load the same way), and none once they are cached. A child process, spawned without blocking this one,
// which serves the fake hub.
test('the command line shows the download of a hub model\'s weights, and nothing once cached', async (t) => {
  const { spawn } = await import('node:child_process');
  const hub = await fakeHub({ 'org/tiny-bert': fixtureFiles() });
  const home = tempDir();
  const docs = path.join(home, 'docs.jsonl');
  fs.writeFileSync(docs, '{"id": "a", "text": "first document"}\n{"id": "b", "text": "second document"}\n');
  const run = (output: string) =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const cli = path.resolve(__dirname, '..', 'lib', 'cli.ts');
      const child = spawn(process.execPath, ['--import', 'tsx', cli, 'index', '--data', docs, '--model', 'org/tiny-bert', '--output', output, '--device', 'cpu', '--json'], {
        env: { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HOME: home, HF_HUB_CACHE: '', HF_HUB_OFFLINE: '' },
      });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('close', (status) => resolve({ status, stderr }));
    });
  try {
    const first = await run(path.join(home, 'one.index'));
    t.is(first.status, 0, first.stderr);
    t.regex(first.stderr, /^download model\.safetensors 100% [\d.]+\/[\d.]+ MB \| [\d.]+ MB\/s \| ETA 0\.0s$/m);
    t.notRegex(first.stderr, /download config\.json/, 'small files get no bar');
    const again = await run(path.join(home, 'two.index'));
    t.is(again.status, 0, again.stderr);
    t.notRegex(again.stderr, /download/);
  } finally {
    await hub.close();
  }
});
