#!/usr/bin/env node
// Makes a prebuilt addon for the libtorch this machine builds against (the build's search order: LIBTORCH,
// Torch_DIR, a Python torch, Debian's libtorch) and files it where lib/binary.ts looks:
//   prebuilds/<platform>-<arch>/<variant>/coltrast.node   the stripped addon
//   prebuilds/<platform>-<arch>/<variant>/prebuild.json   what it was built against (libtorch version, CUDA
//                                                         version and GPU architectures, C++ ABI, the
//                                                         libtorch/CUDA libraries it needs by soname)
// prebuildify drives the build (Node-API, strip) through scripts/prebuild-node-gyp.js, since it only knows
// how to call node-gyp; the variant folder is ours, because node-gyp-build cannot tell a CPU build from a
// CUDA one, or builds for two libtorch versions, by file name.
//   node scripts/prebuild.js (npm run make-prebuild) [--variant NAME] [-- cmake-js args, e.g. -- --CDCOLTRAST_CUDA=ON]
// Variant names: cpu-torch<major.minor> or cuda<major>-torch<major.minor>. The local build
// (build/Release/coltrast.node) is left as it was (or, when there was none, is this build).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync, execFileSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const own = dash >= 0 ? argv.slice(0, dash) : argv;
const cmakeArgs = dash >= 0 ? argv.slice(dash + 1) : [];
let variant;
for (let i = 0; i < own.length; i++) {
  if (own[i] === '--variant' && own[i + 1]) variant = own[++i];
  else {
    console.error(`prebuild: unknown argument ${own[i]}\nusage: node scripts/prebuild.js (npm run make-prebuild) [--variant NAME] [-- cmake-js args]`);
    process.exit(2);
  }
}

const fail = (msg) => {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
};

// One CMake folder per configuration, so that making a CPU and a CUDA prebuild in turn does not recompile
// everything each time (nor leave the local build's folder configured for the other one).
const buildDir = path.join('build', cmakeArgs.length ? `cmake-${cmakeArgs.join('_').replace(/[^A-Za-z0-9=_.-]/g, '')}` : 'cmake');
const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-prebuild-'));
// prebuildify strips build/Release/coltrast.node in place and then moves it away. A running process may have
// that very file mapped (strip rewriting it under a training run kills it with SIGBUS), so the local build
// steps aside first: CMake links a fresh file for prebuildify, and the local build comes back afterwards.
const local = path.join(root, 'build', 'Release', 'coltrast.node');
const aside = path.join(root, 'build', `coltrast.node.aside-${process.pid}`); // same file system: a rename
if (fs.existsSync(local)) fs.renameSync(local, aside);
const prebuildify = require.resolve('prebuildify/bin.js');
const r = spawnSync(
  process.execPath,
  [prebuildify, '--napi', '--strip', '--out', staging, '--node-gyp', path.join(__dirname, 'prebuild-node-gyp.js')],
  { cwd: root, stdio: 'inherit', env: { ...process.env, COLTRAST_PREBUILD_CMAKE_ARGS: JSON.stringify(cmakeArgs), COLTRAST_BUILD_DIR: buildDir } },
);
if (fs.existsSync(aside)) fs.renameSync(aside, local);
if (r.status !== 0) fail('the build failed (see above)');
const platformArch = `${process.platform}-${process.arch}`;
const built = path.join(staging, 'prebuilds', platformArch, 'coltrast.node');
if (!fs.existsSync(built)) fail(`prebuildify left no ${built}`);
if (!fs.existsSync(local)) fs.copyFileSync(built, local); // no earlier local build: this one is it

// What it was built against: the addon itself says (libtorch version, ABI, where libtorch came from) ...
const probe = spawnSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(built)}).runtimeInfo()))`], { encoding: 'utf8' });
if (probe.status !== 0) fail(`the new addon does not load: ${probe.stderr}`);
const info = JSON.parse(probe.stdout);
// ... and its ELF header lists the libraries it needs; those of libtorch and CUDA are found at load time.
const dynamic = execFileSync('readelf', ['-d', built], { encoding: 'utf8' });
const needs = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)]
  .map((m) => m[1])
  .filter((so) => /^lib(c10|torch|cudart|cublas|nvrtc|cuda)/.test(so));
// A build with coltrast's CUDA kernels says so itself (cudaArchs, the CUDA runtime version). A build without
// them against a CUDA libtorch still needs libtorch_cuda (libtorch's CMake config links it unconditionally),
// and its `needs` say so: it then fits CUDA wheels of that torch only.
let cuda = null;
let cudaArchs = null;
if (info.cudaArchs !== undefined) {
  cudaArchs = info.cudaArchs;
  if (!info.cudaRuntimeVersion) fail('a CUDA build, but it reports no CUDA runtime version');
  cuda = `${Math.floor(info.cudaRuntimeVersion / 1000)}.${Math.floor((info.cudaRuntimeVersion % 1000) / 10)}`;
}
const torchSeries = /^(\d+\.\d+)/.exec(info.torchVersion)?.[1];
if (!torchSeries) fail(`unexpected libtorch version '${info.torchVersion}'`);
variant ??= cuda ? `cuda${cuda.split('.')[0]}-torch${torchSeries}` : `cpu-torch${torchSeries}`;
if (!/^[a-z0-9][a-z0-9.-]*$/.test(variant)) fail(`bad variant name '${variant}' (lowercase letters, digits, dots and dashes)`);
const compiler = spawnSync('c++', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? 'unknown';
const manifest = {
  variant,
  platform: process.platform,
  arch: process.arch,
  napi: 8,
  torch: info.torchVersion,
  cuda,
  cudaArchs,
  cxx11Abi: info.cxx11Abi,
  needs,
  built: { torchSource: info.torchSource ?? 'unknown', compiler, node: process.version, date: new Date().toISOString() },
};

// Files into place atomically: a staging folder next to the target, then one rename.
const target = path.join(root, 'prebuilds', platformArch, variant);
fs.mkdirSync(path.dirname(target), { recursive: true });
const tmp = `${target}.tmp-${process.pid}`;
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp);
fs.copyFileSync(built, path.join(tmp, 'coltrast.node'));
fs.writeFileSync(path.join(tmp, 'prebuild.json'), `${JSON.stringify(manifest, null, 2)}\n`);
fs.rmSync(target, { recursive: true, force: true });
fs.renameSync(tmp, target);
fs.rmSync(staging, { recursive: true, force: true });
const size = fs.statSync(path.join(target, 'coltrast.node')).size;
console.log(`prebuild: ${path.relative(root, target)} (${(size / 1e6).toFixed(1)} MB; libtorch ${info.torchVersion}${cuda ? `, CUDA ${cuda} ${cudaArchs}` : ''}; needs ${needs.join(' ')})`);
