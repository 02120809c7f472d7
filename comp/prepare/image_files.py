"""Which files are images, and where they may sit: one rule for `comp prepare` and `comp infer`.

The rule:
- a file is an image when its extension (any case) is in IMAGE_EXTS: .jpg .jpeg .jpe .jfif .png .bmp
  .gif .tif .tiff .webp;
- images may sit at any depth below the folder that holds them (train/cat/batch2/0.png is a cat);
- hidden files and folders (a name that starts with '.': .ipynb_checkpoints/, .DS_Store, macOS's ._x.jpg)
  and __MACOSX/ are never images nor classes;
- every file the rule leaves out is counted and named (`LeftOut.note`), never dropped in silence.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..io import CompError

IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def is_hidden(name: str) -> bool:
    """A system or tool folder/file: never an image, never a class (.ipynb_checkpoints, .DS_Store, __MACOSX)."""
    return name.startswith(".") or name == "__MACOSX"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS and not is_hidden(name)


@dataclass
class LeftOut:
    """Files under a folder that the rule does not count as images, by why."""
    hidden: list[Path] = field(default_factory=list)  # hidden files, and every file under a hidden folder
    other: list[Path] = field(default_factory=list)   # not an image extension (or not --ext's)

    def __bool__(self) -> bool:
        return bool(self.hidden or self.other)

    def extend(self, more: "LeftOut") -> None:
        self.hidden += more.hidden
        self.other += more.other

    def as_dict(self, base: Path, shown: int = 10) -> dict:
        rel = lambda paths: [_rel(p, base) for p in paths[:shown]]  # noqa: E731
        return {"count": len(self.hidden) + len(self.other), "hidden": len(self.hidden), "other": len(self.other),
                "other_extensions": dict(Counter(p.suffix.lower() or "(none)" for p in self.other).most_common()),
                "examples": rel(self.hidden) + rel(self.other)}

    def note(self, where: str, base: Path) -> str:
        """'note: 7 file(s) in train/ are not counted as images: 5 hidden (e.g. ...), 2 other (.txt: 2; e.g. ...)'."""
        parts = []
        if self.hidden:
            parts.append(f"{len(self.hidden)} hidden or in hidden folders (e.g. {_some(self.hidden, base)})")
        if self.other:
            kinds = ", ".join(f"{k}: {n}" for k, n in Counter(p.suffix.lower() or "(none)" for p in self.other)
                              .most_common(4))
            parts.append(f"{len(self.other)} with other extensions ({kinds}; e.g. {_some(self.other, base)})")
        total = len(self.hidden) + len(self.other)
        return (f"note: {total} file(s) in {where} are not counted as images: {'; '.join(parts)}; images are files "
                f"ending {' '.join(sorted(IMAGE_EXTS))} that are not hidden")


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _some(paths: list[Path], base: Path, shown: int = 3) -> str:
    return ", ".join(_rel(p, base) for p in paths[:shown]) + (" ..." if len(paths) > shown else "")


def scan_images(folder: Path, ext: str | None = None) -> tuple[list[Path], LeftOut]:
    """Every image file at any depth below `folder`, sorted, and what the rule left out.
    ext (--ext): only files with that extension count as images."""
    images, left_out = [], LeftOut()
    wanted = None if ext is None else "." + ext.lstrip(".").lower()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel_parts = path.relative_to(folder).parts
        if any(is_hidden(part) for part in rel_parts):
            left_out.hidden.append(path)
        elif path.suffix.lower() in IMAGE_EXTS and (wanted is None or path.suffix.lower() == wanted):
            images.append(path)
        else:
            left_out.other.append(path)
    return images, left_out


class ImageIndex:
    """The images below one folder (scan_images), found by an id: the path relative to the folder (with or
    without its extension), or the file's name, or its stem. An id that matches two files (5.png and 5.jpg,
    or a/5.png and b/5.png) is ambiguous: `find` raises AmbiguousId, never picks one."""

    def __init__(self, folder: Path, ext: str | None = None):
        self.folder = folder
        self.ext = ext if (ext is None or ext.startswith(".")) else "." + ext
        files, self.left_out = scan_images(folder)
        if self.ext:  # --ext: only files with that extension, or the flag would be silently ignored
            found = sorted({p.suffix for p in files})
            kept = [p for p in files if p.suffix.lower() == self.ext.lower()]
            if not kept:
                raise CompError(f"--ext {ext}: no {self.ext} files in {folder} (found {', '.join(found) or 'none'})")
            self.left_out.other += [p for p in files if p.suffix.lower() != self.ext.lower()]
            files = kept
        self.files = files
        self.keys: dict[str, list[Path]] = {}
        for path in files:
            rel = path.relative_to(folder).as_posix()
            for key in {rel, rel[:-len(path.suffix)] if path.suffix else rel, path.name, path.stem}:
                self.keys.setdefault(key, []).append(path)

    @property
    def by_name(self) -> dict[str, Path]:
        """Relative path (posix) -> file: every image once."""
        return {p.relative_to(self.folder).as_posix(): p for p in self.files}

    def find(self, image_id: str) -> Path | None:
        candidates = []
        if self.ext:
            candidates.append(self.keys.get(image_id + self.ext))
        candidates.append(self.keys.get(image_id))
        for hits in candidates:
            if hits and len(hits) == 1:
                return hits[0]
            if hits:
                raise AmbiguousId(image_id, hits, self.folder)
        return None


class AmbiguousId(CompError):
    def __init__(self, image_id: str, paths: list[Path], folder: Path):
        self.paths = paths
        names = ", ".join(_rel(p, folder) for p in paths[:4])
        super().__init__(f"id {image_id!r} matches {len(paths)} files in {folder}: {names}; remove all but one, "
                         f"or pass --ext to count one extension only")
