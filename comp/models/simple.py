"""Small plain CNNs reproduced from course/competition reports.

custom_cnn  the 64x64 course report's net (3 strided convs, dense 256/128).
simple_cnn  the CIFAR report's 2-conv net with heavy dropout.
vgg_cnn     a VGG-style 4-block net (2 convs per block, 32-64-128-256).

All max-pools use ceil_mode=True: for even sizes this is exactly the original floor
pooling (so the reports' 64px / 32px nets are unchanged), and for small or odd inputs
a 1x1 map stays 1x1 instead of collapsing to 0x0.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register_model


def _half(size: int) -> int:
    """Spatial size after a ceil-mode 2x2 pool or a 'same'-padded stride-2 conv."""
    return math.ceil(size / 2)


class CustomCNN(nn.Module):
    """conv25 5x5/1 -> pool -> conv50 5x5/2 -> pool -> BN -> conv70 3x3/2 -> pool -> 256 -> 128 -> out.

    'same' padding as in Keras: for the stride-2 convs, padding k//2 gives ceil(n/2)
    outputs, the size Keras' 'same' gives.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 25, 5, stride=1, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(25, 50, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.BatchNorm2d(50),
            nn.Conv2d(50, 70, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        size = img_size
        for _ in range(5):  # pool, strided conv, pool, strided conv, pool
            size = _half(size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(70 * size * size, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 128), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SimpleCNN(nn.Module):
    """[conv3x3 -> BN -> ReLU -> pool] x (32, 64) -> dropout -> dense 256 -> dropout -> out.

    The flattened map is capped at 8x8 (the report's 32px size) with adaptive average
    pooling, so large inputs do not blow up the dense layer (at 224px it would be 51M weights).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        layers = []
        for c_in, c_out in [(in_chans, 32), (32, 64)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*layers)
        size = min(_half(_half(img_size)), 8)
        self.pool = nn.AdaptiveAvgPool2d(size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(64 * size * size, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class VGGCNN(nn.Module):
    """4 blocks of [conv3x3 -> BN -> ReLU] x 2 + max-pool (32, 64, 128, 256), dense 1024 x 2.

    The final map is 2x2 at 32px and 4x4 at 64px; beyond that it is average-pooled down
    to 4x4 so the first dense layer stays at 4096x1024.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.5):
        super().__init__()
        layers, c_in, size = [], in_chans, img_size
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            size = _half(size)
        self.features = nn.Sequential(*layers)
        size = min(size, 4)
        self.pool = nn.AdaptiveAvgPool2d(size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * size * size, 1024), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model(
    description="64x64 course-report CNN: 3 strided convs (25/50/70), dense 256-128, dropout 0.25",
    recipe=dict(optimizer="adam", lr=1e-3, schedule="plateau", epochs=30, patience=5,
                batch_size=64, aug="flip"),
)
def custom_cnn(num_classes, in_chans, img_size, **kw):
    return CustomCNN(num_classes, in_chans, img_size, **kw)


@register_model(
    description="CIFAR-report CNN: conv32/conv64 with BN + pool, dropout 0.5, dense 256",
    recipe=dict(optimizer="adam", lr=1e-3, schedule="plateau", epochs=30, patience=5,
                batch_size=64, aug="flip,crop:4"),
)
def simple_cnn(num_classes, in_chans, img_size, **kw):
    return SimpleCNN(num_classes, in_chans, img_size, **kw)


@register_model(
    description="VGG-style CNN: 4 blocks x 2 convs (32-64-128-256) with BN, dense 1024 x 2",
    recipe=dict(optimizer="adamw", lr=1e-3, weight_decay=5e-2, schedule="cosine", epochs=40,
                batch_size=128, label_smoothing=0.1, aug="flip,crop:4", patience=8),
)
def vgg_cnn(num_classes, in_chans, img_size, **kw):
    return VGGCNN(num_classes, in_chans, img_size, **kw)
