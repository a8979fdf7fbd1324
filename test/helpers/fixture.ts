/** Paths of the tiny BERT fixture and temp copies of it that tests may break. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { Encoder } from '../../lib';
import { readSafetensors } from './safetensors';
import type { NativeStepOptions } from '../../lib/native';

export const FIXTURE = path.resolve(__dirname, '..', 'fixtures', 'tiny-bert');
export const REFERENCE_FILE = path.resolve(__dirname, '..', 'fixtures', 'tiny-bert.reference.json');
/** The built command line (npm run build:ts first), as CLI tests run it: through tsx each run cost ~1 s more CPU. */
export const CLI = path.resolve(__dirname, '..', '..', 'dist', 'cli.js');

export interface ReferenceItem {
  text: string;
  inputIds: number[];
  tokenStates: number[][];
  pooled: Record<'cls' | 'mean' | 'max' | 'mean_sqrt_len', number[]>;
}
export interface Reference {
  reference: string;
  maxSeqLength: number;
  hiddenSize: number;
  items: ReferenceItem[];
  variants: Record<string, number[][][]>;
}

export function loadReference(): Reference {
  return JSON.parse(fs.readFileSync(REFERENCE_FILE, 'utf8'));
}

/**
 * A new empty folder under the system's temp folder, removed when this test process exits (models, indexes and data
 * the tests write add up over a run, and CI machines' disks are sometimes small); COLTRAST_KEEP_TEST_FILES=1
 * keeps them, for a look after a failure.
 */
export function tempDir(prefix = 'coltrast-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (created.length === 0 && process.env.COLTRAST_KEEP_TEST_FILES !== '1') process.once('exit', removeTempDirs);
  created.push(dir);
  return dir;
}
const created: string[] = [];
function removeTempDirs(): void {
  for (const dir of created) fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
}

/** A writable copy of the fixture folder; `edit` may change files in it. */
export function fixtureCopy(edit?: (dir: string) => void): string {
  return folderCopy(FIXTURE, edit, 'model');
}

/** A writable copy of a model folder, under a temporary folder by the same name; `edit` may change files in it. */
export function folderCopy(source: string, edit?: (dir: string) => void, name = path.basename(source)): string {
  const dir = path.join(tempDir(), name);
  fs.cpSync(source, dir, { recursive: true });
  edit?.(dir);
  return dir;
}

export function editJson(file: string, change: (value: any) => any): void {
  const value = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.writeFileSync(file, JSON.stringify(change(value) ?? value));
}

/** An edit for fixtureCopy / folderCopy: a BERT-style config.json with its dropout off (hidden and attention). */
export function dropoutOff(dir: string): void {
  editJson(path.join(dir, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }));
}

/** Largest absolute difference between two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// Queries of three fixture-vocabulary words, each hidden in a positive of eleven: learnable by the tiny
// model, and not by chance.
const WORDS =
  'model text token vector embed search query document retrieval train loss batch fast slow small large tiny random bert node library native gpu cpu memory kernel score similar sentence word data set test cat dog run quick brown fox jumps over lazy river bank money water paper cafe resume naive hello world new old good bad'.split(
    ' ',
  );

/** `n` seeded (query, positive) training examples over the fixture's vocabulary. */
export function wordDataset(n: number, seed = 7): { query: string; positive: string }[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pick = (k: number) => Array.from({ length: k }, () => WORDS[Math.floor(r() * WORDS.length)]);
  return Array.from({ length: n }, () => {
    const key = pick(3);
    return { query: key.join(' '), positive: [...pick(4), ...key, ...pick(4)].join(' ') };
  });
}

/** The native trainer's step options for the fixture: both losses at 0.5, learning rate 1e-3. */
export const STEP: NativeStepOptions = {
  contrastiveWeight: 0.5,
  lateInteractionWeight: 0.5,
  temperature: 0.05,
  symmetric: false,
  lateInteractionKind: 'cross_entropy',
  learningRate: 1e-3,
  maxGradNorm: 1,
  lossScale: 1,
  apply: true,
};

/**
 * Checks `encoder` against outputs recorded from transformers and sentence-transformers for `texts`: each text's token
 * states and the pooled embeddings, to 1e-5, at batch sizes 1, 2 and 5 (texts alone and in padded batches).
 */
export async function expectRecordedOutputs(
  t: ExecutionContext,
  encoder: Encoder,
  texts: string[],
  ref: { tokenStates: number[][][]; embeddings: number[][] },
  width: number,
): Promise<void> {
  for (const batchSize of [1, 2, 5]) {
    const tokens = await encoder.embed(texts, { output: 'tokens', batchSize });
    tokens.forEach((m, i) => {
      t.deepEqual(m.dims, [ref.tokenStates[i].length, width]);
      t.true(maxAbsDiff(m.data, ref.tokenStates[i].flat()) < 1e-5, `batch ${batchSize}, text ${i}: ${maxAbsDiff(m.data, ref.tokenStates[i].flat())}`);
    });
    const pooled = await encoder.embed(texts, { batchSize });
    t.true(maxAbsDiff(pooled.data, ref.embeddings.flat()) < 1e-5, `batch ${batchSize} embeddings: ${maxAbsDiff(pooled.data, ref.embeddings.flat())}`);
  }
}

/**
 * Loads the model in `dir`, saves it to a new folder and checks that the saved weights hold the same tensor names and
 * config.json the same model_type; returns the folder and the model's embeddings of `texts` from before the save.
 */
export async function saveCopy(t: ExecutionContext, dir: string, texts: string[]): Promise<{ out: string; before: Float32Array }> {
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  const before = (await encoder.embed(texts)).data;
  const out = path.join(tempDir(), 'saved');
  await encoder.save(out);
  encoder.dispose();
  const names = (file: string) => [...readSafetensors(file).tensors.keys()].sort();
  t.deepEqual(names(path.join(out, 'model.safetensors')), names(path.join(dir, 'model.safetensors')));
  const modelType = (d: string) => JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8')).model_type;
  t.is(modelType(out), modelType(dir));
  return { out, before };
}

/** The model saved in `out` embeds `texts` exactly as `before`. */
export async function expectSameEmbeddings(t: ExecutionContext, out: string, texts: string[], before: Float32Array): Promise<void> {
  const reloaded = await Encoder.load(out, { device: 'cpu' });
  t.deepEqual(Array.from((await reloaded.embed(texts)).data), Array.from(before));
  reloaded.dispose();
}
