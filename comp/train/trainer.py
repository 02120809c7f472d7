"""`comp train`: one fold of one architecture, airbench-style.

Batches come from comp/train/feed.py: by default the training images stay a uint8 tensor on the
training device and each batch is normalised and augmented there as whole-batch tensor ops,
so the model (not a DataLoader) is the bottleneck; after `comp prepare --no-cache` (--loader
albu) DataLoader workers read and augment the image files. The recipe comes from
comp/train/recipe.py's planner (every value the command line left unset, each with its reason,
resolved by comp/train/config.py);
with --budget the number of steps is fitted to the clock after the first steps
(comp/train/budget.py). Every epoch checkpoints (so --resume continues after a crash or kill -9)
and, when the recipe reads it (early stopping, plateau), validates on the held-out fold. At
the end one prediction pass per split keeps every TTA view's logits: the TTA score, the
no-TTA score (the plain view) and `comp predict --tta` all come from it.

Started by torchrun with several processes it trains one run with DistributedDataParallel:
each rank trains on its shard of the rows, rank 0 validates and writes everything (see
comp/train/distributed.py for how to launch it and what changes).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..ensemble import score_probs, softmax
from ..io import CompError, read_json, replace_dir, save_torch, write_csv, write_json, write_npz
from ..models import backbone_stats, create_model, without_weight_kwargs
from ..prepare.folds import Prepared, load_prepared, split_fingerprint
from ..runs import OOF_LABEL_USES, RunBusy, RunLock, check_adoptable, fold_dir, is_complete, oof_label_use
from ..version import __version__
from .budget import CALIBRATION_STEPS, BudgetedRun, FoldClock, fold_budgets, keep_planned_budget, with_budget_arch
from .checkpoint import check_resumable, load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig, data_shape, pick_precision, recipe_differs
from .cpu_share import share_cpu
from .distributed import (DistContext, StepModel, all_reduce_sum, broadcast_object, init_from_env,
                          local_batch_size, run_on_main, shard)
from .distributed import pick_device  # noqa: F401  (comp.train.predict and scripts import it from here)
from .feed import autocast, make_feed
from .optim import Lookahead, Plateau, build_optimizer, lr_multiplier, set_lr
from .recipe import RECIPE_FIELDS, format_seconds, plan
from .tta import combine_views

# Views of the per-view logits kept in oof.npz/test.npz while they stay below this many floats.
MAX_VIEW_FLOATS = 50_000_000


def scores(logits: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    return score_probs(softmax(logits), y, num_classes)


def train(cfg: TrainConfig) -> list[dict]:
    """`--fold all` trains the folds one after another; finished folds are skipped.
    Under torchrun the process group is created here once, for every fold; the command's end
    destroys it with every rank at a barrier (distributed.exit_process), never one rank alone."""
    ctx = init_from_env(cfg.device)
    if cfg.budget and cfg.budget_started is None:
        cfg = replace(cfg, budget_started=time.monotonic())
    return _train_folds(cfg, ctx)


def _train_folds(cfg: TrainConfig, ctx: DistContext) -> list[dict]:
    prepared = load_prepared(cfg.workdir)
    n_folds = prepared.n_folds
    if cfg.fold != -1 and not 0 <= cfg.fold < n_folds:
        raise CompError(f"--fold {cfg.fold}: folds.csv has folds 0..{n_folds - 1} (or use --fold all)")
    if cfg.fold != -1:
        return [train_fold(cfg, prepared)]
    cfg = with_budget_arch(cfg, prepared, ctx.device)  # one net for all folds
    cfg = replace(cfg, budget_all=cfg.budget_all or cfg.budget)
    name = cfg.name or (cfg.arch or plan(data_shape(prepared, 0), {}).values["arch"]).replace("/", "_")
    todo, split = [], split_fingerprint(prepared.folds)
    for k in range(n_folds):
        path = fold_dir(cfg.workdir, name, k)
        if run_on_main(is_complete, path) and not cfg.force:
            trained = run_on_main(read_json, path / "config.json")
            run_on_main(check_adoptable, trained, path, split, bool(cfg.arch_reason))
            differ = recipe_differs(trained, {key: getattr(cfg, key) for key in RECIPE_FIELDS + ("arch",)})
            ctx.print(f"fold {k}: already complete in {path}" + (f", trained with {differ}" if differ else "")
                      + ", skipping (--force to redo)")
        else:
            todo.append(k)
    results, busy = [], []
    for i, k in enumerate(todo):  # a budget for all folds: each fold gets an equal share of what is left
        fold_cfg = replace(cfg, fold=k)
        if cfg.budget:
            budget = fold_budgets(cfg.budget, cfg.budget_started, len(todo) - i)
            if budget <= 0:
                raise CompError(f"--budget {format_seconds(cfg.budget)} is used up before fold {k}: "
                                f"`comp train --fold all --budget ...` again trains the folds still missing")
            fold_cfg = replace(fold_cfg, budget=budget, budget_started=time.monotonic())
        try:
            results.append(train_fold(fold_cfg, prepared))
        except RunBusy as exc:  # another process trains this fold: leave it to it, go on
            ctx.print(f"fold {k}: busy, skipping it: {exc}")
            busy.append(k)
    if busy:
        ctx.print(f"skipped busy fold(s) {', '.join(map(str, busy))}: another process is training them")
    return results


def show_plan(cfg: TrainConfig) -> TrainConfig:
    """`comp train --plan`: the resolved recipe of the fold (fold 0 for --fold all, with its share of the
    budget), nothing trained."""
    prepared = load_prepared(cfg.workdir)
    cfg = with_budget_arch(cfg, prepared, init_from_env(cfg.device).device)
    if cfg.fold == -1 and cfg.budget:
        cfg = replace(cfg, budget=cfg.budget / prepared.n_folds)
    resolved, table = _resolve_for_fold(cfg, prepared, max(cfg.fold, 0))
    print(table)
    return resolved


def _resolve_for_fold(cfg: TrainConfig, prepared: Prepared, fold: int) -> tuple[TrainConfig, str]:
    """The config planned for the fold's data, and the plan table that shows it."""
    shape = data_shape(prepared, fold)
    resolved = replace(cfg, fold=fold).resolved(shape.n_train, shape.image_size, prepared.has_cache,
                                                shape.num_classes)
    budget = f", budget {format_seconds(resolved.budget)}" if resolved.budget else ""
    header = (f"plan for {resolved.name} fold {fold}: {shape.n_train} training images of {shape.image_size}px, "
              f"{shape.num_classes} classes ({shape.per_class:.0f} per class), "
              f"{max(1, shape.n_train // resolved.batch_size)} steps an epoch{budget}")
    return resolved, header + "\n" + resolved.plan_table()


def train_fold(cfg: TrainConfig, prepared: Prepared, on_epoch=None) -> dict:
    """Train one fold. `on_epoch(row)` is called after each epoch with its history row
    (comp tune reports to Optuna there; raising from it stops training).
    Under DDP only rank 0 validates, writes and returns the metrics; the other ranks return {}."""
    ctx = init_from_env(cfg.device)
    if cfg.budget and cfg.budget_started is None:
        cfg = replace(cfg, budget_started=time.monotonic())
    in_fold = prepared.folds.fold.to_numpy() == cfg.fold
    cfg = with_budget_arch(cfg, prepared, ctx.device)
    cfg, table = _resolve_for_fold(cfg, prepared, cfg.fold)
    ctx.print(table)
    out = fold_dir(cfg.workdir, cfg.name, cfg.fold)
    if cfg.sync_bn and ctx.enabled and ctx.device.type != "cuda":
        raise CompError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    with contextlib.ExitStack() as lock:
        work = run_on_main(_claim, cfg, out, lock)  # rank 0's checks and lock; its error stops every rank
        return _train_locked(cfg, prepared, in_fold, work, on_epoch, ctx)


def replacing_dir(out: Path) -> Path:
    """Where `--force` trains a complete fold again: the finished fold stays whole and in use until the
    new one is written (a full disk, a crash or Ctrl-C leaves it as it was); then the folders swap."""
    return out.with_name(f".{out.name}.replacing")


def _claim(cfg: TrainConfig, out: Path, lock: contextlib.ExitStack) -> Path:
    """Lock the fold and return the folder to train in: the fold's own, or with --force on a complete
    fold, replacing_dir(out)."""
    # the lock first: a fold another process is training is busy (RunBusy), not "unfinished"
    lock.enter_context(RunLock(out))
    if is_complete(out):  # --force trains beside it; --resume continues a --force run cut short
        work = replacing_dir(out)
        continuing = cfg.resume and (work / "checkpoint.pt").exists()
        if not (cfg.force or continuing):
            raise CompError(f"{out} is already complete; pass --force to train it again")
        if not continuing:
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(exist_ok=True)
        return work
    if (out / "checkpoint.pt").exists() and not (cfg.resume or cfg.force):
        raise CompError(f"{out} holds an unfinished run: --resume to continue it, --force to start over")
    resuming = cfg.resume and (out / "checkpoint.pt").exists()
    if cfg.resume and not resuming:
        # say so at once: a user who expected to continue (another run, another name) can stop
        print(f"{out}: no checkpoint to resume (one is written after each epoch); this fold trains from the start")
    if cfg.force and not resuming:  # an unfinished fold: nothing finished to keep
        for name in ("checkpoint.pt", "history.csv"):
            (out / name).unlink(missing_ok=True)
    return out


def _train_locked(cfg: TrainConfig, prepared: Prepared, in_fold: np.ndarray, out: Path, on_epoch,
                  ctx: DistContext) -> dict:
    torch.manual_seed(cfg.seed + ctx.rank)  # own random stream per rank; DDP gives all rank 0's weights
    device = ctx.device
    precision = pick_precision(cfg.precision, device)
    label_map = prepared.label_map
    y_val = label_map.encode(list(prepared.folds.label[in_fold]))
    n_train, n_val = int((~in_fold).sum()), int(in_fold.sum())
    batch_size = local_batch_size(cfg.batch_size, ctx.world_size)  # --batch-size is global
    rows = shard(np.flatnonzero(~in_fold), cfg.seed, ctx.rank, ctx.world_size)  # all of them on one process
    feed = make_feed(cfg.loader, prepared, device, train_rows=rows, val_rows=np.flatnonzero(in_fold), aug=cfg.aug,
                     batch_size=batch_size, eval_batch_size=cfg.eval_batch_size, workers=cfg.workers,
                     train_size=cfg.model_kwargs.get("train_size"), stats=backbone_stats(cfg.arch))
    img_size = prepared.image_size

    ckpt = run_on_main(read_checkpoint, out / "checkpoint.pt") if cfg.resume else None  # rank 0's file
    model = create_model(cfg.arch, num_classes=label_map.num_classes, in_chans=3, img_size=img_size,
                         **(without_weight_kwargs(cfg.model_kwargs) if ckpt else cfg.model_kwargs))  # ckpt's weights
    model = model.to(device).to(memory_format=torch.channels_last)
    if cfg.sync_bn and ctx.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # on each rank's shard (DDP then copies rank 0's result); --weights bring the whitening their convs were trained on
    if hasattr(model, "init_from_data") and not cfg.model_kwargs.get("weights"):
        model.init_from_data(feed.sample(5000))
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.bias_lr_scale,
                                cfg.muon_lr, cfg.muon_momentum)
    lookahead = Lookahead(model, decay_base=cfg.ema_decay) if cfg.ema else None
    plateau = Plateau()
    steps_per_epoch = max(1, n_train // ctx.world_size // batch_size)  # the smallest shard's, on every rank
    step_models = StepModel(model, ctx, cfg.compile)  # DDP around the model under torchrun
    eval_model = model if ctx.enabled else step_models.current()  # rank 0 validates alone: never DDP

    state = dict(epoch=0, step=0, best_score=-math.inf, best_epoch=-1, bad_epochs=0, history=[],
                 total_steps=math.ceil(steps_per_epoch * cfg.epochs), planned=not cfg.budget)
    if cfg.budget:  # provisional until the first steps are timed: long enough to time them
        state["total_steps"] = max(CALIBRATION_STEPS, state["total_steps"])
    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    started_from = getattr(model, "weights_record", None) or (ckpt or {}).get("config", {}).get("starting_weights")
    config = {**asdict(cfg), "starting_weights": started_from, "precision": precision, "device": str(device), "img_size": img_size,
              "label_hash": label_map.hash, "num_classes": label_map.num_classes, "comp_version": __version__,
              "folds_fingerprint": split_fingerprint(prepared.folds), "n_train": n_train, "n_val": n_val,
              "total_steps": state["total_steps"], "mean": feed.mean, "std": feed.std, "world_size": ctx.world_size}
    if ckpt:
        run_on_main(check_resumable, ckpt.get("config", {}), config, out)
        state, best_weights = load_checkpoint(ckpt, model, optimizer, lookahead, plateau, device, out / "checkpoint.pt")
        state.setdefault("total_steps", config["total_steps"])  # checkpoints from before --budget
        state.setdefault("planned", True)  # a resumed run keeps its plan (one killed before it: plans now)
        if state["planned"]:
            cfg = keep_planned_budget(cfg, ckpt["config"], state["total_steps"], ctx.print)
        config.update({k: ckpt["config"][k] for k in ("epochs", "tta", "total_steps", "budget") if k in ckpt["config"]})
        cfg = replace(cfg, epochs=config["epochs"], tta=config["tta"])
        if ctx.enabled:  # per-rank random streams are not checkpointed
            torch.manual_seed(cfg.seed + ctx.rank + 1000 * state["epoch"])
        ctx.print(f"resuming {out} at epoch {state['epoch']} (step {state['step']}/{state['total_steps']})")
    if ctx.is_main:
        write_json(out / "config.json", config)
    writer = _tensorboard(out) if ctx.is_main else None
    budgeted = cfg.budget and BudgetedRun(FoldClock(cfg.budget, cfg.budget_started), n_val + len(prepared.test),
                                          cfg.tta, cfg.plan.get("tta") == "--tta", steps_per_epoch, say=ctx.print,
                                          eval_size=img_size)
    ddp = f", DDP {ctx.world_size} x batch {batch_size}" if ctx.enabled else ""
    files = f", image files via {cfg.workers} loader workers" if cfg.loader == "albu" else ""
    ctx.print(f"train {cfg.name} fold {cfg.fold}: {n_train} train / {n_val} val images, "
              f"{'budget ' + format_seconds(cfg.budget) if cfg.budget else f'{cfg.epochs} epochs'} x {steps_per_epoch} "
              f"steps, {device} {precision}, aug {cfg.aug}{ddp}{files}")
    # the last epoch's score comes from the final prediction's plain view unless something reads it first
    validate_last = bool(cfg.patience or cfg.schedule == "plateau" or on_epoch)

    while state["step"] < state["total_steps"]:
        epoch = state["epoch"]
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch, cfg.epochs)
        step_model = step_models.current()  # DDP is rebuilt if the hook froze a parameter
        model.train()
        started = time.time()
        n_steps = min(steps_per_epoch, state["total_steps"] - state["step"])
        bar = tqdm(feed.train_batches(n_steps, epoch), total=n_steps, unit="step", leave=False,
                   desc=f"epoch {epoch + 1}/{math.ceil(state['total_steps'] / steps_per_epoch)}",
                   disable=None if ctx.is_main else True)
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for x, target in bar:
            share_cpu(device)  # several trainings on one CPU: threads = cores // trainings
            multiplier = lr_multiplier(cfg.schedule, state["step"], state["total_steps"]) * plateau.multiplier
            set_lr(optimizer, multiplier)
            with autocast(device, precision):
                logits = step_model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state["step"] += 1
            if lookahead:
                lookahead.step(state["step"], state["total_steps"])
            loss_sum += loss.detach() * len(x)
            hard = target if target.ndim == 1 else target.argmax(1)
            correct += (logits.detach().argmax(1) == hard).sum()
            seen += len(x)
            if budgeted and not state["planned"]:  # the first steps fix the plan
                fixed = budgeted.after_step(state["step"], model, x, device, precision)
                if fixed:
                    state.update(broadcast_object(fixed), planned=True)  # the same on every rank
                    cfg = replace(cfg, tta=state["tta"])
                    config.update(tta=cfg.tta)
            elif budgeted and budgeted.calibrated and not ctx.enabled and budgeted.out_of_time():
                state["total_steps"] = state["step"]  # a slowdown within the epoch (DDP ranks refit per epoch)
            if state["step"] >= state["total_steps"]:
                break
        if lookahead and state["step"] >= state["total_steps"]:  # once, as airbench: the live weights take the average
            lookahead.finish()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # queued kernels belong to this epoch's time
        train_seconds = time.time() - started
        totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
        loss_sum, correct, seen = all_reduce_sum(totals).tolist()  # over all ranks
        row = dict(epoch=epoch + 1, step=state["step"], train_loss=loss_sum / seen, train_accuracy=correct / seen,
                   val_loss=math.nan, val_accuracy=math.nan, val_macro_f1=math.nan, lr=optimizer.param_groups[0]["lr"],
                   seconds=round(train_seconds, 2), images_per_second=round(seen / train_seconds, 1))
        last = state["step"] >= state["total_steps"]
        stop = False
        if ctx.is_main and ((last and validate_last) or (cfg.val_every and (epoch + 1) % cfg.val_every == 0)):
            # validation and every file are rank 0's; the others wait for its decision
            stop = _validate(cfg, row, feed, eval_model, y_val, precision, plateau, state)
            if state["best_epoch"] == epoch + 1:
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ctx.is_main:
            state["history"].append(row)
            _log_epoch(row, writer)
            if on_epoch and not math.isnan(row["val_accuracy"]):
                on_epoch(row)
        state["epoch"] = epoch + 1
        if budgeted and budgeted.calibrated and not last:  # refit: the rate now includes validation, saving
            state["total_steps"] = budgeted.refit(state["step"])
        stop, plateau.multiplier, state["total_steps"] = broadcast_object(
            (stop, plateau.multiplier, state["total_steps"]))  # the same on every rank
        if cfg.budget:  # the plan so far (config.json and the checkpoint): a resume keeps it
            config.update(total_steps=state["total_steps"], epochs=round(state["total_steps"] / steps_per_epoch, 3))
        if stop:
            ctx.print(f"early stopping: no improvement for {cfg.patience} epochs; best epoch {state['best_epoch']}")
            state["total_steps"] = state["step"]
        if ctx.is_main:
            save_checkpoint(out / "checkpoint.pt", model, optimizer, lookahead, plateau, state, best_weights, config)
            write_csv(out / "history.csv", pd.DataFrame(state["history"]))
            if cfg.budget:
                write_json(out / "config.json", config)

    if not ctx.is_main:
        return {}
    if cfg.patience:  # early stopping restores the best epoch; that choice used the fold's labels
        model.load_state_dict(best_weights)
    state["weights_epoch"] = state["best_epoch"] if cfg.patience else state["epoch"]
    if cfg.budget:  # the epochs the budget fitted (early stopping may end sooner)
        config.update(epochs=round(state["step"] / steps_per_epoch, 3), total_steps=state["step"])
        write_json(out / "config.json", config)
    return _finish(cfg, config, model, prepared, feed, y_val, in_fold, out, precision, state, writer)


def _validate(cfg, row, feed, model, y_val, precision, plateau, state) -> bool:
    """Score the held-out fold into `row`, track the best epoch; True when patience runs out."""
    val = scores(feed.predict(model, "val", "none", precision), y_val, feed.num_classes)
    row.update(val_loss=val["log_loss"], val_accuracy=val["accuracy"], val_macro_f1=val["macro_f1"])
    if cfg.schedule == "plateau":
        plateau.step(val["log_loss"])
    score = val["accuracy"] - 1e-6 * val["log_loss"]  # accuracy first, loss breaks ties
    if score > state["best_score"]:
        state.update(best_score=score, best_epoch=row["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    return bool(cfg.patience and state["bad_epochs"] >= cfg.patience)


def _finish(cfg, config, model, prepared, feed, y_val, in_fold, out, precision, state, writer) -> dict:
    """Final weights -> one prediction pass per split keeping every TTA view; metrics.json last."""
    started = time.time()
    oof_views = feed.predict_views(model, "val", cfg.tta, precision, "predict oof")
    # a comp tune trial is scored on the held-out fold alone: its test logits and weights would go unread
    test_views = None if cfg.tune_trial else feed.predict_views(model, "test", cfg.tta, precision, "predict test")
    oof_logits = combine_views(oof_views, cfg.tta)
    num_classes = prepared.label_map.num_classes
    metrics = scores(oof_logits, y_val, num_classes)
    plain = scores(oof_views[0], y_val, num_classes)  # the identity view: the no-TTA score
    last = state["history"][-1] if state["history"] else {}
    if last and math.isnan(last["val_accuracy"]) and state["weights_epoch"] == last["epoch"]:
        last.update(val_loss=plain["log_loss"], val_accuracy=plain["accuracy"], val_macro_f1=plain["macro_f1"])
        write_csv(out / "history.csv", pd.DataFrame(state["history"]))
        _log_epoch(last, writer, echo=False)
    metrics.update(tta=cfg.tta, accuracy_no_tta=plain["accuracy"], best_epoch=state["best_epoch"],
                   weights_epoch=state["weights_epoch"], epoch_chosen_on_oof_labels=bool(cfg.patience),
                   used_oof_labels={use: OOF_LABEL_USES[use] for use in oof_label_use(config)},
                   epochs_run=state["epoch"], train_seconds=round(sum(r["seconds"] for r in state["history"]), 1),
                   predict_seconds=round(time.time() - started, 1), label_hash=prepared.label_map.hash,
                   n_oof=int(len(y_val)), n_test=0 if test_views is None else len(prepared.test), budget=cfg.budget,
                   steps=state["step"], epochs=config["epochs"])
    n_floats = oof_views.size + (0 if test_views is None else test_views.size)
    views = {"view_logits": oof_views} if n_floats <= MAX_VIEW_FLOATS else {}
    write_npz(out / "oof.npz", ids=prepared.folds.id.to_numpy()[in_fold].astype(str), logits=oof_logits,
              labels=y_val, fold=np.full(len(y_val), cfg.fold), **views)
    if test_views is not None:
        views = {"view_logits": test_views} if views else {}
        write_npz(out / "test.npz", ids=prepared.test.id.to_numpy().astype(str),
                  logits=combine_views(test_views, cfg.tta), **views)
        save_torch(out / "model.pt", {"state_dict": model.state_dict(), "config": config})
    write_json(out / "metrics.json", metrics)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    if writer:
        writer.add_scalar("oof/accuracy_tta", metrics["accuracy"], state["epoch"])
        writer.close()
    if out == replacing_dir(final := fold_dir(cfg.workdir, cfg.name, cfg.fold)):  # --force: now the swap
        os.link(final / "lock", out / "lock")  # the claim goes with the folder (RunLock removes it at the end)
        replace_dir(out, final)
        out = final
    print(f"{cfg.name} fold {cfg.fold}: OOF accuracy {metrics['accuracy']:.4f} (TTA {cfg.tta}; "
          f"no TTA {metrics['accuracy_no_tta']:.4f}), macro-F1 {metrics['macro_f1']:.4f}, "
          f"log loss {metrics['log_loss']:.4f}, weights of epoch {state['weights_epoch']} -> {out}")
    return metrics


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _log_epoch(row: dict, writer, echo: bool = True) -> None:
    validated = not math.isnan(row["val_accuracy"])
    val = (f"val loss {row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  F1 {row['val_macro_f1']:.4f}  "
           if validated else "(not validated)  ")
    if echo:
        print(f"  epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.4f}  "
              f"{val}lr {row['lr']:.2e}  {row['seconds']:.1f}s  {row['images_per_second']:.0f} img/s")
    if writer:
        keys = ("train_loss", "train_accuracy", "lr")
        keys += ("val_loss", "val_accuracy", "val_macro_f1") if validated else ()
        for key in keys:
            writer.add_scalar(key.replace("_", "/", 1), row[key], row["epoch"])
        writer.flush()
