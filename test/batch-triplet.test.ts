// Texts of classes with the batch triplet losses (train({ loss: { batchTriplet } })): the data ({ text, label } in
// JSONL and CSV), batches formed as sentence-transformers' GroupByLabelBatchSampler forms them, what the losses cannot
// use refused by name, a run whose held-out loss falls, the command line, and a killed run's exact resume. The losses
// equal sentence-transformers' BatchAll, BatchHard, BatchSemiHard and BatchHardSoftMargin TripletLoss on a batch
// (test/python-interop.test.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { train } from '../lib';
import { makeBatches, readTrainingData, type TrainExample } from '../lib/train-data';
import { CLI, FIXTURE, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { checkKillAndResumeNearEnd } from './helpers/resume';

/** Words of the fixture's vocabulary by topic: a text of a class is three words of its topic. */
const TOPICS = [
  ['fast', 'quick', 'slow', 'lazy', 'small', 'tiny'],
  ['cat', 'cats', 'dog', 'dogs', 'fox', 'mat'],
  ['text', 'texts', 'word', 'words', 'sentence', 'sentences'],
  ['model', 'models', 'vector', 'vectors', 'token', 'tokens'],
  ['query', 'queries', 'document', 'documents', 'score', 'scores'],
];

function classTexts(n: number, seed: number): { text: string; label: number }[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => {
    const label = Math.floor(r() * TOPICS.length);
    const words = Array.from({ length: 3 }, () => TOPICS[label][Math.floor(r() * TOPICS[label].length)]);
    return { text: words.join(' '), label };
  });
}

test('texts of classes are read from JSONL and CSV, and batched two of a class at a time as GroupByLabelBatchSampler batches them', async (t) => {
  const dir = tempDir();
  const rows = [
    ...Array.from({ length: 7 }, (_, i) => ({ text: `a cat ${i}`, label: 'cats' })),
    ...Array.from({ length: 4 }, (_, i) => ({ text: `a dog ${i}`, label: 2 })),
    ...Array.from({ length: 2 }, (_, i) => ({ text: `a fox ${i}`, label: 3.5 })),
    { text: 'a lone word', label: 9 },
    ...Array.from({ length: 6 }, (_, i) => ({ sentence: `a token ${i}`, label: 'tokens' })),
  ];
  const jsonl = path.join(dir, 'classes.jsonl');
  fs.writeFileSync(jsonl, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const read = await readTrainingData(jsonl);
  const examples = 'examples' in read ? read.examples : [];
  t.deepEqual(examples[7], { query: 'a dog 0', positive: 'a dog 0', classLabel: '2' });
  t.is(examples[19].classLabel, 'tokens');
  // A CSV's numbers are classes however they are written.
  const csv = path.join(dir, 'classes.csv');
  fs.writeFileSync(csv, 'text,label\na cat,1\nthe cat sat,1.0\na dog,dog\n');
  const fromCsv = await readTrainingData(csv);
  t.deepEqual('examples' in fromCsv && fromCsv.examples.map((e) => e.classLabel), ['1', '1', 'dog']);
  fs.writeFileSync(csv, 'text,positive,label\na,b,1\n');
  t.regex((await rejection(() => readTrainingData(csv))).message, /a "text" column holds texts of classes \(with "label"\), which take no "positive" column/);
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, JSON.stringify({ text: 'a cat', label: null }) + '\n');
  t.regex((await rejection(() => readTrainingData(bad))).message, /"label" must be a finite number or a non-empty string/);

  // Batches of 6: the classes of 7, 4, 2 and 6 texts give 6, 4, 2 and 6 (the lone text and the seventh cat wait), 2 at
  // a time per class and round, while two classes hold texts.
  const batches = makeBatches(examples, 6);
  const used = batches.flatMap((b) => b.queries);
  t.is(new Set(used).size, used.length, 'no text twice');
  t.is(used.length, 18);
  t.false(used.includes('a lone word') || used.includes('a cat 6'));
  for (const b of batches) {
    t.deepEqual(b.documents, []);
    t.true(b.queries.length === 6 || (b === batches[batches.length - 1] && b.queries.length >= 4));
    // Each class of a batch is there an even number of times, numbered in the order it comes.
    const counts = new Map<number, number>();
    b.classLabels!.forEach((c) => counts.set(c, (counts.get(c) ?? 0) + 1));
    t.true([...counts.values()].every((n) => n % 2 === 0));
    t.deepEqual([...counts.keys()], [...counts.keys()].sort((x, y) => x - y));
    const byText = new Map(examples.map((e: TrainExample) => [e.query, e.classLabel]));
    b.queries.forEach((q, i) => b.queries.forEach((p, j) => t.is(byText.get(q) === byText.get(p), b.classLabels![i] === b.classLabels![j])));
  }
});

test('train({ loss: { batchTriplet } }) on texts of classes: the held-out loss falls; what the losses cannot use is refused', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'classes.jsonl');
  fs.writeFileSync(data, classTexts(240, 3).map((o) => JSON.stringify(o)).join('\n') + '\n');
  const output = path.join(dir, 'out');
  const result = await train({ model: FIXTURE, data, output, epochs: 3, batchSize: 16, learningRate: 3e-3, loss: { batchTriplet: { kind: 'hard', margin: 0.5 } }, device: 'cpu', checkpointEvery: 0, seed: 4 });
  const epochs = result.history.epochs;
  t.log(`held-out BatchHardTripletLoss ${epochs.map((e) => e.valLoss!.toFixed(4)).join(' → ')}`);
  t.true(epochs[epochs.length - 1].valLoss! < epochs[0].valLoss! * 0.8, `validation loss ${epochs.map((e) => e.valLoss!.toFixed(4)).join(' → ')}`);
  t.is(result.before, undefined, 'no retrieval metrics for texts of classes');
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.like(history.config.step, { batchTriplet: 'hard', batchTripletDistance: 'euclidean', batchTripletMargin: 0.5, contrastiveWeight: 0, lateInteractionWeight: 0 });
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /- Loss: BatchHardTripletLoss on texts of classes, euclidean distance, margin 0\.5/);

  const base = { model: FIXTURE, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 4, data };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  await refused({ ...base, batchSize: 5, loss: { batchTriplet: 'all' } }, /options\.batchSize must be an even number >= 4 with options\.loss\.batchTriplet/);
  await refused({ ...base, loss: { batchTriplet: 'hardest' as never } }, /options\.loss\.batchTriplet must be one of/);
  await refused({ ...base, loss: { batchTriplet: { kind: 'hard_soft_margin', margin: 1 } } }, /options\.loss\.batchTriplet\.margin must be absent with 'hard_soft_margin'/);
  await refused({ ...base, loss: { batchTriplet: 'hard', contrastiveWeight: 1 } }, /options\.loss\.batchTriplet is the whole loss: drop options\.loss\.contrastiveWeight/);
  await refused({ ...base, miniBatchSize: 2, loss: { batchTriplet: 'hard' } }, /options\.miniBatchSize is for other training/);
  await refused({ ...base, loss: { batchTriplet: 'semi_hard' }, earlyStopping: { patience: 1, metric: 'recall@1' } }, /options\.earlyStopping\.metric must be one of 'loss'/);
  // Texts of classes need the loss, and the loss needs them.
  await refused({ ...base }, /240 of the 240 examples are texts of classes .*: train them with options\.loss\.batchTriplet/);
  const pairs = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(pairs, JSON.stringify({ query: 'a cat', positive: 'cats' }) + '\n');
  await refused({ ...base, data: pairs, loss: { batchTriplet: 'all' } }, /options\.loss\.batchTriplet trains on texts of classes .*, and example 1 has no class/);
  const one = path.join(dir, 'one.jsonl');
  fs.writeFileSync(one, ['a cat', 'the cat', 'a dog'].map((text, i) => JSON.stringify({ text, label: i < 2 ? 0 : 1 })).join('\n') + '\n');
  await refused({ ...base, data: one, loss: { batchTriplet: 'all' } }, /one class alone holds 2 texts or more/);
});

test('coltrast train --batch-triplet trains a CSV of texts and their classes; its flags name themselves in errors', (t) => {
  const dir = tempDir();
  const csv = path.join(dir, 'classes.csv');
  fs.writeFileSync(csv, `text,label\n${classTexts(40, 6).map((r) => `${r.text},${r.label}`).join('\n')}\n`);
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', csv, '--epochs', '1', '--batch-size', '8', '--device', 'cpu', ...args], { encoding: 'utf8', timeout: 120_000 });
  const ok = run(['--output', path.join(dir, 'out'), '--batch-triplet', 'semi_hard', '--batch-triplet-distance', 'cosine', '--batch-triplet-margin', '0.25', '--json']);
  t.is(ok.status, 0, ok.stderr);
  t.like(JSON.parse(fs.readFileSync(path.join(dir, 'out', 'training_history.json'), 'utf8')).config.step, { batchTriplet: 'semi_hard', batchTripletDistance: 'cosine', batchTripletMargin: 0.25 });
  const noKind = run(['--output', path.join(dir, 'y'), '--batch-triplet-margin', '1']);
  t.is(noKind.status, 2);
  t.regex(noKind.stderr, /--batch-triplet must be one of 'all', 'hard', 'semi_hard', 'hard_soft_margin'/);
  const odd = run(['--output', path.join(dir, 'z'), '--batch-triplet', 'all', '--batch-size', '7']);
  t.is(odd.status, 2);
  t.regex(odd.stderr, /--batch-size must be an even number >= 4/);
});

test('a batch-triplet run killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  // 40 texts of 5 classes, 8 held out; batches of 4 from the 32 others (classes cut to even counts).
  const base = { model: FIXTURE, data: classTexts(40, 2), epochs: 2, batchSize: 4, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2, loss: { batchTriplet: 'all' } };
  checkKillAndResumeNearEnd(t, base);
});
