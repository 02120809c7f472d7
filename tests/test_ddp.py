"""DDP: `torchrun -m comp train` with 2 CPU processes (gloo) trains one run and writes one set of outputs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch.distributed as dist
from conftest import make_competition

from comp.train.distributed import (all_reduce_mean, all_reduce_sum, broadcast_object, exit_process, init_from_env,
                              local_batch_size, run_on_main, shard)
from comp.prepare.folds import PrepareOptions, load_prepared, prepare
from comp.io import CompError


def test_shard_is_disjoint_covering_and_deterministic():
    indices = np.arange(100, 137)  # 37 rows: shards of 10, 9, 9, 9
    for world in (2, 3, 4):
        shards = [shard(indices, seed=5, rank=r, world_size=world) for r in range(world)]
        together = np.concatenate(shards)
        assert sorted(together) == list(indices)  # covering, and disjoint (no row twice)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert all(np.array_equal(s, shard(indices, 5, r, world)) for r, s in enumerate(shards))
    assert not np.array_equal(shard(indices, 5, 0, 2), shard(indices, 6, 0, 2))  # the seed shuffles
    assert not np.array_equal(shard(indices, 5, 0, 2), indices[0::2])
    assert np.array_equal(shard(indices, 5, 0, 1), indices)  # one process: every row, in order


def test_single_process_has_no_process_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled, str(ctx.device)) == (0, 1, True, False, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not init_from_env("cpu").enabled and not dist.is_initialized()
    # the helpers are no-ops on one process; run_on_main raises the error itself
    assert broadcast_object({"a": 1}) == {"a": 1} and run_on_main(lambda x: x + 1, 1) == 2
    assert exit_process(3) == 3  # no group of ours: the command's code is returned, the process lives on
    with pytest.raises(CompError, match="boom"):
        run_on_main(lambda: (_ for _ in ()).throw(CompError("boom")))
    import torch
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and all_reduce_mean(t) is t
    assert local_batch_size(128, 1) == 128 and local_batch_size(128, 3) == 42
    with pytest.raises(CompError, match="global batch"):
        local_batch_size(2, 4)


def test_an_error_on_rank_0_travels_as_its_own_class():
    """The other ranks re-raise what run_on_main broadcasts: a busy fold must stay RunBusy there, so that
    `--fold all` skips it on every rank rather than failing on all but rank 0."""
    from comp.train.distributed import _portable
    from comp.runs import RunBusy

    busy = _portable(RunBusy("runs/x/fold0 is locked by host 123"))
    assert type(busy) is RunBusy and str(busy) == "runs/x/fold0 is locked by host 123"

    class Local(Exception):  # defined in a function: it cannot be pickled, so it travels as text
        pass

    text = _portable(Local("odd"))
    assert type(text) is RuntimeError and str(text) == "rank 0 failed: Local: odd"


def test_torchrun_two_processes_write_one_run(tmp_path):
    make_competition(tmp_path / "data", "cifar", per_class=12, size=16)
    work = tmp_path / "work"
    prepare(PrepareOptions(str(tmp_path / "data"), str(work), folds=5, seed=42))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "comp", "--workdir", str(work), "train", "--arch", "simple_cnn", "--fold", "0", "--epochs", "2",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    assert [p.name for p in (work / "runs").iterdir()] == ["simple_cnn"]
    out = work / "runs" / "simple_cnn" / "fold0"
    assert [p.name for p in out.parent.iterdir()] == ["fold0"]
    prepared = load_prepared(work)
    fold0_ids = prepared.folds.id[prepared.folds.fold == 0].to_numpy().astype(str)
    oof, test = np.load(out / "oof.npz"), np.load(out / "test.npz")
    assert sorted(oof["ids"]) == sorted(fold0_ids) and len(set(oof["ids"])) == len(fold0_ids)
    assert list(test["ids"]) == list(prepared.test.id.astype(str))
    assert oof["logits"].shape == (len(fold0_ids), 3) and np.isfinite(oof["logits"]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_oof"] == len(fold0_ids) and metrics["epochs_run"] == 2
    assert len(pd.read_csv(out / "history.csv")) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["n_train"] == len(prepared.folds) - len(fold0_ids)
    # nothing left behind: no temp files, no lock, no checkpoint
    leftovers = [p for p in work.rglob("*") if ".tmp-" in p.name or p.name in ("lock", "checkpoint.pt")]
    assert leftovers == []
    # only rank 0 printed: each line once
    assert len(re.findall(r"^train simple_cnn fold 0: .*DDP 2 x batch", output, re.M)) == 1, output
    for epoch in (1, 2):
        assert len(re.findall(rf"^\s+epoch\s+{epoch}\s+loss", output, re.M)) == 1, output
    assert len(re.findall(r"OOF accuracy", output)) == 1, output
