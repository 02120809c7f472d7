#!/usr/bin/env bash
# Issue-4 benchmark: every blend method scored honestly on out-of-fold rows, over finished
# 5-fold runs, once with the runs' own TTA and once with TTA switched off (comp predict).
#   scripts/bench_blend.sh WORKDIR RUN [RUN...]
# Prints one line per run and per blend.
set -euo pipefail
work="$1"; shift
runs=("$@")
comp() { "${PYTHON:-python3}" -m comp --workdir "$work" "$@"; }
notta=()
for run in "${runs[@]}"; do
  comp predict --run "$run" --tta none --force > /dev/null
  notta+=("${run}_tta-none")
done
for method in soft logit hard rank "select" "select --temperature" "select --metric accuracy" stack; do
  tag=${method// /}
  comp blend --method $method --runs "${runs[@]}" --name "tta_$tag" | grep "^blend" | sed "s/^/with TTA: [$method] /"
  comp blend --method $method --runs "${notta[@]}" --name "notta_$tag" | grep "^blend" | sed "s/^/no TTA:   [$method] /"
done
comp blend --method soft --runs "${runs[@]}" --name tta_soft_runs | grep "^  run " | sed "s/^/with TTA: /"
comp blend --method soft --runs "${notta[@]}" --name notta_soft_runs | grep "^  run " | sed "s/^/no TTA:   /"
