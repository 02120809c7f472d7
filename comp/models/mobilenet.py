"""MobileNetV3-Small (Howard et al. 2019, Table 2) written from scratch.

Inverted residuals with optional squeeze-excitation (ReLU squeeze, hard-sigmoid gate),
ReLU or hard-swish per the paper's table, 1x1 conv to 576, pool, 1024 hard-swish dense.
Layer widths, SE widths (make_divisible(expanded/4, 8)), BN eps and init follow
torchvision, so parameter counts match ``torchvision.models.mobilenet_v3_small``.

Small inputs: for img_size <= 64 the stem conv has stride 1 (paper: 2), so the total stride
is 16 and a 32px image ends at 2x2 instead of 1x1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import SqueezeExcite, conv_bn_act, init_convs
from .registry import register_model

# kernel, expanded, out, SE, activation ("RE" ReLU | "HS" hard-swish), stride
MBV3_SMALL_BLOCKS = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to a multiple of divisor without going more than 10% below v (as in the paper's code)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_act(c_in, c_out, kernel, stride=1, groups=1, act: type[nn.Module] | None = None):
    # torchvision's MobileNetV3 BatchNorm settings
    return conv_bn_act(c_in, c_out, kernel, stride, groups, act, bn_eps=0.001, bn_momentum=0.01)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, kernel: int, expanded: int, c_out: int, use_se: bool,
                 activation: str, stride: int):
        super().__init__()
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers = []
        if expanded != c_in:  # the first block has expanded == in: no 1x1 expansion
            layers.append(_conv_bn_act(c_in, expanded, 1, act=act))
        layers.append(_conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4, 8), nn.ReLU, nn.Hardsigmoid))
        layers.append(_conv_bn_act(expanded, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 dropout: float = 0.2, last_channels: int = 1024):
        super().__init__()
        stem_stride = 1 if img_size <= 64 else 2
        layers = [_conv_bn_act(in_chans, 16, 3, stem_stride, act=nn.Hardswish)]
        c_in = 16
        for kernel, expanded, c_out, use_se, activation, stride in MBV3_SMALL_BLOCKS:
            layers.append(InvertedResidual(c_in, kernel, expanded, c_out, use_se, activation, stride))
            c_in = c_out
        layers.append(_conv_bn_act(c_in, 6 * c_in, 1, act=nn.Hardswish))  # 96 -> 576
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * c_in, last_channels), nn.Hardswish(inplace=True),
            nn.Dropout(dropout), nn.Linear(last_channels, num_classes),
        )
        self._init_weights()

    def _init_weights(self):
        init_convs(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    description="MobileNetV3-Small from scratch (paper table, hard-swish, SE), stride-1 stem <=64px",
    recipe=dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="onecycle", epochs=40,
                batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip"),
)
def mobilenetv3_small(num_classes, in_chans, img_size, **kw):
    return MobileNetV3Small(num_classes, in_chans, img_size, **kw)
