"""`comp report`: what the runs did, side by side, in tables, PNGs and one HTML page.

Reads runs/<name>/fold<K>/ (see comp.runs) and writes, into runs/ or --out:
  leaderboard.csv   one row per run, scored on its own OOF rows, best OOF accuracy first
  blends.csv        every blend method scored on the OOF rows the runs share (nested when learned)
  per_class.csv     precision / recall / F1 / support per class name, best run and best blend
  confusion_<run>.png, curves_<run>.png, confusion_blend-<method>.png, blends.png
  report.html       all of the above in one self-contained page (images inlined as base64)
Class indices become names only through folds/labels.json, as everywhere else in comp.
"""
from __future__ import annotations

import base64
import html
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from .. import ensemble
from ..io import CompError, write_csv, write_text
from ..labels import LabelMap
from ..prepare.folds import current_split, folds_dir, ids_fingerprint, prepared_dir
from ..runs import Run, find_runs, run_label_use, runs_root
from . import plots
from .blend import METHODS, Aligned, align, check_runs, run_scores, score_blend

# With default options (no --top, no --temperature) only these fit anything on OOF labels,
# so only these need nested scoring, and nested scoring needs at least 2 folds.
LEARNED_METHODS = ("select", "stack")


@dataclass
class ReportOptions:
    runs: list[str] | None = None  # run names or globs; None: every complete run
    run: str | None = None  # the run for the per-class table and first plots; None: the leaderboard's best
    methods: str | None = None  # comma-separated blend methods; None: all of blend.METHODS
    out: str | None = None  # output folder; None: <workdir>/runs
    workdir: str = "."


def report(opts: ReportOptions) -> dict:
    """Build every table and figure; returns {"paths": {file name: Path}, tables..., notes}."""
    started = time.time()
    workdir = Path(opts.workdir)
    methods = parse_methods(opts.methods)
    out = Path(opts.out) if opts.out else runs_root(workdir)
    label_map = LabelMap.load(prepared_dir(workdir) / "labels.json")
    test_ids = _test_ids(workdir)
    runs = find_runs(workdir, opts.runs)
    check_runs(runs, label_map, current_split(workdir))
    class_names = list(label_map.classes)
    notes: list[str] = []

    board = leaderboard(runs, label_map.num_classes)
    print_table("Leaderboard (each run on its own OOF rows)", board)
    by_name = {run.name: run for run in runs}
    ranked = [by_name[name] for name in board.run]
    chosen = pick_run(ranked, opts.run)

    flagged = board[board.oof_labels_used != ""]
    if len(flagged):
        notes.append("optimistic OOF scores (training used the held-out fold's labels; oof_labels_used): "
                     + ", ".join(f"{r.run} ({r.oof_labels_used})" for r in flagged.itertuples()))
    group, left_out = common_rows_group(ranked)
    if left_out:
        notes.append(f"left out of the blend comparison (their OOF rows differ from {group[0].name}'s): "
                     + ", ".join(f"{r.name} (folds {r.fold_ids})" for r in left_out))
    aligned = align(group, test_ids)
    blends, honest_scores, skipped = compare_blends(aligned, methods, label_map.num_classes)
    # a blend of runs that used their OOF labels is as optimistic as they are, nested or not
    label_use = ",".join(sorted({use for run in group for use in run_label_use(run).split(",") if use}))
    if len(blends):
        blends["oof_labels_used"] = label_use
    notes += skipped
    for note in notes:
        print(f"note: {note}")
    print_table(f"Blends of {len(group)} run(s) on {len(aligned.y)} shared OOF rows (accuracy/macro-F1/log loss: "
                f"nested when learned; {_honesty(label_use)})", blends)

    # Per class: the chosen run on its own rows, the best blend on the shared rows.
    best_blend = blends.method.iloc[0] if len(blends) else None
    predictions = {chosen.name: (chosen.oof_labels, chosen.oof_logits.argmax(1))}
    if best_blend:
        predictions[f"blend:{best_blend}"] = (aligned.y, honest_scores[best_blend].argmax(1))
    per_class = per_class_table(predictions, class_names)
    print_per_class(predictions, class_names)

    paths = {}
    for name, table in (("leaderboard.csv", board), ("blends.csv", blends), ("per_class.csv", per_class)):
        paths[name] = out / name
        write_csv(out / name, table)
    png, confusions = write_figures(out, board, ranked, aligned, blends, honest_scores, class_names, notes)
    paths.update({name: out / name for name in png})

    page = render_html(workdir, label_map, board, blends, per_class, png, chosen, ranked, best_blend, notes)
    paths["report.html"] = out / "report.html"
    write_text(out / "report.html", page)
    print(f"\nwrote {len(paths)} files to {out} in {time.time() - started:.1f}s; open {out / 'report.html'} "
          f"in a browser (live curves: tensorboard --logdir {runs_root(workdir)})")
    return {"paths": paths, "leaderboard": board, "blends": blends, "per_class": per_class,
            "confusion": confusions, "best_run": chosen.name, "best_blend": best_blend,
            "blend_runs": [r.name for r in group], "left_out": [r.name for r in left_out], "notes": notes}


def parse_methods(text: str | None) -> list[str]:
    if text is None:
        return list(METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise CompError(f"--methods {text!r}: give a comma-separated list drawn from {','.join(METHODS)}")
    return list(dict.fromkeys(methods))


def _test_ids(workdir: Path) -> np.ndarray:
    path = folds_dir(workdir) / "test.csv"
    if not path.exists():
        raise CompError(f"{path} not found: run `comp prepare --data ...` in {workdir.resolve()}")
    return pd.read_csv(path, dtype={"id": str}, keep_default_na=False).id.to_numpy().astype(str)


def leaderboard(runs: list[Run], num_classes: int) -> pd.DataFrame:
    """One row per run, scored on all of its OOF rows; best OOF accuracy first, then lower log loss."""
    rows = []
    for run in runs:
        probs, y = ensemble.softmax(run.oof_logits), run.oof_labels
        metrics = [f.metrics for f in run.folds]
        tta = {str(m.get("tta", f.config.get("tta"))) for m, f in zip(metrics, run.folds)}
        rows.append({"run": run.name, "arch": run.folds[0].config.get("arch", "?"), "folds": len(run.folds),
                     "fold_ids": " ".join(map(str, run.fold_ids)), "oof_rows": len(y),
                     **ensemble.score_probs(probs, y, num_classes),
                     "mean_weights_epoch": float(np.nanmean([_weights_epoch(m) for m in metrics])),
                     "train_seconds": float(sum(m.get("train_seconds", 0.0) for m in metrics)),
                     "tta": "/".join(sorted(tta)), "oof_labels_used": run_label_use(run)})
    board = pd.DataFrame(rows)
    # Rounded keys so float noise never decides a tie; then more OOF rows (more folds) ranks first.
    keys = board.assign(acc_key=board.accuracy.round(9), loss_key=board.log_loss.round(9))
    order = keys.sort_values(["acc_key", "loss_key", "oof_rows", "run"], ascending=[False, True, False, True]).index
    return board.loc[order].reset_index(drop=True)


def pick_run(ranked: list[Run], name: str | None) -> Run:
    if name is None:
        return ranked[0]
    for run in ranked:
        if run.name == name:
            return run
    raise CompError(f"--run {name}: no complete run of that name among {', '.join(r.name for r in ranked)} "
                    f"(it must also match --runs, if given)")


def common_rows_group(ranked: list[Run]) -> tuple[list[Run], list[Run]]:
    """The largest set of runs covering identical OOF rows (ties: the set holding the better run)."""
    groups: dict[str, list[Run]] = {}
    for run in ranked:
        groups.setdefault(ids_fingerprint(np.sort(run.oof_ids)), []).append(run)
    group = max(groups.values(), key=len)  # max keeps the first of equals: rank order decides ties
    return group, [run for run in ranked if run not in group]


def compare_blends(aligned: Aligned, methods: list[str], num_classes: int):
    """Score each method; returns (table best first, {method: honest OOF scores}, skip notes)."""
    n_folds = len(np.unique(aligned.fold))
    rows, honest, skipped = [], {}, []
    for method in methods:
        if method in LEARNED_METHODS and n_folds < 2:
            skipped.append(f"blend {method} skipped: it learns from OOF labels and needs at least 2 folds per "
                           f"run to be scored honestly (these runs have {n_folds}); train more folds")
            continue
        result, _, scores = score_blend(aligned, method, num_classes)
        honest[method] = scores
        rows.append({"method": method, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
                     "log_loss": result["log_loss"], "insample_accuracy": result["insample_accuracy"],
                     "nested": result["nested"]})
    columns = ["method", "accuracy", "macro_f1", "log_loss", "insample_accuracy", "nested"]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table = table.sort_values(["accuracy", "log_loss"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True), honest, skipped


def per_class_table(predictions: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str]) -> pd.DataFrame:
    """One row per class name; for each source (run or blend) its precision, recall, F1 and support."""
    table = pd.DataFrame({"class": class_names})
    for source, (y, predicted) in predictions.items():
        precision, recall, f1, support = precision_recall_fscore_support(
            y, predicted, labels=range(len(class_names)), zero_division=0)
        table[f"{source} precision"], table[f"{source} recall"] = precision, recall
        table[f"{source} f1"], table[f"{source} support"] = f1, support
    return table


def print_per_class(predictions: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str]) -> None:
    for source, (y, predicted) in predictions.items():
        print(f"\nPer class: {source}\n" + classification_report(
            y, predicted, labels=range(len(class_names)), target_names=class_names, digits=4, zero_division=0))


def write_figures(out, board, ranked, aligned, blends, honest_scores, class_names, notes):
    """Every PNG, written as soon as it is drawn; returns ({file name: PNG bytes}, {source: confusion})."""
    png, confusions = {}, {}
    accuracy = dict(zip(board.run, board.accuracy))
    n = len(class_names)
    for run in ranked:
        confusions[run.name] = confusion(run.oof_labels, run.oof_logits.argmax(1), n)
        name = f"confusion_{safe_name(run.name)}.png"
        title = f"{run.name}: OOF accuracy {accuracy[run.name]:.4f}"
        png[name] = plots.save_png(plots.confusion_figure(confusions[run.name], class_names, title), out / name)
        history = run_history(run)
        if history is None:
            notes.append(f"{run.name}: no history.csv in its fold folders, so no training curves")
            print(f"note: {notes[-1]}")
            continue
        kept = {f.fold: _weights_epoch(f.metrics) for f in run.folds}
        name = f"curves_{safe_name(run.name)}.png"
        png[name] = plots.save_png(plots.curves_figure(history, run.name, kept), out / name)
    if len(blends):
        best = blends.iloc[0]
        confusions[f"blend:{best.method}"] = confusion(aligned.y, honest_scores[best.method].argmax(1), n)
        name = f"confusion_blend-{best.method}.png"
        chosen = f"; the best of {len(blends)} methods on these rows" if len(blends) > 1 else ""
        title = (f"blend {best.method} of {len(aligned.runs)} runs: OOF accuracy {best.accuracy:.4f}\n"
                 f"({_honesty(best.oof_labels_used)}{chosen})")
        png[name] = plots.save_png(plots.confusion_figure(confusions[f"blend:{best.method}"], class_names, title),
                                   out / name)
    png["blends.png"] = plots.save_png(blends_chart(aligned, blends, n), out / "blends.png")
    return png, confusions


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix: [i, j] = share of true class i predicted as j.
    Each row sums to 1; a class with no OOF rows gets a row of zeros (not NaN)."""
    counts = confusion_matrix(y_true, y_pred, labels=range(num_classes)).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def run_history(run: Run) -> pd.DataFrame | None:
    """history.csv of every fold that has one, with a fold column; None when no fold has one."""
    frames = [pd.read_csv(f.path / "history.csv").assign(fold=f.fold)
              for f in run.folds if (f.path / "history.csv").exists()]
    return pd.concat(frames, ignore_index=True) if frames else None


def _weights_epoch(metrics: dict) -> float:
    """The epoch whose weights the fold kept (the best one with early stopping, else the last); NaN if unknown."""
    epoch = metrics.get("weights_epoch", metrics.get("best_epoch"))
    return float(epoch) if epoch is not None and epoch >= 0 else float("nan")


def _honesty(label_use: str) -> str:
    return f"optimistic: the runs used their OOF labels ({label_use})" if label_use else "honest"


def blends_chart(aligned: Aligned, blends: pd.DataFrame, num_classes: int):
    singles = run_scores(aligned, num_classes)  # on the same shared rows as the blends
    labels = [f"blend {m}" for m in blends.method] + [f"run {r['run']}" for r in singles]
    accuracies = list(blends.accuracy) + [r["accuracy"] for r in singles]
    is_blend = [True] * len(blends) + [False] * len(singles)
    label_use = blends.oof_labels_used.iloc[0] if len(blends) else ""
    title = f"OOF accuracy on {len(aligned.y)} shared rows ({_honesty(label_use)})"
    return plots.blends_figure(labels, accuracies, is_blend, title)


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Human formatting for printing and HTML: seconds as h/m/s, fold ids kept as text."""
    shown = table.copy()
    if "train_seconds" in shown:
        shown["train_seconds"] = shown.train_seconds.map(_duration)
        shown = shown.rename(columns={"train_seconds": "train_time"})
    if "mean_weights_epoch" in shown:
        shown["mean_weights_epoch"] = shown.mean_weights_epoch.map(lambda v: f"{v:.1f}")
    if "class" in shown:  # per-class "<source> <metric>" columns: one header spans each source
        shown.columns = pd.MultiIndex.from_tuples([tuple(c.rsplit(" ", 1)) if " " in c else ("", c)
                                                   for c in shown.columns])
    return shown


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def print_table(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(_display(table).to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(table) else "  (none)")


# ----------------------------------------------------------------------------- HTML
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f4f6f8; } th[colspan] { text-align: center; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 6px 0; }
.note { color: #8a5a00; } .muted { color: #777; } details { margin: 8px 0; } summary { cursor: pointer; }
"""


def _table_html(table: pd.DataFrame) -> str:
    if not len(table):
        return "<p class='muted'>(none)</p>"
    return _display(table).to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}", na_rep="")


def _img_html(png: dict[str, bytes], name: str) -> str:
    if name not in png:
        return ""
    data = base64.b64encode(png[name]).decode("ascii")
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"


def _run_section(run: Run, png: dict[str, bytes]) -> str:
    name = safe_name(run.name)
    return _img_html(png, f"curves_{name}.png") + _img_html(png, f"confusion_{name}.png")


def render_html(workdir, label_map, board, blends, per_class, png, chosen, ranked, best_blend, notes) -> str:
    """One page, no server, no network: inline CSS, images as data URIs, no scripts or links."""
    esc = html.escape
    others = "".join(f"<details><summary>{esc(r.name)}</summary>{_run_section(r, png)}</details>"
                     for r in ranked if r is not chosen)
    blend_img = _img_html(png, f"confusion_blend-{best_blend}.png") if best_blend else ""
    parts = [
        f"<h1>comp report: {esc(Path(workdir).resolve().name)}</h1>",
        f"<p class='muted'>{time.strftime('%Y-%m-%d %H:%M')} &middot; {len(ranked)} runs &middot; "
        f"{label_map.num_classes} classes &middot; label map {esc(label_map.hash)}</p>",
        "".join(f"<p class='note'>note: {esc(n)}</p>" for n in notes),
        "<h2>Leaderboard</h2><p class='muted'>Each run scored on its own out-of-fold rows.</p>", _table_html(board),
        "<h2>Blends</h2><p class='muted'>Accuracy, macro-F1 and log loss are honest: methods that learn from "
        "labels are fit on the other folds and scored on each held-out fold. In-sample accuracy is optimistic."
        + (f" The runs used their held-out labels ({esc(blends.oof_labels_used.iloc[0])}), so every blend score "
           "here is optimistic too." if len(blends) and blends.oof_labels_used.iloc[0] else "")
        + "</p>", _img_html(png, "blends.png"), _table_html(blends),
        "<h2>Per class</h2><p class='muted'>The run on its own OOF rows; the best blend on the shared rows "
        "(its scores as above; choosing the best method on these rows flatters it a little).</p>",
        _table_html(per_class),
        f"<h2>Run {esc(chosen.name)}</h2>", _run_section(chosen, png),
        f"<h2>Best blend: {esc(best_blend)}</h2>{blend_img}" if best_blend else "",
        f"<h2>Other runs</h2>{others}" if others else "",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>comp report</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
