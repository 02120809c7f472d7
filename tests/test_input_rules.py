"""No silent wrong answer (issue 27): the sample's columns by name, every image found or named, photos upright,
bundles and checkpoints confined, SIGTERM and a full disk leave nothing half done. Each test names its case."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from conftest import class_image, make_competition, write_image

from comp.prepare import staging
from comp.prepare.cache import load_rgb
from comp.cli import main
from comp.prepare.folds import PrepareOptions, load_prepared, prepare

ROOT = Path(__file__).resolve().parents[1]


def _prepare(root: Path, workdir: Path, **kwargs) -> dict:
    return prepare(PrepareOptions(str(root), str(workdir), **{"folds": 2, **kwargs}))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def _train_quickly(work: Path, name: str = "cnn") -> None:
    assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--name", name, "--fold", "all",
                 "--epochs", "1", "--batch-size", "8", "--tta", "none"]) == 0


# F1, F2, F17: the sample submission's columns, by name ------------------------------------------------

def test_a_column_between_id_and_label_keeps_the_samples_values(tmp_path, workdir, capsys):
    """F1/F2: `id,Usage,label`: predictions go to label, Usage stays as the sample has it, submit and infer agree."""
    facts = make_competition(tmp_path / "c", "cifar", per_class=8, n_test=12)
    sample = tmp_path / "c" / "sampleSubmission.csv"
    pd.DataFrame({"id": facts["test_ids"], "Usage": ["Public", "Private"] * 6, "label": "cat"}).to_csv(sample, index=False)
    summary = _prepare(tmp_path / "c", workdir)
    assert (summary["layout"]["sub_id_col"], summary["layout"]["sub_label_col"]) == ("id", "label")
    _train_quickly(workdir)
    assert main(["--workdir", str(workdir), "blend", "--name", "b"]) == 0
    written = pd.read_csv(workdir / "submissions" / "b.csv", dtype=str)
    assert list(written.columns) == ["id", "Usage", "label"]
    assert list(written.Usage) == ["Public", "Private"] * 6  # the sample's own column, untouched
    from comp.blend.blend import BlendOptions, fit_blend

    fitted = fit_blend(BlendOptions("soft", workdir=str(workdir)))
    predicted = fitted.label_map.decode(fitted.blender.predict(fitted.aligned.test_logits).argmax(1))
    assert list(written.label) == list(predicted)  # the predictions, in the label column
    assert main(["--workdir", str(workdir), "submit", str(workdir / "submissions" / "b.csv"), "-c", "x",
                 "--dry-run"]) == 0
    written.assign(Usage=written.label, label=written.Usage).to_csv(tmp_path / "wrong.csv", index=False)  # swapped
    capsys.readouterr()
    assert main(["--workdir", str(workdir), "submit", str(tmp_path / "wrong.csv"), "-c", "x", "--dry-run"]) == 2
    assert "has label 'Public'" in _one_line_error(capsys)
    assert main(["--workdir", str(workdir), "export", "b", "--out", str(tmp_path / "bundle")]) == 0
    assert main(["infer", str(tmp_path / "bundle"), "--images", str(tmp_path / "c" / "test"), "--ids", str(sample),
                 "--out", str(tmp_path / "infer.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "infer.csv", dtype=str), written)


def test_label_before_id_and_the_flags_that_name_the_columns(tmp_path, workdir, capsys):
    """F17: `label,id` is read by name; columns no rule can tell apart are one line naming them and the flags."""
    facts = make_competition(tmp_path / "c", "cifar", per_class=4, n_test=6)
    sample = tmp_path / "c" / "sampleSubmission.csv"
    pd.DataFrame({"label": "cat", "id": facts["test_ids"]}).to_csv(sample, index=False)
    summary = _prepare(tmp_path / "c", workdir)
    assert (summary["layout"]["sub_id_col"], summary["layout"]["sub_label_col"]) == ("id", "label")
    pd.DataFrame({"a": facts["test_ids"], "b": "x", "c": "cat"}).to_csv(sample, index=False)
    capsys.readouterr()
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2"]) == 2
    err = _one_line_error(capsys)
    assert "['a', 'b', 'c']" in err and "--sub-id-col NAME --sub-label-col NAME" in err
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2",
                 "--sub-id-col", "a", "--sub-label-col", "c"]) == 0
    layout = json.loads((workdir / "folds" / "prepare.json").read_text())["layout"]
    assert (layout["sub_id_col"], layout["sub_label_col"]) == ("a", "c")
    # two columns with no usual name: the one whose values name test images is the id, and it is said
    pd.DataFrame({"klass": "cat", "key": facts["test_ids"]}).to_csv(sample, index=False)
    capsys.readouterr()
    summary = _prepare(tmp_path / "c", workdir)
    assert (summary["layout"]["sub_id_col"], summary["layout"]["sub_label_col"]) == ("key", "klass")
    assert "'key' is taken as the id" in capsys.readouterr().out


# F3: photos upright -------------------------------------------------------------------------------

def _rotated_photo(path: Path, pixels: np.ndarray, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied_by_the_one_decoder(tmp_path, workdir, capsys):
    rng = np.random.default_rng(0)
    tall = rng.integers(0, 255, (24, 16, 3), dtype=np.uint8)
    tall[:4] = 255  # a white top band: it lands on a side when the orientation is ignored
    _rotated_photo(tmp_path / "phone.jpg", tall)
    with Image.open(tmp_path / "phone.jpg") as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert upright.shape == (16, 24, 3)
    np.testing.assert_array_equal(load_rgb(tmp_path / "phone.jpg", None), upright)
    # prepare: the cache holds the upright photo, and the summary says how many were turned
    make_competition(tmp_path / "c", "cifar", per_class=4, n_test=4, ext=".jpg")
    for image_id in ("1", "2"):
        with Image.open(tmp_path / "c" / "train" / f"{image_id}.jpg") as img:
            _rotated_photo(tmp_path / "c" / "train" / f"{image_id}.jpg", np.asarray(img.convert("RGB")), 8)
    _rotated_photo(tmp_path / "c" / "test" / "1.jpg", np.asarray(Image.open(tmp_path / "c" / "test" / "1.jpg")), 3)
    summary = _prepare(tmp_path / "c", workdir)
    assert summary["turned_upright"] == {"train": 2, "test": 1}
    assert "turned upright by their EXIF orientation" in capsys.readouterr().out
    prepared = load_prepared(workdir)
    row = int(np.flatnonzero(prepared.folds.id == "1")[0])
    with Image.open(tmp_path / "c" / "train" / "1.jpg") as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB").resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(prepared.train_images[row], expected)


# F4, F13, F16, F8 and what the rule leaves out: one rule for which files are images ----------------------

def _class_folders(root: Path, per_class: int = 10) -> None:
    rng = np.random.default_rng(1)
    for k, label in enumerate(["cat", "dog", "frog"]):
        for i in range(per_class):
            folder = root / "train" / label / ("batch2" if i % 2 else "")  # half of them one folder down
            folder.mkdir(parents=True, exist_ok=True)
            ext = (".png", ".jfif", ".jpe")[i % 3]
            Image.fromarray(class_image(k, 3, 16, rng)).save(folder / f"{label}{i}{ext}",
                                                              format="PNG" if ext == ".png" else "JPEG")
    (root / "test").mkdir()
    for i in range(6):
        write_image(root / "test" / f"t{i}.png", class_image(i % 3, 3, 16, rng))
    pd.DataFrame({"filename": [f"t{i}.png" for i in range(6)], "category": "cat"}).to_csv(
        root / "sample_submission.csv", index=False)


def test_images_in_sub_folders_and_every_jpeg_extension_count(tmp_path, workdir, capsys):
    """F4 (train/cat/batch2/*.png), F13 (.jfif, .jpe), F16 (.ipynb_checkpoints is no class), and the files the
    rule leaves out are counted and named."""
    _class_folders(tmp_path / "c")
    hidden = tmp_path / "c" / "train" / ".ipynb_checkpoints"
    hidden.mkdir()
    for i in range(5):
        write_image(hidden / f"x{i}.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "c" / "train" / "cat" / "notes.txt").write_text("not an image")
    summary = _prepare(tmp_path / "c", workdir)
    assert summary["train_images"] == 30 and summary["num_classes"] == 3
    assert set(summary["images_per_class"]) == {"cat", "dog", "frog"}
    out = capsys.readouterr().out
    assert "6 file(s) in train/ are not counted as images: 5 hidden or in hidden folders" in out
    assert "1 with other extensions (.txt: 1" in out
    assert summary["files_not_images"]["train"]["count"] == 6
    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    assert {Path(p).suffix for p in folds.path} == {".png", ".jfif", ".jpe"}


def test_names_that_repeat_in_sub_folders_get_their_path_as_id(tmp_path, workdir):
    _class_folders(tmp_path / "c", per_class=6)
    for label in ("cat", "dog", "frog"):
        (tmp_path / "c" / "train" / label / "batch3").mkdir()
        shutil.copy(next((tmp_path / "c" / "train" / label).glob("*.png")),
                    tmp_path / "c" / "train" / label / "batch3" / "same.png")
        shutil.copy(next((tmp_path / "c" / "train" / label).glob("*.png")),
                    tmp_path / "c" / "train" / label / "same.png")
    _prepare(tmp_path / "c", workdir)
    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    assert {"cat/same.png", "cat/batch3/same.png", "dog/batch2/dog1.jfif"} <= set(folds.id)


def test_an_id_that_matches_two_files_is_refused(tmp_path, workdir, capsys):
    """F8: test/5.png and test/5.jpg: prepare names both, as train and infer do, never picks one."""
    make_competition(tmp_path / "c", "cifar", per_class=4, n_test=6)
    write_image(tmp_path / "c" / "test" / "5.jpg", np.zeros((16, 16, 3), np.uint8))
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2"]) == 2
    err = capsys.readouterr().err
    assert "test id '5' matches 2 files" in err and "5.jpg, 5.png" in err and "Traceback" not in err
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2",
                 "--ext", "png"]) == 0  # the advice works
    (tmp_path / "c" / "test" / "5.jpg").unlink()
    write_image(tmp_path / "c" / "train" / "3.jpg", np.zeros((16, 16, 3), np.uint8))
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2"]) == 2
    assert "trainLabels.csv row 4: id '3' matches 2 files" in capsys.readouterr().err


def test_infer_reads_images_by_the_same_rule_as_prepare(tmp_path, capsys):
    """F14/F15: comp infer --images DIR takes .jfif/.jpe files and images in sub-folders, like a zip of them."""
    from comp.deploy.infer import image_table

    folder = tmp_path / "imgs"
    (folder / "more").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for i, ext in enumerate([".png", ".jfif", ".jpe"] * 20):
        sub = folder / "more" if i % 2 else folder
        Image.new("RGB", (8, 8)).save(sub / f"{i}{ext}", format="PNG" if ext == ".png" else "JPEG")
    Image.new("RGB", (8, 8)).save(folder / ".hidden" / "99.png")
    table = image_table(folder, "stem", tmp_path / "scratch")
    assert len(table) == 60 and list(table.id[:3]) == ["0", "1", "2"]
    assert "1 file(s) in" in capsys.readouterr().out
    shutil.make_archive(str(tmp_path / "imgs"), "zip", folder)
    (tmp_path / "scratch").mkdir()
    assert list(image_table(tmp_path / "imgs.zip", "stem", tmp_path / "scratch").id) == list(table.id)


# F5, F6, F12: nothing loaded from outside, no code run ---------------------------------------------------

@pytest.fixture(scope="module")
def small_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    make_competition(root / "c", "cifar", per_class=8, n_test=6)
    work = root / "work dir"  # a space: the printed commands must survive a paste (F7)
    assert main(["--workdir", str(work), "prepare", "--data", str(root / "c"), "--folds", "2"]) == 0
    _train_quickly(work)
    return work


def _export(work: Path, out: Path, *flags: str) -> None:
    assert main(["--workdir", str(work), "export", "b", "--out", str(out), *flags]) == 0


def test_a_bundle_naming_files_outside_it_is_refused(small_workdir, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    _export(small_workdir, bundle)
    outside = tmp_path / "outside.pt"
    shutil.copy(next((bundle / "runs" / "cnn").glob("*.pt")), outside)
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["runs"][0]["folds"][0]["file"] = "../outside.pt"
    (bundle / "bundle.json").write_text(json.dumps(spec))
    images = small_workdir.parent / "c" / "test"
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in ("../outside.pt", "/etc/hostname"):  # F5: a relative path out of it, F6: an absolute one
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "files": {rel: {"sha256": "0" * 64,
                                                                                      "bytes": 1}}}))
        capsys.readouterr()
        assert main(["infer", str(bundle), "--images", str(images)]) == 2
        assert f"manifest.json: names {rel!r}, which lies outside" in _one_line_error(capsys)
    # a manifest that checks out, with bundle.json naming the file outside: refused before anything loads it
    from comp.deploy.manifest import write_manifest

    write_manifest(bundle)
    assert main(["infer", str(bundle), "--images", str(images)]) == 2
    assert "bundle.json: names '../outside.pt', which lies outside" in _one_line_error(capsys)


class _MakesAFile:
    """Unpickling runs Path.touch: what a crafted checkpoint does."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoints_and_weights_load_tensors_only(small_workdir, tmp_path, capsys):
    """F12: a checkpoint.pt or model.pt that would run code on loading is refused, and the code never runs."""
    work = tmp_path / "w"
    shutil.copytree(small_workdir, work)
    fold = work / "runs" / "cnn" / "fold0"
    made = tmp_path / "pwned"
    for stage in ("model.pt", "checkpoint.pt"):
        torch.save({"state_dict": {}, "config": {}, "x": _MakesAFile(made)}, fold / stage)
    capsys.readouterr()
    assert main(["--workdir", str(work), "predict", "--run", "cnn", "--tta", "flip", "--fold", "0"]) == 2
    assert "holds objects other than tensors and plain data" in _one_line_error(capsys)
    (fold / "metrics.json").unlink()  # an unfinished fold with a crafted checkpoint
    assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--name", "cnn", "--fold", "0",
                 "--epochs", "1", "--batch-size", "8", "--tta", "none", "--resume"]) == 2
    assert "checkpoint.pt: holds objects other than tensors" in _one_line_error(capsys)
    assert not made.exists()


# F7, F9, F10: export and infer under SIGTERM, and what a kill -9 left --------------------------------------

def test_export_prints_a_quoted_infer_command(small_workdir, tmp_path, capsys):
    capsys.readouterr()
    _export(small_workdir, small_workdir / "bundles" / "b b", "--force")
    assert f"comp infer '{small_workdir / 'bundles' / 'b b'}' --images" in capsys.readouterr().out


SIGTERM_SELF = """
import os, signal, sys
import comp.{module} as target
real = target.{function}
def then_sigterm(*args, **kwargs):
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` does, mid-command
    return result
target.{function} = then_sigterm
from comp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _sigterm_during(module: str, function: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", SIGTERM_SELF.format(module=module, function=function), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_sigterm_during_export_and_infer_leaves_no_temporary(small_workdir, tmp_path):
    bundles, tmp = small_workdir / "bundles", tmp_path / "tmp"
    tmp.mkdir()
    done = _sigterm_during("deploy.bundle", "write_manifest", ["--workdir", str(small_workdir), "export", "t"], tmp)
    assert done.returncode == 143 and "terminated (SIGTERM)" in done.stderr, done.stderr
    assert not (bundles / "t").exists() and not [p for p in bundles.iterdir() if ".tmp-" in p.name]
    _export(small_workdir, bundles / "z", "--zip", "--force")
    done = _sigterm_during("deploy.infer", "image_table", ["infer", str(bundles / "z.zip"), "--images",
                                                   str(small_workdir.parent / "c" / "test"), "--out",
                                                   str(tmp_path / "s.csv")], tmp)
    assert done.returncode == 143, done.stderr
    assert list(tmp.iterdir()) == []  # neither the extracted bundle nor infer's scratch folder


def test_the_next_export_and_infer_remove_what_a_kill_left(small_workdir, tmp_path, monkeypatch, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    bundles = small_workdir / "bundles"
    bundles.mkdir(exist_ok=True)
    (bundles / f".k.tmp-{dead.pid}").mkdir()
    (bundles / f".k.zip.tmp-{dead.pid}").write_bytes(b"half a zip")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    for prefix in ("bundle", "infer"):
        (tmp_path / f"comp-{prefix}-{dead.pid}-abc").mkdir()
    alive = staging.temp_dir("bundle")  # this process's own: kept
    _export(small_workdir, bundles / "k", "--zip", "--force")
    assert "removed 2 half-written export(s)" in capsys.readouterr().out
    assert sorted(p.name for p in bundles.iterdir() if p.name.startswith(".")) == []
    assert main(["infer", str(bundles / "k.zip"), "--images", str(small_workdir.parent / "c" / "test"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert not list(tmp_path.glob(f"comp-*-{dead.pid}-*")) and alive.exists()


# F11: a full disk ---------------------------------------------------------------------------------------

def test_a_full_disk_while_saving_a_fold_is_named_and_keeps_the_finished_fold(small_workdir, tmp_path, monkeypatch,
                                                                               capsys):
    work = tmp_path / "w"
    shutil.copytree(small_workdir, work)
    fold = work / "runs" / "cnn" / "fold0"
    before = {name: (fold / name).read_bytes() for name in ("metrics.json", "oof.npz", "model.pt", "config.json")}

    def disk_full(obj, f, *args, **kwargs):  # what torch.save says when the disk fills mid-file
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", disk_full)
    capsys.readouterr()
    assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--name", "cnn", "--fold", "0",
                 "--epochs", "1", "--batch-size", "8", "--tta", "none", "--force"]) == 2
    err = _one_line_error(capsys)
    assert "checkpoint.pt: the disk is full: it needs about" in err and "MB free; nothing was replaced" in err
    assert {name: (fold / name).read_bytes() for name in before} == before  # the finished fold, whole
    assert not [p for p in fold.parent.rglob("*") if ".tmp-" in p.name]
