#!/usr/bin/env bash
# Prunus set-up and entry point.
#   ./run.sh              install what is missing, build (Release, build/), run the main job
#   ./run.sh test         same set-up, then the whole test suite
#   ./run.sh bench        same set-up, then the benchmarks
# A second run skips what is already installed and built (ccache + ninja keep builds incremental).
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config
  libtorch-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev
  dataset-fashion-mnist
  python3 python3-venv
)

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  echo "run.sh: installing ${missing[*]}"
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  # ccache across the precompiled libtorch header needs these.
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  if [[ ! -f build/build.ninja ]]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build build --parallel "$(nproc)"
}

python_env() {
  # Test-time cross-checks only: the reference safetensors package, from PyPI, in .venv.
  if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import safetensors, numpy" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "safetensors>=0.4" "numpy>=1.24"
  fi
}

install_missing
build

case "${1:-}" in
  "")
    exec ./build/prunus run
    ;;
  test)
    python_env
    cd build
    exec ctest --output-on-failure --parallel 2 --timeout 900
    ;;
  bench)
    exec ./build/bench/prunus_bench "${@:2}"
    ;;
  *)
    echo "usage: ./run.sh [test|bench]" >&2
    exit 2
    ;;
esac
