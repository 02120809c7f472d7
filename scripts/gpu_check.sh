#!/usr/bin/env bash
# The GPU check: the planned recipe (`comp train --fold all --budget B`, no other flag) on the 5 folds
# of a competition zip on one GPU, then a soft blend; prints the net the planner chose, the epochs it
# fitted, OOF accuracy and macro-F1 per fold and for the blend, images/s, and how long `comp train`
# took against the budget. HAND_ARCHS="a b" adds, for each net, fold 0 with `--arch a` at the
# planned fold's share of the budget (B / the number of folds): the hand-set nets the plan should match;
# one that fails is reported and the summary still prints.
#   scripts/gpu_check.sh [ZIP] [WORKDIR] [BUDGET]      (ZIP: default CIFAR-10; BUDGET: all folds, default 5m)
# Runs with the python3 that has torch (set PYTHON to override); comp need not be installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
zip="${1:-$repo/../shared/data/cifar10.zip}"
work="${2:-/tmp/comp_gpu_check}"
budget="${3:-5m}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"  # cpu: try the script itself on a machine without a GPU
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
comp() { "$PYTHON" -m comp --workdir "$work" "$@"; }
quiet() { grep -v "^  epoch" || true; }  # the per-epoch lines; the plan table and results stay
mkdir -p "$work"
if [ "$DEVICE" = cuda ]; then
  "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
fi
start=$(date +%s)
comp prepare --data "$zip"
train_start=$(date +%s)
comp train --fold all --budget "$budget" --name planned --device "$DEVICE" --force 2>&1 | quiet
train_seconds=$(( $(date +%s) - train_start ))
comp blend --method soft --runs planned --name gpu_check_planned
share=$("$PYTHON" -c "import pandas as pd; from comp.train.recipe import parse_budget
print(f'{parse_budget(\"$budget\") / pd.read_csv(\"$work/folds/folds.csv\").fold.nunique():.0f}s')")
for arch in ${HAND_ARCHS:-}; do
  comp train --fold 0 --arch "$arch" --budget "$share" --name "hand_$arch" --device "$DEVICE" --force 2>&1 | quiet \
    || echo "gpu_check hand-set --arch $arch failed (above); going on"
done
"$PYTHON" - "$work" "$budget" "$train_seconds" ${HAND_ARCHS:-} <<'PY'
import json, sys, pathlib
import pandas as pd
from comp.runs import is_complete
work, budget, seconds, hand = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def fold_results(name):
    folds = sorted(f for f in (work / "runs" / name).glob("fold*") if is_complete(f))
    return ([json.loads((f / "metrics.json").read_text()) for f in folds],
            [json.loads((f / "config.json").read_text()) for f in folds],
            [pd.read_csv(f / "history.csv").images_per_second.median() for f in folds])

metrics, configs, ips = fold_results("planned")
accs, f1s = [m["accuracy"] for m in metrics], [m["macro_f1"] for m in metrics]
print(f"gpu_check planned: arch {configs[0]['arch']} {configs[0]['model_kwargs']} ({configs[0]['plan']['arch']}), "
      f"epochs {[round(c['epochs'], 1) for c in configs]}, budget {budget} for {len(metrics)} folds "
      f"(comp train took {seconds} s), OOF accuracy per fold {[round(a, 4) for a in accs]} "
      f"(mean {sum(accs) / len(accs):.4f}), macro-F1 per fold {[round(f, 4) for f in f1s]} "
      f"(mean {sum(f1s) / len(f1s):.4f}), median train images/s {sorted(ips)[len(ips) // 2]:.0f}")
for arch in hand:
    hand_metrics, hand_configs, hand_rates = fold_results(f"hand_{arch}")
    if not hand_metrics:
        print(f"gpu_check hand-set fold 0 --arch {arch}: no result (the run failed)")
        continue
    (m,), (c,), (rate,) = hand_metrics, hand_configs, hand_rates
    print(f"gpu_check hand-set fold 0 --arch {arch}: epochs {c['epochs']:.1f}, OOF accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}, train {m['train_seconds']:.0f} s, images/s {rate:.0f} "
          f"(planned fold 0: {accs[0]:.4f}, {f1s[0]:.4f})")
PY
echo "gpu_check wall seconds: $(( $(date +%s) - start ))"
