#!/usr/bin/env bash
# The decode figures of docs/benchmarks.md: both paths in one process (speed), then one
# process per model (resident memory). Writes JSON lines to the file given (default stdout).
# FILE_DIR=DIR: every model goes through a llama2.c file in DIR (written once, ~2.7 GB for
# vocabulary 32,000) and Llama::load, so the embedding table is read from the file (mapped).
set -euo pipefail
bin=${BIN:-build/bench/prunus_decode_bench}
out=${1:-/dev/stdout}
file=()
[[ -n ${FILE_DIR:-} ]] && file=(--file "$FILE_DIR")
: >"$out"
for vocab in 32000 512; do
  for t in 1 2; do
    for s in 0.5 0.7; do "$bin" --compare --sparsity "$s" --threads "$t" --vocab "$vocab" --tokens 32 "${file[@]}" >>"$out"; done
  done
  for a in "--dense" "--sparsity 0.5" "--sparsity 0.7"; do "$bin" $a --vocab "$vocab" --tokens 8 "${file[@]}" >>"$out"; done
done
