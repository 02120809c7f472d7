"""comp train: outputs, resume after kill -9, no silent overwrite, the run lock, real learning."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import make_competition

from comp.blend.blend import BlendOptions, blend
from comp.prepare.folds import PrepareOptions, prepare
from comp.io import CompError
from comp.models import create_model
from comp.train.recipe import MUON_LR_FLOOR
from comp.train.trainer import TrainConfig, train


def prepared_workdir(tmp_path, workdir, folds=2, **kw):
    facts = make_competition(tmp_path / "comp", "cifar", **kw)
    prepare(PrepareOptions(str(tmp_path / "comp"), str(workdir), folds=folds))
    return facts


def test_outputs_of_a_fold(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=8)
    [metrics] = train(TrainConfig(arch="simple_cnn", fold=1, workdir=str(workdir), epochs=2, batch_size=8))
    out = workdir / "runs" / "simple_cnn" / "fold1"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "history.csv", "metrics.json", "oof.npz", "test.npz", "model.pt", "tb"} <= names
    assert "checkpoint.pt" not in names and "lock" not in names
    assert not [n for n in names if ".tmp" in n]
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == [1, 2]
    assert {"train_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"} <= set(history.columns)
    oof, test = np.load(out / "oof.npz"), np.load(out / "test.npz")
    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    assert sorted(oof["ids"]) == sorted(folds.id[folds.fold == "1"])
    assert oof["logits"].shape == (12, 3) and test["logits"].shape == (12, 3)
    config = json.loads((out / "config.json").read_text())
    assert config["label_hash"] == json.loads((workdir / "folds" / "labels.json").read_text())["hash"]
    assert config["optimizer"] == "adam" and config["epochs"] == 2  # recipe, overridden by the CLI value
    assert set(metrics) >= {"accuracy", "macro_f1", "log_loss"}
    assert any((out / "tb").iterdir())  # TensorBoard events


def test_finished_run_is_never_silently_overwritten(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=6)
    cfg = dict(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=1, batch_size=8)
    train(TrainConfig(**cfg))
    before = (workdir / "runs" / "custom_cnn" / "fold0" / "oof.npz").read_bytes()
    with pytest.raises(CompError, match="already complete; pass --force"):
        train(TrainConfig(**cfg))
    assert (workdir / "runs" / "custom_cnn" / "fold0" / "oof.npz").read_bytes() == before
    train(TrainConfig(**cfg, force=True, seed=3))
    assert [m["epochs_run"] for m in train(TrainConfig(**{**cfg, "fold": -1}))] == [1]  # fold 0 skipped


def test_lock_refuses_a_second_trainer_and_takes_over_a_dead_one(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=6)
    lock = workdir / "runs" / "custom_cnn" / "fold0" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{os.uname().nodename} {os.getpid()}")  # a live process holds it
    cfg = TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=1)
    with pytest.raises(CompError, match="being trained by another process"):
        train(cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{os.uname().nodename} {dead.pid}")
    train(cfg)
    assert not lock.exists()


def test_resume_after_kill_9(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=40, size=32)
    out = workdir / "runs" / "simple_cnn" / "fold0"
    command = [sys.executable, "-m", "comp", "train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "12",
               "--batch-size", "4", "--seed", "1", "--patience", "0"]
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "history.csv").exists() and len(pd.read_csv(out / "history.csv")) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = pd.read_csv(out / "history.csv")
    assert 2 <= len(done) < 12 and (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    with pytest.raises(CompError, match="unfinished run: --resume"):
        train(TrainConfig(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=12, batch_size=4, patience=0))
    train(TrainConfig(arch="simple_cnn", fold=0, workdir=str(workdir), epochs=12, batch_size=4, patience=0,
                      seed=1, resume=True))  # the run's own seed: another would draw another flip pattern
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == list(range(1, 13))
    kept = history.iloc[: len(done) - 1]  # the epochs before the kill survive unchanged
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), done.iloc[: len(done) - 1].reset_index(drop=True))
    assert (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()


def test_trained_models_write_true_class_names(tmp_path, workdir):
    """The guard with real training: 12 numeric classes, text order != numeric order."""
    classes = [str(i) for i in range(12)]
    facts = prepared_workdir(tmp_path, workdir, folds=2, classes=classes, per_class=16, n_test=36)
    train(TrainConfig(arch="simple_cnn", fold=-1, workdir=str(workdir), epochs=8, batch_size=16, aug="none",
                      tta="none"))
    out = blend(BlendOptions(workdir=str(workdir), name="numeric"))
    written = pd.read_csv(out, dtype=str)
    accuracy = (written.label == pd.Series(facts["test_labels"])).mean()
    assert accuracy >= 0.9, accuracy
    assert {"10", "11"} <= set(written.label)


def test_bad_recipe_values_are_clear_errors(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=6)
    base = dict(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=1)
    for overrides, message in (({"aug": "flip:2"}, "--aug: "), ({"aug": "translate:16"}, "smaller than the 16px"),
                               ({"arch": "nosuch"}, "--arch: unknown"), ({"epochs": 0}, "--epochs 0"),
                               ({"lr": -1.0}, "--lr -1.0")):
        with pytest.raises(CompError, match=message):
            train(TrainConfig(**{**base, **overrides}))
    assert not (workdir / "runs" / "custom_cnn" / "fold0" / "config.json").exists()


def test_resume_refuses_another_recipe_and_force_replaces_only_when_done(tmp_path, workdir):
    from comp.prepare.folds import load_prepared
    from comp.runs import is_complete
    from comp.train.trainer import replacing_dir, train_fold

    prepared_workdir(tmp_path, workdir, per_class=6)
    out = workdir / "runs" / "custom_cnn" / "fold0"
    cfg = dict(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=3, patience=0)

    def stop_after_first_epoch(row):  # raised in epoch 2, after epoch 1's checkpoint
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**cfg), load_prepared(workdir), on_epoch=stop_after_first_epoch)
    with pytest.raises(CompError, match=r"cannot resume with a different recipe.*epochs: 3 -> 5\)"):
        train(TrainConfig(**{**cfg, "epochs": 5}, resume=True))
    train(TrainConfig(**cfg, resume=True))
    assert is_complete(out)
    before = (out / "oof.npz").read_bytes()
    # --force trains beside a finished fold and replaces it only once the new one is written (issue 27, F11):
    # cut short, the old fold stays complete and unchanged; --force --resume continues the replacement
    for flags in ({"force": True}, {"force": True, "resume": True}):
        with pytest.raises(KeyboardInterrupt):
            train_fold(TrainConfig(**{**cfg, "seed": 1}, **flags), load_prepared(workdir),
                       on_epoch=stop_after_first_epoch)
        assert is_complete(out) and (out / "oof.npz").read_bytes() == before
        assert (replacing_dir(out) / "checkpoint.pt").exists()
    train(TrainConfig(**{**cfg, "seed": 1}, force=True, resume=True))
    assert is_complete(out) and (out / "oof.npz").read_bytes() != before
    assert not replacing_dir(out).exists() and not (out / "lock").exists() and not (out / "checkpoint.pt").exists()


def test_resume_compares_keys_older_checkpoints_lack_with_their_old_values(tmp_path):
    """A checkpoint written before `ema_decay` was recorded ran lookahead at 0.95: resuming it
    under a plan of 0.98 is refused, naming both values; the old value, or no config at all, resumes."""
    from comp.train.checkpoint import BEFORE_RECORDED, check_resumable

    before = {"arch": "fastnet_s2d", "ema": True, "lr": 0.25}  # a config from before ema_decay existed
    with pytest.raises(CompError, match=r"ema_decay: 0\.95 -> 0\.98.*values on the left"):
        check_resumable(before, {**before, "ema_decay": 0.98}, tmp_path)
    check_resumable(before, {**before, "ema_decay": BEFORE_RECORDED["ema_decay"]}, tmp_path)
    check_resumable({**before, "ema_decay": 0.98}, {**before, "ema_decay": 0.98}, tmp_path)
    check_resumable({}, {**before, "ema_decay": 0.98}, tmp_path)  # the oldest checkpoints hold no config
    with pytest.raises(CompError, match=r"seed: 1 -> 0"):  # the seed draws altflip's pattern and the shards
        check_resumable({**before, "seed": 1}, {**before, "seed": 0}, tmp_path)


@pytest.mark.parametrize("flags, match", [
    ({"bias_lr_scale": 0.0}, r"--bias-lr-scale 0.0: need a positive factor"),
    ({"label_smoothing": 1.5}, r"--label-smoothing 1.5: need a number from 0 up to"),
    ({"optimizer": "muon", "muon_momentum": 1.0}, r"--muon-momentum 1.0: need a number from 0 up to"),
    ({"weight_decay": -0.1}, r"--weight-decay -0.1: need 0 or a positive number"),
])
def test_recipe_values_out_of_range_are_refused_by_flag(flags, match):
    with pytest.raises(CompError, match=match):
        TrainConfig(arch="fastnet", fold=0, **flags).resolved(n_train=400, img_size=32)


def test_a_batch_larger_than_the_data_is_capped_and_its_lr_rescaled():
    capped = TrainConfig(arch="fastnet", fold=0, batch_size=5000).resolved(n_train=400, img_size=32)
    exact = TrainConfig(arch="fastnet", fold=0, batch_size=400).resolved(n_train=400, img_size=32)
    assert capped.batch_size == 400 and capped.lr == exact.lr and capped.muon_lr == exact.muon_lr
    assert capped.plan["batch_size"] == "--batch-size 5000 capped at the fold's 400 training images"


def test_runs_from_another_split_are_refused(tmp_path, workdir):
    from comp.train.predict import predict_run

    prepared_workdir(tmp_path, workdir, per_class=6)
    train(TrainConfig(arch="custom_cnn", fold=-1, workdir=str(workdir), epochs=1))
    prepare(PrepareOptions(str(tmp_path / "comp"), str(workdir), folds=2, seed=7))  # another split
    with pytest.raises(CompError, match="another fold split"):
        blend(BlendOptions(workdir=str(workdir)))
    with pytest.raises(CompError, match="another fold split"):
        predict_run(workdir, "custom_cnn", "none")


def test_val_every_skips_validation_but_not_the_last_epoch(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=6)
    [metrics] = train(TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=3, val_every=0))
    history = pd.read_csv(workdir / "runs" / "custom_cnn" / "fold0" / "history.csv")
    assert history.val_accuracy.isna().tolist() == [True, True, False]
    assert history.train_loss.notna().all()
    assert metrics["accuracy_no_tta"] == history.val_accuracy.iloc[-1] and metrics["weights_epoch"] == 3
    [metrics] = train(TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=4, val_every=2,
                                  force=True))
    history = pd.read_csv(workdir / "runs" / "custom_cnn" / "fold0" / "history.csv")
    assert history.val_accuracy.isna().tolist() == [True, False, True, False]
    with pytest.raises(CompError, match="--val-every -1"):
        train(TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=1, val_every=-1, force=True))


def test_muon_and_altflip_train_fastnet_and_resume(tmp_path, workdir):
    """The airbench94_muon recipe end to end: Muon state and altflip survive a checkpoint."""
    from comp.prepare.folds import load_prepared
    from comp.train.trainer import train_fold

    prepared_workdir(tmp_path, workdir, per_class=12, size=32)
    cfg = dict(arch="fastnet", fold=0, workdir=str(workdir), epochs=3, batch_size=8, optimizer="muon",
               schedule="linear", aug="altflip,translate:2", ema=False, val_every=1)

    def stop_in_epoch_2(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**cfg), load_prepared(workdir), on_epoch=stop_in_epoch_2)
    [metrics] = train(TrainConfig(**cfg, resume=True))
    config = json.loads((workdir / "runs" / "fastnet" / "fold0" / "config.json").read_text())
    assert (config["optimizer"], config["aug"]) == ("muon", "altflip,translate:2")
    assert config["muon_lr"] == MUON_LR_FLOOR  # the planner rescaled it to the batch (sqrt: 0.015), up to the floor
    assert metrics["epochs_run"] == 3 and np.isfinite(metrics["log_loss"])


def test_weights_keep_the_whitening_their_convs_were_trained_on(tmp_path, workdir):
    """fastnet's whitening is computed from the data only for a net that starts from scratch: with --weights the
    loaded whitening stays (recomputed, its directions' order and signs would not be what conv1 learned on)."""
    import torch

    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    net = create_model("fastnet", num_classes=3, img_size=16)
    torch.nn.init.normal_(net.whiten.weight)  # any whitening but the one this data gives
    torch.save(net.state_dict(), tmp_path / "w.pt")
    train(TrainConfig(arch="fastnet", fold=0, workdir=str(workdir), epochs=1, tta="none",
                      model_kwargs={"weights": str(tmp_path / "w.pt")}))
    saved = torch.load(workdir / "runs" / "fastnet" / "fold0" / "model.pt")["state_dict"]
    torch.testing.assert_close(saved["whiten.weight"], net.whiten.weight.detach())  # frozen, and never recomputed
