"""CPU trainings on one machine share its cores instead of fighting over them.

torch gives every process one OpenMP thread per core. Two trainings on one machine then run
twice as many threads as cores, and each parallel region of either process waits until all of
its threads have a core: together they ran at about half of one training alone, not the whole
(BENCHMARKS.md, scripts/bench_concurrent.py). So each CPU training registers its pid in a
machine-wide folder and, every few seconds, sets torch's thread count to cores // live trainings
(at least 1): alone it gets every core back.

A thread count the user chose (OMP_NUM_THREADS) is left alone; COMP_CPU_SHARE=0 turns it off.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..runs import process_gone

REGISTRY = Path(tempfile.gettempdir()) / "comp-cpu-trainings"
CHECK_EVERY = 2.0  # seconds between looks at the registry (a step is often shorter)
_state = {"entry": None, "cores": None, "checked": -float("inf")}


def enabled(device: torch.device) -> bool:
    return (device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS")
            and os.environ.get("COMP_CPU_SHARE", "1") != "0")


def share_cpu(device: torch.device) -> None:
    """Call at every training step (cheap: it looks at the registry every CHECK_EVERY seconds)."""
    if not enabled(device) or time.monotonic() - _state["checked"] < CHECK_EVERY:
        return
    _state["checked"] = time.monotonic()
    try:
        if _state["entry"] is None:
            _register()
        trainings = live_trainings()
    except OSError:  # an unwritable temp folder: train with torch's own thread count
        return
    threads = max(1, _state["cores"] // max(1, trainings))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        tqdm.write(f"note: {trainings} comp training(s) on this machine's CPU: {threads} thread(s) each "
                   f"(of {_state['cores']}); OMP_NUM_THREADS=N fixes the count", file=sys.stderr)


def _register() -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    try:
        REGISTRY.chmod(0o1777)  # every user's trainings share the machine
    except OSError:
        pass
    entry = REGISTRY / f"{socket.gethostname()}-{os.getpid()}"
    entry.touch()
    _state.update(entry=entry, cores=torch.get_num_threads())
    import atexit

    atexit.register(entry.unlink, missing_ok=True)


def live_trainings() -> int:
    """Registered trainings still running; entries of killed ones are removed."""
    count = 0
    for entry in REGISTRY.iterdir():
        host, _, pid = entry.name.rpartition("-")
        if not pid.isdigit():
            continue
        if process_gone(host, int(pid)):
            try:
                entry.unlink(missing_ok=True)
            except OSError:  # another user's entry in a sticky /tmp: not ours to remove, and not counted
                pass
        elif host == socket.gethostname():
            count += 1
    return count
