"""`comp tune`: an Optuna study over one architecture's recipe on one fold.

    comp tune --arch simple_cnn --trials 20                        # study simple_cnn-fold0 in tune.db
    comp tune --arch fastnet --trials 10 --space space.yaml --pruner halving --timeout 3600
    comp train --arch simple_cnn --fold all --params best          # run simple_cnn_tuned, the best trial's recipe

Every worker running the same command joins the same study (load_if_exists), so N
terminals, or N machines sharing a storage, split the work: `--trials` counts per worker.
A study is bound to its arch, fold, image size and fold split (comp/tune/study.py, which also
holds the storage: SQLite by default, any Optuna URL, or journal:PATH).

The objective is the fold's val accuracy of the weights training keeps, with the trial's TTA: none
unless the space searches tta (a trial predicts only the held-out fold, and keeps no model.pt).
The pruner sees progress in percent of each trial's own epochs (every PROGRESS_STEP), so trials of
different lengths are compared at the same share of their schedule, not at the same epoch.
Trials train into runs/tune/<study>/trial<N>/fold<K> (comp blend ignores them). The search
space is in comp/train/params.py. Outputs in <workdir>/tune/<study>/: best.json (what `comp train
--params best` reads; rewritten after every complete trial, so a killed worker leaves it),
history.png and importance.png. SIGTERM stops a worker as Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from ..io import CompError, write_json
from ..train.params import Param, build_space, params_to_fields
from ..train.tuned import study_dir, study_name

TABLE_ROWS = 20  # the trials table shows the latest rows only; best.json has the winner
PROGRESS_STEP = 5  # percent of a trial's epochs between the values the pruner sees
HALVING_MIN_PERCENT = 10  # successive halving's first rung (then 30%, 90% with reduction factor 3)


@dataclass
class TuneOptions:
    arch: str
    trials: int
    fold: int = 0
    workdir: str = "."
    storage: str | None = None
    study: str | None = None
    space: str | None = None
    pruner: str = "median"
    startup_trials: int = 5
    warmup_epochs: int = 2
    timeout: float | None = None
    epochs: float | None = None
    seed: int | None = None  # sampler seed; None: each worker samples differently
    train_seed: int = 0
    device: str = "auto"
    precision: str = "auto"


def tune(opts: TuneOptions):
    import optuna

    from ..prepare.folds import load_prepared, split_fingerprint
    from ..models import model_info
    from ..train.config import data_shape
    from .study import make_sampler, open_study

    try:
        model_info(opts.arch)
    except ValueError as exc:
        raise CompError(str(exc)) from None
    if opts.trials < 1:
        raise CompError(f"--trials {opts.trials}: need at least 1")
    prepared = load_prepared(opts.workdir)
    n_folds = prepared.n_folds
    if not 0 <= opts.fold < n_folds:
        raise CompError(f"--fold {opts.fold}: folds.csv has folds 0..{n_folds - 1}")
    fixed = {"epochs": opts.epochs} if opts.epochs is not None else None
    shape = data_shape(prepared, opts.fold)
    space = build_space(opts.arch, shape, opts.space, fixed)
    name = opts.study or study_name(opts.arch, opts.fold)
    # the trials' own lines replace optuna's: its failed-trial warnings carry whole tracebacks
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    identity = {"arch": opts.arch, "fold": opts.fold, "image_size": prepared.image_size,
                "folds_fingerprint": split_fingerprint(prepared.folds)}
    study = open_study(name, opts.storage, opts.workdir, make_sampler(opts.seed), make_pruner(opts), identity)
    print(f"study {name}: {len(study.trials)} trial(s) so far; this worker runs {opts.trials} more; "
          f"space around the plan for fold {opts.fold} ({shape.n_train} images of {shape.image_size}px):")
    for param in space.values():
        print(f"  {param.name:<16} {param.describe()}")
    out = study_dir(opts.workdir, name)
    objective = Objective(opts, name, space, prepared, identity)
    try:
        # A trial that fails (a bad parameter mix, out of memory) is recorded as FAIL and the
        # study goes on; Ctrl-C or SIGTERM stops the worker after recording the trial.
        with sigterm_as_interrupt():
            study.optimize(objective, n_trials=opts.trials, timeout=opts.timeout, catch=(ValueError, RuntimeError),
                           callbacks=[lambda s, t: after_trial(s, t, out)])
    finally:
        summarize(study, out)
    states = {t.state.name for t in study.get_trials(deepcopy=False)}
    if states == {"FAIL"}:
        raise CompError(f"every trial of study {name} failed: see the errors above, fix the space or "
                        f"the data, then start a new study with --study NAME")
    return study


@contextlib.contextmanager
def sigterm_as_interrupt():
    """kill (SIGTERM: a scheduler's stop, a preemption) ends a worker as Ctrl-C does: the running trial
    is recorded, its checkpoint removed and best.json written, instead of dying mid-write."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return

    interrupted = []

    def interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Exception:
        if interrupted:  # an interrupt landing in optuna's own bookkeeping can surface as its UnboundLocalError
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def make_pruner(opts: TuneOptions):
    """The pruner's steps are percent of a trial's epochs (see Objective); --warmup-epochs is applied
    per trial in the objective, in the trial's own epochs."""
    import optuna

    if opts.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=opts.startup_trials, n_warmup_steps=0)
    if opts.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=HALVING_MIN_PERCENT, reduction_factor=3)
    if opts.pruner == "none":
        return optuna.pruners.NopPruner()
    raise CompError(f"--pruner {opts.pruner!r}: expected median, halving or none")


def progress_steps(epoch: int, epochs: float, reported: int) -> list[int]:
    """The pruner steps (percent of the trial's `epochs`, every PROGRESS_STEP) passed by the end of `epoch`
    and not yet reported. Every trial reports at the same steps whatever its length: a 4-epoch trial's
    epoch 2 and an 8-epoch trial's epoch 4 are both step 50, where the pruner compares them."""
    percent = min(100, math.floor(100 * epoch / epochs + 1e-9))
    return list(range(reported + PROGRESS_STEP, percent + 1, PROGRESS_STEP))


class Objective:
    """One trial: sample the space, train the fold, report its progress to the pruner."""

    def __init__(self, opts: TuneOptions, study: str, space: dict[str, Param], prepared, identity: dict):
        self.opts, self.study, self.space, self.prepared, self.identity = opts, study, space, prepared, identity

    def __call__(self, trial) -> float:
        import optuna

        from ..runs import fold_dir
        from ..train.trainer import TrainConfig, train_fold
        from ..train.config import data_shape

        params = {name: param.suggest(trial) for name, param in self.space.items()}
        fields = params_to_fields(self.opts.arch, params)
        fields.setdefault("tta", "none")  # TTA views the objective would not read cost a prediction each
        run = f"tune/{self.study.replace('/', '_')}/trial{trial.number}"
        out = fold_dir(self.opts.workdir, run, self.opts.fold)
        # trial.params lacks the fixed values: the user attrs hold everything `--params` needs, and
        # what the trial ran on, so best.json is written from the best trial's own record
        attrs = {**self.identity, "params": params, "worker": f"{socket.gethostname()}:{os.getpid()}",
                 "run": str(fold_dir(".", run, self.opts.fold))}  # relative to the workdir
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        cfg = TrainConfig(arch=self.opts.arch, fold=self.opts.fold, name=run, workdir=self.opts.workdir,
                          seed=self.opts.train_seed, device=self.opts.device, precision=self.opts.precision,
                          force=True, val_every=1, tune_trial=True, **fields)  # pruning reads every epoch's score
        reported = [0]

        def on_epoch(row):
            accuracy = row["val_accuracy"]
            trial.set_user_attr("epochs_run", row["epoch"])
            steps = progress_steps(row["epoch"], epochs, reported[-1])
            for step in steps:
                trial.report(accuracy, step)
            reported.extend(steps)
            # never at 100%: the trial is done, pruning it would only discard its result
            if steps and steps[-1] < 100 and row["epoch"] >= self.opts.warmup_epochs and trial.should_prune():
                raise optuna.TrialPruned(f"val accuracy {accuracy:.4f} at epoch {row['epoch']} ({steps[-1]}%)")

        try:
            shape = data_shape(self.prepared, self.opts.fold)
            epochs = cfg.resolved(shape.n_train, shape.image_size, self.prepared.has_cache, shape.num_classes).epochs
            metrics = train_fold(cfg, self.prepared, on_epoch=on_epoch)
        except BaseException as exc:  # pruned, failed or interrupted: the trial never resumes
            (out / "checkpoint.pt").unlink(missing_ok=True)
            if isinstance(exc, Exception) and not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            if isinstance(exc, KeyboardInterrupt):  # optuna records it as FAIL: the table says STOPPED
                trial.set_user_attr("interrupted", True)
            raise
        return metrics["accuracy"]  # of the weights training keeps, with the trial's TTA


def after_trial(study, trial, out: Path) -> None:
    """After each trial: the table, one line for a failure, best.json at once (a killed worker leaves it)."""
    from optuna.trial import TrialState

    print_table(study)
    if trial.state == TrialState.FAIL:
        print(f"trial {trial.number} failed: {trial.user_attrs.get('error', 'no error recorded')}", flush=True)
    if trial.state == TrialState.COMPLETE:
        write_best(study, out)


def print_table(study) -> None:
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    best, rows = -math.inf, []
    for t in trials:
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = max(best, t.value)
        value = "" if t.value is None else f"{t.value:.4f}"
        if t.state == TrialState.PRUNED and t.intermediate_values:
            value = f"({t.intermediate_values[max(t.intermediate_values)]:.4f})"
        params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())  # the searched ones; fixed: above
        rows.append(f"{t.number:>5}  {_state(t):<9} {value:>8}  {t.user_attrs.get('epochs_run', ''):>6}  "
                    f"{'' if best == -math.inf else f'{best:.4f}':>9}  {params}")
    counts = {state: sum(_state(t) == state for t in trials) for state in dict.fromkeys(map(_state, trials))}
    print(f"\nstudy {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    print(f"{'trial':>5}  {'state':<9} {'value':>8}  {'epochs':>6}  {'best':>9}  params")
    if len(rows) > TABLE_ROWS:
        print(f"  ... {len(rows) - TABLE_ROWS} earlier trial(s)")
    print("\n".join(rows[-TABLE_ROWS:]), flush=True)


def _state(trial) -> str:
    """optuna's state name, but STOPPED for a trial Ctrl-C or SIGTERM ended (optuna records it as FAIL)."""
    return "STOPPED" if trial.user_attrs.get("interrupted") else trial.state.name


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_best(study, out: Path):
    """best.json from the best complete trial's own record (None when no trial is complete)."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = max(complete, key=lambda t: t.value)
    record = {**study.user_attrs, **best.user_attrs}  # the study's binding for trials from before they recorded it
    arch, fold = record.get("arch"), record.get("fold")
    write_json(out / "best.json", {
        "study": study.study_name, "arch": arch, "fold": fold, "image_size": record.get("image_size"),
        "folds_fingerprint": record.get("folds_fingerprint"), "trial": best.number, "value": best.value,
        "value_note": f"val accuracy on fold {fold}, the best of {len(complete)} complete trials chosen on that "
                      f"fold's labels: optimistic for it",
        "params": best.user_attrs.get("params", best.params), "run": best.user_attrs.get("run"),
        "n_complete": len(complete),
        "usage": f"comp train --arch {arch} --fold all --params-from {study.study_name}"})
    return best


def summarize(study, out: Path) -> None:
    """best.json + history.png + importance.png; safe to call at any point of the study."""
    best = write_best(study, out)
    if best is None:
        print(f"no complete trial in study {study.study_name} yet: nothing written to {out}")
        return
    from ..blend import plots

    plots.save_png(plots.tune_history_figure(study), out / "history.png")
    print(f"best trial {best.number}: val accuracy {best.value:.4f} -> {out / 'best.json'}, history.png")
    if len(study.get_trials(deepcopy=False, states=(best.state,))) < 2:
        print("importance.png skipped: parameter importance needs at least 2 complete trials")
        return
    try:
        plots.save_png(plots.tune_importance_figure(study), out / "importance.png")
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial had the same params
        print(f"importance.png skipped: {exc}")
