"""The recipe planner, --plan, --budget arithmetic and budgeted runs, the one TTA pass."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from test_train import prepared_workdir

import torch

from comp.train.budget import TTA_SHARE, FoldClock, budget_for, fold_budgets, ladder_arch, margin
from comp.cli import main
from comp.prepare.folds import load_prepared
from comp.io import CompError
from comp.train.predict import predict_run
from comp.runs import is_complete
from comp.models.fastnet import FASTNET_RECIPE
from comp.train.recipe import MUON_LR_FLOOR, SCARCE_EMA_DECAY, TRAIN_SHARE, DataShape, arch_ladder, budget_arch, parse_budget, plan
from comp.train.trainer import TrainConfig, show_plan, train, train_fold


def planned(size, n_train, classes, **given):
    return plan(DataShape(size, n_train, classes), given).values


def test_plan_for_cifar_like_data():
    p = plan(DataShape(32, 40_000, 10), {})
    v = p.values
    assert (v["arch"], v["model_kwargs"], v["optimizer"]) == ("fastnet", {}, "muon")
    assert v["batch_size"] == 1000  # 40 steps an epoch instead of the recipe's 20 at batch 2000
    assert v["lr"] == pytest.approx(FASTNET_RECIPE["lr"] / 2)  # a mean loss: linear in the batch
    assert v["muon_lr"] == pytest.approx(0.24 * math.sqrt(0.5))
    assert v["weight_decay"] == FASTNET_RECIPE["weight_decay"] and v["bias_lr_scale"] == FASTNET_RECIPE["bias_lr_scale"]
    assert (v["aug"], v["tta"], v["val_every"], v["epochs"]) == ("altflip,translate:2", "flip+shift", 0, 8)
    assert "40000 images / 40 steps an epoch" in p.reasons["batch_size"]
    assert "nothing reads it" in p.reasons["val_every"]
    assert v["ema"] is False and v["schedule"] == "linear"  # 4,000 images a class: no lookahead, the recipe's decay
    assert v["ema_decay"] == 0.95  # airbench's, for a recipe that turns lookahead on


def test_plan_for_64px_100_classes():
    p = plan(DataShape(64, 12_000, 100), {})
    v = p.values
    assert (v["arch"], v["model_kwargs"]) == ("fastnet_s2d_deep", {"space_to_depth": 2})
    assert v["batch_size"] == 296  # scarce data: the shift scaled with the image and tripled, colour added
    assert v["aug"] == "altflip,translate:12,contrast:0.2,jitter:0.1"
    assert p.reasons["aug"] == "fastnet_s2d_deep's recipe, shift scaled to 64px, x3 and colour for 120 images a class"
    assert v["muon_lr"] == MUON_LR_FLOOR  # the sqrt rule's 0.092, raised to the floor
    assert p.reasons["muon_lr"] == "rescaled from 0.24 at batch 2000, not below 0.15"
    assert v["ema"] is True and p.reasons["ema"] == "lookahead for 120 images a class"
    assert v["ema_decay"] == SCARCE_EMA_DECAY and p.reasons["ema_decay"] == "a longer average for 120 images a class"
    assert plan(DataShape(64, 12_000, 100), {"ema_decay": 0.9}).values["ema_decay"] == 0.9  # --ema-decay wins
    assert v["schedule"] == "cosine" and p.reasons["schedule"] == "cosine decay for 120 images a class"
    assert plan(DataShape(64, 12_000, 100), {"ema": False}).values["ema"] is False  # --ema off wins
    assert plan(DataShape(64, 12_000, 100), {"schedule": "linear"}).values["schedule"] == "linear"
    for untested in (plan(DataShape(64, 12_000, 100), {}, arch="simple_cnn"),  # Adam
                     plan(DataShape(64, 12_000, 100), {"optimizer": "adamw"})):
        assert untested.values["ema"] is False and untested.values["schedule"] != "cosine"
        assert untested.values["ema_decay"] == 0.95


def test_plan_for_12_classes_of_200_images_and_for_128px():
    small = planned(32, 1_920, 12)  # 12 x 200 images, 5 folds: 1,920 to train on
    assert small["arch"] == "fastnet" and small["batch_size"] == 48
    assert small["aug"] == "altflip,translate:6,contrast:0.2,jitter:0.1"  # 160 images a class: scarce
    assert small["ema"] is True
    tiny = planned(32, 300, 3)
    assert tiny["batch_size"] == 16  # never below MIN_BATCH
    large = planned(128, 20_000, 5)
    assert (large["arch"], large["model_kwargs"]) == ("fastnet_s2d_deep", {"space_to_depth": 4})  # 32px
    assert large["aug"] == "altflip,translate:8"


def test_flags_win_and_lr_follows_a_given_batch():
    v = planned(32, 40_000, 10, batch_size=500)
    assert v["batch_size"] == 500 and v["lr"] == pytest.approx(FASTNET_RECIPE["lr"] / 4)
    p = plan(DataShape(32, 40_000, 10), {"batch_size": 500, "lr": 0.3, "aug": "flip", "val_every": 2})
    assert (p.values["lr"], p.values["aug"], p.values["val_every"]) == (0.3, "flip", 2)
    assert p.reasons["lr"] == "--lr" and p.reasons["val_every"] == "--val-every"
    # a recipe that reads the held-out fold keeps validating every epoch
    assert plan(DataShape(32, 1_000, 10), {}, arch="custom_cnn").values["val_every"] == 1
    adam = plan(DataShape(32, 40_000, 10), {"batch_size": 32}, arch="simple_cnn").values
    assert adam["lr"] == pytest.approx(1e-3 * math.sqrt(32 / 64))  # Adam: sqrt


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("90s", 90), ("1.5h", 5400), ("1h30m", 5400), ("2", 120)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0", "5x", "m"])
def test_bad_budget_is_a_clear_error(text):
    with pytest.raises(CompError, match="--budget .*expected a duration such as 15m"):
        parse_budget(text)


def test_budget_arithmetic():
    clock = FoldClock(100.0, started=0.0)  # the deadline keeps a margin: 5 s here (SAFETY_FLOOR), 95 s
    assert clock.fit_steps(step=4, seconds_per_step=1.0, predict_seconds=10.0, now=7.0) == 4 + 78
    assert FoldClock(1000.0, 0.0).deadline == 970.0 and FoldClock(20.0, 0.0).deadline == 18.0  # 3%, a tenth
    for left in (10.0, 100.0, 300.0):  # the budget a "too small" error asks for leaves just what was needed
        assert budget_for(left) - margin(budget_for(left)) == pytest.approx(left)
    assert clock.fit_steps(step=50, seconds_per_step=1.0, predict_seconds=10.0, now=95.0) == 50  # overrun: stop
    # at 1 ms an image and view (x1.15 overhead) a fifth of 100 s holds 17,391 image-views
    assert TTA_SHARE == 0.2
    assert clock.choose_tta("flip+shift", 2_000, 1e-3) == "flip+shift"  # 12,000
    assert clock.choose_tta("flip+shift", 6_000, 1e-3) == "flip"  # 36,000 do not fit, 12,000 do
    assert clock.predict_seconds(6_000, "flip", 1e-3) <= TTA_SHARE * 100 < clock.predict_seconds(6_000, "flip+shift", 1e-3)
    assert clock.choose_tta("flip+shift", 40_000, 1e-3) == "none"  # the fold must be predicted at least once
    assert clock.choose_tta("flip", 100, 1e-3) == "flip"  # never wider than asked
    # all folds together: each gets an equal share of what is left
    assert fold_budgets(500.0, started=0.0, folds_left=5, now=0.0) == 100.0
    assert fold_budgets(500.0, started=0.0, folds_left=2, now=300.0) == 100.0
    assert fold_budgets(500.0, started=0.0, folds_left=1, now=600.0) == 0.0


COSTS = {"fastnet": 1.0, "fastnet_l": 2.55, "fastnet_xl": 3.83}  # multiply-adds over fastnet's, at 32px


def test_the_budget_picks_the_largest_net_whose_recipe_epochs_fit():
    cifar = DataShape(32, 40_000, 10)
    per_image = 1 / 800  # seconds: fastnet on 2 CPU cores
    epoch = 40_000 * per_image  # 50 s
    arch, why = budget_arch(cifar, 10 * epoch, per_image, COSTS)  # 10E: 7.5 epochs of fastnet fit
    assert arch == "fastnet" and "8 epochs fit in 75% of the budget at 800 img/s (measured here)" in why
    assert "fastnet_l would fit 2.9 of the 15 epochs it needs" in why
    arch, why = budget_arch(cifar, 15 * 2.55 * epoch / TRAIN_SHARE, per_image, COSTS)
    assert arch == "fastnet_l" and "15 epochs fit" in why and "(2.5x fastnet's multiply-adds)" in why
    assert "fastnet_xl would fit 10.0 of the 45 epochs it needs" in why
    gpu = 1 / 200_000  # an H100: 45 epochs of the 96% net in a minute and a half
    assert budget_arch(cifar, 90, gpu, COSTS)[0] == "fastnet_xl"
    assert budget_arch(cifar, 30, gpu, COSTS)[0] == "fastnet_l"


def test_scarce_data_climbs_only_to_the_wide_muon_net_and_only_once_it_fits_40_epochs():
    tiny = DataShape(64, 12_000, 100)  # 120 images a class
    names, kwargs = arch_ladder(tiny)
    assert names == ("fastnet_s2d_deep", "fastnet_l_muon") and kwargs == {"space_to_depth": 2}
    assert plan(tiny, {}, "fastnet_l_muon", kwargs).values["optimizer"] == "muon"
    costs = {"fastnet_s2d_deep": 1.0, "fastnet_l_muon": 2.1}  # the multiply-adds at 64px, 64/192/384 against 128/384/384
    per_image = 1 / 400  # the CPU at 12E (1037 s): the wide net fits 12 epochs, not 40
    arch, why = budget_arch(tiny, 1037, per_image, costs)
    assert arch == "fastnet_s2d_deep" and "fastnet_l_muon would fit 12.3 of the 40 epochs it needs" in why
    arch, why = budget_arch(tiny, 60, 1 / 41_000, costs)  # an H200, a minute a fold: 73 epochs fit
    assert arch == "fastnet_l_muon" and "73 epochs fit" in why
    assert arch_ladder(DataShape(32, 40_000, 10))[0] == ("fastnet", "fastnet_l", "fastnet_xl")


def test_ladder_arch_times_this_machine(tmp_path):
    cpu = torch.device("cpu")
    shape = DataShape(16, 3_000, 3)  # 1,000 images a class: the whole ladder
    assert ladder_arch(shape, 1e-3, 16, cpu, "fp32")[:2] == ("fastnet", {})  # nothing fits: the smallest
    arch, kwargs, why = ladder_arch(shape, 1e6, 16, cpu, "fp32")
    assert (arch, kwargs) == ("fastnet_xl", {}) and "img/s" in why
    big = DataShape(64, 3_000, 3)  # 64px: the s2d fold goes with every net of the ladder
    assert ladder_arch(big, 1e-3, 16, cpu, "fp32")[:2] == ("fastnet_s2d_deep", {"space_to_depth": 2})
    assert ladder_arch(big, 1e6, 16, cpu, "fp32")[:2] == ("fastnet_xl", {"space_to_depth": 2})
    assert ladder_arch(DataShape(64, 60, 3), 1e6, 16, cpu, "fp32")[:2] == ("fastnet_l_muon", {"space_to_depth": 2})


def test_plan_flag_prints_the_table_and_trains_nothing(tmp_path, workdir, capsys):
    prepared_workdir(tmp_path, workdir, per_class=12, size=32)
    assert main(["train", "--plan", "--budget", "15m"]) == 0  # 15 minutes for 18 images: the wide Muon net
    out = capsys.readouterr().out
    assert "plan for fastnet_l_muon fold 0: 18 training images of 32px, 3 classes" in out
    assert "epochs fit in 75% of the budget" in out and "(2.6x fastnet's multiply-adds)" in out
    assert "batch_size       16" in out and "epochs           fitted                     fitted to --budget 15m" in out and "val_every        0" in out
    assert main(["train", "--plan", "--budget", "15m", "--arch", "fastnet"]) == 0
    assert "plan for fastnet fold 0" in capsys.readouterr().out
    assert main(["train", "--plan", "--fold", "all", "--budget", "15m", "--arch", "fastnet"]) == 0
    assert "budget 7.5m" in capsys.readouterr().out  # fold 0's share of the 2 folds' budget
    assert not (workdir / "runs").exists()
    assert main(["train", "--plan", "--budget", "15m", "--epochs", "3"]) == 2
    assert "--epochs and --budget both set the length of training" in capsys.readouterr().err
    assert main(["train", "--plan", "--arch", "fastnet", "--ema", "on", "--ema-decay", "0.9"]) == 0
    assert "ema_decay        0.9                        --ema-decay" in capsys.readouterr().out
    assert main(["train", "--plan", "--arch", "fastnet", "--ema", "off"]) == 0
    assert "ema_decay" not in capsys.readouterr().out  # no lookahead: nothing to decay
    assert main(["train", "--plan", "--ema-decay", "1"]) == 2
    assert "--ema-decay 1.0: need a number between 0 and 1" in capsys.readouterr().err


class FakeClock:
    """time.monotonic advancing a fixed tick a call: a budgeted run plans the same on any machine."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_budgeted_run_fits_the_clock_and_resumes_its_plan(tmp_path, workdir, monkeypatch):
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    clock = FakeClock(0.05)
    monkeypatch.setattr(time, "monotonic", clock)
    cfg = dict(arch="custom_cnn", fold=0, workdir=str(workdir), batch_size=8, budget=10.0, val_every=1, tta="flip",
               patience=0)

    def stop_in_epoch_3(row):  # 2 steps an epoch: the plan is fixed at step 4, saved after epoch 2
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**cfg), load_prepared(workdir), on_epoch=stop_in_epoch_3)
    out = workdir / "runs" / "custom_cnn" / "fold0"
    planned_steps = json.loads((out / "config.json").read_text())["total_steps"]
    assert planned_steps not in (4, 60)  # fitted to the budget: neither the provisional steps nor 30 epochs
    [metrics] = train(TrainConfig(**cfg, resume=True))
    config = json.loads((out / "config.json").read_text())
    assert metrics["steps"] == config["total_steps"] == planned_steps  # the resumed run kept its plan
    assert config["budget"] == 10.0 and config["epochs"] == pytest.approx(planned_steps / 2, abs=1e-3)

    started = clock.now
    [metrics] = train(TrainConfig(**{**cfg, "force": True}))
    assert clock.now - started <= 10.0  # on the run's own clock the budget holds
    assert metrics["steps"] > 4 and metrics["budget"] == 10.0


def test_a_resumed_budgeted_run_keeps_its_net(tmp_path, workdir, monkeypatch, capsys):
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    cfg = dict(arch=None, fold=0, workdir=str(workdir), budget=10.0, tta="none", val_every=1)

    def stop_in_epoch_6(row):  # 1 step an epoch: the plan is fixed at step 4, saved after epoch 5
        if row["epoch"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**cfg), load_prepared(workdir), on_epoch=stop_in_epoch_6)
    [run] = (workdir / "runs").iterdir()
    started = json.loads((run / "fold0" / "config.json").read_text())
    assert "epochs fit in 75% of the budget" in started["plan"]["arch"]

    def must_not_time(*args):
        raise AssertionError("a resumed run must not choose its net again")

    monkeypatch.setattr("comp.train.budget.ladder_arch", must_not_time)
    [metrics] = train(TrainConfig(**{**cfg, "budget": None}, resume=True))  # --resume alone finds the run too
    config = json.loads((run / "fold0" / "config.json").read_text())
    assert config["arch"] == started["arch"] and config["plan"]["arch"] == "the resumed run's"
    assert metrics["steps"] == config["total_steps"] == started["total_steps"] and config["budget"] == 10.0
    assert "--resume without --budget: the folds still to train get 10s each" in capsys.readouterr().out


def test_a_budget_that_cannot_fit_one_epoch_is_an_error(tmp_path, workdir, monkeypatch):
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(1.0))  # every step seconds long: 10 s hold 4 of an epoch's 9
    with pytest.raises(CompError, match=r"a budget of 10s for this fold cannot fit one epoch: an epoch takes about"):
        train(TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), batch_size=2, budget=10.0, tta="none"))
    assert not is_complete(workdir / "runs" / "custom_cnn" / "fold0")


def test_the_planner_fits_tiny_data():
    assert plan(DataShape(32, 8, 2), {}).values["batch_size"] == 8  # never above the images there are
    assert plan(DataShape(32, 8, 2), {}).reasons["batch_size"] == "all 8 images in one step"
    assert plan(DataShape(32, 96, 2), {}).reasons["batch_size"] == "the smallest batch: 96 images give 6 steps an epoch"
    with pytest.raises(CompError, match="fastnet needs images of at least 9px .* these are 8px: prepare them larger"):
        plan(DataShape(8, 1000, 10), {})
    assert plan(DataShape(8, 1000, 10), {}, arch="simple_cnn").values["arch"] == "simple_cnn"


def test_resume_continues_the_unfinished_run_not_a_complete_one(tmp_path, workdir, monkeypatch):
    """Two budgeted runs of fold 0 under ladder names: `fastnet` complete, then `fastnet_l` (a larger budget's
    net) interrupted. `--resume` continues fastnet_l, whose checkpoint it finds, though fastnet comes first."""
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    cfg = dict(arch=None, fold=0, workdir=str(workdir), budget=10.0, tta="none", val_every=1)
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet", {}, "the small budget's net"))
    train(TrainConfig(**cfg))
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet_l", {}, "a larger budget's net"))

    def stop_in_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(TrainConfig(**{**cfg, "force": True}), load_prepared(workdir), on_epoch=stop_in_epoch_3)
    out = workdir / "runs" / "fastnet_l" / "fold0"
    assert (out / "checkpoint.pt").exists() and is_complete(workdir / "runs" / "fastnet" / "fold0")
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: pytest.fail("a resumed run must not choose again"))
    [metrics] = train(TrainConfig(**cfg, resume=True))
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "fastnet_l" and config["plan"]["arch"] == "the resumed run's" and is_complete(out)
    assert metrics["steps"] == config["total_steps"]


def test_a_hand_set_budget_run_is_not_the_ladders(tmp_path, workdir, monkeypatch, capsys):
    """`--arch fastnet --fold 0 --budget` is named fastnet, as the ladder's net would be. A later `--fold all
    --budget` without --arch plans its own net rather than continuing that run; where it chooses fastnet too, it
    refuses to adopt the hand-set fold; a complete fold skipped is named with the recipe values it differs in."""
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    cfg = dict(fold=0, workdir=str(workdir), budget=10.0, tta="none", val_every=1)
    train(TrainConfig(arch="fastnet", **cfg))
    assert is_complete(workdir / "runs" / "fastnet" / "fold0")
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet_l", {}, "a larger budget's net"))
    assert show_plan(TrainConfig(**{**cfg, "arch": None, "fold": -1, "budget": 40.0})).arch == "fastnet_l"

    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet", {}, "the ladder's net"))
    with pytest.raises(CompError, match="set by hand, and the budget chose that net too: pass --name"):
        train(TrainConfig(**{**cfg, "arch": None, "fold": -1, "budget": 40.0}))
    with pytest.raises(CompError, match="used up before fold 1"):  # by hand: fold 0 skipped, nothing left for fold 1
        train(TrainConfig(**{**cfg, "arch": "fastnet", "fold": -1, "budget": 1e-3, "tta": "flip"}))
    out = capsys.readouterr().out
    assert "fold 0: already complete in" in out and "trained with tta='none' (asked 'flip'), skipping (--force" in out


def test_fold_all_budget_plans_afresh_beside_a_single_fold_budget_run(tmp_path, workdir, monkeypatch):
    """`--fold 0 --budget 10s` chose a net for 10 s; a later `--fold all --budget 20s` (10 s a fold here, but
    nothing says so in general) times its own choice rather than adopting that run as if resuming it."""
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    cfg = dict(arch=None, workdir=str(workdir), tta="none", val_every=1)
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet_l", {}, "one fold's net"))
    train(TrainConfig(**cfg, fold=0, budget=10.0))
    assert is_complete(workdir / "runs" / "fastnet_l" / "fold0")
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet", {}, "the shares' net"))
    assert show_plan(TrainConfig(**cfg, fold=-1, budget=40.0)).arch == "fastnet"


def test_resume_without_budget_gives_the_folds_not_started_the_runs_share(tmp_path, workdir, monkeypatch, capsys):
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    monkeypatch.setattr("comp.train.budget.ladder_arch", lambda *a: ("fastnet", {}, "the shares' net"))
    cfg = dict(arch=None, workdir=str(workdir), tta="none", val_every=1, batch_size=4)

    def stop_in_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # fold 0 of a `--fold all --budget 20s`, stopped
        train_fold(TrainConfig(**cfg, fold=0, budget=10.0, budget_all=20.0), load_prepared(workdir),
                   on_epoch=stop_in_epoch_3)
    train(TrainConfig(**cfg, fold=-1, resume=True))  # no --budget
    assert "--resume without --budget: the folds still to train get 10s each" in capsys.readouterr().out
    fold1 = json.loads((workdir / "runs" / "fastnet" / "fold1" / "config.json").read_text())
    assert fold1["budget"] and fold1["plan"]["epochs"].startswith("fitted to --budget")  # not the recipe's length
    with pytest.raises(KeyboardInterrupt):  # a different --budget on resume: the plan and its budget stay
        train_fold(TrainConfig(**cfg, fold=0, budget=10.0, force=True), load_prepared(workdir), on_epoch=stop_in_epoch_3)
    train(TrainConfig(**cfg, fold=0, budget=30.0, resume=True))
    assert "the run keeps the plan its budget of 10s made" in capsys.readouterr().out
    assert json.loads((workdir / "runs" / "fastnet" / "fold0" / "config.json").read_text())["budget"] == 10.0


def test_one_prediction_pass_keeps_every_view(tmp_path, workdir):
    prepared_workdir(tmp_path, workdir, per_class=12, size=32)
    [metrics] = train(TrainConfig(arch="fastnet", fold=0, workdir=str(workdir), epochs=2))
    out = workdir / "runs" / "fastnet" / "fold0"
    oof = np.load(out / "oof.npz")
    assert oof["view_logits"].shape == (6,) + oof["logits"].shape  # flip+shift: six views
    history = pd.read_csv(out / "history.csv")
    assert history.val_accuracy.isna().tolist() == [True, False]  # no validation pass; the last row is view 0's
    plain = (oof["view_logits"][0].argmax(1) == oof["labels"]).mean()
    assert metrics["accuracy_no_tta"] == pytest.approx(plain) == pytest.approx(history.val_accuracy.iloc[-1])
    [from_views] = predict_run(str(workdir), "fastnet", "none")
    assert (workdir / "runs" / "fastnet_tta-none" / "fold0" / "model.pt").samefile(out / "model.pt")  # exportable
    stored = np.load(workdir / "runs" / "fastnet_tta-none" / "fold0" / "oof.npz")["logits"]
    np.testing.assert_allclose(stored, oof["view_logits"][0])
    for name in ("oof.npz", "test.npz"):  # without the views the model predicts again: the same logits
        kept = dict(np.load(out / name))
        kept.pop("view_logits")
        np.savez(out / name, **kept)
    predict_run(str(workdir), "fastnet", "none", new_name="again")
    again = np.load(workdir / "runs" / "again" / "fold0" / "oof.npz")["logits"]
    np.testing.assert_allclose(again, stored, rtol=0.05, atol=0.05)  # bf16 on both paths
    assert from_views["accuracy"] == pytest.approx(plain)


def test_fold_all_again_after_the_budget_ran_out_keeps_the_started_run(tmp_path, workdir, monkeypatch):
    """The budget error says to run `--fold all --budget` again: that finishes the same run with the same net,
    whatever the smaller budget would now choose; a run whose folds are all complete plans afresh."""
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)
    monkeypatch.setattr(time, "monotonic", FakeClock(0.05))
    cfg = dict(arch=None, fold=0, workdir=str(workdir), budget=10.0, tta="none")
    [first] = train(TrainConfig(**cfg, budget_all=20.0))  # fold 0 of a `--fold all --budget 20s` that ran out
    [run] = (workdir / "runs").iterdir()
    started = json.loads((run / "fold0" / "config.json").read_text())
    monkeypatch.setattr("comp.train.budget.ladder_arch",
                        lambda *a: ("custom_cnn", {}, "another net, as a smaller budget could choose"))
    results = train(TrainConfig(**{**cfg, "fold": -1, "budget": 20.0}))
    assert len(results) == load_prepared(workdir).n_folds - 1  # fold 0 kept, the others trained
    assert [p.name for p in (workdir / "runs").iterdir()] == [run.name]
    for k in range(1, load_prepared(workdir).n_folds):
        config = json.loads((run / f"fold{k}" / "config.json").read_text())
        assert config["arch"] == started["arch"]
        assert config["plan"]["arch"] == "the run's, chosen when its --fold all --budget started"
    train(TrainConfig(**{**cfg, "fold": -1, "budget": 20.0}))  # every fold complete: the ladder chooses again
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == sorted([run.name, "custom_cnn"])
