#!/usr/bin/env bash
# SIGKILL while prunus writes a model, TRIALS times (default 100): the target is always either
# the old file or the complete new one, never a mix; a kill inside the write leaves a temp file,
# and the next write of the same target removes it.
set -uo pipefail
PRUNUS=$1 TRIALS=${2:-100}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
# A 60 MB llama2.c checkpoint, so the write is a good part of the run.
python3 - "$T" <<'PY'
import struct, sys
d = sys.argv[1]
dim, hidden, layers, heads, kv, vocab, seq = 512, 1376, 4, 8, 8, 4096, 64
n = (vocab * dim + layers * dim + layers * dim * dim * 2 + layers * dim * (dim // heads * kv) * 2 + layers * dim
     + layers * dim * hidden * 3 + dim + seq * (dim // heads))
for name, val in (("old.bin", 0.25), ("in.bin", 0.5)):
    with open(f"{d}/{name}", "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq))
        f.write(struct.pack("<f", val) * n)
PY
start=$(date +%s%N)
"$PRUNUS" convert "$T/in.bin" "$T/ref.bin" >/dev/null || { echo "FAIL: reference convert"; exit 1; }
full_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "one uninterrupted convert: ${full_ms} ms; kills land uniformly in [20%, 110%] of that"
old=0 new=0 bad=0 temps=0
for ((i = 0; i < TRIALS; i++)); do
  cp "$T/old.bin" "$T/target.bin"
  "$PRUNUS" convert "$T/in.bin" "$T/target.bin" >/dev/null 2>&1 &
  pid=$!
  delay_ms=$(( full_ms / 5 + RANDOM % (full_ms * 9 / 10 + 1) ))
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if cmp -s "$T/target.bin" "$T/old.bin"; then old=$((old + 1))
  elif cmp -s "$T/target.bin" "$T/ref.bin"; then new=$((new + 1))
  else bad=$((bad + 1)); echo "FAIL: trial $i left a target that is neither the old nor the new file"; fi
  if compgen -G "$T/.target.bin.tmp.*" >/dev/null; then temps=$((temps + 1)); fi
done
echo "$TRIALS kills: $old left the old file, $new the complete new one, $bad anything else; $temps inside the write (temp file left)"
"$PRUNUS" convert "$T/in.bin" "$T/target.bin" >/dev/null || { echo "FAIL: the run after the kills"; exit 1; }
left=$(compgen -G "$T/.target.bin.tmp.*" | wc -l)
cmp -s "$T/target.bin" "$T/ref.bin" || { echo "FAIL: the run after the kills wrote something else"; exit 1; }
echo "after one more run: $left temp file(s) left"
[[ $bad -eq 0 && $left -eq 0 && $temps -gt 0 ]]
