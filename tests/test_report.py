"""comp report on hand-made runs: no training, logits written directly with known mistakes.

The competition has 3 classes x 6 images in 3 stratified folds (2 images per class per fold).
A run is wrong on the first `n_wrong` rows of each fold (it predicts the next class there),
so its accuracy, log loss, F1 and confusion matrix can be computed by hand.
"""
from __future__ import annotations

import math
import re
import shutil
from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from conftest import make_competition
from PIL import Image

from comp.cli import main
from comp.prepare.folds import PrepareOptions, load_prepared, prepare
from comp.io import CompError, write_csv, write_json, write_npz
from comp.blend.report import ReportOptions, confusion, report

CLASSES = ["cat", "dog", "frog"]
SCALE = 4.0  # logit of the predicted class; the others are 0
N_WRONG = {"good": 0, "noisy": 1, "weak": 3}  # wrong rows per fold of 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def truth(workdir):
    prepared = load_prepared(workdir)
    return prepared.folds.fold.to_numpy(), prepared.label_map.encode(list(prepared.folds.label)), prepared


def predictions(y, n_wrong):
    """Predicted class per row of one fold: the next class on the first n_wrong rows."""
    wrong = np.arange(len(y)) < n_wrong
    return np.where(wrong, (y + 1) % len(CLASSES), y)


def write_run(workdir, name, n_wrong, folds=None, label_hash=None, history=True):
    """runs/<name>/fold<k>/ as comp train's _finish leaves it (minus model.pt and tb/)."""
    fold, y, prepared = truth(workdir)
    label_hash = label_hash or prepared.label_map.hash
    for k in folds if folds is not None else sorted(set(fold)):
        rows = fold == k
        out = workdir / "runs" / name / f"fold{k}"
        logits = SCALE * np.eye(len(CLASSES), dtype=np.float32)[predictions(y[rows], n_wrong)]
        write_json(out / "config.json", {"name": name, "fold": int(k), "arch": f"arch_{name}", "tta": "flip",
                                         "label_hash": label_hash, "num_classes": len(CLASSES)})
        if history:
            epochs = np.arange(1, 5)
            write_csv(out / "history.csv", pd.DataFrame({
                "epoch": epochs, "step": epochs * 10, "train_loss": 1.2 / epochs, "train_accuracy": 0.5 + 0.1 * epochs,
                "val_loss": 1.3 / epochs + 0.05 * k, "val_accuracy": 0.4 + 0.1 * epochs - 0.02 * k,
                "val_macro_f1": 0.4 + 0.1 * epochs, "lr": 0.1 * (1 - epochs / 5), "seconds": 5.0,
                "images_per_second": 100.0}))
        test_n = len(prepared.test)
        write_npz(out / "oof.npz", ids=prepared.folds.id.to_numpy()[rows].astype(str), logits=logits,
                  labels=y[rows], fold=np.full(rows.sum(), k))
        write_npz(out / "test.npz", ids=prepared.test.id.to_numpy().astype(str),
                  logits=np.zeros((test_n, len(CLASSES)), np.float32))
        write_json(out / "metrics.json", {"accuracy": 0.0, "tta": "flip", "accuracy_no_tta": 0.0,
                                          "best_epoch": 2 + int(k), "weights_epoch": 4, "epochs_run": 4,
                                          "train_seconds": 10.0 * (k + 1),
                                          "label_hash": label_hash})


def all_predictions(workdir, n_wrong):
    fold, y, _ = truth(workdir)
    predicted = np.empty_like(y)
    for k in sorted(set(fold)):
        predicted[fold == k] = predictions(y[fold == k], n_wrong)
    return y, predicted


def hand_macro_f1(y, predicted):
    f1s = []
    for c in range(len(CLASSES)):
        tp = np.sum((predicted == c) & (y == c))
        fp, fn = np.sum((predicted == c) & (y != c)), np.sum((predicted != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s))


def hand_log_loss(n_rows, n_wrong_rows):
    correct = -math.log(math.exp(SCALE) / (math.exp(SCALE) + 2))
    wrong = -math.log(1 / (math.exp(SCALE) + 2))
    return ((n_rows - n_wrong_rows) * correct + n_wrong_rows * wrong) / n_rows


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    make_competition(root / "data", "cifar", classes=CLASSES, per_class=6, n_test=5, size=8)
    workdir = root / "work"
    prepare(PrepareOptions(str(root / "data"), str(workdir), folds=3))
    for name, n_wrong in N_WRONG.items():
        write_run(workdir, name, n_wrong)
    write_run(workdir, "partial", 0, folds=[0, 1], history=False)  # other OOF rows: left out of blends
    return workdir


@pytest.fixture(scope="module")
def result(competition):
    return report(ReportOptions(workdir=str(competition)))


def test_leaderboard_order_and_numbers_match_hand_computation(competition, result):
    board = result["leaderboard"]
    # partial is as perfect as good, on 12 rows instead of 18: the run with more OOF rows ranks first
    assert list(board.run) == ["good", "partial", "noisy", "weak"]
    for name, n_wrong in N_WRONG.items():
        row = board.set_index("run").loc[name]
        y, predicted = all_predictions(competition, n_wrong)
        assert row.folds == 3 and row.oof_rows == 18 and row.arch == f"arch_{name}" and row.tta == "flip"
        assert row.accuracy == pytest.approx(1 - 3 * n_wrong / 18)
        assert row.log_loss == pytest.approx(hand_log_loss(18, 3 * n_wrong))
        assert row.macro_f1 == pytest.approx(hand_macro_f1(y, predicted))
        assert row.mean_weights_epoch == 4  # the weights kept (no early stopping: the last), not the best epoch
        assert row.train_seconds == pytest.approx(10 + 20 + 30)
    partial = board.set_index("run").loc["partial"]
    assert partial.folds == 2 and partial.oof_rows == 12 and partial.fold_ids == "0 1"
    on_disk = pd.read_csv(result["paths"]["leaderboard.csv"])
    assert list(on_disk.run) == list(board.run)


def test_blend_comparison_uses_the_shared_rows_and_names_runs_left_out(result):
    assert result["blend_runs"] == ["good", "noisy", "weak"] and result["left_out"] == ["partial"]
    assert any("partial" in note and "left out" in note for note in result["notes"])
    blends = result["blends"].set_index("method")
    assert set(blends.index) == {"soft", "logit", "hard", "rank", "select", "stack"}
    assert blends.nested.to_dict() == {m: m in ("select", "stack") for m in blends.index}
    # on the first row of each fold noisy and weak both pick the next class and outvote good
    assert blends.loc["hard", "accuracy"] == pytest.approx(1 - 3 / 18)
    assert result["blends"].accuracy.is_monotonic_decreasing
    assert result["best_blend"] == result["blends"].method.iloc[0]


def test_confusion_matrix_by_hand_and_from_the_run_data(competition, result):
    np.testing.assert_allclose(confusion(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3),
                               [[0.5, 0.5, 0], [0, 1, 0], [0, 1, 0]])
    assert confusion(np.array([0, 0]), np.array([0, 1]), 3)[2].tolist() == [0, 0, 0]  # no rows: zeros, not NaN
    y, predicted = all_predictions(competition, N_WRONG["weak"])
    expected = np.zeros((3, 3))
    for true, guess in zip(y, predicted):
        expected[true, guess] += 1
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result["confusion"]["weak"], expected)
    np.testing.assert_allclose(result["confusion"]["weak"].sum(axis=1), 1.0)
    np.testing.assert_allclose(result["confusion"]["good"], np.eye(3))


def test_per_class_table_has_one_row_per_class_name(competition, result):
    table = result["per_class"]
    assert list(table["class"]) == CLASSES
    assert (table["good precision"] == 1).all() and (table["good support"] == 6).all()
    assert f"blend:{result['best_blend']} f1" in table
    on_disk = pd.read_csv(result["paths"]["per_class.csv"])
    assert list(on_disk["class"]) == CLASSES
    # --run picks another run; its recall per class is the share of its rows it got right
    chosen = report(ReportOptions(workdir=str(competition), run="weak", methods="soft", out=str(competition / "o")))
    y, predicted = all_predictions(competition, N_WRONG["weak"])
    recall = [np.mean(predicted[y == c] == c) for c in range(3)]
    np.testing.assert_allclose(chosen["per_class"]["weak recall"], recall)


def test_every_png_is_a_real_image_and_the_html_embeds_them(result):
    pngs = {name: path for name, path in result["paths"].items() if name.endswith(".png")}
    expected = {"blends.png", f"confusion_blend-{result['best_blend']}.png", "curves_good.png", "curves_noisy.png",
                "curves_weak.png"} | {f"confusion_{r}.png" for r in ("good", "noisy", "weak", "partial")}
    assert set(pngs) == expected  # partial has no history.csv, so no curves
    assert any("partial" in note and "history.csv" in note for note in result["notes"])
    for path in pngs.values():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
        width, height = Image.open(BytesIO(data)).size
        assert width > 500 and height > 200, path
    page = result["paths"]["report.html"].read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "http" not in without_images and "<script" not in without_images and "<link" not in without_images
    assert "Leaderboard" in page and "frog" in page


def test_a_run_with_another_label_map_is_refused(competition, tmp_path):
    write_run(competition, "alien", 0, label_hash="0123456789abcdef")
    try:
        with pytest.raises(CompError, match="label map mismatch.*alien"):
            report(ReportOptions(workdir=str(competition), out=str(tmp_path)))
        assert main(["--workdir", str(competition), "report", "--out", str(tmp_path)]) == 2
    finally:
        shutil.rmtree(competition / "runs" / "alien")


def test_learned_methods_are_skipped_with_one_fold_and_bad_options_say_what_to_do(tmp_path):
    make_competition(tmp_path / "data", "cifar", classes=CLASSES, per_class=6, n_test=5, size=8)
    workdir = tmp_path / "work"
    prepare(PrepareOptions(str(tmp_path / "data"), str(workdir), folds=3))
    write_run(workdir, "one", 1, folds=[0])
    out = report(ReportOptions(workdir=str(workdir), methods="soft,stack"))
    assert list(out["blends"].method) == ["soft"]
    assert any("stack skipped" in note for note in out["notes"])
    with pytest.raises(CompError, match="comma-separated"):
        report(ReportOptions(workdir=str(workdir), methods="soft,average"))
    with pytest.raises(CompError, match="--run nope"):
        report(ReportOptions(workdir=str(workdir), run="nope"))


def test_cli_report(competition, tmp_path, capsys):
    out = tmp_path / "site"
    code = main(["--workdir", str(competition), "report", "--runs", "good", "no*", "--methods", "soft,select",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Leaderboard" in printed and "blend" in printed.lower() and "frog" in printed
    assert list(pd.read_csv(out / "leaderboard.csv").run) == ["good", "noisy"]
    assert main(["--workdir", str(competition), "report", "--runs", "good,no*", "--out", str(tmp_path / "commas")]) == 0
    assert list(pd.read_csv(tmp_path / "commas" / "leaderboard.csv").run) == ["good", "noisy"]
    assert (out / "report.html").exists() and (out / "curves_noisy.png").exists()
