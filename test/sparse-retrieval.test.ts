// A sparse (SPLADE) encoder through the command line and the server: `coltrast embed` (JSONL and compressed sparse
// rows in .safetensors), `coltrast index` / `search` (an Index of sparse vectors, found by the model's folder or
// --sparse), and `serve`'s /embed_sparse (text-embeddings-inference's) and /search, each against the library's own
// SparseEncoder.encode and Index.search on the same texts.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, SparseEncoder, evaluate, serve, type Server } from '../lib';
import { readSafetensors } from './helpers/safetensors';
import { FIXTURE, tempDir, wordDataset } from './helpers/fixture';
import { startServe } from './helpers/serve-cli';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const SPLADE = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert');
const PLAIN = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert-plain');

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000 });
}

const pairs = wordDataset(24, 31);
const texts = pairs.map((p) => p.positive);

let model: SparseEncoder;
test.before(async () => {
  model = await SparseEncoder.load(SPLADE, { device: 'cpu' });
});
test.after.always(() => model?.dispose());

test('coltrast embed with a SparseEncoder writes each text\'s non-zero entries: JSONL, and .safetensors compressed sparse rows', async (t) => {
  const dir = tempDir();
  const input = path.join(dir, 'texts.txt');
  fs.writeFileSync(input, texts.join('\n') + '\n');
  const want = await model.encode(texts, { task: 'query' });
  let run = cli(['embed', input, '--model', SPLADE, '--task', 'query', '--device', 'cpu', '--output', path.join(dir, 'v.jsonl')]);
  t.is(run.status, 0, run.stderr);
  const lines = fs.readFileSync(path.join(dir, 'v.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.is(lines.length, texts.length);
  lines.forEach((line, i) => {
    t.is(line.index, i);
    t.deepEqual(line.indices, Array.from(want[i].indices));
    line.values.forEach((v: number, k: number) => t.true(Math.abs(v - want[i].values[k]) <= 1e-6));
  });
  run = cli(['embed', input, '--model', SPLADE, '--task', 'query', '--device', 'cpu', '--max-active-dims', '4', '--output', path.join(dir, 'v.safetensors')]);
  t.is(run.status, 0, run.stderr);
  const file = readSafetensors(path.join(dir, 'v.safetensors'));
  t.is(file.metadata?.dimension, String(model.dimension));
  const int64s = (name: string) => Array.from(new BigInt64Array(Uint8Array.from(file.tensors.get(name)!.data).buffer), Number);
  const offsets = int64s('offsets');
  const indices = int64s('indices');
  const values = new Float32Array(Uint8Array.from(file.tensors.get('values')!.data).buffer);
  t.deepEqual(['values', 'indices', 'offsets'].map((name) => file.tensors.get(name)!.dtype), ['F32', 'I64', 'I64']);
  const capped = await model.encode(texts, { task: 'query', maxActiveDims: 4 });
  t.is(offsets.length, texts.length + 1);
  capped.forEach((v, i) => {
    t.deepEqual(indices.slice(offsets[i], offsets[i + 1]), Array.from(v.indices), `text ${i}`);
    t.deepEqual(Array.from(values.subarray(offsets[i], offsets[i + 1])), Array.from(v.values));
  });
  // Python reads it as a scipy CSR matrix would: offsets rise to the entries' count.
  t.is(offsets[texts.length], values.length);
  // What a sparse encoder cannot write, and a dense model's flag, named.
  run = cli(['embed', input, '--model', SPLADE, '--device', 'cpu', '--output', path.join(dir, 'v.npy')]);
  t.is(run.status, 2);
  t.regex(run.stderr, /\.npy file holds dense rows.*v\.safetensors/);
  run = cli(['embed', input, '--model', SPLADE, '--device', 'cpu', '--tokens']);
  t.regex(run.stderr, /sparse \(SPLADE\) encoder, whose vectors are as wide as its vocabulary: --tokens is for a dense embedding model \(--max-active-dims/);
  run = cli(['embed', input, '--model', path.join(ROOT, 'test', 'fixtures', 'tiny-bert'), '--device', 'cpu', '--max-active-dims', '3']);
  t.regex(run.stderr, /--max-active-dims is for a sparse encoder/);
  t.false(fs.readdirSync(dir).some((f) => f.endsWith('.tmp')), 'no temporary file left');
});

test('coltrast index and search with a SparseEncoder: the index holds its sparse vectors, and search ranks as Index.search does', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'docs.jsonl');
  fs.writeFileSync(data, texts.map((text, i) => JSON.stringify({ id: `d${i}`, text, metadata: { group: i % 3 } })).join('\n') + '\n');
  const out = path.join(dir, 'index');
  let run = cli(['index', '--data', data, '--model', SPLADE, '--output', out, '--device', 'cpu', '--json']);
  t.is(run.status, 0, run.stderr);
  t.true(JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')).sparse);
  const queries = pairs.slice(0, 3).map((p) => p.query);
  const index = await Index.load(out, model);
  for (const [flags, options] of [
    [[], {}],
    [['--mode', 'hybrid'], { mode: 'hybrid' as const }],
    [['--filter', '{"metadata.group": 1}'], { filter: { 'metadata.group': 1 } }],
  ] as const) {
    run = cli(['search', '--index', out, '--k', '4', '--device', 'cpu', '--json', ...flags, ...queries]);
    t.is(run.status, 0, run.stderr);
    const got = JSON.parse(run.stdout);
    const want = await index.search(queries, { k: 4, ...options });
    t.deepEqual(got.map((r: { hits: { id: string }[] }) => r.hits.map((h) => h.id)), want.map((hits) => hits.map((h) => h.id)), JSON.stringify(flags));
  }
  // --update embeds the new documents with the index's sparse model (index.json says so).
  const more = path.join(dir, 'more.jsonl');
  fs.writeFileSync(more, JSON.stringify({ id: 'new', text: queries[0] }) + '\n');
  run = cli(['index', '--data', more, '--output', out, '--update', '--device', 'cpu', '--json']);
  t.is(run.status, 0, run.stderr);
  const updated = await Index.load(out, model);
  t.is(updated.size, texts.length + 1);
  t.deepEqual((await updated.search([queries[0]], { k: 1, filter: { id: 'new' } }))[0].map((h) => h.id), ['new']);
  // A plain *ForMaskedLM folder is a sparse encoder with --sparse; dense flags are refused for one.
  const plain = path.join(dir, 'plain-index');
  run = cli(['index', '--data', data, '--model', PLAIN, '--sparse', '--output', plain, '--device', 'cpu', '--json']);
  t.is(run.status, 0, run.stderr);
  t.true(JSON.parse(fs.readFileSync(path.join(plain, 'index.json'), 'utf8')).sparse);
  run = cli(['search', '--index', plain, '--k', '2', '--device', 'cpu', '--mode', 'sparse', queries[0]]);
  t.is(run.status, 0, run.stderr);
  run = cli(['index', '--data', data, '--model', SPLADE, '--output', path.join(dir, 'x'), '--device', 'cpu', '--storage', 'int8']);
  t.is(run.status, 2);
  t.regex(run.stderr, /--storage must be absent with a SparseEncoder/);
  run = cli(['index', '--data', data, '--model', SPLADE, '--output', path.join(dir, 'x'), '--device', 'cpu', '--truncate-dim', '8']);
  t.regex(run.stderr, /sparse \(SPLADE\) encoder, whose vectors are as wide as its vocabulary: --truncate-dim is for a dense embedding model$/m);
  // coltrast serve refuses them in the same words, all named at once, before it listens.
  run = cli(['serve', '--model', SPLADE, '--device', 'cpu', '--port', '0', '--adapter', dir, '--truncate-dim', '8']);
  t.is(run.status, 2);
  t.regex(run.stderr, /sparse \(SPLADE\) encoder, whose vectors are as wide as its vocabulary: --adapter, --truncate-dim are for a dense embedding model$/m);
});

test('serve with a SparseEncoder: /embed_sparse answers as text-embeddings-inference does, /search over its index, dense routes say where to go', async (t) => {
  const docs = texts.map((text, i) => ({ id: `d${i}`, text }));
  const index = await Index.build(model, docs);
  let server: Server | undefined;
  try {
    server = await serve({ sparseEncoder: model, index, port: 0, maxInputs: 8 });
    const post = async (route: string, body: unknown) => {
      const res = await fetch(`${server!.url}${route}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
      return { status: res.status, json: (await res.json()) as any };
    };
    const some = texts.slice(0, 5);
    let r = await post('/embed_sparse', { inputs: some, task: 'document', truncate: true });
    t.is(r.status, 200);
    const want = await model.encode(some, { task: 'document' });
    r.json.forEach((row: { index: number; value: number }[], i: number) => {
      t.deepEqual(row.map((e) => e.index), Array.from(want[i].indices));
      row.forEach((e, k) => t.true(Math.abs(e.value - want[i].values[k]) <= 1e-6));
    });
    r = await post('/embed_sparse', { inputs: 'one text' });
    t.is(r.json.length, 1);
    r = await post('/embed_sparse', { inputs: some, prompt_name: 'nope' });
    t.is(r.status, 400);
    t.regex(r.json.error, /prompt_name/);
    const queries = pairs.slice(0, 3).map((p) => p.query);
    r = await post('/search', { query: queries, k: 3, mode: 'sparse' });
    t.is(r.status, 200);
    t.deepEqual(r.json.results.map((x: { hits: { id: string }[] }) => x.hits.map((h) => h.id)), (await index.search(queries, { k: 3 })).map((hits) => hits.map((h) => h.id)));
    r = await post('/embed', { inputs: 'x' });
    t.is(r.status, 404);
    t.regex(r.json.error, /\/embed_sparse/);
    r = await post('/search', { query: 'x', mmr_lambda: 0.5 });
    t.is(r.status, 400);
    // /tokenize and /decode use the sparse encoder's tokenizer, with its query prompt for task query.
    r = await post('/tokenize', { inputs: 'magnet', task: 'query' });
    t.is(r.status, 200);
    const tokens: { id: number; text: string; special: boolean }[] = r.json[0];
    t.is(tokens.filter((x) => !x.special).map((x) => x.text.replace(/^##/, '')).join(''), 'query:magnet');
    r = await post('/decode', { ids: tokens.map((x) => x.id) });
    t.is(r.json[0].replace(/\s/g, ''), 'query:magnet');
    const info = (await (await fetch(`${server.url}/info`)).json()) as { sparse: { dimension: number }; index: { sparse: boolean } };
    t.is(info.sparse.dimension, model.dimension);
    t.true(info.index.sparse);
  } finally {
    await server?.close();
  }
  // An index of sparse vectors needs the sparse encoder; a dense server has no /embed_sparse.
  const dense = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    await t.throwsAsync(() => serve({ encoder: dense, index, port: 0 }), { message: /options\.index holds a sparse encoder's vectors: it needs options\.sparseEncoder/ });
    await t.throwsAsync(() => serve({ encoder: model as never, port: 0 }), { message: /options\.encoder must be an Encoder \(a SparseEncoder is options\.sparseEncoder\)/ });
    const denseServer = await serve({ encoder: dense, port: 0 });
    const res = await fetch(`${denseServer.url}/embed_sparse`, { method: 'POST', body: JSON.stringify({ inputs: 'x' }), headers: { 'Content-Type': 'application/json' } });
    t.is(res.status, 404);
    t.regex(((await res.json()) as { error: string }).error, /needs a sparse \(SPLADE\) encoder/);
    await denseServer.close();
  } finally {
    dense.dispose();
  }
});

test('coltrast index --sparse-model keeps a second model: search ranks as Index.search does in each mode, --update and serve find it in index.json', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'docs.jsonl');
  fs.writeFileSync(data, texts.map((text, i) => JSON.stringify({ id: `d${i}`, text })).join('\n') + '\n');
  const out = path.join(dir, 'index');
  let run = cli(['index', '--data', data, '--model', FIXTURE, '--sparse-model', SPLADE, '--output', out, '--device', 'cpu', '--json']);
  t.is(run.status, 0, run.stderr);
  t.is(JSON.parse(run.stdout).sparseModel, SPLADE);
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8'));
  t.is(manifest.sparseEncoder.source, SPLADE);
  t.is(manifest.sparse, undefined);
  const dense = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const index = await Index.load(out, dense, { sparseEncoder: model });
    const queries = pairs.slice(0, 3).map((p) => p.query);
    for (const mode of ['dense', 'sparse', 'hybrid', 'bm25'] as const) {
      run = cli(['search', '--index', out, '--k', '4', '--device', 'cpu', '--json', '--mode', mode, ...queries]);
      t.is(run.status, 0, run.stderr);
      const want = await index.search(queries, { k: 4, mode });
      t.deepEqual(JSON.parse(run.stdout).map((r: { hits: { id: string }[] }) => r.hits.map((h) => h.id)), want.map((hits) => hits.map((h) => h.id)), mode);
    }
    // --update embeds the new documents with both models.
    const more = path.join(dir, 'more.jsonl');
    fs.writeFileSync(more, JSON.stringify({ id: 'new', text: queries[0] }) + '\n');
    run = cli(['index', '--data', more, '--output', out, '--update', '--device', 'cpu', '--json']);
    t.is(run.status, 0, run.stderr);
    const updated = await Index.load(out, dense, { sparseEncoder: model });
    t.deepEqual((await updated.search([queries[0]], { k: 1, mode: 'sparse', filter: { id: 'new' } }))[0].map((h) => h.id), ['new']);
    // serve loads the index's second model: /search in its modes, /embed_sparse with it.
    const server = await startServe(['--index', out, '--port', '0', '--device', 'cpu'], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
    const url = server.url;
    try {
      const post = async (route: string, body: unknown) => (await fetch(`${url}${route}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } })).json() as Promise<any>;
      for (const mode of ['sparse', 'hybrid'] as const) {
        const got = await post('/search', { query: queries, k: 4, mode });
        t.deepEqual(got.results.map((x: { hits: { id: string }[] }) => x.hits.map((h) => h.id)), (await updated.search(queries, { k: 4, mode })).map((hits) => hits.map((h) => h.id)), `serve ${mode}`);
      }
      const sparse = await post('/embed_sparse', { inputs: [texts[0]] });
      t.deepEqual(sparse[0].map((e: { index: number }) => e.index), Array.from((await model.encode([texts[0]]))[0].indices));
      const info = (await (await fetch(`${url}/info`)).json()) as { index: { sparse: boolean; sparse_model: string } };
      t.false(info.index.sparse);
      t.is(info.index.sparse_model, SPLADE);
    } finally {
      await server.stop();
    }
  } finally {
    dense.dispose();
  }
  // Beside a sparse encoder (its own vectors are the sparse ones), the flag is refused by name.
  run = cli(['index', '--data', data, '--model', SPLADE, '--sparse-model', SPLADE, '--output', path.join(dir, 'x'), '--device', 'cpu']);
  t.is(run.status, 2);
  t.regex(run.stderr, /--sparse-model adds a sparse encoder's vectors beside an embedding model's, and .* is a sparse encoder itself/);
});

test("an index records its second, sparse model's int8 running: coltrast search embeds the queries with it as the documents were, unless told otherwise", async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'docs.jsonl');
  fs.writeFileSync(data, texts.map((text, i) => JSON.stringify({ id: `d${i}`, text })).join('\n') + '\n');
  const out = path.join(dir, 'index');
  let run = cli(['index', '--data', data, '--model', FIXTURE, '--sparse-model', SPLADE, '--output', out, '--device', 'cpu', '--quantize', 'int8', '--json']);
  t.is(run.status, 0, run.stderr);
  const manifestFile = path.join(out, 'index.json');
  const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  t.is(manifest.sparseEncoder.quantize, 'int8');
  t.is(manifest.sparseEncoder.dtype, undefined);
  t.like(Index.modelOptions(out), { quantize: 'int8', sparseSource: SPLADE, sparseQuantize: 'int8' });
  const dense = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  const int8 = await SparseEncoder.load(SPLADE, { device: 'cpu', quantize: 'int8' });
  try {
    const queries = pairs.slice(0, 2).map((p) => p.query);
    const scores = async (sparse: SparseEncoder) => (await (await Index.load(out, dense, { sparseEncoder: sparse })).search(queries, { k: 4, mode: 'sparse' })).map((hits) => hits.map((h) => h.score));
    const want = await scores(int8);
    t.notDeepEqual(await scores(model), want, 'the float32 and int8 sparse models give the queries other scores');
    const searched = (extra: string[]) => {
      const r = cli(['search', '--index', out, '--k', '4', '--device', 'cpu', '--json', '--mode', 'sparse', ...extra, ...queries]);
      t.is(r.status, 0, r.stderr);
      return JSON.parse(r.stdout).map((x: { hits: { score: number }[] }) => x.hits.map((h) => h.score)) as number[][];
    };
    const close = (got: number[][], expected: number[][], what: string) =>
      got.forEach((row, q) => row.forEach((s, i) => t.true(Math.abs(s - expected[q][i]) <= 1e-5 * Math.max(1, Math.abs(expected[q][i])), `${what}: ${s} vs ${expected[q][i]}`)));
    close(searched([]), want, 'as built');
    // --quantize none loads the float32 sparse model (and dense model) instead.
    close(searched(['--quantize', 'none']), await scores(model), '--quantize none');
  } finally {
    dense.dispose();
    int8.dispose();
  }
  // A sparseEncoder.quantize or dtype that no model runs with is refused as damaged.
  for (const [key, value, said] of [['quantize', 'int4', /index\.json says sparseEncoder\.quantize "int4", not "int8" \(absent: none\)/], ['dtype', 'float64', /sparseEncoder\.dtype "float64", not "bfloat16" or "float16"/]] as const) {
    fs.writeFileSync(manifestFile, JSON.stringify({ ...manifest, sparseEncoder: { ...manifest.sparseEncoder, [key]: value } }));
    run = cli(['search', '--index', out, '--device', 'cpu', 'x']);
    t.is(run.status, 2);
    t.regex(run.stderr, said);
  }
});

test('coltrast eval --sparse-model fuses a sparse encoder\'s ranking with the dense model\'s, as evaluate() does', async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'corpus.jsonl'), texts.map((text, i) => JSON.stringify({ _id: `d${i}`, title: '', text })).join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), pairs.map((p, i) => JSON.stringify({ _id: `q${i}`, text: p.query })).join('\n') + '\n');
  fs.mkdirSync(path.join(dir, 'qrels'));
  fs.writeFileSync(path.join(dir, 'qrels', 'test.tsv'), 'query-id\tcorpus-id\tscore\n' + pairs.map((_, i) => `q${i}\td${i}\t1`).join('\n') + '\n');
  const run = cli(['eval', '--data', dir, '--model', FIXTURE, '--sparse-model', SPLADE, '--device', 'cpu', '--k', '1,5,10', '--json']);
  t.is(run.status, 0, run.stderr);
  const [got] = JSON.parse(run.stdout);
  t.is(got.mode, 'hybrid');
  t.regex(got.name, /^hybrid:tiny-bert\+bert$/);
  const want = await evaluate({ data: dir, model: FIXTURE, sparseModel: model, device: 'cpu', k: [1, 5, 10] });
  t.deepEqual(got.metrics, want.metrics);
  const bad = cli(['eval', '--data', dir, '--mode', 'bm25', '--sparse-model', SPLADE, '--device', 'cpu']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--sparse-model must be absent with mode 'bm25'/);
});

test('an inference-free SPLADE through the command line: coltrast embed --task query uses its static query weights, index and search its two routes', async (t) => {
  const ROUTER = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'router');
  const router = await SparseEncoder.load(ROUTER, { device: 'cpu' });
  try {
    const dir = tempDir();
    const input = path.join(dir, 'texts.txt');
    fs.writeFileSync(input, texts.slice(0, 4).join('\n') + '\n');
    let run = cli(['embed', input, '--model', ROUTER, '--task', 'query', '--device', 'cpu']);
    t.is(run.status, 0, run.stderr);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l));
    t.deepEqual(lines.map((l) => l.indices), (await router.encode(texts.slice(0, 4), { task: 'query' })).map((v) => Array.from(v.indices)));
    const data = path.join(dir, 'docs.jsonl');
    fs.writeFileSync(data, texts.map((text, i) => JSON.stringify({ id: `d${i}`, text })).join('\n') + '\n');
    const out = path.join(dir, 'index');
    run = cli(['index', '--data', data, '--model', ROUTER, '--output', out, '--device', 'cpu', '--json']);
    t.is(run.status, 0, run.stderr);
    const queries = pairs.slice(0, 3).map((p) => p.query);
    run = cli(['search', '--index', out, '--k', '3', '--device', 'cpu', '--json', ...queries]);
    t.is(run.status, 0, run.stderr);
    const want = await (await Index.load(out, router)).search(queries, { k: 3 });
    t.deepEqual(JSON.parse(run.stdout).map((r: { hits: { id: string }[] }) => r.hits.map((h) => h.id)), want.map((hits) => hits.map((h) => h.id)));
  } finally {
    router.dispose();
  }
});
