// Adaptive layers (train({ loss: { adaptiveLayers } }), sentence-transformers' AdaptiveLayerLoss / Matryoshka2dLoss) and
// models cut to their first layers (truncateLayers, coltrast truncate): the layers each step draws and their weights, a
// run whose cut model retrieves better than a plain run's cut model, what the loss cannot train refused by name, the
// command line, a killed run's exact resume, and the cut folders (sharded weights too). The loss equals
// sentence-transformers' on a batch, with its gradient, and the cut model's vectors equal the full model's states
// entering that layer, in both libraries (test/python-interop.test.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, Index, evaluate, train, truncateLayers } from '../lib';
import { adaptiveLayersStep } from '../lib/train';
import { stackLayerOf } from '../lib/model-layers';
import { readSafetensorsHeader, safetensorsHeaderBytes } from '../lib/safetensors';
import { CLI, FIXTURE, fixtureCopy, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { checkKillAndResumeNearEnd } from './helpers/resume';

const SETTINGS = { layersPerStep: 1, lastLayerWeight: 1, priorLayersWeight: 1, layerWeighting: 'uniform', klTemperature: 0.3, klWeight: 1 } as const;

test('each step draws its layers from the seed, the epoch and the batch, and weighs them as sentence-transformers does', (t) => {
  const draws = Array.from({ length: 60 }, (_, b) => adaptiveLayersStep(SETTINGS, 6, 3, 1, b));
  t.true(draws.every((d) => d.adaptiveLayers!.length === 1 && d.adaptiveLayerWeights![0] === 1));
  // Every layer 0 to 5 drawn at some batch; the same draws again for the same seed, other draws for another.
  t.deepEqual([...new Set(draws.map((d) => d.adaptiveLayers![0]))].sort(), [0, 1, 2, 3, 4, 5]);
  t.deepEqual(draws, Array.from({ length: 60 }, (_, b) => adaptiveLayersStep(SETTINGS, 6, 3, 1, b)));
  t.notDeepEqual(draws.map((d) => d.adaptiveLayers), Array.from({ length: 60 }, (_, b) => adaptiveLayersStep(SETTINGS, 6, 4, 1, b).adaptiveLayers));
  // Two layers, 'linear' 1 / (1 + i), averaged over the two, times priorLayersWeight.
  const two = adaptiveLayersStep({ ...SETTINGS, layersPerStep: 2, layerWeighting: 'linear', priorLayersWeight: 0.5, lastLayerWeight: 2 }, 6, 3, 2, 7);
  const [a, b] = two.adaptiveLayers!;
  t.true(a < b);
  t.deepEqual(two.adaptiveLayerWeights, [a, b].map((i) => (1 / (1 + i) / 2) * 0.5));
  t.like(two, { lastLayerWeight: 2, klTemperature: 0.3, klWeight: 1 });
  const all = adaptiveLayersStep({ ...SETTINGS, layersPerStep: 'all', layerWeighting: 'log' }, 4, 3, 1, 0);
  t.deepEqual(all.adaptiveLayers, [0, 1, 2, 3]);
  t.deepEqual(all.adaptiveLayerWeights, [0, 1, 2, 3].map((i) => 1 / (1 + Math.log(1 + i)) / 4));
  t.deepEqual(adaptiveLayersStep(undefined, 4, 3, 1, 0), {});
});

/** MRR@10 of each query's positive among all the pairs' positives, by the model's vectors. */
async function pairMrr(model: string, pairs: { query: string; positive: string }[]): Promise<number> {
  const encoder = await Encoder.load(model, { device: 'cpu' });
  try {
    const q = await encoder.embed(pairs.map((p) => p.query));
    const d = await encoder.embed(pairs.map((p) => p.positive));
    const width = q.dims[1];
    let sum = 0;
    for (let i = 0; i < pairs.length; i++) {
      const scores = pairs.map((_, j) => {
        let s = 0;
        for (let k = 0; k < width; k++) s += q.data[i * width + k] * d.data[j * width + k];
        return s;
      });
      const rank = scores.filter((s) => s > scores[i]).length;
      if (rank < 10) sum += 1 / (rank + 1);
    }
    return sum / pairs.length;
  } finally {
    encoder.dispose();
  }
}

test('a model trained with adaptive layers, cut to its first layer, retrieves better than a plainly trained one cut so; the card says how to cut it', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(240, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const heldOut = wordDataset(100, 99);
  const mrr: Record<string, { full: number; cut: number }> = {};
  let after: Awaited<ReturnType<typeof train>>['after'];
  for (const [name, loss] of [['plain', { contrastiveWeight: 1, lateInteractionWeight: 0 }], ['adaptive', { adaptiveLayers: { layersPerStep: 'all' as const } }]] as const) {
    const output = path.join(dir, name);
    // 10% held out (validation, and the kept model's metrics at each depth); the same split for both runs.
    const run = await train({ model: FIXTURE, data, output, epochs: 10, batchSize: 16, learningRate: 5e-3, loss, device: 'cpu', checkpointEvery: 0, seed: 4, valSplit: 0.1 });
    if (name === 'adaptive') after = run.after;
    else t.is(run.after!.layers, undefined, 'no depths without adaptive layers');
    const cut = await truncateLayers({ model: output, layers: 1, output: `${output}-1` });
    t.like(cut, { from: 2, layers: 1, droppedTensors: 16 });
    mrr[name] = { full: await pairMrr(output, heldOut), cut: await pairMrr(cut.output, heldOut) };
  }
  t.log(`held-out MRR@10, full / first layer alone: plain ${mrr.plain.full.toFixed(3)} / ${mrr.plain.cut.toFixed(3)}, adaptive ${mrr.adaptive.full.toFixed(3)} / ${mrr.adaptive.cut.toFixed(3)}`);
  // Seeds 4, 5 and 6 gave +0.14, +0.10 and +0.05 for the first layer alone, and +0.03, -0.01 and -0.02 for the full model.
  t.true(mrr.adaptive.cut > mrr.plain.cut + 0.03, `first layer alone: adaptive ${mrr.adaptive.cut}, plain ${mrr.plain.cut}`);
  t.true(mrr.adaptive.full > mrr.plain.full - 0.05, `full model: adaptive ${mrr.adaptive.full}, plain ${mrr.plain.full}`);
  const history = JSON.parse(fs.readFileSync(path.join(dir, 'adaptive', 'training_history.json'), 'utf8'));
  t.deepEqual(history.config.adaptiveLayers, { ...SETTINGS, layersPerStep: 'all' });
  t.like(history.config.step, { contrastiveWeight: 1, lateInteractionWeight: 0 });
  // The kept model's validation with its first layer alone: what the model loaded with { layers: 1 } retrieves.
  t.is(after!.layers!.length, 1);
  const [first] = after!.layers!;
  t.is(first.layers, 1);
  t.true(first['mrr@10'] > 0 && first['mrr@10'] <= after!['mrr@10'] + 0.05, `first layer ${first['mrr@10']}, whole ${after!['mrr@10']}`);
  const card = fs.readFileSync(path.join(dir, 'adaptive', 'README.md'), 'utf8');
  t.regex(card, /## Adaptive layers[\s\S]*\| layers \| Recall@1 \| MRR@10 \|\n\|---\|---\|---\|\n\| 1 \| [\d.]+ \| [\d.]+ \|\n\| 2 \| [\d.]+ \| [\d.]+ \|[\s\S]*coltrast truncate --model \.\/this-folder --layers 1/);
  t.true(card.includes(`| 1 | ${first['recall@1'].toFixed(3)} | ${first['mrr@10'].toFixed(3)} |`));
  t.notRegex(fs.readFileSync(path.join(dir, 'plain', 'README.md'), 'utf8'), /Adaptive layers/);
});

test('what adaptive layers cannot train is refused by name', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(40, 3).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const base = { model: FIXTURE, data, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 8 };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  await refused({ ...base, miniBatchSize: 4, loss: { adaptiveLayers: true } }, /options\.loss\.adaptiveLayers trains a single-vector embedding model's pooled vectors after each layer: options\.miniBatchSize is for other training/);
  await refused({ ...base, multiVector: { dimension: 8 }, loss: { adaptiveLayers: true } }, /options\.multiVector is for other training/);
  await refused({ ...base, sparse: true, loss: { adaptiveLayers: true } }, /options\.sparse is for other training/);
  await refused({ ...base, crossEncoder: true, loss: { adaptiveLayers: true } } as never, /options\.crossEncoder/);
  await refused({ ...base, loss: { adaptiveLayers: true, lateInteractionWeight: 0.5 } }, /drop options\.loss\.lateInteractionWeight and options\.loss\.lateInteraction/);
  await refused({ ...base, loss: { adaptiveLayers: { layersPerStep: 3 } } }, /options\.loss\.adaptiveLayers\.layersPerStep must be at most the 2 layers of .*tiny-bert \(or 'all'\), got number 3/);
  await refused({ ...base, loss: { adaptiveLayers: { layersPerStep: 0 } } }, /options\.loss\.adaptiveLayers\.layersPerStep must be a positive integer/);
  await refused({ ...base, loss: { adaptiveLayers: { layerWeighting: 'square' as never } } }, /options\.loss\.adaptiveLayers\.layerWeighting must be one of 'uniform', 'log', 'linear'/);
  await refused({ ...base, loss: { adaptiveLayers: { klTemperature: -1 } } }, /options\.loss\.adaptiveLayers\.klTemperature must be a number >= 0/);
  await refused({ ...base, loss: { adaptiveLayers: { layers: 2 } as never } }, /options\.loss\.adaptiveLayers.*layers/);
  // A model of one layer has no earlier layer to train.
  const one = fixtureCopy();
  await truncateLayers({ model: FIXTURE, layers: 1, output: one, overwrite: true });
  await refused({ ...base, model: one, loss: { adaptiveLayers: true } }, /trains a model to work with fewer layers, and .* has 1/);
});

test('coltrast train --adaptive-layers --layers-per-step all, and coltrast truncate; their flags name themselves in errors', (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, wordDataset(40, 5).map((p) => JSON.stringify(p)).join('\n') + '\n');
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const trainArgs = ['train', '--model', FIXTURE, '--data', data, '--epochs', '1', '--batch-size', '8', '--device', 'cpu'];
  const ok = cli([...trainArgs, '--output', path.join(dir, 'out'), '--adaptive-layers', '--layers-per-step', 'all', '--matryoshka', '32,16', '--json']);
  t.is(ok.status, 0, ok.stderr);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'training_history.json'), 'utf8')).config;
  t.like(config, { adaptiveLayers: { ...SETTINGS, layersPerStep: 'all' }, matryoshka: { dimensions: [32, 16] } });
  const alone = cli([...trainArgs, '--output', path.join(dir, 'y'), '--layers-per-step', '2']);
  t.is(alone.status, 2);
  t.regex(alone.stderr, /--layers-per-step goes with --adaptive-layers/);
  const bad = cli([...trainArgs, '--output', path.join(dir, 'z'), '--adaptive-layers', '--layers-per-step', 'half']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--layers-per-step must be a positive integer or 'all', got half/);

  const cut = cli(['truncate', '--model', path.join(dir, 'out'), '--layers', '1', '--output', path.join(dir, 'cut'), '--json']);
  t.is(cut.status, 0, cut.stderr);
  t.like(JSON.parse(cut.stdout), { from: 2, layers: 1, droppedTensors: 16 });
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'cut', 'config.json'), 'utf8')).num_hidden_layers, 1);
  t.false(fs.existsSync(path.join(dir, 'cut', 'README.md')), "the full model's card is not copied");
  const again = cli(['truncate', '--model', path.join(dir, 'out'), '--layers', '1', '--output', path.join(dir, 'cut')]);
  t.not(again.status, 0);
  t.regex(again.stderr, /exists and is not empty; pass \{ overwrite: true \} to replace it|--overwrite/);
  const tooMany = cli(['truncate', '--model', path.join(dir, 'out'), '--layers', '2', '--output', path.join(dir, 'cut2')]);
  t.not(tooMany.status, 0);
  t.regex(tooMany.stderr, /--layers must be below the 2 layers of .*out \(it keeps the first ones\), got 2/);
  const noLayers = cli(['truncate', '--model', path.join(dir, 'out'), '--output', path.join(dir, 'cut3')]);
  t.is(noLayers.status, 2);
  t.regex(noLayers.stderr, /truncate needs --layers <n>/);
});

test('a run with adaptive layers killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  // One layer drawn per batch: the draws of the resumed batches must be those of the uninterrupted run.
  const base = { model: FIXTURE, data: wordDataset(48, 2), epochs: 2, batchSize: 8, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2, loss: { adaptiveLayers: { layersPerStep: 1, layerWeighting: 'linear' } } };
  checkKillAndResumeNearEnd(t, base);
});

test('truncateLayers: the later layers left out of each shard of sharded weights, the index rewritten; what it cannot cut refused', async (t) => {
  // The fixture's weights in two shards, as transformers shards a large model.
  const sharded = fixtureCopy((dir) => {
    const file = path.join(dir, 'model.safetensors');
    const fd = fs.openSync(file, 'r');
    const read = readSafetensorsHeader(fd, 2 ** 20);
    if ('problem' in read) throw new Error(read.problem);
    const names = Object.keys(read.header).filter((n) => n !== '__metadata__');
    const weightMap: Record<string, string> = {};
    names.forEach((n, i) => {
      const shard = i % 2 === 0 ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors';
      weightMap[n] = shard;
    });
    for (const shard of new Set(Object.values(weightMap))) {
      const mine = names.filter((n) => weightMap[n] === shard);
      const header: Record<string, unknown> = {};
      const parts: Buffer[] = [];
      let offset = 0;
      for (const n of mine) {
        const e = read.header[n] as { dtype: string; shape: number[]; data_offsets: [number, number] };
        const bytes = Buffer.alloc(e.data_offsets[1] - e.data_offsets[0]);
        fs.readSync(fd, bytes, 0, bytes.length, read.dataStart + e.data_offsets[0]);
        header[n] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes.length] };
        offset += bytes.length;
        parts.push(bytes);
      }
      fs.writeFileSync(path.join(dir, shard), Buffer.concat([safetensorsHeaderBytes(header), ...parts]));
    }
    fs.closeSync(fd);
    fs.rmSync(file);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 1 }, weight_map: weightMap }));
  });
  const dir = tempDir();
  const fromSingle = await truncateLayers({ model: FIXTURE, layers: 1, output: path.join(dir, 'single') });
  const fromShards = await truncateLayers({ model: sharded, layers: 1, output: path.join(dir, 'sharded') });
  t.is(fromShards.droppedTensors, fromSingle.droppedTensors);
  t.is(fromShards.weightBytes, fromSingle.weightBytes);
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'sharded', 'model.safetensors.index.json'), 'utf8'));
  t.is(index.metadata.total_size, fromShards.weightBytes);
  t.true(Object.keys(index.weight_map).every((n) => (stackLayerOf(n) ?? 0) < 1), 'no tensor of layer 1 is mapped');
  t.true(Object.keys(index.weight_map).some((n) => stackLayerOf(n) === 0));
  // The two cut models are the same model.
  const vectors = [];
  for (const model of [fromSingle.output, fromShards.output]) {
    const e = await Encoder.load(model, { device: 'cpu' });
    vectors.push(Array.from((await e.embed(['a cat sat on the mat', 'fast search'])).data));
    e.dispose();
  }
  t.deepEqual(vectors[0], vectors[1]);

  t.is(stackLayerOf('encoder.layer.11.attention.self.query.weight'), 11);
  t.is(stackLayerOf('bert.encoder.layer.3.output.dense.bias'), 3);
  t.is(stackLayerOf('transformer.layer.5.ffn.lin1.weight'), 5);
  t.is(stackLayerOf('model.layers.27.mlp.up_proj.weight'), 27);
  t.is(stackLayerOf('encoder.block.2.layer.0.SelfAttention.q.weight'), 2);
  t.is(stackLayerOf('decoder.block.2.layer.0.SelfAttention.q.weight'), undefined, "a T5 decoder's block is not an encoder layer");
  t.is(stackLayerOf('embeddings.word_embeddings.weight'), undefined);

  const refused = async (options: Parameters<typeof truncateLayers>[0], message: RegExp) => t.regex((await rejection(() => truncateLayers(options))).message, message);
  await refused({ model: FIXTURE, layers: 2, output: path.join(dir, 'a') }, /options\.layers must be below the 2 layers of .*tiny-bert \(it keeps the first ones\), got 2/);
  await refused({ model: FIXTURE, layers: 0, output: path.join(dir, 'a') }, /options\.layers must be a positive integer/);
  await refused({ model: FIXTURE, layers: 1, output: path.join(dir, 'single') }, /exists and is not empty; pass \{ overwrite: true \}/);
  const pickled = fixtureCopy((d) => fs.renameSync(path.join(d, 'model.safetensors'), path.join(d, 'pytorch_model.bin')));
  await refused({ model: pickled, layers: 1, output: path.join(dir, 'b') }, /has no model\.safetensors .*safetensors weights only/);
  await refused({ model: path.join(dir, 'nowhere'), layers: 1, output: path.join(dir, 'c') }, /nowhere/);
  t.false(fs.existsSync(path.join(dir, 'a')) || fs.existsSync(path.join(dir, 'b')), 'nothing written for a refused cut');
});

test('Encoder.load({ layers }) runs the first layers alone, as the cut folder does; save() writes that model; evaluate({ layers }) and --layers on eval and embed', async (t) => {
  const dir = tempDir();
  const cut = await truncateLayers({ model: FIXTURE, layers: 1, output: path.join(dir, 'cut') });
  const texts = ['a cat sat on the mat', 'fast search', 'what is a token'];
  const fromFolder = await Encoder.load(cut.output, { device: 'cpu' });
  const loaded = await Encoder.load(FIXTURE, { device: 'cpu', layers: 1 });
  const whole = await Encoder.load(FIXTURE, { device: 'cpu', layers: 2 });
  try {
    t.is(loaded.layers, 1);
    t.is(whole.layers, 2);
    t.deepEqual(Array.from((await loaded.embed(texts)).data), Array.from((await fromFolder.embed(texts)).data));
    t.notDeepEqual(Array.from((await loaded.embed(texts)).data), Array.from((await whole.embed(texts)).data));
    // Saved: a model of one layer, the second layer's tensors not loaded and not written.
    await loaded.save(path.join(dir, 'saved'));
    t.is(JSON.parse(fs.readFileSync(path.join(dir, 'saved', 'config.json'), 'utf8')).num_hidden_layers, 1);
    const fd = fs.openSync(path.join(dir, 'saved', 'model.safetensors'), 'r');
    const read = readSafetensorsHeader(fd, 2 ** 20);
    fs.closeSync(fd);
    if ('problem' in read) throw new Error(read.problem);
    const names = Object.keys(read.header).filter((n) => n !== '__metadata__');
    t.true(names.some((n) => stackLayerOf(n) === 0) && names.every((n) => (stackLayerOf(n) ?? 0) < 1), names.join(', '));
    // An index built by the model's first layer alone is that model's: the whole model is refused at its load.
    const built = path.join(dir, 'one-layer.index');
    await (await Index.build(loaded, texts.map((text, i) => ({ id: `d${i}`, text })))).save(built);
    t.is((await Index.load(built, loaded)).size, texts.length);
    t.regex((await rejection(() => Index.load(built, whole))).message, /model/);
  } finally {
    for (const e of [fromFolder, loaded, whole]) e.dispose();
  }
  t.regex((await rejection(() => Encoder.load(FIXTURE, { device: 'cpu', layers: 3 }))).message, /options\.layers must be at most the 2 layers of .*tiny-bert \(it keeps the first ones\), got 3/);
  t.regex((await rejection(() => Encoder.load(FIXTURE, { device: 'cpu', layers: 0 }))).message, /options\.layers must be a positive integer/);

  // A small BEIR folder: evaluate({ layers: 1 }) is the cut folder's evaluation.
  const beir = path.join(dir, 'beir');
  const pairs = wordDataset(30, 8);
  fs.mkdirSync(path.join(beir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(beir, 'corpus.jsonl'), pairs.map((p, i) => JSON.stringify({ _id: `d${i}`, text: p.positive })).join('\n') + '\n');
  fs.writeFileSync(path.join(beir, 'queries.jsonl'), pairs.map((p, i) => JSON.stringify({ _id: `q${i}`, text: p.query })).join('\n') + '\n');
  fs.writeFileSync(path.join(beir, 'qrels', 'test.tsv'), `query-id\tcorpus-id\tscore\n${pairs.map((_, i) => `q${i}\td${i}\t1`).join('\n')}\n`);
  const byOption = await evaluate({ data: beir, model: FIXTURE, layers: 1, device: 'cpu' });
  const byFolder = await evaluate({ data: beir, model: cut.output, device: 'cpu' });
  t.deepEqual(byOption.metrics, byFolder.metrics);
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const run = cli(['eval', '--data', beir, '--model', FIXTURE, '--layers', '1', '--device', 'cpu', '--json']);
  t.is(run.status, 0, run.stderr);
  const [result] = JSON.parse(run.stdout);
  t.regex(result.name, /\(1 layers\)$/);
  t.deepEqual(result.metrics, byFolder.metrics);
  const textsFile = path.join(dir, 'texts.txt');
  fs.writeFileSync(textsFile, texts.join('\n') + '\n');
  const embedded = cli(['embed', textsFile, '--model', FIXTURE, '--layers', '1', '--device', 'cpu']);
  t.is(embedded.status, 0, embedded.stderr);
  const rows = embedded.stdout.trim().split('\n').map((l) => JSON.parse(l).embedding as number[]);
  const expected = await Encoder.load(cut.output, { device: 'cpu' });
  try {
    const want = await expected.embed(texts);
    rows.forEach((row, i) => row.forEach((x, k) => t.true(Math.abs(x - want.data[i * want.dims[1] + k]) < 1e-6)));
  } finally {
    expected.dispose();
  }
  const tooMany = cli(['embed', textsFile, '--model', FIXTURE, '--layers', '5', '--device', 'cpu']);
  t.is(tooMany.status, 2);
  t.regex(tooMany.stderr, /--layers must be at most the 2 layers of/);
});
