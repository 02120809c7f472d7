"""`comp infer` against `comp blend` on a competition's test images: same labels, same logits, and speed.

    python scripts/bench_infer.py --workdir WORKDIR --images TEST_DIR --ids SAMPLE_CSV
                                  [--runs RUN ...] [--method soft] [--limit N] [--check] [--half]

Exports a bundle (--half: bf16 weights) of the runs into WORKDIR/bundles/, then runs `python -m comp infer`
as a separate process from an empty folder (timed: images/s includes loading the bundle). With --check it
also runs `comp blend` with the same runs and method and compares the two CSVs row for row, and compares
each run's fold-averaged logits (`comp infer --logits`) with the test logits under runs/ (blend's input).
--limit N predicts only the first N ids of the sample (a shorter timing). Prints one result line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from comp.blend.blend import BlendOptions, blend, fit_blend  # noqa: E402
from comp.deploy.bundle import ExportOptions, export  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--runs", nargs="+")
    ap.add_argument("--method", default="soft")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    tag = f"{args.method}{'_half' if args.half else ''}"
    bundle = export(ExportOptions(f"bench_{tag}", args.runs, args.method, half=args.half, force=True,
                                  workdir=args.workdir))
    size_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(args.ids).resolve()
        if args.limit:
            ids = Path(tmp) / "ids.csv"
            pd.read_csv(args.ids, dtype=str, keep_default_na=False).head(args.limit).to_csv(ids, index=False)
        n = len(pd.read_csv(ids, dtype=str))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "comp", "infer", str(bundle.resolve()), "--images",
                        str(Path(args.images).resolve()), "--ids", str(ids), "--out", "infer.csv",
                        "--logits", "infer.npz"], check=True,
                       cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - started
        line = (f"{Path(args.workdir).name} {tag}: bundle {size_mb:.1f} MB; comp infer {n} images in {seconds:.1f} s "
                f"= {n / seconds:.0f} img/s (bundle load included)")
        if args.check:
            line += "; " + check(args, bundle, Path(tmp) / "infer.csv", Path(tmp) / "infer.npz")
    print(line)


def check(args, bundle: Path, infer_csv: Path, infer_npz: Path) -> str:
    submission = blend(BlendOptions(args.method, args.runs, f"bench_{args.method}", workdir=args.workdir))
    expected = pd.read_csv(submission, dtype=str, keep_default_na=False)
    got = pd.read_csv(infer_csv, dtype=str, keep_default_na=False)
    expected = expected.head(len(got))
    same_ids = (got.iloc[:, 0].to_numpy() == expected.iloc[:, 0].to_numpy()).all()
    same = int((got.to_numpy() == expected.to_numpy()).all(axis=1).sum())
    fitted = fit_blend(BlendOptions(args.method, args.runs, workdir=args.workdir))
    logits = np.load(infer_npz)["logits"]
    used = [run["blend_index"] for run in json.loads((bundle / "bundle.json").read_text())["runs"]]
    stored = fitted.aligned.test_logits[used, :logits.shape[1]]
    diff = np.abs(logits[used] - stored)
    return (f"ids in order: {bool(same_ids)}; rows equal to comp blend's CSV: {same}/{len(got)}; "
            f"|logit - runs/ test logit| max {diff.max():.4f}, mean {diff.mean():.5f} "
            f"(logit scale: mean |logit| {np.abs(stored).mean():.2f})")


if __name__ == "__main__":
    main()
