"""Model registry: one name -> one factory, plus a recipe of training defaults.

Usage
-----
    from comp.models import create_model, list_models, model_info, count_params, count_macs
    model = create_model("fastnet", num_classes=10, in_chans=3, img_size=32)
    model = create_model("timm/convnext_nano", num_classes=5, img_size=64, weights="w.safetensors")

Every factory has the signature ``fn(num_classes, in_chans, img_size, **kw) -> nn.Module``
and returns an fp32, randomly initialised module whose forward maps (N, in_chans, H, W)
images to (N, num_classes) raw logits (never softmax: the trainer applies the loss).
Extra ``**kw`` are forwarded to the model's constructor, so a typo raises TypeError.

Adding a model: write a factory in the family's file (or a new ``comp/models/<family>.py``,
imported by this file) and decorate it with comp.models.registry's register_model::

    @register_model(description="...", recipe={"optimizer": "adamw", "lr": 1e-3})
    def mynet(num_classes, in_chans, img_size, **kw):
        return MyNet(num_classes, in_chans, img_size, **kw)

``timm/<name>`` builds any timm architecture (see ``timm_adapter.py``); those names are
accepted by ``create_model``/``model_info`` but not listed by ``list_models``.

Recipe keys (training defaults the trainer understands; a model uses only these)
--------------------------------------------------------------------------------
epochs (float ok), batch_size, optimizer ("sgd" = Nesterov momentum | "adam" | "adamw" | "muon"),
lr, momentum, weight_decay, label_smoothing, grad_clip,
schedule ("onecycle" | "cosine" | "plateau" | "constant" | "triangle" | "linear"),
bias_lr_scale (multiplies lr of norm params; with Muon of every 1-D param), ema (bool, airbench
lookahead EMA), ema_decay, muon_lr, muon_momentum (Muon's filters), aug (e.g. "flip,translate:2"), tta ("none" | "flip" | "flip+shift"),
patience (early-stopping epochs). lr is always for a MEAN-reduced loss at ``batch_size``.

Optional hooks the trainer calls when a model defines them
----------------------------------------------------------
model.init_from_data(images)
    Called once before training with a float tensor (N, C, H, W) of a few thousand
    normalized training images. fastnet initialises its whitening conv from it.
model.on_epoch_start(epoch: int, total_epochs: float)
    Called at the start of every epoch (0-based). fastnet freezes its whitening bias
    (requires_grad=False) from epoch 3 on. The trainer should zero grads with
    ``set_to_none=True`` so that SGD really skips a frozen parameter.
"""
from __future__ import annotations

# Importing the family modules runs their @register_model decorators (comp/models/registry.py).
from . import effnet, fastnet, finetune, mobilenet, resnet, simple, squeezenet, vgg  # noqa: F401
from .finetune import backbone_stats
from .registry import (TIMM_PREFIX, count_macs, count_params, create_model, list_models, model_info, register_model,
                       without_weight_kwargs)

__all__ = ["create_model", "list_models", "model_info", "register_model", "count_params", "count_macs",
           "without_weight_kwargs", "backbone_stats", "TIMM_PREFIX", "print_archs"]


def print_archs() -> None:
    """`comp train --list-archs`: every registered net with its parameters at 10 classes, 32px."""
    for name in list_models():
        params = count_params(create_model(name, num_classes=10, img_size=32))
        print(f"{name:<20} {params / 1e6:8.2f}M params  {model_info(name)['description']}")
    print("timm/<name>          any timm model (stem adapted to small inputs unless --no-adapt)")
