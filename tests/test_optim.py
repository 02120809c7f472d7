"""Optimisers and schedules: Muon's orthogonalised steps, its parameter split, the schedules, lookahead."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_train import prepared_workdir

from comp.models import create_model
from comp.train.optim import Lookahead, Muon, build_optimizer, lr_multiplier, orthogonalize
from comp.train.trainer import TrainConfig, train


@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (32, 32)])
def test_orthogonalize_flattens_the_spectrum(shape):
    torch.manual_seed(0)
    # A badly conditioned matrix: singular values spread over an order of magnitude (as a
    # gradient's top ones are; the 3 steps airbench uses lift values from 1e-3 only to ~0.04).
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape)))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape)))
    g = u @ torch.diag(torch.logspace(-1, 0, min(shape))) @ v.T
    out = orthogonalize(g * 50)
    assert out.shape == g.shape and out.dtype == g.dtype
    sv = torch.linalg.svdvals(out.float())
    # Muon's quintic does not converge to exactly 1: it lands every value in a band around it.
    assert sv.min() > 0.5 and sv.max() < 1.3
    # ... and keeps the singular directions: out ~ U V^T up to that band.
    assert F.cosine_similarity(out.flatten(), (u @ v.T).flatten(), dim=0) > 0.95


def test_muon_splits_filters_head_and_biases():
    model = create_model("fastnet", num_classes=10, img_size=32)
    opt = build_optimizer(model, "muon", lr=2.0, weight_decay=1e-3, momentum=0.85, bias_lr_scale=64, muon_lr=0.3,
                          muon_momentum=0.55)
    muon, head, biases = opt.param_groups
    assert muon["muon"] and muon["lr"] == 0.3 and muon["momentum"] == 0.55 and muon["weight_decay"] == 0
    assert all(p.ndim == 4 and p.requires_grad for p in muon["params"])
    assert [tuple(p.shape) for p in head["params"]] == [(10, 256)] and head["lr"] == 2.0
    assert all(p.ndim == 1 for p in biases["params"]) and biases["lr"] == 128.0
    assert any(p is model.whiten.bias for p in biases["params"])  # the whitening bias is a bias too
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(head["lr"] * head["weight_decay"])
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in opt.param_groups) == trainable


def test_muon_fixes_filter_norms_and_learns():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=4, img_size=16)
    x, y = torch.randn(64, 3, 16, 16), torch.arange(64) % 4
    x += y.view(-1, 1, 1, 1) * 0.5  # learnable: the class shifts the brightness
    model.init_from_data(x)
    opt = build_optimizer(model, "muon", lr=0.5, weight_decay=1e-3, momentum=0.85, bias_lr_scale=8, muon_lr=0.1)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for p in opt.param_groups[0]["params"]:  # rescaled to sqrt(out) before the last step, then moved by it
        assert p.norm().item() == pytest.approx(len(p) ** 0.5, rel=0.3)


def test_muon_state_round_trips():
    """Checkpoints save optimizer.state_dict(): the muon flag and momentum buffers must survive."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 8, 3)
    opt = Muon([dict(params=[layer.weight], lr=0.1, momentum=0.6, weight_decay=0.0, muon=True, initial_lr=0.1),
                dict(params=[layer.bias], lr=0.1, momentum=0.9, weight_decay=0.0, muon=False, initial_lr=0.1)])
    layer(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    again = Muon([dict(params=[layer.weight], muon=True), dict(params=[layer.bias])])
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["muon"] and not again.param_groups[1]["muon"]
    assert torch.equal(again.state[layer.weight]["momentum_buffer"], opt.state[layer.weight]["momentum_buffer"])


def test_muon_non_muon_groups_match_torch_sgd():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = Muon([dict(params=a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, muon=False)])
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    for _ in range(3):
        x = torch.randn(4, 5)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)


@pytest.mark.parametrize("schedule,points", [
    ("linear", {0: 1.0, 50: 0.5, 100: 0.0}),
    ("triangle", {0: 0.2, 23: 1.0, 100: 0.07}),
    ("cosine", {0: 1.001, 50: 0.501}),
    ("constant", {0: 1.0, 77: 1.0}),
])
def test_schedules(schedule, points):
    for step, value in points.items():
        assert lr_multiplier(schedule, step, 100) == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("decay_base", [0.95, 0.98])
def test_lookahead_keeps_decay_base_to_the_fifth_of_the_average_at_the_end(decay_base):
    model = torch.nn.Linear(1, 1, bias=False)
    lookahead = Lookahead(model, every_steps=5, decay_base=decay_base)
    model.weight.data.fill_(0.0)
    lookahead.step(5, 10)  # the first pull only starts the average (0)
    model.weight.data.fill_(1.0)
    lookahead.step(10, 10)  # the last step: decay_base**5 * (10/10)**3 of the average stays
    kept = decay_base**5
    assert model.weight.item() == pytest.approx(1 - kept)  # and the live weights are set to it
    model.weight.data.fill_(1.0)
    lookahead.step(7, 10)  # between pulls nothing moves
    assert model.weight.item() == 1.0
    lookahead.finish()  # training ends on the average
    assert model.weight.item() == pytest.approx(1 - kept)


def test_lookahead_keeps_the_steps_an_epoch_ends_between_pulls(tmp_path, workdir):
    """3 steps an epoch (not a multiple of 5): the live weights after epoch 1 are its own, not the average."""
    prepared_workdir(tmp_path, workdir, per_class=12, size=16)  # 2 folds: 18 training images, batch 6
    [metrics] = train(TrainConfig(arch="custom_cnn", fold=0, workdir=str(workdir), epochs=3, batch_size=6,
                                  optimizer="sgd", lr=0.05, ema=True, tta="none", val_every=1, patience=0))
    history = pd.read_csv(workdir / "runs" / "custom_cnn" / "fold0" / "history.csv")
    assert history.val_loss.nunique() == 3  # each epoch moved the weights (it used to end on a stale average)
