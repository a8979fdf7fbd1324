#!/usr/bin/env bash
# Builds the CUDA addon on a machine without a GPU, as the GPU machine builds it (CMake with COLTRAST_CUDA=ON
# against a pip PyTorch 2.x with CUDA, nvcc for the kernels), checks what came out, and runs it. The torch
# wheel is the one this machine image keeps on disk, unpacked into build/pyenv-cuda with --no-deps (headers,
# CMake config and libraries are all a build needs), plus the libnvrtc wheel its CMake config links; the
# NVIDIA runtime wheels follow for loading. The addon goes to build/cuda-check/, beside the local build,
# from its own CMake folder.
#   bash scripts/check-cuda-build.sh [--skip-if-missing] [--clean]   (.ci/run runs it; about 3 minutes on 2 cores)
# --skip-if-missing: without nvcc, the wheels or the disk room they need unpacked, say SKIPPED and exit 0 instead
#   of failing.
# --clean: remove the unpacked wheels (build/pyenv-cuda, several GB) afterwards, keeping the addon (build/cuda-check)
#   and its CMake folder, which the compile tests read (test/helpers/compile.ts); the next run unpacks them again.
# Checks: the build succeeds, the addon links libtorch_cuda, libc10_cuda and the CUDA runtime, the kernels'
# device code is linked in, and the addon loads and passes the CPU cases of the native tests (below).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check-cuda-build: $*" >&2; exit 1; }
skip_if_missing=0
clean=0
for arg in "$@"; do
  case "$arg" in
    --skip-if-missing) skip_if_missing=1 ;;
    --clean) clean=1 ;;
    *) fail "unknown argument $arg (usage: bash scripts/check-cuda-build.sh [--skip-if-missing] [--clean])" ;;
  esac
done
missing() {
  [ "$skip_if_missing" = 1 ] && { echo "SKIPPED: scripts/check-cuda-build.sh: $*"; exit 0; }
  fail "$*"
}
env=build/pyenv-cuda
# --clean: on every way out, a skip included (a failed unpack leaves a part of its wheels behind).
[ "$clean" = 1 ] && trap 'rm -rf "$env"' EXIT

# Disk room. The wheels unpack to about 4 GB (torch 2.14 with libnvrtc 1.3 GB, the NVIDIA runtime 2.7 GB): each
# unpack first checks that the disk holds what it will write plus RESERVE_GB (default 3) for the tests that follow,
# and skips (or fails) saying so rather than filling the disk, as it once did midway through a CI run.
reserve=$(( ${RESERVE_GB:-3} * 1024 * 1024 * 1024 ))
gb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1073741824 }'; }
room_for() { # <what> <wheel>...
  local what=$1 need free
  shift
  need=$(/usr/bin/python3 -c 'import sys, zipfile; print(sum(i.file_size for w in sys.argv[1:] for i in zipfile.ZipFile(w).infolist()))' "$@")
  mkdir -p build
  free=$(df -P -B1 build | awk 'NR == 2 { print $4 }')
  (( free >= need + reserve )) ||
    missing "$what unpack to $(gb "$need") GB and the disk of build/ has $(gb "$free") GB free: not enough with $(gb "$reserve") GB kept for the tests (RESERVE_GB)"
}
command -v nvcc >/dev/null || missing "no nvcc: install the CUDA toolkit (compiler only is enough)"
wheel=$(ls /opt/pypi-more/files/torch-2.*-cp311-*manylinux*_x86_64.whl /opt/pypi/files/torch-2.*-cp311-*manylinux*_x86_64.whl 2>/dev/null | grep -v '+cpu' | sort -V | tail -n 1 || true)
nvrtc=$(ls /opt/pypi-more/files/nvidia_cuda_nvrtc-*.whl /opt/pypi/files/nvidia_cuda_nvrtc-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$wheel" ] && [ -n "$nvrtc" ] || missing "no CUDA torch wheel and libnvrtc wheel on this machine's disk (/opt/pypi*)"

if ! [ -f "$env/.wheels" ] || [ "$(cat "$env/.wheels")" != "$wheel $nvrtc" ]; then
  rm -rf "$env"
  room_for "$(basename "$wheel") and $(basename "$nvrtc")" "$wheel" "$nvrtc"
  echo "check-cuda-build: unpacking $(basename "$wheel") and $(basename "$nvrtc") into $env"
  /usr/bin/python3 -m venv "$env"
  "$env/bin/pip" install -q --no-index --no-deps "$wheel" "$nvrtc" || { rm -rf "$env"; missing "unpacking the wheels into $env failed (see above)"; }
  echo "$wheel $nvrtc" > "$env/.wheels"
fi
torch_cmake=$("$env/bin/python" -c 'import sys, glob; print(glob.glob(sys.prefix + "/lib/python3*/site-packages/torch/share/cmake/Torch")[0])')

out=build/cuda-check
rm -rf "$out"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# nvcc's warnings are errors here (the kernels get the cache's CMAKE_CUDA_FLAGS), as in test/cuda-compile.test.ts,
# which skips its own compiles of the addon's kernels and CUDA-only C++ when this build is newer than the sources.
COLTRAST_BUILD_DIR=build/cmake-cuda-check node scripts/build-native.js --CDTorch_DIR="$torch_cmake" --CDCOLTRAST_CUDA=ON \
  "--CDCMAKE_CUDA_FLAGS=-Werror all-warnings" --CDCOLTRAST_OUTPUT_DIR="$(pwd)/$out" || fail "the CUDA build failed (see above)"
addon=$out/coltrast.node
[ -f "$addon" ] || fail "the build left no $addon"

needed=$(readelf -d "$addon" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
for lib in libtorch_cuda.so libc10_cuda.so libcudart.so; do
  [[ " $needed" == *" $lib"* ]] || fail "$addon does not link $lib (it needs: $needed)"
done
# The kernels' device code rides in the addon's .nv_fatbin section (which architectures are in it needs
# cuobjdump, which a compiler-only toolkit lacks; test/cuda-compile.test.ts compiles each architecture, and
# scripts/device/cuda-check.sh inspects the machine code on the GPU machine).
fatbin=$(readelf -S -W "$addon" | awk '{ for (i = 1; i < NF; i++) if ($i == ".nv_fatbin") print $(i + 4) }')
[ -n "$fatbin" ] && [ $((16#$fatbin)) -gt 0 ] || fail "$addon has no .nv_fatbin section: the kernels were not linked in"
fatbin=$((16#$fatbin))
echo "check-cuda-build: OK: $(basename "$wheel" | cut -d- -f1-2) with nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'):" \
  "$addon links ${needed}and holds $fatbin bytes of device code"

# Then it is loaded and run. libtorch_cuda links the NVIDIA runtime libraries, which come from their own
# wheels. Once those wheels are beside the torch wheel (--no-deps), the addon loads on a machine without a GPU,
# because the driver (libcuda) is opened only when CUDA is first used. The tests of the native code that a CUDA
# build compiles differently (COLTRAST_WITH_CUDA) then run on it, in a copy of the package whose local build
# it is. Their CUDA cases skip, since there is no GPU; their CPU cases run through the CUDA build.
# The list is what libtorch_cuda.so links (readelf -d), besides nvrtc above.
runtime=(nvidia-cuda-runtime nvidia-cublas nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusparse nvidia-cusparselt-cu13
  nvidia-nccl-cu13 nvidia-cudnn-cu13 nvidia-nvshmem-cu13 nvidia-nvjitlink)
if ! [ -f "$env/.runtime" ]; then
  files=()
  for name in "${runtime[@]}"; do
    file=$(ls /opt/wheels/"${name//-/_}"-[0-9]*.whl /opt/pypi/files/"${name//-/_}"-[0-9]*.whl /opt/pypi-more/files/"${name//-/_}"-[0-9]*.whl 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$file" ] || missing "the NVIDIA runtime wheel $name is not on this machine's disk (/opt/wheels, /opt/pypi*): the CUDA build was not loaded"
    files+=("$file")
  done
  room_for "the NVIDIA runtime wheels (${runtime[*]})" "${files[@]}"
  # A failed unpack (a full disk, say) leaves part of them: the whole folder goes, and the next run unpacks again.
  "$env/bin/pip" install -q --no-index --no-deps "${files[@]}" || { rm -rf "$env"; missing "unpacking the NVIDIA runtime wheels into $env failed (see above): the CUDA build was not loaded"; }
  touch "$env/.runtime"
fi
pkg=$(mktemp -d)/coltrast
mkdir -p "$pkg/build/Release"
cp -r package.json ava.config.mjs tsconfig.json lib dist test examples default-model scripts "$pkg"/
ln -s "$(pwd)/node_modules" "$pkg/node_modules"
[ -d build/pyenv ] && ln -s "$(pwd)/build/pyenv" "$pkg/build/pyenv"
cp "$addon" "$pkg/build/Release/"
info=$(cd "$pkg" && COLTRAST_BINARY=source node dist/cli.js info) ||
  fail "the CUDA build does not load: (cd $pkg && COLTRAST_BINARY=source node dist/cli.js info)"
grep -q 'kernels built for' <<< "$info" || fail "the CUDA build does not say it has kernels: $info"
(cd "$pkg" && COLTRAST_BINARY=source node node_modules/ava/entrypoints/cli.mjs test/ops.test.ts test/encoder.test.ts \
  test/grad-cache.test.ts test/precision.test.ts test/cpu-allocator.test.ts test/decoder.test.ts test/encoders.test.ts test/generator.test.ts) ||
  fail "the CPU tests fail on the CUDA build (package copy: $pkg)"
rm -rf "$(dirname "$pkg")"
echo "check-cuda-build: OK: the CUDA build loads without a GPU and passes the CPU cases of its native tests"
