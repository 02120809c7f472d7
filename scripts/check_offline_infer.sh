#!/usr/bin/env bash
# Issue-11 must-show: a fresh virtual environment holding only a bundle's wheels runs `comp infer` with the
# network off, and writes the CSV `comp blend` wrote.
#   scripts/check_offline_infer.sh BUNDLE IMAGES IDS_CSV EXPECTED_CSV
# BUNDLE: exported with `comp export ... --wheels`. pip runs with --no-index (it can fetch nothing) and
# `comp infer` runs under `unshare -n` (a network namespace with no interface up). Prints one result line.
set -euo pipefail
bundle=$(realpath "$1"); images=$(realpath "$2"); ids=$(realpath "$3"); expected=$(realpath "$4")
base_python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$base_python" -m venv "$scratch/venv"
env -u PYTHONPATH PIP_NO_INDEX=1 "$scratch/venv/bin/pip" install -q --no-index --find-links "$bundle/wheels" \
  --no-deps "$bundle"/wheels/*.whl
packages=$("$scratch/venv/bin/pip" list --format=freeze 2>/dev/null | wc -l)
cd "$scratch"
started=$(date +%s.%N)
env -u PYTHONPATH unshare -n "$scratch/venv/bin/comp" infer "$bundle" --images "$images" --ids "$ids" \
  --out submission.csv > infer.log 2>&1 || { cat infer.log; exit 1; }
seconds=$(echo "$(date +%s.%N) - $started" | bc)
rows=$(($(wc -l < submission.csv) - 1))
if cmp -s submission.csv "$expected"; then same="identical to $(basename "$expected")"; else same="DIFFERS from $(basename "$expected")"; fi
echo "offline venv ($packages packages from $(ls "$bundle"/wheels/*.whl | wc -l) wheels, $(du -sm "$bundle/wheels" | cut -f1) MB): comp infer $rows rows in ${seconds%.*} s under unshare -n; CSV $same"
