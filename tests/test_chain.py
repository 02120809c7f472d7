"""The chain end to end: the label-map guard, blend, submission checks and the CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import make_competition, zip_folder

from comp.blend.blend import BlendOptions, blend
from comp.cli import main
from comp.prepare.folds import PrepareOptions, load_prepared, prepare
from comp.io import CompError, read_json, write_json, write_npz
from comp.labels import LabelMap, build_label_map, natural_sorted
from comp.blend.submit import has_credentials, validate_submission

NUMERIC_CLASSES = [str(i) for i in range(12)]  # text order 0,1,10,11,2,... differs from numeric


def write_fake_run(workdir, name, logits_fn, label_hash=None):
    """A complete run whose logits come from logits_fn(true_index_array) for OOF and test rows."""
    prepared = load_prepared(workdir)
    label_hash = label_hash or prepared.label_map.hash
    y = prepared.label_map.encode(list(prepared.folds.label))
    for k in sorted(prepared.folds.fold.unique()):
        rows = prepared.folds.fold.to_numpy() == k
        out = workdir / "runs" / name / f"fold{k}"
        write_json(out / "config.json", {"name": name, "fold": int(k), "arch": "fake", "label_hash": label_hash,
                                         "tta": "none"})
        write_npz(out / "oof.npz", ids=prepared.folds.id.to_numpy()[rows].astype(str), logits=logits_fn(y[rows]),
                  labels=y[rows], fold=np.full(rows.sum(), k))
        write_npz(out / "test.npz", ids=prepared.test.id.to_numpy().astype(str),
                  logits=logits_fn(np.asarray(test_truth(workdir))))
        write_json(out / "metrics.json", {"accuracy": 1.0})


def test_truth(workdir):
    prepared = load_prepared(workdir)
    return prepared.label_map.encode(pd.read_csv(workdir / "truth.csv", dtype=str).label.tolist())


test_truth.__test__ = False  # a helper, not a test


def numeric_competition(tmp_path, workdir, **kw):
    facts = make_competition(tmp_path / "num", "cifar", classes=NUMERIC_CLASSES, **kw)
    prepare(PrepareOptions(str(tmp_path / "num"), str(workdir), folds=2))
    pd.DataFrame({"id": facts["test_ids"], "label": facts["test_labels"]}).to_csv(workdir / "truth.csv", index=False)
    return facts


def one_hot(indices, n=12):
    return np.eye(n, dtype=np.float32)[indices] * 5


def test_label_map_orders_numbers_naturally():
    label_map = build_label_map(["10", "2", "1", "0", "11"])
    assert label_map.classes == ("0", "1", "2", "10", "11")
    assert label_map.decode([3, 2]) == ["10", "2"]
    assert natural_sorted(["img10", "img2"]) == ["img2", "img10"]
    with pytest.raises(CompError, match="outside 0..4"):
        label_map.decode([5])
    assert build_label_map(["7", "8"], ["007", "000"]).decode([0]) == ["007"]  # the sample's padding
    assert build_label_map(["007", "010"], ["000"]).decode([0]) == ["007"]  # "007" stays "007"


def test_written_labels_are_the_true_class_names(tmp_path, workdir):
    facts = numeric_competition(tmp_path, workdir, per_class=4, n_test=24)
    write_fake_run(workdir, "perfect", one_hot)
    out = blend(BlendOptions(method="soft", workdir=str(workdir), name="sub"))
    written = pd.read_csv(out, dtype=str)
    assert list(written.columns) == ["id", "label"]
    assert list(written.id) == facts["test_ids"]
    assert list(written.label) == facts["test_labels"]  # names, e.g. "10", never the index 2
    text_sorted = sorted(NUMERIC_CLASSES)  # what a folder loader would have used
    assert [text_sorted[NUMERIC_CLASSES.index(c)] for c in facts["test_labels"]] != facts["test_labels"]


def test_blend_refuses_runs_with_another_label_map(tmp_path, workdir):
    numeric_competition(tmp_path, workdir, per_class=4)
    write_fake_run(workdir, "good", one_hot)
    write_fake_run(workdir, "stale", one_hot, label_hash="0123456789abcdef")
    with pytest.raises(CompError, match=r"label map mismatch.*stale \(0123456789abcdef\)"):
        blend(BlendOptions(workdir=str(workdir)))
    assert not (workdir / "submissions").exists()
    blend(BlendOptions(workdir=str(workdir), runs=["good"]))  # leaving it out works


def test_hard_vote_and_honest_select(tmp_path, workdir):
    numeric_competition(tmp_path, workdir, per_class=4, n_test=24)
    rng = np.random.default_rng(0)
    write_fake_run(workdir, "perfect", one_hot)
    write_fake_run(workdir, "noise_a", lambda y: rng.normal(size=(len(y), 12)).astype(np.float32))
    write_fake_run(workdir, "noise_b", lambda y: rng.normal(size=(len(y), 12)).astype(np.float32))
    out = blend(BlendOptions(method="select", workdir=str(workdir), name="sel"))
    report = pd.read_json(out.with_suffix(".json"), typ="series")
    assert report["blend"]["nested"] and report["blend"]["accuracy"] == 1.0
    assert report["blend"]["weights"][2] > 0.9  # runs come sorted by name: noise_a, noise_b, perfect
    hard = blend(BlendOptions(method="hard", workdir=str(workdir), name="hard", runs=["perfect"]))
    assert (pd.read_csv(hard, dtype=str).label == pd.read_csv(workdir / "truth.csv", dtype=str).label).all()


def test_validate_submission_catches_each_mistake(tmp_path, workdir):
    numeric_competition(tmp_path, workdir, per_class=4, n_test=6)
    label_map = LabelMap.load(workdir / "folds" / "labels.json")
    sample = tmp_path / "num" / "sampleSubmission.csv"
    good = pd.read_csv(sample, dtype=str)
    validate_submission(good, sample, label_map, "id", "label")
    cases = {
        "header": good.rename(columns={"label": "class"}),
        "rows": good.iloc[:-1],
        "empty cell": good.assign(label=[""] + list(good.label[1:])),
        "repeats id": pd.concat([good.iloc[:-1], good.iloc[:1]]),
        "not a class": good.assign(label=["12"] * len(good)),
    }
    for expected, frame in cases.items():
        with pytest.raises(CompError, match=expected):
            validate_submission(frame, sample, label_map, "id", "label")


def test_bad_top_is_a_clear_error(tmp_path, workdir, capsys):
    numeric_competition(tmp_path, workdir, per_class=4)
    write_fake_run(workdir, "perfect", one_hot)
    for top in ("5", "0%", "abc"):
        assert main(["blend", "--top", top]) == 2
        assert f"--top {top}:" in capsys.readouterr().err


def test_blend_top_follows_metric_and_names_what_it_kept(tmp_path, workdir, capsys):
    numeric_competition(tmp_path, workdir, per_class=4)

    def sharp(y):  # right on 9 rows in 10, and sure of itself when wrong: best accuracy, worst log loss
        wrong = np.arange(len(y)) % 10 == 0
        return np.where(wrong[:, None], one_hot((y + 1) % 12) * 10, one_hot(y))

    def calibrated(y):  # right on 7 rows in 10, hedging: worse accuracy, better log loss
        wrong = np.arange(len(y)) % 10 < 3
        return np.where(wrong[:, None], one_hot((y + 1) % 12) * 0.2, one_hot(y) * 0.4)

    write_fake_run(workdir, "sharp", sharp)
    write_fake_run(workdir, "calibrated", calibrated)
    for metric, kept in (("accuracy", "sharp"), ("logloss", "calibrated")):
        assert main(["blend", "--top", "1", "--metric", metric]) == 0
        assert f"--top 1 by single-run {metric} on all OOF rows kept: {kept}\n" in capsys.readouterr().out
    assert (workdir / "submissions" / "soft_1runs_top1.csv").exists()  # not soft_2runs: one run was used
    for _ in range(2):
        assert main(["blend", "--name", "final.csv"]) == 0
    assert "note: replacing" in capsys.readouterr().out and (workdir / "submissions" / "final.csv").exists()
    assert not (workdir / "submissions" / "final.csv.csv").exists()

    unfinished = workdir / "runs" / "unfinished" / "fold0"
    write_json(unfinished / "config.json", {"name": "unfinished", "fold": 0})
    assert main(["blend", "--runs", "sharp", "unfinished"]) == 2
    assert "--runs unfinished: " in capsys.readouterr().err
    assert main(["blend", "--runs", "*"]) == 0  # a pattern may match folders without results
    oof = workdir / "runs" / "sharp" / "fold1" / "oof.npz"
    oof.write_bytes(oof.read_bytes()[:100])  # a partial copy
    assert main(["blend"]) == 2
    assert "runs/sharp/fold1: its results are unreadable (BadZipFile" in capsys.readouterr().err


def test_submit_message_says_optimistic_and_ignores_other_json(tmp_path, workdir, capsys, monkeypatch):
    numeric_competition(tmp_path, workdir, per_class=4)
    write_fake_run(workdir, "perfect", one_hot)
    for k in (0, 1):  # as if trained with early stopping on the held-out fold
        config = workdir / "runs" / "perfect" / f"fold{k}" / "config.json"
        write_json(config, {**read_json(config), "patience": 3})
    assert main(["blend", "--name", "my sub"]) == 0
    out = capsys.readouterr().out
    assert "-f 'submissions/my sub.csv' -m 'comp blend soft: OOF accuracy 1.0000, macro-F1 1.0000 (optimistic: patience)'" in out
    assert main(["submit", "submissions/my sub.csv", "-c", "x", "--dry-run"]) == 0
    assert "(optimistic: patience)'" in capsys.readouterr().out
    (workdir / "submissions" / "my sub.json").write_text('{"note": 1}')  # not comp's: the plain message
    assert main(["submit", "submissions/my sub.csv", "-c", "x", "--dry-run"]) == 0
    assert "with message 'comp submission'" in capsys.readouterr().out
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["submit", "submissions/my sub.csv", "-c", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KAGGLE_API_TOKEN" in err and "then run comp submit again" in err


def test_blend_needs_runs(tmp_path, workdir):
    numeric_competition(tmp_path, workdir, per_class=4)
    with pytest.raises(CompError, match="no complete runs"):
        blend(BlendOptions(workdir=str(workdir)))


def test_cli_end_to_end(tmp_path, workdir, capsys, monkeypatch):
    facts = make_competition(tmp_path / "cifar", "cifar", classes=["plane", "car", "bird"], per_class=12, n_test=9)
    archive = zip_folder(tmp_path / "cifar", tmp_path / "cifar-10.zip")
    assert main(["prepare", "--data", str(archive), "--folds", "3"]) == 0
    assert main(["train", "--arch", "custom_cnn", "--fold", "0", "--epochs", "1", "--batch-size", "8"]) == 0
    assert main(["train", "--fold", "1", "--epochs", "1", "--batch-size", "8", "--tta", "none"]) == 0
    out = capsys.readouterr().out
    assert "arch             fastnet                    airbench94's net for 16px images" in out  # the plan table
    assert (workdir / "runs" / "fastnet" / "fold1" / "metrics.json").exists()
    assert main(["train", "--arch", "custom_cnn", "--fold", "0", "--epochs", "1"]) == 2  # finished: no overwrite
    assert "already complete" in capsys.readouterr().err
    assert main(["blend", "--method", "soft", "--name", "first", "--runs", "custom_cnn"]) == 0
    out = capsys.readouterr().out
    assert "OOF accuracy" in out and "kaggle competitions submit" in out
    sub = pd.read_csv(workdir / "submissions" / "first.csv", dtype=str)
    assert list(sub.id) == facts["test_ids"] and set(sub.label) <= {"plane", "car", "bird"}
    assert (workdir / "submissions" / "first.json").exists()
    assert main(["submit", "submissions/first.csv", "-c", "cifar-10", "--dry-run"]) == 0
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert not has_credentials()
    assert main(["submit", "submissions/first.csv", "-c", "cifar-10"]) == 2
    assert "KAGGLE_API_TOKEN" in capsys.readouterr().err
    assert "kaggle" not in sys.modules  # importing kaggle authenticates: never done without credentials


def test_demo_will_not_prepare_over_a_competition(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4)
    assert main(["prepare", "--data", str(tmp_path / "data"), "--folds", "2"]) == 0
    assert main(["demo"]) == 2  # the workdir is `.`, prepared for this competition
    assert "the demo would replace its folds/; run it in a folder of its own" in capsys.readouterr().err
    assert not (workdir / "digits").exists()


def test_cli_errors_and_help(tmp_path, workdir, capsys):
    assert main(["train", "--arch", "custom_cnn"]) == 2
    assert "comp prepare" in capsys.readouterr().err
    assert main(["train"]) == 2  # no --arch: the default needs the prepared image size
    assert "comp prepare" in capsys.readouterr().err
    for command in ("prepare", "train", "predict", "blend", "submit", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    result = subprocess.run([sys.executable, "-m", "comp", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout
