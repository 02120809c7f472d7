"""Atomic file output: every file comp reads back goes through here (not TensorBoard events, Optuna's
storage, or the zip the Kaggle API downloads).

A crash (Ctrl-C, kill -9, full disk) must never leave a half-written file where a
later stage would read it, so each writer fills a temporary file in the same folder
and renames it over the target (rename is atomic on POSIX filesystems).
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class CompError(ValueError):
    """A problem with the user's input or state: the CLI prints it without a traceback."""


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    `suffix` keeps an extension some writers insist on (np.savez appends '.npz').
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def replace_dir(new: Path, target: Path) -> None:
    """Folder `new` becomes `target`. An old target is set aside (`.<name>.old.tmp-<pid>`, which the next
    prepare removes if left) and deleted only once the new one is in place: a kill at any moment leaves
    one whole folder."""
    old = target.with_name(f".{target.name}.old.tmp-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def relative_path(path, base) -> str:
    """path relative to base ("" stays ""); as given where none exists (Windows: another drive)."""
    if not path:
        return ""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def link_or_copy(src, dst) -> None:
    """dst becomes the same file as src: a hard link where the file system allows one, else a copy."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path):
    """The file's JSON; a damaged file (truncated, edited, not JSON) is a CompError that names it."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CompError(f"{path}: damaged, not readable JSON ({exc}); run the command that wrote it again "
                            f"(prepare for folds/, train --force for a run's fold)") from None


def plain_name(name: str, flag: str) -> str:
    """A name that becomes one file or folder inside comp's own folder: no path, nothing outside it."""
    if not name or name in (".", "..") or any(sep in name for sep in ("/", "\\", os.sep)) or name.startswith("."):
        raise CompError(f"{flag} {name!r}: give a plain name (letters, digits, -_.), not a path; "
                        f"it becomes a file or folder inside the workdir's own folder")
    return name


def write_csv(path, df) -> None:
    write_text(path, df.to_csv(index=False))


def write_npz(path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_torch(path, **kwargs):
    """torch.load, with a damaged or cut-short file named in a CompError (what to do is the caller's `then`)."""
    import pickle

    import torch

    then = kwargs.pop("then", "train that fold again (--force)")
    try:
        return torch.load(path, **kwargs)
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError, KeyError) as exc:
        raise CompError(f"{path}: damaged, not a readable torch file ({type(exc).__name__}: {exc}); {then}") from None


def save_torch(path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
