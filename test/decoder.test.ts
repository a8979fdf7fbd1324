// Decoder-LLM embedding models (Qwen3, Qwen2, Llama, Mistral, Gemma 3, 2 and 1, Phi-3): token states and embeddings against
// what Hugging Face transformers and sentence-transformers computed for the same tiny random models
// (scripts/fixtures/tiny_decoders.py), one text at a time and in padded batches; save and reload; a
// *ForCausalLM checkpoint's prefixed names; unsupported settings refused with the reason; training one, whole or
// (CoTrEnD) only a head on its frozen states.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, retrievalMetrics, train, type PoolingMode } from '../lib';
import { native } from '../lib/native';
import { readSafetensors, writeSafetensors } from './helpers/safetensors';
import { editJson, expectRecordedOutputs, expectSameEmbeddings, folderCopy, maxAbsDiff, saveCopy, tempDir, wordDataset } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'tiny-decoders');
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-decoders.reference.json'), 'utf8')) as {
  texts: string[];
  versions: Record<string, string>;
  models: Record<string, { tokenStates: number[][][]; embeddings: number[][] }>;
  // Variants (scaled rotary positions, sliding windows, soft-capping off): a model's config.json edited (keys removed,
  // then set), and its outputs then.
  variants: Record<string, { model: string; config: { remove: string[]; set: Record<string, unknown> }; tokenStates: number[][][]; embeddings: number[][] }>;
};
const ARCHITECTURES = ['qwen3', 'qwen2', 'llama', 'mistral', 'gemma3', 'gemma3-causal', 'gemma2', 'gemma', 'phi3'] as const;
// EmbeddingGemma's set-up (tiny_decoders.py): bidirectional, mean pooling, a Dense projection to 24; the rest last-token.
const POOLED = (name: string): { pooling: PoolingMode; dimension: number } => (name === 'gemma3' ? { pooling: 'mean', dimension: 24 } : { pooling: 'lasttoken', dimension: 32 });

const copyOf = (name: string, edit?: (dir: string) => void): string => folderCopy(path.join(FIXTURES, name), edit);

for (const name of ARCHITECTURES) {
  test(`${name}: token states equal transformers' and embeddings sentence-transformers' (1e-5), alone and in padded batches`, async (t) => {
    const encoder = await Encoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const ref = REFERENCE.models[name];
    t.is(encoder.pooling, POOLED(name).pooling);
    t.is(encoder.dimension, POOLED(name).dimension);
    await expectRecordedOutputs(t, encoder, REFERENCE.texts, ref, 32);
    encoder.dispose();
  });
}

// A copy of a variant's model folder with its config.json edited as the reference records.
function variantDir(name: string): string {
  const variant = REFERENCE.variants[name];
  return copyOf(variant.model, (d) =>
    editJson(path.join(d, 'config.json'), (c) => ({ ...Object.fromEntries(Object.entries(c).filter(([k]) => !variant.config.remove.includes(k))), ...variant.config.set })),
  );
}

for (const [name, variant] of Object.entries(REFERENCE.variants)) {
  test(`${name} (the model's config.json edited): token states and embeddings equal transformers' and sentence-transformers' (1e-5)`, async (t) => {
    const encoder = await Encoder.load(variantDir(name), { device: 'cpu' });
    await expectRecordedOutputs(t, encoder, REFERENCE.texts, variant, 32);
    encoder.dispose();
  });
}

for (const name of ['qwen3', 'gemma3']) {
  test(`a decoder model saves to the same folder layout and names, and reloads to the same embeddings: ${name}`, async (t) => {
    const { out, before } = await saveCopy(t, path.join(FIXTURES, name), REFERENCE.texts);
    // The modules in the fixture's order (Gemma's two Dense modules, each in its folder with its weights).
    const modules = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'modules.json'), 'utf8')).map((m: { path: string }) => m.path);
    t.deepEqual(modules(out), modules(path.join(FIXTURES, name)));
    for (const dense of modules(out).filter((p: string) => p.endsWith('_Dense'))) {
      t.deepEqual(readSafetensors(path.join(out, dense, 'model.safetensors')).tensors.get('linear.weight')!.data, readSafetensors(path.join(FIXTURES, name, dense, 'model.safetensors')).tensors.get('linear.weight')!.data);
    }
    await expectSameEmbeddings(t, out, REFERENCE.texts, before);
  });
}

test("a *ForCausalLM checkpoint loads: names under 'model.', its lm_head kept and written back", async (t) => {
  const dir = copyOf('llama', (d) => {
    const file = path.join(d, 'model.safetensors');
    const { tensors } = readSafetensors(file);
    const prefixed = new Map([...tensors].map(([k, v]) => [`model.${k}`, v]));
    const embed = tensors.get('embed_tokens.weight')!;
    prefixed.set('lm_head.weight', embed);
    writeSafetensors(file, prefixed);
    editJson(path.join(d, 'config.json'), (c) => ({ ...c, architectures: ['LlamaForCausalLM'] }));
  });
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, REFERENCE.models.llama.embeddings.flat()) < 1e-5);
  const out = path.join(tempDir(), 'saved');
  await encoder.save(out);
  encoder.dispose();
  t.true(readSafetensors(path.join(out, 'model.safetensors')).tensors.has('lm_head.weight'));
});

test('unsupported decoder settings are refused with the reason', async (t) => {
  const cases: [string, (c: any) => any, RegExp][] = [
    ['llama', (c) => ({ ...c, rope_scaling: { rope_type: 'longrope', short_factor: [1], long_factor: [2] } }), /unsupported rotary scaling .*longrope.* in config.json's rope_scaling: coltrast runs the rope types default, linear, dynamic, llama3 and yarn/],
    ['qwen3', (c) => ({ ...c, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 } }), /rope_parameters: coltrast rotates every dimension/],
    ['llama', (c) => ({ ...c, rope_scaling: { rope_type: 'llama3', factor: 8 } }), /rope_scaling's "low_freq_factor" must be a positive number for rope_type llama3/],
    ['qwen3', (c) => ({ ...c, rope_parameters: { rope_type: 'linear', rope_theta: 10000, factor: 0 } }), /rope_parameters's "factor" must be a positive number for rope_type linear/],
    ['qwen2', (c) => ({ ...c, hidden_act: 'gelu' }), /unsupported hidden_act gelu for qwen2/],
    ['qwen3', (c) => ({ ...c, num_key_value_heads: 3 }), /num_attention_heads 4 is not a multiple of num_key_value_heads 3/],
    ['mistral', (c) => ({ ...c, num_hidden_layers: 'two' }), /"num_hidden_layers" must be a positive integer/],
    ['gemma2', (c) => ({ ...c, use_bidirectional_attention: true }), /gemma2 with use_bidirectional_attention is not supported/],
    ['gemma2', (c) => ({ ...c, attn_logit_softcapping: -1 }), /attn_logit_softcapping must be a positive number or null/],
    ['gemma3', (c) => ({ ...c, layer_types: ['full_attention'] }), /layer_types has 1 entries for 3 layers/],
    ['gemma3', (c) => ({ ...c, layer_types: ['sliding_attention', 'chunked_attention', 'full_attention'] }), /unsupported layer type chunked_attention/],
    ['gemma3', (c) => ({ ...c, rope_parameters: { ...c.rope_parameters, sliding_attention: { rope_type: 'proportional', rope_theta: 1e4 } } }), /unsupported rotary scaling .*proportional.* in config.json's rope_parameters.sliding_attention/],
    ['gemma3', (c) => ({ ...c, hidden_activation: 'swish_gated' }), /swish_gated/],
    ['phi3', (c) => ({ ...c, rope_parameters: { ...c.rope_parameters, rope_type: 'linear', factor: 2 } }), /Phi-3 runs the rope types default and longrope/],
    ['phi3', (c) => ({ ...c, rope_scaling: { type: 'longrope', short_factor: [1, 1], long_factor: [1, 1] } }), /longrope's short_factor and long_factor need 3 numbers each/],
    ['phi3', (c) => ({ ...c, rope_scaling: { type: 'su', short_factor: [1, 1, 1] } }), /rope_scaling's "long_factor" must be a list of numbers for rope_type longrope/],
    ['phi3', (c) => ({ ...c, rope_parameters: { ...c.rope_parameters, partial_rotary_factor: 0.1 } }), /partial_rotary_factor 0\.1\d* of head_dim 8 leaves 0 rotated dimensions/],
    ['phi3', (c) => ({ ...c, resid_pdrop: 1.5 }), /resid_pdrop must be in \[0, 1\)/],
  ];
  for (const [name, edit, pattern] of cases) {
    const dir = copyOf(name, (d) => editJson(path.join(d, 'config.json'), edit));
    const error = await rejection(() => Encoder.load(dir, { device: 'cpu' }));
    t.regex(error.message, pattern);
  }
  // Gemma 3 overflows float16 (its load in float16 is refused too, on a GPU: the CUDA test). The device is left to
  // 'auto', so that the model type speaks before a CPU's own refusal of float16.
  const half = await rejection(() => train({ model: path.join(FIXTURES, 'gemma3'), data: wordDataset(8), output: path.join(tempDir(), 'x'), batchSize: 4, precision: 'float16' }));
  t.regex(half.message, /options\.precision 'float16': a gemma3_text model's activations overflow float16; use 'bfloat16' or 'float32'/);
  // Cross-encoders are BERT's: a decoder's first token sees nothing after it.
  const ce = await rejection(() => train({ model: path.join(FIXTURES, 'qwen3'), data: wordDataset(8), output: path.join(tempDir(), 'x'), batchSize: 4, crossEncoder: true, device: 'cpu' }));
  t.regex(ce.message, /is a qwen3 model; coltrast's cross-encoders run on bert, roberta, xlm-roberta, camembert, mpnet, distilbert, electra, deberta-v2, modernbert models/);
});

test("Gemma 3's config as transformers 4 writes it (rope_theta and rope_local_base_freq, sliding_window_pattern instead of layer_types) runs the same model", async (t) => {
  const dir = copyOf('gemma3', (d) =>
    editJson(path.join(d, 'config.json'), ({ rope_parameters: _rope, layer_types: _types, _sliding_window_pattern: _pattern, ...c }) => ({
      ...c,
      rope_theta: 1000000,
      rope_local_base_freq: 10000,
      rope_scaling: null,
      // Every second layer full: sliding, full, sliding, as the fixture's layer_types.
      sliding_window_pattern: 2,
    })),
  );
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  t.true(maxAbsDiff((await encoder.embed(REFERENCE.texts)).data, REFERENCE.models.gemma3.embeddings.flat()) < 1e-5);
  encoder.dispose();
  // The windows matter for the longer texts: with every layer full, the fixture's model computes other vectors.
  const full = await Encoder.load(copyOf('gemma3', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, layer_types: c.layer_types.map(() => 'full_attention') }))), { device: 'cpu' });
  t.true(maxAbsDiff((await full.embed([REFERENCE.texts[3]])).data, REFERENCE.models.gemma3.embeddings[3]) > 1e-3);
  full.dispose();
});

test('train() fine-tunes a decoder embedding model: the loss falls, retrieval of the training questions improves, and it reloads', async (t) => {
  const data = wordDataset(40);
  const model = path.join(FIXTURES, 'qwen3');
  const output = path.join(tempDir(), 'trained');
  const before = await Encoder.load(model, { device: 'cpu' });
  const start = await retrievalMetrics(before, data);
  before.dispose();
  const result = await train({ model, data, output, epochs: 4, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu' });
  const epochs = result.history.epochs;
  t.true(epochs[epochs.length - 1].trainLoss < 0.5 * epochs[0].trainLoss, `train loss ${epochs.map((e) => e.trainLoss.toFixed(3))}`);
  const trained = await Encoder.load(output, { device: 'cpu' });
  const end = await retrievalMetrics(trained, data);
  t.is(trained.pooling, 'lasttoken');
  trained.dispose();
  t.true(end['mrr@10'] > start['mrr@10'] + 0.3, `MRR@10 on the training questions ${start['mrr@10']} -> ${end['mrr@10']}`);
  t.is(JSON.parse(fs.readFileSync(path.join(output, 'config.json'), 'utf8')).model_type, 'qwen3');
});

test('CoTrEnD (freezeBase): a head trained contrastively on a frozen decoder\'s states; the decoder\'s weights stay, the loss falls', async (t) => {
  const model = path.join(FIXTURES, 'qwen3');
  const data = wordDataset(40);
  const tensors = (file: string) => readSafetensors(file).tensors;
  for (const multiVector of [false, true]) {
    const output = path.join(tempDir(), 'cotrend');
    const result = await train({
      model, data, output, epochs: 4, batchSize: 8, learningRate: 3e-3, valSplit: 0, device: 'cpu', freezeBase: true,
      ...(multiVector ? { multiVector: { dimension: 16 } } : { projection: { dimension: 16 } }),
    });
    const base = tensors(path.join(model, 'model.safetensors'));
    const trained = tensors(path.join(output, 'model.safetensors'));
    t.deepEqual([...trained.keys()].sort(), [...base.keys()].sort());
    t.true([...base].every(([name, v]) => v.data.equals(trained.get(name)!.data)), 'the frozen decoder is saved unchanged');
    const steps = result.history.steps;
    t.true(steps.every((s) => (multiVector ? s.contrastive === 0 : s.lateInteraction === 0)), 'only the loss a head can change is on');
    const epochs = result.history.epochs;
    t.true(epochs[epochs.length - 1].trainLoss < 0.9 * epochs[0].trainLoss, `${multiVector ? 'multi-vector' : 'projection'}: train loss ${epochs.map((e) => e.trainLoss.toFixed(3))}`);
    t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Base model frozen: only the head was trained/);
  }
  const base = { model, data, output: path.join(tempDir(), 'x'), epochs: 1, batchSize: 8, device: 'cpu' as const, freezeBase: true };
  t.regex((await rejection(() => train(base))).message, /options\.freezeBase trains only a head, and .* has none: add options\.projection/);
  t.regex(
    (await rejection(() => train({ ...base, projection: { dimension: 8 }, loss: { lateInteractionWeight: 1 } }))).message,
    /with options\.freezeBase the late-interaction loss scores the frozen token states/,
  );
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: decoder token states (float32, bfloat16, float16) match the CPU: Qwen3, Gemma 3 (bidirectional sliding windows, fused attention with a mask), Gemma 2 (soft-capped attention) and Phi-3 (fused projections, partial rotation, LongRoPE); float16 refused for the Gemmas${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    for (const name of ['qwen3', 'gemma3', 'gemma2', 'phi3', 'phi3+longrope']) {
      const dir = REFERENCE.variants[name] ? variantDir(name) : path.join(FIXTURES, name);
      const cpu = await Encoder.load(dir, { device: 'cpu' });
      const expected = await cpu.embed(REFERENCE.texts, { output: 'tokens' });
      cpu.dispose();
      // Tolerances for states of magnitude up to 4 (Qwen3's), scaled with larger ones. bfloat16's: 4 times the
      // CPU's own bfloat16 error on this model (0.02-0.07 here; the GPU's kernels round in other places).
      const scale = Math.max(1, ...expected.map((m) => Math.max(...Array.from(m.data, Math.abs)) / 4));
      const cpuBf16 = await Encoder.load(dir, { device: 'cpu', dtype: 'bfloat16' });
      const bf16Error = Math.max(...(await cpuBf16.embed(REFERENCE.texts, { output: 'tokens' })).map((m, i) => maxAbsDiff(m.data, expected[i].data)));
      cpuBf16.dispose();
      for (const [dtype, tolerance] of [['float32', 1e-4], ['bfloat16', Math.max(5e-2, (4 * bf16Error) / scale)], ['float16', 1e-2]] as const) {
        if (name.startsWith('gemma') && dtype === 'float16') {
          t.regex((await rejection(() => Encoder.load(dir, { device: 'cuda', dtype }))).message, /activations overflow float16/);
          continue;
        }
        const gpu = await Encoder.load(dir, { device: 'cuda', dtype });
        const got = await gpu.embed(REFERENCE.texts, { output: 'tokens' });
        got.forEach((m, i) => t.true(maxAbsDiff(m.data, expected[i].data) < tolerance * scale, `${name} ${dtype} text ${i}: ${maxAbsDiff(m.data, expected[i].data)}`));
        gpu.dispose();
      }
    }
  },
);
