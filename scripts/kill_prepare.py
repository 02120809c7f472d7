"""kill -9 at ten evenly spaced moments of `comp prepare`: the previous preparation must survive.

    python scripts/kill_prepare.py --data tiny100.zip --workdir WORKDIR [--kills 10]

1. WORKDIR gets a complete preparation (--seed 42) and one trained fold (simple_cnn, a few steps),
   so that `comp blend` has something to blend.
2. A full prepare of a copy of the zip (another name, so it is extracted again, --seed 1) is timed
   in a scratch workdir: T seconds.
3. Ten times: the copy's extracted folder is deleted, `comp prepare --seed 1` starts in WORKDIR
   and is killed with SIGKILL after (k + 0.5) / 10 * T seconds. Then `comp blend` must still work
   on the previous preparation (had the kill come after the switch, the new split is complete and
   blend refuses the old run in one line), and the staging files the kill left must be gone when
   the next prepare is killed in its turn (it removes them as it starts).
4. A last complete prepare (--seed 42) must leave no staging file, and `comp blend` must work.
Prints a table (moment, staging left by the kill, blend, staging left after the next prepare) and
one result line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}


def comp(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "comp", "--workdir", str(workdir), *args], env=ENV,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"comp {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def staging_files(workdir: Path) -> list[Path]:
    """What a killed prepare can leave: staging/commit folders and atomic_path temporaries."""
    places = [workdir / "folds", workdir / "folds" / "cache", workdir / "data"]
    return [p for place in places if place.is_dir() for p in place.iterdir()
            if p.name.startswith(".") and (".tmp-" in p.name or p.name.startswith((".staging-", ".commit-")))]


def size_of(paths: list[Path]) -> str:
    total, files = 0, 0
    for path in paths:
        for f in ([path] if path.is_file() else path.rglob("*")):
            if f.is_file():
                total, files = total + f.stat().st_size, files + 1
    return f"{len(paths)} ({files} files, {total / 1e6:.1f} MB)"


def phase(leftovers: list[Path], finished: bool) -> str:
    names = [p.name for p in leftovers]
    if finished:
        return "had finished"
    if any(n.startswith(".commit-") for n in names):
        return "switching"
    if any(n.startswith(".staging-") for n in names):
        return "decoding into staging"
    if any(".tmp-" in n for n in names):
        return "extracting the zip"
    return "starting (reading tables)"


def blend_state(workdir: Path, k: int) -> str:
    result = comp(workdir, "blend", "--name", f"after_kill_{k}", check=False)
    seed = json.loads((workdir / "folds" / "prepare.json").read_text()).get("seed") \
        if (workdir / "folds" / "prepare.json").exists() else None
    tail = (result.stderr.strip().splitlines() or [""])[-1]
    if result.returncode == 0:
        return f"ok (prepare.json seed {seed})"
    traceback = "Traceback" in result.stderr
    return f"exit {result.returncode}{' TRACEBACK' if traceback else ''} (seed {seed}): {tail[:120]}"


def parse_args(doc: str, kills: int) -> tuple[argparse.Namespace, Path]:
    """The kill scripts' arguments (--data, --workdir, --kills) and the workdir, made."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", required=True, help="the competition zip (e.g. tiny100.zip)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--kills", type=int, default=kills)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return args, workdir


def main():
    args, workdir = parse_args(__doc__, kills=10)
    info = workdir / "folds" / "prepare.json"
    if not info.exists() or json.loads(info.read_text()).get("seed") != 42:  # the split the run trains on
        comp(workdir, "prepare", "--data", args.data, "--seed", "42")
    if not list((workdir / "runs").glob("*/fold0/metrics.json")):
        comp(workdir, "train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "0.05", "--batch-size", "256",
             "--tta", "none", "--precision", "fp32")
    comp(workdir, "blend", "--name", "before")

    copy = workdir / "zips" / f"{Path(args.data).stem}_again.zip"  # another name: extracted again
    copy.parent.mkdir(exist_ok=True)
    if not copy.exists():
        shutil.copyfile(args.data, copy)
    scratch = workdir / "timing"
    shutil.rmtree(scratch, ignore_errors=True)
    durations = []
    for _ in range(2):  # as in the loop below: the extracted copy deleted just before
        shutil.rmtree(scratch / "data" / copy.stem, ignore_errors=True)
        started = time.time()
        comp(scratch, "prepare", "--data", str(copy), "--seed", "1")
        durations.append(time.time() - started)
    full = max(durations)
    shutil.rmtree(scratch)
    print(f"a full prepare (extraction included) takes {full:.1f} s; killing at {args.kills} moments")

    rows, previous_leftovers = [], []
    for k in range(args.kills):
        shutil.rmtree(workdir / "data" / copy.stem, ignore_errors=True)
        moment = (k + 0.5) / args.kills * full
        proc = subprocess.Popen([sys.executable, "-m", "comp", "--workdir", str(workdir), "prepare", "--data",
                                 str(copy), "--seed", "1"], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(moment)
        finished = proc.poll() is not None
        survived = [p for p in previous_leftovers if p.exists()]  # what this prepare has not removed
        if rows:
            rows[-1]["left after the next prepare started"] = size_of(survived) if survived else "0"
        if not finished:  # poll() has reaped a finished one: its pid may belong to another process now
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        previous_leftovers = staging_files(workdir)
        rows.append({"kill": k + 1, "at s": f"{moment:.1f}", "phase": phase(previous_leftovers, finished),
                     "staging left by the kill": size_of(previous_leftovers), "comp blend after": blend_state(workdir, k)})
    comp(workdir, "prepare", "--data", args.data, "--seed", "42")
    survived = [p for p in previous_leftovers if p.exists()]
    rows[-1]["left after the next prepare started"] = size_of(survived) if survived else "0"
    final_leftovers = staging_files(workdir)
    final_blend = blend_state(workdir, args.kills)

    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    blends_ok = sum(r["comp blend after"].startswith("ok") for r in rows)
    cleaned = sum(r["left after the next prepare started"] == "0" for r in rows)
    print(f"kill_prepare {Path(args.data).name}: full prepare {full:.1f} s, {args.kills} kills: comp blend worked "
          f"after {blends_ok}/{args.kills}, staging removed by the next prepare {cleaned}/{args.kills}; after a "
          f"final complete prepare: {len(final_leftovers)} staging files, comp blend {final_blend}")


if __name__ == "__main__":
    main()
