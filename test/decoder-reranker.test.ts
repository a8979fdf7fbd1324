// Rerankers on decoder LLMs (CrossEncoder): a causal LM scored by sentence-transformers' LogitScore (the last position's
// logit of a true token minus a false one) and a Qwen3ForSequenceClassification (a score layer on the last real token),
// each with a chat template that puts the pair's "query" and "document" messages (and a prompt as a "system" message)
// into one prompt. The fixtures were written and their outputs recorded by sentence-transformers 6 itself
// (scripts/fixtures/st_causal_reranker.py): token ids, logits, scores, prompted scores, rank().
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CrossEncoder, QWEN3_RERANKER_TEMPLATE, evaluate, serve, train } from '../lib';
import { ChatTemplate } from '../lib/chat-template';
import { native } from '../lib/native';
import type { TokenizedText } from '../lib/tokenizer';
import { CLI, FIXTURE, editJson, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { checkTrainingLoss } from './helpers/cross-encoder';
import { readSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-rerankers');
interface Recorded {
  tokenIds: number[][];
  logits: number[][];
  scores: number[][];
  prompted: number[][];
  rank: { index: number; score: number }[];
  trueOnly?: number[][];
}
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-causal-rerankers.reference.json'), 'utf8')) as {
  pairs: [string, string][];
  prompt: string;
  maxLength: number;
  models: Record<'logit-score' | 'seq-cls', Recorded>;
};
const PAIRS = REFERENCE.pairs;
const MODELS = ['logit-score', 'seq-cls'] as const;

function copyOf(name: string, edit?: (dir: string) => void): string {
  const dir = path.join(tempDir(), name);
  fs.cpSync(path.join(FIXTURES, name), dir, { recursive: true });
  edit?.(dir);
  return dir;
}

// The tokens a pair reaches the model as (the private step predict() takes first).
const tokensOf = (ce: CrossEncoder, pairs: [string, string][], prompt?: string) =>
  (ce as unknown as { tokenizePairs(p: [string, string][], prompt?: string): Promise<TokenizedText[]> }).tokenizePairs(pairs, prompt);

for (const name of MODELS) {
  test(`${name}: pairs rendered by the chat template and tokenized as sentence-transformers does (long ones cut, the template's tail written back); logits and scores equal its predict (1e-5)`, async (t) => {
    const ce = await CrossEncoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const ref = REFERENCE.models[name];
    t.is(ce.modelType, 'qwen3');
    t.is(ce.numLabels, 1);
    t.is(ce.activation, 'sigmoid');
    t.is(ce.maxSeqLength, REFERENCE.maxLength);
    t.deepEqual((await tokensOf(ce, PAIRS)).map((x) => x.ids), ref.tokenIds);
    t.true(ref.tokenIds.some((ids) => ids.length === REFERENCE.maxLength), 'some pairs are cut');
    for (const batchSize of [1, 3, 32]) {
      const logits = await ce.predict(PAIRS, { batchSize, activation: 'identity' });
      t.deepEqual(logits.dims, [PAIRS.length, 1]);
      t.true(maxAbsDiff(logits.data, ref.logits.flat()) < 1e-5, `logits, batch ${batchSize}: ${maxAbsDiff(logits.data, ref.logits.flat())}`);
      const scores = await ce.predict(PAIRS, { batchSize });
      t.true(maxAbsDiff(scores.data, ref.scores.flat()) < 1e-5, `scores, batch ${batchSize}`);
    }
    // A prompt goes in as the "system" message (the template's instruction).
    t.true(maxAbsDiff((await ce.predict(PAIRS, { prompt: REFERENCE.prompt })).data, ref.prompted.flat()) < 1e-5);
    const ranked = await ce.rank(PAIRS[0][0], PAIRS.map((p) => p[1]));
    t.deepEqual(ranked.map((r) => r.index), ref.rank.map((r) => r.index));
    t.true(maxAbsDiff(Float32Array.from(ranked.map((r) => r.score)), ref.rank.map((r) => r.score)) < 1e-5);
    ce.dispose();
  });
}

test("serve(): a decoder reranker answers /v1/rerank and /rerank as CrossEncoder.rank ranks (its default prompt included)", async (t) => {
  const dir = copyOf('logit-score', (d) =>
    editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { instruct: REFERENCE.prompt }, default_prompt_name: 'instruct' })),
  );
  const ce = await CrossEncoder.load(dir, { device: 'cpu' });
  const server = await serve({ reranker: ce, port: 0 });
  try {
    const query = PAIRS[0][0];
    const documents = PAIRS.map((p) => p[1]);
    const expected = await ce.rank(query, documents);
    t.deepEqual(expected.map((r) => r.score), (await ce.rank(query, documents, { prompt: REFERENCE.prompt })).map((r) => r.score));
    const post = async (route: string, body: unknown) => (await fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<any>;
    const cohere = await post('/v1/rerank', { query, documents, return_documents: false });
    t.deepEqual(cohere.results.map((r: { index: number; relevance_score: number }) => [r.index, r.relevance_score]), expected.map((r) => [r.index, r.score]));
    const tei = await post('/rerank', { query, texts: documents });
    t.deepEqual(tei.map((r: { index: number; score: number }) => [r.index, r.score]), expected.map((r) => [r.index, r.score]));
  } finally {
    await server.close();
    ce.dispose();
  }
});

test("logit-score: with false_token_id null the score is the true token's logit alone, as LogitScore computes it", async (t) => {
  const dir = copyOf('logit-score', (d) => editJson(path.join(d, '1_LogitScore', 'config.json'), (c) => ({ ...c, false_token_id: null })));
  const ce = await CrossEncoder.load(dir, { device: 'cpu' });
  t.true(maxAbsDiff((await ce.predict(PAIRS, { activation: 'identity' })).data, REFERENCE.models['logit-score'].trueOnly!.flat()) < 1e-5);
  ce.dispose();
});

test("the model's prompts: its default prompt applies when none is given, a named one by promptName; an unknown name is refused", async (t) => {
  const dir = copyOf('seq-cls', (d) =>
    editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { instruct: REFERENCE.prompt, other: 'x' }, default_prompt_name: 'instruct' })),
  );
  const ce = await CrossEncoder.load(dir, { device: 'cpu' });
  t.is(ce.defaultPromptName, 'instruct');
  const prompted = REFERENCE.models['seq-cls'].prompted.flat();
  t.true(maxAbsDiff((await ce.predict(PAIRS)).data, prompted) < 1e-5);
  t.true(maxAbsDiff((await ce.predict(PAIRS, { promptName: 'instruct' })).data, prompted) < 1e-5);
  t.true(maxAbsDiff((await ce.predict(PAIRS, { prompt: REFERENCE.prompt })).data, prompted) < 1e-5);
  t.regex((await rejection(() => ce.predict(PAIRS, { promptName: 'nope' }))).message, /options\.promptName must be one of the model's prompts \(instruct, other\)/);
  ce.dispose();
});

for (const name of MODELS) {
  test(`${name}: save writes the folder sentence-transformers saves (modules, configs, chat template, weights by name) and reloads to the same scores`, async (t) => {
    const ce = await CrossEncoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    const before = await ce.predict(PAIRS, { activation: 'identity' });
    const out = path.join(tempDir(), 'saved');
    await ce.save(out);
    ce.dispose();
    const read = (dir: string, file: string) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
    const source = path.join(FIXTURES, name);
    t.deepEqual(read(out, 'modules.json').map((m: { type: string; path: string }) => [m.type, m.path]), read(source, 'modules.json').map((m: { type: string; path: string }) => [m.type, m.path]));
    if (name === 'logit-score') t.deepEqual(read(out, '1_LogitScore/config.json'), read(source, '1_LogitScore/config.json'));
    const st = read(out, 'sentence_bert_config.json');
    t.is(st.transformer_task, read(source, 'sentence_bert_config.json').transformer_task);
    t.deepEqual(st.modality_config, read(source, 'sentence_bert_config.json').modality_config);
    t.is(fs.readFileSync(path.join(out, 'chat_template.jinja'), 'utf8'), fs.readFileSync(path.join(source, 'chat_template.jinja'), 'utf8'));
    const names = (dir: string) => [...readSafetensors(path.join(dir, 'model.safetensors')).tensors.keys()].sort();
    t.deepEqual(names(out), names(source));
    const again = await CrossEncoder.load(out, { device: 'cpu' });
    t.true(maxAbsDiff((await again.predict(PAIRS, { activation: 'identity' })).data, before.data) < 1e-6);
    again.dispose();
  });
}

for (const [name, kind] of [['logit-score', 'cross_entropy'], ['seq-cls', 'bce']] as const) {
  test(`${name}: the training loss (${kind}) is its definition over predict's logits, steps lower it, and train() saves a reranker that reloads with its trained scores`, async (t) => {
    const ce = await CrossEncoder.load(path.join(FIXTURES, name), { device: 'cpu' });
    // predict()'s logits equal sentence-transformers' (above), so the definition over them is its loss.
    await checkTrainingLoss(t, ce, kind, 10, 0.05);
    ce.dispose();

    const output = path.join(tempDir(), 'trained');
    await train({ model: path.join(FIXTURES, name), data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: true });
    const trained = await CrossEncoder.load(output, { device: 'cpu' });
    const scores = (await trained.predict(PAIRS, { activation: 'identity' })).data;
    t.true(maxAbsDiff(scores, REFERENCE.models[name].logits.flat()) > 1e-3, 'training changed the scores');
    t.deepEqual(JSON.parse(fs.readFileSync(path.join(output, 'modules.json'), 'utf8')), JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'modules.json'), 'utf8')));
    trained.dispose();
  });
}

test("a causal LM as a reranker (CrossEncoder.load and train({ crossEncoder }) with chatTemplate and tokens) scores as sentence-transformers' LogitScore on it, trains, and saves with its template; the CLI's flags do the same", async (t) => {
  const causal = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'qwen3');
  const chatTemplate = fs.readFileSync(path.join(FIXTURES, 'logit-score', 'chat_template.jinja'), 'utf8');
  const start = { chatTemplate, tokens: ['good', 'bad'] as [string, string] };
  // The logit-score fixture is this causal LM with this template and these tokens (its pairs cut at 40 tokens, the
  // causal LM's at 96: the pairs not cut compare).
  const fresh = await CrossEncoder.load(causal, { device: 'cpu', ...start });
  const ref = REFERENCE.models['logit-score'];
  const whole = PAIRS.map((_, i) => i).filter((i) => ref.tokenIds[i].length < REFERENCE.maxLength);
  t.true(whole.length >= 3);
  const logits = (await fresh.predict(whole.map((i) => PAIRS[i]), { activation: 'identity' })).data;
  t.true(maxAbsDiff(logits, whole.map((i) => ref.logits[i][0])) < 1e-5, `${maxAbsDiff(logits, whole.map((i) => ref.logits[i][0]))}`);
  fresh.dispose();
  // One token: its logit alone (LogitScore with false_token_id null).
  const single = await CrossEncoder.load(causal, { device: 'cpu', chatTemplate, tokens: ['good'] });
  t.true(maxAbsDiff((await single.predict(whole.map((i) => PAIRS[i]), { activation: 'identity' })).data, whole.map((i) => ref.trueOnly![i][0])) < 1e-5);
  single.dispose();

  const output = path.join(tempDir(), 'reranker');
  await train({ model: causal, data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: start });
  t.is(fs.readFileSync(path.join(output, 'chat_template.jinja'), 'utf8'), chatTemplate);
  const read = (file: string) => JSON.parse(fs.readFileSync(path.join(output, file), 'utf8'));
  t.deepEqual(read('modules.json').map((m: { type: string }) => m.type.split('.').pop()), ['Transformer', 'LogitScore']);
  // The tokens' ids, as sentence-transformers saved them for the fixture.
  t.deepEqual(read('1_LogitScore/config.json'), JSON.parse(fs.readFileSync(path.join(FIXTURES, 'logit-score', '1_LogitScore', 'config.json'), 'utf8')));
  t.is(read('sentence_bert_config.json').transformer_task, 'text-generation');
  const trained = await CrossEncoder.load(output, { device: 'cpu' });
  t.true(maxAbsDiff((await trained.predict(whole.map((i) => PAIRS[i]), { activation: 'identity' })).data, logits) > 1e-3, 'training changed the scores');
  trained.dispose();

  // The same from the command line.
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'template.jinja'), chatTemplate);
  fs.writeFileSync(path.join(dir, 'data.jsonl'), wordDataset(16).map((d) => JSON.stringify(d)).join('\n'));
  const cli = CLI;
  const out = spawnSync(process.execPath, [cli, 'train', '--model', causal, '--data', path.join(dir, 'data.jsonl'), '--output', path.join(dir, 'cli'),
    '--cross-encoder', '--cross-encoder-template', path.join(dir, 'template.jinja'), '--cross-encoder-tokens', 'good,bad', '--epochs', '1', '--batch-size', '4',
    '--val-split', '0', '--device', 'cpu', '--json'], { encoding: 'utf8' });
  t.is(out.status, 0, out.stderr);
  t.is(fs.readFileSync(path.join(dir, 'cli', 'chat_template.jinja'), 'utf8'), chatTemplate);
  // Refused: a template for a folder that is a reranker already, or not a causal LM; the default tokens this vocabulary lacks.
  t.regex((await rejection(() => train({ model: path.join(FIXTURES, 'seq-cls'), data: wordDataset(8), output: path.join(dir, 'x'), batchSize: 4, device: 'cpu', crossEncoder: start }))).message, /is a reranker already/);
  t.regex((await rejection(() => train({ model: FIXTURE, data: wordDataset(8), output: path.join(dir, 'y'), batchSize: 4, device: 'cpu', crossEncoder: start }))).message, /make a reranker of a decoder LLM's \*ForCausalLM folder; .* is not one/);
  t.regex((await rejection(() => train({ model: causal, data: wordDataset(8), output: path.join(dir, 'z'), batchSize: 4, device: 'cpu', crossEncoder: { chatTemplate } }))).message, /the tokenizer has no 'yes' token/);
});

test("QWEN3_RERANKER_TEMPLATE renders a pair as Qwen3-Reranker's model card formats it, with the instruction as a system message or its default", (t) => {
  const prefix =
    '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n';
  const suffix = '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
  const card = (instruction: string, query: string, doc: string) => `${prefix}<Instruct>: ${instruction}\n<Query>: ${query}\n<Document>: ${doc}${suffix}`;
  const template = new ChatTemplate(path.join(FIXTURES, 'logit-score'), QWEN3_RERANKER_TEMPLATE);
  const pair = [{ role: 'query', content: 'What is the capital of China?' }, { role: 'document', content: 'The capital of China is Beijing.' }];
  t.is(template.render({ messages: pair }), card('Given a web search query, retrieve relevant passages that answer the query', pair[0].content, pair[1].content));
  t.is(template.render({ messages: [{ role: 'system', content: 'Find code' }, ...pair] }), card('Find code', pair[0].content, pair[1].content));
});

test('decoder rerankers refused with the reason: a chat template that drops the pair, a default LogitScore whose tokens the vocabulary lacks', async (t) => {
  // A chat model's own template knows system, user and assistant: the pair's contents would never reach the prompt.
  const chatml = copyOf('seq-cls', (d) =>
    fs.writeFileSync(path.join(d, 'chat_template.jinja'), "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}"),
  );
  t.regex((await rejection(() => CrossEncoder.load(chatml, { device: 'cpu' }))).message, /chat template cannot carry a \(query, document\) pair: the query and document message's content does not reach the prompt/);
  // A bare *ForCausalLM folder is scored on 'yes' against 'no', as sentence-transformers does; this vocabulary has neither.
  const bare = copyOf('logit-score', (d) => {
    for (const f of ['modules.json', 'sentence_bert_config.json', 'config_sentence_transformers.json']) fs.rmSync(path.join(d, f));
    fs.rmSync(path.join(d, '1_LogitScore'), { recursive: true });
  });
  t.regex((await rejection(() => CrossEncoder.load(bare, { device: 'cpu' }))).message, /the tokenizer has no 'yes' token, which sentence-transformers scores a causal LM with by default/);
  t.regex((await rejection(() => CrossEncoder.load(path.join(FIXTURES, 'seq-cls'), { device: 'cpu', tokens: ['good', 'bad'] }))).message, /chatTemplate and tokens make a reranker of a decoder LLM's \*ForCausalLM folder; .* is a reranker already/);
  t.regex((await rejection(() => CrossEncoder.load(bare, { device: 'cpu', tokens: [] as never }))).message, /options\.tokens must be the true and false tokens/);
});

for (const name of MODELS) {
  test(`${name}: LoRA trains the adapters (and the score head of a sequence-classification one) only; the base with the saved adapter scores as the merged model`, async (t) => {
    const output = path.join(tempDir(), 'lora');
    await train({ model: path.join(FIXTURES, name), data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: true, lora: true });
    const config = JSON.parse(fs.readFileSync(path.join(output, 'adapter', 'adapter_config.json'), 'utf8'));
    t.is(config.task_type, name === 'logit-score' ? 'CAUSAL_LM' : 'SEQ_CLS');
    t.deepEqual(config.modules_to_save, name === 'logit-score' ? null : ['classifier', 'score']);
    // The model card's PEFT line loads the base as the task the adapter is for.
    t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), name === 'logit-score' ? /PeftModel\.from_pretrained\(AutoModelForCausalLM/ : /PeftModel\.from_pretrained\(AutoModelForSequenceClassification/);
    const adapterNames = [...readSafetensors(path.join(output, 'adapter', 'adapter_model.safetensors')).tensors.keys()];
    t.true(adapterNames.every((n) => n.startsWith('base_model.model.model.layers.') || n === 'base_model.model.score.weight'), adapterNames.join(', '));
    t.is(adapterNames.includes('base_model.model.score.weight'), name === 'seq-cls');
    // The merged weights differ from the base's only where the adapters went (and the score head).
    const base = readSafetensors(path.join(FIXTURES, name, 'model.safetensors')).tensors;
    const merged = readSafetensors(path.join(output, 'model.safetensors')).tensors;
    const changed = [...merged.keys()].filter((k) => maxAbsDiff(merged.get(k)!.data, base.get(k)!.data) > 0);
    t.true(changed.length > 0 && changed.every((k) => /self_attn\.(q|v)_proj\.weight$/.test(k) || k === 'score.weight'), changed.join(', '));
    const withMerged = await CrossEncoder.load(output, { device: 'cpu' });
    const withAdapter = await CrossEncoder.load(path.join(FIXTURES, name), { device: 'cpu', adapter: path.join(output, 'adapter') });
    const a = (await withMerged.predict(PAIRS, { activation: 'identity' })).data;
    t.true(maxAbsDiff(a, REFERENCE.models[name].logits.flat()) > 1e-3, 'training changed the scores');
    t.true(maxAbsDiff(a, (await withAdapter.predict(PAIRS, { activation: 'identity' })).data) < 1e-5);
    withMerged.dispose();
    if (name === 'seq-cls') {
      // The CLI's --reranker-adapter adds it too: coltrast eval re-ranks as evaluate() with that CrossEncoder.
      const data = path.join(ROOT, 'examples', 'ai-projects.json');
      const expected = await evaluate({ data, model: FIXTURE, device: 'cpu', k: [1, 5], reranker: withAdapter, candidates: 5 });
      const cli = CLI;
      const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 240_000 });
      const flags = ['--data', data, '--model', FIXTURE, '--candidates', '5', '--k', '1,5', '--device', 'cpu', '--json'];
      const out = run('eval', ...flags, '--reranker', path.join(FIXTURES, name), '--reranker-adapter', path.join(output, 'adapter'));
      t.is(out.status, 0, out.stderr);
      t.deepEqual(JSON.parse(out.stdout)[0].metrics, expected.metrics);
      const alone = run('eval', ...flags, '--reranker-adapter', path.join(output, 'adapter'));
      t.is(alone.status, 2);
      t.regex(alone.stderr, /--reranker-adapter goes on the cross-encoder: give --reranker/);
    }
    withAdapter.dispose();
  });
}

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: decoder rerankers' logits (float32, bfloat16) equal sentence-transformers' (LogitScore and sequence classification)${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    const logits = async (name: (typeof MODELS)[number], device: 'cpu' | 'cuda', dtype: 'float32' | 'bfloat16') => {
      const model = await CrossEncoder.load(path.join(FIXTURES, name), { device, dtype });
      const diff = maxAbsDiff((await model.predict(PAIRS, { activation: 'identity', batchSize: 3 })).data, REFERENCE.models[name].logits.flat());
      model.dispose();
      return diff;
    };
    for (const name of MODELS) {
      // bfloat16: within 4 times the CPU's own bfloat16 error on this model (0.017 and 0.038 here, logits up to 3.2).
      const bf16Error = await logits(name, 'cpu', 'bfloat16');
      for (const dtype of ['float32', 'bfloat16'] as const) {
        const diff = await logits(name, 'cuda', dtype);
        t.true(diff < (dtype === 'float32' ? 1e-4 : Math.max(0.05, 4 * bf16Error)), `${name}, ${dtype}: max abs difference ${diff} (the CPU's bfloat16: ${bf16Error})`);
      }
    }
  },
);
