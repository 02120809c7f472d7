"""Tests for comp.models: registry, every architecture's shapes and one training epoch,
fastnet's whitening/freezing hooks, and the timm adapter (stem adaptation, weight files)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from comp.models import count_macs, count_params, create_model, list_models, model_info, register_model

ARCHS = ["custom_cnn", "simple_cnn", "vgg_cnn", "vgg16", "resnet18", "resnet50", "custom_effnet",
         "mobilenetv3_small", "squeezenet", "fastnet", "fastnet_l", "fastnet_l_muon", "fastnet_xl", "fastnet_s2d", "fastnet_s2d_deep", "fastnet_l_s2d"]
RECIPE_KEYS = {"epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
               "label_smoothing", "schedule", "bias_lr_scale", "ema", "aug", "tta", "patience", "muon_lr", "muon_momentum"}
NUM_CLASSES = 10


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # The test machine is shared; one thread keeps the suite predictable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prepare(model, images):
    """Call the optional trainer hooks the way the trainer does."""
    if hasattr(model, "init_from_data"):
        model.init_from_data(images)
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(0, 1.0)


# ----------------------------------------------------------------------------- registry

def test_list_models_has_every_arch():
    names = list_models()
    assert names == sorted(names)
    assert set(ARCHS) <= set(names)
    assert not any(n.startswith("timm/") for n in names)


@pytest.mark.parametrize("name", ARCHS)
def test_model_info(name):
    info = model_info(name)
    assert info["name"] == name and info["description"]
    assert set(info["recipe"]) <= RECIPE_KEYS
    assert info["recipe"].get("optimizer", "sgd") in {"sgd", "adam", "adamw", "muon"}
    assert info["recipe"].get("schedule", "cosine") in {"onecycle", "cosine", "plateau", "constant", "triangle", "linear"}
    assert info["family"] in {"simple", "vgg", "resnet", "effnet", "mobilenet", "squeezenet", "fastnet"}


def test_unknown_model_error_lists_names_and_timm_form():
    with pytest.raises(ValueError, match="unknown model 'nope'") as err:
        create_model("nope")
    assert "resnet50" in str(err.value) and "fastnet" in str(err.value)
    assert "timm/<name>" in str(err.value)
    with pytest.raises(ValueError, match="timm/<name>"):
        model_info("nope")
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm/definitely_not_a_model")


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        @register_model(description="dup")
        def resnet18(num_classes, in_chans, img_size, **kw):  # noqa: F811
            return nn.Identity()


def test_unknown_kwarg_is_rejected():
    with pytest.raises(TypeError):
        create_model("simple_cnn", no_such_option=1)


# ----------------------------------------------------------------------------- every arch

@pytest.mark.parametrize("name", ARCHS)
def test_forward_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=3, img_size=32)
    assert count_params(model) > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.train()
    logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, NUM_CLASSES) and torch.isfinite(logits).all()
    for size in (16, 64):  # must also build and run at other sizes (and other in_chans)
        model = create_model(name, num_classes=3, in_chans=1, img_size=size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


@pytest.mark.parametrize("name", ARCHS)
def test_trains_one_epoch(name):
    torch.manual_seed(0)
    images = torch.randn(32, 3, 32, 32)
    labels = torch.arange(32) % NUM_CLASSES
    model = create_model(name, num_classes=NUM_CLASSES, img_size=32)
    _prepare(model, images)
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    before = {k: p.detach().clone() for k, p in trainable.items()}

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(images), labels).item()

    loss_before = eval_loss()
    optimizer = torch.optim.SGD(trainable.values(), lr=0.01, momentum=0.9, nesterov=True)
    model.train()
    for idx in torch.randperm(32).split(16):  # one epoch, batch 16
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item())
    loss_after = eval_loss()

    assert math.isfinite(loss_after) and loss_after != loss_before
    changed = [k for k, p in trainable.items() if not torch.equal(before[k], p.detach())]
    # Gradients reach both ends of the net. Not every tensor must move: with zero-init
    # residual BNs, early BN scales get updates below float32 resolution around 1.0.
    first, last = list(trainable)[0], list(trainable)[-1]
    assert first in changed and last in changed
    assert len(changed) >= 0.5 * len(trainable), sorted(set(trainable) - set(changed))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_param_counts_match_torchvision():
    tv = pytest.importorskip("torchvision.models")
    assert count_params(create_model("mobilenetv3_small")) == count_params(tv.mobilenet_v3_small(num_classes=10))
    assert count_params(create_model("squeezenet")) == count_params(tv.squeezenet1_1(num_classes=10))
    # with the ImageNet stem (img_size > 64) the ResNets are torchvision's exactly
    assert count_params(create_model("resnet18", img_size=224)) == count_params(tv.resnet18(num_classes=10))
    assert count_params(create_model("resnet50", img_size=224)) == count_params(tv.resnet50(num_classes=10))
    assert count_params(create_model("vgg16").features) == count_params(tv.vgg16_bn().features)


# ----------------------------------------------------------------------------- fastnet

def _correlated_images(n=256, size=32):
    """Smooth, channel-correlated images: 2x2 patches are far from white."""
    torch.manual_seed(0)
    base = F.interpolate(torch.randn(n, 1, size // 4, size // 4), size=size, mode="bilinear")
    mix = torch.randn(n, 3, size, size) * 0.3
    images = torch.cat([base, 0.8 * base, -0.5 * base], 1) + mix
    return (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)


def _whitened_second_moment(model, images):
    half = model.whiten.out_channels // 2
    out = F.conv2d(images, model.whiten.weight[:half])  # without bias: the linear whitening map
    flat = out.permute(0, 2, 3, 1).reshape(-1, half)
    return flat.T @ flat / flat.shape[0]


def test_fastnet_whitening_init_from_data():
    images = _correlated_images()
    model = create_model("fastnet", img_size=32)
    assert model.whiten.out_channels == 24 and not model.whiten.weight.requires_grad
    eye = torch.eye(12)
    err_before = (_whitened_second_moment(model, images) - eye).norm()
    model.init_from_data(images)
    err_after = (_whitened_second_moment(model, images) - eye).norm()
    assert err_after < 0.05 < err_before
    assert err_after < 0.02 * err_before
    w = model.whiten.weight
    assert torch.equal(w[12:], -w[:12])


def test_fastnet_s2d_keeps_the_24_directions_of_most_variance():
    """A 4x4 fold (128px) has 192 patch directions; the whitening keeps the 24 of most variance,
    still whitened (unit second moment) and ordered, so the first group is the 64px net's size."""
    images = _correlated_images(n=64, size=128)
    model = create_model("fastnet_s2d", img_size=128, space_to_depth=4)
    assert model.space_to_depth == 4 and model.whiten.out_channels == 48
    assert create_model("fastnet_s2d", img_size=64).whiten.out_channels == 48  # 24 of the 2x2 fold's 48
    assert create_model("fastnet", img_size=32).whiten.out_channels == 24  # all 12 of a 32px image's
    model.init_from_data(images)
    folded = model._fold(images)
    half = model.whiten.out_channels // 2
    out = F.conv2d(folded, model.whiten.weight[:half]).permute(0, 2, 3, 1).reshape(-1, half)
    assert ((out.T @ out / out.shape[0]) - torch.eye(half)).abs().max() < 0.05
    # the kept rows are the covariance's top 24 eigenvectors, in order: each captures its eigenvalue
    patches = folded.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 192).double()
    cov = patches.T @ patches / patches.shape[0]
    top = torch.linalg.eigvalsh(cov).flip(0)[:half]
    rows = model.whiten.weight[:half].reshape(half, -1).double()
    rows = rows / rows.norm(dim=1, keepdim=True)
    captured = ((rows @ cov) * rows).sum(1)
    torch.testing.assert_close(captured, top, rtol=1e-3, atol=1e-6)
    macs_64 = count_macs(create_model("fastnet_s2d", img_size=64), 3, 64)
    assert count_macs(model, 3, 128) < 1.2 * macs_64  # without the cap: 2.4x


@pytest.mark.parametrize("size", [75, 99, 363])
def test_fastnet_s2d_pads_a_side_its_fold_does_not_divide(size):
    """The planner folds 75px by 2 and 363px by 8: the edge is repeated up to the next multiple, not a crash."""
    from comp.train.recipe import DataShape, default_arch

    arch, kwargs, _ = default_arch(DataShape(size, 100, NUM_CLASSES))
    model = create_model(arch, img_size=size, **kwargs).eval()
    assert arch == "fastnet_s2d_deep" and size % model.space_to_depth != 0
    if size == 363:  # 768 patch directions, 24 kept
        assert model.space_to_depth == 8 and model.whiten.out_channels == 48
    images = torch.rand(2, 3, size, size)
    model.init_from_data(images)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


def test_weights_of_another_net_are_refused_by_name():
    from comp.train.checkpoint import load_weights
    from comp.io import CompError

    state = create_model("fastnet", img_size=32).state_dict()
    with pytest.raises(CompError, match=r"old/model.pt: the saved weights do not fit .*size mismatch.*train the run again"):
        load_weights(create_model("fastnet_l", img_size=32), state, "old/model.pt")


def test_fastnet_freezes_whitening_bias_after_epoch_3():
    model = create_model("fastnet")
    for epoch in range(6):
        model.on_epoch_start(epoch, 6.0)
        assert model.whiten.bias.requires_grad == (epoch < 3)
    # BN scale is frozen, BN shift trainable, as in airbench
    assert not model.groups[0].norm1.weight.requires_grad and model.groups[0].norm1.bias.requires_grad


def test_fastnet_shapes_and_recipe():
    assert len(create_model("fastnet", img_size=32).groups) == 3
    assert len(create_model("fastnet", img_size=64).groups) == 4
    from comp.models.fastnet import FASTNET_SGD_RECIPE

    sgd = FASTNET_SGD_RECIPE  # airbench94
    assert sgd["lr"] == pytest.approx(11.5 / (1 + 1 / 0.15))  # 1.5
    # per-step decay lr*wd equals airbench's 0.0153 * 1024 / kilostep_scale
    assert sgd["lr"] * sgd["weight_decay"] == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), rel=1e-4)
    assert sgd["schedule"] == "triangle" and sgd["ema"] and sgd["bias_lr_scale"] == 64
    muon = model_info("fastnet")["recipe"]  # the default: airbench94_muon, summed loss -> mean loss
    assert (muon["optimizer"], muon["batch_size"], muon["epochs"], muon["muon_lr"]) == ("muon", 2000, 8, 0.24)
    assert muon["lr"] == pytest.approx(0.67 * (9 / 256) ** 2 * 2000, rel=1e-4)  # head: 1/256 there, 1/9 here
    assert muon["lr"] * muon["bias_lr_scale"] == pytest.approx(0.053 * 2000, rel=1e-3)  # biases
    assert muon["lr"] * muon["weight_decay"] == pytest.approx(2e-6 * 2000, rel=1e-3)  # decay per step
    assert muon["aug"] == "altflip,translate:2" and muon["schedule"] == "linear" and not muon["ema"]
    assert create_model("fastnet_s2d", img_size=64).space_to_depth == 2
    # --arch by hand builds the planner's net: the fold grows with the image (4 at 128px, 8 at 256px)
    assert [create_model("fastnet_s2d_deep", img_size=size).space_to_depth for size in (96, 128, 256)] == [2, 4, 8]
    assert create_model("fastnet_s2d", img_size=32).space_to_depth == 1  # below 64px: plain fastnet


def test_fastnet_s2d_deep_is_three_convs_a_group_at_about_fastnet_s2ds_cost():
    deep, plain = create_model("fastnet_s2d_deep", img_size=64), create_model("fastnet_s2d", img_size=64)
    assert deep.space_to_depth == 2 and [g.depth for g in deep.groups] == [3, 3, 3]
    assert [g.conv1.out_channels for g in deep.groups] == [64, 192, 384] and deep.head.in_features == 384
    assert 1.1 < count_macs(deep, 3, 64) / count_macs(plain, 3, 64) < 1.3
    assert model_info("fastnet_s2d_deep")["recipe"] == model_info("fastnet_s2d")["recipe"]
    out = deep(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_fastnet_xl_is_airbench96s_net_and_recipe():
    model = create_model("fastnet_xl", img_size=32)
    assert [g.conv1.out_channels for g in model.groups] == [128, 384, 512]
    group = model.groups[1].eval()
    assert group.depth == 3 and group.conv3.weight.shape == (384, 384, 3, 3)
    x = torch.randn(2, 128, 16, 16)
    with torch.no_grad():  # conv1 -> pool -> BN -> GELU = h; then GELU(BN(conv3(GELU(BN(conv2(h))))) + h)
        h = group.activ(group.norm1(group.pool(group.conv1(x))))
        y = group.activ(group.norm2(group.conv2(h)))
        torch.testing.assert_close(group(x), group.activ(group.norm3(group.conv3(y)) + h))
    recipe = model_info("fastnet_xl")["recipe"]
    assert (recipe["optimizer"], recipe["epochs"], recipe["aug"]) == ("sgd", 45, "flip,translate:4,cutout:12")
    assert recipe["lr"] == pytest.approx(9.0 / (1 + 1 / 0.15))  # airbench96's lr 9.0 per 1024
    assert recipe["lr"] * recipe["weight_decay"] == pytest.approx(0.012 * 1024 / (1024 * (1 + 1 / 0.15)), rel=1e-4)
    with pytest.raises(ValueError, match="2 or 3 convs"):
        create_model("fastnet", depth=4)


def test_count_macs_of_convs_and_linear_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    assert count_macs(net, 3, 8) == 4 * 8 * 8 * 3 * 3 * 3 + 2 * 4 * 8 * 8
    grouped = nn.Conv2d(4, 8, 3, padding=1, groups=4)
    assert count_macs(grouped, 4, 8) == 8 * 8 * 8 * 1 * 3 * 3
    fastnet, xl = (count_macs(create_model(a), 3, 32) for a in ("fastnet", "fastnet_xl"))
    assert 3 < xl / fastnet < 5  # airbench96's net: about 4x airbench94's work an image


# ----------------------------------------------------------------------------- timm adapter

def test_timm_stem_adapted_for_small_images():
    model = create_model("timm/resnet18", num_classes=5, img_size=32)
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    kept = create_model("timm/resnet18", num_classes=5, img_size=32, adapt=False)
    assert kept.conv1.stride == (2, 2) and isinstance(kept.maxpool, nn.MaxPool2d)
    large = create_model("timm/resnet18", num_classes=5, img_size=128)
    assert large.conv1.stride == (2, 2)


def test_timm_generic_stem_adaptation():
    model = create_model("timm/mobilenetv3_small_050", num_classes=4, img_size=32)
    assert model.conv_stem.stride == (1, 1)
    # models that take img_size are built at that size instead, patch embedding untouched
    vit = create_model("timm/vit_tiny_patch16_224", num_classes=4, img_size=32)
    assert vit.patch_embed.proj.stride == (16, 16)
    with torch.no_grad():
        assert vit.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_loads_local_weights_file(tmp_path, suffix):
    timm = pytest.importorskip("timm")
    source = timm.create_model("resnet18", num_classes=7).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    else:  # a training checkpoint wrapper with a DataParallel prefix is unwrapped too
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)

    model = create_model("timm/resnet18", weights=str(path), num_classes=5, img_size=32)
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (5, 512)  # classifier mismatch dropped, freshly initialised
    for key, value in source.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key

    gray = create_model("timm/resnet18", weights=str(path), num_classes=5, in_chans=1)
    assert torch.allclose(gray.conv1.weight, source["conv1.weight"].sum(1, keepdim=True))


def test_native_model_weights_file(tmp_path):
    source = create_model("custom_cnn", num_classes=10, img_size=32).state_dict()
    path = tmp_path / "custom_cnn.pt"
    torch.save(source, path)
    model = create_model("custom_cnn", num_classes=4, img_size=32, weights=path)
    loaded = model.state_dict()
    for key, value in source.items():
        if not key.startswith("classifier.6."):  # output layer: 10 vs 4 classes
            assert torch.equal(loaded[key], value), key
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("custom_cnn", pretrained=True)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_model("custom_cnn", weights=tmp_path / "missing.pt")


def test_timm_weights_of_another_net_are_refused(tmp_path):
    pytest.importorskip("timm")
    from comp.io import CompError

    path = tmp_path / "other.pt"
    torch.save({"encoder.block0.weight": torch.zeros(3)}, path)  # nothing here fits a resnet18
    with pytest.raises(CompError, match=r"--weights .*other.pt: none of its 1 tensors fits this net"):
        create_model("timm/resnet18", weights=str(path), num_classes=5, img_size=32)


def test_timm_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("timm/resnet18", weights=str(missing))


def test_timm_pretrained_offline_message(monkeypatch):
    import timm

    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no network")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(RuntimeError, match=r"could not download pretrained weights for resnet18 "
                                           r"\(offline\?\).*--weights FILE"):
        create_model("timm/resnet18", pretrained=True)


def test_fastnet_whitening_of_grayscale_stored_as_rgb_trains_in_bf16():
    # Three identical channels span 4 of the 12 patch directions. The other 8 must not become
    # channels of rounding residue: in bf16 some are exactly constant, and BatchNorm (eps 1e-12)
    # after the dirac convs multiplies their gradient by 1e6 per layer: NaN after one step.
    torch.manual_seed(1)  # a seed whose null directions round, in bf16, to ~zero channels
    gray = F.interpolate(torch.randn(64, 1, 8, 8), size=32, mode="bilinear")
    images = ((gray - gray.mean()) / gray.std()).expand(-1, 3, -1, -1).contiguous()
    labels = torch.arange(64) % NUM_CLASSES
    model = create_model("fastnet", img_size=32)
    _prepare(model, images)
    for precision in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
            channel_std = model.whiten(images).float().std((0, 2, 3))
        assert channel_std.min() > 0.5, (precision, channel_std)  # every channel is whitened data
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    for idx in torch.randperm(64).split(16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images[idx])
        loss = F.cross_entropy(logits.float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
        assert math.isfinite(loss.item()) and grad_norm < 100, (loss.item(), grad_norm.item())
        optimizer.step()


def test_fastnet_whitening_of_a_constant_colour_channel_keeps_gradients_small():
    """A blue channel fixed at 37 normalises (std clamped at 1e-3) to a constant residue of about 1e-4, not 0:
    its patch directions are null too, or they become constant channels whose gradients BatchNorm blows up."""
    torch.manual_seed(0)
    rgb = torch.rand(64, 3, 32, 32)
    rgb[:, 2] = 37 / 255
    mean, std = rgb.mean((0, 2, 3)), rgb.std((0, 2, 3)).clamp_min(1e-3)  # as comp.train.feed.Images normalises
    images = (rgb - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    model = create_model("fastnet", img_size=32)
    _prepare(model, images)
    loss = F.cross_entropy(model(images[:16]), torch.arange(16) % NUM_CLASSES)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
    assert math.isfinite(loss.item()) and grad_norm < 100, grad_norm.item()


def test_fastnet_loads_weights_of_a_run_whose_whitening_kept_48_directions(monkeypatch, tmp_path):
    """Runs trained before MAX_WHITEN_DIRECTIONS was 24 still predict the same; they refuse to resume."""
    from comp.train import checkpoint
    from comp.io import CompError
    from comp.train.optim import Lookahead, Plateau, build_optimizer
    import comp.models.fastnet as fastnet_module

    images = _correlated_images(n=8, size=64)
    monkeypatch.setattr(fastnet_module, "MAX_WHITEN_DIRECTIONS", 48)
    old = create_model("fastnet_s2d", img_size=64).eval()
    old.init_from_data(images)
    monkeypatch.undo()
    new = create_model("fastnet_s2d", img_size=64).eval()
    assert (old.whiten.out_channels, new.whiten.out_channels) == (96, 48)
    optimizer = build_optimizer(new, "muon", 0.1, 0.0, 0.85, 1.0, 0.1, 0.6)
    ckpt = {"model": old.state_dict(), "optimizer": optimizer.state_dict()}
    with pytest.raises(CompError, match="cannot resume"):
        checkpoint.load_checkpoint(ckpt, new, optimizer, Lookahead(new), Plateau(), "cpu", tmp_path / "checkpoint.pt")
    new = create_model("fastnet_s2d", img_size=64).eval()
    checkpoint.load_weights(new, old.state_dict(), tmp_path / "model.pt")
    assert new.whiten.out_channels == 96 and new.groups[0].conv1.in_channels == 96
    with torch.no_grad():
        torch.testing.assert_close(new(images), old(images))


def test_fastnet_s2d_deep_loads_weights_of_a_run_at_its_old_widths(tmp_path):
    """fastnet_s2d_deep's runs from before its last group was 384 wide (64/192/192) still predict the same."""
    from comp.train import checkpoint

    images = _correlated_images(n=8, size=64)
    old = create_model("fastnet_s2d_deep", img_size=64, widths=(64, 192, 192)).eval()
    old.init_from_data(images)
    new = create_model("fastnet_s2d_deep", img_size=64).eval()
    assert new.head.in_features == 384
    checkpoint.load_weights(new, old.state_dict(), tmp_path / "model.pt")
    assert [g.conv1.out_channels for g in new.groups] == [64, 192, 192] and new.head.in_features == 192
    assert new.groups[0].depth == 3
    with torch.no_grad():
        torch.testing.assert_close(new(images), old(images))


def test_timm_stems_with_parallel_paths_keep_their_downsampling(tmp_path):
    """FastViT's stem has a strided branch beside the strided conv the adapter would change: adapted, the net
    failed at its first forward; it now keeps timm's stem and runs. A plain stem is still adapted."""
    out = create_model("timm/fastvit_t8", num_classes=5, img_size=32)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)
    assert create_model("timm/resnet18", num_classes=5, img_size=32).conv1.stride == (1, 1)
    torch.save(create_model("timm/resnet18", num_classes=5, img_size=32).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="hf-hub names read their config from the network; give the plain"):
        create_model("timm/hf-hub:timm/resnet18.a1_in1k", num_classes=5, img_size=32, weights=tmp_path / "r18.pt")


def test_timm_vit_weights_at_another_size_resample_their_position_embeddings(tmp_path):
    """A ViT's weights saved at 224px load into the net built at 32px with pos_embed interpolated to its 2x2 grid
    (timm's own pretrained loading does this), not dropped to train from random."""
    import timm

    big = timm.create_model("vit_tiny_patch16_224", num_classes=5)
    torch.save(big.state_dict(), tmp_path / "vit.pt")
    small = create_model("timm/vit_tiny_patch16_224", num_classes=5, img_size=32, weights=tmp_path / "vit.pt")
    assert small.pos_embed.shape == (1, 5, 192)
    torch.testing.assert_close(small.pos_embed[:, :1], big.pos_embed[:, :1])  # the class token's is kept as is
