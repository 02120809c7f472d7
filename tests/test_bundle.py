"""comp export / comp infer / comp.load_bundle / comp download: predicting images the workdir never saw."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_competition, write_image, zip_folder

import comp
from comp.blend.blend import BlendOptions, fit_blend
from comp.cli import main
from comp.io import CompError
from comp.deploy.wheels import INFER_DISTS, collect_wheels, pinned

CLASSES = ["plane", "car", "bird"]
COLUMNS = sorted(CLASSES)  # the label map orders classes naturally


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prepared workdir with two trained runs (2 folds each), and its competition folder."""
    root = tmp_path_factory.mktemp("bundle")
    facts = make_competition(root / "data", "cifar", classes=CLASSES, per_class=12, n_test=10)
    work = root / "work"
    assert main(["--workdir", str(work), "prepare", "--data", str(root / "data"), "--folds", "2"]) == 0
    for name, tta, seed in (("custom_cnn", "flip", "0"), ("cnn_b", "flip+shift", "1")):
        assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--name", name, "--fold", "all",
                     "--epochs", "2", "--batch-size", "8", "--tta", tta, "--seed", seed]) == 0
    return {"work": work, "root": root, "facts": facts}


def copy_workdir(trained, tmp_path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(trained["work"], work)
    return work


@pytest.mark.parametrize("method, top", [("soft", None), ("stack", None), ("logit", "1")])
def test_infer_writes_blends_labels_with_the_workdir_deleted(trained, tmp_path, method, top, monkeypatch):
    work = copy_workdir(trained, tmp_path)
    top_args = ["--top", top] if top else []
    assert main(["--workdir", str(work), "blend", "--method", method, "--name", "b", *top_args]) == 0
    expected = pd.read_csv(work / "submissions" / "b.csv", dtype=str)
    fitted = fit_blend(BlendOptions(method, top=top, workdir=str(work)))
    expected_probs = fitted.blender.predict(fitted.aligned.test_logits)
    assert main(["--workdir", str(work), "export", "b", "--method", method, "--out", str(tmp_path / "bundle"),
                 *top_args]) == 0
    bundled = sorted(p.name for p in (tmp_path / "bundle" / "runs").iterdir())
    assert bundled == (["cnn_b", "custom_cnn"] if top is None else [fitted.aligned.runs[fitted.blender.keep[0]].name])
    test_images = tmp_path / "test_images"
    shutil.copytree(trained["root"] / "data" / "test", test_images)
    shutil.copy(trained["root"] / "data" / "sampleSubmission.csv", tmp_path / "sample.csv")
    shutil.rmtree(work)  # infer needs nothing of the workdir
    monkeypatch.chdir(tmp_path)
    assert main(["infer", "bundle", "--images", "test_images", "--ids", "sample.csv", "--out", "sub.csv"]) == 0
    got = pd.read_csv(tmp_path / "sub.csv", dtype=str)
    pd.testing.assert_frame_equal(got, expected)
    loaded = comp.load_bundle(tmp_path / "bundle")
    predictions = loaded.predict(test_images, ids=tmp_path / "sample.csv")
    ids, logits = loaded.run_logits(test_images, ids=tmp_path / "sample.csv")
    assert list(ids) == list(expected.id)
    used = [i for i in range(len(fitted.aligned.runs)) if i in fitted.blender.keep]  # the runs the bundle holds
    assert loaded.run_names == [fitted.aligned.runs[i].name for i in used]
    np.testing.assert_allclose(logits, fitted.aligned.test_logits[used], atol=5e-2)  # bf16 on both sides
    assert list(predictions.columns) == ["id", "label", *COLUMNS]
    np.testing.assert_allclose(predictions[COLUMNS].to_numpy(), expected_probs, atol=2e-2)
    # without --ids the rows are the images in natural id order: 1, 2, ..., 10
    assert main(["infer", "bundle", "--images", "test_images", "--out", "plain.csv", "--logits", "l.npz"]) == 0
    plain = pd.read_csv(tmp_path / "plain.csv", dtype=str)
    assert list(plain.id) == [str(i) for i in range(1, 11)] and list(plain.label) == list(expected.label)
    saved = np.load(tmp_path / "l.npz")
    np.testing.assert_allclose(saved["logits"], logits[:, np.argsort(ids.astype(int))], atol=1e-6)
    assert list(saved["runs"]) == loaded.run_names  # one slice a bundled run, named


def test_half_bundle_zip_and_images_zip(trained, tmp_path, monkeypatch):
    work = trained["work"]
    for half in ([], ["--half"]):
        out = tmp_path / f"b{len(half)}"
        assert main(["--workdir", str(work), "export", "x", "--runs", "custom_cnn", "--out", str(out), "--zip",
                     *half]) == 0
        manifest = json.loads((out / "manifest.json").read_text())["files"]
        assert set(manifest) >= {"bundle.json", "labels.json", "runs/custom_cnn/fold0.pt", "runs/custom_cnn/fold1.pt"}
    full, half = (sum(p.stat().st_size for p in (tmp_path / b / "runs").rglob("*.pt")) for b in ("b0", "b1"))
    assert half < 0.6 * full
    zip_folder(trained["root"] / "data" / "test", tmp_path / "test.zip")
    monkeypatch.chdir(tmp_path)
    assert main(["infer", "b0.zip", "--images", "test.zip", "--out", "a.csv"]) == 0
    assert main(["infer", "b1", "--images", "test.zip", "--out", "b.csv"]) == 0
    a, b = pd.read_csv("a.csv", dtype=str), pd.read_csv("b.csv", dtype=str)
    assert len(a) == 10 and (a.label == b.label).mean() >= 0.9  # bf16 weights: nearly always the same labels


def test_each_fold_predicts_with_its_own_tta_and_rank_is_refused(trained, tmp_path, capsys, monkeypatch):
    work = copy_workdir(trained, tmp_path)
    assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--fold", "1", "--epochs", "2",
                 "--batch-size", "8", "--tta", "none", "--force"]) == 0  # fold 0 keeps flip: --budget can do this
    assert main(["--workdir", str(work), "blend", "--runs", "custom_cnn", "--name", "b"]) == 0
    assert "(TTA flip/none)" in capsys.readouterr().out  # each fold's, not fold 0's
    expected = pd.read_csv(work / "submissions" / "b.csv", dtype=str)
    fitted = fit_blend(BlendOptions("soft", ["custom_cnn"], workdir=str(work)))
    probs = fitted.blender.predict(fitted.aligned.test_logits)
    assert main(["--workdir", str(work), "export", "v1.5", "--runs", "custom_cnn", "--zip"]) == 0
    spec = json.loads((work / "bundles" / "v1.5" / "bundle.json").read_text())
    assert [f["tta"] for f in spec["runs"][0]["folds"]] == ["flip", "none"]
    assert (work / "bundles" / "v1.5.zip").is_file()  # not v1.zip
    data = trained["root"] / "data"
    predictions = comp.load_bundle(work / "bundles" / "v1.5.zip").predict(data / "test",
                                                                         ids=data / "sampleSubmission.csv")
    assert list(predictions.label) == list(expected.label)
    np.testing.assert_allclose(predictions[COLUMNS].to_numpy(), probs, atol=2e-2)
    assert main(["--workdir", str(work), "export", "v1.5", "--runs", "custom_cnn", "--force"]) == 0
    assert sorted(p.name for p in (work / "bundles").iterdir()) == ["v1.5", "v1.5.zip"]  # nothing set aside is left
    capsys.readouterr()
    # --force replaces comp's own bundles only; a NAME is a name, never a path
    assert main(["--workdir", str(work), "export", "x", "--runs", "custom_cnn", "--out", str(work / "runs"),
                 "--force"]) == 2
    assert "is not a bundle (it has no bundle.json), so --force will not replace it" in capsys.readouterr().err
    assert (work / "runs" / "custom_cnn" / "fold0" / "metrics.json").exists()
    for name in ("", "..", "../escape", "a/b"):
        assert main(["--workdir", str(work), "export", name, "--runs", "custom_cnn", "--force"]) == 2
        assert "give a plain name" in capsys.readouterr().err
    assert main(["--workdir", str(work), "blend", "--runs", "custom_cnn", "--name", "../../evil"]) == 2
    assert "--name '../../evil': give a plain name" in capsys.readouterr().err
    assert main(["--workdir", str(work), "train", "--arch", "custom_cnn", "--fold", "0", "--name", "../up"]) == 2
    assert "--name '../up': give a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in (work / "bundles").iterdir()) == ["v1.5", "v1.5.zip"]
    assert main(["--workdir", str(work), "export", "r", "--method", "rank"]) == 2
    assert "--method rank ranks each class over the whole test set" in capsys.readouterr().err
    assert main(["--workdir", str(work), "predict", "--run", "cnn_b", "--tta", "flip", "--fold", "0"]) == 0
    assert main(["--workdir", str(work), "export", "p", "--runs", "cnn_b_tta-flip"]) == 0  # its weights came along
    assert main(["--workdir", str(work), "blend", "--runs", "cnn_b_tta-flip", "--temperature"]) == 2
    assert "--temperature learns from OOF labels and needs at least 2 folds" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(work / "bundles" / "v1.5"), "--images", str(trained["root"] / "data" / "test"),
                 "--batch-size", "0"]) == 2
    assert "--batch-size 0: give a positive number" in capsys.readouterr().err


@pytest.fixture
def bundle(trained, tmp_path):
    out = tmp_path / "bundle"
    assert main(["--workdir", str(trained["work"]), "export", "x", "--runs", "custom_cnn", "--out", str(out)]) == 0
    images = tmp_path / "images"
    shutil.copytree(trained["root"] / "data" / "test", images)
    return out, images


def test_bundle_from_newer_comp_or_changed_file_is_refused(bundle, tmp_path, capsys, monkeypatch):
    out, images = bundle
    monkeypatch.chdir(tmp_path)
    weights = out / "runs" / "custom_cnn" / "fold1.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte in the middle of the weights
    weights.write_bytes(bytes(data))
    assert main(["infer", str(out), "--images", str(images)]) == 2
    assert "fold1.pt: checksum does not match" in capsys.readouterr().err
    spec = json.loads((out / "bundle.json").read_text())
    (out / "bundle.json").write_text(json.dumps({**spec, "comp_version": "99.0.0"}))
    assert main(["infer", str(out), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert "bundle.json: made by comp 99.0.0" in err and "newer than this comp" in err


def test_undecodable_image_is_an_error_or_skipped(bundle, tmp_path, capsys, monkeypatch):
    out, images = bundle
    (images / "11.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(out), "--images", str(images)]) == 2
    assert "11.png: cannot be decoded" in capsys.readouterr().err
    assert main(["infer", str(out), "--images", str(images), "--skip-bad", "--out", "s.csv"]) == 0
    assert "11.png" in capsys.readouterr().out
    sub = pd.read_csv("s.csv", dtype=str)
    loaded = comp.load_bundle(out)
    prior = np.asarray(loaded.spec["blend"]["prior"])
    assert sub.set_index("id").label["11"] == loaded.classes[int(prior.argmax())]
    predictions = loaded.predict(images, skip_bad=True)
    assert loaded.bad == ["11"]
    np.testing.assert_allclose(predictions.set_index("id").loc["11", COLUMNS].to_numpy(float), prior)


def test_other_sizes_and_modes_are_converted_like_prepare(bundle, tmp_path, capsys, monkeypatch):
    out, images = bundle
    rgb = np.asarray(Image.open(images / "1.png").convert("RGB"))
    write_image(images / "12.png", np.kron(rgb, np.ones((2, 2, 1), np.uint8)), mode="L")  # 32x32, greyscale
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(out), "--images", str(images), "--out", "s.csv"]) == 0
    assert "note: 1 image of 1 size (32x32: 1) and 1 image of 1 mode (L: 1) never seen in training" \
        in capsys.readouterr().out
    assert len(pd.read_csv("s.csv")) == 11


def test_the_note_on_unseen_sizes_lists_three():
    from collections import Counter

    from comp.deploy.infer import _some

    sizes = Counter({"640x480": 5, "320x240": 2, "800x600": 1, "100x90": 1})
    assert _some(sizes, "size") == "9 images of 4 sizes (640x480: 5, 320x240: 2, 800x600: 1, ...)"
    assert _some(Counter(), "mode") == ""


def test_empty_folder_and_ids_without_images(bundle, tmp_path, capsys, monkeypatch):
    out, images = bundle
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["infer", str(out), "--images", str(tmp_path / "empty")]) == 2
    assert "empty: no image files" in capsys.readouterr().err
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"id": ["1", "2", "77"], "label": "plane"}).to_csv(ids, index=False)
    assert main(["infer", str(out), "--images", str(images), "--ids", str(ids)]) == 2
    err = capsys.readouterr().err
    assert "ids.csv: 1 id(s) have no image" in err and "'77'" in err
    pd.DataFrame({"id": ["2.png", "1.png"], "label": "plane"}).to_csv(ids, index=False)  # ids with extensions
    assert main(["infer", str(out), "--images", str(images), "--ids", str(ids), "--out", "ext.csv"]) == 0
    assert list(pd.read_csv(tmp_path / "ext.csv", dtype=str).id) == ["2.png", "1.png"]  # as the CSV writes them
    assert main(["infer", str(out), "--images", str(images), "--out", str(tmp_path / "empty")]) == 2
    assert f"--out {tmp_path / 'empty'}: is a folder; give a file path" in capsys.readouterr().err


def test_download_through_a_fake_kaggle_then_prepare(tmp_path, monkeypatch, capsys):
    calls = []

    class FakeApi:
        def authenticate(self):
            calls.append("auth")

        def competition_download_files(self, competition, path, quiet):
            make_competition(tmp_path / "src", "cifar", classes=CLASSES, per_class=6, n_test=4)
            zip_folder(tmp_path / "src", Path(path) / f"{competition}.zip")
            calls.append(competition)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = FakeApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["download", "tiny-comp", "--path", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err
    assert "KAGGLE_API_TOKEN" in err and "comp download tiny-comp again" in err and not calls
    monkeypatch.setenv("KAGGLE_API_TOKEN", "fake")

    class RefusedLogin(FakeApi):
        def authenticate(self):  # what kaggle does with credentials it cannot use
            raise SystemExit(1)

    module.KaggleApi = RefusedLogin
    assert main(["download", "tiny-comp", "--path", str(tmp_path / "dl")]) == 2
    assert "kaggle could not log in" in capsys.readouterr().err and not calls
    module.KaggleApi = FakeApi
    assert main(["download", "tiny-comp", "--path", str(tmp_path / "dl")]) == 0
    assert calls == ["auth", "tiny-comp"]
    assert main(["--workdir", str(tmp_path / "w"), "prepare", "--data", str(tmp_path / "dl" / "tiny-comp.zip"),
                 "--folds", "2"]) == 0


def test_wheel_set_is_pinned_and_only_what_infer_imports(tmp_path):
    versions = {"torch": "2.14.1+cu130", "numpy": "2.4.6"}
    lines = pinned(("torch", "numpy"), ["numpy==2.0.0"], version=versions.get)
    assert lines == ["torch==2.14.1", "numpy==2.0.0"]  # local tag dropped, --pin wins
    with pytest.raises(CompError, match="--pin optuna"):
        pinned(INFER_DISTS, ["optuna==4.0"])
    commands = []
    ok = lambda cmd: commands.append(cmd) or types.SimpleNamespace(returncode=0)  # noqa: E731
    requirements = collect_wheels(tmp_path / "w", "all", pins=["torch==2.13.0+cpu"], find_links=["/opt/x"], run=ok)
    assert commands[0][3] == "wheel" and commands[0][-1].startswith(tempfile.gettempdir())  # a copy of the source
    assert commands[1][3] == "download" and "torch==2.13.0+cpu" in commands[1] and "/opt/x" in commands[1]
    names = {r.split("==")[0] for r in requirements}
    assert names == {"torch", "numpy", "pandas", "pillow", "tqdm", "scipy", "scikit-learn"}
    assert collect_wheels(tmp_path / "w", "comp", run=ok) == [] and len(commands) == 3
    with pytest.raises(CompError, match="failed"):
        collect_wheels(tmp_path / "w", "comp", run=lambda cmd: types.SimpleNamespace(returncode=1))


def test_import_comp_stays_cheap_and_infer_imports_no_training_packages():
    code = ("import sys, comp; assert 'torch' not in sys.modules; import comp.deploy.infer, comp.deploy.bundle; "
            "heavy = {m.split('.')[0] for m in sys.modules} & {'optuna', 'matplotlib', 'albumentations', 'timm', "
            "'cv2', 'tensorboard', 'kaggle'}; assert not heavy, heavy; assert callable(comp.load_bundle)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(comp.__file__).resolve().parent.parent)
