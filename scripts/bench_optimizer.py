"""Per-image training speed of one model under several optimizers and batch sizes, one process.

    python scripts/bench_optimizer.py [--arch fastnet] [--size 32] [--steps 4] [--configs sgd:1024,muon:1024,...]

Random inputs (bf16 autocast on CPUs that support it, channels_last), one warm-up step, then
--steps timed steps per configuration, one after the other so machine noise hits all of them.
Measures what the optimizer and the batch size cost per image, nothing else. Prints one line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comp.models import create_model  # noqa: E402
from comp.optim import build_optimizer  # noqa: E402
from comp.train import autocast, pick_device, pick_precision  # noqa: E402


def images_per_second(arch, size, optimizer, batch, steps, device, precision) -> float:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, img_size=size).to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, optimizer, lr=0.1, weight_decay=1e-3, momentum=0.85, bias_lr_scale=64.0)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with autocast(device, precision):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.time() - started)


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
