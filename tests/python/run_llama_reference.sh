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
# compressed-tensors export of one-shot pruned models (unstructured and 2:4) in every layout
# (W8A8 int8 codes dense or with sparse-bitmask; fp32 sparse-bitmask and, for 2:4,
# sparse-24-bitmask): layout, codes, scales and values checked against the fp32 export.
for prune in "--sparsity 0.5" "--nm 2:4"; do
  "$PRUNUS" oneshot "$SHARED/models/stories260K.bin" --method wanda $prune --calib "$SHARED/data/tinystories_valid.txt" \
    --nsamples 8 --no-progress -o "$T/pruned.bin" >/dev/null || exit 1
  rm -rf "$T/fp" && "$PRUNUS" convert "$T/pruned.bin" "$T/fp" >/dev/null || exit 1
  layouts="int8 int8-bitmask sparse-bitmask"; [[ $prune == "--nm 2:4" ]] && layouts+=" sparse-24-bitmask"
  for layout in $layouts; do
    rm -rf "$T/ct" && "$PRUNUS" convert "$T/pruned.bin" "$T/ct" --compressed-tensors $layout || exit 1
    "$PY" "$here/compressed_tensors_check.py" "$T/ct" "$T/fp" || exit 1
  done
done
# Hugging Face tokenizer.json (LLaMA/sentencepiece BPE) made from each llama2.c tokenizer:
# the tokenizers library and prunus tokenize agree with run.c's encode, document by document,
# and a model folder with tokenizer.json scores the same perplexity as the .bin.
"$PY" "$here/tokenizer_json_check.py" "$PRUNUS" "$SHARED/models/stories260K.bin" "$SHARED/models/tok512.bin" \
  "$SHARED/data/tinystories_valid.txt" "$T/tokjson" || exit 1
"$PY" "$here/tokenizer_json_check.py" "$PRUNUS" "$SHARED/models/aidreams260K.bin" "$SHARED/models/tok512_aidreams.bin" \
  "$SHARED/data/tinystories_valid.txt" "$T/tokjson2" || exit 1
# sentencepiece tokenizer.model rebuilt from each llama2.c tokenizer: prunus tokenize = the
# sentencepiece package (PyPI) = the .bin, a folder with only tokenizer.model scores the same
# perplexity, bad files refused.
"$PY" "$here/sentencepiece_check.py" "$PRUNUS" "$SHARED/models/stories260K.bin" "$SHARED/models/tok512.bin" \
  "$SHARED/data/tinystories_valid.txt" "$T/sp" || exit 1
"$PY" "$here/sentencepiece_check.py" "$PRUNUS" "$SHARED/models/aidreams260K.bin" "$SHARED/models/tok512_aidreams.bin" \
  "$SHARED/data/tinystories_valid.txt" "$T/sp2" || exit 1
