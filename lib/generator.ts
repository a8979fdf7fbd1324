/**
 * `Generator`: a decoder LLM (Llama, Mistral, Qwen2, Qwen3, Gemma 3, 2 and 1) as a causal language model, loaded from a Hugging Face
 * *ForCausalLM folder or hub id: the log-likelihood of a completion after a prompt, and greedy generation with
 * cached keys and values. It is ContextFlow's generator (lib/rag.ts), which trains it jointly with a retriever.
 * Natively and off the JS thread, like `Encoder`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatTemplate } from './chat-template';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { DECODER_SEQUENCE_CLASSIFICATION, filesAsTheyAre, readChatTemplate, readModelDirectory, tokenizerAsLoaded, type ModelDirectory } from './model-dir';
import { DTYPES, ModelHandle, applyQuantize, checkQuantize, inBatches, loadNative, quantizeOption, resolveLoad, type DType, type LoadOptions, type Quantize } from './native-model';
import { fromNative, type NativeEncoder, type PaddedBatch } from './native';
import { TextTokenizer, longestFirst, padBatch, type ModelInput } from './tokenizer';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger, signalOption } from './validate';

/** One turn of a conversation, as chat templates take them. */
export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * A prompt: text, tokenized with the tokenizer's special tokens, or a conversation, rendered with the model's chat
 * template (the assistant's turn opened: add_generation_prompt) and tokenized as rendered, as transformers'
 * apply_chat_template does.
 */
export type Prompt = string | ChatMessage[];

/** A prompt and the text that should follow it. */
export interface Completion {
  prompt: Prompt;
  completion: string;
}

export interface LogLikelihoodOptions {
  /** Pairs per forward pass (default 16). */
  batchSize?: number;
  /** Count the end-of-sequence token after the completion too (default true): the completion ends there. */
  endOfSequence?: boolean;
}

export interface GenerateOptions {
  /** The most tokens to generate per prompt (default 64). */
  maxNewTokens?: number;
  /** Token ids that end generation (default: the model's end-of-sequence ids, from generation_config.json or config.json). */
  stopTokenIds?: number[];
  /**
   * 0 (default): greedy, the most likely token each time. Above 0: each token is drawn from softmax(logits /
   * temperature), cut first to the `topK` most likely (0, the default: no cut), then to the smallest set of most
   * likely tokens whose probability reaches `topP` (default 1: no cut), as transformers' sampling cuts them.
   */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** The seed of the draws (default 0): the same seed, prompts and options (batchSize too) give the same tokens. */
  seed?: number;
  /**
   * Prompts generated together (default 8): sorted by length, left-padded to the batch's longest, each token one
   * forward pass for the whole batch; a finished prompt leaves the batch.
   */
  batchSize?: number;
  /**
   * Streaming: called with each prompt's new text as it is generated (`index` is the prompt's). Text is held back
   * while it ends in an incomplete character or while decoding the tokens so far does not extend what was already
   * given; the rest comes before generate() resolves. The pieces of one prompt, joined, are its `text` whenever the
   * tokenizer decodes a prefix of the tokens to a prefix of the text (byte-level BPE and SentencePiece do). An error it
   * throws, or a promise it returns that rejects, rejects generate(); generate() waits for the promises it returns.
   */
  onText?: (index: number, text: string) => void;
  /**
   * Beam search when above 1 (default 1: greedy or sampled), as transformers' generate(num_beams) does it: `numBeams`
   * hypotheses per prompt, `batchSize` prompts searched together; the result is the finished hypothesis with the best summed
   * log-probability divided by (its new tokens) ** `lengthPenalty` (default 1; above 0 favours longer answers, below
   * 0 shorter). `earlyStopping` (default false) as transformers': false stops when no running beam can still beat the
   * kept hypotheses at its current length, true as soon as `numBeams` hypotheses are finished, 'never' only when
   * none can at the longest length. Needs temperature 0 and no onText.
   */
  numBeams?: number;
  lengthPenalty?: number;
  earlyStopping?: boolean | 'never';
  /** Stops the generation when aborted (checked at each step): generate() then rejects with an ABORTED error. */
  signal?: AbortSignal;
  /** @internal One signal per prompt (the server's clients): an aborted one stops its prompt only, which keeps the tokens it has. */
  promptSignals?: (AbortSignal | undefined)[];
}

/** One prompt's continuation. */
export interface Generated {
  /** The generated tokens decoded, special tokens left out. */
  text: string;
  /** The generated token ids, the stop token included when one ended it. */
  tokenIds: number[];
  /** 'stop': a stop token ended it; 'length': maxNewTokens (or the model's positions) did. */
  finishReason: 'stop' | 'length';
  /** The prompt's length in tokens (as the model read it: special tokens, or the rendered chat template, included). */
  promptTokens: number;
}

const LL_KEYS = ['batchSize', 'endOfSequence'] as const;
const GENERATE_KEYS = [
  'maxNewTokens', 'stopTokenIds', 'temperature', 'topK', 'topP', 'seed', 'batchSize', 'onText', 'numBeams', 'lengthPenalty', 'earlyStopping', 'signal',
  'promptSignals',
] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;
const INT32_MAX = 2 ** 31 - 1;
/**
 * The smallest sampling temperature above 0: the native loop divides float32 logits by it, and below about 1e-37 they
 * overflow to infinity (no token can then be drawn); 1e-30 leaves room for logits up to 3e8. Smaller is greedy in effect:
 * use 0.
 */
export const MIN_TEMPERATURE = 1e-30;
/** The decoder LLM families coltrast runs (model_type), as causal LMs here. */
const DECODER_TYPES = Object.keys(DECODER_SEQUENCE_CLASSIFICATION);
/**
 * The files of a model folder besides its weights, config.json and the tokenizer files model-dir.ts keeps
 * (ModelDirectory's tokenizerFiles), that a saved copy keeps: read as the model loads, so that a save writes them as
 * the model ran with them, not as its source folder has them by then.
 */
const KEPT_FILES = ['generation_config.json', 'vocab.json', 'merges.txt', 'added_tokens.json', 'chat_template.json'];

function isChat(prompt: unknown): prompt is ChatMessage[] {
  return Array.isArray(prompt);
}

function checkPrompt(where: string, prompt: unknown): void {
  if (typeof prompt === 'string') return;
  if (!Array.isArray(prompt) || prompt.length === 0 || prompt.some((m) => typeof m?.role !== 'string' || typeof m?.content !== 'string')) {
    throw invalid(where, 'a string or a non-empty array of { role, content } messages', prompt);
  }
}

/** config.json's or generation_config.json's eos_token_id: a number or a list of them. */
function eosIds(value: unknown): number[] | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isInteger(v))) return value as number[];
  return undefined;
}

function checkCompletions(pairs: unknown): asserts pairs is Completion[] {
  if (!Array.isArray(pairs)) throw invalid('pairs', 'an array of { prompt, completion }', pairs);
  // Index by index: forEach skips an array's holes.
  for (let i = 0; i < pairs.length; i++) {
    const p = pairs[i];
    if (typeof p !== 'object' || p === null || typeof p.completion !== 'string') {
      throw invalid(`pairs[${i}]`, '{ prompt: string | messages, completion: string }', p);
    }
    checkPrompt(`pairs[${i}].prompt`, p.prompt);
  }
}

/** Generator.load's options: LoadOptions and int8 quantization. */
export interface GeneratorLoadOptions extends LoadOptions {
  /**
   * 'int8': the decoder's projections run in int8 on the CPU, as PyTorch's `quantize_dynamic` runs them
   * (EncoderLoadOptions.quantize has the details); the embeddings and the language-model head stay float32. For
   * inference: training with it is refused (the native trainer checks), and so is save(). Default: none.
   */
  quantize?: Quantize;
}

export class Generator {
  private readonly model: ModelHandle;
  private template: ChatTemplate | undefined;
  /** Extra variables for the chat template (e.g. Qwen3's `enable_thinking: false`). */
  chatTemplateKwargs: Record<string, unknown> = {};

  private constructor(
    handle: NativeEncoder,
    private readonly files: ModelDirectory,
    private readonly tokenizer: TextTokenizer,
    /** Token ids that end a sequence (generation stops at them; a completion's likelihood ends with the first). */
    readonly eosTokenIds: number[],
    /** The longest sequence the model takes (max_position_embeddings): prompt and completion together. */
    readonly maxLength: number,
    readonly vocabSize: number,
    readonly device: string,
    readonly dtype: DType,
    /** The model's chat template (Jinja), if its folder has one. */
    readonly chatTemplate: string | undefined,
    /** KEPT_FILES as the folder had them when the model loaded. */
    private readonly keptFiles: Record<string, Buffer>,
  ) {
    this.model = new ModelHandle(handle, 'Generator');
  }

  /**
   * A conversation rendered with the model's chat template, as transformers' apply_chat_template(tokenize=False)
   * renders it (with `@huggingface/jinja`, the Jinja engine of transformers.js): the tokenizer's special tokens
   * (bos_token, eos_token, ...), `add_generation_prompt` (default true: the assistant's turn opened) and
   * `chatTemplateKwargs`, then `kwargs`.
   */
  applyChatTemplate(messages: ChatMessage[], options: { addGenerationPrompt?: boolean } & Record<string, unknown> = {}): string {
    checkPrompt('messages', messages);
    if (this.chatTemplate === undefined) {
      throw new ColtrastError('MODEL_FILES', `${this.modelDir} has no chat template (tokenizer_config.json's chat_template or chat_template.jinja): give the prompt as text`);
    }
    const { addGenerationPrompt = true, ...kwargs } = options;
    this.template ??= new ChatTemplate(this.modelDir, this.chatTemplate);
    return this.template.render({ ...this.chatTemplateKwargs, ...kwargs, messages, add_generation_prompt: addGenerationPrompt });
  }

  /**
   * Each prompt's token ids: text with the tokenizer's special tokens, a conversation as its template renders it.
   * `signal` aborted, the texts not sent to the tokenizer yet are not (a huge one waiting on its long lane), and it
   * rejects ABORTED.
   */
  private async promptIds(prompts: Prompt[], signal?: AbortSignal): Promise<number[][]> {
    const texts: string[] = [];
    const chats: string[] = [];
    for (const p of prompts) {
      if (isChat(p)) chats.push(this.applyChatTemplate(p));
      else texts.push(p);
    }
    const [plain, rendered] = await Promise.all([this.tokenizer.encode(texts, undefined, signal), this.tokenizer.encodeBare(chats, undefined, signal)]);
    // Each kind in the prompts' order.
    let t = 0;
    let c = 0;
    return prompts.map((p) => (isChat(p) ? rendered[c++].ids : plain[t++].ids));
  }

  get modelDir(): string {
    return this.files.dir;
  }
  get modelType(): string {
    return this.files.config.model_type as string;
  }

  /** Loads a causal language model: a Hugging Face *ForCausalLM folder (safetensors) or hub id. */
  static async load(model: string, options?: GeneratorLoadOptions): Promise<Generator> {
    const { quantize, ...loadOptions } = options ?? {};
    const int8 = quantizeOption(quantize);
    const { dir, device, dtype } = await resolveLoad(model, loadOptions);
    checkQuantize(int8, device, dtype);
    const files = readModelDirectory(dir);
    const config = files.config;
    if (!DECODER_TYPES.includes(config.model_type as string)) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a ${String(config.model_type)} model; a Generator runs decoder LLMs (${DECODER_TYPES.join(', ')})`);
    }
    if (config.use_bidirectional_attention === true) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} attends both ways (use_bidirectional_attention: an embedding model such as EmbeddingGemma); a Generator runs causal LMs`);
    }
    const generationFile = path.join(dir, 'generation_config.json');
    let generation: Record<string, unknown> = {};
    if (fs.existsSync(generationFile)) {
      try {
        generation = JSON.parse(fs.readFileSync(generationFile, 'utf8')) as Record<string, unknown>;
      } catch (error) {
        throw new ColtrastError('MODEL_FILES', `${generationFile} is not valid JSON (${(error as Error).message})`);
      }
    }
    const eos = eosIds(generation.eos_token_id) ?? eosIds(config.eos_token_id) ?? [];
    const maxLength = typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings : files.maxSeqLength;
    // Prompts are cut by the caller's choice (lib/rag.ts fits documents in); the tokenizer only stops absurd lengths.
    const tokenizer = await TextTokenizer.load(files.tokenizerPath, maxLength, files.lowercase);
    // Quantized as it loads (the float32 model is never whole in memory); applyQuantize below records it.
    const handle = await loadNative(files, device, dtype, { head: 'causal-lm', tieWordEmbeddings: config.tie_word_embeddings === true, ...(int8 && { quantizeInt8: true }) });
    const info = handle.info();
    const generator = new Generator(handle, files, tokenizer, eos, maxLength, info.vocabSize, info.device, dtype, readChatTemplate(dir), filesAsTheyAre(dir, KEPT_FILES));
    await applyQuantize(generator.model, int8, () => generator.dispose());
    return generator;
  }

  /** 'int8' when loaded with GeneratorLoadOptions.quantize (the projections run in int8 on the CPU); undefined otherwise. */
  get quantize(): Quantize | undefined {
    return this.model.quantized;
  }

  /**
   * @internal Each text cut to its first `maxTokens` tokens (no special tokens), decoded back to text; a text that
   * fits is returned as it is (lib/query-generation.ts fits documents into prompts).
   */
  async cutTexts(texts: string[], maxTokens: number): Promise<string[]> {
    const encoded = await this.tokenizer.encodeBare(texts, maxTokens + 1);
    const long = encoded.flatMap((e, i) => (e.ids.length > maxTokens ? [i] : []));
    const decoded = await this.tokenizer.decode(long.map((i) => encoded[i].ids.slice(0, maxTokens)));
    const out = [...texts];
    long.forEach((i, j) => (out[i] = decoded[j]));
    return out;
  }

  /** @internal Each prompt's length in tokens, as generate() tokenizes it (cut at maxLength); `signal` as promptIds'. */
  async promptLengths(prompts: Prompt[], signal?: AbortSignal): Promise<number[]> {
    return (await this.promptIds(prompts, signal)).map((ids) => ids.length);
  }

  /** @internal Each completion's length in tokens, as sequences() tokenizes it (no special tokens). */
  async completionLengths(texts: string[]): Promise<number[]> {
    return (await this.tokenizer.encodeBare(texts)).map((t) => t.ids.length);
  }

  /** @internal The native model, for lib/rag.ts's trainer. */
  nativeHandle(): ModelHandle {
    return this.model;
  }

  /**
   * @internal Each pair as the model reads it: the prompt tokenized with the tokenizer's special tokens, then the
   * completion without them (and the end-of-sequence token when `endOfSequence`), the completion's tokens marked
   * in `scored`. A pair longer than the model's positions is an error naming it.
   */
  async sequences(pairs: Completion[], endOfSequence = true): Promise<ModelInput[]> {
    const [prompts, completions] = await Promise.all([this.promptIds(pairs.map((p) => p.prompt)), this.tokenizer.encodeBare(pairs.map((p) => p.completion))]);
    if (endOfSequence && this.eosTokenIds.length === 0) {
      // Also reached from trainRag and Rag.answer, which score whole answers and have no such option.
      throw new ColtrastError(
        'MODEL_FILES',
        `${this.modelDir} names no eos_token_id (generation_config.json or config.json), which scoring a whole completion needs: add the id of the token that ends the model's answers there, or (logLikelihood) pass endOfSequence: false`,
      );
    }
    return prompts.map((p, i) => {
      const completion = [...completions[i].ids, ...(endOfSequence ? [this.eosTokenIds[0]] : [])];
      if (p.length === 0) throw new ColtrastError('INVALID_ARGUMENT', `pairs[${i}].prompt has no tokens: the first completion token needs one before it`);
      const ids = [...p, ...completion];
      if (ids.length > this.maxLength) {
        // The tokenizer cuts each text at the model's length: a part that reached it may have been longer.
        const cut = p.length >= this.maxLength || completions[i].ids.length >= this.maxLength;
        throw new ColtrastError('INVALID_ARGUMENT', `pairs[${i}] is ${ids.length}${cut ? ' or more' : ''} tokens, more than the model's ${this.maxLength} positions; shorten its prompt`);
      }
      return { ids, typeIds: new Array<number>(ids.length).fill(0), scored: ids.map((_, t) => (t >= p.length ? 1 : 0)) };
    });
  }

  /**
   * log p(completion | prompt): the sum over the completion's tokens (and the end-of-sequence token) of each
   * token's log-probability given all tokens before it, one number per pair.
   */
  async logLikelihood(pairs: Completion[], options?: LogLikelihoodOptions): Promise<Float64Array> {
    return this.model.use(async (handle) => {
      const o = checkOptions('options', options, LL_KEYS);
      checkCompletions(pairs);
      const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 16);
      const inputs = await this.sequences(pairs, booleanValue('options.endOfSequence', o.endOfSequence ?? true));
      const order = longestFirst(inputs);
      const out = new Float64Array(pairs.length);
      await inBatches(
        order.length,
        batchSize,
        async (start, end) => handle.logLikelihood(padBatch(order.slice(start, end).map((i) => inputs[i])) as PaddedBatch & { outputMask: Int32Array }),
        (result, start, end) => order.slice(start, end).forEach((pair, r) => (out[pair] = result[r])),
      );
      return out;
    });
  }

  /** Each prompt (text or a conversation, see Prompt) continued one token at a time: greedy, or sampled (GenerateOptions). */
  async generate(prompts: Prompt[], options?: GenerateOptions): Promise<Generated[]> {
    return this.model.use(async (handle) => {
      const o = checkOptions('options', options, GENERATE_KEYS);
      if (!Array.isArray(prompts)) throw invalid('prompts', 'an array of prompts', prompts);
      // Index by index: forEach skips an array's holes (new Array(n)), which would reach the tokenizer as undefined.
      for (let i = 0; i < prompts.length; i++) checkPrompt(`prompts[${i}]`, prompts[i]);
      // The native loop takes 32-bit counts and token ids (an id past them would wrap to another token) and seeds up
      // to 2^53: larger values are refused here, by their option's name.
      const maxNewTokens = positiveInteger('options.maxNewTokens', o.maxNewTokens ?? 64);
      if (maxNewTokens > INT32_MAX) throw invalid('options.maxNewTokens', `a positive integer up to ${INT32_MAX}`, maxNewTokens);
      const stop = o.stopTokenIds ?? this.eosTokenIds;
      if (!Array.isArray(stop) || stop.some((id) => !Number.isInteger(id) || id < 0 || id > INT32_MAX)) throw invalid('options.stopTokenIds', 'an array of token ids', stop);
      const temperature = o.temperature ?? 0;
      if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) throw invalid('options.temperature', 'a number >= 0 (0: greedy)', temperature);
      // The logits (float32) divided by a temperature this small overflow to infinity and no token can be drawn.
      if (temperature > 0 && temperature < MIN_TEMPERATURE) throw invalid('options.temperature', `0 (greedy) or at least ${MIN_TEMPERATURE}`, temperature);
      const topK = o.topK ?? 0;
      if (!Number.isInteger(topK) || topK < 0 || topK > INT32_MAX) throw invalid('options.topK', 'an integer >= 0 (0: no cut)', topK);
      const topP = o.topP ?? 1;
      if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw invalid('options.topP', 'a number in (0, 1]', topP);
      const seed = o.seed ?? 0;
      if (!Number.isSafeInteger(seed) || seed < 0) throw invalid('options.seed', `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`, seed);
      const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 8);
      if (o.onText !== undefined && typeof o.onText !== 'function') throw invalid('options.onText', 'a function', o.onText);
      const numBeams = positiveInteger('options.numBeams', o.numBeams ?? 1);
      const lengthPenalty = o.lengthPenalty ?? 1;
      if (typeof lengthPenalty !== 'number' || !Number.isFinite(lengthPenalty)) throw invalid('options.lengthPenalty', 'a finite number', lengthPenalty);
      const earlyStopping = o.earlyStopping ?? false;
      if (earlyStopping !== true && earlyStopping !== false && earlyStopping !== 'never') throw invalid('options.earlyStopping', "true, false or 'never'", earlyStopping);
      if (numBeams > 1 && temperature > 0) throw new ColtrastError('INVALID_ARGUMENT', 'beam search is deterministic: give options.temperature 0 (or leave it out) with options.numBeams > 1');
      if (numBeams > 1 && o.onText) throw new ColtrastError('INVALID_ARGUMENT', "beam search cannot stream (its best hypothesis is known only at the end): leave out options.onText with options.numBeams > 1");
      signalOption(o.signal);
      if (o.promptSignals !== undefined && (!Array.isArray(o.promptSignals) || o.promptSignals.length !== prompts.length)) {
        throw invalid('options.promptSignals', 'an array with one AbortSignal (or undefined) per prompt', o.promptSignals);
      }
      const aborted = () => new ColtrastError('ABORTED', 'generation was aborted (options.signal)');
      if (o.signal?.aborted) throw aborted();
      const tokenized = await this.promptIds(prompts);
      tokenized.forEach((ids, i) => {
        if (ids.length === 0) throw new ColtrastError('INVALID_ARGUMENT', `prompts[${i}] has no tokens: generation needs one to start from`);
        if (ids.length >= this.maxLength) {
          // Cut at the model's length by the tokenizer: it may have been longer.
          throw new ColtrastError('INVALID_ARGUMENT', `prompts[${i}] is ${ids.length} tokens or more: the model's ${this.maxLength} positions leave no room to generate`);
        }
      });
      // Longest first: batches of similar lengths pad little.
      const order = longestFirst(tokenized.map((ids) => ({ ids })));
      const stream = o.onText ? new TextStream(this.tokenizer, prompts.length, o.onText) : undefined;
      const cancel = new Int32Array(prompts.length); // in the native (sorted) order
      const stopAll = () => cancel.fill(1);
      const stops = (o.promptSignals ?? []).map((signal, i) => {
        const stopOne = () => (cancel[order.indexOf(i)] = 1);
        if (signal?.aborted) stopOne();
        signal?.addEventListener('abort', stopOne, { once: true });
        return () => signal?.removeEventListener('abort', stopOne);
      });
      o.signal?.addEventListener('abort', stopAll, { once: true });
      let sorted: Int32Array[];
      let streamedCalls = 0;
      try {
        ({ outputs: sorted, streamedCalls } = await handle.generate({
          cancel,
          prompts: order.map((i) => Int32Array.from(tokenized[i])), maxNewTokens, stopIds: Int32Array.from(stop), temperature, topK, topP, seed, batchSize,
          numBeams, lengthPenalty, earlyStopping: earlyStopping === 'never' ? 2 : earlyStopping ? 1 : 0,
          ...(stream && { onTokens: (rows: Int32Array, tokens: Int32Array) => stream.push(Array.from(rows, (r) => order[r]), tokens) }),
        }));
      } catch (error) {
        await stream?.close();
        throw fromNative(error);
      } finally {
        o.signal?.removeEventListener('abort', stopAll);
        stops.forEach((remove) => remove());
      }
      const ids: number[][] = new Array(prompts.length);
      order.forEach((prompt, r) => (ids[prompt] = Array.from(sorted[r])));
      // The steps' calls still on their way come while the whole text decodes: every step is streamed.
      const [texts] = await Promise.all([this.tokenizer.decode(ids), stream?.received(streamedCalls)]);
      // Aborted at any point before this call returns (an onText that aborts included): the call failed.
      if (o.signal?.aborted) {
        await stream?.close();
        throw aborted();
      }
      await stream?.finish(texts);
      if (o.signal?.aborted) throw aborted();
      return ids.map((tokenIds, i) => ({
        text: texts[i],
        tokenIds,
        finishReason: tokenIds.length > 0 && stop.includes(tokenIds[tokenIds.length - 1]) ? ('stop' as const) : ('length' as const),
        promptTokens: tokenized[i].length,
      }));
    });
  }

  /**
   * Writes the model as a Hugging Face *ForCausalLM folder (its config, generation config and tokenizer files, and
   * model.safetensors with the base model under `model.` and lm_head unless tied) that transformers'
   * AutoModelForCausalLM and Generator.load read. The folder appears complete or not at all.
   */
  async save(dir: string, options?: { overwrite?: boolean; dtype?: DType }): Promise<void> {
    return this.model.use(async (handle) => {
      const o = checkOptions('options', options, SAVE_KEYS);
      if (typeof dir !== 'string' || dir.length === 0) throw invalid('dir', 'a folder path', dir);
      const dtype = oneOf('options.dtype', o.dtype ?? 'float32', DTYPES);
      this.model.checkSavable();
      await writeFolderAtomic(path.resolve(dir), booleanValue('options.overwrite', o.overwrite ?? false), async (staging) => {
        // The files as the model loaded them (its source folder may have been changed, replaced or deleted since).
        const config = dtype === 'float32' ? this.files.configText : `${JSON.stringify({ ...(JSON.parse(this.files.configText) as Record<string, unknown>), torch_dtype: dtype, dtype }, null, 2)}\n`;
        fs.writeFileSync(path.join(staging, 'config.json'), config);
        fs.writeFileSync(path.join(staging, 'tokenizer.json'), tokenizerAsLoaded(this.files));
        for (const [file, bytes] of Object.entries({ ...this.files.tokenizerFiles, ...this.keptFiles })) fs.writeFileSync(path.join(staging, file), bytes);
        try {
          await handle.saveWeights(path.join(staging, 'model.safetensors'), dtype);
        } catch (error) {
          throw fromNative(error);
        }
      });
    });
  }

  /** Frees the native model (it is also freed when garbage-collected); calls running finish first. */
  dispose(): void {
    this.model.dispose();
    this.tokenizer.dispose();
  }
}

/**
 * Generate's streamed text: the native step callbacks' tokens, decoded one decode at a time (so that the pieces of a
 * prompt come in order), each prompt's new text handed on when it extends what was handed on before and does not end
 * in an incomplete character. Steps that come while a decode runs are decoded together by the next one, at their
 * latest: a queue of one decode per step fell behind a model faster than the tokenizer's round trip, and with it a
 * server's stop strings and clients' aborts, which act on the text (scripts/bench/stream-lag.js, the test models'
 * sub-millisecond steps: the 40th token's text stopped its prompt 22-33 steps late at worst of 30, now 6-12). A step's
 * call may arrive after generate's promise settles (the native steps' calls and its completion wake the event loop
 * separately: 2 of 200 generations of the tiny Llama with the main thread busy 0-15 ms had such calls, and a CI run
 * got a 16-token answer in one piece): generate waits for them all (`received`) before finish(), which hands on what
 * each prompt's final text adds. Calls after close() (an aborted or failed generation) are ignored.
 */
class TextStream {
  private readonly ids: number[][];
  private readonly sent: string[];
  /** The prompts with tokens not decoded yet, in the order their tokens came. */
  private readonly fresh = new Set<number>();
  /** The decodes' loop while one runs. */
  private decoding: Promise<void> | undefined;
  private closed = false;
  private failure: unknown;
  /** An async onText's calls still running. */
  private readonly pending: Promise<void>[] = [];
  /** The step calls that have come, and a wait for a count of them. */
  private calls = 0;
  private waiting: { count: number; resolve: () => void } | undefined;

  constructor(
    private readonly tokenizer: TextTokenizer,
    prompts: number,
    private readonly onText: (index: number, text: string) => void,
  ) {
    this.ids = Array.from({ length: prompts }, () => []);
    this.sent = new Array<string>(prompts).fill('');
  }

  push(prompts: number[], tokens: Int32Array): void {
    this.calls += 1;
    if (this.waiting && this.calls >= this.waiting.count) this.waiting.resolve();
    if (this.closed) return;
    prompts.forEach((p, i) => {
      this.ids[p].push(tokens[i]);
      this.fresh.add(p);
    });
    this.decoding ??= this.decode().finally(() => (this.decoding = undefined));
  }

  /** Decodes the prompts with new tokens until none are left (a failed decode ends the streaming: finish() hands on the rest). */
  private async decode(): Promise<void> {
    while (this.fresh.size > 0 && !this.closed && this.failure === undefined) {
      const changed = [...this.fresh];
      this.fresh.clear();
      let texts: string[];
      try {
        texts = await this.tokenizer.decode(changed.map((p) => [...this.ids[p]]));
      } catch {
        this.closed = true;
        return;
      }
      // Handed on even after close(): generate's end then hands on the rest only (a generation shorter than a decode
      // still comes in two pieces).
      if (this.failure !== undefined) return;
      changed.forEach((p, i) => {
        const text = texts[i];
        if (text.length > this.sent[p].length && text.startsWith(this.sent[p]) && !text.endsWith('\uFFFD')) this.emit(p, text);
      });
    }
  }

  private emit(prompt: number, text: string): void {
    const piece = text.slice(this.sent[prompt].length);
    this.sent[prompt] = text;
    try {
      const result: unknown = this.onText(prompt, piece);
      // An async onText: its rejection is its error (left alone, an unhandled rejection would end the process), and
      // finish() waits for it.
      if (result instanceof Promise) this.pending.push(result.catch((error: unknown) => void (this.failure ??= error)));
    } catch (error) {
      this.failure ??= error;
    }
  }

  /** Resolves once `count` step calls have come (the native side's count of those it queued). */
  received(count: number): Promise<void> {
    if (this.calls >= count) return Promise.resolve();
    return new Promise((resolve) => (this.waiting = { count, resolve }));
  }

  /** Ignores the tokens not decoded yet and later ones, and waits for the decode under way (and an async onText's calls). */
  async close(): Promise<void> {
    this.closed = true;
    await this.decoding;
    await Promise.all(this.pending);
  }

  /** Hands on the rest of each prompt's final text; rethrows an error of onText. */
  async finish(texts: string[]): Promise<void> {
    await this.close();
    texts.forEach((text, p) => {
      if (text.length > this.sent[p].length && text.startsWith(this.sent[p])) this.emit(p, text);
    });
    await Promise.all(this.pending);
    if (this.failure !== undefined) throw this.failure;
  }
}
