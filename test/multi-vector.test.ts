// Prompts and multi-vector (ColBERT-style) models, checked here without Python (test/python-interop.test.ts checks
// both against sentence-transformers itself):
//   - embed({ task, promptName, prompt }) puts the model's named prompt before each text, as encode_query /
//     encode_document choose it; include_prompt false leaves the prompt out of mean pooling; save keeps both;
//   - a MultiVectorEncoder folder (Transformer → token Dense → MultiVectorMask → Normalize) embeds to
//     normalize(W · h) of the fixture's token states h, skiplisted document tokens dropped, queries expanded to
//     their length with mask tokens (unattended: the real tokens' vectors do not change), documents cut at
//     document_length; an Index over it ranks by exact MaxSim; train() fine-tunes it with the late-interaction
//     loss (Dense included; kill and resume give the same weights); what it cannot do is refused with the reason;
//   - broken multi-vector and prompt configs are refused with the file and the key.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, Index, evaluate, exportIndex, train, type Matrix } from '../lib';
import { native } from '../lib/native';
import { editJson, fixtureCopy, folderCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { readSafetensors, writeSafetensors } from './helpers/safetensors';

const readSafetensorsNames = (file: string) => readSafetensors(file).tensors.keys();
import { encoderEmbedder } from '../lib/train';

const HIDDEN = 32;
const WIDTH = 16;
const QUERY_LENGTH = 12;
const DOCUMENT_LENGTH = 30;
const TEXTS = ['cat', 'model text, token.', 'what is a query?', 'the quick brown fox jumps over the lazy dog, in the river bank money water paper'];

// A fixed, seeded projection [WIDTH, HIDDEN].
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const W = Float32Array.from({ length: WIDTH * HIDDEN }, () => rand() / Math.sqrt(HIDDEN));

interface MultiVectorSpec {
  expansion?: { strategy: 'fixed' | 'min'; attend?: boolean; length: number } | null;
  mask?: Record<string, unknown>;
  normalizeInput?: 'token_embeddings' | 'sentence_embedding';
  similarity?: string;
}

/** The fixture as a sentence-transformers MultiVectorEncoder folder, laid out as sentence-transformers 6 saves one. */
function multiVectorCopy(spec: MultiVectorSpec = {}): string {
  return fixtureCopy((dir) => {
    fs.rmSync(path.join(dir, '1_Pooling'), { recursive: true });
    const modules = [
      { idx: 0, name: '0', path: '', type: 'sentence_transformers.base.modules.transformer.Transformer' },
      { idx: 1, name: '1', path: '1_Dense', type: 'sentence_transformers.base.modules.dense.Dense' },
      { idx: 2, name: '2', path: '2_MultiVectorMask', type: 'sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask' },
      { idx: 3, name: '3', path: '3_Normalize', type: 'sentence_transformers.base.modules.normalize.Normalize' },
    ];
    fs.writeFileSync(path.join(dir, 'modules.json'), JSON.stringify(modules));
    fs.mkdirSync(path.join(dir, '1_Dense'));
    const dense = { in_features: HIDDEN, out_features: WIDTH, bias: false, activation_function: 'torch.nn.modules.linear.Identity', module_input_name: 'token_embeddings', module_output_name: 'token_embeddings' };
    fs.writeFileSync(path.join(dir, '1_Dense', 'config.json'), JSON.stringify(dense));
    writeSafetensors(path.join(dir, '1_Dense', 'model.safetensors'), new Map([['linear.weight', { dtype: 'F32', shape: [WIDTH, HIDDEN], data: Buffer.from(W.buffer.slice(0)) }]]));
    fs.mkdirSync(path.join(dir, '2_MultiVectorMask'));
    fs.writeFileSync(path.join(dir, '2_MultiVectorMask', 'config.json'), JSON.stringify(spec.mask ?? { skiplist_words: [',', '.', '?'], skiplist_tasks: ['document'], keep_only_token_ids: null }));
    fs.mkdirSync(path.join(dir, '3_Normalize'));
    const input = spec.normalizeInput ?? 'token_embeddings';
    fs.writeFileSync(path.join(dir, '3_Normalize', 'config.json'), JSON.stringify({ module_input_name: input, module_output_name: input }));
    const expansion = spec.expansion === undefined ? { strategy: 'fixed', attend: false, token: null, length: QUERY_LENGTH } : spec.expansion;
    fs.writeFileSync(
      path.join(dir, 'sentence_bert_config.json'),
      JSON.stringify({ module_output_name: 'token_embeddings', query_length: QUERY_LENGTH, document_length: DOCUMENT_LENGTH, query_expansion: expansion }),
    );
    fs.writeFileSync(
      path.join(dir, 'config_sentence_transformers.json'),
      JSON.stringify({ model_type: 'MultiVectorEncoder', prompts: { query: '', document: '' }, default_prompt_name: null, similarity_fn_name: spec.similarity ?? null }),
    );
  });
}

/** A short training run on the fixture's words, enough for retrieval to improve. */
const SMALL_RUN = { data: wordDataset(48), epochs: 4, batchSize: 8, learningRate: 1e-3, valSplit: 0.25, device: 'cpu' as const };

/** normalize(W · h) per row of a [n, HIDDEN] matrix, keeping the rows where keep[i]. */
function project(states: Matrix, keep: boolean[], normalize = true): Float32Array {
  const out: number[] = [];
  for (let i = 0; i < states.dims[0]; i++) {
    if (!keep[i]) continue;
    const h = states.data.subarray(i * HIDDEN, (i + 1) * HIDDEN);
    const v = Array.from({ length: WIDTH }, (_, o) => h.reduce((sum, x, j) => sum + W[o * HIDDEN + j] * x, 0));
    const norm = normalize ? Math.hypot(...v) : 1;
    out.push(...v.map((x) => x / norm));
  }
  return Float32Array.from(out);
}

let plain: Encoder;
let multi: Encoder;
let plainTokens: Matrix[];
let plainIds: number[][];
test.before(async () => {
  plain = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  multi = await Encoder.load(multiVectorCopy(), { device: 'cpu' });
  plainTokens = await plain.embed(TEXTS, { output: 'tokens' });
  plainIds = await plain.tokenize(TEXTS);
});
test.after.always(() => {
  plain?.dispose();
  multi?.dispose();
});

test('a MultiVectorEncoder folder loads as multi-vector: its settings, its token width', (t) => {
  const mv = multi.multiVector!;
  t.truthy(mv);
  t.is(mv.format, 'sentence-transformers MultiVectorEncoder');
  t.like(mv, { queryLength: QUERY_LENGTH, documentLength: DOCUMENT_LENGTH, normalize: true, similarity: 'maxsim', skiplistTasks: ['document'] });
  t.deepEqual(mv.queryExpansion, { strategy: 'fixed', attend: false, token: null, length: QUERY_LENGTH });
  t.is(multi.tokenDimension, WIDTH);
  t.is(multi.dimension, WIDTH);
  t.is(plain.multiVector, undefined);
});

test("documents: normalize(W · h) of the model's token states, skiplisted tokens dropped, cut at document_length", async (t) => {
  const docs = await multi.embed(TEXTS, { output: 'tokens', task: 'document' });
  const skipIds = new Set((await plain.tokenize([', . ?']))[0].slice(1, -1));
  t.is(skipIds.size, 3, 'the fixture has the three skiplist tokens');
  let dropped = 0;
  TEXTS.forEach((_, i) => {
    const ids = plainIds[i];
    // The plain model cuts at its max_seq_length (24), below document_length: both see the same tokens here.
    const keep = ids.map((id) => !skipIds.has(id));
    dropped += keep.filter((k) => !k).length;
    const expected = project(plainTokens[i], keep);
    t.deepEqual(docs[i].dims, [keep.filter(Boolean).length, WIDTH]);
    t.true(maxAbsDiff(docs[i].data, expected) < 1e-5, `text ${i}: ${maxAbsDiff(docs[i].data, expected)}`);
  });
  t.true(dropped >= 3, 'the texts hold skiplist tokens');
  // Without a task the skiplist applies too (sentence-transformers counts no task as a document).
  const untasked = await multi.embed(TEXTS, { output: 'tokens' });
  t.deepEqual(untasked.map((m) => m.dims), docs.map((m) => m.dims));
  // A long document is cut at document_length (30), beyond the plain model's 24.
  const long = 'the quick brown fox jumps over the lazy dog and the river bank money water paper cafe resume naive hello world new old good bad cat dog run quick brown fox';
  const [cut] = await multi.embed([long], { output: 'tokens', task: 'document', normalize: false });
  const [ids] = await multi.tokenize([long]);
  t.true(ids.length > DOCUMENT_LENGTH, `the text has ${ids.length} tokens`);
  t.is(cut.dims[0], DOCUMENT_LENGTH);
});

test('queries: expanded to query length with mask tokens, which the real tokens do not attend to', async (t) => {
  const queries = await multi.embed(TEXTS, { output: 'tokens', task: 'query' });
  TEXTS.forEach((_, i) => {
    const n = Math.min(plainIds[i].length, QUERY_LENGTH);
    t.deepEqual(queries[i].dims, [QUERY_LENGTH, WIDTH], `text ${i}`);
    if (plainIds[i].length <= QUERY_LENGTH) {
      // Unattended expansion: the real tokens' states are those of the text alone; punctuation is kept in queries.
      const expected = project(plainTokens[i], plainIds[i].map(() => true));
      t.true(maxAbsDiff(queries[i].data.subarray(0, n * WIDTH), expected) < 1e-5, `text ${i}`);
    }
    for (let r = 0; r < QUERY_LENGTH; r++) {
      const norm = Math.hypot(...queries[i].data.subarray(r * WIDTH, (r + 1) * WIDTH));
      t.true(Math.abs(norm - 1) < 1e-5, `text ${i}, row ${r}: norm ${norm}`);
    }
  });
  t.true(plainIds[0].length < QUERY_LENGTH, 'a short query gets expansion tokens');

  // attend: true lets the real tokens see the expansion tokens, so their vectors change.
  const attending = await Encoder.load(multiVectorCopy({ expansion: { strategy: 'fixed', attend: true, length: QUERY_LENGTH } }), { device: 'cpu' });
  try {
    const [q] = await attending.embed([TEXTS[0]], { output: 'tokens', task: 'query' });
    t.deepEqual(q.dims, [QUERY_LENGTH, WIDTH]);
    t.true(maxAbsDiff(q.data.subarray(0, plainIds[0].length * WIDTH), queries[0].data.subarray(0, plainIds[0].length * WIDTH)) > 1e-4);
  } finally {
    attending.dispose();
  }
  // No expansion: a query is its own tokens, cut at query_length.
  const unexpanded = await Encoder.load(multiVectorCopy({ expansion: null }), { device: 'cpu' });
  try {
    const q = await unexpanded.embed(TEXTS, { output: 'tokens', task: 'query' });
    t.deepEqual(q.map((m) => m.dims[0]), plainIds.map((ids) => Math.min(ids.length, QUERY_LENGTH)));
  } finally {
    unexpanded.dispose();
  }
});

test("keep_only_token_ids, a Normalize of the pooled vector (a no-op here, as in sentence-transformers), 'meanmaxsim'", async (t) => {
  const keepIds = plainIds[1].slice(1, 3);
  const model = await Encoder.load(multiVectorCopy({ mask: { skiplist_words: [], keep_only_token_ids: keepIds }, normalizeInput: 'sentence_embedding', similarity: 'meanmaxsim' }), {
    device: 'cpu',
  });
  try {
    t.like(model.multiVector, { normalize: false, similarity: 'meanmaxsim' });
    const [doc] = await model.embed([TEXTS[1]], { output: 'tokens', task: 'document' });
    const keep = plainIds[1].map((id) => keepIds.includes(id));
    t.true(maxAbsDiff(doc.data, project(plainTokens[1], keep, false)) < 1e-5);
    const [query] = await model.embed([TEXTS[1]], { output: 'tokens', task: 'query' });
    t.is(query.dims[0], QUERY_LENGTH, 'queries keep every token');
  } finally {
    model.dispose();
  }
});

test('an Index over a multi-vector model ranks by exact MaxSim, and saves and loads', async (t) => {
  const words = 'model text token vector search query document retrieval train loss batch fast slow small large tiny cat dog river bank money water paper'.split(' ');
  const docs = Array.from({ length: 20 }, (_, i) => ({ id: `d${i}`, text: [0, 1, 2, 3, 4].map((j) => words[(i * 7 + j * 3) % words.length]).join(' ') }));
  const queries = ['cat dog', 'river bank money', 'search query'];
  const index = await Index.build(multi, docs);
  t.true(index.lateInteraction);
  const hits = await index.search(queries, { k: 5 });
  // The same ranking computed here: MaxSim of the query's token vectors against each document's.
  const q = await multi.embed(queries, { output: 'tokens', task: 'query' });
  const d = await multi.embed(docs.map((x) => x.text), { output: 'tokens', task: 'document' });
  const dot = (a: Float32Array, i: number, b: Float32Array, j: number) => a.subarray(i * WIDTH, (i + 1) * WIDTH).reduce((s, x, k) => s + x * b[j * WIDTH + k], 0);
  queries.forEach((_, qi) => {
    const scores = d.map((doc) => {
      let sum = 0;
      for (let i = 0; i < q[qi].dims[0]; i++) {
        let best = -Infinity;
        for (let j = 0; j < doc.dims[0]; j++) best = Math.max(best, dot(q[qi].data, i, doc.data, j));
        sum += best;
      }
      return sum;
    });
    const expected = scores.map((s, i) => [s, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 5);
    t.deepEqual(hits[qi].map((h) => h.id), expected.map(([, i]) => `d${i}`), `query ${qi}`);
    // float16 storage of the token vectors: scores within its rounding.
    hits[qi].forEach((h, r) => t.true(Math.abs(h.score - expected[r][0]) < 2e-2, `${h.score} vs ${expected[r][0]}`));
  });
  // Re-ranking by MaxSim changes nothing (the ranking is MaxSim already); hybrid fuses it with BM25.
  t.deepEqual(await index.search(queries, { k: 5, rerank: 'maxsim' }), hits);
  t.is((await index.search(queries, { k: 5, mode: 'hybrid' }))[0].length, 5);

  const dir = path.join(tempDir(), 'mv-index');
  await index.save(dir);
  t.false(fs.existsSync(path.join(dir, 'vectors.safetensors')));
  t.true(JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).multiVector);
  const loaded = await Index.load(dir, multi);
  t.deepEqual(await loaded.search(queries, { k: 5 }), hits);
  await t.throwsAsync(Index.load(dir, plain), { instanceOf: ColtrastError });

  // evaluate() ranks with it too: each query's best MaxSim document is judged relevant, so it comes first; then
  // the fifth best, which comes fifth.
  const corpus = docs.map((x) => ({ id: x.id, title: '', text: x.text }));
  const judged = (rank: number) => ({ corpus, queries: new Map(queries.map((text, i) => [`q${i}`, text])), qrels: new Map(queries.map((_, i) => [`q${i}`, new Map([[hits[i][rank].id, 1]])])) });
  const first = await evaluate({ data: judged(0), model: multi, k: [1, 5] });
  t.like(first.metrics, { recall: { 1: 1, 5: 1 }, mrr: { 1: 1, 5: 1 } });
  const fifth = await evaluate({ data: judged(4), model: multi, k: [1, 5] });
  t.like(fifth.metrics, { recall: { 1: 0, 5: 1 } });
  t.true(Math.abs(fifth.metrics.mrr[5] - 0.2) < 1e-12);
});

test("a multi-vector index refuses a model with another projection or skiplist, pooled-vector storage and export to pgvector", async (t) => {
  const docs = [{ id: 'a', text: 'cat dog river' }, { id: 'b', text: 'search query model' }];
  const dir = path.join(tempDir(), 'mv-fingerprint');
  await (await Index.build(multi, docs)).save(dir);
  t.is((await Index.load(dir, multi)).size, 2);
  // The Transformer's config.json and weights are the plain model's: the old fingerprint, of those alone, took either for the other.
  for (const edit of [
    (d: string) => writeSafetensors(path.join(d, '1_Dense', 'model.safetensors'), new Map([['linear.weight', { dtype: 'F32', shape: [WIDTH, HIDDEN], data: Buffer.from(W.map((x) => -x).buffer) }]])),
    (d: string) => editJson(path.join(d, '2_MultiVectorMask', 'config.json'), (c) => ({ ...c, skiplist_words: ['cat'] })),
  ]) {
    const other = await Encoder.load(folderCopy(multi.modelDir, edit), { device: 'cpu' });
    const e = await t.throwsAsync(Index.load(dir, other), { instanceOf: ColtrastError });
    t.regex(e!.message, /was built with another model .*load the index with the model that built it, or rebuild the index with this one/);
    other.dispose();
  }
  // It keeps no pooled vectors: a storage for them is refused, not recorded (float32, the default, says nothing).
  for (const storage of ['float16', 'int8', 'binary'] as const) {
    await t.throwsAsync(Index.build(multi, docs, { storage }), { instanceOf: ColtrastError, message: new RegExp(`^options\\.storage must be absent with a multi-vector model: its index keeps token vectors only, .*got the string "${storage}"$`) });
  }
  t.is((await Index.build(multi, docs, { storage: 'float32' })).storage, 'float32');
  // Nor has it a vector per document for pgvector.
  const e = await t.throwsAsync(exportIndex(dir, path.join(tempDir(), 'mv.sql')), { instanceOf: ColtrastError });
  t.is(e!.code, 'INVALID_ARGUMENT');
  t.regex(e!.message, /was built with a multi-vector model: it holds token vectors only, and no pooled vector per document/);
});

test('save writes the multi-vector folder back: it reloads to the same vectors', async (t) => {
  const dir = path.join(tempDir(), 'mv-copy');
  await multi.save(dir);
  for (const file of ['modules.json', 'config_sentence_transformers.json', 'sentence_bert_config.json', '1_Dense/config.json', '1_Dense/model.safetensors', '2_MultiVectorMask/config.json', '3_Normalize/config.json']) {
    t.true(fs.existsSync(path.join(dir, file)), file);
  }
  t.false(fs.existsSync(path.join(dir, '1_Pooling')));
  const again = await Encoder.load(dir, { device: 'cpu' });
  try {
    for (const task of ['query', 'document'] as const) {
      const a = await multi.embed(TEXTS, { output: 'tokens', task });
      const b = await again.embed(TEXTS, { output: 'tokens', task });
      t.deepEqual(b.map((m) => m.dims), a.map((m) => m.dims));
      a.forEach((m, i) => t.deepEqual(b[i].data, m.data));
    }
  } finally {
    again.dispose();
  }
});

test('what a multi-vector model cannot do is refused with the reason', async (t) => {
  const pooled = await t.throwsAsync(multi.embed(TEXTS), { instanceOf: ColtrastError });
  t.regex(pooled!.message, /multi-vector .* token vectors only; use \{ output: 'tokens'/);
  const data = wordDataset(8);
  const contrastive = await t.throwsAsync(
    train({ model: multi.modelDir, data, batchSize: 4, valSplit: 0, output: path.join(tempDir(), 'x'), device: 'cpu', loss: { contrastiveWeight: 0.5 } }),
    { instanceOf: ColtrastError },
  );
  t.regex(contrastive!.message, /options\.loss\.contrastiveWeight: .* has no pooled vector/);
  const head = await t.throwsAsync(
    train({ model: multi.modelDir, data, batchSize: 4, valSplit: 0, output: path.join(tempDir(), 'x'), device: 'cpu', projection: { dimension: 8 } }),
    { instanceOf: ColtrastError },
  );
  t.regex(head!.message, /a projection head is not supported for it/);
  // Semantic chunking (train() and `coltrast index` on a project file) compares one vector per sentence.
  t.throws(() => encoderEmbedder(multi), { instanceOf: ColtrastError, message: /semantic chunking .* index ready-made chunks/ });
});

test('train() fine-tunes a multi-vector model: late interaction on its projected tokens, retrieval by MaxSim improves', async (t) => {
  const output = path.join(tempDir(), 'mv-trained');
  const result = await train({ ...SMALL_RUN, model: multi.modelDir, output, seed: 3 });
  const history = result.history.steps;
  t.true(history.every((s) => s.contrastive === 0 && s.lateInteraction === s.loss), 'the late-interaction loss alone');
  t.true(result.after!['mrr@10'] > result.before!['mrr@10'], `MRR@10 ${result.before!['mrr@10']} -> ${result.after!['mrr@10']}`);
  // The Dense projection trains with the encoder, and the folder stays a multi-vector one.
  const before = fs.readFileSync(path.join(multi.modelDir, '1_Dense', 'model.safetensors'));
  t.false(fs.readFileSync(path.join(output, '1_Dense', 'model.safetensors')).equals(before));
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /MultiVectorEncoder\("\.\/this-folder"\)/);
  const trained = await Encoder.load(output, { device: 'cpu' });
  try {
    t.like(trained.multiVector, { queryLength: QUERY_LENGTH, documentLength: DOCUMENT_LENGTH });
    const [q] = await trained.embed([TEXTS[0]], { output: 'tokens', task: 'query' });
    t.deepEqual(q.dims, [QUERY_LENGTH, WIDTH]);
  } finally {
    trained.dispose();
  }
});

test('gradient caching with a multi-vector model: mini-batches give the loss of the whole batch', async (t) => {
  // The expansion positions lie beyond the attended tokens; cutting mini-batches to their length must keep them.
  const trainer = await multi.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 1, precision: 'float32' });
  try {
    const queries = ['cat', 'river bank', 'a token', 'fast search', 'dog'];
    const documents = ['the cat sat', 'money in the river bank, water', 'a token is text.', 'search that is fast', 'a dog ran', 'paper', 'model loss'];
    const options = { contrastiveWeight: 0, lateInteractionWeight: 1, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const, learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false };
    const whole = await trainer.evaluate(queries, documents, options);
    const mini = await trainer.evaluate(queries, documents, { ...options, miniBatchSize: 2 });
    t.true(Number.isFinite(whole.loss) && whole.loss > 0);
    t.true(Math.abs(mini.loss - whole.loss) < 1e-5 * whole.loss, `${mini.loss} vs ${whole.loss}`);
  } finally {
    trainer.dispose();
  }
});

test('a multi-vector run killed mid-way resumes to the same weights as an uninterrupted run', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const child = path.resolve(__dirname, 'helpers', 'train-child.ts');
  const run = (options: object) => spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
  const options = { model: multi.modelDir, data: wordDataset(16), epochs: 2, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 9, checkpointEvery: 2 };
  const whole = path.join(tempDir(), 'whole');
  t.is(run({ ...options, output: whole }).status, 0);
  const output = path.join(tempDir(), 'parts');
  const killed = run({ ...options, output, killAtStep: 5 });
  t.is(killed.signal, 'SIGKILL');
  const resumed = run({ ...options, output, resume: true });
  t.is(resumed.status, 0, resumed.stderr);
  for (const file of ['model.safetensors', path.join('1_Dense', 'model.safetensors')]) {
    t.true(fs.readFileSync(path.join(output, file)).equals(fs.readFileSync(path.join(whole, file))), file);
  }
});

test('broken multi-vector folders are refused with the file and the key', async (t) => {
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['expansion without a length', (dir) => editJson(path.join(dir, 'sentence_bert_config.json'), (c) => ({ ...c, query_expansion: { strategy: 'fixed' } })), /query_expansion needs "length"/],
    ['an unknown strategy', (dir) => editJson(path.join(dir, 'sentence_bert_config.json'), (c) => ({ ...c, query_expansion: { strategy: 'max', length: 4 } })), /strategy must be "fixed" or "min"/],
    ['a negative document_length', (dir) => editJson(path.join(dir, 'sentence_bert_config.json'), (c) => ({ ...c, document_length: -3 })), /"document_length" must be a positive integer/],
    ['a skiplist that is not a list', (dir) => editJson(path.join(dir, '2_MultiVectorMask', 'config.json'), (c) => ({ ...c, skiplist_words: 'abc' })), /"skiplist_words" must be a list of strings/],
    ['a Pooling module', (dir) => editJson(path.join(dir, 'modules.json'), (m) => [m[0], { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' }, ...m.slice(1)]), /Transformer → \[Dense\] → \[MultiVectorMask\] → \[Normalize\] → \[HierarchicalTokenPooling\] is supported/],
    ['a token pooling of pool factor 0', (dir) => {
      editJson(path.join(dir, 'modules.json'), (m) => [...m, { idx: m.length, name: String(m.length), path: '9_Pool', type: 'sentence_transformers.multi_vector_encoder.modules.token_pooling.HierarchicalTokenPooling' }]);
      fs.mkdirSync(path.join(dir, '9_Pool'));
      fs.writeFileSync(path.join(dir, '9_Pool', 'config.json'), JSON.stringify({ pool_factor: 0, num_protected_tokens: 1, tasks: ['document'] }));
    }, /9_Pool\/config\.json: "pool_factor" must be a positive integer, not 0/],
    ['a Dense of the pooled vector', (dir) => editJson(path.join(dir, '1_Dense', 'config.json'), (c) => ({ ...c, module_input_name: 'sentence_embedding' })), /module_input_name "sentence_embedding" is not supported here \(only "token_embeddings"\)/],
    ['an expansion token the tokenizer lacks', (dir) => editJson(path.join(dir, 'sentence_bert_config.json'), (c) => ({ ...c, query_expansion: { strategy: 'fixed', token: '[NOPE]', length: 4 } })), /the token "\[NOPE\]", which the tokenizer does not have/],
    ['a Stanford ColBERT checkpoint', (dir) => {
      fs.rmSync(path.join(dir, 'modules.json'));
      fs.writeFileSync(path.join(dir, 'artifact.metadata'), '{}');
    }, /Stanford ColBERT checkpoint .* MultiVectorEncoder\(dir\)\.save/],
    ['a sparse encoder', (dir) => editJson(path.join(dir, 'config_sentence_transformers.json'), (c) => ({ ...c, model_type: 'SparseEncoder' })), /is a sentence-transformers SparseEncoder/],
  ];
  for (const [what, edit, message] of cases) {
    const dir = multiVectorCopy();
    edit(dir);
    const error = await t.throwsAsync(Encoder.load(dir, { device: 'cpu' }), { instanceOf: ColtrastError }, what);
    t.regex(error!.message, message, what);
  }
});

// Prompts on a single-vector model.
function promptedCopy(prompts: Record<string, string>, defaultPromptName: string | null, includePrompt = true, pooling = 'mean'): string {
  return fixtureCopy((dir) => {
    editJson(path.join(dir, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts, default_prompt_name: defaultPromptName }));
    editJson(path.join(dir, '1_Pooling', 'config.json'), () => ({ embedding_dimension: HIDDEN, pooling_mode: pooling, include_prompt: includePrompt }));
  });
}

test("prompts: a task picks the model's prompt as encode_query / encode_document do; promptName, prompt and the default", async (t) => {
  const model = await Encoder.load(promptedCopy({ query: 'query: ', passage: 'passage: ', other: 'other: ' }, 'other'), { device: 'cpu' });
  try {
    t.deepEqual(model.prompts, { query: 'query: ', passage: 'passage: ', other: 'other: ' });
    t.is(model.defaultPromptName, 'other');
    const withText = async (prefix: string) => (await plain.embed(TEXTS.map((x) => prefix + x))).data;
    t.deepEqual((await model.embed(TEXTS, { task: 'query' })).data, await withText('query: '));
    // encode_document's candidates: document, passage, corpus.
    t.deepEqual((await model.embed(TEXTS, { task: 'document' })).data, await withText('passage: '));
    t.deepEqual((await model.embed(TEXTS)).data, await withText('other: '));
    t.deepEqual((await model.embed(TEXTS, { promptName: 'query' })).data, await withText('query: '));
    t.deepEqual((await model.embed(TEXTS, { prompt: 'mine: ', task: 'query' })).data, await withText('mine: '));
    t.notDeepEqual((await model.embed(TEXTS, { task: 'query' })).data, (await plain.embed(TEXTS)).data);
    // Token output gets the prompt too.
    const [tokens] = await model.embed([TEXTS[0]], { output: 'tokens', task: 'query' });
    t.is(tokens.dims[0], (await plain.tokenize(['query: ' + TEXTS[0]]))[0].length);

    const unknown = await t.throwsAsync(model.embed(TEXTS, { promptName: 'nope' }), { instanceOf: ColtrastError });
    t.regex(unknown!.message, /options\.promptName .*query, passage, other/);
    await t.throwsAsync(model.embed(TEXTS, { prompt: 'a', promptName: 'query' }), { message: /not both/ });
    await t.throwsAsync(model.embed(TEXTS, { task: 'question' as 'query' }), { instanceOf: ColtrastError });
    await t.throwsAsync(plain.embed(TEXTS, { promptName: 'query' }), { message: /this model has no prompts/ });

    // save keeps the prompts.
    const dir = path.join(tempDir(), 'prompted');
    await model.save(dir);
    const again = await Encoder.load(dir, { device: 'cpu' });
    t.deepEqual(again.prompts, model.prompts);
    t.is(again.defaultPromptName, 'other');
    t.deepEqual((await again.embed(TEXTS, { task: 'query' })).data, (await model.embed(TEXTS, { task: 'query' })).data);
    again.dispose();
  } finally {
    model.dispose();
  }
});

test("include_prompt false: mean pooling leaves the prompt's tokens out", async (t) => {
  const model = await Encoder.load(promptedCopy({ query: 'query: ' }, null, false), { device: 'cpu' });
  try {
    const texts = TEXTS.slice(0, 3);
    const pooled = await model.embed(texts, { task: 'query', normalize: false });
    const tokens = await plain.embed(texts.map((x) => 'query: ' + x), { output: 'tokens' });
    // [CLS] query : → the prompt's three tokens; the rest (text and [SEP]) are averaged.
    const promptLength = (await plain.tokenize(['query: ']))[0].length - 1;
    t.is(promptLength, 3);
    texts.forEach((_, i) => {
      const m = tokens[i];
      const mean = Array.from({ length: HIDDEN }, (_, j) => {
        let sum = 0;
        for (let r = promptLength; r < m.dims[0]; r++) sum += m.data[r * HIDDEN + j];
        return sum / (m.dims[0] - promptLength);
      });
      t.true(maxAbsDiff(pooled.data.subarray(i * HIDDEN, (i + 1) * HIDDEN), mean) < 1e-5, `text ${i}`);
    });
    // Without a prompt nothing is left out.
    t.deepEqual((await model.embed(texts, { normalize: false })).data, (await plain.embed(texts, { normalize: false })).data);
    const dir = path.join(tempDir(), 'exclude');
    await model.save(dir);
    t.false(JSON.parse(fs.readFileSync(path.join(dir, '1_Pooling', 'config.json'), 'utf8')).include_prompt);
  } finally {
    model.dispose();
  }
  const cls = await t.throwsAsync(Encoder.load(promptedCopy({ query: 'q: ' }, null, false, 'cls'), { device: 'cpu' }), { instanceOf: ColtrastError });
  t.regex(cls!.message, /include_prompt false with cls pooling is not supported/);
  const badDefault = await t.throwsAsync(Encoder.load(promptedCopy({ query: 'q: ' }, 'passage'), { device: 'cpu' }), { instanceOf: ColtrastError });
  t.regex(badDefault!.message, /default_prompt_name "passage" is not one of its prompts \(query\)/);
});

test("training sees what embed({ task }) sees: the prompts (pooling without them for include_prompt false), or none with prompts: false", async (t) => {
  const model = await Encoder.load(promptedCopy({ query: 'query: ', passage: 'passage: ' }, null, false), { device: 'cpu' });
  const queries = ['cat', 'river bank', 'a token', 'fast search'];
  const documents = ['the cat sat', 'money in the river bank', 'a token is text', 'search that is fast', 'a dog ran'];
  const options = { contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const, learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false };
  // In-batch InfoNCE over embed()'s vectors, computed here.
  const infoNce = (q: Matrix, d: Matrix) => {
    const dim = q.dims[1];
    let sum = 0;
    for (let i = 0; i < q.dims[0]; i++) {
      const logits = Array.from({ length: d.dims[0] }, (_, j) => q.data.subarray(i * dim, (i + 1) * dim).reduce((s, x, k) => s + x * d.data[j * dim + k], 0) / 0.05);
      const max = Math.max(...logits);
      sum += max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0)) - logits[i];
    }
    return sum / q.dims[0];
  };
  try {
    const prompted = await model.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 1, precision: 'float32' });
    const withPrompts = (await prompted.evaluate(queries, documents, options)).loss;
    prompted.dispose();
    const expected = infoNce(await model.embed(queries, { task: 'query', normalize: true }), await model.embed(documents, { task: 'document', normalize: true }));
    t.true(Math.abs(withPrompts - expected) < 1e-4 * expected, `${withPrompts} vs ${expected}`);

    const plainTrainer = await model.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 1, precision: 'float32' }, false);
    const withoutPrompts = (await plainTrainer.evaluate(queries, documents, options)).loss;
    plainTrainer.dispose();
    const unprompted = infoNce(await model.embed(queries, { normalize: true }), await model.embed(documents, { normalize: true }));
    t.true(Math.abs(withoutPrompts - unprompted) < 1e-4 * unprompted, `${withoutPrompts} vs ${unprompted}`);
    t.true(Math.abs(withPrompts - withoutPrompts) > 1e-3, 'the prompts change the loss');
  } finally {
    model.dispose();
  }
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: a multi-vector model's token vectors and training loss match the CPU${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    const gpu = await Encoder.load(multi.modelDir, { device: 'cuda' });
    const options = { contrastiveWeight: 0, lateInteractionWeight: 1, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const, learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false };
    const queries = TEXTS.slice(0, 3);
    const documents = TEXTS;
    try {
      for (const task of ['query', 'document'] as const) {
        const a = await multi.embed(TEXTS, { output: 'tokens', task });
        const b = await gpu.embed(TEXTS, { output: 'tokens', task });
        t.deepEqual(b.map((m) => m.dims), a.map((m) => m.dims));
        a.forEach((m, i) => t.true(maxAbsDiff(m.data, b[i].data) < 1e-4, `${task} ${i}`));
      }
      const losses = [];
      for (const encoder of [multi, gpu]) {
        const trainer = await encoder.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 1, precision: 'float32' });
        losses.push((await trainer.evaluate(queries, documents, options)).loss);
        trainer.dispose();
      }
      t.true(Math.abs(losses[0] - losses[1]) < 1e-4 * losses[0], `${losses}`);
    } finally {
      gpu.dispose();
    }
  },
);

test('train({ multiVector }) makes a single-vector model multi-vector and trains it; the folder is a MultiVectorEncoder', async (t) => {
  const output = path.join(tempDir(), 'made-mv');
  const result = await train({
    ...SMALL_RUN,
    model: fixtureCopy(),
    output,
    seed: 4,
    multiVector: { dimension: 12, queryLength: 10, documentLength: 20, queryPrompt: 'query: ' },
  });
  t.true(result.history.steps.every((s) => s.contrastive === 0 && s.lateInteraction === s.loss));
  t.true(result.after!['mrr@10'] > result.before!['mrr@10'], `MRR@10 ${result.before!['mrr@10']} -> ${result.after!['mrr@10']}`);
  const modules = JSON.parse(fs.readFileSync(path.join(output, 'modules.json'), 'utf8')).map((m: { type: string }) => m.type.split('.').pop());
  t.deepEqual(modules, ['Transformer', 'Dense', 'MultiVectorMask', 'Normalize']);
  t.false(fs.existsSync(path.join(output, '1_Pooling')));
  t.like(JSON.parse(fs.readFileSync(path.join(output, '1_Dense', 'config.json'), 'utf8')), { in_features: HIDDEN, out_features: 12, bias: false, module_input_name: 'token_embeddings' });
  t.deepEqual([...readSafetensorsNames(path.join(output, '1_Dense', 'model.safetensors'))], ['linear.weight']);
  const made = await Encoder.load(output, { device: 'cpu' });
  try {
    t.like(made.multiVector, { format: 'sentence-transformers MultiVectorEncoder', queryLength: 10, documentLength: 20, queryExpansion: { strategy: 'fixed', attend: false, token: null, length: 10 }, normalize: true });
    t.is(made.prompts.query, 'query: ');
    const [q] = await made.embed(['cat'], { output: 'tokens', task: 'query' });
    t.deepEqual(q.dims, [10, 12]);
  } finally {
    made.dispose();
  }
});

test('train({ multiVector }) options are checked before training', async (t) => {
  const base = { model: fixtureCopy(), data: wordDataset(8), output: path.join(tempDir(), 'x'), batchSize: 4, valSplit: 0, device: 'cpu' as const };
  const cases: [object, RegExp][] = [
    [{ multiVector: { dimension: 8 }, projection: { dimension: 8 } }, /a multi-vector model has no pooled vector to put a head on/],
    [{ multiVector: { queryExpansion: 'max' } }, /options\.multiVector\.queryExpansion/],
    [{ multiVector: { width: 8 } }, /options\.multiVector.*width/],
    [{ multiVector: { skiplist: 'abc' } }, /options\.multiVector\.skiplist/],
    [{ multiVector: {}, loss: { contrastiveWeight: 1 } }, /options\.loss\.contrastiveWeight: .* has no pooled vector/],
    [{ model: multi.modelDir, multiVector: {} }, /is a multi-vector model already; drop the multiVector option/],
  ];
  for (const [options, message] of cases) {
    await t.throwsAsync(train({ ...base, ...options } as Parameters<typeof train>[0]), { instanceOf: ColtrastError, message }, JSON.stringify(options));
  }
});

test("similarity() and similarityPairwise() score queries' token vectors against documents' by MaxSim (meanmaxsim: per query token), as float64 brute force does", async (t) => {
  /** Σ over the query's tokens of the best inner product with a document token, in float64; divided by the count for meanmaxsim. */
  const maxsimOf = (q: Matrix, d: Matrix, mean: boolean) => {
    let sum = 0;
    for (let i = 0; i < q.dims[0]; i++) {
      let best = -Infinity;
      for (let j = 0; j < d.dims[0]; j++) {
        let dot = 0;
        for (let k = 0; k < WIDTH; k++) dot += q.data[i * WIDTH + k] * d.data[j * WIDTH + k];
        best = Math.max(best, dot);
      }
      sum += best;
    }
    return mean ? sum / q.dims[0] : sum;
  };
  const mean = await Encoder.load(multiVectorCopy({ similarity: 'meanmaxsim' }), { device: 'cpu' });
  try {
    for (const [model, isMean] of [[multi, false], [mean, true]] as const) {
      const queries = await model.embed(TEXTS.slice(0, 3), { output: 'tokens', task: 'query' });
      const docs = await model.embed(TEXTS, { output: 'tokens', task: 'document' });
      const s = await model.similarity(queries, docs);
      t.deepEqual(s.dims, [3, TEXTS.length]);
      queries.forEach((q, i) => docs.forEach((d, j) => t.true(Math.abs(s.data[i * TEXTS.length + j] - maxsimOf(q, d, isMean)) < 1e-4, `${isMean ? 'meanmaxsim' : 'maxsim'} (${i}, ${j})`)));
      const p = await model.similarityPairwise(queries, docs.slice(0, 3));
      t.deepEqual(Array.from(p), [0, 1, 2].map((i) => s.data[i * TEXTS.length + i]));
    }
    await t.throwsAsync(multi.similarity({ dims: [1, WIDTH], data: new Float32Array(WIDTH) } as any, [] as Matrix[]), { message: /^a must be a multi-vector model's token vectors: an array of/ });
    await t.throwsAsync(multi.similarityPairwise([], await multi.embed(['x'], { output: 'tokens' })), { message: /as many documents in b as queries in a: a has 0, b 1/ });
  } finally {
    mean.dispose();
  }
});
