#!/usr/bin/env bash
# The decode figures of docs/benchmarks.md: both paths in one process (speed), then one
# process per model (resident memory). Writes JSON lines to the file given (default stdout).
set -euo pipefail
bin=${BIN:-build/bench/prunus_decode_bench}
out=${1:-/dev/stdout}
: >"$out"
for vocab in 32000 512; do
  for t in 1 2; do
    for s in 0.5 0.7; do "$bin" --compare --sparsity "$s" --threads "$t" --vocab "$vocab" --tokens 32 >>"$out"; done
  done
  for a in "--dense" "--sparsity 0.5" "--sparsity 0.7"; do "$bin" $a --vocab "$vocab" --tokens 8 >>"$out"; done
done
