#!/usr/bin/env bash
# Runs crosscheck.py with the test virtualenv's Python (made by ./run.sh test).
PY=${1:?python}; PRUNUS=${2:?prunus}
if [[ ! -x "$PY" ]]; then
  echo "SKIPPED: no Python with safetensors at $PY (./run.sh test creates it)"
  exit 77
fi
exec "$PY" "$(dirname "$0")/crosscheck.py" "$PRUNUS"
