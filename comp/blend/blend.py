"""`comp blend`: runs -> one submission, scored honestly on out-of-fold rows.

Each run's test logits are first averaged over its folds; then runs are combined by
the chosen method (comp.ensemble). Anything fit on labels (weights, stacker,
temperatures, top-k choice) is scored nested: fit on the other folds, scored on each
held-out fold. Class indices become names only through folds/labels.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ensemble
from ..io import CompError, plain_name, read_json, write_csv, write_json
from ..labels import LabelMap
from ..prepare.folds import current_split, prepared_dir, sample_submission_path
from ..runs import Run, check_trained_on, find_runs, run_label_use
from .submit import kaggle_command, validate_submission

METHODS = ("soft", "logit", "hard", "rank", "select", "stack")


@dataclass
class BlendOptions:
    method: str = "soft"
    runs: list[str] | None = None
    name: str | None = None
    top: str | None = None
    temperature: bool = False
    metric: str = "logloss"
    workdir: str = "."


@dataclass
class Aligned:
    """Runs lined up on the same OOF rows and test rows."""
    runs: list[Run]
    oof_ids: np.ndarray
    oof_logits: np.ndarray  # (R, N, C)
    y: np.ndarray
    fold: np.ndarray
    test_logits: np.ndarray  # (R, M, C)


def check_runs(runs: list[Run], label_map: LabelMap, split: str | None = None) -> None:
    """The index-versus-name guard, fold by fold: every fold must have been trained on this exact
    label map; and the split guard: on this fold split (`split`, from folds.csv), or its
    "out-of-fold" rows would include rows it trained on."""
    wrong = [f"{r.name} ({r.label_hash})" for r in runs if r.label_hash != label_map.hash]
    if wrong:
        raise CompError(f"label map mismatch: folds/labels.json has hash {label_map.hash}, but run(s) "
                        f"{', '.join(wrong)} were trained with another class order; retrain them or "
                        f"leave them out with --runs")
    for run in runs:
        for f in run.folds:
            check_trained_on(f.config, f.path, label_map.hash, split)
            if f.oof_logits.shape[1] != label_map.num_classes:
                raise CompError(f"{f.path}: {f.oof_logits.shape[1]} classes, but folds/labels.json has "
                                f"{label_map.num_classes}; retrain that fold or leave the run out with --runs")


def align(runs: list[Run], test_ids: np.ndarray) -> Aligned:
    base = runs[0]
    order = np.argsort(base.oof_ids, kind="stable")
    ids = base.oof_ids[order]
    logits, test_logits = [], []
    for run in runs:
        run_order = np.argsort(run.oof_ids, kind="stable")
        if len(run.oof_ids) != len(ids) or not np.array_equal(run.oof_ids[run_order], ids):
            raise CompError(f"runs {base.name} (folds {base.fold_ids}) and {run.name} (folds {run.fold_ids}) "
                            f"cover different OOF rows; blend runs with the same folds, or pick them with --runs")
        for f in run.folds:
            if not np.array_equal(f.test_ids, test_ids):
                raise CompError(f"{f.path}: its test ids differ from folds/test.csv; re-predict or retrain it")
        logits.append(run.oof_logits[run_order])
        test_logits.append(run.test_logits)
    return Aligned(runs, ids, np.stack(logits), base.oof_labels[order], base.oof_fold[order], np.stack(test_logits))


def run_scores(aligned: Aligned, num_classes: int) -> list[dict]:
    rows = []
    for run, z in zip(aligned.runs, aligned.oof_logits):
        rows.append({"run": run.name, "folds": run.fold_ids,
                     **ensemble.score_probs(ensemble.softmax(z), aligned.y, num_classes),
                     "tta": "/".join(dict.fromkeys(str(f.config.get("tta")) for f in run.folds)),  # per fold (--budget)
                     "oof_labels_used": run_label_use(run)})
    return rows


def score_blend(aligned: Aligned, method: str, num_classes: int, **opts):
    """Honest OOF score of a blend: nested when anything is learned from labels."""
    blender = ensemble.fit(method, aligned.oof_logits, aligned.y, **opts)
    insample = blender.predict(aligned.oof_logits)
    result = {"method": method, "insample_accuracy": ensemble.accuracy(insample, aligned.y),
              "insample_log_loss": ensemble.log_loss(insample, aligned.y),
              "weights": None if blender.weights is None else blender.weights.tolist()}
    if blender.learned and len(np.unique(aligned.fold)) < 2:
        learner = (f"--method {method}" if method in ("select", "stack") else
                   " and ".join(flag for flag, on in (("--temperature", opts.get("temperature")),
                                                      ("--top", opts.get("top") is not None)) if on))
        raise CompError(f"{learner} learns from OOF labels and needs at least 2 folds per run to score honestly; "
                        f"train more folds (--fold all), or blend without it")
    if blender.learned:
        nested = ensemble.nested_oof(aligned.oof_logits, aligned.y, aligned.fold, method, **opts)
        honest = nested.oof_scores
    else:
        honest = insample
    result.update(**ensemble.score_probs(honest, aligned.y, num_classes), nested=blender.learned)
    return result, blender, honest


@dataclass
class FittedBlend:
    """What `comp blend` and `comp export` share: the runs lined up, scored, and the blend fit on them."""
    workdir: Path
    label_map: LabelMap
    layout: dict
    test_ids: np.ndarray
    aligned: Aligned
    per_run: list[dict]
    result: dict
    blender: ensemble.Blender


def fit_blend(opts: BlendOptions) -> FittedBlend:
    if opts.method not in METHODS:
        raise CompError(f"--method {opts.method}: choose one of {', '.join(METHODS)}")
    workdir = Path(opts.workdir)
    folds = prepared_dir(workdir)
    label_map = LabelMap.load(folds / "labels.json")
    prepare_info = read_json(folds / "prepare.json")
    test_ids = pd.read_csv(folds / "test.csv", dtype={"id": str}, keep_default_na=False).id.to_numpy()
    runs = find_runs(workdir, opts.runs)
    check_runs(runs, label_map, current_split(workdir))
    aligned = align(runs, test_ids.astype(str))
    per_run = run_scores(aligned, label_map.num_classes)
    for row in per_run:
        print(f"  run {row['run']:<24} folds {row['folds']}  OOF accuracy {row['accuracy']:.4f}  "
              f"macro-F1 {row['macro_f1']:.4f}  log loss {row['log_loss']:.4f}  (TTA {row['tta']})"
              + (f"  optimistic: used its OOF labels ({row['oof_labels_used']})" if row["oof_labels_used"] else ""))
    # --metric ranks the runs --top keeps and drives select's search
    fit_opts = dict(temperature=opts.temperature, top=_parse_top(opts.top, len(runs)), metric=opts.metric)
    result, blender, _ = score_blend(aligned, opts.method, label_map.num_classes, **fit_opts)
    label_use = sorted({use for row in per_run for use in row["oof_labels_used"].split(",") if use})
    result["oof_labels_used"] = ",".join(label_use)  # the submit message carries it
    tag = ("nested" if result["nested"] else "no parameters fit") + (
        f"; optimistic: runs used their OOF labels ({', '.join(label_use)})" if label_use else
        ", honest" if result["nested"] else "")
    print(f"blend {opts.method}: OOF accuracy {result['accuracy']:.4f} ({tag}; in-sample "
          f"{result['insample_accuracy']:.4f}), macro-F1 {result['macro_f1']:.4f}, log loss {result['log_loss']:.4f}")
    if opts.top is not None:
        print(f"  --top {opts.top} by single-run {opts.metric} on all OOF rows kept: "
              + ", ".join(runs[i].name for i in blender.keep))
    if result["weights"] is not None and len(runs) > 1:
        print("  weights: " + ", ".join(f"{r.name}={w:.3f}" for r, w in zip(runs, result["weights"])))
    return FittedBlend(workdir, label_map, prepare_info["layout"], test_ids, aligned, per_run, result, blender)


def blend(opts: BlendOptions) -> Path:
    # the name is checked before the work, not after it
    given = None if opts.name is None else plain_name(opts.name, "--name").removesuffix(".csv")
    fitted = fit_blend(opts)
    workdir, label_map, result = fitted.workdir, fitted.label_map, fitted.result
    test_scores = fitted.blender.predict(fitted.aligned.test_logits)
    used = fitted.blender.keep if fitted.blender.weights is None else np.flatnonzero(fitted.blender.weights)
    name = given or default_name(opts, len(used))
    sample_path = sample_submission_path(workdir)
    submission = make_submission(fitted.test_ids, test_scores.argmax(1), label_map, sample_path, fitted.layout)
    out = workdir / "submissions" / f"{name}.csv"
    if out.exists():
        print(f"note: replacing {out} (--name NAME keeps both)")
    validate_submission(submission, sample_path, label_map, fitted.layout["sub_id_col"],
                        fitted.layout["sub_label_col"])
    write_csv(out, submission)
    write_json(out.with_suffix(".json"), {"method": opts.method, "options": vars(opts), "blend": result,
                                          "runs": fitted.per_run, "label_hash": label_map.hash,
                                          "rows": len(submission)})
    print(f"wrote {out} ({len(submission)} rows); send it with:\n  {kaggle_command(out, result)}")
    return out


def default_name(opts: BlendOptions, n_kept: int) -> str:
    """soft_3runs, select_5runs_top40%_T: the method, the runs it kept, and what else chose them."""
    top = f"_top{opts.top}" if opts.top is not None else ""
    return f"{opts.method}_{n_kept}runs{top}" + ("_T" if opts.temperature else "")


def make_submission(test_ids, indices, label_map: LabelMap, sample_path: Path, layout: dict) -> pd.DataFrame:
    """The sample submission with its label column replaced: same header, same id order."""
    sample = pd.read_csv(sample_path, dtype=str, keep_default_na=False)
    id_col, label_col = layout["sub_id_col"], layout["sub_label_col"]
    if not np.array_equal(sample[id_col].to_numpy().astype(str), np.asarray(test_ids).astype(str)):
        raise CompError(f"{sample_path}: ids differ from folds/test.csv; re-run `comp prepare`")
    out = sample.copy()
    out[label_col] = label_map.decode(indices)
    return out


def _parse_top(top, n_runs: int):
    if top is None:
        return None
    try:
        ensemble.top_runs([0.0] * n_runs, top)  # validates "30%" / K against the number of runs
    except ValueError as exc:
        raise CompError(f"--top {top}: {exc}") from None
    return top if str(top).endswith("%") else int(top)
