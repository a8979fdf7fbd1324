// Encoder.load({ quantize: 'int8' }): the transformer's projections in dynamic int8 on the CPU. The reference is
// PyTorch's own quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8) on the same
// weights and token ids (scripts/bench/python/embed.py --quantize int8), run by the Python torch of the libtorch the
// addon uses (Debian's 1.13 for npm test; test:libtorch2's COLTRAST_PYTHON for PyTorch 2.x), so both sides run the same
// quantized engine.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CrossEncoder, Encoder, Generator, Index, evaluate, generateQueries, mineHardNegatives, serve } from '../lib';
import { loadNative } from '../lib/native-model';
import { readModelDirectory } from '../lib/model-dir';
import { CLI, FIXTURE, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const PYTHON = process.env.COLTRAST_PYTHON || '/usr/bin/python3';
const torchPython = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8', timeout: 240_000 }).status === 0;
// transformers, for the cross-encoder's reference (scripts/setup.sh makes build/pyenv from this machine's wheels).
const PYENV = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const transformers = fs.existsSync(PYENV) && spawnSync(PYENV, ['-c', 'import transformers'], { encoding: 'utf8', timeout: 240_000 }).status === 0;
const CROSS_ENCODER = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'st');
const TEXTS = [
  'a first text about retrieval',
  'and a second one, longer, about quantized models and how fast they embed on a CPU without a GPU',
  'x',
  'the third text: numbers 1 2 3, punctuation; and more words to make it the longest of them all by some margin',
];

function cosines(a: Float32Array, b: Float32Array, dim: number): number[] {
  return Array.from({ length: a.length / dim }, (_, i) => {
    let dot = 0, na = 0, nb = 0;
    for (let j = i * dim; j < (i + 1) * dim; j++) {
      dot += a[j] * b[j];
      na += a[j] * a[j];
      nb += b[j] * b[j];
    }
    return dot / Math.sqrt(na * nb);
  });
}

test('int8 vectors are what PyTorch quantize_dynamic (per-channel) computes, and close to float32', async (t) => {
  const float = await Encoder.load(FIXTURE, { device: 'cpu' });
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    t.is(int8.quantize, 'int8');
    t.is(float.quantize, undefined);
    const [a, b] = [await float.embed(TEXTS), await int8.embed(TEXTS)];
    const dim = a.dims[1];
    let maxDiff = 0;
    for (let i = 0; i < a.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.data[i] - b.data[i]));
    t.true(maxDiff > 0, 'the int8 vectors differ from float32 (the int8 path ran)');
    for (const c of cosines(a.data, b.data, dim)) t.true(c > 0.999, `cosine to float32 ${c}`);
    if (!torchPython) {
      t.log(`[Python's check skipped: no python3 with torch at ${PYTHON}; apt-get install python3-torch (scripts/setup.sh does)]`);
      return;
    }
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'ids.json'), JSON.stringify(await int8.tokenize(TEXTS)));
    fs.writeFileSync(path.join(dir, 'vectors.bin'), b.data);
    const script = path.join(ROOT, 'scripts', 'bench', 'python', 'embed.py');
    // One batch on both sides: an input's 8-bit scale is its whole batch's range (padding included), so a text's vector
    // depends a little on the texts batched with it, in PyTorch as here.
    const args = ['--model', FIXTURE, '--data', path.join(dir, 'ids.json'), '--batch-size', String(TEXTS.length), '--threads', '1'];
    const run = (extra: string[]) => {
      const r = spawnSync(PYTHON, [script, ...args, ...extra], { encoding: 'utf8', timeout: 240_000 });
      t.is(r.status, 0, r.stderr.slice(-1000));
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { maxAbsDiffVsColtrast: number; torch: string };
    };
    const quantized = run(['--quantize', 'int8', '--check', path.join(dir, 'vectors.bin')]);
    // Against float32 Python differs by maxDiff; quantized, by rounding at most.
    t.log(`torch ${quantized.torch}: largest difference to PyTorch's int8 ${quantized.maxAbsDiffVsColtrast.toExponential(2)}, to float32 ${maxDiff.toExponential(2)}`);
    t.true(quantized.maxAbsDiffVsColtrast <= 1e-5, `${quantized.maxAbsDiffVsColtrast}`);
    t.true(quantized.maxAbsDiffVsColtrast < maxDiff / 100);
  } finally {
    float.dispose();
    int8.dispose();
  }
});

test('quantize: refused off the CPU, in other dtypes, and for unknown kinds; a quantized model is not trained', async (t) => {
  await t.throwsAsync(Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int4' as 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize.*'int8'/ });
  await t.throwsAsync(Encoder.load(FIXTURE, { device: 'cpu', dtype: 'bfloat16', quantize: 'int8' }), {
    code: 'INVALID_ARGUMENT',
    message: /options\.quantize 'int8' is for float32 models on the CPU \(this load: device 'cpu', dtype 'bfloat16'\)/,
  });
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    await t.throwsAsync(int8.createTrainer({ learningRate: 2e-5, weightDecay: 0.01, seed: 42 }), { message: /loaded with quantize: 'int8' is for inference: load it without quantize to train with it/ });
    // It still embeds after the refusal.
    t.is((await int8.embed(['still here'])).dims[0], 1);
  } finally {
    int8.dispose();
  }
});

test("quantizing gives the projections' float32 weights back, so save() is refused for Encoder, CrossEncoder and Generator", async (t) => {
  // The native model under the Encoder: its parameters' storages before and after quantizeInt8.
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')) as { hidden_size: number; intermediate_size: number; num_hidden_layers: number };
  const handle = await loadNative(readModelDirectory(FIXTURE, 'embedding'), 'cpu', 'float32', {});
  try {
    const before = handle.info();
    const layers = await handle.quantizeInt8();
    const after = handle.info();
    const { hidden_size: h, intermediate_size: m, num_hidden_layers: n } = config;
    // BERT's projections: query, key, value, attention output (h × h), intermediate and output (h × m) in each layer; each
    // keeps one float32 zero for its shape.
    t.is(layers, 6 * n);
    t.is(before.parameterBytes - after.parameterBytes, 4 * n * (4 * h * h + 2 * h * m) - 4 * layers);
    t.is(after.numParameters, before.numParameters);
    t.true(after.quantizedInt8);
    // Quantized as it loads (what Encoder.load does without an adapter): the same projections, the same bytes.
    const atLoad = await loadNative(readModelDirectory(FIXTURE, 'embedding'), 'cpu', 'float32', { quantizeInt8: true });
    try {
      t.like(atLoad.info(), { quantizedInt8: true, parameterBytes: after.parameterBytes, numParameters: after.numParameters });
    } finally {
      atLoad.dispose();
    }
    // The native model refuses to write its weights too (they are no longer all there).
    const file = path.join(tempDir(), 'model.safetensors');
    await t.throwsAsync(handle.saveWeights(file, 'float32'), { message: /keeps only its int8 weights, which cannot be saved: load it without quantize to save it/ });
    t.false(fs.existsSync(file));
  } finally {
    handle.dispose();
  }

  const saved = path.join(tempDir(), 'saved');
  const refused = { code: 'INVALID_ARGUMENT', message: /loaded with quantize: 'int8', which keeps only its int8 projections: load the model without quantize to save it/ };
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    await t.throwsAsync(encoder.save(saved), { ...refused, message: new RegExp(`^this Encoder was ${refused.message.source}`) });
    t.false(fs.existsSync(saved), 'nothing written');
    // It still embeds after the refusal.
    t.is((await encoder.embed(['still here'])).dims[0], 1);
  } finally {
    encoder.dispose();
  }
  const crossEncoder = await CrossEncoder.load(CROSS_ENCODER, { device: 'cpu', quantize: 'int8' });
  try {
    await t.throwsAsync(crossEncoder.save(saved), { ...refused, message: new RegExp(`^this CrossEncoder was ${refused.message.source}`) });
  } finally {
    crossEncoder.dispose();
  }
  const generator = await Generator.load(path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama'), { device: 'cpu', quantize: 'int8' });
  try {
    await t.throwsAsync(generator.save(saved), refused);
  } finally {
    generator.dispose();
  }
  t.false(fs.existsSync(saved), 'nothing written');
});

test('coltrast embed --quantize int8 gives the library\'s int8 vectors; serve reports the quantization in /info', async (t) => {
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    const file = path.join(tempDir(), 'texts.txt');
    fs.writeFileSync(file, TEXTS.join('\n'));
    const run = spawnSync(process.execPath, [CLI, 'embed', file, '--model', FIXTURE, '--device', 'cpu', '--quantize', 'int8'], { encoding: 'utf8', timeout: 240_000 });
    t.is(run.status, 0, run.stderr);
    const rows = run.stdout.trim().split('\n').map((line) => JSON.parse(line).embedding as number[]);
    const expected = await int8.embed(TEXTS);
    const dim = expected.dims[1];
    t.is(rows.length, TEXTS.length);
    // The CLI writes six decimals.
    rows.forEach((row, i) => row.forEach((x, j) => t.true(Math.abs(x - expected.data[i * dim + j]) <= 5e-7 + 1e-9, `text ${i}, entry ${j}`)));
    const refused = spawnSync(process.execPath, [CLI, 'embed', file, '--model', FIXTURE, '--device', 'cpu', '--quantize', 'int8', '--dtype', 'bfloat16'], { encoding: 'utf8', timeout: 240_000 });
    t.is(refused.status, 2);
    t.regex(refused.stderr, /^coltrast: --quantize 'int8' is for float32 models on the CPU/);

    const server = await serve({ encoder: int8, port: 0 });
    try {
      t.like(await (await fetch(`${server.url}/info`)).json(), { quantize: 'int8', dtype: 'float32', device: 'cpu' });
    } finally {
      await server.close();
    }
  } finally {
    int8.dispose();
  }
});

test('coltrast generate, search and ask take --quantize int8; serve reports a quantized generator in /info', async (t) => {
  const llama = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama');
  const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args, '--device', 'cpu', '--threads', '1'], { encoding: 'utf8', timeout: 240_000 });
  const generator = await Generator.load(llama, { device: 'cpu', quantize: 'int8' });
  try {
    const prompt = 'the first words of a prompt';
    const generated = cli('generate', prompt, '--model', llama, '--quantize', 'int8', '--max-new-tokens', '6', '--json');
    t.is(generated.status, 0, generated.stderr);
    const [expected] = await generator.generate([prompt], { maxNewTokens: 6 });
    t.deepEqual((JSON.parse(generated.stdout) as { tokenIds: number[] }[])[0].tokenIds, expected.tokenIds);
    const server = await serve({ generator, port: 0 });
    try {
      t.like(await (await fetch(`${server.url}/info`)).json(), { generator: { quantize: 'int8' } });
    } finally {
      await server.close();
    }
  } finally {
    generator.dispose();
  }

  const index = path.join(tempDir(), 'ai.index');
  const data = path.join(ROOT, 'examples', 'ai-projects.json');
  const built = cli('index', '--data', data, '--model', FIXTURE, '--output', index, '--json');
  t.is(built.status, 0, built.stderr);
  const query = 'a library for training retrieval models';
  const found = cli('search', '--index', index, '--model', FIXTURE, '--quantize', 'int8', '--k', '3', '--json', query);
  t.is(found.status, 0, found.stderr);
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    const [hits] = await (await Index.load(index, int8)).search([query], { k: 3 });
    const [ours] = JSON.parse(found.stdout) as { hits: { id: string; score: number }[] }[];
    t.deepEqual(ours.hits.map((h) => h.id), hits.map((h) => h.id));
    ours.hits.forEach((h, i) => t.true(Math.abs(h.score - hits[i].score) < 1e-6, `hit ${i}: ${h.score} against ${hits[i].score}`));
  } finally {
    int8.dispose();
  }
  // ask passes --quantize to the generator it loads (--dtype is the generator's).
  const corpus = path.join(tempDir(), 'corpus.txt');
  fs.writeFileSync(corpus, 'a document\nanother document\n');
  const asked = cli('ask', 'what is it?', '--generator', llama, '--retriever', FIXTURE, '--corpus', corpus, '--quantize', 'int8', '--dtype', 'bfloat16');
  t.is(asked.status, 2, asked.stderr);
  t.regex(asked.stderr, /^coltrast: --quantize 'int8' is for float32 models on the CPU \(this load: device 'cpu', dtype 'bfloat16'\)/);
});

test("mineHardNegatives({ quantize: 'int8' }) mines with its models run in int8, as loaded int8 models mine; coltrast mine --quantize int8 too", async (t) => {
  const pairs = wordDataset(16, 11);
  const common = { data: pairs, numNegatives: 2, outputFormat: 'n-tuple' as const, outputScores: true, device: 'cpu' as const };
  const byName = await mineHardNegatives({ ...common, model: FIXTURE, crossEncoder: CROSS_ENCODER, quantize: 'int8' });
  const [encoder, crossEncoder] = [await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' }), await CrossEncoder.load(CROSS_ENCODER, { device: 'cpu', quantize: 'int8' })];
  try {
    const loaded = await mineHardNegatives({ ...common, model: encoder, crossEncoder });
    t.true(byName.rows.length > 0);
    t.deepEqual(byName.rows, loaded.rows);
    const float = await mineHardNegatives({ ...common, model: FIXTURE, crossEncoder: CROSS_ENCODER });
    t.notDeepEqual(float.rows, byName.rows, 'float32 scores differ from int8 ones');
    await t.throwsAsync(mineHardNegatives({ ...common, model: encoder, crossEncoder, quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize applies to the models mining loads by name/ });
  } finally {
    encoder.dispose();
    crossEncoder.dispose();
  }
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, pairs.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const output = path.join(dir, 'mined.jsonl');
  const run = spawnSync(
    process.execPath,
    [CLI, 'mine', '--data', data, '--output', output, '--model', FIXTURE, '--cross-encoder', CROSS_ENCODER, '--num-negatives', '2', '--output-format', 'n-tuple', '--output-scores', '--quantize', 'int8', '--device', 'cpu', '--json'],
    { encoding: 'utf8' },
  );
  t.is(run.status, 0, run.stderr);
  t.deepEqual(fs.readFileSync(output, 'utf8').trim().split('\n').map((line) => JSON.parse(line)), JSON.parse(JSON.stringify(byName.rows)));
});

test("generateQueries({ quantize: 'int8' }) writes with the generator it loads in int8, as a loaded int8 Generator writes; coltrast generate-queries --quantize int8 too", async (t) => {
  const llama = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama');
  const corpus = ['the first document is about retrieval models', 'a second document on quantized weights and fast inference', 'third: numbers 1 2 3'];
  const common = { corpus, perDocument: 1, temperature: 0, maxNewTokens: 8 };
  const byName = await generateQueries({ ...common, generator: llama, device: 'cpu', quantize: 'int8' });
  const generator = await Generator.load(llama, { device: 'cpu', quantize: 'int8' });
  try {
    t.true(byName.pairs.length > 0);
    t.deepEqual(byName.pairs, (await generateQueries({ ...common, generator })).pairs);
    await t.throwsAsync(generateQueries({ ...common, generator, quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize applies to the models generateQueries loads by name/ });
  } finally {
    generator.dispose();
  }
  // The option reaches the generator's load: int8 with bfloat16 is refused there.
  await t.throwsAsync(generateQueries({ ...common, generator: llama, device: 'cpu', dtype: 'bfloat16', quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize 'int8' is for float32 models on the CPU/ });
  const dir = tempDir();
  const file = path.join(dir, 'corpus.txt');
  fs.writeFileSync(file, corpus.join('\n') + '\n');
  const output = path.join(dir, 'pairs.jsonl');
  const run = spawnSync(
    process.execPath,
    [CLI, 'generate-queries', '--generator', llama, '--corpus', file, '--output', output, '--per-document', '1', '--temperature', '0', '--max-new-tokens', '8', '--quantize', 'int8', '--device', 'cpu', '--json'],
    { encoding: 'utf8' },
  );
  t.is(run.status, 0, run.stderr);
  t.deepEqual(fs.readFileSync(output, 'utf8').trim().split('\n').map((line) => JSON.parse(line)), byName.pairs);
});

test('evaluate({ quantize: \'int8\' }) measures the model run in int8, as an Encoder loaded so measures', async (t) => {
  const data = path.join(ROOT, 'examples', 'ai-projects.json');
  const byName = await evaluate({ data, model: FIXTURE, quantize: 'int8', device: 'cpu' });
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  try {
    t.deepEqual((await evaluate({ data, model: int8 })).metrics, byName.metrics);
    await t.throwsAsync(evaluate({ data, model: int8, quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize applies to a model given by name/ });
  } finally {
    int8.dispose();
  }
  await t.throwsAsync(evaluate({ data, mode: 'bm25', quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /quantize/ });
});

test("CrossEncoder.load({ quantize: 'int8' }): scores as PyTorch quantize_dynamic of the encoder's projections computes them (head float32)", async (t) => {
  const pairs: [string, string][] = [
    ['what is retrieval', 'retrieval finds the documents that answer a question'],
    ['what is retrieval', 'a recipe for bread'],
    ['quantized models', 'int8 weights and 8-bit inputs make the products integer ones, which is faster on a CPU'],
  ];
  const float = await CrossEncoder.load(CROSS_ENCODER, { device: 'cpu' });
  const int8 = await CrossEncoder.load(CROSS_ENCODER, { device: 'cpu', quantize: 'int8' });
  try {
    t.is(int8.quantize, 'int8');
    const [a, b] = [Array.from((await float.predict(pairs, { activation: 'identity' })).data), Array.from((await int8.predict(pairs, { activation: 'identity' })).data)];
    const diffs = a.map((x, i) => Math.abs(x - b[i]));
    t.true(Math.max(...diffs) > 0 && Math.max(...diffs) < 0.1, `int8 against float32: ${diffs}`);
    await t.throwsAsync(CrossEncoder.load(CROSS_ENCODER, { device: 'cpu', dtype: 'bfloat16', quantize: 'int8' }), { code: 'INVALID_ARGUMENT', message: /options\.quantize 'int8' is for float32 models on the CPU/ });
    if (!transformers) {
      t.log(`[Python's check skipped: no Python with transformers at ${PYENV}; scripts/setup.sh makes build/pyenv from this machine's wheels]`);
      return;
    }
    // One batch on both sides (an input's scale is its batch's range); quantize_dynamic on the base model's encoder only,
    // as coltrast quantizes the transformer's projections and keeps the pooler and the classifier in float32.
    const script = [
      'import json, sys, torch',
      'from transformers import AutoTokenizer, AutoModelForSequenceClassification',
      'from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig',
      'torch.set_num_threads(1)',
      'folder, pairs, length = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])',
      'tok = AutoTokenizer.from_pretrained(folder)',
      'model = AutoModelForSequenceClassification.from_pretrained(folder).eval()',
      'model = quantize_dynamic(model, {model.base_model_prefix + ".encoder": per_channel_dynamic_qconfig}, dtype=torch.qint8)',
      'batch = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True, max_length=length, return_tensors="pt")',
      'with torch.inference_mode(): print(json.dumps({"scores": model(**batch).logits[:, 0].tolist(), "torch": torch.__version__}))',
    ].join('\n');
    const run = spawnSync(PYENV, ['-c', script, CROSS_ENCODER, JSON.stringify(pairs), String(int8.maxSeqLength)], { encoding: 'utf8', timeout: 240_000 });
    t.is(run.status, 0, run.stderr.slice(-1500));
    const python = JSON.parse(run.stdout.trim().split('\n').pop()!) as { scores: number[]; torch: string };
    const worst = Math.max(...python.scores.map((x, i) => Math.abs(x - b[i])));
    t.log(`torch ${python.torch}: largest difference to PyTorch's int8 scores ${worst.toExponential(2)}, to float32 ${Math.max(...diffs).toExponential(2)}`);
    t.true(worst <= 1e-5, `${worst}`);
  } finally {
    float.dispose();
    int8.dispose();
  }
});

test("Generator.load({ quantize: 'int8' }): log-likelihoods and greedy tokens as transformers' model under quantize_dynamic computes them", async (t) => {
  const fixtures = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms');
  const reference = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms.reference.json'), 'utf8')) as {
    pairs: [string, string][];
    maxNewTokens: number;
    models: Record<string, { pairs: { promptIds: number[]; completionIds: number[]; logLikelihood: number }[] }>;
  };
  const pairs = reference.pairs.map(([prompt, completion]) => ({ prompt, completion }));
  const names = ['llama', 'qwen3'];
  const ours: Record<string, { ll: number[]; generated: number[][]; drift: number }> = {};
  for (const name of names) {
    const generator = await Generator.load(path.join(fixtures, name), { device: 'cpu', quantize: 'int8' });
    try {
      t.is(generator.quantize, 'int8');
      // One sequence a call on both sides (an input's 8-bit scale is its batch's range).
      const ll = Array.from(await generator.logLikelihood(pairs, { batchSize: 1 }));
      const generated = (await generator.generate(pairs.map((p) => p.prompt), { maxNewTokens: reference.maxNewTokens, batchSize: 1 })).map((g) => g.tokenIds);
      const float = reference.models[name].pairs.map((p) => p.logLikelihood);
      const drift = Math.max(...ll.map((x, i) => Math.abs(x - float[i])));
      t.true(drift > 0 && drift < 2, `${name}: int8 against float32 log-likelihoods ${drift}`);
      ours[name] = { ll, generated, drift };
    } finally {
      generator.dispose();
    }
  }
  if (!transformers) {
    t.log(`[Python's check skipped: no Python with transformers at ${PYENV}; scripts/setup.sh makes build/pyenv from this machine's wheels]`);
    return;
  }
  // quantize_dynamic on the decoder layers (model.layers): the embeddings and lm_head stay float32, as in coltrast. Both
  // models in one Python process (importing transformers is most of its time).
  const script = [
    'import json, sys, torch',
    'from transformers import AutoModelForCausalLM',
    'from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig',
    'torch.set_num_threads(1)',
    'jobs, new = json.loads(sys.argv[1]), int(sys.argv[2])',
    'results = {"torch": torch.__version__}',
    'for name, (folder, pairs) in jobs.items():',
    '    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()',
    '    quantize_dynamic(model, {"model.layers": per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)',
    '    out = results[name] = {"ll": [], "generated": []}',
    '    with torch.inference_mode():',
    '        for p in pairs:',
    '            ids = torch.tensor([p["promptIds"] + p["completionIds"]])',
    '            logp = torch.log_softmax(model(ids).logits[0].float(), -1)',
    '            n = len(p["promptIds"])',
    '            out["ll"].append(sum(logp[n - 1 + i, t].item() for i, t in enumerate(p["completionIds"])))',
    '            g = model.generate(torch.tensor([p["promptIds"]]), max_new_tokens=new, do_sample=False)',
    '            out["generated"].append(g[0, n:].tolist())',
    'print(json.dumps(results))',
  ].join('\n');
  const jobs = Object.fromEntries(names.map((name) => [name, [path.join(fixtures, name), reference.models[name].pairs]]));
  const run = spawnSync(PYENV, ['-c', script, JSON.stringify(jobs), String(reference.maxNewTokens)], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr.slice(-1500));
  const python = JSON.parse(run.stdout.trim().split('\n').pop()!) as Record<string, { ll: number[]; generated: number[][] }> & { torch: string };
  for (const name of names) {
    const worst = Math.max(...python[name].ll.map((x, i) => Math.abs(x - ours[name].ll[i])));
    t.log(`${name}, torch ${python.torch}: largest log-likelihood difference to PyTorch's int8 ${worst.toExponential(2)}, to float32 ${ours[name].drift.toExponential(2)}`);
    t.true(worst <= 1e-4, `${name}: ${worst}`);
    t.deepEqual(ours[name].generated, python[name].generated, `${name}: greedy tokens`);
  }
});

test("an index records its model's int8 (or bfloat16) running: coltrast search and index --update embed as its documents were unless told otherwise", async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'docs.jsonl');
  const docs = wordDataset(20, 6).map((p, i) => ({ id: `d${i}`, text: p.positive }));
  fs.writeFileSync(data, docs.map((d) => JSON.stringify(d)).join('\n') + '\n');
  const out = path.join(dir, 'index');
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  let run = cli(['index', '--data', data, '--model', FIXTURE, '--output', out, '--device', 'cpu', '--quantize', 'int8', '--json']);
  t.is(run.status, 0, run.stderr);
  t.is(JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')).model.quantize, 'int8');
  t.is(Index.modelOptions(out).quantize, 'int8');
  const int8 = await Encoder.load(FIXTURE, { device: 'cpu', quantize: 'int8' });
  const plain = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const query = wordDataset(3, 9)[0].query;
    const scores = async (enc: Encoder) => (await (await Index.load(out, enc)).search([query], { k: 5 }))[0].map((h) => h.score);
    run = cli(['search', '--index', out, '--k', '5', '--device', 'cpu', '--json', query]);
    t.is(run.status, 0, run.stderr);
    const got = JSON.parse(run.stdout)[0].hits.map((h: { score: number }) => h.score);
    // The query embedded in int8, as the documents were: its scores are the int8 model's, not the float32 one's.
    const want = await scores(int8);
    got.forEach((s: number, i: number) => t.true(Math.abs(s - want[i]) < 1e-6, `${s} vs ${want[i]}`));
    t.notDeepEqual(await scores(plain), want, 'the two ways of embedding the query differ');
    // --quantize none embeds it in float32.
    run = cli(['search', '--index', out, '--k', '5', '--device', 'cpu', '--json', '--quantize', 'none', query]);
    t.is(run.status, 0, run.stderr);
    const plainScores = await scores(plain);
    JSON.parse(run.stdout)[0].hits.forEach((h: { score: number }, i: number) => t.true(Math.abs(h.score - plainScores[i]) < 1e-6, `--quantize none: ${h.score} vs ${plainScores[i]}`));
    // --update adds documents embedded in int8 too; the manifest keeps saying so.
    const more = path.join(dir, 'more.jsonl');
    fs.writeFileSync(more, JSON.stringify({ id: 'new', text: query }) + '\n');
    run = cli(['index', '--data', more, '--output', out, '--update', '--device', 'cpu', '--json']);
    t.is(run.status, 0, run.stderr);
    const updated = await Index.load(out, int8);
    const [hit] = (await updated.search([query], { k: 1, filter: { id: 'new' } }))[0];
    const vector = await int8.embed([query], { normalize: true, task: 'document' });
    const queryVector = await int8.embed([query], { normalize: true, task: 'query' });
    const dot = vector.data.reduce((sum, x, i) => sum + x * queryVector.data[i], 0);
    t.true(Math.abs(hit.score - dot) < 1e-5, `the new document's score ${hit.score} is the int8 model's ${dot}`);
    t.is(JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')).model.quantize, 'int8');
  } finally {
    int8.dispose();
    plain.dispose();
  }
  // A manifest that says another dtype or quantize is refused as damaged.
  const manifest = path.join(out, 'index.json');
  fs.writeFileSync(manifest, JSON.stringify({ ...JSON.parse(fs.readFileSync(manifest, 'utf8')), model: { ...JSON.parse(fs.readFileSync(manifest, 'utf8')).model, quantize: 'int4' } }));
  run = cli(['search', '--index', out, '--device', 'cpu', 'x']);
  t.is(run.status, 2);
  t.regex(run.stderr, /index\.json says model\.quantize "int4", not "int8" \(absent: none\)/);
});
