"""Find a competition's files and turn them into tables of (id, path, label).

Three layouts are recognised; every guess can be overridden (see `LayoutOverrides`):
1. cifar-10 style: train/ with {id}.jpg, trainLabels.csv (id,label), test/, sampleSubmission.csv
2. separate parts: train.csv + train_images/, val.csv + val_images/, test_images/ (ids from
   sample_submission.csv). The parts are merged into one pool (column `source`).
3. class folders: train/<class>/*.jpg, a flat test/ folder, any sample submission.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .io import CompError, atomic_path, read_json, replace_dir, write_json

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class LayoutOverrides:
    train_csv: str | None = None
    val_csv: str | None = None
    id_col: str | None = None
    label_col: str | None = None
    image_dir: str | None = None
    val_image_dir: str | None = None
    test_dir: str | None = None
    sample_submission: str | None = None
    ext: str | None = None


@dataclass
class Part:
    """One labelled source of training images: a CSV with an image folder, or class folders."""
    source: str
    image_dir: Path
    csv: Path | None = None  # None: one sub-folder per class


@dataclass
class Layout:
    root: Path
    kind: str
    parts: list[Part]
    test_dir: Path
    sample_submission: Path
    sub_id_col: str
    sub_label_col: str
    id_col: str | None = None
    label_col: str | None = None
    ext: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"layout: {self.kind} (root {self.root})"]
        for part in self.parts:
            what = f"{part.csv.name} + {part.image_dir.name}/" if part.csv else f"{part.image_dir.name}/<class>/"
            lines.append(f"  {part.source}: {what}")
        lines.append(f"  test: {self.test_dir.name}/, sample submission {self.sample_submission.name}"
                     f" (columns {self.sub_id_col},{self.sub_label_col})")
        if self.id_col:
            lines.append(f"  train columns: id={self.id_col}, label={self.label_col}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def open_competition(data: str | Path, workdir: Path) -> Path:
    """A zip is extracted once into workdir/data/<name>/; a folder is used in place."""
    data = Path(data).resolve()
    if not data.exists():
        raise CompError(f"--data {data}: no such file or folder")
    if data.is_dir():
        return _descend_single_folder(data)
    if not zipfile.is_zipfile(data):
        raise CompError(f"--data {data}: not a zip file or a folder")
    target = workdir / "data" / data.stem
    stamp_file, stamp = target.with_name(f"{target.name}.zip.json"), _zip_stamp(data)
    extracted_from = read_json(stamp_file) if stamp_file.exists() else None
    changed = target.exists() and extracted_from is not None and extracted_from != stamp
    if changed or not target.exists():
        print(f"{data} differs from the zip extracted to {target} (size or time): extracting it again" if changed
              else f"extracting {data} -> {target}")
        fresh = target.with_name(f"{target.name}.new")
        shutil.rmtree(fresh, ignore_errors=True)  # left by a kill after extracting, before replace_dir
        with atomic_path(fresh) as tmp, zipfile.ZipFile(data) as archive:
            archive.extractall(tmp)
            _extract_inner_zips(_descend_single_folder(tmp))
        replace_dir(fresh, target)
    if extracted_from != stamp:
        write_json(stamp_file, stamp)
    return _descend_single_folder(target)


def _zip_stamp(path: Path) -> dict:
    """What tells a re-downloaded zip from the one extracted before, without reading it."""
    info = path.stat()
    return {"bytes": info.st_size, "mtime_ns": info.st_mtime_ns}


def _extract_inner_zips(root: Path) -> None:
    """Kaggle often ships the parts as zips inside the competition's zip (train.zip, test.zip,
    train.csv.zip): a zip of one file gives that file, any other the folder its name gives."""
    for inner in sorted(root.glob("*.zip")):
        with zipfile.ZipFile(inner) as archive:
            names = [n for n in archive.namelist() if not n.startswith("__MACOSX") and not n.endswith("/")]
            if len(names) == 1 and "/" not in names[0]:
                if not (root / names[0]).exists():
                    archive.extract(names[0], root)
                continue
            folder = root / inner.stem
            if folder.exists():
                continue
            print(f"extracting {inner.name} -> {folder.name}/")
            scratch = root / f".{inner.stem}.unzip"
            archive.extractall(scratch)
        entries = [p for p in scratch.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        # train.zip holding train/...: the inner folder is the part, not a class of it
        inside = entries[0] if len(entries) == 1 and entries[0].is_dir() and entries[0].name == inner.stem else scratch
        inside.rename(folder)
        shutil.rmtree(scratch, ignore_errors=True)


def _descend_single_folder(root: Path) -> Path:
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and not _looks_like_image_dir(entries[0]):
        return _descend_single_folder(entries[0])
    return root


def _looks_like_image_dir(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS for p in list(path.iterdir())[:50])


_FLAGS = {"sample submission": "sample-submission", "test image": "test-dir", "train image": "image-dir",
          "train csv": "train-csv", "validation csv": "val-csv", "validation image": "val-image-dir"}


def _pick(root: Path, given: str | None, pattern: str, what: str, required=True, dirs=False) -> Path | None:
    if given:
        path = Path(given) if Path(given).is_absolute() else root / given
        if not path.exists():
            raise CompError(f"{what} {path} does not exist")
        return path
    regex = re.compile(pattern, re.I)
    found = sorted(p for p in root.iterdir() if p.is_dir() == dirs and regex.search(p.name))
    if not found:
        if required:
            kind = "folder" if dirs else "file"
            zips = sorted(p.name for p in root.glob("*.zip"))
            hint = (f"; {', '.join(zips[:4])} may hold it: extract them into {root}, or pass --data the competition's "
                    f"own zip (zips inside it are extracted)") if zips else ""
            raise CompError(f"no {what} {kind} found in {root} (looked for /{pattern}/); pass it with "
                            f"--{_FLAGS[what]}{hint}")
        return None
    return found[0]


def detect_layout(root: Path, ov: LayoutOverrides | None = None) -> Layout:
    ov = ov or LayoutOverrides()
    sample = _pick(root, ov.sample_submission, r"sample.?sub.*\.csv$", "sample submission")
    sub_cols = list(read_input_csv(sample, nrows=0).columns)
    if len(sub_cols) < 2:
        raise CompError(f"{sample}: expected an id column and a label column, found {sub_cols}")
    test_dir = _pick(root, ov.test_dir, r"^test", "test image", dirs=True)
    train_csv = _pick(root, ov.train_csv, r"^train.*\.csv$", "train csv", required=False)
    train_dir = _pick(root, ov.image_dir, r"^train", "train image", dirs=True,
                      required=train_csv is None)
    if train_csv is None:
        parts = [Part("train", train_dir)]
        val_dir = _pick(root, ov.val_image_dir, r"^val", "validation image", dirs=True, required=False)
        if val_dir is not None and any(p.is_dir() for p in val_dir.iterdir()):  # val/<class>/: merged into train
            parts.append(Part("val", val_dir))
        return Layout(root, "class-folders", parts, test_dir, sample, sub_cols[0], sub_cols[1], ext=ov.ext)
    if train_dir is None:
        train_dir = _image_dir_for(root, train_csv, "train")
    parts = [Part("train", train_dir, train_csv)]
    val_csv = _pick(root, ov.val_csv, r"^val.*\.csv$", "validation csv", required=False)
    if val_csv is not None:
        val_dir = _pick(root, ov.val_image_dir, r"^val", "validation image", dirs=True, required=False)
        parts.append(Part("val", val_dir or _image_dir_for(root, val_csv, "val"), val_csv))
    kind = "train+val parts" if val_csv is not None else "csv + image folder"
    id_col, label_col = _label_columns(train_csv, sub_cols, ov)
    return Layout(root, kind, parts, test_dir, sample, sub_cols[0], sub_cols[1],
                  id_col=id_col, label_col=label_col, ext=ov.ext)


def read_input_csv(path: Path, **kwargs) -> pd.DataFrame:
    """A competition's CSV, or an error that names it and says what to do."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise CompError(f"{path}: the file is empty; it needs a header row (e.g. id,label) and its rows") from None
    except ValueError as exc:  # pandas' ParserError, UnicodeDecodeError, a compression it cannot open
        first = (str(exc).splitlines() or [""])[0]
        raise CompError(f"{path}: cannot be read as a CSV ({type(exc).__name__}: {first}); "
                        f"save it as UTF-8 comma-separated text with one header row") from None


def _image_dir_for(root: Path, csv: Path, prefix: str) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith(prefix)]
    if not dirs:
        raise CompError(f"{csv}: no image folder beside it named {prefix}*; pass --image-dir")
    return sorted(dirs)[0]


def _label_columns(train_csv: Path, sub_cols: list[str], ov: LayoutOverrides) -> tuple[str, str]:
    cols = list(read_input_csv(train_csv, nrows=0).columns)
    id_col = ov.id_col or (sub_cols[0] if sub_cols[0] in cols else cols[0])
    label_col = ov.label_col or (sub_cols[1] if sub_cols[1] in cols else (cols[1] if len(cols) > 1 else None))
    for name, flag in ((id_col, "--id-col"), (label_col, "--label-col")):
        if name not in cols:
            raise CompError(f"{train_csv}: column {name!r} not found (columns: {cols}); pass {flag}")
    return id_col, label_col


# --------------------------------------------------------------------------- tables


class ImageIndex:
    """Files of one folder, found by exact name or by name without extension."""

    def __init__(self, folder: Path, ext: str | None = None):
        self.folder = folder
        self.ext = ext if (ext is None or ext.startswith(".")) else "." + ext
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS]
        if self.ext:  # --ext: only files with that extension, or the flag would be silently ignored
            found = sorted({p.suffix for p in files})
            files = [p for p in files if p.suffix.lower() == self.ext.lower()]
            if not files:
                raise CompError(f"--ext {ext}: no {self.ext} files in {folder} (found {', '.join(found) or 'none'})")
        self.by_name = {p.name: p for p in files}
        self.by_stem: dict[str, Path] = {}
        for p in files:
            self.by_stem.setdefault(p.stem, p)

    def find(self, image_id: str) -> Path | None:
        if self.ext and (hit := self.by_name.get(image_id + self.ext)):
            return hit
        return self.by_name.get(image_id) or self.by_stem.get(image_id)


@dataclass
class Problem:
    """A bad input row or file; raised as an error, or dropped and reported with --skip-bad."""
    where: str
    what: str

    def __str__(self):
        return f"{self.where}: {self.what}"


def read_train_table(layout: Layout, problems: list[Problem]) -> pd.DataFrame:
    tables = [_read_part(layout, part, problems) for part in layout.parts]
    table = _keep_parts_apart(pd.concat(tables, ignore_index=True))
    _check_duplicate_ids(table, problems)
    train_classes = set(table.loc[table.source == "train", "label"])
    for row in table[(table.source != "train") & ~table.label.isin(train_classes)].itertuples():
        problems.append(Problem(row.where, f"label {row.label!r} appears in {row.source} but not in train"))
    return table


def _read_part(layout: Layout, part: Part, problems: list[Problem]) -> pd.DataFrame:
    if part.csv is None:
        return _read_class_folders(part, layout.ext, problems)
    frame = read_input_csv(part.csv, dtype=str, keep_default_na=False)
    for col in (layout.id_col, layout.label_col):
        if col not in frame.columns:
            raise CompError(f"{part.csv}: column {col!r} missing (columns: {list(frame.columns)})")
    index = ImageIndex(part.image_dir, layout.ext)
    rows, used = [], set()
    for i, (image_id, label) in enumerate(zip(frame[layout.id_col], frame[layout.label_col])):
        where = f"{part.csv.name} row {i + 2}"  # +2: 1-based, after the header line
        # the label stays as written (" cat" is not "cat": the submission must write it back the same)
        image_id = image_id.strip()
        path = index.find(image_id)
        if not image_id or not label.strip():
            problems.append(Problem(where, f"empty id or label ({image_id!r}, {label!r})"))
        elif path is None:
            problems.append(Problem(where, f"id {image_id!r} has no image file in {part.image_dir}"))
        else:
            used.add(path.name)
            rows.append((image_id, str(path), label, part.source, where))
    for name in sorted(set(index.by_name) - used):
        problems.append(Problem(f"{part.image_dir.name}/{name}", f"image has no label in {part.csv.name}"))
    return pd.DataFrame(rows, columns=["id", "path", "label", "source", "where"])


def _read_class_folders(part: Part, ext: str | None, problems: list[Problem]) -> pd.DataFrame:
    def wanted(path: Path) -> bool:
        return path.suffix.lower() in IMAGE_EXTS and (ext is None or path.suffix.lower() == "." + ext.lstrip(".").lower())

    rows, loose = [], 0
    for entry in sorted(part.image_dir.iterdir()):
        if entry.is_dir():
            found = len(rows)
            for img in sorted(entry.iterdir()):
                if wanted(img):
                    image_id = img.name if ext is None else img.stem
                    rows.append((image_id, str(img), entry.name, part.source, f"{entry.name}/{img.name}"))
            if len(rows) == found:  # a class no model could learn, that a submission could never name
                problems.append(Problem(f"class {entry.name}", f"has 0 images: {part.image_dir.name}/{entry.name}/ "
                                        f"holds no {ext or 'image'} files; add its images, or --skip-bad to leave "
                                        f"the class out"))
        elif wanted(entry):
            loose += 1
            problems.append(Problem(f"{part.image_dir.name}/{entry.name}", "image has no label (not in a class folder)"))
    frame = pd.DataFrame(rows, columns=["id", "path", "label", "source", "where"])
    if frame.id.duplicated().any():  # each class numbers its own images (cat/0.png, dog/0.png): class/name
        frame["id"] = frame["label"] + "/" + frame["id"]
    if not rows:
        only = f" with extension {ext}" if ext else ""
        hint = (f": its {loose} images are not in class folders; write their labels to a CSV (columns id,label, "
                f"e.g. from the file names) and pass it with --train-csv") if loose else ""
        raise CompError(f"{part.image_dir}: no class sub-folders with images{only} found{hint}")
    return frame


def _keep_parts_apart(table: pd.DataFrame) -> pd.DataFrame:
    """Parts that number their images alike (train/0.png, val/0.png) hold different images under one id:
    in every part after the first that uses an id, the id gets the part's name in front (val/0.png).
    An id repeated inside one part stays a duplicate (_check_duplicate_ids)."""
    clash = table.source != table.groupby("id", sort=False)["source"].transform("first")
    table.loc[clash, "id"] = table.source[clash] + "/" + table.id[clash]
    return table


def _check_duplicate_ids(table: pd.DataFrame, problems: list[Problem]) -> None:
    dup = table[table.duplicated("id", keep=False)]
    for image_id, group in dup.groupby("id", sort=False):
        wheres = list(group["where"])
        for where in wheres[1:]:  # one per repeat: --skip-bad then drops every copy after the first
            problems.append(Problem(where, f"duplicate id {image_id!r} (also at {wheres[0]})"))


def read_test_table(layout: Layout, problems: list[Problem]) -> pd.DataFrame:
    """Test ids in the sample submission's order, each with its image path."""
    sample = read_input_csv(layout.sample_submission, dtype=str, keep_default_na=False)
    index = ImageIndex(layout.test_dir, layout.ext)
    rows = []
    for i, image_id in enumerate(sample[layout.sub_id_col]):
        path = index.find(image_id.strip())
        if path is None:
            where = f"{layout.sample_submission.name} row {i + 2}"
            problems.append(Problem(where, f"test id {image_id!r} has no image file in {layout.test_dir}"))
        rows.append((image_id, str(path) if path else ""))
    return pd.DataFrame(rows, columns=["id", "path"])


def unlisted_test_images(layout: Layout, test: pd.DataFrame) -> list[str]:
    """Images in the test folder that the sample submission does not list: they get no prediction."""
    listed = {Path(p).name for p in test.path if p}
    found = ImageIndex(layout.test_dir, layout.ext).by_name  # the files read_test_table could match
    return sorted(name for name in found if name not in listed)
