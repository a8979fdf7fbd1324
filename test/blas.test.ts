// Which BLAS libtorch's matrix products run on, as `coltrast info` reports it: from the libraries mapped into
// the process (Debian's libtorch calls whatever libblas.so.3 is selected: OpenBLAS, or the ~30x slower
// reference BLAS, which gets a warning), else from libtorch's own build configuration (a pip wheel links MKL
// into libtorch, so no BLAS library of its own is mapped).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { runtimeInfo } from '../lib';
import { blasInfo } from '../lib/runtime';
import { tempDir } from './helpers/fixture';

function maps(...libraries: string[]): string {
  const file = path.join(tempDir(), 'maps');
  const line = (lib: string) => `7f0000000000-7f0000001000 r-xp 00000000 fe:01 123 ${lib}`;
  fs.writeFileSync(file, [line('/usr/lib/x86_64-linux-gnu/libc.so.6'), ...libraries.map(line), ''].join('\n'));
  return file;
}

test('OpenBLAS and MKL are told by the mapped library', (t) => {
  const open = blasInfo(maps('/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so'), 'generic');
  t.is(open.kind, 'openblas');
  t.falsy(open.warning);
  t.is(blasInfo(maps('/opt/intel/lib/libmkl_rt.so.2')).kind, 'mkl');
});

test('the reference BLAS gets a warning that names the fix', (t) => {
  const reference = blasInfo(maps('/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0'), 'generic');
  t.is(reference.kind, 'reference');
  t.regex(reference.warning ?? '', /reference BLAS.*apt-get install libopenblas0-pthread/);
});

test("with no BLAS library mapped, libtorch's build configuration tells one linked into it", (t) => {
  t.deepEqual(blasInfo(maps(), 'mkl'), { libraries: [], kind: 'mkl', builtIn: true });
  t.deepEqual(blasInfo(maps(), 'open'), { libraries: [], kind: 'openblas', builtIn: true });
  t.deepEqual(blasInfo(maps(), 'generic'), { libraries: [], kind: 'unknown' });
  t.deepEqual(blasInfo(maps()), { libraries: [], kind: 'unknown' });
});

test('runtimeInfo() on this machine names the BLAS in use', (t) => {
  // Debian's libtorch with OpenBLAS (scripts/setup.sh installs it), or a pip torch's MKL (npm run test:libtorch2).
  const { blas, torchVersion } = runtimeInfo();
  t.true(['openblas', 'mkl'].includes(blas.kind), `libtorch ${torchVersion}: ${JSON.stringify(blas)}`);
  t.log(`libtorch ${torchVersion}: ${blas.kind}${blas.builtIn ? ' (linked into libtorch)' : ''}`);
});

// native/compute_thread.h: CPU work goes through one thread of coltrast's own, except beside an OpenBLAS with
// threads of its own (Debian's libopenblas0-pthread), which a warm OpenMP team would starve. The rest of the
// suite runs through the pool here and through the own thread in `npm run test:libtorch2` (a pip torch's
// MKL), rejections from native work included.
test('CPU work runs on its own thread unless OpenBLAS brings threads of its own', (t) => {
  const { blas, cpuWorkThread, torchVersion } = runtimeInfo();
  t.log(`libtorch ${torchVersion}, ${blas.kind} (${blas.libraries.join(', ') || 'linked in'}): CPU work on ${cpuWorkThread === 'own' ? 'its own thread' : 'the pool'}`);
  if (blas.kind === 'openblas' && !blas.builtIn) {
    t.true(blas.libraries.some((l) => /openblas-pthread/.test(l)), `this test knows Debian's pthreads OpenBLAS; mapped: ${blas.libraries.join(', ')}`);
    t.is(cpuWorkThread, 'pool');
  } else {
    t.is(blas.kind, 'mkl', `a pip torch's MKL; got ${JSON.stringify(blas)}`);
    t.is(cpuWorkThread, 'own');
  }
});
