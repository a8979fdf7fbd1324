#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine to build and run coltrast from a clone: installs libtorch (CPU),
# OpenBLAS (without it libtorch falls back to the ~30x slower reference BLAS), the JSON headers, python3
# (the CUDA emulator test rewrites kernel sources with it) and
# the build tools when missing, then installs npm dependencies, builds the addon and TypeScript, and files
# the build as this machine's CPU prebuild (prebuilds/, what `npm pack` ships; test/pack.test.ts installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in libtorch-dev libopenblas0-pthread nlohmann-json3-dev cmake g++ ninja-build python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm run build
npm run make-prebuild
