#!/usr/bin/env bash
# The CLI end to end: --help/--version, bad input (exit 2, one line naming the file, nothing
# on disk overwritten), inspect, one-shot prune exactness, and a real Ctrl-C + --resume.
set -uo pipefail
PRUNUS=${1:?usage: cli_test.sh path/to/prunus}
DATA=${PRUNUS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
source "$(dirname "$0")/cli_lib.sh"

"$PRUNUS" --version | grep -q '^prunus [0-9]' && ok "--version" || bad "--version"
for verb in run train prune finetune eval inspect; do
  "$PRUNUS" "$verb" --help >"$T/help" 2>&1 && grep -q Usage "$T/help" && ok "$verb --help" || bad "$verb --help"
done
expect_error "unknown verb" "prunus" "$PRUNUS" frobnicate
expect_error "no verb" "subcommand" "$PRUNUS"

# A small model to work with (no data needed for one-shot pruning).
printf 'x' >"$T/junk.safetensors"
expect_error "inspect: missing file" "$T/nope.safetensors: cannot open" "$PRUNUS" inspect "$T/nope.safetensors"
expect_error "inspect: corrupt file" "$T/junk.safetensors: not a safetensors file" "$PRUNUS" inspect "$T/junk.safetensors"
expect_error "prune: corrupt model" "$T/junk.safetensors" "$PRUNUS" prune "$T/junk.safetensors" -o "$T/o.safetensors"
expect_error "eval: corrupt model" "$T/junk.safetensors" "$PRUNUS" eval "$T/junk.safetensors"
expect_error "run: missing recipe" "$T/none.yaml: cannot open" "$PRUNUS" run "$T/none.yaml"
printf 'model: lenet300\nprune: {sparsity: 1.2}\n' >"$T/bad.yaml"
expect_error "run: impossible recipe" "sparsity 1.2 is outside [0, 1)" "$PRUNUS" run "$T/bad.yaml" -o "$T/runout"
[[ ! -e "$T/runout" ]] && ok "failed recipe wrote nothing" || bad "failed recipe created $T/runout"
expect_error "train: unknown model" "model 'vgg'" "$PRUNUS" train --model vgg -o "$T/v.safetensors"
expect_error "train: missing data dir" "$T/nodata/train-images-idx3-ubyte.gz: dataset file not found" \
  "$PRUNUS" train --data "$T/nodata" --epochs 1 -o "$T/v.safetensors"
expect_error "train: output dir missing" "$T/no/dir/m.safetensors: output directory does not exist" \
  "$PRUNUS" train --epochs 1 -o "$T/no/dir/m.safetensors"

if [[ ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
  echo "SKIPPED: the data-dependent CLI tests: Fashion-MNIST not found in $DATA (install dataset-fashion-mnist)"
  [[ $fails -eq 0 ]]; exit
fi

# Train a small model, then check one-shot pruning is exact and the file reloads.
"$PRUNUS" train --epochs 1 --train-limit 3000 --test-limit 500 --no-progress -o "$T/dense.safetensors" >"$T/out" 2>&1 \
  && ok "train small" || bad "train small: $(tail -3 "$T/out")"
"$PRUNUS" prune "$T/dense.safetensors" --sparsity 0.75 --scope layer -o "$T/sparse.safetensors" >"$T/out" 2>&1 \
  && ok "prune one-shot" || bad "prune one-shot: $(tail -3 "$T/out")"
# Activation-weighted magnitude reads calibration batches: still exact, and it prunes other
# weights than magnitude does (fc1's zero-input pixels, for one).
"$PRUNUS" prune "$T/dense.safetensors" --sparsity 0.75 --scope layer --criterion activation --calib-batches 4 \
  --train-limit 3000 -o "$T/act.safetensors" >"$T/out" 2>&1 && ok "prune --criterion activation" \
  || bad "prune --criterion activation: $(tail -3 "$T/out")"
"$PRUNUS" inspect "$T/act.safetensors" >"$T/inspect_act" 2>&1
grep -E '^fc1.weight .* 58800 +75.00% +unstructured' "$T/inspect_act" >/dev/null && ok "activation criterion exact" \
  || bad "activation inspect fc1: $(grep fc1.weight "$T/inspect_act")"
cmp -s "$T/act.safetensors" "$T/sparse.safetensors" && bad "activation criterion gave magnitude's model" \
  || ok "activation criterion differs from magnitude"
"$PRUNUS" inspect "$T/sparse.safetensors" >"$T/inspect" 2>&1
# fc1: 300x784 = 235200, 75% → exactly 176400 zeros → 58800 non-zeros; fc3 100x10: 250 non-zeros.
grep -E '^fc1.weight .* 58800 +75.00% +unstructured' "$T/inspect" >/dev/null && ok "inspect shows exact layer sparsity" \
  || bad "inspect fc1: $(grep fc1.weight "$T/inspect")"
grep -E '^fc3.weight .* 250 +75.00%' "$T/inspect" >/dev/null && ok "inspect fc3" || bad "inspect fc3: $(grep fc3.weight "$T/inspect")"
grep -q 'metadata prunus.arch = lenet300' "$T/inspect" && ok "architecture stored with the weights" || bad "no arch metadata"
grep -qE '^fc1 +300x784 +58800 +(dense|csr|bitmask|bsr4x4|n:m|sell) ' "$T/inspect" && grep -q 'dense/held = ' "$T/inspect" \
  && ok "inspect shows each layer's runtime format" || bad "inspect formats: $(tail -6 "$T/inspect")"
"$PRUNUS" eval "$T/sparse.safetensors" --test-limit 500 | grep -q 'test accuracy' && ok "eval sparse" || bad "eval sparse"

# The libtorch-free runtime gets the same accuracy as the libtorch evaluation.
acc_eval=$("$PRUNUS" eval "$T/sparse.safetensors" --test-limit 500 | grep -o '[0-9.]*%' | head -1)
"$PRUNUS" infer "$T/sparse.safetensors" --test-limit 500 --batch 16 >"$T/infer" 2>&1
acc_rt=$(grep -o 'test accuracy [0-9.]*%' "$T/infer" | grep -o '[0-9.]*%')
[[ -n "$acc_eval" && "$acc_eval" == "$acc_rt" ]] && ok "runtime accuracy equals libtorch ($acc_rt)" \
  || bad "runtime accuracy '$acc_rt' vs eval '$acc_eval': $(tail -3 "$T/infer")"
grep -qE '^fc1 +300x784 +58800 ' "$T/infer" && ok "infer lists each layer's format" || bad "infer table: $(head -4 "$T/infer")"
# INT8 (per-channel weights, per-token activations): every layer int8, accuracy within a point.
"$PRUNUS" infer "$T/sparse.safetensors" --test-limit 500 --batch 16 --int8 >"$T/infer8" 2>&1
acc_8=$(grep -o 'test accuracy [0-9.]*%' "$T/infer8" | grep -o '[0-9.]*')
[[ $(grep -c ' int8-' "$T/infer8") -eq 3 ]] && awk -v a="$acc_8" -v b="${acc_rt%\%}" 'BEGIN { exit !(a != "" && a - b <= 1 && b - a <= 1) }' \
  && ok "infer --int8: all 3 layers INT8, accuracy $acc_8% vs fp32 $acc_rt" || bad "infer --int8: $(cat "$T/infer8")"
# prunus quantize: the INT8 file is a fraction of the fp32 one, safetensors readers open it, and
# the runtime gets the same INT8 logits from it as from quantizing the fp32 file at load.
"$PRUNUS" quantize "$T/sparse.safetensors" -o "$T/q8.safetensors" >"$T/q8.out" 2>&1 || bad "quantize: $(cat "$T/q8.out")"
ratio=$(( $(stat -c %s "$T/sparse.safetensors") / $(stat -c %s "$T/q8.safetensors") ))
[[ $ratio -ge 5 ]] && ok "quantize: INT8 file ${ratio}x smaller than fp32 ($(tail -1 "$T/q8.out"))" || bad "quantize ratio $ratio"
"$PRUNUS" run "$T/sparse.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --int8 --logits --batch 64 >"$T/l_fp" 2>/dev/null
"$PRUNUS" run "$T/q8.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --int8 --logits --batch 64 >"$T/l_q8" 2>/dev/null
[[ $(wc -l <"$T/l_q8") -eq 10000 ]] && cmp -s "$T/l_fp" "$T/l_q8" && ok "INT8 file: identical INT8 logits on 10000 images" \
  || bad "INT8 file logits differ"
"$PRUNUS" quantize "$T/sparse.safetensors" -o "$T/q8keep.safetensors" --keep-fp32 fc3 >/dev/null 2>&1
"$PRUNUS" infer "$T/q8keep.safetensors" --test-limit 100 --int8 >"$T/keep.out" 2>&1
[[ $(grep -c ' int8-' "$T/keep.out") -eq 2 ]] && grep -qE '^fc3 .* (dense|csr|bitmask|sell) ' "$T/keep.out" \
  && ok "quantize --keep-fp32 fc3: fc3 stays fp32 under --int8" || bad "keep-fp32: $(head -6 "$T/keep.out")"
for c in minmax percentile mse; do
  acc_c=$("$PRUNUS" infer "$T/q8.safetensors" --int8 --calibrate $c --calib-samples 64 --test-limit 500 --batch 16 \
    | grep -o 'test accuracy [0-9.]*%' | grep -o '[0-9.]*')
  awk -v a="$acc_c" -v b="${acc_rt%\%}" 'BEGIN { exit !(a != "" && a - b <= 1 && b - a <= 1) }' \
    && ok "INT8 with static $c activation scales: $acc_c% vs fp32 $acc_rt" || bad "calibrate $c: '$acc_c' vs '$acc_rt'"
done
# Static scales stored in the file (quantize --calibrate): the runtime uses them without being
# asked, and gets exactly what calibrating at load gets.
"$PRUNUS" quantize "$T/sparse.safetensors" -o "$T/q8cal.safetensors" --calibrate percentile --calib-samples 64 \
  >"$T/q8cal.out" 2>&1 || bad "quantize --calibrate: $(cat "$T/q8cal.out")"
"$PRUNUS" infer "$T/q8cal.safetensors" --int8 --test-limit 500 --batch 16 >"$T/cal_stored" 2>&1
acc_s=$(grep -o 'test accuracy [0-9.]*%' "$T/cal_stored")
acc_l=$("$PRUNUS" infer "$T/q8.safetensors" --int8 --calibrate percentile --calib-samples 64 --test-limit 500 --batch 16 \
  | grep -o 'test accuracy [0-9.]*%')
grep -q "stored for 3 layers" "$T/q8cal.out" && grep -q "the file's static activation scales (3 layers)" "$T/cal_stored" \
  && [[ -n "$acc_s" && "$acc_s" == "$acc_l" ]] && ok "quantize --calibrate: scales stored, used by --int8 ($acc_s, as calibrated at load)" \
  || bad "stored scales: '$acc_s' vs '$acc_l': $(tail -1 "$T/cal_stored")"
"$PRUNUS" infer "$T/q8cal.safetensors" --int8 --dynamic --test-limit 50 | grep -q "per-token activations" \
  && ok "infer --dynamic: per-token scales over the stored ones" || bad "infer --dynamic"
# Quantization-aware fine-tuning: masks held (same non-zeros per layer), ranges saved with the
# model, carried by quantize, used by the runtime.
"$PRUNUS" finetune "$T/sparse.safetensors" --qat --epochs 1 --lr 0.005 --train-limit 1000 --test-limit 200 --no-progress \
  -o "$T/qat.safetensors" >"$T/qat.out" 2>&1 || bad "finetune --qat: $(tail -2 "$T/qat.out")"
"$PRUNUS" inspect "$T/sparse.safetensors" | awk '$1 ~ /weight/ {print $1, $4}' >"$T/nnz_before"
"$PRUNUS" inspect "$T/qat.safetensors" | awk '$1 ~ /weight/ {print $1, $4}' >"$T/nnz_after"
"$PRUNUS" quantize "$T/qat.safetensors" -o "$T/qat-q8.safetensors" >/dev/null 2>&1
[[ -s "$T/nnz_before" ]] && cmp -s "$T/nnz_before" "$T/nnz_after" && head -c 4096 "$T/qat-q8.safetensors" | grep -aq prunus.act_scales \
  && "$PRUNUS" infer "$T/qat-q8.safetensors" --int8 --test-limit 200 | grep -q "the file's static activation scales (3 layers)" \
  && ok "finetune --qat: non-zeros held per layer, learned scales carried into the INT8 file and used" \
  || bad "qat: $(paste -d' ' "$T/nnz_before" "$T/nnz_after" | head -3)"
expect_error "unknown calibration" "unknown (known: minmax, percentile, mse)" "$PRUNUS" infer "$T/q8.safetensors" --int8 \
  --calibrate median --test-limit 10
expect_error "training verbs name an INT8 file as such" "an INT8 file written by prunus quantize" \
  "$PRUNUS" finetune "$T/q8.safetensors" -o "$T/never.safetensors" --epochs 1
expect_error "quantize onto itself" "must not overwrite" "$PRUNUS" quantize "$T/q8.safetensors" -o "$T/q8.safetensors"
expect_error "quantize an INT8 file" "already quantized" "$PRUNUS" quantize "$T/q8.safetensors" -o "$T/q8b.safetensors"
# prunus run MODEL INPUT: one class per image, and the accuracy infer reports on the same images.
"$PRUNUS" run "$T/sparse.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --labels "$DATA/t10k-labels-idx1-ubyte.gz" \
  --batch 64 >"$T/classes" 2>"$T/run_err"
acc_run=$(grep -o 'accuracy [0-9.]*%' "$T/run_err" | grep -o '[0-9.]*%')
acc_full=$("$PRUNUS" infer "$T/sparse.safetensors" --batch 64 | grep -o 'test accuracy [0-9.]*%' | grep -o '[0-9.]*%')
[[ $(wc -l <"$T/classes") -eq 10000 && -z "$(grep -v '^[0-9]$' "$T/classes")" && -n "$acc_run" && "$acc_run" == "$acc_full" ]] \
  && ok "run MODEL INPUT: 10000 classes, accuracy $acc_run as infer" || bad "run MODEL INPUT: $(cat "$T/run_err") vs $acc_full"
expect_error "prune: iterative belongs to recipes" "run it from a recipe" "$PRUNUS" prune "$T/sparse.safetensors" --schedule iterative -o "$T/it.safetensors"
expect_error "run: INPUT needs a model file" "needs a model file" "$PRUNUS" run "$T/tiny.yaml" "$T/classes"

# A failed run must not overwrite an existing output: prune to an impossible sparsity onto sparse.safetensors.
cp "$T/sparse.safetensors" "$T/keep"
expect_error "prune: sparsity out of range" "sparsity 1 is outside [0, 1)" \
  "$PRUNUS" prune "$T/dense.safetensors" --sparsity 1.0 -o "$T/sparse.safetensors"
cmp -s "$T/keep" "$T/sparse.safetensors" && ok "failed prune left the existing file alone" || bad "existing file changed"

# NaN weights: one line naming the file, exit 2.
python3 - "$T/dense.safetensors" "$T/nan.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
off = 8 + n + h['fc2.weight']['data_offsets'][0]
b[off:off + 4] = struct.pack('<f', float('nan'))
open(sys.argv[2], 'wb').write(b)
PY
expect_error "prune: NaN weights" "$T/nan.safetensors: tensor 'fc2.weight' contains NaN or Inf" \
  "$PRUNUS" prune "$T/nan.safetensors" -o "$T/o2.safetensors"
[[ ! -e "$T/o2.safetensors" ]] && ok "NaN model wrote nothing" || bad "NaN model wrote output"

# Ctrl-C writes a checkpoint; --resume continues to the same bytes as an uninterrupted run.
args=(train --epochs 3 --train-limit 20000 --test-limit 500 --seed 3)
"$PRUNUS" "${args[@]}" --no-progress -o "$T/full.safetensors" >/dev/null 2>&1
"$PRUNUS" "${args[@]}" -o "$T/int.safetensors" >"$T/int.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q 'train epoch 1/3' "$T/int.log" && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
if [[ $rc -eq 130 && -f "$T/int.safetensors.ckpt" && ! -e "$T/int.safetensors" ]]; then ok "Ctrl-C: exit 130 with a checkpoint"
else bad "Ctrl-C: rc=$rc, files: $(ls "$T" | tr '\n' ' ') log: $(tail -2 "$T/int.log")"; fi
"$PRUNUS" "${args[@]}" --resume --no-progress -o "$T/int.safetensors" >"$T/res.log" 2>&1
grep -q 'resuming train' "$T/res.log" && ok "--resume continues from the checkpoint" || bad "no resume: $(head -2 "$T/res.log")"
cmp -s "$T/full.safetensors" "$T/int.safetensors" && ok "resumed run is byte-identical to an uninterrupted one" \
  || bad "resumed run differs"
[[ ! -e "$T/int.safetensors.ckpt" ]] && ok "checkpoint removed after the run" || bad "checkpoint left behind"
[[ -z "$(ls -A "$T" | grep '\.tmp\.')" ]] && ok "no temp files left" || bad "temp files left: $(ls -a "$T")"

# The other architectures train and reload (BatchNorm buffers included).
for m in lenet5 resnet; do
  "$PRUNUS" train --model $m --epochs 1 --train-limit 512 --test-limit 200 --batch-size 64 --no-progress \
    -o "$T/$m.safetensors" >"$T/out" 2>&1 && "$PRUNUS" eval "$T/$m.safetensors" --test-limit 200 >>"$T/out" 2>&1 \
    && ok "train + eval $m" || bad "train $m: $(tail -2 "$T/out")"
  # Pruned, in the runtime (convolutions, pooling, BatchNorm folded, residual adds): same accuracy.
  "$PRUNUS" prune "$T/$m.safetensors" --sparsity 0.8 -o "$T/$m-sparse.safetensors" >"$T/out" 2>&1 || bad "prune $m"
  acc_e=$("$PRUNUS" eval "$T/$m-sparse.safetensors" --test-limit 200 | grep -o '[0-9.]*%' | head -1)
  acc_r=$("$PRUNUS" infer "$T/$m-sparse.safetensors" --test-limit 200 --batch 8 | grep -o 'test accuracy [0-9.]*%' | grep -o '[0-9.]*%')
  [[ -n "$acc_e" && "$acc_e" == "$acc_r" ]] && ok "$m in the runtime: accuracy $acc_r as libtorch" \
    || bad "$m runtime accuracy '$acc_r' vs libtorch '$acc_e'"
  acc_8=$("$PRUNUS" infer "$T/$m-sparse.safetensors" --test-limit 200 --batch 8 --int8 | grep -o 'test accuracy [0-9.]*%' | grep -o '[0-9.]*')
  awk -v a="$acc_8" -v b="${acc_r%\%}" 'BEGIN { exit !(a != "" && a - b <= 2 && b - a <= 2) }' \
    && ok "$m INT8 in the runtime: accuracy $acc_8% vs fp32 $acc_r" || bad "$m INT8 accuracy '$acc_8' vs fp32 '$acc_r'"
  "$PRUNUS" quantize "$T/$m-sparse.safetensors" -o "$T/$m-q8.safetensors" >/dev/null 2>&1 || bad "quantize $m"
  "$PRUNUS" run "$T/$m-sparse.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --int8 --logits --batch 16 >"$T/l_fp" 2>/dev/null
  "$PRUNUS" run "$T/$m-q8.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --int8 --logits --batch 16 >"$T/l_q8" 2>/dev/null
  cmp -s "$T/l_fp" "$T/l_q8" && [[ $(wc -l <"$T/l_q8") -eq 10000 ]] \
    && ok "$m INT8 file (BatchNorm folded): identical INT8 logits" || bad "$m INT8 file logits differ"
done

# A whole recipe, twice: same bytes, exact global sparsity, a report with what users need.
cat >"$T/tiny.yaml" <<YAML
name: tiny
model: lenet300
seed: 5
data: {train_limit: 6000, test_limit: 1000}
train: {epochs: 2, lr: 0.05, weight_decay: 0.0005}
prune: {sparsity: 0.9, scope: global, schedule: {kind: gradual, end_epoch: 1, frequency: 10}}
finetune: {epochs: 2, lr: 0.02}
quantize: {calibrate: minmax, calib_samples: 128}
YAML
"$PRUNUS" run "$T/tiny.yaml" -o "$T/run1" --no-progress >"$T/run1.log" 2>&1 && ok "run tiny recipe" || bad "run: $(tail -3 "$T/run1.log")"
"$PRUNUS" run "$T/tiny.yaml" -o "$T/run2" --no-progress >/dev/null 2>&1
for f in dense.safetensors sparse.safetensors int8.safetensors; do
  cmp -s "$T/run1/$f" "$T/run2/$f" && ok "same recipe twice: identical $f" || bad "$f differs between identical runs"
done
python3 - "$T/run1/report.json" <<'PY' && ok "report.json: exact 90% global sparsity, accuracies, bytes, stage times" || bad "report.json check"
import json, sys
r = json.load(open(sys.argv[1]))
n = sum(l["numel"] for l in r["layers"])
nnz = sum(l["nnz"] for l in r["layers"])
assert n == 266200 and n - nnz == round(0.9 * n), (n, nnz)
assert abs(r["total_sparsity"] - 0.9) < 1e-6
assert r["dense"]["test_accuracy"] > 0.6 and r["sparse"]["test_accuracy"] > 0.6, r
assert r["bytes_sparse_encoded"] < r["bytes_dense"] / 4
for stage in ("train", "prune_finetune", "evaluate", "write"):
    assert r["stages"][stage]["seconds"] >= 0
assert len(r["stages"]["prune_finetune"]["history"]) == 2
for l in r["layers"]:
    assert set(l) >= {"name", "shape", "nnz", "sparsity", "encoding", "encoded_bytes", "dense_bytes"}
# The quantize stage: an INT8 file a fraction of the dense file, scored in the runtime within a
# point of the sparse fp32 model, with static scales for all three layers.
q = r["int8"]
assert abs(q["test_accuracy"] - r["sparse"]["test_accuracy"]) <= 0.01, q
assert q["bytes"] * 10 < q["bytes_dense_file"] and q["layers_int8"] == 3 and "minmax" in q["activations"], q
assert r["stages"]["quantize"]["seconds"] >= 0
PY
grep -q 'accuracy drop' "$T/run1.log" && grep -q 'sparse INT8 (runtime)' "$T/run1.log" && grep -q 'smaller than the dense file' "$T/run1.log" \
  && ok "summary printed (dense, sparse, INT8 rows)" || bad "no summary: $(tail -8 "$T/run1.log")"
"$PRUNUS" infer "$T/run1/int8.safetensors" --int8 --test-limit 50 | grep -q "the file's static activation scales (3 layers)" \
  && ok "recipe INT8 file carries its calibrated scales" || bad "recipe INT8 file scales"

# Sensitivity: each layer alone at each level, a CSV, and an allocation that reaches the target.
"$PRUNUS" sensitivity "$T/dense.safetensors" -o "$T/sens.csv" --levels 0.5,0.9 --target 0.8 --holdout 500 \
  --no-progress >"$T/sens.out" 2>&1 && ok "sensitivity runs" || bad "sensitivity: $(tail -3 "$T/sens.out")"
[[ $(wc -l <"$T/sens.csv") -eq 10 ]] && head -1 "$T/sens.csv" | grep -q 'layer,numel,sparsity,holdout_accuracy,drop_points' \
  && ok "sensitivity CSV: 3 layers x (dense + 2 levels)" || bad "sensitivity CSV: $(cat "$T/sens.csv")"
grep -q 'allocation for 80.00% overall (80.00% after rounding' "$T/sens.out" && grep -q '    fc1.weight: ' "$T/sens.out" \
  && ok "sensitivity allocation reaches the target" || bad "allocation: $(tail -6 "$T/sens.out")"
[[ $(grep -o 'class="marker"' "$T/sens.html" | wc -l) -eq 3 ]] && grep -q '"allocation"' "$T/sens.json" \
  && ok "sensitivity: sens.json + sens.html with the allocation ringed on each of 3 curves" \
  || bad "sensitivity report: $(ls "$T" | grep sens)"
# Structured pruning that shrinks the model; the smaller file runs in the runtime only.
"$PRUNUS" shrink "$T/dense.safetensors" -o "$T/shrunk.safetensors" --sparsity 0.5 --round-to 8 >"$T/shrink.out" 2>&1 \
  && grep -q 'fc1.weight .* 300 .*152' "$T/shrink.out" && ok "shrink: fc1 300 -> 152 neurons (half, rounded up to 8)" \
  || bad "shrink: $(cat "$T/shrink.out")"
"$PRUNUS" infer "$T/shrunk.safetensors" --test-limit 200 >"$T/shrunk.infer" 2>&1 && grep -q 'fc1 .*152x784' "$T/shrunk.infer" \
  && ok "the shrunk model runs in the runtime with its new shapes" || bad "infer shrunk: $(tail -3 "$T/shrunk.infer")"
"$PRUNUS" finetune "$T/shrunk.safetensors" --epochs 1 --train-limit 2000 --test-limit 500 --no-progress \
  -o "$T/shrunk_ft.safetensors" >"$T/shrunk_ft.out" 2>&1 && "$PRUNUS" inspect "$T/shrunk_ft.safetensors" --formats off \
  | grep -q 'fc1.weight .*\[152, 784\]' && ok "the shrunk model fine-tunes in libtorch and keeps its shapes" \
  || bad "finetune shrunk: $(tail -3 "$T/shrunk_ft.out")"
expect_error "shrink: --heads on a graph model" "--heads: is for language models" \
  "$PRUNUS" shrink "$T/dense.safetensors" -o "$T/shrunk2.safetensors" --heads 0.25
expect_error "sensitivity: bad level" "level 1.5 is outside (0, 1)" "$PRUNUS" sensitivity "$T/dense.safetensors" -o "$T/s.csv" --levels 0.5,1.5

# Determinism with several threads: a 2-thread run (libtorch and OpenBLAS both on 2 threads)
# repeats byte for byte. Different thread counts may differ: OpenBLAS and libtorch's
# convolutions split their work by thread count (docs/results.md, "Determinism").
cat >"$T/det.yaml" <<YAML
model: lenet300
seed: 5
data: {train_limit: 2000, test_limit: 200}
train: {epochs: 1, lr: 0.05}
prune: {sparsity: 0.9, scope: global, schedule: {kind: gradual, end_epoch: 1, frequency: 10}}
finetune: {epochs: 1, lr: 0.02}
YAML
"$PRUNUS" run "$T/det.yaml" -o "$T/det1" --threads 2 --no-progress >/dev/null 2>&1
"$PRUNUS" run "$T/det.yaml" -o "$T/det2" --threads 2 --no-progress >/dev/null 2>&1
[[ -s "$T/det1/sparse.safetensors" ]] && cmp -s "$T/det1/sparse.safetensors" "$T/det2/sparse.safetensors" \
  && cmp -s "$T/det1/dense.safetensors" "$T/det2/dense.safetensors" \
  && ok "2 threads, twice: byte-identical models" || bad "two 2-thread runs differ"

# Iterative magnitude pruning with lottery-ticket rewinding to dense epoch 1, and a 2:4 recipe.
cat >"$T/imp.yaml" <<YAML
model: lenet300
seed: 3
data: {train_limit: 2000, test_limit: 500}
train: {epochs: 2, lr: 0.05}
prune: {sparsity: 0.875, scope: global, schedule: {kind: iterative, rounds: 3, rewind: "epoch:1"}}
finetune: {epochs: 1, lr: 0.02}
YAML
"$PRUNUS" run "$T/imp.yaml" -o "$T/imp" --no-progress >"$T/imp.log" 2>&1 && ok "run IMP recipe" || bad "IMP: $(tail -3 "$T/imp.log")"
python3 - "$T/imp/report.json" <<'PY' && ok "IMP: rounds at 1-(1-s)^(i/3), exact final sparsity" || bad "IMP report: $(grep round "$T/imp.log")"
import json, sys
r = json.load(open(sys.argv[1]))
rounds = r["stages"]["prune_finetune"]["rounds"]
assert [round(x["target_sparsity"], 6) for x in rounds] == [0.5, 0.75, 0.875], rounds
n = sum(l["numel"] for l in r["layers"]); nnz = sum(l["nnz"] for l in r["layers"])
assert n - nnz == round(0.875 * n), (n, nnz)
assert len(r["stages"]["prune_finetune"]["history"]) == 3
PY
cat >"$T/nm.yaml" <<YAML
model: lenet300
data: {train_limit: 2000, test_limit: 500}
train: {epochs: 1, lr: 0.05}
prune: {pattern: "2:4", scope: layer, schedule: {kind: oneshot}}
finetune: {epochs: 1, lr: 0.02, distill: {alpha: 0.5, temperature: 4}}
YAML
"$PRUNUS" run "$T/nm.yaml" -o "$T/nm" --no-progress >"$T/nm.log" 2>&1 && ok "run 2:4 recipe" || bad "2:4: $(tail -3 "$T/nm.log")"
"$PRUNUS" inspect "$T/nm/sparse.safetensors" --formats off >"$T/nm.inspect"
[[ $(grep -cE '^fc[12].weight .* 50.00% +2:4' "$T/nm.inspect") -eq 2 ]] && ok "2:4 recipe: every group of 4 keeps 2 (inspect)" \
  || bad "2:4 inspect: $(grep weight "$T/nm.inspect")"
grep -q '"alpha": 0.5' "$T/nm/report.json" && ok "distillation recorded in report.json" || bad "no distill in report"
# Structured pruning in a recipe: shrink (thinet, on calibration images) then fine-tune the
# smaller model; its file has the report's shapes and the runtime runs it.
cat >"$T/shrink.yaml" <<YAML
model: lenet5
seed: 2
data: {train_limit: 2000, test_limit: 500}
train: {epochs: 1, lr: 0.05}
shrink: {sparsity: 0.5, criterion: thinet, calib_samples: 64}
finetune: {epochs: 1, lr: 0.02}
YAML
"$PRUNUS" run "$T/shrink.yaml" -o "$T/shrink" --no-progress >"$T/shrink.log" 2>&1 && ok "run shrink recipe" \
  || bad "shrink recipe: $(tail -3 "$T/shrink.log")"
python3 - "$T/shrink/report.json" <<'PY' && ok "shrink recipe: half of every group's channels gone, MACs and params in report.json" || bad "shrink report"
import json, sys
r = json.load(open(sys.argv[1]))
s = r["shrink"]
assert s["criterion"] == "thinet" and s["macs_after"] < 0.5 * s["macs_before"], s
kept = {g["producers"][0]: (g["channels"], g["kept"]) for g in s["groups"]}
assert kept == {"conv1.weight": (6, 3), "conv2.weight": (16, 8), "fc1.weight": (120, 60), "fc2.weight": (84, 42)}, kept
shapes = {l["name"]: l["shape"] for l in r["layers"]}
assert shapes["conv2.weight"] == [8, 3, 5, 5] and shapes["fc1.weight"] == [60, 200], shapes
assert sum(l["numel"] for l in r["layers"]) < s["params_before"]
assert "prune" not in r and 0 < r["sparse"]["test_accuracy"] <= 1
PY
"$PRUNUS" infer "$T/shrink/sparse.safetensors" --batch 50 >"$T/shrink.infer" 2>&1 && ok "shrunk recipe output runs in the runtime" \
  || bad "shrunk infer: $(tail -2 "$T/shrink.infer")"
printf 'model: lenet5\ninput: init\nshrink: {sparsity: 0.5}\n' >"$T/shrink_bad.yaml"
expect_error "run: shrink needs a trained model" "shrink needs a trained model" "$PRUNUS" run "$T/shrink_bad.yaml" -o "$T/sb"
printf 'model: lenet5\nprune: {sparsity: 0.5}\nshrink: {sparsity: 0.5}\n' >"$T/shrink_bad2.yaml"
expect_error "run: prune and shrink together" "prune and shrink in one recipe" "$PRUNUS" run "$T/shrink_bad2.yaml" -o "$T/sb2"
printf 'model: lenet5\nshrink: {sparsity: 0.5, criterion: gamma}\n' >"$T/shrink_bad3.yaml"
expect_error "run: unknown shrink criterion" "shrink.criterion 'gamma' is unknown" "$PRUNUS" run "$T/shrink_bad3.yaml" -o "$T/sb3"

# Ctrl-C in the recipe's fine-tuning stage; --resume finishes with the same bytes as run1.
"$PRUNUS" run "$T/tiny.yaml" -o "$T/run3" >"$T/run3.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q 'finetune epoch 1/2' "$T/run3.log" && break; sleep 0.05; done
kill -INT $pid; wait $pid; rc=$?
[[ $rc -eq 130 && -f "$T/run3/checkpoint.safetensors" ]] && ok "run: Ctrl-C in fine-tuning leaves a checkpoint" \
  || bad "run Ctrl-C: rc=$rc $(ls "$T/run3" 2>&1 | tr '\n' ' ')"
"$PRUNUS" run "$T/tiny.yaml" -o "$T/run3" --resume --no-progress >"$T/run3b.log" 2>&1
grep -q 'resuming finetune' "$T/run3b.log" && cmp -s "$T/run1/sparse.safetensors" "$T/run3/sparse.safetensors" \
  && ok "run --resume: byte-identical sparse model" || bad "run --resume: $(head -3 "$T/run3b.log")"

echo "$fails failure(s)"
[[ $fails -eq 0 ]]
