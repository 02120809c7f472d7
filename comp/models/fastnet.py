"""fastnet: the airbench94 CIFAR-10 network (Keller Jordan, arXiv:2404.00498), and fastnet_l
(the wider airbench95 variant).

    whiten:  conv 2x2, no padding, 2*in_chans*4 channels, bias; weight frozen and set from
             the data's 2x2 patch covariance (init_from_data) -> GELU
    groups:  ConvGroup(64), ConvGroup(256), ConvGroup(256)
             ConvGroup = conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU
    head:    global max pool -> Linear(256, num_classes, bias=False) -> x 1/9

Details kept from airbench: convs have no bias and start from default init with a dirac
(identity) kernel on the first min(in, out) output channels; BatchNorm eps 1e-12, momentum
0.4 in PyTorch convention (airbench writes 0.6 = 1 - 0.4), BN weight frozen at 1, bias
trainable; the whitening bias is trained for 3 epochs and then frozen (on_epoch_start).

Sizes: at 32px the map before the head is 3x3 (31 -> 15 -> 7 -> 3) and airbench's
MaxPool2d(3) equals the global max pool used here. For img_size >= 64 one extra ConvGroup of
the last width is added per doubling over 32px (64px: 64/256/256/256, 63 -> 31 -> 15 -> 7 -> 3),
so the head again sees a 3x3 map and the receptive field matches the image.

fastnet_s2d (for 64px and up) instead folds each 2x2 block of pixels into channels first
(pixel_unshuffle: 64x64x3 -> 32x32x12, nothing lost) and whitens 2x2 patches of that, i.e.
4x4 pixel patches at stride 2: the network then runs at 32px cost (about a third of the
4-group net's FLOPs at 64px) while still seeing every pixel. Below 64px it does not fold.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model

WHITEN_EPS = 5e-4
KILOSTEP_MOMENTUM = 0.85


def _airbench_lr_wd(lr_hyp: float, wd_hyp: float = 0.0153, momentum: float = KILOSTEP_MOMENTUM,
                    batch_size: int = 1024) -> tuple[float, float]:
    """Translate airbench's hyperparameters into PyTorch SGD (lr, weight_decay) for a MEAN loss.

    airbench sums the loss over the batch and uses
        kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
        lr_sum = lr_hyp / kilostep_scale,  decay_per_step = wd_hyp * batch_size / kilostep_scale
        weight_decay_sum = decay_per_step / lr_sum
    A mean-reduced loss has 1/batch_size the gradient, so lr_mean = lr_sum * batch_size, and
    the per-step decay lr * wd must stay equal: wd_mean = decay_per_step / lr_mean.
    airbench94 (lr_hyp 11.5, batch 1024): lr_mean = 11.5 / (1 + 1/0.15) = 1.5, wd_mean = 1.33e-3.
    """
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr_sum = lr_hyp / kilostep_scale
    decay_per_step = wd_hyp * batch_size / kilostep_scale
    lr_mean = lr_sum * batch_size
    return lr_mean, decay_per_step / lr_mean


def _airbench_muon_head_lr(batch_size: int, head_lr_sum: float = 0.67, width: int = 256) -> float:
    """airbench94_muon's head lr (0.67 for a SUMMED loss, output scaled by 1/width, head weight
    initialised at std 1) in this net's terms (MEAN loss, output x 1/9, default init, whose std
    is ~9/width times airbench's): w_here = w_muon * 9/width, so a step of lr on the mean loss
    equals airbench's when lr = head_lr_sum * (9/width)**2 * batch_size (1.656 at batch 2000).
    Its decay of 2e-6 * batch per step becomes weight_decay = 2e-6 * batch / lr (2.415e-3 at
    any batch). Muon's own lr (0.24) needs no translation: its steps do not depend on the
    gradient's scale."""
    return head_lr_sum * (9 / width) ** 2 * batch_size


def _fastnet_muon_recipe(batch_size: int = 2000, epochs: float = 8, width: int = 256) -> dict:
    """airbench94_muon's hyperparameters; width: the last group's (its head scaling is 1/width)."""
    lr = _airbench_muon_head_lr(batch_size, width=width)
    bias_lr = 0.053 * batch_size  # airbench's 0.053 on a summed loss
    return dict(optimizer="muon", batch_size=batch_size, epochs=epochs, lr=round(lr, 4), muon_lr=0.24,
                momentum=KILOSTEP_MOMENTUM, weight_decay=round(2e-6 * batch_size / lr, 7),
                bias_lr_scale=round(bias_lr / lr, 2),
                label_smoothing=0.2, schedule="linear", ema=False, aug="altflip,translate:2", tta="flip+shift")


class BatchNorm(nn.BatchNorm2d):
    """airbench BN: eps 1e-12, weight frozen at 1 (scale is redundant before the next conv)."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias, default init plus an identity (dirac) kernel."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        w = self.weight.data
        # Identity on the first min(in, out) channels: each group starts close to a
        # pass-through, which is what lets airbench train so few epochs.
        nn.init.dirac_(w[: min(w.size(0), w.size(1))])


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, bn_momentum: float = 0.4):
        super().__init__()
        self.conv1 = Conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_out, bn_momentum)
        self.conv2 = Conv(c_out, c_out)
        self.norm2 = BatchNorm(c_out, bn_momentum)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 32,
                 widths: tuple[int, ...] = (64, 256, 256), bn_momentum: float = 0.4,
                 scaling_factor: float = 1 / 9, whiten_bias_epochs: int = 3, space_to_depth: int = 1):
        super().__init__()
        while space_to_depth > 1 and img_size // space_to_depth < 32:  # small images stay unfolded
            space_to_depth //= 2
        self.space_to_depth = space_to_depth
        in_chans, img_size = in_chans * space_to_depth**2, img_size // space_to_depth
        extra_groups = max(0, int(math.log2(img_size / 32)))  # 0 below 64px
        widths = tuple(widths) + (widths[-1],) * extra_groups
        whiten_width = 2 * in_chans * 2 * 2  # +/- each of the in_chans*2*2 patch eigenvectors
        self.whiten = nn.Conv2d(in_chans, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        nn.init.zeros_(self.whiten.bias)
        self.activ = nn.GELU()
        groups, c_in = [], whiten_width
        for width in widths:
            groups.append(ConvGroup(c_in, width, bn_momentum))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.scaling_factor = scaling_factor
        self.whiten_bias_epochs = whiten_bias_epochs

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = WHITEN_EPS, chunk: int = 512):
        """Set the whitening weights to the 2x2 patch covariance's eigenvectors / sqrt(eigenvalue).

        The covariance is uncentered (patches' second moment), as in airbench; the images are
        already normalized. Accumulated in float64 over chunks so a few thousand 64px images
        never materialise all patches at once. Output channels are cat(V, -V): the GELU then
        sees both signs of every whitened direction.
        """
        weight = self.whiten.weight
        k = weight.shape[-1]
        dim = weight.shape[1] * k * k
        cov = torch.zeros(dim, dim, dtype=torch.float64, device=weight.device)
        n = 0
        for x in images.split(chunk):
            x = self._fold(x.to(weight.device, torch.float32))
            # (N, C, H', W', k, k) -> (N*H'*W', C*k*k), flattened in the conv weight's (c, kh, kw) order
            patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, dim)
            patches = patches.double()
            cov += patches.T @ patches
            n += patches.shape[0]
        cov /= n
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending; columns are vectors
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # descending rows
        scaled = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
        scaled = scaled.reshape(dim, *weight.shape[1:]).to(weight.dtype)
        weight.copy_(torch.cat([scaled, -scaled]))

    def on_epoch_start(self, epoch: int, total_epochs: float = 0.0):
        """Train the whitening bias only for the first `whiten_bias_epochs` epochs (airbench: 3)."""
        self.whiten.bias.requires_grad = epoch < self.whiten_bias_epochs

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        if self.space_to_depth == 1:
            return x
        return F.pixel_unshuffle(x, self.space_to_depth).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.activ(self.whiten(self._fold(x))))
        x = torch.flatten(self.pool(x), 1)
        return self.head(x) * self.scaling_factor


def _fastnet_recipe(lr_hyp: float, epochs: float) -> dict:
    lr, weight_decay = _airbench_lr_wd(lr_hyp)
    return dict(optimizer="sgd", batch_size=1024, epochs=epochs, lr=round(lr, 6),
                momentum=KILOSTEP_MOMENTUM, weight_decay=round(weight_decay, 8),
                bias_lr_scale=64.0, label_smoothing=0.2, schedule="triangle", ema=True,
                aug="flip,translate:2", tta="flip+shift")


# airbench94 in PyTorch units for a mean-reduced loss at batch 1024 (see _airbench_lr_wd):
#   lr 1.5, weight_decay 1.3304e-3 (per-step decay lr*wd = 0.0153*1024/7850.67 = 2.0e-3),
#   Nesterov momentum 0.85. bias_lr_scale 64 is airbench's bias_scaler; airbench also divides
#   the biases' weight_decay by 64 so their per-step decay is unchanged: the trainer should do
#   the same (and airbench applies the scaler to the whitening bias too).
#   "triangle" = airbench's schedule: lr factor 0.2 -> 1.0 at 23% of steps -> 0.07 at the end.
#   epochs 9.9 is airbench94's value. lr and momentum assume batch 1024: rescale lr linearly
#   if the batch size changes.
FASTNET_SGD_RECIPE = _fastnet_recipe(lr_hyp=11.5, epochs=9.9)
# The default: airbench94_muon (Muon on the filters, SGD on head and biases, 8 epochs, batch 2000,
# linear decay, alternating flip). bias_lr_scale 64 = its 0.053 / 0.67 * (width/9)**2. On CIFAR-10
# fold 0 (CPU) it gave 0.9059 OOF against 0.8997 for the SGD recipe's 9.9 epochs (BENCHMARKS.md).
FASTNET_RECIPE = _fastnet_muon_recipe()
# airbench95: widths 128/384/384, lr_hyp 11.5 * 0.87 = 10.0 (lr 1.3043, wd 1.53e-3), 15 epochs.
FASTNET_L_RECIPE = _fastnet_recipe(lr_hyp=10.0, epochs=15)


@register_model(
    description="airbench94 net: frozen 2x2 whitening conv, ConvGroups 64/256/256; airbench94_muon recipe",
    recipe=FASTNET_RECIPE,
)
def fastnet(num_classes, in_chans, img_size, **kw):
    return FastNet(num_classes, in_chans, img_size, **kw)


@register_model(
    description="airbench95 net: fastnet widened to ConvGroups 128/384/384, 15 epochs",
    recipe=FASTNET_L_RECIPE,
)
def fastnet_l(num_classes, in_chans, img_size, **kw):
    kw.setdefault("widths", (128, 384, 384))
    return FastNet(num_classes, in_chans, img_size, **kw)


@register_model(
    description="fastnet for 64px+: 2x2 pixel blocks folded into channels first, so it runs at 32px cost",
    recipe=FASTNET_RECIPE,
)
def fastnet_s2d(num_classes, in_chans, img_size, **kw):
    kw.setdefault("space_to_depth", 2)
    return FastNet(num_classes, in_chans, img_size, **kw)


@register_model(
    description="fastnet_l for 64px+: fastnet_s2d's pixel folding with the wider 128/384/384 groups",
    recipe=_fastnet_muon_recipe(width=384),
)
def fastnet_l_s2d(num_classes, in_chans, img_size, **kw):
    kw.setdefault("space_to_depth", 2)
    kw.setdefault("widths", (128, 384, 384))
    return FastNet(num_classes, in_chans, img_size, **kw)
