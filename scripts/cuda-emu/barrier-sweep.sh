#!/usr/bin/env bash
# Does the CUDA emulator notice a missing barrier? For each `__syncthreads();` line of native/kernels (or those
# named), a copy of native/ and scripts/cuda-emu/ with that one line removed is built and its kernel checks
# (test_kernels --quick) run with the emulator's thread orders (EMU_SCHEDULE, scripts/cuda-emu/emu.cpp):
# forward and warps always, reverse and warps-reverse only when both of those passed. One line per barrier:
#   <file>:<line> forward=CAUGHT|pass warps=... reverse=...|- warps-reverse=...|-
# "pass" in every column means the kernel checks do not notice that barrier's absence (it may be redundant for
# the shapes tested, or guard a race no order exposes: compute-sanitizer's racecheck on a GPU is the real check).
#   bash scripts/cuda-emu/barrier-sweep.sh [<file>:<line> ...]   (about 3 to 5 minutes a barrier on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d /tmp/coltrast-barrier-sweep-XXXXXX)"
trap 'rm -rf "$work"' EXIT

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd "$root/native/kernels" && grep -n '__syncthreads();' *.cu *.cuh | cut -d: -f1,2)
fi

run() {  # <schedule>: CAUGHT when the kernel checks fail (or crash), pass when they pass
  if EMU_SCHEDULE="$1" timeout 600 "$work/out/test_kernels" --quick > "$work/$1.log" 2>&1 &&
    grep -q 'all kernel checks passed' "$work/$1.log"; then
    echo pass
  else
    echo CAUGHT
  fi
}

for target in "${targets[@]}"; do
  file=${target%%:*}
  line=${target##*:}
  rm -rf "$work/native" "$work/scripts"
  mkdir -p "$work/scripts"
  cp -r "$root/native" "$work/native"
  cp -r "$here" "$work/scripts/cuda-emu"
  if ! sed -n "${line}p" "$work/native/kernels/$file" | grep -q '__syncthreads();'; then
    echo "$target: no __syncthreads(); on that line"
    continue
  fi
  sed -i "${line}s/__syncthreads();/\/* removed by barrier-sweep *\//" "$work/native/kernels/$file"
  if ! bash "$work/scripts/cuda-emu/build.sh" "$work/out" > "$work/build.log" 2>&1; then
    echo "$target: build failed (see a rerun of scripts/cuda-emu/build.sh)"
    continue
  fi
  forward=$(run forward)
  warps=$(run warps)
  reverse=- warpsReverse=-
  if [ "$forward" = pass ] && [ "$warps" = pass ]; then
    reverse=$(run reverse)
    warpsReverse=$(run warps-reverse)
  fi
  echo "$target forward=$forward warps=$warps reverse=$reverse warps-reverse=$warpsReverse"
done
