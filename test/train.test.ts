// train(): data formats and their errors, batching and splitting, the schedule, and real training runs of
// the tiny fixture model (loss falls, retrieval on the training questions improves, runs are
// deterministic, the saved model reloads to the metrics measured in-process).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, Encoder, learningRateAt, retrievalMetrics, train, type TrainExample } from '../lib';
import { matrixRows } from '../lib/encoder';
import { mineExamples, semanticChunks, splitSentences, type Embedder } from '../lib/chunking';
import { loadExamples, makeBatches, readTrainingData, shuffle, splitExamples } from '../lib/train-data';
import { evaluateRun } from '../lib/ir-metrics';
import { maxsim, padTokens, type Mask, type Tensor } from '../lib/ops';
import { seededRandom } from '../lib/random';
import { checkKillAndResume } from './helpers/resume';
import { CLI, FIXTURE, STEP, tempDir, wordDataset } from './helpers/fixture';

const dataset = wordDataset;

async function rejects(t: any, run: () => Promise<unknown>, pattern: RegExp) {
  const error = await run().then(
    () => undefined,
    (e) => e,
  );
  t.true(error instanceof ColtrastError, `expected a ColtrastError, got ${error}`);
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, pattern);
}

test('JSONL pairs and triplets, ColTrast JSON and arrays load; errors name the line or field', async (t) => {
  const dir = tempDir();
  const jsonl = path.join(dir, 'pairs.jsonl');
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1"}\n\n{"query": "q2", "positive": "p2", "negatives": ["n1", "n2"]}\n');
  t.deepEqual(await loadExamples(jsonl), [
    { query: 'q1', positive: 'p1' },
    { query: 'q2', positive: 'p2', negatives: ['n1', 'n2'] },
  ]);
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1"}\n{"query": "q2"}\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /pairs\.jsonl:2: "positive" must be a non-empty string/ });
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1"}\n{"query": "q2", positive: 1}\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /pairs\.jsonl:2: not valid JSON/ });
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1", "negs": ["x"]}\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /unknown field "negs" \(known: query \(or anchor\), positive, negative, negatives, group, scores; a labeled pair: sentence1, sentence2 and label or score; parallel sentences: english, non_english; a text of a class: text or sentence, and label\)/ });
  // "negative": one hard negative (a mined triplet row); a list there, or both fields, is an error.
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1", "negative": "x", "scores": [2, 1]}\n');
  t.deepEqual(await loadExamples(jsonl), [{ query: 'q1', positive: 'p1', negatives: ['x'], scores: [2, 1] }]);
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1", "negative": ["x"]}\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /pairs\.jsonl:1: "negative" must be a non-empty string/ });
  fs.writeFileSync(jsonl, '{"query": "q1", "positive": "p1", "negative": "x", "negatives": ["y"]}\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /give "negative" \(one\) or "negatives" \(a list\), not both/ });
  fs.writeFileSync(jsonl, '\n\n');
  await t.throwsAsync(loadExamples(jsonl), { message: /no examples/ });

  const coltrast = path.join(dir, 'projects.json');
  fs.writeFileSync(
    coltrast,
    JSON.stringify({
      projects: [
        { project_id: 'a', readme_content: 'A.', qa_pairs: [{ question: 'qa', answer: 'aa', context: 'ca' }, { question: 'qb', answer: 'ab' }] },
        { project_id: 'b', readme_content: 'B.', qa_pairs: [{ question: 'qc', answer: 'ac' }] },
      ],
    }),
  );
  t.deepEqual(await readTrainingData(coltrast), {
    projects: [
      { id: 'a', document: 'A.', qa: [{ question: 'qa', answer: 'aa', context: 'ca' }, { question: 'qb', answer: 'ab' }] },
      { id: 'b', document: 'B.', qa: [{ question: 'qc', answer: 'ac' }] },
    ],
  });
  fs.writeFileSync(coltrast, JSON.stringify({ projects: [{ project_id: 'a', readme_content: 'A.', qa_pairs: [{ question: 'q' }] }] }));
  await t.throwsAsync(readTrainingData(coltrast), { message: /projects\[0\]\.qa_pairs\[0\]: "answer"/ });
  fs.writeFileSync(coltrast, JSON.stringify({ projects: [{ project_id: 'a', qa_pairs: [] }] }));
  await t.throwsAsync(readTrainingData(coltrast), { message: /projects\[0\]: "readme_content"/ });
  fs.writeFileSync(coltrast, JSON.stringify({ items: [] }));
  await t.throwsAsync(readTrainingData(coltrast), { message: /expected \{"projects"/ });
  await t.throwsAsync(loadExamples(path.join(dir, 'missing.jsonl')), { message: /does not exist/ });
  await t.throwsAsync(loadExamples(dir), { message: /^data file .+ is a folder, not a file$/ });
  await t.throwsAsync(loadExamples([{ query: 'q', positive: '' }]), { message: /data\[0\]: "positive"/ });
});

/** Handmade embeddings: counts of four keywords, normalized; a text's tokens are its words + 2. */
const KEYWORDS = ['alpha', 'beta', 'gamma', 'delta'];
const fakeEmbedder: Embedder = {
  async embed(texts) {
    return texts.map((text) => {
      const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
      const v = Float32Array.from(KEYWORDS, (k) => words.filter((w) => w === k).length);
      const n = Math.hypot(...v) || 1;
      return v.map((x) => x / n);
    });
  },
  async countTokens(texts) {
    return texts.map((text) => text.split(/\s+/).filter(Boolean).length + 2);
  },
};

test('sentences split at line breaks and sentence ends; neighbours merge by similarity within the token budget', async (t) => {
  t.deepEqual(splitSentences('# Title\n\nAlpha one. Alpha two! Beta 3?\nGamma four'), ['# Title', 'Alpha one.', 'Alpha two!', 'Beta 3?', 'Gamma four']);
  const doc = 'Alpha one. Alpha two. Alpha three. Beta four. Beta five.';
  t.deepEqual(await semanticChunks(doc, fakeEmbedder, { maxTokens: 100 }), ['Alpha one. Alpha two. Alpha three.', 'Beta four. Beta five.']);
  // Budget 6 tokens: two 2-word sentences share their special tokens (2 + 2 + 2), a third does not fit.
  t.deepEqual(await semanticChunks(doc, fakeEmbedder, { maxTokens: 6 }), ['Alpha one. Alpha two.', 'Alpha three.', 'Beta four. Beta five.']);
  t.deepEqual(await semanticChunks(doc, fakeEmbedder, { maxTokens: 100, threshold: -1 }), [doc]);
  t.deepEqual(await semanticChunks('  \n ', fakeEmbedder, { maxTokens: 10 }), []);
});

test('mining: the best own chunk or the answer is the positive; negatives come from other projects, minus the guard', async (t) => {
  const projects = [
    {
      id: 'A',
      document: 'Alpha one. Alpha two.\nBeta three. Beta four.',
      qa: [
        { question: 'alpha delta?', answer: 'alpha' },
        { question: 'epsilon?', answer: 'epsilon' },
        { question: 'beta?', answer: 'b', context: 'the given context' },
      ],
    },
    { id: 'B', document: 'Delta delta alpha.\nGamma five. Gamma six.', qa: [] },
  ];
  const { examples, chunks } = await mineExamples(projects, fakeEmbedder, { maxTokens: 100 }, { hardNegatives: 5 });
  t.deepEqual(chunks.get('A'), ['Alpha one. Alpha two.', 'Beta three. Beta four.']);
  t.deepEqual(chunks.get('B'), ['Delta delta alpha.', 'Gamma five. Gamma six.']);
  t.is(examples.length, 3);
  // "alpha delta? alpha" matches the alpha chunk (0.89 >= 0.6); B's "Delta delta alpha." is closer to the
  // question (0.95) than that positive (0.71), so the guard drops it; the gamma chunk stays.
  t.deepEqual(examples[0], { query: 'alpha delta?', positive: 'Alpha one. Alpha two.', negatives: ['Gamma five. Gamma six.'], group: 'A' });
  // Nothing in A resembles "epsilon": the answer is the positive.
  t.is(examples[1].positive, 'epsilon');
  t.is(examples[2].positive, 'the given context');
  t.true(examples.every((e) => e.negatives!.every((n) => chunks.get('B')!.includes(n))));
});

test('batches never hold one text twice; the split keeps groups whole and is seeded', async (t) => {
  const examples: TrainExample[] = [
    { query: 'q1', positive: 'p', negatives: ['n', 'p2'] },
    { query: 'q2', positive: 'p' },
    { query: 'q3', positive: 'p2', negatives: ['n'] },
    { query: 'q4', positive: 'p4' },
  ];
  const batches = makeBatches(examples, 3);
  for (const b of batches) t.is(new Set(b.documents).size, b.documents.length, JSON.stringify(b));
  t.deepEqual(batches[0], { queries: ['q1', 'q3', 'q4'], documents: ['p', 'p2', 'p4', 'n'] });
  t.deepEqual(batches[1], { queries: ['q2'], documents: ['p'] });
  t.is(batches.flatMap((b) => b.queries).length, examples.length);

  const grouped = Array.from({ length: 20 }, (_, i) => ({ query: `q${i}`, positive: `p${i}`, group: `g${i % 5}` }));
  const a = await splitExamples(grouped, { valSplit: 0.2 }, 3);
  const b = await splitExamples(grouped, { valSplit: 0.2 }, 3);
  t.deepEqual(a, b);
  t.is(a.val.length, 4);
  const valGroups = new Set(a.val.map((e) => e.group));
  t.is(valGroups.size, 1);
  t.false(a.train.some((e) => valGroups.has(e.group)));
  t.deepEqual((await splitExamples(grouped, { valSplit: 0 }, 3)).val, []);
});

// The split written plainly (how splitByGroup was first written): an array per group, the group keys sorted and then
// shuffled with the seed, the first groups held out, each side's items concatenated group by group.
function splitByDefinition<T>(items: T[], groupOf: (item: T, i: number) => string, valGroupsOf: (groups: number) => number, seed: number) {
  const groups = new Map<string, T[]>();
  items.forEach((item, i) => {
    const key = groupOf(item, i);
    groups.set(key, [...(groups.get(key) ?? []), item]);
  });
  const keys = shuffle([...groups.keys()].sort(), seededRandom(seed).next);
  const n = valGroupsOf(keys.length);
  return { train: keys.slice(n).flatMap((k) => groups.get(k)!), val: keys.slice(0, n).flatMap((k) => groups.get(k)!) };
}

test('splitByGroup: the split by definition, for fractions, counts and the default cap', async (t) => {
  const random = seededRandom(11).next;
  // Groups named to sort differently from their first appearance (and one non-ASCII key), ungrouped examples among them.
  const names = ['b', 'a', 'B', '#7', 'é', 'ab', '10', '9', 'z'];
  const items: TrainExample[] = Array.from({ length: 300 }, (_, i) => ({
    query: `q${i}`,
    positive: `p${i}`,
    ...(random() < 0.7 && { group: names[Math.floor(random() * names.length)] + Math.floor(random() * 20) }),
  }));
  const groupOf = (e: TrainExample, i: number) => e.group ?? `#${i}`;
  const groups = new Set(items.map(groupOf)).size;
  for (const seed of [0, 5, 42]) {
    for (const valSplit of [0.01, 0.2, 0.5, 0.95]) {
      const expected = splitByDefinition(items, groupOf, (n) => Math.max(1, Math.round(n * valSplit)), seed);
      t.deepEqual(await splitExamples(items, { valSplit }, seed), expected, `fraction ${valSplit}, seed ${seed}`);
      const capped = splitByDefinition(items, groupOf, (n) => Math.min(7, Math.max(1, Math.round(n * valSplit))), seed);
      t.deepEqual(await splitExamples(items, { valSplit, maxGroups: 7 }, seed), capped, `fraction ${valSplit} capped at 7 groups, seed ${seed}`);
    }
    for (const valSplit of [1, 13, groups - 1]) {
      const expected = splitByDefinition(items, groupOf, () => valSplit, seed);
      t.deepEqual(await splitExamples(items, { valSplit, maxGroups: 7 }, seed), expected, `${valSplit} groups, seed ${seed}`);
    }
  }
  // The split does not depend on the items' order, group by group.
  const reversed = items.map((e, i) => ({ ...e, group: groupOf(e, i) })).reverse();
  const split = await splitExamples(reversed, { valSplit: 0.3 }, 5);
  const original = await splitExamples(items.map((e, i) => ({ ...e, group: groupOf(e, i) })), { valSplit: 0.3 }, 5);
  t.deepEqual(split.val.map((e) => e.query).sort(), original.val.map((e) => e.query).sort());
  const error = await t.throwsAsync(splitExamples(items, { valSplit: groups }, 5));
  t.regex(error!.message, /valSplit \d+ leaves no training data \(\d+ group\(s\)\)/);
});

// makeBatches' rule written plainly: each batch scans every waiting example in order and takes those whose positive
// it does not hold yet, up to batchSize; the rest wait, in order. (makeBatches gets the same batches without rescanning
// and copying every waiting example for each batch, which took minutes at a million pairs.)
function batchesByDefinition(examples: TrainExample[], batchSize: number): string[][] {
  const out: string[][] = [];
  let pending = examples.slice();
  while (pending.length > 0) {
    const chosen: TrainExample[] = [];
    const rest: TrainExample[] = [];
    for (const e of pending) {
      if (chosen.length < batchSize && !chosen.some((c) => c.positive === e.positive)) chosen.push(e);
      else rest.push(e);
    }
    out.push(chosen.map((e) => e.query));
    pending = rest;
  }
  return out;
}

test('makeBatches takes the batches of its plain definition, on data with many repeated positives', (t) => {
  const random = seededRandom(11).next;
  let compared = 0;
  for (const [n, positives] of [[1, 1], [5, 1], [40, 3], [200, 20], [300, 290], [257, 7]]) {
    const examples = Array.from({ length: n }, (_, i): TrainExample => ({ query: `q${i}`, positive: `p${Math.floor(random() * positives)}`, negatives: [`n${i % 4}`] }));
    for (const batchSize of [1, 2, 3, 8, 32, 500]) {
      t.deepEqual(makeBatches(examples, batchSize).map((b) => b.queries), batchesByDefinition(examples, batchSize), `n=${n}, ${positives} positives, batch ${batchSize}`);
      compared++;
    }
  }
  t.is(compared, 36);
});

test('learning-rate schedule: linear warm-up, then linear, cosine or constant', (t) => {
  const lr = (step: number, schedule: 'linear' | 'cosine' | 'constant') => learningRateAt(step, 100, 1, 0.1, schedule);
  t.true(lr(0, 'linear') > 0 && lr(0, 'linear') < lr(5, 'linear'));
  t.is(lr(10, 'linear'), 1);
  // The decay reaches 0 after the last step (as transformers' schedulers), so the last step still learns.
  t.true(Math.abs(lr(99, 'linear') - 1 / 90) < 1e-15);
  t.true(Math.abs(lr(10, 'cosine') - 1) < 1e-12 && Math.abs(lr(99, 'cosine') - 0.5 * (1 + Math.cos(Math.PI * (89 / 90)))) < 1e-15);
  t.true(lr(99, 'cosine') > 0);
  t.true(Math.abs(lr(55, 'cosine') - 0.5) < 1e-9);
  t.is(lr(99, 'constant'), 1);
});

test('bad configurations fail before any training', async (t) => {
  const output = path.join(tempDir(), 'out');
  const base = { model: FIXTURE, data: dataset(8), output, device: 'cpu' as const };
  await rejects(t, () => train({ ...base, learningrate: 1 } as any), /unknown option options\.learningrate/);
  await rejects(t, () => train({ ...base, learningRate: -1 }), /options\.learningRate must be a number > 0/);
  await rejects(t, () => train({ ...base, data: [] }), /no examples/);
  await rejects(t, () => train({ ...base, batchSize: 9, valSplit: 0 }), /batchSize 9 is larger than the 8 training examples/);
  await rejects(t, () => train({ ...base, loss: { contrastiveWeight: 0, lateInteractionWeight: 0 } }), /at least one loss weight/);
  await rejects(t, () => train({ ...base, loss: { temprature: 0.1 } as any }), /unknown option options\.loss\.temprature/);
  await rejects(t, () => train({ ...base, earlyStopping: { patience: 0 } }), /patience/);
  await rejects(t, () => train({ ...base, valSplit: 0.99 }), /leaves no training data/);
  await rejects(t, () => train({ ...base, valSplit: 8 }), /valSplit 8 leaves no training data \(8 group\(s\)\)/);
  await rejects(t, () => train({ ...base, valSplit: 1.5 }), /options\.valSplit must be a fraction in \[0, 1\) or a whole number of groups >= 1/);
  await rejects(t, () => train({ ...base, batchSize: 2, output: FIXTURE }), /exists and is not the output of an earlier train\(\)/);
  // Options that could not act, refused rather than ignored: early stopping without validation data, a distillation loss
  // with nothing to distill, teacher scores given to a cross-encoder's training.
  await rejects(t, () => train({ ...base, batchSize: 2, valSplit: 0, earlyStopping: { patience: 1 } }), /options\.earlyStopping watches the validation split, and this run has none \(options\.valSplit 0\)/);
  await rejects(t, () => train({ ...base, batchSize: 2, loss: { distillation: 'kl' } }), /options\.loss\.distillation chooses how to distill, and nothing is distilled here/);
  const scored = dataset(8).map((e) => ({ ...e, negatives: ['x y z'], scores: [2, 1] }));
  await rejects(t, () => train({ ...base, data: scored, batchSize: 2, crossEncoder: true }), /the data's "scores" are a teacher's, .* a cross-encoder's training \(options\.crossEncoder\) does not use them/);
  t.false(fs.existsSync(output), 'nothing was written');
});

test('train() holds out 20% of the groups by default, at most 1,000; a whole number holds out that many', async (t) => {
  const dir = tempDir();
  const common = { model: FIXTURE, epochs: 1, batchSize: 64, device: 'cpu' as const, progressBar: false };
  // 5,010 examples without groups: 20% would be 1,002 validation questions.
  const large = await train({ ...common, data: wordDataset(5010), output: path.join(dir, 'large') });
  t.is(large.before?.queries, 1000);
  t.is(large.history.steps.length, Math.ceil(4010 / 64));
  const config = JSON.parse(fs.readFileSync(path.join(large.modelDir, 'training_history.json'), 'utf8')).config;
  t.like(config, { valSplit: 0.2, valMaxGroups: 1000 });
  // An explicit fraction is not capped; a whole number is a count of groups.
  const fraction = await train({ ...common, data: dataset(20), batchSize: 4, valSplit: 0.25, output: path.join(dir, 'fraction') });
  t.is(fraction.before?.queries, 5);
  const count = await train({ ...common, data: dataset(20), batchSize: 4, valSplit: 3, output: path.join(dir, 'count') });
  t.is(count.before?.queries, 3);
  t.is(count.history.steps.length, Math.ceil(17 / 4));
});

test('training lowers the loss and improves retrieval of the training questions', async (t) => {
  const data = dataset(24);
  const output = path.join(tempDir(), 'out');
  const base = await Encoder.load(FIXTURE, { device: 'cpu' });
  const before = await retrievalMetrics(base, data);
  base.dispose();
  const steps: number[] = [];
  const run = await train({
    model: FIXTURE,
    data,
    output,
    epochs: 12,
    batchSize: 6,
    learningRate: 1e-3,
    valSplit: 0,
    device: 'cpu',
    seed: 1,
    onProgress: (p) => steps.push(p.step),
  });
  const losses = run.history.epochs.map((e) => e.trainLoss);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  t.true(mean(losses.slice(-3)) < 0.8 * mean(losses.slice(0, 3)), `epoch losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  t.deepEqual(steps, Array.from({ length: 48 }, (_, i) => i + 1));
  t.true(run.history.steps.every((s) => s.contrastive > 0 && s.lateInteraction > 0));
  const trained = await Encoder.load(output, { device: 'cpu' });
  const after = await retrievalMetrics(trained, data);
  trained.dispose();
  t.log(`recall@1 on the training questions: ${before['recall@1'].toFixed(3)} -> ${after['recall@1'].toFixed(3)}`);
  t.true(after['recall@1'] > before['recall@1'] + 0.1);
  t.true(after['mrr@10'] > before['mrr@10']);
  t.true(fs.existsSync(path.join(output, 'training_history.json')));
  const svg = fs.readFileSync(path.join(output, 'training_curves.svg'), 'utf8');
  t.regex(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.is((svg.match(/<polyline /g) ?? []).length, 2, 'train loss per step and per epoch (no validation split here)');
  const card = fs.readFileSync(path.join(output, 'README.md'), 'utf8');
  t.regex(card, /Base model: `.*tiny-bert`/);
  t.regex(card, /optimizer steps: 48/);
});

// Serial: with other libtorch work running at the same time in the process, OpenBLAS may split a product
// differently and change the last bits; a run alone in its process is deterministic.
test.serial('the same seed gives the same model; the saved model reproduces the in-process metrics', async (t) => {
  const data = dataset(20, 11);
  const options = { model: FIXTURE, data, epochs: 2, batchSize: 4, learningRate: 5e-4, valSplit: 0.2, device: 'cpu' as const, seed: 5 };
  const a = await train({ ...options, output: path.join(tempDir(), 'a') });
  const b = await train({ ...options, output: path.join(tempDir(), 'b') });
  t.true(fs.readFileSync(path.join(a.modelDir, 'model.safetensors')).equals(fs.readFileSync(path.join(b.modelDir, 'model.safetensors'))));
  t.false(fs.readFileSync(path.join(a.modelDir, 'model.safetensors')).equals(fs.readFileSync(path.join(FIXTURE, 'model.safetensors'))));
  t.deepEqual(a.history, b.history);
  t.truthy(a.before && a.after);
  // The metrics of the kept epoch were measured in-process; the saved folder must give them again.
  const { val } = await splitExamples(await loadExamples(data), { valSplit: 0.2 }, 5);
  const reloaded = await Encoder.load(a.modelDir, { device: 'cpu' });
  t.deepEqual(await retrievalMetrics(reloaded, val), a.best.metrics);
  reloaded.dispose();
});

// Dropout draws from libtorch's one global CPU generator, which each step sets to its run's state; building
// a model's modules draws from it too. Loads running beside a step must not move that step's stream.
test.serial('models loading while a trainer steps do not change its dropout', async (t) => {
  const batches = [0, 1, 2, 3, 4, 5].map((i) => dataset(6, 40 + i));
  const steps = async (busy: boolean) => {
    const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
    const tr = await enc.createTrainer({ seed: 8 });
    let training = true;
    const loads = (async () => {
      let n = 0;
      while (busy && training) {
        const other = await Encoder.load(FIXTURE, { device: 'cpu' });
        await other.addProjectionHead(8, 'identity', n);
        other.dispose();
        n++;
      }
      return n;
    })();
    const losses = [];
    for (const b of batches) losses.push((await tr.step(b.map((e) => e.query), b.map((e) => e.positive), STEP)).loss);
    training = false;
    const loaded = await loads;
    enc.dispose();
    return { losses, loaded };
  };
  const quiet = await steps(false);
  const busy = await steps(true);
  t.true(busy.loaded > 0);
  // Far apart when the stream moves (other dropout masks); equal but for the last bits when it does not.
  busy.losses.forEach((l, i) => t.true(Math.abs(l - quiet.losses[i]) <= 1e-5 * Math.abs(quiet.losses[i]), `step ${i + 1}: ${l} vs ${quiet.losses[i]} with ${busy.loaded} loads beside it`));
});

test('triplets with hard negatives and gradient accumulation train too', async (t) => {
  const data = dataset(12, 3).map((e, i, all) => ({ ...e, negatives: [all[(i + 1) % all.length].positive] }));
  const run = await train({
    model: FIXTURE,
    data,
    output: path.join(tempDir(), 'out'),
    epochs: 2,
    batchSize: 3,
    gradientAccumulation: 2,
    learningRate: 5e-4,
    valSplit: 0,
    device: 'cpu',
    loss: { lateInteraction: 'bce', symmetric: true },
  });
  // 4 batches per epoch, an update every 2: 2 steps per epoch.
  t.is(run.history.steps.length, 4);
  t.true(run.history.steps.every((s) => Number.isFinite(s.loss) && s.loss > 0));
});

test('accumulation over an odd number of batches: the schedule counts the short last update of each epoch', async (t) => {
  // 15 examples in batches of 3: 5 batches per epoch, updates after batches 2, 4 and 5, so 3 steps an epoch.
  const totals: number[] = [];
  const run = await train({
    model: FIXTURE,
    data: dataset(15, 9),
    output: path.join(tempDir(), 'out'),
    epochs: 3,
    batchSize: 3,
    gradientAccumulation: 2,
    learningRate: 1e-3,
    warmupRatio: 0,
    valSplit: 0,
    device: 'cpu',
    onProgress: (p) => totals.push(p.totalSteps),
  });
  t.is(run.history.steps.length, 9);
  t.deepEqual([...new Set(totals)], [9]);
  const rates = run.history.steps.map((s) => s.learningRate);
  t.true(rates.every((r, i) => r > 0 && (i === 0 || r < rates[i - 1])), `linear decay: ${rates.join(' ')}`);
  t.is(rates[0], 1e-3);
  // The decay reaches 0 after the last of the 9 steps: the last runs at a ninth of the peak.
  t.true(Math.abs(rates.at(-1)! - 1e-3 / 9) < 1e-15, `last step ${rates.at(-1)}`);
});

test("repeated positives: each epoch's order sets its number of batches, and the schedule counts them all", async (t) => {
  // Three positives shared by two questions each, and six distinct: in batches of 4, one order packs them in 3 batches,
  // another needs 4 (a batch never holds one text twice). The schedule counted the unshuffled order's batches, so runs
  // whose epochs needed more went past its end: a linear schedule's learning rate turned negative (gradient ascent).
  const data = [
    ...['a', 'a', 'b', 'b', 'c', 'c'].map((p, i) => ({ query: `question ${i}`, positive: `shared passage ${p}` })),
    ...Array.from({ length: 6 }, (_, i) => ({ query: `other question ${i}`, positive: `distinct passage ${i}` })),
  ];
  const counts = new Set([0, 1, 2].map((seed) => makeBatches(shuffle(data, seededRandom(seed).next), 4).length));
  t.deepEqual([...counts].sort(), [3, 4], 'the order changes the number of batches');
  const steps = new Set<number>();
  for (const [seed, gradientAccumulation] of [[0, 1], [1, 1], [2, 1], [2, 3]]) {
    const totals = new Set<number>();
    const run = await train({
      model: FIXTURE, data, output: path.join(tempDir(), 'out'), epochs: 3, batchSize: 4, gradientAccumulation, learningRate: 1e-3, warmupRatio: 0,
      valSplit: 0, device: 'cpu', seed, onProgress: (p) => totals.add(p.totalSteps),
    });
    steps.add(run.history.steps.length);
    t.deepEqual([...totals], [run.history.steps.length], `seed ${seed}, accumulation ${gradientAccumulation}: totalSteps is the number of steps`);
    const rates = run.history.steps.map((s) => s.learningRate);
    t.true(rates.every((r, i) => r > 0 && (i === 0 || r < rates[i - 1])), `seed ${seed}: linear decay: ${rates.join(' ')}`);
    // Counted right, the decay ends just after the last step: its rate is one step's share of the peak.
    t.true(Math.abs(rates.at(-1)! - 1e-3 / rates.length) < 1e-15, `seed ${seed}: last step ${rates.at(-1)} of ${rates.length}`);
  }
  t.true(steps.size > 1, `runs of different lengths: ${[...steps].join(', ')} steps`);
});

test('the bundled ColTrast example trains end to end from the command line', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const output = path.join(tempDir(), 'ai-projects');
  const cli = CLI;
  const data = path.resolve(__dirname, '..', 'examples', 'ai-projects.json');
  const args = [cli, 'train', '--data', data, '--output', output, '--epochs', '2', '--batch-size', '8', '--val-split', '0.34', '--json'];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr);
  const summary = JSON.parse(run.stdout.trim().split('\n').pop()!);
  t.is(summary.modelDir, output);
  t.is(summary.before.queries, 11, 'one of the three projects (11 questions) is held out');
  t.is(summary.after.queries, 11);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'modules.json', 'training_history.json']) t.true(fs.existsSync(path.join(output, f)), f);
  const bad = spawnSync(process.execPath, [cli, 'train', '--data', data, '--output', output, '--epochs', 'two'], { encoding: 'utf8', timeout: 240_000 });
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--epochs must be an integer/);
  // Folders where files belong: the data, the config, and embed's input.
  for (const args of [['train', '--data', path.dirname(data), '--output', output], ['train', '--config', path.dirname(data)], ['embed', path.dirname(data)]]) {
    const folder = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 240_000 });
    t.is(folder.status, 2, args.join(' '));
    t.regex(folder.stderr, /^coltrast: (data|config|input) file .+ is a folder, not a file\n$/, args.join(' '));
  }
  // A pipe is a file to read: texts from standard input (through a shell's pipe: Node's own stdin for a child is a
  // socket, which /dev/stdin cannot open).
  const piped = spawnSync('bash', ['-c', 'printf "hello world\\na cat\\n" | "$0" --import tsx "$1" embed /dev/stdin --model "$2" --device cpu --json', process.execPath, cli, FIXTURE], { encoding: 'utf8', timeout: 240_000 });
  t.is(piped.status, 0, piped.stderr);
  t.is(JSON.parse(piped.stdout.trim().split('\n').at(-1)!).texts, 2);
  // And a file where the output folder belongs (it was read as a folder: ENOTDIR).
  const onFile = spawnSync(process.execPath, [cli, 'train', '--data', data, '--output', data], { encoding: 'utf8', timeout: 240_000 });
  t.is(onFile.status, 2);
  t.regex(onFile.stderr, /^coltrast: --output: .+ai-projects\.json is a file; give the path of a folder\n$/);
});

const resumeBase = {
  model: FIXTURE,
  data: dataset(30, 5),
  epochs: 3,
  batchSize: 4,
  learningRate: 5e-4,
  valSplit: 0.2,
  device: 'cpu',
  seed: 9,
  checkpointEvery: 2,
  gradientAccumulation: 1,
};

test('a run killed mid-epoch resumes from its last checkpoint and ends with the same weights', (t) => {
  // 24 training examples, batches of 4: 6 steps per epoch, 18 in all; killed mid-epoch 2, one step after the checkpoint at 8.
  checkKillAndResume(t, resumeBase, { steps: 18, killAt: 9, checkpointAt: 8 });
});

// Until state.json version 2 a checkpoint kept the run's examples in state.json (one JSON string, which V8 cannot
// make past ~512 MiB); now they are trainSet.jsonl and val.jsonl beside it. A version 1 checkpoint still resumes.
test('a checkpoint keeps its examples as JSON Lines beside state.json; one with them inside state.json (version 1) resumes too', (t) => {
  checkKillAndResume(t, resumeBase, {
    steps: 18, killAt: 9, checkpointAt: 8,
    beforeResume: (dir) => {
      const saved = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
      t.is(saved.version, 2);
      t.deepEqual(saved.data, { trainSet: 24, val: 6 });
      t.false('trainSet' in saved);
      const rows = (name: string) => fs.readFileSync(path.join(dir, `${name}.jsonl`), 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
      const trainSet = rows('trainSet');
      t.is(trainSet.length, 24);
      fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ version: 1, state: saved.state, trainSet, val: rows('val') }));
      for (const name of ['trainSet', 'val']) fs.rmSync(path.join(dir, `${name}.jsonl`));
    },
  });
});

test('train --config files are checked against the JSON schema, every problem with its path', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const cli = CLI;
  const file = path.join(tempDir(), 'train.json');
  fs.writeFileSync(file, JSON.stringify({ data: 'x.jsonl', output: 'out', epochs: 0, loss: { temprature: 1 }, schedule: 'step', valSplit: 1.5 }));
  const run = spawnSync(process.execPath, [cli, 'train', '--config', file], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 2);
  t.regex(run.stderr, /does not match the train configuration schema/);
  t.regex(run.stderr, /\/epochs: must be >= 1/);
  t.regex(run.stderr, /\/loss: must NOT have additional properties "temprature"/);
  t.regex(run.stderr, /\/schedule: must be equal to one of the allowed values \(linear, cosine, constant\)/);
  t.regex(run.stderr, /\/valSplit: must be < 1\n\s+\/valSplit: must be integer/, 'a fraction or a whole number');
  const schema = spawnSync(process.execPath, [cli, 'train', '--print-schema'], { encoding: 'utf8', timeout: 240_000 });
  t.is(JSON.parse(schema.stdout).title, 'coltrast train configuration');
});

test("retrievalMetrics: each query's rank of its positive among all documents, as evaluateRun ranks every document (ties by id), single- and multi-vector", async (t) => {
  const words = ['river', 'bank', 'model', 'token', 'paper', 'cafe', 'water', 'money', 'search', 'index', 'vector', 'query', 'batch'];
  // Case variants of one text tokenize alike (the tokenizer lowercases): the same vectors, so tied scores.
  const variants = (i: number) => [`the ${words[i % 13]} text`, `The ${words[i % 13]} Text`, `THE ${words[i % 13]} TEXT`];
  const examples: TrainExample[] = Array.from({ length: 72 }, (_, i) => ({
    query: `${words[(i * 5) % 13]} ${words[(i * 3) % 13]} ${i % 4}`,
    positive: i < 36 ? variants(i % 12)[Math.floor(i / 12)] : `${words[i % 13]} ${words[(i * 7) % 13]} document ${i}`,
  }));
  const documents = [...new Set(examples.map((e) => e.positive))];
  // The plain definition: every query's scores over every document, ranked by evaluateRun.
  const plain = (scores: (i: number, j: number) => number) => {
    const run = new Map(examples.map((_, i) => [`q${i}`, documents.map((_, j) => ({ id: `d${j}`, score: scores(i, j) }))]));
    const qrels = new Map(examples.map((e, i) => [`q${i}`, new Map([[`d${documents.indexOf(e.positive)}`, 1]])]));
    const { metrics } = evaluateRun(run, qrels, [1, 10]);
    return { 'recall@1': metrics.recall[1], 'mrr@10': metrics.mrr[10], queries: examples.length };
  };
  // Every query's scores over every document in one MaxSim call (a pooled vector is a one-token input).
  const allScores = async (q: { tokens: Tensor; mask: Mask }, d: { tokens: Tensor; mask: Mask }) => {
    const all = (await maxsim(q.tokens, q.mask, d.tokens, d.mask, { device: 'cpu' })).value;
    let ties = 0;
    for (let i = 0; i < examples.length; i++) ties += documents.length - new Set(all.subarray(i * documents.length, (i + 1) * documents.length)).size;
    t.true(ties > 0, 'the data has tied scores');
    return (i: number, j: number) => all[i * documents.length + j];
  };
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const pooled = async (texts: string[], task: 'query' | 'document') => padTokens(matrixRows(await enc.embed(texts, { normalize: true, task })).map((v) => ({ dims: [1, v.length], data: v })), enc.dimension);
  t.deepEqual(await retrievalMetrics(enc, examples), plain(await allScores(await pooled(examples.map((e) => e.query), 'query'), await pooled(documents, 'document'))));
  await enc.makeMultiVector({ dimension: 12, queryLength: 10, queryExpansion: 'none', attendExpansion: false, skiplist: [] }, 3);
  const tokens = async (texts: string[], task: 'query' | 'document') => padTokens(await enc.embed(texts, { output: 'tokens', task }), enc.tokenDimension);
  t.deepEqual(await retrievalMetrics(enc, examples), plain(await allScores(await tokens(examples.map((e) => e.query), 'query'), await tokens(documents, 'document'))));
  enc.dispose();
});

test('a resume with other options or data than the interrupted run is refused, naming what differs', async (t) => {
  // It used to go on with the checkpoint's examples under the new options (batch size, learning rate, epochs), ending
  // with weights of neither run.
  const { spawnSync } = await import('node:child_process');
  const child = path.resolve(__dirname, 'helpers', 'train-child.ts');
  const run = (options: object) => spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
  const output = path.join(tempDir(), 'run');
  t.is(run({ ...resumeBase, output, killAtStep: 3 }).signal, 'SIGKILL');
  const refused = (changes: object, pattern: RegExp) => {
    const r = run({ ...resumeBase, ...changes, output, resume: true });
    t.is(r.status, 1, r.stdout);
    t.regex(r.stderr, pattern);
    t.regex(r.stderr, /Resume with that run's data and options, or train without resume to start over/);
  };
  refused({ batchSize: 2, learningRate: 0.5 }, /options\.resume: .*run\.checkpoint is of a run with other settings: options\.batchSize 4 then, 2 now; options\.learningRate 0\.0005 then, 0\.5 now\./);
  refused({ epochs: 5 }, /options\.epochs 3 then, 5 now/);
  // Named as the caller gives them (they used to be "options.accumulation", "options.step" and "options.patience").
  refused({ gradientAccumulation: 2 }, /other settings: options\.gradientAccumulation 1 then, 2 now\./);
  refused({ loss: { temperature: 0.1 } }, /other settings: options\.loss differs\./);
  refused({ earlyStopping: { patience: 2 } }, /other settings: options\.earlyStopping not set then, \{"metric":"loss","patience":2\} now\./);
  refused({ data: dataset(30, 6) }, /the data \(other examples, or the same file changed\)/);
  // Options at their defaults, given or left out, are the same run; so are checkpointEvery and the thread count.
  const same = run({ ...resumeBase, output, resume: true, checkpointEvery: 3, threads: 1, schedule: 'linear' });
  t.is(same.status, 0, same.stderr);
});

test("a resume from another folder names the run's guide model by another relative path: the same run; the same path naming another model is not", async (t) => {
  // The run's identity kept options.guide.model as given: a relative path, read from the folder the process ran in.
  const { spawnSync } = await import('node:child_process');
  const child = path.resolve(__dirname, 'helpers', 'train-child.ts');
  const run = (options: object, cwd: string) => spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(options)], { encoding: 'utf8', cwd });
  const fixtures = path.dirname(FIXTURE);
  const output = path.join(tempDir(), 'run');
  // Run in test/fixtures with guide "tiny-bert", killed; resumed in test/.
  t.is(run({ ...resumeBase, output, guide: path.basename(FIXTURE), killAtStep: 3 }, fixtures).signal, 'SIGKILL');
  const other = run({ ...resumeBase, output, guide: path.basename(FIXTURE), resume: true }, __dirname);
  t.is(other.status, 1, other.stdout);
  t.regex(other.stderr, /is of a run with other settings: options\.guide differs\./);
  const same = run({ ...resumeBase, output, guide: path.relative(__dirname, FIXTURE), resume: true }, __dirname);
  t.is(same.status, 0, same.stderr);
});
