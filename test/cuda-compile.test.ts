// The CUDA kernels compile with nvcc alone, for every architecture the addon ships (sm_80, sm_90 and
// sm_90 PTX), without warnings; the standalone kernel check (native/kernels/test_kernels.cu) links
// against them; and CMakeLists.txt builds every kernel file. Machines without a GPU (CI) can run this;
// running the kernels needs one: scripts/device/cuda-check.sh runs test_kernels and compute-sanitizer there.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addonFlags, CUDA_DEFINES, cudaIncludes, freshCudaBuild, nativeSources, nvcc, ROOT, syntaxCheck } from './helpers/compile';
import { tempDir } from './helpers/fixture';

const KERNELS = path.join(ROOT, 'native', 'kernels');
const skipped = nvcc ? '' : ' [skipped: nvcc not found]';
const nvccTest = nvcc ? test : test.skip;
const sources = fs.readdirSync(KERNELS).filter((f) => f.endsWith('.cu'));
// The standalone check has a main(); every other .cu file is part of the addon.
const STANDALONE = 'test_kernels.cu';
const COMMON = ['--std=c++17', '-O3', '-Werror', 'all-warnings'];

function run(args: string[]) {
  return spawnSync(nvcc!, args, { encoding: 'utf8', cwd: ROOT });
}

test('there are kernels to compile', (t) => {
  t.true(sources.includes('maxsim.cu') && sources.includes('contrastive.cu'), sources.join(', '));
});

test('CMakeLists.txt builds every kernel file', (t) => {
  const cmake = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
  for (const source of sources.filter((s) => s !== STANDALONE)) {
    t.true(cmake.includes(`native/kernels/${source}`), `native/kernels/${source} is missing from CMakeLists.txt`);
  }
  t.false(cmake.includes(`native/kernels/${STANDALONE}`), `${STANDALONE} has a main() and is not part of the addon`);
});

// Where scripts/check-cuda-build.sh built the CUDA addon from the current sources (.ci/run runs it before the
// tests), CMake compiled the addon's kernel files with the same architectures and nvcc's warnings as errors, and
// the CUDA-only C++ against a CUDA libtorch 2.x: that real build stands for those checks, which then skip saying so.
const cudaBuild = freshCudaBuild();
const builtReason = (what: string) =>
  cudaBuild ? `${cudaBuild} was built from these sources by scripts/check-cuda-build.sh, ${what}, a real build of what this checks` : '';

for (const source of sources) {
  const built = source === STANDALONE ? '' : builtReason('its kernels for the same architectures with -Werror all-warnings');
  (built ? test.skip : nvccTest)(`nvcc compiles native/kernels/${source} for sm_80, sm_90 and PTX without warnings${skipped || (built && ` [skipped: ${built}]`)}`, (t) => {
    const out = path.join(tempDir(), `${source}.o`);
    const result = run([
      ...COMMON,
      '-gencode',
      'arch=compute_80,code=sm_80',
      '-gencode',
      'arch=compute_90,code=sm_90',
      '-gencode',
      'arch=compute_90,code=compute_90',
      '-c',
      path.join(KERNELS, source),
      '-o',
      out,
    ]);
    t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
    t.true(fs.statSync(out).size > 0);
  });
}

nvccTest(`the standalone kernel check links against the kernels${skipped}`, (t) => {
  const out = path.join(tempDir(), 'test_kernels');
  // One architecture is enough to resolve the symbols; the per-file tests cover both.
  const result = run([
    ...COMMON,
    '-gencode',
    'arch=compute_90,code=sm_90',
    '-o',
    out,
    ...sources.map((s) => path.join(KERNELS, s)),
  ]);
  t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
  t.true(fs.statSync(out).size > 0);
});

// The C++ that only a CUDA build compiles (native/ops/*_cuda.cc and every `#ifdef COLTRAST_WITH_CUDA`
// branch) is checked here too, so a change that breaks it is seen before a GPU machine is lent: each such
// file goes through the compiler with the addon's own flags (build/cmake/compile_commands.json, written by
// `npm run build`), COLTRAST_WITH_CUDA defined and the CUDA toolkit's headers, as -fsyntax-only (there is
// no CUDA libtorch to link against). Debian's libtorch ships the c10/cuda headers but not the one header
// its CUDA build generates (c10/cuda/impl/cuda_cmake_macros.h); the check supplies that one, with the
// content PyTorch's CMake writes for a shared-library build.
const addon = addonFlags();
const syntaxSkip = !nvcc
  ? 'nvcc not found'
  : cudaBuild
    ? builtReason('this C++ with COLTRAST_WITH_CUDA against a CUDA libtorch 2.x')
    : cudaIncludes.length === 0
      ? 'the CUDA toolkit headers (cuda_runtime_api.h) were not found next to nvcc'
      : !addon
        ? 'build/cmake/compile_commands.json is missing: run `npm run build` first'
        : !addon.includeDirs.some((dir) => fs.existsSync(path.join(dir, 'c10', 'cuda', 'CUDAStream.h')))
          ? "this libtorch's headers have no c10/cuda"
          : '';
const syntaxTest = syntaxSkip ? test.skip : test;
const cudaSources = nativeSources().filter((s) => s.hasCudaCode);

test('there is CUDA-only C++ to check', (t) => {
  const sources = cudaSources.map((s) => path.relative(ROOT, s.file));
  for (const expected of ['native/ops/maxsim_cuda.cc', 'native/ops/contrastive_cuda.cc', 'native/runtime.cc']) {
    t.true(sources.includes(expected), `${expected} not among ${sources.join(', ')}`);
  }
});

for (const { file } of cudaSources) {
  const rel = path.relative(ROOT, file);
  syntaxTest(`${rel} compiles with COLTRAST_WITH_CUDA (syntax only, the addon's flags)${syntaxSkip ? ` [skipped: ${syntaxSkip}]` : ''}`, async (t) => {
    const shim = tempDir();
    fs.mkdirSync(path.join(shim, 'c10', 'cuda', 'impl'), { recursive: true });
    fs.writeFileSync(path.join(shim, 'c10', 'cuda', 'impl', 'cuda_cmake_macros.h'), '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n');
    const result = await syntaxCheck(
      addon!,
      [
        ...addon!.flags,
        ...CUDA_DEFINES,
        ...cudaIncludes.flatMap((dir) => ['-isystem', dir]),
        // After libtorch's own include folders, so a CUDA libtorch's generated header wins where it exists.
        '-idirafter',
        shim,
      ],
      file,
    );
    t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
  });
}
