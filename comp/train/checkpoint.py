"""The resumable state of a training fold: checkpoint.pt, written after every epoch.

A run killed at any moment continues with `comp train --resume` from its last epoch: weights,
optimizer, lookahead and plateau state, the epoch/step counters, the budgeted plan (total steps)
and the random streams. A resumed run must continue the same recipe on the same split.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..io import CompError, load_torch, save_torch

RESUME_KEYS = ("arch", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "label_smoothing",
               "schedule", "bias_lr_scale", "ema", "ema_decay", "aug", "grad_clip", "muon_lr", "muon_momentum", "model_kwargs",
               "img_size", "loader", "label_hash", "folds_fingerprint",
               "seed", "world_size")  # the seed draws altflip's pattern and the shards: a new one would not continue
# What a run did before its checkpoint recorded a key: a checkpoint without the key is compared
# as if it held this value. Without it, a run started before the key existed and resumed now
# would silently take today's planned value (lookahead's window was fixed at 0.95 until dc65211).
BEFORE_RECORDED = {"ema_decay": 0.95}


def load_weights(model: torch.nn.Module, state: dict, where) -> None:
    """model.load_state_dict(state), or a CompError naming the file when the saved tensors do not fit
    the net this version builds (weights from an older comp, or a run of another image size)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise CompError(f"{where}: the saved weights do not fit the net this comp builds ({lines[0] if lines else exc}); "
                        f"they come from an older comp or another image size: train the run again") from exc


def check_resumable(saved: dict, now: dict, out: Path) -> None:
    """A resumed run must continue the same recipe on the same split, or its record would lie."""
    # Keys the checkpoint recorded, and those whose value before they were recorded is known
    # (BEFORE_RECORDED); a checkpoint without a config (the oldest) still resumes.
    # A budgeted run's epochs were fitted to the clock: the checkpoint's plan is kept instead.
    if saved:
        saved = {**BEFORE_RECORDED, **saved}
    keys = [k for k in RESUME_KEYS if not (k == "epochs" and saved.get("budget"))]
    changed = [f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in keys if k in saved and saved[k] != now.get(k)]
    if changed:
        raise CompError(f"{out}: cannot resume with a different recipe or split ({'; '.join(changed)}); "
                        f"resume with flags that give the values on the left, or --force to start over")


def save_checkpoint(path, model, optimizer, lookahead, plateau, state, best_weights, config) -> None:
    save_torch(path, {"config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "lookahead": lookahead.state_dict() if lookahead else None,
                      "plateau": plateau.state_dict(), "state": state, "best_weights": best_weights,
                      "rng": torch.get_rng_state(),
                      "cuda_rng": _cuda_rng(model)})


def _cuda_rng(model):
    """The training device's CUDA RNG state only: a resume may see other GPUs, or fewer."""
    device = next(model.parameters()).device
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def read_checkpoint(path: Path):
    """On the CPU: it may be sent to other ranks, and the RNG states must be CPU tensors."""
    if not path.exists():
        return None
    return load_torch(path, map_location="cpu", weights_only=True, then="--force starts the fold over")


def load_checkpoint(ckpt, model, optimizer, lookahead, plateau, device, path):
    def to_device(tensors):
        return tensors and {k: v.to(device) for k, v in tensors.items()}

    load_weights(model, ckpt["model"], path)
    trained = {id(p) for p in model.parameters()}
    if any(id(p) not in trained for group in optimizer.param_groups for p in group["params"]):
        raise CompError(f"{path}: the checkpoint's optimizer holds parameters this comp's net no longer has "
                        f"(an older comp's net, e.g. fastnet's wider whitening before 24 directions): "
                        f"its weights still predict, but training cannot resume; --force to start over")
    optimizer.load_state_dict(ckpt["optimizer"])  # moves its state to the parameters' device
    if lookahead and ckpt["lookahead"]:
        lookahead.load_state_dict({"average": to_device(ckpt["lookahead"]["average"])})
    plateau.load_state_dict(ckpt["plateau"])
    torch.set_rng_state(ckpt["rng"])
    cuda_rng = ckpt.get("cuda_rng")
    if isinstance(cuda_rng, (list, tuple)):  # checkpoints before 2026-11-29 kept every visible GPU's
        index = (device.index or 0) if device.type == "cuda" else None
        cuda_rng = cuda_rng[index] if index is not None and index < len(cuda_rng) else None
    if cuda_rng is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_rng, device)
    return ckpt["state"], to_device(ckpt["best_weights"])
