#!/usr/bin/env bash
# On a GPU machine with PyTorch (the device tool's image): build bench/gpu and time sharded
# SparseGPT on a synthetic 7B-shaped model on 1 GPU, then on every GPU (torchrun, one rank a
# GPU, NCCL). JSON lines to ${OUT:-.}/dist_oneshot.jsonl.
#   bash bench/gpu/run_dist_oneshot.sh [LAYERS] [NSAMPLES]
set -euo pipefail
LAYERS=${1:-2}; NSAMPLES=${2:-128}
OUT=${OUT:-.}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=python3
TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
SITE=$($PY -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
NCCL_H=$(find "$SITE/nvidia" -name nccl.h 2>/dev/null | head -1 || true)
echo "torch $($PY -c 'import torch; print(torch.__version__, torch.cuda.nccl.version())'); nccl.h: ${NCCL_H:-none}"
cmake -S bench/gpu -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DPRUNUS_DEPS_INCLUDE="$PWD/build-gpu-deps/include" -DPRUNUS_NCCL_INCLUDE_HINT="$(dirname "${NCCL_H:-/x/x}")" \
  -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
grep -E "gloo headers" "$OUT/cmake.log" || true
ninja -C build-gpu >"$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40; exit 1; }
export LD_LIBRARY_PATH="$SITE/torch/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
NGPU=$(nvidia-smi -L | wc -l)
A=(--layers "$LAYERS" --nsamples "$NSAMPLES" --seqlen 2048 --device cuda)
./build-gpu/dist_oneshot "${A[@]}" | tee -a "$OUT/dist_oneshot.jsonl"
if ((NGPU > 1)); then
  $PY -m torch.distributed.run --nproc-per-node "$NGPU" --no-python ./build-gpu/dist_oneshot "${A[@]}" \
    | grep '^{' | tee -a "$OUT/dist_oneshot.jsonl"
fi
