"""`comp prepare`: detect the layout, validate, build the label map, stratified folds and the image cache.

Everything lands in <workdir>/folds/, written atomically:
  folds.csv     id, path, label, fold, source  (row i is row i of cache/train_<S>.npy)
  test.csv      id, path in the sample submission's order (row i is row i of cache/test_<S>.npy)
  labels.json   the label map (class order, hash, how labels are written back)
  prepare.json  what was detected, counts, sizes, modes, duplicates, dropped rows
  sample_submission.csv  a copy, so folds/ stays usable when the data moves
  cache/{train,test}_<S>.npy  every image decoded once to uint8 (N, S, S, 3), memory-mapped

With --no-cache (images too large to hold decoded) every image is still decoded once to check
it, but no cache is written: prepare.json says "cache": null and `comp train` reads the files
(comp/train/feed.py, --loader albu).
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..io import CompError, read_input_csv, read_json, relative_path, write_csv, write_json
from ..labels import LabelMap, build_label_map
from ..runs import runs_root
from . import cache as cache_mod
from . import staging
from .layout import (LayoutOverrides, Problem, detect_layout, open_competition, read_test_table, read_train_table,
                     unlisted_test_images)

MAX_PROBLEMS_SHOWN = 20


@dataclass
class PrepareOptions:
    data: str
    workdir: str = "."
    folds: int = 5
    seed: int = 42
    size: int | None = None
    skip_bad: bool = False
    cache: bool = True  # False: --no-cache


def folds_dir(workdir) -> Path:
    """<workdir>/folds, with any switch a killed `comp prepare` began finished first (comp/prepare/staging.py)."""
    out = Path(workdir) / "folds"
    staging.finish_switch(out)
    return out


def assign_folds(labels, n_folds: int, seed: int, groups=None) -> np.ndarray:
    """Stratified, shuffled, seeded: the same input always gives the same folds.

    `groups` (one key per row, e.g. a content hash): rows with one key land in one fold
    (StratifiedGroupKFold), so exact duplicates never sit on both sides of a split and inflate
    the out-of-fold score. Without repeated keys the folds are StratifiedKFold's, as before."""
    labels = np.asarray(labels)
    fold = np.full(len(labels), -1, dtype=np.int64)
    codes = pd.factorize(pd.Series(list(groups)))[0] if groups is not None else None
    if codes is not None and len(np.unique(codes)) < len(codes):
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, codes)
    else:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    for k, (_, held_out) in enumerate(splits):
        fold[held_out] = k
    return fold


def ids_fingerprint(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def sample_submission_path(workdir) -> Path:
    """The sample submission as prepare copied it into folds/ (older preparations: the original)."""
    copy = folds_dir(workdir) / "sample_submission.csv"
    if copy.exists():
        return copy
    original = Path(read_json(folds_dir(workdir) / "prepare.json")["layout"]["sample_submission"])
    if not original.exists():
        raise CompError(f"{original} (the sample submission) is gone; re-run `comp prepare`")
    return original


def split_fingerprint(folds: pd.DataFrame) -> str:
    """Changes when any row moves to another fold: a run trained on one split must never be
    scored or resumed on another (its "out-of-fold" rows would include training rows)."""
    return ids_fingerprint(folds.id.astype(str) + ":" + folds.fold.astype(str))


def current_split(workdir) -> str:
    """The split folds/folds.csv holds now: runs, studies and tuned params are checked against it."""
    return split_fingerprint(pd.read_csv(folds_dir(workdir) / "folds.csv", dtype=str, keep_default_na=False))


def prepare(opts: PrepareOptions, overrides: LayoutOverrides | None = None) -> dict:
    started = time.time()
    if opts.folds < 2:
        raise CompError(f"--folds {opts.folds}: need at least 2 folds")
    if opts.size is not None and opts.size < 1:
        raise CompError(f"--size {opts.size}: need a side length in pixels (e.g. 32), or leave it out "
                        f"for the default (the most common side, or the median of mixed sizes, at most "
                        f"{cache_mod.DEFAULT_MAX_SIZE})")
    workdir = Path(opts.workdir).resolve()
    out = folds_dir(workdir)  # also finishes a switch a killed prepare began
    removed = staging.remove_stale(out, out / "cache", workdir / "data")
    if removed:
        print(f"removed {len(removed)} staging file(s)/folder(s) left by killed prepares")
    previous = _previous_summary(out)
    _warn_split_change(previous, opts)
    root = open_competition(opts.data, workdir)
    layout = detect_layout(root, overrides)
    print(layout.describe())

    problems: list[Problem] = []
    train = read_train_table(layout, problems)
    test = read_test_table(layout, problems)
    _fail_on_test_problems(problems)
    for note in layout.left_out_notes():
        print(note)
    headers = cache_mod.scan_headers(list(train.path), "scanning train")
    test_turned = cache_mod.scan_headers([p for p in test.path if p], "scanning test").turned
    problems += cache_mod.problems_from_rows(headers.bad, train)
    train = train.assign(size=headers.sizes, mode=headers.modes, turned=False)
    train.loc[headers.turned, "turned"] = True
    train = _drop_problem_rows(train, problems, opts.skip_bad)
    problems += _small_classes(train, opts.folds)
    train = _drop_problem_rows(train, problems, opts.skip_bad)

    size, size_reason = (opts.size, "--size") if opts.size else cache_mod.choose_size(train["size"], _has_cuda())
    _warn_size_change(workdir, previous, size)
    if opts.cache:
        cache_mod.check_cache_fits(len(train) + len(test), size, train["size"], out)
    # Everything is written under a staging folder and switched in at the end (comp/prepare/staging.py),
    # so a failed or killed prepare leaves the previous preparation whole.
    with staging.Staging(out) as stage:
        caches = {split: stage.path / "cache" / f"{split}_{size}.npy" for split in ("train", "test")} \
            if opts.cache else {}
        train, train_hashes, test_hashes = _decode_all(train, test, layout, size, caches, opts, problems)
        sample = read_input_csv(layout.sample_submission, dtype=str, keep_default_na=False)
        label_map = build_label_map(train.label, sample[layout.sub_label_col])
        train["fold"] = assign_folds(train.label, opts.folds, opts.seed, groups=train_hashes)

        rel = partial(relative_path, base=workdir)  # relative to the workdir: folds/ moves with the data
        folds_table = pd.DataFrame({"id": train.id, "path": train.path.map(rel), "label": train.label,
                                    "fold": train.fold, "source": train.source})
        test_table = pd.DataFrame({"id": test.id, "path": test.path.map(rel)})
        summary = _summary(opts, layout, train, test, label_map, problems, size,
                           cache_mod.duplicate_report(train_hashes, list(train.label), test_hashes, list(train.id)))
        summary["image_size"], summary["image_size_reason"], summary["fit"] = size, size_reason, "crop"
        summary["fingerprints"] = {"train_fingerprint": ids_fingerprint(folds_table.id),
                                   "test_fingerprint": ids_fingerprint(test_table.id)}
        summary["cache"] = {"train": rel(out / "cache" / caches["train"].name),
                            "test": rel(out / "cache" / caches["test"].name), "size": size} if opts.cache else None
        summary["test_images_not_in_sample"] = unlisted_test_images(layout, test, train)
        summary["turned_upright"] = {"train": int(train.turned.sum()), "test": len(test_turned)}
        summary["files_not_images"] = layout.left_out_record()
        summary["runs_invalidated"] = _runs_invalidated(workdir, out, split_fingerprint(folds_table))
        summary["seconds"] = round(time.time() - started, 1)
        write_csv(stage.path / "folds.csv", folds_table)
        write_csv(stage.path / "test.csv", test_table)
        write_csv(stage.path / "sample_submission.csv", sample)  # blend and submit read this copy
        label_map.save(stage.path / "labels.json")
        write_json(stage.path / "prepare.json", summary)
        stage.commit()
    print_summary(summary)
    return summary


def _has_cuda() -> bool:
    """Photos are cached larger where a GPU will train on them (cache.PHOTO_SIZE)."""
    import torch

    return torch.cuda.is_available()


def _previous_summary(out: Path) -> dict:
    """The prepare.json this preparation replaces ({} where there is none, or it is unreadable)."""
    try:
        return read_json(out / "prepare.json")
    except (OSError, ValueError):
        return {}


def _run_configs(workdir: Path):
    """(path, config) of every trained run fold's config.json that can be read."""
    for path in sorted(runs_root(workdir).glob("*/fold*/config.json")):
        try:
            yield path, read_json(path)
        except (OSError, ValueError):
            continue


def _warn_split_change(previous: dict, opts: PrepareOptions) -> None:
    """Early word, before the long decode, that another --seed/--folds makes a new split."""
    if previous and (previous.get("seed"), previous.get("folds")) != (opts.seed, opts.folds):
        print(f"note: --seed {opts.seed} --folds {opts.folds} differ from the previous preparation's "
              f"(--seed {previous.get('seed')} --folds {previous.get('folds')}): runs trained on its split "
              f"will be unusable (counted before the switch; Ctrl-C now keeps everything as it is)")


def _warn_size_change(workdir: Path, previous_summary: dict, size: int) -> None:
    """Early word that runs trained at the previous preparation's side cannot predict the new cache."""
    previous = previous_summary.get("image_size")
    if previous in (None, size):
        return
    trained = {path.parent.parent.name for path, config in _run_configs(workdir) if config.get("img_size") == previous}
    runs = f": runs {', '.join(sorted(trained))} were trained at {previous}px and will not predict on it" if trained else ""
    print(f"note: images will be cached at {size}px, the previous preparation's at {previous}px{runs} "
          f"(`--size {previous}` keeps the previous side; Ctrl-C now keeps everything as it is)")


def _runs_invalidated(workdir: Path, out: Path, new_split: str) -> list[str]:
    """Run folds usable on today's split that the new split makes unusable; said before the switch."""
    if not (out / "folds.csv").exists():
        return []
    old_split = split_fingerprint(pd.read_csv(out / "folds.csv", dtype=str, keep_default_na=False))
    if old_split == new_split:
        return []
    lost = [str(path.parent.relative_to(workdir)) for path, config in _run_configs(workdir)
            if config.get("folds_fingerprint") == old_split]
    if lost:
        print(f"warning: the new fold split makes {len(lost)} trained run fold(s) unusable (their out-of-fold "
              f"rows would include training rows): {', '.join(lost[:10])}{' ...' if len(lost) > 10 else ''}; "
              f"retrain them, or prepare again with the previous --seed/--folds")
    return lost


def _decode_all(train, test, layout, size, caches, opts, problems):
    """Decode every image once (into the staged caches, or only to check it with --no-cache)."""
    verb = "caching" if opts.cache else "checking"
    bad, train_hashes = cache_mod.build_cache(list(train.path), size, caches.get("train"), f"{verb} train", "crop")
    if bad:
        decode_problems = cache_mod.problems_from_rows(bad, train)
        if not opts.skip_bad:
            _raise_problems(decode_problems)
        problems += decode_problems
        keep = np.setdiff1d(np.arange(len(train)), [row for row, _ in bad])
        if caches:
            _compact_cache(caches["train"], keep)
        train = train.iloc[keep].reset_index(drop=True)
        train_hashes = [train_hashes[i] for i in keep]
    bad, test_hashes = cache_mod.build_cache(list(test.path), size, caches.get("test"), f"{verb} test", "crop")
    if bad:
        where = [f"{layout.sample_submission.name} row {i + 2}" for i in range(len(test))]
        _raise_problems(cache_mod.problems_from_rows(bad, test.assign(where=where), "test"), can_skip=False)
    return train, train_hashes, test_hashes


def _fail_on_test_problems(problems: list[Problem]) -> None:
    # Test rows cannot be dropped: the submission must cover every id of the sample.
    test_problems = [p for p in problems if "test id" in p.what]
    if test_problems:
        _raise_problems(test_problems, can_skip=False)


def _drop_problem_rows(table: pd.DataFrame, problems: list[Problem], skip_bad: bool) -> pd.DataFrame:
    if not problems:
        return table
    if not skip_bad:
        _raise_problems(problems)
    bad_where = {p.where for p in problems} | {p.where.split(" (")[0] for p in problems}
    bad_classes = {p.where[len("class "):] for p in problems if p.where.startswith("class ")}
    keep = ~table["where"].isin(bad_where) & ~table["label"].isin(bad_classes)
    return table[keep].reset_index(drop=True)


def _small_classes(train: pd.DataFrame, n_folds: int) -> list[Problem]:
    counts = train.label.value_counts()
    return [Problem(f"class {label}", f"has {n} image(s), fewer than --folds {n_folds}; "
                    f"add images, lower --folds, or --skip-bad to drop the class")
            for label, n in counts.items() if n < n_folds]


def _raise_problems(problems: list[Problem], can_skip: bool = True) -> None:
    shown = "\n".join(f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    hint = "\nFix these rows, or re-run with --skip-bad to drop them (they are listed in prepare.json)." \
        if can_skip else "\nThe test set must be complete: fix these files."
    raise CompError(f"{len(problems)} problem(s) in the input; nothing was written:\n{shown}{more}{hint}")


def _compact_cache(path: Path, keep: np.ndarray) -> None:
    from ..io import atomic_path

    source = np.load(path, mmap_mode="r")
    with atomic_path(path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep),) + source.shape[1:])
        out[:] = source[keep]
        out.flush()
        del out


def _summary(opts, layout, train, test, label_map: LabelMap, problems, size, duplicates) -> dict:
    per_class = train.label.value_counts()
    return {
        "options": asdict(opts),
        "layout": {"kind": layout.kind, "root": str(layout.root),
                   "parts": [{"source": p.source, "csv": str(p.csv or ""), "images": str(p.image_dir)}
                             for p in layout.parts],
                   "test_dir": str(layout.test_dir), "sample_submission": str(layout.sample_submission),
                   "sub_id_col": layout.sub_id_col, "sub_label_col": layout.sub_label_col,
                   "id_col": layout.id_col, "label_col": layout.label_col},
        "train_images": int(len(train)),
        "test_images": int(len(test)),
        "by_source": {k: int(v) for k, v in train.source.value_counts().items()},
        "num_classes": label_map.num_classes,
        "label_hash": label_map.hash,
        "images_per_class": {c: int(per_class.get(c, 0)) for c in label_map.classes},
        "sizes_seen": {f"{w}x{h}": n for (w, h), n in Counter(train["size"]).most_common(10)},
        "distinct_sizes": len(set(train["size"])),  # more than sizes_seen lists: photos of mixed sizes
        "modes_seen": dict(Counter(train["mode"]).most_common()),
        "scaled_to_8_bits": {m: cache_mod.DEEP_MODES[m] for m in set(train["mode"]) if m in cache_mod.DEEP_MODES},
        "class_names_with_outer_spaces": [c for c in label_map.classes if c != c.strip()],
        "duplicates": duplicates,
        "dropped": [str(p) for p in problems],
        "folds": opts.folds,
        "seed": opts.seed,
    }


def print_summary(summary: dict) -> None:
    counts = summary["images_per_class"]
    values = list(counts.values())
    print(f"train images: {summary['train_images']} {summary['by_source']}  test images: {summary['test_images']}")
    print(f"classes: {summary['num_classes']}  images per class: min {min(values)}, "
          f"max {max(values)}, mean {np.mean(values):.1f}")
    if len(counts) <= 20:
        print("  " + "  ".join(f"{c}:{n}" for c, n in counts.items()))
    print(f"sizes seen: {summary['sizes_seen']}  modes seen: {summary['modes_seen']}")
    size = summary["image_size"]
    if summary["cache"]:
        print(f"cache: {size}x{size} uint8 -> {summary['cache']['train']}  ({summary.get('image_size_reason', '')})")
    else:
        print(f"cache: none (--no-cache); `comp train` reads the image files and resizes them to {size}x{size}  "
              f"({summary.get('image_size_reason', '')})")
    for mode, how in summary.get("scaled_to_8_bits", {}).items():
        print(f"{mode} images scaled to 8 bits: {how}")
    if summary.get("class_names_with_outer_spaces"):
        print(f"note: class names with leading/trailing spaces, kept as written in the labels file: "
              f"{summary['class_names_with_outer_spaces']}")
    duplicates = {k: v for k, v in summary["duplicates"].items() if k != "conflicting_label_groups"}
    print(f"duplicates: {duplicates}")
    for group in summary["duplicates"].get("conflicting_label_groups", [])[:MAX_PROBLEMS_SHOWN]:
        print(f"  identical images with different labels: {group}")
    turned = summary.get("turned_upright") or {}
    if any(turned.values()):
        print(f"turned upright by their EXIF orientation (as phones save photos; viewers show them so): "
              f"{turned['train']} train and {turned['test']} test image(s)")
    unlisted = summary.get("test_images_not_in_sample") or []
    if unlisted:
        print(f"note: {len(unlisted)} image(s) in the test folder are not in the sample submission and get no "
              f"prediction, e.g. {', '.join(unlisted[:5])} (all listed in prepare.json)")
    if summary["dropped"]:
        print(f"dropped {len(summary['dropped'])} bad row(s)/class(es) (--skip-bad); see prepare.json")
    print(f"folds: {summary['folds']} (seed {summary['seed']}), label hash {summary['label_hash']}")


@dataclass
class Prepared:
    """What `comp prepare` wrote, loaded and cross-checked: the input of `comp train`."""
    workdir: Path
    folds: pd.DataFrame
    test: pd.DataFrame
    label_map: LabelMap
    train_images: np.ndarray | None  # memory-mapped (N, S, S, 3) uint8; None after --no-cache
    test_images: np.ndarray | None
    info: dict

    @property
    def has_cache(self) -> bool:
        return self.train_images is not None

    @property
    def n_folds(self) -> int:
        return int(self.folds.fold.max()) + 1

    @property
    def fit(self) -> str:
        """How images of another shape became squares (cache.FITS); preparations before 2026-12-08: squash."""
        return self.info.get("fit", "squash")

    @property
    def image_size(self) -> int:
        """The side the images are trained at (prepare.json before --no-cache existed: the cache's)."""
        return int(self.info.get("image_size") or self.train_images.shape[1])


def prepared_dir(workdir) -> Path:
    """folds/ of a finished `comp prepare`, or the error that says to run it."""
    out = folds_dir(workdir)
    if not (out / "prepare.json").exists():
        raise CompError(f"{out / 'prepare.json'} not found: run `comp prepare --data ...` in "
                        f"{Path(workdir).resolve()} (or pass --workdir)")
    return out


def load_prepared(workdir) -> Prepared:
    workdir = Path(workdir)
    out = prepared_dir(workdir)
    info = read_json(out / "prepare.json")
    folds = pd.read_csv(out / "folds.csv", dtype={"id": str, "label": str, "path": str}, keep_default_na=False)
    test = pd.read_csv(out / "test.csv", dtype={"id": str, "path": str}, keep_default_na=False)
    for table, name, needed in ((folds, "folds.csv", ("id", "path", "label", "fold")), (test, "test.csv", ("id", "path"))):
        if missing := [c for c in needed if c not in table.columns]:
            raise CompError(f"{out / name}: column(s) {', '.join(missing)} missing; re-run `comp prepare`")
    label_map = LabelMap.load(out / "labels.json")
    cache = info.get("cache")  # None after --no-cache
    train_images = cache_mod.open_cache(workdir / cache["train"]) if cache else None
    test_images = cache_mod.open_cache(workdir / cache["test"]) if cache else None
    fingerprints = info.get("fingerprints") or cache  # older prepare.json kept them in "cache"
    if (ids_fingerprint(folds.id) != fingerprints["train_fingerprint"]
            or ids_fingerprint(test.id) != fingerprints["test_fingerprint"]
            or (cache and (len(train_images) != len(folds) or len(test_images) != len(test)))):
        raise CompError(f"{out}: folds.csv/test.csv do not match prepare.json or the image cache; "
                        f"re-run `comp prepare`")
    if label_map.hash != info["label_hash"]:
        raise CompError(f"{out / 'labels.json'} does not match prepare.json; re-run `comp prepare`")
    return Prepared(workdir, folds, test, label_map, train_images, test_images, info)
