// What a user does: `npm install coltrast` from the registry tarball, then load a model and embed, from ESM
// and from CommonJS. The tarball is installed into a new project with no compiler on the PATH, offline (npm's
// cache holds the dependencies since this checkout's `npm ci`), so it must run on the CPU prebuild that
// `npm run make-prebuild` (scripts/setup.sh) put in prebuilds/.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Encoder } from '../lib';
import { FIXTURE, tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');
const npmCli = path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

/** A folder with node and sh only: no cc, c++, cmake, make or python. */
function bareBin(dir: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(fs.realpathSync(process.execPath), path.join(bin, 'node'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  return bin;
}

/** A project whose lock names the tarball and coltrast's runtime dependencies as this checkout's lock has them. */
function project(dir: string, tarball: string): void {
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tarball)).digest('base64')}`;
  const packages: Record<string, unknown> = {
    '': { name: 'user-project', version: '1.0.0', dependencies: { coltrast: `file:${tarball}` } },
    'node_modules/coltrast': { version: pkg.version, resolved: `file:${tarball}`, integrity, dependencies: pkg.dependencies, hasInstallScript: true, license: pkg.license },
  };
  for (const [key, value] of Object.entries(lock.packages as Record<string, { dev?: boolean; devOptional?: boolean }>)) {
    if (key && !value.dev && !value.devOptional) packages[key] = value;
  }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', private: true, dependencies: { coltrast: `file:${tarball}` } }));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', lockfileVersion: 3, requires: true, packages }));
}

const USE_MJS = `import { Encoder, runtimeInfo } from 'coltrast';
const enc = await Encoder.load(process.argv[2], { device: 'cpu' });
const e = await enc.embed(['a first text', 'and a second one']);
console.log(JSON.stringify({ dims: e.dims, data: Array.from(e.data), binary: runtimeInfo().binary }));
enc.dispose();
`;
const USE_CJS = `const { Encoder, runtimeInfo } = require('coltrast');
(async () => {
  const enc = await Encoder.load(process.argv[2], { device: 'cpu' });
  const e = await enc.embed(['a first text', 'and a second one']);
  console.log(JSON.stringify({ dims: e.dims, data: Array.from(e.data), binary: runtimeInfo().binary }));
  enc.dispose();
})();
`;

test('npm pack, install the tarball offline with no compiler, embed from .mjs and .cjs on the CPU prebuild', async (t) => {
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const cpu = fs.existsSync(prebuilds) ? fs.readdirSync(prebuilds).filter((v) => v.startsWith('cpu-') && fs.existsSync(path.join(prebuilds, v, 'prebuild.json'))) : [];
  t.true(cpu.length > 0, `no CPU prebuild in ${prebuilds}: run npm run make-prebuild (scripts/setup.sh does)`);
  if (cpu.length === 0) return;

  const dir = tempDir();
  const packed = spawnSync(process.execPath, [npmCli, 'pack', '--json', '--pack-destination', dir], { cwd: root, encoding: 'utf8' });
  t.is(packed.status, 0, packed.stderr);
  const info = JSON.parse(packed.stdout)[0] as { filename: string; size: number; unpackedSize: number; files: { path: string }[] };
  const files = info.files.map((f) => f.path);
  t.log(`tarball ${info.filename}: ${(info.size / 1e6).toFixed(1)} MB packed, ${(info.unpackedSize / 1e6).toFixed(1)} MB unpacked, ${files.length} files`);
  t.deepEqual(files.filter((f) => /^(test|build|models|scripts\/(pretrain|bench|fixtures|device))\//.test(f)), [], 'no tests, fixtures, build trees or dev scripts');
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', `prebuilds/${process.platform}-${process.arch}/${cpu[0]}/coltrast.node`, 'default-model/model.safetensors', 'scripts/build-native.js']) {
    t.true(files.includes(f), `the tarball holds ${f}`);
  }
  t.true(info.size < 40e6, `the tarball stays small (${info.size} bytes)`);

  const user = path.join(dir, 'user');
  fs.mkdirSync(user);
  project(user, path.join(dir, info.filename));
  const env = { ...process.env, PATH: bareBin(dir), npm_config_cache: process.env.npm_config_cache ?? path.join(process.env.HOME ?? '/root', '.npm') };
  delete env.COLTRAST_BINARY;
  // npm 11 does not run a dependency's install script until the user allows it: coltrast must work without it.
  const install = spawnSync(process.execPath, [npmCli, 'ci', '--offline', '--no-audit', '--no-fund'], { cwd: user, env, encoding: 'utf8' });
  t.is(install.status, 0, install.stderr);
  t.false(fs.existsSync(path.join(user, 'node_modules', 'coltrast', 'build')), 'nothing was built');

  fs.writeFileSync(path.join(user, 'use.mjs'), USE_MJS);
  fs.writeFileSync(path.join(user, 'use.cjs'), USE_CJS);
  const expected = await Encoder.load(FIXTURE, { device: 'cpu' });
  const want = await expected.embed(['a first text', 'and a second one']);
  expected.dispose();
  for (const script of ['use.mjs', 'use.cjs']) {
    const run = spawnSync(process.execPath, [script, FIXTURE], { cwd: user, env, encoding: 'utf8' });
    t.is(run.status, 0, `${script}: ${run.stderr}`);
    const out = JSON.parse(run.stdout);
    t.deepEqual(out.dims, want.dims, script);
    t.true(out.data.every((x: number, i: number) => Math.abs(x - want.data[i]) < 1e-5), `${script}: the same embeddings as this checkout`);
    t.is(out.binary.kind, 'prebuild', script);
    t.is(out.binary.variant, cpu[0], script);
  }
  // The shipped default model, from the installed package.
  const dflt = spawnSync(process.execPath, ['use.mjs', 'default'], { cwd: user, env, encoding: 'utf8' });
  t.is(dflt.status, 0, dflt.stderr);
  t.deepEqual(JSON.parse(dflt.stdout).dims.length, 2);

  // A user who allows the install script: it finds the prebuild and compiles nothing (there is no compiler).
  const script = spawnSync(process.execPath, [path.join(user, 'node_modules', 'coltrast', 'scripts', 'install.js')], { cwd: user, env, encoding: 'utf8' });
  t.is(script.status, 0, script.stderr);
  t.regex(script.stdout, new RegExp(`coltrast: using prebuild ${cpu[0]}`));
});
