#!/usr/bin/env bash
# Issue-4 benchmark: several architectures x 5 folds on CIFAR-10, every blend method scored
# honestly on out-of-fold rows, with the runs' TTA and with TTA switched off (comp predict).
#   scripts/bench_blend.sh WORKDIR "fastnet fastnet_l resnet18" [extra train args...]
# WORKDIR must already hold `comp prepare` output. Prints one line per run and per blend.
set -euo pipefail
work="$1"; archs="$2"; shift 2
comp() { "${PYTHON:-python3}" -m comp --workdir "$work" "$@"; }
notta=()
for arch in $archs; do
  comp train --arch "$arch" --fold all "$@" 2>&1 | grep "OOF accuracy" || true
  comp predict --run "$arch" --tta none > /dev/null
  notta+=("${arch}_tta-none")
done
for method in soft logit hard rank select stack; do
  comp blend --method "$method" --runs $archs --name "tta_$method" | grep "^blend" | sed "s/^/with TTA: /"
  comp blend --method "$method" --runs "${notta[@]}" --name "notta_$method" | grep "^blend" | sed "s/^/no TTA:   /"
done
comp blend --method soft --runs $archs --name tta_soft_runs | grep "^  run " | sed "s/^/with TTA: /"
comp blend --method soft --runs "${notta[@]}" --name notta_soft_runs | grep "^  run " | sed "s/^/no TTA:   /"
