"""SqueezeNet 1.1 (Iandola et al. 2016; the 1.1 variant from the authors' repo).

Fire module = 1x1 squeeze -> ReLU -> concat(1x1 expand, 3x3 expand) -> ReLU.
Classifier = dropout -> 1x1 conv to num_classes -> global average pool (no dense layer).

Changes for this toolkit:
- Small-image stem for img_size <= 64: 3x3 stride-1 conv with padding 1 (1.1: stride 2, no
  padding), so the three ceil-mode max-pools take 32px to 4x4 instead of 1x1.
- No ReLU after the classifier conv: the original ReLU makes logits >= 0, and a class whose
  conv output goes negative everywhere gets zero gradient and stays dead. We return raw logits.
Parameter count is identical to torchvision's squeezenet1_1 (the ReLU has no parameters).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class Fire(nn.Module):
    def __init__(self, c_in: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze(x))
        return self.relu(torch.cat([self.expand1x1(x), self.expand3x3(x)], 1))


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        stem = (nn.Conv2d(in_chans, 64, 3, stride=1, padding=1) if img_size <= 64
                else nn.Conv2d(in_chans, 64, 3, stride=2))

        def pool():
            return nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.features = nn.Sequential(
            stem, nn.ReLU(inplace=True), pool(),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(512, num_classes, 1),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_weights()

    def _init_weights(self):
        # As in torchvision: small normal init for the classifier conv, He-uniform elsewhere.
        final_conv = self.classifier[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, 0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    description="SqueezeNet 1.1 (Fire modules, conv classifier + global pool), stride-1 stem <=64px",
    recipe=dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                epochs=40, batch_size=128, label_smoothing=0.1, aug="flip,crop:4", tta="flip"),
)
def squeezenet(num_classes, in_chans, img_size, **kw):
    return SqueezeNet(num_classes, in_chans, img_size, **kw)
