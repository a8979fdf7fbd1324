// The recorded metrics case (scripts/fixtures/ir-metrics-case.json) is what lib/ir-metrics.ts computes
// today; every per-query value agrees with the trec_eval program's, recorded in
// scripts/fixtures/ir-metrics-trec-eval.json; and scripts/fixtures/check_ir_metrics.py's plain-Python
// trec_eval definitions agree with it (the same script runs the trec_eval program, sentence-transformers
// and pytrec_eval where they are installed). The checker must also catch a wrong metric and a ranking
// that breaks the tie rule.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CASE_FILE, makeCase } from '../scripts/fixtures/make-ir-metrics-case';
import { tempDir } from './helpers/fixture';

const CHECKER = path.resolve(__dirname, '..', 'scripts', 'fixtures', 'check_ir_metrics.py');
const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['--version']).status === 0);
const withPython = PYTHON ? test : test.skip;

function check(file: string) {
  return spawnSync(PYTHON!, [CHECKER, file, '--plain-only'], { encoding: 'utf8', timeout: 240_000 });
}

test('the committed case is what lib/ir-metrics.ts computes now', (t) => {
  t.deepEqual(JSON.parse(fs.readFileSync(CASE_FILE, 'utf8')), JSON.parse(JSON.stringify(makeCase())), 'regenerate: node --import tsx scripts/fixtures/make-ir-metrics-case.ts');
  const c = makeCase();
  // The case covers what it claims: graded qrels, ties, queries with nothing relevant retrieved.
  t.true(Object.values(c.qrels).some((judged) => Object.values(judged).some((g) => g > 1)));
  t.true(Object.values(c.runs.bm25.hits).some((hits) => hits.some((h, i) => i > 0 && h.score === hits[i - 1].score)), 'BM25 run has ties');
  t.is(c.runs.bm25.metrics.graded.perQuery['q-rome'].recall['10'], 0);
  t.deepEqual(c.runs.bm25.hits['q-empty'], []);
  t.false('q-unjudged-only' in c.runs.bm25.metrics.graded.perQuery, 'no relevant document: left out');
});

test('every per-query value equals the trec_eval program\'s recorded output (10.0, 12 decimals)', (t) => {
  const recorded = JSON.parse(fs.readFileSync(path.join(path.dirname(CASE_FILE), 'ir-metrics-trec-eval.json'), 'utf8'));
  t.regex(recorded.program, /^trec_eval version 10\./);
  const c = makeCase();
  let compared = 0;
  for (const [run, variants] of Object.entries(c.runs)) {
    for (const variant of ['graded', 'binary'] as const) {
      const ours = variants.metrics[variant].perQuery;
      const theirs = recorded.runs[run][variant];
      for (const m of ['ndcg', 'recall', 'mrr', 'map', 'precision'] as const) {
        for (const k of c.k) {
          t.deepEqual(Object.keys(theirs[m][k]).sort(), Object.keys(ours).sort(), `${run}/${variant} ${m}@${k}: the same queries`);
          for (const [q, value] of Object.entries(theirs[m][k] as Record<string, number>)) {
            const mine = ours[q][m][String(k)];
            if (Math.abs(mine - value) > 1e-10) {
              t.fail(`${run}/${variant} ${q} ${m}@${k}: coltrast ${mine}, trec_eval ${value} (a changed case needs a new recording: scripts/fixtures/check_ir_metrics.py --trec-eval PATH --record ...)`);
            }
            compared++;
          }
        }
      }
    }
  }
  t.true(compared > 400, `${compared} values compared`);
});

withPython('check_ir_metrics.py (plain trec_eval definitions) agrees with coltrast within 1e-6', (t) => {
  const r = check(CASE_FILE);
  t.is(r.status, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /checked with plain: \d+ comparisons/);
  t.regex(r.stdout, /all agree within 1e-06/);
});

withPython('check_ir_metrics.py fails on a wrong metric and on a ranking against the tie rule', (t) => {
  const dir = tempDir();
  const wrong = makeCase();
  wrong.runs.crafted.metrics.graded.mean.ndcg['10'] += 2e-6;
  fs.writeFileSync(path.join(dir, 'wrong.json'), JSON.stringify(wrong));
  const r = check(path.join(dir, 'wrong.json'));
  t.is(r.status, 1, r.stdout + r.stderr);
  t.regex(r.stdout, /plain crafted\/graded ndcg@10/);

  const ties = makeCase();
  const ranking = ties.runs.crafted.ranking['q-water'];
  [ranking[0], ranking[1]] = [ranking[1], ranking[0]]; // d06 and d07 tie at 0.7: d06 must come first
  fs.writeFileSync(path.join(dir, 'ties.json'), JSON.stringify(ties));
  const s = check(path.join(dir, 'ties.json'));
  t.is(s.status, 1, s.stdout + s.stderr);
  t.regex(s.stdout, /crafted q-water: ranking/);
});
