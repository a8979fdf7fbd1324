// `coltrast bench` (scripts/bench/run.js): each suite in its own process, its JSON, one Markdown table and an
// SVG chart per suite; here only the index suite at its quick size, to keep the test short.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir } from './helpers/fixture';

const cli = path.resolve(__dirname, '..', 'lib', 'cli.ts');

test('coltrast bench --quick runs a suite and writes JSON, a Markdown table and a chart', (t) => {
  const out = path.join(tempDir(), 'bench');
  const run = spawnSync(process.execPath, ['--import', 'tsx', cli, 'bench', '--quick', '--suites', 'index', '--out', out], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, run.stderr);
  const results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  t.deepEqual(results.failures, []);
  t.is(results.results.length, 1);
  const [index] = results.results;
  t.is(index.suite, 'index');
  t.regex(index.command, /^node scripts\/bench\/index\.js --rows 100000 --dim 384 --storage float16 --json /);
  t.deepEqual(index.result.rows.map((r: { batch: number }) => r.batch), [1, 32]);
  t.true(index.result.rows.every((r: { queriesPerSecond: number }) => r.queriesPerSecond > 0));
  const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
  t.regex(md, /## index on cpu/);
  t.regex(md, /\| rows \| dim \| storage \| batch \| latencyMs \| queriesPerSecond \|/);
  const svg = fs.readFileSync(path.join(out, 'index-cpu.svg'), 'utf8');
  t.regex(svg, /^<svg /);
  t.is((svg.match(/<rect x="230"/g) ?? []).length, 2, 'one bar per row');
});

test('coltrast bench refuses an unknown suite with exit 2', (t) => {
  const run = spawnSync(process.execPath, ['--import', 'tsx', cli, 'bench', '--suites', 'nope', '--out', tempDir()], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 2);
  t.regex(run.stderr, /unknown suite 'nope' \(ops, embed, train, index, multivector, crossencoder, decoder, encoders, generator, serve, python, parity\)/);
});
