"""Every training default in one place, and the planner that fills in what the command line left unset.

A recipe is a flat dict (airbench's `hyp`): BASE_RECIPE, updated by the architecture's own
recipe (registered with the model: comp/models/<family>.py), updated by what the planner derives
from the data, updated by the command line. `plan()` does that merge, once, for `comp train`,
`comp tune` and the benchmark scripts, and says for every value where it came from and why.

What the planner derives from the data (`DataShape`: image size, training images, classes):
  arch        fastnet (airbench94's net) up to 48px; above, fastnet_s2d_deep, which folds f x f pixel
              blocks into channels (f = 2 at 64px, 4 at 128px) so the net runs at 32px resolution, in
              groups of three convs with a shortcut at widths 64/192/384 (about 1.35x the 32px net's
              multiply-adds; tiny100 at 12E: +1.6 and +0.6 macro-F1 on folds 0-1 over fastnet_s2d's 64/256/256
              at 64/192/192, then +1.2 to +2.2 on folds 0-3 with the last group at 384, 25-28 epochs);
              with --budget, the last of the data's default net, fastnet_l, fastnet_xl (airbench95/96's
              nets, folding pixels as the default net does) whose recipe epochs fit at the speed timed on this machine (budget_arch); under
              SCARCE_PER_CLASS images a class only fastnet_l_muon, once SCARCE_WIDE_EPOCHS fit
  batch       the recipe's, but at most one 40th of the training images (at least 16; fewer images: all): a short
              schedule needs steps, and 12,000 images at batch 2000 give 6 an epoch
  lr          rescaled to the batch from the recipe's: linear for SGD and Muon's head/biases
              (their lr is for a mean loss), sqrt for Adam/AdamW and for Muon's filters (not
              below MUON_LR_FLOOR)
  aug         the recipe's shift scaled to the image (translate:2 at 32px is 4 at 64px); under
              SCARCE_PER_CLASS images a class the shift tripled and colour ops added; nothing else: on
              120 images a class (tiny100, 12E) none of cutout, cutmix, mixup, zoom, label smoothing 0.1
              or 0.3, Muon momentum 0.8 or the wider fastnet_l_s2d scored above the plain recipe
              at 12E on the CPU (BENCHMARKS.md, issue 9)
  ema         the recipe's; with Muon and under SCARCE_PER_CLASS images a class, lookahead on, its average
              over about twice airbench's window (ema_decay SCARCE_EMA_DECAY)
  schedule    the recipe's; with Muon and under SCARCE_PER_CLASS images a class, linear becomes cosine
  val_every   0 (no validation pass) unless early stopping or ReduceLROnPlateau reads it
  epochs      the recipe's, or with --budget fitted at run time to the clock (comp/train/budget.py); all at
              the image's size: progressive resizing (24 -> 32px, 12 epochs) scored 0.4 points below
              the plain recipe's 9.6 epochs in the same time (CIFAR-10 fold 0, BENCHMARKS.md)
  tta         the recipe's; with --budget the widest whose measured cost fits a fifth of it (comp/train/budget.py)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..io import CompError
from ..models.fastnet import REFERENCE_SIZE, s2d_fold
from ..models.finetune import CROP_SHARE, finetune_size
from ..weights import BACKBONES
from .augment import PIXEL_OPS

# ----------------------------------------------------------------------------- the recipes

# Used where neither the model's recipe nor the command line says otherwise.
BASE_RECIPE = dict(epochs=20, batch_size=128, optimizer="adamw", lr=2e-3, momentum=0.9, weight_decay=None,
                   label_smoothing=0.1, schedule="onecycle", bias_lr_scale=1.0, ema=False, ema_decay=0.95, aug=None,
                   tta="flip", patience=0, grad_clip=0.0, muon_lr=0.24, muon_momentum=0.6)
RECIPE_FIELDS = tuple(BASE_RECIPE)
# Weight decay depends on the optimizer: Adam adds it to the gradient (L2), where 0.05 would
# swamp the loss; AdamW decays the weights directly, where 0.05 is the usual value.
# Muon's filters take no decay (their norm is fixed); its SGD part (head, biases) uses the SGD value.
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05, "muon": 5e-4}

MIN_STEPS_PER_EPOCH = 40  # the planner's batch leaves at least this many steps an epoch
MIN_BATCH = 16
FASTNET_MIN_SIZE = 9  # the whitening's 2x2 conv, then three 2x2 poolings: 8px reaches 0x0
# Muon's filter lr is rescaled by sqrt of the batch ratio, but not below this: on CIFAR-10 at batch
# 1000 the sqrt rule's 0.17 beat 0.24 and 0.12, while on tiny100 at batch 296 its 0.092 scored below
# 0.15 on folds 0 and 1 (+0.7, +0.9 macro-F1 points; -0.15 on fold 2) and 0.24 below both
# (BENCHMARKS.md, issue 9). A likely reason: those runs take about 1,000 steps, and steps much smaller
# than airbench's (0.24 over about 200) under-train. Measured down to batch 296 only; smaller batches
# (under about 12,000 training images) get the floor too, untested.
MUON_LR_FLOOR = 0.15
# Under SCARCE_PER_CLASS training images a class the recipe's shifts are tripled: the net overfits
# (tiny100, 120 a class: train accuracy 0.96-0.99 against 0.47 held out). At 64px and 12E, translate 8
# scored +1.0 to +1.4 macro-F1 points over 4 on each of 3 folds, translate 12 over 8 +1.5, +1.2 and
# 0.0 on the same folds, and translate 16 less than 12 on fold 0 (BENCHMARKS.md, issue 9).
SCARCE_PER_CLASS = 500
SCARCE_SHIFT_FACTOR = 3.0
# ... and colour ops are added (per image: contrast around its mean, then each channel scaled). On
# tiny100 at 12E they scored +1.5, +0.8 and -0.1 macro-F1 points over the tripled shift alone on
# folds 0-2, each pair in the same sitting (BENCHMARKS.md, issue 9).
SCARCE_COLOUR_AUG = "contrast:0.2,jitter:0.1"
# ... and lookahead weight averaging (`ema`) is switched on: on tiny100 at 12E it scored +0.6, +1.15
# and +1.1 macro-F1 points over the plan without it on folds 0-2. On CIFAR-10 (4,000 a class, 10E) it
# scored 0.3 below, one run: averaging pays where the net overfits (BENCHMARKS.md, issue 9). Measured
# with Muon only (fastnet, fastnet_s2d), so only Muon recipes get it: the Adam/AdamW nets are untested.
# ... over a longer window: each pull of the average keeps ema_decay**5 * (step/steps)**3 of it (airbench's
# 0.95: about 22 steps at the end; 0.98: about 50). On tiny100 at 12E, 0.98 scored +0.8, -0.25 and +0.55
# macro-F1 points over 0.95 on folds 0-2 (mean +0.4, each pair in one sitting: a small gain, near the noise
# of one run), and 0.99 +0.1 on fold 0 (BENCHMARKS.md, issue 9).
SCARCE_EMA_DECAY = 0.98
# ... and a Muon recipe's linear decay becomes cosine (longer near the peak lr, a slower end). On
# tiny100 at 12E cosine alone scored +0.5 macro-F1 points on fold 0; with the whitening cut to 24
# directions (comp/models/fastnet.py) the two scored +1.7, +0.3 and +0.5 over the plan without them
# on folds 0-2, each pair in the same sitting; the planner's own fold-0 runs then scored +0.2 and +0.5,
# so fold 0's +1.7 was mostly noise (BENCHMARKS.md, issue 9). Not measured on CIFAR-10.


def arch_recipe(arch: str) -> dict:
    """BASE_RECIPE updated by the architecture's registered recipe, weight decay filled in."""
    from ..models import model_info  # here: models import this module's recipes

    merged = {**BASE_RECIPE, **model_info(arch)["recipe"]}
    if merged["weight_decay"] is None:
        merged["weight_decay"] = DEFAULT_WEIGHT_DECAY[merged["optimizer"]]
    return merged


# ----------------------------------------------------------------------------- the planner

@dataclass(frozen=True)
class DataShape:
    image_size: int
    n_train: int  # images the fold trains on
    num_classes: int

    @property
    def per_class(self) -> float:
        return self.n_train / max(1, self.num_classes)

    @property
    def scarce(self) -> bool:
        """Under SCARCE_PER_CLASS images a class: the scarce-data rules and ladder apply."""
        return self.per_class < SCARCE_PER_CLASS


@dataclass
class Plan:
    """The resolved recipe, and for each value where it came from and why."""
    values: dict
    reasons: dict  # key -> reason (a flag's value: "--flag")

    def table(self) -> str:
        width = max(len(k) for k in self.values)
        lines = [f"  {k:<{width}}  {_show(v):<26} {self.reasons.get(k, '')}" for k, v in self.values.items()]
        return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def default_arch(shape: DataShape, pretrained: bool | None = None) -> tuple[str, dict, str]:
    """(arch, model_kwargs, reason) for data of this shape, without --budget: for photos (PHOTO_MIN_SIZE and up)
    with ImageNet weights here, the pretrained DEFAULT_FINETUNED (else the first whose weights are here); else
    the net trained from scratch (scratch_arch). --pretrained asks for DEFAULT_FINETUNED on any data (its weights
    through the hub if not here), --no-pretrained for scratch_arch. With --budget, comp/train/budget.py chooses by
    measured speed."""
    from ..weights import available_backbones

    if pretrained is False:
        return scratch_arch(shape)
    available = available_backbones() if shape.image_size >= PHOTO_MIN_SIZE or pretrained else []
    if pretrained and not available:
        return DEFAULT_FINETUNED, {}, "--pretrained"
    if available:
        arch = DEFAULT_FINETUNED if DEFAULT_FINETUNED in available else available[0]
        return arch, {}, (f"{shape.image_size}px photos and ImageNet weights here ({', '.join(available)}): "
                          f"{arch}, fine-tuned")
    return scratch_arch(shape)


def scratch_arch(shape: DataShape) -> tuple[str, dict, str]:
    """(arch, model_kwargs, reason): the planner's net trained from scratch for data of this shape."""
    if shape.image_size <= 48:
        return "fastnet", {}, f"airbench94's net for {shape.image_size}px images"
    fold = s2d_fold(shape.image_size)
    return ("fastnet_s2d_deep", {"space_to_depth": fold},
            f"{shape.image_size}px: {fold}x{fold} pixel blocks folded into channels, so it runs at "
            f"{shape.image_size // fold}px resolution; groups of three convs")


# With --budget and no --arch the planner climbs this ladder (airbench94's net, then 95's, then
# 96's) while the next net's own recipe epochs fit in TRAIN_SHARE of the budget at the speed
# measured on this machine: a bigger net only pays once it can be trained as long as its recipe
# says (on tiny100 at 12E the 128/384/384 net fitted 13 epochs and scored below fastnet's 30).
ARCH_LADDER = ("fastnet", "fastnet_l", "fastnet_xl")
# Under SCARCE_PER_CLASS images a class the ladder has one step, to the 128/384/384 net with the Muon
# recipe the scarce-data rules below were measured with, and only once it fits SCARCE_WIDE_EPOCHS: on
# tiny100 (120 a class, H200, a minute a fold) airbench95's SGD recipe on that net scored 3.4 macro-F1
# points below the default net (then 64/192/192) on fold 0, and the Muon one 0.7 above it at 63 epochs; on the CPU at
# 12E the Muon one fitted 13 epochs and scored 0.5 below (BENCHMARKS.md, issue 9).
SCARCE_ARCH_LADDER = ("fastnet", "fastnet_l_muon")
SCARCE_WIDE_EPOCHS = 40
TRAIN_SHARE = 0.75  # of a budget; the rest: prediction and TTA (up to a fifth), start-up, safety


def arch_ladder(shape: DataShape) -> tuple[tuple[str, ...], dict]:
    """The nets budget_arch chooses from for this data (the data's default net first) and the
    model kwargs they share (the s2d fold for 64px and up)."""
    base, kwargs, _ = scratch_arch(shape)
    ladder = SCARCE_ARCH_LADDER if shape.scarce else ARCH_LADDER
    return (base,) + ladder[1:], kwargs


def rung_epochs(shape: DataShape, arch: str) -> float:
    """The epochs a ladder net above the first must fit before budget_arch picks it."""
    epochs = arch_recipe(arch)["epochs"]
    return max(epochs, SCARCE_WIDE_EPOCHS) if shape.scarce else epochs


def budget_arch(shape: DataShape, budget: float, seconds_per_image: float,
                relative_cost: dict[str, float]) -> tuple[str, str]:
    """(arch, reason): the last net of the ladder whose epochs (rung_epochs: its recipe's, and under
    SCARCE_PER_CLASS images a class at least SCARCE_WIDE_EPOCHS) fit the budget.

    seconds_per_image: one training step's time per image of the ladder's first net (or the
    data's default arch), measured here; relative_cost: each ladder net's multiply-adds per image
    over the first's (so the others need not be timed: on a CPU that would cost a real share of
    a short budget)."""
    train_seconds = TRAIN_SHARE * budget
    base = next(iter(relative_cost))
    chosen, why = base, ""
    for arch, cost in relative_cost.items():
        rate = 1 / (seconds_per_image * cost)
        fits, needs = train_seconds * rate / shape.n_train, rung_epochs(shape, arch)
        if arch != base and fits < needs:
            return chosen, f"{why}; {arch} would fit {fits:.1f} of the {needs:g} epochs it needs"
        chosen = arch
        why = f"{fits:.0f} epochs fit in {TRAIN_SHARE:.0%} of the budget at {rate:.0f} img/s"
        why += " (measured here)" if arch == base else f" ({cost:.1f}x {base}'s multiply-adds)"
    return chosen, why


def planned_batch(recipe_batch: int, n_train: int) -> int:
    """The recipe's batch, capped so an epoch has MIN_STEPS_PER_EPOCH steps (a multiple of 8), and at the
    training images (fewer than MIN_BATCH: one step an epoch)."""
    cap = max(MIN_BATCH, (n_train // MIN_STEPS_PER_EPOCH) // 8 * 8)
    return int(min(recipe_batch, cap, max(1, n_train)))  # never above the images there are


def _batch_reason(batch: int, n_train: int) -> str:
    if batch >= n_train:
        return f"all {n_train} images in one step"
    if batch == MIN_BATCH:
        return f"the smallest batch: {n_train} images give {n_train // batch} steps an epoch"
    return f"{n_train} images / {MIN_STEPS_PER_EPOCH} steps an epoch"


def rescaled_lrs(recipe: dict, batch: int) -> dict:
    """lr (and Muon's filter lr) for `batch`, from the recipe's values at its own batch."""
    ratio = batch / recipe["batch_size"]
    linear = recipe["optimizer"] in ("sgd", "muon")  # lr on a mean loss: the step grows with the batch
    out = {"lr": recipe["lr"] * (ratio if linear else math.sqrt(ratio))}
    if recipe["optimizer"] == "muon":  # fixed-norm steps: twice the steps at half the batch want a smaller lr
        floor = min(recipe["muon_lr"], MUON_LR_FLOOR)
        out["muon_lr"] = max(floor, recipe["muon_lr"] * math.sqrt(ratio))
    return out


def scaled_aug(aug: str | None, image_size: int, shift_factor: float = 1.0) -> str | None:
    """A recipe's aug written for 32px images with its shifts and cutout scaled to `image_size`,
    and its shifts (not cutout) further by shift_factor."""
    if not aug:
        return aug
    out = []
    for op in aug.split(","):
        name, _, value = op.partition(":")
        if name in PIXEL_OPS and value:
            factor = image_size / REFERENCE_SIZE * (shift_factor if name != "cutout" else 1.0)
            value = str(max(1, round(int(value) * factor)))
        out.append(f"{name}:{value}" if value else name)
    return ",".join(out)


def plan(shape: DataShape, given: dict, arch: str | None = None, model_kwargs: dict | None = None,
         budget: float | None = None, arch_reason: str | None = None) -> Plan:
    """Merge BASE_RECIPE <- the arch's recipe <- what the data implies <- `given` (the command line;
    None values are unset). Returns every recipe field plus arch, model_kwargs and val_every."""
    from .augment import default_aug

    values, reasons = {}, {}
    if arch is None:
        arch, planned_kwargs, why = default_arch(shape, (model_kwargs or {}).get("pretrained"))
        model_kwargs = {**planned_kwargs, **(model_kwargs or {})}
        values["arch"], reasons["arch"] = arch, why
    else:
        values["arch"], reasons["arch"] = arch, arch_reason or "--arch"
    values["model_kwargs"] = dict(model_kwargs or {})
    if "train_size" in values["model_kwargs"] and arch not in BACKBONES:
        raise CompError(f"--train-size is the side a pretrained net trains at ({', '.join(BACKBONES)}); {arch} "
                        f"trains at the images' own side: leave --train-size out")
    if arch in BACKBONES:
        values["model_kwargs"], reasons["model_kwargs"] = finetune_kwargs(arch, shape, values["model_kwargs"])
    if arch.startswith("fastnet") and shape.image_size < FASTNET_MIN_SIZE:
        raise CompError(f"{arch} needs images of at least {FASTNET_MIN_SIZE}px (its three 2x2 poolings), these are "
                        f"{shape.image_size}px: prepare them larger (`comp prepare --size 16`) or train a net "
                        f"without that limit (--arch simple_cnn)")
    recipe = arch_recipe(arch)
    for key in RECIPE_FIELDS:
        values[key], reasons[key] = recipe[key], f"{arch}'s recipe"
    if recipe["aug"] is None:
        values["aug"], reasons["aug"] = default_aug(shape.n_train, shape.image_size), "default for the data size"
    else:
        scarce = shape.scarce and arch.startswith("fastnet")  # the rules were measured on fastnet's nets only
        scarce_why = f"for {shape.per_class:.0f} images a class"  # every scarce-data reason ends so
        aug = scaled_aug(recipe["aug"], shape.image_size, SCARCE_SHIFT_FACTOR if scarce else 1.0)
        aug = f"{aug},{SCARCE_COLOUR_AUG}" if scarce else aug
        if aug != recipe["aug"]:
            why = [f"shift scaled to {shape.image_size}px"] if shape.image_size != REFERENCE_SIZE else []
            why += [f"x{SCARCE_SHIFT_FACTOR:g} and colour {scarce_why}"] if scarce else []
            values["aug"], reasons["aug"] = aug, f"{arch}'s recipe, {', '.join(why)}"
        if scarce and (given.get("optimizer") or recipe["optimizer"]) == "muon":
            if not recipe["ema"]:
                values["ema"], reasons["ema"] = True, f"lookahead {scarce_why}"
                values["ema_decay"], reasons["ema_decay"] = SCARCE_EMA_DECAY, f"a longer average {scarce_why}"
            if recipe["schedule"] == "linear":
                values["schedule"], reasons["schedule"] = "cosine", f"cosine decay {scarce_why}"
    batch = given.get("batch_size") or planned_batch(recipe["batch_size"], shape.n_train)
    if batch != recipe["batch_size"]:
        values["batch_size"] = batch
        reasons["batch_size"] = ("--batch-size" if given.get("batch_size") else _batch_reason(batch, shape.n_train))
        for key, value in rescaled_lrs(recipe, batch).items():
            values[key], reasons[key] = value, f"rescaled from {recipe[key]:g} at batch {recipe['batch_size']}"
            if key == "muon_lr" and value == MUON_LR_FLOOR < recipe[key]:
                reasons[key] += f", not below {MUON_LR_FLOOR:g}"
    for key, value in given.items():
        if key in values and value is not None:
            values[key], reasons[key] = value, "--" + key.replace("_", "-")
    if values["weight_decay"] is None:
        values["weight_decay"] = DEFAULT_WEIGHT_DECAY[values["optimizer"]]
    needs_val = bool(values["patience"]) or values["schedule"] == "plateau"
    if given.get("val_every") is None:
        values["val_every"] = 1 if needs_val else 0
        reasons["val_every"] = ("early stopping / plateau read it" if needs_val else
                                "nothing reads it: only the final prediction scores the fold")
    else:
        values["val_every"], reasons["val_every"] = given["val_every"], "--val-every"
    if budget:
        reasons["epochs"] = f"fitted to --budget {format_seconds(budget)} after timing the first steps"
        if given.get("tta") is None:
            reasons["tta"] = f"{values['tta']}, or fewer views if their measured cost exceeds a fifth of the budget"
    return Plan(values, reasons)


# With --budget and images of at least PHOTO_MIN_SIZE, a pretrained backbone whose weights are here is planned
# when the cheapest fits FINETUNE_MIN_EPOCHS; the planner then climbs BACKBONES (cheapest first) while the next
# fits FINETUNE_EPOCHS, as the from-scratch ladder climbs while a net fits its recipe's epochs.
PHOTO_MIN_SIZE = 96
# The backbones the budget climbs, cheapest first. On clothing fold 0 at 10 epochs and 128px (OOF accuracy, the
# held-out images given whole at 160px, flip TTA): MobileNetV2 0.886, Lite0 0.921,
# Lite1 0.928 at 1.15x Lite0's time, Lite2 0.916 at 1.3x: Lite2 is left out (`--arch effnet_lite2` trains it;
# at a GPU's 224px, unmeasured). One fold of 568 images: a point is 5-6 images (BENCHMARKS.md, issue 28).
FINETUNE_LADDER = ("mobilenetv2", "effnet_lite0", "effnet_lite1")
# Without --budget, photos with weights here get this net: on clothing fold 0 at 10 epochs it scored 0.914 OOF
# against MobileNetV2's 0.894, for 1.6x its time (BENCHMARKS.md, issue 28).
DEFAULT_FINETUNED = "effnet_lite0"
FINETUNE_MIN_EPOCHS = 4
FINETUNE_EPOCHS = 10
def finetune_ladder(shape: DataShape, budget: float, rates: dict[str, float]) -> tuple[str | None, str]:
    """(arch or None, reason): rates are the training images a second of each available backbone, timed here,
    cheapest first."""
    train_seconds = TRAIN_SHARE * budget
    chosen, why = None, ""
    for arch, rate in rates.items():
        fits = train_seconds * rate / shape.n_train
        needs = FINETUNE_EPOCHS if chosen else FINETUNE_MIN_EPOCHS
        if fits < needs:
            if chosen is None:
                return None, (f"the cheapest pretrained net, {arch}, would fit {fits:.1f} of the {needs} epochs "
                              f"it needs at {rate:.0f} img/s")
            return chosen, f"{why}; {arch} would fit {fits:.1f} of the {needs} epochs it needs"
        chosen = arch
        why = (f"ImageNet-pretrained, {fits:.0f} epochs fit in {TRAIN_SHARE:.0%} of the budget at {rate:.0f} img/s "
               f"(measured here)")
    return chosen, why


# The BatchNorm policy, measured on clothing fold 0 (10 epochs, 128px, BENCHMARKS.md): EfficientNet-Lite (TensorFlow's
# weights, ported) with its statistics frozen at ImageNet's scored 0.914 OOF against 0.843 with them following the
# batches; MobileNetV2 (torchvision's) the other way round, 0.868 frozen against 0.894. Each backbone keeps its
# better policy (weights.BACKBONES[...].freeze_bn); the scale and shift of every BatchNorm learn either way.


def finetune_kwargs(arch: str, shape: DataShape, given: dict) -> tuple[dict, str]:
    """A pretrained net's model kwargs: its ImageNet weights unless --no-pretrained (pretrained False) or
    --weights, its training side (finetune_size) and its BatchNorm policy."""
    kwargs, why = dict(given), []
    if "pretrained" not in kwargs and not kwargs.get("weights"):
        kwargs["pretrained"] = True
        why.append("ImageNet weights (comp/models/pretrained.py finds them)")
    if "train_size" not in kwargs:
        kwargs["train_size"] = finetune_size(arch, shape.image_size)
        why.append(f"trains at {kwargs['train_size']}px: {CROP_SHARE:g} of the {shape.image_size}px cache, "
                   f"at most its native {BACKBONES[arch].native}px")
    if "freeze_bn" not in kwargs:
        kwargs["freeze_bn"] = BACKBONES[arch].freeze_bn
        why.append(f"BatchNorm statistics {'frozen at ImageNet' if kwargs['freeze_bn'] else 'follow the batches'}: "
                   f"measured better for {arch}")
    return kwargs, "; ".join(why)


def parse_budget(text: str) -> float:
    """'15m', '90s', '1.5h', '1h30m' -> seconds. A bare number is minutes (as in `--budget 15`)."""
    from ..io import CompError

    raw = str(text).strip().lower()
    total, number = 0.0, ""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        for ch in raw:
            if ch.isdigit() or ch == ".":
                number += ch
            elif ch in units and number:
                total, number = total + float(number) * units[ch], ""
            else:
                raise ValueError(ch)
        total += float(number) * 60 if number else 0
    except ValueError:
        total = -1
    if not total > 0 or not math.isfinite(total):
        raise CompError(f"--budget {text!r}: expected a duration such as 15m, 90s, 1.5h or 1h30m")
    return total


def format_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2g}h"
    if seconds >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.0f}s"
