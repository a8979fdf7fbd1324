// What a user does: `npm install coltrast` from the registry tarball, then load a model and embed, from ESM
// and from CommonJS. The tarball is installed into a new project with no compiler on the PATH, offline (npm's
// cache holds the dependencies since this checkout's `npm ci`), so it must run on the CPU prebuild that
// `npm run make-prebuild` (scripts/setup.sh) put in prebuilds/.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';
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
    'node_modules/coltrast': { version: pkg.version, resolved: `file:${tarball}`, integrity, dependencies: pkg.dependencies, bin: pkg.bin, hasInstallScript: true, license: pkg.license },
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

/** An asynchronous spawn (a build takes minutes; the test worker stays responsive). */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

interface Packed {
  dir: string;
  tarball: string;
  size: number;
  unpackedSize: number;
  files: string[];
}
let packing: Promise<Packed> | undefined;
/** `npm pack` once for the tests of this file. */
function pack(): Promise<Packed> {
  packing ??= (async () => {
    const dir = tempDir();
    const r = await run(process.execPath, [npmCli, 'pack', '--json', '--pack-destination', dir], { cwd: root });
    if (r.status !== 0) throw new Error(`npm pack failed: ${r.stderr}`);
    const info = JSON.parse(r.stdout)[0] as { filename: string; size: number; unpackedSize: number; files: { path: string }[] };
    return { dir, tarball: path.join(dir, info.filename), size: info.size, unpackedSize: info.unpackedSize, files: info.files.map((f) => f.path) };
  })();
  return packing;
}

/** A new project with the tarball installed by `npm ci --offline` under `env`. */
async function install(t: ExecutionContext, packed: Packed, env: NodeJS.ProcessEnv): Promise<string> {
  const user = fs.mkdtempSync(path.join(packed.dir, 'user-'));
  project(user, packed.tarball);
  const r = await run(process.execPath, [npmCli, 'ci', '--offline', '--no-audit', '--no-fund'], { cwd: user, env });
  t.is(r.status, 0, r.stderr);
  fs.writeFileSync(path.join(user, 'use.mjs'), USE_MJS);
  fs.writeFileSync(path.join(user, 'use.cjs'), USE_CJS);
  return user;
}

const cache = () => process.env.npm_config_cache ?? path.join(process.env.HOME ?? '/root', '.npm');

test('npm pack, install the tarball offline with no compiler, embed from .mjs and .cjs on the CPU prebuild', async (t) => {
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const cpu = fs.existsSync(prebuilds) ? fs.readdirSync(prebuilds).filter((v) => v.startsWith('cpu-') && fs.existsSync(path.join(prebuilds, v, 'prebuild.json'))) : [];
  t.true(cpu.length > 0, `no CPU prebuild in ${prebuilds}: run npm run make-prebuild (scripts/setup.sh does)`);
  if (cpu.length === 0) return;

  const info = await pack();
  const files = info.files;
  t.log(`tarball ${path.basename(info.tarball)}: ${(info.size / 1e6).toFixed(1)} MB packed, ${(info.unpackedSize / 1e6).toFixed(1)} MB unpacked, ${files.length} files`);
  t.deepEqual(files.filter((f) => /^(test|build|models|scripts\/(pretrain|bench|fixtures|device))\//.test(f)), [], 'no tests, fixtures, build trees or dev scripts');
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', `prebuilds/${process.platform}-${process.arch}/${cpu[0]}/coltrast.node`, 'default-model/model.safetensors', 'scripts/build-native.js']) {
    t.true(files.includes(f), `the tarball holds ${f}`);
  }
  t.true(info.size < 40e6, `the tarball stays small (${info.size} bytes)`);

  const env: NodeJS.ProcessEnv = { ...process.env, PATH: bareBin(fs.mkdtempSync(path.join(info.dir, 'bin-'))), npm_config_cache: cache() };
  delete env.COLTRAST_BINARY;
  // npm 11 does not run a dependency's install script until the user allows it: coltrast must work without it.
  const user = await install(t, info, env);
  t.false(fs.existsSync(path.join(user, 'node_modules', 'coltrast', 'build')), 'nothing was built');
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

test('no prebuild fits: loading says what to run; the install script builds from source with cmake-js', async (t) => {
  const info = await pack();
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_cache: cache() };
  delete env.COLTRAST_BINARY;
  const user = await install(t, info, env);
  // A machine none of the prebuilds fits (another platform, another libtorch): here, a package without them.
  const pkg = path.join(user, 'node_modules', 'coltrast');
  fs.rmSync(path.join(pkg, 'prebuilds'), { recursive: true, force: true });
  const before = spawnSync(process.execPath, ['use.cjs', FIXTURE], { cwd: user, env, encoding: 'utf8' });
  t.not(before.status, 0);
  t.regex(before.stderr, /coltrast has no native addon that can run here/);
  t.regex(before.stderr, /libtorch found: 1\.13 \(system/);
  t.regex(before.stderr, /npx coltrast build/);
  t.regex(before.stderr, /npm install-scripts approve coltrast && npm rebuild coltrast/);

  // `npx coltrast build` on a machine without CMake or a compiler: it fails, and says where to look.
  const bare = { ...env, PATH: bareBin(fs.mkdtempSync(path.join(info.dir, 'bin-'))) };
  const noTools = await run(process.execPath, [path.join(user, 'node_modules', '.bin', 'coltrast'), 'build'], { cwd: user, env: bare });
  t.not(noTools.status, 0);
  t.regex(noTools.stderr, /native build failed/);

  // The install script, as npm runs it once the user allows it: no prebuild fits, so it builds from source.
  const script = await run(process.execPath, [path.join(pkg, 'scripts', 'install.js')], { cwd: pkg, env });
  t.is(script.status, 0, script.stderr.slice(-3000));
  t.regex(script.stdout, /no prebuilt addon fits this machine; building from source with cmake-js/);
  t.true(fs.existsSync(path.join(pkg, 'build', 'Release', 'coltrast.node')));
  const after = spawnSync(process.execPath, ['use.cjs', FIXTURE], { cwd: user, env, encoding: 'utf8' });
  t.is(after.status, 0, after.stderr);
  const out = JSON.parse(after.stdout);
  t.is(out.binary.kind, 'source');
  t.deepEqual(out.dims, [2, 32]);
});
