// ContextFlow (lib/rag.ts): the native joint loss against a float64 reference computed from the retriever's
// embed() and the generator's logLikelihood(); which model a step trains (frozen generator or not); trainRag() end
// to end (the loss falls, both models saved and loadable, history and curves written), on question/answer pairs
// with a corpus and on a ColTrast project file; kill-and-resume; Rag.answer()'s choice against the marginal
// likelihoods recomputed here, and its signal; bad input refused with the reason.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { ColtrastError, Encoder, Generator, Rag, trainRag } from '../lib';
import { native } from '../lib/native';
import { DEFAULT_CHAT_TEMPLATE, DEFAULT_TEMPLATE, formatAnswer, formatPrompt, ragPrompt, type PromptFormat } from '../lib/rag';
import { padBatch } from '../lib/tokenizer';
import { FIXTURE, STEP, maxAbsDiff, tempDir } from './helpers/fixture';
import { checkKillAndResume } from './helpers/resume';
import { dot, rejection, rows } from './helpers/vectors';

const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');
const GENERATOR = path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama');
const CORPUS = [
  'the river bank has water',
  'money in the bank',
  'a cafe with paper',
  'the quick brown fox jumps over the lazy dog',
  'search that is fast and small',
  'a model turns text into a token vector',
  'the cat and the dog run',
  'hello world',
];
const DATA = [
  { question: 'what is in the river?', answer: 'water' },
  { question: 'where is the money?', answer: 'in the bank' },
  { question: 'what is fast?', answer: 'search' },
  { question: 'what does the fox do?', answer: 'jumps over the dog' },
  { question: 'what has paper?', answer: 'a cafe' },
  { question: 'what makes a vector?', answer: 'a model' },
];
const TAU = 0.05;

const PLAIN: PromptFormat = { template: DEFAULT_TEMPLATE, chat: false };

/** The float64 ContextFlow loss of `questions` with `k` documents each, from the models' own embed() and logLikelihood(). */
async function referenceLoss(retriever: Encoder, generator: Generator, questions: typeof DATA, documents: string[], k: number, format = PLAIN) {
  const q = rows(await retriever.embed(questions.map((e) => e.question), { task: 'query', normalize: true }));
  const d = rows(await retriever.embed(documents, { task: 'document', normalize: true }));
  const ll = await generator.logLikelihood(
    questions.flatMap((e, m) => documents.slice(m * k, (m + 1) * k).map((doc) => ({ prompt: formatPrompt(format, doc, e.question), completion: formatAnswer(format, e.answer) }))),
  );
  let loss = 0;
  let generation = 0;
  questions.forEach((_, m) => {
    const s = Array.from({ length: k }, (_, j) => dot(q[m], d[m * k + j]) / TAU);
    const max = Math.max(...s);
    const logZ = max + Math.log(s.reduce((sum, x) => sum + Math.exp(x - max), 0));
    const terms = s.map((x, j) => x - logZ + ll[m * k + j]);
    const top = Math.max(...terms);
    loss -= top + Math.log(terms.reduce((sum, x) => sum + Math.exp(x - top), 0));
    generation -= s.reduce((sum, x, j) => sum + Math.exp(x - logZ) * ll[m * k + j], 0);
  });
  return { loss: loss / questions.length, generation: generation / questions.length };
}

async function ragTrainer(retriever: Encoder, generator: Generator, freezeGenerator: boolean, format = PLAIN) {
  const trainer = await retriever.createTrainer({ learningRate: 1e-3, weightDecay: 0, seed: 3, generator: generator.nativeHandle().current(), freezeGenerator });
  const batch = async (questions: typeof DATA, documents: string[], k: number) => {
    const prepared = await trainer.prepare(questions.map((e) => e.question), documents);
    const pairs = questions.flatMap((e, m) => documents.slice(m * k, (m + 1) * k).map((doc) => ({ prompt: formatPrompt(format, doc, e.question), completion: formatAnswer(format, e.answer) })));
    const options = { ...STEP, rag: true, sequences: padBatch(await generator.sequences(pairs)), documentsPerQuery: k };
    return { prepared, options };
  };
  return { trainer, batch };
}

test('the native ContextFlow loss equals a float64 reference from embed() and logLikelihood(), before and after steps', async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(GENERATOR, { device: 'cpu' });
  const { trainer, batch } = await ragTrainer(retriever, generator, false);
  const questions = DATA.slice(0, 3);
  const k = 3;
  const documents = [0, 1, 2, 1, 2, 3, 4, 5, 0].map((i) => CORPUS[i]);
  const { prepared, options } = await batch(questions, documents, k);
  for (let round = 0; round < 2; round++) {
    const r = await trainer.evaluatePrepared(prepared, options);
    const ref = await referenceLoss(retriever, generator, questions, documents, k);
    t.true(Math.abs(r.loss - ref.loss) < 1e-4 * Math.max(1, Math.abs(ref.loss)), `round ${round}: ${r.loss} vs ${ref.loss}`);
    t.true(Math.abs(r.generation! - ref.generation) < 1e-4 * Math.max(1, Math.abs(ref.generation)), `round ${round}: generation ${r.generation} vs ${ref.generation}`);
    // Steps on this batch lower its loss (the gradient points downhill for both models).
    const before = r.loss;
    for (let i = 0; i < 5; i++) await trainer.stepPrepared(prepared, options);
    t.true((await trainer.evaluatePrepared(prepared, options)).loss < before);
  }
  trainer.dispose();
  generator.dispose();
  retriever.dispose();
});

test("chat: the prompt is the user's message in the generator's chat template, the answer the assistant's turn", async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(GENERATOR, { device: 'cpu' });
  const format: PromptFormat = { template: DEFAULT_CHAT_TEMPLATE, chat: true, system: 'be brief' };
  t.deepEqual(formatPrompt(format, 'doc', 'q?'), [{ role: 'system', content: 'be brief' }, { role: 'user', content: ragPrompt(DEFAULT_CHAT_TEMPLATE, 'doc', 'q?') }]);
  const { trainer, batch } = await ragTrainer(retriever, generator, false, format);
  const questions = DATA.slice(0, 2);
  const documents = [0, 1, 1, 2].map((i) => CORPUS[i]);
  const { prepared, options } = await batch(questions, documents, 2);
  const r = await trainer.evaluatePrepared(prepared, options);
  const ref = await referenceLoss(retriever, generator, questions, documents, 2, format);
  t.true(Math.abs(r.loss - ref.loss) < 1e-4 * Math.abs(ref.loss), `${r.loss} vs ${ref.loss}`);
  trainer.dispose();
  const rag = await Rag.create({ retriever, generator, corpus: CORPUS, chat: true, system: 'be brief' });
  const [answer] = await rag.answer(['what is in the river?'], { k: 2, maxNewTokens: 3 });
  const prompts = answer.sources.map((src) => formatPrompt(format, src.text, 'what is in the river?'));
  const ll = await generator.logLikelihood(prompts.map((prompt) => ({ prompt, completion: answer.answer })));
  t.true(Math.abs(answer.logLikelihood - Math.log(answer.sources.reduce((sum, src, z) => sum + src.probability * Math.exp(ll[z]), 0))) < 1e-6);
  const output = path.join(tempDir(), 'rag');
  const result = await trainRag({ retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, output, k: 2, epochs: 1, batchSize: 3, chat: true, system: 'be brief', device: 'cpu', progressBar: false });
  t.is(result.history.steps.length, 2);
  t.like(JSON.parse(fs.readFileSync(path.join(output, 'rag_history.json'), 'utf8')).config, { chat: true, system: 'be brief', template: DEFAULT_CHAT_TEMPLATE });
  generator.dispose();
  retriever.dispose();
});

test('a ContextFlow step trains the retriever and the generator, or the retriever alone with freezeGenerator', async (t) => {
  for (const freeze of [false, true]) {
    const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
    const generator = await Generator.load(GENERATOR, { device: 'cpu' });
    const { trainer, batch } = await ragTrainer(retriever, generator, freeze);
    const probe = [{ prompt: 'what is fast?', completion: 'search' }];
    const [llBefore, embBefore] = [await generator.logLikelihood(probe), await retriever.embed(['what is fast?'])];
    const { prepared, options } = await batch(DATA.slice(0, 2), CORPUS.slice(0, 4), 2);
    const r = await trainer.stepPrepared(prepared, options);
    t.true(r.gradNorm > 0);
    t.true(maxAbsDiff((await retriever.embed(['what is fast?'])).data, embBefore.data) > 0, 'the retriever changed');
    const llAfter = await generator.logLikelihood(probe);
    if (freeze) t.is(llAfter[0], llBefore[0], 'a frozen generator is unchanged');
    else t.not(llAfter[0], llBefore[0], 'the generator changed');
    trainer.dispose();
    generator.dispose();
    retriever.dispose();
  }
});

test('trainRag(): the loss falls, both models are saved and load, the history and curves are written', async (t) => {
  const output = path.join(tempDir(), 'rag');
  const progress: number[] = [];
  const result = await trainRag({
    retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, output, k: 3, epochs: 4, batchSize: 3, learningRate: 2e-3,
    device: 'cpu', progressBar: false, onProgress: (p) => progress.push(p.step),
  });
  t.deepEqual(progress, [1, 2, 3, 4, 5, 6, 7, 8]);
  t.is(result.history.epochs.length, 4);
  const losses = result.history.epochs.map((e) => e.trainLoss);
  t.true(losses[3] < losses[0], `epoch losses ${losses.join(', ')}`);
  t.is(result.best.epoch, 4);
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /Epoch 4 is kept[\s\S]*\| 4 \| \d/);
  for (const file of ['rag_history.json', 'training_curves.svg', 'retriever/model.safetensors', 'retriever/modules.json', 'generator/model.safetensors', 'generator/config.json']) {
    t.true(fs.existsSync(path.join(output, file)), file);
  }
  t.false(fs.existsSync(`${output}.checkpoint`));
  const history = JSON.parse(fs.readFileSync(path.join(output, 'rag_history.json'), 'utf8'));
  t.is(history.config.k, 3);
  t.is(history.history.steps.length, 8);
  const trained = await Generator.load(path.join(output, 'generator'), { device: 'cpu' });
  const original = await Generator.load(GENERATOR, { device: 'cpu' });
  const pair = [{ prompt: ragPrompt(DEFAULT_TEMPLATE, CORPUS[0], DATA[0].question), completion: ` ${DATA[0].answer}` }];
  t.true((await trained.logLikelihood(pair))[0] > (await original.logLikelihood(pair))[0], 'the trained generator finds the answer likelier');
  trained.dispose();
  original.dispose();
  const retriever = await Encoder.load(path.join(output, 'retriever'), { device: 'cpu' });
  t.is((await retriever.embed(['a'])).dims[1], 32);
  retriever.dispose();
  // An earlier run's output is not replaced unless asked.
  t.regex((await rejection(() => trainRag({ retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, output, device: 'cpu' }))).message, /not empty/);
});

test('trainRag() on a ColTrast project file: its documents, semantically chunked, are the corpus; validation by project', async (t) => {
  const dir = tempDir();
  const projects = ['river bank water', 'money paper cafe', 'quick brown fox', 'search fast small'].map((words, i) => ({
    project_id: `p${i}`,
    readme_content: `the ${words}. a ${words} test. hello world.`,
    qa_pairs: [{ question: `what about ${words.split(' ')[0]}?`, answer: words.split(' ')[1] }],
  }));
  const file = path.join(dir, 'projects.json');
  fs.writeFileSync(file, JSON.stringify({ projects }));
  const result = await trainRag({ retriever: FIXTURE, generator: GENERATOR, data: file, output: path.join(dir, 'out'), k: 2, epochs: 2, batchSize: 2, valSplit: 0.25, device: 'cpu', progressBar: false });
  t.is(result.history.epochs.length, 2);
  for (const e of result.history.epochs) t.true(Number.isFinite(e.valLoss));
  t.is(result.history.steps.length, 4, 'three training questions in batches of two, two epochs');
});

const RAG_RESUME = { rag: true, retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, k: 2, epochs: 2, batchSize: 2, learningRate: 1e-3, checkpointEvery: 2, device: 'cpu', progressBar: false };
const RAG_RESUME_CHECK = { steps: 6, killAt: 2, checkpointAt: 2, weights: ['retriever/model.safetensors', 'generator/model.safetensors'], history: 'rag_history.json' };

test('trainRag(): a run killed mid-epoch resumes (retriever, generator and optimizer) to the uninterrupted run\'s weights', (t) => {
  checkKillAndResume(t, RAG_RESUME, {
    ...RAG_RESUME_CHECK,
    // First a resume with other settings and another corpus: refused, naming them (and not chat: false, its default,
    // which the run left out), the checkpoint left as it was.
    beforeResume: (dir) => {
      const options = { ...RAG_RESUME, output: dir.replace(/\.checkpoint$/, ''), resume: true, learningRate: 1e-2, corpus: CORPUS.slice(1), chat: false };
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'train-child.ts'), JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
      t.is(r.status, 1);
      t.regex(r.stderr, /options\.resume: .*is of a run with other settings: options\.corpus differs; options\.learningRate 0\.001 then, 0\.01 now\./);
    },
  });
});

// state.json version 2 keeps the corpus and the questions in corpus.jsonl, train.jsonl and val.jsonl; a version 1
// checkpoint, with them inside state.json, still resumes.
test('trainRag(): a checkpoint with its data inside state.json (version 1) resumes to the same weights', (t) => {
  checkKillAndResume(t, RAG_RESUME, {
    ...RAG_RESUME_CHECK,
    beforeResume: (dir) => {
      const saved = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
      t.is(saved.version, 2);
      t.is(saved.data.corpus, CORPUS.length);
      const rows = (name: string) => fs.readFileSync(path.join(dir, `${name}.jsonl`), 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
      t.deepEqual(rows('corpus'), CORPUS);
      fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ version: 1, state: saved.state, corpus: rows('corpus'), train: rows('train'), val: rows('val') }));
      for (const name of ['corpus', 'train', 'val']) fs.rmSync(path.join(dir, `${name}.jsonl`));
    },
  });
});

test('Rag.answer(): the k best documents with their probabilities, and the answer of highest marginal likelihood over them', async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(GENERATOR, { device: 'cpu' });
  const seen: number[] = [];
  const rag = await Rag.create({ retriever, generator, corpus: CORPUS, onProgress: (done) => seen.push(done) });
  t.is(seen[seen.length - 1], CORPUS.length);
  const question = 'what is in the river?';
  const q = rows(await retriever.embed([question], { normalize: true }))[0];
  const d = rows(await retriever.embed(CORPUS, { normalize: true }));
  const ranked = CORPUS.map((_, i) => i).sort((a, b) => dot(q, d[b]) - dot(q, d[a]));
  // Greedy from each document, and RAG's thorough decoding: beam search from each.
  for (const numBeams of [1, 3]) {
    const [answer] = await rag.answer([question], { k: 3, maxNewTokens: 5, numBeams });
    t.is(answer.sources.length, 3);
    t.true(Math.abs(answer.sources.reduce((s, x) => s + x.probability, 0) - 1) < 1e-9);
    // The sources are the retriever's three best documents, best first.
    t.deepEqual(answer.sources.map((s) => s.index), ranked.slice(0, 3));
    // Recomputed: each document's answer, and each candidate's marginal over the three documents.
    const prompts = answer.sources.map((s) => ragPrompt(DEFAULT_TEMPLATE, s.text, question));
    const candidates = [...new Set((await generator.generate(prompts, { maxNewTokens: 5, numBeams })).map((g) => g.text.trim()))];
    const marginals = await Promise.all(
      candidates.map(async (c) => {
        const ll = await generator.logLikelihood(prompts.map((prompt) => ({ prompt, completion: ` ${c}` })));
        return Math.log(answer.sources.reduce((s, src, z) => s + src.probability * Math.exp(ll[z]), 0));
      }),
    );
    const best = marginals.indexOf(Math.max(...marginals));
    t.is(answer.answer, candidates[best], `numBeams ${numBeams}`);
    t.true(Math.abs(answer.logLikelihood - marginals[best]) < 1e-6);
  }
  generator.dispose();
  retriever.dispose();
});

test('Rag.answer(): a signal stops it mid-generation with ABORTED, and the questions after it never start', async (t) => {
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  const generator = await Generator.load(GENERATOR, { device: 'cpu' });
  const rag = await Rag.create({ retriever, generator, corpus: CORPUS });
  const questions = ['what is in the river?', 'where is the money?'];
  const options = { k: 2, maxNewTokens: 20 };
  const expected = await rag.answer(questions, options);
  // Each generate() call's question and how it ended; `abortAt` aborts from the first text the generation streams,
  // as a client going away mid-answer does.
  const real = generator.generate.bind(generator);
  const calls: { question: string; outcome: Promise<string> }[] = [];
  const scored: number[] = [];
  let abortAt: AbortController | undefined;
  generator.generate = (prompts, o) => {
    const controller = abortAt;
    const run = real(prompts, controller ? { ...o, onText: () => controller.abort() } : o);
    calls.push({ question: questions.find((q) => String(prompts[0]).includes(q)) ?? '?', outcome: run.then(() => 'finished', (e: ColtrastError) => e.code) });
    return run;
  };
  const realScore = generator.logLikelihood.bind(generator);
  generator.logLikelihood = (pairs, o) => (scored.push(pairs.length), realScore(pairs, o));
  const outcomes = async () => Promise.all(calls.splice(0).map(async (c) => [c.question, await c.outcome]));

  // Aborted before: nothing runs.
  const before = new AbortController();
  before.abort();
  const early = await rejection(() => rag.answer(questions, { ...options, signal: before.signal }));
  t.is(early.code, 'ABORTED');
  t.regex(early.message, /^answering was aborted \(options\.signal\)$/);
  t.is(calls.length, 0);
  // Aborted while the first question's answers are generated: that generation stops (ABORTED), the first answer is
  // not scored and the second question is never generated.
  abortAt = new AbortController();
  const during = await rejection(() => rag.answer(questions, { ...options, signal: abortAt!.signal }));
  t.is(during.code, 'ABORTED');
  t.deepEqual(await outcomes(), [[questions[0], 'ABORTED']]);
  t.deepEqual(scored, []);

  // The server's answerEach(): one signal per question; an aborted one's place holds its ABORTED error and the
  // others are answered as answer() answers them.
  abortAt = new AbortController();
  const each = await rag.answerEach(questions, options, [abortAt.signal, undefined]);
  abortAt = undefined;
  t.is((each[0] as ColtrastError).code, 'ABORTED');
  t.deepEqual(each[1], expected[1]);
  t.deepEqual(await outcomes(), [
    [questions[0], 'ABORTED'],
    [questions[1], 'finished'],
  ]);
  const skipped = await rag.answerEach(questions, options, [undefined, before.signal]);
  t.deepEqual(skipped[0], expected[0]);
  t.is((skipped[1] as ColtrastError).code, 'ABORTED');
  t.deepEqual(await outcomes(), [[questions[0], 'finished']], 'an aborted question is never generated');

  // A signal that never aborts changes nothing; a signal of the wrong kind is refused by name.
  t.deepEqual(await rag.answer(questions, { ...options, signal: new AbortController().signal }), expected);
  t.regex((await rejection(() => rag.answer(questions, { signal: 'stop' as never }))).message, /^options\.signal must be an AbortSignal/);
  generator.dispose();
  retriever.dispose();
});

test('trainRag() and Rag errors: missing corpus, k beyond it, a bad template, unknown options, an encoder as the generator', async (t) => {
  const output = path.join(tempDir(), 'rag');
  const base = { retriever: FIXTURE, generator: GENERATOR, data: DATA, output, device: 'cpu' as const, progressBar: false };
  t.regex((await rejection(() => trainRag(base))).message, /options\.corpus is required/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS.slice(0, 2), k: 3 }))).message, /holds 2 documents, fewer than k = 3/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, template: 'Q: {question}' }))).message, /\{context\} and \{question\}/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, lr: 1 } as never))).message, /lr/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, data: [{ question: 'a' }] as never }))).message, /data\[0\]: expected \{ "question"/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: [''] }))).message, /corpus\[0\]/);
  // A .json file's syntax error names its line and column; .jsonl.gz is read as JSON Lines.
  const broken = path.join(tempDir(), 'qa.json');
  fs.writeFileSync(broken, '[\n  {"question": "a", "answer": "b"},\n  {"question": "c" "answer": "d"}\n]\n');
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, data: broken }))).message, /qa\.json:3:20: not valid JSON .*JSONL files must end in \.jsonl/);
  const gz = path.join(tempDir(), 'qa.jsonl.gz');
  fs.writeFileSync(gz, zlib.gzipSync('{"question": "a"}\n'));
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, data: gz }))).message, /qa\.jsonl\.gz:1: expected \{ "question"/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, output: GENERATOR + '/config.json' }))).message, /options\.output: .+ is a file; give the path of a folder/);
  t.is((await rejection(() => trainRag({ ...base, corpus: CORPUS, generator: FIXTURE }))).code, 'UNSUPPORTED_MODEL');
  const longDocs = CORPUS.map((d) => `${d} ${'model text token vector '.repeat(20)}`);
  t.regex(
    (await rejection(() => trainRag({ ...base, corpus: longDocs, k: 2 }))).message,
    /the question "[^"]+" with one of its retrieved documents and its answer is \d+ or more tokens, more than the generator's 96 positions/,
  );
  const noTemplate = await rejection(() => trainRag({ ...base, corpus: CORPUS, generator: path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'qwen3'), chat: true }));
  t.is(noTemplate.code, 'MODEL_FILES');
  t.regex(noTemplate.message, /options\.chat: .*qwen3 has no chat template/);
  t.regex((await rejection(() => trainRag({ ...base, corpus: CORPUS, system: 'x' }))).message, /options\.system must be a string, with chat: true/);
  t.false(fs.existsSync(output));
  const retriever = await Encoder.load(FIXTURE, { device: 'cpu' });
  // A rag step needs a trainer made with a generator.
  const plain = await retriever.createTrainer({});
  const prepared = await plain.prepare(['a'], ['b']);
  const sequences = padBatch([{ ids: [2, 5, 6], typeIds: [0, 0, 0], scored: [0, 1, 1] }]);
  t.regex((await rejection(() => plain.stepPrepared(prepared, { ...STEP, rag: true, sequences, documentsPerQuery: 1 }))).message, /need a trainer created with a generator/);
  plain.dispose();
  t.regex((await rejection(() => Rag.create({ retriever, generator: retriever as never, corpus: CORPUS }))).message, /a Generator/);
  retriever.dispose();
});

test('the CLI: rag-train, then ask and generate with what it saved; missing flags are one-line errors', async (t) => {
  const dir = tempDir();
  const corpus = path.join(dir, 'corpus.txt');
  const data = path.join(dir, 'qa.jsonl');
  fs.writeFileSync(corpus, CORPUS.join('\n'));
  fs.writeFileSync(data, DATA.map((e) => JSON.stringify(e)).join('\n'));
  const output = path.join(dir, 'out');
  const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000 });
  const trained = cli('rag-train', '--retriever', FIXTURE, '--generator', GENERATOR, '--data', data, '--corpus', corpus, '--output', output, '--k', '2', '--epochs', '2', '--batch-size', '3', '--device', 'cpu', '--json');
  t.is(trained.status, 0, trained.stderr);
  const summary = JSON.parse(trained.stdout);
  t.is(summary.epochs.length, 2);
  t.is(summary.generatorDir, path.join(output, 'generator'));
  const asked = cli('ask', 'what is in the river?', 'where is the money?', '--retriever', summary.retrieverDir, '--generator', summary.generatorDir, '--corpus', corpus, '--k', '2', '--max-new-tokens', '4', '--device', 'cpu', '--json');
  t.is(asked.status, 0, asked.stderr);
  const answers = JSON.parse(asked.stdout);
  t.deepEqual(answers.map((a: { question: string }) => a.question), ['what is in the river?', 'where is the money?']);
  for (const a of answers) {
    t.is(a.sources.length, 2);
    t.is(typeof a.answer, 'string');
  }
  const generated = cli('generate', 'hello world', '--model', summary.generatorDir, '--max-new-tokens', '3', '--device', 'cpu', '--json');
  t.is(generated.status, 0, generated.stderr);
  t.is(JSON.parse(generated.stdout)[0].tokenIds.length, 3);
  // Without --json one prompt's text is printed as it streams: the same text, then a newline.
  const printed = cli('generate', 'hello world', '--model', summary.generatorDir, '--max-new-tokens', '3', '--device', 'cpu');
  t.is(printed.stdout, `${JSON.parse(generated.stdout)[0].text}\n`);
  // The saved generator kept its chat template: --chat makes each prompt a user message.
  const chatted = cli('generate', 'hello world', '--chat', '--system', 'be brief', '--model', summary.generatorDir, '--max-new-tokens', '2', '--device', 'cpu', '--json');
  t.is(chatted.status, 0, chatted.stderr);
  t.is(JSON.parse(chatted.stdout)[0].tokenIds.length, 2);
  t.regex(cli('generate', 'x', '--system', 'y', '--model', summary.generatorDir).stderr, /--system goes with --chat/);
  // Beam search from the command line: what generate({ numBeams }) gives.
  const beamed = cli('generate', 'hello world', '--model', summary.generatorDir, '--max-new-tokens', '4', '--num-beams', '3', '--length-penalty', '0.5', '--early-stopping', 'never', '--device', 'cpu', '--json');
  t.is(beamed.status, 0, beamed.stderr);
  const trainedGenerator = await Generator.load(summary.generatorDir, { device: 'cpu' });
  const [expected] = await trainedGenerator.generate(['hello world'], { maxNewTokens: 4, numBeams: 3, lengthPenalty: 0.5, earlyStopping: 'never' });
  trainedGenerator.dispose();
  t.deepEqual(JSON.parse(beamed.stdout)[0].tokenIds, expected.tokenIds);
  t.regex(cli('generate', 'x', '--model', summary.generatorDir, '--num-beams', '2', '--early-stopping', 'soon').stderr, /--early-stopping must be true, false or never/);
  const missing = cli('rag-train', '--data', data, '--output', output);
  t.is(missing.status, 2);
  t.regex(missing.stderr, /rag-train needs --generator/);
  const badK = cli('ask', 'q', '--generator', GENERATOR, '--corpus', corpus, '--k', '0');
  t.regex(badK.stderr, /--k must be a positive integer/);
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: the ContextFlow loss equals the CPU's, in float32 and under bfloat16 autocast, and trainRag runs${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    const questions = DATA.slice(0, 3);
    const documents = [0, 1, 2, 1, 2, 3].map((i) => CORPUS[i]);
    const lossOn = async (device: 'cpu' | 'cuda', precision: 'float32' | 'bfloat16') => {
      const retriever = await Encoder.load(FIXTURE, { device });
      const generator = await Generator.load(GENERATOR, { device });
      const trainer = await retriever.createTrainer({ seed: 3, precision, generator: generator.nativeHandle().current() });
      const pairs = questions.flatMap((e, m) => documents.slice(m * 2, m * 2 + 2).map((doc) => ({ prompt: ragPrompt(DEFAULT_TEMPLATE, doc, e.question), completion: ` ${e.answer}` })));
      const options = { ...STEP, rag: true, sequences: padBatch(await generator.sequences(pairs)), documentsPerQuery: 2 };
      const r = await trainer.evaluatePrepared(await trainer.prepare(questions.map((e) => e.question), documents), options);
      trainer.dispose();
      generator.dispose();
      retriever.dispose();
      return r.loss;
    };
    const cpu = await lossOn('cpu', 'float32');
    t.true(Math.abs((await lossOn('cuda', 'float32')) - cpu) < 1e-3 * Math.abs(cpu));
    t.true(Math.abs((await lossOn('cuda', 'bfloat16')) - cpu) < 5e-2 * Math.abs(cpu));
    const result = await trainRag({ retriever: FIXTURE, generator: GENERATOR, data: DATA, corpus: CORPUS, output: path.join(tempDir(), 'rag'), k: 2, epochs: 2, batchSize: 3, device: 'cuda', precision: 'bfloat16', progressBar: false });
    t.true(result.history.steps.every((s) => Number.isFinite(s.loss)));
  },
);
