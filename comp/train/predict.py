"""`comp predict`: re-run prediction of a finished run with another TTA.

The result is a new run (default name <run>_tta-<mode>) with the same weights, so a
blend can measure exactly what TTA gains on out-of-fold rows. A run whose oof.npz/test.npz
keep every TTA view's logits (`view_logits`, written by comp train) is re-scored with numpy
for any TTA up to the one it was trained with; otherwise its model predicts again.
"""
from __future__ import annotations

import numpy as np
import torch

from ..io import CompError, link_or_copy, load_torch, plain_name, read_json, write_json, write_npz, write_text
from ..models import create_model, without_weight_kwargs
from ..prepare.folds import load_prepared, split_fingerprint
from ..runs import RunLock, check_trained_on, fold_dir, is_complete, runs_root
from .checkpoint import load_weights
from .feed import make_feed, resolve_loader
from .trainer import pick_device, pick_precision, scores
from .tta import TTA_WEIGHTS, combine_views


def predict_run(workdir, name: str, tta: str, folds: list[int] | None = None, new_name: str | None = None,
                device: str = "auto", batch_size: int = 1024, force: bool = False) -> list[dict]:
    prepared = load_prepared(workdir)
    run_folds = sorted(int(p.name[4:]) for p in (runs_root(workdir) / name).glob("fold*")
                       if is_complete(p)) if (runs_root(workdir) / name).exists() else []
    if not run_folds:
        raise CompError(f"no complete folds of run {name!r} under {runs_root(workdir)}")
    new_name = plain_name(new_name, "--name") if new_name else f"{name}_tta-{tta.replace('+', '')}"
    if new_name == name:
        raise CompError(f"--name {new_name}: the new run needs another name than the run it re-predicts")
    results = []
    for k in folds if folds is not None else run_folds:
        if k not in run_folds:
            raise CompError(f"run {name!r} has no complete fold {k} (complete: {run_folds})")
        dst = fold_dir(workdir, new_name, k)
        if is_complete(dst) and not force:
            if folds is None:  # every fold: one finished before an interrupt is kept, as `train --fold all` does
                print(f"{dst}: already complete, skipping (--force to predict it again)")
                continue
            raise CompError(f"{dst} is already complete; pass --force to predict it again")
        with RunLock(dst):
            (dst / "metrics.json").unlink(missing_ok=True)  # not complete until rewritten
            results.append(_predict_fold(prepared, fold_dir(workdir, name, k), dst, tta, device, batch_size))
    print(f"note: {new_name} holds {name}'s weights; `comp blend` without --runs blends every complete run, "
          f"both of these included: pass --runs to choose")
    return results


def _predict_fold(prepared, src, dst, tta, device_name, batch_size) -> dict:
    config = read_json(src / "config.json")
    check_trained_on(config, src, prepared.label_map.hash, split_fingerprint(prepared.folds))
    in_fold = prepared.folds.fold.to_numpy() == config["fold"]
    views = _stored_views(src, tta)
    if views:
        oof_logits, test_logits = views
    else:
        oof_logits, test_logits = _predict_with_model(prepared, src, config, in_fold, tta, device_name, batch_size)
    y = prepared.label_map.encode(list(prepared.folds.label[in_fold]))
    metrics = {**read_json(src / "metrics.json"), **scores(oof_logits, y, prepared.label_map.num_classes),
               "tta": tta, "predicted_from": str(src)}
    write_text(dst / "history.csv", (src / "history.csv").read_text())
    if (src / "model.pt").exists():  # the same weights: export, infer and predict work on the new run too
        link_or_copy(src / "model.pt", dst / "model.pt")
    write_json(dst / "config.json", {**config, "name": dst.parent.name, "tta": tta})
    write_npz(dst / "oof.npz", ids=prepared.folds.id.to_numpy()[in_fold].astype(str), logits=oof_logits,
              labels=y, fold=np.full(len(y), config["fold"]))
    write_npz(dst / "test.npz", ids=prepared.test.id.to_numpy().astype(str), logits=test_logits)
    write_json(dst / "metrics.json", metrics)
    print(f"{dst}: OOF accuracy {metrics['accuracy']:.4f} with TTA {tta}{' (from the stored views)' if views else ''}")
    return metrics


def _stored_views(src, tta: str):
    """(oof, test) logits of `tta` from the views comp train kept, or None where it kept too few."""
    oof, test = np.load(src / "oof.npz"), np.load(src / "test.npz")
    if "view_logits" not in oof.files or "view_logits" not in test.files:
        return None
    if len(oof["view_logits"]) < len(TTA_WEIGHTS[tta]):
        return None
    return combine_views(oof["view_logits"], tta), combine_views(test["view_logits"], tta)


def _predict_with_model(prepared, src, config, in_fold, tta, device_name, batch_size):
    model, feed, precision = fold_model_and_feed(prepared, src, config, in_fold, device_name, batch_size)
    oof_logits = feed.predict(model, "val", tta, precision, "predict oof")
    test_logits = feed.predict(model, "test", tta, precision, "predict test")
    return oof_logits, test_logits


def fold_model_and_feed(prepared, src, config, in_fold, device_name="auto", batch_size=1024):
    """A trained fold's model (eval mode, on the device) and a feed of its held-out and test images,
    normalised as it was trained; and the precision to run it in."""
    if config["img_size"] != prepared.image_size:
        raise CompError(f"{src}: trained on {config['img_size']}px images, folds/ now holds {prepared.image_size}px: "
                        f"prepare again with --size {config['img_size']}, or train the run again")
    device = pick_device(device_name)
    precision = pick_precision(config.get("precision", "auto"), device)
    if not (src / "model.pt").exists():
        raise CompError(f"{src / 'model.pt'} not found: the fold's weights are gone, so it cannot predict again; "
                        f"retrain it (comp train --force) or choose a TTA its stored views allow")
    checkpoint = load_torch(src / "model.pt", map_location=device, weights_only=True)
    model = create_model(config["arch"], num_classes=config["num_classes"], in_chans=3,
                         img_size=config["img_size"], **without_weight_kwargs(config.get("model_kwargs", {})))
    load_weights(model, checkpoint["state_dict"], src / "model.pt")
    model = model.to(device).to(memory_format=torch.channels_last)
    # The images come the way the run was trained on them (runs from before --loader: the cache).
    loader = resolve_loader(config.get("loader", "cache"), prepared.has_cache, f"run {src} (trained from the cache)")
    feed = make_feed(loader, prepared, device, stats=(config["mean"], config["std"]), val_rows=np.flatnonzero(in_fold),
                     batch_size=config["batch_size"], eval_batch_size=batch_size)
    return model.eval(), feed, precision
