"""How far should flip+shift TTA shift? Scores a finished run's held-out folds at several shifts.

    python scripts/bench_tta.py --workdir WORK --run NAME [--shifts 1 2 4]

Each complete fold's saved model predicts its held-out images once per view: plain, mirrored, and
both of them shifted by -s and +s px on each axis for every s of --shifts (comp.train.tta.tta_views,
reflect padding). No retraining, so every row below comes from the same weights. Prints one result
line: OOF accuracy and macro-F1 over all the run's held-out images without TTA, with flip, and
with flip+shift at each shift (comp's flip+shift shifts 1 px).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from comp.train.tta import combine_views, tta_views  # noqa: E402
from comp.train.feed import autocast  # noqa: E402
from comp.prepare.folds import load_prepared  # noqa: E402
from comp.io import read_json  # noqa: E402
from comp.train.predict import fold_model_and_feed  # noqa: E402
from comp.runs import is_complete, runs_root  # noqa: E402
from comp.train.trainer import scores  # noqa: E402


@torch.inference_mode()
def fold_views(prepared, src: Path, shifts) -> tuple[dict, np.ndarray]:
    """{scheme: (N, C) logits} of one fold's held-out images, and their labels."""
    config = read_json(src / "config.json")
    in_fold = prepared.folds.fold.to_numpy() == config["fold"]
    model, feed, precision = fold_model_and_feed(prepared, src, config, in_fold)
    device = next(model.parameters()).device
    out = {}
    for x in feed.eval_batches("val"):
        with autocast(device, precision):
            unshifted = [model(v).float() for _, v in tta_views(x, "flip")]  # plain, mirrored
            batch = {mode: combine_views(unshifted, mode) for mode in ("none", "flip")}
            for s in shifts:
                shifted = [model(v).float() for _, v in tta_views(x, "flip+shift", shift=s)[2:]]
                batch[f"flip+shift {s}px"] = combine_views(unshifted + shifted, "flip+shift")
        for key, logits in batch.items():
            out.setdefault(key, []).append(logits.cpu().numpy())
    y = prepared.label_map.encode(list(prepared.folds.label[in_fold]))
    return {k: np.concatenate(v) for k, v in out.items()}, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--shifts", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    prepared = load_prepared(args.workdir)
    folds = sorted(p for p in (runs_root(args.workdir) / args.run).glob("fold*") if is_complete(p))
    if not folds:
        sys.exit(f"no complete folds of run {args.run!r} under {runs_root(args.workdir)}")
    logits, labels = {}, []
    for src in folds:
        views, y = fold_views(prepared, src, args.shifts)
        for key, value in views.items():
            logits.setdefault(key, []).append(value)
        labels.append(y)
    y = np.concatenate(labels)
    parts = []
    for key, value in logits.items():
        s = scores(np.concatenate(value), y, prepared.label_map.num_classes)
        parts.append(f"{key} {s['accuracy']:.4f} / {s['macro_f1']:.4f}")
    print(f"tta shift {args.run} ({len(folds)} folds, {len(y)} held-out images, {prepared.image_size}px): "
          f"OOF accuracy / macro-F1: " + ", ".join(parts))


if __name__ == "__main__":
    main()
