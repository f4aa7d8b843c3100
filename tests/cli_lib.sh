# Shared by the CLI test scripts: a temp dir, ok/bad counters, and the bad-input contract.
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   - $1"; }
bad() { echo "FAIL - $1"; fails=$((fails + 1)); }

# expect_error NAME EXPECTED_SUBSTRING CMD...: exit code 2, exactly one line on stderr containing the substring.
expect_error() {
  local name=$1 want=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  local lines; lines=$(wc -l <"$T/err")
  if [[ $rc -eq 2 && $lines -eq 1 ]] && grep -qF -- "$want" "$T/err"; then ok "$name"
  else bad "$name: rc=$rc lines=$lines stderr: $(head -c 400 "$T/err")"; fi
}
