"""VGG-16 (BatchNorm variant, "configuration D") written from scratch for small images.

Differences from the ImageNet model, all because inputs here are 16-64px:
- A block's max-pool is skipped once the map is already 1x1 (at 16px the 5th pool would
  have nothing to pool), so any size >= 1 works.
- Adaptive average pooling to 1x1 replaces the fixed 7x7 flatten.
- The classifier is 512 -> 512 -> num_classes (with dropout) instead of 25088 -> 4096 ->
  4096: on a 1x1x512 map the 4096-wide head would add ~19M parameters (more than the whole
  conv trunk) and mostly overfit small datasets. This is the usual CIFAR VGG head.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register_model

# (number of 3x3 convs, width) per block: 2+2+3+3+3 = 13 convs.
VGG16_BLOCKS = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]


class VGG16(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 dropout: float = 0.5, hidden: int = 512):
        super().__init__()
        layers, c_in, size = [], in_chans, img_size
        for n_convs, width in VGG16_BLOCKS:
            for _ in range(n_convs):
                layers += [nn.Conv2d(c_in, width, 3, padding=1),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            if size > 1:  # pool only while there is something left to pool
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                size = math.ceil(size / 2)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self):
        # Same scheme as torchvision's VGG: He init for convs, small normal for linears.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model(
    description="VGG-16-BN from scratch (13 convs, 64-512), pools while >1px, 512-512 head",
    recipe=dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                epochs=60, batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip"),
)
def vgg16(num_classes, in_chans, img_size, **kw):
    return VGG16(num_classes, in_chans, img_size, **kw)
