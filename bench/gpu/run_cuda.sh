#!/usr/bin/env bash
# On the GPU machine (the device tool's image: PyTorch with its CUDA libraries, no Debian
# packages): run the CUDA backend built here (-DPRUNUS_CUDA=ON), against PyTorch's copies of
# cudart, cuBLAS and cuSPARSELt. Binaries and data come in build-gpu-data/ (carried):
#   bin/{prunus-cuda,prunus_cuda_bench,prunus_cuda_test}, stories260K*.bin, tok512.bin, text.
# JSON lines and logs to ${OUT:-.}.
#   bash bench/gpu/run_cuda.sh STEP...   STEP: env test gemm gemm-quick torch torch-int8 torch-fp8 torch-quick ppl ppl-quick ppl-heads ppl-int8 e2e e2e-quick
# cuSPARSELt searches are recorded in $PRUNUS_CSLT_CACHE (here $OUT/tuning.txt).
set -uo pipefail
OUT=${OUT:-.}
D=build-gpu-data
SITE=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
libdir() { dirname "$(find "$SITE/nvidia" "$SITE/torch/lib" -name "$1" 2>/dev/null | head -1)"; }
export LD_LIBRARY_PATH="$(libdir 'libcusparseLt.so*'):$(libdir 'libcublas.so.*'):$(libdir 'libcudart.so.*'):${LD_LIBRARY_PATH:-}"
# CSLT=carried: run a newer cuSPARSELt than PyTorch's, carried as $D/cslt/libcusparseLt.so.0.xz
# (bench/gpu/strip_fatbin.py keeps only what an sm_90 GPU can load, so it fits the carry limit).
# PyTorch's own baseline keeps its bundled copy (its steps run with the path from before).
TORCH_LD=$LD_LIBRARY_PATH
if [[ ${CSLT:-} == carried ]]; then
  mkdir -p /tmp/cslt && xz -dc $D/cslt/libcusparseLt.so.0.xz > /tmp/cslt/libcusparseLt.so.0 || exit 2
  export LD_LIBRARY_PATH="/tmp/cslt:$LD_LIBRARY_PATH"
fi
chmod +x $D/bin/* 2>/dev/null
export PRUNUS_CSLT_CACHE=${PRUNUS_CSLT_CACHE:-$OUT/tuning.txt}
LIMIT=${LIMIT:-150}   # seconds per step: a stalled GPU kernel must not eat the whole lease
for step in "$@"; do
  echo "== $step $(date +%T)" | tee -a "$OUT/steps.log"
  case $step in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      LD_LIBRARY_PATH=$TORCH_LD python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cusparselt", torch.backends.cusparselt.version())'
      echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd $D/bin/prunus-cuda | grep -E "cusparseLt|cublas|cudart" ;;
    test) PRUNUS_CSLT_VERBOSE=1 timeout -s KILL $LIMIT $D/bin/prunus_cuda_test > "$OUT/cuda_test.log" 2> "$OUT/cuda_test.err"
          echo "rc=$?"; grep -E "FAIL|passed|failure|SKIP" "$OUT/cuda_test.log" | head -30; tail -2 "$OUT/cuda_test.log" ;;
    gemm)  # a configuration that faults is recorded in the tuning file and skipped by the retry
      start=$SECONDS
      for attempt in 1 2 3 4 5 6 7 8; do
        left=$((LIMIT - (SECONDS - start))); ((left > 10)) || break
        timeout -s KILL $left $D/bin/prunus_cuda_bench --row-only ${GEMM_ARGS:-} > "$OUT/gemm$attempt.jsonl" 2> "$OUT/gemm$attempt.err"
        rc=$?; echo "attempt $attempt rc=$rc"; grep -E "faulted|terminate|what" "$OUT/gemm$attempt.err" | head -5
        ((rc == 0)) && break
      done ;;
    gemm-quick) PRUNUS_CSLT_VERBOSE=1 timeout -s KILL $LIMIT $D/bin/prunus_cuda_bench --quick > "$OUT/gemm_quick.jsonl" 2> "$OUT/gemm_quick.err"; echo "rc=$?"; cat "$OUT/gemm_quick.jsonl" ;;
    torch) LD_LIBRARY_PATH=$TORCH_LD timeout -s KILL $LIMIT python3 bench/torch_semi_structured.py > "$OUT/torch.jsonl" 2> "$OUT/torch.err"; echo "rc=$?" ;;
    torch-int8) LD_LIBRARY_PATH=$TORCH_LD timeout -s KILL $LIMIT python3 bench/torch_semi_structured.py --int8 > "$OUT/torch_int8.jsonl" 2> "$OUT/torch_int8.err"; echo "rc=$?"; tail -3 "$OUT/torch_int8.err" ;;
    torch-fp8) LD_LIBRARY_PATH=$TORCH_LD timeout -s KILL $LIMIT python3 bench/torch_semi_structured.py --fp8 > "$OUT/torch_fp8.jsonl" 2> "$OUT/torch_fp8.err"; echo "rc=$?"; tail -3 "$OUT/torch_fp8.err" ;;
    torch-quick) LD_LIBRARY_PATH=$TORCH_LD python3 bench/torch_semi_structured.py --quick | tee "$OUT/torch_quick.jsonl" ;;
    ppl-quick)
      for args in "stories260K.bin --gemm dense" "stories260K_sgpt24.bin --gemm 2:4"; do
        set -- $args
        PRUNUS_CSLT_SEARCH=0 timeout -s KILL 60 $D/bin/prunus-cuda perplexity "$D/$1" $D/tinystories_valid.txt --tokenizer $D/tok512.bin "${@:2}" 2>>"$OUT/ppl.err" | tee -a "$OUT/ppl.jsonl"
      done ;;
    ppl-int8)  # W8A8 on 2:4 against the 16-bit paths, on the SparseGPT 2:4 model
      for args in "stories260K_sgpt24.bin --gemm dense" "stories260K_sgpt24.bin --gemm 2:4" \
                  "stories260K_sgpt24.bin --gemm int8-2:4" "stories260K_sgpt24.bin --gemm int8-2:4 --dtype bf16"; do
        set -- $args
        PRUNUS_CSLT_SEARCH=0 timeout -s KILL 60 $D/bin/prunus-cuda perplexity "$D/$1" $D/tinystories_valid.txt --tokenizer $D/tok512.bin "${@:2}" 2>>"$OUT/ppl.err" | tee -a "$OUT/ppl.jsonl"
      done ;;
    ppl-heads)  # stories260K with one KV group of four removed (prunus shrink --heads 0.25, a Hugging Face folder)
      for args in "stories260K_heads25 --gemm dense" "stories260K_heads25 --gemm dense --dtype bf16" "stories260K_heads25 --gemm auto"; do
        set -- $args
        PRUNUS_CSLT_SEARCH=0 timeout -s KILL 60 $D/bin/prunus-cuda perplexity "$D/$1" $D/tinystories_valid.txt --tokenizer $D/tok512.bin "${@:2}" 2>>"$OUT/ppl.err" | tee -a "$OUT/ppl.jsonl"
      done ;;
    ppl)
      for args in "stories260K.bin --gemm dense" "stories260K.bin --gemm dense --dtype bf16" \
                  "stories260K_sgpt24.bin --gemm dense" "stories260K_sgpt24.bin --gemm 2:4" "stories260K_sgpt24.bin --gemm auto" \
                  "stories260K_sgpt24.bin --gemm dense --dtype bf16" "stories260K_sgpt24.bin --gemm 2:4 --dtype bf16" \
                  "stories260K_mag24.bin --gemm dense" "stories260K_mag24.bin --gemm 2:4"; do
        set -- $args
        PRUNUS_CSLT_SEARCH=0 timeout -s KILL 60 $D/bin/prunus-cuda perplexity "$D/$1" $D/tinystories_valid.txt --tokenizer $D/tok512.bin "${@:2}" 2>>"$OUT/ppl.err" | tee -a "$OUT/ppl.jsonl"
      done
      $D/bin/prunus-cuda generate $D/stories260K.bin --tokenizer $D/tok512.bin --steps 200 | tee "$OUT/generate.txt" ;;
    e2e)  # retried like gemm: a faulting configuration is skipped by the next process
      start=$SECONDS
      for attempt in 1 2 3 4 5 6; do
        left=$((LIMIT - (SECONDS - start))); ((left > 10)) || break
        timeout -s KILL $left $D/bin/prunus-cuda bench --layers 2 ${E2E_ARGS:---prefill 512 2048 --decode 64} 2>"$OUT/e2e$attempt.err" > "$OUT/e2e$attempt.jsonl"
        rc=$?; echo "attempt $attempt rc=$rc"; cat "$OUT/e2e$attempt.jsonl"; grep -E "faulted|what" "$OUT/e2e$attempt.err" | head -3
        ((rc == 0)) && break
      done ;;
    e2e-quick) timeout -s KILL $LIMIT $D/bin/prunus-cuda bench --layers 2 --prefill 2048 --decode 32 2>"$OUT/e2e_quick.err" | tee "$OUT/e2e_quick.jsonl"; tail -20 "$OUT/e2e_quick.err" ;;
  esac
done
