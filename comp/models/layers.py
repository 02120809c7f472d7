"""Building blocks shared by the MobileNet-family models (custom_effnet, mobilenetv3_small)."""
from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = None, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> nn.Sequential:
    """conv (same padding, no bias) -> BatchNorm -> optional activation."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features: pool -> 1x1 reduce -> act -> 1x1 expand -> gate.

    EfficientNet uses SiLU and a sigmoid gate; MobileNetV3 uses ReLU and a hard sigmoid.
    """

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module] = nn.SiLU,
                 gate: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.act = act(inplace=True)
        self.gate = gate() if gate is nn.Sigmoid else gate(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


def init_convs(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) conv weights and zero conv biases, as torchvision's MobileNets do."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
