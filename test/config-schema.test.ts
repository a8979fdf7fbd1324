// train's config schema (lib/config-schema.ts): Ajv is required and the validator compiled when a config is first
// checked (~0.15 s together), not when the module loads, so `coltrast train --print-schema` and code that imports the
// package or only the schema never pay for it. Child processes (a fresh require.cache each); runs the built modules,
// dist/ (npm run build:ts first).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { checkTrainConfig } from '../lib/config-schema';
import { tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');

/** Runs `script` in a fresh node; it prints one JSON line, returned parsed. */
function child(script: string): any {
  const run = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  if (run.status !== 0) throw new Error(`child exited with ${run.status}:\n${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').pop()!);
}

const AJV_LOADED = `Object.keys(require.cache).some((f) => /[/\\\\]node_modules[/\\\\]ajv[/\\\\]/.test(f))`;

test("the package's entry and the schema module require no Ajv until a config is checked", (t) => {
  const seen = child(`
    const before = ${AJV_LOADED};
    require(${JSON.stringify(DIST)});
    const afterEntry = ${AJV_LOADED};
    const schema = require(${JSON.stringify(path.join(DIST, 'config-schema.js'))});
    const title = schema.TRAIN_CONFIG_SCHEMA.title;
    const afterSchema = ${AJV_LOADED};
    schema.checkTrainConfig({ data: 'x.jsonl', output: 'out' }, 'train.json');
    console.log(JSON.stringify({ before, afterEntry, title, afterSchema, afterCheck: ${AJV_LOADED} }));
  `);
  t.deepEqual(seen, { before: false, afterEntry: false, title: 'coltrast train configuration', afterSchema: false, afterCheck: true });
});

test('train --print-schema prints the schema without requiring Ajv', (t) => {
  const dir = tempDir();
  const report = path.join(dir, 'loaded.json');
  const probe = path.join(dir, 'probe.js');
  fs.writeFileSync(probe, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify(${AJV_LOADED})));`);
  const run = spawnSync(process.execPath, ['--require', probe, path.join(DIST, 'cli.js'), 'train', '--print-schema'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  t.is(run.status, 0, run.stderr);
  t.is(JSON.parse(run.stdout).title, 'coltrast train configuration');
  t.false(JSON.parse(fs.readFileSync(report, 'utf8')), 'ajv was required');
});

test('the validator compiled on first use reports the same problems on every check', (t) => {
  const config = { data: 'x.jsonl', output: 'out', epochs: 0, loss: { temprature: 1 }, schedule: 'step' };
  const message = (value: unknown) => t.throws(() => checkTrainConfig(value, 'train.json'), { code: 'INVALID_ARGUMENT' })?.message;
  const expected =
    'train.json does not match the train configuration schema:\n' +
    '  /epochs: must be >= 1\n' +
    '  /schedule: must be equal to one of the allowed values (linear, cosine, constant)\n' +
    '  /loss: must NOT have additional properties "temprature"';
  t.is(message(config), expected);
  t.notThrows(() => checkTrainConfig({ data: 'x.jsonl', output: 'out' }, 'train.json'));
  t.is(message(config), expected);
  t.is(message([]), 'train.json does not match the train configuration schema:\n  (top level): must be object');
});
