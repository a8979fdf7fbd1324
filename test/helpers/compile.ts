/**
 * Compiling the addon's C++ outside CMake, for the checks that a build here cannot make: the CUDA-only
 * code (test/cuda-compile.test.ts) and libtorch 2.x's API (test/torch2-compile.test.ts). Both reuse the
 * addon's own flags from build/cmake/compile_commands.json (written by `npm run build`) and run the
 * compiler with -fsyntax-only.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');
const NATIVE = path.join(ROOT, 'native');
const COMPILE_COMMANDS = path.join(ROOT, 'build', 'cmake', 'compile_commands.json');

export const nvcc = ['nvcc', '/usr/local/cuda/bin/nvcc', '/usr/local/bin/nvcc'].find(
  (candidate) => spawnSync(candidate, ['--version'], { encoding: 'utf8', timeout: 240_000 }).status === 0,
);

/** The CUDA toolkit's include folders, as nvcc passes them to the host compiler. */
export const cudaIncludes = ((): string[] => {
  if (!nvcc) return [];
  const dry = spawnSync(nvcc, ['--dryrun', '-x', 'cu', '-E', '/dev/null', '-o', '/dev/null'], { encoding: 'utf8', timeout: 240_000 });
  const line = `${dry.stdout}\n${dry.stderr}`.split('\n').find((l) => l.includes('INCLUDES='));
  const dirs = line ? [...line.matchAll(/-I"?([^"\s]+)"?/g)].map((m) => m[1]) : [];
  return dirs.filter((dir) => fs.existsSync(path.join(dir, 'cuda_runtime_api.h')));
})();

/** The addon's C++ sources, and whether each is compiled only by a CUDA build (a `_cuda.cc` file) or has
 * code that only a CUDA build compiles (`COLTRAST_WITH_CUDA`). */
export function nativeSources(): { file: string; cudaOnly: boolean; hasCudaCode: boolean }[] {
  const out: { file: string; cudaOnly: boolean; hasCudaCode: boolean }[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.name.endsWith('.cc')) {
        const cudaOnly = entry.name.endsWith('_cuda.cc');
        out.push({ file, cudaOnly, hasCudaCode: cudaOnly || fs.readFileSync(file, 'utf8').includes('COLTRAST_WITH_CUDA') });
      }
    }
  };
  walk(NATIVE);
  return out.sort((a, b) => a.file.localeCompare(b.file));
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

export interface AddonFlags {
  compiler: string;
  /** Every flag of a CPU source of the addon (which all sources share), without output, dependency-file
   * and source arguments. */
  flags: string[];
  /** The folder the compiler runs in. */
  directory: string;
  /** The flags' include folders and the compiler's default ones (Debian's libtorch-dev lives in /usr/include). */
  includeDirs: string[];
}

/** The addon's compile flags, or null when build/cmake/compile_commands.json is missing. */
export function addonFlags(): AddonFlags | null {
  if (!fs.existsSync(COMPILE_COMMANDS)) return null;
  const commands: CompileCommand[] = JSON.parse(fs.readFileSync(COMPILE_COMMANDS, 'utf8'));
  // Every C++ file of the addon has the same flags; a unity build (CMakeLists.txt) lists its batch files
  // (CMakeFiles/coltrast.dir/Unity/unity_<n>_cxx.cxx) instead of the sources.
  const template = commands.find((c) => c.file.endsWith(path.join('native', 'ops', 'autograd.cc')) || /[\\/]Unity[\\/]unity_\d+_cxx\.cxx$/.test(c.file));
  if (!template) return null;
  const argv = template.arguments ?? shellWords(template.command ?? '');
  const flags: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    if (['-o', '-MF', '-MT', '-MQ'].includes(argv[i])) i++;
    else if (argv[i] === '-c' || argv[i] === '-MD' || argv[i] === template.file) continue;
    else flags.push(argv[i]);
  }
  const includeDirs = [
    ...argv.flatMap((a, i) => (argv[i - 1] === '-isystem' ? [a] : a.startsWith('-I') && a.length > 2 ? [a.slice(2)] : [])),
    '/usr/local/include',
    '/usr/include',
  ].map((dir) => path.resolve(template.directory, dir));
  return { compiler: argv[0], flags, directory: template.directory, includeDirs };
}

/** The flags a CUDA build adds to the addon's C++ (CMakeLists.txt, "CUDA kernels"). */
export const CUDA_DEFINES = ['-DCOLTRAST_WITH_CUDA', '-DCOLTRAST_CUDA_ARCHS="80-real,90-real,90-virtual"'];

// One compiler at a time per test file (AVA runs a file per core; each compile parses libtorch's headers, ~1 GB),
// run asynchronously so that each test's result reaches AVA as it ends: synchronous compiles would hold them all
// back until the last, and a file of thirty (~300 s) would trip AVA's timeout with nothing reported.
let compiles: Promise<unknown> = Promise.resolve();

/** Runs the addon's compiler on `source` with `flags` (built from addon.flags), syntax only, warnings as errors. */
export function syntaxCheck(addon: AddonFlags, flags: string[], source: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const run = () =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(addon.compiler, [...flags, '-Werror', '-fsyntax-only', source], { cwd: addon.directory });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  const result = compiles.then(run, run);
  compiles = result.catch(() => undefined);
  return result;
}

/** The newest modification time among the addon's sources: every file of native/, and CMakeLists.txt. */
export function newestSource(): number {
  let newest = fs.statSync(path.join(ROOT, 'CMakeLists.txt')).mtimeMs;
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else newest = Math.max(newest, fs.statSync(file).mtimeMs);
    }
  };
  walk(NATIVE);
  return newest;
}

/** Whether `file` exists and was written after the last change to the addon's sources. */
export function builtFromCurrentSources(file: string): boolean {
  return fs.existsSync(file) && fs.statSync(file).mtimeMs > newestSource();
}

/**
 * The CUDA addon scripts/check-cuda-build.sh made (build/cuda-check/coltrast.node), when it was built from the
 * current sources with nvcc's warnings as errors (-Werror all-warnings in its CMAKE_CUDA_FLAGS): a real build of
 * what the CUDA compile checks check, which they then skip saying so (.ci/run runs that script before the tests).
 */
export function freshCudaBuild(): string | undefined {
  const addon = path.join(ROOT, 'build', 'cuda-check', 'coltrast.node');
  const cache = path.join(ROOT, 'build', 'cmake-cuda-check', 'CMakeCache.txt');
  if (!builtFromCurrentSources(addon) || !fs.existsSync(cache)) return undefined;
  const flags = /^CMAKE_CUDA_FLAGS:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'))?.[1] ?? '';
  return flags.includes('-Werror all-warnings') ? path.relative(ROOT, addon) : undefined;
}
