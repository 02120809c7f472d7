"""The search space of `comp tune`: defaults from the planner, a YAML/TOML override file, and the
mapping of a trial's parameters onto TrainConfig fields.

Default space, centred on what the planner (comp/train/recipe.py plan) resolves for the tuned fold's data
(batch capped so an epoch has steps, lr rescaled to that batch, shift scaled to the image):
  lr               float, log   [planned lr / 10, planned lr * 3]
  muon_lr          float, log   [planned / 2, planned * 2]   (only for Muon recipes)
  batch_size       categorical  [planned / 2, planned, planned * 2]
  weight_decay     float, log   [planned / 10, planned * 10]
  label_smoothing  float        [0, 0.2]
  dropout          float        [0, 0.6]  (only when the model takes a dropout argument)
  translate        int          [planned shift / 2, planned shift * 2]  shift pad in px (0: none)
  cutout           categorical  [0, planned cutout, size/4, size/2]  cutout square in px (0: none)
  epochs           int          [planned / 2, planned * 1.5]
  aug              fixed        the planned aug: the base translate/cutout rewrite
Values the space file or the command line fix (batch_size: 32) are given to the planner first, so
the lr range is centred on the lr planned for that batch.

Override file (YAML or TOML), one entry per parameter; a plain value fixes the parameter:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: {type: categorical, choices: [32, 64]}
  translate: {type: int, low: 0, high: 2}
  optimizer: {type: categorical, choices: [adam, adamw]}
  epochs: 10
Parameters: the recipe fields of TrainConfig (lr, batch_size, weight_decay, label_smoothing,
epochs, momentum, optimizer, schedule, bias_lr_scale, ema, ema_decay, tta, patience, grad_clip, muon_lr, muon_momentum,
aug)
plus dropout, translate and cutout. translate/cutout rewrite the aug string (its shift op and cutout
are replaced by translate:<px> and cutout:<px>; flip and the rest are kept). An aug given in the file
is meant whole: the default translate/cutout then leave it alone.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from ..io import CompError
from ..models import create_model
from .augment import BatchAugment, parse_aug, pixel_params
from .optim import OPTIMIZERS, SCHEDULES
from .recipe import RECIPE_FIELDS, DataShape, arch_recipe, plan
from .tta import TTA_MODES

_SHIFT_OPS = ("translate", "translate_wrap", "crop")  # augment.py allows one of these at a time


def _number(check):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and check(v)


def _integer(check):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and check(v)


# parameter -> (valid value?, what valid means): checked on bounds, choices and fixed values,
# so a typo in the space file fails before any trial trains.
PARAMS = {
    "lr": (_number(lambda v: v > 0), "a number > 0"),
    "batch_size": (_integer(lambda v: v >= 1), "an integer >= 1"),
    "weight_decay": (_number(lambda v: v >= 0), "a number >= 0"),
    "label_smoothing": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "epochs": (_number(lambda v: v > 0), "a number > 0"),
    "momentum": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "bias_lr_scale": (_number(lambda v: v > 0), "a number > 0"),
    "ema": (lambda v: isinstance(v, bool), "true or false"),
    "ema_decay": (_number(lambda v: 0 < v < 1), "a number in (0, 1)"),
    "tta": (lambda v: v in TTA_MODES, f"one of {', '.join(TTA_MODES)}"),
    "patience": (_integer(lambda v: v >= 0), "an integer >= 0"),
    "grad_clip": (_number(lambda v: v >= 0), "a number >= 0"),
    "muon_lr": (_number(lambda v: v > 0), "a number > 0"),
    "muon_momentum": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "aug": (lambda v: isinstance(v, str), "an augmentation string such as 'flip,translate:2'"),
    "dropout": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "translate": (_integer(lambda v: 0 <= v), "an integer >= 0 (pixels)"),
    "cutout": (_integer(lambda v: 0 <= v), "an integer >= 0 (pixels)"),
}
_SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}


@dataclass
class Param:
    name: str
    type: str  # float | int | categorical | fixed
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: object = None  # type fixed

    def suggest(self, trial):
        if self.type == "fixed":
            return self.value
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.type == "fixed":
            return f"{self.value!r}"
        if self.type == "categorical":
            return f"one of {list(self.choices)}"
        return f"{self.type} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


@functools.lru_cache(maxsize=None)
def dropout_kwarg(arch: str) -> str | None:
    """The constructor argument that sets the model's dropout, or None. Our models call it
    `dropout`, timm models `drop_rate`; a model without one raises TypeError (create_model
    forwards unknown kwargs to the constructor), so building a tiny copy tells us."""
    for kwarg in ("dropout", "drop_rate"):
        try:
            create_model(arch, num_classes=2, in_chans=3, img_size=32, **{kwarg: 0.0})
            return kwarg
        except TypeError:
            continue
    return None


def default_space(arch: str, shape: DataShape, given: dict | None = None) -> dict[str, Param]:
    """The space around the planner's recipe for this data (`given`: values fixed before planning)."""
    try:
        planned = plan(shape, given or {}, arch).values
    except ValueError as exc:
        raise CompError(f"--arch {arch}: {exc}") from None
    size, batch = shape.image_size, int(planned["batch_size"])
    decay = planned["weight_decay"] or 1e-4  # a recipe without decay still gets a range to explore
    epochs = float(planned["epochs"])
    ops = parse_aug(planned["aug"]).ops
    shift = next((px for op, px in ops.items() if op in _SHIFT_OPS), 0)
    # half to twice the planned shift; a plan without one gets a small range from none
    shift_high = min(size - 1, max(1, size // 8) if not shift else min(2 * shift, max(shift, size // 4)))
    cutouts = {c for c in (0, ops.get("cutout", 0), size // 4, size // 2) if c < size}
    batches = {max(8, batch // 2), batch, min(max(batch, shape.n_train), batch * 2)}
    space = {
        "lr": Param("lr", "float", planned["lr"] / 10, planned["lr"] * 3, log=True),
        "batch_size": Param("batch_size", "categorical", choices=tuple(sorted(batches))),
        "weight_decay": Param("weight_decay", "float", decay / 10, decay * 10, log=True),
        "label_smoothing": Param("label_smoothing", "float", 0.0, 0.2),
        "translate": Param("translate", "int", min(shift // 2, shift_high), shift_high),
        "cutout": Param("cutout", "categorical", choices=tuple(sorted(cutouts))),
        "epochs": Param("epochs", "int", max(1, round(epochs / 2)), max(2, round(epochs * 1.5))),
        "aug": Param("aug", "fixed", value=planned["aug"]),  # translate/cutout rewrite the plan's aug
    }
    if planned["optimizer"] == "muon":
        muon = planned["muon_lr"]
        space["muon_lr"] = Param("muon_lr", "float", muon / 2, muon * 2, log=True)
    if dropout_kwarg(arch):
        space["dropout"] = Param("dropout", "float", 0.0, 0.6)
    return space


def load_space_file(path) -> dict[str, Param]:
    path = Path(path)
    if not path.is_file():
        raise CompError(f"--space {path}: no such file")
    raw = _read_mapping(path)
    return {name: _param(path, name, spec) for name, spec in raw.items()}


def build_space(arch: str, shape: DataShape, space_file=None, fixed: dict | None = None) -> dict[str, Param]:
    """Defaults around the plan, updated by the file's entries, updated by fixed values (e.g. tune --epochs).
    Every value a trial could take is checked against the images here, before any trial trains."""
    from_file = load_space_file(space_file) if space_file else {}
    fixed = {name: Param(name, "fixed", value=value) for name, value in (fixed or {}).items()}
    # fixed recipe values (batch_size: 32) are planned with: the lr range then fits that batch
    given = {name: p.value for name, p in {**from_file, **fixed}.items() if p.type == "fixed" and name in RECIPE_FIELDS}
    space = default_space(arch, shape, given)
    if "aug" in from_file:  # an explicit aug is meant whole: the default shift/cutout would rewrite it
        for name in ("translate", "cutout"):
            if name not in from_file:
                space.pop(name)
    if "dropout" in from_file and not dropout_kwarg(arch):
        raise CompError(f"--space {space_file}: dropout: {arch} has no dropout argument; remove the entry")
    space.update(from_file)
    space.update(fixed)
    where = f"--space {space_file}" if space_file else "tune"
    size = shape.image_size
    for name in ("translate", "cutout"):  # augment.py would fail each trial
        if name in space and _largest(space[name]) > size - 1:
            raise CompError(f"{where}: {name}: up to {_largest(space[name])} px, "
                            f"but the images are {size} px: keep it <= {size - 1}")
    if "aug" in space:
        param = space["aug"]
        for aug in (param.value,) if param.type == "fixed" else param.choices:
            for op, px in pixel_params(parse_aug(aug)).items():
                if px >= size:
                    raise CompError(f"{where}: aug {aug!r}: {op}:{px} must be smaller than the {size}px images")
    return space


def _largest(param: Param):
    if param.type == "fixed":
        return param.value
    return param.high if param.type in ("float", "int") else max(param.choices)


def _read_mapping(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise CompError(f"--space {path}: TOML needs Python 3.11+; write the space as YAML") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CompError(f"--space {path}: not valid TOML: {exc}") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CompError(f"--space {path}: not valid YAML: {exc}") from None
    else:
        raise CompError(f"--space {path}: expected a .yaml, .yml or .toml file")
    if not isinstance(raw, dict) or not raw:
        raise CompError(f"--space {path}: expected a mapping of parameter -> {{type, low, high, log, choices}}")
    return raw


def _param(path: Path, name, spec) -> Param:
    where = f"--space {path}: {name}"
    if name not in PARAMS:
        raise CompError(f"{where}: unknown parameter; tunable: {', '.join(PARAMS)}")
    valid, meaning = PARAMS[name]
    if not isinstance(spec, dict):  # a plain value fixes the parameter
        if not valid(spec):
            raise CompError(f"{where}: {spec!r} is not valid: expected {meaning}")
        if name == "aug":
            _check_aug(where, spec)
        return Param(name, "fixed", value=spec)
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise CompError(f"{where}.type: {kind!r}; expected float, int or categorical")
    unknown = set(spec) - _SPEC_KEYS[kind]
    if unknown:
        raise CompError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} for type {kind}; "
                        f"allowed: {', '.join(sorted(_SPEC_KEYS[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise CompError(f"{where}.choices: expected a non-empty list")
        for choice in choices:
            if not valid(choice):
                raise CompError(f"{where}.choices: {choice!r} is not valid: expected {meaning}")
            if name == "aug":
                _check_aug(where, choice)
        return Param(name, "categorical", choices=tuple(choices))
    return _range_param(where, name, kind, spec, valid, meaning)


def _range_param(where, name, kind, spec, valid, meaning) -> Param:
    number = _integer(lambda v: True) if kind == "int" else _number(lambda v: True)
    for key in ("low", "high"):
        if key not in spec:
            raise CompError(f"{where}.{key}: missing (type {kind} needs low and high)")
        if not number(spec[key]):
            raise CompError(f"{where}.{key}: {spec[key]!r} is not {'an integer' if kind == 'int' else 'a number'}")
        if not valid(spec[key]):
            raise CompError(f"{where}.{key}: {spec[key]!r} is not valid: expected {meaning}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if low > high:
        raise CompError(f"{where}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise CompError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise CompError(f"{where}.low: a log range needs low > 0, got {low}")
    if step is not None and (not number(step) or step <= 0 or log):
        raise CompError(f"{where}.step: expected a positive {kind} and no log")
    return Param(name, kind, low, high, log, step)


def _check_aug(where, value) -> None:
    try:
        parse_aug(value)
    except ValueError as exc:
        raise CompError(f"{where}: {exc}") from None


def params_to_fields(arch: str, params: dict) -> dict:
    """A trial's parameters -> TrainConfig keyword arguments (recipe fields + model_kwargs)."""
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise CompError(f"unknown tuned parameter(s) {', '.join(sorted(unknown))}; tunable: {', '.join(PARAMS)}")
    params = {k: int(v) if k in ("batch_size", "patience") and isinstance(v, float) and v.is_integer() else v
              for k, v in params.items()}  # a categorical read back from JSON may be a float
    for name, value in params.items():  # a hand-edited best.json: one line naming the value, not a crash later
        valid, meaning = PARAMS[name]
        if not valid(value):
            raise CompError(f"tuned parameter {name}: {value!r} is not valid: expected {meaning}")
    fields = {k: v for k, v in params.items() if k in RECIPE_FIELDS}
    if "dropout" in params:
        kwarg = dropout_kwarg(arch)
        if kwarg is None:
            raise CompError(f"the tuned parameters set dropout but {arch} has no dropout argument")
        fields["model_kwargs"] = {kwarg: float(params["dropout"])}
    if "translate" in params or "cutout" in params:
        # the planned aug the study fixed; a best.json from before it recorded one: the raw recipe's, as its trials had
        base = fields.get("aug") or arch_recipe(arch).get("aug") or "flip"
        fields["aug"] = tuned_aug(base, params.get("translate"), params.get("cutout"))
    return fields


def tuned_aug(base: str, translate: int | None, cutout: int | None) -> str:
    """`base` with its shift op replaced by translate:<px> and its cutout by cutout:<px> (0: none)."""
    ops = dict(parse_aug(base).ops)
    if translate is not None:
        ops = {k: v for k, v in ops.items() if k not in _SHIFT_OPS}
        if translate:
            ops["translate"] = int(translate)
    if cutout is not None:
        ops.pop("cutout", None)
        if cutout:
            ops["cutout"] = int(cutout)
    return BatchAugment(list(ops.items())).describe()
