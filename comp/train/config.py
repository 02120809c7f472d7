"""The training command's configuration: every flag of `comp train`, and the recipe resolved from it.

A value left None is the planner's (comp/train/recipe.py): `TrainConfig.resolved` fills each one in for the
fold's data, checks it, and keeps its reason in `plan`; `plan_table` prints them (`comp train --plan`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from ..io import CompError, plain_name
from ..prepare.folds import Prepared
from .augment import parse_aug, pixel_params
from .feed import default_workers, resolve_loader
from .recipe import RECIPE_FIELDS, DataShape, Plan, parse_budget, plan


_FRACTION = "a number from 0 up to (not including) 1"
# (field, test, what it needs): each failure is one error naming the flag and its value
RANGE_CHECKS = (
    ("ema_decay", lambda v: 0 < v < 1, "a number between 0 and 1 (airbench's is 0.95)"),
    ("val_every", lambda v: isinstance(v, int) and v >= 0, "0 (only after the last epoch) or a whole number of epochs"),
    ("patience", lambda v: isinstance(v, int) and v >= 0, "0 (off) or a whole number of epochs"),
    ("bias_lr_scale", lambda v: v > 0, "a positive factor"),
    ("label_smoothing", lambda v: 0 <= v < 1, _FRACTION),
    ("momentum", lambda v: 0 <= v < 1, _FRACTION),
    ("muon_momentum", lambda v: v is None or 0 <= v < 1, _FRACTION),
    ("weight_decay", lambda v: v >= 0, "0 or a positive number"),
    ("grad_clip", lambda v: v >= 0, "0 (off) or a positive norm"),
)


@dataclass
class TrainConfig:
    arch: str | None  # None: the planner's choice for the data (comp/train/recipe.py)
    fold: int
    name: str | None = None
    workdir: str = "."
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)
    loader: str = "auto"  # cache | albu (image files, DataLoader workers); auto: cache when prepared with one
    workers: int | None = None  # albu DataLoader workers (None: min(4, CPUs))
    resume: bool = False
    force: bool = False
    eval_batch_size: int = 1024
    val_every: int | None = None  # validate every N epochs (0: only at the end); None: the planner's
    model_kwargs: dict = field(default_factory=dict)
    tuned_on: dict | None = None  # --params: the comp tune study, fold, trial and params the recipe came from
    tuned_reasons: dict = field(default_factory=dict)  # --params: the plan table's reason for each tuned value
    tune_trial: bool = False  # a comp tune trial: only the held-out fold is predicted, no model.pt kept
    budget: float | None = None  # seconds for this fold (or, before train() splits it, for all folds)
    budget_started: float | None = None  # time.monotonic() when the budget began (None: at train())
    budget_all: float | None = None  # --fold all --budget: the whole budget (a later --fold all continues only such runs)
    plan: dict = field(default_factory=dict)  # resolved: each recipe value's reason
    arch_reason: str | None = None  # why arch was chosen, when the budget chose it (with_budget_arch)
    # recipe: None means "the planner's value" (comp/train/recipe.py)
    epochs: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    schedule: str | None = None
    bias_lr_scale: float | None = None
    ema: bool | None = None
    ema_decay: float | None = None  # lookahead's per-step decay: a pull every 5 steps keeps decay^5 (airbench: 0.95)
    aug: str | None = None
    tta: str | None = None
    patience: int | None = None
    grad_clip: float | None = None
    muon_lr: float | None = None  # --optimizer muon: the conv filters' lr (lr is the head's and biases')
    muon_momentum: float | None = None  # --optimizer muon: the conv filters' momentum

    def check_length(self) -> None:
        """--budget and --epochs: checked before anything is timed or trained."""
        if self.budget and self.epochs is not None:
            raise CompError("--epochs and --budget both set the length of training: give one of them")
        if self.budget is not None and not self.budget > 0:
            raise CompError(f"--budget {self.budget}: must be a positive duration")

    def resolved(self, n_train: int, img_size: int, has_cache: bool = True, num_classes: int = 10) -> "TrainConfig":
        """Every unset recipe value filled in by the planner, checked; `plan` holds the reasons."""
        given = {key: getattr(self, key) for key in RECIPE_FIELDS + ("val_every",)}
        self.check_length()
        asked_batch = given["batch_size"]
        if asked_batch is not None and asked_batch > n_train:  # else 1 step an epoch, lr for a batch never seen
            given["batch_size"] = n_train  # the planner then rescales the recipe's lr to the batch it really trains
        try:
            planned = plan(DataShape(img_size, n_train, num_classes), given, self.arch, self.model_kwargs,
                           self.budget, self.arch_reason)
        except ValueError as exc:
            raise CompError(f"--arch: {exc}") from None
        values = {**{f.name: getattr(self, f.name) for f in fields(self)}, **planned.values, "plan": planned.reasons}
        for key, why in self.tuned_reasons.items():  # a tuned value is no flag; one --budget dropped adds its note
            dropped = key in given and given[key] is None
            values["plan"][key] = f"{planned.reasons.get(key, '')}; {why}" if dropped else why
        if given["batch_size"] != asked_batch:
            source = self.tuned_reasons.get("batch_size", "--batch-size")
            values["plan"]["batch_size"] = f"{source} {asked_batch} capped at the fold's {n_train} training images"
        values["name"] = self.name or values["arch"].replace("/", "_")
        try:
            augment = parse_aug(values["aug"])
        except ValueError as exc:
            raise CompError(f"--aug: {exc}") from None
        values["aug"] = augment.describe()
        for op, pixels in pixel_params(augment).items():
            if pixels >= img_size:
                raise CompError(f"--aug {op}:{pixels}: must be smaller than the {img_size}px images")
        for key in ("epochs", "lr", "batch_size", "muon_lr"):
            if not values[key] > 0 or not math.isfinite(values[key]):
                raise CompError(f"--{key.replace('_', '-')} {values[key]}: must be a positive number")
        values["loader"] = resolve_loader(self.loader, has_cache)
        values["workers"] = default_workers() if self.workers is None else self.workers
        for key, ok, need in RANGE_CHECKS:
            if not ok(values[key]):
                raise CompError(f"--{key.replace('_', '-')} {values[key]}: need {need}")
        if values["workers"] < 0:
            raise CompError(f"--workers {self.workers}: need 0 (load in the training process) or more")
        return TrainConfig(**values)

    def plan_table(self) -> str:
        """The resolved recipe, one value a line with its reason (`comp train --plan`)."""
        keys = ("arch", "model_kwargs", "batch_size", "epochs", "optimizer", "lr", "muon_lr", "momentum",
                "muon_momentum", "weight_decay", "bias_lr_scale", "label_smoothing", "schedule", "ema", "ema_decay",
                "aug", "tta", "val_every", "patience", "grad_clip")
        unused = {k for k in keys if k.startswith("muon") and self.optimizer != "muon"}
        unused |= {"ema_decay"} if not self.ema else set()
        values = {k: getattr(self, k) for k in keys if k not in unused}
        if self.budget:  # the recipe's epochs are only provisional until the first steps are timed
            values["epochs"] = "fitted"
        return Plan(values, self.plan).table()


def data_shape(prepared: Prepared, fold: int) -> DataShape:
    """What the planner sees of fold `fold`'s training data."""
    n_train = int((prepared.folds.fold.to_numpy() != fold).sum())
    return DataShape(prepared.image_size, n_train, prepared.label_map.num_classes)


def pick_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def config_from_args(args, fold: int, started: float) -> TrainConfig:
    """The TrainConfig of `comp train`'s parsed flags (and of --params' tuned values, which fill only what the
    flags left unset); a --budget counts from `started`."""
    model_kwargs = {}
    if args.pretrained is not None:
        model_kwargs["pretrained"] = args.pretrained
    if args.train_size:
        model_kwargs["train_size"] = args.train_size
    if args.weights:
        model_kwargs["weights"] = args.weights
    if args.no_adapt:
        model_kwargs["adapt"] = False
    recipe = {k: getattr(args, k) for k in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                                            "label_smoothing", "schedule", "bias_lr_scale", "aug", "tta",
                                            "patience", "grad_clip", "muon_lr", "muon_momentum", "ema_decay")}
    ema = {"on": True, "off": False}.get(args.ema)
    # --name becomes runs/<name>: a name, never a path (comp tune names its trials tune/<study>/trialN itself)
    tuned_on, arch, tuned_reasons = None, args.arch, {}
    name = None if args.name is None else plain_name(args.name, "--name")
    if getattr(args, "params", None) or getattr(args, "params_from", None):
        from .tuned import tuned_fields  # tuned values fill only what the command line left unset

        tuned = tuned_fields(args.workdir, args.arch, args.params or "best", args.params_from)
        arch = tuned["arch"]
        name = args.name or f"{arch.replace('/', '_')}_tuned"  # never the untuned run's folds
        tuned = keep_run_on_one_trial(args.workdir, name, fold, args.force, tuned)
        source = f"--params (study {tuned['tuned_on']['study']}, trial {tuned['tuned_on']['trial']})"
        for key, value in recipe.items():
            if value is None and tuned.get(key) is not None:
                if key == "epochs" and args.budget is not None:  # the budget sets the length: --epochs would clash
                    tuned_reasons[key] = f"--params' {tuned[key]:g} epochs dropped: --budget sets the length"
                    continue
                recipe[key], tuned_reasons[key] = tuned[key], source
        if ema is None and tuned.get("ema") is not None:
            ema, tuned_reasons["ema"] = tuned["ema"], source
        if tuned.get("model_kwargs"):
            model_kwargs, tuned_reasons["model_kwargs"] = {**tuned["model_kwargs"], **model_kwargs}, source
        tuned_on = tuned["tuned_on"]
    budget = None if args.budget is None else parse_budget(args.budget)
    return TrainConfig(arch=arch, fold=fold, name=name, workdir=args.workdir, seed=args.seed,
                       device=args.device, precision=args.precision, compile=args.compile, sync_bn=args.sync_bn,
                       loader=args.loader, workers=args.workers, val_every=args.val_every, resume=args.resume,
                       force=args.force, model_kwargs=model_kwargs, ema=ema, tuned_on=tuned_on,
                       tuned_reasons=tuned_reasons, budget=budget, budget_started=started if budget else None, **recipe)


def keep_run_on_one_trial(workdir, name: str, fold: int, force: bool, tuned: dict) -> dict:
    """`tuned` (tuned.tuned_fields), or the params the run's folds already recorded: best.json may name a
    newer trial once some folds trained, and one run must not mix trials (a resume would refuse the new
    values; --fold all would train its folds on different recipes under one name). --force --fold all
    retrains every fold, so the new best applies."""
    from ..io import read_json
    from ..runs import runs_root
    from .params import params_to_fields

    if force and fold == -1:
        return tuned
    records = {}  # fold -> its config's tuned_on, for every fold started and not about to be redone
    for path in sorted((runs_root(workdir) / name).glob("fold*")):
        number = path.name[len("fold"):]
        if not number.isdigit() or (force and int(number) == fold) or not (path / "config.json").exists():
            continue
        try:
            records[int(number)] = read_json(path / "config.json").get("tuned_on")
        except (OSError, ValueError):  # a config being written: that fold's own training checks it
            continue
    untuned = [k for k, record in records.items() if not record]
    if untuned:
        raise CompError(f"runs/{name} has fold(s) {', '.join(map(str, untuned))} trained without --params: tuned folds "
                        f"would mix two recipes in one run; pass --name NEW_NAME, or --force --fold all to retrain it")
    # folds an older comp tuned recorded no trial: only the resume check compares their recipe
    recorded = {k: r for k, r in records.items() if "params" in r}
    trials = {(r.get("study"), r.get("trial")) for r in recorded.values()}
    if len(trials) > 1:
        which = ", ".join(f"fold {k}: study {r.get('study')} trial {r.get('trial')}" for k, r in recorded.items())
        raise CompError(f"runs/{name} mixes trials ({which}); --force --fold all retrains every fold with one")
    now = tuned["tuned_on"]
    if not trials or trials == {(now["study"], now["trial"])}:
        return tuned
    [(study, trial)] = trials
    if study != now["study"]:
        raise CompError(f"runs/{name} was trained with study {study} (trial {trial}), not {now['study']}: pass "
                        f"--name NEW_NAME for a run of {now['study']}, or --force --fold all to retrain it")
    record = next(iter(recorded.values()))
    print(f"runs/{name}: fold(s) {', '.join(map(str, recorded))} trained with trial {trial} of study {study}; "
          f"{now['file']} now names trial {now['trial']}: this run keeps trial {trial} (--name NEW_NAME trains "
          f"the new best, --force --fold all retrains every fold with it)")
    return {**params_to_fields(tuned["arch"], record["params"]), "arch": tuned["arch"], "tuned_on": record}


def recipe_differs(trained: dict, asked: dict) -> str:
    """'lr=0.5 (asked 0.8), ...' for each recipe value asked for (not None) that a fold's saved config
    (`trained`) holds otherwise; '' when they agree. Only the recipe counts: device "auto" resolves to
    "cpu" and is no difference."""
    return ", ".join(f"{k}={trained.get(k)!r} (asked {v!r})" for k, v in asked.items()
                     if k in RECIPE_FIELDS + ("arch",) and v is not None and k in trained and trained[k] != v)
