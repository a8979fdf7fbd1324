// LoRA (train({ lora }), Encoder.load's adapter, lib/lora.ts, Dense in native/models/layers.h): only the adapters
// train; the output holds the merged weights and the adapter (PEFT's files), and the base model with the adapter
// embeds as the merged model does; decoders take adapters too; an interrupted run resumes to the weights of an
// uninterrupted one; bad options and adapters are refused; on a GPU, training and adapters follow the CPU. PEFT's side:
// test/python-interop.test.ts.
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, CrossEncoder, Encoder, Index, retrievalMetrics, train } from '../lib';
import { FIXTURE, dropoutOff, editJson, fixtureCopy, folderCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { native } from '../lib/native';
import { readSafetensors, writeSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

const DECODER = path.resolve(__dirname, 'fixtures', 'tiny-decoders', 'qwen3');
const RERANKER = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');
const DEBERTA = path.resolve(__dirname, 'fixtures', 'tiny-encoders', 'deberta-v3');
// Every projection of the tiny BERT's layers ("dense": the attention's output and both feed-forward ones), so that the
// tiny model's loss falls within a few epochs.
const TARGETS = ['query', 'key', 'value', 'dense'];
const floats = (raw: { data: Buffer }) => new Float32Array(raw.data.buffer.slice(raw.data.byteOffset, raw.data.byteOffset + raw.data.byteLength));
// The six projections of a BERT layer that TARGETS adapts.
const ADAPTED = ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense', 'intermediate.dense', 'output.dense'];

/** The adapter train() wrote in `output`: its adapter_config.json and tensors. */
function savedAdapter(output: string) {
  return {
    config: JSON.parse(fs.readFileSync(path.join(output, 'adapter', 'adapter_config.json'), 'utf8')),
    tensors: readSafetensors(path.join(output, 'adapter', 'adapter_model.safetensors')).tensors,
  };
}

/** The names of the weights in `output`'s merged model that differ from the base model's in `base` (both hold the same names), sorted. */
function changedWeights(t: ExecutionContext, base: string, output: string): string[] {
  const before = readSafetensors(path.join(base, 'model.safetensors')).tensors;
  const merged = readSafetensors(path.join(output, 'model.safetensors')).tensors;
  t.deepEqual([...merged.keys()].sort(), [...before.keys()].sort());
  return [...merged].filter(([name, raw]) => !raw.data.equals(before.get(name)!.data)).map(([name]) => name).sort();
}

test('train({ lora }) trains only the adapters: the merged model changes only the adapted weights, and the base model with the saved adapter embeds as it does', async (t) => {
  const data = wordDataset(40);
  const output = path.join(tempDir(), 'lora');
  const before = await Encoder.load(FIXTURE, { device: 'cpu' });
  const start = await retrievalMetrics(before, data);
  before.dispose();
  const result = await train({ model: FIXTURE, data, output, epochs: 4, batchSize: 8, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 3, lora: { rank: 4, alpha: 8, targetModules: TARGETS } });
  const losses = result.history.epochs.map((e) => e.trainLoss);
  t.true(losses[losses.length - 1] < 0.8 * losses[0], `train loss ${losses.map((l) => l.toFixed(3))}`);

  // The adapter as PEFT writes it.
  const { config, tensors: adapter } = savedAdapter(output);
  t.like(config, { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: TARGETS, base_model_name_or_path: FIXTURE, use_dora: false });
  const card = fs.readFileSync(path.join(output, 'README.md'), 'utf8');
  t.regex(card, /LoRA: rank 4, alpha 8 on `query`, `key`, `value`, `dense`; only the adapters trained/);
  t.regex(card, /Encoder\.load\(base, \{ adapter: '\.\/this-folder\/adapter' \}\)/);
  t.is(adapter.size, 2 * 6 * 2, 'lora_A and lora_B of query, key, value and the three dense projections in both layers');
  t.deepEqual(adapter.get('base_model.model.encoder.layer.0.attention.self.query.lora_A.weight')!.shape, [4, 32]);
  t.deepEqual(adapter.get('base_model.model.encoder.layer.1.attention.self.value.lora_B.weight')!.shape, [32, 4]);

  // The merged weights: the base's but for the adapted projections' weights (not even their biases; not BERT's pooler,
  // which embedding does not run, though it is named dense too).
  t.deepEqual(changedWeights(t, FIXTURE, output), [0, 1].flatMap((l) => ADAPTED.map((m) => `encoder.layer.${l}.${m}.weight`)).sort());
  const merged = readSafetensors(path.join(output, 'model.safetensors')).tensors;

  const trained = await Encoder.load(output, { device: 'cpu' });
  const withAdapter = await Encoder.load(FIXTURE, { device: 'cpu', adapter: path.join(output, 'adapter') });
  t.like(withAdapter.lora, { rank: 4, alpha: 8, targetModules: TARGETS });
  t.is(trained.lora, undefined);
  const texts = data.map((d) => d.query);
  const [a, b] = [await trained.embed(texts), await withAdapter.embed(texts)];
  t.true(maxAbsDiff(a.data, b.data) < 1e-6, `merged vs base + adapter: ${maxAbsDiff(a.data, b.data)}`);
  // quantize 'int8' quantizes the weights with the adapter merged in: base + adapter as the merged folder, in int8 too.
  const [adaptedInt8, mergedInt8] = [
    await Encoder.load(FIXTURE, { device: 'cpu', adapter: path.join(output, 'adapter'), quantize: 'int8' }),
    await Encoder.load(output, { device: 'cpu', quantize: 'int8' }),
  ];
  const [qa, qb] = [await adaptedInt8.embed(texts), await mergedInt8.embed(texts)];
  adaptedInt8.dispose();
  mergedInt8.dispose();
  t.true(maxAbsDiff(qa.data, qb.data) < 1e-6, `int8: merged vs base + adapter: ${maxAbsDiff(qa.data, qb.data)}`);
  t.true(maxAbsDiff(qa.data, b.data) < 0.05, `int8 vs float32, base + adapter: ${maxAbsDiff(qa.data, b.data)}`);
  const end = await retrievalMetrics(trained, data);
  t.true(end['mrr@10'] > start['mrr@10'] + 0.1, `MRR@10 on the training questions ${start['mrr@10']} -> ${end['mrr@10']}`);
  // An index built with base + adapter loads with them, and is refused for the bare base (the adapter is in the model's
  // fingerprint: without it the vectors differ).
  const indexDir = path.join(tempDir(), 'index');
  await (await Index.build(withAdapter, texts.slice(0, 5).map((text, i) => ({ id: `d${i}`, text })))).save(indexDir);
  t.is((await Index.load(indexDir, withAdapter)).size, 5);
  const bare = await Encoder.load(FIXTURE, { device: 'cpu' });
  await t.throwsAsync(Index.load(indexDir, bare), { message: /was built with another model/ });
  bare.dispose();
  // Saving the adapted model again writes the same merged weights and the adapter.
  const again = path.join(tempDir(), 'again');
  await withAdapter.save(again);
  t.true(maxAbsDiff(floats(readSafetensors(path.join(again, 'model.safetensors')).tensors.get('encoder.layer.1.attention.self.value.weight')!),
    floats(merged.get('encoder.layer.1.attention.self.value.weight')!)) < 1e-6);
  t.true(fs.existsSync(path.join(again, 'adapter', 'adapter_model.safetensors')));
  // The CLI: coltrast embed --adapter.
  const textsFile = path.join(tempDir(), 'texts.txt');
  fs.writeFileSync(textsFile, texts.slice(0, 5).join('\n'));
  const cli = spawnSync(process.execPath, [path.resolve(__dirname, '..', 'dist', 'cli.js'), 'embed', textsFile, '--model', FIXTURE, '--adapter', path.join(output, 'adapter'), '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000 });
  t.is(cli.status, 0, cli.stderr);
  const fromCli = cli.stdout.trim().split('\n').filter((l) => l.startsWith('{"index"')).map((l) => JSON.parse(l).embedding as number[]);
  t.is(fromCli.length, 5);
  t.true(maxAbsDiff(fromCli.flat(), Array.from(a.data.subarray(0, 5 * 32))) < 2e-6, 'the merged model\'s vectors (the CLI writes 6 decimals)');
  // A model loaded in bfloat16 carries the adapter in bfloat16, as PEFT does.
  const half = await Encoder.load(FIXTURE, { device: 'cpu', dtype: 'bfloat16', adapter: path.join(output, 'adapter') });
  const difference = maxAbsDiff((await half.embed(texts)).data, a.data);
  t.true(difference > 0 && difference < 3e-2, `bfloat16 with the adapter against float32 merged: ${difference}`);
  half.dispose();
  trained.dispose();
  withAdapter.dispose();
});

test('a decoder (Qwen3) embedding model takes LoRA adapters on its q_proj and v_proj (and any projections named)', async (t) => {
  const output = path.join(tempDir(), 'lora-qwen3');
  const result = await train({ model: DECODER, data: wordDataset(16), output, epochs: 2, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 3, lora: { targetModules: ['q_proj', 'v_proj', 'down_proj'] } });
  t.true(result.history.epochs.every((e) => Number.isFinite(e.trainLoss)));
  const names = [...readSafetensors(path.join(output, 'adapter', 'adapter_model.safetensors')).tensors.keys()];
  t.true(names.includes('base_model.model.layers.0.mlp.down_proj.lora_B.weight'), names.join(' '));
  const trained = await Encoder.load(output, { device: 'cpu' });
  const adapted = await Encoder.load(DECODER, { device: 'cpu', adapter: path.join(output, 'adapter') });
  const texts = ['a question about models', 'the river bank'];
  t.true(maxAbsDiff((await trained.embed(texts)).data, (await adapted.embed(texts)).data) < 1e-5);
  trained.dispose();
  adapted.dispose();
});

for (const [kind, extra] of [['embedding model', {}], ['cross-encoder', { model: RERANKER, crossEncoder: true }]] as const) {
  test(`a LoRA run killed mid-way resumes (the base model with the checkpoint adapter) to the weights of an uninterrupted run: ${kind}`, async (t) => {
    const child = path.resolve(__dirname, 'helpers', 'train-child.ts');
    const run = (options: object) => spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
    const options = { model: FIXTURE, data: wordDataset(24), epochs: 2, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 9, checkpointEvery: 2, lora: { rank: 2 }, ...extra };
    const whole = path.join(tempDir(), 'whole');
    t.is(run({ ...options, output: whole }).status, 0);
    const output = path.join(tempDir(), 'parts');
    const killed = run({ ...options, output, killAtStep: 5 });
    t.is(killed.signal, 'SIGKILL');
    t.true(fs.existsSync(path.join(`${output}.checkpoint`, 'model', 'adapter', 'adapter_model.safetensors')));
    const resumed = run({ ...options, output, resume: true });
    t.is(resumed.status, 0, resumed.stderr);
    for (const file of ['model.safetensors', path.join('adapter', 'adapter_model.safetensors')]) {
      t.true(fs.readFileSync(path.join(output, file)).equals(fs.readFileSync(path.join(whole, file))), file);
    }
  });
}

test('train({ crossEncoder, lora }) trains the adapters and the classifier only (PEFT\'s sequence classification); the reranker with the saved adapter scores as the merged one, and so does a folder holding only the adapter', async (t) => {
  const data = wordDataset(40);
  const output = path.join(tempDir(), 'reranker-lora');
  // BCE: the tiny reranker's sigmoid scores start saturated, where the default loss (over sigmoid scores) learns slowly.
  // (On these random words the loss falls mostly by learning how rare positives are; whether the cross-encoder's
  // loss is right is test/cross-encoder.test.ts's question.)
  const result = await train({ model: RERANKER, data, output, epochs: 4, batchSize: 8, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: { loss: 'bce' }, lora: { rank: 4, alpha: 8, targetModules: TARGETS } });
  const losses = result.history.epochs.map((e) => e.trainLoss);
  t.true(losses[losses.length - 1] < 0.5 * losses[0], `train loss ${losses.map((l) => l.toFixed(3))}`);

  // The adapter as PEFT writes one for AutoModelForSequenceClassification: the base model's prefix in the adapters'
  // names, and the classifier (modules_to_save) whole.
  const { config, tensors: adapter } = savedAdapter(output);
  t.like(config, { peft_type: 'LORA', task_type: 'SEQ_CLS', r: 4, lora_alpha: 8, target_modules: TARGETS, modules_to_save: ['classifier', 'score'], base_model_name_or_path: RERANKER });
  const card = fs.readFileSync(path.join(output, 'README.md'), 'utf8');
  t.regex(card, /only the adapters and the classification head's `classifier`, `score` \(PEFT's modules_to_save\) trained/);
  t.regex(card, /CrossEncoder\.load\(base, \{ adapter: '\.\/this-folder\/adapter' \}\)/);
  t.is(adapter.size, 2 * 6 * 2 + 2, 'lora_A and lora_B of six projections in both layers, and the classifier\'s weight and bias');
  t.deepEqual(adapter.get('base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight')!.shape, [4, 32]);
  t.deepEqual(adapter.get('base_model.model.classifier.weight')!.shape, [1, 32]);

  // The merged reranker: the base's weights but for the adapted projections and the classifier (BERT's pooler stays, as in PEFT).
  t.deepEqual(changedWeights(t, RERANKER, output), [...[0, 1].flatMap((l) => ADAPTED.map((m) => `bert.encoder.layer.${l}.${m}.weight`)), 'classifier.bias', 'classifier.weight'].sort());
  const merged = readSafetensors(path.join(output, 'model.safetensors')).tensors;
  t.deepEqual(floats(adapter.get('base_model.model.classifier.weight')!), floats(merged.get('classifier.weight')!));

  const pairs = data.slice(0, 8).map((p): [string, string] => [p.query, p.positive]);
  const trained = await CrossEncoder.load(output, { device: 'cpu' });
  const withAdapter = await CrossEncoder.load(RERANKER, { device: 'cpu', adapter: path.join(output, 'adapter') });
  t.like(withAdapter.lora, { rank: 4, taskType: 'SEQ_CLS', modulesToSave: ['classifier', 'score'] });
  t.is(trained.lora, undefined);
  const want = (await trained.predict(pairs, { activation: 'identity' })).data;
  t.true(maxAbsDiff(want, (await withAdapter.predict(pairs, { activation: 'identity' })).data) < 1e-5);
  // Saving the adapted reranker again writes the merged weights and the adapter with its classifier.
  const again = path.join(tempDir(), 'again');
  await withAdapter.save(again);
  t.true(readSafetensors(path.join(again, 'adapter', 'adapter_model.safetensors')).tensors.has('base_model.model.classifier.bias'));
  const reloaded = await CrossEncoder.load(again, { device: 'cpu' });
  t.true(maxAbsDiff(want, (await reloaded.predict(pairs, { activation: 'identity' })).data) < 1e-5);
  // The layout sentence-transformers saves for a CrossEncoder with an adapter (the adapter with its head, the tokenizer;
  // no config.json or weights) loads on the base adapter_config.json names ("has no config.json" before).
  const onlyAdapter = folderCopy(output, (d) => {
    for (const f of ['config.json', 'model.safetensors']) fs.rmSync(path.join(d, f));
    for (const f of fs.readdirSync(path.join(d, 'adapter'))) fs.renameSync(path.join(d, 'adapter', f), path.join(d, f));
  });
  const direct = await CrossEncoder.load(onlyAdapter, { device: 'cpu' });
  t.like(direct.lora, { rank: 4, taskType: 'SEQ_CLS' });
  t.true(maxAbsDiff(want, (await direct.predict(pairs, { activation: 'identity' })).data) < 1e-5);
  for (const model of [trained, withAdapter, reloaded, direct]) model.dispose();
});

test('a cross-encoder trained with LoRA from an embedding model saves its new head in the adapter (the classifier, and DeBERTa\'s new pooler); the embedding model with that adapter loads as the reranker', async (t) => {
  const output = path.join(tempDir(), 'deberta-reranker');
  await train({ model: DEBERTA, data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: true, lora: true });
  const { config, tensors } = savedAdapter(output);
  t.deepEqual(config.modules_to_save, ['classifier', 'score', 'pooler']);
  t.deepEqual(config.target_modules, ['query_proj', 'value_proj']);
  const names = [...tensors.keys()].filter((n) => !n.includes('lora_'));
  t.deepEqual(names.sort(), ['base_model.model.classifier.bias', 'base_model.model.classifier.weight', 'base_model.model.pooler.dense.bias', 'base_model.model.pooler.dense.weight']);
  const pairs: [string, string][] = [['a question about models', 'the river bank'], ['which model embeds text', 'vectors of text']];
  const merged = await CrossEncoder.load(output, { device: 'cpu' });
  const adapted = await CrossEncoder.load(DEBERTA, { device: 'cpu', adapter: path.join(output, 'adapter') });
  const diff = maxAbsDiff((await merged.predict(pairs, { activation: 'identity' })).data, (await adapted.predict(pairs, { activation: 'identity' })).data);
  t.true(diff < 1e-5, `merged vs the embedding model + adapter: ${diff}`);
  merged.dispose();
  adapted.dispose();
});

test('cross-encoder adapters are checked: an embedding model refuses a classifier\'s adapter, a new head needs one, modules_to_save may name only the head, and the head the config names must be in the file', async (t) => {
  const reranker = path.join(tempDir(), 'reranker');
  await train({ model: RERANKER, data: wordDataset(8), output: reranker, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: true, lora: { rank: 2 } });
  const embedding = path.join(tempDir(), 'embedding');
  await train({ model: FIXTURE, data: wordDataset(8), output: embedding, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, lora: { rank: 2 } });
  const seqCls = path.join(reranker, 'adapter');
  const loadCross = (model: string, adapter: string) => rejection(() => CrossEncoder.load(model, { device: 'cpu', adapter }));
  t.regex((await rejection(() => Encoder.load(FIXTURE, { device: 'cpu', adapter: seqCls }))).message, /modules_to_save classifier, score: a cross-encoder's classification head.*load it with CrossEncoder\.load\(base, \{ adapter \}\)/);
  t.regex((await loadCross(FIXTURE, path.join(embedding, 'adapter'))).message, /is not a cross-encoder, and the adapter .* does not hold a classification head for it \(its modules_to_save lacks classifier\)/);
  const naming = (modules: string[]) => folderCopy(seqCls, (d) => editJson(path.join(d, 'adapter_config.json'), (c) => ({ ...c, modules_to_save: modules })));
  const error = await loadCross(RERANKER, naming(['classifier', 'dense']));
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /names bert\.embeddings\.LayerNorm|names bert\.encoder\.layer\.0\.attention\.output\.dense, a module of the base model/);
  const headless = folderCopy(seqCls, (d) => {
    const file = path.join(d, 'adapter_model.safetensors');
    const tensors = readSafetensors(file).tensors;
    tensors.delete('base_model.model.classifier.weight');
    writeSafetensors(file, tensors);
  });
  t.regex((await loadCross(RERANKER, headless)).message, /has no base_model\.model\.classifier\.weight, which its adapter_config\.json's modules_to_save says it trained/);
});

test('LoRA options and adapters are checked', async (t) => {
  const base = { model: FIXTURE, data: wordDataset(8), device: 'cpu' as const, valSplit: 0, epochs: 1, batchSize: 4 };
  const rejects = async (options: object, pattern: RegExp) => {
    const error = await train({ ...base, output: path.join(tempDir(), 'out'), ...options } as any).then(() => undefined, (e) => e);
    t.true(error instanceof ColtrastError, `expected a ColtrastError, got ${error}`);
    t.regex(error.message, pattern);
  };
  await rejects({ lora: { rank: 0 } }, /options\.lora\.rank must be a positive integer/);
  await rejects({ lora: { rnak: 4 } }, /unknown option options\.lora\.rnak/);
  await rejects({ lora: 'yes' }, /options\.lora must be true or an object/);
  await rejects({ lora: true, projection: { dimension: 8 } }, /options\.lora trains adapters .* drop options\.projection/);
  await rejects({ lora: true, freezeBase: true }, /drop options\.freezeBase/);
  await rejects({ lora: { targetModules: ['q_proj'] } }, /no projection of this bert model is named q_proj \(its projections: .*query.*\)/);

  // Adapters that do not fit, or that coltrast does not compute.
  const made = path.join(tempDir(), 'made');
  await train({ ...base, output: made, lora: { rank: 2 } });
  const adapterOf = (edit: (dir: string) => void) => folderCopy(path.join(made, 'adapter'), edit);
  const load = (adapter: string, model = FIXTURE) => rejection(() => Encoder.load(model, { device: 'cpu', adapter }));
  t.regex((await load(adapterOf((d) => editJson(path.join(d, 'adapter_config.json'), (c) => ({ ...c, use_dora: true }))))).message, /use_dora \(DoRA\) is set/);
  t.regex((await load(adapterOf((d) => editJson(path.join(d, 'adapter_config.json'), (c) => ({ ...c, peft_type: 'IA3' }))))).message, /peft_type "IA3" is not LORA/);
  t.regex((await load(adapterOf((d) => fs.rmSync(path.join(d, 'adapter_model.safetensors'))))).message, /is not a PEFT adapter folder/);
  t.regex((await load(path.join(made, 'adapter'), DECODER)).message, /names no projection of this qwen3 model/);
});

test("an adapter_config.json that does not fit its weights (another r, target_modules that leave some out) or holds values PEFT refuses is refused, not run with a wrong scale or NaN", async (t) => {
  const made = path.join(tempDir(), 'made');
  await train({ model: FIXTURE, data: wordDataset(8), output: made, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-1, lora: { rank: 2, alpha: 4 } });
  const editConfig = (edit: (c: Record<string, unknown>) => Record<string, unknown>) =>
    folderCopy(path.join(made, 'adapter'), (d) => editJson(path.join(d, 'adapter_config.json'), edit));
  const load = (adapter: string) => rejection(() => Encoder.load(FIXTURE, { device: 'cpu', adapter }));
  // The weights' rank is 2: "r": 4 used to load with the scale alpha / 4, and every embedding changed silently.
  let error = await load(editConfig((c) => ({ ...c, r: 4 })));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /"r" is 4, but base_model\.model\..*\.lora_A\.weight in adapter_model\.safetensors has rank 2/);
  // JSON's 1e999 is Infinity: NaN embeddings before.
  const infinite = folderCopy(path.join(made, 'adapter'), (d) => {
    const file = path.join(d, 'adapter_config.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/"lora_alpha": [0-9.]+/, '"lora_alpha": 1e999'));
  });
  t.regex((await load(infinite)).message, /"lora_alpha" must be a positive number/);
  // A dropout out of range was libtorch's NATIVE error; one that is not a number was read as 0.
  for (const dropout of [1.5, 'x']) t.regex((await load(editConfig((c) => ({ ...c, lora_dropout: dropout })))).message, /"lora_dropout" must be a number in \[0, 1\)/);
  // Not an object: a TypeError before.
  const nullConfig = folderCopy(path.join(made, 'adapter'), (d) => fs.writeFileSync(path.join(d, 'adapter_config.json'), 'null'));
  error = await load(nullConfig);
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /adapter_config\.json must be a JSON object/);
  // target_modules that leave out modules the file adapts: all of them were applied (PEFT would adapt none of those).
  const saved = JSON.parse(fs.readFileSync(path.join(made, 'adapter', 'adapter_config.json'), 'utf8')).target_modules as string[];
  error = await load(editConfig((c) => ({ ...c, target_modules: saved.slice(1) })));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, new RegExp(`target_modules .* does not name \\S*\\.${saved[0]}, whose adapter is in adapter_model\\.safetensors`));
  // A regular expression (PEFT's string form, matched against the model's module names) that names them all, and
  // "all-linear", load.
  for (const targets of [`encoder\\.layer\\.\\d+\\..*\\.(${saved.join('|')})`, 'all-linear']) {
    const loaded = await Encoder.load(FIXTURE, { device: 'cpu', adapter: editConfig((c) => ({ ...c, target_modules: targets })) });
    loaded.dispose();
  }
  // The adapter as saved still loads.
  const good = await Encoder.load(FIXTURE, { device: 'cpu', adapter: path.join(made, 'adapter') });
  t.like(good.lora, { rank: 2, alpha: 4, dropout: 0 });
  good.dispose();
});

test('LoRA with gradient checkpointing ends with the adapters of a run without (to float32 summation order)', async (t) => {
  const dir = tempDir();
  const run = async (gradientCheckpointing: boolean) => {
    const output = path.join(dir, String(gradientCheckpointing));
    await train({ model: FIXTURE, data: wordDataset(16, 5), output, epochs: 1, batchSize: 8, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-2, gradientCheckpointing, lora: { rank: 4, dropout: 0.1 } });
    return readSafetensors(path.join(output, 'adapter', 'adapter_model.safetensors')).tensors;
  };
  const plain = await run(false);
  const checkpointed = await run(true);
  t.deepEqual([...checkpointed.keys()], [...plain.keys()]);
  let worst = 0;
  for (const [name, raw] of plain) worst = Math.max(worst, maxAbsDiff(floats(raw), floats(checkpointed.get(name)!)));
  t.true(worst < 1e-6, `max abs difference ${worst}`);
  t.true([...plain.values()].some((raw) => floats(raw).some((x) => x !== 0)));
});

test("a folder holding only an adapter (sentence-transformers' save of a model with one) loads on its base, and train() goes on training that adapter", async (t) => {
  const first = path.join(tempDir(), 'first');
  await train({ model: FIXTURE, data: wordDataset(16), output: first, epochs: 1, batchSize: 8, valSplit: 0, device: 'cpu', seed: 3, learningRate: 1e-2, lora: { rank: 4 } });
  // The layout sentence-transformers writes: modules, tokenizer and the adapter, no config.json or weights.
  const onlyAdapter = folderCopy(first, (d) => {
    for (const f of ['config.json', 'model.safetensors']) fs.rmSync(path.join(d, f));
    for (const f of fs.readdirSync(path.join(d, 'adapter'))) fs.renameSync(path.join(d, 'adapter', f), path.join(d, f));
  });
  const texts = wordDataset(8).map((p) => p.query);
  const merged = await Encoder.load(first, { device: 'cpu' });
  const direct = await Encoder.load(onlyAdapter, { device: 'cpu' });
  t.like(direct.lora, { rank: 4, baseModel: FIXTURE });
  t.true(maxAbsDiff((await direct.embed(texts)).data, (await merged.embed(texts)).data) < 1e-6);
  merged.dispose();
  direct.dispose();
  t.regex((await rejection(() => train({ model: onlyAdapter, data: wordDataset(8), output: path.join(tempDir(), 'x'), epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu' }))).message, /carries a LoRA adapter, which is what trains: pass options\.lora/);
  const second = path.join(tempDir(), 'second');
  await train({ model: onlyAdapter, data: wordDataset(16), output: second, epochs: 1, batchSize: 8, valSplit: 0, device: 'cpu', seed: 4, learningRate: 1e-2, lora: true });
  const adapter = (dir: string) => readSafetensors(path.join(dir, 'adapter_model.safetensors')).tensors.get('base_model.model.encoder.layer.0.attention.self.query.lora_B.weight')!;
  t.deepEqual(adapter(path.join(second, 'adapter')).shape, [32, 4], 'the same rank-4 adapter');
  t.false(adapter(path.join(second, 'adapter')).data.equals(adapter(onlyAdapter).data), 'trained further');
  t.is(JSON.parse(fs.readFileSync(path.join(second, 'adapter', 'adapter_config.json'), 'utf8')).base_model_name_or_path, FIXTURE);
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: train({ lora }) on the GPU follows the same run on the CPU (float32; bfloat16 autocast close), and a LoRA adapter loads on the GPU (float32, bfloat16); the same for a reranker's LoRA run and adapter${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    // Dropout off: the CPU's and the GPU's generators draw different masks.
    const model = fixtureCopy(dropoutOff);
    const data = wordDataset(24);
    const dir = tempDir();
    const run = async (device: 'cpu' | 'cuda', precision: 'float32' | 'bfloat16') => {
      const output = path.join(dir, `${device}-${precision}`);
      const r = await train({ model, data, output, epochs: 2, batchSize: 8, learningRate: 1e-2, valSplit: 0, device, precision, seed: 3, lora: { rank: 4, alpha: 8, targetModules: TARGETS } });
      return { output, losses: r.history.steps.map((s) => s.loss) };
    };
    const cpu = await run('cpu', 'float32');
    const gpu = await run('cuda', 'float32');
    const relative = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(x)));
    t.is(gpu.losses.length, cpu.losses.length);
    t.true(relative(cpu.losses, gpu.losses) < 1e-3, `losses ${cpu.losses} / ${gpu.losses}`);
    const cpuAdapter = readSafetensors(path.join(cpu.output, 'adapter', 'adapter_model.safetensors')).tensors;
    const gpuAdapter = readSafetensors(path.join(gpu.output, 'adapter', 'adapter_model.safetensors')).tensors;
    t.deepEqual([...gpuAdapter.keys()], [...cpuAdapter.keys()]);
    let worst = 0;
    for (const [name, raw] of cpuAdapter) worst = Math.max(worst, maxAbsDiff(floats(raw), floats(gpuAdapter.get(name)!)));
    t.true(worst < 1e-3, `adapter weights differ by ${worst}`);
    const bf16 = await run('cuda', 'bfloat16');
    t.true(bf16.losses.every(Number.isFinite) && relative(cpu.losses, bf16.losses) < 5e-2, `bfloat16 losses ${bf16.losses}`);

    // The CPU run's adapter on the base model, on the GPU, embeds as the CPU's merged model.
    const texts = data.slice(0, 8).map((p) => p.query);
    const merged = await Encoder.load(cpu.output, { device: 'cpu' });
    const want = (await merged.embed(texts)).data;
    merged.dispose();
    for (const [dtype, tolerance] of [['float32', 1e-4], ['bfloat16', 3e-2]] as const) {
      const adapted = await Encoder.load(model, { device: 'cuda', dtype, adapter: path.join(cpu.output, 'adapter') });
      try {
        const diff = maxAbsDiff((await adapted.embed(texts)).data, want);
        t.true(diff < tolerance, `${dtype}: ${diff}`);
      } finally {
        adapted.dispose();
      }
    }

    // A reranker's LoRA run (adapters and classifier) on the GPU follows the CPU's, and its adapter scores on the GPU as
    // the CPU's merged reranker.
    const reranker = folderCopy(RERANKER, dropoutOff);
    const rerankerRun = async (device: 'cpu' | 'cuda') => {
      const output = path.join(dir, `reranker-${device}`);
      const r = await train({ model: reranker, data, output, epochs: 2, batchSize: 8, learningRate: 1e-2, valSplit: 0, device, seed: 3, crossEncoder: { loss: 'bce' }, lora: { rank: 4, alpha: 8, targetModules: TARGETS } });
      return { output, losses: r.history.steps.map((s) => s.loss) };
    };
    const cpuReranker = await rerankerRun('cpu');
    const gpuReranker = await rerankerRun('cuda');
    t.true(relative(cpuReranker.losses, gpuReranker.losses) < 1e-3, `reranker losses ${cpuReranker.losses} / ${gpuReranker.losses}`);
    const pairs = data.slice(0, 8).map((p): [string, string] => [p.query, p.positive]);
    const mergedReranker = await CrossEncoder.load(cpuReranker.output, { device: 'cpu' });
    const wantScores = (await mergedReranker.predict(pairs, { activation: 'identity' })).data;
    mergedReranker.dispose();
    const largest = Math.max(1, ...Array.from(wantScores, Math.abs));
    for (const [dtype, tolerance] of [['float32', 1e-4 * largest], ['bfloat16', 2e-2 * largest]] as const) {
      const adapted = await CrossEncoder.load(reranker, { device: 'cuda', dtype, adapter: path.join(cpuReranker.output, 'adapter') });
      try {
        const diff = maxAbsDiff((await adapted.predict(pairs, { activation: 'identity' })).data, wantScores);
        t.true(diff < tolerance, `reranker ${dtype}: ${diff}`);
      } finally {
        adapted.dispose();
      }
    }
  },
);
