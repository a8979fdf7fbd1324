// The addon builds against Debian 12's libtorch 1.13 here and against PyTorch 2.x's libtorch on the GPU
// machine; their C++ APIs differ (torch::optim's state keys, autocast, allocators). This compiles every
// addon source against a libtorch 2.x's headers (with CUDA: Debian 13's libtorch-cuda-dev, fetched by
// scripts/fetch-torch2-headers.sh, which scripts/setup.sh runs), syntax only, with the addon's own flags,
// so a change that would break the 2.x build is seen on every machine, not first on a lent GPU.
// Sources with CUDA code are checked a second time as a CUDA build compiles them. Where a CPU prebuild was
// compiled against a libtorch 2.x after the last change to the native sources (scripts/setup.sh makes one when
// it can, so CI has it), that real build stands for the syntax checks without CUDA, which then skip saying so
// (its libtorch, PyTorch's 2.13 here, is nearer the GPU machine's than Debian 13's 2.6 headers are). Likewise
// the CUDA variants, where scripts/check-cuda-build.sh built the CUDA addon from the current sources against a
// CUDA PyTorch 2.x (.ci/run runs it before the tests).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { addonFlags, builtFromCurrentSources, CUDA_DEFINES, cudaIncludes, freshCudaBuild, nativeSources, ROOT, syntaxCheck } from './helpers/compile';

const HEADERS = path.resolve(process.env.COLTRAST_TORCH2_HEADERS ?? path.join(ROOT, 'build', 'torch2-headers', 'include'));
const VERSION_H = path.join(HEADERS, 'torch', 'csrc', 'api', 'include', 'torch', 'version.h');
const addon = addonFlags();
const skip = !fs.existsSync(VERSION_H)
  ? `no libtorch 2.x headers at ${HEADERS}: run \`bash scripts/fetch-torch2-headers.sh\` (or set COLTRAST_TORCH2_HEADERS)`
  : !addon
    ? 'build/cmake/compile_commands.json is missing: run `npm run build` first'
    : '';
const check = skip ? test.skip : test;
const skipped = skip ? ` [skipped: ${skip}]` : '';

/** A cpu-torch2.x prebuild newer than every file of native/ and CMakeLists.txt, if there is one. */
function freshTorch2Prebuild(): string | undefined {
  const base = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!fs.existsSync(base)) return undefined;
  const fresh = fs
    .readdirSync(base)
    .filter((d) => /^cpu-torch2\./.test(d))
    .find((d) => builtFromCurrentSources(path.join(base, d, 'coltrast.node')));
  return fresh && path.relative(ROOT, path.join(base, fresh));
}
const prebuilt = freshTorch2Prebuild();
const builtSkip = prebuilt
  ? ` [skipped: ${prebuilt} was compiled from these sources against libtorch ${prebuilt.split('cpu-torch')[1]}, a real build of what this checks]`
  : '';

function torchVersion(): number[] {
  // Newer layouts (2.13 and later) keep the numbers in torch/headeronly/version.h, which version.h includes.
  const headerOnly = path.join(HEADERS, 'torch', 'headeronly', 'version.h');
  const text = fs.readFileSync(VERSION_H, 'utf8') + (fs.existsSync(headerOnly) ? fs.readFileSync(headerOnly, 'utf8') : '');
  return ['MAJOR', 'MINOR'].map((part) => Number(new RegExp(`#define TORCH_VERSION_${part} (\\d+)`).exec(text)?.[1]));
}

// The addon's flags with its libtorch's include folders swapped for the 2.x ones. The 1.13 headers stay
// reachable through the compiler's default /usr/include (Debian's libtorch-dev installs there), so each
// compile lists the headers it opened (-H) and the test fails if any libtorch header came from outside
// the 2.x tree: a header 2.x removed would otherwise be found silently in 1.13.
const LIBTORCH_DIRS = ['ATen', 'c10', 'caffe2', 'torch'];
function torch2Flags(): string[] {
  const flags: string[] = [];
  const a = addon!.flags;
  const isTorchDir = (dir: string) =>
    dir.includes(path.join('torch', 'csrc', 'api', 'include')) || fs.existsSync(path.join(path.resolve(addon!.directory, dir), 'ATen', 'ATen.h'));
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '-isystem' && isTorchDir(a[i + 1])) i++;
    else if (a[i].startsWith('-I') && a[i].length > 2 && isTorchDir(a[i].slice(2))) continue;
    else flags.push(a[i]);
  }
  return [...flags, '-isystem', path.join(HEADERS, 'torch', 'csrc', 'api', 'include'), '-isystem', HEADERS, '-H'];
}
function foreignTorchHeaders(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((line) => /^\.+ /.test(line))
    .map((line) => path.resolve(addon!.directory, line.replace(/^\.+ /, '')))
    .filter((header) => !header.startsWith(HEADERS + path.sep))
    .filter((header) => LIBTORCH_DIRS.some((dir) => header.includes(`${path.sep}${dir}${path.sep}`)))
    .filter((header) => !header.startsWith(path.join(ROOT, 'native') + path.sep));
}
// -H writes the header list to stderr; the compiler's diagnostics are the other lines.
function diagnostics(stderr: string): string {
  return stderr
    .split('\n')
    .filter((line) => !/^\.+ /.test(line) && !line.startsWith('Multiple include guards may be useful for:') && !/^\/\S+\.h$/.test(line))
    .join('\n');
}

check(`the headers are libtorch 2.x${skipped}`, (t) => {
  const [major, minor] = torchVersion();
  t.true(major >= 2, `TORCH_VERSION ${major}.${minor} in ${VERSION_H}`);
  t.log(`libtorch ${major}.${minor} headers (${fs.existsSync(path.join(HEADERS, '..', 'SOURCE')) ? fs.readFileSync(path.join(HEADERS, '..', 'SOURCE'), 'utf8').trim() : HEADERS})`);
});

const cudaBuild = freshCudaBuild();
const cudaSkip =
  cudaIncludes.length === 0
    ? ' [skipped: the CUDA toolkit headers (cuda_runtime_api.h) were not found: install nvcc]'
    : cudaBuild
      ? ` [skipped: ${cudaBuild} was compiled from these sources with COLTRAST_WITH_CUDA against a CUDA libtorch 2.x (scripts/check-cuda-build.sh), a real build of what this checks]`
      : '';
for (const { file, cudaOnly, hasCudaCode } of nativeSources()) {
  const rel = path.relative(ROOT, file);
  const variants: [string, string[], string][] = [];
  if (!cudaOnly) variants.push(['', [], builtSkip]);
  if (hasCudaCode) variants.push([' with COLTRAST_WITH_CUDA', [...CUDA_DEFINES, ...cudaIncludes.flatMap((dir) => ['-isystem', dir])], cudaSkip]);
  for (const [what, extra, extraSkip] of variants) {
    (skip || extraSkip ? test.skip : test)(`${rel} compiles against libtorch 2.x${what} (syntax only)${skipped || extraSkip}`, async (t) => {
      const result = await syntaxCheck(addon!, [...torch2Flags(), ...extra], file);
      t.is(result.status, 0, `${result.stdout}\n${diagnostics(result.stderr)}`);
      t.deepEqual(foreignTorchHeaders(result.stderr), [], 'libtorch headers found outside the 2.x tree');
    });
  }
}
