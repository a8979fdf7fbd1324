#!/usr/bin/env node
// The `node-gyp` that scripts/prebuild.js hands prebuildify (--node-gyp): prebuildify calls it as
// `node-gyp rebuild --target=... --devdir=... --release` and then takes build/Release/*.node. coltrast is
// built by CMake, so this ignores node-gyp's arguments (they name Node's headers, which cmake-js takes from
// node-api-headers) and runs the one build script; extra cmake-js arguments come in COLTRAST_PREBUILD_CMAKE_ARGS
// (a JSON array, e.g. ["--CDCOLTRAST_CUDA=ON"]).
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

if (process.argv[2] !== 'rebuild') {
  console.error(`prebuild-node-gyp: only 'rebuild' is supported (got ${process.argv.slice(2).join(' ')})`);
  process.exit(1);
}
const extra = JSON.parse(process.env.COLTRAST_PREBUILD_CMAKE_ARGS || '[]');
const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js'), ...extra], { stdio: 'inherit' });
process.exit(r.status ?? 1);
