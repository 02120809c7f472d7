"""ResNet-18 / ResNet-50 written from scratch (torchvision "v1.5" layout: stride on the 3x3).

Stem: for img_size <= 64 a 3x3 stride-1 conv and no max-pool (the CIFAR ResNet stem);
the ImageNet 7x7/2 conv + 3x3/2 max-pool would shrink a 32px image to 8x8 before the
first block and throw away most of the spatial detail. Above 64px the ImageNet stem is used.
With the ImageNet stem the parameter count equals torchvision's resnet18/resnet50.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34)."""
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(c_in, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, c_out, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
                         if stride != 1 or c_in != c_out else nn.Identity())

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand x4 residual block (ResNet-50)."""
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(c_in, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, c_out, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
                         if stride != 1 or c_in != c_out else nn.Identity())

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], depths: list[int], num_classes: int,
                 in_chans: int = 3, img_size: int = 32, zero_init_residual: bool = True):
        super().__init__()
        if img_size <= 64:
            self.stem = nn.Sequential(*_conv_bn(in_chans, 64, 3), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(*_conv_bn(in_chans, 64, 7, stride=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages, c_in = [], 64
        for i, (depth, width) in enumerate(zip(depths, [64, 128, 256, 512])):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(c_in, width, stride))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            # Each block starts as the identity: trains faster and more stably from scratch
            # ("Bag of Tricks", Goyal et al.); timm/torchvision offer the same option.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


RESNET_RECIPE = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                     epochs=40, batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip")


@register_model(description="ResNet-18 from scratch (basic blocks [2,2,2,2]), CIFAR stem <=64px",
                recipe=RESNET_RECIPE)
def resnet18(num_classes, in_chans, img_size, **kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans, img_size, **kw)


@register_model(description="ResNet-50 from scratch (bottlenecks [3,4,6,3]), CIFAR stem <=64px",
                recipe=RESNET_RECIPE)
def resnet50(num_classes, in_chans, img_size, **kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, img_size, **kw)
