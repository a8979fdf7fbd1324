// Embedding distillation (train({ teacher, loss: { distillation: 'mse' } })): sentence-transformers' MSELoss as its
// multilingual knowledge distillation uses it. The student's vectors of parallel sentences (a source and its
// translation) fit the teacher's vector of the source. The step's loss is checked against a float64 reference from
// embed() vectors, a run on a made-up "translation" task raises its held-out translation retrieval, the data's
// columns (english, non_english) are read, what it cannot use is refused, and a killed run resumes exactly. The loss
// equals sentence-transformers' MSELoss on a batch (test/python-interop.test.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder, train } from '../lib';
import { embedWithTeacher } from '../lib/train';
import { readTrainingData } from '../lib/train-data';
import { CLI, FIXTURE, STEP, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';
import { checkKillAndResume } from './helpers/resume';

/** A made-up language: each word of the fixture's vocabulary below has its "translation", another word of it. */
const WORDS = [
  ['fast', 'quick'], ['slow', 'lazy'], ['small', 'tiny'], ['cat', 'cats'], ['dog', 'dogs'], ['text', 'texts'], ['model', 'models'], ['token', 'tokens'],
  ['vector', 'vectors'], ['query', 'queries'], ['document', 'documents'], ['score', 'scores'], ['sentence', 'sentences'], ['word', 'words'], ['test', 'tests'],
];

/** `n` parallel sentences: three words, and the same three translated word by word. */
function parallel(n: number, seed: number): { english: string; non_english: string }[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => {
    const picked: number[] = [];
    while (picked.length < 3) {
      const i = Math.floor(r() * WORDS.length);
      if (!picked.includes(i)) picked.push(i);
    }
    return { english: picked.map((i) => WORDS[i][0]).join(' '), non_english: picked.map((i) => WORDS[i][1]).join(' ') };
  });
}

test("the step's MSELoss is the mean squared error of the student's vectors of sources and translations against the teacher's of the sources (float64 reference)", async (t) => {
  const pairs = parallel(7, 3);
  const sources = pairs.map((p) => p.english);
  const translations = pairs.map((p) => p.non_english);
  // The teacher: the fixture without its Normalize module (its vectors as they come); the student normalizes.
  const dir = tempDir();
  const teacherDir = path.join(dir, 'teacher');
  fs.cpSync(FIXTURE, teacherDir, { recursive: true });
  const modules = path.join(teacherDir, 'modules.json');
  fs.writeFileSync(modules, JSON.stringify(JSON.parse(fs.readFileSync(modules, 'utf8')).filter((m: { type: string }) => !m.type.endsWith('Normalize'))));
  const student = await Encoder.load(FIXTURE, { device: 'cpu' });
  const trainer = await student.createTrainer({ seed: 1 });
  try {
    const examples = await embedWithTeacher(teacherDir, sources.map((query, i) => ({ query, positive: translations[i] })), { width: student.dimension, model: FIXTURE }, { device: 'cpu' });
    const teacher = await Encoder.load(teacherDir, { device: 'cpu' });
    const expected = await teacher.embed(sources);
    teacher.dispose();
    examples.forEach((e, i) => e.target!.forEach((x, j) => t.true(Math.abs(x - expected.data[i * expected.dims[1] + j]) <= 1e-6, `${x}`)));
    t.true(Math.abs(Math.hypot(...examples[0].target!) - 1) > 1e-3, "the teacher's vectors as it gives them: not normalized");
    const targetVectors = Float32Array.from(examples.flatMap((e) => e.target!));
    const { loss } = await trainer.evaluate(sources, translations, { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, learningRate: 0, lossScale: 1, apply: false, targetVectors, normalizedVectors: true } as never);
    const mine = [await student.embed(sources), await student.embed(translations)];
    let sum = 0;
    for (const m of mine) for (let k = 0; k < m.data.length; k++) sum += (m.data[k] - targetVectors[k]) ** 2;
    const reference = sum / (2 * targetVectors.length);
    t.true(Math.abs(loss - reference) <= 1e-5 * reference, `coltrast ${loss}, float64 ${reference}`);
  } finally {
    trainer.dispose();
    student.dispose();
  }
});

test("train({ teacher, loss: { distillation: 'mse' } }) on parallel sentences: the held-out translations are found more often, the teacher's vectors kept", async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'parallel.jsonl');
  fs.writeFileSync(data, parallel(240, 11).map((o) => JSON.stringify(o)).join('\n') + '\n');
  const output = path.join(dir, 'out');
  const result = await train({ model: FIXTURE, teacher: FIXTURE, data, output, epochs: 4, batchSize: 8, learningRate: 5e-3, loss: { distillation: 'mse' }, device: 'cpu', checkpointEvery: 0, seed: 2 });
  const epochs = result.history.epochs;
  t.true(epochs[epochs.length - 1].valLoss! < epochs[0].valLoss! * 0.8, `validation MSE ${epochs.map((e) => e.valLoss!.toExponential(3)).join(' → ')}`);
  // Each source's translation among the held-out translations: sentence-transformers' TranslationEvaluator (source to target).
  t.true(result.after!['recall@1'] > result.before!['recall@1'] + 0.2, `translation accuracy ${result.before!['recall@1']} → ${result.after!['recall@1']}`);
  t.log(`validation MSE ${epochs[0].valLoss!.toExponential(3)} → ${epochs[epochs.length - 1].valLoss!.toExponential(3)}; translation accuracy ${result.before!['recall@1'].toFixed(3)} → ${result.after!['recall@1'].toFixed(3)}`);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.is(history.config.embeddingTeacher, FIXTURE);
  t.false(history.config.prompts, 'prompts are off by default');
  t.is(history.config.step.contrastiveWeight, 0);
  t.regex(fs.readFileSync(path.join(output, 'README.md'), 'utf8'), /- Loss: MSELoss: the vectors of parallel sentences fit `.*tiny-bert`'s vectors of the sources \(embedding distillation\)/);
});

test('parallel sentences are read as sentence-transformers names their columns (english, non_english), in JSONL and CSV; what embedding distillation cannot use is refused', async (t) => {
  const dir = tempDir();
  const rows = parallel(12, 5);
  const csv = path.join(dir, 'parallel.csv');
  fs.writeFileSync(csv, `english,non_english\n${rows.map((r) => `${r.english},${r.non_english}`).join('\n')}\n`);
  const read = await readTrainingData(csv);
  t.deepEqual('examples' in read && read.examples[0], { query: rows[0].english, positive: rows[0].non_english });
  const jsonl = path.join(dir, 'parallel.jsonl');
  fs.writeFileSync(jsonl, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const fromJsonl = await readTrainingData(jsonl);
  t.deepEqual('examples' in fromJsonl && fromJsonl.examples.map((e) => [e.query, e.positive]), rows.map((r) => [r.english, r.non_english]));
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, JSON.stringify({ english: 'a cat', non_english: 'cats', label: 1 }) + '\n');
  t.regex((await rejection(() => readTrainingData(bad))).message, /parallel sentences \("english", "non_english"\) take no "label"/);

  const base = { model: FIXTURE, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 4, data: jsonl };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  await refused({ ...base, loss: { distillation: 'mse' } }, /options\.teacher must be an embedding model folder or Hugging Face id: options\.loss\.distillation 'mse' fits/);
  await refused({ ...base, teacher: FIXTURE, loss: { distillation: 'mse', contrastiveWeight: 1 } }, /options\.loss\.distillation 'mse' is the whole loss: drop options\.loss\.contrastiveWeight/);
  await refused({ ...base, teacher: FIXTURE, loss: { distillation: 'mse', matryoshka: { dimensions: [32, 8] } } }, /drop options\.loss\.matryoshka/);
  await refused({ ...base, teacher: FIXTURE, guide: FIXTURE, loss: { distillation: 'mse' } }, /options\.guide is for other training/);
  const triplets = path.join(dir, 'triplets.jsonl');
  fs.writeFileSync(triplets, rows.map((r) => JSON.stringify({ query: r.english, positive: r.non_english, negative: 'a dog' })).join('\n') + '\n');
  await refused({ ...base, data: triplets, teacher: FIXTURE, loss: { distillation: 'mse' } }, /trains on parallel sentences .*, and example 1 has hard negatives/);
  // A teacher of another width than the student's: a projection head of the teacher's width is the way.
  await refused({ ...base, teacher: FIXTURE, projection: { dimension: 8 }, loss: { distillation: 'mse' } }, /gives vectors of 32 entries and .* of 8: .*options\.projection: \{ dimension: 32 \}/);
});

test("coltrast train --distillation mse --teacher trains on a CSV of parallel sentences; its flags name themselves in errors", (t) => {
  const dir = tempDir();
  const csv = path.join(dir, 'parallel.csv');
  fs.writeFileSync(csv, `english,non_english\n${parallel(24, 8).map((r) => `${r.english},${r.non_english}`).join('\n')}\n`);
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', csv, '--epochs', '1', '--device', 'cpu', ...args], { encoding: 'utf8', timeout: 120_000 });
  const ok = run(['--output', path.join(dir, 'out'), '--teacher', FIXTURE, '--distillation', 'mse', '--json']);
  t.is(ok.status, 0, ok.stderr);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'out', 'training_history.json'), 'utf8')).config.embeddingTeacher, FIXTURE);
  const noTeacher = run(['--output', path.join(dir, 'y'), '--distillation', 'mse']);
  t.is(noTeacher.status, 2);
  t.regex(noTeacher.stderr, /--teacher must be an embedding model folder or Hugging Face id/);
});

test('an embedding-distillation run killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  const base = { model: FIXTURE, teacher: FIXTURE, data: parallel(20, 4), epochs: 2, batchSize: 4, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2, loss: { distillation: 'mse' } };
  // 16 training pairs, batches of 4: 4 steps per epoch, 8 in all; killed mid-epoch 2, one step after the checkpoint at 6.
  checkKillAndResume(t, base, { steps: 8, killAt: 7, checkpointAt: 6 });
});

test("sentences alone (a .txt file, or { text }) distill the teacher's vectors of them: the step's loss is their MSE, and a run lowers it", async (t) => {
  // The teacher: the fixture with CLS pooling, so its vectors are not the student's (mean pooling) at the start.
  const dir = tempDir();
  const teacherDir = path.join(dir, 'teacher');
  fs.cpSync(FIXTURE, teacherDir, { recursive: true });
  const pooling = path.join(teacherDir, '1_Pooling', 'config.json');
  fs.writeFileSync(pooling, JSON.stringify({ ...JSON.parse(fs.readFileSync(pooling, 'utf8')), pooling_mode_cls_token: true, pooling_mode_mean_tokens: false }));
  const sentences = parallel(7, 12).map((p) => p.english);
  const student = await Encoder.load(FIXTURE, { device: 'cpu' });
  const trainer = await student.createTrainer({ seed: 1 });
  try {
    const examples = await embedWithTeacher(teacherDir, sentences.map((s) => ({ query: s, positive: s, single: true })), { width: student.dimension, model: FIXTURE }, { device: 'cpu' });
    const targetVectors = Float32Array.from(examples.flatMap((e) => e.target!));
    const { loss } = await trainer.evaluate(sentences, [], { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, learningRate: 0, lossScale: 1, apply: false, targetVectors, normalizedVectors: true } as never);
    const mine = await student.embed(sentences);
    let sum = 0;
    for (let k = 0; k < mine.data.length; k++) sum += (mine.data[k] - targetVectors[k]) ** 2;
    const reference = sum / targetVectors.length;
    t.true(reference > 1e-4, 'the teacher differs from the student');
    t.true(Math.abs(loss - reference) <= 1e-5 * reference, `coltrast ${loss}, float64 ${reference}`);
  } finally {
    trainer.dispose();
    student.dispose();
  }
  const txt = path.join(dir, 'sentences.txt');
  fs.writeFileSync(txt, [...new Set(parallel(300, 21).flatMap((p) => [p.english, p.non_english]))].join('\n') + '\n');
  const result = await train({ model: FIXTURE, teacher: teacherDir, data: txt, output: path.join(dir, 'out'), epochs: 3, batchSize: 16, learningRate: 3e-3, loss: { distillation: 'mse' }, device: 'cpu', checkpointEvery: 0, seed: 2 });
  const epochs = result.history.epochs;
  t.log(`held-out MSE ${epochs.map((e) => e.valLoss!.toExponential(3)).join(' → ')}`);
  t.true(epochs[epochs.length - 1].valLoss! < epochs[0].valLoss! * 0.8, `validation MSE ${epochs.map((e) => e.valLoss!.toExponential(3)).join(' → ')}`);
  t.is(result.before, undefined, 'sentences alone are no pairs to retrieve');
  // { "text" } lines read so too; mixed with parallel sentences, or without the loss, they are refused.
  const jsonl = path.join(dir, 'sentences.jsonl');
  fs.writeFileSync(jsonl, sentences.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const base = { model: FIXTURE, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 4 };
  const ok = await train({ ...base, output: path.join(dir, 'jsonl'), teacher: teacherDir, data: jsonl, valSplit: 0, loss: { distillation: 'mse' } });
  t.true(ok.history.steps.length > 0);
  const mixed = path.join(dir, 'mixed.jsonl');
  fs.writeFileSync(mixed, [JSON.stringify({ text: 'a cat' }), JSON.stringify({ english: 'a dog', non_english: 'dogs' })].join('\n') + '\n');
  t.regex((await rejection(() => train({ ...base, teacher: teacherDir, data: mixed, loss: { distillation: 'mse' } }))).message, /1 of the 2 examples are sentences alone and the others parallel sentences: give one kind/);
  t.regex((await rejection(() => train({ ...base, data: jsonl }))).message, /example 1 is a sentence alone .*: sentences alone train embedding distillation/);
});
