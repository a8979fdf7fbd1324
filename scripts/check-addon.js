#!/usr/bin/env node
// Runs before the tests (npm's pretest): loads the native addon in a child process so that a broken
// build, a missing libtorch or a crash at load time is reported in one readable line instead of
// taking the test runner down with it.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const probe = `
  const b = require('node-gyp-build')(${JSON.stringify(root)});
  const info = b.runtimeInfo();
  console.log('coltrast addon OK: libtorch ' + info.torchVersion + ', ' + info.numThreads + ' threads, CUDA ' +
    (info.cudaAvailable ? info.cudaDeviceCount + ' device(s)' : 'not available'));
`;
const child = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
if (child.status === 0) {
  process.stdout.write(child.stdout);
  process.exit(0);
}
const reason = child.signal ? `crashed with ${child.signal}` : `exited with status ${child.status}`;
const detail = (child.stderr || '').split('\n').find((l) => /Error|error:|cannot open/.test(l)) || child.stderr.trim();
console.error(`coltrast: the native addon does not load (${reason}): ${detail}`);
console.error('Build it with `npm run build` (see README: Setup); tests were not run.');
process.exit(1);
