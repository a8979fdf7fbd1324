/**
 * Reads a model directory in Hugging Face / sentence-transformers layout and decides how to run it:
 * which weights and tokenizer files, which pooling, whether to normalize, the maximum sequence length.
 * Writes the same layout back (`writeModelFiles`), so what we save Python can load.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';

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
type ModuleClass = 'Transformer' | 'Pooling' | 'Dense' | 'Normalize';
const MODULE_CLASSES: readonly ModuleClass[] = ['Transformer', 'Pooling', 'Dense', 'Normalize'];

/**
 * The class a modules.json "type" names, when it is one coltrast runs. sentence-transformers up to 5.x writes
 * `sentence_transformers.models.Pooling`; 6.x writes where the class lives now, e.g.
 * `sentence_transformers.base.modules.transformer.Transformer` or
 * `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, and reads both.
 */
function moduleClass(type: string): ModuleClass | null {
  const parts = type.split('.');
  const name = parts[parts.length - 1] as ModuleClass;
  const fromSt = parts[0] === 'sentence_transformers' || (parts.length === 2 && parts[0] === 'models');
  return fromSt && MODULE_CLASSES.includes(name) ? name : null;
}

/** sentence-transformers 6.x's Pooling "pooling_mode" values, by our mode name. */
const POOLING_MODE_NAMES: Record<string, PoolingMode | 'weightedmean'> = {
  cls: 'cls',
  mean: 'mean',
  max: 'max',
  mean_sqrt_len_tokens: 'mean_sqrt_len',
  lasttoken: 'lasttoken',
  weightedmean: 'weightedmean',
};

/** A module config's "module_input_name" (sentence-transformers 6.x) must be the pooled vector for coltrast
 * to run the module where it does. */
function checkModuleInput(config: Record<string, unknown>, file: string, what: string): void {
  if (config.module_input_name !== undefined && config.module_input_name !== 'sentence_embedding') {
    throw new ColtrastError(
      'UNSUPPORTED_MODEL',
      `${what} config ${file}: module_input_name ${JSON.stringify(config.module_input_name)} is not supported (only "sentence_embedding")`,
    );
  }
}

/** Tokenizer files copied verbatim when a model is saved (tokenizer.json is required, the rest optional). */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'];

/** sentence-transformers' Dense module: a linear projection of the pooled vector (the projection head). */
export interface DenseHead {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
  activation: 'identity' | 'tanh';
  /** Its weights (linear.weight, linear.bias); absent for a head made in this process and not yet saved. */
  weightsPath?: string;
}

/** sentence-transformers' names of the activations a Dense head may use. */
const ACTIVATIONS: Record<string, DenseHead['activation']> = {
  'torch.nn.modules.linear.Identity': 'identity',
  'torch.nn.modules.activation.Tanh': 'tanh',
};

export interface ModelDirectory {
  dir: string;
  /** config.json as text (handed to native code) and parsed. */
  configText: string;
  config: Record<string, unknown>;
  weightsPath: string;
  tokenizerPath: string;
  pooling: PoolingMode;
  normalize: boolean;
  /** The Dense module after pooling, when modules.json has one. */
  dense?: DenseHead;
  maxSeqLength: number;
  /** sentence-transformers' do_lower_case: lowercase text before tokenizing. */
  lowercase: boolean;
  /** Where pooling and normalization came from: 'modules.json', or a default for a plain Hugging Face folder. */
  source: 'sentence-transformers' | 'huggingface (default mean pooling, no normalization)';
}

function filesError(message: string): ColtrastError {
  return new ColtrastError('MODEL_FILES', message);
}

function readJson(file: string, what: string): unknown {
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

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface ModuleEntry {
  type: string;
  path: string;
}

function readModules(dir: string): ModuleEntry[] | null {
  const file = path.join(dir, 'modules.json');
  if (!fs.existsSync(file)) return null;
  const modules = readJson(file, 'modules.json');
  if (!Array.isArray(modules) || modules.length === 0) throw filesError(`modules.json in ${dir} must be a non-empty array`);
  return modules.map((m, i) => {
    if (!isObject(m) || typeof m.type !== 'string' || typeof m.path !== 'string') {
      throw filesError(`modules.json in ${dir}: entry ${i} needs string "type" and "path"`);
    }
    return { type: m.type, path: m.path };
  });
}

function readPooling(dir: string, modulePath: string): PoolingMode {
  const file = path.join(dir, modulePath, 'config.json');
  if (!fs.existsSync(file)) throw filesError(`modules.json lists a Pooling module but ${file} is missing`);
  const config = readJson(file, 'pooling config');
  if (!isObject(config)) throw filesError(`pooling config ${file} must be a JSON object`);
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

function readDense(dir: string, modulePath: string): DenseHead {
  const configFile = path.join(dir, modulePath, 'config.json');
  if (!fs.existsSync(configFile)) throw filesError(`modules.json lists a Dense module but ${configFile} is missing`);
  const config = readJson(configFile, 'Dense config');
  if (!isObject(config) || !Number.isInteger(config.in_features) || !Number.isInteger(config.out_features)) {
    throw filesError(`Dense config ${configFile} needs integer "in_features" and "out_features"`);
  }
  checkModuleInput(config, configFile, 'Dense');
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
  return { inFeatures: config.in_features as number, outFeatures: config.out_features as number, bias, activation, weightsPath };
}

/** Reads and checks everything `Encoder.load` needs from `dir`. */
export function readModelDirectory(dir: string): ModelDirectory {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw filesError(`model folder ${dir} does not exist`);
  const configPath = path.join(dir, 'config.json');
  if (!fs.existsSync(configPath)) {
    throw filesError(`${dir} has no config.json: it is not a Hugging Face / sentence-transformers model folder`);
  }
  const configText = fs.readFileSync(configPath, 'utf8');
  const config = readJson(configPath, 'config.json');
  if (!isObject(config)) throw filesError(`config.json in ${dir} must be a JSON object`);
  if (typeof config.model_type !== 'string') throw filesError(`config.json in ${dir} has no "model_type" string`);

  const weightsPath = path.join(dir, 'model.safetensors');
  if (!fs.existsSync(weightsPath)) {
    if (fs.existsSync(path.join(dir, 'model.safetensors.index.json'))) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `${dir} holds sharded safetensors weights; coltrast reads a single model.safetensors so far`);
    }
    const pickled = ['pytorch_model.bin', 'model.pt', 'model.ckpt'].find((f) => fs.existsSync(path.join(dir, f)));
    throw filesError(
      pickled
        ? `${dir} has ${pickled} but no model.safetensors: coltrast loads safetensors only (never pickle). Convert once ` +
            'in Python: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)'
        : `${dir} has no model.safetensors`,
    );
  }
  const tokenizerPath = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(tokenizerPath)) {
    throw filesError(
      `${dir} has no tokenizer.json. Save a fast tokenizer in Python with AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`,
    );
  }

  const modules = readModules(dir);
  let pooling: PoolingMode = 'mean';
  let normalize = false;
  let dense: DenseHead | undefined;
  if (modules) {
    // Transformer, Pooling, then at most one Dense, then Normalize: the order sentence-transformers runs them in.
    const order = modules.map((m) => moduleClass(m.type) ?? m.type);
    const denseAt = order.indexOf('Dense');
    if (denseAt >= 0 && (order.lastIndexOf('Dense') !== denseAt || denseAt < order.indexOf('Pooling') || (order.includes('Normalize') && denseAt > order.indexOf('Normalize')))) {
      throw new ColtrastError('UNSUPPORTED_MODEL', `modules.json in ${dir}: one Dense module between Pooling and Normalize is supported, not ${order.join(' → ')}`);
    }
    for (const m of modules) {
      const type = moduleClass(m.type);
      if (type === 'Transformer') continue;
      if (type === 'Pooling') pooling = readPooling(dir, m.path);
      else if (type === 'Dense') dense = readDense(dir, m.path);
      else if (type === 'Normalize') {
        const file = path.join(dir, m.path, 'config.json');
        const config = m.path && fs.existsSync(file) ? readJson(file, 'Normalize config') : {};
        if (isObject(config)) checkModuleInput(config, file, 'Normalize');
        normalize = true;
      } else throw new ColtrastError('UNSUPPORTED_MODEL', `modules.json in ${dir}: module type ${m.type} is not supported yet`);
    }
  }

  const positions = typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings : Infinity;
  let maxSeqLength = positions;
  let lowercase = false;
  const stConfigPath = path.join(dir, 'sentence_bert_config.json');
  const stConfig = fs.existsSync(stConfigPath) ? readJson(stConfigPath, 'sentence_bert_config.json') : undefined;
  if (isObject(stConfig) && typeof stConfig.max_seq_length === 'number') {
    maxSeqLength = Math.min(stConfig.max_seq_length, positions);
    lowercase = stConfig.do_lower_case === true;
  } else {
    const tokConfigPath = path.join(dir, 'tokenizer_config.json');
    const tokConfig = fs.existsSync(tokConfigPath) ? readJson(tokConfigPath, 'tokenizer_config.json') : undefined;
    // Tokenizer configs without a real limit carry a huge sentinel (1e30); only a sane value counts.
    if (isObject(tokConfig) && typeof tokConfig.model_max_length === 'number' && tokConfig.model_max_length < 1e6) {
      maxSeqLength = Math.min(tokConfig.model_max_length, positions);
    }
  }
  if (!Number.isFinite(maxSeqLength) || maxSeqLength < 2) {
    throw filesError(`cannot tell the maximum sequence length of ${dir}: set max_seq_length in sentence_bert_config.json`);
  }
  return {
    dir,
    configText,
    config,
    weightsPath,
    tokenizerPath,
    pooling,
    normalize,
    dense,
    maxSeqLength,
    lowercase,
    source: modules ? 'sentence-transformers' : 'huggingface (default mean pooling, no normalization)',
  };
}

/** Where a saved model keeps its Dense head's weights. */
export const DENSE_DIR = '2_Dense';

/**
 * Writes everything but the weights of a sentence-transformers directory into `target`: config,
 * tokenizer files, modules.json, the pooling, Dense, normalize and sentence_bert configs.
 */
export function writeModelFiles(
  source: ModelDirectory,
  target: string,
  settings: { pooling: PoolingMode; normalize: boolean; maxSeqLength: number; dimension: number; dense?: DenseHead },
): void {
  fs.writeFileSync(path.join(target, 'config.json'), source.configText);
  for (const file of TOKENIZER_FILES) {
    const from = path.join(source.dir, file);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(target, file));
  }
  const modules = [
    { idx: 0, name: '0', path: '', type: `${ST}Transformer` },
    { idx: 1, name: '1', path: '1_Pooling', type: `${ST}Pooling` },
  ];
  const json = (value: unknown) => JSON.stringify(value, null, 2) + '\n';
  if (settings.dense) {
    modules.push({ idx: 2, name: '2', path: DENSE_DIR, type: `${ST}Dense` });
    const activation = Object.keys(ACTIVATIONS).find((k) => ACTIVATIONS[k] === settings.dense!.activation);
    fs.mkdirSync(path.join(target, DENSE_DIR));
    fs.writeFileSync(
      path.join(target, DENSE_DIR, 'config.json'),
      json({ in_features: settings.dense.inFeatures, out_features: settings.dense.outFeatures, bias: settings.dense.bias, activation_function: activation }),
    );
  }
  const normalizeDir = `${modules.length}_Normalize`;
  if (settings.normalize) modules.push({ idx: modules.length, name: String(modules.length), path: normalizeDir, type: `${ST}Normalize` });
  fs.writeFileSync(path.join(target, 'modules.json'), json(modules));
  fs.mkdirSync(path.join(target, '1_Pooling'));
  const poolingConfig: Record<string, unknown> = { word_embedding_dimension: settings.dimension };
  for (const mode of POOLING_MODES) poolingConfig[POOLING_KEYS[mode]] = mode === settings.pooling;
  poolingConfig.pooling_mode_weightedmean_tokens = false;
  poolingConfig.include_prompt = true;
  fs.writeFileSync(path.join(target, '1_Pooling', 'config.json'), json(poolingConfig));
  if (settings.normalize) fs.mkdirSync(path.join(target, normalizeDir));
  fs.writeFileSync(
    path.join(target, 'sentence_bert_config.json'),
    json({ max_seq_length: settings.maxSeqLength, do_lower_case: source.lowercase }),
  );
}
