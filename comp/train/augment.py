"""Whole-batch data augmentation as tensor ops on the training device (airbench style).

The trainer keeps the training set as a uint8 (N, H, W, C) tensor, turns each batch into a
normalised float (B, C, H, W) channels_last tensor on the device and calls

    x, target = parse_aug("flip,translate:2,cutout:8")(x, y, num_classes)

Every op draws its random parameters PER IMAGE (torchvision.transforms.v2 draws once per
call, i.e. once per batch) and is vectorised over the batch. Randomness comes from an
optional torch.Generator (reproducible runs) or the global RNG. Ops run in a fixed order:
geometric -> photometric -> cutout -> cutmix/mixup, whatever order the string lists them.

Units: images are already normalised, so 0.0 is the dataset-mean colour and 1.0 is one
dataset std. "Zero" padding (crop) and cutout therefore fill with the mean colour, and
brightness offsets are in std units (brightness:0.2 ~ 0.2 * 0.25 * 255 ~ 13 grey levels
for a CIFAR-like std of 0.25).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

# Aug ops whose parameter is a length in pixels: the planner (comp/train/recipe.py) scales them with the image,
# and they must stay below the image's side.
PIXEL_OPS = ("translate", "translate_wrap", "crop", "cutout")


# ----------------------------------------------------------------------------- randomness
# Random numbers are drawn on the generator's device (a CPU generator cannot fill a CUDA
# tensor) and then moved to the images' device and dtype.

def _device(x, gen):
    return gen.device if gen is not None else x.device


def _uniform(x, gen, shape, lo, hi):
    u = torch.rand(shape, generator=gen, device=_device(x, gen))
    return (lo + (hi - lo) * u).to(device=x.device, dtype=x.dtype)


def _randint(x, gen, shape, lo, hi):
    """Integers in [lo, hi], inclusive."""
    return torch.randint(lo, hi + 1, shape, generator=gen, device=_device(x, gen)).to(x.device)


def _host_rng(gen):
    """numpy RNG seeded from the torch RNG, for per-batch scalars (Beta lambda, coin flips).
    torch has no generator-aware Beta sampler; seeding numpy keeps runs reproducible.
    Without a generator we seed from the CPU global RNG so CUDA batches don't sync."""
    dev = gen.device if gen is not None else "cpu"
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen, device=dev)))


# ----------------------------------------------------------------------------- geometric

def flip(x, p, gen=None):
    """Mirror each image left-right with probability p."""
    coin = torch.rand((len(x), 1, 1, 1), generator=gen, device=_device(x, gen)) < p
    mask = coin.to(x.device)
    return torch.where(mask, x.flip(-1), x)


def alternating_flip(x, p, index, epoch, salt):
    """airbench's alternating flip: image i is mirrored in epoch 0 with probability p (a fixed
    pseudo-random bit of i and salt), and in every later epoch exactly when it was not in the
    one before. Each pair of epochs then shows every image both ways, where independent coins
    show half of them the same way twice: the same augmentation, less redundancy.
    index: the images' positions in the training set (int64, B)."""
    hashed = ((index.to(torch.int64) * 2654435761 + salt) & 0xFFFFFFFF) / 2.0**32  # uniform in [0, 1)
    first = hashed < p
    mask = (first ^ bool(epoch % 2)).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def _shift(x, pad, mode, gen):
    """Pad by `pad`, then cut each image back out at its own offset in [-pad, pad]^2.
    Two gathers (rows, then columns) select every image's window at once; no host sync."""
    if pad == 0:
        return x
    B, C, H, W = x.shape
    if pad >= min(H, W):
        raise ValueError(f"shift padding {pad} must be smaller than the image ({H}x{W})")
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dy, dx = _randint(x, gen, (2, B), -pad, pad)
    rows = torch.arange(H, device=x.device) + (pad + dy)[:, None]                # (B, H)
    cols = torch.arange(W, device=x.device) + (pad + dx)[:, None]                # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def translate(x, pad, gen=None):
    """Random shift with reflect padding: content stays natural at the borders (airbench)."""
    return _shift(x, pad, "reflect", gen)


def translate_wrap(x, pad, gen=None):
    """Random shift with circular padding (useful for textures / periodic images)."""
    return _shift(x, pad, "circular", gen)


def crop(x, pad, gen=None):
    """torchvision RandomCrop(padding=pad): zero padding, i.e. the dataset-mean colour here."""
    return _shift(x, pad, "constant", gen)


def rotate_zoom(x, degrees, zoom, gen=None):
    """Per-image rotation in [-degrees, degrees] and scale in [1-zoom, 1+zoom] as ONE batched
    affine_grid + grid_sample. Reflection padding avoids black corners."""
    B, C, H, W = x.shape
    # grid_sample coordinates in fp16/bf16 are off by up to a pixel on large images.
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    angle = _uniform(xs, gen, (B,), -degrees, degrees) * (math.pi / 180)
    scale = _uniform(xs, gen, (B,), 1 - zoom, 1 + zoom)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coords to input coords in [-1, 1] units; the H/W factors make the
    # rotation rigid in pixel space on non-square images. scale > 1 zooms in.
    theta = torch.zeros(B, 2, 3, device=x.device, dtype=xs.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * H / W
    theta[:, 1, 0], theta[:, 1, 1] = sin * W / H, cos
    grid = F.affine_grid(theta, (B, C, H, W), align_corners=False)
    out = F.grid_sample(xs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.to(x.dtype)


def rotate(x, degrees, gen=None):
    return rotate_zoom(x, degrees, 0.0, gen)


def zoom(x, amount, gen=None):
    return rotate_zoom(x, 0.0, amount, gen)


def random_resized_crop(x, min_area, out_size=None, gen=None):
    """torchvision's RandomResizedCrop, per image and batched (one affine_grid + grid_sample): a box of
    min_area..1 of the image's area and aspect ratio 3/4..4/3 (log-uniform), placed at random inside it,
    resized to out_size (default: the input's side). The photo recipes' crop: a larger cached image gives
    the crop its detail (comp/models/finetune.py)."""
    B, C, H, W = x.shape
    out = out_size or H
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    area = _uniform(xs, gen, (B,), min_area, 1.0)
    ratio = torch.exp(_uniform(xs, gen, (B,), math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # fractions of the side
    cx = (_uniform(xs, gen, (B,), 0.0, 1.0) * 2 - 1) * (1 - w)  # box centre, in [-1, 1] units, inside the image
    cy = (_uniform(xs, gen, (B,), 0.0, 1.0) * 2 - 1) * (1 - h)
    theta = torch.zeros(B, 2, 3, device=x.device, dtype=xs.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, (B, C, out, out), align_corners=False)
    return F.grid_sample(xs, grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)


# ----------------------------------------------------------------------------- photometric

def contrast(x, s, gen=None):
    """Scale each image around its own mean by a factor in [1-s, 1+s]."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, gen, (len(x), 1, 1, 1), 1 - s, 1 + s) + mean


def brightness(x, s, gen=None):
    """Add one offset in [-s, s] (dataset-std units) to all pixels and channels of an image."""
    return x + _uniform(x, gen, (len(x), 1, 1, 1), -s, s)


def jitter(x, s, gen=None):
    """Scale each channel of each image by its own factor in [1-s, 1+s] (a colour cast;
    on normalised data this scales around the dataset-mean colour)."""
    return x * _uniform(x, gen, (len(x), x.shape[1], 1, 1), 1 - s, 1 + s)


# ----------------------------------------------------------------------------- occlusion

def _box_mask(x, gen, size_h, size_w):
    """(B, 1, H, W) bool mask with one size_h x size_w box per image, centred anywhere in
    the image and clipped at the borders (DeVries & Taylor cutout; CutMix boxes)."""
    B, _, H, W = x.shape
    cy, cx = _randint(x, gen, (B,), 0, H - 1), _randint(x, gen, (B,), 0, W - 1)
    top, left = (cy - size_h // 2)[:, None], (cx - size_w // 2)[:, None]
    r, c = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    rows = (r >= top) & (r < top + size_h)                                      # (B, H)
    cols = (c >= left) & (c < left + size_w)                                    # (B, W)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def cutout(x, size, gen=None):
    """Zero (= mean colour) one size x size square per image."""
    if size == 0:
        return x
    return x.masked_fill(_box_mask(x, gen, size, size), 0.0)


# ----------------------------------------------------------------------------- label mixing
# These take and return soft targets (B, num_classes); one lambda per batch, as in the papers.

def cutmix(x, target, alpha, gen=None):
    """Paste one box per image from a shuffled copy of the batch. Box size comes from
    lam ~ Beta(alpha, alpha); boxes are clipped at the borders, so each image's targets are
    mixed by the area that was actually pasted."""
    B, _, H, W = x.shape
    lam = _host_rng(gen).beta(alpha, alpha)
    cut = math.sqrt(1.0 - lam)
    mask = _box_mask(x, gen, int(round(H * cut)), int(round(W * cut)))
    perm = torch.randperm(B, generator=gen, device=_device(x, gen)).to(x.device)
    area = mask.flatten(1).float().mean(1, keepdim=True)                        # (B, 1)
    return torch.where(mask, x[perm], x), (1 - area) * target + area * target[perm]


def mixup(x, target, alpha, gen=None):
    """Blend the batch with a shuffled copy of itself, lam ~ Beta(alpha, alpha)."""
    lam = float(_host_rng(gen).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen, device=_device(x, gen)).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]


# ----------------------------------------------------------------------------- registry
# name -> (callable, default parameter, help). The default's type (int/float) is the param type.
AUGMENTATIONS = {
    "rrc": (random_resized_crop, 0.35, "random-resized crop: a box of A..1 of the area, aspect 3/4..4/3, resized "
                                       "to the net's training size (photo recipes)"),
    "flip": (flip, 0.5, "horizontal flip, param = probability per image"),
    "altflip": (alternating_flip, 0.5, "flip as `flip` in the first epoch, then each image the other way "
                                       "every epoch (airbench; cache feed)"),
    "translate": (translate, 2, "random shift up to P px per axis, reflect padding"),
    "translate_wrap": (translate_wrap, 2, "random shift up to P px per axis, circular wrap"),
    "crop": (crop, 4, "pad P px with zeros (mean colour) then random crop, like RandomCrop"),
    "rotate": (rotate, 15.0, "rotation by an angle in [-D, D] degrees, reflection padding"),
    "zoom": (zoom, 0.1, "scale in [1-S, 1+S] (>1 zooms in), reflection padding"),
    "contrast": (contrast, 0.2, "contrast factor in [1-S, 1+S] around the image mean"),
    "brightness": (brightness, 0.2, "offset in [-S, S], in normalised (dataset-std) units"),
    "jitter": (jitter, 0.1, "per-channel colour scaling in [1-S, 1+S]"),
    "cutout": (cutout, 8, "zero one SxS square per image"),
    "cutmix": (cutmix, 1.0, "paste a box from another image, lam ~ Beta(A, A), mixes targets"),
    "mixup": (mixup, 0.2, "blend with another image, lam ~ Beta(A, A), mixes targets"),
}
# Registry order is the application order.
_ORDER = list(AUGMENTATIONS)
_SHIFTS = ("translate", "translate_wrap", "crop")
_FLIPS = ("flip", "altflip")
_MIXES = ("cutmix", "mixup")
_VALID = {  # name -> (predicate, description) for the parameter
    "rrc": (lambda p: 0 < p <= 1, "in (0, 1]"),
    "flip": (lambda p: 0 <= p <= 1, "in [0, 1]"),
    "altflip": (lambda p: 0 <= p <= 1, "in [0, 1]"),
    "rotate": (lambda p: 0 <= p <= 180, "in [0, 180]"),
    "zoom": (lambda p: 0 <= p < 1, "in [0, 1)"),
    "contrast": (lambda p: 0 <= p <= 1, "in [0, 1]"),
    "jitter": (lambda p: 0 <= p <= 1, "in [0, 1]"),
    "cutmix": (lambda p: p > 0, "> 0"),
    "mixup": (lambda p: p > 0, "> 0"),
}


def _ops_help():
    return "\n".join(f"  {n}[:{d}]  {h}" for n, (_, d, h) in AUGMENTATIONS.items())


def _format(p):
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def _check(name, param, token):
    ok, why = _VALID.get(name, (lambda p: p >= 0, ">= 0"))
    kind = type(AUGMENTATIONS[name][1])
    if isinstance(param, bool) or not isinstance(param, (int, float)) \
            or (kind is int and not float(param).is_integer()) \
            or not math.isfinite(param) or not ok(param):
        raise ValueError(f"bad augmentation parameter in {token!r}: {name} takes "
                         f"{'an integer' if kind is int else 'a number'} {why}\n"
                         f"valid ops:\n{_ops_help()}")
    return kind(param)


class BatchAugment:
    """A parsed pipeline: a list of (name, param), applied in the canonical order."""

    def __init__(self, ops=(), generator=None, out_size=None):
        names = [n for n, _ in ops]
        for n in names:
            if n not in AUGMENTATIONS:
                raise ValueError(f"unknown augmentation {n!r}; valid ops:\n{_ops_help()}")
        if len(set(names)) != len(names):
            raise ValueError(f"augmentation listed twice in {names}")
        for exclusive in (_SHIFTS, _FLIPS):
            if sum(n in exclusive for n in names) > 1:
                raise ValueError(f"use at most one of {', '.join(exclusive)}; got {names}")
        self.ops = {n: _check(n, p, f"{n}:{p}") for n, p in sorted(ops, key=lambda o: _ORDER.index(o[0]))}
        self.generator = generator
        self.out_size = out_size  # rrc's output side (the net's training size); None: the input's
        # altflip's per-image first-epoch coins: a hash of the index salted from torch's RNG,
        # so a run's flips follow its --seed and need no state in checkpoints.
        self.salt = 0
        if "altflip" in self.ops:
            self.salt = int(torch.randint(2**31, (), generator=generator, device=_device(torch.empty(0), generator)))

    @property
    def mixes_labels(self):
        """True when targets come back as soft (B, num_classes) float tensors."""
        return any(n in self.ops for n in _MIXES)

    def __bool__(self):
        return bool(self.ops)

    def describe(self):
        if not self.ops:
            return "none"
        # Params are always written (so a logged string reproduces the run even if defaults
        # change), except the flips at p=0.5, the universal convention.
        return ",".join(n if (n in _FLIPS and p == 0.5) else f"{n}:{_format(p)}"
                        for n, p in self.ops.items())

    __str__ = describe

    def __repr__(self):
        return f"BatchAugment({self.describe()!r})"

    def __call__(self, x, y, num_classes=None, generator=None, index=None, epoch=0):
        """x: float (B, C, H, W); y: int64 (B,). Returns (x, target): target is y unless a
        label-mixing op is active, then float32 soft targets (B, num_classes).
        altflip also needs index (the images' positions in the training set) and epoch."""
        gen = generator if generator is not None else self.generator
        memory_format = memory_format_of(x)
        ops = self.ops
        for name, param in ops.items():  # already in application order
            if name == "altflip":
                if index is None:
                    raise ValueError("altflip needs each image's index in the training set (the cache feed)")
                x = alternating_flip(x, param, index, epoch, self.salt)
            elif name == "rrc":
                x = random_resized_crop(x, param, self.out_size, gen)
            elif name in ("rotate", "zoom"):
                if name == "rotate" or "rotate" not in ops:  # the first of the pair does both
                    x = rotate_zoom(x, ops.get("rotate", 0.0), ops.get("zoom", 0.0), gen)
            elif name not in _MIXES:
                x = AUGMENTATIONS[name][0](x, param, gen)
        target = y
        mixes = [n for n in _MIXES if n in ops]
        if mixes:
            if num_classes is None:
                raise ValueError(f"{'/'.join(mixes)} needs num_classes to build soft targets")
            # At most one label-mixing op per batch: a fair coin picks when both are given.
            name = mixes[0] if len(mixes) == 1 else mixes[int(_host_rng(gen).random() < 0.5)]
            target = F.one_hot(y.long(), num_classes).to(device=x.device, dtype=torch.float32)
            x, target = AUGMENTATIONS[name][0](x, target, ops[name], gen)
        return x.contiguous(memory_format=memory_format), target


def memory_format_of(x):
    """channels_last if x is stored that way (and not also plain-contiguous), else default."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def pixel_params(augment: "BatchAugment") -> dict:
    return {n: p for n, p in augment.ops.items() if n in PIXEL_OPS}


def parse_aug(spec, generator=None, out_size=None):
    """'flip, Translate:2 ,cutout:8' -> BatchAugment. '' or 'none' -> identity. out_size: rrc's output side."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return BatchAugment((), generator, out_size)
    ops = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        name, has_param, raw = token.partition(":")
        name = name.strip().lower()
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {token!r}; valid ops:\n{_ops_help()}")
        param = AUGMENTATIONS[name][1]
        if has_param:
            try:
                param = float(raw.strip())
            except ValueError:
                raise ValueError(f"bad augmentation parameter in {token!r}: not a number\n"
                                 f"valid ops:\n{_ops_help()}") from None
        ops.append((name, _check(name, param, token)))
    return BatchAugment(ops, generator, out_size)


def default_aug(n_images, img_size):
    """A safe default augmentation string for natural (mirror-symmetric) images.

    - flip + translate are nearly free and help at every dataset size (airbench uses
      exactly this on CIFAR-10). The shift scales with the image: 2 px at 32 px, 4 px at
      64 px (~6%), i.e. small enough never to push the object out of frame.
    - cutout adds strong regularisation that pays off when data is scarce (< 20k images),
      but slows convergence, which hurts the short runs we do on larger datasets.
    - No mixup/cutmix/rotation by default: they need longer schedules to pay off.
    Pass an explicit string for data where flipping changes the label (digits, text).
    """
    parts = ["flip", f"translate:{max(1, img_size // 16)}"]
    if n_images < 20_000:
        parts.append(f"cutout:{max(1, img_size // 4)}")
    return ",".join(parts)
