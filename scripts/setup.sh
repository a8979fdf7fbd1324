#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine to build and run coltrast from a clone: installs libtorch (CPU),
# OpenBLAS (without it libtorch falls back to the ~30x slower reference BLAS), the JSON headers, python3
# (the CUDA emulator test rewrites kernel sources with it), python3-torch (the plain-PyTorch baseline of
# test/parity.test.ts and scripts/bench/parity.js: Debian's torch, the same libtorch build as libtorch-dev),
# PostgreSQL + pgvector (test/export.test.ts), libtorch 2.x's headers (test/torch2-compile.test.ts) and
# the build tools when missing, then installs npm dependencies, builds the addon and TypeScript, and files
# the build as this machine's CPU prebuild (prebuilds/, what `npm pack` ships; test/pack.test.ts installs it),
# and a second one against PyTorch 2.x (build/pyenv's torch).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "setup: installing ${need[*]}"
  if [ "$apt_updated" -eq 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# postgresql (Debian 12: PostgreSQL 15) and pgvector: test/export.test.ts loads an exported index into a
# throwaway cluster of its own (temp folder, unix socket); the "main" cluster the package creates is not used.
apt_install libtorch-dev libopenblas0-pthread nlohmann-json3-dev cmake g++ ninja-build python3 python3-torch python3-venv postgresql
pg=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if [ ! -f "/usr/share/postgresql/$pg/extension/vector.control" ]; then
  if apt-cache show "postgresql-$pg-pgvector" >/dev/null 2>&1; then
    apt_install "postgresql-$pg-pgvector"
  else
    # Debian 12 has no pgvector package (Debian ships it from 13, trixie): build trixie's source package
    # (Debian's archive, signature-checked by apt; a private source list, the system's is not touched).
    apt_install "postgresql-server-dev-$pg" make dpkg-dev
    work=$(mktemp -d)
    chmod 755 "$work"
    echo "deb-src http://deb.debian.org/debian trixie main" > "$work/sources.list"
    mkdir -p "$work/lists/partial"
    apt_src=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists")
    echo "setup: building pgvector for PostgreSQL $pg from Debian's source package"
    $sudo apt-get "${apt_src[@]}" update -qq
    (cd "$work" && $sudo apt-get "${apt_src[@]}" source -qq pgvector >/dev/null)
    # OPTFLAGS= : no -march=native; with_llvm=no : no JIT bitcode (needs clang).
    $sudo make -s -C "$work"/pgvector-*/ PG_CONFIG="/usr/lib/postgresql/$pg/bin/pg_config" OPTFLAGS= with_llvm=no
    $sudo make -s -C "$work"/pgvector-*/ PG_CONFIG="/usr/lib/postgresql/$pg/bin/pg_config" OPTFLAGS= with_llvm=no install
    $sudo rm -rf "$work"
  fi
fi

# libtorch 2.x's headers (Debian 13's, unpacked under build/, nothing installed) for test/torch2-compile.test.ts.
bash scripts/fetch-torch2-headers.sh || echo "setup: WARNING: libtorch 2.x headers not fetched; test/torch2-compile.test.ts will skip"

# Python's transformers and sentence-transformers (with its trainer's datasets and accelerate) and a CPU
# PyTorch 2.x, in build/pyenv: the reference implementation for test/python-interop.test.ts and the
# benchmarks' Python side, and the libtorch 2.x that the second CPU prebuild below is built against. Installed only from the wheels this machine image keeps on disk (its pip configuration
# points at them), with --no-index: nothing is downloaded. Without them those checks skip and say why.
pyenv=build/pyenv
wheels=()
for dir in /opt/wheels /opt/pypi/files /opt/pypi-more/files; do [ -d "$dir" ] && wheels+=(--find-links "$dir"); done
if [ ! -x "$pyenv/bin/python" ] || ! "$pyenv/bin/python" -c 'import sentence_transformers' 2>/dev/null; then
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "setup: installing sentence-transformers and transformers into $pyenv from this machine's wheels"
    rm -rf "$pyenv"
    /usr/bin/python3 -m venv "$pyenv" &&
      "$pyenv/bin/pip" install -q --no-index "${wheels[@]}" sentence-transformers transformers datasets accelerate ||
      { echo "setup: WARNING: $pyenv could not be made; test/python-interop.test.ts will skip"; rm -rf "$pyenv"; }
  else
    echo "setup: WARNING: no local wheels for sentence-transformers; test/python-interop.test.ts will skip"
  fi
fi
# bm25s and PyStemmer (Snowball's English stemmer): the references of test/bm25-check.test.ts.
if [ -x "$pyenv/bin/python" ] && ! "$pyenv/bin/python" -c 'import bm25s, Stemmer' 2>/dev/null; then
  "$pyenv/bin/pip" install -q --no-index "${wheels[@]}" bm25s PyStemmer ||
    echo "setup: WARNING: bm25s and PyStemmer not installed into $pyenv; test/bm25-check.test.ts will skip"
fi
# PEFT: the reference for LoRA adapters (test/python-interop.test.ts).
if [ -x "$pyenv/bin/python" ] && ! "$pyenv/bin/python" -c 'import peft' 2>/dev/null; then
  "$pyenv/bin/pip" install -q --no-index "${wheels[@]}" peft ||
    echo "setup: WARNING: peft not installed into $pyenv; the LoRA checks of test/python-interop.test.ts will skip"
fi

npm ci --no-audit --no-fund
npm run build
npm run make-prebuild
# A second CPU prebuild, against build/pyenv's PyTorch 2.x: what an npm user with a pip torch loads, and what
# `npm run test:libtorch2` runs the tests on (.ci/run does).
if [ -x "$pyenv/bin/python" ]; then
  torch_cmake=$("$pyenv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  node scripts/prebuild.js -- "--CDTorch_DIR=$torch_cmake/Torch"
fi
