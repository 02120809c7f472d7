"""The label map: the one place where class indices become class names.

A model only ever sees indices 0..C-1. Folder loaders in keras and torchvision sort
class names as text ("1", "10", "100", "11", ...), so a submission that writes the
index instead of the name, or decodes indices with a differently sorted list, scores
near zero. comp keeps one list of class names per competition (folds/labels.json),
hashes it, stamps the hash on every run, and decodes indices through it alone.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import CompError, read_json, write_json

_NUMBER = re.compile(r"^[+-]?\d+$")


def natural_key(name: str):
    """Sort key that orders "2" before "10" (and "img2" before "img10")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_sorted(names) -> list[str]:
    # the name itself breaks ties ("01" vs "1", "Cat" vs "cat"): the order must never depend on
    # the order the names arrived in
    return sorted(names, key=lambda name: (natural_key(name), name))


@dataclass(frozen=True)
class LabelMap:
    classes: tuple[str, ...]
    # How the sample submission writes labels: "numeric" or "text"; pad_width > 0 means
    # zero-padded numbers ("007"), so written labels are padded to that width.
    label_kind: str = "text"
    pad_width: int = 0
    sample_examples: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if len(self.classes) < 2:
            raise CompError(f"need at least 2 classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise CompError(f"class names repeat in the label map: {list(self.classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def hash(self) -> str:
        """Changes whenever the names or their order change; runs record it."""
        blob = json.dumps(list(self.classes), ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def encode(self, names) -> np.ndarray:
        """Class names -> indices; an unknown name is an error that names it."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        out = np.empty(len(names), dtype=np.int64)
        for row, name in enumerate(names):
            if name not in lookup:
                raise CompError(f"label {name!r} (row {row}) is not a known class; known: {self._preview()}")
            out[row] = lookup[name]
        return out

    def decode(self, indices) -> list[str]:
        """Class indices -> the names to write in a submission."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_classes):
            bad = indices[(indices < 0) | (indices >= self.num_classes)][0]
            raise CompError(f"class index {int(bad)} is outside 0..{self.num_classes - 1}")
        return [self.format(self.classes[i]) for i in indices.tolist()]

    def format(self, name: str) -> str:
        if self.pad_width and _NUMBER.match(name):
            return name.zfill(self.pad_width)
        return name

    def written_names(self) -> set[str]:
        """Every label string a valid submission may contain."""
        return {self.format(c) for c in self.classes}

    def _preview(self) -> str:
        shown = ", ".join(self.classes[:12])
        return shown + (f", ... ({self.num_classes} in all)" if self.num_classes > 12 else "")

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "hash": self.hash,
            "order": "natural sort of the class names (2 before 10); index i is classes[i]",
            "label_kind": self.label_kind,
            "pad_width": self.pad_width,
            "sample_examples": list(self.sample_examples),
        }

    def save(self, path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> "LabelMap":
        path = Path(path)
        if not path.exists():
            raise CompError(f"{path} not found: run `comp prepare --data ...` first")
        data = read_json(path)
        label_map = cls(
            classes=tuple(data["classes"]),
            label_kind=data.get("label_kind", "text"),
            pad_width=int(data.get("pad_width", 0)),
            sample_examples=tuple(data.get("sample_examples", ())),
        )
        if data.get("hash") and data["hash"] != label_map.hash:
            raise CompError(f"{path} was edited: its hash {data['hash']} does not match its classes")
        return label_map


def build_label_map(train_labels, sample_labels=()) -> LabelMap:
    """Fix the class order and learn how the sample submission writes labels.

    Labels are kept as the exact strings found in the CSV/folder names, so "7" stays
    "7" and "007" stays "007"; the sample only adds padding when every numeric label
    in it is zero-padded to one width and the training names are not.
    """
    classes = tuple(natural_sorted(set(map(str, train_labels))))
    samples = [str(s) for s in sample_labels if str(s) != ""]
    numeric = bool(samples) and all(_NUMBER.match(s) for s in samples)
    pad_width = 0
    if numeric:
        widths = {len(s) for s in samples}
        padded = any(len(s) > 1 and s.startswith("0") for s in samples)
        if padded and len(widths) == 1 and not any(c.startswith("0") and len(c) > 1 for c in classes):
            pad_width = widths.pop()
    return LabelMap(
        classes=classes,
        label_kind="numeric" if numeric else "text",
        pad_width=pad_width,
        sample_examples=tuple(dict.fromkeys(samples))[:5],
    )
