"""A `comp tune` study: its storage, what it is bound to, and its sampler.

Storage: default sqlite:///<workdir>/tune.db (workers on one machine); any Optuna URL
(postgresql://..., mysql://... for many machines); or journal:PATH, an append-only log file
(optuna's JournalFileBackend) that also works on a shared filesystem where SQLite locking
does not.

A study tunes one architecture on one fold of one fold split at one image size: the worker that
creates it records them (study user attributes, STUDY_KEYS) and a worker asking for others is
refused, so best.json never mixes trials of two nets or two folds, and a split made again by
`comp prepare` cannot silently continue an old study.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import optuna

from ..io import CompError

STUDY_KEYS = ("arch", "fold", "image_size", "folds_fingerprint")


def open_study(name: str, storage_url: str | None, workdir, sampler=None, pruner=None,
               identity: dict | None = None):
    """Create or join study `name`; `identity` (STUDY_KEYS -> value) is recorded by its creator and
    checked for every later worker."""
    storage, lock = open_storage(storage_url, workdir)
    with lock:  # two workers creating one SQLite study at once race on CREATE TABLE (and on the binding)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
        if identity:
            bind_study(study, identity)
        return study


def bind_study(study, identity: dict) -> None:
    held = study.user_attrs
    if not any(key in held for key in STUDY_KEYS):  # a new study (or one an older comp made): record ours
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return
    differ = [key for key in STUDY_KEYS if key in held and key in identity and held[key] != identity[key]]
    if not differ:
        return
    if "folds_fingerprint" in differ:
        raise CompError(f"study {study.study_name} was tuned on another fold split than folds/folds.csv "
                        f"(prepared again with another --seed or --folds?): its scores are of other rows; "
                        f"start a new study with --study NAME")
    flags = {"arch": "--arch", "fold": "--fold", "image_size": "image size (comp prepare --size)"}
    what = "; ".join(f"{flags[k]}: {held[k]} in the study, {identity[k]} here" for k in differ)
    raise CompError(f"study {study.study_name} belongs to --arch {held.get('arch')} on fold {held.get('fold')} "
                    f"({what}): pass the study's values to join it, or --study NAME for a new study")


def open_storage(url: str | None, workdir):
    """(storage, lock to hold while creating the study) for an Optuna URL or journal:PATH."""
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


def make_sampler(seed: int | None):
    """TPE; with --sampler-seed, seeded per trial (TrialSeededSampler), else differently in every worker."""
    return optuna.samplers.TPESampler() if seed is None else TrialSeededSampler(seed)


def trial_seed(seed: int, trial_number: int) -> int:
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE re-seeded before each trial from (--sampler-seed, the trial's number). Seeding once per worker
    start drew the same trials again on every resumed study, and the same ones in workers started together;
    trial numbers are unique in a study and keep counting on a resume, so each trial draws anew, and one
    worker's study is reproducible from the seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study, trial) -> None:
        self._tpe = optuna.samplers.TPESampler(seed=trial_seed(self.seed, trial.number))
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
