"""`comp prepare --no-cache` and the albu feed: training and prediction from the image files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_competition
from PIL import Image

from comp.cli import main
from comp.train.feed import make_feed
from comp.prepare.folds import PrepareOptions, load_prepared, prepare
from comp.io import CompError
from comp.train.trainer import TrainConfig, train, train_fold


def make_data(tmp_path):
    """3 classes x 8 PNGs of 24 px; train/1.png is grayscale and train/2.png RGBA (opaque)."""
    root = tmp_path / "comp"
    facts = make_competition(root, "cifar", per_class=8, size=24)
    for name, mode in (("1.png", "L"), ("2.png", "RGBA")):
        path = root / "train" / name
        Image.open(path).convert(mode).save(path)
    return root, facts


def prepare_at(root, workdir, cache=False, **kw):
    return prepare(PrepareOptions(str(root), str(workdir), folds=2, cache=cache, **kw))


@pytest.fixture
def no_cache(tmp_path, workdir):
    root, facts = make_data(tmp_path)
    prepare_at(root, workdir)
    return facts


def test_no_cache_prepare_writes_tables_but_no_cache(tmp_path, workdir):
    root, _ = make_data(tmp_path)
    summary = prepare_at(root, workdir)
    info = json.loads((workdir / "folds" / "prepare.json").read_text())
    assert info["cache"] is None and summary["cache"] is None and info["image_size"] == 24
    assert set(info["fingerprints"]) == {"train_fingerprint", "test_fingerprint"}
    assert {"L", "RGBA", "RGB"} <= set(info["modes_seen"])
    assert not list(workdir.rglob("*.npy"))
    prepared = load_prepared(workdir)
    assert not prepared.has_cache and prepared.train_images is None and prepared.test_images is None
    assert prepared.image_size == 24 and len(prepared.folds) == 24 and len(prepared.test) == 12
    prepare_at(root, workdir, size=16)
    assert load_prepared(workdir).image_size == 16


def test_no_cache_prepare_still_decodes_every_image(tmp_path, workdir):
    root, _ = make_data(tmp_path)
    data = (root / "train" / "5.png").read_bytes()
    (root / "train" / "5.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompError, match=r"5\.png.*(truncated|unreadable)"):
        prepare_at(root, workdir)
    assert not (workdir / "folds" / "prepare.json").exists()
    assert prepare_at(root, workdir, skip_bad=True)["train_images"] == 23


def test_train_and_predict_from_files(workdir, no_cache):
    # cutmix is a batch-only op: it runs on the batch, the rest per image in the workers
    [metrics] = train(TrainConfig(arch="simple_cnn", fold=1, workdir=str(workdir), epochs=2, batch_size=8,
                                  workers=2, aug="flip,translate:2,cutmix", tta="flip"))
    out = workdir / "runs" / "simple_cnn" / "fold1"
    config = json.loads((out / "config.json").read_text())
    assert config["loader"] == "albu" and config["workers"] == 2 and config["img_size"] == 24
    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    oof, test = np.load(out / "oof.npz"), np.load(out / "test.npz")
    assert sorted(oof["ids"]) == sorted(folds.id[folds.fold == "1"])
    assert list(test["ids"]) == no_cache["test_ids"] and test["logits"].shape == (12, 3)
    assert json.loads((out / "metrics.json").read_text())["n_oof"] == 12 == metrics["n_oof"]
    assert len(pd.read_csv(out / "history.csv")) == 2

    assert main(["predict", "--run", "simple_cnn", "--tta", "none"]) == 0
    again = np.load(workdir / "runs" / "simple_cnn_tta-none" / "fold1" / "oof.npz")
    assert list(again["ids"]) == list(oof["ids"]) and np.isfinite(again["logits"]).all()
    # the same weights and TTA through `comp predict` give the run's own logits
    assert main(["predict", "--run", "simple_cnn", "--tta", "flip", "--name", "same"]) == 0
    same = np.load(workdir / "runs" / "same" / "fold1" / "oof.npz")
    np.testing.assert_allclose(same["logits"], oof["logits"], atol=1e-4)


def test_an_interrupted_albu_run_resumes_bit_exact(workdir, no_cache):
    """The order and every image's augmentation come from (seed, epoch): a run stopped after epoch 2 and resumed
    (new worker processes) ends with the weights and logits of the run that was never stopped."""
    cfg = dict(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=4, batch_size=4, workers=2, seed=3,
               aug="flip,translate:3,contrast:0.3,jitter:0.2,cutmix", tta="none", patience=0)

    def stop_in_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**cfg, name="stopped"), load_prepared(workdir), on_epoch=stop_in_epoch_3)
    assert (workdir / "runs" / "stopped" / "fold0" / "checkpoint.pt").exists()
    train_fold(TrainConfig(**cfg, name="stopped", resume=True), load_prepared(workdir), on_epoch=lambda row: None)
    train_fold(TrainConfig(**cfg, name="whole"), load_prepared(workdir), on_epoch=lambda row: None)
    runs = workdir / "runs"
    stopped, whole = (torch.load(runs / n / "fold0" / "model.pt")["state_dict"] for n in ("stopped", "whole"))
    assert stopped.keys() == whole.keys()
    for key in whole:
        torch.testing.assert_close(stopped[key], whole[key], rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(np.load(runs / "stopped" / "fold0" / "test.npz")["logits"],
                                  np.load(runs / "whole" / "fold0" / "test.npz")["logits"])
    history = pd.read_csv(runs / "stopped" / "fold0" / "history.csv")
    pd.testing.assert_series_equal(history.train_loss, pd.read_csv(runs / "whole" / "fold0" / "history.csv").train_loss)


def test_albu_order_and_augmentation_follow_seed_and_epoch():
    from comp.train.feed import SeededOrder

    first, again, later = (list(SeededOrder(50, 7, epoch)) for epoch in (1, 1, 2))
    assert first == again and first != later and sorted(i for i, _ in first) == list(range(50))
    assert len({seed for _, seed in first}) == 50  # each image its own augmentation seed


def test_train_without_workers(workdir, no_cache):
    [metrics] = train(TrainConfig(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=1, batch_size=8,
                                  loader="albu", workers=0, tta="none"))
    assert metrics["n_test"] == 12 and metrics["epochs_run"] == 1


def test_loader_cache_needs_a_cache(workdir, no_cache):
    with pytest.raises(CompError, match="re-run `comp prepare` without --no-cache"):
        train(TrainConfig(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=1, loader="cache"))
    assert not (workdir / "runs").exists()


def test_missing_image_file_is_named(tmp_path, workdir, no_cache):
    (tmp_path / "comp" / "train" / "7.png").unlink()
    with pytest.raises(CompError, match=r"missing, e\.g\. .*7\.png"):
        train(TrainConfig(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=1, workers=0))


def test_cache_and_albu_feeds_give_the_same_tensors(tmp_path):
    root, _ = make_data(tmp_path)
    prepare_at(root, tmp_path / "cached", cache=True)
    prepare_at(root, tmp_path / "files")
    cached, files = load_prepared(tmp_path / "cached"), load_prepared(tmp_path / "files")
    train_rows = np.flatnonzero(cached.folds.fold.to_numpy() == 0)
    val_rows = np.flatnonzero(cached.folds.fold.to_numpy() == 1)
    kw = dict(train_rows=train_rows, val_rows=val_rows, aug="none", batch_size=len(train_rows))
    a = make_feed("cache", cached, torch.device("cpu"), **kw)
    b = make_feed("albu", files, torch.device("cpu"), workers=0, **kw)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-5)
    np.testing.assert_allclose(a.std, b.std, atol=1e-5)
    for split in ("val", "test"):
        xa, xb = torch.cat(list(a.eval_batches(split))), torch.cat(list(b.eval_batches(split)))
        assert xb.shape == xa.shape == (12, 3, 24, 24) and xb.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xb, xa, atol=1e-4, rtol=0)
    # training batches (shuffled differently): each albu image is one cache image, same label
    [(xa, ya)], [(xb, yb)] = list(a.train_batches(1)), list(b.train_batches(1))
    distance = torch.cdist(xb.flatten(1), xa.flatten(1))
    match = distance.argmin(1)
    assert distance.min(1).values.max() < 1e-3 and sorted(match.tolist()) == list(range(len(train_rows)))
    assert torch.equal(yb, ya[match])


def test_workers_draw_different_augmentations(workdir, no_cache):
    feed = make_feed("albu", load_prepared(workdir), torch.device("cpu"), stats=([0.5] * 3, [0.25] * 3),
                     train_rows=np.arange(4), workers=2)
    path = feed.paths("train")[0]
    from comp.train.feed import SeededOrder

    loader = feed.loader([path] * 4, [0] * 4, feed.transform("jitter:0.5"), batch_size=1, order=SeededOrder(4, 0))
    images = [x for x, _ in loader]  # the same file four times, two images from each worker
    assert all(not torch.equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
