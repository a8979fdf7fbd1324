/**
 * Which native addon to load, and the libtorch it runs on.
 *
 * No libtorch can ship inside an npm package (the CUDA one is gigabytes), so every addon links a libtorch the
 * user already has. This module finds those (the search order of the build: LIBTORCH, Torch_DIR, the
 * libtorch inside a Python torch, Debian's libtorch), reads what each prebuild in
 * `prebuilds/<platform>-<arch>/<variant>/prebuild.json` was built against, and picks:
 *   1. a local build (build/Release, found by node-gyp-build): it was built here, against a libtorch here;
 *   2. else the first libtorch, in search order, that a prebuild fits (same torch major.minor, C++ ABI and
 *      CUDA major; a CUDA prebuild only where there is a GPU), the CUDA prebuild before the CPU one.
 * COLTRAST_BINARY=cpu|cuda|source forces a CPU prebuild, a CUDA prebuild or the local build.
 * node-gyp-build alone cannot do this: it picks a prebuild by file-name tags it knows (platform, arch,
 * runtime, libc) and ignores the rest, so a CPU and a CUDA build, or builds for two libtorch versions, would
 * be indistinguishable to it; hence one folder per variant, chosen here.
 *
 * A prebuild's libtorch is not where the build machine's was, so before loading it the libraries it needs
 * (its manifest lists them) are loaded from the chosen libtorch's folder with RTLD_GLOBAL | RTLD_NODELETE;
 * the dynamic linker then resolves the addon's dependencies to those by soname, and the user never sets
 * LD_LIBRARY_PATH.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { ColtrastError } from './errors';

/** What a prebuild was built against: prebuilds/<platform>-<arch>/<variant>/prebuild.json. */
export interface PrebuildManifest {
  variant: string;
  platform: string;
  arch: string;
  napi: number;
  /** libtorch version it was built against, e.g. "1.13.1" or "2.11.0". */
  torch: string;
  /** CUDA version of that libtorch (major.minor), null for a CPU build. */
  cuda: string | null;
  /** GPU architectures compiled in (CMAKE_CUDA_ARCHITECTURES), null for a CPU build. */
  cudaArchs: string | null;
  cxx11Abi: boolean;
  /** Shared libraries it needs that come with libtorch (or its CUDA runtime), by soname. */
  needs: string[];
  /** Where it was built, for the record (torch source, compiler, date). */
  built: Record<string, string>;
}

export interface Prebuild extends PrebuildManifest {
  dir: string;
  file: string;
}

/** A libtorch installation found on this machine. */
export interface Libtorch {
  /** How it was found: 'LIBTORCH', 'Torch_DIR', 'python' or 'system'. */
  source: 'LIBTORCH' | 'Torch_DIR' | 'python' | 'system';
  /** The folder holding libtorch.so and friends. */
  libDir: string;
  /** Other folders its libraries may come from (a Python torch's CUDA runtime in site-packages/nvidia). */
  extraDirs: string[];
  /** Full version when known ("2.11.0+cu130"), else major.minor. */
  version: string;
  /** CUDA version (major.minor) of a CUDA build, null for CPU, undefined when unknown. */
  cuda: string | null | undefined;
  /** The C++ ABI (_GLIBCXX_USE_CXX11_ABI), undefined when it could not be told. */
  cxx11Abi: boolean | undefined;
}

export interface BinaryChoice {
  kind: 'source' | 'prebuild';
  /** The .node file loaded. */
  file: string;
  variant?: string;
  /** The libtorch a prebuild runs on (a local build uses the one it was built against). */
  libtorch?: Libtorch;
  /** Why this one: one line for `coltrast info`. */
  reason: string;
}

export interface Environment {
  /** COLTRAST_BINARY, LIBTORCH, Torch_DIR, COLTRAST_PYTHON (default: process.env). */
  env: Record<string, string | undefined>;
  /** The package root (holds build/ and prebuilds/). */
  root: string;
  platform: string;
  arch: string;
  /** Whether an NVIDIA GPU and driver are visible. */
  gpu: boolean;
  /** Python torch's folder (site-packages/torch), null when there is none. */
  pythonTorch: () => string | null;
  /** Folders searched for a Debian-style system libtorch. */
  systemLibDirs: string[];
}

const MULTIARCH: Record<string, string> = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' };

export function defaultEnvironment(root: string): Environment {
  return {
    env: process.env,
    root,
    platform: process.platform,
    arch: process.arch,
    gpu: fs.existsSync('/proc/driver/nvidia/version') || fs.existsSync('/dev/nvidia0'),
    pythonTorch: () => findPythonTorch(process.env.COLTRAST_PYTHON || 'python3'),
    systemLibDirs: [`/usr/lib/${MULTIARCH[process.arch] ?? `${process.arch}-linux-gnu`}`, '/usr/lib64', '/usr/lib'],
  };
}

const FIND_TORCH = "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
const PYTHON_TIMEOUT_MS = 10_000;
/** findPythonTorch's answers, by interpreter: asking Python takes ~0.1 s, and the answer is the same for the process. */
const pythonTorchFound = new Map<string, string | null>();

/** site-packages/torch of `python`'s torch, found without importing it (importing torch takes seconds). */
export function findPythonTorch(python: string): string | null {
  if (!pythonTorchFound.has(python)) {
    const r = spawnSync(python, ['-c', FIND_TORCH], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
    pythonTorchFound.set(python, (r.status === 0 && r.stdout.trim()) || null);
  }
  return pythonTorchFound.get(python)!;
}

/**
 * findPythonTorch(python) without holding the event loop; later calls find its answer. The process keeps one
 * answer, the first: a synchronous findPythonTorch answering while this one runs (native() called meanwhile, which
 * may have loaded the addon its answer picks) is not overwritten. An answer cut off by the timeout is asked again
 * synchronously: the timer runs on the event loop, so a loop held for 10 s (a long synchronous computation) fires
 * it late and kills a Python that had answered in time; cached as "no torch", that made a later plan pick another
 * libtorch than the one loaded, whose load crashed the process (SIGBUS, PyTorch 2.13's libtorch beside Debian's 1.13).
 */
export function findPythonTorchAsync(python: string): Promise<string | null> {
  if (pythonTorchFound.has(python)) return Promise.resolve(pythonTorchFound.get(python)!);
  return new Promise((resolve) => {
    const start = Date.now();
    execFile(python, ['-c', FIND_TORCH], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS }, (error, stdout) => {
      if (!pythonTorchFound.has(python)) {
        const answer = (!error && stdout.trim()) || null;
        // The timer fired (a kill by it drops the unread output of a Python that had ended: no error, no answer).
        if (answer === null && Date.now() - start >= PYTHON_TIMEOUT_MS) {
          resolve(findPythonTorch(python));
          return;
        }
        pythonTorchFound.set(python, answer);
      }
      resolve(pythonTorchFound.get(python)!);
    });
  });
}

const majorMinor = (v: string) => /^(\d+)\.(\d+)/.exec(v)?.slice(1, 3).join('.') ?? v;
const cudaMajor = (v: string) => v.split('.')[0];

/** Whether libc10 in `libDir` was built with the C++11 string ABI: its exported names say so. */
function abiOf(libDir: string): boolean | undefined {
  const c10 = fs.readdirSync(libDir).find((f) => /^libc10\.so(\.|$)/.test(f));
  if (!c10) return undefined;
  try {
    const bytes = fs.readFileSync(path.join(libDir, c10));
    return bytes.includes('St7__cxx11');
  } catch {
    return undefined;
  }
}

/** A libtorch download or install prefix (LIBTORCH, or Torch_DIR/../../..). */
function fromPrefix(prefix: string, source: Libtorch['source']): Libtorch | ColtrastError {
  const libDir = path.join(prefix, 'lib');
  if (!fs.existsSync(path.join(libDir, 'libtorch.so'))) {
    return new ColtrastError('NATIVE_LOAD', `${source}=${prefix} holds no libtorch (no ${libDir}/libtorch.so)`);
  }
  let version = '';
  const buildVersion = path.join(prefix, 'build-version');
  if (fs.existsSync(buildVersion)) version = fs.readFileSync(buildVersion, 'utf8').trim();
  const header = path.join(prefix, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h');
  if (!version && fs.existsSync(header)) version = /TORCH_VERSION\s+"([^"]+)"/.exec(fs.readFileSync(header, 'utf8'))?.[1] ?? '';
  if (!version) return new ColtrastError('NATIVE_LOAD', `cannot tell the version of the libtorch in ${prefix} (no build-version file or torch/version.h)`);
  const hasCuda = fs.existsSync(path.join(libDir, 'libtorch_cuda.so'));
  const cu = /\+cu(\d+)(\d)$/.exec(version);
  return {
    source,
    libDir,
    extraDirs: [],
    version,
    cuda: hasCuda ? (cu ? `${cu[1]}.${cu[2]}` : undefined) : null,
    cxx11Abi: abiOf(libDir),
  };
}

function fromPython(torchDir: string): Libtorch | undefined {
  const libDir = path.join(torchDir, 'lib');
  if (!fs.existsSync(path.join(libDir, 'libtorch.so'))) return undefined; // e.g. Debian's python3-torch: uses the system libtorch
  const text = fs.existsSync(path.join(torchDir, 'version.py')) ? fs.readFileSync(path.join(torchDir, 'version.py'), 'utf8') : '';
  const version = /^__version__\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m.exec(text)?.[1];
  if (!version) return undefined;
  const cudaMatch = /^cuda\s*(?::[^=]*)?=\s*(None|['"]([^'"]+)['"])/m.exec(text);
  const nvidia = path.join(torchDir, '..', 'nvidia');
  const extraDirs: string[] = [];
  if (fs.existsSync(nvidia)) {
    for (const d of fs.readdirSync(nvidia).sort()) {
      const lib = path.join(nvidia, d, 'lib');
      if (fs.existsSync(lib)) extraDirs.push(lib);
    }
  }
  return {
    source: 'python',
    libDir,
    extraDirs,
    version,
    cuda: cudaMatch ? (cudaMatch[2] ? majorMinor(cudaMatch[2]) : null) : undefined,
    cxx11Abi: abiOf(libDir),
  };
}

function fromSystem(dirs: string[]): Libtorch | undefined {
  for (const dir of dirs) {
    let files: string[];
    try {
      files = fs.readdirSync(dir);
    } catch {
      continue;
    }
    const so = files.map((f) => /^libtorch\.so\.(\d+\.\d+)$/.exec(f)).find(Boolean);
    if (!so) continue;
    const cudaLib = files.some((f) => f.startsWith('libtorch_cuda.so'));
    return { source: 'system', libDir: dir, extraDirs: [], version: so[1], cuda: cudaLib ? undefined : null, cxx11Abi: abiOf(dir) };
  }
  return undefined;
}

/** The libtorch installations here, in the build's search order; bad LIBTORCH/Torch_DIR values are errors. */
export function findLibtorch(e: Environment): { found: Libtorch[]; problems: string[] } {
  const found: Libtorch[] = [];
  const problems: string[] = [];
  const add = (t: Libtorch | ColtrastError | undefined) => {
    if (t instanceof ColtrastError) problems.push(t.message);
    else if (t) found.push(t);
  };
  if (e.env.LIBTORCH) add(fromPrefix(e.env.LIBTORCH, 'LIBTORCH'));
  if (e.env.Torch_DIR) add(fromPrefix(path.resolve(e.env.Torch_DIR, '..', '..', '..'), 'Torch_DIR'));
  const py = e.pythonTorch();
  if (py) add(fromPython(py));
  add(fromSystem(e.systemLibDirs));
  return { found, problems };
}

/** Every prebuild for this platform and arch, with its manifest; unreadable manifests are skipped. */
export function listPrebuilds(root: string, platform: string, arch: string): Prebuild[] {
  const base = path.join(root, 'prebuilds', `${platform}-${arch}`);
  let variants: string[];
  try {
    variants = fs.readdirSync(base).sort();
  } catch {
    return [];
  }
  const out: Prebuild[] = [];
  for (const v of variants) {
    const dir = path.join(base, v);
    try {
      const m = JSON.parse(fs.readFileSync(path.join(dir, 'prebuild.json'), 'utf8')) as PrebuildManifest;
      const file = path.join(dir, 'coltrast.node');
      if (fs.existsSync(file)) out.push({ ...m, dir, file });
    } catch {
      // not a prebuild folder
    }
  }
  return out;
}

/** Where each library a prebuild needs would come from with this libtorch, or why it cannot. */
export function fit(p: Prebuild, t: Libtorch, gpu: boolean): { ok: true; libs: string[] } | { ok: false; why: string } {
  if (majorMinor(p.torch) !== majorMinor(t.version)) return { ok: false, why: `built for libtorch ${majorMinor(p.torch)}, found ${majorMinor(t.version)}` };
  if (t.cxx11Abi !== undefined && t.cxx11Abi !== p.cxx11Abi) {
    return { ok: false, why: `built with the ${p.cxx11Abi ? 'C++11' : 'pre-C++11'} string ABI, this libtorch uses the other one` };
  }
  if (p.cuda) {
    if (t.cuda === null) return { ok: false, why: 'a CUDA build, and this libtorch has no CUDA' };
    if (t.cuda !== undefined && cudaMajor(t.cuda) !== cudaMajor(p.cuda)) return { ok: false, why: `built for CUDA ${p.cuda}, this libtorch has CUDA ${t.cuda}` };
    if (!gpu) return { ok: false, why: 'a CUDA build, and no NVIDIA GPU or driver is visible' };
  }
  const libs: string[] = [];
  for (const soname of p.needs) {
    const dir = [t.libDir, ...t.extraDirs].find((d) => fs.existsSync(path.join(d, soname)));
    if (!dir) return { ok: false, why: `needs ${soname}, which is not in ${[t.libDir, ...t.extraDirs].join(' or ')}` };
    libs.push(path.join(dir, soname));
  }
  return { ok: true, libs };
}

export interface Plan {
  choice?: BinaryChoice & { preload: string[] };
  /** Every option that was looked at and why it was not taken (for the error when nothing fits). */
  rejected: string[];
  libtorch: Libtorch[];
}

/** Whether planBinary takes the local build, without looking for a libtorch (or asking Python where its torch is). */
function takesLocalBuild(e: Environment, localBuild: string | null): boolean {
  const forced = e.env.COLTRAST_BINARY || undefined; // empty: unset
  return localBuild !== null && forced !== 'cpu' && forced !== 'cuda';
}

/**
 * planBinary, with its question to Python (where its torch is, ~0.1 s) asked first without holding the event loop
 * where the plan needs it; the answer is cached, so planBinary and later plans find it.
 */
export async function planBinaryAsync(e: Environment, localBuild: string | null): Promise<Plan> {
  if (!takesLocalBuild(e, localBuild)) await findPythonTorchAsync(e.env.COLTRAST_PYTHON || 'python3');
  return planBinary(e, localBuild);
}

/**
 * The folder of the libtorch already mapped into this process (libtorch_cpu's, from /proc/self/maps), or undefined:
 * none, or no /proc (not Linux).
 */
export function mappedLibtorchDir(maps = '/proc/self/maps'): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(maps, 'utf8');
  } catch {
    return undefined;
  }
  const file = /\s(\/\S*\/libtorch_cpu\.so[^\s/]*)$/m.exec(text)?.[1];
  return file && path.dirname(file);
}

/**
 * The error for a prebuild on another libtorch than the one this process has loaded already (by another addon, say):
 * a second libtorch's static initializers register its operators with the first one's dispatcher, which crashes
 * the process (a SIGBUS, no message). Undefined when there is nothing to fear: none loaded, the same one, or a local
 * build (it runs on the libtorch it was linked with, which its own load maps).
 */
export function secondLibtorch(choice: BinaryChoice, mapped = mappedLibtorchDir()): ColtrastError | undefined {
  if (mapped === undefined || choice.kind !== 'prebuild' || !choice.libtorch) return undefined;
  const real = (dir: string) => {
    try {
      return fs.realpathSync(dir);
    } catch {
      return dir;
    }
  };
  if (real(mapped) === real(choice.libtorch.libDir)) return undefined;
  return new ColtrastError(
    'NATIVE_LOAD',
    `this process has a libtorch loaded already (${mapped}), and the prebuild that fits is for another one (libtorch ${choice.libtorch.version} in ${choice.libtorch.libDir}): ` +
      `two libtorch libraries in one process crash it. Run coltrast on the loaded one: LIBTORCH=${path.dirname(mapped)} (the folder holding its lib/), or load coltrast before what loaded it`,
  );
}

/** Decides what to load; loads nothing. */
export function planBinary(e: Environment, localBuild: string | null): Plan {
  const forced = e.env.COLTRAST_BINARY || undefined; // empty: unset
  if (forced !== undefined && !['cpu', 'cuda', 'source'].includes(forced)) {
    throw new ColtrastError('NATIVE_LOAD', `COLTRAST_BINARY must be cpu, cuda or source; got '${forced}'`);
  }
  const rejected: string[] = [];
  // A local build links the libtorch it was built against (rpath): no search needed.
  if (takesLocalBuild(e, localBuild)) return { choice: { kind: 'source', file: localBuild!, reason: forced ? 'COLTRAST_BINARY=source' : 'a local build is present (build/Release)', preload: [] }, rejected, libtorch: [] };
  if (forced !== 'cpu' && forced !== 'cuda') rejected.push('no local build (build/Release/coltrast.node)');
  const { found, problems } = findLibtorch(e);
  rejected.push(...problems);
  if (forced === 'source') return { rejected, libtorch: found };
  const prebuilds = listPrebuilds(e.root, e.platform, e.arch).filter((p) => (forced === 'cpu' ? !p.cuda : forced === 'cuda' ? !!p.cuda : true));
  if (prebuilds.length === 0) rejected.push(`no ${forced ?? ''}${forced ? ' ' : ''}prebuild for ${e.platform}-${e.arch} in this package`);
  if (found.length === 0) rejected.push('no libtorch found (LIBTORCH, Torch_DIR, a Python torch, Debian libtorch)');
  // CUDA prebuilds first, then CPU; within each, libtorch in search order.
  const ordered = [...prebuilds].sort((a, b) => Number(!!b.cuda) - Number(!!a.cuda));
  for (const t of found) {
    for (const p of ordered) {
      const f = fit(p, t, e.gpu);
      if (f.ok) {
        return {
          choice: {
            kind: 'prebuild',
            file: p.file,
            variant: p.variant,
            libtorch: t,
            reason: `${forced ? `COLTRAST_BINARY=${forced}; ` : ''}prebuild ${p.variant} fits libtorch ${t.version} (${t.source}, ${t.libDir})${p.cuda ? ' and a GPU is visible' : ''}`,
            preload: f.libs,
          },
          rejected,
          libtorch: found,
        };
      }
      rejected.push(`prebuild ${p.variant} with libtorch ${t.version} (${t.source}): ${f.why}`);
    }
  }
  return { rejected, libtorch: found };
}

export const LIBTORCH_HELP =
  'Get libtorch in one of these ways and try again:\n' +
  '  - Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-pthread\n' +
  '  - a Python torch: pip install torch (coltrast finds the libtorch inside it)\n' +
  '  - a libtorch download from pytorch.org: unzip it and set LIBTORCH=/path/to/libtorch';

/** The error for "nothing can be loaded", listing what was tried and what to run. */
export function nothingFits(plan: Plan, e: Environment): ColtrastError {
  const tried = plan.rejected.map((r) => `  - ${r}`).join('\n');
  const torch = plan.libtorch.length
    ? `libtorch found: ${plan.libtorch.map((t) => `${t.version} (${t.source}, ${t.libDir})`).join('; ')}`
    : `no libtorch found.\n${LIBTORCH_HELP}`;
  return new ColtrastError(
    'NATIVE_LOAD',
    `coltrast has no native addon that can run here (${e.platform}-${e.arch}, Node ${process.version}).\n${torch}\nTried:\n${tried}\n` +
      'Build one from source against your libtorch (needs cmake and a C++17 compiler): npx coltrast build\n' +
      '(or allow coltrast\'s install script, which builds when no prebuild fits: npm install-scripts approve coltrast && npm rebuild coltrast)',
  );
}

const dlopenFlags = os.constants.dlopen as Record<string, number>;
// Node does not export RTLD_NODELETE; 0x1000 is glibc's value (without it Node's dlclose after the failed
// module registration would unload the library again).
const RTLD_NODELETE = dlopenFlags.RTLD_NODELETE ?? (process.platform === 'linux' ? 0x1000 : 0);
/** preload()'s flags. */
const PRELOAD_FLAGS = dlopenFlags.RTLD_NOW | dlopenFlags.RTLD_GLOBAL | RTLD_NODELETE;
/** The error process.dlopen gives for a plain library (not a Node module), which dlopen loaded all the same. */
const NOT_A_MODULE = /did not self-register|Module did not/;

/** Loads each library with RTLD_GLOBAL | RTLD_NODELETE, so that the addon's dependencies resolve to them. */
export function preload(libs: string[]): void {
  for (const file of libs) {
    try {
      process.dlopen({ exports: {} }, file, PRELOAD_FLAGS);
    } catch (error) {
      // A plain library is not a Node module: dlopen succeeded and NODELETE keeps it mapped; anything else is real.
      const message = (error as Error).message;
      if (!NOT_A_MODULE.test(message)) {
        throw new ColtrastError('NATIVE_LOAD', `could not load ${file}: ${message}`, { cause: error });
      }
    }
  }
}

/**
 * What a worker thread runs for preloadInWorker (a script, so that it needs no module of this package, compiled
 * or not): preload()'s loop, then the addon itself with RTLD_NODELETE, so that the worker's exit, which dlcloses
 * the addons it loaded, leaves both in memory. Posts null, or the first error's message.
 */
const PRELOAD_WORKER = `
const { parentPort, workerData: w } = require('node:worker_threads');
try {
  for (const file of w.libs) {
    try { process.dlopen({ exports: {} }, file, w.libFlags); } catch (e) { if (!new RegExp(w.notAModule).test(e.message)) throw e; }
  }
  process.dlopen({ exports: {} }, w.addon, w.addonFlags);
  parentPort.postMessage(null);
} catch (e) {
  parentPort.postMessage(String(e && e.message));
}`;

/**
 * Loads `libs` (as preload() does) and the addon `addon` on a worker thread, and resolves when done: the first load
 * of libtorch (mapping it and running its static initializers, about half a second on Debian's) then holds that
 * thread instead of the event loop, and the addon's require() on this thread finds everything loaded. Resolves to
 * null, or to the message of what failed there (the caller then loads on its own thread, which explains a failure).
 */
export function preloadInWorker(libs: string[], addon: string): Promise<string | null> {
  return new Promise((resolve) => {
    let worker: Worker;
    try {
      worker = new Worker(PRELOAD_WORKER, {
        eval: true,
        execArgv: [], // none of this process's flags or loaders (a TypeScript loader, say): the script needs none
        workerData: { libs, addon, libFlags: PRELOAD_FLAGS, addonFlags: dlopenFlags.RTLD_LAZY | RTLD_NODELETE, notAModule: NOT_A_MODULE.source },
      });
    } catch (error) {
      resolve((error as Error).message);
      return;
    }
    worker.once('message', (message: string | null) => resolve(message));
    worker.once('error', (error) => resolve(error.message));
    worker.once('exit', (code) => resolve(`the worker exited with code ${code} before loading`));
  });
}

/**
 * Whether a GPU of compute capability `capability` (major*10+minor, e.g. 86) can run kernels compiled for
 * `archs` (CMAKE_CUDA_ARCHITECTURES, e.g. "80-real;90-real;90-virtual"): machine code runs on the same major
 * and a newer or equal minor, PTX is compiled by the driver for any GPU at least as new.
 */
export function gpuFitsArchs(capability: number, archs: string): boolean {
  const entries = archs.split(/[;,\s]+/).filter(Boolean);
  if (entries.some((a) => /^(all|all-major|native)$/.test(a))) return true;
  return entries.some((entry) => {
    const m = /^(\d+)(?:-(real|virtual))?$/.exec(entry);
    if (!m) return false;
    const arch = Number(m[1]);
    const real = m[2] !== 'virtual';
    const virtual = m[2] !== 'real';
    return (real && Math.floor(arch / 10) === Math.floor(capability / 10) && arch <= capability) || (virtual && arch <= capability);
  });
}

/** Throws DEVICE when `device` (cuda:N) is a GPU older than what the loaded kernels were compiled for. */
export function checkGpuArch(device: string, info: { cudaArchs?: string; cudaCapabilities?: number[] }): void {
  const m = /^cuda:(\d+)$/.exec(device);
  if (!m || !info.cudaArchs || !info.cudaCapabilities) return;
  const capability = info.cudaCapabilities[Number(m[1])];
  if (capability === undefined || gpuFitsArchs(capability, info.cudaArchs)) return;
  throw new ColtrastError(
    'DEVICE',
    `${device} has compute capability ${Math.floor(capability / 10)}.${capability % 10}, older than coltrast's CUDA kernels ` +
      `(built for ${info.cudaArchs}). Build from source for this GPU: npx coltrast build --CDCMAKE_CUDA_ARCHITECTURES=${capability}, ` +
      "or use device 'cpu'",
  );
}
