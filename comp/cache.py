"""Decode every image once into a uint8 array (N, S, S, 3) stored as a memory-mapped .npy
(or, with `comp prepare --no-cache`, decode it once only to check it).

Training then slices this array instead of opening JPEGs: decoding is the slowest part
of a naive loader on small images, and a 50k x 32 x 32 x 3 cache is only 150 MB.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .data import Problem
from .io import atomic_path


def scan_headers(paths, desc="scanning") -> tuple[list, list, list[tuple[int, str]]]:
    """Read only the headers: (sizes, modes, unreadable (row, error))."""
    sizes, modes, bad = [], [], []
    for row, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False, disable=None)):
        try:
            with Image.open(path) as img:
                sizes.append(img.size)
                modes.append(img.mode)
        except Exception as exc:  # PIL raises many types for broken files
            sizes.append(None)
            modes.append(None)
            bad.append((row, f"unreadable image: {exc}"))
    return sizes, modes, bad


def choose_size(sizes) -> int:
    """The most common side length; non-square images are resized to a square of it."""
    counts = Counter(max(s) for s in sizes if s)
    if not counts:
        raise ValueError("no readable images")
    return counts.most_common(1)[0][0]


def load_rgb(path: str, size: int | None) -> np.ndarray:
    """Decode one image to (size, size, 3) uint8 (size None: as it is), whatever its mode (L, RGBA, P,
    CMYK...). The one decoder of comp: the cache and the per-image loader see the same pixels."""
    with Image.open(path) as img:
        img.load()  # forces a full decode so a truncated file fails here, not later
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            # Composite on white: dropping alpha leaves arbitrary colours under transparent pixels.
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        if size and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8)


def build_cache(paths, size: int, out_path: Path | None, desc: str) -> tuple[list[tuple[int, str]], list[str]]:
    """Decode `paths` into out_path (.npy, atomic). Returns (bad rows, content hashes).

    With out_path None (`comp prepare --no-cache`) every image is still decoded once, so that
    truncated files fail here and duplicates are found, but nothing is stored."""
    if out_path is None:
        return _decode_all(paths, size, desc, None)
    with atomic_path(out_path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        result = _decode_all(paths, size, desc, array)
        array.flush()
        del array
    return result


def _decode_all(paths, size: int, desc: str, array) -> tuple[list[tuple[int, str]], list[str]]:
    bad, hashes = [], []
    for row, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=None)):
        try:
            pixels = load_rgb(path, size)
        except Exception as exc:
            bad.append((row, f"unreadable or truncated image: {exc}"))
            pixels = np.zeros((size, size, 3), np.uint8)
        if array is not None:
            array[row] = pixels
        hashes.append(hashlib.blake2b(pixels.tobytes(), digest_size=8).hexdigest())
    return bad, hashes


def open_cache(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def duplicate_report(train_hashes, train_labels, test_hashes) -> dict:
    """Exact pixel duplicates: within train, across labels (label noise), and train/test overlap."""
    groups: dict[str, list[int]] = {}
    for row, h in enumerate(train_hashes):
        groups.setdefault(h, []).append(row)
    dup_groups = [rows for rows in groups.values() if len(rows) > 1]
    conflicting = [rows for rows in dup_groups if len({train_labels[r] for r in rows}) > 1]
    test_overlap = sum(1 for h in test_hashes if h in groups)
    return {
        "train_duplicate_groups": len(dup_groups),
        "train_duplicate_images": sum(len(g) for g in dup_groups),
        "duplicates_with_conflicting_labels": len(conflicting),
        "test_images_also_in_train": test_overlap,
    }


def problems_from_rows(bad, table, kind="train") -> list[Problem]:
    out = []
    for row, message in bad:
        where = table["where"].iloc[row] if "where" in table.columns else f"{kind} row {row}"
        out.append(Problem(f"{where} ({table['path'].iloc[row]})", message))
    return out
