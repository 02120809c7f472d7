"""comp tune (shared studies, pruning, search-space files, --params best) and comp grid."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from conftest import make_competition

from comp.cli import _train_config, build_parser, main
from comp.folds import PrepareOptions, prepare
from comp.grid import grid
from comp.io import CompError
from comp.runs import fold_dir, is_complete
from comp.tune import open_study
from comp.tune_space import build_space, load_space_file, tuned_aug

# fp32: CPU bf16 rounding would make the pruning test depend on the machine's kernels
FAST = ["--precision", "fp32"]


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
    for t in trials:
        assert t.user_attrs["params"]["epochs"] == 2
        assert is_complete(fold_dir(prepared, f"tune/simple_cnn-fold0/trial{t.number}", 0))
    out = prepared / "tune" / "simple_cnn-fold0"
    assert json.loads((out / "best.json").read_text())["value"] == study.best_value
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
    rc = main(["tune", "--arch", "simple_cnn", "--trials", "5", "--space", "space.yaml", "--sampler-seed", "0",
               "--startup-trials", "1", "--warmup-epochs", "0", "--study", "prune", *FAST])
    assert rc == 0
    assert "PRUNED" in capsys.readouterr().out
    study = open_study("prune", None, prepared)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    for t in pruned:  # stopped inside its first epochs, before writing metrics.json
        assert t.params["lr"] == 1e-7
        assert len(t.intermediate_values) == t.user_attrs["epochs_run"] < 3
        assert (prepared / t.user_attrs["run"] / "config.json").exists()
        assert not is_complete(prepared / t.user_attrs["run"])
    for t in complete:
        assert len(t.intermediate_values) == t.user_attrs["epochs_run"] == 3
    assert max(t.value for t in complete) > max(t.intermediate_values[1] for t in pruned)
    best = json.loads((prepared / "tune" / "prune" / "best.json").read_text())
    assert best["params"]["lr"] == 0.003 and best["params"]["epochs"] == 3

    # `comp train --params-from prune` starts from the winner; a flag given explicitly still wins
    cfg = _train_config(build_parser().parse_args(["train", "--arch", "simple_cnn", "--params-from", "prune"]), 0)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.aug) == (0.003, 4, 3, "flip")
    assert cfg.model_kwargs == {"dropout": 0.0}


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
    space = build_space("simple_cnn", 16, path)
    assert space["lr"].log and (space["lr"].low, space["lr"].high) == (1e-4, 1e-2)
    assert space["optimizer"].choices == ("adam", "adamw") and space["epochs"].value == 3
    assert "dropout" in space and space["batch_size"].choices == (32, 64, 128)  # defaults kept
    assert "dropout" not in build_space("fastnet", 32)  # FastNet takes no dropout argument
    (tmp_path / "bad.toml").write_text("dropout = 0.2\n")
    with pytest.raises(CompError, match="dropout: fastnet has no dropout argument"):
        build_space("fastnet", 32, tmp_path / "bad.toml")
    assert tuned_aug("flip,crop:4,cutout:8", 0, 0) == "flip"
    (tmp_path / "big.yaml").write_text("translate: {type: int, low: 0, high: 16}\n")
    with pytest.raises(CompError, match="translate: up to 16 px, but the images are 16 px: keep it <= 15"):
        build_space("simple_cnn", 16, tmp_path / "big.yaml")


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
