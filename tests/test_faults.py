"""Bad input, kills and honesty: every case of the fault table in BENCHMARKS.md (issue 10).

Each test names the numbered defect it guards. The kill -9 at ten moments of a real prepare is
scripts/kill_prepare.py (it needs a larger data set than a test should make); the two-trainings
collapse is scripts/bench_concurrent.py.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_competition
from PIL import Image

from comp.blend import plots
from comp.prepare.cache import duplicate_report, load_rgb
from comp.cli import build_parser, main
from comp.prepare.folds import PrepareOptions, assign_folds, folds_dir, load_prepared, prepare
from comp.io import CompError
from comp.runs import fold_dir, oof_label_use, run_label_use
from comp.train.tuned import tuned_fields


def _prepare(root: Path, workdir: Path, **kwargs) -> dict:
    return prepare(PrepareOptions(str(root), str(workdir), **{"folds": 3, **kwargs}))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


# 1. 16-bit images -----------------------------------------------------------------------------

def test_16bit_and_float_images_are_scaled_not_clipped(tmp_path):
    gradient = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    pixels = load_rgb(tmp_path / "g16.png", None)[..., 0].ravel()
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 200
    assert np.all(np.diff(pixels.astype(int)) >= 0)  # the gradient stays a gradient
    Image.fromarray(np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)).save(tmp_path / "f.tif")
    floats = load_rgb(tmp_path / "f.tif", None)[..., 0].ravel()
    assert floats[0] == 0 and floats[-1] == 255 and len(np.unique(floats)) == 64


def test_prepare_says_16bit_images_were_scaled(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    rng = np.random.default_rng(0)
    for path in (tmp_path / "data" / "train").glob("*.png"):
        Image.fromarray(rng.integers(0, 65536, (16, 16)).astype(np.uint16)).save(path)
    summary = _prepare(tmp_path / "data", workdir)
    assert summary["scaled_to_8_bits"] == {"I;16": "0..65535 -> 0..255"}
    assert "I;16 images scaled to 8 bits" in capsys.readouterr().out
    cache = load_prepared(workdir).train_images
    assert cache.max() > 250 and (cache == 255).mean() < 0.05  # clipping made most pixels 255


# 2. an interrupted prepare keeps the previous one; stale staging files go ----------------------

def test_prepare_failing_midway_keeps_the_previous_preparation(tmp_path, workdir, monkeypatch):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    before = {p.name: p.read_bytes() for p in folds_dir(workdir).iterdir() if p.is_file()}
    import comp.prepare.cache

    real = comp.prepare.cache.build_cache

    def killed_in_test_decode(paths, size, out_path, desc, *more):
        if "test" in desc:
            raise KeyboardInterrupt
        return real(paths, size, out_path, desc, *more)

    monkeypatch.setattr(comp.prepare.cache, "build_cache", killed_in_test_decode)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path / "data", workdir, seed=7)
    after = {p.name: p.read_bytes() for p in folds_dir(workdir).iterdir() if p.is_file()}
    assert after == before
    assert not [p for p in folds_dir(workdir).rglob(".*")]  # the staging folder went with the error
    load_prepared(workdir)


def test_next_prepare_removes_staging_of_killed_processes(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    archive = tmp_path / "comp.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((tmp_path / "data").rglob("*")):
            z.write(path, path.relative_to(tmp_path / "data"))
    dead, host = _dead_pid(), socket.gethostname()
    (workdir / "folds" / "cache").mkdir(parents=True)
    leftovers = [workdir / "folds" / f".staging-{host}-{dead}" / "cache",
                 workdir / "data" / f".comp.tmp-{dead}" / "train"]
    for folder in leftovers:
        folder.mkdir(parents=True)
        (folder / "x.npy").write_bytes(b"0" * 100)
    (workdir / "folds" / "cache" / f"..staging-{dead}-train_16.npy.tmp-{dead}.npy").write_bytes(b"0")
    alive = workdir / "folds" / f".staging-{host}-{os.getppid()}"  # a running prepare's: kept
    alive.mkdir()
    _prepare(archive, workdir)
    assert "removed 3 staging" in capsys.readouterr().out
    hidden = sorted(p.name for p in workdir.rglob(".*"))
    assert hidden == [alive.name]


def test_a_switch_cut_short_by_a_kill_is_finished_by_the_next_reader(tmp_path, workdir):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    out = folds_dir(workdir)
    new = _prepare(tmp_path / "data", tmp_path / "other", seed=9)  # the "new" preparation's files
    committed = out / f".commit-{socket.gethostname()}-{_dead_pid()}"
    for path in (tmp_path / "other" / "folds").rglob("*"):
        if path.is_file() and path.name != "folds.csv":  # folds.csv was moved in before the kill
            target = committed / path.relative_to(tmp_path / "other" / "folds")
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
    (tmp_path / "other" / "folds" / "folds.csv").replace(out / "folds.csv")
    prepared = load_prepared(workdir)  # folds_dir finishes the move: a consistent new preparation
    assert prepared.info["seed"] == new["seed"] == 9 and not committed.exists()


# 3. one line and exit code 2, never a traceback ------------------------------------------------

def test_submit_bad_files_and_unprepared_folder_are_one_line_errors(tmp_path, workdir, capsys):
    (workdir / "empty.csv").write_text("")
    assert main(["submit", "empty.csv", "-c", "x", "--dry-run"]) == 2
    assert "prepare.json not found" in _error_line(capsys)  # outside a prepared folder
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    assert main(["submit", "empty.csv", "-c", "x", "--dry-run"]) == 2
    assert "empty" in _error_line(capsys)
    with zipfile.ZipFile(workdir / "many.zip", "w") as z:
        for i in range(3000):
            z.writestr(f"part{i}.csv", "id,label\n")
    assert main(["submit", "many.zip", "-c", "x", "--dry-run"]) == 2
    line = _error_line(capsys)
    assert "3000 files" in line and len(line) < 300


def test_bad_size_and_missing_gpu_are_one_line_errors(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    for size in ("-5", "0"):
        assert main(["prepare", "--data", str(tmp_path / "data"), "--size", size]) == 2
        assert f"--size {size}" in _error_line(capsys)
    assert main(["prepare", "--data", str(tmp_path / "data"), "--folds", "3"]) == 0
    capsys.readouterr()
    import torch

    if not torch.cuda.is_available():
        assert main(["train", "--arch", "simple_cnn", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in _error_line(capsys)
    assert main(["train", "--arch", "simple_cnn", "--device", "tpu9"]) == 2
    assert "--device 'tpu9'" in _error_line(capsys)


def test_unexpected_errors_are_one_line_unless_debug(workdir, monkeypatch, capsys):
    import comp.blend.blend

    def broken(opts):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(comp.blend.blend, "blend", broken)
    assert main(["blend"]) == 2
    assert "RuntimeError: something unforeseen" in _error_line(capsys)
    with pytest.raises(RuntimeError):
        main(["blend", "--debug"])
    monkeypatch.setenv("COMP_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["blend"])


# 4. flags that mislead ---------------------------------------------------------------------------

def test_ext_that_matches_no_file_is_an_error(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    assert main(["prepare", "--data", str(tmp_path / "data"), "--ext", "gif"]) == 2
    assert "--ext gif: no .gif files" in _error_line(capsys)


def test_fold_all_skips_a_busy_fold_and_trains_the_others(tmp_path, workdir, capsys, monkeypatch):
    make_competition(tmp_path / "data", "cifar", per_class=6, size=16)
    _prepare(tmp_path / "data", workdir)
    assert main(["train", "--arch", "simple_cnn", "--patience", "-3"]) == 2
    assert "--patience -3" in _error_line(capsys)
    busy = fold_dir(workdir, "simple_cnn", 0)
    busy.mkdir(parents=True)
    (busy / "checkpoint.pt").write_bytes(b"unfinished")
    (busy / "lock").write_text(f"{socket.gethostname()} {os.getpid()}")  # a live trainer holds it
    assert main(["train", "--arch", "simple_cnn", "--fold", "all", "--epochs", "1", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "fold 0: busy" in out and "--resume" not in out and "skipped busy fold(s) 0" in out
    metrics = json.loads((fold_dir(workdir, "simple_cnn", 2) / "metrics.json").read_text())
    # 6. simple_cnn's recipe: ReduceLROnPlateau and patience both look at the held-out labels
    assert set(metrics["used_oof_labels"]) == {"patience", "plateau"}
    (busy / "lock").unlink()
    assert main(["train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "1", "--precision", "fp32",
                 "--schedule", "cosine", "--patience", "0", "--force"]) == 0
    assert main(["blend", "--runs", "simple_cnn"]) == 0
    assert "optimistic: used its OOF labels (patience,plateau)" in capsys.readouterr().out
    titles, draw = [], plots.confusion_figure
    monkeypatch.setattr(plots, "confusion_figure", lambda m, names, title: titles.append(title) or draw(m, names, title))
    assert main(["report", "--methods", "soft,logit"]) == 0
    assert "optimistic OOF scores" in capsys.readouterr().out
    [blend_title] = [title for title in titles if title.startswith("blend")]  # never "honest" over such runs
    assert "honest" not in blend_title and "optimistic" in blend_title and "the best of 2 methods" in blend_title


# 5. silent surprises -------------------------------------------------------------------------------

def test_unlisted_test_images_spaced_class_names_and_conflicting_duplicates(tmp_path, workdir, capsys):
    facts = make_competition(tmp_path / "data", "cifar", classes=[" cat", "dog", "frog"], per_class=4, size=16)
    data = tmp_path / "data"
    Image.open(data / "test" / "1.png").save(data / "test" / "extra.png")
    labels = pd.read_csv(data / "trainLabels.csv", dtype=str, keep_default_na=False)
    first, other = labels.iloc[0], labels[labels.label != labels.label.iloc[0]].iloc[0]
    Image.open(data / "train" / f"{first.id}.png").save(data / "train" / f"{other.id}.png")  # same pixels
    summary = _prepare(data, workdir)
    out = capsys.readouterr().out
    assert summary["test_images_not_in_sample"] == ["extra.png"] and "extra.png" in out
    assert " cat" in load_prepared(workdir).label_map.classes and summary["class_names_with_outer_spaces"] == [" cat"]
    groups = summary["duplicates"]["conflicting_label_groups"]
    assert groups == [{first.id: first.label, other.id: other.label}] and first.id in out
    folds = pd.read_csv(folds_dir(workdir) / "folds.csv", dtype=str)
    assert folds.set_index("id").fold[first.id] == folds.set_index("id").fold[other.id]  # one fold
    assert facts["classes"][0] == " cat"


def test_another_seed_says_how_many_runs_it_invalidates(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    from comp.prepare.folds import current_split

    for fold in range(2):
        run = fold_dir(workdir, "old", fold)
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"folds_fingerprint": current_split(workdir)}))
    capsys.readouterr()
    summary = _prepare(tmp_path / "data", workdir, seed=1)
    out = capsys.readouterr().out
    assert "differ from the previous preparation's" in out
    assert "makes 2 trained run fold(s) unusable" in out and len(summary["runs_invalidated"]) == 2
    assert out.index("unusable") < out.index("train images:")  # said before the new summary


# 6. label information in honest scores ------------------------------------------------------------

def test_oof_label_use_flags_patience_plateau_and_the_tuned_fold():
    assert oof_label_use({"patience": 0, "schedule": "cosine", "fold": 0}) == []
    assert oof_label_use({"patience": 3, "schedule": "plateau", "fold": 1}) == ["patience", "plateau"]
    tuned = {"patience": 0, "schedule": "cosine", "tuned_on": {"study": "a-fold0", "fold": 0}}
    assert oof_label_use({**tuned, "fold": 0}) == ["tuned"] and oof_label_use({**tuned, "fold": 1}) == []

    class Fold:
        def __init__(self, config):
            self.config = config

    class Run:
        folds = [Fold({**tuned, "fold": 0}), Fold({"patience": 2, "fold": 1})]

    assert run_label_use(Run()) == "patience,tuned"


def test_params_best_records_the_tuned_study_and_fold(workdir):
    study = workdir / "tune" / "simple_cnn-fold0"
    study.mkdir(parents=True)
    (study / "best.json").write_text(json.dumps({"study": "simple_cnn-fold0", "arch": "simple_cnn", "fold": 0,
                                                 "trial": 3, "value": 0.9, "params": {"lr": 0.01}}))
    fields = tuned_fields(workdir, "simple_cnn")
    assert fields["tuned_on"]["fold"] == 0 and fields["tuned_on"]["study"] == "simple_cnn-fold0"
    with pytest.raises(CompError, match="pass --arch, or --params-from STUDY"):  # the study is named after the net
        tuned_fields(workdir, None)
    assert tuned_fields(workdir, None, study="simple_cnn-fold0")["arch"] == "simple_cnn"  # the study says which
    assert tuned_fields(workdir, None, str(study / "best.json"))["arch"] == "simple_cnn"


def test_duplicates_stay_in_one_fold_and_other_splits_are_unchanged():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200).astype(str)
    plain = assign_folds(labels, 5, 42)
    assert np.array_equal(assign_folds(labels, 5, 42, groups=[str(i) for i in range(200)]), plain)
    groups = [str(i // 3) if i < 60 else str(i) for i in range(200)]  # 20 triples of copies
    folds = assign_folds(labels, 5, 42, groups=groups)
    for g in range(20):
        assert len(set(folds[3 * g:3 * g + 3])) == 1
    assert np.bincount(folds).min() >= 35  # still balanced
    report = duplicate_report(["a", "a", "b"], ["x", "y", "x"], [], ["id1", "id2", "id3"])
    assert report["conflicting_label_groups"] == [{"id1": "x", "id2": "y"}]


def test_fold_all_does_not_adopt_folds_of_another_split_and_damaged_json_is_named(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    from comp.prepare.folds import current_split

    old = current_split(workdir)
    for fold in range(2):  # complete folds of the first split
        run = fold_dir(workdir, "custom_cnn", fold)
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"folds_fingerprint": old, "arch": "custom_cnn"}))
        for name in ("metrics.json", "oof.npz", "test.npz"):
            (run / name).write_bytes(b"")
    _prepare(tmp_path / "data", workdir, seed=1)
    capsys.readouterr()
    assert main(["train", "--arch", "custom_cnn", "--fold", "all", "--epochs", "1"]) == 2
    assert "was trained on another fold split (comp prepare ran again" in _error_line(capsys)
    (folds_dir(workdir) / "prepare.json").write_text('{"layout": ')  # cut short
    assert main(["blend"]) == 2
    assert "folds/prepare.json: damaged, not readable JSON" in _error_line(capsys)


def test_damaged_state_files_are_named(tmp_path, workdir, capsys):
    from comp.io import load_torch

    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    _prepare(tmp_path / "data", workdir)
    cache = sorted((folds_dir(workdir) / "cache").glob("train_*.npy"))[0]
    cache.write_bytes(cache.read_bytes()[:-100])  # cut short
    assert main(["train", "--arch", "custom_cnn", "--fold", "0", "--epochs", "1"]) == 2
    assert f"{cache.name}: the image cache is missing or damaged" in _error_line(capsys)
    folds = pd.read_csv(folds_dir(workdir) / "folds.csv", dtype=str).drop(columns="fold")
    folds.to_csv(folds_dir(workdir) / "folds.csv", index=False)
    assert main(["train", "--arch", "custom_cnn", "--fold", "0", "--epochs", "1"]) == 2
    assert "folds.csv: column(s) fold missing; re-run `comp prepare`" in _error_line(capsys)
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(CompError, match=r"model\.pt: damaged, not a readable torch file \(EOFError"):
        load_torch(tmp_path / "model.pt", then="train that fold again (--force)")


def test_ctrl_c_says_what_running_the_command_again_does(capsys):
    import argparse

    from comp.cli import _run

    def interrupted(args):
        raise KeyboardInterrupt

    for command, again in (("prepare", "the previous preparation is unchanged"), ("train", "with --resume"),
                           ("predict", "skips the folds it finished"), ("infer", "run it again")):
        assert _run(argparse.Namespace(command=command, func=interrupted, debug=False)) == 130
        err = capsys.readouterr().err
        assert again in err and (command == "train" or "--resume" not in err)


# 7. two trainings on one machine -----------------------------------------------------------------

def test_cpu_trainings_share_the_cores(tmp_path, monkeypatch):
    import torch

    from comp.train import cpu_share

    monkeypatch.setattr(cpu_share, "REGISTRY", tmp_path / "registry")
    monkeypatch.setattr(cpu_share, "CHECK_EVERY", 0.0)
    monkeypatch.setattr(cpu_share, "_state", {"entry": None, "cores": None, "checked": -1.0})
    monkeypatch.setenv("COMP_CPU_SHARE", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    try:
        torch.set_num_threads(4)
        cpu_share.share_cpu(cpu)  # alone: every core
        assert torch.get_num_threads() == 4 and len(list((tmp_path / "registry").iterdir())) == 1
        other = tmp_path / "registry" / f"{socket.gethostname()}-{os.getppid()}"  # a live process
        other.touch()
        (tmp_path / "registry" / f"{socket.gethostname()}-{_dead_pid()}").touch()  # a killed one
        cpu_share.share_cpu(cpu)
        assert torch.get_num_threads() == 2 and cpu_share.live_trainings() == 2
        other.unlink()
        cpu_share.share_cpu(cpu)  # the other finished: the cores come back
        assert torch.get_num_threads() == 4
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's count wins
        other.touch()
        cpu_share.share_cpu(cpu)
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


# 8. help texts --------------------------------------------------------------------------------------

def test_every_option_has_a_help_text_and_none_says_as_above():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help and "as above" not in action.help, f"comp {name} {action.dest}"
    blend_help = subparsers["blend"].format_help()
    assert "Caruana" in blend_help and "majority vote" in blend_help


def test_license_is_an_spdx_string():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'license = "MIT"' in text and "license = {" not in text


# 11. progress where output goes to a file -----------------------------------------------------------

def test_progress_prints_a_line_every_few_percent_into_a_file():
    import io

    from comp.progress import QUIET_SECONDS, STEP_PERCENT, LineProgress

    now = [0.0]
    stream = io.StringIO()
    for _ in LineProgress(range(200), desc="decode", unit="img", stream=stream, clock=lambda: now[0]):
        now[0] += 0.1  # 20 s in all: 10 img/s
    lines = stream.getvalue().splitlines()
    assert QUIET_SECONDS == 2 and STEP_PERCENT == 5  # the figures below assume these
    assert lines[0].startswith("decode: 10% (20/200 img)")  # the first line once QUIET_SECONDS have passed
    assert len(lines) == 19 and lines[-1].startswith("decode: 100% (200/200 img)")  # 10, 15, ..., 100%
    assert "10 img/s, 0s left" in lines[-1] and "img/s, 18s left" in lines[0]
    quiet = io.StringIO()
    for _ in LineProgress(range(50), desc="fast", stream=quiet, clock=lambda: 0.0):
        pass
    assert quiet.getvalue() == ""  # short work prints nothing
