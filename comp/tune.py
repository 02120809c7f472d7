"""`comp tune`: an Optuna study over one architecture's recipe on one fold.

    comp tune --arch simple_cnn --trials 20                        # study simple_cnn-fold0 in tune.db
    comp tune --arch fastnet --trials 10 --space space.yaml --pruner halving --timeout 3600
    comp train --arch simple_cnn --fold all --params best          # train with the best trial

Every worker running the same command joins the same study (load_if_exists), so N
terminals, or N machines sharing a storage, split the work: `--trials` counts per worker.
Storage: default sqlite:///<workdir>/tune.db (workers on one machine); any Optuna URL
(postgresql://..., mysql://... for many machines); or journal:PATH, an append-only log file
(optuna's JournalFileBackend) that also works on a shared filesystem where SQLite locking
does not.

The objective is the fold's best plain (no TTA) val accuracy. Each epoch's val accuracy is
reported to the pruner, which may stop a trial that trails the others at the same epoch.
Trials train into runs/tune/<study>/trial<N>/fold<K> (comp blend ignores them). The search
space is in tune_space.py. Outputs in <workdir>/tune/<study>/: best.json (what
`comp train --params best` reads), history.png and importance.png.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

from .io import CompError, atomic_path, read_json, write_json
from .tune_space import Param, build_space, params_to_fields

TABLE_ROWS = 20  # the trials table shows the latest rows only; best.json has the winner


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


def study_name(arch: str, fold: int) -> str:
    return f"{arch.replace('/', '_')}-fold{fold}"


def study_dir(workdir, study: str) -> Path:
    return Path(workdir) / "tune" / study.replace("/", "_")


def tune(opts: TuneOptions):
    import optuna

    from .folds import load_prepared
    from .models import model_info

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
    space = build_space(opts.arch, prepared.image_size, opts.space, fixed)
    name = opts.study or study_name(opts.arch, opts.fold)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our table replaces optuna's per-trial log lines
    study = open_study(name, opts.storage, opts.workdir,
                       optuna.samplers.TPESampler(seed=opts.seed), make_pruner(opts))
    print(f"study {name}: {len(study.trials)} trial(s) so far; this worker runs {opts.trials} more")
    for param in space.values():
        print(f"  {param.name:<16} {param.describe()}")
    objective = Objective(opts, name, space, prepared)
    try:
        # A trial that fails (a bad parameter mix, out of memory) is recorded as FAIL and the
        # study goes on; a KeyboardInterrupt stops the worker after recording the trial.
        study.optimize(objective, n_trials=opts.trials, timeout=opts.timeout, catch=(ValueError, RuntimeError),
                       callbacks=[lambda s, t: print_table(s)])
    finally:
        summarize(study, opts.arch, opts.fold, study_dir(opts.workdir, name))
    states = {t.state.name for t in study.get_trials(deepcopy=False)}
    if states == {"FAIL"}:
        raise CompError(f"every trial of study {name} failed: see the errors above, fix the space or "
                        f"the data, then start a new study with --study NAME")
    return study


def make_pruner(opts: TuneOptions):
    import optuna

    if opts.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=opts.startup_trials, n_warmup_steps=opts.warmup_epochs)
    if opts.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, opts.warmup_epochs), reduction_factor=3)
    if opts.pruner == "none":
        return optuna.pruners.NopPruner()
    raise CompError(f"--pruner {opts.pruner!r}: expected median, halving or none")


def open_study(name: str, storage_url: str | None, workdir, sampler=None, pruner=None):
    import optuna

    storage, lock = open_storage(storage_url, workdir)
    with lock:  # two workers creating one SQLite study at once race on CREATE TABLE
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                   pruner=pruner, load_if_exists=True)


def open_storage(url: str | None, workdir):
    """(storage, lock to hold while creating the study) for an Optuna URL or journal:PATH."""
    import optuna

    url = url or f"sqlite:///{Path(workdir).resolve() / 'tune.db'}"
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # optuna < 4 names it JournalFileStorage
            from optuna.storages import JournalFileStorage as JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(str(path))), contextlib.nullcontext()
    # heartbeats let a worker mark the RUNNING trials of a killed worker as FAIL
    kwargs = dict(heartbeat_interval=60, grace_period=180)
    if not url.startswith("sqlite:///"):
        return _rdb_storage(url, kwargs), contextlib.nullcontext()
    db = Path(url[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # wait for the other workers' writes
    lock_path = db.with_name(db.name + ".lock")
    with _file_lock(lock_path):  # RDBStorage creates the tables: one worker at a time
        return _rdb_storage(url, kwargs), _file_lock(lock_path)


def _rdb_storage(url: str, kwargs: dict):
    import optuna
    import sqlalchemy.exc

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(url, **kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:  # bad URL, server down, missing driver
        raise CompError(f"--storage {url}: cannot open it ({type(exc).__name__}: {exc}); use "
                        f"sqlite:///PATH, journal:PATH or a reachable database URL") from None


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; workers then race on creating the tables only
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Objective:
    """One trial: sample the space, train the fold, report every epoch to the pruner."""

    def __init__(self, opts: TuneOptions, study: str, space: dict[str, Param], prepared):
        self.opts, self.study, self.space, self.prepared = opts, study, space, prepared

    def __call__(self, trial) -> float:
        import optuna

        from .runs import fold_dir
        from .train import TrainConfig, train_fold

        params = {name: param.suggest(trial) for name, param in self.space.items()}
        fields = params_to_fields(self.opts.arch, params)
        run = f"tune/{self.study.replace('/', '_')}/trial{trial.number}"
        # trial.params lacks the fixed values: the user attrs hold everything `--params` needs
        trial.set_user_attr("params", params)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("run", str(fold_dir(".", run, self.opts.fold)))  # relative to the workdir
        cfg = TrainConfig(arch=self.opts.arch, fold=self.opts.fold, name=run, workdir=self.opts.workdir,
                          seed=self.opts.train_seed, device=self.opts.device, precision=self.opts.precision,
                          force=True, val_every=1, **fields)  # pruning reads every epoch's score
        scores = []

        def on_epoch(row):
            accuracy = row["val_accuracy"]
            scores.append(accuracy)
            trial.set_user_attr("epochs_run", row["epoch"])
            trial.report(accuracy, row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"val accuracy {accuracy:.4f} at epoch {row['epoch']}")

        metrics = train_fold(cfg, self.prepared, on_epoch=on_epoch)
        # the weights training keeps: the best epoch with early stopping, else the last one
        kept = metrics.get("accuracy_no_tta")
        return kept if kept is not None else scores[-1]


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
        params = " ".join(f"{k}={_short(v)}" for k, v in t.user_attrs.get("params", t.params).items())
        rows.append(f"{t.number:>5}  {t.state.name:<9} {value:>8}  {t.user_attrs.get('epochs_run', ''):>6}  "
                    f"{'' if best == -math.inf else f'{best:.4f}':>9}  {params}")
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    print(f"\nstudy {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    print(f"{'trial':>5}  {'state':<9} {'value':>8}  {'epochs':>6}  {'best':>9}  params")
    if len(rows) > TABLE_ROWS:
        print(f"  ... {len(rows) - TABLE_ROWS} earlier trial(s)")
    print("\n".join(rows[-TABLE_ROWS:]), flush=True)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summarize(study, arch: str, fold: int, out: Path) -> None:
    """best.json + history.png + importance.png; safe to call at any point of the study."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        print(f"no complete trial in study {study.study_name} yet: nothing written to {out}")
        return
    best = max(complete, key=lambda t: t.value)
    write_json(out / "best.json", {
        "study": study.study_name, "arch": arch, "fold": fold, "trial": best.number, "value": best.value,
        "params": best.user_attrs.get("params", best.params), "run": best.user_attrs.get("run"),
        "n_complete": len(complete),
        "usage": f"comp train --arch {arch} --fold all --params-from {study.study_name}"})
    _plot_history(study, out / "history.png")
    print(f"best trial {best.number}: val accuracy {best.value:.4f} -> {out / 'best.json'}, history.png")
    if len(complete) < 2:
        print("importance.png skipped: parameter importance needs at least 2 complete trials")
        return
    try:
        _plot_importance(study, out / "importance.png")
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial had the same params
        print(f"importance.png skipped: {exc}")


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(8, 4.5))


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plot_history(study, path: Path) -> None:
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    plt, fig, ax = _figure()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               marker="x", color="grey", label="pruned (last reported)", zorder=2)
    best, xs, ys = -math.inf, [], []
    for t in done:
        best = max(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="val accuracy", title=f"{study.study_name}: optimization history")
    ax.legend(loc="lower right")
    _save(plt, fig, path)


def _plot_importance(study, path: Path) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna warns about few trials; the plot says what it has
        importances = optuna.importance.get_param_importances(study)
    if not importances:
        raise ValueError("no parameter varied across the complete trials")
    plt, fig, ax = _figure()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance", title=f"{study.study_name}: parameter importance ({len(study.trials)} trials)")
    _save(plt, fig, path)


def tuned_fields(workdir, arch: str, params: str = "best", study: str | None = None) -> dict:
    """TrainConfig fields from a study's best.json (`--params best [--params-from STUDY]`)
    or from a best.json path (`--params FILE`)."""
    if params != "best" and study:
        raise CompError("--params FILE and --params-from STUDY both given: pass one of them")
    if params == "best" and not study and arch is None:
        raise CompError("--params best reads the study of --arch A on fold 0: pass --arch, or --params-from STUDY")
    if params == "best":
        name = study or study_name(arch, 0)
        path = study_dir(workdir, name) / "best.json"
        if not path.exists():
            raise CompError(f"{path} not found: run `comp tune --arch {arch}` first"
                            f"{'' if study else ', or pick a study with --params-from STUDY'}")
    else:
        path = Path(params)
        if not path.is_file():
            raise CompError(f"--params {params}: expected 'best' or a best.json file")
    best = read_json(path)
    arch = arch or best.get("arch")  # a named study or file says which net it tuned
    if best.get("arch") != arch:
        raise CompError(f"{path} was tuned for --arch {best.get('arch')}, not {arch}; "
                        f"pass --arch {best.get('arch')} or tune {arch}")
    print(f"params from {path} (trial {best.get('trial')}, val accuracy {best.get('value')}): {best['params']}")
    # the study's fold: retraining that fold with these params scores it on labels the choice saw
    tuned_on = {"study": best.get("study"), "fold": best.get("fold", 0), "file": str(path)}
    return {**params_to_fields(arch, best["params"]), "arch": arch, "tuned_on": tuned_on}
