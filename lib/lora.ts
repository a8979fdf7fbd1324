/**
 * LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) in PEFT's format: the options
 * of train({ lora }), the projections each model type adapts by default, and the adapter folder PEFT reads and writes
 * (adapter_config.json, adapter_model.safetensors). The adapted layers are native (Dense in native/models/layers.h).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { addSafetensorsMetadata, readSafetensorsHeader, sha256OfRange, tensorInfo } from './safetensors';
import { writeJsonAtomic } from './files';
import { readJson } from './model-dir';
import { fromNative, type NativeEncoder } from './native';
import type { ModelHandle } from './native-model';
import { checkOptions, float32, invalid, numberValue, positiveInteger, stringList } from './validate';

export interface LoraOptions {
  /** The adapters' rank r (default 8, PEFT's). */
  rank?: number;
  /** lora_alpha: the update is scaled by alpha / rank (default: the rank, a scale of 1). */
  alpha?: number;
  /** Dropout on the adapters' input in training (default 0). */
  dropout?: number;
  /** The projections to adapt, by their own name ("query", "q_proj"); default: LORA_TARGETS for the model type. */
  targetModules?: string[];
}

/** An adapter as a model carries it. */
export interface LoraConfig {
  rank: number;
  alpha: number;
  dropout: number;
  targetModules: string[];
  /** PEFT's use_rslora: the scale is alpha / sqrt(rank). Only read from adapters made elsewhere. */
  rslora: boolean;
  /** The model the adapter was made on, as adapter_config.json names it. */
  baseModel: string;
  /**
   * PEFT's task_type: 'FEATURE_EXTRACTION' for an embedding model's adapter, 'SEQ_CLS' for a cross-encoder's,
   * 'CAUSAL_LM' for a reranker scored by LogitScore on a causal LM.
   */
  taskType: string;
  /**
   * PEFT's modules_to_save: whole modules that train beside the adapters and are saved in the adapter file. Only a
   * cross-encoder's head has them ('classifier' and 'score', as PEFT's sequence classification adds them, and the
   * head's dense layer when the head is new); empty for an embedding model's adapter.
   */
  modulesToSave: string[];
}

/** The modules_to_save PEFT's PeftModelForSequenceClassification adds to every adapter: the classification head. */
export const SEQ_CLS_MODULES = ['classifier', 'score'];

/**
 * The projections adapted by default: PEFT's defaults for the types it has them for (bert, roberta, xlm-roberta,
 * electra, deberta-v2, t5, mt5, the decoders, gemma3_text, gemma2, gemma: attention's query and value), and the same two
 * projections of the others (their fused one for ModernBERT and Phi-3).
 */
export const LORA_TARGETS: Record<string, string[]> = {
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'xlm-roberta': ['query', 'value'],
  camembert: ['query', 'value'],
  electra: ['query', 'value'],
  mpnet: ['q', 'v'],
  distilbert: ['q_lin', 'v_lin'],
  'deberta-v2': ['query_proj', 'value_proj'],
  modernbert: ['Wqkv'],
  t5: ['q', 'v'],
  mt5: ['q', 'v'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  qwen3: ['q_proj', 'v_proj'],
  gemma3_text: ['q_proj', 'v_proj'],
  gemma2: ['q_proj', 'v_proj'],
  gemma: ['q_proj', 'v_proj'],
  // PEFT has no default for Phi-3 (it asks for target_modules); its attention's one fused projection, as ModernBERT's.
  phi3: ['qkv_proj'],
};

export const ADAPTER_CONFIG = 'adapter_config.json';
/** Where a model's save() puts its LoRA adapter, beside the merged weights. */
export const ADAPTER_DIR = 'adapter';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/**
 * train()'s `lora` option (true: the defaults) checked, for a model of `modelType` made from `baseModel`: an embedding
 * model's adapter, or with `task` a cross-encoder's (PEFT's task_type, and the modules of its head that train with the
 * adapters, PEFT's modules_to_save).
 */
export function readLoraOptions(value: unknown, modelType: string, baseModel: string, task?: { taskType: string; modulesToSave: string[] }): LoraConfig {
  const o: LoraOptions = value === true ? {} : checkOptions('options.lora', value as LoraOptions, ['rank', 'alpha', 'dropout', 'targetModules']);
  const rank = positiveInteger('options.lora.rank', o.rank ?? 8);
  // Each once: adapter_config.json listed a name twice (PEFT saves its target_modules as a set).
  const targets = o.targetModules === undefined ? LORA_TARGETS[modelType] : [...new Set(stringList('options.lora.targetModules', o.targetModules))];
  if (!targets || targets.length === 0) throw invalid('options.lora.targetModules', `the projections to adapt (none known for ${modelType})`, o.targetModules);
  const alpha = numberValue('options.lora.alpha', o.alpha ?? rank, (x) => x > 0, 'a number > 0');
  // The native side scales by alpha / rank in float32: a larger scale is Infinity, and every output NaN.
  float32('options.lora.alpha / options.lora.rank', alpha / rank);
  return {
    rank,
    alpha,
    dropout: numberValue('options.lora.dropout', o.dropout ?? 0, (x) => x >= 0 && x < 1, 'a number in [0, 1)'),
    targetModules: targets,
    rslora: false,
    baseModel,
    taskType: task?.taskType ?? 'FEATURE_EXTRACTION',
    modulesToSave: task?.modulesToSave ?? [],
  };
}

/** The factor of B A x. */
export function loraScale(config: LoraConfig): number {
  return config.rslora ? config.alpha / Math.sqrt(config.rank) : config.alpha / config.rank;
}

/** A folder with an adapter and no model of its own (no config.json): what sentence-transformers saves for a model with an adapter. */
export function isAdapterOnlyFolder(dir: string): boolean {
  return fs.existsSync(path.join(dir, ADAPTER_CONFIG)) && !fs.existsSync(path.join(dir, 'config.json'));
}

/** The base model an adapter-only folder (isAdapterOnlyFolder) names in adapter_config.json; MODEL_FILES when none. */
export function adapterBaseModel(dir: string): string {
  const base = readAdapterConfig(dir).baseModel;
  if (!base) throw new ColtrastError('MODEL_FILES', `${dir} holds a LoRA adapter and no weights, and its adapter_config.json names no base_model_name_or_path`);
  return base;
}

/** Reads a PEFT LoRA adapter folder's config, refusing the variants coltrast does not compute. */
export function readAdapterConfig(dir: string): LoraConfig & { weightsPath: string } {
  const configPath = path.join(dir, ADAPTER_CONFIG);
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(configPath) || !fs.existsSync(weightsPath)) {
    throw new ColtrastError('MODEL_FILES', `${dir} is not a PEFT adapter folder: it needs ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS} (pickled adapter_model.bin is not read)`);
  }
  const json = readJson(configPath, ADAPTER_CONFIG);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ColtrastError('MODEL_FILES', `${configPath} must be a JSON object (PEFT's LoraConfig)`);
  const c = json as Record<string, unknown>;
  const refuse = (what: string) => {
    throw new ColtrastError('UNSUPPORTED_MODEL', `${configPath}: ${what}; coltrast runs plain LoRA adapters`);
  };
  if (c.peft_type !== 'LORA') refuse(`peft_type ${JSON.stringify(c.peft_type)} is not LORA`);
  // PEFT tests these with Python's truth: "use_dora": "yes" is DoRA there, and was plain LoRA here.
  const flag = (key: string): boolean => {
    if (c[key] === undefined || c[key] === null) return false;
    if (typeof c[key] !== 'boolean') throw new ColtrastError('MODEL_FILES', `${configPath}: "${key}" must be true or false, not ${JSON.stringify(c[key])}`);
    return c[key] as boolean;
  };
  if (flag('use_dora')) refuse('use_dora (DoRA) is set');
  if (flag('fan_in_fan_out')) refuse('fan_in_fan_out is set (GPT-2-style Conv1D layers)');
  // PEFT 0.14's lora_bias: lora_B has a bias, which the native side would leave out of every output.
  if (flag('lora_bias')) refuse('lora_bias is set (lora_B has a bias)');
  const rslora = flag('use_rslora');
  if (c.bias !== undefined && c.bias !== 'none') refuse(`bias ${JSON.stringify(c.bias)} trains biases too`);
  for (const key of ['rank_pattern', 'alpha_pattern'] as const) {
    if (c[key] && typeof c[key] === 'object' && Object.keys(c[key] as object).length > 0) refuse(`${key} gives layers ranks or alphas of their own`);
  }
  const given = (value: unknown) => value !== undefined && value !== null && !(Array.isArray(value) && value.length === 0) && !(typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0);
  if (given(c.layer_replication)) refuse('layer_replication stacks copies of layers');
  if (given(c.trainable_token_indices)) refuse('trainable_token_indices trains token embeddings too');
  if (given(c.target_parameters)) refuse('target_parameters adapts parameters, not layers');
  if (c.target_modules !== undefined && c.target_modules !== null && typeof c.target_modules !== 'string' && !(Array.isArray(c.target_modules) && c.target_modules.every((m) => typeof m === 'string'))) {
    throw new ColtrastError('MODEL_FILES', `${configPath}: "target_modules" must be a list of module names or a regular expression`);
  }
  if (c.modules_to_save !== undefined && c.modules_to_save !== null && !(Array.isArray(c.modules_to_save) && c.modules_to_save.every((m) => typeof m === 'string'))) {
    throw new ColtrastError('MODEL_FILES', `${configPath}: "modules_to_save" must be a list of module names`);
  }
  const rank = c.r;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) throw new ColtrastError('MODEL_FILES', `${configPath}: "r" must be a positive integer`);
  const alpha = c.lora_alpha ?? 8;
  // A finite one: JSON's 1e999 parses to Infinity, whose scale would turn every output into NaN.
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || !(alpha > 0)) throw new ColtrastError('MODEL_FILES', `${configPath}: "lora_alpha" must be a positive number`);
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new ColtrastError('MODEL_FILES', `${configPath}: "lora_dropout" must be a number in [0, 1)`);
  const targets = Array.isArray(c.target_modules) ? c.target_modules.map(String) : typeof c.target_modules === 'string' ? [c.target_modules] : [];
  checkAdapterWeights(weightsPath, rank, c, configPath);
  return {
    rank,
    alpha,
    dropout,
    targetModules: targets,
    rslora,
    baseModel: typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : '',
    taskType: typeof c.task_type === 'string' ? c.task_type : 'FEATURE_EXTRACTION',
    modulesToSave: [...new Set((c.modules_to_save as string[] | null | undefined) ?? [])],
    weightsPath,
  };
}

/**
 * Whether the module `name` (dotted) matches `modules` as adapter_config.json gives target_modules or exclude_modules:
 * a list names modules by their last names (or whole names), a string is a regular expression the whole name must
 * match, and "all-linear" takes every linear layer. Missing: `missing` (nothing to compare with).
 */
function matches(name: string, modules: unknown, missing: boolean): boolean {
  if (Array.isArray(modules)) return modules.some((t) => name === String(t) || name.endsWith(`.${String(t)}`));
  if (typeof modules !== 'string') return missing;
  if (modules === 'all-linear') return true;
  try {
    return new RegExp(`^(?:${modules})$`).test(name);
  } catch {
    return missing; // a pattern of Python's that JavaScript does not read: not checked
  }
}

/**
 * Why PEFT would not adapt the module `name` (dotted) for adapter_config.json `c`, or undefined when it would:
 * target_modules names it, exclude_modules does not, and its layer index is one layers_to_transform lists (found as
 * PEFT finds it: after layers_pattern, or after any name, followed by a dot).
 */
function notTargeted(name: string, c: Record<string, unknown>): string | undefined {
  if (!matches(name, c.target_modules, true)) return `target_modules ${JSON.stringify(c.target_modules)} does not name ${name}`;
  if (matches(name, c.exclude_modules, false)) return `exclude_modules ${JSON.stringify(c.exclude_modules)} names ${name}`;
  const layers = c.layers_to_transform;
  if (layers === undefined || layers === null || (Array.isArray(layers) && layers.length === 0)) return undefined;
  const leftOut = `layers_to_transform ${JSON.stringify(layers)} leaves out ${name}`;
  const patterns = typeof c.layers_pattern === 'string' ? [c.layers_pattern] : Array.isArray(c.layers_pattern) && c.layers_pattern.length > 0 ? c.layers_pattern.map(String) : ['[^.]*'];
  for (const pattern of patterns) {
    let found: RegExpMatchArray | null;
    try {
      found = name.match(new RegExp(`^.*\\.${pattern}\\.(\\d+)\\.`));
    } catch {
      return undefined;
    }
    if (found) return (Array.isArray(layers) ? layers.includes(Number(found[1])) : layers === Number(found[1])) ? undefined : leftOut;
  }
  return leftOut;
}

/**
 * Throws when the adapter file's weights do not belong to adapter_config.json (MODEL_FILES): a lora_A of another rank
 * than "r" (the native side adapts with the weights' own rank but scales by alpha / r, so every output would change
 * silently; PEFT refuses such an adapter, its lora_A is made [r, in]), or the adapter of a module PEFT would not adapt
 * (one target_modules does not name, exclude_modules names, or of a layer layers_to_transform leaves out: the native
 * side applies every adapter in the file; PEFT would leave that module unadapted, so the two would embed
 * differently). Throws UNSUPPORTED_MODEL for a LoRA tensor other than lora_A and lora_B weights (lora_B's bias,
 * DoRA's magnitudes, an embedding layer's lora_embedding_A, trainable tokens), which the native side would leave out.
 * A header that cannot be read is left to the native reader, which names what is wrong with it.
 */
function checkAdapterWeights(weightsPath: string, rank: number, c: Record<string, unknown>, configPath: string): void {
  let read: ReturnType<typeof readSafetensorsHeader>;
  try {
    const fd = fs.openSync(weightsPath, 'r');
    try {
      read = readSafetensorsHeader(fd, 100 * 2 ** 20);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return;
  }
  if ('problem' in read) return;
  for (const [name, entry] of Object.entries(read.header)) {
    if ((name.includes('.lora_') && !/\.lora_[AB]\.weight$/.test(name)) || name.includes('trainable_tokens')) {
      throw new ColtrastError(
        'UNSUPPORTED_MODEL',
        `${path.join(path.dirname(configPath), ADAPTER_WEIGHTS)} holds ${name}, which coltrast does not compute (it runs plain LoRA adapters: lora_A and lora_B weights only)`,
      );
    }
    if (!name.endsWith('.lora_A.weight')) continue;
    const shape = entry?.shape;
    if (Array.isArray(shape) && shape.length === 2 && shape[0] !== rank) {
      throw new ColtrastError(
        'MODEL_FILES',
        `${configPath}: "r" is ${rank}, but ${name} in ${ADAPTER_WEIGHTS} has rank ${String(shape[0])} (shape [${shape.join(', ')}]): ` +
          'the config does not belong to these weights; use the adapter_config.json saved with them',
      );
    }
    // PEFT matches the model's own module names: without the prefix its saved names carry.
    const module = name.slice(0, -'.lora_A.weight'.length).replace(/^base_model\.model\./, '');
    const reason = notTargeted(module, c);
    if (reason) {
      throw new ColtrastError(
        'MODEL_FILES',
        `${configPath}: ${reason}, whose adapter is in ${ADAPTER_WEIGHTS} ` +
          '(PEFT would leave that module as it is): the config does not belong to these weights; use the adapter_config.json saved with them',
      );
    }
  }
}

/** Writes adapter_config.json as PEFT's LoraConfig saves it (the keys it needs; PEFT fills in the rest). */
export function writeAdapterConfig(dir: string, config: LoraConfig): void {
  writeJsonAtomic(path.join(dir, ADAPTER_CONFIG), {
    peft_type: 'LORA',
    task_type: config.taskType,
    base_model_name_or_path: config.baseModel,
    r: config.rank,
    lora_alpha: config.alpha,
    lora_dropout: config.dropout,
    target_modules: config.targetModules,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: config.rslora,
    use_dora: false,
    init_lora_weights: true,
    modules_to_save: config.modulesToSave.length > 0 ? config.modulesToSave : null,
    inference_mode: true,
  });
}

/** @internal New LoRA adapters on a loaded model (train({ lora })), A seeded, B zero; a cross-encoder's head modules in config.modulesToSave train with them. */
export async function addAdapters(model: ModelHandle, config: LoraConfig, seed: number): Promise<void> {
  await model.use(async (handle) => {
    try {
      await handle.addLora({ targets: config.targetModules, rank: config.rank, scale: loraScale(config), dropout: config.dropout, seed, modulesToSave: config.modulesToSave });
    } catch (error) {
      throw fromNative(error);
    }
  });
}

/**
 * The weights of the base model an adapter is loaded on or saved from: its folder (for messages) and its safetensors
 * files (model.safetensors, or the shards).
 */
export interface AdapterBase {
  dir: string;
  files: string[];
}

/**
 * The key in adapter_model.safetensors' __metadata__ under which coltrast records the base model the adapter was
 * trained on: a JSON object of each adapted module (as the file names it, without PEFT's "base_model.model.") to its
 * base weight as "<dtype> <shape> <sha256 of the weight's bytes>". PEFT and sentence-transformers read the tensors
 * and metadata's "format" only, and load such a file unchanged; adapter_config.json is left as PEFT writes it.
 */
export const BASE_WEIGHTS_KEY = 'coltrast.base_weights';

interface BaseTensor {
  file: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** The tensors of the safetensors files `files` by name, where in which file each one's bytes are; MODEL_FILES for a header that cannot be read. */
function baseTensors(files: string[]): Map<string, BaseTensor> {
  const tensors = new Map<string, BaseTensor>();
  for (const file of files) {
    const fd = fs.openSync(file, 'r');
    try {
      const read = readSafetensorsHeader(fd, 100 * 2 ** 20);
      if ('problem' in read) throw new ColtrastError('MODEL_FILES', `${file}: its safetensors header is ${read.problem}`);
      for (const [name, entry] of Object.entries(read.header)) {
        const info = name === '__metadata__' ? undefined : tensorInfo(entry);
        if (info) tensors.set(name, { file, dtype: info.dtype, shape: info.shape, begin: read.dataStart + info.begin, end: read.dataStart + info.end });
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return tensors;
}

/**
 * The base weight of the adapted module `module` (as the adapter names it): "<module>.weight", the same without the
 * task model's prefix the adapter of a cross-encoder carries ("bert."), or the one name that ends in it (a base that
 * was saved with that prefix), as the native loader matches them.
 */
function baseTensorOf(module: string, tensors: Map<string, BaseTensor>): BaseTensor | undefined {
  const name = `${module}.weight`;
  const found = tensors.get(name) ?? (module.includes('.') ? tensors.get(name.slice(name.indexOf('.') + 1)) : undefined);
  if (found) return found;
  const prefixed = [...tensors.keys()].filter((n) => n.endsWith(`.${name}`));
  return prefixed.length === 1 ? tensors.get(prefixed[0]) : undefined;
}

/** The fingerprint ("<dtype> <shape> <sha256>", BASE_WEIGHTS_KEY) of each base weight of `modules` in `tensors`; undefined for a module without one. */
async function fingerprints(modules: string[], tensors: Map<string, BaseTensor>): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  const open = new Map<string, fs.promises.FileHandle>();
  try {
    for (const module of modules) {
      const tensor = baseTensorOf(module, tensors);
      if (!tensor) {
        out.set(module, undefined);
        continue;
      }
      let handle = open.get(tensor.file);
      if (!handle) open.set(tensor.file, (handle = await fs.promises.open(tensor.file, 'r')));
      out.set(module, `${tensor.dtype} ${tensor.shape.join('x')} ${await sha256OfRange(handle, tensor.begin, tensor.end)}`);
    }
  } finally {
    for (const handle of open.values()) await handle.close();
  }
  return out;
}

/** The adapted modules of adapter file `weightsPath` (its lora_A tensors' modules, without PEFT's prefix), and its __metadata__. */
function adapterModules(weightsPath: string): { modules: string[]; metadata: unknown } {
  const fd = fs.openSync(weightsPath, 'r');
  let read: ReturnType<typeof readSafetensorsHeader>;
  try {
    read = readSafetensorsHeader(fd, 100 * 2 ** 20);
  } finally {
    fs.closeSync(fd);
  }
  if ('problem' in read) throw new ColtrastError('MODEL_FILES', `${weightsPath}: its safetensors header is ${read.problem}`);
  const modules = Object.keys(read.header)
    .filter((name) => name.endsWith('.lora_A.weight'))
    .map((name) => name.slice(0, -'.lora_A.weight'.length).replace(/^base_model\.model\./, ''))
    .sort();
  return { modules, metadata: read.header.__metadata__ };
}

/**
 * Records in the adapter file `weightsPath` (BASE_WEIGHTS_KEY) which base model it was trained on: the fingerprints of
 * the base weights its adapters modify, read from the base's safetensors files. Those and not all of the base's: a base
 * that differs anywhere that matters (another checkpoint, a base fine-tuned since) differs in them too, and hashing
 * only them keeps a save and a load fast. Measured on a busy 2-core machine (sha256 at about 0.8 GB/s there; CPUs
 * with SHA extensions hash about twice as fast unloaded), on the CPU: coltrast's default model (its query and value
 * weights, 1 MB) 3-30 ms of a 100-300 ms Encoder.load with the adapter; a BERT-base-sized model (440 MB; query and
 * value of 12 layers, 57 MB) 100-150 ms of a 1-1.8 s load and 90-190 ms of a 0.9-1.9 s save, where hashing all of its
 * weights took 0.7-1.1 s, about as long as the load itself.
 */
async function recordBase(weightsPath: string, base: AdapterBase): Promise<void> {
  // The folder the base was loaded from may be gone by the save (moved, deleted): the adapter is saved without the
  // record then, as PEFT saves one, rather than not at all.
  if (!base.files.every((file) => fs.existsSync(file))) return;
  const { modules } = adapterModules(weightsPath);
  const found = [...(await fingerprints(modules, baseTensors(base.files)))].filter((entry): entry is [string, string] => entry[1] !== undefined);
  if (found.length === 0) return;
  await addSafetensorsMetadata(weightsPath, { [BASE_WEIGHTS_KEY]: JSON.stringify(Object.fromEntries(found)) });
}

/**
 * Throws when the adapter in `dir` records (BASE_WEIGHTS_KEY) a base model whose adapted weights are not those of
 * `base`: another checkpoint of the same architecture, or a base fine-tuned since, has the shapes the adapter fits and
 * would load silently, embedding wrongly. An error, not a warning: wrong vectors, once in an index, are found late or
 * never, and the way out is one option. An adapter without the record (PEFT's own, or one saved before coltrast wrote
 * it) is not checked.
 */
async function checkBase(dir: string, weightsPath: string, config: LoraConfig, base: AdapterBase): Promise<void> {
  const { metadata } = adapterModules(weightsPath);
  const raw = typeof metadata === 'object' && metadata !== null ? (metadata as Record<string, unknown>)[BASE_WEIGHTS_KEY] : undefined;
  if (raw === undefined) return;
  let recorded: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = typeof raw === 'string' ? JSON.parse(raw) : undefined;
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) && Object.values(parsed).every((v) => typeof v === 'string')) recorded = parsed as Record<string, unknown>;
  } catch {
    // said below
  }
  if (!recorded) {
    throw new ColtrastError(
      'MODEL_FILES',
      `${weightsPath}: its __metadata__ "${BASE_WEIGHTS_KEY}" (the base model the adapter was trained on) is damaged; save the adapter again, or pass options.checkAdapterBase: false to load it unchecked`,
    );
  }
  // A base without one of the weights, or with one of another shape, is another architecture or size, which the
  // adapter does not fit: the native loader names the module that does not fit.
  const shape = (print: unknown) => String(print).split(' ')[1];
  const now = [...(await fingerprints(Object.keys(recorded), baseTensors(base.files)))].filter(([module, print]) => print !== undefined && shape(print) === shape(recorded[module]));
  const differ = now.filter(([module, print]) => print !== recorded[module]);
  if (differ.length === 0) return;
  const [module, print] = differ[0];
  const stored = (p: unknown) => String(p).split(' ')[0];
  const how =
    stored(print) !== stored(recorded[module])
      ? `${module}.weight is stored as ${stored(print)} there, as ${stored(recorded[module])} in the adapter's base (a converted copy?)`
      : `the values of ${module}.weight differ`;
  throw new ColtrastError(
    'INVALID_ARGUMENT',
    `the LoRA adapter ${dir} was trained on another base model than ${base.dir}: ${differ.length} of the ${now.length} base weights it adapts ` +
      `differ (${how}), and with it the model would compute wrong outputs. Load it on the base it was trained on` +
      `${config.baseModel ? ` (adapter_config.json's base_model_name_or_path: ${config.baseModel})` : ''}, or pass options.checkAdapterBase: false ` +
      'to load it on this base all the same',
  );
}

/**
 * @internal A PEFT adapter folder's adapters added to a loaded model (and, for a cross-encoder, the head modules the
 * adapter saved); returns its config. An embedding model refuses an adapter with modules_to_save (a classifier's).
 * With `base` (the weights the model was loaded from), an adapter that records another base is refused (checkBase).
 */
export async function loadAdapter(model: ModelHandle, dir: string, kind: 'embedding' | 'cross-encoder', base?: AdapterBase): Promise<LoraConfig> {
  const { weightsPath, ...config } = readAdapterConfig(dir);
  if (kind === 'embedding' && config.modulesToSave.length > 0) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `${path.join(dir, ADAPTER_CONFIG)} trains whole modules beside its adapters (modules_to_save ${config.modulesToSave.join(', ')}: a ` +
        `${config.taskType === 'SEQ_CLS' ? "cross-encoder's classification head" : 'head'}), which an embedding model has none of` +
        `${config.taskType === 'SEQ_CLS' ? ": load it with CrossEncoder.load(base, { adapter })" : ''}`,
    );
  }
  if (base) await checkBase(dir, weightsPath, config, base);
  await model.use(async (handle) => {
    try {
      await handle.loadLora(weightsPath, { scale: loraScale(config), dropout: config.dropout, modulesToSave: config.modulesToSave });
    } catch (error) {
      throw fromNative(error);
    }
  });
  return config;
}

/**
 * @internal A model's adapter (and the head modules it trains) saved as PEFT saves one, in a new folder `dir`; with
 * `base` (the weights the adapter was trained on, when the model's base weights are still those), recording that base
 * (recordBase).
 */
export async function saveAdapter(handle: NativeEncoder, dir: string, config: LoraConfig, dtype: string, base?: AdapterBase): Promise<void> {
  fs.mkdirSync(dir);
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS);
  await handle.saveLora(weightsPath, dtype);
  if (base) await recordBase(weightsPath, base);
  writeAdapterConfig(dir, config);
}
