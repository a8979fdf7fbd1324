// Masked-language-model training (train({ mlm })): the masks drawn as transformers' DataCollatorForLanguageModeling
// draws them (lib/masked-lm.ts), the loss falling, the output a plain *ForMaskedLM folder that SparseEncoder.load and
// Encoder.load read, a resumed run equal to an uninterrupted one, the options it refuses, and the command line. The loss
// and an AdamW step against transformers' own *ForMaskedLM are in test/python-interop.test.ts.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, SparseEncoder, train } from '../lib';
import { maskTokens, maskingTokens } from '../lib/masked-lm';
import { editJson, folderCopy, maxAbsDiff, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const TINY_BERT = path.join(ROOT, 'test', 'fixtures', 'tiny-bert');
const PLAIN_MLM = path.join(ROOT, 'test', 'fixtures', 'tiny-sparse', 'bert-plain');
const WORDS = 'magnet field fox quick brown river water stone tree leaf model token vector search sparse retrieval'.split(' ');

/** `n` texts of eight words, seeded. */
function texts(n: number, seed: number): string[] {
  let x = seed;
  const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: n }, () => Array.from({ length: 8 }, () => WORDS[Math.floor(next() * WORDS.length)]).join(' '));
}

test('masks are drawn as DataCollatorForLanguageModeling draws them: about probability of the tokens, 80% masked, 10% random, 10% kept, never a special token or padding', (t) => {
  const tokens = { maskId: 4, special: new Set([0, 1, 2, 3, 4]) };
  const rows = 400, seq = 60;
  const ids = new Int32Array(rows * seq);
  const attention = new Int32Array(rows * seq);
  for (let r = 0; r < rows; r++) {
    const length = 10 + (r % 50);
    for (let c = 0; c < length; c++) {
      ids[r * seq + c] = c === 0 ? 2 : c === length - 1 ? 3 : 5 + ((r * 31 + c * 7) % 190);
      attention[r * seq + c] = 1;
    }
  }
  const { ids: masked, labels } = maskTokens(ids, attention, tokens, 198, 0.15, 11);
  let choosable = 0, chosen = 0, asMask = 0, kept = 0, random = 0;
  for (let i = 0; i < ids.length; i++) {
    const can = attention[i] === 1 && !tokens.special.has(ids[i]);
    if (can) choosable++;
    if (labels[i] === -100) {
      t.is(masked[i], ids[i]);
      continue;
    }
    t.true(can, `position ${i} (token ${ids[i]}, attention ${attention[i]}) was chosen`);
    t.is(labels[i], ids[i]);
    chosen++;
    if (masked[i] === 4) asMask++;
    else if (masked[i] === ids[i]) kept++;
    else random++;
  }
  const share = (x: number) => x / chosen;
  t.true(Math.abs(chosen / choosable - 0.15) < 0.01, `${chosen} of ${choosable} chosen`);
  t.true(Math.abs(share(asMask) - 0.8) < 0.03 && Math.abs(share(random) - 0.1) < 0.03 && Math.abs(share(kept) - 0.1) < 0.03, `${asMask} masked, ${random} random, ${kept} kept`);
  // The same seed the same masks; another seed others.
  t.deepEqual(maskTokens(ids, attention, tokens, 198, 0.15, 11).labels, labels);
  t.notDeepEqual(maskTokens(ids, attention, tokens, 198, 0.15, 12).labels, labels);
  // A batch whose draw chose nothing still predicts one token: its first that may be chosen.
  const short = maskTokens(Int32Array.from([2, 9, 10, 3]), Int32Array.from([1, 1, 1, 1]), tokens, 198, 1e-9, 1);
  t.deepEqual(Array.from(short.labels), [-100, 9, -100, -100]);
});

test('the mask token comes from the tokenizer\'s config; a tokenizer without one is refused, naming the folder', (t) => {
  const tokenizer = fs.readFileSync(path.join(PLAIN_MLM, 'tokenizer.json'));
  const found = maskingTokens(tokenizer, PLAIN_MLM);
  t.is(found.maskId, 4);
  t.deepEqual([...found.special].sort(), [0, 1, 2, 3, 4]);
  const bare = tempDir();
  const json = JSON.parse(tokenizer.toString('utf8'));
  json.added_tokens = json.added_tokens.filter((a: { content: string }) => a.content !== '[MASK]');
  const error = t.throws(() => maskingTokens(JSON.stringify(json), bare)) as Error & { code: string };
  t.is(error.code, 'UNSUPPORTED_MODEL');
  t.regex(error.message, /has no mask token/);
});

test('train({ mlm }) from an embedding model: a new head, the loss falls, and the output is a *ForMaskedLM folder that SparseEncoder and Encoder load', async (t) => {
  const out = path.join(tempDir(), 'mlm');
  const result = await train({ model: TINY_BERT, mlm: true, data: texts(64, 1), output: out, epochs: 3, batchSize: 8, learningRate: 1e-3, valSplit: 0.25, device: 'cpu', seed: 3 });
  const epochs = result.history.epochs;
  t.true(epochs[2].valLoss! < epochs[0].valLoss!, epochs.map((e) => e.valLoss).join(' '));
  t.is(result.before, undefined, 'no retrieval metrics');
  t.true(result.history.steps.every((s) => Number.isFinite(s.loss) && s.contrastive === 0));
  t.false(fs.existsSync(path.join(out, 'modules.json')), 'a plain Hugging Face folder');
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures, ['BertForMaskedLM']);
  t.regex(fs.readFileSync(path.join(out, 'README.md'), 'utf8'), /masked language model trained further/);
  const sparse = await SparseEncoder.load(out, { device: 'cpu' });
  t.is(sparse.dimension, 198);
  sparse.dispose();
  const dense = await Encoder.load(out, { device: 'cpu' });
  t.is(dense.dimension, 32);
  dense.dispose();
});

test('an interrupted masked-LM run resumes to the weights of an uninterrupted one (the masks are the seed\'s, epoch\'s and batch\'s)', async (t) => {
  // Dropout off: the two runs' random states differ only where the resume would make them differ.
  const model = folderCopy(PLAIN_MLM, (dir) => editJson(path.join(dir, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 })));
  const data = texts(48, 7);
  const options = { model, mlm: { probability: 0.3 }, data, epochs: 2, batchSize: 8, learningRate: 1e-3, valSplit: 0, device: 'cpu' as const, seed: 9, checkpointEvery: 4 };
  const whole = path.join(tempDir(), 'whole');
  await train({ ...options, output: whole });
  const parted = path.join(tempDir(), 'parted');
  const controller = new AbortController();
  const stopped = await rejection(() => train({ ...options, output: parted, signal: controller.signal, onProgress: (p) => p.step >= 5 && controller.abort() }));
  t.is(stopped.code, 'ABORTED');
  await train({ ...options, output: parted, resume: true });
  const probe = async (dir: string) => {
    const m = await SparseEncoder.load(dir, { device: 'cpu' });
    const [v] = await m.encode(['magnet field quick brown fox']);
    m.dispose();
    const dense = new Float32Array(m.dimension);
    v.indices.forEach((index, k) => (dense[index] = v.values[k]));
    return dense;
  };
  t.true(maxAbsDiff(await probe(whole), await probe(parted)) < 1e-6);
});

test('train({ mlm }) refuses the options of retrieval training and a bad probability', async (t) => {
  const out = path.join(tempDir(), 'x');
  for (const extra of [{ sparse: true }, { contrastiveTension: true }, { loss: { temperature: 0.1 } }, { crossEncoder: true }, { earlyStopping: { patience: 1, metric: 'mrr@10' } }, { mlm: { probability: 1.5 } }]) {
    const error = await rejection(() => train({ model: TINY_BERT, mlm: true, data: texts(16, 2), output: out, batchSize: 4, device: 'cpu', ...extra } as never));
    t.is(error.code, 'INVALID_ARGUMENT', JSON.stringify(extra));
  }
});

test('coltrast train --mlm trains a masked language model from a text file', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'texts.txt');
  fs.writeFileSync(data, texts(16, 5).join('\n') + '\n');
  const out = path.join(dir, 'model');
  const run = spawnSync(
    process.execPath,
    [path.join(ROOT, 'dist', 'cli.js'), 'train', '--model', PLAIN_MLM, '--mlm', '--mlm-probability', '0.2', '--data', data, '--output', out, '--epochs', '1', '--batch-size', '4', '--device', 'cpu', '--json'],
    { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000 },
  );
  t.is(run.status, 0, run.stderr);
  const history = JSON.parse(fs.readFileSync(path.join(out, 'training_history.json'), 'utf8'));
  t.deepEqual(history.config.mlm, { probability: 0.2 });
  t.is(history.history.steps.length, 4);
  t.true(fs.existsSync(path.join(out, 'model.safetensors')));
});
