"""Per-image training speed of one model under several optimizers and batch sizes, one process.

    python scripts/bench_optimizer.py [--arch fastnet] [--size 32] [--steps 4] [--configs sgd:1024,muon:1024,...]

Random inputs (bf16 autocast on CPUs that support it, channels_last), one warm-up step, then
--steps timed steps per configuration, one after the other so machine noise hits all of them.
Measures what the optimizer and the batch size cost per image, nothing else. Prints one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import bare_loop  # noqa: E402

from comp.train.recipe import arch_recipe  # noqa: E402
from comp.train.trainer import pick_device, pick_precision  # noqa: E402


def images_per_second(arch, size, optimizer, batch, steps, device, precision) -> float:
    """bench_throughput's bare loop on one random batch (its rows are drawn with replacement)."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    recipe = {**arch_recipe(arch), "optimizer": optimizer}  # the values do not change the cost of a step
    return bare_loop(arch, images, labels, 10, batch, steps, device, precision, recipe)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fastnet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--configs", default="sgd:1024,muon:1024,sgd:2000,muon:2000")
    args = parser.parse_args()
    device = pick_device("auto")
    precision = pick_precision("auto", device)
    results = []
    for config in args.configs.split(","):
        optimizer, batch = config.split(":")
        rate = images_per_second(args.arch, args.size, optimizer, int(batch), args.steps, device, precision)
        results.append(f"{optimizer}@{batch} {rate:.0f}")
    print(f"optimizer cost {args.arch} {args.size}px {device.type} {precision}: {', '.join(results)} img/s "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
