"""`comp export`: a trained blend in one folder that predicts new images anywhere (comp/deploy/infer.py loads it).

<bundle>/
  bundle.json     comp version; per run: architecture and its arguments, image size, TTA, and per fold the
                  weights file and the normalisation it was trained with; the blend (method, fitted weights,
                  temperatures, stacker, class prior); the decoding rules prepare used; the submission format
  labels.json     the label map (class order and how labels are written)
  runs/<run>/fold<K>.pt   a plain state dict (loaded with weights_only=True), fp32 or bf16 (--half)
  wheels/         with --wheels: comp and what `comp infer` imports (comp/deploy/wheels.py)
  manifest.json   sha256 and size of every file above: load_bundle refuses a bundle that differs

The blend is fit by the same code as `comp blend` (comp.blend.blend.fit_blend), so a bundle's predictions on
the competition's test images are the labels `comp blend` writes from the same runs.
"""
from __future__ import annotations

import os
import shlex
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..blend.blend import BlendOptions, FittedBlend, fit_blend
from ..io import CompError, atomic_path, load_torch, plain_name, read_json, replace_dir, write_json
from ..prepare import staging
from ..prepare.folds import folds_dir, sample_submission_path
from ..version import __version__
from .manifest import BUNDLE_FILE, FORMAT, LABELS_FILE, say_removed, write_manifest



@dataclass
class ExportOptions:
    name: str
    runs: list[str] | None = None
    method: str = "soft"
    top: str | None = None
    temperature: bool = False
    metric: str = "logloss"
    out: str | None = None
    half: bool = False
    zip: bool = False
    wheels: str | None = None  # None, "all" or "comp"
    pins: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    force: bool = False
    workdir: str = "."


def export(opts: ExportOptions) -> Path:
    if opts.method == "rank":  # ranks a class over all the rows it is given: one image alone has no ranks
        raise CompError("--method rank ranks each class over the whole test set, so a bundle could not predict "
                        "images a few at a time; export a soft, logit, hard, select or stack blend")
    out = Path(opts.out) if opts.out else Path(opts.workdir) / "bundles" / plain_name(opts.name, "comp export NAME")
    if out.exists() and not opts.force:
        raise CompError(f"{out} exists; pass --force to replace it, or --out another folder")
    if out.exists() and not (out / BUNDLE_FILE).is_file():  # --force replaces bundles, never other folders
        raise CompError(f"{out} is not a bundle (it has no {BUNDLE_FILE}), so --force will not replace it; "
                        f"--out another folder")
    fitted = fit_blend(BlendOptions(opts.method, opts.runs, opts.name, opts.top, opts.temperature, opts.metric,
                                    opts.workdir))
    say_removed(staging.remove_stale(out.parent), f"half-written export(s) in {out.parent}")
    stage = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        spec = _write_contents(stage, fitted, opts)
        write_manifest(stage)
        replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"wrote {out}: {len(spec['runs'])} run(s), {sum(len(r['folds']) for r in spec['runs'])} fold model(s), "
          f"blend {opts.method}, {_megabytes(out)} MB{' (bf16 weights)' if opts.half else ''}")
    if opts.zip:
        archive = _zip(out)
        print(f"wrote {archive} ({archive.stat().st_size / 1e6:.1f} MB): upload it as a Kaggle dataset")
    print(f"predict new images with:\n  comp infer {shlex.quote(str(out))} --images TEST_DIR --out submission.csv")
    return out


def _write_contents(root: Path, fitted: FittedBlend, opts: ExportOptions) -> dict:
    root.mkdir(parents=True)
    fitted.label_map.save(root / LABELS_FILE)
    used = _used_runs(fitted.blender)
    runs = [{**_export_run(root, run, opts.half), "blend_index": i} for i, run in enumerate(fitted.aligned.runs)
            if i in used]
    unused = [run.name for i, run in enumerate(fitted.aligned.runs) if i not in used]
    if unused:
        print(f"left out of the bundle (the blend gives them no weight): {', '.join(unused)}")
    spec = {"format": FORMAT, "comp_version": __version__, "name": opts.name, "runs": runs,
            "blend": _blend_spec(fitted), "decode": _decode_spec(fitted.workdir, runs),
            "submission": _submission_spec(fitted), "weights_dtype": "bfloat16" if opts.half else "float32"}
    if opts.wheels:
        from .wheels import collect_wheels

        from ..weights import BACKBONES

        needs_timm = any(r["arch"].startswith("timm/") or r["arch"] in BACKBONES for r in runs)  # pretrained: timm's
        spec["wheels"] = collect_wheels(root / "wheels", opts.wheels, needs_timm, opts.pins, opts.find_links)
    write_json(root / BUNDLE_FILE, spec)
    return spec


def _used_runs(blender) -> set[int]:
    """Runs the blend reads: kept by --top and, except for the stacker, given a weight above zero."""
    if blender.stacker is not None:
        return {int(i) for i in blender.keep}
    return {int(i) for i in blender.keep if blender.weights[i] > 0}


def _export_run(root: Path, run, half: bool) -> dict:
    import torch

    from ..io import save_torch
    from ..models import without_weight_kwargs

    config = run.folds[0].config
    folds = []
    for fold in run.folds:
        model_file = fold.path / "model.pt"
        if not model_file.exists():
            raise CompError(f"{model_file} not found: run {run.name} fold {fold.fold} has no saved weights; "
                            f"retrain it or leave the run out with --runs")
        state = load_torch(model_file, map_location="cpu", weights_only=True)["state_dict"]
        if half:
            state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
        rel = f"runs/{run.name}/fold{fold.fold}.pt"
        save_torch(root / rel, state)
        folds.append({"fold": fold.fold, "file": rel, "mean": fold.config["mean"], "std": fold.config["std"],
                      "tta": fold.config.get("tta", "none")})  # each fold's own: --budget may give folds fewer views
    kwargs = without_weight_kwargs(config.get("model_kwargs", {}))  # a bundle's weights are its own files
    return {"name": run.name, "arch": config["arch"], "model_kwargs": kwargs, "num_classes": config["num_classes"],
            "img_size": config["img_size"], "tta": config.get("tta", "none"), "label_hash": config["label_hash"],
            "folds": folds}


def _blend_spec(fitted: FittedBlend) -> dict:
    blender = fitted.blender
    prior = np.bincount(fitted.aligned.y, minlength=fitted.label_map.num_classes) / len(fitted.aligned.y)
    spec = {"method": blender.method, "combine_method": blender.combine_method, "n_runs": blender.n_runs,
            "n_classes": blender.n_classes, "keep": blender.keep, "weights": blender.weights,
            "temperatures": blender.temperatures, "learned": blender.learned, "prior": prior,
            "oof": {k: fitted.result[k] for k in ("accuracy", "macro_f1", "log_loss")}}
    if blender.stacker is not None:
        stack = blender.stacker
        spec["stacker"] = {"mean": stack.scaler.mean_, "scale": stack.scaler.scale_, "var": stack.scaler.var_,
                           "coef": stack.clf.coef_, "intercept": stack.clf.intercept_, "classes": stack.clf.classes_,
                           "n_runs": stack.n_runs, "n_classes": stack.n_classes}
    return spec


def _decode_spec(workdir: Path, runs: list[dict]) -> dict:
    info = read_json(folds_dir(workdir) / "prepare.json")
    size = int(info.get("image_size") or info["cache"]["size"])
    wrong = [r["name"] for r in runs if r["img_size"] != size]
    if wrong:
        raise CompError(f"run(s) {', '.join(wrong)} were trained at another image size than folds/prepare.json's "
                        f"{size}px; export runs of the current preparation")
    fit = info.get("fit", "squash")  # preparations before 2026-12-08 squashed other shapes
    return {"decoder": "comp.prepare.cache.load_rgb", "size": size, "fit": fit,
            "resize": ("the centre square, bicubic to size x size" if fit == "crop" else
                       "bicubic to size x size") + " when not already",
            "modes": "RGBA, LA and P with transparency composited on white, then every mode converted to RGB",
            "sizes_seen": info.get("sizes_seen", {}), "distinct_sizes": info.get("distinct_sizes"),
            "modes_seen": info.get("modes_seen", {})}


def _submission_spec(fitted: FittedBlend) -> dict:
    """How `comp prepare` matched sample ids to test files: with the extension ("name") or without ("stem")."""
    import pandas as pd

    test = pd.read_csv(folds_dir(fitted.workdir) / "test.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(sample_submission_path(fitted.workdir), dtype=str, keep_default_na=False, nrows=5)
    names = [os.path.basename(p) for p in test.path]
    id_from = "name" if all(i == n for i, n in zip(test.id, names)) else "stem"
    return {"columns": list(sample.columns), "id_col": fitted.layout["sub_id_col"],
            "label_col": fitted.layout["sub_label_col"], "id_from": id_from,
            "label_kind": fitted.label_map.label_kind, "pad_width": fitted.label_map.pad_width,
            "example_rows": sample.head(3).to_dict("records")}


def _megabytes(root: Path) -> str:
    return f"{sum(p.stat().st_size for p in root.rglob('*') if p.is_file()) / 1e6:.1f}"


def _zip(folder: Path) -> Path:
    archive = folder.with_name(folder.name + ".zip")  # not with_suffix: bundle "v1.5" is not "v1"
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:  # weights do not compress
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    out.write(path, path.relative_to(folder).as_posix())
    return archive
