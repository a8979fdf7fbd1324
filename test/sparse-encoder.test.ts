// SparseEncoder (SPLADE): each family's masked-LM head and SpladePooling against what sentence-transformers' SparseEncoder
// computed for the same tiny random models (scripts/fixtures/tiny_sparse.py): vectors in one padded batch and one text at
// a time, similarity, max_active_dims and decode; save and reload (the same tensor names); int8 and bfloat16; folders
// and inputs that are not a sparse encoder's refused with the fix named; train({ sparse }).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, SparseEncoder, train, type SparseVector } from '../lib';
import { readSafetensors } from './helpers/safetensors';
import { editJson, folderCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse');
type Recorded = { indices: number[]; values: number[] };
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse.reference.json'), 'utf8')) as {
  texts: string[];
  models: Record<string, { task: 'query' | null; vectors: Recorded[]; similarity: number[][]; capped: Recorded[]; decoded: [string, number][] }>;
};
const MODELS = {
  bert: { type: 'bert', pooling: 'max', activation: 'relu' },
  'bert-plain': { type: 'bert', pooling: 'max', activation: 'relu' },
  distilbert: { type: 'distilbert', pooling: 'sum', activation: 'relu' },
  roberta: { type: 'roberta', pooling: 'max', activation: 'log1p_relu' },
  mpnet: { type: 'mpnet', pooling: 'max', activation: 'relu' },
  modernbert: { type: 'modernbert', pooling: 'max', activation: 'relu' },
} as const;

/** Sparse vectors as dense rows of width `dim`, one after another. */
function dense(vectors: (SparseVector | Recorded)[], dim: number): Float64Array {
  const out = new Float64Array(vectors.length * dim);
  vectors.forEach((v, r) => Array.from(v.indices).forEach((index, k) => (out[r * dim + index] = v.values[k])));
  return out;
}

/** The largest difference relative to the reference's largest magnitude (DistilBERT's sums reach tens). */
function relativeDiff(ours: ArrayLike<number>, reference: ArrayLike<number>): number {
  return maxAbsDiff(ours, reference) / Math.max(1, ...Array.from(reference, Math.abs));
}

for (const [name, expected] of Object.entries(MODELS)) {
  test(`${name}: vectors equal sentence-transformers' SparseEncoder's (1e-5) in a padded batch and one text at a time; similarity, max_active_dims and decode too`, async (t) => {
    const model = await SparseEncoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const ref = REFERENCE.models[name];
    t.is(model.modelType, expected.type);
    t.deepEqual(model.pooling, { pooling: expected.pooling, activation: expected.activation });
    t.is(model.similarityFunction, 'dot');
    const task = ref.task ?? undefined;
    const batch = await model.encode(REFERENCE.texts, { batchSize: REFERENCE.texts.length, task });
    const alone = await model.encode(REFERENCE.texts, { batchSize: 1, task });
    const dim = model.dimension;
    for (const v of batch) {
      t.true(v.indices.every((index, k) => k === 0 || index > v.indices[k - 1]), 'indices rise');
      t.true(v.values.every((x) => x > 0), 'only non-zeros are listed');
    }
    t.true(relativeDiff(dense(batch, dim), dense(ref.vectors, dim)) < 1e-5, `batch: ${relativeDiff(dense(batch, dim), dense(ref.vectors, dim))}`);
    t.true(relativeDiff(dense(alone, dim), dense(ref.vectors, dim)) < 1e-5, `alone: ${relativeDiff(dense(alone, dim), dense(ref.vectors, dim))}`);
    // Much of the vocabulary is zero, as in a SPLADE vector: the fixtures' heads are drawn so.
    t.true(batch.every((v) => v.indices.length > 0 && v.indices.length < 0.8 * dim), `non-zeros: ${batch.map((v) => v.indices.length).join(', ')} of ${dim}`);

    const similarity = await model.similarity(batch, batch);
    t.deepEqual(similarity.dims, [REFERENCE.texts.length, REFERENCE.texts.length]);
    t.true(relativeDiff(similarity.data, ref.similarity.flat()) < 1e-5);
    const pairwise = await model.similarityPairwise(batch, [...batch].reverse());
    t.true(relativeDiff(pairwise, ref.similarity.map((row, i) => row[row.length - 1 - i])) < 1e-5);

    const capped = await model.encode(REFERENCE.texts, { task, maxActiveDims: 5 });
    t.true(capped.every((v) => v.indices.length === 5));
    t.true(relativeDiff(dense(capped, dim), dense(ref.capped, dim)) < 1e-5);

    const decoded = await model.decode(batch[3], 3);
    t.deepEqual(decoded.map(([token]) => token), ref.decoded.map(([token]) => token));
    t.true(maxAbsDiff(decoded.map(([, w]) => w), ref.decoded.map(([, w]) => w)) < 1e-5);
    t.is((await model.decode(batch[3])).length, batch[3].indices.length);
    model.dispose();
  });
}

test('save writes a SparseEncoder folder with the tensor names the model was read with, which loads to the same vectors', async (t) => {
  for (const name of ['bert', 'distilbert', 'roberta', 'modernbert']) {
    const model = await SparseEncoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const before = await model.encode(REFERENCE.texts);
    const out = path.join(tempDir(), name);
    await model.save(out);
    model.dispose();
    const names = (dir: string) => [...readSafetensors(path.join(dir, 'model.safetensors')).tensors.keys()].sort();
    t.deepEqual(names(out), names(path.join(FIXTURES, name)), `${name}: tensor names`);
    const modules = JSON.parse(fs.readFileSync(path.join(out, 'modules.json'), 'utf8')) as { type: string; path: string }[];
    t.deepEqual(modules.map((m) => m.type.split('.').pop()), ['MLMTransformer', 'SpladePooling']);
    t.is(JSON.parse(fs.readFileSync(path.join(out, 'config_sentence_transformers.json'), 'utf8')).model_type, 'SparseEncoder');
    const again = await SparseEncoder.load(out, { device: 'cpu' });
    t.deepEqual(again.pooling, MODELS[name as keyof typeof MODELS] && { pooling: MODELS[name as 'bert'].pooling, activation: MODELS[name as 'bert'].activation });
    const after = await again.encode(REFERENCE.texts);
    t.is(maxAbsDiff(dense(after, again.dimension), dense(before, again.dimension)), 0, name);
    again.dispose();
  }
  // A plain *ForMaskedLM folder saves as a SparseEncoder folder, its pooling written out.
  const plain = await SparseEncoder.load(path.join(FIXTURES, 'bert-plain'), { device: 'cpu' });
  const out = path.join(tempDir(), 'plain');
  await plain.save(out, { dtype: 'bfloat16' });
  plain.dispose();
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, '1_SpladePooling', 'config.json'), 'utf8')), { pooling_strategy: 'max', activation_function: 'relu', word_embedding_dimension: 198 });
  t.true([...readSafetensors(path.join(out, 'model.safetensors')).tensors.values()].every((x) => x.dtype === 'BF16'));
});

test('int8 and bfloat16 vectors stay close to float32 ones; an int8 model is not saved', async (t) => {
  const dir = path.join(FIXTURES, 'bert');
  const full = await SparseEncoder.load(dir, { device: 'cpu' });
  const reference = dense(await full.encode(REFERENCE.texts), full.dimension);
  const dim = full.dimension;
  full.dispose();
  for (const options of [{ quantize: 'int8' as const }, { dtype: 'bfloat16' as const }]) {
    const model = await SparseEncoder.load(dir, { device: 'cpu', ...options });
    const diff = relativeDiff(dense(await model.encode(REFERENCE.texts), dim), reference);
    t.true(diff > 0 && diff < 0.05, `${JSON.stringify(options)}: ${diff}`);
    if (options.quantize) {
      t.is(model.quantize, 'int8');
      const error = await rejection(() => model.save(path.join(tempDir(), 'int8')));
      t.is(error.code, 'INVALID_ARGUMENT');
      t.regex(error.message, /quantize/);
    }
    model.dispose();
  }
});

test('a SparseEncoder folder given to Encoder.load, and a dense model given to SparseEncoder.load, are refused with the class to use', async (t) => {
  let error = await rejection(() => Encoder.load(path.join(FIXTURES, 'bert'), { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /SparseEncoder\.load/);
  error = await rejection(() => SparseEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-bert'), { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /not a sparse encoder.*Encoder\.load/);
  // A plain Hugging Face folder of a base model (no *ForMaskedLM in its architectures).
  const base = folderCopy(path.join(FIXTURES, 'bert-plain'), (dir) => editJson(path.join(dir, 'config.json'), (c) => ({ ...c, architectures: ['BertModel'] })));
  error = await rejection(() => SparseEncoder.load(base, { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /ForMaskedLM/);
});

test('a masked-LM folder without its head weights, SpladePooling settings sentence-transformers lacks, and other sparse modules are refused, naming the problem', async (t) => {
  // The tiny BERT's weights (no cls.predictions.*) under a masked-LM config.
  const headless = folderCopy(path.join(FIXTURES, 'bert-plain'), (dir) => fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-bert', 'model.safetensors'), path.join(dir, 'model.safetensors')));
  let error = await rejection(() => SparseEncoder.load(headless, { device: 'cpu' }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /cls\.predictions\.transform\.dense\.weight.*ForMaskedLM/);

  const badPooling = folderCopy(path.join(FIXTURES, 'bert'), (dir) => editJson(path.join(dir, '1_SpladePooling', 'config.json'), (c) => ({ ...c, pooling_strategy: 'mean' })));
  error = await rejection(() => SparseEncoder.load(badPooling, { device: 'cpu' }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /pooling_strategy must be "max" or "sum"/);

  const router = folderCopy(path.join(FIXTURES, 'bert'), (dir) =>
    editJson(path.join(dir, 'modules.json'), (m) => [{ ...m[0], type: 'sentence_transformers.base.modules.router.Router' }, m[1]]),
  );
  error = await rejection(() => SparseEncoder.load(router, { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /inference-free SPLADE/);

  // ELECTRA's generator head is not one coltrast runs: refused natively, by family.
  const electra = folderCopy(path.join(ROOT, 'test', 'fixtures', 'tiny-encoders', 'electra'), (dir) => {
    fs.rmSync(path.join(dir, 'modules.json'));
    editJson(path.join(dir, 'config.json'), (c) => ({ ...c, architectures: ['ElectraForMaskedLM'] }));
  });
  error = await rejection(() => SparseEncoder.load(electra, { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /masked-language-model head.*electra/);
});

test('bad options and vectors are refused with INVALID_ARGUMENT; no texts give no vectors; an aborted encode rejects ABORTED; dispose ends the model', async (t) => {
  let error = await rejection(() => SparseEncoder.load(path.join(FIXTURES, 'bert'), { device: 'cpu', maxActiveDims: 0 }));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /maxActiveDims/);
  const model = await SparseEncoder.load(path.join(FIXTURES, 'bert'), { device: 'cpu', maxActiveDims: 7 });
  t.deepEqual(await model.encode([]), []);
  const [capped] = await model.encode(['a longer text about search']);
  t.is(capped.indices.length, 7, 'the load option caps the vectors');
  for (const options of [{ task: 'passage' }, { maxActiveDims: -1 }, { batchSize: 0 }, { pooling: 'max' }, { prompt: 'q: ', promptName: 'query' }]) {
    error = await rejection(() => model.encode(['x'], options as never));
    t.is(error.code, 'INVALID_ARGUMENT', JSON.stringify(options));
  }
  error = await rejection(() => model.encode(['x', 3 as never]));
  t.regex(error.message, /texts\[1\]/);
  const bad = [
    { indices: [1, 2], values: new Float32Array(2) },
    { indices: new Int32Array([2, 1]), values: new Float32Array(2) },
    { indices: new Int32Array([1, 500]), values: new Float32Array(2) },
    { indices: new Int32Array([1]), values: new Float32Array(2) },
  ];
  for (const vector of bad) {
    const thrown = await rejection(() => model.similarity([vector as never], [capped]));
    t.is(thrown.code, 'INVALID_ARGUMENT', thrown.message);
  }
  await t.throwsAsync(() => model.similarityPairwise([capped], []), { message: /as many of each/ });
  error = await rejection(() => model.decode(capped, 0));
  t.is(error.code, 'INVALID_ARGUMENT');

  const controller = new AbortController();
  controller.abort();
  error = await rejection(() => model.encode(['a', 'b'], { signal: controller.signal }));
  t.is(error.code, 'ABORTED');
  model.dispose();
  error = await rejection(() => model.encode(['a']));
  t.is(error.code, 'DISPOSED');
});

test('encode reports progress and gives the query prompt only with the query task', async (t) => {
  const model = await SparseEncoder.load(path.join(FIXTURES, 'bert'), { device: 'cpu' });
  t.deepEqual(model.prompts, { query: 'query: ', document: '' });
  const seen: number[] = [];
  const texts = REFERENCE.texts;
  const plain = await model.encode(texts, { batchSize: 2, onProgress: (done, total) => (t.is(total, texts.length), seen.push(done)) });
  t.deepEqual(seen, [0, 2, 4, 5]);
  const asQuery = await model.encode(texts, { task: 'query' });
  const withPrompt = await model.encode(texts.map((x) => 'query: ' + x));
  t.is(maxAbsDiff(dense(asQuery, model.dimension), dense(withPrompt, model.dimension)), 0);
  t.true(maxAbsDiff(dense(asQuery, model.dimension), dense(plain, model.dimension)) > 1e-3);
  // The document prompt is empty: documents are the plain texts.
  t.is(maxAbsDiff(dense(await model.encode(texts, { task: 'document', batchSize: 2 }), model.dimension), dense(plain, model.dimension)), 0);
  model.dispose();
});

test('train({ sparse }) trains a SparseEncoder: the loss falls, retrieval improves, the regularizer is reported, and the output is a SparseEncoder folder', async (t) => {
  const out = path.join(tempDir(), 'trained');
  const data = wordDataset(48, 3);
  const result = await train({ model: path.join(FIXTURES, 'bert-plain'), sparse: true, data, output: out, epochs: 3, batchSize: 8, learningRate: 3e-3, valSplit: 0.25, device: 'cpu', seed: 2, prompts: false });
  const steps = result.history.steps;
  t.true(steps.every((s) => typeof s.regularizer === 'number' && s.regularizer >= 0), 'each step reports its FLOPS regularizer');
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  t.true(mean(steps.slice(-3).map((s) => s.loss)) < mean(steps.slice(0, 3).map((s) => s.loss)), steps.map((s) => s.loss.toFixed(3)).join(' '));
  t.true(result.after!['mrr@10'] > result.before!['mrr@10'], `mrr@10 ${result.before!['mrr@10']} → ${result.after!['mrr@10']}`);
  const model = await SparseEncoder.load(out, { device: 'cpu' });
  t.deepEqual(model.pooling, { pooling: 'max', activation: 'relu' });
  t.is(JSON.parse(fs.readFileSync(path.join(out, 'config_sentence_transformers.json'), 'utf8')).model_type, 'SparseEncoder');
  t.regex(fs.readFileSync(path.join(out, 'README.md'), 'utf8'), /sparse \(SPLADE\) retrieval model/);
  model.dispose();
});

test('a larger FLOPS regularizer trains sparser vectors', async (t) => {
  const data = wordDataset(32, 5);
  const nonZeros = async (documentRegularizer: number) => {
    const out = path.join(tempDir(), `reg-${documentRegularizer}`);
    await train({ model: path.join(FIXTURES, 'bert'), sparse: { queryRegularizer: documentRegularizer, documentRegularizer }, data, output: out, epochs: 2, batchSize: 8, learningRate: 3e-3, valSplit: 0, device: 'cpu', seed: 1 });
    const model = await SparseEncoder.load(out, { device: 'cpu' });
    const vectors = await model.encode(data.map((d) => d.positive));
    model.dispose();
    return vectors.reduce((n, v) => n + v.indices.length, 0) / vectors.length;
  };
  const [loose, tight] = [await nonZeros(0), await nonZeros(1)];
  t.true(tight < 0.8 * loose, `non-zeros a document: ${loose} without the regularizer, ${tight} with weight 1`);
});

test('train refuses a SparseEncoder folder without options.sparse, and dense options with it', async (t) => {
  const out = path.join(tempDir(), 'x');
  let error = await rejection(() => train({ model: path.join(FIXTURES, 'bert'), data: wordDataset(8), output: out, batchSize: 4, valSplit: 0, device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /sparse: true/);
  for (const extra of [{ projection: { dimension: 8 } }, { crossEncoder: true }, { lora: true }, { loss: { lateInteractionWeight: 0.5 } }, { loss: { matryoshka: { dimensions: [8] } } }]) {
    error = await rejection(() => train({ model: path.join(FIXTURES, 'bert'), sparse: true, data: wordDataset(8), output: out, batchSize: 4, valSplit: 0, device: 'cpu', ...extra } as never));
    t.is(error.code, 'INVALID_ARGUMENT', JSON.stringify(extra));
  }
  error = await rejection(() => train({ model: path.join(FIXTURES, 'bert'), sparse: { documentRegularizer: -1 }, data: wordDataset(8), output: out, batchSize: 4, device: 'cpu' }));
  t.regex(error.message, /documentRegularizer/);
  // A multi-vector model (the tiny BERT as sentence-transformers' MultiVectorEncoder) has no single vector to start from.
  const multi = folderCopy(path.join(ROOT, 'test', 'fixtures', 'tiny-bert'), (dir) => {
    editJson(path.join(dir, 'modules.json'), (m) => [m[0]]);
    editJson(path.join(dir, 'config_sentence_transformers.json'), (c) => ({ ...c, model_type: 'MultiVectorEncoder' }));
  });
  error = await rejection(() => train({ model: multi, sparse: true, data: wordDataset(8), output: out, batchSize: 4, valSplit: 0, device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL', error.message);
});

test('train({ sparse }) from an embedding model without a masked-LM head draws a new head, seeded, and saves it as *ForMaskedLM names it', async (t) => {
  const tinyBert = path.join(ROOT, 'test', 'fixtures', 'tiny-bert');
  const run = async (seed: number) => {
    const out = path.join(tempDir(), `new-head-${seed}`);
    await train({ model: tinyBert, sparse: true, data: wordDataset(16, 4), output: out, epochs: 1, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed });
    const model = await SparseEncoder.load(out, { device: 'cpu' });
    const vectors = await model.encode(['model token vector search']);
    model.dispose();
    return { out, probe: dense(vectors, 198) };
  };
  const [a, b, c] = [await run(1), await run(1), await run(2)];
  t.is(maxAbsDiff(a.probe, b.probe), 0, 'the same seed draws the same head');
  t.true(maxAbsDiff(a.probe, c.probe) > 1e-4, 'another seed another');
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(a.out, 'config.json'), 'utf8')).architectures, ['BertForMaskedLM']);
  const names = [...readSafetensors(path.join(a.out, 'model.safetensors')).tensors.keys()];
  t.true(['cls.predictions.transform.dense.weight', 'cls.predictions.transform.LayerNorm.weight', 'cls.predictions.bias'].every((n) => names.includes(n)), names.join(' '));
  t.false(fs.existsSync(path.join(a.out, '1_Pooling')), "the dense model's pooling is not the sparse encoder's");
  // SparseEncoder.load itself does not draw a head: a model without one is no sparse encoder to run.
  const error = await rejection(() => SparseEncoder.load(tinyBert, { device: 'cpu' }));
  t.is(error.code, 'UNSUPPORTED_MODEL');
});

test('coltrast train --sparse trains a SparseEncoder from the command line, its regularizer weights and their warm-up from flags', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(16, 9).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const out = path.join(dir, 'model');
  const run = spawnSync(
    process.execPath,
    [path.join(ROOT, 'dist', 'cli.js'), 'train', '--model', path.join(FIXTURES, 'bert'), '--sparse', '--query-regularizer', '0.001', '--document-regularizer', '0.002', '--regularizer-warmup', '0.5', '--regularizer-schedule', 'linear', '--data', data, '--output', out, '--epochs', '1', '--batch-size', '4', '--val-split', '0', '--device', 'cpu', '--json'],
    { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000 },
  );
  t.is(run.status, 0, run.stderr);
  const history = JSON.parse(fs.readFileSync(path.join(out, 'training_history.json'), 'utf8'));
  t.deepEqual(history.config.sparse, { queryRegularizer: 0.001, documentRegularizer: 0.002, warmupRatio: 0.5, schedule: 'linear' });
  // 4 steps, a warm-up of 2: the first step's weights are 0, the second's half, then full (the weights' values against
  // sentence-transformers' are checked in test/python-interop.test.ts).
  const regularizers = history.history.steps.map((s: { regularizer?: number }) => s.regularizer);
  t.is(regularizers.length, 4);
  t.is(regularizers[0], 0, regularizers.join(' '));
  t.true(regularizers.slice(1).every((r: number) => r > 0), regularizers.join(' '));
  const model = await SparseEncoder.load(out, { device: 'cpu' });
  t.is(model.modelType, 'bert');
  model.dispose();
});

test('sparse training with gradient caching (miniBatchSize) takes the plain step\'s losses and weights; bfloat16 mixed precision trains too', async (t) => {
  // Dropout off, so the two runs see the same model.
  const model = folderCopy(path.join(FIXTURES, 'bert'), (dir) => editJson(path.join(dir, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 })));
  const pairs = wordDataset(14, 21);
  const batches = [pairs.slice(0, 7), pairs.slice(7)].map((b) => ({ queries: b.map((p) => p.query), documents: b.map((p) => p.positive) }));
  const step = { contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 1, symmetric: false, lateInteractionKind: 'cross_entropy' as const, learningRate: 3e-3, maxGradNorm: 1, lossScale: 1, apply: true, queryRegularizer: 1e-3, documentRegularizer: 1e-3 };
  const run = async (extra: object, precision?: 'bfloat16') => {
    const encoder = await SparseEncoder.load(model, { device: 'cpu' });
    const trainer = encoder.createTrainer({ seed: 3, ...(precision && { precision }) }, false);
    const results = [];
    for (const b of batches) results.push(await trainer.step(b.queries, b.documents, { ...step, ...extra }));
    trainer.dispose();
    const probe = dense(await encoder.encode(['model token vector search']), encoder.dimension);
    encoder.dispose();
    return { results, probe };
  };
  const plain = await run({});
  const cached = await run({ miniBatchSize: 3 });
  cached.results.forEach((r, i) => {
    t.true(Math.abs(r.loss - plain.results[i].loss) < 1e-5 * plain.results[i].loss, `step ${i + 1}: ${r.loss} vs ${plain.results[i].loss}`);
    t.true(Math.abs(r.regularizer - plain.results[i].regularizer) < 1e-5 * plain.results[i].regularizer);
  });
  t.true(maxAbsDiff(cached.probe, plain.probe) < 1e-5, `weights after 2 steps differ by ${maxAbsDiff(cached.probe, plain.probe)}`);
  const bf16 = await run({}, 'bfloat16');
  t.true(bf16.results.every((r) => Number.isFinite(r.loss) && r.regularizer > 0));
  t.true(relativeDiff(bf16.probe, plain.probe) < 0.05, `bfloat16 against float32: ${relativeDiff(bf16.probe, plain.probe)}`);
});

const ROUTER = path.join(FIXTURES, 'router');
const ROUTER_REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-sparse-router.reference.json'), 'utf8')) as {
  texts: string[];
  queries: Recorded[];
  documents: Recorded[];
  default: Recorded[];
  capped_queries: Recorded[];
  similarity: number[][];
};

test("inference-free SPLADE (a Router): queries by the SparseStaticEmbedding's weights, documents by the masked LM, as sentence-transformers encodes them", async (t) => {
  const model = await SparseEncoder.load(ROUTER, { device: 'cpu' });
  const ref = ROUTER_REFERENCE;
  t.true(model.inferenceFree);
  t.deepEqual(model.pooling, { pooling: 'max', activation: 'log1p_relu' });
  t.is(model.modelDir, ROUTER);
  const dim = model.dimension;
  const queries = await model.encode(ref.texts, { task: 'query' });
  const documents = await model.encode(ref.texts, { task: 'document', batchSize: 2 });
  const plain = await model.encode(ref.texts);
  for (const [ours, theirs, what] of [[queries, ref.queries, 'queries'], [documents, ref.documents, 'documents'], [plain, ref.default, 'no task (the default route: documents)']] as const) {
    t.deepEqual(ours.map((v) => Array.from(v.indices)), theirs.map((v) => v.indices), what);
    t.true(relativeDiff(dense(ours, dim), dense(theirs, dim)) < 1e-5, what);
  }
  // A query's entries are its tokens' (a text of one token with a zero weight has none); the model's documents are wide.
  t.is(queries[0].indices.length, 0);
  t.true(queries.every((q, i) => q.indices.length <= documents[i].indices.length));
  const capped = await model.encode(ref.texts, { task: 'query', maxActiveDims: 3 });
  t.true(relativeDiff(dense(capped, dim), dense(ref.capped_queries, dim)) < 1e-5);
  const scores = await model.similarity(queries, documents);
  t.true(relativeDiff(scores.data, ref.similarity.flat()) < 1e-5);
  // save() copies the Router's folder; it loads to the same vectors.
  const saved = path.join(tempDir(), 'router-copy');
  await model.save(saved);
  t.true(fs.existsSync(path.join(saved, 'router_config.json')) && fs.existsSync(path.join(saved, 'query_0_SparseStaticEmbedding', 'model.safetensors')));
  const again = await SparseEncoder.load(saved, { device: 'cpu' });
  t.deepEqual(await again.encode(ref.texts, { task: 'query' }), queries);
  t.deepEqual(await again.encode(ref.texts.slice(1, 3), { task: 'document' }), await model.encode(ref.texts.slice(1, 3), { task: 'document' }));
  again.dispose();
  t.regex((await rejection(() => model.save(path.join(tempDir(), 'x'), { dtype: 'bfloat16' }))).message, /options\.dtype must be absent or 'float32' for an inference-free SPLADE/);
  model.dispose();
  t.regex((await rejection(() => Encoder.load(ROUTER, { device: 'cpu' }))).message, /is a sentence-transformers SparseEncoder .*: load it with SparseEncoder\.load/);
  // Training one is not supported (its query weights train with their own rules): refused by name.
  const error = await rejection(() => train({ model: ROUTER, sparse: true, data: wordDataset(12, 3), output: path.join(tempDir(), 'out'), epochs: 1, batchSize: 4, device: 'cpu' }));
  t.regex(error.message, /is an inference-free SPLADE .*: training an inference-free SPLADE is not supported yet/);
});

test('inference-free SPLADE: broken Router folders are named, and an index of one fingerprints its routed modules', async (t) => {
  const broken = (edit: (dir: string) => void) => {
    const dir = folderCopy(ROUTER);
    edit(dir);
    return dir;
  };
  let dir = broken((d) => editJson(path.join(d, 'router_config.json'), (c) => ({ ...c, structure: { ...c.structure, query: ['document_0_Transformer', 'document_1_SpladePooling'] } })));
  t.regex((await rejection(() => SparseEncoder.load(dir, { device: 'cpu' }))).message, /router_config\.json: its query route is Transformer → SpladePooling; a Router of a SparseStaticEmbedding for queries/);
  dir = broken((d) => fs.rmSync(path.join(d, 'router_config.json')));
  t.regex((await rejection(() => SparseEncoder.load(dir, { device: 'cpu' }))).message, /names a Router, and .*router_config\.json is missing/);
  dir = broken((d) => fs.writeFileSync(path.join(d, 'query_0_SparseStaticEmbedding', 'model.safetensors'), fs.readFileSync(path.join(d, 'document_0_Transformer', 'model.safetensors'))));
  t.regex((await rejection(() => SparseEncoder.load(dir, { device: 'cpu' }))).message, /has no one-dimensional "weight" tensor/);
  // An index remembers the query weights too: other weights, another model.
  const model = await SparseEncoder.load(ROUTER, { device: 'cpu' });
  const docs = wordDataset(8, 2).map((p, i) => ({ id: `d${i}`, text: p.positive }));
  const index = await Index.build(model, docs);
  const hits = await index.search(['cat model'], { k: 3 });
  const expected = (await model.encode(['cat model'], { task: 'query' }))[0];
  const vectors = await model.encode(docs.map((d) => d.text), { task: 'document' });
  const scores = vectors.map((v) => Array.from(v.indices).reduce((sum, x, k) => sum + (expected.indices.includes(x) ? v.values[k] * expected.values[expected.indices.indexOf(x)] : 0), 0));
  t.deepEqual(hits[0].map((h) => h.id), docs.map((d, i) => ({ id: d.id, score: scores[i] })).filter((h) => h.score > 0).sort((a, b) => b.score - a.score).slice(0, 3).map((h) => h.id));
  const saved = path.join(tempDir(), 'router.index');
  await index.save(saved);
  const changed = broken((d) => {
    const file = path.join(d, 'query_0_SparseStaticEmbedding', 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
  });
  const other = await SparseEncoder.load(changed, { device: 'cpu' });
  t.regex((await rejection(() => Index.load(saved, other))).message, /was built with another model/);
  t.is((await Index.load(saved, model)).size, docs.length);
  other.dispose();
  model.dispose();
});
