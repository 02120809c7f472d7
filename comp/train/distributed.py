"""Data-parallel training (DDP) for one run across several processes / GPUs.

`comp train` switches to DistributedDataParallel when it is started by torchrun with
more than one process (WORLD_SIZE > 1); started any other way it is one plain process
and no process group exists.

Single node, N GPUs (one process per GPU; rank r uses cuda:LOCAL_RANK):

    torchrun --standalone --nproc-per-node N -m comp train --arch fastnet --fold 0

Several nodes (run the same line on every node; the endpoint is any free port on one
of them; every node needs the same workdir's folds/, e.g. a shared filesystem):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint node0.example:29500 --rdzv-id myrun -m comp train --arch fastnet --fold 0

CPU only (gloo, e.g. to try it out): torchrun --standalone --nproc-per-node 2 -m comp
train --device cpu ...  (set OMP_NUM_THREADS so the processes do not oversubscribe cores).

What changes under DDP
  * backend nccl on CUDA, gloo on CPU; the group is initialised once per process and
    destroyed when the command ends, by every rank after a barrier (exit_process).
  * --batch-size is GLOBAL: each rank trains on batch_size // world_size images per step,
    so a recipe's lr means the same thing on 1 or 8 GPUs. Every rank runs the same number
    of steps (from the smallest shard) so none waits for a missing all-reduce.
  * The fold's training rows are shuffled with --seed and rank r keeps rows r::world_size
    (`shard`): the ranks see disjoint data and only their shard is put on their device.
  * Every rank normalises images with rank 0's mean/std. DDP copies rank 0's weights and
    buffers to every rank when it wraps the model (so fastnet's data-derived whitening is
    rank 0's) and averages the gradients every step; BatchNorm statistics are per rank
    (rank 0's running stats are broadcast each step) unless --sync-bn (CUDA only). DDP is
    built again when a model freezes parameters mid-run (fastnet's on_epoch_start).
  * Validation, early stopping, checkpoints, TTA prediction and every file and printed line
    are rank 0's alone: the other ranks wait for its stop decision (and the plateau lr
    factor), which is broadcast each epoch so every rank stops at the same step. The
    training loss/accuracy of an epoch are summed over all ranks. The run lock is rank 0's.
  * --resume: rank 0 reads the checkpoint and sends it to every rank. The per-rank random
    streams (data order, augmentation) are not checkpointed: after a resume each rank
    re-seeds from (seed, rank, epoch).
  * Rank 0 validates and predicts alone while the others wait in a collective; a rank that
    waits longer than COMP_DIST_TIMEOUT_MIN minutes (default 60) fails instead of hanging.
  * Other ranks print nothing and their Python warnings are silenced (rank 0 shows them);
    tracebacks still appear, and torchrun stops every rank when one fails.
"""
from __future__ import annotations

import atexit
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..io import CompError

# Rank 0 validates and predicts while the others wait in a collective: allow for that
# (COMP_DIST_TIMEOUT_MIN minutes; a rank that waits longer fails instead of hanging).
TIMEOUT = timedelta(minutes=int(os.environ.get("COMP_DIST_TIMEOUT_MIN", "60")))
_owned = False  # True when this module created the process group (and must destroy it)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False  # a process group exists: train with DDP (even a 1-process group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def print(self, *args, **kwargs) -> None:
        """print() on rank 0; the other ranks stay silent."""
        if self.is_main:
            print(*args, **kwargs)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise CompError(f"--device {requested!r}: expected auto, cpu, cuda, cuda:1 ...") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompError(f"--device {requested}: this machine has no CUDA GPU that torch can use "
                        f"(torch {torch.__version__}); pass --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CompError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CompError(f"--device {requested}: MPS is not available here; pass --device cpu or auto")
    return device


def init_from_env(device_request: str = "auto") -> DistContext:
    """The process's context; initialises the process group on the first call under torchrun.

    Reads WORLD_SIZE, RANK and LOCAL_RANK (set by torchrun). Without them, or with
    WORLD_SIZE 1, nothing is initialised. Later calls reuse the existing group, also one
    created by the caller (which then stays the caller's to destroy).
    """
    global _owned
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not _active() and world_size <= 1:
        return DistContext(device=pick_device(device_request))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request)
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            raise CompError(f"--device {device_request}: under torchrun rank r uses cuda:LOCAL_RANK; "
                            f"pass --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
        if local_rank >= torch.cuda.device_count():
            raise CompError(f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} CUDA device(s) visible: "
                            f"start at most one process per GPU (or pass --device cpu)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise CompError(f"--device {device_request}: distributed training runs on cuda or cpu")
    if not _active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        _owned = True
        atexit.register(cleanup)
    rank = dist.get_rank()
    if rank != 0:
        warnings.filterwarnings("ignore")
    return DistContext(rank, dist.get_world_size(), local_rank, device, enabled=True)


def cleanup() -> None:
    """Destroy the process group if this module created it (safe to call twice)."""
    global _owned
    if _owned and _active():
        dist.destroy_process_group()
    _owned = False


def exit_process(code: int) -> int:
    """End a process that owns a process group: barrier (on success), destroy, flush, os._exit.

    Why not a plain return: a rank that finishes first and tears its interpreter down while
    its peers still use the group can abort in gloo's worker threads ("terminate called
    without an active exception", exit -6, seen about 1 run in 6 on 2 CPU ranks). Every
    output is already written atomically and closed, so skipping interpreter finalization
    loses nothing. Without a process group of ours it just returns `code`.
    """
    if not (_owned and _active()):
        return code
    try:
        if code == 0:  # every rank succeeded, so every rank reaches this barrier
            barrier()
        cleanup()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def shard(indices, seed: int, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
    """Rank `rank`'s rows of `indices`: shuffled with `seed`, every world_size-th from `rank`, sorted.

    The same on every rank, so the shards are disjoint and together cover `indices`.
    With one process it is `indices` itself (in order).
    """
    if world_size is None:
        world_size = dist.get_world_size() if _active() else 1
        rank = dist.get_rank() if _active() else 0
    indices = np.asarray(indices)
    if world_size == 1:
        return indices
    order = np.random.default_rng(seed).permutation(len(indices))
    return indices[np.sort(order[rank::world_size])]


def local_batch_size(batch_size: int, world_size: int) -> int:
    """--batch-size is global: each of world_size ranks takes batch_size // world_size."""
    if batch_size < world_size:
        raise CompError(f"--batch-size {batch_size} is the global batch: it must be at least the "
                        f"number of processes ({world_size})")
    return batch_size // world_size


class StepModel:
    """The module a training step calls: `model` itself on one process (compiled with
    compile=True), DistributedDataParallel around it under torchrun.

    DDP all-reduces the gradients of the parameters that required one when it was built,
    and waits for each of them every step, so it is built again when that set changes
    (fastnet's on_epoch_start freezes its whitening bias after 3 epochs). Building it copies
    rank 0's parameters and buffers to every rank (fastnet's data-derived whitening too).
    Evaluate with `model`, never with this: DDP's forward is collective.
    """

    def __init__(self, model: torch.nn.Module, ctx: DistContext, compile: bool = False):
        self.model, self.ctx, self.compile = model, ctx, compile
        self._trainable, self._module = None, None

    def current(self) -> torch.nn.Module:
        trainable = [p.requires_grad for p in self.model.parameters()] if self.ctx.enabled else []
        if self._module is None or trainable != self._trainable:
            module = self.model
            if self.ctx.enabled:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
                module = DistributedDataParallel(self.model, device_ids=ids)
            self._module = torch.compile(module) if self.compile else module
            self._trainable = trainable
        return self._module


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank (picklable; tensors should be on the CPU)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(fn, *args, **kwargs):
    """fn(...) on rank 0 only; every rank returns its result.

    An exception there is raised on every rank instead of leaving the others waiting in their next
    collective: the same class (RunBusy stays RunBusy, so `--fold all` skips a busy fold on every rank),
    a CompError marked quiet so that only rank 0 prints it; one that cannot travel as a RuntimeError.
    """
    result, error = None, None
    if not _active() or dist.get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the others
            if not _active():
                raise
            error = exc
    kind, payload = broadcast_object(("error", _portable(error)) if error is not None else ("ok", result))
    if error is not None:
        raise error
    if kind == "error":
        if isinstance(payload, CompError):
            payload.quiet = True  # rank 0 reports it; `comp` prints it once
        raise payload
    return payload


def _portable(error: Exception) -> Exception:
    """The exception itself where it pickles with its message (CompError and its kinds do), else a RuntimeError."""
    import pickle

    try:
        copy = pickle.loads(pickle.dumps(error))
        if type(copy) is type(error) and str(copy) == str(error):
            return error
    except Exception:  # noqa: BLE001 - anything that does not travel is sent as text
        pass
    return RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all ranks (a copy; the tensor itself when not distributed)."""
    if not _active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all ranks (floating point)."""
    if not _active():
        return tensor
    return all_reduce_sum(tensor.float()) / dist.get_world_size()


def barrier() -> None:
    if not _active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def refuse_torchrun(command: str) -> None:
    """torchrun is for one run on several processes; a study or a grid is many independent runs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CompError(f"comp {command} runs as one process per worker: start it without torchrun "
                        f"(torchrun is for `comp train`)")
