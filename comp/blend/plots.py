"""PNG figures for `comp report` (confusion matrix, training curves, blend comparison) and `comp tune`
(optimization history, parameter importance).

Figures are built with the object API on an Agg canvas (no pyplot, so no global state and
no display needed) and written atomically like every other comp output.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..io import atomic_path

DPI = 110
MAX_TICK_CLASSES = 30  # beyond this, tick labels overlap whatever the figure size
MAX_ANNOTATED_CLASSES = 15  # write the value in each cell only while cells are big enough
MAX_NAME_CHARS = 22
BLEND_COLOUR, RUN_COLOUR = "#1f77b4", "#9e9e9e"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" text chunk: the HTML page should carry no URLs, not even inside images.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, path: Path) -> bytes:
    """Write the figure atomically; the bytes are returned so the HTML page embeds the same image."""
    data = png_bytes(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return data


def short_name(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS - 1] + "…"


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Row-normalised confusion matrix: rows are true classes, columns predictions."""
    n = len(class_names)
    side = float(np.clip(3.0 + 0.42 * n, 6.0, 14.0))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n > MAX_TICK_CLASSES:
        ax.set_xticks([])
        ax.set_yticks([])
        title += f"\n({n} classes: tick labels dropped; see per_class.csv)"
    else:
        names = [short_name(c) for c in class_names]
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), names)
    if n <= MAX_ANNOTATED_CLASSES:
        for (i, j), value in np.ndenumerate(matrix):
            if value >= 0.005:  # leave empty cells empty: the pattern reads faster
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves_figure(history: pd.DataFrame, run_name: str, kept_epochs: dict[int, float] | None = None) -> Figure:
    """Three panels from history.csv: train/val loss, val accuracy, lr; one colour per fold; a star on the
    epoch whose weights each fold kept (kept_epochs: fold -> epoch)."""
    fig = new_figure(15.0, 4.4)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    # markers while points are few, so a 1-epoch run still shows; hollow markers are validation
    marker = "o" if history.groupby("fold").size().max() <= 30 else None
    fold_handles = []
    for i, (fold, rows) in enumerate(history.groupby("fold")):
        colour, label = f"C{i % 10}", f"fold {fold}"
        validated = rows.dropna(subset=["val_accuracy"])  # --val-every > 1 leaves epochs unvalidated
        loss_ax.plot(rows.epoch, rows.train_loss, color=colour, marker=marker, ms=3)
        loss_ax.plot(validated.epoch, validated.val_loss, color=colour, marker=marker, ms=4, ls="--", mfc="white")
        acc_ax.plot(validated.epoch, validated.val_accuracy, color=colour, marker=marker, ms=4, mfc="white")
        lr_ax.plot(rows.epoch, rows.lr, color=colour, marker=marker, ms=3)
        fold_handles.append(Line2D([], [], color=colour, label=label))
        kept = (kept_epochs or {}).get(int(fold))
        if kept is not None and kept in set(validated.epoch):
            acc_ax.plot([kept], validated.val_accuracy[validated.epoch == kept], marker="*", ms=13, color=colour,
                        markeredgecolor="black", ls="none")
    style_handles = [Line2D([], [], color="black", marker=marker, ms=3, label="train"),
                     Line2D([], [], color="black", marker=marker, ms=4, ls="--", mfc="white", label="val")]
    loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="val accuracy (★ the kept weights)", xlabel="epoch", ylabel="accuracy")
    lr_ax.set(title="learning rate", xlabel="epoch", ylabel="lr")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    loss_ax.legend(handles=fold_handles + style_handles, fontsize=8)
    acc_ax.legend(handles=fold_handles, fontsize=8)
    first, last = history.epoch.min(), history.epoch.max()
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if last - first < 3:  # else autoscaling zooms into a sliver around one epoch
            ax.set_xlim(first - 0.5, last + 0.5)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_name}: training curves per fold")
    fig.tight_layout()
    return fig


def blends_figure(labels: list[str], accuracies: list[float], is_blend: list[bool], title: str) -> Figure:
    """Horizontal bars, best at the top; the x axis is zoomed so close scores stay distinguishable."""
    order = np.argsort(accuracies, kind="stable")  # barh draws the first bar at the bottom
    acc = np.asarray(accuracies, dtype=float)[order]
    fig = new_figure(8.5, 1.2 + 0.42 * len(acc))
    ax = fig.add_subplot()
    colours = [BLEND_COLOUR if is_blend[i] else RUN_COLOUR for i in order]
    bars = ax.barh(range(len(acc)), acc, color=colours)
    ax.set_yticks(range(len(acc)), [labels[i] for i in order])
    spread = max(acc.max() - acc.min(), 0.02)
    low = max(0.0, acc.min() - spread)
    ax.set_xlim(low, min(1.0, acc.max()) + 0.3 * spread)
    ax.bar_label(bars, labels=[f"{a:.4f}" for a in acc], padding=3, fontsize=9)
    ax.set_xlabel(f"OOF accuracy (axis starts at {low:.3f})")
    ax.set_title(title)
    ax.legend(handles=[Patch(color=BLEND_COLOUR, label="blend"), Patch(color=RUN_COLOUR, label="single run")],
              loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def tune_history_figure(study) -> Figure:
    """Each trial's score (pruned ones at their last report) and the best so far."""
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               marker="x", color="grey", label="pruned (last reported)", zorder=2)
    best, xs, ys = -np.inf, [], []
    for t in done:
        best = max(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="val accuracy", title=f"{study.study_name}: optimization history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def tune_importance_figure(study) -> Figure:
    """optuna's parameter importances as bars; ValueError when no parameter varied."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna warns about few trials; the plot says what it has
        importances = optuna.importance.get_param_importances(study)
    if not importances:
        raise ValueError("no parameter varied across the complete trials")
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance", title=f"{study.study_name}: parameter importance ({len(study.trials)} trials)")
    fig.tight_layout()
    return fig
