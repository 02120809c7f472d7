"""Two trainings on one CPU machine: does the pair keep the throughput of one alone?

    python scripts/bench_concurrent.py --workdir WORKDIR [--arch fastnet] [--seconds 20] [--short]

WORKDIR must hold a `comp prepare` output (e.g. CIFAR-10). For each configuration it trains the
architecture's bare loop (as scripts/bench_throughput.py) in one process alone, then in two
processes at once, each for --seconds after a common start, and counts images per second.
Configurations (--configs):
  before         torch's defaults: one OpenMP thread per core in each process, default wait policy
  passive        OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers instead of spinning)
  share          comp.train.cpu_share.share_cpu at every step, as `comp train` does: threads = cores // trainings
  passive+share  both
Prints one result line: per configuration alone, each of the two, their sum, and sum/alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("before", "passive", "share", "passive+share")


def child(args) -> None:
    """One training process: warm up, say ready, wait for "go" on stdin, train --seconds, print img/s."""
    os.environ.pop("OMP_WAIT_POLICY", None)
    os.environ.pop("OMP_NUM_THREADS", None)
    os.environ["COMP_CPU_SHARE"] = "1" if "share" in args.config else "0"
    if "passive" in args.config:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch  # after the policy: OpenMP reads it when torch loads

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_throughput import train_step

    from comp.train.cpu_share import share_cpu
    from comp.train.feed import Images
    from comp.prepare.folds import load_prepared
    from comp.train.recipe import plan
    from comp.train.trainer import data_shape, pick_device, pick_precision

    prepared = load_prepared(args.workdir)
    device = pick_device("cpu")
    precision = pick_precision("auto", device)
    recipe = plan(data_shape(prepared, 0), {}, args.arch).values
    images = Images(prepared.train_images[: 4 * args.batch], device)
    x = images.batch(slice(None))
    y = torch.from_numpy(prepared.label_map.encode(list(prepared.folds.label[: 4 * args.batch])))
    step = train_step(args.arch, x, y, prepared.label_map.num_classes, args.batch, device, precision, recipe,
                      before_step=lambda: share_cpu(device))

    step()  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()
    started, steps = time.time(), 0
    while time.time() - started < args.seconds:
        step()
        steps += 1
    print(json.dumps({"images_per_second": steps * args.batch / (time.time() - started),
                      "threads": torch.get_num_threads()}), flush=True)


def run_together(args, config: str, n: int) -> list[float]:
    command = [sys.executable, __file__, "--child", "--config", config, "--workdir", args.workdir,
               "--arch", args.arch, "--batch", str(args.batch), "--seconds", str(args.seconds)]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for proc in procs:  # every process warmed up before any starts counting
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"child failed: {proc.communicate()}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    return [r["images_per_second"] for r in results]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--arch", default="fastnet")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--short", action="store_true", help="5 s windows: checks that it runs, not a figure")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.short:
        args.seconds = 5
    if args.child:
        return child(args)
    parts = []
    for config in args.configs.split(","):
        alone = run_together(args, config, 1)[0]
        pair = run_together(args, config, 2)
        parts.append(f"{config}: alone {alone:.0f} img/s, two together {pair[0]:.0f} + {pair[1]:.0f} = "
                     f"{sum(pair):.0f} img/s, ratio {sum(pair) / alone:.2f}")
    print(f"concurrent {args.arch} cpu batch {args.batch} {args.seconds:g}s windows, {os.cpu_count()} CPUs: "
          + "; ".join(parts))


if __name__ == "__main__":
    main()
