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

// The C++ that only a CUDA build compiles (native/ops/*_cuda.cc and every `#ifdef COLTRAST_WITH_CUDA`
// branch) is checked here too, so a change that breaks it is seen before a GPU machine is lent: each such
// file goes through the compiler with the addon's own flags (build/cmake/compile_commands.json, written by
// `npm run build`), COLTRAST_WITH_CUDA defined and the CUDA toolkit's headers, as -fsyntax-only (there is
// no CUDA libtorch to link against). Debian's libtorch ships the c10/cuda headers but not the one header
// its CUDA build generates (c10/cuda/impl/cuda_cmake_macros.h); the check supplies that one, with the
// content PyTorch's CMake writes for a shared-library build.
const NATIVE = path.join(ROOT, 'native');
const COMPILE_COMMANDS = path.join(ROOT, 'build', 'cmake', 'compile_commands.json');
function cudaIncludeDirs(): string[] {
  if (!nvcc) return [];
  const dry = spawnSync(nvcc, ['--dryrun', '-x', 'cu', '-E', '/dev/null', '-o', '/dev/null'], { encoding: 'utf8' });
  const line = `${dry.stdout}\n${dry.stderr}`.split('\n').find((l) => l.includes('INCLUDES='));
  return line ? [...line.matchAll(/-I"?([^"\s]+)"?/g)].map((m) => m[1]) : [];
}
const cudaIncludes = cudaIncludeDirs().filter((dir) => fs.existsSync(path.join(dir, 'cuda_runtime_api.h')));
function cudaOnlySources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.name.endsWith('.cc') && (entry.name.endsWith('_cuda.cc') || fs.readFileSync(file, 'utf8').includes('COLTRAST_WITH_CUDA'))) out.push(file);
    }
  };
  walk(NATIVE);
  return out.sort();
}
type CompileCommand = { directory: string; file: string; command?: string; arguments?: string[] };
// A compile_commands.json "command" is a shell command line: split it as POSIX sh does (quotes, backslashes).
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\') {
      word = (word ?? '') + (line[++i] ?? '');
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      word = word ?? '';
      for (i++; i < line.length && line[i] !== '"'; i++) word += line[i] === '\\' && '"\\$`'.includes(line[i + 1]) ? line[++i] : line[i];
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== null) words.push(word);
  return words;
}
const commands: CompileCommand[] = fs.existsSync(COMPILE_COMMANDS) ? JSON.parse(fs.readFileSync(COMPILE_COMMANDS, 'utf8')) : [];
// The flags of a CPU source of the addon, which every source shares.
const template = commands.find((c) => c.file.endsWith(path.join('native', 'ops', 'autograd.cc')));
const argv = template ? (template.arguments ?? shellWords(template.command ?? '')) : [];
// The flags' include folders and the compiler's default ones (Debian's libtorch-dev lives in /usr/include).
const includeDirs = [
  ...argv.flatMap((a, i) => (argv[i - 1] === '-isystem' ? [a] : a.startsWith('-I') && a.length > 2 ? [a.slice(2)] : [])),
  '/usr/local/include',
  '/usr/include',
];
const syntaxSkip = !nvcc
  ? 'nvcc not found'
  : cudaIncludes.length === 0
    ? 'the CUDA toolkit headers (cuda_runtime_api.h) were not found next to nvcc'
    : !template
      ? 'build/cmake/compile_commands.json is missing: run `npm run build` first'
      : !includeDirs.some((dir) => fs.existsSync(path.join(path.resolve(template.directory, dir), 'c10', 'cuda', 'CUDAStream.h')))
        ? "this libtorch's headers have no c10/cuda"
        : '';
const syntaxTest = syntaxSkip ? test.skip : test;

test('there is CUDA-only C++ to check', (t) => {
  const sources = cudaOnlySources().map((f) => path.relative(ROOT, f));
  for (const expected of ['native/ops/maxsim_cuda.cc', 'native/ops/contrastive_cuda.cc', 'native/runtime.cc']) {
    t.true(sources.includes(expected), `${expected} not among ${sources.join(', ')}`);
  }
});

for (const source of cudaOnlySources()) {
  const rel = path.relative(ROOT, source);
  syntaxTest(`${rel} compiles with COLTRAST_WITH_CUDA (syntax only, the addon's flags)${syntaxSkip ? ` [skipped: ${syntaxSkip}]` : ''}`, (t) => {
    // Drop the output, dependency-file and source arguments; keep the compiler and every flag.
    const flags: string[] = [];
    for (let i = 1; i < argv.length; i++) {
      if (['-o', '-MF', '-MT', '-MQ'].includes(argv[i])) i++;
      else if (argv[i] === '-c' || argv[i] === '-MD' || argv[i] === template!.file) continue;
      else flags.push(argv[i]);
    }
    const shim = tempDir();
    fs.mkdirSync(path.join(shim, 'c10', 'cuda', 'impl'), { recursive: true });
    fs.writeFileSync(path.join(shim, 'c10', 'cuda', 'impl', 'cuda_cmake_macros.h'), '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n');
    const result = spawnSync(
      argv[0],
      [
        ...flags,
        '-DCOLTRAST_WITH_CUDA',
        '-DCOLTRAST_CUDA_ARCHS="80-real;90-real;90-virtual"',
        ...cudaIncludes.flatMap((dir) => ['-isystem', dir]),
        // After libtorch's own include folders, so a CUDA libtorch's generated header wins where it exists.
        '-idirafter',
        shim,
        '-Werror',
        '-fsyntax-only',
        source,
      ],
      { encoding: 'utf8', cwd: template!.directory },
    );
    t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
  });
}
