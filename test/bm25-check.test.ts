// coltrast's BM25 (lib/bm25.ts), the lexical baseline and hybrid half of every retrieval comparison, against
// reference libraries in Python (scripts/fixtures/check_bm25.py, from build/pyenv, which scripts/setup.sh makes
// from this machine image's wheels): its scores against bm25s's Lucene BM25 on every query/document pair of
// the bundled example data, and its Porter2 stems against PyStemmer's Snowball English stemmer.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Bm25Index, bm25Tokens } from '../lib/bm25';
import { tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const PYTHON = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const probe = fs.existsSync(PYTHON) ? spawnSync(PYTHON, ['-c', 'import bm25s, Stemmer'], { encoding: 'utf8', timeout: 240_000 }) : null;
const skip = !probe
  ? `no Python at ${PYTHON}: scripts/setup.sh makes build/pyenv from this machine's wheels (or set COLTRAST_ST_PYTHON)`
  : probe.status !== 0
    ? `${PYTHON} cannot import bm25s and Stemmer (PyStemmer): ${probe.stderr.trim().split('\n').pop()}`
    : '';

// Documents: the example READMEs' paragraphs and the example sentences; queries: the example questions and
// every tenth sentence (so some queries match their own document).
function corpus() {
  const projects = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8')).projects as {
    readme_content: string;
    qa_pairs: { question: string }[];
  }[];
  const sentences = fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8').split('\n').filter((l) => l.trim());
  const docs = [...projects.flatMap((p) => p.readme_content.split(/\n\s*\n/).filter((t) => bm25Tokens(t).length > 0)), ...sentences];
  const queries = [...projects.flatMap((p) => p.qa_pairs.map((q) => q.question)), ...sentences.filter((_, i) => i % 10 === 0)];
  return { docs, queries };
}

const check = skip ? test.skip : test;
const skipped = skip ? ` [skipped: ${skip}]` : '';

function runCheck(t: any, c: object) {
  const file = path.join(tempDir('coltrast-bm25-'), 'case.json');
  fs.writeFileSync(file, JSON.stringify(c));
  const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'fixtures', 'check_bm25.py'), file], { encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { bm25s: string; maxRelDiff: number; pairs: number; words: number; stemMismatches: string[][] };
}

for (const stem of [false, true]) {
  check(`BM25 scores equal bm25s's Lucene BM25 on every query/document pair${stem ? ', stemmed' : ''}${skipped}`, (t) => {
    const { docs, queries } = corpus();
    const k1 = 0.9;
    const b = 0.4;
    const index = new Bm25Index({ k1, b, stem });
    docs.forEach((text, i) => index.add(String(i), text));
    const scores = queries.map((q) => {
      const row = new Array<number>(docs.length).fill(0);
      for (const hit of index.search(q, docs.length)) row[Number(hit.id)] = hit.score;
      return row;
    });
    const out = runCheck(t, { k1, b, docs: docs.map((d) => bm25Tokens(d, stem)), queries: queries.map((q) => bm25Tokens(q, stem)), scores });
    t.is(out.pairs, docs.length * queries.length);
    t.true(scores.flat().filter((s) => s > 0).length > out.pairs / 20, 'enough scored pairs to compare');
    t.true(out.maxRelDiff < 1e-9, `largest relative difference ${out.maxRelDiff}`);
    t.log(`bm25s ${out.bm25s}: ${queries.length} queries x ${docs.length} documents, largest relative difference ${out.maxRelDiff.toExponential(2)}`);
  });
}

// Porter2 as published (2002, what the porter2 package implements) against the Snowball project's current
// English stemmer, which later added exceptions: more R1 prefixes (inter, organ, past, univers), -ogist
// stemmed to -og, and no undoubling after -ed/-ing in words such as 'added'. These are the words of this test
// where that shows; any other difference fails the test.
const SNOWBALL_2_DIFFERENCES = [
  'added', 'adding', 'anned', 'apped', 'apping', 'biologists', 'interfer', 'internal', 'internally', 'internals',
  'international', 'interval', 'intervals', 'ologists', 'organisms', 'organization', 'organizations', 'organize',
  'organized', 'organizer', 'organizing', 'paste', 'pasting', 'radiologists', 'univers', 'universal',
  'universally', 'university',
];

check(`Porter2 stems equal Snowball English's (PyStemmer) but for its later exceptions, digits included${skipped}`, (t) => {
  const text = [
    fs.readFileSync(path.join(ROOT, 'examples', 'sentences.txt'), 'utf8'),
    fs.readFileSync(path.join(ROOT, 'examples', 'ai-projects.json'), 'utf8'),
    fs.readFileSync(path.join(ROOT, 'default-model', 'vocab.txt'), 'utf8'),
  ].join(' ');
  const words = [...new Set(bm25Tokens(text))].sort();
  const out = runCheck(t, { words, stems: words.map((w) => bm25Tokens(w, true)[0]) });
  t.is(out.words, words.length);
  t.true(words.filter((w) => /[0-9]/.test(w)).length > 500, 'words with digits are part of the check');
  t.deepEqual(
    out.stemMismatches.map(([w]) => w),
    SNOWBALL_2_DIFFERENCES,
    `[word, porter2, Snowball]: ${JSON.stringify(out.stemMismatches)}`,
  );
  t.log(`${out.words} words (the examples and the default model's vocabulary): ${out.words - out.stemMismatches.length} stemmed alike`);
});

// The search's top k against the plain definition (every matching document's score summed term by term in a Map, all
// sorted by score and then id): the same hits and bit-identical scores, with many ties (documents of few words from a
// small vocabulary), filters, k past the number of matches, and stemming.
/** Which kinds of postings chains `index` holds: one block (a rare term's), a few, and many (a common term's). */
function postingsKinds(index: Bm25Index): string[] {
  const kind = (blocks: number) => (blocks <= 1 ? 'one block' : blocks < 8 ? 'a few blocks' : 'many blocks');
  return [...new Set(index.blocksPerTerm().map(kind))].sort();
}
const ALL_KINDS = ['a few blocks', 'many blocks', 'one block'];

test('Bm25Index.search gives the plain definition\'s top k: scores bit for bit, ties by id, with filters', (t) => {
  let seed = 3;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  // Common words (in hundreds of documents) and rare ones (in a few): the index keeps every kind of postings chain.
  const vocabulary = ['river', 'rivers', 'bank', 'banks', 'water', 'money', 'cafe', 'paper', 'model', 'token', ...Array.from({ length: 50 }, (_, i) => `rare${i}`)];
  const words = (n: number) => Array.from({ length: n }, () => vocabulary[Math.floor(vocabulary.length * random() ** 3)]).join(' ');
  let compared = 0;
  for (const stem of [false, true]) {
    // Every 30th document also holds a word of its own (a term in one document).
    const docs = Array.from({ length: 300 }, (_, i) => ({ id: `d${(i * 7919) % 1000}`, text: words(1 + Math.floor(random() * 6)) + (i % 30 ? '' : ` only${i}`) }));
    const index = new Bm25Index({ stem });
    for (const d of docs) index.add(d.id, d.text);
    t.deepEqual(postingsKinds(index), ALL_KINDS);
    const avg = docs.reduce((s, d) => s + bm25Tokens(d.text, stem).length, 0) / docs.length;
    for (let q = 0; q < 30; q++) {
      const query = words(1 + Math.floor(random() * 3)) + (q % 4 ? '' : ` only${30 * (q % 10)}`);
      const allow = q % 3 === 0 ? Uint8Array.from(docs, () => (random() < 0.5 ? 1 : 0)) : undefined;
      const scores = new Map<number, number>();
      for (const term of new Set(bm25Tokens(query, stem))) {
        const holders = docs.map((d, i) => [i, bm25Tokens(d.text, stem).filter((x) => x === term).length]).filter(([, tf]) => tf > 0);
        const idf = Math.log(1 + (docs.length - holders.length + 0.5) / (holders.length + 0.5));
        for (const [i, tf] of holders) {
          if (allow && !allow[i]) continue;
          const norm = tf + 0.9 * (1 - 0.4 + (0.4 * bm25Tokens(docs[i].text, stem).length) / avg);
          scores.set(i, (scores.get(i) ?? 0) + (idf * tf * (0.9 + 1)) / norm);
        }
      }
      const all = [...scores].map(([i, score]) => ({ id: docs[i].id, score })).sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
      for (const k of [1, 5, 40, 1000]) {
        t.deepEqual(index.search(query, k, allow), all.slice(0, k), `stem ${stem}, "${query}", k ${k}`);
        compared++;
      }
    }
  }
  t.is(compared, 240);
});

test('Bm25Index.remove leaves the index a fresh one over the kept documents would be: same hits, same scores', async (t) => {
  let seed = 17;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const vocabulary = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'omicron', 'sigma', 'tau', 'upsilon', 'phi', 'chi', 'psi'];
  const words = (n: number) => Array.from({ length: n }, () => vocabulary[Math.floor(vocabulary.length * random() ** 2)]).join(' ');
  let docs = Array.from({ length: 200 }, (_, i) => ({ id: `d${i}`, text: words(1 + Math.floor(random() * 8)) + (i % 25 ? '' : ` omega${i}`) }));
  const index = new Bm25Index();
  for (const d of docs) index.add(d.id, d.text);
  t.deepEqual(postingsKinds(index), ALL_KINDS);
  for (let round = 0; round < 4; round++) {
    const keep = Uint8Array.from(docs, () => (random() < 0.7 ? 1 : 0));
    await index.remove(keep);
    docs = docs.filter((_, i) => keep[i]);
    const added = Array.from({ length: 20 }, (_, i) => ({ id: `r${round}-${i}`, text: words(1 + Math.floor(random() * 8)) }));
    for (const d of added) index.add(d.id, d.text);
    docs.push(...added);
    const fresh = new Bm25Index();
    for (const d of docs) fresh.add(d.id, d.text);
    t.is(index.size, docs.length);
    for (const query of ['alpha', 'beta gamma', 'theta eta zeta', 'delta delta epsilon', 'omega', 'psi chi', 'upsilon alpha', 'omega0 omega75 beta', 'omega150']) {
      t.deepEqual(index.search(query, 50), fresh.search(query, 50), `round ${round}: "${query}"`);
    }
  }
  await index.remove(new Uint8Array(docs.length));
  t.is(index.size, 0);
  t.deepEqual(index.search('alpha', 5), []);
  await t.throwsAsync(index.remove(new Uint8Array(3)), { message: 'keep must be a Uint8Array of 0 flags (one per document), got a Uint8Array of length 3' });
  // Terms whose documents all went keep their emptied chains, which the documents added next fill again.
  const again = Array.from({ length: 30 }, (_, i) => ({ id: `a${i}`, text: words(1 + Math.floor(random() * 8)) + (i % 10 ? '' : ' omega0') }));
  for (const d of again) index.add(d.id, d.text);
  const fresh = new Bm25Index();
  for (const d of again) fresh.add(d.id, d.text);
  for (const query of ['alpha', 'beta gamma', 'omega0', 'omega75', 'psi chi upsilon']) {
    t.deepEqual(index.search(query, 50), fresh.search(query, 50), `added again: "${query}"`);
  }
  t.true(index.search('omega0', 5).length === 3, 'omega0 found in the three documents added again');
});

test('addAll and searchAll give what add and search give, and let timers fire while they work', async (t) => {
  let seed = 11;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const vocabulary = Array.from({ length: 3000 }, (_, i) => `w${i.toString(36)}`);
  const words = (n: number) => Array.from({ length: n }, () => vocabulary[Math.floor(vocabulary.length * random() ** 2)]).join(' ');
  const docs = Array.from({ length: 40_000 }, (_, i) => ({ id: `d${i}`, text: words(60) }));
  const queries = Array.from({ length: 400 }, () => words(3));
  const oneByOne = new Bm25Index();
  for (const d of docs) oneByOne.add(d.id, d.text);
  const inTurns = new Bm25Index();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  const started = performance.now();
  await inTurns.addAll(docs);
  const added = performance.now();
  const ticksAdding = ticks;
  const found = await inTurns.searchAll(queries, 10);
  const searched = performance.now();
  clearInterval(timer);
  t.log(`addAll ${(added - started).toFixed(0)} ms (timer fired ${ticksAdding} times), searchAll ${(searched - added).toFixed(0)} ms (${ticks - ticksAdding} times)`);
  t.deepEqual(found, queries.map((q) => oneByOne.search(q, 10)));
  // Done at once, neither would let the timer fire at all.
  t.true(ticksAdding >= 3, `the timer fired ${ticksAdding} times during addAll`);
  t.true(ticks - ticksAdding >= 3, `the timer fired ${ticks - ticksAdding} times during searchAll`);
});


test('Bm25Index: ids come back as given (kept as UTF-8 outside the heap), ties broken by id; a lone surrogate is refused', (t) => {
  const index = new Bm25Index();
  const ids = ['ζ-7', 'a 🙂', 'b', '文書', ''];
  for (const id of ids) index.add(id, 'same words here');
  index.add('other', 'different text');
  // Equal scores for the five: ordered by id, as JavaScript compares strings.
  t.deepEqual(index.search('words', 10).map((h) => h.id), [...ids].sort());
  const error = t.throws(() => index.add('bad\ud800', 'text'));
  t.is((error as { code?: string }).code, 'INVALID_ARGUMENT');
  t.regex(error!.message, /id must be a string of well-formed Unicode/);
  t.throws(() => index.add(7 as unknown as string, 'text'), { message: /id must be a string/ });
  t.is(index.size, 6);
});

test('Bm25Index refuses bad settings and arguments with errors that name them (it is a public export)', async (t) => {
  const refuses = (f: () => unknown, message: RegExp) => {
    const error = t.throws(f, { message });
    t.is((error as { code?: string } | undefined)?.code, 'INVALID_ARGUMENT');
  };
  refuses(() => new Bm25Index({ kl: 1.2 } as never), /unknown option options\.kl \(known options: k1, b, stem\)/);
  refuses(() => new Bm25Index({ k1: '1.2' } as never), /options\.k1 must be a number >= 0, got the string "1\.2"/);
  refuses(() => new Bm25Index({ b: 1.5 }), /options\.b must be a number from 0 to 1, got number 1\.5/);
  refuses(() => new Bm25Index({ stem: 'yes' } as never), /options\.stem must be true or false/);
  const index = new Bm25Index({ k1: 1.2, b: 0.75, stem: true });
  index.add('a', 'running dogs');
  index.add('b', 'a dog ran');
  t.deepEqual(index.search('dog', 5).map((h) => h.id), ['a', 'b'], 'stemmed: dogs is dog; the shorter document first');
  t.deepEqual(index.search('dog', 0), []);
  refuses(() => index.add('c', 42 as never), /text must be a string, got number 42/);
  refuses(() => index.search(undefined as never, 5), /query must be a string, got undefined/);
  refuses(() => index.search('dog', 1.5), /k must be an integer >= 0, got number 1\.5/);
  refuses(() => index.search('dog', 5, new Uint8Array(3)), /allow must be a Uint8Array of 2 flags \(one per document\), got a Uint8Array of length 3/);
  await t.throwsAsync(index.searchAll(['dog', 7] as never, 5), { message: /queries must be an array of strings/ });
  await t.throwsAsync(index.remove(new Uint8Array(1)), { message: /keep must be a Uint8Array of 2 flags \(one per document\), got a Uint8Array of length 1/ });
  // A repeated id made two hits of one id.
  const terms = index.termCount;
  refuses(() => index.add('a', 'a dog barks'), /^id "a" is already in the BM25 index \(ids must be unique; remove the document first to replace it\)$/);
  t.is(index.size, 2, 'nothing was added or removed by the refused calls');
  t.deepEqual(index.search('dog', 5).map((h) => h.id), ['a', 'b']);
  t.is(index.termCount, terms, 'the refused document added no term');
  // Once removed, the id may come back; ids are found after removals as before them.
  await index.remove(Uint8Array.of(0, 1));
  index.add('a', 'a dog barks');
  refuses(() => index.add('b', 'x'), /^id "b" is already in the BM25 index/);
  t.deepEqual(index.search('dog', 5).map((h) => h.id).sort(), ['a', 'b']);
});
