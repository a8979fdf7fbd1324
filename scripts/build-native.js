#!/usr/bin/env node
// The one way the addon is built: cmake-js configures and builds CMakeLists.txt in build/cmake, and
// CMake puts the addon at build/Release/coltrast.node, where node-gyp-build looks for a local build.
// `npm run build:native` calls this, and so does binding.gyp, so node-gyp-driven tools (node-gyp
// rebuild, node-gyp-build's install fallback, prebuildify) build the same thing. Extra arguments go
// to cmake-js (e.g. --debug, or -- -DLIBTORCH=/path). `npx coltrast build` runs this from an installed package.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
let cli;
try {
  cli = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('coltrast: building the native addon needs cmake-js (npm install cmake-js node-addon-api node-api-headers).');
  process.exit(1);
}
// COLTRAST_BUILD_DIR: another CMake build folder (scripts/prebuild.js keeps one per configuration).
const args = [cli, 'compile', '--out', process.env.COLTRAST_BUILD_DIR || path.join('build', 'cmake'), ...process.argv.slice(2)];
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (result.status !== 0) {
  console.error('coltrast: native build failed. See the CMake output above; README "Building from source" lists what it needs.');
}
process.exit(result.status ?? 1);
