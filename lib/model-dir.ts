/**
 * Reads a model directory in Hugging Face / sentence-transformers layout and decides how to run it:
 * which weights and tokenizer files, which pooling, whether to normalize, the maximum sequence length.
 * Writes the same layout back (`writeModelFiles`), so what we save Python can load.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { fileVersion, loadedTokenizerFile } from './tokenizer';
import { invalid } from './validate';

export const POOLING_MODES = ['cls', 'mean', 'max', 'mean_sqrt_len', 'lasttoken'] as const;
export type PoolingMode = (typeof POOLING_MODES)[number];

/** sentence-transformers' Pooling config keys, by our mode name. */
const POOLING_KEYS: Record<PoolingMode, string> = {
  cls: 'pooling_mode_cls_token',
  mean: 'pooling_mode_mean_tokens',
  max: 'pooling_mode_max_tokens',
  mean_sqrt_len: 'pooling_mode_mean_sqrt_len_tokens',
  lasttoken: 'pooling_mode_lasttoken',
};

/** The module types coltrast writes: sentence-transformers' names up to 5.x, which 6.x still reads. */
const ST = 'sentence_transformers.models.';

/** The sentence-transformers modules coltrast runs, by class name. */
type ModuleClass = 'Transformer' | 'Pooling' | 'Dense' | 'Normalize' | 'MultiVectorMask' | 'HierarchicalTokenPooling' | 'LogitScore' | 'SpladePooling';
const MODULE_CLASSES: readonly ModuleClass[] = ['Transformer', 'Pooling', 'Dense', 'Normalize', 'MultiVectorMask', 'HierarchicalTokenPooling', 'LogitScore', 'SpladePooling'];

/**
 * The class a modules.json "type" names, when it is one coltrast runs. sentence-transformers up to 5.x writes
 * `sentence_transformers.models.Pooling`; 6.x writes where the class lives now, e.g.
 * `sentence_transformers.base.modules.transformer.Transformer` or
 * `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, and reads both. PyLate's ColBERT
 * saves name their token projection `pylate.models.Dense.Dense`, which sentence-transformers reads as its Dense.
 */
export function moduleClass(type: string): ModuleClass | null {
  if (type === 'pylate.models.Dense.Dense') return 'Dense';
  const parts = type.split('.');
  const name = parts[parts.length - 1] as ModuleClass;
  const fromSt = parts[0] === 'sentence_transformers' || (parts.length === 2 && parts[0] === 'models');
  if (fromSt && parts.length === 3 && LEGACY_TRANSFORMERS.includes(name)) return 'Transformer';
  // A SparseEncoder's transformer with its masked-LM head (sentence-transformers 5.x; 6.x reads it still).
  if (fromSt && name === ('MLMTransformer' as string)) return 'Transformer';
  return fromSt && MODULE_CLASSES.includes(name) ? name : null;
}

/**
 * The Transformer module's types in sentence-transformers before its Transformer class (0.2, 0.3): one class per
 * architecture, `sentence_transformers.models.BERT` and the like, saved with the model's files in a subfolder (0_BERT).
 * The files are a Hugging Face model's all the same; config.json's model_type says which.
 */
const LEGACY_TRANSFORMERS: readonly string[] = ['BERT', 'RoBERTa', 'DistilBERT', 'XLMRoBERTa', 'CamemBERT', 'ALBERT', 'XLNet', 'T5'];

/** sentence-transformers 6.x's Pooling "pooling_mode" values, by our mode name. */
const POOLING_MODE_NAMES: Record<string, PoolingMode | 'weightedmean'> = {
  cls: 'cls',
  mean: 'mean',
  max: 'max',
  mean_sqrt_len_tokens: 'mean_sqrt_len',
  lasttoken: 'lasttoken',
  weightedmean: 'weightedmean',
};

type ModuleInput = 'sentence_embedding' | 'token_embeddings';

/** A module config's "module_input_name" (sentence-transformers 6.x): what the module reads, when coltrast
 * runs it there (`allowed`); `fallback` when the config does not say. */
function moduleInput(config: Record<string, unknown>, file: string, what: string, allowed: readonly ModuleInput[], fallback: ModuleInput): ModuleInput {
  const name = config.module_input_name ?? fallback;
  if (!allowed.includes(name as ModuleInput)) {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `${what} config ${file}: module_input_name ${JSON.stringify(name)} is not supported here (only ${allowed.map((a) => `"${a}"`).join(' or ')})`,
    );
  }
  return name as ModuleInput;
}

/** Where a causal-LM reranker's LogitScore module keeps its config. */
const LOGIT_SCORE_DIR = '1_LogitScore';
/**
 * Tokenizer files written verbatim when a model is saved, as they were when it loaded (tokenizer.json is required, the
 * rest optional).
 */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'chat_template.jinja'];

/** sentence-transformers' Dense module: a linear projection of the pooled vector (the projection head). */
export interface DenseHead {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
  activation: 'identity' | 'tanh';
  /** Its weights (linear.weight, linear.bias); absent for a head made in this process and not yet saved. */
  weightsPath?: string;
  /** Its folder inside the model folder, when read from one. */
  modulePath?: string;
}

/** The last of a model's Dense modules after pooling, which sets the pooled vector's width; none without them. */
export function lastDense(files: { dense?: DenseHead; denseStack?: DenseHead[] }): DenseHead | undefined {
  return files.denseStack?.at(-1) ?? files.dense;
}

/** sentence-transformers' names of the activations a Dense head may use. */
const ACTIVATIONS: Record<string, DenseHead['activation']> = {
  'torch.nn.modules.linear.Identity': 'identity',
  'torch.nn.modules.activation.Tanh': 'tanh',
};

/** ColBERT-style query expansion (sentence-transformers' Transformer.query_expansion). */
export interface QueryExpansion {
  /** 'fixed': every query is cut or padded to `length` tokens; 'min': only padded up to it. */
  strategy: 'fixed' | 'min';
  /** Whether the encoder attends to the expansion positions (they are scored either way). */
  attend: boolean;
  /** The token written at expansion positions (default: the tokenizer's mask token). */
  token: string | null;
  length: number;
}

/**
 * What makes a model multi-vector (late interaction, ColBERT-style): sentence-transformers'
 * MultiVectorEncoder folders, and PyLate's (its "ColBERT" model type, read the way sentence-transformers reads it).
 */
export interface MultiVectorConfig {
  format: 'sentence-transformers MultiVectorEncoder' | 'PyLate ColBERT';
  /** Token limits per task (queries without expansion; documents), when the model sets them. */
  queryLength?: number;
  documentLength?: number;
  queryExpansion?: QueryExpansion;
  /** Tokens dropped from scoring (punctuation in ColBERT), for the tasks in `skiplistTasks`. */
  skiplistWords: string[];
  skiplistTasks: string[];
  /** When set, documents keep only these token ids (image-patch models). */
  keepOnlyTokenIds?: number[];
  /** Token vectors are L2-normalized (a token-level Normalize module). */
  normalize: boolean;
  /** 'maxsim', or 'meanmaxsim' (divided by the query's token count). */
  similarity: 'maxsim' | 'meanmaxsim';
  /** Prefixes such as "[unused0]" that PyLate inserted as single tokens, to register as special tokens. */
  prefixTokens: string[];
  /**
   * A HierarchicalTokenPooling module (sentence-transformers 6): the token vectors of texts embedded for `tasks`
   * (no task counts as 'document') pooled to about 1 / poolFactor (lib/token-pooling.ts).
   */
  tokenPooling?: { poolFactor: number; protectedTokens: number; tasks: string[] };
}

export interface ModelDirectory {
  dir: string;
  /**
   * The Transformer module's folder, where config.json, the weights, the tokenizer files and sentence_bert_config.json
   * are: `dir` itself, or in an older sentence-transformers save its subfolder (0_Transformer, 0_BERT).
   */
  transformerDir: string;
  /** config.json as text (handed to native code) and parsed. */
  configText: string;
  config: Record<string, unknown>;
  /** model.safetensors, or for sharded weights model.safetensors.index.json (then `weightShards` holds the files). */
  weightsPath: string;
  /** Sharded weights: the shard files model.safetensors.index.json names, in order. */
  weightShards?: string[];
  tokenizerPath: string;
  /** tokenizer.json's fileVersion when the folder was read: the key of its bytes as the model's tokenizer loaded them. */
  tokenizerVersion: string;
  /** The other TOKENIZER_FILES the folder had when it was read, as they were then (a save writes these). */
  tokenizerFiles: Record<string, Buffer>;
  pooling: PoolingMode;
  normalize: boolean;
  /** The Dense module after pooling, when modules.json has one. */
  dense?: DenseHead;
  /** The Dense modules right after that one, in order (EmbeddingGemma's 3072 → 768 after its 768 → 3072); usually none. */
  denseStack?: DenseHead[];
  maxSeqLength: number;
  /** sentence-transformers' do_lower_case: lowercase text before tokenizing. */
  lowercase: boolean;
  /** Where pooling and normalization came from: 'modules.json', or a default for a plain Hugging Face folder. */
  source: 'sentence-transformers' | 'huggingface (default mean pooling, no normalization)';
  /** sentence-transformers' named prompts (config_sentence_transformers.json), e.g. { query: 'query: ' }. */
  prompts: Record<string, string>;
  defaultPromptName: string | null;
  /** Pooling counts the prompt's tokens (sentence-transformers' include_prompt, default true). */
  includePrompt: boolean;
  /** config_sentence_transformers.json's similarity_fn_name, when it has one (written back on save). */
  similarity: string | null;
  /** Set for multi-vector (ColBERT-style) models, which embed to token vectors only. */
  multiVector?: MultiVectorConfig;
  /** The model was made multi-vector in this process (train({ multiVector })): save writes its configs anew. */
  madeMultiVector?: boolean;
  /** Set when the folder was read as a cross-encoder (readModelDirectory(dir, 'cross-encoder')). */
  crossEncoder?: CrossEncoderConfig;
  /** A chat template in place of the folder's (a reranker started from a causal LM with its own); saved as chat_template.jinja. */
  chatTemplate?: string;
  /** Set when the folder was read as a sparse encoder (readModelDirectory(dir, 'sparse')). */
  sparse?: SparseConfig;
  /** An inference-free sparse encoder's query route (readSparseEncoderDirectory): its documents' route is the rest. */
  staticQueries?: StaticQueryRoute;
}

/**
 * An inference-free SPLADE's query route (sentence-transformers' Router with a SparseStaticEmbedding for queries): a
 * weight per vocabulary entry, and the tokenizer that finds a query's entries (its own special tokens left out).
 */
export interface StaticQueryRoute {
  /** The module's folder, with model.safetensors ("weight": one float per vocabulary entry) and the tokenizer files. */
  dir: string;
  weightsPath: string;
  tokenizerPath: string;
  maxSeqLength: number;
  lowercase: boolean;
  /** The route a text without a task takes (router_config.json's default_route): 'document' unless it says 'query'. */
  defaultRoute: 'query' | 'document';
}

/**
 * A sparse (SPLADE) encoder's pooling of its masked-LM logits, sentence-transformers' SpladePooling: log(1 + relu(x))
 * (twice for 'log1p_relu'), then the maximum or the sum over the text's tokens.
 */
export interface SparseConfig {
  pooling: 'max' | 'sum';
  activation: 'relu' | 'log1p_relu';
}

/**
 * How a causal LM becomes a reranker: the chat template pairs go through, and LogitScore's tokens (the true one, and the
 * false one whose logit is subtracted, if any).
 */
export interface DecoderRerankerStart {
  chatTemplate?: string;
  tokens?: [string] | [string, string];
}

/** The activations sentence-transformers' CrossEncoder may apply to the logits, by their saved names. */
const SCORE_ACTIVATIONS: Record<string, CrossEncoderConfig['activation']> = {
  'torch.nn.modules.activation.Sigmoid': 'sigmoid',
  'torch.nn.modules.linear.Identity': 'identity',
  'torch.nn.modules.activation.Tanh': 'tanh',
};

/** A cross-encoder: a transformer with Hugging Face's sequence-classification head, scoring text pairs. */
export interface CrossEncoderConfig {
  format: 'sentence-transformers CrossEncoder' | 'huggingface sequence classification';
  /** Outputs of the classifier (1 for a reranker's relevance score). */
  numLabels: number;
  /** config.json's id2label, in label order. */
  labels: string[];
  /** What predict() applies to the logits by default (sentence-transformers' activation_fn). */
  activation: 'sigmoid' | 'identity' | 'tanh';
  /**
   * A reranker on a decoder LLM (DECODER_SEQUENCE_CLASSIFICATION's model types), scored on the last real token: `chat`
   * when pairs go through the chat template as a "query" and a "document" message (sentence-transformers 6 does so
   * when sentence_bert_config.json's modality_config has "message", or, without one, when the tokenizer has a chat
   * template), else as text pairs. `logitScore`: a causal LM scored by sentence-transformers' LogitScore (the true
   * token's logit, minus the false token's), each token an id or, for the default ('yes' / 'no'), a token to look up.
   */
  decoder?: { chat: boolean; logitScore?: { trueToken: number | string; falseToken: number | string | null } };
}

function filesError(message: string): ColtrastError {
  return new ColtrastError('MODEL_FILES', message);
}

export function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw filesError(`cannot read ${what} ${file}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw filesError(`${what} ${file} is not valid JSON: ${(error as Error).message}`);
  }
}

/**
 * The tokenizer's model_max_length capped by the model's `positions` (transformers' AutoTokenizer limit); `positions`
 * when tokenizer_config.json has none (or the huge sentinel, 1e30, of configs without a real limit).
 */
function tokenizerLimit(dir: string, positions: number): number {
  const tokConfigPath = path.join(dir, 'tokenizer_config.json');
  const tokConfig = fs.existsSync(tokConfigPath) ? readJson(tokConfigPath, 'tokenizer_config.json') : undefined;
  if (isObject(tokConfig) && typeof tokConfig.model_max_length === 'number' && tokConfig.model_max_length < 1e6) {
    // A token count, as for max_seq_length (readModelDirectory).
    if (!Number.isInteger(tokConfig.model_max_length) || tokConfig.model_max_length < 2) {
      throw filesError(`${tokConfigPath}: model_max_length must be a whole number of tokens, at least 2; got ${tokConfig.model_max_length}`);
    }
    return Math.min(tokConfig.model_max_length, positions);
  }
  return positions;
}

/**
 * The longest input a model's position embeddings hold: max_position_embeddings, less the positions that RoBERTa-style
 * numbering (RoBERTa, XLM-RoBERTa, CamemBERT, MPNet) skips, as it counts from the padding id + 1; Infinity when the
 * config does not say.
 */
export function positionLimit(config: Record<string, unknown>): number {
  const positions = config.max_position_embeddings;
  if (typeof positions !== 'number') return Infinity;
  if (config.model_type === 'mpnet') return positions - 2;  // MPNet's padding index is 1 whatever the config says
  if (['roberta', 'xlm-roberta', 'camembert'].includes(config.model_type as string) && typeof config.pad_token_id === 'number') {
    return positions - config.pad_token_id - 1;
  }
  return positions;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface ModuleEntry {
  type: string;
  path: string;
}

function readModules(dir: string): ModuleEntry[] | null {
  const file = path.join(dir, 'modules.json');
  if (!fs.existsSync(file)) return null;
  return parseModules(readJson(file, 'modules.json'), file);
}

/** modules.json's entries (read from `file`), each module's path checked and normalized ('' for the model folder itself). */
export function parseModules(modules: unknown, file: string): ModuleEntry[] {
  if (!Array.isArray(modules) || modules.length === 0) throw filesError(`${file} must be a non-empty array`);
  return modules.map((m, i) => {
    if (!isObject(m) || typeof m.type !== 'string' || typeof m.path !== 'string') {
      throw filesError(`${file}: entry ${i} needs string "type" and "path"`);
    }
    // sentence-transformers joins the path to the model folder's: '../x' or an absolute path would read (and an index
    // fingerprint, hash) files of some other folder.
    const given = m.path.replace(/\\/g, '/');
    const normal = path.posix.normalize(given === '' ? '.' : given).replace(/\/+$/, '');
    if (path.posix.isAbsolute(given) || path.win32.isAbsolute(m.path) || normal === '..' || normal.startsWith('../')) {
      throw filesError(
        `${file}: entry ${i} (${m.type}) has path ${JSON.stringify(m.path)}, which is outside the model folder; a module's path is ` +
          'a folder inside it, relative to it ("" for the model folder itself, "1_Pooling" for a subfolder): correct it in modules.json',
      );
    }
    return { type: m.type, path: normal === '.' ? '' : normal };
  });
}

/**
 * Where modules.json puts the Transformer module (config.json, the weights, the tokenizer files and
 * sentence_bert_config.json), relative to the model folder: '' (the folder itself) in today's layout and in a folder
 * without modules.json; a subfolder in older sentence-transformers saves ("0_Transformer", and "0_BERT" before it), which
 * sentence-transformers reads the same. A subfolder that is not there is an error naming modules.json.
 */
function transformerPath(dir: string, modules: ModuleEntry[] | null): string {
  const entry = modules?.find((m) => moduleClass(m.type) === 'Transformer');
  if (!entry || entry.path === '') return '';
  const full = path.join(dir, entry.path);
  if (!fs.existsSync(full) || !fs.statSync(full).isDirectory()) {
    throw filesError(
      `${path.join(dir, 'modules.json')} puts the Transformer module (the model's config.json, weights and tokenizer) in ${JSON.stringify(entry.path)}, and ${full} ` +
        `is not a folder: move those files into it, or set that module's "path" to "" if they are in ${dir} itself`,
    );
  }
  return entry.path;
}

/**
 * The folder of `dir`'s Transformer module (transformerPath): `dir` itself, or in an older sentence-transformers save
 * its subfolder (0_Transformer, 0_BERT). Throws MODEL_FILES for a modules.json that cannot be read or points outside.
 */
export function transformerFolder(dir: string): string {
  const sub = transformerPath(dir, readModules(dir));
  return sub ? path.join(dir, sub) : dir;
}

/**
 * sentence_bert_config.json's shape and the types of the keys every model reads. A list, or "do_lower_case": "true",
 * was passed over as if absent; sentence-transformers takes Python's truth of the string and lowercases, so the two
 * embedded the same text differently. A max_seq_length that is not a number fell back to the tokenizer's limit.
 */
function checkStConfig(stConfig: unknown, file: string): void {
  if (!isObject(stConfig)) throw filesError(`${file} must be a JSON object (sentence-transformers' { "max_seq_length": ..., "do_lower_case": ... })`);
  const { do_lower_case: lower, max_seq_length: length } = stConfig;
  if (lower !== undefined && lower !== null && typeof lower !== 'boolean') throw filesError(`${file}: do_lower_case must be true or false; got ${JSON.stringify(lower)}`);
  if (length !== undefined && length !== null && typeof length !== 'number') {
    throw filesError(`${file}: max_seq_length must be a whole number of tokens, at least 2 (or null for the tokenizer's limit); got ${JSON.stringify(length)}`);
  }
}

function readPooling(dir: string, modulePath: string): { mode: PoolingMode; includePrompt: boolean } {
  const file = path.join(dir, modulePath, 'config.json');
  if (!fs.existsSync(file)) throw filesError(`modules.json lists a Pooling module but ${file} is missing`);
  const config = readJson(file, 'pooling config');
  if (!isObject(config)) throw filesError(`pooling config ${file} must be a JSON object`);
  if (config.include_prompt !== undefined && typeof config.include_prompt !== 'boolean') {
    throw filesError(`pooling config ${file}: include_prompt must be true or false`);
  }
  const includePrompt = config.include_prompt !== false;
  const mode = readPoolingModeOf(config, file);
  if (!includePrompt && (mode === 'cls' || mode === 'lasttoken')) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `pooling config ${file}: include_prompt false with ${mode} pooling is not supported (mean, max and mean_sqrt_len are)`);
  }
  return { mode, includePrompt };
}

function readPoolingModeOf(config: Record<string, unknown>, file: string): PoolingMode {
  if (config.pooling_mode !== undefined) return readPoolingMode(config.pooling_mode, file);
  const on = POOLING_MODES.filter((mode) => config[POOLING_KEYS[mode]] === true);
  if (config.pooling_mode_weightedmean_tokens === true) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `pooling config ${file}: weighted-mean pooling is not supported yet`);
  }
  if (on.length === 0) throw filesError(`pooling config ${file} enables no pooling mode`);
  if (on.length > 1) {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `pooling config ${file} enables ${on.join(' + ')}: concatenated pooling modes are not supported yet`,
    );
  }
  return on[0];
}

/** sentence-transformers 6.x's form: "pooling_mode": "mean" (or a list of modes, concatenated). */
function readPoolingMode(value: unknown, file: string): PoolingMode {
  const modes = Array.isArray(value) ? value : [value];
  if (modes.length === 0 || !modes.every((m) => typeof m === 'string' && m in POOLING_MODE_NAMES)) {
    throw filesError(`pooling config ${file}: pooling_mode ${JSON.stringify(value)} is not one of ${Object.keys(POOLING_MODE_NAMES).join(', ')}`);
  }
  if (modes.length > 1) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `pooling config ${file} pools ${modes.join(' + ')}: concatenated pooling modes are not supported yet`);
  }
  const mode = POOLING_MODE_NAMES[modes[0] as string];
  if (mode === 'weightedmean') {
    throw new ColtrastError('UNSUPPORTED_MODEL', `pooling config ${file}: weighted-mean pooling is not supported yet`);
  }
  return mode;
}

function readDense(dir: string, modulePath: string, input: ModuleInput): DenseHead {
  const configFile = path.join(dir, modulePath, 'config.json');
  if (!fs.existsSync(configFile)) throw filesError(`modules.json lists a Dense module but ${configFile} is missing`);
  const config = readJson(configFile, 'Dense config');
  if (!isObject(config) || !Number.isInteger(config.in_features) || !Number.isInteger(config.out_features)) {
    throw filesError(`Dense config ${configFile} needs integer "in_features" and "out_features"`);
  }
  // A multi-vector model's Dense projects every token (PyLate's configs predate the name and mean that too).
  moduleInput(config, configFile, 'Dense', [input], input);
  if (config.use_residual === true) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `Dense config ${configFile}: use_residual is not supported (a plain linear layer and activation only)`);
  }
  const name = typeof config.activation_function === 'string' ? config.activation_function : 'torch.nn.modules.activation.Tanh';
  const activation = ACTIVATIONS[name];
  if (!activation) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `Dense config ${configFile}: activation ${name} is not supported (Identity or Tanh)`);
  }
  const weightsPath = path.join(dir, modulePath, 'model.safetensors');
  if (!fs.existsSync(weightsPath)) {
    const pickled = fs.existsSync(path.join(dir, modulePath, 'pytorch_model.bin'));
    throw filesError(
      pickled
        ? `${path.join(dir, modulePath)} has pytorch_model.bin but no model.safetensors: coltrast loads safetensors only (never pickle); ` +
            're-save the model with a current sentence-transformers (model.save(dir, safe_serialization=True))'
        : `the Dense module ${path.join(dir, modulePath)} has no model.safetensors`,
    );
  }
  const bias = config.bias !== false;
  return { inFeatures: config.in_features as number, outFeatures: config.out_features as number, bias, activation, weightsPath, modulePath };
}

/**
 * Reads and checks everything `Encoder.load` (kind 'embedding') or `CrossEncoder.load` (kind 'cross-encoder')
 * needs from `dir`.
 */
/**
 * The weights of a model folder: model.safetensors, or the shards that model.safetensors.index.json maps the
 * tensors to (each must be there). Undefined when the folder has neither.
 */
export function weightFiles(dir: string): { weightsPath: string; shards?: string[] } | undefined {
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return { weightsPath: single };
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  if (!fs.existsSync(indexPath)) return undefined;
  const index = readJson(indexPath, 'model.safetensors.index.json');
  const map = isObject(index) ? index.weight_map : undefined;
  // A file of the folder: "..", "." or "" name a folder, which the native side failed to map ("No such device").
  if (!isObject(map) || Object.values(map).some((f) => typeof f !== 'string' || f.includes('/') || f.includes('\\') || f === '' || f === '.' || f === '..')) {
    throw filesError(`${indexPath} has no "weight_map" of tensor names to shard files in the folder`);
  }
  const shards = [...new Set(Object.values(map) as string[])].sort().map((f) => path.join(dir, f));
  const missing = shards.filter((f) => !fs.existsSync(f));
  if (shards.length === 0 || missing.length > 0) {
    throw filesError(`${dir}: model.safetensors.index.json names ${missing.length ? `${missing.map((f) => path.basename(f)).join(', ')}, which the folder lacks` : 'no shard files'}`);
  }
  return { weightsPath: indexPath, shards };
}

/**
 * Reads a model folder. `base`: for a sentence-transformers folder saved with a LoRA adapter, which holds the adapter,
 * the tokenizer and the modules but no config.json or weights: the base model's folder, whose config.json and weights
 * are read instead.
 */
export function readModelDirectory(dir: string, kind: 'embedding' | 'cross-encoder' | 'sparse' = 'embedding', base?: string): ModelDirectory {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw filesError(`model folder ${dir} does not exist`);
  // Before its files are looked for: an inference-free SPLADE keeps them in its routes' folders.
  if (kind !== 'sparse' && isSparseEncoderFolder(dir)) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a sentence-transformers SparseEncoder (sparse, SPLADE-style vectors): load it with SparseEncoder.load (train it with train({ sparse: true }))`);
  }
  const modules = readModules(dir);
  // The Transformer's files: in the folder itself, or in an older save's subfolder (0_Transformer, 0_BERT).
  const transformerSub = transformerPath(dir, modules);
  const transformerDir = transformerSub ? path.join(dir, transformerSub) : dir;
  const weightsDir = base === undefined ? transformerDir : transformerFolder(base);
  const configPath = path.join(weightsDir, 'config.json');
  if (!fs.existsSync(configPath)) {
    throw filesError(`${weightsDir} has no config.json: it is not a Hugging Face / sentence-transformers model folder`);
  }
  const configText = fs.readFileSync(configPath, 'utf8');
  const config = readJson(configPath, 'config.json');
  if (!isObject(config)) throw filesError(`config.json in ${weightsDir} must be a JSON object`);
  if (typeof config.model_type !== 'string') throw filesError(`config.json in ${weightsDir} has no "model_type" string`);

  const weights = weightFiles(weightsDir);
  if (!weights) {
    const pickled = ['pytorch_model.bin', 'model.pt', 'model.ckpt'].find((f) => fs.existsSync(path.join(weightsDir, f)));
    throw filesError(
      pickled
        ? `${weightsDir} has ${pickled} but no model.safetensors: coltrast loads safetensors only (never pickle). Convert once ` +
            'in Python: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)'
        : `${weightsDir} has no model.safetensors`,
    );
  }
  const tokenizerPath = path.join(transformerDir, 'tokenizer.json');
  if (!fs.existsSync(tokenizerPath)) {
    throw filesError(
      `${transformerDir} has no tokenizer.json. Save a fast tokenizer in Python with AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`,
    );
  }
  // The tokenizer files as they are now, which the model runs with: a save writes them as they were, not as the folder
  // has them by then (writeModelFiles). tokenizer.json's bytes are kept by the tokenizer as it loads (off the event
  // loop: tens of megabytes for a large vocabulary), found again by its version; the other files are small.
  const tokenizerVersion = fileVersion(fs.statSync(tokenizerPath));
  const tokenizerFiles = filesAsTheyAre(transformerDir, TOKENIZER_FILES.slice(1));

  if (!modules && fs.existsSync(path.join(dir, 'artifact.metadata'))) {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `${dir} is a Stanford ColBERT checkpoint (artifact.metadata, no modules.json), which coltrast does not read. Convert it once in ` +
        'Python: MultiVectorEncoder(dir).save(new_dir) (sentence-transformers 6), then load new_dir',
    );
  }
  const stModel = readStModelConfig(dir);
  const modelType = typeof stModel.model_type === 'string' ? stModel.model_type : undefined;
  if (kind === 'embedding' && modelType === 'CrossEncoder') {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a cross-encoder (it scores text pairs, it does not embed): load it with CrossEncoder.load`);
  }
  const stConfigPath = path.join(transformerDir, 'sentence_bert_config.json');
  const stConfig = fs.existsSync(stConfigPath) ? readJson(stConfigPath, 'sentence_bert_config.json') : undefined;
  if (stConfig !== undefined) checkStConfig(stConfig, stConfigPath);
  const crossEncoder = kind === 'cross-encoder' ? readCrossEncoder(dir, transformerDir, config, modules, modelType, stModel, stConfig) : undefined;
  const order = (modules ?? []).map((m) => moduleClass(m.type) ?? m.type);
  const sparse = kind === 'sparse' ? readSparse(dir, modules, order, config, modelType) : undefined;
  const multi = !sparse && (modelType === 'MultiVectorEncoder' || modelType === 'ColBERT' || order.includes('MultiVectorMask'));
  let pooling: PoolingMode = 'mean';
  let includePrompt = true;
  let normalize = false;
  let dense: DenseHead | undefined;
  const denseStack: DenseHead[] = [];
  let mask: { config: Record<string, unknown>; file: string } | undefined;
  let tokenPooling: MultiVectorConfig['tokenPooling'];
  if (crossEncoder || sparse) {
    // A cross-encoder's one module, the Transformer with its classification head, was checked by readCrossEncoder; a
    // sparse encoder's two by readSparse.
  } else if (modules && !multi) {
    // Transformer, Pooling, then Dense modules one after another, then Normalize: the order sentence-transformers runs them in.
    const denseAt = order.indexOf('Dense');
    const denseEnd = order.lastIndexOf('Dense');
    const chained = order.slice(denseAt, denseEnd + 1).every((type) => type === 'Dense');
    if (denseAt >= 0 && (!chained || denseAt < order.indexOf('Pooling') || (order.includes('Normalize') && denseAt > order.indexOf('Normalize')))) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `modules.json in ${dir}: Dense modules one after another between Pooling and Normalize are supported, not ${order.join(' → ')}`);
    }
    for (const m of modules) {
      const type = moduleClass(m.type);
      if (type === 'Transformer') continue;
      if (type === 'Pooling') ({ mode: pooling, includePrompt } = readPooling(dir, m.path));
      else if (type === 'Dense' && !dense) dense = readDense(dir, m.path, 'sentence_embedding');
      else if (type === 'Dense') {
        const next = readDense(dir, m.path, 'sentence_embedding');
        const previous = lastDense({ dense, denseStack })!;
        if (next.inFeatures !== previous.outFeatures) {
          throw filesError(`modules.json in ${dir}: the Dense module ${m.path} takes ${next.inFeatures} features, and the one before it gives ${previous.outFeatures}`);
        }
        denseStack.push(next);
      } else if (type === 'Normalize') {
        readNormalizeInput(dir, m.path, ['sentence_embedding']);
        normalize = true;
      } else throw new ColtrastError('UNSUPPORTED_MODEL', `modules.json in ${dir}: module type ${m.type} is not supported yet`);
    }
    // One Transformer, then one Pooling: without a Pooling module (a Transformer alone gives token embeddings) the mean
    // pooling of a plain Hugging Face folder was run in its place, and save() wrote it into the model; modules out of
    // this order ran in it all the same.
    if (!/^Transformer,Pooling(,Dense)*(,Normalize)?$/.test(order.join())) {
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `modules.json in ${dir}: an embedding model of Transformer → Pooling → [Dense …] → [Normalize] is supported, not ${order.join(' → ')}` +
          (order.includes('Pooling') ? '' : ' (it has no Pooling module: give it one, 1_Pooling/config.json, as sentence-transformers saves it)'),
      );
    }
  } else if (modules) {
    // A multi-vector model: Transformer, at most one token-level Dense, then MultiVectorMask and Normalize, then
    // token pooling.
    const expected = ['Transformer', 'Dense', 'MultiVectorMask', 'Normalize', 'HierarchicalTokenPooling'];
    const ranks = order.map((name) => expected.indexOf(name));
    if (order[0] !== 'Transformer' || ranks.some((r, i) => r < 0 || (i > 0 && r <= ranks[i - 1]))) {
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `modules.json in ${dir}: a multi-vector model of Transformer → [Dense] → [MultiVectorMask] → [Normalize] → [HierarchicalTokenPooling] is supported, not ${order.join(' → ')}`,
      );
    }
    for (const m of modules) {
      const type = moduleClass(m.type);
      if (type === 'Dense') dense = readDense(dir, m.path, 'token_embeddings');
      else if (type === 'MultiVectorMask') mask = { config: readModuleConfig(dir, m.path, 'MultiVectorMask'), file: path.join(dir, m.path, 'config.json') };
      else if (type === 'HierarchicalTokenPooling') tokenPooling = readTokenPooling(dir, m.path);
      // A Normalize of the pooled vector does nothing in a multi-vector model, as in sentence-transformers.
      else if (type === 'Normalize') normalize = readNormalizeInput(dir, m.path, ['sentence_embedding', 'token_embeddings']) === 'token_embeddings';
    }
  } else if (multi) {
    throw filesError(`${dir} says it is a ${modelType} model but has no modules.json`);
  }
  const rawPrompts = readPrompts(stModel, dir);
  const positions = positionLimit(config);
  let maxSeqLength = positions;
  let lowercase = false;
  if (isObject(stConfig)) lowercase = stConfig.do_lower_case === true;
  if (isObject(stConfig) && typeof stConfig.max_seq_length === 'number') {
    // A token count: 20.5 would reach the tokenizer as a length and be saved back so; 0 or 1 holds no text between
    // the special tokens (and was refused as a length that "cannot be told", although the file tells it).
    if (!Number.isInteger(stConfig.max_seq_length) || stConfig.max_seq_length < 2) {
      throw filesError(`${stConfigPath}: max_seq_length must be a whole number of tokens, at least 2; got ${stConfig.max_seq_length}`);
    }
    maxSeqLength = Math.min(stConfig.max_seq_length, positions);
  } else {
    maxSeqLength = tokenizerLimit(transformerDir, positions);
  }
  if (!Number.isFinite(maxSeqLength) || maxSeqLength < 2) {
    throw filesError(`cannot tell the maximum sequence length of ${dir}: set max_seq_length in sentence_bert_config.json`);
  }
  return {
    dir,
    transformerDir,
    configText,
    config,
    weightsPath: weights.weightsPath,
    ...(weights.shards && { weightShards: weights.shards }),
    tokenizerPath,
    tokenizerVersion,
    tokenizerFiles,
    pooling,
    normalize,
    dense,
    ...(denseStack.length > 0 && { denseStack }),
    maxSeqLength,
    lowercase,
    source: modules ? 'sentence-transformers' : 'huggingface (default mean pooling, no normalization)',
    ...rawPrompts,
    includePrompt,
    similarity: typeof stModel.similarity_fn_name === 'string' ? stModel.similarity_fn_name : null,
    ...(sparse && { sparse }),
    multiVector: multi ? { ...readMultiVector(dir, stConfigPath, modelType, stModel, isObject(stConfig) ? stConfig : {}, mask, normalize), ...(tokenPooling && { tokenPooling }) } : undefined,
    crossEncoder,
  };
}

/**
 * A sparse encoder's modules: sentence-transformers' SparseEncoder of a Transformer with its masked-LM head (6.x's
 * Transformer with transformer_task "fill-mask", 5.x's MLMTransformer) then SpladePooling; or, without modules.json, a
 * Hugging Face *ForMaskedLM folder, pooled as sentence-transformers' SparseEncoder pools one (max, relu).
 */
function readSparse(dir: string, modules: ModuleEntry[] | null, order: string[], config: Record<string, unknown>, modelType: string | undefined): SparseConfig {
  if (!modules) {
    if (!architecturesOf(config).some((a) => a.endsWith('ForMaskedLM'))) {
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `${dir} is not a sparse encoder: it has no modules.json, and config.json's architectures name no *ForMaskedLM model (a sparse encoder runs a masked language model's head)`,
      );
    }
    return { pooling: 'max', activation: 'relu' };
  }
  if (order.join() !== 'Transformer,SpladePooling') {
    const kinds: Record<string, string> = { Router: 'training an inference-free SPLADE (a Router with SparseStaticEmbedding; SparseEncoder.load runs one)', SparseAutoEncoder: 'CSR (a SparseAutoEncoder over a dense model)' };
    const known = order.map((name) => name.split('.').pop()!).find((name) => name in kinds);
    const shown = order.map((name) => name.split('.').pop()).join(' → ');
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      modelType === 'SparseEncoder'
        ? `modules.json in ${dir}: ${known ? `${kinds[known]} is not supported yet; ` : ''}a sparse encoder of Transformer → SpladePooling is supported, not ${shown}`
        : `${dir} is not a sparse encoder (its modules are ${shown}): load it with Encoder.load, or give SparseEncoder.load a SparseEncoder or *ForMaskedLM folder`,
    );
  }
  return readSpladePooling(dir, modules[order.indexOf('SpladePooling')].path);
}

/** A SpladePooling module's settings (its config.json at `modulePath` in `dir`), checked: max or sum, relu or log1p_relu. */
function readSpladePooling(dir: string, modulePath: string): SparseConfig {
  const file = path.join(dir, modulePath, 'config.json');
  const c = readModuleConfig(dir, modulePath, 'SpladePooling');
  const pooling = c.pooling_strategy ?? 'max';
  const activation = c.activation_function ?? 'relu';
  if (pooling !== 'max' && pooling !== 'sum') throw filesError(`SpladePooling config ${file}: pooling_strategy must be "max" or "sum"; got ${JSON.stringify(pooling)}`);
  if (activation !== 'relu' && activation !== 'log1p_relu') throw filesError(`SpladePooling config ${file}: activation_function must be "relu" or "log1p_relu"; got ${JSON.stringify(activation)}`);
  return { pooling, activation };
}

/** config.json's architectures (the strings among them). */
function architecturesOf(config: unknown): string[] {
  return isObject(config) && Array.isArray(config.architectures) ? config.architectures.filter((a): a is string => typeof a === 'string') : [];
}

/** Whether config.json names a Hugging Face sequence-classification head (what a cross-encoder is). */
function isSequenceClassification(config: unknown): boolean {
  return architecturesOf(config).some((a) => a.endsWith('ForSequenceClassification'));
}

/** The model types a sparse encoder runs on (native/mlm_head.cc), and their *ForMaskedLM class. */
export const MASKED_LM: Record<string, string> = {
  bert: 'BertForMaskedLM',
  distilbert: 'DistilBertForMaskedLM',
  roberta: 'RobertaForMaskedLM',
  'xlm-roberta': 'XLMRobertaForMaskedLM',
  camembert: 'CamembertForMaskedLM',
  mpnet: 'MPNetForMaskedLM',
  modernbert: 'ModernBertForMaskedLM',
};

/**
 * The start of a sparse encoder's training: a SparseEncoder or *ForMaskedLM folder as it is (readModelDirectory(dir,
 * 'sparse')), or a single-vector embedding model's or base model's folder as a *ForMaskedLM whose masked-LM head is to
 * be drawn anew where its weights have none (the native load's newHead), as sentence-transformers' SparseEncoder(model)
 * makes one (transformers' AutoModelForMaskedLM on a base checkpoint). Its pooling, Dense and Normalize modules go:
 * SPLADE pooling reads the transformer's token states; its prompts and max_seq_length stay.
 */
export function readSparseStart(dir: string): ModelDirectory & { sparse: SparseConfig } {
  if (isSparseEncoderFolder(dir)) {
    const files = readSparseEncoderDirectory(dir);
    if (files.staticQueries) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is an inference-free SPLADE (a Router with a SparseStaticEmbedding for queries): training an inference-free SPLADE is not supported yet (SparseEncoder.load runs one); train a sparse encoder of Transformer → SpladePooling`);
    }
    return files;
  }
  const files = readModelDirectory(dir, 'embedding');
  // A plain *ForMaskedLM folder: pooled as readSparse pools one without modules.json.
  if (files.source !== 'sentence-transformers' && architecturesOf(files.config).some((a) => a.endsWith('ForMaskedLM'))) return { ...files, sparse: { pooling: 'max', activation: 'relu' } };
  if (files.multiVector) throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a multi-vector model: a sparse encoder starts from a masked language model or a single-vector embedding model`);
  const modelType = String(files.config.model_type);
  const architecture = MASKED_LM[modelType];
  if (!architecture) throw new ColtrastError('UNSUPPORTED_MODEL', `a sparse encoder on ${modelType} is not supported (${Object.keys(MASKED_LM).join(', ')} are)`);
  const config = { ...files.config, architectures: [architecture] };
  return { ...files, config, configText: configJson(files.configText, config), sparse: { pooling: 'max', activation: 'relu' }, dense: undefined, denseStack: undefined, normalize: false, similarity: null };
}

/**
 * A sparse encoder's folder as SparseEncoder.load reads it: readModelDirectory(dir, 'sparse'), or an inference-free
 * SPLADE's (a Router of a SparseStaticEmbedding for queries and a masked LM with SpladePooling for documents: the
 * documents' Transformer read from its own folder, the SpladePooling's settings and the model's prompts and similarity
 * from theirs, and the queries' route in `staticQueries`).
 */
export function readSparseEncoderDirectory(dir: string): ModelDirectory & { sparse: SparseConfig } {
  const modules = readModules(dir);
  if (!modules || modules.length !== 1 || modules[0].type.split('.').pop() !== 'Router') return readModelDirectory(dir, 'sparse') as ModelDirectory & { sparse: SparseConfig };
  const file = path.join(dir, modules[0].path, 'router_config.json');
  const bad = (problem: string) => new ColtrastError('UNSUPPORTED_MODEL', `${file}: ${problem}; a Router of a SparseStaticEmbedding for queries and a Transformer (or MLMTransformer) then SpladePooling for documents is supported (inference-free SPLADE)`);
  if (!fs.existsSync(file)) throw filesError(`modules.json in ${dir} names a Router, and ${file} is missing`);
  const config = readJson(file, 'router_config.json');
  if (!isObject(config) || !isObject(config.types) || !isObject(config.structure)) throw filesError(`${file} must be a JSON object with "types" and "structure"`);
  const types = config.types as Record<string, unknown>;
  const structure = config.structure as Record<string, unknown>;
  const routes = Object.keys(structure).sort();
  if (routes.join() !== 'document,query') throw bad(`its routes are ${routes.join(', ') || 'none'}, not query and document`);
  const route = (name: string) => {
    const names = structure[name];
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw filesError(`${file}: structure.${name} must be a list of module names`);
    // Each module's folder, checked as modules.json's paths are (inside the model folder).
    const entries = (names as string[]).map((n) => ({ path: n, type: String(types[n] ?? '') }));
    return (entries.length > 0 ? parseModules(entries, file) : []).map((m) => ({ path: m.path, type: m.type.split('.').pop() }));
  };
  const query = route('query');
  const document = route('document');
  if (query.length !== 1 || query[0].type !== 'SparseStaticEmbedding') throw bad(`its query route is ${query.map((m) => m.type).join(' → ')}`);
  if (document.length !== 2 || !['Transformer', 'MLMTransformer'].includes(document[0].type!) || document[1].type !== 'SpladePooling') throw bad(`its document route is ${document.map((m) => m.type).join(' → ')}`);
  for (const m of [...query, ...document]) {
    if (!fs.existsSync(path.join(dir, m.path))) throw filesError(`${file}: module folder ${JSON.stringify(m.path)} is missing in ${dir}`);
  }
  const parameters = isObject(config.parameters) ? config.parameters : {};
  const defaultRoute = parameters.default_route === 'query' ? 'query' : 'document';
  // The documents' masked LM: its folder read as a plain *ForMaskedLM one, then the Router's settings put on it.
  const files = readModelDirectory(path.join(dir, document[0].path), 'sparse') as ModelDirectory & { sparse: SparseConfig };
  const sparse = readSpladePooling(dir, document[1].path);
  const stModel = readStModelConfig(dir);
  const { prompts, defaultPromptName } = readPrompts(stModel, dir);
  const staticDir = path.join(dir, query[0].path);
  const weightsPath = path.join(staticDir, 'model.safetensors');
  const tokenizerPath = path.join(staticDir, 'tokenizer.json');
  if (!fs.existsSync(weightsPath)) throw filesError(`the SparseStaticEmbedding folder ${staticDir} has no model.safetensors`);
  if (!fs.existsSync(tokenizerPath)) throw filesError(`the SparseStaticEmbedding folder ${staticDir} has no tokenizer.json`);
  const tokenizerConfig = fs.existsSync(path.join(staticDir, 'tokenizer_config.json')) ? readJson(path.join(staticDir, 'tokenizer_config.json'), 'tokenizer_config.json') : {};
  const tc = isObject(tokenizerConfig) ? tokenizerConfig : {};
  const maxLength = typeof tc.model_max_length === 'number' && tc.model_max_length > 0 && tc.model_max_length < 1e9 ? tc.model_max_length : files.maxSeqLength;
  return {
    ...files,
    dir,
    sparse,
    prompts,
    defaultPromptName,
    similarity: typeof stModel.similarity_fn_name === 'string' ? stModel.similarity_fn_name : null,
    staticQueries: { dir: staticDir, weightsPath, tokenizerPath, maxSeqLength: maxLength, lowercase: tc.do_lower_case === true, defaultRoute },
  };
}

/** Whether `dir` is a folder of a sentence-transformers SparseEncoder (its config_sentence_transformers.json says so). */
export function isSparseEncoderFolder(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config_sentence_transformers.json')) && readStModelConfig(dir).model_type === 'SparseEncoder';
}

/** Whether `dir` holds a cross-encoder (sentence-transformers' CrossEncoder, or a *ForSequenceClassification model). */
export function isCrossEncoderFolder(dir: string): boolean {
  const configPath = path.join(dir, 'config.json');
  const config = fs.existsSync(configPath) ? readJson(configPath, 'config.json') : undefined;
  return readStModelConfig(dir).model_type === 'CrossEncoder' || isSequenceClassification(config);
}

/**
 * The model types whose *ForSequenceClassification head coltrast runs (a cross-encoder), and that class's name. The heads
 * (native/encoder_wrap.cc): BERT's pooler and classifier; RoBERTa's, MPNet's and ELECTRA's (GELU) classifier.dense and classifier.out_proj;
 * DistilBERT's pre_classifier (ReLU) and classifier; ModernBERT's head (dense, activation, norm; the first token or the
 * mean, classifier_pooling) and classifier.
 */
export const SEQUENCE_CLASSIFICATION: Record<string, string> = {
  bert: 'BertForSequenceClassification',
  roberta: 'RobertaForSequenceClassification',
  'xlm-roberta': 'XLMRobertaForSequenceClassification',
  camembert: 'CamembertForSequenceClassification',
  mpnet: 'MPNetForSequenceClassification',
  distilbert: 'DistilBertForSequenceClassification',
  electra: 'ElectraForSequenceClassification',
  'deberta-v2': 'DebertaV2ForSequenceClassification',
  modernbert: 'ModernBertForSequenceClassification',
};

/**
 * The decoder LLM families coltrast runs (Qwen3, Qwen2, Llama, Mistral, Gemma 3, 2 and 1, Phi-3), and their rerankers' class:
 * their *ForSequenceClassification (a `score` layer on the last real token), or their *ForCausalLM scored by
 * sentence-transformers' LogitScore. A new head is started on SEQUENCE_CLASSIFICATION's families only.
 */
export const DECODER_SEQUENCE_CLASSIFICATION: Record<string, string> = {
  llama: 'LlamaForSequenceClassification',
  mistral: 'MistralForSequenceClassification',
  qwen2: 'Qwen2ForSequenceClassification',
  qwen3: 'Qwen3ForSequenceClassification',
  gemma3_text: 'Gemma3TextForSequenceClassification',
  gemma2: 'Gemma2ForSequenceClassification',
  gemma: 'GemmaForSequenceClassification',
  phi3: 'Phi3ForSequenceClassification',
};

/**
 * The JSON text of a config read from `original` and changed, numbers written as floats (`2.0`) where `original` wrote
 * them so (keys matched by name, nested ones too): transformers 5 checks config fields' types and refuses an integer
 * literal for a float field (ModernBERT's initializer_cutoff_factor: 2.0), which JSON.stringify would write as `2`.
 */
export function configJson(original: string, value: unknown): string {
  const floats = new Set<string>();
  for (const [, key, number] of original.matchAll(/"((?:[^"\\]|\\.)*)"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)/g)) {
    if (/[.eE]/.test(number)) floats.add(key);
  }
  const text = JSON.stringify(value, null, 2).replace(/"((?:[^"\\]|\\.)*)": (-?\d+)(?=,?\n)/g, (all, key: string, n: string) => (floats.has(key) ? `"${key}": ${n}.0` : all));
  return text + '\n';
}

/**
 * An embedding model's folder as the start of a new one-label cross-encoder (a reranker), as
 * sentence-transformers' CrossEncoder(model) makes one: the same encoder, config.json naming the
 * sequence-classification architecture and one label, Sigmoid for predict(); the head itself is new (native).
 */
export function asNewCrossEncoder(files: ModelDirectory): ModelDirectory {
  const modelType = String(files.config.model_type);
  const architecture = SEQUENCE_CLASSIFICATION[modelType] ?? `${modelType}ForSequenceClassification`;
  const config = { ...files.config, architectures: [architecture], id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 } };
  // A pair's length, as sentence-transformers' CrossEncoder(model) takes it: the tokenizer's limit capped by the
  // positions, not the embedding model's max_seq_length (sentence_bert_config.json), which was per text.
  const pairLength = tokenizerLimit(files.transformerDir, positionLimit(files.config));
  return {
    ...files,
    maxSeqLength: Number.isFinite(pairLength) ? pairLength : files.maxSeqLength,
    config,
    configText: configJson(files.configText, config),
    pooling: 'cls',
    normalize: false,
    dense: undefined,
    denseStack: undefined,
    multiVector: undefined,
    prompts: {},
    defaultPromptName: null,
    similarity: null,
    crossEncoder: { format: 'sentence-transformers CrossEncoder', numLabels: 1, labels: ['LABEL_0'], activation: 'sigmoid' },
  };
}

/** Whether config.json is a decoder LLM's *ForCausalLM that coltrast runs a reranker on (LogitScore). */
export function isCausalDecoder(config: unknown): boolean {
  return isObject(config) && String(config.model_type) in DECODER_SEQUENCE_CLASSIFICATION && architecturesOf(config)[0]?.endsWith('ForCausalLM') === true;
}

/**
 * A decoder LLM's *ForCausalLM folder (read as a cross-encoder) as the start of a new reranker, as sentence-transformers'
 * CrossEncoder(causal LM) makes one: scored by LogitScore on `tokens` (default 'yes' against 'no'), each pair through
 * `chatTemplate` (default the folder's own).
 */
export function asNewDecoderReranker(files: ModelDirectory, start: DecoderRerankerStart = {}): ModelDirectory {
  const template = start.chatTemplate ?? readChatTemplate(files.transformerDir);
  const [trueToken, falseToken = null] = start.tokens ?? ['yes', 'no'];
  return {
    ...files,
    ...(start.chatTemplate !== undefined && { chatTemplate: start.chatTemplate }),
    prompts: {},
    defaultPromptName: null,
    crossEncoder: {
      format: 'sentence-transformers CrossEncoder',
      numLabels: 1,
      labels: ['LABEL_0'],
      activation: 'sigmoid',
      decoder: { chat: template !== undefined, logitScore: { trueToken, falseToken } },
    },
  };
}

/**
 * A cross-encoder folder as sentence-transformers reads one: 6.x's (config_sentence_transformers.json says
 * CrossEncoder, modules.json holds the Transformer alone), or any Hugging Face *ForSequenceClassification
 * folder, as earlier versions saved them. The activation predict() applies is the saved one (6.x's
 * config_sentence_transformers.json, else config.json's `sentence_transformers`, else 3.x's
 * `sbert_ce_default_activation_function`), else Sigmoid for one label and Identity for more.
 */
function readCrossEncoder(
  dir: string,
  transformerDir: string,
  config: Record<string, unknown>,
  modules: ModuleEntry[] | null,
  modelType: string | undefined,
  stModel: Record<string, unknown>,
  stConfig: unknown,
): CrossEncoderConfig {
  if (modelType !== undefined && modelType !== 'CrossEncoder') {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} is a sentence-transformers ${modelType}, not a cross-encoder: load it with Encoder.load`);
  }
  const architectures = architecturesOf(config);
  // sentence-transformers' CrossEncoder reads a *ForCausalLM as a reranker scored by LogitScore.
  const causal = architectures[0]?.endsWith('ForCausalLM') === true;
  if (!isSequenceClassification(config) && modelType !== 'CrossEncoder' && !causal) {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `${dir} is not a cross-encoder: config.json's architectures are [${architectures.join(', ')}], not a *ForSequenceClassification ` +
        'model (an embedding model loads with Encoder.load)',
    );
  }
  const decoder = String(config.model_type) in DECODER_SEQUENCE_CLASSIFICATION;
  if (causal && !decoder) throw new ColtrastError('UNSUPPORTED_MODEL', `${dir}: a causal-LM reranker on ${String(config.model_type)} is not supported (${Object.keys(DECODER_SEQUENCE_CLASSIFICATION).join(', ')})`);
  const order = (modules ?? []).map((m) => moduleClass(m.type) ?? m.type);
  const expected = causal && modules ? ['Transformer', 'LogitScore'] : ['Transformer'];
  if (modules && order.join() !== expected.join()) {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `modules.json in ${dir}: a ${causal ? 'causal-LM reranker of Transformer → LogitScore' : 'cross-encoder of one Transformer module'} is supported, not ${order.join(' → ')}`,
    );
  }
  const task = causal ? 'text-generation' : 'sequence-classification';
  if (isObject(stConfig) && stConfig.transformer_task !== undefined && stConfig.transformer_task !== task) {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${path.join(transformerDir, 'sentence_bert_config.json')}: transformer_task ${JSON.stringify(stConfig.transformer_task)} is not this cross-encoder's (${task})`);
  }
  let labels: string[];
  if (causal) {
    labels = ['LABEL_0'];
  } else if (isObject(config.id2label)) {
    const entries = Object.entries(config.id2label).map(([k, v]) => [Number(k), String(v)] as const);
    if (entries.some(([k], i) => !Number.isInteger(k) || k < 0) || entries.length === 0) throw filesError(`config.json in ${dir}: id2label must map 0, 1, ... to names`);
    labels = entries.sort((a, b) => a[0] - b[0]).map(([, v]) => v);
  } else if (Number.isInteger(config.num_labels) && (config.num_labels as number) > 0) {
    labels = Array.from({ length: config.num_labels as number }, (_, i) => `LABEL_${i}`);
  } else {
    labels = ['LABEL_0', 'LABEL_1']; // transformers' default
  }
  const saved = [stModel.activation_fn, isObject(config.sentence_transformers) ? config.sentence_transformers.activation_fn : undefined, config.sbert_ce_default_activation_function];
  let activation: CrossEncoderConfig['activation'] | undefined;
  for (const name of saved) {
    if (typeof name !== 'string') continue;
    // sentence-transformers instantiates only torch's own classes without trust_remote_code; others fall through.
    if (!name.startsWith('torch.')) continue;
    activation = SCORE_ACTIVATIONS[name];
    if (!activation) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir}: the cross-encoder's activation_fn ${name} is not supported (Sigmoid, Identity or Tanh)`);
    }
    break;
  }
  return {
    format: modelType === 'CrossEncoder' ? 'sentence-transformers CrossEncoder' : 'huggingface sequence classification',
    numLabels: labels.length,
    labels,
    activation: activation ?? (labels.length === 1 ? 'sigmoid' : 'identity'),
    ...(decoder && { decoder: { chat: pairsAsMessages(transformerDir, stConfig), ...(causal && { logitScore: readLogitScore(dir, modules) }) } }),
  };
}

/**
 * Whether sentence-transformers 6 gives a decoder reranker's pairs to the chat template (as messages): when
 * sentence_bert_config.json's modality_config names "message", or, without a modality_config, when the tokenizer has a
 * chat template (chat_template.jinja, or tokenizer_config.json's chat_template).
 */
function pairsAsMessages(dir: string, stConfig: unknown): boolean {
  if (isObject(stConfig) && isObject(stConfig.modality_config)) return 'message' in stConfig.modality_config;
  return readChatTemplate(dir) !== undefined;
}

/**
 * A LogitScore module's token ids (its config.json: true_token_id, false_token_id or null), or without modules.json the
 * tokens sentence-transformers' CrossEncoder scores a causal LM with: 'yes' against 'no'.
 */
function readLogitScore(dir: string, modules: ModuleEntry[] | null): NonNullable<NonNullable<CrossEncoderConfig['decoder']>['logitScore']> {
  if (!modules) return { trueToken: 'yes', falseToken: 'no' };
  const module = modules[1];
  const file = path.join(dir, module.path, 'config.json');
  // Its token ids live there: without it, the message would be that "true_token_id" is not a token id.
  if (!fs.existsSync(file)) throw filesError(`modules.json lists a LogitScore module but ${file} (its true_token_id and false_token_id) is missing`);
  const config = readModuleConfig(dir, module.path, 'LogitScore');
  const id = (value: unknown) => Number.isInteger(value) && (value as number) >= 0;
  if (!id(config.true_token_id)) throw filesError(`${file}: "true_token_id" must be a token id`);
  if (config.false_token_id !== undefined && config.false_token_id !== null && !id(config.false_token_id)) throw filesError(`${file}: "false_token_id" must be a token id or null`);
  if (config.module_input_name !== undefined && config.module_input_name !== 'causal_logits') {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${file}: module_input_name ${JSON.stringify(config.module_input_name)} is not supported (the causal LM's logits, causal_logits)`);
  }
  return { trueToken: config.true_token_id as number, falseToken: (config.false_token_id as number | null | undefined) ?? null };
}

/** A HierarchicalTokenPooling module's config: pool_factor (≥ 1), num_protected_tokens (≥ 0), tasks. */
function readTokenPooling(dir: string, modulePath: string): NonNullable<MultiVectorConfig['tokenPooling']> {
  const config = readModuleConfig(dir, modulePath, 'HierarchicalTokenPooling');
  const file = path.join(dir, modulePath, 'config.json');
  const poolFactor = config.pool_factor ?? 1;
  const protectedTokens = config.num_protected_tokens ?? 1;
  if (!Number.isInteger(poolFactor) || (poolFactor as number) < 1) throw filesError(`${file}: "pool_factor" must be a positive integer, not ${JSON.stringify(config.pool_factor)}`);
  if (!Number.isInteger(protectedTokens) || (protectedTokens as number) < 0) throw filesError(`${file}: "num_protected_tokens" must be a whole number, not ${JSON.stringify(config.num_protected_tokens)}`);
  const rawTasks = config.tasks ?? ['document'];
  const tasks = typeof rawTasks === 'string' ? [rawTasks] : rawTasks;
  if (!Array.isArray(tasks) || !tasks.every((x) => typeof x === 'string')) throw filesError(`${file}: "tasks" must be a list of task names`);
  return { poolFactor: poolFactor as number, protectedTokens: protectedTokens as number, tasks: tasks as string[] };
}

function readModuleConfig(dir: string, modulePath: string, what: string): Record<string, unknown> {
  const file = path.join(dir, modulePath, 'config.json');
  if (!modulePath || !fs.existsSync(file)) return {};
  const config = readJson(file, `${what} config`);
  if (!isObject(config)) throw filesError(`${what} config ${file} must be a JSON object`);
  return config;
}

function readNormalizeInput(dir: string, modulePath: string, allowed: readonly ModuleInput[]): ModuleInput {
  return moduleInput(readModuleConfig(dir, modulePath, 'Normalize'), path.join(dir, modulePath, 'config.json'), 'Normalize', allowed, 'sentence_embedding');
}

/** config_sentence_transformers.json, or {} when the folder has none. */
function readStModelConfig(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config_sentence_transformers.json');
  if (!fs.existsSync(file)) return {};
  const config = readJson(file, 'config_sentence_transformers.json');
  if (!isObject(config)) throw filesError(`${file} must be a JSON object`);
  return config;
}

function readPrompts(stModel: Record<string, unknown>, dir: string): { prompts: Record<string, string>; defaultPromptName: string | null } {
  const file = path.join(dir, 'config_sentence_transformers.json');
  const prompts: Record<string, string> = {};
  if (stModel.prompts !== undefined && stModel.prompts !== null) {
    if (!isObject(stModel.prompts)) throw filesError(`${file}: "prompts" must be an object of prompt names to texts`);
    for (const [name, text] of Object.entries(stModel.prompts)) {
      if (typeof text !== 'string') throw filesError(`${file}: prompt ${JSON.stringify(name)} must be a string`);
      prompts[name] = text;
    }
  }
  // PyLate inserted its [Q] / [D] markers ahead of any prompt text; sentence-transformers reads them as prompts.
  for (const [key, task] of [['query_prefix', 'query'], ['document_prefix', 'document']] as const) {
    if (stModel.model_type === 'ColBERT' || key in stModel) {
      const prefix = stModel[key];
      if (prefix === undefined || prefix === null) continue;
      if (typeof prefix !== 'string') throw filesError(`${file}: "${key}" must be a string`);
      const rest = prompts[task] ?? '';
      prompts[task] = prefix + (rest.startsWith(prefix) ? rest.slice(prefix.length) : rest);
    }
  }
  const name = stModel.default_prompt_name ?? null;
  if (name !== null && (typeof name !== 'string' || !(name in prompts))) {
    throw filesError(`${file}: default_prompt_name ${JSON.stringify(name)} is not one of its prompts (${Object.keys(prompts).join(', ') || 'none'})`);
  }
  return { prompts, defaultPromptName: name as string | null };
}

export const PUNCTUATION: readonly string[] = [...'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'];

function positiveIntegerOrUndefined(value: unknown, file: string, key: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Number.isInteger(value) || (value as number) < 1) throw filesError(`${file}: "${key}" must be a positive integer`);
  return value as number;
}

function readExpansion(value: unknown, file: string): QueryExpansion | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw filesError(`${file}: "query_expansion" must be an object or null`);
  const unknown = Object.keys(value).filter((k) => !['strategy', 'attend', 'token', 'length'].includes(k));
  if (unknown.length) throw filesError(`${file}: query_expansion has unknown keys ${unknown.join(', ')}`);
  if (value.strategy !== 'fixed' && value.strategy !== 'min') throw filesError(`${file}: query_expansion.strategy must be "fixed" or "min"`);
  if (value.attend !== undefined && typeof value.attend !== 'boolean') throw filesError(`${file}: query_expansion.attend must be true or false`);
  if (value.token !== undefined && value.token !== null && typeof value.token !== 'string') throw filesError(`${file}: query_expansion.token must be a string or null`);
  const length = positiveIntegerOrUndefined(value.length, file, 'query_expansion.length');
  if (length === undefined) throw filesError(`${file}: query_expansion needs "length", the number of tokens queries are padded to`);
  return { strategy: value.strategy, attend: value.attend === true, token: (value.token as string | null | undefined) ?? null, length };
}

/**
 * A multi-vector model's settings, read as sentence-transformers 6 reads them: the Transformer's
 * sentence_bert_config.json, then (for PyLate saves) the top-level keys of config_sentence_transformers.json.
 */
function readMultiVector(
  dir: string,
  transformerFile: string,
  modelType: string | undefined,
  stModel: Record<string, unknown>,
  stConfig: Record<string, unknown>,
  maskModule: { config: Record<string, unknown>; file: string } | undefined,
  normalize: boolean,
): MultiVectorConfig {
  const modelFile = path.join(dir, 'config_sentence_transformers.json');
  const pylate = modelType === 'ColBERT';
  let queryLength = positiveIntegerOrUndefined(stConfig.query_length, transformerFile, 'query_length');
  let documentLength = positiveIntegerOrUndefined(stConfig.document_length, transformerFile, 'document_length');
  let queryExpansion = readExpansion(stConfig.query_expansion, transformerFile);
  const legacyKeys = ['query_length', 'document_length', 'query_expansion', 'do_query_expansion', 'attend_to_expansion_tokens', 'attend_to_mask_tokens', 'query_prefix', 'document_prefix', 'skiplist_words'];
  if (legacyKeys.some((k) => k in stModel)) {
    documentLength ??= positiveIntegerOrUndefined(stModel.document_length, modelFile, 'document_length');
    if (!('query_expansion' in stConfig)) {
      if ('query_expansion' in stModel) {
        queryExpansion = readExpansion(stModel.query_expansion, modelFile);
        queryLength ??= positiveIntegerOrUndefined(stModel.query_length, modelFile, 'query_length');
      } else if (stModel.do_query_expansion !== false) {
        // PyLate padded every query to query_length with mask tokens (32 by default).
        const attend = stModel.attend_to_expansion_tokens ?? stModel.attend_to_mask_tokens;
        const length = positiveIntegerOrUndefined(stModel.query_length, modelFile, 'query_length') ?? 32;
        queryExpansion = { strategy: 'fixed', attend: attend === true, token: null, length };
      } else {
        queryLength ??= positiveIntegerOrUndefined(stModel.query_length, modelFile, 'query_length');
      }
    }
  }
  const words = (value: unknown, file: string, key: string): string[] => {
    if (!Array.isArray(value) || !value.every((w) => typeof w === 'string')) throw filesError(`${file}: "${key}" must be a list of strings`);
    return value as string[];
  };
  let skiplistWords: string[] = [];
  let skiplistTasks = ['document'];
  let keepOnlyTokenIds: number[] | undefined;
  if (maskModule) {
    const { config: mask, file: maskFile } = maskModule;
    if (mask.skiplist_words !== undefined && mask.skiplist_words !== null) skiplistWords = words(mask.skiplist_words, maskFile, 'skiplist_words');
    if (typeof mask.skiplist_tasks === 'string') skiplistTasks = [mask.skiplist_tasks];
    else if (mask.skiplist_tasks !== undefined && mask.skiplist_tasks !== null) skiplistTasks = words(mask.skiplist_tasks, maskFile, 'skiplist_tasks');
    if (mask.keep_only_token_ids !== undefined && mask.keep_only_token_ids !== null) {
      if (!Array.isArray(mask.keep_only_token_ids) || !mask.keep_only_token_ids.every((id) => Number.isInteger(id))) {
        throw filesError(`${maskFile}: "keep_only_token_ids" must be a list of token ids`);
      }
      keepOnlyTokenIds = mask.keep_only_token_ids as number[];
    }
  } else if (pylate) {
    // PyLate's saves list only Transformer and Dense: masking and normalization were part of the model.
    skiplistWords = stModel.skiplist_words === undefined || stModel.skiplist_words === null ? [...PUNCTUATION] : words(stModel.skiplist_words, modelFile, 'skiplist_words');
    normalize = true;
  }
  const prefixTokens = [stModel.query_prefix, stModel.document_prefix].filter((p): p is string => typeof p === 'string' && p.length > 0);
  return {
    format: pylate ? 'PyLate ColBERT' : 'sentence-transformers MultiVectorEncoder',
    queryLength,
    documentLength,
    queryExpansion,
    skiplistWords,
    skiplistTasks,
    keepOnlyTokenIds,
    normalize,
    similarity: stModel.similarity_fn_name === 'meanmaxsim' ? 'meanmaxsim' : 'maxsim',
    prefixTokens,
  };
}

/** Where a saved model keeps its Dense head's weights. */
export const DENSE_DIR = '2_Dense';
/** Where a saved model keeps the weights of the i-th Dense module after its first (3_Dense, 4_Dense, ...). */
export const denseStackDir = (i: number): string => `${3 + i}_Dense`;

/**
 * Writes everything but the weights of a sentence-transformers directory into `target`: config,
 * tokenizer files, modules.json, the pooling, Dense, normalize and sentence_bert configs.
 */
export function writeModelFiles(
  source: ModelDirectory,
  target: string,
  settings: { pooling: PoolingMode; normalize: boolean; maxSeqLength: number; dimension: number; dense?: DenseHead; denseStack?: DenseHead[]; maskedLm?: boolean },
): void {
  // The tokenizer files as the model loaded them, not as the folder it came from has them now: copied from there, a
  // tokenizer.json changed or replaced since (a folder rewritten in place, another model saved over it) gave the saved
  // model another tokenizer than the one it ran with (other ids for the same weights), and one gone (the folder moved
  // or deleted, or an older layout's 0_Transformer replaced by a save over its own folder) a folder without
  // tokenizer.json. Refusing such a save instead would lose what the model holds in memory (a training run's weights):
  // the caller expects the model saved as it is, and its tokenizer is part of it.
  fs.writeFileSync(path.join(target, 'config.json'), source.configText);
  fs.writeFileSync(path.join(target, 'tokenizer.json'), tokenizerAsLoaded(source));
  for (const [file, bytes] of Object.entries(source.tokenizerFiles)) fs.writeFileSync(path.join(target, file), bytes);
  // A template of the model's own takes the folder's place (transformers reads chat_template.jinja first, as coltrast does).
  if (source.chatTemplate !== undefined) fs.writeFileSync(path.join(target, 'chat_template.jinja'), source.chatTemplate);
  if (source.crossEncoder) {
    writeCrossEncoderConfigs(source, target, settings.maxSeqLength);
    return;
  }
  // A masked language model trained by train({ mlm }): a plain *ForMaskedLM folder, no sentence-transformers modules.
  if (source.sparse && settings.maskedLm) return;
  if (source.sparse) {
    writeSparseConfigs(source, source.sparse, target, settings.maxSeqLength, settings.dimension);
    return;
  }
  if (source.multiVector && source.madeMultiVector) {
    writeMultiVectorConfigs(source, target, settings.maxSeqLength, settings.dense!);
    return;
  }
  if (source.multiVector) {
    copyMultiVectorConfigs(source, target);
    return;
  }
  const modules = [
    { idx: 0, name: '0', path: '', type: `${ST}Transformer` },
    { idx: 1, name: '1', path: '1_Pooling', type: `${ST}Pooling` },
  ];
  if (settings.dense) {
    modules.push({ idx: 2, name: '2', path: DENSE_DIR, type: `${ST}Dense` });
    writeConfig(target, path.join(DENSE_DIR, 'config.json'), denseConfig(settings.dense));
    (settings.denseStack ?? []).forEach((layer, i) => {
      modules.push({ idx: modules.length, name: String(modules.length), path: denseStackDir(i), type: `${ST}Dense` });
      writeConfig(target, path.join(denseStackDir(i), 'config.json'), denseConfig(layer));
    });
  }
  const normalizeDir = `${modules.length}_Normalize`;
  if (settings.normalize) modules.push({ idx: modules.length, name: String(modules.length), path: normalizeDir, type: `${ST}Normalize` });
  writeConfig(target, 'modules.json', modules);
  const poolingConfig: Record<string, unknown> = { word_embedding_dimension: settings.dimension };
  for (const mode of POOLING_MODES) poolingConfig[POOLING_KEYS[mode]] = mode === settings.pooling;
  poolingConfig.pooling_mode_weightedmean_tokens = false;
  poolingConfig.include_prompt = source.includePrompt;
  writeConfig(target, path.join('1_Pooling', 'config.json'), poolingConfig);
  if (settings.normalize) fs.mkdirSync(path.join(target, normalizeDir));
  writeConfig(target, 'sentence_bert_config.json', { max_seq_length: settings.maxSeqLength, do_lower_case: source.lowercase });
  // The prompts travel with the model, as sentence-transformers saves them.
  writeConfig(target, 'config_sentence_transformers.json', {
    model_type: 'SentenceTransformer',
    prompts: source.prompts,
    default_prompt_name: source.defaultPromptName,
    similarity_fn_name: source.similarity,
  });
}

/**
 * A sparse encoder's configs as sentence-transformers 5.x saves a SparseEncoder (MLMTransformer, then SpladePooling),
 * which 6.x reads too; `dimension`: the vocabulary's size, the vectors' width.
 */
function writeSparseConfigs(source: ModelDirectory, sparse: SparseConfig, target: string, maxSeqLength: number, dimension: number): void {
  const SPARSE = 'sentence_transformers.sparse_encoder.models.';
  writeConfig(target, 'modules.json', [
    { idx: 0, name: '0', path: '', type: `${SPARSE}MLMTransformer` },
    { idx: 1, name: '1', path: SPLADE_POOLING_DIR, type: `${SPARSE}SpladePooling` },
  ]);
  writeConfig(target, path.join(SPLADE_POOLING_DIR, 'config.json'), { pooling_strategy: sparse.pooling, activation_function: sparse.activation, word_embedding_dimension: dimension });
  writeConfig(target, 'sentence_bert_config.json', { max_seq_length: maxSeqLength, do_lower_case: source.lowercase });
  writeConfig(target, 'config_sentence_transformers.json', {
    model_type: 'SparseEncoder',
    prompts: source.prompts,
    default_prompt_name: source.defaultPromptName,
    similarity_fn_name: source.similarity ?? 'dot',
  });
}

/** Where a saved sparse encoder keeps its SpladePooling config. */
const SPLADE_POOLING_DIR = '1_SpladePooling';

/** @internal The bytes of those of `names` that `dir` holds, by name: files a save writes as they were at load. */
export function filesAsTheyAre(dir: string, names: readonly string[]): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const name of names) {
    const from = path.join(dir, name);
    if (fs.existsSync(from)) files[name] = fs.readFileSync(from);
  }
  return files;
}

/**
 * @internal tokenizer.json as `source`'s model loaded it: the bytes its tokenizer keeps (TextTokenizer.load), else the file
 * while it is still that version; changed or gone since, with no tokenizer of it alive (a folder read and not loaded,
 * or rewritten in the moment between its reading and its tokenizer's loading), it is refused.
 */
export function tokenizerAsLoaded(source: ModelDirectory): Buffer {
  const kept = loadedTokenizerFile(source.tokenizerPath, source.tokenizerVersion);
  if (kept) return kept;
  const stat = fs.statSync(source.tokenizerPath, { throwIfNoEntry: false });
  if (stat && fileVersion(stat) === source.tokenizerVersion) return fs.readFileSync(source.tokenizerPath);
  throw filesError(
    `cannot save: ${source.tokenizerPath}, the tokenizer of the model being saved, was ${stat ? 'changed' : 'moved or deleted'} since the model was ` +
      'loaded, and the one it was loaded with is not at hand: load the model again from where its files are now, then save it',
  );
}

/** A JSON config file under `target`, as sentence-transformers writes them (indented, a final newline). */
function writeConfig(target: string, relative: string, value: unknown): void {
  fs.mkdirSync(path.dirname(path.join(target, relative)), { recursive: true });
  fs.writeFileSync(path.join(target, relative), JSON.stringify(value, null, 2) + '\n');
}

/** A Dense module's config.json. */
function denseConfig(dense: DenseHead): Record<string, unknown> {
  const activation = Object.keys(ACTIVATIONS).find((k) => ACTIVATIONS[k] === dense.activation);
  return { in_features: dense.inFeatures, out_features: dense.outFeatures, bias: dense.bias, activation_function: activation };
}

/**
 * A multi-vector model loaded from a folder keeps its module configs as they were (PyLate's legacy layout
 * included, which sentence-transformers reads back the same way):
 * modules.json, config_sentence_transformers.json, sentence_bert_config.json and each module's config.json.
 * Its weights are written by the caller, the Dense module's into the Dense module's own folder.
 */
function copyMultiVectorConfigs(source: ModelDirectory, target: string): void {
  // Read from the folder the model came from (its tokenizer files are kept, these are not): gone, a save would leave them out.
  if (!fs.existsSync(source.dir)) {
    throw filesError(`cannot save: ${source.dir}, the folder the model being saved was loaded from, is gone (moved or deleted since), and its module configs are read from it: load the model again from where its files are now, then save it`);
  }
  const copy = (relative: string) => {
    const from = path.join(source.dir, relative);
    if (!fs.existsSync(from)) return;
    fs.mkdirSync(path.dirname(path.join(target, relative)), { recursive: true });
    fs.copyFileSync(from, path.join(target, relative));
  };
  copy('config_sentence_transformers.json');
  const modules = readModules(source.dir) ?? [];
  const transformer = modules.find((m) => moduleClass(m.type) === 'Transformer');
  if (transformer?.path) {
    // An older save's Transformer in a subfolder: the weights, config and tokenizer are written at the top now.
    const file = path.join(source.dir, 'modules.json');
    const entries = readJson(file, 'modules.json') as Record<string, unknown>[];
    writeConfig(target, 'modules.json', entries.map((m, i) => (modules[i] === transformer ? { ...m, path: '' } : m)));
    const settings = path.join(source.transformerDir, 'sentence_bert_config.json');
    if (fs.existsSync(settings)) fs.copyFileSync(settings, path.join(target, 'sentence_bert_config.json'));
  } else {
    copy('modules.json');
    copy('sentence_bert_config.json');
  }
  for (const m of modules) {
    if (m.path && m !== transformer) copy(path.join(m.path, 'config.json'));
  }
}

/**
 * A model made multi-vector by coltrast is written as sentence-transformers 6 saves a MultiVectorEncoder:
 * Transformer (with the query and document lengths and the query expansion), a token Dense, MultiVectorMask
 * (the skiplist) and a token Normalize, and its prompts.
 */
function writeMultiVectorConfigs(source: ModelDirectory, target: string, maxSeqLength: number, dense: DenseHead): void {
  const mv = source.multiVector!;
  const st = 'sentence_transformers.';
  writeConfig(target, 'modules.json', [
    { idx: 0, name: '0', path: '', type: `${st}base.modules.transformer.Transformer` },
    { idx: 1, name: '1', path: '1_Dense', type: `${st}base.modules.dense.Dense` },
    { idx: 2, name: '2', path: '2_MultiVectorMask', type: `${st}multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask` },
    { idx: 3, name: '3', path: '3_Normalize', type: `${st}base.modules.normalize.Normalize` },
  ]);
  writeConfig(target, '1_Dense/config.json', { ...denseConfig(dense), module_input_name: 'token_embeddings', module_output_name: 'token_embeddings' });
  writeConfig(target, '2_MultiVectorMask/config.json', { skiplist_words: mv.skiplistWords, skiplist_tasks: mv.skiplistTasks, keep_only_token_ids: mv.keepOnlyTokenIds ?? null });
  writeConfig(target, '3_Normalize/config.json', { module_input_name: 'token_embeddings', module_output_name: 'token_embeddings' });
  writeConfig(target, 'sentence_bert_config.json', {
    max_seq_length: maxSeqLength,
    do_lower_case: source.lowercase,
    module_output_name: 'token_embeddings',
    query_length: mv.queryLength ?? null,
    document_length: mv.documentLength ?? null,
    query_expansion: mv.queryExpansion ?? null,
  });
  writeConfig(target, 'config_sentence_transformers.json', { model_type: 'MultiVectorEncoder', prompts: source.prompts, default_prompt_name: source.defaultPromptName, similarity_fn_name: mv.similarity });
}

/**
 * A cross-encoder is written as sentence-transformers 6 saves a CrossEncoder: the Transformer module alone (its
 * sequence-classification head included) and the activation predict() applies. config.json, copied as it was,
 * keeps the labels; Hugging Face's AutoModelForSequenceClassification and older sentence-transformers read the
 * same folder.
 */
function writeCrossEncoderConfigs(source: ModelDirectory, target: string, maxSeqLength: number): void {
  const ce = source.crossEncoder!;
  const logitScore = ce.decoder?.logitScore;
  const modules = [{ idx: 0, name: '0', path: '', type: 'sentence_transformers.base.modules.transformer.Transformer' }];
  if (logitScore) {
    // A causal LM scored by LogitScore: the token ids as load() resolved them.
    modules.push({ idx: 1, name: '1', path: LOGIT_SCORE_DIR, type: 'sentence_transformers.cross_encoder.modules.logit_score.LogitScore' });
    writeConfig(target, path.join(LOGIT_SCORE_DIR, 'config.json'), { true_token_id: logitScore.trueToken, false_token_id: logitScore.falseToken, module_input_name: 'causal_logits' });
  }
  writeConfig(target, 'modules.json', modules);
  const forward = { method: 'forward', method_output_name: 'logits' };
  writeConfig(target, 'sentence_bert_config.json', {
    transformer_task: logitScore ? 'text-generation' : 'sequence-classification',
    modality_config: { text: forward, ...(ce.decoder?.chat && { message: { ...forward, format: messageFormat(source.chatTemplate ?? readChatTemplate(source.transformerDir, source.tokenizerFiles)) } }) },
    module_output_name: logitScore ? 'causal_logits' : 'scores',
    max_seq_length: maxSeqLength,
    do_lower_case: source.lowercase,
  });
  const activation = Object.keys(SCORE_ACTIVATIONS).find((k) => SCORE_ACTIVATIONS[k] === ce.activation);
  writeConfig(target, 'config_sentence_transformers.json', { model_type: 'CrossEncoder', activation_fn: activation, prompts: source.prompts, default_prompt_name: source.defaultPromptName });
}

/**
 * The folder's chat template: chat_template.jinja, else tokenizer_config.json's chat_template (its 'default' when it
 * lists several). `files`: those files as a model loaded them (ModelDirectory's tokenizerFiles), read in place of the
 * folder's.
 */
export function readChatTemplate(dir: string, files?: Record<string, Buffer>): string | undefined {
  const read = (name: string) => (files ? files[name]?.toString('utf8') : fs.existsSync(path.join(dir, name)) ? fs.readFileSync(path.join(dir, name), 'utf8') : undefined);
  const jinja = read('chat_template.jinja');
  if (jinja !== undefined) return jinja;
  const file = path.join(dir, 'tokenizer_config.json');
  const text = read('tokenizer_config.json');
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = (JSON.parse(text) as Record<string, unknown>).chat_template;
  } catch (error) {
    throw filesError(`${file} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value as { name?: unknown; template?: unknown }[];
    const chosen = named.find((t) => t.name === 'default') ?? named[0];
    if (typeof chosen?.template === 'string') return chosen.template;
  }
  return undefined;
}

/**
 * How sentence-transformers 6 gives messages to a chat template (InputFormatter's inference): 'structured' (content as a
 * list of { type, text } parts) when the template reads parts (content[0], .type, ...), else 'flat' (content a string).
 */
export function messageFormat(template: string | undefined): 'flat' | 'structured' {
  if (!template) return 'structured';
  return ['content[0]', '.type', "'type'", '"type"', 'item.type', 'message.content['].some((p) => template.includes(p)) ? 'structured' : 'flat';
}

/**
 * The prompt to put before each text of an embedding: sentence-transformers' rules for encode, encode_query and
 * encode_document (`prompt` itself; else the named one; else the task's, 'query' or 'document' / 'passage' / 'corpus';
 * else the model's default prompt, if it names one).
 */
export function taskPrompt(files: Pick<ModelDirectory, 'prompts' | 'defaultPromptName'>, prompt: unknown, promptName: unknown, task: 'query' | 'document' | undefined): string | undefined {
  const prompts = files.prompts;
  if (prompt !== undefined) {
    if (typeof prompt !== 'string') throw invalid('options.prompt', 'a string', prompt);
    if (promptName !== undefined) throw new ColtrastError('INVALID_ARGUMENT', 'give options.prompt or options.promptName, not both');
    return prompt;
  }
  if (promptName !== undefined) return namedPrompt(prompts, promptName);
  const candidates = task === 'query' ? ['query'] : task === 'document' ? ['document', 'passage', 'corpus'] : [];
  const name = candidates.find((c) => c in prompts) ?? files.defaultPromptName;
  return name === null ? undefined : prompts[name];
}

/** The model's prompt named `promptName` (options.promptName); an unknown name is refused with the names it has. */
export function namedPrompt(prompts: Record<string, string>, promptName: unknown): string {
  if (typeof promptName !== 'string' || !(promptName in prompts)) {
    const names = Object.keys(prompts);
    throw invalid('options.promptName', names.length ? `one of the model's prompts (${names.join(', ')})` : 'a prompt name, but this model has no prompts', promptName);
  }
  return prompts[promptName];
}

/** A special token named in tokenizer_config.json or special_tokens_map.json (e.g. 'mask_token'), if any. */
export function readSpecialToken(dir: string, key: string): string | undefined {
  for (const file of ['tokenizer_config.json', 'special_tokens_map.json']) {
    const full = path.join(dir, file);
    if (!fs.existsSync(full)) continue;
    const config = readJson(full, file);
    if (!isObject(config)) continue;
    const value = config[key];
    if (typeof value === 'string') return value;
    if (isObject(value) && typeof value.content === 'string') return value.content;
  }
  return undefined;
}
