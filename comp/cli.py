"""The `comp` command: one sub-command per stage. Argument parsing only; the work is in the modules."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from .io import CompError

STARTED = time.monotonic()  # a --budget counts from here: imports and data loading are part of the run


def _prepare(args):
    from .prepare.layout import LayoutOverrides
    from .prepare.folds import PrepareOptions, prepare

    overrides = LayoutOverrides(args.train_csv, args.val_csv, args.id_col, args.label_col, args.image_dir,
                                args.val_image_dir, args.test_dir, args.sample_submission, args.ext,
                                args.sub_id_col, args.sub_label_col)
    prepare(PrepareOptions(args.data, args.workdir, args.folds, args.seed, args.size, args.skip_bad,
                           cache=not args.no_cache), overrides)


def _train(args):
    if args.list_archs:
        from .models import print_archs

        print_archs()
        return
    from .train.trainer import show_plan, train
    from .train.config import config_from_args

    fold = -1 if args.fold == "all" else _int(args.fold, "--fold")
    (show_plan if args.plan else train)(config_from_args(args, fold, STARTED))


def _int(value, flag):
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise CompError(f"{flag} {value!r}: expected a fold number (0, 1, ...) or 'all'")
    return number


def _blend(args):
    from .blend.blend import BlendOptions, blend

    blend(BlendOptions(args.method, args.runs, args.name, args.top, args.temperature, args.metric, args.workdir))


def _report(args):
    from .blend.report import ReportOptions, report

    report(ReportOptions(args.runs, args.run, args.methods, args.out, args.workdir))


def _predict(args):
    from .train.predict import predict_run

    folds = None if args.fold == "all" else [_int(args.fold, "--fold")]
    predict_run(args.workdir, args.run, args.tta, folds, args.name, args.device, force=args.force)


def _submit(args):
    from .blend.submit import submit

    submit(args.csv, args.competition, args.message, args.dry_run, args.workdir)


def _export(args):
    from .deploy.bundle import ExportOptions, export

    export(ExportOptions(args.name, args.runs, args.method, args.top, args.temperature, args.metric, args.out,
                         args.half, args.zip, args.wheels, args.pin or [], args.find_links or [], args.force,
                         args.workdir))


def _infer(args):
    from .deploy.infer import InferOptions, infer

    infer(InferOptions(args.bundle, args.images, args.ids, args.out, args.skip_bad, args.batch_size, args.device,
                       args.precision, args.logits))


def _download(args):
    from .blend.submit import download

    download(args.competition, args.path)


def _weights(args):
    from .weights import print_weights

    print_weights()


def _demo(args):
    from .demo import run_demo

    run_demo(args.workdir, args.epochs, args.folds)


def _tune(args):
    from .train.distributed import refuse_torchrun
    from .tune.search import TuneOptions, tune

    refuse_torchrun("tune")
    tune(TuneOptions(args.arch, args.trials, args.fold, args.workdir, args.storage, args.study, args.space,
                     args.pruner, args.startup_trials, args.warmup_epochs, args.timeout, args.epochs,
                     args.sampler_seed, args.seed, args.device, args.precision))


def _grid(args):
    from .train.distributed import refuse_torchrun
    from .tune.grid import grid

    refuse_torchrun("grid")
    recipe = {k: getattr(args, k) for k in ("epochs", "batch_size", "aug", "tta", "patience")}
    grid(args.archs, args.folds, args.workdir, seed=args.seed, device=args.device, precision=args.precision,
         **recipe)


# Option texts and choices several subcommands share.
TTA_CHOICES = ["none", "flip", "flip+shift"]
BLEND_CHOICES = ["soft", "logit", "hard", "rank", "select", "stack"]
PRECISION_CHOICES = ["auto", "bf16", "fp32"]
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:1 ..."
DEBUG_HELP = "show the traceback of an error (or COMP_DEBUG=1)"
PRECISION_HELP = "auto: bf16 autocast on CUDA and on CPUs with bf16 support, else fp32"
WORKDIR_HELP = "folder holding folds/, runs/, submissions/ (default .)"
BLEND_HELP = ("soft: average the runs' probabilities; logit: average their logits; hard: majority vote; "
              "rank: average each class's rank; select: Caruana selection (greedy, with repeats) of the runs "
              "that improve --metric; stack: logistic regression on the runs' OOF logits "
              "(select and stack learn from labels and are scored nested)")


def _add_train_args(p):
    p.add_argument("--arch", help="architecture name (see --list-archs) or timm/<name>; default: planned from the "
                                  "image size (fastnet, or fastnet_s2d_deep above 48px), or with --budget the net the clock allows")
    p.add_argument("--fold", default="0", help="fold to hold out (0..K-1) or 'all' (default 0)")
    p.add_argument("--name", help="run name (default: the arch); runs/<name>/fold<K>/")
    p.add_argument("--list-archs", action="store_true", help="list architectures with parameter counts")
    p.add_argument("--plan", action="store_true", help="print the planned recipe (each value with its reason) "
                   "and train nothing")
    p.add_argument("--budget", help="wall time for the fold, or with --fold all for all folds together (e.g. 15m, "
                   "90s, 1.5h; a bare number is minutes): epochs and TTA are fitted to it after timing the first steps")
    g = p.add_argument_group("recipe (default: planned from the data; see --plan)")
    g.add_argument("--epochs", type=float, help="epochs, fractional allowed")
    g.add_argument("--batch-size", type=int, help="GLOBAL batch: under torchrun with N processes each "
                   "trains on batch-size // N images per step")
    g.add_argument("--lr", type=float, help="learning rate (Muon: of the head and biases) for a mean loss at "
                   "the planned batch")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "muon"],
                   help="muon: Muon for the conv filters, SGD for the rest (airbench94_muon)")
    g.add_argument("--momentum", type=float, help="SGD momentum (Nesterov); Muon: of the head and biases")
    g.add_argument("--weight-decay", type=float, help="weight decay (default per optimizer: sgd/muon 5e-4, "
                   "adam 0, adamw 0.05, unless the recipe sets it)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (0: none)")
    g.add_argument("--muon-lr", type=float, help="--optimizer muon: lr of the conv filters (0.24 at batch 2000, "
                   "rescaled with the batch)")
    g.add_argument("--muon-momentum", type=float, help="--optimizer muon: momentum of the conv filters (default 0.6)")
    g.add_argument("--schedule", choices=["onecycle", "cosine", "triangle", "linear", "plateau", "constant"],
                   help="lr schedule over the run (plateau: ReduceLROnPlateau on the held-out loss)")
    g.add_argument("--bias-lr-scale", type=float, help="lr multiplier for norm parameters (with Muon: every "
                   "parameter of one dimension, biases included)")
    g.add_argument("--ema", choices=["on", "off"], help="lookahead weight averaging")
    g.add_argument("--ema-decay", type=float, help="lookahead's per-step decay: every 5 steps the average keeps "
                   "decay^5 x (step/steps)^3 (airbench's 0.95; the planner's 0.98 for scarce data)")
    g.add_argument("--aug", help="e.g. flip,translate:2,cutout:8 ('none' for no augmentation)")
    g.add_argument("--tta", choices=TTA_CHOICES, help="test-time augmentation views "
                   "(flip+shift: airbench's 6 views); every view's logits are kept")
    g.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (0: off)")
    p.add_argument("--val-every", type=int, help="validate every N epochs (0: never during training; the final "
                   "prediction scores the fold); default 1 with --patience or --schedule plateau, else 0; "
                   "--patience counts validations")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order and augmentation")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun (DDP, CUDA): SyncBatchNorm")
    p.add_argument("--loader", default="auto", choices=["auto", "cache", "albu"],
                   help="cache: the image cache on the device; albu: read the image files with DataLoader workers "
                        "and albumentations (default auto: cache unless prepared with --no-cache)")
    p.add_argument("--workers", type=int, help="--loader albu: DataLoader worker processes (default min(4, CPUs))")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--force", action="store_true", help="retrain a finished run")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start from ImageNet weights (pretrained nets: effnet_lite0/1/2, mobilenetv2, timm/<name>); "
                        "found in --weights, comp's weights cache or an installed wheel, else downloaded through "
                        "timm's hub into that cache. --no-pretrained: the planner plans a net trained from scratch")
    p.add_argument("--weights", help="a local weights file (timm, torchvision or efficientnet_pytorch layout)")
    p.add_argument("--train-size", type=int, help="pretrained nets: the side they train at (default: 0.875 of the "
                   "cached side in steps of 32, at most the net's native size); crops come from the larger cache")
    p.add_argument("--no-adapt", action="store_true", help="timm models: keep the stem's stride")
    p.add_argument("--params", help="'best': the best `comp tune` trial (tune/<arch>-fold0/best.json), or a "
                                    "best.json path; recipe flags given here still win")
    p.add_argument("--params-from", metavar="STUDY", help="the tune study --params best reads (implies it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comp", description="Kaggle image classification: prepare, train, blend, submit.")
    parser.add_argument("--workdir", default=".", help=WORKDIR_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    # --workdir and --debug are accepted after the sub-command too (comp prepare --data X --workdir D).
    workdir = argparse.ArgumentParser(add_help=False)
    workdir.add_argument("--workdir", default=argparse.SUPPRESS, help=WORKDIR_HELP)
    workdir.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)

    p = sub.add_parser("prepare", parents=[workdir], help="merge train+val, stratified folds, label map, image cache")
    p.add_argument("--data", required=True, help="competition zip or extracted folder")
    p.add_argument("--folds", type=int, default=5, help="number of stratified folds (default 5); changing it "
                   "makes runs trained on the previous split unusable")
    p.add_argument("--seed", type=int, default=42, help="seed of the fold shuffle (default 42); changing it "
                   "makes runs trained on the previous split unusable")
    p.add_argument("--size", type=int, help="resize images to SIZE x SIZE pixels (default: the most common side, or the "
                   "median of mixed sizes, at most 128)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad rows/images and report them instead of failing")
    p.add_argument("--no-cache", action="store_true", help="check every image but write no cache (images too large "
                   "to cache): `comp train` then reads the files (--loader albu)")
    for flag in ("train-csv", "val-csv", "id-col", "label-col", "image-dir", "val-image-dir", "test-dir",
                 "sample-submission", "ext"):
        p.add_argument(f"--{flag}", help=f"override the detected {flag.replace('-', ' ')}"
                       + (" (only files with it count, e.g. png)" if flag == "ext" else ""))
    for flag, what in (("id", "ids"), ("label", "predicted labels")):
        p.add_argument(f"--sub-{flag}-col", help=f"the sample submission's column of the {what} (default: found "
                       f"by name; its other columns are kept as the sample has them)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", parents=[workdir], help="train one fold (or all) of one architecture",
                       description="Train one fold (or all) of one architecture. Under `torchrun --nproc-per-node N "
                       "-m comp train ...` one run trains with DistributedDataParallel on N processes/GPUs "
                       "(see comp/train/distributed.py); --batch-size is then the global batch.")
    _add_train_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", parents=[workdir], help="re-predict a finished run with another TTA")
    p.add_argument("--run", required=True, help="run name under runs/")
    p.add_argument("--tta", required=True, choices=TTA_CHOICES,
                   help="test-time augmentation of the new predictions: none, flip (2 views), flip+shift (6 views)")
    p.add_argument("--fold", default="all", help="a fold number or 'all' (default)")
    p.add_argument("--name", help="name of the new run (default <run>_tta-<mode without '+'>, e.g. R_tta-flipshift)")
    p.add_argument("--force", action="store_true", help="overwrite a complete re-predicted run")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_predict)

    p = sub.add_parser("blend", parents=[workdir], help="combine runs and write submissions/<name>.csv")
    p.add_argument("--method", default="soft", choices=BLEND_CHOICES,
                   help=BLEND_HELP + " (default soft)")
    p.add_argument("--runs", nargs="+", help="run names or globs (default: every complete run)")
    p.add_argument("--name", help="submission name (default: <method>_<n>runs[_top<T>][_T])")
    p.add_argument("--top", help="keep the best runs first: '30%%' or a count")
    p.add_argument("--temperature", action="store_true", help="temperature-scale each run before combining")
    p.add_argument("--metric", default="logloss", choices=["logloss", "accuracy"],
                   help="ranks the runs --top keeps and drives --method select (default logloss)")
    p.set_defaults(func=_blend)

    p = sub.add_parser("report", parents=[workdir], help="leaderboard, blend comparison, per-class table, plots, HTML")
    p.add_argument("--runs", nargs="+", help="run names or globs (default: every complete run)")
    p.add_argument("--run", help="run for the per-class table (default: the best on the leaderboard)")
    p.add_argument("--methods", help="comma-separated blend methods to compare (default: all)")
    p.add_argument("--out", help="folder for the CSVs, PNGs and report.html (default: <workdir>/runs)")
    p.set_defaults(func=_report)

    p = sub.add_parser("submit", parents=[workdir], help="validate a submission and send it to Kaggle")
    p.add_argument("csv", help="the submission CSV, e.g. submissions/soft_1runs.csv")
    p.add_argument("-c", "--competition", required=True, help="the competition's name in its Kaggle URL, e.g. cifar-10")
    p.add_argument("-m", "--message", help="submission message (default: the blend method and its OOF scores)")
    p.add_argument("--dry-run", action="store_true", help="validate only")
    p.set_defaults(func=_submit)

    p = sub.add_parser("export", parents=[workdir], help="bundle a blend's models for `comp infer` on new images",
                       description="Write a bundle folder: every chosen run's fold weights, architecture, "
                       "normalisation, decoding rules, TTA, the fitted blend, the label map and the submission "
                       "format, with a checksum manifest. The blend is fit exactly as `comp blend` fits it.")
    p.add_argument("name", help="bundle name (default folder: <workdir>/bundles/<name>)")
    p.add_argument("--runs", nargs="+", help="run names or globs (default: every complete run)")
    p.add_argument("--method", default="soft", choices=BLEND_CHOICES,
                   help=BLEND_HELP + " (default soft)")
    p.add_argument("--top", help="as in comp blend")
    p.add_argument("--temperature", action="store_true", help="as in comp blend")
    p.add_argument("--metric", default="logloss", choices=["logloss", "accuracy"],
                   help="ranks the runs --top keeps and drives --method select (default logloss)")
    p.add_argument("--out", help="bundle folder (default <workdir>/bundles/<name>)")
    p.add_argument("--half", action="store_true", help="store the weights as bf16 (half the size)")
    p.add_argument("--zip", action="store_true", help="also write <out>.zip (to upload as a Kaggle dataset)")
    p.add_argument("--wheels", nargs="?", const="all", choices=["all", "comp"],
                   help="add wheels for `pip install --no-index`: all (comp, torch, numpy, pandas, pillow, tqdm, "
                        "scipy, scikit-learn, pinned to this machine's versions) or comp alone (Kaggle has the rest)")
    p.add_argument("--pin", action="append", help="--wheels: NAME==VERSION instead of this machine's version, "
                                                  "e.g. torch==2.13.0+cpu (repeatable)")
    p.add_argument("--find-links", action="append", help="--wheels: a folder of wheels pip may take (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("infer", help="predict new images with a bundle: no workdir, no network",
                       description="Decode every image with the bundle's rules, predict with its TTA and blend, "
                       "and write a CSV in the competition's format (checked like comp blend's).")
    p.add_argument("bundle", help="bundle folder or .zip from `comp export`")
    p.add_argument("--images", required=True, help="folder or .zip of images")
    p.add_argument("--ids", help="the sample submission: rows follow its order, every id needs an image")
    p.add_argument("--out", default="submission.csv", help="CSV to write (default submission.csv)")
    p.add_argument("--skip-bad", action="store_true", help="give undecodable images the blend's prior class and "
                                                          "list them (default: an error)")
    p.add_argument("--logits", metavar="NPZ", help="also write ids, each run's logits (before the blend) and the "
                                                  "probabilities to this .npz")
    p.add_argument("--batch-size", type=int, default=1024, help="images a forward pass (default 1024)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    p.set_defaults(func=_infer)

    p = sub.add_parser("download", parents=[workdir], help="download a competition's zip with the Kaggle API")
    p.add_argument("competition", help="the competition's name in its URL, e.g. cifar-10")
    p.add_argument("--path", default=".", help="folder for <competition>.zip (default .)")
    p.set_defaults(func=_download)

    p = sub.add_parser("weights", help="where the pretrained nets' ImageNet weights are on this machine",
                       description="List the pretrained nets (effnet_lite0/1/2, mobilenetv2) and where their ImageNet "
                       "weights are found: comp's weights cache, an installed wheel, or not here (and what installs "
                       "them). `make weights` installs every wheel.")
    p.set_defaults(func=_weights)

    p = sub.add_parser("demo", parents=[workdir], help="the whole chain on scikit-learn's digits, offline")
    p.add_argument("--epochs", type=float, default=8, help="epochs of each fold's training (default 8)")
    p.add_argument("--folds", type=int, default=5, help="folds of the digits split (default 5)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("tune", parents=[workdir], help="Optuna search over an architecture's recipe on one fold")
    p.add_argument("--arch", required=True, help="architecture to tune (see comp train --list-archs)")
    p.add_argument("--trials", type=int, required=True, help="trials this worker runs (workers add up)")
    p.add_argument("--fold", type=int, default=0, help="fold whose validation score is maximised (default 0); "
                   "its OOF score is then optimistic for runs trained with --params best")
    p.add_argument("--storage", help="Optuna URL or journal:PATH (default sqlite:///<workdir>/tune.db)")
    p.add_argument("--study", help="study name (default <arch>-fold<K>); workers with one name share it")
    p.add_argument("--space", help="YAML/TOML search space overrides (see comp/train/params.py)")
    p.add_argument("--pruner", default="median", choices=["median", "halving", "none"],
                   help="stop poor trials early: median (below the median at the same share of their epochs), "
                        "halving (successive halving), none (default median)")
    p.add_argument("--startup-trials", type=int, default=5, help="median pruner: complete trials before pruning")
    p.add_argument("--warmup-epochs", type=int, default=2, help="no pruning before this epoch")
    p.add_argument("--timeout", type=float, help="stop starting trials after S seconds")
    p.add_argument("--epochs", type=float, help="fix the epochs instead of searching them")
    p.add_argument("--sampler-seed", type=int, help="seed the TPE sampler, anew for each trial number "
                                                     "(default: differs per worker)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    p.set_defaults(func=_tune)

    p = sub.add_parser("grid", parents=[workdir], help="train every (arch, fold) in turn, skipping done/busy runs")
    p.add_argument("--archs", required=True, help="comma-separated architectures, e.g. fastnet,custom_cnn")
    p.add_argument("--folds", default="all", help="'all' or comma-separated folds, e.g. 0,1")
    p.add_argument("--epochs", type=float, help="epochs of every run (default: each architecture's recipe)")
    p.add_argument("--batch-size", type=int, help="batch of every run (default: each architecture's recipe)")
    p.add_argument("--aug", help="augmentation of every run, e.g. flip,translate:2 (default: the recipe's)")
    p.add_argument("--tta", choices=TTA_CHOICES, help="test-time augmentation (default: the recipe's)")
    p.add_argument("--patience", type=int, help="early-stopping patience (0: off; default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    p.set_defaults(func=_grid)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's stop, a preemption): raised like Ctrl-C, so every `finally` and atexit
    cleanup runs (staging folders, half-written exports, extracted bundles) instead of the process vanishing."""


def _raise_terminated(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # signal handlers: main thread only
        signal.signal(signal.SIGTERM, _raise_terminated)
    code = _run(args)
    if "comp.train.distributed" in sys.modules:  # under torchrun: end every rank together (see exit_process)
        return sys.modules["comp.train.distributed"].exit_process(code)
    return code


# After Ctrl-C: what running the command again does (every command writes whole files or nothing).
AGAIN = {"prepare": "the previous preparation is unchanged: run `comp prepare` again",
         "train": "the same `comp train` with --resume continues from the last finished epoch",
         "predict": "the same `comp predict` again skips the folds it finished",
         "demo": "`comp demo` again continues it",
         "tune": "the same `comp tune` again adds its --trials to the study",
         "grid": "the same `comp grid` again skips the finished runs and resumes the unfinished one",
         "download": "run `comp download` again"}


def _run(args) -> int:
    debug = args.debug or os.environ.get("COMP_DEBUG", "") not in ("", "0")
    try:
        args.func(args)
    except CompError as exc:
        if debug:
            raise
        if not getattr(exc, "quiet", False):  # under torchrun rank 0 alone reports an error all ranks share
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{how}: outputs written so far are complete; {AGAIN.get(args.command, 'run it again')}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # `comp ... | head` closed the pipe: what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except Exception as exc:  # a case comp does not check yet: one line, never a traceback
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (comp --debug {args.command} ... or COMP_DEBUG=1 "
              f"shows the traceback)", file=sys.stderr)
        return 2
    return 0


def _one_line(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


if __name__ == "__main__":
    sys.exit(main())
