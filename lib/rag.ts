/**
 * ContextFlow: retrieval-augmented generation with a decoder-only generator, the retriever and the generator
 * trained together (`trainRag`) and run together (`Rag.answer`).
 *
 * For a question x, the retriever's K best documents z_k come with p(z_k | x) = softmax_k(cos(x, z_k) / τ) over
 * those K, and the generator reads each in a prompt f(z_k, x) = the template with the document and the question.
 * Training minimizes -1/B Σ_m log Σ_k p(z_k | x_m) p(y_m | f(z_k, x_m)) (RAG-Sequence's marginal likelihood,
 * Lewis et al. 2020, which the ContextFlow write-up adapts to decoder-only generators), in one native step per
 * batch (native/train/trainer_wrap.cc, ragLoss). Answering generates greedily from each retrieved document and
 * keeps the answer with the highest marginal p(y | x) = Σ_k p(z_k | x) p(y | f(z_k, x)) (RAG-Sequence's
 * "thorough decoding").
 */
import fs from 'node:fs';
import path from 'node:path';
import { semanticChunks } from './chunking';
import { Encoder } from './encoder';
import { ColtrastError } from './errors';
import { checkSameRun, runIdentity } from './run-identity';
import { nonEmptyFolder, removeFolder, readCheckpointState, readRunData, saveRunData, writeFolderAtomic, writeJsonAtomic, writeTextAtomic } from './files';
import { CSV, parseCsv, parseJsonDocument, parseJsonLines, type CsvReader } from './data-files';
import { Generator, type Generated, type Prompt } from './generator';
import { checkChatFormat, checkTemplate, formatAnswer, promptOf, readPromptFormat, type PromptFormat } from './prompt-format';
import type { Device } from './native-model';
import { ProgressBar } from './progress';
import { seededRandom } from './random';
import { trainingCurvesSvg } from './report';
import { encoderEmbedder, finiteOutputs, keptNote, learningRateAt, outputsDiverged, stepDiverged, trainingAborted } from './train';
import { newStore, type NativeDenseStore } from './search-index';
import { JSONL, checkDataFile, readCorpus, readDataFile, readProjects, shuffle, splitByGroup, valSplitValue } from './train-data';
import { padBatch } from './tokenizer';
import { FLOAT32_MIN_NORMAL, abortedAs, booleanValue, checkOptions, float32, invalid, nonEmptyString, numberValue, oneOf, positiveInteger, signalOption } from './validate';

/** A question and the answer the generator should give. */
export interface RagExample {
  question: string;
  answer: string;
  /** Examples of one group (a ColTrast project) stay on one side of the validation split. */
  group?: string;
}

/** The prompt f(z, x): `{context}` and `{question}` are replaced by the document and the question. */
export const DEFAULT_TEMPLATE = 'Answer the question using the context.\n\nContext: {context}\n\nQuestion: {question}\n\nAnswer:';
/** With `chat`: the user's message, which the generator's chat template wraps (the assistant's turn holds the answer). */
export const DEFAULT_CHAT_TEMPLATE = 'Answer the question using the context.\n\nContext: {context}\n\nQuestion: {question}';

export { formatAnswer, type PromptFormat };

/** The prompt f(z, x) of question `question` with document `context`. */
export function formatPrompt(format: PromptFormat, context: string, question: string): Prompt {
  return promptOf(format, ragPrompt(format.template, context, question));
}

const PLACEHOLDERS = ['{context}', '{question}'];

/** The prompt format of `options` (template, chat, system), checked. */
function readFormat(o: { template?: unknown; chat?: unknown; system?: unknown }, generator: Generator): PromptFormat {
  const format = readPromptFormat(o, { plain: DEFAULT_TEMPLATE, chat: DEFAULT_CHAT_TEMPLATE }, PLACEHOLDERS);
  checkChatFormat(format, generator);
  return format;
}

export interface RagTrainOptions {
  /** The retriever: an embedding model folder or hub id (single-vector). */
  retriever: string;
  /** The generator: a causal LM folder or hub id (Llama, Mistral, Qwen2, Qwen3). */
  generator: string;
  /**
   * Questions and answers: the ColTrast JSON (projects; their READMEs, semantically chunked, are the corpus unless
   * `corpus` is given), a .jsonl file or .json array of `{ question, answer }`, a .csv or .tsv file (gzipped or not)
   * with a header row naming `question` (or `query`) and `answer` columns (and `group`, optional), or such an array.
   */
  data: string | RagExample[];
  /** The documents retrieved from: an array of strings or `{ text }`, a .txt file (one per line), a .jsonl or .json array of those, or a .csv/.tsv with a `text` column. */
  corpus?: string | (string | { text: string })[];
  /** Writes `retriever/` (a sentence-transformers folder), `generator/` (a Hugging Face folder), the history and the curves. */
  output: string;
  /** Documents retrieved per question (default 4). */
  k?: number;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  warmupRatio?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  /** The retriever's temperature τ in p(z | x) (default 0.05). */
  temperature?: number;
  /** Train the retriever only; the generator's weights stay as loaded (default false). */
  freezeGenerator?: boolean;
  /** Recompute both models' layer activations in backward instead of keeping them (default false; see train()). */
  gradientCheckpointing?: boolean;
  /** The prompt f(z, x), with `{context}` and `{question}` (default DEFAULT_TEMPLATE). The answer follows it after a space. */
  template?: string;
  /**
   * The prompt is the user's message in the generator's chat template and the answer the assistant's turn (an
   * instruction-tuned generator; default false). The default template is then DEFAULT_CHAT_TEMPLATE.
   */
  chat?: boolean;
  /** With `chat`: a system message before the user's. */
  system?: string;
  /**
   * Held out for the validation loss each epoch, by example group: a fraction in [0, 1) of the groups or a whole number
   * ≥ 1 of them (default 0, none).
   */
  valSplit?: number;
  seed?: number;
  device?: Device;
  threads?: number;
  precision?: 'float32' | 'bfloat16' | 'float16';
  /** Write a checkpoint every this many steps (default 50; 0: at epoch ends only). */
  checkpointEvery?: number;
  /** Continue from `<output>.checkpoint` when it exists. */
  resume?: boolean;
  onProgress?: (p: RagProgress) => void;
  /** A progress bar on stderr (default: when it is a terminal). */
  progressBar?: boolean;
  /** Replace `output` when it holds an earlier run (default false). */
  overwrite?: boolean;
  /**
   * Stops the run when aborted, as train()'s: looked at between steps (the step under way finishes), it writes a
   * checkpoint of where the run is to `<output>.checkpoint` and rejects with an ABORTED error; `resume: true` continues
   * from it. Aborted before the first step (or before the call), it writes nothing; the work before that step (a
   * ColTrast project file's chunking, the corpus's and the questions' embedding for the first epoch's retrieval) stops
   * between its batches, as does each later epoch's retrieval.
   */
  signal?: AbortSignal;
}

export interface RagProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  /** The generator's expected negative log-likelihood of the answers under the retriever's distribution. */
  generation: number;
  learningRate: number;
  samplesPerSecond: number;
  etaSeconds: number;
}

export interface RagTrainResult {
  history: {
    steps: { step: number; epoch: number; loss: number; generation: number; learningRate: number }[];
    epochs: { epoch: number; trainLoss: number; valLoss?: number }[];
  };
  best: { epoch: number; valLoss?: number };
  retrieverDir: string;
  generatorDir: string;
}

const KEYS = [
  'retriever', 'generator', 'data', 'corpus', 'output', 'k', 'epochs', 'batchSize', 'learningRate', 'warmupRatio', 'weightDecay', 'maxGradNorm',
  'temperature', 'freezeGenerator', 'gradientCheckpointing', 'template', 'chat', 'system', 'valSplit', 'seed', 'device', 'threads', 'precision', 'checkpointEvery', 'resume', 'onProgress',
  'progressBar', 'overwrite', 'signal',
] as const;

/** A number in [0, max), or `fallback` when absent. */
function fraction(name: string, value: unknown, fallback: number, max = 1): number {
  return numberValue(name, value ?? fallback, (x) => x >= 0 && x < max, `a number in [0, ${max})`);
}

function positiveNumber(name: string, value: unknown, fallback: number): number {
  return numberValue(name, value ?? fallback, (x) => x > 0, 'a positive number');
}

/** The prompt of question `question` with document `context`. */
export function ragPrompt(template: string, context: string, question: string): string {
  return template.replace(/\{context\}/g, () => context).replace(/\{question\}/g, () => question);
}

function ragExample(where: string, value: unknown): RagExample {
  const v = value as Record<string, unknown>;
  const question = v?.question ?? v?.query;
  if (typeof v !== 'object' || v === null || typeof question !== 'string' || !question.trim() || typeof v.answer !== 'string' || !v.answer.trim()) {
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: expected { "question": non-empty string, "answer": non-empty string }`);
  }
  return { question, answer: v.answer, ...(typeof v.group === 'string' ? { group: v.group } : {}) };
}

/**
 * A CSV or TSV file's questions and answers, by its header: a "question" (or "query", as ragExample takes from JSON)
 * and an "answer" column, and "group" optional (an empty cell: no group); other columns (an id, a source) are not
 * read, as ragExample leaves a JSON object's other fields.
 */
const csvRagExamples: CsvReader<RagExample> = (columns, where) => {
  const expected = 'a "question" (or "query") and an "answer" column, and optionally "group"';
  const found = `columns found: ${columns.join(', ')}`;
  if (columns.includes('question') && columns.includes('query')) throw new ColtrastError('INVALID_ARGUMENT', `${where}: give a "question" or a "query" column, not both (${found})`);
  const question = columns.includes('question') ? 'question' : 'query';
  for (const name of [question, 'answer']) {
    if (!columns.includes(name)) throw new ColtrastError('INVALID_ARGUMENT', `${where}: no "${name === 'query' ? 'question' : name}" column (${found}; expected: ${expected})`);
  }
  const [q, a, g] = [question, 'answer', 'group'].map((c) => columns.indexOf(c));
  return (fields, at) => {
    for (const [i, name] of [[q, question], [a, 'answer']] as const) {
      if (fields[i].trim() === '') throw new ColtrastError('INVALID_ARGUMENT', `${at}: "${name}" must be a non-empty string`);
    }
    return { question: fields[q], answer: fields[a], ...(g >= 0 && fields[g].trim() !== '' ? { group: fields[g] } : {}) };
  };
};

/** Questions and answers of `data`, and the project documents when it is a ColTrast file. */
export async function readRagData(data: RagTrainOptions['data']): Promise<{ examples: RagExample[]; projects?: { id: string; document: string }[] }> {
  const none = (where: string) => new ColtrastError('INVALID_ARGUMENT', `${where} holds no questions`);
  if (Array.isArray(data)) {
    const examples = data.map((e, i) => ragExample(`data[${i}]`, e));
    if (examples.length === 0) throw none('the training data');
    return { examples };
  }
  if (typeof data !== 'string') throw invalid('options.data', 'a file path or an array of { question, answer }', data);
  if (JSONL.test(data)) {
    checkDataFile(data);
    const examples = await parseJsonLines(data, (value, where) => ragExample(where, value));
    if (examples.length === 0) throw none(data);
    return { examples };
  }
  if (CSV.test(data)) {
    checkDataFile(data);
    const examples = await parseCsv(data, csvRagExamples);
    if (examples.length === 0) throw new ColtrastError('INVALID_ARGUMENT', `${data} holds no questions (it is empty or has only a header row)`);
    return { examples };
  }
  const value = parseJsonDocument(data, await readDataFile(data), 'JSONL files must end in .jsonl');
  if (Array.isArray(value)) {
    const examples = value.map((e, i) => ragExample(`${data}: [${i}]`, e));
    if (examples.length === 0) throw none(data);
    return { examples };
  }
  const projects = readProjects(data, value);
  return {
    examples: projects.flatMap((p) => p.qa.map((qa) => ({ question: qa.question, answer: qa.answer, group: p.id }))),
    projects: projects.map((p) => ({ id: p.id, document: p.document })),
  };
}

/** The corpus embedded by the retriever (L2-normalized document vectors) in a native store for exact search. */
async function embedCorpus(retriever: Encoder, corpus: string[], onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<NativeDenseStore> {
  const vectors = await retriever.embed(corpus, { task: 'document', normalize: true, onProgress, signal });
  const store = newStore(retriever.dimension, 'float32');
  store.add(vectors.data);
  return store;
}

/** The `k` best documents for each question by cosine similarity (exact search, natively): corpus indices, best first, and the similarities. */
async function retrieveScored(retriever: Encoder, corpus: NativeDenseStore, questions: string[], k: number, signal?: AbortSignal): Promise<{ ids: number[]; scores: number[] }[]> {
  const q = await retriever.embed(questions, { task: 'query', normalize: true, signal });
  const found = await corpus.search(q.data, k);
  return questions.map((_, i) => ({
    ids: Array.from(found.indices.subarray(i * found.k, (i + 1) * found.k)),
    scores: Array.from(found.scores.subarray(i * found.k, (i + 1) * found.k)),
  }));
}

async function retrieve(retriever: Encoder, corpus: NativeDenseStore, questions: string[], k: number, signal?: AbortSignal): Promise<number[][]> {
  return (await retrieveScored(retriever, corpus, questions, k, signal)).map((r) => r.ids);
}

interface LoopState {
  epoch: number;
  batch: number;
  step: number;
  epochLoss: number;
  shuffleState: number;
  epochSeed: number;
  /** The documents retrieved for each question of the epoch, in the epoch's order (corpus indices). */
  retrieved: number[][];
  bestLoss: number | null;
  result: RagTrainResult;
}

/** A checkpoint's state and data (version 2: corpus.jsonl, train.jsonl, val.jsonl; version 1: all in state.json). */
async function readRagCheckpoint(
  dir: string,
): Promise<{ state: LoopState; corpus: string[]; train: RagExample[]; val: RagExample[]; dataIn?: string; run?: Record<string, string> } | undefined> {
  const saved = readCheckpointState<{ state: LoopState; corpus?: string[]; train?: RagExample[]; val?: RagExample[]; data?: Record<string, number>; run?: Record<string, string> }>(dir, [1, 2]);
  if (!saved) return undefined;
  if (!saved.data) return { state: saved.state, corpus: saved.corpus ?? [], train: saved.train ?? [], val: saved.val ?? [], run: saved.run };
  const { corpus, train, val } = (await readRunData(dir, saved.data)) as { corpus: string[]; train: RagExample[]; val: RagExample[] };
  return { state: saved.state, corpus, train, val, dataIn: dir, run: saved.run };
}

/**
 * Trains a retriever and a generator together on questions and answers (ContextFlow), and saves both. Each batch
 * retrieves every question's K best documents with the retriever as it was at the epoch's start (the corpus is
 * embedded again each epoch); the step then encodes the questions and those documents anew, with gradients.
 */
export async function trainRag(options: RagTrainOptions): Promise<RagTrainResult> {
  const o = checkOptions('options', options, KEYS);
  for (const key of ['retriever', 'generator', 'output'] as const) nonEmptyString(`options.${key}`, o[key]);
  const k = positiveInteger('options.k', o.k ?? 4);
  const epochs = positiveInteger('options.epochs', o.epochs ?? 1);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 4);
  // The native step takes these as float32 (as train()'s): past its range they failed there naming no option.
  const learningRate = float32('options.learningRate', positiveNumber('options.learningRate', o.learningRate, 2e-5));
  const warmupRatio = fraction('options.warmupRatio', o.warmupRatio, 0.1);
  const weightDecay = float32('options.weightDecay', fraction('options.weightDecay', o.weightDecay, 0.01, Infinity));
  const maxGradNorm = float32('options.maxGradNorm', fraction('options.maxGradNorm', o.maxGradNorm, 1, Infinity));
  const temperature = float32('options.temperature', positiveNumber('options.temperature', o.temperature, 0.05), FLOAT32_MIN_NORMAL);
  const freezeGenerator = booleanValue('options.freezeGenerator', o.freezeGenerator ?? false);
  const gradientCheckpointing = booleanValue('options.gradientCheckpointing', o.gradientCheckpointing ?? false);
  if (o.template !== undefined) checkTemplate(o.template, PLACEHOLDERS);
  const valSplit = valSplitValue('options.valSplit', o.valSplit, 0);
  const seed = numberValue('options.seed', o.seed ?? 42, (x) => Number.isSafeInteger(x) && x >= 0, `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  const checkpointEvery = o.checkpointEvery === 0 ? 0 : positiveInteger('options.checkpointEvery', o.checkpointEvery ?? 50);
  const precision = oneOf('options.precision', o.precision ?? 'float32', ['float32', 'bfloat16', 'float16'] as const);
  const resume = booleanValue('options.resume', o.resume ?? false);
  // Checked before the run: an onProgress that is not a function would fail only after the first step, and a
  // truthy overwrite such as 'no' would replace the output.
  const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
  if (o.progressBar !== undefined) booleanValue('options.progressBar', o.progressBar);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  signalOption(o.signal);
  const output = path.resolve(o.output);
  const checkpointDir = `${output}.checkpoint`;
  // Before anything is read or loaded; looked at again before the models load and at each step.
  const notStarted = () => {
    if (o.signal?.aborted) throw trainingAborted('trainRag()', checkpointDir, undefined, resume);
  };
  notStarted();
  const saved = resume ? await readRagCheckpoint(checkpointDir) : undefined;
  if (nonEmptyFolder(output, 'options.output') && !saved && !overwrite) {
    throw new ColtrastError('INVALID_ARGUMENT', `${output} is not empty: pass overwrite: true to replace it, or resume: true to continue an interrupted run`);
  }
  const data = await readRagData(o.data);
  // What shapes the steps (runIdentity): a resume with other settings or data is refused before any model loads.
  const resolved = (model: string) => (fs.existsSync(model) ? path.resolve(model) : model);
  const corpusGiven = typeof o.corpus === 'string' ? resolved(o.corpus) : o.corpus;
  // The prompt format with its defaults filled in: chat: false or the default template given is the run that left them out.
  const format = readPromptFormat(o, { plain: DEFAULT_TEMPLATE, chat: DEFAULT_CHAT_TEMPLATE }, PLACEHOLDERS);
  const settings = { retriever: resolved(o.retriever), generator: resolved(o.generator), corpus: corpusGiven, k, epochs, batchSize, learningRate, warmupRatio, weightDecay, maxGradNorm, temperature, freezeGenerator, gradientCheckpointing, template: format.template, chat: format.chat, system: format.system, valSplit, seed, precision };
  const run = await runIdentity(settings, { examples: data.examples, projects: data.projects });
  if (saved) checkSameRun(checkpointDir, saved.run, run);
  notStarted();
  const load = { device: o.device ?? ('auto' as const), ...(o.threads !== undefined && { threads: o.threads }) };
  const retriever = await Encoder.load(saved ? path.join(checkpointDir, 'retriever') : o.retriever, load);
  let generator: Generator | undefined;
  let dispose: (() => void) | undefined;
  try {
    retriever.checkNotMultiVector('ContextFlow (its retriever scores pooled vectors)');
    generator = await Generator.load(saved ? path.join(checkpointDir, 'generator') : o.generator, load);
    checkChatFormat(format, generator);
    // The corpus: given, or the ColTrast projects' documents split into semantic chunks by the retriever.
    let corpus: string[];
    if (saved) {
      corpus = saved.corpus;
    } else if (o.corpus !== undefined) {
      corpus = await readCorpus(o.corpus);
    } else if (data.projects) {
      const embedder = encoderEmbedder(retriever, o.signal);
      // Aborted while chunking: trainRag()'s "before its first step".
      const chunks = await abortedAs(Promise.all(data.projects.map((p) => semanticChunks(p.document, embedder, { threshold: 0.7, maxTokens: retriever.maxSeqLength }))), notStarted);
      corpus = [...new Set(chunks.flat())];
    } else {
      throw new ColtrastError('INVALID_ARGUMENT', 'options.corpus is required: the documents to retrieve from (a ColTrast project file brings its own)');
    }
    if (corpus.length < k) throw new ColtrastError('INVALID_ARGUMENT', `the corpus holds ${corpus.length} documents, fewer than k = ${k}`);
    const split = saved ?? (await splitByGroup(data.examples, (e, i) => e.group ?? `#${i}`, { valSplit }, seed));
    const trainSet = split.train, val = split.val;
    const trainer = await retriever.createTrainer({
      learningRate, weightDecay, seed, precision, generator: generator.nativeHandle().current(), freezeGenerator, gradientCheckpointing,
    });
    dispose = () => trainer.dispose();
    if (saved) await trainer.loadState(path.join(checkpointDir, 'trainer.safetensors'));
    const stepsPerEpoch = Math.ceil(trainSet.length / batchSize);
    const totalSteps = stepsPerEpoch * epochs;
    const gen = generator;

    // One batch's arguments: the questions, their K documents (query-major) and the generator's K sequences each.
    let corpusStore: NativeDenseStore | undefined;
    // A prompt and answer of a batch (one that fits the generator's positions), whose log-likelihood checkFinite looks at.
    let probe: { prompt: Prompt; completion: string } | undefined;
    const prepare = async (examples: RagExample[], retrieved?: number[][]) => {
      const top = retrieved ?? (await retrieve(retriever, corpusStore!, examples.map((e) => e.question), k));
      const documents = top.flatMap((ids) => ids.map((d) => corpus[d]));
      const prepared = await trainer.prepare(examples.map((e) => e.question), documents);
      const pairs = examples.flatMap((e, m) => top[m].map((d) => ({ prompt: formatPrompt(format, corpus[d], e.question), completion: formatAnswer(format, e.answer) })));
      let sequences;
      try {
        sequences = await gen.sequences(pairs);
      } catch (error) {
        const long = error instanceof ColtrastError && /^pairs\[(\d+)\] is (\d+(?: or more)?) tokens/.exec(error.message);
        if (!long) throw error;
        const question = examples[Math.floor(Number(long[1]) / k)].question;
        throw new ColtrastError(
          'INVALID_ARGUMENT',
          `the question ${JSON.stringify(question)} with one of its retrieved documents and its answer is ${long[2]} tokens, more than the generator's ${gen.maxLength} positions: shorten the corpus's documents, the template or the answer`,
        );
      }
      probe ??= pairs[0];
      return { prepared, sequences: padBatch(sequences) };
    };
    const stepOptions = (lr: number) => ({
      contrastiveWeight: 1, lateInteractionWeight: 0, temperature, symmetric: false, lateInteractionKind: 'cross_entropy' as const,
      learningRate: lr, maxGradNorm, lossScale: 1, apply: true,
    });
    const evaluate = async (examples: RagExample[]) => {
      const { prepared, sequences } = await prepare(examples);
      return trainer.evaluatePrepared(prepared, { ...stepOptions(0), rag: true, sequences, documentsPerQuery: k });
    };
    const showProgress = o.progressBar ?? process.stderr.isTTY;
    // The corpus is embedded again each epoch: a bar of its own for it (a large corpus takes a while).
    const embedAll = (signal?: AbortSignal) => {
      const corpusBar = showProgress ? new ProgressBar('corpus', 'documents') : undefined;
      return embedCorpus(retriever, corpus, corpusBar && ((done, total) => corpusBar.update(done, total)), signal);
    };
    const validate = async (): Promise<number | undefined> => {
      if (val.length === 0) return undefined;
      corpusStore = await embedAll();
      let sum = 0;
      for (let i = 0; i < val.length; i += batchSize) {
        const batch = val.slice(i, i + batchSize);
        sum += (await evaluate(batch)).loss * batch.length;
      }
      return sum / val.length;
    };

    const state: LoopState = saved?.state ?? {
      epoch: 1, batch: 0, step: 0, epochLoss: 0, shuffleState: seededRandom(seed).state(), epochSeed: 0, retrieved: [], bestLoss: null,
      result: { history: { steps: [], epochs: [] }, best: { epoch: 0 }, retrieverDir: path.join(output, 'retriever'), generatorDir: path.join(output, 'generator') },
    };
    const result = state.result;
    let dataIn = saved?.dataIn;
    // The step of the checkpoint in checkpointDir, and both models' outputs checked before anything is saved (as
    // train()'s): a step can leave weights that overflow with its own loss finite, and the models of NaNs were saved
    // as the result.
    let checkpointStep = saved?.state.step;
    const kept = () => keptNote({ output, epoch: result.best.epoch, models: 'retriever and generator', checkpointDir, checkpointStep });
    const checkFinite = async () => {
      if (!(await finiteOutputs(retriever, { query: trainSet[0].question, positive: corpus[0] }))) throw outputsDiverged("the retriever's embeddings", state.step, kept());
      // A frozen generator's weights are as loaded, and so are they when no batch was prepared since the models loaded
      // (a run resumed at an epoch's end).
      if (freezeGenerator || !probe) return;
      if (!Number.isFinite((await gen.logLikelihood([probe]))[0])) throw outputsDiverged("the generator's log-likelihoods", state.step, kept());
    };
    const checkpoint = async (position: Partial<LoopState> = {}) => {
      await checkFinite();
      await writeFolderAtomic(checkpointDir, true, async (staging) => {
        await retriever.save(path.join(staging, 'retriever'));
        await gen.save(path.join(staging, 'generator'));
        await trainer.saveState(path.join(staging, 'trainer.safetensors'));
        const data = await saveRunData(staging, { corpus, train: trainSet, val }, dataIn);
        writeJsonAtomic(path.join(staging, 'state.json'), { version: 2, state: { ...state, ...position }, data, run });
      });
      dataIn = checkpointDir;
      checkpointStep = state.step;
    };
    const saveModels = async () => {
      await writeFolderAtomic(output, true, async (staging) => {
        await retriever.save(path.join(staging, 'retriever'));
        await gen.save(path.join(staging, 'generator'));
      });
    };
    const bar = showProgress ? new ProgressBar('ContextFlow', 'steps') : undefined;
    const started = Date.now();
    const startStep = state.step;
    // options.signal, looked at between steps, where the state is one that a checkpoint holds (as train()'s).
    const stopIfAborted = async (ahead?: Promise<unknown>) => {
      if (!o.signal?.aborted) return;
      await ahead?.catch(() => undefined); // the next batch's preparation, not left running into the models' disposal
      // A checkpoint of this step (checkpointEvery's, the epoch end's: at an epoch's start, before its retrieval; or the one
      // a resumed run started from) holds this state already: said as such, also when this run took no step of its own.
      if (checkpointStep === state.step) throw trainingAborted('trainRag()', checkpointDir, state.step);
      if (state.step === startStep) throw trainingAborted('trainRag()', checkpointDir);
      await checkpoint();
      throw trainingAborted('trainRag()', checkpointDir, state.step);
    };
    for (; state.epoch <= epochs; state.epoch++, state.batch = 0, state.epochLoss = 0, state.retrieved = []) {
      // Before the epoch embeds the corpus again.
      await stopIfAborted();
      if (state.batch === 0) state.epochSeed = state.shuffleState;
      const random = seededRandom(0, state.epochSeed);
      const order = shuffle([...trainSet], random.next);
      // Every question of the epoch retrieves with the retriever as it is at the epoch's start (kept in the state:
      // a resumed epoch trains on the same documents).
      if (state.batch === 0) {
        // Stopped by an abort (the first epoch's is the work before the first step) as at the epoch's start: the state
        // is the same (a checkpoint holds it after the first epoch; before the first step, nothing is written).
        const retrieval = async () => {
          corpusStore = await embedAll(o.signal);
          state.retrieved = await retrieve(retriever, corpusStore, order.map((e) => e.question), k, o.signal);
        };
        await abortedAs(retrieval(), stopIfAborted);
      }
      // Each batch is tokenized while the step before it runs (as in train()); `ahead` is the next batch's.
      const retrieved = state.retrieved;
      const prepareBatch = (b: number) => {
        const prepared = prepare(order.slice(b * batchSize, (b + 1) * batchSize), retrieved.slice(b * batchSize, (b + 1) * batchSize));
        prepared.catch(() => undefined); // awaited (and its error thrown) by its own step
        return prepared;
      };
      let ahead = state.batch < stepsPerEpoch ? prepareBatch(state.batch) : undefined;
      for (; state.batch < stepsPerEpoch; ) {
        await stopIfAborted(ahead);
        const b = state.batch;
        const lr = learningRateAt(state.step, totalSteps, learningRate, warmupRatio, 'linear');
        const { prepared, sequences } = await ahead!;
        const running = trainer.stepPrepared(prepared, { ...stepOptions(lr), rag: true, sequences, documentsPerQuery: k });
        // Started once the step is on its way, so that its synchronous part does not delay the step.
        ahead = b + 1 < stepsPerEpoch ? prepareBatch(b + 1) : undefined;
        const r = await running.catch((error: unknown) => {
          throw stepDiverged(error, kept());
        });
        state.batch++;
        state.epochLoss += r.loss;
        const step = ++state.step;
        result.history.steps.push({ step, epoch: state.epoch, loss: r.loss, generation: r.generation ?? 0, learningRate: lr });
        if (checkpointEvery > 0 && step % checkpointEvery === 0 && state.batch < stepsPerEpoch) await checkpoint();
        const seconds = (Date.now() - started) / 1000;
        o.onProgress?.({
          step, totalSteps, epoch: state.epoch, loss: r.loss, generation: r.generation ?? 0, learningRate: lr,
          samplesPerSecond: ((step - startStep) * batchSize) / Math.max(seconds, 1e-9),
          etaSeconds: (seconds / (step - startStep)) * (totalSteps - step),
        });
        bar?.update(step, totalSteps);
      }
      // A checkpoint here resumes into this epoch's validation.
      await stopIfAborted();
      state.shuffleState = random.state();
      await checkFinite();
      const valLoss = await validate();
      result.history.epochs.push({ epoch: state.epoch, trainLoss: state.epochLoss / stepsPerEpoch, ...(valLoss !== undefined && { valLoss }) });
      // The kept models: the best validation loss's, or the last epoch's without a validation split.
      if (valLoss === undefined || state.bestLoss === null || valLoss < state.bestLoss) {
        state.bestLoss = valLoss ?? null;
        result.best = { epoch: state.epoch, ...(valLoss !== undefined && { valLoss }) };
        await saveModels();
      }
      if (state.epoch < epochs) await checkpoint({ epoch: state.epoch + 1, batch: 0, epochLoss: 0, retrieved: [] });
    }
    const config = { retriever: o.retriever, generator: o.generator, k, epochs, batchSize, learningRate, warmupRatio, weightDecay, maxGradNorm, temperature, freezeGenerator, gradientCheckpointing, ...format, valSplit, seed, precision };
    writeJsonAtomic(path.join(output, 'rag_history.json'), { method: 'ContextFlow (RAG-Sequence marginal likelihood)', config, ...result });
    writeTextAtomic(
      path.join(output, 'training_curves.svg'),
      trainingCurvesSvg({
        history: {
          steps: result.history.steps.map((s) => ({ ...s, contrastive: 0, lateInteraction: 0, distillation: 0 })),
          epochs: result.history.epochs,
        },
      }),
    );
    writeTextAtomic(path.join(output, 'README.md'), ragCard(result, config, typeof o.data === 'string' ? o.data : `${o.data.length} in-memory examples`, corpus.length));
    await removeFolder(checkpointDir);
    return result;
  } finally {
    dispose?.();
    generator?.dispose();
    retriever.dispose();
  }
}

/** The output folder's README: what was trained, from what, how, and the losses per epoch. */
function ragCard(result: RagTrainResult, config: Record<string, unknown>, data: string, documents: number): string {
  const rows = result.history.epochs.map((e) => `| ${e.epoch} | ${e.trainLoss.toFixed(4)} | ${e.valLoss === undefined ? '-' : e.valLoss.toFixed(4)} |`);
  return [
    '# ContextFlow: a retriever and a generator trained together (coltrast)',
    '',
    `Retriever \`${String(config.retriever)}\` (in \`retriever/\`, a sentence-transformers folder) and generator \`${String(config.generator)}\``,
    `(in \`generator/\`, a Hugging Face *ForCausalLM folder${config.freezeGenerator ? ', frozen: unchanged' : ''}), trained on ${data} with ${documents} documents to retrieve from,`,
    `on the RAG-Sequence marginal likelihood over each question's ${String(config.k)} retrieved documents. Epoch ${result.best.epoch} is kept.`,
    '',
    '| epoch | train loss | validation loss |',
    '| --- | --- | --- |',
    ...rows,
    '',
    '```json',
    JSON.stringify(config, null, 2),
    '```',
    '',
    "Use: `Rag.create({ retriever: await Encoder.load('retriever'), generator: await Generator.load('generator'), corpus })`, then",
    '`rag.answer([question])`; or `coltrast ask "question" --retriever retriever --generator generator --corpus docs.txt`.',
    '',
  ].join('\n');
}

export interface RagAnswer {
  answer: string;
  /** The marginal log p(answer | question) = log Σ_k p(z_k | question) p(answer | f(z_k, question)). */
  logLikelihood: number;
  /** The retrieved documents, best first, with the retriever's p(z | question) over them. */
  sources: { index: number; text: string; probability: number }[];
}

export interface AnswerOptions {
  /** Documents retrieved per question (default 4). */
  k?: number;
  maxNewTokens?: number;
  /** Beams of the search from each document (default 1: greedy); RAG's thorough decoding runs beam search there. */
  numBeams?: number;
  /**
   * Stops answering when aborted: the generation under way stops at its next step (Generator.generate's signal), no
   * further question is started, and answer() rejects with an ABORTED error.
   */
  signal?: AbortSignal;
}

const ANSWER_KEYS = ['k', 'maxNewTokens', 'numBeams', 'signal'] as const;

const answerAborted = () => new ColtrastError('ABORTED', 'answering was aborted (options.signal)');

function checkQuestions(questions: unknown): void {
  if (!Array.isArray(questions) || questions.some((q) => typeof q !== 'string')) throw invalid('questions', 'an array of strings', questions);
}

/** A retriever, a generator and a corpus: questions in, answers with their sources out (RAG-Sequence decoding). */
export class Rag {
  private constructor(
    readonly retriever: Encoder,
    readonly generator: Generator,
    private readonly corpus: string[],
    private readonly store: NativeDenseStore,
    private readonly format: PromptFormat,
    private readonly temperature: number,
  ) {}

  /** The corpus's size. */
  get documents(): number {
    return this.corpus.length;
  }

  /** Embeds `corpus` with the retriever. The retriever and generator stay the caller's (dispose them yourself). */
  static async create(options: {
    retriever: Encoder;
    generator: Generator;
    corpus: RagTrainOptions['corpus'];
    template?: string;
    chat?: boolean;
    system?: string;
    temperature?: number;
    /** Called as the corpus is embedded, with documents done and the total. */
    onProgress?: (done: number, total: number) => void;
    /**
     * Stops the corpus's embedding when aborted: looked at before each batch is sent to the retriever (as embed()
     * does; the batch running and the one queued behind it finish), and before the corpus is read. create() then
     * rejects with ABORTED.
     */
    signal?: AbortSignal;
  }): Promise<Rag> {
    const o = checkOptions('options', options, ['retriever', 'generator', 'corpus', 'template', 'chat', 'system', 'temperature', 'onProgress', 'signal'] as const);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
    if (!(o.retriever instanceof Encoder)) throw invalid('options.retriever', 'an Encoder', o.retriever);
    if (!(o.generator instanceof Generator)) throw invalid('options.generator', 'a Generator', o.generator);
    const signal = signalOption(o.signal);
    const format = readFormat(o, o.generator);
    const temperature = positiveNumber('options.temperature', o.temperature, 0.05);
    // Options are checked first (their mistakes are said as such); aborted already, not even a corpus file is read.
    if (signal?.aborted) throw new ColtrastError('ABORTED', 'Rag.create() was aborted (options.signal) before it embedded the corpus');
    const corpus = await readCorpus(o.corpus);
    let done = 0;
    const progress = (d: number, total: number) => {
      done = d;
      o.onProgress?.(d, total);
    };
    // Said as create()'s abort, with how far the corpus got, not as the embed() call's under it.
    const store = await abortedAs(embedCorpus(o.retriever, corpus, progress, signal), () => {
      throw new ColtrastError('ABORTED', `Rag.create() was aborted (options.signal) after embedding ${done} of ${corpus.length} documents`);
    });
    return new Rag(o.retriever, o.generator, corpus, store, format, temperature);
  }

  /**
   * Answers each question: its k best documents, an answer from each (greedy, or the best of a beam search), and the
   * answer whose marginal likelihood over the k documents is highest.
   */
  async answer(questions: string[], options?: AnswerOptions): Promise<RagAnswer[]> {
    const o = checkOptions('options', options, ANSWER_KEYS);
    signalOption(o.signal);
    checkQuestions(questions);
    if (o.signal?.aborted) throw answerAborted();
    const out = await this.answerEach(questions, { k: o.k, maxNewTokens: o.maxNewTokens, numBeams: o.numBeams }, questions.map(() => o.signal));
    const stopped = out.find((a): a is ColtrastError => a instanceof ColtrastError);
    if (stopped) throw stopped;
    return out as RagAnswer[];
  }

  /**
   * @internal Each question's prompt with an empty document, in tokens as the generator reads it (cut at its
   * maxLength): a document only adds to it, so a question at maxLength here fits with no document, and the server's
   * /ask refuses it before retrieving for it and tokenizing its k prompts (answerEach's check, with each document,
   * stays). `signal` as Generator.promptLengths'.
   */
  async questionLengths(questions: string[], signal?: AbortSignal): Promise<number[]> {
    return this.generator.promptLengths(questions.map((question) => formatPrompt(this.format, '', question)), signal);
  }

  /**
   * @internal The server's /ask, whose questions come from several clients: `signals[i]` is question i's (its
   * client's). An aborted question is not answered (its generation stops at its next step) and its place holds an
   * ABORTED error; the others are answered as answer() answers them.
   */
  async answerEach(questions: string[], options: Omit<AnswerOptions, 'signal'> | undefined, signals: (AbortSignal | undefined)[]): Promise<(RagAnswer | ColtrastError)[]> {
    const o = checkOptions('options', options, ANSWER_KEYS.filter((key) => key !== 'signal'));
    checkQuestions(questions);
    const k = Math.min(positiveInteger('options.k', o.k ?? 4), this.corpus.length);
    if (questions.every((_, i) => signals[i]?.aborted)) return questions.map(() => answerAborted());
    const top = await retrieveScored(this.retriever, this.store, questions, k);
    const out: (RagAnswer | ColtrastError)[] = [];
    for (const [i, question] of questions.entries()) {
      const signal = signals[i];
      // Checked again after each model call: the calls without a signal of their own (retrieval, scoring) run to their end.
      const gone = () => signal?.aborted === true;
      if (gone()) {
        out.push(answerAborted());
        continue;
      }
      const { ids, scores } = top[i];
      const cos = scores.map((s) => s / this.temperature);
      const max = Math.max(...cos);
      const norm = Math.log(cos.reduce((sum, c) => sum + Math.exp(c - max), 0)) + max;
      const logP = cos.map((c) => c - norm);
      const prompts = ids.map((d) => formatPrompt(this.format, this.corpus[d], question));
      const positions = this.generator.maxLength;
      // Each document's prompt must leave the generator a position to generate in; one that does not is named here by
      // its question and document (generate() would name its own prompts[z]).
      const promptLengths = await this.generator.promptLengths(prompts);
      promptLengths.forEach((length, z) => {
        if (length >= positions) {
          throw new ColtrastError(
            'INVALID_ARGUMENT',
            `questions[${i}] with document ${ids[z]} of the corpus is ${length} tokens or more, leaving none of the generator's ${positions} positions to generate in: shorten the corpus's documents, the template or the question`,
          );
        }
      });
      let candidates: Generated[];
      try {
        candidates = await this.generator.generate(prompts, { maxNewTokens: o.maxNewTokens ?? 64, numBeams: o.numBeams, ...(signal && { signal }) });
      } catch (error) {
        if (!gone()) throw error;
        out.push(answerAborted());
        continue;
      }
      if (gone()) {
        out.push(answerAborted());
        continue;
      }
      const texts = [...new Set(candidates.map((c) => c.text.trim()))];
      // An answer that, with its end-of-sequence token, does not fit the positions after a document's prompt (one cut at
      // the model's length, or scored after a longer document's prompt) has probability 0 there, as a sequence the
      // model cannot read; only the others are scored (logLikelihood() refuses a pair that does not fit).
      const answerLengths = await this.generator.completionLengths(texts.map((t) => formatAnswer(this.format, t)));
      const pairs = texts.flatMap((t, c) => prompts.map((prompt, z) => ({ prompt, completion: formatAnswer(this.format, t), fits: promptLengths[z] + answerLengths[c] + 1 <= positions })));
      const scored = await this.generator.logLikelihood(pairs.filter((p) => p.fits).map(({ prompt, completion }) => ({ prompt, completion })));
      if (gone()) {
        out.push(answerAborted());
        continue;
      }
      let next = 0;
      const ll = pairs.map((p) => (p.fits ? scored[next++] : -Infinity));
      let best = { answer: '', logLikelihood: -Infinity };
      texts.forEach((t, c) => {
        const terms = prompts.map((_, z) => logP[z] + ll[c * prompts.length + z]);
        const m = Math.max(...terms);
        const marginal = m === -Infinity ? -Infinity : m + Math.log(terms.reduce((sum, x) => sum + Math.exp(x - m), 0));
        if (marginal > best.logLikelihood) best = { answer: t, logLikelihood: marginal };
      });
      if (best.logLikelihood === -Infinity) {
        throw new ColtrastError(
          'INVALID_ARGUMENT',
          `questions[${i}]: no answer generated from its documents fits the generator's ${positions} positions after their prompts with its end-of-sequence token: lower maxNewTokens, or shorten the corpus's documents or the template`,
        );
      }
      out.push({ ...best, sources: ids.map((d, z) => ({ index: d, text: this.corpus[d], probability: Math.exp(logP[z]) })) });
    }
    return out;
  }
}
