"""SIGTERM and kill -9 at evenly spaced moments of `comp export --zip` and `comp infer` of a zipped bundle.

    python scripts/kill_export_infer.py --data tiny100.zip --workdir WORKDIR [--kills 6]

1. WORKDIR gets a preparation and one trained fold (as scripts/kill_prepare.py makes them).
2. A full `comp export k --zip --force` and a full `comp infer bundles/k.zip --images <test folder>` are timed.
3. For each command, signal (SIGTERM, then SIGKILL) and k: the command starts with TMPDIR=WORKDIR/tmp and
   gets the signal after (k + 0.5) / kills of its full time. Recorded: its exit code, and what it left:
   `bundles/.k.tmp-<pid>` folders, `.k.zip.tmp-<pid>` files, `comp-bundle-*`/`comp-infer-*` folders in TMPDIR.
   SIGTERM must leave nothing; what a SIGKILL leaves must be gone once the next run of the command starts.
Prints a table and one result line.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kill_prepare import ENV, comp, parse_args, size_of


def leftovers(workdir: Path) -> list[Path]:
    bundles, tmp = workdir / "bundles", workdir / "tmp"
    found = [p for p in bundles.iterdir() if ".tmp-" in p.name] if bundles.is_dir() else []
    return found + sorted(tmp.glob("comp-*"))


def timed(workdir: Path, args: list[str]) -> float:
    started = time.time()
    comp(workdir, *args)
    return time.time() - started


def main():
    args, workdir = parse_args(__doc__, kills=6)
    (workdir / "tmp").mkdir(exist_ok=True)
    if not (workdir / "folds" / "prepare.json").exists():
        comp(workdir, "prepare", "--data", args.data)
    if not list((workdir / "runs").glob("*/fold0/metrics.json")):
        comp(workdir, "train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "0.05", "--batch-size", "256",
             "--tta", "none", "--precision", "fp32")
    test_dir = next(p for p in (workdir / "data").rglob("test*") if p.is_dir())
    commands = {"export": ["export", "k", "--zip", "--force"],
                "infer": ["infer", str(workdir / "bundles" / "k.zip"), "--images", str(test_dir),
                          "--out", str(workdir / "tmp_infer.csv")]}
    env = {**ENV, "TMPDIR": str(workdir / "tmp")}
    rows = []
    for name, argv in commands.items():
        full = max(timed(workdir, argv) for _ in range(2))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for k in range(args.kills):
                moment = (k + 0.5) / args.kills * full
                proc = subprocess.Popen([sys.executable, "-m", "comp", "--workdir", str(workdir), *argv], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(moment)
                finished = proc.poll() is not None
                if not finished:
                    os.kill(proc.pid, sig)
                code = proc.wait()
                left = leftovers(workdir)
                row = {"command": name, "signal": sig.name, "at s": f"{moment:.1f} of {full:.1f}",
                       "exit": "finished" if finished else code, "left": size_of(left) if left else "0"}
                if left:  # the next run of the command (same TMPDIR) must remove them as it starts
                    subprocess.run([sys.executable, "-m", "comp", "--workdir", str(workdir), *argv], env=env,
                                   check=True, capture_output=True)
                    row["left after the next run"] = size_of([p for p in left if p.exists()]) if any(
                        p.exists() for p in left) else "0"
                rows.append(row)
    columns = ["command", "signal", "at s", "exit", "left", "left after the next run"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    term = [r for r in rows if r["signal"] == "SIGTERM"]
    kill = [r for r in rows if r["signal"] == "SIGKILL"]
    term_clean = sum(r["left"] == "0" for r in term)
    kill_clean = sum(r.get("left after the next run", "0") == "0" for r in kill)
    print(f"kill_export_infer {Path(args.data).name}: SIGTERM left nothing {term_clean}/{len(term)}; "
          f"kill -9 leftovers removed by the next run {kill_clean}/{len(kill)} "
          f"({sum(r['left'] != '0' for r in kill)} of the kills left any)")


if __name__ == "__main__":
    main()
