#!/usr/bin/env bash
# Prunus set-up and entry point.
#   ./run.sh              install what is missing, build (Release, build/), run the main job
#   ./run.sh test         same set-up, then the whole test suite
#   ./run.sh bench        same set-up, then the benchmarks
#   ./run.sh fuzz [SECS]  same set-up, then every parser's libFuzzer target for SECS (default 600) each
# A second run skips what is already installed and built (ccache + ninja keep builds incremental).
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config
  libtorch-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev libonnx-dev libprotobuf-dev libgloo-dev
  libsentencepiece-dev
  dataset-fashion-mnist
  python3 python3-venv
  clang libclang-rt-14-dev
)
# Only for ./run.sh test: the browser that opens report.html, and a font for its screenshot.
TEST_PACKAGES=(chromium fonts-dejavu-core)

install_missing() {
  local missing=()
  for p in "$@"; do
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

# libFuzzer targets (clang, ASan + UBSan) over the seed corpora in tests/data/fuzz; new
# findings are written to build-fuzz/findings/ and fail the run.
fuzz() {
  local secs=$1
  CC=clang CXX=clang++ cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz --parallel "$(nproc)"
  mkdir -p build-fuzz/findings
  local failed=0
  # The corrupt-file corpus once through the sanitizer builds (each file one input): no
  # ASan/UBSan report. llama2.c files get the target's selector byte (odd: checkpoint).
  mkdir -p build-fuzz/corrupt_llama2c
  for f in tests/data/corrupt/llama_*.bin; do
    { printf '\x01'; cat "$f"; } >"build-fuzz/corrupt_llama2c/$(basename "$f")"
  done
  mkdir -p build-fuzz/corrupt_hf
  for f in tests/data/corrupt/hf_*/config.json; do
    { printf '\x00'; cat "$f"; } >"build-fuzz/corrupt_hf/$(basename "$(dirname "$f")")_config"
  done
  for f in tests/data/corrupt/hf_*/model.safetensors.index.json; do
    { printf '\x01'; cat "$f"; } >"build-fuzz/corrupt_hf/$(basename "$(dirname "$f")")_index"
  done
  for t in safetensors idx llama2c hf recipe; do
    case $t in
      safetensors) inputs=(tests/data/corrupt/*.safetensors tests/data/corrupt/hf_*/*.safetensors) ;;
      idx) inputs=(tests/data/corrupt/idx_*/*-ubyte) ;;
      llama2c) inputs=(build-fuzz/corrupt_llama2c/*) ;;
      hf) inputs=(build-fuzz/corrupt_hf/*) ;;
      recipe) inputs=(tests/data/corrupt/recipe_*.yaml) ;;
    esac
    if ! ./build-fuzz/fuzz_$t "${inputs[@]}" >"build-fuzz/corrupt_$t.log" 2>&1; then
      echo "corrupt corpus through fuzz_$t FAILED: $(grep -m1 SUMMARY "build-fuzz/corrupt_$t.log")"
      failed=1
    else
      echo "corrupt corpus through fuzz_$t (ASan+UBSan): ${#inputs[@]} files, no report"
    fi
  done
  for t in safetensors idx llama2c graph recipe hf; do
    mkdir -p "build-fuzz/corpus/$t"
    echo "fuzz_$t: ${secs}s"
    if ! ./build-fuzz/fuzz_$t -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build-fuzz/findings/ \
         "build-fuzz/corpus/$t" "tests/data/fuzz/$t" >"build-fuzz/fuzz_$t.log" 2>&1; then
      echo "fuzz_$t FAILED: $(grep -m1 SUMMARY "build-fuzz/fuzz_$t.log") (see build-fuzz/fuzz_$t.log)"
      failed=1
    else
      grep -E "stat::number_of_executed_units" "build-fuzz/fuzz_$t.log" | sed "s/^/  /"
    fi
  done
  return $failed
}

python_env() {
  # Test-time cross-checks only: the reference safetensors package, from PyPI, in .venv.
  if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import safetensors, numpy, onnxruntime, tokenizers, sentencepiece" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "safetensors>=0.4" "numpy>=1.24" "onnxruntime>=1.16" "tokenizers>=0.15" "sentencepiece>=0.1.99"
  fi
}

# The CUDA backend where nvcc exists (no GPU needed to build): cuSPARSELt's headers and library
# from its PyPI wheel (the 0.8.0 that PyTorch 2.11 ships) into .cusparselt/, the CUDA targets
# in build-cuda/ (-DPRUNUS_CUDA=ON), then their test, which runs on a GPU and otherwise says it
# was skipped.
cuda_build_and_test() {
  local nvcc
  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  if [[ -z $nvcc ]]; then
    echo "CUDA backend: no nvcc on this machine, so -DPRUNUS_CUDA=ON was not built"
    return
  fi
  if [[ ! -f .cusparselt/include/cusparseLt.h ]]; then
    rm -rf .cusparselt/wheel && mkdir -p .cusparselt/wheel
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d .cusparselt/wheel "nvidia-cusparselt-cu13==0.8.0"
    .venv/bin/python - <<'PY'
import glob, os, zipfile
z = zipfile.ZipFile(glob.glob(".cusparselt/wheel/*.whl")[0])
for n in z.namelist():
    for part in ("include", "lib"):
        pre = f"nvidia/cusparselt/{part}/"
        if n.startswith(pre) and not n.endswith("/"):
            dst = os.path.join(".cusparselt", part, n[len(pre):])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with z.open(n) as src, open(dst, "wb") as out:
                out.write(src.read())
PY
    ln -sf libcusparseLt.so.0 .cusparselt/lib/libcusparseLt.so
    rm -rf .cusparselt/wheel
  fi
  if [[ ! -f build-cuda/build.ninja ]]; then
    cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRUNUS_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  fi
  cmake --build build-cuda --parallel "$(nproc)" --target prunus_cuda prunus-cuda prunus_cuda_bench prunus_cuda_test
  local rc=0
  ./build-cuda/prunus_cuda_test || rc=$?
  if ((rc == 77)); then
    echo "CUDA backend: built and linked; its test was skipped (no GPU here)"
  elif ((rc != 0)); then
    echo "CUDA backend test FAILED"
    return 1
  fi
}

if [[ "${1:-}" == test ]]; then install_missing "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"; else install_missing "${PACKAGES[@]}"; fi
build

case "${1:-}" in
  "")
    exec ./build/prunus run
    ;;
  test)
    python_env
    (cd build && ctest --output-on-failure --parallel 2 --timeout 900)
    cuda_build_and_test
    # A short fuzzing smoke run of every parser (./run.sh fuzz runs them for longer).
    fuzz 10
    ;;
  fuzz)
    fuzz "${2:-600}"
    ;;
  bench)
    exec ./build/bench/prunus_bench "${@:2}"
    ;;
  *)
    echo "usage: ./run.sh [test|bench]" >&2
    exit 2
    ;;
esac
