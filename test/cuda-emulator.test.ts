// The CUDA kernels run on the CPU emulator (scripts/cuda-emu): every kernel, dtype and odd shape of
// native/kernels/test_kernels.cu's quick set against its float64 reference, forward and backward; and the CUDA
// ops' ATen side over the emulated kernels (scripts/cuda-emu/test_ops.cc: the contrastive loss, both strategies,
// against float64; MaxSim against the CPU implementation). This checks the kernels' logic and the wrappers'
// strides, chunking and scaling where no GPU exists; the GPU run (scripts/device/cuda-check.sh) checks the hardware's.
// The kernel checks run three times, with the emulator resuming threads in three orders (EMU_SCHEDULE, see
// scripts/cuda-emu/emu.cpp): thread by thread in rounds, and one warp at a time up to each barrier, first warp
// first and last warp first. Results must not depend on the order, and a missing __syncthreads makes them
// depend on it: of the kernels' 19 barriers, removing any one fails a check in at least one of these orders, and
// three are noticed only by a warp order (BENCHMARKS.md, "The CUDA emulator's thread orders";
// scripts/cuda-emu/barrier-sweep.sh). compute-sanitizer's racecheck on the GPU is the complete check.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const root = path.resolve(__dirname, '..');
const out = tempDir('coltrast-emu-');

test.before('build the emulated kernels and both checks', (t) => {
  const build = spawnSync('bash', [path.join(root, 'scripts', 'cuda-emu', 'build.sh'), out], { encoding: 'utf8', timeout: 240_000 });
  if (build.status !== 0) t.fail(`emulator build failed:\n${build.stdout}\n${build.stderr}`);
});

const RUNS: { program: string; schedule?: string; done: RegExp; title: string }[] = [
  { program: 'test_kernels', done: /all kernel checks passed/, title: 'the CUDA kernels pass their float64 checks on the CPU emulator' },
  {
    program: 'test_kernels',
    schedule: 'warps',
    done: /all kernel checks passed/,
    title: 'the same with one warp at a time between barriers, first warp first (a missing barrier shows as a wrong result)',
  },
  {
    program: 'test_kernels',
    schedule: 'warps-reverse',
    done: /all kernel checks passed/,
    title: 'the same with one warp at a time between barriers, last warp first',
  },
  {
    program: 'test_ops',
    done: /all op checks passed/,
    title: "the CUDA ops' ATen side over the emulated kernels: the contrastive loss (both strategies) matches float64, MaxSim the CPU",
  },
];

for (const { program, schedule, done, title } of RUNS) {
  test(title, (t) => {
    const args = program === 'test_kernels' ? ['--quick'] : [];
    const env = { ...process.env, EMU_SCHEDULE: schedule ?? 'forward' };
    const run = spawnSync(path.join(out, program), args, { encoding: 'utf8', timeout: 400_000, env });
    t.is(run.status, 0, `${run.stdout.slice(-3000)}\n${run.stderr.slice(-2000)}`);
    t.regex(run.stdout, done);
    t.false(/^\s*FAIL/m.test(run.stdout));
    t.log(run.stdout.trim().split('\n').filter((l) => /^\s*ok/.test(l)).length + ` checks passed (EMU_SCHEDULE=${env.EMU_SCHEDULE})`);
  });
}
