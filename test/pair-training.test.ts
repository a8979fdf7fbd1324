// Training on labeled pairs (train({ loss: { pairs } })): the data's labeled pairs (JSONL, CSV; sentence-transformers'
// column names), the loss's settings refused where they would be ignored, validation by Spearman and Pearson
// correlation (checked against scipy's figures), early stopping on it, and a run whose held-out correlation rises. The
// losses themselves equal sentence-transformers' CoSENTLoss, AnglELoss, CosineSimilarityLoss, ContrastiveLoss and
// OnlineContrastiveLoss on a batch (test/python-interop.test.ts). And triplets with TripletLoss (train({ loss: { triplet } })).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, SparseEncoder, evaluateSimilarity, evaluateTriplets, train } from '../lib';
import { binaryClassification, pearson, spearman } from '../lib/pair-metrics';
import { makeBatches, readTrainingData } from '../lib/train-data';
import { CLI, FIXTURE, STEP, editJson, folderCopy, tempDir } from './helpers/fixture';
import { native } from '../lib/native';
import { rejection } from './helpers/vectors';
import { checkKillAndResume } from './helpers/resume';

/** Word partners the fixture's vocabulary holds; its random embeddings know nothing of them. */
const PARTNERS = [
  ['fast', 'quick'], ['slow', 'lazy'], ['small', 'tiny'], ['cat', 'cats'], ['dog', 'dogs'], ['text', 'texts'], ['model', 'models'], ['token', 'tokens'],
  ['vector', 'vectors'], ['query', 'queries'], ['document', 'documents'], ['score', 'scores'], ['sentence', 'sentences'], ['word', 'words'], ['test', 'tests'],
];

/**
 * `n` labeled pairs: three words of the partners' left side, and three of the right side of which k (0 to 3) are the
 * first sentence's words' partners, scored k / 3: a similarity the model can learn and does not know at the start.
 */
function labeledPairs(n: number, seed: number): { sentence1: string; sentence2: string; score: number }[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const distinct = (count: number, taken: number[]) => {
    const out: number[] = [];
    while (out.length < count) {
      const i = Math.floor(r() * PARTNERS.length);
      if (!taken.includes(i) && !out.includes(i)) out.push(i);
    }
    return out;
  };
  return Array.from({ length: n }, () => {
    const first = distinct(3, []);
    const k = Math.floor(r() * 4);
    const second = [...first.slice(0, k), ...distinct(3 - k, first)];
    return { sentence1: first.map((i) => PARTNERS[i][0]).join(' '), sentence2: second.map((i) => PARTNERS[i][1]).join(' '), score: k / 3 };
  });
}

test('spearman and pearson give scipy\'s figures, ties taking their mean rank', (t) => {
  // scipy 1.17.1: spearmanr(x, y).statistic 0.962900097473951, pearsonr(x, y).statistic 0.9631789085920648.
  const x = [0.3, 0.1, 0.1, 0.9, 0.5, 0.5, 0.5, 0.2];
  const y = [1, 0, 0.5, 4, 2, 2, 3, 0.5];
  t.true(Math.abs(spearman(x, y) - 0.962900097473951) < 1e-12);
  t.true(Math.abs(pearson(x, y) - 0.9631789085920648) < 1e-12);
  t.is(spearman([1, 2, 3], [3, 2, 1]), -1);
  t.true(Number.isNaN(pearson([1, 1, 1], [1, 2, 3])), 'a constant input has no correlation');
});

test('labeled pairs are read from JSONL (sentence1/sentence2 or query/positive, label or score) and CSV, and batched in order with their labels', async (t) => {
  const dir = tempDir();
  const jsonl = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(jsonl, [
    { sentence1: 'a cat', sentence2: 'the cat sat', score: 4.5 },
    { query: 'a dog', positive: 'a dog ran', label: 1 },
    { sentence1: 'a cat', sentence2: 'money', score: 0 },
  ].map((o) => JSON.stringify(o)).join('\n'));
  const { examples } = (await readTrainingData(jsonl)) as { examples: { query: string; positive: string; label?: number }[] };
  t.deepEqual(examples, [
    { query: 'a cat', positive: 'the cat sat', label: 4.5 },
    { query: 'a dog', positive: 'a dog ran', label: 1 },
    { query: 'a cat', positive: 'money', label: 0 },
  ]);
  // A query twice stays in its batch (pairs are no in-batch negatives), in order.
  const [batch, second] = makeBatches(examples, 2);
  t.deepEqual(batch.queries, ['a cat', 'a dog']);
  t.deepEqual(Array.from(batch.pairLabels!), [4.5, 1]);
  t.deepEqual(second.queries, ['a cat']);
  const csv = path.join(dir, 'pairs.csv');
  fs.writeFileSync(csv, 'sentence1,sentence2,score\na cat,the cat sat,4.5\n"a dog, big",a dog ran,1\n');
  t.deepEqual((await readTrainingData(csv)) as unknown, { examples: [{ query: 'a cat', positive: 'the cat sat', label: 4.5 }, { query: 'a dog, big', positive: 'a dog ran', label: 1 }] });
  // Mistakes named with their line.
  const bad = async (line: unknown, message: RegExp) => {
    fs.writeFileSync(jsonl, JSON.stringify(line) + '\n');
    t.regex((await rejection(() => readTrainingData(jsonl))).message, message, JSON.stringify(line));
  };
  await bad({ sentence1: 'a', sentence2: 'b' }, /pairs\.jsonl:1: .*needs its "label" or "score"/);
  await bad({ sentence1: 'a', sentence2: 'b', label: 1, score: 1 }, /give "label" or "score", not both/);
  await bad({ sentence1: 'a', sentence2: 'b', score: '0.5' }, /"score" must be a finite number/);
  await bad({ query: 'a', positive: 'b', label: 1, negative: 'c' }, /a labeled pair takes no "negative"/);
  await bad({ sentence1: 'a', positive: 'b', label: 1 }, /"sentence1" and "sentence2" or "query" and "positive", not both/);
  fs.writeFileSync(csv, 'sentence1,sentence2,score\na,b,high\n');
  t.regex((await rejection(() => readTrainingData(csv))).message, /pairs\.csv:2: "score" must be a number, got "high"/);
  fs.writeFileSync(csv, 'sentence1,sentence2,label,negative\na,b,1,c\n');
  t.regex((await rejection(() => readTrainingData(csv))).message, /labels pairs, which take no negative columns/);
});

test('train({ loss: { pairs } }) trains on labeled pairs: the held-out Spearman correlation rises, early stopping watches it', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(data, labeledPairs(320, 7).map((o) => JSON.stringify(o)).join('\n') + '\n');
  const output = path.join(dir, 'out');
  const result = await train({
    model: FIXTURE, data, output, epochs: 6, batchSize: 8, learningRate: 5e-3, loss: { pairs: 'cosent' }, device: 'cpu', checkpointEvery: 0, seed: 5,
    earlyStopping: { patience: 6, metric: 'spearman' },
  });
  const { before, after } = result.similarity!;
  t.is(before!.pairs, 64);
  // About 0 at the start (the partners are unknown to the random model), 0.78 after six epochs here.
  t.true(after!.spearman > before!.spearman + 0.4, `Spearman ${before!.spearman} → ${after!.spearman}`);
  t.is(result.before, undefined, 'no retrieval metrics for labeled pairs');
  const epochs = result.history.epochs;
  t.true(epochs.every((e) => e.similarity !== undefined && e.metrics === undefined));
  // The kept epoch is the one of the best Spearman correlation.
  const best = epochs.reduce((a, b) => (b.similarity!.spearman > a.similarity!.spearman ? b : a));
  t.is(result.best.epoch, best.epoch);
  t.deepEqual(result.similarity!.after, best.similarity);
  t.true(epochs[epochs.length - 1].valLoss! < epochs[0].valLoss!);
  const history = JSON.parse(fs.readFileSync(path.join(output, 'training_history.json'), 'utf8'));
  t.is(history.config.step.pairLoss, 'cosent');
  t.is(history.config.step.pairScale, 20);
  // The model card and the curves show the correlations.
  const card = fs.readFileSync(path.join(output, 'README.md'), 'utf8');
  t.regex(card, /- Loss: CoSENTLoss on labeled pairs/);
  t.true(card.includes(`| kept model | Spearman ${after!.spearman.toFixed(3)}, Pearson ${after!.pearson.toFixed(3)} (64 pairs) |`));
  t.regex(fs.readFileSync(path.join(output, 'training_curves.svg'), 'utf8'), /Validation similarity/);
});

test('pair losses refuse what they would ignore: unlabeled data, other losses and modes, non-binary labels for the contrastive ones', async (t) => {
  const dir = tempDir();
  const labeled = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(labeled, labeledPairs(20, 1).map((o) => JSON.stringify(o)).join('\n') + '\n');
  const plain = path.join(dir, 'plain.jsonl');
  fs.writeFileSync(plain, labeledPairs(20, 2).map((o) => JSON.stringify({ query: o.sentence1, positive: o.sentence2 })).join('\n') + '\n');
  const base = { model: FIXTURE, output: path.join(dir, 'out'), device: 'cpu' as const, epochs: 1, batchSize: 4 };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message, JSON.stringify(options.loss));
  await refused({ ...base, data: labeled }, /20 of the 20 examples are labeled pairs .*options\.loss\.pairs/);
  await refused({ ...base, data: plain, loss: { pairs: 'cosent' } }, /20 of the 20 examples have no "label" or "score" \(the first: example 1\)/);
  await refused({ ...base, data: labeled, loss: { pairs: 'contrastive' } }, /'contrastive' takes labels 1 \(similar\) and 0 \(not\), and example \d+ is labeled 0\.\d+: use 'cosent'/);
  await refused({ ...base, data: labeled, loss: { pairs: 'cosent', contrastiveWeight: 1 } }, /options\.loss\.pairs is the whole loss: drop options\.loss\.contrastiveWeight/);
  await refused({ ...base, data: labeled, loss: { pairs: 'cosent', margin: 0.3 } }, /options\.loss\.margin must be absent with options\.loss\.pairs 'cosent'/);
  await refused({ ...base, data: labeled, loss: { margin: 0.3 } }, /options\.loss\.margin must be absent without options\.loss\.pairs/);
  await refused({ ...base, data: labeled, loss: { pairs: 'cosent' }, guide: FIXTURE }, /options\.guide is for other training/);
  await refused({ ...base, data: labeled, loss: { pairs: 'cosine' }, earlyStopping: { patience: 1, metric: 'recall@1' } }, /'loss' or 'spearman' with options\.loss\.pairs/);
  await refused({ ...base, data: plain, earlyStopping: { patience: 1, metric: 'spearman' } }, /'spearman' is for labeled pairs/);
  await refused({ ...base, data: labeled, batchSize: 1, loss: { pairs: 'angle' } }, /'angle' ranks the pairs of a batch against each other, and every batch holds one pair/);
  t.false(fs.existsSync(base.output), 'nothing written');
});

test('the contrastive pair losses train on 1/0 labels, and Matryoshka widths report each width\'s correlation', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'binary.jsonl');
  fs.writeFileSync(data, labeledPairs(64, 11).map((o) => JSON.stringify({ sentence1: o.sentence1, sentence2: o.sentence2, label: o.score > 0.5 ? 1 : 0 })).join('\n') + '\n');
  for (const pairs of ['contrastive', 'online_contrastive'] as const) {
    const result = await train({ model: FIXTURE, data, output: path.join(dir, pairs), epochs: 2, batchSize: 8, learningRate: 5e-3, loss: { pairs, margin: 0.4 }, device: 'cpu', checkpointEvery: 0 });
    t.true(result.history.steps.every((s) => Number.isFinite(s.loss)), pairs);
    t.is(result.similarity!.after!.pairs, 13);
    t.is(JSON.parse(fs.readFileSync(path.join(dir, pairs, 'training_history.json'), 'utf8')).config.pairs.margin, 0.4);
    // 1/0 labels are classified by a threshold too, in the result and the model card.
    const c = result.similarity!.after!.classification!;
    t.true(c.accuracy > 0 && c.f1 > 0, pairs);
    t.true(fs.readFileSync(path.join(dir, pairs, 'README.md'), 'utf8').includes(`accuracy ${c.accuracy.toFixed(3)}, F1 ${c.f1.toFixed(3)}, average precision ${c.averagePrecision.toFixed(3)}`));
  }
  const widths = await train({ model: FIXTURE, data, output: path.join(dir, 'widths'), epochs: 1, batchSize: 8, loss: { pairs: 'angle', matryoshka: { dimensions: [32, 7] } }, device: 'cpu', checkpointEvery: 0 });
  t.deepEqual(widths.similarity!.after!.dimensions!.map((d) => d.dimension), [32, 7]);
  t.is(widths.similarity!.after!.dimensions![0].spearman, widths.similarity!.after!.spearman, 'the full width is the main figure');
});

test('coltrast train --pair-loss trains a CSV of labeled pairs and prints the correlations; its flags name themselves in errors', async (t) => {
  const dir = tempDir();
  const data = path.join(dir, 'stsb.csv');
  fs.writeFileSync(data, 'sentence1,sentence2,score\n' + labeledPairs(40, 5).map((o) => `${o.sentence1},${o.sentence2},${o.score}`).join('\n') + '\n');
  const output = path.join(dir, 'out');
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', data, '--device', 'cpu', '--epochs', '1', '--batch-size', '8', ...args], { encoding: 'utf8', timeout: 120_000 });
  let r = run(['--output', output, '--pair-loss', 'cosine', '--json']);
  t.is(r.status, 0, r.stderr);
  const printed = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.is(printed.similarity.after.pairs, 8);
  t.true(Number.isFinite(printed.similarity.after.spearman));
  r = run(['--output', path.join(dir, 'text'), '--pair-loss', 'cosent']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /after training: {2}Spearman -?\d\.\d{3}, Pearson -?\d\.\d{3} \(8 pairs\) \(epoch 1 kept\)/);
  r = run(['--output', path.join(dir, 'x'), '--pair-loss', 'cosent', '--margin', '0.2']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--margin must be absent with --pair-loss 'cosent'/);
  r = run(['--output', path.join(dir, 'y')]);
  t.is(r.status, 2);
  t.regex(r.stderr, /40 of the 40 examples are labeled pairs .*--pair-loss/);
});

test('evaluateSimilarity and coltrast eval on a file of labeled pairs: the correlations of the model\'s cosines with the labels', async (t) => {
  const dir = tempDir();
  const pairs = labeledPairs(30, 9);
  const data = path.join(dir, 'sts.csv');
  fs.writeFileSync(data, 'sentence1,sentence2,score\n' + pairs.map((o) => `${o.sentence1},${o.sentence2},${o.score}`).join('\n') + '\n');
  const result = await evaluateSimilarity({ data, model: FIXTURE, device: 'cpu' });
  t.is(result.pairs, 30);
  // By hand: each pair's cosine of the model's normalized vectors.
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const a = await enc.embed(pairs.map((p) => p.sentence1), { normalize: true });
  const b = await enc.embed(pairs.map((p) => p.sentence2), { normalize: true });
  const dim = a.dims[1];
  const cosines = pairs.map((_, i) => a.data.subarray(i * dim, (i + 1) * dim).reduce((sum, x, k) => sum + x * b.data[i * dim + k], 0));
  const labels = pairs.map((p) => p.score);
  t.true(Math.abs(result.spearman - spearman(cosines, labels)) < 1e-6, `${result.spearman} vs ${spearman(cosines, labels)}`);
  t.true(Math.abs(result.pearson - pearson(cosines, labels)) < 1e-5);
  t.deepEqual({ ...(await evaluateSimilarity({ data: pairs, model: enc })), seconds: 0 }, { ...result, seconds: 0 }, 'an array and a loaded model give the same');
  enc.dispose();
  // The command line, against the library; a retrieval flag and a file of unlabeled pairs refused by name.
  let run = spawnSync(process.execPath, [CLI, 'eval', '--data', data, '--model', FIXTURE, '--compare', FIXTURE, '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 0, run.stderr);
  const printed = JSON.parse(run.stdout);
  t.is(printed.length, 2);
  t.is(printed[0].spearman, result.spearman);
  run = spawnSync(process.execPath, [CLI, 'eval', '--data', data, '--model', FIXTURE, '--mode', 'dense', '--k', '10'], { encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 2);
  t.regex(run.stderr, /is a file of labeled pairs, scored by correlation: --mode, --k are for retrieval on a BEIR folder/);
  const plain = path.join(dir, 'plain.jsonl');
  fs.writeFileSync(plain, JSON.stringify({ query: 'a', positive: 'b' }) + '\n' + JSON.stringify({ query: 'c', positive: 'd' }) + '\n');
  t.regex((await rejection(() => evaluateSimilarity({ data: plain, model: FIXTURE }))).message, /options\.data must be labeled pairs .*example 1 has no label/);
  t.is(result.scoredBy, 'cosine');
  // A model with a default prompt: used as sentence-transformers' encode() uses it, on both sentences.
  const prompted = folderCopy(FIXTURE, (d) => editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { classification: 'classify: ' }, default_prompt_name: 'classification' })));
  const withPrompt = await Encoder.load(prompted, { device: 'cpu' });
  const pa = await withPrompt.embed(pairs.map((p) => `classify: ${p.sentence1}`), { normalize: true, prompt: '' });
  const pb = await withPrompt.embed(pairs.map((p) => `classify: ${p.sentence2}`), { normalize: true, prompt: '' });
  const promptedCosines = pairs.map((_, i) => pa.data.subarray(i * dim, (i + 1) * dim).reduce((sum, x, k) => sum + x * pb.data[i * dim + k], 0));
  const promptedResult = await evaluateSimilarity({ data, model: withPrompt });
  t.true(Math.abs(promptedResult.spearman - spearman(promptedCosines, labels)) < 1e-6, 'the default prompt is applied');
  t.not(promptedResult.pearson, result.pearson, 'and changes the cosines');
  withPrompt.dispose();

  // A cross-encoder's scores of the pairs read together, and a sparse encoder's similarity of its vectors, each folder
  // loaded as its kind.
  const CE = path.join(FIXTURE, '..', 'tiny-cross-encoder', 'st');
  const ce = await CrossEncoder.load(CE, { device: 'cpu' });
  const ceScores = (await ce.predict(pairs.map((p): [string, string] => [p.sentence1, p.sentence2]))).data;
  ce.dispose();
  const byCe = await evaluateSimilarity({ data, model: CE, device: 'cpu' });
  t.is(byCe.scoredBy, 'cross-encoder score');
  t.true(Math.abs(byCe.spearman - spearman(ceScores, labels)) < 1e-9);
  const SPLADE = path.join(FIXTURE, '..', 'tiny-sparse', 'bert');
  const splade = await SparseEncoder.load(SPLADE, { device: 'cpu' });
  const sparseScores = await splade.similarityPairwise(await splade.encode(pairs.map((p) => p.sentence1)), await splade.encode(pairs.map((p) => p.sentence2)));
  splade.dispose();
  const bySparse = await evaluateSimilarity({ data, model: SPLADE, device: 'cpu' });
  t.is(bySparse.scoredBy, 'dot');
  t.true(Math.abs(bySparse.pearson - pearson(sparseScores, labels)) < 1e-9);
  t.regex((await rejection(() => evaluateSimilarity({ data, model: CE, truncateDim: 8 }))).message, /options\.truncateDim must be absent: .* is a cross-encoder/);
});

test('pairs labeled 1 or 0 are also classified by a threshold on their scores (BinaryClassificationEvaluator), by hand and through coltrast eval', async (t) => {
  // Sorted by score: 1, 0, 1, 0, 0. The best accuracy (0.8) puts the threshold between the first two; the best F1 (0.8:
  // precision 2/3, recall 1) between the third and the fourth; average precision 1/2 · 1 + 1/2 · 2/3; MCC at the F1
  // threshold (2 true positives, 1 false, 2 true negatives) 4/6.
  const c = binaryClassification([0.6, 0.9, 0.5, 0.8, 0.7], [0, 1, 0, 0, 1]);
  const want = { accuracy: 0.8, accuracyThreshold: 0.85, f1: 0.8, f1Threshold: 0.65, precision: 2 / 3, recall: 1, averagePrecision: 5 / 6, mcc: 4 / 6 };
  for (const [key, value] of Object.entries(want)) t.true(Math.abs(c[key as keyof typeof c] - value) < 1e-12, `${key}: ${c[key as keyof typeof c]} vs ${value}`);
  const dir = tempDir();
  const binary = labeledPairs(30, 12).map((p) => ({ ...p, score: p.score > 0.5 ? 1 : 0 }));
  const data = path.join(dir, 'duplicates.csv');
  fs.writeFileSync(data, 'sentence1,sentence2,label\n' + binary.map((o) => `${o.sentence1},${o.sentence2},${o.score}`).join('\n') + '\n');
  const result = await evaluateSimilarity({ data, model: FIXTURE, device: 'cpu' });
  t.truthy(result.classification);
  t.is((await evaluateSimilarity({ data: labeledPairs(30, 12), model: FIXTURE, device: 'cpu' })).classification, undefined, 'scores between 0 and 1 are no classes');
  const run = spawnSync(process.execPath, [CLI, 'eval', '--data', data, '--model', FIXTURE, '--device', 'cpu'], { encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 0, run.stderr);
  t.true(run.stdout.includes(`accuracy ${result.classification!.accuracy.toFixed(4)} (threshold ${result.classification!.accuracyThreshold.toFixed(4)}), F1 ${result.classification!.f1.toFixed(4)}`), run.stdout);
});

test('a labeled-pair run killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  const base = { model: FIXTURE, data: labeledPairs(20, 5), epochs: 2, batchSize: 4, learningRate: 5e-4, valSplit: 0.2, device: 'cpu', seed: 9, checkpointEvery: 2, loss: { pairs: 'cosent' } };
  // 16 training pairs, batches of 4: 4 steps per epoch, 8 in all; killed mid-epoch 2, one step after the checkpoint at 6.
  checkKillAndResume(t, base, { steps: 8, killAt: 7, checkpointAt: 6 });
});

test('train({ loss: { triplet } }) trains on (query, positive, negative) triplets with TripletLoss; what it cannot use is refused', async (t) => {
  const dir = tempDir();
  // Triplets of the partner task: the positive all partners (score 1), the negative none.
  const triplets = labeledPairs(200, 13).map((p, i, all) => ({ query: p.sentence1, positive: p.sentence1.split(' ').map((w) => PARTNERS.find((x) => x[0] === w)![1]).join(' '), negative: all[(i + 7) % all.length].sentence2 }));
  const data = path.join(dir, 'triplets.jsonl');
  fs.writeFileSync(data, triplets.map((o) => JSON.stringify(o)).join('\n') + '\n');
  const result = await train({ model: FIXTURE, data, output: path.join(dir, 'out'), epochs: 3, batchSize: 8, learningRate: 5e-3, loss: { triplet: { distance: 'cosine', margin: 0.5 } }, device: 'cpu', checkpointEvery: 0, seed: 3 });
  const epochs = result.history.epochs;
  t.true(epochs[epochs.length - 1].valLoss! < epochs[0].valLoss!, `validation loss ${epochs.map((e) => e.valLoss!.toFixed(4)).join(' → ')}`);
  t.true(result.after!['mrr@10'] > result.before!['mrr@10'], `MRR@10 ${result.before!['mrr@10']} → ${result.after!['mrr@10']}`);
  // Validation also counts the held-out triplets ordered right (TripletEvaluator's accuracy).
  const [accuracyBefore, accuracyAfter] = [result.before!.tripletAccuracy!, result.after!.tripletAccuracy!];
  t.true(accuracyAfter > accuracyBefore && accuracyAfter <= 1, `triplet accuracy ${accuracyBefore} → ${accuracyAfter}`);
  t.true(epochs.every((e) => e.metrics!.tripletAccuracy !== undefined));
  const history = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'training_history.json'), 'utf8'));
  t.deepEqual([history.config.step.tripletDistance, history.config.step.tripletMargin], ['cosine', 0.5]);
  const card = fs.readFileSync(path.join(dir, 'out', 'README.md'), 'utf8');
  t.regex(card, /- Loss: TripletLoss on \(query, positive, negative\) triplets, cosine distance, margin 0\.5/);
  t.true(card.includes(`triplet accuracy ${accuracyAfter.toFixed(3)}`), 'the card gives the kept model\'s triplet accuracy');
  const base = { model: FIXTURE, output: path.join(dir, 'x'), device: 'cpu' as const, epochs: 1, batchSize: 4 };
  const refused = async (options: Parameters<typeof train>[0], message: RegExp) => t.regex((await rejection(() => train(options))).message, message);
  const pairsFile = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(pairsFile, triplets.map((o) => JSON.stringify({ query: o.query, positive: o.positive })).join('\n') + '\n');
  await refused({ ...base, data: pairsFile, loss: { triplet: true } }, /options\.loss\.triplet trains on \(query, positive, negative\) triplets, and example \d+ has no hard negative/);
  await refused({ ...base, data, loss: { triplet: true, contrastiveWeight: 1 } }, /options\.loss\.triplet is the whole loss: drop options\.loss\.contrastiveWeight/);
  await refused({ ...base, data, loss: { triplet: true }, maxNegatives: 1 }, /options\.maxNegatives is for other training/);
  await refused({ ...base, data, loss: { triplet: { distance: 'dot' as never } } }, /options\.loss\.triplet\.distance must be one of/);
  // The command line: --triplet and its settings.
  const run = spawnSync(process.execPath, [CLI, 'train', '--model', FIXTURE, '--data', data, '--output', path.join(dir, 'cli'), '--triplet-distance', 'manhattan', '--triplet-margin', '3', '--epochs', '1', '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 0, run.stderr);
  const cli = JSON.parse(fs.readFileSync(path.join(dir, 'cli', 'training_history.json'), 'utf8'));
  t.deepEqual([cli.config.step.tripletDistance, cli.config.step.tripletMargin], ['manhattan', 3]);
  // The trained model ranks more held-out-style triplets right (TripletEvaluator's accuracy), here and from coltrast eval.
  const before = await evaluateTriplets({ data, model: FIXTURE, device: 'cpu' });
  const after = await evaluateTriplets({ data, model: path.join(dir, 'out'), device: 'cpu' });
  t.is(after.triplets, 200);
  t.true(after.accuracy > before.accuracy, `triplet accuracy ${before.accuracy} → ${after.accuracy}`);
  const evaluated = spawnSync(process.execPath, [CLI, 'eval', '--data', data, '--model', path.join(dir, 'out'), '--compare', FIXTURE, '--device', 'cpu', '--json'], { encoding: 'utf8', timeout: 120_000 });
  t.is(evaluated.status, 0, evaluated.stderr);
  t.deepEqual(JSON.parse(evaluated.stdout).map((r: { accuracy: number }) => r.accuracy), [after.accuracy, before.accuracy]);
  t.regex((await rejection(() => evaluateTriplets({ data: pairsFile, model: FIXTURE }))).message, /options\.data must be triplets .*, and example 1 has no negative/);
});

const cudaAvailable = native().runtimeInfo().cudaAvailable;
(cudaAvailable ? test : test.skip)(
  `cuda: the pair losses, TripletLoss, MSELoss, the batch triplet losses, adaptive layers, global orthogonal regularization and a cross-encoder's labeled-pair loss equal the CPU's on a batch${cudaAvailable ? '' : ' [skipped: no CUDA device or CUDA libtorch here]'}`,
  async (t) => {
    const pairs = labeledPairs(9, 21);
    const first = pairs.map((p) => p.sentence1);
    const second = pairs.map((p) => p.sentence2);
    const scores = Float32Array.from(pairs, (p) => p.score);
    const binary = Float32Array.from(pairs, (p) => (p.score > 0.5 ? 1 : 0));
    const negatives = Int32Array.from(pairs, (_, i) => (i + 1) % pairs.length);
    const base = { ...STEP, contrastiveWeight: 0, lateInteractionWeight: 0, learningRate: 0, lossScale: 1, apply: false };
    const steps: [string, Record<string, unknown>][] = [
      ...(['cosent', 'angle', 'cosine'] as const).map((pairLoss): [string, Record<string, unknown>] => [pairLoss, { pairLoss, pairLabels: scores }]),
      ...(['contrastive', 'online_contrastive'] as const).map((pairLoss): [string, Record<string, unknown>] => [pairLoss, { pairLoss, pairLabels: binary }]),
      ['triplet', { tripletDistance: 'euclidean', tripletMargin: 1, normalizedVectors: true, tripletNegatives: negatives }],
      ['mse', { targetVectors: Float32Array.from({ length: pairs.length * 32 }, (_, k) => Math.sin(k * 0.7) / 4), normalizedVectors: true }],
      // Adaptive layers around CoSENT and around the contrastive loss, both earlier layers, with the KL term.
      ['adaptive cosent', { pairLoss: 'cosent', pairLabels: scores, adaptiveLayers: [0, 1], adaptiveLayerWeights: [0.5, 0.25], klTemperature: 0.3, klWeight: 1, normalizedVectors: true }],
      ['adaptive contrastive', { contrastiveWeight: 1, adaptiveLayers: [0, 1], adaptiveLayerWeights: [0.5, 0.5], lastLayerWeight: 2, klTemperature: 0.5, klWeight: 0.7, normalizedVectors: true }],
      ['gor', { contrastiveWeight: 1, gorMeanWeight: 1, gorSecondMomentWeight: 1, gorAggregation: 'sum' }],
    ];
    const losses: Record<string, number[]> = {};
    for (const device of ['cpu', 'cuda'] as const) {
      const enc = await Encoder.load(FIXTURE, { device });
      const trainer = await enc.createTrainer({ seed: 1 });
      for (const [name, extra] of steps) (losses[name] ??= []).push((await trainer.evaluate(first, second, { ...base, ...extra } as never)).loss);
      // The batch triplet losses: the texts alone, three classes.
      const classLabels = Int32Array.from(first, (_, i) => i % 3);
      for (const kind of ['all', 'hard', 'semi_hard', 'hard_soft_margin'] as const) {
        (losses[`batch triplet ${kind}`] ??= []).push((await trainer.evaluate(first, [], { ...base, batchTriplet: kind, batchTripletMargin: 0.5, classLabels, normalizedVectors: true } as never)).loss);
      }
      trainer.dispose();
      enc.dispose();
      const ce = await CrossEncoder.load(path.join(FIXTURE, '..', 'tiny-cross-encoder', 'st'), { device });
      const ceTrainer = ce.createTrainer({ learningRate: 1e-3, weightDecay: 0.01, seed: 1, precision: 'float32' }, { kind: 'bce', scale: 10 }, true);
      (losses['cross-encoder bce'] ??= []).push((await ceTrainer.evaluate(first, second, { ...STEP, learningRate: 0, lossScale: 1, apply: false, pairLabels: binary })).loss);
      ceTrainer.dispose();
      ce.dispose();
    }
    for (const [name, [cpu, cuda]] of Object.entries(losses)) t.true(Math.abs(cpu - cuda) <= 1e-4 * Math.max(1, Math.abs(cpu)), `${name}: cpu ${cpu}, cuda ${cuda}`);
  },
);
