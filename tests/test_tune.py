"""comp tune (shared studies, pruning, search-space files, --params best) and comp grid."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import make_competition

import comp.train.trainer
from comp.train.augment import parse_aug
from comp.cli import build_parser, main
from comp.train.config import config_from_args
from comp.prepare.folds import PrepareOptions, load_prepared, prepare, split_fingerprint
from comp.tune.grid import grid
from comp.io import CompError
from comp.train.recipe import DataShape, plan
from comp.runs import fold_dir, is_complete
from comp.train.trainer import TrainConfig, train_fold
from comp.train.tuned import tuned_fields
from comp.tune.search import progress_steps
from comp.train.params import build_space, load_space_file, params_to_fields, tuned_aug
from comp.tune.study import TrialSeededSampler, open_study

# fp32: CPU bf16 rounding would make the pruning test depend on the machine's kernels
FAST = ["--precision", "fp32"]



def _train_config(args, fold):
    """The TrainConfig `comp train` builds from these parsed flags for this fold."""
    return config_from_args(args, fold, started=0.0)

@pytest.fixture
def prepared(tmp_path, workdir):
    make_competition(tmp_path / "data", "cifar", per_class=10, size=16)
    prepare(PrepareOptions(str(tmp_path / "data"), str(workdir), folds=3))
    return workdir


def test_two_workers_share_one_study(prepared):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, "-m", "comp", "--workdir", str(prepared), "tune", "--arch", "simple_cnn",
               "--trials", "2", "--epochs", "2", *FAST]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
        assert "study simple_cnn-fold0" in output and "best" in output
    study = optuna.load_study(study_name="simple_cnn-fold0", storage=f"sqlite:///{prepared / 'tune.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert sorted(by_worker) == [2, 2]  # two processes, two trials each
    split = split_fingerprint(load_prepared(prepared).folds)
    assert study.user_attrs == {"arch": "simple_cnn", "fold": 0, "image_size": 16, "folds_fingerprint": split}
    for t in trials:
        assert t.user_attrs["params"]["epochs"] == 2
        run = fold_dir(prepared, f"tune/simple_cnn-fold0/trial{t.number}", 0)
        # scored on the held-out fold with no TTA; no test logits, weights or checkpoint left behind
        assert json.loads((run / "metrics.json").read_text())["tta"] == "none" and (run / "oof.npz").exists()
        assert not any((run / name).exists() for name in ("test.npz", "model.pt", "checkpoint.pt"))
    out = prepared / "tune" / "simple_cnn-fold0"
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == study.best_value and best["trial"] == study.best_trial.number
    assert (best["arch"], best["fold"], best["image_size"], best["folds_fingerprint"]) == ("simple_cnn", 0, 16, split)
    assert (out / "history.png").stat().st_size > 0 and (out / "importance.png").stat().st_size > 0


SPACE = """\
lr: {type: categorical, choices: [0.003, 1.0e-7]}   # 1e-7: the model never leaves its init
batch_size: 4
weight_decay: 0.0
label_smoothing: 0.0
dropout: 0.0
translate: 0
cutout: 0
epochs: 3
"""


def test_pruning_stops_bad_trials(prepared, capsys):
    (prepared / "space.yaml").write_text(SPACE)
    # sampler seed 3 draws lr 0.003 for trial 0 (then 1e-7, 1e-7, 0.003, 0.003): a good trial completes first
    rc = main(["tune", "--arch", "simple_cnn", "--trials", "5", "--space", "space.yaml", "--sampler-seed", "3",
               "--startup-trials", "1", "--warmup-epochs", "0", "--study", "prune", *FAST])
    assert rc == 0
    assert "PRUNED" in capsys.readouterr().out
    study = open_study("prune", None, prepared)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    for t in pruned:  # stopped inside its first epochs, before writing metrics.json
        assert t.params["lr"] == 1e-7
        assert t.user_attrs["epochs_run"] < 3 and max(t.intermediate_values) < 100  # steps: percent of the epochs
        assert (prepared / t.user_attrs["run"] / "config.json").exists()
        assert not is_complete(prepared / t.user_attrs["run"])
        assert not (prepared / t.user_attrs["run"] / "checkpoint.pt").exists()  # a pruned trial never resumes
    for t in complete:
        assert t.user_attrs["epochs_run"] == 3 and sorted(t.intermediate_values) == list(range(5, 101, 5))
    assert max(t.value for t in complete) > max(t.intermediate_values[30] for t in pruned)  # 30%: after epoch 1
    best = json.loads((prepared / "tune" / "prune" / "best.json").read_text())
    assert best["params"]["lr"] == 0.003 and best["params"]["epochs"] == 3

    # `comp train --params-from prune` starts from the winner; a flag given explicitly still wins
    cfg = _train_config(build_parser().parse_args(["train", "--arch", "simple_cnn", "--params-from", "prune"]), 0)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (0.003, 4, 3)
    assert cfg.aug == "flip"  # the plan's aug, its shift tuned to 0 (the scarce-data colour is fastnet's only)
    assert cfg.model_kwargs == {"dropout": 0.0} and cfg.name == "simple_cnn_tuned"

    # the study is bound to its arch and fold: another worker may not join it with others
    capsys.readouterr()
    assert main(["tune", "--arch", "custom_cnn", "--trials", "1", "--study", "prune", *FAST]) == 2
    assert "--arch: simple_cnn in the study, custom_cnn here" in capsys.readouterr().err
    assert main(["tune", "--arch", "simple_cnn", "--fold", "1", "--trials", "1", "--study", "prune", *FAST]) == 2
    assert "--fold: 0 in the study, 1 here" in capsys.readouterr().err
    assert len(open_study("prune", None, prepared).trials) == 5  # nothing trained


def test_params_best_maps_onto_the_config(workdir):
    best = {"study": "simple_cnn-fold0", "arch": "simple_cnn", "fold": 0, "trial": 7, "value": 0.9,
            "params": {"lr": 0.002, "batch_size": 32, "weight_decay": 1e-4, "label_smoothing": 0.05,
                       "dropout": 0.3, "translate": 3, "cutout": 4, "epochs": 12}}
    (workdir / "tune" / "simple_cnn-fold0").mkdir(parents=True)
    (workdir / "tune" / "simple_cnn-fold0" / "best.json").write_text(json.dumps(best))
    args = build_parser().parse_args(["train", "--arch", "simple_cnn", "--params", "best", "--lr", "0.01"])
    cfg = _train_config(args, 0)
    assert cfg.lr == 0.01  # the command line wins
    assert (cfg.batch_size, cfg.weight_decay, cfg.label_smoothing, cfg.epochs) == (32, 1e-4, 0.05, 12)
    assert cfg.model_kwargs == {"dropout": 0.3}
    assert cfg.aug == "flip,translate:3,cutout:4"  # simple_cnn's flip,crop:4 with the tuned shift
    resolved = cfg.resolved(n_train=20, img_size=16)
    assert (resolved.optimizer, resolved.schedule) == ("adam", "plateau")  # untuned: the recipe's
    # --plan says where each value came from: a tuned one is no command-line flag
    tuned = "--params (study simple_cnn-fold0, trial 7)"
    assert (resolved.plan["lr"], resolved.plan["weight_decay"]) == ("--lr", tuned)
    assert resolved.plan["batch_size"] == f"{tuned} 32 capped at the fold's 20 training images"
    assert tuned in resolved.plan_table()
    assert cfg.name == "simple_cnn_tuned"  # not the untuned run's folds (runs/simple_cnn)
    assert cfg.tuned_on["trial"] == 7 and cfg.tuned_on["params"] == best["params"]
    with pytest.raises(CompError, match="tuned for --arch simple_cnn, not custom_cnn"):
        _train_config(build_parser().parse_args(["train", "--arch", "custom_cnn", "--params",
                                                 "tune/simple_cnn-fold0/best.json"]), 0)
    with pytest.raises(CompError, match=r"tune/nope/best.json not found: run `comp tune"):
        _train_config(build_parser().parse_args(["train", "--arch", "simple_cnn", "--params-from", "nope"]), 0)


@pytest.mark.parametrize("text, message", [
    ("lr: {type: float, low: 0.1}\n", r"lr.high: missing"),
    ("lr: {type: float, low: 0, high: 1, log: true}\n", r"lr.low: 0 is not valid: expected a number > 0"),
    ("lrr: {type: float, low: 0.1, high: 1}\n", r"lrr: unknown parameter; tunable: lr, batch_size"),
    ("batch_size: {type: categorical, choices: []}\n", r"batch_size.choices: expected a non-empty list"),
    ("batch_size: {type: categorical, choices: [32, -1]}\n", r"batch_size.choices: -1 is not valid"),
    ("dropout: {type: float, low: 0.5, high: 0.1}\n", r"dropout: low 0.5 is above high 0.1"),
    ("epochs: {type: int, low: 1, high: 5, choices: [1]}\n", r"epochs: unknown key\(s\) choices for type int"),
    ("translate: {type: gaussian}\n", r"translate.type: 'gaussian'; expected float, int or categorical"),
    ("aug: flip,spin:3\n", r"aug: unknown augmentation 'spin:3'"),
    ("- lr\n", r"expected a mapping of parameter"),
])
def test_space_file_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(CompError, match=message):
        load_space_file(path)


def test_space_file_toml_and_defaults(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('optimizer = {type = "categorical", choices = ["adam", "adamw"]}\n'
                    'lr = {type = "float", low = 1e-4, high = 1e-2, log = true}\nepochs = 3\n')
    shape = DataShape(16, 100_000, 10)  # enough images that the planner keeps the recipe's batch
    space = build_space("simple_cnn", shape, path)
    assert space["lr"].log and (space["lr"].low, space["lr"].high) == (1e-4, 1e-2)
    assert space["optimizer"].choices == ("adam", "adamw") and space["epochs"].value == 3
    assert "dropout" in space and space["batch_size"].choices == (32, 64, 128)  # defaults kept
    assert "dropout" not in build_space("fastnet", DataShape(32, 100_000, 10))  # FastNet takes no dropout argument
    (tmp_path / "bad.toml").write_text("dropout = 0.2\n")
    with pytest.raises(CompError, match="dropout: fastnet has no dropout argument"):
        build_space("fastnet", shape, tmp_path / "bad.toml")
    assert tuned_aug("flip,crop:4,cutout:8", 0, 0) == "flip"
    (tmp_path / "big.yaml").write_text("translate: {type: int, low: 0, high: 16}\n")
    with pytest.raises(CompError, match="translate: up to 16 px, but the images are 16 px: keep it <= 15"):
        build_space("simple_cnn", shape, tmp_path / "big.yaml")
    # an aug string is checked against the images before any trial trains (augment.py would fail each one)
    (tmp_path / "aug.yaml").write_text("aug: {type: categorical, choices: ['flip', 'flip,cutout:20']}\n")
    with pytest.raises(CompError, match=r"aug 'flip,cutout:20': cutout:20 must be smaller than the 16px images"):
        build_space("simple_cnn", shape, tmp_path / "aug.yaml")


def test_journal_storage(tmp_path):
    study = open_study("s", f"journal:{tmp_path / 'j' / 'tune.log'}", tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = open_study("s", f"journal:{tmp_path / 'j' / 'tune.log'}", tmp_path)
    assert len(again.trials) == 2


def test_grid_skips_complete_and_busy_runs(prepared, capsys):
    assert main(["train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "1", *FAST]) == 0
    busy = fold_dir(prepared, "simple_cnn", 1)
    busy.mkdir(parents=True)
    (busy / "lock").write_text(f"{socket.gethostname()} {os.getpid()}")  # a live trainer: this process
    rows = grid("simple_cnn", "0,1,2", str(prepared), epochs=1, precision="fp32")
    assert [r["status"] for r in rows] == ["skipped: complete", "skipped: busy", "trained"]
    out = capsys.readouterr().out
    assert "1 skipped: complete, 1 skipped: busy, 1 trained" in out
    assert is_complete(fold_dir(prepared, "simple_cnn", 2)) and not is_complete(busy)
    with pytest.raises(CompError, match=r"--folds '0,7': folds.csv has folds 0..2"):
        grid("simple_cnn", "0,7", str(prepared))
    [row] = grid("simple_cnn", "0", str(prepared), epochs=3, precision="fp32")  # fold 0 trained 1 epoch
    assert row["status"] == "skipped: complete, trained with epochs=1.0 (asked 3); --force in comp train to redo it"


def test_default_space_is_centred_on_the_plan():
    # digits-like: 1437 images of 16px; fastnet's recipe trains at batch 2000, the plan at 32
    shape = DataShape(16, 1437, 10)
    planned = plan(shape, {}, "fastnet").values
    space = build_space("fastnet", shape)
    assert planned["batch_size"] in space["batch_size"].choices
    assert max(space["batch_size"].choices) <= 2 * planned["batch_size"] < 2000
    for name in ("lr", "muon_lr"):  # around the values rescaled to the planned batch
        assert space[name].low < planned[name] < space[name].high
    shift = parse_aug(planned["aug"]).ops["translate"]  # scaled to 16px, tripled for scarce data
    assert space["translate"].low <= shift <= space["translate"].high and space["translate"].high > 2
    assert space["aug"].value == planned["aug"]  # translate/cutout rewrite the plan's aug, not the raw recipe's
    fields = params_to_fields("fastnet", {"aug": planned["aug"], "translate": shift + 1, "cutout": 0})
    assert fields["aug"] == planned["aug"].replace(f"translate:{shift}", f"translate:{shift + 1}")
    # a batch the space file fixes is planned with: the lr range is centred on the lr for that batch
    lr64 = plan(shape, {"batch_size": 64}, "fastnet").values["lr"]
    space = build_space("fastnet", shape, fixed={"batch_size": 64})
    assert space["batch_size"].value == 64 and space["lr"].low < lr64 < space["lr"].high
    assert lr64 != planned["lr"]


def test_progress_is_a_share_of_each_trials_epochs():
    assert progress_steps(1, 4, 0) == [5, 10, 15, 20, 25]
    assert progress_steps(2, 4, 25) == [30, 35, 40, 45, 50]
    assert progress_steps(4, 8, 45) == [50]  # epoch 4 of 8 meets epoch 2 of 4 at step 50
    assert progress_steps(1, 40, 0) == [] and progress_steps(2, 40, 0) == [5]
    assert progress_steps(10, 9.9, 90) == [95, 100]  # a fractional last epoch ends at 100


def test_sampler_seed_draws_new_trials_on_a_resumed_study(tmp_path):
    def xs(study):
        return [t.params["x"] for t in sorted(study.trials, key=lambda t: t.number)]

    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(study_name="s", storage=storage, sampler=TrialSeededSampler(3))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    resumed = optuna.load_study(study_name="s", storage=storage, sampler=TrialSeededSampler(3))  # a new worker
    resumed.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    first, again = xs(resumed)[:3], xs(resumed)[3:]
    assert not set(first) & set(again)  # seeding per worker start drew these same three again
    fresh = optuna.create_study(sampler=TrialSeededSampler(3))
    fresh.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert xs(fresh) == first  # one worker's study is reproducible from the seed


def test_study_is_bound_to_its_fold_split(tmp_path):
    bound = {"arch": "simple_cnn", "fold": 0, "image_size": 16, "folds_fingerprint": "aaa"}
    open_study("s", None, tmp_path, identity=bound)
    open_study("s", None, tmp_path, identity=bound)  # the same binding joins
    with pytest.raises(CompError, match="study s was tuned on another fold split than folds/folds.csv"):
        open_study("s", None, tmp_path, identity={**bound, "folds_fingerprint": "bbb"})
    with pytest.raises(CompError, match=r"image size \(comp prepare --size\): 16 in the study, 32 here"):
        open_study("s", None, tmp_path, identity={**bound, "image_size": 32})


def _best(workdir, study="simple_cnn-fold0", **extra):
    best = {"study": study, "arch": "simple_cnn", "fold": 0, "trial": 7, "value": 0.9,
            "params": {"lr": 0.002, "batch_size": 8, "epochs": 12}, **extra}
    (workdir / "tune" / study).mkdir(parents=True, exist_ok=True)
    (workdir / "tune" / study / "best.json").write_text(json.dumps(best))
    return best


def _train_args(*flags):
    return build_parser().parse_args(["train", "--arch", "simple_cnn", *flags])


def test_params_refuse_another_split_and_files_that_are_not_best_json(prepared):
    split = split_fingerprint(load_prepared(prepared).folds)
    _best(prepared, folds_fingerprint=split, image_size=16)
    assert tuned_fields(prepared, "simple_cnn")["tuned_on"]["folds_fingerprint"] == split
    _best(prepared, folds_fingerprint="0123", image_size=16)  # tuned before `comp prepare --seed 7`
    with pytest.raises(CompError, match="was tuned on another fold split than folds/folds.csv"):
        _train_config(_train_args("--params", "best"), 0)
    (prepared / "other.json").write_text(json.dumps({"arch": "simple_cnn", "lr": 0.1}))
    with pytest.raises(CompError, match=r"--params other.json: not a best.json of `comp tune`"):
        _train_config(_train_args("--params", "other.json"), 0)
    (prepared / "broken.json").write_text("{")
    with pytest.raises(CompError, match=r"--params broken.json: cannot read it as JSON"):
        _train_config(_train_args("--params", "broken.json"), 0)
    (prepared / "bad.json").write_text(json.dumps({"arch": "simple_cnn", "params": {"batch_size": "big"}}))
    with pytest.raises(CompError, match=r"bad.json: tuned parameter batch_size: 'big' is not valid"):
        _train_config(_train_args("--params", "bad.json"), 0)


def test_budget_drops_the_tuned_epochs(workdir):
    _best(workdir)
    cfg = _train_config(_train_args("--params", "best", "--budget", "30s"), 0)
    assert cfg.epochs is None and cfg.budget == 30 and cfg.lr == 0.002
    table = cfg.resolved(n_train=200, img_size=16).plan_table()
    assert "--params' 12 epochs dropped: --budget sets the length" in table


def test_a_tuned_run_keeps_the_trial_its_folds_recorded(workdir, capsys):
    _best(workdir)  # best.json now names trial 7 (lr 0.002)
    fold0 = fold_dir(workdir, "simple_cnn_tuned", 0)
    fold0.mkdir(parents=True)
    earlier = {"study": "simple_cnn-fold0", "trial": 3, "fold": 0, "params": {"lr": 0.05, "epochs": 4}}
    (fold0 / "config.json").write_text(json.dumps({"fold": 0, "tuned_on": earlier}))
    for flags, fold in ((["--fold", "1"], 1), (["--fold", "0", "--resume"], 0), (["--fold", "all"], -1)):
        cfg = _train_config(_train_args("--params", "best", *flags), fold)
        assert (cfg.lr, cfg.epochs, cfg.tuned_on["trial"]) == (0.05, 4, 3)
    assert "this run keeps trial 3" in capsys.readouterr().out
    cfg = _train_config(_train_args("--params", "best", "--fold", "all", "--force"), -1)
    assert (cfg.lr, cfg.tuned_on["trial"]) == (0.002, 7)  # every fold retrained: the new best
    cfg = _train_config(_train_args("--params", "best", "--fold", "0", "--force"), 0)
    assert cfg.lr == 0.002  # the only recorded fold is the one redone
    _best(workdir, study="other")
    with pytest.raises(CompError, match="runs/simple_cnn_tuned was trained with study simple_cnn-fold0"):
        _train_config(_train_args("--params-from", "other"), 1)
    untuned = fold_dir(workdir, "simple_cnn", 0)
    untuned.mkdir(parents=True)
    (untuned / "config.json").write_text(json.dumps({"fold": 0, "tuned_on": None}))
    with pytest.raises(CompError, match=r"runs/simple_cnn has fold\(s\) 0 trained without --params"):
        _train_config(_train_args("--params", "best", "--name", "simple_cnn"), 1)
    fold1 = fold_dir(workdir, "simple_cnn_tuned", 1)
    fold1.mkdir(parents=True)
    (fold1 / "config.json").write_text(json.dumps({"fold": 1, "tuned_on": {**earlier, "trial": 5}}))
    with pytest.raises(CompError, match=r"mixes trials \(fold 0: study simple_cnn-fold0 trial 3, fold 1: "):
        _train_config(_train_args("--params", "best"), 2)


def test_a_failed_trial_is_one_line(prepared, monkeypatch, capfd):
    def out_of_memory(cfg, prepared, on_epoch=None):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    monkeypatch.setattr(comp.train.trainer, "train_fold", out_of_memory)
    assert main(["tune", "--arch", "simple_cnn", "--trials", "2", "--epochs", "1", *FAST]) == 2
    captured = capfd.readouterr()
    assert "trial 0 failed: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB" in captured.out
    assert "trial 1 failed" in captured.out and "every trial of study simple_cnn-fold0 failed" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_sigterm_stops_a_worker_that_leaves_best_json(prepared):
    (prepared / "space.yaml").write_text("lr: {type: float, low: 0.001, high: 0.01, log: true}\nbatch_size: 4\n"
                                         "translate: 0\ncutout: 0\ndropout: 0.0\nepochs: 1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "comp", "--workdir", str(prepared), "tune", "--arch",
                               "simple_cnn", "--trials", "100", "--space", "space.yaml", *FAST],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    best = prepared / "tune" / "simple_cnn-fold0" / "best.json"
    deadline = time.time() + 120
    while not (best.exists() and json.loads(best.read_text())["n_complete"] >= 2):  # written after each trial
        assert worker.poll() is None and time.time() < deadline
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in out + err and len(err.splitlines()) <= 3
    assert json.loads(best.read_text())["n_complete"] >= 2
    assert not list((prepared / "runs" / "tune").rglob("checkpoint.pt"))  # the interrupted trial's is removed


def test_grid_messages_name_what_grid_can_do(prepared, monkeypatch, capsys):
    cfg = TrainConfig(arch="simple_cnn", fold=0, workdir=str(prepared), epochs=3, lr=0.01, precision="fp32",
                      val_every=1)

    def stop_in_epoch_2(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an unfinished run, started by comp train with --lr 0.01
        train_fold(cfg, load_prepared(prepared), on_epoch=stop_in_epoch_2)
    capsys.readouterr()
    with pytest.raises(CompError, match="1 of 1 run"):
        grid("simple_cnn", "0", str(prepared), epochs=3, precision="fp32")
    [status] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("grid: simple_cnn fold 0")]
    assert "failed: " in status and "cannot resume with a different recipe or split (lr: 0.01 -> " in status
    assert "--force to start over" not in status  # comp grid has no --force
    assert status.endswith("comp grid only resumes: `comp train --arch simple_cnn --fold 0 --force` starts it over")

    def interrupted(cfg, prepared, on_epoch=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(comp.train.trainer, "train_fold", interrupted)
    capsys.readouterr()
    assert main(["grid", "--archs", "simple_cnn", "--folds", "1"]) == 130
    err = capsys.readouterr().err
    assert "the same `comp grid` again" in err and "--resume" not in err


def test_an_interrupted_trial_is_listed_as_stopped_not_failed(capsys):
    import optuna

    from comp.tune.search import print_table

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", study_name="s")
    for interrupted in (True, False):
        trial = study.ask()
        if interrupted:
            trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    print_table(study)
    out = capsys.readouterr().out
    assert "study s: 1 stopped, 1 fail" in out and "    0  STOPPED" in out and "    1  FAIL" in out
