// The CUDA kernels run on the CPU emulator (scripts/cuda-emu): every kernel, dtype and odd shape of
// native/kernels/test_kernels.cu's quick set against its float64 reference, forward and backward; and the CUDA
// ops' ATen side over the emulated kernels (scripts/cuda-emu/test_ops.cc: the contrastive loss, both strategies,
// against float64; MaxSim against the CPU implementation). This checks the kernels' logic and the wrappers'
// strides, chunking and scaling where no GPU exists; the GPU run (scripts/device/cuda-check.sh) checks the hardware's.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');
const out = tempDir('coltrast-emu-');

test.before('build the emulated kernels and both checks', (t) => {
  const build = spawnSync('bash', [path.join(root, 'scripts', 'cuda-emu', 'build.sh'), out], { encoding: 'utf8' });
  if (build.status !== 0) t.fail(`emulator build failed:\n${build.stdout}\n${build.stderr}`);
});

for (const [program, args, done, title] of [
  ['test_kernels', ['--quick'], /all kernel checks passed/, 'the CUDA kernels pass their float64 checks on the CPU emulator'],
  ['test_ops', [], /all op checks passed/, "the CUDA ops' ATen side over the emulated kernels: the contrastive loss (both strategies) matches float64, MaxSim the CPU"],
] as const) {
  test(title, (t) => {
    const run = spawnSync(path.join(out, program), [...args], { encoding: 'utf8', timeout: 240_000 });
    t.is(run.status, 0, `${run.stdout.slice(-3000)}\n${run.stderr.slice(-2000)}`);
    t.regex(run.stdout, done);
    t.false(/^\s*FAIL/m.test(run.stdout));
    t.log(run.stdout.trim().split('\n').filter((l) => /^\s*ok/.test(l)).length + ' checks passed');
  });
}
