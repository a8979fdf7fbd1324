// The CUDA kernels compile with nvcc alone, for every architecture the addon ships (sm_80, sm_90 and
// sm_90 PTX), without warnings; the standalone kernel check (native/kernels/test_kernels.cu) links
// against them; and CMakeLists.txt builds every kernel file. Machines without a GPU (CI) can run this;
// running the kernels needs one: scripts/device/cuda-check.sh runs test_kernels and compute-sanitizer there.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const KERNELS = path.join(ROOT, 'native', 'kernels');
const nvcc = ['nvcc', '/usr/local/cuda/bin/nvcc', '/usr/local/bin/nvcc'].find(
  (candidate) => spawnSync(candidate, ['--version'], { encoding: 'utf8' }).status === 0,
);
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

for (const source of sources) {
  nvccTest(`nvcc compiles native/kernels/${source} for sm_80, sm_90 and PTX without warnings${skipped}`, (t) => {
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
