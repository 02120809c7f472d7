"""Atomic file output: every file comp reads back goes through here (not TensorBoard events, Optuna's
storage, or the zip the Kaggle API downloads).

A crash (Ctrl-C, kill -9, full disk) must never leave a half-written file where a
later stage would read it, so each writer fills a temporary file in the same folder
and renames it over the target (rename is atomic on POSIX filesystems).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class CompError(ValueError):
    """A problem with the user's input or state: the CLI prints it without a traceback."""


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", need: int | None = None):
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    `suffix` keeps an extension some writers insist on (np.savez appends '.npz'). `need`: the bytes the
    file takes, about, for the message when the disk fills up while it is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        raise CompError(disk_full_message(path, need)) from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def is_disk_full(exc: BaseException) -> bool:
    """No space left: OSError ENOSPC/EDQUOT, or torch.save's own words for a write the disk cut short."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return "unexpected pos" in text or "PytorchStreamWriter failed" in text or "No space left" in text


def disk_full_message(path: Path, need: int | None) -> str:
    free = shutil.disk_usage(next(p for p in (path.parent, *path.parents) if p.exists())).free
    needs = f"it needs about {_mb(need)}, and " if need else ""
    return (f"{path}: the disk is full: {needs}{path.parent} has {_mb(free)} free; nothing was replaced. Free some "
            f"space there and run the command again")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


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
    with atomic_path(path, need=len(text.encode())) as tmp:
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


def sha256(path) -> str:
    """The file's sha256, read in 1 MB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_inside(root: Path, rel: str, named_in: str) -> Path:
    """root/rel, refused unless it resolves inside root: a bundle names only its own files (no '..', no
    absolute path, no link that leads out), so loading one never reads or hashes a file elsewhere."""
    path = (Path(root) / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(Path(root).resolve()):
        raise CompError(f"{Path(root) / named_in}: names {rel!r}, which lies outside {root}; it may name its own "
                        f"files only: make it again (comp export)")
    return path


def read_input_csv(path, **kwargs):
    """A competition's CSV (a pandas DataFrame), or an error that names it and says what to do."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise CompError(f"{path}: the file is empty; it needs a header row (e.g. id,label) and its rows") from None
    except ValueError as exc:  # pandas' ParserError, UnicodeDecodeError, a compression it cannot open
        first = (str(exc).splitlines() or [""])[0]
        raise CompError(f"{path}: cannot be read as a CSV ({type(exc).__name__}: {first}); "
                        f"save it as UTF-8 comma-separated text with one header row") from None


def write_csv(path, df) -> None:
    write_text(path, df.to_csv(index=False))


def write_npz(path, **arrays) -> None:
    with atomic_path(path, suffix=".npz", need=sum(np.asarray(a).nbytes for a in arrays.values())) as tmp:
        np.savez(tmp, **arrays)


def load_torch(path, **kwargs):
    """torch.load, with a damaged or cut-short file named in a CompError (what to do is the caller's `then`)."""
    import pickle

    import torch

    then = kwargs.pop("then", "train that fold again (--force)")
    try:
        return torch.load(path, **kwargs)
    except pickle.UnpicklingError as exc:
        if kwargs.get("weights_only") and "Weights only load failed" in str(exc):  # torch's words for it
            raise CompError(f"{path}: holds objects other than tensors and plain data, which comp never writes and "
                            f"will not load (loading them could run code; the file may have been crafted); "
                            f"{then}") from None
        raise CompError(f"{path}: damaged, not a readable torch file ({type(exc).__name__}: {exc}); {then}") from None
    except (EOFError, RuntimeError, ValueError, KeyError) as exc:
        raise CompError(f"{path}: damaged, not a readable torch file ({type(exc).__name__}: {exc}); {then}") from None


def save_torch(path, obj) -> None:
    import torch

    with atomic_path(path, need=_tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)


def _tensor_bytes(obj) -> int:
    """The bytes of the tensors in a (nested) dict or list: what torch.save writes, about."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


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
