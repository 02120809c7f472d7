"""Decode every image once into a uint8 array (N, S, S, 3) stored as a memory-mapped .npy
(or, with `comp prepare --no-cache`, decode it once only to check it).

Training then slices this array instead of opening JPEGs: decoding is the slowest part
of a naive loader on small images, and a 50k x 32 x 32 x 3 cache is only 150 MB.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..io import CompError, atomic_path
from ..progress import progress
from .layout import Problem


# EXIF orientations (TIFF tag 274) whose image a viewer shows turned: 2-8; 5-8 swap width and height.
ORIENTATION_TAG = 274
TRANSPOSED = {5, 6, 7, 8}


@dataclass
class Headers:
    """What the headers say, row by row: sizes as a viewer shows the image (EXIF orientation applied)."""
    sizes: list
    modes: list
    bad: list[tuple[int, str]]  # unreadable (row, error)
    turned: list[int]  # rows whose EXIF orientation load_rgb applies

    def turned_note(self, where: str) -> str:
        return (f"{len(self.turned)} {where} image(s) carry an EXIF orientation (as phones save photos): they are "
                f"decoded upright, as viewers show them") if self.turned else ""


def scan_headers(paths, desc="scanning") -> Headers:
    """Read only the headers."""
    headers = Headers([], [], [], [])
    for row, path in enumerate(progress(paths, desc=desc, unit="img", leave=False)):
        try:
            with Image.open(path) as img:
                orientation = _orientation(img)
                headers.sizes.append(img.size[::-1] if orientation in TRANSPOSED else img.size)
                headers.modes.append(img.mode)
        except Exception as exc:  # PIL raises many types for broken files
            headers.sizes.append(None)
            headers.modes.append(None)
            headers.bad.append((row, f"unreadable image: {exc}"))
            continue
        if orientation not in (None, 1):
            headers.turned.append(row)
    return headers


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(ORIENTATION_TAG)
    except Exception:  # a damaged EXIF block: the pixels still decode, unturned, as before
        return None


# prepare's default side for small images is at most this: the planner's nets trained from scratch (comp/train/recipe.py)
# are built for small images on a budget. Larger images (photos) are cached at PHOTO_SIZE: room for the
# pretrained nets' random-resized crops at their training size (comp/models/finetune.py: 128px on a CPU,
# 224px on a GPU). `--size` sets any other side.
DEFAULT_MAX_SIZE = 128
PHOTO_SIZE = {"cpu": 160, "cuda": 256}
SIZE_STEP = 32  # mixed sizes round to a multiple of this, which the nets' 2x2 pools divide
FITS = ("crop", "squash")  # how an image of another shape becomes S x S; "squash": comp before 2026-12-08


def choose_size(sizes, cuda: bool = False) -> tuple[int, str]:
    """(side, why): the most common short side where at least half the images share it (each image keeps its
    aspect: its short side becomes the square's, the long one is cropped at the centre); where sizes are
    mixed (photos), the median short side rounded to a multiple of SIZE_STEP. Up to DEFAULT_MAX_SIZE the side
    is kept; above it, images are photos, cached at PHOTO_SIZE (larger on a machine with CUDA)."""
    sides = [min(s) for s in sizes if s]
    if not sides:
        raise ValueError("no readable images")
    side, count = Counter(sides).most_common(1)[0]
    why = f"the most common short side ({count} of {len(sides)} images)"
    if count < len(sides) / 2:
        median = float(np.median(sides))
        side = max(SIZE_STEP, int(median / SIZE_STEP + 0.5) * SIZE_STEP)  # halves round up
        why = f"sizes are mixed: the median short side ({median:g}px) rounded to a multiple of {SIZE_STEP}"
    photo = PHOTO_SIZE["cuda" if cuda else "cpu"]
    if side > photo:
        why = (f"{why} is {side}px: photos are cached at {photo}px{' (a GPU here)' if cuda else ''}, room for "
               f"random-resized crops at the training size; `--size {side}` keeps the detail, with "
               f"{(side / photo) ** 2:.1f}x the pixels to cache and train on")
        side = photo
    elif side > DEFAULT_MAX_SIZE:
        why = f"{why}: photos are cached as they are, up to {photo}px"
    return side, why


# Modes with more than 8 bits per pixel and how load_rgb brings them to 0..255 (prepare's summary
# shows it). Pillow's own convert("RGB") clips them at 255 instead, which destroys them.
DEEP_MODES = {"I;16": "0..65535 -> 0..255", "I;16L": "0..65535 -> 0..255", "I;16B": "0..65535 -> 0..255",
              "I;16N": "0..65535 -> 0..255",
              "I": "0..65535 -> 0..255 when the values fit, else each image's min..max -> 0..255",
              "F": "each image's min..max -> 0..255"}


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grayscale, scaled by its range (DEEP_MODES)."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    low, high = 0.0, 65535.0
    if img.mode == "F" or values.min() < 0 or values.max() > 65535:  # no fixed range: the image's own
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def load_rgb(path: str, size: int | None, fit: str = "squash") -> np.ndarray:
    """Decode one image to (size, size, 3) uint8 (size None: as it is), whatever its mode (L, RGBA, P,
    CMYK, 16-bit, float...), turned upright by its EXIF orientation. fit: how another shape becomes a square:
    "crop" keeps the aspect (the centre square, resized), "squash" resizes the whole image (comp's preparations
    before 2026-12-08; prepare.json and bundles record theirs). The one decoder of comp: the cache, the
    per-image loader and `comp infer` see the same pixels."""
    with Image.open(path) as img:
        img.load()  # forces a full decode so a truncated file fails here, not later
        if _orientation(img) not in (None, 1):  # a phone's photo: upright as every viewer shows it
            img = ImageOps.exif_transpose(img)
        if img.mode in DEEP_MODES:
            img = to_8bit(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            # Composite on white: dropping alpha leaves arbitrary colours under transparent pixels.
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        if size and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC, box=_square_box(img.size, fit))
        return np.asarray(img, dtype=np.uint8)


def _square_box(size: tuple[int, int], fit: str) -> tuple[int, int, int, int] | None:
    """The part of a (w, h) image that becomes the square: its centre square for "crop", all of it for "squash"."""
    if fit not in FITS:
        raise ValueError(f"fit {fit!r}: one of {', '.join(FITS)}")
    w, h = size
    if fit == "squash" or w == h:
        return None
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return (left, top, left + side, top + side)


def build_cache(paths, size: int, out_path: Path | None, desc: str,
                fit: str = "crop") -> tuple[list[tuple[int, str]], list[str]]:
    """Decode `paths` into out_path (.npy, atomic). Returns (bad rows, content hashes).

    With out_path None (`comp prepare --no-cache`) every image is still decoded once, so that
    truncated files fail here and duplicates are found, but nothing is stored."""
    if out_path is None:
        return _decode_all(paths, size, desc, None, fit)
    with atomic_path(out_path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        result = _decode_all(paths, size, desc, array, fit)
        array.flush()
        del array
    return result


def _decode_all(paths, size: int, desc: str, array, fit: str) -> tuple[list[tuple[int, str]], list[str]]:
    bad, hashes = [], []
    for row, path in enumerate(progress(paths, desc=desc, unit="img")):
        try:
            pixels = load_rgb(path, size, fit)
        except Exception as exc:
            bad.append((row, f"unreadable or truncated image: {exc}"))
            pixels = np.zeros((size, size, 3), np.uint8)
        if array is not None:
            array[row] = pixels
        hashes.append(hashlib.blake2b(pixels.tobytes(), digest_size=8).hexdigest())
    return bad, hashes


def check_cache_fits(n_images: int, size: int, sides, folder: Path) -> None:
    """Refuse a cache the disk cannot hold (a --size typo makes one of many GB), and say so when --size
    enlarges the images far beyond any seen (their pixels hold nothing new, and cost as much)."""
    import shutil

    need = n_images * size * size * 3
    free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
    if need > 0.9 * free:
        raise CompError(f"--size {size}: the image cache would take {need / 1e9:.1f} GB, and {folder} has "
                        f"{free / 1e9:.1f} GB free; choose a smaller --size, or --no-cache to read the files")
    largest = max((max(s) for s in sides if s), default=size)
    if size > 2 * largest:
        print(f"note: --size {size} enlarges images of at most {largest}px {size / largest:.1f}x; the cache takes "
              f"{need / 1e9:.2f} GB and training costs {(size / largest) ** 2:.0f}x the pixels for no new detail")


def open_cache(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:  # deleted, cut short (mmap longer than the file), overwritten
        raise CompError(f"{path}: the image cache is missing or damaged ({type(exc).__name__}: {exc}); "
                        f"run `comp prepare` again") from None


def duplicate_report(train_hashes, train_labels, test_hashes, train_ids=None, shown: int = 50) -> dict:
    """Exact pixel duplicates: within train, across labels (label noise: their ids are listed, up to
    `shown` groups), and train/test overlap. Prepare keeps each group in one fold (assign_folds)."""
    groups: dict[str, list[int]] = {}
    for row, h in enumerate(train_hashes):
        groups.setdefault(h, []).append(row)
    dup_groups = [rows for rows in groups.values() if len(rows) > 1]
    conflicting = [rows for rows in dup_groups if len({train_labels[r] for r in rows}) > 1]
    test_overlap = sum(1 for h in test_hashes if h in groups)
    ids = train_ids if train_ids is not None else [str(r) for r in range(len(train_hashes))]
    return {
        "train_duplicate_groups": len(dup_groups),
        "train_duplicate_images": sum(len(g) for g in dup_groups),
        "duplicates_with_conflicting_labels": len(conflicting),
        "conflicting_label_groups": [{str(ids[r]): train_labels[r] for r in rows} for rows in conflicting[:shown]],
        "test_images_also_in_train": test_overlap,
        "kept_in_one_fold": True,
    }


def problems_from_rows(bad, table, kind="train") -> list[Problem]:
    out = []
    for row, message in bad:
        where = table["where"].iloc[row] if "where" in table.columns else f"{kind} row {row}"
        out.append(Problem(f"{where} ({table['path'].iloc[row]})", message))
    return out
