#!/usr/bin/env bash
# Ctrl-C at random moments, then --resume, until the job finishes: the final file must be
# byte-identical to an uninterrupted run's. Four jobs: training (prunus train), a recipe that
# trains, prunes gradually and fine-tunes (prunus run), the same with SR-STE's dense weights behind
# 2:4 masks, and layer-by-layer SparseGPT on a
# language model (prunus oneshot; needs ../shared, skipped visibly without it).
# A signal that lands before the handler is installed kills the process with no checkpoint;
# the next --resume then starts afresh, which must give the same bytes too. (In this script the
# shell starts background jobs with SIGINT ignored, so an early signal is simply lost: rc 0.)
# The jobs run with progress on: off a terminal that is one line per finished epoch or block —
# the ready lines, which appear while the job runs (a summary printed at exit would not do).
set -uo pipefail
PRUNUS=$1 SHARED=${2:-} TRIALS=${3:-4}
RANDOM=${RESUME_TEST_SEED:-20261125}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 interrupts=0
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# job NAME RESULT-SUFFIX READY COMMAND...: one uninterrupted reference run, then TRIALS runs
# interrupted at random delays (each resumed and re-interrupted until it finishes). READY, when
# not empty, is a log line (grep pattern) to wait for before the delay starts (work under way,
# more to come). Trial 0 signals as soon as it appears, so every job is interrupted at least once.
job() {
  local name=$1 result=$2 ready=$3; shift 3
  local -a cmd=("$@")
  local ref="$T/$name.ref" start full_ms
  rm -rf "$T"/out*
  # The reference run also times the READY line: delays are drawn from the work after it (the
  # time a signal can land mid-job), not from the whole run, whose start-up varies with load.
  start=$(ms_now)
  "${cmd[@]}" >"$T/log" 2>&1 &
  local rpid=$! ready_ms=0 work_ms
  if [[ -n "$ready" ]]; then
    while kill -0 "$rpid" 2>/dev/null && ! grep -q "$ready" "$T/log"; do sleep 0.01; done
    ready_ms=$(( $(ms_now) - start ))
  fi
  wait "$rpid" || { echo "FAIL - $name: reference run failed: $(tail -2 "$T/log")"; fails=$((fails + 1)); return; }
  full_ms=$(( $(ms_now) - start ))
  work_ms=$(( full_ms - ready_ms ))
  cp "$T/out$result" "$ref"
  local job_interrupts=0
  for ((trial = 0; trial < TRIALS; trial++)); do
    rm -rf "$T"/out*
    local -a delays=() resume=() rc=1 attempts=0
    while [[ $rc -ne 0 && $attempts -lt 12 ]]; do
      "${cmd[@]}" "${resume[@]}" >"$T/log" 2>&1 &
      local pid=$! d=$(( RANDOM % (work_ms + 1) ))
      # Trial 0 signals right at the ready line (the job is mid-run there, however loaded the
      # machine is), so every job is interrupted at least once.
      [[ $trial -eq 0 && $attempts -eq 0 ]] && d=0
      if [[ -n "$ready" ]]; then
        while kill -0 "$pid" 2>/dev/null && ! grep -q "$ready" "$T/log"; do sleep 0.01; done
      fi
      sleep_ms "$d"
      kill -INT "$pid" 2>/dev/null
      wait "$pid"; rc=$?
      delays+=("${d}ms:rc$rc")
      if [[ $rc -ne 0 && $rc -ne 130 ]]; then break; fi
      [[ $rc -eq 130 ]] && interrupts=$((interrupts + 1)) && job_interrupts=$((job_interrupts + 1))
      resume=(--resume); attempts=$((attempts + 1))
    done
    if [[ $rc -eq 0 ]] && cmp -s "$ref" "$T/out$result"; then
      echo "ok   - $name trial $trial: SIGINT at ${delays[*]} (reference run ${full_ms} ms, delays from its last ${work_ms} ms) → identical bytes"
    else
      echo "FAIL - $name trial $trial: SIGINT at ${delays[*]}: rc=$rc $(tail -2 "$T/log")"; fails=$((fails + 1))
    fi
    if compgen -G "$T/out*.ckpt" >/dev/null || compgen -G "$T/out/checkpoint.safetensors" >/dev/null; then
      echo "FAIL - $name trial $trial: checkpoint left after the finished run"; fails=$((fails + 1))
    fi
  done
  if [[ $job_interrupts -eq 0 ]]; then echo "FAIL - $name: no trial caught the job mid-run"; fails=$((fails + 1)); fi
}

DATA=${PRUNUS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [[ -f "$DATA/train-images-idx3-ubyte" || -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
  job train "" "epoch [0-9]*/" "$PRUNUS" train --epochs 3 --train-limit 12000 --test-limit 500 --seed 5 --data "$DATA" -o "$T/out"
  cat >"$T/gradual.yaml" <<YAML
model: lenet300
seed: 9
data: {dir: "$DATA", train_limit: 6000, test_limit: 500}
train: {epochs: 2, lr: 0.05}
prune: {sparsity: 0.8, scope: global, schedule: {kind: gradual, begin_epoch: 0, end_epoch: 2, frequency: 20}}
finetune: {epochs: 3, lr: 0.02}
YAML
  job recipe /sparse.safetensors "epoch [0-9]*/" "$PRUNUS" run "$T/gradual.yaml" -o "$T/out"
  # SR-STE keeps dense weights outside the model: the checkpoint must carry them.
  cat >"$T/srste.yaml" <<YAML
model: lenet300
seed: 9
data: {dir: "$DATA", train_limit: 6000, test_limit: 500}
train: {epochs: 1, lr: 0.05}
prune: {pattern: "2:4", scope: layer, srste_decay: 0.0002, schedule: {kind: oneshot, begin_epoch: 0}}
finetune: {epochs: 3, lr: 0.02}
YAML
  job srste /sparse.safetensors "finetune.*epoch [0-9]*/" "$PRUNUS" run "$T/srste.yaml" -o "$T/out"
else
  echo "SKIPPED: train and recipe resume: Fashion-MNIST not found in $DATA"; fails=$((fails + 1))
fi
if [[ -n "$SHARED" && -f "$SHARED/models/stories260K.bin" ]]; then
  job oneshot .bin "block [0-9]*/" "$PRUNUS" oneshot "$SHARED/models/stories260K.bin" --method sparsegpt --sparsity 0.5 \
    --calib "$SHARED/data/tinystories_valid.txt" --nsamples 16 -o "$T/out.bin"
else
  echo "SKIPPED: oneshot resume: $SHARED/models/stories260K.bin not found (the shared test data)"
fi
echo "$interrupts interrupted run(s) resumed; $fails failure(s)"
[[ $fails -eq 0 && $interrupts -gt 0 ]]
