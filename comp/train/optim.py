"""Optimisers, learning-rate schedules and weight averaging for the trainer."""
from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULES = ("onecycle", "cosine", "triangle", "linear", "plateau", "constant")


def build_optimizer(model, name: str, lr: float, weight_decay: float, momentum: float, bias_lr_scale: float,
                    muon_lr: float = 0.24, muon_momentum: float = 0.6):
    """Two groups: normalisation-layer parameters, and everything else (and a third, a pretrained net's new
    head at model.head_lr_scale times the lr, where the model has head_parameters()).

    The norm group gets lr * bias_lr_scale but the same decay per step (airbench's trick:
    BatchNorm biases want a much larger step; their decay must not grow with it).
    "muon" adds a third group, the conv filters, stepped by Muon at muon_lr (see Muon).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name == "muon":
        return _build_muon(model, lr, weight_decay, momentum, bias_lr_scale, muon_lr, muon_momentum)
    norm_types = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    # Params frozen now (fastnet's whitening weight, its BN scales) stay out; one frozen later
    # (the whitening bias after 3 epochs) is skipped by the optimizer once its grad is None.
    params = [p for p in model.parameters() if p.requires_grad]
    # a pretrained net's new classifier (comp/models/finetune.py) learns from scratch: a larger lr
    head_ids = {id(p) for p in model.head_parameters()} if hasattr(model, "head_parameters") else set()
    vectors = [p for p in params if id(p) in norm_ids]
    matrices = [p for p in params if id(p) not in norm_ids and id(p) not in head_ids]
    bias_lr = lr * bias_lr_scale
    decoupled = name == "adamw"  # AdamW's decay is lr * wd per step; SGD/Adam add wd * p to the gradient
    groups = [dict(params=matrices, lr=lr, weight_decay=weight_decay)]
    if head_ids:
        groups.append(dict(params=[p for p in params if id(p) in head_ids], lr=lr * model.head_lr_scale,
                           weight_decay=weight_decay))
    if vectors:
        groups.append(dict(params=vectors, lr=bias_lr,
                           weight_decay=weight_decay * (lr / bias_lr if decoupled or name == "sgd" else 1.0)))
    for g in groups:
        g["initial_lr"] = g["lr"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def _build_muon(model, lr, weight_decay, momentum, bias_lr_scale, muon_lr, muon_momentum):
    """airbench94_muon's split: conv filters (4-d weights) -> Muon without decay (it keeps their
    norm fixed instead); every bias and norm parameter (ndim <= 1) -> SGD at lr * bias_lr_scale;
    the rest (the head) -> SGD at lr. Both SGD groups decay lr * weight_decay per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in params if p.ndim == 4]
    vectors = [p for p in params if p.ndim <= 1]
    others = [p for p in params if p.ndim not in (0, 1, 4)]
    bias_lr = lr * bias_lr_scale
    groups = [dict(params=filters, lr=muon_lr, momentum=muon_momentum, weight_decay=0.0, muon=True),
              dict(params=others, lr=lr, momentum=momentum, weight_decay=weight_decay, muon=False),
              dict(params=vectors, lr=bias_lr, momentum=momentum, weight_decay=weight_decay * lr / bias_lr,
                   muon=False)]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    return Muon(groups)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T (2-d), by a quintic Newton-Schulz iteration in bf16.

    The coefficients (3.4445, -4.7750, 2.0315) are Muon's: they push every singular value towards
    1 fast from near 0, ending anywhere in about [0.7, 1.2] after a few steps, which works as well
    as the exact U V^T and needs only matrix products (cheap, bf16-friendly, no SVD).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(torch.bfloat16)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide side: X X^T is then the smaller square
        x = x.T
    x = x / (x.norm() + eps)  # every singular value <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose groups flagged muon=True take orthogonalised steps.

    For a conv filter (out, in, kh, kw) the momentum-smoothed gradient is reshaped to
    (out, in*kh*kw) and replaced by its orthogonalisation (all singular values ~1): every
    direction of the update moves at the same rate, so the rare directions the plain gradient
    under-serves learn as fast as the dominant ones. Before each step the filter is rescaled to
    norm sqrt(out): BatchNorm follows every conv, so the scale carries no information and fixing
    it keeps the effective step size constant (this replaces weight decay for those filters).
    So it suits nets with a norm layer after every conv (fastnet, the ResNets, VGG-BN); a conv
    whose output scale matters (no norm after it) should not be in a muon group.
    Other groups: torch SGD semantics (decay added to the gradient, Nesterov momentum).
    (Muon: Keller Jordan et al. 2024; recipe from airbench94_muon.)
    """

    def __init__(self, groups):
        super().__init__(groups, dict(lr=0.02, momentum=0.9, weight_decay=0.0, muon=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(g)
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"])  # Nesterov
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                    g = orthogonalize(g.reshape(len(g), -1)).view_as(p)
                p.add_(g, alpha=-group["lr"])
        return loss


def lr_multiplier(schedule: str, step: int, total_steps: int, warmup: float = 0.1) -> float:
    """Factor on the initial lr at `step` of `total_steps` (plateau/constant: 1, handled per epoch)."""
    t = min(step / max(total_steps, 1), 1.0)
    if schedule == "onecycle":  # linear warm-up, then cosine decay to ~0
        if t < warmup:
            return 0.04 + 0.96 * t / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (1 - warmup))) + 1e-3
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t)) + 1e-3
    if schedule == "triangle":  # airbench94: 0.2 -> 1 at 23% -> 0.07
        peak = 0.23
        return 0.2 + 0.8 * t / peak if t < peak else 1.0 + (0.07 - 1.0) * (t - peak) / (1 - peak)
    if schedule == "linear":  # airbench94_muon: straight from 1 down to 0
        return 1.0 - t
    if schedule in ("plateau", "constant"):
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def set_lr(optimizer, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


class Plateau:
    """ReduceLROnPlateau on validation loss, as a multiplier so it composes with set_lr."""

    def __init__(self, factor=0.5, patience=2, min_multiplier=1e-3):
        self.factor, self.patience, self.min_multiplier = factor, patience, min_multiplier
        self.multiplier, self.best, self.bad_epochs = 1.0, math.inf, 0

    def step(self, val_loss: float) -> float:
        if val_loss < self.best - 1e-4:
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.multiplier = max(self.multiplier * self.factor, self.min_multiplier)
                self.bad_epochs = 0
        return self.multiplier

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


class Lookahead:
    """airbench's EMA-as-lookahead: every few steps the live weights are pulled into an
    average and copied back, with a decay that warms up over training (fast moves early,
    strong averaging at the end)."""

    def __init__(self, model, every_steps=5, decay_base=0.95, decay_pow=3.0):
        self.every_steps, self.decay_base, self.decay_pow = every_steps, decay_base, decay_pow
        self.average = None
        self._model = model

    def step(self, step: int, total_steps: int) -> None:
        if step % self.every_steps:
            return
        state = self._model.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}
            return
        decay = (self.decay_base ** self.every_steps) * (step / total_steps) ** self.decay_pow
        self._pull(state, decay)

    def finish(self) -> None:
        """At the end of training only: the steps since the last pull are dropped (airbench's final update
        with decay 1). Each epoch would drop them every epoch where an epoch's steps are not a multiple of 5."""
        if self.average is not None:
            self._pull(self._model.state_dict(), 1.0)

    @torch.no_grad()
    def _pull(self, state, decay: float) -> None:
        for key, avg in self.average.items():
            avg.lerp_(state[key], 1 - decay)
            state[key].copy_(avg)

    def state_dict(self):
        return {"average": self.average}

    def load_state_dict(self, state):
        self.average = state["average"]
