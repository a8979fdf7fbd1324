/**
 * `CrossEncoder`: a reranker that reads a query and a document together and scores the pair, loaded from a
 * sentence-transformers CrossEncoder folder or any Hugging Face *ForSequenceClassification folder (BERT family, and
 * decoder LLMs: Qwen3-Reranker and the like, their *ForSequenceClassification or their causal LM scored by
 * sentence-transformers' LogitScore), or a hub id. It runs like `Encoder`: natively, off the JS thread, batches sorted by
 * length.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Matrix } from './encoder';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { ChatTemplate } from './chat-template';
import {
  asNewCrossEncoder, asNewDecoderReranker, DECODER_SEQUENCE_CLASSIFICATION, isCausalDecoder, isCrossEncoderFolder, messageFormat, namedPrompt, readChatTemplate, readJson, readModelDirectory, SEQUENCE_CLASSIFICATION,
  writeModelFiles, type CrossEncoderConfig, type DecoderRerankerStart, type ModelDirectory,
} from './model-dir';

export type { DecoderRerankerStart } from './model-dir';
import { ADAPTER_DIR, SEQ_CLS_MODULES, adapterBaseModel, addAdapters, isAdapterOnlyFolder, loadAdapter, saveAdapter, type AdapterBase, type LoraConfig } from './lora';
import { DTYPES, ModelHandle, applyQuantize, bindTrainer, checkQuantize, loadNative, quantizeOption, resolveLoad, tokenizeAhead, tokenizeInBatches, type DType, type LoadOptions, type ModelTrainer, type Quantize } from './native-model';
import { fromNative, type NativeEncoder, type NativeTrainerOptions, type PaddedBatch } from './native';
import { TextTokenizer, padBatch, type TokenizedText } from './tokenizer';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger, signalOption } from './validate';

/** What predict() applies to the logits: the model's own activation ('default'), or one named here. */
export type ScoreActivation = 'default' | 'sigmoid' | 'identity' | 'tanh' | 'softmax';
const ACTIVATIONS: readonly ScoreActivation[] = ['default', 'sigmoid', 'identity', 'tanh', 'softmax'];

export interface PredictOptions {
  /** Pairs per forward pass (default 32). Pairs are sorted by length first, so padding is small. */
  batchSize?: number;
  /**
   * 'default': the model's activation (sentence-transformers' activation_fn: Sigmoid for a one-label reranker
   * unless the model saved another). 'identity' gives the raw logits; 'softmax' normalizes each row of a
   * multi-label model.
   */
  activation?: ScoreActivation;
  /** Called after each batch with pairs done so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * A prompt (an instruction): put before each query, or for a reranker on a decoder LLM given to its chat template as
   * a "system" message, as sentence-transformers does. Default: the model's default prompt, if it names one.
   */
  prompt?: string;
  /** One of the model's named prompts (`prompts`) instead. */
  promptName?: string;
  /** Stops the call when aborted: looked at before each batch is sent to the model (the one running and the one queued behind it finish); it rejects with ABORTED. */
  signal?: AbortSignal;
}

/**
 * @internal A pair tokenized ahead as predict() would feed it to the model (CrossEncoder.preparePairs): the server
 * tokenizes each /rerank request as it arrives, before its batch queue. Opaque.
 */
export interface PreparedPair {
  readonly input: TokenizedText;
  /** The pair's length: predict() orders the pairs it tokenizes ahead by it, a prepared pair's batches the same. */
  readonly characters: number;
  /** The CrossEncoder and prompt it was prepared for: predicting it under others is refused. */
  readonly model: CrossEncoder;
  readonly prompt: string | undefined;
}

export interface RankOptions extends PredictOptions {
  /** Keep the best `topK` documents (default: all of them, best first). */
  topK?: number;
  /** Put each document's text in its result (default false). */
  returnDocuments?: boolean;
}

/** One ranked document: its index in the documents given to rank(), its score and, if asked, its text. */
export interface Ranked {
  index: number;
  score: number;
  text?: string;
}

/** @internal A cross-encoder's training batch: every query with every document, tokenized and padded. */
export interface PreparedPairs {
  pairs: PaddedBatch;
  documentsPerQuery: number;
  tokenizeSeconds: number;
}

/** How train({ crossEncoder }) trains a cross-encoder (see TrainOptions.crossEncoder). */
export interface CrossEncoderLoss {
  kind: 'cross_entropy' | 'bce';
  scale: number;
}

/** CrossEncoder.load's options: LoadOptions and a LoRA adapter. */
export interface CrossEncoderLoadOptions extends LoadOptions {
  /**
   * A PEFT LoRA adapter folder made on this model for sequence classification (task_type SEQ_CLS: adapter_config.json,
   * adapter_model.safetensors with the adapters and the classification head it trained, its modules_to_save): its
   * adapters are added to the model's projections and its head replaces the model's, as PEFT's
   * `PeftModel.from_pretrained` does on `AutoModelForSequenceClassification`; `save()` writes the merged weights with
   * the adapter beside them. With an adapter, `model` may also be the embedding model a cross-encoder was trained on
   * with LoRA (train({ crossEncoder: true, lora }) from an embedding model), whose adapter holds the whole new head.
   */
  adapter?: string;
  /**
   * false: load `adapter` even when it records another base model than this one (coltrast records the base an
   * adapter was trained on in its adapter_model.safetensors, and refuses it on a base whose adapted weights differ).
   * Default true; an adapter without the record (PEFT's own) is not checked.
   */
  checkAdapterBase?: boolean;
  /**
   * A decoder LLM's *ForCausalLM folder (one without a reranker's configs, such as Qwen/Qwen3-Reranker-0.6B as published)
   * as a reranker scored by LogitScore on `tokens` (default ['yes', 'no']), each pair rendered by `chatTemplate` (Jinja
   * over "query" and "document" messages and a "system" one holding the prompt; default the folder's own; one token:
   * its logit alone, LogitScore's false_token_id null), as
   * sentence-transformers' `CrossEncoder(model, processor_kwargs={"chat_template": ...})` runs it. For Qwen3-Reranker:
   * `QWEN3_RERANKER_TEMPLATE`.
   */
  chatTemplate?: string;
  tokens?: [string] | [string, string];
  /**
   * 'int8': the transformer's projections run in int8 on the CPU (EncoderLoadOptions.quantize has the details); the
   * head (pooler, classifier, or a LogitScore reranker's token rows) stays float32. For inference: training it and
   * save() are refused.
   */
  quantize?: Quantize;
}

/**
 * Qwen3-Reranker's prompt as a chat template over "query" and "document" messages (and a "system" message holding the
 * instruction, else its default one), for `CrossEncoder.load('Qwen/Qwen3-Reranker-0.6B', { chatTemplate })`: the model
 * card's system turn, `<Instruct>: …\n<Query>: …\n<Document>: …` as the user's turn, and an opened assistant turn with an
 * empty think block, whose next token the reranker scores ("yes" against "no").
 */
export const QWEN3_RERANKER_TEMPLATE =
  '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. ' +
  'Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: ' +
  "{{ messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first | default('Given a web search query, retrieve relevant passages that answer the query') }}\n" +
  "<Query>: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n" +
  "<Document>: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}<|im_end|>\n" +
  // The last newlines as an expression: Jinja drops a template's final newline (transformers' Jinja too).
  "<|im_start|>assistant\n<think>\n\n</think>{{ '\\n\\n' }}";

/** chatTemplate and tokens (for a reranker made of a causal LM) checked; undefined when neither is given. */
export function readDecoderStart(o: { chatTemplate?: unknown; tokens?: unknown }, where: string): DecoderRerankerStart | undefined {
  if (o.chatTemplate === undefined && o.tokens === undefined) return undefined;
  if (o.chatTemplate !== undefined && (typeof o.chatTemplate !== 'string' || o.chatTemplate.length === 0)) {
    throw invalid(`${where}.chatTemplate`, 'a Jinja chat template over "query" and "document" messages', o.chatTemplate);
  }
  const tokens = o.tokens;
  if (tokens !== undefined && !(Array.isArray(tokens) && (tokens.length === 1 || tokens.length === 2) && tokens.every((x) => typeof x === 'string' && x.length > 0))) {
    throw invalid(`${where}.tokens`, 'the true and false tokens, e.g. ["yes", "no"], or the true one alone', tokens);
  }
  return { ...(o.chatTemplate !== undefined && { chatTemplate: o.chatTemplate as string }), ...(tokens !== undefined && { tokens: tokens as [string] | [string, string] }) };
}

const PREDICT_KEYS = ['batchSize', 'activation', 'onProgress', 'prompt', 'promptName', 'signal'] as const;
const RANK_KEYS = [...PREDICT_KEYS, 'topK', 'returnDocuments'] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;

function checkPairs(pairs: unknown): asserts pairs is [string, string][] {
  if (!Array.isArray(pairs)) throw invalid('pairs', 'an array of [text, text] pairs', pairs);
  // By index, not forEach, which skips the holes of a sparse array (new Array(2)): they reached the tokenizer.
  for (let i = 0; i < pairs.length; i++) {
    const p: unknown = pairs[i];
    if (!Array.isArray(p) || p.length !== 2) throw invalid(`pairs[${i}]`, 'a [string, string] pair', p);
    // The element that is not a string, by its place: "pairs[0][1] must be a string, got number 5".
    for (let j = 0; j < 2; j++) {
      if (typeof p[j] !== 'string') throw invalid(`pairs[${i}][${j}]`, `a string (pairs[${i}] is a [query, document] pair of texts)`, p[j]);
    }
  }
}

export class CrossEncoder {
  private readonly model: ModelHandle;
  private loraConfig: LoraConfig | undefined;
  /** A decoder reranker's tail tokens of its chat template (pairTemplate), per prompt. */
  private readonly suffixes = new Map<string, number[]>();

  private constructor(
    handle: NativeEncoder,
    private readonly files: ModelDirectory & { crossEncoder: CrossEncoderConfig },
    private readonly tokenizer: TextTokenizer,
    /** The device the model runs on, e.g. 'cpu' or 'cuda:0'. */
    readonly device: string,
    readonly dtype: DType,
    /** A decoder reranker's chat template (checked to carry a pair), which puts each pair into one prompt. */
    private readonly pairTemplate: PairTemplate | undefined,
  ) {
    this.model = new ModelHandle(handle, 'CrossEncoder');
  }

  /**
   * Loads a cross-encoder folder (sentence-transformers' CrossEncoder, or a Hugging Face
   * *ForSequenceClassification model with safetensors weights) or a Hugging Face id such as
   * `cross-encoder/ms-marco-MiniLM-L6-v2`.
   */
  static async load(model: string, options?: CrossEncoderLoadOptions): Promise<CrossEncoder> {
    const { adapter, chatTemplate, tokens, checkAdapterBase, quantize, ...loadOptions } = options ?? {};
    const int8 = quantizeOption(quantize);
    if (adapter !== undefined && (typeof adapter !== 'string' || adapter.length === 0)) throw invalid('options.adapter', 'a PEFT adapter folder', adapter);
    const checkBase = booleanValue('options.checkAdapterBase', checkAdapterBase ?? true);
    const start = readDecoderStart({ chatTemplate, tokens }, 'options');
    const { dir, device, dtype } = await resolveLoad(model, loadOptions);
    checkQuantize(int8, device, dtype);
    // A folder holding only an adapter (sentence-transformers' save of a CrossEncoder with one: the adapter with its
    // head in modules_to_save, the tokenizer, no config.json or weights): its base, which adapter_config.json names,
    // with it; as load(base, { adapter: dir }).
    if (isAdapterOnlyFolder(dir) && adapter === undefined) {
      return CrossEncoder.load(adapterBaseModel(dir), { ...options, adapter: dir });
    }
    // With an adapter, `model` may be the embedding model a cross-encoder was trained on with LoRA: the adapter holds the
    // head. With a template or tokens, a causal LM becomes a reranker.
    // Quantized as it loads unless an adapter is to be merged in first (applyQuantize below, after it).
    const atLoad = int8 !== undefined && adapter === undefined;
    const loaded =
      start || (adapter !== undefined && !isCrossEncoderFolder(dir))
        ? await CrossEncoder.openFolder(dir, device, dtype, 0, adapter, start, checkBase, atLoad)
        : await CrossEncoder.withAdapter(await CrossEncoder.open(readModelDirectory(dir, 'cross-encoder'), device, dtype, undefined, atLoad), adapter, false, checkBase);
    await applyQuantize(loaded.model, int8, () => loaded.dispose());
    return loaded;
  }

  /** 'int8' when loaded with CrossEncoderLoadOptions.quantize (the projections run in int8 on the CPU); undefined otherwise. */
  get quantize(): Quantize | undefined {
    return this.model.quantized;
  }

  /**
   * @internal For train({ crossEncoder }): a cross-encoder folder as load() reads it, or an embedding model's
   * folder (coltrast's default model, a BERT) as a new one-label cross-encoder on its encoder, with a new seeded
   * head (sentence-transformers' CrossEncoder(model) does the same).
   */
  static async loadForTraining(model: string, options: LoadOptions, seed: number, adapter?: string, start?: DecoderRerankerStart): Promise<CrossEncoder> {
    const { dir, device, dtype } = await resolveLoad(model, options);
    return CrossEncoder.openFolder(dir, device, dtype, seed, adapter, start);
  }

  /**
   * A cross-encoder folder; a decoder LLM's *ForCausalLM as a new LogitScore reranker (`start`: its template and tokens);
   * or an embedding model's as a new one-label cross-encoder (a head drawn from `seed`); with `adapter` added.
   */
  private static async openFolder(
    dir: string,
    device: string,
    dtype: DType,
    seed: number,
    adapter: string | undefined,
    start?: DecoderRerankerStart,
    checkBase = true,
    quantizeInt8 = false,
  ): Promise<CrossEncoder> {
    const configPath = path.join(dir, 'config.json');
    const causal = fs.existsSync(configPath) && isCausalDecoder(readJson(configPath, 'config.json'));
    const reranker = isCrossEncoderFolder(dir);
    if (start && (reranker || !causal)) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `chatTemplate and tokens make a reranker of a decoder LLM's *ForCausalLM folder; ${dir} is ${reranker ? 'a reranker already (its template and tokens are its own)' : 'not one'}`,
      );
    }
    if (reranker) return CrossEncoder.withAdapter(await CrossEncoder.open(readModelDirectory(dir, 'cross-encoder'), device, dtype, undefined, quantizeInt8), adapter, false, checkBase);
    if (causal) {
      return CrossEncoder.withAdapter(await CrossEncoder.open(asNewDecoderReranker(readModelDirectory(dir, 'cross-encoder'), start), device, dtype, undefined, quantizeInt8), adapter, false, checkBase);
    }
    return CrossEncoder.withAdapter(await CrossEncoder.open(asNewCrossEncoder(readModelDirectory(dir)), device, dtype, seed, quantizeInt8), adapter, true, checkBase);
  }

  /**
   * `model` with the adapter in folder `adapter` added (none: as it is); disposed if that fails. On a new head
   * (`newHead`), the adapter must hold all of it: the classifier and the new modules, in its modules_to_save. `checkBase`:
   * an adapter that records another base model is refused (CrossEncoderLoadOptions.checkAdapterBase).
   */
  private static async withAdapter(model: CrossEncoder, adapter: string | undefined, newHead = false, checkBase = true): Promise<CrossEncoder> {
    if (adapter === undefined) return model;
    try {
      const config = await loadAdapter(model.model, path.resolve(adapter), 'cross-encoder', checkBase ? model.baseWeights() : undefined);
      const missing = newHead ? model.loraHeadModules.filter((m) => m !== 'score' && !config.modulesToSave.some((saved) => m.endsWith(saved))) : [];
      if (missing.length > 0) {
        throw new ColtrastError(
          'INVALID_ARGUMENT',
          `${model.modelDir} is not a cross-encoder, and the adapter ${adapter} does not hold a classification head for it (its modules_to_save lacks ` +
            `${missing.join(', ')}): load a cross-encoder folder with it, or an adapter train({ crossEncoder: true, lora }) made on this model`,
        );
      }
      model.loraConfig = config;
    } catch (error) {
      model.dispose();
      throw error;
    }
    return model;
  }

  /** `quantizeInt8`: the projections quantized as they load (loadNative's; CrossEncoderLoadOptions.quantize without an adapter). */
  private static async open(files: ModelDirectory, device: string, dtype: DType, newHeadSeed?: number, quantizeInt8 = false): Promise<CrossEncoder> {
    if (!files.crossEncoder) throw new ColtrastError('UNSUPPORTED_MODEL', `${files.dir} is not a cross-encoder`);
    const modelType = String(files.config.model_type);
    const decoder = files.crossEncoder.decoder;
    if (!(modelType in SEQUENCE_CLASSIFICATION) && (!decoder || newHeadSeed !== undefined)) {
      // Its head reads the first token; a decoder's first token sees nothing after it (a decoder's reranker, which reads
      // the last one, loads from a reranker's folder).
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `${files.dir} is a ${modelType} model; coltrast's cross-encoders run on ${Object.keys(SEQUENCE_CLASSIFICATION).join(', ')} models` +
          (decoder || !(modelType in DECODER_SEQUENCE_CLASSIFICATION) ? '' : ` (a reranker on a ${modelType} decoder starts from its *ForCausalLM folder)`),
      );
    }
    const pairTemplate = decoder?.chat ? checkedPairTemplate(files.dir, files.chatTemplate ?? readChatTemplate(files.transformerDir), files.chatTemplate !== undefined) : undefined;
    const tokenizer = await TextTokenizer.load(files.tokenizerPath, files.maxSeqLength, files.lowercase);
    let ce = files.crossEncoder;
    let head: Parameters<typeof loadNative>[3];
    if (decoder?.logitScore) {
      const { trueToken, falseToken } = decoder.logitScore;
      const named = [trueToken, ...(falseToken === null ? [] : [falseToken])];
      const found = await tokenizer.tokenToIds(named.map((token) => (typeof token === 'number' ? '' : token)));
      const tokens = named.map((token, i) => {
        const id = typeof token === 'number' ? token : found[i];
        if (id === null) {
          throw new ColtrastError(
            'MODEL_FILES',
            `${files.dir}: the tokenizer has no '${token}' token, which sentence-transformers scores a causal LM with by default: give the folder a ` +
              "modules.json of Transformer and LogitScore whose config.json names the true and false token ids (or, training a reranker from it, " +
              'options.crossEncoder.tokens)',
          );
        }
        return id;
      });
      // The ids as resolved, for save().
      ce = { ...ce, decoder: { ...decoder, logitScore: { trueToken: tokens[0], falseToken: tokens[1] ?? null } } };
      head = { head: 'causal-lm', tieWordEmbeddings: files.config.tie_word_embeddings === true, scoreTokens: tokens };
    } else {
      head = { head: 'sequence-classification', numLabels: ce.numLabels, ...(newHeadSeed !== undefined && { newHead: true, seed: newHeadSeed }) };
    }
    const handle = await loadNative(files, device, dtype, { ...head, ...(quantizeInt8 && { quantizeInt8 }) });
    return new CrossEncoder(handle, { ...files, crossEncoder: ce }, tokenizer, handle.info().device, dtype, pairTemplate);
  }

  /**
   * @internal Optimizer state bound to this model, for lib/train.ts: a step reads every query of the batch with
   * every document ([queries × documents] pairs, query i's positive being document i) and trains the model on
   * `loss` over each query's row of scores.
   */
  createTrainer(options: NativeTrainerOptions, loss: CrossEncoderLoss, labeled = false): ModelTrainer<PreparedPairs> {
    if (this.numLabels !== 1) {
      throw new ColtrastError('INVALID_ARGUMENT', `${this.modelDir} has ${this.numLabels} labels; train({ crossEncoder }) trains one-label rerankers (a relevance score per pair)`);
    }
    const prepare = async (queries: string[], documents: string[]): Promise<PreparedPairs> => {
      const started = performance.now();
      // As sentence-transformers' trainer reads pairs: the model's own format, without a prompt unless given one.
      // Labeled pairs (`labeled`): query i with document i alone; else every query with every document.
      const texts = labeled ? queries.map((q, i): [string, string] => [q, documents[i]]) : queries.flatMap((q) => documents.map((d): [string, string] => [q, d]));
      const pairs = await this.tokenizePairs(texts, undefined);
      return { pairs: padBatch(pairs), documentsPerQuery: labeled ? 1 : documents.length, tokenizeSeconds: (performance.now() - started) / 1000 };
    };
    return bindTrainer(this.model, options, prepare, (batch, stepOptions) => ({
      pairs: batch.pairs,
      documentsPerQuery: batch.documentsPerQuery,
      ...stepOptions,
      crossEncoder: true,
      crossEncoderLoss: loss.kind,
      scoreActivation: this.activation === 'identity' ? 'identity' : 'sigmoid',
      scale: loss.scale,
    }));
  }

  /** The model's LoRA adapter (train's `lora`, or load's `adapter`), if it has one. */
  get lora(): LoraConfig | undefined {
    return this.loraConfig;
  }

  /**
   * @internal The head modules that train with LoRA adapters (PEFT's modules_to_save): the classifier, as PEFT's
   * sequence classification has it, and the head's dense layer (and norm) when they are new, not the base model's.
   */
  get loraHeadModules(): string[] {
    return [...SEQ_CLS_MODULES, ...this.model.current().info().newHeadModules];
  }

  /**
   * @internal What a LoRA adapter of this model is to PEFT: a sequence-classification one with the head modules that
   * train beside the adapters, or for a LogitScore reranker a causal-LM one (its score is the output layer's, which
   * stays as it is).
   */
  get loraTask(): { taskType: string; modulesToSave: string[] } {
    if (this.files.crossEncoder.decoder?.logitScore) return { taskType: 'CAUSAL_LM', modulesToSave: [] };
    return { taskType: 'SEQ_CLS', modulesToSave: this.loraHeadModules };
  }

  /**
   * The safetensors files the model's weights were read from, and their folder: the base its adapter was added to (a
   * cross-encoder's base weights do not change before its adapter is), which save() records in the adapter.
   */
  private baseWeights(): AdapterBase {
    return { dir: path.dirname(this.files.weightsPath), files: this.files.weightShards ?? [this.files.weightsPath] };
  }

  /** @internal New LoRA adapters (train({ crossEncoder, lora })): from then on only they and the head modules config.modulesToSave names train. */
  async addLora(config: LoraConfig, seed: number): Promise<void> {
    if (this.loraConfig) throw new ColtrastError('INVALID_ARGUMENT', `${this.modelDir} already has a LoRA adapter (train() trains it)`);
    await addAdapters(this.model, config, seed);
    this.loraConfig = config;
  }

  /** config.json's model_type. */
  get modelType(): string {
    return String(this.files.config.model_type);
  }

  /** Outputs per pair: 1 for a reranker's relevance score. */
  get numLabels(): number {
    return this.files.crossEncoder.numLabels;
  }
  /** config.json's label names, in output order. */
  get labels(): readonly string[] {
    return this.files.crossEncoder.labels;
  }
  /** What predict() applies to the logits by default. */
  get activation(): CrossEncoderConfig['activation'] {
    return this.files.crossEncoder.activation;
  }
  /** The model's named prompts (config_sentence_transformers.json), which predict()'s promptName picks from. */
  get prompts(): Readonly<Record<string, string>> {
    return this.files.prompts;
  }
  /** The prompt predict() uses when given none, if the model names one. */
  get defaultPromptName(): string | null {
    return this.files.defaultPromptName;
  }
  /** @internal The model's tokenizer, for the server's /tokenize and /decode (lib/serve.ts); DISPOSED after dispose(). */
  get textTokenizer(): TextTokenizer {
    this.model.current();
    return this.tokenizer;
  }
  /**
   * Longer pairs are cut to this many tokens (special tokens included): the longer text first; a decoder reranker's
   * rendered prompt at its end, the template's tail then written back over its last tokens, as sentence-transformers does.
   */
  get maxSeqLength(): number {
    return this.files.maxSeqLength;
  }
  /** The folder the model was read from. */
  get modelDir(): string {
    return this.files.dir;
  }

  /**
   * Scores each (query, document) pair: `{ dims: [pairs.length, numLabels], data }`; for a one-label reranker,
   * `data` holds one score per pair, in input order.
   */
  async predict(pairs: [string, string][], options?: PredictOptions): Promise<Matrix> {
    return this.model.use((handle) => this.predictWith(handle, pairs, options));
  }

  /**
   * @internal Tokenizes `pairs` as predict() of the same prompt options would, for predictPrepared to score later:
   * the server tokenizes each request as it arrives, before its batch queue, so that a short request is never
   * batched behind the tokenizing of huge ones. `signal` aborted, the pairs not yet sent to the tokenizer never are,
   * and it rejects ABORTED.
   */
  async preparePairs(pairs: [string, string][], options?: Pick<PredictOptions, 'prompt' | 'promptName' | 'signal'>): Promise<PreparedPair[]> {
    this.model.current();
    const o = checkOptions('options', options, ['prompt', 'promptName', 'signal'] as const);
    checkPairs(pairs);
    const signal = signalOption(o.signal);
    const prompt = this.resolvePrompt(o.prompt, o.promptName);
    const inputs = await this.tokenizePairs(pairs, prompt, signal);
    return inputs.map((input, i) => ({ input, characters: pairs[i][0].length + pairs[i][1].length, model: this, prompt }));
  }

  /** @internal predict() of pairs tokenized ahead by preparePairs() with the same prompt: the call only pads and runs them. */
  async predictPrepared(prepared: PreparedPair[], options?: PredictOptions): Promise<Matrix> {
    return this.model.use((handle) => this.predictWith(handle, { prepared }, options));
  }

  /** predict() of `input`: pairs, or pairs tokenized ahead (preparePairs()); the loop is the same. */
  private async predictWith(handle: NativeEncoder, input: [string, string][] | { prepared: PreparedPair[] }, options: PredictOptions | undefined, rank = false): Promise<Matrix> {
    const o = checkOptions('options', options, PREDICT_KEYS);
    const prepared = Array.isArray(input) ? undefined : input.prepared;
    const pairs = prepared ? [] : (input as [string, string][]);
    if (!prepared) checkPairs(pairs);
    const count = prepared ? prepared.length : pairs.length;
    const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
    let activation = oneOf('options.activation', o.activation ?? 'default', ACTIVATIONS);
    if (activation === 'default') activation = this.activation;
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
    const signal = signalOption(o.signal);
    const prompt = this.resolvePrompt(o.prompt, o.promptName);
    if (prepared?.some((p) => p.model !== this || p.prompt !== prompt)) {
      throw new ColtrastError('INVALID_ARGUMENT', 'pairs prepared by another CrossEncoder, or with another prompt, cannot be scored with these options: preparePairs() them with the options of the call');
    }
    const labels = this.numLabels;
    const scores = new Float32Array(count * labels);
    const run = (items: TokenizedText[]) => handle.embed({ ...padBatch(items), output: 'scores', pooling: 'cls', normalize: false });
    const take = (logits: Float32Array, indices: number[]) => {
      indices.forEach((pairIndex, r) => {
        scores.set(activate(logits.subarray(r * labels, (r + 1) * labels), activation), pairIndex * labels);
      });
    };
    const characters = prepared ? (i: number) => prepared[i].characters : (i: number) => pairs[i][0].length + pairs[i][1].length;
    const tokenize = async (indices: number[]) => (prepared ? indices.map((i) => prepared[i].input) : this.tokenizePairs(indices.map((i) => pairs[i]), prompt, signal));
    await tokenizeInBatches(count, batchSize, tokenizeAhead(this.device), characters, tokenize, run, take, o.onProgress, { signal, call: rank ? 'rank()' : 'predict()' });
    return { dims: [count, labels], data: scores };
  }

  /** The prompt a call uses: `prompt`, the named one, or the model's default (sentence-transformers' order). */
  private resolvePrompt(prompt: unknown, promptName: unknown): string | undefined {
    if (prompt !== undefined) {
      if (typeof prompt !== 'string') throw invalid('options.prompt', 'a string', prompt);
      return prompt;
    }
    if (promptName !== undefined) return namedPrompt(this.files.prompts, promptName);
    return this.files.defaultPromptName === null ? undefined : this.files.prompts[this.files.defaultPromptName];
  }

  /**
   * Each pair's tokens as the model reads them: the tokenizer's pair template (the prompt before the query), or for a
   * decoder reranker with a chat template, the pair as a "query" and a "document" message (after a "system" message
   * holding the prompt) rendered and tokenized as rendered, as sentence-transformers 6 does.
   */
  private async tokenizePairs(pairs: [string, string][], prompt: string | undefined, signal?: AbortSignal): Promise<TokenizedText[]> {
    const chat = this.pairTemplate;
    if (!chat) return this.tokenizer.encodePairs(prompt === undefined ? pairs : pairs.map(([q, d]): [string, string] => [prompt + q, d]), undefined, signal);
    const conversation = (query: string, document: string) => pairMessages(chat.format, query, document, prompt);
    const rendered = pairs.map(([q, d]) => chat.template.render({ messages: conversation(q, d) }));
    const tokenized = await this.tokenizer.encodeBare(rendered, this.maxSeqLength, signal);
    // A prompt cut at the end loses the template's tail (what the last token must read, e.g. an assistant turn):
    // sentence-transformers writes it back over the last tokens. The tail: the tokens two renders with other contents
    // ('0', '1 2 3 4') end with alike.
    if (!tokenized.some((t) => t.ids.length >= this.maxSeqLength)) return tokenized;
    const suffix = await this.templateSuffix(prompt, conversation);
    for (const t of tokenized) {
      if (t.ids.length < this.maxSeqLength) continue;
      const keep = Math.min(suffix.length, t.ids.length);
      t.ids.splice(t.ids.length - keep, keep, ...suffix.slice(suffix.length - keep));
    }
    return tokenized;
  }

  /** The chat template's tail after a pair's contents, as tokens (sentence-transformers' _chat_template_suffix_ids). */
  private async templateSuffix(prompt: string | undefined, conversation: (query: string, document: string) => unknown[]): Promise<number[]> {
    const key = prompt ?? '';
    const known = this.suffixes.get(key);
    if (known) return known;
    const renders = ['0', '1 2 3 4'].map((filler) => this.pairTemplate!.template.render({ messages: conversation(filler, filler) }));
    const [first, second] = (await this.tokenizer.encodeBare(renders, 1 << 30)).map((t) => t.ids);
    let common = 0;
    while (common < Math.min(first.length, second.length) && first[first.length - 1 - common] === second[second.length - 1 - common]) common++;
    // Renders that never differ hold no content: no tail can be told from them.
    const suffix = common > 0 && common < Math.min(first.length, second.length) ? first.slice(first.length - common) : [];
    this.suffixes.set(key, suffix);
    return suffix;
  }

  /**
   * Scores `query` against each document and returns them best first (sentence-transformers' rank()). For
   * one-label models only.
   */
  async rank(query: string, documents: string[], options?: RankOptions): Promise<Ranked[]> {
    if (typeof query !== 'string') throw invalid('query', 'a string', query);
    if (!Array.isArray(documents)) throw invalid('documents', 'an array of strings', documents);
    for (let i = 0; i < documents.length; i++) {
      if (typeof documents[i] !== 'string') throw invalid(`documents[${i}]`, 'a string', documents[i]);
    }
    if (this.numLabels !== 1) {
      throw new ColtrastError('INVALID_ARGUMENT', `rank() needs a one-label model (a relevance score); this one has ${this.numLabels} labels: use predict()`);
    }
    const o = checkOptions('options', options, RANK_KEYS);
    const topK = o.topK === undefined ? documents.length : positiveInteger('options.topK', o.topK);
    const withText = booleanValue('options.returnDocuments', o.returnDocuments ?? false);
    const { batchSize, activation, onProgress, prompt, promptName, signal } = o;
    const { data } = await this.model.use((handle) =>
      this.predictWith(handle, documents.map((d) => [query, d]), { batchSize, activation, onProgress, prompt, promptName, signal }, true),
    );
    const ranked = documents.map((_, index) => index).sort((a, b) => data[b] - data[a] || a - b);
    return ranked.slice(0, topK).map((index) => ({ index, score: data[index], ...(withText && { text: documents[index] }) }));
  }

  /**
   * Writes the model as sentence-transformers 6 saves a CrossEncoder (which Hugging Face's
   * AutoModelForSequenceClassification also loads), with a LoRA adapter's merged in and the adapter itself in
   * `adapter/`. The folder appears complete or not at all.
   */
  async save(dir: string, options?: { overwrite?: boolean; dtype?: DType }): Promise<void> {
    const o = checkOptions('options', options, SAVE_KEYS);
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
    const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
    this.model.checkSavable();
    const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
    await this.model.use((handle) =>
      writeFolderAtomic(path.resolve(dir), overwrite, async (staging) => {
        writeModelFiles(this.files, staging, { pooling: 'cls', normalize: false, maxSeqLength: this.files.maxSeqLength, dimension: 0 });
        try {
          await handle.saveWeights(path.join(staging, 'model.safetensors'), dtype);
          // The adapter (and the head it trains) beside the merged weights: what PEFT adds to the base model.
          if (this.loraConfig) await saveAdapter(handle, path.join(staging, ADAPTER_DIR), this.loraConfig, dtype, this.baseWeights());
        } catch (error) {
          throw fromNative(error);
        }
      }),
    );
  }

  /** Frees the native model. Calls already running finish first; calls made afterwards throw DISPOSED. */
  dispose(): void {
    this.model.dispose();
    this.tokenizer.dispose();
  }
}

/**
 * @internal Re-ranks each query's candidates by the cross-encoder's score of (query, candidate text), best first,
 * scoring every query's pairs in one predict() call; ties keep the first stage's order.
 */
export async function rerankCandidates<T>(
  reranker: CrossEncoder,
  queries: string[],
  candidates: T[][],
  text: (candidate: T) => string,
  options?: Pick<PredictOptions, 'batchSize' | 'onProgress'>,
): Promise<{ item: T; score: number }[][]> {
  if (reranker.numLabels !== 1) {
    throw new ColtrastError('INVALID_ARGUMENT', `a cross-encoder re-ranks with one score per pair; ${reranker.modelDir} has ${reranker.numLabels} labels`);
  }
  const pairs = candidates.flatMap((items, i) => items.map((c): [string, string] => [queries[i], text(c)]));
  const { data } = await reranker.predict(pairs, options);
  let at = 0;
  return candidates.map((items) =>
    items
      .map((item, rank) => ({ item, score: data[at++], rank }))
      .sort((a, b) => b.score - a.score || a.rank - b.rank)
      .map(({ item, score }) => ({ item, score })),
  );
}

/** One pair's logits through the activation, as sentence-transformers' predict() applies it. */
function activate(logits: Float32Array, activation: Exclude<ScoreActivation, 'default'>): Float32Array {
  if (activation === 'identity') return logits;
  if (activation === 'sigmoid') return logits.map((x) => 1 / (1 + Math.exp(-x)));
  if (activation === 'tanh') return logits.map(Math.tanh);
  const max = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - max));
  const sum = exps.reduce((s, x) => s + x, 0);
  return exps.map((x) => x / sum);
}

/**
 * A (query, document) pair as sentence-transformers 6 gives it to a chat template: a "query" and a "document" message,
 * after a "system" message holding the prompt, if any; each content a string ('flat') or a list of one text part
 * ('structured').
 */
function pairMessages(format: 'flat' | 'structured', query: string, document: string, prompt?: string): { role: string; content: unknown }[] {
  const message = (role: string, text: string) => ({ role, content: format === 'structured' ? [{ type: 'text', text }] : text });
  return [...(prompt === undefined ? [] : [message('system', prompt)]), message('query', query), message('document', document)];
}

/** A decoder reranker's chat template, and how sentence-transformers gives it a message's content (messageFormat). */
interface PairTemplate {
  template: ChatTemplate;
  format: 'flat' | 'structured';
}

/**
 * A decoder reranker's chat template, refused when it cannot carry a pair: when it drops the "query" or the "document"
 * message's content (a chat model's own template, which knows system, user and assistant), as sentence-transformers
 * refuses it, or fails on them.
 */
function checkedPairTemplate(dir: string, source: string | undefined, given: boolean): PairTemplate {
  if (source === undefined) throw new ColtrastError('MODEL_FILES', `${dir}: sentence_bert_config.json gives pairs to a chat template, and the folder has none`);
  // A template given as chatTemplate is fixed where it was given; saving a chat_template.jinja would not change it.
  const what = given ? 'the chatTemplate given' : `${dir}: its chat template`;
  const fix = `${given ? 'Give a template' : 'Save a chat_template.jinja'} that renders both roles, e.g. {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}`;
  const checked = { template: new ChatTemplate(dir, source), format: messageFormat(source) };
  const render = (query: string, document: string) => checked.template.render({ messages: pairMessages(checked.format, query, document) });
  let dropped: string[];
  try {
    const base = render('q0', 'd0');
    dropped = [render('q1', 'd0') === base ? 'query' : '', render('q0', 'd1') === base ? 'document' : ''].filter(Boolean);
  } catch (error) {
    // Not "the any message's content does not reach the prompt": the template fails, and says why.
    throw new ColtrastError('MODEL_FILES', `${what} fails on a (query, document) pair: ${(error as Error).message}. ${fix}`);
  }
  if (dropped.length > 0) {
    throw new ColtrastError('MODEL_FILES', `${what} cannot carry a (query, document) pair: the ${dropped.join(' and ')} message's content does not reach the prompt. ${fix}`);
  }
  return checked;
}
