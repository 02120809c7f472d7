"""Progress of long loops: tqdm's bar on a terminal, plain lines where output goes to a file.

tqdm hides its bar when stderr is not a terminal (nohup, a log file, SLURM, a notebook's captured
output), so there `progress` prints a line every STEP_PERCENT of the work with the rate and the time
left. Work that ends within QUIET_SECONDS prints nothing.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

STEP_PERCENT = 5
QUIET_SECONDS = 2.0


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", leave: bool = True, show: bool = True):
    """Wraps `iterable` (or counts `.update(n)` calls up to `total`) like tqdm; `show=False`: silent."""
    if not show:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LineProgress(iterable, total, desc, unit)


class LineProgress:
    """The file-friendly bar: `desc: 40% (4,000/10,000 img), 520 img/s, 12s left`."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", stream=None, clock=time.monotonic):
        self.iterable, self.desc, self.unit, self.clock = iterable, desc, unit, clock
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.stream = stream or sys.stderr
        self.n, self.started, self.shown_step, self.printed = 0, clock(), 0, False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self):
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total:
            return
        step = int(100 * self.n / self.total) // STEP_PERCENT
        if step > self.shown_step and self.clock() - self.started >= QUIET_SECONDS:
            self.shown_step = step
            self._line()

    def close(self) -> None:
        if self.printed and self.shown_step * STEP_PERCENT < 100:
            self._line()  # a run that printed anything ends on its 100% line
        self.printed = False

    def _line(self) -> None:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.n / elapsed
        left = (self.total - self.n) / rate if rate > 0 else 0.0
        print(f"{self.desc}: {100 * self.n / self.total:.0f}% ({self.n:,}/{self.total:,} {self.unit}), "
              f"{rate:,.0f} {self.unit}/s, {left:.0f}s left", file=self.stream, flush=True)
        self.printed = True
