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

from ..io import CompError, atomic_path, read_input_csv, read_json, replace_dir, write_json
from .columns import submission_columns, train_columns
from .image_files import AmbiguousId, ImageIndex, LeftOut, is_hidden, is_image_name, scan_images


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
    sub_id_col: str | None = None
    sub_label_col: str | None = None


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
    left_out: dict = field(default_factory=dict)  # folder -> LeftOut: files the image rule did not count
    _indexes: dict = field(default_factory=dict, repr=False)

    def index(self, folder: Path) -> ImageIndex:
        """The folder's images (comp/prepare/image_files.py's rule), listed once; what the rule left out goes to left_out."""
        if folder not in self._indexes:
            self._indexes[folder] = index = ImageIndex(folder, self.ext)
            self.left_out.setdefault(folder, LeftOut()).extend(index.left_out)
        return self._indexes[folder]

    def left_out_notes(self) -> list[str]:
        return [found.note(f"{folder.name}/", folder) for folder, found in self.left_out.items() if found]

    def left_out_record(self) -> dict:
        """For prepare.json: per folder, how many files the image rule left out, why, and examples."""
        return {folder.name: found.as_dict(folder) for folder, found in self.left_out.items() if found}

    def describe(self) -> str:
        lines = [f"layout: {self.kind} (root {self.root})"]
        for part in self.parts:
            what = f"{part.csv.name} + {part.image_dir.name}/" if part.csv else f"{part.image_dir.name}/<class>/"
            lines.append(f"  {part.source}: {what}")
        lines.append(f"  test: {self.test_dir.name}/, sample submission {self.sample_submission.name}"
                     f" (id column {self.sub_id_col!r}, label column {self.sub_label_col!r})")
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
    entries = [p for p in root.iterdir() if not is_hidden(p.name)]
    if len(entries) == 1 and entries[0].is_dir() and not _looks_like_image_dir(entries[0]):
        return _descend_single_folder(entries[0])
    return root


def _looks_like_image_dir(path: Path) -> bool:
    return any(is_image_name(p.name) for p in list(path.iterdir())[:50])


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
    train_csv = _pick(root, ov.train_csv, r"^train.*\.csv$", "train csv", required=False)
    test_dir = _pick(root, ov.test_dir, r"^test", "test image", dirs=True, required=train_csv is None)
    shared = None
    if test_dir is None:  # train and test images in one folder (Plant Pathology 2020: images/)
        test_dir = shared = _shared_image_dir(root, ov.image_dir)
    train_cols = list(read_input_csv(train_csv, nrows=0).columns) if train_csv is not None else []
    sub_id, sub_label, how = submission_columns(sample, sub_cols, train_cols, ov, test_dir)
    notes = [how] if how else []
    train_dir = shared or _pick(root, ov.image_dir, r"^train", "train image", dirs=True, required=train_csv is None)
    if train_csv is None:
        parts = [Part("train", train_dir)]
        val_dir = _pick(root, ov.val_image_dir, r"^val", "validation image", dirs=True, required=False)
        if val_dir is not None and any(p.is_dir() and not is_hidden(p.name) for p in val_dir.iterdir()):
            parts.append(Part("val", val_dir))  # val/<class>/: merged into train
        return Layout(root, "class-folders", parts, test_dir, sample, sub_id, sub_label, ext=ov.ext, notes=notes)
    if train_dir is None:  # no train* folder: --test-dir's folder holds both parts, or the error that says so
        train_dir = _image_dir_for(root, train_csv, "train", test_dir if ov.test_dir else None)
    if train_dir == test_dir:
        notes.append(f"one image folder for train and test, {test_dir.name}/: the ids {train_csv.name} labels are "
                     f"training images, the sample submission's ids test images")
    parts = [Part("train", train_dir, train_csv)]
    val_csv = _pick(root, ov.val_csv, r"^val.*\.csv$", "validation csv", required=False)
    if val_csv is not None:
        val_dir = _pick(root, ov.val_image_dir, r"^val", "validation image", dirs=True, required=False)
        parts.append(Part("val", val_dir or _image_dir_for(root, val_csv, "val"), val_csv))
    kind = "train+val parts" if val_csv is not None else "csv + image folder"
    id_col, label_col = train_columns(train_csv, train_cols, sub_id, sub_label, ov)
    return Layout(root, kind, parts, test_dir, sample, sub_id, sub_label,
                  id_col=id_col, label_col=label_col, ext=ov.ext, notes=notes)


def _shared_image_dir(root: Path, given: str | None) -> Path:
    """With a train CSV and no test folder: the one folder of images (or --image-dir) holds both parts."""
    if given:
        return _pick(root, given, "", "train image", dirs=True)
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not is_hidden(p.name) and _looks_like_image_dir(p)]
    if len(folders) != 1:
        names = ", ".join(p.name + "/" for p in folders) or "none"
        raise CompError(f"no test image folder found in {root} (looked for /^test/), and not one image folder that "
                        f"could hold both parts (folders with images: {names}); pass --test-dir (and --image-dir "
                        f"where the training images are elsewhere)")
    return folders[0]


def _image_dir_for(root: Path, csv: Path, prefix: str, fallback: Path | None = None) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith(prefix)]
    if not dirs and fallback is not None:
        return fallback
    if not dirs:
        raise CompError(f"{csv}: no image folder beside it named {prefix}*; pass --image-dir")
    return sorted(dirs)[0]


# --------------------------------------------------------------------------- tables


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
        return _read_class_folders(layout, part, problems)
    frame = read_input_csv(part.csv, dtype=str, keep_default_na=False)
    for col in (layout.id_col, layout.label_col):
        if col not in frame.columns:
            raise CompError(f"{part.csv}: column {col!r} missing (columns: {list(frame.columns)})")
    index = layout.index(part.image_dir)
    rows, used = [], set()
    for i, (image_id, label) in enumerate(zip(frame[layout.id_col], frame[layout.label_col])):
        where = f"{part.csv.name} row {i + 2}"  # +2: 1-based, after the header line
        # the label stays as written (" cat" is not "cat": the submission must write it back the same)
        image_id = image_id.strip()
        if not image_id or not label.strip():
            problems.append(Problem(where, f"empty id or label ({image_id!r}, {label!r})"))
            continue
        try:
            path = index.find(image_id)
        except AmbiguousId as exc:
            problems.append(Problem(where, str(exc)))
            continue
        if path is None:
            problems.append(Problem(where, f"id {image_id!r} has no image file in {part.image_dir}"))
        else:
            used.add(path)
            rows.append((image_id, str(path), label, part.source, where))
    shared = part.image_dir == layout.test_dir  # one folder for both parts: the others are test images, or noted
    for path in [] if shared else index.files:  # (by unlisted_test_images), not bad rows
        if path not in used:
            rel = path.relative_to(part.image_dir).as_posix()
            problems.append(Problem(f"{part.image_dir.name}/{rel}", f"image has no label in {part.csv.name}"))
    return pd.DataFrame(rows, columns=["id", "path", "label", "source", "where"])


def _read_class_folders(layout: Layout, part: Part, problems: list[Problem]) -> pd.DataFrame:
    """One class per visible sub-folder; its images at any depth below it (cat/batch2/0.png is a cat)."""
    ext, left_out = layout.ext, LeftOut()
    rows, loose = [], 0
    for entry in sorted(part.image_dir.iterdir()):
        if is_hidden(entry.name):  # .ipynb_checkpoints/ is no class, .DS_Store no image
            left_out.hidden += [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        elif entry.is_dir():
            images, skipped = scan_images(entry, ext)
            left_out.extend(skipped)
            for img in images:
                rel = img.relative_to(part.image_dir).as_posix()
                image_id = img.name if ext is None else img.stem
                rows.append((image_id, str(img), entry.name, part.source, rel))
            if not images:  # a class no model could learn, that a submission could never name
                problems.append(Problem(f"class {entry.name}", f"has 0 images: {part.image_dir.name}/{entry.name}/ "
                                        f"holds no {ext or 'image'} files; add its images, or --skip-bad to leave "
                                        f"the class out"))
        elif is_image_name(entry.name) and (ext is None or entry.suffix.lower() == "." + ext.lstrip(".").lower()):
            loose += 1
            problems.append(Problem(f"{part.image_dir.name}/{entry.name}", "image has no label (not in a class folder)"))
        else:
            left_out.other.append(entry)
    layout.left_out.setdefault(part.image_dir, LeftOut()).extend(left_out)
    frame = pd.DataFrame(rows, columns=["id", "path", "label", "source", "where"])
    if frame.id.duplicated().any():  # names repeat across classes or sub-folders (cat/0.png, dog/0.png): the path
        frame["id"] = [where if ext is None else where[:-len(Path(where).suffix)] for where in frame["where"]]
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
    index = layout.index(layout.test_dir)
    rows = []
    for i, image_id in enumerate(sample[layout.sub_id_col]):
        where = f"{layout.sample_submission.name} row {i + 2}"
        try:
            path = index.find(image_id.strip())
        except AmbiguousId as exc:
            path = None
            problems.append(Problem(where, f"test {exc}"))
        else:
            if path is None:
                problems.append(Problem(where, f"test id {image_id!r} has no image file in {layout.test_dir}"))
        rows.append((image_id, str(path) if path else ""))
    return pd.DataFrame(rows, columns=["id", "path"])


def unlisted_test_images(layout: Layout, test: pd.DataFrame, train: pd.DataFrame) -> list[str]:
    """Images in the test folder that the sample submission does not list (nor, where one folder holds both
    parts, the training CSV): they get no prediction."""
    listed = {p for p in test.path if p} | set(train.path)
    index = layout.index(layout.test_dir)  # the files read_test_table could match
    return sorted(rel for rel, path in index.by_name.items() if str(path) not in listed)
