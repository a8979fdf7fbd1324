#!/usr/bin/env bash
# Builds the kernels of native/kernels and their standalone check (test_kernels.cu) for the CPU emulator:
#   bash scripts/cuda-emu/build.sh <out-dir> [extra g++ flags]   ->  <out-dir>/test_kernels [--quick]
# transform.py rewrites the CUDA-only syntax (<<<>>> launches, __shared__ arrays, the inline PTX of
# ptx.cuh) into calls on emu.h, which runs every CUDA thread of a block as a fiber on the CPU. It checks
# the kernels' indexing, masking, tiling and reductions on machines without a GPU (CI); the tensor-core
# instructions are emulated from the PTX documentation, so real hardware behaviour still needs the GPU run
# (scripts/device/cuda-check.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh <out-dir> [g++ flags]}"
shift
mkdir -p "$out"
rm -rf "$out/src"
python3 "$here/transform.py" "$here/../../native/kernels" "$out/src"
g++ -std=c++20 -O2 -I "$here/include" -I "$out/src" -include emu.h "$@" -o "$out/test_kernels" \
  "$here/emu.cpp" "$out/src/maxsim.cpp" "$out/src/contrastive.cpp" "$out/src/test_kernels.cpp"
