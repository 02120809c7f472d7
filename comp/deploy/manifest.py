"""What a bundle is on disk, and the checks that open one: its files, their names and the manifest of their
sha256 and size. `comp export` (comp/deploy/bundle.py) writes bundles; `comp infer` (comp/deploy/infer.py) opens
them here: a bundle made by a newer comp, a changed or missing file, or a path that leads out of the bundle is
refused before anything is loaded.
"""
from __future__ import annotations

import atexit
import shutil
import zipfile
from pathlib import Path

from ..io import CompError, path_inside, read_json, sha256, write_json
from ..prepare import staging
from ..version import __version__

FORMAT = 1
BUNDLE_FILE, MANIFEST_FILE, LABELS_FILE = "bundle.json", "manifest.json", "labels.json"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(root: Path) -> None:
    write_json(root / MANIFEST_FILE, {"format": FORMAT, "comp_version": __version__,
                                      "files": {p.relative_to(root).as_posix(): {"sha256": sha256(p),
                                                                                 "bytes": p.stat().st_size}
                                                for p in _files(root)}})


def say_removed(removed: list[str], what: str) -> None:
    """One line for the temporaries of killed processes that a run removed (staging.remove_stale*)."""
    if removed:
        print(f"removed {len(removed)} {what} that killed comp processes left: {', '.join(removed[:3])}")


def open_bundle(path) -> tuple[Path, dict]:
    """The bundle's folder (a .zip is extracted to a temporary folder) and its bundle.json, checked:
    made by this comp or an older one, and every file as the manifest lists it."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        path = _extract(path)
    spec_file = path / BUNDLE_FILE
    if not spec_file.exists():
        raise CompError(f"{path}: not a comp bundle ({BUNDLE_FILE} missing); make one with `comp export NAME`")
    spec = read_json(spec_file)
    if spec.get("format", 0) > FORMAT or _version(spec.get("comp_version", "0")) > _version(__version__):
        raise CompError(f"{spec_file}: made by comp {spec.get('comp_version')} (bundle format {spec.get('format')}), "
                        f"newer than this comp {__version__} (format {FORMAT}); install the comp wheel from the "
                        f"bundle's wheels/ folder, or a newer comp")
    verify_manifest(path)
    return path, spec


def verify_manifest(root: Path) -> None:
    manifest_file = root / MANIFEST_FILE
    if not manifest_file.exists():
        raise CompError(f"{manifest_file} missing: the bundle is incomplete; copy it again or re-export it")
    for rel, entry in read_json(manifest_file)["files"].items():
        path = path_inside(root, rel, MANIFEST_FILE)
        if not path.is_file():
            raise CompError(f"{path}: listed in {MANIFEST_FILE} but missing; copy the whole bundle folder")
        if path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise CompError(f"{path}: checksum does not match {MANIFEST_FILE} (changed or damaged in transit); "
                            f"copy the bundle again or re-export it")


def _version(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("+")[0].split("."))


def _extract(archive: Path) -> Path:
    say_removed(staging.remove_stale_temp_dirs("bundle"), "extracted bundle(s)")
    target = staging.temp_dir("bundle")
    atexit.register(shutil.rmtree, target, True)  # the extracted copy lives as long as the process (SIGTERM too)
    with zipfile.ZipFile(archive) as z:
        z.extractall(target)  # extractall drops '..' and absolute parts of member names
    inner = [p for p in target.iterdir() if p.name != "__MACOSX"]
    return inner[0] if len(inner) == 1 and inner[0].is_dir() else target
