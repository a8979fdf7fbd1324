// Encoder families beside BERT (RoBERTa, XLM-RoBERTa, MPNet, DistilBERT, ELECTRA, DeBERTa-v2/v3, ModernBERT, T5): token ids, token states and
// embeddings against what Hugging Face tokenizers, transformers and sentence-transformers computed for the same tiny
// random models (scripts/fixtures/tiny_encoders.py), one text at a time and in padded batches; save and reload with
// the same names; the prefixed names of a checkpoint with a head (T5: a whole encoder-decoder checkpoint); settings coltrast cannot run refused; bfloat16;
// training; cross-encoders with each family's head, against CrossEncoder.predict, saved, trained from a new head.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, retrievalMetrics, train, type PoolingMode } from '../lib';
import { native } from '../lib/native';
import { readSafetensors, writeSafetensors, type RawTensor } from './helpers/safetensors';
import { STEP, editJson, expectRecordedOutputs, expectSameEmbeddings, folderCopy, maxAbsDiff, saveCopy, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'tiny-encoders');
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-encoders.reference.json'), 'utf8')) as {
  texts: string[];
  versions: Record<string, string>;
  models: Record<string, { inputIds: number[][]; tokenStates: number[][][]; embeddings: number[][] }>;
  crossEncoders: { pairs: [string, string][] } & Record<keyof typeof HEADS, { logits: number[]; scores: number[] }>;
};
// The fixtures' names; both DeBERTa fixtures are `model_type: deberta-v2` (v3 is v2's architecture with other settings),
// both T5 fixtures `model_type: t5` (the original feed-forward, sentence-T5's modules; T5 v1.1's gated one).
const ARCHITECTURES = ['roberta', 'xlm-roberta', 'mpnet', 'distilbert', 'electra', 'deberta-v3', 'deberta-v2', 'modernbert', 't5', 't5-gated'] as const;
const MODEL_TYPE = (name: string) => (name.startsWith('deberta') ? 'deberta-v2' : name.startsWith('t5') ? 't5' : name);
const POOLING: Record<string, PoolingMode> = {
  roberta: 'mean', 'xlm-roberta': 'cls', mpnet: 'mean', distilbert: 'mean', electra: 'mean', 'deberta-v3': 'mean', 'deberta-v2': 'cls', modernbert: 'mean',
  t5: 'mean', 't5-gated': 'mean',
};
// The base model's names under a task head; T5's classes all name the encoder alike.
const PREFIX: Record<string, string> = {
  roberta: 'roberta.', 'xlm-roberta': 'roberta.', mpnet: 'mpnet.', distilbert: 'distilbert.', electra: 'electra.', 'deberta-v3': 'deberta.', 'deberta-v2': 'deberta.',
  modernbert: 'model.',
};
const HEADS = {
  'xlm-roberta': "RoBERTa's head: classifier.dense, classifier.out_proj",
  mpnet: "RoBERTa's head: classifier.dense, classifier.out_proj",
  distilbert: 'pre_classifier, ReLU, classifier',
  electra: "RoBERTa's head with GELU",
  'deberta-v3': "pooler.dense, GELU, classifier: mxbai-rerank's head",
  modernbert: 'head.dense, GELU, head.norm, classifier, over the mean of the tokens',
} as const;

const copyOf = (name: string, edit?: (dir: string) => void): string => folderCopy(path.join(FIXTURES, name), edit);

for (const name of ARCHITECTURES) {
  test(`${name}: token ids equal the tokenizer's, token states transformers' and embeddings sentence-transformers' (1e-5), alone and in padded batches`, async (t) => {
    const encoder = await Encoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const ref = REFERENCE.models[name];
    t.is(encoder.pooling, POOLING[name]);
    t.is(encoder.dimension, 32);
    t.deepEqual(await encoder.tokenize(REFERENCE.texts), ref.inputIds);
    await expectRecordedOutputs(t, encoder, REFERENCE.texts, ref, 32);
    encoder.dispose();
  });

  const prefix = PREFIX[name];
  test(`${name}: saves the same tensor names and reloads to the same embeddings${prefix ? `; a checkpoint with '${prefix}' names loads too` : ''}`, async (t) => {
    const { out, before } = await saveCopy(t, path.join(FIXTURES, name), REFERENCE.texts);
    t.is(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).model_type, MODEL_TYPE(name));
    await expectSameEmbeddings(t, out, REFERENCE.texts, before);
    if (!prefix) return;

    const prefixed = copyOf(name, (d) => {
      const file = path.join(d, 'model.safetensors');
      const { tensors } = readSafetensors(file);
      writeSafetensors(file, new Map([...tensors].map(([k, v]) => [`${prefix}${k}`, v])));
    });
    const fromPrefixed = await Encoder.load(prefixed, { device: 'cpu' });
    t.deepEqual(Array.from((await fromPrefixed.embed(REFERENCE.texts)).data), Array.from(before));
    fromPrefixed.dispose();
  });
}

test("a whole T5 checkpoint (decoder, lm_head, the shared table stored as encoder.embed_tokens too or only) loads as its encoder and saves the encoder's names", async (t) => {
  const source = readSafetensors(path.join(FIXTURES, 't5', 'model.safetensors')).tensors;
  const expected = REFERENCE.models.t5.embeddings.flat();
  const table = source.get('shared.weight')!;
  const extra: [string, RawTensor][] = [
    ['decoder.block.0.layer.0.SelfAttention.q.weight', source.get('encoder.block.0.layer.0.SelfAttention.q.weight')!],
    ['decoder.embed_tokens.weight', table],
    ['lm_head.weight', table],
  ];
  const cases: [string, [string, RawTensor][]][] = [
    ['a copy as encoder.embed_tokens.weight', [...source, ['encoder.embed_tokens.weight', table], ...extra]],
    ['the table only as encoder.embed_tokens.weight', [...[...source].filter(([k]) => k !== 'shared.weight'), ['encoder.embed_tokens.weight', table], ...extra]],
  ];
  for (const [what, entries] of cases) {
    const dir = copyOf('t5', (d) => writeSafetensors(path.join(d, 'model.safetensors'), new Map(entries)));
    const encoder = await Encoder.load(dir, { device: 'cpu' });
    t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, expected) < 1e-5, what);
    const out = path.join(tempDir(), 'saved');
    await encoder.save(out);
    encoder.dispose();
    t.deepEqual([...readSafetensors(path.join(out, 'model.safetensors')).tensors.keys()].sort(), [...source.keys()].sort(), what);
  }
  // mT5 is T5 v1.1's architecture: the gated fixture renamed gives the same outputs.
  const mt5 = await Encoder.load(copyOf('t5-gated', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, model_type: 'mt5', architectures: ['MT5EncoderModel'] }))), { device: 'cpu' });
  t.true(maxAbsDiff((await mt5.embed(REFERENCE.texts)).data, REFERENCE.models['t5-gated'].embeddings.flat()) < 1e-5, 'mt5');
  mt5.dispose();
});

test('a camembert config runs as the RoBERTa architecture it is (the xlm-roberta fixture renamed: the same outputs)', async (t) => {
  const dir = copyOf('xlm-roberta', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, model_type: 'camembert', architectures: ['CamembertModel'] })));
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, REFERENCE.models['xlm-roberta'].embeddings.flat()) < 1e-5);
  encoder.dispose();
});

test('RoBERTa-style positions leave room for the padding offset: max_seq_length is capped at max_position_embeddings - pad_token_id - 1', async (t) => {
  // 66 positions, pad_token_id 1: 64 tokens at most. A config asking for more is cut to what the model holds.
  for (const name of ['roberta', 'mpnet']) {
    const dir = copyOf(name, (d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: 200 })));
    const encoder = await Encoder.load(dir, { device: 'cpu' });
    t.is(encoder.maxSeqLength, 64, name);
    const long = Array.from({ length: 120 }, (_, i) => `word${i}`).join(' ');
    const [ids] = await encoder.tokenize([long]);
    t.is(ids.length, 64, name);
    t.deepEqual((await encoder.embed([long])).dims, [1, 32]);
    encoder.dispose();
  }
  const distil = copyOf('distilbert', (d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: 200 })));
  const encoder = await Encoder.load(distil, { device: 'cpu' });
  t.is(encoder.maxSeqLength, 64);
  encoder.dispose();
});

test('encoder settings coltrast cannot run are refused with the reason', async (t) => {
  const cases: [string, (c: any) => any, RegExp][] = [
    ['roberta', (c) => ({ ...c, pad_token_id: null }), /roberta needs "pad_token_id" \(its positions count from it\)/],
    ['xlm-roberta', (c) => ({ ...c, position_embedding_type: 'relative_key' }), /unsupported position_embedding_type "relative_key"/],
    ['mpnet', (c) => ({ ...c, relative_attention_num_buckets: 16 }), /relative_attention_num_buckets 16 is below the 32 MPNet uses/],
    ['distilbert', (c) => ({ ...c, activation: 'mish' }), /unsupported hidden_act mish/],
    ['distilbert', (c) => ({ ...c, n_heads: 5 }), /hidden size 32 is not a multiple of the number of heads 5/],
    ['modernbert', (c) => ({ ...c, rope_parameters: { ...c.rope_parameters, full_attention: { rope_type: 'yarn', rope_theta: 160000, factor: 4 } } }), /unsupported rotary scaling .*yarn/],
    ['modernbert', (c) => ({ ...c, layer_types: ['full_attention', 'chunked_attention', 'full_attention'] }), /unsupported layer type "chunked_attention"/],
    ['modernbert', (c) => ({ ...c, layer_types: ['full_attention'] }), /layer_types has 1 entries for 3 layers/],
    ['deberta-v2', (c) => ({ ...c, conv_kernel_size: 4 }), /unsupported conv_kernel_size 4 \(an even kernel shortens the sequence/],
    ['deberta-v2', (c) => ({ ...c, conv_act: 'mish' }), /unsupported hidden_act mish/],
    ['deberta-v3', (c) => ({ ...c, position_buckets: 2 }), /position_buckets 2 needs at least 4 buckets/],
    ['deberta-v3', (c) => ({ ...c, num_attention_heads: 5 }), /hidden_size 32 is not a multiple of num_attention_heads 5/],
    ['deberta-v3', (c) => ({ ...c, model_type: 'deberta' }), /unsupported model_type deberta \(coltrast runs: .*deberta-v2/],
    ['t5', (c) => ({ ...c, feed_forward_proj: 'gated-gelu-new' }), /feed_forward_proj "gated-gelu-new" is neither an activation nor gated-<activation>/],
    ['t5-gated', (c) => ({ ...c, feed_forward_proj: 'gated-mish' }), /unsupported hidden_act mish/],
    ['t5', (c) => ({ ...c, relative_attention_num_buckets: 2 }), /relative_attention_num_buckets 2 and relative_attention_max_distance 20 leave no logarithmic buckets/],
    ['t5', (c) => ({ ...c, d_kv: 0 }), /"d_kv" must be a positive integer/],
    ['t5', (c) => ({ ...c, model_type: 'umt5' }), /unsupported model_type umt5 \(coltrast runs: .*t5, mt5/],
  ];
  for (const [name, edit, pattern] of cases) {
    const dir = copyOf(name, (d) => editJson(path.join(d, 'config.json'), edit));
    t.regex((await rejection(() => Encoder.load(dir, { device: 'cpu' }))).message, pattern, name);
  }
});

test('a transformers 4 ModernBERT config (global_attn_every_n_layers, global_rope_theta, local_rope_theta) runs as its transformers 5 form', async (t) => {
  const dir = copyOf('modernbert', (d) =>
    editJson(path.join(d, 'config.json'), (c) => {
      const { layer_types: _types, rope_parameters: _rope, sliding_window: _window, ...rest } = c;
      return { ...rest, global_attn_every_n_layers: 3, global_rope_theta: 160000, local_rope_theta: 10000, local_attention: 8 };
    }),
  );
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, REFERENCE.models.modernbert.embeddings.flat()) < 1e-5);
  encoder.dispose();
  // The window matters: a wider one changes the states of the long text only.
  const wide = await Encoder.load(copyOf('modernbert', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, local_attention: 128 }))), { device: 'cpu' });
  const states = await wide.embed(REFERENCE.texts, { output: 'tokens' });
  t.true(maxAbsDiff(states[0].data, REFERENCE.models.modernbert.tokenStates[0].flat()) < 1e-5);
  t.true(maxAbsDiff(states[3].data, REFERENCE.models.modernbert.tokenStates[3].flat()) > 1e-3);
  wide.dispose();
});

test("DeBERTa settings in older configs' forms run the same: pos_att_type as one string joined by '|', norm_rel_ebd with other entries", async (t) => {
  for (const [name, edit] of [
    ['deberta-v2', (c: any) => ({ ...c, pos_att_type: 'C2P|p2c' })],
    ['deberta-v3', (c: any) => ({ ...c, pos_att_type: 'p2c|c2p|p2p', norm_rel_ebd: 'layer_norm|none' })],
  ] as const) {
    const encoder = await Encoder.load(copyOf(name, (d) => editJson(path.join(d, 'config.json'), edit)), { device: 'cpu' });
    t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, REFERENCE.models[name].embeddings.flat()) < 1e-5, name);
    encoder.dispose();
  }
});

// The DeBERTa fixtures' weights are ten times larger (initializer_range 0.2, so that the relative terms weigh in the
// scores), and dropout 0.1 on them (five places a layer) makes a 40-pair run too noisy to fall every epoch; so does T5's
// dropout_rate 0.1 (six places a block, and on the final states): they train without it here (the bfloat16 test below
// trains them with it).
const NO_DROPOUT = new Set(['deberta-v3', 'deberta-v2', 't5', 't5-gated']);
for (const name of ['roberta', 'mpnet', 'distilbert', 'electra', 'deberta-v3', 'deberta-v2', 'modernbert', 't5', 't5-gated'] as const) {
  test(`train() fine-tunes a ${name} model: the loss falls, retrieval of the training questions improves, and it reloads`, async (t) => {
    const data = wordDataset(40);
    const model = NO_DROPOUT.has(name)
      ? copyOf(name, (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, dropout_rate: 0 })))
      : path.join(FIXTURES, name);
    const output = path.join(tempDir(), 'trained');
    const before = await Encoder.load(model, { device: 'cpu' });
    const start = await retrievalMetrics(before, data);
    before.dispose();
    const result = await train({ model, data, output, epochs: 4, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 3 });
    const epochs = result.history.epochs;
    const losses = epochs.map((e) => e.trainLoss);
    t.true(losses.every((l, i) => i === 0 || l < losses[i - 1]) && losses[losses.length - 1] < 0.8 * losses[0], `train loss ${losses.map((l) => l.toFixed(3))}`);
    const trained = await Encoder.load(output, { device: 'cpu' });
    const end = await retrievalMetrics(trained, data);
    trained.dispose();
    t.true(end['mrr@10'] > start['mrr@10'] + 0.1, `MRR@10 on the training questions ${start['mrr@10']} -> ${end['mrr@10']}`);
    t.is(JSON.parse(fs.readFileSync(path.join(output, 'config.json'), 'utf8')).model_type, MODEL_TYPE(name));
  });
}

test('bfloat16 on the CPU: every family embeds close to float32, and a bfloat16-autocast training run of each gives finite, falling losses', async (t) => {
  for (const name of ARCHITECTURES) {
    const dir = path.join(FIXTURES, name);
    const full = await Encoder.load(dir, { device: 'cpu' });
    const half = await Encoder.load(dir, { device: 'cpu', dtype: 'bfloat16' });
    const difference = maxAbsDiff((await half.embed(REFERENCE.texts)).data, (await full.embed(REFERENCE.texts)).data);
    t.true(difference > 0 && difference < 2e-2, `${name}: bfloat16 against float32 ${difference}`);
    full.dispose();
    half.dispose();
    const result = await train({ model: dir, data: wordDataset(24), output: path.join(tempDir(), 'bf16'), epochs: 3, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 3, precision: 'bfloat16' });
    const losses = result.history.epochs.map((e) => e.trainLoss);
    t.true(losses.every(Number.isFinite) && losses[2] < losses[0], `${name}: ${losses.map((l) => l.toFixed(3))}`);
  }
});

for (const name of Object.keys(HEADS) as (keyof typeof HEADS)[]) {
  test(`${name} cross-encoder (${HEADS[name]}): predict equals sentence-transformers' (1e-5); saves the same names`, async (t) => {
    const folder = path.join(FIXTURES, `${name}-cross-encoder`);
    const { pairs } = REFERENCE.crossEncoders;
    const expected = REFERENCE.crossEncoders[name];
    const ce = await CrossEncoder.load(folder, { device: 'cpu' });
    t.is(ce.maxSeqLength, 24);
    for (const batchSize of [1, 2, 5]) {
      const logits = await ce.predict(pairs, { batchSize, activation: 'identity' });
      t.true(maxAbsDiff(logits.data, expected.logits) < 1e-5, `logits, batch ${batchSize}: ${maxAbsDiff(logits.data, expected.logits)}`);
      t.true(maxAbsDiff((await ce.predict(pairs, { batchSize })).data, expected.scores) < 1e-5, `scores, batch ${batchSize}`);
    }
    const before = await ce.predict(pairs, { activation: 'identity' });
    const out = path.join(tempDir(), 'saved');
    await ce.save(out);
    ce.dispose();
    const names = (dir: string) => [...readSafetensors(path.join(dir, 'model.safetensors')).tensors.keys()].sort();
    t.deepEqual(names(out), names(folder));
    const reloaded = await CrossEncoder.load(out, { device: 'cpu' });
    t.deepEqual(Array.from((await reloaded.predict(pairs, { activation: 'identity' })).data), Array.from(before.data), 'the same scores after save and load');
    reloaded.dispose();
  });
}

test('train({ crossEncoder }) starts a reranker with a new RoBERTa-style head from an xlm-roberta embedding model, saved under its names', async (t) => {
  const model = path.join(FIXTURES, 'xlm-roberta');
  const output = path.join(tempDir(), 'reranker');
  const result = await train({ model, data: wordDataset(16), output, epochs: 2, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: true });
  t.true(result.history.epochs.every((e) => Number.isFinite(e.trainLoss)));
  const config = JSON.parse(fs.readFileSync(path.join(output, 'config.json'), 'utf8'));
  t.deepEqual(config.architectures, ['XLMRobertaForSequenceClassification']);
  const saved = readSafetensors(path.join(output, 'model.safetensors')).tensors;
  for (const head of ['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias']) t.true(saved.has(head), head);
  const base = readSafetensors(path.join(model, 'model.safetensors')).tensors;
  const name = 'encoder.layer.0.attention.self.query.weight';
  t.false(saved.get(`roberta.${name}`)!.data.equals(base.get(name)!.data), 'the encoder was trained too');
  const ce = await CrossEncoder.load(output, { device: 'cpu' });
  t.deepEqual((await ce.predict([['a', 'b']])).dims, [1, 1]);
  ce.dispose();
  // ModernBERT's new head: a dense layer without bias (classifier_bias false) and a norm, saved under head.*.
  const modern = path.join(tempDir(), 'modern-reranker');
  await train({ model: path.join(FIXTURES, 'modernbert'), data: wordDataset(8), output: modern, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: true });
  const modernNames = [...readSafetensors(path.join(modern, 'model.safetensors')).tensors.keys()];
  t.deepEqual(modernNames.filter((n) => !n.startsWith('model.')).sort(), ['classifier.bias', 'classifier.weight', 'head.dense.weight', 'head.norm.weight']);
  const modernConfig = fs.readFileSync(path.join(modern, 'config.json'), 'utf8');
  t.deepEqual(JSON.parse(modernConfig).architectures, ['ModernBertForSequenceClassification']);
  // Floats stay floats in the rewritten config (transformers 5 refuses `2` for initializer_cutoff_factor).
  t.regex(modernConfig, /"initializer_cutoff_factor": 2\.0,/);
  t.regex(modernConfig, /"rope_theta": 160000\.0/);
});

test('train({ crossEncoder }) from a DeBERTa-v3 embedding model gives it DebertaV2ForSequenceClassification\'s head (pooler.dense, classifier)', async (t) => {
  const output = path.join(tempDir(), 'reranker');
  await train({ model: path.join(FIXTURES, 'deberta-v3'), data: wordDataset(8), output, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 3, crossEncoder: true });
  const names = [...readSafetensors(path.join(output, 'model.safetensors')).tensors.keys()];
  t.deepEqual(names.filter((n) => !n.startsWith('deberta.')).sort(), ['classifier.bias', 'classifier.weight', 'pooler.dense.bias', 'pooler.dense.weight']);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(output, 'config.json'), 'utf8')).architectures, ['DebertaV2ForSequenceClassification']);
  const ce = await CrossEncoder.load(output, { device: 'cpu' });
  const scores = await ce.predict(REFERENCE.crossEncoders.pairs);
  t.true(Array.from(scores.data).every((s) => s > 0 && s < 1));
  ce.dispose();
});

test('steps of a RoBERTa-style cross-encoder lower its loss (binary cross-entropy) on a batch', async (t) => {
  const ce = await CrossEncoder.load(path.join(FIXTURES, 'xlm-roberta-cross-encoder'), { device: 'cpu' });
  const data = wordDataset(5, 3);
  const queries = data.slice(0, 3).map((d) => d.query);
  const documents = data.map((d) => d.positive);
  const options = { ...STEP, lossScale: 1, apply: true, learningRate: 1e-3 };
  // (The tiny random encoder's first-token state hardly depends on the text, so a listwise loss barely moves.)
  const trainer = ce.createTrainer({ learningRate: 1e-3, weightDecay: 0.01, seed: 1, precision: 'float32' }, { kind: 'bce', scale: 10 });
  const { loss } = await trainer.evaluate(queries, documents, { ...options, apply: false });
  for (let step = 0; step < 15; step++) await trainer.step(queries, documents, options);
  const after = (await trainer.evaluate(queries, documents, { ...options, apply: false })).loss;
  t.true(after < loss - 0.05, `loss ${loss} -> ${after} after 15 steps on the batch`);
  trainer.dispose();
  ce.dispose();
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: every encoder family's token states (float32, float16, bfloat16) match the CPU${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    for (const name of ARCHITECTURES) {
      const cpu = await Encoder.load(path.join(FIXTURES, name), { device: 'cpu' });
      const expected = await cpu.embed(REFERENCE.texts, { output: 'tokens' });
      cpu.dispose();
      for (const [dtype, tolerance] of [['float32', 1e-4], ['float16', 2e-2], ['bfloat16', 1e-1]] as const) {
        const gpu = await Encoder.load(path.join(FIXTURES, name), { device: 'cuda', dtype });
        const got = await gpu.embed(REFERENCE.texts, { output: 'tokens' });
        got.forEach((m, i) => t.true(maxAbsDiff(m.data, expected[i].data) < tolerance, `${name} ${dtype} text ${i}: ${maxAbsDiff(m.data, expected[i].data)}`));
        gpu.dispose();
      }
    }
  },
);
