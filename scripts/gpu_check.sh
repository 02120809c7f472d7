#!/usr/bin/env bash
# The GPU check: fastnet, 5 folds of CIFAR-10 on one GPU; prints images/s and OOF accuracy.
#   scripts/gpu_check.sh [CIFAR10_ZIP] [WORKDIR]
# Runs with the python3 that has torch (set PYTHON to override); comp need not be installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
zip="${1:-$repo/../shared/data/cifar10.zip}"
work="${2:-/tmp/comp_gpu_check}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$work"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
start=$(date +%s)
"$PYTHON" -m comp --workdir "$work" prepare --data "$zip"
"$PYTHON" -m comp --workdir "$work" train --arch fastnet --fold all --force 2>&1 | grep -v "^  epoch" || true
"$PYTHON" -m comp --workdir "$work" blend --method soft --runs fastnet --name gpu_check_fastnet
"$PYTHON" - "$work" <<'PY'
import json, sys, pathlib
import pandas as pd
runs = pathlib.Path(sys.argv[1]) / "runs" / "fastnet"
accs, ips = [], []
for fold in sorted(runs.glob("fold*")):
    accs.append(json.loads((fold / "metrics.json").read_text())["accuracy"])
    ips.append(pd.read_csv(fold / "history.csv").images_per_second.median())
print(f"gpu_check fastnet: folds {len(accs)}, OOF accuracy per fold {[round(a, 4) for a in accs]}, "
      f"mean {sum(accs) / len(accs):.4f}, median train images/s {sorted(ips)[len(ips) // 2]:.0f}")
PY
echo "gpu_check wall seconds: $(( $(date +%s) - start ))"
