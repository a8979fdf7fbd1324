// CrossEncoder: scores text pairs as sentence-transformers 6's CrossEncoder does. The fixtures were written and
// their expected outputs recorded by sentence-transformers 6.0.1 itself (scripts/fixtures/st_cross_encoder.py):
// a one-label reranker saved by CrossEncoder.save and a three-label Hugging Face *ForSequenceClassification folder.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, Index, evaluate, train, type IndexDoc } from '../lib';
import { native } from '../lib/native';
import { checkTrainingLoss } from './helpers/cross-encoder';
import { checkKillAndResume } from './helpers/resume';
import { readSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';
import { CLI, FIXTURE, STEP, editJson, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const CE = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder');
interface Recorded {
  logits: number[][];
  scores: number[][];
  rank?: { index: number; score: number }[];
}
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder.reference.json'), 'utf8')) as {
  pairs: [string, string][];
  st: Recorded;
  hf: Recorded;
};
const PAIRS = REFERENCE.pairs;

function copyOf(which: 'st' | 'hf', edit?: (dir: string) => void): string {
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(path.join(CE, which), dir, { recursive: true });
  edit?.(dir);
  return dir;
}

for (const which of ['st', 'hf'] as const) {
  test(`predict equals sentence-transformers' CrossEncoder.predict, logits and default activation (1e-5): ${which}`, async (t) => {
    const ce = await CrossEncoder.load(path.join(CE, which), { device: 'cpu' });
    const labels = which === 'st' ? 1 : 3;
    t.is(ce.numLabels, labels);
    t.is(ce.activation, which === 'st' ? 'sigmoid' : 'identity');
    t.deepEqual([...ce.labels], which === 'st' ? ['LABEL_0'] : ['contradiction', 'entailment', 'neutral']);
    // The st folder was saved with max_length 24 (tokenizer_config.json); the hf one is capped by its 40 positions.
    t.is(ce.maxSeqLength, which === 'st' ? 24 : 40);
    for (const batchSize of [1, 3, 32]) {
      const logits = await ce.predict(PAIRS, { batchSize, activation: 'identity' });
      t.deepEqual(logits.dims, [PAIRS.length, labels]);
      t.true(maxAbsDiff(logits.data, REFERENCE[which].logits.flat()) < 1e-5, `logits, batch ${batchSize}`);
      const scores = await ce.predict(PAIRS, { batchSize });
      t.true(maxAbsDiff(scores.data, REFERENCE[which].scores.flat()) < 1e-5, `scores, batch ${batchSize}`);
    }
    ce.dispose();
  });
}

// A GPU's way (pairs tokenized in chunks of 512 while the batches before them run) on the CPU. Serial: the setting is
// process-wide while the test runs, and ava runs serial tests before the others.
test.serial('predict with pairs tokenized ahead in chunks (COLTRAST_TOKENIZE_AHEAD=1) scores each pair as before', async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  const many = Array.from({ length: 1300 }, (_, i): [string, string] => [PAIRS[i % PAIRS.length][0], PAIRS[(i * 7) % PAIRS.length][1] + ' x'.repeat(i % 11)]);
  const allFirst = await ce.predict(many, { batchSize: 32 });
  process.env.COLTRAST_TOKENIZE_AHEAD = '1';
  t.teardown(() => delete process.env.COLTRAST_TOKENIZE_AHEAD);
  const progress: number[] = [];
  const ahead = await ce.predict(many, { batchSize: 32, onProgress: (done) => progress.push(done) });
  t.deepEqual(ahead.dims, [1300, 1]);
  t.true(maxAbsDiff(ahead.data, allFirst.data) < 1e-6);
  t.deepEqual(progress, [0, ...Array.from({ length: Math.ceil(1300 / 32) }, (_, i) => Math.min(1300, (i + 1) * 32))]);
  // Pair 1,299 alone, against its row.
  t.true(maxAbsDiff((await ce.predict([many[1299]])).data, ahead.data.subarray(1299, 1300)) < 1e-6);
  ce.dispose();
});

test("a prompt goes before each pair's first text (sentence-transformers' prepend_prompt_to_texts), given or the model's default", async (t) => {
  const prompt = 'query: ';
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  const expected = (await ce.predict(PAIRS.map(([q, d]): [string, string] => [prompt + q, d]))).data;
  t.notDeepEqual(expected, (await ce.predict(PAIRS)).data);
  t.deepEqual((await ce.predict(PAIRS, { prompt })).data, expected);
  ce.dispose();
  const named = await CrossEncoder.load(copyOf('st', (d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { q: prompt }, default_prompt_name: 'q' }))), { device: 'cpu' });
  t.deepEqual((await named.predict(PAIRS)).data, expected);
  const documents = PAIRS.map((p) => p[1]);
  const byHand = (await named.predict(documents.map((d): [string, string] => [prompt + PAIRS[0][0], d]), { prompt: '' })).data;
  const ranked = await named.rank(PAIRS[0][0], documents, { promptName: 'q' });
  t.deepEqual(ranked.map((r) => r.score), ranked.map((r) => byHand[r.index]));
  named.dispose();
});

test("rank equals sentence-transformers' rank: order and scores; topK and returnDocuments", async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  const documents = PAIRS.map((p) => p[1]);
  const ranked = await ce.rank(PAIRS[0][0], documents);
  const expected = REFERENCE.st.rank!;
  t.deepEqual(
    ranked.map((r) => r.index),
    expected.map((r) => r.index),
  );
  t.true(maxAbsDiff(ranked.map((r) => r.score), expected.map((r) => r.score)) < 1e-5);
  const top = await ce.rank(PAIRS[0][0], documents, { topK: 2, returnDocuments: true });
  t.deepEqual(top, ranked.slice(0, 2).map((r) => ({ ...r, text: documents[r.index] })));
  t.deepEqual(await ce.rank('q', []), []);
  ce.dispose();
});

test('activation options: softmax rows of the logits, tanh, sigmoid', async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'hf'), { device: 'cpu' });
  const logits = REFERENCE.hf.logits;
  const softmax = await ce.predict(PAIRS, { activation: 'softmax' });
  const expected = logits.flatMap((row) => {
    const exps = row.map((x) => Math.exp(x - Math.max(...row)));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  });
  t.true(maxAbsDiff(softmax.data, expected) < 1e-5);
  t.true(maxAbsDiff((await ce.predict(PAIRS, { activation: 'tanh' })).data, logits.flat().map(Math.tanh)) < 1e-5);
  t.true(maxAbsDiff((await ce.predict(PAIRS, { activation: 'sigmoid' })).data, logits.flat().map((x) => 1 / (1 + Math.exp(-x)))) < 1e-5);
  t.deepEqual((await ce.predict([])).dims, [0, 3]);
  ce.dispose();
});

test('save writes a sentence-transformers CrossEncoder folder that loads back with the same scores', async (t) => {
  for (const which of ['st', 'hf'] as const) {
    const ce = await CrossEncoder.load(path.join(CE, which), { device: 'cpu' });
    const dir = path.join(tempDir(), 'saved');
    await ce.save(dir);
    const modules = JSON.parse(fs.readFileSync(path.join(dir, 'modules.json'), 'utf8'));
    t.deepEqual(modules.map((m: { path: string }) => m.path), ['']);
    const st = JSON.parse(fs.readFileSync(path.join(dir, 'config_sentence_transformers.json'), 'utf8'));
    t.is(st.model_type, 'CrossEncoder');
    t.is(st.activation_fn, which === 'st' ? 'torch.nn.modules.activation.Sigmoid' : 'torch.nn.modules.linear.Identity');
    // Named as BertForSequenceClassification names them: the encoder under bert., the head's pooler and classifier.
    const names = [...readSafetensors(path.join(dir, 'model.safetensors')).tensors.keys()];
    const original = [...readSafetensors(path.join(CE, which, 'model.safetensors')).tensors.keys()];
    t.deepEqual([...names].sort(), [...original].sort());
    t.true(names.includes('classifier.weight') && names.includes('bert.pooler.dense.weight') && names.includes('bert.embeddings.word_embeddings.weight'));
    const again = await CrossEncoder.load(dir, { device: 'cpu' });
    t.is(again.maxSeqLength, ce.maxSeqLength);
    t.deepEqual([...again.labels], [...ce.labels]);
    t.deepEqual((await again.predict(PAIRS, { activation: 'identity' })).data, (await ce.predict(PAIRS, { activation: 'identity' })).data);
    const e = await rejection(() => ce.save(dir));
    t.regex(e.message, /exists/);
    again.dispose();
    ce.dispose();
  }
});

test('bfloat16 on the CPU scores close to float32', async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu', dtype: 'bfloat16' });
  const logits = await ce.predict(PAIRS, { activation: 'identity' });
  t.true(maxAbsDiff(logits.data, REFERENCE.st.logits.flat()) < 0.1, `max diff ${maxAbsDiff(logits.data, REFERENCE.st.logits.flat())}`);
  ce.dispose();
});

test('an embedding model is not a cross-encoder, and a cross-encoder is not an embedding model', async (t) => {
  let e = await rejection(() => CrossEncoder.load(FIXTURE, { device: 'cpu' }));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /not a cross-encoder: config\.json's architectures are \[BertModel\].*Encoder\.load/);
  e = await rejection(() => Encoder.load(path.join(CE, 'st'), { device: 'cpu' }));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /cross-encoder .*CrossEncoder\.load/);
});

test('bad cross-encoder folders: no classifier weights, labels that disagree with them, an unknown activation, more modules', async (t) => {
  // The architecture says sequence classification, but the weights are a bare encoder's.
  let dir = copyOf('hf', (d) => fs.copyFileSync(path.join(FIXTURE, 'model.safetensors'), path.join(d, 'model.safetensors')));
  let e = await rejection(() => CrossEncoder.load(dir, { device: 'cpu' }));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /has no classifier\.weight/);
  dir = copyOf('hf', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, id2label: { 0: 'a', 1: 'b' }, label2id: { a: 0, b: 1 } })));
  e = await rejection(() => CrossEncoder.load(dir, { device: 'cpu' }));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /classifier\.weight has shape \[3, 32\], expected \[2, 32\]/);
  dir = copyOf('st', (d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, activation_fn: 'torch.nn.modules.activation.ReLU' })));
  e = await rejection(() => CrossEncoder.load(dir, { device: 'cpu' }));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /activation_fn torch\.nn\.modules\.activation\.ReLU is not supported/);
  // An activation outside torch is not run without trust_remote_code, by sentence-transformers either: the default.
  dir = copyOf('st', (d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, activation_fn: 'mypackage.Custom' })));
  const ce = await CrossEncoder.load(dir, { device: 'cpu' });
  t.is(ce.activation, 'sigmoid');
  ce.dispose();
  // sentence-transformers before 4.0 kept the activation in config.json.
  dir = copyOf('hf', (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, sbert_ce_default_activation_function: 'torch.nn.modules.activation.Tanh' })));
  const old = await CrossEncoder.load(dir, { device: 'cpu' });
  t.is(old.activation, 'tanh');
  old.dispose();
  dir = copyOf('st', (d) =>
    editJson(path.join(d, 'modules.json'), (m) => [...m, { idx: 1, name: '1', path: '1_LogitScore', type: 'sentence_transformers.cross_encoder.modules.logit_score.LogitScore' }]),
  );
  e = await rejection(() => CrossEncoder.load(dir, { device: 'cpu' }));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /one Transformer module is supported/);
});

test('bad arguments: pairs, options, rank on a multi-label model, a disposed model', async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  let e = await rejection(() => ce.predict('a' as never));
  t.is(e.code, 'INVALID_ARGUMENT');
  e = await rejection(() => ce.predict([['a', 'b'], ['c']] as never));
  t.regex(e.message, /pairs\[1\].*\[string, string\] pair/);
  e = await rejection(() => ce.predict([['a', 'b']], { activation: 'relu' } as never));
  t.regex(e.message, /options\.activation/);
  e = await rejection(() => ce.predict([['a', 'b']], { batch: 4 } as never));
  t.regex(e.message, /batch/);
  e = await rejection(() => ce.rank('q', ['a', 3] as never));
  t.regex(e.message, /documents\[1\]/);
  e = await rejection(() => ce.rank('q', ['a'], { topK: 0 }));
  t.regex(e.message, /topK/);
  const multi = await CrossEncoder.load(path.join(CE, 'hf'), { device: 'cpu' });
  e = await rejection(() => multi.rank('q', ['a']));
  t.regex(e.message, /one-label model.*3 labels/);
  multi.dispose();
  const pending = ce.predict(PAIRS);
  ce.dispose();
  t.is((await pending).dims[0], PAIRS.length); // a call already running finishes
  e = await rejection(() => ce.predict(PAIRS));
  t.is(e.code, 'DISPOSED');
  t.regex(e.message, /CrossEncoder was disposed/);
});

const projects = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8')).projects;
const DOCS: IndexDoc[] = projects.flatMap((p: { project_id: string; readme_content: string }) =>
  p.readme_content.split(/\n\n+/).map((text: string, i: number) => ({ id: `${p.project_id}#${i}`, text })),
);
const QUERIES = ['Which project uses reinforcement learning?', 'pneumonia x-ray', 'sentiment of reviews'];

test("Index.search re-ranks any first stage's candidates by the cross-encoder's scores", async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  const index = await Index.build(enc, DOCS);
  for (const mode of ['dense', 'bm25', 'hybrid'] as const) {
    const first = await index.search(QUERIES, { k: 6, mode, candidates: 6 });
    const hits = await index.search(QUERIES, { k: 4, mode, rerank: ce, candidates: 6 });
    for (let i = 0; i < QUERIES.length; i++) {
      // The cross-encoder's own scores of the six candidates, best first: the re-ranked hits are the top four.
      const { data } = await ce.predict(first[i].map((h): [string, string] => [QUERIES[i], h.text]));
      const expected = first[i].map((h, j) => ({ id: h.id, score: data[j] })).sort((a, b) => b.score - a.score).slice(0, 4);
      t.deepEqual(hits[i].map((h) => h.id), expected.map((e) => e.id), `${mode}, query ${i}`);
      t.true(maxAbsDiff(hits[i].map((h) => h.score), expected.map((e) => e.score)) < 1e-6);
    }
  }
  const multi = await CrossEncoder.load(path.join(CE, 'hf'), { device: 'cpu' });
  const e = await rejection(() => index.search(QUERIES, { rerank: multi }));
  t.regex(e.message, /one score per pair.*3 labels/);
  multi.dispose();
  ce.dispose();
  enc.dispose();
});

test('evaluate() with a reranker scores the re-ranked candidates; the CLI takes --reranker', async (t) => {
  const data = path.join(ROOT, 'examples', 'ai-projects.json');
  const plain = await evaluate({ data, model: FIXTURE, device: 'cpu', k: [1, 5] });
  const reranked = await evaluate({ data, model: FIXTURE, device: 'cpu', k: [1, 5], reranker: path.join(CE, 'st'), candidates: 5 });
  t.is(reranked.reranker, path.join(CE, 'st'));
  t.is(plain.reranker, undefined);
  // Re-ranking the top five reorders them only: recall@5 is the first stage's.
  t.is(reranked.metrics.recall[5], plain.metrics.recall[5]);
  t.is(reranked.queries, plain.queries);
  t.true(reranked.metrics.ndcg[1] >= 0 && reranked.metrics.ndcg[1] <= 1);
  const bad = await rejection(() => evaluate({ data, model: FIXTURE, device: 'cpu', reranker: 3 as never }));
  t.regex(bad.message, /options\.reranker/);

  const { spawnSync } = await import('node:child_process');
  const cli = CLI;
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 240_000 });
  const out = run('eval', '--data', data, '--model', FIXTURE, '--reranker', path.join(CE, 'st'), '--candidates', '5', '--k', '1,5', '--device', 'cpu', '--json');
  t.is(out.status, 0, out.stderr);
  const [result] = JSON.parse(out.stdout);
  t.is(result.name, 'dense:tiny-bert+st');
  t.deepEqual(result.metrics, reranked.metrics);
  const dir = path.join(tempDir(), 'ai.index');
  t.is(run('index', '--data', data, '--model', FIXTURE, '--output', dir, '--device', 'cpu', '--json').status, 0);
  const found = run('search', '--index', dir, QUERIES[0], '--reranker', path.join(CE, 'st'), '--candidates', '5', '--k', '2', '--device', 'cpu', '--json');
  t.is(found.status, 0, found.stderr);
  const [hits] = JSON.parse(found.stdout);
  t.is(hits.hits.length, 2);
  t.true(hits.hits[0].score >= hits.hits[1].score);
  const both = run('search', '--index', dir, QUERIES[0], '--reranker', path.join(CE, 'st'), '--rerank', 'maxsim', '--device', 'cpu');
  t.is(both.status, 2);
  t.regex(both.stderr, /not both/);
});

// ---- training ----

const STEP_OPTIONS = { ...STEP, learningRate: 0, lossScale: 1, apply: false };

for (const kind of ['cross_entropy', 'bce'] as const) {
  test(`a cross-encoder's training loss is its definition over the pairs' logits (${kind}), and steps lower it`, async (t) => {
    const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
    // (The fixture's sigmoid scores are near saturation, so the listwise loss moves slowly.)
    await checkTrainingLoss(t, ce, kind, 15, 0.05);
    ce.dispose();
  });
}

test("labeled pairs: a cross-encoder's loss is each pair's BCE on its logit and label (BinaryCrossEntropyLoss), and train() validates by correlation", async (t) => {
  const ce = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cpu' });
  const data = wordDataset(6, 9);
  const queries = data.map((d) => d.query);
  const documents = data.map((d, i) => (i % 2 === 0 ? d.positive : data[(i + 1) % data.length].positive));
  const labels = [1, 0, 0.75, 0, 1, 0.25];
  const trainer = ce.createTrainer({ learningRate: 1e-3, weightDecay: 0.01, seed: 1, precision: 'float32' }, { kind: 'bce', scale: 10 }, true);
  const options = { ...STEP_OPTIONS, pairLabels: Float32Array.from(labels) };
  const { loss } = await trainer.evaluate(queries, documents, options);
  // By its definition (float64), from predict()'s logits of each pair alone: mean of max(x, 0) - x y + log(1 + e^-|x|).
  const { data: logits } = await ce.predict(queries.map((q, i): [string, string] => [q, documents[i]]), { activation: 'identity' });
  const expected = labels.reduce((sum, y, i) => sum + Math.max(logits[i], 0) - logits[i] * y + Math.log1p(Math.exp(-Math.abs(logits[i]))), 0) / labels.length;
  t.true(Math.abs(loss - expected) < 1e-5, `native ${loss}, definition ${expected}`);
  for (let step = 0; step < 10; step++) await trainer.step(queries, documents, { ...options, learningRate: 1e-3, apply: true });
  t.true((await trainer.evaluate(queries, documents, options)).loss < loss - 0.01, 'steps on the batch lower its loss');
  trainer.dispose();
  ce.dispose();

  // train(): labeled pairs in [0, 1] (the loss is BCE on them, whatever crossEncoder.loss defaults to), validated by the
  // Spearman and Pearson correlations of the scores with the labels.
  const dir = tempDir();
  const file = path.join(dir, 'labeled.jsonl');
  const pairs = wordDataset(40, 4).map((d, i, all) => ({ sentence1: d.query, sentence2: i % 2 === 0 ? d.positive : all[(i + 3) % all.length].positive, label: i % 2 === 0 ? 1 : 0 }));
  fs.writeFileSync(file, pairs.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const result = await train({ model: path.join(CE, 'st'), data: file, output: path.join(dir, 'out'), crossEncoder: true, epochs: 2, batchSize: 4, learningRate: 1e-3, device: 'cpu', seed: 2, earlyStopping: { patience: 2, metric: 'spearman' } });
  t.is(result.similarity!.before!.pairs, 8);
  t.true(result.history.epochs.every((e) => e.similarity !== undefined && e.metrics === undefined));
  t.is(result.before, undefined);
  const history = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'training_history.json'), 'utf8'));
  t.is(history.config.crossEncoder.kind, 'bce');
  t.regex(fs.readFileSync(path.join(dir, 'out', 'README.md'), 'utf8'), /Spearman \/ Pearson of score and label/);
  const refused = async (extra: Record<string, unknown>, message: RegExp) =>
    t.regex((await rejection(() => train({ model: path.join(CE, 'st'), data: file, output: path.join(dir, 'x'), crossEncoder: true, device: 'cpu', ...extra }))).message, message);
  await refused({ crossEncoder: { loss: 'cross_entropy' } }, /options\.crossEncoder\.loss must be 'bce' \(or absent\) for labeled pairs/);
  await refused({ earlyStopping: { patience: 1, metric: 'mrr@10' } }, /'loss' or 'spearman' with labeled pairs/);
  fs.writeFileSync(file, pairs.map((p, i) => JSON.stringify({ ...p, label: i === 3 ? 4 : p.label })).join('\n') + '\n');
  await refused({}, /a cross-encoder's labels are in \[0, 1\] .*example 4 is labeled 4/);
});

test('train({ crossEncoder }) starts a reranker from an embedding model; options for embedding models are refused', async (t) => {
  const output = path.join(tempDir(), 'reranker');
  const result = await train({ model: FIXTURE, data: wordDataset(24), output, epochs: 2, batchSize: 4, learningRate: 1e-3, device: 'cpu', seed: 3, crossEncoder: true });
  t.is(result.history.epochs.length, 2);
  t.true(result.history.epochs.every((e) => Number.isFinite(e.valLoss) && e.metrics !== undefined));
  const ce = await CrossEncoder.load(output, { device: 'cpu' });
  t.is(ce.numLabels, 1);
  t.is(ce.activation, 'sigmoid');
  // A pair's length as sentence-transformers' CrossEncoder(FIXTURE) takes it: the tokenizer's 512 capped by the 40
  // positions, not the embedding model's per-text max_seq_length of 24 (a base + adapter pair then scored differently).
  t.is(ce.maxSeqLength, 40);
  t.is(JSON.parse(fs.readFileSync(path.join(output, 'sentence_bert_config.json'), 'utf8')).max_seq_length, 40);
  const config = JSON.parse(fs.readFileSync(path.join(output, 'config.json'), 'utf8'));
  t.deepEqual(config.architectures, ['BertForSequenceClassification']);
  t.deepEqual(config.id2label, { 0: 'LABEL_0' });
  const names = [...readSafetensors(path.join(output, 'model.safetensors')).tensors.keys()];
  t.true(names.includes('classifier.weight') && names.includes('bert.pooler.dense.weight'));
  t.true(fs.existsSync(path.join(output, 'training_curves.svg')) && fs.existsSync(path.join(output, 'README.md')));
  ce.dispose();
  for (const extra of [{ loss: { contrastiveWeight: 1 } }, { projection: { dimension: 8 } }, { miniBatchSize: 2 }]) {
    const e = await rejection(() => train({ model: FIXTURE, data: wordDataset(8), output: path.join(tempDir(), 'x'), crossEncoder: true, ...extra }));
    t.regex(e.message, /options\.crossEncoder: options\.\w+ is for embedding models/);
  }
  let e = await rejection(() => train({ model: FIXTURE, data: wordDataset(8), output: path.join(tempDir(), 'x'), crossEncoder: { loss: 'mse' } as never }));
  t.regex(e.message, /options\.crossEncoder\.loss/);
  e = await rejection(() => train({ model: path.join(CE, 'hf'), data: wordDataset(8), output: path.join(tempDir(), 'x'), batchSize: 4, device: 'cpu', crossEncoder: true }));
  t.regex(e.message, /3 labels; train\(\{ crossEncoder \}\) trains one-label rerankers/);
});

test('a cross-encoder run killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  const base = { model: FIXTURE, data: wordDataset(20, 5), epochs: 2, batchSize: 4, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2, crossEncoder: true };
  // 16 training examples, batches of 4: 4 steps per epoch, 8 in all; killed mid-epoch 2, one step after the checkpoint at 6.
  checkKillAndResume(t, base, { steps: 8, killAt: 7, checkpointAt: 6 });
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: a cross-encoder's scores (float32, bfloat16, float16) and training loss match the CPU${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const gpu = await CrossEncoder.load(path.join(CE, 'st'), { device: 'cuda', dtype });
      const logits = await gpu.predict(PAIRS, { activation: 'identity' });
      const diff = maxAbsDiff(logits.data, REFERENCE.st.logits.flat());
      t.true(diff < (dtype === 'float32' ? 1e-4 : 0.1), `${dtype}: max abs difference ${diff}`);
      gpu.dispose();
    }
    const data = wordDataset(5, 3);
    const queries = data.slice(0, 3).map((d) => d.query);
    const documents = data.map((d) => d.positive);
    const losses = [];
    for (const device of ['cpu', 'cuda'] as const) {
      const ce = await CrossEncoder.load(path.join(CE, 'st'), { device });
      const trainer = ce.createTrainer({ learningRate: 1e-3, weightDecay: 0.01, seed: 1, precision: 'float32' }, { kind: 'cross_entropy', scale: 10 });
      losses.push((await trainer.evaluate(queries, documents, STEP_OPTIONS)).loss);
      trainer.dispose();
      ce.dispose();
    }
    t.true(Math.abs(losses[0] - losses[1]) < 1e-4, `cpu ${losses[0]}, cuda ${losses[1]}`);
  },
);
