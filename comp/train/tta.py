"""Test-time augmentation: the views a model predicts each image under, and how their logits combine.

Views are made on the whole batch on the device (like comp.train.augment). Each mode's views start with the
narrower mode's, so per-view logits saved once re-score any narrower TTA with numpy (combine_views).
"""
import torch.nn.functional as F

from .augment import memory_format_of

TTA_MODES = ("none", "flip", "flip+shift")  # each mode's views start with the narrower mode's
# Weights of the views tta_views makes, in its order: plain, mirrored, then the four shifted ones.
TTA_WEIGHTS = {"none": (1.0,), "flip": (0.5, 0.5), "flip+shift": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}


def tta_views(x, mode="flip", shift=1):
    """[(weight, view)] whose weighted LOGITS the caller averages; weights sum to 1.
    'flip+shift' is airbench's scheme: original and mirror at 0.25 each, plus both of them
    shifted `shift` px up-left and down-right (reflect pad, then crop) at 0.125 each. 1 px at
    every size: on tiny100 (64px, 5 folds) 2 and 4 px scored within 0.1 point of it
    (scripts/bench_tta.py, BENCHMARKS.md)."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; valid: {', '.join(TTA_MODES)}")
    weights = TTA_WEIGHTS[mode]
    if mode == "none":
        return [(weights[0], x)]
    fmt = memory_format_of(x)
    views = [x, x.flip(-1).contiguous(memory_format=fmt)]
    if mode == "flip+shift":
        H, W = x.shape[-2:]
        for img in views[:2]:
            padded = F.pad(img, (shift,) * 4, mode="reflect")
            for off in (0, 2 * shift):  # crop offset 0 = shift (-s,-s), offset 2s = shift (+s,+s)
                views.append(padded[..., off:off + H, off:off + W].contiguous(memory_format=fmt))
    return list(zip(weights, views))


def combine_views(view_logits, mode: str):
    """(V, N, C) per-view logits of a mode at least as wide as `mode` -> (N, C) logits of `mode`:
    the narrower mode's views are the first ones, so re-scoring another TTA needs no model."""
    weights = TTA_WEIGHTS[mode]
    if len(view_logits) < len(weights):
        raise ValueError(f"TTA {mode!r} needs {len(weights)} views, the logits hold {len(view_logits)}")
    return sum(w * view_logits[i] for i, w in enumerate(weights))
