"""The model registry: one name -> one factory and its recipe of training defaults (comp/models/__init__.py
says how to add a model). Every family module registers its nets here when comp.models imports it."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from . import timm_adapter

TIMM_PREFIX = "timm/"

# name -> {"fn", "description", "recipe", "family"}
_REGISTRY: dict[str, dict] = {}


def register_model(description: str = "", recipe: dict | None = None) -> Callable:
    """Decorator registering ``fn(num_classes, in_chans, img_size, **kw)`` under ``fn.__name__``."""

    def decorator(fn: Callable) -> Callable:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = {
            "fn": fn,
            "description": description or (fn.__doc__ or "").strip().split("\n")[0],
            "recipe": dict(recipe or {}),
            "family": fn.__module__.rsplit(".", 1)[-1],
        }
        return fn

    return decorator


WEIGHT_KWARGS = ("pretrained", "weights")  # model_kwargs that fetch or read weights when the net is built


def without_weight_kwargs(kwargs: dict) -> dict:
    """The net's arguments less those that load weights: for a net whose weights come from a saved file
    (a checkpoint, model.pt, a bundle), which must build offline and without the original weights file."""
    return {k: v for k, v in kwargs.items() if k not in WEIGHT_KWARGS}


def list_models() -> list[str]:
    """Sorted registered names (``timm/<name>`` is accepted by create_model but not listed)."""
    return sorted(_REGISTRY)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}. Known models: {', '.join(list_models())}; "
        f"or any timm architecture as '{TIMM_PREFIX}<name>' (e.g. '{TIMM_PREFIX}resnet18')."
    )


def model_info(name: str) -> dict:
    """{"name", "description", "recipe", "family"} for a registered or ``timm/<name>`` model."""
    if name.startswith(TIMM_PREFIX):
        timm_adapter.check_timm_name(name[len(TIMM_PREFIX):])
        return {
            "name": name,
            "description": f"timm architecture {name[len(TIMM_PREFIX):]!r} (stem adapted for <=64px)",
            "recipe": dict(timm_adapter.TIMM_RECIPE),
            "family": "timm_adapter",
        }
    if name not in _REGISTRY:
        raise _unknown(name)
    entry = _REGISTRY[name]
    return {"name": name, "description": entry["description"],
            "recipe": dict(entry["recipe"]), "family": entry["family"]}


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 **kwargs) -> nn.Module:
    """Build a registered model (or ``timm/<name>``) in fp32 with random init.

    ``weights=FILE`` (a state dict, .pth/.pt/.safetensors) works for every model and is
    loaded like timm weights (shape-mismatched tensors dropped, strict=False, keys logged).
    ``pretrained=True`` only exists for ``timm/<name>``: our own models have no released weights.
    """
    if name.startswith(TIMM_PREFIX):
        return timm_adapter.create_timm_model(
            name[len(TIMM_PREFIX):], num_classes=num_classes, in_chans=in_chans,
            img_size=img_size, **kwargs)
    if name not in _REGISTRY:
        raise _unknown(name)
    if _REGISTRY[name]["family"] == "finetune":  # pretrained backbones load their own weights (finetune.py)
        return _REGISTRY[name]["fn"](num_classes, in_chans, img_size, **kwargs).float()
    weights = kwargs.pop("weights", None)
    if kwargs.pop("pretrained", False):
        raise ValueError(f"{name!r} has no pretrained weights; pass weights=FILE or use a "
                         f"'{TIMM_PREFIX}<name>' model with pretrained=True")
    model = _REGISTRY[name]["fn"](num_classes, in_chans, img_size, **kwargs).float()
    if weights is not None:
        timm_adapter.load_weights(model, weights)
    return model


def count_params(model: nn.Module) -> int:
    """Total number of parameters, trainable and frozen."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_chans: int = 3, img_size: int = 32) -> int:
    """Multiply-adds of one image's forward pass through the convolutions and linear layers
    (what dominates a CNN's cost), counted from one real forward pass on the CPU."""
    import torch

    total = 0

    def add(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        total += output[0].numel() * per_output

    hooks = [m.register_forward_hook(add) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return int(total)
