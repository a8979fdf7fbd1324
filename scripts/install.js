#!/usr/bin/env node
// npm's install step for coltrast (package.json "install"). With an explicit install script npm does not
// run its implicit `node-gyp rebuild` (which would fetch Node headers from the network): if a prebuild
// in prebuilds/ or an earlier local build loads, there is nothing to do; otherwise the addon is built
// from source with CMake (scripts/build-native.js), which needs libtorch (see README: Setup).
// COLTRAST_SKIP_BUILD=1 skips the build (e.g. to install first and build later with npm run build:native).
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (process.env.COLTRAST_SKIP_BUILD === '1') {
  console.log('coltrast: COLTRAST_SKIP_BUILD=1, not building the native addon');
  process.exit(0);
}
// Probe in a child: a prebuild that cannot load its libtorch must not take this process down.
const probe = spawnSync(process.execPath, ['-e', `require('node-gyp-build')(${JSON.stringify(root)})`], { stdio: 'ignore' });
if (probe.status === 0) {
  console.log('coltrast: a native addon for this platform is already present');
  process.exit(0);
}
console.log('coltrast: no prebuilt addon loads here; building from source with CMake and libtorch');
const build = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js')], { cwd: root, stdio: 'inherit' });
process.exit(build.status ?? 1);
