#!/usr/bin/env bash
# One-shot pruning of a model larger than a memory limit: runs `prunus oneshot` inside a memory
# cgroup (v1 or v2; needs root) limited to LIMIT_MIB, first with --stream, then without.
#   bash bench/memory_limit_demo.sh PRUNUS MODEL_FOLDER OUT_DIR LIMIT_MIB -- ONESHOT_ARGS...
set -uo pipefail
PRUNUS=$1; MODEL=$2; OUT=$3; LIMIT=$4; shift 5
bytes=$((LIMIT * 1024 * 1024))
if [[ -d /sys/fs/cgroup/memory ]]; then                      # cgroup v1
  CG=/sys/fs/cgroup/memory/prunus_limit_$$; mkdir -p "$CG"
  echo "$bytes" > "$CG/memory.limit_in_bytes"
  echo "$bytes" > "$CG/memory.memsw.limit_in_bytes" 2>/dev/null || true   # no swapping around it
  peak() { echo $(( $(cat "$CG/memory.max_usage_in_bytes") / 1048576 )); }
  reset() { echo 0 > "$CG/memory.max_usage_in_bytes"; }
else                                                            # cgroup v2
  CG=/sys/fs/cgroup/prunus_limit_$$; mkdir -p "$CG"
  echo "$bytes" > "$CG/memory.max"; echo 0 > "$CG/memory.swap.max" 2>/dev/null || true
  peak() { cat "$CG/memory.peak" 2>/dev/null | awk '{print int($1/1048576)}'; }
  reset() { :; }
fi
trap 'rmdir "$CG" 2>/dev/null' EXIT
du -sh --apparent-size "$MODEL"/model.safetensors* | sed 's/^/input: /'
for mode in --stream ""; do
  rm -rf "$OUT$mode"; reset
  start=$(date +%s.%N)
  bash -c "echo \$\$ > $CG/cgroup.procs; exec $PRUNUS oneshot $MODEL -o $OUT$mode $* --no-progress $mode" > "$OUT.log" 2>&1
  rc=$?
  printf 'limit %s MiB, oneshot %s: exit %d after %.1f s, cgroup peak %s MiB: %s\n' "$LIMIT" "${mode:-(in memory)}" "$rc" \
    "$(echo "$(date +%s.%N) - $start" | bc)" "$(peak)" "$(tail -1 "$OUT.log" | cut -c1-160)"
done
