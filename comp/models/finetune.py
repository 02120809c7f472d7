"""ImageNet-pretrained backbones fine-tuned for a competition's classes: EfficientNet-Lite0/1/2, MobileNetV2.

    create_model("effnet_lite0", num_classes=10, img_size=160, train_size=128, pretrained=True)

Each is timm's net (comp/models/pretrained.py says where its weights come from) inside `Finetuned`, which
resizes its input to `train_size` when it differs: the cache may hold larger images than the net trains on
(random-resized crops are cut from them at train_size; held-out and test images arrive at the cache's side
and are resized here), so predict, export and infer need to know nothing of it. Inputs are normalised with
the backbone's own mean and std (`norm_stats`), as the weights were trained.

The recipe (one for the family, in FINETUNE_RECIPE): AdamW, a new head at HEAD_LR_SCALE times the backbone's
lr, one-cycle (linear warm-up over a tenth of the steps, then cosine), label smoothing 0.1, flip TTA,
random-resized crops, flips and colour.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..weights import BACKBONES, find_weights
from .pretrained import fetch_from_hub, load_into
from .registry import register_model

HEAD_LR_SCALE = 3.0  # the new head learns from scratch: 3e-3 against the body's 1e-3
FINETUNE_RECIPE = dict(optimizer="adamw", lr=1e-3, weight_decay=0.02, schedule="onecycle", epochs=10,
                       batch_size=64, label_smoothing=0.1, aug="rrc:0.35,flip,contrast:0.2,jitter:0.1", tta="flip",
                       ema=False, bias_lr_scale=1.0)


FINETUNE_MIN_SIZE = 64
CROP_SHARE = 0.875  # the training side over the cached side: room for random-resized crops (timm's crop_pct)


def finetune_size(arch: str, image_size: int) -> int:
    """The side a pretrained net trains at: CROP_SHARE of the cached side in steps of 32 (160px -> 128,
    256px -> 224), at most the net's native size, at least FINETUNE_MIN_SIZE (smaller images are enlarged)."""
    return max(FINETUNE_MIN_SIZE, min(BACKBONES[arch].native, int(image_size * CROP_SHARE) // 32 * 32))


class Finetuned(nn.Module):
    """A pretrained net that trains at train_size; other inputs are resized to it (antialiased)."""

    def __init__(self, net: nn.Module, train_size: int, head_lr_scale: float = HEAD_LR_SCALE,
                 freeze_bn: bool = False):
        super().__init__()
        self.net, self.train_size, self.head_lr_scale = net, int(train_size), float(head_lr_scale)
        self.freeze_bn = freeze_bn  # BatchNorm keeps ImageNet's running statistics (its scale and shift still learn)
        self.weights_record: dict | None = None  # where the starting weights came from (config.json)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x):
        # Training batches come at train_size (rrc crops to it). Held-out and test images are given whole at the
        # cache's side, never shrunk (FixRes: training crops enlarge objects, a larger whole image shows them at
        # about that size; clothing fold 0 at 160px against 128px, flip TTA: +0.7 points for Lite0, -1.0 to +1.2
        # over four MobileNetV2 runs, mean -0.1; BENCHMARKS.md); images smaller than train_size are enlarged to it.
        side = self.train_size if self.training else max(self.train_size, x.shape[-1])
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return self.net(x)

    def head_parameters(self):
        """The new classifier's parameters: build_optimizer gives them head_lr_scale times the lr."""
        return list(self.net.get_classifier().parameters())


def norm_stats(arch: str) -> tuple[list[float], list[float]]:
    """The (mean, std) the backbone's weights were trained with, in 0..1 units."""
    backbone = BACKBONES[arch]
    return list(backbone.mean), list(backbone.std)


def build(arch: str, num_classes: int, in_chans: int, img_size: int, train_size: int | None = None,
          pretrained: bool = False, weights: str | None = None, head_lr_scale: float = HEAD_LR_SCALE,
          freeze_bn: bool = False) -> Finetuned:
    import timm

    backbone = BACKBONES[arch]
    net = timm.create_model(backbone.timm_name, num_classes=num_classes, in_chans=in_chans)
    model = Finetuned(net, train_size or finetune_size(arch, img_size), head_lr_scale, freeze_bn)
    if pretrained or weights:
        source = find_weights(arch, weights) or fetch_from_hub(arch)
        how = load_into(net, source.path, head=(net.default_cfg.get("classifier", "classifier") + ".",))
        model.weights_record = {**source.record, "loaded": how}
    return model


def _register(arch: str, what: str):
    backbone = BACKBONES[arch]

    def factory(num_classes, in_chans, img_size, **kwargs):
        return build(arch, num_classes, in_chans, img_size, **kwargs)

    factory.__name__ = arch
    register_model(description=f"{what}, ImageNet-pretrained (timm {backbone.timm_name}, {backbone.native}px, "
                               f"{backbone.license}); fine-tuned", recipe=FINETUNE_RECIPE)(factory)


_register("effnet_lite0", "EfficientNet-Lite0")
_register("effnet_lite1", "EfficientNet-Lite1")
_register("effnet_lite2", "EfficientNet-Lite2")
_register("mobilenetv2", "MobileNetV2")


def is_finetuned(arch: str) -> bool:
    return arch in BACKBONES


def backbone_stats(name: str) -> tuple[list[float], list[float]] | None:
    """(mean, std) a pretrained backbone's inputs are normalised with (its weights were trained so); None for
    nets trained from scratch, which are normalised with their training images' own statistics."""
    return norm_stats(name) if is_finetuned(name) else None
