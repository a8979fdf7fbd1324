// A native addon that cannot load must become an error that says what to install or run.
import test from 'ava';
import path from 'node:path';
import { explainLoadError } from '../lib/native';
import { tempDir } from './helpers/fixture';

test('no addon built for this machine: the error says how to build one', (t) => {
  let raw: unknown;
  try {
    // node-gyp-build's own error for a folder with neither prebuilds nor a build
    require('node-gyp-build')(path.join(tempDir(), 'empty-package'));
  } catch (e) {
    raw = e;
  }
  t.truthy(raw, 'node-gyp-build fails on an empty folder');
  const e = explainLoadError(raw);
  t.is(e.code, 'NATIVE_LOAD');
  t.regex(e.message, /no native addon for this machine/);
  t.regex(e.message, /npm run build:native/);
  t.regex(e.message, /apt-get install libtorch-dev/);
});

test('a missing libtorch: the error names the library and three ways to get one', (t) => {
  // The message the dynamic loader gives when libtorch is not installed.
  const e = explainLoadError(
    new Error('libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory'),
  );
  t.is(e.code, 'NATIVE_LOAD');
  t.regex(e.message, /could not load libtorch_cpu\.so\.1\.13/);
  t.regex(e.message, /apt-get install libtorch-dev/);
  t.regex(e.message, /pip install torch/);
  t.regex(e.message, /LIBTORCH=/);
});

test('a libtorch of another version or ABI: the error says to rebuild', (t) => {
  const e = explainLoadError(new Error('/x/coltrast.node: undefined symbol: _ZN3c106detail14torchCheckFailEPKcS2_jRKSs'));
  t.is(e.code, 'NATIVE_LOAD');
  t.regex(e.message, /does not match the libtorch found at run time/);
  t.regex(e.message, /npm run build:native/);
});
