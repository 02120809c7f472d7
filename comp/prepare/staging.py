"""A new preparation replaces the old one in one atomic step, and a killed one leaves nothing behind.

`comp prepare` writes every new file into folds/.staging-<host>-<pid>/ (the same relative paths
as in folds/). When all of them are complete, the folder is renamed to .commit-<host>-<pid>: that
rename is the one switch. Before it, folds/ is the previous preparation, untouched; after it, the
new one is in force and its files are moved into folds/ (prepare.json last). A process killed
during those moves leaves the .commit folder, and the next reader of folds/ finishes the moves.

Temporaries of a process that no longer runs (a staging folder, atomic_path's `.<name>.tmp-<pid>`,
a half-extracted zip under data/) are removed by the next `comp prepare`.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from ..runs import process_gone

STAGED = re.compile(r"^\.(?P<kind>staging|commit)-(?P<host>.+)-(?P<pid>\d+)$")
TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)")  # comp.io.atomic_path's names
LAST = "prepare.json"  # readers check it exists: it is moved in last


class Staging:
    """`with Staging(folds) as stage:` write under stage.path, then stage.commit(); an exception or
    Ctrl-C before commit() removes the staged files and leaves folds/ as it was."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.tag = f"{socket.gethostname()}-{os.getpid()}"
        self.path = self.out / f".staging-{self.tag}"

    def __enter__(self) -> "Staging":
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self

    def commit(self) -> None:
        committed = self.out / f".commit-{self.tag}"
        os.replace(self.path, committed)
        _move_in(committed, self.out)

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def _move_in(committed: Path, out: Path) -> None:
    files = sorted((p for p in committed.rglob("*") if p.is_file()), key=lambda p: (p.name == LAST, str(p)))
    for path in files:
        target = out / path.relative_to(committed)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(committed, ignore_errors=True)


def finish_switch(out: Path) -> None:
    """Complete a switch that a killed `comp prepare` began (its files are all complete)."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        match = STAGED.match(entry.name)
        if match and match["kind"] == "commit" and process_gone(match["host"], int(match["pid"])):
            _move_in(entry, out)


def temp_dir(prefix: str) -> Path:
    """A new folder in the system's temporary folder, named with this process's pid (comp-<what>-<pid>-...),
    so that remove_stale_temp_dirs can tell one that a killed process left."""
    return Path(tempfile.mkdtemp(prefix=f"comp-{prefix}-{os.getpid()}-"))


def remove_stale_temp_dirs(prefix: str) -> list[str]:
    """Delete the temp_dir(prefix) folders of processes on this host that are gone (a kill -9 runs no cleanup)."""
    host, removed = socket.gethostname(), []
    for entry in Path(tempfile.gettempdir()).glob(f"comp-{prefix}-*-*"):
        pid = entry.name[len(f"comp-{prefix}-"):].split("-")[0]
        if pid.isdigit() and entry.is_dir() and process_gone(host, int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    return removed


def remove_stale(*folders: Path) -> list[str]:
    """Delete staging folders and temporaries of processes that are gone; returns their names."""
    removed = []
    host = socket.gethostname()
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            staged, temporary = STAGED.match(entry.name), TEMPORARY.match(entry.name)
            if staged and staged["kind"] == "staging":
                gone = process_gone(staged["host"], int(staged["pid"]))
            elif temporary:  # atomic_path's names carry no host: this host's processes only
                gone = process_gone(host, int(temporary["pid"]))
            else:
                continue
            if gone:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(str(entry))
    return removed
