// coltrast against the reference implementation itself: Hugging Face transformers and sentence-transformers
// in Python, from build/pyenv (scripts/setup.sh makes it from the wheels this machine image keeps on disk;
// COLTRAST_ST_PYTHON names another Python that has them). Both directions of the model format:
//   - the recorded outputs of the tiny BERT fixture are what transformers and sentence-transformers compute;
//   - sentence-transformers loads what coltrast saves (the shipped default model, a trained model with a
//     projection head, a trained decoder-LLM embedding model) and embeds the same texts the same;
//   - coltrast loads what sentence-transformers saves (its own module types and configs, every pooling mode
//     coltrast runs, a Dense head) and embeds the same;
//   - named prompts: embed({ task }) equals encode_query / encode_document / encode, include_prompt false too, and
//     what coltrast saves keeps the prompts for sentence-transformers;
//   - multi-vector models (sentence-transformers' MultiVectorEncoder saves and PyLate's ColBERT folders): coltrast's
//     token vectors equal encode_query / encode_document / encode, its training loss on a batch equals
//     MultiVectorMultipleNegativesRankingLoss's, and sentence-transformers loads what coltrast saves and trains;
//   - the fused MaxSim op scores as sentence-transformers' own late-interaction scoring (maxsim, maxsim_pairwise);
//   - the distillation losses equal sentence-transformers' MarginMSELoss and DistillKLDivLoss on a batch, the
//     guided contrastive loss its GISTEmbedLoss, and Contrastive Tension's loss (a trained model and its trained
//     twin) its ContrastiveTensionLossInBatchNegatives, and the labeled-pair losses CoSENTLoss, AnglELoss,
//     CosineSimilarityLoss, ContrastiveLoss and OnlineContrastiveLoss, TripletLoss with each distance, and MSELoss
//     (embedding distillation);
//   - communityDetection and paraphraseMining give util.community_detection's and paraphrase_mining_embeddings' results;
//   - ContextFlow's joint retriever/generator loss and its gradient's norm equal what sentence-transformers and
//     transformers compute for the same batch (scripts/fixtures/rag_loss.py);
//   - hard-negative mining gives mine_hard_negatives' rows (scripts/fixtures/st_mine.py);
//   - the IR metrics agree with sentence-transformers' InformationRetrievalEvaluator;
//   - the encoder families beside BERT (scripts/fixtures/tiny_encoders.py): the recorded outputs are reproduced, and
//     sentence-transformers loads what coltrast trains from each (and an XLM-RoBERTa reranker) with equal outputs;
//   - sparse encoders (scripts/fixtures/tiny_sparse.py): the recorded SparseEncoder vectors are reproduced,
//     sentence-transformers loads what coltrast saves and trains with equal vectors, and the training loss on a batch
//     equals SpladeLoss's around SparseMultipleNegativesRankingLoss, and SparseMarginMSELoss's.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { CrossEncoder, Encoder, Generator, Index, SparseEncoder, communityDetection, evaluateSimilarity, evaluateTriplets, mineHardNegatives, ops, paraphraseMining, poolTokens, quantizeEmbeddings, train, truncateLayers, type SparseVector } from '../lib';
import { ragPrompt, DEFAULT_TEMPLATE } from '../lib/rag';
import { padBatch } from '../lib/tokenizer';
import { embedWithGuide, guideMasks } from '../lib/guide';
import { makeBatches } from '../lib/train-data';
import { adaptiveLayersStep, embedWithTeacher, sparseRegularizersAt } from '../lib/train';
import { binaryClassification } from '../lib/pair-metrics';
import { normalizeRow } from '../lib/encoder';
import type { PairLossKind } from '../lib/native';
import { maskTokens, maskingTokens } from '../lib/masked-lm';
import { FIXTURE, dropoutOff, editJson, fixtureCopy, folderCopy, maxAbsDiff, tempDir, wordDataset } from './helpers/fixture';
import { seededRandom } from '../lib/random';
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');

const ROOT = path.resolve(__dirname, '..');
const PYTHON = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const TEXTS = path.join(ROOT, 'examples', 'sentences.txt');
const script = (name: string) => path.join(ROOT, 'scripts', 'fixtures', name);

const probe = fs.existsSync(PYTHON)
  ? spawnSync(PYTHON, ['-c', 'import sentence_transformers, transformers; print(sentence_transformers.__version__, transformers.__version__)'], {
      encoding: 'utf8',
    })
  : null;
const skip = !probe
  ? `no Python at ${PYTHON}: scripts/setup.sh makes build/pyenv from this machine's wheels (or set COLTRAST_ST_PYTHON)`
  : probe.status !== 0
    ? `${PYTHON} cannot import sentence_transformers and transformers: ${probe.stderr.trim().split('\n').pop()}`
    : '';
const check = skip ? test.skip : test;
const skipped = skip ? ` [skipped: ${skip}]` : '';
const [stVersion, hfVersion] = probe?.stdout.trim().split(' ') ?? [];

interface Reply {
  status: number | null;
  stdout: string;
  /** stdout and the last lines of stderr (Hugging Face's progress bars and load reports), for a failure message. */
  tail: string;
}

// The fixture scripts run one after another in one Python process (scripts/fixtures/run_scripts.py), which
// imports torch, transformers and sentence-transformers once for all of them; started by the first call.
let runner: { send: (script: string, args: string[]) => Promise<Reply>; close: () => void } | undefined;
function scriptRunner(): NonNullable<typeof runner> {
  if (runner) return runner;
  const child = spawn(PYTHON, [script('run_scripts.py')], { stdio: ['pipe', 'ignore', 'pipe', 'pipe'], env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  const waiting = new Map<number, (reply: Reply) => void>();
  let stderr = '';
  let next = 0;
  child.stderr!.on('data', (chunk) => (stderr = (stderr + chunk).slice(-20_000)));
  const tail = (out: string, err: string) => `${out}\n${err.split('\n').slice(-15).join('\n')}`;
  readline.createInterface({ input: child.stdio[3] as Readable }).on('line', (line) => {
    const r = JSON.parse(line) as { id: number; status: number; stdout: string; stderr: string };
    waiting.get(r.id)?.({ status: r.status, stdout: r.stdout, tail: tail(r.stdout, r.stderr) });
    waiting.delete(r.id);
  });
  child.on('exit', (code, signal) => {
    for (const done of waiting.values()) done({ status: code ?? 1, stdout: '', tail: tail(`the script runner exited (${signal ?? code})`, stderr) });
    waiting.clear();
  });
  runner = {
    send: (file, args) =>
      new Promise((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        child.stdin!.write(`${JSON.stringify({ id, script: file, args })}\n`);
      }),
    close: () => child.stdin!.end(),
  };
  return runner;
}
test.after.always(() => runner?.close());

/** Runs a fixture script (its path, then its arguments) as `python <script> <args>` would. */
function python([file, ...args]: string[]): Promise<Reply> {
  return scriptRunner().send(file, args);
}

function readJsonl(file: string): number[][] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line).embedding);
}

async function embedToJsonl(modelDir: string, file: string): Promise<void> {
  const texts = fs.readFileSync(TEXTS, 'utf8').split('\n').filter((l) => l.trim());
  const encoder = await Encoder.load(modelDir, { device: 'cpu' });
  try {
    const { dims, data } = await encoder.embed(texts);
    const lines = texts.map((_, i) => JSON.stringify({ index: i, embedding: Array.from(data.subarray(i * dims[1], (i + 1) * dims[1])) }));
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
  } finally {
    encoder.dispose();
  }
}

check(`transformers and sentence-transformers compute the tiny BERT's recorded outputs (1e-6)${skipped}`, async (t) => {
  const r = await python([script('check_reference_hf.py')]);
  t.is(r.status, 0, r.tail);
  t.regex(r.stdout, /transformers \+ sentence-transformers vs recorded reference: token states [\d.e-]+, pooled [\d.e-]+/);
  t.log(`sentence-transformers ${stVersion}, transformers ${hfVersion}: ${r.stdout.trim()}`);
});

check(`sentence-transformers loads the shipped default model and embeds as coltrast does (1e-4)${skipped}`, async (t) => {
  const ours = path.join(tempDir(), 'default.jsonl');
  await embedToJsonl('default', ours);
  const r = await python([script('check_python_load.py'), path.join(ROOT, 'default-model'), TEXTS, ours]);
  t.is(r.status, 0, r.tail);
  t.log(r.stdout.trim());
});

for (const name of ['qwen3', 'gemma3', 'phi3']) {
  check(`sentence-transformers loads a decoder (${name}) embedding model coltrast trained, and embeds as coltrast does${skipped}`, async (t) => {
    const dir = tempDir();
    const model = path.join(dir, 'model');
    await train({ model: path.join(ROOT, 'test', 'fixtures', 'tiny-decoders', name), data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 5 });
    const ours = path.join(dir, 'ours.jsonl');
    await embedToJsonl(model, ours);
    const r = await python([script('check_python_load.py'), model, TEXTS, ours]);
    t.is(r.status, 0, r.tail);
    t.log(r.stdout.trim());
  });
}

check(`sentence-transformers loads a model coltrast trained and saved with a projection head, CLS pooling${skipped}`, async (t) => {
  const dir = tempDir();
  const model = path.join(dir, 'model');
  // The fixture with CLS pooling, so the saved Pooling config is not the default one.
  const base = path.join(dir, 'base');
  fs.cpSync(FIXTURE, base, { recursive: true });
  const pooling = path.join(base, '1_Pooling', 'config.json');
  const config = JSON.parse(fs.readFileSync(pooling, 'utf8'));
  for (const key of Object.keys(config)) if (key.startsWith('pooling_mode_')) config[key] = key === 'pooling_mode_cls_token';
  fs.writeFileSync(pooling, JSON.stringify(config));
  await train({ model: base, data: wordDataset(16), output: model, epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 5, projection: { dimension: 12, activation: 'tanh' } });
  t.true(fs.existsSync(path.join(model, '2_Dense', 'model.safetensors')));
  const ours = path.join(dir, 'ours.jsonl');
  await embedToJsonl(model, ours);
  t.is(readJsonl(ours)[0].length, 12);
  const r = await python([script('check_python_load.py'), model, TEXTS, ours]);
  t.is(r.status, 0, r.tail);
  t.log(r.stdout.trim());
});

for (const [pooling, dense, normalize] of [
  ['mean', 0, true],
  ['cls', 12, true],
  ['max', 0, false],
  ['mean_sqrt_len_tokens', 7, false],
  ['lasttoken', 0, true],
] as const) {
  const what = `${pooling} pooling${dense ? `, Dense ${dense} (tanh)` : ''}${normalize ? ', Normalize' : ''}`;
  check(`coltrast loads what sentence-transformers saves and embeds the same: ${what}${skipped}`, async (t) => {
    const dir = tempDir();
    const saved = path.join(dir, 'st-model');
    const theirs = path.join(dir, 'theirs.jsonl');
    const args = [script('st_save.py'), FIXTURE, saved, TEXTS, theirs, '--pooling', pooling, '--seed', '11'];
    if (dense) args.push('--dense', String(dense));
    if (!normalize) args.push('--no-normalize');
    const r = await python(args);
    t.is(r.status, 0, r.tail);
    const ours = path.join(dir, 'ours.jsonl');
    await embedToJsonl(saved, ours);
    const a = readJsonl(ours);
    const b = readJsonl(theirs);
    t.deepEqual([a.length, a[0].length], [b.length, b[0].length]);
    const worst = maxAbsDiff(a.flat(), b.flat());
    t.true(worst <= 1e-5, `max abs difference ${worst}`);
    t.log(`${r.stdout.trim()}; max abs difference ${worst.toExponential(2)}`);
  });
}

// Short and long texts: short queries get expansion tokens, long ones are cut; punctuation meets the skiplist.
const SHORT_AND_LONG = ['a', 'bot', 'what is it?', 'an agent, a bot.', 'The agent observes order-book features.', 'A chatbot for customer support answers questions about orders, refunds and delivery times.'];

type Pooled = { plain: number[][]; query: number[][]; document: number[][] };
const worstOf = (a: number[][], b: Float32Array) => maxAbsDiff(a.flat(), b);

async function promptedEmbeddings(dir: string, texts: string[]): Promise<Record<keyof Pooled, Float32Array>> {
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  try {
    return {
      plain: (await encoder.embed(texts)).data,
      query: (await encoder.embed(texts, { task: 'query' })).data,
      document: (await encoder.embed(texts, { task: 'document' })).data,
    };
  } finally {
    encoder.dispose();
  }
}

for (const exclude of [false, true]) {
  check(`prompts: embed({ task }) equals encode / encode_query / encode_document${exclude ? ', include_prompt false' : ''}; saved prompts load in Python${skipped}`, async (t) => {
    const dir = tempDir();
    const model = path.join(dir, 'model');
    const theirs = path.join(dir, 'theirs.json');
    const r = await python([script('st_prompts.py'), 'build', FIXTURE, model, TEXTS, theirs, ...(exclude ? ['--exclude-prompt'] : [])]);
    t.is(r.status, 0, r.tail);
    const ref: Pooled & { prompts: Record<string, string> } = JSON.parse(fs.readFileSync(theirs, 'utf8'));
    const texts = fs.readFileSync(TEXTS, 'utf8').split('\n').filter((l) => l.trim());
    const ours = await promptedEmbeddings(model, texts);
    for (const key of ['plain', 'query', 'document'] as const) {
      const worst = worstOf(ref[key], ours[key]);
      t.true(worst <= 1e-5, `${key}: max abs difference ${worst}`);
    }
    // The prompts matter: a query (default prompt "query: ") is not its document ("document": "").
    t.true(maxAbsDiff(ours.query, ours.document) > 1e-3);
    // And sentence-transformers reads the prompts and pooling back from what coltrast saves.
    const encoder = await Encoder.load(model, { device: 'cpu' });
    const saved = path.join(dir, 'saved');
    await encoder.save(saved);
    encoder.dispose();
    const back = path.join(dir, 'back.json');
    const again = await python([script('st_prompts.py'), 'load', saved, TEXTS, back]);
    t.is(again.status, 0, again.tail);
    const reloaded: Pooled & { prompts: Record<string, string> } = JSON.parse(fs.readFileSync(back, 'utf8'));
    t.deepEqual(reloaded.prompts, ref.prompts);
    for (const key of ['plain', 'query', 'document'] as const) t.true(worstOf(reloaded[key], ours[key]) <= 1e-5, `${key} after coltrast's save`);
    t.log(`${r.stdout.trim()}; prompts ${JSON.stringify(ref.prompts)}`);
  });
}

type TokenRows = Record<'plain' | 'query' | 'document', number[][][]>;

// One training batch: each query's positive, then one negative per query (sentence-transformers' column order).
const LOSS_BATCH = {
  queries: ['a cat', 'river bank?', 'what is a token', 'fast search'],
  positives: ['the cat sat', 'money in the river bank', 'a token is a piece of text', 'search that is fast, small'],
  negatives: ['a dog ran', 'water paper', 'model loss', 'slow large batch'],
};

async function compareTokens(t: import('ava').ExecutionContext, dir: string, ref: TokenRows, texts: string[]): Promise<number> {
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  let worst = 0;
  try {
    for (const [key, task] of [['plain', undefined], ['query', 'query'], ['document', 'document']] as const) {
      const ours = await encoder.embed(texts, { output: 'tokens', task });
      t.deepEqual(ours.map((m) => m.dims[0]), ref[key].map((rows) => rows.length), `${key}: token counts`);
      ref[key].forEach((rows, i) => {
        if (rows.length === ours[i].dims[0]) worst = Math.max(worst, worstOf(rows, ours[i].data));
      });
    }
  } finally {
    encoder.dispose();
  }
  return worst;
}

const MODERNBERT = path.join(ROOT, 'test', 'fixtures', 'tiny-encoders', 'modernbert');
for (const [format, expansion, attend, base] of [
  ['mve', 'fixed', false, FIXTURE],
  ['mve', 'min', true, FIXTURE],
  ['mve', 'none', false, FIXTURE],
  ['pylate', 'fixed', false, FIXTURE],
  ['pylate', 'fixed', true, FIXTURE],
  ['pylate', 'none', false, FIXTURE],
  // On a ModernBERT backbone, as GTE-ModernColBERT is.
  ['mve', 'fixed', false, MODERNBERT],
] as const) {
  const what = `${format === 'mve' ? "sentence-transformers' MultiVectorEncoder" : "PyLate's ColBERT"} folder, expansion ${expansion}${attend ? ' (attended)' : ''}${base === MODERNBERT ? ', ModernBERT' : ''}`;
  check(`multi-vector: coltrast's token vectors equal encode_query / encode_document / encode (1e-5)${expansion === 'fixed' ? ', and its training loss MultiVectorMultipleNegativesRankingLoss' : ''}: ${what}${skipped}`, async (t) => {
    const dir = tempDir();
    const texts = path.join(dir, 'texts.txt');
    fs.writeFileSync(texts, SHORT_AND_LONG.join('\n') + '\n');
    const model = path.join(dir, 'model');
    const theirs = path.join(dir, 'theirs.json');
    // With fixed expansion every query has 12 scored tokens, so sentence-transformers' training loss with scale 1
    // (raw MaxSim sums) is coltrast's late-interaction loss, which divides by the query's tokens, at temperature 1/12.
    const batchFile = path.join(dir, 'batch.json');
    fs.writeFileSync(batchFile, JSON.stringify({ ...LOSS_BATCH, scale: 1 }));
    const lossArgs = expansion === 'fixed' ? ['--loss-batch', batchFile] : [];
    const r = await python([script('st_multi_vector.py'), base, model, texts, theirs, '--format', format, '--expansion', expansion, ...(attend ? ['--attend'] : []), ...lossArgs]);
    t.is(r.status, 0, r.tail);
    const ref: TokenRows & { loss?: number } = JSON.parse(fs.readFileSync(theirs, 'utf8'));
    if (expansion === 'fixed') {
      const encoder = await Encoder.load(model, { device: 'cpu' });
      const trainer = await encoder.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 1, precision: 'float32' });
      const ours = await trainer.evaluate(LOSS_BATCH.queries, [...LOSS_BATCH.positives, ...LOSS_BATCH.negatives], {
        contrastiveWeight: 0, lateInteractionWeight: 1, temperature: 1 / 12, symmetric: false, lateInteractionKind: 'cross_entropy',
        learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false,
      });
      trainer.dispose();
      encoder.dispose();
      t.true(Math.abs(ours.loss - ref.loss!) <= 1e-5 * ref.loss!, `training loss: coltrast ${ours.loss}, sentence-transformers ${ref.loss}`);
    }
    const lengths = ref.query.map((rows) => rows.length);
    if (expansion === 'fixed') t.true(lengths.every((n) => n === 12), `every query is expanded or cut to 12 tokens: ${lengths}`);
    if (expansion === 'min') t.true(lengths.every((n) => n >= 8 && n <= 12) && lengths.some((n) => n > 8) && lengths.some((n) => n === 8), `queries of 8 tokens or more, up to 12: ${lengths}`);
    t.true(ref.document.some((rows, i) => rows.length < ref.plain[i].length || rows.length !== ref.query[i].length), 'documents differ from queries');
    const worst = await compareTokens(t, model, ref, SHORT_AND_LONG);
    t.true(worst <= 1e-5, `max abs difference ${worst}`);
    if (format === 'pylate' || expansion === 'min') {
      // What coltrast saves (here, or after training it), sentence-transformers loads and embeds the same.
      const saved = path.join(dir, 'saved');
      if (format === 'pylate' && expansion === 'fixed' && !attend) {
        await train({ model, data: wordDataset(16), output: saved, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 1 });
        t.false(fs.readFileSync(path.join(saved, '1_Dense', 'model.safetensors')).equals(fs.readFileSync(path.join(model, '1_Dense', 'model.safetensors'))));
      } else {
        const encoder = await Encoder.load(model, { device: 'cpu' });
        await encoder.save(saved);
        encoder.dispose();
      }
      const back = path.join(dir, 'back.json');
      const again = await python([script('st_multi_vector.py'), FIXTURE, saved, texts, back, '--format', 'load']);
      t.is(again.status, 0, again.tail);
      const afterSave = await compareTokens(t, saved, JSON.parse(fs.readFileSync(back, 'utf8')), SHORT_AND_LONG);
      t.true(afterSave <= 1e-5, `after coltrast's save: ${afterSave}`);
    }
    t.log(`${r.stdout.trim()}; max abs difference ${worst.toExponential(2)}`);
  });
}

check(`multi-vector with a HierarchicalTokenPooling module: coltrast pools documents as sentence-transformers does, not queries; saves the module back; refuses to pool or train twice${skipped}`, async (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.txt');
  fs.writeFileSync(texts, SHORT_AND_LONG.join('\n') + '\n');
  const model = path.join(dir, 'model');
  const theirs = path.join(dir, 'theirs.json');
  const r = await python([script('st_multi_vector.py'), FIXTURE, model, texts, theirs, '--format', 'mve', '--expansion', 'fixed', '--pool-factor', '2']);
  t.is(r.status, 0, r.tail);
  const ref: TokenRows = JSON.parse(fs.readFileSync(theirs, 'utf8'));
  // Long documents pooled to about half (plus the protected first vector); queries kept at 12.
  t.true(ref.query.every((rows) => rows.length === 12));
  t.true(ref.document.some((rows) => rows.length > 3 && rows.length <= Math.floor(30 / 2) + 1), `document lengths ${ref.document.map((d) => d.length)}`);
  const worst = await compareTokens(t, model, ref, SHORT_AND_LONG);
  t.true(worst <= 1e-5, `max abs difference ${worst}`);
  const encoder = await Encoder.load(model, { device: 'cpu' });
  try {
    t.deepEqual(encoder.multiVector?.tokenPooling, { poolFactor: 2, protectedTokens: 1, tasks: ['document'] });
    const saved = path.join(dir, 'saved');
    await encoder.save(saved);
    const back = path.join(dir, 'back.json');
    const again = await python([script('st_multi_vector.py'), FIXTURE, saved, texts, back, '--format', 'load']);
    t.is(again.status, 0, again.tail);
    t.true((await compareTokens(t, saved, JSON.parse(fs.readFileSync(back, 'utf8')), SHORT_AND_LONG)) <= 1e-5, 'after coltrast saved it');
    await t.throwsAsync(Index.build(encoder, [{ id: 'a', text: SHORT_AND_LONG[0] }], { poolFactor: 2 }), { message: /options\.poolFactor must be absent: the model pools its documents' token vectors already/ });
    await t.throwsAsync(train({ model, data: wordDataset(8), output: path.join(dir, 'trained'), epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu' }), { message: /HierarchicalTokenPooling module\), which coltrast's training does not do/ });
  } finally {
    encoder.dispose();
  }
  t.log(r.stdout.trim());
});

check(`sentence-transformers' MultiVectorEncoder loads a model coltrast made multi-vector and trained, and embeds as coltrast does (1e-5)${skipped}`, async (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.txt');
  fs.writeFileSync(texts, SHORT_AND_LONG.join('\n') + '\n');
  const model = path.join(dir, 'made');
  await train({
    model: FIXTURE, data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 2,
    multiVector: { dimension: 16, queryLength: 12, documentLength: 30, queryPrompt: 'query: ', documentPrompt: 'passage: ' },
  });
  const theirs = path.join(dir, 'theirs.json');
  const r = await python([script('st_multi_vector.py'), FIXTURE, model, texts, theirs, '--format', 'load']);
  t.is(r.status, 0, r.tail);
  const ref: TokenRows = JSON.parse(fs.readFileSync(theirs, 'utf8'));
  t.true(ref.query.every((rows) => rows.length === 12), 'queries expanded to 12 tokens by sentence-transformers too');
  const worst = await compareTokens(t, model, ref, SHORT_AND_LONG);
  t.true(worst <= 1e-5, `max abs difference ${worst}`);
  t.log(`${r.stdout.trim()}; max abs difference ${worst.toExponential(2)}`);
});

const CROSS = path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder');
const CROSS_REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder.reference.json'), 'utf8'));

const CAUSAL_RERANKERS = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-rerankers');
const CAUSAL_REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'tiny-causal-rerankers.reference.json'), 'utf8'));

// The BERT cross-encoders (st_cross_encoder.py) and the decoder rerankers (st_causal_reranker.py): each fixture as
// recorded, and what coltrast saves of it, scored by sentence-transformers.
const RERANKER_FIXTURES = [
  ...['st', 'hf'].map((which) => ({ what: 'cross-encoder', which, dir: path.join(CROSS, which), script: 'st_cross_encoder.py', pairs: CROSS_REFERENCE.pairs, logits: CROSS_REFERENCE[which].logits })),
  ...['logit-score', 'seq-cls'].map((which) => ({
    what: 'decoder reranker', which, dir: path.join(CAUSAL_RERANKERS, which), script: 'st_causal_reranker.py', pairs: CAUSAL_REFERENCE.pairs, logits: CAUSAL_REFERENCE.models[which].logits,
  })),
];
for (const f of RERANKER_FIXTURES) {
  check(`${f.what}: sentence-transformers still computes the recorded scores, and loads what coltrast saves with the same scores (1e-5): ${f.which}${skipped}`, async (t) => {
    const dir = tempDir();
    const pairs = path.join(dir, 'pairs.json');
    fs.writeFileSync(pairs, JSON.stringify(f.pairs));
    const recorded = path.join(dir, 'recorded.json');
    let r = await python([script(f.script), 'load', f.dir, pairs, recorded]);
    t.is(r.status, 0, r.tail);
    const now = JSON.parse(fs.readFileSync(recorded, 'utf8'));
    // 1e-5, not less: float32 sums in another order with another thread count (2e-6 seen with one thread
    // against a recording made with two).
    const drift = maxAbsDiff(now.logits.flat(), f.logits.flat());
    t.true(drift < 1e-5, `the recorded reference is what sentence-transformers computes (max abs difference ${drift})`);
    const ce = await CrossEncoder.load(f.dir, { device: 'cpu' });
    const saved = path.join(dir, 'saved');
    await ce.save(saved);
    const ours = await ce.predict(f.pairs, { activation: 'identity' });
    const ourScores = await ce.predict(f.pairs);
    ce.dispose();
    const back = path.join(dir, 'back.json');
    r = await python([script(f.script), 'load', saved, pairs, back]);
    t.is(r.status, 0, r.tail);
    const theirs = JSON.parse(fs.readFileSync(back, 'utf8'));
    const worst = Math.max(maxAbsDiff(ours.data, theirs.logits.flat()), maxAbsDiff(ourScores.data, theirs.scores.flat()));
    t.true(worst < 1e-5, `max abs difference ${worst}`);
    t.log(`sentence-transformers ${stVersion}, transformers ${hfVersion}; max abs difference ${worst.toExponential(2)}`);
  });
}

check(`decoder rerankers: sentence-transformers loads the ones coltrast trained (LogitScore on a tied causal LM, a sequence-classification head, and ones started from the Qwen3 and Phi-3 causal LMs with a template) and scores as coltrast does (1e-5)${skipped}`, async (t) => {
  const dir = tempDir();
  const pairs = path.join(dir, 'pairs.json');
  fs.writeFileSync(pairs, JSON.stringify(CAUSAL_REFERENCE.pairs));
  // The third: a reranker started from the causal LM, with the fixture's template and tokens.
  const chatTemplate = fs.readFileSync(path.join(CAUSAL_RERANKERS, 'logit-score', 'chat_template.jinja'), 'utf8');
  const start = { chatTemplate, tokens: ['good', 'bad'] as [string, string] };
  for (const which of ['logit-score', 'seq-cls', 'from-causal-lm', 'phi3-from-causal-lm']) {
    const model = path.join(dir, which);
    const started = which.endsWith('from-causal-lm');
    const from = started ? path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', which === 'from-causal-lm' ? 'qwen3' : 'phi3') : path.join(CAUSAL_RERANKERS, which);
    await train({ model: from, data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: started ? start : true });
    const ce = await CrossEncoder.load(model, { device: 'cpu' });
    const ours = await ce.predict(CAUSAL_REFERENCE.pairs, { activation: 'identity' });
    ce.dispose();
    if (!started) t.true(maxAbsDiff(ours.data, CAUSAL_REFERENCE.models[which].logits.flat()) > 1e-3, `${which}: training changed the scores`);
    const back = path.join(dir, `${which}.json`);
    const r = await python([script('st_causal_reranker.py'), 'load', model, pairs, back]);
    t.is(r.status, 0, r.tail);
    const worst = maxAbsDiff(ours.data, JSON.parse(fs.readFileSync(back, 'utf8')).logits.flat());
    t.true(worst < 1e-5, `${which}: max abs difference ${worst}`);
  }
});

const ENCODERS = path.join(ROOT, 'test', 'fixtures', 'tiny-encoders');

check(`encoder families (RoBERTa, XLM-RoBERTa, MPNet, DistilBERT, ELECTRA, DeBERTa-v2/v3, ModernBERT, T5): the recorded outputs are what transformers computes now, and sentence-transformers loads what coltrast trained and embeds as coltrast does${skipped}`, async (t) => {
  const dir = tempDir();
  // The committed models run by transformers and sentence-transformers now: the reference in the repository.
  const fresh = path.join(dir, 'reference.json');
  let r = await python([script('tiny_encoders.py'), 'record', ENCODERS, fresh]);
  t.is(r.status, 0, r.tail);
  const recorded = JSON.parse(fs.readFileSync(path.join(ENCODERS, '..', 'tiny-encoders.reference.json'), 'utf8'));
  const now = JSON.parse(fs.readFileSync(fresh, 'utf8'));
  for (const name of Object.keys(recorded.models)) {
    t.deepEqual(now.models[name].inputIds, recorded.models[name].inputIds, name);
    const drift = [
      maxAbsDiff(now.models[name].tokenStates.flat(2), recorded.models[name].tokenStates.flat(2)),
      maxAbsDiff(now.models[name].embeddings.flat(), recorded.models[name].embeddings.flat()),
    ];
    // 1e-5, as for the cross-encoders above: one thread against a recording made with two differs by 1.3e-6 (DeBERTa-v2).
    t.true(Math.max(...drift) < 1e-5, `${name}: max abs difference ${drift.join(' (token states), ')} (embeddings)`);
  }
  for (const name of ['xlm-roberta', 'mpnet', 'distilbert', 'electra', 'deberta-v3', 'modernbert']) {
    const drift = maxAbsDiff(now.crossEncoders[name].logits, recorded.crossEncoders[name].logits);
    t.true(drift < 1e-5, `${name} cross-encoder: max abs difference ${drift}`);
  }
  for (const name of ['roberta', 'xlm-roberta', 'mpnet', 'distilbert', 'electra', 'deberta-v3', 'deberta-v2', 'modernbert', 't5', 't5-gated']) {
    const model = path.join(dir, `${name}-trained`);
    await train({ model: path.join(ENCODERS, name), data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 5 });
    const ours = path.join(dir, `${name}.jsonl`);
    await embedToJsonl(model, ours);
    r = await python([script('check_python_load.py'), model, TEXTS, ours]);
    t.is(r.status, 0, `${name}: ${r.tail}`);
    t.log(`${name}: ${r.stdout.trim()}`);
  }
});

for (const name of ['bert', 'xlm-roberta', 'distilbert', 'electra', 'deberta-v3', 'modernbert']) {
  check(`cross-encoder: sentence-transformers loads a ${name} reranker coltrast trained from an embedding model (a new head of the family's kind) and scores as coltrast does (1e-5)${skipped}`, async (t) => {
    const dir = tempDir();
    const model = path.join(dir, 'reranker');
    const base = name === 'bert' ? FIXTURE : path.join(ENCODERS, name);
    await train({ model: base, data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: true });
    const pairs = path.join(dir, 'pairs.json');
    fs.writeFileSync(pairs, JSON.stringify(CROSS_REFERENCE.pairs));
    const ce = await CrossEncoder.load(model, { device: 'cpu' });
    const ours = await ce.predict(CROSS_REFERENCE.pairs, { activation: 'identity' });
    ce.dispose();
    const back = path.join(dir, 'back.json');
    const r = await python([script('st_cross_encoder.py'), 'load', model, pairs, back]);
    t.is(r.status, 0, r.tail);
    const worst = maxAbsDiff(ours.data, JSON.parse(fs.readFileSync(back, 'utf8')).logits.flat());
    t.true(worst < 1e-5, `max abs difference ${worst}`);
  });
}

check(`training losses: distillation equals sentence-transformers' MarginMSELoss and DistillKLDivLoss, guided negatives its GISTEmbedLoss, Contrastive Tension its ContrastiveTensionLossInBatchNegatives, Matryoshka widths its MatryoshkaLoss, labeled pairs its CoSENT, AnglE, CosineSimilarity, Contrastive and OnlineContrastive losses, triplets its TripletLoss, embedding distillation its MSELoss, texts of classes its batch triplet losses, global orthogonal regularization its GlobalOrthogonalRegularizationLoss, MegaBatchMarginLoss its own (1e-5)${skipped}`, async (t) => {
  const dir = tempDir();
  // Contrastive Tension: a model and its twin, trained apart for a few steps (dropout draws differ), then saved.
  const sentences = wordDataset(24, 41).map((p) => p.positive);
  const tension = { model: path.join(dir, 'ct-model'), twin: path.join(dir, 'ct-twin'), sentences: sentences.slice(0, 6), scale: 20 };
  const ctStep = {
    contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 1 / tension.scale, symmetric: true, lateInteractionKind: 'cross_entropy' as const,
    learningRate: 3e-3, maxGradNorm: 1, lossScale: 1, apply: true,
  };
  let ourTension: number;
  {
    const model = await Encoder.load(FIXTURE, { device: 'cpu' });
    const twin = await Encoder.load(FIXTURE, { device: 'cpu' });
    try {
      const ct = await model.createTrainer({ seed: 4 }, false, twin);
      for (let i = 0; i < 3; i++) await ct.step(sentences.slice(8 * i, 8 * i + 8), sentences.slice(8 * i, 8 * i + 8), ctStep);
      ourTension = (await ct.evaluate(tension.sentences, tension.sentences, { ...ctStep, learningRate: 0, apply: false })).loss;
      ct.dispose();
      await model.save(tension.model);
      await twin.save(tension.twin);
    } finally {
      twin.dispose();
      model.dispose();
    }
  }
  // The guide: the fixture with CLS pooling (the same tokenizer, so sentence-transformers does not re-tokenize).
  const guideDir = path.join(dir, 'guide');
  fs.cpSync(FIXTURE, guideDir, { recursive: true });
  const pooling = path.join(guideDir, '1_Pooling', 'config.json');
  fs.writeFileSync(pooling, JSON.stringify({ ...JSON.parse(fs.readFileSync(pooling, 'utf8')), pooling_mode_cls_token: true, pooling_mode_mean_tokens: false }));
  // The fixture without its Normalize module: TripletLoss then measures the vectors as they come.
  const rawDir = path.join(dir, 'raw');
  fs.cpSync(FIXTURE, rawDir, { recursive: true });
  const modules = path.join(rawDir, 'modules.json');
  fs.writeFileSync(modules, JSON.stringify(JSON.parse(fs.readFileSync(modules, 'utf8')).filter((m: { type: string }) => !m.type.endsWith('Normalize'))));
  const gist = [
    { temperature: 0.05, margin_strategy: 'absolute' as const, margin: 0, contrast: true },
    { temperature: 0.05, margin_strategy: 'relative' as const, margin: 0.1, contrast: false },
  ];
  const spec = {
    queries: ['a cat', 'river bank?', 'what is a token', 'fast search', 'the dog'],
    positives: ['the cat sat', 'money in the river bank', 'a token is a piece of text', 'search that is fast, small', 'a dog ran'],
    negatives: [['a cat ran', 'model loss'], ['water paper', 'good old world'], ['slow large batch', 'hello node'], ['the lazy fox', 'random bert'], ['a big dog', 'new data']],
    scores: [[3, 1, -2], [2, 4, 0], [5, -1, 1.5], [0.5, 0.25, 3], [1, 1.5, -1]],
    student_temperature: 0.05,
    teacher_temperature: 2,
    gist,
    tension,
    matryoshka: { dims: [32, 12, 5], weights: [1, 0.5, 2], scale: 20 },
    pairs: {
      first: ['a cat', 'river bank?', 'what is a token', 'fast search', 'the dog', 'hello node', 'a big dog'],
      second: ['the cat sat', 'money in the river bank', 'a token is a piece of text', 'slow large batch', 'a dog ran', 'good old world', 'a big dog'],
      scores: [0.9, 0.4, 0.75, 0.1, 0.9, 0.2, 1],
      binary: [1, 0, 1, 0, 1, 0, 1],
      scale: 20,
      margin: 0.5,
    },
    triplet: { raw_model: rawDir, margin: 0.7 },
    // Texts of 4 classes, unevenly many (a class of one text has no positive).
    batch_triplet: {
      texts: ['a cat', 'the cat sat', 'cats on a mat', 'a dog', 'the dog ran', 'fast search', 'search that is fast', 'a token', 'tokens of text', 'what is a token', 'hello node'],
      labels: [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4],
      margin: 0.3,
    },
    gor: { scale: 20 },
  };
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify(spec));
  const r = await python([script('st_losses.py'), FIXTURE, guideDir, path.join(dir, 'batch.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
  const close = (ours: number, theirs: number, what: string) => t.true(Math.abs(ours - theirs) <= 1e-5 * theirs, `${what}: coltrast ${ours}, sentence-transformers ${theirs}`);
  close(ourTension, ref.tension, 'Contrastive Tension (in-batch negatives)');

  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  const trainer = await encoder.createTrainer({ seed: 1 });
  const options = {
    contrastiveWeight: 0, lateInteractionWeight: 0, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const,
    learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false,
  };
  try {
    const scored = spec.queries.map((query, i) => ({ query, positive: spec.positives[i], negatives: spec.negatives[i], scores: spec.scores[i] }));
    const [batch] = makeBatches(scored, scored.length);
    const distill = { ...options, distillationWeight: 1, teacher: batch.teacher };
    // MarginMSELoss compares cosine margins with the teacher's: coltrast's at temperature 1.
    close((await trainer.evaluate(batch.queries, batch.documents, { ...distill, temperature: 1, distillation: 'margin_mse' })).loss, ref.margin_mse, 'MarginMSE');
    // DistillKLDivLoss multiplies its KL by the student temperature squared; coltrast's is the KL itself.
    const kl = (await trainer.evaluate(batch.queries, batch.documents, { ...distill, teacherTemperature: 2, distillation: 'kl' })).loss;
    close(kl * 0.05 ** 2, ref.kl, 'KL');
    const widths = { matryoshkaDimensions: spec.matryoshka.dims, matryoshkaWeights: spec.matryoshka.weights };
    const marginWidths = (await trainer.evaluate(batch.queries, batch.documents, { ...distill, temperature: 1, distillation: 'margin_mse', ...widths })).loss;
    close(marginWidths, ref.matryoshka_margin_mse, 'Matryoshka around MarginMSE');

    // GISTEmbed on the (query, positive, first negative) columns: sentence-transformers' blocks (anchor-positive,
    // anchor-anchor, positive-positive, anchor-negative) are coltrast's query-document, query-query and positive-positive.
    const triplets = spec.queries.map((query, i) => ({ query, positive: spec.positives[i], negatives: [spec.negatives[i][0]] }));
    const [guided] = makeBatches(triplets, triplets.length);
    const vectors = await embedWithGuide(guideDir, triplets, { device: 'cpu' });
    for (const [i, c] of gist.entries()) {
      const masks = guideMasks(guided, vectors, { marginStrategy: c.margin_strategy, margin: c.margin, contrastQueries: c.contrast, contrastPositives: c.contrast });
      t.true(masks.documents.some((x) => x), 'the guide leaves some negative out');
      const ours = await trainer.evaluate(guided.queries, guided.documents, { ...options, contrastiveWeight: 1, temperature: c.temperature, guide: masks });
      close(ours.loss, ref.gist[i], `GISTEmbed ${c.margin_strategy} margin ${c.margin}${c.contrast ? ' with query and positive blocks' : ''}`);
    }
    // MultipleNegativesRankingLoss (scale 20: temperature 0.05) over the positives and first negatives, at each width.
    const mnrl = await trainer.evaluate(guided.queries, guided.documents, { ...options, contrastiveWeight: 1, temperature: 1 / spec.matryoshka.scale, ...widths });
    close(mnrl.loss, ref.matryoshka_mnrl, 'Matryoshka around MultipleNegativesRankingLoss');
    // MultipleNegativesRankingLoss plus global orthogonal regularization of the queries and of the positives.
    for (const [key, gor] of [
      ['default', { gorMeanWeight: 1, gorSecondMomentWeight: 1, gorAggregation: 'mean' }],
      ['gemma', { gorMeanWeight: 0, gorSecondMomentWeight: 1, gorAggregation: 'sum' }],
      ['weighted', { gorMeanWeight: 2, gorSecondMomentWeight: 0.5, gorAggregation: 'mean' }],
    ] as const) {
      const ours = await trainer.evaluate(spec.queries, spec.positives, { ...options, contrastiveWeight: 1, temperature: 1 / spec.gor.scale, ...gor });
      close(ours.loss, ref.gor[key], `MultipleNegativesRankingLoss + GlobalOrthogonalRegularizationLoss (${key})`);
      t.true(ours.regularizer > 0, `${key}: the regularizer is reported`);
    }
    // MegaBatchMarginLoss on the (query, positive) pairs: its defaults, and margins that make both terms count.
    for (const [key, margins] of [['default', { positiveMargin: 0.8, negativeMargin: 0.3 }], ['margins', { positiveMargin: 0.95, negativeMargin: -0.2 }]] as const) {
      const ours = await trainer.evaluate(spec.queries, spec.positives, { ...options, megaBatchMargin: true, ...margins });
      close(ours.loss, ref.mega_batch_margin[key], `MegaBatchMarginLoss (${key})`);
    }

    // The labeled-pair losses, each on the same pairs (tied scores among them; one pair of equal texts), and CoSENT and
    // AnglE at each Matryoshka width (5: an odd width, which AnglE pads).
    const p = spec.pairs;
    const pairStep = (pairLoss: PairLossKind, labels: number[]) => ({ ...options, pairLoss, pairLabels: Float32Array.from(labels), pairScale: p.scale, pairMargin: p.margin });
    for (const kind of ['cosent', 'angle', 'cosine', 'contrastive', 'online_contrastive'] as const) {
      const labels = kind === 'contrastive' || kind === 'online_contrastive' ? p.binary : p.scores;
      close((await trainer.evaluate(p.first, p.second, pairStep(kind, labels))).loss, ref.pairs[kind], `pairs '${kind}'`);
    }
    for (const kind of ['cosent', 'angle'] as const) {
      close((await trainer.evaluate(p.first, p.second, { ...pairStep(kind, p.scores), ...widths })).loss, ref.pairs[`matryoshka_${kind}`], `Matryoshka around pairs '${kind}'`);
    }
    // TripletLoss: query i, positive i, and its first negative (guided's documents: the positives, then the negatives).
    const firstNegatives = Int32Array.from(spec.queries, (_, i) => guided.documents.indexOf(spec.negatives[i][0]));
    const raw = await Encoder.load(rawDir, { device: 'cpu' });
    const rawTrainer = await raw.createTrainer({ seed: 1 });
    try {
      for (const distance of ['euclidean', 'cosine', 'manhattan'] as const) {
        for (const [prefix, tr, normalized] of [['', trainer, true], ['raw_', rawTrainer, false]] as const) {
          const ours = await tr.evaluate(guided.queries, guided.documents, { ...options, tripletDistance: distance, tripletMargin: spec.triplet.margin, normalizedVectors: normalized, tripletNegatives: firstNegatives });
          close(ours.loss, ref.triplet[`${prefix}${distance}`], `TripletLoss ${distance}${normalized ? '' : ' (no Normalize module)'}`);
        }
      }
      // The batch triplet losses: the texts as the batch's queries, no documents, each text's class.
      const bt = spec.batch_triplet;
      for (const kind of ['all', 'hard', 'semi_hard', 'hard_soft_margin'] as const) {
        for (const distance of ['euclidean', 'cosine'] as const) {
          for (const [prefix, tr, normalized] of [['', trainer, true], ['raw_', rawTrainer, false]] as const) {
            const ours = await tr.evaluate(bt.texts, [], { ...options, batchTriplet: kind, batchTripletDistance: distance, batchTripletMargin: bt.margin, classLabels: Int32Array.from(bt.labels), normalizedVectors: normalized });
            close(ours.loss, ref.batch_triplet[`${prefix}${kind}_${distance}`], `batch triplet '${kind}', ${distance}${normalized ? '' : ' (no Normalize module)'}`);
          }
        }
      }
      // MSELoss: the pairs as (source, translation), the guide the teacher, whose vectors embedWithTeacher gives.
      const parallel = await embedWithTeacher(guideDir, p.first.map((query, i) => ({ query, positive: p.second[i] })), { width: encoder.dimension, model: FIXTURE }, { device: 'cpu' });
      const targetVectors = Float32Array.from(parallel.flatMap((e) => e.target!));
      for (const [key, tr, normalized] of [['normalized', trainer, true], ['raw', rawTrainer, false]] as const) {
        const ours = await tr.evaluate(p.first, p.second, { ...options, targetVectors, normalizedVectors: normalized });
        close(ours.loss, ref.mse[key], `MSELoss${normalized ? '' : ' (no Normalize module)'}`);
      }
    } finally {
      rawTrainer.dispose();
      raw.dispose();
    }
  } finally {
    trainer.dispose();
    encoder.dispose();
  }
});

check(`adaptive layers equal sentence-transformers' AdaptiveLayerLoss and Matryoshka2dLoss (loss and gradient norm), and a model cut to its first layers gives the states entering the next, as sentence-transformers reads both${skipped}`, async (t) => {
  // 4 layers (indices 0 to 3: the embeddings' output, then layers 1 to 3's), dropout off so that a training step's
  // gradient is the one sentence-transformers' eval-mode backward gives.
  const dir = tempDir();
  const modelDir = path.join(dir, 'model');
  makeRandomBert(modelDir, { shape: 'tiny', layers: 4, vocabSize: 198, maxSeqLength: 24, seed: 5 });
  dropoutOff(modelDir);
  const settings = (last: number, prior: number, kl: number, temperature: number, weighting: 'uniform' | 'log' | 'linear') => ({
    last_layer_weight: last, prior_layers_weight: prior, kl_div_weight: kl, kl_temperature: temperature, layer_weighting: weighting,
  });
  const cases = [
    { name: 'mnrl', loss: 'mnrl', scale: 20, matryoshka: null, ...settings(1, 1, 1, 0.3, 'uniform') },
    { name: 'mnrl_linear', loss: 'mnrl', scale: 20, matryoshka: null, ...settings(2, 0.5, 0.7, 0.5, 'linear') },
    { name: 'mnrl_no_kl', loss: 'mnrl', scale: 10, matryoshka: null, ...settings(1, 1, 1, 0, 'log') },
    { name: 'cosent_2d', loss: 'cosent', scale: 20, matryoshka: [32, 12, 5], ...settings(1, 1, 1, 0.3, 'log') },
  ];
  const texts = ['a cat', 'the dog ran fast', 'what is a token', 'hello node'];
  const cuts = [1, 2, 3].map((layers) => path.join(dir, `cut-${layers}`));
  for (const [i, cut] of cuts.entries()) {
    const r = await truncateLayers({ model: modelDir, layers: i + 1, output: cut });
    t.like(r, { from: 4, layers: i + 1, droppedTensors: 16 * (3 - i) });
  }
  const spec = {
    queries: ['a cat', 'river bank?', 'what is a token', 'fast search', 'the dog'],
    positives: ['the cat sat', 'money in the river bank', 'a token is a piece of text', 'search that is fast, small', 'a dog ran'],
    pairs: { first: ['a cat', 'river bank?', 'what is a token', 'fast search', 'the dog'], second: ['the cat sat', 'money in the river bank', 'slow large batch', 'a dog ran', 'hello node'], scores: [0.9, 0.4, 0.1, 0.3, 0.8] },
    cases,
    texts,
    cut_models: cuts,
  };
  fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify(spec));
  const r = await python([script('st_adaptive_layers.py'), modelDir, path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
  const encoder = await Encoder.load(modelDir, { device: 'cpu' });
  const trainer = await encoder.createTrainer({ seed: 1 });
  try {
    t.is(encoder.layers, 4);
    const base = { contrastiveWeight: 0, lateInteractionWeight: 0, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const, maxGradNorm: 0, lossScale: 1 };
    for (const c of cases) {
      // Every layer (layersPerStep 'all'): adaptiveLayersStep's weights.
      const layers = adaptiveLayersStep({ layersPerStep: 'all', lastLayerWeight: c.last_layer_weight, priorLayersWeight: c.prior_layers_weight, layerWeighting: c.layer_weighting, klTemperature: c.kl_temperature, klWeight: c.kl_div_weight }, 4, 1, 1, 0);
      t.deepEqual(layers.adaptiveLayers, [0, 1, 2, 3]);
      const options = {
        ...base, ...layers, normalizedVectors: encoder.normalize,
        ...(c.matryoshka && { matryoshkaDimensions: c.matryoshka, matryoshkaWeights: c.matryoshka.map(() => 1) }),
        ...(c.loss === 'mnrl' ? { contrastiveWeight: 1, temperature: 1 / c.scale } : { pairLoss: 'cosent' as const, pairLabels: Float32Array.from(spec.pairs.scores), pairScale: c.scale }),
      };
      const [q, d] = c.loss === 'mnrl' ? [spec.queries, spec.positives] : [spec.pairs.first, spec.pairs.second];
      const theirs = ref.cases[c.name];
      const loss = (await trainer.evaluate(q, d, { ...options, learningRate: 0, apply: false })).loss;
      t.true(Math.abs(loss - theirs.loss) <= 1e-5 * theirs.loss, `${c.name}: loss ${loss}, sentence-transformers ${theirs.loss}`);
      // A training step at learning rate 0: the gradient's norm, the weights unchanged.
      const step = await trainer.step(q, d, { ...options, learningRate: 0, apply: true });
      t.true(Math.abs(step.gradNorm - theirs.grad_norm) <= 1e-4 * theirs.grad_norm, `${c.name}: gradient norm ${step.gradNorm}, sentence-transformers ${theirs.grad_norm}`);
    }
    // Without the KL term the loss is not the same: the comparison above measured it.
    t.not(ref.cases.mnrl.loss, ref.cases.mnrl_no_kl.loss);
  } finally {
    trainer.dispose();
    encoder.dispose();
  }
  // The model cut to k layers: its vectors are the full model's of hidden_states[k] (BERT has no norm after its last
  // layer), here and in sentence-transformers.
  for (const [i, cut] of cuts.entries()) {
    const e = await Encoder.load(cut, { device: 'cpu' });
    try {
      t.is(e.layers, i + 1);
      const ours = await e.embed(texts);
      t.true(maxAbsDiff(ours.data, ref.layer_vectors[i + 1].flat()) < 1e-5, `cut to ${i + 1} layers: coltrast`);
      t.true(maxAbsDiff(Float32Array.from(ref.cut_vectors[i].flat()), ref.layer_vectors[i + 1].flat()) < 1e-5, `cut to ${i + 1} layers: sentence-transformers`);
    } finally {
      e.dispose();
    }
  }
});

check(`poolTokens pools as sentence-transformers' HierarchicalTokenPooling: Ward's linkage over cosine distances, cut to n / poolFactor clusters, their means${skipped}`, async (t) => {
  // Unit vectors near a few directions (so clusters exist and merges are not all alike), documents of 2 to 61
  // tokens, pool factors 2, 3 and 4, 0 to 2 protected tokens.
  const random = seededRandom(11);
  const cases = [2, 3, 5, 9, 17, 33, 61].flatMap((n, i) =>
    [2, 3, 4].map((poolFactor, j) => {
      const dim = 7 + ((i + j) % 3) * 5;
      const centres = Array.from({ length: 4 }, () => Array.from({ length: dim }, () => random.next() - 0.5));
      const tokens = Array.from({ length: n }, () => {
        const v = centres[Math.floor(random.next() * 4)].map((x) => x + 0.4 * (random.next() - 0.5));
        const norm = Math.hypot(...v);
        return v.map((x) => Math.fround(x / norm));
      });
      return { tokens, pool_factor: poolFactor, protected: (i + j) % 3 };
    }),
  );
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify({ cases }));
  const r = await python([script('st_token_pooling.py'), path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref: number[][][] = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')).pooled;
  let pooledSome = 0;
  cases.forEach((c, i) => {
    const dim = c.tokens[0].length;
    const ours = poolTokens({ dims: [c.tokens.length, dim], data: Float32Array.from(c.tokens.flat()) }, c.pool_factor, c.protected);
    const label = `${c.tokens.length} tokens, pool factor ${c.pool_factor}, ${c.protected} protected`;
    t.is(ours.dims[0], ref[i].length, label);
    if (ours.dims[0] < c.tokens.length) pooledSome++;
    // The protected vectors first, as they were; then the same cluster means in the same order.
    t.true(maxAbsDiff(ours.data, ref[i].flat()) < 1e-5, label);
  });
  t.true(pooledSome >= 15, `cases that pooled: ${pooledSome}`);
});

check(`quantizeEmbeddings gives sentence-transformers' quantize_embeddings codes: int8, uint8 (own and calibrated ranges), binary, ubinary${skipped}`, async (t) => {
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  const dir = tempDir();
  try {
    const sentences = wordDataset(90, 17).map((p) => p.positive);
    // The full 32 dimensions, and 13 (binary rows then end in a partly used byte).
    for (const truncateDim of [32, 13]) {
      const embeddings = await encoder.embed(sentences.slice(0, 40), { truncateDim });
      const calibration = await encoder.embed(sentences.slice(40), { truncateDim });
      const rows = (m: { dims: number[]; data: Float32Array }) => Array.from({ length: m.dims[0] }, (_, i) => Array.from(m.data.subarray(i * m.dims[1], (i + 1) * m.dims[1])));
      fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify({ embeddings: rows(embeddings), calibration: rows(calibration) }));
      const r = await python([script('st_quantize.py'), path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
      t.is(r.status, 0, r.tail);
      const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
      for (const precision of ['int8', 'uint8', 'binary', 'ubinary'] as const) {
        t.deepEqual(Array.from(quantizeEmbeddings(embeddings, precision).data), ref[precision].flat(), `${precision}, width ${truncateDim}`);
      }
      for (const precision of ['int8', 'uint8'] as const) {
        t.deepEqual(Array.from(quantizeEmbeddings(embeddings, precision, { calibration }).data), ref[`${precision}_calibrated`].flat(), `${precision} calibrated, width ${truncateDim}`);
      }
      // Not all codes alike: the comparison sees real spread.
      t.true(new Set(ref.int8.flat()).size > 50);
    }
  } finally {
    encoder.dispose();
  }
});

check(`mineHardNegatives gives sentence-transformers' mine_hard_negatives rows: every format, margins, score limits, range_min, the positives kept, a cross-encoder's rescoring (scores 1e-5)${skipped}`, async (t) => {
  const projects = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8')).projects;
  const qa: { question: string; answer: string; context?: string }[] = projects.flatMap((p: any) => p.qa_pairs);
  // A query with two positives, and a pair repeated.
  const pairs = [...qa.map((x) => ({ query: x.question, positive: x.answer })), { query: qa[0].question, positive: 'MedScan uses a ResNet-50 architecture.' }, { query: qa[3].question, positive: qa[3].answer }];
  const corpus = fs.readFileSync(TEXTS, 'utf8').split('\n').filter((l) => l.trim());
  const crossEncoder = path.join(CROSS, 'st');
  const cases: [Record<string, unknown>, Record<string, unknown>][] = [
    [{}, {}],
    [{ numNegatives: 2, relativeMargin: 0.05, outputScores: true }, { num_negatives: 2, relative_margin: 0.05, output_scores: true }],
    [{ outputFormat: 'n-tuple', rangeMin: 2, outputScores: true, absoluteMargin: 0.02, maxScore: 0.4 }, { output_format: 'n-tuple', range_min: 2, output_scores: true, absolute_margin: 0.02, max_score: 0.4 }],
    [{ outputFormat: 'labeled-pair', minScore: 0.1, rangeMax: 8 }, { output_format: 'labeled-pair', min_score: 0.1, range_max: 8 }],
    [{ outputFormat: 'labeled-list', outputScores: true, numNegatives: 4 }, { output_format: 'labeled-list', output_scores: true, num_negatives: 4 }],
    [{ includePositives: true }, { include_positives: true }],
    [{ crossEncoder, absoluteMargin: 0, outputFormat: 'n-tuple', outputScores: true, numNegatives: 2 }, { cross_encoder: crossEncoder, absolute_margin: 0, output_format: 'n-tuple', output_scores: true, num_negatives: 2 }],
  ];
  const dir = tempDir();
  const encoder = await Encoder.load('default', { device: 'cpu' });
  try {
    for (const [ours, theirs] of cases) {
      const mined = await mineHardNegatives({ data: pairs, corpus, model: encoder, ...ours });
      const { cross_encoder: ce, ...options } = theirs;
      fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify({ model: path.join(ROOT, 'default-model'), cross_encoder: ce ?? null, pairs, corpus, options }));
      const r = await python([script('st_mine.py'), path.join(dir, 'spec.json'), path.join(dir, 'out.json')]);
      t.is(r.status, 0, r.tail);
      const st: Record<string, unknown>[] = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')).rows;
      const numbers = (x: any): number[] => x.scores ?? (x.score !== undefined ? [x.score] : []);
      const texts = (rows: any[]) => rows.map((x) => JSON.stringify({ ...x, scores: undefined, score: undefined }));
      t.true(st.length > 10, `${st.length} rows`);
      t.deepEqual(texts(mined.rows), texts(st), JSON.stringify(ours));
      const worst = Math.max(0, ...mined.rows.flatMap((x, i) => numbers(x).map((v, j) => Math.abs(v - numbers(st[i])[j]))));
      t.true(worst < 1e-5, `${JSON.stringify(ours)}: scores differ by ${worst}`);
      t.is(mined.rows.filter((x) => numbers(x).length > 0).length, st.filter((x) => numbers(x).length > 0).length);
    }
  } finally {
    encoder.dispose();
  }
});

check(`the IR metrics agree with sentence-transformers' InformationRetrievalEvaluator (1e-6)${skipped}`, async (t) => {
  const r = await python([script('check_ir_metrics.py')]);
  t.is(r.status, 0, r.tail);
  t.regex(r.stdout, /checked with plain, sentence-transformers: \d+ comparisons/);
  t.regex(r.stdout, /all agree within 1e-06/);
});

// Odd shapes, random masks; every document keeps at least one token (a document with none scores 0 in
// coltrast by definition, see ops.maxsim, where sentence-transformers has no defined value).
for (const [B, N, Lq, Ld, dim] of [
  [5, 5, 7, 33, 96],
  [3, 11, 1, 180, 64],
] as const) {
  check(`ops.maxsim scores as sentence-transformers' maxsim / maxsim_pairwise: B ${B}, N ${N}, Lq ${Lq}, Ld ${Ld}, dim ${dim}${skipped}`, async (t) => {
    let seed = B * 1000 + Ld;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    const q = { dims: [B, Lq, dim], data: Float32Array.from({ length: B * Lq * dim }, rand) };
    const d = { dims: [N, Ld, dim], data: Float32Array.from({ length: N * Ld * dim }, rand) };
    const mask = (rows: number, len: number) => ({
      dims: [rows, len],
      data: Uint8Array.from({ length: rows * len }, (_, i) => (i % len === 0 || rand() > -0.4 ? 1 : 0)),
    });
    const qm = mask(B, Lq);
    const dm = mask(N, Ld);
    const dir = tempDir();
    for (const normalize of [false, true]) {
      const spec = path.join(dir, `in-${normalize}.json`);
      const out = path.join(dir, `out-${normalize}.json`);
      const plain = (x: { dims: number[]; data: ArrayLike<number> }) => ({ dims: x.dims, data: Array.from(x.data) });
      fs.writeFileSync(spec, JSON.stringify({ q: plain(q), qmask: plain(qm), d: plain(d), dmask: plain(dm), normalize }));
      const r = await python([script('st_maxsim.py'), spec, out]);
      t.is(r.status, 0, r.tail);
      const theirs = JSON.parse(fs.readFileSync(out, 'utf8'));
      const all = (await ops.maxsim(q, qm, d, dm, { normalize })).value;
      t.is(all.length, B * N);
      const scale = Math.max(...theirs.all.map(Math.abs));
      t.true(maxAbsDiff(all, theirs.all) <= 1e-5 * scale, `all, normalize ${normalize}: ${maxAbsDiff(all, theirs.all)} (scale ${scale})`);
      if (B === N) {
        const paired = (await ops.maxsim(q, qm, d, dm, { mode: 'paired', normalize })).value;
        t.true(maxAbsDiff(paired, theirs.paired) <= 1e-5 * scale, `paired, normalize ${normalize}: ${maxAbsDiff(paired, theirs.paired)}`);
      }
    }
  });
}

check(`ContextFlow: the joint loss and its gradient's norm equal sentence-transformers' + transformers' autograd on a batch${skipped}`, async (t) => {
  // No dropout in the retriever, so that its training-mode forward is the same on both sides; the generator is the
  // tied Qwen3 fixture (its output layer is its token embeddings: one parameter, one gradient).
  const retrieverDir = fixtureCopy(dropoutOff);
  const generatorDir = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'qwen3');
  const retriever = await Encoder.load(retrieverDir, { device: 'cpu' });
  const generator = await Generator.load(generatorDir, { device: 'cpu' });
  const k = 2;
  const queries = ['what is in the river?', 'where is the money?', 'what is fast?'];
  const answers = ['water', 'in the bank', 'search'];
  const documents = ['the river bank has water', 'a cafe with paper', 'money in the bank', 'the river bank has water', 'search that is fast', 'hello world'];
  const pairs = queries.flatMap((q, m) => documents.slice(m * k, (m + 1) * k).map((doc) => ({ prompt: ragPrompt(DEFAULT_TEMPLATE, doc, q), completion: ` ${answers[m]}` })));
  const sequences = await generator.sequences(pairs);
  const trainer = await retriever.createTrainer({ seed: 1, generator: generator.nativeHandle().current() });
  const options = {
    contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 0.05, symmetric: false, lateInteractionKind: 'cross_entropy' as const,
    learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: true, rag: true, sequences: padBatch(sequences), documentsPerQuery: k,
  };
  try {
    const prepared = await trainer.prepare(queries, documents);
    const ours = await trainer.stepPrepared(prepared, options);
    // Then a real step, and the trained generator saved for transformers to load.
    const dir = tempDir();
    await trainer.stepPrepared(prepared, { ...options, learningRate: 1e-2, maxGradNorm: 1 });
    const savedGenerator = path.join(dir, 'generator');
    await generator.save(savedGenerator);
    const trainedLl = await generator.logLikelihood(pairs);
    const spec = {
      retriever: retrieverDir, generator: generatorDir, queries, documents, k, temperature: 0.05, sequences: sequences.map((s) => s.ids), targets: sequences.map((s) => s.scored),
      saved_generator: savedGenerator,
    };
    fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify(spec));
    const r = await python([script('rag_loss.py'), path.join(dir, 'spec.json'), path.join(dir, 'out.json')]);
    t.is(r.status, 0, r.tail);
    const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
    const close = (a: number, b: number, what: string) => t.true(Math.abs(a - b) <= 1e-4 * Math.abs(b), `${what}: coltrast ${a}, Python ${b}`);
    close(ours.loss, ref.loss, 'loss');
    close(ours.generation!, ref.generation, 'expected generator NLL');
    close(ours.gradNorm, ref.grad_norm, 'gradient norm over both models');
    t.true(maxAbsDiff(trainedLl, ref.saved_log_likelihoods) < 1e-4 * Math.max(...trainedLl.map(Math.abs)), 'transformers loads the trained generator coltrast saved: same log-likelihoods');
    const untrained = await Generator.load(generatorDir, { device: 'cpu' });
    t.true(maxAbsDiff(trainedLl, await untrained.logLikelihood(pairs)) > 1e-3, 'the step changed the generator');
    untrained.dispose();
  } finally {
    trainer.dispose();
    generator.dispose();
    retriever.dispose();
  }
});

const peftProbe = skip ? null : spawnSync(PYTHON, ['-c', 'import peft; print(peft.__version__)'], { encoding: 'utf8', timeout: 240_000 });
const peftSkip = skip || (peftProbe?.status !== 0 ? `${PYTHON} has no peft (scripts/setup.sh installs it from this machine's wheels)` : '');
(peftSkip ? test.skip : test)(
  `LoRA: PEFT (sentence-transformers' load_adapter) adds the adapter coltrast trained to the base model and embeds as coltrast does; coltrast loads an adapter PEFT made, and the adapter-only folder sentence-transformers saves, and embeds as PEFT does (1e-5)${peftSkip ? ` [skipped: ${peftSkip}]` : ''}`,
  async (t) => {
    const dir = tempDir();
    const texts = fs.readFileSync(TEXTS, 'utf8').split('\n').filter((l) => l.trim());
    const embedWith = async (model: string, adapter?: string) => {
      const encoder = await Encoder.load(model, { device: 'cpu', ...(adapter && { adapter }) });
      try {
        return (await encoder.embed(texts)).data;
      } finally {
        encoder.dispose();
      }
    };
    // Ours, in PEFT. The decoder's and T5's too: their adapters name the layers as Qwen3Model and T5EncoderModel do.
    for (const [name, model, targets] of [
      ['bert', FIXTURE, ['query', 'value']],
      ['qwen3', path.join(ROOT, 'test', 'fixtures', 'tiny-decoders', 'qwen3'), ['q_proj', 'v_proj']],
      // Phi-3's fused projections: PEFT adapts them as they are (one adapter over the queries', keys' and values' rows).
      ['phi3', path.join(ROOT, 'test', 'fixtures', 'tiny-decoders', 'phi3'), ['qkv_proj', 'gate_up_proj']],
      ['t5', path.join(ENCODERS, 't5'), ['q', 'v', 'wi']],
    ] as const) {
      const output = path.join(dir, `${name}-lora`);
      await train({ model, data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 5, lora: { rank: 4, alpha: 16, targetModules: [...targets] } });
      const back = path.join(dir, `${name}-peft.json`);
      const r = await python([script('peft_adapter.py'), 'load', model, path.join(output, 'adapter'), TEXTS, back]);
      t.is(r.status, 0, r.tail);
      const theirs = (JSON.parse(fs.readFileSync(back, 'utf8')).embeddings as number[][]).flat();
      const ours = await embedWith(output);
      t.true(maxAbsDiff(ours, theirs) < 1e-5, `${name}: coltrast's merged model vs the base + adapter in PEFT: ${maxAbsDiff(ours, theirs)}`);
    }
    // PEFT's, in coltrast: every "dense" adapted (BERT's pooler too, which embedding does not run).
    const made = path.join(dir, 'peft-made');
    const out = path.join(dir, 'peft-made.json');
    const r = await python([script('peft_adapter.py'), 'make', FIXTURE, made, TEXTS, out, 'query,value,dense']);
    t.is(r.status, 0, r.tail);
    const theirs = (JSON.parse(fs.readFileSync(out, 'utf8')).embeddings as number[][]).flat();
    const ours = await embedWith(FIXTURE, made);
    t.true(maxAbsDiff(ours, theirs) < 1e-5, `the base + PEFT's adapter, coltrast vs PEFT: ${maxAbsDiff(ours, theirs)}`);
    // The folder sentence-transformers saved (the adapter, no weights: its base is named in adapter_config.json) loads as it is.
    t.false(fs.existsSync(path.join(made, 'config.json')));
    const direct = await embedWith(made);
    t.true(maxAbsDiff(direct, theirs) < 1e-5, `sentence-transformers' adapter folder loaded directly: ${maxAbsDiff(direct, theirs)}`);
    t.true(maxAbsDiff(await embedWith(FIXTURE), theirs) > 1e-2, 'the adapter changes the embeddings');
  },
);

(peftSkip ? test.skip : test)(
  `LoRA on cross-encoders: sentence-transformers' CrossEncoder.load_adapter (PEFT) adds the sequence-classification adapter coltrast trained (the adapters and the head they trained with) to the base and scores as coltrast's merged model does, for rerankers (BERT, XLM-RoBERTa, DistilBERT) and new heads on embedding models (BERT, DeBERTa-v3, ModernBERT); coltrast loads an adapter PEFT made and scores as PEFT does (1e-5)${peftSkip ? ` [skipped: ${peftSkip}]` : ''}`,
  async (t) => {
    const dir = tempDir();
    const pairs = path.join(dir, 'pairs.json');
    fs.writeFileSync(pairs, JSON.stringify(CROSS_REFERENCE.pairs));
    const logits = async (model: string, adapter?: string) => {
      const ce = await CrossEncoder.load(model, { device: 'cpu', ...(adapter && { adapter }) });
      try {
        return { logits: (await ce.predict(CROSS_REFERENCE.pairs, { activation: 'identity' })).data, maxLength: ce.maxSeqLength };
      } finally {
        ce.dispose();
      }
    };
    const pythonLogits = (file: string) => (JSON.parse(fs.readFileSync(file, 'utf8')).logits as number[][]).flat();
    // Ours, in sentence-transformers and PEFT.
    for (const [name, base] of [
      ['bert', path.join(CROSS, 'st')],
      ['xlm-roberta', path.join(ENCODERS, 'xlm-roberta-cross-encoder')],
      ['distilbert', path.join(ENCODERS, 'distilbert-cross-encoder')],
      ['bert-new-head', FIXTURE],
      ['deberta-v3-new-head', path.join(ENCODERS, 'deberta-v3')],
      ['modernbert-new-head', path.join(ENCODERS, 'modernbert')],
    ] as const) {
      const output = path.join(dir, name);
      await train({ model: base, data: wordDataset(16), output, epochs: 1, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 5, crossEncoder: true, lora: { rank: 4, alpha: 16 } });
      const ours = await logits(output);
      const back = path.join(dir, `${name}.json`);
      const r = await python([script('peft_adapter.py'), 'load-cls', base, path.join(output, 'adapter'), pairs, back, String(ours.maxLength)]);
      t.is(r.status, 0, r.tail);
      t.true(maxAbsDiff(ours.logits, pythonLogits(back)) < 1e-5, `${name}: coltrast's merged reranker vs the base + adapter in sentence-transformers: ${maxAbsDiff(ours.logits, pythonLogits(back))}`);
    }
    // PEFT's, in coltrast.
    const base = path.join(CROSS, 'st');
    const made = path.join(dir, 'peft-made');
    const out = path.join(dir, 'peft-made.json');
    const { logits: plain, maxLength } = await logits(base);
    const r = await python([script('peft_adapter.py'), 'make-cls', base, made, pairs, out, 'query,value', String(maxLength)]);
    t.is(r.status, 0, r.tail);
    const ours = (await logits(base, made)).logits;
    t.true(maxAbsDiff(ours, pythonLogits(out)) < 1e-5, `the base + PEFT's adapter, coltrast vs PEFT: ${maxAbsDiff(ours, pythonLogits(out))}`);
    t.true(maxAbsDiff(plain, pythonLogits(out)) > 1e-2, 'the adapter changes the scores');
  },
);

(peftSkip ? test.skip : test)(
  `LoRA on decoder rerankers: sentence-transformers' CrossEncoder.load_adapter (PEFT) adds the adapter coltrast trained (CAUSAL_LM for LogitScore, SEQ_CLS with the score head for the other) to the reranker and scores as coltrast's merged model does (1e-5)${peftSkip ? ` [skipped: ${peftSkip}]` : ''}`,
  async (t) => {
    const dir = tempDir();
    const pairs = path.join(dir, 'pairs.json');
    fs.writeFileSync(pairs, JSON.stringify(CAUSAL_REFERENCE.pairs));
    for (const which of ['logit-score', 'seq-cls']) {
      const model = path.join(dir, which);
      const base = path.join(CAUSAL_RERANKERS, which);
      await train({ model: base, data: wordDataset(16), output: model, epochs: 1, batchSize: 4, learningRate: 1e-2, valSplit: 0, device: 'cpu', seed: 2, crossEncoder: true, lora: true });
      const adapterConfig = JSON.parse(fs.readFileSync(path.join(model, 'adapter', 'adapter_config.json'), 'utf8'));
      t.is(adapterConfig.task_type, which === 'logit-score' ? 'CAUSAL_LM' : 'SEQ_CLS');
      const ce = await CrossEncoder.load(model, { device: 'cpu' });
      const ours = await ce.predict(CAUSAL_REFERENCE.pairs, { activation: 'identity' });
      ce.dispose();
      t.true(maxAbsDiff(ours.data, CAUSAL_REFERENCE.models[which].logits.flat()) > 1e-3, `${which}: training changed the scores`);
      const back = path.join(dir, `${which}.json`);
      const r = await python([script('peft_adapter.py'), 'load-reranker', base, path.join(model, 'adapter'), pairs, back]);
      t.is(r.status, 0, r.tail);
      const worst = maxAbsDiff(ours.data, JSON.parse(fs.readFileSync(back, 'utf8')).logits.flat());
      t.true(worst < 1e-5, `${which}: max abs difference ${worst}`);
    }
  },
);

const SPARSE = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse');

check(`sparse encoders (BERT, plain *ForMaskedLM, DistilBERT, RoBERTa, MPNet, ModernBERT, an inference-free Router): the recorded vectors are what sentence-transformers' SparseEncoder computes now, and it loads what coltrast saves with equal vectors${skipped}`, async (t) => {
  const dir = tempDir();
  const fresh = path.join(dir, 'reference.json');
  let r = await python([script('tiny_sparse.py'), 'record', SPARSE, fresh]);
  t.is(r.status, 0, r.tail);
  type Rows = { indices: number[]; values: number[] }[];
  const recorded = JSON.parse(fs.readFileSync(path.join(SPARSE, '..', 'tiny-sparse.reference.json'), 'utf8'));
  const now = JSON.parse(fs.readFileSync(fresh, 'utf8'));
  const width = 4096; // above every fixture's vocabulary
  const dense = (rows: Rows | SparseVector[]) => {
    const out = new Float64Array(rows.length * width);
    rows.forEach((v, i) => Array.from(v.indices).forEach((index, k) => (out[i * width + index] = v.values[k])));
    return out;
  };
  for (const name of Object.keys(recorded.models)) {
    const drift = maxAbsDiff(dense(now.models[name].vectors), dense(recorded.models[name].vectors));
    t.true(drift < 1e-5, `${name}: max abs difference ${drift}`);
  }
  const texts = path.join(dir, 'texts.json');
  fs.writeFileSync(texts, JSON.stringify(recorded.texts));
  for (const name of ['bert', 'distilbert', 'roberta', 'modernbert']) {
    const model = await SparseEncoder.load(path.join(SPARSE, name), { device: 'cpu' });
    const saved = path.join(dir, name);
    await model.save(saved);
    const ours = await model.encode(recorded.texts, { task: name === 'bert' ? 'query' : undefined });
    model.dispose();
    const back = path.join(dir, `${name}.json`);
    r = await python([script('tiny_sparse.py'), 'load', saved, texts, back]);
    t.is(r.status, 0, `${name}: ${r.tail}`);
    const theirs = JSON.parse(fs.readFileSync(back, 'utf8')).vectors as Rows;
    const worst = maxAbsDiff(dense(ours), dense(theirs)) / Math.max(1, ...theirs.flatMap((v) => v.values));
    t.true(worst < 1e-5, `${name}: relative difference ${worst}`);
  }
  // The inference-free SPLADE (a Router): what sentence-transformers computes now is what was recorded.
  const router = path.join(dir, 'router.json');
  r = await python([script('tiny_sparse.py'), 'router', SPARSE, '-', router]);
  t.is(r.status, 0, r.tail);
  const routed = JSON.parse(fs.readFileSync(path.join(SPARSE, '..', 'tiny-sparse-router.reference.json'), 'utf8'));
  const routedNow = JSON.parse(fs.readFileSync(router, 'utf8'));
  for (const key of ['queries', 'documents', 'default', 'capped_queries']) {
    const drift = maxAbsDiff(dense(routedNow[key]), dense(routed[key]));
    t.true(drift < 1e-5, `router ${key}: max abs difference ${drift}`);
  }
});

check(`masked-language-model training: a batch's loss and one AdamW step equal transformers' *ForMaskedLM's (BERT, DistilBERT with its own output layer, RoBERTa, MPNet, ModernBERT); transformers loads what train({ mlm }) saves${skipped}`, async (t) => {
  const dir = tempDir();
  const texts = ['model token vector search', 'the quick brown fox jumps over', 'retrieval with sparse vectors', 'a cat'];
  for (const name of ['bert-plain', 'distilbert', 'roberta', 'mpnet', 'modernbert']) {
    // Dropout off (each family's keys), so that both sides' step sees the same model; the ModernBERT fixture has none
    // (and its config is left as written: transformers refuses its float fields written back as integers).
    const model =
      name === 'modernbert'
        ? path.join(SPARSE, name)
        : folderCopy(path.join(SPARSE, name), (d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, dropout: 0, attention_dropout: 0 })));
    const encoder = await SparseEncoder.loadForTraining(model, { device: 'cpu' }, 1, 'masked-lm');
    const trainer = encoder.createMlmTrainer({ seed: 1, weightDecay: 0.01 }, 0.3);
    const step = { contrastiveWeight: 0, lateInteractionWeight: 0, temperature: 1, symmetric: false, lateInteractionKind: 'cross_entropy' as const, learningRate: 1e-3, maxGradNorm: 0, lossScale: 1, apply: true, maskSeed: 5 };
    const evaluated = { ...step, learningRate: 0, apply: false };
    const prepared = await trainer.prepare(texts, texts);
    const before = (await trainer.evaluatePrepared(prepared, evaluated)).loss;
    await trainer.stepPrepared(prepared, step);
    const after = (await trainer.evaluatePrepared(prepared, evaluated)).loss;
    trainer.dispose();
    encoder.dispose();
    // The batch as the trainer masked it: the same draw from the same seed.
    const q = prepared.queries;
    const masked = maskTokens(q.inputIds, q.attentionMask, maskingTokens(fs.readFileSync(path.join(model, 'tokenizer.json')), model), encoder.dimension, 0.3, 5);
    const spec = path.join(dir, `${name}.json`);
    fs.writeFileSync(spec, JSON.stringify({ ids: Array.from(masked.ids), mask: Array.from(q.attentionMask), labels: Array.from(masked.labels), rows: q.batchSize, seq: q.seqLen, learning_rate: 1e-3, weight_decay: 0.01 }));
    const r = await python([script('tiny_sparse.py'), 'mlm', model, spec, path.join(dir, `${name}.out.json`)]);
    t.is(r.status, 0, `${name}: ${r.tail}`);
    const theirs = JSON.parse(fs.readFileSync(path.join(dir, `${name}.out.json`), 'utf8'));
    t.true(Math.abs(before - theirs.before) <= 1e-5 * theirs.before, `${name}: loss ${before} against transformers' ${theirs.before}`);
    t.true(Math.abs(after - theirs.after) <= 1e-5 * theirs.after, `${name}: after one AdamW step ${after} against transformers' ${theirs.after}`);
    t.true(after < before);
  }
  // What train({ mlm }) saves (from an embedding model: a new head) transformers loads, with the loss coltrast computes.
  const trained = path.join(dir, 'trained');
  await train({ model: FIXTURE, mlm: true, data: wordDataset(16).map((p) => p.positive), output: trained, epochs: 1, batchSize: 4, learningRate: 1e-3, device: 'cpu', seed: 5 });
  const encoder = await SparseEncoder.loadForTraining(trained, { device: 'cpu' }, 1, 'masked-lm');
  const trainer = encoder.createMlmTrainer({ seed: 1 }, 0.3);
  const prepared = await trainer.prepare(texts, texts);
  const ours = (await trainer.evaluatePrepared(prepared, { contrastiveWeight: 0, lateInteractionWeight: 0, temperature: 1, symmetric: false, lateInteractionKind: 'cross_entropy', learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false, maskSeed: 8 })).loss;
  trainer.dispose();
  encoder.dispose();
  const q = prepared.queries;
  const masked = maskTokens(q.inputIds, q.attentionMask, maskingTokens(fs.readFileSync(path.join(trained, 'tokenizer.json')), trained), encoder.dimension, 0.3, 8);
  const spec = path.join(dir, 'trained.json');
  fs.writeFileSync(spec, JSON.stringify({ ids: Array.from(masked.ids), mask: Array.from(q.attentionMask), labels: Array.from(masked.labels), rows: q.batchSize, seq: q.seqLen, learning_rate: 0, weight_decay: 0 }));
  const r = await python([script('tiny_sparse.py'), 'mlm', trained, spec, path.join(dir, 'trained.out.json')]);
  t.is(r.status, 0, r.tail);
  const theirs = JSON.parse(fs.readFileSync(path.join(dir, 'trained.out.json'), 'utf8')).before;
  t.true(Math.abs(ours - theirs) <= 1e-5 * theirs, `the trained model's loss ${ours} against transformers' ${theirs}`);
});

check(`sparse training: a batch's loss equals sentence-transformers' SpladeLoss around SparseMultipleNegativesRankingLoss (FLOPS regularizers included) and its SparseMarginMSELoss; it loads what coltrast trained${skipped}`, async (t) => {
  const dir = tempDir();
  const model = path.join(SPARSE, 'distilbert');
  const spec = {
    queries: ['a cat', 'river bank?', 'what is a token', 'fast search', 'the dog'],
    positives: ['the cat sat', 'money in the river bank', 'a token is a piece of text', 'search that is fast, small', 'a dog ran'],
    negatives: ['a cat ran', 'water paper', 'slow large batch', 'the lazy fox', 'a big dog'],
    scale: 2,
    query_regularizer: 5e-3,
    document_regularizer: 3e-3,
    schedules: [
      { total: 10, ratio: 1 / 3, type: 'quadratic' as const },
      { total: 7, ratio: 0.5, type: 'linear' as const },
      { total: 2, ratio: 0.2, type: 'quadratic' as const },
      { total: 5, ratio: 1, type: 'quadratic' as const },
    ],
    margins: [2, -1, 0.5, 3, 1],
  };
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify(spec));
  let r = await python([script('tiny_sparse.py'), 'loss', model, path.join(dir, 'batch.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
  const close = (ours: number, theirs: number, what: string) => t.true(Math.abs(ours - theirs) <= 1e-5 * Math.abs(theirs), `${what}: coltrast ${ours}, sentence-transformers ${theirs}`);
  const encoder = await SparseEncoder.load(model, { device: 'cpu' });
  const regularizers = { queryRegularizer: spec.query_regularizer, documentRegularizer: spec.document_regularizer };
  const trainer = encoder.createTrainer({ seed: 1 }, false);
  const options = {
    contrastiveWeight: 1, lateInteractionWeight: 0, temperature: 1 / spec.scale, symmetric: false, lateInteractionKind: 'cross_entropy' as const,
    learningRate: 0, maxGradNorm: 0, lossScale: 1, apply: false, ...regularizers,
  };
  try {
    const examples = spec.queries.map((query, i) => ({ query, positive: spec.positives[i], negatives: [spec.negatives[i]], scores: [spec.margins[i], 0] }));
    const [batch] = makeBatches(examples, examples.length);
    const splade = await trainer.evaluate(batch.queries, batch.documents, options);
    close(splade.contrastive, ref.base, 'SparseMultipleNegativesRankingLoss');
    close(splade.regularizer, ref.query_regularizer + ref.document_regularizer, 'FLOPS regularizers');
    close(splade.loss, ref.base + ref.query_regularizer + ref.document_regularizer, 'SpladeLoss');
    // SparseMarginMSELoss: the dot-product margins against the teacher's (temperature 1, no regularizers).
    const margin = encoder.createTrainer({ seed: 1 }, false);
    const mse = await margin.evaluate(batch.queries, batch.documents, {
      ...options, queryRegularizer: 0, documentRegularizer: 0, contrastiveWeight: 0, temperature: 1, distillationWeight: 1, teacher: batch.teacher,
    });
    margin.dispose();
    close(mse.loss, ref.margin_mse, 'SparseMarginMSELoss');
    // The regularizers' warm-up: the weights sentence-transformers' trainer sets before each optimizer step.
    spec.schedules.forEach((schedule, i) => {
      const ours = Array.from({ length: schedule.total + 1 }, (_, step) =>
        sparseRegularizersAt(step, schedule.total, { ...regularizers, warmupRatio: schedule.ratio, schedule: schedule.type }));
      ours.forEach((w, step) => {
        const [q, d] = ref.schedules[i][step];
        t.true(Math.abs(w.queryRegularizer - q) <= 1e-12 && Math.abs(w.documentRegularizer - d) <= 1e-12, `${JSON.stringify(schedule)} step ${step}: ${JSON.stringify(w)} vs ${q}, ${d}`);
      });
    });
  } finally {
    trainer.dispose();
    encoder.dispose();
  }
  // Models coltrast trained, from a SparseEncoder and from an embedding model (a new masked-LM head): sentence-transformers
  // loads each and encodes as coltrast does.
  const sample = wordDataset(6, 3).map((p) => p.query);
  const texts = path.join(dir, 'texts.json');
  fs.writeFileSync(texts, JSON.stringify(sample));
  for (const [name, start] of [['from a SparseEncoder', path.join(SPARSE, 'bert')], ['from an embedding model', FIXTURE]]) {
    const trained = path.join(dir, `trained-${name.split(' ').pop()}`);
    await train({ model: start, sparse: true, data: wordDataset(16), output: trained, epochs: 1, batchSize: 4, learningRate: 1e-3, valSplit: 0, device: 'cpu', seed: 5 });
    const ours = await SparseEncoder.load(trained, { device: 'cpu' });
    const vectors = await ours.encode(sample, { task: ours.prompts.query ? 'query' : undefined });
    ours.dispose();
    r = await python([script('tiny_sparse.py'), 'load', trained, texts, path.join(dir, 'back.json')]);
    t.is(r.status, 0, `${name}: ${r.tail}`);
    const theirs = JSON.parse(fs.readFileSync(path.join(dir, 'back.json'), 'utf8')).vectors as { indices: number[]; values: number[] }[];
    vectors.forEach((v, i) => {
      t.deepEqual(Array.from(v.indices), theirs[i].indices, `${name}, text ${i}: the same non-zero entries`);
      t.true(maxAbsDiff(v.values, theirs[i].values) < 1e-5, `${name}, text ${i}`);
    });
  }
});

check(`communityDetection and paraphraseMining give sentence-transformers' community_detection and paraphrase_mining_embeddings results${skipped}`, async (t) => {
  // Rows around a few directions, some of them copies of others (ties at 1), of which communities form at each setting.
  const random = seededRandom(5);
  const [n, d] = [260, 20];
  const centres = Array.from({ length: 5 }, () => Array.from({ length: d }, () => random.next() - 0.5));
  const rows = Array.from({ length: n }, () => {
    const c = centres[Math.floor(random.next() * centres.length)];
    return c.map((x) => Math.fround(x + 0.5 * (random.next() - 0.5)));
  });
  for (let i = 13; i < n; i += 13) rows[i] = rows[i - 5];
  const embeddings = { dims: [n, d] as [number, number], data: Float32Array.from(rows.flat()) };
  const spec = {
    embeddings: rows,
    communities: [{ threshold: 0.75, min_size: 10, batch_size: 1024 }, { threshold: 0.85, min_size: 3, batch_size: 50 }, { threshold: 0.6, min_size: 30, batch_size: 64 }],
    paraphrase: [{ top_k: 100, max_pairs: 500000 }, { top_k: 3, max_pairs: 500000 }],
  };
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify(spec));
  const r = await python([script('st_communities.py'), path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')) as { communities: number[][][]; paraphrase: [number, number, number][][] };
  const sorted = (c: number[]) => [...c].sort((a, b) => a - b);
  for (const [k, c] of spec.communities.entries()) {
    const ours = await communityDetection(embeddings, { threshold: c.threshold, minCommunitySize: c.min_size, batchSize: c.batch_size });
    t.true(ref.communities[k].length > 0, `threshold ${c.threshold}: sentence-transformers finds communities`);
    t.deepEqual(ours.map(sorted), ref.communities[k].map(sorted), `threshold ${c.threshold}, min size ${c.min_size}`);
  }
  for (const [k, p] of spec.paraphrase.entries()) {
    const ours = await paraphraseMining(embeddings, { topK: p.top_k, maxPairs: p.max_pairs });
    const theirs = new Map(ref.paraphrase[k].map(([score, i, j]) => [`${i},${j}`, score]));
    // Rows tied at a row's k-th place (the copies) may differ in which tied row is kept: the others agree exactly.
    const shared = ours.filter((x) => theirs.has(`${x.i},${x.j}`));
    t.true(shared.length >= theirs.size - n / 13, `top_k ${p.top_k}: ${shared.length} of sentence-transformers' ${theirs.size} pairs (ours ${ours.length})`);
    t.true(ours.length <= theirs.size + n / 13);
    t.log(`top_k ${p.top_k}: ${ours.length} pairs, sentence-transformers ${theirs.size}, shared ${shared.length}`);
    for (const x of shared) t.true(Math.abs(x.score - theirs.get(`${x.i},${x.j}`)!) < 1e-6, `pair ${x.i},${x.j}`);
  }
});

check(`evaluateSimilarity on pairs labeled 1 or 0 gives sentence-transformers' BinaryClassificationEvaluator's accuracy, F1, precision, recall, average precision and MCC with their thresholds${skipped}`, async (t) => {
  // Pairs of words the fixture's vocabulary holds, labeled by a rule the random model half follows; repeated pairs tie.
  const random = seededRandom(8);
  const words = ['cat', 'cats', 'dog', 'dogs', 'fast', 'quick', 'slow', 'lazy', 'model', 'models', 'token', 'tokens', 'text', 'texts'];
  const pairs = Array.from({ length: 60 }, () => {
    const a = words[Math.floor(random.next() * words.length)];
    const b = random.next() < 0.4 ? a : words[Math.floor(random.next() * words.length)];
    return { sentence1: `a ${a} here`, sentence2: `the ${b}`, label: a === b || random.next() < 0.2 ? 1 : 0 };
  });
  // The cosines evaluateSimilarity classifies, computed as it computes them: each pair's vectors normalized again, their
  // dot product.
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  const [a, b] = [await encoder.embed(pairs.map((p) => p.sentence1)), await encoder.embed(pairs.map((p) => p.sentence2))];
  encoder.dispose();
  const width = a.dims[1];
  const cosines = pairs.map((_, i) => {
    const x = normalizeRow(a.data.slice(i * width, (i + 1) * width));
    const y = normalizeRow(b.data.slice(i * width, (i + 1) * width));
    let dot = 0;
    for (let k = 0; k < width; k++) dot += x[k] * y[k];
    return dot;
  });
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify({ sentence1: pairs.map((p) => p.sentence1), sentence2: pairs.map((p) => p.sentence2), labels: pairs.map((p) => p.label), scores: cosines }));
  const r = await python([script('st_binary_classification.py'), FIXTURE, path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
  t.is(r.status, 0, r.tail);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
  // The same cosines (to float noise: a text embedded beside others of other lengths differs in its last bits, which
  // can split pairs that tie in one library and not in the other), and from the same cosines the same metrics.
  t.true(maxAbsDiff(cosines, ref.cosines) < 1e-5, `cosines differ by ${maxAbsDiff(cosines, ref.cosines)}`);
  const ours = (await evaluateSimilarity({ data: pairs, model: FIXTURE, device: 'cpu' })).classification!;
  t.deepEqual(ours, binaryClassification(cosines, pairs.map((p) => p.label)), "evaluateSimilarity classifies those cosines");
  const pairsOf: [keyof typeof ours, string][] = [
    ['accuracy', 'accuracy'], ['accuracyThreshold', 'accuracy_threshold'], ['f1', 'f1'], ['f1Threshold', 'f1_threshold'],
    ['precision', 'precision'], ['recall', 'recall'], ['averagePrecision', 'ap'], ['mcc', 'mcc'],
  ];
  for (const [key, theirs] of pairsOf) t.true(Math.abs(ours[key] - ref.given[theirs]) < 1e-5, `${key}: coltrast ${ours[key]}, sentence-transformers ${ref.given[theirs]}`);
  // End to end (its own cosines): the same accuracy and F1 here.
  for (const key of ['accuracy', 'f1'] as const) t.true(Math.abs(ours[key] - ref.model[key]) < 1e-5, `end to end ${key}: coltrast ${ours[key]}, sentence-transformers ${ref.model[key]}`);
  t.true(ref.given.accuracy > 0.5 && ref.given.accuracy < 1, `a task neither trivial nor hopeless: accuracy ${ref.given.accuracy}`);
});

check(`evaluateTriplets gives sentence-transformers' TripletEvaluator's accuracy (anchors as queries, the others as documents), with and without a margin${skipped}`, async (t) => {
  const random = seededRandom(14);
  const words = ['cat', 'cats', 'dog', 'dogs', 'fast', 'quick', 'slow', 'lazy', 'model', 'models', 'token', 'tokens', 'text', 'texts'];
  const pick = () => words[Math.floor(random.next() * words.length)];
  const triplets = Array.from({ length: 50 }, () => {
    const a = pick();
    return { anchor: `a ${a} and a ${pick()}`, positive: `the ${a}`, negative: `the ${pick()}` };
  });
  const dir = tempDir();
  for (const margin of [0, 0.05]) {
    fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify({ anchors: triplets.map((x) => x.anchor), positives: triplets.map((x) => x.positive), negatives: triplets.map((x) => x.negative), margin }));
    const r = await python([script('st_triplets.py'), FIXTURE, path.join(dir, 'in.json'), path.join(dir, 'out.json')]);
    t.is(r.status, 0, r.tail);
    const ref = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8'));
    const ours = await evaluateTriplets({ data: triplets, model: FIXTURE, margin, device: 'cpu' });
    t.is(ours.scoredBy, ref.similarity);
    // Its accuracy is a float32 mean: the same count of triplets ranked right.
    t.is(Math.round(ours.accuracy * triplets.length), Math.round(ref.accuracy * triplets.length), `margin ${margin}: coltrast ${ours.accuracy}, sentence-transformers ${ref.accuracy}`);
    t.true(ref.accuracy > 0 && ref.accuracy < 1, `a task neither trivial nor hopeless: ${ref.accuracy}`);
  }
});
