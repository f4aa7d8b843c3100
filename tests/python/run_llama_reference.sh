#!/usr/bin/env bash
# Perplexity of both shared llama2.c models against an independent numpy implementation.
PY=${1:?python}; PRUNUS=${2:?prunus}; SHARED=${3:?shared dir}
if [[ ! -x "$PY" ]]; then echo "SKIPPED: no test Python at $PY (./run.sh test creates it)"; exit 77; fi
if [[ ! -f "$SHARED/models/stories260K.bin" ]]; then echo "SKIPPED: $SHARED/models not present"; exit 77; fi
here=$(dirname "$0")
"$PY" "$here/llama_reference.py" "$PRUNUS" "$SHARED/models/stories260K.bin" "$SHARED/models/tok512.bin" \
  "$SHARED/data/tinystories_valid.txt" 4 || exit 1
"$PY" "$here/llama_reference.py" "$PRUNUS" "$SHARED/models/aidreams260K.bin" "$SHARED/models/tok512_aidreams.bin" \
  "$SHARED/data/tinystories_valid.txt" 8 || exit 1
# The Hugging Face export, checked with transformers' RoPE convention (rotate_half).
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$PRUNUS" convert "$SHARED/models/stories260K.bin" "$T/hf" >/dev/null || exit 1
"$PY" "$here/llama_reference.py" "$PRUNUS" "$T/hf" "$SHARED/models/tok512.bin" "$SHARED/data/tinystories_valid.txt" 4 || exit 1
