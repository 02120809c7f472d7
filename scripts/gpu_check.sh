#!/usr/bin/env bash
# The GPU check: the planned recipe (`comp train --fold all --budget B`, no other flag) on 5 folds of
# CIFAR-10 on one GPU, then a soft blend; prints the net the planner chose, the epochs it fitted, the
# OOF accuracy per fold, images/s, and how long `comp train` took against the budget.
#   scripts/gpu_check.sh [CIFAR10_ZIP] [WORKDIR] [BUDGET]      (BUDGET: for all folds, default 5m)
# Runs with the python3 that has torch (set PYTHON to override); comp need not be installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
zip="${1:-$repo/../shared/data/cifar10.zip}"
work="${2:-/tmp/comp_gpu_check}"
budget="${3:-5m}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$work"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
start=$(date +%s)
"$PYTHON" -m comp --workdir "$work" prepare --data "$zip"
train_start=$(date +%s)
"$PYTHON" -m comp --workdir "$work" train --fold all --budget "$budget" --name planned --force 2>&1 | grep -v "^  epoch" || true
train_seconds=$(( $(date +%s) - train_start ))
"$PYTHON" -m comp --workdir "$work" blend --method soft --runs planned --name gpu_check_planned
"$PYTHON" - "$work" "$budget" "$train_seconds" <<'PY'
import json, sys, pathlib
import pandas as pd
work, budget, seconds = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
folds = sorted((work / "runs" / "planned").glob("fold*"))
metrics = [json.loads((f / "metrics.json").read_text()) for f in folds]
configs = [json.loads((f / "config.json").read_text()) for f in folds]
accs = [m["accuracy"] for m in metrics]
ips = sorted(pd.read_csv(f / "history.csv").images_per_second.median() for f in folds)
print(f"gpu_check planned: arch {configs[0]['arch']} ({configs[0]['plan']['arch']}), "
      f"epochs {[round(c['epochs'], 1) for c in configs]}, budget {budget} for {len(folds)} folds "
      f"(comp train took {seconds} s), OOF accuracy per fold {[round(a, 4) for a in accs]}, "
      f"mean {sum(accs) / len(accs):.4f}, median train images/s {ips[len(ips) // 2]:.0f}")
PY
echo "gpu_check wall seconds: $(( $(date +%s) - start ))"
