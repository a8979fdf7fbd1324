// The compiled package serves both module systems: `import { Encoder } from 'coltrast'` and
// `require('coltrast')`. Runs the built dist/ (npm test builds it first) in fresh Node processes.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURE, tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');

function runScript(name: string, source: string): unknown {
  const dir = tempDir();
  // A node_modules/coltrast link, as an installed package would be found.
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'coltrast'), 'dir');
  fs.writeFileSync(path.join(dir, name), source);
  return JSON.parse(execFileSync(process.execPath, [path.join(dir, name)], { cwd: dir, encoding: 'utf8' }));
}

const body = (load: string) => `${load}
(async () => {
  const enc = await Encoder.load(${JSON.stringify(FIXTURE)}, { device: 'cpu' });
  const e = await enc.embed(['hello world']);
  console.log(JSON.stringify({ dims: e.dims, isError: new ColtrastError('NATIVE', 'x') instanceof Error }));
  enc.dispose();
})();`;

test('ESM import works', (t) => {
  const out = runScript('use.mjs', body("import { Encoder, ColtrastError } from 'coltrast';"));
  t.deepEqual(out, { dims: [1, 32], isError: true });
});

test('CommonJS require works', (t) => {
  const out = runScript('use.cjs', body("const { Encoder, ColtrastError } = require('coltrast');"));
  t.deepEqual(out, { dims: [1, 32], isError: true });
});

test('type declarations are emitted', (t) => {
  const dts = fs.readFileSync(path.join(root, 'dist', 'index.d.ts'), 'utf8');
  t.regex(dts, /Encoder/);
  t.true(fs.existsSync(path.join(root, 'dist', 'encoder.d.ts')));
});

test('the coltrast command (package.json bin) is executable after the build', (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'package.json'), 'utf8'));
  const cli = path.resolve(__dirname, '..', pkg.bin.coltrast);
  t.true(fs.existsSync(cli), cli);
  t.true((fs.statSync(cli).mode & 0o111) !== 0, `${cli} is not executable`);
  t.regex(fs.readFileSync(cli, 'utf8'), /^#!\/usr\/bin\/env node\n/);
});
