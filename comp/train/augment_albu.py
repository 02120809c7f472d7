"""Per-image augmentation with albumentations, for images too large to cache in memory.

Same augmentation string as comp.train.augment (parsed and validated by parse_aug), mapped to the
closest albumentations transforms. cutmix/mixup mix pairs of images, so they cannot run in
a per-image pipeline: the trainer applies them on the batch (comp.train.augment) instead.
"""
import os
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before import: it phones home

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset, get_worker_info  # noqa: E402

from comp.train.augment import parse_aug  # noqa: E402
from comp.prepare.cache import load_rgb  # noqa: E402

# cv2 reflect-101 ("dcb|abcd|cba") is what torch's F.pad(mode="reflect") does.
_BORDERS = {"translate": cv2.BORDER_REFLECT_101, "translate_wrap": cv2.BORDER_WRAP,
            "crop": cv2.BORDER_CONSTANT}


def build_albu_transform(aug_string, img_size, mean, std):
    """A.Compose: Resize -> geometric -> photometric -> Normalize -> cutout, on HWC uint8 RGB.

    mean/std are per-channel, as fractions of 255 (torchvision convention); values > 1 are
    taken as 0-255 units. Fills match the batch path, where 0.0 after normalising is the
    mean colour: crop pads with the mean colour and cutout runs after Normalize with fill 0.
    """
    ops = parse_aug(aug_string).ops
    batch_only = [n for n in ("cutmix", "mixup") if n in ops]
    if batch_only:
        raise ValueError(f"{', '.join(batch_only)} mix pairs of images: they are applied on "
                         f"the batch by the trainer (comp.train.augment), not per image; remove them "
                         f"from the per-image augmentation string")
    mean, std = np.atleast_1d(np.asarray(mean, float)), np.atleast_1d(np.asarray(std, float))
    to_255 = 1.0 if mean.max() > 1 else 255.0
    mean_255 = tuple(float(m) for m in np.broadcast_to(mean * to_255, (3,)))
    std_255 = tuple(float(s) for s in np.broadcast_to(std * to_255, (3,)))
    std_frac = float(np.mean(std_255)) / 255.0  # one dataset std, as a fraction of the range

    # Resize first: everything after runs on small images, and pixel params mean the same
    # thing as in the batch path (which sees img_size images).
    t = [A.RandomResizedCrop(size=(img_size, img_size), scale=(ops["rrc"], 1.0), ratio=(3 / 4, 4 / 3))
         if "rrc" in ops else A.Resize(img_size, img_size)]  # rrc: a crop of the whole photo, then resized
    for name in ("flip", "altflip"):  # workers see no epochs: altflip is a plain flip here
        if name in ops:
            t.append(A.HorizontalFlip(p=ops[name]))
    for name, border in _BORDERS.items():
        if name in ops and ops[name] > 0:
            fill = mean_255 if name == "crop" else 0
            t += [A.PadIfNeeded(img_size + 2 * ops[name], img_size + 2 * ops[name],
                                border_mode=border, fill=fill, p=1.0),
                  A.RandomCrop(img_size, img_size, p=1.0)]
    if "rotate" in ops or "zoom" in ops:
        d, z = ops.get("rotate", 0.0), ops.get("zoom", 0.0)
        t.append(A.Affine(rotate=(-d, d), scale=(1 - z, 1 + z),
                          border_mode=cv2.BORDER_REFLECT_101, p=1.0))
    if "contrast" in ops or "brightness" in ops:
        # brightness:S is S dataset stds in the batch path; albumentations adds S * 255.
        b = ops.get("brightness", 0.0) * std_frac
        c = ops.get("contrast", 0.0)
        t.append(A.RandomBrightnessContrast(brightness_limit=(-b, b), contrast_limit=(-c, c), p=1.0))
    if "jitter" in ops:
        # Per-image, per-channel gain in [1-S, 1+S]: the exact per-image counterpart of the
        # batch op (ColorJitter's saturation/hue is a different transform).
        s = ops["jitter"]
        t.append(A.MultiplicativeNoise(multiplier=(1 - s, 1 + s), per_channel=True,
                                       elementwise=False, p=1.0))
    t.append(A.Normalize(mean=mean_255, std=std_255, max_pixel_value=1.0))
    if ops.get("cutout", 0) > 0:
        s = ops["cutout"]
        t.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(s, s),
                                 hole_width_range=(s, s), fill=0, p=1.0))
    return A.Compose(t, strict=True)


class AlbuImageDataset(Dataset):
    """Images read from disk with the cache's decoder (comp.prepare.cache.load_rgb: RGB, alpha composited
    on white, bicubic resize to `size` when given), transformed per image. Returns (float tensor
    (3, H, W), label); label -1 if labels is None (unlabelled test sets). Safe with DataLoader workers."""

    def __init__(self, paths, labels=None, transform=None, size: int | None = None, fit: str = "squash"):
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [os.fspath(p) for p in paths]
        self.labels = None if labels is None else [int(v) for v in labels]
        self.transform = transform
        self.size, self.fit = size, fit
        self._threads_set = False

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        """key: an index, or (index, seed) from comp.train.feed.SeededOrder: the image's augmentation is then drawn from
        a generator of that seed, shared by every transform of the Compose (set_random_seed would give each
        transform its own generator of the same seed: two p=0.5 flips would always agree)."""
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None and self.transform is not None:
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        if not self._threads_set and get_worker_info() is not None:
            # N workers x all-core cv2 pools would oversubscribe the CPU. Must be 0 (run
            # inline): setNumThreads(1) deadlocks in a forked worker whose parent already
            # started cv2's thread pool (seen with opencv 4.x / cv2 5.0 and warpAffine).
            cv2.setNumThreads(0)
            self._threads_set = True
        path = self.paths[i]
        try:
            img = load_rgb(path, self.size, self.fit)
        except Exception as exc:  # PIL raises many types for broken files
            raise OSError(f"could not read image {path!r} (missing, unreadable or not an image): {exc}") from None
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        if not torch.is_tensor(img):
            img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        label = -1 if self.labels is None else self.labels[i]
        return img.float(), label
