#!/usr/bin/env bash
# report.html in a real browser: the main job (built-in recipe, shortened with --set) writes it;
# headless Chromium must load it with no console message but the page's own plot count, every
# plot must hold data, the file must be self-contained (no URL) and under 2 MB; a screenshot is
# saved. `prunus report A B` must draw a side-by-side page that loads the same way. A page with a
# script error must be caught (so the check can fail).
set -uo pipefail
PRUNUS=$1 SHOT=${2:-}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   - $1"; }
bad() { echo "FAIL - $1"; fails=$((fails + 1)); }
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$CHROMIUM" ]]; then echo "FAIL: chromium not installed (./run.sh test installs the Debian package)"; exit 1; fi
DATA=${PRUNUS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
[[ -d "$DATA" ]] || { echo "FAIL: Fashion-MNIST not found in $DATA (install dataset-fashion-mnist)"; exit 1; }

# browse HTML → $T/console (the page's console lines), $T/dom (the DOM after scripts ran)
browse() {
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 --hide-scrollbars \
    --window-size=1360,${3:-3300} --screenshot="${2:-$T/shot.png}" "file://$1" 2>"$T/stderr" >/dev/null
  grep -F 'CONSOLE' "$T/stderr" | sed 's/^.*CONSOLE[^]]*\] //' >"$T/console"
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$1" 2>/dev/null >"$T/dom"
}
# check NAME HTML MIN-PLOTS: console clean, plots with data, no URLs, size
check() {
  local name=$1 html=$2 min=$3
  local line n d
  line=$(grep -c . "$T/console")
  n=$(sed -n 's/^"prunus-report: \([0-9]*\) plots, \([0-9]*\) with data".*/\1/p' "$T/console")
  d=$(sed -n 's/^"prunus-report: \([0-9]*\) plots, \([0-9]*\) with data".*/\2/p' "$T/console")
  if [[ $line -eq 1 && -n "$n" && $n -ge $min && $n -eq $d ]]; then ok "$name: loads with no console error; $n plots, all with data"
  else bad "$name: console: $(head -c 400 "$T/console")"; fi
  local svgs marks
  svgs=$(grep -o '<svg class="plot[^"]*" data-points="[1-9][0-9]*"' "$T/dom" | wc -l)
  marks=$(grep -oE '<(polyline class="series"|rect class="bar"|image )' "$T/dom" | wc -l)
  [[ $svgs -ge $min && $marks -ge $min ]] && ok "$name: DOM has $svgs SVG plots with data ($marks lines, bars and mask images)" \
    || bad "$name: DOM has $svgs plots with data, $marks marks"
  if grep -qiE '(https?|ftp)://|src="|<link|@import' "$html"; then bad "$name: external reference: $(grep -oiE '.{30}(https?|ftp)://.{30}|src=".{30}|<link.{30}' "$html" | head -1)"
  else ok "$name: self-contained (no URL, no src=, no <link>)"; fi
  local size; size=$(stat -c %s "$html")
  [[ $size -lt 2000000 ]] && ok "$name: $size bytes (< 2 MB)" || bad "$name: $size bytes"
}

cd "$T"
"$PRUNUS" run --set train.epochs=3 --set finetune.epochs=4 --set prune.schedule.end_epoch=3 \
  --set data.train_limit=12000 --set data.test_limit=2000 --no-progress -o "$T/main" >"$T/run.log" 2>&1 \
  || { echo "FAIL: main job: $(tail -3 "$T/run.log")"; exit 1; }
grep -q "report with plots: $T/main/report.html" "$T/run.log" && ok "the main job names its report.html" || bad "no report line"
browse "$T/main/report.html" "$T/main.png"
check "main job report" "$T/main/report.html" 6
for section in "Dense vs sparse" "Training curves" "Layers" "Where the zeros are" "runtime format" "speed-up"; do
  grep -q "$section" "$T/dom" || bad "main job report has no '$section'"
done
[[ -s "$T/main.png" ]] && file "$T/main.png" | grep -q 'PNG image data, 1360 x' && ok "screenshot $(file -b "$T/main.png" | cut -d, -f2)" \
  || bad "no screenshot"
[[ -n "$SHOT" ]] && cp "$T/main.png" "$SHOT"

# Redrawn from report.json alone: the same page.
cp "$T/main/report.html" "$T/first.html"
"$PRUNUS" report "$T/main" >/dev/null && cmp -s "$T/first.html" "$T/main/report.html" \
  && ok "prunus report RUN_DIR redraws the same page" || bad "prunus report differs from the job's page"

# Side by side with a 2:4 run.
"$PRUNUS" run --set prune.pattern=2:4 --set prune.scope=layer --set prune.schedule.kind=oneshot --set train.epochs=2 \
  --set finetune.epochs=1 --set data.train_limit=6000 --set data.test_limit=1000 --no-progress -o "$T/nm" >"$T/nm.log" 2>&1 \
  || bad "2:4 run: $(tail -2 "$T/nm.log")"
"$PRUNUS" report "$T/main" "$T/nm" -o "$T/compare.html" >/dev/null || bad "prunus report A B failed"
browse "$T/compare.html" "$T/compare.png" 1400
check "comparison page" "$T/compare.html" 3

# The single-step verbs write the same kind of page with --report.
"$PRUNUS" prune "$T/main/dense.safetensors" --pattern 2:4 -o "$T/p24.safetensors" --report "$T/p24.json" >/dev/null 2>&1 \
  || bad "prune --report failed"
browse "$T/p24.html" "$T/p24.png" 1400
check "prune --report page" "$T/p24.html" 4
grep -q '"runtime"' "$T/p24.json" && ok "prune report carries the runtime's per-layer measurements" || bad "no runtime in p24.json"

# prunus bench: whole-model latency, sparse vs the dense path, with its page.
"$PRUNUS" bench "$T/main/sparse.safetensors" --batch 1,16 --seconds 0.4 --report "$T/bench.json" >"$T/bench.log" 2>&1 \
  || bad "bench failed: $(tail -2 "$T/bench.log")"
browse "$T/bench.html" "$T/bench.png" 1400
check "bench --report page" "$T/bench.html" 4
python3 -c "import json,sys; r=json.load(open('$T/bench.json')); assert [x['batch'] for x in r['latency']]==[1,16] and all(x['sparse_seconds']>0 for x in r['latency'])" \
  && ok "bench report: latency for batch 1 and 16" || bad "bench json: $(head -c 300 "$T/bench.json")"

# Bad input: one line naming the file, exit 2.
echo '{"layers": ' >"$T/broken.json"
"$PRUNUS" report "$T/broken.json" 2>"$T/err"; rc=$?
[[ $rc -eq 2 && $(wc -l <"$T/err") -eq 1 ]] && grep -qF "$T/broken.json" "$T/err" && ok "corrupt report.json: exit 2, one line" \
  || bad "corrupt report.json: rc=$rc $(cat "$T/err")"
[[ ! -e "$T/broken.html" ]] && ok "nothing written for it" || bad "wrote broken.html"

# The check itself can fail: a page with a script error is caught.
sed 's|</body>|<script>undefinedFunction();</script></body>|' "$T/main/report.html" >"$T/error.html"
browse "$T/error.html" "$T/error.png" 600
grep -q 'Uncaught' "$T/console" && ok "a script error in the page is seen by the check" || bad "script error not detected"

echo "$fails failure(s)"
[[ $fails -eq 0 ]]
