"""Which column of a competition's CSVs holds the ids and which the labels: by name, never by place.

A sample submission `id,Usage,label` must get its predictions in `label` and keep `Usage` as it is; one
written `label,id` is read the same. What cannot be told apart is an error that names the columns.
"""
from __future__ import annotations

from pathlib import Path

from ..io import CompError, read_input_csv
from .image_files import scan_images

# Column names competitions give ids and labels (compared in lower case, '_' and ' ' ignored).
ID_NAMES = ("id", "image", "imageid", "img", "imgid", "filename", "file", "filepath", "path", "name",
            "imagename", "imagepath", "fname", "sample", "sampleid")
LABEL_NAMES = ("label", "labels", "class", "classid", "classname", "category", "categoryid", "target", "species",
               "breed", "type", "y", "prediction", "predicted", "answer", "diagnosis")


def _plain(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def _by_name(cols: list[str], names: tuple[str, ...], exclude=None) -> str | None:
    return next((c for c in cols if c != exclude and _plain(c) in names), None)


def submission_columns(sample: Path, cols: list[str], train_cols: list[str], ov,
                       test_dir: Path) -> tuple[str, str, str]:
    """(id column, label column, how they were told apart) of the sample submission, by name, never by
    place: a sample `id,Usage,label` keeps Usage as it is and gets its predictions in `label`.
    In order: --sub-id-col/--sub-label-col; the training CSV's id/label columns (--id-col/--label-col, or
    the columns both CSVs have); the usual names (ID_NAMES, LABEL_NAMES); for two columns with no known
    name, the one whose values name test images is the id. Otherwise an error that names the columns.
    ov: the command line's comp.prepare.layout.LayoutOverrides."""
    for flag, given in (("--sub-id-col", ov.sub_id_col), ("--sub-label-col", ov.sub_label_col)):
        if given is not None and given not in cols:
            raise CompError(f"{flag} {given!r}: {sample} has no such column (columns: {cols})")
    shared = [c for c in train_cols if c in cols]
    id_col = (ov.sub_id_col or (ov.id_col if ov.id_col in cols else None)
              or _by_name(shared, ID_NAMES) or _by_name(cols, ID_NAMES))
    label_col = (ov.sub_label_col or (ov.label_col if ov.label_col in cols else None)
                 or _by_name(shared, LABEL_NAMES, id_col) or _by_name(cols, LABEL_NAMES, id_col))
    if len(shared) == 2 and not (id_col and label_col):  # e.g. img_name,diagnosis in both: the train CSV's order
        id_col = id_col or next(c for c in shared if c != label_col)
        label_col = label_col or next(c for c in shared if c != id_col)
    how = ""
    if len(cols) == 2 and (id_col is None) != (label_col is None):
        id_col, label_col = (id_col, _other(cols, id_col)) if id_col else (_other(cols, label_col), label_col)
    elif len(cols) == 2 and id_col is None:
        id_col, label_col = _id_by_content(sample, cols, test_dir)
        how = (f"the sample's columns {cols} have no usual names: {id_col!r} is taken as the id (its values name "
               f"test images); --sub-id-col/--sub-label-col set them")
    if id_col is None or label_col is None or id_col == label_col:
        raise CompError(f"{sample}: cannot tell which of its columns {cols} holds the ids and which the labels; "
                        f"pass --sub-id-col NAME --sub-label-col NAME (the others are kept as the sample has them)")
    return id_col, label_col, how


def _other(cols: list[str], one: str) -> str:
    return next(c for c in cols if c != one)


def _id_by_content(sample: Path, cols: list[str], test_dir: Path) -> tuple[str, str]:
    """Of two unnamed columns, the id is the one whose first values name test images (the first on a tie)."""
    head = read_input_csv(sample, dtype=str, keep_default_na=False, nrows=50)
    images = scan_images(test_dir)[0]
    stems = {p.stem for p in images} | {p.name for p in images}
    hits = [head[c].str.strip().isin(stems).sum() for c in cols]
    first = 1 if hits[1] > hits[0] else 0
    return cols[first], cols[1 - first]


def train_columns(train_csv: Path, cols: list[str], sub_id: str, sub_label: str, ov) -> tuple[str, str]:
    """The training CSV's id and label columns: the flags, the sample's names, the usual names, its first two."""
    id_col = ov.id_col or (sub_id if sub_id in cols else None) or _by_name(cols, ID_NAMES) or cols[0]
    label_col = (ov.label_col or (sub_label if sub_label in cols else None) or _by_name(cols, LABEL_NAMES, id_col)
                 or next((c for c in cols if c != id_col), None))
    for name, flag in ((id_col, "--id-col"), (label_col, "--label-col")):
        if name not in cols:
            raise CompError(f"{train_csv}: column {name!r} not found (columns: {cols}); pass {flag}")
    return id_col, label_col
