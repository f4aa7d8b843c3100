#!/usr/bin/env bash
# The runtime-only example: it links no libtorch, and on a model pruned by `prunus oneshot` —
# as a llama2.c file, a Hugging Face folder and a compressed-tensors folder — it writes the same
# story as `prunus generate` (libtorch forward).
set -euo pipefail
example="$1" prunus="$2" shared="$3"
if ldd "$example" | grep -E 'libtorch|libc10'; then echo "FAIL: the example links libtorch"; exit 1; fi
if [[ ! -f "$shared/models/stories260K.bin" ]]; then
  echo "SKIPPED: $shared/models/stories260K.bin not found (the shared test data)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
m="$shared/models/stories260K.bin" tok="$shared/models/tok512.bin"
"$prunus" oneshot "$m" -o "$tmp/sgpt40.bin" --method sparsegpt --sparsity 0.4 --calib "$shared/data/tinystories_valid.txt" \
  --tokenizer "$tok" --nsamples 16 --no-progress > /dev/null
# The same pruned model as a Hugging Face folder and as a compressed-tensors sparse-bitmask
# folder: the runtime reads both without libtorch.
"$prunus" convert "$tmp/sgpt40.bin" "$tmp/hf" > /dev/null
"$prunus" convert "$tmp/sgpt40.bin" "$tmp/ct" --compressed-tensors sparse-bitmask > /dev/null
for model in "$m" "$tmp/sgpt40.bin" "$tmp/hf" "$tmp/ct"; do
  "$example" "$model" "$tok" 100 > "$tmp/native.txt"
  "$prunus" generate "$model" --tokenizer "$tok" --steps 100 > "$tmp/torch.txt"
  if ! cmp -s "$tmp/native.txt" "$tmp/torch.txt"; then
    echo "FAIL: runtime and libtorch stories differ for $model"; diff "$tmp/native.txt" "$tmp/torch.txt" || true; exit 1
  fi
  echo "ok: $(basename "$model"): $(head -c 80 "$tmp/native.txt")..."
done
# Bad input: one line naming the file, exit 2.
printf 'garbage' > "$tmp/bad.bin"
set +e; err=$("$example" "$tmp/bad.bin" "$tok" 2>&1); rc=$?; set -e
[[ $rc -eq 2 && "$err" == *bad.bin* && $(wc -l <<< "$err") -eq 1 ]] || { echo "FAIL: bad model: rc=$rc '$err'"; exit 1; }
echo "ok: bad model rejected: $err"
