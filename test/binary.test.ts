// Choosing the native addon: a local build, or the prebuild that fits the libtorch installed here; and every
// way that fails becomes an error that says what to install or run. The machines here are simulated with
// folders that look like a Python torch, a libtorch download and Debian's libtorch; the last test loads the
// real CPU prebuild on this machine's libtorch.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { checkGpuArch, findLibtorch, findPythonTorch, findPythonTorchAsync, gpuFitsArchs, mappedLibtorchDir, nothingFits, planBinary, secondLibtorch, type Environment, type Libtorch, type PrebuildManifest } from '../lib/binary';
import { explainLoadError } from '../lib/native';
import { tempDir } from './helpers/fixture';

const CXX11 = 'symbols: _ZNK3c105Error4whatB5cxx11Ev NSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE';
const OLD_ABI = 'symbols: _ZNK3c105Error4whatEv Ss';

function touch(file: string, content = ''): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

/** A Python torch: site-packages/torch/{lib, version.py} and its CUDA runtime in site-packages/nvidia. */
function pythonTorch(site: string, version: string, cuda: string | null, abi = CXX11): string {
  const torch = path.join(site, 'torch');
  touch(path.join(torch, 'version.py'), `__version__ = '${version}'\ndebug = False\ncuda: Optional[str] = ${cuda ? `'${cuda}'` : 'None'}\n`);
  touch(path.join(torch, 'lib', 'libc10.so'), abi);
  for (const f of ['libtorch.so', 'libtorch_cpu.so']) touch(path.join(torch, 'lib', f));
  if (cuda) {
    for (const f of ['libtorch_cuda.so', 'libc10_cuda.so']) touch(path.join(torch, 'lib', f));
    touch(path.join(site, 'nvidia', 'cuda_runtime', 'lib', `libcudart.so.${cuda.split('.')[0]}`));
  }
  return torch;
}

function prebuild(root: string, m: Partial<PrebuildManifest> & { variant: string; torch: string }): void {
  const dir = path.join(root, 'prebuilds', 'linux-x64', m.variant);
  const manifest: PrebuildManifest = { platform: 'linux', arch: 'x64', napi: 8, cuda: null, cudaArchs: null, cxx11Abi: true, needs: ['libc10.so', 'libtorch_cpu.so', 'libtorch.so'], built: {}, ...m };
  touch(path.join(dir, 'coltrast.node'), 'not really an addon');
  touch(path.join(dir, 'prebuild.json'), JSON.stringify(manifest));
}

function machine(over: Partial<Environment> = {}): Environment {
  const root = tempDir();
  return { env: {}, root, platform: 'linux', arch: 'x64', gpu: false, pythonTorch: () => null, systemLibDirs: [path.join(root, 'no-system-libtorch')], ...over };
}

function withPrebuilds(e: Environment): Environment {
  prebuild(e.root, { variant: 'cpu-torch2.5', torch: '2.5.1' });
  prebuild(e.root, {
    variant: 'cuda12-torch2.5',
    torch: '2.5.1',
    cuda: '12.4',
    cudaArchs: '80-real;90-real;90-virtual',
    needs: ['libc10.so', 'libtorch_cpu.so', 'libtorch.so', 'libc10_cuda.so', 'libtorch_cuda.so', 'libcudart.so.12'],
  });
  prebuild(e.root, { variant: 'cpu-torch1.13', torch: '1.13.0', needs: ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13'] });
  return e;
}

test('a CUDA Python torch and a GPU: the CUDA prebuild, its CUDA runtime loaded from site-packages/nvidia', (t) => {
  const e = withPrebuilds(machine({ gpu: true }));
  const torch = pythonTorch(path.join(e.root, 'site-packages'), '2.5.1+cu124', '12.4');
  e.pythonTorch = () => torch;
  const plan = planBinary(e, null);
  t.is(plan.choice?.kind, 'prebuild');
  t.is(plan.choice?.variant, 'cuda12-torch2.5');
  t.is(plan.choice?.libtorch?.source, 'python');
  t.is(plan.choice?.libtorch?.cuda, '12.4');
  t.true(plan.choice!.preload.includes(path.join(e.root, 'site-packages', 'nvidia', 'cuda_runtime', 'lib', 'libcudart.so.12')));
  t.true(plan.choice!.preload.includes(path.join(torch, 'lib', 'libtorch_cuda.so')));
  t.regex(plan.choice!.reason, /cuda12-torch2\.5 fits libtorch 2\.5\.1\+cu124 \(python.*a GPU is visible/);
});

test('the same machine without a GPU: the CPU prebuild, and why not the CUDA one', (t) => {
  const e = withPrebuilds(machine({ gpu: false }));
  const torch = pythonTorch(path.join(e.root, 'site-packages'), '2.5.1+cu124', '12.4');
  e.pythonTorch = () => torch;
  const plan = planBinary(e, null);
  t.is(plan.choice?.variant, 'cpu-torch2.5');
  t.true(plan.rejected.some((r) => /cuda12-torch2\.5 .*no NVIDIA GPU or driver is visible/.test(r)));
});

test('a local build wins unless COLTRAST_BINARY forces a prebuild; COLTRAST_BINARY=source insists on it', (t) => {
  const e = withPrebuilds(machine());
  e.pythonTorch = () => pythonTorch(path.join(e.root, 'site-packages'), '2.5.1', null);
  const local = path.join(e.root, 'build', 'Release', 'coltrast.node');
  t.is(planBinary(e, local).choice?.kind, 'source');
  t.is(planBinary(e, local).choice?.file, local);
  t.is(planBinary({ ...e, env: { COLTRAST_BINARY: 'cpu' } }, local).choice?.variant, 'cpu-torch2.5');
  const source = planBinary({ ...e, env: { COLTRAST_BINARY: 'source' } }, null);
  t.is(source.choice, undefined);
  t.regex(nothingFits(source, e).message, /no local build[\s\S]*npx coltrast build/);
  const err = t.throws(() => planBinary({ ...e, env: { COLTRAST_BINARY: 'gpu' } }, local));
  t.regex(err!.message, /COLTRAST_BINARY must be cpu, cuda or source; got 'gpu'/);
});

test('COLTRAST_BINARY=cuda with no GPU: an error that says so and what to do', (t) => {
  const e = withPrebuilds(machine({ gpu: false, env: { COLTRAST_BINARY: 'cuda' } }));
  e.pythonTorch = () => pythonTorch(path.join(e.root, 'site-packages'), '2.5.1+cu124', '12.4');
  const plan = planBinary(e, null);
  t.is(plan.choice, undefined);
  const err = nothingFits(plan, e);
  t.is(err.code, 'NATIVE_LOAD');
  t.regex(err.message, /cuda12-torch2\.5 with libtorch 2\.5\.1\+cu124 \(python\): a CUDA build, and no NVIDIA GPU or driver is visible/);
  t.notRegex(err.message, /cpu-torch2\.5/, 'CPU prebuilds were not considered');
});

test('a libtorch of another version: each prebuild says which version it needs', (t) => {
  const e = withPrebuilds(machine());
  e.pythonTorch = () => pythonTorch(path.join(e.root, 'site-packages'), '2.7.0', null);
  const plan = planBinary(e, null);
  t.is(plan.choice, undefined);
  const message = nothingFits(plan, e).message;
  t.regex(message, /libtorch found: 2\.7\.0 \(python/);
  t.regex(message, /cpu-torch2\.5 with libtorch 2\.7\.0 \(python\): built for libtorch 2\.5, found 2\.7/);
  t.regex(message, /npx coltrast build/);
  t.regex(message, /npm install-scripts approve coltrast/);
});

test('a libtorch with the other C++ ABI is refused, and so is a CUDA prebuild on a libtorch of another CUDA major', (t) => {
  const e = withPrebuilds(machine({ gpu: true }));
  e.pythonTorch = () => pythonTorch(path.join(e.root, 'site-packages'), '2.5.1+cu118', '11.8', OLD_ABI);
  const plan = planBinary(e, null);
  t.is(plan.choice, undefined);
  t.is(plan.libtorch[0].cxx11Abi, false);
  t.true(plan.rejected.some((r) => /cpu-torch2\.5 .*pre-C\+\+11|C\+\+11 string ABI, this libtorch uses the other one/.test(r)));
  const e2 = withPrebuilds(machine({ gpu: true }));
  e2.pythonTorch = () => pythonTorch(path.join(e2.root, 'site-packages'), '2.5.1+cu118', '11.8');
  const plan2 = planBinary(e2, null);
  t.is(plan2.choice?.variant, 'cpu-torch2.5', 'the CPU prebuild runs on a CUDA libtorch');
  t.true(plan2.rejected.some((r) => /built for CUDA 12\.4, this libtorch has CUDA 11\.8/.test(r)));
});

test('no libtorch anywhere: the error gives three ways to get one', (t) => {
  const e = withPrebuilds(machine());
  const err = nothingFits(planBinary(e, null), e);
  t.regex(err.message, /no libtorch found/);
  t.regex(err.message, /apt-get install libtorch-dev/);
  t.regex(err.message, /pip install torch/);
  t.regex(err.message, /LIBTORCH=/);
});

test('search order: LIBTORCH, Torch_DIR, Python torch, Debian; a LIBTORCH that is not one is named', (t) => {
  const e = machine();
  const download = path.join(e.root, 'libtorch');
  touch(path.join(download, 'build-version'), '2.5.1+cu124\n');
  touch(path.join(download, 'lib', 'libc10.so'), CXX11);
  touch(path.join(download, 'lib', 'libtorch.so'));
  touch(path.join(download, 'lib', 'libtorch_cuda.so'));
  const system = path.join(e.root, 'usr-lib');
  touch(path.join(system, 'libtorch.so.1.13'));
  touch(path.join(system, 'libc10.so.1.13'), CXX11);
  const python = pythonTorch(path.join(e.root, 'site-packages'), '2.4.0', null);
  const found = findLibtorch({ ...e, env: { LIBTORCH: download, Torch_DIR: path.join(download, 'share', 'cmake', 'Torch') }, pythonTorch: () => python, systemLibDirs: [system] });
  t.deepEqual(found.found.map((f) => [f.source, f.version, f.cuda]), [
    ['LIBTORCH', '2.5.1+cu124', '12.4'],
    ['Torch_DIR', '2.5.1+cu124', '12.4'],
    ['python', '2.4.0', null],
    ['system', '1.13', null],
  ]);
  const bad = findLibtorch({ ...e, env: { LIBTORCH: path.join(e.root, 'nowhere') } });
  t.deepEqual(bad.found, []);
  t.regex(bad.problems[0], /LIBTORCH=.*nowhere holds no libtorch/);
});

test("this machine's libtorch is found with its version and ABI", (t) => {
  const found = findLibtorch({ ...machine(), systemLibDirs: ['/usr/lib/x86_64-linux-gnu'], pythonTorch: () => null }).found;
  t.is(found.length, 1, 'Debian libtorch-dev is installed (scripts/setup.sh)');
  t.is(found[0].source, 'system');
  t.regex(found[0].version, /^\d+\.\d+$/);
  t.is(found[0].cxx11Abi, true, "Debian's libtorch uses the C++11 ABI");
});

test('GPU architectures: machine code runs within its major version, PTX on anything newer', (t) => {
  const shipped = '80-real;90-real;90-virtual';
  t.false(gpuFitsArchs(75, shipped), 'Turing (7.5) is too old');
  t.false(gpuFitsArchs(70, shipped));
  t.true(gpuFitsArchs(80, shipped));
  t.true(gpuFitsArchs(86, shipped), 'sm_80 machine code runs on 8.6');
  t.true(gpuFitsArchs(89, shipped));
  t.true(gpuFitsArchs(90, shipped));
  t.true(gpuFitsArchs(100, shipped), 'Blackwell JITs the sm_90 PTX');
  t.false(gpuFitsArchs(100, '80-real;90-real'), 'no PTX: nothing runs on 10.0');
  t.true(gpuFitsArchs(75, '75'), 'a bare number is machine code and PTX');
  const err = t.throws(() => checkGpuArch('cuda:1', { cudaArchs: shipped, cudaCapabilities: [90, 75] }));
  t.is((err as { code?: string }).code, 'DEVICE');
  t.regex(err!.message, /cuda:1 has compute capability 7\.5, older than coltrast's CUDA kernels \(built for 80-real;90-real;90-virtual\)/);
  t.regex(err!.message, /npx coltrast build --CDCMAKE_CUDA_ARCHITECTURES=75/);
  t.notThrows(() => checkGpuArch('cuda:0', { cudaArchs: shipped, cudaCapabilities: [90, 75] }));
  t.notThrows(() => checkGpuArch('cuda:0', {}), 'a CPU build has nothing to check');
});

test('loader errors name the library and the fix', (t) => {
  const missing = explainLoadError(new Error('libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory'), '/x/coltrast.node');
  t.is(missing.code, 'NATIVE_LOAD');
  t.regex(missing.message, /native addon \(\/x\/coltrast\.node\) could not load libtorch_cpu\.so\.1\.13/);
  t.regex(missing.message, /apt-get install libtorch-dev[\s\S]*pip install torch[\s\S]*LIBTORCH=[\s\S]*npx coltrast build/);
  const symbol = explainLoadError(new Error('/x/coltrast.node: undefined symbol: _ZN3c106detail14torchCheckFailEPKcS2_jRKSs'));
  t.regex(symbol.message, /does not match the libtorch found at run time[\s\S]*npx coltrast build/);
});

test('the real CPU prebuild loads on this machine (COLTRAST_BINARY=cpu) and coltrast info says why', (t) => {
  const cli = path.resolve(__dirname, '..', 'lib', 'cli.ts');
  const run = spawnSync(process.execPath, ['--import', 'tsx', cli, 'info', '--json'], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_BINARY: 'cpu' } });
  t.is(run.status, 0, `${run.stderr}\n(run npm run make-prebuild first: scripts/setup.sh does)`);
  const info = JSON.parse(run.stdout);
  t.is(info.binary.kind, 'prebuild');
  t.regex(info.binary.variant, /^cpu-torch\d+\.\d+$/);
  t.is(info.binary.libtorch.source, 'system');
  t.regex(info.binary.reason, /COLTRAST_BINARY=cpu; prebuild cpu-torch.* fits libtorch/);
  t.deepEqual(info.modelTypes, ['bert', 'roberta', 'xlm-roberta', 'camembert', 'mpnet', 'distilbert', 'electra', 'deberta-v2', 'modernbert', 't5', 'mt5', 'llama', 'mistral', 'qwen2', 'qwen3', 'gemma3_text', 'gemma2', 'gemma', 'phi3']);
  const text = spawnSync(process.execPath, ['--import', 'tsx', cli, 'info'], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_BINARY: 'cpu' } });
  t.regex(text.stdout, /addon: prebuild cpu-torch[\d.]+ \(.*prebuilds\/linux-x64\/cpu-torch[\d.]+\/coltrast\.node\)/);
  t.regex(text.stdout, /chosen because: COLTRAST_BINARY=cpu/);
  t.regex(text.stdout, /model types: bert, roberta, xlm-roberta, camembert, mpnet, distilbert, electra, deberta-v2, modernbert, t5, mt5, llama, mistral, qwen2, qwen3, gemma3_text, gemma2, gemma, phi3\n/);
  const local = spawnSync(process.execPath, ['--import', 'tsx', cli, 'info'], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_BINARY: '' } });
  t.regex(local.stdout, /addon: local build/, 'an empty COLTRAST_BINARY is no choice: the local build');
});

test('a local build that no longer loads falls back to a prebuild that fits, and says why', (t) => {
  const root = path.resolve(__dirname, '..');
  const pkg = tempDir();
  fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
  fs.cpSync(path.join(root, 'prebuilds'), path.join(pkg, 'prebuilds'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
  touch(path.join(pkg, 'build', 'Release', 'coltrast.node'), 'a broken build');
  const probe = `const n = require(${JSON.stringify(path.join(pkg, 'dist', 'native.js'))}); n.native(); console.log(JSON.stringify(n.binaryChoice()))`;
  const env = { ...process.env };
  delete env.COLTRAST_BINARY;
  const run = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 240_000, env });
  t.is(run.status, 0, `${run.stderr}\n(needs a CPU prebuild: npm run make-prebuild)`);
  const choice = JSON.parse(run.stdout);
  t.is(choice.kind, 'prebuild');
  t.regex(choice.reason, /the local build did not load \(coltrast's native addon \(.*build\/Release\/coltrast\.node\) failed to load/);
  const forced = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 240_000, env: { ...env, COLTRAST_BINARY: 'source' } });
  t.not(forced.status, 0, 'COLTRAST_BINARY=source insists on the local build');
  t.regex(forced.stderr, /build\/Release\/coltrast\.node\) failed to load/);
});

test("the NVIDIA driver's version is read from /proc (both the proprietary and the open kernel module)", async (t) => {
  const { nvidiaDriverVersion } = await import('../lib/runtime');
  const dir = tempDir();
  touch(path.join(dir, 'a'), 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 09:58:08 UTC 2025\nGCC version:  gcc version 12.2.0\n');
  touch(path.join(dir, 'b'), 'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57.08  Release Build  (dvs-builder@U16)\n');
  t.is(nvidiaDriverVersion(path.join(dir, 'a')), '580.95.05');
  t.is(nvidiaDriverVersion(path.join(dir, 'b')), '575.57.08');
  t.is(nvidiaDriverVersion(path.join(dir, 'none')), undefined, 'no driver: nothing to report');
});

// Where Python's torch is, the process keeps one answer: the plan of a synchronous native() and that of a load
// under way must agree, or the second loads another libtorch beside the first (a SIGBUS in test:libtorch2: an
// asynchronous question cut off by its timeout, whose timer ran late behind 10 s of synchronous work, said "no
// torch", and the load under way then took Debian's libtorch 1.13 beside PyTorch 2.13's).
test('the Python torch found is one answer for the process: a synchronous answer given meanwhile stands, and a late timer does not make it "none"', async (t) => {
  const dir = tempDir();
  // A Python that answers a different folder each time it is asked (its process id), after 300 ms, and logs each call.
  const python = path.join(dir, 'python');
  const calls = path.join(dir, 'calls');
  fs.writeFileSync(python, `#!/bin/sh\necho $$ >> '${calls}'; sleep 0.3; echo /torch$$\n`, { mode: 0o755 });
  const asked = findPythonTorchAsync(python); // asked first, answered 300 ms later
  const answer = findPythonTorch(python); // answered first
  t.regex(answer ?? '', /^\/torch\d+$/);
  t.is(await asked, answer);
  t.is(findPythonTorch(python), answer);
  t.is(fs.readFileSync(calls, 'utf8').trim().split('\n').length, 2, 'each asked the Python once, the last call none');

  // A Python that answers at once, its answer read after the event loop was held past the 10 s timeout.
  const quick = path.join(dir, 'quick');
  fs.writeFileSync(quick, '#!/bin/sh\necho /quick-torch\n', { mode: 0o755 });
  const late = findPythonTorchAsync(quick);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10_500); // holds the thread without using a core
  t.is(await late, '/quick-torch');
});

test('a prebuild for another libtorch than the one this process has loaded is refused, naming both and the fix', (t) => {
  const dir = tempDir();
  const maps = path.join(dir, 'maps');
  touch(maps, '7f00-7f10 r-xp 00000000 08:01 42   /usr/lib/x86_64-linux-gnu/libc.so.6\n7f20-7f30 r-xp 00000000 08:01 43   /opt/torch/lib/libtorch_cpu.so\n');
  t.is(mappedLibtorchDir(maps), '/opt/torch/lib');
  touch(path.join(dir, 'none'), '7f00-7f10 r-xp 00000000 08:01 42   /usr/lib/x86_64-linux-gnu/libc.so.6\n');
  t.is(mappedLibtorchDir(path.join(dir, 'none')), undefined);
  t.is(mappedLibtorchDir(path.join(dir, 'no-such-file')), undefined, 'no /proc: nothing known');
  const libtorch: Libtorch = { source: 'system', libDir: '/usr/lib/x86_64-linux-gnu', extraDirs: [], version: '1.13', cuda: null, cxx11Abi: true };
  const prebuild = { kind: 'prebuild' as const, file: '/p/coltrast.node', variant: 'cpu-torch1.13', libtorch, reason: '' };
  t.is(secondLibtorch(prebuild, undefined), undefined, 'none loaded');
  t.is(secondLibtorch({ kind: 'source', file: '/b/coltrast.node', reason: '' }, '/opt/torch/lib'), undefined, 'a local build maps its own');
  fs.mkdirSync(path.join(dir, 'torch', 'lib'), { recursive: true });
  fs.symlinkSync(path.join(dir, 'torch'), path.join(dir, 'link'));
  t.is(secondLibtorch({ ...prebuild, libtorch: { ...libtorch, libDir: path.join(dir, 'link', 'lib') } }, path.join(dir, 'torch', 'lib')), undefined, 'the same folder by another path');
  const error = secondLibtorch(prebuild, '/opt/torch/lib');
  t.is(error?.code, 'NATIVE_LOAD');
  t.is(
    error?.message,
    'this process has a libtorch loaded already (/opt/torch/lib), and the prebuild that fits is for another one (libtorch 1.13 in /usr/lib/x86_64-linux-gnu): ' +
      'two libtorch libraries in one process crash it. Run coltrast on the loaded one: LIBTORCH=/opt/torch (the folder holding its lib/), or load coltrast before what loaded it',
  );
});

// The real thing: PyTorch 2.x's libtorch (build/pyenv's, scripts/setup.sh) loaded first, then coltrast told to take
// the prebuild for Debian's libtorch 1.13: the process crashed by SIGBUS in that load before the check.
test('with another libtorch loaded first, native() throws NATIVE_LOAD instead of crashing the process', (t) => {
  const root = path.resolve(__dirname, '..');
  const python = path.join(root, 'build', 'pyenv', 'bin', 'python');
  const torchLib = fs.existsSync(python) ? spawnSync(python, ['-c', "import importlib.util as u; print(u.find_spec('torch').submodule_search_locations[0])"], { encoding: 'utf8', timeout: 240_000 }).stdout.trim() : '';
  const cpu = path.join(torchLib, 'lib', 'libtorch_cpu.so');
  if (!torchLib || !fs.existsSync(cpu)) {
    t.log(`SKIPPED: no PyTorch 2.x in ${python} (scripts/setup.sh makes it)`);
    t.pass();
    return;
  }
  const probe = `
    const os = require('node:os');
    try { process.dlopen({ exports: {} }, ${JSON.stringify(cpu)}, os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL); } catch {}
    try { require(${JSON.stringify(path.join(root, 'dist', 'native.js'))}).native(); console.log('loaded'); }
    catch (e) { console.log(e.code + ': ' + e.message); }`;
  const run = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_BINARY: 'cpu', COLTRAST_PYTHON: path.join(tempDir(), 'no-python') } });
  t.is(run.signal, null, `the process crashed: ${run.stderr}`);
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, new RegExp(`^NATIVE_LOAD: this process has a libtorch loaded already \\(${escape(path.join(torchLib, 'lib'))}\\), and the prebuild that fits is for another one \\(libtorch 1\\.13`));
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
