"""One budgeted fold, timed from outside: does `comp train --budget` keep its budget, and what does it score?

    python scripts/bench_budget.py --workdir WORK --e 93.0 --budget-e 10 [--fold 0] [--name N] [-- TRAIN FLAGS]

--e is E in seconds (scripts/bench_throughput.py prints it: one bare-loop fastnet epoch over 40,000
32px images on this machine, measured in the same sitting); the budget is --budget-e times E.
Runs `comp train --fold K --budget <seconds>s --force` under /usr/bin/time (the whole process:
imports, data loading, training, prediction, writing) and prints one result line with the wall
time against the budget and the fold's out-of-fold scores. Flags after `--` go to comp train.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--e", type=float, required=True, help="E in seconds")
    parser.add_argument("--budget-e", type=float, required=True, help="the budget in E")
    parser.add_argument("--fold", type=int, default=0, help="one fold (the budget is a fold's)")
    parser.add_argument("--name", default="budget")
    parser.add_argument("train_flags", nargs="*", help="more comp train flags (after --)")
    args = parser.parse_args()
    budget = args.budget_e * args.e
    with tempfile.TemporaryDirectory() as tmp:  # /usr/bin/time -o: comp's own stderr (progress) stays live
        timing = Path(tmp) / "wall"
        cmd = ["/usr/bin/time", "-o", str(timing), "-f", "wall %e", sys.executable, "-m", "comp", "--workdir",
               args.workdir, "train", "--fold", str(args.fold), "--name", args.name, "--budget", f"{budget:.0f}s",
               "--force", *args.train_flags]
        proc = subprocess.run(cmd, stdout=sys.stderr)
        if proc.returncode != 0:
            sys.exit(f"comp train failed ({proc.returncode})")
        wall = float(timing.read_text().strip().splitlines()[-1].split()[-1])
    out = Path(args.workdir) / "runs" / args.name / f"fold{args.fold}"
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    print(f"budget {args.name} fold {args.fold}: budget {budget:.0f} s ({args.budget_e:g}E, E = {args.e:.1f} s), "
          f"wall {wall:.0f} s ({wall / budget:.3f} of the budget), {config['arch']} batch {config['batch_size']}, "
          f"{metrics['epochs']} epochs, TTA {metrics['tta']}: OOF accuracy {metrics['accuracy']:.4f} "
          f"(no TTA {metrics['accuracy_no_tta']:.4f}), macro-F1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
