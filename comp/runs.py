"""The run folder: what `comp train` writes and `comp blend`/`comp report` read.

runs/<name>/fold<K>/
  config.json     the resolved training config (+ label hash, data fingerprints)
  history.csv     one row per epoch: loss, accuracy, F1, lr, seconds
  metrics.json    written last: its presence means the fold is complete
  oof.npz         ids, logits (n, C), true indices and fold of the fold-K rows (TTA applied), and up to
                  50M floats every TTA view's logits (view_logits)
  test.npz        ids, logits (m, C) for every row of folds/test.csv (TTA applied; view_logits as above)
  model.pt        the kept weights (the last epoch's; the best epoch's with --patience)
  checkpoint.pt   the resumable state while training;  lock  the trainer's claim;  tb/  TensorBoard events
"""
from __future__ import annotations

from fnmatch import fnmatch
import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import CompError, read_json


def runs_root(workdir) -> Path:
    return Path(workdir) / "runs"


def fold_dir(workdir, name: str, fold: int) -> Path:
    return runs_root(workdir) / name / f"fold{fold}"


def is_complete(path: Path) -> bool:
    return (path / "metrics.json").exists() and (path / "oof.npz").exists() and (path / "test.npz").exists()


def check_adoptable(config: dict, path: Path, split: str, budget_chose_net: bool) -> None:
    """`--fold all` skips a complete fold (config: its config.json, at path) only where it belongs to the run it
    trains: one on this fold split (prepare again with another --seed gives every row another fold), and, where
    the budget chose the net, one that did not set the net by --arch under the same name (its recipe may be
    anything)."""
    if config.get("folds_fingerprint", split) != split:
        raise CompError(f"{path} was trained on another fold split (comp prepare ran again with another --seed or "
                        f"--folds): --force retrains the run's folds, or --name NAME trains a new run")
    if budget_chose_net and not config.get("arch_reason"):
        raise CompError(f"{path} was trained with --arch {config.get('arch')} set by hand, and the budget chose that "
                        f"net too: pass --name NAME to train the planned run apart, or --force to train that fold again")


def process_gone(host: str, pid: int) -> bool:
    """True only when the process is known to be gone: on this host, and os.kill(pid, 0) finds no such pid.
    Another machine's process (a shared workdir), or any on Windows, counts as running."""
    if host != socket.gethostname() or os.name == "nt":
        return False  # os.kill(pid, 0) on Windows would signal the process
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


class RunBusy(CompError):
    """The run folder is locked by a live process: `--fold all` and `comp grid` skip it and go on."""


class RunLock:
    """One trainer per run folder, also across machines sharing a workdir.

    The lock file is created with O_EXCL; a lock left by a killed process on this
    host (its pid is gone) is taken over, so kill -9 never blocks a resume.
    """

    def __init__(self, folder: Path):
        self.path = folder / "lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, me.encode())
                os.close(fd)
                return self
            except FileExistsError:
                if not self._stale():
                    owner = self.path.read_text(errors="replace").strip()
                    raise RunBusy(f"{self.path.parent} is being trained by another process ({owner}); "
                                    f"wait for it, or delete {self.path} if that process is gone")
                self.path.unlink(missing_ok=True)
        raise CompError(f"could not lock {self.path}")

    def _stale(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return True  # empty or unreadable: a writer died between create and write
        return process_gone(host, int(pid))

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def check_trained_on(config: dict, path, label_hash: str, split: str | None) -> None:
    """A fold's run must match today's folds/: the same label map (else its class indices mean
    other names) and the same fold split (else its "out-of-fold" rows include training rows)."""
    if config.get("label_hash") != label_hash:
        raise CompError(f"{path}: trained with label map {config.get('label_hash')}, but folds/labels.json has "
                        f"{label_hash}; retrain it (or leave the run out with --runs)")
    if split and config.get("folds_fingerprint", split) != split:
        raise CompError(f"{path}: trained on another fold split than folds/folds.csv (prepared again with "
                        f"another --seed or --folds?), so its out-of-fold rows include rows it trained on; "
                        f"retrain it (or leave the run out with --runs)")


OOF_LABEL_USES = {
    "patience": "--patience chose the kept epoch on the held-out fold's labels",
    "plateau": "--schedule plateau stepped the learning rate on the held-out fold's loss",
    "tuned": "--params: hyperparameters chosen by `comp tune` on this fold's validation score",
}


def oof_label_use(config: dict) -> list[str]:
    """How a fold's training looked at its own held-out labels (keys of OOF_LABEL_USES): its OOF
    score is then optimistic. From config.json, so runs trained before the record existed get it too."""
    uses = []
    if config.get("patience"):
        uses.append("patience")
    if config.get("schedule") == "plateau":
        uses.append("plateau")
    tuned = config.get("tuned_on") or {}
    if tuned and int(tuned.get("fold", -1)) == int(config.get("fold", -2)):
        uses.append("tuned")
    return uses


def run_label_use(run) -> str:
    """The OOF label uses of any of a run's folds, for leaderboards and blend lines ("" if none)."""
    uses = {use for fold in run.folds for use in oof_label_use(fold.config)}
    return ",".join(use for use in OOF_LABEL_USES if use in uses)


@dataclass
class FoldResult:
    name: str
    fold: int
    path: Path
    config: dict
    metrics: dict
    oof_ids: np.ndarray
    oof_logits: np.ndarray
    oof_labels: np.ndarray
    test_ids: np.ndarray
    test_logits: np.ndarray


def load_fold(path: Path) -> FoldResult:
    try:
        oof, test = np.load(path / "oof.npz"), np.load(path / "test.npz")
        config, metrics = read_json(path / "config.json"), read_json(path / "metrics.json")
        return FoldResult(config["name"], int(config["fold"]), path, config, metrics,
                          oof["ids"].astype(str), oof["logits"].astype(np.float32), oof["labels"],
                          test["ids"].astype(str), test["logits"].astype(np.float32))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a partial copy, a foreign file
        raise CompError(f"{path}: its results are unreadable ({type(exc).__name__}: {exc}); copy the fold again, "
                        f"or train it again with --force") from None


@dataclass
class Run:
    """All complete folds of one named run (one architecture/config)."""
    name: str
    folds: list[FoldResult]

    @property
    def label_hash(self) -> str:
        return self.folds[0].config["label_hash"]

    @property
    def oof_ids(self) -> np.ndarray:
        return np.concatenate([f.oof_ids for f in self.folds])

    @property
    def oof_logits(self) -> np.ndarray:
        return np.concatenate([f.oof_logits for f in self.folds])

    @property
    def oof_labels(self) -> np.ndarray:
        return np.concatenate([f.oof_labels for f in self.folds])

    @property
    def oof_fold(self) -> np.ndarray:
        return np.concatenate([np.full(len(f.oof_ids), f.fold) for f in self.folds])

    @property
    def test_logits(self) -> np.ndarray:
        """Mean over folds: each fold's model saw a different 80% of the data."""
        return np.mean([f.test_logits for f in self.folds], axis=0)

    @property
    def fold_ids(self) -> list[int]:
        return [f.fold for f in self.folds]

    def history(self) -> pd.DataFrame:
        frames = [pd.read_csv(f.path / "history.csv").assign(fold=f.fold) for f in self.folds]
        return pd.concat(frames, ignore_index=True)


def find_runs(workdir, patterns: list[str] | None = None) -> list[Run]:
    """Complete runs under runs/, optionally filtered by glob patterns on the run name."""
    root = runs_root(workdir)
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    if patterns:  # "a b" or "a,b": the other --list flags (--methods) take commas
        patterns = [pat for text in patterns for pat in text.split(",") if pat]
        chosen = [n for n in names if any(fnmatch(n, pat) for pat in patterns)]
        missing = [pat for pat in patterns if not any(fnmatch(n, pat) for n in names)]
        if missing:
            raise CompError(f"--runs {' '.join(missing)}: no run matches under {root} (runs: {', '.join(names) or 'none'})")
        names = chosen
    runs = []
    for name in names:
        folds = [load_fold(p) for p in sorted((root / name).glob("fold*")) if is_complete(p)]
        if folds:
            runs.append(Run(name, sorted(folds, key=lambda f: f.fold)))
        elif patterns and name in patterns:  # asked for by its exact name: not dropped in silence
            raise CompError(f"--runs {name}: {root / name} has no complete fold (metrics.json, oof.npz and test.npz); "
                            f"finish it with `comp train --name {name} --resume`, or leave it out of --runs")
    if not runs:
        raise CompError(f"no complete runs under {root}: train one with `comp train --arch ... --fold 0`")
    return runs
