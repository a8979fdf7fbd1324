/**
 * `Generator`: a decoder LLM (Llama, Mistral, Qwen2, Qwen3) as a causal language model, loaded from a Hugging Face
 * *ForCausalLM folder or hub id: the log-likelihood of a completion after a prompt, and greedy generation with
 * cached keys and values. It is ContextFlow's generator (lib/rag.ts), which trains it jointly with a retriever.
 * Natively and off the JS thread, like `Encoder`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { readModelDirectory, type ModelDirectory } from './model-dir';
import { DTYPES, ModelHandle, inBatches, loadNative, resolveLoad, type DType, type LoadOptions } from './native-model';
import { fromNative, type NativeEncoder, type PaddedBatch } from './native';
import { TextTokenizer, longestFirst, padBatch, type ModelInput } from './tokenizer';
import { booleanValue, checkOptions, invalid, oneOf, positiveInteger } from './validate';

/** A prompt and the text that should follow it. */
export interface Completion {
  prompt: string;
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
}

/** One prompt's continuation. */
export interface Generated {
  /** The generated tokens decoded, special tokens left out. */
  text: string;
  /** The generated token ids, the stop token included when one ended it. */
  tokenIds: number[];
  /** 'stop': a stop token ended it; 'length': maxNewTokens (or the model's positions) did. */
  finishReason: 'stop' | 'length';
}

const LL_KEYS = ['batchSize', 'endOfSequence'] as const;
const GENERATE_KEYS = ['maxNewTokens', 'stopTokenIds'] as const;
const SAVE_KEYS = ['overwrite', 'dtype'] as const;
const DECODER_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'];
/** The files of a model folder besides its weights that a saved copy keeps (configs and tokenizer files). */
const KEPT_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'vocab.json',
  'merges.txt', 'added_tokens.json', 'chat_template.jinja', 'chat_template.json',
];

/** config.json's or generation_config.json's eos_token_id: a number or a list of them. */
function eosIds(value: unknown): number[] | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isInteger(v))) return value as number[];
  return undefined;
}

function checkCompletions(pairs: unknown): asserts pairs is Completion[] {
  if (!Array.isArray(pairs)) throw invalid('pairs', 'an array of { prompt, completion }', pairs);
  pairs.forEach((p, i) => {
    if (typeof p !== 'object' || p === null || typeof p.prompt !== 'string' || typeof p.completion !== 'string') {
      throw invalid(`pairs[${i}]`, '{ prompt: string, completion: string }', p);
    }
  });
}

export class Generator {
  private readonly model: ModelHandle;

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
  ) {
    this.model = new ModelHandle(handle, 'Generator');
  }

  get modelDir(): string {
    return this.files.dir;
  }
  get modelType(): string {
    return this.files.config.model_type as string;
  }

  /** Loads a causal language model: a Hugging Face *ForCausalLM folder (safetensors) or hub id. */
  static async load(model: string, options?: LoadOptions): Promise<Generator> {
    const { dir, device, dtype } = await resolveLoad(model, options);
    const files = readModelDirectory(dir);
    const config = files.config;
    if (!DECODER_TYPES.includes(config.model_type as string)) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a ${String(config.model_type)} model; a Generator runs decoder LLMs (${DECODER_TYPES.join(', ')})`);
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
    const tokenizer = TextTokenizer.load(files.tokenizerPath, maxLength, files.lowercase);
    const handle = await loadNative(files, device, dtype, { head: 'causal-lm', tieWordEmbeddings: config.tie_word_embeddings === true });
    const info = handle.info();
    return new Generator(handle, files, tokenizer, eos, maxLength, info.vocabSize, info.device, dtype);
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
    const [prompts, completions] = await Promise.all([
      this.tokenizer.encode(pairs.map((p) => p.prompt)),
      this.tokenizer.encodeBare(pairs.map((p) => p.completion)),
    ]);
    if (endOfSequence && this.eosTokenIds.length === 0) {
      throw new ColtrastError('MODEL_FILES', `${this.modelDir} names no eos_token_id (generation_config.json or config.json): pass endOfSequence: false`);
    }
    return prompts.map((p, i) => {
      const completion = [...completions[i].ids, ...(endOfSequence ? [this.eosTokenIds[0]] : [])];
      if (p.ids.length === 0) throw new ColtrastError('INVALID_ARGUMENT', `pairs[${i}].prompt has no tokens: the first completion token needs one before it`);
      const ids = [...p.ids, ...completion];
      if (ids.length > this.maxLength) {
        throw new ColtrastError('INVALID_ARGUMENT', `pairs[${i}] is ${ids.length} tokens, more than the model's ${this.maxLength} positions; shorten its prompt`);
      }
      return { ids, typeIds: new Array<number>(ids.length).fill(0), scored: ids.map((_, t) => (t >= p.ids.length ? 1 : 0)) };
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

  /** Greedy generation: each prompt (tokenized with the tokenizer's special tokens) continued one most likely token at a time. */
  async generate(prompts: string[], options?: GenerateOptions): Promise<Generated[]> {
    return this.model.use(async (handle) => {
      const o = checkOptions('options', options, GENERATE_KEYS);
      if (!Array.isArray(prompts) || prompts.some((p) => typeof p !== 'string')) throw invalid('prompts', 'an array of strings', prompts);
      const maxNewTokens = positiveInteger('options.maxNewTokens', o.maxNewTokens ?? 64);
      const stop = o.stopTokenIds ?? this.eosTokenIds;
      if (!Array.isArray(stop) || stop.some((id) => !Number.isInteger(id) || id < 0)) throw invalid('options.stopTokenIds', 'an array of token ids', stop);
      const tokenized = await this.tokenizer.encode(prompts);
      tokenized.forEach((t, i) => {
        if (t.ids.length === 0) throw new ColtrastError('INVALID_ARGUMENT', `prompts[${i}] has no tokens: generation needs one to start from`);
        if (t.ids.length >= this.maxLength) {
          throw new ColtrastError('INVALID_ARGUMENT', `prompts[${i}] is ${t.ids.length} tokens: the model's ${this.maxLength} positions leave no room to generate`);
        }
      });
      let outputs: Int32Array[];
      try {
        outputs = await handle.generate({ prompts: tokenized.map((t) => Int32Array.from(t.ids)), maxNewTokens, stopIds: Int32Array.from(stop) });
      } catch (error) {
        throw fromNative(error);
      }
      const ids = outputs.map((o) => Array.from(o));
      const texts = await this.tokenizer.decode(ids);
      return ids.map((tokenIds, i) => ({
        text: texts[i],
        tokenIds,
        finishReason: tokenIds.length > 0 && stop.includes(tokenIds[tokenIds.length - 1]) ? ('stop' as const) : ('length' as const),
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
      await writeFolderAtomic(path.resolve(dir), booleanValue('options.overwrite', o.overwrite ?? false), async (staging) => {
        for (const file of KEPT_FILES) {
          const from = path.join(this.files.dir, file);
          if (fs.existsSync(from)) fs.copyFileSync(from, path.join(staging, file));
        }
        if (dtype !== 'float32') {
          const config = JSON.parse(fs.readFileSync(path.join(staging, 'config.json'), 'utf8')) as Record<string, unknown>;
          fs.writeFileSync(path.join(staging, 'config.json'), `${JSON.stringify({ ...config, torch_dtype: dtype, dtype }, null, 2)}\n`);
        }
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
  }
}
