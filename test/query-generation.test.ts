// generateQueries (GPL's first step): a decoder LLM writes queries for each document of a corpus, and the
// (query, document) pairs go on to mining and training. On the tiny random causal LMs the queries are random
// tokens, so the checks are that they are what Generator.generate writes for those prompts and draws, cleaned
// and de-duplicated, and that the pairs train.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, Generator, Index, cleanQuery, generateQueries, mineHardNegatives, train } from '../lib';
import { DEFAULT_CHAT_QUERY_TEMPLATE, DEFAULT_QUERY_TEMPLATE } from '../lib/query-generation';
import { FIXTURE, editJson, tempDir } from './helpers/fixture';
import { rejection } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const LMS = path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms');
const CORPUS = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 6);

test('cleanQuery keeps the first line, without a "Query:" label, a list marker, quotes or extra spaces', (t) => {
  t.is(cleanQuery('  what is   late interaction?\nIt is ColBERT.'), 'what is late interaction?');
  t.is(cleanQuery('\n\nQuery: "how do I mine hard negatives"'), 'how do I mine hard negatives');
  t.is(cleanQuery('1. best embedding model for code'), 'best embedding model for code');
  t.is(cleanQuery('- “contrastive loss temperature”'), 'contrastive loss temperature');
  t.is(cleanQuery('search query: bm25 vs dense'), 'bm25 vs dense');
  t.is(cleanQuery(' \n \n'), '');
  // A reasoning model's thoughts are not the query; thoughts cut short leave none.
  t.is(cleanQuery('<think>\nThe passage is about BM25.\n</think>\n\nwhat is bm25'), 'what is bm25');
  t.is(cleanQuery('<think>\nThe passage is about'), '');
});

test('the queries are what the generator samples for each document\'s prompt (perDocument copies), cleaned and de-duplicated; the same seed gives the same pairs', async (t) => {
  const generator = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu' });
  try {
    const options = { generator, corpus: CORPUS, perDocument: 3, maxNewTokens: 6, maxDocumentTokens: 12, seed: 5 };
    const r = await generateQueries(options);
    // What it must equal: one generate() call over the batch (16 documents per call by default), seeded seed + 0.
    const cut = await generator.cutTexts(CORPUS, 12);
    const prompts = cut.flatMap((d) => [0, 1, 2].map(() => DEFAULT_QUERY_TEMPLATE.replace('{document}', d)));
    const out = await generator.generate(prompts, { maxNewTokens: 6, temperature: 1, topK: 25, topP: 0.95, seed: 5, batchSize: prompts.length });
    const expected: { query: string; positive: string }[] = [];
    let dropped = 0;
    CORPUS.forEach((document, d) => {
      const seen = new Set([document.toLowerCase()]);
      for (let k = 0; k < 3; k++) {
        const q = cleanQuery(out[d * 3 + k].text);
        if (!q || seen.has(q.toLowerCase())) dropped++;
        else (seen.add(q.toLowerCase()), expected.push({ query: q, positive: document }));
      }
    });
    t.deepEqual(r.pairs, expected);
    t.is(r.documents, CORPUS.length);
    t.is(r.generated, CORPUS.length * 3);
    t.is(r.dropped, dropped);
    t.true(r.pairs.length > CORPUS.length, `${r.pairs.length} pairs`);
    t.true(new Set(r.pairs.map((p) => p.positive)).size >= CORPUS.length - 1, 'the documents are the positives, whole');
    t.deepEqual((await generateQueries(options)).pairs, r.pairs);
    t.notDeepEqual((await generateQueries({ ...options, seed: 6 })).pairs, r.pairs);
    // Batches of 2 documents: each batch seeded seed + its first document's index.
    const small = await generateQueries({ ...options, batchSize: 2 });
    const second = await generator.generate(prompts.slice(6, 12), { maxNewTokens: 6, temperature: 1, topK: 25, topP: 0.95, seed: 7, batchSize: 6 });
    const fromSecond = small.pairs.filter((p) => p.positive === CORPUS[2] || p.positive === CORPUS[3]).map((p) => p.query);
    const secondQueries = second.map((g) => cleanQuery(g.text)).filter((q) => q);
    t.true(fromSecond.length > 0 && fromSecond.every((q) => secondQueries.includes(q)), `${fromSecond} among ${secondQueries}`);
    // A long document is cut to its first maxDocumentTokens tokens in the prompt.
    const long = `${CORPUS[0]} ${CORPUS[1]} ${CORPUS[2]}`;
    const [cutLong] = await generator.cutTexts([long], 12);
    t.true(cutLong.length < long.length);
    t.deepEqual(await generator.cutTexts([CORPUS[0].split(' ').slice(0, 2).join(' ')], 12), [CORPUS[0].split(' ').slice(0, 2).join(' ')]);
    // Greedy: one query per document, the greedy continuation.
    const greedy = await generateQueries({ ...options, perDocument: 1, temperature: 0 });
    const greedyOut = await generator.generate(prompts.filter((_, i) => i % 3 === 0), { maxNewTokens: 6, batchSize: CORPUS.length });
    t.deepEqual(greedy.pairs.map((p) => p.query), greedyOut.map((g) => cleanQuery(g.text)).filter((q, i) => q && q.toLowerCase() !== CORPUS[i].toLowerCase()));
  } finally {
    generator.dispose();
  }
});

test('chat: the template is the user\'s message in the generator\'s chat template, after a system message', async (t) => {
  const generator = await Generator.load(path.join(LMS, 'llama'), { device: 'cpu' });
  try {
    const r = await generateQueries({ generator, corpus: CORPUS.slice(0, 3), chat: true, system: 'You write search queries.', perDocument: 2, maxNewTokens: 5, maxDocumentTokens: 10 });
    const cut = await generator.cutTexts(CORPUS.slice(0, 3), 10);
    const prompts = cut.flatMap((d) =>
      [0, 1].map(() => [
        { role: 'system', content: 'You write search queries.' },
        { role: 'user', content: DEFAULT_CHAT_QUERY_TEMPLATE.replace('{document}', d) },
      ]),
    );
    const out = await generator.generate(prompts, { maxNewTokens: 5, temperature: 1, topK: 25, topP: 0.95, seed: 0, batchSize: prompts.length });
    const queries = out.map((g) => cleanQuery(g.text));
    t.true(r.pairs.length > 0);
    for (const p of r.pairs) t.true(queries.includes(p.query), p.query);
  } finally {
    generator.dispose();
  }
});

test("consistency: a query stays only where the embedding model ranks its document within the first k of the corpus (Promptagator's round trip)", async (t) => {
  const generator = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu' });
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  try {
    const options = { generator, corpus: CORPUS, perDocument: 3, maxNewTokens: 6, seed: 2 };
    const all = await generateQueries(options);
    const index = await Index.build(encoder, CORPUS.map((text, i) => ({ id: String(i), text })));
    const hits = await index.search(all.pairs.map((p) => p.query), { k: 2 });
    const expected = all.pairs.filter((p, i) => hits[i].some((h) => h.id === String(CORPUS.indexOf(p.positive))));
    t.true(expected.length > 0 && expected.length < all.pairs.length, `${expected.length} of ${all.pairs.length} consistent at k 2`);
    const r = await generateQueries({ ...options, consistency: { model: encoder, k: 2 } });
    t.deepEqual(r.pairs, expected);
    t.is(r.inconsistent, all.pairs.length - expected.length);
    t.is(r.dropped, all.dropped);
    const wide = await generateQueries({ ...options, consistency: { model: FIXTURE, k: CORPUS.length } });
    t.deepEqual(wide.pairs, all.pairs);
    t.is(wide.inconsistent, 0);
    t.is(all.inconsistent, undefined);
  } finally {
    generator.dispose();
    encoder.dispose();
  }
});

// Serial: it wraps Generator.prototype.generate, which the other tests of this file call too (AVA runs serial tests first).
test.serial('a generator loaded by generateQueries renders its chat template with enable_thinking false (Qwen3 answers without thinking first); one passed in keeps its own', async (t) => {
  // What each generate() call rendered: the prompts as the chat template renders them then.
  const rendered: string[][] = [];
  const generate = Generator.prototype.generate;
  Generator.prototype.generate = function (this: Generator, prompts, options) {
    rendered.push(prompts.map((p) => (typeof p === 'string' ? p : this.applyChatTemplate(p))));
    return generate.call(this, prompts, options);
  };
  const dir = path.join(tempDir(), 'llama');
  fs.cpSync(path.join(LMS, 'llama'), dir, { recursive: true });
  editJson(path.join(dir, 'tokenizer_config.json'), (c) => ({
    ...c,
    chat_template: "{{ bos_token }}{% for m in messages %}user : {{ m['content'] }} {% endfor %}{% if enable_thinking is defined and enable_thinking is false %}/no_think {% endif %}assistant :",
  }));
  const options = { corpus: CORPUS.slice(0, 2), chat: true, perDocument: 1, temperature: 0, maxNewTokens: 3, device: 'cpu' as const };
  const generator = await Generator.load(dir, { device: 'cpu' });
  try {
    await generateQueries({ generator: dir, ...options });
    await generateQueries({ generator, ...options });
    t.is(rendered.length, 2);
    t.true(rendered[0].every((p) => p.endsWith('/no_think assistant :')), rendered[0].join('\n'));
    t.true(rendered[1].every((p) => /^\[CLS\]user : .+ assistant :$/s.test(p) && !p.includes('/no_think')), rendered[1].join('\n'));
  } finally {
    Generator.prototype.generate = generate;
    generator.dispose();
  }
});

test("keepLikeliest: the fraction of queries the generator finds likeliest after their prompts (InPars' filter), before the consistency filter", async (t) => {
  const generator = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu' });
  try {
    const options = { generator, corpus: CORPUS, perDocument: 3, maxNewTokens: 6, maxDocumentTokens: 12, seed: 4 };
    const all = await generateQueries(options);
    // The mean log-probability of each query's tokens after its document's prompt, recomputed here.
    const cut = await generator.cutTexts(CORPUS, 12);
    const completions = all.pairs.map((p) => ({ prompt: DEFAULT_QUERY_TEMPLATE.replace('{document}', cut[CORPUS.indexOf(p.positive)]), completion: ` ${p.query}` }));
    const sums = await generator.logLikelihood(completions, { endOfSequence: false });
    const sequences = await generator.sequences(completions, false);
    const mean = all.pairs.map((_, i) => sums[i] / sequences[i].scored!.filter((x) => x === 1).length);
    const count = Math.round(0.4 * all.pairs.length);
    const threshold = [...mean].sort((a, b) => b - a)[count - 1];
    const r = await generateQueries({ ...options, keepLikeliest: 0.4 });
    t.is(r.pairs.length, count);
    t.deepEqual(r.pairs, all.pairs.filter((_, i) => mean[i] >= threshold));
    t.is(r.unlikely, all.pairs.length - count);
    t.is(r.inconsistent, undefined);
    t.deepEqual((await generateQueries({ ...options, keepLikeliest: 1 })).pairs, all.pairs);
    const both = await generateQueries({ ...options, keepLikeliest: 0.4, consistency: { model: FIXTURE, k: CORPUS.length } });
    t.deepEqual(both.pairs, r.pairs);
    t.deepEqual([both.unlikely, both.inconsistent], [all.pairs.length - count, 0]);
  } finally {
    generator.dispose();
  }
});

test('an interrupted run resumes (resume: true) to the pairs of an uninterrupted one; its partial files go when it ends', async (t) => {
  const generator = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu' });
  try {
    const dir = tempDir();
    const options = { generator, corpus: CORPUS, perDocument: 2, maxNewTokens: 5, maxDocumentTokens: 12, seed: 9, batchSize: 2, keepLikeliest: 0.7 };
    const whole = await generateQueries({ ...options, output: path.join(dir, 'new', 'whole.jsonl') });
    t.deepEqual(fs.readdirSync(path.join(dir, 'new')), ['whole.jsonl'], 'the folder made, no partial files left');
    const output = path.join(dir, 'pairs.jsonl');
    const controller = new AbortController();
    const stopped = await rejection(() =>
      generateQueries({ ...options, output, signal: controller.signal, onProgress: (done) => done >= 4 && controller.abort() }),
    );
    t.is(stopped.code, 'ABORTED');
    t.false(fs.existsSync(output));
    const state = JSON.parse(fs.readFileSync(`${output}.partial.json`, 'utf8'));
    t.is(state.done, 4);
    t.is(fs.readFileSync(`${output}.partial`, 'utf8').trim().split('\n').length, state.lines);
    // A crash between the two writes leaves a line past the count: it goes.
    fs.appendFileSync(`${output}.partial`, '{"query": "torn');
    const other = await rejection(() => generateQueries({ ...options, seed: 10, output, resume: true }));
    t.regex(other.message, /pairs\.jsonl\.partial\.json is from a run with another corpus, generator or options/);
    // A generator in bfloat16 writes other queries than the float32 one that began the run.
    const bf16 = await Generator.load(path.join(LMS, 'qwen3'), { device: 'cpu', dtype: 'bfloat16' });
    try {
      const otherDtype = await rejection(() => generateQueries({ ...options, generator: bf16, output, resume: true }));
      t.regex(otherDtype.message, /from a run with another corpus, generator or options/);
    } finally {
      bf16.dispose();
    }
    const progress: number[] = [];
    const resumed = await generateQueries({ ...options, output, resume: true, onProgress: (done) => progress.push(done) });
    t.deepEqual(progress, [4, 6]);
    t.deepEqual(resumed, { ...whole, output });
    t.deepEqual(fs.readFileSync(output, 'utf8'), fs.readFileSync(path.join(dir, 'new', 'whole.jsonl'), 'utf8'));
    t.false(fs.existsSync(`${output}.partial`) || fs.existsSync(`${output}.partial.json`));
    // Without resume, a partial run there is discarded: the pairs are a whole run's.
    fs.writeFileSync(`${output}.partial.json`, '{"version": 1, "key": "x", "done": 6, "lines": 0}');
    t.deepEqual((await generateQueries({ ...options, output })).pairs, whole.pairs);
  } finally {
    generator.dispose();
  }
});

test('bad options are errors that name them', async (t) => {
  const qwen3 = path.join(LMS, 'qwen3');
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ corpus: CORPUS }, /options.generator must be a causal LM folder, a hub id or a Generator/],
    [{ generator: qwen3 }, /options.corpus is required/],
    [{ generator: qwen3, corpus: [] }, /options.corpus has no documents|no documents/],
    [{ generator: qwen3, corpus: CORPUS, template: 'no placeholder' }, /options.template must be a string with \{document\}/],
    [{ generator: qwen3, corpus: CORPUS, temperature: 0 }, /temperature 0 is greedy decoding, which writes one query per document: set perDocument to 1/],
    [{ generator: qwen3, corpus: CORPUS, perDocument: 0 }, /perDocument/],
    [{ generator: qwen3, corpus: CORPUS, system: 'x' }, /options.system must be a string, with chat: true/],
    [{ generator: qwen3, corpus: CORPUS, chat: true, device: 'cpu' }, /has no chat template/],
    [{ generator: qwen3, corpus: CORPUS, queriesPerDoc: 2 }, /queriesPerDoc/],
    [{ generator: qwen3, corpus: CORPUS, resume: true }, /options.resume must be absent without options.output/],
    [{ generator: qwen3, corpus: CORPUS, output: tempDir() }, /options\.output: .+ is a folder; give the path of the file to write/],
    [{ generator: qwen3, corpus: CORPUS, keepLikeliest: 0 }, /options.keepLikeliest must be a fraction above 0 and at most 1/],
    [{ generator: qwen3, corpus: CORPUS, keepLikeliest: 1.5 }, /options.keepLikeliest must be a fraction above 0 and at most 1/],
    [{ generator: qwen3, corpus: CORPUS, consistency: {} }, /options.consistency.model must be an embedding model folder, a hub id or an Encoder/],
    [{ generator: qwen3, corpus: CORPUS, consistency: { model: FIXTURE, k: 0 } }, /options.consistency.k/],
    [{ generator: qwen3, corpus: CORPUS, consistency: { model: FIXTURE, top: 3 } }, /top/],
    [{ generator: FIXTURE, corpus: CORPUS, device: 'cpu' }, /a Generator runs decoder LLMs/],
    [{ generator: qwen3, corpus: CORPUS, maxNewTokens: 90, device: 'cpu' }, /takes 96 positions: the prompt without its document \(\d+ tokens\) and maxNewTokens \(90\) leave no room for the document/],
  ];
  for (const [options, message] of cases) {
    const e = await rejection(() => generateQueries(options as never));
    t.regex(e.message, message, JSON.stringify(options));
  }
});

test('coltrast generate-queries writes the pairs as JSONL, as the API does; then GPL: mine with a cross-encoder\'s scores and train on them', async (t) => {
  const dir = tempDir();
  const corpus = path.join(dir, 'docs.txt');
  fs.writeFileSync(corpus, CORPUS.join('\n') + '\n');
  const output = path.join(dir, 'pairs.jsonl');
  const generator = path.join(LMS, 'qwen3');
  const r = spawnSync(process.execPath, [CLI, 'generate-queries', '--generator', generator, '--corpus', corpus, '--output', output, '--per-document', '2', '--max-new-tokens', '5', '--seed', '3', '--device', 'cpu'], { encoding: 'utf8', timeout: 240_000 });
  t.is(r.status, 0, r.stderr);
  // The default maxDocumentTokens (256) is cut to what this model's 96 positions leave beside the template and query.
  t.regex(r.stdout, /\d+ \(query, positive\) pairs for 6 documents/);
  const written = fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const api = await generateQueries({ generator, corpus: CORPUS, perDocument: 2, maxNewTokens: 5, seed: 3, device: 'cpu' });
  t.deepEqual(written, api.pairs);
  t.deepEqual(fs.readdirSync(path.dirname(output)).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
  const filtered = spawnSync(process.execPath, [CLI, 'generate-queries', '--generator', generator, '--corpus', corpus, '--output', output, '--per-document', '2', '--max-new-tokens', '5', '--seed', '3', '--consistency-model', FIXTURE, '--consistency-k', '2', '--keep-likeliest', '0.8', '--json'], { encoding: 'utf8', timeout: 240_000 });
  t.is(filtered.status, 0, filtered.stderr);
  const summary = JSON.parse(filtered.stdout);
  const apiFiltered = await generateQueries({ generator, corpus: CORPUS, perDocument: 2, maxNewTokens: 5, seed: 3, device: 'cpu', consistency: { model: FIXTURE, k: 2 }, keepLikeliest: 0.8 });
  t.deepEqual(summary, { documents: 6, generated: 12, dropped: apiFiltered.dropped, unlikely: apiFiltered.unlikely, inconsistent: apiFiltered.inconsistent, output, pairs: apiFiltered.pairs.length });
  t.true(apiFiltered.unlikely! > 0);
  t.deepEqual(fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l)), apiFiltered.pairs);
  fs.writeFileSync(output, written.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const missing = spawnSync(process.execPath, [CLI, 'generate-queries', '--generator', generator, '--corpus', corpus], { encoding: 'utf8', timeout: 240_000 });
  t.not(missing.status, 0);
  t.regex(missing.stderr, /generate-queries needs --output/);

  // GPL's next steps: negatives mined by the embedding model, scored by a cross-encoder, and MarginMSE on those scores.
  const encoder = await Encoder.load(FIXTURE, { device: 'cpu' });
  const ce = await CrossEncoder.load(path.join(ROOT, 'test', 'fixtures', 'tiny-cross-encoder', 'st'), { device: 'cpu' });
  try {
    const mined = path.join(dir, 'mined.jsonl');
    const m = await mineHardNegatives({ data: output, corpus, model: encoder, crossEncoder: ce, numNegatives: 2, outputFormat: 'n-tuple', outputScores: true, output: mined });
    t.true(m.rows.length > 0);
    const run = await train({ model: FIXTURE, data: mined, output: path.join(dir, 'model'), epochs: 1, batchSize: 4, valSplit: 0, device: 'cpu', seed: 1 });
    t.true(run.history.epochs.length === 1 && Number.isFinite(run.history.epochs[0].trainLoss));
    t.true(fs.existsSync(path.join(dir, 'model', 'model.safetensors')));
  } finally {
    encoder.dispose();
    ce.dispose();
  }
});
