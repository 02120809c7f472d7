"""Custom EfficientNet for 16-64px images: MBConv blocks with squeeze-excitation and SiLU.

MBConv = 1x1 expand -> BN -> SiLU -> depthwise kxk (stride) -> BN -> SiLU -> SE(0.25)
         -> 1x1 project -> BN (no activation), + input when stride 1 and channels match.

Stage table: B0's first six stages with fewer repeats, a stride-1 stem and one fewer
downsampling stage, so the total stride is 16 (B0: 32). The last map is 2x2 at 32px,
4x4 at 64px and 1x1 at 16px. Head: 1x1 conv to 1024, global average pool, dropout, dense.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import SqueezeExcite, conv_bn_act, init_convs
from .registry import register_model

# (expand ratio, kernel, stride of first block, out channels, repeats)
EFFNET_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),   # 32px -> 16
    (6, 5, 2, 40, 2),   # -> 8
    (6, 3, 2, 80, 3),   # -> 4
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 2),  # -> 2
]


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int,
                 se_ratio: float = 0.25):
        super().__init__()
        hidden = c_in * expand
        # B0 stage 1 (expand 1) has no expansion conv: it would be a 1x1 identity-sized conv.
        self.expand = conv_bn_act(c_in, hidden, 1, act=nn.SiLU) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU)
        self.se = SqueezeExcite(hidden, max(1, int(c_in * se_ratio)))
        self.project = conv_bn_act(hidden, c_out, 1)  # linear bottleneck: no activation
        self.use_shortcut = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.use_shortcut else out


class CustomEfficientNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 stem_width: int = 32, head_width: int = 1024, dropout: float = 0.2,
                 stages: list[tuple] | None = None):
        super().__init__()
        # Stride-1 stem up to 64px; above that B0's stride-2 stem keeps compute in check.
        self.stem = conv_bn_act(in_chans, stem_width, 3, stride=1 if img_size <= 64 else 2, act=nn.SiLU)
        blocks, c_in = [], stem_width
        for expand, kernel, stride, c_out, repeats in stages or EFFNET_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn_act(c_in, head_width, 1, act=nn.SiLU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_width, num_classes)
        self._init_weights()

    def _init_weights(self):
        init_convs(self)
        nn.init.uniform_(self.classifier.weight, -1 / self.classifier.in_features ** 0.5,
                         1 / self.classifier.in_features ** 0.5)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


@register_model(
    description="EfficientNet-B0-like MBConv+SE net, SiLU, total stride 16 (2x2 map at 32px)",
    recipe=dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="onecycle", epochs=40,
                batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip"),
)
def custom_effnet(num_classes, in_chans, img_size, **kw):
    return CustomEfficientNet(num_classes, in_chans, img_size, **kw)
