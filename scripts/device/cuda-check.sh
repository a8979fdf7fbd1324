#!/usr/bin/env bash
# The one call that builds, tests and benchmarks coltrast's CUDA path on a GPU machine.
#
#   bash scripts/device/cuda-check.sh pack     here (no GPU needed): builds dist/ and packs node and a
#                                              pruned node_modules into .device/ (git-ignored) for a
#                                              machine that has no node or no network
#   bash scripts/device/cuda-check.sh run      on the GPU machine, from the repository root; results and
#                                              logs go to $OUT (or ./cuda-check-out)
#
# With the device tool: run `pack` here, then run(command="bash scripts/device/cuda-check.sh run",
# carry=[".device", "dist"], timeout_s=600). Each stage is logged; a failed stage does not stop the
# later ones, and the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

pack() {
  set -e
  npm run build:ts
  mkdir -p .device
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  tar -C "$(dirname "$(readlink -f "$(command -v node)")")" -cJf .device/node.tar.xz node
  # Only what running the build, tests and benchmarks needs: linux-x64 tokenizers, no TypeScript compiler.
  tar -cJf .device/node_modules.tar.xz --exclude='node_modules/typescript' \
    --exclude='node_modules/tokenizers/tokenizers.[!l]*' --exclude='node_modules/tokenizers/tokenizers.linux-[!x]*' \
    --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' node_modules
  du -sh .device/* dist
}

run() {
  OUT=${OUT:-$ROOT/cuda-check-out}
  mkdir -p "$OUT"
  failed=()
  stage() {
    local name=$1
    shift
    echo "=== $name: $*"
    if "$@" > >(tee "$OUT/$name.log") 2>&1; then echo "=== $name: ok"; else echo "=== $name: FAILED"; failed+=("$name"); fi
  }
  export PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
  nvcc --version | tail -1 | tee -a "$OUT/device.txt"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/device.txt"
  date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/device.txt"

  if ! command -v node >/dev/null; then
    mkdir -p /tmp/node/bin && tar -C /tmp/node/bin -xJf .device/node.tar.xz && export PATH=/tmp/node/bin:$PATH
  fi
  [ -d node_modules ] || tar -xJf .device/node_modules.tar.xz
  node --version | tee -a "$OUT/device.txt"

  # The addon against the Python torch's CUDA libtorch (CMakeLists.txt finds it through python3).
  stage build node scripts/build-native.js --CDCOLTRAST_CUDA=ON
  stage info node dist/cli.js info
  stage tests node node_modules/ava/entrypoints/cli.mjs
  stage sanitizer compute-sanitizer --tool memcheck --error-exitcode 1 node node_modules/ava/entrypoints/cli.mjs test/ops.test.ts --match 'cuda*'
  stage hf-reference python3 scripts/fixtures/check_reference_hf.py
  # A model trained and saved by coltrast must load in sentence-transformers and embed the same.
  stage python-load bash -c "node dist/cli.js train --data examples/ai-projects.json --output /tmp/ct-trained --epochs 2 --batch-size 8 --device cpu --json &&
    node dist/cli.js embed examples/sentences.txt --model /tmp/ct-trained --device cpu --output /tmp/ct-trained.jsonl &&
    python3 scripts/fixtures/check_python_load.py /tmp/ct-trained examples/sentences.txt /tmp/ct-trained.jsonl"
  stage bench-ops-bf16 node scripts/bench/ops.js --device cuda --dtype bfloat16 --json "$OUT/ops-cuda-bf16.json"
  stage bench-ops-f32 node scripts/bench/ops.js --device cuda --dtype float32 --json "$OUT/ops-cuda-f32.json"
  stage bench-eager python3 scripts/bench/ops_eager.py --json "$OUT/ops-eager.json"
  stage bench-train node scripts/bench/train.js --device cuda --shapes minilm,base --batch-size 64 --steps 10 --json "$OUT/train-cuda.json"
  stage bench-embed node scripts/bench/embed.js --device cuda --shapes tiny,minilm,base --texts 4000 --batch-size 128 --json "$OUT/embed-cuda.json"

  if [ ${#failed[@]} -gt 0 ]; then
    echo "failed stages: ${failed[*]}"
    exit 1
  fi
  echo "all stages passed"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *)
    echo "usage: bash scripts/device/cuda-check.sh pack|run" >&2
    exit 2
    ;;
esac
