#!/usr/bin/env node
// npm's install step for coltrast (package.json "install"). With an explicit install script npm does not run
// its implicit `node-gyp rebuild` (which would fetch Node headers from the network). If an addon loads (a
// prebuild that fits the libtorch here, chosen by lib/binary.ts, or an earlier local build) there is nothing
// to do; otherwise the addon is built from source with cmake-js (scripts/build-native.js), which needs cmake,
// a C++17 compiler and libtorch. A failed build does not fail the install: loading coltrast then says what
// is missing and what to run (`npx coltrast build`).
// npm 11 runs a dependency's install script only once the user allows it (npm install-scripts approve
// coltrast); coltrast does not need it when a prebuild fits, and says what to run when none does.
// COLTRAST_SKIP_BUILD=1 skips the build.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (process.env.COLTRAST_SKIP_BUILD === '1') {
  console.log('coltrast: COLTRAST_SKIP_BUILD=1, not building the native addon');
  process.exit(0);
}
// Probe in a child: an addon that cannot load its libtorch must not take this process down.
const probe = spawnSync(
  process.execPath,
  ['-e', `const n = require(${JSON.stringify(path.join(root, 'dist', 'native.js'))}); n.native(); const b = n.binaryChoice(); console.log(b.kind === 'prebuild' ? 'prebuild ' + b.variant : 'local build', '-', b.reason)`],
  { encoding: 'utf8' },
);
if (probe.status === 0) {
  console.log(`coltrast: using ${probe.stdout.trim()}`);
  process.exit(0);
}
console.log('coltrast: no prebuilt addon fits this machine; building from source with cmake-js and the libtorch installed here');
const build = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js')], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) {
  const why = (probe.stderr || '').split('\n').filter((l) => l.trim() && !/^\s+at /.test(l)).slice(0, 12).join('\n');
  console.warn(`coltrast: WARNING: the build from source failed, so coltrast cannot load here yet.\n${why}\n` +
    'Fix what is named above, then run: npx coltrast build');
}
process.exit(0);
