import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comp.train.augment import AUGMENTATIONS, default_aug, parse_aug
from comp.train.tta import TTA_MODES, tta_views
from comp.train.augment_albu import AlbuImageDataset, build_albu_transform

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
B, C, H, W = 64, 3, 16, 16


def copies(device="cpu", dtype=torch.float32):
    """64 copies of one asymmetric image (every pixel distinct), channels_last."""
    img = torch.arange(C * H * W, dtype=torch.float32).reshape(1, C, H, W) / (C * H * W)
    x = img.expand(B, -1, -1, -1).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last), img[0].to(device=device, dtype=dtype)


def labels(device="cpu"):
    return torch.arange(B, device=device) % 10


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- per-image ops

def test_flip_is_per_image():
    x, img = copies()
    out, _ = parse_aug("flip")(x, labels(), generator=gen())
    flipped = [torch.equal(o, img.flip(-1)) for o in out]
    kept = [torch.equal(o, img) for o in out]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 <= sum(flipped) <= 48


@pytest.mark.parametrize("op,mode", [("translate", "reflect"), ("translate_wrap", "circular"),
                                     ("crop", "constant")])
def test_shift_is_per_image_and_keeps_content(op, mode):
    P = 3
    x, img = copies()
    out, _ = parse_aug(f"{op}:{P}")(x, labels(), generator=gen())
    padded = F.pad(img[None], (P,) * 4, mode=mode)[0]
    shifts = set()
    for o in out:
        found = [(dy, dx) for dy in range(-P, P + 1) for dx in range(-P, P + 1)
                 if torch.equal(o, padded[:, P + dy:P + dy + H, P + dx:P + dx + W])]
        assert len(found) == 1, "output is not a window of the padded original"
        shifts.add(found[0])
    assert len(shifts) >= 10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_preserves_shape_dtype_device_format(device, dtype, channels_last):
    x, _ = copies(device, dtype)
    if not channels_last:
        x = x.contiguous()
    spec = "flip,translate:2,rotate:10,zoom:0.1,contrast,brightness,jitter,cutout:4,cutmix"
    out, target = parse_aug(spec)(x, labels(device), 10, generator=gen())
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)
    assert target.shape == (B, 10) and target.dtype == torch.float32
    assert target.device == x.device


@pytest.mark.parametrize("spec", ["rotate:0", "zoom:0", "rotate:0,zoom:0"])
def test_rotate_zoom_zero_is_identity(spec):
    x, _ = copies()
    out, _ = parse_aug(spec)(x, labels(), generator=gen())
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_rotate_changes_images_per_image():
    x, _ = copies()
    out, _ = parse_aug("rotate:30")(x, labels(), generator=gen())
    diff = (out - x).abs().mean(dim=(1, 2, 3))
    assert (diff > 1e-3).float().mean() > 0.9
    assert len({round(float(d), 5) for d in diff}) > 30  # different angles per image


def test_rotate_and_zoom_share_one_grid_sample(monkeypatch):
    calls = []
    real = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, _ = copies()
    parse_aug("rotate:20,zoom:0.2")(x, labels())
    assert len(calls) == 1


def test_photometric_per_image():
    x, _ = copies()
    for spec in ("contrast:0.5", "brightness:0.5", "jitter:0.5"):
        out, _ = parse_aug(spec)(x, labels(), generator=gen())
        assert len({round(float(v), 5) for v in out.std(dim=(1, 2, 3)) + out.mean(dim=(1, 2, 3))}) > 30
    out, _ = parse_aug("contrast:0.5")(x, labels(), generator=gen())
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))


def test_cutout_one_square_per_image():
    x = torch.ones(B, C, H, W)
    out, y = parse_aug("cutout:4")(x, labels(), generator=gen())
    zero = out[:, 0] == 0
    assert torch.equal(y, labels())
    assert ((out == 0) == zero[:, None]).all()  # same hole in every channel
    for z in zero:
        rows, cols = z.any(1).nonzero(), z.any(0).nonzero()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert z.sum() == len(rows) * len(cols)  # a (clipped) rectangle
    assert len({tuple(z.nonzero()[0].tolist()) for z in zero}) > 20


# ----------------------------------------------------------------------------- label mixing

def indexed_batch():
    """Image i is constant i and has label i, so pixel values reveal their source image."""
    x = torch.arange(B, dtype=torch.float32)[:, None, None, None].expand(B, C, H, W)
    return x.contiguous(memory_format=torch.channels_last), torch.arange(B)


@pytest.mark.parametrize("seed", range(3))
def test_cutmix_targets_are_pasted_area(seed):
    x, y = indexed_batch()
    out, t = parse_aug("cutmix:1")(x, y, B, generator=gen(seed))
    torch.testing.assert_close(t.sum(1), torch.ones(B))
    for i in range(B):
        for k in out[i].unique().long().tolist():
            frac = (out[i] == k).float().mean()
            torch.testing.assert_close(t[i, k], frac)
        assert (t[i] > 0).sum() <= 2


@pytest.mark.parametrize("seed", range(3))
def test_mixup_targets_match_blend(seed):
    x, y = indexed_batch()
    out, t = parse_aug("mixup:0.4")(x, y, B, generator=gen(seed))
    torch.testing.assert_close(t.sum(1), torch.ones(B))
    torch.testing.assert_close(out[:, 0, 0, 0], t @ torch.arange(B, dtype=torch.float32))
    lam = t[torch.arange(B), y]
    moved = lam < 1  # rows whose partner is another image
    assert moved.any() and torch.allclose(lam[moved], lam[moved][0])  # one lambda per batch


def test_cutmix_and_mixup_pick_one_per_batch():
    x, y = indexed_batch()
    aug, g, seen = parse_aug("cutmix,mixup"), gen(), set()
    for _ in range(12):
        out, _ = aug(x, y, B, generator=g)
        seen.add("cutmix" if torch.equal(out, out.round()) else "mixup")
    assert seen == {"cutmix", "mixup"}


def test_no_mixing_keeps_int_labels_and_identity():
    x, _ = copies()
    for spec in ("", "none", "  None "):
        out, t = parse_aug(spec)(x, labels())
        assert torch.equal(out, x) and torch.equal(t, labels()) and t.dtype == torch.int64


def test_generator_reproducible():
    x, _ = copies()
    aug = parse_aug("flip,translate:2,rotate,contrast,cutout,mixup")
    a, ta = aug(x, labels(), 10, generator=gen(7))
    b, tb = aug(x, labels(), 10, generator=gen(7))
    assert torch.equal(a, b) and torch.equal(ta, tb)


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("spec", ["flip,translate:2,cutout:8,mixup:0.2", "flip:0.3,crop:4",
                                  "translate_wrap:1,rotate:12.5,zoom:0.15,contrast:0.1,"
                                  "brightness:0.3,jitter:0.05,cutmix:1", "none"])
def test_describe_round_trips(spec):
    assert parse_aug(spec).describe() == spec
    assert parse_aug(parse_aug(spec).describe()).describe() == spec


def test_parse_case_whitespace_order_defaults():
    assert parse_aug("  MixUp:0.2 , FLIP ,Translate : 2 ").describe() == "flip,translate:2,mixup:0.2"
    assert parse_aug("translate,cutout").describe() == (
        f"translate:{AUGMENTATIONS['translate'][1]},cutout:{AUGMENTATIONS['cutout'][1]}")


def test_unknown_op_error_lists_valid_ops():
    with pytest.raises(ValueError) as e:
        parse_aug("flip,flp")
    msg = str(e.value)
    assert "flp" in msg
    for name, (_, _, help_text) in AUGMENTATIONS.items():
        assert name in msg and help_text in msg


@pytest.mark.parametrize("spec", ["translate:-1", "translate:1.5", "rotate:abc", "mixup:0",
                                  "zoom:1", "contrast:nan", "flip,flip", "crop,translate"])
def test_bad_params_raise(spec):
    with pytest.raises(ValueError) as e:
        parse_aug(spec)
    if spec == "translate:-1":
        assert "translate:-1" in str(e.value)


def test_default_aug():
    assert default_aug(50_000, 32) == "flip,translate:2"
    assert default_aug(50_000, 64) == "flip,translate:4"
    small = default_aug(5_000, 32)
    assert "cutout" in small and parse_aug(small).describe() == small


# ----------------------------------------------------------------------------- TTA

@pytest.mark.parametrize("mode,n", [("none", 1), ("flip", 2), ("flip+shift", 6)])
def test_tta_views(mode, n):
    x, img = copies()
    views = tta_views(x, mode)
    assert mode in TTA_MODES and len(views) == n
    assert sum(w for w, _ in views) == pytest.approx(1.0)
    assert all(v.shape == x.shape and v.is_contiguous(memory_format=torch.channels_last)
               for _, v in views)
    if mode == "flip+shift":
        assert [w for w, _ in views] == [0.25, 0.25] + [0.125] * 4
        padded = F.pad(img[None], (1,) * 4, mode="reflect")[0]
        assert torch.equal(views[2][1][0], padded[:, :H, :W])
        assert torch.equal(views[3][1][0], padded[:, 2:, 2:])
    with pytest.raises(ValueError):
        tta_views(x, "bogus")


def test_tta_views_shift():
    img = torch.rand(3, 64, 64)
    views = tta_views(img[None].contiguous(memory_format=torch.channels_last), "flip+shift", shift=2)
    padded = F.pad(img[None], (2,) * 4, mode="reflect")[0]
    assert torch.equal(views[2][1][0], padded[:, :64, :64])  # up-left by 2
    assert torch.equal(views[3][1][0], padded[:, 4:, 4:])  # down-right by 2
    assert torch.equal(views[5][1][0], padded.flip(-1)[:, 4:, 4:])  # the mirror, down-right by 2


# ----------------------------------------------------------------------------- albumentations

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def test_albu_compose_is_strict():
    t = build_albu_transform("flip,translate:2,rotate,zoom,contrast,brightness,jitter,cutout:4",
                             24, MEAN, STD)
    assert t.strict
    img = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    assert t(image=img)["image"].shape == (24, 24, 3)
    with pytest.raises(ValueError):
        t(image=img, bogus=1)


@pytest.mark.parametrize("spec", ["cutmix", "flip,mixup:0.2"])
def test_albu_rejects_batch_ops(spec):
    with pytest.raises(ValueError, match="applied on the batch by the trainer"):
        build_albu_transform(spec, 24, MEAN, STD)


def test_albu_rejects_unknown_op():
    with pytest.raises(ValueError, match="flp"):
        build_albu_transform("flp", 24, MEAN, STD)


def test_albu_dataset_reads_gray_rgba_rgb(tmp_path):
    rng = np.random.default_rng(0)
    images = {"gray.png": rng.integers(0, 255, (20, 30), dtype=np.uint8),
              "rgba.png": rng.integers(0, 255, (25, 25, 4), dtype=np.uint8),
              "rgb.png": rng.integers(0, 255, (40, 32, 3), dtype=np.uint8)}
    paths = []
    for name, img in images.items():
        assert cv2.imwrite(str(tmp_path / name), img)
        paths.append(tmp_path / name)
    ds = AlbuImageDataset(paths, [0, 1, 2], build_albu_transform("flip,translate:2", 16, MEAN, STD))
    for i in range(3):
        x, label = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and label == i
    # Warm cv2's thread pool in this process first: forked workers must still not deadlock.
    cv2.warpAffine(images["rgb.png"], np.float32([[1, 0.1, 0], [0.1, 1, 0]]), (32, 40))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, timeout=20)
    xb, yb = next(iter(loader))
    assert xb.shape == (3, 3, 16, 16) and yb.tolist() == [0, 1, 2]


def test_albu_dataset_unreadable_names_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    ds = AlbuImageDataset([bad, tmp_path / "missing.jpg"], [0, 1],
                          build_albu_transform("", 16, MEAN, STD))
    with pytest.raises(OSError, match="broken.png"):
        ds[0]
    with pytest.raises(OSError, match="missing.jpg"):
        ds[1]


def test_altflip_alternates_every_epoch():
    x, img = copies()
    augment = parse_aug("altflip")
    index = torch.arange(B)
    views = [augment(x, labels(), index=index, epoch=e)[0] for e in range(3)]
    flipped = [[torch.equal(o, img.flip(-1)) for o in v] for v in views]
    assert all(torch.equal(o, img) or f for o, f in zip(views[0], flipped[0]))
    assert 16 <= sum(flipped[0]) <= 48  # the first epoch's coins are fair
    assert flipped[1] == [not f for f in flipped[0]]  # every image the other way in the next epoch
    assert flipped[2] == flipped[0]
    # The coins belong to the image, not to its place in the batch.
    perm = torch.randperm(B)
    shuffled, _ = augment(x, labels(), index=index[perm], epoch=0)
    assert [torch.equal(o, img.flip(-1)) for o in shuffled] == [flipped[0][i] for i in perm]


def test_altflip_needs_indices_and_excludes_flip():
    x, _ = copies()
    with pytest.raises(ValueError, match="altflip needs each image's index"):
        parse_aug("altflip")(x, labels())
    with pytest.raises(ValueError, match="at most one of flip, altflip"):
        parse_aug("flip,altflip")
    torch.manual_seed(0)
    first = parse_aug("altflip").salt
    torch.manual_seed(0)
    assert parse_aug("altflip").salt == first  # follows the seed: reproducible without checkpointing it
