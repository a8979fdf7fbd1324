#!/usr/bin/env bash
# Fetches the C++ headers of a PyTorch 2.x libtorch with CUDA (Debian 13 "trixie"'s libtorch-cuda-dev, from
# Debian's archive, signature-checked by apt; a private source list, the system's apt state is not touched)
# into build/torch2-headers/include, for test/torch2-compile.test.ts: every addon source is compiled against
# them (syntax only; Debian 12 cannot link or load trixie's libraries), so code that builds against
# Debian 12's libtorch 1.13 but not against 2.x (the GPU machine's libtorch) is caught on every machine.
# Only headers are unpacked; nothing is installed. Usage: bash scripts/fetch-torch2-headers.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

dest=build/torch2-headers
if [ -f "$dest/include/torch/csrc/api/include/torch/version.h" ] && [ "${1:-}" != "--force" ]; then
  echo "fetch-torch2-headers: $dest is there (--force fetches again)"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
work=$(mktemp -d)
trap '$sudo rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/lists/partial" "$work/archives/partial"
# contrib: Debian builds the CUDA variant of PyTorch there (it needs the non-free CUDA toolkit).
echo "deb http://deb.debian.org/debian trixie main contrib" > "$work/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
  -o Dir::Cache::archives="$work/archives" -o APT::Sandbox::User=root)
$sudo apt-get "${apt_opts[@]}" update -qq
(cd "$work" && $sudo apt-get "${apt_opts[@]}" download -qq libtorch-cuda-dev)
deb=$(ls "$work"/libtorch-cuda-dev_*.deb)
$sudo dpkg-deb -x "$deb" "$work/root"
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$work/root/usr/include" "$dest/include"
echo "$(basename "$deb")" > "$dest/SOURCE"
echo "fetch-torch2-headers: $(basename "$deb") headers in $dest/include"
