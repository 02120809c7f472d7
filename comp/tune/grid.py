"""`comp grid`: every (architecture, fold) pair, one after another, on this machine.

    comp grid --archs fastnet,custom_cnn --folds all --epochs 10

A complete run (metrics.json and the logits exist) is skipped, so re-running the command
after a crash or Ctrl-C picks up where it stopped; an unfinished run is resumed from its
checkpoint (one of another recipe is reported and left alone: `comp train --force` starts it
over). A run locked by another process (another `comp grid` or `comp train` on this
or another machine sharing the workdir) is skipped as "busy", so several machines can run
the same grid command and split the pairs between them. A run that fails is reported and
the grid goes on; the command exits with an error at the end if any run failed.

On a SLURM cluster, one array task per fold instead (the workdir on a shared filesystem,
prepared once with `comp prepare`):

    #!/bin/bash
    #SBATCH --job-name=comp-fastnet
    #SBATCH --array=0-4                 # one task per fold of a 5-fold prepare
    #SBATCH --gres=gpu:1
    #SBATCH --cpus-per-task=8
    #SBATCH --time=02:00:00
    #SBATCH --output=logs/%x-%a.out
    #SBATCH --requeue                   # a preempted task restarts ...
    source .venv/bin/activate
    comp --workdir /shared/work train --arch fastnet --fold $SLURM_ARRAY_TASK_ID --resume   # ... and resumes

then, once the array is done (`sbatch --dependency=afterok:<jobid> blend.sh`):
    comp --workdir /shared/work blend --runs fastnet
For several architectures, submit one array per architecture, or run `comp grid` with the
same arguments in every task: the run locks make the tasks take different pairs.
"""
from __future__ import annotations

import re
import time

from ..io import CompError, read_json
from ..prepare.folds import load_prepared
from ..runs import RunBusy, fold_dir, is_complete
from ..train.config import recipe_differs


def parse_folds(spec: str, n_folds: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(n_folds))
    try:
        folds = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise CompError(f"--folds {spec!r}: expected 'all' or comma-separated numbers such as 0,1") from None
    bad = [k for k in folds if not 0 <= k < n_folds]
    if bad or not folds:
        raise CompError(f"--folds {spec!r}: folds.csv has folds 0..{n_folds - 1}")
    return folds


def grid(archs: str | list[str], folds: str = "all", workdir=".", **train_kwargs) -> list[dict]:
    """Train each pair; `train_kwargs` are TrainConfig fields (epochs, seed, device ...)."""
    from ..models import model_info

    names = [a.strip() for a in archs.split(",")] if isinstance(archs, str) else list(archs)
    names = [a for a in names if a]
    if not names:
        raise CompError("--archs: give at least one architecture, e.g. --archs fastnet,custom_cnn")
    for arch in names:
        try:
            model_info(arch)
        except ValueError as exc:
            raise CompError(f"--archs {arch}: {exc}") from None
    prepared = load_prepared(workdir)
    fold_ids = parse_folds(folds, prepared.n_folds)
    rows = []
    for arch in names:
        for fold in fold_ids:
            row = run_one(arch, fold, workdir, prepared, train_kwargs)
            print(f"grid: {arch} fold {fold}: {row['status']}", flush=True)
            rows.append(row)
    print_summary(rows)
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        raise CompError(f"{len(failed)} of {len(rows)} run(s) failed: "
                        + "; ".join(f"{r['arch']} fold {r['fold']}" for r in failed))
    return rows


def run_one(arch: str, fold: int, workdir, prepared, train_kwargs: dict) -> dict:
    from ..train.trainer import TrainConfig, train_fold

    name = arch.replace("/", "_")  # the run name `comp train` uses by default
    path = fold_dir(workdir, name, fold)
    row = dict(arch=arch, fold=fold, path=str(path), accuracy=None, seconds=None)
    if is_complete(path):
        try:
            trained = read_json(path / "config.json")
        except (OSError, ValueError):  # a damaged config: the status names no difference
            trained = {}
        differ = recipe_differs(trained, {k: v for k, v in train_kwargs.items() if k != "arch"})
        status = "skipped: complete" + (f", trained with {differ}; --force in comp train to redo it" if differ else "")
        return {**row, "status": status, "accuracy": _accuracy(path)}
    unfinished = (path / "checkpoint.pt").exists()  # resumed below, if its recipe is the one asked
    started = time.time()
    # resume=True: an unfinished run left by a crash continues; one still being trained is
    # locked by its process, and train_fold raises CompError before touching it.
    cfg = TrainConfig(arch=arch, fold=fold, workdir=str(workdir), resume=True, **train_kwargs)
    try:
        metrics = train_fold(cfg, prepared)
    except RunBusy:  # another process holds the run's lock
        return {**row, "status": "skipped: busy"}
    except CompError as exc:
        message = str(exc)
        if unfinished:  # the resume checks advise comp train's --force, which comp grid has not
            message = re.sub(r"(, or|;) --force to start over", "", message)
            message += f"; comp grid only resumes: `comp train --arch {arch} --fold {fold} --force` starts it over"
        return {**row, "status": f"failed: {message}"}
    except Exception as exc:  # a bad recipe for this model, out of memory ...: the grid goes on
        return {**row, "status": f"failed: {type(exc).__name__}: {exc}"}
    return {**row, "status": "trained", "accuracy": metrics.get("accuracy"), "seconds": round(time.time() - started, 1)}


def _accuracy(path) -> float | None:
    try:
        return read_json(path / "metrics.json").get("accuracy")
    except (OSError, ValueError):
        return None


def print_summary(rows: list[dict]) -> None:
    print(f"\n{'arch':<20} {'fold':>4}  {'accuracy':>8}  {'seconds':>7}  status")
    for r in rows:
        accuracy = "" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"{r['arch']:<20} {r['fold']:>4}  {accuracy:>8}  {seconds:>7}  {r['status']}")
    counts = {}
    for r in rows:
        key = r["status"].split(":")[0] if r["status"].startswith("failed") else r["status"]
        counts[key] = counts.get(key, 0) + 1
    print("  " + ", ".join(f"{n} {status}" for status, n in counts.items()))
