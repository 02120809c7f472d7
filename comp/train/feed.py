"""Where `comp train` and `comp predict` get their batches: the image cache, or the image files.

cache  (`comp prepare` wrote folds/cache/): a split's rows are copied to the training device as
       uint8 once; each batch is indexed, normalised and augmented there as whole-batch tensor
       ops (comp/train/augment.py), so the model, not a loader, is the bottleneck.
albu   (`comp prepare --no-cache`, images too large to cache): DataLoader workers read each file,
       resize it and run the per-image albumentations pipeline (comp/train/augment_albu.py) with the
       same augmentation names; cutmix/mixup mix pairs of images, so they still run on the batch.

Both feeds give normalised float (B, C, H, W) channels_last batches on the device:

    feed = make_feed("cache", prepared, device, train_rows=rows, val_rows=val_rows, aug="flip")
    for x, target in feed.train_batches(n_steps): ...        # augmented, one epoch's worth
    logits = feed.predict(model, "val", "flip", precision)   # "val" or "test", with TTA views

Normalisation statistics come from the training rows: the cache feed measures about 5000
(every N//5000-th) cached images; the albu feed decodes an evenly spaced sample of up to 1000 training files once
(resized like training images). Measuring instead of using ImageNet's values keeps the two
feeds' normalisation the same, so runs from either blend alike and fastnet's data-derived
whitening sees the same inputs.
"""
from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np
import torch

from ..io import CompError
from ..progress import progress
from .augment import BatchAugment, parse_aug
from .distributed import run_on_main
from .tta import TTA_WEIGHTS, combine_views, tta_views

LOADERS = ("auto", "cache", "albu")
BATCH_ONLY = ("cutmix", "mixup")  # mix pairs of images: no per-image counterpart
STATS_IMAGES = 1000  # files the albu feed decodes to measure mean/std
SAMPLE_VALUES = 5000 * 3 * 32 * 32  # sample(): at most the floats of 5000 CIFAR images


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def resolve_loader(requested: str, has_cache: bool, who: str | None = None) -> str:
    """'auto' -> 'cache' when `comp prepare` wrote a cache, else 'albu'; refuses 'cache' without one."""
    if requested not in LOADERS:
        raise CompError(f"--loader {requested}: choose one of {', '.join(LOADERS)}")
    if requested == "auto":
        return "cache" if has_cache else "albu"
    if requested == "cache" and not has_cache:
        raise CompError(f"{who or '--loader cache'} needs the image cache, but folds/prepare.json has none "
                        f"(it was prepared with --no-cache): re-run `comp prepare` without --no-cache, "
                        f"or train with --loader albu")
    return requested


def make_feed(loader: str, prepared, device: torch.device, stats=None, **kwargs):
    """A CacheFeed or AlbuFeed (kwargs: train_rows, val_rows, aug, batch_size, eval_batch_size,
    workers). stats: (mean, std); without them they are measured on the training rows, under DDP
    on rank 0's shard and sent to every rank (all ranks must normalise alike)."""
    feed = {"cache": CacheFeed, "albu": AlbuFeed}[loader](prepared, device, **kwargs)
    feed.set_stats(*(stats or run_on_main(feed.train_stats)))
    return feed


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_views(model, batches, tta: str, device, precision, desc=None) -> np.ndarray:
    """Logits of every image of `batches` under each TTA view: (views, N, C), views in tta_views' order."""
    model.eval()
    out = []
    for x in progress(batches, desc=desc, unit="batch", leave=False, show=bool(desc)):
        with autocast(device, precision):
            out.append(torch.stack([model(view).float() for _, view in tta_views(x, tta)]).cpu())
    return torch.cat(out, dim=1).numpy() if out else np.zeros((len(TTA_WEIGHTS[tta]), 0, 0), np.float32)


def predict_logits(model, batches, tta: str, device, precision, desc=None) -> np.ndarray:
    """Logits for every image of `batches`, averaged over the TTA views with their weights."""
    return combine_views(predict_views(model, batches, tta, device, precision, desc), tta)


class _Batches:
    """Re-iterable and sized (tqdm shows a total), computed lazily."""

    def __init__(self, make_iter, n: int):
        self.make_iter, self.n = make_iter, n

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(self.make_iter())


def in_batches(images: "Images", size: int) -> _Batches:
    """The images in order, `size` at a time; each float batch is made only when it is reached."""
    return _Batches(lambda: (images.batch(slice(s, s + size)) for s in range(0, len(images), size)),
                    -(-len(images) // size))


class _Feed:
    """What both feeds share. Splits: "train" and "val" are rows of folds.csv, "test" all of test.csv.

    Each feed offers train_stats() -> (mean, std), train_batches(n_steps) -> (x, target) augmented,
    eval_batches(split) -> x, sample(n) -> x (unaugmented training images), and predict().
    """

    def __init__(self, prepared, device, train_rows=None, val_rows=None, aug="none", batch_size=128,
                 eval_batch_size=1024, workers=None, train_size=None):
        self.prepared, self.device = prepared, device
        self.train_size = train_size  # the net's training side where it is below the images' (rrc crops to it)
        self.rows = {"train": train_rows, "val": val_rows}
        self.aug, self.batch_size, self.eval_batch_size = aug, batch_size, eval_batch_size
        self.workers = default_workers() if workers is None else workers
        self.num_classes = prepared.label_map.num_classes
        self.labels = prepared.label_map.encode(list(prepared.folds.label))
        self.mean = self.std = None

    def set_stats(self, mean, std) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def predict(self, model, split: str, tta: str, precision: str, desc=None) -> np.ndarray:
        return predict_logits(model, self.eval_batches(split), tta, self.device, precision, desc)

    def predict_views(self, model, split: str, tta: str, precision: str, desc=None) -> np.ndarray:
        return predict_views(model, self.eval_batches(split), tta, self.device, precision, desc)


class Images:
    """uint8 (N, H, W, C) images on the device -> normalised float (B, C, H, W) channels_last."""

    def __init__(self, array: np.ndarray, device: torch.device, mean=None, std=None):
        self.u8 = torch.from_numpy(np.array(array, copy=True)).to(device)  # a memmap slice is read-only
        if mean is None:
            sample = self.u8[:: max(1, len(self.u8) // 5000)].float() / 255
            mean, std = sample.mean((0, 1, 2)).tolist(), sample.std((0, 1, 2)).clamp_min(1e-3).tolist()
        self.set_stats(mean, std)

    def set_stats(self, mean, std) -> None:
        self.mean, self.std = mean, std
        self._mean = torch.tensor(mean, device=self.u8.device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, device=self.u8.device).view(1, -1, 1, 1)

    def __len__(self):
        return len(self.u8)

    def batch(self, index) -> torch.Tensor:
        x = self.u8[index].permute(0, 3, 1, 2).float().div_(255)
        return ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)


class CacheFeed(_Feed):
    """The uint8 cache; a split's rows go to the device on first use (under DDP only rank 0
    validates, so the other ranks never hold the held-out fold)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment = parse_aug(self.aug, out_size=self.train_size)
        self._images: dict[str, Images] = {}
        self._y_train = None

    def images(self, split: str) -> Images:
        if split not in self._images:
            array = self.prepared.test_images if split == "test" else self.prepared.train_images[self.rows[split]]
            self._images[split] = Images(array, self.device, self.mean, self.std)
        return self._images[split]

    def train_stats(self):
        images = self.images("train")  # measures its own statistics while mean is unset
        return images.mean, images.std

    def set_stats(self, mean, std) -> None:
        super().set_stats(mean, std)
        for images in self._images.values():
            images.set_stats(self.mean, self.std)

    def train_batches(self, n_steps: int, epoch: int = 0):
        images = self.images("train")
        if self._y_train is None:
            self._y_train = torch.from_numpy(self.labels[self.rows["train"]]).to(self.device)
        order = torch.randperm(len(images), device=self.device)
        for i in range(n_steps):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.augment(images.batch(index), self._y_train[index], self.num_classes, index=index, epoch=epoch)

    def eval_batches(self, split: str) -> _Batches:
        return in_batches(self.images(split), self.eval_batch_size)

    def sample(self, n: int) -> torch.Tensor:
        """Up to n random training images, normalised, not augmented (fastnet's whitening)."""
        images = self.images("train")
        return images.batch(torch.randperm(len(images), device=self.device)[:n])


class AlbuFeed(_Feed):
    """Image files -> DataLoader workers (decode, per-image albumentations, normalise) -> device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ops = parse_aug(self.aug).ops
        self.per_image = BatchAugment([(n, p) for n, p in ops.items() if n not in BATCH_ONLY]).describe()
        self.augment = BatchAugment([(n, p) for n, p in ops.items() if n in BATCH_ONLY])
        # Float batches of large images are big, and several wait in the workers' queues: the
        # training batch (x2 without gradients) is known to fit.
        self.eval_batch_size = min(self.eval_batch_size, 2 * self.batch_size)
        self.size = self.prepared.image_size
        self._loaders, self._paths = {}, {}
        # The run's seed (torch.manual_seed before the feed is made): the training order and every image's
        # augmentation follow from it and the epoch alone (SeededOrder), so a resumed run sees the batches
        # the uninterrupted run would have, whatever its workers did before.
        self.seed = torch.initial_seed()
        self._order = None

    def set_stats(self, mean, std) -> None:
        super().set_stats(mean, std)
        self._loaders.clear()  # their transforms normalise with the old statistics

    def paths(self, split: str) -> list[str]:
        """Absolute paths of a split's files (folds.csv and test.csv hold them relative to the workdir)."""
        if split in self._paths:
            return self._paths[split]
        table = self.prepared.test if split == "test" else self.prepared.folds.iloc[self.rows[split]]
        paths = [os.path.join(self.prepared.workdir, p) for p in table.path]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            csv = "folds/test.csv" if split == "test" else "folds/folds.csv"
            raise CompError(f"{len(missing)} image file(s) listed in {csv} are missing, e.g. {missing[0]}: "
                            f"without a cache the files are read at training time, so keep the data where "
                            f"`comp prepare` found it (paths are relative to the workdir) or re-run it")
        self._paths[split] = paths
        return paths

    def transform(self, aug: str, mean=None, std=None):
        from .augment_albu import build_albu_transform

        return build_albu_transform(aug, self.size, self.mean if mean is None else mean, self.std if std is None else std)

    def loader(self, paths, labels, transform, batch_size: int, order=None, persistent=False):
        """order: a SeededOrder for training (shuffled, each image its own augmentation seed); else in order.
        The loader draws its workers' base seed from its own generator, never from torch's global one: a
        resumed run starts its workers at another epoch, and must leave the main process's stream alone."""
        from torch.utils.data import DataLoader

        from .augment_albu import AlbuImageDataset

        return DataLoader(AlbuImageDataset(paths, labels, transform, self.size, self.prepared.fit),
                          batch_size=batch_size, sampler=order,
                          drop_last=order is not None, num_workers=self.workers,
                          generator=torch.Generator().manual_seed(self.seed),
                          persistent_workers=persistent and self.workers > 0, pin_memory=self.device.type == "cuda")

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def train_stats(self):
        """Per-channel mean/std (fractions of 255) of up to STATS_IMAGES evenly spaced training files."""
        paths = self.paths("train")
        pick = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), STATS_IMAGES)).round().astype(int))
        loader = self.loader([paths[i] for i in pick], None, self.transform("none", (0, 0, 0), (1, 1, 1)), 64)
        total, squares, n = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
        for x, _ in loader:
            x = x.double()
            total += x.sum((0, 2, 3))
            squares += (x * x).sum((0, 2, 3))
            n += x.numel() // 3
        mean = total / n
        var = (squares - n * mean * mean) / max(1, n - 1)  # unbiased, like the cache feed's torch.std
        return mean.tolist(), var.clamp_min(0).sqrt().clamp_min(1e-3).tolist()

    def train_batches(self, n_steps: int, epoch: int = 0):
        """Per-image ops run in the workers, where altflip is a plain flip; the epoch seeds the order."""
        if "train" not in self._loaders:
            rows = self.rows["train"]
            self._order = SeededOrder(len(rows), self.seed)
            # drop_last, but a shard smaller than the batch still gives one step (as the cache feed does)
            self._loaders["train"] = self.loader(self.paths("train"), self.labels[rows], self.transform(self.per_image),
                                                 min(self.batch_size, len(rows)), order=self._order, persistent=True)
        self._order.epoch = epoch
        for x, y in itertools.islice(self._loaders["train"], n_steps):
            yield self.augment(self._to_device(x), y.to(self.device, non_blocking=True), self.num_classes)

    def eval_batches(self, split: str) -> _Batches:
        if split not in self._loaders:  # validation runs every epoch: keep its workers
            self._loaders[split] = self.loader(self.paths(split), None, self.transform("none"), self.eval_batch_size,
                                               persistent=split == "val")
        loader = self._loaders[split]
        return _Batches(lambda: (self._to_device(x) for x, _ in loader), len(loader))

    def sample(self, n: int) -> torch.Tensor:
        """Up to n random training images (fewer when large: see SAMPLE_VALUES), normalised, not augmented."""
        paths = self.paths("train")
        n = min(n, len(paths), max(32, SAMPLE_VALUES // (3 * self.size * self.size)))
        pick = torch.randperm(len(paths))[:n].tolist()
        loader = self.loader([paths[i] for i in pick], None, self.transform("none"), self.eval_batch_size)
        return torch.cat([self._to_device(x) for x, _ in loader])


class SeededOrder(torch.utils.data.Sampler):
    """A DataLoader sampler: the epoch's shuffled order from (seed, epoch), each index paired with a seed for that
    image's augmentation (AlbuImageDataset takes the pairs). The pattern depends on nothing a worker holds."""

    def __init__(self, n: int, seed: int, epoch: int = 0):
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=generator).tolist()
        seeds = torch.randint(2**62, (self.n,), generator=generator).tolist()
        return iter(zip(order, seeds))
