/**
 * A model cut to its first layers: what a model trained with adaptive layers (train's loss.adaptiveLayers,
 * sentence-transformers' AdaptiveLayerLoss / Matryoshka2dLoss) is for. sentence-transformers' docs do it in Python by
 * slicing the module list (`model[0].auto_model.encoder.layer = ...[:n]`) and saving; here the folder itself is
 * rewritten: config.json's layer count (num_hidden_layers, DistilBERT's n_layers, T5's num_layers) set to n, per-layer
 * lists in it (a decoder's layer_types) cut to n, and the later layers' tensors left out of the safetensors weights
 * (each shard of sharded weights rewritten, the index with it). The modules, tokenizer and the rest are copied as they
 * are, so the result loads in coltrast, sentence-transformers and transformers alike. Written atomically (a staging
 * folder renamed into place).
 *
 * An architecture with a norm after its last layer (ModernBERT, T5, decoder LLMs) applies it after layer n in the cut
 * model, as a model of n layers does; adaptive-layer training (here and in sentence-transformers) scored the states
 * entering layer n without it. For BERT's family (no final norm) the cut model's vectors are those states' exactly.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { writeFolderAtomic } from './files';
import { resolveModelDir } from './hub';
import { configJson, readJson, transformerFolder, weightFiles } from './model-dir';
import { readSafetensorsHeader, safetensorsHeaderBytes, tensorInfo } from './safetensors';
import { booleanValue, checkOptions, nonEmptyString, positiveInteger } from './validate';

export interface TruncateLayersOptions {
  /** The model: a folder or Hugging Face id (an embedding model, cross-encoder or sparse encoder). */
  model: string;
  /** How many of its first layers the new model keeps (1 to its layers less one). */
  layers: number;
  /** The new model's folder. */
  output: string;
  /** Replace a non-empty output folder (default false: refused). */
  overwrite?: boolean;
}

export interface TruncateLayersResult {
  output: string;
  /** The layers the model had, and the layers kept. */
  from: number;
  layers: number;
  /** Tensors left out (the later layers'), and bytes of weights written. */
  droppedTensors: number;
  weightBytes: number;
}

/** config.json's key for the layer count, by what the architectures name it (the first present wins). */
const LAYER_KEYS = ['num_hidden_layers', 'n_layers', 'num_layers'] as const;

/**
 * The index of the stack layer a weight belongs to, or undefined for one outside the stack: BERT's family and DeBERTa
 * (encoder.layer.N.), DistilBERT (transformer.layer.N.), ModernBERT and decoders (layers.N.), T5's encoder (encoder.block.N.;
 * its decoder's blocks, decoder.block.N., are not the encoder's layers).
 */
export function stackLayerOf(name: string): number | undefined {
  const m = /(?:^|\.)(?:encoder\.layer|transformer\.layer|encoder\.block|layers)\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * config.json's object for the model cut to its first `keep` layers: its layer count (whichever key the architecture
 * uses) set to `keep` and lists of one entry per layer cut to `keep`; and the count it had. Throws INVALID_ARGUMENT
 * (naming `option`) unless 1 <= keep <= that count (`below`: keep must be under it), MODEL_FILES for a config without one.
 */
export function configWithLayers(config: Record<string, unknown>, keep: number, where: { option: string; model: string; file: string; below?: boolean }): { config: Record<string, unknown>; from: number } {
  const key = LAYER_KEYS.find((k) => Number.isInteger(config[k]));
  if (!key) throw new ColtrastError('MODEL_FILES', `${where.file} names no layer count (${LAYER_KEYS.join(', ')})`);
  const from = config[key] as number;
  if (where.below ? keep >= from : keep > from) {
    throw new ColtrastError('INVALID_ARGUMENT', `${where.option} must be ${where.below ? 'below' : 'at most'} the ${from} layers of ${where.model} (it keeps the first ones), got ${keep}`);
  }
  const cut: Record<string, unknown> = { ...config, [key]: keep };
  // T5's decoder layers default to num_layers: a checkpoint with a decoder keeps its count.
  if (key === 'num_layers' && config.num_decoder_layers === undefined && String(config.model_type).includes('t5')) cut.num_decoder_layers = from;
  for (const [k, v] of Object.entries(config)) if (Array.isArray(v) && v.length === from && k.includes('layer')) cut[k] = v.slice(0, keep);
  return { config: cut, from };
}

/** Cuts `options.model` to its first `options.layers` layers into `options.output` (see the file's comment). */
export async function truncateLayers(options: TruncateLayersOptions): Promise<TruncateLayersResult> {
  const o = checkOptions('options', options, ['model', 'layers', 'output', 'overwrite']);
  const model = nonEmptyString('options.model', o.model);
  const output = nonEmptyString('options.output', o.output);
  const keep = positiveInteger('options.layers', o.layers);
  const overwrite = booleanValue('options.overwrite', o.overwrite ?? false);
  const dir = await resolveModelDir(model);
  const transformerDir = transformerFolder(dir);
  const configPath = path.join(transformerDir, 'config.json');
  if (!fs.existsSync(configPath)) throw new ColtrastError('MODEL_FILES', `${transformerDir} has no config.json: it is not a Hugging Face / sentence-transformers model folder`);
  const configText = fs.readFileSync(configPath, 'utf8');
  const config = readJson(configPath, 'config.json') as Record<string, unknown>;
  const { config: newConfig, from } = configWithLayers(config, keep, { option: 'options.layers', model, file: configPath, below: true });
  const weights = weightFiles(transformerDir);
  if (!weights) throw new ColtrastError('MODEL_FILES', `${transformerDir} has no model.safetensors (or model.safetensors.index.json): coltrast reads and writes safetensors weights only`);

  let droppedTensors = 0;
  let weightBytes = 0;
  let keptAny = false;
  await writeFolderAtomic(path.resolve(output), overwrite, async (staging) => {
    const sub = path.relative(dir, transformerDir);
    // Everything but the weights, config.json and the model card (which describes the whole model) copied as it is.
    const skip = new Set([configPath, weights.weightsPath, ...(weights.shards ?? []), path.join(dir, 'README.md')]);
    fs.cpSync(dir, staging, { recursive: true, filter: (source) => !skip.has(source) && !path.basename(source).startsWith('.') });
    const target = path.join(staging, sub);
    fs.writeFileSync(path.join(target, 'config.json'), configJson(configText, newConfig));
    const shardFiles = weights.shards ?? [weights.weightsPath];
    const weightMap: Record<string, string> = {};
    for (const file of shardFiles) {
      const written = await copyTensors(file, path.join(target, path.basename(file)), (name) => {
        const layer = stackLayerOf(name);
        return layer === undefined || layer < keep;
      });
      droppedTensors += written.dropped;
      weightBytes += written.bytes;
      for (const name of written.kept) weightMap[name] = path.basename(file);
      keptAny ||= written.kept.length > 0;
    }
    if (weights.shards) {
      const index = readJson(weights.weightsPath, 'model.safetensors.index.json') as Record<string, unknown>;
      const metadata = typeof index.metadata === 'object' && index.metadata !== null ? { ...(index.metadata as Record<string, unknown>), total_size: weightBytes } : { total_size: weightBytes };
      fs.writeFileSync(path.join(target, 'model.safetensors.index.json'), JSON.stringify({ ...index, metadata, weight_map: weightMap }, null, 2) + '\n');
    }
    if (droppedTensors === 0) {
      throw new ColtrastError('MODEL_FILES', `${model}: no weight of its layers ${keep} to ${from - 1} was found to leave out (names as encoder.layer.N., layers.N. or encoder.block.N.); is it a transformer checkpoint of another layout?`);
    }
    if (!keptAny) throw new ColtrastError('MODEL_FILES', `${model}: its weights hold nothing but layers`);
  });
  return { output: path.resolve(output), from, layers: keep, droppedTensors, weightBytes };
}

/**
 * Writes the safetensors file `source`'s tensors that `keep` accepts to `target` (its metadata kept), their bytes as
 * they are, 8 MiB at a time; returns their names, how many were left out and the bytes of data written.
 */
async function copyTensors(source: string, target: string, keep: (name: string) => boolean): Promise<{ kept: string[]; dropped: number; bytes: number }> {
  const input = await fs.promises.open(source, 'r');
  try {
    const read = readSafetensorsHeader(input.fd, 100 * 2 ** 20);
    if ('problem' in read) throw new ColtrastError('MODEL_FILES', `${source}: its safetensors header is ${read.problem}`);
    const { __metadata__: metadata, ...entries } = read.header as Record<string, unknown>;
    const kept: { name: string; begin: number; end: number; entry: Record<string, unknown> }[] = [];
    let dropped = 0;
    for (const [name, entry] of Object.entries(entries)) {
      const info = tensorInfo(entry as Record<string, unknown>);
      if (!info) throw new ColtrastError('MODEL_FILES', `${source}: the header's entry for ${name} is malformed`);
      if (keep(name)) kept.push({ name, begin: info.begin, end: info.end, entry: entry as Record<string, unknown> });
      else dropped++;
    }
    // In the order of their data, packed from 0.
    kept.sort((a, b) => a.begin - b.begin);
    const header: Record<string, unknown> = metadata === undefined ? {} : { __metadata__: metadata };
    let offset = 0;
    for (const t of kept) {
      header[t.name] = { ...t.entry, data_offsets: [offset, offset + t.end - t.begin] };
      offset += t.end - t.begin;
    }
    const out = await fs.promises.open(target, 'w');
    try {
      await out.write(safetensorsHeaderBytes(header));
      const buffer = Buffer.allocUnsafe(8 * 2 ** 20);
      for (const t of kept) {
        for (let at = read.dataStart + t.begin; at < read.dataStart + t.end; ) {
          const { bytesRead } = await input.read(buffer, 0, Math.min(buffer.length, read.dataStart + t.end - at), at);
          if (bytesRead === 0) throw new ColtrastError('MODEL_FILES', `${source} ends inside tensor ${t.name}`);
          await out.write(buffer, 0, bytesRead);
          at += bytesRead;
        }
      }
      await out.sync();
    } finally {
      await out.close();
    }
    return { kept: kept.map((t) => t.name), dropped, bytes: offset };
  } finally {
    await input.close();
  }
}
