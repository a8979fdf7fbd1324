// The CUDA kernels run on the CPU emulator (scripts/cuda-emu): every kernel, dtype and odd shape of
// native/kernels/test_kernels.cu's quick set against its float64 reference, forward and backward. This
// checks the kernels' logic where no GPU exists; the GPU run (scripts/device/cuda-check.sh) checks the
// hardware's.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');

test('the CUDA kernels pass their float64 checks on the CPU emulator', (t) => {
  const out = tempDir('coltrast-emu-');
  const build = spawnSync('bash', [path.join(root, 'scripts', 'cuda-emu', 'build.sh'), out], { encoding: 'utf8' });
  t.is(build.status, 0, `emulator build failed:\n${build.stdout}\n${build.stderr}`);
  const run = spawnSync(path.join(out, 'test_kernels'), ['--quick'], { encoding: 'utf8', timeout: 240_000 });
  t.is(run.status, 0, `${run.stdout.slice(-3000)}\n${run.stderr.slice(-2000)}`);
  t.regex(run.stdout, /all kernel checks passed/);
  t.false(/^\s*FAIL/m.test(run.stdout));
  t.log(run.stdout.trim().split('\n').filter((l) => /^\s*ok/.test(l)).length + ' checks passed');
});
