"""``timm/<name>``: any timm architecture, adapted for small images, with optional local weights.

    create_model("timm/resnet18", num_classes=5, img_size=32)                   # random init
    create_model("timm/resnet18", num_classes=5, weights="resnet18.safetensors")  # local file
    create_model("timm/resnet18", num_classes=5, pretrained=True)                 # needs network

Small-image stem adaptation (img_size <= 64, unless ``adapt=False``). ImageNet stems
downsample 4x before the first stage (a 32px image would reach the last stage at 1x1), so:
  1. the first nn.Conv2d with stride > 1 (in registration order: the stem conv, e.g. resnet
     ``conv1``, efficientnet ``conv_stem``, convnext's 4x4 patchify conv) gets stride 1;
  2. the stem max-pool becomes nn.Identity: the top-level ``maxpool`` attribute (resnet
     family), otherwise the first nn.MaxPool2d registered before the second strided conv
     (e.g. densenet ``features.pool0``).
Models whose constructor takes ``img_size`` (ViT, Swin, ...) are built at that size instead
and are not adapted: their patch embedding and position embedding must stay consistent.
Every change is logged at INFO level on the ``comp.models.timm_adapter`` logger.

Weights: ``weights=PATH`` loads a state dict (.pth/.pt via torch.load(weights_only=True), or
.safetensors). Checkpoint wrappers {"state_dict"|"model"|"model_state_dict": ...} and a
DataParallel "module." prefix are unwrapped. Tensors whose shape differs from the model's are
dropped (normally the classifier, when num_classes differs), except a stem conv that differs
only in input channels, which is adapted with timm's adapt_input_conv. Loading is
strict=False; missing/unexpected/dropped keys are logged as a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from ..io import CompError
from .pretrained import read_state

logger = logging.getLogger(__name__)

# Generic defaults for training a timm architecture from scratch on 32-64px images.
TIMM_RECIPE = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine", epochs=30,
                   batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip")

def check_timm_name(name: str) -> None:
    """ValueError unless timm knows the architecture (hub/local-dir names are passed through)."""
    import timm

    if not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) and not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; search names with "
                         f"timm.list_models('*{name.split('.')[0][:8]}*')")


def create_timm_model(name: str, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                      pretrained: bool = False, weights: str | Path | None = None,
                      adapt: bool = True, **kwargs) -> nn.Module:
    import timm

    check_timm_name(name)
    if weights is not None and name.startswith("hf-hub:"):  # its config would be fetched from the Hub
        raise ValueError(f"timm/{name} with --weights: hf-hub names read their config from the network; give the "
                         f"plain timm name (e.g. timm/{name.split('/')[-1]}) with the same --weights file")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    download = pretrained and weights is None

    def build() -> tuple[nn.Module, bool]:
        """Pass img_size to models that take it (ViT, Swin, ...); returns (model, sized)."""
        common = dict(pretrained=download, num_classes=num_classes, in_chans=in_chans, **kwargs)
        try:
            return timm.create_model(name, img_size=img_size, **common), True
        except TypeError as e:
            if "img_size" not in str(e):
                raise
        return timm.create_model(name, **common), False

    try:
        model, sized = build()
    except Exception as e:
        if not download or isinstance(e, (TypeError, ValueError)):
            raise  # a bad argument, not a failed download
        raise RuntimeError(
            f"could not download pretrained weights for {name} (offline?). Download them on a "
            f"machine with network, then pass --weights FILE ({type(e).__name__}: {e})") from e

    if adapt and img_size <= 64 and not sized:
        changes = adapt_stem(model)
        if changes and not _forward_works(model, in_chans, img_size):
            # a stem with parallel branches (FastViT's MobileOne, DLA's projection) keeps a stride 2 in the
            # branch not adapted: the net then fails at its first step, so it keeps timm's own stem instead
            model, _ = build()
            logger.warning("timm/%s: its stem has parallel paths that cannot lose their downsampling; kept as "
                           "timm builds it (4x smaller maps at %dpx)", name, img_size)
        else:
            for change in changes:
                logger.info("timm/%s stem adapted for %dpx: %s", name, img_size, change)
    if weights is not None:
        load_weights(model, weights)
    return model.float()


def _forward_works(model: nn.Module, in_chans: int, img_size: int) -> bool:
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, img_size, img_size))
        return True
    except RuntimeError:  # mismatched maps where branches join
        return False
    finally:
        model.train(training)


def adapt_stem(model: nn.Module) -> list[str]:
    """Remove the stem's 4x downsampling in place (see module docstring); returns what changed."""
    changes = []
    strided = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
    if strided:
        conv_name, conv = strided[0]
        changes.append(f"{conv_name}: stride {tuple(conv.stride)} -> (1, 1)")
        conv.stride = (1, 1)

    pool_name = None
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        pool_name = "maxpool"
    else:
        second_strided = strided[1][0] if len(strided) > 1 else None
        for n, m in model.named_modules():
            if n == second_strided:
                break
            if isinstance(m, nn.MaxPool2d):
                pool_name = n
                break
    if pool_name is not None:
        parent_name, _, child = pool_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
        changes.append(f"{pool_name}: MaxPool2d -> Identity")
    return changes


def _resampled_pos_embed(model: nn.Module, saved: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The saved position embeddings interpolated to the model's patch grid, as timm's pretrained loading does."""
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    new = resample_abs_pos_embed(saved, list(model.patch_embed.grid_size), num_prefix_tokens=prefix)
    if new.shape != target.shape:
        raise ValueError(f"pos_embed {tuple(saved.shape)} cannot be resampled to {tuple(target.shape)}")
    return new


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local state dict into model (strict=False); returns the key report."""
    from timm.models import adapt_input_conv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = read_state(path)
    own = model.state_dict()
    dropped = []
    for key, tensor in list(state.items()):
        target = own.get(key)
        if target is None or target.shape == tensor.shape:
            continue
        stem_conv_in_chans_differ = (tensor.ndim == 4 and tensor.shape[0] == target.shape[0]
                                     and tensor.shape[2:] == target.shape[2:])
        if stem_conv_in_chans_differ:
            state[key] = adapt_input_conv(target.shape[1], tensor, base_chans=tensor.shape[1])
            logger.info("%s: adapted %s from %d to %d input channels",
                        path.name, key, tensor.shape[1], target.shape[1])
        elif key == "pos_embed" and hasattr(model, "patch_embed"):  # a ViT built at another size: resample the grid
            state[key] = _resampled_pos_embed(model, tensor, target)
            logger.info("%s: resampled pos_embed %s -> %s", path.name, tuple(tensor.shape), tuple(target.shape))
        else:
            dropped.append(f"{key} {tuple(tensor.shape)} vs model {tuple(target.shape)}")
            del state[key]
    if not any(key in own for key in state):  # strict=False would train from random init and say little
        raise CompError(f"--weights {path}: none of its {len(state)} tensors fits this net (its names or shapes "
                        f"differ, e.g. {next(iter(state), 'none')}); pass the weights of the same architecture")
    result = model.load_state_dict(state, strict=False)
    report = {"loaded": sorted(k for k in state if k in own), "missing": list(result.missing_keys),
              "unexpected": list(result.unexpected_keys), "dropped": dropped}
    logger.info("%s: loaded %d tensors", path.name, len(report["loaded"]))
    for kind in ("dropped", "missing", "unexpected"):
        if report[kind]:
            logger.warning("%s: %d %s keys: %s", path.name, len(report[kind]), kind,
                           ", ".join(report[kind][:10]) + (" ..." if len(report[kind]) > 10 else ""))
    return report
