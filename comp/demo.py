"""`comp demo`: the whole chain on scikit-learn's bundled digits, offline.

The 1,797 8x8 digits become a Kaggle-like competition (cifar-10 layout, numeric labels,
grayscale PNGs upscaled to 32x32); a fifth is held back as the test set, with its
labels kept outside the competition folder so the demo can score its own submission.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .blend.blend import BlendOptions, blend
from .io import CompError, atomic_path, read_json, write_csv
from .prepare.folds import PrepareOptions, prepare
from .train.trainer import TrainConfig, train

DEMO_ARCHS = ("simple_cnn", "custom_cnn")


def make_digits_competition(root: Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write the competition into root/digits/ and the held-back answers to root/digits_answers.csv."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(len(images) * test_fraction)
    test_rows, train_rows = order[:n_test], order[n_test:]
    comp_dir = root / "digits"
    # the answers first: a kill before the folder is complete makes the next demo write both again
    write_csv(root / "digits_answers.csv", pd.DataFrame({"id": np.arange(1, n_test + 1),
                                                         "label": digits.target[test_rows]}))
    with atomic_path(comp_dir) as tmp:
        (tmp / "train").mkdir(parents=True)
        (tmp / "test").mkdir()
        for folder, rows in (("train", train_rows), ("test", test_rows)):
            for image_id, row in enumerate(rows, start=1):
                img = Image.fromarray(images[row], mode="L").resize((size, size), Image.Resampling.BILINEAR)
                img.save(tmp / folder / f"{image_id}.png")
        write_csv(tmp / "trainLabels.csv", pd.DataFrame({"id": np.arange(1, len(train_rows) + 1),
                                                          "label": digits.target[train_rows]}))
        test_ids = np.arange(1, n_test + 1)
        write_csv(tmp / "sampleSubmission.csv", pd.DataFrame({"id": test_ids, "label": 0}))
    return comp_dir


def _check_not_another_competition(root: Path, comp_dir: Path) -> None:
    """The demo prepares its digits over <workdir>/folds: never over a real competition's."""
    prepared = root / "folds" / "prepare.json"
    if not prepared.exists():
        return
    data = Path(read_json(prepared).get("layout", {}).get("root", ""))
    if data.resolve() != comp_dir.resolve():
        raise CompError(f"{root.resolve()} is prepared for {data}: the demo would replace its folds/; "
                        f"run it in a folder of its own: comp --workdir demo demo")


def run_demo(workdir: str = "demo", epochs: float = 8, n_folds: int = 5) -> float:
    started = time.time()
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    comp_dir = root / "digits"
    _check_not_another_competition(root, comp_dir)
    if not (root / "digits_answers.csv").exists():  # an older comp wrote the answers last: both again
        shutil.rmtree(comp_dir, ignore_errors=True)
    if not comp_dir.exists():
        make_digits_competition(root)
    print(f"== comp prepare --data {comp_dir}")
    prepare(PrepareOptions(str(comp_dir), str(root), folds=n_folds))
    for arch in DEMO_ARCHS:
        print(f"== comp train --arch {arch} --fold all --epochs {epochs}")
        # Digits are not mirror-symmetric: shifts only, and no flip TTA.
        train(TrainConfig(arch=arch, fold=-1, workdir=str(root), epochs=epochs, patience=0,
                          aug="translate:2", tta="none", resume=True))  # an interrupted demo continues
    print("== comp blend --method soft")
    out = blend(BlendOptions(method="soft", name="demo_soft", workdir=str(root)))
    submission = pd.read_csv(out, dtype=str)
    answers = pd.read_csv(root / "digits_answers.csv", dtype=str)
    merged = submission.merge(answers, on="id", suffixes=("_pred", "_true"))
    test_accuracy = float((merged.label_pred == merged.label_true).mean())
    print(f"demo test accuracy (held-back labels): {test_accuracy:.4f} on {len(merged)} images, "
          f"{time.time() - started:.0f}s in all")
    return test_accuracy
