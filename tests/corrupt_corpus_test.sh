#!/usr/bin/env bash
# Every file of tests/data/corrupt/ (made by make_corpus.py) through the verb that reads that
# kind of file: exit code 2, exactly one line on stderr naming the file, and no output written.
set -uo pipefail
PRUNUS="$1"
CORPUS="$(cd "$(dirname "$0")/data/corrupt" && pwd)"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 n=0
check() {  # name, path-that-must-be-named, output-that-must-not-exist, command...
  local name=$1 want=$2 out=$3; shift 3
  n=$((n + 1))
  "$@" >"$T/stdout" 2>"$T/stderr"; local rc=$?
  local lines; lines=$(wc -l <"$T/stderr")
  if [[ $rc -eq 2 && $lines -eq 1 ]] && grep -qF -- "$want" "$T/stderr" && [[ ! -e "$out" ]]; then
    echo "ok   - $name: $(cat "$T/stderr")"
  else
    echo "FAIL - $name: rc=$rc lines=$lines out-exists=$([[ -e $out ]] && echo yes || echo no) stderr: $(head -c 300 "$T/stderr")"
    fails=$((fails + 1))
  fi
  rm -rf "$out"
}
for f in "$CORPUS"/st_*.safetensors; do
  check "$(basename "$f")" "$f" "$T/none" "$PRUNUS" inspect "$f"
done
for f in "$CORPUS"/model_*.safetensors; do
  check "$(basename "$f")" "$f" "$T/out.safetensors" "$PRUNUS" prune "$f" --sparsity 0.5 -o "$T/out.safetensors"
done
for f in "$CORPUS"/graph_*.safetensors; do
  check "$(basename "$f")" "$f" "$T/none" "$PRUNUS" infer "$f" --test-limit 1
  check "$(basename "$f") (shrink)" "$f" "$T/small.safetensors" "$PRUNUS" shrink "$f" -o "$T/small.safetensors"
  check "$(basename "$f") (export)" "$f" "$T/model.onnx" "$PRUNUS" export "$f" -o "$T/model.onnx"
  check "$(basename "$f") (quantize)" "$f" "$T/q8.safetensors" "$PRUNUS" quantize "$f" -o "$T/q8.safetensors"
done
for f in "$CORPUS"/actscales_*.safetensors; do
  check "$(basename "$f")" "$f" "$T/none" "$PRUNUS" infer "$f" --int8 --test-limit 1
  check "$(basename "$f") (quantize)" "$f" "$T/q8.safetensors" "$PRUNUS" quantize "$f" -o "$T/q8.safetensors"
done
for f in "$CORPUS"/llama_*.bin; do
  check "$(basename "$f")" "$f" "$T/out.bin" "$PRUNUS" convert "$f" "$T/out.bin"
done
for d in "$CORPUS"/idx_*/; do
  d=${d%/}
  check "$(basename "$d")" "$d/train-images-idx3-ubyte" "$T/out.safetensors" \
    "$PRUNUS" train --data "$d" --epochs 1 --no-progress -o "$T/out.safetensors"
done
for d in "$CORPUS"/hf_*/; do
  d=${d%/}
  check "$(basename "$d")" "$d/" "$T/out.bin" "$PRUNUS" convert "$d" "$T/out.bin"
done
for f in "$CORPUS"/recipe_*.yaml; do
  check "$(basename "$f")" "$f" "$T/run" "$PRUNUS" run "$f" -o "$T/run"
done
echo "$n corrupt inputs, $fails failure(s)"
[[ $n -ge 40 && $fails -eq 0 ]]
