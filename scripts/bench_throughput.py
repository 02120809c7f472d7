"""Training throughput of `comp train` against a bare PyTorch loop: same model, precision, batch;
and E, this machine's unit of CPU cost.

    python scripts/bench_throughput.py --workdir WORKDIR [--arch A] [--steps 20] [--rounds 2]

WORKDIR must hold a `comp prepare` output (e.g. CIFAR-10). The recipe is the planner's for
fold 0 (comp/train/recipe.py; --arch: the planner's choice when not given). The bare loop trains on
preloaded, normalised float tensors with no augmentation, no validation and no checkpoints;
`comp train` is the real trainer (its images/s counts only its training steps, augmentation
included). The two alternate `--rounds` times in one process so that machine noise hits both.

E is one epoch of fastnet over 40,000 32px images in the bare loop, at the batch the planner
picks for such data, on random images, measured in the same process: budgets and costs are
stated in E because machines of the same kind differ by 2x. Prints one result line.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comp.train.feed import Images  # noqa: E402
from comp.prepare.folds import load_prepared  # noqa: E402
from comp.models import create_model  # noqa: E402
from comp.train.optim import build_optimizer  # noqa: E402
from comp.train.recipe import DataShape, plan  # noqa: E402
from comp.train.trainer import TrainConfig, autocast, data_shape, pick_device, pick_precision, train_fold  # noqa: E402

E_IMAGES = 40_000  # E: one bare-loop fastnet epoch over this many 32px images


def train_step(arch, images, labels, num_classes, batch, device, precision, recipe, before_step=None):
    """A plain training step on `batch` random rows of preloaded images (`recipe`: a planned recipe,
    plan(...).values); before_step() is called first (bench_concurrent: comp.train.cpu_share)."""
    model = create_model(arch, num_classes=num_classes, img_size=images.shape[-1],
                         **recipe.get("model_kwargs", {})).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, recipe["optimizer"], recipe["lr"], recipe["weight_decay"], recipe["momentum"],
                          recipe["bias_lr_scale"], recipe["muon_lr"], recipe["muon_momentum"])

    def step():
        if before_step:
            before_step()
        idx = torch.randint(0, len(images), (batch,), device=device)
        with autocast(device, precision):
            out = model(images[idx])
        loss = F.cross_entropy(out.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bare_loop(arch, images, labels, num_classes, batch, steps, device, precision, recipe) -> float:
    """Images/s of plain training steps."""
    step = train_step(arch, images, labels, num_classes, batch, device, precision, recipe)
    step()  # warm-up, as comp's first step also pays it (counted there: conservative)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.time() - started)


def epoch_seconds_e(steps, device, precision) -> tuple[float, int]:
    """(E in seconds, the batch it used): the bare loop on random 32px images, fastnet's planned recipe."""
    recipe = plan(DataShape(32, E_IMAGES, 10), {}).values
    batch = recipe["batch_size"]
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    rate = bare_loop(recipe["arch"], images, labels, 10, batch, steps, device, precision, recipe)
    return E_IMAGES / rate, batch


def comp_loop(arch, workdir, steps, batch, n_train, precision) -> float:
    run_root = Path(tempfile.mkdtemp(prefix="bench_"))
    try:
        # a scratch workdir pointing at the same prepared data: runs/ land in the temp folder
        (run_root / "folds").symlink_to(Path(workdir).resolve() / "folds")
        for sub in ("data",):
            if (Path(workdir) / sub).exists():
                (run_root / sub).symlink_to(Path(workdir).resolve() / sub)
        epochs = steps / max(1, n_train // batch)
        cfg = TrainConfig(arch=arch, fold=0, workdir=str(run_root), name="bench", epochs=epochs,
                          batch_size=batch, precision=precision, tta="none", eval_batch_size=2048)
        train_fold(cfg, load_prepared(run_root))
        import pandas as pd
        history = pd.read_csv(run_root / "runs" / "bench" / "fold0" / "history.csv")
        return float(history.images_per_second.iloc[-1])
    finally:
        shutil.rmtree(run_root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--arch", help="default: the planner's choice for the data")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    prepared = load_prepared(args.workdir)
    device = pick_device("auto")
    precision = pick_precision(args.precision, device)
    recipe = plan(data_shape(prepared, 0), {}, args.arch).values
    arch, batch = recipe["arch"], recipe["batch_size"]
    train_rows = prepared.folds.fold.to_numpy() != 0
    images = Images(prepared.train_images[train_rows], device)
    x = images.batch(slice(None))  # preloaded, normalised float tensors
    y = torch.from_numpy(prepared.label_map.encode(list(prepared.folds.label[train_rows]))).to(device)
    bare, comp = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop(arch, x, y, prepared.label_map.num_classes, batch, args.steps, device,
                              precision, recipe))
        comp.append(comp_loop(arch, args.workdir, args.steps, batch, int(train_rows.sum()), precision))
    e_seconds, e_batch = epoch_seconds_e(args.steps, device, precision)
    ratios = [c / b for c, b in zip(comp, bare)]
    print(f"throughput {arch} {prepared.image_size}px {device.type} {precision} batch {batch}: comp train "
          f"{statistics.median(comp):.0f} img/s, bare loop {statistics.median(bare):.0f} img/s, "
          f"ratio {statistics.median(ratios):.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"{torch.get_num_threads()} threads); E = {e_seconds:.1f} s (fastnet, 40,000 32px images, batch {e_batch})")


if __name__ == "__main__":
    main()
