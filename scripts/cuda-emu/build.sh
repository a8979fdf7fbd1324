#!/usr/bin/env bash
# Builds the kernels of native/kernels for the CPU emulator, with two checks:
#   bash scripts/cuda-emu/build.sh <out-dir> [extra g++ flags]
#   <out-dir>/test_kernels [--quick]  the kernels alone against float64 (native/kernels/test_kernels.cu)
#   <out-dir>/test_ops                the CUDA ops' ATen side (native/ops/*_cuda.cc) over them (test_ops.cc)
# transform.py rewrites the CUDA-only syntax (<<<>>> launches, __shared__ arrays, the inline PTX of
# ptx.cuh) into calls on emu.h, which runs every CUDA thread of a block as a fiber on the CPU. It checks
# the kernels' indexing, masking, tiling and reductions on machines without a GPU (CI); the tensor-core
# instructions are emulated from the PTX documentation, so real hardware behaviour still needs the GPU run
# (scripts/device/cuda-check.sh). test_ops links libtorch: Debian's by default, or the one whose prefix
# (holding include/ and lib/) COLTRAST_EMU_TORCH names. EMU_SCHEDULE picks the order threads run in (emu.cpp);
# barrier-sweep.sh removes one __syncthreads at a time to see which orders notice.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
native="$here/../../native"
out="${1:?usage: build.sh <out-dir> [g++ flags]}"
shift
mkdir -p "$out/obj"
rm -rf "$out/src"
python3 "$here/transform.py" "$native/kernels" "$out/src"

if [ -n "${COLTRAST_EMU_TORCH:-}" ]; then
  torch=(-I "$COLTRAST_EMU_TORCH/include" -I "$COLTRAST_EMU_TORCH/include/torch/csrc/api/include")
  torch_link=(-L "$COLTRAST_EMU_TORCH/lib" -Wl,-rpath,"$COLTRAST_EMU_TORCH/lib")
else  # Debian's libtorch-dev: headers under /usr/include, libraries on the default path
  torch=(-I /usr/include/torch/csrc/api/include)
  torch_link=()
fi

# One object per source, two compilers at a time (the libtorch sources take most of the time).
pids=()
compile() {  # <object> <g++ arguments...>
  local object="$1"
  shift
  g++ "$@" -c -o "$out/obj/$object" &
  pids+=($!)
  if [ "${#pids[@]}" -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
}
# -U_FORTIFY_SOURCE: the fibers switch stacks with _longjmp, which a fortified build checks and refuses (emu.h).
kernel=(-std=c++20 -O2 -U_FORTIFY_SOURCE -I "$here/include" -I "$out/src" -include emu.h "$@")
ops=(-std=c++17 -O2 -I "$here/include" "${torch[@]}" -I "$native" -DCOLTRAST_WITH_CUDA -DCOLTRAST_CUDA_EMULATOR "$@")
compile contrastive_cuda.o "${ops[@]}" "$native/ops/contrastive_cuda.cc"
compile maxsim_cuda.o "${ops[@]}" "$native/ops/maxsim_cuda.cc"
compile maxsim_cpu.o "${ops[@]}" "$native/ops/maxsim_cpu.cc"
compile test_ops.o "${ops[@]}" "$here/test_ops.cc"
compile error.o "${ops[@]}" "$native/error.cc"
compile emu.o "${kernel[@]}" "$here/emu.cpp"
compile maxsim.o "${kernel[@]}" "$out/src/maxsim.cpp"
compile contrastive.o "${kernel[@]}" "$out/src/contrastive.cpp"
compile test_kernels.o "${kernel[@]}" "$out/src/test_kernels.cpp"
for pid in "${pids[@]}"; do wait "$pid"; done

o="$out/obj"
g++ -o "$out/test_kernels" "$o/emu.o" "$o/maxsim.o" "$o/contrastive.o" "$o/test_kernels.o"
g++ -o "$out/test_ops" "$o/test_ops.o" "$o/contrastive_cuda.o" "$o/maxsim_cuda.o" "$o/maxsim_cpu.o" "$o/error.o" \
  "$o/emu.o" "$o/contrastive.o" "$o/maxsim.o" \
  "${torch_link[@]}" -ltorch_cpu -lc10 -pthread
