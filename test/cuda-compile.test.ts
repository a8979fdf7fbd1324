// The CUDA kernels compile with nvcc alone, for every architecture the addon ships (sm_80, sm_90 and
// PTX), without warnings. Machines without a GPU (CI) can run this; running the kernels needs one (see
// test/ops.test.ts's cuda tests and scripts/device/cuda-check.sh).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const KERNELS = path.resolve(__dirname, '..', 'native', 'kernels');
const nvcc = ['nvcc', '/usr/local/cuda/bin/nvcc', '/usr/local/bin/nvcc'].find(
  (candidate) => spawnSync(candidate, ['--version'], { encoding: 'utf8' }).status === 0,
);
const sources = fs.readdirSync(KERNELS).filter((f) => f.endsWith('.cu'));

test('there are kernels to compile', (t) => {
  t.true(sources.includes('maxsim.cu') && sources.includes('contrastive.cu'), sources.join(', '));
});

for (const source of sources) {
  (nvcc ? test : test.skip)(`nvcc compiles native/kernels/${source} for sm_80 and sm_90${nvcc ? '' : ' [skipped: nvcc not found]'}`, (t) => {
    const out = path.join(tempDir(), `${source}.o`);
    const args = [
      '--std=c++17',
      '-O3',
      '-Werror',
      'all-warnings',
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
    ];
    const result = spawnSync(nvcc!, args, { encoding: 'utf8' });
    t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
    t.true(fs.statSync(out).size > 0);
  });
}
